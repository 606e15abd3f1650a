"""A resumed training is the same training: stopping anywhere and starting again reproduces the
uninterrupted run bit for bit on the CPU (weights, raw weights, validation and train-loss history)."""
import pytest
import torch

from flowbench.config import BackboneConfig, TrainConfig
from flowbench.data.language import HMMLanguage
from flowbench.registry import FAMILIES
from flowbench.trainer import train

STEPS = 12
# 40 sequences of batch 8: a new permutation every 5 steps; checkpoints at 3, 6, 9; evals at 4, 8, 12
TRAIN = dict(steps=STEPS, batch_size=8, warmup_steps=2, checkpoint_every=3, eval_every=4,
             val_sequences=16)
CASES = {  # families whose loss draws noise; the last adds dropout (global RNG) and an EMA copy
    "kl_flow": ("kl_flow", {}, 0.0, 0.0),
    "dfm-uniform": ("dfm", {"source": "uniform"}, 0.0, 0.0),
    "dfm-uniform-dropout-ema": ("dfm", {"source": "uniform"}, 0.1, 0.9),
}


class Killed(Exception):
    """Stands in for kill -9: the process stops wherever it is."""


@pytest.fixture(scope="module")
def language():
    return HMMLanguage(seq_len=8, seed=0)  # like suites/smoke.yaml


def run(case, language, checkpoint, *, die_at=None, reference=None):
    """Train (or resume) like the runner does; die_at=k dies after k training steps of this call."""
    name, params, dropout, ema = CASES[case]
    cls = FAMILIES.get(name)
    family = cls(params=cls.Params(**params), vocab_size=language.vocab_size, seq_len=language.seq_len)
    if die_at is not None:
        loss, steps = family.loss, 0

        def dying_loss(model, x1, **kw):
            nonlocal steps
            if model.training:  # validation calls the loss too, in eval mode
                steps += 1
                if steps > die_at:
                    raise Killed
            return loss(model, x1, **kw)

        family.loss = dying_loss
    torch.set_flush_denormal(True)  # as the runner does: denormals make CPU kernels crawl
    torch.manual_seed(123)  # a new process: the global RNG is wherever it is
    model = family.build_model(BackboneConfig(d_model=32, n_layers=1, n_heads=2, dropout=dropout))
    return train(family=family, model=model, train_data=language.split("train", 40),
                 val_data=language.split("validation", 16), config=TrainConfig(ema=ema, **TRAIN),
                 seed=0, checkpoint=checkpoint, meta={}, device=torch.device("cpu"), progress=False,
                 reference=reference)


def without_seconds(history):  # wall time may differ
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def assert_same_training(resumed, reference):
    for key in ("weights", "model"):
        assert resumed[key].keys() == reference[key].keys()
        for name, tensor in reference[key].items():
            assert torch.equal(resumed[key][name], tensor), (key, name)
    assert [h["step"] for h in reference["history"]] == [4, 8, 12]
    assert without_seconds(resumed["history"]) == without_seconds(reference["history"])
    assert (resumed["step"], resumed["train_tokens"]) == (reference["step"], reference["train_tokens"])


