"""Real English offline, end to end: WordNet glosses (Debian's wordnet-base), BPE, the local
judge and MiniLM MAUVE, through the suite file CI runs."""
from pathlib import Path

import pandas as pd
import pytest

from flowbench.__main__ import main
from flowbench.data.wordnet import DEBIAN_ROOT, WORDNET_FILES

ROOT = Path(__file__).parents[1]
missing = [f for f in WORDNET_FILES if not (Path(DEBIAN_ROOT) / f).is_file()]


@pytest.mark.skipif(bool(missing), reason=f"WordNet glosses absent ({DEBIAN_ROOT}/{missing[0] if missing else ''}): "
                                          "apt-get install wordnet-base, as .ci/run does")
def test_english_smoke_runs_end_to_end(tmp_path):
    assert main(["run", str(ROOT / "suites" / "english_smoke.yaml"), "--out", str(tmp_path), "--no-progress"]) == 0
    df = pd.read_csv(tmp_path / "leaderboard.csv")
    assert len(df) == 3 and df["mauve_features"].eq("minilm").all()
    assert df["mauve"].between(0, 1).all() and df["mauve_floor"].gt(0.8).all()  # held-out glosses match
    assert df["mauve"].lt(df["mauve_floor"]).all()  # a 20-step model is not English yet
    assert df["unigram_kl"].isna().all()  # no exact marginals on real text
    assert (df["gen_ppl"] > df["gen_ppl_floor"]).all()
    assert (tmp_path / "report.md").exists() and (tmp_path / "gen_ppl_vs_entropy.png").stat().st_size > 0


def test_the_kl_on_real_english_fails_before_training(tmp_path, capsys):
    if missing:
        pytest.skip("WordNet glosses absent")
    suite = (ROOT / "suites" / "english_smoke.yaml").read_text().replace("[gen_ppl, entropy, mauve]", "[ngram_kl]")
    (tmp_path / "s.yaml").write_text(suite)
    assert main(["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "ngram_kl" in err and "wordnet_glosses" in err and "\n" not in err
    assert not (tmp_path / "o").exists() and not list((tmp_path / "cache").glob("models/*"))


def test_the_english_suites_plan_every_family_at_equal_compute():
    """suites/english.yaml: every family at nfe_sweep's budget and backbone, V >= 1024, L >= 32,
    three training seeds; english_curve.yaml: 2000 / 8000 / 16000 passes on one seed, its 8000-pass
    models english.yaml's own (planned only: training them takes hours)."""
    from flowbench.config import load_suite
    from flowbench.plan import plan
    from flowbench.registry import FAMILIES

    english, curve = (load_suite(ROOT / "suites" / f"{n}.yaml") for n in ("english", "english_curve"))
    nfe_sweep = load_suite(ROOT / "suites" / "nfe_sweep.yaml")
    for suite in (english, curve):
        assert suite.corpus.name == "wordnet_glosses" and suite.eval.judge == "local"
        assert suite.corpus.model_extra["vocab_size"] >= 1024 and suite.corpus.seq_len >= 32
        assert suite.backbone == nfe_sweep.backbone
    points = plan(english)
    models = {p.model.key: p.model for p in points}
    assert {m.family for m in models.values()} == set(FAMILIES.names())
    assert {m.seed for m in models.values()} == {0, 1, 2} and len(models) == 7 * 3  # dfm: both sources
    assert {m.train.passes for m in models.values()} == {nfe_sweep.train["passes"]} == {8000}
    assert all(p.denoiser == "trained" for p in points)  # real text has no exact denoiser
    curve_models = {p.model.key: p.model for p in plan(curve)}
    assert {(m.family, m.train.passes) for m in curve_models.values()} == {
        (f, n) for f in FAMILIES.names() for n in (2000, 8000, 16000)}
    assert {m.seed for m in curve_models.values()} == {0}
    assert {k for k, m in curve_models.items() if m.train.passes == 8000} == {
        k for k, m in models.items() if m.seed == 0}  # the same checkpoints


def test_the_long_curve_continues_the_curve_for_mdlm_and_ar():
    """suites/english_curve_long.yaml: mdlm and ar_gpt2 at 16000 / 32000 / 64000 passes, its
    16000-pass models english_curve's own (planned only)."""
    from flowbench.config import load_suite
    from flowbench.plan import plan

    curve, long = (load_suite(ROOT / "suites" / f"{n}.yaml") for n in ("english_curve", "english_curve_long"))
    assert (long.corpus, long.backbone, long.eval) == (curve.corpus, curve.backbone, curve.eval)
    models = {p.model.key: p.model for p in plan(long)}
    assert {(m.family, m.train.passes, m.seed) for m in models.values()} == {
        (f, n, 0) for f in ("ar_gpt2", "mdlm") for n in (16000, 32000, 64000)}
    curve_keys = {p.model.key for p in plan(curve)}
    assert {k for k, m in models.items() if m.train.passes == 16000} <= curve_keys  # the same checkpoints
