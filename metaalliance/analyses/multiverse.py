"""The multiverse of alliance-outcome analyses: every defensible specification at once.

Voracek, Kossmeier, Tran et al. (2019, "Which data to meta-analyze, and how? A
specification-curve and multiverse-analysis approach to meta-analysis", Zeitschrift fuer
Psychologie 227(1), 64-82) cross the "which data" choices with the "how to pool" choices and show
every resulting estimate. This module enumerates those specifications, fits them, summarises
them and tests the curve with their parametric bootstrap under the null.

Factors
-------
"Which" factors are columns of the data (tags of the findings). Each takes the value "all"
(not subset) or one of its levels. Levels with fewer than ``min_k`` findings in the data, and
levels named in ``exclude_levels`` ("unspecified" by default: not a defensible subset), are
dropped and listed in the summary. A combination is kept when its subset has at least
``min_k`` findings and ``min_samples`` independent samples. Different combinations that select
the very same findings are one subset: only the first (the one with most "all") is kept and
the number dropped is reported (``dedupe``; Voracek et al. count identical subsets once).

``DEFAULT_WHICH``: population, diagnosis, setting, instrument_family, rater, timing,
outcome_domain, effect_type, conversion, stat_type (how the number was read). Columns a
dataset lacks are skipped (and listed). ``instrument_family`` is derived from ``instrument``
when the data has no such column: every WAI version is "WAI", HAq/HAq-II/HA-counting "HA", any
other instrument its own family.

"How" factors, crossed with every subset:

=============  =============================================================================
model          univariate: ``models.random_effects`` (= metafor ``rma``), one row per finding;
               three_level: ``multilevel.three_level`` (findings within samples,
               ``rma.mv``); composite: ``aggregation.aggregate`` per sample (rho =
               ``composite_rho``), then ``random_effects``; che: the correlated-and-
               hierarchical-effects model of ``engine.che`` (when that module exists)
method         a tau^2 estimator of ``options.METHODS`` (univariate, composite); three-level
               models take REML and ML only (rma.mv); che is REML
test           z or knha (univariate, composite); three-level: z, and t (rma.mv's
               test = "t") when knha is chosen; che: "cr2" (its cluster-robust t test)
bias           none; trimfill (``bias.trim_and_fill`` of the fit: metafor's trimfill());
               pet_peese (``bias.pet_peese``: a WLS regression, so it does not depend on
               the tau^2 estimator or test: its rows carry method "WLS", test "t");
               3psm (``analyses.selection.selection_model``, a three-parameter selection
               model fitted by ML: method "ML", test "z"; when that module exists).
               Bias adjustments apply to the univariate and composite models.
=============  =============================================================================

A level whose code is not available (che, 3psm before their modules land) is not silently
dropped: the summary lists it under ``unavailable``.

Speed: every univariate (and composite) specification of one (method, test) is one call of
``models.random_effects_batch`` over the masks of all subsets; the other models are fitted per
subset. ``fit_specifications`` fans the work out with joblib (loky processes, or a Dask
cluster through joblib's dask backend); ``bootstrap`` does the same over replicates.

Computation only: no printing, no files.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from metaalliance.analyses import multiverse_batch as mb
from metaalliance.analyses.multiverse_batch import FIELDS, run_task
from metaalliance.errors import DataError, MetaAllianceError, OptionError
from metaalliance.options import DEFAULT_CONTROL, METHODS, TESTS, check_option

__all__ = ["DEFAULT_WHICH", "MODELS", "BIASES", "MultiverseConfig", "Multiverse",
           "enumerate_specifications", "fit_specifications", "summarise", "bootstrap",
           "variance_decomposition", "available_levels", "load_config", "run"]

DEFAULT_WHICH = ("population", "diagnosis", "setting", "instrument_family", "rater", "timing",
                 "outcome_domain", "effect_type", "conversion", "stat_type")
MODELS = ("univariate", "three_level", "composite", "che")
BIASES = ("none", "trimfill", "pet_peese", "3psm")
DEFAULT_METHODS = ("REML", "DL", "PM")
DEFAULT_MODELS = MODELS
DEFAULT_TESTS = ("z", "knha")
DEFAULT_BIASES = BIASES
THREE_LEVEL_METHODS = ("REML", "ML")
#: rho of the composite model (aggregation.DEFAULT_RHO's reasoning) and of the CHE model
#: (0.6: the value i13's che() defaults to, as in Pustejovsky & Tipton 2022)
COMPOSITE_RHO = 0.5
CHE_RHO = mb.CHE_RHO
HOW = ("method", "model", "test", "bias")
#: the bootstrap's specifications are fitted in chunks of this many replicates per task
BOOT_CHUNK = 10


def _instrument_family(value) -> str:
    s = str(value)
    if s.startswith("WAI"):
        return "WAI"
    if s in ("HAq", "HAq-II", "HA-counting"):
        return "HA"
    return s


# ------------------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class MultiverseConfig:
    """What to cross. Defaults as documented in the module docstring."""

    which: tuple = DEFAULT_WHICH
    methods: tuple = DEFAULT_METHODS
    models: tuple = DEFAULT_MODELS
    tests: tuple = DEFAULT_TESTS
    bias: tuple = DEFAULT_BIASES
    min_k: int = 5
    min_samples: int = 3
    exclude_levels: tuple = ("unspecified",)
    dedupe: bool = True
    level: float = 95.0
    composite_rho: float = COMPOSITE_RHO
    max_specifications: int = 200_000
    control: str = DEFAULT_CONTROL

    def check(self) -> "MultiverseConfig":
        for name, values, allowed in (("methods", self.methods, METHODS),
                                      ("models", self.models, MODELS),
                                      ("tests", self.tests, TESTS),
                                      ("bias", self.bias, BIASES)):
            if not values:
                raise OptionError(f"multiverse {name}: choose at least one of "
                                  f"{', '.join(allowed)}")
            for v in values:
                check_option(f"multiverse {name}", v, allowed)
        if int(self.min_k) < 3:
            raise OptionError(f"multiverse min_k: must be >= 3 (got {self.min_k}); "
                              "trim-and-fill and PET-PEESE need 3 findings")
        if int(self.min_samples) < 1:
            raise OptionError(f"multiverse min_samples: must be >= 1 (got {self.min_samples})")
        if not -1 < float(self.composite_rho) < 1:
            raise OptionError("multiverse composite_rho: must lie strictly between -1 and 1")
        if int(self.max_specifications) < 1:
            raise OptionError("multiverse max_specifications: must be >= 1")
        return self


_CONFIG_KEYS = {f for f in MultiverseConfig.__dataclass_fields__}


def load_config(path) -> MultiverseConfig:
    """Read ``multiverse.toml`` (keys at top level or in a [multiverse] table)."""
    import tomllib
    from pathlib import Path

    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OptionError(f"{path}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise OptionError(f"{path}: not valid TOML ({exc})") from None
    table = raw.get("multiverse", raw)
    if not isinstance(table, dict):
        raise OptionError(f"{path}: [multiverse] must be a table")
    kw = {}
    for key, value in table.items():
        if key not in _CONFIG_KEYS:
            raise OptionError(f"{path}: unknown key {key!r} (known: "
                              f"{', '.join(sorted(_CONFIG_KEYS))})")
        if key in ("which", "methods", "models", "tests", "bias", "exclude_levels"):
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise OptionError(f"{path}: {key} must be a list of strings")
            value = tuple(value)
        elif key in ("min_k", "min_samples", "max_specifications"):
            if not isinstance(value, int) or isinstance(value, bool):
                raise OptionError(f"{path}: {key} must be an integer")
        elif key in ("level", "composite_rho"):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise OptionError(f"{path}: {key} must be a number")
        elif key == "dedupe":
            if not isinstance(value, bool):
                raise OptionError(f"{path}: dedupe must be true or false")
        kw[key] = value
    try:
        return MultiverseConfig(**kw).check()
    except OptionError as exc:
        raise OptionError(f"{path}: {exc}") from None


def available_levels() -> dict:
    """Model and bias levels whose code is missing: {factor: {level: reason}}."""
    out = {}
    try:
        from metaalliance.engine import che as _che  # noqa: F401
        if not hasattr(_che, "che"):
            raise ImportError
    except ImportError:
        out.setdefault("model", {})["che"] = "needs metaalliance.engine.che (not installed)"
    try:
        from metaalliance.analyses import selection as _sel  # noqa: F401
        if not hasattr(_sel, "selection_model"):
            raise ImportError
    except ImportError:
        out.setdefault("bias", {})["3psm"] = ("needs metaalliance.analyses.selection "
                                              "(not installed)")
    return out


# ------------------------------------------------------------------------------ enumeration


@dataclass
class Multiverse:
    """The enumerated specifications and, after ``fit_specifications``, their numbers.

    ``subsets`` (n_subsets, k) bool; ``which`` one dict per subset; ``specs`` a DataFrame with
    one row per specification: the factor values and ``subset`` (row of ``subsets``).
    """

    yi: np.ndarray
    vi: np.ndarray
    cluster: np.ndarray           # integer codes of the independent samples
    measure: str
    factors: tuple                # the which factors used
    subsets: np.ndarray
    which: list
    specs: object                 # pandas DataFrame
    config: MultiverseConfig
    dropped_levels: dict = field(default_factory=dict)
    missing_factors: tuple = ()
    duplicates: int = 0
    unavailable: dict = field(default_factory=dict)
    results: object = None        # DataFrame of numbers (fit_specifications)
    failed: list = field(default_factory=list)
    failed_rows: tuple = ()
    warnings: dict = field(default_factory=dict)


def _how_combinations(cfg: MultiverseConfig, unavailable: dict, has_cluster: bool):
    """(model, method, test, bias) tuples, in a fixed order."""
    out = []
    skip_models = set(unavailable.get("model", {}))
    skip_bias = set(unavailable.get("bias", {}))
    if not has_cluster:
        skip_models |= {"three_level", "composite", "che"}
    for model in cfg.models:
        if model in skip_models:
            continue
        if model in ("univariate", "composite"):
            for bias in cfg.bias:
                if bias in skip_bias:
                    continue
                if bias == "pet_peese":
                    out.append((model, "WLS", "t", bias))
                elif bias == "3psm":
                    out.append((model, "ML", "z", bias))
                else:
                    out.extend((model, m, t, bias) for m in cfg.methods for t in cfg.tests)
        elif model == "three_level":
            tests = ["z"] + (["t"] if "knha" in cfg.tests else [])
            out.extend((model, m, t, "none") for m in cfg.methods if m in THREE_LEVEL_METHODS
                       for t in tests)
        elif model == "che":
            out.append((model, "REML", "cr2", "none"))
    return out


def enumerate_specifications(frame, yi, vi, cluster=None, config: MultiverseConfig | None = None,
                             measure: str = "ZCOR") -> Multiverse:
    """Every (which x how) specification of ``frame`` (one row per finding, aligned with
    ``yi``/``vi``). ``cluster``: the independent sample of each finding (None: each finding
    its own sample; then only the univariate model is possible)."""
    import pandas as pd

    cfg = (config or MultiverseConfig()).check()
    y = np.asarray(yi, dtype=float)
    v = np.asarray(vi, dtype=float)
    k = y.size
    if k == 0:
        raise DataError("multiverse: no findings")
    df = frame.reset_index(drop=True)
    if len(df) != k:
        raise DataError(f"multiverse: {len(df)} rows but {k} effect sizes")
    has_cluster = cluster is not None
    if has_cluster:
        cl = pd.Series(np.asarray(cluster, dtype=object)).astype(str)
        codes = pd.factorize(cl)[0]
    else:
        codes = np.arange(k)
    if "instrument_family" in cfg.which and "instrument_family" not in df.columns \
            and "instrument" in df.columns:
        df = df.assign(instrument_family=df["instrument"].map(
            lambda s: None if pd.isna(s) else _instrument_family(s)))
    factors, missing = [], []
    for f in cfg.which:
        (factors if f in df.columns else missing).append(f)
    dropped: dict = {}
    levels = {}
    for f in factors:
        col = df[f].astype(object).where(df[f].notna(), None)
        counts = col.dropna().astype(str).value_counts()
        keep = []
        for lev, n in sorted(counts.items()):
            if lev in cfg.exclude_levels:
                dropped.setdefault(f, {})[lev] = f"excluded ({int(n)} findings)"
            elif n < cfg.min_k:
                dropped.setdefault(f, {})[lev] = f"{int(n)} finding(s) < min_k {cfg.min_k}"
            else:
                keep.append(lev)
        levels[f] = keep
    colvals = {f: df[f].astype(object).where(df[f].notna(), None).map(
        lambda x: None if x is None else str(x)).to_numpy() for f in factors}
    level_masks = {f: {lev: colvals[f] == lev for lev in levels[f]} for f in factors}

    def enough(mask):
        n = int(mask.sum())
        if n < cfg.min_k:
            return False
        return np.unique(codes[mask]).size >= cfg.min_samples

    subsets, which = [], []
    seen = {}
    duplicates = 0
    full = np.ones(k, dtype=bool)
    if not enough(full):
        raise DataError(f"multiverse: the data have {k} finding(s) in "
                        f"{np.unique(codes).size} sample(s); min_k = {cfg.min_k} findings and "
                        f"min_samples = {cfg.min_samples} samples are needed")
    limit = int(cfg.max_specifications)

    def rec(i, mask, choice):
        nonlocal duplicates
        if i == len(factors):
            key = np.packbits(mask).tobytes()
            if key in seen:
                duplicates += 1
                if not cfg.dedupe:
                    subsets.append(mask)
                    which.append(dict(choice))
                return
            seen[key] = len(subsets)
            subsets.append(mask)
            which.append(dict(choice))
            if len(subsets) > limit:
                raise OptionError(f"multiverse: more than {limit} data subsets; choose fewer "
                                  "factors or raise max_specifications in multiverse.toml")
            return
        f = factors[i]
        choice[f] = "all"
        rec(i + 1, mask, choice)
        for lev in levels[f]:
            sub = mask & level_masks[f][lev]
            if enough(sub):
                choice[f] = lev
                rec(i + 1, sub, choice)
        choice[f] = "all"

    rec(0, full, {})
    unavailable = available_levels()
    unavailable = {fac: {lev: why for lev, why in d.items()
                         if lev in (cfg.models if fac == "model" else cfg.bias)}
                   for fac, d in unavailable.items()}
    unavailable = {fac: d for fac, d in unavailable.items() if d}
    if not has_cluster:
        for mdl in cfg.models:
            if mdl in ("three_level", "composite", "che"):
                unavailable.setdefault("model", {})[mdl] = ("needs a sample (cluster) column")
    how = _how_combinations(cfg, unavailable, has_cluster)
    if not how:
        raise OptionError("multiverse: no model/bias combination is available; see the "
                          "unavailable levels")
    n_spec = len(subsets) * len(how)
    if n_spec > limit:
        raise OptionError(f"multiverse: {n_spec} specifications exceed max_specifications = "
                          f"{limit}; choose fewer factors or methods, or raise the limit")
    rows = []
    for s, ch in enumerate(which):
        for model, method, test, bias in how:
            rows.append({**ch, "method": method, "model": model, "test": test, "bias": bias,
                         "subset": s})
    specs = pd.DataFrame(rows, columns=list(factors) + list(HOW) + ["subset"])
    return Multiverse(yi=y, vi=v, cluster=np.asarray(codes), measure=measure,
                      factors=tuple(factors), subsets=np.array(subsets, dtype=bool),
                      which=which, specs=specs, config=cfg, dropped_levels=dropped,
                      missing_factors=tuple(missing), duplicates=duplicates,
                      unavailable=unavailable)


# ---------------------------------------------------------------------------------- fitting



def _tasks(mv: Multiverse, chunk: int):
    """Work units: (kind, model, method, test, bias, spec rows, subset rows)."""
    tasks = []
    # three-level: one fit per subset and method serves the z and the t specifications
    tl = mv.specs[mv.specs["model"] == "three_level"]
    for method, g in tl.groupby("method", sort=False):
        order = np.argsort(g["subset"].to_numpy(), kind="stable")
        rows = g.index.to_numpy()[order]
        subs = g["subset"].to_numpy()[order]
        tests = g["test"].to_numpy()[order]
        step = chunk * max(1, len(set(tests)))
        for a in range(0, rows.size, step):
            tasks.append(("three_level", method, tests[a:a + step], "none", rows[a:a + step],
                          subs[a:a + step]))
    # trim and fill: the z and knha specifications of a method share most of the work (the
    # test-independent core is cached per process), so they travel in one task
    tf = mv.specs[(mv.specs["model"] != "three_level") & (mv.specs["bias"] == "trimfill")]
    for (model, method), g in tf.groupby(["model", "method"], sort=False):
        tasks.append((model, method, g["test"].to_numpy(), "trimfill", g.index.to_numpy(),
                      g["subset"].to_numpy()))
    grouped = mv.specs[(mv.specs["model"] != "three_level")
                       & (mv.specs["bias"] != "trimfill")].groupby(
        ["model", "method", "test", "bias"], sort=False)
    for (model, method, test, bias), g in grouped:
        rows = g.index.to_numpy()
        subs = g["subset"].to_numpy()
        if model in ("univariate", "composite") and bias != "3psm":
            tasks.append((model, method, test, bias, rows, subs))
        else:
            for a in range(0, rows.size, chunk):
                tasks.append((model, method, test, bias, rows[a:a + chunk], subs[a:a + chunk]))
    return tasks


def _parallel(jobs, scheduler):
    """A joblib Parallel (loky processes; dask backend with a scheduler address)."""
    import joblib

    if scheduler:
        # the backend comes from parallel_config(backend="dask") only: joblib 1.6 passes
        # Parallel(backend="dask") a nesting_level that ends up in dask's submit() kwargs
        return joblib.Parallel(n_jobs=-1, return_as="generator")
    return joblib.Parallel(n_jobs=jobs, return_as="generator")


def _dask_context(scheduler):
    """Connect a dask.distributed Client for joblib's dask backend (None: a no-op)."""
    import contextlib

    if not scheduler:
        return contextlib.nullcontext()
    try:
        from dask.distributed import Client
    except ImportError:
        raise OptionError("--scheduler needs dask[distributed] (pip install "
                          "'dask[distributed]')") from None
    if not isinstance(scheduler, str):     # a Client or LocalCluster object (tests, Python)
        return contextlib.nullcontext(scheduler)
    try:
        return Client(scheduler, timeout="10s", set_as_default=True)
    except (OSError, TimeoutError) as exc:
        raise OptionError(f"--scheduler {scheduler}: cannot connect ({exc})") from None


