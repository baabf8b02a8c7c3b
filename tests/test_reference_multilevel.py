"""metaalliance.engine.multilevel, .cluster_robust and .aggregation against R's metafor and
clubSandwich.

Every number comes from tests/reference/multilevel.json, written by tests/reference/multilevel.R
(R, metafor, metadat and clubSandwich versions are recorded in the JSON; the R call of each case
is in its "call" field). The tests need no R.

- test_three_level_*      rma.mv(yi, vi, random = ~ 1 | cluster/finding, method, test) with
                          predict(), fitstats(), weights(), the metafor FAQ multilevel I^2
- test_robust_*           robust(res, cluster, clubSandwich = TRUE) and robust(res, cluster)
- test_univariate_robust  robust(rma.uni(yi, vi), cluster, clubSandwich = TRUE)
- test_aggregate_*        aggregate(escalc, cluster, struct = "CS", rho), then rma.uni
- test_single_finding     rma.mv with one finding per cluster vs rma.uni (dat.molloy2014)
"""

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from metaalliance.engine import models
from metaalliance.engine import aggregation as ag
from metaalliance.engine import cluster_robust as cr
from metaalliance.engine import multilevel as ml
from metaalliance.errors import MetaAllianceWarning

REF = json.loads((Path(__file__).parent / "reference" / "multilevel.json").read_text())

#: the project's tolerance: 1e-6 relative
RTOL = 1e-6
#: metafor optimises log(sigma2), so a variance component whose REML estimate is 0 comes out as
#: ~1e-11 .. 1e-14 (never exactly 0); we report 0. Such components (and the I^2 shares they
#: carry, in percent) are compared on an absolute scale.
SIGMA2_BOUNDARY_ATOL = 1e-9
I2_BOUNDARY_ATOL = 1e-6

CASES = REF["cases"]


def close(actual, expected, rtol=RTOL, atol=0.0):
    np.testing.assert_allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float),
                               rtol=rtol, atol=atol)


def vec(x):
    return np.atleast_1d(np.asarray(x, dtype=float))


def fit_case(c):
    X = np.asarray(c["X"]) if "X" in c else None
    with warnings.catch_warnings():
        warnings.simplefilter("error", MetaAllianceWarning)
        return ml.three_level(c["yi"], c["vi"], c["cluster"], method=c["method"], test=c["test"],
                              level=c["level"], X=X, coef_names=c.get("coef_names"),
                              measure="generic")


