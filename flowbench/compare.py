"""Compare a run's leaderboard with a reference one: identical, within noise, or inconsistent.

    python -m flowbench compare results/nfe_sweep results/reference/nfe_sweep [--alpha 0.01]

Rows are matched by `row_key` (a hash of everything that produced the row); a row whose key has no
partner is then matched on its configuration columns (CONFIG_COLUMNS) when exactly one row on each
side has that configuration, and reported as a moved key. Three tiers:

- exact: every row's `num_samples` and `backbone_calls`, its key, and an oracle row's metrics
  (EXACT_COLUMNS, relative `rtol`): the exact denoiser and a seeded sampler reproduce them on any
  machine. An oracle row's MAUVE alone is tested within its sampling interval when the two rows
  do not record the same CPU ISA, thread count and torch version (its features come from a float
  network whose last bits follow the CPU's kernels).
- noise: a trained row whose metrics are not all equal is tested on each of SCALES and val_loss
  against the reference's training-seed spread plus sampling error (flowbench/training_noise.py),
  Holm-corrected over every test of the comparison at family-wise level `alpha`.
- verdict: identical if every matched row is equal; within noise if no exact check fails, no test
  rejects and no reference row is missing; else inconsistent (exit code 1).

A run's scope is the families it has rows of: a run made with `--only family=NAME` is compared on
that family. Throughput depends on the machine and its load: reported, never a failure. Rows
superseded by a newer version (flowbench/versions.py) are left out on both sides.
"""
from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from flowbench.leaderboard import SWEEP_COLUMNS, current_rows
from flowbench.metrics import METRIC_COLUMNS, SCORE_COLUMNS
from flowbench.metrics.perplexity import GenPPL
from flowbench.training_noise import (CONFIDENCE, MODEL_METRICS, POOLED, SCALES, TRAINING_NOISE_SOURCE, NoiseTest,
                                      Spread, holm, model_groups, model_key, noise_test, pooled_spread,
                                      recorded_noise)

# the score columns and gen PPL's other statistics, in leaderboard order, and the model's val_loss
EXACT_COLUMNS = (*(c for c in METRIC_COLUMNS if c in SCORE_COLUMNS or c in GenPPL.columns), "val_loss")
DETERMINISTIC_COLUMNS = ("num_samples", "backbone_calls")
ENVIRONMENT_COLUMNS = ("cpu_isa", "eval_threads", "torch")
THROUGHPUT_COLUMNS = ("samples_per_s", "tokens_per_s")
CONFIG_COLUMNS = ("family", "family_params", "denoiser", "sampler", "sampler_params", "nfe",
                  *SWEEP_COLUMNS, "seed", "split", "train_steps", "train_passes", "judge", "num_samples")
DEFAULT_RTOL = 1e-6
DEFAULT_ALPHA = 0.01


class CompareError(ValueError):
    """A leaderboard that cannot be read; one line naming the file."""


@dataclass
class Pair:
    run: dict
    reference: dict
    by: str  # "key" or "configuration"
    exact: list[str] = field(default_factory=list)  # exact checks that failed, as text
    tests: list[NoiseTest] = field(default_factory=list)
    rejected: list[tuple[NoiseTest, float]] = field(default_factory=list)  # with its Holm-adjusted p

    @property
    def verdict(self) -> str:
        if self.exact or self.rejected:
            return "inconsistent"
        return "within noise" if self.tests else "identical"


