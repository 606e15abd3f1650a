"""What the bench measures, one function per table; each returns rows (dicts) for bench.csv.

Every network is randomly initialised: a forward's cost does not depend on the weights' values,
so no training is needed to time sampling (the `weights` column says so). Sampling runs as the
worker evaluates: under torch.inference_mode, in the backbone's float32 weights.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable

import torch

from flowbench.bare_step import BareStep
from flowbench.bench.config import Bench, BenchEntry
from flowbench.bench.measure import RecordedCalls, Timing, calls_per_run, clock_of, time_call
from flowbench.config import SuiteError, validate
from flowbench.measuring import PhaseMemory
from flowbench.registry import FAMILIES


@dataclass
class Contestant:
    """A family at one (L, V), its randomly initialised network and its sampler."""

    entry: BenchEntry
    family: object
    model: torch.nn.Module
    device: torch.device
    seed: int

    def sampler_params(self, nfe: int | None):
        cls = type(self.family).samplers.get(self.entry.sampler)
        if cls is None:
            raise SuiteError(f"bench entry {self.entry.name}: family {self.entry.family!r} has no sampler "
                             f"{self.entry.sampler!r} (samplers: {', '.join(type(self.family).samplers)})")
        data = {**self.entry.sampler_params, **({"nfe": nfe} if nfe is not None else {})}
        params = validate(cls, data, f"bench entry {self.entry.name}.sampler_params")
        try:
            self.family.check_sampler(self.entry.sampler, params)
        except ValueError as err:
            raise SuiteError(f"bench entry {self.entry.name}: {err}") from None
        return params

    def sample_fn(self, *, n: int, nfe: int | None, model: Callable | None = None) -> Callable[[], torch.Tensor]:
        params = self.sampler_params(nfe)

        def run() -> torch.Tensor:
            gen = torch.Generator(device=self.device).manual_seed(self.seed)
            with torch.inference_mode():
                return self.family.sample(model or self.model, n=n, sampler=self.entry.sampler,
                                          params=params, generator=gen)

        return run

    def nfe_of(self, nfe: int | None) -> int:
        return nfe if nfe is not None else self.family.seq_len


def build(entry: BenchEntry, bench: Bench, *, seq_len: int, vocab_size: int) -> Contestant:
    cls = FAMILIES.get(entry.family)
    params = validate(cls.Params, entry.params, f"bench entry {entry.name}.params")
    family = cls(params=params, vocab_size=vocab_size, seq_len=seq_len)
    torch.manual_seed(bench.seed)
    device = torch.device(bench.device)
    model = family.build_model(bench.backbone).to(device).eval()
    if entry.compile:  # automatic dynamic shapes: a second batch size or cache length recompiles once
        model = torch.compile(model)
    return Contestant(entry=entry, family=family, model=model, device=device, seed=bench.seed)


def _base(c: Contestant, measure: str, **kw) -> dict:
    return {"measure": measure, "contestant": c.entry.name, "family": c.entry.family,
            "sampler": c.entry.sampler, "compiled": c.entry.compile, "seq_len": c.family.seq_len,
            "vocab_size": c.family.vocab_size, **kw}


base_row = _base  # the columns every row starts with, for measures kept elsewhere (bench/vocab.py)


def _timing(t: Timing, prefix: str = "") -> dict:
    return {f"{prefix}seconds": t.median_s, f"{prefix}spread": t.spread, "repeats": t.repeats}


def overhead(c: Contestant, bench: Bench) -> list[dict]:
    """Sampler time against the same backbone calls replayed alone (the bare forwards), per NFE.

    The two are timed alternately, run after run, so a load change on a shared CPU hits both."""
    rows = []
    nfes = bench.overhead_nfe if c.entry.nfe is not None else [None]
    for batch in sorted({1, bench.eval_batch}):
        for nfe in nfes:
            recorded = RecordedCalls(c.model)
            c.sample_fn(n=batch, nfe=nfe, model=recorded)()
            sample = c.sample_fn(n=batch, nfe=nfe)
            sample(), recorded.replay()  # warm-up
            number = calls_per_run(sample, min_run_s=bench.min_run_s, device=c.device)
            runs = {"sample": [], "forward": []}
            for _ in range(bench.repeats):
                runs["sample"].append(time_call(sample, repeats=1, device=c.device, warmup=0,
                                                number=number).median_s)
                runs["forward"].append(time_call(recorded.replay, repeats=1, device=c.device, warmup=0,
                                                 number=number).median_s)
            med = {k: statistics.median(v) for k, v in runs.items()}
            rows.append(_base(c, "overhead", batch=batch, nfe=c.nfe_of(nfe), calls_per_run=number,
                              backbone_calls=len(recorded.calls), seconds=med["sample"],
                              spread=_spread(runs["sample"]), forward_seconds=med["forward"],
                              forward_spread=_spread(runs["forward"]), repeats=bench.repeats,
                              overhead_ratio=med["sample"] / med["forward"]))
    return rows


def latency(contestants: list[Contestant], bench: Bench) -> list[dict]:
    """Latency and samples/s of one sample batch for every contestant x batch size x NFE.

    Interleaved: each round times every configuration once, so a change of the machine's load
    between rounds reaches every contestant alike and the speed-ups over AR compare runs made
    side by side (timed one contestant after another, AR's batch-256 time moved by 40% between
    runs). Medians over `repeats` rounds, after one untimed run of each; the speed-up over each AR
    contestant is the median over rounds of the two times' ratio within the round. Times by
    `bench.clock` (wall, or the process's CPU time)."""
    rows = []
    for batch in bench.batch_sizes:
        runs = {(i, nfe): c.sample_fn(n=batch, nfe=nfe)
                for i, c in enumerate(contestants) for nfe in c.entry.nfe or [None]}
        for run in runs.values():
            run()
        number = {key: calls_per_run(run, min_run_s=bench.min_run_s, device=contestants[key[0]].device)
                  for key, run in runs.items()}
        times: dict[tuple, list[float]] = {key: [] for key in runs}
        for _ in range(bench.repeats):
            for key, run in runs.items():
                times[key].append(time_call(run, repeats=1, device=contestants[key[0]].device, warmup=0,
                                            number=number[key], clock=bench.clock).median_s)
        # against each AR contestant, round by round: the two runs of a round are seconds apart,
        # so a slow drift of the machine's speed cancels in their ratio (a paired comparison)
        ars = [(i, c.entry.name) for i, c in enumerate(contestants) if c.entry.family == AR_FAMILY]
        for (i, nfe), ts in times.items():
            c, med = contestants[i], statistics.median(ts)
            paired = {f"speedup_vs_{speedup_column(name)}":
                      statistics.median(a / b for a, b in zip(times[(j, None)], ts)) for j, name in ars}
            rows.append(_base(c, "latency", batch=batch, nfe=c.nfe_of(nfe), calls_per_run=number[(i, nfe)],
                              seconds=med, spread=_spread(ts),
                              repeats=bench.repeats, samples_per_s=batch / med, **paired))
    return rows


AR_FAMILY = "ar_gpt2"  # the baseline every sampler's speed is quoted against


def speedup_column(contestant: str) -> str:
    return contestant.replace("/", "_").replace("+", "_")


def sampling_memory(c: Contestant, bench: Bench) -> list[dict]:
    """Peak memory of one sample batch at the evaluation batch size (smallest NFE of the grid)."""
    nfe = (c.entry.nfe or [None])[0]
    run = c.sample_fn(n=bench.eval_batch, nfe=nfe)
    run()
    with PhaseMemory(c.device) as mem:
        run()
    return [_base(c, "sample_memory", batch=bench.eval_batch, nfe=c.nfe_of(nfe), peak_mb=mem.mb)]


def training(contestants: list[Contestant], bench: Bench) -> list[dict]:
    """Optimiser steps (loss, backward, AdamW) on random token batches, every phase of every
    contestant's training (`Family.training_phases`, e.g. an anchor phase and a distillation phase), beside a
    bare backbone step of the same shape (`flowbench.bare_step`: tokens in, CE, AdamW).

    Interleaved: each round times the bare step and then every contestant's phases once, each run
    `train_steps` steps, so a load change between rounds reaches all alike. Per phase: ms per step
    (median over rounds), declared passes, backbone calls per step (counted), and ms per declared
    pass over the bare step's ms, the median over rounds of that ratio within the round (times by
    `bench.clock`: wall or the process's CPU time). Where the family declares its necessary own
    work (`Family.training_floor_work`: prior and path draws, input maps, soft targets), each
    round times, right after the bare step, a bare step of the family's own backbone (its time
    conditioning and input: `backbone_ratio_to_bare`) and that work, and `floor_ratio_to_bare` =
    (declared passes x the family's bare step + the work) / (declared passes x the bare step),
    the median over rounds: the least `pass_ratio_to_bare` could read without a cheaper backbone
    (NaN where no work is declared). A row of
    phase 'all' per contestant weights its phases by their share of the steps: what its training
    costs as a whole (its tokens/s against AR's in `train_ratio_to_ar`)."""
    L, V = bench.seq_len, bench.vocab_size
    device = torch.device(bench.device)
    bare = BareStep(bench.backbone, batch_size=bench.train_batch, seq_len=L, vocab_size=V, device=device)
    units: list[tuple[Contestant, object, Callable[[], None]]] = []
    floors: dict[int, Callable[[], None]] = {}  # unit -> its family's necessary own work, if declared
    backbones: dict[object, BareStep] = {}      # a floored family's backbone spec -> its bare step
    calls: dict[int, int] = {}
    for c in contestants:
        c.model.train()
        opt = torch.optim.AdamW(c.model.parameters(), lr=1e-4)
        gen = torch.Generator(device=c.device).manual_seed(c.seed)
        x1 = torch.randint(c.family.vocab_size, (bench.train_batch, c.family.seq_len), generator=gen,
                           device=c.device)
        floor_gen = torch.Generator(device=c.device).manual_seed(c.seed + 1)  # the steps' draws untouched
        for phase in c.family.training_phases():
            work = c.family.training_floor_work(phase=phase, x1=x1, generator=floor_gen)
            if work is not None:
                floors[len(units)] = _repeated(work, bench.train_steps)
                spec = c.family.backbone_spec()
                if spec not in backbones:  # the family's backbone (conditioning, input) in a bare step
                    backbones[spec] = BareStep(bench.backbone, batch_size=bench.train_batch, seq_len=L,
                                               vocab_size=V, device=device, spec=spec)
            units.append((c, phase, _steps(c, phase, opt, x1, gen, bench.train_steps)))
    for i, (c, phase, run) in enumerate(units):  # warm-up, counting the network's calls per step
        hook = c.model.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls.get(i, 0) + 1))
        try:
            run()
        finally:
            hook.remove()
    bare.seconds()
    for step in backbones.values():
        step.seconds()
    for work in floors.values():
        work()
    bare_s, unit_s = [], {i: [] for i in range(len(units))}
    floor_s: dict[int, list[float]] = {i: [] for i in floors}
    backbone_s: dict[object, list[float]] = {spec: [] for spec in backbones}
    for _ in range(bench.repeats):
        bare_s.append(bare.seconds(steps=bench.train_steps, clock=clock_of(bench.clock)))
        for spec, step in backbones.items():  # beside the bare step, in its round
            backbone_s[spec].append(step.seconds(steps=bench.train_steps, clock=clock_of(bench.clock)))
        for i, work in floors.items():
            floor_s[i].append(time_call(work, repeats=1, device=device, warmup=0,
                                        clock=bench.clock).median_s / bench.train_steps)
        for i, (c, _, run) in enumerate(units):
            unit_s[i].append(time_call(run, repeats=1, device=c.device, warmup=0,
                                       clock=bench.clock).median_s / bench.train_steps)
    rows = []
    batch_tokens = bench.train_batch * L
    bare_med = statistics.median(bare_s)
    rows.append({"measure": "train_bare", "contestant": "bare backbone step", "family": "", "phase": "",
                 "clock": bench.clock,
                 "seq_len": L, "vocab_size": V, "batch": bench.train_batch, "seconds": bare_med,
                 "spread": _spread(bare_s), "repeats": bench.repeats, "train_cost": 1.0,
                 "tokens_per_s": batch_tokens / bare_med})
    for c in contestants:
        mine = [(i, phase) for i, (cc, phase, _) in enumerate(units) if cc is c]
        for i, phase in mine:
            ts = unit_s[i]
            with PhaseMemory(c.device) as mem:
                units[i][2]()
            rows.append(_base(c, "train", batch=bench.train_batch, phase=phase.name, phase_share=phase.share,
                              seconds=statistics.median(ts), spread=_spread(ts), repeats=bench.repeats,
                              train_cost=phase.cost, calls_per_step=calls[i] / bench.train_steps,
                              tokens_per_s=batch_tokens / statistics.median(ts),
                              passes_per_s=phase.cost / statistics.median(ts),
                              pass_ratio_to_bare=statistics.median(
                                  t / phase.cost / b for t, b in zip(ts, bare_s)),
                              **_floor(floor_s.get(i), backbone_s.get(c.family.backbone_spec()), bare_s,
                                       cost=phase.cost),
                              bare_seconds=bare_med, peak_mb=mem.mb))
        # the whole training: each round's phases weighted by their share of the steps
        whole = [sum(phase.share * unit_s[i][r] for i, phase in mine) for r in range(bench.repeats)]
        cost = sum(phase.share * phase.cost for _, phase in mine)
        phase_rows = rows[-len(mine):]
        floor_whole = ([sum(phase.share * floor_s[i][r] for i, phase in mine) for r in range(bench.repeats)]
                       if all(i in floor_s for i, _ in mine) else None)
        rows.append(_base(c, "train", batch=bench.train_batch, phase="all", phase_share=1.0,
                          seconds=statistics.median(whole), spread=_spread(whole), repeats=bench.repeats,
                          train_cost=cost, calls_per_step=sum(phase.share * calls[i] / bench.train_steps
                                                              for i, phase in mine),
                          tokens_per_s=batch_tokens / statistics.median(whole),
                          passes_per_s=cost / statistics.median(whole),
                          pass_ratio_to_bare=statistics.median(t / cost / b for t, b in zip(whole, bare_s)),
                          **_floor(floor_whole, backbone_s.get(c.family.backbone_spec()), bare_s, cost=cost),
                          bare_seconds=bare_med, peak_mb=max(r["peak_mb"] for r in phase_rows)))
        c.model.eval()
        c.family.train_progress = 0.0
    return rows


