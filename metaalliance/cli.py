"""The ``metaalliance`` command.

Each subcommand lives in ``metaalliance/commands/<name>.py`` with ``register(subparsers, common)``
and ``run(args) -> int``. This module owns what they share: the data-selection flags, ``select()``
(curated data or a CSV -> yi, vi), the error boundary (a MetaAllianceError becomes one line on
stderr and exit 1, never a traceback) and warnings on stderr.

Only argparse is imported at start-up so that ``metaalliance --help`` answers fast; numpy,
pandas and friends are imported by the subcommand that needs them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommands, in the order --help lists them; a module that is not there yet is skipped
COMMANDS = ("validate", "summary", "add", "agree", "diff", "export", "convert", "pool", "bias",
            "selection", "sensitivity", "forest", "funnel", "prisma", "report", "multiverse",
            "explore")

DESCRIPTION = """\
Process-outcome meta-analysis of the therapeutic alliance.

Reviewers:  metaalliance validate | add | summary     (the curated dataset)
Teams:      metaalliance add --file SHEET | agree | diff | export   (sheets, double extraction)
Analysts:   metaalliance pool | bias | selection | sensitivity | multiverse  (agree with metafor)
            metaalliance export --r DIR                (an R script that checks them in metafor)
Authors:    metaalliance forest | funnel | prisma | report  (figures and the full report)
Everyone:   metaalliance explore                       (the dataset in the browser)
Multiverse: metaalliance multiverse                   (every specification, its curve)

Without --data every command works on the curated dataset (data/findings + references.bib).
Run `metaalliance COMMAND --help` for each command's options."""


from metaalliance.dataset.selection import apply_where, parse_where as _parse_where  # noqa: E402,F401


# --- shared flags ------------------------------------------------------------------------------

def _dataset_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("curated dataset")
    g.add_argument("--findings", metavar="DIR",
                   help="folder of study YAML files (default: the shipped data/findings)")
    g.add_argument("--bib", metavar="FILE",
                   help="BibTeX file with one entry per study (default: the shipped references.bib)")
    return p


def _selection_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group(
        "data selection",
        "Curated data by default; or any CSV with --data and either --r/--n or --yi/--vi.")
    g.add_argument("--data", metavar="CSV", help="a CSV file instead of the curated dataset")
    g.add_argument("--r", metavar="COL", dest="r_col", help="CSV column holding correlations")
    g.add_argument("--n", metavar="COL", dest="n_col", help="CSV column holding sample sizes")
    g.add_argument("--yi", metavar="COL", dest="yi_col", help="CSV column holding effect sizes")
    g.add_argument("--vi", metavar="COL", dest="vi_col",
                   help="CSV column holding sampling variances")
    g.add_argument("--label", metavar="COL", dest="label_col",
                   help="CSV column with study labels (default: label, study or row number)")
    g.add_argument("--where", metavar="FIELD=VALUE", action="append", default=[],
                   help="keep rows whose FIELD equals VALUE (comma for alternatives; repeatable; "
                        "a plain comparison, never evaluated as code)")
    g.add_argument("--all-domains", action="store_true",
                   help="curated data: keep adherence/retention/dropout findings, which are "
                        "otherwise analysed apart from the outcome findings")
    return p


def _level(text: str) -> float:
    """--level: checked by the engine's own rule (inference.level_alpha), so the parser and the
    API accept the same values."""
    from metaalliance.errors import OptionError
    from metaalliance.engine.inference import level_alpha
    try:
        return level_alpha(text)[0]
    except OptionError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("level: ")) from None


def add_model_options(parser, test_help: str = "z (normal) or knha (Knapp-Hartung, t/F)"):
    """The model flags every analysis command shares (--method, --test, --level, --control);
    returns the argument group so a command can add its own model flags to it."""
    from metaalliance.options import CONTROLS, DEFAULT_CONTROL, DEFAULT_METHOD, DEFAULT_TEST, METHODS, TESTS

    g = parser.add_argument_group("model")
    g.add_argument("--method", default=DEFAULT_METHOD, choices=list(METHODS),
                   help=f"tau^2 estimator (default {DEFAULT_METHOD}; EE = equal effects)")
    g.add_argument("--test", default=DEFAULT_TEST, choices=list(TESTS), help=test_help)
    g.add_argument("--level", type=_level, default=95.0,
                   help="confidence level in %% (default 95)")
    g.add_argument("--control", default=DEFAULT_CONTROL, choices=list(CONTROLS),
                   help="how ML/REML/EB/PM and the tau^2 CI iterate: metafor (default: stop "
                        "where metafor's default control stops, so numbers equal plain "
                        "rma()/confint() calls) or optimum (iterate to the exact optimum)")
    return g


