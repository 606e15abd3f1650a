"""`bench` at a tiny size: every measure is written, every ratio is finite (no timing assertions)."""
import math

import pandas as pd
import pytest
import torch
import yaml

from flowbench.__main__ import main
from flowbench.bench import run_bench
from flowbench.bench.measure import RecordedCalls, calls_per_run, time_call
from flowbench.config import SuiteError
from flowbench.measuring import PhaseMemory

TINY = {
    "name": "tiny", "backbone": {"d_model": 16, "n_layers": 1, "n_heads": 2}, "seq_len": 6, "vocab_size": 10,
    "batch_sizes": [1, 3], "eval_batch": 3, "overhead_nfe": [1, 2], "train_batch": 4, "train_steps": 1,
    "repeats": 1, "min_run_s": 0.0, "scaling": {"seq_lens": [6, 12], "vocab_sizes": [10, 20], "batch_size": 2, "nfe": 1},
    "entries": [
        {"family": "ar_gpt2", "sampler": "kv_cache"},
        {"family": "ar_gpt2", "sampler": "full_prefix"},
        {"family": "mdlm", "sampler": "ancestral", "nfe": [1, 2]},
        {"family": "dfm", "params": {"source": "uniform"}, "sampler": "euler", "nfe": [1, 2], "label": "dfm_u"},
        {"family": "dirichlet_flow", "sampler": "ode", "nfe": [1, 2]},
        {"family": "kl_flow", "sampler": "ode", "nfe": [1, 2]},
        {"family": "flow_map", "sampler": "flow_map", "nfe": [1, 2]},
    ],
}


def _write(tmp_path, data) -> str:
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_bench_writes_finite_ratios_for_every_contestant(tmp_path):
    csv = run_bench(_write(tmp_path, TINY), out=tmp_path / "out", progress=False)
    t = pd.read_csv(csv)
    names = {e.get("label") or f"{e['family']}/{e['sampler']}" for e in TINY["entries"]}
    for measure in ("overhead", "latency", "train", "sample_memory", "scaling_seq_len", "scaling_vocab_size"):
        assert set(t[t.measure == measure].contestant) == names, measure
    over = t[t.measure == "overhead"]
    assert len(over) == 2 * 2 * 5 + 2 * 2  # 5 NFE-swept contestants x 2 batches x 2 NFE; AR x 2 batches
    assert (over.backbone_calls == over.nfe).all()  # replayed exactly the calls the sampler made
    for col in ("overhead_ratio", "forward_seconds"):
        assert over[col].map(math.isfinite).all() and (over[col] > 0).all()
    train = t[t.measure == "train"]
    whole = train[train.phase == "all"]
    assert set(whole.contestant) == names
    assert whole.train_ratio_to_ar.map(math.isfinite).all()
    assert whole.set_index("contestant").train_ratio_to_ar["ar_gpt2/kv_cache"] == 1.0
    assert train.pass_ratio_to_bare.map(math.isfinite).all() and (train.pass_ratio_to_bare > 0).all()
    assert len(t[t.measure == "train_bare"]) == 1
    lat = t[t.measure == "latency"]
    assert lat.speedup_vs_ar_gpt2_kv_cache.map(math.isfinite).all()
    assert (lat[lat.family == "ar_gpt2"].nfe == 6).all()
    assert set(t[t.measure == "scaling_seq_len"].seq_len) == {6, 12}
    assert (t.weights.str.startswith("random init")).all()
    for png in ("overhead", "samples_per_s", "train", "scaling"):
        assert (tmp_path / "out" / f"{png}.png").stat().st_size > 10_000
    assert "Sampler overhead" in (tmp_path / "out" / "summary.md").read_text()


def test_flow_map_training_rows_measure_the_distillation_phase(tmp_path):
    """The bench times every phase of a family's training: flow_map's distillation steps call the
    network four times (anchor, two target calls, prediction) and declare 8/3 passes; its anchor
    steps call it once. The whole-training row weights the phases by their share of the steps."""
    from flowbench.registry import FAMILIES

    bench = {**TINY, "measures": ["train"], "entries": [{"family": "ar_gpt2", "sampler": "kv_cache"},
                                                         {"family": "flow_map", "sampler": "flow_map", "nfe": [1]}]}
    t = pd.read_csv(run_bench(_write(tmp_path, bench), out=tmp_path / "out", progress=False))
    assert set(t.measure) == {"train", "train_bare"}  # measures: only what was asked for
    fm = t[(t.measure == "train") & (t.family == "flow_map")].set_index("phase")
    assert set(fm.index) == {"anchor", "distill", "all"}
    assert fm.calls_per_step["anchor"] == 1 and fm.calls_per_step["distill"] == 4
    assert fm.train_cost["distill"] == pytest.approx(8 / 3) and fm.train_cost["anchor"] == 1
    family = FAMILIES.get("flow_map")(params=FAMILIES.get("flow_map").Params(), vocab_size=10, seq_len=6)
    assert fm.train_cost["all"] == pytest.approx(family.train_cost)
    share = fm.phase_share["distill"]
    assert fm.seconds["all"] == pytest.approx((1 - share) * fm.seconds["anchor"] + share * fm.seconds["distill"],
                                              rel=0.3)  # a median of weighted rounds, not of the medians
    assert fm.pass_ratio_to_bare.map(math.isfinite).all()
    assert "distill" in (tmp_path / "out" / "summary.md").read_text()


