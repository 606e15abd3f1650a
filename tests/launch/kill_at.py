"""For the fault tests: `arm(where)` makes this process SIGKILL itself the first time the run
gets to `where` (a real kill -9, at a chosen place); loaded with `--include`, it arms
$FLOWBENCH_KILL_AT:

    training    after 6 training steps (the last checkpoint was written at step 4)
    between     right after a job's first row reached its shard
    mid-row     after a row's samples were written, before its row
    merge       after collect merged one row into the leaderboard
"""
import os
import signal

import torch

from flowbench.leaderboard import Leaderboard



def die():
    os.kill(os.getpid(), signal.SIGKILL)


def after(count, point):
    """Wrap `point` (a callable) to die after its `count`-th call returns."""
    calls = 0

    def wrapped(*args, **kwargs):
        nonlocal calls
        result = point(*args, **kwargs)
        calls += 1
        if calls == count:
            die()
        return result

    return wrapped


def arm(where):
    if where == "training":
        torch.nn.utils.clip_grad_norm_ = after(6, torch.nn.utils.clip_grad_norm_)  # once per step
    elif where == "mid-row":
        Leaderboard.write_samples = after(2, Leaderboard.write_samples)
    elif where in ("between", "merge"):
        append = Leaderboard.append

        def append_then_die(self, row):
            append(self, row)
            if (self.dir.parent.name == "shards") == (where == "between"):  # a shard, or the leaderboard
                die()

        Leaderboard.append = append_then_die


arm(os.environ.get("FLOWBENCH_KILL_AT", ""))
