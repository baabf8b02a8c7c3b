"""The CHE working model (metaalliance.engine.che) and RVE (metaalliance.engine.rve) against R.

Every number comes from tests/reference/che_rve.json, written by tests/reference/che_rve.R
(R, metafor, clubSandwich and robumeta versions recorded in the JSON). No R needed here.

- test_che_*   V <- vcalc(vi, cluster, obs, rho); rma.mv(yi, V, random = ~ 1 | cluster/obs)
               (REML, tight control); robust(res, cluster, clubSandwich = TRUE) (CR2,
               Satterthwaite df); clubSandwich::Wald_test(res, constrain_zero(2:p), "CR2", "HTZ")
- test_rve_*   robumeta::robu(yi ~ ..., modelweights = "CORR" | "HIER", rho, small) and
               sensitivity() (robu at rho = 0, .2, ..., 1)
"""

import json
from pathlib import Path

import numpy as np
import pytest

from metaalliance.engine.che import che
from metaalliance.engine.rve import robu, robu_sensitivity
from metaalliance.errors import DataError, ModelError

REF = json.loads((Path(__file__).parent / "reference" / "che_rve.json").read_text())
#: the project's tolerance: the REML optimum is sharp and R ran with tight control, the robust
#: quantities are closed forms given it
RTOL = 1e-6


def vec(x):
    return np.atleast_1d(np.asarray(x, dtype=float))


def design(c):
    X = np.asarray(c["X"], dtype=float)
    return X[:, None] if X.ndim == 1 else X


def close(actual, expected, rtol=RTOL):
    np.testing.assert_allclose(vec(actual), vec(expected), rtol=rtol, atol=0)


def test_versions_recorded():
    assert REF["R_version"].startswith("R version")
    assert REF["metafor"] and REF["clubSandwich"] and REF["robumeta"]


@pytest.mark.parametrize("c", REF["che"], ids=[c["name"] for c in REF["che"]])
def test_che_matches_metafor_clubsandwich(c):
    r = che(c["yi"], c["vi"], c["cluster"], rho=c["rho"], X=design(c),
)
    close([x.estimate for x in r.coefficients], c["beta"])
    close(r.sigma2, c["sigma2"])
    close(r.se_model, c["se_model"])
    close(r.loglik, c["loglik"])
    rb = c["robust"]
    close([x.se for x in r.coefficients], rb["se"])
    close(r.dfs, rb["df"])
    close([x.pvalue for x in r.coefficients], rb["pval"])
    close([x.ci_lower for x in r.coefficients], rb["ci_lb"])
    close([x.ci_upper for x in r.coefficients], rb["ci_ub"])
    if "htz" in c:
        t, h = r.robust_test, c["htz"]
        close(t.f, h["Fstat"])
        close(t.df_denom, h["df_denom"])
        close(t.p, h["p_val"])
        close(t.q, h["Q"])
        assert t.df_num == h["df_num"]
    else:
        assert r.robust_test is None


def test_che_json_keys():
    c = REF["che"][1]
    d = che(c["yi"], c["vi"], c["cluster"], rho=c["rho"], X=design(c)).to_dict()
    for key in ("estimate", "se", "df", "p", "ci_lower", "ci_upper", "sigma2", "robust_test",
                "coefficients"):
        assert key in d
    assert set(d["robust_test"]) == {"f", "df_num", "df_denom", "p"}


def test_che_rho_zero_is_three_level():
    """With rho = 0 the CHE fit is the three-level model of multilevel.py (same REML)."""
    from metaalliance.engine.multilevel import three_level

    c = REF["che"][0]
    r = che(c["yi"], c["vi"], c["cluster"], rho=0.0)
    t = three_level(c["yi"], c["vi"], c["cluster"], measure="generic")
    close(r.estimate, t.estimate)
    close(r.sigma2, t.sigma2)


