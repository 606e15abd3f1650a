"""Compare a run's leaderboard with a reference one.

    python -m flowbench compare results/nfe_sweep results/reference/nfe_sweep [--rtol 1e-6]

Rows are matched by `row_key` (a hash of everything that produced the row). A row whose key has
no partner is then matched on its configuration columns (CONFIG_COLUMNS) when exactly one row on
each side has that configuration: a code change that moves keys but not the configuration still
pairs the rows and shows what moved. Quality metrics (METRIC_COLUMNS) must agree to a relative
`rtol`: the exact judge is deterministic, and the same torch version reproduces its values to
float precision. Throughput depends on the machine and its load: reported, never a failure.
Rows superseded by a newer version (flowbench/versions.py) are left out on both sides.
"""
from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from flowbench.leaderboard import SWEEP_COLUMNS, current_rows

METRIC_COLUMNS = ("gen_ppl", "gen_ppl_mean", "nll_mean", "nll_median", "entropy", "val_loss")
THROUGHPUT_COLUMNS = ("samples_per_s", "tokens_per_s")
CONFIG_COLUMNS = ("family", "family_params", "denoiser", "sampler", "sampler_params", "nfe",
                  *SWEEP_COLUMNS, "seed", "train_steps", "train_passes", "judge", "num_samples")
DEFAULT_RTOL = 1e-6


class CompareError(ValueError):
    """A leaderboard that cannot be read; one line naming the file."""


@dataclass
class Comparison:
    run: Path
    reference: Path
    rtol: float
    matched: list[tuple[dict, dict, str]] = field(default_factory=list)  # (run, reference, by)
    differ: list[tuple[dict, dict, list[str]]] = field(default_factory=list)  # (run, ref, columns)
    only_run: list[dict] = field(default_factory=list)
    only_reference: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.differ or self.only_run or self.only_reference)

    def throughput(self) -> dict[str, float]:
        """Median ratio run / reference of each throughput column over the matched rows."""
        out = {}
        for col in THROUGHPUT_COLUMNS:
            ratios = [a / b for r, ref, _ in self.matched
                      if (a := _num(r.get(col))) and (b := _num(ref.get(col)))]
            if ratios:
                out[col] = statistics.median(ratios)
        return out

    def summary(self) -> str:
        """One line: what matched, what differs, what is missing, throughput."""
        by_config = sum(by == "configuration" for *_, by in self.matched)
        parts = [f"{len(self.matched) - len(self.differ)} of {len(self.matched)} matched rows agree "
                 f"(rtol {self.rtol:g}" + (f"; {by_config} matched by configuration, keys differ" if by_config else "")
                 + ")"]
        if self.differ:
            parts.append(f"{len(self.differ)} differ")
        if self.only_reference:
            parts.append(f"{len(self.only_reference)} reference rows missing from the run")
        if self.only_run:
            parts.append(f"{len(self.only_run)} run rows not in the reference")
        speed = self.throughput().get("samples_per_s")
        if speed:
            parts.append(f"throughput x{speed:.2f} of the reference (not checked)")
        return f"{'match' if self.ok else 'DIFFERS'} vs {self.reference}: " + "; ".join(parts)

    def lines(self) -> list[str]:
        """One line per differing or missing row, then the summary."""
        out = []
        for run, ref, cols in self.differ:
            changes = ", ".join(f"{c} {ref.get(c) or '-'} -> {run.get(c) or '-'}" for c in cols)
            out.append(f"differs  {run['row_key']} ({label(run)}): {changes}")
        out += [f"missing  {r['row_key']} ({label(r)}): in the reference, not in the run" for r in self.only_reference]
        out += [f"extra    {r['row_key']} ({label(r)}): in the run, not in the reference" for r in self.only_run]
        return out + [self.summary()]


def label(row: dict) -> str:
    extras = [row.get("family_params"), row.get("sampler_params"),
              *(f"{c}={row[c]}" for c in SWEEP_COLUMNS if row.get(c))]
    return " ".join([f"{row['family']}/{row['sampler']}", f"nfe={row['nfe']}", row["denoiser"],
                     *(e for e in extras if e)])


def read(path: str | Path) -> tuple[Path, list[dict]]:
    """A leaderboard CSV, or the folder holding one: its current rows."""
    path = Path(path)
    csv_path = path / "leaderboard.csv" if path.is_dir() else path
    if not csv_path.is_file():
        raise CompareError(f"no leaderboard at {csv_path}")
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and "row_key" not in rows[0]:
        raise CompareError(f"{csv_path}: not a leaderboard (no row_key column)")
    return csv_path, current_rows(rows)


def compare(run: str | Path, reference: str | Path, *, rtol: float = DEFAULT_RTOL,
            families: set[str] | None = None) -> Comparison:
    """Match the rows of two leaderboards and check their metrics; `families` restricts both sides."""
    run_csv, run_rows = read(run)
    ref_csv, ref_rows = read(reference)
    if families:
        run_rows = [r for r in run_rows if r["family"] in families]
        ref_rows = [r for r in ref_rows if r["family"] in families]
    result = Comparison(run=run_csv, reference=ref_csv.parent, rtol=rtol)
    ref_by_key = {r["row_key"]: r for r in ref_rows}
    run_left = []
    for r in run_rows:
        if r["row_key"] in ref_by_key:
            result.matched.append((r, ref_by_key.pop(r["row_key"]), "key"))
        else:
            run_left.append(r)
    # the rest by configuration, where it names one row on each side
    by_config: dict[tuple, list[dict]] = {}
    for r in ref_by_key.values():
        by_config.setdefault(_config(r), []).append(r)
    run_count: dict[tuple, int] = {}
    for r in run_left:
        run_count[_config(r)] = run_count.get(_config(r), 0) + 1
    for r in run_left:
        partners = by_config.get(_config(r), [])
        if len(partners) == 1 and run_count[_config(r)] == 1:
            result.matched.append((r, partners.pop(), "configuration"))
        else:
            result.only_run.append(r)
    result.only_reference = [r for rows in by_config.values() for r in rows]
    for r, ref, _ in result.matched:
        cols = [c for c in METRIC_COLUMNS if not _close(_num(r.get(c)), _num(ref.get(c)), rtol)]
        if cols:
            result.differ.append((r, ref, cols))
    return result


def _config(row: dict) -> tuple:
    # a row from before `compiled` was a column sampled eagerly
    compiled = str(row.get("compiled") or False).lower() == "true"
    return (*(_norm(row.get(c)) for c in CONFIG_COLUMNS), compiled)


def _norm(value):
    """'2', '2.0' and 2 are one value; an empty cell is None."""
    if value in (None, ""):
        return None
    try:
        return float(value)
    except ValueError:
        return value


def _num(value) -> float | None:
    value = _norm(value)
    return value if isinstance(value, float) else None


def _close(a: float | None, b: float | None, rtol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None  # a value on one side only is a difference
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12)


def reference_for(suite: str, *, root: Path = Path("results") / "reference") -> Path | None:
    """The committed reference leaderboard of a suite, if there is one."""
    path = root / suite / "leaderboard.csv"
    return path if path.is_file() else None
