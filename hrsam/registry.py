"""A tiny name -> object registry for the axes we sweep (attention patterns, kernels, scans).

Follows timm's ``register_model`` / ``list_models``: registration is explicit, re-registering a
name is an error, and an unknown name fails with the list of valid names.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class UnknownNameError(ValueError):
    """An unknown registry name; the message lists the valid ones."""


class Registry(Generic[T]):
    """Maps lowercase snake_case names to objects of one kind.

    Args:
        kind: what the registry holds, used in error messages ("attention", "kernel", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; sets ``obj.name`` when possible."""
        if not _NAME.match(name):
            raise ValueError(f"{self.kind} name {name!r} must be lowercase snake_case")

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            try:
                obj.name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return obj

        return deco

    def get(self, name: str) -> T:
        """Returns the object registered as ``name`` or raises `UnknownNameError`."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            valid = ", ".join(sorted(self._items))
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid: {valid}") from None

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching the fnmatch ``pattern``."""
        return sorted(n for n in self._items if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items
