"""Run a steering suite: every method at matched compute, trained and oracle flow map.

    python -m flowbench steer suites/steering.yaml [--out DIR]   ->  DIR/leaderboard.csv

The flow_map network is trained (or reused) exactly as `flowbench run` does (worker.train_model,
cached under the model's key). Budgets: for each look-ahead NFE k the look-ahead costs
4k - 1 backbone passes per sample with horizon 1, 4k with a horizon below 1 (the budget is the
costlier of the suite's horizons); tangent gets ceil(budget / 3) steps and best-of-N
N = ceil(budget / k) draws at NFE k, so each baseline spends at least the look-ahead's compute.
base (unguided, k passes) and finetuned (unguided after fine-tuning, k passes at sampling, the
fine-tuning's passes in ft_passes) show the starting point and the training-time route. The
oracle has no weights, so finetuned runs on the trained network only.

One row per (denoiser, method, parameters), keyed by a hash of everything that produced it;
rows already in the CSV are skipped, so a killed run resumes without duplicates. Every x_0 comes
from a generator seeded with the suite seed: the methods are compared on the same noise.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from flowbench.config import SuiteError, config_hash
from flowbench.families.flow_map import FlowMap
from flowbench.leaderboard import Leaderboard
from flowbench.plan import make_corpus, oracle_identity, plan
from flowbench.registry import FAMILIES
from flowbench.steering.config import SteeringConfig, load_steering_suite
from flowbench.steering.finetune import finetune
from flowbench.steering.guidance import best_of_n, guided_sample, passes
from flowbench.steering.rewards import REWARDS
from flowbench.steering.target import TiltedTarget
from flowbench.worker import CallCounter, cache_root, git_sha, load_trained, train_model

VERSION = 1  # bump when a method or a score changes: it enters every row key
COLUMNS = [
    "suite", "denoiser", "method", "budget_nfe", "nfe", "eta", "horizon", "n_best", "passes", "backbone_calls",
    "reward", "reward_params", "lam", "reward_mean", "topic_share", "target_topic_share", "topic_kl",
    "tilted_nll", "target_nll_floor", "entropy", "samples_per_s", "num_samples", "ft_steps", "ft_batch_size", "ft_lr",
    "ft_beta", "ft_passes", "ft_reward_end", "ft_div_end", "train_steps", "val_loss", "grid_power",
    "oracle_steps_per_unit", "target_reference", "seed", "config_hash", "params", "device", "torch",
    "git_sha", "row_key", "timestamp",
]


def methods_at(k: int, cfg: SteeringConfig, denoiser: str) -> list[dict]:
    """The rows of look-ahead NFE k: each method's parameters at that compute budget."""
    budget = passes("lookahead", nfe=k, horizon=min(cfg.horizon))
    rows = {"base": [{"nfe": k}],
            "lookahead": [{"nfe": k, "eta": eta, "horizon": h} for eta in cfg.eta for h in cfg.horizon],
            "tangent": [{"nfe": math.ceil(budget / 3), "eta": eta} for eta in cfg.eta],
            "best_of_n": [{"nfe": k, "n_best": math.ceil(budget / k)}],
            "finetuned": [{"nfe": k}] if denoiser == "trained" else []}
    return [{"method": m, "budget_nfe": k, **p} for m in cfg.methods for p in rows[m]]


