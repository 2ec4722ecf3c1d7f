"""A named registry (torchvision-style): head types, importers, demo templates and report metrics are
each listed in one (docs/architecture.md)."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by name, in registration order; an unknown name is a ValueError listing the choices."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        # A second entry under one name would silently shadow the first, depending on import order.
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self._entries)}")
        return self._entries[name]

    def names(self) -> list[str]:
        return list(self._entries)

    def values(self) -> list[T]:
        return list(self._entries.values())

    def copy(self) -> Registry[T]:
        """A registry with the same entries (tests add entries to a copy, not to the real one)."""
        other: Registry[T] = Registry(self.kind)
        other._entries = dict(self._entries)
        return other
