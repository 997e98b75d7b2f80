#!/usr/bin/env python3
"""InfluxDB for years (issue 12; hub/retention.h), against real Mosquitto,
InfluxDB 1.x and care-hub.

1. On its first start care-hub creates the retention policies: raw for the
   readings (retention.raw, here 4 days) and hourly for their history
   (retention.hourly, here 400 days); the database's default policy keeps
   the rest.
2. Readings of two days ago (six hours of a site's CO2 meter and bed) are
   written to raw, not to the default policy; the alarm transition to the
   default policy.
3. The keeper makes the hourly history: per hour and device the mean,
   minimum and maximum of each field, equal to what the readings give, and
   keeps the site's summary figures of that day (carehub_rollup).
4. A late reading for an hour already in the history (a gateway's backlog)
   marks its day stale, and the keeper makes that hour again: its mean
   includes the late reading.
5. care-hub restarted with retention.raw 1 day: the raw policy's duration is
   changed (ALTER), and the day's readings are gone from raw (their shards
   dropped, as InfluxDB does at the end of the retention). The summary of
   that day still gives the same compliance, devices online and
   completeness, and its alarms; a chart of it gives the hourly means, in
   steps of an hour at least, and says from where (hourly_before).
6. Bad retention settings are refused by --check at their line and key.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Influx, Mosquitto, free_port, log, run_test, wait_for  # noqa: E402
from hub_api import Api, make_tokens, reading, telemetry  # noqa: E402

DB = "carehub_retention"
SITE = "cq-yz-001"
DAY_MS = 86400000
HOUR_MS = 3600000
TODAY = int(time.time() * 1000) // DAY_MS * DAY_MS
DAY = TODAY - 2 * DAY_MS  # the day of the readings: two days ago (UTC)
HOURS = range(1, 7)  # 01:00 .. 06:59 of that day
STEP = 600000  # a reading every 10 minutes


def co2(h, i):
    return 800.0 + 100.0 * h + 50.0 * i  # hour h, i-th reading of it: 850 .. 1350


def config(mqtt, influx, tokens, port, raw="4d", extra=""):
    return f"""mqtt:
  broker: {mqtt.uri}
  client_id: hub-ret
influx:
  url: {influx.url}
  database: {DB}
  flush_interval: 100ms
  max_backoff: 1s
  retention:
    raw: {raw}
    hourly: 400d
    interval: 1s
{extra}spool:
  dir: hub-spool
api:
  port: {port}
  tokens_file: {tokens}
  rate_limit: 500
  compliance:
    - {{metric: co2, max: 1000}}
