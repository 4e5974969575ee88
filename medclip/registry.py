"""Named registries for pluggable families (archive layouts, towers, losses, evaluators).

Like timm's ``register_model`` / ``list_models``; lookup errors suggest the nearest name the way MONAI's
``look_up_option`` does.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from medclip.errors import UnknownNameError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """A ' Did you mean X?' hint (empty when nothing is close)."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """A name -> object table with a decorator to fill it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            key = name or getattr(obj, "__name__", None)
            if key is None:
                raise ValueError(f"cannot infer a {self.kind} name for {obj!r}; pass name=")
            if key in self._items:
                raise KeyError(f"{self.kind} '{key}' is already registered")
            self._items[key] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        if name not in self._items:
            available = ", ".join(sorted(self._items)) or "(none)"
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'.{did_you_mean(name, list(self._items))} Available: {available}"
            )
        return self._items[name]

    def list(self) -> list[str]:
        """The names, sorted."""
        return sorted(self._items)

    def __iter__(self) -> Iterator[str]:
        """The names in registration order (e.g. the order evaluation tasks run in)."""
        return iter(self._items)

    def __contains__(self, name: Any) -> bool:
        return name in self._items
