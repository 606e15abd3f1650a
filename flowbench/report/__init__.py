"""Reports of a leaderboard: report.md (pivots over NFE, best per family, a ranking against
true data, every row with its intervals) and seaborn PNGs beside it; `merge` joins suites.

    python -m flowbench report results/<suite>      (also run at the end of `run`)
    python -m flowbench leaderboard results/a results/b --out results/combined.csv
    python -m flowbench report results/reference/nfe_sweep --readme README.md   (headline.py)
"""
from __future__ import annotations

from pathlib import Path

from flowbench.report.labels import ReportError, leaderboard_csv, load
from flowbench.report.merge import merge
from flowbench.report.plots import all_figures
from flowbench.report.tables import markdown

__all__ = ["load", "write_report", "merge", "leaderboard_csv", "ReportError"]


def write_report(path: str | Path) -> Path:
    """report.md and the PNGs beside the leaderboard at `path`; returns report.md."""
    csv = leaderboard_csv(path)
    df = load(csv)
    if df.empty:
        raise ReportError(f"{csv}: the leaderboard holds no rows")
    figures, curves = all_figures(df, csv.parent)
    text = markdown(df, figures)
    if curves is not None:
        text += "\n".join(["", "## Quality against training compute", "",
                           "Best gen PPL over NFE per trained configuration and budget.", "",
                           curves.round(3).to_markdown(index=False), ""])
    (csv.parent / "report.md").write_text(text)
    return csv.parent / "report.md"
