"""``make bench``: time the issue-6 workloads in Python and, when available, in R's metafor.

    python -m benchmarks.run [--quick] [--repeats N] [--no-r] [--out FILE]

Data: SIMULATED correlations from ``benchmarks.data.simulate`` (seeded; k = 300 with three
categorical moderators, a year and a study id; plus k = 100 ... 100,000 for the scaling
series). Python: every workload is warmed up, then timed ``--repeats`` times (best time;
calls under 50 ms are looped so that one measurement lasts >= 50 ms). R: the same data go
to a temporary folder as CSV, ``benchmarks/metafor_bench.R`` runs the same workloads with
metafor's defaults (fast items: the same repeats; the long ones once) and the two are
printed side by side. Without Rscript + metafor the table has the Python column only.

``--quick`` skips metafor's slowest items (permutest, leave1out, influence, the k = 5000
fit: minutes in R). Results: a table on stdout and ``benchmarks/out/results.json``. The
start-up table (``benchmarks/startup.py``: every command as a new process, and what it
imports) comes last.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from .data import LABEL, simulate

HERE = Path(__file__).resolve().parent
R_SCRIPT = HERE / "metafor_bench.R"
DEFAULT_OUT = HERE / "out" / "results.json"

SEED = 20240606
K = 300
MODS = "~ instrument + rater + modality + year"
#: the scaling series of the REML fit; metafor is run only up to R_SCALE_MAX (its rma() forms
#: k x k matrices: k = 5000 takes minutes, k = 100,000 would need 80 GB per matrix)
SCALE_KS = (100, 1_000, 10_000, 100_000)
R_SCALE_MAX = 2_000
BIG_K = 5_000
#: workloads on random draws (R's and numpy's generators differ): no number-by-number check
RANDOM_DRAWS = ("permutest_1000", "gosh_dl_10000")
#: a single measurement of a fast call lasts at least this long (calls are looped)
MIN_MEASURE = 0.05

# (key, label, target kind, target value): kind "ratio" = at least that many times faster
# than metafor in the same run; "abs" = at most that many seconds
WORKLOADS = [
    ("re_reml", "REML random-effects fit (k = 300)", "ratio", 20),
    ("metareg_reml", "REML meta-regression, 3 factors + year", "ratio", 20),
    ("permutest_1000", "permutation test, 1000 permutations", "ratio", 50),
    ("leave1out", "leave-one-out, REML", "ratio", 50),
    ("influence", "influence diagnostics, REML", "ratio", 50),
    ("three_level", "three-level REML (rma.mv)", "ratio", 20),
    ("trimfill", "trim and fill, REML", "ratio", 20),
    ("gosh_dl_10000", "GOSH, DL, 10,000 subsets", "ratio", 50),
    (f"fit_k{BIG_K}", f"REML fit, k = {BIG_K:,}", "ratio", 20),
    ("fit_k100000", "REML fit, k = 100,000", "abs", 1.0),
    ("gosh_reml_100000", "GOSH, REML (model's own), 100,000 subsets", "abs", 10.0),
    ("cli_help", "metaalliance --help", "abs", 0.5),
]


# ------------------------------------------------------------------------------------------
# timing


def best_time(fn, repeats: int) -> dict:
    """Warm up, then the best of ``repeats`` measurements (looped when a call is fast)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    inner = max(1, int(np.ceil(MIN_MEASURE / max(first, 1e-6)))) if first < MIN_MEASURE else 1
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
    return {"seconds": best, "repeats": repeats, "inner": inner}


def fmt_time(s) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms" if s < 0.1 else f"{s * 1e3:.0f} ms"
    return f"{s:.2f} s"


# ------------------------------------------------------------------------------------------
# data


def bench_data():
    import pandas as pd

    d = simulate(K, seed=SEED)
    frame = pd.DataFrame({c: d[c] for c in ("yi", "vi", "instrument", "rater", "modality",
                                           "year", "study")})
    scale = {k: simulate(k, seed=SEED + k, with_moderators=False) for k in
             sorted(set(SCALE_KS) | {BIG_K})}
    return d, frame, scale


