"""Frozen result objects of the engine: full precision inside, rounding only in ``summary()``.

Conventions every module follows (multilevel, bias, sensitivity, plots, report):

- Results are ``@dataclass(frozen=True, eq=False)``; arrays in them are read-only numpy arrays.
- Numbers are Python floats at full precision; quantities metafor leaves ``NA`` (the SE of
  tau^2 of an EE model, heterogeneity CIs at k = 1) are ``None`` — never NaN.
- Percentages (``i2``, ``r2``, ``weights``) are in percent, as metafor reports them.
- ``provenance`` is a dict: method, test, k, data_hash (sha256 of the float64 bytes of yi then
  vi, see ``data_hash``), versions (metaalliance, numpy, scipy), control (``options.CONTROLS``:
  metafor's default stopping rules or the exact optimum) and, when metafor's default
  algorithm would stop with an error, ``fallback`` (what was done instead).
- ``to_dict()`` returns the JSON forms of ARCHITECTURE.md; ``to_frame(scale="r"|"z")`` a
  pandas DataFrame; ``summary()`` a text block in metafor's layout (the only rounding).
- ``measure == "ZCOR"`` means the analysis is on Fisher's z; ``scale="r"`` and the
  ``back_transformed`` JSON block apply tanh for display only.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def data_hash(yi, vi) -> str:
    """sha256 hex digest of yi's then vi's float64 (little-endian) bytes."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(yi, dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(vi, dtype="<f8").tobytes())
    return h.hexdigest()


def versions() -> dict[str, str]:
    import scipy

    from metaalliance import __version__

    return {"metaalliance": __version__, "numpy": np.__version__, "scipy": scipy.__version__}


def provenance(method, test, k, yi, vi, **extra) -> dict[str, Any]:
    out = {"method": method, "test": test, "k": int(k), "data_hash": data_hash(yi, vi),
           "versions": versions()}
    out.update(extra)
    return out


def _f(x):
    """float or None (never NaN)."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _fallback(out: dict, res) -> None:
    """After a fallback the JSON says so: ``method_used`` (the estimator whose tau^2 the
    numbers use) and ``converged: false``; absent when the requested method converged.
    ``fallback`` (control "metafor"): where metafor's default algorithm stops with an error,
    what happened instead."""
    if not res.converged or res.method_used != res.method:
        out["method_used"] = res.method_used
        out["converged"] = bool(res.converged)
    if getattr(res, "fallback", None):
        out["fallback"] = res.fallback


def _notes(res) -> list:
    """The summary's notes on how tau^2 was obtained."""
    lines = []
    if getattr(res, "fallback", None):
        lines += ["", f"Note: {res.fallback}."]
    if not res.converged:
        lines += ["", f"Note: {res.method} did not converge; tau^2 is the DL estimate."]
    return lines


def _fmt(x, digits=4):
    if x is None:
        return "NA"
    return f"{x:.{digits}f}"


def _fmt_p(p):
    if p is None:
        return "NA"
    return "<.0001" if p < 1e-4 else f"{p:.4f}"


def _ro(a):
    a = np.array(a, dtype=float, copy=True)
    a.setflags(write=False)
    return a


# --------------------------------------------------------------------------------------------


def robust_dict_tail(res, d: dict) -> dict:
    """Add what the cluster-robust records (``robust()``, CHE, RVE) share to their JSON dict:
    every coefficient with its own Satterthwaite df when there are several, and tanh of the
    estimate and CI on the r scale for measure ZCOR."""
    if len(res.coefficients) > 1:
        d["coefficients"] = [
            {"name": c.name, "estimate": c.estimate, "se": c.se, "t": c.stat, "df": df,
             "pvalue": c.pvalue, "ci_lower": c.ci_lower, "ci_upper": c.ci_upper}
            for c, df in zip(res.coefficients, res.dfs)]
    if res.measure == "ZCOR":
        d["back_transformed"] = {key: math.tanh(getattr(res, key))
                                 for key in ("estimate", "ci_lower", "ci_upper")}
    return d


