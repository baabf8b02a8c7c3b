"""Load and validate the curated findings (data/findings/*.yaml + references.bib).

``validate()`` returns every problem at once, one line each, naming file, finding and field::

    data/findings/x.yaml: finding f2: n: must be >= 4

``load()`` returns one tidy DataFrame, one row per finding, with the study's tags, the reported
statistic, the sign-aligned r, yi = atanh(r) and vi = 1/(n - 3). It raises ValidationError (with
the same lines) when the data has problems. YAML is read with yaml's SafeLoader only (no object
construction), without anchors and aliases (a few lines of aliases can expand to billions of
values), and files are size-bounded.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from metaalliance.dataset import effectsize
from metaalliance.errors import DataError, ValidationError
from metaalliance.options import STATISTICS, VOCABULARIES

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FINDINGS = REPO_ROOT / "data" / "findings"
DEFAULT_BIB = REPO_ROOT / "references.bib"

#: a study file larger than this is refused before parsing (a study has a handful of findings)
MAX_FILE_BYTES = 1_000_000
#: at most this many findings in one study file
MAX_FINDINGS_PER_STUDY = 1000

STUDY_REQUIRED = ("citekey", "population", "diagnosis", "setting", "modality", "treatment",
                  "country", "design", "source", "findings")
STUDY_OPTIONAL = ("diagnosis_detail", "treatment_detail", "read_at", "note")
STUDY_VOCAB = ("population", "diagnosis", "setting", "modality", "treatment", "design")

FINDING_REQUIRED = ("id", "n", "statistic", "positive_is_better", "instrument", "rater", "timing",
                    "outcome", "effect_type", "conversion", "locator", "sample")
#: study tags a finding may override (e.g. two trial arms in different settings)
OVERRIDABLE = ("population", "diagnosis", "setting", "modality", "treatment")
FINDING_OPTIONAL = ("instrument_detail", "session", "curation_id", "via", "note") + OVERRIDABLE
FINDING_VOCAB = ("instrument", "rater", "timing", "effect_type", "conversion") + OVERRIDABLE
STAT_FIELDS = ("type", "value", "df", "sign", "n1", "n2")

#: statistics that are correlations as reported and so must lie in [-1, 1]
CORRELATION_TYPES = ("r", "partial_r", "spearman_rho", "beta")

#: columns of the tidy DataFrame, in order
COLUMNS = ["citekey", "finding_id", "sample", "label", "author", "year", "population",
           "diagnosis", "setting", "modality", "treatment", "country", "design", "instrument",
           "rater", "timing", "session", "outcome_measure", "outcome_domain", "effect_type",
           "conversion", "n", "stat_type", "stat_value", "r", "yi", "vi", "source", "locator",
           "via", "read_in_review", "file"]
#: columns whose DataFrame dtype is numeric (``--where year=2010.0`` compares numbers there)
#: and boolean (``--where read_in_review=true``); the rest hold text
NUMERIC_COLUMNS = ("year", "session", "n", "stat_value", "r", "yi", "vi")
BOOLEAN_COLUMNS = ("read_in_review",)

CITEKEY_RE = re.compile(r"^[a-z][a-z0-9]*[0-9]{4}[a-z0-9]*$")
FINDING_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
SOURCE_RE = re.compile(r"^(doi:10\.\S+/\S+|url:https?://\S+)$")


# path helpers live in fileio (a CSV needs them without PyYAML); re-exported here
from metaalliance.dataset.fileio import display_path, is_inside  # noqa: E402,F401


# --- references.bib ----------------------------------------------------------------------------

@dataclass(frozen=True)
class BibEntry:
    key: str
    fields: dict

    @property
    def authors(self) -> list[str]:
        """Family names of the authors, in order ("others" dropped)."""
        raw = self.fields.get("author", "")
        names = [a.strip() for a in re.split(r"\s+and\s+", raw) if a.strip()]
        out = []
        for a in names:
            if a.lower() == "others":
                continue
            family = a.split(",")[0] if "," in a else a.split()[-1]
            out.append(family.strip("{} "))
        return out

    @property
    def year(self) -> int | None:
        m = re.search(r"\d{4}", self.fields.get("year", ""))
        return int(m.group()) if m else None

    @property
    def label(self) -> str:
        """"Author et al. (Year)" as on a forest plot."""
        names = self.authors
        raw = self.fields.get("author", "")
        year = self.year or "n.d."
        if not names:  # authors not read: a short title, else the journal or the URL's host
            title = re.sub(r"[{}]", "", self.fields.get("title", "")).split()
            if title:
                short = " ".join(title[:4]) + (" ..." if len(title) > 4 else "")
                return f"\u201c{short}\u201d ({year})"
            where = self.fields.get("journal") or re.sub(
                r"^https?://([^/]+).*$", r"\1", self.fields.get("url", ""))
            return f"Anonymous, {where} ({year})" if where else f"Anonymous ({year})"
        if len(names) == 1 and "others" not in raw.lower():
            return f"{names[0]} ({year})"
        if len(names) == 2 and "others" not in raw.lower():
            return f"{names[0]} & {names[1]} ({year})"
        return f"{names[0]} et al. ({year})"


#: what LaTeX decoding can change: pylatexenc's latex2text leaves every other character and
#: character sequence as it is (checked for all printable ASCII characters, pairs and
#: punctuation triples in tests/test_findings.py), so a value without these is decoded as itself
_LATEX_RE = re.compile(r"[\\{}%&~$`]|''|--")


def _latex_decoder():
    """bibtexparser's LatexDecodingMiddleware, handing over only values that hold LaTeX
    (``_LATEX_RE``): the others decode to themselves, and latex2text takes ~1 ms a value
    (most of reading references.bib, so most of a command's start-up after the imports)."""
    from bibtexparser.middlewares import LatexDecodingMiddleware

    class _Decoder(LatexDecodingMiddleware):
        def _transform_python_value_string(self, python_string):
            if _LATEX_RE.search(python_string) is None:
                return python_string, ""
            return super()._transform_python_value_string(python_string)

    return _Decoder()


def parse_bib(text: str, name: str = "references.bib") -> tuple[dict[str, BibEntry], list[str]]:
    """Parse BibTeX text into {key: BibEntry} and a list of problems (one line each)."""
    import bibtexparser

    problems: list[str] = []
    try:
        library = bibtexparser.parse_string(text, append_middleware=[_latex_decoder()])
    except Exception:  # the decoder chokes on some malformed LaTeX: fall back to raw fields
        library = bibtexparser.parse_string(text)
    entries: dict[str, BibEntry] = {}
    for block in library.failed_blocks:
        kind = type(block).__name__
        if kind == "DuplicateBlockKeyBlock":
            problems.append(f"{name}: {block.key}: duplicate BibTeX key")
        else:
            line = getattr(block, "start_line", None)
            where = f"line {line + 1}" if isinstance(line, int) else "a block"
            problems.append(f"{name}: {where}: cannot parse BibTeX entry")
    for entry in library.entries:
        fields = {k: str(f.value).strip() for k, f in entry.fields_dict.items()}
        entries[entry.key] = BibEntry(entry.key, fields)
    return entries, problems


def read_bib(path) -> tuple[dict[str, BibEntry], list[str]]:
    path = Path(path)
    name = display_path(path)
    if not path.is_file():
        return {}, [f"{name}: file not found"]
    if path.stat().st_size > 50 * MAX_FILE_BYTES:
        return {}, [f"{name}: file is larger than {50 * MAX_FILE_BYTES} bytes"]
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return {}, [f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})"]
    return parse_bib(text, name)


