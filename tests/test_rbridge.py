"""The R bridge: `metaalliance export --r DIR` writes findings.csv, reproduce.R and
metaalliance.json; reproduce.R run by R's metafor gives our numbers.

The R tests run the written script with Rscript (skipped, with the reason, when Rscript,
metafor or jsonlite is missing) and compare every number metafor gives with ours: 1e-6
relative, or 1e-9 absolute for a variance component whose estimate is 0 (rma.mv optimises
log(sigma2) and ends at ~1e-10-1e-12, never 0).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metaalliance.cli import main

REF = json.loads((Path(__file__).parent / "reference" / "univariate.json").read_text())


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _r_ready() -> str | None:
    """None when Rscript with metafor and jsonlite runs, else why not."""
    if not shutil.which("Rscript"):
        return "Rscript is not installed"
    try:
        p = subprocess.run(["Rscript", "-e", "library(metafor); library(jsonlite)"],
                           capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"Rscript does not run: {exc}"
    if p.returncode != 0:
        return "R lacks metafor or jsonlite: " + (p.stderr.strip().splitlines() or ["?"])[-1]
    return None


R_MISSING = _r_ready()
needs_r = pytest.mark.skipif(R_MISSING is not None, reason=R_MISSING or "")


@pytest.fixture
def bcg_csv(tmp_path):
    """metadat's dat.bcg (log risk ratios, tests/reference/univariate.json) as a CSV."""
    d = REF["datasets"]["bcg"]
    path = tmp_path / "bcg.csv"
    pd.DataFrame({"label": d["labels"], "yi": d["yi"], "vi": d["vi"],
                  "ablat": d["data"]["ablat"], "alloc": d["data"]["alloc"]}).to_csv(path, index=False)
    return path


# --- without R ----------------------------------------------------------------------------------

def test_export_curated_writes_the_three_files_with_our_numbers(capsys, tmp_path):
    out = tmp_path / "bridge"
    code, stdout, _ = run(capsys, "export", "--r", str(out), "--json")
    assert code == 0
    done = json.loads(stdout)["r"]
    assert sorted(Path(f).name for f in done["files"]) == ["findings.csv", "metaalliance.json",
                                                           "reproduce.R"]
    ours = json.loads((out / "metaalliance.json").read_text())
    assert ours["cluster"] == "sample" and ours["measure"] == "ZCOR"
    # the same numbers as pool, and the CSV holds the very doubles pool fitted
    pool = json.loads(run(capsys, "pool", "--json")[1])
    three = json.loads(run(capsys, "pool", "--cluster", "sample", "--json")[1])
    vals = ours["values"]
    for key in ("estimate", "se", "tau2", "q", "i2", "ci_lower", "pi_upper"):
        assert vals[f"rma.{key}"] == pool[key], key
    assert vals["rma.mv.estimate"] == three["estimate"]
    assert vals["rma.mv.sigma2_1"] == three["sigma2"][0]
    csv = pd.read_csv(out / "findings.csv")
    assert len(csv) == pool["k"] == ours["k"]
    from metaalliance.dataset import findings
    df = findings.load()
    df = df[~df["outcome_domain"].isin(["adherence", "retention", "dropout"])]
    assert np.array_equal(csv["yi"].to_numpy(), df["yi"].to_numpy())
    assert np.array_equal(csv["vi"].to_numpy(), df["vi"].to_numpy())
    script = (out / "reproduce.R").read_text()
    for call in ("rma(yi, vi, data = dat", "rma.mv(yi, vi, random = ~ 1 | sample/es_id",
                 "regtest(res)", "ranktest(res)", "trimfill(res)", "forest(res",
                 "confint(res)", 'fromJSON("metaalliance.json")'):
        assert call in script, call
    # every number has a description
    assert set(ours["what"]) == set(vals)