@dataclass(frozen=True, eq=False)
class RandomEffectsResult:
    """A univariate random-effects (or equal-effects, method="EE") model, intercept only."""

    k: int
    method: str
    test: str
    level: float                   # percent
    measure: str                   # "ZCOR" or "generic"
    estimate: float
    se: float
    stat: float                    # z, or t under knha
    pvalue: float
    ci_lower: float
    ci_upper: float
    pi_lower: float
    pi_upper: float
    df: float | None               # t df (k - 1) under knha, else None
    tau2: float
    se_tau2: float | None
    tau2_ci_lower: float | None
    tau2_ci_upper: float | None
    i2: float                      # percent
    i2_ci_lower: float | None
    i2_ci_upper: float | None
    h2: float
    h2_ci_lower: float | None
    h2_ci_upper: float | None
    q: float
    q_df: int
    q_pvalue: float
    vt: float                      # metafor's "typical" sampling variance (k - 1) / tr(P)
    yi: np.ndarray
    vi: np.ndarray
    weights: np.ndarray            # percent, sum 100
    labels: tuple
    provenance: dict
    converged: bool
    method_used: str               # "DL" after a fallback, else == method
    omitted: int = 0
    control: str = "metafor"       # options.CONTROLS: how tau^2 and its CI were iterated
    fallback: str | None = None    # control "metafor": where metafor stops with an error, why
                                   # and what tau^2 is instead

    @property
    def tau(self) -> float:
        return math.sqrt(self.tau2)

    @property
    def stat_name(self) -> str:
        return "t" if self.test == "knha" else "z"

    def back_transformed(self) -> dict[str, float]:
        """tanh of estimate, CI and PI (display scale r; only for measure ZCOR)."""
        return {key: math.tanh(getattr(self, key))
                for key in ("estimate", "ci_lower", "ci_upper", "pi_lower", "pi_upper")}

    def to_dict(self) -> dict[str, Any]:
        """The ``pool --json`` form of ARCHITECTURE.md."""
        out = {
            "k": self.k, "omitted": self.omitted, "measure": self.measure,
            "method": self.method, "test": self.test,
            "estimate": self.estimate, "se": self.se,
            "ci_lower": self.ci_lower, "ci_upper": self.ci_upper,
            "pi_lower": self.pi_lower, "pi_upper": self.pi_upper,
            "tau2": self.tau2, "tau2_ci_lower": self.tau2_ci_lower,
            "tau2_ci_upper": self.tau2_ci_upper,
            "i2": self.i2, "i2_ci_lower": self.i2_ci_lower, "i2_ci_upper": self.i2_ci_upper,
            "h2": self.h2, "q": self.q, "q_df": self.q_df, "q_pvalue": self.q_pvalue,
        }
        _fallback(out, self)
        if self.measure == "ZCOR":
            out["back_transformed"] = self.back_transformed()
        return out

    def to_frame(self, scale: str = "z"):
        """Per-study table: label, effect (yi or r), CI (normal, as metafor's forest), weight %."""
        import pandas as pd
        from metaalliance.engine import distributions as stats

        from metaalliance.errors import OptionError
        from metaalliance.options import check_option

        check_option("scale", scale, ("z", "r"))
        crit = stats.norm.isf((100 - self.level) / 200)
        se = np.sqrt(self.vi)
        lo, hi = self.yi - crit * se, self.yi + crit * se
        if scale == "z":
            return pd.DataFrame({"label": list(self.labels), "yi": self.yi, "vi": self.vi,
                                 "se": se, "ci_lower": lo, "ci_upper": hi,
                                 "weight": self.weights})
        if self.measure != "ZCOR":
            raise OptionError("scale: 'r' needs measure 'ZCOR' (effects on Fisher's z scale)")
        return pd.DataFrame({"label": list(self.labels), "r": np.tanh(self.yi),
                             "ci_lower": np.tanh(lo), "ci_upper": np.tanh(hi),
                             "weight": self.weights})

    def summary(self) -> str:
        model = "Equal-effects model" if self.method == "EE" else "Random-effects model"
        est = "" if self.method == "EE" else f"; tau^2 estimator: {self.method_used}"
        lv = f"{self.level:g}%"
        lines = [f"{model} (k = {self.k}{est}; test: {self.test})", ""]
        if self.method != "EE":
            ci = ""
            if self.tau2_ci_lower is not None:
                ci = f", {lv} CI [{_fmt(self.tau2_ci_lower)}, {_fmt(self.tau2_ci_upper)}]"
            lines += [
                f"tau^2 (estimated amount of total heterogeneity): {_fmt(self.tau2)} "
                f"(SE = {_fmt(self.se_tau2)}){ci}",
                f"tau (square root of estimated tau^2 value):      {_fmt(self.tau)}",
            ]
        i2ci = ""
        if self.i2_ci_lower is not None and self.method != "EE":
            i2ci = f", {lv} CI [{self.i2_ci_lower:.2f}, {self.i2_ci_upper:.2f}]"
        lines += [
            f"I^2 (total heterogeneity / total variability):   {self.i2:.2f}%{i2ci}",
            f"H^2 (total variability / sampling variability):  {self.h2:.2f}",
            "",
            "Test for Heterogeneity:",
            f"Q(df = {self.q_df}) = {self.q:.4f}, p-val = {_fmt_p(self.q_pvalue)}",
            "",
            "Model Results:",
            "",
            f"estimate      se    {self.stat_name}val    pval   ci.lb   ci.ub   pi.lb   pi.ub",
            f"{self.estimate:8.4f} {self.se:7.4f} {self.stat:7.4f} {_fmt_p(self.pvalue):>7} "
            f"{self.ci_lower:7.4f} {self.ci_upper:7.4f} {self.pi_lower:7.4f} {self.pi_upper:7.4f}",
        ]
        if self.measure == "ZCOR":
            b = self.back_transformed()
            lines += ["", "Back-transformed to r:",
                      f"r = {b['estimate']:.4f}, {lv} CI [{b['ci_lower']:.4f}, {b['ci_upper']:.4f}],"
                      f" {lv} PI [{b['pi_lower']:.4f}, {b['pi_upper']:.4f}]"]
        lines += _notes(self)
        if self.omitted:
            lines += ["", f"Note: {self.omitted} row(s) with missing values omitted."]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