# --- one study file ----------------------------------------------------------------------------

class _StudyLoader(yaml.SafeLoader):
    """yaml.safe_load's loader without aliases: ``*name`` is refused where it appears (a
    "billion laughs" file of ten lines would otherwise expand to 9^9 values; study files
    never need anchors)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"alias *{event.anchor} is not allowed in a study file "
                "(write the values out)", event.start_mark)
        return super().compose_node(parent, index)


def _one_line(problem: str) -> str:
    """A problem line with any line break or control character escaped (it came from a
    file's keys or values), so that every problem is exactly one line."""
    if problem.isprintable():
        return problem
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in problem)


def _id_text(fid) -> str:
    """A finding id as a problem line shows it: as written when it is printable, else its
    repr (a line break in an id must not split the line), at most 40 characters."""
    text = str(fid)
    if not text.isprintable():
        text = repr(text)
    return text if len(text) <= 40 else text[:37] + "..."


def _show(value, limit: int = 60) -> str:
    """repr(value), cut to ``limit`` characters, for a problem line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


_FALLBACK = object()


def _fast_load(text: str):
    """The document through libyaml's CSafeLoader (ten times faster than the pure-Python
    SafeLoader: most of ``load()``'s time, so most of a command's start-up), or _FALLBACK when
    libyaml is missing, the text holds an alias, or libyaml finds a problem: the pure-Python
    ``_StudyLoader`` then reads it and words the problem exactly as before. Both loaders build
    the same values with the same (safe) constructor and resolver."""
    loader = getattr(yaml, "CSafeLoader", None)
    if loader is None:
        return _FALLBACK
    try:
        if any(isinstance(ev, yaml.events.AliasEvent) for ev in yaml.parse(text, Loader=loader)):
            return _FALLBACK
        return yaml.load(text, Loader=loader)  # noqa: S506 (libyaml's SafeLoader)
    except Exception:  # noqa: BLE001 (any problem: the pure-Python loader says what it is)
        return _FALLBACK


def parse_study_text(text: str, name: str) -> tuple[dict | None, list[str]]:
    """Safely load one study file's text (SafeLoader, no aliases); problems, not exceptions."""
    if len(text.encode("utf-8", "replace")) > MAX_FILE_BYTES:
        return None, [f"{name}: file is larger than {MAX_FILE_BYTES} bytes"]
    doc = _fast_load(text)
    try:
        if doc is _FALLBACK:
            doc = yaml.load(text, Loader=_StudyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return None, [f"{name}: cannot parse YAML{where}: {problem}"]
    except (RecursionError, ValueError, OverflowError) as exc:  # pathological nesting / numbers
        return None, [f"{name}: cannot parse YAML: {type(exc).__name__}"]
    if not isinstance(doc, dict):
        return None, [f"{name}: expected a mapping of study fields, found {type(doc).__name__}"]
    return doc, []


def _vocab_problem(prefix: str, field_name: str, value, vocab: str) -> str | None:
    allowed = VOCABULARIES[vocab]
    if not isinstance(value, str) or value not in allowed:
        return f"{prefix}{field_name}: {_show(value)} is not one of {', '.join(allowed)}"
    return None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value) -> bool:
    return _number(value) and value == value and abs(value) != float("inf")


