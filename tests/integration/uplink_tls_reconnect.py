"""The uplink over TLS, through a broker restart.

- care-edge and care-hub reach a TLS-only Mosquitto (ssl://, server
  certificate checked against the site's CA, host name verified);
- the broker is stopped for a few seconds and started again: both clients
  reconnect by themselves, care-edge republishes its birth, and InfluxDB
  ends with exactly the readings care-edge reports it delivered (readings
  polled during the outage wait in the edge's queue; the hub's persistent
  session holds what arrives before it resubscribes);
- a gateway given the wrong CA refuses the broker and says why.
"""
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (SRC, Influx, Mosquitto, free_port, log, run_test, seq_coverage,  # noqa: E402
                     wait_for)

DB = "carehub"
DEVICES = ["air-1", "air-2"]


def site_yaml(w, name, broker, ca, modbus_port):
    devs = "\n".join(f"  - {{id: {d}, bus: lan, slave: {i + 1}, profile: air-board, interval: 300ms}}"
                     for i, d in enumerate(DEVICES))
    return w.write(name, f"""
site: tls-site
gateway: gw-1
uplink:
  broker: {broker}
  batch_interval: 200ms
  tls: {{ca_file: "{ca}", verify: true}}
spool: {{dir: "{w.path(name + '.spool')}"}}
profiles: [{SRC}/deploy/profiles]
buses:
  - {{id: lan, type: modbus-tcp, host: 127.0.0.1, port: {modbus_port}, timeout: 500ms}}
devices:
{devs}
self_metrics_interval: 2s
""")


def counts(influx):
    rows = influx.series('SELECT count("co2") FROM "environment" GROUP BY "device"', DB)
    return {r["device"]: r["count"] for r in rows}


def test_tls_reconnect(w):
    ca, cert, key = w.make_ca("site")
    influx = Influx(w)
    mqtt = Mosquitto(w, tls=(ca, cert, key), persistent=True)
    modbus_port = free_port()
    sim_cfg = w.write("sim.yaml", f"""
seed: 3
endpoints: [{{id: lan, tcp: "127.0.0.1:{modbus_port}"}}]
slaves: [{{name: air, endpoint: lan, unit: 1, model: air-board, count: 2}}]
""")
    w.spawn("care-sim", [w.bin("care-sim"), "-c", sim_cfg]).wait_log("care-sim ready", 10)
    hub_cfg = w.write("hub.yaml", f"""
mqtt:
  broker: {mqtt.uri}
  client_id: hub-tls
  tls: {{ca_file: "{ca}", verify: true}}
influx: {{url: "{influx.url}", version: 1, database: {DB}, flush_interval: 300ms}}
spool: {{dir: hub-spool}}
self_metrics_interval: 2s
""")
    hub = w.spawn("care-hub", [w.bin("care-hub"), "-c", hub_cfg])
    hub.wait_log("subscribed", 10)

    stats = w.path("stats.json")
    edge = w.spawn("care-edge", [w.bin("care-edge"), "-c",
                                 site_yaml(w, "site.yaml", mqtt.uri, ca, modbus_port),
                                 "--stats-file", stats])
    edge.wait_log("connected to ssl://", 10)
    wait_for("readings over TLS in InfluxDB", lambda: sum(counts(influx).values()) >= 4, 15)
    log(f"over TLS: {counts(influx)}")

    # the broker goes away and comes back on the same port
    mqtt.stop()
    edge.wait_log("connection lost", 10)
    time.sleep(3)
    mqtt.start()
    wait_for("care-edge to reconnect",
             lambda: edge.output().count("connected to ssl://") >= 2, 40)
    wait_for("care-hub to reconnect", lambda: hub.output().count("subscribed") >= 2 or
             hub.output().count("connected") >= 2, 40)
    time.sleep(2)
    assert edge.stop() == 0, edge.tail()
    with open(stats) as f:
        st = json.load(f)
    delivered = {d: s["polls_ok"] for d, s in st["devices"].items()}  # produced, each spooled
    try:
        got = wait_for("InfluxDB to hold exactly what was delivered",
                       lambda: counts(influx) == delivered and counts(influx), 20, 0.5)
    except AssertionError:
        raise AssertionError(f"InfluxDB {counts(influx)} != delivered {delivered}")
    log(f"after a broker restart: InfluxDB {got} == produced {delivered}")
    cov = seq_coverage(influx, DB, "gw-1")
    assert cov == (st["last_seq"], st["last_seq"], 1, st["last_seq"]), cov

    # a gateway that trusts another CA refuses this broker
    other_ca, _, _ = w.make_ca("other")
    bad = w.spawn("care-edge-wrong-ca", [w.bin("care-edge"), "-c",
                                         site_yaml(w, "site-bad.yaml", mqtt.uri, other_ca,
                                                   modbus_port)])
    bad.wait_log(r"cannot connect to ssl://", 20)
    assert "connected to ssl://" not in bad.output()
    assert bad.stop() == 0


if __name__ == "__main__":
    run_test(test_tls_reconnect)
    print("uplink_tls_reconnect: 1 passed, 0 failed")
