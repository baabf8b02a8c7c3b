"""Adding findings to the curated dataset (the reviewer's ``metaalliance add``).

``add_findings()`` takes studies in the data/findings YAML shape (a new study with all its fields
and a BibTeX entry, or just ``citekey`` + ``findings`` for an existing one), builds the new file
texts in memory, validates the *whole* dataset as it would be, and only then writes, atomically
and under a lock. A rejected or interrupted add leaves every file byte-for-byte as it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from metaalliance.dataset import fileio
from metaalliance.errors import DataError, ValidationError
from metaalliance.dataset.findings import (STUDY_OPTIONAL, STUDY_REQUIRED, _resolve, display_path, parse_bib,
                       read_dataset)

#: fields of a new study in the order they are written
STUDY_ORDER = [k for k in STUDY_REQUIRED if k != "findings"] + list(STUDY_OPTIONAL) + ["findings"]
FINDING_ORDER = ["id", "n", "statistic", "positive_is_better", "instrument", "instrument_detail",
                 "rater", "timing", "session", "outcome", "effect_type", "conversion", "locator",
                 "sample", "curation_id", "note"]
STAT_ORDER = ["type", "value", "df", "sign", "n1", "n2"]


@dataclass(frozen=True)
class Added:
    """One finding added: the file it went to and its id."""
    file: str
    citekey: str
    finding_id: str
    new_study: bool


def _ordered(d: dict, order) -> dict:
    out = {k: d[k] for k in order if k in d and d[k] is not None}
    out.update({k: v for k, v in d.items() if k not in out and v is not None})
    return out


def _clean_finding(f: dict) -> dict:
    f = dict(f)
    if isinstance(f.get("statistic"), dict):
        f["statistic"] = _ordered(f["statistic"], STAT_ORDER)
    return _ordered(f, FINDING_ORDER)


def _dump(obj) -> str:
    # libyaml's emitter when present (same text as the pure-Python SafeDumper, ~6x faster)
    return yaml.dump(obj, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False,
                     allow_unicode=True, default_flow_style=None, width=100)


def _next_id(existing: list) -> str:
    nums = [int(m.group(1)) for f in existing if isinstance(f, dict)
            for m in [re.fullmatch(r"f(\d+)", str(f.get("id", "")))] if m]
    return f"f{max(nums, default=0) + 1}"


def _append_text(old_text: str, old_doc: dict, new_findings: list[dict]) -> str:
    """The old file text with findings appended, keeping the reviewer's comments and layout.

    Falls back to a full re-dump when appending at the end would not give the intended document
    (``findings`` not the last key, unusual indentation).
    """
    expected = dict(old_doc)
    expected["findings"] = list(old_doc["findings"]) + new_findings
    m = re.search(r"^findings:[ \t]*\n(?:[ \t]*(?:#[^\n]*)?\n)*([ \t]*)- ", old_text, flags=re.M)
    if m:
        indent = m.group(1)
        block = _dump(new_findings)
        block = "".join(indent + line if line.strip() else line
                        for line in block.splitlines(keepends=True))
        text = old_text if old_text.endswith("\n") else old_text + "\n"
        candidate = text + block
        try:
            if yaml.safe_load(candidate) == expected:
                return candidate
        except yaml.YAMLError:
            pass
    return _dump(_ordered(expected, STUDY_ORDER))


def plan_add(studies: list[dict], bibtex: str | None = None, findings_dir=None, bib=None):
    """The new file texts ({path: text}) and the list of Added, or raise.

    Raises ValidationError with every problem of the dataset as it would be after the add.
    """
    findings_dir, bib = _resolve(findings_dir, bib)
    findings_dir, bib = Path(findings_dir), Path(bib)
    bib_text = bib.read_text(encoding="utf-8") if bib.is_file() else ""
    new_bib = bib_text
    if bibtex:
        entries, problems = parse_bib(bibtex, "the new BibTeX entry")
        if problems:
            raise ValidationError(problems)
        if not entries:
            raise DataError("the new BibTeX entry: no entry found")
        new_bib = (bib_text.rstrip("\n") + "\n\n" if bib_text.strip() else "") + bibtex.strip() + "\n"

    texts: dict[Path, str] = {}
    docs: dict[Path, dict] = {}
    added: list[Added] = []
    for study in studies:
        if not isinstance(study, dict) or not isinstance(study.get("citekey"), str):
            raise DataError("each study to add needs a citekey")
        citekey = study["citekey"]
        if not re.fullmatch(r"[a-z][a-z0-9]*", citekey):
            raise DataError(f"citekey: {citekey!r} must be lowercase letters and digits")
        path = findings_dir / f"{citekey}.yaml"
        new = [_clean_finding(f) if isinstance(f, dict) else f
               for f in (study.get("findings") or [])]
        if not new:
            raise DataError(f"{citekey}: no findings to add")
        if path in docs:
            base_doc, base_text = docs[path], texts[path]
        elif path.exists():
            base_text = path.read_text(encoding="utf-8")
            base_doc = yaml.safe_load(base_text)
            if not isinstance(base_doc, dict) or not isinstance(base_doc.get("findings"), list):
                raise DataError(f"{display_path(path)}: the existing file is not a valid study "
                                "file; run `metaalliance validate` and fix it first")
        else:
            base_doc, base_text = None, None
        is_new = base_doc is None
        if not is_new:
            extra = [k for k in study if k not in ("citekey", "findings")
                     and study[k] is not None and study[k] != base_doc.get(k)]
            if extra:
                raise DataError(f"{display_path(path)}: study exists; {', '.join(extra)} would "
                                "change the study's fields (edit the file instead)")
        existing = list(base_doc["findings"]) if base_doc else []
        for f in new:
            if isinstance(f, dict):
                if not f.get("id"):
                    f["id"] = _next_id(existing)
                    f = _clean_finding(f)
                f.setdefault("sample", citekey)
            existing.append(f)
            added.append(Added(display_path(path), citekey,
                               str(f.get("id")) if isinstance(f, dict) else "?", is_new))
        new_findings = existing[len(base_doc["findings"]) if base_doc else 0:]
        if is_new:
            doc = _ordered({**{k: v for k, v in study.items() if k != "findings"},
                            "findings": new_findings}, STUDY_ORDER)
            text = _dump(doc)
        else:
            text = _append_text(base_text, base_doc, new_findings)
            doc = yaml.safe_load(text)
        docs[path], texts[path] = doc, text
    overrides = {p: t for p, t in texts.items()}
    ds = read_dataset(findings_dir, bib, overrides=overrides, bib_text=new_bib)
    if ds.problems:
        raise ValidationError(ds.problems)
    files = {p: t for p, t in texts.items()}
    if new_bib != bib_text:
        files[bib] = new_bib
    return files, added


def add_findings(studies: list[dict], bibtex: str | None = None, findings_dir=None, bib=None,
                 *, dry_run: bool = False) -> list[Added]:
    """Validate, then write atomically under a lock. Returns what was added."""
    findings_dir_r, bib_r = _resolve(findings_dir, bib)
    if not Path(findings_dir_r).is_dir():
        raise DataError(f"{display_path(findings_dir_r)}: findings folder not found")
    with fileio.locked(findings_dir_r):
        files, added = plan_add(studies, bibtex, findings_dir, bib)
        if not dry_run:
            fileio.write_all(files)
    return added


def studies_from_file(path) -> tuple[list[dict], str | None]:
    """Studies to add from a YAML file (study-shaped, optional ``bibtex:``) or a CSV (one finding
    a row; columns named as the ``add`` flags, e.g. stat_type, outcome_domain)."""
    path = Path(path)
    name = display_path(path)
    if not path.is_file():
        raise DataError(f"{name}: file not found")
    if path.suffix.lower() in (".yaml", ".yml"):
        from metaalliance.dataset.findings import parse_study_text
        docs = []
        bibtex = []
        try:
            loaded = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except yaml.YAMLError as exc:
            _, problems = parse_study_text(path.read_text(encoding="utf-8"), name)
            raise DataError(problems[0] if problems else f"{name}: cannot parse YAML: {exc}") \
                from None
        for doc in loaded:
            for study in (doc if isinstance(doc, list) else [doc]):
                if not isinstance(study, dict):
                    raise DataError(f"{name}: expected study mappings with citekey and findings")
                study = dict(study)
                if study.get("bibtex"):
                    bibtex.append(str(study.pop("bibtex")))
                docs.append(study)
        return docs, "\n\n".join(bibtex) or None
    if path.suffix.lower() == ".csv":
        from metaalliance.dataset.tabular import read_csv
        df = read_csv(path)
        studies: dict[str, dict] = {}
        for i, row in enumerate(df.to_dict("records"), start=2):
            row = {k: (v.strip() if isinstance(v, str) else v) for k, v in row.items()}
            row = {k: v for k, v in row.items() if v != ""}
            if "citekey" not in row:
                raise DataError(f"{name}: row {i}: citekey: missing")
            try:
                study, finding = split_flat(row)
            except DataError as exc:
                raise DataError(f"{name}: row {i}: {exc}") from None
            entry = studies.setdefault(study["citekey"], {**study, "findings": []})
            entry["findings"].append(finding)
        return list(studies.values()), None
    raise DataError(f"{name}: expected a .yaml, .yml or .csv file")


#: flat field name -> (where it goes, how to parse it)
def _to_int(v):
    f = float(v)
    if f != int(f):
        raise ValueError
    return int(f)


def _to_bool(v):
    s = str(v).strip().lower()
    if s in ("true", "yes", "1"):
        return True
    if s in ("false", "no", "0"):
        return False
    raise ValueError


FLAT_STUDY = {k: str for k in STUDY_REQUIRED + STUDY_OPTIONAL if k != "findings"}
FLAT_FINDING = {"id": str, "n": _to_int, "positive_is_better": _to_bool, "instrument": str,
                "instrument_detail": str, "rater": str, "timing": str, "session": _to_int,
                "effect_type": str, "conversion": str, "locator": str, "sample": str,
                "curation_id": str, "note": str}
FLAT_STAT = {"stat_type": ("type", str), "value": ("value", float), "df": ("df", float),
             "sign": ("sign", _to_int), "n1": ("n1", _to_int), "n2": ("n2", _to_int)}
FLAT_OUTCOME = {"outcome_measure": "measure", "outcome_domain": "domain"}


def split_flat(row: dict) -> tuple[dict, dict]:
    """A flat record (CSV row or CLI flags) -> (study fields, finding)."""
    study, finding, stat, outcome = {}, {}, {}, {}
    for key, value in row.items():
        if value is None:
            continue
        try:
            if key in FLAT_STUDY:
                study[key] = str(value)
            elif key in FLAT_FINDING:
                finding[key] = FLAT_FINDING[key](value)
            elif key in FLAT_STAT:
                name, conv = FLAT_STAT[key]
                stat[name] = conv(value)
            elif key in FLAT_OUTCOME:
                outcome[FLAT_OUTCOME[key]] = str(value)
            else:
                allowed = list(FLAT_STUDY) + list(FLAT_FINDING) + list(FLAT_STAT) + list(FLAT_OUTCOME)
                raise DataError(f"{key}: unknown field (allowed: {', '.join(allowed)})")
        except (ValueError, TypeError):
            raise DataError(f"{key}: {value!r} is not a valid value") from None
    if stat:
        if isinstance(stat.get("value"), float) and stat["value"].is_integer() and \
                stat.get("type") in ("F", "t", "chi2"):
            pass
        finding["statistic"] = stat
    if outcome:
        finding["outcome"] = outcome
    return study, finding
