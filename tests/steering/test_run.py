import csv
import textwrap

import pytest
import torch

from flowbench.__main__ import main
from flowbench.config import BackboneConfig, SuiteError
from flowbench.families.flow_map import FlowMap, FlowMapParams, FlowMapSamplerParams
from flowbench.steering.config import load_steering_suite
from flowbench.steering.finetune import FinetuneConfig, finetune
from flowbench.steering.rewards import TopicReward

SUITE = """
name: steering_tiny
corpus: {name: hmm_language, seq_len: 4, seed: 0, n_topics: 2}
backbone: {d_model: 16, n_layers: 1, n_heads: 2}
train: {steps: 2, batch_size: 8, warmup_steps: 1, eval_every: 2, val_sequences: 8}
eval: {num_samples: 6, batch_size: 4, judge: exact, device: cpu}
runs:
  - family: flow_map
    denoiser: [trained, oracle]
    samplers:
      - {sampler: flow_map, nfe: 1}
steering:
  reward_params: {topic: 1}
  nfe: [2]
  eta: [0.0, 2.0]
  horizon: [1.0, 0.5]
  oracle_steps_per_unit: 2
  n_reference: 64
  finetune: {steps: 2, batch_size: 4}
"""


def write(tmp_path, text):
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_steer_command_writes_every_row_once(tmp_path, capsys):
    suite, out = write(tmp_path, SUITE), tmp_path / "out"
    assert main(["steer", str(suite), "--out", str(out), "--no-progress"]) == 0
    with (out / "leaderboard.csv").open() as f:
        rows = list(csv.DictReader(f))
    methods = {(r["denoiser"], r["method"]) for r in rows}
    assert methods == {(d, m) for d in ("trained", "oracle") for m in
                       ("base", "lookahead", "tangent", "best_of_n")} | {("trained", "finetuned")}
    # per denoiser: base 1, lookahead 2 x 2, tangent 2, best_of_n 1 (+ finetuned 1 when trained)
    assert len(rows) == 2 * 8 + 1
    for r in rows:
        assert r["git_sha"] and r["row_key"] and float(r["samples_per_s"]) > 0
        assert 0 <= float(r["topic_share"]) <= 1 and r["tilted_nll"] and r["entropy"]
        assert int(r["num_samples"]) == 6
    budget = {r["method"]: int(r["passes"]) for r in rows if r["denoiser"] == "trained"}
    assert budget["best_of_n"] >= 7 and budget["tangent"] >= 7   # lookahead at nfe 2: 7 passes
    assert len({r["row_key"] for r in rows}) == len(rows)
    table = (out / "table.md").read_text().splitlines()  # what a person reads: a line per row
    assert table[0].startswith("| denoiser") and len(table) == 2 + len(rows)
    # a second run resumes: nothing recomputed, nothing duplicated
    assert main(["steer", str(suite), "--out", str(out), "--no-progress"]) == 0
    with (out / "leaderboard.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(rows)


@pytest.mark.parametrize("change, message", [
    ("  eta: [-1.0]", "steering.eta"),
    ("  horizon: [0.0]", "steering.horizon"),
    ("  methods: [lookahead, magic]", "steering.methods"),
    ("  reward: topics", "did you mean 'topic'"),
])
def test_bad_steering_sections_fail_in_one_line(tmp_path, capsys, change, message):
    suite = write(tmp_path, SUITE + change + "\n")
    assert main(["steer", str(suite), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_a_suite_without_steering_is_refused(tmp_path):
    with pytest.raises(SuiteError, match="steering"):
        load_steering_suite(write(tmp_path, SUITE.split("steering:")[0]))


def test_finetuning_raises_the_reward_and_the_divergence_holds_it(micro_language):
    lang = micro_language
    fam = FlowMap(params=FlowMapParams(), vocab_size=lang.vocab_size, seq_len=lang.seq_len)
    torch.manual_seed(0)
    net = fam.build_model(BackboneConfig(d_model=16, n_layers=1, n_heads=2)).eval()
    reward = TopicReward(corpus=lang, topic=0)

    def mean_reward(model):
        ids = fam.sample(model, n=64, sampler="flow_map", params=FlowMapSamplerParams(nfe=2),
                         generator=torch.Generator().manual_seed(5))
        return float(reward.of_ids(ids).mean())

    free, _ = finetune(fam, net, reward=reward, lam=1.0, nfe=2, seed=0,
                       config=FinetuneConfig(steps=30, batch_size=16, lr=3e-3, beta=0.0))
    held, info = finetune(fam, net, reward=reward, lam=1.0, nfe=2, seed=0,
                          config=FinetuneConfig(steps=30, batch_size=16, lr=3e-3, beta=100.0))
    before = mean_reward(net)
    assert mean_reward(free) > before + 0.1
    assert abs(mean_reward(held) - before) < mean_reward(free) - before
    assert info["ft_passes"] > 30 * 4


def test_a_row_cut_by_a_killed_write_is_repaired_before_the_next_row(tmp_path):
    """A kill mid-write leaves the last row without its newline; the next run recomputes that row
    and appends it on a line of its own, after cutting the broken one."""
    suite = write(tmp_path, SUITE.replace("[trained, oracle]", "[oracle]")
                  + "  methods: [base, best_of_n]\n")
    out = tmp_path / "out"
    assert main(["steer", str(suite), "--out", str(out), "--no-progress"]) == 0
    board = out / "leaderboard.csv"
    with board.open(newline="") as f:
        complete = list(csv.DictReader(f))
    assert len(complete) == 2
    data = board.read_bytes()
    last = data.rstrip(b"\r\n").rfind(b"\n") + 1
    board.write_bytes(data[: last + (len(data) - last) // 2])  # the last row, half-written
    assert main(["steer", str(suite), "--out", str(out), "--no-progress"]) == 0
    with board.open(newline="") as f:
        header, *lines = list(csv.reader(f))
    assert all(len(line) == len(header) for line in lines)
    rows = [dict(zip(header, line)) for line in lines]
    keep = ("row_key", "method", "topic_share", "tilted_nll")
    assert [{k: r[k] for k in keep} for r in rows] == [{k: r[k] for k in keep} for r in complete]
