"""The `steering:` section of a steering suite, and the loader that splits it from the rest.

A steering suite is an ordinary suite (corpus, backbone, train, eval, seeds, one flow_map run
that names the model to train and its denoisers) plus a `steering:` mapping:

  reward, reward_params   a registered reward and its keyword arguments (REWARDS)
  lam                     lambda of the tilt rho ∝ exp(lambda r) p
  nfe                     the look-ahead method's NFE grid; each value sets a compute budget
                          (4 nfe - 1 passes) that the baselines are matched to (run.py)
  eta                     guidance strength grid (lookahead and tangent)
  horizon                 look-ahead reach grid: tau = t + horizon (1 - t); 1 is the seed's X_{t,1}
  methods                 any of base, lookahead, tangent, best_of_n, finetuned
  oracle_steps_per_unit   the oracle flow map's integration steps per unit time
  n_reference             exact samples behind the target's topic shares
  finetune                FinetuneConfig (finetune.py)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveInt

from flowbench.config import Frozen, Suite, SuiteError, read_mapping, validate
from flowbench.steering.finetune import FinetuneConfig

Method = Literal["base", "lookahead", "tangent", "best_of_n", "finetuned"]


class SteeringConfig(Frozen):
    reward: str = "topic"
    reward_params: dict[str, Any] = {}
    lam: float = Field(1.0, gt=0)
    nfe: list[PositiveInt] = [4]
    eta: list[float] = [1.0]
    horizon: list[float] = [1.0]
    methods: list[Method] = ["base", "lookahead", "tangent", "best_of_n", "finetuned"]
    oracle_steps_per_unit: PositiveInt = 16
    n_reference: PositiveInt = 4096
    finetune: FinetuneConfig = FinetuneConfig()


def load_steering_suite(path: str | Path) -> tuple[Suite, SteeringConfig]:
    shape = "a steering suite is a suite with a 'steering:' mapping"
    data = read_mapping(path, kind="suite", shape=shape)
    if not isinstance(data.get("steering"), dict):
        raise SuiteError(f"{path}: {shape}")
    steering = validate(SteeringConfig, data.pop("steering"), "steering")
    suite = validate(Suite, data, "")
    if [r.family for r in suite.runs] != ["flow_map"]:
        raise SuiteError(f"{path}: runs: a steering suite has exactly one run, of family flow_map")
    if any(e < 0 for e in steering.eta):
        raise SuiteError(f"steering.eta: guidance strengths must be >= 0, got {steering.eta}")
    if any(not 0 < h <= 1 for h in steering.horizon):
        raise SuiteError(f"steering.horizon: look-ahead reaches must lie in (0, 1], got {steering.horizon}")
    return suite, steering