def write_csvs(folder: Path, frame, scale, quick: bool) -> None:
    import pandas as pd

    header = f"# {LABEL}\n"
    (folder / "README.txt").write_text(header)
    frame.to_csv(folder / "bench_k300.csv", index=False, float_format="%.17g")
    for k, d in scale.items():
        if k <= R_SCALE_MAX or k == BIG_K:
            pd.DataFrame({"yi": d["yi"], "vi": d["vi"]}).to_csv(
                folder / f"scale_k{k}.csv", index=False, float_format="%.17g")


# ------------------------------------------------------------------------------------------
# Python side


def python_workloads(d, frame, scale, repeats: int, log) -> tuple[dict, dict]:
    """Timings {key: timing dict} and values {key: {quantity: list}} for the agreement check."""
    import warnings

    from metaalliance.analyses import bias
    from metaalliance.engine import models
    from metaalliance.analyses import sensitivity

    warnings.simplefilter("ignore")          # e.g. single-level warnings of simulated factors
    yi, vi = d["yi"], d["vi"]
    mods = frame[["instrument", "rater", "modality", "year"]]
    times, values = {}, {}

    def run(key, fn, reps=repeats):
        times[key] = best_time(fn, reps)
        log(f"  python  {key:<18} {fmt_time(times[key]['seconds']):>10}")

    fit = models.random_effects(yi, vi, method="REML")
    run("re_reml", lambda: models.random_effects(yi, vi, method="REML"))
    values["re_reml"] = {"estimate": [fit.estimate], "tau2": [fit.tau2], "se": [fit.se]}

    mr = models.meta_regression(yi, vi, mods, MODS, method="REML")
    run("metareg_reml", lambda: models.meta_regression(yi, vi, mods, MODS, method="REML"))
    values["metareg_reml"] = {"coefficients": [c.estimate for c in mr.coefficients],
                              "tau2": [mr.tau2], "qm": [mr.qm]}

    # the fit is part of the Python time (permutest() in R gets a fitted model)
    run("permutest_1000", lambda: models.meta_regression(yi, vi, mods, MODS, method="REML",
                                                         permutations=1000, seed=1))

    l1o = sensitivity.leave_one_out(fit)
    run("leave1out", lambda: sensitivity.leave_one_out(fit))
    values["leave1out"] = {"estimate": list(l1o.estimate), "tau2": list(l1o.tau2)}

    inf = sensitivity.influence(fit)
    run("influence", lambda: sensitivity.influence(fit))
    values["influence"] = {"cook_d": list(inf.cook_d), "tau2_del": list(inf.tau2_del)}

    ml = models.three_level(yi, vi, d["study"], method="REML")
    run("three_level", lambda: models.three_level(yi, vi, d["study"], method="REML"))
    values["three_level"] = {"estimate": [ml.estimate], "sigma2": list(ml.sigma2)}

    tf = bias.trim_and_fill(fit)
    run("trimfill", lambda: bias.trim_and_fill(fit))
    values["trimfill"] = {"k0": [tf.k0], "estimate": [tf.estimate], "tau2": [tf.tau2]}

    fit_dl = models.random_effects(yi, vi, method="DL")
    g = sensitivity.gosh(fit_dl, subsets=10_000, seed=1)
    run("gosh_dl_10000", lambda: sensitivity.gosh(fit_dl, subsets=10_000, seed=1))
    values["gosh_dl_10000"] = {"mean_estimate": [float(g.estimate.mean())],
                               "mean_i2": [float(g.i2.mean())]}

    run("gosh_reml_100000", lambda: sensitivity.gosh(fit, subsets=100_000, seed=1),
        max(1, min(repeats, 3)))

    for k in sorted(set(SCALE_KS) | {BIG_K}):
        s = scale[k]
        f = models.random_effects(s["yi"], s["vi"], method="REML")
        run(f"fit_k{k}", lambda s=s: models.random_effects(s["yi"], s["vi"], method="REML"))
        values[f"fit_k{k}"] = {"estimate": [f.estimate], "tau2": [f.tau2]}
    return times, values


