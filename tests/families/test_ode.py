import pytest
import torch

from flowbench.families.ode import STAGES, solve, steps_for


@pytest.mark.parametrize("solver", list(STAGES))
def test_velocity_3t2_integrates_to_t3_with_exact_call_count(solver):
    calls = []

    def velocity(t, x):
        calls.append(t)
        return 3 * t**2 * torch.ones_like(x)

    nfe = 16
    grid = torch.linspace(0, 1, steps_for(nfe, solver) + 1, dtype=torch.float64)
    x1 = solve(velocity, torch.zeros(3, dtype=torch.float64), grid, solver=solver)
    assert len(calls) == nfe
    tol = {"euler": 0.2, "midpoint": 0.02, "heun": 0.05, "rk4": 1e-9}[solver]
    assert x1 == pytest.approx(torch.ones(3, dtype=torch.float64), abs=tol)


def test_nfe_must_fit_the_solver():
    with pytest.raises(ValueError, match="multiple of 4"):
        steps_for(6, "rk4")
