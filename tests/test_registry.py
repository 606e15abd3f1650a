import subprocess
import sys

import pytest

from flowbench.families.base import Family
from flowbench.registry import FAMILIES, Registry, RegistryError


def test_unknown_name_suggests_the_close_one():
    with pytest.raises(RegistryError, match="did you mean 'mdlm'"):
        FAMILIES.get("mdml")


def test_duplicate_and_wrong_base_rejected():
    reg = Registry("family", base=Family)

    @reg.register("a")
    class A(Family):
        pass

    with pytest.raises(ValueError, match="registered twice"):
        @reg.register("a")
        class B(Family):
            pass

    with pytest.raises(TypeError, match="must subclass"):
        @reg.register("c")
        class C:
            pass


def test_cli_list_shows_builtins():
    out = subprocess.run([sys.executable, "-m", "flowbench", "list"], capture_output=True, text=True,
                         check=True).stdout
    for name in ("ar_gpt2", "mdlm", "hmm_language", "exact", "gen_ppl"):
        assert name in out
