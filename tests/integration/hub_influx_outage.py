#!/usr/bin/env python3
"""care-hub's spool through InfluxDB outages (issue 3, test 4), against real
Mosquitto, InfluxDB 1.x and care-hub, with telemetry published by hand
(mosquitto_pub; readings numbered as care-edge numbers them).

a. InfluxDB is stopped under load (messages published continuously) and
   started again: every reading number is stored exactly once, and the
   hub's self-metrics show the backlog it held in its spool meanwhile.
b. A field type conflict (an integer field written to InfluxDB by hand
   before the hub writes the same field as a float): the refused batch lands
   in the dead-letter file with InfluxDB's reason, the rest is written, and
   the dead_letter_* self-metrics count it.
c. The hub is SIGKILLed while InfluxDB is down, after it accepted a backlog,
   and started again under another MQTT client id (so that the broker cannot
   redeliver anything to it): everything it had accepted is written from its
   spool once InfluxDB is back.
"""
import json
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Influx, Mosquitto, log, run_test, seq_coverage, wait_for  # noqa: E402

DB = "carehub_outage"
SITE = "cq-outage"


def messages(gateway, count, per_msg=2, measurement="outage", first_seq=1, special=None):
    """count telemetry messages numbering readings from first_seq; special
    maps a message index to (measurement, readings) for that message."""
    base = int(time.time() * 1000) - 60000
    seq = first_seq
    out = []
    for i in range(count):
        meas, n = special.get(i, (measurement, per_msg)) if special else (measurement, per_msg)
        out.append(json.dumps({
            "schema": "carehub/telemetry/1", "site": SITE, "gateway": gateway, "seq": seq,
            "ts": base + seq, "readings": [
                {"device": "env-101", "measurement": meas, "room": "101", "ts": base + seq + k,
                 "quality": "good", "metrics": {"temperature": 20.5 + k, "humidity": 50.0}}
                for k in range(n)]}))
        seq += n
    return out, seq - first_seq, base


def publish(mqtt, gateway, payloads, interval):
    """Publishes payloads (QoS 1) through one mosquitto_pub, interval s apart."""
    topic = f"carehub/v1/{SITE}/{gateway}/telemetry"
    p = subprocess.Popen(["mosquitto_pub"] + mqtt.client_args() + ["-q", "1", "-t", topic, "-l"],
                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        for m in payloads:
            p.stdin.write(m.encode() + b"\n")
            p.stdin.flush()
            time.sleep(interval)
        p.stdin.close()
        assert p.wait(20) == 0, "mosquitto_pub failed"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)


def hub_config(w, name, mqtt, influx, client_id):
    return w.write(name, f"""mqtt:
  broker: {mqtt.uri}
  client_id: {client_id}
influx:
  url: {influx.url}
  database: {DB}
  batch_size: 200
  flush_interval: 200ms
  timeout: 2s
  max_backoff: 1s
  shutdown_timeout: 2s
spool:
  dir: hub-spool
  commit_interval: 200ms
self_metrics_interval: 1s
log_level: debug
""")


def restart_influx(w, influx, name):
    influx.proc = w.spawn(name, influx.proc.argv)
    wait_for("InfluxDB back", influx.ping, 30)


def exactly_once(influx, gateway, n, timeout=30):
    want = (n, n, 1, n)
    try:
        return wait_for(f"{gateway}: readings 1..{n} stored exactly once",
                        lambda: seq_coverage(influx, DB, gateway) == want, timeout, 0.3)
    except AssertionError:
        log(f"{gateway}: have {seq_coverage(influx, DB, gateway)}, want {want}")
        raise


def hub_metric(influx, expr):
    rows = influx.series(f'SELECT {expr} FROM "carehub_hub"', DB)
    return rows[0] if rows else {}