@dataclass(frozen=True, eq=False)
class Coefficient:
    """One model coefficient (z or t test)."""

    name: str
    estimate: float
    se: float
    stat: float
    pvalue: float
    ci_lower: float
    ci_upper: float
    perm_pvalue: float | None = None   # permutation test p-value (permutest), when run
    perm_ci_lower: float | None = None  # permutation-based CI (permutest permci = TRUE);
    perm_ci_upper: float | None = None  # None where not requested or not found (metafor's NA)

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "estimate": self.estimate, "se": self.se,
               "ci_lower": self.ci_lower, "ci_upper": self.ci_upper, "pvalue": self.pvalue}
        if self.perm_pvalue is not None:
            out["perm_pvalue"] = self.perm_pvalue
        return out


def t_coefficients(names, beta, se, dfs, alpha) -> tuple:
    """``Coefficient`` rows of a t test with per-coefficient df (cluster-robust inference:
    ``robust()`` and the CHE model): t, two-sided p and the t-based CI."""
    import numpy as np

    from metaalliance.engine import distributions as stats

    tval = beta / se
    pval = 2.0 * stats.t.sf(np.abs(tval), dfs)
    crit = stats.t.isf(alpha / 2, dfs)
    return tuple(Coefficient(names[j], float(beta[j]), float(se[j]), float(tval[j]),
                             float(pval[j]), float(beta[j] - crit[j] * se[j]),
                             float(beta[j] + crit[j] * se[j])) for j in range(len(names)))


