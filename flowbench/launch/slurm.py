"""Jobs through submitit: Slurm job arrays (`--launcher slurm`) or its DebugExecutor (`debug`).

Each job runs `run_job` in a `SuiteJob`, submitit's checkpointing protocol: on the preemption or
time-limit notice (USR2, `signal_delay_s` before the end) and on SIGTERM, training checkpoints at
the end of its current step and stops, and evaluation stops at the end of its current batch (the
row in progress is dropped, the rows written are kept); after USR2 the job hands over to
submitit's requeue, which calls `checkpoint()` to resubmit the same job, and the requeued job
resumes from that checkpoint and skips the rows its shard holds.
Every run submits into a new folder (`<out>/slurm/<time>`): Slurm restarts job ids on a fresh
state directory, and a reused folder named by job id could return an earlier run's result.
"""
from __future__ import annotations

import datetime as dt
import signal
from pathlib import Path

import submitit

from flowbench.launch.job import Job, LauncherError, run_job
from flowbench.launch.profile import ClusterProfile, load_profile
from flowbench.trainer import Interrupted, request_stop


class SuiteJob(submitit.helpers.Checkpointable):
    """The callable submitted for one job; `checkpoint()` (inherited) resubmits it unchanged,
    which is all a requeue needs: the state lives in the checkpoint and the shard on disk."""

    def __call__(self, job: Job) -> int:
        try:
            env = submitit.JobEnvironment()
        except RuntimeError:  # the DebugExecutor runs the job in this process, outside any job
            return run_job(job)
        distributed = env.num_tasks > 1
        if distributed:  # several tasks: one DDP training, rank 0 evaluates
            from flowbench.launch.ddp import init_distributed

            init_distributed(submitit.helpers.TorchDistributedEnvironment())
        # submitit requeues on USR2 at once, mid-step; stop at a step's or a batch's end, then hand over
        usr2 = env._usr_sig()
        requeue = signal.getsignal(usr2)
        received = []

        def notice(signum, frame):
            received.append(signum)
            request_stop()

        sigterm = signal.getsignal(signal.SIGTERM)
        signal.signal(usr2, notice)
        signal.signal(signal.SIGTERM, notice)
        try:
            # the job's own thread count (Job.threads, train.threads), not the task's CPUs: the
            # count changes the trained bits, and a cluster run should train the local run's model
            return run_job(job)
        except Interrupted as stopped:  # in training or in evaluation
            if usr2 in received and callable(requeue):
                print(f"{stopped}; requeueing", flush=True)
                requeue(usr2, None)  # checkpoint() -> requeue -> exit
            raise
        finally:
            signal.signal(usr2, requeue)
            signal.signal(signal.SIGTERM, sigterm)
            if distributed:
                import torch.distributed as dist

                dist.destroy_process_group()


class SubmititLauncher:
    def __init__(self, name: str, *, cluster: str | Path | None, out: Path):
        self.name = name
        self.waits = name == "debug"  # the DebugExecutor runs a job when its result is asked for
        self.profile = load_profile(cluster) if cluster else ClusterProfile()
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        self.folder = Path(out).resolve() / "slurm" / stamp
        self.submitted: list = []

    def launch(self, jobs: list[Job], *, progress: bool) -> dict[str, dict]:
        executor = submitit.AutoExecutor(folder=self.folder / "%j",
                                         cluster="debug" if self.name == "debug" else "slurm")
        if self.name == "slurm":
            executor.update_parameters(**self.profile.executor_parameters())
        size = self.profile.max_array_size
        for start in range(0, len(jobs), size):  # clusters cap array sizes (MaxArraySize)
            chunk = jobs[start:start + size]
            executor.update_parameters(name=f"flowbench-{Path(chunk[0].suite).stem}")
            with executor.batch():
                batch = [executor.submit(SuiteJob(), job) for job in chunk]
            self.submitted += list(zip(chunk, batch))
        if self.waits:
            self.wait()
        return {job.name: {"job_id": str(sj.job_id), "log": str(sj.paths.stderr)} for job, sj in self.submitted}

    def not_in_flight(self, points: list, key_of) -> list:
        """The points not queued or running in an earlier submission by any source (squeue, sacct);
        a point whose job failed, died or is unknown to all of them is submitted again."""
        if self.name != "slurm":
            return points
        from flowbench.launch.record import point_status

        try:
            busy = {e["row_key"] for e in point_status(Path(self.folder).parents[1])
                    if e["state"] in ("queued", "running")}
        except FileNotFoundError:
            return points
        return [p for p in points if key_of(p) not in busy]

    def wait(self) -> None:
        """Wait for every submitted job; one line per failed job, naming its log."""
        failed = []
        for job, sj in self.submitted:
            err = sj.exception()
            if err is not None:
                failed.append(f"{job.name} (job {sj.job_id}, log {sj.paths.stderr}): "
                              f"{str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__}")
        if failed:
            raise LauncherError(f"{len(failed)} of {len(self.submitted)} jobs failed: " + "; ".join(failed))
