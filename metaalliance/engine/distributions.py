"""Distribution functions (normal, t, chi^2, F) through ``scipy.special``, and exact
closed forms for the few a single fit needs, so that ``metaalliance pool`` does not import
scipy.special.

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

``scipy.special`` is imported on first use (it costs ~0.2 s of start-up, most of it
``scipy._lib.array_api_compat`` importing numpy's f2py and testing). A single fit (scalars and
arrays of at most ``SMALL`` values) gets the normal and the integer-df chi^2 distributions from
``engine/closed_forms.py`` instead: the normal through ``math.erf``/``math.erfc`` (cephes'
``ndtr`` formula) and ``statistics.NormalDist().inv_cdf`` (Wichura's AS241, R's ``qnorm``),
chi^2 with integer df from its finite Poisson/erfc sums and quantiles found on them; each
agrees with scipy.special to 1e-13 relative (tests/test_distributions.py) and falls back to it
outside the range where that is shown (non-integer or df > 200, x/2 > 700, extreme
probabilities). Batched kernels (leave-one-out, GOSH, permutations: larger arrays) use the
scipy.special ufuncs, so a batched and a single fit may differ in the last bits.

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

from metaalliance.engine import closed_forms as cf

#: arrays with at most this many values use the closed forms (a single fit); larger ones the
#: scipy.special ufuncs (a loop in Python would be slow there)
SMALL = 32


def _special():
    import scipy.special as special  # on first use (~0.2 s of start-up)

    return special


def _f(x):
    return np.asarray(x, dtype=float)


def _small(fn, scipy_fn, *args):
    """``fn`` (a scalar closed form returning None outside its exact range) element-wise when
    the broadcast arguments hold at most SMALL values, else (or when ``fn`` declines any
    value) ``scipy_fn``; a numpy scalar or array as scipy.special returns."""
    arrs = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in args))
    if arrs[0].size <= SMALL:
        out = [fn(*vals) for vals in zip(*(a.ravel().tolist() for a in arrs))]
        if None not in out:
            res = np.array(out, dtype=float).reshape(arrs[0].shape)
            return res[()] if res.ndim == 0 else res
    return scipy_fn(*args)


# --- normal --------------------------------------------------------------------------------

def norm_cdf(x):
    return _small(cf.ndtr, lambda x: _special().ndtr(_f(x)), x)


def norm_sf(x):
    return _small(lambda v: cf.ndtr(-v), lambda x: _special().ndtr(-_f(x)), x)


def norm_ppf(q):
    return _small(cf.ndtri, lambda q: _special().ndtri(q), q)


def norm_isf(q):
    return _small(lambda v: -cf.ndtri(v), lambda q: -_special().ndtri(q), q)


# --- Student t -----------------------------------------------------------------------------

def t_cdf(x, df):
    return _special().stdtr(df, _f(x))


def t_sf(x, df):
    return _special().stdtr(df, -_f(x))


def t_ppf(q, df):
    return _special().stdtrit(df, q)


def t_isf(q, df):
    return -_special().stdtrit(df, q)


# --- chi^2 ---------------------------------------------------------------------------------

def chi2_cdf(x, df):
    return _small(cf.chi2_cdf, lambda x, df: _special().chdtr(df, x), x, df)


def chi2_sf(x, df):
    return _small(cf.chi2_sf, lambda x, df: _special().chdtrc(df, x), x, df)


def chi2_ppf(q, df):
    return _small(cf.chi2_ppf, lambda q, df: 2.0 * _special().gammaincinv(_f(df) / 2.0, q),
                  q, df)


def chi2_isf(q, df):
    return _small(cf.chi2_isf, lambda q, df: _special().chdtri(df, q), q, df)


# --- F -------------------------------------------------------------------------------------

def f_cdf(x, dfn, dfd):
    return _special().fdtr(dfn, dfd, x)


def f_sf(x, dfn, dfd):
    return _special().fdtrc(dfn, dfd, x)


def f_ppf(q, dfn, dfd):
    return _special().fdtri(dfn, dfd, q)


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
