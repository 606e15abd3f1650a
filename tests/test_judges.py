"""The gpt2-large judge's loading pins and scoring, on a small GPT-2 built here (no hub)."""
from pathlib import Path

import pytest
import torch
import yaml

import flowbench.judges as judges
from flowbench.__main__ import main

WORDS = ["a", "b", "c d"]  # corpus ids 0, 1, 2; id 2 decodes to two GPT-2 tokens


class WordCorpus:
    def decode(self, ids):
        return " ".join(WORDS[int(i)] for i in ids)


@pytest.fixture
def tiny_hub(monkeypatch):
    """A word-level tokenizer and a small random GPT2LMHeadModel in place of the hub's; records
    what the judge asked the hub for."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0, "a": 1, "b": 2, "c": 3, "d": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=len(vocab), n_positions=16, n_embd=16, n_layer=1, n_head=2)).eval()
    asked = {}
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda name, **kw: asked.update(tokenizer=(name, kw)) or tokenizer)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda name, **kw: asked.update(model=(name, kw)) or model)
    return model, asked


def test_gpt2_large_is_pinned_in_float32_under_the_flowbench_cache(tiny_hub, tmp_path):
    _, asked = tiny_hub
    judges.GPT2LargeJudge(corpus=WordCorpus(), cache_dir=tmp_path, device=torch.device("cpu"))
    for name, kw in asked.values():
        assert name == judges.GPT2_LARGE
        assert kw["revision"] == judges.GPT2_LARGE_REVISION and len(kw["revision"]) == 40  # a commit
        assert Path(kw["cache_dir"]) == tmp_path / "hub"
    assert asked["model"][1]["dtype"] is torch.float32
    judges.GPT2LargeJudge(corpus=WordCorpus(), cache_dir=tmp_path, device=torch.device("cpu"), revision="v2")
    assert asked["model"][1]["revision"] == asked["tokenizer"][1]["revision"] == "v2"
    assert judges.GPT2LargeJudge.pinned["revision"] == judges.GPT2_LARGE_REVISION  # in every row key


@pytest.mark.parametrize("batch_size", [1, 8])
def test_gpt2_large_scores_every_gpt2_token_after_endoftext(tiny_hub, tmp_path, batch_size):
    """'a b c d' is 4 GPT-2 tokens, 'a a b' 3: 7 scored tokens, the shorter row's last entry
    masked; each row scores as it would alone, whatever it is batched with."""
    model, _ = tiny_hub
    judge = judges.GPT2LargeJudge(corpus=WordCorpus(), cache_dir=tmp_path, device=torch.device("cpu"),
                                  batch_size=batch_size)
    nll, mask = judge.score(torch.tensor([[0, 1, 2], [0, 0, 1]]))
    assert mask.tolist() == [[True, True, True, True], [True, True, True, False]]
    assert int(mask.sum()) == 7 and nll.dtype == torch.float64
    for row, ids in ((0, [0, 1, 2, 3, 4]), (1, [0, 1, 1, 2])):
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1].double()
        alone = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")
        torch.testing.assert_close(nll[row, : len(ids) - 1], alone, atol=1e-5, rtol=1e-5)


def test_unknown_judge_parameter_fails_before_training(tmp_path, capsys):
    data = yaml.safe_load((Path(__file__).parents[1] / "suites" / "smoke.yaml").read_text())
    data["eval"]["judge_params"] = {"revison": "main"}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "eval.judge_params" in err and "'revison'" in err and "\n" not in err
    assert not (tmp_path / "cache" / "models").exists()
