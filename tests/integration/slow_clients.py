#!/usr/bin/env python3
"""Slow clients cannot take care-hub's API or care-edge's console down.

Against each server, twice: 1,000 slowloris connections from one address
(127.0.0.2), then 1,000 from 50 addresses (127.0.0.10..59, each at the
per-address limit). Throughout, a second client (127.0.0.1) keeps asking,
every 0.2 s, what a nurse and a monitor ask: /healthz, a login (console), the
active alarms, an acknowledgement. Every one of those must succeed, within
3 s (under the sanitizers a login's password hash alone takes a good part
of a second). The guard must be seen at work: on the console by its counters
(/api/status: slow connections closed at the pending limits and at the
header deadline, and, from many addresses, refused at accept once pending is
full: a flood must not cost a thread per connection, or the listening queue
fills and the second client's connection waits behind it) and at most
per_address held from one address, on the hub by what the slow clients saw
(at most per_address held, the rest closed) and by its counters.
"""
import http.client
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Influx, Mosquitto, free_port, log, run_test, wait_for  # noqa: E402
from slowloris import SlowClients  # noqa: E402
from console_browser_unit import Fixture  # noqa: E402

ATTACK_S = 8
ONE = ["127.0.0.2"]
MANY = [f"127.0.0.{i}" for i in range(10, 60)]


def call(port, method, path, body=None, headers=None, timeout=2.0):
    """One request on a new connection from 127.0.0.1: (status, body, seconds)."""
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                      source_address=("127.0.0.1", 0))
    try:
        h = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        raw = r.read()
        return r.status, raw, time.monotonic() - t0, r.getheader("Set-Cookie")
    finally:
        conn.close()


class Probe:
    """The second client: runs `steps` (name -> callable returning ok) every
    0.2 s on a thread and keeps every failure and the slowest answer."""

    def __init__(self, steps):
        self.steps, self.failures, self.slowest, self.rounds = steps, [], 0.0, 0
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop_ev.is_set():
            for name, step in self.steps:
                t0 = time.monotonic()
                try:
                    ok = step()
                except Exception as e:  # a timeout is a failure, not a crash
                    ok = f"{type(e).__name__}: {e}"
                dt = time.monotonic() - t0
                self.slowest = max(self.slowest, dt)
                if ok is not True:
                    self.failures.append((name, ok, round(dt, 2)))
            self.rounds += 1
            self.stop_ev.wait(0.2)

    def during(self, attack):
        self.thread.start()
        attack.start()
        wait_for("the slow connections held", lambda: attack.held() >= 1 or attack.opened >= 1, 5)
        time.sleep(ATTACK_S)
        held = attack.held()
        self.stop_ev.set()
        self.thread.join(10)
        attack.stop()
        return held


def attack_both(name, port, steps, tls=False):
    out = {}
    for label, sources, per in (("one address", ONE, 1000), ("50 addresses", MANY, 20)):
        probe = Probe(steps)
        attack = SlowClients(port, sources, per, ATTACK_S + 5, tls=tls)
        held = attack.held_end = probe.during(attack)
        log(f"{name}, {label}: {attack.opened} slow connections opened, {held} held at the end "
            f"(at most {attack.held_max}), {attack.closed_by_server} closed by the server; "
            f"second client: {probe.rounds} rounds, slowest answer {probe.slowest:.3f} s, "
            f"failures {probe.failures[:5]}")
        assert attack.opened >= 1000, attack.opened
        # served all through the attack: each answer within 3 s, and more
        # than one whole round (a round logs in: a password hash, slow under
        # the sanitizers; how many fit in 8 s is the machine's load, not the
        # server's contract: CI saw 3 with ASan and a busy machine)
        assert probe.rounds >= 2, probe.rounds
        assert not probe.failures, probe.failures
        assert probe.slowest < 3.0, probe.slowest
        out[label] = (attack, probe)
    return out


# ---- care-edge's console (the real console code: console_fixture) -------------------------

def console_steps(fx, alarm_ids):
    def healthz():
        st, raw, _, _ = call(fx.port, "GET", "/healthz")
        return st == 200 or f"HTTP {st} {raw[:80]!r}"

    def login():
        st, raw, _, cookie = call(fx.port, "POST", "/api/login",
                                  {"user": "nurse1", "password": "night-shift-2"})
        if st != 200 or not cookie:
            return f"HTTP {st} {raw[:80]!r}"
        sess = cookie.split(";", 1)[0]
        st, raw, _, _ = call(fx.port, "GET", "/api/alarms", headers={"Cookie": sess})
        if st != 200:
            return f"alarms: HTTP {st}"
        if not alarm_ids:
            return True
        aid = alarm_ids.pop()
        st, raw, _, _ = call(fx.port, "POST", f"/api/alarms/{aid}/ack", {}, {"Cookie": sess})
        return st == 200 or f"ack {aid}: HTTP {st} {raw[:120]!r}"

    return [("healthz", healthz), ("login+alarms+ack", login)]


