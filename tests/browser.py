"""Headless Chromium for the browser tests: Debian's `chromium` driven by its `chromedriver` through Selenium.
Nothing downloads a browser; without them the tests skip and say how to install them."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900")


def require_browser() -> None:
    """Skip the calling test module when the browser or its driver is missing."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("browser tests need Debian's chromium and chromium-driver: `apt-get install chromium "
                    "chromium-driver` (`make test` does it when run as root)", allow_module_level=True)
    pytest.importorskip("selenium", reason="browser tests need selenium (the `test` extra)")


@contextmanager
def chromium() -> Iterator[object]:
    """A fresh headless Chromium with its own profile folder."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="shoptag-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
