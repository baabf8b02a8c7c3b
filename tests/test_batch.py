"""Batch fits equal one-at-a-time fits (issue 6).

The fast paths — ``models.random_effects_batch`` (the ``estimators.Subsets`` kernel for
subsets of one dataset, the column-wise code for distinct columns), ``estimators.tau2_batch``
with a mask, the permutation test, and leave-one-out / influence / cumulative / GOSH in
``sensitivity`` — must give what fitting each model on its own with ``models.random_effects``
/ ``models.meta_regression_matrix`` gives, to 1e-10. Nothing here is timed (benchmarks/ does
that). All data are SIMULATED (seeded).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from metaalliance.engine import estimators as est
from metaalliance.engine import models
from metaalliance.analyses import sensitivity
from metaalliance.options import METHODS

#: batch and single fits run the same algorithms; they may stop one iteration apart where the
#: last step is right at the convergence bound CONV_TOL * (tau2 + vbar) = 1e-12 (tau2 + vbar),
#: so quantities are compared to 1e-10 relative to their size plus that scale
RTOL = 1e-10

FIELDS = ("estimate", "se", "stat", "pvalue", "ci_lower", "ci_upper", "pi_lower", "pi_upper",
          "tau2", "q", "q_pvalue", "i2", "h2")


def simulated(k, seed, tau=0.15):
    """SIMULATED Fisher-z effect sizes and variances (n from 20 to 300)."""
    rng = np.random.default_rng(seed)
    n = rng.integers(20, 300, size=k)
    vi = 1.0 / (n - 3)
    yi = 0.3 + rng.normal(0, tau, size=k) + rng.normal(0, np.sqrt(vi))
    return yi, vi


def close(a, b, scale=0.0, rtol=RTOL):
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    return np.abs(a - b) <= rtol * (np.abs(b) + scale) + 1e-15


def single(yi, vi, method, test):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # k = 1 fits warn as metafor does
        return models.random_effects(yi, vi, method=method, test=test)


def scale_of(name, vbar):
    """The absolute scale a quantity is compared on: tau^2 on tau^2 + vbar (its convergence
    scale), I^2 on 100 (percent; a tau^2 of 1e-16 is an I^2 of ~1e-12), others on themselves."""
    return {"tau2": vbar, "i2": 100.0}.get(name, 1e-12)


def assert_batch_equals_singles(b, fits, vbar, j0=0):
    for j, f in enumerate(fits):
        for name in FIELDS:
            got = float(getattr(b, name)[j0 + j])
            want = float(getattr(f, name))
            assert close(got, want, scale_of(name, vbar)), (name, j0 + j, got, want)
        assert int(b.k[j0 + j]) == f.k


# --------------------------------------------------------------------------------------------
# random_effects_batch


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("test", ["z", "knha"])
def test_leave_one_out_batch_equals_single_fits(method, test):
    yi, vi = simulated(25, 1)
    k = yi.size
    mask = ~np.eye(k, dtype=bool)
    b = models.random_effects_batch(yi, vi, method, test, mask=mask)
    fits = [single(yi[mask[:, j]], vi[mask[:, j]], method, test) for j in range(k)]
    assert_batch_equals_singles(b, fits, vi.mean())


@pytest.mark.parametrize("method", METHODS)
def test_random_subsets_batch_equals_single_fits_including_one_study_subsets(method):
    """Subsets of every size, among them single studies (metafor's k = 1 rule: tau2 = 0,
    estimate = y, the z test under knha)."""
    yi, vi = simulated(15, 2)
    rng = np.random.default_rng(3)
    mask = rng.random((15, 60)) < 0.5
    mask[:, 0] = False
    mask[4, 0] = True                     # one study
    mask[:, 1] = False
    mask[[2, 9], 1] = True                # two studies
    mask[:, 2] = True                     # all
    for test in ("z", "knha"):
        b = models.random_effects_batch(yi, vi, method, test, mask=mask)
        fits = [single(yi[mask[:, j]], vi[mask[:, j]], method, test) for j in range(60)]
        assert_batch_equals_singles(b, fits, vi.mean())
    assert b.estimate[0] == yi[4] and b.tau2[0] == 0.0


@pytest.mark.parametrize("method", METHODS)
def test_distinct_columns_batch_equals_single_fits(method):
    """Columns with their own data (simulations, permutations): the column-wise code."""
    cols = [simulated(20, 10 + s) for s in range(8)]
    Y = np.column_stack([c[0] for c in cols])
    V = np.column_stack([c[1] for c in cols])
    b = models.random_effects_batch(Y, V, method, "z")
    fits = [single(Y[:, j], V[:, j], method, "z") for j in range(Y.shape[1])]
    assert_batch_equals_singles(b, fits, V.mean())


@pytest.mark.parametrize("method", ["DL", "REML", "PM"])
def test_subset_kernel_and_column_code_agree(method):
    """The same subsets through both batch paths (a dense copy of Y takes the column code)."""
    yi, vi = simulated(30, 4)
    mask = np.tri(30, dtype=bool).T                       # cumulative
    fast = models.random_effects_batch(yi, vi, method, mask=mask)
    dense = models.random_effects_batch(np.tile(yi[:, None], (1, 30)), np.tile(vi[:, None],
                                        (1, 30)), method, mask=mask)
    for name in FIELDS:
        assert np.all(close(getattr(fast, name), getattr(dense, name),
                            scale_of(name, vi.mean()))), name


@pytest.mark.parametrize("method", METHODS)
def test_tau2_batch_with_a_mask_equals_single_tau2(method):
    yi, vi = simulated(40, 5)
    mask = np.random.default_rng(6).random((40, 50)) < 0.7
    got = est.tau2_batch(yi, vi, method, mask=mask)
    want = [est.tau2_batch(yi[mask[:, j]], vi[mask[:, j]], method) for j in range(50)]
    assert np.all(close(got, want, vi.mean()))
    fit = est.tau2_fit(yi, vi, method, mask=mask)
    assert np.array_equal(fit.tau2, got) and fit.converged.all()


def test_subsets_of_large_k_in_blocks_equal_single_fits():
    """More subsets than one block of the kernel (blocks must not mix up columns)."""
    yi, vi = simulated(400, 7)
    rng = np.random.default_rng(8)
    mask = rng.random((400, 1500)) < 0.5
    b = models.random_effects_batch(yi, vi, "REML", mask=mask)
    step = est.SUBSET_BLOCK_CELLS_ITERATIVE // 400
    assert 1500 > step                                    # several blocks
    cols = [0, step - 1, step, 2 * step + 3, 1499]
    fits = [single(yi[mask[:, j]], vi[mask[:, j]], "REML", "z") for j in cols]
    for j, f in zip(cols, fits):
        assert close(b.estimate[j], f.estimate) and close(b.tau2[j], f.tau2, vi.mean())


# --------------------------------------------------------------------------------------------
# sensitivity analyses


@pytest.mark.parametrize("method", ["DL", "REML", "ML", "PM", "SJ", "HE"])
@pytest.mark.parametrize("test", ["z", "knha"])
def test_leave_one_out_and_influence_equal_looped_fits(method, test):
    yi, vi = simulated(20, 9)
    fit = single(yi, vi, method, test)
    l1o = sensitivity.leave_one_out(fit)
    inf = sensitivity.influence(fit)
    for i in range(yi.size):
        keep = np.arange(yi.size) != i
        f = single(yi[keep], vi[keep], method, test)
        for name in ("estimate", "se", "stat", "pvalue", "ci_lower", "ci_upper", "q", "tau2",
                     "i2", "h2"):
            assert close(getattr(l1o, name)[i], getattr(f, name), scale_of(name, vi.mean())), \
                (name, i)
        assert close(inf.tau2_del[i], f.tau2, vi.mean()) and close(inf.qe_del[i], f.q)
        # Cook's distance from the deleted fit's estimate and the full fit's variance
        assert close(inf.cook_d[i], (fit.estimate - f.estimate) ** 2 / fit.se ** 2, 1e-12)


def test_cumulative_equals_looped_fits():
    yi, vi = simulated(18, 11)
    fit = single(yi, vi, "REML", "knha")
    order = np.random.default_rng(12).permutation(18)
    cu = sensitivity.cumulative(fit, order=order)
    idx = np.argsort(order, kind="stable")
    for j in range(18):
        sub = idx[:j + 1]
        f = single(yi[sub], vi[sub], "REML", "knha")
        for name in ("estimate", "se", "stat", "pvalue", "tau2", "q", "i2"):
            assert close(getattr(cu, name)[j], getattr(f, name), scale_of(name, vi.mean())), \
                (name, j)


@pytest.mark.parametrize("method", ["DL", "REML", "PM"])
def test_gosh_random_subsets_equal_looped_fits(method):
    yi, vi = simulated(40, 13)
    fit = single(yi, vi, method, "z")
    g = sensitivity.gosh(fit, subsets=400, seed=14)
    assert not g.exact and g.n_subsets == 400
    for j in range(0, 400, 7):
        sub = g.incl[j]
        f = single(yi[sub], vi[sub], method, "z")
        assert g.k[j] == sub.sum() == f.k
        for name in ("estimate", "tau2", "q", "i2"):
            assert close(getattr(g, name)[j], getattr(f, name), scale_of(name, vi.mean())), \
                (name, j)
        if method != "DL":                   # DL: metafor's gosh() takes H^2 from Q
            assert close(g.h2[j], f.h2)


def test_gosh_all_subsets_equal_looped_fits():
    yi, vi = simulated(7, 15)
    fit = single(yi, vi, "REML", "z")
    g = sensitivity.gosh(fit)
    assert g.exact and g.n_subsets == 2 ** 7 - 1
    for j in range(g.n_subsets):
        sub = g.incl[j]
        f = single(yi[sub], vi[sub], "REML", "z")
        assert close(g.estimate[j], f.estimate) and close(g.tau2[j], f.tau2, vi.mean())


# --------------------------------------------------------------------------------------------
# permutation tests


def _design(k, seed):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 3, size=k)
    return np.column_stack([np.ones(k), g == 1, g == 2, rng.normal(size=k)]).astype(float)


@pytest.mark.parametrize("method,test", [("REML", "z"), ("REML", "knha"), ("DL", "z"),
                                         ("PM", "knha"), ("ML", "z")])
def test_random_permutations_equal_looped_meta_regressions(method, test):
    """Every permuted statistic of the batch equals a meta-regression fitted to that
    permutation on its own (the permutations re-drawn from the documented stream: the
    observed data, then rng.permutation(k) for r = 1 .. N - 1)."""
    yi, vi = simulated(30, 16)
    X = _design(30, 17)
    res = models.meta_regression_matrix(yi, vi, X, method=method, test=test, permutations=60,
                                        seed=18)
    r = models.permutation_test(yi, vi, X, method, test, [1, 2, 3],
                                np.array([c.stat for c in res.coefficients]), res.qm, 60, 18)
    assert not r.exact and r.iterations == 60
    rng = np.random.default_rng(18)
    for j in range(1, 60):
        s = rng.permutation(30)
        f = models.meta_regression_matrix(yi, vi, X[s], method=method, test=test)
        assert np.all(close(r.stat[j], [c.stat for c in f.coefficients], 1e-9)), j
        assert close(r.qm[j], f.qm, 1e-9), j
    assert np.array_equal(r.pvalues, [c.perm_pvalue for c in res.coefficients])
    assert r.qm_pvalue == res.perm_qm_pvalue


def test_exact_sign_flips_equal_looped_fits():
    """Intercept-only exact test: all 2^k sign vectors (bit i of the column number flips
    study i), each a random-effects fit of its own."""
    yi, vi = simulated(6, 19)
    fit = single(yi, vi, "REML", "z")
    r = models.permutation_test(yi, vi, np.ones((6, 1)), "REML", "z", [0],
                                np.array([fit.stat]), fit.stat ** 2, 1000, None)
    assert r.exact and r.iterations == 64
    for c in range(64):
        signs = 1.0 - 2.0 * ((c >> np.arange(6)) & 1)
        f = single(yi * signs, vi, "REML", "z")
        assert close(r.stat[c, 0], f.stat, 1e-12), c
