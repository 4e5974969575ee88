"""The package's shape: the import-linter contracts hold, and no module imports another module's private name."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medclip"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private_imports(path: Path, source: str | None = None) -> list[str]:
    """``from X import _name`` (X another medclip module) in ``path`` (or ``source`` as its text), as "file:line name"."""
    module = _module_name(path)
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(source if source is not None else path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        if not target.startswith("medclip") or target == module:
            continue
        for alias in node.names:
            if alias.name.startswith("_") and not alias.name.startswith("__"):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {target}.{alias.name}")
    return found


def test_no_module_imports_another_modules_private_name():
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in _private_imports(path)]
    assert not found, "make these public or move them to the module both import:\n" + "\n".join(found)


def test_the_private_name_check_finds_one():
    fake = PACKAGE / "ingest" / "_probe_for_test.py"  # never written: the check reads the text we give it
    assert _private_imports(fake, "from medclip.io.dicom import _secret\n") == [
        "medclip/ingest/_probe_for_test.py:1 medclip.io.dicom._secret"
    ]


@pytest.mark.skipif(
    shutil.which("lint-imports") is None, reason="import-linter is not installed (pip install -e .[dev])"
)
def test_import_linter_contracts_hold():
    run = subprocess.run(["lint-imports"], cwd=PACKAGE.parent, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout
