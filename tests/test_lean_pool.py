"""`metaalliance pool` on the curated data runs without pandas, scipy's subpackages and
matplotlib (issue 16's start-up target), and the lean path gives the DataFrame path's rows,
selection and numbers. Timing lives in benchmarks/startup.py; these tests check the imports
and the equalities the lean path rests on."""

import argparse
import itertools
import json
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metaalliance.cli import select
from metaalliance.dataset import findings
from metaalliance.dataset.selection import apply_where, matcher, number, where_keep
from metaalliance.options import SEPARATE_DOMAINS

ROOT = Path(__file__).resolve().parents[1]


def _imported(argv):
    """(exit code, stdout, the modules a fresh `python -X importtime -m metaalliance.cli
    ARGV` imported), run in the repository on the curated data."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "metaalliance.cli", *argv],
                       capture_output=True, text=True, cwd=ROOT)
    mods = {line.split("|")[-1].strip() for line in p.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}
    return p.returncode, p.stdout, mods


def _heavy(mods):
    """pandas, matplotlib, and scipy's subpackages (``scipy`` itself, ~8 ms, is imported for
    its version in the results' provenance)."""
    return sorted(m for m in mods if m.split(".")[0] in ("pandas", "matplotlib")
                  or (m.startswith("scipy.") and not m.split(".")[1].startswith("_")
                      and m.split(".")[1] not in ("version",)))


@pytest.mark.parametrize("argv", [["pool", "--json"], ["pool"],
                                  ["pool", "--method", "DL", "--where", "rater=client", "--json"],
                                  ["pool", "--cluster", "sample", "--json"],
                                  ["pool", "--cluster", "session", "--json"]])
def test_pool_imports_no_pandas_scipy_or_matplotlib(argv):
    code, out, mods = _imported(argv)
    assert code == 0
    assert "metaalliance.engine.models" in mods and "numpy" in mods      # it did run the fit
    assert _heavy(mods) == []
    if "--json" in argv:
        assert json.loads(out)["k"] > 0


def test_pool_with_moderators_still_builds_the_frame():
    """The other paths keep their DataFrame (the check above is not vacuous)."""
    code, _, mods = _imported(["pool", "--by", "rater", "--json"])
    assert code == 0 and "pandas" in mods


def _args(**kw):
    base = dict(where=[], data=None, findings=None, bib=None, all_domains=False, r_col=None,
                n_col=None, yi_col=None, vi_col=None, label_col=None)
    base.update(kw)
    return argparse.Namespace(**base)


WHERES = [[], ["rater=client"], ["rater=client,therapist", "population=adult"],
          ["read_in_review=TRUE"], ["read_in_review=false"], ["session=3.0"], ["session=3"],
          ["n=82.0"], ["year=2009"], ["year=2009.0,2013"], ["outcome_domain=retention,dropout"],
          ["instrument=WAI,CALPAS"]]


@pytest.mark.parametrize("where", WHERES)
@pytest.mark.parametrize("all_domains", [False, True])
def test_lean_selection_equals_the_frame_path(where, all_domains):
    """select() on plain rows gives what the DataFrame path gave: load(), apply_where, the
    adherence/retention/dropout rows apart, labels with the finding id when a study has
    several findings."""
    try:
        sel = select(_args(where=where, all_domains=all_domains))
    except Exception as exc:  # noqa: BLE001 (the frame path must fail the same way)
        sel = exc
    df = apply_where(findings.load(), [(f, v.split(",")) for f, v in
                                       (w.split("=", 1) for w in where)], "the curated dataset")
    if not all_domains and not any(w.startswith("outcome_domain=") for w in where):
        df = df[~df["outcome_domain"].isin(SEPARATE_DOMAINS)]
    df = df.reset_index(drop=True)
    if isinstance(sel, Exception):
        assert df.empty and "no findings" in str(sel)
        return
    assert sel._frame is None                                # built on first use only
    assert sel.columns == findings.COLUMNS
    pd.testing.assert_frame_equal(sel.frame, df)
    np.testing.assert_array_equal(sel.yi, df["yi"].to_numpy(dtype=float))
    np.testing.assert_array_equal(sel.vi, df["vi"].to_numpy(dtype=float))
    assert sel.labels == [f"{lab} {fid}" if (df["citekey"] == ck).sum() > 1 else lab
                          for lab, fid, ck in zip(df["label"], df["finding_id"], df["citekey"])]


def test_column_kinds_are_the_frame_dtypes():
    df = findings.load()
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])
               and not pd.api.types.is_bool_dtype(df[c])]
    boolean = [c for c in df.columns if pd.api.types.is_bool_dtype(df[c])]
    assert sorted(numeric) == sorted(findings.NUMERIC_COLUMNS)
    assert boolean == list(findings.BOOLEAN_COLUMNS)


