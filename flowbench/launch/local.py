"""In-process launcher (the default): each job trains its model and evaluates its rows in a
worker of a process pool, so a model's rows appear as soon as it is trained (or, where the judge
is still training in another job, once it is ready: the job is queued again meanwhile)."""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing as mp

from flowbench.launch.job import DEFERRED, Job, run_job
from flowbench.launch.progress import Monitor
from flowbench.registry import load_builtins


class LocalLauncher:
    name = "local"
    waits = True  # returns when every job has ended

    def __init__(self, *, jobs: int):
        self.jobs = max(1, jobs)

    def launch(self, jobs: list[Job], *, progress: bool) -> dict[str, dict]:
        """Runs the jobs; returns {job name: {'job_id', 'log'}} for the submission record."""
        workers = min(self.jobs, len(jobs))
        with Monitor(jobs, workers=workers) if progress else contextlib.nullcontext():
            self._run(jobs, workers=workers, progress=progress)
        return {job.name: {"job_id": "local", "log": ""} for job in jobs}

    def _run(self, jobs: list[Job], *, workers: int, progress: bool) -> None:
        # the overall line holds the top row; the jobs' own bars go below it
        if workers <= 1:
            for job in jobs:
                run_job(job, position=1, progress=progress)
        else:
            # a job's thread count is its own (Job.threads, train.threads), not this pool's size,
            # which would change the trained bits. A spawned worker starts with an empty registry:
            # load the built-ins and the entries from outside the package (FLOWBENCH_INCLUDE is
            # inherited) before it unpickles a job
            # a job whose model is trained before the judge (trained by the judge's job beside it)
            # hands its evaluation back rather than wait: it runs again behind the queued jobs
            with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                        initializer=load_builtins) as pool:
                running = {pool.submit(run_job, job, position=1 + i % workers, progress=progress,
                                       defer_evaluation=True): (job, 1 + i % workers)
                           for i, job in enumerate(jobs)}
                while running:
                    done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        job, position = running.pop(fut)
                        if fut.result() == DEFERRED:  # re-raises a worker's error; the others still finish
                            running[pool.submit(run_job, job, position=position, progress=progress,
                                                requeued=True)] = (job, position)
