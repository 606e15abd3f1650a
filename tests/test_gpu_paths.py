"""The GPU path, as far as a CPU can show it: devices of every sampler, keys and workers decided
for CUDA, precision, memory and timing of the runner, and scripts/gpu_check.sh itself.

DEVICE is 'cuda' where there is one, so the same tests run the real GPU path there."""
import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import flowbench.runner as runner
from flowbench.config import BackboneConfig, load_suite
from flowbench.families.base import Family
from flowbench.launch.local import LocalLauncher
from flowbench.measuring import PhaseMemory
from flowbench.plan import plan
from flowbench.registry import FAMILIES

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ROOT = Path(__file__).parents[1]



def rows(csv_path):
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


# --- every sampler on the device of its generator ----------------------------------------------
@pytest.mark.parametrize("name", FAMILIES.names())
def test_every_sampler_runs_on_the_generators_device(name, micro_language):
    lang = micro_language
    cls = FAMILIES.get(name)
    fam = cls(params=cls.Params(), vocab_size=lang.vocab_size, seq_len=lang.seq_len)
    net = fam.build_model(BackboneConfig(d_model=16, n_layers=1, n_heads=2)).to(DEVICE).eval()
    models = {"trained": net}
    if cls.evidence is not Family.evidence:
        models["oracle"] = fam.oracle_model(lang.posterior)
    for sampler, params_cls in cls.samplers.items():
        params = params_cls(nfe=lang.seq_len if name == "ar_gpt2" else 2)
        for kind, model in models.items():
            with torch.inference_mode():
                x = fam.sample(model, n=3, sampler=sampler, params=params,
                               generator=torch.Generator(device=DEVICE).manual_seed(0))
            assert x.device.type == DEVICE and x.shape == (3, lang.seq_len), (sampler, kind)
            assert 0 <= int(x.min()) and int(x.max()) < lang.vocab_size


# --- keys and workers for CUDA, decided without one --------------------------------------------
def test_default_training_processes_one_on_a_gpu():
    assert runner.default_jobs("cuda") == 1
    assert runner.default_jobs("cpu") == (os.cpu_count() or 1)


class Stop(Exception):
    pass


def test_a_cuda_run_starts_one_training_process_unless_told(tmp_path, monkeypatch, smoke_suite):
    seen = []

    def stop(self, jobs, *, progress):
        seen.append(self.jobs)
        raise Stop  # the decision is made: nothing needs training here

    monkeypatch.setattr(LocalLauncher, "launch", stop)
    path = smoke_suite(**{"eval.device": "cuda"})
    for jobs in (None, 3):
        with pytest.raises(Stop):
            runner.run_suite(path, out=tmp_path / "out", jobs=jobs, progress=False)
    assert seen == [1, 3]


def identities(smoke_suite, **changes):
    points = plan(load_suite(smoke_suite(**changes)), only={"family": "mdlm"})
    trained = next(p for p in points if p.denoiser == "trained")
    oracle = next(p for p in points if p.denoiser == "oracle")
    return trained.model, trained.identity({}), oracle.identity({})


def test_model_and_row_keys_carry_device_and_precision(smoke_suite):
    cpu, cpu_row, cpu_oracle = identities(smoke_suite, **{"eval.device": "cpu"})
    gpu, gpu_row, gpu_oracle = identities(smoke_suite, **{"eval.device": "cuda"})
    gpu32, _, _ = identities(smoke_suite, **{"eval.device": "cuda", "train.precision": "fp32"})
    cpu32, _, _ = identities(smoke_suite, **{"eval.device": "cpu", "train.precision": "fp32"})
    assert (cpu.identity()["device"], cpu.identity()["precision"]) == ("cpu", "fp32")
    assert (gpu.identity()["device"], gpu.identity()["precision"]) == ("cuda", "bf16")  # auto on CUDA
    assert gpu32.identity()["precision"] == "fp32"
    assert len({cpu.key, gpu.key, gpu32.key}) == 3  # no checkpoint is shared across them
    assert cpu32.key == cpu.key  # 'auto' on the CPU is fp32: the same model
    for row, oracle, device in ((cpu_row, cpu_oracle, "cpu"), (gpu_row, gpu_oracle, "cuda")):
        assert row["model"]["device"] == oracle["model"]["device"] == device
        assert "precision" in row["model"] and "precision" in oracle["model"]