@dataclass
class Comparison:
    run: Path
    reference: Path
    rtol: float = DEFAULT_RTOL
    alpha: float = DEFAULT_ALPHA
    pairs: list[Pair] = field(default_factory=list)
    only_run: list[dict] = field(default_factory=list)
    only_reference: list[dict] = field(default_factory=list)
    out_of_scope: dict[str, int] = field(default_factory=dict)  # family -> reference rows left out
    one_seed: list[str] = field(default_factory=list)  # families on the recorded training noise

    @property
    def verdict(self) -> str:
        if self.only_reference or any(p.verdict == "inconsistent" for p in self.pairs):
            return "inconsistent"
        return "within noise" if any(p.verdict == "within noise" for p in self.pairs) else "identical"

    @property
    def fallback(self) -> list[str]:
        """Families whose trained rows were tested on the recorded training noise."""
        tested = {p.reference["family"] for p in self.pairs if p.tests and p.reference["denoiser"] == "trained"}
        return [f for f in self.one_seed if f in tested]

    @property
    def ok(self) -> bool:
        return self.verdict != "inconsistent"

    def throughput(self) -> dict[str, float]:
        """Median ratio run / reference of each throughput column over the matched rows."""
        out = {}
        for col in THROUGHPUT_COLUMNS:
            ratios = [a / b for p in self.pairs if (a := _num(p.run.get(col))) and (b := _num(p.reference.get(col)))]
            if ratios:
                out[col] = statistics.median(ratios)
        return out

    def summary(self) -> str:
        """One line: the verdict, rows by verdict, the largest deviation, throughput."""
        count = {v: sum(p.verdict == v for p in self.pairs) for v in ("identical", "within noise", "inconsistent")}
        parts = [f"{n} {v}" for v, n in count.items() if n] or ["no rows matched"]
        tests = [(t, p) for p in self.pairs for t in p.tests]
        if tests:
            test, pair = max(tests, key=lambda tp: abs(tp[0].z))
            parts.append(f"{len(tests)} tests, Holm alpha {self.alpha:g}, largest |z| {abs(test.z):.1f} "
                         f"({short_label(pair.run)}: {test.metric})")
        if self.fallback:
            parts.append(f"one training seed in the reference ({', '.join(self.fallback)}): recorded noise scale")
        moved = sum(p.by == "configuration" for p in self.pairs)
        if moved:
            parts.append(f"{moved} matched by configuration, keys moved")
        if self.only_reference:
            parts.append(f"{len(self.only_reference)} reference rows missing from the run")
        if self.only_run:
            parts.append(f"{len(self.only_run)} run rows not in the reference (not compared)")
        speed = self.throughput().get("samples_per_s")
        if speed:
            parts.append(f"throughput x{speed:.2f} of the reference (not checked)")
        head = self.verdict if self.ok else self.verdict.upper()
        return f"{head} vs {self.reference}: " + "; ".join(parts)

    def lines(self) -> list[str]:
        """Notes, one line per inconsistent or missing row, then the summary."""
        out = []
        if self.out_of_scope:
            fams = ", ".join(f"{f} ({n})" for f, n in sorted(self.out_of_scope.items()))
            out.append(f"scope    the run's families only; reference rows of others not compared: {fams}")
        if self.fallback:
            out.append(f"one seed the reference has one training seed for {', '.join(self.fallback)}: their "
                       f"trained rows are tested on the sampling interval widened by {TRAINING_NOISE_SOURCE}")
        for p in self.pairs:
            if p.verdict == "inconsistent":
                why = p.exact + [f"{t.metric} {_fmt(p.reference.get(t.metric))} -> {_fmt(p.run.get(t.metric))} "
                                 f"(z {t.z:+.1f}, Holm p {q:.1g})" for t, q in p.rejected]
                out.append(f"inconsistent {p.run['row_key']} ({label(p.run)}): " + "; ".join(why))
        out += [f"missing  {r['row_key']} ({label(r)}): in the reference, not in the run" for r in self.only_reference]
        out += [f"extra    {r['row_key']} ({label(r)}): in the run, not in the reference" for r in self.only_run]
        return out + [self.summary()]


def short_label(row: dict) -> str:
    return f"{row['family']}/{row['sampler']} nfe={row['nfe']} {row['denoiser']} seed={row.get('seed')}"


def label(row: dict) -> str:
    extras = [row.get("family_params"), row.get("sampler_params"),
              *(f"{c}={row[c]}" for c in SWEEP_COLUMNS if row.get(c))]
    return " ".join([f"{row['family']}/{row['sampler']}", f"nfe={row['nfe']}", row["denoiser"],
                     f"seed={row.get('seed')}", *(e for e in extras if e)])


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
    if not rows:
        raise CompareError(f"{csv_path}: no rows to compare")
    return csv_path, current_rows(rows)


