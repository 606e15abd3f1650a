"""`status` and `collect` read the shards of jobs that are still appending rows: they must never
change a shard (a reader that cut a partial last line would cut the row being written)."""
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from flowbench.launch.collect import collect
from flowbench.launch.record import save_record, status_lines
from flowbench.leaderboard import Leaderboard

ROOT = Path(__file__).parents[2]
ROWS = 30
# A job appending its rows, each (the first with the header) reaching the file in three flushes,
# as a large write on a shared filesystem may; it keeps what it wrote, to compare at the end.
WRITER = '''
import csv, io, sys, time
from flowbench.leaderboard import COLUMNS

shard, copy, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
written = ""
with open(shard, "a", newline="") as f:
    for i in range(n):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS)
        if i == 0:
            writer.writeheader()
        writer.writerow({"suite": "readers", "family": "mdlm", "seed": 0, "gen_ppl": 10.5 + i,
                         "row_key": f"row{i:03d}"})
        text = buf.getvalue()
        third = len(text) // 3
        for part in (text[:third], text[third:2 * third], text[2 * third:]):
            f.write(part)
            f.flush()
            time.sleep(0.01)
        written += text
open(copy, "w", newline="").write(written)
'''


def test_status_and_collect_in_a_loop_beside_an_appending_job_never_change_its_shard(tmp_path):
    out = tmp_path / "out"
    shard = out / "shards" / "mdlm-0" / "leaderboard.csv"
    shard.parent.mkdir(parents=True)
    points = [SimpleNamespace(row_key=f"row{i:03d}", label=f"mdlm nfe={i}") for i in range(ROWS)]
    submitted = SimpleNamespace(name="mdlm-0", points=points, shard=shard.parent, trains=False, cost=0.0, held=0.0)
    save_record(out, launcher="local", jobs=[submitted], ids={}, logs={})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    copy = tmp_path / "written.csv"
    job = subprocess.Popen([sys.executable, "-c", WRITER, str(shard), str(copy), str(ROWS)], env=env)
    partial = 0  # times a reader ran on a shard that ended in a partial line
    try:
        while job.poll() is None:
            partial += shard.exists() and not shard.read_bytes().endswith(b"\n")
            status_lines(out)
            collect(out)
    finally:
        job.wait(timeout=60)
    assert job.returncode == 0
    assert partial >= 3, "the readers never met a partial line: the test did not test them"
    assert shard.read_bytes() == copy.read_bytes()
    collect(out)
    merged = Leaderboard(out).rows()
    assert [r["row_key"] for r in merged] == [p.row_key for p in points]
    assert [float(r["gen_ppl"]) for r in merged] == [10.5 + i for i in range(ROWS)]
    assert status_lines(out)[-1].startswith(f"{ROWS} done")
