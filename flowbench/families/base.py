"""The interface every family implements; what it needs from the backbone it declares as a
`BackboneSpec` (flowbench/backbone.py).

Time convention for the whole project (docs/conventions.md): x_0 is noise, x_1 is data,
t runs from 0 (noise) to 1 (data). A family whose paper uses the other direction converts
in its own module and says so in its docstring.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator
from torch import nn

from flowbench.backbone import Backbone, BackboneSpec
from flowbench.config import BackboneConfig

# log p(x_1^i = v | evidence) for every position and clean token: (B, L, V) -> (B, L, V)
Posterior = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TrainingPhase:
    """A stretch of a family's training whose step does one kind of work.

    progress: a `Family.train_progress` value inside the phase (the bench sets it to time the
    phase's step); cost: the backbone passes one step of the phase declares; share: the fraction
    of the training steps spent in it. The shares sum to 1, and the share-weighted cost is the
    family's `train_cost`."""

    name: str
    progress: float
    cost: float
    share: float


class Params(BaseModel):
    """Base of every family's hyper-parameters: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # options added after rows were committed whose default reproduces those rows bit for bit:
    # they enter a row's key (and its sampler_params column) only when set away from the default
    keyed_when_set: ClassVar[tuple[str, ...]] = ()

    def key_dump(self) -> dict:
        """model_dump() without the `keyed_when_set` fields that hold their defaults."""
        out = self.model_dump()
        for name in self.keyed_when_set:
            if out[name] == type(self).model_fields[name].default:
                del out[name]
        return out


class SamplerParams(Params):
    """Base of every sampler's parameters; `nfe` is the number of function evaluations.

    temperature and top_p act on the sampler's final categorical draw of clean tokens (every
    draw that fixes a token for good: each AR step, each MDLM / DFM unmasking or jump draw, the
    last decode of a flow): logits / temperature, then the nucleus of mass top_p. At 1 and 1
    the draw is untouched, bit for bit. A sampler whose final read is an argmax has no draw to
    temper and rejects other values."""

    nfe: PositiveInt = Field(description="function evaluations: backbone calls per sample batch")
    temperature: float = Field(1.0, gt=0, description="divides the logits of the final categorical draw (1: the model's own)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus of the final draw: the smallest token set of this mass (1: all)")
    # False for samplers that end in an argmax (set by such a sampler's params class)
    final_draw: ClassVar[bool] = True

    @model_validator(mode="after")
    def _tempering_needs_a_draw(self):
        argmax = not self.final_draw or getattr(self, "decode", None) == "argmax"
        if argmax and (self.temperature != 1.0 or self.top_p != 1.0):
            raise ValueError("temperature and top_p act on a categorical draw; this sampler decodes by "
                             "argmax" + (" (set decode to draw instead)" if hasattr(self, "decode") else ""))
        return self


class StatePrecision(SamplerParams):
    """state_precision: the dtype of a sampler's (n, L, V) state and the draws and maps on it:
    float32 (default; the conventions' rule: float64 only for the categorical draws, which
    `sample_categorical` makes in float64 either way) or float64. Shown equal in distribution on
    the exact denoiser (docs/performance.md, which measures the gain); keyed only when set away
    from the default."""

    state_precision: Literal["float32", "float64"] = "float32"
    keyed_when_set: ClassVar[tuple[str, ...]] = ("state_precision",)


class Family:
    """A generative paradigm: its noising path, loss, sampler(s) and hyper-parameters.

    Subclasses set `Params` and `samplers` (sampler name -> its SamplerParams subclass) and
    implement `backbone_spec`, `loss` and `sample`. A family with an exact denoiser also
    implements `evidence` (and `oracle_model` when its network predicts something other
    than clean-token logits).

    `model(x, t=None, s=None)` is the network (or the oracle standing in for it); the worker
    counts its calls, so a sampler's NFE is what it really spends.
    """

    name: ClassVar[str]
    Params: ClassVar[type[Params]] = Params
    samplers: ClassVar[dict[str, type[SamplerParams]]] = {}
    # backbone passes per training step, relative to one forward + backward; the runner starts
    # the costliest models first so parallel workers finish together
    train_cost: ClassVar[float] = 1.0
    # bump when a change alters what the family trains or samples: it enters the model and row
    # keys, so the next run retrains this family and recomputes its rows (flowbench/versions.py)
    version: ClassVar[int] = 1
    # the fraction of its training steps done, set by the trainer before each training loss
    train_progress: float = 0.0

    def __init__(self, *, params: Params, vocab_size: int, seq_len: int):
        self.params = params
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.self_cond_rate = float(getattr(params, "self_cond", 0.0))
        if self.self_cond_rate:  # one more forward pass (no backward) on every batch
            self.train_cost = type(self).train_cost + 1.0 / 3.0

    # --- model -------------------------------------------------------------------------
    def backbone_spec(self) -> BackboneSpec:
        raise NotImplementedError

    def build_backbone(self, config: BackboneConfig) -> nn.Module:
        return Backbone(spec=self.backbone_spec(), config=config, vocab_size=self.vocab_size,
                        seq_len=self.seq_len)

    def build_model(self, config: BackboneConfig) -> nn.Module:
        net = self.build_backbone(config)
        if getattr(self.params, "posterior_input", False):
            net = PosteriorInput(net, self.model_evidence)
        return EvidenceHead(net, self.model_evidence) if getattr(self.params, "evidence_head", False) else net

    def model_evidence(self, x: torch.Tensor, t: torch.Tensor | None, s: torch.Tensor | None) -> torch.Tensor:
        """The position's own evidence in the network's call convention `model(x, t, s)`:
        (B, L, V). Default: `evidence(x, t)`; a family whose model time or state differs
        from its path's (a warped time, a two-time map) overrides it."""
        return self.evidence(x, t)

    # --- training ------------------------------------------------------------------------
    def training_phases(self) -> tuple[TrainingPhase, ...]:
        """The phases of this family's training (`TrainingPhase`); one unless its loss changes
        with `train_progress`."""
        return (TrainingPhase("train", progress=0.0, cost=self.train_cost, share=1.0),)

    def loss(self, model: nn.Module, x1: torch.Tensor, *, generator: torch.Generator | None = None
             ) -> torch.Tensor:
        """Scalar training loss on a batch of clean token ids x1 (B, L)."""
        raise NotImplementedError

    def training_floor_work(self, *, phase: TrainingPhase, x1: torch.Tensor,
                            generator: torch.Generator) -> Callable[[], object] | None:
        """The floor of one training step of `phase` besides its backbone passes: a callable doing
        only the work on (B, L) or (B, L, V) that no implementation of this family's loss can skip
        (its noise or prior draws, the path, the maps the network reads, soft targets), by the
        family's own functions, on the clean ids x1 (B, L). The bench times it beside a bare
        backbone step (`flowbench bench`, `floor_ratio_to_bare`); training never calls it.
        None (the default): no floor is declared, and none is reported."""
        return None

    def self_conditioned(self, model, x: torch.Tensor, *, generator: torch.Generator | None,
                         **times) -> torch.Tensor:
        """Training call with self-conditioning (Chen et al., Analog Bits, arXiv 2208.04202):
        a first pass without it (no gradient) estimates x_1; with probability `self_cond` per
        sequence that estimate, softmax of the first pass, conditions the second pass, else
        zeros do. Without self_cond this is model(x, **times)."""
        if not self.self_cond_rate:
            return model(x, **times)
        with torch.no_grad():
            x1_hat = model(x, **times).float().softmax(-1)                       # (B, L, V)
        keep = torch.rand(x.shape[0], generator=generator, device=x.device) < self.self_cond_rate
        return model(x, **times, x1_hat=x1_hat * keep[:, None, None])

    def sampling_model(self, model: Callable) -> Callable:
        """The network as a sampler calls it: with self-conditioning, each call reads the
        previous call's estimate of x_1 (none at the first). A new one per sample() call."""
        if not self.self_cond_rate:
            return model
        prev: list[torch.Tensor | None] = [None]

        def call(x, **times):
            out = model(x, **times, x1_hat=prev[0])
            prev[0] = out.float().softmax(-1)
            return out

        return call

    # --- sampling ------------------------------------------------------------------------
    def check_sampler(self, sampler: str, params: SamplerParams) -> None:
        """Raise ValueError (one line) if the sampler cannot run with these parameters."""

    def sample(self, model: Callable, *, n: int, sampler: str, params: SamplerParams,
               generator: torch.Generator) -> torch.Tensor:
        """n sequences of clean token ids (n, L)."""
        raise NotImplementedError

    # --- oracle --------------------------------------------------------------------------
    def evidence(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log p(x_t^i | x_1^i = v) for every position i and clean token v: (B, L, V) float64.

        t has shape (B,). Constant offsets per position do not matter."""
        raise NotImplementedError(f"family {self.name!r} declares no evidence function (no oracle)")

    def oracle_model(self, posterior: Posterior) -> Callable:
        """A stand-in for the network built from the exact posterior p(x_1 | x_t).

        Default: the network predicts clean-token logits, so the oracle returns the log posterior."""

        def model(x_t: torch.Tensor, t: torch.Tensor | None = None, s: torch.Tensor | None = None,
                  x1_hat=None):  # the exact posterior needs no estimate of x_1
            return posterior(self.evidence(x_t, t))

        return model


class PosteriorInput(nn.Module):
    """The backbone reads softmax(evidence(x, t, s)): each position's single-site posterior under
    a uniform token prior, in place of the raw state x.

    A raw simplex or Gaussian state buries a position's token under V noisy coordinates (the
    linear embedding of N(0, (1 - t)^2 I_V) noise has about sqrt(V) times the norm of the signal
    t e_v), so the network cannot read its neighbours' tokens in the band where context decides
    them. The posterior is a per-position sufficient statistic of x for x_1 (the exact denoiser
    depends on x only through it), so nothing is lost; Plaid rescales its inputs for the same
    reason (arXiv 2305.18619). x (B, L, V) -> the backbone's output."""

    def __init__(self, net: nn.Module, evidence: Callable):
        super().__init__()
        self.net, self.evidence = net, evidence

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None,
                s: torch.Tensor | None = None, *, evidence: torch.Tensor | None = None, **kw) -> torch.Tensor:
        """evidence: this call's evidence(x, t, s) when the caller has it already (EvidenceHead)."""
        # no torch.no_grad: x carries no gradient in training, and a gradient in x (steering's
        # look-ahead) must reach it through the posterior too
        ev = self.evidence(x, t, s) if evidence is None else evidence
        post = ev.softmax(-1).to(torch.float32)                           # (B, L, V)
        return self.net(post, t=t, s=s, **kw)


