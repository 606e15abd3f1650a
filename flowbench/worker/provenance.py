"""Where a row came from: the code's commit and the machine facts its last bits depend on."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import torch


def git_sha() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             check=True, cwd=Path(__file__).parent).stdout.strip()
        # "-dirty" flags changed code; committed reference results being rewritten do not count
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/",
                                ":(exclude,top)results"], capture_output=True, text=True,
                               cwd=Path(__file__).parent).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment() -> dict:
    """What a trained row's last bits depend on, for `compare` (flowbench/compare.py)."""
    return {"torch": torch.__version__, "cpu_isa": torch.backends.cpu.get_cpu_capability(),
            "eval_threads": torch.get_num_threads()}


def json_cell(d: dict) -> str:
    """A dict as one leaderboard cell: sorted-key JSON, empty for an empty dict."""
    return json.dumps(d, sort_keys=True) if d else ""