def _map(fn, items, jobs, scheduler, progress=None, total=None):
    """[fn(*item) ...] in order, sequentially (jobs == 1, no scheduler) or through joblib."""
    total = len(items) if total is None else total
    if (jobs is None or jobs == 1) and not scheduler:
        out = []
        for i, it in enumerate(items):
            out.append(fn(*it))
            if progress:
                progress(i + 1, total)
        return out
    import joblib

    with _dask_context(scheduler):
        if scheduler:
            ctx = joblib.parallel_config(backend="dask")
        else:
            import contextlib
            ctx = contextlib.nullcontext()
        with ctx:
            par = _parallel(jobs, scheduler)
            out = []
            for i, r in enumerate(par(joblib.delayed(fn)(*it) for it in items)):
                out.append(r)
                if progress:
                    progress(i + 1, total)
    return out


def fit_specifications(mv: Multiverse, jobs: int = 1, scheduler=None, progress=None,
                       chunk: int = 64) -> Multiverse:
    """Fit every specification of ``mv``; fills ``mv.results`` (one row per specification
    that could be fitted), ``mv.failed`` and ``mv.warnings``."""
    cfg = mv.config
    tasks = _tasks(mv, chunk)
    items = [(t, mv.yi, mv.vi, mv.cluster, mv.subsets[t[5]], mv.measure, cfg.level,
              cfg.composite_rho, cfg.control) for t in tasks]
    parts = _map(run_task, items, jobs, scheduler, progress)
    n = len(mv.specs)
    numbers = {f: np.full(n, np.nan) for f in FIELDS}
    failed = {}
    wcount: dict = {}
    for rows, out, failures, wc in parts:
        for f in FIELDS:
            numbers[f][rows] = out[f]
        for r, why in failures:
            failed[r] = why
        for msg, c in wc.items():
            wcount[msg] = wcount.get(msg, 0) + c
    res = mv.specs.copy()
    for f in FIELDS:
        res[f] = numbers[f]
    masks = mv.subsets[res["subset"].to_numpy()]
    res["k"] = masks.sum(axis=1)
    res["samples"] = [np.unique(mv.cluster[m]).size for m in masks]
    bad = res["estimate"].isna() | res["se"].isna() | res["ci_lower"].isna()
    for r in np.flatnonzero(bad.to_numpy()):
        failed.setdefault(int(r), "the fit gave no finite estimate")
    mv.failed_rows = tuple(sorted(failed))
    mv.failed = [{"factors": _factors_of(mv, res.iloc[r]), "reason": why}
                 for r, why in sorted(failed.items())]
    res = res[~res.index.isin(list(failed))]
    if mv.measure == "ZCOR":
        res["r"] = np.tanh(res["estimate"])
        res["r_ci_lower"] = np.tanh(res["ci_lower"])
        res["r_ci_upper"] = np.tanh(res["ci_upper"])
        res["r_pi_lower"] = np.tanh(res["pi_lower"])
        res["r_pi_upper"] = np.tanh(res["pi_upper"])
    res["k_model"] = res["k_model"].astype(int)
    mv.results = res.reset_index(drop=True)
    mv.warnings = wcount
    return mv


