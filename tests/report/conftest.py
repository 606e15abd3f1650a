import pandas as pd
import pytest


def _markdown_table(report: str, section: str) -> pd.DataFrame:
    """The first table under `section` (a '## ' heading) of report.md, every cell a stripped string."""
    body = report.split(section, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in body.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in rows]
    return pd.DataFrame(cells[2:], columns=cells[0])


@pytest.fixture
def markdown_table():
    return _markdown_table
