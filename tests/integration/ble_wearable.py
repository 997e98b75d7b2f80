"""A care bracelet heard by BLE receivers on the gateway's local broker
(issue 5), through real Mosquitto brokers and care-edge's ble bus:
OpenMQTTGateway-format receivers in a room, a corridor and at an exit.

- the bracelet's advertisements become readings (battery, worn, heart rate)
  with its zone, each advertisement once though three receivers hear it;
- an SOS press lasting one advertisement raises the latched SOS alarm;
- a resident at wandering risk walking to the exit: zone_exit = 1 and the
  wandering alarm names the resident and the exit zone (its room, and its
  message's {room}), where the carer must go; the SOS names the zone where
  it was pressed;
- silence: in_range = 0 once no receiver has heard it for out_of_range.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SRC, Mosquitto, log, run_test, wait_for  # noqa: E402
from care_site import messages  # noqa: E402

MAC = "C3:00:00:AB:CD:17"


def adv(local, receiver, rssi, flags=0x04, battery=90, hr=72):
    payload = {"id": MAC, "rssi": rssi,
               "manufacturerdata": f"ffff{battery:02x}{flags:02x}{hr:02x}"}
    local.publish(f"home/{receiver}/BTtoMQTT/{MAC.replace(':', '')}", json.dumps(payload))


def hear(local, loudest, flags=0x04):
    """One advertisement heard by all three receivers, loudest where the
    resident is."""
    for rx in ("gw-201", "gw-corr", "gw-exit"):
        adv(local, rx, -50 if rx == loudest else -85, flags)


def test_wearable(w):
    central = Mosquitto(w, name="central")
    local = Mosquitto(w, name="local")
    site = w.write("site.yaml", f"""
site: ble-home
gateway: gw-b
uplink: {{broker: "{central.uri}", batch_interval: 200ms}}
spool: {{dir: "{w.path('spool')}"}}
profiles: [{SRC}/deploy/profiles]
buses:
  - id: floor2
    type: ble
    host: 127.0.0.1
    port: {local.port}
    format: omg
    topics: ["home/+/BTtoMQTT/#"]
    out_of_range: 3s
    location:
      window: 2s
      margin: 6
      dwell: 1s
      zones:
        - {{id: room-201, receivers: [gw-201]}}
        - {{id: corridor-2, receivers: [gw-corr]}}
        - {{id: exit-east, exit: true, receivers: [gw-exit]}}
devices:
  - {{id: band-17, bus: floor2, mac: "{MAC}", profile: care-band, interval: 250ms, room: "201"}}
residents:
  - {{id: R-0417, room: "201", bed: 201-A, devices: [band-17], wandering_risk: true}}
rules:
  - {{id: sos, when: sos == 1, latch: true, priority: high, select: {{kind: [wearable]}}}}
  - {{id: wandering, when: zone_exit == 1, priority: high, select: {{wandering_risk: true}},
     message: "{{resident}} at {{room}}"}}
self_metrics_interval: 1s
""")
    cap = central.subscribe("carehub/v1/ble-home/gw-b/#", "capture")
    edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", site])
    edge.wait_log(r"\[ble:floor2\] connected", 10)
    time.sleep(0.3)

    def bands():
        return [r for d in messages(cap, "/telemetry") for r in d["readings"]
                if r["device"] == "band-17" and r["measurement"] == "wearable"]

    for _ in range(4):
        hear(local, "gw-201")
        time.sleep(0.5)
    r = wait_for("the bracelet's readings in room-201",
                 lambda: next((x for x in bands() if x["metrics"].get("zone") == 0), None), 10)
    m = r["metrics"]
    assert m["battery"] == 90 and m["worn"] == 1 and m["hr"] == 72 and m["in_range"] == 1, m
    assert m["zone_exit"] == 0 and m["sos"] == 0, m
    assert r["room"] == "room-201", r  # where the wearer is
    n_before = len(bands())
    assert n_before <= 4, f"{n_before} readings for 4 advertisements heard three times each"

    hear(local, "gw-201", flags=0x05)  # SOS pressed for one advertisement
    hear(local, "gw-201")
    edge.wait_log(r"\[alarm:sos:band-17\] raise", 5)

    for loud in ["gw-corr"] * 4 + ["gw-exit"] * 8:
        hear(local, loud)
        time.sleep(0.4)
    edge.wait_log(r"\[alarm:wandering:band-17\] raise", 10)
    alert = next(a for a in messages(cap, "/alert") if a["alarm_id"] == "wandering:band-17")
    assert alert["resident"] == "R-0417", alert
    # where the carer must go: the exit zone it was heard at, not the home room
    assert alert["room"] == "exit-east" and alert["message"] == "R-0417 at exit-east", alert
    sos = next(a for a in messages(cap, "/alert") if a["alarm_id"] == "sos:band-17")
    assert sos["room"] == "room-201", sos  # pressed in the room
    assert any(x["metrics"].get("zone") == 1 for x in bands()), "never located in the corridor"

    # nobody hears it any more
    gone = wait_for("in_range 0 after out_of_range",
                    lambda: next((x for x in bands() if x["metrics"].get("in_range") == 0), None), 10)
    assert gone["metrics"]["zone_exit"] == 1, gone  # last seen at the exit
    assert edge.stop() == 0, edge.tail()
    log(f"bracelet: {len(bands())} readings; SOS latched; room -> corridor -> exit located and "
        "alarmed for R-0417; out of range reported")


if __name__ == "__main__":
    run_test(test_wearable)
