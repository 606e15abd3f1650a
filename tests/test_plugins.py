"""Families and corpora from outside the package: `--include PATH` and entry points, loaded in
the spawned training workers too."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flowbench.plugins import PluginError, load_path
from flowbench.samples import row_ids

ROOT = Path(__file__).parents[1]
SMOKE = yaml.safe_load((ROOT / "suites" / "smoke.yaml").read_text())

# A corpus only the included folder knows: a worker that did not load the folder cannot even
# build the data, whatever its unpickled task happened to import.
TINY_CORPUS = '''
from flowbench.data.language import HMMLanguage
from flowbench.registry import CORPORA


@CORPORA.register("tiny_hmm")
class TinyHMM(HMMLanguage):
    def __init__(self, **kw):
        super().__init__(n_topics=2, **kw)
'''

# A family with no decorator: only its entry point registers it, under the entry point's name.
EP_FAMILY = '''
from pydantic import Field

from baselines.mdlm import MDLM, MDLMParams


class EPParams(MDLMParams):
    width: int = Field(1, description="unused; tells models apart")


class EPMDLM(MDLM):
    Params = EPParams
'''


def installed_package(site: Path) -> None:
    """A package as pip would install it: the module and a dist-info declaring its entry point."""
    site.mkdir()
    (site / "ep_family.py").write_text(EP_FAMILY)
    info = site / "ep_family-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-family\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[flowbench.families]\nep_mdlm = ep_family:EPMDLM\n")


def test_families_from_a_folder_and_an_entry_point_train_in_two_workers(tmp_path):
    mine = tmp_path / "my_families"  # outside the package
    mine.mkdir()
    shutil.copy(ROOT / "examples" / "my_families" / "maskgit.py", mine)  # docs/plugins.md's example
    (mine / "tiny_corpus.py").write_text(TINY_CORPUS)
    site = tmp_path / "site"
    installed_package(site)
    suite = {**SMOKE, "name": "outside", "corpus": {"name": "tiny_hmm", "seq_len": 8, "seed": 0},
             "runs": [{"family": "maskgit", "samplers": [{"sampler": "confidence", "nfe": [1, 2]}]},
                      {"family": "ep_mdlm", "samplers": [{"sampler": "ancestral", "nfe": 2}]}]}
    (tmp_path / "outside.yaml").write_text(yaml.safe_dump(suite))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "FLOWBENCH_CACHE": str(tmp_path / "cache")}
    env.pop("FLOWBENCH_INCLUDE", None)
    proc = subprocess.run([sys.executable, "-m", "flowbench", "run", "outside.yaml", "--include", str(mine),
                           "--jobs", "2", "--no-progress"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / "results" / "outside" / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["family"], r["nfe"]) for r in rows) == [("ep_mdlm", "2"), ("maskgit", "1"), ("maskgit", "2")]
    assert all(int(r["train_steps"]) == 2 for r in rows)
    assert {p.name.split("-")[0] for p in (tmp_path / "cache" / "models").glob("*.pt")} == {"maskgit", "ep_mdlm"}


def test_an_include_shadowed_by_an_installed_module_fails_in_one_line(tmp_path):
    (tmp_path / "json.py").write_text("raise AssertionError('never imported: json is the stdlib one')\n")
    with pytest.raises(PluginError, match=r"module name 'json' is already taken.*rename the file"):
        load_path(tmp_path / "json.py")


# A metric with a column the leaderboard does not know, registered the way a user's file would.
DISTINCT_IDS = '''
from flowbench.metrics import metric


@metric("distinct_ids", higher_is_better=True)
def distinct_ids(*, tokens, nll, mask):
    """Mean share of distinct ids in a sample."""
    return {"distinct_ids": sum(len(set(row.tolist())) for row in tokens) / tokens.numel()}
'''
PLANNED_KEYS = '''
import json, sys
from flowbench.config import load_suite
from flowbench.plan import plan
from flowbench.plugins import include
from flowbench.registry import METRICS
from flowbench.worker import row_key_function

include(sys.argv[2:])
suite = load_suite(sys.argv[1])
key_of = row_key_function(suite)
print(json.dumps({"metrics": METRICS.names(), "keys": sorted(key_of(p) for p in plan(suite))}))
'''


def test_a_metric_from_an_include_adds_its_column_and_leaves_other_suites_keys(tmp_path):
    (tmp_path / "distinct.py").write_text(DISTINCT_IDS)
    suite = {**SMOKE, "name": "with_metric", "eval": {**SMOKE["eval"], "metrics": ["gen_ppl", "entropy", "distinct_ids"]}}
    (tmp_path / "with_metric.yaml").write_text(yaml.safe_dump(suite))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "FLOWBENCH_CACHE": str(tmp_path / "cache")}
    env.pop("FLOWBENCH_INCLUDE", None)
    proc = subprocess.run([sys.executable, "-m", "flowbench", "run", "with_metric.yaml", "--include", "distinct.py",
                           "--only", "family=mdlm", "--jobs", "1", "--no-progress"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "results" / "with_metric"
    with open(out / "leaderboard.csv", newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    assert header[-1] == "distinct_ids" and len(rows) == 6  # 3 trained and 3 oracle mdlm points
    for r in rows:  # the column holds the metric of the row's own samples
        ids = row_ids(out, r["row_key"])  # (N, L)
        expected = sum(len(set(s.tolist())) for s in ids) / ids.numel()
        assert float(r["distinct_ids"]) == pytest.approx(expected) and r["entropy"]
    # a suite that does not name the metric plans the same keys with the metric installed or not
    planned = [json.loads(subprocess.run([sys.executable, "-c", PLANNED_KEYS, str(ROOT / "suites" / "smoke.yaml"),
                                          *include], cwd=tmp_path, env=env, capture_output=True, text=True,
                                         check=True).stdout)
               for include in ([], [str(tmp_path / "distinct.py")])]
    assert "distinct_ids" not in planned[0]["metrics"] and "distinct_ids" in planned[1]["metrics"]
    assert planned[0]["keys"] == planned[1]["keys"]
