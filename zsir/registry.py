"""One registry class, used for samplers and for priors."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry", "suggest"]


def suggest(name: str, known: list[str]) -> str:
    """A ' Did you mean X?' suffix for error messages, or an empty string."""
    close = difflib.get_close_matches(name.lower(), [k.lower() for k in known], n=1, cutoff=0.5)
    if not close:
        return ""
    match = next(k for k in known if k.lower() == close[0])
    return f" Did you mean {match!r}?"


class Registry(Generic[T]):
    """Name -> object mapping with helpful errors.

    Example:
        >>> samplers = Registry("sampler")
        >>> @samplers.register("demo")
        ... class Demo: ...
        >>> samplers.get("Demo") is Demo
        True
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            key = name.lower()
            if key in self._items:
                raise KeyError(f"{self.kind} {name!r} is registered twice")
            self._items[key] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        key = name.lower()
        if key not in self._items:
            known = sorted(self._items)
            raise ValueError(
                f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(known)}.{suggest(name, known)}"
            )
        return self._items[key]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
