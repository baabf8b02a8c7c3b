"""tau^2 estimators of the univariate random-effects model, computed as metafor's ``rma.uni``.

Pure numpy and vectorised: every estimator works on a batch of ``B`` data columns at once
(``Y`` is ``(k, B)``), so that permutation tests, leave-one-out, cumulative analyses and GOSH
fit thousands of models in one call. All quantities are built from ``O(k p^2)`` formulas;
no ``k x k`` matrix is ever formed, so memory is linear in ``k``.

Estimators (metafor's names and formulas, ``metafor:::rma.uni`` version 3.8-1):

====  ==========================================================================================
EE    equal-effects model, tau^2 = 0
DL    DerSimonian-Laird: (Q - (k - p)) / tr(P), P at weights 1/v
HE    Hedges (unweighted method of moments): (RSS_ols - tr(P_ols V)) / (k - p)
HS    Hunter-Schmidt: (Q - k) / sum(1/v)
SJ    Sidik-Jonkman: tau0 * Q(tau0) / (k - p), tau0 = mean((y - mean(y))^2)
ML    maximum likelihood, Fisher scoring with step halving, started at max(0, HE)
REML  restricted maximum likelihood, Fisher scoring with step halving, started at max(0, HE)
EB    empirical Bayes (Morris); fixed point Q(tau^2) = k - p
PM    Paule-Mandel; root of Q(tau^2) = k - p
====  ==========================================================================================

Every estimate is truncated at 0 as metafor does (``tau2.min = 0``). As in metafor, the
outcome is centred (``Ymc``) before tau^2 is estimated; with an intercept in the model this
changes nothing, without one it reproduces metafor's numbers.

Convergence: ``control``. Every estimator takes ``control`` (``options.CONTROLS``):

- ``"metafor"`` (the default, ``options.DEFAULT_CONTROL``) reproduces metafor 3.8's default
  control of ``rma.uni`` step for step, so that results equal a plain ``rma(yi, vi)`` call:
  ML/REML/EB start at ``max(0, HE)``; Fisher scoring (EB: metafor's EB update
  ``adj = (Q k / (k - p) - k) / sum(w)``) with metafor's step halving
  (``while (tau2 + adj < 0) adj <- adj / 2``) stops when ``|change| <= threshold = 1e-5`` and
  fails after ``maxiter = 100`` iterations; metafor's ll0check then sets tau^2 to 0 when
  ``ll(0) - ll(tau2) > eps^0.25`` and ``tau2 > 1e-5``. PM is R's ``uniroot`` (``uniroot``
  module: an exact port of Brent's method as R runs it) on
  ``[0, tau2.max = max(100, 10 mad(yi)^2)]`` with ``tol = eps^0.25``, ``maxiter = 100``, and 0
  when ``Q(0) < k - p``. Both stop ~1e-5 (absolute) short of the optimum, exactly where
  metafor stops. Where metafor itself fails (Fisher scoring does not converge in 100
  iterations: "Fisher scoring algorithm did not converge"; ``Q(tau2.max) > k - p``: "Value
  of 'tau2.max' too low") metafor stops with an error; we compute the column as ``"optimum"``
  does and flag it (``Tau2Fit.safeguarded``; single fits warn and say so in the result).
- ``"optimum"`` iterates to the optimum itself: until the change is below
  ``CONV_TOL * (tau2 + vbar)`` (``vbar`` = harmonic mean of the sampling variances); the
  reference tests compare it with metafor run with
  ``control = list(threshold = 1e-10, tol = 1e-12)``.

EB: metafor's EB iteration ``tau2 += (Q * k / (k - p) - k) / sum(w)`` has the fixed point
``Q(tau2) = k - p`` (truncated at 0), the same equation PM solves; under ``"optimum"`` we solve
it with the same safeguarded Newton root finder as PM, which gives metafor's EB value at the
optimum to full precision; under ``"metafor"`` we run metafor's iteration itself (it stops
elsewhere than PM's uniroot, as in metafor).

The loops of ``"metafor"`` are written once (``mf_scoring``, ``mf_bounded_root`` and their
one-fit versions) and driven by each kernel's step or Q function: the column-wise code
(``_tau2_fit``: permutations, simulated batches), ``Subsets`` (single intercept-only fits,
leave-one-out, cumulative, GOSH) and ``Design`` (single meta-regressions). Each kernel's
arithmetic differs from metafor's k x k matrix algebra only by rounding, so results agree with
metafor's to ~1e-14 relative; a stopping decision could only differ if a step's change fell
within rounding error of 1e-5 (never seen).

Why not pymare or statsmodels: pymare offers DL, HE and ML/REML, the latter by a bounded
scalar minimisation whose stopping tolerance, not the likelihood, sets the last digits, and has
no HS, SJ, EB, PM or Q-profile intervals; statsmodels' ``combine_effects`` pools without
moderators with DL/PM only. Neither vectorises over thousands of refits with masks.

Non-convergence under ``"optimum"`` (ML/REML only). Plain Fisher scoring (metafor's
algorithm, from metafor's start) can oscillate and diverge when observed and expected
information differ a lot; metafor then stops with "Fisher scoring algorithm did not converge".
We then restart with safeguarded Fisher scoring on a bracket of the score (bisection when a
step leaves the bracket), which always converges to the likelihood maximum;
``Tau2Fit.safeguarded`` flags those columns. Only if that too fails does the column fall back
to DL (``Tau2Fit.converged = False``; single fits warn with ``MetaAllianceWarning``, see
``models``).

Where the code lives (this module is the entry point, ``tau2_fit`` / ``tau2_batch``, and
re-exports every name below, so ``estimators.X`` keeps working):

- ``control``  convergence constants, ``Tau2Fit``, metafor's default-control loops
- ``wls``      batch layout, the weighted least squares kernel, P-matrix traces, Q, BLAS threads
- ``tau2``     the estimators on columns (any design), log-likelihood, SE of tau^2
- ``subsets``  intercept-only fits to subsets of one dataset (leave-one-out, GOSH, ...)
- ``design``   single meta-regressions at scalar tau^2
"""

