"""Whole-process time of each command (start-up included), and what each one imports.

    python -m benchmarks.startup [--repeats N] [--no-r] [--out FILE]

Each command is run as a user runs it (a new ``metaalliance`` process), once to warm the
file cache, then ``--repeats`` times; the table gives the best and the median wall time and
the median CPU time (user + system of the child, from ``os.wait4``), which moves less than
wall time when other jobs share the machine. ``sensitivity`` on k = 300 SIMULATED
correlations (``benchmarks.data``) is compared with R: ``Rscript`` loading metafor and
running ``rma()``, ``leave1out()`` and ``influence()`` on the same numbers, also whole-process
(timed once: it takes ~30 s).

The import table runs each command under ``python -X importtime`` and reports the cumulative
import time of the heavy packages and whether scipy.stats, matplotlib, pymare and statsmodels
were loaded at all (they must not be, except matplotlib for figures).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .data import LABEL, simulate

HERE = Path(__file__).resolve().parent
K = 300
SEED = 20240606
#: packages whose cumulative import time the import table shows
PACKAGES = ("numpy", "pandas", "scipy", "scipy.special", "scipy.stats", "yaml",
            "bibtexparser", "matplotlib", "pymare", "statsmodels", "metaalliance")
#: packages no command may load (matplotlib: only figure commands)
MUST_NOT_LOAD = ("scipy.stats", "pymare", "statsmodels")

R_CODE = """\
suppressPackageStartupMessages(library(metafor))
dat <- read.csv({csv})
res <- rma(yi, vi, data = dat)
l1o <- leave1out(res)
inf <- influence(res)
"""


def commands(csv: str, out_png: str) -> list[tuple]:
    """(key, label, argv, target kind, target): kind "abs" = at most that many seconds
    (median wall), "ratio" = at least that many times faster than R's whole process."""
    data = ["--data", csv, "--yi", "yi", "--vi", "vi"]
    return [
        ("help", "metaalliance --help", ["--help"], "abs", 0.2),
        ("convert", "convert --stat t --value 2.4 --df 48",
         ["convert", "--stat", "t", "--value", "2.4", "--df", "48"], None, None),
        ("validate", "validate (curated data)", ["validate"], None, None),
        ("pool", "pool (curated data)", ["pool"], "abs", 0.5),
        ("pool_json", "pool --json (curated data)", ["pool", "--json"], None, None),
        ("pool_cluster", "pool --cluster sample (curated)", ["pool", "--cluster", "sample"],
         None, None),
        ("bias", "bias (curated data)", ["bias"], None, None),
        ("sensitivity", "sensitivity (curated data)", ["sensitivity"], None, None),
        ("pool_k300", f"pool --data (k = {K})", ["pool", *data], None, None),
        ("sensitivity_k300", f"sensitivity --data (k = {K})", ["sensitivity", *data],
         "ratio", 50),
        ("forest", "forest --out PNG (curated data)", ["forest", "--out", out_png], None, None),
    ]


def _exe() -> list[str]:
    exe = Path(sys.executable).with_name("metaalliance")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "metaalliance.cli"]


