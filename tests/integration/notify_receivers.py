"""Loopback stand-ins for the services the notifier (common/notify.c) talks
to: a WeCom group robot, a DingTalk custom robot (checking its 加签
signature), a Feishu custom bot (checking its signature) and an SMS
gateway. Each binds 127.0.0.1 on a free port, records what it is sent,
can be told to answer 503 or to stop listening for a while, and answers
the way the real service does:

- WeCom: {"errcode":0,"errmsg":"ok"}.
- DingTalk: timestamp (ms) and sign in the query; sign must be
  base64(HMAC-SHA256(key=secret, msg=timestamp+"\\n"+secret)) (URL-encoded
  on the wire) and the timestamp within an hour of now, else HTTP 200 with
  {"errcode":310000,"errmsg":"sign not match"}, as DingTalk answers.
- Feishu: timestamp (s) and sign in the body; sign must be
  base64(HMAC-SHA256(key=timestamp+"\\n"+secret, msg="")) and the timestamp
  within an hour, else {"code":19021,"msg":"sign match fail ..."}.
- SMS gateway: any 2xx.

Usage:
    with Receiver("dingtalk", secret="SEC...") as r:
        url = r.url                   # http://127.0.0.1:PORT/robot/send?access_token=t
        r.mode = "503"                # or "ok"
        r.down(); r.up()              # stop listening / listen again, same port
        r.wait_count(1, timeout=5)
        r.records                     # [{"path", "query", "body", "json", "ok", "ts"}]
"""
import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATHS = {
    "wecom": "/cgi-bin/webhook/send?key=test-key",
    "dingtalk": "/robot/send?access_token=test-token",
    "feishu": "/open-apis/bot/v2/hook/test-hook",
    "sms": "/api/send",
    "webhook": "/hook",
}


def dingtalk_sign(secret, ts_ms):
    """DingTalk's sign before URL-encoding."""
    mac = hmac.new(secret.encode(), f"{ts_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def feishu_sign(secret, ts_s):
    mac = hmac.new(f"{ts_s}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


class Receiver:
    def __init__(self, kind, secret=None, port=0):
        assert kind in PATHS, kind
        self.kind = kind
        self.secret = secret
        self.mode = "ok"
        self.records = []
        self.lock = threading.Lock()
        self.port = port or self._free_port()
        self.server = None
        self.thread = None
        self.up()

    @staticmethod
    def _free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}{PATHS[self.kind]}"

    def up(self):
        """Listens (again) on the same port."""
        if self.server:
            return
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8", "replace")
                rec._handle(self, body)

        deadline = time.monotonic() + 5
        while True:
            try:
                self.server = _Server(("127.0.0.1", self.port), Handler)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def down(self):
        """Stops listening: connections are refused until up()."""
        if not self.server:
            return
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
        self.server = None

    def stop(self):
        self.down()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()

    # ---- what the real services check and answer -----------------------

    def _check(self, path, query, doc):
        """(ok, answer) for a request that got past the 503 switch."""
        now = time.time()
        if self.kind == "wecom":
            good = (isinstance(doc, dict) and doc.get("msgtype") == "text"
                    and isinstance(doc.get("text", {}).get("content"), str))
            return (good, {"errcode": 0, "errmsg": "ok"} if good
                    else {"errcode": 40008, "errmsg": "invalid message type"})
        if self.kind == "dingtalk":
            q = urllib.parse.parse_qs(query)
            ts = (q.get("timestamp") or [""])[0]
            sign = (q.get("sign") or [""])[0]
            if self.secret is not None:
                if (not ts.isdigit() or abs(int(ts) / 1000 - now) > 3600
                        or not hmac.compare_digest(sign, dingtalk_sign(self.secret, ts))):
                    return False, {"errcode": 310000, "errmsg": "sign not match"}
            good = isinstance(doc, dict) and doc.get("msgtype") == "text"
            return good, {"errcode": 0, "errmsg": "ok"} if good else {"errcode": 40035, "errmsg": "bad"}
        if self.kind == "feishu":
            if self.secret is not None:
                ts = str(doc.get("timestamp", "")) if isinstance(doc, dict) else ""
                sign = doc.get("sign", "") if isinstance(doc, dict) else ""
                if (not ts.isdigit() or abs(int(ts) - now) > 3600
                        or not hmac.compare_digest(sign, feishu_sign(self.secret, ts))):
                    return False, {"code": 19021, "msg": "sign match fail or timestamp is not "
                                   "within one hour from current time"}
            good = isinstance(doc, dict) and doc.get("msg_type") == "text"
            return good, {"code": 0, "msg": "success"} if good else {"code": 9499, "msg": "bad"}
        return True, {"ok": True}

    def _handle(self, h, body):
        parsed = urllib.parse.urlsplit(h.path)
        if self.mode == "503":
            with self.lock:
                self.records.append({"path": parsed.path, "query": parsed.query, "body": body,
                                     "json": None, "ok": False, "status": 503,
                                     "ts": time.time()})
            h.send_response(503)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        ok, answer = self._check(parsed.path, parsed.query, doc)
        with self.lock:
            self.records.append({"path": parsed.path, "query": parsed.query, "body": body,
                                 "json": doc, "ok": ok, "status": 200, "ts": time.time(),
                                 "headers": dict(h.headers)})
        data = json.dumps(answer).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    # ---- for tests --------------------------------------------------------

    def accepted(self):
        """The requests answered as delivered."""
        with self.lock:
            return [r for r in self.records if r["ok"]]

    def wait_count(self, n, timeout, pred=None):
        """Waits until at least n accepted requests (matching pred) arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [r for r in self.accepted() if pred is None or pred(r)]
            if len(got) >= n:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{self.kind}: {n} accepted request(s) expected within {timeout}s, "
                             f"have {len(self.accepted())}: {self.records!r}")