@pytest.fixture(scope="module")
def uninterrupted(language, tmp_path_factory):
    cache = {}

    def get(case):
        if case not in cache:
            cache[case] = run(case, language, tmp_path_factory.mktemp("reference") / f"{case}.pt")
        return cache[case]

    return get


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("die_at", [STEPS // 2, 10], ids=lambda k: f"killed-after-step-{k}")
def test_resumed_training_equals_uninterrupted(tmp_path, language, uninterrupted, case, die_at):
    """Killed right after the checkpoint at N/2, or between checkpoints (10: the last one is at 9)."""
    reference = uninterrupted(case)
    checkpoint = tmp_path / "resumed.pt"
    with pytest.raises(Killed):
        run(case, language, checkpoint, die_at=die_at)
    assert torch.load(checkpoint, weights_only=True)["step"] == die_at // 3 * 3  # the last checkpoint
    assert_same_training(run(case, language, checkpoint), reference)


def test_resuming_twice_equals_uninterrupted(tmp_path, language, uninterrupted):
    reference = uninterrupted("kl_flow")
    checkpoint = tmp_path / "resumed.pt"
    for last_checkpoint in (3, 6):  # dies after step 4; resumes from 3 and dies after step 7
        with pytest.raises(Killed):
            run("kl_flow", language, checkpoint, die_at=4)
        assert torch.load(checkpoint, weights_only=True)["step"] == last_checkpoint
    assert_same_training(run("kl_flow", language, checkpoint), reference)


def test_measured_step_seconds_survive_resume_and_bare_steps_change_nothing(tmp_path, language, uninterrupted,
                                                                         monkeypatch):
    """train_seconds sums every step's time across a kill and a resume (a clock that ticks one
    second a reading: each step reads it twice, so 12 steps make 12 s, and a resume that forgot the
    saved sum would make 3); bare backbone steps timed at every save (checkpoints at 3, 6, 9 and
    the end) leave the training bit for bit as without them, dropout and EMA included."""
    from flowbench import trainer
    from flowbench.bare_step import BareStep

    reference = uninterrupted("dfm-uniform-dropout-ema")
    bare = BareStep(BackboneConfig(d_model=32, n_layers=1, n_heads=2, dropout=0.1), batch_size=8,
                    seq_len=language.seq_len, vocab_size=language.vocab_size)
    timed = []

    def bare_seconds():
        timed.append(bare.seconds(steps=1))
        return 0.25

    clock = iter(range(10**6))
    monkeypatch.setattr(trainer.time, "perf_counter", lambda: float(next(clock)))
    checkpoint = tmp_path / "resumed.pt"
    with pytest.raises(Killed):
        run("dfm-uniform-dropout-ema", language, checkpoint, die_at=10, reference=bare_seconds)
    saved = torch.load(checkpoint, weights_only=True)
    assert (saved["step"], saved["train_seconds"], saved["reference_seconds"]) == (9, 9.0, [0.25] * 3)
    final = run("dfm-uniform-dropout-ema", language, checkpoint, reference=bare_seconds)
    assert final["train_seconds"] == 12.0 and final["reference_seconds"] == [0.25] * 4
    assert len(timed) == 4 and all(t >= 0 for t in timed)
    assert_same_training(final, reference)


def _continue_self():
    """What a stopped process sees when it is continued: SIGCONT (sent to itself here), handled
    before this returns."""
    import os
    import signal
    import time

    from flowbench import trainer

    seen = trainer._continues
    os.kill(os.getpid(), signal.SIGCONT)
    deadline = time.monotonic() + 5
    while trainer._continues == seen and time.monotonic() < deadline:
        time.sleep(0.001)
    assert trainer._continues == seen + 1


def test_a_step_the_process_was_stopped_in_counts_as_long_as_the_step_before():
    import time

    from flowbench.trainer import StepClock, count_continues

    count_continues()
    clock = StepClock()
    clock.start()
    time.sleep(0.01)
    clean = clock.lap()
    clock.start()
    time.sleep(0.3)  # stopped here (SIGSTOP) for 0.3 s, then continued
    _continue_self()
    assert clock.lap() == clean and clock.stopped >= 0.25
    clock.start()
    time.sleep(0.02)
    assert clock.lap() >= 0.02 and clock.last >= 0.02  # the next step counts again


def test_a_stopped_training_records_its_steps_not_the_stop(tmp_path, language, monkeypatch):
    """A run stopped for a while inside a step (a shell's ^Z, `scontrol suspend`) and continued
    records the steps' time, not the stop, in train_seconds and in its wall time."""
    import time

    from flowbench.trainer import count_continues

    count_continues()
    quick = run("kl_flow", language, tmp_path / "quick.pt")
    cls = FAMILIES.get("kl_flow")
    loss, calls = cls.loss, []

    def loss_stopped_once(self, model, x1, **kw):
        if model.training:
            calls.append(1)
            if len(calls) == 5:
                time.sleep(2.0)  # stopped for 2 s in the middle of step 5
                _continue_self()
        return loss(self, model, x1, **kw)

    monkeypatch.setattr(cls, "loss", loss_stopped_once)
    stopped = run("kl_flow", language, tmp_path / "stopped.pt")
    assert len(calls) == STEPS
    assert stopped["train_seconds"] < quick["train_seconds"] + 1.0
    assert stopped["seconds"] < quick["seconds"] + 1.0
    assert stopped["history"][-1]["seconds"] < quick["history"][-1]["seconds"] + 1.0
    assert_same_training(stopped, quick)  # the stop changes nothing else
