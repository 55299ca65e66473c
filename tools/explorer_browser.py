"""Run the latent explorer page (artifacts/explorer/index.html) in headless Debian Chromium.

Shared by tests/test_explorer.py, bench/explorer_speed.py and tools/explorer_screenshot.py. A copy
of the page gets a script injected at the start of <head> (it records errors and CSP violations) and
a probe at the end of <body>, which writes its findings as JSON into <pre id="probe">, at once or
when the promise it leaves in ``window.__probe`` settles.

The page draws in requestAnimationFrame callbacks, which headless Chromium's virtual time
(--virtual-time-budget, what --dump-dom relies on) never runs. So Chromium is driven in real time
over the DevTools protocol on a pipe (--remote-debugging-pipe: no port, no network): navigate,
wait for the load event, await the probe, read #probe; meanwhile every request the page makes
and every console message and exception is recorded.
"""
from __future__ import annotations

import base64
import json
import os
import re
import select
import subprocess
import tempfile
import time
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--window-size=1280,800", "--force-device-scale-factor=1",
         "--remote-debugging-pipe"]

# First in <head>: errors, console errors and CSP violations of everything after it.
CATCH = """<script>window.__errors = []; window.__violations = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message)); });
window.addEventListener('unhandledrejection', function (e) { window.__errors.push('unhandled: ' + String(e.reason)); });
(function () { var err = console.error; console.error = function () {
  window.__errors.push('console.error: ' + Array.prototype.join.call(arguments, ' ')); return err.apply(console, arguments); }; })();
document.addEventListener('securitypolicyviolation', function (e) {
  window.__violations.push({directive: e.violatedDirective, blocked: e.blockedURI}); });
</script>"""

DATA = re.compile(r"const DATA = (\{.*?\});\n", re.S)
READ_PROBE = """Promise.resolve(window.__probe).then(function () {
  var p = document.getElementById('probe'); return p ? p.textContent : ''; })"""


def page_data(page_html: str) -> dict:
    """The data the page embeds (models, codes, images), as the stage wrote it."""
    match = DATA.search(page_html)
    if not match:
        raise ValueError("no `const DATA = {...};` in the page")
    return json.loads(match.group(1).replace("<\\/", "</"))


def inject(page_html: str, probe: str) -> str:
    """The page with CATCH first in <head> and ``probe`` (HTML) at the end of <body>."""
    assert page_html.count("<head>") == 1 and page_html.count("</body>") == 1
    return page_html.replace("<head>", "<head>\n" + CATCH, 1).replace("</body>", probe + "\n</body>", 1)


class Browser:
    """One headless Chromium, driven over the DevTools protocol on fds 3 (in) and 4 (out)."""

    def __init__(self, timeout: float = 300):
        if not CHROMIUM.exists():
            raise FileNotFoundError(f"no Chromium at {CHROMIUM} (tools/install-system-deps installs it)")
        self.timeout = timeout
        self.profile = tempfile.TemporaryDirectory(prefix="explorer-chromium-")
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        def fds() -> None:  # in the child: the pipe ends at fds 3 and 4, whatever numbers they had
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(a, 3, inheritable=True)
            os.dup2(b, 4, inheritable=True)

        self.proc = subprocess.Popen([str(CHROMIUM), *FLAGS, f"--user-data-dir={self.profile.name}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     preexec_fn=fds, close_fds=False)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.call(f"{domain}.enable", session=True)
        # The viewport itself 1280x800 (the window size includes what a window would draw around it).
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=1280, height=800,
                  deviceScaleFactor=1, mobile=False)

    def _read(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.from_chrome], [], [], left)[0]:
                raise TimeoutError(f"chromium did not answer within {self.timeout} s")
            chunk = os.read(self.from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited:\n{self.proc.stderr.read().decode()[-3000:]}")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self.to_chrome, data):]
        while True:
            reply = self._read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read()
            self.events.append(event)
            if event.get("method") == method:
                return event

    def open(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression,
                           awaitPromise=True, returnByValue=True, timeout=self.timeout * 1000)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    KEYS = {"Tab": 9, "Enter": 13, "ArrowLeft": 37, "ArrowUp": 38, "ArrowRight": 39, "ArrowDown": 40}

    def press(self, key: str) -> None:
        """A real key press, as the keyboard sends it (Tab moves the focus; text keys type)."""
        code = self.KEYS.get(key, ord(key.upper()) if len(key) == 1 else 0)
        text = {"Enter": "\r"}.get(key, key if len(key) == 1 else "")
        self.call("Input.dispatchKeyEvent", session=True, type="keyDown" if text else "rawKeyDown", key=key,
                  windowsVirtualKeyCode=code, text=text)
        self.call("Input.dispatchKeyEvent", session=True, type="keyUp", key=key, windowsVirtualKeyCode=code)

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", session=True, format="png")["data"])

    def requests(self) -> list[str]:
        """URLs of every request since the last open() but the page itself."""
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent"][1:]

    def console(self) -> list[str]:
        """Console messages of level warning or error, exceptions and log entries since open()."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append("exception: " + json.dumps(p["exceptionDetails"])[:500])
            elif m == "Runtime.consoleAPICalled" and p["type"] in ("error", "warning", "assert"):
                out.append(f"console.{p['type']}: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif m == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
                out.append(f"log {p['entry']['level']}: {p['entry']['text']}")
        return out

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stderr.close()
        os.close(self.to_chrome)
        os.close(self.from_chrome)
        self.profile.cleanup()

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def probe(page: Path, probe_html: str, out_dir: Path, name: str = "probed.html", browser: Browser | None = None) -> dict:
    """Load a copy of ``page`` with ``probe_html`` injected; the JSON the probe wrote into #probe,
    with ``_requests`` (URLs the page requested) and ``_console`` (warnings and errors) added."""
    copy = out_dir / name
    copy.write_text(inject(page.read_text(encoding="utf-8"), probe_html), encoding="utf-8")
    own = browser is None
    browser = browser or Browser()
    try:
        browser.open(copy.as_uri())
        text = browser.evaluate(READ_PROBE)
        # A JavaScript exception fails here, with its message: a probe's own catch reports it as
        # `fatal`; one it did not catch (or the page's) reaches window.__errors through CATCH.
        errors = json.loads(browser.evaluate("JSON.stringify(window.__errors || [])") or "[]")
        if not text:
            raise AssertionError(f"the probe did not report; the page's errors: {errors or 'none'}")
        result = json.loads(text)
        if "fatal" in result:
            raise AssertionError(f"the probe failed: {result['fatal']}; the page's errors: {errors or 'none'}")
        result["_requests"], result["_console"] = browser.requests(), browser.console()
        return result
    finally:
        if own:
            browser.close()
