"""Permutation-based confidence intervals of meta-regression coefficients, as metafor's
``permutest(x, exact, iter, permci = TRUE)`` (``permutest.rma.uni`` and ``.permci`` in
metafor 3.8-1).

A bound of coefficient j is the value ``val`` at which the permutation test of
``H0: beta_j = val`` is just significant: the model is refitted to ``yi - val * X[, j]`` (same
moderators, method, test and control), the permutation test is run on that fit, and

    f(val) = p(val) - alpha / 2        (times 10 where negative, as metafor)

is solved with R's ``uniroot`` (``engine/uniroot.py``, step for step) on
``[ci.lb - distfac (b - ci.lb), b]`` for the lower bound and ``[b, ci.ub + distfac (ci.ub - b)]``
for the upper, where ``ci.lb``/``ci.ub`` are the model's Wald (or Knapp-Hartung) bounds. With
metafor's default ``cialt = "one.sided"`` p(val) is the one-sided permutation p-value of the z
(or t) value: ``greater`` for the lower bound (share of permutations with
``z_perm >= z_obs - comptol``), ``less`` for the upper; with ``cialt = "two.sided"`` it is the
two-sided p and the target is ``alpha``.

Defaults are permutest()'s control: ``tol = eps^0.25``, ``maxiter = 100``, ``distfac = 1``,
``extendInt = "no"`` (a bound whose start interval does not bracket the root is not found:
metafor's ``NA``, here ``None`` with a warning; ``extend=True`` is metafor's
``control = list(extendInt = "yes")``, which extends with ``upX``/``downX``).

When the number of permutations is too small for the level (``1 / iter > alpha`` one-sided,
``> alpha / 2`` two-sided, metafor's test) no interval is computed, with metafor's warning.

Exact tests (every sign flip or distinct arrangement) reproduce metafor's numbers. With random
permutations every refit is tested against the *same* permutations (one seed for the whole
search; metafor draws new ones for each refit from R's RNG), so p(val) is a step function of
val, the search is reproducible for a given seed and the interval inverts one fixed test.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from metaalliance.engine import inference as inf
from metaalliance.engine.permutation import (COMPTOL, _batch_stats, permutation_count,
                                             permutation_test)
from metaalliance.engine.uniroot import DEFAULT_TOL, uniroot1
from metaalliance.errors import MetaAllianceWarning, ModelError, OptionError
from metaalliance.options import DEFAULT_CONTROL

__all__ = ["CIALTS", "PERMCI_MAXITER", "PermutationCI", "permutation_ci"]

#: permutest()'s control$maxiter for the uniroot searches of permci
PERMCI_MAXITER = 100
#: permutest()'s control$cialt: one-sided tests at alpha/2 each side (default) or two-sided
CIALTS = ("one.sided", "two.sided")


class PermutationCI(NamedTuple):
    lower: tuple          # per coefficient: float, or None (not requested / not found)
    upper: tuple
    iterations: int       # permutations per test (incl. the observed data)
    exact: bool
    tests: int            # permutation tests run by the searches
    too_few: bool         # too few permutations for the level: no interval (metafor's warning)
    path: tuple           # (coefficient index, "lower"|"upper", val, f(val)) per evaluation


class _RefitFailed(Exception):
    """The refit to yi - val * X[, j] failed (metafor's .permci stops: the bound is NA)."""


def permutation_ci(y, v, X, beta, ci_lower, ci_upper, method="REML", test="z", level=95,
                   iterations=1000, seed=None, exact=False, control=DEFAULT_CONTROL, coefs=None,
                   cialt="one.sided", distfac=1.0, tol=DEFAULT_TOL, maxiter=PERMCI_MAXITER,
                   extend=False, progress=None) -> PermutationCI:
    """Permutation-based CIs of the coefficients ``coefs`` (0-based indices; default all) of
    the model ``rma(y, v, mods = X, intercept = FALSE, method, test)`` whose estimates and
    Wald/KnHa bounds are ``beta``, ``ci_lower``, ``ci_upper``: metafor's
    ``permutest(res, exact, iter = iterations, permci = TRUE)`` (module docstring).

    ``progress(done, total)`` is called after each bound's search (2 per coefficient).
    """
    y = np.asarray(y, dtype=float)
    v = np.asarray(v, dtype=float)
    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    beta, ci_lower, ci_upper = (np.asarray(a, dtype=float) for a in (beta, ci_lower, ci_upper))
    if cialt not in CIALTS:
        raise OptionError(f"cialt: {cialt!r} must be one of {', '.join(CIALTS)}")
    if not (np.isfinite(distfac) and distfac > 0):
        raise OptionError(f"distfac: must be a positive number (got {distfac!r})")
    lv, alpha = inf.level_alpha(level)
    p = X.shape[1]
    coefs = list(range(p)) if coefs is None else [int(j) for j in coefs]
    if any(j < 0 or j >= p for j in coefs):
        raise OptionError(f"permci: coefficient index out of range 0 .. {p - 1}")
    n, use_exact = permutation_count(X, iterations, exact)
    lower, upper = [None] * p, [None] * p
    if 1.0 / n > alpha / (1.0 if cialt == "one.sided" else 2.0):
        warnings.warn(f"cannot obtain a {lv:g}% permutation-based CI: the number of "
                      f"permutations ({n}) is too low (needs 1/permutations <= "
                      f"{alpha / (1.0 if cialt == 'one.sided' else 2.0):g}, as metafor)",
                      MetaAllianceWarning, stacklevel=2)
        return PermutationCI(tuple(lower), tuple(upper), n, use_exact, 0, True, ())
    if not use_exact and seed is None:
        # one seed for the whole search: every refit meets the same permutations
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    btt = inf.qm_coefficients(X)
    path = []
    count = [0]
    target = alpha / 2.0 if cialt == "one.sided" else alpha

    def pval(val, j, alternative):
        y2 = y - val * X[:, j]
        with np.errstate(all="ignore"):
            z, qm, ok = _batch_stats(y2[:, None], v[:, None], X, method, test, btt, control)
        if not ok[0] or not np.all(np.isfinite(z[0])):
            raise _RefitFailed
        with np.errstate(all="ignore"):
            res = permutation_test(y2, v, X, method, test, btt, z[0], float(qm[0]), n, seed,
                                   use_exact, None, control)
        count[0] += 1
        s = res.stat[:, j]
        s = s[~np.isnan(s)]
        zo = z[0, j]
        if alternative == "greater":
            hit = s >= zo - COMPTOL
        elif alternative == "less":
            hit = s <= zo + COMPTOL
        else:
            hit = np.abs(s) >= abs(zo) - COMPTOL
        return min(1.0, float(hit.sum()) / s.size)

    def search(j, side):
        if cialt == "two.sided":
            alternative = "two.sided"
        else:
            alternative = "greater" if side == "lower" else "less"

        def f(val):
            d = pval(val, j, alternative) - target
            d = d * 10.0 if d < 0 else d
            path.append((j, side, float(val), float(d)))
            return d

        b, lo, hi = float(beta[j]), float(ci_lower[j]), float(ci_upper[j])
        if side == "lower":
            a, c, ext = lo - distfac * (b - lo), b, "upX"
        else:
            a, c, ext = b, hi + distfac * (hi - b), "downX"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MetaAllianceWarning)
                r = uniroot1(f, a, c, tol=tol, maxiter=maxiter, warn=False,
                             extend_int=ext if extend else "no")
        except _RefitFailed:
            return None, ("the model could not be refitted at a trial value (where metafor's "
                          "default control fails, control 'optimum' refits at the optimum)")
        except ModelError as exc:
            msg = str(exc).removeprefix("uniroot: ")
            return None, (f"the search found no bracket ({msg}): with this number of "
                          f"permutations the test may not reach p = {target:g} on that side; "
                          "try more permutations or extend=True")
        if not r.converged:
            warnings.warn(f"permutation CI: the search for the {side} bound of coefficient "
                          f"{j + 1} did not converge in {maxiter} iterations (as R warns); "
                          "its last value is used", MetaAllianceWarning, stacklevel=3)
        return float(r.root), None

    done = 0
    for j in coefs:
        for side, store in (("lower", lower), ("upper", upper)):
            store[j], why = search(j, side)
            if why is not None:
                warnings.warn(f"permutation CI: no {side} bound for coefficient {j + 1} "
                              f"(metafor's NA): {why}", MetaAllianceWarning, stacklevel=2)
            done += 1
            if progress is not None:
                progress(done, 2 * len(coefs))
    return PermutationCI(tuple(lower), tuple(upper), n, use_exact, count[0], False, tuple(path))