def run_steering(path: str | Path, *, out: str | Path | None = None, progress: bool = True) -> Path:
    suite, cfg = load_steering_suite(path)
    points = [p for p in plan(suite) if p.sampler == "flow_map"]
    if not points:
        raise SuiteError("runs[0].samplers: a steering suite needs a flow_map sampler entry (its grid_power)")
    spec, grid_power = points[0].model, points[0].sampler_params.grid_power
    if points[0].sampler_params.decode != "argmax":
        raise SuiteError("runs[0].samplers[0].decode: steering decodes the final state by argmax only")
    denoisers = list(dict.fromkeys(p.denoiser for p in points))
    corpus = make_corpus(suite, cache_dir=cache_root())
    try:
        reward = REWARDS.get(cfg.reward)(corpus=corpus, **cfg.reward_params)
    except (TypeError, ValueError) as err:
        raise SuiteError(f"steering.reward_params: {err}") from None
    if not hasattr(reward, "topic"):
        raise SuiteError(f"steering.reward: the exact tilted target is known for the topic reward only, "
                         f"got {cfg.reward!r}")
    target = TiltedTarget(corpus, topic=reward.topic, lam=cfg.lam, n_reference=cfg.n_reference, seed=spec.seed)
    family: FlowMap = FAMILIES.get("flow_map")(params=spec.params, vocab_size=corpus.vocab_size,
                                               seq_len=corpus.seq_len)
    board = Leaderboard(Path(out) if out else Path("results") / suite.name, columns=COLUMNS)
    done = board.keys()
    device = torch.device("cpu")
    sha, stamp = git_sha(), dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    common = {"reward": cfg.reward, "reward_params": json.dumps(cfg.reward_params, sort_keys=True),
              "lam": cfg.lam, "grid_power": grid_power, "seed": spec.seed, "config_hash": spec.key,
              "target_reference": target.reference, "device": device.type, "torch": torch.__version__}
    for denoiser in denoisers:
        todo = []
        for k in cfg.nfe:
            for m in methods_at(k, cfg, denoiser):
                own = {"nfe", "eta", "horizon", "methods"} | ({"finetune"} if m["method"] != "finetuned" else set())
                ident = {"version": VERSION, "model": spec.identity(), "denoiser": denoiser, "method": m,
                         "steering": cfg.model_dump(exclude=own),
                         "num_samples": suite.eval.num_samples, "grid_power": grid_power}
                if denoiser == "oracle":
                    ident["model"] = oracle_identity(ident["model"])
                if (key := config_hash(ident)) not in done:
                    todo.append((key, m))
        if not todo:
            continue
        torch.set_num_threads(os.cpu_count() or 1)
        net, extra = _network(family, spec, denoiser, corpus, cfg, progress=progress)
        tuned: dict[int, tuple] = {}
        for key, m in tqdm(todo, desc=f"{suite.name}: {denoiser}", disable=not progress, dynamic_ncols=True):
            model, ft = net, {}
            if m["method"] == "finetuned":
                if m["nfe"] not in tuned:
                    tuned[m["nfe"]] = finetune(family, net, reward=reward, lam=cfg.lam, nfe=m["nfe"],
                                               config=cfg.finetune, seed=spec.seed, grid_power=grid_power)
                model, info = tuned[m["nfe"]]
                ft = {**{f"ft_{k_}": v for k_, v in cfg.finetune.model_dump().items() if k_ != "grad_clip"},
                      **info}
            tokens, seconds, calls = _sample(family, model, m, suite=suite, reward=reward, lam=cfg.lam,
                                             grid_power=grid_power, seed=spec.seed)
            board.write_samples(key, tokens, vocab_size=corpus.vocab_size)
            board.append({**common, **extra, **ft, **m, **target.score(tokens), "suite": suite.name,
                          "denoiser": denoiser, "passes": passes(m["method"], nfe=m["nfe"], n_best=m.get("n_best", 1),
                                                                       horizon=m.get("horizon", 1.0)),
                          "backbone_calls": calls, "samples_per_s": len(tokens) / seconds,
                          "num_samples": len(tokens), "params": json.dumps({**m, **ft}, sort_keys=True),
                          "git_sha": sha, "row_key": key, "timestamp": stamp})
    return board.csv


def _network(family, spec, denoiser, corpus, cfg, *, progress):
    if denoiser == "oracle":
        return family.oracle_model(corpus.posterior, steps_per_unit=cfg.oracle_steps_per_unit), {
            "oracle_steps_per_unit": cfg.oracle_steps_per_unit}
    train_model(spec, progress=progress)  # returns at once when the checkpoint says done
    state = load_trained(spec)
    net = family.build_model(spec.suite.backbone)
    net.load_state_dict(state["weights"])
    history = state["history"]
    return net.eval(), {"train_steps": state["step"], "val_loss": history[-1]["val_loss"] if history else None}


def _sample(family, model, m: dict, *, suite, reward, lam, grid_power, seed):
    """All num_samples of one row in eval.batch_size chunks: ids (N, L), seconds, calls per chunk."""
    counter = CallCounter(model)
    gen = torch.Generator().manual_seed(seed)
    n, bs = suite.eval.num_samples, suite.eval.batch_size
    chunks, seconds, batches = [], 0.0, 0
    for start in range(0, n, bs):
        size = min(bs, n - start)
        t0 = time.perf_counter()
        if m["method"] in ("lookahead", "tangent"):
            ids = guided_sample(family, counter, n=size, nfe=m["nfe"], eta=m["eta"], reward=reward, lam=lam,
                                method=m["method"], horizon=m.get("horizon", 1.0), grid_power=grid_power,
                                generator=gen)
        elif m["method"] == "best_of_n":
            ids = best_of_n(family, counter, n=size, n_best=m["n_best"], nfe=m["nfe"], reward=reward,
                            generator=gen, grid_power=grid_power)
        else:
            from flowbench.families.flow_map import FlowMapSamplerParams

            ids = family.sample(counter, n=size, sampler="flow_map", generator=gen,
                                params=FlowMapSamplerParams(nfe=m["nfe"], grid_power=grid_power))
        seconds += time.perf_counter() - t0
        chunks.append(ids.cpu())
        batches += 1
    return torch.cat(chunks), seconds, counter.calls / batches
