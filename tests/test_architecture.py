"""Layers point one way (docs/architecture.md): flowbench's import graph has no circle and no
module imports another module's `_private` name.

Every import counts, also those inside functions (they only delay a circle to the first call),
and relative forms are resolved. `import a.b` is an edge to `a.b` only: the parent package's
`__init__` runs first, but a package that re-exports its own submodules is no circle.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

import flowbench

ROOT = Path(flowbench.__file__).parent
PACKAGE = "flowbench"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def scan(root: Path = ROOT) -> tuple[dict[str, set[str]], list[str]]:
    """(module -> the package's modules it imports, the private-name imports found) for the
    package whose directory is `root`."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    packages = {module_name(p, root) for p in root.rglob("__init__.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    private: list[str] = []

    def resolve(name: str) -> str | None:
        """The longest prefix of a dotted name that is one of the package's modules."""
        parts = name.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in files:
                return ".".join(parts[:n])
        return None

    for mod, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        here = mod if mod in packages else mod.rpartition(".")[0]  # the package a relative import starts from
        aliases: dict[str, str] = {}  # local name -> the package's module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if (target := resolve(a.name)) and target != mod:
                        graph[mod].add(target)
                        if a.asname:
                            aliases[a.asname] = target
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if resolve(source) is None:
                    continue  # not the package's (torch, stdlib, ...)
                for a in node.names:
                    sub = f"{source}.{a.name}"
                    if sub in files:  # `from pkg import submodule`
                        target = sub
                        aliases[a.asname or a.name] = sub
                    else:
                        target = resolve(source)
                        if is_private(a.name):
                            private.append(f"{mod} imports {target}.{a.name}")
                    if target != mod:
                        graph[mod].add(target)
        for node in ast.walk(tree):  # `from flowbench import runner; runner._json(...)`
            if (isinstance(node, ast.Attribute) and is_private(node.attr)
                    and isinstance(node.value, ast.Name) and aliases.get(node.value.id, mod) != mod):
                private.append(f"{mod} uses {aliases[node.value.id]}.{node.attr}")
    return graph, private


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def all_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected group of modules, found by breaking edges one at a time."""
    graph = {k: set(v) for k, v in graph.items()}
    cycles = []
    while cycle := find_cycle(graph):
        cycles.append(cycle)
        graph[cycle[-2]].discard(cycle[-1])
    return cycles


def test_no_import_circle():
    graph, _ = scan()
    cycles = all_cycles(graph)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_name_imported():
    _, private = scan()
    assert not private, "imports of another module's private names:\n" + "\n".join(sorted(set(private)))


def test_scripts_examples_and_plugins_import_no_private_name():
    """The repository's scripts, examples and baseline plugins use flowbench's public names only."""
    found = []
    for folder in ("scripts", "examples", "baselines"):
        for path in sorted((ROOT.parent / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == PACKAGE:
                    found += [f"{path.relative_to(ROOT.parent)}: {node.module}.{a.name}"
                              for a in node.names if is_private(a.name)]
    assert not found, "imports of flowbench's private names:\n" + "\n".join(found)


def test_the_architecture_doc_names_real_modules_and_functions():
    """Every `module.name` of docs/architecture.md resolves under flowbench, and every bare
    `CamelCase` or `snake_case` name is defined in it, so a move or a rename updates the doc."""
    text = (ROOT.parent / "docs" / "architecture.md").read_text()
    source = "\n".join(p.read_text() for p in ROOT.rglob("*.py"))
    missing = []
    for token in sorted(set(re.findall(r"`([A-Za-z_][\w.]*)`", text))):
        parts = token.split(".")
        if token.startswith("_") or parts[-1] in ("md", "py", "csv", "yaml"):
            continue
        if len(parts) == 1:
            if importlib.util.find_spec(f"{PACKAGE}.{token}") is not None:
                continue  # a module
            if (re.search(r"[A-Z]", token[1:]) or "_" in token) and not re.search(
                    rf"^\s*(class|def) {token}\b|^{token}\b.*=", source, re.M):
                missing.append(token)
            continue
        for n in range(len(parts), 0, -1):  # the longest prefix that is a module
            try:
                obj = importlib.import_module(".".join([PACKAGE, *parts[:n]]))
            except ModuleNotFoundError:
                continue
            try:
                for attr in parts[n:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                missing.append(token)
            break
        else:
            if not (re.search(rf"^\s*class {parts[0]}\b", source, re.M)  # Class.method
                    and re.search(rf"^\s*def {parts[-1]}\b", source, re.M)):
                missing.append(token)
    assert not missing, f"docs/architecture.md names what flowbench lacks: {missing}"


@pytest.fixture
def toy(tmp_path):
    """A package written on the spot, to check the scanner on the forms it must see."""
    def write(files: dict[str, str]) -> Path:
        root = tmp_path / "toy"
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        return root
    return write


def test_scanner_finds_circle_through_function_level_relative_import(toy):
    root = toy({"__init__.py": "", "a.py": "from toy.sub.b import f\n",
                "sub/__init__.py": "", "sub/b.py": "def f():\n    from .. import a\n    return a\n"})
    cycle = find_cycle(scan(root)[0])
    assert cycle is not None and set(cycle) == {"toy.a", "toy.sub.b"}


def test_scanner_finds_private_names(toy):
    root = toy({"__init__.py": "", "a.py": "_x = 1\n",
                "b.py": "from .a import _x\n", "c.py": "def g():\n    from toy import a\n    return a._x\n",
                "d.py": "from toy.a import __doc__\n"})
    assert sorted(scan(root)[1]) == ["toy.b imports toy.a._x", "toy.c uses toy.a._x"]


def test_scanner_allows_package_reexporting_its_submodules(toy):
    root = toy({"__init__.py": "from toy.a import f\n", "a.py": "import toy.b\ndef f():\n    pass\n",
                "b.py": "X = 1\n"})
    graph, private = scan(root)
    assert find_cycle(graph) is None and graph["toy"] == {"toy.a"} and graph["toy.a"] == {"toy.b"}
