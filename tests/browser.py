"""Real Chromium for the settings-page tests: Debian's `chromium` driven by Playwright for Python
(`executable_path`; Playwright's own browser download is never used). Where no browser can run,
the browser tests fail with the reason, and the end of the run says so in a section of its own:
never a silent skip. A pytest plugin (conftest.py loads it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

# Chromium's background services (updates, sync, QUIC probes) try the network, which a closed
# machine refuses. Playwright's launch() gives every browser a new empty profile directory.
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CANDIDATES = ("chromium", "chromium-browser")
INSTALL_HINT = "install Debian's chromium package (apt-get install chromium; ./run.sh test does it where apt is usable)"

_report: dict[str, str] = {}


def chromium_executable() -> str | None:
    """JARVIS_TEST_CHROMIUM, else the first Chromium on PATH."""
    configured = os.environ.get("JARVIS_TEST_CHROMIUM")
    if configured:
        return configured if Path(configured).is_file() else None
    return next((found for found in map(shutil.which, CANDIDATES) if found), None)


def _version(executable: str) -> str:
    try:
        result = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown ({error})"
    return result.stdout.strip() or result.stderr.strip().splitlines()[-1]


def _unavailable(reason: str) -> None:
    _report["problem"] = reason
    pytest.fail(f"BROWSER TESTS NOT RUN: {reason}", pytrace=False)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A headless Chromium for one test module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed: pip install -r tests/requirements.txt")
    executable = chromium_executable()
    if executable is None:
        _unavailable(f"no Chromium found ({', '.join(CANDIDATES)} on PATH, or JARVIS_TEST_CHROMIUM): {INSTALL_HINT}")
    playwright = sync_playwright().start()
    try:
        try:
            launched = playwright.chromium.launch(executable_path=executable, headless=True, args=LAUNCH_ARGS)
        except Exception as error:
            _unavailable(f"{executable} did not start: {str(error).splitlines()[0]}")
        _report.setdefault("ran", f"{_version(executable)} ({executable})")
        yield launched
        launched.close()
    finally:
        playwright.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if "problem" in _report:
        terminalreporter.section("browser tests NOT RUN", sep="!", red=True, bold=True)
        terminalreporter.write_line(f"The settings-page tests could not run in a browser: {_report['problem']}", red=True, bold=True)
    elif "ran" in _report:
        terminalreporter.section("browser tests", sep="-")
        terminalreporter.write_line(f"The settings-page tests ran in real {_report['ran']}")
