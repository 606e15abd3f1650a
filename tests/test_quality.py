"""Trained briefly on the embedded language, the baselines beat a uniform generator by far
and come within a stated factor of the true-data floor under the exact judge."""
import csv
import math

import pytest
import torch
import yaml

from flowbench.data.language import HMMLanguage
from flowbench.runner import run_suite

FACTOR = 2.0  # gen PPL must be below FACTOR x the floor exp(entropy rate)

SUITE = {
    "name": "quality",
    "corpus": {"name": "hmm_language", "seq_len": 16, "seed": 0},
    "backbone": {"d_model": 64, "n_layers": 2, "n_heads": 4},
    "train": {"steps": 500, "batch_size": 64, "lr": 3e-3, "warmup_steps": 50, "eval_every": 250,
              "val_sequences": 256},
    "eval": {"num_samples": 256, "batch_size": 256, "judge": "exact"},
    "runs": [{"family": "ar_gpt2", "samplers": [{"sampler": "kv_cache"}]},
             {"family": "mdlm", "samplers": [{"sampler": "ancestral", "nfe": 64}]}],
}


@pytest.mark.slow
def test_baselines_learn_the_language(tmp_path):
    path = tmp_path / "quality.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    with open(run_suite(path, out=tmp_path / "out", jobs=2, progress=False), newline="") as f:
        rows = {r["family"]: r for r in csv.DictReader(f)}
    lang = HMMLanguage(seq_len=16, seed=0)
    floor = math.exp(lang.entropy_rate()[0])
    uniform = torch.randint(0, lang.vocab_size, (256, 16), generator=torch.Generator().manual_seed(0))
    uniform_ppl = math.exp(lang.token_nll(uniform).mean().item())
    for family in ("ar_gpt2", "mdlm"):
        ppl = float(rows[family]["gen_ppl"])
        assert ppl < uniform_ppl / 10, (family, ppl, uniform_ppl)
        assert ppl < FACTOR * floor, (family, ppl, floor)