from __future__ import annotations

import numpy as np

from metaalliance.options import DEFAULT_CONTROL, METHODS, check_option

# --- the modules this one was split into; their names are re-exported here (facade) ---
from metaalliance.engine.control import (  # noqa: F401
    CONV_TOL, CONV_TOL_ACCEPT, EVTOL, ITERATIVE, LL0_TOL, MAD_CONSTANT, MAXITER, MF_CI_MAXITER,
    MF_MAXITER, MF_TAU2_MAX, MF_THRESHOLD, MF_TOL, Tau2Fit, _halve, _r_median_sorted,
    check_control, mf_bounded_root, mf_bounded_root1, mf_scoring, mf_scoring1, r_mad,
    rma_tau2_max)
from metaalliance.engine.wls import (  # noqa: F401
    FEW_COLUMNS, WLS, _cross, _cross_f, _trAC, _trmm, as_batch, centered,
    check_design, design_products, is_intercept_only, q_stat, single_threaded_blas, trace_P,
    trace_PP, trace_PPV, trace_PV, trace_PVPV, vbar, wls)
from metaalliance.engine.tau2 import (  # noqa: F401
    _eb_step, _fisher_scoring, _fs_step, _halved_step, _ll0_reset, _raw_closed_form, _score,
    _score_root, _tau2_fit, _tau2_fit_metafor, loglik, q_root, se_tau2, sj_tau0)
from metaalliance.engine.subsets import (  # noqa: F401
    SUBSET_BLOCK_CELLS, SUBSET_BLOCK_CELLS_ITERATIVE, Subsets, _as_subsets, _subset_closed_form,
    _subset_eb_adj, _subset_fisher, _subset_fisher_1, _subset_fs_adj, _subset_ll0_reset,
    _subset_q_root_1, _subset_tau2_blocks, _subset_tau2_metafor, shared_column, subset_q_root,
    subset_tau2)
from metaalliance.engine.design import (  # noqa: F401
    Design, _design_eb_step, _design_fs_step, _design_tau2_metafor, design_fisher, design_q_root,
    design_tau2)


def tau2_fit(Y, V, method="REML", X=None, mask=None, control=DEFAULT_CONTROL) -> Tau2Fit:
    """tau^2 for every column of Y with convergence information (see ``tau2_batch``)."""
    check_option("method", method, METHODS)
    check_control(control)
    S = _as_subsets(Y, V, X, mask)
    if S is not None:
        with single_threaded_blas():
            return _subset_tau2_blocks(S, method, control)
    if mask is not None and isinstance(Y, np.ndarray) and Y.ndim == 1:
        Y = np.broadcast_to(Y[:, None], np.shape(mask))
    Y, V, X, M, _ = as_batch(Y, V, X, mask)
    return _tau2_fit(Y, V, X, M, method, control)


def tau2_batch(Y, V, method="REML", X=None, mask=None, control=DEFAULT_CONTROL):
    """tau^2 for every column of ``Y``; vectorised, memory linear in k.

    Parameters
    ----------
    Y : (k, B) array (or (k,)) of effect sizes, one model per column; with a 2-d ``mask``,
        a (k,) vector means the same data in every column (subsets of one dataset: the
        ``Subsets`` kernel, O(k B) memory for the mask only).
    V : (k,) or (k, B) sampling variances.
    method : one of ``options.METHODS``.
    X : (k, p) design matrix shared by all columns (None: intercept only).
    mask : optional (k, B) bool, rows taking part in each column's fit (leave-one-out,
        cumulative, GOSH subsets).
    control : "metafor" (default: metafor's default control, step for step) or "optimum"
        (iterate to the optimum); see the module docstring.

    Returns
    -------
    (B,) array (a float for 1-d ``Y``). Columns whose Fisher scoring does not converge get
    the DL value, as single fits do; use ``tau2_fit`` to see which.

    Examples
    --------
    >>> import numpy as np
    >>> yi = np.array([0.1, 0.3, 0.35, 0.6]); vi = np.array([0.01, 0.02, 0.015, 0.03])
    >>> round(float(tau2_batch(yi, vi, "DL")), 6)
    0.022437
    """
    check_option("method", method, METHODS)
    check_control(control)
    if mask is not None and np.ndim(mask) == 2:
        return tau2_fit(Y, V, method, X, mask, control).tau2
    Y, V, X, M, squeeze = as_batch(Y, V, X, mask)
    fit = _tau2_fit(Y, V, X, M, method, control)
    return float(fit.tau2[0]) if squeeze else fit.tau2


