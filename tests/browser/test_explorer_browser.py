"""`metaalliance explore` in a real browser (Debian's Chromium through Selenium).

One app process serves the whole module (a free loopback port). The tests change filters as a
user does (open a tag, untick levels), and check what the page shows against the command line:
the estimate equals `metaalliance pool ... --json` for the same selection, the forest image is
there, the forest download is a PDF, a source link carries the DOI, an empty selection says so,
two browsers do not see each other's choices, and data/ is unchanged at the end.
"""

import json
import os
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from browser_helpers import (HOW_TO_ENABLE, ROOT, _missing, data_hash, new_driver,
                             quit_driver, set_viewport, wait_for)

if _missing():
    if os.environ.get("CI"):
        raise RuntimeError(f"CI: the browser tests need {', '.join(_missing())}; .ci/run "
                           "installs chromium and chromium-driver")
    pytest.skip(HOW_TO_ENABLE, allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402

#: where the screenshots go when set (docs/explorer.png is made this way); else tmp_path
SHOT_DIR = os.environ.get("METAALLIANCE_SCREENSHOTS")


@pytest.fixture(scope="module")
def data_before():
    return data_hash()


@pytest.fixture(scope="module")
def explorer(data_before):
    """`metaalliance explore` on a free loopback port, in a subprocess; yields its URL."""
    import tempfile

    err = tempfile.TemporaryFile(mode="w+")     # never a full pipe that blocks the server
    proc = subprocess.Popen([sys.executable, "-m", "metaalliance.cli", "explore", "--port", "0",
                             "--json"], cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        err.seek(0)
        raise RuntimeError(f"explore did not start: {err.read()}")
    url = json.loads(line)["url"]
    yield url
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    err.close()


@pytest.fixture(scope="module")
def driver():
    d = new_driver()
    yield d
    quit_driver(d)


def _curated_frame():
    """The outcome findings of the curated dataset (what `pool` pools by default)."""
    from metaalliance.dataset import findings
    from metaalliance.options import SEPARATE_DOMAINS

    df = findings.load()
    return df[~df["outcome_domain"].isin(SEPARATE_DOMAINS)]


def _curated_k(**where) -> int:
    df = _curated_frame()
    for field, value in where.items():
        df = df[df[field] == value]
    return len(df)


def run_json(command: str) -> dict:
    """Run a command line the page shows (a new process, as a user would) and parse its JSON."""
    argv = shlex.split(command)
    assert argv[0] == "metaalliance"
    out = subprocess.run([sys.executable, "-m", "metaalliance.cli", *argv[1:]],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def shown(driver) -> dict:
    """What the page shows: the estimate (its full-precision value and its text) and the
    command line, read in one script so that both come from the same rendering."""
    got = driver.execute_script("""
        var e = document.getElementById('estimate-r'), c = document.getElementById('command');
        if (!e || !c) { return null; }
        return [e.dataset.value, e.dataset.z, e.dataset.k, e.innerText, c.innerText];""")
    if not got:
        raise LookupError("no estimate on the page")
    return {"r": float(got[0]), "z": float(got[1]), "k": int(got[2]), "text": got[3].strip(),
            "command": got[4].strip()}


def open_page(driver, url):
    driver.get(url)
    return wait_for(lambda: shown(driver), what="the pooled estimate")


def tick(driver, field, keep):
    """Open the tag's accordion panel and leave exactly the levels ``keep`` ticked."""
    panel = driver.find_element(By.CSS_SELECTOR, f".accordion-item[data-value='{field}']")
    button = panel.find_element(By.CSS_SELECTOR, ".accordion-button")
    if "collapsed" in (button.get_attribute("class") or ""):
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
        button.click()
    def all_shown():
        boxes = panel.find_elements(By.CSS_SELECTOR, f"input[name='tag_{field}']")
        return boxes if boxes and all(b.is_displayed() for b in boxes) else None

    boxes = wait_for(all_shown, what=f"the {field} checkboxes")
    wait_for(lambda: "show" in panel.find_element(By.CSS_SELECTOR, ".accordion-collapse")
             .get_attribute("class") and "collapsing" not in panel.find_element(
                 By.CSS_SELECTOR, ".accordion-collapse").get_attribute("class"),
             what=f"the {field} panel to open")
    for box in boxes:
        if box.is_selected() != (box.get_attribute("value") in keep):
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
            box.click()
    assert {b.get_attribute("value") for b in boxes if b.is_selected()} == set(keep)


def showing(driver, command: str):
    """Wait until the page shows the command line ``command``; return what is shown."""
    return wait_for(lambda: (lambda s: s if s["command"] == command else None)(shown(driver)),
                    what=f"the page to show {command}")


def test_default_view_equals_pool_json(explorer, driver):
    s = open_page(driver, explorer)
    assert s["command"] == "metaalliance pool --json"
    ref = run_json(s["command"])
    assert s["k"] == ref["k"] == _curated_k()
    assert s["r"] == pytest.approx(ref["back_transformed"]["estimate"], rel=1e-12)
    assert s["z"] == pytest.approx(ref["estimate"], rel=1e-12)
    bt = ref["back_transformed"]
    from metaalliance.formatting import fmt_est_ci

    assert s["text"] == "r = " + fmt_est_ci(bt["estimate"], bt["ci_lower"], bt["ci_upper"], 3)


def test_filter_change_equals_pool_json_and_draws_forest(explorer, driver):
    s0 = open_page(driver, explorer)
    img0 = driver.find_element(By.ID, "forest-img").get_attribute("src")
    tick(driver, "rater", {"client"})
    s = showing(driver, "metaalliance pool --where rater=client --json")
    ref = run_json(s["command"])
    assert s["k"] == ref["k"] == _curated_k(rater="client")
    assert s["r"] == pytest.approx(ref["back_transformed"]["estimate"], rel=1e-12)
    assert s["r"] != pytest.approx(s0["r"], rel=1e-6)
    # the forest image is redrawn for the new selection and has loaded
    img = wait_for(lambda: (lambda e: e if e.get_attribute("src") != img0 else None)(
        driver.find_element(By.ID, "forest-img")), what="the new forest image")
    assert img.get_attribute("src").startswith("data:image/svg+xml;base64,")
    assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth",
                                 img) > 300
    # a model option too: three-level, findings within samples
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "model")).select_by_value("three_level_sample")
    s2 = showing(driver, "metaalliance pool --where rater=client --cluster sample --json")
    ref = run_json(s2["command"])
    assert s2["r"] == pytest.approx(ref["back_transformed"]["estimate"], rel=1e-12)