def optimum_values(d, frame, scale) -> dict:
    """The agreement quantities with control="optimum", to compare with metafor run to full
    precision (the timed runs use the default control, which reproduces plain metafor calls)."""
    import warnings

    from metaalliance.analyses import bias
    from metaalliance.engine import models
    from metaalliance.analyses import sensitivity

    warnings.simplefilter("ignore")
    yi, vi = d["yi"], d["vi"]
    mods = frame[["instrument", "rater", "modality", "year"]]
    fit = models.random_effects(yi, vi, method="REML", control="optimum")
    mr = models.meta_regression(yi, vi, mods, MODS, method="REML", control="optimum")
    l1o, inf, tf = sensitivity.leave_one_out(fit), sensitivity.influence(fit), bias.trim_and_fill(fit)
    ml = models.three_level(yi, vi, d["study"], method="REML")
    values = {
        "re_reml": {"estimate": [fit.estimate], "tau2": [fit.tau2], "se": [fit.se]},
        "metareg_reml": {"coefficients": [c.estimate for c in mr.coefficients],
                         "tau2": [mr.tau2], "qm": [mr.qm]},
        "leave1out": {"estimate": list(l1o.estimate), "tau2": list(l1o.tau2)},
        "influence": {"cook_d": list(inf.cook_d), "tau2_del": list(inf.tau2_del)},
        "three_level": {"estimate": [ml.estimate], "sigma2": list(ml.sigma2)},
        "trimfill": {"k0": [tf.k0], "estimate": [tf.estimate], "tau2": [tf.tau2]},
    }
    for k in sorted(set(SCALE_KS) | {BIG_K}):
        f = models.random_effects(scale[k]["yi"], scale[k]["vi"], method="REML",
                                  control="optimum")
        values[f"fit_k{k}"] = {"estimate": [f.estimate], "tau2": [f.tau2]}
    return values


def peak_memory(scale) -> list:
    """tracemalloc peak of one REML fit per k (numpy reports its allocations to tracemalloc)."""
    from metaalliance.engine import models

    out = []
    for k in SCALE_KS:
        s = scale[k]
        yi, vi = np.array(s["yi"]), np.array(s["vi"])
        models.random_effects(yi, vi, method="REML")        # imports and caches outside
        tracemalloc.start()
        models.random_effects(yi, vi, method="REML")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out.append({"k": k, "peak_bytes": int(peak), "bytes_per_study": peak / k})
    return out


def cli_help_time(repeats: int) -> dict:
    exe = Path(sys.executable).with_name("metaalliance")
    cmd = [str(exe), "--help"] if exe.exists() else [sys.executable, "-m", "metaalliance.cli",
                                                      "--help"]
    best = float("inf")
    for _ in range(max(3, repeats)):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        best = min(best, time.perf_counter() - t0)
    return {"seconds": best, "repeats": max(3, repeats), "inner": 1, "command": " ".join(cmd)}


# ------------------------------------------------------------------------------------------
# R side


