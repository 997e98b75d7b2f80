"""A safety device is never left unpolled for long (issue 14).

A nurse-call panel and a CO2 meter share a Modbus TCP bus whose
backoff_max is the default 5 minutes. From 2 s to 22 s the line is down
(both silent: an RS-485 disturbance); a failing device is retried at
interval x 2^(fails-1), which after 20 s of failures would leave the panel
unpolled for 16 s more. At 25 s, 3 s after the line is back, a resident
pulls the SOS cord for 3 s. Asserts that the SOS alarm is raised within two
poll intervals (1 s each) of the pull, as the call-panel profile caps its
back-off (backoff_max: 3s) and a bus that answers again retries its
backed-off devices at once; and that the meter is read again within a few
seconds of the line's return too.
"""
import json
import os
import re
import sys
from datetime import datetime

sys.path.insert(0, os.path.dirname(__file__))
from harness import SRC, Mosquitto, free_port, log, run_test, wait_for  # noqa: E402

INTERVAL_S = 1.0


def sim_time(sim, pattern):
    """Unix ms of the care-sim log line matching pattern."""
    for line in sim.output().splitlines():
        if re.search(pattern, line):
            ts = line.split()[0]
            return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp() * 1000 + \
                (datetime.now().astimezone().utcoffset().total_seconds() * 1000)
    return None


def test_call_panel_backoff(w):
    mqtt = Mosquitto(w)
    port = free_port()
    sim_cfg = w.write("sim.yaml", f"""
seed: 5
endpoints:
  - {{id: lan, tcp: "127.0.0.1:{port}"}}
slaves:
  - {{name: nap-co2, endpoint: lan, unit: 1, model: air-board}}
  - {{name: panel-203, endpoint: lan, unit: 2, model: call-panel}}
scenario:
  - {{at: 2s, slave: nap-co2, fault: silent}}
  - {{at: 2s, slave: panel-203, fault: silent}}
  - {{at: 22s, slave: nap-co2, fault: none}}
  - {{at: 22s, slave: panel-203, fault: none}}
  - {{at: 25s, slave: panel-203, set: {{metric: sos, value: 1}}}}
  - {{at: 28s, slave: panel-203, set: {{metric: sos, value: 0}}}}
""")
    site = w.write("site.yaml", f"""
site: backoff-site
gateway: gw-b
uplink: {{broker: "{mqtt.uri}", batch_interval: 200ms}}
spool: {{dir: "{w.path('spool')}"}}
profiles: [{SRC}/deploy/profiles]
buses:
  - {{id: lan, type: modbus-tcp, host: 127.0.0.1, port: {port}, timeout: 300ms}}
devices:
  - {{id: nap-co2, bus: lan, slave: 1, profile: air-board, interval: {INTERVAL_S}s, room: nap-1}}
  - {{id: panel-203, bus: lan, slave: 2, profile: call-panel, interval: {INTERVAL_S}s, room: "203"}}
rules:
  - {{id: sos, when: sos == 1, latch: true, priority: high, select: {{profile: [call-panel]}}}}
""")
    cap = mqtt.subscribe("carehub/v1/#", "capture")
    sim = w.spawn("care-sim", [w.bin("care-sim"), "-c", sim_cfg])
    sim.wait_log("care-sim ready", 10)
    edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", site])

    def raised():
        with open(cap.logpath, errors="replace") as f:
            for line in f:
                topic, _, payload = line.rstrip("\n").partition("\t")
                if topic.endswith("/alert"):
                    a = json.loads(payload)
                    if a["rule"] == "sos" and a["event"] == "raise":
                        return a
        return None
    alert = wait_for("the SOS alarm", raised, 40, 0.2)
    pulled = sim_time(sim, r"scenario 25s")
    back = sim_time(sim, r"scenario 22s")
    assert pulled and back, sim.tail()
    latency = (alert["ts_ms"] - pulled) / 1000
    out = edge.output()
    log(f"SOS pulled 3 s after the line came back: raised {latency:.2f} s after the pull "
        f"(poll interval {INTERVAL_S} s)")
    assert latency <= 2 * INTERVAL_S + 0.3, (latency, edge.tail(30))

    # the meter is read again soon after the line's return, not after its back-off
    def meter_back():
        with open(cap.logpath, errors="replace") as f:
            for line in f:
                topic, _, payload = line.rstrip("\n").partition("\t")
                if not topic.endswith("/telemetry"):
                    continue
                for r in json.loads(payload)["readings"]:
                    if r["device"] == "nap-co2" and r["measurement"] == "environment" and \
                            r["ts"] > back:
                        return r["ts"]
        return None
    first = wait_for("a reading of the meter after the line's return", meter_back, 10, 0.2)
    log(f"meter read again {(first - back) / 1000:.2f} s after the line's return")
    assert (first - back) / 1000 <= 3 * INTERVAL_S + 3.5, (first - back, edge.tail(30))
    assert "answering again" in out or (first - back) / 1000 <= 4, edge.tail(30)
    edge.stop()
    sim.stop()
    cap.stop()


if __name__ == "__main__":
    run_test(test_call_panel_backoff)
