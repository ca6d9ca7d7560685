"""The HTML report in a real browser: headless Chromium (Debian's package) opens it offline with no console message,
renders the hostile text as text, and a screenshot pins the layout.

Why not compare the screenshot with a committed PNG: glyphs, hinting and anti-aliasing change with the fonts and
the Chromium of each machine, so a pixel (or perceptual) diff either breaks on a new machine or tolerates enough
to miss a broken layout. The test pins what the layout promises instead, in bands of the 1280x2000 screenshot:
the page is centred (an empty left margin), the title is drawn at the top, the chart (the only place its red
crosses appear, so they prove the data: image decoded) is on the first screen, and the kept changes, each with
its green border, come after it.

Without Chromium the test skips with the reason; with AUTORESEARCH_REQUIRE_BROWSER=1 (what CI sets) it fails.
"""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from autoresearch.runner.report.write import write_report
from tests.report.conftest import Opened

WIDTH, HEIGHT = 1280, 2000
BACKGROUND = (246, 247, 249)  # the page's #f6f7f9
CHART_RED = (215, 48, 31)  # progress_png.RED, which the page's CSS never uses
KEEP_GREEN = (26, 150, 65)  # the kept changes' border


def chromium() -> str:
    path = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if path is None:
        reason = "headless Chromium is not installed (apt-get install chromium)"
        if os.environ.get("AUTORESEARCH_REQUIRE_BROWSER") == "1":
            pytest.fail(f"AUTORESEARCH_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return path


def browse(page: Path, *flags: str) -> subprocess.CompletedProcess:
    """Chromium, headless and offline, on page with flags; its console messages go to stderr."""
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--enable-logging=stderr",
               "--v=0", f"--user-data-dir={page.parent / 'chromium-profile'}", *flags, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, "TZ": "UTC"})


def near(pixels: np.ndarray, colour: tuple[int, int, int], tolerance: int = 40) -> np.ndarray:
    return np.abs(pixels - np.array(colour)).sum(axis=2) < tolerance


@pytest.fixture
def page(opened: Opened, tmp_path: Path) -> Path:
    return write_report(opened.conn, opened.repo, opened.run, tmp_path / "report.html")[-1]


def test_the_page_renders_offline_with_no_console_message_and_its_text_as_text(page: Path):
    done = browse(page, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []  # the page has no script: any message is an error, a refused load or a CSP violation
    dom = done.stdout
    assert "Kept changes (5)" in dom and "What failed" in dom and "Where the time went" in dom
    assert "<script" not in dom and "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert dom.count("<img") == 1


def test_a_screenshot_pins_the_layout(page: Path, tmp_path: Path):
    shot = tmp_path / "shot.png"
    done = browse(page, f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", "--hide-scrollbars")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    assert [line for line in done.stderr.splitlines() if ":CONSOLE" in line] == []
    pixels = (imread(shot)[:, :, :3] * 255).round().astype(int)
    assert pixels.shape[:2] == (HEIGHT, WIDTH)
    assert near(pixels[:, :40], BACKGROUND, 6).all()  # centred: nothing in the left margin
    assert (pixels[:150].sum(axis=2) < 200).sum() > 500  # the title's dark text
    red_rows = np.nonzero(near(pixels, CHART_RED))[0]
    assert len(red_rows) >= 5 and red_rows.max() < 1200  # the chart decoded, on the first screen
    green_rows = np.nonzero(near(pixels[:, :120], KEEP_GREEN))[0]
    assert (green_rows > red_rows.max() + 300).sum() > 200  # the kept changes' borders, after the chart
