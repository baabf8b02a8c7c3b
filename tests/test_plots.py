"""Figures: what is drawn, not only that drawing runs.

Every dataset here is SIMULATED by seeded code (``simulated_findings``); it never leaves tests/.
The checks read the artists back from the figure: rows drawn, labels, CI ends inside the axis
(or an arrow where a CI is clipped), the diamond's corners equal to the model's estimate and CI,
r tick labels at atanh(r), text boxes that never overlap, files with embedded fonts.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from metaalliance.engine import models
from metaalliance.figures import plots
from metaalliance.analyses import sensitivity
from metaalliance.errors import DataError, OptionError
from metaalliance.formatting import fmt_est_ci

#: positions are floats computed from the same numbers; only rounding of the last bit differs
EXACT = 1e-12

NAMES = ("Smith", "Jones", "Garcia", "Müller", "Nguyen", "Okafor", "Rossi", "Kim", "Andersson",
         "Dubois", "Kowalski", "Silva")


def simulated_findings(k: int, seed: int, multi: bool = True) -> pd.DataFrame:
    """SIMULATED findings (true r about .27, heterogeneous), some studies with several findings."""
    rng = np.random.default_rng(seed)
    rows, study = [], 0
    while len(rows) < k:
        study += 1
        n_findings = int(rng.choice([1, 1, 1, 2, 3])) if multi else 1
        n = int(rng.integers(15, 400))
        year = int(rng.integers(1985, 2024))
        label = f"{NAMES[study % len(NAMES)]} et al. ({year}) sim{study}"
        for f in range(n_findings):
            if len(rows) >= k:
                break
            z = rng.normal(0.28, 0.12) + rng.normal(0, 1 / math.sqrt(n - 3))
            rows.append(dict(citekey=f"sim{study}", finding_id=f"f{f + 1}", label=label,
                             year=year, n=n, instrument=str(rng.choice(["WAI", "WAI-S", "CALPAS"])),
                             rater=str(rng.choice(["client", "therapist", "observer"])),
                             outcome_measure=str(rng.choice(["BDI-II", "HRSD", "OQ-45"])),
                             timing=str(rng.choice(["early", "mid", "late"])),
                             r=math.tanh(z), yi=z, vi=1 / (n - 3)))
    return pd.DataFrame(rows)


def artists(ax, gid):
    return [a for a in ax.get_children() if a.get_gid() == gid]


def offsets(ax, gid):
    pts = [c.get_offsets() for c in artists(ax, gid)]
    return np.vstack(pts) if pts else np.empty((0, 2))


def texts(ax, gid=None):
    return [t for t in ax.texts if gid is None or t.get_gid() == gid]


def fit(df):
    return models.random_effects(df["yi"], df["vi"], labels=list(df["label"]))


@pytest.fixture(scope="module", params=[5, 40, 300], ids=lambda k: f"k{k}")
def drawn(request):
    k = request.param
    df = simulated_findings(k, seed=k)
    res = fit(df)
    ax = plots.forest_plot(res, data=df, sort="estimate")
    return k, df, res, ax


def test_one_square_and_one_ci_per_finding(drawn):
    k, df, res, ax = drawn
    squares = offsets(ax, "forest-square")
    assert len(squares) == k
    segments = [s for c in artists(ax, "forest-ci") for s in c.get_segments()]
    assert len(segments) == k
    assert sorted(squares[:, 0]) == pytest.approx(sorted(df["yi"]), abs=EXACT)


def test_every_study_label_is_drawn_once(drawn):
    k, df, res, ax = drawn
    drawn_labels = [t.get_text() for t in texts(ax, "forest-row-label")]
    for label in df["label"].unique():
        assert drawn_labels.count(label) == 1


def test_every_ci_inside_the_axis_or_marked_with_an_arrow(drawn):
    k, df, res, ax = drawn
    lo, hi = ax.get_xlim()
    crit = 1.959963984540054
    segments = [s for c in artists(ax, "forest-ci") for s in c.get_segments()]
    arrows = {round(float(y), 6) for _, y in offsets(ax, "forest-ci-arrow")}
    for seg in segments:
        (a, y), (b, _) = seg
        assert lo - EXACT <= a <= b <= hi + EXACT
    ys = {round(float(p[1]), 6): p[0] for p in offsets(ax, "forest-square")}
    for (y, est) in ys.items():
        i = int(np.argmin(np.abs(df["yi"].to_numpy() - est)))
        se = math.sqrt(df["vi"].iloc[i])
        clipped = est - crit * se < lo or est + crit * se > hi
        assert (y in arrows) == clipped


def test_summary_diamond_and_prediction_interval_are_the_models(drawn):
    k, df, res, ax = drawn
    diamonds = artists(ax, "forest-diamond")
    assert len(diamonds) == 1
    xy = diamonds[0].get_xy()
    assert xy[0, 0] == pytest.approx(res.ci_lower, abs=EXACT)
    assert xy[2, 0] == pytest.approx(res.ci_upper, abs=EXACT)
    assert xy[1, 0] == pytest.approx(res.estimate, abs=EXACT)
    pi = artists(ax, "forest-pi")
    assert len(pi) == 1
    xs = pi[0].get_xdata()
    lo, hi = ax.get_xlim()
    assert xs[0] == pytest.approx(max(res.pi_lower, lo), abs=EXACT)
    assert xs[1] == pytest.approx(min(res.pi_upper, hi), abs=EXACT)
    cell = fmt_est_ci(math.tanh(res.estimate), math.tanh(res.ci_lower), math.tanh(res.ci_upper))
    assert cell in [t.get_text() for t in texts(ax, "forest-cell-ci")]


def test_r_ticks_sit_at_atanh_r(drawn):
    k, df, res, ax = drawn
    labels = [t.get_text().replace("\u2212", "-") for t in ax.get_xticklabels()]
    for pos, text in zip(ax.get_xticks(), labels):
        assert pos == pytest.approx(math.atanh(float(text)), abs=EXACT)
    assert len(labels) >= 3


def test_squares_grow_with_weight(drawn):
    k, df, res, ax = drawn
    coll = artists(ax, "forest-square")[0]
    sizes = coll.get_sizes()
    xs = coll.get_offsets()[:, 0]
    weights = [res.weights[int(np.argmin(np.abs(res.yi - x)))] for x in xs]
    order = np.argsort(weights)
    assert np.all(np.diff(sizes[order]) >= -EXACT)


def _boxes(fig):
    renderer = fig.canvas.get_renderer()
    boxes = []
    for ax in fig.axes:
        for t in ax.texts + ax.get_xticklabels() + [ax.xaxis.label]:
            if t.get_text() and t.get_visible():
                bb = t.get_window_extent(renderer)
                boxes.append((bb.x0, bb.y0, bb.x1, bb.y1, t.get_text()))
    return boxes


def _overlaps(boxes, slack=0.5):
    b = np.array([x[:4] for x in boxes])
    bad = []
    for i in range(len(b)):
        x0, y0, x1, y1 = b[i]
        hit = ((b[i + 1:, 0] < x1 - slack) & (b[i + 1:, 2] > x0 + slack)
               & (b[i + 1:, 1] < y1 - slack) & (b[i + 1:, 3] > y0 + slack))
        bad += [(boxes[i][4], boxes[i + 1 + j][4]) for j in np.flatnonzero(hit)]
    return bad


def test_no_text_overlaps_and_text_stays_in_the_figure(drawn):
    k, df, res, ax = drawn
    fig = ax.figure
    fig.canvas.draw()
    boxes = _boxes(fig)
    assert _overlaps(boxes) == []
    width, height = fig.canvas.get_width_height()
    for x0, y0, x1, y1, text in boxes:
        assert x0 >= -0.5 and x1 <= width + 0.5, text
        assert y0 >= -0.5 and y1 <= height + 0.5, text


def test_figure_grows_with_the_rows():
    small = plots.forest_plot(fit(simulated_findings(5, 1)), data=simulated_findings(5, 1))
    big = plots.forest_plot(fit(simulated_findings(60, 1)), data=simulated_findings(60, 1))
    assert big.figure.get_figheight() > 5 * small.figure.get_figheight()
    assert big.figure.get_figwidth() == pytest.approx(174 / 25.4)


def test_findings_of_one_study_stay_together_under_its_label():
    df = simulated_findings(40, 3)
    ax = plots.forest_plot(fit(df), data=df, sort="estimate")
    label_y = {t.get_text(): t.get_position()[1] for t in texts(ax, "forest-row-label")}
    square_y = {round(float(x), 12): y for x, y in offsets(ax, "forest-square")}
    for key, group in df.groupby("citekey"):
        ys = sorted(square_y[round(float(v), 12)] for v in group["yi"])
        # consecutive rows, directly under (or on) the study's label row
        assert np.all(np.diff(ys) == 1)
        head = label_y[group["label"].iloc[0]]
        assert head == (ys[0] - 1 if len(group) > 1 else ys[0])


@pytest.mark.parametrize("sort", ["estimate", "year", "label"])
def test_sort_orders(sort):
    df = simulated_findings(30, 7, multi=False)
    ax = plots.forest_plot(fit(df), data=df, sort=sort)
    pts = offsets(ax, "forest-square")
    by_y = df.set_index("yi").loc[pts[np.argsort(pts[:, 1]), 0]]
    if sort == "estimate":
        assert np.all(np.diff(by_y.index.to_numpy()) >= 0)
    elif sort == "year":
        assert np.all(np.diff(by_y["year"].to_numpy()) >= 0)
    else:
        assert list(by_y["label"]) == sorted(by_y["label"])


def test_columns_are_drawn_with_their_titles():
    df = simulated_findings(12, 2, multi=False)
    res = fit(df)
    ax = plots.forest_plot(res, data=df, columns=["instrument", "rater", "n", "weight", "ci"])
    headers = [t.get_text() for t in texts(ax, "forest-header")]
    assert headers == ["Study", "Instrument", "Rater", "N", "Weight", "r [95% CI]"]
    assert sorted(t.get_text() for t in texts(ax, "forest-cell-n")) == sorted(
        f"{n:,}" for n in df["n"])
    weights = [t.get_text() for t in texts(ax, "forest-cell-weight")]
    assert sorted(weights[:-1]) == sorted(f"{w:.1f}%" for w in res.weights)
    with pytest.raises(DataError, match="column\\(s\\) country not in the data"):
        plots.forest_plot(res, data=df, columns=["country"])


def test_subgroup_blocks_have_their_own_diamonds_and_the_q_between_line():
    df = simulated_findings(40, 11)
    res = fit(df)
    sub = models.subgroups(df["yi"], df["vi"], df["rater"], by="rater")
    ax = plots.forest_plot(res, data=df, subgroups=sub)
    diamonds = artists(ax, "forest-diamond")
    assert len(diamonds) == len(sub.subgroups) + 1
    centres = sorted(d.get_xy()[1, 0] for d in diamonds)
    expected = sorted([s.estimate for s in sub.subgroups] + [res.estimate])
    assert centres == pytest.approx(expected, abs=EXACT)
    notes = [t.get_text() for t in texts(ax, "forest-row-label")]
    q_line = (f"Test for subgroup differences: Q({sub.q_between_df}) = "
              f"{sub.q_between:.2f}, p = ")
    assert any(t.startswith(q_line) for t in notes)
    for s in sub.subgroups:
        assert f"Rater: {s.level}" in notes
    assert len(offsets(ax, "forest-square")) == 40


def test_subgroup_summary_without_studies():
    df = simulated_findings(40, 11)
    sub = models.subgroups(df["yi"], df["vi"], df["rater"], by="rater")
    ax = plots.forest_plot(fit(df), data=df, subgroups=sub, show_studies=False, width="single",
                           columns=["ci"])
    assert len(offsets(ax, "forest-square")) == 0
    labels = [t.get_text() for t in texts(ax, "forest-row-label")]
    for s in sub.subgroups:
        assert f"Rater: {s.level} (k = {s.k})" in labels


def test_three_level_model_summary():
    df = simulated_findings(40, 5)
    tl = models.three_level(df["yi"], df["vi"], df["citekey"])
    ax = plots.forest_plot(tl, data=df, width="onehalf")
    xy = artists(ax, "forest-diamond")[0].get_xy()
    assert (xy[0, 0], xy[1, 0], xy[2, 0]) == pytest.approx(
        (tl.ci_lower, tl.estimate, tl.ci_upper), abs=EXACT)
    labels = [t.get_text() for t in texts(ax, "forest-row-label")]
    assert "Three-level model (REML)" in labels
    assert any(f"k = 40 findings in {tl.n_clusters} studies" in t for t in labels)


def test_clipped_cis_get_arrows_and_stay_inside():
    df = simulated_findings(20, 4, multi=False)
    res = fit(df)
    ax = plots.forest_plot(res, data=df, xlim=(0.0, 0.5))
    lo, hi = ax.get_xlim()
    assert (lo, hi) == pytest.approx((0.0, math.atanh(0.5)), abs=EXACT)
    crit = 1.959963984540054
    se = np.sqrt(df["vi"].to_numpy())
    n_clipped = int(np.sum(df["yi"] - crit * se < lo) + np.sum(df["yi"] + crit * se > hi))
    arrows = offsets(ax, "forest-ci-arrow")
    pi_clipped = int(res.pi_lower < lo) + int(res.pi_upper > hi)
    assert len(arrows) == n_clipped + pi_clipped > 0
    for seg in (s for c in artists(ax, "forest-ci") for s in c.get_segments()):
        assert lo - EXACT <= seg[0][0] and seg[1][0] <= hi + EXACT


def test_draws_into_a_given_axes_and_returns_it():
    from matplotlib.figure import Figure

    df = simulated_findings(8, 9, multi=False)
    fig = Figure(figsize=(8, 4))
    ax = fig.add_axes([0.45, 0.12, 0.3, 0.8])
    out = plots.forest_plot(fit(df), ax=ax, data=df, columns=["n", "ci"])
    assert out is ax
    assert len(fig.axes) == 1
    assert len(offsets(ax, "forest-square")) == 8


def test_pages_keep_every_row_once_and_share_the_axis():
    df = simulated_findings(300, 300)
    res = fit(df)
    figs = plots.forest_figures(res, data=df, sort="year", width="single", columns=["n", "ci"])
    assert len(figs) > 3
    n_squares = sum(len(offsets(f.axes[0], "forest-square")) for f in figs)
    assert n_squares == 300
    limits = {tuple(np.round(f.axes[0].get_xlim(), 12)) for f in figs}
    assert len(limits) == 1
    max_h = plots.PAGE_HEIGHT_MM / 25.4
    assert all(f.get_figheight() <= max_h + 1e-9 for f in figs)
    assert len(artists(figs[-1].axes[0], "forest-diamond")) == 1
    for f in figs:
        f.canvas.draw()
        assert _overlaps(_boxes(f)) == []


def test_journal_widths_and_too_many_columns():
    df = simulated_findings(10, 8, multi=False)
    res = fit(df)
    for name, mm in plots.JOURNAL_WIDTHS_MM.items():
        ax = plots.forest_plot(res, data=df, width=name, columns=["n", "ci"])
        assert ax.figure.get_figwidth() == pytest.approx(mm / 25.4)
    ax = plots.forest_plot(res, data=df, width=100, columns=["ci"])
    assert ax.figure.get_figwidth() == pytest.approx(100 / 25.4)
    with pytest.raises(OptionError, match="do not fit in 84 mm"):
        plots.forest_plot(res, data=df, width="single",
                          columns=["instrument", "rater", "timing", "outcome_measure", "n",
                                   "year", "weight", "ci"])
    with pytest.raises(OptionError, match="width: 'narrow' is not one of single, onehalf, double"):
        plots.forest_plot(res, data=df, width="narrow")


def test_data_must_match_the_model():
    df = simulated_findings(10, 8, multi=False)
    with pytest.raises(DataError, match="data has 9 rows but the result has k = 10"):
        plots.forest_plot(fit(df), data=df.iloc[:9])


def test_cumulative_and_leave_one_out_plots():
    df = simulated_findings(15, 21, multi=False)
    res = fit(df)
    cum = sensitivity.cumulative(res, order=df["year"].to_numpy())
    ax = plots.cumulative_forest_plot(cum, overall=res)
    pts = offsets(ax, "forest-point")
    assert len(pts) == 15
    assert sorted(pts[:, 0]) == pytest.approx(sorted(cum.estimate), abs=EXACT)
    labels = [t.get_text() for t in texts(ax, "forest-row-label")]
    assert labels[0] == cum.labels[0] and labels[1] == f"+ {cum.labels[1]}"
    assert [t.get_text() for t in texts(ax, "forest-cell-k")] == [str(i) for i in range(1, 16)]
    xy = artists(ax, "forest-diamond")[0].get_xy()
    assert xy[1, 0] == pytest.approx(res.estimate, abs=EXACT)
    loo = sensitivity.leave_one_out(res)
    ax = plots.leave_one_out_plot(loo, overall=res)
    assert len(offsets(ax, "forest-point")) == 15
    assert f"Omitting {loo.labels[0]}" in [t.get_text() for t in texts(ax, "forest-row-label")]


def test_funnel_plot():
    from metaalliance.analyses import bias

    df = simulated_findings(30, 13, multi=False)
    res = fit(df)
    ax = plots.funnel_plot(res)
    pts = offsets(ax, "funnel-points")
    assert len(pts) == 30
    assert sorted(pts[:, 1]) == pytest.approx(sorted(np.sqrt(df["vi"])), abs=EXACT)
    top, bottom = ax.get_ylim()[1], ax.get_ylim()[0]
    assert top == 0 and bottom > pts[:, 1].max()  # standard error grows downwards
    line = artists(ax, "funnel-estimate")[0]
    assert line.get_xdata()[0] == pytest.approx(res.estimate, abs=EXACT)
    assert len(artists(ax, "funnel-contour")) == 6
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:3] == [".05 < p < .10", ".01 < p < .05", "p < .01"]
    # a funnel with small studies missing on the left: trim and fill adds them
    yi = df["yi"].to_numpy()
    keep = ~((yi < res.estimate) & (df["vi"].to_numpy() > np.median(df["vi"])))
    skewed = models.random_effects(yi[keep], df["vi"].to_numpy()[keep])
    tf = bias.trim_and_fill(skewed)
    assert tf.k0 > 0
    ax = plots.funnel_plot(skewed, trimfill=tf)
    assert len(offsets(ax, "funnel-filled")) == tf.k0
    assert artists(ax, "funnel-adjusted")[0].get_xdata()[0] == pytest.approx(tf.fit.estimate)


def test_bubble_plot():
    df = simulated_findings(25, 17, multi=False)
    reg = models.meta_regression(df["yi"], df["vi"], df, "~ year")
    b = [c.estimate for c in reg.coefficients]
    ax = plots.bubble_plot(df["year"], df["yi"], df["vi"], fit=(b[0], b[1], reg.vcov),
                           tau2=reg.tau2, xlabel="Publication year")
    assert len(offsets(ax, "bubble-points")) == 25
    line = artists(ax, "bubble-line")[0]
    x, y = line.get_xdata(), line.get_ydata()
    assert y[0] == pytest.approx(b[0] + b[1] * x[0], abs=1e-9)


@pytest.mark.parametrize("fmt", plots.FORMATS)
def test_every_format_is_written_with_embedded_fonts(tmp_path, fmt):
    df = simulated_findings(6, 6, multi=False)
    ax = plots.forest_plot(fit(df), data=df, width="single", columns=["ci"])
    out = plots.save_figure(ax.figure, tmp_path / f"f.{fmt}", dpi=300)
    assert out == [tmp_path / f"f.{fmt}"]
    data = out[0].read_bytes()
    if fmt == "pdf":
        assert b"/FontFile2" in data  # TrueType embedded (pdf.fonttype 42)
    elif fmt == "eps":
        assert b"/FontType 42" in data
    elif fmt == "svg":
        assert b"<svg" in data and b"forest-square" in data
    else:
        from PIL import Image

        with Image.open(out[0]) as im:
            w_in, h_in = ax.figure.get_size_inches()
            assert im.size == (round(w_in * 300), round(h_in * 300))
            assert round(im.info["dpi"][0]) == 300


def test_same_figure_gives_the_same_file(tmp_path):
    df = simulated_findings(6, 6, multi=False)
    paths = []
    for name in ("a", "b"):
        ax = plots.forest_plot(fit(df), data=df, width="single", columns=["ci"])
        paths += plots.save_figure(ax.figure, tmp_path / f"{name}.pdf")
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_multipage_pdf_and_numbered_pngs(tmp_path):
    df = simulated_findings(200, 31)
    figs = plots.forest_figures(fit(df), data=df, width="single", columns=["ci"])
    pdf = plots.save_figure(figs, tmp_path / "all.pdf")
    assert pdf == [tmp_path / "all.pdf"]
    assert pdf[0].read_bytes().count(b"/Type /Page\n") + pdf[0].read_bytes().count(
        b"/Type /Page ") >= len(figs)
    pngs = plots.save_figure(figs, tmp_path / "all.png", dpi=72)
    assert [p.name for p in pngs] == [f"all-p{i}.png" for i in range(1, len(figs) + 1)]
    with pytest.raises(OptionError, match="format \\(file suffix\\): 'jpg' is not one of"):
        plots.save_figure(figs, tmp_path / "all.jpg")


# --- the forest and funnel commands ---------------------------------------------------------------

@pytest.fixture
def sim_csv(tmp_path):
    df = simulated_findings(25, 41)
    path = tmp_path / "simulated.csv"
    df.to_csv(path, index=False)
    return path


def test_forest_command_writes_the_file(sim_csv, tmp_path, capsys):
    from metaalliance.cli import main

    out = tmp_path / "forest.png"
    code = main(["forest", "--data", str(sim_csv), "--r", "r", "--n", "n", "--out", str(out),
                 "--dpi", "150", "--width-mm", "129", "--columns", "n,ci", "--by", "rater"])
    assert code == 0
    assert capsys.readouterr().out.strip() == str(out)
    from PIL import Image

    with Image.open(out) as im:
        assert im.size[0] == int(129 / 25.4 * 150)  # matplotlib truncates to whole pixels


def test_forest_command_three_level_pdf_and_errors(sim_csv, tmp_path, capsys):
    from metaalliance.cli import main

    out = tmp_path / "three.pdf"
    assert main(["forest", "--data", str(sim_csv), "--r", "r", "--n", "n", "--out", str(out),
                 "--cluster", "citekey", "--sort", "year"]) == 0
    assert b"/FontFile2" in out.read_bytes()
    capsys.readouterr()
    assert main(["forest", "--data", str(sim_csv), "--r", "r", "--n", "n",
                 "--out", str(tmp_path / "f.jpg")]) == 1
    assert "the suffix must be one of .pdf, .svg, .eps, .png, .tiff" in capsys.readouterr().err
    assert main(["forest", "--data", str(sim_csv), "--r", "r", "--n", "n", "--out", str(out),
                 "--cluster", "citekey", "--method", "DL"]) == 1
    assert "the three-level model is fitted by REML or ML, not DL" in capsys.readouterr().err


def test_funnel_command(sim_csv, tmp_path, capsys):
    from metaalliance.cli import main

    out = tmp_path / "funnel.svg"
    assert main(["funnel", "--data", str(sim_csv), "--r", "r", "--n", "n", "--out", str(out),
                 "--trimfill"]) == 0
    assert b"funnel-points" in out.read_bytes()


def simulated_funnel_csv(path, k: int, seed: int):
    """SIMULATED findings for a funnel plot: heavy-tailed true effects (t, 3 df) and many small
    samples (n from 4), so that some r lie beyond the plot's r axis (+-.95)."""
    rng = np.random.default_rng(seed)
    n = np.maximum(4, np.round(np.exp(rng.normal(3.8, 1.1, k)))).astype(int)
    z = rng.normal(0.27 + 0.15 * rng.standard_t(3, k), 1 / np.sqrt(n - 3))
    pd.DataFrame({"label": [f"sim{i + 1}" for i in range(k)], "r": np.tanh(z),
                  "n": n}).to_csv(path, index=False)
    return path


