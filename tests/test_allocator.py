"""flowbench.allocator: freed (B, L, V) tensors stay in the process instead of being paged in anew."""
import subprocess
import sys

import pytest

CYCLES = """
import resource, sys, torch
from flowbench.allocator import M_MMAP_THRESHOLD, glibc, retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
else:  # glibc's starting threshold, held: every tensor a fresh mmap, as before the heap has grown
    assert glibc().mallopt(M_MMAP_THRESHOLD, 128 * 1024) == 1
def cycle():  # three (256, 32, 256) float64 tensors alive at once, as in a sampler step
    a = torch.ones(256, 32, 256, dtype=torch.float64)
    b, c = a + 1, a * 2
    return float((b - c).sum())
for _ in range(12):  # the heap settles into a layout that fits the cycle
    cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CYCLES, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_freed_tensors_are_reused_without_page_faults():
    tensor = 256 * 32 * 256 * 8 // 4096            # pages of one (256, 32, 256) float64 tensor
    fresh, retained = faults("mmap"), faults("retain")
    assert fresh >= 2 * tensor, fresh      # fresh mappings: the pages come anew, cycle after cycle
    assert retained <= tensor, retained    # kept: the same pages serve every cycle (one late move at most)
