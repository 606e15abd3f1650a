"""The bench's vocabulary sweep (suites/bench_vocab.yaml): what it plans, and the rows and fits a
tiny sweep writes (no timing assertions)."""
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from flowbench.bench import run_bench, vocab
from flowbench.bench.config import load_bench
from flowbench.registry import FAMILIES, load_builtins

SUITES = Path(__file__).resolve().parents[1] / "suites"

TINY = {
    "name": "tiny_vocab", "backbone": {"d_model": 16, "n_layers": 1, "n_heads": 2}, "seq_len": 6,
    "vocab_size": 10, "train_batch": 4, "train_steps": 1, "repeats": 1, "min_run_s": 0.0,
    "measures": ["vocab"], "vocab_sweep": {"vocab_sizes": [10, 20, 40], "nfe": [1, 2], "sample_batch": 3},
    "entries": [{"family": "ar_gpt2", "sampler": "kv_cache"},
                {"family": "mdlm", "sampler": "ancestral", "nfe": [1]},
                {"family": "flow_map", "sampler": "flow_map", "nfe": [1]}],
}


def test_vocab_suite_plans_every_family_at_four_vocabularies():
    load_builtins()
    bench = load_bench(SUITES / "bench_vocab.yaml")
    planned = vocab.plan(bench)
    assert [v for v, _ in planned] == [256, 1024, 4096, 16384]
    for _, entries in planned:
        assert {e.family for e in entries} == set(FAMILIES.names())
        for e in entries:  # every sampler with an NFE grid at NFE 1 and 64; AR in its L calls
            assert e.nfe == ([1, 64] if e.family != "ar_gpt2" else None), e.name
    assert (bench.seq_len, bench.backbone.d_model, bench.backbone.n_layers, bench.train_batch) == (32, 64, 3, 64)


def test_no_sweep_plans_nothing():
    bench = load_bench(SUITES / "bench_train.yaml")
    assert bench.vocab_sweep is None and vocab.plan(bench) == []


def test_a_bad_sweep_nfe_is_one_line_before_any_timing(tmp_path, capsys):
    from flowbench.__main__ import main

    bad = {**TINY, "entries": [{"family": "flow_map", "sampler": "euler", "sampler_params": {"solver": "rk4", "t_end": 0.99},
                                "nfe": [4]}], "vocab_sweep": {"nfe": [4, 6]}}
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert main(["bench", str(path), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a multiple of 4" in err and "\n" not in err
    assert not (tmp_path / "o" / "bench.csv").exists()


def test_tiny_sweep_writes_every_quantity_at_every_vocabulary(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(TINY))
    t = pd.read_csv(run_bench(str(path), out=tmp_path / "out", progress=False, plots=False))
    assert set(t.measure) == {"vocab_train", "vocab_train_bare", "vocab_sample", "vocab_sample_memory"}
    q = vocab.quantities(t)
    names = {"ar_gpt2/kv_cache", "mdlm/ancestral", "flow_map/flow_map"}
    for quantity in ("train ms", "train MiB", "sample ms NFE 1", "sample ms NFE 2",
                     "sample MiB NFE 1", "sample MiB NFE 2"):
        got = q[q.quantity == quantity]
        want = names if "NFE" not in quantity else names - {"ar_gpt2/kv_cache"}
        assert set(got.contestant) - {"bare backbone step"} == want, quantity
        assert sorted(set(got.vocab_size)) == [10, 20, 40], quantity
        assert got.value.map(math.isfinite).all()
    ar = q[(q.contestant == "ar_gpt2/kv_cache") & q.quantity.str.startswith("sample ms")]
    assert set(ar.quantity) == {"sample ms NFE 6"}  # AR: one call per position
    train = t[t.measure == "vocab_train"]
    assert (train.batch == 4).all() and (t[t.measure == "vocab_sample"].batch == 3).all()
    fit = vocab.slopes(t).set_index(["contestant", "quantity"])
    assert fit.loglog_slope.map(math.isfinite).all()
    assert (fit.V_max == 40).all()
    assert "As V grows" in (tmp_path / "out" / "summary.md").read_text()


def test_slopes_recover_a_known_law():
    """value = 2 + 0.5 V (ms) at batch 4, L 8: per (B L V) entry 0.5 ms / 32 = 15625 ns; the
    log-log slope of a pure power V^0.5 is 0.5."""
    rows = []
    for v in (256, 1024, 4096, 16384):
        rows.append({"measure": "vocab_train", "phase": "all", "contestant": "a", "family": "a", "vocab_size": v,
                     "seconds": (2 + 0.5 * v) / 1e3, "peak_mb": v ** 0.5, "batch": 4, "seq_len": 8})
    fit = vocab.slopes(pd.DataFrame(rows)).set_index("quantity")
    assert fit.per_BLV_entry["train ms"] == pytest.approx(0.5e6 / 32)
    assert fit.loglog_slope["train MiB"] == pytest.approx(0.5) and fit.top_slope["train MiB"] == pytest.approx(0.5)


def test_v_maps_count_the_dense_maps_over_v():
    load_builtins()
    spec = {n: FAMILIES.get(n)(params=FAMILIES.get(n).Params(), vocab_size=8, seq_len=4).backbone_spec()
            for n in ("mdlm", "flow_map")}
    assert vocab.v_maps(spec["mdlm"]) == 1 and vocab.v_maps(spec["flow_map"]) == 2


def test_extrapolated_state_memory_is_bytes_per_entry_times_l_v():
    """A training step whose peak grows by 40 bytes per (B L V) entry needs 40 L V bytes per
    sequence at the target size; the bare step's time sets the matmul rate."""
    rows = [{"measure": "vocab_train_bare", "phase": None, "contestant": "bare backbone step", "family": "",
             "vocab_size": v, "seconds": 0.05, "batch": 4, "seq_len": 8, "d_model": 16, "n_layers": 1}
            for v in (256, 1024)]
    rows += [{"measure": "vocab_train", "phase": "all", "contestant": "m", "family": "mdlm", "vocab_size": v,
              "seconds": 0.1, "peak_mb": 1 + 40 * 4 * 8 * v / 2**20, "batch": 4, "seq_len": 8, "train_cost": 1.0,
              "v_maps": 1, "d_model": 16, "n_layers": 1} for v in (256, 1024)]
    ext = vocab.extrapolation(pd.DataFrame(rows), d_model=32, n_layers=2, seq_len=64, vocab_size=1000, batch=2)
    mem = ext.set_index(["contestant", "quantity"]).loc[("m", "train MiB")]
    assert mem.GiB == pytest.approx(40 * 2 * 64 * 1000 / 2**30)
    assert (ext.matmul_gflops_per_s > 0).all()
