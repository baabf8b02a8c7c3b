"""Helpers of the browser tests (imported by conftest.py and the tests)."""

import hashlib
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
#: Chromium's flags for a container without a display, GPU, or a writable shared memory
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run")

HOW_TO_ENABLE = ("browser tests skipped: they need Chromium, chromedriver and selenium "
                 "(apt-get install chromium chromium-driver; pip install -e '.[dev]')")


def _missing() -> list:
    out = [name for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER))
           if not path]
    try:
        import selenium  # noqa: F401
    except ImportError:
        out.append("selenium")
    return out


def data_hash() -> str:
    """SHA-256 over every file's path and bytes under data/ and references.bib."""
    h = hashlib.sha256()
    paths = sorted(p for p in (ROOT / "data").rglob("*") if p.is_file())
    for p in paths + [ROOT / "references.bib"]:
        h.update(str(p.relative_to(ROOT)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def new_driver(width=1280, height=800, mobile=False):
    """A fresh Chromium (its own profile folder: a separate browser context)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="metaalliance-chromium-")
    opts.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    set_viewport(driver, width, height, mobile)
    driver._profile_dir = profile
    return driver


def set_viewport(driver, width, height, mobile=False):
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1,
                            "mobile": mobile})


def quit_driver(driver):
    driver.quit()
    shutil.rmtree(driver._profile_dir, ignore_errors=True)


def wait_for(predicate, timeout=90.0, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the page is re-rendering: try again
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} ({last!r})")
