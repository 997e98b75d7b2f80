"""What slow clients do to the HTTP servers, and what HTTPS costs (issue 11).
Both servers share common/httpd.c; this runs care-edge's console (the real
console code, tests/integration/console_fixture) with its defaults.

1. A legitimate client (127.0.0.1, a new connection per request, as a phone
   opening the page) asks GET /healthz and a logged-in GET /api/alarms as fast
   as it can: requests/s and p50/p99 latency, idle, then while slowloris
   clients (a header byte a second, never finishing) hold 1,000 connections
   from one address, then 1,000 from 50 addresses. Also how many of those
   connections the server still held at the end, how many it closed (or
   refused), and how many it let in: a thread started for each.
2. HTTPS against HTTP on the same machine: a new connection per request
   (TCP + TLS handshake + request) and requests on one kept-alive
   connection, p50/p99.

With --before DIR (a build's bin/ of an earlier commit, whose fixture takes
no options), part 1 runs against that build too. A benchmark: never passes
or fails on a number.

  python3 tests/bench/bench_http.py [--seconds 8] [--before /tmp/before/build/bin]
"""
import argparse
import http.client
import json
import os
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../integration"))
from console_browser_unit import Fixture  # noqa: E402
from harness import World, log  # noqa: E402
from slowloris import SlowClients  # noqa: E402

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../..")


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100 * len(v)))] if v else float("nan")


def conn(port, ctx):
    if ctx:
        return http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx,
                                           source_address=("127.0.0.1", 0))
    return http.client.HTTPConnection("127.0.0.1", port, timeout=5,
                                      source_address=("127.0.0.1", 0))


def session(port, ctx=None):
    c = conn(port, ctx)
    c.request("POST", "/api/login", body=json.dumps({"user": "nurse1", "password": "night-shift-2"}),
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    cookie = r.getheader("Set-Cookie").split(";", 1)[0]
    c.close()
    return cookie


def legit(port, seconds, cookie, ctx=None):
    """(requests/s, p50 ms, p99 ms, failures): new connection per request."""
    lat, fails, n = [], 0, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        path = "/healthz" if n % 2 == 0 else "/api/alarms"
        t0 = time.monotonic()
        try:
            c = conn(port, ctx)
            c.request("GET", path, headers={"Cookie": cookie})
            r = c.getresponse()
            r.read()
            c.close()
            ok = r.status == 200
        except Exception:
            ok = False
        dt = time.monotonic() - t0
        n += 1
        if ok:
            lat.append(dt * 1000)
        else:
            fails += 1
    return len(lat) / seconds, pct(lat, 50), pct(lat, 99), fails, n


def accepted(fx):
    """Connections the server has let in (a thread each) since it started."""
    return fx.api("/api/status")["http"]["accepted"]


def slow_part(label, bin_dir, args, seconds, w):
    import console_browser_unit
    console_browser_unit.BIN = bin_dir
    fx = Fixture(w.root, args)
    rows = []
    try:
        cookie = session(fx.port)
        rows.append(("idle", *legit(fx.port, seconds, cookie)[:4], "-", "-", "-"))
        for name, sources, per in (("1,000 slow from 1 address", ["127.0.0.2"], 1000),
                                   ("1,000 slow from 50 addresses",
                                    [f"127.0.0.{i}" for i in range(10, 60)], 20)):
            accepted0 = accepted(fx)
            atk = SlowClients(fx.port, sources, per, seconds + 10).start()
            time.sleep(1)
            fig = legit(fx.port, seconds, cookie)
            held = atk.held()
            atk.stop()
            # connections the server started a thread for, besides the
            # legitimate client's (and the status request's own)
            let_in = accepted(fx) - accepted0 - fig[4] - 1
            rows.append((name, *fig[:4], held, atk.closed_by_server, let_in))
            time.sleep(2)
    finally:
        fx.stop()
    print(f"\n{label}: a legitimate client (new connection per request)")
    print(f"  {'':32} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'failed':>6} {'held':>5} "
          f"{'closed':>7} {'let in':>7}")
    for r in rows:
        print(f"  {r[0]:32} {r[1]:7.0f} {r[2]:7.1f} {r[3]:7.1f} {r[4]:6d} {r[5]!s:>5} {r[6]!s:>7} "
              f"{r[7]!s:>7}")
    return rows


def tls_part(bin_dir, seconds, w):
    import console_browser_unit
    console_browser_unit.BIN = bin_dir
    ca = w.path("ca")
    pki = os.path.join(SRC, "deploy/pki/carehub-pki")
    subprocess.run([pki, "init", ca], check=True, capture_output=True)
    subprocess.run([pki, "web", ca, "127.0.0.1"], check=True, capture_output=True)
    ctx = ssl.create_default_context(cafile=os.path.join(ca, "ca.pem"))
    https = Fixture(w.root, ["--tls", os.path.join(ca, "web/127.0.0.1.pem"),
                             os.path.join(ca, "web/127.0.0.1.key")])
    plain = Fixture(w.root)
    out = {}
    try:
        for name, fx, c in (("HTTP", plain, None), ("HTTPS", https, ctx)):
            cookie = session(fx.port, c)
            new = []
            end = time.monotonic() + seconds / 2
            while time.monotonic() < end:
                t0 = time.monotonic()
                k = conn(fx.port, c)
                k.request("GET", "/api/alarms", headers={"Cookie": cookie})
                k.getresponse().read()
                k.close()
                new.append((time.monotonic() - t0) * 1000)
            kept = []
            k = conn(fx.port, c)
            end = time.monotonic() + seconds / 2
            while time.monotonic() < end:
                t0 = time.monotonic()
                k.request("GET", "/api/alarms", headers={"Cookie": cookie})
                k.getresponse().read()
                kept.append((time.monotonic() - t0) * 1000)
            k.close()
            out[name] = (pct(new, 50), pct(new, 99), pct(kept, 50), pct(kept, 99))
    finally:
        https.stop()
        plain.stop()
    print("\nHTTPS against HTTP (GET /api/alarms, ms)")
    print(f"  {'':6} {'new conn p50':>13} {'p99':>7} {'kept-alive p50':>15} {'p99':>7}")
    for name, v in out.items():
        print(f"  {name:6} {v[0]:13.2f} {v[1]:7.2f} {v[2]:15.2f} {v[3]:7.2f}")
    print(f"  HTTPS/HTTP: new connection x{out['HTTPS'][0] / out['HTTP'][0]:.1f}, "
          f"kept-alive x{out['HTTPS'][2] / out['HTTP'][2]:.1f} (p50)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--before", help="bin/ of an earlier build")
    a = ap.parse_args()
    w = World("bench_http")
    try:
        bin_dir = os.environ.get("CAREHUB_BIN", os.path.join(SRC, "build/bin"))
        slow_part("this build", bin_dir, [], a.seconds, w)
        if a.before:
            slow_part("before (--before)", a.before, [], a.seconds, w)
        tls_part(bin_dir, a.seconds, w)
    finally:
        w.close()


if __name__ == "__main__":
    main()