rollup_after: 1m
"""


def policies(influx):
    s = influx.query(f'SHOW RETENTION POLICIES ON "{DB}"', DB)["results"][0]["series"][0]
    rows = [dict(zip(s["columns"], v)) for v in s["values"]]
    return {r["name"]: (r["duration"], r["default"]) for r in rows}


def check_bad(w, mqtt, influx, tokens):
    cases = [("    raw: 12h\n", "raw"), ("    raw: 30d\n    hourly: 7d\n", "hourly"),
             ("    hourly: 30d\n", "hourly"), ("    raw: 30q\n", "raw")]
    for i, (body, key) in enumerate(cases):
        text = config(mqtt, influx, tokens, free_port()).replace(
            "    raw: 4d\n    hourly: 400d\n", body)
        path = w.write(f"bad-{i}.yaml", text)
        r = subprocess.run([w.bin("care-hub"), "-c", path, "--check"], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 2, (body, r.returncode, r.stderr)
        assert f"bad-{i}.yaml:" in r.stderr and f"'{key}'" in r.stderr, (body, r.stderr)
    log("bad retention settings refused by --check at their line and key")


def publish_day(mqtt):
    birth = {"schema": "carehub/status/1", "site": SITE, "gateway": "gw-1", "online": True,
             "ts": int(time.time() * 1000), "version": "0.9.1",
             "boot_id": "3f2a9c0d4b5e6f708192a3b4c5d6e7f8",
             "devices": [{"id": d, "profile": "p", "bus": "b"} for d in ("air-1", "bed-1")]}
    mqtt.publish(f"carehub/v1/{SITE}/gw-1/status", json.dumps(birth), retain=True)
    seq = 1
    for h in HOURS:
        for i in range(6):
            ts = DAY + h * HOUR_MS + i * STEP
            m = telemetry(SITE, seq, [
                reading("air-1", "environment", "101", ts, {"co2": co2(h, i)}),
                reading("bed-1", "bed", "102", ts, {"hr": 60.0 + i})])
            mqtt.publish(f"carehub/v1/{SITE}/gw-1/telemetry", json.dumps(m))
            seq += 2
    alarm = {"schema": "carehub/alert/1", "site": SITE, "gateway": "gw-1",
             "alarm_id": "co2_high:air-1", "rule": "co2_high", "device": "air-1", "room": "101",
             "priority": "medium", "state": "unack", "event": "raise", "escalation": 0,
             "latched": False, "metric": "co2", "value": 1350.0, "message": "CO2 1350 ppm",
             "ts_ms": DAY + 6 * HOUR_MS + 5 * STEP, "raised_ms": DAY + 6 * HOUR_MS + 5 * STEP}
    mqtt.publish(f"carehub/v1/{SITE}/gw-1/alert", json.dumps(alarm))
    return seq


def hourly_env(influx):
    return {r["time"]: r for r in influx.series(
        f'SELECT * FROM "hourly"."environment" WHERE time >= {DAY}ms AND time < {DAY + DAY_MS}ms',
        DB)}


def check_history(influx):
    n = len(HOURS) * 6
    wait_for("the readings in raw", lambda: influx.series(
        'SELECT count("co2") FROM "raw"."environment"', DB)[0]["count"] == n, 30)
    assert influx.series('SELECT count("co2") FROM "environment"', DB) == [], \
        "readings in the default policy"
    wait_for("the alarm in the default policy", lambda: influx.series(
        'SELECT count("latched") FROM "autogen"."alarm"', DB)[0]["count"] == 1, 30)
    log("readings in raw, none in the default policy; the alarm in the default policy")
    wait_for("the hourly history", lambda: len(hourly_env(influx)) == len(HOURS), 30)
    rows = hourly_env(influx)
    for h in HOURS:
        r = rows[DAY + h * HOUR_MS]
        vals = [co2(h, i) for i in range(6)]
        assert abs(r["mean_co2"] - sum(vals) / 6) < 1e-9, r
        assert r["min_co2"] == min(vals) and r["max_co2"] == max(vals), r
        assert r["device"] == "air-1" and r["room"] == "101" and r["site"] == SITE, r
    bed = influx.series(f'SELECT * FROM "hourly"."bed" WHERE time = {DAY + HOUR_MS}ms', DB)
    assert len(bed) == 1 and bed[0]["mean_hr"] == 62.5 and bed[0]["max_hr"] == 65, bed
    log(f"hourly history: {len(HOURS)} hours of CO2 and heart rate, mean/min/max as the readings")
    wait_for("the day's figures kept", lambda: influx.series(
        f'SELECT count("computed_ms") FROM "carehub_rollup" WHERE "span" = \'day\' '
        f'AND time = {DAY}ms', DB), 30)
    log("the site's summary figures of the day kept while its readings are in raw")


def check_backlog(mqtt, influx, seq):
    h = HOURS[0]
    before = hourly_env(influx)[DAY + h * HOUR_MS]["mean_co2"]
    ts = DAY + h * HOUR_MS + 30000  # a late reading of an hour in the history
    m = telemetry(SITE, seq, [reading("air-1", "environment", "101", ts, {"co2": 5000.0})])
    mqtt.publish(f"carehub/v1/{SITE}/gw-1/telemetry", json.dumps(m))
    want = (before * 6 + 5000.0) / 7
    wait_for("the hour made again with the late reading", lambda: abs(
        hourly_env(influx)[DAY + h * HOUR_MS]["mean_co2"] - want) < 1e-9, 30)
    log(f"a late reading: its hour made again (mean {before:.1f} -> {want:.1f})")


def kept_basis(influx):
    rows = influx.series(f'SELECT "basis" FROM "carehub_rollup" WHERE "span" = \'day\' '
                         f'AND time = {DAY}ms', DB)
    return rows[0]["basis"] if rows else None


def day_mark(influx):
    rows = influx.series(f'SELECT "mark" FROM "carehub_rollup_stale" WHERE time = {DAY}ms', DB)
    return rows[0]["mark"] if rows else ""


def summary(api, tok):
    st, body = api.get("/api/v1/summary", tok, site=SITE, **{"from": str(DAY),
                                                              "to": str(DAY + DAY_MS)})
    assert st == 200, body
    return body


def drop_raw_day(influx):
    """What InfluxDB does at the end of a retention: the day's shards of raw go."""
    ids = []
    shards = []
    for s in influx.query("SHOW SHARDS")["results"][0]["series"]:
        shards += [dict(zip(s["columns"], v)) for v in s["values"]]
    for r in shards:
        if r.get("database") == DB and r.get("retention_policy") == "raw":
            start = r["start_time"]
            if isinstance(start, str):
                import datetime
                start = int(datetime.datetime.fromisoformat(
                    start.replace("Z", "+00:00")).timestamp() * 1000)
            if start < TODAY - DAY_MS:
                ids.append(r["id"])
    assert ids, shards
    for i in ids:
        influx.query(f"DROP SHARD {i}")
    assert influx.series(f'SELECT count("co2") FROM "raw"."environment" WHERE time >= {DAY}ms '
                         f'AND time < {DAY + DAY_MS}ms', DB) == []


