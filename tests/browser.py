"""Headless Chromium for tests: Debian's `chromium` package, driven by Playwright (the Python package, with
`executable_path`: Playwright never downloads a browser of its own here).

`ensure_chromium()` installs the package with apt when it is missing (as root; tests skip with the reason
otherwise, as the SLURM tests do). `open_page(url)` starts a private browser (a new empty profile, no
background networking, no GPU) and yields the page and everything it logged: console messages, uncaught page
errors and the URLs it requested; the browser is closed when the block ends.
"""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import apt

CHROMIUM = "/usr/bin/chromium"
PACKAGES = ("chromium",)
# Without the background-networking flags Chromium keeps trying (and failing) to reach Google's hosts.
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions"]


class BrowserUnavailable(Exception):
    """Chromium cannot be installed or started here: the browser tests skip with this reason."""


def chromium_path() -> str | None:
    return CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")


def ensure_chromium() -> float:
    """Install Debian's chromium with apt if it is missing; the seconds that took (0 if none)."""
    try:
        import playwright  # noqa: F401
    except ImportError as e:
        raise BrowserUnavailable(f"the playwright package is missing ({e}); `make test` installs it") from None
    if chromium_path():
        return 0.0
    try:
        took = apt.install(PACKAGES, "chromium")
    except apt.AptUnavailable as e:
        raise BrowserUnavailable(str(e)) from None
    if not chromium_path():
        raise BrowserUnavailable("chromium is still missing after apt-get install")
    return took


@dataclass
class Log:
    console: list[tuple[str, str]] = field(default_factory=list)   # (type, text)
    errors: list[str] = field(default_factory=list)                 # uncaught exceptions in the page
    requests: list[str] = field(default_factory=list)               # every URL the page asked for

    def problems(self) -> list[str]:
        """Console errors and warnings, and page errors (what a clean page has none of)."""
        return [f"{t}: {m}" for t, m in self.console if t in ("error", "warning")] + self.errors


@contextmanager
def open_page(url: str, width: int = 1500, height: int = 1000):
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=chromium_path(), headless=True, args=ARGS,
                                                   viewport={"width": width, "height": height})
        try:
            page = ctx.new_page()
            log = Log()
            page.on("console", lambda m: log.console.append((m.type, m.text)))
            page.on("pageerror", lambda e: log.errors.append(str(e)))
            page.on("request", lambda r: log.requests.append(r.url))
            page.goto(url)
            page.wait_for_selector("body[data-ready='1'], #pages", timeout=15_000)
            yield page, log
        finally:
            ctx.close()
