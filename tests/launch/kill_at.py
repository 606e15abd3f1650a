"""For the fault tests: `arm(where)` makes this process SIGKILL itself the first time the run
gets to `where` (a real kill -9, at a chosen place); loaded with `--include`, it arms
$FLOWBENCH_KILL_AT:

    training    after 6 training steps (the last checkpoint was written at step 4)
    between     right after a job's first row reached its shard
    mid-row     after a row's samples were written, before its row
    merge       after collect merged one row into the leaderboard

and one that sends, rather than kills:

    notice-mid-row  SIGUSR2 (Slurm's time-limit notice) to itself in the first sampled batch
                    of the row after the first one that reached its shard
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
    elif where == "notice-mid-row":
        from flowbench.worker import CallCounter

        append, call = Leaderboard.append, CallCounter.__call__
        seen = {"rows": 0, "runs": 0}  # shard rows; sampling runs of the next row (warm-up, batches)

        def append_and_count(self, row):
            append(self, row)
            seen["rows"] += self.dir.parent.name == "shards"

        def call_then_notice(self, *args, **kwargs):
            if seen["rows"] == 1 and self.calls == 0:  # a sampling run of the second row begins
                seen["runs"] += 1
                if seen["runs"] == 2:  # its first timed batch, after the warm-up
                    os.kill(os.getpid(), signal.SIGUSR2)
            return call(self, *args, **kwargs)

        Leaderboard.append = append_and_count
        CallCounter.__call__ = call_then_notice


arm(os.environ.get("FLOWBENCH_KILL_AT", ""))
