"""`score` computes the leaderboard's metrics for samples made elsewhere; the evaluate modules
load offline and agree with the harness."""
import json

import evaluate
import pytest
import torch

from flowbench.__main__ import main
from flowbench.config import EvalConfig
from flowbench.data.language import HMMLanguage
from flowbench.hf_evaluate import path
from flowbench.judges import ExactJudge
from flowbench.metrics import score_samples

CORPUS = "{name: hmm_language, seq_len: 16, seed: 0}"


@pytest.fixture(scope="module")
def language():
    return HMMLanguage(seq_len=16, seed=0)


def test_score_reads_ids_and_text_and_matches_the_runner(tmp_path, language, capsys):
    tokens = language.split("train", 64)
    (tmp_path / "s.jsonl").write_text("\n".join(json.dumps({"ids": r.tolist()}) for r in tokens))
    (tmp_path / "s.txt").write_text("\n".join(language.decode(r) for r in tokens) + "\nthe cat\n")
    config = EvalConfig(metrics=["gen_ppl", "entropy", "ngram_kl"])
    judge = ExactJudge(corpus=language, cache_dir=tmp_path, device=torch.device("cpu"))
    expected = score_samples(tokens, corpus=language, judge=judge, eval_config=config, seed=0)
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"corpus: {CORPUS}\neval: {{judge: exact, metrics: [gen_ppl, entropy, ngram_kl]}}\n")
    for name in ("s.jsonl", "s.txt"):
        assert main(["score", str(tmp_path / name), "--corpus", str(suite)]) == 0
        row = json.loads(capsys.readouterr().out)
        assert row["num_samples"] == 64 and row["dropped_short"] == (1 if name == "s.txt" else 0)
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, rel=1e-12), key


def test_score_names_the_bad_line(tmp_path, capsys):
    (tmp_path / "bad.txt").write_text("the cat\nzebroid walks\n")
    assert main(["score", str(tmp_path / "bad.txt"), "--corpus", CORPUS]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.txt:2" in err and "zebroid" in err


def test_evaluate_modules_load_offline_and_agree_with_the_harness(language):
    tokens = language.split("train", 48)
    judge = ExactJudge(corpus=language, cache_dir=".", device=torch.device("cpu"))
    nll, mask = judge.score(tokens)
    harness = score_samples(tokens, corpus=language, judge=judge, seed=0,
                            eval_config=EvalConfig(metrics=["gen_ppl", "entropy", "mauve"],
                                                   metric_params={"mauve": {"features": "minilm"}}))
    got = evaluate.load(path("gen_ppl")).compute(nll=nll.tolist())
    assert got["gen_ppl"] == pytest.approx(harness["gen_ppl"], rel=1e-12)
    assert got["gen_ppl_mean"] == pytest.approx(harness["gen_ppl_mean"], rel=1e-12)
    got = evaluate.load(path("entropy")).compute(tokens=tokens.tolist())
    assert (got["entropy"], got["entropy_lo"]) == pytest.approx((harness["entropy"], harness["entropy_lo"]), rel=1e-12)
    got = evaluate.load(path("mauve")).compute(predictions=[language.decode(r) for r in tokens],
                                               references=[language.decode(r) for r in language.split("validation", 48)])
    assert got["mauve"] == pytest.approx(harness["mauve"], rel=1e-9)
    assert got["mauve_lo"] == pytest.approx(harness["mauve_lo"], rel=1e-9)
