"""Spreadsheet intake (add --file SHEET, --mapping, --template) and export --sheet.

The 500-row sheet is SIMULATED (tests/simulated_sheet.py): made-up studies, never findings.
"""

import json
import zipfile

import pytest
import yaml

import simulated_sheet as sim
from conftest import snapshot
from metaalliance.cli import main
from metaalliance.dataset import fileio, findings, intake
from metaalliance.dataset.intake_write import column_help
from metaalliance.errors import ValidationError
from metaalliance.options import VOCABULARIES


@pytest.fixture
def empty(tmp_path):
    """An empty curated-data folder: (findings_dir, bib) with no study yet."""
    fdir = tmp_path / "repo" / "data" / "findings"
    fdir.mkdir(parents=True)
    return fdir, tmp_path / "repo" / "references.bib"


def _args(ds):
    return ["--findings", str(ds[0]), "--bib", str(ds[1])]


def test_500_rows_with_40_wrong_cells_list_all_40_and_write_nothing(empty, tmp_path, capsys):
    sheet = tmp_path / "team.xlsx"
    sim.write_xlsx(sheet, sim.with_wrong_cells(sim.rows()))
    bib = tmp_path / "sim.bib"
    bib.write_text(sim.bibtex())
    before = snapshot(empty[0].parent.parent)
    assert main(["add", *_args(empty), "--file", str(sheet), "--bibtex", str(bib)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 40
    name = findings.display_path(sheet)
    for line, (row, col, _, expected) in zip(lines, sim.WRONG_CELLS):
        assert line.startswith(f"{name}: row {row}: {col}: "), line
        assert expected in line, line
    assert snapshot(empty[0].parent.parent) == before


def test_500_corrected_rows_import_in_one_write(empty, tmp_path, capsys, monkeypatch):
    sheet = tmp_path / "team.xlsx"
    sim.write_xlsx(sheet, sim.rows())
    bib = tmp_path / "sim.bib"
    bib.write_text(sim.bibtex())
    # all or nothing: a failure on the 30th file move puts every file back
    calls = {"n": 0}
    real = fileio._replace

    def failing(src, dst):
        calls["n"] += 1
        if calls["n"] == 30:
            raise OSError("disk full (simulated)")
        real(src, dst)

    before = snapshot(empty[0].parent.parent)
    monkeypatch.setattr(fileio, "_replace", failing)
    assert main(["add", *_args(empty), "--file", str(sheet), "--bibtex", str(bib)]) == 1
    assert "disk full" in capsys.readouterr().err
    assert snapshot(empty[0].parent.parent) == before
    monkeypatch.setattr(fileio, "_replace", real)
    assert main(["add", *_args(empty), "--file", str(sheet), "--bibtex", str(bib),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["added_findings"] == 500 and len(out["added_studies"]) == 50
    assert out["problems"] == []
    df = findings.load(*empty)
    assert len(df) == 500
    expected = sim.rows()
    assert sorted(df["stat_value"]) == sorted(r["value"] for r in expected)


def test_the_message_names_sheet_row_and_field(dataset, tmp_path, capsys):
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("citekey,n,stat_type,value,positive_is_better,instrument,rater,timing,"
                     "outcome_measure,outcome_domain,effect_type,conversion,locator\n"
                     + "delta2005second,60,r,0.2,true,WAI,client,early,BDI,symptoms,"
                       "zero_order,exact,Table 1\n" * 5
                     + "delta2005second,60,r,0.2,true,WAIX,client,early,BDI,symptoms,"
                       "zero_order,exact,Table 1\n")
    assert main(["add", *_args(dataset), "--file", str(sheet), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    allowed = ", ".join(VOCABULARIES["instrument"])
    assert out["problems"] == [{
        "row": 7, "field": "instrument",
        "message": f"{findings.display_path(sheet)}: row 7: instrument: 'WAIX' is not a level "
                   f"(allowed: {allowed})"}]


@pytest.mark.parametrize("suffix", ["xlsx", "csv", "ods"])
def test_export_round_trips_the_shipped_dataset(empty, tmp_path, suffix, capsys):
    sheet = tmp_path / f"all.{suffix}"
    assert main(["export", "--sheet", str(sheet)]) == 0
    assert main(["add", *_args(empty), "--file", str(sheet),
                 "--bibtex", str(findings.DEFAULT_BIB)]) == 0
    shipped = sorted(findings.DEFAULT_FINDINGS.glob("*.yaml"))
    assert sorted(p.name for p in empty[0].glob("*.yaml")) == [p.name for p in shipped]
    for p in shipped:
        assert yaml.safe_load((empty[0] / p.name).read_text()) == yaml.safe_load(p.read_text())
    assert findings.load(*empty).drop(columns="file").equals(
        findings.load().drop(columns="file"))


def test_template_has_validation_lists_and_explains_columns(tmp_path, capsys):
    import openpyxl

    path = tmp_path / "sheet.xlsx"
    assert main(["add", "--template", str(path)]) == 0
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["findings", "levels", "columns"]
    ws = wb["findings"]
    header = [c.value for c in ws[1]]
    assert header == [c.name for c in intake.columns()]
    lists = wb["levels"]
    levels = {lists.cell(1, j).value: [lists.cell(i, j).value for i in range(2, lists.max_row + 1)
                                       if lists.cell(i, j).value is not None]
              for j in range(1, lists.max_column + 1)}
    for vocab in ("instrument", "rater", "timing", "design", "effect_type"):
        assert levels[vocab] == list(VOCABULARIES[vocab])
    assert levels["outcome_domain"] == list(VOCABULARIES["outcome_domain"])
    # every vocabulary column of the sheet carries a list validation that points at its levels
    validated = {}
    for dv in ws.data_validations.dataValidation:
        assert dv.type == "list"
        for rng in dv.sqref.ranges:
            validated[header[rng.min_col - 1]] = dv.formula1
    vocab_cols = [c.name for c in intake.columns() if c.levels]
    assert set(vocab_cols) <= set(validated)
    assert validated["instrument"].startswith("levels!$")
    # the explanations come from the codebook (data/README.md), not a copy
    info = {row[0].value: row for row in wb["columns"].iter_rows(min_row=2)}
    assert set(info) == set(header)
    assert "patients behind this estimate" in info["n"][4].value
    assert "WAI-SR = Working Alliance Inventory, short revised" in info["instrument"][4].value
    assert info["population_override"][2].value == "no"
    assert [r[0] for r in column_help()] == header


def test_template_sheet_filled_in_is_imported(dataset, tmp_path, capsys):
    import openpyxl

    path = tmp_path / "sheet.xlsx"
    assert main(["add", "--template", str(path)]) == 0
    wb = openpyxl.load_workbook(path)
    ws = wb["findings"]
    header = [c.value for c in ws[1]]
    row = {"citekey": "delta2005second", "n": 70, "stat_type": "t", "value": 2.5, "df": 68,
           "positive_is_better": True, "instrument": "WAI-S", "rater": "client",
           "timing": "early", "outcome_measure": "BDI-II", "outcome_domain": "symptoms",
           "effect_type": "zero_order", "conversion": "exact", "locator": "Table 4"}
    for k, v in row.items():
        ws.cell(2, header.index(k) + 1, v)
    wb.save(path)
    assert main(["add", *_args(dataset), "--file", str(path)]) == 0
    df = findings.load(*dataset)
    new = df[(df.citekey == "delta2005second") & (df.finding_id == "f2")].iloc[0]
    assert new.r == pytest.approx(2.5 / (2.5 ** 2 + 68) ** 0.5)


def test_mapping_renames_columns_and_spellings(dataset, tmp_path, capsys):
    sheet = tmp_path / "team.csv"
    sheet.write_text("Study,N,Stat,Value,Better,Measure,Who,When,Outcome,Domain,Kind,Conv,Where\n"
                     "delta2005second,60,r,0.2,yes,Working Alliance Inventory,pt,early,BDI,"
                     "symptoms,zero_order,exact,Table 1\n")
    mapping = tmp_path / "map.toml"
    mapping.write_text(
        '[columns]\nStudy = "citekey"\nN = "n"\nStat = "stat_type"\nValue = "value"\n'
        'Better = "positive_is_better"\nMeasure = "instrument"\nWho = "rater"\nWhen = "timing"\n'
        'Outcome = "outcome_measure"\nDomain = "outcome_domain"\nKind = "effect_type"\n'
        'Conv = "conversion"\nWhere = "locator"\n'
        '[values.instrument]\n"Working Alliance Inventory" = "WAI"\n'
        '[values.rater]\npt = "client"\n')
    assert main(["add", *_args(dataset), "--file", str(sheet), "--mapping", str(mapping)]) == 0
    df = findings.load(*dataset)
    new = df[(df.citekey == "delta2005second") & (df.finding_id == "f2")].iloc[0]
    assert (new.instrument, new.rater, new.n) == ("WAI", "client", 60)


def test_mapping_with_a_column_mapped_twice_is_refused(tmp_path):
    mapping = tmp_path / "map.toml"
    mapping.write_text('[columns]\nN = "n"\n"Total N" = "n"\n')
    with pytest.raises(ValidationError) as exc:
        intake.read_mapping(mapping)
    assert exc.value.problems == [f"{findings.display_path(mapping)}: columns: 'N' and "
                                  "'Total N' both map to 'n' (a column mapped twice)"]


def test_dry_run_shows_the_pooled_estimate_before_and_after(tmp_path, capsys):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(findings.DEFAULT_FINDINGS, root / "data" / "findings")
    shutil.copy(findings.DEFAULT_BIB, root / "references.bib")
    ds = (root / "data" / "findings", root / "references.bib")
    sheet = tmp_path / "s.csv"
    # a finding the dataset already holds, re-entered under a new id (numbers as read)
    sheet.write_text("citekey,id,n,stat_type,value,positive_is_better,instrument,rater,timing,"
                     "outcome_measure,outcome_domain,effect_type,conversion,locator,sample\n"
                     "lorenzoluaces2014client,f9,60,r,0.3,true,WAI,client,early,x,symptoms,"
                     "zero_order,exact,Table 1,lorenzoluaces2014client\n")
    before = snapshot(root)
    assert main(["add", *_args(ds), "--file", str(sheet), "--dry-run", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert snapshot(root) == before
    assert out["dry_run"] is True and out["added_findings"] == 1
    assert out["pooled"]["after"]["k"] == out["pooled"]["before"]["k"] + 1


# --- bad input: one line naming file, row and field; exit 1; nothing written ------------------

GOOD = ("citekey,n,stat_type,value,positive_is_better,instrument,rater,timing,outcome_measure,"
        "outcome_domain,effect_type,conversion,locator\n")
ROW = "delta2005second,60,r,0.2,true,WAI,client,early,BDI,symptoms,zero_order,exact,Table 1\n"


def _xlsx(path, header, rows, edit=None):
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(header)
    for r in rows:
        ws.append(r)
    if edit:
        edit(ws)
    wb.save(path)


def _good_xlsx(path, edit=None):
    header = GOOD.strip().split(",")
    row = ROW.strip().split(",")
    row[1], row[3] = 60, 0.2
    _xlsx(path, header, [row], edit)


def _merged_header(ws):
    ws.insert_cols(2)
    ws.merge_cells("A1:B1")


def _empty_header(ws):
    ws.cell(1, 14, None)
    ws.cell(2, 14, "stray")


def _formula(ws):
    ws["B2"] = "=30*2"


def _date(ws):
    import datetime as dt
    ws["B2"] = dt.datetime(2024, 6, 1)


def _ods_with_formula(path):
    """An .ods sheet whose n cell is the formula =30*2 (odfpy, as LibreOffice stores it)."""
    from odf.opendocument import OpenDocumentSpreadsheet
    from odf.table import Table, TableCell, TableRow
    from odf.text import P

    doc = OpenDocumentSpreadsheet()
    table = Table(name="findings")
    for r, values in enumerate((GOOD.strip().split(","), ROW.strip().split(","))):
        tr = TableRow()
        for c, v in enumerate(values):
            if r == 1 and c == 1:
                cell = TableCell(valuetype="float", value=60, formula="of:=30*2")
            else:
                cell = TableCell(valuetype="string")
            cell.addElement(P(text=v))
            tr.addElement(cell)
        table.addElement(tr)
    doc.spreadsheet.addElement(table)
    doc.save(str(path))


BAD_SHEETS = {
    "unknown column": ("csv", lambda p: p.write_text(GOOD.strip() + ",colour\n"
                                                     + ROW.strip() + ",red\n"),
                       "row 1: column N: 'colour': unknown column (allowed: citekey, "),
    "same column twice": ("csv", lambda p: p.write_text(GOOD.strip() + ",n\n"
                                                        + ROW.strip() + ",61\n"),
                          "row 1: column N: 'n' is also column B: a column mapped twice"),
    "merged header": ("xlsx", lambda p: _good_xlsx(p, _merged_header),
                      "row 1: columns A-B: a merged header cell (give each column its own name)"),
    "empty header": ("xlsx", lambda p: _good_xlsx(p, _empty_header),
                     "row 1: column N: empty header cell above data"),
    "formula cell": ("xlsx", lambda p: _good_xlsx(p, _formula),
                     "row 2: n: a formula cell ('=30*2'); type the value as read in the source"),
    "ods formula cell": ("ods", _ods_with_formula,
                         "row 2: n: a formula cell ('=30*2'); type the value as read"),
    "date for a number": ("xlsx", lambda p: _good_xlsx(p, _date),
                          "row 2: n: '2024-06-01T00:00:00' is a date where a number belongs"),
    "thousands of rows": ("csv", lambda p: p.write_text(GOOD + ROW * 6000),
                          "row 5002: more than 5000 data rows; split the sheet"),
    "protected workbook": ("xlsx", lambda p: p.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
                                                           + b"\0" * 600),
                           "the workbook is password-protected (encrypted) or an old .xls file"),
    "corrupt workbook": ("xlsx", lambda p: p.write_bytes(b"PK\x03\x04 this is not a zip"),
                         "cannot open as an .xlsx workbook (corrupt?)"),
    "corrupt ods": ("ods", lambda p: p.write_bytes(b"not an ods file at all"),
                    "cannot open as an .ods workbook"),
    "latin-1 csv": ("csv", lambda p: p.write_bytes((GOOD + ROW.replace("BDI", "Dépression"))
                                                   .encode("latin-1")),
                    "row 2: not UTF-8 text (byte 0xe9 at offset"),
    "empty file": ("csv", lambda p: p.write_bytes(b""), "the file is empty"),
    "header only": ("csv", lambda p: p.write_text(GOOD), "no data rows below the header"),
}


@pytest.mark.parametrize("case", BAD_SHEETS, ids=list(BAD_SHEETS))
def test_bad_sheet_is_one_line_and_writes_nothing(case, dataset, tmp_path, capsys):
    suffix, make, expected = BAD_SHEETS[case]
    path = tmp_path / f"bad.{suffix}"
    make(path)
    before = snapshot(dataset[0].parent.parent)
    assert main(["add", *_args(dataset), "--file", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    line = err[0].removeprefix("error: ")
    assert line.startswith(f"{findings.display_path(path)}: "), line
    assert expected in line, line
    assert "Traceback" not in line
    assert snapshot(dataset[0].parent.parent) == before


def test_a_study_field_that_differs_from_the_file_is_refused(dataset, tmp_path, capsys):
    sheet = tmp_path / "s.csv"
    sheet.write_text(GOOD.strip() + ",population\n" + ROW.strip() + ",adult\n")
    assert main(["add", *_args(dataset), "--file", str(sheet)]) == 1
    err = capsys.readouterr().err
    assert "row 2: population: 'adult' differs from " in err and "('youth')" in err


def test_a_new_study_without_bibtex_entry_is_named(dataset, tmp_path, capsys):
    sheet = tmp_path / "s.csv"
    sheet.write_text("citekey,population,diagnosis,setting,modality,treatment,country,design,"
                     "source," + GOOD.split(",", 1)[1]
                     + "omega2020new,adult,depression,outpatient,individual,cbt,USA,rct,"
                       "doi:10.0/x," + ROW.split(",", 1)[1])
    assert main(["add", *_args(dataset), "--file", str(sheet)]) == 1
    assert capsys.readouterr().err == (
        f"{findings.display_path(sheet)}: row 2: citekey: 'omega2020new' has no BibTeX entry "
        f"in {findings.display_path(dataset[1])}; give it with --bibtex FILE\n")


def test_template_is_never_written_into_the_data(capsys):
    path = findings.DEFAULT_FINDINGS / "t.xlsx"
    assert main(["add", "--template", str(path)]) == 1
    assert not path.exists()
    assert "inside the curated data" in capsys.readouterr().err


def test_xlsx_is_a_zip_with_the_template_parts(tmp_path, capsys):
    path = tmp_path / "t.xlsx"
    assert main(["add", "--template", str(path)]) == 0
    assert "xl/workbook.xml" in zipfile.ZipFile(path).namelist()
