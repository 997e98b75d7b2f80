#!/usr/bin/env python3
"""care-hub's HTTP API (hub/API.md) against real Mosquitto and InfluxDB, fed
a scripted scenario whose figures are known in advance.

Three sites: cq-yz-001 and cq-yz-002 (district cq-yz-), cq-jb-001. At
cq-yz-001 five alarms are raised at known times and four acknowledged after
30, 90, 45 and 120 s: the median acknowledgement time is 67.5 s and the 90th
percentile (linear) 111 s, computed here independently of the hub. Its
environment readings put a known share of each room's CO2 within 1000 ppm;
its reading numbers 1..100 arrive without 10 of them (90 % complete).

Checked for every endpoint: a token in scope, out of scope (403, and nothing
of the other site in the body), none (401); roles (a regulator may not send
commands, only an admin reads the audit log); privacy (a regulator sees
re-keyed pseudonyms and no staff names, and no heart-rate series without the
health grant); hostile input (bad dates, unknown parameters, InfluxQL
injection, path traversal, oversized and malformed bodies); the rate limit;
commands published to the gateway's cmd topic; the live event stream
filtered by scope; the audit log; a tokens reload on SIGHUP.
"""
import http.client
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from harness import Influx, Mosquitto, free_port, log, new_tokens, run_test, wait_for  # noqa: E402

