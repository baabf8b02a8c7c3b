"""metaalliance.engine.uniroot against R's uniroot() (tests/reference/uniroot.R writes the values).

The port must take R's path step for step: metafor's default control stops PM and the
Q-profile bounds where uniroot(tol = eps^0.25) stops, ~1e-4 from the root, so only the same
iterates give metafor's numbers. Roots are therefore compared exactly (==) and iteration
counts too, for several tolerances and maxiter values (3: R's "_NOT_ converged" path, where
the last iterate is returned). The functions use + - * / only, in the same order as in the R
script, so f() is the same double on both sides.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from metaalliance.errors import MetaAllianceWarning, ModelError
from metaalliance.engine.uniroot import DEFAULT_TOL, uniroot, uniroot1

REF = json.loads((Path(__file__).parent / "reference" / "uniroot.json").read_text())
YQ, VQ = REF["yq"], REF["vq"]


def qfun(x, target):
    sw = swy = 0.0
    for y, v in zip(YQ, VQ):
        w = 1 / (v + x)
        sw = sw + w
        swy = swy + w * y
    mu = swy / sw
    s = 0.0
    for y, v in zip(YQ, VQ):
        d = y - mu
        s = s + d * d / (v + x)
    return s - target


def quintic(x):
    d = x - 0.3
    return d * d * d * d * d


FUNS = {
    "cubic": lambda x: x * x * x - 2,
    "hyperbola": lambda x: 1 / (x + 0.01) - 7,
    "quintic": quintic,
    "linear_small_root": lambda x: x - 1e-7,
    "rational": lambda x: (x - 0.123456) / (1 + x * x),
    "q_k1": lambda x: qfun(x, 7),
    "q_low": lambda x: qfun(x, 1.689869),
    "q_near0": lambda x: qfun(x, 8.2),
    "q_far": lambda x: qfun(x, 0.01),
    "root_at_lower": lambda x: x,
    "root_at_upper": lambda x: x - 100,
}


def _id(c):
    return f"{c['fn']}-[{c['lower']:g},{c['upper']:g}]-tol{c['tol']:.0e}-maxiter{c['maxiter']}"


def test_reference_provenance():
    assert REF["r_version"].startswith("R version")
    assert {c["fn"] for c in REF["cases"]} == set(FUNS)
    assert any(c["iter"] == c["maxiter"] == 3 for c in REF["cases"])     # not converged


@pytest.mark.parametrize("case", REF["cases"], ids=_id)
def test_uniroot1_takes_r_path(case):
    """uniroot(f, c(lower, upper), tol, maxiter)$root and $iter, exactly."""
    f = FUNS[case["fn"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = uniroot1(f, case["lower"], case["upper"], tol=case["tol"], maxiter=case["maxiter"])
    assert r.root == float(case["root"])        # written with 17 significant digits
    assert r.iterations == case["iter"]


@pytest.mark.parametrize("tol", [DEFAULT_TOL, 1e-8])
def test_vectorised_uniroot_equals_one_at_a_time(tol):
    """Every column of the vectorised search follows its own R path (columns stop at different
    iterations; the others must not be disturbed)."""
    cases = [c for c in REF["cases"] if c["tol"] == tol and c["maxiter"] == 1000]
    fs = [FUNS[c["fn"]] for c in cases]

    def f(x, idx):
        return np.array([fs[j](float(xi)) for xi, j in zip(x, idx)])

    r = uniroot(f, [c["lower"] for c in cases], [c["upper"] for c in cases], tol=tol,
                maxiter=1000)
    assert list(r.root) == [float(c["root"]) for c in cases]
    assert list(r.iterations) == [c["iter"] for c in cases]
    assert r.converged.all()


def test_not_converged_warns_as_r():
    with pytest.warns(MetaAllianceWarning, match="_NOT_ converged in 3 iterations"):
        r = uniroot1(FUNS["q_k1"], 0.0, 100.0, maxiter=3)
    assert not r.converged and r.iterations == 3


def test_uniroot_argument_checks_as_r():
    with pytest.raises(ModelError, match="f\\(\\) values at end points not of opposite sign"):
        uniroot1(lambda x: x + 1, 0.0, 1.0)
    with pytest.raises(ModelError, match="lower < upper  is not fulfilled|lower < upper is not"):
        uniroot1(lambda x: x, 1.0, 0.0)


@pytest.mark.parametrize("case", REF["extend"],
                         ids=lambda c: f"{c['fn']}-[{c['lower']:g},{c['upper']:g}]-{c['extend_int']}")
def test_uniroot1_extend_int_takes_r_path(case):
    """uniroot(f, c(lower, upper), extendInt = "upX" | "downX" | "yes")$root, exactly: the
    widening steps (1% of the end, doubling) and then Brent's search from the widened ends
    (permutest()'s permci with control extendInt uses this). R's $iter counts the widening
    steps ($init.it) too; ours does not."""
    r = uniroot1(FUNS[case["fn"]], case["lower"], case["upper"], extend_int=case["extend_int"])
    assert r.root == float(case["root"])
    assert r.iterations == case["iter"] - case["init_it"]


def test_uniroot1_extend_int_errors():
    with pytest.raises(ModelError, match="uniroot: extendInt must be one of no, yes, upX, downX"):
        uniroot1(FUNS["cubic"], 2, 3, extend_int="up")
    # x^2 + 1 never changes sign: R stops after maxiter widening steps
    with pytest.raises(ModelError, match="uniroot: no sign change found in 5 iterations"):
        uniroot1(lambda x: x * x + 1, 0, 1, extend_int="yes", maxiter=5)
    # upX needs f increasing through the root; f(x) = -x^3 never turns positive upwards
    with pytest.raises(ModelError, match="uniroot: no sign change found in 10 iterations"):
        uniroot1(lambda x: -x * x * x - 2, 2, 3, extend_int="upX", maxiter=10)
