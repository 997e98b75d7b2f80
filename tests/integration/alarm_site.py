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
   again, and acknowledging it from a nurse-station app through the local
   broker (cmd/{user}/ack, the user the broker authenticated) returns it to
   normal.

Commands from the three places staff act — the console, the local broker and
the central hub (through the uplink) — are all exercised.
"""
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Console, Influx, Mosquitto, free_port, log, run_test, wait_for  # noqa: E402
from care_site import (GW, SITE, USER, messages, site_config, sos_readings,  # noqa: E402
                       start_sim)

DB = "carehub"
PASSWORD = "correct horse battery"


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


def command(action, alarm_id, by, **extra):
    doc = {"schema": "carehub/command/1", "action": action, "alarm_id": alarm_id, "by": by,
           "ts_ms": int(time.time() * 1000)}
    doc.update(extra)
    return json.dumps(doc)


def login(port):
    c = Console(port, USER, PASSWORD)
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
    site = site_config(w, mb_port, central, cport, PASSWORD, local=local, sounder=True)
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
             lambda: any(x["alarm_id"] == aid and x["event"] == "raise" for x in messages(cap, "/alert")), 5)
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
             lambda: any(x["alarm_id"] == aid and x["event"] == "ack" for x in messages(cap, "/alert")), 5)
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
    # an operator shelves it from the central console: the command comes
    # down through the uplink, the transition goes back up as usual
    central.publish(f"carehub/v1/{SITE}/{GW}/cmd/shelve", command("shelve", aid, "hub:operator7",
                                                                  duration_ms=1800000))
    ev = wait_for("the shelving on the event stream",
                  lambda: con.find(lambda n, d: n == "alert" and d.get("event") == "shelve"), 10)
    assert ev[2]["by"] == "hub:operator7" and ev[2]["state"] == "shelved", ev[2]
    wait_for("the shelving in InfluxDB",
             lambda: any(p["event"] == "shelve" for p in alarm_points(influx, aid)), 20)
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
    # the nap room's CO2 may pass its limit while this runs (a slow machine):
    # this test is about the SOS, so the sounder is for high priority only and
    # only the SOS is looked at
    site = site_config(w, mb_port, central, cport, PASSWORD, local=local, sounder=True,
                       sounder_priorities="high")
    tel = central.subscribe(f"carehub/v1/{SITE}/{GW}/telemetry", "telemetry")
    edge = w.spawn("care-edge-1", [w.bin("care-edge"), "-c", site])
    edge.wait_log("serving the alarm console", 10)
    con = login(cport)
    con.listen()
    aid = "sos:panel-203"

    ev = wait_for("the SOS alarm on the event stream",
                  lambda: con.find(lambda n, d: n == "alert" and d.get("alarm_id") == aid), 15)
    assert ev[2]["priority"] == "high" and ev[2]["latched"] and ev[2]["resident"] == "R-0417", ev[2]
    assert ev[2]["bed"] == "203-A", ev[2]
    # the cord is released at 4 s: the alarm stays, latched
    wait_for("a reading of the released cord after the pull",
             lambda: 1 in sos_readings(tel) and sos_readings(tel)[-1] == 0, 10)
    time.sleep(1)
    st, body = con.request("GET", "/api/alarms")
    assert st == 200 and sos_states(body) == ["unack"], body
    con.close()
    edge.kill()
    log("care-edge killed with a latched SOS active")

    edge2 = w.spawn("care-edge-2", [w.bin("care-edge"), "-c", site])
    edge2.wait_log("serving the alarm console", 10)
    con = login(cport)
    st, body = con.request("GET", "/api/alarms")
    assert st == 200 and sos_states(body) == ["unack"], body
    # the restarted gateway drives the sounder from the restored state
    edge2.wait_log(r"\[annunciator:sounder\] coil 0 of slave 9 on lan ON", 10)
    assert coil_changes(sim)[-1:] == ["on"], coil_changes(sim)
    # a nurse-station app acknowledges it through the local broker
    # as user station-2 (the topic level the local broker's ACL pins to
    # the user): its own "by" counts for nothing. (Once care-edge listens:
    # the broker keeps no message for a subscription not made yet.)
    edge2.wait_log(r"\[local-mqtt\] listening for commands on ", 10)
    local.publish(f"carehub/v1/{SITE}/{GW}/cmd/station-2/ack", command("ack", aid, "console:boss"))
    wait_for("the acknowledgement from the local broker",
             lambda: sos_states(con.request("GET", "/api/alarms")[1]) == [], 10)
    st, body = con.request("GET", "/api/history?hours=1")
    assert st == 200 and any(h["event"] == "ack" and h["by"] == "local:station-2"
                             for h in body["history"] if h["alarm_id"] == aid), body
    wait_for("the sounder off", lambda: coil_changes(sim)[-1:] == ["off"], 5)
    assert edge2.stop() == 0, edge2.tail()
    log("latched SOS survived SIGKILL and a restart; acknowledged after the cord was released: normal")


def sos_states(body):
    """The states the console lists for the SOS alarm."""
    return [x["state"] for x in body["alarms"] if x["alarm_id"] == "sos:panel-203"]


if __name__ == "__main__":
    run_test(test_co2_alarm_with_uplink_down)
    run_test(test_latched_sos_survives_restart)
