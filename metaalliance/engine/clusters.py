"""Checks and encodings of clustered data, shared by the dependent-effects models.

The three-level model (``multilevel``), cluster-robust inference (``robust``), aggregation
(``aggregate``), the CHE working model (``che``) and robumeta's RVE (``rve``) all take effect
sizes ``yi``, sampling variances ``vi`` and one cluster label per finding. This module checks
them once, the same way with the same messages (``_validate``), codes the clusters in order of
first appearance as metafor does (``_codes``), checks a design matrix (``_design``) and hashes
the data for provenance (``_data_hash``). Computation only: no I/O.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from metaalliance.errors import DataError, ModelError


def _is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return True
    return type(value).__name__ in ("NAType", "NaTType")


def _numbers(values, name: str, who: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"{who}: {name} must be numbers") from None
    if arr.ndim != 1:
        raise DataError(f"{who}: {name} must be one-dimensional (got shape {arr.shape})")
    return arr


def _validate(yi, vi, cluster, who: str, min_k: int = 2):
    """Check the inputs; return yi, vi (float arrays), cluster labels (list) and codes."""
    yi = _numbers(yi, "yi", who)
    vi = _numbers(vi, "vi", who)
    if cluster is None:
        raise DataError(f"{who}: cluster is required (one label per finding)")
    labels = list(np.asarray(cluster, dtype=object).ravel()) if not isinstance(cluster, list) \
        else list(cluster)
    if not (len(yi) == len(vi) == len(labels)):
        raise DataError(f"{who}: yi, vi and cluster must have the same length "
                        f"(got {len(yi)}, {len(vi)} and {len(labels)})")
    bad = np.flatnonzero(~np.isfinite(yi))
    if bad.size:
        raise DataError(f"{who}: yi must be finite numbers (row {bad[0] + 1} is {yi[bad[0]]})")
    bad = np.flatnonzero(~(np.isfinite(vi) & (vi > 0)))
    if bad.size:
        raise DataError(f"{who}: vi must be finite and > 0 (row {bad[0] + 1} is {vi[bad[0]]})")
    from metaalliance.options import VI_MAX, VI_MIN, YI_MAX

    bad = np.flatnonzero(np.abs(yi) > YI_MAX)
    if bad.size:
        raise DataError(f"{who}: yi must lie within +-{YI_MAX:g} (row {bad[0] + 1} is "
                        f"{yi[bad[0]]:g})")
    bad = np.flatnonzero((vi < VI_MIN) | (vi > VI_MAX))
    if bad.size:
        raise DataError(f"{who}: vi must lie between {VI_MIN:g} and {VI_MAX:g} (row "
                        f"{bad[0] + 1} is {vi[bad[0]]:g})")
    for i, c in enumerate(labels):
        if _is_missing(c):
            raise DataError(f"{who}: cluster has a missing value (row {i + 1})")
    if len(yi) < min_k:
        raise DataError(f"{who}: needs at least {min_k} findings (got {len(yi)})")
    codes, uniq = _codes(labels)
    return yi, vi, labels, codes, uniq


def _codes(labels):
    """Integer codes in order of first appearance (metafor's ``unique(cluster)`` order)."""
    index: dict = {}
    codes = np.empty(len(labels), dtype=np.intp)
    for i, c in enumerate(labels):
        codes[i] = index.setdefault(c, len(index))
    return codes, list(index)


def _design(X, k: int, names, who: str):
    if X is None:
        return np.ones((k, 1)), ("intrcpt",), True
    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] != k:
        raise DataError(f"{who}: X must have one row per finding ({k} rows, got shape {X.shape})")
    if not np.all(np.isfinite(X)):
        raise DataError(f"{who}: X must be finite numbers")
    p = X.shape[1]
    if names is None:
        names = tuple(f"X{j + 1}" for j in range(p))
    names = tuple(str(n) for n in names)
    if len(names) != p:
        raise DataError(f"{who}: {len(names)} coefficient names for {p} columns of X")
    if np.linalg.matrix_rank(X) < p:
        raise ModelError(f"{who}: the design matrix X is rank deficient "
                         f"(rank {np.linalg.matrix_rank(X)} < {p} columns)")
    if k <= p:
        raise ModelError(f"{who}: needs more findings ({k}) than coefficients ({p})")
    intercept = bool(np.all(X[:, 0] == 1.0))
    return X, names, intercept


def _data_hash(yi, vi, labels) -> str:
    """sha256 of yi and vi (little-endian float64) and the cluster labels (str, 0x1f-joined)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(yi, dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(vi, dtype="<f8").tobytes())
    h.update("\x1f".join(map(str, labels)).encode("utf-8"))
    return h.hexdigest()
