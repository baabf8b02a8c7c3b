"""Cluster-robust inference, as metafor's ``robust()`` (and clubSandwich).

=====================================================  ==========================================
metaalliance                                           metafor / clubSandwich
=====================================================  ==========================================
``robust(fit, cluster)``                               ``robust(res, cluster, clubSandwich = TRUE)``
                                                       (CR2, Satterthwaite df: clubSandwich's
                                                       ``coef_test`` / ``conf_int`` defaults)
``robust(fit, cluster, clubSandwich=False)``           ``robust(res, cluster)`` (CR1, df = n - p)
=====================================================  ==========================================

``fit`` is a three-level fit (``multilevel.three_level``), a univariate random-effects fit
(``models.random_effects``) or the data as a pair ``(yi, vi)``. ``_block_weights`` (per-cluster
Cholesky factor, weights and (X'WX)^-1) is shared with the CHE model's CR2 in ``che``.
Computation only: no I/O; the distributions come from ``engine/distributions``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from metaalliance.engine.clusters import _codes, _validate
from metaalliance.engine.inference import level_alpha as _level_alpha
from metaalliance.engine.multilevel import (MEASURES, THREE_LEVEL_METHODS, ThreeLevelResult,
                                            _Blocks, _fit_components, _fmt_p, _readonly,
                                            three_level)
from metaalliance.engine.results import (Coefficient, robust_dict_tail, t_coefficients,
                                         versions as _versions)
from metaalliance.errors import DataError, ModelError
from metaalliance.options import check_option

__all__ = ["RobustResult", "robust"]

ROBUST_MODELS = ("three_level", "random_effects")
_EIG_TOL = 1e-12         # clubSandwich's matrix_power: eigenvalues <= 1e-12 are set to 0


@dataclass(frozen=True, eq=False)
class RobustResult:
    """Cluster-robust tests of a fitted model, as metafor's ``robust()``.

    With ``clubSandwich=True`` (default): CR2 variances and Satterthwaite degrees of freedom,
    as ``robust(res, cluster, clubSandwich = TRUE)`` (clubSandwich's ``vcovCR(type = "CR2")``,
    ``coef_test(test = "Satterthwaite")`` and ``conf_int``). With ``clubSandwich=False``: CR1
    (the sandwich times n / (n - p)) with n - p df, metafor's default ``robust(res, cluster)``.
    ``estimate`` ... ``ci_upper`` refer to the first coefficient; ``coefficients`` holds all
    (with ``df`` per coefficient in ``dfs``).
    """

    model: str
    vcov_type: str
    df_method: str
    k: int
    n_clusters: int
    level: float
    measure: str
    estimate: float
    se: float
    t: float
    df: float
    pvalue: float
    ci_lower: float
    ci_upper: float
    coefficients: tuple[Coefficient, ...]
    dfs: tuple[float, ...]
    vcov: np.ndarray = field(repr=False)
    provenance: dict = field(repr=False)

    def to_dict(self) -> dict:
        d = {"model": self.model, "vcov_type": self.vcov_type, "df_method": self.df_method,
             "k": self.k, "n_clusters": self.n_clusters, "estimate": self.estimate,
             "se": self.se, "t": self.t, "df": self.df, "pvalue": self.pvalue,
             "ci_lower": self.ci_lower, "ci_upper": self.ci_upper}
        return robust_dict_tail(self, d)

    def summary(self) -> str:
        lines = [f"Cluster-robust inference ({self.vcov_type}, df: {self.df_method}) for the "
                 f"{self.model.replace('_', '-')} model: k = {self.k} findings in "
                 f"{self.n_clusters} clusters", "",
                 f"{'':14s}{'estimate':>10s}{'se':>9s}{'tval':>9s}{'df':>8s}{'pval':>9s}"
                 f"{'ci.lb':>9s}{'ci.ub':>9s}"]
        for c, df in zip(self.coefficients, self.dfs):
            lines.append(f"{c.name[:14]:14s}{c.estimate:10.4f}{c.se:9.4f}{c.stat:9.4f}"
                         f"{df:8.2f}{_fmt_p(c.pvalue):>9s}{c.ci_lower:9.4f}{c.ci_upper:9.4f}")
        if self.measure == "ZCOR":
            lines.append(f"Back-transformed (r): {math.tanh(self.estimate):.4f} "
                         f"[{math.tanh(self.ci_lower):.4f}, {math.tanh(self.ci_upper):.4f}]")
        return "\n".join(lines)


def _matrix_power(x, power):
    """clubSandwich's matrix_power: symmetric eigen-decomposition, eigenvalues <= 1e-12 -> 0."""
    vals, vecs = np.linalg.eigh(x)
    vp = np.zeros_like(vals)
    pos = vals > _EIG_TOL
    vp[pos] = vals[pos] ** power
    return (vecs * vp) @ vecs.T