@pytest.mark.parametrize("entry, culprit", [
    ({"family": "flow_mapp", "sampler": "flow_map", "nfe": [1]}, "did you mean 'flow_map'"),
    ({"family": "flow_map", "sampler": "ode", "nfe": [1]}, "has no sampler 'ode'"),
    ({"family": "flow_map", "sampler": "euler", "sampler_params": {"solver": "rk4"}, "nfe": [2]},
     "not a multiple of 4"),
])
def test_bad_entry_is_one_line_naming_it(tmp_path, capsys, entry, culprit):
    bad = {**TINY, "entries": [entry], "scaling": None}
    assert main(["bench", _write(tmp_path, bad), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert culprit in err and "\n" not in err
    assert not (tmp_path / "o" / "bench.csv").exists()


def test_replay_repeats_the_calls_with_fresh_state():
    """A stateful argument (a cache the model grows) is replayed from a fresh instance."""
    seen = []

    def model(x, cache):
        cache.append(x.sum().item())
        seen.append(len(cache))
        return x

    rec = RecordedCalls(model)
    cache = []
    for i in range(3):
        rec(torch.full((2,), float(i)), cache=cache)
    seen.clear()
    rec.replay()
    assert seen == [1, 2, 3] and cache == [0.0, 2.0, 4.0]


def test_replay_runs_each_call_in_the_context_it_was_made_in():
    """A sampler that sets how the network computes for its calls (a context variable, as
    flow_map's input precision) gets that work replayed, not the default's."""
    import contextvars

    mode = contextvars.ContextVar("mode", default="default")
    seen = []
    rec = RecordedCalls(lambda x: seen.append(mode.get()))
    rec(torch.zeros(1))
    token = mode.set("sampler's")
    rec(torch.zeros(1))
    mode.reset(token)
    seen.clear()
    rec.replay()
    assert seen == ["default", "sampler's"]


def test_phase_memory_sees_an_allocation_and_not_the_past():
    big = torch.ones(32 * 2**20 // 4)  # 32 MB live before the phase: not counted
    with PhaseMemory(torch.device("cpu")) as quiet:
        pass
    with PhaseMemory(torch.device("cpu")) as mem:
        x = torch.ones(64 * 2**20 // 4)  # 64 MB touched inside the phase
        del x
    assert quiet.mb < 16 and 56 < mem.mb < 200
    del big


def test_phase_memory_of_a_row_is_the_process_peak_without_a_thread():
    """The evaluation worker's rows record the process's peak resident set on the CPU, read at the
    stop: no polling thread runs beside the timed sampler."""
    import resource
    import threading

    threads = threading.active_count()
    mem = PhaseMemory(torch.device("cpu"), cpu="process").start()
    assert threading.active_count() == threads
    assert mem.stop() == resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with pytest.raises(ValueError, match="cpu must be 'poll' or 'process'"):
        PhaseMemory(torch.device("cpu"), cpu="peak")


def test_compiled_contestant_samples_as_eager_and_is_timed_for_latency_only(tmp_path):
    from flowbench.bench import cases
    from flowbench.bench.config import Bench

    entries = [{"family": "flow_map", "sampler": "flow_map", "nfe": [1]},
               {"family": "flow_map", "sampler": "flow_map", "nfe": [1], "compile": True}]
    data = {**TINY, "batch_sizes": [2], "scaling": None, "entries": entries}
    bench = Bench(**data)
    eager, compiled = (cases.build(e, bench, seq_len=6, vocab_size=10) for e in bench.entries)
    assert isinstance(compiled.model, torch._dynamo.eval_frame.OptimizedModule)
    x, s, t = torch.randn(2, 6, 10), torch.tensor([0.0, 0.3]), torch.tensor([1.0, 0.8])
    with torch.inference_mode():  # the same weights (same seed), the same network
        torch.testing.assert_close(compiled.model(x, s=s, t=t), eager.model(x, s=s, t=t), rtol=1e-4, atol=1e-5)
    assert torch.equal(compiled.sample_fn(n=2, nfe=1)(), eager.sample_fn(n=2, nfe=1)())
    csv = run_bench(_write(tmp_path, data), out=tmp_path / "out", progress=False, plots=False)
    t = pd.read_csv(csv)
    lat = t[t.measure == "latency"].set_index("contestant")
    assert lat.loc["flow_map/flow_map+compile", "compiled"] and not lat.loc["flow_map/flow_map", "compiled"]
    assert math.isfinite(lat.loc["flow_map/flow_map+compile", "samples_per_s"])
    assert set(t[~t.measure.isin(["latency", "train_bare"])].contestant) == {"flow_map/flow_map"}


def test_a_timed_run_repeats_a_short_call_until_it_lasts_min_run_s(monkeypatch):
    """A 2 ms call fills a 0.1 s run with 50 calls; time_call makes warmup + repeats x number calls
    and reports one call's time, not the run's. On a fake clock: no timing in a test."""
    from flowbench.bench import measure

    clock = {"now": 0.0, "calls": 0}

    def fn():  # a call that takes 2 ms of the fake clock
        clock["now"] += 0.002
        clock["calls"] += 1

    monkeypatch.setattr(measure.time, "perf_counter", lambda: clock["now"])
    cpu = torch.device("cpu")
    number = calls_per_run(fn, min_run_s=0.1, device=cpu)
    assert number == 50
    clock["calls"] = 0
    t = time_call(fn, repeats=3, device=cpu, warmup=1, number=number)
    assert clock["calls"] == 1 + 3 * 50
    assert t.median_s == pytest.approx(0.002)
    assert calls_per_run(fn, min_run_s=0.0, device=cpu) == 1
    assert calls_per_run(fn, min_run_s=0.001, device=cpu) == 1  # one call already lasts long enough


def test_speedup_over_ar_is_paired_round_by_round(monkeypatch):
    """The machine slows down and speeds up between rounds; the speed-up is the median of the
    within-round ratios (AR time / contestant time), not the ratio of the two medians."""
    from types import SimpleNamespace

    from flowbench.bench import cases, measure

    clock = {"now": 0.0}
    monkeypatch.setattr(measure.time, "perf_counter", lambda: clock["now"])

    def contestant(name, family, costs, nfe):
        costs = iter(costs)  # warm-up, then one call per round (min_run_s 0: no calibration call)

        def sample_fn(*, n, nfe):
            def run():
                clock["now"] += next(costs)
            return run

        entry = SimpleNamespace(name=name, family=family, sampler="s", compile=False, nfe=nfe)
        return SimpleNamespace(entry=entry, family=SimpleNamespace(seq_len=4, vocab_size=5),
                               device=torch.device("cpu"), sample_fn=sample_fn,
                               nfe_of=lambda k: k if k is not None else 4)

    ar = contestant("ar/kv", "ar_gpt2", [1, 10, 20, 40], None)
    other = contestant("other/x", "other", [1, 4, 1, 2], [1])
    bench = SimpleNamespace(batch_sizes=[1], repeats=3, min_run_s=0.0, clock="wall")
    rows = {r["contestant"]: r for r in cases.latency([ar, other], bench)}
    # rounds: 10/4, 20/1, 40/2 -> median 20; the ratio of the medians would read 20/2 = 10
    assert rows["other/x"]["speedup_vs_ar_kv"] == pytest.approx(20.0)
    assert rows["ar/kv"]["speedup_vs_ar_kv"] == pytest.approx(1.0)
    assert rows["other/x"]["seconds"] == pytest.approx(2.0)


def test_sampler_floor_script_prints_finite_fractions_of_a_forward():
    """scripts/sampler_floor.py runs at batch 1 and prints every draw as a finite fraction of the
    simplex forward, which reads exactly 1."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "sampler_floor.py"
    out = subprocess.run([sys.executable, str(script), "--batch", "1", "--rounds", "1", "--min-run-s", "0.005"],
                         capture_output=True, text=True, check=True).stdout
    rows = re.findall(r"^  (.+?)\s+([\d.]+) ms\s+([\d.]+)$", out, re.M)
    names = [name.strip() for name, _, _ in rows]
    assert "categorical draw, float64 (read)" in names and "normal, float32 (prior)" in names
    assert len(rows) == 9 and all(math.isfinite(float(f)) and float(f) >= 0 for _, _, f in rows)
    assert dict((n.strip(), float(f)) for n, _, f in rows)["forward, simplex, (s, t) input"] == 1.0
    ratios = re.search(r"sampling ([\d.]+)x .*network calls alone ([\d.]+)x", out)
    assert ratios and all(float(r) > 0 for r in ratios.groups())