def _factors_of(mv, row) -> dict:
    return {f: str(row[f]) for f in list(mv.factors) + list(HOW)}


# ---------------------------------------------------------------------------------- summary


def variance_decomposition(results, factors) -> dict:
    """For each factor, the share of the variance of the specification estimates that lies
    between its levels (eta^2 = SS_between / SS_total of a one-way decomposition), and the
    median estimate at each level. Factors with one level are left out."""
    est = results["estimate"].to_numpy(dtype=float)
    total = float(np.sum((est - est.mean()) ** 2))
    out = {}
    for f in factors:
        g = results.groupby(f, sort=True)["estimate"]
        if g.ngroups < 2:
            continue
        means = g.transform("mean").to_numpy(dtype=float)
        ss_b = float(np.sum((means - est.mean()) ** 2))
        out[f] = {"eta2": ss_b / total if total > 0 else 0.0,
                  "levels": {str(lev): {"n": int(s.size), "median": float(np.median(s))}
                             for lev, s in g}}
    return out


def _share(x) -> float:
    return float(np.mean(x)) if len(x) else 0.0


def curve_statistics(estimate, pvalue, alpha):
    """(median, share significant in the median's direction) of one curve (z scale)."""
    est = np.asarray(estimate, dtype=float)
    med = float(np.median(est))
    sign = 1.0 if med >= 0 else -1.0
    sig = (np.asarray(pvalue, dtype=float) < alpha) & (np.sign(est) == sign)
    return med, float(np.mean(sig))


