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
likelihood is maximised over (sigma2[0], sigma2[1]) >= 0 by Fisher scoring (exact score and
information, step halving, projection on the bound) from three starting splits (metafor's
start and two 90/10 splits), to a relative change below 1e-11.

Computation only: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from metaalliance.engine.results import robust_dict_tail

from metaalliance.errors import DataError, ModelError
from metaalliance.engine.inference import level_alpha
from metaalliance.engine.clusters import _design, _validate
from metaalliance.engine.cluster_robust import _block_weights
from metaalliance.engine.results import t_coefficients

__all__ = ["DEFAULT_CHE_RHO", "CHEResult", "RobustTest", "che", "cr2_inference"]

#: the assumed within-study correlation of sampling errors of Pustejovsky & Tipton (2022)'s
#: worked examples; check conclusions with other values (the CLI's --rho)
DEFAULT_CHE_RHO = 0.6
_LOG_2PI = math.log(2.0 * math.pi)
_EIG_TOL = 1e-12          # clubSandwich's matrix_power: eigenvalues <= 1e-12 are set to 0
#: the CR2 covariance of the tested coefficients counts as singular (no HTZ test, as
#: clubSandwich's chol() fails) when the smallest eigenvalue of its correlation form is below
#: this: rounding leaves ~1e-16 where the matrix is singular in exact arithmetic
_SINGULAR_TOL = 1e-10


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
        if self.robust_test is not None:
            d["robust_test"] = self.robust_test.to_dict()
        return robust_dict_tail(self, d)

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

    def reml(self, theta, derivs=False):
        """REML log-likelihood (metafor's, with constants), beta, X'WX and, with ``derivs``,
        the score and the Fisher information in (sigma2[0], sigma2[1]) (dV/ds1 = J per block,
        dV/ds2 = I): score_j = (r'W G_j W r - tr(P G_j)) / 2, info_jl = tr(P G_j P G_l) / 2."""
        s1, s2 = float(theta[0]), float(theta[1])
        p = self.p
        XtWX = np.zeros((p, p))
        XtWy = np.zeros(p)
        logdet = 0.0
        parts = []
        for V, idx in self.V_batches(s1, s2):
            try:
                L = np.linalg.cholesky(V)
            except np.linalg.LinAlgError:
                return (-np.inf, None, None) + ((None, None) if derivs else ())
            logdet += 2.0 * float(np.sum(np.log(np.diagonal(L, axis1=1, axis2=2))))
            Wb = np.linalg.inv(V)
            Xb = self.X[idx]                     # (n_g, m, p)
            yb = self.y[idx]                     # (n_g, m)
            WX = Wb @ Xb
            XtWX += np.einsum("gmp,gmq->pq", Xb, WX)
            XtWy += np.einsum("gmp,gm->p", WX, yb)
            parts.append((Wb, WX, idx))
        try:
            Hc = np.linalg.cholesky(XtWX)
        except np.linalg.LinAlgError:
            return (-np.inf, None, None) + ((None, None) if derivs else ())
        beta = np.linalg.solve(XtWX, XtWy)
        r = self.y - self.X @ beta
        rss = 0.0
        for Wb, _, idx in parts:
            rb = r[idx]
            rss += float(np.einsum("gm,gmn,gn->", rb, Wb, rb))
        logdet_h = 2.0 * float(np.sum(np.log(np.diag(Hc))))
        ll = -0.5 * ((self.k - p) * _LOG_2PI - self.logdet_xtx + logdet + logdet_h + rss)
        if not derivs:
            return ll, beta, XtWX
        Hi = np.linalg.inv(XtWX)
        q1 = q2 = tw1 = tw = t11 = t12 = t22 = 0.0
        K1 = np.zeros((p, p))
        K2 = np.zeros((p, p))
        N11 = np.zeros((p, p))
        N12 = np.zeros((p, p))
        N22 = np.zeros((p, p))
        for Wb, WX, idx in parts:
            rb = r[idx]
            w1 = Wb.sum(axis=2)                              # W 1
            a1 = w1.sum(axis=1)                              # 1'W 1
            Wr = np.einsum("gmn,gn->gm", Wb, rb)
            q1 += float(np.sum(Wr.sum(axis=1) ** 2))
            q2 += float(np.sum(Wr * Wr))
            tw1 += float(np.sum(a1))
            tw += float(np.einsum("gmm->", Wb))
            t11 += float(np.sum(a1 * a1))
            t12 += float(np.sum(w1 * w1))
            t22 += float(np.sum(Wb * Wb))
            xw1 = np.einsum("gmp,gm->gp", WX, np.ones_like(w1))   # X'W 1
            K1 += xw1.T @ xw1
            K2 += np.einsum("gmp,gmq->pq", WX, WX)
            N11 += np.einsum("g,gp,gq->pq", a1, xw1, xw1)
            N12 += np.einsum("gp,gmq,gm->pq", xw1, WX, w1)
            N22 += np.einsum("gmp,gmn,gnq->pq", WX, Wb, WX)
        trPG1 = tw1 - np.sum(Hi * K1)
        trPG2 = tw - np.sum(Hi * K2)
        HK1, HK2 = Hi @ K1, Hi @ K2
        T11 = t11 - 2.0 * np.sum(Hi * N11) + np.sum(HK1 * HK1.T)
        T12 = t12 - 2.0 * np.sum(Hi * N12.T) + np.sum(HK1 * HK2.T)
        T22 = t22 - 2.0 * np.sum(Hi * N22) + np.sum(HK2 * HK2.T)
        score = 0.5 * np.array([q1 - trPG1, q2 - trPG2])
        info = 0.5 * np.array([[T11, T12], [T12, T22]])
        return ll, beta, XtWX, score, info

    def fit(self):
        """Fisher scoring with step halving and projection on sigma2 >= 0 (three starts)."""
        w = 1.0 / self.v
        bfe = np.linalg.solve(self.X.T @ (w[:, None] * self.X), self.X.T @ (w * self.y))
        res = self.y - self.X @ bfe
        total = max(0.002, float(np.var(res, ddof=1)) - 1.0 / float(np.mean(w)))
        free = np.array([True, self.bs.n < self.k])   # one finding per cluster: sigma2[1] = 0
        scale = 1e-6 * float(np.mean(self.v))
        best = None
        for f1, f2 in ((0.5, 0.5), (0.9, 0.1), (0.1, 0.9)):
            th = np.where(free, np.array([f1, f2]) * total, 0.0)
            ll, _, _, g, F = self.reml(th, derivs=True)
            for _ in range(500):
                act = free & ~((th <= 0.0) & (g <= 0.0))
                if not act.any():
                    break
                Fa = F[np.ix_(act, act)]
                try:
                    d = np.linalg.solve(Fa, g[act])
                except np.linalg.LinAlgError:
                    d = g[act] * scale
                t = 1.0
                while True:
                    cand = th.copy()
                    cand[act] = np.maximum(th[act] + t * d, 0.0)
                    out = self.reml(cand, derivs=True)
                    if np.isfinite(out[0]) and out[0] >= ll - 1e-13 * max(1.0, abs(ll)):
                        break
                    t /= 2.0
                    if t < 1e-12:
                        out = None
                        break
                if out is None:
                    break
                change = np.max(np.abs(cand - th) / (cand + scale))
                th, (ll, _, _, g, F) = cand, out
                if change < 1e-11:
                    break
            if best is None or ll > best[1]:
                best = (th, ll)
        return best[0]


