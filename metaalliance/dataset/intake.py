"""Spreadsheet intake: a review team's sheet -> findings to add, every problem at once.

A sheet has one finding per row and columns named as the flat ``add`` fields (``citekey``, the
study fields, ``id``, ``n``, ``stat_type``, ``value``, ``df`` ... ``note``). The columns are
derived from the codebook's field lists in ``findings`` (and the levels from ``options``), so a
field or level added there is a sheet column or a validation list here without a change.

``parse_sheet()`` turns cells into typed values and lists every bad cell as
``sheet.xlsx: row 7: instrument: 'WAIX' is not a level (allowed: ...)`` (row as a spreadsheet
shows it, header = row 1). ``plan_import()`` groups rows into studies, checks them with the
dataset's own rules (``findings.check_study`` / ``check_finding``) and returns the studies to
add or every problem; ``import_sheet()`` writes nothing unless every row is clean, and then
writes all rows in one atomic transaction (``curate.add_findings``).

``--mapping MAP.toml`` renames a team's columns and spellings::

    [columns]                 # the team's column = our field
    "Study" = "citekey"
    "Measure" = "instrument"
    [values.instrument]       # the team's spelling = our level
    "Working Alliance Inventory" = "WAI"
    [values.rater]
    pt = "client"

``write_template()`` and ``export_sheet()`` (in ``intake_write``) write the sheets.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from metaalliance.dataset import findings as F
from metaalliance.dataset.sheets import Formula, column_letter, is_date, read_sheet
from metaalliance.errors import DataError, ValidationError
from metaalliance.options import STATISTICS, VOCABULARIES


# --- the sheet's columns ------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    """One sheet column: where its value goes in the study file and what it holds."""
    name: str            # the header in our sheet
    path: tuple          # ("study", key) | ("finding", key) | ("finding", "statistic", key) ...
    kind: str            # "text" | "int" | "number" | "bool" | "level" | "auto"
    levels: tuple = ()
    required: bool = False   # required in every row (study fields: for a new study)

    @property
    def field(self) -> str:
        """The field as the codebook names it (statistic.value, outcome.domain, population)."""
        return ".".join(self.path[1:])


_KNOWN_KINDS = {"n": "int", "session": "int", "sign": "int", "n1": "int", "n2": "int",
                "value": "number", "df": "number", "positive_is_better": "bool"}
#: text fields of the codebook (a new field not named here and not a vocabulary is "auto":
#: kept as typed, so a true/false field reaches the validator as a boolean)
_TEXT = {"citekey", "country", "source", "diagnosis_detail", "treatment_detail", "read_at",
         "note", "id", "instrument_detail", "locator", "sample", "curation_id", "measure"}


def _kind(key: str, vocab: str | None = None):
    if key == "type":
        return "level", tuple(STATISTICS)
    vocab = vocab or key
    if vocab in VOCABULARIES:
        return "level", tuple(VOCABULARIES[vocab])
    if key in _KNOWN_KINDS:
        return _KNOWN_KINDS[key], ()
    return ("text" if key in _TEXT else "auto"), ()


def columns() -> list[Column]:
    """The sheet's columns in order: citekey, study fields, finding fields."""
    out = []
    for key in F.STUDY_REQUIRED + F.STUDY_OPTIONAL:
        if key == "findings":
            continue
        kind, levels = _kind(key)
        out.append(Column("study_note" if key == "note" else key, ("study", key), kind, levels,
                          key in F.STUDY_REQUIRED))
    for key in F.FINDING_REQUIRED + F.FINDING_OPTIONAL:
        required = key in F.FINDING_REQUIRED and key not in ("id", "sample")  # defaults exist
        if key == "statistic":
            for sub in F.STAT_FIELDS:
                kind, levels = _kind(sub)
                out.append(Column("stat_type" if sub == "type" else sub,
                                  ("finding", "statistic", sub), kind, levels,
                                  sub in ("type", "value")))
        elif key == "outcome":
            for sub, vocab in (("measure", None), ("domain", "outcome_domain")):
                kind, levels = _kind(sub, vocab)
                out.append(Column(f"outcome_{sub}", ("finding", "outcome", sub), kind, levels,
                                  True))
        elif key in F.OVERRIDABLE:
            kind, levels = _kind(key)
            out.append(Column(f"{key}_override", ("finding", key), kind, levels))
        else:
            kind, levels = _kind(key)
            out.append(Column(key, ("finding", key), kind, levels, required))
    return out


