"""Expand a validated suite into evaluation points, checking everything before any training.

A point is (family, family params, train config, training seed, denoiser, sampler, sampler
params, sampling seed). Points that share (family, params, train, backbone, corpus, training seed)
share one trained model, cached under a hash of exactly those fields (TrainConfig.key_fields).
"""
from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from flowbench.config import (BUDGETS, RUN_EVAL_FIELDS, EvalConfig, Suite, SuiteError, TrainConfig,
                              config_hash, one_line)
from flowbench.families.base import Family
from flowbench.registry import CORPORA, FAMILIES, JUDGES, RegistryError
from flowbench.trainer import resolve_device, resolve_precision
from flowbench.versions import key_fields, version_of


def grid(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Cartesian product over the list-valued keys; scalars are fixed."""
    keys = list(values)
    axes = [v if isinstance(v, list) else [v] for v in values.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*axes)]


def check(model: type[BaseModel], data: dict, where: str) -> BaseModel:
    try:
        return model(**data)
    except ValidationError as err:
        allowed = ", ".join(model.model_fields) or "none"
        raise SuiteError(f"{one_line(err, where)} (allowed keys: {allowed})") from None


@dataclass(frozen=True)
class ModelSpec:
    """Everything that affects training, and nothing else (train.threads only rounds; unkeyed)."""

    family: str
    params: BaseModel
    train: TrainConfig
    seed: int
    suite: Suite = field(repr=False, compare=False)

    def identity(self, *, older: dict[str, int] | None = None) -> dict:
        """`older`: versions to use instead of the current ones (to find an older version's rows).
        Device and resolved precision are part of it: a CPU fp32 checkpoint is not a GPU bf16
        one, and a generator state saved on one device cannot resume on another."""
        versions = {c: (older or {}).get(c, v) for c, (_, v) in self.components().items()}
        return {"family": self.family, "params": self.params.model_dump(),
                "train": self.train.key_fields(),
                "backbone": self.suite.backbone.model_dump(), "corpus": self.suite.corpus.model_dump(),
                "seed": self.seed, "device": self.device, "precision": self.precision,
                **key_fields(versions)}

    def components(self) -> dict[str, tuple[str, int]]:
        """(name, version) of the family and corpus that train this model."""
        return {"family": (self.family, version_of(FAMILIES.get(self.family))),
                "corpus": (self.suite.corpus.name, version_of(CORPORA.get(self.suite.corpus.name)))}

    @property
    def device(self) -> str:
        """The device type this model trains and samples on ('cpu', 'cuda'), from eval.device."""
        return resolve_device(self.suite.eval.device).type

    @property
    def precision(self) -> str:
        """'fp32' or 'bf16', train.precision resolved on that device (sampling uses it too)."""
        return resolve_precision(self.train.precision, self.device)

    @property
    def key(self) -> str:
        return config_hash(self.identity())

    @property
    def step_cost(self) -> float:
        """Backbone passes of one training step (Family.train_cost, which params may change)."""
        cls = FAMILIES.get(self.family)
        return cls(params=self.params, vocab_size=2, seq_len=self.suite.corpus.seq_len).train_cost

    @property
    def label(self) -> str:
        """<family>-<key>: names the model's checkpoint, its lock and its job (a key prefix could
        name two models)."""
        return f"{self.family}-{self.key}"


def oracle_identity(model_identity: dict, *, own_seed: bool = False) -> dict:
    """A model's identity (`ModelSpec.identity`) as the key of an oracle's row sees it: an oracle
    has no training, so its rows depend on neither the training nor the backbone, nor on the
    training seed once a sampling seed of its own seeds the sampler (own_seed)."""
    drop = ("train", "backbone") + (("seed",) if own_seed else ())
    return {k: v for k, v in model_identity.items() if k not in drop}


@dataclass(frozen=True)
class Point:
    model: ModelSpec
    denoiser: str  # 'trained' | 'oracle'
    sampler: str
    sampler_params: BaseModel
    eval: EvalConfig | None = None  # the suite's eval section with its run's overrides; None: the suite's
    sample_seed: int | None = None  # EvalConfig.sample_seeds; None: the sampler takes the training seed
    split: str | None = None  # 'tuning' | 'held_out' with a sample_seed

    @property
    def eval_config(self) -> EvalConfig:
        return self.eval or self.model.suite.eval

    @property
    def sampling_seed(self) -> int:
        """The seed of the sampler's generator (and of the metrics' bootstrap)."""
        return self.model.seed if self.sample_seed is None else self.sample_seed

    def identity(self, eval_identity: dict, *, older: dict[str, int] | None = None) -> dict:
        judge = (older or {}).get("judge", self.components()["judge"][1])
        ident = {"model": self.model.identity(older=older), "denoiser": self.denoiser, "sampler": self.sampler,
                 "sampler_params": self.sampler_params.key_dump(),
                 "eval": {**eval_identity, **key_fields({"judge": judge})}}
        if self.denoiser == "oracle":
            ident["model"] = oracle_identity(ident["model"], own_seed=self.sample_seed is not None)
        return ident

    def components(self) -> dict[str, tuple[str, int]]:
        """(name, version) of the family, corpus and judge that produce this point's row."""
        judge = self.model.suite.eval.judge
        return {**self.model.components(), "judge": (judge, version_of(JUDGES.get(judge)))}


