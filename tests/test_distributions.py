"""engine/distributions (scipy.special) gives scipy.stats' numbers: the start-up change must not
move a single p-value or critical value (1e-12 relative; in practice they are identical)."""

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
