"""Profile-likelihood confidence intervals for the variance components of the three-level model,
as metafor's ``confint()`` on an ``rma.mv`` fit.

For each component sigma2[j] the (restricted) log-likelihood is profiled: sigma2[j] is fixed and
the other component maximised (>= 0). The CI bounds are where the profile drops by
``qchisq(level, 1) / 2`` below the maximum, searched as metafor searches them: in
[vc.min, sigma2[j]] and [sigma2[j], vc.max] with vc.min = 0 and
vc.max = max(10, 100 * sigma2[j]); when the profile does not drop far enough within the search
range, the bound is the range's end (metafor: lower bound 0; an upper bound at vc.max is
flagged). Roots by Brent's method to 1e-12 (metafor's uniroot stops at tol = eps^0.25 by
default; with ``control = list(tol = 1e-12)`` it agrees with us).

Computation only: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metaalliance.engine.inference import level_alpha
from metaalliance.engine.clusters import _codes
from metaalliance.engine.multilevel import ThreeLevelResult, _Blocks, _evaluate

__all__ = ["Sigma2CI", "sigma2_profile_ci"]


@dataclass(frozen=True)
class Sigma2CI:
    """Profile CI of one variance component (``component`` 0: between, 1: within clusters)."""

    component: int
    estimate: float
    ci_lower: float
    ci_upper: float
    lower_at_bound: bool
    upper_at_bound: bool

    def to_dict(self) -> dict:
        return {"component": self.component, "estimate": self.estimate,
                "ci_lower": self.ci_lower, "ci_upper": self.ci_upper,
                "lower_at_bound": self.lower_at_bound, "upper_at_bound": self.upper_at_bound}


def _profile(b, reml, j, value, other_max):
    """max over the other component (>= 0) of the log-likelihood with sigma2[j] = value."""
    from scipy.optimize import minimize_scalar

    def ll(o):
        th = np.zeros(2)
        th[j], th[1 - j] = value, max(o, 0.0)
        return _evaluate(b, th, reml, derivs=False).ll

    res = minimize_scalar(lambda o: -ll(o), bounds=(0.0, other_max), method="bounded",
                          options={"xatol": 1e-13 * max(other_max, 1e-8), "maxiter": 2000})
    cands = [(ll(0.0), 0.0), (-res.fun, float(res.x))]
    return max(cands)[0]


def sigma2_profile_ci(fit: ThreeLevelResult, level=None) -> tuple:
    """Profile-likelihood CIs of ``fit.sigma2`` (metafor ``confint(res)`` on ``rma.mv``).

    Returns a tuple of two ``Sigma2CI`` (between clusters, within clusters). A component that is
    not estimated (one cluster; one finding per cluster) gets (0, 0) with both bounds flagged.
    """
    from scipy.optimize import brentq
    from metaalliance.engine.distributions import chi2

    lv, alpha = level_alpha(fit.level if level is None else level)
    crit = float(chi2.ppf(1.0 - alpha, 1)) / 2.0
    codes, _ = _codes(list(fit.cluster))
    b = _Blocks(np.asarray(fit.yi), np.asarray(fit.vi), np.asarray(fit.X), codes)
    reml = fit.method == "REML"
    theta = np.asarray(fit.sigma2, dtype=float)
    ll_max = _evaluate(b, theta, reml, derivs=False).ll
    target = ll_max - crit
    out = []
    for j in range(2):
        vc = float(theta[j])
        if (j == 0 and b.n_blocks == 1) or (j == 1 and b.n_blocks == b.k):
            out.append(Sigma2CI(j, vc, 0.0, 0.0, True, True))
            continue
        vc_min = 0.0
        vc_max = max(10.0, vc * 100.0) if vc > np.finfo(float).eps ** 0.5 else 10.0
        other_max = max(10.0, 100.0 * float(theta[1 - j]))

        def g(x):
            return _profile(b, reml, j, x, other_max) - target

        if vc <= vc_min or g(vc_min) >= 0:
            lo, lo_b = vc_min, True
        else:
            lo, lo_b = brentq(g, vc_min, vc, xtol=1e-14, rtol=1e-12, maxiter=500), False
        if g(vc_max) >= 0:
            hi, hi_b = vc_max, True
        else:
            hi, hi_b = brentq(g, vc, vc_max, xtol=1e-14, rtol=1e-12, maxiter=500), False
        out.append(Sigma2CI(j, vc, float(lo), float(hi), lo_b, hi_b))
    return tuple(out)