def summarise(mv: Multiverse) -> dict:
    """The summary of ``--json``: counts, shares, percentiles, variance decomposition."""
    res = mv.results
    cfg = mv.config
    alpha = 1 - float(cfg.level) / 100 if float(cfg.level) > 1 else 1 - float(cfg.level)
    scale = "r" if mv.measure == "ZCOR" else "estimate"
    out = {"n_specifications": int(len(res)), "n_enumerated": int(len(mv.specs)),
           "n_failed": len(mv.failed), "n_subsets": int(mv.subsets.shape[0]),
           "duplicate_subsets_dropped" if cfg.dedupe else "duplicate_subsets": mv.duplicates,
           "scale": scale, "factors": list(mv.factors) + list(HOW),
           "missing_factors": list(mv.missing_factors), "dropped_levels": mv.dropped_levels,
           "unavailable": mv.unavailable, "min_k": cfg.min_k, "min_samples": cfg.min_samples,
           "level": cfg.level}
    if len(res):
        vals = res[scale].to_numpy(dtype=float)
        lo = res["r_ci_lower" if scale == "r" else "ci_lower"].to_numpy(dtype=float)
        hi = res["r_ci_upper" if scale == "r" else "ci_upper"].to_numpy(dtype=float)
        dec = variance_decomposition(res, list(mv.factors) + list(HOW))
        top = max(dec, key=lambda f: dec[f]["eta2"]) if dec else None
        med_z, share_sig = curve_statistics(res["estimate"], res["p"], alpha)
        out.update({
            "share_ci_above_zero": _share(lo > 0), "share_ci_below_zero": _share(hi < 0),
            "share_significant": share_sig,
            "median": float(np.median(vals)), "min": float(vals.min()),
            "max": float(vals.max()), "p5": float(np.percentile(vals, 5)),
            "p95": float(np.percentile(vals, 95)),
            "factor_moving_most": top,
            "variance_decomposition": {f: d["eta2"] for f, d in
                                       sorted(dec.items(), key=lambda kv: -kv[1]["eta2"])},
            "level_medians": {f: {lev: d["median"] for lev, d in dec[f]["levels"].items()}
                              for f in dec},
        })
    if mv.failed:
        reasons: dict = {}
        for f in mv.failed:
            reasons[f["reason"]] = reasons.get(f["reason"], 0) + 1
        out["failure_reasons"] = reasons
    if mv.warnings:
        out["warnings"] = dict(sorted(mv.warnings.items(), key=lambda kv: -kv[1])[:20])
    return out


