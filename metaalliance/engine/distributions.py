"""Distribution functions (normal, t, chi^2, F) through ``scipy.special``.

These are the very ufuncs that ``scipy.stats``' ``norm``, ``t``, ``chi2`` and ``f`` call
(checked against scipy 1.17's ``_continuous_distns``: ``norm._sf(x) = ndtr(-x)``,
``norm._isf(q) = -ndtri(q)``, ``t._cdf = stdtr(df, x)``, ``t._sf = stdtr(df, -x)``,
``t._ppf = stdtrit(df, q)``, ``chi2._cdf = chdtr``, ``chi2._sf = chdtrc``,
``chi2._isf = chdtri``, ``chi2._ppf = 2 gammaincinv(df/2, p)``, ``f._cdf = fdtr``,
``f._sf = fdtrc``, ``f._ppf = fdtri``), so the numbers are identical, for two reasons to
avoid ``scipy.stats``:

- start-up: ``import scipy.stats`` costs about 0.7 s of a command's whole-process time
  (it builds ~100 distribution objects); ``scipy.special`` is about a fifth of that;
- speed: ``scipy.stats`` checks arguments for ~40 us per call, which dominated a single fit.

Arguments must be in range (df > 0, probabilities in [0, 1]); the callers guarantee it by
construction. ``norm``, ``t``, ``chi2`` and ``f`` are namespaces with the ``scipy.stats``
method names (``cdf``, ``sf``, ``ppf``, ``isf``) for code written against ``scipy.stats``:
``from metaalliance.engine import distributions as stats`` then ``stats.t.sf(x, df)``.

>>> round(float(norm.isf(0.025)), 12)
1.95996398454
>>> float(t.sf(0.0, 7))
0.5
"""

from __future__ import annotations

import numpy as np
import scipy.special as special  # (this form shows up in python -X importtime)


def _f(x):
    return np.asarray(x, dtype=float)


# --- normal --------------------------------------------------------------------------------

def norm_cdf(x):
    return special.ndtr(_f(x))


def norm_sf(x):
    return special.ndtr(-_f(x))


def norm_ppf(q):
    return special.ndtri(q)


def norm_isf(q):
    return -special.ndtri(q)


# --- Student t -----------------------------------------------------------------------------

def t_cdf(x, df):
    return special.stdtr(df, _f(x))


def t_sf(x, df):
    return special.stdtr(df, -_f(x))


def t_ppf(q, df):
    return special.stdtrit(df, q)


def t_isf(q, df):
    return -special.stdtrit(df, q)


# --- chi^2 ---------------------------------------------------------------------------------

def chi2_cdf(x, df):
    return special.chdtr(df, x)


def chi2_sf(x, df):
    return special.chdtrc(df, x)


def chi2_ppf(q, df):
    return 2.0 * special.gammaincinv(_f(df) / 2.0, q)


def chi2_isf(q, df):
    return special.chdtri(df, q)


# --- F -------------------------------------------------------------------------------------

def f_cdf(x, dfn, dfd):
    return special.fdtr(dfn, dfd, x)


def f_sf(x, dfn, dfd):
    return special.fdtrc(dfn, dfd, x)


def f_ppf(q, dfn, dfd):
    return special.fdtri(dfn, dfd, q)


class _Namespace:
    """``scipy.stats``-style access: ``norm.sf(x)``, ``t.isf(q, df)``, ``chi2.cdf(x, df)``."""

    def __init__(self, name, **methods):
        self._name = name
        for key, fn in methods.items():
            setattr(self, key, staticmethod(fn).__func__)

    def __repr__(self):
        return f"<distribution {self._name} via scipy.special>"


norm = _Namespace("norm", cdf=norm_cdf, sf=norm_sf, ppf=norm_ppf, isf=norm_isf)
t = _Namespace("t", cdf=t_cdf, sf=t_sf, ppf=t_ppf, isf=t_isf)
chi2 = _Namespace("chi2", cdf=chi2_cdf, sf=chi2_sf, ppf=chi2_ppf, isf=chi2_isf)
f = _Namespace("f", cdf=f_cdf, sf=f_sf, ppf=f_ppf)