def test_reference_versions_recorded():
    assert REF["R_version"].startswith("R version")
    assert REF["metafor"] and REF["clubSandwich"] and REF["metadat"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_three_level(name):
    """rma.mv(yi, vi, random = ~ 1 | cluster/finding): see CASES[name]["call"]."""
    c = CASES[name]
    fit = fit_case(c)
    assert fit.converged
    assert fit.k == c["k"] and fit.n_clusters == c["n_clusters"]
    coefs = fit.coefficients
    close([b.estimate for b in coefs], vec(c["estimate"]))
    close([b.se for b in coefs], vec(c["se"]))
    close([b.stat for b in coefs], vec(c["stat"]))
    close([b.pvalue for b in coefs], vec(c["pvalue"]))
    close([b.ci_lower for b in coefs], vec(c["ci_lower"]))
    close([b.ci_upper for b in coefs], vec(c["ci_upper"]))
    close(fit.vcov, c["vcov"])
    close([fit.pi_lower, fit.pi_upper], [c["pi_lower"], c["pi_upper"]])
    if c["test"] == "t":
        close(fit.df, vec(c["df"])[0])
    else:
        assert fit.df is None
    close(fit.sigma2, c["sigma2"], atol=SIGMA2_BOUNDARY_ATOL)
    close(fit.loglik, c["loglik"])
    close([fit.aic, fit.bic, fit.aicc], [c["aic"], c["bic"], c["aicc"]])
    close(fit.q, c["q"])
    assert fit.q_df == c["q_df"]
    close(fit.q_pvalue, c["q_pvalue"])
    close(fit.i2, c["i2"])
    close(fit.i2_levels, c["i2_levels"], atol=I2_BOUNDARY_ATOL)
    close(fit.weights, c["weights"])
    if c.get("weights_rowsum") is not None:
        close(fit.weights_rowsum, c["weights_rowsum"])
    if "qm" in c:
        close(fit.qm, c["qm"])
        # metafor's QMdf is c(m, NA) under test = "z" and c(m, k - p) under "t"
        assert list(fit.qm_df) == [int(x) for x in c["qm_df"] if x != "NA"]
        close(fit.qm_pvalue, c["qm_pvalue"])
        assert [b.name for b in coefs] == c["coef_names"]


def test_boundary_cases_are_exactly_zero():
    """SIMULATED data whose REML estimate of one component is 0: we return 0.0 exactly."""
    assert fit_case(CASES["simulated_boundary_within"]).sigma2[1] == 0.0
    assert fit_case(CASES["simulated_boundary_between"]).sigma2[0] == 0.0


def check_robust(rob, ref):
    coefs = rob.coefficients
    close([b.estimate for b in coefs], vec(ref["estimate"]))
    close([b.se for b in coefs], vec(ref["se"]))
    close([b.stat for b in coefs], vec(ref["t"]))
    dfs = vec(ref["df"])      # one value for CR1 (n - p for every coefficient)
    close(rob.dfs, np.full(len(coefs), dfs[0]) if dfs.size == 1 else dfs)
    close([b.pvalue for b in coefs], vec(ref["pvalue"]))
    close([b.ci_lower for b in coefs], vec(ref["ci_lower"]))
    close([b.ci_upper for b in coefs], vec(ref["ci_upper"]))
    close(rob.vcov, ref["vcov"])
    assert rob.n_clusters == ref["n_clusters"]


ROBUST_CASES = sorted(n for n in CASES if "robust_cr2" in CASES[n])


@pytest.mark.parametrize("name", ROBUST_CASES)
def test_robust_clubsandwich(name):
    """robust(res, cluster = cluster, clubSandwich = TRUE): CR2, Satterthwaite df."""
    c = CASES[name]
    rob = cr.robust(fit_case(c))
    assert (rob.vcov_type, rob.df_method) == ("CR2", "Satterthwaite")
    check_robust(rob, c["robust_cr2"])


@pytest.mark.parametrize("name", ROBUST_CASES)
def test_robust_default_cr1(name):
    """robust(res, cluster = cluster): metafor's default CR1 with n - p df."""
    c = CASES[name]
    rob = cr.robust(fit_case(c), clubSandwich=False)
    assert (rob.vcov_type, rob.df_method) == ("CR1", "n - p")
    check_robust(rob, c["robust_cr1"])


@pytest.mark.parametrize("name", sorted(REF["univariate_robust"]))
def test_univariate_robust(name):
    """robust(rma.uni(yi, vi, method = "REML"), cluster, clubSandwich = TRUE), from the data
    and from the engine's models.random_effects result."""
    c = REF["univariate_robust"][name]
    rob = cr.robust((c["yi"], c["vi"]), c["cluster"], model="random_effects")
    check_robust(rob, c["robust_cr2"])
    # multilevel.R fits rma.uni with threshold 1e-12: compare at the optimum
    fit = models.random_effects(c["yi"], c["vi"], measure="generic", control="optimum")
    close(fit.tau2, c["tau2"])
    check_robust(cr.robust(fit, c["cluster"]), c["robust_cr2"])
    check_robust(cr.robust(fit, c["cluster"], clubSandwich=False), c["robust_cr1"])


@pytest.mark.parametrize("name", sorted(REF["aggregate"]))
def test_aggregate(name):
    """aggregate(escalc, cluster, struct = "CS", rho), then rma.uni(method = "REML")."""
    c = REF["aggregate"][name]
    agg = ag.aggregate(c["yi"], c["vi"], c["cluster"], rho=c["rho"])
    assert [str(x) for x in agg.cluster] == c["agg_cluster"]
    close(agg.yi, c["agg_yi"])
    close(agg.vi, c["agg_vi"])
    pooled = models.random_effects(agg.yi, agg.vi, measure="generic", control="optimum")
    close([pooled.estimate, pooled.se, pooled.tau2],
          [c["pooled_estimate"], c["pooled_se"], c["pooled_tau2"]])


def test_single_finding_reduces_to_rma_uni():
    """dat.molloy2014, one finding per study: rma.mv's estimate, SE, log-likelihood and
    sigma2_1 + sigma2_2 equal rma.uni's REML estimate, SE, log-likelihood and tau2."""
    c = REF["single_finding"]
    with pytest.warns(MetaAllianceWarning, match="every cluster has one finding"):
        fit = ml.three_level(c["yi"], c["vi"], c["cluster"])
    close([fit.estimate, fit.se, sum(fit.sigma2), fit.loglik],
          [c["uni_estimate"], c["uni_se"], c["uni_tau2"], c["uni_loglik"]])
    close([fit.estimate, fit.se, sum(fit.sigma2), fit.loglik],
          [c["mv_estimate"], c["mv_se"], c["mv_sigma2_sum"], c["mv_loglik"]])
    assert fit.sigma2[1] == 0.0


def test_back_transformed_crede2010():
    """dat.crede2010 is on Fisher z: to_dict()'s back-transformed values are tanh of metafor's."""
    c = CASES["crede2010_REML_z"]
    fit = ml.three_level(c["yi"], c["vi"], c["cluster"])
    bt = fit.to_dict()["back_transformed"]
    close([bt["estimate"], bt["ci_lower"], bt["ci_upper"], bt["pi_lower"], bt["pi_upper"]],
          [math.tanh(c["estimate"]), math.tanh(c["ci_lower"]), math.tanh(c["ci_upper"]),
           math.tanh(c["pi_lower"]), math.tanh(c["pi_upper"])])
