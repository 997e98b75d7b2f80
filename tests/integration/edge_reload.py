"""care-edge reloads its configuration on SIGHUP (issue 5: devices
re-assigned without restarting the gateway), keeping alarm state and losing
no data.

care-sim serves an air board and two nurse-call panels. care-edge starts with
panel-203 assigned to resident R-0417 and a latched SOS rule; the cord is
pulled (alarm active). Then:
1. a broken file is signalled: the error is reported with file:line:key and
   everything runs on as it was;
2. the fixed file adds panel-204, moves R-0417 to it and gives panel-203 to
   R-0500: after SIGHUP the latched alarm is still active, the new device's
   readings flow, its SOS raises an alarm naming R-0417, the retained birth
   lists it, and the gateway's reading numbers have no hole across the
   reloads (nothing lost while the bus threads were swapped); the alarm of a
   rule the new file dropped has its condition end (returned to normal,
   waiting for its acknowledgement).
"""
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SRC, Console, Mosquitto, free_port, log, run_test, wait_for  # noqa: E402
from care_site import hash_password, messages  # noqa: E402

PASSWORD = "reload test 123"


def site(w, mb_port, central, cport, hashed, v2=False, broken=False):
    panel204 = "\n  - {id: panel-204, bus: lan, slave: 3, profile: call-panel, interval: 200ms, room: \"204\"}" if v2 else ""
    residents = ("""  - {id: R-0417, room: "204", bed: 204-A, devices: [panel-204]}
  - {id: R-0500, room: "203", bed: 203-A, devices: [panel-203]}""" if v2 else
                 """  - {id: R-0417, room: "203", bed: 203-A, devices: [panel-203]}""")
    # a rule the new file no longer has: its active alarm's condition ends
    co2_rule = "" if v2 else "\n  - {id: co2-any, when: co2 > 0, priority: low, select: {device: [nap-co2]}}"
    return w.write("site.yaml", f"""
site: reload-home
gateway: gw-r
uplink: {{broker: "{central.uri}", batch_interval: 200ms}}
spool: {{dir: "{w.path('spool')}"}}
profiles: [{SRC}/deploy/profiles]
buses:
  - {{id: lan, type: modbus-tcp, host: 127.0.0.1, port: {mb_port}, timeout: 500ms}}
devices:
  - {{id: nap-co2, bus: lan, slave: 1, profile: air-board, interval: 200ms, room: nap-1}}
  - {{id: panel-203, bus: lan, slave: 2, profile: call-panel, interval: 200ms, room: "203"}}{panel204}
residents:
{residents}
rules:
  - {{id: sos, when: sos == 1, latch: true, priority: high, select: {{kind: [call]}}}}{co2_rule}
console:
  enabled: true
  bind: 127.0.0.1
  port: {cport}
  users: [{{name: nurse1, password_hash: "{hashed}"}}]
{"self_metrics_intervall: 1s" if broken else "self_metrics_interval: 1s"}
""")


def covered(cap):
    """Every reading number the broker saw, from the telemetry messages."""
    seqs = set()
    for doc in messages(cap, "/telemetry"):
        seqs.update(range(doc["seq"], doc["seq"] + len(doc["readings"])))
    return seqs


def test_reload(w):
    central = Mosquitto(w, name="central")
    port = free_port()
    sim_cfg = w.write("sim.yaml", f"""
seed: 4
endpoints:
  - {{id: lan, tcp: "127.0.0.1:{port}"}}
slaves:
  - {{name: nap-co2, endpoint: lan, unit: 1, model: air-board}}
  - {{name: panel-203, endpoint: lan, unit: 2, model: call-panel}}
  - {{name: panel-204, endpoint: lan, unit: 3, model: call-panel}}
scenario:
  - {{at: 2s, slave: panel-203, set: {{metric: sos, value: 1}}}}
  - {{at: 4s, slave: panel-203, set: {{metric: sos, value: 0}}}}
  - {{at: 11s, slave: panel-204, set: {{metric: sos, value: 1}}}}
""")
    sim = w.spawn("care-sim", [w.bin("care-sim"), "-c", sim_cfg])
    sim.wait_log("care-sim ready", 10)
    t0 = time.monotonic()
    cport = free_port()
    hashed = hash_password(w, PASSWORD)
    path = site(w, port, central, cport, hashed)
    cap = central.subscribe("carehub/v1/reload-home/gw-r/#", "capture")
    stats = w.path("stats.json")
    edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", path, "--stats-file", stats])
    edge.wait_log("serving the alarm console", 10)
    con = Console(cport, "nurse1", PASSWORD)
    assert con.status == 200
    edge.wait_log(r"\[alarm:sos:panel-203\] raise", 10)
    edge.wait_log(r"\[alarm:co2-any:nap-co2\] raise", 10)

    # a broken file: reported, nothing changes
    site(w, port, central, cport, hashed, v2=True, broken=True)
    edge.p.send_signal(signal.SIGHUP)
    edge.wait_log(r"site\.yaml:\d+:\d+: error: unknown key 'self_metrics_intervall'", 10)
    edge.wait_log("the running configuration stays", 5)
    n_before = len(covered(cap))
    wait_for("readings still flowing", lambda: len(covered(cap)) > n_before + 10, 10)
    assert time.monotonic() - t0 < 9, "too slow to reload before panel-204's SOS at 11 s"

    # the fixed file
    site(w, port, central, cport, hashed, v2=True)
    edge.p.send_signal(signal.SIGHUP)
    edge.wait_log(r"reloaded: 3 devices on 1 buses, 2 residents", 10)
    st, body = con.request("GET", "/api/alarms")
    assert st == 200 and [(a["alarm_id"], a["state"]) for a in body["alarms"]] == \
        [("sos:panel-203", "unack"), ("co2-any:nap-co2", "rtn_unack")], body
    ev = wait_for("panel-204's SOS as an alarm for R-0417",
                  lambda: next((a for a in messages(cap, "/alert")
                                if a["alarm_id"] == "sos:panel-204"), None), 15)
    assert ev["resident"] == "R-0417" and ev["bed"] == "204-A", ev
    births = [d for d in messages(cap, "/status") if d.get("online")]
    assert any("panel-204" in [x["id"] for x in d.get("devices", [])] for d in births), births
    st, body = con.request("POST", "/api/alarms/sos:panel-203/ack", {})
    assert st == 200, body
    assert edge.stop() == 0, edge.tail()
    time.sleep(0.5)
    cap.stop()
    with open(stats) as f:
        last = json.load(f)["last_seq"]
    seqs = covered(cap)
    missing = sorted(set(range(1, last + 1)) - seqs)
    assert not missing, f"reading numbers missing at the broker: {missing[:20]}"
    got = {r["device"] for d in messages(cap, "/telemetry") for r in d["readings"]}
    assert {"nap-co2", "panel-203", "panel-204"} <= got, got
    log(f"two SIGHUPs (one refused): readings 1..{last} all delivered, the latched alarm kept, "
        f"panel-204 polled and alarmed for R-0417")


if __name__ == "__main__":
    run_test(test_reload)