def specifications_json(mv: Multiverse) -> list:
    """One dict per fitted specification (the ``--json`` "specifications" list)."""
    out = []
    cols = list(mv.factors) + list(HOW)
    res = mv.results
    r_scale = mv.measure == "ZCOR"

    def num(x):
        x = float(x)
        return None if not math.isfinite(x) else x

    for row in res.itertuples(index=False):
        d = row._asdict()
        rec = {"factors": {c: str(d[c]) for c in cols}, "k": int(d["k"]),
               "samples": int(d["samples"]), "k_model": int(d["k_model"])}
        for f in ("estimate", "se", "ci_lower", "ci_upper", "pi_lower", "pi_upper"):
            rec[f] = num(d[f])
        if r_scale:
            rec["r"] = num(d["r"])
            rec["r_ci_lower"] = num(d["r_ci_lower"])
            rec["r_ci_upper"] = num(d["r_ci_upper"])
            rec["r_pi_lower"] = num(d["r_pi_lower"])
            rec["r_pi_upper"] = num(d["r_pi_upper"])
        rec["p"] = num(d["p"])
        rec["tau2"] = num(d["tau2"])
        out.append(rec)
    return out


# ---------------------------------------------------------------------------------- bootstrap


def null_components(mv: Multiverse):
    """Variance components of the null simulation: (between samples, within samples).

    With findings nested in samples: the three-level REML fit of all findings (so simulated
    findings of one sample are correlated as the data are); otherwise (0, tau^2) of the
    univariate REML fit, as Voracek et al. (2019) simulate from the random-effects model."""
    from metaalliance.engine import models
    from metaalliance.engine.multilevel import three_level

    k = mv.yi.size
    n_cl = np.unique(mv.cluster).size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if 1 < n_cl < k:
            try:
                fit = three_level(mv.yi, mv.vi, mv.cluster, measure="generic")
                return float(fit.sigma2[0]), float(fit.sigma2[1])
            except MetaAllianceError:
                pass
        fit = models.random_effects(mv.yi, mv.vi, measure="generic", control=mv.config.control)
    return 0.0, float(fit.tau2)


