#!/usr/bin/env python3
"""care-hub against real Mosquitto and InfluxDB 1.x.

- good payloads (the schema examples) land as points with the right tags and
  float fields; the gateway status becomes a carehub_status point;
- one bad message per rejection reason: each is logged naming the reason and
  counted in the carehub_hub self-metrics, and ingest goes on;
- InfluxDB stopped and started again: nothing spooled meanwhile is lost;
- SIGTERM: exit 0 with the final counters logged;
- a bad configuration: exit 2, naming file, line and key.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import Influx, Mosquitto, log, run_test, wait_for  # noqa: E402

EXAMPLES = os.path.join(os.environ.get("CAREHUB_SRC", os.path.join(os.path.dirname(__file__), "../..")),
                        "schemas", "examples")
DB = "carehub_smoke"
REASONS = ["invalid_topic", "oversize", "unknown_kind", "invalid_json", "invalid_schema",
           "site_mismatch"]


def example(name):
    with open(os.path.join(EXAMPLES, name)) as f:
        return json.load(f)


def count(influx, measurement, field):
    rows = influx.series(f'SELECT count("{field}") FROM "{measurement}"', DB)
    return rows[0]["count"] if rows else 0


def hub_config(w, mqtt, influx):
    return w.write("hub.yaml", f"""mqtt:
  broker: {mqtt.uri}
  client_id: hub-smoke
influx:
  url: {influx.url}
  database: {DB}
  flush_interval: 200ms
  max_backoff: 1s
spool:
  dir: hub-spool
self_metrics_interval: 1s
""")


def test_hub_smoke(w):
    influx = Influx(w)
    mqtt = Mosquitto(w)
    hub = w.spawn("care-hub", [w.bin("care-hub"), "-c", hub_config(w, mqtt, influx)])
    hub.wait_log(r"subscribed to carehub/v1/\+/\+/#")

    # good payloads
    status = example("status-online.json")
    mqtt.publish("carehub/v1/cq-yz-001/gw-01/status", json.dumps(status), retain=True)
    mqtt.publish("carehub/v1/cq-yz-001/gw-01/telemetry", json.dumps(example("telemetry.json")))
    mqtt.publish("carehub/v1/cq-yz-001/gw-02/telemetry",
                 json.dumps(example("telemetry-historical.json")))
    hub.wait_log(r"\[presence:cq-yz-001/gw-01\] online \(version 0\.1\.0\)")
    wait_for("the telemetry points", lambda: count(influx, "vitals", "heart_rate") == 1, 20)

    env = influx.series('SELECT * FROM "environment" GROUP BY *', DB)
    assert len(env) == 1, env
    row = env[0]
    assert row["time"] == 1763850000100, row
    assert (row["site"], row["gateway"], row["device"], row["room"], row["quality"]) == \
        ("cq-yz-001", "gw-01", "env-101", "101", "good"), row
    assert (row["temperature"], row["humidity"]) == (23.4, 51), row
    aq = influx.series('SELECT * FROM "air_quality" GROUP BY *', DB)[0]
    assert "room" not in aq and aq["pm2_5"] == 12 and aq["quality"] == "uncertain", aq
    types = {(r["_measurement"], r["fieldKey"]): r["fieldType"]
             for r in influx.series("SHOW FIELD KEYS", DB)}
    assert types[("air_quality", "pm2_5")] == "float", types      # 12 in JSON, float in InfluxDB
    st = influx.series('SELECT * FROM "carehub_status" GROUP BY *', DB)
    assert len(st) == 1 and st[0]["online"] is True and st[0]["version"] == "0.1.0", st
    assert st[0]["time"] == status["ts"], st

    # one bad message per reason; ingest goes on after them
    big = w.write("big.json", " " * (1024 * 1024 + 1))
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mqtt.port), "-q", "1",
                    "-t", "carehub/v1/cq-yz-001/gw-01/telemetry", "-f", big], check=True,
                   timeout=10)
    bad = example("telemetry.json")
    bad["readings"][0]["metrics"]["co2"] = "412"
    mqtt.publish("carehub/v1/cq yz/gw-01/telemetry", "{}")
    mqtt.publish("carehub/v1/cq-yz-001/gw-01/alarm", "{}")  # no such kind
    mqtt.publish("carehub/v1/cq-yz-001/gw-01/telemetry", '{"schema":')
    mqtt.publish("carehub/v1/cq-yz-001/gw-01/telemetry", json.dumps(bad))
    mqtt.publish("carehub/v1/other-site/gw-01/telemetry", json.dumps(example("telemetry.json")))
    mqtt.publish("carehub/v1/cq-yz-001/gw-01/cmd/ack", "{}")  # not for the hub: ignored
    for reason in REASONS:
        hub.wait_log(rf"\] rejected: {reason}: ")
    assert "readings[0].metrics.co2: not a finite number" in hub.output()

    def self_metrics():
        rows = influx.series('SELECT last(*) FROM "carehub_hub"', DB)
        r = rows[0] if rows else {}
        return all(r.get(f"last_rejected_{x}") == 1 for x in REASONS) and r
    m = wait_for("rejections in carehub_hub", self_metrics, 20)
    assert m["last_telemetry_ok"] == 2 and m["last_readings"] == 3, m
    assert m["last_gateways_online"] == 1, m
    assert m["last_dead_letter_batches"] == 0 and m["last_spool_dropped"] == 0, m
    assert "last_spool_pending" in m and m["last_spool_disk_bytes"] > 0, m
    types = {(r["_measurement"], r["fieldKey"]): r["fieldType"]
             for r in influx.series("SHOW FIELD KEYS", DB)}
    assert types[("carehub_hub", "messages_received")] == "integer", types

    # InfluxDB down: the hub spools, retries, keeps the points in order, loses none
    influx.proc.stop()
    seq = example("telemetry.json")
    for i in range(10):
        seq["seq"] = 100 + i
        seq["readings"][0]["measurement"] = "outage"
        seq["readings"][0]["ts"] = 1763850100000 + i
        mqtt.publish("carehub/v1/cq-yz-001/gw-01/telemetry", json.dumps(seq))
    hub.wait_log(r"write of \d+ points? failed: .*retry in", 20)
    influx.proc = w.spawn("influxd-again", influx.proc.argv)
    wait_for("InfluxDB back", influx.ping, 30)
    hub.wait_log(r"succeeded after \d+ failed attempts", 30)
    wait_for("the points queued during the outage",
             lambda: count(influx, "outage", "temperature") == 10, 20)

    assert hub.stop() == 0, hub.tail()
    out = hub.output()
    assert "final counters:" in out and " dropped=0 " in out, hub.tail()
    log("hub stopped cleanly with final counters")

    # a bad configuration names file, line and key, and exits 2
    head = "mqtt:\n  broker: tcp://127.0.0.1:1\n  client_id: hub\ninflux:\n  url: http://127.0.0.1:1\n"
    for name, rest, want in (("range.yaml", "  database: x\n  batch_size: 0\n", "range.yaml:7:"),
                             ("nodb.yaml", "  version: 1\n", "nodb.yaml:5:")):
        r = subprocess.run([w.bin("care-hub"), "-c", w.write(name, head + rest), "--check"],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 2, r
        assert want in r.stderr, r.stderr
    assert "batch_size" in r.stderr or "database" in r.stderr, r.stderr
    example_cfg = os.path.join(EXAMPLES, "..", "..", "deploy", "hub", "hub.yaml")
    r = subprocess.run([w.bin("care-hub"), "-c", example_cfg, "--check"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0, r.stderr


if __name__ == "__main__":
    run_test(test_hub_smoke)
    print("1 passed, 0 failed")
