#!/usr/bin/env python3
"""The demo's phones: a loopback HTTP receiver standing in for what care-edge's
notifier (common/notify.h) talks to, printing each notification as the phone
it reaches would show it.

  demo_phone.py PORT LOG     listen on 127.0.0.1:PORT until SIGTERM; each
                             message is printed and appended to LOG (JSON lines)
  demo_phone.py --count LOG  one line: how many were received, per recipient

Paths (deploy/sim/care-day-site.yaml's notify: channels, the demo points
their URLs here):
  /cgi-bin/webhook/send?key=K  a WeCom group robot: {"msgtype":"text","text":{"content"}}
  /sms/...                     an SMS gateway, template {"to","text"}
  /hook/NAME                   a plain webhook, template {"text"}
Every request is answered as WeCom answers ({"errcode":0,"errmsg":"ok"}),
which the SMS gateway and the webhook take as any 2xx.
"""
import collections
import json
import signal
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# who is at the other end of each path (the channels' names in the site file)
WHO = {"carers": "值班护理员群 (企业微信)", "sms": "护士长 (短信)", "maintenance": "设备维护 (Webhook)"}


def recipient(path, body):
    url = urllib.parse.urlsplit(path)
    if url.path.startswith("/cgi-bin/webhook/send"):
        key = urllib.parse.parse_qs(url.query).get("key", ["?"])[0]
        return WHO.get(key, f"企业微信群 {key}"), body.get("text", {}).get("content", "")
    if url.path.startswith("/sms/"):
        to = body.get("to", "")
        shown = f" {to[:3]}****{to[-4:]}" if len(to) >= 7 else ""
        return WHO["sms"] + shown, body.get("text", "")
    name = url.path.rsplit("/", 1)[-1]
    return WHO.get(name, name), body.get("text", json.dumps(body, ensure_ascii=False))


class Phones(BaseHTTPRequestHandler):
    log_path = None
    lock = threading.Lock()

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"text": raw.decode("utf-8", "replace")}
        who, text = recipient(self.path, body if isinstance(body, dict) else {})
        with self.lock:
            lines = text.splitlines() or [""]
            out = [f"\033[1;35m[phone]\033[0m {time.strftime('%H:%M:%S')} → {who}"]
            out += [f"          │ {ln}" for ln in lines]
            print("\n".join(out), flush=True)
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"ts": time.time(), "to": who, "text": text},
                                   ensure_ascii=False) + "\n")
        reply = b'{"errcode":0,"errmsg":"ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):  # quiet: the messages are what is shown
        pass


def count(log_path):
    per = collections.Counter()
    try:
        with open(log_path, encoding="utf-8") as f:
            for line in f:
                per[json.loads(line)["to"]] += 1
    except OSError:
        pass
    detail = ", ".join(f"{who} {n}" for who, n in per.most_common())
    print(f"{sum(per.values())} notifications received by the phones" +
          (f" ({detail})" if detail else ""))


def main():
    if sys.argv[1] == "--count":
        count(sys.argv[2])
        return
    Phones.log_path = sys.argv[2]
    open(Phones.log_path, "a").close()
    srv = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Phones)
    srv.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the demo stops it, after the gateways
    print(f"listening on 127.0.0.1:{sys.argv[1]}", file=sys.stderr, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