def _simulate(seed_seq, k, vi, codes, n_cl, s_between, s_within):
    rng = np.random.default_rng(seed_seq)
    u = rng.normal(0.0, math.sqrt(s_between), n_cl)[codes] if s_between > 0 else 0.0
    w = rng.normal(0.0, math.sqrt(s_within), k) if s_within > 0 else 0.0
    return u + w + rng.normal(0.0, 1.0, k) * np.sqrt(vi)


def _boot_chunk(seeds, mv_light, components, alpha):
    """Curve statistics of the replicates seeded by ``seeds`` (one work unit of the
    bootstrap: every specification of each replicate, group by group as
    ``fit_specifications`` runs them)."""
    yi, vi, codes, subsets, specs, cfg, measure = mv_light
    k = yi.size
    n_cl = int(codes.max()) + 1
    mv = Multiverse(yi=yi, vi=vi, cluster=codes, measure=measure, factors=(),
                    subsets=subsets, which=[], specs=specs, config=cfg)
    tasks = _tasks(mv, 10 ** 9)
    stats = []
    for ss in seeds:
        y = _simulate(ss, k, vi, codes, n_cl, *components)
        est = np.full(len(specs), np.nan)
        p = np.full(len(specs), np.nan)
        for t in tasks:
            rows, out, _f, _w = run_task(t, y, vi, codes, subsets[t[5]], measure, cfg.level,
                                         cfg.composite_rho, cfg.control)
            est[rows] = out["estimate"]
            p[rows] = out["p"]
        ok = np.isfinite(est) & np.isfinite(p)
        stats.append(curve_statistics(est[ok], p[ok], alpha) + (int(ok.sum()),))
    return stats


