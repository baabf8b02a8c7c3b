"""Server time of a filter change in `metaalliance explore` (issue 15: under 300 ms).

    .venv/bin/python -m benchmarks.explorer [--repeats 7]

What a filter change costs the server: the new selection (``logic.select``), the model
(``logic.fit_view``: ``models.random_effects``), the estimate's text, the forest plot
(``plots.forest_plot``) and its PNG for the page, i.e. the two outputs visible by default
(the other tabs are computed only when opened). Timed on the curated dataset and on a
1,000-finding SIMULATED CSV (``benchmarks/data.py``, written to a temporary folder), each
filter change a different rater selection, so nothing is served from a cache. Best and median
of ``--repeats`` rounds of every change, after one warm-up round (fonts, imports).

Not a test: timings depend on the machine and its load (benchmarks/README.md records them).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def _curated():
    from metaalliance.explorer import logic

    return logic.load_dataset(argparse.Namespace(where=[], data=None, findings=None, bib=None,
                                                 all_domains=False))


def _simulated(folder: Path, k: int = 1000):
    """A CSV of k simulated correlations with rater/instrument/modality/year tags."""
    import pandas as pd

    from benchmarks.data import simulate
    from metaalliance.explorer import logic

    d = simulate(k)
    # SIMULATED data (benchmarks/data.py), not real studies: the labels say so
    df = pd.DataFrame({"label": [f"SIMULATED {i + 1}" for i in range(k)], "r": d["r"],
                       "n": d["n"],
                       "instrument": d["instrument"], "rater": d["rater"],
                       "modality": d["modality"], "year": d["year"], "study": d["study"]})
    path = folder / "simulated_1000.csv"
    df.to_csv(path, index=False)
    return logic.load_dataset(argparse.Namespace(data=str(path), r_col="r", n_col="n",
                                                 yi_col=None, vi_col=None, label_col="label",
                                                 where=[]))


def filter_change(ds, chosen: dict) -> dict:
    """Everything the server does for one filter change; returns the seconds of each part."""
    from metaalliance.explorer import logic

    c0 = time.process_time()
    t0 = time.perf_counter()
    view = logic.view_from_inputs(ds, chosen, None)
    sel = logic.select(ds, view)
    fitted = logic.fit_view(ds, view, sel)
    logic.summary_rows(ds, fitted)
    logic.command_line(ds, view)
    t1 = time.perf_counter()
    fig = logic.forest_figure(ds, fitted, 174.0, preview=True)
    logic.svg_data_uri(fig)
    t2 = time.perf_counter()
    c2 = time.process_time()
    return {"estimate": t1 - t0, "forest": t2 - t1, "total": t2 - t0, "cpu": c2 - c0,
            "k": fitted.fit.k}


def _changes(ds):
    levels = [lv for lv, _ in dict((f, c) for f, _t, c in ds.tags())["rater"]]
    out = [{"rater": levels}]
    out += [{"rater": [lv for lv in levels if lv != drop]} for drop in levels]
    out += [{"rater": [lv]} for lv in levels]
    return out


def run(repeats: int = 7) -> list:
    from metaalliance.explorer import logic

    rows = []
    with tempfile.TemporaryDirectory(prefix="metaalliance-bench-") as tmp:
        for name, ds in (("curated", _curated()), ("simulated k=1000", _simulated(Path(tmp)))):
            changes = [c for c in _changes(ds)
                       if logic.select(ds, logic.view_from_inputs(ds, c, None)).k >= 2]
            for c in changes:              # warm-up: fonts, imports, caches of matplotlib
                filter_change(ds, c)
            times = [filter_change(ds, c) for _ in range(repeats) for c in changes]
            ks = sorted({t["k"] for t in times})
            row = {"data": name, "changes": len(changes), "k": f"{ks[0]}-{ks[-1]}"}
            for part in ("estimate", "forest", "total", "cpu"):
                xs = [t[part] for t in times]
                row[part] = (min(xs), statistics.median(xs), max(xs))
            rows.append(row)
    return rows


def main(argv=None) -> int:
    import os
    import platform

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    rows = run(args.repeats)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("wall-clock ms, best / median / max over every filter change; cpu = the server "
          "process's CPU time for the whole change")
    print(f"{'data':<18} {'k':>9} | {'estimate':>18} | {'forest (SVG)':>18} | "
          f"{'total':>18} | {'cpu':>18} | target: total < 300 ms (median)")
    for r in rows:
        fmt = lambda t: f"{t[0] * 1e3:5.0f} /{t[1] * 1e3:5.0f} /{t[2] * 1e3:5.0f}"  # noqa: E731
        met = "met" if r["total"][1] < 0.3 else "NOT met"
        print(f"{r['data']:<18} {r['k']:>9} | {fmt(r['estimate']):>18} | "
              f"{fmt(r['forest']):>18} | {fmt(r['total']):>18} | {fmt(r['cpu']):>18} | {met}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