def test_hub_retention(w):
    influx = Influx(w)
    mqtt = Mosquitto(w)
    secrets, tokens, _ = make_tokens(w, w.bin("care-hub"))
    tok = secrets["staff-yz001"]  # staff of cq-yz-001
    check_bad(w, mqtt, influx, tokens)
    port = free_port()
    hub = w.spawn("care-hub", [w.bin("care-hub"), "-c",
                               w.write("hub.yaml", config(mqtt, influx, tokens, port))])
    hub.wait_log(rf"database {DB} ready", 15)
    hub.wait_log(r"hub-ret-view subscribed")
    # and the ingest client: a telemetry message published before it has
    # subscribed is lost (its first session; CI under ASan: nothing in raw)
    hub.wait_log(r"hub-ret subscribed to carehub/v1/")
    p = policies(influx)
    assert p["raw"] == ("96h0m0s", False) and p["hourly"] == ("9600h0m0s", False), p
    assert p["autogen"][1] is True, p
    log(f"retention policies made on the first start: {p}")
    seq = publish_day(mqtt)
    check_history(influx)
    check_backlog(mqtt, influx, seq)
    wait_for("the day's figures kept again after the backlog", lambda: kept_basis(influx) ==
             day_mark(influx), 30)
    api = Api(port)
    before = summary(api, tok)
    assert before["alarms"]["raised"] == 1, before
    assert before["completeness"]["received"] == 2 * 6 * len(HOURS) + 1, before["completeness"]
    assert hub.stop() == 0, hub.tail()

    drop_raw_day(influx)
    hub = w.spawn("care-hub-2", [w.bin("care-hub"), "-c", w.write(
        "hub2.yaml", config(mqtt, influx, tokens, port, raw="1d"))])
    hub.wait_log(r"retention policies: raw from 96h0m0s to 24h0m0s", 15)
    assert policies(influx)["raw"] == ("24h0m0s", False)
    hub.wait_log(r"serving the API")
    after = summary(api, tok)
    for k in ("environment", "devices", "completeness", "alarms"):
        assert after[k] == before[k], (k, before[k], after[k])
    log(f"summary of a day past the raw retention, from what was kept: compliance "
        f"{after['environment']}, devices {after['devices']}, completeness "
        f"{after['completeness']['pct']} %, {after['alarms']['raised']} alarm")
    st, body = api.get("/api/v1/series", tok, site=SITE, measurement="environment",
                       metric="co2", every="10m", **{"from": str(DAY), "to": str(DAY + DAY_MS)})
    assert st == 200, body
    assert body["every_s"] == 3600 and body["hourly_before"] > DAY, body
    pts = dict((t, v) for t, v in body["series"][0]["points"])
    hist = hourly_env(influx)
    assert sorted(pts) == sorted(hist), (pts, hist)
    for t, v in pts.items():
        assert abs(v - round(hist[t]["mean_co2"], 3)) < 1e-6, (t, v, hist[t])
    log(f"chart of the day: {len(pts)} hourly means from the history (every_s 3600)")
    st, body = api.get("/api/v1/series", tok, site=SITE, measurement="alarm", metric="value",
                       every="1h", **{"from": str(DAY), "to": str(DAY + DAY_MS)})
    assert st == 200 and "hourly_before" not in body, body
    assert [p[1] for s in body["series"] for p in s["points"]] == [1350.0], body
    log("a chart of the alarm values of that day: from the alarm records, kept for ever")
    assert hub.stop() == 0, hub.tail()


if __name__ == "__main__":
    run_test(test_hub_retention)
    print("1 passed, 0 failed")
