"""The command line as a user meets it: help, exit codes, one-line errors, no tracebacks."""

import json
import math
import subprocess
import sys
import time

import pytest

from metaalliance.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "metaalliance.cli", *args],
                          capture_output=True, text=True)


def test_help_lists_commands_and_is_fast():
    start = time.perf_counter()
    proc = run("--help")
    assert proc.returncode == 0
    for cmd in ("validate", "add", "convert", "summary"):
        assert cmd in proc.stdout
    # heavy libraries must not be imported for --help
    code = ("import sys; from metaalliance.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('numpy', 'pandas', 'scipy', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.strip() == "[]"
    assert time.perf_counter() - start < 30  # not a timing test: only guards against a hang


def test_convert_json(capsys):
    assert main(["convert", "--stat", "t", "--value", "2.4", "--df", "48", "--n", "50",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["r"] == pytest.approx(2.4 / math.sqrt(53.76), rel=1e-12)
    assert out["z"] == pytest.approx(math.atanh(out["r"]), rel=1e-12)
    assert out["vi"] == pytest.approx(1 / 47, rel=1e-12)


def test_convert_errors_are_one_line():
    proc = run("convert", "--stat", "t", "--value", "2.4")
    assert proc.returncode == 1
    assert proc.stderr == "error: statistic: t needs df\n"
    proc = run("convert", "--stat", "r", "--value", "1")
    assert proc.returncode == 1
    assert proc.stderr == "error: the statistic converts to r = 1; |r| must be < 1\n"


def test_summary_counts_agree_with_the_data(capsys):
    from metaalliance.dataset.findings import load
    df = load()
    assert main(["summary", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["total"]["findings"] == len(df)
    assert out["total"]["studies"] == df.citekey.nunique()
    for tag, rows in out["by"].items():
        assert sum(r["findings"] for r in rows) == len(df), tag


def test_where_is_never_code(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("r,n,group\n0.1,50,a\n0.2,60,b\n")
    # an expression is just a value that matches nothing
    proc = run("pool", "--data", str(csv), "--r", "r", "--n", "n",
               "--where", "group=__import__('os').system('echo owned')")
    assert "owned" not in proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("content,message", [
    ("", "the file is empty"),
    ("r,n\n", "no data rows"),
    ("r,n\n0.2,50\n1.0,40\n", "row 3: r: 1 must lie strictly between -1 and 1 "
                              "(Fisher's z is infinite at +-1)"),
    ("r,n\n0.2,50\n0.1,3\n", "row 3: n: 3 must be > 3 (the variance 1/(n-3) needs n >= 4)"),
    ("r,n\n0.2,fifty\n", "row 2: n: 'fifty' is not a number"),
    ("r,n\n0.2,inf\n", "row 2: n: 'inf' is not a finite number"),
    ("x,n\n0.2,50\n", "no column 'r' (columns: x, n)"),
])
def test_csv_problems_name_row_and_column(tmp_path, content, message):
    from metaalliance.dataset import tabular
    from metaalliance.errors import DataError
    csv = tmp_path / "d.csv"
    csv.write_text(content)
    with pytest.raises(DataError) as err:
        tabular.read_effects(csv, r="r", n="n")
    assert str(err.value).endswith(message)


def test_required_columns_do_not_replace_the_variances(tmp_path):
    """Regression: a moderator column once overwrote vi in the selection."""
    from metaalliance.dataset import tabular
    csv = tmp_path / "d.csv"
    csv.write_text("yi,vi,year\n0.1,0.01,2001\n0.2,0.02,2002\n")
    sel = tabular.read_effects(csv, yi="yi", vi="vi", required_columns=("year",))
    assert list(sel["vi"]) == [0.01, 0.02]
    assert list(sel["frame"]["year"]) == ["2001", "2002"]


def test_labels_with_control_characters_stay_one_line(tmp_path):
    """Found by tests/test_fuzz_cli.py: a form feed in a label split a warning in two."""
    from metaalliance.dataset import tabular
    csv = tmp_path / "d.csv"
    csv.write_text("study,r,n\n0\f0,0.1,40\n\"a\tb\nc\",0.2,50\n,0.3,60\n")
    sel = tabular.read_effects(csv, r="r", n="n")
    assert sel["labels"] == ["0 0", "a b c", "row 4"]


@pytest.mark.parametrize("level,message", [
    ("30", "'30' must be a percentage between 50 and 100 (e.g. 95)"),
    ("150", "'150' must be a percentage between 50 and 100 (e.g. 95)"),
    ("abc", "'abc' is not a number"),
])
def test_level_is_checked_by_the_engine_rule_at_parse_time(level, message):
    proc = run("pool", "--level", level)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == \
        f"metaalliance pool: error: argument --level: {message}"