class EvidenceHead(nn.Module):
    """logits = net(x, t, s) + evidence(x, t, s): the network learns only what context adds.

    p(x_1^i = v | x_t) is proportional to p(x_1^i = v | x_t^{-i}) p(x_t^i | x_1^i = v): the
    second factor, the position's own evidence, is known in closed form (`Family.evidence`), so
    with a zero network output the model is the single-position posterior under a uniform
    prior, and training spends its capacity on the context term. As Plaid adds the Gaussian
    likelihood to its logits (arXiv 2305.18619) and the leave-one-out head of arXiv 2605.22765
    adds log1p(V kappa / (1 - kappa)) at the observed token for uniform noise. The network still
    reads x_t^i, so this is a parameterisation (a skip connection with the exact single-site
    term), not a factorisation."""

    def __init__(self, net: nn.Module, evidence: Callable):
        super().__init__()
        self.net, self.evidence = net, evidence

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None,
                s: torch.Tensor | None = None, **kw) -> torch.Tensor:
        # with gradient, as PosteriorInput: a gradient in x includes the evidence term
        ev = self.evidence(x, t, s)                                       # (B, L, V)
        if isinstance(self.net, PosteriorInput) and self.net.evidence == self.evidence:
            out = self.net(x, t=t, s=s, evidence=ev, **kw)                # the same evidence, once
        else:
            out = self.net(x, t=t, s=s, **kw)                             # (B, L, V)
        ev = ev - ev.amax(-1, keepdim=True).detach().clamp_min(-1e30)     # per-position constant
        return out + ev.to(out.dtype)


