"""How far a trained row may move without anything having changed but training noise.

A trained row is one draw of two random things: the training run (its seed, and on another CPU
type or thread count the rounding of every step) and the sampling. `compare` asks whether a run's
trained row could be such a draw from the reference's distribution of that row:

    z = (y - mean_k x) / sqrt(tau^2 (1 + 1/k) + v_y + mean_k v_x / k),  read on a normal,

on each metric's scale (SCALES), y the run's value, x the reference's k rows identical except
`seed` (its training seeds), v a row's sampling variance (from its bootstrap interval columns
`<col>_lo`, `<col>_hi`, a 95% interval: v = ((T(hi) - T(lo)) / 3.92)^2, T the scale) and tau^2
the training noise of the row's family on that metric, from the reference's groups of seeds g:

    (k_g - 1) s_g^2 ~ (tau^2 + v_g) chi^2_(k_g - 1),

s_g^2 the sample variance of a group's values, v_g its mean sampling variance. Groups differ
widely in v (a KL near its floor is mostly sampling error, a collapsed sampler has none), so tau^2
is fitted by maximum likelihood over all groups of the family, where a noisy group weighs little.
Three seeds leave tau^2 poorly known (a spread estimated as 0 turns the test into a test of
sampling error alone), so it is taken at its one-sided 99% upper profile-likelihood bound. A family
with one training seed in the reference has no spread to measure: it gets the recorded
TRAINING_NOISE (below), measured the same way on nfe_sweep's three training seeds. docs/compare.md reads the choices.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from flowbench.metrics.bootstrap import LEVEL

# metric -> scale its test runs on. log: gen PPL (its log is the mean NLL, an average of
# per-token terms) and the KLs (positive, their spread grows with their value); identity: entropy
# (a mean of per-sample entropies, nats); logit: MAUVE (in [0, 1], where a move of 0.05 means more
# near 1 than near 0.5; kept inside [MAUVE_EPS, 1 - MAUVE_EPS]).
SCALES = {"gen_ppl": "log", "entropy": "identity", "unigram_kl": "log", "bigram_kl": "log",
          "mauve": "logit"}
MAUVE_EPS = 1e-3
# one value per model, no sampling error: tested once per model
MODEL_METRICS = {"val_loss": "identity"}
MODEL_COLUMNS = ("family", "family_params", "train_steps", "train_passes")

# The fallback training-noise scale tau on each metric's scale, for a family whose reference rows
# have one training seed each: what `compare.training_spreads` measures on the three training seeds
# of results/reference/nfe_sweep (at the CONFIDENCE bound, as for a measured spread), per family;
# POOLED, every family's seed groups together, for a family nfe_sweep does not train. A family with
# a seed that fails to learn (flow_map, kl_flow, dirichlet_flow) has a wide tau: a one-seed compare
# of those families can tell a large regression only. tests/test_compare.py checks the table is
# what the committed reference gives.
POOLED = "*"
TRAINING_NOISE = {
    "ar_gpt2": {"gen_ppl": 0.08694, "entropy": 0.03412, "unigram_kl": 1.377, "bigram_kl": 0.142, "mauve": 3.561,
                "val_loss": 0.0002477},
    "dfm": {"gen_ppl": 0.5277, "entropy": 0.011, "unigram_kl": 0.1171, "bigram_kl": 0.152, "mauve": 1.288,
            "val_loss": 0.1618},
    "dirichlet_flow": {"gen_ppl": 1.455, "entropy": 0.01863, "unigram_kl": 0.009163, "bigram_kl": 0.5548,
                       "mauve": 3.327, "val_loss": 0.4159},
    "flow_map": {"gen_ppl": 2.058, "entropy": 0.2957, "unigram_kl": 0.4743, "bigram_kl": 0.6421, "mauve": 1.634,
                 "val_loss": 0.7529},
    "kl_flow": {"gen_ppl": 1.922, "entropy": 0.02763, "unigram_kl": 0.1333, "bigram_kl": 0.5939, "mauve": 3.368,
                "val_loss": 0.529},
    "mdlm": {"gen_ppl": 0.04107, "entropy": 0.01374, "unigram_kl": 0.1534, "bigram_kl": 0.02136, "mauve": 0.008692,
             "val_loss": 0.3888},
    POOLED: {"gen_ppl": 1.173, "entropy": 0.121, "unigram_kl": 0.241, "bigram_kl": 0.3788, "mauve": 1.752,
             "val_loss": 0.1184},
}
TRAINING_NOISE_SOURCE = "the training noise recorded in flowbench/training_noise.py (nfe_sweep's seeds)"


def recorded_noise(family: str) -> dict[str, float]:
    """metric -> the recorded tau of `family` (POOLED's for a family not measured)."""
    return TRAINING_NOISE.get(family, TRAINING_NOISE[POOLED])


CONFIDENCE = 0.99  # tau^2 is used at this one-sided upper confidence bound
Z95 = stats.norm.ppf(0.5 + LEVEL / 2)


@dataclass(frozen=True)
class Spread:
    """Training noise of one family on one metric: tau^2 and its degrees of freedom (0: recorded)."""
    tau2: float
    df: int


def transform(metric: str, value: float | None) -> float | None:
    if value is None or math.isnan(value):
        return value
    scale = SCALES.get(metric) or MODEL_METRICS.get(metric)
    if scale == "log":
        return math.log(max(value, 1e-300))
    if scale == "logit":
        p = min(max(value, MAUVE_EPS), 1 - MAUVE_EPS)
        return math.log(p / (1 - p))
    return value


def sampling_variance(metric: str, row: dict, num) -> float:
    """The row's sampling variance on the metric's scale, from its 95% interval; where one end sits
    on the metric's bound (MAUVE 1, a KL 0: clipped there) from the other half alone; 0 where the
    row has no interval columns."""
    x, lo, hi = num(row.get(metric)), num(row.get(f"{metric}_lo")), num(row.get(f"{metric}_hi"))
    if x is None or lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return 0.0
    t = transform(metric, x)
    below, above = t - transform(metric, lo), transform(metric, hi) - t
    clipped_low, clipped_high = lo <= 0, SCALES.get(metric) == "logit" and hi >= 1
    if clipped_low != clipped_high:
        half = above if clipped_low else below
    else:
        half = (below + above) / 2
    return (max(half, 0.0) / Z95) ** 2


def pooled_spread(groups: list[list[dict]], metric: str, num, *,
                  confidence: float | None = CONFIDENCE) -> Spread | None:
    """Training noise of one metric from groups of rows that differ only in training seed: its
    maximum-likelihood value, or with `confidence` its one-sided upper profile-likelihood bound
    (None: no group has two seeds). Rows lacking the metric are left out of their group."""
    dof, spread, sampling = [], [], []
    for rows in groups:
        values = [(transform(metric, v), sampling_variance(metric, r, num)) for r in rows
                  if (v := num(r.get(metric))) is not None and not math.isnan(v)]
        if len(values) >= 2:
            x, v = np.array(values).T
            dof.append(len(x) - 1)
            spread.append(np.var(x, ddof=1))
            sampling.append(max(v.mean(), 1e-12))
    if not dof:
        return None
    dof, spread, sampling = map(np.array, (dof, spread, sampling))

    def loglik(tau2: float) -> float:  # (k - 1) s^2 ~ (tau^2 + v) chi^2_(k-1), per group
        total = tau2 + sampling
        return float(-0.5 * np.sum(dof * (np.log(total) + spread / total)))

    top = 10 * float(spread.max()) + 1e-9
    tau2 = float(optimize.minimize_scalar(lambda t: -loglik(t), bounds=(0.0, top), method="bounded").x)
    if confidence:
        drop = stats.chi2.ppf(2 * confidence - 1, 1) / 2  # one-sided: the two-sided level 2c - 1
        target = loglik(tau2) - drop
        while loglik(top) > target:
            top *= 4
        tau2 = float(optimize.brentq(lambda t: loglik(t) - target, tau2, top))
    return Spread(tau2=tau2, df=int(dof.sum()))


def model_key(row: dict, norm) -> tuple:
    """What makes a model apart from its training seed."""
    return tuple(norm(row.get(c)) for c in MODEL_COLUMNS)


def model_groups(rows: list[dict], norm) -> dict[tuple, list[dict]]:
    """model_key -> one row per training seed of that model."""
    seeds: dict[tuple, dict] = {}
    for r in rows:
        seeds.setdefault((model_key(r, norm), norm(r.get("seed"))), r)
    groups = defaultdict(list)
    for (key, _), r in seeds.items():
        groups[key].append(r)
    return dict(groups)


@dataclass(frozen=True)
class NoiseTest:
    """One metric of one run row against the reference's seeds: z and its two-sided normal p."""
    metric: str
    z: float
    p: float


def noise_test(metric: str, run_row: dict, ref_rows: list[dict], spread: Spread, num) -> NoiseTest:
    """The run row against the mean of the reference's seeds on `metric`."""
    y = transform(metric, num(run_row.get(metric)))
    xs = [transform(metric, num(r.get(metric))) for r in ref_rows]
    k = len(xs)
    variance = (spread.tau2 * (1 + 1 / k) + sampling_variance(metric, run_row, num)
                + sum(sampling_variance(metric, r, num) for r in ref_rows) / k ** 2)
    gap = y - sum(xs) / k
    if math.isclose(y, y - gap, rel_tol=1e-9, abs_tol=1e-12):
        return NoiseTest(metric, 0.0, 1.0)  # equal up to the float rounding of a mean
    if variance <= 0:
        return NoiseTest(metric, math.copysign(math.inf, gap), 0.0)
    z = gap / math.sqrt(variance)
    return NoiseTest(metric, z, float(2 * stats.norm.sf(abs(z))))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error over all tests of a comparison)."""
    n = len(p_values)
    order = np.argsort(p_values)
    adjusted = np.empty(n)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (n - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted.tolist()