@dataclass(frozen=True, eq=False)
class MetaRegressionResult:
    """A mixed-effects meta-regression (or EE meta-regression, method="EE")."""

    k: int
    method: str
    test: str
    level: float
    measure: str
    formula: str | None
    coefficients: tuple            # of Coefficient, intercept first
    vcov: np.ndarray               # (p, p) covariance of the coefficients
    df: float | None               # t df k - p under knha
    tau2: float                    # residual heterogeneity
    se_tau2: float | None
    tau2_ci_lower: float | None
    tau2_ci_upper: float | None
    i2: float                      # residual I^2, percent
    h2: float
    qm: float                      # chi^2 (z) or F (knha) test of all coefficients but the intercept
    qm_df: int
    qm_df2: int | None             # denominator df of F under knha, else None
    qm_pvalue: float
    qe: float
    qe_df: int
    qe_pvalue: float
    r2: float | None               # pseudo-R^2 percent (None without intercept, as metafor)
    yi: np.ndarray
    vi: np.ndarray
    X: np.ndarray
    weights: np.ndarray
    labels: tuple
    provenance: dict
    converged: bool
    method_used: str
    omitted: int = 0
    permutations: int | None = None        # number of permutations run (permutest iter)
    permutation_exact: bool | None = None
    perm_qm_pvalue: float | None = None
    seed: int | None = None
    qm_coefficients: tuple = field(default=())   # names of the coefficients QM tests
    control: str = "metafor"       # options.CONTROLS
    fallback: str | None = None    # control "metafor": where metafor stops with an error
    permutations_failed: int | None = None   # permutation refits that failed and were skipped
                                             # (metafor: NA in QM.perm, e.g. PM's tau2.max)
    permci_tests: int | None = None   # permutation tests run by the permci searches (None:
                                      # no permci); the bounds are in the coefficients

    @property
    def names(self) -> tuple:
        return tuple(c.name for c in self.coefficients)

    @property
    def stat_name(self) -> str:
        return "t" if self.test == "knha" else "z"

    def coefficient(self, name) -> Coefficient:
        for c in self.coefficients:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The ``pool --mods --json`` form of ARCHITECTURE.md (``qm_df2`` added under knha,
        permutation p-values added when a permutation test was run)."""
        out = {"k": self.k, "method": self.method, "test": self.test,
               "coefficients": [c.to_dict() for c in self.coefficients],
               "tau2": self.tau2, "qm": self.qm, "qm_df": self.qm_df,
               "qm_pvalue": self.qm_pvalue, "qe": self.qe, "qe_df": self.qe_df,
               "qe_pvalue": self.qe_pvalue, "r2": self.r2}
        _fallback(out, self)
        if self.qm_df2 is not None:
            out["qm_df2"] = self.qm_df2
        if self.permutations is not None:
            out["permutations"] = self.permutations
            out["permutation_exact"] = self.permutation_exact
            out["perm_qm_pvalue"] = self.perm_qm_pvalue
            out["seed"] = self.seed
            if self.permutations_failed:
                out["permutations_failed"] = self.permutations_failed
        if self.permci_tests is not None:
            out["permci_tests"] = self.permci_tests
            for row, c in zip(out["coefficients"], self.coefficients):
                row["perm_ci_lower"] = c.perm_ci_lower
                row["perm_ci_upper"] = c.perm_ci_upper
        return out

    def to_frame(self, scale: str = "z"):
        """Coefficient table (on the analysis scale; slopes have no r-scale version)."""
        import pandas as pd

        from metaalliance.errors import OptionError
        from metaalliance.options import check_option

        check_option("scale", scale, ("z", "r"))
        if scale == "r":
            raise OptionError("scale: meta-regression coefficients are differences on the z "
                              "scale; use scale='z' (back-transform predictions instead)")
        rows = [{"name": c.name, "estimate": c.estimate, "se": c.se, self.stat_name: c.stat,
                 "pvalue": c.pvalue, "ci_lower": c.ci_lower, "ci_upper": c.ci_upper}
                | ({"perm_pvalue": c.perm_pvalue} if self.permutations is not None else {})
                | ({"perm_ci_lower": c.perm_ci_lower, "perm_ci_upper": c.perm_ci_upper}
                   if self.permci_tests is not None else {})
                for c in self.coefficients]
        return pd.DataFrame(rows)

    def summary(self) -> str:
        est = "" if self.method == "EE" else f"; tau^2 estimator: {self.method_used}"
        if [c.name for c in self.coefficients] == ["intrcpt"]:     # pool --permutations, no mods
            model = "Equal-effects model" if self.method == "EE" else "Random-effects model"
        else:
            model = ("Equal-effects" if self.method == "EE" else "Mixed-effects") + " meta-regression"
        lines = [f"{model} (k = {self.k}{est}; test: {self.test})"]
        if self.formula:
            lines.append(f"Moderators: {self.formula}")
        lines.append("")
        if self.method != "EE":
            lines += [
                f"tau^2 (estimated amount of residual heterogeneity):     {_fmt(self.tau2)} "
                f"(SE = {_fmt(self.se_tau2)})",
                f"I^2 (residual heterogeneity / unaccounted variability): {self.i2:.2f}%",
                f"H^2 (unaccounted variability / sampling variability):   {self.h2:.2f}",
            ]
            if self.r2 is not None:
                lines.append(f"R^2 (amount of heterogeneity accounted for):            {self.r2:.2f}%")
            lines.append("")
        lines += ["Test for Residual Heterogeneity:",
                  f"QE(df = {self.qe_df}) = {self.qe:.4f}, p-val = {_fmt_p(self.qe_pvalue)}", ""]
        if self.test == "knha":
            lines.append(f"Test of Moderators (coefficients {', '.join(self.qm_coefficients)}):")
            lines.append(f"F(df1 = {self.qm_df}, df2 = {self.qm_df2}) = {self.qm:.4f}, "
                         f"p-val = {_fmt_p(self.qm_pvalue)}")
        else:
            lines.append(f"Test of Moderators (coefficients {', '.join(self.qm_coefficients)}):")
            lines.append(f"QM(df = {self.qm_df}) = {self.qm:.4f}, p-val = {_fmt_p(self.qm_pvalue)}")
        if self.permutations is not None:
            kind = "exact" if self.permutation_exact else f"seed {self.seed}"
            lines.append(f"Permutation p-val of QM ({self.permutations} permutations, {kind}) = "
                         f"{_fmt_p(self.perm_qm_pvalue)}")
            if self.permutations_failed:
                lines.append(f"({self.permutations_failed} permutation refits failed and were "
                             "skipped, as metafor's permutest() skips them)")
        lines += ["", "Model Results:", ""]
        width = max(8, max(len(c.name) for c in self.coefficients))
        head = f"{'':<{width}} estimate      se    {self.stat_name}val    pval   ci.lb   ci.ub"
        if self.permutations is not None:
            head += "  perm.p"
        if self.permci_tests is not None:
            head += " perm.lb perm.ub"
        lines.append(head)
        for c in self.coefficients:
            row = (f"{c.name:<{width}} {c.estimate:8.4f} {c.se:7.4f} {c.stat:7.4f} "
                   f"{_fmt_p(c.pvalue):>7} {c.ci_lower:7.4f} {c.ci_upper:7.4f}")
            if self.permutations is not None:
                row += f" {_fmt_p(c.perm_pvalue):>7}"
            if self.permci_tests is not None:
                row += "".join(f" {'NA':>7}" if b is None else f" {b:7.4f}"
                               for b in (c.perm_ci_lower, c.perm_ci_upper))
            lines.append(row)
        if self.permci_tests is not None:
            lines += ["", f"perm.lb, perm.ub: {self.level:g}% permutation-based CI (metafor's "
                          "permutest(permci = TRUE))"]
        lines += _notes(self)
        if self.omitted:
            lines += ["", f"Note: {self.omitted} row(s) with missing values omitted."]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


@dataclass(frozen=True, eq=False)
class SubgroupEstimate:
    """The pooled estimate of one subgroup."""

    level: str
    k: int
    estimate: float
    se: float
    stat: float
    pvalue: float
    ci_lower: float
    ci_upper: float
    pi_lower: float
    pi_upper: float
    tau2: float
    i2: float | None = None        # separate models only
    q: float | None = None         # separate models only

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "k": self.k, "estimate": self.estimate, "se": self.se,
                "ci_lower": self.ci_lower, "ci_upper": self.ci_upper, "tau2": self.tau2}


@dataclass(frozen=True, eq=False)
class SubgroupResult:
    """Subgroup analysis: one estimate per level and a test of subgroup differences.

    tau2_model "separate": one random-effects model per subgroup; Q-between is the Q statistic
    of an equal-effects model of the subgroup estimates with their squared SEs (metafor users'
    ``rma(estimate, sei = se, mods = ~ group, method = "EE")`` QM; chi^2 with G - 1 df).
    tau2_model "pooled": one mixed-effects model ``~ group`` with a common tau^2; Q-between is
    its QM (chi^2 with G - 1 df, or F(G - 1, k - G) under knha, ``q_between_df2``).
    """

    by: str
    tau2_model: str
    method: str
    test: str
    level: float
    measure: str
    subgroups: tuple               # of SubgroupEstimate, levels sorted
    q_between: float
    q_between_df: int
    q_between_df2: int | None
    q_between_pvalue: float
    k: int
    models: dict                   # level -> RandomEffectsResult (separate) | {"pooled": MetaRegressionResult}
    provenance: dict
    omitted: int = 0
    control: str = "metafor"       # options.CONTROLS

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for s in self.subgroups:
            d = s.to_dict()
            fit = self.models.get(s.level if self.tau2_model == "separate" else "pooled")
            if fit is not None:
                _fallback(d, fit)
            rows.append(d)
        out = {"by": self.by, "tau2_model": self.tau2_model, "subgroups": rows,
               "q_between": self.q_between, "q_between_df": self.q_between_df,
               "q_between_pvalue": self.q_between_pvalue}
        if self.q_between_df2 is not None:
            out["q_between_df2"] = self.q_between_df2
        return out

    def to_frame(self, scale: str = "z"):
        import pandas as pd

        from metaalliance.errors import OptionError
        from metaalliance.options import check_option

        check_option("scale", scale, ("z", "r"))
        if scale == "r" and self.measure != "ZCOR":
            raise OptionError("scale: 'r' needs measure 'ZCOR' (effects on Fisher's z scale)")
        tr = np.tanh if scale == "r" else (lambda x: x)
        rows = []
        for s in self.subgroups:
            rows.append({"level": s.level, "k": s.k,
                         ("r" if scale == "r" else "estimate"): float(tr(s.estimate)),
                         **({"se": s.se} if scale == "z" else {}),
                         "ci_lower": float(tr(s.ci_lower)), "ci_upper": float(tr(s.ci_upper)),
                         "pi_lower": float(tr(s.pi_lower)), "pi_upper": float(tr(s.pi_upper)),
                         "tau2": s.tau2})
        return pd.DataFrame(rows)

    def summary(self) -> str:
        lines = [f"Subgroup analysis by {self.by} (tau^2 {self.tau2_model}; method: {self.method};"
                 f" test: {self.test}; k = {self.k})", ""]
        width = max(8, max(len(str(s.level)) for s in self.subgroups))
        lines.append(f"{'level':<{width}}   k estimate      se   ci.lb   ci.ub    tau^2")
        for s in self.subgroups:
            lines.append(f"{str(s.level):<{width}} {s.k:3d} {s.estimate:8.4f} {s.se:7.4f} "
                         f"{s.ci_lower:7.4f} {s.ci_upper:7.4f} {s.tau2:8.4f}")
        lines.append("")
        if self.q_between_df2 is not None:
            lines.append(f"Test of subgroup differences: F(df1 = {self.q_between_df}, df2 = "
                         f"{self.q_between_df2}) = {self.q_between:.4f}, "
                         f"p-val = {_fmt_p(self.q_between_pvalue)}")
        else:
            lines.append(f"Test of subgroup differences: Q(df = {self.q_between_df}) = "
                         f"{self.q_between:.4f}, p-val = {_fmt_p(self.q_between_pvalue)}")
        if self.omitted:
            lines += ["", f"Note: {self.omitted} row(s) with missing values omitted."]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()
