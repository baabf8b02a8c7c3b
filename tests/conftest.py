"""Shared fixtures. The tiny datasets built here are test fixtures, not findings: their numbers
are made up for the tests and never leave tests/."""

import textwrap
from pathlib import Path

import pytest

FIXTURE_BIB = textwrap.dedent("""\
    @article{alpha2001first,
      author = {Alpha, Ann and Beta, Bob and Gamma, Gil},
      title = {A fixture study},
      journal = {Test Journal},
      year = {2001}
    }

    @article{delta2005second,
      author = {Delta, Dee},
      title = {Another fixture study},
      journal = {Test Journal},
      year = {2005}
    }
    """)

STUDY_A = textwrap.dedent("""\
    citekey: alpha2001first
    population: adult
    diagnosis: depression
    setting: outpatient
    modality: individual
    treatment: cbt
    country: USA
    design: rct
    source: "doi:10.0000/fixture.1"
    findings:
      # a reviewer's comment that add must keep
      - id: f1
        n: 50
        statistic: {type: r, value: 0.30}
        positive_is_better: true
        instrument: WAI
        rater: client
        timing: early
        outcome: {measure: BDI-II, domain: symptoms}
        effect_type: zero_order
        conversion: exact
        locator: "Table 2"
        sample: alpha2001first
      - id: f2
        n: 50
        statistic: {type: t, value: -2.0, df: 48}
        positive_is_better: false
        instrument: WAI
        rater: therapist
        timing: late
        outcome: {measure: BDI-II residual, domain: symptoms}
        effect_type: zero_order
        conversion: exact
        locator: "p. 5"
        sample: alpha2001first
    """)

STUDY_D = textwrap.dedent("""\
    citekey: delta2005second
    population: youth
    diagnosis: anxiety
    setting: school
    modality: group
    treatment: cbt
    country: unspecified
    design: naturalistic
    source: "url:https://example.org/fixture"
    findings:
      - id: f1
        n: 80
        statistic: {type: F, value: 4.0, df: 78, sign: 1}
        positive_is_better: true
        instrument: HAq
        rater: client
        timing: mid
        outcome: {measure: attendance, domain: retention}
        effect_type: zero_order
        conversion: exact
        locator: "abstract"
        sample: delta2005second
    """)


@pytest.fixture
def dataset(tmp_path) -> tuple[Path, Path]:
    """A valid two-study fixture dataset: (findings_dir, bib)."""
    root = tmp_path / "repo"
    findings = root / "data" / "findings"
    findings.mkdir(parents=True)
    (findings / "alpha2001first.yaml").write_text(STUDY_A)
    (findings / "delta2005second.yaml").write_text(STUDY_D)
    bib = root / "references.bib"
    bib.write_text(FIXTURE_BIB)
    return findings, bib


def snapshot(folder: Path) -> dict:
    """Every file below folder with its bytes (lock files excluded)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(Path(folder).rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


def patch_engine(monkeypatch, name, value) -> None:
    """Set ``name`` to ``value`` in every engine module that holds it: ``estimators`` is a facade
    over control/wls/tau2/subsets/design, each of which reads its own (imported) global."""
    import importlib
    import pkgutil

    import metaalliance.engine as engine

    hit = False
    for info in pkgutil.iter_modules(engine.__path__):
        module = importlib.import_module(f"metaalliance.engine.{info.name}")
        if hasattr(module, name):
            monkeypatch.setattr(module, name, value)
            hit = True
    assert hit, f"no engine module has {name}"
