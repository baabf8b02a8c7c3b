"""Hand the data to other meta-analysis software: PyMARE (``to_pymare``).

PyMARE (https://pymare.readthedocs.io) is a Python meta-regression package with DL, Hedges
and ML/REML estimators, combination tests and a Stan back end. ``to_pymare`` returns the
``pymare.Dataset`` of our effects, so any PyMARE estimator runs on exactly the numbers we
pool (``tests/test_interop.py`` checks that its DL, HE, ML and REML estimates equal ours).

PyMARE is imported here only, on the first call: it takes seconds to import (it loads
scipy.stats, pandas and wrapt), which no command should pay at start-up.

Example (PyMARE's REML on our numbers)::

    from metaalliance import random_effects, to_pymare
    from pymare.estimators import VarianceBasedLikelihoodEstimator

    fit = random_effects(yi, vi)
    est = VarianceBasedLikelihoodEstimator("REML").fit_dataset(to_pymare(fit))
    est.summary().tau2          # fit.tau2 within PyMARE's search tolerance
"""

from __future__ import annotations

import numpy as np

from metaalliance.errors import DataError


def _column(values, name: str) -> np.ndarray:
    try:
        out = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be numeric") from None
    if out.ndim != 1:
        raise DataError(f"{name} must be one-dimensional")
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        where = ", ".join(str(i + 1) for i in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise DataError(f"{name} has missing or non-finite values at position(s) {where}")
    return out


def to_pymare(yi, vi=None, X=None, X_names=None, add_intercept: bool = True):
    """A ``pymare.Dataset`` of effect sizes ``yi`` with sampling variances ``vi``.

    Parameters
    ----------
    yi : effect sizes (k,), or any object with ``yi`` and ``vi`` attributes: a fitted model
        (``random_effects(...)``, ``meta_regression(...)``, whose design then becomes ``X``)
        or the command line's selection; then ``vi`` must be omitted.
    vi : sampling variances (k,), all > 0.
    X : optional moderators (k,) or (k, m), without the intercept column (PyMARE adds it
        when ``add_intercept``, its default); a pandas DataFrame gives its column names.
    X_names : names of the columns of ``X`` (default: the DataFrame's columns, else x1..xm).

    Returns
    -------
    ``pymare.Dataset`` with ``y`` = yi, ``v`` = vi and ``X`` = [1, moderators].
    Fit it with, e.g., ``pymare.estimators.VarianceBasedLikelihoodEstimator("REML")
    .fit_dataset(ds)``.

    Raises DataError on lengths that differ, non-finite values or vi <= 0.
    """
    if vi is None:
        if not (hasattr(yi, "yi") and hasattr(yi, "vi")):
            raise DataError("to_pymare: give yi and vi, or a fitted model or selection "
                            "that holds them")
        fit = yi
        yi, vi = fit.yi, fit.vi
        names = list(getattr(fit, "names", None) or [])
        if X is None and getattr(fit, "X", None) is not None and names:
            # a meta-regression: its design without the intercept column (PyMARE adds one)
            full = np.asarray(fit.X, dtype=float)
            keep = [j for j, nm in enumerate(names) if nm != "intrcpt"]
            add_intercept = len(keep) < len(names)
            if keep:
                X, X_names = full[:, keep], [names[j] for j in keep]
    y = _column(yi, "yi")
    v = _column(vi, "vi")
    if y.size != v.size:
        raise DataError(f"yi has {y.size} values but vi has {v.size}")
    if y.size == 0:
        raise DataError("no studies: yi is empty")
    bad = np.flatnonzero(v <= 0)
    if bad.size:
        raise DataError("vi must be > 0; not so at position(s) "
                        + ", ".join(str(i + 1) for i in bad[:5]))
    x = None
    if X is not None:
        if X_names is None and hasattr(X, "columns"):
            X_names = [str(c) for c in X.columns]
        try:
            x = np.asarray(X, dtype=float)
        except (TypeError, ValueError):
            raise DataError("X must be numeric (code categorical moderators as dummy "
                            "columns first)") from None
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[0] != y.size:
            raise DataError(f"X has {x.shape[0] if x.ndim else 0} rows but yi has {y.size}")
        if not np.all(np.isfinite(x)):
            raise DataError("X has missing or non-finite values")
        if X_names is None:
            X_names = [f"x{j + 1}" for j in range(x.shape[1])]
        if len(X_names) != x.shape[1]:
            raise DataError(f"X_names has {len(X_names)} names but X has {x.shape[1]} columns")
    import pymare

    return pymare.Dataset(y=y, v=v, X=x, X_names=list(X_names) if X_names else None,
                          add_intercept=add_intercept)