def column_map() -> dict[str, Column]:
    return {c.name: c for c in columns()}


def _field_to_column() -> dict[str, str]:
    """A finding-level problem's field (statistic.type, outcome.domain, population) -> column."""
    out = {}
    for c in columns():
        if c.path[0] == "finding":
            out[c.field] = c.name
    return out


# --- the mapping file ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Mapping:
    columns: dict      # team column -> our column
    values: dict       # our column -> {team spelling: our level}
    name: str = ""


NO_MAPPING = Mapping({}, {})


def read_mapping(path) -> Mapping:
    """Read ``--mapping MAP.toml``; every problem in one ValidationError."""
    import tomllib

    path = Path(path)
    name = F.display_path(path)
    if not path.is_file():
        raise DataError(f"{name}: file not found")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{name}: not UTF-8 text (at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{name}: cannot parse TOML: {exc}") from None
    cols = column_map()
    problems = []
    for key in doc:
        if key not in ("columns", "values"):
            problems.append(f"{name}: {key}: unknown table (allowed: columns, values)")
    mapped: dict[str, str] = {}
    colmap = doc.get("columns", {})
    if not isinstance(colmap, dict):
        problems.append(f"{name}: columns: must be a table of \"team column\" = \"our column\"")
        colmap = {}
    for theirs, ours in colmap.items():
        if not isinstance(ours, str) or ours not in cols:
            problems.append(f"{name}: columns: {theirs!r} = {ours!r}: {ours!r} is not a column "
                            f"(allowed: {', '.join(cols)})")
        elif ours in mapped:
            problems.append(f"{name}: columns: {mapped[ours]!r} and {theirs!r} both map to "
                            f"{ours!r} (a column mapped twice)")
        else:
            mapped[ours] = theirs
    values = doc.get("values", {})
    if not isinstance(values, dict):
        problems.append(f"{name}: values: must hold one table per column, e.g. [values.rater]")
        values = {}
    for col, table in values.items():
        if col not in cols:
            problems.append(f"{name}: values.{col}: not a column (allowed: {', '.join(cols)})")
            continue
        if not isinstance(table, dict):
            problems.append(f"{name}: values.{col}: must be a table of \"spelling\" = \"level\"")
            continue
        levels = cols[col].levels
        for theirs, ours in table.items():
            if levels and ours not in levels:
                problems.append(f"{name}: values.{col}: {theirs!r} = {ours!r}: {ours!r} is not a "
                                f"level (allowed: {', '.join(levels)})")
    if problems:
        raise ValidationError(problems)
    return Mapping(dict(colmap), {k: dict(v) for k, v in values.items()}, name)


# --- cells -> typed records ---------------------------------------------------------------------

@dataclass
class Record:
    """One sheet row: its number and its typed values by column name (missing cells absent)."""
    row: int
    values: dict


class _Bad(Exception):
    pass


def _show(value) -> str:
    if is_date(value):
        value = value.isoformat()
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def convert_cell(value, col: Column):
    """A cell's value for ``col``, or raise _Bad(message)."""
    if isinstance(value, Formula):
        raise _Bad(f"a formula cell ({_show(str(value))}); type the value as read in the source "
                   "(formulas are not evaluated)")
    kind = col.kind
    if is_date(value) and kind in ("int", "number", "level", "bool"):
        what = "a number" if kind in ("int", "number") else "a level" if kind == "level" \
            else "true or false"
        raise _Bad(f"{_show(value)} is a date where {what} belongs (the spreadsheet turned the "
                   "entry into a date: format the column as text or number and retype it)")
    if kind in ("int", "number"):
        if isinstance(value, bool):
            raise _Bad(f"{_show(value)} is not a number")
        if isinstance(value, str):
            text = value.strip()
            try:
                num = float(text)
            except ValueError:
                raise _Bad(f"{_show(text)} is not a number") from None
        else:
            num = float(value)
        if not math.isfinite(num):
            raise _Bad(f"{_show(value)} is not a finite number")
        if num.is_integer() and abs(num) < 2 ** 53:
            return int(num)
        if kind == "int":
            raise _Bad(f"{_show(value)} must be a whole number")
        return num
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "yes", "1", "1.0"):
            return True
        if text in ("false", "no", "0", "0.0"):
            return False
        raise _Bad(f"{_show(value)} must be true or false")
    if kind == "level":
        text = _text(value)
        if text not in col.levels:
            raise _Bad(f"{_show(text)} is not a level (allowed: {', '.join(col.levels)})")
        return text
    if kind == "auto":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if isinstance(value, (int, float)) and float(value).is_integer():
            return int(value)
    return _text(value)


