"""Command line: `python -m flowbench list` and `python -m flowbench run SUITE.yaml`."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print every registered family, corpus, judge and metric")
    run = sub.add_parser("run", help="run a suite in-process")
    run.add_argument("suite")
    run.add_argument("--out", help="output directory (default results/<suite name>)")
    run.add_argument("--only", action="append", default=[], metavar="family=NAME",
                     help="restrict to one family")
    run.add_argument("--jobs", type=int, help="parallel training processes (default: CPU count; 1 on a GPU)")
    run.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from flowbench.registry import CORPORA, FAMILIES, JUDGES, METRICS

    if args.command == "list":
        for reg in (FAMILIES, CORPORA, JUDGES, METRICS):
            print(f"{reg.kind}: {', '.join(reg.names())}")
        return 0

    from flowbench.config import SuiteError
    from flowbench.data.corpus import CorpusError
    from flowbench.judges import JudgeError
    from flowbench.registry import RegistryError
    from flowbench.report import write_report
    from flowbench.runner import run_suite
    from flowbench.trainer import CheckpointError

    only = {}
    for item in args.only:
        key, _, value = item.partition("=")
        if key != "family" or not value:
            parser.error(f"--only takes family=NAME, got {item!r}")
        only[key] = value
    try:
        csv_path = run_suite(args.suite, out=args.out, only=only or None, jobs=args.jobs,
                             progress=not args.no_progress)
    except (SuiteError, CorpusError, JudgeError, RegistryError, CheckpointError) as err:
        print(f"flowbench: error: {err}", file=sys.stderr)
        return 2
    print(write_report(csv_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
