"""Wi-Fi bed sensors that publish JSON to the gateway's local broker (issue
5): a bus of type mqtt, each device with its topic, the profile mapping JSON
fields to the normalised bed metrics, with real Mosquitto brokers.

- Messages become readings (in_bed, hr, rr, movement, presence) on the
  uplink, with the fields the message carried;
- a payload that is not JSON, and one with none of the fields, are rejected,
  logged and counted, and the next good message still counts;
- a bed exit (in_bed 0 for 1 s) raises the rule's alarm;
- a sensor that goes silent is reported offline after three intervals.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SRC, Mosquitto, log, run_test, wait_for  # noqa: E402
from care_site import messages  # noqa: E402

TOPIC = "sensors/bed/301/state"


def state(occupied, heart=64, breath=14):
    return json.dumps({"bed": {"occupied": occupied}, "vitals": {"heart": heart, "breath": breath},
                       "motion": 12, "presence": occupied, "fw": "1.2.3"})


def test_mqtt_bed(w):
    central = Mosquitto(w, name="central")
    local = Mosquitto(w, name="local")
    site = w.write("site.yaml", f"""
site: wifi-home
gateway: gw-w
uplink: {{broker: "{central.uri}", batch_interval: 200ms}}
spool: {{dir: "{w.path('spool')}"}}
profiles: [{SRC}/deploy/profiles]
buses:
  - {{id: wifi, type: mqtt, host: 127.0.0.1, port: {local.port}}}
devices:
  - {{id: bed-301, bus: wifi, topic: "{TOPIC}", profile: wifi-bed, interval: 200ms, room: "301"}}
rules:
  - {{id: bed-exit, when: in_bed == 0, for: 1s, priority: medium, select: {{kind: [bed]}}}}
self_metrics_interval: 1s
""")
    cap = central.subscribe("carehub/v1/wifi-home/gw-w/#", "capture")
    edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", site])
    edge.wait_log(r"\[mqtt-json:wifi\] connected", 10)
    time.sleep(0.3)  # its subscription

    def beds():
        return [r for d in messages(cap, "/telemetry") for r in d["readings"]
                if r["device"] == "bed-301" and r["measurement"] == "bed"]

    for _ in range(3):
        local.publish(TOPIC, state(True))
        time.sleep(0.25)
    got = wait_for("the bed's readings", lambda: beds() if len(beds()) >= 2 else None, 10)
    m = got[0]["metrics"]
    assert m == {"in_bed": 1, "hr": 64, "rr": 14, "movement": 12, "presence": 1}, m
    assert got[0]["units"]["hr"] == "bpm", got[0]

    local.publish(TOPIC, "{not json")
    local.publish(TOPIC, json.dumps({"battery": 80}))
    edge.wait_log(r"\[mqtt-json:bed-301\] message on sensors/bed/301/state rejected \(1 so far\): "
                  r"not JSON", 5)
    # out of bed, and it stays out: published every 250 ms for 2 s
    for _ in range(8):
        local.publish(TOPIC, state(False, heart=0, breath=0))
        time.sleep(0.25)
    edge.wait_log(r"\[alarm:bed-exit:bed-301\] raise", 5)
    occupied = [r["metrics"]["in_bed"] for r in beds()]
    # in bed, then out: the rejected payloads changed nothing in between
    assert occupied == sorted(occupied, reverse=True), occupied
    assert occupied.count(1) >= 2 and occupied.count(0) >= 3, occupied
    # silent: offline after three intervals
    edge.wait_log(r"\[poller:bed-301\] offline", 5)
    assert edge.stop() == 0, edge.tail()
    log(f"Wi-Fi bed sensor: {len(beds())} readings from {TOPIC}, bad payloads rejected, "
        "bed exit alarmed, silence reported offline")


if __name__ == "__main__":
    run_test(test_mqtt_bed)