def _text(value) -> str:
    if is_date(value):
        return value.isoformat()[:10] if hasattr(value, "year") else value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def parse_sheet(path, mapping: Mapping = NO_MAPPING, *, check_levels: bool = True,
                sheet=None) -> tuple[list[Record], list[str]]:
    """Typed records of a sheet's rows and every problem (header, cells), one line each.

    ``check_levels=False`` keeps a vocabulary cell that is not a level as typed (``agree``
    compares what two reviewers wrote).
    """
    sheet = sheet or read_sheet(path)
    name = sheet.name
    cols = column_map()
    problems = list(sheet.problems)
    used: dict[int, Column] = {}
    where: dict[str, str] = {}
    for i, cell in enumerate(sheet.header):
        letter = column_letter(i)
        has_data = any(i < len(cells) and cells[i] is not None for _, cells in sheet.rows)
        if cell is None or (isinstance(cell, str) and not cell.strip()):
            if has_data:
                problems.append(f"{name}: row 1: column {letter}: empty header cell above data "
                                "(name the column or delete it)")
            continue
        if isinstance(cell, Formula):
            problems.append(f"{name}: row 1: column {letter}: the header is a formula "
                            f"({_show(str(cell))}); type the column name")
            continue
        theirs = _text(cell)
        ours = mapping.columns.get(theirs, theirs)
        if ours not in cols:
            hint = " or map it with --mapping" if not mapping.columns else " or map it in " + \
                (mapping.name or "the mapping")
            problems.append(f"{name}: row 1: column {letter}: {theirs!r}: unknown column "
                            f"(allowed: {', '.join(cols)}; rename it{hint})")
            continue
        if ours in where:
            how = f" ({theirs!r} is mapped to {ours!r})" if theirs != ours else ""
            problems.append(f"{name}: row 1: column {letter}: {ours!r} is also column "
                            f"{where[ours]}{how}: a column mapped twice")
            continue
        where[ours] = letter
        used[i] = cols[ours]
    records = []
    for row, cells in sheet.rows:
        values = {}
        for i, col in used.items():
            value = cells[i] if i < len(cells) else None
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            spelled = mapping.values.get(col.name, {})
            if spelled and not isinstance(value, Formula):
                value = spelled.get(_text(value), value)
            try:
                if col.kind == "level" and not check_levels and not is_date(value) \
                        and not isinstance(value, Formula):
                    values[col.name] = _text(value)
                else:
                    values[col.name] = convert_cell(value, col)
            except _Bad as exc:
                problems.append(f"{name}: row {row}: {col.name}: {exc}")
                values.setdefault("_bad", set()).add(col.name)
        records.append(Record(row, values))
    return records, problems


def finding_of(values: dict, cols: dict | None = None) -> tuple[dict, dict]:
    """(study fields, finding in the YAML shape) of one record's values."""
    cols = cols or column_map()
    study, finding = {}, {}
    for key, value in values.items():
        col = cols.get(key)
        if col is None:
            continue
        if col.path[0] == "study":
            study[col.path[1]] = value
        elif len(col.path) == 3:
            finding.setdefault(col.path[1], {})[col.path[2]] = value
        else:
            finding[col.path[1]] = value
    return study, finding


# --- records -> studies to add -----------------------------------------------------------------

_PROBLEM_FIELD = re.compile(r"^([A-Za-z0-9_.]+): ")


@dataclass
class Plan:
    studies: list        # studies in the data/findings shape, ready for curate.add_findings
    new_studies: list    # citekeys of the studies that do not exist yet
    n_findings: int


