"""The random-effects engine, in agreement with R's metafor.

``estimators`` (tau^2 estimators, pure numpy: the entry point over ``control``, ``wls``,
``tau2``, ``subsets`` and ``design``), ``distributions`` (normal, t, chi^2, F through
scipy.special), ``uniroot`` (R's root finder),
``inference`` (tests, intervals, heterogeneity), ``models`` (random_effects, meta_regression,
subgroups, permutation tests), ``multilevel`` (three-level models), ``cluster_robust``
(cluster-robust inference), ``aggregation`` (one composite per cluster), ``clusters`` (their
shared input checks) and ``results`` (frozen result records). Computation only: no file is read or written here.
"""