def _funnel_via_command(monkeypatch, tmp_path, argv):
    """Run `metaalliance funnel ARGV` (writing the PNG) and return the figure it drew."""
    from metaalliance.cli import main

    drawn = []
    save = plots.save_figure

    def keep(fig, *args, **kwargs):
        drawn.append(fig)
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(plots, "save_figure", keep)
    out = tmp_path / "funnel.png"
    assert main(["funnel", "--out", str(out), "--dpi", "100", *argv]) == 0
    assert out.stat().st_size > 0 and len(drawn) == 1
    return drawn[0]


def _assert_inside_figure_and_panel(fig):
    """The legend and every label inside the figure; every marker whole inside the panel."""
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    page = fig.bbox
    half_px = 0.5

    def inside(box, outer):
        return (box.x0 >= outer.x0 - half_px and box.x1 <= outer.x1 + half_px
                and box.y0 >= outer.y0 - half_px and box.y1 <= outer.y1 + half_px)

    legend = ax.get_legend().get_window_extent(renderer)
    assert inside(legend, page), f"legend {legend} outside the figure {page}"
    assert inside(ax.get_tightbbox(renderer), page)
    # below the x axis label, not on it
    assert legend.y1 <= ax.xaxis.get_tightbbox(renderer).y0 + half_px
    panel = ax.get_window_extent(renderer)
    (x0, x1), (y1, y0) = ax.get_xlim(), ax.get_ylim()
    scatters = [c for c in ax.collections if c.get_gid() in ("funnel-points", "funnel-filled")]
    assert scatters
    for coll in scatters:
        assert coll.get_clip_on(), coll.get_gid()
        xy = coll.get_offsets()
        assert np.all((xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1))
        # the marker's half-width (sizes in pt^2) around its centre, in pixels
        r = (math.sqrt(float(np.max(coll.get_sizes()))) / 2
             + float(np.max(coll.get_linewidths())) / 2) * fig.dpi / 72
        px = ax.transData.transform(xy)
        assert np.all(px[:, 0] - r >= panel.x0 - 1e-6) and np.all(px[:, 0] + r <= panel.x1 + 1e-6)
        assert np.all(px[:, 1] - r >= panel.y0 - 1e-6) and np.all(px[:, 1] + r <= panel.y1 + 1e-6)
    return scatters