def test_forest_download_is_a_pdf(explorer, driver):
    open_page(driver, explorer)
    link = wait_for(lambda: (lambda h: h if h and "download" in h else None)(
        driver.find_element(By.ID, "dl_forest").get_attribute("href")),
        what="the download link")
    with urllib.request.urlopen(link, timeout=120) as resp:
        body = resp.read()
        disposition = resp.headers.get("Content-Disposition", "")
    assert body.startswith(b"%PDF-")
    assert b"%%EOF" in body[-64:]
    assert "forest-174mm.pdf" in disposition


def test_source_link_carries_the_doi(explorer, driver):
    open_page(driver, explorer)
    driver.find_element(By.LINK_TEXT, "Findings").click()
    links = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "a.ma-source"),
                     what="the findings table")
    hrefs = [a.get_attribute("href") for a in links]
    texts = [a.text for a in links]
    assert any(h.startswith("https://doi.org/10.") for h in hrefs)
    for h, t in zip(hrefs, texts):
        if t.startswith("doi:"):
            assert h == "https://doi.org/" + t[4:]
    # the locator is shown beside it
    table = driver.find_element(By.ID, "findings").text
    assert all(loc in table for loc in _curated_frame()["locator"] if "\n" not in loc)


def test_empty_selection_says_so(explorer, driver):
    open_page(driver, explorer)
    tick(driver, "rater", set())
    empty = "No findings selected: no level of rater is ticked. Tick at least one."
    wait_for(lambda: driver.find_element(By.ID, "too-few").text == empty,
             what="the no-findings message")
    tick(driver, "rater", {"observer"})
    wait_for(lambda: driver.find_element(By.ID, "too-few").text.startswith(
        "Fewer than 2 findings in this selection (k = 1)"), what="the k = 1 message")
    # and the forest says so too, instead of an error
    assert "Fewer than 2 findings" in driver.find_element(By.ID, "forest").text


def test_sessions_do_not_leak(explorer, driver):
    """Two browsers (separate profiles): each keeps its own selection and model."""
    a = open_page(driver, explorer)
    other = new_driver()
    try:
        b = open_page(other, explorer)
        assert b["command"] == a["command"] == "metaalliance pool --json"
        tick(driver, "rater", {"client"})
        a2 = showing(driver, "metaalliance pool --where rater=client --json")
        from selenium.webdriver.support.ui import Select

        Select(other.find_element(By.ID, "model")).select_by_value("composite_sample")
        b2 = showing(other, "metaalliance pool --aggregate sample --json")
        # each still shows its own after the other changed
        assert shown(driver)["command"] == a2["command"]
        assert shown(other)["command"] == b2["command"]
        assert shown(other)["r"] == pytest.approx(
            run_json(b2["command"])["back_transformed"]["estimate"], rel=1e-12)
    finally:
        quit_driver(other)


def test_screenshots(explorer, driver, tmp_path):
    """Desktop (1280 x 800) and phone (390 x 844): the estimate and the forest are on the page
    and the page is no wider than the screen."""
    from PIL import Image

    out = Path(SHOT_DIR) if SHOT_DIR else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    for name, (w, h, mobile) in {"desktop": (1280, 800, False),
                                 "phone": (390, 844, True)}.items():
        set_viewport(driver, w, h, mobile)
        open_page(driver, explorer)
        wait_for(lambda: driver.execute_script(
            "var i = document.getElementById('forest-img'); return i && i.naturalWidth"),
            what="the forest image")
        assert driver.execute_script(
            "return document.documentElement.scrollWidth") <= w
        path = out / f"explorer-{name}.png"
        driver.save_screenshot(str(path))
        assert Image.open(path).size == (w, h)
    set_viewport(driver, 1280, 800)


def test_zz_data_folder_unchanged(explorer, data_before):
    """After every session above: data/ and references.bib are byte for byte as before."""
    assert data_hash() == data_before
