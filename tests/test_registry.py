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


def test_cli_list_verbose_describes_every_parameter(capsys):
    from flowbench.__main__ import main
    from flowbench.describe import missing

    assert main(["list", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "schedule = 'loglinear'  -- kappa_t" in out  # mdlm: default and the comment above it
    assert "t_star = 0.3  -- ode steps while t < t_star" in out  # kl_flow hybrid: a trailing comment
    assert "eps = 0.001  -- t is clamped to [eps, 1 - eps]" in out  # dfm: its class docstring
    assert "nfe required  -- function evaluations" in out  # inherited from SamplerParams
    for name in FAMILIES.names():
        cls = FAMILIES.get(name)
        for model in (cls.Params, *cls.samplers.values()):
            assert not missing(model), f"{name}: {model.__name__} fields without a description: {missing(model)}"
