"""In-process launcher (the default): each job trains its model and evaluates its rows in a
worker of a process pool, so a model's rows appear as soon as it is trained."""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing as mp

from flowbench.launch.job import Job, run_job
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
            with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                        initializer=load_builtins) as pool:
                futures = [pool.submit(run_job, job, position=1 + i % workers, progress=progress)
                           for i, job in enumerate(jobs)]
                for fut in cf.as_completed(futures):
                    fut.result()  # re-raise a worker's error here; the others still finish
