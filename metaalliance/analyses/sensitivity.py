"""Sensitivity analyses of a fitted random-effects model, computed as metafor does.

==========================  ==================================================================
``leave_one_out(fit)``      metafor's ``leave1out()``: the model refitted without each study
``influence(fit)``          metafor's ``influence()``: rstudent, dffits, cook.d, cov.r, tau2.del,
                            QE.del, hat, weight, dfbetas and the ``inf`` flag (metafor's rule)
``baujat(fit)``             the coordinates metafor's ``baujat()`` plots
``cumulative(fit, order)``  metafor's ``cumul()``: studies added one at a time in ``order``
``gosh(fit, subsets, seed)``  metafor's ``gosh()``: the model fitted to subsets of the studies
==========================  ==================================================================

``fit`` is a ``models.random_effects`` result (any ``method``, ``test`` "z" or "knha"); each
function refits with the fit's own method, test and level, as metafor's functions refit with
the model's own settings. ``control`` (``options.CONTROLS``) says how the refits iterate;
None (the default) takes the fit's own (``fit.control``, ``options.DEFAULT_CONTROL`` for a fit
without one), as metafor's leave1out(), influence(), cumul() and gosh() refit with
``x$control``: with the default "metafor" every refit stops where metafor's would.

Speed. Every refit goes through the engine's ``models.random_effects_batch`` (built on
``estimators.tau2_batch``) with a ``mask`` that says which studies take part in which refit,
so leave-one-out, influence and cumulative analyses are one vectorised call (in blocks, to
keep memory bounded) and GOSH one call per block of subsets.

Computation only: nothing here prints or writes files. Long runs accept ``progress``, a
callable ``progress(done, total)`` the command line turns into a progress bar.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from metaalliance.errors import DataError, ModelError, OptionError
from metaalliance.options import CONTROLS, DEFAULT_CONTROL, METHODS, TESTS, check_option

__all__ = [
    "LeaveOneOutResult", "InfluenceResult", "BaujatResult", "CumulativeResult", "GoshResult",
    "SensitivityResult", "leave_one_out", "influence", "baujat", "cumulative", "gosh",
    "run_all",
]

#: cells (studies x refits) per block of a batched refit; bounds memory at a few tens of MB
BLOCK_CELLS = 2_000_000
#: metafor's gosh(): all subsets are fitted when there are at most this many, else this many
#: random subsets (``subsets`` overrides it)
GOSH_DEFAULT_SUBSETS = 10**6
#: metafor sets a leave-one-out residual below 100 * machine epsilon to exactly 0
RESID_ZERO = 100 * np.finfo(float).eps
#: metafor's hatvalues(): a hat value above 1 - 10 * eps is set to 1
HAT_ONE = 1 - 10 * np.finfo(float).eps

Progress = Optional[Callable[[int, int], None]]


# --------------------------------------------------------------------------------------------
# the model fitted to many columns at once


def _control(fit, control):
    """The refits' control: ``control``, or the fit's own when None."""
    if control is None:
        control = getattr(fit, "control", DEFAULT_CONTROL)
    check_option("control", control, CONTROLS)
    return control


def _fit_info(fit):
    """yi, vi, method, test, level and labels of a fitted random-effects model."""
    try:
        yi = np.asarray(fit.yi, dtype=float)
        vi = np.asarray(fit.vi, dtype=float)
        method, test, level = fit.method, fit.test, float(fit.level)
    except AttributeError:
        raise OptionError("expected a fitted random-effects model (models.random_effects(...))"
                          ) from None
    check_option("method", method, METHODS)
    check_option("test", test, TESTS)
    labels = getattr(fit, "labels", None)
    if labels is None or len(labels) != len(yi):
        labels = [f"Study {i + 1}" for i in range(len(yi))]
    return yi, vi, method, test, level, [str(x) for x in labels]


def _fit_columns(Y, V, M, method, test, level, control=DEFAULT_CONTROL):
    """The intercept-only model fitted to every column of ``Y`` (rows where ``M`` is True),
    through ``models.random_effects_batch`` (which is ``random_effects`` column by column,
    with metafor's k = 1 rule).

    Adapter: the batch result has no Knapp-Hartung factor s2w and no var(mu); influence
    diagnostics need both, and s2w = se^2 * sum(w) with w = 1/(v + tau^2) recovers it
    (s2w = 1 under the z test and for single-study columns).
    """
    from metaalliance.engine import models

    with np.errstate(divide="ignore", invalid="ignore"):
        # the engine's Knapp-Hartung factor divides 0 / 0 in single-study columns (which then
        # use the z test, as metafor); keep numpy quiet about it
        b = models.random_effects_batch(Y, V, method=method, test=test, level=level, mask=M,
                                        control=control)
    out = {key: np.asarray(getattr(b, key)) for key in b._fields}
    vb = out["se"] ** 2
    if test == "knha":
        Mf = np.asarray(M, dtype=float)
        Vf = np.asarray(V, dtype=float)
        Vf = Vf[:, None] if Vf.ndim == 1 else Vf
        sw = (Mf / (Vf + out["tau2"][None, :])).sum(axis=0)
        s2w = np.where(out["k"] > 1, vb * sw, 1.0)
    else:
        s2w = np.ones_like(vb)
    out["vb"] = vb
    out["s2w"] = s2w
    return out


def _fit_masked(yi, vi, mask, method, test, level, progress: Progress = None,
                done0: int = 0, total: Optional[int] = None, control=DEFAULT_CONTROL):
    """``_fit_columns`` for a (k, B) boolean mask over the same yi/vi, in memory-bounded blocks."""
    k, B = mask.shape
    step = max(1, BLOCK_CELLS // max(k, 1))
    parts = []
    total = B if total is None else total
    for start in range(0, B, step):
        m = mask[:, start:start + step]
        b = m.shape[1]
        Y = np.broadcast_to(yi[:, None], (k, b))
        parts.append(_fit_columns(Y, vi, m, method, test, level, control))
        if progress is not None:
            progress(done0 + start + b, total)
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _check_finite(name, values, labels):
    for key, arr in values.items():
        bad = ~np.isfinite(np.asarray(arr, dtype=float))
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            raise ModelError(f"{name}: {key} cannot be computed for {labels[i]!r} "
                             "(a refit has no residual variation; try test='z')")


def _records(columns: dict, labels=None) -> list:
    """Rows as plain dicts of Python scalars (for JSON)."""
    keys = list(columns)
    n = len(next(iter(columns.values())))
    out = []
    for i in range(n):
        row = {} if labels is None else {"label": labels[i]}
        for key in keys:
            v = columns[key][i]
            if isinstance(v, (np.bool_, bool)):
                row[key] = bool(v)
            elif isinstance(v, (np.integer, int)):
                row[key] = int(v)
            elif isinstance(v, (np.floating, float)):
                row[key] = float(v)
            else:
                row[key] = v
        out.append(row)
    return out


class _Table:
    """Shared behaviour of the per-study result records."""

    _columns: tuple = ()

    def columns(self) -> dict:
        return {c: getattr(self, c) for c in self._columns}

    def to_frame(self):
        """A pandas DataFrame, one row per study (label first)."""
        import pandas as pd
        df = pd.DataFrame(self.columns())
        df.insert(0, "label", list(self.labels))
        return df

    def to_records(self) -> list:
        """A list of dicts (label + every column), ready for JSON."""
        return _records(self.columns(), list(self.labels))

    def __len__(self):
        return len(self.labels)


# --------------------------------------------------------------------------------------------
# leave-one-out


_FIT_COLUMNS = ("estimate", "se", "stat", "pvalue", "ci_lower", "ci_upper", "q", "q_pvalue",
                "tau2", "i2", "h2")


@dataclass(frozen=True)
class LeaveOneOutResult(_Table):
    """metafor's ``leave1out()``: row i is the model fitted without study i.

    ``stat`` is z (test "z") or t with k - 2 df (test "knha"); ``i2`` is in percent.
    """

    labels: tuple
    estimate: np.ndarray
    se: np.ndarray
    stat: np.ndarray
    pvalue: np.ndarray
    ci_lower: np.ndarray
    ci_upper: np.ndarray
    q: np.ndarray
    q_pvalue: np.ndarray
    tau2: np.ndarray
    i2: np.ndarray
    h2: np.ndarray
    method: str
    test: str
    level: float
    _columns = _FIT_COLUMNS


def _leave_one_out_fits(fit, progress: Progress = None, control=None):
    control = _control(fit, control)
    yi, vi, method, test, level, labels = _fit_info(fit)
    k = len(yi)
    if k < 2:
        raise ModelError("leave-one-out needs at least 2 studies (k = 1)")
    if test == "knha":
        _check_knha(yi, ~np.eye(k, dtype=bool), [f"without {lab!r}" for lab in labels],
                    "leave-one-out")
    mask = ~np.eye(k, dtype=bool)
    res = _fit_masked(yi, vi, mask, method, test, level, progress, control=control)
    return yi, vi, method, test, level, labels, res, control


def _check_knha(yi, mask, names, what):
    """The Knapp-Hartung factor is 0 (metafor: se = 0, infinite z) where a refit of two or more
    studies has identical effect sizes: say which refit instead of returning infinities."""
    for j in range(mask.shape[1]):
        sub = yi[mask[:, j]]
        if sub.size > 1 and np.ptp(sub) == 0:
            raise ModelError(f"{what}: {names[j]} the effect sizes are identical, so the "
                             "Knapp-Hartung adjustment is undefined; use test 'z'")


def leave_one_out(fit, progress: Progress = None, control=None) -> LeaveOneOutResult:
    """Refit ``fit`` without each study in turn, as metafor's ``leave1out()`` (``control``:
    how the refits iterate, None = the fit's own; see the module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> from metaalliance.engine import models
    >>> fit = models.random_effects([0.1, 0.3, 0.35, 0.6], [0.01, 0.02, 0.015, 0.03], method="DL")
    >>> l1o = leave_one_out(fit)
    >>> [round(float(x), 4) for x in l1o.estimate]
    [0.3889, 0.323, 0.306, 0.2323]
    """
    return _leave_one_out(_leave_one_out_fits(fit, progress, control))


def _leave_one_out(parts) -> LeaveOneOutResult:
    yi, vi, method, test, level, labels, res, _ = parts
    cols = {c: res[c] for c in _FIT_COLUMNS}
    _check_finite("leave-one-out", cols, labels)
    return LeaveOneOutResult(labels=tuple(labels), method=method, test=test, level=level, **cols)


# --------------------------------------------------------------------------------------------
# influence diagnostics


@dataclass(frozen=True)
class InfluenceResult(_Table):
    """metafor's ``influence()`` for an intercept-only model.

    ``rstudent`` externally studentized residuals, ``dffits``, ``cook_d`` Cook's distances,
    ``cov_r`` covariance ratios, ``tau2_del`` / ``qe_del`` tau^2 and Q without the study,
    ``hat`` hat values, ``weight`` weights in percent, ``dfbetas``, and ``inf``: True when
    metafor marks the study influential, i.e. any of |dffits| > 3 sqrt(p / (k - p)),
    pchisq(cook.d, df = 1) > 0.5, hat > 3 p / k, |dfbetas| > 1 (p = 1).
    """

    labels: tuple
    rstudent: np.ndarray
    dffits: np.ndarray
    cook_d: np.ndarray
    cov_r: np.ndarray
    tau2_del: np.ndarray
    qe_del: np.ndarray
    hat: np.ndarray
    weight: np.ndarray
    dfbetas: np.ndarray
    inf: np.ndarray
    _columns = ("rstudent", "dffits", "cook_d", "cov_r", "tau2_del", "qe_del", "hat", "weight",
                "dfbetas", "inf")

    @property
    def influential(self) -> list:
        """Labels of the studies flagged influential."""
        return [lab for lab, f in zip(self.labels, self.inf) if f]


def _full_fit(yi, vi, method, test, level, control=DEFAULT_CONTROL):
    """The model on all studies (through the same code path as the refits)."""
    mask = np.ones((len(yi), 1), dtype=bool)
    return {k: v[0] for k, v in _fit_masked(yi, vi, mask, method, test, level,
                                             control=control).items()}


def influence(fit, progress: Progress = None, control=None) -> InfluenceResult:
    """Influence diagnostics of Viechtbauer & Cheung (2010), as metafor's ``influence()``.

    The deleted fits are the leave-one-out fits; the full model's estimate, variance and
    tau^2 are recomputed from ``fit.yi``/``fit.vi`` so that every quantity comes from one
    code path. ``control``: how the fits iterate (None: the fit's own).
    """
    return _influence(_leave_one_out_fits(fit, progress, control))


def _influence(parts) -> InfluenceResult:
    from metaalliance.engine import distributions as stats

    yi, vi, method, test, level, labels, dl, control = parts
    k = len(yi)
    full = _full_fit(yi, vi, method, test, level, control)
    mu, vb, tau2 = full["estimate"], full["vb"], full["tau2"]
    w = 1.0 / (vi + tau2)
    hat = w / w.sum()
    hat = np.where(hat > HAT_ONE, 1.0, hat)
    weight = 100 * w / w.sum()
    mu_del, vb_del, tau2_del, s2w = dl["estimate"], dl["vb"], dl["tau2"], dl["s2w"]
    resid = yi - mu_del
    resid = np.where(np.abs(resid) < RESID_ZERO, 0.0, resid)
    with np.errstate(divide="ignore", invalid="ignore"):
        rstudent = resid / np.sqrt(vi * s2w + vb_del + tau2_del * s2w)
        dffits = (mu - mu_del) / np.sqrt(s2w * hat * (tau2_del + vi))
        # var of the full-data estimate at each deleted tau^2 (metafor's vb.del)
        vb_full_at_del = 1.0 / (1.0 / (vi[:, None] + tau2_del[None, :])).sum(axis=0)
        dfbetas = (mu - mu_del) / np.sqrt(s2w * vb_full_at_del)
    cook_d = (mu - mu_del) ** 2 / vb
    cov_r = vb_del / vb
    p = 1
    inf = ((np.abs(dffits) > 3 * np.sqrt(p / (k - p)))
           | (stats.chi2.cdf(cook_d, p) > 0.5)
           | (hat > 3 * p / k)
           | (np.abs(dfbetas) > 1))
    cols = dict(rstudent=rstudent, dffits=dffits, cook_d=cook_d, cov_r=cov_r,
                tau2_del=tau2_del, qe_del=dl["q"], hat=hat, weight=weight, dfbetas=dfbetas)
    _check_finite("influence", cols, labels)
    return InfluenceResult(labels=tuple(labels), inf=np.asarray(inf, dtype=bool), **cols)


# --------------------------------------------------------------------------------------------
# Baujat plot coordinates


@dataclass(frozen=True)
class BaujatResult(_Table):
    """metafor's ``baujat()`` coordinates: ``x`` the squared Pearson residual
    (y_i - mu)^2 / (v_i + tau^2) (the study's contribution to Q for an EE model), ``y`` its
    influence on the result (mu_(-i) - mu)^2 / var(mu_(-i))."""

    labels: tuple
    x: np.ndarray
    y: np.ndarray
    _columns = ("x", "y")


def baujat(fit, progress: Progress = None, control=None) -> BaujatResult:
    """Coordinates of the Baujat plot, as metafor's ``baujat()`` returns them (``control``:
    how the fits iterate, None = the fit's own)."""
    return _baujat(_leave_one_out_fits(fit, progress, control))


def _baujat(parts) -> BaujatResult:
    yi, vi, method, test, level, labels, dl, control = parts
    full = _full_fit(yi, vi, method, test, level, control)
    x = (yi - full["estimate"]) ** 2 / (full["tau2"] + vi)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = (dl["estimate"] - full["estimate"]) ** 2 / dl["vb"]
    _check_finite("baujat", {"x": x, "y": y}, labels)
    return BaujatResult(labels=tuple(labels), x=x, y=y)


# --------------------------------------------------------------------------------------------
# cumulative meta-analysis


@dataclass(frozen=True)
class CumulativeResult(_Table):
    """metafor's ``cumul()``: row i is the model fitted to the first i studies in ``order``
    (``labels`` in that order; ``index`` the studies' positions in the fitted data)."""

    labels: tuple
    index: np.ndarray
    estimate: np.ndarray
    se: np.ndarray
    stat: np.ndarray
    pvalue: np.ndarray
    ci_lower: np.ndarray
    ci_upper: np.ndarray
    q: np.ndarray
    q_pvalue: np.ndarray
    tau2: np.ndarray
    i2: np.ndarray
    h2: np.ndarray
    k: np.ndarray
    method: str
    test: str
    level: float
    order_by: Optional[str] = None
    _columns = ("k",) + _FIT_COLUMNS


def cumulative(fit, order: Optional[Sequence] = None, decreasing: bool = False,
               order_by: Optional[str] = None, progress: Progress = None,
               control=None) -> CumulativeResult:
    """Add the studies one at a time, as metafor's ``cumul(fit, order = order)``.

    ``order`` holds one sort key per study (e.g. the publication year); studies are sorted by
    it with ties kept in their data order (R's ``order()`` is stable). ``None`` keeps the data
    order. ``order_by`` only names the key for display. ``control``: how the fits iterate
    (None: the fit's own).
    """
    control = _control(fit, control)
    yi, vi, method, test, level, labels = _fit_info(fit)
    k = len(yi)
    if order is None:
        idx = np.arange(k)
    else:
        key = np.asarray(order)
        if key.shape != (k,):
            raise DataError(f"order has {key.size} values but the model has k = {k} studies")
        if key.dtype.kind == "f" and np.any(np.isnan(key)):
            raise DataError("order contains missing values")
        if decreasing:
            # R's order(decreasing = TRUE) is stable too: ties stay in data order
            if key.dtype.kind in "iufb":
                idx = np.argsort(-key.astype(float), kind="stable")
            else:
                ranks = np.unique(key, return_inverse=True)[1]
                idx = np.argsort(-ranks, kind="stable")
        else:
            idx = np.argsort(key, kind="stable")
    ys, vs = yi[idx], vi[idx]
    mask = np.tri(k, dtype=bool).T  # column i: the first i + 1 studies
    if test == "knha":
        _check_knha(ys, mask, [f"up to {labels[idx[j]]!r}" for j in range(k)], "cumulative")
    res = _fit_masked(ys, vs, mask, method, test, level, progress, control=control)
    labs = [labels[i] for i in idx]
    cols = {c: res[c] for c in _FIT_COLUMNS}
    _check_finite("cumulative", cols, labs)
    return CumulativeResult(labels=tuple(labs), index=idx, k=res["k"], method=method,
                            test=test, level=level, order_by=order_by, **cols)


# --------------------------------------------------------------------------------------------
# GOSH


@dataclass(frozen=True)
class GoshResult:
    """metafor's ``gosh()``: the model fitted to subsets of the studies.

    ``incl`` (n_subsets, k) bool: which studies each subset holds; per subset ``k``, ``q``,
    ``i2`` (percent), ``h2``, ``tau2`` and ``estimate``. Rows are sorted by subset size (ties
    in generation order), as metafor sorts them. ``exact`` is True when all 2^k - 1 subsets
    were fitted (then the result does not depend on ``seed``).
    """

    labels: tuple
    incl: np.ndarray
    k: np.ndarray
    q: np.ndarray
    i2: np.ndarray
    h2: np.ndarray
    tau2: np.ndarray
    estimate: np.ndarray
    exact: bool
    seed: Optional[int]
    method: str
    measure: str = "generic"
    fit_estimate: float = field(default=float("nan"))
    fit_i2: float = field(default=float("nan"))

    @property
    def n_subsets(self) -> int:
        return int(self.incl.shape[0])

    def to_frame(self):
        """One row per subset: k, q, i2, h2, tau2, estimate (metafor's ``res``)."""
        import pandas as pd
        return pd.DataFrame({"k": self.k, "q": self.q, "i2": self.i2, "h2": self.h2,
                             "tau2": self.tau2, "estimate": self.estimate})

    def study_effects(self) -> list:
        """Per study: mean estimate and I^2 over the subsets with and without it (the usual
        reading of a GOSH plot: which study moves the cloud)."""
        out = []
        for j, lab in enumerate(self.labels):
            w = self.incl[:, j]
            row = {"label": lab}
            for key, arr in (("estimate", self.estimate), ("i2", self.i2)):
                row[f"{key}_with"] = float(arr[w].mean()) if w.any() else None
                row[f"{key}_without"] = float(arr[~w].mean()) if (~w).any() else None
            out.append(row)
        return out

    def summary_dict(self) -> dict:
        """Distribution of the estimate and I^2 over the subsets (JSON-ready)."""
        qs = (0.025, 0.25, 0.5, 0.75, 0.975)

        def dist(a):
            a = np.asarray(a, dtype=float)
            return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if a.size > 1 else 0.0,
                    "min": float(a.min()), "max": float(a.max()),
                    "quantiles": {str(q): float(np.quantile(a, q)) for q in qs}}

        return {"subsets": self.n_subsets, "exact": bool(self.exact), "seed": self.seed,
                "method": self.method, "k": len(self.labels),
                "estimate": dist(self.estimate), "i2": dist(self.i2), "tau2": dist(self.tau2),
                "studies": self.study_effects()}


def _all_subsets(k: int) -> np.ndarray:
    """All non-empty subsets in R's expand.grid order (study 1 varies fastest)."""
    if k > 30:
        raise ModelError(f"all subsets of k = {k} studies are too many to enumerate")
    r = np.arange(1, 2**k, dtype=np.int64)
    return ((r[:, None] >> np.arange(k)) & 1).astype(bool)


#: number of set bits of every byte value
_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1)


def _random_subset_bits(k: int, n: int, rng) -> np.ndarray:
    """``n`` random non-empty subsets as packed bits (n, ceil(k / 8)) uint8 (study j is bit
    j, most significant first: ``np.unpackbits(bits, axis=1, count=k)``), each subset equally
    likely (metafor draws the size from a binomial(k, 1/2) restricted to >= 1, then the
    studies at random: the same distribution).

    Each study is in with probability 1/2: one random bit per study (8x fewer draws than one
    double per study, which took longer than the fits themselves); the bits beyond k are
    cleared, and an empty draw is drawn again.
    """
    nbytes = (k + 7) // 8
    last = np.uint8((0xFF << (8 * nbytes - k)) & 0xFF)

    def draw(m):
        raw = rng.integers(0, 256, size=(m, nbytes), dtype=np.uint8)
        raw[:, -1] &= last
        return raw

    out = draw(n)
    empty = np.flatnonzero(~out.any(axis=1))
    while empty.size:                       # the empty subset is not a subset: draw again
        out[empty] = draw(empty.size)
        empty = empty[~out[empty].any(axis=1)]
    return out


def _random_subsets(k: int, n: int, rng) -> np.ndarray:
    """``n`` random non-empty subsets (n, k) bool, each equally likely (see
    ``_random_subset_bits``)."""
    return np.unpackbits(_random_subset_bits(k, n, rng), axis=1, count=k).view(bool)


def gosh(fit, subsets: Optional[int] = None, seed: Optional[int] = None,
         progress: Progress = None, control=None) -> GoshResult:
    """GOSH: the model fitted to subsets of the studies (Olkin, Dahabreh & Trikalinos 2012),
    as metafor's ``gosh()``.

    As metafor: subsets of every size 1..k (sizes >= p with p = 1 coefficient); all
    2^k - 1 subsets when there are at most ``subsets`` of them (default 10^6), otherwise
    ``subsets`` random subsets drawn with ``numpy.random.default_rng(seed)``. (metafor draws
    with R's generator, so random subsets are the same in distribution, not draw by draw.)
    Every fit uses the model's own tau^2 estimator (``models.random_effects_batch``) and
    ``control`` (None: the fit's own).
    """
    control = _control(fit, control)
    yi, vi, method, test, level, labels = _fit_info(fit)
    k = len(yi)
    if k < 2:
        raise ModelError("GOSH needs at least 2 studies (k = 1)")
    limit = GOSH_DEFAULT_SUBSETS if subsets is None else int(round(subsets))
    if limit <= 1:
        raise OptionError(f"subsets: must be >= 2, got {subsets!r}")
    n_total = 2.0**k - 1
    exact = n_total <= limit
    if exact:
        incl = _all_subsets(k)
        incl = incl[np.argsort(incl.sum(axis=1), kind="stable")]
    else:
        # sorted by size while packed (8x less memory to count and move), then unpacked once
        bits = _random_subset_bits(k, limit, np.random.default_rng(seed))
        size = _POPCOUNT[bits].sum(axis=1)
        incl = np.unpackbits(bits[np.argsort(size, kind="stable")], axis=1,
                             count=k).view(bool)
    res = _fit_masked(yi, vi, incl.T, method, "z", level, progress, control=control)
    if method == "DL":
        # metafor's gosh() fits EE and DL models with a closed-form shortcut that takes
        # I^2 and H^2 from Q, as for an EE model: I^2 is the same as rma()'s, H^2 = Q / (k - 1)
        # differs where Q < k - 1 (rma() gives 1 there)
        many = res["k"] > 1
        res["h2"] = np.where(many, res["q"] / np.maximum(res["k"] - 1, 1), 1.0)
    full = _full_fit(yi, vi, method, test, level, control)
    return GoshResult(labels=tuple(labels), incl=incl, k=res["k"], q=res["q"], i2=res["i2"],
                      h2=res["h2"], tau2=res["tau2"], estimate=res["estimate"],
                      exact=bool(exact), seed=None if exact else seed, method=method,
                      measure=str(getattr(fit, "measure", "generic")),
                      fit_estimate=float(full["estimate"]), fit_i2=float(full["i2"]))


# --------------------------------------------------------------------------------------------
# everything at once


@dataclass(frozen=True, eq=False)
class SensitivityResult:
    """All sensitivity analyses of one fit (the ``metaalliance sensitivity`` command)."""

    leave_one_out: LeaveOneOutResult
    influence: InfluenceResult
    baujat: BaujatResult
    cumulative: CumulativeResult
    gosh: Optional[GoshResult]
    k: int
    method: str
    test: str

    def to_dict(self) -> dict:
        """The ``sensitivity --json`` form of ARCHITECTURE.md (plus Baujat coordinates, and
        the GOSH summary when GOSH was run)."""
        cu = self.cumulative
        out = {"k": self.k, "method": self.method, "test": self.test,
               "leave_one_out": self.leave_one_out.to_records(),
               "influence": self.influence.to_records(),
               "baujat": self.baujat.to_records(),
               "cumulative": cu.to_records(),
               "cumulative_order": cu.order_by}
        if self.gosh is not None:
            out["gosh"] = self.gosh.summary_dict()
        return out


def run_all(fit, order: Optional[Sequence] = None, order_by: Optional[str] = None,
            decreasing: bool = False, gosh_subsets: Optional[int] = None,
            seed: Optional[int] = None, progress: Progress = None,
            control=None) -> SensitivityResult:
    """Leave-one-out, influence, Baujat, cumulative (in ``order``) and, when ``gosh_subsets``
    is given, GOSH, sharing the leave-one-out refits. ``progress(done, total)`` counts refits;
    ``control``: how the fits iterate (None: the fit's own)."""
    control = _control(fit, control)
    yi = np.asarray(fit.yi)
    k = yi.size
    n_gosh = 0
    if gosh_subsets is not None:
        n_gosh = int(min(2.0**k - 1, max(int(round(gosh_subsets)), 0)))
    total = 2 * k + n_gosh

    def sub(offset):
        if progress is None:
            return None
        return lambda done, _tot: progress(offset + done, total)

    parts = _leave_one_out_fits(fit, sub(0), control)
    cu = cumulative(fit, order=order, decreasing=decreasing, order_by=order_by, progress=sub(k),
                    control=control)
    g = None
    if gosh_subsets is not None:
        g = gosh(fit, subsets=gosh_subsets, seed=seed, progress=sub(2 * k), control=control)
    return SensitivityResult(leave_one_out=_leave_one_out(parts), influence=_influence(parts),
                             baujat=_baujat(parts), cumulative=cu, gosh=g, k=int(k),
                             method=parts[2], test=parts[3])
