"""Name -> factory tables for models, data sets, tasks and optimisers.

A registry is a small dict with two promises: registering a name twice raises,
and looking up an unknown name raises a ``ValueError`` that lists the valid
names and the closest match, so a typo on the command line is one clear line.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any


def unknown_name_message(kind: str, name: str, valid: list[str]) -> str:
    """One line: what was wrong, the closest valid name, and every valid name."""
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}.{hint} Valid: {', '.join(sorted(valid))}"


class Registry:
    """A named table of factories, filled with the ``@REGISTRY.register(name)`` decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}
        self._info: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **info: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator adding ``name``; ``info`` is free-form metadata (a model's ``min_size``...)."""

        def add(factory: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = factory
            self._info[name] = info
            return factory

        return add

    def info(self, name: str) -> dict[str, Any]:
        """The metadata ``name`` was registered with (empty when none)."""
        self.get(name)
        return self._info[name]

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._entries:
            raise ValueError(unknown_name_message(self.kind, name, list(self._entries)))
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


MODELS = Registry("model")
DATASETS = Registry("data set")
TASKS = Registry("task")
OPTIMIZERS = Registry("optimiser")
SCHEDULES = Registry("schedule")
