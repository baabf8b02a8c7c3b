"""Profile-likelihood CIs of the three-level variance components (engine/multilevel_ci.py)
against metafor's confint() on rma.mv (tests/reference/multilevel_ci.json, written by
tests/reference/multilevel_ci.R with confint(res, control = list(tol = 1e-12)))."""

import json
from pathlib import Path

import numpy as np
import pytest

from metaalliance.engine.multilevel import three_level
from metaalliance.engine.multilevel_ci import sigma2_profile_ci

REF = json.loads((Path(__file__).parent / "reference" / "multilevel_ci.json").read_text())
RTOL = 1e-6


@pytest.mark.parametrize("c", REF["cases"], ids=[c["name"] for c in REF["cases"]])
def test_sigma2_profile_ci_as_metafor_confint(c):
    fit = three_level(c["yi"], c["vi"], c["cluster"], method=c["method"], level=c["level"],
                      measure="generic")
    ci = sigma2_profile_ci(fit)
    for j, key in enumerate(("sigma2_1", "sigma2_2")):
        est, lo, hi = c[key]
        assert ci[j].estimate == pytest.approx(est, rel=RTOL)
        assert ci[j].ci_lower == pytest.approx(lo, rel=RTOL)
        assert ci[j].ci_upper == pytest.approx(hi, rel=RTOL)
        assert not ci[j].lower_at_bound and not ci[j].upper_at_bound
        assert ci[j].ci_lower < ci[j].estimate < ci[j].ci_upper


def test_profile_ci_covers_more_at_a_higher_level():
    c = REF["cases"][0]
    fit = three_level(c["yi"], c["vi"], c["cluster"], measure="generic")
    a, b = sigma2_profile_ci(fit, level=90), sigma2_profile_ci(fit, level=99)
    for x, y in zip(a, b):
        assert y.ci_lower < x.ci_lower and x.ci_upper < y.ci_upper
