"""Journal-ready figures: forest, cumulative and leave-one-out forest, funnel and bubble plots.

With ``plots_bias.py`` this is the only module that imports matplotlib. Every public plotting
function follows scikit-learn's convention: with ``ax=None`` it creates a figure sized for its
content (width from a journal preset, height from the number of rows), with a given ``ax`` it draws
into it; it returns the axes and never calls ``plt.show()``. Figures are created with
``matplotlib.figure.Figure`` (not pyplot), so nothing accumulates in pyplot's global state.

Models are fitted on Fisher's z. When a result's measure is ``"ZCOR"`` the effect axis is shown in
r: ticks sit at atanh(r) and are labelled with r; the text columns show r as well.

Artists carry gids (``forest-square``, ``forest-ci``, ``forest-ci-arrow``, ``forest-diamond``,
``forest-pi``, ``forest-row-label``...), so tests and SVG post-processing can find them.

Example
-------
>>> import numpy as np
>>> from metaalliance.figures import plots
>>> rows = plots.IntervalTable(labels=["A", "B"], estimate=[0.2, 0.3],
...                            ci_lower=[0.0, 0.1], ci_upper=[0.4, 0.5])
>>> ax = plots.interval_plot(rows)
>>> len(ax.figure.axes)
1
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from metaalliance.errors import DataError, MetaAllianceWarning, OptionError
from metaalliance.options import check_option
from metaalliance.formatting import distinct_labels, fmt_ci, fmt_est_ci, fmt_int, fmt_num, fmt_p, fmt_pct, fmt_r

from metaalliance.figures.style import (  # noqa: F401
    JOURNAL_WIDTHS_MM, FORMATS, SORTS, COLUMN_TITLES, RIGHT_COLUMNS, NUMERIC_COLUMNS, DEFAULT_COLUMNS, MM_PER_INCH, PT_PER_INCH, FONT_SIZE, MIN_FONT_SIZE, ROW_PITCH_EM, PAGE_HEIGHT_MM, TEXT_WIDTH_SAFETY, R_AXIS_LIMIT, MIN_PANEL_SHARE, _GREY, _BAND, font_family, journal_rc, width_inches, _new_figure, save_figure, _renderer, MEASURE_DPI, _text_width_pt, _clean, _truncate)

from metaalliance.figures.rows import (  # noqa: F401
    _Row, _Column, _Geometry, _ci_title, _make_columns, _place_columns, _spanning, _KEEP_TAIL, _shorten, _layout, _wrap_notes, _nice_r_ticks, _fmt_tick_r, _axis_range, _set_effect_axis, _decimals_for, _draw_rows, _frame_pt, _figure_for_rows, _page_chunks, _render)

# --- building rows from results ------------------------------------------------------------------

def _is_r_scale(result, scale: str) -> bool:
    check_option("scale", scale, ("auto", "r", "z"))
    if scale == "auto":
        return getattr(result, "measure", "ZCOR") == "ZCOR"
    return scale == "r"


def _crit(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + float(level) / 200.0))


def _display(x, r_scale: bool) -> float:
    return math.tanh(x) if r_scale else x


def _est_text(est, lo, hi, r_scale: bool) -> str:
    if r_scale:
        return fmt_est_ci(math.tanh(est), math.tanh(lo), math.tanh(hi))
    return fmt_est_ci(est, lo, hi, r=False)


def _model_weights(result) -> np.ndarray:
    """Percent weights of the rows in the fitted model (``result.weights``: metafor's
    weights(), for a three-level fit the diagonal of the inverse marginal covariance); for a
    record without them, inverse-variance weights 1/(vi + tau^2)."""
    w = getattr(result, "weights", None)
    if w is not None:
        w = np.asarray(w, dtype=float)
        if w.shape == np.shape(result.yi) and np.all(np.isfinite(w)):
            return w
    return _iv_weights(result.vi, getattr(result, "tau2", 0.0) or 0.0)


def _iv_weights(vi, tau2: float) -> np.ndarray:
    """Random-effects weights 1/(vi + tau^2), in percent."""
    w = 1.0 / (np.asarray(vi, dtype=float) + float(tau2))
    return 100 * w / w.sum()


def _as_frame(result, data):
    import pandas as pd

    k = len(np.asarray(result.yi))
    if data is None:
        labels = getattr(result, "labels", None)
        if labels is None or len(labels) != k:
            labels = [f"Study {i + 1}" for i in range(k)]
        return pd.DataFrame({"label": [str(v) for v in labels]})
    frame = data.reset_index(drop=True)
    if len(frame) != k:
        raise DataError(f"data has {len(frame)} rows but the result has k = {k}: pass the rows "
                        "the model was fitted on, in the same order")
    if "label" not in frame.columns:
        labels = getattr(result, "labels", None)
        frame = frame.assign(label=[str(v) for v in labels] if labels is not None and len(labels) == k
                             else [f"Study {i + 1}" for i in range(k)])
    return frame


_DESCRIPTOR_FIELDS = ("outcome_measure", "rater", "instrument", "timing", "outcome_domain")


def _descriptors(frame, members, varying, max_chars: int) -> dict:
    """What tells a study's findings apart: the fields that vary within it (at most two),
    shortened; the finding id is added where shortened texts would coincide."""
    fids = {i: (_clean(frame.at[i, "finding_id"]) if "finding_id" in frame.columns else "")
            or f"finding {n + 1}" for n, i in enumerate(members)}
    full = {}
    for i in members:
        parts = [_clean(frame.at[i, f]) for f in varying[:2]]
        full[i] = ", ".join(p for p in parts if p) or fids[i]
    short = {i: _truncate(t, max_chars) for i, t in full.items()}
    counts = {}
    for t in short.values():
        counts[t] = counts.get(t, 0) + 1
    for i, t in short.items():
        if counts[t] > 1 and full[i] != fids[i]:
            tag = f" ({fids[i]})"
            short[i] = _truncate(full[i], max_chars - len(tag)) + tag
    return short


def _finding_rows(yi, vi, weights, frame, columns, *, sort, r_scale, level, group_by, keep0=0,
                  band0=0, max_chars=40, indices=None):
    """One row per finding; findings of one study (``group_by``) stay together under its label."""
    yi = np.asarray(yi, dtype=float)
    vi = np.asarray(vi, dtype=float)
    if np.any(~np.isfinite(yi)) or np.any(~np.isfinite(vi)) or np.any(vi <= 0):
        raise DataError("forest plot: every yi must be finite and every vi positive")
    crit = _crit(level)
    idx = np.arange(len(yi)) if indices is None else np.asarray(indices)
    keys = [k for k in columns if k not in ("label", "weight", "ci")]
    missing = [k for k in keys if k not in frame.columns]
    if missing:
        raise DataError(f"forest plot: column(s) {', '.join(missing)} not in the data; "
                        f"available: {', '.join(map(str, frame.columns))}")
    if sort is not None:
        check_option("sort", sort, SORTS)
        if sort == "year" and "year" not in frame.columns:
            raise DataError("forest plot: sort='year' needs a year column in the data")

    gcol = group_by if group_by in frame.columns else "label"
    groups: dict = {}
    for i in idx:
        groups.setdefault(frame.at[i, gcol], []).append(i)
    group_list = list(groups.values())

    def group_key(members):
        first = members[0]
        if sort == "estimate":
            return (float(np.mean(yi[members])), str(frame.at[first, "label"]))
        if sort == "year":
            return (int(frame.at[first, "year"]), str(frame.at[first, "label"]))
        if sort == "label":
            return (str(frame.at[first, "label"]), 0)
        return (0, 0)

    if sort is not None:
        group_list.sort(key=group_key)
    # two groups (e.g. two samples of one paper) with one label: add what tells them apart
    heads = distinct_labels([_clean(frame.at[m[0], "label"]) for m in group_list],
                            [str(frame.at[m[0], gcol]) for m in group_list])
    rows = []
    for g, members in enumerate(group_list):
        if sort == "estimate":
            members = sorted(members, key=lambda i: yi[i])
        band = band0 + g
        keep = keep0 + g
        label = _truncate(heads[g], max_chars)
        if len(members) > 1:
            rows.append(_Row("group", {"label": label}, band=band, keep=keep))
            varying = [f for f in _DESCRIPTOR_FIELDS if f in frame.columns and f not in keys
                       and frame.loc[members, f].astype(str).nunique() > 1]
        descriptors = _descriptors(frame, members, varying, max_chars - 2) if len(members) > 1 else {}
        for i in members:
            se = math.sqrt(vi[i])
            cells = {"label": descriptors.get(i, label)}
            for key in keys:
                value = frame.at[i, key]
                if key in ("n", "k", "year") and _clean(value):
                    cells[key] = fmt_int(value)
                else:
                    cells[key] = _truncate(_clean(value), max_chars)
            if weights is not None:
                cells["weight"] = fmt_pct(weights[i])
            lo, hi = yi[i] - crit * se, yi[i] + crit * se
            cells["ci"] = _est_text(yi[i], lo, hi, r_scale)
            rows.append(_Row("study", cells, est=yi[i], lo=lo, hi=hi,
                             weight=float(weights[i]) if weights is not None else math.nan,
                             indent=1 if len(members) > 1 else 0, band=band, keep=keep))
    return rows


def _summary_values(result):
    """estimate, CI and PI of a fitted model on its own scale."""
    est = float(result.estimate)
    lo, hi = float(result.ci_lower), float(result.ci_upper)
    pi_lo = getattr(result, "pi_lower", None)
    pi_hi = getattr(result, "pi_upper", None)
    pi = None
    if pi_lo is not None and pi_hi is not None and np.isfinite(pi_lo) and np.isfinite(pi_hi):
        pi = (float(pi_lo), float(pi_hi))
    return est, lo, hi, pi


def model_name(result) -> str:
    """'Random-effects model (REML)', 'Equal-effects model', 'Three-level model (REML)'."""
    method = getattr(result, "method_used", None) or getattr(result, "method", "REML")
    if getattr(result, "sigma2", None) is not None:
        return f"Three-level model ({method})"
    if method == "EE":
        return "Equal-effects model"
    return f"Random-effects model ({method})"


def heterogeneity_text(result) -> str:
    """One line: 'Heterogeneity: \u03c4\u00b2 = 0.012; I\u00b2 = 45.1%; Q(15) = 27.31, p = .026'."""
    parts = []
    sigma2 = getattr(result, "sigma2", None)
    if sigma2 is not None:
        s = [float(v) for v in sigma2]
        parts.append(f"\u03c3\u00b2 between = {fmt_num(s[0], 3)}")
        parts.append(f"\u03c3\u00b2 within = {fmt_num(s[1], 3)}")
    else:
        tau2 = getattr(result, "tau2", None)
        if tau2 is not None:
            parts.append(f"\u03c4\u00b2 = {fmt_num(tau2, 3)}")
        i2 = getattr(result, "i2", None)
        if i2 is not None:
            parts.append(f"I\u00b2 = {fmt_pct(i2)}")
    q = getattr(result, "q", None)
    q_df = getattr(result, "q_df", None)
    if q_df is None and q is not None:
        q_df = int(getattr(result, "k", len(result.yi))) - 1
    if q is not None:
        text = f"Q({int(q_df)}) = {fmt_num(q)}"
        q_p = getattr(result, "q_pvalue", None)
        if q_p is not None:
            text += f", {fmt_p(q_p)}"
        parts.append(text)
    return "Heterogeneity: " + "; ".join(parts) if parts else ""


def _summary_rows(result, *, r_scale, label, show_pi, level, keep, bold=True, note=True,
                  weight_text="100%", group_by="citekey"):
    est, lo, hi, pi = _summary_values(result)
    rows = [_Row("summary", {"label": label, "ci": _est_text(est, lo, hi, r_scale),
                             "weight": weight_text},
                 est=est, lo=lo, hi=hi, bold=bold, keep=keep)]
    if show_pi and pi is not None:
        text = fmt_ci(_display(pi[0], r_scale), _display(pi[1], r_scale), r=r_scale)
        rows.append(_Row("pi", {"label": f"{level:g}% prediction interval", "ci": text},
                         est=est, lo=pi[0], hi=pi[1], indent=1, keep=keep))
    if note:
        text = heterogeneity_text(result)
        k_text = _k_text(result, group_by)
        text = f"{k_text}; {text[0].lower()}{text[1:]}" if text else k_text
        rows.append(_Row("note", {"label": text}, indent=1, keep=keep))
    return rows


#: what the clusters of a three-level model are called, by the column that defines them
CLUSTER_NOUNS = {"citekey": "studies", "sample": "samples", "label": "studies"}


def _k_text(result, group_by: str = "citekey") -> str:
    k = int(getattr(result, "k", len(np.asarray(result.yi))))
    n_clusters = getattr(result, "n_clusters", None)
    if n_clusters is not None:
        return f"k = {k} findings in {int(n_clusters)} {CLUSTER_NOUNS.get(group_by, 'clusters')}"
    return f"k = {k}"


def _subgroup_parts(subgroups, frame):
    """(level, summary, fit or None, row indices) per subgroup, and the between-groups test.

    ``subgroups`` is the engine's SubgroupResult: ``subgroups`` (SubgroupEstimate per level),
    ``models`` (level -> RandomEffectsResult with tau2_model "separate") and ``by``, the data
    column whose levels split the rows."""
    by = getattr(subgroups, "by", None)
    estimates = getattr(subgroups, "subgroups", None)
    if by is None or estimates is None:
        raise DataError("forest plot: expected a SubgroupResult (models.subgroups(...))")
    if by not in frame.columns:
        raise DataError(f"forest plot: the subgroups split by {by!r}, which is not a column of "
                        "data (pass the rows the subgroups were fitted on)")
    groups = frame[by].astype(str).to_numpy()
    models = getattr(subgroups, "models", {}) or {}
    parts = []
    for est in estimates:
        idx = np.flatnonzero(groups == str(est.level))
        if len(idx) != est.k:
            raise DataError(f"forest plot: subgroup {by} = {est.level} has k = {est.k} in the "
                            f"result but {len(idx)} rows in data")
        fit = models.get(str(est.level))
        parts.append((str(est.level), est, fit, idx))
    test = (subgroups.q_between, subgroups.q_between_df, getattr(subgroups, "q_between_df2", None),
            subgroups.q_between_pvalue)
    return parts, test


def _columns_for(columns, frame) -> list:
    """The requested columns; the default set keeps only those the data has."""
    if columns is None:
        return [c for c in DEFAULT_COLUMNS if c in RIGHT_COLUMNS or c in frame.columns]
    if isinstance(columns, str):
        columns = [c.strip() for c in columns.split(",") if c.strip()]
    missing = [c for c in columns if c not in RIGHT_COLUMNS and c != "label"
               and c not in frame.columns]
    if missing:
        raise DataError(f"forest plot: column(s) {', '.join(missing)} not in the data; "
                        f"available: {', '.join(map(str, frame.columns))}, weight, ci")
    return list(columns)


# --- public plotting functions --------------------------------------------------------------------

def forest_rows(result, *, data=None, subgroups=None, columns=None, sort=None, group_by="citekey",
                show_pi=True, summary_label=None, show_studies=True, by_label=None):
    """The table a forest plot draws (list of rows); used by forest_plot() and forest_figures()."""
    rows: list[_Row] = []
    if subgroups is None:
        if result is None:
            raise DataError("forest plot: nothing to draw (no result and no subgroups)")
        r_scale = _is_r_scale(result, "auto")
        level = float(getattr(result, "level", 95))
        frame = _as_frame(result, data)
        cols = _columns_for(columns, frame)
        weights = _model_weights(result)
        if show_studies:
            rows += _finding_rows(result.yi, result.vi, weights, frame, cols, sort=sort,
                                  r_scale=r_scale, level=level, group_by=group_by)
        label = summary_label or model_name(result)
        rows += [_Row("blank", keep=10**6)] if show_studies else []
        rows += _summary_rows(result, r_scale=r_scale, label=label, show_pi=show_pi, level=level,
                              keep=10**6, group_by=group_by)
        return rows, cols, r_scale, level

    if data is None:
        raise DataError("forest plot with subgroups needs data (the rows the subgroups split)")
    frame = data.reset_index(drop=True)
    if "label" not in frame.columns:
        raise DataError("forest plot: data needs a label column")
    parts, (qb, qb_df, qb_df2, qb_p) = _subgroup_parts(subgroups, frame)
    r_scale = getattr(subgroups, "measure", "ZCOR") == "ZCOR"
    level = float(getattr(subgroups, "level", 95))
    by_label = by_label if by_label is not None else str(subgroups.by).replace("_", " ").capitalize()
    cols = _columns_for(columns, frame)
    if result is not None and len(np.asarray(result.yi)) != len(frame):
        raise DataError(f"forest plot: data has {len(frame)} rows but the overall result has "
                        f"k = {len(np.asarray(result.yi))}")
    yi_all = frame["yi"].to_numpy(dtype=float) if "yi" in frame.columns else np.asarray(result.yi)
    vi_all = frame["vi"].to_numpy(dtype=float) if "vi" in frame.columns else np.asarray(result.vi)
    band0 = 0
    keep = 0
    for level_name, est, fit, idx in parts:
        keep += 1
        summary = fit if fit is not None else est
        head = f"{by_label}: {level_name}" if by_label else level_name
        if not show_studies:  # one diamond per subgroup
            rows += _summary_rows(summary, r_scale=r_scale, label=f"{head} (k = {est.k})",
                                  show_pi=False, level=level, keep=keep, bold=False, note=False,
                                  weight_text="")
            continue
        first_row = len(rows)
        rows.append(_Row("group", {"label": head}, bold=True, keep=keep * 10**4))
        sub = frame.iloc[idx].reset_index(drop=True)
        yi, vi = yi_all[idx], vi_all[idx]
        if fit is not None:
            w = _model_weights(fit)
        else:  # a common tau^2: inverse-variance weights within the subgroup
            w = _iv_weights(vi, est.tau2)
        part_rows = _finding_rows(yi, vi, w, sub, cols, sort=sort, r_scale=r_scale, level=level,
                                  group_by=group_by, keep0=keep * 10**4, band0=band0)
        band0 += len({r.band for r in part_rows})
        rows += part_rows
        rows += _summary_rows(summary, r_scale=r_scale, label="Subgroup estimate",
                              show_pi=show_pi, level=level, keep=keep * 10**4 + 9999, bold=False,
                              weight_text="", note=fit is not None, group_by=group_by)
        rows.append(_Row("blank", keep=keep * 10**4 + 9999))
        for r in rows[first_row:]:
            r.block = keep
    if not show_studies:
        rows.append(_Row("blank", keep=10**6))
    if result is not None:
        label = summary_label or f"Overall: {model_name(result)}"
        rows += _summary_rows(result, r_scale=r_scale, label=label, show_pi=show_pi, level=level,
                              keep=10**6, group_by=group_by)
    stat = f"F({int(qb_df)}, {int(qb_df2)})" if qb_df2 is not None else f"Q({int(qb_df)})"
    rows.append(_Row("note", {"label": f"Test for subgroup differences: {stat} = {fmt_num(qb)}, "
                                       f"{fmt_p(qb_p)}"}, keep=10**6))
    return rows, cols, r_scale, level


def forest_plot(result, ax=None, *, data=None, subgroups=None, columns=None, sort=None,
                group_by="citekey", show_pi=True, show_studies=True, summary_label=None,
                by_label=None, width="double", font_size=FONT_SIZE, xlim=None, xlabel=None,
                title=None, column_titles=None):
    """Draw a forest plot of a fitted model and return the axes.

    Parameters
    ----------
    result : RandomEffectsResult or ThreeLevelResult (or None with ``subgroups``)
        The fitted model; its ``yi``, ``vi`` and weights give the rows, its estimate, CI and PI
        the summary diamond and prediction interval.
    ax : matplotlib Axes, optional
        Draw into these axes (the text columns are placed beside them; leave room in the figure).
        With None a figure is created: width from ``width``, height from the number of rows.
    data : DataFrame, optional
        The findings rows the model was fitted on, in the same order (``label``, ``citekey`` and
        the columns to show).
    subgroups : SubgroupResult, optional
        Draw one block per subgroup, each with its own diamond, and the Q-between line.
    columns : sequence of str
        Columns besides the label: any data column (instrument, rater, n, year...), ``weight``
        (percent) and ``ci`` (estimate with CI). Default: instrument, rater, n, weight, ci.
    sort : 'estimate', 'year', 'label' or None (data order)
    group_by : column that identifies a study; its findings are drawn together under its label.
    width : 'single' (84 mm), 'onehalf' (129 mm), 'double' (174 mm) or a width in mm.
    xlim : (lower, upper) on the display scale (r for correlations); CIs beyond get arrows.

    Returns
    -------
    matplotlib.axes.Axes
    """
    rows, cols, r_scale, level = forest_rows(result, data=data, subgroups=subgroups,
                                             columns=columns, sort=sort, group_by=group_by,
                                             show_pi=show_pi, summary_label=summary_label,
                                             show_studies=show_studies, by_label=by_label)
    columns_ = _make_columns(cols, r_scale, level, column_titles)
    ref = float(result.estimate) if result is not None else None
    xlabel = _xlabel(r_scale) if xlabel is None else xlabel
    return _render(rows, columns_, ax=ax, width=width, font_size=font_size, r_scale=r_scale,
                   xlim=xlim, xlabel=xlabel, ref_line=ref, title=title, pages=False,
                   page_height_mm=PAGE_HEIGHT_MM)[0]


def forest_figures(result, *, max_rows=None, page_height_mm=PAGE_HEIGHT_MM, **kwargs):
    """Like forest_plot(), split into pages that fit a journal page; returns a list of figures.

    Study groups and the summary block are never split across pages; every page repeats the
    column headers and uses the same axis, so pages can be read side by side.
    """
    ax = kwargs.pop("ax", None)
    if ax is not None:
        raise OptionError("forest_figures() makes its own figures: use forest_plot(ax=...) instead")
    rows, cols, r_scale, level = forest_rows(
        result, data=kwargs.pop("data", None), subgroups=kwargs.pop("subgroups", None),
        columns=kwargs.pop("columns", None), sort=kwargs.pop("sort", None),
        group_by=kwargs.pop("group_by", "citekey"), show_pi=kwargs.pop("show_pi", True),
        summary_label=kwargs.pop("summary_label", None),
        show_studies=kwargs.pop("show_studies", True), by_label=kwargs.pop("by_label", None))
    columns_ = _make_columns(cols, r_scale, level, kwargs.pop("column_titles", None))
    ref = float(result.estimate) if result is not None else None
    xlabel = kwargs.pop("xlabel", None)
    xlabel = _xlabel(r_scale) if xlabel is None else xlabel
    xlim = kwargs.pop("xlim", None)
    if xlim is None:
        # one axis for all pages
        lo, hi, _, must = _axis_range(rows, None, r_scale)
        if r_scale:
            panel = 0.4 * width_inches(kwargs.get("width", "double")) * PT_PER_INCH
            rmust = (math.tanh(must[0]), math.tanh(must[1]))
            xlim = _nice_r_ticks(math.tanh(lo), math.tanh(hi), panel, FONT_SIZE, rmust)[:2]
        else:
            xlim = (lo, hi)
    axes = _render(rows, columns_, ax=None, width=kwargs.pop("width", "double"),
                   font_size=kwargs.pop("font_size", FONT_SIZE), r_scale=r_scale, xlim=xlim,
                   xlabel=xlabel, ref_line=ref, title=kwargs.pop("title", None), pages=True,
                   page_height_mm=page_height_mm, max_rows=max_rows)
    if kwargs:
        raise OptionError(f"forest_figures: unknown option(s) {', '.join(kwargs)}")
    return [a.figure for a in axes]


def _xlabel(r_scale: bool) -> str:
    return "Correlation r (Fisher z axis)" if r_scale else "Effect size"


# --- interval tables: cumulative, leave-one-out, subgroup summaries --------------------------------

@dataclass
class IntervalTable:
    """Rows of estimates with CIs on the model scale, for interval_plot().

    ``extra`` maps a column key to one text per row (e.g. {"k": [...], "tau2": [...]}).
    """

    labels: list
    estimate: list
    ci_lower: list
    ci_upper: list
    extra: dict = field(default_factory=dict)
    extra_titles: dict = field(default_factory=dict)
    measure: str = "ZCOR"
    level: float = 95.0


def _table_from(records, *, label_key="label", measure="ZCOR", level=95.0, extra=()):
    """An IntervalTable from a sensitivity result (``to_frame()``), a DataFrame or a list of
    dicts with label, estimate, ci_lower, ci_upper on the model scale."""
    import pandas as pd

    if isinstance(records, IntervalTable):
        return records
    level = float(getattr(records, "level", level))
    frame = records.to_frame() if hasattr(records, "to_frame") else pd.DataFrame(records)
    need = [label_key, "estimate", "ci_lower", "ci_upper"]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise DataError(f"interval table: missing column(s) {', '.join(missing)}")
    ext = {key: frame[key].tolist() for key in extra if key in frame.columns}
    return IntervalTable([str(v) for v in frame[label_key]], frame["estimate"].astype(float).tolist(),
                         frame["ci_lower"].astype(float).tolist(),
                         frame["ci_upper"].astype(float).tolist(), ext, {}, measure, level)


def interval_plot(table: IntervalTable, ax=None, *, overall=None, overall_label=None, width="onehalf",
                  font_size=FONT_SIZE, xlim=None, xlabel=None, title=None, label_title="Study",
                  ci_title=None, show_pi=False, pages=False, max_rows=None):
    """Points with CIs, one per row (cumulative and leave-one-out analyses), and an optional
    overall diamond; returns the axes (or, with ``pages=True``, a list of figures)."""
    r_scale = table.measure == "ZCOR"
    n = len(table.labels)
    if not (len(table.estimate) == len(table.ci_lower) == len(table.ci_upper) == n) or n == 0:
        raise DataError("interval plot: labels, estimate, ci_lower and ci_upper need the same, "
                        "non-zero length")
    # extra["ci"], when given, replaces the estimate-and-CI text (e.g. a CI not reported)
    extra_keys = [k for k in table.extra if k != "ci"]
    rows = []
    for i in range(n):
        est, lo, hi = (float(table.estimate[i]), float(table.ci_lower[i]), float(table.ci_upper[i]))
        if not all(np.isfinite([est, lo, hi])):
            raise DataError(f"interval plot: row {i + 1} ({table.labels[i]}) has a missing value")
        cells = {"label": _truncate(_clean(table.labels[i]), 48), "ci": _est_text(est, lo, hi, r_scale)}
        for key in extra_keys:
            value = table.extra[key][i]
            cells[key] = value if isinstance(value, str) else _clean(value)
        if "ci" in table.extra:
            cells["ci"] = str(table.extra["ci"][i])
        rows.append(_Row("point", cells, est=est, lo=lo, hi=hi, keep=i, band=-1))
    ref = None
    if overall is not None:
        ref = float(overall.estimate)
        rows.append(_Row("blank", keep=10**6))
        rows += _summary_rows(overall, r_scale=r_scale, show_pi=show_pi, level=table.level,
                              keep=10**6, label=overall_label or model_name(overall),
                              note=False, weight_text="")
    titles = {"label": label_title, **table.extra_titles}
    if ci_title:
        titles["ci"] = ci_title
    columns = _make_columns(extra_keys + ["ci"], r_scale, table.level, titles)
    for col in columns:  # extra columns of an interval table hold numbers: right-align them
        if col.key in extra_keys:
            col.align = "right"
    xlabel = _xlabel(r_scale) if xlabel is None else xlabel
    axes = _render(rows, columns, ax=ax, width=width, font_size=font_size, r_scale=r_scale,
                   xlim=xlim, xlabel=xlabel, ref_line=ref, title=title, pages=pages,
                   page_height_mm=PAGE_HEIGHT_MM, max_rows=max_rows)
    return [a.figure for a in axes] if pages else axes[0]


def cumulative_forest_plot(cumulative, ax=None, *, overall=None, measure="ZCOR", level=95.0,
                           **kwargs):
    """Cumulative meta-analysis: row i pools the first i studies (in the order given, e.g. by year).

    ``cumulative`` is the sensitivity module's cumulative result: a DataFrame or list of dicts
    with label, estimate, ci_lower, ci_upper (model scale) and optionally k, tau2, i2.
    """
    table = _table_from(cumulative, measure=measure, level=level, extra=("k", "i2"))
    table.labels = [f"+ {lab}" if i else lab for i, lab in enumerate(table.labels)]
    if "k" in table.extra:
        table.extra["k"] = [fmt_int(v) for v in table.extra["k"]]
        table.extra_titles["k"] = "k"
    if "i2" in table.extra:
        table.extra["i2"] = [fmt_pct(v, 0) for v in table.extra["i2"]]
        table.extra_titles["i2"] = "I\u00b2"
    kwargs.setdefault("label_title", "Study added")
    return interval_plot(table, ax, overall=overall, **kwargs)


def leave_one_out_plot(loo, ax=None, *, overall=None, measure="ZCOR", level=95.0, **kwargs):
    """Leave-one-out analysis: row i pools all studies but study i."""
    table = _table_from(loo, measure=measure, level=level, extra=("tau2", "i2"))
    table.labels = [f"Omitting {lab}" for lab in table.labels]
    if "tau2" in table.extra:
        table.extra["tau2"] = [fmt_num(v, 3) for v in table.extra["tau2"]]
        table.extra_titles["tau2"] = "\u03c4\u00b2"
    if "i2" in table.extra:
        table.extra["i2"] = [fmt_pct(v, 0) for v in table.extra["i2"]]
        table.extra_titles["i2"] = "I\u00b2"
    kwargs.setdefault("label_title", "Analysis")
    return interval_plot(table, ax, overall=overall, **kwargs)


# --- funnel plot ---------------------------------------------------------------------------------

def funnel_plot(result, ax=None, *, trimfill=None, contours=True, width="single",
                height_mm=None, font_size=FONT_SIZE, title=None, level=None):
    """Journal-style funnel plot: effect (x; r axis for correlations) against standard error
    (y, 0 at the top), the pseudo confidence region around the model's estimate and, with
    ``contours=True``, the contour-enhanced regions of significance around zero (Peters et al.,
    2008). ``trimfill`` (a ``bias.TrimFillResult``) adds the filled studies as open circles and
    the adjusted estimate as a dashed line. The geometry is ``plots_bias.funnel_data``'s (one
    implementation); this function draws it at print size. Returns the axes.
    """
    import matplotlib
    from matplotlib.patches import Polygon

    from metaalliance.figures.bias_plots import CONTOUR_SHADES, funnel_data

    d = funnel_data(result, trimfill=trimfill, level=level)
    r_scale = _is_r_scale(result, "auto")
    top = d["se_top"]
    with matplotlib.rc_context(journal_rc(font_size)):
        if ax is None:
            w = width_inches(width)
            h = (height_mm / MM_PER_INCH) if height_mm else w * 0.8
            fig = _new_figure(w, h)
            ax = fig.add_axes([0.14, 0.30, 0.82, 0.64 if not title else 0.58])
        xs = np.concatenate([d["yi"], d["filled_yi"], d["pseudo_ci"]["lower"],
                             d["pseudo_ci"]["upper"], [0.0]])
        if contours:
            z = max(c["z"] for c in d["contours"])
            xs = np.concatenate([xs, [-z * top, z * top]])
        pad = 0.04 * float(xs.max() - xs.min() or 1.0)
        lo, hi = float(xs.min()) - pad, float(xs.max()) + pad
        if r_scale:  # the r axis ends at +-R_AXIS_LIMIT; points beyond sit on the edge
            lo = max(lo, -math.atanh(R_AXIS_LIMIT))
            hi = min(hi, math.atanh(R_AXIS_LIMIT))
        if contours:
            p_levels = [c["p"] for c in d["contours"]]
            for reg in d["regions"]:
                i = p_levels.index(reg["p_upper"])
                label = None
                if reg["side"] > 0:
                    upper, lower = fmt_r(reg["p_upper"]), fmt_r(reg["p_lower"])
                    label = f"p < {upper}" if reg["p_lower"] == 0 else f"{lower} < p < {upper}"
                ax.add_patch(Polygon(reg["polygon"], closed=True,
                                     facecolor=CONTOUR_SHADES[min(i, len(CONTOUR_SHADES) - 1)],
                                     edgecolor="none", zorder=0, gid="funnel-contour",
                                     label=label))
        ci = d["pseudo_ci"]
        ax.plot([ci["lower"][1], d["estimate"], ci["upper"][1]], [top, 0, top], color="black",
                lw=0.6, ls=(0, (3, 2)), zorder=1, gid="funnel-pseudo-ci",
                label=f"{d['level']:g}% pseudo CI")
        ax.plot([d["estimate"]] * 2, [0, top], color="black", lw=0.7, zorder=1,
                gid="funnel-estimate", label="model estimate")
        if trimfill is not None and trimfill.k0 > 0:
            ax.plot([d["adjusted_estimate"]] * 2, [0, top], color="black", lw=0.7,
                    ls=(0, (1, 1.5)), zorder=1, gid="funnel-adjusted",
                    label="trim-and-fill estimate")
        # smaller points for many findings; a thin white rim keeps overlapping points apart
        size = 14 if d["yi"].size < 100 else 8
        ax.scatter(np.clip(d["yi"], lo, hi), d["se"], s=size, color="black", edgecolors="white",
                   linewidths=0.3, zorder=3, gid="funnel-points", label="findings", clip_on=False)
        if d["filled_yi"].size:
            ax.scatter(np.clip(d["filled_yi"], lo, hi), d["filled_se"], s=size,
                       facecolors="white", edgecolors="black", lw=0.6, zorder=3,
                       gid="funnel-filled", label="filled (trim and fill)", clip_on=False)
        ax.set_ylim(top, 0)
        from matplotlib.ticker import FuncFormatter, MaxNLocator

        ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: "0" if v == 0 else fmt_r(v)))
        ax.set_ylabel("Standard error")
        panel_pt = ax.get_position().width * ax.figure.get_figwidth() * PT_PER_INCH
        _set_effect_axis(ax, lo, hi, r_scale, panel_pt, font_size, fixed=True)
        ax.set_xlabel(_xlabel(r_scale))
        for side in ("right", "top"):
            ax.spines[side].set_visible(False)
        # the legend sits below the axis label, never on the points
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False,
                  fontsize=font_size - 0.5, handlelength=1.6, columnspacing=1.5,
                  borderaxespad=0.0)
        if title:
            ax.set_title(title, loc="left", fontweight="bold")
    return ax


# --- bubble plot (meta-regression on one continuous moderator) ------------------------------------

def bubble_plot(x, yi, vi, ax=None, *, fit=None, tau2=0.0, measure="ZCOR", xlabel="Moderator",
                width="single", font_size=FONT_SIZE, title=None, level=95.0):
    """Effects against a continuous moderator, circle area proportional to the weight
    1/(vi + tau2); with ``fit`` (intercept, slope[, vcov 2x2]) the regression line and its CI band."""
    import matplotlib

    x = np.asarray(x, dtype=float)
    yi = np.asarray(yi, dtype=float)
    vi = np.asarray(vi, dtype=float)
    if not (x.shape == yi.shape == vi.shape) or x.size == 0:
        raise DataError("bubble plot: x, yi and vi need the same, non-zero length")
    if np.any(~np.isfinite(x)) or np.any(~np.isfinite(yi)) or np.any(vi <= 0):
        raise DataError("bubble plot: x and yi must be finite and vi positive")
    r_scale = measure == "ZCOR"
    w = 1.0 / (vi + float(tau2))
    # circle area proportional to the weight; smaller circles when there are many
    sizes = 4 + 80 * min(1.0, math.sqrt(40.0 / x.size)) * w / w.max()
    with matplotlib.rc_context(journal_rc(font_size)):
        if ax is None:
            wi = width_inches(width)
            fig = _new_figure(wi, wi * 0.75)
            ax = fig.add_axes([0.16, 0.15, 0.80, 0.78 if not title else 0.72])
        ax.scatter(x, yi, s=sizes, facecolors="0.75", edgecolors="black", lw=0.5, zorder=2,
                   gid="bubble-points")
        if fit is not None:
            b0, b1 = float(fit[0]), float(fit[1])
            grid = np.linspace(x.min(), x.max(), 101)
            pred = b0 + b1 * grid
            if len(fit) > 2 and fit[2] is not None:
                v = np.asarray(fit[2], dtype=float)
                se = np.sqrt(v[0, 0] + 2 * grid * v[0, 1] + grid ** 2 * v[1, 1])
                crit = _crit(level)
                ax.fill_between(grid, pred - crit * se, pred + crit * se, color="0.88", lw=0,
                                zorder=1, gid="bubble-band")
            ax.plot(grid, pred, color="black", lw=0.9, zorder=3, gid="bubble-line")
        lo = float(min(yi.min(), 0.0))
        hi = float(yi.max())
        pad = 0.08 * (hi - lo or 1.0)
        panel_pt = ax.get_position().height * ax.figure.get_figheight() * PT_PER_INCH
        _set_effect_axis(ax, lo - pad, hi + pad, r_scale, panel_pt, font_size, fixed=True, axis="y")
        ax.axhline(0, color=_GREY, lw=0.5, zorder=0)
        if np.all(x == np.round(x)):  # years and counts: whole-number ticks, no separators
            from matplotlib.ticker import FormatStrFormatter, MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
            ax.xaxis.set_major_formatter(FormatStrFormatter("%d"))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Correlation r (Fisher z axis)" if r_scale else "Effect size")
        for side in ("right", "top"):
            ax.spines[side].set_visible(False)
        if title:
            ax.set_title(title, loc="left", fontweight="bold")
    return ax


__all__ = [
    "FORMATS", "JOURNAL_WIDTHS_MM", "SORTS", "IntervalTable", "bubble_plot",
    "cumulative_forest_plot", "forest_figures", "forest_plot", "forest_rows", "funnel_plot",
    "heterogeneity_text", "interval_plot", "journal_rc", "leave_one_out_plot", "model_name",
    "save_figure", "width_inches",
]
