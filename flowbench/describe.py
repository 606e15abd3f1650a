"""One-line descriptions of parameters, for `python -m flowbench list --verbose`.

A field's description is, in order: its pydantic `Field(description=...)`; the comment on its
line or the comment lines right above it; a `name: text` entry in its class docstring. The
family modules document their parameters in comments and docstrings, which this reads as they
are, so a parameter is documented once, where it is defined.
"""
from __future__ import annotations

import ast
import inspect
import io
import re
import textwrap
import tokenize
from functools import lru_cache

from pydantic import BaseModel


def describe_family(cls) -> list[str]:
    """Lines: the family, its version and first docstring line, its parameters, its samplers."""
    doc = _first_paragraph(inspect.getdoc(inspect.getmodule(cls)) or inspect.getdoc(cls) or "")
    lines = [f"{cls.name} (version {getattr(cls, 'version', 1)}, {cls.__module__})" + (f": {doc}" if doc else "")]
    lines += _fields("params", cls.Params)
    for name, params in cls.samplers.items():
        lines += _fields(f"sampler {name}", params)
    return lines


def _fields(title: str, model: type[BaseModel]) -> list[str]:
    fields = model.model_fields
    if not fields:
        return [f"  {title}: (none)"]
    lines = [f"  {title}:"]
    for name, info in fields.items():
        default = "required" if info.is_required() else f"= {_show(info.get_default(call_default_factory=True))}"
        text = descriptions(model).get(name)
        lines.append(f"    {name} {default}" + (f"  -- {text}" if text else ""))
    return lines


def _show(value) -> str:
    if isinstance(value, BaseModel):  # a nested parameter (a time distribution): its fields
        return "{" + ", ".join(f"{k}: {v!r}" for k, v in value.model_dump().items()) + "}"
    return repr(value)


def missing(model: type[BaseModel]) -> list[str]:
    """Fields of `model` with no description from any source."""
    known = descriptions(model)
    return [name for name in model.model_fields if not known.get(name)]


@lru_cache(maxsize=None)
def descriptions(model: type[BaseModel]) -> dict[str, str]:
    """{field: one-line description} for every field that has one, inherited fields included."""
    out: dict[str, str] = {}
    for klass in reversed(model.__mro__):  # a subclass's own text wins over its base's
        if isinstance(klass, type) and issubclass(klass, BaseModel) and klass is not BaseModel:
            out.update(_from_source(klass))
    for name, info in model.model_fields.items():
        if info.description:
            out[name] = _one_line(info.description)
    return out


def _from_source(klass: type) -> dict[str, str]:
    """Docstring entries, overridden by comments, of the fields `klass` itself declares."""
    own = [n for n in klass.__dict__.get("__annotations__", {}) if n in klass.model_fields]
    out = _from_docstring(klass.__dict__.get("__doc__") or "", own)
    try:
        source = textwrap.dedent(inspect.getsource(klass))
    except (OSError, TypeError):  # defined where there is no source (an interactive session)
        return out
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.add(tok.start[0])
    body = ast.parse(source).body[0].body
    for node in body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id in own:
            trailing = [comments[i] for i in range(node.lineno, node.end_lineno + 1) if i in comments]
            above, i = [], node.lineno - 1
            while i in comments and i not in code_lines:  # the comment block right above it
                above.insert(0, comments[i])
                i -= 1
            text = " ".join(above + trailing)
            if text:
                out[node.target.id] = _one_line(text)
    return out


def _from_docstring(doc: str, names: list[str]) -> dict[str, str]:
    """'name: text' entries of a docstring, at a line start or after a sentence."""
    if not doc or not names:
        return {}
    pattern = re.compile(r"(?:^[ \t]*|(?<=\. ))(" + "|".join(map(re.escape, names)) + r"):\s", re.M)
    hits = list(pattern.finditer(doc))
    return {m.group(1): _one_line(doc[m.end(): hits[i + 1].start() if i + 1 < len(hits) else len(doc)])
            for i, m in enumerate(hits)}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _first_paragraph(text: str) -> str:
    return _one_line(text.strip().split("\n\n", 1)[0])