def check_study(doc: dict, name: str, stem: str | None = None) -> list[str]:
    """All problems of one parsed study file (not cross-file checks)."""
    problems: list[str] = []
    p = f"{name}: "
    for key in STUDY_REQUIRED:
        if key not in doc or doc[key] is None or doc[key] == "":
            problems.append(f"{p}{key}: missing")
    for key in doc:
        if key not in STUDY_REQUIRED and key not in STUDY_OPTIONAL:
            problems.append(f"{p}{key}: unknown field (allowed: "
                            f"{', '.join(STUDY_REQUIRED + STUDY_OPTIONAL)})")
    citekey = doc.get("citekey")
    if citekey is not None:
        if not isinstance(citekey, str) or not CITEKEY_RE.match(citekey):
            problems.append(f"{p}citekey: {_show(citekey)} is not a normalised key "
                            "(lowercase author, 4-digit year, first title word, e.g. webb2011two)")
        elif stem is not None and citekey != stem:
            problems.append(f"{p}citekey: {_show(citekey)} does not match the file name "
                            f"{stem}.yaml")
    for key in STUDY_VOCAB:
        if doc.get(key) not in (None, ""):
            msg = _vocab_problem(p, key, doc[key], key)
            if msg:
                problems.append(msg)
    for key in ("country", "diagnosis_detail", "treatment_detail", "read_at", "note"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            problems.append(f"{p}{key}: must be text")
    source = doc.get("source")
    if source not in (None, "") and (not isinstance(source, str) or not SOURCE_RE.match(source)):
        problems.append(f"{p}source: {_show(source)} must be 'doi:10.xxxx/...' or "
                        "'url:https://...'")

    findings = doc.get("findings")
    if findings is None:
        return problems
    if not isinstance(findings, list) or not findings:
        problems.append(f"{p}findings: must be a non-empty list")
        return problems
    if len(findings) > MAX_FINDINGS_PER_STUDY:
        problems.append(f"{p}findings: more than {MAX_FINDINGS_PER_STUDY} findings")
        return problems
    seen: set = set()
    for i, f in enumerate(findings, start=1):
        if not isinstance(f, dict):
            problems.append(f"{p}finding #{i}: must be a mapping of fields")
            continue
        fid = f.get("id")
        label = (_id_text(fid) if isinstance(fid, (str, int)) and not isinstance(fid, bool)
                 else f"#{i}")
        problems.extend(check_finding(f, f"{p}finding {label}: "))
        if isinstance(fid, (str, int)) and not isinstance(fid, bool):
            if fid in seen:
                problems.append(f"{p}finding {label}: id: duplicate id")
            seen.add(fid)
    return problems


def check_finding(f: dict, p: str) -> list[str]:
    """Problems of one finding; ``p`` is the message prefix naming file and finding."""
    problems: list[str] = []
    for key in FINDING_REQUIRED:
        if key not in f or f[key] is None or f[key] == "":
            problems.append(f"{p}{key}: missing")
    for key in f:
        if key not in FINDING_REQUIRED and key not in FINDING_OPTIONAL:
            problems.append(f"{p}{key}: unknown field (allowed: "
                            f"{', '.join(FINDING_REQUIRED + FINDING_OPTIONAL)})")
    fid = f.get("id")
    if fid is not None and not (isinstance(fid, str) and FINDING_ID_RE.match(fid)):
        problems.append(f"{p}id: must be a short text id such as f1")
    n = f.get("n")
    if n is not None:
        if not isinstance(n, int) or isinstance(n, bool):
            problems.append(f"{p}n: must be a whole number")
        elif n < 4:
            problems.append(f"{p}n: must be >= 4")
    for key in FINDING_VOCAB:
        if f.get(key) not in (None, ""):
            msg = _vocab_problem(p, key, f[key], key)
            if msg:
                problems.append(msg)
    if "positive_is_better" in f and f["positive_is_better"] is not None \
            and not isinstance(f["positive_is_better"], bool):
        problems.append(f"{p}positive_is_better: must be true or false")
    session = f.get("session")
    if session is not None and (not isinstance(session, int) or isinstance(session, bool)
                                or session < 0):
        problems.append(f"{p}session: must be a whole number >= 0")
    for key in ("locator", "sample", "instrument_detail", "note", "curation_id"):
        if f.get(key) is not None and not isinstance(f[key], str):
            problems.append(f"{p}{key}: must be text")
    via = f.get("via")
    if via is not None and (not isinstance(via, str) or not CITEKEY_RE.match(via)):
        problems.append(f"{p}via: {_show(via)} must be the citekey of the review whose table "
                        "holds this finding (a key in references.bib)")
    outcome = f.get("outcome")
    if outcome is not None:
        if not isinstance(outcome, dict):
            problems.append(f"{p}outcome: must be a mapping with measure and domain")
        else:
            for key in outcome:
                if key not in ("measure", "domain"):
                    problems.append(f"{p}outcome.{key}: unknown field (allowed: measure, domain)")
            if not outcome.get("measure"):
                problems.append(f"{p}outcome.measure: missing")
            if not outcome.get("domain"):
                problems.append(f"{p}outcome.domain: missing")
            else:
                msg = _vocab_problem(p, "outcome.domain", outcome["domain"], "outcome_domain")
                if msg:
                    problems.append(msg)
    stat = f.get("statistic")
    if stat is not None:
        problems.extend(_check_statistic(stat, f.get("n"), p))
    if f.get("conversion") == "approximate" and not f.get("note"):
        problems.append(f"{p}note: missing (an approximate conversion must say why)")
    return problems


def _check_statistic(stat, n, p: str) -> list[str]:
    if not isinstance(stat, dict):
        return [f"{p}statistic: must be a mapping such as {{type: r, value: 0.3}}"]
    problems = []
    for key in stat:
        if key not in STAT_FIELDS:
            problems.append(f"{p}statistic.{key}: unknown field (allowed: {', '.join(STAT_FIELDS)})")
    stype = stat.get("type")
    if stype is None:
        return problems + [f"{p}statistic.type: missing"]
    if not isinstance(stype, str) or stype not in STATISTICS:
        return problems + [f"{p}statistic.type: {_show(stype)} is not one of "
                           f"{', '.join(STATISTICS)}"]
    value = stat.get("value")
    if value is None:
        return problems + [f"{p}statistic.value: missing"]
    if not _is_finite(value):
        return problems + [f"{p}statistic.value: must be a finite number"]
    for need in STATISTICS[stype]:
        if stat.get(need) is None:
            problems.append(f"{p}statistic.{need}: missing ({stype} needs {need})")
    for key in ("df", "n1", "n2"):
        v = stat.get(key)
        if v is not None and (not _is_finite(v) or v <= 0):
            problems.append(f"{p}statistic.{key}: must be a positive number")
    if stat.get("sign") is not None and stat.get("sign") not in (1, -1):
        problems.append(f"{p}statistic.sign: must be 1 or -1")
    if stype in CORRELATION_TYPES and not -1 <= value <= 1:
        problems.append(f"{p}statistic.value: {stype} must be within [-1, 1]")
    if stype in ("F", "chi2") and value < 0:
        problems.append(f"{p}statistic.value: {stype} must be >= 0 (give the direction in sign)")
    if stype == "or" and value <= 0:
        problems.append(f"{p}statistic.value: an odds ratio must be > 0")
    if problems:
        return problems
    try:
        r = _raw_r(stat, n if isinstance(n, int) and not isinstance(n, bool) else None)
    except DataError as exc:
        return [f"{p}{exc}"]
    if r is None:
        return []
    if not -1 < r < 1:
        problems.append(f"{p}statistic.value: converts to r = {r:g}; |r| must be < 1 "
                        "(Fisher's z is infinite at +-1)")
    return problems


def _raw_r(stat: dict, n: int | None) -> float | None:
    """r in the paper's own sign convention (None when n is needed but absent)."""
    if stat["type"] in ("chi2", "z") and n is None:
        return None
    return effectsize.convert(stat["type"], stat["value"], n=n, df=stat.get("df"),
                              n1=stat.get("n1"), n2=stat.get("n2"), sign=stat.get("sign"))


# --- the whole dataset -------------------------------------------------------------------------

@dataclass
class Dataset:
    """Parsed studies and bib entries, with every problem found."""
    studies: dict[str, tuple[Path, dict]] = field(default_factory=dict)  # citekey -> (path, doc)
    bib: dict[str, BibEntry] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _resolve(findings_dir, bib):
    findings_dir = Path(findings_dir) if findings_dir is not None else DEFAULT_FINDINGS
    bib = Path(bib) if bib is not None else (
        findings_dir.parent.parent / "references.bib" if findings_dir != DEFAULT_FINDINGS
        else DEFAULT_BIB)
    return findings_dir, bib


def read_dataset(findings_dir=None, bib=None, *, overrides: dict | None = None,
                 bib_text: str | None = None) -> Dataset:
    """Read and check every study file and the bib; collect all problems.

    ``overrides`` maps a study file path to replacement text and ``bib_text`` replaces the bib's
    text: ``add`` validates the dataset as it *would* be before writing anything.
    """
    findings_dir, bib = _resolve(findings_dir, bib)
    ds = Dataset()
    overrides = {Path(k).resolve(): v for k, v in (overrides or {}).items()}
    fname = display_path(findings_dir)
    if bib_text is not None:
        ds.bib, bib_problems = parse_bib(bib_text, display_path(bib))
    else:
        ds.bib, bib_problems = read_bib(bib)
    ds.problems.extend(bib_problems)
    if not findings_dir.is_dir():
        ds.problems.append(f"{fname}: findings folder not found")
        return ds
    paths = {p.resolve(): p for p in findings_dir.glob("*.yaml")}
    for resolved in overrides:
        if resolved.parent == findings_dir.resolve():
            paths.setdefault(resolved, resolved)
    others = sorted(p.name for p in findings_dir.iterdir()
                    if p.is_file() and p.suffix != ".yaml" and not p.name.startswith("."))
    for other in others:
        ds.problems.append(f"{fname}/{other}: not a .yaml study file (rename it or move it out)")
    samples: dict[str, str] = {}
    for resolved in sorted(paths, key=lambda q: q.name):
        path = paths[resolved]
        name = display_path(path)
        if resolved in overrides:
            text = overrides[resolved]
        else:
            if path.stat().st_size > MAX_FILE_BYTES:
                ds.problems.append(f"{name}: file is larger than {MAX_FILE_BYTES} bytes")
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                ds.problems.append(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})")
                continue
        doc, problems = parse_study_text(text, name)
        ds.problems.extend(problems)
        if doc is None:
            continue
        problems = check_study(doc, name, stem=path.stem)
        ds.problems.extend(problems)
        citekey = doc.get("citekey")
        if isinstance(citekey, str):
            if citekey not in ds.bib:
                ds.problems.append(f"{name}: citekey: {_show(citekey)} not in "
                                   f"{display_path(bib)}")
            ds.studies[citekey] = (path, doc)
            for f in doc.get("findings") or []:
                if isinstance(f, dict) and isinstance(f.get("sample"), str):
                    owner = samples.setdefault(f["sample"], citekey)
                    if owner != citekey:
                        ds.problems.append(
                            f"{name}: finding {_id_text(f.get('id'))}: sample: "
                            f"{_show(f['sample'])} is already used by {owner}: one sample is "
                            "counted once (keep one paper's findings)")
    stems = {q.stem for q in paths.values()}
    reviews = _check_via(ds, bib)
    for key in sorted(ds.bib):
        if key not in ds.studies and key not in stems and key not in reviews:
            ds.problems.append(f"{display_path(bib)}: {key}: no findings file "
                               f"{fname}/{key}.yaml")
    if findings_dir.resolve() == DEFAULT_FINDINGS.resolve() or \
            (findings_dir.parent / "awaiting.csv").is_file():
        from metaalliance.dataset import flow
        ds.problems.extend(flow.check_logs(findings_dir.parent, set(stems)))
    ds.problems = [_one_line(p) for p in ds.problems]
    return ds


