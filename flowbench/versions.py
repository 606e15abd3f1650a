"""Versions of families, corpora and judges in the keys, and the rows an older version computed.

A family, corpus or judge declares `version` (a ClassVar, default 1), as a metric does. A version
enters a key only above 1, so every key computed before versions existed (checkpoints, reference
rows) stays valid. After a bump the next run finds the rows whose configuration matches but whose
version is older, says so in one line per (component, name, version), and recomputes them; each
new row names the row it replaces in `supersedes`, and the report and `compare` use only rows
no other row supersedes. The old rows stay in the append-only CSV.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable

COMPONENTS = ("family", "corpus", "judge")


def version_of(obj) -> int:
    return int(getattr(obj, "version", 1))  # an entry registered from outside may not declare one


def key_fields(versions: dict[str, int]) -> dict[str, int]:
    """The fields a key gets from `versions`: none for version 1."""
    return {f"{name}_version": v for name, v in sorted(versions.items()) if v != 1}


def find_superseded(points: list, *, current: Callable, row_key: Callable, done: set[str]
                    ) -> tuple[dict[str, str], list[str]]:
    """Rows in `done` computed by an older version of a point's family, corpus or judge.

    current(point) -> {component: (name, version)}; row_key(point, older) -> the key the point
    had with the versions in `older` ({component: version}) instead. Returns
    ({new row key: old row key}, one message line per (component, name, old version))."""
    replaced: dict[str, str] = {}
    counts: Counter = Counter()
    for point in points:
        for component, (name, version) in current(point).items():
            old_key = next(((old, key) for old in range(version - 1, 0, -1)
                            if (key := row_key(point, {component: old})) in done), None)
            if old_key:
                replaced[row_key(point, {})] = old_key[1]
                counts[(component, name, old_key[0], version)] += 1
                break
    lines = [f"{n} rows of {component} {name} were computed with version {old}; recomputing with version {new}"
             for (component, name, old, new), n in sorted(counts.items())]
    return replaced, lines
