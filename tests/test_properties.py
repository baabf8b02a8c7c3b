"""Properties the engine must have for any data (hypothesis, derandomized: CI is deterministic).

tests/test_engine.py already checks some of these on fixed simulated datasets (row-order
invariance, batch = single, DL's closed form on the Molloy data) and, randomly seeded, the
estimate within [min yi, max yi]. Here every property is drawn over many datasets by
hypothesis with ``derandomize=True`` (the same examples on every run). All data are simulated.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metaalliance.engine import models
from metaalliance.errors import ModelError
from metaalliance.options import METHODS

#: iterative estimators (ML, REML, PM, EB, the Q-profile) stop at a relative change ~1e-10;
#: two fits of transformed data agree to that, not bit for bit
RTOL = 1e-6
#: tau^2 near 0 is compared absolutely: the iterations stop ~1e-12 from the boundary
ATOL_TAU2 = 1e-10
#: ... and so I^2 (percent) near 0: 100 tau^2 / (tau^2 + vt) with vt >= 0.001 here
ATOL_I2 = 1e-5
#: batch and single fits run the same arithmetic on differently shaped arrays (BLAS order)
RTOL_BATCH = 1e-9

PROPS = settings(derandomize=True, max_examples=40, deadline=None)

#: simulated datasets: z-scale effects and sampling variances as correlations give them
datasets = st.lists(st.tuples(st.floats(-1.5, 1.5), st.floats(0.001, 0.5)), min_size=2,
                    max_size=25).map(lambda d: (np.array([a for a, _ in d]),
                                                np.array([b for _, b in d])))


def fit(y, v, method="REML", test="z", **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return models.random_effects(y, v, method=method, test=test, **kw)


def close(a, b, key):
    atol = ATOL_TAU2 if key.startswith("tau2") else ATOL_I2 if key == "i2" else 1e-12
    return a == pytest.approx(b, rel=RTOL, abs=atol)


@PROPS
@given(datasets, st.sampled_from(METHODS), st.sampled_from(("z", "knha")))
def test_estimate_in_range_and_heterogeneity_nonnegative(data, method, test):
    y, v = data
    try:
        res = fit(y, v, method, test)
    except ModelError as exc:      # knha with (numerically) identical effects: a clear stop
        assert test == "knha" and "Knapp-Hartung adjustment is undefined" in str(exc)
        return
    assert y.min() - 1e-12 <= res.estimate <= y.max() + 1e-12
    assert res.tau2 >= 0 and res.se > 0 and 0 <= res.i2 < 100 and res.q >= 0
    assert res.tau2_ci_lower is None or 0 <= res.tau2_ci_lower <= res.tau2_ci_upper
    assert res.ci_lower <= res.estimate <= res.ci_upper
    json.dumps(res.to_dict(), allow_nan=False)


@PROPS
@given(datasets, st.sampled_from(METHODS), st.randoms(use_true_random=False))
def test_row_order_does_not_matter(data, method, rnd):
    y, v = data
    perm = list(range(y.size))
    rnd.shuffle(perm)
    a, b = fit(y, v, method), fit(y[perm], v[perm], method)
    for key in ("estimate", "se", "tau2", "q", "i2", "tau2_ci_lower", "tau2_ci_upper"):
        assert close(getattr(b, key), getattr(a, key), key), key


@PROPS
@given(datasets, st.sampled_from(METHODS), st.floats(-2, 2))
def test_adding_a_constant_shifts_the_estimate_only(data, method, c):
    y, v = data
    a, b = fit(y, v, method), fit(y + c, v, method)
    assert b.estimate == pytest.approx(a.estimate + c, rel=RTOL, abs=1e-9)
    assert b.ci_lower == pytest.approx(a.ci_lower + c, rel=RTOL, abs=1e-9)
    for key in ("se", "tau2", "q", "i2", "tau2_ci_upper"):
        assert close(getattr(b, key), getattr(a, key), key), key


@PROPS
@given(datasets, st.sampled_from(METHODS), st.floats(0.1, 10))
def test_rescaling_effects_rescales_estimate_and_tau2(data, method, c):
    """yi -> c yi, vi -> c^2 vi: estimate -> c estimate, tau^2 -> c^2 tau^2, Q and I^2 fixed.
    At the optimum: metafor's default stopping rule (|change| <= 1e-5, uniroot on [0, 100])
    is absolute, so its tau^2 is not scale-equivariant."""
    y, v = data
    a = fit(y, v, method, control="optimum")
    b = fit(c * y, c * c * v, method, control="optimum")
    assert b.estimate == pytest.approx(c * a.estimate, rel=RTOL, abs=1e-9)
    assert b.se == pytest.approx(c * a.se, rel=RTOL)
    assert b.tau2 == pytest.approx(c * c * a.tau2, rel=RTOL, abs=c * c * ATOL_TAU2)
    assert b.q == pytest.approx(a.q, rel=RTOL, abs=1e-9)
    assert b.i2 == pytest.approx(a.i2, rel=RTOL, abs=1e-6)


@PROPS
@given(datasets)
def test_dl_is_its_closed_form(data):
    """DL: tau^2 = max(0, (Q - (k - 1)) / (sum w - sum w^2 / sum w)), w = 1 / vi."""
    y, v = data
    w = 1 / v
    q = float(np.sum(w * (y - np.sum(w * y) / w.sum()) ** 2))
    tau2 = max(0.0, (q - (y.size - 1)) / (w.sum() - np.sum(w ** 2) / w.sum()))
    res = fit(y, v, "DL")
    assert res.q == pytest.approx(q, rel=1e-9, abs=1e-12)
    assert res.tau2 == pytest.approx(tau2, rel=1e-9, abs=1e-15)
    ws = 1 / (v + tau2)
    assert res.estimate == pytest.approx(np.sum(ws * y) / ws.sum(), rel=1e-9, abs=1e-12)
    assert res.se == pytest.approx(1 / math.sqrt(ws.sum()), rel=1e-9)


@PROPS
@given(st.integers(2, 20), st.integers(1, 12), st.sampled_from(METHODS),
       st.sampled_from(("z", "knha")), st.integers(0, 2**32 - 1))
def test_batch_equals_single_fits(k, B, method, test, seed):
    rng = np.random.default_rng(seed)            # simulated
    v = rng.uniform(0.002, 0.2, k)
    Y = 0.2 + rng.normal(0, rng.uniform(0, 0.4), (k, B)) + rng.normal(0, np.sqrt(v)[:, None],
                                                                      (k, B))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bb = models.random_effects_batch(Y, v, method=method, test=test)
    except ModelError:
        return                                   # knha with a zero residual column: refused
    for b in range(B):
        s = fit(Y[:, b], v, method, test)
        for key in ("estimate", "se", "tau2", "q", "i2", "ci_lower", "ci_upper"):
            atol = ATOL_TAU2 if key == "tau2" else ATOL_I2 if key == "i2" else 1e-12
            assert getattr(bb, key)[b] == pytest.approx(getattr(s, key), rel=RTOL_BATCH,
                                                        abs=atol), key


@PROPS
@given(datasets, st.sampled_from(METHODS))
def test_back_transformation_is_monotone(data, method):
    """r = tanh(z) keeps every order: studies, CI bounds, estimate within its intervals."""
    y, v = data
    res = fit(y, v, method)
    frame = res.to_frame(scale="r")
    order = np.argsort(y, kind="stable")
    assert np.all(np.diff(frame["r"].to_numpy()[order]) >= 0)
    assert np.all(frame["ci_lower"] <= frame["r"]) and np.all(frame["r"] <= frame["ci_upper"])
    b = res.back_transformed()
    assert b["pi_lower"] <= b["ci_lower"] <= b["estimate"] <= b["ci_upper"] <= b["pi_upper"]
    assert b["estimate"] == pytest.approx(math.tanh(res.estimate), rel=1e-15)
    assert -1 < b["pi_lower"] and b["pi_upper"] < 1


@PROPS
@given(datasets, st.floats(-2, 2), st.sampled_from(("REML", "DL", "ML")))
def test_meta_regression_intercept_shifts_slope_does_not(data, c, method):
    import pandas as pd

    y, v = data
    if y.size < 3:
        return
    x = np.arange(y.size, dtype=float)
    df = pd.DataFrame({"x": x})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = models.meta_regression(y, v, df, "~ x", method=method)
        b = models.meta_regression(y + c, v, df, "~ x", method=method)
    assert b.coefficients[0].estimate == pytest.approx(a.coefficients[0].estimate + c,
                                                       rel=RTOL, abs=1e-9)
    assert b.coefficients[1].estimate == pytest.approx(a.coefficients[1].estimate, rel=RTOL,
                                                       abs=1e-9)
    assert b.tau2 == pytest.approx(a.tau2, rel=RTOL, abs=ATOL_TAU2)
