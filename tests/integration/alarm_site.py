"""Care alarms on site with the internet down (issue 4), through real parts:
care-sim (Modbus TCP: an air board in a nap room, a nurse-call panel, a
4-channel relay driving the sounder), care-edge with its local console and
local Mosquitto, the central Mosquitto, care-hub and InfluxDB.

1. test_co2_alarm_with_uplink_down — the central broker is down for the
   whole scenario. CO2 in the nap room climbs past 1000 ppm: the alarm
   appears on the console's event stream and on the local broker, and the
   sounder coil goes on. A carer acknowledges it from the console (HTTP):
   the acknowledged transition reaches the stream and the local broker, and
   the sounder goes off. Then the central broker comes up: both transitions
   reach InfluxDB through care-hub, the acknowledgement naming the carer.
2. test_latched_sos_survives_restart — the SOS cord is pulled and released:
   the latched alarm stays active and unacknowledged; care-edge is killed
   (SIGKILL) and started again: the alarm is still active, the sounder is on
   again, and acknowledging it returns it to normal.
"""
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (SRC, Console, Influx, Mosquitto, free_port, log, run_test,  # noqa: E402
                     wait_for)

DB = "carehub"
SITE, GW = "sunny-home", "gw-1"
PASSWORD = "correct horse battery"


