"""The job worker's library: what one job does, whichever launcher runs it.

    checkpoints   cache_root, checkpoint_path / checkpoint_meta / load_trained, model_lock
    training      train_model (train, resume or reuse one model), training_cost, measured_cost
    evaluation    evaluate (one point -> one row and its samples), CallCounter
    keys          row_key_function (point -> row key)
    provenance    git_sha, environment (torch, CPU ISA, threads), json_cell

It sits below flowbench/launch/ (whose job.py calls it) and above the families, the trainer,
the backbone, the metrics and the plan (docs/architecture.md); it never imports the runner
or a launcher.
"""
from flowbench.worker.checkpoints import cache_root, checkpoint_meta, checkpoint_path, load_trained, model_lock
from flowbench.worker.evaluation import CallCounter, evaluate
from flowbench.worker.keys import row_key_function
from flowbench.worker.provenance import environment, git_sha, json_cell
from flowbench.worker.training import held_cost, measured_cost, train_model, training_cost

__all__ = ["CallCounter", "cache_root", "checkpoint_meta", "checkpoint_path", "environment",
           "evaluate", "git_sha", "json_cell", "load_trained", "measured_cost", "model_lock",
           "row_key_function", "train_model", "training_cost"]