def _check_via(ds: Dataset, bib) -> set[str]:
    """Cross-file rules of findings read in a review's table (``via: <review citekey>``): the
    review has a bib entry and no study file, and the study's ``source`` is the review's DOI
    (the text the numbers were read in). Returns the review keys cited (not orphans)."""
    reviews: set[str] = set()
    for citekey, (path, doc) in sorted(ds.studies.items()):
        name = display_path(path)
        for f in doc.get("findings") or []:
            if not isinstance(f, dict) or not isinstance(f.get("via"), str):
                continue
            via, fid = f["via"], _id_text(f.get("id"))
            reviews.add(via)
            if via not in ds.bib:
                ds.problems.append(f"{name}: finding {fid}: via: {_show(via)} not in "
                                   f"{display_path(bib)} (the review needs a BibTeX entry)")
                continue
            if via in ds.studies:
                ds.problems.append(f"{name}: finding {fid}: via: {_show(via)} is a study file; "
                                   "via names the review whose table was read")
                continue
            doi = ds.bib[via].fields.get("doi")
            if doi and doc.get("source") != f"doi:{doi}":
                ds.problems.append(f"{name}: source: {_show(doc.get('source'))} must be the "
                                   f"review's DOI 'doi:{doi}' (finding {fid} was read via {via})")
    return reviews


