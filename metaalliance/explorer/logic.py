"""The explorer's server logic as plain functions (no Shiny here): the app, the tests and the
benchmark call them.

Every number comes from the package API (``engine.models``, ``engine.multilevel``,
``analyses.bias``, ``analyses.sensitivity``) and every figure from ``figures.plots``; the
selection follows ``cli.select`` (``--where`` through ``dataset.selection.apply_where``, the
adherence/retention/dropout findings apart unless selected), so that the command line
:func:`command_line` prints gives the numbers the app shows. Nothing here writes a file except
:func:`figure_bytes`, into a temporary folder of its own.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import math
import shlex
from dataclasses import dataclass, field

from metaalliance.errors import DataError, MetaAllianceError, MetaAllianceWarning

#: the tags the sidebar filters on, in order, with their titles (curated data; a CSV gets the
#: ones among its columns)
TAGS = (("diagnosis", "Diagnosis"), ("population", "Population"), ("setting", "Setting"),
        ("modality", "Modality"), ("treatment", "Treatment"), ("instrument", "Instrument"),
        ("rater", "Rater"), ("timing", "Timing"), ("outcome_domain", "Outcome domain"),
        ("effect_type", "Effect type"), ("stat_type", "Statistic reported"),
        ("conversion", "How read (conversion)"))
#: working models: key -> (title, cluster column or None, composite?)
MODELS = {"independent": ("Findings independent", None, False),
          "three_level_sample": ("Three-level, within samples", "sample", False),
          "three_level_study": ("Three-level, within studies", "citekey", False),
          "composite_sample": ("One composite per sample", "sample", True)}
#: a forest preview with more findings than this shows the pooled rows only (drawing 1,000
#: rows takes half a minute); the download always has every finding
PREVIEW_MAX_ROWS = 60
#: figure widths offered for downloads (mm): single, one and a half, double column
WIDTHS_MM = (84, 129, 174)
DOWNLOAD_FORMATS = ("pdf", "png", "svg")
#: the findings table columns (curated data), with titles
TABLE_COLUMNS = (("label", "Study"), ("finding_id", "Finding"), ("n", "N"), ("r", "r"),
                 ("source", "Source"), ("locator", "Locator"), ("instrument", "Instrument"),
                 ("rater", "Rater"), ("timing", "Timing"), ("outcome_measure", "Outcome"))


@dataclass(frozen=True)
class Dataset:
    """What the explorer was started on: all rows, read once (the app never reads again)."""
    frame: object                 # pandas DataFrame: every row (curated: every domain)
    measure: str                  # "ZCOR" or "generic"
    source: str                   # "curated" or the CSV's display path
    argv: tuple                   # dataset options for the command line (--data ... --r ...)
    base_where: tuple = ()        # --where given at start-up: always applied
    all_domains: bool = False     # --all-domains given at start-up
    omitted: int = 0              # CSV rows omitted at reading (missing values)

    @property
    def curated(self) -> bool:
        return self.source == "curated"

    def tags(self) -> list:
        """[(field, title, [(level, count), ...]), ...] for the tags this dataset has."""
        df = self.frame
        out = []
        for fld, title in TAGS:
            if fld in df.columns:
                counts = df[fld].dropna().astype(str).value_counts()
                out.append((fld, title, sorted(counts.items())))
        return out

    def years(self):
        """(min, max) publication year, or None."""
        import pandas as pd

        if "year" not in self.frame.columns:
            return None
        y = pd.to_numeric(self.frame["year"], errors="coerce").dropna()
        return (int(y.min()), int(y.max())) if len(y) else None

    def default_domains(self) -> list:
        """The outcome domains selected at start: all but adherence/retention/dropout (as
        the command line), or all of them with --all-domains or a CSV."""
        from metaalliance.options import SEPARATE_DOMAINS

        if "outcome_domain" not in self.frame.columns:
            return []
        levels = sorted(self.frame["outcome_domain"].dropna().astype(str).unique())
        if not self.curated or self.all_domains:
            return levels
        return [lv for lv in levels if lv not in SEPARATE_DOMAINS]

    def models(self) -> dict:
        """The working models this dataset allows (a cluster column must exist)."""
        return {key: m for key, m in MODELS.items()
                if m[1] is None or m[1] in self.frame.columns}


def load_dataset(args) -> Dataset:
    """The dataset of ``metaalliance explore``'s options, read and checked once at start-up
    (a CSV without a named column is one clear error here, not in the browser)."""
    from metaalliance.cli import _parse_where, apply_where

    where = tuple((f, tuple(v)) for f, v in _parse_where(getattr(args, "where", []) or []))
    if getattr(args, "data", None):
        from metaalliance.dataset.tabular import read_effects

        sel = read_effects(args.data, r=args.r_col, n=args.n_col, yi=args.yi_col,
                           vi=args.vi_col, label=getattr(args, "label_col", None))
        df = sel["frame"].copy()
        df["label"] = sel["labels"]
        apply_where(df, [(f, list(v)) for f, v in where], sel["source"])   # checks the fields
        argv = ["--data", str(args.data)]
        for flag, attr in (("--r", "r_col"), ("--n", "n_col"), ("--yi", "yi_col"),
                           ("--vi", "vi_col"), ("--label", "label_col")):
            if getattr(args, attr, None):
                argv += [flag, getattr(args, attr)]
        return Dataset(frame=df.reset_index(drop=True), measure=sel["measure"],
                       source=sel["source"], argv=tuple(argv), base_where=where,
                       omitted=int(sel["omitted"]))
    for flag in ("r_col", "n_col", "yi_col", "vi_col", "label_col"):
        if getattr(args, flag, None):
            from metaalliance.errors import OptionError

            raise OptionError(f"--{flag[:-4].replace('_', '-')} needs --data CSV "
                              "(the curated dataset has its own r and n)")
    from metaalliance.dataset import findings

    df = findings.load(getattr(args, "findings", None), getattr(args, "bib", None))
    apply_where(df, [(f, list(v)) for f, v in where], "the curated dataset")
    argv = []
    if getattr(args, "findings", None):
        argv += ["--findings", str(args.findings)]
    if getattr(args, "bib", None):
        argv += ["--bib", str(args.bib)]
    return Dataset(frame=df.reset_index(drop=True), measure="ZCOR", source="curated",
                   argv=tuple(argv), base_where=where,
                   all_domains=bool(getattr(args, "all_domains", False)))


# --- what the user chose ---------------------------------------------------------------------

@dataclass(frozen=True)
class View:
    """One state of the sidebar: the levels kept per tag (a tag absent = every level), the
    year range, and the model."""
    levels: tuple = ()            # ((field, (level, ...)), ...) for the tags the user changed
    years: tuple | None = None    # (lo, hi) inclusive, or None for all
    method: str = "REML"
    test: str = "z"
    model: str = "independent"
    rho: float = 0.5
    level: float = 95.0
    control: str = "metafor"


def view_from_inputs(ds: Dataset, chosen: dict, years=None, **model) -> View:
    """A View from the sidebar's values: ``chosen`` maps a tag to the levels ticked. A tag
    with every level ticked is no filter (outcome domain: the command line's default set)."""
    levels = []
    for fld, _title, counts in ds.tags():
        if fld not in chosen or chosen[fld] is None:
            continue
        picked = tuple(sorted(str(v) for v in chosen[fld]))
        every = tuple(sorted(lv for lv, _ in counts))
        if fld == "outcome_domain":
            if picked == tuple(sorted(ds.default_domains())):
                continue
        elif picked == every:
            continue
        levels.append((fld, picked))
    yr = ds.years()
    if years is not None and yr is not None:
        lo, hi = int(years[0]), int(years[1])
        years = None if (lo <= yr[0] and hi >= yr[1]) else (lo, hi)
    else:
        years = None
    return View(levels=tuple(levels), years=years, **model)


def where_items(ds: Dataset, view: View) -> list:
    """The --where filters of a view: [(field, [values])] (start-up filters first). The year
    range becomes the list of the years present in it (``--where`` compares values)."""
    import pandas as pd

    items = [(f, list(v)) for f, v in ds.base_where]
    items += [(f, list(v)) for f, v in view.levels]
    if view.years is not None:
        col = ds.frame["year"]
        num = pd.to_numeric(col, errors="coerce")
        keep = (num >= view.years[0]) & (num <= view.years[1])
        values = sorted({str(x) for x in col[keep]}, key=lambda s: (float(s), s))
        items.append(("year", values))
    return items


def _outcome_where(ds: Dataset, view: View) -> bool:
    return any(f == "outcome_domain" for f, _ in ds.base_where) or \
        any(f == "outcome_domain" for f, _ in view.levels)


@dataclass(frozen=True)
class Selected:
    """The rows a view selects, as ``cli.select`` returns them for the command line."""
    frame: object
    yi: object
    vi: object
    labels: list
    apart: int = 0                 # adherence/retention/dropout findings kept apart
    empty_field: str | None = None  # a tag with no level ticked

    @property
    def k(self) -> int:
        return len(self.yi)


def select(ds: Dataset, view: View) -> Selected:
    """The findings of a view: ``apply_where`` of the filters, then (curated data, no outcome
    domain chosen, no --all-domains) the adherence/retention/dropout findings apart, as
    ``cli.select``. Labels as ``cli.select`` makes them."""
    import numpy as np

    from metaalliance.dataset.selection import apply_where
    from metaalliance.options import SEPARATE_DOMAINS

    items = where_items(ds, view)
    empty = next((f for f, v in items if not v), None)
    df = ds.frame
    if empty is None:
        df = apply_where(df, items, ds.source if not ds.curated else "the curated dataset")
    else:
        df = df.iloc[0:0]
    apart = 0
    if ds.curated and not ds.all_domains and not _outcome_where(ds, view):
        mask = df["outcome_domain"].isin(SEPARATE_DOMAINS)
        apart = int(mask.sum())
        df = df[~mask]
    df = df.reset_index(drop=True)
    if ds.curated:
        counts = df["citekey"].value_counts()
        labels = [f"{lab} {fid}" if counts[ck] > 1 else lab
                  for lab, fid, ck in zip(df["label"], df["finding_id"], df["citekey"])]
    else:
        labels = list(df["label"])
    return Selected(frame=df, yi=df["yi"].to_numpy(dtype=float),
                    vi=df["vi"].to_numpy(dtype=float), labels=labels, apart=apart,
                    empty_field=empty)


# --- the command line that reproduces a view -------------------------------------------------

def _args(ds: Dataset, view: View, *, model=True) -> list:
    out = list(ds.argv)
    for fld, values in where_items(ds, view):
        out += ["--where", f"{fld}={','.join(values)}"]
    if ds.all_domains:
        out.append("--all-domains")
    if view.method != "REML":
        out += ["--method", view.method]
    if view.test != "z":
        out += ["--test", view.test]
    if view.level != 95:
        out += ["--level", f"{view.level:g}"]
    if view.control != "metafor":
        out += ["--control", view.control]
    if model:
        _title, cluster, composite = MODELS[view.model]
        if composite:
            out += ["--aggregate", cluster]
            if view.rho != 0.5:
                out += ["--rho", f"{view.rho:g}"]
        elif cluster:
            out += ["--cluster", cluster]
    return out


def command_line(ds: Dataset, view: View, command: str = "pool", *, json=True,
                 extra=()) -> str:
    """``metaalliance pool ... --json``: the command that prints the numbers of this view.
    ``command`` bias, sensitivity, forest, funnel get the same selection (and the model where
    the command has it)."""
    model = command in ("pool", "forest")
    args = ["metaalliance", command] + _args(ds, view, model=model)
    if command == "forest" and MODELS[view.model][2]:
        args = ["metaalliance", command] + _args(ds, view, model=False)
    args += list(extra)
    if json:
        args.append("--json")
    return " ".join(shlex.quote(a) for a in args)


# --- fitting ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fitted:
    """The model of a view, or why there is none."""
    fit: object = None             # RandomEffectsResult or ThreeLevelResult
    data: object = None            # the rows of the fit (findings, or one per composite)
    numbers: dict = field(default_factory=dict)  # as `pool --json` prints them
    message: str | None = None     # the reason there is no fit (fewer than 2 findings ...)
    group_by: str = "citekey"
    warnings: tuple = ()           # what the command line prints as `warning: ...`


def _too_few(sel: Selected) -> str:
    if sel.empty_field:
        return (f"No findings selected: no level of {sel.empty_field} is ticked. "
                "Tick at least one.")
    extra = (f" ({sel.apart} adherence/retention/dropout finding(s) are kept apart; tick "
             "their outcome domain to include them)" if sel.apart else "")
    return (f"Fewer than 2 findings in this selection (k = {sel.k}){extra}: a pooled estimate "
            "needs at least 2. Tick more levels or widen the year range.")


def fit_view(ds: Dataset, view: View, sel: Selected | None = None) -> Fitted:
    """The pooled model of a view, as ``metaalliance pool`` (with --cluster or --aggregate
    for the working models) fits it; the warnings the command line prints come along."""
    import warnings

    sel = select(ds, view) if sel is None else sel
    if sel.k < 2:
        return Fitted(message=_too_few(sel))
    _title, cluster, composite = MODELS[view.model]
    common = dict(method=view.method, level=view.level, measure=ds.measure)
    if cluster and not composite and view.method not in ("REML", "ML"):
        return Fitted(message=f"The three-level model is fitted by REML or ML (as metafor's "
                              f"rma.mv), not {view.method}: choose REML or ML as the "
                              "estimator, or another working model.")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fitted = _fit(ds, view, sel, cluster, composite, common)
    except MetaAllianceError as exc:
        return Fitted(message=f"This model cannot be fitted here: {exc}")
    seen = tuple(dict.fromkeys(str(w.message) for w in caught
                               if issubclass(w.category, MetaAllianceWarning)))
    return dataclasses.replace(fitted, warnings=seen)


def _fit(ds, view, sel, cluster, composite, common) -> Fitted:
    from metaalliance.engine import models

    if composite:
        from metaalliance.commands.pool import composite_fit

        fit, data = composite_fit(sel.frame, sel.yi, sel.vi, cluster, view.rho,
                                  test=view.test, control=view.control, **common)
        numbers = fit.to_dict()
        numbers["omitted"] = ds.omitted
        numbers["aggregate"] = {"cluster": cluster, "rho": view.rho, "k_findings": sel.k}
        return Fitted(fit=fit, data=data, numbers=numbers, group_by="citekey")
    if cluster:
        fit = models.three_level(sel.yi, sel.vi, sel.frame[cluster].astype(str).to_numpy(),
                                 test="t" if view.test == "knha" else view.test,
                                 labels=sel.labels, **common)
        numbers = fit.to_dict()
        numbers.setdefault("omitted", ds.omitted)
        return Fitted(fit=fit, data=sel.frame, numbers=numbers, group_by=cluster)
    fit = models.random_effects(sel.yi, sel.vi, test=view.test, labels=sel.labels,
                                control=view.control, **common)
    fit = dataclasses.replace(fit, omitted=ds.omitted)
    return Fitted(fit=fit, data=sel.frame, numbers=fit.to_dict(),
                  group_by="citekey" if "citekey" in sel.frame.columns else "label")


def independent_fit(ds: Dataset, view: View, sel: Selected):
    """The findings as independent (what `metaalliance bias` and `sensitivity` fit)."""
    import warnings

    from metaalliance.engine import models

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return models.random_effects(sel.yi, sel.vi, method=view.method, test=view.test,
                                     level=view.level, labels=sel.labels, measure=ds.measure,
                                     control=view.control)


def summary_rows(ds: Dataset, fitted: Fitted) -> list:
    """[(name, text)] of the pooled estimate for display (the one place the app rounds)."""
    from metaalliance.formatting import fmt_ci, fmt_est_ci, fmt_num, fmt_p, fmt_pct

    d = fitted.numbers
    r = ds.measure == "ZCOR"
    bt = d.get("back_transformed") or d
    rows = [("k", f"{d['k']}" + (f" composites of {d['aggregate']['k_findings']} findings"
                                 if "aggregate" in d else "")
             + (f" findings in {d['n_clusters']} clusters" if "n_clusters" in d else ""))]
    rows.append(("r [95% CI]" if r else "estimate [95% CI]",
                 fmt_est_ci(bt["estimate"], bt["ci_lower"], bt["ci_upper"], 3, r)))
    if bt.get("pi_lower") is not None:
        rows.append(("95% prediction interval", fmt_ci(bt["pi_lower"], bt["pi_upper"], 3, r)))
    if d.get("pvalue") is not None:
        rows.append(("test of r = 0" if r else "test of 0", fmt_p(d["pvalue"])))
    if "sigma2" in d:
        rows.append(("sigma² between / within", f"{fmt_num(d['sigma2'][0], 4)} / "
                                                f"{fmt_num(d['sigma2'][1], 4)}"))
    elif d.get("tau2") is not None:
        rows.append(("tau²", fmt_num(d["tau2"], 4)))
    if d.get("i2") is not None:
        rows.append(("I²", fmt_pct(d["i2"])))
    if d.get("q") is not None:
        rows.append(("Q", f"{fmt_num(d['q'], 2)} (df = {d.get('q_df', d['k'] - 1)}), "
                          f"{fmt_p(d['q_pvalue'])}" if d.get("q_pvalue") is not None
                     else fmt_num(d["q"], 2)))
    return rows


# --- figures ---------------------------------------------------------------------------------

def _forest_columns(fitted: Fitted, width_mm: float) -> list:
    """The forest columns: instrument, rater, n, weight and the CI at 174 mm; fewer where a
    narrower figure cannot hold them (``plots`` refuses columns that do not fit)."""
    if "aggregate" in fitted.numbers:
        cols = ["k", "weight", "ci"]
    else:
        cols = [c for c in ("instrument", "rater", "n") if c in fitted.data.columns]
        cols += ["weight", "ci"]
    if width_mm < 100:
        cols = [c for c in cols if c in ("n", "k", "ci")]
    elif width_mm < 150:
        cols = [c for c in cols if c not in ("instrument",)]
    return cols


def forest_kwargs(ds: Dataset, fitted: Fitted, width_mm: float = 174.0) -> dict:
    return dict(data=fitted.data, columns=_forest_columns(fitted, width_mm), sort="estimate",
                group_by=fitted.group_by if fitted.group_by in fitted.data.columns else "label",
                width=float(width_mm))


def forest_figure(ds: Dataset, fitted: Fitted, width_mm: float = 174.0, preview=False):
    """The forest plot (``plots.forest_plot``) of a fit; a preview of more than
    PREVIEW_MAX_ROWS rows shows the pooled rows only."""
    from metaalliance.figures import plots

    kw = forest_kwargs(ds, fitted, width_mm)
    if preview and fitted.fit.k > PREVIEW_MAX_ROWS:
        kw.update(show_studies=False, columns=["weight", "ci"])
    return plots.forest_plot(fitted.fit, **kw).figure


def svg_data_uri(fig) -> str:
    """A figure as an SVG data: URI for an <img>, text kept as text (the browser sets it with
    Liberation Sans or a metric-compatible Arial/Helvetica). Three times cheaper than a PNG
    for the server, which draws no glyphs; crisp at any zoom. Nothing is written."""
    import matplotlib

    from metaalliance.figures import plots

    buf = io.BytesIO()
    with matplotlib.rc_context({**plots.journal_rc(), "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue().decode("utf-8").replace(
        "font-family: 'Liberation Sans'",
        "font-family: 'Liberation Sans', Arial, Helvetica, sans-serif")
    return "data:image/svg+xml;base64," + base64.b64encode(text.encode("utf-8")).decode("ascii")


def figure_bytes(figures, fmt: str, dpi: int = 600) -> bytes:
    """One figure (or PDF pages) as the bytes of a file, through ``plots.save_figure`` into
    a temporary folder of its own (never data/)."""
    import tempfile
    from pathlib import Path

    from metaalliance.figures import plots

    with tempfile.TemporaryDirectory(prefix="metaalliance-explore-") as tmp:
        out = Path(tmp) / f"figure.{fmt}"
        written = plots.save_figure(figures, out, dpi=dpi)
        return written[0].read_bytes()


def forest_download(ds: Dataset, fitted: Fitted, fmt: str, width_mm: float) -> bytes:
    """The forest plot file: every finding; a PDF is paged as `metaalliance forest` pages it,
    PNG and SVG are one figure."""
    from metaalliance.figures import plots

    if fmt == "pdf":
        figs = plots.forest_figures(fitted.fit, **forest_kwargs(ds, fitted, width_mm))
    else:
        figs = forest_figure(ds, fitted, width_mm)
    return figure_bytes(figs, fmt)


@dataclass(frozen=True)
class BiasView:
    fit: object = None
    egger: object = None
    trimfill: object = None
    messages: tuple = ()


def bias_view(ds: Dataset, view: View, sel: Selected) -> BiasView:
    """Egger's test and trim-and-fill (``analyses.bias``) of the findings as independent,
    as `metaalliance bias` computes them."""
    import warnings

    from metaalliance.analyses import bias

    if sel.k < 2:
        return BiasView(messages=(_too_few(sel),))
    fit = independent_fit(ds, view, sel)
    out, msgs = {}, []
    for name, fn in (("egger", lambda: bias.egger_test(fit)),
                     ("trimfill", lambda: bias.trim_and_fill(fit))):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[name] = fn()
        except MetaAllianceError as exc:
            msgs.append(f"{name}: {exc}")
    return BiasView(fit=fit, messages=tuple(msgs), **out)


def funnel_figure(ds: Dataset, bv: BiasView, width_mm: float = 84.0):
    from metaalliance.figures import plots

    # square (at least 84 mm tall); funnel_plot keeps a given height and shrinks the panel so
    # that the legend (seven entries with trim and fill) fits below it
    return plots.funnel_plot(bv.fit, trimfill=bv.trimfill, width=float(width_mm),
                             height_mm=max(0.8 * float(width_mm), 84.0)).figure


def bias_rows(ds: Dataset, bv: BiasView) -> list:
    from metaalliance.formatting import fmt_num, fmt_p, fmt_r

    rows = []
    r = ds.measure == "ZCOR"
    show = (lambda z: fmt_r(math.tanh(z), 3)) if r else (lambda z: fmt_num(z, 3))
    e = bv.egger
    if e is not None:
        stat = "z" if e.df is None else f"t({e.df})"
        rows.append(("Egger's test (regtest)", f"{stat} = {fmt_num(e.stat, 2)}, "
                                               f"{fmt_p(e.pvalue)}"))
        rows.append(("limit estimate (se → 0)", show(e.limit_estimate)))
    t = bv.trimfill
    if t is not None:
        rows.append(("trim and fill (L0)", f"{t.k0} missing on the {t.side} side"))
        rows.append(("adjusted estimate", show(t.fit.estimate)
                     + f" [{show(t.fit.ci_lower)}, {show(t.fit.ci_upper)}]"))
    return rows


def moderator_table(ds: Dataset, view: View, sel: Selected, by: str):
    """``models.subgroups`` by one tag, findings as independent (`pool --by TAG`).
    Returns (rows [(level, k, text)], q_between text) or raises MetaAllianceError."""
    import warnings

    from metaalliance.engine import models
    from metaalliance.formatting import fmt_est_ci, fmt_num, fmt_p

    if sel.k < 2:
        raise DataError(_too_few(sel))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = models.subgroups(sel.yi, sel.vi, sel.frame[by].to_numpy(), method=view.method,
                               test=view.test, level=view.level, labels=sel.labels,
                               measure=ds.measure, by=by, control=view.control)
    d = res.to_dict()
    r = ds.measure == "ZCOR"
    tr = math.tanh if r else (lambda x: x)
    rows = [(g["level"], g["k"], fmt_est_ci(tr(g["estimate"]), tr(g["ci_lower"]),
                                            tr(g["ci_upper"]), 3, r),
             fmt_num(g["tau2"], 4)) for g in d["subgroups"]]
    q = (f"Q between = {fmt_num(d['q_between'], 2)} (df = {d['q_between_df']}), "
         f"{fmt_p(d['q_between_pvalue'])}") if d.get("q_between") is not None else ""
    return rows, q


def leave_one_out_rows(ds: Dataset, view: View, sel: Selected) -> list:
    """``sensitivity.leave_one_out`` of the findings as independent (`metaalliance
    sensitivity`): [(left out, estimate [CI], tau2, I2)]."""
    import warnings

    from metaalliance.analyses import sensitivity
    from metaalliance.formatting import fmt_est_ci, fmt_num, fmt_pct

    if sel.k < 3:
        raise DataError("Leave-one-out needs at least 3 findings "
                        f"(k = {sel.k} in this selection).")
    fit = independent_fit(ds, view, sel)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loo = sensitivity.leave_one_out(fit)
    r = ds.measure == "ZCOR"
    tr = math.tanh if r else (lambda x: x)
    return [(rec["label"], fmt_est_ci(tr(rec["estimate"]), tr(rec["ci_lower"]),
                                      tr(rec["ci_upper"]), 3, r),
             fmt_num(rec["tau2"], 4), fmt_pct(rec["i2"]))
            for rec in loo.to_records()]


def source_url(source) -> str | None:
    """https://doi.org/... for ``doi:...``, the URL for ``url:...``, else None."""
    from urllib.parse import quote

    s = str(source or "")
    if s.startswith("doi:"):
        return "https://doi.org/" + quote(s[4:].strip(), safe="/:;()._-")
    if s.startswith("url:") and s[4:].strip().lower().startswith(("https://", "http://")):
        return s[4:].strip()
    return None


def selection_csv(sel: Selected) -> bytes:
    """The selected rows as CSV (UTF-8), for the download."""
    return sel.frame.drop(columns=[c for c in ("file",) if c in sel.frame.columns]) \
        .to_csv(index=False).encode("utf-8")
