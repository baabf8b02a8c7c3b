"""The R bridge (``metaalliance export --r DIR``): the selected findings, an R script that
reproduces our main numbers with metafor, and our own numbers beside it.

Three files go into DIR (written together: all or none, ``fileio.write_all``):

- ``findings.csv``       the analysed rows: label, yi, vi (shortest round-trip decimals, so R
                         reads the very doubles we fitted), r and n when known, the cluster and
                         the moderator columns used;
- ``reproduce.R``        a commented script: metafor's ``rma()`` (the random-effects model,
                         ``predict()``, ``confint()``), ``rma.mv()`` (the three-level model of
                         findings within clusters, curated data: samples), one ``rma(mods = ...)``
                         per moderator model, ``regtest()``, ``ranktest()``, ``trimfill()`` and a
                         ``forest()`` plot (forest.pdf); it ends with a table of every number
                         beside ours and their relative difference, and writes metafor.json;
- ``metaalliance.json``  our numbers under the same names (``values``) with what each is.

Computation only reads the selection it is given; nothing here parses the command line.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import warnings
from pathlib import Path

import numpy as np

from metaalliance.errors import DataError, OptionError

#: moderators fitted by default on the curated data, one model each (when the selection holds
#: at least two levels / values and more findings than coefficients + 1)
DEFAULT_CURATED_MODS = ("~ rater", "~ instrument", "~ year")
#: rma.mv control of tests/reference/multilevel.R: metafor's default nlminb control stops early
#: on flat likelihoods (sigma2 ~1e-6 relative short of the optimum), which our three-level fit
#: reaches; the first control that converges is used, as in the reference script
RMA_MV_CONTROLS = ('list(optimizer = "nlminb", rel.tol = 1e-14, x.tol = 1e-14, sing.tol = 1e-14, '
                   'iter.max = 10000, eval.max = 10000)',
                   'list(optimizer = "optim", optmethod = "BFGS", reltol = 1e-15)',
                   'list()')
#: rma.uni control for --control optimum (what the reference tests use); "metafor" needs none
RMA_OPTIMUM_CONTROL = "list(threshold = 1e-10, tol = 1e-12, maxiter = 1000)"

_NAME_OK = re.compile(r"^[A-Za-z][A-Za-z0-9_.]*$")


def _r_string(text) -> str:
    """An R string literal (double quotes; backslash, quote and control characters escaped)."""
    s = str(text).replace("\\", "\\\\").replace('"', '\\"')
    s = "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in s)
    return f'"{s}"'


def _comment(text) -> str:
    """Text safe inside an R comment (one line)."""
    return "".join(ch if ch.isprintable() else " " for ch in str(text))


def _num(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _terms(formula: str) -> list[tuple[str, bool]]:
    """(column, factor()) of each term of '~ a + factor(b)'; other syntax is refused."""
    text = formula.strip()
    if not text.startswith("~"):
        raise OptionError(f"--mods {formula!r}: a formula starts with ~, e.g. \"~ rater + year\"")
    out = []
    for raw in text[1:].split("+"):
        t = raw.strip()
        factor = t.startswith("factor(") and t.endswith(")")
        name = t[7:-1].strip() if factor else t
        if not _NAME_OK.match(name):
            raise OptionError(f"--mods {formula!r}: {t!r} is not a column name; the R bridge "
                              "takes '~ col + factor(col) ...'")
        out.append((name, factor))
    return out


def _is_numeric(series) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(series)) and not pd.api.types.is_bool_dtype(series)


class _Model:
    """One moderator model: its formula for us and for R, and the categorical columns with
    their levels in our order (R's ``factor()`` would sort them by the locale)."""

    def __init__(self, formula, df):
        self.formula = formula
        self.terms = _terms(formula)
        self.factors = {}
        for name, factor in self.terms:
            if name not in df.columns:
                raise OptionError(f"--mods {formula!r}: no column {name!r} in the data")
            col = df[name]
            if factor or not _is_numeric(col):
                kept = col[col.notna() & (col.astype(str).str.strip() != "")]
                self.factors[name] = sorted(set(kept.astype(str)))
        self.r_formula = "~ " + " + ".join(name for name, _ in self.terms)


def _numbers_where_numeric(df):
    """A CSV arrives as text: a column whose every non-empty value is a number becomes numeric
    (as ``pool --mods`` treats it), the rest stays text (categorical); empty cells are NaN."""
    import pandas as pd

    df = df.copy()
    for c in df.columns:
        s = df[c]
        if s.dtype != object:
            continue
        text = s.astype(str).str.strip()
        empty = text == ""
        conv = pd.to_numeric(text.where(~empty), errors="coerce")
        if (~empty).any() and conv[~empty].notna().all():
            df[c] = conv
        else:
            df[c] = s.where(~empty)
    return df


def _frame(sel, df, cluster, columns):
    import pandas as pd

    out = pd.DataFrame({"label": [str(x) for x in sel.labels],
                        "yi": np.asarray(sel.yi, dtype=float),
                        "vi": np.asarray(sel.vi, dtype=float)})
    for c in ("r", "n"):
        if c in df.columns and c not in out.columns:
            out[c] = df[c].to_numpy()
    if cluster:
        out[cluster] = df[cluster].astype(str).to_numpy()
        out["es_id"] = np.arange(1, len(df) + 1)
    for c in columns:
        if c not in out.columns:
            out[c] = df[c].to_numpy()
    return out


def _csv_text(frame) -> str:
    # floats as Python's shortest repr, which reads back as the very same double
    return frame.to_csv(index=False, lineterminator="\n")


def _our_numbers(frame, measure, cluster, models_, method, test, level, control):
    """{name: value} and {name: what it is} of every number the script recomputes."""
    # the public API (metaalliance/__init__.py), whatever module holds each function
    from metaalliance import (egger_test, meta_regression, random_effects, rank_test,
                              three_level, trim_and_fill)

    yi, vi = frame["yi"].to_numpy(float), frame["vi"].to_numpy(float)
    vals, what = {}, {}

    def put(key, value, text):
        value = _num(value)
        if value is not None:
            vals[key] = value
            what[key] = text

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = random_effects(yi, vi, method=method, test=test, level=level, measure=measure,
                             control=control)
    d = fit.to_dict()
    call = f"rma(yi, vi, method = \"{method}\", test = \"{test}\")"
    for key in ("estimate", "se", "ci_lower", "ci_upper", "pi_lower", "pi_upper", "tau2",
                "tau2_ci_lower", "tau2_ci_upper", "i2", "h2", "q", "q_pvalue"):
        put(f"rma.{key}", d.get(key), f"{call}: {key}")
    put("rma.pvalue", fit.pvalue, f"{call}: p-value of the estimate")

    if cluster:
        ml_method = method if method in ("ML", "REML") else "REML"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res3 = three_level(yi, vi, frame[cluster].to_numpy(), method=ml_method,
                               test=test, level=level, measure=measure)
        c3 = f"rma.mv(yi, vi, random = ~ 1 | {cluster}/es_id)"
        for key in ("estimate", "se", "ci_lower", "ci_upper", "pi_lower", "pi_upper", "pvalue",
                    "loglik"):
            put(f"rma.mv.{key}", getattr(res3, key), f"{c3}: {key}")
        put("rma.mv.sigma2_1", res3.sigma2[0], f"{c3}: variance between {cluster}s")
        put("rma.mv.sigma2_2", res3.sigma2[1], f"{c3}: variance within {cluster}s")

    for j, m in enumerate(models_, start=1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reg = meta_regression(yi, vi, frame, m.formula, method=method, test=test,
                                  level=level, measure=measure, control=control)
        cm = f"rma(yi, vi, mods = {m.formula})"
        for i, c in enumerate(reg.coefficients, start=1):
            put(f"mods{j}.b{i}", c.estimate, f"{cm}: coefficient {c.name}")
            put(f"mods{j}.se{i}", c.se, f"{cm}: SE of {c.name}")
            put(f"mods{j}.p{i}", c.pvalue, f"{cm}: p-value of {c.name}")
        put(f"mods{j}.tau2", reg.tau2, f"{cm}: residual tau^2")
        put(f"mods{j}.qm", reg.qm, f"{cm}: test of moderators QM")
        put(f"mods{j}.qm_pvalue", reg.qm_pvalue, f"{cm}: p-value of QM")
        put(f"mods{j}.qe", reg.qe, f"{cm}: residual heterogeneity QE")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eg = egger_test(fit).to_dict()
        rk = rank_test(fit).to_dict()
        tf = trim_and_fill(fit).to_dict()
    put("regtest.stat", eg["z"] if eg.get("z") is not None else eg.get("t"),
        "regtest(res): test statistic of the funnel asymmetry test (Egger)")
    put("regtest.pvalue", eg["pvalue"], "regtest(res): p-value")
    put("regtest.limit_estimate", eg["limit_estimate"], "regtest(res): limit estimate (se -> 0)")
    put("ranktest.tau", rk["tau"], "ranktest(res): Kendall's tau")
    put("ranktest.pvalue", rk["pvalue"], "ranktest(res): p-value")
    put("trimfill.k0", tf["k0"], "trimfill(res): number of filled studies")
    put("trimfill.estimate", tf["estimate"], "trimfill(res): estimate with the filled studies")
    put("trimfill.se", tf["se"], "trimfill(res): its SE")
    put("trimfill.tau2", tf["tau2"], "trimfill(res): its tau^2")
    return vals, what


def _script(*, source, k, selection, method, test, level, control, measure, cluster,
            models_, version, when) -> str:
    zcor = measure == "ZCOR"
    transf = ", transf = transf.ztor" if zcor else ""
    rcontrol = "" if control == "metafor" else f", control = {RMA_OPTIMUM_CONTROL}"
    level_arg = "" if float(level) == 95.0 else f", level = {float(level):g}"
    L = []
    add = L.append
    add(f"""\
# =============================================================================================
# Reproduce metaalliance's numbers with R's metafor
#
# Written by metaalliance {version} (`metaalliance export --r`) on {when}.
# Data:      {_comment(source)}, {k} finding(s){'; selection: ' + _comment(selection) if selection else ''}
# Model:     method = "{method}", test = "{test}", level = {float(level):g}, control = "{control}"
#
# Files in this folder:
#   findings.csv       the findings analysed: label, yi, vi{' (yi = Fisher z of r = atanh(r),'
                                                             ' vi = 1 / (n - 3))' if zcor else ''}
#                      written with round-trip decimals, so R reads the numbers we fitted
#   metaalliance.json  metaalliance's value of every number below ("values") and what it is
#   reproduce.R        this script
#
# Run it from this folder:   Rscript reproduce.R
# It prints metafor's results, draws forest.pdf and ends with a table of each number beside
# metaalliance's and their relative difference (also written to metafor.json). Needs metafor
# (>= 3.8); the comparison needs jsonlite.
# =============================================================================================

suppressPackageStartupMessages(library(metafor))
dat <- read.csv("findings.csv", stringsAsFactors = FALSE, na.strings = c("", "NA"),
                encoding = "UTF-8")
mf <- list()   # metafor's numbers under metaalliance's names (see metaalliance.json)
# where metafor itself stops with an error (e.g. "Fisher scoring algorithm did not converge"
# under its default control), say so and go on; metaalliance then reports the optimum and
# says it was safeguarded
attempt <- function(expr, what) tryCatch(expr, error = function(e) {{
  cat(sprintf("metafor stops with an error in %s: %s\\n", what, conditionMessage(e)))
  NULL
}})
""")
    add(f"""\
# --- 1. random-effects model ------------------------------------------------------------------
# metaalliance's `pool` (control = "metafor" stops the tau^2 iterations where rma()'s default
# control stops, so the numbers are those of this plain call; "optimum" iterates to the optimum,
# which the tight control below gives in metafor)
# Where rma()'s default Fisher scoring does not converge, metaalliance reports the optimum
# found by its safeguarded search (with a note); metafor reaches the same optimum with step
# halving and a tight threshold, which the second attempt uses.
halving <- list(stepadj = 0.5, maxiter = 10000, threshold = 1e-12)
res <- attempt(rma(yi, vi, data = dat, method = "{method}", test = "{test}"{level_arg}{rcontrol}),
               "rma()")
if (is.null(res)) {{
  res <- rma(yi, vi, data = dat, method = "{method}", test = "{test}"{level_arg},
             control = halving)
  cat("rma() with control = list(stepadj = 0.5, threshold = 1e-12):\n")
}}
print(res)
pred <- predict(res)                      # prediction interval
print(predict(res{transf}))          # {'back-transformed to r (tanh)' if zcor else 'the same'}
ci <- confint(res)                        # Q-profile CI of tau^2, I^2, H^2
print(ci)
mf[["rma.estimate"]] <- as.vector(res$beta); mf[["rma.se"]] <- res$se
mf[["rma.pvalue"]] <- res$pval
mf[["rma.ci_lower"]] <- res$ci.lb; mf[["rma.ci_upper"]] <- res$ci.ub
mf[["rma.pi_lower"]] <- pred$pi.lb; mf[["rma.pi_upper"]] <- pred$pi.ub
mf[["rma.tau2"]] <- res$tau2; mf[["rma.i2"]] <- res$I2; mf[["rma.h2"]] <- res$H2
mf[["rma.q"]] <- res$QE; mf[["rma.q_pvalue"]] <- res$QEp
mf[["rma.tau2_ci_lower"]] <- ci$random["tau^2", "ci.lb"]
mf[["rma.tau2_ci_upper"]] <- ci$random["tau^2", "ci.ub"]
""")
    if cluster:
        ml_method = method if method in ("ML", "REML") else "REML"
        mv_test = "t" if test == "knha" else "z"
        controls = ",\n                 ".join(RMA_MV_CONTROLS)
        add(f"""\
# --- 2. three-level model: findings (es_id) within {cluster}s --------------------------------
# metaalliance's `pool --cluster {cluster}` (the report's main model on the curated data).
# metafor's default nlminb control can stop ~1e-6 (relative) short of the optimum on flat
# likelihoods; the first of these tight controls that converges is used (as in
# tests/reference/multilevel.R). A variance component whose estimate is 0 comes out of rma.mv
# as ~1e-10 (it optimises log(sigma2)).
for (ctl in list({controls})) {{
  res3 <- try(rma.mv(yi, vi, random = ~ 1 | {cluster}/es_id, data = dat,
                     method = "{ml_method}", test = "{mv_test}"{level_arg}, control = ctl),
              silent = TRUE)
  if (!inherits(res3, "try-error")) break
}}
print(res3)
pred3 <- predict(res3)
print(predict(res3{transf}))
mf[["rma.mv.estimate"]] <- as.vector(res3$beta); mf[["rma.mv.se"]] <- res3$se
mf[["rma.mv.pvalue"]] <- res3$pval
mf[["rma.mv.ci_lower"]] <- res3$ci.lb; mf[["rma.mv.ci_upper"]] <- res3$ci.ub
mf[["rma.mv.pi_lower"]] <- pred3$pi.lb; mf[["rma.mv.pi_upper"]] <- pred3$pi.ub
mf[["rma.mv.sigma2_1"]] <- res3$sigma2[1]; mf[["rma.mv.sigma2_2"]] <- res3$sigma2[2]
mf[["rma.mv.loglik"]] <- as.numeric(logLik(res3))
""")
    if models_:
        add("""\
# --- 3. moderators: one meta-regression each ----------------------------------------------------
# metaalliance's `pool --mods`. Text columns are categorical with the first level (sorted) as
# the reference, as in metaalliance; the levels are spelled out so R's locale cannot reorder them.
# Rows with a missing moderator value are left out (rma's na.action, as metaalliance does).
""")
        factors = {}
        for m in models_:
            factors.update(m.factors)
        for name, levels in factors.items():
            add(f"dat${name} <- factor(dat${name}, levels = c({', '.join(map(_r_string, levels))}))")
        add("")
        for j, m in enumerate(models_, start=1):
            add(f"""\
res_m{j} <- attempt(rma(yi, vi, mods = {m.r_formula}, data = dat,
             method = "{method}", test = "{test}"{level_arg}{rcontrol}), "rma(mods = {m.r_formula})")
if (is.null(res_m{j})) res_m{j} <- attempt(rma(yi, vi, mods = {m.r_formula}, data = dat,
             method = "{method}", test = "{test}"{level_arg}, control = halving),
             "rma(mods = {m.r_formula}) with step halving")
if (!is.null(res_m{j})) {{
  print(res_m{j})
  for (i in seq_along(res_m{j}$beta)) {{
    mf[[paste0("mods{j}.b", i)]] <- res_m{j}$beta[i]
    mf[[paste0("mods{j}.se", i)]] <- res_m{j}$se[i]
    mf[[paste0("mods{j}.p", i)]] <- res_m{j}$pval[i]
  }}
  mf[["mods{j}.tau2"]] <- res_m{j}$tau2; mf[["mods{j}.qm"]] <- res_m{j}$QM
  mf[["mods{j}.qm_pvalue"]] <- res_m{j}$QMp; mf[["mods{j}.qe"]] <- res_m{j}$QE
}}
""")
    add(f"""\
# --- 4. publication bias ------------------------------------------------------------------------
# metaalliance's `bias`: Egger's regression test (model "rma", predictor "sei"), the rank
# correlation test and trim and fill (estimator "L0"), all on the model of section 1
# Where metafor's default Fisher scoring does not converge on a refit, metaalliance gives the
# optimum found by its safeguarded search; metafor reaches the same optimum with step halving
# and a tight threshold (`halving`, section 1), which the second attempt uses.
eg <- attempt(regtest(res), "regtest()")
if (is.null(eg)) {{
  eg <- attempt(regtest(update(res, control = halving)), "regtest() with step halving")
  if (!is.null(eg)) cat("regtest() with control = list(stepadj = 0.5, threshold = 1e-12):\n")
}}
if (!is.null(eg)) {{
  print(eg)
  mf[["regtest.stat"]] <- eg$zval; mf[["regtest.pvalue"]] <- eg$pval
  mf[["regtest.limit_estimate"]] <- as.vector(eg$est)
}}
rk <- attempt(ranktest(res), "ranktest()")
if (!is.null(rk)) {{
  print(rk)
  mf[["ranktest.tau"]] <- rk$tau; mf[["ranktest.pvalue"]] <- rk$pval
}}
tf <- attempt(trimfill(res), "trimfill()")
if (is.null(tf)) tf <- attempt(trimfill(update(res, control = halving)),
                               "trimfill() with step halving")
if (!is.null(tf)) {{
  print(tf)
  mf[["trimfill.k0"]] <- tf$k0; mf[["trimfill.estimate"]] <- as.vector(tf$beta)
  mf[["trimfill.se"]] <- tf$se; mf[["trimfill.tau2"]] <- tf$tau2
}}

# --- 5. forest plot ------------------------------------------------------------------------------
# metaalliance's `forest` (its own layout differs; the numbers are the same)
pdf("forest.pdf", width = 11, height = 2 + 0.25 * res$k)
forest(res, slab = dat$label{transf}, cex = 0.8, xlab = "{'Correlation (r)' if zcor else 'Effect size'}",
       header = c("Finding", "{'r' if zcor else 'Estimate'} [95% CI]"))
invisible(dev.off())
cat("wrote forest.pdf\\n")

# --- 6. metafor beside metaalliance ----------------------------------------------------------------
if (requireNamespace("jsonlite", quietly = TRUE)) {{
  ours <- jsonlite::fromJSON("metaalliance.json")$values
  keys <- names(ours)
  theirs <- sapply(keys, function(k) if (is.null(mf[[k]])) NA_real_ else as.numeric(mf[[k]]))
  mine <- as.numeric(unlist(ours[keys]))
  reldiff <- ifelse(theirs == mine, 0, abs(theirs - mine) / pmax(abs(theirs), abs(mine)))
  options(width = 120)
  cat("\\nmetafor beside metaalliance (relative difference; a variance component at 0 shows as\\n",
      "~1e-10 in rma.mv, so its relative difference is 1 and its absolute one tiny)\\n", sep = "")
  print(data.frame(quantity = keys, metaalliance = mine, metafor = theirs,
                   rel_diff = signif(reldiff, 3), abs_diff = signif(abs(theirs - mine), 3)),
        digits = 12, row.names = FALSE)
  jsonlite::write_json(lapply(mf, function(x) unname(as.numeric(x))), "metafor.json",
                       digits = NA, auto_unbox = TRUE)
  cat("wrote metafor.json\\n")
}} else {{
  cat("jsonlite is not installed: no comparison (install.packages(\\"jsonlite\\"))\\n")
}}
""")
    return "\n".join(L)


def export_r(sel, folder, *, method="REML", test="z", level=95.0, control="metafor",
             cluster=None, mods=None, selection_text="") -> dict:
    """Write findings.csv, reproduce.R and metaalliance.json into ``folder``.

    ``sel`` is the command line's selection (frame, yi, vi, labels, measure, source).
    ``cluster``: column of the three-level model (default on the curated data: ``sample``;
    none for a CSV unless given). ``mods``: formulas of the moderator models (default on the
    curated data: ``DEFAULT_CURATED_MODS`` where the selection supports them; none for a CSV
    unless given). Returns {"folder", "files", "k", "values": number of numbers compared,
    "models": formulas fitted, "skipped": [(formula, reason)]}.
    """
    from metaalliance import __version__
    from metaalliance.dataset import fileio

    curated = sel.source == "curated"
    df = sel.frame.reset_index(drop=True)
    k = len(df)
    if k < 3:
        raise DataError(f"export --r: needs at least 3 findings (the selection has {k})")
    if cluster is None and curated and "sample" in df.columns:
        cluster = "sample"
    if cluster and cluster not in df.columns:
        raise OptionError(f"--cluster: no column {cluster!r} in the data")
    if cluster and df[cluster].isna().any():
        raise DataError(f"--cluster {cluster}: {int(df[cluster].isna().sum())} finding(s) have "
                        "no value; select them out (--where) or choose another column")
    if not curated:
        df = _numbers_where_numeric(df)
    explicit = list(mods or [])
    candidates = explicit or (list(DEFAULT_CURATED_MODS) if curated else [])
    models_, skipped = [], []
    for formula in candidates:
        m = _Model(formula, df)
        cols = [n for n, _ in m.terms]
        ok = np.ones(k, dtype=bool)
        for c in cols:
            col = df[c]
            ok &= col.notna().to_numpy() & (col.astype(str).str.strip() != "").to_numpy()
        n_par = 1
        for n, factor in m.terms:
            col = df.loc[ok, n]
            n_par += (col.astype(str).nunique() - 1) if (factor or not _is_numeric(col)) else 1
        varies = all(df.loc[ok, n].astype(str).nunique() >= 2 for n in cols)
        if not varies or ok.sum() < n_par + 2:
            reason = ("a moderator has one value in the selection" if not varies
                      else f"{int(ok.sum())} finding(s) with values for {n_par} coefficients")
            if explicit:
                raise DataError(f"--mods {formula!r}: cannot be fitted ({reason})")
            skipped.append((formula, reason))
            continue
        models_.append(m)
    used_cols = list(dict.fromkeys(n for m in models_ for n, _ in m.terms))
    frame = _frame(sel, df, cluster, used_cols)
    vals, what = _our_numbers(frame, sel.measure, cluster, models_, method, test, level, control)
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    source = ("the curated dataset (data/findings + references.bib)" if curated
              else f"the CSV file {sel.source}")
    script = _script(source=source, k=k, selection=selection_text, method=method, test=test,
                     level=level, control=control, measure=sel.measure, cluster=cluster,
                     models_=models_, version=__version__, when=when)
    ours = {"generated_by": f"metaalliance {__version__} export --r", "date": when,
            "source": source, "selection": selection_text, "k": k, "measure": sel.measure,
            "method": method, "test": test, "level": float(level), "control": control,
            "cluster": cluster, "moderator_models": [m.formula for m in models_],
            "skipped_moderator_models": [{"formula": f, "reason": r} for f, r in skipped],
            "values": vals, "what": what}
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OptionError(f"--r {folder}: exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    files = {folder / "findings.csv": _csv_text(frame),
             folder / "reproduce.R": script,
             folder / "metaalliance.json": json.dumps(ours, indent=2, allow_nan=False,
                                                      ensure_ascii=False) + "\n"}
    fileio.write_all(files)
    return {"folder": str(folder), "files": [str(p) for p in files], "k": k,
            "values": len(vals), "cluster": cluster, "models": [m.formula for m in models_],
            "skipped": [{"formula": f, "reason": r} for f, r in skipped]}
