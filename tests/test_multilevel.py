"""Properties, special cases and exact messages of metaalliance.engine.multilevel (three_level),
engine.cluster_robust (robust) and engine.aggregation (aggregate).

Numbers against metafor are in test_reference_multilevel.py. Data here are either hand-worked
or SIMULATED by seeded code (numpy default_rng with a fixed seed, or hypothesis with
derandomize=True); none of it is a real finding.
"""

import dataclasses
import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from metaalliance.engine import models
from metaalliance.engine import aggregation as ag
from metaalliance.engine import cluster_robust as cr
from metaalliance.engine import multilevel as ml
from metaalliance.errors import DataError, MetaAllianceWarning, ModelError, OptionError

#: results of the same data in another row order / with other cluster labels: sums are taken
#: in another order (last bits) and Newton stops at a 1e-10 relative step
PERMUTATION_RTOL = 1e-8
#: our REML solution vs the engine's univariate REML: two independent optimisers, each
#: converged far below 1e-6
ENGINE_RTOL = 1e-6

HAND_Y = [0.1, 0.3, 0.2, 0.5, 0.4, 0.35]
HAND_V = [0.01, 0.02, 0.015, 0.01, 0.02, 0.03]
HAND_C = ["a", "a", "b", "b", "c", "c"]


def simulated(seed, n_clusters=12, s1=0.03, s2=0.01):
    """SIMULATED three-level data (Fisher z scale), seeded."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, n_clusters)
    cluster = np.repeat(np.arange(n_clusters), sizes)
    n = rng.integers(30, 250, len(cluster))
    vi = 1.0 / (n - 3.0)
    yi = (0.25 + rng.normal(0, math.sqrt(s1), n_clusters)[cluster]
          + rng.normal(0, math.sqrt(s2), len(cluster)) + rng.normal(0, np.sqrt(vi)))
    return yi, vi, [f"study{c}" for c in cluster]


@st.composite
def datasets(draw):
    """SIMULATED datasets drawn by hypothesis (derandomized): 2-8 clusters of 1-4 findings."""
    sizes = draw(st.lists(st.integers(1, 4), min_size=2, max_size=8))
    k = sum(sizes)
    if k < 3 or max(sizes) < 2:
        sizes[0] = 2
        k = sum(sizes)
    yi = draw(st.lists(st.floats(-2, 2, allow_nan=False, allow_infinity=False),
                       min_size=k, max_size=k))
    vi = draw(st.lists(st.floats(1e-3, 0.5, allow_nan=False, allow_infinity=False),
                       min_size=k, max_size=k))
    cluster = [f"c{i}" for i, s in enumerate(sizes) for _ in range(s)]
    return np.array(yi), np.array(vi), cluster


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetaAllianceWarning)
        return fn(*args, **kwargs)


# ------------------------------------------------------------------------------ properties


@settings(derandomize=True, max_examples=60, deadline=None)
@given(datasets())
def test_estimate_in_range_components_nonnegative_never_nan(data):
    yi, vi, cluster = data
    fit = quiet(ml.three_level, yi, vi, cluster)
    assert yi.min() - 1e-12 <= fit.estimate <= yi.max() + 1e-12
    assert fit.sigma2[0] >= 0.0 and fit.sigma2[1] >= 0.0
    assert fit.converged
    numbers = [v for v in fit.to_dict().values() if isinstance(v, float)]
    numbers += list(fit.sigma2) + list(fit.i2_levels) + list(fit.weights)
    assert all(math.isfinite(x) for x in numbers)
    assert fit.ci_lower < fit.estimate < fit.ci_upper
    assert fit.pi_lower <= fit.ci_lower and fit.pi_upper >= fit.ci_upper
    assert math.isclose(sum(fit.weights), 100.0) and math.isclose(sum(fit.weights_rowsum), 100.0)


@settings(derandomize=True, max_examples=30, deadline=None)
@given(datasets(), st.integers(0, 2**32 - 1))
def test_cluster_label_and_row_permutation_invariance(data, seed):
    yi, vi, cluster = data
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(yi))
    names = {c: f"renamed-{rng.integers(1e9)}-{c}" for c in set(cluster)}
    a = quiet(ml.three_level, yi, vi, cluster)
    b = quiet(ml.three_level, yi[perm], vi[perm], [names[cluster[i]] for i in perm])
    for key in ("estimate", "se", "loglik", "q", "i2", "pi_lower", "pi_upper"):
        assert getattr(b, key) == pytest.approx(getattr(a, key), rel=PERMUTATION_RTOL, abs=1e-12)
    np.testing.assert_allclose(b.sigma2, a.sigma2, rtol=PERMUTATION_RTOL, atol=1e-12)
    np.testing.assert_allclose(b.weights, a.weights[perm], rtol=PERMUTATION_RTOL)
    try:
        ra = cr.robust(a)
    except ModelError:          # residuals 0 in every cluster: no robust test, for b neither
        with pytest.raises(ModelError):
            cr.robust(b)
        return
    rb = cr.robust(b)
    assert rb.se == pytest.approx(ra.se, rel=PERMUTATION_RTOL)
    assert rb.df == pytest.approx(ra.df, rel=PERMUTATION_RTOL)


def test_one_finding_per_cluster_reduces_to_univariate_reml():
    yi, vi, _ = simulated(7, n_clusters=15)
    cluster = [f"s{i}" for i in range(len(yi))]
    with pytest.warns(MetaAllianceWarning) as rec:
        fit = ml.three_level(yi, vi, cluster)
    assert str(rec[0].message) == (
        "three_level: every cluster has one finding, so only sigma2 between + within is "
        "identified; it is reported as sigma2 between clusters (sigma2 within = 0)")
    uni = models.random_effects(yi, vi, control="optimum")    # both at the REML optimum
    assert fit.estimate == pytest.approx(uni.estimate, rel=ENGINE_RTOL)
    assert fit.se == pytest.approx(uni.se, rel=ENGINE_RTOL)
    assert sum(fit.sigma2) == pytest.approx(uni.tau2, rel=ENGINE_RTOL)
    assert fit.sigma2[1] == 0.0
    assert fit.q == pytest.approx(uni.q, rel=ENGINE_RTOL)
    assert fit.i2 == pytest.approx(uni.i2, rel=ENGINE_RTOL)


def test_one_cluster_fixes_between_component_and_equals_univariate():
    yi, vi, _ = simulated(8)
    with pytest.warns(MetaAllianceWarning) as rec:
        fit = ml.three_level(yi, vi, ["only"] * len(yi))
    assert str(rec[0].message) == (
        "three_level: all findings are in one cluster; sigma2 between clusters is fixed at 0 "
        "(as metafor does for a single-level factor)")
    uni = models.random_effects(yi, vi)
    assert fit.sigma2[0] == 0.0
    assert fit.sigma2[1] == pytest.approx(uni.tau2, rel=ENGINE_RTOL)
    assert fit.estimate == pytest.approx(uni.estimate, rel=ENGINE_RTOL)


def test_homogeneous_data_give_zero_components():
    """Identical effects: both components at the boundary 0, Q = 0, I^2 = 0 (hand-worked)."""
    fit = ml.three_level([0.3] * 6, [0.02, 0.03, 0.02, 0.04, 0.05, 0.02], HAND_C)
    assert fit.sigma2 == (0.0, 0.0)
    assert fit.estimate == pytest.approx(0.3, rel=1e-12)
    assert fit.q == pytest.approx(0.0, abs=1e-20) and fit.i2 == 0.0
    # equal-effects SE: 1 / sqrt(sum 1/vi)
    w = 1 / np.array([0.02, 0.03, 0.02, 0.04, 0.05, 0.02])
    assert fit.se == pytest.approx(1 / math.sqrt(w.sum()), rel=1e-12)


def test_t_test_uses_k_minus_p_df_and_wider_interval():
    yi, vi, cl = simulated(3)
    z = ml.three_level(yi, vi, cl)
    t = ml.three_level(yi, vi, cl, test="t")
    assert t.df == len(yi) - 1
    assert t.estimate == z.estimate and t.se == z.se
    assert t.ci_upper - t.ci_lower > z.ci_upper - z.ci_lower
    assert t.pvalue > z.pvalue


def test_ml_and_reml_differ_and_level_changes_ci():
    yi, vi, cl = simulated(4)
    reml = ml.three_level(yi, vi, cl)
    mlf = ml.three_level(yi, vi, cl, method="ML")
    assert sum(mlf.sigma2) < sum(reml.sigma2)   # ML shrinks the variance components
    f90 = ml.three_level(yi, vi, cl, level=90)
    f90b = ml.three_level(yi, vi, cl, level=0.90)
    assert f90.ci_upper == f90b.ci_upper < reml.ci_upper


def test_moderators_intercept_only_design_equals_default():
    yi, vi, cl = simulated(5)
    a = ml.three_level(yi, vi, cl)
    b = ml.three_level(yi, vi, cl, X=np.ones((len(yi), 1)))
    assert b.estimate == pytest.approx(a.estimate, rel=1e-12)
    assert b.sigma2 == pytest.approx(a.sigma2, rel=1e-10)
    assert b.qm is None


def test_moderator_model_names_and_qm():
    yi, vi, cl = simulated(6, n_clusters=20)
    x = np.linspace(-1, 1, len(yi))
    fit = ml.three_level(yi, vi, cl, X=np.column_stack([np.ones(len(yi)), x]),
                         coef_names=["intrcpt", "x"])
    assert [c.name for c in fit.coefficients] == ["intrcpt", "x"]
    # one moderator: QM is the squared z statistic of its coefficient
    assert fit.qm == pytest.approx(fit.coefficients[1].stat ** 2, rel=1e-12)
    assert fit.qm_df == (1,)
    d = fit.to_dict()
    assert [c["name"] for c in d["coefficients"]] == ["intrcpt", "x"]


# ------------------------------------------------------------------------- output contract


def test_to_dict_contract_and_json():
    fit = ml.three_level(HAND_Y, HAND_V, HAND_C)
    d = fit.to_dict()
    for key in ("k", "n_clusters", "estimate", "se", "ci_lower", "ci_upper", "sigma2",
                "loglik", "q"):
        assert key in d
    assert d["k"] == 6 and d["n_clusters"] == 3 and len(d["sigma2"]) == 2
    assert "omitted" not in d      # the CLI adds it (rows it dropped before fitting)
    assert d["back_transformed"]["estimate"] == math.tanh(fit.estimate)
    assert d["back_transformed"]["pi_upper"] == math.tanh(fit.pi_upper)
    json.dumps(d)
    assert "back_transformed" not in ml.three_level(HAND_Y, HAND_V, HAND_C,
                                                    measure="generic").to_dict()


def test_to_frame_scales():
    fit = ml.three_level(HAND_Y, HAND_V, HAND_C, labels=list("uvwxyz"))
    fr = fit.to_frame("r")
    assert list(fr.columns) == ["label", "cluster", "r", "ci_lower", "ci_upper", "weight",
                                "weight_rowsum"]
    assert fr["r"].tolist() == pytest.approx(np.tanh(HAND_Y).tolist(), rel=1e-15)
    # 95% CI of a finding on z: yi +- 1.959964 sqrt(vi), then tanh
    assert fr["ci_lower"][0] == pytest.approx(math.tanh(0.1 - 1.959963984540054 * 0.1), rel=1e-12)
    fz = fit.to_frame()
    assert list(fz.columns) == ["label", "cluster", "yi", "vi", "se", "ci_lower", "ci_upper",
                                "weight", "weight_rowsum"]
    assert fz["yi"].tolist() == HAND_Y and fz["label"].tolist() == list("uvwxyz")
    with pytest.raises(OptionError, match=r"^scale: 'x' is not one of r, z$"):
        fit.to_frame("x")
    generic = ml.three_level(HAND_Y, HAND_V, HAND_C, measure="generic")
    with pytest.raises(OptionError, match=r"^scale: 'r' needs measure ZCOR"):
        generic.to_frame("r")


def test_result_is_frozen_with_readonly_arrays_and_provenance():
    fit = ml.three_level(HAND_Y, HAND_V, HAND_C)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.estimate = 0.0
    with pytest.raises(ValueError):
        fit.yi[0] = 1.0
    prov = fit.provenance
    assert prov["method"] == "REML" and prov["test"] == "z" and prov["k"] == 6
    assert len(prov["data_hash"]) == 64
    assert prov["versions"]["metaalliance"]
    other = ml.three_level(HAND_Y, HAND_V, ["a", "a", "b", "b", "c", "d"])
    assert other.provenance["data_hash"] != prov["data_hash"]   # the hash covers the clusters


def test_summary_shows_rounded_numbers():
    fit = ml.three_level(HAND_Y, HAND_V, HAND_C)
    text = fit.summary()
    assert "k = 6 findings in 3 clusters" in text
    assert f"{fit.estimate:.4f}" in text and "0.3031" in text
    assert "sigma2 within clusters  = 0.0135" in text
    assert "Back-transformed (r): 0.2941" in text
    assert "intrcpt" in cr.robust(fit).summary()


# ---------------------------------------------------------------------- optimiser fallbacks


def test_fallback_to_lbfgsb_when_newton_fails(monkeypatch):
    yi, vi, cl = simulated(9)
    good = ml.three_level(yi, vi, cl)
    real = ml._newton

    def failing(*args, **kwargs):
        theta, ev, _, it = real(*args, **kwargs)
        start = np.asarray(args[3], dtype=float)
        return start, ml._evaluate(args[0], start, args[1]), False, it

    monkeypatch.setattr(ml, "_newton", failing)
    fit = ml.three_level(yi, vi, cl)
    assert fit.converged and fit.optimizer == "L-BFGS-B"
    # L-BFGS-B stops on its own (looser) criteria
    assert fit.sigma2 == pytest.approx(good.sigma2, rel=1e-4)
    assert fit.estimate == pytest.approx(good.estimate, rel=1e-6)


def test_non_convergence_warns_and_stays_finite(monkeypatch):
    yi, vi, cl = simulated(10)
    real = ml._newton

    def failing(*args, **kwargs):
        theta, ev, _, it = real(*args, **kwargs)
        return theta, ev, False, it

    monkeypatch.setattr(ml, "_newton", failing)
    monkeypatch.setattr(ml, "_kkt_ok", lambda *a: False)
    with pytest.warns(MetaAllianceWarning, match=r"^three_level: the REML optimisation did not "
                                                 r"converge; using the best point found"):
        fit = ml.three_level(yi, vi, cl)
    assert not fit.converged and fit.optimizer == "best point (not converged)"
    assert all(math.isfinite(x) for x in (fit.estimate, fit.se, fit.loglik, *fit.sigma2))
    assert "did not converge" in fit.summary()


def test_large_dataset_is_linear_in_k():
    """SIMULATED: 6,000 findings in 2,000 clusters; block-wise algebra (no k x k matrix)."""
    rng = np.random.default_rng(11)
    sizes = rng.integers(1, 6, 2000)
    cl = np.repeat(np.arange(2000), sizes)
    vi = 1 / (rng.integers(20, 300, len(cl)) - 3.0)
    yi = 0.2 + rng.normal(0, 0.15, 2000)[cl] + rng.normal(0, 0.1, len(cl)) + rng.normal(0, np.sqrt(vi))
    fit = ml.three_level(yi, vi, cl)
    assert fit.converged and fit.sigma2[0] == pytest.approx(0.0225, rel=0.3)


# --------------------------------------------------------------------------------- robust


def test_robust_defaults_to_fit_clusters_and_accepts_coarser_clusters():
    yi, vi, cl = simulated(12, n_clusters=16)
    fit = ml.three_level(yi, vi, cl)
    a = cr.robust(fit)
    b = cr.robust(fit, cl)
    assert a.se == b.se and a.df == b.df and a.n_clusters == 16
    coarse = [f"group{int(c[5:]) // 2}" for c in cl]        # pairs of studies
    c = cr.robust(fit, coarse)
    assert c.n_clusters == 8 and c.estimate == fit.estimate


def test_robust_from_data_pair_equals_robust_of_fit():
    yi, vi, cl = simulated(13)
    a = cr.robust((yi, vi), cl)
    b = cr.robust(ml.three_level(yi, vi, cl), cl)
    assert a.se == pytest.approx(b.se, rel=1e-12) and a.model == "three_level"
    u = cr.robust((yi, vi), cl, model="random_effects")
    assert u.model == "random_effects"
    assert u.to_dict()["back_transformed"]["estimate"] == math.tanh(u.estimate)


def test_robust_messages():
    fit = ml.three_level([0.1, 0.2, 0.3, 0.4], [0.1] * 4, ["a", "a", "b", "b"])
    with pytest.raises(ModelError) as e:
        cr.robust(fit, ["x", "y", "x", "y"])
    assert str(e.value) == "robust: the model's clusters are not nested within the robust clusters"
    with pytest.raises(ModelError) as e:
        cr.robust(fit, ["x"] * 4)
    assert str(e.value) == ("robust: the number of clusters (1) must be larger than the number "
                            "of fixed effects (1)")
    with pytest.raises(DataError) as e:
        cr.robust(object(), ["a"])
    assert str(e.value) == ("robust: fit must be a ThreeLevelResult, a random-effects result "
                            "(with yi, vi and tau2) or a pair (yi, vi)")
    with pytest.raises(OptionError, match=r"^model: 'uni' is not one of three_level, random_effects$"):
        cr.robust(([0.1, 0.2], [0.1, 0.1]), ["a", "b"], model="uni")
    with pytest.raises(DataError) as e:
        cr.robust(fit, ["a", "a", "b"])
    assert str(e.value) == "robust: yi, vi and cluster must have the same length (got 4, 4 and 3)"
    flat = ml.three_level([0.2, 0.2, 0.2, 0.2], [0.1] * 4, ["a", "a", "b", "b"])
    with pytest.raises(ModelError) as e:
        cr.robust(flat)
    assert str(e.value) == ("robust: the cluster-robust variance is 0 (the residuals are 0 in "
                            "every cluster), so no robust test is possible")


# ------------------------------------------------------------------------------ aggregate


def test_aggregate_rho0_equal_variances_is_the_mean():
    """Hand-worked: rho = 0 and equal vi -> yi = mean, vi = v / n."""
    agg = ag.aggregate([0.1, 0.3, 0.5, 0.2], [0.04] * 4, ["s1", "s1", "s1", "s2"], rho=0)
    assert agg.cluster == ("s1", "s2")
    assert agg.yi.tolist() == pytest.approx([0.3, 0.2], rel=1e-14)
    assert agg.vi.tolist() == pytest.approx([0.04 / 3, 0.04], rel=1e-14)
    assert agg.k.tolist() == [3, 1]


def test_aggregate_default_rho_hand_worked():
    """Two findings, equal vi = v, rho = 0.5: composite mean, vi = v (1 + rho) / 2."""
    agg = ag.aggregate([0.2, 0.4], [0.02, 0.02], ["s", "s"])
    assert ag.DEFAULT_RHO == 0.5
    assert agg.yi[0] == pytest.approx(0.3, rel=1e-14)
    assert agg.vi[0] == pytest.approx(0.02 * 1.5 / 2, rel=1e-14)
    # unweighted: mean, vi = sum(V) / n^2
    u = ag.aggregate([0.2, 0.4], [0.02, 0.08], ["s", "s"], weighted=False)
    assert u.yi[0] == pytest.approx(0.3, rel=1e-14)
    assert u.vi[0] == pytest.approx((0.02 + 0.08 + 2 * 0.5 * math.sqrt(0.02 * 0.08)) / 4,
                                    rel=1e-14)


def test_aggregate_singletons_pass_through_and_first_appearance_order():
    agg = ag.aggregate([0.5, 0.1, 0.2], [0.03, 0.01, 0.02], ["z", "a", "a"], rho=0.9)
    assert agg.cluster == ("z", "a")
    assert agg.yi[0] == 0.5 and agg.vi[0] == 0.03
    fr = agg.to_frame()
    assert fr.columns.tolist() == ["cluster", "yi", "vi", "k", "rho"]


def test_aggregate_per_cluster_rho():
    a = ag.aggregate([0.1, 0.3, 0.2, 0.6], [0.02] * 4, ["a", "a", "b", "b"], rho=[0.0, 0.5])
    assert a.vi.tolist() == pytest.approx([0.01, 0.015], rel=1e-14)
    with pytest.raises(DataError) as e:
        ag.aggregate([0.1, 0.3], [0.02] * 2, ["a", "a"], rho=[0.0, 0.5])
    assert str(e.value) == "aggregate: rho has 2 values for 1 clusters"


def test_aggregate_messages():
    with pytest.raises(DataError) as e:
        ag.aggregate([0.1, 0.2, 0.3], [0.1] * 3, ["a", "a", "a"], rho=1.0)
    assert str(e.value) == (
        "aggregate: rho = 1 makes the sampling covariance matrix of cluster 'a' singular or "
        "not positive definite (with 3 findings it needs -0.5 < rho < 1)")
    with pytest.raises(DataError) as e:
        ag.aggregate([0.1, 0.2], [0.1] * 2, ["a", "a"], rho=1.5)
    assert str(e.value) == "aggregate: rho must be in [-1, 1] (got 1.5)"
    with pytest.raises(DataError) as e:
        ag.aggregate([0.1, 0.2], [0.1, -0.1], ["a", "a"])
    assert str(e.value) == "aggregate: vi must be finite and > 0 (row 2 is -0.1)"


# ---------------------------------------------------------------------- input validation


@pytest.mark.parametrize("args, kwargs, error, message", [
    (([0.1, 0.2], [0.1, 0.1], ["a"]), {}, DataError,
     "three_level: yi, vi and cluster must have the same length (got 2, 2 and 1)"),
    (([0.1, 0.2, 0.3], [0.1, 0.1], ["a", "b", "c"]), {}, DataError,
     "three_level: yi, vi and cluster must have the same length (got 3, 2 and 3)"),
    (([0.1, float("nan")], [0.1, 0.1], ["a", "b"]), {}, DataError,
     "three_level: yi must be finite numbers (row 2 is nan)"),
    (([0.1, 0.2], [0.1, float("nan")], ["a", "b"]), {}, DataError,
     "three_level: vi must be finite and > 0 (row 2 is nan)"),
    (([0.1, 0.2], [0.1, 0.0], ["a", "b"]), {}, DataError,
     "three_level: vi must be finite and > 0 (row 2 is 0.0)"),
    (([0.1, 0.2], [-0.1, 0.1], ["a", "b"]), {}, DataError,
     "three_level: vi must be finite and > 0 (row 1 is -0.1)"),
    (([0.1], [0.1], ["a"]), {}, DataError, "three_level: needs at least 2 findings (got 1)"),
    (([], [], []), {}, DataError, "three_level: needs at least 2 findings (got 0)"),
    (([0.1, 0.2], [0.1, 0.1], ["a", None]), {}, DataError,
     "three_level: cluster has a missing value (row 2)"),
    (([0.1, 0.2], [0.1, 0.1], ["a", float("nan")]), {}, DataError,
     "three_level: cluster has a missing value (row 2)"),
    ((["x", 0.2], [0.1, 0.1], ["a", "b"]), {}, DataError, "three_level: yi must be numbers"),
    (([0.1, 0.2], [0.1, 0.1], ["a", "b"]), {"method": "DL"}, OptionError,
     "method: 'DL' is not one of REML, ML"),
    (([0.1, 0.2], [0.1, 0.1], ["a", "b"]), {"test": "knha"}, OptionError,
     "test: 'knha' is not one of z, t"),
    (([0.1, 0.2], [0.1, 0.1], ["a", "b"]), {"level": 120}, OptionError,
     "level: 120 must be a percentage between 50 and 100 (e.g. 95)"),
    (([0.1, 0.2, 0.3], [0.1] * 3, ["a", "a", "b"]), {"X": [[1, 0], [1, 0], [1, 0]]}, ModelError,
     "three_level: the design matrix X is rank deficient (rank 1 < 2 columns)"),
    (([0.1, 0.2, 0.3], [0.1] * 3, ["a", "a", "b"]), {"X": [[1], [1]]}, DataError,
     "three_level: X must have one row per finding (3 rows, got shape (2, 1))"),
])
def test_three_level_messages(args, kwargs, error, message):
    with pytest.raises(error) as e:
        ml.three_level(*args, **kwargs)
    assert str(e.value) == message
