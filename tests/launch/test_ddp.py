"""DDP on the CPU (gloo, 2 processes) is single-process training on the same global batch: each
process trains on half of every batch, and the weights match within rounding. A checkpoint resumes
with another number of processes."""
import shutil
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from flowbench.config import BackboneConfig, TrainConfig
from flowbench.data.language import HMMLanguage
from flowbench.registry import FAMILIES, load_builtins
from flowbench.trainer import train

TRAIN = dict(steps=6, batch_size=8, warmup_steps=1, eval_every=3, checkpoint_every=4, val_sequences=16)


def run(checkpoint, sizes=None):
    load_builtins()
    language = HMMLanguage(seq_len=8, seed=0)
    cls = FAMILIES.get("ar_gpt2")  # a loss without noise: the same batch gives the same gradient
    family = cls(params=cls.Params(), vocab_size=language.vocab_size, seq_len=language.seq_len)
    if sizes is not None:
        loss = family.loss

        def recording_loss(model, x1, **kw):
            if model.training:
                sizes.append(len(x1))
            return loss(model, x1, **kw)

        family.loss = recording_loss
    torch.manual_seed(0)
    model = family.build_model(BackboneConfig(d_model=32, n_layers=1, n_heads=2))
    return train(family=family, model=model, train_data=language.split("train", 40),
                 val_data=language.split("validation", 16), config=TrainConfig(**TRAIN), seed=0,
                 checkpoint=checkpoint, meta={}, device=torch.device("cpu"), progress=False)


def worker(rank, world, port, checkpoint, results):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        sizes = []
        run(checkpoint, sizes)
        results.put((rank, sizes))
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_equals_one_process_on_the_global_batch(tmp_path):
    reference = run(tmp_path / "single.pt")
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.start_processes(worker, args=(2, free_port(), tmp_path / "ddp.pt", results), nprocs=2, join=True,
                       start_method="spawn")
    seen = dict(results.get() for _ in range(2))
    assert seen == {0: [4] * 6, 1: [4] * 6}  # each process trained on half of each batch of 8
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    assert ddp["step"] == reference["step"] == 6 and ddp["done"]
    for name, tensor in reference["weights"].items():
        torch.testing.assert_close(ddp["weights"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    changed = any(not torch.equal(reference["weights"][n], t) for n, t in run_init().items())
    assert changed  # training moved the weights, so the match means something
    assert [round(h["val_loss"], 4) for h in ddp["history"]] == [round(h["val_loss"], 4) for h in reference["history"]]


def run_init():
    load_builtins()
    cls = FAMILIES.get("ar_gpt2")
    family = cls(params=cls.Params(), vocab_size=HMMLanguage(seq_len=8, seed=0).vocab_size, seq_len=8)
    torch.manual_seed(0)
    return family.build_model(BackboneConfig(d_model=32, n_layers=1, n_heads=2)).state_dict()


# --- resuming with another world size -------------------------------------------------------------
RESUME = dict(steps=6, batch_size=8, warmup_steps=1, eval_every=3, checkpoint_every=4, val_sequences=16)


class Killed(Exception):
    """Stands in for kill -9 in the middle of training."""


def run_noisy(checkpoint, *, die_after=None, seeds=None):
    """kl_flow (its loss draws noise) from `checkpoint`; dies after `die_after` training steps of this
    call; records the initial seed of this process's noise generator in `seeds`."""
    load_builtins()
    language = HMMLanguage(seq_len=8, seed=0)
    cls = FAMILIES.get("kl_flow")
    family = cls(params=cls.Params(), vocab_size=language.vocab_size, seq_len=language.seq_len)
    loss, steps = family.loss, 0

    def watched_loss(model, x1, **kw):
        nonlocal steps
        if model.training:
            if seeds is not None and steps == 0:
                seeds.append(kw["generator"].initial_seed())
            steps += 1
            if die_after is not None and steps > die_after:
                raise Killed
        return loss(model, x1, **kw)

    family.loss = watched_loss
    torch.manual_seed(0)
    model = family.build_model(BackboneConfig(d_model=32, n_layers=1, n_heads=2))
    return train(family=family, model=model, train_data=language.split("train", 40),
                 val_data=language.split("validation", 16), config=TrainConfig(**RESUME), seed=0,
                 checkpoint=checkpoint, meta={"label": "kl_flow"}, device=torch.device("cpu"), progress=False)


def resuming_worker(rank, world, port, folder, results):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        seeds = []
        for name in ("one-a.pt", "one-b.pt"):  # two copies of a 1-process checkpoint, resumed by 2
            run_noisy(folder / name, seeds=seeds)
        try:
            run_noisy(folder / "two.pt", die_after=5)  # a 2-process run, killed after its checkpoint at 4
        except Killed:
            pass
        results.put((rank, seeds))
    finally:
        dist.destroy_process_group()


def test_a_checkpoint_resumes_with_another_world_size(tmp_path, capsys):
    """1 -> 2 processes and 2 -> 1: training finishes, each process draws its own noise stream, a
    function of the seed and step (two resumes of one checkpoint agree), and a line says so."""
    with pytest.raises(Killed):
        run_noisy(tmp_path / "one-a.pt", die_after=5)
    at_four = torch.load(tmp_path / "one-a.pt", weights_only=True)
    assert at_four["step"] == 4 and at_four["noise_rng_ranks"] is None  # a 1-process checkpoint
    shutil.copy(tmp_path / "one-a.pt", tmp_path / "one-b.pt")
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.start_processes(resuming_worker, args=(2, free_port(), tmp_path, results), nprocs=2, join=True,
                       start_method="spawn")
    seeds = dict(results.get() for _ in range(2))
    assert seeds[0][0] == seeds[0][1] and seeds[1][0] == seeds[1][1]  # from the seed and step alone
    assert seeds[0][0] != seeds[1][0]  # each process its own stream
    a, b = (torch.load(tmp_path / n, weights_only=True) for n in ("one-a.pt", "one-b.pt"))
    assert a["done"] and (a["step"], a["world"]) == (6, 2) and [h["step"] for h in a["history"]] == [3, 6]
    for name, tensor in a["weights"].items():
        assert torch.equal(tensor, b["weights"][name]), name
    assert any(not torch.equal(t, at_four["weights"][n]) for n, t in a["weights"].items())  # it trained on

    two = torch.load(tmp_path / "two.pt", weights_only=True)
    assert (two["step"], two["world"], len(two["noise_rng_ranks"])) == (4, 2, 2)
    capsys.readouterr()
    seeds = []
    done = run_noisy(tmp_path / "two.pt", seeds=seeds)
    assert done["done"] and (done["step"], done["world"]) == (6, 1)
    assert seeds[0] not in (0 + 1, 0 + 1 + 7919)  # neither saved stream: both ranks' slices are now one
    said = capsys.readouterr().out.strip()
    assert said == "kl_flow: checkpoint of 2 process(es) resumed at step 4 by 1: each process's noise stream " \
                   "is drawn afresh from the seed and step"
