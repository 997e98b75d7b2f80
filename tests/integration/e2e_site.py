"""End to end: a site with Modbus RTU (socat PTY pair) and TCP meters runs
for a bounded time through care-sim -> care-edge -> Mosquitto -> care-hub ->
InfluxDB.

Asserts:
- InfluxDB holds exactly the readings care-edge reports it delivered, per device;
- a silent meter and a meter answering exceptions on the same RTU bus do not
  reduce the healthy RTU meters' reading count (compared with the schedule
  and with a healthy TCP meter on the same interval);
- a malformed payload and a cross-site payload published by hand are rejected
  by the hub, logged with topic and reason, counted, and good data keeps flowing;
- every payload the edge published validates against its JSON Schema
  (python3-jsonschema, independent of the C codec);
- the gateway's birth and goodbye reach InfluxDB as carehub_status points.
"""
import json
import os
import sys
import time

import jsonschema

sys.path.insert(0, os.path.dirname(__file__))
from harness import (SRC, Influx, Mosquitto, World, free_port, log, run_test,  # noqa: E402
                     seq_coverage, wait_for)

RUN_S = 8
INTERVAL_MS = 500
DB = "carehub"
HEALTHY_RTU = ["th-101", "th-102", "co2-nap"]
FAULTY_RTU = ["th-silent", "th-exc"]
TCP = ["air-hall", "air-nursery", "gas-kitchen"]


def start_site(w):
    influx = Influx(w)
    mqtt = Mosquitto(w)
    edge_pty, sim_pty = w.socat_pair("rs485")
    modbus_port = free_port()
    sim_cfg = w.write("sim.yaml", f"""
seed: 7
endpoints:
  - {{id: lan, tcp: "127.0.0.1:{modbus_port}"}}
  - {{id: rs485, rtu: "{sim_pty}", baud: 9600}}
slaves:
  - {{name: th-101, endpoint: rs485, unit: 1, model: jxct-th}}
  - {{name: th-102, endpoint: rs485, unit: 2, model: xy-md02}}
  - {{name: co2-nap, endpoint: rs485, unit: 254, model: co2-s8}}
  - {{name: th-silent, endpoint: rs485, unit: 3, model: jxct-th}}
  - {{name: th-exc, endpoint: rs485, unit: 4, model: jxct-th}}
  - {{name: air-hall, endpoint: lan, unit: 1, model: air-board}}
  - {{name: air-nursery, endpoint: lan, unit: 2, model: air-board}}
  - {{name: gas-kitchen, endpoint: lan, unit: 3, model: gas-lel}}
scenario:
  - {{at: 0s, slave: th-silent, fault: silent}}
  - {{at: 0s, slave: th-exc, fault: exception}}
""")
    sim = w.spawn("care-sim", [w.bin("care-sim"), "-c", sim_cfg])
    sim.wait_log("care-sim ready", 10)

    hub_cfg = w.write("hub.yaml", f"""
mqtt:
  broker: {mqtt.uri}
  client_id: hub-e2e
influx:
  url: {influx.url}
  version: 1
  database: {DB}
  flush_interval: 300ms
spool: {{dir: hub-spool}}
self_metrics_interval: 1s
""")
    hub = w.spawn("care-hub", [w.bin("care-hub"), "-c", hub_cfg])

    devices = "\n".join(
        [f"  - {{id: {d}, bus: rs485-1, slave: {s}, profile: {p}, interval: {INTERVAL_MS}ms, room: r{i}}}"
         for i, (d, s, p) in enumerate([("th-101", 1, "jxct-th"), ("th-102", 2, "xy-md02"),
                                        ("co2-nap", 254, "co2-s8"), ("th-silent", 3, "jxct-th"),
                                        ("th-exc", 4, "jxct-th")])] +
        [f"  - {{id: {d}, bus: lan, slave: {s}, profile: {p}, interval: {INTERVAL_MS}ms, room: t{i}}}"
         for i, (d, s, p) in enumerate([("air-hall", 1, "air-board"), ("air-nursery", 2, "air-board"),
                                        ("gas-kitchen", 3, "gas-lel")])])
    site_cfg = w.write("site.yaml", f"""
site: e2e-site
gateway: gw-1
uplink:
  broker: {mqtt.uri}
  batch_interval: 200ms
spool: {{dir: "{w.path('spool')}"}}
profiles: [{SRC}/deploy/profiles]
buses:
  - {{id: rs485-1, type: modbus-rtu, device: "{edge_pty}", baud: 9600, timeout: 150ms, backoff_max: 2s}}
  - {{id: lan, type: modbus-tcp, host: 127.0.0.1, port: {modbus_port}, timeout: 500ms}}
devices:
{devices}
self_metrics_interval: 1s
""")
    return influx, mqtt, hub, site_cfg


def counts_per_device(influx, meas):
    rows = influx.series(f'SELECT count(*) FROM "{meas}" GROUP BY "device"', DB)
    return {r["device"]: max(v for k, v in r.items() if k.startswith("count_") and v is not None)
            for r in rows}


BAD_PAYLOAD = '{"schema": "carehub/telemetry/1", "site": '


