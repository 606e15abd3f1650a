"""The report's figures read at a glance: the headline figures draw one line per family
variant with a legend inside the figure, rows over training seeds are one line with a seed
band, tuning rows and other sample counts stay out of the headline, and every sampler and
setting goes to one faceted figure per family.

Figures are caught as the report saves them (Figure.savefig), so the tests read the artists
the report draws, whatever module draws them."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from flowbench.report import load, write_report  # noqa: E402
from flowbench.report.plots import all_figures  # noqa: E402

ROOT = Path(__file__).parents[2]
# nfe_sweep's reference before its recomputation (one training seed): a fixed board of the full shape
REFERENCE = ROOT / "tests" / "fixtures" / "nfe_sweep_one_seed.csv"
NFES = [1, 2, 4, 8, 16, 32, 64]


@pytest.fixture
def drawn(monkeypatch, tmp_path):
    """draw(csv) -> {file name: Figure} of every figure the report saves for that leaderboard."""
    figures: dict[str, Figure] = {}
    savefig = Figure.savefig

    def keep(self, fname, *args, **kwargs):
        figures[Path(fname).name] = self
        return savefig(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    monkeypatch.setattr(plt, "close", lambda *args, **kwargs: None)  # keep them to inspect

    def draw(csv: Path) -> dict[str, Figure]:
        out = tmp_path / f"out{len(figures)}"
        out.mkdir()
        all_figures(load(csv), out)
        return dict(figures)

    yield draw
    for fig in figures.values():
        plt.close(fig)


def _row(i, family, sampler, nfe, gen_ppl, *, denoiser="trained", seed=0, n=256, split="", params="{}",
         seconds=None):
    return {"suite": "figures", "family": family, "family_params": "{}", "denoiser": denoiser, "sampler": sampler,
            "sampler_params": params, "nfe": nfe, "backbone_calls": nfe, "seed": seed, "num_samples": n,
            "split": split, "sample_seed": 0 if split != "held_out" else 100, "gen_ppl": gen_ppl,
            "gen_ppl_lo": gen_ppl * 0.95, "gen_ppl_hi": gen_ppl * 1.05, "gen_ppl_floor": 20.0,
            "gen_ppl_floor_lo": 18.0, "gen_ppl_floor_hi": 22.0, "entropy": 3.0,
            "samples_per_s": 1.0 / (seconds if seconds is not None else 1e-3 * nfe), "judge": "exact",
            "git_sha": "x", "train_passes": 100, "row_key": f"k{i}"}


def board(tmp_path, *, seeds=(0,)) -> Path:
    """A small leaderboard shaped like nfe_sweep's: mdlm (two samplers, the exact denoiser, a
    2048-sample row), flow_map (its default sampler, tuned consistency rows on a tuning and a
    held-out seed) and AR at one NFE, each trained model over `seeds` with jittered values."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in seeds:
        def add(*args, **kwargs):
            jitter = 1.0 if kwargs.get("denoiser") == "oracle" else float(rng.uniform(0.85, 1.15))
            args = (*args[:3], args[3] * jitter)
            rows.append(_row(len(rows), *args, seed=seed, **kwargs))
        for nfe in NFES:
            add("mdlm", "ancestral", nfe, 30 + 3000 / nfe)
            add("mdlm", "ancestral", nfe, 20 + 2000 / nfe ** 2, denoiser="oracle")
        add("mdlm", "ancestral_cached", 64, 31.0)
        add("mdlm", "ancestral", 64, 29.0, n=2048)
        for nfe in NFES[:6]:
            add("flow_map", "flow_map", nfe, 200 + 10 * nfe)
            add("flow_map", "flow_map", nfe, 20.5, denoiser="oracle")
        for nfe in (2, 4, 8):
            for split in ("tuning", "held_out"):  # the tuned value is the best: only its held-out twin counts
                add("flow_map", "consistency", nfe, (21.0 if split == "tuning" else 90.0) + nfe, split=split,
                    params='{"t_first": 0.7}', seconds=1e-5 * nfe)
        add("ar_gpt2", "kv_cache", 32, 25.0)
    out = tmp_path / f"board{len(seeds)}"
    out.mkdir()
    pd.DataFrame(rows).to_csv(out / "leaderboard.csv", index=False)
    return out / "leaderboard.csv"


def _legend_inside(fig: Figure) -> bool:
    fig.canvas.draw()
    box = fig.bbox
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends
    return all(leg.get_window_extent().x0 >= box.x0 - 1 and leg.get_window_extent().x1 <= box.x1 + 1
               and leg.get_window_extent().y0 >= box.y0 - 1 and leg.get_window_extent().y1 <= box.y1 + 1
               for leg in legends)