def test_funnel_with_trim_and_fill_fits_its_legend_on_the_curated_data(monkeypatch, tmp_path):
    fig = _funnel_via_command(monkeypatch, tmp_path, ["--trimfill"])
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "filled (trim and fill)" in labels and "trim-and-fill estimate" in labels
    _assert_inside_figure_and_panel(fig)
    assert fig.get_figwidth() == pytest.approx(84 / 25.4)


def test_funnel_of_1000_simulated_findings_draws_nothing_outside(monkeypatch, tmp_path):
    csv = simulated_funnel_csv(tmp_path / "sim1000.csv", 1000, 7)
    r = pd.read_csv(csv)["r"].to_numpy()
    assert np.sum(np.abs(r) > 0.95) >= 1          # the data reach beyond the r axis
    fig = _funnel_via_command(monkeypatch, tmp_path,
                              ["--data", str(csv), "--r", "r", "--n", "n", "--trimfill",
                               "--control", "optimum"])
    scatters = _assert_inside_figure_and_panel(fig)
    ax = fig.axes[0]
    points = [c for c in scatters if c.get_gid() == "funnel-points"]
    assert sum(len(c.get_offsets()) for c in points) == 1000
    # those beyond are drawn at the edge as triangles pointing outwards, and say so
    beyond = sum(len(c.get_offsets()) for c in points
                 if c.get_paths()[0].vertices.shape != points[0].get_paths()[0].vertices.shape)
    assert beyond == np.sum(np.abs(r) > 0.95)
    assert "r beyond \u00b1.95" in [t.get_text() for t in ax.get_legend().get_texts()]


