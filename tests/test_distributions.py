"""engine/distributions (scipy.special) gives scipy.stats' numbers: the start-up change must not
move a single p-value or critical value (1e-12 relative; through scipy.special they are
identical, through the closed forms of a single fit within 1e-13, tested below)."""

import numpy as np
import pytest
from scipy import stats as sst

from metaalliance.engine import distributions as d

X = np.array([-40.0, -6.5, -1.96, -0.3, 0.0, 0.01, 0.7, 1.644853627, 3.2, 9.0, 37.5])
XPOS = np.abs(X)
Q = np.array([1e-300, 1e-12, 1e-5, 0.001, 0.025, 0.05, 0.3, 0.5, 0.8, 0.975, 0.999999])
DFS = [0.5, 1, 2, 3.7, 10, 45, 299, 1e6]


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)


def test_normal():
    close(d.norm.cdf(X), sst.norm.cdf(X))
    close(d.norm.sf(X), sst.norm.sf(X))
    close(d.norm.ppf(Q), sst.norm.ppf(Q))
    close(d.norm.isf(Q), sst.norm.isf(Q))


@pytest.mark.parametrize("df", DFS)
def test_t_chi2(df):
    close(d.t.cdf(X, df), sst.t.cdf(X, df))
    close(d.t.sf(X, df), sst.t.sf(X, df))
    close(d.t.ppf(Q[1:], df), sst.t.ppf(Q[1:], df))
    close(d.t.isf(Q[1:], df), sst.t.isf(Q[1:], df))
    close(d.chi2.cdf(XPOS, df), sst.chi2.cdf(XPOS, df))
    close(d.chi2.sf(XPOS, df), sst.chi2.sf(XPOS, df))
    close(d.chi2.ppf(Q, df), sst.chi2.ppf(Q, df))
    close(d.chi2.isf(Q, df), sst.chi2.isf(Q, df))


@pytest.mark.parametrize("dfn,dfd", [(1, 1), (1, 5), (3, 20), (7, 298), (40, 2.5)])
def test_f(dfn, dfd):
    close(d.f.cdf(XPOS, dfn, dfd), sst.f.cdf(XPOS, dfn, dfd))
    close(d.f.sf(XPOS, dfn, dfd), sst.f.sf(XPOS, dfn, dfd))
    close(d.f.ppf(Q[1:], dfn, dfd), sst.f.ppf(Q[1:], dfn, dfd))


def test_engine_never_imports_scipy_stats():
    """A fresh interpreter running pool and sensitivity code paths loads no scipy.stats."""
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from metaalliance.engine import models\n"
            "from metaalliance.analyses import sensitivity, bias\n"
            "y = np.array([.1, .3, .2, .4, .25, .05]); v = np.array([.01, .02, .015, .03, .01, .02])\n"
            "fit = models.random_effects(y, v)\n"
            "sensitivity.leave_one_out(fit); sensitivity.influence(fit)\n"
            "bias.egger_test(fit); bias.trim_and_fill(fit); fit.to_dict(); fit.to_frame()\n"
            "print(sorted(m for m in sys.modules if m.startswith(('scipy.stats', 'matplotlib'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- the closed forms a single fit uses (engine/closed_forms.py): scipy.special's numbers to
# 1e-13 relative, so that `metaalliance pool` need not import scipy ---------------------------

import math  # noqa: E402

import scipy.special as sp  # noqa: E402

from metaalliance.engine import closed_forms as cf  # noqa: E402

EPS = np.finfo(float).eps


def _rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(a == b, 0.0, np.abs(a - b) / np.abs(b))


def test_closed_form_normal_against_scipy_special():
    x = np.concatenate([np.linspace(-15, 15, 3001), np.logspace(-300, 1, 300),
                        -np.logspace(-300, 1, 300), [0.0, -0.0]])
    got = np.array([cf.ndtr(v) for v in x])
    assert _rel(got, sp.ndtr(x)).max() < 1e-13
    # far tail: erfc(z) moves by ~2 z^2 eps when z = x/sqrt(2) is rounded (cephes too)
    far = np.linspace(-37.5, -15, 500)
    got = np.array([cf.ndtr(v) for v in far])
    assert (_rel(got, sp.ndtr(far)) < 4 * far ** 2 * EPS).all()
    assert cf.ndtr(math.inf) == 1.0 and cf.ndtr(-math.inf) == 0.0 and math.isnan(cf.ndtr(math.nan))
    p = np.concatenate([np.logspace(-300, -1, 600), np.linspace(0.01, 0.99, 99),
                        1 - np.logspace(-16, -1, 100)])
    got = np.array([cf.ndtri(v) for v in p])
    assert _rel(got, sp.ndtri(p)).max() < 1e-13
    assert cf.ndtri(0.0) == -math.inf and cf.ndtri(1.0) == math.inf
    assert math.isnan(cf.ndtri(1.5)) and math.isnan(cf.ndtri(-0.1))


CHI2_DFS = list(range(1, 41)) + [45, 63, 64, 99, 100, 101, 150, 199, 200]


