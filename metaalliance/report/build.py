"""The report job (``metaalliance report``): read the findings, analyse, draw, render, and write
the report folder atomically with its manifest.

The pieces live beside this module: config (options), analysis (the models), apa_tables,
paragraph (APA text), drawing (figures), render (Jinja2 templates to HTML and Markdown).
"""

from __future__ import annotations

from metaalliance.report.analysis import analyse
from metaalliance.report.apa_tables import tables
from metaalliance.report.config import load_config
from metaalliance.report.drawing import figures
from metaalliance.report.render import html_report, markdown_report


MANIFEST_GENERATOR = "metaalliance report"


def _versions() -> dict:
    import platform
    from importlib import metadata

    from metaalliance import __version__

    out = {"python": platform.python_version(), "metaalliance": __version__}
    for name in ("numpy", "scipy", "pandas", "matplotlib", "statsmodels", "pymare", "tqdm",
                 "pyyaml", "bibtexparser"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _git(root) -> dict | None:
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_out_dir(out, data_dirs) -> "Path":
    """The report folder: never inside the curated data, never a folder that is not a report."""
    import json
    from pathlib import Path

    from metaalliance.errors import OptionError
    from metaalliance.dataset.findings import is_inside

    out = Path(out)
    for folder in data_dirs:
        if is_inside(out, folder):
            raise OptionError(f"--out {out}: inside {folder}, the curated data; write the "
                              "report elsewhere (e.g. --out results)")
    if out.exists():
        if not out.is_dir():
            raise OptionError(f"--out {out}: exists and is not a folder")
        if any(out.iterdir()):
            manifest = out / "manifest.json"
            try:
                ok = json.loads(manifest.read_text())["generator"] == MANIFEST_GENERATOR
            except (OSError, ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                raise OptionError(f"--out {out}: the folder is not empty and holds no earlier "
                                  "report (manifest.json); it is left alone: choose another")
    if not out.resolve().parent.is_dir():
        raise OptionError(f"--out {out}: folder {out.resolve().parent} does not exist")
    return out


def _replace_dir(tmp, out) -> None:
    """Move the finished report into place: the old one is swapped out, then removed."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    out = Path(out)
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.resolve().parent))
        os.replace(out, old / out.name)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old / out.name, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def run(config=None, out="results", *, quiet: bool = False, argv=None) -> "Path":
    """``metaalliance report``: analyse the curated data as ``config`` says and write the
    report folder ``out`` (built in a temporary folder beside it, then renamed)."""
    import json
    import shutil
    import sys
    import tempfile
    import time
    from pathlib import Path

    import pandas as pd
    from tqdm import tqdm

    from metaalliance.dataset import findings
    from metaalliance.dataset.fileio import atomic_write

    start = time.monotonic()
    cfg = load_config(config)
    base = Path(config).resolve().parent if config is not None else Path.cwd()

    def resolve(value, default):
        if value is None:
            return default
        p = Path(value)
        return p if p.is_absolute() else base / p

    findings_dir = resolve(cfg["data"]["findings"], findings.DEFAULT_FINDINGS)
    bib = resolve(cfg["data"]["bib"], findings.DEFAULT_BIB)
    data_dirs = {findings.DEFAULT_FINDINGS.parent, Path(findings_dir).parent
                 if Path(findings_dir).name == "findings" else Path(findings_dir)}
    out = check_out_dir(out, sorted(data_dirs))
    published_path = resolve(cfg["data"]["published"], None)

    steps = 13 + len(cfg["moderators"]["fields"]) * 3 + len(cfg["moderators"]["regression"]) * 2
    bar = tqdm(total=steps, desc="report", unit="step", file=sys.stderr, disable=quiet,
               dynamic_ncols=True, leave=True)

    def tick(label: str) -> None:
        bar.set_postfix_str(label, refresh=False)
        if bar.n < bar.total:
            bar.update(1)

    try:
        tick("loading the findings")
        df = findings.load(findings_dir, bib)
        published = None
        if published_path is not None and published_path.is_file():
            published = pd.read_csv(published_path, dtype={"key": str})
        analysis = analyse(df, cfg, published, tick)
        from metaalliance.analyses import coverage
        analysis.coverage = coverage.coverage(findings_dir, bib)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.resolve().parent))
        try:
            (tmp / "tables").mkdir()
            (tmp / "figures").mkdir()
            figs = figures(analysis, tmp, tick)
            tick("tables and report")
            tabs = tables(analysis)
            for tab in tabs:
                atomic_write(tmp / "tables" / f"{tab.name}.csv", tab.csv())
                atomic_write(tmp / "tables" / f"{tab.name}.md", tab.markdown())
            cols = [c for c in findings.COLUMNS if c in analysis.data_all.columns]
            frame = analysis.data_all[cols].assign(
                in_main=analysis.data_all["outcome_domain"].isin(
                    analysis.data_main["outcome_domain"].unique()))
            atomic_write(tmp / "tables" / "findings.csv", frame.to_csv(index=False))
            atomic_write(tmp / "report.md", markdown_report(analysis, tabs, figs))
            manifest = {
                "generator": MANIFEST_GENERATOR,
                "versions": _versions(),
                "config_file": str(config) if config is not None else None,
                "config_sha256": _sha256(Path(config)) if config is not None else None,
                "options": {k: v for k, v in cfg.items() if not k.startswith("_")},
                "data": {"findings": findings.display_path(findings_dir),
                         "bib": findings.display_path(bib),
                         "hash": findings.data_hash(findings_dir, bib),
                         "findings_total": int(len(analysis.data_all)),
                         "findings_main": int(len(analysis.data_main)),
                         "studies": int(analysis.data_all["citekey"].nunique()),
                         "yi_vi_hash_main": (analysis.main.result.provenance.get("data_hash")
                                             if analysis.main.ok else None)},
                "published_syntheses": ({"file": findings.display_path(published_path),
                                         "sha256": _sha256(published_path)}
                                        if published is not None else None),
                "git": _git(findings.REPO_ROOT),
                "command": list(argv) if argv is not None else None,
                "main_result": analysis.main.result.to_dict() if analysis.main.ok else None,
                "files": {},
            }
            html_files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
            manifest["files"] = {f: None for f in html_files + ["report.html"]}
            atomic_write(tmp / "report.html", html_report(analysis, tabs, figs, tmp, manifest))
            manifest["files"] = {str(p.relative_to(tmp)): _sha256(p)
                                 for p in sorted(tmp.rglob("*")) if p.is_file()}
            manifest["seconds"] = round(time.monotonic() - start, 1)
            atomic_write(tmp / "manifest.json",
                         json.dumps(manifest, indent=2, allow_nan=False, default=_json_default))
            _replace_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        bar.update(bar.total - bar.n)
    finally:
        bar.close()
    return out


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