def test_hub_influx_outage(w):
    t_start = time.monotonic()
    influx = Influx(w)
    mqtt = Mosquitto(w, persistent=True)
    hub = w.spawn("care-hub", [w.bin("care-hub"), "-c",
                               hub_config(w, "hub.yaml", mqtt, influx, "hub-outage-1")])
    hub.wait_log(r"subscribed to carehub/v1/\+/\+/#")

    # a. InfluxDB stopped under load, then started again
    msgs, n_a, _ = messages("gw-a", 400)
    pub = threading.Thread(target=publish, args=(mqtt, "gw-a", msgs, 0.01))
    t0 = time.monotonic()
    pub.start()
    time.sleep(1.0)
    influx.proc.stop()
    t_down = time.monotonic()
    hub.wait_log(r"write of \d+ points? failed: .*retry in", 10)
    time.sleep(2.0)
    restart_influx(w, influx, "influxd-2")
    outage_s = time.monotonic() - t_down
    pub.join(30)
    assert not pub.is_alive()
    log(f"a: {len(msgs)} messages ({n_a} readings) published in {time.monotonic() - t0:.1f} s, "
        f"InfluxDB down for {outage_s:.1f} s")
    exactly_once(influx, "gw-a", n_a)
    hub.wait_log(r"succeeded after \d+ failed attempts", 10)
    q = ('max("spool_pending") AS p, max("spool_pending_bytes") AS b, '
         'max("spool_disk_bytes") AS disk, last("spool_dropped") AS d')
    row = wait_for("the outage's self-metrics", lambda: hub_metric(influx, q).get("p") and
                   hub_metric(influx, q), 10)
    assert row["d"] == 0, row
    log(f"a: PASS: readings 1..{n_a} exactly once; the spool held up to {row['p']} records "
        f"({row['b']} bytes of line protocol, {row['disk']} bytes on disk) during the outage")

    # b. a field type conflict: pre-write an integer "temperature" in measurement
    # "conflict", then a message whose reading writes it as a float
    msgs, n_b, base = messages("gw-b", 30, special={14: ("conflict", 1)})
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-XPOST",
                        f"{influx.url}/write?db={DB}&precision=ms", "--data-binary",
                        f"conflict,source=curl temperature=1i {base}"],
                       capture_output=True, text=True, timeout=10)
    assert r.stdout == "204", r
    conflict_seq = 1 + 14 * 2
    publish(mqtt, "gw-b", msgs, 0.02)
    dead = w.path("dead-letter.lp")  # the default: beside the spool directory
    hub.wait_log(r"set aside in .*dead-letter\.lp: HTTP 400: partial write: field type conflict", 20)
    with open(dead) as f:
        text = f.read()
    heads = [ln for ln in text.splitlines() if ln.startswith("#")]
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert len(heads) == 1, text
    assert re.match(r"# \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z HTTP 400: partial write: field type "
                    r'conflict: input field "temperature" on measurement "conflict" is type float, '
                    r"already exists as type integer dropped=1$", heads[0]), heads[0]
    bad = [ln for ln in lines if ln.startswith("conflict,")]
    assert len(bad) == 1 and f"seq={conflict_seq}" in bad[0], lines
    # the rest is written: every reading but the refused one
    want = (n_b - 1, n_b - 1, 1, n_b)
    wait_for("gw-b: every reading but the refused one",
             lambda: seq_coverage(influx, DB, "gw-b") == want, 20, 0.3)
    got = influx.series(f'SELECT "seq" FROM "conflict" WHERE "gateway" = \'gw-b\'', DB)
    assert got == [], got
    def dl_counted():
        r = hub_metric(influx, 'last("dead_letter_batches") AS b, last("dead_letter_lines") AS l')
        return r if r.get("b") == 1 else None
    m = wait_for("dead_letter_* in carehub_hub", dl_counted, 10)
    assert m["l"] == len(lines), (m, len(lines))
    log(f"b: PASS: a batch of {len(lines)} lines in the dead letter with InfluxDB's reason "
        f"(dead_letter_batches=1, dead_letter_lines={m['l']}); {n_b - 1} of {n_b} readings "
        f"written")

    # c. SIGKILL while InfluxDB is down, then a restart under another client id
    influx.proc.stop()
    msgs, n_c, _ = messages("gw-c", 200)
    last_seq = n_c - 1  # the last message's seq (2 readings each)
    publish(mqtt, "gw-c", msgs, 0.005)
    hub.wait_log(rf"\[ingest:carehub/v1/{SITE}/gw-c/telemetry\] seq {last_seq}: 2 readings", 20)
    hub.kill()
    log(f"c: care-hub SIGKILLed after accepting {len(msgs)} messages ({n_c} readings) "
        f"with InfluxDB down")
    hub2 = w.spawn("care-hub-2", [w.bin("care-hub"), "-c",
                                  hub_config(w, "hub2.yaml", mqtt, influx, "hub-outage-2")])
    rec = hub2.wait_log(r"telemetry: (\d+) records pending", 10)
    hub2.wait_log(r"subscribed to", 10)
    restart_influx(w, influx, "influxd-3")
    t1 = time.monotonic()
    exactly_once(influx, "gw-c", n_c)
    log(f"c: PASS: {rec.group(1)} records recovered from the spool; readings 1..{n_c} exactly "
        f"once, {time.monotonic() - t1:.1f} s after InfluxDB was back")
    exactly_once(influx, "gw-a", n_a, 5)  # resent records overwrite themselves

    assert hub2.stop() == 0, hub2.tail()
    out = hub2.output()
    assert "final counters:" in out and " dropped=0 " in out, hub2.tail()
    log(f"hub_influx_outage: {time.monotonic() - t_start:.1f} s")


if __name__ == "__main__":
    run_test(test_hub_influx_outage)
    print("1 passed, 0 failed")