def validate(findings_dir=None, bib=None) -> list[str]:
    """Every problem of the dataset, one line each (empty list when clean)."""
    return read_dataset(findings_dir, bib).problems


def _rows(ds: Dataset):
    for citekey in sorted(ds.studies):
        path, doc = ds.studies[citekey]
        entry = ds.bib[citekey]
        for f in doc["findings"]:
            stat = f["statistic"]
            raw = _raw_r(stat, f["n"])
            r = raw if f["positive_is_better"] else -raw
            yield {
                "citekey": citekey, "finding_id": f["id"], "sample": f["sample"],
                "label": entry.label, "author": (entry.authors or [citekey])[0],
                "year": entry.year, **{k: f.get(k, doc[k]) for k in OVERRIDABLE},
                "country": doc["country"], "design": doc["design"],
                "instrument": f["instrument"], "rater": f["rater"], "timing": f["timing"],
                "session": float(f["session"]) if f.get("session") is not None else float("nan"),
                "outcome_measure": f["outcome"]["measure"],
                "outcome_domain": f["outcome"]["domain"], "effect_type": f["effect_type"],
                "conversion": f["conversion"], "n": f["n"], "stat_type": stat["type"],
                "stat_value": float(stat["value"]), "r": r,
                "yi": float(effectsize.r_to_z(r)), "vi": float(effectsize.vi_from_n(f["n"])),
                "source": doc["source"], "locator": f["locator"], "via": f.get("via") or "",
                "read_in_review": bool(f.get("via")), "file": display_path(path),
            }