def robust(fit, cluster=None, clubSandwich: bool = True, level=None, *,
           model: str = "three_level", method: str = "REML", measure: str | None = None
           ) -> RobustResult:
    """Cluster-robust standard errors, tests and confidence intervals.

    Parameters
    ----------
    fit :
        a ``ThreeLevelResult``; or a univariate random-effects result (any object with ``yi``,
        ``vi`` and ``tau2`` attributes, such as ``models.random_effects(...)``: metafor's
        ``rma.uni``); or the data themselves as a pair ``(yi, vi)``, which are then fitted with
        ``model`` ("three_level" on ``cluster``, or "random_effects") by REML or ML (``method``).
    cluster :
        the clustering variable (one label per finding). For a three-level fit it defaults to
        the fit's clusters; the model's clusters must be nested within it.
    clubSandwich :
        True: CR2 + Satterthwaite df (``robust(res, cluster, clubSandwich = TRUE)``);
        False: CR1 with df = n - p (metafor's default ``robust(res, cluster)``).
    level : confidence level (default: the fit's, else 95).
    """
    who = "robust"
    check_option("clubSandwich", clubSandwich, (True, False))
    if isinstance(fit, tuple) and len(fit) == 2:
        check_option("model", model, ROBUST_MODELS)
        check_option("method", method, THREE_LEVEL_METHODS)
        yi, vi = fit
        if model == "three_level":
            fit = three_level(yi, vi, cluster, method=method, measure=measure or "ZCOR",
                              level=level or 95)
        else:
            yi, vi, _, _, _ = _validate(yi, vi, cluster, who)
            X = np.ones((len(yi), 1))
            b = _Blocks(yi, vi, X, np.arange(len(yi)))
            theta, _, _, _, _ = _fit_components(b, method == "REML",
                                                np.array([False, True]), who)
            fit = _UniFit(yi, vi, float(theta[1]), measure or "ZCOR", level or 95)
    if isinstance(fit, ThreeLevelResult):
        mname = "three_level"
        yi, vi, X = np.asarray(fit.yi), np.asarray(fit.vi), np.asarray(fit.X)
        names = tuple(c.name for c in fit.coefficients)
        s1, s2 = fit.sigma2
        model_codes, _ = _codes(list(fit.cluster))
        if cluster is None:
            cluster = list(fit.cluster)
        lvl = fit.level if level is None else level
        meas = fit.measure
        beta = np.array([c.estimate for c in fit.coefficients])   # clubSandwich: coef(res)
    elif all(hasattr(fit, a) for a in ("yi", "vi", "tau2")):
        mname = "random_effects"
        yi = np.asarray(fit.yi, dtype=float)
        vi = np.asarray(fit.vi, dtype=float)
        X = np.asarray(getattr(fit, "X", None) if getattr(fit, "X", None) is not None
                       else np.ones((len(yi), 1)), dtype=float)
        names = ("intrcpt",) if X.shape[1] == 1 else tuple(f"X{j + 1}" for j in range(X.shape[1]))
        s1, s2 = 0.0, float(fit.tau2)
        model_codes = np.arange(len(yi))
        lvl = getattr(fit, "level", 95) if level is None else level
        meas = getattr(fit, "measure", "ZCOR")
        est = getattr(fit, "estimate", None)
        beta = np.array([float(est)]) if X.shape[1] == 1 and est is not None else None
    else:
        raise DataError(f"{who}: fit must be a ThreeLevelResult, a random-effects result "
                        "(with yi, vi and tau2) or a pair (yi, vi)")
    if measure is not None:
        check_option("measure", measure, MEASURES)
        meas = measure
    lv, alpha = _level_alpha(lvl)
    if cluster is None:
        raise DataError(f"{who}: cluster is required for a random-effects fit")
    yi, vi, _, rcodes, _ = _validate(yi, vi, cluster, who)
    k, p = X.shape
    n = int(rcodes.max()) + 1
    # the model's clusters must be nested within the robust clusters (clubSandwich's check)
    owner = {}
    for mc, rc in zip(model_codes, rcodes):
        if owner.setdefault(int(mc), int(rc)) != rc:
            raise ModelError(f"{who}: the model's clusters are not nested within the "
                             "robust clusters")
    if n - p <= 0:
        raise ModelError(f"{who}: the number of clusters ({n}) must be larger than the "
                         f"number of fixed effects ({p})")
    return _robust_compute(yi, vi, X, names, s1, s2, model_codes, rcodes, n, clubSandwich,
                           lv, alpha, mname, meas, beta=beta)


class _UniFit(NamedTuple):
    yi: np.ndarray
    vi: np.ndarray
    tau2: float
    measure: str
    level: float