class Selection:
    """What a subcommand analyses: the kept rows and their yi/vi (z scale for r data).

    ``frame`` is a pandas DataFrame of the kept rows. The curated dataset arrives as plain rows
    (``findings.load_rows``) and its DataFrame is built on first use of ``frame``, so that a
    command that needs only yi, vi and labels (``pool``) does not import pandas.
    """

    def __init__(self, frame=None, yi=None, vi=None, labels=(), measure="ZCOR", omitted=0,
                 source="curated", rows=None, records=None, columns=None, kinds=None):
        self._frame = frame
        self.yi = yi               # numpy array
        self.vi = vi               # numpy array
        self.labels = list(labels)
        self.measure = measure     # "ZCOR" or "generic"
        self.omitted = omitted
        self.source = source       # "curated" or the CSV path
        self.rows = rows           # CSV: each kept row's number as a spreadsheet shows it
        self._records = records    # curated: the kept rows as dicts (findings.load_rows)
        self._columns = list(columns) if columns is not None else None
        self._kinds = dict(kinds or {})  # records: column -> "numeric"/"boolean" (else text)

    @property
    def frame(self):
        """The kept rows as a DataFrame (index 0..k-1), built from the records on first use."""
        if self._frame is None:
            from metaalliance.dataset import findings

            self._frame = findings.to_frame(self._records)
        return self._frame

    @property
    def columns(self) -> list:
        """The column names, without building the DataFrame."""
        if self._columns is not None:
            return list(self._columns)
        return list(self.frame.columns)

    def column(self, name: str) -> list:
        """One column's values as a list, without building the DataFrame when it is not
        built yet (missing: None or NaN in the records; as ``frame[name].tolist()`` else)."""
        if self._frame is None and self._records is not None:
            return [row[name] for row in self._records]
        return self.frame[name].tolist()

    def missing(self, name: str):
        """Boolean array: the rows without a value in column ``name`` (None, NaN or NA, or
        blank text in a text column)."""
        import numpy as np

        if self._frame is None and self._records is not None:
            from metaalliance.dataset.selection import is_missing

            text = self._kinds.get(name, "text") == "text"
            return np.array([is_missing(v) or (text and str(v).strip() == "")
                             for v in self.column(name)], dtype=bool)
        col = self.frame[name]
        miss = col.isna().to_numpy()
        if col.dtype == object or str(col.dtype).startswith("str"):
            miss = miss | (col.astype(str).str.strip() == "").to_numpy()
        return miss


def select(args, *, required_columns=()) -> Selection:
    """The rows a subcommand analyses, from the curated dataset or ``--data CSV``.

    Rows with a missing value in a used column are omitted, counted and warned about.
    The curated dataset is filtered as plain rows (``selection.where_keep``, the same test
    as ``apply_where``); its DataFrame is built when a command uses ``Selection.frame``.
    """
    from collections import Counter

    import numpy as np

    from metaalliance.errors import DataError, OptionError
    from metaalliance.options import SEPARATE_DOMAINS

    where = _parse_where(getattr(args, "where", []) or [])
    if getattr(args, "data", None):
        from metaalliance.dataset.tabular import read_effects
        sel = read_effects(args.data, r=args.r_col, n=args.n_col, yi=args.yi_col, vi=args.vi_col,
                           label=getattr(args, "label_col", None), where=where,
                           required_columns=required_columns)
        return Selection(**sel)
    for flag in ("r_col", "n_col", "yi_col", "vi_col", "label_col"):
        if getattr(args, flag, None):
            raise OptionError(f"--{flag[:-4].replace('_', '-')} needs --data CSV "
                              "(the curated dataset has its own r and n)")
    from metaalliance.dataset import findings
    from metaalliance.dataset.selection import where_keep

    rows = findings.load_rows(getattr(args, "findings", None), getattr(args, "bib", None))
    kinds = {**dict.fromkeys(findings.NUMERIC_COLUMNS, "numeric"),
             **dict.fromkeys(findings.BOOLEAN_COLUMNS, "boolean")}
    keep = where_keep(rows, findings.COLUMNS, kinds, where, "the curated dataset")
    rows = [row for row, kp in zip(rows, keep) if kp]
    n_apart = 0
    if not getattr(args, "all_domains", False) and not any(f == "outcome_domain" for f, _ in where):
        apart = [row["outcome_domain"] in SEPARATE_DOMAINS for row in rows]
        n_apart = sum(apart)
        if n_apart:
            note(f"{n_apart} adherence/retention/dropout finding(s) analysed apart "
                 "(use --where outcome_domain=... or --all-domains to include them)")
        rows = [row for row, ap in zip(rows, apart) if not ap]
    for col in required_columns:
        if col not in findings.COLUMNS:
            raise OptionError(f"the curated dataset has no column {col!r}")
    if not rows:
        if where:
            raise DataError("no findings left after the selection "
                            f"({' '.join('--where ' + f + '=' + ','.join(v) for f, v in where)})")
        folder = getattr(args, "findings", None) or findings.DEFAULT_FINDINGS
        hint = (f" ({n_apart} adherence/retention/dropout finding(s) are analysed apart; "
                "--all-domains includes them)" if n_apart else "")
        raise DataError(f"{findings.display_path(folder)}: no findings to analyse{hint}")
    per_study = Counter(row["citekey"] for row in rows)
    labels = [f"{row['label']} {row['finding_id']}" if per_study[row["citekey"]] > 1
              else row["label"] for row in rows]
    return Selection(yi=np.array([row["yi"] for row in rows], dtype=float),
                     vi=np.array([row["vi"] for row in rows], dtype=float), labels=labels,
                     measure="ZCOR", omitted=0, source="curated", records=rows,
                     columns=findings.COLUMNS, kinds=kinds)


