"""Headless Chromium (Debian's chromium + chromium-driver) driven by Selenium, for the
tests that look at pages the way a person's browser does: rendered DOM, layout
boxes, script execution, screenshots, and axe-core's accessibility rules.

Every call blocks: async tests run them with ``asyncio.to_thread`` so that the
loopback servers sharing the test's event loop keep answering meanwhile.
"""

from __future__ import annotations

import base64
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import html5lib
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.conftest import require

ROOT = Path(__file__).resolve().parent.parent
AXE = ROOT / ".ci" / "node" / "node_modules" / "axe-core" / "axe.min.js"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def chromium_paths() -> tuple[str, str]:
    """(chromium, chromedriver), or skip (fail under CI=true) when they are missing."""
    browser = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    require(
        browser is not None and driver is not None,
        "chromium and chromium-driver are not installed (.ci/setup-browser.sh)",
    )
    assert browser is not None and driver is not None
    return browser, driver


class Browser:
    """One Chromium with a fresh profile; ``javascript=False`` disables scripts entirely."""

    def __init__(self, *, javascript: bool = True, width: int = 1280, height: int = 1000) -> None:
        binary, driver = chromium_paths()
        self.profile = tempfile.mkdtemp(prefix="probed-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile}")
        options.add_argument(f"--window-size={width},{height}")
        if not javascript:
            options.add_experimental_option(
                "prefs", {"profile.managed_default_content_settings.javascript": 2}
            )
        self.driver = webdriver.Chrome(options=options, service=Service(executable_path=driver))
        self.driver.set_page_load_timeout(30)
        self.driver.set_script_timeout(30)

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def open(self, url: str) -> None:
        self.driver.get(url)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def screenshot(self, path: Path) -> Path:
        """The whole page (not only the window) as PNG; prints where it went."""
        height = int(self.js("return document.documentElement.scrollHeight"))
        width = self.driver.get_window_size()["width"]
        self.driver.set_window_size(width, min(max(height + 120, 600), 8000))
        self.driver.save_screenshot(str(path))
        print(f"screenshot: {path}")
        return path

    def color_scheme(self, scheme: str) -> None:
        """Emulate the user's ``prefers-color-scheme`` (``light`` or ``dark``)."""
        self.driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
        )

    def print_pdf(self, path: Path) -> int:
        """Print the page as the browser's "Save as PDF" would, with the page's own
        ``@page`` size; writes it, prints where, and returns its page count."""
        printed = self.driver.execute_cdp_cmd(
            "Page.printToPDF", {"preferCSSPageSize": True, "printBackground": True}
        )
        data = base64.b64decode(printed["data"])
        path.write_bytes(data)
        print(f"pdf: {path}")
        assert data.startswith(b"%PDF-")
        return len(re.findall(rb"/Type\s*/Page[^s]", data))

    def axe_violations(self, impacts: tuple[str, ...] = ("serious", "critical")) -> list[str]:
        """axe-core's violations of the given impacts on the current page."""
        require(AXE.is_file(), f"axe-core is not installed at {AXE} (.ci/setup-browser.sh)")
        self.js(AXE.read_text(encoding="utf-8"))
        found = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']})"
            ".then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact,"
            " help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))))"
            ".catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));"
        )
        return [
            f"{v['id']} ({v['impact']}): {v['help']} at {v['nodes'][:3]}"
            for v in found
            if v["impact"] in impacts
        ]


def parse_strict(page: str) -> None:
    """html5lib in strict mode raises on any parse error (a validity smoke check)."""
    html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(page)
