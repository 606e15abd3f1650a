"""Generative perplexity from per-token NLLs, as the flowbench leaderboard computes it."""
import datasets
import evaluate
import torch

from flowbench.metrics.perplexity import gen_ppl

_DESCRIPTION = """gen_ppl = exp(sum of NLL / number of scored tokens) over all samples (MDLM / DUO);
gen_ppl_mean = mean over samples of exp(mean NLL) (SEDD / flow_matching); gen_ppl_lo / _hi: a
bootstrap interval over samples (fixed seed). Input: each sample's per-token NLLs under a judge, in nats."""
_KWARGS = """Args:
    nll: list of lists of floats, the scored tokens' NLL of each sample.
    seed: int, seed of the bootstrap (default 0).
Returns: gen_ppl, gen_ppl_lo, gen_ppl_hi, gen_ppl_mean, nll_mean, nll_median."""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class GenPPL(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
                                   features=datasets.Features({"nll": datasets.Sequence(datasets.Value("float64"))}))

    def _compute(self, nll, seed: int = 0):
        M = max(len(r) for r in nll)
        values = torch.zeros(len(nll), M, dtype=torch.float64)
        mask = torch.zeros(len(nll), M, dtype=torch.bool)
        for i, r in enumerate(nll):
            values[i, : len(r)] = torch.tensor(r, dtype=torch.float64)
            mask[i, : len(r)] = True
        from flowbench.metrics.base import Samples
        from flowbench.metrics.perplexity import GenPPL as Harness

        if seed:
            return Harness().compute(Samples(tokens=None, nll=values, mask=mask, seed=seed))
        return gen_ppl(tokens=None, nll=values, mask=mask)
