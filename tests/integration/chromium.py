"""Headless Chromium for browser tests, driven over the DevTools protocol with
the Python standard library alone (no Playwright, no Selenium, no pip).

    from chromium import Browser
    with Browser(width=412, height=915) as b:          # a phone-sized window
        b.navigate("http://127.0.0.1:8080/")
        b.wait_for("document.querySelector('#live')?.dataset.state === 'live'")
        b.click("#login-submit")
        b.screenshot("/tmp/x/page.png")

ensure_installed() installs Debian's chromium when it is missing and we are
root; otherwise it fails with a clear message. The browser runs with the
flags this machine needs (tests/.. COMPONENTS: no sandbox as root, no GPU, no
background networking that would try to reach the internet), in a temporary
profile, with the DevTools endpoint on 127.0.0.1 only; the port is the one
Chromium picked itself (--remote-debugging-port=0, read back from
DevToolsActivePort), so two tests never race for one. It is stopped by PID
(its whole process group). Every wait is bounded.
"""
import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request

CHROMIUM = "/usr/bin/chromium"

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--mute-audio",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


class ChromiumError(Exception):
    pass


def ensure_installed(timeout=900):
    """Returns the path of the chromium binary, installing it with apt-get
    (as root) when missing."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    if os.geteuid() != 0:
        raise ChromiumError(
            f"{CHROMIUM} is missing and this is not root; install it with "
            "'apt-get install -y --no-install-recommends chromium' (as root) and rerun")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Two browser tests may start at once (ctest -j2): the second waits for
    # the first one's dpkg lock instead of failing on it, and then finds
    # chromium installed.
    lock = ["-o", f"DPkg::Lock::Timeout={int(timeout)}"]
    cmd = ["apt-get"] + lock + ["install", "-y", "--no-install-recommends", "chromium"]
    deadline = time.monotonic() + timeout
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        # A fresh machine may have no package lists yet.
        subprocess.run(["apt-get"] + lock + ["update"], env=env, capture_output=True, text=True,
                       timeout=max(30, deadline - time.monotonic()))
        r = subprocess.run(cmd, env=env, capture_output=True, text=True,
                           timeout=max(30, deadline - time.monotonic()))
    if r.returncode != 0 or not os.access(CHROMIUM, os.X_OK):
        raise ChromiumError(f"apt-get install chromium failed ({r.returncode}):\n"
                            f"{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return CHROMIUM


# ---- a minimal WebSocket client (RFC 6455), enough for DevTools ----------

class WebSocket:
    GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, url, timeout=10):
        if not url.startswith("ws://"):
            raise ChromiumError(f"not a ws:// URL: {url}")
        hostport, _, path = url[5:].partition("/")
        host, _, port = hostport.partition(":")
        self.sock = socket.create_connection((host, int(port or 80)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(req.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ChromiumError("WebSocket handshake: connection closed")
            head += chunk
        head, _, self.pending = head.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise ChromiumError(f"WebSocket handshake refused: {lines[0]}")
        want = base64.b64encode(hashlib.sha1((key + self.GUID).encode()).digest()).decode()
        got = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
        if got.get("sec-websocket-accept") != want:
            raise ChromiumError("WebSocket handshake: bad Sec-WebSocket-Accept")

    def _read(self, n, deadline):
        while len(self.pending) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("WebSocket read timed out")
            self.sock.settimeout(left)
            chunk = self.sock.recv(max(65536, n - len(self.pending)))
            if not chunk:
                raise ChromiumError("WebSocket closed by the browser")
            self.pending += chunk
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def _send_frame(self, opcode, payload):
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.settimeout(10)
        self.sock.sendall(head + mask + body)

    def send(self, text):
        self._send_frame(0x1, text.encode())

    def recv(self, timeout):
        """The next text message, or TimeoutError."""
        deadline = time.monotonic() + timeout
        message = b""
        while True:
            b0, b1 = self._read(2, deadline)
            opcode, fin = b0 & 0x0F, b0 & 0x80
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2, deadline))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8, deadline))[0]
            mask = self._read(4, deadline) if b1 & 0x80 else None
            payload = self._read(n, deadline)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x9:  # ping
                self._send_frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            if opcode == 0x8:
                raise ChromiumError("WebSocket closed by the browser")
            message += payload
            if fin:
                return message.decode("utf-8", errors="replace")

    def close(self):
        try:
            self._send_frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


# ---- the browser ----------------------------------------------------------

class Browser:
    """One headless Chromium with one page. Use as a context manager, or call
    start() and close()."""

    def __init__(self, width=412, height=915, mobile=True, timeout=30, log_path=None,
                 trust_ca=None):
        """trust_ca: a CA certificate (PEM path) the browser trusts for HTTPS,
        as an installer trusts the site's CA (an NSS database in the
        profile's home, certutil from libnss3-tools)."""
        self.trust_ca = trust_ca
        self.width, self.height, self.mobile = width, height, mobile
        self.timeout = timeout
        self.log_path = log_path
        self.proc = None
        self.ws = None
        self.profile = None
        self.port = None
        self.next_id = 0
        self.events = []
        self.console = []  # console messages and exceptions of the page

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self):
        exe = ensure_installed()
        self.profile = tempfile.mkdtemp(prefix="carehub-chromium-")
        log = open(self.log_path or os.path.join(self.profile, "chromium.log"), "ab")
        argv = [exe] + FLAGS + [f"--user-data-dir={self.profile}",
                                f"--window-size={self.width},{self.height}", "about:blank"]
        env = None
        if self.trust_ca:
            # Chromium on Linux reads the user's NSS database: $HOME/.pki/nssdb
            home = os.path.join(self.profile, "home")
            db = os.path.join(home, ".pki", "nssdb")
            os.makedirs(db)
            run = lambda *a: subprocess.run(a, check=True, capture_output=True, timeout=30)
            run("certutil", "-N", "-d", f"sql:{db}", "--empty-password")
            run("certutil", "-A", "-d", f"sql:{db}", "-t", "C,,", "-n", "carehub test CA",
                "-i", self.trust_ca)
            env = dict(os.environ, HOME=home)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     start_new_session=True, env=env)
        log.close()
        try:
            self._attach()
        except BaseException:
            self.close()
            raise

    def _attach(self):
        # Chromium writes the port it chose into the profile.
        active = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + self.timeout
        while True:
            if self.proc.poll() is not None:
                raise ChromiumError(f"chromium exited ({self.proc.returncode}) at start")
            try:
                with open(active) as f:
                    self.port = int(f.readline().strip())
                break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise ChromiumError("chromium did not open its DevTools port in time")
            time.sleep(0.05)
        page = None
        while page is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list",
                                            timeout=5) as r:
                    targets = json.load(r)
                page = next((t for t in targets if t.get("type") == "page"), None)
            except OSError:
                pass
            if page is None:
                if time.monotonic() > deadline:
                    raise ChromiumError("no page target in chromium")
                time.sleep(0.1)
        self.ws = WebSocket(page["webSocketDebuggerUrl"], timeout=self.timeout)
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": self.width, "height": self.height, "deviceScaleFactor": 1,
                   "mobile": self.mobile})

    def send(self, method, params=None, timeout=None):
        """Sends one DevTools command; returns its result or raises."""
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params or {}}))
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{method}: no answer in time")
            msg = json.loads(self.ws.recv(left))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise ChromiumError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self._event(msg)

    def _event(self, msg):
        m = msg["method"]
        if m == "Runtime.consoleAPICalled":
            args = msg["params"].get("args", [])
            self.console.append(" ".join(str(a.get("value", a.get("description", "")))
                                         for a in args))
        elif m == "Runtime.exceptionThrown":
            d = msg["params"].get("exceptionDetails", {})
            self.console.append("exception: " + str(d.get("exception", {}).get("description")
                                                     or d.get("text")))
        self.events.append(msg)
        del self.events[:-200]

    def evaluate(self, expression, timeout=None):
        """Evaluates JavaScript in the page (promises awaited); returns the
        value (JSON-able) or raises with the page's exception."""
        r = self.send("Runtime.evaluate",
                      {"expression": expression, "returnByValue": True, "awaitPromise": True,
                       "userGesture": True},
                      timeout=timeout)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise ChromiumError("page exception: " + str(d.get("exception", {}).get("description")
                                                         or d.get("text")))
        return r.get("result", {}).get("value")

    def wait_for(self, expression, timeout=10, interval=0.1, what=None):
        """Polls expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        last = None
        # Truthiness is JavaScript's (an element or {} counts); a DOM node
        # cannot cross by value, so True stands in for it.
        probe = ("(async () => { const v = await (%s);"
                 " return {ok: !!v, v: (v instanceof Node) ? true : v}; })()" % expression)
        while time.monotonic() < deadline:
            try:
                r = self.evaluate(probe)
                last = r.get("v") if r else None
                if r and r.get("ok"):
                    return last if last is not None else True
            except ChromiumError as e:  # e.g. during a navigation
                last = e
            time.sleep(interval)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what or expression} "
                           f"(last: {last!r}; page console: {self.console[-5:]})")

    def navigate(self, url, timeout=15):
        """Loads url and waits until the document has loaded."""
        r = self.send("Page.navigate", {"url": url}, timeout=timeout)
        if r.get("errorText"):
            raise ChromiumError(f"navigate {url}: {r['errorText']}")
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'",
                      timeout=timeout, what=f"{url} to load")

    def click(self, selector):
        """Clicks the first element matching selector (as a user tap would)."""
        ok = self.evaluate(
            "(() => { const e = document.querySelector(%s); if (!e) return false;"
            " e.scrollIntoView({block: 'center'}); e.click(); return true; })()"
            % json.dumps(selector))
        if not ok:
            raise ChromiumError(f"click: nothing matches {selector}")

    def fill(self, selector, text):
        """Types text into an input (sets the value, fires input/change)."""
        ok = self.evaluate(
            "(() => { const e = document.querySelector(%s); if (!e) return false;"
            " e.focus(); e.value = %s;"
            " e.dispatchEvent(new Event('input', {bubbles: true}));"
            " e.dispatchEvent(new Event('change', {bubbles: true})); return true; })()"
            % (json.dumps(selector), json.dumps(text)))
        if not ok:
            raise ChromiumError(f"fill: nothing matches {selector}")

    def screenshot(self, path, full_page=True):
        """Saves a PNG of the page; returns path."""
        params = {"format": "png"}
        if full_page:
            m = self.send("Page.getLayoutMetrics")
            size = m.get("cssContentSize") or m.get("contentSize")
            params["clip"] = {"x": 0, "y": 0, "width": self.width,
                              "height": max(self.height, int(size["height"])), "scale": 1}
            params["captureBeyondViewport"] = True
        r = self.send("Page.captureScreenshot", params, timeout=30)
        with open(path, "wb") as f:
            f.write(base64.b64decode(r["data"]))
        return path

    def close(self):
        """Stops the browser (by PID, its whole process group) and removes
        the temporary profile."""
        if self.ws:
            try:
                self.ws.send(json.dumps({"id": 0, "method": "Browser.close"}))
            except OSError:
                pass
            self.ws.close()
            self.ws = None
        if self.proc:
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    try:
                        os.killpg(self.proc.pid, sig)
                    except ProcessLookupError:
                        break
                    try:
                        self.proc.wait(5)
                        break
                    except subprocess.TimeoutExpired:
                        continue
            self.proc = None
        if self.profile:
            shutil.rmtree(self.profile, ignore_errors=True)
            self.profile = None
