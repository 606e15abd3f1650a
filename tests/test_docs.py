"""What the repository says about itself: no path of one machine anywhere."""
import subprocess
from pathlib import Path

import pytest


def test_no_path_of_one_machine_in_tracked_files():
    pattern = "(/" + "|/".join(("work/", "tmp/", "root/", "home/")) + ")[A-Za-z]"
    proc = subprocess.run(["git", "grep", "--untracked", "-nE", pattern], cwd=Path(__file__).parents[1],
                          capture_output=True, text=True)
    if proc.returncode > 1:
        pytest.skip(f"not a git checkout ({proc.stderr.strip()})")
    assert proc.stdout == "", proc.stdout