# --- output helpers ----------------------------------------------------------------------------

def note(message: str) -> None:
    """A one-line note on stderr."""
    print(f"note: {one_line(message)}", file=sys.stderr)


def print_json(obj) -> None:
    """JSON on stdout; NaN/inf are refused (a bug, never output)."""
    import json
    print(json.dumps(obj, indent=2, allow_nan=False))


def one_line(text: str) -> str:
    """``text`` with line breaks and control characters escaped: a message that quotes a
    value from the data (a label, a subgroup) stays one line on stderr."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def progress_bar(enabled: bool, unit: str, desc: str):
    """(progress(done, total), close()): a tqdm bar on stderr when ``enabled`` (a terminal and
    no --json), else (None, a no-op). The bar appears on the first progress call."""
    if not enabled:
        return None, (lambda: None)
    from tqdm import tqdm

    bar = {"obj": None}

    def progress(done, total):
        if bar["obj"] is None:
            bar["obj"] = tqdm(total=total, unit=unit, desc=desc, leave=False)
        bar["obj"].update(max(0, done - bar["obj"].n))

    def close():
        if bar["obj"] is not None:
            bar["obj"].close()

    return progress, close


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {one_line(message)}", file=sys.stderr)


# --- entry point -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from metaalliance import __version__
    parser = argparse.ArgumentParser(
        prog="metaalliance", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"metaalliance {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = {"dataset": _dataset_parent(), "selection": _selection_parent()}
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"metaalliance.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"metaalliance.commands.{name}":
                continue
            raise
        module.register(sub, common)
    return parser


def check_output_path(args) -> None:
    """Refuse an ``--out`` that would write into the curated data or over an input.

    Protected: the shipped data/ folder and references.bib, the ``--findings`` folder and
    ``--bib`` file of this run, and the ``--data`` CSV. Raises OptionError.
    """
    out = getattr(args, "out", None)
    if not out:
        return
    from pathlib import Path

    from metaalliance.errors import OptionError
    from metaalliance.dataset.findings import DEFAULT_BIB, DEFAULT_FINDINGS, display_path, is_inside

    folders = [DEFAULT_FINDINGS.parent]
    if getattr(args, "findings", None):
        folders.append(Path(args.findings))
    for folder in folders:
        if is_inside(out, folder):
            raise OptionError(f"--out {out}: inside {display_path(folder)}, the curated data; "
                              "write elsewhere (e.g. --out results/...)")
    files = [(DEFAULT_BIB, "the curated bibliography")]
    if getattr(args, "bib", None):
        files.append((Path(args.bib), "the bibliography"))
    if getattr(args, "data", None):
        files.append((Path(args.data), "the input data"))
    for path, what in files:
        if is_inside(out, path):
            raise OptionError(f"--out {out}: that is {display_path(path)}, {what}; "
                              "write elsewhere")


def _error_lines(exc, args) -> list[str]:
    """The lines printed for a MetaAllianceError: one per problem, each naming the input."""
    from metaalliance.errors import DataError, ModelError

    if getattr(exc, "problems", None):          # ValidationError: one line per problem
        return [one_line(p) for p in exc.problems]
    lines = [one_line(exc)] if str(exc) else [type(exc).__name__]
    data = getattr(args, "data", None)
    if data and isinstance(exc, (DataError, ModelError)):
        from metaalliance.dataset.fileio import display_path

        name = display_path(data)
        lines = [ln if ln.startswith(name + ":") else f"{name}: {ln}" for ln in lines]
    return [f"error: {ln}" for ln in lines]


def main(argv=None) -> int:
    """Run the command line; returns the exit code.

    0 success; 1 a problem with the input or the options (one line per problem on stderr,
    never a traceback); 2 usage (argparse); 70 an internal error, i.e. a bug (one line; the
    traceback with METAALLIANCE_DEBUG=1); 130 interrupted.
    """
    import os
    import warnings

    from metaalliance.errors import MetaAllianceError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    warnings.showwarning = _show_warning
    try:
        check_output_path(args)
        return int(args.run(args) or 0)
    except MetaAllianceError as exc:
        for line in _error_lines(exc, args):
            print(line, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except MemoryError:
        print("error: not enough memory for this analysis; select fewer rows (--where) or use "
              "a machine with more memory", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {one_line(f'{where}{exc.strerror or exc}')}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: one line for the user, the traceback on request
        if os.environ.get("METAALLIANCE_DEBUG"):
            raise
        first = (str(exc).splitlines() or [""])[0][:200]
        print(f"internal error: {type(exc).__name__}: {first} (a bug in metaalliance; "
              "please report it with the command; METAALLIANCE_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