def compare(run: str | Path, reference: str | Path, *, rtol: float = DEFAULT_RTOL, alpha: float = DEFAULT_ALPHA,
            families: set[str] | None = None) -> Comparison:
    """Match the rows of two leaderboards and give each pair a verdict; the run's families (or
    `families`) are the scope."""
    run_csv, run_rows = read(run)
    ref_csv, ref_rows = read(reference)
    scope = families or {r["family"] for r in run_rows}
    result = Comparison(run=run_csv, reference=ref_csv.parent, rtol=rtol, alpha=alpha)
    for r in ref_rows:
        if r["family"] not in scope:
            result.out_of_scope[r["family"]] = result.out_of_scope.get(r["family"], 0) + 1
    run_rows = [r for r in run_rows if r["family"] in scope]
    ref_rows = [r for r in ref_rows if r["family"] in scope]
    _match(result, run_rows, ref_rows)
    spreads = _spreads(result, ref_rows)
    seeds = _seed_groups(ref_rows)
    models = model_groups([r for r in ref_rows if r["denoiser"] == "trained"], _norm)
    tested_models = set()
    for pair in result.pairs:
        _check_exact(pair, rtol)
        run_row, ref = pair.run, pair.reference
        if _equal_metrics(run_row, ref, rtol):
            continue
        if ref["denoiser"] != "trained":  # an oracle's MAUVE on another CPU, on its sampling error alone
            mauve = _num(run_row.get("mauve")), _num(ref.get("mauve"))
            if not _same_environment(run_row, ref) and not _close(*mauve, rtol):
                pair.tests.append(noise_test("mauve", run_row, [ref], Spread(0.0, 0), _num))
            continue
        spread = spreads[ref["family"]]
        for metric in SCALES:
            _add_test(pair, metric, seeds.get(_config(ref, seed=False), [ref]), spread[metric])
        model = model_key(ref, _norm)
        if (model, ref.get("seed")) not in tested_models:  # one test per model, not per row
            tested_models.add((model, ref.get("seed")))
            for metric in MODEL_METRICS:
                _add_test(pair, metric, models.get(model, [ref]), spread[metric])
    _correct(result)
    return result


def _match(result: Comparison, run_rows: list[dict], ref_rows: list[dict]) -> None:
    ref_by_key = {r["row_key"]: r for r in ref_rows}
    run_left = []
    for r in run_rows:
        if r["row_key"] in ref_by_key:
            result.pairs.append(Pair(r, ref_by_key.pop(r["row_key"]), "key"))
        else:
            run_left.append(r)
    # the rest by configuration, where it names one row on each side
    by_config: dict[tuple, list[dict]] = defaultdict(list)
    for r in ref_by_key.values():
        by_config[_config(r)].append(r)
    run_count: dict[tuple, int] = defaultdict(int)
    for r in run_left:
        run_count[_config(r)] += 1
    for r in run_left:
        partners = by_config.get(_config(r), [])
        if len(partners) == 1 and run_count[_config(r)] == 1:
            result.pairs.append(Pair(r, partners.pop(), "configuration"))
        else:
            result.only_run.append(r)
    result.only_reference = [r for rows in by_config.values() for r in rows]


def _seed_groups(ref_rows: list[dict]) -> dict[tuple, list[dict]]:
    """Trained reference rows identical except their training seed."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in ref_rows:
        if r["denoiser"] == "trained":
            groups[_config(r, seed=False)].append(r)
    return groups


def training_spreads(ref_rows: list[dict], *, confidence: float | None = CONFIDENCE) -> dict[str, dict[str, Spread | None]]:
    """family -> metric -> its training noise measured from the rows' training seeds (None: no
    group of two seeds); the family '*' pools every family's groups."""
    trained = [r for r in ref_rows if r["denoiser"] == "trained"]
    out = {}
    for family in [*sorted({r["family"] for r in trained}), POOLED]:
        rows = [r for r in trained if family in (POOLED, r["family"])]
        groups = list(_seed_groups(rows).values())
        out[family] = {m: pooled_spread(groups, m, _num, confidence=confidence) for m in SCALES}
        out[family] |= {m: pooled_spread(list(model_groups(rows, _norm).values()), m, _num, confidence=confidence)
                        for m in MODEL_METRICS}
    return out


