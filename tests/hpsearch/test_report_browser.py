"""The report renders in headless Chromium with no console errors.

Writes the report of a recorded study, opens ``index.html`` from disk in
Debian's ``chromium`` (installed by ``.ci/run``), takes a screenshot and scans
Chromium's log for console messages: the page has no JavaScript, so any
console line (an uncaught error, a blocked resource) is a failure. Skips, with
the reason, when Chromium is not installed (a failure in CI, see tests/conftest.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hpsearch import report
from tests.hpsearch.fake_study import write_fake_study

pytestmark = pytest.mark.browser

WINDOW = (1280, 2000)
# Chromium logs page console messages as "...:INFO:CONSOLE(12)] "message", source: ..."
CONSOLE_LINE = re.compile(r":CONSOLE[:(]|Uncaught|Not allowed to load local resource")
VAL_BLUE = np.array([0x1F, 0x77, 0xB4])  # the learning-curve figure's validation line


def _chromium() -> str:
    for candidate in (
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.skip("chromium is not installed (CI installs Debian's chromium package in .ci/run)")


def _render(chromium: str, page: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={tmp / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            *extra,
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    url = f"sqlite:///{root / 'results.db'}"
    write_fake_study(url, "shown")
    return report.write_report(url, "shown", root / "report")


def test_report_renders_in_headless_chromium_without_console_errors(page, tmp_path):
    chromium = _chromium()
    shot = tmp_path / "screenshot.png"
    run = _render(chromium, page, tmp_path, f"--screenshot={shot}")
    console = [line for line in run.stderr.splitlines() if CONSOLE_LINE.search(line)]
    assert run.returncode == 0, run.stderr[-3000:]
    assert console == [], "\n".join(console)

    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == WINDOW
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    # Not blank, and the learning-curve PNG was loaded and drawn (its line colour shows;
    # the page itself never uses that colour).
    assert len(np.unique(pixels, axis=0)) > 200
    near_blue = np.abs(pixels - VAL_BLUE).sum(axis=1) < 30
    assert near_blue.sum() > 500


def test_every_image_chromium_parses_exists(page, tmp_path):
    chromium = _chromium()
    run = _render(chromium, page, tmp_path, "--dump-dom")
    assert run.returncode == 0, run.stderr[-3000:]
    sources = re.findall(r'<img src="([^"]+)"', run.stdout)
    assert sorted(sources) == sorted(f"{key}.png" for key in report.FIGURES)
    for src in sources:
        assert (page.parent / src).stat().st_size > 1000, src
