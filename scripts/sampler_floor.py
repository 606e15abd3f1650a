"""The least a sampler must do besides its network at NFE 1, against one bare forward.

`python scripts/sampler_floor.py [--batch 1 256]` times, at the bench size (suites/bench.yaml:
d = 64 x 3 layers, L = 32, V = 256, one thread), the draws that no implementation of a sampler can
skip at NFE 1: its prior on the (B, L, V) state and its read of the last output (a float64
categorical draw, the conventions' rule, or an argmax), and prints each as a fraction of one bare
forward of a randomly initialised backbone at the same batch. The bench's overhead target (the
sampling time at most 1.05x the forwards) is out of reach for a sampler whose unavoidable draws
alone exceed 0.05 of its forward. Times are medians over interleaved rounds; a round repeats each
call until it lasts 0.1 s (`--min-run-s`).

It then times flow_map at NFE 1 against AR's 32 KV-cached calls at batch 1 (the bench's
contestants), each as its sampler and as its network calls replayed alone, round after round:
the ratio of the replayed calls is what the samples/s ratio would be with no sampler work on
either side.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from flowbench.allocator import retain_freed_memory
from flowbench.backbone import Backbone, BackboneSpec
from flowbench.bench.measure import RecordedCalls, calls_per_run, time_call
from flowbench.config import BackboneConfig
from flowbench.families.base import sample_categorical
from flowbench.families.dirichlet_flow import dirichlet_draws, log_dirichlet


CPU = torch.device("cpu")


def timed(fn, min_run_s: float = 0.1) -> float:
    """Seconds per call of fn (warmed up), over back-to-back calls filling a run of min_run_s, as
    the bench times its runs."""
    fn()
    number = calls_per_run(fn, min_run_s=min_run_s, device=CPU)
    return time_call(fn, repeats=1, device=CPU, warmup=0, number=number).median_s


def primitives(B: int, L: int, V: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(B, L, V)
    return {
        "categorical draw, float64 (read)": lambda: sample_categorical(logits, generator=gen),
        "argmax (read)": lambda: logits.argmax(-1),
        "normal, float32 (prior)": lambda: torch.randn(B, L, V, generator=gen),
        "normal, float64 (prior)": lambda: torch.randn(B, L, V, generator=gen, dtype=torch.float64),
        "Dirichlet(16), float64 (prior)": lambda: log_dirichlet((B, L, V), alpha=16.0, generator=gen),
        "Dirichlet(16), float32, vectorized (prior)": lambda: dirichlet_draws((B, L, V), alpha=16.0,
                                                                              generator=gen),
        "uniform tokens (prior)": lambda: torch.randint(V, (B, L), generator=gen),
    }


def batch1_ratios(rounds: int, min_run_s: float) -> tuple[list[float], list[float]]:
    """Per round: AR's sampling time / flow_map's at NFE 1, and the same for their replayed
    network calls (`flowbench.bench.measure.RecordedCalls`), batch 1, bench size."""
    import yaml

    from flowbench.bench.cases import build
    from flowbench.bench.config import Bench
    from flowbench.config import validate

    suite = Path(__file__).resolve().parents[1] / "suites" / "bench_headline.yaml"
    bench = validate(Bench, yaml.safe_load(suite.read_text()), str(suite))
    entries = {e.name: e for e in bench.entries}
    calls = {}
    for name, nfe in (("ar_gpt2/kv_cache", None), ("flow_map/flow_map", 1)):
        c = build(entries[name], bench, seq_len=bench.seq_len, vocab_size=bench.vocab_size)
        recorded = RecordedCalls(c.model)
        c.sample_fn(n=1, nfe=nfe, model=recorded)()
        calls[name] = (c.sample_fn(n=1, nfe=nfe), recorded.replay)
    sampling, forwards = [], []
    for _ in range(rounds):
        (ar_s, ar_f), (fm_s, fm_f) = ([timed(f, min_run_s) for f in pair] for pair in calls.values())
        sampling.append(ar_s / fm_s)
        forwards.append(ar_f / fm_f)
    return sampling, forwards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (the batch-1 ratio: 15 in docs)")
    parser.add_argument("--min-run-s", type=float, default=0.1, help="length of one timed run")
    args = parser.parse_args()
    retain_freed_memory()
    torch.set_num_threads(1)
    L, V, config = 32, 256, BackboneConfig(d_model=64, n_layers=3, n_heads=4)
    torch.manual_seed(0)
    specs = {"tokens": BackboneSpec(cond="none", input="tokens", extra_tokens=1),
             "simplex, (s, t)": BackboneSpec(cond="st", input="simplex")}
    nets = {k: Backbone(spec=s, config=config, vocab_size=V, seq_len=L).eval() for k, s in specs.items()}
    for B in args.batch:
        inputs = {"tokens": (torch.randint(V, (B, L)), {}),
                  "simplex, (s, t)": (torch.randn(B, L, V).softmax(-1),
                                      {"s": torch.zeros(B), "t": torch.ones(B)})}
        calls = {f"forward, {k} input": (lambda k=k: nets[k](inputs[k][0], **inputs[k][1])) for k in nets}
        calls.update(primitives(B, L, V))
        times = {k: [] for k in calls}
        with torch.inference_mode():
            for _ in range(args.rounds):
                for name, fn in calls.items():
                    times[name].append(timed(fn, args.min_run_s))
        med = {k: statistics.median(v) for k, v in times.items()}
        forward = med["forward, simplex, (s, t) input"]
        print(f"\nbatch {B}, L {L}, V {V}: medians of {args.rounds} rounds; fraction of the simplex forward")
        for name, s in med.items():
            print(f"  {name:44s} {s * 1e3:9.3f} ms  {s / forward:6.3f}")
    sampling, forwards = batch1_ratios(args.rounds, args.min_run_s)
    print(f"\nbatch 1, flow_map NFE 1 samples/s over AR kv_cache's, medians of {args.rounds} rounds:")
    print(f"  sampling {statistics.median(sampling):.1f}x (rounds {min(sampling):.1f}-{max(sampling):.1f}); "
          f"network calls alone {statistics.median(forwards):.1f}x (rounds {min(forwards):.1f}-{max(forwards):.1f})")


if __name__ == "__main__":
    main()