def _floor(work_s: list[float] | None, backbone_s: list[float] | None, bare_s: list[float], *,
           cost: float) -> dict:
    """The floor of a phase, round by round: its declared passes at the cost of a bare step of the
    family's own backbone (its conditioning and input, `backbone_ratio_to_bare` of the bare step)
    plus its family's necessary own work (`Family.training_floor_work`), over the declared passes
    at the bare step's cost; medians over rounds, with the work's own median time. NaN where the
    family declares no work."""
    if work_s is None:
        return {"floor_seconds": math.nan, "backbone_ratio_to_bare": math.nan, "floor_ratio_to_bare": math.nan}
    return {"floor_seconds": statistics.median(work_s),
            "backbone_ratio_to_bare": statistics.median(k / b for k, b in zip(backbone_s, bare_s)),
            "floor_ratio_to_bare": statistics.median((cost * k + w) / (cost * b)
                                                     for w, k, b in zip(work_s, backbone_s, bare_s))}


def _repeated(work: Callable[[], object], k: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(k):
            work()

    return run


def _steps(c: Contestant, phase, opt: torch.optim.Optimizer, x1: torch.Tensor, gen: torch.Generator,
           k: int) -> Callable[[], None]:
    """k optimiser steps of one phase of c's training."""

    def run() -> None:
        c.family.train_progress = phase.progress
        for _ in range(k):
            loss = c.family.loss(c.model, x1, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return run


def scaling(entry: BenchEntry, bench: Bench) -> list[dict]:
    """Sampling time of one batch as L doubles (V fixed) and as V grows (L fixed)."""
    s, rows = bench.scaling, []
    shapes = [(L, bench.vocab_size, "seq_len") for L in s.seq_lens]
    shapes += [(bench.seq_len, V, "vocab_size") for V in s.vocab_sizes]
    for L, V, axis in shapes:
        c = build(entry, bench, seq_len=L, vocab_size=V)
        nfe = s.nfe if entry.nfe is not None else None
        t = time_call(c.sample_fn(n=s.batch_size, nfe=nfe), repeats=bench.repeats, device=c.device)
        rows.append(_base(c, f"scaling_{axis}", batch=s.batch_size, nfe=c.nfe_of(nfe), **_timing(t),
                          samples_per_s=s.batch_size / t.median_s))
    return rows


def _spread(xs: list[float]) -> float:
    m = statistics.median(xs)
    return (max(xs) - min(xs)) / m if m > 0 else 0.0
