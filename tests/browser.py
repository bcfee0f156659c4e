"""A headless Chromium for tests: the system's chromium driven by Selenium through the system's
chromedriver (Debian: `apt-get install chromium chromium-driver`; `.ci/run` installs them).

Both come from the same package build, so their versions always match, and nothing is
downloaded: Selenium's own driver manager is never asked (the driver path is given).
"""

from __future__ import annotations

import shutil

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = "chromedriver"


def missing() -> str | None:
    """Why no browser can run here, or None when one can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if not any(shutil.which(name) for name in CHROMIUM):
        return "no chromium on PATH (apt-get install chromium chromium-driver)"
    if not shutil.which(CHROMEDRIVER):
        return "no chromedriver on PATH (apt-get install chromium-driver)"
    return None


def chromium(width: int = 1280, height: int = 900):
    """A headless Chromium WebDriver with a window of width x height CSS pixels."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = next(shutil.which(n) for n in CHROMIUM if shutil.which(n))
    for flag in ("--headless=new", "--no-sandbox",  # CI runs as root, where the sandbox cannot
                 "--disable-dev-shm-usage",  # containers often have a 64 MB /dev/shm
                 "--autoplay-policy=no-user-gesture-required", "--mute-audio",
                 f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(shutil.which(CHROMEDRIVER)))