def plan_import(records: list[Record], name: str, findings_dir=None, bib=None,
                bibtex: str | None = None, problems: list | None = None) -> Plan:
    """Group records into studies, check them; raise ValidationError with every problem."""
    findings_dir, bib = F._resolve(findings_dir, bib)
    ds = F.read_dataset(findings_dir, bib)
    known_keys = set(ds.bib)
    if bibtex:
        entries, bib_problems = F.parse_bib(bibtex, "the --bibtex file")
        known_keys |= set(entries)
        if bib_problems:
            raise ValidationError(bib_problems)
    problems = list(problems or [])
    cols = column_map()
    to_column = _field_to_column()
    groups: dict[str, list[Record]] = {}
    for rec in records:
        ck = rec.values.get("citekey")
        if ck is None:
            if "citekey" not in rec.values.get("_bad", ()):
                problems.append(f"{name}: row {rec.row}: citekey: missing")
            continue
        groups.setdefault(ck, []).append(rec)
    studies = []
    new = []
    n_findings = 0
    for ck, recs in groups.items():
        first = recs[0].row
        existing = ds.studies.get(ck)
        study: dict = {"citekey": ck}
        from_row: dict = {}
        for rec in recs:
            s, _ = finding_of(rec.values, cols)
            for key, value in s.items():
                if key == "citekey":
                    continue
                if key in study and study[key] != value:
                    col = "study_note" if key == "note" else key
                    problems.append(f"{name}: row {rec.row}: {col}: {_show(value)} differs from "
                                    f"row {from_row[key]} ({_show(study[key])}) of the same study")
                elif key not in study:
                    study[key], from_row[key] = value, rec.row
        if existing is not None:
            path, doc = existing
            for key, value in study.items():
                if key != "citekey" and doc.get(key) != value:
                    col = "study_note" if key == "note" else key
                    problems.append(
                        f"{name}: row {from_row[key]}: {col}: {_show(value)} differs from "
                        f"{F.display_path(path)} ({_show(doc.get(key))}); a sheet adds findings "
                        "to a study, it does not change the study (edit its file)")
            study = {"citekey": ck}
            taken = {str(f.get("id")): F.display_path(path) for f in doc.get("findings") or []
                     if isinstance(f, dict)}
        else:
            new.append(ck)
            bad = set().union(*(r.values.get("_bad", set()) for r in recs))
            for line in F.check_study({**study, "findings": None}, f"{name}: row {first}"):
                field = line[len(f"{name}: row {first}: "):].split(":")[0]
                if field == "findings" or ("study_note" if field == "note" else field) in bad:
                    continue
                if field == "note":
                    line = line.replace(f"row {first}: note:", f"row {first}: study_note:", 1)
                problems.append(line)
            if ck not in known_keys and F.CITEKEY_RE.match(ck):
                problems.append(f"{name}: row {first}: citekey: {ck!r} has no BibTeX entry in "
                                f"{F.display_path(bib)}; give it with --bibtex FILE")
            taken = {}
        out = []
        for rec in recs:
            _, finding = finding_of(rec.values, cols)
            fid = finding.get("id")
            if fid is not None:
                if str(fid) in taken:
                    problems.append(f"{name}: row {rec.row}: id: {_show(fid)} is already used "
                                    f"({taken[str(fid)]})")
                taken[str(fid)] = f"row {rec.row}"
            out.append((rec, finding))
        for rec, finding in out:
            if finding.get("id") is None:
                finding["id"] = _next_id(taken)
                taken[finding["id"]] = f"row {rec.row}"
            finding.setdefault("sample", ck)
            prefix = f"{name}: row {rec.row}: "
            bad = rec.values.get("_bad", set())
            for line in F.check_finding(finding, prefix):
                rest = line[len(prefix):]
                m = _PROBLEM_FIELD.match(rest)
                if m:
                    col = to_column.get(m.group(1), m.group(1))
                    if col in bad:
                        continue   # the cell's own problem is listed already
                    rest = col + rest[len(m.group(1)):]
                problems.append(prefix + rest)
            n_findings += 1
        studies.append({**study, "findings": [f for _, f in out]})
    if problems:
        raise ValidationError(_sorted(problems, name))
    return Plan(studies, new, n_findings)


