"""Reading table files (CSV, parquet, JSON) the user hands in: a file that does not parse is an InputError.

pandas, pyarrow and json raise ValueError subclasses (ParserError, EmptyDataError, ArrowInvalid, JSONDecodeError,
UnicodeDecodeError) whose messages do not name the file; these name it and say what to check.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd

from medclip.errors import InputError
from medclip.io import storage


def _bad(path: str | Path, what: str, exc: Exception) -> InputError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return InputError(f"{path}: cannot read it as {what} ({detail}); check the file")


def read_csv(path: str | Path, *, text: str | None = None, **kwargs: Any) -> pd.DataFrame:
    """``pd.read_csv(path, **kwargs)``; an empty or malformed file is an :class:`InputError` naming it.

    ``text`` is the file's content already decoded (:func:`medclip.io.text.read_text`): it is parsed instead of
    reading ``path``, which then only names the file in errors.
    """
    try:
        return pd.read_csv(path if text is None else io.StringIO(text), **kwargs)
    except (InputError, FileNotFoundError, PermissionError):
        raise
    except (ValueError, OSError, EOFError) as exc:  # OSError / EOFError: a corrupt or truncated .gz
        raise _bad(path, "a CSV table", exc) from exc


def read_parquet(path: str | Path, **kwargs: Any) -> pd.DataFrame:
    """``pd.read_parquet(path, **kwargs)`` (a file, or a folder of parts read as one dataset; ``columns`` /
    ``filters`` read only what is asked for); a file that is not parquet is an :class:`InputError` naming it."""
    try:
        return pd.read_parquet(path, **kwargs)
    except (ValueError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise _bad(path, "a parquet table", exc) from exc


def read_json(path: str | Path) -> Any:
    """The JSON value in ``path``; malformed JSON is an :class:`InputError` naming it."""
    try:
        return json.loads(storage.read_text(path))  # a local path or an object-storage URL
    except ValueError as exc:
        raise _bad(path, "JSON", exc) from exc
