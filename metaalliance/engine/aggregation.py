"""Within-cluster aggregation, as metafor's ``aggregate()``: one composite effect per cluster.

=====================================================  ==========================================
metaalliance                                           metafor
=====================================================  ==========================================
``aggregate(yi, vi, cluster, rho)``                    ``aggregate(escalc, cluster, struct = "CS",
                                                       rho = rho)``
``aggregate(..., weighted=False)``                     ``aggregate(..., weighted = FALSE)``
=====================================================  ==========================================

The composites (``AggregateResult.yi``/``.vi``) go straight into the univariate engine
(``models.random_effects``): one answer to dependent findings beside the three-level model
(``multilevel``) and cluster-robust inference (``cluster_robust``). Computation only: no I/O.

>>> agg = aggregate([0.1, 0.3, 0.2], [0.01, 0.02, 0.015], ["a", "a", "b"], rho=0.5)
>>> agg.cluster, [round(float(x), 6) for x in agg.yi], [round(float(x), 6) for x in agg.vi]
(('a', 'b'), [0.13694, 0.2], [0.009459, 0.015])

(metafor 3.8-1: ``aggregate(escalc("GEN", yi, vi), cluster, struct = "CS", rho = 0.5)`` gives
yi 0.1369398, 0.2 and vi 0.0094590, 0.015.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from metaalliance.engine.clusters import _data_hash, _numbers, _validate
from metaalliance.engine.results import _ro as _readonly, versions as _versions
from metaalliance.errors import DataError
from metaalliance.options import check_option

__all__ = ["DEFAULT_RHO", "AggregateResult", "aggregate"]

#: Assumed correlation between the sampling errors of two findings from the same study when
#: aggregating. metafor makes the user choose; we choose 0.5 because findings of one study come
#: from the same patients (different raters, measures or time points), so their errors are
#: positively correlated, and 0.5 is the conventional middle value used when studies do not
#: report it (Borenstein et al., 2009, ch. 24; rho = 0 would treat them as independent and
#: understate the variance of the composite). Check the conclusions with 0.2 and 0.8.
DEFAULT_RHO = 0.5


@dataclass(frozen=True, eq=False)
class AggregateResult:
    """One composite effect per cluster (clusters in order of first appearance, as metafor).

    ``yi``/``vi`` can go straight into the univariate engine
    (``models.random_effects(agg.yi, agg.vi)``). ``k`` is the number of findings per cluster.
    """

    cluster: tuple
    yi: np.ndarray
    vi: np.ndarray
    k: np.ndarray
    rho: np.ndarray
    weighted: bool
    provenance: dict = field(repr=False)

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame({"cluster": list(self.cluster), "yi": self.yi, "vi": self.vi,
                             "k": self.k, "rho": self.rho})


def aggregate(yi, vi, cluster, rho=DEFAULT_RHO, weighted: bool = True) -> AggregateResult:
    """Within-cluster aggregation, as metafor's ``aggregate(escalc, cluster, struct = "CS", rho)``.

    The sampling errors of findings in one cluster are assumed to correlate ``rho`` (compound
    symmetry: ``V_c = S R S``, ``S = diag(sqrt(vi))``); ``rho`` is one number or one per
    cluster (in order of first appearance). The default 0.5 is our assumption, see
    ``DEFAULT_RHO``. Weighted (default): the GLS composite ``yi = 1'W y / 1'W 1``,
    ``vi = 1 / 1'W 1`` with ``W = V_c^-1``; unweighted: the mean with ``vi = 1'V_c 1 / n^2``.
    """
    who = "aggregate"
    check_option("weighted", weighted, (True, False))
    yi, vi, labels, codes, uniq = _validate(yi, vi, cluster, who, min_k=1)
    n_cl = len(uniq)
    rho_arr = _numbers(np.atleast_1d(rho), "rho", who)
    if rho_arr.size == 1:
        rho_arr = np.full(n_cl, rho_arr[0])
    if rho_arr.size != n_cl:
        raise DataError(f"{who}: rho has {rho_arr.size} values for {n_cl} clusters")
    if np.any(~np.isfinite(rho_arr) | (rho_arr < -1) | (rho_arr > 1)):
        bad = rho_arr[~np.isfinite(rho_arr) | (rho_arr < -1) | (rho_arr > 1)][0]
        raise DataError(f"{who}: rho must be in [-1, 1] (got {bad:g})")
    nk = np.bincount(codes, minlength=n_cl)
    for c in range(n_cl):
        m, r = nk[c], rho_arr[c]
        if m >= 2 and not (-1.0 / (m - 1) < r < 1.0):
            raise DataError(f"{who}: rho = {r:g} makes the sampling covariance matrix of "
                            f"cluster {uniq[c]!r} singular or not positive definite "
                            f"(with {m} findings it needs {-1.0 / (m - 1):g} < rho < 1)")
    sd = np.sqrt(vi)
    if weighted:
        # V_c^-1 = D R^-1 D with D = diag(1/sd), R^-1 = (I - c 11') / (1 - rho),
        # c = rho / (1 + (m - 1) rho)
        t = 1.0 / sd
        s1 = np.bincount(codes, t, n_cl)
        s2 = np.bincount(codes, t * t, n_cl)
        sy1 = np.bincount(codes, t * yi, n_cl)
        sy2 = np.bincount(codes, t * t * yi, n_cl)
        single = nk == 1
        rr = np.where(single, 0.0, rho_arr)
        cc = rr / (1.0 + (nk - 1) * rr)
        sum_w = (s2 - cc * s1 * s1) / (1.0 - rr)
        sum_wy = (sy2 - cc * s1 * sy1) / (1.0 - rr)
        first = np.unique(codes, return_index=True)[1]        # singletons pass through
        y_agg = np.where(single, yi[first], sum_wy / sum_w)
        v_agg = np.where(single, vi[first], 1.0 / sum_w)
    else:
        ssum = np.bincount(codes, sd, n_cl)
        vsum = np.bincount(codes, vi, n_cl)
        y_agg = np.bincount(codes, yi, n_cl) / nk
        v_agg = (vsum + rho_arr * (ssum * ssum - vsum)) / nk ** 2
    prov = {"function": "metaalliance.engine.aggregation.aggregate",
            "metafor_call": 'aggregate(escalc, cluster = cluster, struct = "CS", rho = rho'
                            + (")" if weighted else ", weighted = FALSE)"),
            "k": len(yi), "n_clusters": n_cl, "data_hash": _data_hash(yi, vi, labels),
            "versions": _versions()}
    return AggregateResult(cluster=tuple(uniq), yi=_readonly(y_agg), vi=_readonly(v_agg),
                           k=np.asarray(nk), rho=_readonly(rho_arr), weighted=bool(weighted),
                           provenance=prov)