@pytest.mark.parametrize("kw", [dict(height_mm=55), dict(width=50, font_size=9),
                                dict(width="double", title="Funnel")],
                         ids=["short", "narrow-large-font", "double-title"])
def test_funnel_legend_fits_at_other_sizes(kw, tmp_path):
    from metaalliance.analyses import bias

    df = pd.read_csv(simulated_funnel_csv(tmp_path / "sim.csv", 300, 11))
    yi, vi = np.arctanh(df["r"].to_numpy()), 1 / (df["n"].to_numpy() - 3)
    res = models.random_effects(yi, vi, measure="ZCOR", control="optimum")
    ax = plots.funnel_plot(res, trimfill=bias.trim_and_fill(res, control="optimum"), **kw)
    _assert_inside_figure_and_panel(ax.figure)
    if "height_mm" in kw:                       # a given height is kept: the panel gives way
        assert ax.figure.get_figheight() == pytest.approx(55 / 25.4)


def test_interrupted_save_leaves_no_partial_file(tmp_path, monkeypatch):
    """save_figure renders into memory and writes all pages or none (fileio.write_all)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from metaalliance.dataset import fileio
    from metaalliance.figures import plots

    pages = [Figure(), Figure()]
    for fig in pages:
        fig.add_subplot().plot([0, 1], [0, 1])
    calls = []

    def failing(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        fileio.os.replace(src, dst)

    monkeypatch.setattr(fileio, "_replace", failing)
    with pytest.raises(OSError):
        plots.save_figure(pages, tmp_path / "forest.png", dpi=72)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
