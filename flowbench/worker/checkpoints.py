"""Where a worker keeps what it makes: the cache root, and one checkpoint per model named by its key.

Models are cached under a hash of exactly the fields that affect training
(<cache>/models/<family>-<key>.pt), and every load checks the fields the checkpoint saved.
Training a model holds `<checkpoint>.lock` (`model_lock`): two runs that share a model (two
suites, or a local run beside a Slurm job) train it once, the second waiting for the first's
final checkpoint.
"""
from __future__ import annotations

import os
from pathlib import Path

from flowbench.locks import locked
from flowbench.plan import ModelSpec
from flowbench.trainer import CheckpointError, load_checkpoint, same_identity


def cache_root() -> Path:
    """$FLOWBENCH_CACHE, default .cache/flowbench: checkpoints, corpora, judges, floors."""
    return Path(os.environ.get("FLOWBENCH_CACHE", ".cache/flowbench"))


def checkpoint_meta(spec: ModelSpec) -> dict:
    """What a model's checkpoint saves and is checked against on every load: its identity
    (whose hash is its key) and, for people, its label."""
    return {"label": spec.label, **spec.identity()}


def checkpoint_path(spec: ModelSpec) -> Path:
    """models/<family>-<key>.pt. A checkpoint an older flowbench named by the key's first 6 hex
    characters is moved here if it holds this model; one that holds another model stays where it is."""
    path = cache_root() / "models" / f"{spec.label}.pt"
    legacy = path.with_name(f"{spec.family}-{spec.key[:6]}.pt")
    if not path.exists() and legacy.exists():
        try:
            if same_identity(load_checkpoint(legacy).get("meta") or {}, checkpoint_meta(spec)):
                os.replace(legacy, path)
        except (CheckpointError, FileNotFoundError):
            pass  # unreadable (not known to be this model's), or moved here by another process meanwhile
    return path


def load_trained(spec: ModelSpec) -> dict:
    """The finished checkpoint of `spec`, refused if it holds another model."""
    return load_checkpoint(checkpoint_path(spec), meta=checkpoint_meta(spec))


def model_lock(checkpoint: Path):
    """Held while a model trains: a second trainer of the same checkpoint waits, then finds it done."""
    def say(holder: str) -> None:
        print(f"{checkpoint.stem}: being trained by pid {holder}; waiting for its checkpoint", flush=True)

    return locked(checkpoint.with_suffix(".lock"), on_wait=say)
