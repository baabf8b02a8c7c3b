"""The correlated-and-hierarchical-effects (CHE) working model with cluster-robust inference.

Pustejovsky & Tipton (2022) recommend, for dependent effect sizes, a working model that is
roughly right and inference that does not depend on it being right:

* within each cluster (study) the sampling errors are correlated with an assumed constant
  correlation ``rho`` (metafor's ``vcalc(vi, cluster, obs, rho)``, clubSandwich's
  ``impute_covariance_matrix()``): ``S_ij = rho * sqrt(v_i v_j)`` for i != j;
* the three-level random effects on top (between clusters ``sigma2[0]``, between findings
  within a cluster ``sigma2[1]``), fitted by REML on the full block-diagonal
  ``V = S + sigma2[0] J + sigma2[1] I`` (metafor's ``rma.mv(yi, V, random = ~ 1 | cluster/obs)``);
* CR2 cluster-robust standard errors with Satterthwaite degrees of freedom
  (``robust(res, cluster, clubSandwich = TRUE)``) and, with moderators, the cluster-robust Wald
  test of all slopes with the HTZ small-sample correction (clubSandwich's
  ``Wald_test(res, constrain_zero(2:p), vcov = "CR2", test = "HTZ")``; Tipton & Pustejovsky, 2015).

Blocks are processed in batches of equal size (numpy's batched Cholesky/inverse); the REML
likelihood is maximised over (sigma2[0], sigma2[1]) >= 0 by projected Newton steps with
central-difference derivatives from three starting splits (metafor's start and two 90/10
splits), to a relative change below 1e-11.

Computation only: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from metaalliance.errors import DataError, ModelError
from metaalliance.engine.inference import level_alpha
from metaalliance.engine.multilevel import _design, _validate
from metaalliance.engine.optim import maximise_box
from metaalliance.engine.results import Coefficient

__all__ = ["DEFAULT_CHE_RHO", "CHEResult", "RobustTest", "che", "cr2_inference"]

#: the assumed within-study correlation of sampling errors of Pustejovsky & Tipton (2022)'s
#: worked examples; check conclusions with other values (the CLI's --rho)
DEFAULT_CHE_RHO = 0.6
_LOG_2PI = math.log(2.0 * math.pi)
_EIG_TOL = 1e-12          # clubSandwich's matrix_power: eigenvalues <= 1e-12 are set to 0


@dataclass(frozen=True)
class RobustTest:
    """Cluster-robust Wald test of several coefficients (clubSandwich ``Wald_test``, HTZ)."""

    f: float
    df_num: int
    df_denom: float
    p: float
    q: float
    delta: float
    test: str = "HTZ"

    def to_dict(self) -> dict:
        return {"f": self.f, "df_num": self.df_num, "df_denom": self.df_denom, "p": self.p}


@dataclass(frozen=True, eq=False)
class CHEResult:
    """A CHE fit with CR2 inference. ``estimate`` .. ``ci_upper`` are the first coefficient's;
    ``coefficients`` holds all (robust SEs, Satterthwaite ``dfs``); ``se_model`` the model-based
    SEs of rma.mv; ``sigma2 = (between clusters, within clusters)``."""

    k: int
    n_clusters: int
    rho: float
    level: float
    estimate: float
    se: float
    df: float
    pvalue: float
    ci_lower: float
    ci_upper: float
    sigma2: tuple
    loglik: float
    coefficients: tuple
    dfs: tuple
    se_model: tuple
    robust_test: RobustTest | None
    vcov: np.ndarray = field(repr=False)
    measure: str = "generic"

    def to_dict(self) -> dict:
        d = {"k": self.k, "n_clusters": self.n_clusters, "working_model": "che",
             "rho": self.rho, "estimate": self.estimate, "se": self.se, "df": self.df,
             "p": self.pvalue, "ci_lower": self.ci_lower, "ci_upper": self.ci_upper,
             "sigma2": list(self.sigma2), "loglik": self.loglik}
        if len(self.coefficients) > 1:
            d["coefficients"] = [
                {"name": c.name, "estimate": c.estimate, "se": c.se, "t": c.stat, "df": df,
                 "pvalue": c.pvalue, "ci_lower": c.ci_lower, "ci_upper": c.ci_upper}
                for c, df in zip(self.coefficients, self.dfs)]
        if self.robust_test is not None:
            d["robust_test"] = self.robust_test.to_dict()
        if self.measure == "ZCOR":
            d["back_transformed"] = {key: math.tanh(getattr(self, key))
                                     for key in ("estimate", "ci_lower", "ci_upper")}
        return d

    def summary(self) -> str:
        lines = [f"CHE working model (rho = {self.rho:g}; k = {self.k} findings in "
                 f"{self.n_clusters} clusters), REML; CR2 robust SEs, Satterthwaite df",
                 f"sigma2 between clusters = {self.sigma2[0]:.4f}, within = {self.sigma2[1]:.4f}",
                 f"{'':14s}{'estimate':>10s}{'se':>9s}{'tval':>9s}{'df':>8s}{'pval':>9s}"
                 f"{'ci.lb':>9s}{'ci.ub':>9s}"]
        for c, df in zip(self.coefficients, self.dfs):
            lines.append(f"{c.name[:14]:14s}{c.estimate:10.4f}{c.se:9.4f}{c.stat:9.4f}"
                         f"{df:8.2f}{c.pvalue:9.4f}{c.ci_lower:9.4f}{c.ci_upper:9.4f}")
        if self.robust_test is not None:
            t = self.robust_test
            lines.append(f"HTZ test of the moderators: F({t.df_num}, {t.df_denom:.2f}) = "
                         f"{t.f:.4f}, p = {t.p:.4f}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


class _BlockSet:
    """Rows grouped by cluster, clusters grouped by size for batched linear algebra."""

    def __init__(self, codes):
        order = np.argsort(codes, kind="stable")
        c = codes[order]
        starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        ends = np.r_[starts[1:], len(c)]
        self.blocks = [order[s:e] for s, e in zip(starts, ends)]
        sizes = np.array([len(b) for b in self.blocks])
        self.groups = []          # (size, index matrix n_g x size, block numbers)
        for m in np.unique(sizes):
            ids = np.flatnonzero(sizes == m)
            self.groups.append((int(m), np.stack([self.blocks[i] for i in ids]), ids))
        self.n = len(self.blocks)


def _sampling_cov(v, rho):
    """vcalc's constant-correlation V for a batch of blocks: v (n_g, m) -> (n_g, m, m)."""
    s = np.sqrt(v)
    S = rho * s[:, :, None] * s[:, None, :]
    m = v.shape[1]
    idx = np.arange(m)
    S[:, idx, idx] = v
    return S