def test_local_judge_key_carries_device_and_precision(micro_language, tmp_path):
    from flowbench.judges import LocalJudge

    LocalJudge(corpus=micro_language, cache_dir=tmp_path, device=torch.device("cpu"), d_model=16,
               n_layers=1, n_heads=2, steps=1, batch_size=4, progress=False)
    (ckpt,) = (tmp_path / "judges").glob("local-*.pt")
    meta = torch.load(ckpt, weights_only=True)["meta"]
    assert (meta["device"], meta["precision"]) == ("cpu", "fp32")


# --- memory and timing -------------------------------------------------------------------------
def test_cuda_peak_memory_leaves_out_what_was_live_before(monkeypatch):
    """The judge's weights are allocated before a row is evaluated: they are not the sampler's."""
    mb = 2**20
    state = {"allocated": 1500 * mb, "peak": 1500 * mb}  # the judge, resident
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: state["allocated"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: state["peak"])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: state.update(peak=state["allocated"]))
    state["peak"] = 4000 * mb  # an earlier row's peak
    memory = PhaseMemory(torch.device("cuda"), cpu="process").start()  # as the runner measures a row
    state["peak"] = 1500 * mb + 120 * mb  # this row's network and sampling
    assert memory.stop() == 120 == memory.mb


def test_warm_up_runs_at_the_timed_batch_size(tmp_path, monkeypatch, smoke_suite):
    cls = FAMILIES.get("mdlm")
    sizes = []
    real = cls.sample
    monkeypatch.setattr(cls, "sample", lambda self, model, *, n, **kw: sizes.append(n) or real(self, model, n=n, **kw))
    path = smoke_suite(**{"eval.num_samples": 8, "eval.batch_size": 4, "runs": [
        {"family": "mdlm", "denoiser": ["oracle"], "samplers": [{"sampler": "ancestral", "nfe": 2}]}]})
    runner.run_suite(path, out=tmp_path / "out", jobs=1, progress=False)
    assert sizes == [4, 4, 4]  # warm-up, then the two timed batches
    sizes.clear()
    path = smoke_suite(**{"eval.num_samples": 32, "eval.batch_size": 16, "eval.device": "cpu", "runs": [
        {"family": "mdlm", "denoiser": ["oracle"], "samplers": [{"sampler": "ancestral", "nfe": 2}]}]})
    runner.run_suite(path, out=tmp_path / "out_cpu", jobs=1, progress=False)
    assert sizes == [8, 16, 16]  # on the CPU a small warm-up: the timed batches are what counts


# --- precision ---------------------------------------------------------------------------------
def test_smoke_suite_under_bf16_autocast_on_the_cpu(tmp_path, smoke_suite):
    """Every family trains and samples through the bf16 paths a GPU takes; rows stay finite."""
    path = smoke_suite(**{"eval.device": "cpu", "train.precision": "bf16"})
    got = rows(runner.run_suite(path, out=tmp_path / "out", jobs=1, progress=False))
    assert len(got) == len(plan(load_suite(path)))
    for r in got:
        assert r["precision"] == "bf16" and r["device"] == "cpu"
        for col in ("gen_ppl", "entropy", "samples_per_s", "nll_median"):
            assert math.isfinite(float(r[col])), (r["family"], r["sampler"], col)
        if r["denoiser"] == "trained":
            assert math.isfinite(float(r["val_loss"])), r["family"]


# --- the GPU check script ----------------------------------------------------------------------
def test_gpu_check_script_runs_on_the_cpu(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "gpu_check: ok" in proc.stdout
    for name in ("ar_gpt2", "flow_map"):
        assert f"{name} batch 1:" in proc.stdout and f"{name} batch 256:" in proc.stdout
