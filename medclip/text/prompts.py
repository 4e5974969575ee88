"""Clinical prompt sets (package YAML or a user file) and their ensembled text embeddings."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from medclip.errors import InputError
from medclip.registry import did_you_mean


def packaged_prompt_sets() -> list[str]:
    return sorted(
        p.name[:-5] for p in resources.files("medclip.text").joinpath("prompts").iterdir() if p.name.endswith(".yaml")
    )


def load_prompts(name_or_path: str) -> dict[str, dict[str, list[str]]]:
    """-> {finding: {"positive": [prompt, ...], "negative": [prompt, ...]}} with templates expanded."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"prompt file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not a valid YAML prompt file ({str(exc).splitlines()[0]}); fix it") from None
    else:
        names = packaged_prompt_sets()
        if name_or_path not in names:
            raise InputError(
                f"unknown prompt set '{name_or_path}'.{did_you_mean(name_or_path, names)} Available: {names}"
            )
        raw = yaml.safe_load(resources.files("medclip.text").joinpath("prompts", f"{name_or_path}.yaml").read_text())
    return expand_prompts(raw, source=str(name_or_path))


def _templates(value, source: str, where: str) -> list[str]:
    if value is None:
        return ["{}"]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(t, str) and "{}" in t for t in value):
        raise InputError(f"{source}: {where} must be a list of strings that each contain '{{}}' (the phrase)")
    return value


def expand_prompts(raw: dict, *, source: str = "prompts") -> dict[str, dict[str, list[str]]]:
    """Expand every phrase with every template (global ``templates:`` or a finding's own ``templates:``).

    YAML layout: ``templates: ["{}.", "findings: {}."]`` and ``findings: {name: {positive: [...], negative: [...]}}``.
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("findings"), dict) or not raw["findings"]:
        raise InputError(f"{source}: expected a mapping with a non-empty 'findings:' section")
    templates = _templates(raw.get("templates"), source, "'templates:'")
    out = {}
    for finding, spec in raw["findings"].items():
        if not isinstance(spec, dict) or not spec.get("positive"):
            raise InputError(f"{source}: finding '{finding}' needs a 'positive:' list (and usually 'negative:')")
        own = _templates(spec["templates"], source, f"'{finding}.templates'") if "templates" in spec else templates
        for side in ("positive", "negative"):
            if not isinstance(spec.get(side) or [], list):
                raise InputError(f"{source}: '{finding}.{side}' must be a list of phrases")
        out[finding] = {
            side: [t.format(p) for p in spec.get(side) or [] for t in own] for side in ("positive", "negative")
        }
    return out
