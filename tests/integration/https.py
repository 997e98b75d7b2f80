#!/usr/bin/env python3
"""HTTPS on care-edge's console and care-hub's API, end to end.

Certificates from the project's own tool (deploy/pki/carehub-pki: a CA and a
`web` server certificate for 127.0.0.1). Then, for each server:

- a client that trusts the CA gets the page and the API over TLS 1.2+, with
  Strict-Transport-Security; a plain-HTTP request to the HTTPS port is not
  served;
- console: the session cookie is Secure; HTTP Basic works over HTTPS and is
  refused over plain HTTP (a second console without TLS);
- headless Chromium that trusts the CA (as a phone would once the site's CA
  is installed) logs in through the console's form over HTTPS, sees an alarm
  arrive on the live stream and acknowledges it; on the hub, signs in with a
  token and sees its board live.
"""
import base64
import http.client
import json
import os
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chromium import Browser  # noqa: E402
from console_browser_unit import Fixture  # noqa: E402
from harness import Influx, Mosquitto, free_port, log, run_test, wait_for  # noqa: E402

SRC = os.environ.get("CAREHUB_SRC", os.path.join(os.path.dirname(__file__), "../.."))
PKI = os.path.join(SRC, "deploy", "pki", "carehub-pki")


def make_pki(w):
    ca = w.path("ca")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, text=True, timeout=60)
    run(PKI, "init", ca)
    run(PKI, "web", ca, "127.0.0.1", "--dns", "localhost")
    return (os.path.join(ca, "ca.pem"), os.path.join(ca, "web", "127.0.0.1.pem"),
            os.path.join(ca, "web", "127.0.0.1.key"))


def request(port, method, path, ctx=None, body=None, headers=None):
    """(status, headers dict (lower-case names), body bytes, TLS version)."""
    if ctx:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        h = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        raw = r.read()
        version = conn.sock.version() if ctx else None
        return r.status, {k.lower(): v for k, v in r.getheaders()}, raw, version
    finally:
        conn.close()


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def plain_http_not_served(port):
    """A plain HTTP request to the HTTPS port gets no HTTP answer."""
    try:
        st = request(port, "GET", "/healthz")[0]
    except (http.client.HTTPException, OSError):
        return True
    return f"HTTP {st} over plain HTTP"


def card(aid):
    return f"document.querySelector('#active [data-alarm-id=\"{aid}\"]')"


def test_console(w, ca, cert, key, ctx):
    fx = Fixture(w.root, ["--tls", cert, key])
    plain = Fixture(w.root)
    try:
        port = fx.port
        st, hdr, raw, ver = request(port, "GET", "/healthz", ctx)
        assert st == 200 and ver in ("TLSv1.2", "TLSv1.3"), (st, ver)
        assert hdr.get("strict-transport-security", "").startswith("max-age="), hdr
        assert plain_http_not_served(port) is True
        # the session cookie is Secure over HTTPS, not over HTTP
        st, hdr, raw, _ = request(port, "POST", "/api/login", ctx,
                                  {"user": "nurse1", "password": "night-shift-2"})
        assert st == 200 and "; Secure" in hdr["set-cookie"], (st, hdr)
        st, hdr, raw, _ = request(plain.port, "POST", "/api/login", None,
                                  {"user": "nurse1", "password": "night-shift-2"})
        assert st == 200 and "Secure" not in hdr["set-cookie"], (st, hdr)
        assert "strict-transport-security" not in hdr, hdr
        # HTTP Basic: over HTTPS yes, over plain HTTP no (the password would
        # cross the network in clear on every request)
        st, _, raw, _ = request(port, "GET", "/api/me", ctx, headers=basic("nurse1", "night-shift-2"))
        assert st == 200 and json.loads(raw)["user"] == "nurse1", (st, raw)
        st, _, raw, _ = request(plain.port, "GET", "/api/me", headers=basic("nurse1", "night-shift-2"))
        assert st in (401, 403) and b"HTTPS" in raw, (st, raw)
        log("console: TLS, HSTS, Secure cookie, Basic only over HTTPS")

        fx.do("raise sos panel-203 high 203 A R-0417 SOS room 203")
        with Browser(log_path=w.path("chromium-console.log"), trust_ca=ca) as b:
            b.navigate(f"https://127.0.0.1:{port}/")
            b.wait_for("!document.querySelector('#login-view').hidden", what="the login form")
            assert b.evaluate("location.protocol") == "https:"
            b.fill("#login-user", "nurse1")
            b.fill("#login-password", "night-shift-2")
            b.click("#login-submit")
            b.wait_for("document.querySelector('#live').dataset.state === 'live'", timeout=10,
                       what="the event stream to be live")
            b.wait_for(card("sos:panel-203"), what="the alarm card")
            b.click('#active [data-alarm-id="sos:panel-203"] .ack')
            b.wait_for(card("sos:panel-203") + "?.dataset.state === 'acked'", timeout=10,
                       what="the alarm acknowledged")
            shot = b.screenshot(w.path("console-https.png"))
        log(f"console in Chromium over HTTPS (CA trusted): login, live alarm, ack ({shot})")
    finally:
        fx.stop()
        plain.stop()


def test_hub(w, ca, cert, key, ctx):
    from hub_api import make_tokens, status  # noqa: E402
    influx = Influx(w)
    mqtt = Mosquitto(w)
    secrets, tokens_path, _ = make_tokens(w, w.bin("care-hub"))
    port = free_port()
    cfg = w.write("hub.yaml", f"""mqtt:
  broker: {mqtt.uri}
  client_id: hub-https
influx:
  url: {influx.url}
  database: carehub_https
spool:
  dir: hub-spool
api:
  port: {port}
  tokens_file: {tokens_path}
  tls:
    cert_file: {cert}
    key_file: {key}
""")
    hub = w.spawn("care-hub", [w.bin("care-hub"), "-c", cfg])
    hub.wait_log(r"serving the API and console on https://")
    mqtt.publish("carehub/v1/cq-yz-001/gw-1/status", json.dumps(status("cq-yz-001", True)),
                 retain=True)
    st, hdr, raw, ver = request(port, "GET", "/api/v1/sites", ctx,
                                headers={"Authorization": f"Bearer {secrets['staff-yz001']}"})
    assert st == 200 and ver in ("TLSv1.2", "TLSv1.3"), (st, raw)
    assert hdr.get("strict-transport-security", "").startswith("max-age="), hdr
    assert plain_http_not_served(port) is True
    with Browser(width=1280, height=800, mobile=False, log_path=w.path("chromium-hub.log"),
                 trust_ca=ca) as b:
        b.navigate(f"https://127.0.0.1:{port}/")
        b.wait_for("!document.querySelector('#view-login').hidden", timeout=10,
                   what="the token form")
        b.fill("#token", secrets["staff-yz001"])
        b.click("#login")
        b.wait_for("document.querySelector('#live').dataset.state === 'live'", timeout=15,
                   what="the hub's event stream live over HTTPS")
        shot = b.screenshot(w.path("hub-https.png"))
    log(f"hub in Chromium over HTTPS: token sign-in, live board ({shot})")


def test_https(w):
    ca, cert, key = make_pki(w)
    ctx = ssl.create_default_context(cafile=ca)
    test_console(w, ca, cert, key, ctx)
    test_hub(w, ca, cert, key, ctx)


if __name__ == "__main__":
    run_test(test_https)
