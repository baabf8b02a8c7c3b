"""The explorer's server logic and the `explore` command, without a browser.

The browser tests (tests/browser/) drive the running app; these check what it computes: the
numbers of every view equal what the command line it prints gives (`pool ... --json`),
`pool --aggregate` equals metafor's aggregate() + rma(), and each bad input gets one line.
"""

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metaalliance import cli
from metaalliance.explorer import logic

REFERENCE = Path(__file__).parent / "reference" / "aggregate_pool.json"
#: metafor's default control (Fisher scoring to 1e-5) is what both sides run, so the composite
#: model's numbers agree far below the 1e-6 relative tolerance of the reference tests
RTOL = 1e-6


def _curated(**kw):
    ns = argparse.Namespace(where=[], data=None, findings=None, bib=None, all_domains=False)
    for key, value in kw.items():
        setattr(ns, key, value)
    return logic.load_dataset(ns)


def _pool_json(command: str, capsys, stderr=None) -> dict:
    """Run a command line the explorer shows (in this process) and parse its JSON; the
    `warning:` lines it printed are appended to ``stderr`` (a list) when given."""
    import shlex

    argv = shlex.split(command)
    assert argv[0] == "metaalliance"
    capsys.readouterr()
    assert cli.main(argv[1:]) == 0
    out = capsys.readouterr()
    if stderr is not None:
        stderr += [ln for ln in out.err.splitlines() if ln.startswith("warning: ")]
    return json.loads(out.out)


