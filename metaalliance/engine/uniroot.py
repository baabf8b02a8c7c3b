"""R's ``uniroot()``: Brent's root finder exactly as R runs it, for one or many functions.

metafor's default control finds the Paule-Mandel tau^2 (``rma.uni``) and the Q-profile bounds
(``confint.rma.uni``) with ``uniroot(f, c(lower, upper), tol = .Machine$double.eps^0.25)``.
That tolerance stops the search ~1e-4 (absolute) from the root, so reproducing metafor's
numbers to 1e-6 means reproducing its path, step for step: the same start (the interval ends
and ``f`` there), the same choice between inverse quadratic interpolation, secant and
bisection, the same tolerance rule and the same point returned. This module is a port of that
algorithm, written from its description (Brent 1973; Forsythe, Malcolm & Moler 1977; R's
``R_zeroin2`` in ``src/library/stats/src/zeroin.c`` and ``uniroot`` in
``src/library/stats/R/nlm.R``):

- three abscissae: ``b`` the best estimate, ``a`` the previous one, ``c`` the point that
  brackets the root with ``b`` (``f(b)`` and ``f(c)`` of opposite sign); if ``|f(c)| <
  |f(b)|`` the two swap roles (and ``a`` becomes the old ``b``);
- the tolerance of a step is ``tol_act = 2 eps |b| + tol / 2``; the search stops, returning
  ``b``, as soon as half the bracket ``(c - b) / 2`` is within ``tol_act`` or ``f(b) == 0``;
- an interpolation step (secant when ``a == c``, inverse quadratic otherwise) is tried when
  the previous step was at least ``tol_act`` long and reduced ``|f|``; it is taken only if it
  falls well inside the bracket (``p < 0.75 (c - b) q - |tol_act q| / 2``) and is shorter than
  half the previous step; otherwise bisection; a step is never shorter than ``tol_act``;
- after a step, ``c`` moves to the previous ``b`` when the new ``f(b)`` has the sign of
  ``f(c)``;
- the loop may run ``maxiter + 1`` times; the count reported is the number of function
  evaluations inside the loop; a search that is still open after that returns its ``b`` with
  a warning (``uniroot``: "_NOT_ converged in maxiter iterations");
- ``uniroot``'s own wrapper: ``f.lower``/``f.upper`` are evaluated first (or given); with
  ``extendInt`` ("yes", "upX", "downX"; ``uniroot1`` only) the interval is first widened as R
  does (steps of 1% of the end, doubling); with the default ``extendInt = "no"`` it is not,
  ``lower < upper`` is required and ``f`` must not have the same sign at both ends; a root at
  an end is returned at once.

Every arithmetic operation is done in the same order as R's C code, so that each iterate is
the same IEEE double as R's (given the same ``f`` values).

``uniroot1`` works on Python floats (one function), ``uniroot`` on arrays (one function per
column, each column with its own interval; ``f(x, idx)`` evaluates the columns ``idx`` at the
points ``x``), which the batch paths (permutation tests, leave-one-out, GOSH ...) use.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, NamedTuple

import numpy as np

from metaalliance.errors import MetaAllianceWarning, ModelError

EPS = float(np.finfo(float).eps)
#: uniroot's default tolerance (.Machine$double.eps^0.25), which metafor uses
DEFAULT_TOL = EPS ** 0.25
#: uniroot's default maxiter
DEFAULT_MAXITER = 1000


class Root(NamedTuple):
    """Result of ``uniroot``: arrays (or floats for ``uniroot1``)."""

    root: np.ndarray
    iterations: np.ndarray     # evaluations inside the loop (maxiter when not converged)
    converged: np.ndarray      # False: maxiter reached; root is the last b (R warns)


def _check_ends(lower, upper, f_lower, f_upper, signs=True):
    """uniroot's checks of its arguments; ``signs=False``: without the opposite-sign check,
    which an ``extendInt`` search makes after widening the interval."""
    lower, upper = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    f_lower, f_upper = np.asarray(f_lower, dtype=float), np.asarray(f_upper, dtype=float)
    if np.any(~(lower < upper)):
        raise ModelError("uniroot: lower < upper is not fulfilled")
    if np.any(np.isnan(f_lower)):
        raise ModelError("uniroot: f.lower = f(lower) is NA")
    if np.any(np.isnan(f_upper)):
        raise ModelError("uniroot: f.upper = f(upper) is NA")
    if signs and np.any(~(np.sign(f_lower) * np.sign(f_upper) <= 0)):
        raise ModelError("uniroot: f() values at end points not of opposite sign")


#: uniroot's extendInt: the sign f must change to (None: either), 0: do not extend
_EXTEND_SIG = {"no": 0, "yes": None, "upX": 1, "downX": -1}


def _extend(f, lower, upper, fl, fu, extend_int, maxiter):
    """uniroot's ``extendInt`` search (R's ``uniroot`` in ``src/library/stats/R/nlm.R``):
    widen [lower, upper] in steps 0.01 max(1e-4, |end|), doubling, until f changes sign
    ("yes"), f(lower) <= 0 and f(upper) >= 0 ("upX": f increases through the root) or the
    mirror ("downX"). Returns (lower, upper, f(lower), f(upper))."""
    if extend_int not in _EXTEND_SIG:
        raise ModelError(f"uniroot: extendInt must be one of {', '.join(_EXTEND_SIG)}")
    sig = _EXTEND_SIG[extend_int]
    big = float(np.finfo(float).max)

    def trunc(x):
        return max(min(x, big), -big)

    fl_, fu_ = trunc(fl), trunc(fu)
    do_x = ((sig is None and fl_ * fu_ > 0) or
            (sig is not None and sig != 0 and (sig * fl_ > 0 or sig * fu_ < 0)))
    if do_x:
        def delta_of(u):
            return 0.01 * max(1e-4, abs(u))

        it = 0
        if sig is None:
            delta = [delta_of(lower), delta_of(upper)]
            while fl * fu > 0 and (math.isfinite(lower) or math.isfinite(upper)):
                it += 1
                if it > maxiter:
                    raise ModelError(f"uniroot: no sign change found in {it - 1} iterations")
                if math.isfinite(lower):
                    ol, of = lower, fl
                    lower = lower - delta[0]
                    fl = float(f(lower))
                    if math.isnan(fl):
                        lower, fl = ol, of
                        delta[0] /= 4
                if math.isfinite(upper):
                    ol, of = upper, fu
                    upper = upper + delta[1]
                    fu = float(f(upper))
                    if math.isnan(fu):
                        upper, fu = ol, of
                        delta[1] /= 4
                delta = [2 * delta[0], 2 * delta[1]]
        else:
            delta = delta_of(lower)
            while sig * fl > 0:
                it += 1
                if it > maxiter:
                    raise ModelError(f"uniroot: no sign change found in {it - 1} iterations")
                lower = lower - delta
                fl = float(f(lower))
                delta = 2 * delta
            delta = delta_of(upper)
            while sig * fu < 0:
                it += 1
                if it > maxiter:
                    raise ModelError(f"uniroot: no sign change found in {it - 1} iterations")
                upper = upper + delta
                fu = float(f(upper))
                delta = 2 * delta
    if not (np.sign(fl) * np.sign(fu) <= 0):
        raise ModelError("uniroot: did not succeed extending the interval endpoints for "
                         "f(lower) * f(upper) <= 0" if do_x else
                         "uniroot: f() values at end points not of opposite sign")
    return lower, upper, fl, fu


def uniroot1(f: Callable[[float], float], lower: float, upper: float, f_lower=None,
             f_upper=None, tol: float = DEFAULT_TOL, maxiter: int = DEFAULT_MAXITER,
             warn: bool = True, extend_int: str = "no") -> Root:
    """``uniroot(f, c(lower, upper), f.lower, f.upper, extendInt, tol = tol, maxiter = maxiter)``
    for one function of a Python float; returns Root(root, iterations, converged) as
    floats/ints (``iterations`` without the evaluations of the extension, unlike R's ``iter``).
    ``extend_int``: "no" (default), "yes", "upX" or "downX", as R's ``extendInt``."""
    lower, upper = float(lower), float(upper)
    fa = float(f(lower)) if f_lower is None else float(f_lower)
    fb = float(f(upper)) if f_upper is None else float(f_upper)
    _check_ends(lower, upper, fa, fb, signs=extend_int == "no")
    if extend_int != "no":
        lower, upper, fa, fb = _extend(f, lower, upper, fa, fb, extend_int, maxiter)
    a, b = lower, upper
    c, fc = a, fa
    if fa == 0.0:
        return Root(a, 0, True)
    if fb == 0.0:
        return Root(b, 0, True)
    half_tol = tol / 2.0
    for used in range(int(maxiter) + 1):
        prev = b - a
        if abs(fc) < abs(fb):                  # b must be the better end: swap b and c
            a, b, c = b, c, b
            fa, fb, fc = fb, fc, fb
        tol_act = 2.0 * EPS * abs(b) + half_tol
        step = (c - b) / 2.0                    # bisection
        if abs(step) <= tol_act or fb == 0.0:
            return Root(b, used, True)
        if abs(prev) >= tol_act and abs(fa) > abs(fb):
            cb = c - b
            if a == c:                          # two distinct points: secant
                s = fb / fa
                p = cb * s
                q = 1.0 - s
            else:                               # three: inverse quadratic interpolation
                r = fa / fc
                s = fb / fc
                t = fb / fa
                p = t * (cb * r * (r - s) - (b - a) * (s - 1.0))
                q = (r - 1.0) * (s - 1.0) * (t - 1.0)
            if p > 0.0:
                q = -q
            else:
                p = -p
            if p < 0.75 * cb * q - abs(tol_act * q) / 2.0 and p < abs(prev * q / 2.0):
                step = p / q
        if abs(step) < tol_act:
            step = tol_act if step > 0.0 else -tol_act
        a, fa = b, fb
        b = b + step
        fb = float(f(b))
        if (fb > 0.0 and fc > 0.0) or (fb < 0.0 and fc < 0.0):
            c, fc = a, fa
    if warn:
        warnings.warn(f"uniroot: _NOT_ converged in {int(maxiter)} iterations (as R warns)",
                      MetaAllianceWarning, stacklevel=2)
    return Root(b, int(maxiter), False)


def uniroot(f: Callable[[np.ndarray, np.ndarray], np.ndarray], lower, upper, f_lower=None,
            f_upper=None, tol: float = DEFAULT_TOL, maxiter: int = DEFAULT_MAXITER) -> Root:
    """``uniroot1`` for n functions at once (column j searches [lower[j], upper[j]]).

    ``f(x, idx)`` returns the values of the functions ``idx`` (int array) at the points ``x``
    (same length). Columns stop independently; each follows exactly the path ``uniroot1``
    (and R) would take for it. No warning is issued for columns that reach ``maxiter``
    (``converged`` is False there); callers decide.
    """
    lower = np.atleast_1d(np.asarray(lower, dtype=float)).copy()
    upper = np.atleast_1d(np.asarray(upper, dtype=float)).copy()
    n = max(lower.size, upper.size)
    lower = np.broadcast_to(lower, (n,)).copy()
    upper = np.broadcast_to(upper, (n,)).copy()
    idx_all = np.arange(n)
    fa = f(lower, idx_all) if f_lower is None else np.broadcast_to(
        np.asarray(f_lower, dtype=float), (n,)).copy()
    fb = f(upper, idx_all) if f_upper is None else np.broadcast_to(
        np.asarray(f_upper, dtype=float), (n,)).copy()
    _check_ends(lower, upper, fa, fb)
    root = upper.copy()
    iters = np.zeros(n, dtype=int)
    conv = np.zeros(n, dtype=bool)
    end_a = fa == 0.0
    end_b = ~end_a & (fb == 0.0)
    root[end_a] = lower[end_a]
    conv[end_a | end_b] = True
    act = np.flatnonzero(~(end_a | end_b))
    a, b = lower[act], upper[act]
    fa, fb = fa[act], fb[act]
    c, fc = a.copy(), fa.copy()
    half_tol = tol / 2.0
    for used in range(int(maxiter) + 1):
        if act.size == 0:
            break
        prev = b - a
        swap = np.abs(fc) < np.abs(fb)
        if np.any(swap):
            a, b, c = np.where(swap, b, a), np.where(swap, c, b), np.where(swap, b, c)
            fa, fb, fc = np.where(swap, fb, fa), np.where(swap, fc, fb), np.where(swap, fb, fc)
        tol_act = 2.0 * EPS * np.abs(b) + half_tol
        step = (c - b) / 2.0
        done = (np.abs(step) <= tol_act) | (fb == 0.0)
        if np.any(done):
            root[act[done]] = b[done]
            iters[act[done]] = used
            conv[act[done]] = True
            keep = ~done
            act = act[keep]
            a, b, c, fa, fb, fc = a[keep], b[keep], c[keep], fa[keep], fb[keep], fc[keep]
            prev, tol_act, step = prev[keep], tol_act[keep], step[keep]
            if act.size == 0:
                break
        interp = (np.abs(prev) >= tol_act) & (np.abs(fa) > np.abs(fb))
        if np.any(interp):
            cb = c - b
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                secant = a == c
                s1 = fb / fa
                r = fa / fc
                s = fb / fc
                t = fb / fa
                p = np.where(secant, cb * s1, t * (cb * r * (r - s) - (b - a) * (s - 1.0)))
                q = np.where(secant, 1.0 - s1, (r - 1.0) * (s - 1.0) * (t - 1.0))
                pos = p > 0.0
                q = np.where(pos, -q, q)
                p = np.where(pos, p, -p)
                take = (interp & (p < 0.75 * cb * q - np.abs(tol_act * q) / 2.0)
                        & (p < np.abs(prev * q / 2.0)))
                step = np.where(take, p / q, step)
        small = np.abs(step) < tol_act
        step = np.where(small, np.where(step > 0.0, tol_act, -tol_act), step)
        a, fa = b, fb
        b = b + step
        fb = np.asarray(f(b, act), dtype=float)
        same = ((fb > 0.0) & (fc > 0.0)) | ((fb < 0.0) & (fc < 0.0))
        c = np.where(same, a, c)
        fc = np.where(same, fa, fc)
    if act.size:
        root[act] = b
        iters[act] = int(maxiter)
    return Root(root, iters, conv)
