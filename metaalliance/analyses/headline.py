"""The headline estimate of a findings frame, as the report states it (used by ``diff`` and
``add --dry-run`` to show what a change does to the result)."""

from __future__ import annotations


def main_estimate(df) -> dict | None:
    """The report's headline model on a findings frame: three-level REML on z (findings within
    samples), outcome findings only (adherence/retention/dropout apart); r-scale numbers.
    None when fewer than 2 findings remain."""
    import numpy as np

    from metaalliance.engine import multilevel
    from metaalliance.options import SEPARATE_DOMAINS

    if df is None:
        return None
    part = df[~df["outcome_domain"].isin(SEPARATE_DOMAINS)]
    if len(part) < 2:
        return None
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = multilevel.three_level(part["yi"].to_numpy(float), part["vi"].to_numpy(float),
                                     part["sample"].astype(str).to_numpy(), method="REML")
    t = np.tanh
    return {"k": int(fit.k), "n_samples": int(fit.n_clusters), "r": float(t(fit.estimate)),
            "ci_lower": float(t(fit.ci_lower)), "ci_upper": float(t(fit.ci_upper)),
            "pi_lower": float(t(fit.pi_lower)), "pi_upper": float(t(fit.pi_upper)),
            "tau2": float(sum(fit.sigma2)), "sigma2": [float(s) for s in fit.sigma2]}