def bootstrap(mv: Multiverse, replicates: int = 500, seed=None, jobs: int = 1, scheduler=None,
              progress=None) -> dict:
    """The parametric bootstrap under the null of Voracek et al. (2019).

    Each replicate simulates data with the true effect 0, the findings' own sampling
    variances and the heterogeneity of the data (``null_components``), re-runs every
    specification and records the curve's median estimate and its share of specifications
    significant (p < 1 - level) in the direction of the observed median. The p-values are the
    shares of replicates at least as extreme as observed, (1 + count) / (1 + replicates),
    one-sided in the observed direction (Simonsohn et al.'s specification-curve inference).
    Replicate i always uses the i-th child of ``SeedSequence(seed)``: the same seed gives the
    same p-values whatever ``jobs`` or the scheduler.
    """
    if mv.results is None:
        raise OptionError("bootstrap: fit the specifications first")
    if int(replicates) < 1:
        raise OptionError(f"--bootstrap: must be >= 1 (got {replicates})")
    replicates = int(replicates)
    cfg = mv.config
    alpha = 1 - float(cfg.level) / 100
    res = mv.results
    # re-run exactly the specifications that were fitted (not the failed ones)
    fitted_specs = mv.specs.drop(index=list(mv.failed_rows)).reset_index(drop=True)
    obs_med, obs_share = curve_statistics(res["estimate"], res["p"], alpha)
    components = null_components(mv)
    children = np.random.SeedSequence(seed).spawn(replicates)
    light = (mv.yi, mv.vi, mv.cluster, mv.subsets, fitted_specs, cfg, mv.measure)
    chunks = [children[a:a + BOOT_CHUNK] for a in range(0, replicates, BOOT_CHUNK)]
    def prog(i, total):
        if progress:
            progress(min(replicates, i * BOOT_CHUNK), replicates)

    parts = _map(_boot_chunk, [(c, light, components, alpha) for c in chunks], jobs,
                 scheduler, prog if progress else None, len(chunks))
    stats = [s for part in parts for s in part]
    med = np.array([s[0] for s in stats])
    share = np.array([s[1] for s in stats])
    sign = 1.0 if obs_med >= 0 else -1.0
    n_med = int(np.sum(sign * med >= sign * obs_med))
    n_share = int(np.sum(share >= obs_share))
    return {"replicates": replicates, "seed": seed,
            "null_sigma2": {"between_samples": components[0], "within_samples": components[1]},
            "observed_median": obs_med,
            "observed_median_r": math.tanh(obs_med) if mv.measure == "ZCOR" else None,
            "observed_share_significant": obs_share,
            "p_median": (1 + n_med) / (1 + replicates),
            "p_share_significant": (1 + n_share) / (1 + replicates),
            "null_median_p95": float(np.percentile(sign * med, 95)) * sign,
            "null_share_significant_p95": float(np.percentile(share, 95)),
            "direction": "positive" if sign > 0 else "negative"}