class _CHEModel:
    def __init__(self, y, v, X, codes, rho):
        self.y, self.v, self.X, self.rho = y, v, X, rho
        self.k, self.p = X.shape
        self.bs = _BlockSet(codes)
        self.logdet_xtx = np.linalg.slogdet(X.T @ X)[1]
        self.S = [(_sampling_cov(v[idx], rho), idx) for _, idx, _ in self.bs.groups]

    def V_batches(self, s1, s2):
        out = []
        for (S, idx) in self.S:
            m = idx.shape[1]
            V = S + s1 + s2 * np.eye(m)[None, :, :]
            out.append((V, idx))
        return out

    def reml(self, theta):
        s1, s2 = float(theta[0]), float(theta[1])
        XtWX = np.zeros((self.p, self.p))
        XtWy = np.zeros(self.p)
        logdet = 0.0
        parts = []
        for V, idx in self.V_batches(s1, s2):
            try:
                L = np.linalg.cholesky(V)
            except np.linalg.LinAlgError:
                return -np.inf, None, None
            logdet += 2.0 * float(np.sum(np.log(np.diagonal(L, axis1=1, axis2=2))))
            Wb = np.linalg.inv(V)
            Xb = self.X[idx]                     # (n_g, m, p)
            yb = self.y[idx]                     # (n_g, m)
            WX = Wb @ Xb
            XtWX += np.einsum("gmp,gmq->pq", Xb, WX)
            XtWy += np.einsum("gmp,gm->p", WX, yb)
            parts.append((Wb, idx))
        try:
            Hc = np.linalg.cholesky(XtWX)
        except np.linalg.LinAlgError:
            return -np.inf, None, None
        beta = np.linalg.solve(XtWX, XtWy)
        r = self.y - self.X @ beta
        rss = 0.0
        for Wb, idx in parts:
            rb = r[idx]
            rss += float(np.einsum("gm,gmn,gn->", rb, Wb, rb))
        logdet_h = 2.0 * float(np.sum(np.log(np.diag(Hc))))
        ll = -0.5 * ((self.k - self.p) * _LOG_2PI - self.logdet_xtx + logdet + logdet_h + rss)
        return ll, beta, XtWX

    def fit(self):
        w = 1.0 / self.v
        bfe = np.linalg.solve(self.X.T @ (w[:, None] * self.X), self.X.T @ (w * self.y))
        res = self.y - self.X @ bfe
        total = max(0.002, float(np.var(res, ddof=1)) - 1.0 / float(np.mean(w)))

        def f(th):
            ll = self.reml(th)[0]
            return -ll if np.isfinite(ll) else 1e300

        lo, hi = np.zeros(2), np.full(2, np.inf)
        if self.bs.n == self.k:                   # one finding per cluster: sigma2[1] -> 0
            hi[1] = 0.0
        best = None
        for f1, f2 in ((0.5, 0.5), (0.9, 0.1), (0.1, 0.9)):
            x, fx = maximise_box(f, np.array([f1 * total, f2 * total]), lo, hi, max_iter=200)
            if best is None or fx < best[1]:
                best = (x, fx)
        return best[0]


