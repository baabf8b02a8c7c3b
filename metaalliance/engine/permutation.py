"""The permutation test of meta-regression coefficients, as metafor's ``permutest.rma.uni``
(split out of engine/models.py, which re-exports every name here)."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from metaalliance.engine import estimators as est
from metaalliance.engine import inference as inf
from metaalliance.errors import ModelError
from metaalliance.options import DEFAULT_CONTROL

__all__ = ["COMPTOL", "PERM_CHUNK", "PermutationResult", "permutation_count",
           "permutation_test"]

#: metafor permutest's comptol (.Machine$double.eps^0.5): ties in permutation statistics
COMPTOL = float(np.finfo(float).eps ** 0.5)
#: permutation columns fitted per vectorised batch: bounds memory, keeps a batch's arrays in
#: cache (256 x k = 300 runs faster than 2048) and sets the steps of the progress bar
PERM_CHUNK = 256


class PermutationResult(NamedTuple):
    pvalues: np.ndarray      # (p,) per coefficient
    qm_pvalue: float
    iterations: int          # permutations used (incl. the observed one)
    exact: bool
    stat: np.ndarray         # (iterations, p) permuted z/t values (NaN: fit failed, skipped)
    qm: np.ndarray           # (iterations,) permuted QM

    @property
    def failed(self) -> int:
        """Permutations whose refit failed (skipped; metafor's NA in QM.perm)."""
        return int(np.isnan(self.qm).sum())


def _multiset_permutations(types):
    """All distinct arrangements of the multiset ``types`` (list of ints), lexicographic."""
    values, counts = np.unique(types, return_counts=True)
    counts = list(counts)
    n = len(types)
    out = []
    cur = [0] * n

    def rec(pos):
        if pos == n:
            out.append(cur.copy())
            return
        for i, c in enumerate(counts):
            if c:
                counts[i] -= 1
                cur[pos] = values[i]
                rec(pos + 1)
                counts[i] += 1

    rec(0)
    return np.array(out, dtype=int)


def _exact_count(types) -> float:
    _, counts = np.unique(types, return_counts=True)
    lg = math.lgamma(len(types) + 1) - sum(math.lgamma(c + 1) for c in counts)
    return math.exp(lg) if lg < 700.0 else math.inf    # k! / prod(c!) overflows a float


def _batch_stats(Y, V, X, method, test, btt, control=DEFAULT_CONTROL):
    """z/t values (B,p), QM (B,) and usability (B,) of the model fitted to each column.

    Unusable: tau^2 fell back to DL, or (control "metafor") metafor's own algorithm fails on
    the column: metafor's permutest() skips refits that stop with an error."""
    k, p = X.shape
    M = np.ones_like(Y)
    int_only = est.is_intercept_only(X)
    tfit = est._tau2_fit(Y, V, X, M, method, control)
    w = M / (V + tfit.tau2)
    f = est.wls(X, w, Y, int_only)
    vb = f.A.copy()
    ok = tfit.converged.copy()
    if control == "metafor":
        ok &= ~tfit.safeguarded
    if test == "knha":
        s2w = inf.knha_scale(Y, V, M, X, tfit.tau2, int_only)
        ok &= s2w > 0
        vb = vb * np.where(s2w > 0, s2w, 1.0)[:, None, None]
    se = np.sqrt(np.einsum("bii->bi", vb))
    z = f.beta / se
    bb = f.beta[:, btt]
    sub = vb[:, btt][:, :, btt]
    qm = np.einsum("bi,bi->b", bb, np.linalg.solve(sub, bb[:, :, None])[:, :, 0])
    if test == "knha":
        qm = qm / len(btt)
    return z, qm, ok


def permutation_count(X, iterations, exact=False):
    """(n, exact): the number of permutations ``permutest()`` runs and whether the test is
    exact: all 2^k sign flips (intercept-only) or k! / prod(c!) distinct row arrangements when
    ``exact`` or when that number is <= ``iterations``; else ``iterations``. ModelError when an
    exact test would need more than 1e6 fits."""
    k = X.shape[0]
    if est.is_intercept_only(X):
        n_exact = 2.0 ** k
    else:
        _, types = np.unique(X, axis=0, return_inverse=True)
        n_exact = _exact_count(np.asarray(types).ravel())
        if n_exact < 2.0 ** 53:
            n_exact = float(round(n_exact))       # metafor rounds its count too
    use_exact = bool(exact) or n_exact <= int(iterations)
    if use_exact and n_exact > 1e6:
        raise ModelError(f"an exact permutation test needs {n_exact:.3g} fits; too many")
    return (int(n_exact) if use_exact else int(iterations)), use_exact


def permutation_test(y, v, X, method, test, btt, stat_obs, qm_obs, iterations=1000, seed=None,
                     exact=False, progress=None, control=DEFAULT_CONTROL) -> PermutationResult:
    """Permutation p-values of every coefficient's z/t and of QM, as ``permutest.rma.uni``.

    Intercept-only models flip signs of yi; models with moderators permute the rows of X.
    The test is exact (every distinct permutation once, in which case ``seed`` is irrelevant)
    when ``exact`` or when the number of distinct permutations is <= ``iterations``; otherwise
    the observed data plus ``iterations - 1`` random permutations from
    ``numpy.random.default_rng(seed)``. p = share of permutations with |stat| >= |observed|
    - COMPTOL (QM >= observed - COMPTOL), over fits that succeeded — metafor's definition, in
    which the observed data are one of the permutations, so p >= 1/iterations.
    (metafor draws with R's RNG, so random permutation p-values agree only in distribution.)

    All permutations are fitted as columns of vectorised batches of ``PERM_CHUNK``
    (``estimators`` with the design's cross products as BLAS products); ``progress(done,
    total)`` is called after each batch. Every permutation is fitted with ``control``, as
    permutest() refits with the model's control (under "metafor", sign flips change mad(yi)
    and so PM's search interval, as in metafor).
    """
    from metaalliance.errors import OptionError

    iterations = int(iterations)
    if iterations < 2:
        raise OptionError("permutations: must be >= 2")
    k, p = X.shape
    int_only = est.is_intercept_only(X)
    n_total, use_exact = permutation_count(X, iterations, exact)
    if not int_only:
        _, types = np.unique(X, axis=0, return_inverse=True)
        types = np.asarray(types).ravel()
    rng = np.random.default_rng(seed)
    if int_only:
        if use_exact:
            n = n_total

            def signs(start, stop):      # every sign vector once: the bits of 0 .. 2^k - 1
                i = np.arange(start, stop)
                return 1.0 - 2.0 * ((i[None, :] >> np.arange(k)[:, None]) & 1)
        else:
            n = iterations
            S = rng.choice(np.array([-1.0, 1.0]), size=(k, iterations))
            S[:, 0] = 1.0

            def signs(start, stop):
                return S[:, start:stop]
        cols = ((y[:, None] * signs(i, min(n, i + PERM_CHUNK)),
                 np.repeat(v[:, None], min(n, i + PERM_CHUNK) - i, axis=1))
                for i in range(0, n, PERM_CHUNK))
    else:
        if use_exact:
            arr = _multiset_permutations(types)           # (n, k): type at each position
            # attach (y, v) at position i to an X row of type arr[i] (rows of a type are
            # interchangeable, so fitting with X fixed gives metafor's X[perm, ] fit)
            order = np.argsort(types, kind="stable")      # X rows grouped by type
            idx = np.empty_like(arr)
            for r_, a in enumerate(arr):
                pos = np.argsort(a, kind="stable")        # positions grouped by type
                idx[r_, order] = pos
            n = idx.shape[0]

            def chunk(start, stop):
                return idx[start:stop]
        else:
            n = iterations

            def chunk(start, stop):
                # drawn batch by batch (memory O(PERM_CHUNK k)), in the order of one loop
                # over r = 1 .. n - 1, so the permutations depend on the seed only
                out = np.empty((stop - start, k), dtype=int)
                for j, r_ in enumerate(range(start, stop)):
                    if r_ == 0:
                        out[j] = np.arange(k)
                        continue
                    s_ = rng.permutation(k)               # X_perm[i] = X[s_[i]]
                    out[j, s_] = np.arange(k)             # X row j gets (y, v)[inv[j]]
                return out
        cols = ((y[ix].T, v[ix].T) for ix in (chunk(i, min(n, i + PERM_CHUNK))
                                             for i in range(0, n, PERM_CHUNK)))
    zs, qms, oks = [], [], []
    done = 0
    for Yb, Vb in cols:
        with est.single_threaded_blas():
            z, qm, ok = _batch_stats(np.ascontiguousarray(Yb), np.ascontiguousarray(Vb), X,
                                     method, test, btt, control)
        zs.append(z)
        qms.append(qm)
        oks.append(ok)
        done += z.shape[0]
        if progress is not None:
            progress(done, int(n))
    z = np.vstack(zs)
    qm = np.concatenate(qms)
    ok = np.concatenate(oks)
    if not use_exact:
        z[0] = stat_obs
        qm[0] = qm_obs
        ok[0] = True
    z = np.where(ok[:, None], z, np.nan)
    qm = np.where(ok, qm, np.nan)
    good = ok.sum()
    pvals = np.minimum(1.0, (np.abs(z[ok]) >= np.abs(stat_obs) - COMPTOL).sum(axis=0) / good)
    qm_p = float((qm[ok] >= qm_obs - COMPTOL).sum() / good)
    return PermutationResult(pvals, qm_p, int(n), use_exact, z, qm)
