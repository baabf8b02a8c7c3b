"""Multiverse benchmarks (issue 14) on SIMULATED data (benchmarks/data.py; never real studies).

    .venv/bin/python -m benchmarks.multiverse_bench             both targets
    .venv/bin/python -m benchmarks.multiverse_bench --only fit  10,000 specifications only
    .venv/bin/python -m benchmarks.multiverse_bench --replicates 100   a shorter bootstrap

Targets: 10,000 specifications on k = 300 simulated findings in < 10 s; 1,000 bootstrap
replicates of a 1,000-specification multiverse in < 5 min. Peak memory is the largest
resident set size of this process and its worker processes (``resource.getrusage``), plus
numpy's allocations seen by ``tracemalloc`` in the main process.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import tracemalloc

import numpy as np
import pandas as pd

from benchmarks.data import LABEL, simulate
from metaalliance.analyses import multiverse as mvm

#: extra SIMULATED tag columns (drawn by code, seeded) so the subsets cross five factors
TIMINGS = ("early", "mid", "late")
EFFECT_TYPES = ("zero_order", "partial")


def frame(k=300, seed=20240606):
    d = simulate(k, seed)
    rng = np.random.default_rng(seed + 1)
    df = pd.DataFrame({"instrument": d["instrument"], "rater": d["rater"],
                       "modality": d["modality"], "study": d["study"],
                       "timing": np.array(TIMINGS)[rng.integers(0, 3, k)],
                       "effect_type": np.array(EFFECT_TYPES)[rng.integers(0, 2, k)]})
    return df, d["yi"], d["vi"]


#: the 10,000-specification multiverse: five which factors x the default how factors
FIT_CONFIG = mvm.MultiverseConfig(
    which=("instrument", "rater", "modality", "timing", "effect_type"),
    methods=("REML", "DL", "PM"), models=("univariate", "three_level", "composite"),
    tests=("z", "knha"), bias=("none", "trimfill", "pet_peese"), min_k=7, min_samples=3)
#: the 1,000-specification multiverse of the bootstrap target: the univariate and composite
#: models (batched); three-level fits run one by one (~6 ms each on an idle machine), so
#: every three-level specification adds ~6 s per 1,000 replicates and core
BOOT_CONFIG = mvm.MultiverseConfig(
    which=("instrument", "rater", "modality", "timing"),
    methods=("REML", "DL", "PM"), models=("univariate", "composite"),
    tests=("z", "knha"), bias=("none", "trimfill", "pet_peese"), min_k=30, min_samples=3)


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages (other jobs on the machine slow every timing)."""
    try:
        with open("/proc/loadavg") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return "n/a"


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children: unlike wall time it
    hardly moves when other jobs share the cores (loky workers count once they exit)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def bench_fit(jobs: int) -> dict:
    df, yi, vi = frame()
    t0 = time.perf_counter()
    mv = mvm.enumerate_specifications(df, yi, vi, df["study"], FIT_CONFIG)
    t1 = time.perf_counter()
    c1 = cpu_seconds()
    mvm.fit_specifications(mv, jobs=jobs)
    t2 = time.perf_counter()
    c2 = cpu_seconds()
    # numpy's allocations of the same fit, in a second run (tracemalloc slows it down)
    tracemalloc.start()
    mvm.fit_specifications(mvm.enumerate_specifications(df, yi, vi, df["study"], FIT_CONFIG),
                           jobs=1)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    counts = mv.specs.groupby(["model", "bias"]).size().to_dict()
    return {"data": LABEL, "k": int(yi.size), "specifications": int(len(mv.specs)),
            "subsets": int(mv.subsets.shape[0]), "failed": len(mv.failed),
            "by_model_bias": {f"{a}/{b}": int(n) for (a, b), n in counts.items()},
            "enumerate_s": t1 - t0, "fit_s": t2 - t1, "total_s": t2 - t0, "jobs": jobs,
            "fit_cpu_s (jobs=1: all of it)": c2 - c1,
            "tracemalloc_peak_mb": peak / 2**20, "peak_rss_mb": peak_rss_mb(),
            "target_s": 10.0, "met": (t2 - t0) < 10.0, "load_average_after": load_average()}


def bench_bootstrap(jobs: int, replicates: int, bias=None, min_k=None) -> dict:
    import dataclasses

    df, yi, vi = frame()
    cfg = BOOT_CONFIG if bias is None else dataclasses.replace(BOOT_CONFIG, bias=tuple(bias))
    if min_k is not None:
        cfg = dataclasses.replace(cfg, min_k=min_k)
    mv = mvm.enumerate_specifications(df, yi, vi, df["study"], cfg)
    mvm.fit_specifications(mv, jobs=jobs)
    t0 = time.perf_counter()
    c0 = cpu_seconds()
    b = mvm.bootstrap(mv, replicates, seed=1, jobs=jobs)
    t = time.perf_counter() - t0
    cpu = cpu_seconds() - c0
    return {"data": LABEL, "k": int(yi.size), "specifications": int(len(mv.results)),
            "subsets": int(mv.subsets.shape[0]), "bias": list(cfg.bias), "min_k": cfg.min_k,
            "replicates": replicates, "jobs": jobs,
            "seconds": t, "per_replicate_ms": 1000 * t / replicates,
            "cpu_s (jobs=1: all of it)": cpu,
            "peak_rss_mb": peak_rss_mb(), "p_median": b["p_median"],
            "p_share_significant": b["p_share_significant"],
            "target_s": 300.0 * replicates / 1000, "met": t < 300.0 * replicates / 1000,
            "load_average_after": load_average()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.multiverse_bench",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("fit", "bootstrap"), default=None)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--replicates", type=int, default=1000)
    ap.add_argument("--boot-bias", default=None,
                    help="comma-separated bias levels of the bootstrap multiverse "
                         "(default: none,trimfill,pet_peese)")
    ap.add_argument("--boot-min-k", type=int, default=None,
                    help="min_k of the bootstrap multiverse (default 30)")
    a = ap.parse_args(argv)
    out = {"load_average_before": load_average()}
    print(json.dumps(out), flush=True)
    if a.only in (None, "fit"):
        out["fit"] = bench_fit(a.jobs)
        print(json.dumps(out["fit"], indent=1), flush=True)
    if a.only in (None, "bootstrap"):
        out["bootstrap"] = bench_bootstrap(a.jobs, a.replicates,
                                           a.boot_bias.split(",") if a.boot_bias else None,
                                           a.boot_min_k)
        print(json.dumps(out["bootstrap"], indent=1), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