def hash_password(w):
    r = subprocess.run([w.bin("care-edge"), "--hash-password"], input=PASSWORD + "\n",
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("$"), r.stderr
    return r.stdout.strip()


def start_sim(w, scenario):
    port = free_port()
    cfg = w.write("sim.yaml", f"""
seed: 11
endpoints:
  - {{id: lan, tcp: "127.0.0.1:{port}"}}
slaves:
  - {{name: nap-co2, endpoint: lan, unit: 1, model: air-board}}
  - {{name: panel-203, endpoint: lan, unit: 2, model: call-panel}}
  - {{name: relay-9, endpoint: lan, unit: 9, model: relay-4ch}}
scenario:
{scenario}
""")
    sim = w.spawn("care-sim", [w.bin("care-sim"), "-c", cfg])
    sim.wait_log("care-sim ready", 10)
    return sim, port


def site_config(w, modbus_port, central, local, console_port):
    return w.write("site.yaml", f"""
site: {SITE}
gateway: {GW}
timezone: Asia/Shanghai
uplink: {{broker: "{central.uri}", batch_interval: 200ms}}
spool: {{dir: "{w.path('spool')}"}}
profiles: [{SRC}/deploy/profiles]
buses:
  - {{id: lan, type: modbus-tcp, host: 127.0.0.1, port: {modbus_port}, timeout: 500ms}}
devices:
  - {{id: nap-co2, bus: lan, slave: 1, profile: air-board, interval: 300ms, room: nap-1}}
  - {{id: panel-203, bus: lan, slave: 2, profile: call-panel, interval: 300ms, room: "203"}}
residents:
  - {{id: R-0417, room: "203", bed: 203-A, devices: [panel-203]}}
rules:
  - id: co2-high
    description: nap room CO2 above GB/T 18883-2022's 0.10 %
    when: co2 > 1000
    for: 1s
    deadband: 100
    priority: medium
    select: {{profile: [air-board]}}
    message: "CO2 {{value}} ppm in {{room}}"
  - id: sos
    when: sos == 1
    latch: true
    priority: high
    select: {{kind: [call]}}
    message: "SOS pulled in {{room}} ({{resident}})"
annunciators:
  - {{id: sounder, bus: lan, slave: 9, coil: 0, priorities: [high, medium]}}
console:
  enabled: true
  bind: 127.0.0.1
  port: {console_port}
  users: [{{name: nurse1, password_hash: "{hash_password(w)}"}}]
local_mqtt: {{broker: "{local.uri}"}}
self_metrics_interval: 1s
""")


def start_hub(w, central, influx):
    cfg = w.write("hub.yaml", f"""
mqtt: {{broker: "{central.uri}", client_id: hub-alarms}}
influx: {{url: "{influx.url}", version: 1, database: {DB}, flush_interval: 200ms}}
spool: {{dir: hub-spool}}
""")
    return w.spawn("care-hub", [w.bin("care-hub"), "-c", cfg])


def coil_changes(sim):
    """The sounder coil's levels as care-sim logged them, in order."""
    return re.findall(r"relay-9: coil 0 -> (on|off)", sim.output())


def local_alerts(capture):
    out = []
    with open(capture.logpath, errors="replace") as f:
        for line in f:
            topic, _, payload = line.rstrip("\n").partition("\t")
            if topic.endswith("/alert") and payload:
                out.append(json.loads(payload))
    return out


def login(port):
    c = Console(port, "nurse1", PASSWORD)
    assert c.status == 200, f"login: HTTP {c.status}"
    return c


def alarm_points(influx, alarm_id):
    return influx.series(f"SELECT * FROM \"alarm\" WHERE \"alarm_id\" = '{alarm_id}'", DB)


def test_co2_alarm_with_uplink_down(w):
    influx = Influx(w)
    central = Mosquitto(w, name="central", start=False)  # the internet is down
    local = Mosquitto(w, name="local")
    sim, mb_port = start_sim(w, """
  - {at: 2s, slave: nap-co2, set: {metric: co2, ramp_to: 2200, over: 3s}}
""")
    cport = free_port()
    site = site_config(w, mb_port, central, local, cport)
    cap = local.subscribe(f"carehub/v1/{SITE}/{GW}/#", "local-capture")
    edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", site])
    edge.wait_log("serving the alarm console", 10)
    con = login(cport)
    con.listen()
    aid = "co2-high:nap-co2"

    raise_ev = wait_for("the CO2 alarm on the console's event stream",
                        lambda: con.find(lambda n, d: n == "alert" and d.get("alarm_id") == aid
                                         and d.get("event") == "raise"), 20)
    a = raise_ev[2]
    assert a["state"] == "unack" and a["priority"] == "medium" and a["room"] == "nap-1", a
    assert a["value"] > 1000 and a["metric"] == "co2", a
    wait_for("the raise on the local broker",
             lambda: any(x["alarm_id"] == aid and x["event"] == "raise" for x in local_alerts(cap)), 5)
    wait_for("the sounder coil on", lambda: coil_changes(sim)[-1:] == ["on"], 5)
    st, active = con.request("GET", "/api/alarms")
    assert st == 200 and [x["alarm_id"] for x in active["alarms"]] == [aid], active

    st, body = con.request("POST", f"/api/alarms/{aid}/ack", {})
    assert st == 200, (st, body)
    ack_ev = wait_for("the acknowledgement on the event stream",
                      lambda: con.find(lambda n, d: n == "alert" and d.get("alarm_id") == aid
                                       and d.get("event") == "ack"), 5)
    assert ack_ev[2]["state"] == "acked" and ack_ev[2]["by"] == "console:nurse1", ack_ev[2]
    wait_for("the ack on the local broker",
             lambda: any(x["alarm_id"] == aid and x["event"] == "ack" for x in local_alerts(cap)), 5)
    wait_for("the sounder coil off", lambda: coil_changes(sim)[-1:] == ["off"], 5)
    # a second acknowledgement is refused, not a new transition
    st, body = con.request("POST", f"/api/alarms/{aid}/ack", {})
    assert st == 409, (st, body)
    assert "DISCONNECTED" in edge.output() or "cannot connect" in edge.output()
    log("uplink down: CO2 alarm raised and acknowledged on site (console, local broker, sounder)")

    central.start()
    start_hub(w, central, influx)
    pts = wait_for("the raise and the acknowledgement in InfluxDB",
                   lambda: (lambda p: p if {"raise", "ack"} <= {x["event"] for x in p} else None)(
                       alarm_points(influx, aid)), 30)
    ack = next(p for p in pts if p["event"] == "ack")
    assert ack["by"] == "console:nurse1" and ack["state"] == "acked" and ack["site"] == SITE, ack
    con.close()
    assert edge.stop() == 0, edge.tail()
    log(f"after the uplink came back: {len(pts)} transitions of {aid} in InfluxDB")


def test_latched_sos_survives_restart(w):
    central = Mosquitto(w, name="central")
    local = Mosquitto(w, name="local")
    sim, mb_port = start_sim(w, """
  - {at: 2s, slave: panel-203, set: {metric: sos, value: 1}}
  - {at: 4s, slave: panel-203, set: {metric: sos, value: 0}}
""")
    cport = free_port()
    site = site_config(w, mb_port, central, local, cport)
    tel = central.subscribe(f"carehub/v1/{SITE}/{GW}/telemetry", "telemetry")
    edge = w.spawn("care-edge-1", [w.bin("care-edge"), "-c", site])
    edge.wait_log("serving the alarm console", 10)
    con = login(cport)
    con.listen()
    aid = "sos:panel-203"

    def sos_values():
        vals = []
        with open(tel.logpath, errors="replace") as f:
            for line in f:
                doc = json.loads(line.split("\t", 1)[1])
                vals += [r["metrics"]["sos"] for r in doc["readings"]
                         if r["device"] == "panel-203" and "sos" in r["metrics"]]
        return vals
    ev = wait_for("the SOS alarm on the event stream",
                  lambda: con.find(lambda n, d: n == "alert" and d.get("alarm_id") == aid), 15)
    assert ev[2]["priority"] == "high" and ev[2]["latched"] and ev[2]["resident"] == "R-0417", ev[2]
    assert ev[2]["bed"] == "203-A", ev[2]
    # the cord is released at 4 s: the alarm stays, latched
    wait_for("a reading of the released cord after the pull",
             lambda: 1 in sos_values() and sos_values()[-1] == 0, 10)
    time.sleep(1)
    st, body = con.request("GET", "/api/alarms")
    assert st == 200 and [(x["alarm_id"], x["state"]) for x in body["alarms"]] == [(aid, "unack")], body
    con.close()
    edge.kill()
    log("care-edge killed with a latched SOS active")

    edge2 = w.spawn("care-edge-2", [w.bin("care-edge"), "-c", site])
    edge2.wait_log("serving the alarm console", 10)
    con = login(cport)
    st, body = con.request("GET", "/api/alarms")
    assert st == 200 and [(x["alarm_id"], x["state"]) for x in body["alarms"]] == [(aid, "unack")], body
    # the restarted gateway drives the sounder from the restored state
    edge2.wait_log(r"\[annunciator:sounder\] coil 0 of slave 9 on lan ON", 10)
    assert coil_changes(sim)[-1:] == ["on"], coil_changes(sim)
    st, body = con.request("POST", f"/api/alarms/{aid}/ack", {})
    assert st == 200, (st, body)
    st, body = con.request("GET", "/api/alarms")
    assert st == 200 and body["alarms"] == [], body
    wait_for("the sounder off", lambda: coil_changes(sim)[-1:] == ["off"], 5)
    assert edge2.stop() == 0, edge2.tail()
    log("latched SOS survived SIGKILL and a restart; acknowledged after the cord was released: normal")


if __name__ == "__main__":
    run_test(test_co2_alarm_with_uplink_down)
    run_test(test_latched_sos_survives_restart)
