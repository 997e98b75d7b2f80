"""Nothing is lost through a broker outage (issue 3, tests 1, 2 and 5).

1. The broker is stopped for a while under load and started again: InfluxDB
   ends with exactly the readings care-edge produced — every reading number
   1..last present once, per-device counts equal to the polls that succeeded.
2. As 1, but care-edge is SIGKILLed while the broker is down and started
   again on the same spool: still exactly complete, and the readings held
   across the kill arrive marked historical.
5. The spool's bound is reached during the outage: the oldest telemetry is
   dropped, the number of dropped readings care-edge reports equals the
   readings missing in InfluxDB are exactly among those dropped, all of the
   dropped that were never sent are missing (a record is freed only when the
   hub acknowledges storing it, so the bound may also drop records sent and
   stored but not acknowledged yet: counted apart), and every alert raised
   during the outage is kept and stored.
"""
import json
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (SRC, Influx, Mosquitto, free_port, log, ranges, run_test,  # noqa: E402
                     seq_coverage, wait_for)

DB = "carehub"
N_DEV = 10


def setup(w, gateway, spool_extra="", site_extra=""):
    influx = Influx(w)
    mqtt = Mosquitto(w, persistent=True)
    port = free_port()
    sim_cfg = w.write("sim.yaml", f"""
seed: 11
endpoints: [{{id: lan, tcp: "127.0.0.1:{port}"}}]
slaves: [{{name: air, endpoint: lan, unit: 1, model: air-board, count: {N_DEV}}}]
""")
    w.spawn("care-sim", [w.bin("care-sim"), "-c", sim_cfg]).wait_log("care-sim ready", 10)
    hub_cfg = w.write("hub.yaml", f"""
mqtt: {{broker: "{mqtt.uri}", client_id: hub-outage}}
influx: {{url: "{influx.url}", version: 1, database: {DB}, flush_interval: 200ms}}
spool: {{dir: hub-spool}}
self_metrics_interval: 1s
ack_interval: 500ms
""")
    hub = w.spawn("care-hub", [w.bin("care-hub"), "-c", hub_cfg])
    hub.wait_log("subscribed", 10)
    devs = "\n".join(f"  - {{id: air-{i + 1:02d}, bus: lan, slave: {i + 1}, profile: air-board, "
                     f"interval: 100ms}}" for i in range(N_DEV))
    site = w.write("site.yaml", f"""
site: outage-site
gateway: {gateway}
uplink: {{broker: "{mqtt.uri}", batch_interval: 200ms, batch_max: 100}}
spool: {{dir: "{w.path('spool')}", replay_rate: 400{spool_extra}}}
profiles: [{SRC}/deploy/profiles]
buses: [{{id: lan, type: modbus-tcp, host: 127.0.0.1, port: {port}}}]
devices:
{devs}
self_metrics_interval: 1s
{site_extra}""")
    return influx, mqtt, hub, site


def outage(mqtt, edge, seconds):
    """Stops the broker under load for `seconds`, starts it again and waits
    until care-edge is connected again."""
    before = edge.output().count("connected to")
    mqtt.stop()
    edge.wait_log("connection lost", 10)
    time.sleep(seconds)
    mqtt.start()
    wait_for("care-edge to reconnect", lambda: edge.output().count("connected to") > before, 30)


def env_counts(influx):
    rows = influx.series('SELECT count("co2") FROM "environment" GROUP BY "device"', DB)
    return {r["device"]: r["count"] for r in rows}


def settle(influx, gateway, last_seq):
    want = (last_seq, last_seq, 1, last_seq)
    try:
        return wait_for("InfluxDB to hold readings 1..last exactly once",
                        lambda: seq_coverage(influx, DB, gateway) == want, 30, 0.5)
    except AssertionError:
        raise AssertionError(f"seq coverage {seq_coverage(influx, DB, gateway)} != {want}")


def test_broker_outage(w):
    influx, mqtt, hub, site = setup(w, "gw-out")
    stats = w.path("stats.json")
    edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", site, "--stats-file", stats])
    edge.wait_log("connected to", 10)
    time.sleep(2)
    outage(mqtt, edge, 4)  # ~400 readings pile up in the spool
    time.sleep(3)
    assert edge.stop() == 0, edge.tail()
    with open(stats) as f:
        st = json.load(f)
    settle(influx, "gw-out", st["last_seq"])
    produced = {d: s["polls_ok"] for d, s in st["devices"].items()}
    got = wait_for("per-device counts", lambda: env_counts(influx) == produced and produced, 10)
    log(f"broker outage: readings 1..{st['last_seq']} stored once each; per device {got}")


