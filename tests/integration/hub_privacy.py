#!/usr/bin/env python3
"""What care-hub's API gives a regulator (hub/API.md, "Regulators"), the
scope of a district token, and the cells of a CSV export (issue 11), against
real Mosquitto, InfluxDB and care-hub.

1. Privacy by allow-list (api.regulator_view, here its defaults plus a
   compliance limit on bed heart rate). At cq-yz-001: environment, bed
   (heart rate), wearable (heart rate, zone, battery; its room is the zone it
   was heard in), a measurement on no list ("vitals", glucose) and the
   gateway's own health; alarms on heart rate (142), a zone exit, glucose
   and CO2. A regulator without grants reads environment and gateway health,
   wearable battery without its room, and nothing of bed, vitals or the
   alarm measurement; its alarm records of heart rate, zone exit and glucose
   keep rule, priority, times and pseudonym but carry no metric, value or
   message, in /alarms, /alarms/active, the alarm export (CSV and JSON) and
   the live events; its summary has no heart-rate compliance. With health:
   heart rates, not zones; with location: zones and a wearable's room, not
   heart rates; "vitals" with no grant at all. A configured regulator_view
   replaces the defaults; bad entries are refused by --check with file, line
   and key.
2. District scopes are whole id segments: cq-yz (written cq-yz-) covers
   cq-yz-001 and cq-yz-0010, not cq-yzb-001; cq-yz-001 does not cover
   cq-yz-0010; cq-yz-00 covers neither — in /sites, /alarms, /export,
   /series and the events.
3. CSV cells a spreadsheet would evaluate are neutralised: alarm messages and
   an acknowledger starting with - and a digit (-2+3+cmd|' /C calc'!A0),
   =, +, @, a space then =, full-width ＝ and －, exported by staff and by a
   regulator; numbers in numeric columns (-2.5) stay numbers.
"""
import csv
import io
import json
import os
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from harness import Influx, Mosquitto, free_port, log, new_tokens, run_test, wait_for  # noqa: E402
from hub_api import Api, Stream, reading, status, telemetry  # noqa: E402

