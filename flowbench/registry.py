"""One registry class for families, corpora, judges and metrics.

Adding an entry is one new module and one decorator line:

    @FAMILIES.register("mdlm")
    class MDLM(Family): ...

Lookups of a misspelled name fail loudly with a suggestion. Entries from outside the package
(entry points, `--include PATH`) load right after the built-ins: see flowbench/plugins.py.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Callable, Generic, TypeVar

from flowbench import plugins

T = TypeVar("T")

# Modules whose import registers the built-in entries (each a plain module; one line per new one).
_BUILTIN_MODULES = (
    "flowbench.data.language",
    "flowbench.data.text",
    "flowbench.data.wordnet",
    "flowbench.judges",
    "flowbench.metrics",
    "baselines.ar_gpt2",
    "baselines.mdlm",
    "flowbench.families.dirichlet_flow",
    "flowbench.families.kl_flow",
    "flowbench.families.flow_map",
    "flowbench.families.dfm",
)


class RegistryError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it one readable line
        return str(self.args[0])


class Registry(Generic[T]):
    """Name -> object map with a base-class check, duplicate rejection and 'did you mean'."""

    def __init__(self, kind: str, base: type | None = None):
        self.kind = kind
        self.base = base
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def wrap(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            if self.base is not None and isinstance(obj, type) and not issubclass(obj, self.base):
                raise TypeError(f"{self.kind} {name!r} must subclass {self.base.__name__}")
            if isinstance(obj, type):
                obj.name = name  # type: ignore[attr-defined]
            self._entries[name] = obj
            return obj

        return wrap

    def get(self, name: str) -> T:
        load_builtins()
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise RegistryError(
                f"unknown {self.kind} {name!r}{hint} (registered: {', '.join(sorted(self._entries))})"
            )
        return self._entries[name]

    def holds(self, obj) -> bool:
        return any(entry is obj for entry in self._entries.values())

    def names(self) -> list[str]:
        load_builtins()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        load_builtins()
        return name in self._entries


FAMILIES: Registry = Registry("family")  # its base class is set in flowbench.families.base
CORPORA: Registry = Registry("corpus")
JUDGES: Registry = Registry("judge")
METRICS: Registry = Registry("metric")

_loaded = False


def load_builtins() -> None:
    """Import the built-in modules once (a module not written yet is skipped), then the entries
    from outside the package: entry points, and the paths given to `--include`."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _BUILTIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name != mod:  # a missing dependency inside a module is a real error
                raise
    plugins.load_entry_points({"families": FAMILIES, "corpora": CORPORA, "judges": JUDGES,
                               "metrics": METRICS})
    plugins.load_includes()
