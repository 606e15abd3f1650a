"""Per-sample unigram entropy of token ids, as the flowbench leaderboard computes it."""
import datasets
import evaluate
import numpy as np

from flowbench.metrics.base import Samples
from flowbench.metrics.entropy import Entropy

_DESCRIPTION = """entropy = mean over samples of -sum_v c_v/L log(c_v/L), the unigram entropy of each
sample's own token ids in nats (MDLM / DUO convention); entropy_lo / _hi: a bootstrap interval over
samples. Samples must share one length."""
_KWARGS = """Args:
    tokens: list of lists of ints, each sample's token ids (one length).
    seed: int, seed of the bootstrap (default 0).
Returns: entropy, entropy_lo, entropy_hi."""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class TokenEntropy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
                                   features=datasets.Features({"tokens": datasets.Sequence(datasets.Value("int64"))}))

    def _compute(self, tokens, seed: int = 0):
        import torch

        ids = torch.as_tensor(np.asarray(tokens, dtype=np.int64))
        return Entropy().compute(Samples(tokens=ids, nll=None, mask=None, seed=seed))