def make_corpus(suite: Suite, *, cache_dir):
    entry = suite.corpus.model_dump()
    name = entry.pop("name")
    try:
        cls = CORPORA.get(name)
    except RegistryError as err:
        raise SuiteError(f"corpus.name: {err}") from None
    kwargs = dict(entry)
    if "cache_dir" in inspect.signature(cls).parameters:
        kwargs.setdefault("cache_dir", str(cache_dir))
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise SuiteError(f"corpus: {err}") from None


def plan(suite: Suite, *, only: dict[str, str] | None = None) -> list[Point]:
    points: list[Point] = []
    splits: dict[int, tuple[str, str]] = {}  # sampling seed -> (split, where), across the whole suite
    for i, run in enumerate(suite.runs):
        where = f"runs[{i}]"
        try:
            cls = FAMILIES.get(run.family)
        except RegistryError as err:
            raise SuiteError(f"{where}.family: {err}") from None
        train_dict = dict(suite.train)
        if set(BUDGETS) & set(run.train):  # a run's own budget replaces the suite's
            train_dict = {k: v for k, v in train_dict.items() if k not in BUDGETS}
        train_dict = {**train_dict, **run.train}
        if isinstance(train_dict.get("threads"), list):  # unkeyed: a sweep would train one model twice
            raise SuiteError(f"{where}.train.threads: one thread count, not a sweep axis")
        trains = [check(TrainConfig, t, f"{where}.train") for t in grid(train_dict)]
        if unknown := sorted(set(run.eval) - set(RUN_EVAL_FIELDS)):
            raise SuiteError(f"{where}.eval.{unknown[0]}: a run may change only {', '.join(RUN_EVAL_FIELDS)} "
                             f"of the suite's eval section")
        evals = check(EvalConfig, {**suite.eval.model_dump(), **run.eval}, f"{where}.eval")
        evals = None if evals == suite.eval else evals
        sample_seeds = (evals or suite.eval).sample_seeds
        seed_pairs = sample_seeds.pairs() if sample_seeds else [(None, None)]
        for seed, split in seed_pairs:  # a seed that chose a setting is never a held-out seed
            if seed is not None and splits.setdefault(seed, (split, where))[0] != split:
                raise SuiteError(f"{where}.eval.sample_seeds: sampling seed {seed} is a {split} seed here "
                                 f"and a {splits[seed][0]} seed in {splits[seed][1]}")
        if only and only.get("family") not in (None, run.family):
            continue
        grids = run.params if isinstance(run.params, list) else [run.params]
        for params_dict in (p for g in grids for p in grid(g)):
            params = check(cls.Params, params_dict, f"{where}.params")
            for seed, train in itertools.product(run.seeds or suite.seeds, trains):
                spec = ModelSpec(family=run.family, params=params, train=train, seed=seed, suite=suite)
                for j, entry in enumerate(run.samplers):
                    swhere = f"{where}.samplers[{j}]"
                    if entry.sampler not in cls.samplers:
                        raise SuiteError(f"{swhere}.sampler: unknown sampler {entry.sampler!r} for "
                                         f"{run.family} (allowed: {', '.join(cls.samplers)})")
                    family = cls(params=params, vocab_size=2, seq_len=suite.corpus.seq_len)
                    for sp in grid(entry.model_extra or {}):
                        sparams = check(cls.samplers[entry.sampler], sp, swhere)
                        try:
                            family.check_sampler(entry.sampler, sparams)
                        except ValueError as err:
                            raise SuiteError(f"{swhere}: {err}") from None
                        for denoiser in run.denoiser:
                            if denoiser == "oracle" and cls.evidence is Family.evidence:
                                raise SuiteError(f"{where}.denoiser: family {run.family!r} has no oracle "
                                                 f"(no evidence function)")
                            points += [Point(spec, denoiser, entry.sampler, sparams, evals, sample_seed=s,
                                             split=split) for s, split in seed_pairs]
    if not points:
        raise SuiteError(f"suite {suite.name!r} selects no runs" + (f" for {only}" if only else ""))
    return points


def check_corpus(corpus, suite: Suite, models: list[ModelSpec]) -> None:
    """Fail before training if the corpus cannot fill the splits the suite asks for, or cannot
    provide a metric the suite asks for."""
    from flowbench.metrics import check_metrics

    check_metrics(suite.eval, corpus)
    for split, n in (("train", max((m.train.train_sequences or 1) for m in models) if models else 1),
                     ("validation", max((m.train.val_sequences for m in models), default=1))):
        have = corpus.available(split)
        if have is not None and have < n:
            raise SuiteError(f"corpus: sequence length {suite.corpus.seq_len} fills only {have} {split} "
                             f"sequences, the suite asks for {n}")
        if have is not None and have < 1:
            raise SuiteError(f"corpus: sequence length {suite.corpus.seq_len} cannot fill one {split} sequence")
