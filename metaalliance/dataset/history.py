"""The dataset through its history: the findings at a git revision, what changed, the version.

``at_revision(rev)`` extracts ``data/findings`` and ``references.bib`` as they were at a git
revision (``git archive`` into a temporary folder) and reads them with the normal reader, so the
old dataset is checked by today's rules. ``compare(old, new)`` lists studies and findings added,
removed and changed (field by field, on the flat sheet fields), and ``main_estimate(df)`` gives
the headline number of the report (three-level REML on Fisher z, findings within samples, the
adherence/retention/dropout findings apart) so a reviewer sees what a change does to the result.

``dataset_version()`` is the newest release in ``data/CHANGELOG.md``.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from metaalliance.dataset import findings as F
from metaalliance.errors import DataError

CHANGELOG = F.REPO_ROOT / "data" / "CHANGELOG.md"
FINDINGS_PATH = "data/findings"
BIB_PATH = "references.bib"


def _git(args, repo, what: str) -> bytes:
    try:
        res = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=60)
    except FileNotFoundError:
        raise DataError(f"{what}: git is not installed") from None
    except subprocess.TimeoutExpired:
        raise DataError(f"{what}: git did not answer within 60 s") from None
    if res.returncode != 0:
        first = (res.stderr.decode("utf-8", "replace").strip().splitlines() or ["failed"])[0]
        raise DataError(f"{what}: {first}")
    return res.stdout


def resolve(rev: str, repo=F.REPO_ROOT) -> str:
    """The full commit hash of ``rev``, or DataError naming the revision."""
    if not rev or rev.startswith("-") or any(c.isspace() for c in rev):
        raise DataError(f"revision {rev!r}: not a git revision")
    try:
        out = _git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], repo,
                   f"revision {rev!r}")
    except DataError:
        if subprocess.run(["git", "-C", str(repo), "rev-parse", "--git-dir"],
                          capture_output=True).returncode != 0:
            raise DataError(f"revision {rev!r}: {F.display_path(repo)} is not a git repository "
                            "(diff needs the project's git history)") from None
        raise DataError(f"revision {rev!r}: not a commit of the repository at "
                        f"{F.display_path(repo)} (see git log -- {FINDINGS_PATH})") from None
    return out.decode().strip()


@contextlib.contextmanager
def at_revision(rev: str, repo=F.REPO_ROOT):
    """(findings folder, bib file) of the dataset at ``rev``, in a temporary folder."""
    commit = resolve(rev, repo)
    listing = _git(["ls-tree", "--name-only", commit, FINDINGS_PATH + "/"], repo,
                   f"revision {rev!r}")
    if not listing.strip():
        raise DataError(f"revision {rev!r}: {FINDINGS_PATH}: not in that commit (it predates "
                        "the curated dataset)")
    paths = [FINDINGS_PATH]
    if _git(["ls-tree", "--name-only", commit, BIB_PATH], repo, f"revision {rev!r}").strip():
        paths.append(BIB_PATH)
    data = _git(["archive", "--format=tar", commit, *paths], repo, f"revision {rev!r}")
    with tempfile.TemporaryDirectory(prefix="metaalliance-rev-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp) / FINDINGS_PATH, Path(tmp) / BIB_PATH


@dataclass
class Snapshot:
    """The dataset at one point: flat records keyed by (citekey, id), its frame, its problems."""
    label: str
    records: dict
    studies: set
    frame: object        # tidy DataFrame, or None when the dataset does not validate
    problems: list


def snapshot(findings_dir, bib, label: str) -> Snapshot:
    from metaalliance.dataset.intake import flat_records

    ds = F.read_dataset(findings_dir, bib)
    records = {(r["citekey"], str(r.get("id"))): r for r in flat_records(ds)}
    frame = None
    if not ds.problems:
        frame = F.load(findings_dir, bib)
    return Snapshot(label, records, set(ds.studies), frame, ds.problems)


def compare(old: Snapshot, new: Snapshot) -> dict:
    """Studies and findings added, removed and changed (each change one field).

    A study field that changed is listed once for the study (``"id": None``); a finding field
    once for the finding. Fields are named as the sheet's columns (stat_type, outcome_domain,
    study_note, setting_override ...).
    """
    from metaalliance.dataset.intake import columns

    study_cols = [c.name for c in columns() if c.path[0] == "study"]
    added = sorted(set(new.records) - set(old.records))
    removed = sorted(set(old.records) - set(new.records))
    changed = []

    def first(snap, ck):
        return next(r for (c, _), r in sorted(snap.records.items()) if c == ck)

    for ck in sorted(old.studies & new.studies):
        if not any(c == ck for c, _ in old.records) or not any(c == ck for c, _ in new.records):
            continue
        a, b = first(old, ck), first(new, ck)
        for field in study_cols:
            if a.get(field) != b.get(field):
                changed.append({"citekey": ck, "id": None, "field": field,
                                "old": plain(a.get(field)), "new": plain(b.get(field))})
    for key in sorted(set(old.records) & set(new.records)):
        a, b = old.records[key], new.records[key]
        for field in _order(a, b):
            if field not in study_cols and a.get(field) != b.get(field):
                changed.append({"citekey": key[0], "id": key[1], "field": field,
                                "old": plain(a.get(field)), "new": plain(b.get(field))})
    changed.sort(key=lambda c: (c["citekey"], c["id"] or ""))
    return {
        "studies_added": sorted(new.studies - old.studies),
        "studies_removed": sorted(old.studies - new.studies),
        "added": [{"citekey": c, "id": i} for c, i in added],
        "removed": [{"citekey": c, "id": i} for c, i in removed],
        "changed": changed,
    }


def plain(value):
    """A value as JSON can hold it: text, a finite number, true/false, null; anything else (a
    date YAML read from an unquoted 2020-01-01, a .nan, a list) as its text."""
    import math

    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    return str(value)


def _order(a: dict, b: dict) -> list:
    from metaalliance.dataset.intake import columns

    names = [c.name for c in columns()]
    return names + sorted((set(a) | set(b)) - set(names))


def dataset_version(path=CHANGELOG) -> str | None:
    """The newest release named in data/CHANGELOG.md (``## 1.1.0 (2026-12-06)``), or None."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return None
    m = re.search(r"^## v?(\d+\.\d+(?:\.\d+)?)\b", text, flags=re.M)
    return m.group(1) if m else None