def validate_capture(path):
    schemas = {}
    for kind in ("telemetry", "status"):
        with open(os.path.join(SRC, "schemas", f"{kind}.schema.json")) as f:
            schemas[kind] = jsonschema.Draft7Validator(json.load(f))
    n = {"telemetry": 0, "status": 0}
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            topic, _, payload = line.partition("\t")
            kind = topic.split("/")[-1]
            if kind not in schemas or not topic.startswith("carehub/v1/e2e-site/gw-1/") or \
                    payload == BAD_PAYLOAD:
                continue  # the hand-made bad payloads
            doc = json.loads(payload)
            errs = list(schemas[kind].iter_errors(doc))
            assert not errs, f"{topic}: {payload[:200]} does not validate: {errs[0].message}"
            n[kind] += 1
    return n


def test_e2e_site(w):
    influx, mqtt, hub, site_cfg = start_site(w)
    capture = mqtt.subscribe("carehub/v1/#", "capture")
    stats_path = w.path("edge-stats.json")
    edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", site_cfg, "--stats-file", stats_path])
    edge.wait_log(r"connected to", 10)

    time.sleep(RUN_S / 2)
    # hostile input, by hand, while good data flows
    mqtt.publish("carehub/v1/e2e-site/gw-1/telemetry", BAD_PAYLOAD)
    mqtt.publish("carehub/v1/other-site/gw-9/telemetry", json.dumps({
        "schema": "carehub/telemetry/1", "site": "e2e-site", "gateway": "gw-1", "seq": 1,
        "ts": int(time.time() * 1000), "readings": [{
            "device": "th-101", "measurement": "environment", "ts": int(time.time() * 1000),
            "quality": "good", "metrics": {"temperature": 99.9}}]}))
    hub.wait_log(r"rejected", 5)
    before = counts_per_device(influx, "environment")
    time.sleep(RUN_S / 2)
    assert edge.alive(), edge.tail()
    rc = edge.stop()
    assert rc == 0, f"care-edge exit {rc}\n{edge.tail()}"
    with open(stats_path) as f:
        stats = json.load(f)
    # what the edge produced: every successful poll is one reading in the spool
    delivered = {d: s["polls_ok"] for d, s in stats["devices"].items()}
    log(f"edge produced: {delivered}")

    # InfluxDB ends with exactly what the edge says it delivered
    def settled():
        got = {}
        for meas in ("environment", "safety"):
            got.update(counts_per_device(influx, meas))
        want = {d: n for d, n in delivered.items() if n > 0}
        return got if got == want else None
    try:
        got = wait_for("InfluxDB to hold exactly the delivered readings", settled, 15, 0.5)
    except AssertionError:
        got = {}
        for meas in ("environment", "safety"):
            got.update(counts_per_device(influx, meas))
        raise AssertionError(f"InfluxDB {got} != edge delivered {delivered}")
    log(f"InfluxDB holds: {got}")

    # every reading the edge numbered is stored exactly once: 1..last_seq, no gap
    cov = seq_coverage(influx, DB, "gw-1")
    assert cov == (stats["last_seq"], stats["last_seq"], 1, stats["last_seq"]), \
        f"seq coverage (count, distinct, min, max) {cov}, edge's last seq {stats['last_seq']}"
    log(f"readings 1..{stats['last_seq']} stored once each")

    # good data kept flowing after the bad payloads
    for d in HEALTHY_RTU + ["air-hall", "air-nursery"]:
        assert got[d] > before.get(d, 0), f"{d}: no readings after the bad payloads"

    # faulty meters: nothing stored, failures counted; healthy neighbours unharmed
    for d in FAULTY_RTU:
        assert delivered[d] == 0 and stats["devices"][d]["polls_failed"] >= 2, stats["devices"][d]
    expected = RUN_S * 1000 // INTERVAL_MS
    for d in HEALTHY_RTU:
        assert got[d] >= expected - 2, f"{d}: {got[d]} readings, schedule gives ~{expected}"
        assert got[d] >= got["air-hall"] - 1, f"{d}: {got[d]} < TCP meter's {got['air-hall']}"
    out = edge.output()
    assert "[poller:th-silent] offline after" in out and "timeout" in out
    assert "[poller:th-exc] offline after" in out and "exception" in out

    # the hub said what it rejected and why, and counted it
    hub_out = hub.output()
    assert "carehub/v1/e2e-site/gw-1/telemetry" in hub_out and "rejected" in hub_out
    assert "carehub/v1/other-site/gw-9/telemetry" in hub_out
    hub.stop()
    hub_out = hub.output()
    assert "site_mismatch" in hub_out, hub_out[-2000:]
    hubm = influx.series('SELECT last(*) FROM "carehub_hub"', DB)
    assert hubm, "no hub self-metrics in InfluxDB"
    rej = {k: v for k, v in hubm[0].items() if k.startswith("last_rejected") and v}
    assert sum(rej.values()) >= 2, f"hub counted rejections {rej}"
    log(f"hub rejections counted: {rej}")

    # gateway presence: birth and goodbye
    st = influx.series('SELECT "online" FROM "carehub_status" WHERE "gateway" = \'gw-1\'', DB)
    assert [r["online"] for r in st][:1] == [True] and st[-1]["online"] is False, st

    # every payload the edge published validates against the schema files
    time.sleep(0.5)
    capture.stop()
    n = validate_capture(capture.logpath)
    assert n["telemetry"] >= RUN_S and n["status"] >= 2, n
    log(f"contract: {n['telemetry']} telemetry and {n['status']} status payloads validate")


if __name__ == "__main__":
    run_test(test_e2e_site)
    print("e2e_site: 1 passed, 0 failed")