def metafor_available() -> str | None:
    """metafor's version when Rscript with metafor is installed, else None."""
    if shutil.which("Rscript") is None:
        return None
    try:
        out = subprocess.run(
            ["Rscript", "-e", 'if (requireNamespace("metafor", quietly = TRUE) && '
             'requireNamespace("jsonlite", quietly = TRUE)) '
             'cat(as.character(packageVersion("metafor"))) else quit(status = 1)'],
            capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def run_metafor(frame, scale, repeats: int, quick: bool, log) -> dict:
    with tempfile.TemporaryDirectory(prefix="metaalliance-bench-") as tmp:
        folder = Path(tmp)
        write_csvs(folder, frame, scale, quick)
        cmd = ["Rscript", str(R_SCRIPT), str(folder), str(repeats), "1" if quick else "0"]
        log(f"  running {' '.join(cmd[:2])} ... (metafor; the long items take minutes)")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            log(line.rstrip())
        if proc.wait() != 0:
            raise RuntimeError(f"metafor benchmark failed (exit {proc.returncode})")
        return json.loads((folder / "metafor.json").read_text())


# ------------------------------------------------------------------------------------------
# report


def agreement(py: dict, r: dict) -> float | None:
    """Largest relative difference over the quantities both sides report (None if none)."""
    worst = None
    for q, a in py.items():
        b = r.get(q)
        if b is None:
            continue
        a = np.atleast_1d(np.asarray(a, dtype=float))
        b = np.atleast_1d(np.asarray(b, dtype=float))
        if a.shape != b.shape:
            continue
        rel = np.abs(a - b) / np.maximum(np.abs(b), 1e-8)
        worst = float(rel.max()) if worst is None else max(worst, float(rel.max()))
    return worst


def build_rows(times, values, values_opt, r_items, help_t):
    rows = []
    for key, label, kind, target in WORKLOADS:
        py = help_t if key == "cli_help" else times.get(key)
        py_s = py["seconds"] if py else None
        r = (r_items or {}).get(key) or {}
        r_s = r.get("seconds")
        ratio = (r_s / py_s) if (r_s is not None and py_s) else None
        if kind == "ratio":
            met = None if ratio is None else bool(ratio >= target)
            target_s = f">= {target}x"
        else:
            met = None if py_s is None else bool(py_s < target)
            target_s = f"< {fmt_time(target)}"
        note = r.get("skipped")
        if key in ("fit_k100000", "gosh_reml_100000"):
            note = "metafor not run (hours / memory); absolute target"
        if key == "cli_help":
            note = "no metafor counterpart"
        if key in ("permutest_1000", "gosh_dl_10000") and r_s is not None:
            note = "random draws: same distribution, not the same draws"
        rows.append({"key": key, "label": label, "python_s": py_s, "metafor_s": r_s,
                     "ratio": ratio, "target": target_s, "target_kind": kind,
                     "target_value": target, "met": met, "note": note,
                     "metafor_runs": r.get("repeats"),
                     "agreement": (agreement(values.get(key, {}), r.get("values") or {})
                                   if r_s is not None and key in values
                                   and key not in RANDOM_DRAWS else None),
                     "agreement_full_precision": (
                         agreement(values_opt.get(key, {}), r.get("values_tight") or {})
                         if r.get("values_tight") and key in values_opt else None)})
    return rows


def table(rows, have_r: bool) -> str:
    head = ["workload", "python", "metafor", "ratio", "target", "met?"]
    lines = []
    for r in rows:
        met = "n/a" if r["met"] is None else ("yes" if r["met"] else "NO")
        if not have_r and r["target_kind"] == "ratio":
            met = "n/a (no R)"
        metafor = fmt_time(r["metafor_s"]) if r["metafor_s"] is not None else (
            f"({r['note']})" if r["note"] and r["target_kind"] == "ratio" else "-")
        ratio = f"{r['ratio']:.0f}x" if r["ratio"] is not None else "-"
        lines.append([r["label"], fmt_time(r["python_s"]), metafor, ratio, r["target"], met])
    widths = [max(len(str(x[i])) for x in [head] + lines) for i in range(len(head))]
    out = [" | ".join(str(h).ljust(w) for h, w in zip(head, widths)),
           "-|-".join("-" * w for w in widths)]
    out += [" | ".join(str(c).ljust(w) for c, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def scaling_rows(times, values_opt, r_items, memory) -> list:
    mem = {m["k"]: m for m in memory}
    out = []
    for k in SCALE_KS:
        key = f"fit_k{k}"
        r = (r_items or {}).get(key) or {}
        out.append({"k": k, "python_s": times[key]["seconds"], "metafor_s": r.get("seconds"),
                    "peak_bytes": mem[k]["peak_bytes"],
                    "bytes_per_study": mem[k]["bytes_per_study"],
                    "agreement_full_precision": (agreement(values_opt[key], r["values_tight"])
                                                 if r.get("values_tight") else None)})
    return out


def scaling_table(rows) -> str:
    head = ["k", "python REML fit", "metafor rma()", "peak memory (python)", "bytes / study",
            "agreement*"]
    lines = []
    for r in rows:
        k, r_s, a = r["k"], r["metafor_s"], r["agreement_full_precision"]
        lines.append([f"{k:,}", fmt_time(r["python_s"]),
                      fmt_time(r_s) if r_s is not None else
                      (f"not run (k > {R_SCALE_MAX:,})" if k > R_SCALE_MAX else "-"),
                      f"{r['peak_bytes'] / 2**20:.2f} MiB", f"{r['bytes_per_study']:.0f}",
                      "-" if a is None else f"{a:.1e}"])
    widths = [max(len(str(x[i])) for x in [head] + lines) for i in range(len(head))]
    out = [" | ".join(str(h).ljust(w) for h, w in zip(head, widths)),
           "-|-".join("-" * w for w in widths)]
    out += [" | ".join(str(c).ljust(w) for c, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def machine() -> dict:
    import scipy

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="skip metafor's slowest items (permutest, leave1out, influence, k = 5000)")
    ap.add_argument("--repeats", type=int, default=5, help="measurements per item (best of)")
    ap.add_argument("--no-r", action="store_true", help="do not run metafor even if installed")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="JSON results file")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    started = _dt.datetime.now().astimezone()
    info = machine()
    log(f"metaalliance benchmarks, {started:%Y-%m-%d %H:%M %Z}; {info['nproc']} CPU(s) "
        f"{info['cpu']}; Python {info['python']}, numpy {info['numpy']}")
    log(f"data: {LABEL}; k = {K}, seed {SEED}")
    d, frame, scale = bench_data()
    times, values = python_workloads(d, frame, scale, args.repeats, log)
    values_opt = optimum_values(d, frame, scale)
    memory = peak_memory(scale)
    help_t = cli_help_time(args.repeats)
    log(f"  python  {'cli_help':<18} {fmt_time(help_t['seconds']):>10}")

    metafor_version = None if args.no_r else metafor_available()
    r_out = None
    if metafor_version:
        r_out = run_metafor(frame, scale, args.repeats, args.quick, log)
    elif not args.no_r:
        log("Rscript with metafor not found: Python column only")
    r_items = (r_out or {}).get("items")
    rows = build_rows(times, values, values_opt, r_items, help_t)

    text = table(rows, r_out is not None)
    srows = scaling_rows(times, values_opt, r_items, memory)
    scal = scaling_table(srows)
    print()
    print(f"metaalliance vs metafor {metafor_version or '(not run)'} — {started:%Y-%m-%d}, "
          f"{info['nproc']} CPU(s), Python {info['python']}, numpy {info['numpy']}; "
          f"{LABEL}")
    print()
    print(text)
    print()
    print(f"REML fit as k grows (metafor only up to k = {R_SCALE_MAX:,}: its rma() forms "
          "k x k matrices); peak memory by tracemalloc:")
    print()
    print(scal)
    print("* largest relative difference of estimate and tau^2 from metafor run to full "
          "precision")
    agree = [r for r in rows if r["agreement"] is not None]
    if agree:
        print()
        print("Agreement with metafor: largest relative difference of the numbers both report "
              "(estimates,\ntau^2, coefficients, QM, Cook's distances ...): the timed run "
              "(control=\"metafor\", the default)\nagainst metafor's defaults, and "
              "control=\"optimum\" against metafor run to full precision\n(control threshold "
              "1e-12 * mean(vi), as tests/reference):")
        print()
        head = ["workload", "vs default metafor", "vs full-precision metafor"]
        lines = [[r["label"], f"{r['agreement']:.1e}",
                  "-" if r["agreement_full_precision"] is None else
                  f"{r['agreement_full_precision']:.1e}"] for r in agree]
        widths = [max(len(x[i]) for x in [head] + lines) for i in range(3)]
        print(" | ".join(h.ljust(w) for h, w in zip(head, widths)))
        print("-|-".join("-" * w for w in widths))
        for line in lines:
            print(" | ".join(c.ljust(w) for c, w in zip(line, widths)))

    # start-up: whole-process time per command (benchmarks/startup.py); R's whole-process
    # leave1out + influence is one of metafor's slow items, so --quick skips it
    from .startup import measure as startup_measure, report as startup_report

    log("start-up (whole process per command):")
    startup = startup_measure(args.repeats, with_r=bool(metafor_version) and not args.quick,
                              log=log)
    print()
    print(startup_report(startup))

    out = {"date": started.isoformat(timespec="seconds"), "machine": info, "data": LABEL,
           "seed": SEED, "k": K, "quick": args.quick, "repeats": args.repeats,
           "metafor": metafor_version, "R": (r_out or {}).get("R"),
           "workloads": rows, "memory": memory,
           "scaling": srows,
           "python_timings": times, "metafor_raw": r_out, "startup": startup}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
