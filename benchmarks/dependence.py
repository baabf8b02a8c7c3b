"""Benchmarks of issue 13 beside R: selection model, RVE and the CHE workflow.

    python -m benchmarks.dependence [--repeats N] [--no-r]

Data: SIMULATED (seeded, ``benchmarks.data.simulate``): k = 300 correlations for the
selection model (3PSM, step at .025); k = 1,000 correlations in 300 clusters for robu() and
CHE. Whole-function times: Python ``selection_model(yi, vi)`` against
``selmodel(rma(yi, vi, method = "ML"), type = "stepfun", steps = .025)``; ``rve.robu(...)``
against ``robu(yi ~ 1, ..., modelweights = "CORR", rho = .8, small = TRUE)``; ``che.che(...)``
against ``vcalc`` + ``rma.mv`` + ``robust(clubSandwich = TRUE)``. Best of ``--repeats`` after
a warm-up call, both sides. Prints a table (target: >= 20x metafor/robumeta).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from .data import simulate

HERE = Path(__file__).resolve().parent
TARGET = 20.0


def data():
    s = simulate(k=300, with_moderators=False)
    d = simulate(k=1000, seed=7, with_moderators=False)
    cluster = np.array([f"c{i % 300:03d}" for i in range(1000)])
    esid = np.array([i // 300 + 1 for i in range(1000)])
    return s, dict(yi=d["yi"], vi=d["vi"], cluster=cluster, esid=esid)


def best(fn, repeats):
    fn()
    b = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        b = min(b, time.perf_counter() - t0)
    return b


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-r", action="store_true")
    a = ap.parse_args(argv)
    from metaalliance.analyses.selection import selection_model
    from metaalliance.engine.che import che
    from metaalliance.engine.rve import robu

    s, d = data()
    warnings.simplefilter("ignore")
    py = {
        "selmodel_stepfun_k300": best(lambda: selection_model(s["yi"], s["vi"]), a.repeats),
        "robu_corr_k1000": best(lambda: robu(d["yi"], d["vi"], d["cluster"]), a.repeats),
        "che_k1000": best(lambda: che(d["yi"], d["vi"], d["cluster"], rho=0.6), a.repeats),
    }
    r = {}
    if not a.no_r and shutil.which("Rscript"):
        with tempfile.TemporaryDirectory() as tmp:
            np.savetxt(Path(tmp) / "sel_k300.csv", np.c_[s["yi"], s["vi"]], delimiter=",",
                       header="yi,vi", comments="", fmt="%.17g")
            with open(Path(tmp) / "dep_k1000.csv", "w") as f:
                f.write("yi,vi,cluster,esid\n")
                for y, v, c, e in zip(d["yi"], d["vi"], d["cluster"], d["esid"]):
                    f.write(f"{y:.17g},{v:.17g},{c},{e}\n")
            subprocess.run(["Rscript", str(HERE / "dependence_bench.R"), tmp, str(a.repeats)],
                           check=True)
            r = json.loads((Path(tmp) / "r_dependence.json").read_text())
    labels = {"selmodel_stepfun_k300": "selmodel stepfun (3PSM), k = 300",
              "robu_corr_k1000": "robu CORR small, k = 1,000 / 300 clusters",
              "che_k1000": "CHE + CR2, k = 1,000 / 300 clusters"}
    print(f"{'workload':44s}| python   | R        | ratio  | target | met?")
    for key, lab in labels.items():
        rs = r.get("items", {}).get(key, {}).get("seconds")
        ratio = rs / py[key] if rs else None
        print(f"{lab:44s}| {py[key] * 1e3:7.1f}ms | "
              + (f"{rs:7.2f}s | {ratio:5.0f}x | >= {TARGET:g}x | "
                 f"{'yes' if ratio >= TARGET else 'NO'}" if rs else "-        | -      |        |"))
    if r:
        print(f"(R: {r['R']}; metafor {r['metafor']}, robumeta {r['robumeta']}, "
              f"clubSandwich {r['clubSandwich']})")


if __name__ == "__main__":
    main()
