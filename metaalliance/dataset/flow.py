"""The dataset's frontier: studies awaiting extraction, the exclusion log, and the PRISMA 2020 flow.

Three files describe every study met while growing the dataset (see data/README.md):

- ``data/findings/*.yaml``: the included studies;
- ``data/awaiting.csv``: one row per study identified and read but not extractable from what
  could be read (``missing`` says what: ``n``, ``full text``, ``df`` or ``sample pairing``);
- ``data/excluded.csv``: one row per extracted finding (or text read) that was not imported, with
  its reason and a ``category`` (the groups of the PRISMA exclusion boxes, ``CATEGORIES``).

``check_logs`` checks both CSV files (``metaalliance validate`` runs it); ``counts`` counts the
PRISMA boxes from the three files, never from typed numbers. A *record* is one study: its
citekey, or its address when the log row has no citekey. Each record gets exactly one status, in
this order of precedence: included (a study file) > awaiting (a row of awaiting.csv) > excluded
(rows of excluded.csv only; its category is the first of ``CATEGORIES`` among its rows).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

#: columns of data/awaiting.csv, in order
AWAITING_COLUMNS = ("citekey", "authors", "year", "doi_or_address", "missing", "identified_at",
                    "identified_in", "excluded_ids", "note")
#: what an awaiting study lacks
MISSING = ("n", "full text", "df", "sample pairing")
#: where a record was identified / read: the study's own text (abstract, full text, PMC table
#: page, thesis page), a review's table, or a review's reference list
IDENTIFIED_IN = ("study", "review", "reference_list")

#: columns of data/excluded.csv, in order
EXCLUDED_COLUMNS = ("curation_id", "citekey", "first_author", "year", "source_url", "reason",
                    "category", "read_in")
#: exclusion categories, in order of precedence (a record's category is the first among its rows)
CATEGORIES: dict[str, str] = {
    "duplicate": "same sample (or same finding) as a finding already imported",
    "not_alliance_outcome": "no association of alliance level with a treatment outcome "
                            "(predictors of alliance, another predictor, satisfaction)",
    "not_convertible": "a statistic was read but cannot honestly become r (model coefficient, "
                       "variance explained, range, df counting observations, unknown effect type)",
    "sample_pairing": "rs read, but not which sample (and so which n) each belongs to",
    "no_df": "t or F read without the patients' df",
    "no_n": "a statistic read without the n behind it",
    "no_statistic": "the text read prints no alliance-outcome statistic (directions or "
                    "significance only, or the stored copy ends before the results)",
}
#: categories whose studies await extraction (they belong in awaiting.csv unless included)
AWAITING_CATEGORIES = {"no_statistic": "full text", "no_n": "n", "no_df": "df",
                       "sample_pairing": "sample pairing"}

KEY_RE = re.compile(r"^[a-z][a-z0-9]*$")
ADDRESS_RE = re.compile(r"^(https?://\S+|doi:10\.\S+/\S+)$")
YEAR_RE = re.compile(r"^([0-9]{4})?$")


def _paths(data_dir):
    from metaalliance.dataset.findings import DEFAULT_FINDINGS
    data_dir = Path(data_dir) if data_dir is not None else DEFAULT_FINDINGS.parent
    return data_dir / "awaiting.csv", data_dir / "excluded.csv"


def _read_csv(path: Path, columns, problems: list[str]) -> list[dict]:
    from metaalliance.dataset.findings import display_path
    name = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problems.append(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})")
        return []
    reader = csv.DictReader(text.splitlines())
    if tuple(reader.fieldnames or ()) != tuple(columns):
        problems.append(f"{name}: header must be {','.join(columns)}")
        return []
    rows = []
    for i, row in enumerate(reader, start=2):
        if None in row or any(v is None for v in row.values()):
            problems.append(f"{name}: row {i}: expected {len(columns)} fields")
            continue
        row = {k: v.strip() for k, v in row.items()}
        row["_line"] = i
        rows.append(row)
    return rows


def read_awaiting(data_dir=None, problems: list[str] | None = None) -> list[dict]:
    """Rows of data/awaiting.csv ([] when the file does not exist)."""
    path, _ = _paths(data_dir)
    return _read_csv(path, AWAITING_COLUMNS, problems if problems is not None else []) \
        if path.is_file() else []


def read_excluded(data_dir=None, problems: list[str] | None = None) -> list[dict]:
    """Rows of data/excluded.csv ([] when the file does not exist)."""
    _, path = _paths(data_dir)
    return _read_csv(path, EXCLUDED_COLUMNS, problems if problems is not None else []) \
        if path.is_file() else []


def check_logs(data_dir, included: set[str]) -> list[str]:
    """Problems of awaiting.csv and excluded.csv, one line each naming file, row and field.

    Missing files are not problems (a dataset in another folder need not log anything)."""
    from metaalliance.dataset.findings import display_path
    awaiting_path, excluded_path = _paths(data_dir)
    problems: list[str] = []
    seen: dict[str, int] = {}
    if awaiting_path.is_file():
        name = display_path(awaiting_path)
        for row in read_awaiting(data_dir, problems):
            p = f"{name}: row {row['_line']}: "
            key = row["citekey"]
            if not KEY_RE.match(key):
                problems.append(f"{p}citekey: {key!r} must be lowercase letters and digits")
            elif key in seen:
                problems.append(f"{p}citekey: {key} already listed in row {seen[key]}")
            else:
                seen[key] = row["_line"]
            if key in included:
                problems.append(f"{p}citekey: {key} is both included (data/findings/{key}.yaml) "
                                "and awaiting extraction: keep one")
            for col in ("doi_or_address", "identified_at"):
                if not ADDRESS_RE.match(row[col]):
                    problems.append(f"{p}{col}: {row[col]!r} must be an address "
                                    "(https://... or doi:10....)")
            if row["missing"] not in MISSING:
                problems.append(f"{p}missing: {row['missing']!r} is not one of "
                                f"{', '.join(MISSING)}")
            if row["identified_in"] not in IDENTIFIED_IN:
                problems.append(f"{p}identified_in: {row['identified_in']!r} is not one of "
                                f"{', '.join(IDENTIFIED_IN)}")
            if not YEAR_RE.match(row["year"]):
                problems.append(f"{p}year: {row['year']!r} must be a 4-digit year or empty")
    if excluded_path.is_file():
        name = display_path(excluded_path)
        listed = set(seen) if awaiting_path.is_file() else None
        for row in read_excluded(data_dir, problems):
            p = f"{name}: row {row['_line']}: "
            if row["category"] not in CATEGORIES:
                problems.append(f"{p}category: {row['category']!r} is not one of "
                                f"{', '.join(CATEGORIES)}")
            if row["read_in"] not in ("study", "review"):
                problems.append(f"{p}read_in: {row['read_in']!r} is not one of study, review")
            if not ADDRESS_RE.match(row["source_url"]):
                problems.append(f"{p}source_url: {row['source_url']!r} must be an address")
            if not row["reason"]:
                problems.append(f"{p}reason: missing")
            key = row["citekey"]
            if (listed is not None and row["category"] in AWAITING_CATEGORIES
                    and key not in included and key not in listed):
                problems.append(f"{p}category: {row['category']} means the study awaits "
                                f"extraction: list {key or 'it (give it a citekey)'} in "
                                f"{display_path(awaiting_path)} or include it")
    return problems


# --- PRISMA 2020 counts ------------------------------------------------------------------------

@dataclass
class Flow:
    """The numbers of the PRISMA 2020 flow diagram, each counted from the files."""
    identified: dict[str, int] = field(default_factory=dict)   # records by IDENTIFIED_IN kind
    duplicates: int = 0            # records excluded as the same sample as an included study
    screened: int = 0              # records screened (identified - duplicates)
    excluded_screening: int = 0    # not an alliance-outcome association
    sought: int = 0                # reports sought for a usable statistic
    awaiting: dict[str, int] = field(default_factory=dict)     # by `missing`
    assessed: int = 0              # reports assessed for eligibility
    excluded_reports: dict[str, int] = field(default_factory=dict)  # by category
    studies: int = 0               # included studies
    samples: int = 0
    findings: int = 0
    findings_read_in_review: int = 0

    @property
    def identified_total(self) -> int:
        return sum(self.identified.values())

    @property
    def awaiting_total(self) -> int:
        return sum(self.awaiting.values())

    def as_dict(self) -> dict:
        return {"identified": dict(self.identified), "identified_total": self.identified_total,
                "duplicates": self.duplicates, "screened": self.screened,
                "excluded_screening": self.excluded_screening, "sought": self.sought,
                "awaiting": dict(self.awaiting), "awaiting_total": self.awaiting_total,
                "assessed": self.assessed, "excluded_reports": dict(self.excluded_reports),
                "studies": self.studies, "samples": self.samples, "findings": self.findings,
                "findings_read_in_review": self.findings_read_in_review}


def _record_key(row: dict) -> str:
    return row["citekey"] or row["source_url"]


def counts(findings_dir=None, bib=None) -> Flow:
    """Count the PRISMA boxes from data/findings, data/awaiting.csv and data/excluded.csv.

    Raises ValidationError when the dataset or the logs do not validate."""
    from metaalliance.dataset.findings import _resolve, read_dataset
    from metaalliance.errors import ValidationError

    findings_dir, bib = _resolve(findings_dir, bib)
    ds = read_dataset(findings_dir, bib)
    if ds.problems:
        raise ValidationError(ds.problems)
    data_dir = Path(findings_dir).parent
    awaiting = read_awaiting(data_dir)
    excluded = read_excluded(data_dir)

    flow = Flow()
    kinds: dict[str, str] = {}
    for key, (_, doc) in ds.studies.items():
        via = any(isinstance(f, dict) and f.get("via") for f in doc["findings"])
        kinds[key] = "review" if via else "study"
        flow.findings += len(doc["findings"])
        flow.findings_read_in_review += sum(1 for f in doc["findings"] if f.get("via"))
    flow.studies = len(ds.studies)
    flow.samples = len({f["sample"] for _, doc in ds.studies.values() for f in doc["findings"]})
    for row in awaiting:
        if row["citekey"] not in kinds:
            kinds[row["citekey"]] = row["identified_in"]
            flow.awaiting[row["missing"]] = flow.awaiting.get(row["missing"], 0) + 1
    categories: dict[str, list[str]] = {}
    for row in excluded:
        key = _record_key(row)
        if key in kinds and key not in categories:
            continue                                  # included or awaiting: counted there
        categories.setdefault(key, []).append(row["category"])
        if row["read_in"] == "study" or key not in kinds:
            kinds[key] = row["read_in"]
    order = list(CATEGORIES)
    excluded_by: dict[str, int] = {}
    for key, cats in categories.items():
        first = min(cats, key=order.index)
        excluded_by[first] = excluded_by.get(first, 0) + 1
    for kind in IDENTIFIED_IN:
        flow.identified[kind] = sum(1 for k in kinds.values() if k == kind)
    flow.duplicates = excluded_by.pop("duplicate", 0)
    flow.screened = flow.identified_total - flow.duplicates
    flow.excluded_screening = excluded_by.pop("not_alliance_outcome", 0)
    flow.sought = flow.screened - flow.excluded_screening
    flow.assessed = flow.sought - flow.awaiting_total
    flow.excluded_reports = {c: excluded_by[c] for c in order if excluded_by.get(c)}
    return flow


def coverage_sentence(flow: Flow) -> str:
    """"k studies included, m awaiting extraction" as summary and the report print it."""
    return (f"{flow.studies} studies included, {flow.awaiting_total} awaiting extraction "
            f"({flow.identified_total} studies identified, "
            f"{flow.duplicates + flow.excluded_screening + sum(flow.excluded_reports.values())}"
            " excluded)")


__all__ = ["AWAITING_COLUMNS", "MISSING", "IDENTIFIED_IN", "EXCLUDED_COLUMNS", "CATEGORIES",
           "read_awaiting", "read_excluded", "check_logs", "Flow", "counts",
           "coverage_sentence"]
