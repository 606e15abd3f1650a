import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Each test gets its own cache directory, so nothing leaks between tests."""
    monkeypatch.setenv("FLOWBENCH_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_language():
    """A small instance of the embedded language for oracle checks (short sequences)."""
    from flowbench.data.language import HMMLanguage

    return HMMLanguage(seq_len=6, seed=0)


@pytest.fixture(scope="session")
def micro_language():
    """Fewer topics (V = 100) and 4 tokens: cheap enough for oracle samplers at hundreds of steps."""
    from flowbench.data.language import HMMLanguage

    return HMMLanguage(seq_len=4, seed=0, n_topics=2)
