"""Typed, frozen configs built from a suite YAML (`yaml.safe_load`).

Unknown keys raise; every error is one line naming the key path and what is allowed.
A list value inside `params` or a sampler entry is a sweep axis (the grid is their product).
"""
from __future__ import annotations

import hashlib
import math
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, ValidationError,
                      field_validator, model_validator)


class SuiteError(ValueError):
    """A suite that cannot run; the message is one line naming the culprit."""


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackboneConfig(Frozen):
    """Width, depth and heads shared by every family (the AR baseline builds GPT-2 from them)."""

    d_model: PositiveInt = 64
    n_layers: PositiveInt = 3
    n_heads: PositiveInt = 4
    mlp_ratio: PositiveInt = 4
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    positions: Literal["rotary", "learned"] = "rotary"  # learned: absolute embeddings (see backbone.py)

    @model_validator(mode="after")
    def _heads_divide_width(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        return self


class TrainConfig(Frozen):
    """The training budget and optimiser. Budgets (give exactly one):
    steps   optimiser steps, whatever a step costs;
    tokens  training tokens, steps = ceil(tokens / (batch_size * L)): every family sees the same data;
    passes  training compute in backbone forward + backward passes of one batch,
            steps = ceil(passes / family.train_cost): a family whose step costs three passes
            (a self-distillation target, self-conditioning) gets a third of the steps."""

    steps: PositiveInt | None = None
    tokens: PositiveInt | None = None
    passes: PositiveInt | None = None
    batch_size: PositiveInt = 64
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(100, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    ema: float = Field(0.0, ge=0.0, lt=1.0)  # 0 disables the EMA copy
    # learning rate after the warmup: cosine decay to 0 over the budget; constant (MDLM's and
    # DUO's `constant_warmup`); wsd: constant, then a cosine decay over the last `decay_fraction`
    schedule: Literal["cosine", "constant", "wsd"] = "cosine"
    decay_fraction: float = Field(0.2, gt=0.0, le=1.0)
    eval_every: PositiveInt = 250
    val_sequences: PositiveInt = 512
    train_sequences: PositiveInt | None = None  # None: the corpus's whole split, or one pass of the budget
    checkpoint_every: PositiveInt = 500
    # auto: bf16 autocast on CUDA, fp32 on the CPU; bf16 on the CPU runs the same paths slowly
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # intra-op torch threads of the process that trains (and evaluates) the model, whatever else
    # runs beside it: reductions split over threads round differently, so a count that followed
    # the pending jobs made the trained bits depend on the schedule. Not in the model key (like the
    # CPU type); the rows record it (`train_threads`). `run --threads N` overrides it.
    threads: PositiveInt = 1

    # Not in the model key: how often to validate and checkpoint and on how many validation
    # sequences change no weight (validation draws from a generator of its own, and a resumed run
    # is the uninterrupted one; tests/test_keys.py); the thread count changes the rounding as the
    # CPU type does and is recorded instead; `precision` is keyed resolved (ModelSpec.identity)
    UNKEYED: ClassVar[frozenset[str]] = frozenset({"precision", "threads", "eval_every", "checkpoint_every",
                                                   "val_sequences"})

    def key_fields(self) -> dict:
        """The fields that decide the trained weights: all but UNKEYED (`precision` is resolved per
        device by the caller), and the schedule's fields only where they differ from the cosine
        default, so the keys of models trained before the schedule was a choice stay valid."""
        out = self.model_dump(exclude=set(self.UNKEYED))
        if self.schedule == "cosine":
            del out["schedule"], out["decay_fraction"]
        elif self.schedule == "constant":
            del out["decay_fraction"]
        return out

    def total_steps(self, seq_len: int, *, cost: float = 1.0) -> int:
        """Optimiser steps of this budget for a family whose step costs `cost` passes."""
        if self.steps is not None:
            return self.steps
        if self.tokens is not None:
            return -(-self.tokens // (self.batch_size * seq_len))
        return max(1, math.ceil(self.passes / cost - 1e-9))

    @model_validator(mode="after")
    def _one_budget(self):
        if sum(b is not None for b in (self.steps, self.tokens, self.passes)) != 1:
            raise ValueError(f"give exactly one budget of {', '.join(BUDGETS)}")
        return self


BUDGETS = ("steps", "tokens", "passes")


def distinct(values: list[int], what: str) -> list[int]:
    """`values` if non-empty and without repeats (a field validator's check; pydantic adds the key)."""
    if not values:
        raise ValueError(f"give at least one {what}")
    if repeated := sorted({v for v in values if values.count(v) > 1}):
        raise ValueError(f"{what} {repeated[0]} is listed twice")
    return values


class SampleSeeds(Frozen):
    """Sampling seeds, a separate axis from the training seed: every point is sampled once per
    seed, its row records `sample_seed` and `split`. Sampler settings are chosen on the `tuning`
    seeds' rows and reported on the `held_out` seeds' rows, which no choice has seen. Unset
    (EvalConfig.sample_seeds None): the sampler takes the training seed, the row's split is empty."""

    tuning: list[NonNegativeInt]
    held_out: list[NonNegativeInt]

    @field_validator("tuning", "held_out")
    @classmethod
    def _distinct(cls, values: list[int]) -> list[int]:
        return distinct(values, "sampling seed")

    @model_validator(mode="after")
    def _disjoint(self):
        if both := sorted(set(self.tuning) & set(self.held_out)):
            raise ValueError(f"sampling seed {both[0]} is both a tuning and a held-out seed")
        return self

    def pairs(self) -> list[tuple[int, str]]:
        """(seed, split) for every seed, tuning first."""
        return [(s, "tuning") for s in self.tuning] + [(s, "held_out") for s in self.held_out]


class EvalConfig(Frozen):
    num_samples: PositiveInt = 256
    batch_size: PositiveInt = 256
    judge: str = "exact"
    judge_params: dict[str, Any] = {}  # keyword arguments of the judge (e.g. revision)
    metrics: list[str] | None = None  # None: every registered metric the corpus supports
    metric_params: dict[str, dict[str, Any]] = {}  # per metric, e.g. {mauve: {features: exact}}
    device: str = "auto"  # auto | cpu | cuda
    # sample through torch.compile(network) (inductor, on the CPU too: docs/performance.md): faster,
    # but its kernels round differently from eager, so compiled rows are keyed and marked apart
    compile: bool = False
    sample_seeds: SampleSeeds | None = None  # None: sample with the training seed (SampleSeeds)


RUN_EVAL_FIELDS = ("num_samples", "batch_size", "sample_seeds")


class SamplerEntry(BaseModel):
    """One sampler of a run: its name plus parameters; list values are sweep axes."""

    model_config = ConfigDict(extra="allow", frozen=True)
    sampler: str


class RunEntry(Frozen):
    family: str
    params: dict[str, Any] | list[dict[str, Any]] = {}  # a list: several grids (e.g. an ablation's rows)
    train: dict[str, Any] = {}  # overrides of the suite's train section for this family
    # overrides of the suite's eval section for this run's rows: only RUN_EVAL_FIELDS (how many
    # samples, in what batches, with which sampling seeds); the judge, metrics and device stay one
    # per suite
    eval: dict[str, Any] = {}
    denoiser: list[Literal["trained", "oracle"]] = ["trained"]
    seeds: list[int] | None = None  # this run's training seeds; None: the suite's
    samplers: list[SamplerEntry]

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, values: list[int] | None) -> list[int] | None:
        return values if values is None else distinct(values, "training seed")


class CorpusEntry(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str
    seq_len: PositiveInt


class Suite(Frozen):
    name: str
    corpus: CorpusEntry
    backbone: BackboneConfig = BackboneConfig()
    train: dict[str, Any]  # TrainConfig fields; a list value is a sweep axis (checked by plan)
    eval: EvalConfig = EvalConfig()
    seeds: list[int] = [0]  # training seeds of every run that names none of its own
    runs: list[RunEntry]

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, values: list[int]) -> list[int]:
        return distinct(values, "training seed")


def one_line(err: ValidationError, prefix: str = "") -> str:
    """Pydantic's multi-line error as one line: 'key.path: message'."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in e["loc"]).replace(".[", "[")
        where = ".".join(x for x in (prefix, loc) if x)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def validate(model: type[BaseModel], data: dict, where: str) -> BaseModel:
    try:
        return model(**data)
    except ValidationError as err:
        allowed = ", ".join(model.model_fields)
        raise SuiteError(f"{one_line(err, where)} (allowed keys: {allowed})") from None
    except TypeError as err:
        raise SuiteError(f"{where}: {err}") from None


def read_mapping(path: str | Path, *, kind: str, shape: str) -> dict:
    """The YAML mapping in `path` with `name` defaulting to the file's stem; one-line errors
    for a missing file, invalid YAML or a non-mapping (`shape` says what it should be)."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"{kind} file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SuiteError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: {shape}")
    data.setdefault("name", path.stem)
    return data


def load_suite(path: str | Path) -> Suite:
    data = read_mapping(path, kind="suite", shape=f"a suite is a mapping with keys {', '.join(Suite.model_fields)}")
    return validate(Suite, data, "")  # type: ignore[return-value]


def config_hash(obj: Any, n: int = 12) -> str:
    """Stable short hash of JSON-able data (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]