def test_where_keep_on_rows_is_apply_where_on_the_frame():
    rows = findings.load_rows()
    df = findings.to_frame(rows)
    kinds = {**dict.fromkeys(findings.NUMERIC_COLUMNS, "numeric"),
             **dict.fromkeys(findings.BOOLEAN_COLUMNS, "boolean")}
    n = 0
    for col in findings.COLUMNS:
        present = [str(v) for v in df[col].dropna().unique()[:4]]
        for values in [[v] for v in present] + [[present[0] + ".0"], ["nan"], ["true"],
                                                 ["TRUE"], ["1"], [present[0], "zz"]]:
            kept = where_keep(rows, findings.COLUMNS, kinds, [(col, values)], "x")
            expect = df.index.isin(apply_where(df, [(col, values)], "x").index)
            assert kept == expect.tolist(), (col, values)
            n += sum(kept)
    assert n > 100                                         # the conditions do select rows
    with pytest.raises(Exception, match="has no column 'nosuch'"):
        where_keep(rows, findings.COLUMNS, kinds, [("nosuch", ["1"])], "the curated dataset")


def test_where_numbers_are_pandas_numbers():
    """``number`` reads what pandas.to_numeric reads (the old DataFrame rule)."""
    texts = ["2010", "1e3", ".5", "5.", "+3", "-0", "inf", "-Infinity", "iNf", "1e400",
             "00012", "1_000", "nan", "NaN", "0x10", "1d5", "True", "1e", "1,5", "\u0661"]
    ref = pd.to_numeric(pd.Series(texts), errors="coerce")
    for text, x in zip(texts, ref):
        assert number(text) == (None if x != x else x), text
    assert matcher(["2009.0"], "numeric")(2009) and not matcher(["2009.0"], "text")(2009)
    assert matcher(["TRUE"], "boolean")(True) and not matcher(["1"], "boolean")(True)


def test_latex_decoding_is_skipped_only_where_it_is_the_identity():
    """A value without ``findings._LATEX_RE`` decodes to itself: every printable ASCII
    character, pair and punctuation triple outside it is left alone by latex2text."""
    from bibtexparser.middlewares import LatexDecodingMiddleware

    dec = LatexDecodingMiddleware()._decoder
    chars = [c for c in string.printable if c not in "\x0b\x0c"]
    pool = list(string.punctuation + " \n\ta1")
    cases = ([f"a{c}b" for c in chars] + [f"x{a}{b}y" for a, b in itertools.product(chars, chars)]
             + ["x" + "".join(t) + "y" for t in itertools.product(pool, repeat=3)])
    plain = [s for s in cases if not findings._LATEX_RE.search(s)]
    assert len(plain) > 10_000
    assert [s for s in plain if dec.latex_to_text(s) != s] == []
    # and the rule is not vacuous: what it catches is changed
    for s in ["a\\&b", "a{b}c", "50\\%", "a~b", "1--2", "``q''", "a$$b"]:
        assert findings._LATEX_RE.search(s) and dec.latex_to_text(s) != s


def test_bib_parsed_as_with_full_decoding():
    import bibtexparser
    from bibtexparser.middlewares import LatexDecodingMiddleware

    text = (ROOT / "references.bib").read_text(encoding="utf-8") + (
        "\n@article{mueller2020x, author={M{\\\"u}ller, J. and O'Brien, K. and others}, "
        "title={A {B}ig--small test: 50\\% of ``cases''}, year={2020}, journal={J. \\& K.},"
        " doi={10.1/a~b}}\n")
    entries, problems = findings.parse_bib(text)
    full = bibtexparser.parse_string(text, append_middleware=[LatexDecodingMiddleware()])
    assert problems == []
    assert {k: e.fields for k, e in entries.items()} == {
        e.key: {k: str(f.value).strip() for k, f in e.fields_dict.items()} for e in full.entries}
    assert entries["mueller2020x"].fields["title"] == "A Big\u2013small test: 50% of \u201ccases\u201d"


@pytest.mark.parametrize("argv", [["--json"], ["--cluster", "sample", "--json"],
                                  ["--cluster", "session", "--json"],
                                  ["--cluster", "year", "--test", "knha", "--json"],
                                  ["--where", "rater=client", "--cluster", "citekey", "--json"]])
def test_lean_pool_prints_what_the_frame_path_prints(argv, capsys):
    """pool_selection on the lean Selection (records) and on one holding only the DataFrame
    (as a CSV selection does) prints the same JSON, warnings included (--cluster session
    omits the findings without a session and names them)."""
    import warnings

    from metaalliance.cli import Selection, build_parser
    from metaalliance.commands.pool import pool_selection

    args = build_parser().parse_args(["pool", *argv])
    outs = []
    for lean in (True, False):
        sel = select(args)
        if not lean:
            sel = Selection(frame=sel.frame, yi=sel.yi, vi=sel.vi, labels=sel.labels,
                            measure=sel.measure, omitted=sel.omitted, source=sel.source)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert pool_selection(sel, args, (args.cluster,) if args.cluster else ()) == 0
        outs.append((capsys.readouterr().out, [str(w.message) for w in caught]))
    assert outs[0] == outs[1]
    assert json.loads(outs[0][0])["k"] > 0
    if "session" in argv:
        assert "omitted" in outs[0][1][0] and "finding f1" in outs[0][1][0]
