"""DDP on the CPU (gloo, 2 processes) is single-process training on the same global batch: each
process trains on half of every batch, and the weights match within rounding."""
import socket

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
