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


@pytest.fixture
def one_thread():
    """Small tensors: one thread is faster, and the machine is shared (pytestmark usefixtures)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


@pytest.fixture
def smoke_suite(tmp_path):
    """write(name="suite.yaml", **changes): suites/smoke.yaml with dotted keys replaced
    (a.b.0.c: a list index) written under tmp_path; returns its path."""
    from pathlib import Path

    import yaml

    smoke = Path(__file__).parents[1] / "suites" / "smoke.yaml"

    def write(name: str = "suite.yaml", **changes):
        data = yaml.safe_load(smoke.read_text())
        for dotted, value in changes.items():
            node = data
            *path, last = dotted.split(".")
            for key in path:
                node = node[int(key)] if key.isdigit() else node[key]
            node[last] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        return path

    return write


@pytest.fixture
def conditioned_network():
    """network(fam, seed=0): a small backbone for `fam` with non-zero conditioning (adaLN-Zero
    starts time-blind, which would hide a swapped time argument)."""
    from flowbench.config import BackboneConfig

    def network(fam, seed=0):
        torch.manual_seed(seed)
        model = fam.build_model(BackboneConfig(d_model=32, n_layers=1, n_heads=2))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "ada" in name:
                    p.normal_(0, 0.05)
        return model.eval()

    return network