def load_rows(findings_dir=None, bib=None) -> list[dict]:
    """The curated findings as plain rows (one dict per finding, keys ``COLUMNS``), without
    pandas: what ``load()`` puts in its DataFrame, for commands that need only a few columns
    (``cli.select`` builds the DataFrame when a command asks for it).

    Raises ValidationError listing every problem when the data does not validate.
    """
    ds = read_dataset(findings_dir, bib)
    if ds.problems:
        raise ValidationError(ds.problems)
    rows = list(_rows(ds))
    labels = _distinct_labels([r["label"] for r in rows], [r["citekey"] for r in rows])
    for row, label in zip(rows, labels):
        row["label"] = label
    return rows


def to_frame(rows: list[dict]):
    """``load_rows()`` rows as the tidy DataFrame of ``load()`` (year as nullable Int64)."""
    import pandas as pd

    df = pd.DataFrame(rows, columns=COLUMNS)
    df["year"] = df["year"].astype("Int64")
    return df


def load(findings_dir=None, bib=None):
    """The curated findings as one tidy DataFrame (one row per finding).

    Raises ValidationError listing every problem when the data does not validate.

    >>> df = load()
    >>> bool(((df.r > -1) & (df.r < 1)).all()) and bool((df.vi > 0).all())
    True
    """
    return to_frame(load_rows(findings_dir, bib))