def time_grid(steps: int, *, t_end: float = 1.0,
              warp: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """steps + 1 float64 times from 0 (noise) to t_end: uniformly spaced, or with warp (an
    increasing map of [0, 1] onto itself) t_k = t_end * warp(k / steps), its ends pinned to 0 and 1."""
    if warp is None:
        return torch.linspace(0.0, t_end, steps + 1, dtype=torch.float64)
    t = warp(torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64))
    t[0], t[-1] = 0.0, 1.0
    return t * t_end


def randomized_steps(denoise: Callable, renoise: Callable, x: torch.Tensor, grid: torch.Tensor, *,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The randomized sampler of seed 004_*.txt (section 2.3) on any path that draws x_t from
    x_1 and fresh noise: at each grid time t_k, draw x_1 ~ P(. | x_{t_k}) per position, then
    draw the path afresh at t_{k+1} given that x_1. K = len(grid) - 1 calls, the last one only
    read: returns (the state it read, its logits for the caller to decode); (x, None) when K = 0.

    denoise(x, t) -> logits of x_1 (n, L, V) at the scalar time t; renoise(x1, t) -> x_t for
    ids x1 (n, L). Unlike an ODE step it needs only the denoiser, so a small per-step error of
    the network is not carried along the trajectory: each step restarts from a path sample."""
    K, logits = len(grid) - 1, None
    for k in range(K):
        logits = denoise(x, grid[k])
        if k + 1 < K:
            x = renoise(sample_categorical(logits, generator=generator), grid[k + 1])  # (n, L) -> x_t
    return x, logits


SAMPLE_BUDGET_BYTES = 256 * 2**20  # float64 working set of one sample_categorical chunk


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches top_p; others get -inf. (B, V)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(-1, descending=True)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    drop = cum - sorted_logits.softmax(-1) >= top_p  # tokens entirely beyond the nucleus
    sorted_logits[drop] = -torch.inf
    return torch.empty_like(logits).scatter_(-1, order, sorted_logits)


def picks_rows_on_host(device: torch.device) -> bool:
    """Whether `sample_categorical(only=...)` may pick its rows on the host: free on the CPU; on a
    GPU, reading the mask would wait for every queued kernel at every sampler step, so there all
    rows are drawn and the unused ones set to -1."""
    return device.type == "cpu"


def sample_categorical(logits: torch.Tensor, *, generator: torch.Generator, temperature: float = 1.0,
                       top_p: float = 1.0, only: torch.Tensor | None = None,
                       max_bytes: int = SAMPLE_BUDGET_BYTES) -> torch.Tensor:
    """Draw ids (...,) from logits (..., V) by inverting the float64 cumulative distribution.

    Per row: c = cumsum(exp(logits - max)) in float64, one uniform u in (0, 1], and the id is the
    first v with c_v >= u c_V. A token of probability p owns an interval of width p c_V, so tokens
    far rarer than float32's resolution keep their mass (float32 Gumbel noise biases them), and a
    -inf logit (zero mass) is never drawn. One uniform and one exp per entry: about a third of the
    work of float64 Gumbel-argmax (two logs and one uniform per entry; `python -m flowbench bench`).
    With temperature or top_p set, each chunk's logits are divided by the temperature (in float64)
    and cut to the nucleus of mass top_p first; at 1 and 1 they are used as given.

    The rows (all leading positions) are drawn in chunks whose float64 (rows, V) buffer stays
    under `max_bytes` (at least one row): with a hub vocabulary (V = 50257) an unchunked draw at
    n = 256, L = 128 would need about 13 GB. Uniforms are drawn chunk after chunk from the one
    generator; a CPU generator fills them in the order of a single draw, so the ids are identical
    to an unchunked draw (a CUDA generator's are equal in distribution only).

    only: a bool mask (...,) of the rows whose id is used (the positions a sampler step changes);
    the others come back as -1 and cost one uniform each. Every row's uniform is still drawn, in
    the same order, so the drawn rows and the generator's next state are those of a full draw: a
    masked-diffusion step at NFE 64 inverts about 1/64 of the rows instead of all of them (on the
    CPU: `picks_rows_on_host`)."""
    V = logits.shape[-1]
    flat = logits.reshape(-1, V)                                                   # (N, V)
    rows = max(1, max_bytes // (8 * V))
    out = torch.empty(flat.shape[0], dtype=torch.long, device=logits.device)
    used = None if only is None else only.reshape(-1)                               # (N,) bool
    select = used is not None and picks_rows_on_host(logits.device)
    if select:
        out.fill_(-1)
    for i in range(0, flat.shape[0], rows):
        chunk, pick = flat[i:i + rows], None
        u = torch.rand((chunk.shape[0], 1), dtype=torch.float64, generator=generator, device=logits.device)
        if select and not bool(used[i:i + rows].all()):
            pick = used[i:i + rows].nonzero().squeeze(-1)                           # (k,) rows drawn
            if pick.numel() == 0:
                continue
            chunk, u = chunk[pick], u[pick]
        chunk = chunk.to(torch.float64)
        if temperature != 1.0 or top_p < 1.0:
            chunk = top_p_filter(chunk / temperature, top_p)
        cdf = torch.sub(chunk, chunk.amax(-1, keepdim=True)).exp_().cumsum_(-1)   # (rows, V), new buffer
        u = torch.sub(1.0, u).mul_(cdf[:, -1:])                                    # in (0, c_V]
        ids = torch.searchsorted(cdf, u).clamp_max_(V - 1).squeeze(-1)
        if pick is not None:
            out[i:i + rows].index_copy_(0, pick, ids)
            continue
        if used is not None and not select:  # every row drawn on the device: the unused ones -1
            ids.masked_fill_(~used[i:i + rows], -1)
        out[i:i + rows] = ids
    return out.view(logits.shape[:-1])


def _register_base() -> None:
    from flowbench.registry import FAMILIES

    FAMILIES.base = Family


_register_base()