def _next_id(taken: dict) -> str:
    nums = [int(m.group(1)) for k in taken for m in [re.fullmatch(r"f(\d+)", k)] if m]
    return f"f{max(nums, default=0) + 1}"


def _sorted(problems: list[str], name: str) -> list[str]:
    """Problems in sheet order: header first, then by row, keeping each row's order."""
    def key(item):
        i, line = item
        m = re.match(re.escape(name) + r": rows? (\d+)", line)
        return (int(m.group(1)) if m else 0, i)
    return [line for _, line in sorted(enumerate(problems), key=key)]


# --- the whole import ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ImportResult:
    added_studies: list
    added_findings: int
    added: list          # curate.Added, one per finding
    files: dict          # {path: text} written (or that would be written on --dry-run)


def import_sheet(path, mapping: Mapping = NO_MAPPING, bibtex: str | None = None,
                 findings_dir=None, bib=None, *, dry_run: bool = False) -> ImportResult:
    """Check every row; on any problem raise ValidationError listing all and write nothing;
    else add every finding in one atomic transaction."""
    from metaalliance.dataset import curate, fileio

    records, problems = parse_sheet(path, mapping)
    name = F.display_path(path)
    plan = plan_import(records, name, findings_dir, bib, bibtex, problems)
    findings_dir_r, _ = F._resolve(findings_dir, bib)
    if not Path(findings_dir_r).is_dir():
        raise DataError(f"{F.display_path(findings_dir_r)}: findings folder not found")
    with fileio.locked(findings_dir_r):
        files, added = curate.plan_add(plan.studies, bibtex, findings_dir, bib)
        if not dry_run:
            fileio.write_all(files)
    return ImportResult(plan.new_studies, len(added), added, files)


def dataset_after(files: dict, findings_dir=None, bib=None):
    """The tidy findings frame as it would be after writing ``files`` (a temporary copy)."""
    import shutil
    import tempfile

    findings_dir, bib = F._resolve(findings_dir, bib)
    with tempfile.TemporaryDirectory(prefix="metaalliance-after-") as tmp:
        tdir, tbib = Path(tmp) / "findings", Path(tmp) / "references.bib"
        shutil.copytree(findings_dir, tdir, ignore=shutil.ignore_patterns(".*"))
        if Path(bib).is_file():
            shutil.copy(bib, tbib)
        for p, text in files.items():
            p = Path(p)
            target = tbib if p.resolve() == Path(bib).resolve() else tdir / p.name
            target.write_text(text, encoding="utf-8")
        return F.load(tdir, tbib)


# --- the dataset as flat records (export, agree, diff) -----------------------------------------

def flat_record(doc: dict, finding: dict) -> dict:
    """One finding of a study document as the sheet's flat values (study fields repeated)."""
    out = {}
    for col in columns():
        if col.path[0] == "study":
            value = doc.get(col.path[1])
        elif len(col.path) == 3:
            sub = finding.get(col.path[1])
            value = sub.get(col.path[2]) if isinstance(sub, dict) else None
        else:
            value = finding.get(col.path[1])
        if value is not None:
            out[col.name] = value
    return out


def flat_records(ds) -> list[dict]:
    """Every finding of a read dataset (``findings.read_dataset``) as flat records."""
    out = []
    for ck in sorted(ds.studies):
        _, doc = ds.studies[ck]
        for f in doc.get("findings") or []:
            if isinstance(f, dict):
                out.append(flat_record(doc, f))
    return out


def records_of(path, mapping: Mapping = NO_MAPPING, *, check_levels: bool = False):
    """Flat records of a sheet or of a findings folder (``agree``), with their rows (None for
    a folder), or raise ValidationError/DataError naming the file."""
    path = Path(path)
    if path.is_dir():
        ds = F.read_dataset(path, path.parent / "references.bib")
        problems = [p for p in ds.problems if "references.bib" not in p]
        if not ds.studies:
            raise DataError(f"{F.display_path(path)}: no study files in the folder")
        if problems and not ds.studies:
            raise ValidationError(problems)
        return [(None, r) for r in flat_records(ds)]
    records, problems = parse_sheet(path, mapping, check_levels=check_levels)
    if problems:
        raise ValidationError(problems)
    return [(rec.row, {k: v for k, v in rec.values.items() if k != "_bad"}) for rec in records]
