"""A Modbus TCP link lost and reopened, and a device coming back online
(issue 14: neither was exercised by any test).

care-sim serves a meter on a Modbus TCP port; care-edge polls it every
200 ms. care-sim is stopped (the gateway's TCP connection breaks), so the
edge logs the lost connection, reports the meter offline and keeps trying
to reconnect; care-sim is started again on the same port, and the edge
reconnects on its own, logs the meter online again and its readings flow
again. Self-metrics say the same (online 0, then 1).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SRC, Mosquitto, free_port, log, run_test, wait_for  # noqa: E402
from care_site import messages  # noqa: E402


def test_modbus_link(w):
    mqtt = Mosquitto(w)
    port = free_port()
    sim_cfg = w.write("sim.yaml", f"""
seed: 3
endpoints: [{{id: lan, tcp: "127.0.0.1:{port}"}}]
slaves: [{{name: air-1, endpoint: lan, unit: 1, model: air-board}}]
""")
    site = w.write("site.yaml", f"""
site: link-site
gateway: gw-l
uplink: {{broker: "{mqtt.uri}", batch_interval: 100ms}}
spool: {{dir: "{w.path('spool')}"}}
profiles: [{SRC}/deploy/profiles]
buses:
  - {{id: lan, type: modbus-tcp, host: 127.0.0.1, port: {port}, timeout: 300ms, backoff_max: 2s}}
devices:
  - {{id: air-1, bus: lan, slave: 1, profile: air-board, interval: 200ms, room: r1}}
self_metrics_interval: 1s
""")
    cap = mqtt.subscribe("carehub/v1/link-site/gw-l/telemetry", "capture")
    sim = w.spawn("care-sim", [w.bin("care-sim"), "-c", sim_cfg])
    sim.wait_log("care-sim ready", 10)
    edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", site])

    def readings(after=0):
        return [r for d in messages(cap, "/telemetry") for r in d["readings"]
                if r["device"] == "air-1" and r["measurement"] == "environment" and r["ts"] > after]

    def health():
        return [r["metrics"]["online"] for d in messages(cap, "/telemetry") for r in d["readings"]
                if r["device"] == "air-1" and r["measurement"] == "edge_device"]

    wait_for("readings of the meter", lambda: len(readings()) >= 3, 10)
    assert sim.stop() == 0
    down = time.time() * 1000
    edge.wait_log(r"\[poller:lan\] connection lost \(Connection reset by peer\), reopening", 10)
    edge.wait_log(r"\[poller:air-1\] offline: bus lan cannot be opened \(Connection refused\)",
                  10)
    wait_for("self-metrics saying offline", lambda: health() and health()[-1] == 0, 5)
    time.sleep(2)  # reconnects refused meanwhile, with back-off
    assert not readings(down + 500), readings(down + 500)

    sim2 = w.spawn("care-sim-2", [w.bin("care-sim"), "-c", sim_cfg])
    sim2.wait_log("care-sim ready", 10)
    up = time.time() * 1000
    edge.wait_log(r"\[poller:air-1\] online again after \d+ failed polls?", 10)
    got = wait_for("readings after the reconnect", lambda: readings(up) or None, 10)
    wait_for("self-metrics saying online", lambda: health()[-1] == 1, 5)
    log(f"link lost and refused; meter read again {(got[0]['ts'] - up) / 1000:.2f} s after "
        "care-sim was back (bus backoff_max 2 s)")
    assert edge.stop() == 0, edge.tail()
    sim2.stop()


if __name__ == "__main__":
    run_test(test_modbus_link)
