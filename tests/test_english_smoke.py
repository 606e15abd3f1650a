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
