"""What the repository says about itself: no path of one machine anywhere, and every command the
README shows runs (the cheap ones for real, the expensive ones through the real command-line
parser, with the files they name loaded)."""
import argparse
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
# run for real in a scratch folder: seconds each (the smoke suite trains every family two steps)
CHEAP = (("list",), ("report", "--readme"), ("run", "suites/smoke.yaml"))


def test_no_path_of_one_machine_in_tracked_files():
    pattern = "(/" + "|/".join(("work/", "tmp/", "root/", "home/")) + ")[A-Za-z]"
    proc = subprocess.run(["git", "grep", "--untracked", "-nE", pattern], cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode > 1:
        pytest.skip(f"not a git checkout ({proc.stderr.strip()})")
    assert proc.stdout == "", proc.stdout


def shown_lines(markdown: str) -> list[str]:
    """Every line of the markdown's ```bash blocks, comments dropped."""
    lines = []
    for block in re.findall(r"^```bash\n(.*?)^```", markdown, flags=re.S | re.M):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def shown_commands(markdown: str) -> list[str]:
    """Each command of those lines (a line may chain several with &&)."""
    return [c.strip() for line in shown_lines(markdown) for c in line.split("&&")]


class _Parsed(Exception):
    def __init__(self, args):
        self.args_ = args


def parse_flowbench(argv: list[str]) -> argparse.Namespace:
    """flowbench's own parser on argv, stopped before the command runs."""
    from flowbench import __main__ as cli

    original = argparse.ArgumentParser.parse_args

    def stop(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    with mock.patch.object(argparse.ArgumentParser, "parse_args", stop):
        try:
            cli.main(argv)
        except _Parsed as parsed:
            return parsed.args_
        except SystemExit as err:
            raise AssertionError(f"`flowbench {' '.join(argv)}`: flowbench rejects it (exit {err.code})") from None
    raise AssertionError(f"`flowbench {' '.join(argv)}` ran without parsing its arguments")


def check_flowbench(argv: list[str], *, root: Path) -> None:
    """The arguments parse, the files they name exist, and a run's suite (and cluster profile)
    load and plan."""
    args = parse_flowbench(argv)
    for value in vars(args).values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item.endswith((".yaml", ".yml", ".py", ".md", ".csv")):
                assert (root / item).is_file(), f"`flowbench {' '.join(argv)}` names {item}, which does not exist"
    if args.command == "run":
        from flowbench.config import load_suite
        from flowbench.plan import plan

        assert plan(load_suite(root / args.suite)), f"{args.suite} plans no point"
        if args.cluster:
            from flowbench.launch.profile import load_profile

            load_profile(root / args.cluster)


def check_command(command: str, *, root: Path = ROOT) -> str:
    """'parsed' or 'ran'-able ('cheap') for a command the README may show; AssertionError for
    one that does not exist or names something missing."""
    words = shlex.split(command)
    if words[:3] == ["python", "-m", "flowbench"]:
        check_flowbench(words[3:], root=root)
        argv = words[3:]
        cheap = any(argv[0] == c[0] and all(w in argv for w in c[1:]) for c in CHEAP)
        return "cheap" if cheap else "parsed"
    if words[:4] == ["python", "-m", "pip", "install"]:
        target = words[-1]
        path, _, extras = target.partition("[")
        assert words[4:-1] in ([], ["-e"]) and (root / path / "pyproject.toml").is_file(), f"`{command}`: not an install of this package"
        declared = tomllib.loads((root / "pyproject.toml").read_text())["project"].get("optional-dependencies", {})
        for extra in filter(None, extras.rstrip("]").split(",")):
            assert extra in declared, f"`{command}`: the package declares no extra {extra!r}"
        return "parsed"
    if words[:3] == ["python", "-m", "pytest"]:
        assert importlib.util.find_spec("pytest"), "pytest is not installed"
        return "parsed"
    if words[0] in ("bash", "python") and len(words) > 1 and words[1].endswith((".sh", ".py")):
        assert (root / words[1]).is_file(), f"`{command}`: no file {words[1]}"
        return "parsed"
    raise AssertionError(f"the README shows `{command}`, which is no command of this project")


def test_the_readme_shows_the_main_commands_and_ci_runs_its_test_command():
    lines = shown_lines(README.read_text())
    assert "python -m flowbench run suites/nfe_sweep.yaml" in lines
    assert any(line.startswith("python -m flowbench run suites/nfe_sweep.yaml --launcher slurm") for line in lines)
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] in lines, f".ci/run runs {ci[-1]!r}, which the README does not show"
    assert re.search(r"^models \d+/\d+ trained, rows \d+/\d+, .* elapsed, ~.* left$", README.read_text(), re.M), \
        "the README shows no example of run's progress line"


def test_every_command_the_readme_shows_parses():
    commands = shown_commands(README.read_text())
    assert len(commands) >= 5
    kinds = {c: check_command(c) for c in commands}
    assert sum(k == "cheap" for k in kinds.values()) >= 2, kinds


def test_a_command_that_does_not_exist_fails_the_check():
    for command in ("python -m flowbench frobnicate results/nfe_sweep",
                    "python -m flowbench run suites/no_such_suite.yaml",
                    "python -m flowbench run suites/nfe_sweep.yaml --no-such-flag",
                    "python -m flowbench run suites/nfe_sweep.yaml --launcher slurm --cluster slurm/nowhere.yaml",
                    'python -m pip install -e ".[no_such_extra]"',
                    "flowbench-train suites/nfe_sweep.yaml"):
        with pytest.raises(AssertionError):
            check_command(command)


def test_the_cheap_commands_run(tmp_path):
    """The README's cheap commands, exactly as shown, in a scratch folder holding the project's
    suites, profiles and references (read only) and a copy of the README."""
    for name in ("suites", "slurm", "scripts", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "reference").symlink_to(ROOT / "results" / "reference")
    shutil.copy(README, tmp_path / "README.md")
    env = {**os.environ, "FLOWBENCH_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cheap = [c for c in shown_commands(README.read_text()) if check_command(c) == "cheap"]
    for command in cheap:
        argv = [sys.executable, *shlex.split(command)[1:]]
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"`{command}` failed:\n{proc.stderr[-2000:]}"
    # the generator rewrote the copy's headline table: the committed one is what it writes
    assert (tmp_path / "README.md").read_text() == README.read_text()