def _close(a, b, path=""):
    """Every number of ``a`` equals ``b`` (the same code computes both: exact)."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for key in a:
            _close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def curated():
    return _curated()


VIEWS = [
    {},
    {"chosen": {"rater": ["client"]}},
    {"chosen": {"rater": ["client", "observer"]}, "years": (2010, 2021), "method": "DL",
     "test": "knha"},
    {"model": "three_level_sample", "test": "knha"},
    {"model": "three_level_study", "method": "ML"},
    {"model": "composite_sample", "rho": 0.3},
    {"chosen": {"outcome_domain": ["symptoms", "adherence", "global", "functioning", "other",
                                   "dropout"]}},
]


@pytest.mark.parametrize("spec", VIEWS, ids=[str(i) for i in range(len(VIEWS))])
def test_every_view_equals_its_command_line(curated, spec, capsys):
    model = {k: spec[k] for k in ("method", "test", "model", "rho") if k in spec}
    view = logic.view_from_inputs(curated, spec.get("chosen", {}), spec.get("years"), **model)
    fitted = logic.fit_view(curated, view)
    assert fitted.message is None
    command = logic.command_line(curated, view)
    warned = []
    out = _pool_json(command, capsys, warned)
    _close(fitted.numbers, out)
    # the page shows the warnings the command line prints
    assert [f"warning: {cli.one_line(w)}" for w in fitted.warnings] == warned
    assert not any(isinstance(x, float) and math.isnan(x) for x in out.values())


def test_default_view_is_plain_pool(curated, capsys):
    """Nothing changed in the sidebar: `metaalliance pool --json`, the outcome findings."""
    view = logic.view_from_inputs(curated, {f: [lv for lv, _ in c] for f, _t, c in
                                            curated.tags() if f != "outcome_domain"},
                                  curated.years(), method="REML", test="z",
                                  model="independent", rho=0.5)
    assert logic.command_line(curated, view) == "metaalliance pool --json"
    sel = logic.select(curated, view)
    from metaalliance.options import SEPARATE_DOMAINS

    apart = int(curated.frame["outcome_domain"].isin(SEPARATE_DOMAINS).sum())
    assert apart > 0 and sel.apart == apart and sel.k == len(curated.frame) - apart
    assert logic.fit_view(curated, view).numbers == _pool_json("metaalliance pool --json", capsys)


def test_year_range_becomes_where_values(curated):
    view = logic.view_from_inputs(curated, {}, (2013, 2014))
    assert logic.where_items(curated, view) == [("year", ["2013", "2014"])]
    assert set(logic.select(curated, view).frame["year"]) <= {2013, 2014}


def test_fewer_than_two_findings_says_so(curated):
    none = logic.view_from_inputs(curated, {"rater": []})
    f = logic.fit_view(curated, none)
    assert f.fit is None
    assert f.message == ("No findings selected: no level of rater is ticked. Tick at least one.")
    one = logic.view_from_inputs(curated, {"rater": ["observer"]})
    f = logic.fit_view(curated, one)
    assert f.message.startswith("Fewer than 2 findings in this selection (k = 1)")
    assert logic.bias_view(curated, one, logic.select(curated, one)).fit is None
    with pytest.raises(logic.MetaAllianceError, match="at least 3 findings"):
        logic.leave_one_out_rows(curated, one, logic.select(curated, one))


def test_model_that_cannot_be_fitted_is_a_message(curated, capsys):
    """The three-level model has REML and ML only: the app says so (the command line refuses
    the same options)."""
    view = logic.View(model="three_level_sample", method="DL")
    f = logic.fit_view(curated, view)
    assert f.fit is None
    assert f.message == ("The three-level model is fitted by REML or ML (as metafor's rma.mv), "
                         "not DL: choose REML or ML as the estimator, or another working model.")
    assert cli.main(logic.command_line(curated, view).split()[1:]) == 1
    assert "method: 'DL' is not one of REML, ML" in capsys.readouterr().err


def test_model_errors_become_messages(curated):
    """An engine error (a rho typed as 1: a singular covariance matrix) is shown as its one
    line, never a traceback in the page."""
    f = logic.fit_view(curated, logic.View(model="composite_sample", rho=1.0))
    assert f.fit is None
    assert f.message.startswith("This model cannot be fitted here: aggregate: rho = 1 makes "
                                "the sampling covariance matrix of cluster ")


def test_source_links_carry_the_doi(curated):
    sel = logic.select(curated, logic.View())
    urls = [logic.source_url(s) for s in sel.frame["source"]]
    dois = [s for s in sel.frame["source"] if s.startswith("doi:")]
    assert dois, "the curated data cite DOIs"
    for s in dois:
        assert logic.source_url(s) == "https://doi.org/" + s[4:]
    assert logic.source_url("url:javascript:alert(1)") is None
    assert all(u is None or u.startswith(("https://", "http://")) for u in urls)


def test_downloads_are_valid_files(curated):
    view = logic.View()
    f = logic.fit_view(curated, view)
    pdf = logic.forest_download(curated, f, "pdf", 84)
    assert pdf.startswith(b"%PDF-")
    assert logic.forest_download(curated, f, "svg", 129).lstrip().startswith(b"<?xml")
    png = logic.forest_download(curated, f, "png", 84)
    assert png.startswith(b"\x89PNG")
    # 84 mm at 600 dpi: 1984 pixels wide
    assert int.from_bytes(png[16:20], "big") == round(84 / 25.4 * 600)
    bv = logic.bias_view(curated, view, logic.select(curated, view))
    assert bv.trimfill is not None and bv.egger is not None
    assert logic.figure_bytes(logic.funnel_figure(curated, bv, 84), "pdf").startswith(b"%PDF-")
    sel = logic.select(curated, view)
    csv = logic.selection_csv(sel).decode()
    assert csv.splitlines()[0].startswith("citekey,finding_id")
    import io

    import pandas as pd

    back = pd.read_csv(io.StringIO(csv))
    assert list(back["finding_id"]) == list(sel.frame["finding_id"])
    assert back["yi"].to_numpy() == pytest.approx(sel.yi, rel=1e-15)


def test_csv_dataset_views_equal_command_line(tmp_path, capsys):
    """A CSV with --data: filters on its tag columns; numbers equal `pool --data ... --json`."""
    rows = ["study,r,n,rater,year"] + [
        f"s{i},{0.1 + 0.03 * i:.2f},{30 + 7 * i},{'client' if i % 3 else 'observer'},"
        f"{2000 + i}" for i in range(12)]          # made-up fixture numbers, not findings
    csv = tmp_path / "fixture.csv"
    csv.write_text("\n".join(rows) + "\n")
    ds = logic.load_dataset(argparse.Namespace(data=str(csv), r_col="r", n_col="n",
                                               yi_col=None, vi_col=None, label_col=None,
                                               where=[]))
    assert [t[0] for t in ds.tags()] == ["rater"]
    assert list(ds.models()) == ["independent"]
    view = logic.view_from_inputs(ds, {"rater": ["client"]}, (2002, 2009), method="PM")
    command = logic.command_line(ds, view)
    assert "--where rater=client" in command and "--method PM" in command
    _close(logic.fit_view(ds, view).numbers, _pool_json(command, capsys))


# --- pool --aggregate against metafor ------------------------------------------------------------

def _reference_cases():
    return json.loads(REFERENCE.read_text())["cases"]


@pytest.mark.parametrize("case", _reference_cases(), ids=lambda c: c["name"])
def test_pool_aggregate_equals_metafor(case, tmp_path, capsys):
    """rma(yi, vi, data = aggregate(escalc("GEN", yi, vi), cluster, struct = "CS", rho))."""
    csv = tmp_path / "agg.csv"
    lines = ["yi,vi,cluster"] + [f"{y!r},{v!r},c{c}" for y, v, c in
                                 zip(case["yi"], case["vi"], case["cluster"])]
    csv.write_text("\n".join(lines) + "\n")
    out = _pool_json(f"metaalliance pool --data {csv} --yi yi --vi vi --aggregate cluster "
                     f"--rho {case['rho']} --json", capsys)
    assert out["k"] == case["k"]
    assert out["aggregate"] == {"cluster": "cluster", "rho": case["rho"],
                                "k_findings": len(case["yi"])}
    for key in ("estimate", "se", "ci_lower", "ci_upper", "pi_lower", "pi_upper", "tau2", "i2",
                "q"):
        assert out[key] == pytest.approx(case[key], rel=RTOL), key


def test_pool_aggregate_options_are_checked(capsys):
    assert cli.main(["pool", "--rho", "0.5"]) == 1
    assert capsys.readouterr().err.strip().endswith("error: --rho needs --aggregate COL, --rve or --working-model che")
    assert cli.main(["pool", "--aggregate", "sample", "--cluster", "sample"]) == 1
    assert "--aggregate cannot be combined with --by, --mods or --cluster" in \
        capsys.readouterr().err


# --- the explore command: bad input, port in use, Ctrl-C ------------------------------------------

def test_explore_csv_missing_column_is_one_line(tmp_path, capsys):
    csv = tmp_path / "bad.csv"
    csv.write_text("study,r,size\na,0.3,40\nb,0.2,50\n")
    assert cli.main(["explore", "--data", str(csv), "--r", "r", "--n", "n"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: ") and err[0].endswith(
        "bad.csv: no column 'n' (columns: study, r, size)")


def test_explore_port_in_use_is_one_line(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert cli.main(["explore", "--port", str(port)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: port {port} on 127.0.0.1 is already in use (another explorer or "
                   "server?); choose another with --port"]


def test_explore_bad_port_and_host(capsys):
    assert cli.main(["explore", "--port", "70000"]) == 1
    assert capsys.readouterr().err.strip() == \
        "error: --port 70000: must be between 0 (any free port) and 65535"
    assert cli.main(["explore", "--host", "192.0.2.1"]) == 1       # TEST-NET: not ours
    assert capsys.readouterr().err.strip() == \
        "error: --host 192.0.2.1: not an address of this machine"


def start_explorer(*args, env=None):
    """`metaalliance explore --port 0 --json ARGS` in a subprocess; returns (process, url)."""
    proc = subprocess.Popen([sys.executable, "-m", "metaalliance.cli", "explore", "--port", "0",
                             "--json", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        raise AssertionError(f"explore did not start: {proc.stderr.read()}")
    return proc, json.loads(line)["url"]


def _get(url, timeout=30.0):
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.status, resp.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_explore_serves_and_ctrl_c_stops_cleanly():
    proc, url = start_explorer()
    try:
        assert url.startswith("http://127.0.0.1:")
        status, body = _get(url)
        assert status == 200 and b"metaalliance explorer" in body
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    err = proc.stderr.read()
    assert rc in (0, 130), err
    assert "Traceback" not in err
    assert err.strip() in ("", "interrupted")


def test_start_up_where_and_all_domains_stay_in_the_command(capsys):
    """`explore --where population=adult --all-domains`: always applied, always reproduced."""
    ds = _curated(where=["population=adult,unspecified"], all_domains=True)
    view = logic.view_from_inputs(ds, {"rater": ["client"]}, method="PM")
    command = logic.command_line(ds, view)
    assert command == ("metaalliance pool --where population=adult,unspecified "
                       "--where rater=client --all-domains --method PM --json")
    sel = logic.select(ds, view)
    assert sel.apart == 0 and set(sel.frame["population"]) <= {"adult", "unspecified"}
    _close(logic.fit_view(ds, view).numbers, _pool_json(command, capsys))