DB = "carehub_api"
T0 = (int(time.time()) // 3600 - 6) * 3600 * 1000  # six hours ago, on the hour
ACK_DELAYS = {"A1": 30, "A2": 90, "A3": 45, "A5": 120}  # seconds; A4 never acknowledged
ACTIVE = ["A2", "A3", "A4", "A5"]  # all but A1, which cleared


def names(alarms):
    """The scenario's names of alarms ("alarm A1 (R-0417)" -> "A1"), sorted."""
    return sorted(a["message"].split()[1] for a in alarms)


def percentile(values, p):
    """Linear interpolation between closest ranks, written out here."""
    v = sorted(values)
    pos = p * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


class Api:
    def __init__(self, port):
        self.port = port

    def call(self, method, path, token=None, body=None, headers=None, raw=False):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
        if raw:
            return r.status, dict(r.getheaders()), data
        try:
            return r.status, json.loads(data) if data else None
        except ValueError:
            raise AssertionError(f"{method} {path}: not JSON: {data[:200]!r}")

    def get(self, path, token=None, **params):
        q = ("?" + urllib.parse.urlencode(params)) if params else ""
        return self.call("GET", path + q, token)


def alert(site, aid, n, prio, state, event, ts, raised, acked=0, cleared=0, by="", resident="R-0417"):
    a = {"schema": "carehub/alert/1", "site": site, "gateway": "gw-1",
         "alarm_id": f"{aid.lower()}-rule:dev-{n}", "rule": f"{aid.lower()}-rule",
         "device": f"dev-{n}", "room": f"10{n}", "resident": resident, "priority": prio,
         "state": state, "event": event, "escalation": 0, "latched": False, "metric": "co2",
         "value": 1300.0, "message": f"alarm {aid} ({resident})", "ts_ms": ts,
         "raised_ms": raised}
    if acked:
        a["acked_ms"] = acked
    if cleared:
        a["cleared_ms"] = cleared
    if by:
        a["by"] = by
    return a


def scenario_alerts():
    """(alerts in order, the expected occurrences) at cq-yz-001, plus one at cq-jb-001."""
    out = []
    spec = [("A1", 1, "high", 0), ("A2", 2, "medium", 600), ("A3", 3, "high", 1200),
            ("A4", 4, "low", 1800), ("A5", 5, "medium", 2400)]
    for aid, n, prio, off in spec:
        raised = T0 + off * 1000
        out.append(alert("cq-yz-001", aid, n, prio, "unack", "raise", raised, raised))
        if aid in ACK_DELAYS:
            acked = raised + ACK_DELAYS[aid] * 1000
            out.append(alert("cq-yz-001", aid, n, prio, "acked", "ack", acked, raised, acked,
                             by="console:nurse-li"))
    # A1 clears after 300 s: back to normal
    a1 = T0
    out.append(alert("cq-yz-001", "A1", 1, "high", "normal", "clear", a1 + 300000, a1,
                     a1 + 30000, a1 + 300000, by="console:nurse-li"))
    out.append(alert("cq-jb-001", "J1", 9, "high", "unack", "raise", T0 + 100000, T0 + 100000,
                     resident="R-9999"))
    return out


def telemetry(site, seq, readings, gw="gw-1"):
    return {"schema": "carehub/telemetry/1", "site": site, "gateway": gw, "seq": seq,
            "ts": readings[0]["ts"], "historical": False, "readings": readings}


def reading(dev, meas, room, ts, metrics):
    return {"device": dev, "measurement": meas, "room": room, "ts": ts, "quality": "good",
            "metrics": metrics}


# Each site's birth declares the devices its telemetry below uses: the hub
# refuses readings of devices a gateway did not declare (issue 11).
DEVICES = {"cq-yz-001": ["air-101", "air-102", "band-1", "ghost-1"], "cq-yz-002": ["air-201"],
           "cq-jb-001": ["air-9"]}


def status(site, online, devices=3, gw="gw-1"):
    s = {"schema": "carehub/status/1", "site": site, "gateway": gw, "online": online,
         "ts": int(time.time() * 1000), "version": "0.9.1",
         "boot_id": "3f2a9c0d4b5e6f708192a3b4c5d6e7f8"}
    if online:
        ids = DEVICES.get(site, [f"dev-{i}" for i in range(devices)])
        s["devices"] = [{"id": d, "profile": "air", "bus": "rs485-1"} for d in ids]
    return s


def make_tokens(w, api_bin):
    """Tokens made with care-hub --new-token: (secrets by name, tokens file, entries)."""
    specs = {"staff-yz001": "role: staff\n    sites: [cq-yz-001]",
             "staff-jb": "role: staff\n    sites: [cq-jb-001]",
             "reg-yz": "role: regulator\n    district: cq-yz-",
             "reg-yz-health": "role: regulator\n    district: cq-yz-\n    grants: [health]",
             "admin": "role: admin\n    sites: [\"*\"]",
             "slow": "role: staff\n    sites: [cq-yz-001]\n    rate: 1"}
    return new_tokens(w, specs)


def hub_config(w, mqtt, influx, tokens_path, port):
    return w.write("hub.yaml", f"""mqtt:
  broker: {mqtt.uri}
  client_id: hub-api
influx:
  url: {influx.url}
  database: {DB}
  flush_interval: 100ms
  max_backoff: 1s
spool:
  dir: hub-spool
api:
  port: {port}
  tokens_file: {tokens_path}
  rate_limit: 200
self_metrics_interval: 1s
""")


class Stream:
    """GET /api/v1/events read on a thread: the events as (name, data)."""

    def __init__(self, port, token):
        self.events = []
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall((f"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n"
                           f"Authorization: Bearer {token}\r\n\r\n").encode())
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        buf = b""
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return
                buf += d
                while b"\n\n" in buf:
                    block, buf = buf.split(b"\n\n", 1)
                    ev, data = None, None
                    for line in block.decode(errors="replace").splitlines():
                        if line.startswith("event: "):
                            ev = line[7:]
                        elif line.startswith("data: "):
                            data = json.loads(line[6:])
                    if ev:
                        self.events.append((ev, data))
        except OSError:
            return

    def close(self):
        self.sock.close()


def check_new_site(api, mqtt, token):
    """A site nine minutes old whose two devices sent every minute: online
    100 % over the last hour and over the last 7 days, not the share of the
    range it existed (issue 13: 15 % and 0.1 % before)."""
    now = int(time.time() * 1000)
    born = now - 9 * 60000
    birth = dict(status("cq-new-001", True), ts=born,
                 devices=[{"id": d, "profile": "air", "bus": "b"} for d in ("n-1", "n-2")])
    mqtt.publish("carehub/v1/cq-new-001/gw-1/status", json.dumps(birth), retain=True)
    time.sleep(0.3)
    for i in range(9):
        rs = [reading(d, "environment", "301", born + 30000 + i * 60000, {"co2": 600})
              for d in ("n-1", "n-2")]
        mqtt.publish("carehub/v1/cq-new-001/gw-1/telemetry",
                     json.dumps(telemetry("cq-new-001", 1 + 2 * i, rs)))
    def summary(span):
        st, sm = api.get("/api/v1/summary", token, site="cq-new-001",
                         **{"from": str(now - span), "to": str(now)})
        assert st == 200, sm
        return sm
    wait_for("the new site's readings stored",
             lambda: summary(3600000)["completeness"]["received"] == 18, 15)
    # asked again: one summary's statements may run while the last points land
    for span in (3600000, 7 * 86400000):
        sm = summary(span)
        assert sm["completeness"]["received"] == 18, sm
        assert sm["devices"] == {"total": 2, "online_pct": 100.0}, (span, sm["devices"])
    log("a site 9 minutes old, every device sending: online 100 % over 1 h and over 7 days")


def test_hub_api(w):
    influx = Influx(w)
    mqtt = Mosquitto(w)
    secrets, tokens_path, entries = make_tokens(w, w.bin("care-hub"))
    port = free_port()
    hub = w.spawn("care-hub", [w.bin("care-hub"), "-c",
                               hub_config(w, mqtt, influx, tokens_path, port)])
    hub.wait_log(r"serving the API")
    hub.wait_log(r"hub-api-view subscribed")
    hub.wait_log(r"hub-api subscribed")  # the ingest client too: nothing published is lost
    api = Api(port)
    staff, jb, reg, regh, admin = (secrets[k] for k in
                                   ("staff-yz001", "staff-jb", "reg-yz", "reg-yz-health", "admin"))

    # ---- the scenario -------------------------------------------------------
    for site in ("cq-yz-001", "cq-yz-002", "cq-jb-001"):
        mqtt.publish(f"carehub/v1/{site}/gw-1/status", json.dumps(status(site, True)), retain=True)
    mqtt.publish("carehub/v1/cq-yz-002/gw-1/status", json.dumps(status("cq-yz-002", False)),
                 retain=True)
    for a in scenario_alerts():
        mqtt.publish(f"carehub/v1/{a['site']}/gw-1/alert", json.dumps(a))
    # environment: room 101 CO2 800 x6 then 1200 x4 (60 % within); room 102 all 700;
    # seq 1..100 with 10 missing (51..60)
    co2_101 = [800] * 6 + [1200] * 4
    lines = []
    seq = 1
    ts = T0
    for i in range(50):
        rs = [reading("air-101", "environment", "101", ts + i * 60000,
                      {"co2": co2_101[i % 10], "temperature": 22.0, "humidity": 50.0, "pm25": 10.0})]
        lines.append(telemetry("cq-yz-001", seq, rs))
        seq += 1
    seq += 10
    for i in range(30):
        rs = [reading("air-102", "environment", "102", ts + i * 60000,
                      {"co2": 700, "temperature": 22.0, "humidity": 50.0, "pm25": 10.0})]
        lines.append(telemetry("cq-yz-001", seq, rs))
        seq += 1
    for i in range(10):
        rs = [reading("band-1", "wearable", "101", ts + i * 60000, {"hr": 72 + i, "zone": 3})]
        lines.append(telemetry("cq-yz-001", seq, rs))
        seq += 1
    assert seq == 101
    for i in range(5):
        rs = [reading("air-9", "environment", "901", ts + i * 60000, {"co2": 500})]
        lines.append(telemetry("cq-jb-001", i + 1, rs))
    pub = os.path.join(w.root, "telemetry.lines")
    with open(pub, "w") as f:
        for m in lines:
            f.write(f"carehub/v1/{m['site']}/gw-1/telemetry\t{json.dumps(m)}\n")
    for m in lines:
        mqtt.publish(f"carehub/v1/{m['site']}/gw-1/telemetry", json.dumps(m))

    def stored():
        r = influx.series('SELECT count("seq") FROM /.*/', DB)
        return sum(x["count"] for x in r) == len(lines)
    wait_for("the scenario's readings in InfluxDB", stored, 60)
    wait_for("the scenario's alarms in InfluxDB", lambda: influx.series(
        'SELECT count("latched") FROM "alarm"', DB)[0]["count"] == len(scenario_alerts()), 30)
    log(f"scenario stored: {len(lines)} readings, {len(scenario_alerts())} alarm transitions")
    # now: a reading of air-101, and the gateway's own metrics of a device that
    # does not answer (care-edge reports edge_device rows for every device)
    now = int(time.time() * 1000)
    live = telemetry("cq-yz-001", 101, [
        reading("air-101", "environment", "101", now, {"co2": 650}),
        reading("ghost-1", "edge_device", "", now, {"online": 0, "polls_failed": 3})])
    del live["readings"][1]["room"]
    mqtt.publish("carehub/v1/cq-yz-001/gw-1/telemetry", json.dumps(live))
    wait_for("the live readings", lambda: influx.series(
        'SELECT count("seq") FROM "edge_device"', DB), 30)

    # ---- authentication ------------------------------------------------------
    assert api.get("/healthz") == (200, {"status": "ok"})
    for path in ("/api/v1/me", "/api/v1/sites", "/api/v1/alarms", "/api/v1/alarms/active",
                 "/api/v1/summary?site=cq-yz-001", "/api/v1/export?site=cq-yz-001",
                 "/api/v1/series?site=cq-yz-001&metric=co2", "/api/v1/audit", "/api/v1/events"):
        st, body = api.call("GET", path)
        assert st == 401 and body["error"] == "unauthorized", (path, st, body)
        st, body = api.call("GET", path, token="chk_not-a-real-token")
        assert st == 401, (path, st, body)
    st, body = api.call("POST", "/api/v1/commands", body={})
    assert st == 401, body
    log("no token or an unknown one: 401 on every endpoint")

    st, me = api.get("/api/v1/me", staff)
    assert st == 200 and me == {"name": "staff-yz001", "role": "staff", "sites": ["cq-yz-001"],
                                "district": None, "grants": []}, me

    # ---- sites -----------------------------------------------------------------
    st, body = api.get("/api/v1/sites", staff)
    assert st == 200 and [s["site"] for s in body["sites"]] == ["cq-yz-001"], body
    s = body["sites"][0]
    assert s["online"] is True and s["version"] == "0.9.1" and s["devices_total"] == 4, s
    # A2, A3, A5 acknowledged but not cleared, A4 unacknowledged; A1 cleared
    assert s["active_alarms"] == {"high": 1, "medium": 2, "low": 1}, s
    # air-101 reported just now; air-102 hours ago; the gateway's own row of
    # ghost-1 is not a reading of that device
    assert s["devices_online"] == 1, s
    st, body = api.get("/api/v1/sites", reg)
    assert [s["site"] for s in body["sites"]] == ["cq-yz-001", "cq-yz-002"], body
    assert body["sites"][1]["online"] is False, body
    st, body = api.get("/api/v1/sites", admin)
    assert [s["site"] for s in body["sites"]] == ["cq-jb-001", "cq-yz-001", "cq-yz-002"], body
    st, body = api.get("/api/v1/sites/cq-jb-001", staff)
    assert st == 403 and "jb" not in json.dumps(body), body
    st, body = api.get("/api/v1/sites/cq-yz-001", staff)
    assert st == 200 and body["site"] == "cq-yz-001", body
    log("sites: each token sees its scope; another site is 403 without a trace of it")

    # ---- alarms ----------------------------------------------------------------
    frm, to = str(T0 - 60000), str(T0 + 3600000)
    st, body = api.get("/api/v1/alarms", staff, site="cq-yz-001", **{"from": frm, "to": to})
    assert st == 200, body
    occ = {a["message"].split()[1]: a for a in body["alarms"]}
    assert sorted(occ) == ["A1", "A2", "A3", "A4", "A5"], body
    for aid, d in ACK_DELAYS.items():
        assert occ[aid]["ack_s"] == d, (aid, occ[aid])
        assert occ[aid]["acked_by"] == "console:nurse-li", occ[aid]
    assert occ["A4"]["ack_s"] is None and occ["A4"]["state"] == "unack", occ["A4"]
    assert occ["A1"]["clear_s"] == 300 and occ["A1"]["state"] == "normal", occ["A1"]
    # resolved: back to normal (acknowledged at 30 s, the condition over at 300 s)
    assert occ["A1"]["resolved_s"] == 300, occ["A1"]
    assert all(occ[x]["resolved_s"] is None for x in ACTIVE), occ
    assert occ["A1"]["resident"] == "R-0417", occ["A1"]
    st, body = api.get("/api/v1/alarms", staff, **{"from": frm, "to": to, "priority": "high"})
    assert names(body["alarms"]) == ["A1", "A3"], body
    st, body = api.get("/api/v1/alarms", staff, **{"from": frm, "to": to, "state": "active"})
    assert names(body["alarms"]) == ACTIVE, body
    st, body = api.get("/api/v1/alarms", staff, site="cq-jb-001", **{"from": frm, "to": to})
    assert st == 403 and "J1" not in json.dumps(body) and "R-9999" not in json.dumps(body), body
    st, body = api.get("/api/v1/alarms", admin, **{"from": frm, "to": to})
    assert len(body["alarms"]) == 6, body
    st, body = api.get("/api/v1/alarms/active", staff)
    assert st == 200 and names(body["alarms"]) == ACTIVE, body
    st, body = api.get("/api/v1/alarms/active", jb)
    assert names(body["alarms"]) == ["J1"], body
    # a regulator: re-keyed pseudonyms, no staff names
    st, body = api.get("/api/v1/alarms", reg, **{"from": frm, "to": to})
    assert st == 200 and len(body["alarms"]) == 5, body
    pseud = {a["resident"] for a in body["alarms"]}
    assert len(pseud) == 1 and pseud.pop().startswith("P-"), body
    assert "R-0417" not in json.dumps(body) and "nurse-li" not in json.dumps(body), body
    assert {a["acked_by"] for a in body["alarms"]} == {"staff", None}, body
    log("alarms: occurrences with their acknowledgement and clearing times, filters, scope, "
        "regulators' pseudonyms")

    # ---- summary ---------------------------------------------------------------
    st, sm = api.get("/api/v1/summary", reg, site="cq-yz-001", **{"from": frm, "to": to})
    assert st == 200, sm
    a = sm["alarms"]
    assert a["raised"] == 5 and a["by_priority"] == {"high": 2, "medium": 2, "low": 1}, a
    assert a["acked"] == 4 and a["never_acked"] == 1, a
    delays = list(ACK_DELAYS.values())
    assert abs(a["ack_p50_s"] - percentile(delays, 0.5)) < 1e-6, (a, percentile(delays, 0.5))
    assert abs(a["ack_p90_s"] - percentile(delays, 0.9)) < 1e-6, (a, percentile(delays, 0.9))
    assert a["ack_p50_s"] == 67.5 and a["ack_p90_s"] == 111.0, a
    # the condition's end (clear_p50_s) and the alarm's end (resolved_p50_s):
    # only A1 is over; the four others are still active
    assert a["clear_p50_s"] == 300 and a["resolved"] == 1 and a["resolved_p50_s"] == 300, a
    env = {(e["room"], e["metric"]): e for e in sm["environment"]}
    assert env[("101", "co2")]["samples"] == 50 and env[("101", "co2")]["within"] == 30, env
    assert env[("101", "co2")]["within_pct"] == 60.0, env
    assert env[("102", "co2")]["within_pct"] == 100.0, env
    assert env[("101", "temperature")]["within_pct"] == 100.0, env
    comp = sm["completeness"]
    assert comp["received"] == 90 and comp["expected"] == 100 and comp["pct"] == 90.0, comp
    # devices count from when they exist (their first declaration or reading):
    # ghost-1, first declared now, did not exist six hours ago; of the other
    # three's 12 five-minute intervals each, air-101 sent in 10, air-102 in
    # 6, band-1 in 2
    assert sm["devices"] == {"total": 3, "online_pct": 50.0}, sm["devices"]
    check_new_site(api, mqtt, admin)
    st, body = api.get("/api/v1/summary", reg, site="cq-jb-001")
    assert st == 403, body
    st, body = api.get("/api/v1/summary", reg)
    assert st == 400 and "site" in body["message"], body
    log(f"summary: ack p50 {a['ack_p50_s']} s / p90 {a['ack_p90_s']} s as computed here; "
        f"room 101 CO2 60 % compliant; completeness 90 %")

    # ---- kept day summaries ----------------------------------------------------
    # a whole day three days ago at cq-yz-002: computed once, kept in
    # carehub_rollup, read back from there; a backlog for that day makes it stale
    day = (int(time.time() * 1000) // 86400000 - 3) * 86400000
    old = [reading("air-201", "environment", "201", day + 3600000 + i * 60000,
                   {"co2": 800 if i < 6 else 1500}) for i in range(10)]
    mqtt.publish("carehub/v1/cq-yz-002/gw-1/telemetry",
                 json.dumps(dict(telemetry("cq-yz-002", 1, old), historical=True)))
    # ingest marks the day (a backlog for a day that may be kept), behind its points
    mark = "SELECT \"mark\" FROM \"carehub_rollup_stale\" WHERE \"site\" = 'cq-yz-002'"
    first_mark = wait_for("the old day's readings and the day's mark",
                          lambda: influx.series(mark, DB), 30)[0]["mark"]
    whole = {"from": str(day), "to": str(day + 86400000)}

    def co2_201(token=reg):
        st, sm = api.get("/api/v1/summary", token, site="cq-yz-002", **whole)
        assert st == 200, sm
        e = [x for x in sm["environment"] if x["room"] == "201" and x["metric"] == "co2"]
        return (e[0]["samples"], e[0]["within"]) if e else None
    assert co2_201() == (10, 6)
    wait_for("the day's summary kept in carehub_rollup", lambda: influx.series(
        "SELECT \"computed_ms\" FROM \"carehub_rollup\" WHERE \"site\" = 'cq-yz-002'", DB), 20)
    # a reading written behind the hub's back: the kept figures do not see it
    influx.write(f"environment,device=air-201,gateway=gw-1,quality=good,room=201,site=cq-yz-002 "
                 f"co2=700,seq=11i {day + 7200000}", DB)
    assert co2_201() == (10, 6), "the summary read the day again instead of its kept figures"
    # a backlog through the hub marks the day stale: computed again, both new readings counted
    late = [reading("air-201", "environment", "201", day + 7260000, {"co2": 650})]
    mqtt.publish("carehub/v1/cq-yz-002/gw-1/telemetry",
                 json.dumps(dict(telemetry("cq-yz-002", 12, late), historical=True)))
    wait_for("the day marked stale again", lambda: influx.series(mark, DB)[0]["mark"] != first_mark,
             20)
    assert co2_201() == (12, 8), "the stale day was not computed again"
    # a range of a partial day, the whole day and another partial day adds up
    st, sm = api.get("/api/v1/summary", reg, site="cq-yz-002",
                     **{"from": str(day - 3600000), "to": str(day + 86400000 + 3600000)})
    assert [(x["samples"], x["within"]) for x in sm["environment"]
            if x["room"] == "201" and x["metric"] == "co2"] == [(12, 8)], sm
    assert sm["completeness"]["received"] == 12 and sm["completeness"]["expected"] == 12, sm
    log("day summaries: computed once and kept; a backlog for the day has it computed again")

    # ---- series and privacy ----------------------------------------------------
    st, body = api.get("/api/v1/series", staff, site="cq-yz-001", metric="co2",
                       **{"from": frm, "to": to, "every": "10m"})
    assert st == 200 and {s["room"] for s in body["series"]} == {"101", "102"}, body
    st, body = api.get("/api/v1/series", reg, site="cq-yz-001", measurement="wearable",
                       metric="hr", **{"from": frm, "to": to})
    assert st == 403 and "72" not in json.dumps(body), body
    st, body = api.get("/api/v1/series", regh, site="cq-yz-001", measurement="wearable",
                       metric="hr", **{"from": frm, "to": to})
    assert st == 200 and body["series"][0]["points"], body
    st, body = api.get("/api/v1/series", regh, site="cq-yz-001", measurement="wearable",
                       metric="zone", **{"from": frm, "to": to})
    assert st == 403, body  # location needs its own grant
    st, body = api.get("/api/v1/series", staff, site="cq-yz-001", measurement="wearable",
                       metric="hr", **{"from": frm, "to": to})
    assert st == 200, body
    log("series: heart rate and location only with the regulator's grant")

    # ---- export ----------------------------------------------------------------
    q = urllib.parse.urlencode({"site": "cq-yz-001", "from": frm, "to": to, "data": "telemetry",
                                "format": "csv"})
    st, hdr, data = api.call("GET", "/api/v1/export?" + q, staff, raw=True)
    assert st == 200 and "attachment" in hdr.get("Content-Disposition", ""), hdr
    rows = data.decode().strip().split("\r\n")
    assert rows[0] == "time,measurement,gateway,device,room,quality,metric,value", rows[0]
    # 80 environment readings x 4 metrics + 10 wearable x 2
    assert len(rows) - 1 == 80 * 4 + 10 * 2, len(rows)
    st, hdr, data = api.call("GET", "/api/v1/export?" + q.replace("csv", "json"), reg, raw=True)
    arr = json.loads(data)
    assert len(arr) == 80 * 4 and all(r["measurement"] == "environment" for r in arr), len(arr)
    q2 = urllib.parse.urlencode({"site": "cq-yz-001", "from": frm, "to": to, "data": "alarms",
                                 "format": "csv"})
    st, hdr, data = api.call("GET", "/api/v1/export?" + q2, reg, raw=True)
    rows = data.decode().strip().split("\r\n")
    assert len(rows) - 1 == len(scenario_alerts()) - 1, rows
    assert "R-0417" not in data.decode() and "nurse-li" not in data.decode(), rows[:3]
    st, hdr, data = api.call("GET", "/api/v1/export?" + q2.replace("cq-yz-001", "cq-jb-001"),
                             reg, raw=True)
    assert st == 403 and b"J1" not in data, data
    log("export: streamed CSV and JSON; a regulator's leaves out wearables and names")

    # ---- commands ----------------------------------------------------------------
    cmds = mqtt.subscribe("carehub/v1/+/+/cmd/#", "cmds")
    time.sleep(0.5)
    body = {"site": "cq-yz-001", "gateway": "gw-1", "alarm_id": "a4-rule:dev-4", "action": "ack"}
    st, r = api.call("POST", "/api/v1/commands", staff, body=body)
    assert st == 202 and r["topic"] == "carehub/v1/cq-yz-001/gw-1/cmd/ack", r
    shelve = dict(body, action="shelve", duration_s=3600)
    st, r = api.call("POST", "/api/v1/commands", staff, body=shelve)
    assert st == 202, r

    def got_cmds():
        with open(cmds.logpath, encoding="utf-8") as f:
            return [l.split("\t", 1) for l in f.read().splitlines() if "\t" in l]
    wait_for("two commands on the gateway's cmd topic", lambda: len(got_cmds()) >= 2, 10)
    (t1, p1), (t2, p2) = got_cmds()[:2]
    c1, c2 = json.loads(p1), json.loads(p2)
    assert t1.endswith("/cmd/ack") and c1["action"] == "ack" and c1["by"] == "hub:staff-yz001", c1
    assert c1["alarm_id"] == "a4-rule:dev-4" and c1["schema"] == "carehub/command/1", c1
    assert c2["action"] == "shelve" and c2["duration_ms"] == 3600000, c2
    for tok, b, want in ((reg, body, 403), (jb, body, 403),
                         (staff, dict(body, site="cq-yz-002"), 403),
                         (admin, dict(body, site="cq-yz-002"), 409),
                         (staff, dict(body, action="explode"), 400),
                         (staff, dict(body, alarm_id="x'; DROP"), 400),
                         (staff, dict(body, duration_s=5), 400),
                         (staff, dict(body, extra=1), 400),
                         (staff, dict(shelve, duration_s=8 * 86400), 400)):
        st, r = api.call("POST", "/api/v1/commands", tok, body=b)
        assert st == want and r["error"] and r["message"], (b, st, r)
    st, r = api.call("POST", "/api/v1/commands", staff, body="{not json",
                     headers={"Content-Type": "application/json"})
    assert st == 400, r
    st, r = api.call("POST", "/api/v1/commands", staff, body=json.dumps(body),
                     headers={"Content-Type": "text/plain"})
    assert st == 415, r
    st, r = api.call("POST", "/api/v1/commands", staff, body="x" * 10000,
                     headers={"Content-Type": "application/json"})
    assert st == 413, r
    st, r = api.call("POST", "/api/v1/commands", staff, body="x" * 200000,
                     headers={"Content-Type": "application/json"})
    assert st == 413, r
    st, r = api.call("GET", "/api/v1/commands", staff)
    assert st == 405, r
    assert len(got_cmds()) == 2, got_cmds()
    log("commands: published as carehub/command/1 on the gateway's cmd topic; refused ones "
        "(role, scope, offline gateway, bad bodies) publish nothing")

    # ---- live events ---------------------------------------------------------------
    s_staff, s_reg = Stream(port, staff), Stream(port, reg)
    time.sleep(0.5)
    new = alert("cq-yz-001", "A6", 6, "high", "unack", "raise", int(time.time() * 1000),
                int(time.time() * 1000))
    other = alert("cq-jb-001", "J2", 7, "high", "unack", "raise", int(time.time() * 1000),
                  int(time.time() * 1000))
    mqtt.publish("carehub/v1/cq-jb-001/gw-1/alert", json.dumps(other))
    mqtt.publish("carehub/v1/cq-yz-001/gw-1/alert", json.dumps(new))
    wait_for("the new alarm on both streams", lambda: any(
        e == "alarm" for e, _ in s_staff.events) and any(e == "alarm" for e, _ in s_reg.events), 10)
    mqtt.publish("carehub/v1/cq-yz-002/gw-1/status", json.dumps(status("cq-yz-002", True)),
                 retain=True)
    wait_for("the site event", lambda: any(e == "site" for e, _ in s_reg.events), 10)
    time.sleep(0.5)
    staff_alarms = [d for e, d in s_staff.events if e == "alarm"]
    assert names(staff_alarms) == ["A6"], s_staff.events
    assert staff_alarms[0]["resident"] == "R-0417"
    assert staff_alarms[0]["message"] == "alarm A6 (R-0417)", staff_alarms
    reg_alarms = [d for e, d in s_reg.events if e == "alarm"]
    assert names(reg_alarms) == ["A6"], s_reg.events
    pseudonym = reg_alarms[0]["resident"]
    assert pseudonym.startswith("P-"), reg_alarms
    assert reg_alarms[0]["message"] == f"alarm A6 ({pseudonym})", reg_alarms
    assert not any(e == "site" for e, _ in s_staff.events), s_staff.events  # cq-yz-002 not its
    s_staff.close()
    s_reg.close()
    log("events: each stream gets the transitions and site changes of its scope only")

    # ---- hostile input -------------------------------------------------------------
    for params in ({"from": "2026-13-45"}, {"from": "yesterday"}, {"to": "2026-02-30T00:00:00Z"},
                   {"from": "2026-01-01T25:00:00Z"}, {"from": "1", "to": "0"},
                   {"from": "2020-01-01", "to": "2026-01-01"}, {"bogus": "1"},
                   {"site": "x' OR 1=1 --"}, {"site": "cq-yz-001\" OR \"\"=\""},
                   {"priority": "urgent"}, {"state": "'"}, {"limit": "0"}, {"limit": "1e9"}):
        st, body = api.get("/api/v1/alarms", staff, **params)
        assert st == 400 and body["error"] == "bad_request", (params, st, body)
    st, body = api.get("/api/v1/series", staff, site="cq-yz-001", metric="co2", every="600")
    assert st == 200 and body["every_s"] == 600, body
    st, body = api.get("/api/v1/series", staff, site="cq-yz-001", metric='co2") FROM x; --')
    assert st == 400, body
    st, body = api.get("/api/v1/alarms", staff, **{"from": "2026-11-23T03:00:00+08:00"})
    assert st == 200, body
    for path in ("/../hub.yaml", "/%2e%2e/hub.yaml", "/static/..%2f..%2fetc%2fpasswd",
                 "/.hidden.js", "//etc/passwd", "/index.html%00.js", "/tokens.yaml",
                 "/a/../../index.html"):
        st, hdr, data = api.call("GET", path, raw=True)
        assert st == 404 and b"sha256" not in data and b"root:" not in data, (path, st, data[:100])
    st, hdr, data = api.call("GET", "/", raw=True)
    assert st == 200 and hdr["Content-Type"].startswith("text/html"), (st, hdr)
    st, hdr, data = api.call("GET", "/static/app.js", raw=True)
    assert st == 200 and hdr["Content-Type"].startswith("text/javascript"), (st, hdr)
    assert hdr["X-Content-Type-Options"] == "nosniff", hdr
    st, body = api.call("DELETE", "/api/v1/sites", staff)
    assert st == 405, body
    st, body = api.get("/api/v1/nothing", staff)
    assert st == 404 and body["error"] == "not_found", body
    log("hostile input: 400/404/405 with a JSON error; no file outside the console")

    # ---- rate limit ------------------------------------------------------------------
    slow = secrets["slow"]
    codes = [api.call("GET", "/api/v1/me", slow, raw=True)[:2] for _ in range(4)]
    assert [c[0] for c in codes[:2]] == [200, 200], codes
    assert codes[2][0] == 429 and int(codes[2][1]["Retry-After"]) >= 1, codes
    log("rate limit: a token at 1 request/s gets 429 with Retry-After after its burst")

    # ---- audit ---------------------------------------------------------------------
    st, body = api.get("/api/v1/audit", reg)
    assert st == 403, body

    def audit_has():
        st, body = api.call("GET", "/api/v1/audit?token=reg-yz", admin)
        assert st == 200, body
        e = body["entries"]
        paths = {(x["path"], x["status"]) for x in e}
        return e if ("/api/v1/summary", 200) in paths and ("/api/v1/summary", 403) in paths else None
    aud = wait_for("the regulator's requests in the audit log", audit_has, 20)
    summ = [e for e in aud if e["path"] == "/api/v1/summary" and e["status"] == 200
            and "cq-yz-001" in e["query"]][0]
    assert summ["role"] == "regulator" and summ["sites"] == ["cq-yz-001"], summ
    assert summ["hub"] == "hub-api" and summ["rows"] == 1, summ
    exp = [e for e in aud if e["path"] == "/api/v1/export" and e["status"] == 200]
    assert any(e["rows"] == 80 * 4 for e in exp), exp
    with open(os.path.join(w.root, "audit.jsonl"), encoding="utf-8") as f:
        local = [json.loads(l) for l in f]
    assert any(e["token"] == "-" and e["status"] == 401 for e in local), local[:3]
    log(f"audit: {len(local)} requests in audit.jsonl; the regulator's, with sites and rows, "
        f"read back by an admin")

    # ---- tokens reload -------------------------------------------------------------
    with open(tokens_path, "w") as f:  # staff-yz001 revoked
        f.write("tokens:\n" + "".join(e for e in entries if "staff-yz001" not in e))
    os.kill(hub.pid, signal.SIGHUP)
    hub.wait_log(r"reloaded: 5 tokens")
    assert api.get("/api/v1/me", staff)[0] == 401
    assert api.get("/api/v1/me", admin)[0] == 200
    with open(tokens_path, "w") as f:
        f.write("tokens:\n  - name: x\n    sha256: nothex\n    role: staff\n    sites: [a]\n")
    os.kill(hub.pid, signal.SIGHUP)
    hub.wait_log(r"not reloaded")
    assert api.get("/api/v1/me", admin)[0] == 200
    log("SIGHUP: a revoked token is refused at once; a broken tokens file changes nothing")

    assert hub.stop() == 0, hub.tail()


if __name__ == "__main__":
    run_test(test_hub_api)
    print("1 passed, 0 failed")
