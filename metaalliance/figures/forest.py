"""Forest plots: rows built from a fitted model (findings, subgroups, summary, prediction
interval), drawn on one page (``forest_plot``) or split into pages (``forest_figures``).
"""

from __future__ import annotations

import math

import numpy as np

from metaalliance.errors import DataError, OptionError
from metaalliance.options import check_option
from metaalliance.formatting import (distinct_labels, fmt_ci, fmt_est_ci, fmt_int, fmt_num, fmt_p,
                                     fmt_pct)
from metaalliance.figures.style import (SORTS, RIGHT_COLUMNS, DEFAULT_COLUMNS, PT_PER_INCH,
                                        FONT_SIZE, PAGE_HEIGHT_MM, width_inches, _clean, _truncate)
from metaalliance.figures.rows import _Row, _make_columns, _nice_r_ticks, _axis_range, _render


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