def test_console(w):
    fx = Fixture(w.root, ["--limit", "header_timeout_ms=3000"])
    try:
        ids = []
        for i in range(200):
            ids.append(fx.do(f"raise sos panel-{i} high 10{i % 10}")[0].split()[1])
        out = attack_both("console", fx.port, console_steps(fx, ids))
        st = fx.api("/api/status")["http"]
        log(f"console guard: {st}")
        # one address: never more than per_address (24) held; whether the
        # limit refuses at accept or pending_per_address closes them first
        # depends on how fast closed ones end
        assert out["one address"][0].held_end <= 24, out["one address"][0].held_end
        assert st["evicted"] > 0, st           # pending limits reached
        assert st["header_timeouts"] > 0, st   # held past header_timeout
        # from many addresses, most are refused at accept (no thread): fewer
        # let in than refused
        assert st["refused_slow"] > st["accepted"] / 2, st
        wait_for("the slow connections gone", lambda: fx.api("/api/status")["http"]
                 ["connections"] <= 2, 10)
    finally:
        fx.stop()


# ---- care-hub's API ------------------------------------------------------------------------

def hub_steps(port, token):
    auth = {"Authorization": f"Bearer {token}"}

    def healthz():
        st, raw, _, _ = call(port, "GET", "/healthz")
        return st == 200 or f"HTTP {st} {raw[:80]!r}"

    def active():
        st, raw, _, _ = call(port, "GET", "/api/v1/alarms/active?site=cq-yz-001", headers=auth)
        return st == 200 or f"HTTP {st} {raw[:120]!r}"

    def ack():
        st, raw, _, _ = call(port, "POST", "/api/v1/commands",
                             {"site": "cq-yz-001", "gateway": "gw-1", "alarm_id": "sos:panel-1",
                              "action": "ack"}, auth)
        return st == 202 or f"HTTP {st} {raw[:120]!r}"

    return [("healthz", healthz), ("alarms/active", active), ("ack", ack)]


def test_hub(w):
    from hub_api import make_tokens, status  # noqa: E402
    influx = Influx(w)
    mqtt = Mosquitto(w)
    secrets, tokens_path, _ = make_tokens(w, w.bin("care-hub"))
    port = free_port()
    cfg = w.write("hub.yaml", f"""mqtt:
  broker: {mqtt.uri}
  client_id: hub-slow
influx:
  url: {influx.url}
  database: carehub_slow
spool:
  dir: hub-spool
api:
  port: {port}
  tokens_file: {tokens_path}
  rate_limit: 1000
  connections:
    header_timeout: 3s
self_metrics_interval: 1s
""")
    hub = w.spawn("care-hub", [w.bin("care-hub"), "-c", cfg])
    hub.wait_log(r"serving the API")
    mqtt.publish("carehub/v1/cq-yz-001/gw-1/status", json.dumps(status("cq-yz-001", True)),
                 retain=True)
    wait_for("the gateway online at the hub",
             lambda: call(port, "POST", "/api/v1/commands",
                          {"site": "cq-yz-001", "gateway": "gw-1", "alarm_id": "sos:panel-1",
                           "action": "ack"},
                          {"Authorization": f"Bearer {secrets['staff-yz001']}"})[0] == 202, 15)
    out = attack_both("hub", port, hub_steps(port, secrets["staff-yz001"]))
    one, many = out["one address"][0], out["50 addresses"][0]
    # one address: at most per_address (64) held, the rest closed as they come
    assert one.held_end <= 64 and one.closed_by_server > 0, (one.held_end, one.closed_by_server)
    assert many.closed_by_server > 0, many.closed_by_server
    # and the hub counts it (carehub_hub, every self_metrics_interval)
    q = ('SELECT max("http_evicted") AS e, max("http_header_timeouts") AS t, '
         'max("http_refused_slow") AS p, max("http_connections") AS c FROM "carehub_hub"')

    def counted():
        r = influx.series(q, "carehub_slow")
        return r[0] if r and r[0]["e"] and r[0]["t"] and r[0]["p"] else None
    row = wait_for("the guard's counters in carehub_hub", counted, 10, 0.5)
    log(f"hub guard (carehub_hub): {row}")


def test_slow_clients(w):
    test_console(w)
    test_hub(w)


if __name__ == "__main__":
    run_test(test_slow_clients)