def test_che_bad_rho():
    c = REF["che"][0]
    with pytest.raises(DataError, match=r"che: rho must be >= 0 and < 1 \(got 1\)"):
        che(c["yi"], c["vi"], c["cluster"], rho=1.0)


@pytest.mark.parametrize("c", REF["rve"], ids=[c["name"] for c in REF["rve"]])
def test_rve_matches_robumeta(c):
    r = robu(c["yi"], c["vi"], c["cluster"], X=design(c), modelweights=c["modelweights"],
             rho=c["rho"], small=c["small"])
    R = c["result"]
    close([x.estimate for x in r.coefficients], R["b"])
    close([x.se for x in r.coefficients], R["se"])
    close(r.dfs, R["df"])
    close([x.pvalue for x in r.coefficients], R["p"])
    close([x.ci_lower for x in r.coefficients], R["ci_lb"])
    close([x.ci_upper for x in r.coefficients], R["ci_ub"])
    close(r.tau2, R["tau2"])
    if R.get("omega2") is not None:
        close(r.omega2, R["omega2"])
    if "sensitivity" in c:
        sens = robu_sensitivity(c["yi"], c["vi"], c["cluster"], X=design(c))
        assert [s.rho for s in sens] == pytest.approx([0, .2, .4, .6, .8, 1])
        for s, S in zip(sens, c["sensitivity"]):
            close([x.estimate for x in s.coefficients], S["b"])
            close([x.se for x in s.coefficients], S["se"])
            close(s.dfs, S["df"])
            np.testing.assert_allclose(s.tau2, S["tau2"], rtol=RTOL, atol=1e-15)


def test_rve_errors():
    c = REF["rve"][0]
    with pytest.raises(DataError, match="robu: modelweights must be one of CORR, HIER"):
        robu(c["yi"], c["vi"], c["cluster"], modelweights="XYZ")
    with pytest.raises(DataError, match=r"robu: rho must be between 0 and 1 \(got 1.5\)"):
        robu(c["yi"], c["vi"], c["cluster"], rho=1.5)
    with pytest.raises(ModelError, match=r"robu: the number of clusters \(2\)"):
        robu([0.1, 0.2, 0.3], [0.01, 0.02, 0.03], ["a", "a", "b"], X=np.c_[np.ones(3), [1, 2, 4]])


def test_rve_cluster_order_invariant():
    """Shuffling the rows changes nothing (robumeta sorts by study)."""
    c = REF["rve"][1]
    rng = np.random.default_rng(3)
    perm = rng.permutation(len(c["yi"]))
    X = design(c)
    a = robu(c["yi"], c["vi"], c["cluster"], X=X)
    b = robu(vec(c["yi"])[perm], vec(c["vi"])[perm], np.asarray(c["cluster"])[perm], X=X[perm])
    close([x.estimate for x in b.coefficients], [x.estimate for x in a.coefficients], 1e-12)
    close(b.dfs, a.dfs, 1e-10)


def test_che_htz_with_a_singular_robust_covariance_warns():
    """SIMULATED data: two moderators each on the single finding of a one-finding cluster.
    Those findings are fitted exactly, the CR2 covariance of the slopes is singular and
    clubSandwich's Wald_test stops (chol fails); we keep the coefficients and warn."""
    from metaalliance.errors import MetaAllianceWarning

    rng = np.random.default_rng(1)
    cl = np.repeat(np.arange(8), [3, 3, 3, 3, 3, 3, 1, 1]).astype(str)
    k = len(cl)
    v = rng.uniform(0.01, 0.05, k)
    y = rng.normal(0.3, 0.2, k)
    X = np.c_[np.ones(k), np.arange(k) == k - 2, np.arange(k) == k - 1].astype(float)
    with pytest.warns(MetaAllianceWarning, match="che: the cluster-robust covariance of the "
                                                 "moderators is singular"):
        r = che(y, v, cl, X=X)
    assert r.robust_test is None and "robust_test" not in r.to_dict()