def cr2_inference(y, X, beta, blocks, level=95, C=None):
    """CR2 covariance, Satterthwaite df and (with ``C``) the HTZ Wald test, as clubSandwich.

    ``blocks`` is a list of (row indices, V_j) with V_j the working model's marginal
    covariance of the cluster (the weights are V_j^-1: clubSandwich's inverse-variance case).
    Returns (vcov, dfs, RobustTest or None).
    """
    from metaalliance.engine import distributions as stats

    p = X.shape[1]
    pre, M = _block_weights(blocks, X)
    resid = y - X @ beta
    J = len(blocks)
    Mchol = np.linalg.cholesky(M)
    comps = np.empty((J, p))
    G = [None] * J
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
        VC = C @ vcov @ C.T
        try:
            np.linalg.cholesky(VC)                 # clubSandwich: chol2inv(chol(...)) fails too
            # a singular VC can pass the Cholesky factorisation by rounding (R's fails on the
            # curated data's "~ rater", where two levels sit in one cluster each: eigenvalue
            # 5e-16 of the correlation form here), which gave F ~ 1e14
            sd = np.sqrt(np.diag(VC))
            if np.linalg.eigvalsh(VC / np.outer(sd, sd))[0] <= _SINGULAR_TOL:
                raise np.linalg.LinAlgError("singular")
            Q = float(cb @ np.linalg.solve(VC, cb))
        except np.linalg.LinAlgError:
            import warnings

            from metaalliance.errors import MetaAllianceWarning

            warnings.warn("che: the cluster-robust covariance of the moderators is singular "
                          "(e.g. a level found in one cluster only), so the HTZ test is not "
                          "available (clubSandwich's Wald_test stops here)", MetaAllianceWarning,
                          stacklevel=3)
            return vcov, dfs, None
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
    se = np.sqrt(np.maximum(np.diag(vcov), 0.0))
    if not np.all(se > 0):
        raise ModelError(f"{who}: the cluster-robust variance is 0, no robust test is possible")
    coefs = t_coefficients(nm, beta, se, dfs, alpha)
    c0 = coefs[0]
    return CHEResult(k=k, n_clusters=n, rho=rho, level=lv, estimate=c0.estimate, se=c0.se,
                     df=float(dfs[0]), pvalue=c0.pvalue, ci_lower=c0.ci_lower,
                     ci_upper=c0.ci_upper, sigma2=(s1, s2), loglik=float(ll),
                     coefficients=coefs, dfs=tuple(float(d) for d in dfs),
                     se_model=tuple(float(s) for s in se_model), robust_test=test,
                     vcov=vcov, measure=measure)
