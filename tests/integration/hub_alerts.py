#!/usr/bin/env python3
"""care-hub stores alarm transitions (issue 4) in real InfluxDB 1.x, taken
from real Mosquitto.

- every example alert in schemas/examples lands as one point of measurement
  "alarm": tags site gateway alarm_id rule device room bed resident priority
  state event (empty ones left out), fields value (float), metric, escalation
  (integer), latched (boolean), message, raised/acked/cleared/shelved_until_ms
  (integers, only when set), by, group; time = ts_ms;
- text with quotes, backslashes, commas, equals signs, spaces and Chinese
  (messages and display names) comes back from InfluxDB exactly as it was
  sent; kind is a tag;
- the same alert delivered again (QoS 1 redelivery) makes no second point;
- bad alerts (broken contract, wrong site) are refused, logged naming the
  field and counted in carehub_hub, while good ones still land;
- commands on .../cmd/... are not data: neither stored nor counted as errors.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import Influx, Mosquitto, log, run_test, wait_for  # noqa: E402

SRC = os.environ.get("CAREHUB_SRC", os.path.join(os.path.dirname(__file__), "../.."))
EXAMPLES = os.path.join(SRC, "schemas", "examples")
DB = "carehub_alerts"
TAGS = ("site", "gateway", "alarm_id", "rule", "device", "room", "bed", "resident", "priority",
        "state", "event", "kind")
INT_FIELDS = ("escalation", "raised_ms", "acked_ms", "cleared_ms", "shelved_until_ms", "located_ms")
# display names: any UTF-8 (alert-wandering-names.json has Chinese, spaces,
# commas, '=', quotes and a backslash), stored as fields and read back as sent
STR_FIELDS = ("metric", "message", "by", "group", "site_name", "room_name", "bed_name",
              "resident_name", "device_name")


def example(name):
    with open(os.path.join(EXAMPLES, name), encoding="utf-8") as f:
        return json.load(f)


def topic(alert, kind="alert"):
    return f"carehub/v1/{alert['site']}/{alert['gateway']}/{kind}"


def expected_point(a):
    """The point the contract says an alert becomes: (time, tags, fields)."""
    tags = {k: a[k] for k in TAGS if a.get(k)}
    fields = {"escalation": a["escalation"], "latched": a["latched"]}
    if "value" in a:
        fields["value"] = float(a["value"])
    for k in STR_FIELDS:
        if a.get(k):
            fields[k] = a[k]
    for k in INT_FIELDS[1:]:
        if a.get(k):
            fields[k] = a[k]
    if a.get("seq"):  # the gateway's alert number ("oldest" is not stored)
        fields["alert_seq"] = a["seq"]
    return a["ts_ms"], tags, fields


def alarm_points(influx):
    """Every stored alarm point as (time, tags, fields), fields without nulls."""
    out = []
    for row in influx.series('SELECT * FROM "alarm" GROUP BY *', DB):
        t = row.pop("time")
        row.pop("_measurement")
        tags = {k: row.pop(k) for k in TAGS if k in row}
        tags = {k: v for k, v in tags.items() if v != ""}  # GROUP BY * says "" for no tag
        fields = {k: v for k, v in row.items() if v is not None}
        out.append((t, tags, fields))
    return out


def count_points(influx):
    rows = influx.series('SELECT count("latched") FROM "alarm"', DB)
    return rows[0]["count"] if rows else 0


def hub_config(w, mqtt, influx):
    return w.write("hub.yaml", f"""mqtt:
  broker: {mqtt.uri}
  client_id: hub-alerts
influx:
  url: {influx.url}
  database: {DB}
  flush_interval: 200ms
  max_backoff: 1s
spool:
  dir: hub-spool