def cr2_inference(y, X, beta, blocks, level=95, C=None):
    """CR2 covariance, Satterthwaite df and (with ``C``) the HTZ Wald test, as clubSandwich.

    ``blocks`` is a list of (row indices, V_j) with V_j the working model's marginal
    covariance of the cluster (the weights are V_j^-1: clubSandwich's inverse-variance case).
    Returns (vcov, dfs, RobustTest or None).
    """
    from scipy import stats

    k, p = X.shape
    XtWX = np.zeros((p, p))
    pre = []
    for idx, Vj in blocks:
        Lj = np.linalg.cholesky(Vj)
        Wj = np.linalg.inv(Vj)
        Wj = 0.5 * (Wj + Wj.T)
        Xj = X[idx]
        XtWX += Xj.T @ Wj @ Xj
        pre.append((idx, Vj, Lj, Wj, Xj))
    M = np.linalg.inv(XtWX)
    M = 0.5 * (M + M.T)
    resid = y - X @ beta
    J = len(blocks)
    Mchol = np.linalg.cholesky(M)
    comps = np.empty((J, p))
    G = np.empty((J, p, 0)).tolist()
    Hs = np.empty((p, J, p))
    for j, (idx, Vj, Lj, Wj, Xj) in enumerate(pre):
        XW = Xj.T @ Wj
        U = Lj.T
        IH = np.eye(len(idx)) - Xj @ M @ XW
        Gm = U @ IH @ Vj @ U.T
        vals, vecs = np.linalg.eigh(0.5 * (Gm + Gm.T))
        vp = np.zeros_like(vals)
        pos = vals > _EIG_TOL
        vp[pos] = vals[pos] ** -0.5
        Aj = U.T @ ((vecs * vp) @ vecs.T) @ U
        Ej = XW @ Aj
        comps[j] = Ej @ resid[idx]
        ME = M @ Ej
        G[j] = ME @ Lj                                   # p x n_j
        Hs[:, j, :] = ME @ Xj @ Mchol
    vcov = M @ (comps.T @ comps) @ M

    def p_array(Gl, H):
        q = H.shape[0]
        P = np.empty((q, q, J, J))
        for a in range(q):
            for b in range(a, q):
                tmp = -H[a] @ H[b].T
                tmp[np.diag_indices(J)] += np.array([np.sum(g[a] * g[b]) for g in Gl])
                P[a, b] = tmp
                if b > a:
                    P[b, a] = tmp.T
        return P

    P = p_array(G, Hs)
    dfs = np.array([np.trace(P[i, i]) ** 2 / np.sum(P[i, i] ** 2) for i in range(p)])
    test = None
    if C is not None:
        C = np.atleast_2d(np.asarray(C, dtype=float))
        q = C.shape[0]
        Gc = [C @ g for g in G]
        Hc = np.einsum("qp,pju->qju", C, Hs)
        Pc = p_array(Gc, Hc)
        Omega = np.einsum("abjj->ab", Pc)
        vals, vecs = np.linalg.eigh(0.5 * (Omega + Omega.T))
        vp = np.zeros_like(vals)
        vp[vals > _EIG_TOL] = vals[vals > _EIG_TOL] ** -0.5
        On = (vecs * vp) @ vecs.T
        B = np.einsum("su,uvab,vt->stab", On, Pc, On)
        var = np.empty((q, q))
        for s in range(q):
            for t in range(s + 1):
                var[s, t] = var[t, s] = (np.sum(B[s, t] * B[t, s]) + np.sum(B[s, s] * B[t, t]))
        nu = q * (q + 1) / np.sum(var)
        cb = C @ beta
        Q = float(cb @ np.linalg.solve(C @ vcov @ C.T, cb))
        delta = max((nu - q + 1) / nu, 0.0)
        df2 = nu - q + 1
        F = delta * Q / q
        pval = float(stats.f.sf(F, q, df2)) if df2 > 0 else float("nan")
        test = RobustTest(f=float(F), df_num=int(q), df_denom=float(df2), p=pval, q=Q,
                          delta=float(delta))
    return vcov, dfs, test