def test_sigkill_while_broker_down(w):
    influx, mqtt, hub, site = setup(w, "gw-kill")
    capture = mqtt.subscribe("carehub/v1/outage-site/gw-kill/telemetry", "capture")
    edge = w.spawn("care-edge-1", [w.bin("care-edge"), "-c", site])
    edge.wait_log("connected to", 10)
    time.sleep(2)
    capture.stop()  # the capture ends with the broker anyway
    mqtt.stop()
    edge.wait_log("connection lost", 10)
    time.sleep(3)
    edge.kill()  # SIGKILL: no goodbye, no flush
    log("care-edge killed while the broker was down")
    stats = w.path("stats.json")
    edge2 = w.spawn("care-edge-2", [w.bin("care-edge"), "-c", site, "--stats-file", stats])
    time.sleep(1)
    mqtt.start()
    capture = mqtt.subscribe("carehub/v1/outage-site/gw-kill/telemetry", "capture2")
    edge2.wait_log("connected to", 30)
    time.sleep(4)
    assert edge2.stop() == 0, edge2.tail()
    with open(stats) as f:
        st = json.load(f)
    settle(influx, "gw-kill", st["last_seq"])
    time.sleep(0.5)
    capture.stop()
    historical = 0
    with open(capture.logpath) as f:
        for line in f:
            doc = json.loads(line.split("\t", 1)[1])
            if doc.get("historical"):
                historical += len(doc["readings"])
    assert historical > 0, "the readings held across the kill were not marked historical"
    log(f"SIGKILL while the broker was down: readings 1..{st['last_seq']} stored once each, "
        f"{historical} of them replayed as historical")


def dropped_ids(edge):
    """Every reading number care-edge logged as dropped from its spool."""
    out = set()
    for lo, hi in re.findall(r"dropped \d+ telemetry records \(ids (\d+)\.\.(\d+)", edge.output()):
        out.update(range(int(lo), int(hi) + 1))
    return out


def test_bound_reached(w):
    # 64 KiB hold ~250 readings: a 6 s outage at 100 readings/s overflows it
    # every meter raises an alarm 4 s after start: inside the outage
    influx, mqtt, hub, site = setup(w, "gw-full", ", max_bytes: 65536", """rules:
  - {id: co2-seen, when: co2 > 0, for: 4s, priority: low, select: {profile: [air-board]}}
""")
    stats = w.path("stats.json")
    edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", site, "--stats-file", stats])
    edge.wait_log("connected to", 10)
    time.sleep(2)
    outage(mqtt, edge, 6)
    time.sleep(3)
    assert edge.stop() == 0, edge.tail()
    with open(stats) as f:
        st = json.load(f)
    dropped, last, sent = st["dropped"], st["last_seq"], st["dropped_sent"]
    assert dropped > 0, "the bound was never reached"
    logged = dropped_ids(edge)
    assert len(logged) == dropped, f"{len(logged)} numbers logged as dropped, {dropped} counted"

    # a record leaves the spool only when the hub says it stored it, so the
    # bound may drop records that were sent and stored but not acknowledged
    # yet (counted apart, as dropped_sent): what InfluxDB misses is exactly
    # among the dropped, and every dropped record never sent is missing
    def stored():
        rows = influx.series('SELECT "seq" FROM /.*/ WHERE "gateway" = \'gw-full\'', DB)
        return {int(r["seq"]) for r in rows}

    def settled():
        missing = set(range(1, last + 1)) - stored()
        return missing if missing <= logged and len(missing) >= dropped - sent else None
    try:
        missing = wait_for("the surviving readings in InfluxDB", settled, 30, 0.5)
    except AssertionError:
        missing = sorted(set(range(1, last + 1)) - stored())
        raise AssertionError(f"InfluxDB has {seq_coverage(influx, DB, 'gw-full')}, edge says "
                             f"{last} produced and {dropped} dropped ({sent} of them sent); "
                             f"missing {ranges(missing)}, logged as dropped {ranges(sorted(logged))}")
    cov = seq_coverage(influx, DB, "gw-full")
    assert cov[0] == cov[1] and cov[3] == last, cov
    assert "alert records" not in edge.output(), "alerts were dropped"
    raised = wait_for("the alerts raised during the outage in InfluxDB",
                      lambda: (lambda p: p if len(p) == N_DEV else None)(influx.series(
                          'SELECT "escalation", "device" FROM "alarm" WHERE "event" = \'raise\'', DB)), 20)
    assert sorted(r["device"] for r in raised) == [f"air-{i + 1:02d}" for i in range(N_DEV)], raised
    log(f"bound reached: {dropped} of {last} readings dropped by the edge ({sent} of them sent "
        f"but not acknowledged yet), {len(missing)} missing in InfluxDB, all among the dropped; "
        f"all {N_DEV} alerts raised during the outage kept")


if __name__ == "__main__":
    run_test(test_broker_outage)
    run_test(test_sigkill_while_broker_down)
    run_test(test_bound_reached)
    print("spool_outage: 3 passed, 0 failed")
