"""A wrong register map does not look like a flaky line (issue 14).

care-sim serves, on an RTU line (socat pseudo-terminals) and over TCP, a
healthy meter, a meter answering every request with exception 02 (illegal
data address: what a meter says to a profile asking for registers it does
not have) and, on the RTU line, a silent one. Asserts:

- `care-edge --once` prints each failure with the exception's code and name
  and the registers asked for ("exception 02 illegal data address (fc 3,
  registers 0..1)"), "no answer" for the silent meter, the healthy meters'
  readings, and exits 1 (devices failed);
- running, the log names the same, and the edge_device self-metrics count
  the exceptions apart from the timeouts: exceptions on the exception
  meters and no timeouts, timeouts on the silent one and no exceptions, and
  every failed poll of these three in one class or the other.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SRC, Mosquitto, free_port, log, run_test, wait_for  # noqa: E402


def readings(path):
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            topic, _, payload = line.rstrip("\n").partition("\t")
            if topic.endswith("/telemetry"):
                out += json.loads(payload)["readings"]
    return out


def test_modbus_diagnosis(w):
    mqtt = Mosquitto(w)
    edge_pty, sim_pty = w.socat_pair("rs485")
    tcp_port = free_port()
    sim_cfg = w.write("sim.yaml", f"""
seed: 3
endpoints:
  - {{id: lan, tcp: "127.0.0.1:{tcp_port}"}}
  - {{id: rs485, rtu: "{sim_pty}", baud: 19200}}
slaves:
  - {{name: th-ok, endpoint: rs485, unit: 1, model: jxct-th}}
  - {{name: th-exc, endpoint: rs485, unit: 2, model: jxct-th}}
  - {{name: th-silent, endpoint: rs485, unit: 3, model: jxct-th}}
  - {{name: air-ok, endpoint: lan, unit: 1, model: air-board}}
  - {{name: air-exc, endpoint: lan, unit: 2, model: air-board}}
scenario:
  - {{at: 0s, slave: th-exc, fault: exception, exception_code: 2}}
  - {{at: 0s, slave: air-exc, fault: exception, exception_code: 2}}
  - {{at: 0s, slave: th-silent, fault: silent}}
""")
    sim = w.spawn("care-sim", [w.bin("care-sim"), "-c", sim_cfg])
    sim.wait_log("care-sim ready", 10)
    site = w.write("site.yaml", f"""
site: diag-site
gateway: gw-d
uplink: {{broker: "{mqtt.uri}", batch_interval: 200ms}}
spool: {{dir: "{w.path('spool')}"}}
profiles: [{SRC}/deploy/profiles]
buses:
  - {{id: rs485-1, type: modbus-rtu, device: "{edge_pty}", baud: 19200, timeout: 200ms,
     backoff_max: 1s}}
  - {{id: lan, type: modbus-tcp, host: 127.0.0.1, port: {tcp_port}, timeout: 500ms,
     backoff_max: 1s}}
devices:
  - {{id: th-ok, bus: rs485-1, slave: 1, profile: jxct-th, interval: 300ms}}
  - {{id: th-exc, bus: rs485-1, slave: 2, profile: jxct-th, interval: 300ms}}
  - {{id: th-silent, bus: rs485-1, slave: 3, profile: jxct-th, interval: 300ms}}
  - {{id: air-ok, bus: lan, slave: 1, profile: air-board, interval: 300ms}}
  - {{id: air-exc, bus: lan, slave: 2, profile: air-board, interval: 300ms}}
self_metrics_interval: 1s
""")

    # --once: what an installer sees
    once = subprocess.run([w.bin("care-edge"), "--once", "-c", site], capture_output=True,
                          text=True, timeout=30)
    log(f"--once (exit {once.returncode}):\n{once.stdout}")
    assert once.returncode == 1, (once.returncode, once.stdout, once.stderr)
    lines = {ln.split()[0]: ln for ln in once.stdout.splitlines()[1:] if ln.strip()}
    for dev in ("th-exc", "air-exc"):
        assert "ERROR: exception reply: exception 02 illegal data address (fc " in lines[dev], \
            lines[dev]
        assert "registers " in lines[dev], lines[dev]
    assert "ERROR: timeout: no answer (fc 3, registers " in lines["th-silent"], lines["th-silent"]
    for dev in ("th-ok", "air-ok"):
        assert "ERROR" not in lines[dev], lines[dev]

    # running: the log and the self-metrics, by why
    cap = mqtt.subscribe("carehub/v1/#", "capture")
    edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", site])

    def counted():
        last = {}
        for r in readings(cap.logpath):
            if r["measurement"] == "edge_device":
                last[r["device"]] = r["metrics"]
        ok = all(last.get(d, {}).get("exceptions", 0) >= 2 for d in ("th-exc", "air-exc")) and \
            last.get("th-silent", {}).get("timeouts", 0) >= 2
        return last if ok else None
    last = wait_for("exceptions and timeouts counted in edge_device", counted, 20, 0.5)
    edge.stop()
    cap.stop()
    log("edge_device: " + json.dumps({d: {k: m.get(k) for k in (
        "polls_ok", "polls_failed", "timeouts", "exceptions", "crc_errors", "bad_replies")}
        for d, m in last.items()}))
    for d in ("th-exc", "air-exc"):
        m = last[d]
        assert m["timeouts"] == 0 and m["crc_errors"] == 0 and m["bad_replies"] == 0, (d, m)
        assert m["exceptions"] == m["polls_failed"], (d, m)
    m = last["th-silent"]
    assert m["exceptions"] == 0 and m["timeouts"] == m["polls_failed"], m
    for d in ("th-ok", "air-ok"):
        assert last[d]["polls_failed"] == 0 and last[d]["polls_ok"] > 0, (d, last[d])
    out = edge.output()
    assert "[poller:th-exc] poll failed: exception reply: exception 02 illegal data address " \
        "(fc 3, registers" in out, edge.tail(40)
    assert "[poller:air-exc] poll failed: exception reply: exception 02 illegal data address" \
        in out, edge.tail(40)


if __name__ == "__main__":
    run_test(test_modbus_diagnosis)