@pytest.mark.parametrize("name", ["gen_ppl_vs_nfe.png", "gen_ppl_vs_seconds.png"])
def test_the_reference_headline_has_one_line_per_family_and_a_legend_inside(drawn, name):
    """nfe_sweep's leaderboard holds about 60 configurations: the headline draws each family
    variant once (and its exact denoiser's companion), named once in a legend the figure holds."""
    fig = drawn(REFERENCE)[name]
    ax = fig.axes[0]
    df = pd.read_csv(REFERENCE)
    variants = df.groupby("family")["family_params"].nunique(dropna=False)  # dfm: two sources
    _, labels = ax.get_legend_handles_labels()
    for family, count in variants.items():
        named = [label for label in labels if label.split(":")[0].split(" ")[0].split("/")[0] == family]
        assert len(named) == count, (family, named)
    curves = [line for line in ax.get_lines() if len(line.get_xdata()) > 1]
    curves = [line for line in curves if line.get_linestyle() != ":"]  # true data's line
    assert len(curves) <= 2 * variants.sum()
    assert _legend_inside(fig)


@pytest.mark.parametrize("suite", ["learning_curves", "tstar_sweep"])
def test_every_headline_legend_fits_its_figure(drawn, suite):
    """Labels that name a training budget or a tuned knob are long: the legend takes fewer columns."""
    figures = drawn(ROOT / "results" / "reference" / suite / "leaderboard.csv")
    for name in ("gen_ppl_vs_nfe.png", "gen_ppl_vs_seconds.png", "bigram_kl_vs_nfe.png"):
        assert _legend_inside(figures[name]), name


def test_seed_groups_are_one_line_at_their_mean_with_the_seed_range_as_band(tmp_path, drawn):
    csv = board(tmp_path, seeds=(0, 1, 2))
    df = pd.read_csv(csv)
    fig = drawn(csv)["gen_ppl_vs_nfe.png"]
    ax = fig.axes[0]
    mdlm = [line for line in ax.get_lines() if line.get_label().startswith("mdlm")]
    assert len(mdlm) == 1
    line = mdlm[0]
    rows = df[(df["family"] == "mdlm") & (df["sampler"] == "ancestral") & (df["denoiser"] == "trained")
              & (df["num_samples"] == 256)].groupby("nfe")["gen_ppl"]
    np.testing.assert_allclose(line.get_xdata(), NFES)
    np.testing.assert_allclose(line.get_ydata(), rows.mean().loc[NFES].to_numpy())
    colour = matplotlib.colors.to_rgb(line.get_color())
    bands = [c for c in ax.collections if len(c.get_facecolor()) and np.allclose(c.get_facecolor()[0][:3], colour)]
    assert bands, "no band in the line's colour"
    vertices = np.concatenate([p.vertices for p in bands[0].get_paths()])
    for nfe, lo, hi in zip(NFES, rows.min().loc[NFES], rows.max().loc[NFES]):
        at = vertices[np.isclose(vertices[:, 0], nfe), 1]
        assert np.isclose(at.min(), lo) and np.isclose(at.max(), hi), (nfe, at, lo, hi)
    assert _legend_inside(fig)


def test_the_headline_leaves_out_tuning_rows_and_other_sample_counts(tmp_path, drawn):
    """The tuning rows are the fastest and best of flow_map: the front must not show them (their
    held-out twins it may); the 2048-sample mdlm row is no headline value either."""
    csv = board(tmp_path)
    df = pd.read_csv(csv)
    figures = drawn(csv)
    shown = np.concatenate([line.get_ydata() for name in ("gen_ppl_vs_nfe.png", "gen_ppl_vs_seconds.png")
                            for line in figures[name].axes[0].get_lines()])
    for value in df.loc[(df["split"] == "tuning") | (df["num_samples"] == 2048), "gen_ppl"]:
        assert not np.isclose(shown, value).any(), value
    front = next(line for line in figures["gen_ppl_vs_seconds.png"].axes[0].get_lines()
                 if line.get_label() == "flow_map")
    x, y = np.asarray(front.get_xdata()), np.asarray(front.get_ydata())
    assert (np.diff(x) > 0).all() and (np.diff(y) < 0).all()  # a front: each point slower and better
    held_out = df[(df["split"] == "held_out")]
    assert np.isclose(y, held_out["gen_ppl"].min()).any()  # the fastest held-out row is on it


def test_every_setting_goes_to_its_familys_faceted_grid(tmp_path, drawn):
    csv = board(tmp_path, seeds=(0, 1))
    figures = drawn(csv)
    for family in ("mdlm", "flow_map", "ar_gpt2"):
        assert f"{family}_grid.png" in figures
    fig = figures["flow_map_grid.png"]
    titles = sorted(ax.get_title() for ax in fig.axes)
    assert titles == ["flow_map: sampler consistency", "flow_map: sampler flow_map"]
    consistency = next(ax for ax in fig.axes if ax.get_title().endswith("consistency"))
    names = [t.get_text() for t in consistency.get_legend().get_texts()]
    assert any("[tuning]" in n for n in names) and any("[held-out]" in n for n in names)
    curves = [line for line in consistency.get_lines() if len(line.get_xdata()) > 1 and line.get_linestyle() != ":"]
    assert len(curves) == 2  # the tuning line and the held-out line, never their average
    assert (tmp_path / "out0" / "flow_map_grid.png").stat().st_size > 1000


def test_the_report_links_the_grids(tmp_path):
    csv = board(tmp_path)
    report = write_report(csv).read_text()
    for family in ("mdlm", "flow_map", "ar_gpt2"):
        assert f"![{family}_grid.png]({family}_grid.png)" in report