def run_once(cmd, cwd=None) -> tuple[float, float]:
    """(wall seconds, CPU seconds user + system) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))}: exit {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def time_command(cmd, repeats: int, cwd=None) -> dict:
    run_once(cmd, cwd)                                  # warm the file cache
    walls, cpus = zip(*(run_once(cmd, cwd) for _ in range(repeats)))
    return {"best": min(walls), "median": statistics.median(walls),
            "cpu_median": statistics.median(cpus), "repeats": repeats}


def import_profile(argv, cwd=None) -> dict:
    """Cumulative import time (s) of PACKAGES and the set of top modules loaded."""
    code = ("import sys; from metaalliance.cli import main; "
            f"sys.exit(main({list(argv)!r}))")
    p = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True,
                       text=True, cwd=cwd)
    cumulative, loaded = {}, set()
    for line in p.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        try:
            cum = int(parts[1].strip()) / 1e6
        except ValueError:
            continue
        name = parts[2].strip()
        loaded.add(name)
        if name in PACKAGES:
            cumulative[name] = max(cumulative.get(name, 0.0), cum)
    return {"cumulative": cumulative,
            "loaded": {pkg: any(m == pkg or m.startswith(pkg + ".") for m in loaded)
                       for pkg in ("scipy.stats", "matplotlib", "pymare", "statsmodels",
                                   "pandas", "scipy.special")}}


def r_time(csv: str) -> dict | None:
    """Whole-process Rscript: library(metafor) + rma + leave1out + influence, or None."""
    if not shutil.which("Rscript"):
        return None
    code = R_CODE.format(csv=json.dumps(csv))
    if subprocess.run(["Rscript", "-e", "library(metafor)"], capture_output=True).returncode:
        return None
    wall, cpu = run_once(["Rscript", "-e", code])
    version = subprocess.run(["Rscript", "-e", 'cat(as.character(packageVersion("metafor")))'],
                             capture_output=True, text=True).stdout.strip()
    return {"seconds": wall, "cpu": cpu, "metafor": version, "code": code}


def write_k300(folder: Path) -> str:
    """The SIMULATED k = 300 data as a CSV (labels say so: "simulated 1", ...)."""
    d = simulate(K, SEED)
    path = folder / "k300.csv"
    with open(path, "w") as f:
        f.write("label,yi,vi\n")
        for i, (y, v) in enumerate(zip(d["yi"], d["vi"])):
            f.write(f"simulated {i + 1},{float(y)!r},{float(v)!r}\n")
    return str(path)


def measure(repeats: int = 5, with_r: bool = True, log=lambda m: None) -> dict:
    with tempfile.TemporaryDirectory(prefix="metaalliance-startup-") as tmp:
        tmp = Path(tmp)
        csv = write_k300(tmp)
        rows = []
        for key, label, argv, kind, target in commands(csv, str(tmp / "forest.png")):
            t = time_command([*_exe(), *argv], repeats)
            prof = import_profile(argv)
            rows.append({"key": key, "label": label, "argv": argv, "kind": kind,
                         "target": target, **t, "imports": prof})
            log(f"  {key:<18} median {t['median']:.3f} s (cpu {t['cpu_median']:.3f} s)")
        r = r_time(csv) if with_r else None
    if r:
        log(f"  R leave1out + influence, whole process: {r['seconds']:.2f} s")
    for row in rows:
        if row["kind"] == "abs":
            row["met"] = row["median"] < row["target"]
        elif row["kind"] == "ratio":
            row["ratio"] = r["seconds"] / row["median"] if r else None
            row["met"] = None if r is None else row["ratio"] >= row["target"]
    return {"rows": rows, "R": r, "k": K, "data": LABEL}


def _render(head: list, lines: list) -> str:
    """A plain-text table: columns padded to their widest cell, a rule under the header."""
    widths = [max(len(x[i]) for x in [head] + lines) for i in range(len(head))]
    out = [" | ".join(h.ljust(w) for h, w in zip(head, widths)),
           "-|-".join("-" * w for w in widths)]
    out += [" | ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def table(res: dict) -> str:
    head = ["command (whole process)", "best", "median", "cpu", "target", "met?"]
    lines = []
    for row in res["rows"]:
        if row["kind"] == "abs":
            target = f"< {row['target']:g} s"
        elif row["kind"] == "ratio":
            ratio = row.get("ratio")
            target = (f">= {row['target']}x R ({ratio:.0f}x)" if ratio is not None
                      else f">= {row['target']}x R (no R)")
        else:
            target = ""
        met = {True: "yes", False: "NO", None: ""}[row.get("met")]
        lines.append([row["label"], f"{row['best']:.3f} s", f"{row['median']:.3f} s",
                      f"{row['cpu_median']:.3f} s", target, met])
    if res.get("R"):
        r = res["R"]
        lines.append([f"R: metafor {r['metafor']} leave1out + influence (k = {res['k']})",
                      "", f"{r['seconds']:.2f} s", f"{r['cpu']:.2f} s", "", ""])
    return _render(head, lines)


def import_table(res: dict) -> str:
    pk = ("numpy", "pandas", "scipy.special", "yaml", "bibtexparser", "matplotlib")
    head = ["command", *pk, "scipy.stats", "pymare", "statsmodels"]
    lines = []
    for row in res["rows"]:
        cum, loaded = row["imports"]["cumulative"], row["imports"]["loaded"]
        lines.append([row["key"], *(f"{cum[p] * 1000:.0f} ms" if p in cum else "-" for p in pk),
                      *("LOADED" if loaded.get(p) else "no" for p in MUST_NOT_LOAD)])
    return _render(head, lines)


def report(res: dict) -> str:
    return ("Start-up: whole-process time per command (best / median of the repeats; cpu = "
            "median user + system)\n\n" + table(res) + "\n\nImports (python -X importtime, "
            "cumulative; '-' = not imported):\n\n" + import_table(res))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per command")
    ap.add_argument("--no-r", action="store_true", help="do not time R")
    ap.add_argument("--out", help="also write the results as JSON to this file")
    args = ap.parse_args(argv)
    res = measure(max(1, args.repeats), not args.no_r,
                  log=lambda m: print(m, file=sys.stderr, flush=True))
    print(report(res))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
