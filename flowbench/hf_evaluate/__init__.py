"""The harness's gen PPL, entropy and MAUVE as Hugging Face `evaluate` modules (local scripts,
loaded offline): `evaluate.load(flowbench.hf_evaluate.path("mauve"))`. Each one calls the
harness's own metric code, so a number from `evaluate` is the number in the leaderboard."""
from __future__ import annotations

from pathlib import Path

MODULES = ("gen_ppl", "entropy", "mauve")


def path(name: str) -> str:
    """The folder `evaluate.load` reads for module `name`."""
    if name not in MODULES:
        raise KeyError(f"no evaluate module {name!r} (have: {', '.join(MODULES)})")
    return str(Path(__file__).parent / name)