def _distinct_labels(labels, citekeys):
    """APA's rule for two works with the same author-date label: "Smith et al. (2010a)",
    "(2010b)", ... (letters in citekey order), so that no two studies share a label."""
    keys_of: dict[str, list[str]] = {}
    for lab, ck in zip(labels, citekeys):
        keys_of.setdefault(lab, [])
        if ck not in keys_of[lab]:
            keys_of[lab].append(ck)
    out = []
    for lab, ck in zip(labels, citekeys):
        keys = sorted(keys_of[lab])
        if len(keys) > 1 and lab.endswith(")"):
            letter = letters(keys.index(ck))
            sep = "-" if lab.endswith("n.d.)") else ""
            lab = f"{lab[:-1]}{sep}{letter})"
        out.append(lab)
    return out


def letters(i: int) -> str:
    """0 -> a, 25 -> z, 26 -> aa ... (also a spreadsheet's column names, upper-cased)."""
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(97 + r) + s
    return s


def data_hash(findings_dir=None, bib=None) -> str:
    """sha256 over the bytes of every study file (sorted by name) and the bib."""
    findings_dir, bib = _resolve(findings_dir, bib)
    h = hashlib.sha256()
    for path in sorted(Path(findings_dir).glob("*.yaml")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    if Path(bib).is_file():
        h.update(Path(bib).read_bytes())
    return h.hexdigest()


__all__ = ["load", "load_rows", "to_frame", "validate", "read_dataset", "parse_bib", "read_bib", "data_hash",
           "BibEntry", "Dataset", "DEFAULT_FINDINGS", "DEFAULT_BIB", "COLUMNS", "display_path"]