# ---------------------------------------------------------------------------------- report

#: the report shows the specification curve when the data allow this many specifications
REPORT_MIN_SPECIFICATIONS = 20


def report_figure(frame, cluster: str = "sample", config: MultiverseConfig | None = None):
    """The multiverse of the report's main analysis: (Multiverse, summary, caption) or None
    when the data allow fewer than ``REPORT_MIN_SPECIFICATIONS`` specifications."""
    from metaalliance.formatting import fmt_int, fmt_pct, fmt_r

    if frame is None or len(frame) == 0 or cluster not in frame.columns:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mv = run(frame, frame["yi"].to_numpy(float), frame["vi"].to_numpy(float),
                     frame[cluster].astype(str).to_numpy(), config)
    except MetaAllianceError:
        return None
    if len(mv.results) < REPORT_MIN_SPECIFICATIONS:
        return None
    s = summarise(mv)
    top = s["factor_moving_most"]
    miss = [f"{lev} ({fac})" for fac, d in s["unavailable"].items() for lev in d]
    caption = (f"All {fmt_int(s['n_specifications'])} specifications of the main analysis "
               f"({s['n_subsets']} data subsets \u00d7 estimator, model, test and bias adjustment; "
               f"Voracek et al., 2019), sorted by r with 95% CIs (black: CI excludes 0); "
               f"below, the choices of each. Median r = {fmt_r(s['median'])} (5th-95th "
               f"percentile {fmt_r(s['p5'])} to {fmt_r(s['p95'])}; range {fmt_r(s['min'])} to "
               f"{fmt_r(s['max'])}); CI above zero in {fmt_pct(100 * s['share_ci_above_zero'])}"
               f" of specifications; the choice that moves the estimate most: "
               f"{str(top).replace('_', ' ')} (\u03b7\u00b2 = "
               f"{s['variance_decomposition'][top]:.2f} of the variance of the estimates)."
               + (f" Not available in this version: {', '.join(miss)}." if miss else "")
               + (f" {s['n_failed']} specification(s) could not be fitted." if s["n_failed"]
                  else ""))
    return mv, s, caption


# ---------------------------------------------------------------------------------- one call


def run(frame, yi, vi, cluster=None, config: MultiverseConfig | None = None,
        measure: str = "ZCOR", jobs: int = 1, scheduler=None, progress=None) -> Multiverse:
    """Enumerate and fit: ``fit_specifications(enumerate_specifications(...))``."""
    mv = enumerate_specifications(frame, yi, vi, cluster, config, measure)
    return fit_specifications(mv, jobs=jobs, scheduler=scheduler, progress=progress)
