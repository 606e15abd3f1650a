"""Families, corpora, judges and metrics from outside the package.

Two ways in, both loaded by the registry right after its built-ins:

- entry points of an installed package, groups `flowbench.families`, `flowbench.corpora`,
  `flowbench.judges` and `flowbench.metrics`. An entry point names a module (importing it runs
  its `@FAMILIES.register(...)` decorators) or an object, which is registered under the entry
  point's name unless it already is;
- `--include PATH` (a .py file, or a folder whose top-level .py files are loaded; files starting
  with `_` are helpers the others may import). The folder goes on `sys.path` and each file is
  imported under its own name, so the modules can import each other and pickle their classes.

Included paths are kept in the environment variable FLOWBENCH_INCLUDE (os.pathsep-separated),
which every process started later inherits: the spawned training workers load them too.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
import types
from pathlib import Path

INCLUDE_ENV = "FLOWBENCH_INCLUDE"
GROUPS = {"families": "flowbench.families", "corpora": "flowbench.corpora",
          "judges": "flowbench.judges", "metrics": "flowbench.metrics"}
_includes_loaded = False  # set by load_includes: the registry has loaded the included paths


class PluginError(RuntimeError):
    """A plugin that cannot load; the message is one line naming it."""


def include(paths: list[str | Path]) -> list[Path]:
    """Record `paths` for this process and its children; returns them resolved.

    The registry loads them with its built-ins (now, if it already has)."""
    if not paths:
        return []
    resolved = []
    for p in paths:
        path = Path(p).expanduser().resolve()
        if not (path.is_dir() or (path.is_file() and path.suffix == ".py")):
            raise PluginError(f"--include {p}: not a .py file or a folder")
        resolved.append(path)
    current = included()
    os.environ[INCLUDE_ENV] = os.pathsep.join(str(p) for p in dict.fromkeys([*current, *resolved]))
    if _includes_loaded:  # a late include (e.g. a second command in one process)
        for path in resolved:
            load_path(path)
    return resolved


def included() -> list[Path]:
    return [Path(p) for p in os.environ.get(INCLUDE_ENV, "").split(os.pathsep) if p]


def load_entry_points(registries: dict) -> None:
    """Load every entry point of the four groups; `registries` maps a group's short name to its registry."""
    for short, group in GROUPS.items():
        for ep in importlib.metadata.entry_points(group=group):
            try:
                obj = ep.load()
            except Exception as err:  # a broken plugin names itself, not a traceback into importlib
                raise PluginError(f"entry point {ep.name!r} ({ep.value}) in group {group}: "
                                  f"{type(err).__name__}: {err}") from None
            reg = registries[short]
            if not isinstance(obj, types.ModuleType) and not reg.holds(obj):
                reg.register(ep.name)(obj)


def load_path(path: Path) -> None:
    files = sorted(f for f in path.glob("*.py") if not f.name.startswith("_")) if path.is_dir() else [path]
    folder = str(path if path.is_dir() else path.parent)
    if folder not in sys.path:
        sys.path.append(folder)  # appended: a file named like an installed module is caught below
    for file in files:
        try:
            module = importlib.import_module(file.stem)
        except Exception as err:
            raise PluginError(f"--include {file}: {type(err).__name__}: {err}") from None
        if Path(getattr(module, "__file__", "") or "").resolve() != file.resolve():
            raise PluginError(f"--include {file}: the module name {file.stem!r} is already taken "
                              f"by {getattr(module, '__file__', None) or 'a built-in module'}; rename the file")


def load_includes() -> None:
    """Load the recorded paths (the registry calls this once, after its built-ins); a path
    `include`d later is loaded at once."""
    global _includes_loaded
    _includes_loaded = True
    for path in included():
        if not path.exists():
            raise PluginError(f"{INCLUDE_ENV}: {path} does not exist")
        load_path(path)