def _block_weights(blocks, X):
    """For each cluster block ``(idx, V_j)`` of the marginal covariance: ``(idx, V_j, L_j, W_j,
    X_j)`` with ``L_j`` the Cholesky factor and ``W_j`` the symmetrised inverse of ``V_j``; and
    ``M``, the symmetrised inverse of X'WX. Shared by ``robust()`` and the CHE model's CR2."""
    p = X.shape[1]
    XtWX = np.zeros((p, p))
    out = []
    for idx, Vj in blocks:
        Lj = np.linalg.cholesky(Vj)
        Wj = np.linalg.inv(Vj)
        Wj = 0.5 * (Wj + Wj.T)
        Xj = X[idx]
        XtWX += Xj.T @ Wj @ Xj
        out.append((idx, Vj, Lj, Wj, Xj))
    M = np.linalg.inv(XtWX)
    return out, 0.5 * (M + M.T)


def _robust_compute(yi, vi, X, names, s1, s2, model_codes, rcodes, n, cr2, lv, alpha,
                    mname, measure, beta=None):
    k, p = X.shape
    model_codes = np.asarray(model_codes)
    order = np.argsort(rcodes, kind="stable")
    rs = rcodes[order]
    starts = np.flatnonzero(np.r_[True, rs[1:] != rs[:-1]])
    ends = np.r_[starts[1:], k]
    marginal = []
    for s, e in zip(starts, ends):
        idx = order[s:e]
        mc = model_codes[idx]
        marginal.append((idx, np.diag(vi[idx] + s2) + s1 * (mc[:, None] == mc[None, :])))
    blocks, M = _block_weights(marginal, X)
    if beta is None:
        beta = M @ sum(Xj.T @ Wj @ yi[idx] for idx, _, _, Wj, Xj in blocks)
    resid = yi - X @ beta
    comps = []
    E_list = []
    for idx, Vj, Lj, Wj, Xj in blocks:
        XW = Xj.T @ Wj                                        # p x n_j
        if cr2:
            # clubSandwich CR2 with inverse-variance weights: A_j = U' G^-1/2 U, U = chol(V_j),
            # G = U (I - X_j M X_j' W_j) V_j U'
            U = Lj.T
            IH = np.eye(len(idx)) - Xj @ M @ XW
            G = U @ IH @ Vj @ U.T
            Aj = U.T @ _matrix_power(0.5 * (G + G.T), -0.5) @ U
            Ej = XW @ Aj
        else:
            Ej = XW
        E_list.append(Ej)
        comps.append(Ej @ resid[idx])
    C = np.array(comps)                                        # n x p
    vcov = M @ (C.T @ C) @ M
    if cr2:
        # Satterthwaite df (clubSandwich get_GH / get_P_array / Satterthwaite)
        Mchol = np.linalg.cholesky(M)
        d = np.zeros((p, n))
        Hs = np.zeros((p, n, p))
        for j, ((idx, Vj, Lj, Wj, Xj), Ej) in enumerate(zip(blocks, E_list)):
            ME = M @ Ej
            Gj = ME @ Lj
            d[:, j] = np.sum(Gj * Gj, axis=1)
            Hs[:, j, :] = ME @ Xj @ Mchol
        dfs = np.empty(p)
        for i in range(p):
            h = Hs[i]                                          # n x p
            hn = np.sum(h * h, axis=1)
            trP = np.sum(d[i]) - np.sum(hn)
            HH = h.T @ h
            frob = np.sum(d[i] ** 2) - 2.0 * np.sum(d[i] * hn) + np.sum(HH * HH)
            dfs[i] = trP ** 2 / frob
        vtype, dmethod = "CR2", "Satterthwaite"
    else:
        vcov = vcov * n / (n - p)
        dfs = np.full(p, float(n - p))
        vtype, dmethod = "CR1", "n - p"
    se = np.sqrt(np.maximum(np.diag(vcov), 0.0))
    if not (np.all(se > 0) and np.all(np.isfinite(dfs)) and np.all(dfs > 0)):
        raise ModelError("robust: the cluster-robust variance is 0 (the residuals are 0 in "
                         "every cluster), so no robust test is possible")
    coefs = t_coefficients(names, beta, se, dfs, alpha)
    c0 = coefs[0]
    prov = {"function": "metaalliance.engine.cluster_robust.robust",
            "metafor_call": "robust(res, cluster = cluster" +
                            (", clubSandwich = TRUE)" if cr2 else ")"),
            "model": mname, "k": k, "n_clusters": n, "level": lv,
            "versions": _versions()}
    return RobustResult(model=mname, vcov_type=vtype, df_method=dmethod, k=k, n_clusters=n,
                        level=lv, measure=measure, estimate=c0.estimate, se=c0.se, t=c0.stat,
                        df=float(dfs[0]), pvalue=c0.pvalue, ci_lower=c0.ci_lower,
                        ci_upper=c0.ci_upper, coefficients=coefs,
                        dfs=tuple(float(x) for x in dfs), vcov=_readonly(vcov),
                        provenance=prov)