def test_export_errors(capsys, tmp_path, bcg_csv):
    code, _, err = run(capsys, "export")
    assert code == 1 and err == ("error: export needs a target: --sheet FILE or --r DIR "
                                 "(see metaalliance export --help)\n")
    code, _, err = run(capsys, "export", "--r", str(tmp_path / "x"), "--data", str(bcg_csv),
                       "--yi", "yi", "--vi", "vi", "--mods", "~ latitude")
    assert code == 1 and err.endswith("--mods '~ latitude': no column 'latitude' in the data\n")
    code, _, err = run(capsys, "export", "--r", str(tmp_path / "x"), "--data", str(bcg_csv),
                       "--yi", "yi", "--vi", "vi", "--where", "alloc=alternate")
    assert code == 1 and err.endswith("export --r: needs at least 3 findings (the selection "
                                      "has 2)\n")
    code, _, err = run(capsys, "export", "--r", "data/findings/bridge")
    assert code == 1 and err.startswith("error: --out data/findings/bridge: inside data")
    assert not (tmp_path / "x").exists()


def test_export_r_flag_leaves_pools_r_column_flag_alone(capsys, tmp_path):
    """export takes --r DIR (the CSV's r column is --r-col there); pool keeps --r COL."""
    path = tmp_path / "d.csv"
    path.write_text("r,n\n0.3,50\n0.1,80\n0.45,40\n0.2,120\n-0.05,60\n")
    code, out, _ = run(capsys, "export", "--r", str(tmp_path / "b"), "--data", str(path),
                       "--r-col", "r", "--n", "n", "--json")
    assert code == 0
    pool = json.loads(run(capsys, "pool", "--data", str(path), "--r", "r", "--n", "n",
                          "--json")[1])
    ours = json.loads((tmp_path / "b" / "metaalliance.json").read_text())
    assert ours["values"]["rma.estimate"] == pool["estimate"] and ours["cluster"] is None


# --- with R -------------------------------------------------------------------------------------

def _run_script(folder: Path) -> dict:
    p = subprocess.run(["Rscript", "reproduce.R"], cwd=folder, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "metafor beside metaalliance" in p.stdout
    return json.loads((folder / "metafor.json").read_text()), p.stdout


def _compare(folder: Path, may_fail=()):
    ours = json.loads((folder / "metaalliance.json").read_text())["values"]
    theirs, stdout = _run_script(folder)
    worst = 0.0
    for key, mine in ours.items():
        r = theirs.get(key)
        if r is None:
            assert key.split(".")[0] in may_fail, f"metafor gave no {key}"
            assert f"metafor stops with an error in {key.split('.')[0]}()" in stdout
            continue
        if abs(mine) < 1e-9 and key.startswith("rma.mv.sigma2"):
            assert abs(r) < 1e-9, (key, mine, r)
            continue
        rel = abs(mine - r) / max(abs(r), abs(mine)) if mine != r else 0.0
        assert rel <= 1e-6, (key, mine, r, rel)
        worst = max(worst, rel)
    return worst


@needs_r
def test_r_script_reproduces_the_curated_analysis(capsys, tmp_path):
    """On the curated data metafor's regtest() and trimfill() stop ("Fisher scoring algorithm
    did not converge") under its default control; the script says so, and its retry with step
    halving reproduces regtest() (trimfill() still stops there)."""
    out = tmp_path / "bridge"
    assert run(capsys, "export", "--r", str(out))[0] == 0
    worst = _compare(out, may_fail=("trimfill",))
    assert worst < 1e-6 and (out / "forest.pdf").stat().st_size > 1000


@needs_r
def test_r_script_reproduces_a_csv_with_moderators_and_clusters(capsys, tmp_path, bcg_csv):
    out = tmp_path / "bridge"
    code = run(capsys, "export", "--r", str(out), "--data", str(bcg_csv), "--yi", "yi",
               "--vi", "vi", "--label", "label", "--mods", "~ ablat", "--mods",
               "~ alloc + ablat", "--cluster", "alloc")[0]
    assert code == 0
    ours = json.loads((out / "metaalliance.json").read_text())
    assert ours["moderator_models"] == ["~ ablat", "~ alloc + ablat"]
    assert "mods2.b4" in ours["values"]          # intercept, 2 alloc dummies, ablat
    assert _compare(out) < 1e-6
