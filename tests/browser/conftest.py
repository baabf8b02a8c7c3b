"""Browser tests of `metaalliance explore`: Debian's Chromium driven by Selenium through the
system chromedriver (nothing downloads a browser build).

The test module skips itself (one line) without Chromium, chromedriver or selenium, and fails
under CI (CI=true), where `.ci/run` installs them.
"""

import json
import subprocess
import sys

import pytest

from browser_helpers import ROOT, data_hash, new_driver, quit_driver


@pytest.fixture(scope="session")
def data_before():
    return data_hash()


@pytest.fixture(scope="session")
def explorer(data_before):
    """`metaalliance explore` on a free loopback port, in a subprocess; yields its URL."""
    proc = subprocess.Popen([sys.executable, "-m", "metaalliance.cli", "explore", "--port", "0",
                             "--json"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        raise RuntimeError(f"explore did not start: {proc.stderr.read()}")
    url = json.loads(line)["url"]
    yield url
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def driver():
    d = new_driver()
    yield d
    quit_driver(d)