self_metrics_interval: 1s
""")


def test_hub_alerts(w):
    influx = Influx(w)
    mqtt = Mosquitto(w)
    hub = w.spawn("care-hub", [w.bin("care-hub"), "-c", hub_config(w, mqtt, influx)])
    hub.wait_log(r"subscribed to carehub/v1/\+/\+/#")

    # every good example, plus one whose text needs escaping everywhere
    alerts = [example(n) for n in sorted(os.listdir(EXAMPLES))
              if n.startswith("alert-") and n.endswith(".json")]
    tricky = example("alert-ack.json")
    tricky.update(ts_ms=tricky["ts_ms"] + 1, acked_ms=tricky["ts_ms"] + 1,
                  message='CO2 "1250" ppm, a=b \\ C:\\temp\\ 超标 \\',
                  by='console:王 护士 "夜班", x=y')
    alerts.append(tricky)
    assert len(alerts) >= 10, [a["alarm_id"] for a in alerts]
    for a in alerts:
        mqtt.publish(topic(a), json.dumps(a, ensure_ascii=False))
    wait_for(f"{len(alerts)} alarm points", lambda: count_points(influx) == len(alerts), 30)

    stored = sorted(alarm_points(influx), key=lambda p: (p[0], sorted(p[1].items())))
    want = sorted((expected_point(a) for a in alerts), key=lambda p: (p[0], sorted(p[1].items())))
    for got, exp in zip(stored, want):
        assert got == exp, f"\n got  {got}\n want {exp}"
    log(f"{len(stored)} alarm points with exactly the tags and fields of their alerts")

    types = {r["fieldKey"]: r["fieldType"] for r in influx.series('SHOW FIELD KEYS FROM "alarm"', DB)}
    want_types = {"value": "float", "escalation": "integer", "latched": "boolean",
                  "metric": "string", "message": "string", "by": "string", "group": "string",
                  "raised_ms": "integer", "acked_ms": "integer", "cleared_ms": "integer",
                  "shelved_until_ms": "integer", "alert_seq": "integer",
                  "located_ms": "integer", "site_name": "string", "room_name": "string",
                  "bed_name": "string", "resident_name": "string", "device_name": "string"}
    assert types == want_types, types
    tag_keys = {r["tagKey"] for r in influx.series('SHOW TAG KEYS FROM "alarm"', DB)}
    assert tag_keys == set(TAGS), tag_keys

    # a redelivery (same alert again), then a marker: once the marker is
    # stored, the duplicate before it was handled too (one broker connection
    # to the hub, one hub thread, the writer in order)
    raise_ = example("alert-raise.json")
    mqtt.publish(topic(raise_), json.dumps(raise_, ensure_ascii=False))
    mqtt.publish(topic(raise_), json.dumps(raise_, ensure_ascii=False))
    marker = dict(raise_, ts_ms=raise_["ts_ms"] + 7, raised_ms=raise_["ts_ms"] + 7)
    mqtt.publish(topic(marker), json.dumps(marker, ensure_ascii=False))
    wait_for("the marker alert", lambda: count_points(influx) == len(alerts) + 1, 30)
    same = influx.series(f'SELECT count("latched") FROM "alarm" WHERE "alarm_id" = '
                         f'\'{raise_["alarm_id"]}\' AND "event" = \'raise\' AND '
                         f'time = {raise_["ts_ms"]}ms GROUP BY *', DB)
    series = [r for r in same if r["priority"] == raise_["priority"] and r["room"] == raise_["room"]]
    assert len(series) == 1 and series[0]["count"] == 1, same
    log("a redelivered alert overwrote itself: no second point")

    # bad alerts: refused, named, counted; a good one after them still lands
    mismatch = dict(raise_, alarm_id="co2-high:env-999")
    mqtt.publish(topic(mismatch), json.dumps(mismatch, ensure_ascii=False))
    newline = dict(raise_, message="two\nlines")
    mqtt.publish(topic(newline), json.dumps(newline, ensure_ascii=False))
    mqtt.publish(topic(raise_).replace("/gw-01/", "/gw-02/"), json.dumps(raise_, ensure_ascii=False))
    mqtt.publish(topic(raise_), '{"schema":"carehub/alert/1",')
    # commands are for gateways: ignored, not errors
    cmd = example("command-ack.json")
    mqtt.publish(topic(raise_, "cmd/ack"), json.dumps(cmd, ensure_ascii=False))
    mqtt.publish(topic(raise_, "cmd/shelve"), "not even JSON")
    after = dict(raise_, state="rtn_unack", event="rtn", value=930.5, ts_ms=raise_["ts_ms"] + 60000,
                 cleared_ms=raise_["ts_ms"] + 60000)
    mqtt.publish(topic(after), json.dumps(after, ensure_ascii=False))
    wait_for("the good alert after the bad ones", lambda: count_points(influx) == len(alerts) + 2, 30)
    hub.wait_log(r"rejected: invalid_schema: alarm_id: 'co2-high:env-999' is not rule:device")
    hub.wait_log(r"rejected: invalid_schema: message: ")
    hub.wait_log(r"\[ingest:carehub/v1/cq-yz-001/gw-02/alert\] rejected: site_mismatch: ")
    hub.wait_log(r"\[ingest:carehub/v1/cq-yz-001/gw-01/alert\] rejected: invalid_json: ")

    def counters():
        rows = influx.series('SELECT last(*) FROM "carehub_hub"', DB)
        r = rows[0] if rows else {}
        # one self-metrics snapshot may fall between two of the messages:
        # wait for the one that has seen them all
        want = {"last_rejected_invalid_schema": 2, "last_rejected_site_mismatch": 1,
                "last_rejected_invalid_json": 1, "last_messages_ignored": 2}
        return r if all(r.get(k) == v for k, v in want.items()) else None
    m = wait_for("the rejections in carehub_hub", counters, 20)
    assert m["last_rejected_site_mismatch"] == 1, m
    assert m["last_rejected_invalid_json"] == 1, m
    assert m["last_rejected_unknown_kind"] == 0, m       # cmd/... is not an unknown kind
    assert m["last_rejected_invalid_topic"] == 0 and m["last_rejected_oversize"] == 0, m
    out = hub.output()
    assert "/cmd/" not in "".join(l for l in out.splitlines() if "rejected" in l), out
    assert count_points(influx) == len(alerts) + 2
    log("bad alerts refused and counted, commands ignored, good alerts still stored")

    assert hub.stop() == 0, hub.tail()
    assert " dropped=0 " in hub.output(), hub.tail()


if __name__ == "__main__":
    run_test(test_hub_alerts)
    print("1 passed, 0 failed")