@pytest.mark.parametrize("df", CHI2_DFS)
def test_closed_form_chi2_against_scipy_special(df):
    x = np.unique(np.concatenate([[0.0, 1e-300, 1e-10, 1e-3, 0.5], np.linspace(0, 100, 401),
                                  df * np.array([.1, .3, .5, .8, .95, 1, 1.05, 1.2, 1.5, 2, 3])]))
    x = x[x <= 100]
    sf = np.array([cf.chi2_sf(v, df) for v in x])
    cdf = np.array([cf.chi2_cdf(v, df) for v in x])
    ref_sf, ref_cdf = sp.chdtrc(df, x), sp.chdtr(df, x)
    keep_sf, keep_cdf = ref_sf > 1e-300, ref_cdf > 1e-300
    assert _rel(sf[keep_sf], ref_sf[keep_sf]).max() < 1e-13
    assert _rel(cdf[keep_cdf], ref_cdf[keep_cdf]).max() < 1e-13
    # beyond x = 100: exp(-x/2) moves by ~x/2 eps when x is rounded, here and in cephes, so
    # the two may differ by ~x eps (both are that close to 40-digit mpmath: checked once)
    far = np.linspace(100, 1400, 131)
    got = np.array([cf.chi2_sf(v, df) for v in far])
    ref = sp.chdtrc(df, far)
    ok = ref > 1e-300
    assert (_rel(got[ok], ref[ok]) < 2 * far[ok] * EPS).all()
    p = np.array([1e-250, 1e-100, 1e-20, 1e-10, 1e-5, 5e-4, 0.005, 0.025, 0.05, 0.1, 0.25, 0.5])
    for q in p:
        lo, up = cf.chi2_ppf(q, df), cf.chi2_isf(q, df)
        if lo is not None:           # None: handed to scipy.special (see below)
            assert _rel(lo, 2 * sp.gammaincinv(df / 2, q)) < 1e-13, q
        if up is not None:
            assert _rel(up, sp.chdtri(df, q)) < 1e-13, q
    for q in (0.005, 0.025, 0.05, 0.5):          # what a fit asks for: never handed on
        assert cf.chi2_ppf(q, df) is not None and cf.chi2_isf(q, df) is not None


def test_closed_form_chi2_edges_and_fallbacks():
    assert cf.chi2_sf(0.0, 5) == 1.0 and cf.chi2_cdf(0.0, 5) == 0.0
    assert cf.chi2_sf(math.inf, 5) == 0.0 and cf.chi2_cdf(math.inf, 5) == 1.0
    assert cf.chi2_ppf(0.0, 4) == 0.0 and cf.chi2_isf(0.0, 4) == math.inf
    assert cf.chi2_isf(1.0, 4) == 0.0 and cf.chi2_ppf(1.0, 4) == math.inf
    # outside the exact range: None, and distributions hands the value to scipy.special
    for x, df in [(3.0, 2.5), (3.0, 201), (3.0, 1e6), (-1.0, 3), (math.nan, 3), (1500.0, 3),
                  (3.0, 0), (3.0, math.nan)]:
        assert cf.chi2_sf(x, df) is None
        np.testing.assert_array_equal(d.chi2_sf(x, df), sp.chdtrc(df, x))
    for q, df in [(0.7, 3), (1e-300, 3), (0.025, 2.5), (0.025, 500)]:
        assert cf.chi2_isf(q, df) is None
        np.testing.assert_array_equal(d.chi2_isf(q, df), sp.chdtri(df, q))


def test_small_inputs_use_closed_forms_large_ones_scipy_special():
    """Scalars and arrays of at most SMALL values: closed forms (same shape and type as
    scipy.special returns); larger arrays: the scipy.special ufunc itself."""
    x = np.linspace(0.5, 60, d.SMALL)
    assert isinstance(d.norm_sf(1.3), np.floating) and np.ndim(d.norm_isf(0.025)) == 0
    assert d.norm_isf(0.025) == -cf.ndtri(0.025)          # AS241 (R's qnorm)
    np.testing.assert_array_equal(d.chi2_sf(x, 18), [cf.chi2_sf(v, 18) for v in x])
    np.testing.assert_array_equal(d.chi2_sf(x[:, None], np.array([[3, 18]])).shape, (d.SMALL, 2))
    big = np.linspace(0.5, 60, d.SMALL + 1)
    np.testing.assert_array_equal(d.chi2_sf(big, 18), sp.chdtrc(18, big))
    np.testing.assert_array_equal(d.norm_sf(big), sp.ndtr(-big))
    assert _rel(d.chi2_sf(x, 18), sp.chdtrc(18, x)).max() < 1e-13
    q = d.chi2_isf(0.025, np.array([18.0]))
    assert q.shape == (1,) and _rel(q, sp.chdtri(18, 0.025)).max() < 1e-13


def test_pool_default_fit_equals_r_qnorm_pchisq():
    """The closed forms give R's own numbers on the default fit of the curated data
    (R 4.2.2: qnorm(0.025), pchisq(28.168933630237756, 18, lower.tail = FALSE))."""
    assert cf.ndtri(0.025) == -1.9599639845400538
    assert cf.chi2_sf(28.168933630237756, 18) == 0.059530498815022412
    assert _rel(cf.chi2_ppf(0.025, 18), 8.230746194756664) < 1e-15      # qchisq(0.025, 18)
    assert _rel(cf.chi2_isf(0.025, 18), 31.526378440386633) < 1e-15
