"""How the tau^2 iterations stop: convergence constants, the ``Tau2Fit`` record every tau^2
kernel returns, and metafor's default control (``control="metafor"``).

The loops of metafor 3.8-1's ``rma.uni`` and ``confint.rma.uni`` are written once here
(``mf_scoring``, ``mf_bounded_root`` and their one-fit versions ``mf_scoring1``,
``mf_bounded_root1``) and driven by each kernel's step or Q function (``tau2`` for columns,
``subsets`` for subsets of one dataset, ``design`` for single meta-regressions); see
``estimators`` for the rules and why they reproduce metafor step for step.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from metaalliance.engine.uniroot import uniroot, uniroot1
from metaalliance.options import CONTROLS, check_option


#: stop iterating when |change| <= CONV_TOL * (tau2 + vbar): the optimum to ~machine precision
CONV_TOL = 1e-12
#: a run that hits MAXITER still counts as converged when its last change is below this
#: (relative) bound: rounding noise can keep the change just above CONV_TOL for huge k
CONV_TOL_ACCEPT = 1e-8
#: iteration cap for Fisher scoring and the root finder (metafor's maxiter is 100)
MAXITER = 1000
#: metafor's ``con$tol`` (.Machine$double.eps^0.25): log-likelihood tolerance of its check
#: that Fisher scoring did not stop at a worse point than tau2 = 0 (``ll0check``)
LL0_TOL = float(np.finfo(float).eps ** 0.25)
#: metafor's ``con$evtol``: eigenvalues of X'X below this mean a rank-deficient design
EVTOL = 1e-07

ITERATIVE = ("ML", "REML", "EB", "PM")

# metafor 3.8-1's default control of rma.uni and confint.rma.uni (control = "metafor")
#: Fisher scoring / EB stop when |change of tau2| <= this (con$threshold)
MF_THRESHOLD = 1e-5
#: ... and fail after this many iterations (con$maxiter; also uniroot's maxiter for PM)
MF_MAXITER = 100
#: uniroot's tol for PM and the Q-profile bounds (con$tol = .Machine$double.eps^0.25)
MF_TOL = float(np.finfo(float).eps ** 0.25)
#: rma.uni's tau2.max = max(MF_TAU2_MAX, 10 * mad(yi)^2); confint's max(100, 10 tau2)
MF_TAU2_MAX = 100.0
#: confint.rma.uni's uniroot maxiter
MF_CI_MAXITER = 1000
#: R's mad() constant
MAD_CONSTANT = 1.4826


class Tau2Fit(NamedTuple):
    """tau^2 per column with convergence information (all arrays of shape (B,))."""

    tau2: np.ndarray
    converged: np.ndarray        # bool: False -> the value is the DL fallback
    iterations: np.ndarray       # int
    reset_to_zero: np.ndarray    # bool: metafor's ll0check set tau2 to 0 (ML/REML)
    safeguarded: np.ndarray      # bool: metafor's algorithm fails here (metafor stops with an
                                 # error: Fisher scoring "did not converge", PM "tau2.max too
                                 # low"); the value comes from the safeguarded optimum search

# --------------------------------------------------------------------------------------------
# metafor's default control (control = "metafor"): the loops of rma.uni and confint.rma.uni,
# written once for any kernel that can evaluate a step or Q at given tau^2 values


def check_control(control) -> None:
    check_option("control", control, CONTROLS)


def _r_median_sorted(Z, n):
    """R's median of each column of Z (sorted along axis 0, missing values last as NaN) with
    n values per column: the middle value, or the mean of the two middle ones."""
    cols = np.arange(Z.shape[1])
    lo = Z[(n - 1) // 2, cols]
    hi = Z[n // 2, cols]
    return np.where(n % 2 == 1, lo, (lo + hi) / 2.0)


def r_mad(Y, M=None):
    """R's ``mad()`` (constant 1.4826, centre = median) of each column of Y (k, B) over the
    rows where M is true (None: all rows)."""
    Y = np.asarray(Y, dtype=float)
    if Y.ndim == 1:
        Y = Y[:, None]
    used = np.ones(Y.shape, dtype=bool) if M is None else np.asarray(M) > 0
    n = used.sum(axis=0)
    Z = np.sort(np.where(used, Y, np.nan), axis=0)
    med = _r_median_sorted(Z, n)
    D = np.sort(np.where(used, np.abs(Y - med[None, :]), np.nan), axis=0)
    return MAD_CONSTANT * _r_median_sorted(D, n)


def rma_tau2_max(Y, M=None):
    """rma.uni's upper end of the tau^2 search, ``max(100, 10 * mad(yi)^2)``, per column of
    the (uncentred) outcome Y (k, B) over the rows where M is true.

    Since mad <= 1.4826 * range, columns whose range keeps 10 mad^2 clearly below 100 get 100
    without computing their median (the common case); the others get R's mad exactly.
    """
    Y = np.asarray(Y, dtype=float)
    if Y.ndim == 1:
        Y = Y[:, None]
    used = np.ones(Y.shape, dtype=bool) if M is None else np.asarray(M) > 0
    out = np.full(Y.shape[1], MF_TAU2_MAX)
    rng = np.where(used, Y, -np.inf).max(axis=0) - np.where(used, Y, np.inf).min(axis=0)
    bound = MAD_CONSTANT * rng
    need = np.flatnonzero(10.0 * bound * bound >= 0.99 * MF_TAU2_MAX)
    if need.size:
        mad = r_mad(Y[:, need], used[:, need])
        out[need] = np.maximum(MF_TAU2_MAX, 10.0 * (mad * mad))
    return out


def _halve(t, adj):
    """metafor's ``while (tau2 + adj < tau2.min) adj <- adj / 2`` (tau2.min = 0). At tau2 = 0
    a negative step halves down to -0.0, which leaves tau2 at 0: done in one go here."""
    adj = np.where((t == 0.0) & (adj < 0.0), -0.0, adj)
    neg = t + adj < 0.0
    while np.any(neg):
        adj = np.where(neg, adj / 2.0, adj)
        neg = t + adj < 0.0
    return adj


def mf_scoring(step, start):
    """metafor's ML/REML/EB loop of rma.uni (default control) for n fits at once.

    ``step(t, idx)`` returns the update ``adj`` of the fits ``idx`` at tau2 ``t``. Per fit, as
    metafor: ``adj`` NaN -> 0 (here also +-inf, on which metafor fails one step later), step
    halving while ``tau2 + adj < 0``, ``change = |old - new|``;
    converged when ``change <= MF_THRESHOLD`` within ``MF_MAXITER`` iterations, failed when
    iteration ``MF_MAXITER + 1`` is reached (metafor: "Fisher scoring algorithm did not
    converge"). Returns (tau2, converged, iterations).
    """
    tau2 = np.array(start, dtype=float, copy=True).reshape(-1)
    n = tau2.size
    conv = np.zeros(n, dtype=bool)
    iters = np.zeros(n, dtype=int)
    act = np.arange(n)
    for it in range(1, MF_MAXITER + 2):
        if act.size == 0:
            break
        t = tau2[act]
        with np.errstate(divide="ignore", invalid="ignore"):
            adj = np.asarray(step(t, act), dtype=float)
        adj = _halve(t, np.where(np.isfinite(adj), adj, 0.0))
        new = t + adj
        change = np.abs(t - new)
        tau2[act] = new
        iters[act] = it
        if it > MF_MAXITER:
            break
        done = change <= MF_THRESHOLD
        conv[act[done]] = True
        act = act[~done]
    return tau2, conv, iters


def mf_scoring1(step, start: float):
    """``mf_scoring`` for one fit in Python floats (``step(t)`` -> adj)."""
    t = float(start)
    for it in range(1, MF_MAXITER + 2):
        try:
            adj = float(step(t))
        except ZeroDivisionError:
            adj = 0.0
        if not math.isfinite(adj):
            adj = 0.0
        if t == 0.0 and adj < 0.0:
            adj = -0.0
        while t + adj < 0.0:
            adj = adj / 2.0
        new = t + adj
        change = abs(t - new)
        t = new
        if it > MF_MAXITER:
            return t, False, it
        if change <= MF_THRESHOLD:
            return t, True, it
    raise AssertionError("unreachable")


def mf_bounded_root(q, target, upper, maxiter=MF_MAXITER):
    """Q(tau2) = target on [0, upper] for n fits, as metafor: 0 where ``Q(0) < target``;
    ``upper`` where ``Q(upper) > target`` (flagged: for PM metafor stops with "Value of
    'tau2.max' too low", confint reports the end); otherwise R's
    ``uniroot(Q - target, c(0, upper), tol = MF_TOL, maxiter)``.

    ``q(t, idx)`` returns Q of the fits ``idx`` at tau2 ``t``. Returns (tau2, iterations,
    above) with ``above`` True where the root lies beyond ``upper``.
    """
    target = np.atleast_1d(np.asarray(target, dtype=float))
    upper = np.atleast_1d(np.asarray(upper, dtype=float))
    n = max(target.size, upper.size)
    target = np.broadcast_to(target, (n,))
    upper = np.broadcast_to(upper, (n,))
    out = np.zeros(n)
    iters = np.zeros(n, dtype=int)
    above = np.zeros(n, dtype=bool)
    q0 = np.asarray(q(np.zeros(n), np.arange(n)), dtype=float)
    rest = np.flatnonzero(~(q0 < target))
    if rest.size:
        qu = np.asarray(q(upper[rest], rest), dtype=float)
        hi = qu > target[rest]
        out[rest[hi]] = upper[rest[hi]]
        above[rest[hi]] = True
        go = rest[~hi]
        if go.size:
            tg = target[go]
            r = uniroot(lambda x, j: q(x, go[j]) - tg[j], np.zeros(go.size), upper[go],
                        q0[go] - tg, qu[~hi] - tg, MF_TOL, maxiter)
            out[go] = r.root
            iters[go] = r.iterations
    return out, iters, above


def mf_bounded_root1(q, target: float, upper: float, maxiter=MF_MAXITER):
    """``mf_bounded_root`` for one fit in Python floats (``q(t)`` -> Q)."""
    target, upper = float(target), float(upper)
    q0 = float(q(0.0))
    if q0 < target:
        return 0.0, 0, False
    qu = float(q(upper))
    if qu > target:
        return upper, 0, True
    r = uniroot1(lambda x: q(x) - target, 0.0, upper, q0 - target, qu - target, MF_TOL,
                 maxiter)
    return r.root, r.iterations, False
