"""Deferred imports for command lines that must answer ``--help`` at once.

``torch = lazy_import("torch")`` binds a stand-in now; the first attribute read imports the module (with
``importlib.import_module``) and forwards to it from then on. An entry point can name its modules at the
top, as usual, and still print its help in a fraction of the time torch's import takes.

Written out rather than with :class:`importlib.util.LazyLoader` because that one puts a half-loaded
module into ``sys.modules``, where torch's own introspection (``inspect.getmodule`` walks every entry)
would trigger the import in the middle of another one.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """A module imported on first attribute access."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:  # only called for attributes this object lacks
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        state = "imported" if self._module is not None else "not imported yet"
        return f"<lazy module {self._name!r} ({state})>"


def lazy_import(name: str) -> Any:
    """A stand-in for the module ``name`` that imports it on first use."""
    return LazyModule(name)