def _spreads(result: Comparison, ref_rows: list[dict]) -> dict[str, dict[str, Spread]]:
    """family -> metric -> its training noise: measured from the reference's seeds, or recorded."""
    spreads, out = training_spreads(ref_rows), {}
    for family in sorted({r["family"] for r in ref_rows}):
        measured = spreads.get(family, {})  # none: oracle rows only, never tested on noise
        if measured and all(s is None for s in measured.values()):
            result.one_seed.append(family)
        out[family] = {m: measured.get(m) or Spread(t ** 2, 0) for m, t in recorded_noise(family).items()}
    return out


def _add_test(pair: Pair, metric: str, group: list[dict], spread: Spread) -> None:
    y, x = _num(pair.run.get(metric)), _num(pair.reference.get(metric))
    if y is None and x is None:
        return
    if y is None or x is None or math.isnan(y) != math.isnan(x):
        pair.exact.append(f"{metric} {_fmt(x)} -> {_fmt(y)} (a value on one side only)")
        return
    if math.isnan(y):
        return
    group = [r for r in group if _num(r.get(metric)) is not None and not math.isnan(_num(r.get(metric)))]
    pair.tests.append(noise_test(metric, pair.run, group, spread, _num))


def _correct(result: Comparison) -> None:
    tests = [(pair, test) for pair in result.pairs for test in pair.tests]
    for (pair, test), adjusted in zip(tests, holm([test.p for _, test in tests])):
        if adjusted < result.alpha:
            pair.rejected.append((test, adjusted))


def _check_exact(pair: Pair, rtol: float) -> None:
    run, ref = pair.run, pair.reference
    if pair.by == "configuration":
        pair.exact.append(f"row key {ref['row_key']} -> {run['row_key']} (the code changed what the key hashes)")
    columns = DETERMINISTIC_COLUMNS + (() if ref["denoiser"] == "trained" else EXACT_COLUMNS)
    for col in columns:
        if col == "mauve" and not _same_environment(run, ref):
            continue  # tested within its sampling interval instead
        if not _close(_num(run.get(col)), _num(ref.get(col)), rtol):
            pair.exact.append(f"{col} {_fmt(ref.get(col))} -> {_fmt(run.get(col))}")


def _equal_metrics(run: dict, ref: dict, rtol: float) -> bool:
    return all(_close(_num(run.get(c)), _num(ref.get(c)), rtol) for c in EXACT_COLUMNS)


def _same_environment(run: dict, ref: dict) -> bool:
    values = [(run.get(c) or None, ref.get(c) or None) for c in ENVIRONMENT_COLUMNS]
    return all(a is not None and a == b for a, b in values)


def _config(row: dict, *, seed: bool = True) -> tuple:
    # a row from before `compiled` was a column sampled eagerly
    compiled = str(row.get("compiled") or False).lower() == "true"
    # a sampling seed of its own (a split) is configuration; without one the sampler took the
    # training seed, and rows identical except `seed` stay one seed group
    sample_seed = _norm(row.get("sample_seed")) if _norm(row.get("split")) else None
    return (*(_norm(row.get(c)) for c in CONFIG_COLUMNS if seed or c != "seed"), compiled, sample_seed)


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


def _fmt(value) -> str:
    value = _num(value) if not isinstance(value, float) else value
    return "-" if value is None else f"{value:.6g}"


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


STALE = "STALE"  # in a reference folder: its rows predate a change of what keys them (one line: why)


def stale_reason(reference: str | Path) -> str | None:
    """Why a reference awaits recomputation, if it does (its `STALE` file), else None."""
    folder = Path(reference)
    marker = (folder if folder.is_dir() else folder.parent) / STALE
    return marker.read_text().strip() if marker.is_file() else None
