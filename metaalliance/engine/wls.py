"""Batch layout and weighted least squares, the linear algebra under every tau^2 estimator.

``as_batch`` validates and broadcasts data to columns (``Y`` (k, B), one model per column);
``wls`` is the per-column weighted least squares kernel (O(k p^2 B), no k x k matrix), with
the traces of metafor's P matrix that the estimators need; ``q_stat``, ``centered`` and
``vbar`` are shared with ``inference``; ``check_design`` refuses rank-deficient designs as
metafor does; ``single_threaded_blas`` keeps the skinny batch products on one BLAS thread.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import numpy as np

from metaalliance.engine.control import EVTOL
from metaalliance.errors import DataError, ModelError


# --------------------------------------------------------------------------------------------
# input handling


def as_batch(Y, V, X=None, mask=None):
    """Validate and broadcast to Y (k,B), V (k,B), X (k,p), M (k,B) float 0/1, squeeze flag.

    ``V`` may be (k,) (the same variances for every column) or (k, B). ``mask`` (k,B) bool
    marks rows that take part in each column's fit (None: all rows).
    """
    Y = np.asarray(Y, dtype=float)
    squeeze = Y.ndim == 1
    if squeeze:
        Y = Y[:, None]
    if Y.ndim != 2:
        raise DataError(f"Y must be a vector or a (k, B) matrix, got shape {Y.shape}")
    k, B = Y.shape
    V = np.asarray(V, dtype=float)
    if V.ndim == 1:
        if V.shape[0] != k:
            raise DataError(f"vi has length {V.shape[0]} but yi has length {k}")
        V = np.broadcast_to(V[:, None], (k, B))
    elif V.shape != (k, B):
        raise DataError(f"V must have shape ({k},) or ({k}, {B}), got {V.shape}")
    if mask is None:
        M = np.ones((k, B))
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim == 1:
            mask = np.broadcast_to(mask[:, None], (k, B))
        if mask.shape != (k, B):
            raise DataError(f"mask must have shape ({k}, {B}), got {mask.shape}")
        M = mask.astype(float)
    used = M > 0
    if not np.all(np.isfinite(Y[used])):
        raise DataError("yi contains missing or non-finite values")
    if not np.all(np.isfinite(V[used])):
        raise DataError("vi contains missing or non-finite values")
    if np.any(V[used] <= 0):
        raise DataError("vi must be > 0 for every study")
    if X is None:
        X = np.ones((k, 1))
    else:
        X = np.asarray(X, dtype=float)
        if X.ndim == 1:
            X = X[:, None]
        if X.shape[0] != k:
            raise DataError(f"X has {X.shape[0]} rows but yi has length {k}")
        if not np.all(np.isfinite(X)):
            raise DataError("X contains missing or non-finite values")
    # rows outside the mask must not produce inf/nan in products with weight 0
    if mask is not None:
        Y = np.where(used, Y, 0.0)
        V = np.where(used, V, 1.0)
    return Y, V, X, M, squeeze


def is_intercept_only(X) -> bool:
    return X.shape[1] == 1 and bool(np.all(X[:, 0] == 1.0))


# --------------------------------------------------------------------------------------------
# weighted least squares kernel (per column), O(k p^2 B)


class WLS(NamedTuple):
    A: np.ndarray       # (B,p,p) (X'WX)^-1
    beta: np.ndarray    # (B,p)
    r: np.ndarray       # (k,B) residuals y - X beta
    h: np.ndarray       # (k,B) x_i' A x_i for intercept-only fits (1 / sw); None otherwise
                        # (the traces use cross products X' diag(c) X instead)
    sw: np.ndarray      # (B,) sum of weights
    X: np.ndarray = None    # the design (for the traces)
    XX: np.ndarray = None   # its design_products when the caller had them


#: up to this many columns, cross products are formed column by column ((X * u).T @ X);
#: beyond, through ``design_products`` (one BLAS product for all columns)
FEW_COLUMNS = 4


def design_products(X) -> np.ndarray:
    """Row-wise outer products of X flattened, (k, p*p): row i is vec(x_i x_i').

    With it every per-column cross product X' diag(u_b) X is one matrix product
    ``u.T @ XX`` (BLAS) and every x_i' A_b x_i is ``XX @ vec(A_b)``: O(k p^2) memory, no
    per-call einsum path search (which cost more than the arithmetic for small k).
    """
    k, p = X.shape
    return (X[:, :, None] * X[:, None, :]).reshape(k, p * p)


def wls(X, w, Y, int_only=None, XX=None) -> WLS:
    """Weighted least squares of every column of Y on X with weights w (k,B).

    ``XX`` = ``design_products(X)`` may be passed by loops that call this repeatedly.
    """
    if int_only is None:
        int_only = is_intercept_only(X)
    sw = w.sum(axis=0)
    if int_only:
        if np.any(sw <= 0):
            raise ModelError("no studies left to fit the model")
        a = 1.0 / sw
        b = (w * Y).sum(axis=0) * a
        return WLS(a[:, None, None], b[:, None], Y - b[None, :], np.broadcast_to(a, Y.shape), sw)
    XtWX = _cross(X, w, False, XX)
    try:
        A = np.linalg.inv(XtWX)
    except np.linalg.LinAlgError:
        raise ModelError("the weighted design matrix X'WX is singular") from None
    XtWy = X.T @ (w * Y)                                   # (p,B)
    beta = np.matmul(A, XtWy.T[:, :, None])[:, :, 0]       # (B,p)
    r = Y - X @ beta.T
    return WLS(A, beta, r, None, sw, X, XX)


def _cross(X, u, int_only, XX=None):
    """X' diag(u_b) X per column -> (B,p,p)."""
    if int_only:
        return u.sum(axis=0)[:, None, None]
    B = u.shape[1]
    if XX is None and B <= FEW_COLUMNS:
        return np.stack([(X * u[:, b:b + 1]).T @ X for b in range(B)])
    if XX is None:
        XX = design_products(X)
    p = X.shape[1]
    return (u.T @ XX).reshape(B, p, p)


def _trmm(A1, B1, A2, B2):
    """tr(A1 B1 A2 B2) per column."""
    if A1.shape[1] == 1:
        return A1[:, 0, 0] * B1[:, 0, 0] * A2[:, 0, 0] * B2[:, 0, 0]
    L = np.matmul(A1, B1)
    R = np.matmul(A2, B2)
    return np.einsum("bij,bji->b", L, R)


def _trAC(A, C):
    """tr(A C) per column for symmetric C (B,p,p)."""
    if A.shape[1] == 1:
        return A[:, 0, 0] * C[:, 0, 0]
    return np.einsum("bij,bij->b", A, C)


# The traces below use sum_i c_i h_i = tr(A X' diag(c) X) (h_i = x_i' A x_i), so the (k, B)
# hat values are never formed for p > 1: one cross product per trace. (``X`` and
# ``int_only`` arguments are kept for the callers; the fit ``f`` carries its design.)


def _cross_f(f: WLS, u):
    if f.h is not None:                      # intercept-only
        return u.sum(axis=0)[:, None, None]
    return _cross(f.X, u, False, f.XX)


def trace_P(f: WLS, w):
    """tr(P), P = W - W X A X' W."""
    return f.sw - _trAC(f.A, _cross_f(f, w * w))


def trace_PP(f: WLS, X, w, int_only):
    """tr(P P) (= sum(P * P))."""
    C2 = _cross_f(f, w * w)
    return (w * w).sum(axis=0) - 2 * _trAC(f.A, _cross_f(f, w * w * w)) + _trmm(f.A, C2, f.A, C2)


def trace_PV(f: WLS, w, V):
    return (w * V).sum(axis=0) - _trAC(f.A, _cross_f(f, w * w * V))


def trace_PVPV(f: WLS, X, w, V, int_only):
    """tr(P V P V) (= metafor's sum(PV * t(PV)))."""
    C = _cross_f(f, w * w * V)
    return (((w * V) ** 2).sum(axis=0) - 2 * _trAC(f.A, _cross_f(f, w ** 3 * V * V))
            + _trmm(f.A, C, f.A, C))


def trace_PPV(f: WLS, X, w, V, int_only):
    """tr(P P V) (= metafor's sum(PV * P))."""
    C2 = _cross_f(f, w * w)
    C = _cross_f(f, w * w * V)
    return ((w * w * V).sum(axis=0) - 2 * _trAC(f.A, _cross_f(f, w ** 3 * V))
            + _trmm(f.A, C2, f.A, C))


# --------------------------------------------------------------------------------------------
# helpers shared with inference


def centered(Y, M):
    """metafor's Ymc: each column minus its mean over the rows in the fit."""
    kb = M.sum(axis=0)
    return np.where(M > 0, Y - (M * Y).sum(axis=0) / kb, 0.0)


def q_stat(Yc, V, M, X, tau2, int_only=None, XX=None):
    """Generalised Q: y' P(tau2) y per column (tau2 (B,))."""
    w = M / (V + tau2)
    f = wls(X, w, Yc, int_only, XX)
    return (w * f.r * f.r).sum(axis=0)


def vbar(V, M):
    """Harmonic mean of the sampling variances per column: the natural scale of tau^2."""
    return M.sum(axis=0) / (M / V).sum(axis=0)


def check_design(X, names=None) -> None:
    """Raise ModelError naming the columns if X is rank deficient (metafor: evtol on X'X)."""
    X = np.asarray(X, dtype=float)
    p = X.shape[1]
    if names is None:
        names = [f"X[:, {j}]" for j in range(p)]
    if np.linalg.matrix_rank(X) == p and np.linalg.eigvalsh(X.T @ X).min() > EVTOL:
        return
    # find the columns that are linear combinations of the columns before them
    dependent, kept = [], []
    for j in range(p):
        col = X[:, j]
        norm = np.linalg.norm(col)
        if norm == 0:
            dependent.append(names[j])
            continue
        if kept:
            Q = X[:, kept]
            coef, *_ = np.linalg.lstsq(Q, col, rcond=None)
            resid = np.linalg.norm(col - Q @ coef)
        else:
            resid = norm
        if resid <= 1e-7 * norm:
            dependent.append(names[j])
        else:
            kept.append(j)
    if not dependent:          # numerically near-singular without an exact dependence
        dependent = list(names)
    raise ModelError(
        "design matrix is not of full rank: column(s) "
        + ", ".join(repr(d) for d in dependent)
        + " are constant or a linear combination of other columns"
        + (f" ({', '.join(repr(names[j]) for j in kept)})" if kept else "")
    )

# --------------------------------------------------------------------------------------------
# BLAS threads

_BLAS_CONTROLLER = None


def single_threaded_blas():
    """A context in which BLAS runs on one thread (a no-op without threadpoolctl).

    The batch kernels multiply skinny matrices ((B, k) by (k, 3) or (k, p^2)): memory-bound
    work that extra threads do not speed up, and when the other cores are busy OpenBLAS's
    threads wait on each other: on a loaded 2-core machine a 1000-permutation test took
    0.8-1.4 s with two BLAS threads and 0.16 s with one (benchmarks/README.md).
    """
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController
            _BLAS_CONTROLLER = ThreadpoolController()
        except Exception:               # not installed, or an unknown BLAS: leave it alone
            _BLAS_CONTROLLER = False
    if _BLAS_CONTROLLER is False:
        return contextlib.nullcontext()
    return _BLAS_CONTROLLER.limit(limits=1, user_api="blas")
