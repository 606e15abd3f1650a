#!/usr/bin/env bash
# The GPU path end to end, in about five minutes on a GPU machine:
#   1. the smoke suite on the device (every family trains and samples, trained and oracle rows);
#   2. a slice of nfe_sweep (its corpus and backbone; mdlm and flow_map, trained and oracle
#      rows, a few training steps);
#   3. every row finite; samples/s of ar_gpt2 and flow_map (NFE 1) at batch 1 and 256.
# Exits non-zero on any failure.
#
#   bash scripts/gpu_check.sh                # device cuda
#   bash scripts/gpu_check.sh --device cpu   # the same, smaller, on the CPU (run by the tests)
#
# Runs this checkout's code; models and results go to a temporary directory, removed at exit.
set -euo pipefail

device=cuda
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="${2:-}"; shift $(( $# > 1 ? 2 : 1 )) ;;
    --device=*) device="${1#*=}"; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (usage: gpu_check.sh [--device cpu|cuda])" >&2; exit 2 ;;
  esac
done
case "$device" in
  cpu|cuda) ;;
  *) echo "gpu_check: --device must be cpu or cuda, got '$device'" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export FLOWBENCH_CACHE="$work/cache"

"${PYTHON:-python}" - "$device" "$work" <<'EOF'
import csv
import math
import sys
import time
from pathlib import Path

import torch
import yaml

from flowbench.config import BackboneConfig, load_suite
from flowbench.data.language import HMMLanguage
from flowbench.plan import plan
from flowbench.registry import FAMILIES
from flowbench.runner import run_suite
from flowbench.trainer import precision_context, resolve_precision

device, work = sys.argv[1], Path(sys.argv[2])
if device == "cuda" and not torch.cuda.is_available():
    sys.exit("gpu_check: --device cuda but torch sees no CUDA device (torch.cuda.is_available() is False)")
small = device == "cpu"  # the CPU run keeps every path but shrinks sizes to seconds
t_start = time.perf_counter()


def check_rows(suite_path: Path) -> None:
    """Run a suite and fail unless it wrote one finite row per planned point."""
    csv_path = run_suite(suite_path, out=work / suite_path.stem, jobs=1 if small else None, progress=False)
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    expected = len(plan(load_suite(suite_path)))
    if len(rows) != expected:
        sys.exit(f"gpu_check: {suite_path.stem} wrote {len(rows)} rows, expected {expected}")
    for r in rows:
        cols = ["gen_ppl", "entropy", "nll_mean", "samples_per_s"] + (["val_loss"] if r["denoiser"] == "trained" else [])
        bad = [c for c in cols if not math.isfinite(float(r[c] or "nan"))]
        if bad or r["device"].split(":")[0] != device:
            sys.exit(f"gpu_check: {suite_path.stem} row {r['family']}/{r['denoiser']}/{r['sampler']} "
                     f"nfe={r['nfe']}: not finite {bad} or device {r['device']!r}")
    print(f"{suite_path.stem}: {len(rows)} row(s) finite on {device} ({rows[0]['precision']}), "
          f"{time.perf_counter() - t_start:.0f} s", flush=True)


# 1. the smoke suite (on the CPU its ar_gpt2 run only: the tests run all of it there anyway)
smoke = yaml.safe_load(Path("suites/smoke.yaml").read_text())
smoke["eval"]["device"] = device
if small:
    smoke["runs"] = [r for r in smoke["runs"] if r["family"] == "ar_gpt2"]
(work / "smoke.yaml").write_text(yaml.safe_dump(smoke))
check_rows(work / "smoke.yaml")

# 2. a slice of nfe_sweep: its corpus and backbone, a few steps
L, backbone = (8, dict(d_model=16, n_layers=1, n_heads=2)) if small else (32, dict(d_model=64, n_layers=3, n_heads=4))
n_eval = 8 if small else 64
slice_suite = {
    "name": "nfe_slice",
    "corpus": {"name": "hmm_language", "seq_len": L, "seed": 0},
    "backbone": backbone,
    "train": {"steps": 4 if small else 50, "batch_size": 8 if small else 64, "warmup_steps": 2,
              "eval_every": 50, "val_sequences": 16 if small else 64},
    "eval": {"num_samples": n_eval, "batch_size": n_eval, "judge": "exact", "device": device},
    "runs": [
        {"family": "mdlm", "denoiser": ["trained", "oracle"],
         "samplers": [{"sampler": "ancestral", "nfe": [1, 2] if small else [1, 8, 32]}]},
        {"family": "flow_map", "denoiser": ["trained", "oracle"],
         "samplers": [{"sampler": "flow_map", "nfe": [1] if small else [1, 4]}]},
    ],
}
(work / "nfe_slice.yaml").write_text(yaml.safe_dump(slice_suite))
check_rows(work / "nfe_slice.yaml")

# 3. sampling speed of untrained networks at the slice's sizes, as the runner times it
lang = HMMLanguage(seq_len=L, seed=0)
dev = torch.device(device)
for name, sampler, params in (("ar_gpt2", "kv_cache", {}), ("flow_map", "flow_map", {"nfe": 1})):
    cls = FAMILIES.get(name)
    fam = cls(params=cls.Params(), vocab_size=lang.vocab_size, seq_len=L)
    net = fam.build_model(BackboneConfig(**backbone)).to(dev).eval()
    sp = cls.samplers[sampler](**params)
    gen = torch.Generator(device=dev).manual_seed(0)
    with torch.inference_mode(), precision_context(resolve_precision("auto", dev), dev):
        for n in (1, 256):
            x = fam.sample(net, n=n, sampler=sampler, params=sp, generator=gen)  # warm-up
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            x = fam.sample(net, n=n, sampler=sampler, params=sp, generator=gen)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            seconds = time.perf_counter() - t0
            if x.shape != (n, L) or x.device.type != device:
                sys.exit(f"gpu_check: {name} sampled {tuple(x.shape)} on {x.device}, expected ({n}, {L}) on {device}")
            print(f"{name} batch {n}: {n / seconds:.1f} samples/s", flush=True)

print(f"gpu_check: ok ({device}, {time.perf_counter() - t_start:.0f} s)")
EOF
