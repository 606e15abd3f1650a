"""A bare backbone step: the unit a family's training cost is declared in, timed where it runs.

One optimiser step of the shared backbone at a given shape with nothing of any family around it:
token ids in, cross-entropy on its logits, backward, AdamW. A family declares its step's cost in
such passes (`Family.train_cost`); dividing a step's measured time by its declared passes and
by a bare step timed in the same process says what the family's own work costs on top
(`python -m flowbench bench`, and the `train_cost_ratio` of every trained row).
"""
from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F

from flowbench.backbone import Backbone, BackboneSpec
from flowbench.config import BackboneConfig
from flowbench.measuring import sync


class BareStep:
    """Times bare backbone steps at (batch, seq_len, vocab_size) on a network of its own.

    The network, its optimiser and its batch are built once, under a forked global RNG, and each
    step runs under one too: timing bare steps between a training run's steps changes nothing
    the run draws."""

    def __init__(self, config: BackboneConfig, *, batch_size: int, seq_len: int, vocab_size: int,
                 device: torch.device | str = "cpu", spec: BackboneSpec | None = None):
        """spec: the backbone's `BackboneSpec`; None (the unit of declared cost) is token ids in, no
        conditioning. Another spec (the bench's floors) reads a fixed random simplex point for
        `input='simplex'` and fixed random times for its conditioning."""
        spec = spec or BackboneSpec()
        self.device = torch.device(device)
        self._rng_devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=self._rng_devices):
            torch.manual_seed(0)
            self.net = Backbone(spec=spec, config=config, vocab_size=vocab_size,
                                seq_len=seq_len).to(self.device).train()
            self.x = torch.randint(vocab_size, (batch_size, seq_len), device=self.device)
            self.input = (torch.randn(batch_size, seq_len, vocab_size, device=self.device).softmax(-1)
                          if spec.input == "simplex" else self.x)
            times = {"none": (), "t": ("t",), "st": ("s", "t")}[spec.cond]
            self.times = {name: torch.rand(batch_size, device=self.device) for name in times}
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=1e-4)
        self.warm = False

    def step(self) -> None:
        with torch.random.fork_rng(devices=self._rng_devices):
            loss = F.cross_entropy(self.net(self.input, **self.times).float().transpose(1, 2), self.x)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()

    def seconds(self, *, steps: int = 1, clock: Callable[[], float] = time.perf_counter) -> float:
        """Mean time of `steps` bare steps by `clock` (wall time by default), after one untimed step
        the first time: the optimiser's state is allocated then."""
        if not self.warm:
            self.step()
            self.warm = True
        sync(self.device)
        t0 = clock()
        for _ in range(steps):
            self.step()
        sync(self.device)
        return (clock() - t0) / steps
