"""Command line: `python -m flowbench list`, `run SUITE.yaml`, `status RESULTS`, `collect RESULTS`,
`steer SUITE.yaml`, `compare RUN REFERENCE`, `report RESULTS`, `leaderboard RESULTS... --out CSV`,
`score SAMPLES --corpus ...` and `bench [BENCH.yaml]`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

INCLUDE_HELP = ("a .py module or a folder of modules registering families, corpora, judges or "
                "metrics from outside the package (repeatable; also loaded by every worker)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="print every registered family, corpus, judge and metric")
    ls.add_argument("--verbose", "-v", action="store_true",
                    help="each family's parameters and samplers with defaults and descriptions")
    ls.add_argument("--include", action="append", default=[], metavar="PATH", help=INCLUDE_HELP)
    run = sub.add_parser("run", help="run a suite in-process")
    run.add_argument("suite")
    run.add_argument("--out", help="output directory (default results/<suite name>)")
    run.add_argument("--only", action="append", default=[], metavar="family=NAME",
                     help="restrict to one family")
    run.add_argument("--jobs", type=int, help="parallel training processes (default: CPU count; 1 on a GPU)")
    run.add_argument("--threads", type=int, metavar="N",
                     help="intra-op torch threads of every job's process (default: the suite's train.threads, 1)")
    run.add_argument("--include", action="append", default=[], metavar="PATH", help=INCLUDE_HELP)
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--launcher", default="local", choices=("local", "debug", "slurm"),
                     help="local: process pool here (default); debug: submitit's DebugExecutor; "
                          "slurm: submitit job arrays (returns after submission unless --wait)")
    run.add_argument("--cluster", metavar="PROFILE", help="cluster profile for --launcher slurm, e.g. slurm/local.yaml")
    run.add_argument("--wait", action="store_true", help="with --launcher slurm: wait for the jobs and collect")
    for name, text in (("status", "each point of a submitted run: done, queued, running, failed or unknown"),
                       ("collect", "merge the finished jobs' rows into the leaderboard")):
        sub.add_parser(name, help=text).add_argument("results", help="a results folder, e.g. results/smoke")
    steer = sub.add_parser("steer", help="run a steering suite (reward alignment; flowbench/steering)")
    steer.add_argument("suite")
    steer.add_argument("--out", help="output directory (default results/<suite name>)")
    steer.add_argument("--no-progress", action="store_true")
    cmp = sub.add_parser("compare", help="identical, within noise or inconsistent: a run's rows against a "
                                         "reference's (exit code 1 if inconsistent; docs/compare.md)")
    cmp.add_argument("run", help="a results folder or its leaderboard.csv, e.g. results/nfe_sweep")
    cmp.add_argument("reference", help="e.g. results/reference/nfe_sweep")
    cmp.add_argument("--alpha", type=float, default=None,
                     help="family-wise error of the trained rows' noise tests, Holm-corrected (default 0.01)")
    cmp.add_argument("--rtol", type=float, default=None,
                     help="relative tolerance of the exact tier: oracle metrics (default 1e-6)")
    _add_report_commands(sub)
    bench = sub.add_parser("bench", help="what each family costs: sampler overhead, latency by batch and "
                                         "NFE, training tokens/s, memory, scaling (flowbench/bench/)")
    bench.add_argument("config", nargs="?", default="suites/bench.yaml")
    bench.add_argument("--out", help="output directory (default results/<bench name>)")
    bench.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    from flowbench.allocator import retain_freed_memory
    retain_freed_memory()  # every command: no fresh page faults for each (B, L, V) tensor

    if args.command == "compare":
        return _compare(args)
    if args.command == "steer":
        return _steer(args)
    if args.command in ("report", "leaderboard", "score"):
        return _report_commands(args)
    if args.command == "bench":
        return _bench(args)
    if args.command in ("status", "collect"):
        return _status_or_collect(args)

    from flowbench.plugins import PluginError, include
    from flowbench.registry import CORPORA, FAMILIES, JUDGES, METRICS, RegistryError

    try:
        include(args.include)
        if args.command == "list":
            return _list(verbose=args.verbose, registries=(FAMILIES, CORPORA, JUDGES, METRICS))
    except (PluginError, RegistryError) as err:
        print(f"flowbench: error: {err}", file=sys.stderr)
        return 2

    from flowbench.config import SuiteError
    from flowbench.data.corpus import CorpusError
    from flowbench.judges import JudgeError
    from flowbench.report import write_report
    from flowbench.runner import run_suite
    from flowbench.trainer import CheckpointError

    only = {}
    for item in args.only:
        key, _, value = item.partition("=")
        if key != "family" or not value:
            parser.error(f"--only takes family=NAME, got {item!r}")
        only[key] = value
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads takes a positive count, got {args.threads}")
    from flowbench.launch import LauncherError
    from flowbench.launch.collect import RunLockedError
    from flowbench.launch.job import JobError
    from flowbench.launch.profile import ProfileError

    try:
        csv_path = run_suite(args.suite, out=args.out, only=only or None, jobs=args.jobs,
                             progress=not args.no_progress, launcher=args.launcher, cluster=args.cluster,
                             wait=args.wait, threads=args.threads)
    except (SuiteError, CorpusError, JudgeError, RegistryError, CheckpointError, PluginError,
            LauncherError, ProfileError, RunLockedError, JobError) as err:
        print(f"flowbench: error: {err}", file=sys.stderr)
        return 2
    if args.launcher == "slurm" and not args.wait:
        from flowbench.launch.record import status_lines

        print(status_lines(csv_path.parent)[-1])
        print(f"follow with: python -m flowbench status {csv_path.parent}; "
              f"then: python -m flowbench collect {csv_path.parent}")
        return 0
    print(write_report(csv_path))
    _reference_summary(csv_path, only=only)
    return 0


def _status_or_collect(args) -> int:
    from flowbench.launch.collect import collect
    from flowbench.launch.record import status_lines

    out = Path(args.results)
    if not out.is_dir():
        print(f"flowbench: error: no results folder {out}", file=sys.stderr)
        return 2
    if args.command == "collect":
        print(f"{collect(out)} rows added to {out / 'leaderboard.csv'}")
        return 0
    try:
        print("\n".join(status_lines(out)))
    except FileNotFoundError as err:
        print(f"flowbench: error: {err}", file=sys.stderr)
        return 2
    return 0


def _list(*, verbose: bool, registries) -> int:
    for reg in registries:
        print(f"{reg.kind}: {', '.join(reg.names())}")
    if verbose:
        from flowbench.describe import describe_family

        families = registries[0]
        for name in families.names():
            print()
            print("\n".join(describe_family(families.get(name))))
    return 0


def _steer(args) -> int:
    from flowbench.config import SuiteError
    from flowbench.registry import RegistryError
    from flowbench.steering.report import summary, write_table
    from flowbench.steering.run import run_steering
    from flowbench.trainer import CheckpointError

    try:
        csv_path = run_steering(args.suite, out=args.out, progress=not args.no_progress)
    except (SuiteError, RegistryError, CheckpointError) as err:
        print(f"flowbench: error: {err}", file=sys.stderr)
        return 2
    write_table(csv_path)
    print(summary(csv_path))
    return 0


def _compare(args) -> int:
    from flowbench.compare import DEFAULT_ALPHA, DEFAULT_RTOL, CompareError, compare, stale_reason

    try:
        result = compare(args.run, args.reference, rtol=DEFAULT_RTOL if args.rtol is None else args.rtol,
                         alpha=DEFAULT_ALPHA if args.alpha is None else args.alpha)
    except CompareError as err:
        print(f"flowbench: error: {err}", file=sys.stderr)
        return 2
    if (why := stale_reason(args.reference)) is not None:  # compared all the same, on request
        print(f"note: {args.reference} awaits recomputation ({why}); rows whose keys moved differ",
              file=sys.stderr)
    print("\n".join(result.lines()))
    return 0 if result.ok else 1


def _bench(args) -> int:
    from flowbench.bench import run_bench
    from flowbench.config import SuiteError
    from flowbench.registry import RegistryError

    try:
        csv_path = run_bench(args.config, out=args.out, progress=not args.no_progress)
    except (SuiteError, RegistryError) as err:
        print(f"flowbench: error: {err}", file=sys.stderr)
        return 2
    print((csv_path.parent / "summary.md").read_text())
    print(f"wrote {csv_path} and its PNGs")
    return 0


def _reference_summary(csv_path: Path, *, only: dict) -> None:
    """One line comparing the run with results/reference/<suite>/, when that exists."""
    import csv

    from flowbench.compare import compare, reference_for, stale_reason

    with open(csv_path, newline="") as f:
        suite = next(csv.DictReader(f), {}).get("suite")
    reference = reference_for(suite) if suite else None
    if reference is None or reference.resolve() == Path(csv_path).resolve():
        return
    if (why := stale_reason(reference)) is not None:
        print(f"not compared with {reference.parent}: it awaits recomputation ({why})")
        return
    families = {only["family"]} if only.get("family") else None
    print(compare(csv_path, reference, families=families).summary()
          + f" (details: python -m flowbench compare {Path(csv_path).parent} {reference.parent})")


def _add_report_commands(sub) -> None:
    rep = sub.add_parser("report", help="write report.md and PNGs beside a leaderboard")
    rep.add_argument("results", help="a results folder or its leaderboard.csv, e.g. results/nfe_sweep")
    rep.add_argument("--readme", metavar="README",
                     help="instead of report.md, rewrite the headline table between this file's markers")
    lb = sub.add_parser("leaderboard", help="merge the leaderboards of several suites into one CSV")
    lb.add_argument("results", nargs="+", help="results folders or leaderboard.csv files")
    lb.add_argument("--out", required=True, help="the merged CSV (a report can be written beside it)")
    sc = sub.add_parser("score", help="score samples produced elsewhere with the harness's metrics")
    sc.add_argument("samples", help="a row's .npy.xz samples file, a .jsonl file (records with 'ids' or 'text'), "
                                    "a .txt file (one per line), or a results folder with --row")
    sc.add_argument("--row", metavar="ROW_KEY", help="the row of the results folder SAMPLES to score "
                                                      "(its own file or the folder's packed samples)")
    sc.add_argument("--corpus", required=True, help="a suite file, or a mapping like '{name: hmm_language, seq_len: 32}'")
    sc.add_argument("--judge", help="judge name (default: the suite's, else exact)")
    sc.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and k-means")
    sc.add_argument("--text", type=int, default=0, metavar="N",
                    help="also print the first N samples as text (decoded with the corpus)")
    sc.add_argument("--out", help="also append the row to this CSV (without the text)")


def _report_commands(args) -> int:
    from flowbench.config import SuiteError
    from flowbench.data.corpus import CorpusError
    from flowbench.judges import JudgeError
    from flowbench.registry import RegistryError
    from flowbench.report import ReportError, merge, write_report
    from flowbench.score import ScoreError

    try:
        if args.command == "report" and args.readme:
            from flowbench.report.headline import write_readme

            print(write_readme(args.results, args.readme))
        elif args.command == "report":
            print(write_report(args.results))
        elif args.command == "leaderboard":
            print(merge(args.results, args.out))
        else:
            import json

            from flowbench.score import score_file
            from flowbench.worker import cache_root

            row = score_file(args.samples, corpus_spec=args.corpus, judge=args.judge, seed=args.seed,
                             cache_dir=cache_root(), text=args.text, row=args.row)
            print(json.dumps(row, indent=1))
            if args.out:
                import pandas as pd

                out = Path(args.out)
                row.pop("text", None)
                pd.DataFrame([row]).to_csv(out, mode="a", header=not out.exists(), index=False)
    except (ReportError, ScoreError, SuiteError, CorpusError, JudgeError, RegistryError) as err:
        print(f"flowbench: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