def che(yi, vi, cluster, rho=DEFAULT_CHE_RHO, X=None, names=None, level=95,
        measure: str = "generic") -> CHEResult:
    """Fit the CHE working model and return CR2 cluster-robust inference.

    Equals ``V <- vcalc(vi, cluster, obs, rho = rho)``;
    ``res <- rma.mv(yi, V, mods = X, intercept = FALSE, random = ~ 1 | cluster/obs)``;
    ``robust(res, cluster, clubSandwich = TRUE)`` and, with moderators,
    ``clubSandwich::Wald_test(res, constrain_zero(2:p), vcov = "CR2", test = "HTZ")``.

    Parameters
    ----------
    yi, vi : effect sizes and sampling variances; cluster : one study label per row.
    rho : assumed correlation of sampling errors within a cluster (0 <= rho < 1).
    X, names : optional design matrix with its intercept column first, and column names.

    Examples
    --------
    >>> r = che([0.1, 0.3, 0.2, 0.5, 0.4, 0.35], [0.01, 0.02, 0.015, 0.01, 0.02, 0.03],
    ...         ["a", "a", "b", "b", "c", "c"], rho=0.6)
    >>> r.k, r.n_clusters, len(r.sigma2)
    (6, 3, 2)
    """
    who = "che"
    try:
        rho = float(rho)
    except (TypeError, ValueError):
        raise DataError(f"{who}: rho must be a number between 0 and 1 (got {rho!r})") from None
    if not (0.0 <= rho < 1.0):
        raise DataError(f"{who}: rho must be >= 0 and < 1 (got {rho:g})")
    lv, alpha = level_alpha(level)
    y, v, labels, codes, uniq = _validate(yi, vi, cluster, who)
    k = len(y)
    Xd, nm, intercept = _design(X, k, names, who)
    if names is None and X is not None:
        nm = ("intrcpt",) + tuple(nm[1:]) if intercept else nm
    model = _CHEModel(y, v, Xd, codes, rho)
    n = model.bs.n
    p = Xd.shape[1]
    if n <= p:
        raise ModelError(f"{who}: the number of clusters ({n}) must be larger than the number "
                         f"of coefficients ({p})")
    theta = model.fit()
    ll, beta, XtWX = model.reml(theta)
    if beta is None:
        raise ModelError(f"{who}: the REML fit failed (the marginal covariance is singular)")
    se_model = np.sqrt(np.diag(np.linalg.inv(XtWX)))
    s1, s2 = float(theta[0]), float(theta[1])
    blocks = []
    for idx in model.bs.blocks:
        m = len(idx)
        Vj = _sampling_cov(v[idx][None, :], rho)[0] + s1 + s2 * np.eye(m)
        blocks.append((idx, Vj))
    C = None
    if p > 1:
        C = np.eye(p)[1:] if intercept else np.eye(p)
    vcov, dfs, test = cr2_inference(y, Xd, beta, blocks, lv, C)
    from scipy import stats

    se = np.sqrt(np.maximum(np.diag(vcov), 0.0))
    if not np.all(se > 0):
        raise ModelError(f"{who}: the cluster-robust variance is 0, no robust test is possible")
    tval = beta / se
    pval = 2.0 * stats.t.sf(np.abs(tval), dfs)
    crit = stats.t.isf(alpha / 2, dfs)
    coefs = tuple(Coefficient(nm[j], float(beta[j]), float(se[j]), float(tval[j]),
                              float(pval[j]), float(beta[j] - crit[j] * se[j]),
                              float(beta[j] + crit[j] * se[j])) for j in range(p))
    c0 = coefs[0]
    return CHEResult(k=k, n_clusters=n, rho=rho, level=lv, estimate=c0.estimate, se=c0.se,
                     df=float(dfs[0]), pvalue=c0.pvalue, ci_lower=c0.ci_lower,
                     ci_upper=c0.ci_upper, sigma2=(s1, s2), loglik=float(ll),
                     coefficients=coefs, dfs=tuple(float(d) for d in dfs),
                     se_model=tuple(float(s) for s in se_model), robust_test=test,
                     vcov=vcov, measure=measure)