DB = "carehub_privacy"
SITE, SITE10, OTHER = "cq-yz-001", "cq-yz-0010", "cq-yzb-001"
T0 = (int(time.time()) // 3600 - 2) * 3600 * 1000  # two hours ago, on the hour
RANGE = {"from": str(T0 - 60000), "to": str(T0 + 3600000)}
PAYLOAD = "-2+3+cmd|' /C calc'!A0"
FORMULAS = [PAYLOAD, "=1+2", "+1+2", "@SUM(A1)", " =1+2", "＝1+2", "－2+3"]
# alarms of sensitive kinds at SITE: (rule, device, metric, value, message)
SENSITIVE = [("hr_high", "bed-1", "hr", 142.0, "heart rate 142 for R-0417"),
             ("wander", "band-1", "zone_exit", 1.0, "R-0417 left by exit 2"),
             ("glucose_low", "vit-1", "glucose", 3.1, "glucose 3.1 for R-0417")]
OPEN = ("co2_high", "air-1", "co2", 1450.0, "CO2 1450 ppm (R-0417)")


def alert(site, rule, dev, metric, value, message, ts, by="", state="unack", event="raise",
          acked=0):
    a = {"schema": "carehub/alert/1", "site": site, "gateway": "gw-1",
         "alarm_id": f"{rule}:{dev}", "rule": rule, "device": dev, "room": "101",
         "resident": "R-0417", "priority": "high", "state": state, "event": event,
         "escalation": 0, "latched": False, "metric": metric, "value": value,
         "message": message, "ts_ms": ts, "raised_ms": T0}
    if by:
        a["by"] = by
    if acked:
        a["acked_ms"] = acked
    return a


def make_tokens(w):
    specs = {"staff": f"role: staff\n    sites: [{SITE}]",
             "reg": "role: regulator\n    district: cq-yz-",  # written as before: a trailing -
             "reg-h": "role: regulator\n    district: cq-yz\n    grants: [health]",
             "reg-l": "role: regulator\n    district: cq-yz\n    grants: [location]",
             "reg-001": f"role: regulator\n    district: {SITE}",
             "reg-00": "role: regulator\n    district: cq-yz-00"}
    secrets, path, _ = new_tokens(w, specs)
    return secrets, path


def config(mqtt, influx, tokens, port, extra=""):
    return f"""mqtt:
  broker: {mqtt.uri}
  client_id: hub-priv
influx:
  url: {influx.url}
  database: {DB}
  flush_interval: 100ms
  max_backoff: 1s
spool:
  dir: hub-spool
api:
  port: {port}
  tokens_file: {tokens}
  rate_limit: 500
  compliance:
    - {{metric: co2, max: 1000}}
    - {{metric: hr, measurement: bed, min: 40, max: 120}}
{extra}"""


def check_bad_views(w, mqtt, influx, tokens):
    """Bad api.regulator_view entries: refused by --check, at their line and key."""
    cases = [
        ("  regulator_view:\n    - {measurement: environment}\n"
         "    - {measurement: alarm, fields: [value]}\n", 20, "measurement"),
        ("  regulator_view:\n    - {measurement: carehub_audit}\n", 19, "measurement"),
        ("  regulator_view:\n    - {measurement: bed, fields: [hr, \"*\"], grant: health}\n",
         19, "fields"),
        ("  regulator_view:\n    - {measurement: bed, fields: [hr], grant: health}\n"
         "    - {measurement: bed, fields: [rr, hr]}\n", 20, "fields"),
        ("  regulator_view:\n    - {measurement: bed}\n    - {measurement: bed, grant: health}\n",
         20, "measurement"),
        ("  regulator_view:\n    - {measurement: bed, grant: everything}\n", 19, "grant"),
        ("  sensitive:\n    - {measurement: bed, grant: health}\n", 18, "sensitive"),
    ]
    for i, (extra, line, key) in enumerate(cases):
        path = w.write(f"bad-{i}.yaml", config(mqtt, influx, tokens, free_port(), extra))
        r = subprocess.run([w.bin("care-hub"), "-c", path, "--check"], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode != 0, (extra, r.stdout, r.stderr)
        assert f"bad-{i}.yaml:{line}:" in r.stderr and key in r.stderr, (extra, r.stderr)
    good = w.write("good.yaml", config(mqtt, influx, tokens, free_port(),
                                       "  regulator_view:\n    - {measurement: environment}\n"
                                       "    - {measurement: bed, fields: [hr], grant: health}\n"))
    r = subprocess.run([w.bin("care-hub"), "-c", good, "--check"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    log("regulator_view: bad entries refused by --check with file:line and the key")


def publish_scenario(mqtt, influx):
    devices = {SITE: ["air-1", "bed-1", "band-1", "vit-1"], SITE10: ["air-9"], OTHER: ["air-8"]}
    for site, devs in devices.items():  # births declaring each gateway's devices
        birth = dict(status(site, True), devices=[{"id": d, "profile": "p", "bus": "b"}
                                                 for d in devs])
        mqtt.publish(f"carehub/v1/{site}/gw-1/status", json.dumps(birth), retain=True)
    msgs = []
    for i in range(10):
        ts = T0 + i * 60000
        msgs.append(telemetry(SITE, 1 + i, [
            reading("air-1", "environment", "101", ts, {"co2": 900.0, "temperature": -2.5}),
            reading("bed-1", "bed", "102", ts, {"hr": 60.0 + i, "in_bed": 1.0}),
            reading("band-1", "wearable", "zone-3", ts, {"hr": 70.0 + i, "zone": 3.0,
                                                         "battery": 80.0}),
            reading("vit-1", "vitals", "103", ts, {"glucose": 5.5}),
            reading("gw-1", "edge_gateway", "", ts, {"uptime_s": 100.0 + i})]))
        msgs.append(telemetry(SITE10, 1 + i, [
            reading("air-9", "environment", "901", ts, {"co2": 555.0})]))
        msgs.append(telemetry(OTHER, 1 + i, [
            reading("air-8", "environment", "801", ts, {"co2": 444.0})]))
    for m in msgs:
        for r in m["readings"]:
            if not r["room"]:
                del r["room"]
        mqtt.publish(f"carehub/v1/{m['site']}/gw-1/telemetry", json.dumps(m))
    alerts = [alert(SITE, r, d, m, v, msg, T0 + 1000 * (k + 1))
              for k, (r, d, m, v, msg) in enumerate(SENSITIVE + [OPEN])]
    for k, text in enumerate(FORMULAS):  # formulas in the message and in who acknowledged
        alerts.append(alert(SITE, f"csv{k}", "air-1", "temperature", -2.5, text,
                            T0 + 60000 + k * 1000, by=text if k == 0 else "console:nurse",
                            state="acked", event="ack", acked=T0 + 60000 + k * 1000))
    alerts.append(alert(SITE10, "co2_high", "air-9", "co2", 1500.0, "CO2 at 0010", T0 + 5000))
    alerts.append(alert(OTHER, "co2_high", "air-8", "co2", 1600.0, "CO2 at yzb", T0 + 5000))
    for a in alerts:
        mqtt.publish(f"carehub/v1/{a['site']}/gw-1/alert", json.dumps(a))
    wait_for("the readings in InfluxDB", lambda: sum(
        x["count"] for x in influx.series('SELECT count("seq") FROM /.*/', DB)) == 70, 30)
    wait_for("the alarms in InfluxDB", lambda: influx.series(
        'SELECT count("latched") FROM "alarm"', DB)[0]["count"] == len(alerts), 30)
    return alerts


def csv_rows(data):
    return list(csv.reader(io.StringIO(data.decode())))


def no_formula_cells(rows, numeric):
    """Every text cell that a spreadsheet would evaluate starts with a quote;
    numeric columns hold numbers."""
    head = rows[0]
    for row in rows[1:]:
        for name, cell in zip(head, row):
            if name in numeric and cell != "":
                float(cell)
                continue
            bare = cell.lstrip(" \t\r\n\u00a0\u3000")
            assert not bare or bare[0] not in "=+-@＝＋－＠\t\r", (name, cell, row)


def check_privacy(api, t, streams):
    reg, regh, regl, staff = t["reg"], t["reg-h"], t["reg-l"], t["staff"]
    sens = {r for r, *_ in SENSITIVE}

    # ---- alarm records ---------------------------------------------------
    def by_rule(alarms):
        return {a["rule"]: a for a in alarms}

    def withheld(a):
        return a["value"] is None and a["metric"] == "" and a["message"] == ""

    def kept(a):  # what a regulator always gets
        return (a["resident"].startswith("P-") and a["priority"] == "high"
                and a["raised_ms"] == T0 and a["state"] == "unack")
    for path in ("/api/v1/alarms", "/api/v1/alarms/active"):
        params = dict(RANGE, site=SITE) if path == "/api/v1/alarms" else {"site": SITE}
        st, body = api.get(path, staff, **params)
        assert st == 200 and by_rule(body["alarms"])["hr_high"]["value"] == 142, body
        st, body = api.get(path, reg, **params)
        assert st == 200, body
        got = by_rule(body["alarms"])
        for r in sens:
            assert withheld(got[r]) and kept(got[r]), (path, got[r])
        text = json.dumps([got[r] for r in sens])
        for leak in ("heart rate", "exit 2", "glucose 3.1", "R-0417"):
            assert leak not in text, (path, leak, text)
        assert got["co2_high"]["value"] == 1450 and got["co2_high"]["metric"] == "co2", got
        assert got["co2_high"]["message"] == f"CO2 1450 ppm ({got['co2_high']['resident']})", got
        st, body = api.get(path, regh, **params)
        got = by_rule(body["alarms"])
        assert got["hr_high"]["value"] == 142 and got["hr_high"]["metric"] == "hr", got["hr_high"]
        assert got["hr_high"]["message"].startswith("heart rate 142 for P-"), got["hr_high"]
        assert withheld(got["wander"]) and withheld(got["glucose_low"]), got
        st, body = api.get(path, regl, **params)
        got = by_rule(body["alarms"])
        assert got["wander"]["value"] == 1 and "exit 2" in got["wander"]["message"], got
        assert withheld(got["hr_high"]) and withheld(got["glucose_low"]), got
    log("alarm records: heart rate, zone exit and a measurement on no list withheld from a "
        "regulator without the grant (rule, priority, times, pseudonym kept); CO2 shown")

    for fmt in ("json", "csv"):
        q = urllib.parse.urlencode(dict(RANGE, site=SITE, data="alarms", format=fmt))
        st, _, data = api.call("GET", "/api/v1/export?" + q, reg, raw=True)
        assert st == 200, data
        if fmt == "json":
            rows = {r["rule"]: r for r in json.loads(data)}
        else:
            rr = csv_rows(data)
            rows = {r[rr[0].index("rule")]: dict(zip(rr[0], r)) for r in rr[1:]}
        for r in sens:
            assert rows[r]["value"] in (None, "") and rows[r]["metric"] == "", rows[r]
            assert rows[r]["message"] == "" and rows[r]["resident"].startswith("P-"), rows[r]
        for leak in (b"heart rate", b"exit 2", b"glucose 3.1", b"R-0417"):
            assert leak not in data, (fmt, leak)
        assert float(rows["co2_high"]["value"]) == 1450, rows["co2_high"]
    log("alarm export (CSV and JSON): the same")

    # ---- series and export of telemetry -----------------------------------------
    def series(tok, meas, metric):
        return api.get("/api/v1/series", tok, site=SITE, measurement=meas, metric=metric,
                       every="10m", **RANGE)
    for tok, meas, metric in ((reg, "alarm", "value"), (regh, "alarm", "value"),
                              (reg, "bed", "hr"), (reg, "wearable", "hr"),
                              (reg, "wearable", "zone"), (regh, "wearable", "zone"),
                              (regl, "bed", "hr"), (reg, "vitals", "glucose"),
                              (regh, "vitals", "glucose"), (reg, "carehub_audit", "rows"),
                              (reg, "environment", "tvoc_new")):
        st, body = series(tok, meas, metric)
        assert st == 403, (meas, metric, st, body)
        assert "142" not in json.dumps(body) and "5.5" not in json.dumps(body), body
    st, body = series(staff, "alarm", "value")
    assert st == 200 and body["series"], body
    st, body = series(reg, "environment", "co2")
    assert st == 200 and [s["room"] for s in body["series"]] == ["101"], body
    st, body = series(reg, "edge_gateway", "uptime_s")
    assert st == 200 and body["series"], body
    st, body = series(regh, "bed", "hr")
    assert st == 200 and [s["room"] for s in body["series"]] == ["102"], body
    st, body = series(reg, "wearable", "battery")  # open, but its room is where the wearer was
    assert st == 200 and [s["room"] for s in body["series"]] == [""], body
    st, body = series(regh, "wearable", "hr")
    assert st == 200 and [s["room"] for s in body["series"]] == [""], body
    st, body = series(regl, "wearable", "zone")
    assert st == 200 and [s["room"] for s in body["series"]] == ["zone-3"], body
    st, body = series(staff, "wearable", "hr")
    assert st == 200 and [s["room"] for s in body["series"]] == ["zone-3"], body

    def exported(tok):
        q = urllib.parse.urlencode(dict(RANGE, site=SITE, data="telemetry", format="json"))
        st, _, data = api.call("GET", "/api/v1/export?" + q, tok, raw=True)
        assert st == 200, data
        return sorted({(r["measurement"], r["metric"], r["room"]) for r in json.loads(data)})
    assert exported(reg) == [("edge_gateway", "uptime_s", ""), ("environment", "co2", "101"),
                             ("environment", "temperature", "101"),
                             ("wearable", "battery", "")], exported(reg)
    assert exported(regh) == [("bed", "hr", "102"), ("bed", "in_bed", "102"),
                              ("edge_gateway", "uptime_s", ""), ("environment", "co2", "101"),
                              ("environment", "temperature", "101"), ("wearable", "battery", ""),
                              ("wearable", "hr", "")], exported(regh)
    assert ("wearable", "zone", "zone-3") in exported(regl), exported(regl)
    assert ("wearable", "hr", "zone-3") not in exported(regl), exported(regl)
    assert {m for m, _, _ in exported(staff)} == {"bed", "edge_gateway", "environment", "vitals",
                                                  "wearable"}, exported(staff)
    log("series and export: what is on the allow-list and granted; a wearable's room only "
        "with location; nothing of vitals or the alarm measurement")

    # ---- summary ------------------------------------------------------------------
    def env(tok):
        st, sm = api.get("/api/v1/summary", tok, site=SITE, **RANGE)
        assert st == 200, sm
        return sorted((e["metric"], e["room"]) for e in sm["environment"])
    assert env(reg) == [("co2", "101")], env(reg)
    assert env(regh) == [("co2", "101"), ("hr", "102")], env(regh)
    log("summary: bed heart-rate compliance only with health")

    # ---- events -------------------------------------------------------------------
    def live(stream):
        return {d["rule"]: d for e, d in stream.events
                if e == "alarm" and d["site"] == SITE and d["rule"] in sens | {"co2_high"}}
    wait_for("the live alarms on the streams", lambda: all(
        len(live(streams[k])) == 4 for k in ("staff", "reg", "reg-h", "reg-l", "reg-001")), 10)
    got = live(streams["reg"])
    for r in sens:
        assert withheld(got[r]) and kept(got[r]), got[r]
    assert got["co2_high"]["value"] == 1450, got
    assert live(streams["reg-h"])["hr_high"]["value"] == 142
    assert withheld(live(streams["reg-h"])["wander"])
    assert live(streams["reg-l"])["wander"]["value"] == 1
    assert withheld(live(streams["reg-l"])["hr_high"])
    assert live(streams["staff"])["hr_high"]["message"] == "heart rate 142 for R-0417"
    log("events: each regulator's stream as its grants allow")


def check_districts(api, t, streams):
    def sites(tok):
        st, body = api.get("/api/v1/sites", tok)
        assert st == 200, body
        return [s["site"] for s in body["sites"]]
    assert sites(t["reg"]) == [SITE, SITE10], sites(t["reg"])
    assert sites(t["reg-001"]) == [SITE], sites(t["reg-001"])
    assert sites(t["reg-00"]) == [], sites(t["reg-00"])
    st, me = api.get("/api/v1/me", t["reg"])
    assert me["district"] == "cq-yz", me
    st, body = api.get("/api/v1/alarms", t["reg-001"], **RANGE)
    assert st == 200 and {a["site"] for a in body["alarms"]} == {SITE}, body
    st, body = api.get("/api/v1/alarms", t["reg-00"], **RANGE)
    assert st == 200 and body["alarms"] == [], body
    st, body = api.get("/api/v1/alarms", t["reg"], **RANGE)
    assert {a["site"] for a in body["alarms"]} == {SITE, SITE10}, body
    for tok, site in ((t["reg-001"], SITE10), (t["reg-00"], SITE10), (t["reg-00"], SITE),
                      (t["reg"], OTHER)):
        for path, params in (("/api/v1/alarms", {}), ("/api/v1/alarms/active", {}),
                             ("/api/v1/summary", {}), ("/api/v1/sites/" + site, None),
                             ("/api/v1/series", {"metric": "co2"}),
                             ("/api/v1/export", {"data": "telemetry"})):
            st, body = (api.get(path, tok) if params is None
                        else api.get(path, tok, site=site, **params))
            assert st == 403 and "555" not in json.dumps(body), (path, site, st, body)
    st, body = api.get("/api/v1/series", t["reg-001"], site=SITE, metric="co2", **RANGE)
    assert st == 200 and body["series"], body
    assert {d["site"] for e, d in streams["reg-001"].events if e == "alarm"} == {SITE}
    assert {d["site"] for e, d in streams["reg"].events if e == "alarm"} == {SITE, SITE10}
    assert not [d for e, d in streams["reg-00"].events if e == "alarm"]
    log("districts: whole segments (cq-yz covers cq-yz-001 and cq-yz-0010, not cq-yzb-001; "
        "cq-yz-001 not cq-yz-0010; cq-yz-00 neither)")


def check_csv(api, t):
    q = urllib.parse.urlencode(dict(RANGE, site=SITE, data="alarms", format="csv"))
    numeric = {"value", "raised_ms", "acked_ms", "cleared_ms"}
    for tok in (t["staff"], t["reg"]):
        st, _, data = api.call("GET", "/api/v1/export?" + q, tok, raw=True)
        assert st == 200, data
        rows = csv_rows(data)
        head = rows[0]
        by_rule = {r[head.index("rule")]: dict(zip(head, r)) for r in rows[1:]}
        for k, text in enumerate(FORMULAS):
            row = by_rule[f"csv{k}"]
            assert row["value"] == "-2.5", row  # a number in a numeric column stays one
            msg = row["message"]
            if tok == t["reg"]:
                assert msg.startswith("'") and msg[1:] == text, (text, row)
            else:
                assert msg == "'" + text, (text, row)
                assert row["acked_by"] == ("'" + text if k == 0 else "console:nurse"), row
        # the exact payload, quoted and prefixed, in the raw bytes
        assert b'"\'-2+3+cmd|\' /C calc\'!A0"' in data, data[:600]
        no_formula_cells(rows, numeric)
    q = urllib.parse.urlencode(dict(RANGE, site=SITE, data="telemetry", format="csv"))
    st, _, data = api.call("GET", "/api/v1/export?" + q, t["staff"], raw=True)
    rows = csv_rows(data)
    assert ["-2.5"] == sorted({r[7] for r in rows[1:] if r[6] == "temperature"}), rows[:3]
    no_formula_cells(rows, {"value"})
    log(f"CSV: {len(FORMULAS)} formula payloads neutralised ('{PAYLOAD} quoted and prefixed); "
        "-2.5 in numeric columns kept")


def check_configured(w, mqtt, influx, tokens, t):
    """A hub with its own api.regulator_view: that list, not the defaults."""
    port = free_port()
    view = ("  regulator_view:\n    - {measurement: environment, fields: [co2, room]}\n"
            "    - {measurement: vitals, fields: [glucose], grant: health}\n")
    hub = w.spawn("care-hub-2", [w.bin("care-hub"), "-c", w.write(
        "hub2.yaml", config(mqtt, influx, tokens, port, view).replace("hub-priv", "hub-priv2"))])
    hub.wait_log(r"serving the API")
    api = Api(port)

    def series(tok, meas, metric):
        return api.get("/api/v1/series", tok, site=SITE, measurement=meas, metric=metric,
                       every="10m", **RANGE)[0]
    assert series(t["reg"], "environment", "co2") == 200
    assert series(t["reg"], "environment", "temperature") == 403  # open by default, not here
    assert series(t["reg"], "edge_gateway", "uptime_s") == 403
    assert series(t["reg"], "vitals", "glucose") == 403
    assert series(t["reg-h"], "vitals", "glucose") == 200
    assert series(t["reg-h"], "bed", "hr") == 403

    def alarms(tok):
        st, body = api.get("/api/v1/alarms", tok, site=SITE, **RANGE)
        assert st == 200, body
        return {a["rule"]: a for a in body["alarms"]}
    reg, regh = alarms(t["reg"]), alarms(t["reg-h"])
    assert reg["co2_high"]["value"] == 1450 and reg["csv0"]["value"] is None, reg["csv0"]
    assert reg["glucose_low"]["value"] is None and regh["glucose_low"]["value"] == 3.1, regh
    assert regh["hr_high"]["value"] is None and regh["hr_high"]["message"] == "", regh
    assert hub.stop() == 0, hub.tail()
    log("a configured regulator_view replaces the defaults: temperature and gateway health "
        "closed, glucose opened to health")


def test_hub_privacy(w):
    influx = Influx(w)
    mqtt = Mosquitto(w)
    secrets, tokens = make_tokens(w)
    check_bad_views(w, mqtt, influx, tokens)
    port = free_port()
    hub = w.spawn("care-hub", [w.bin("care-hub"), "-c",
                               w.write("hub.yaml", config(mqtt, influx, tokens, port))])
    hub.wait_log(r"serving the API")
    hub.wait_log(r"hub-priv-view subscribed")
    hub.wait_log(r"hub-priv subscribed")  # the ingest client too: nothing published is lost
    hub.wait_log(rf"database {DB} ready", 15)
    api = Api(port)
    streams = {k: Stream(port, secrets[k]) for k in ("staff", "reg", "reg-h", "reg-l", "reg-001",
                                                    "reg-00")}
    time.sleep(0.5)
    publish_scenario(mqtt, influx)
    try:
        check_privacy(api, secrets, streams)
        check_districts(api, secrets, streams)
        check_csv(api, secrets)
    finally:
        for s in streams.values():
            s.close()
    assert hub.stop() == 0, hub.tail()
    check_configured(w, mqtt, influx, tokens, secrets)


if __name__ == "__main__":
    run_test(test_hub_privacy)
    print("1 passed, 0 failed")
