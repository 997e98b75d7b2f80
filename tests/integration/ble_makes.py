"""One wearable table per site (issue 14): a bracelet heard by BLE
receivers of three makes, each make on a bus of its own (OpenMQTTGateway,
Minew JSON-RAW, Ingics), through real Mosquitto brokers and care-edge.

The bracelet is a device of the OpenMQTTGateway bus only; room 201 has a
receiver of two makes, the corridor a Minew one, the exit an Ingics one.

- each advertisement, heard by every receiver, is one reading (the copies
  of other makes are duplicates, not new readings);
- the zone is the one whose receiver hears it loudest across makes: room
  201 by its Minew receiver, then the exit by the Ingics one (zone_exit 1
  and the wandering alarm), which the bracelet's own bus cannot hear;
- an SOS that only the Ingics receiver heard raises the alarm;
- what each bus's receivers send that cannot be read is logged and counted
  per bus and reason in edge_bus (a broken receiver is not a quiet one).
"""
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SRC, Mosquitto, log, run_test, wait_for  # noqa: E402
from care_site import messages  # noqa: E402

MAC = "C3:00:00:AB:CD:17"
BARE = MAC.replace(":", "")
OMG_201, MINEW_201, MINEW_CORR, INGICS_EXIT = "gw-201", "AC233FA00102", "AC233FA00103", \
    "AC233FA00104"


def mfr(flags, hr):
    return f"ffff5a{flags:02x}{hr:02x}"  # battery 90 %


def raw(flags, hr):
    """The whole advertisement as a raw receiver forwards it: flags, then
    the manufacturer data."""
    return "020106" + "06ff" + mfr(flags, hr)


def send(local, rx, rssi, flags=0x04, hr=72):
    """One copy of the bracelet's advertisement, as receiver rx forwards it."""
    if rx == OMG_201:
        local.publish(f"home/{rx}/BTtoMQTT/{BARE}",
                      json.dumps({"id": MAC, "rssi": rssi, "manufacturerdata": mfr(flags, hr)}))
    elif rx in (MINEW_201, MINEW_CORR):
        local.publish(f"gw/{rx}/status", json.dumps(
            [{"type": "Gateway", "mac": rx},
             {"type": "Unknown", "mac": BARE, "rssi": rssi, "rawData": raw(flags, hr)}]))
    else:
        local.publish("ingics/floor2", f"$GPRP,{BARE},{rx},{rssi},{raw(flags, hr)}")


def hear(local, rssi, flags=0x04, hr=72):
    """One advertisement heard by all four receivers, at rssi[receiver]."""
    for rx in (OMG_201, MINEW_201, MINEW_CORR, INGICS_EXIT):
        send(local, rx, rssi.get(rx, -90), flags, hr)


def test_ble_makes(w):
    central = Mosquitto(w, name="central")
    local = Mosquitto(w, name="local")
    loc = "window: 2s, margin: 6, dwell: 1s"
    site = w.write("site.yaml", f"""
site: ble-makes
gateway: gw-m
uplink: {{broker: "{central.uri}", batch_interval: 200ms}}
spool: {{dir: "{w.path('spool')}"}}
profiles: [{SRC}/deploy/profiles]
buses:
  - {{id: ble-omg, type: ble, host: 127.0.0.1, port: {local.port}, format: omg,
     topics: ["home/+/BTtoMQTT/#"], out_of_range: 30s,
     location: {{{loc}, zones: [{{id: room-201, receivers: [{OMG_201}]}}]}}}}
  - {{id: ble-minew, type: ble, host: 127.0.0.1, port: {local.port}, format: minew,
     topics: ["gw/+/status"],
     location: {{{loc}, zones: [{{id: room-201, receivers: [{MINEW_201}]}},
                              {{id: corridor-2, receivers: [{MINEW_CORR}]}}]}}}}
  - {{id: ble-ingics, type: ble, host: 127.0.0.1, port: {local.port}, format: ingics,
     topics: ["ingics/#"],
     location: {{{loc}, zones: [{{id: exit-east, exit: true, receivers: [{INGICS_EXIT}]}}]}}}}
devices:
  - {{id: band-17, bus: ble-omg, mac: "{MAC}", profile: care-band, interval: 100ms, room: "201"}}
residents:
  - {{id: R-0417, room: "201", devices: [band-17], wandering_risk: true}}
rules:
  - {{id: sos, when: sos == 1, latch: true, priority: high, select: {{kind: [wearable]}}}}
  - {{id: wandering, when: zone_exit == 1, priority: high, select: {{wandering_risk: true}}}}
self_metrics_interval: 1s
""")
    cap = central.subscribe("carehub/v1/ble-makes/gw-m/#", "capture")
    edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", site])
    for bus in ("ble-omg", "ble-minew", "ble-ingics"):
        edge.wait_log(rf"\[ble:{bus}\] connected", 10)
    time.sleep(0.3)

    def bands():
        return [r for d in messages(cap, "/telemetry") for r in d["readings"]
                if r["device"] == "band-17" and r["measurement"] == "wearable"]

    # in room 201, loudest on its Minew receiver: copies 100 ms and more
    # apart (one mosquitto_pub each), polled every 100 ms
    room = {OMG_201: -60, MINEW_201: -50, MINEW_CORR: -80, INGICS_EXIT: -92}
    for i in range(5):  # each advertisement says something new: its heart rate
        hear(local, room, hr=60 + i)
        time.sleep(0.3)
    # scored by its loudest receiver, the Minew one (a first reading may
    # come before the Minew copy of that advertisement: -60, the OMG one)
    r = wait_for("a reading located in room-201 by its Minew receiver",
                 lambda: next((x for x in bands() if x.get("room") == "room-201" and
                               x["metrics"]["rssi"] == -50), None), 10)
    assert r["metrics"]["zone_exit"] == 0, r
    wait_for("the last advertisement's reading",
             lambda: any(x["metrics"].get("hr") == 64 for x in bands()), 5)
    time.sleep(0.5)
    n = len(bands())
    hrs = [x["metrics"]["hr"] for x in bands()]
    # each advertisement once, in order, though four receivers of three makes
    # forwarded it (a change of zone may repeat one)
    assert sorted(set(hrs)) == [60, 61, 62, 63, 64] and hrs == sorted(hrs), hrs
    assert n <= 5 + 1, f"{n} readings for 5 advertisements: {hrs}"

    # an SOS only the exit's Ingics receiver heard
    send(local, INGICS_EXIT, -70, flags=0x05)
    edge.wait_log(r"\[alarm:sos:band-17\] raise", 5)

    # at the exit: loudest on the Ingics receiver, which the OMG bus cannot hear
    for _ in range(8):
        hear(local, {OMG_201: -88, MINEW_201: -86, MINEW_CORR: -80, INGICS_EXIT: -45})
        time.sleep(0.3)
    edge.wait_log(r"\[alarm:wandering:band-17\] raise", 10)
    at_exit = [x for x in bands() if x["metrics"].get("zone_exit") == 1]
    assert at_exit and at_exit[-1]["room"] == "exit-east", bands()[-3:]
    assert at_exit[-1]["metrics"]["rssi"] == -45, at_exit[-1]

    # what cannot be read, on each bus
    local.publish(f"home/{OMG_201}/BTtoMQTT/{BARE}", "{not json")
    local.publish(f"gw/{MINEW_201}/status", json.dumps([{"mac": BARE, "rssi": -50,
                                                          "rawData": "0zz"}]))
    local.publish("ingics/floor2", "$GPRP,nonsense")
    for bus in ("ble-omg", "ble-minew", "ble-ingics"):
        edge.wait_log(rf"\[ble:{bus}\] 1 rejected from the receivers \(1 new, of \d+ messages\)", 5)

    def bus_metrics():
        out = {}
        for d in messages(cap, "/telemetry"):
            for x in d["readings"]:
                if x["measurement"] == "edge_bus":
                    out[x["device"]] = x["metrics"]
        return out
    got = wait_for("edge_bus counting each bus's rejection",
                   lambda: (lambda m: m if all(m.get(b, {}).get("rejected") == 1 for b in
                                               ("ble-omg", "ble-minew", "ble-ingics")) else None)
                   (bus_metrics()), 5)
    assert got["ble-omg"]["rejected_json"] == 1, got
    assert got["ble-minew"]["rejected_hex"] == 1, got
    assert got["ble-ingics"]["rejected_line"] == 1, got
    assert got["ble-minew"]["advertisements"] >= 2 * 13, got  # two Minew receivers
    assert edge.stop() == 0, edge.tail()

    # zones that cannot be merged are a configuration error, at --check
    bad = w.write("bad.yaml", open(site).read().replace(
        f"{{id: corridor-2, receivers: [{MINEW_CORR}]}}",
        f"{{id: corridor-2, receivers: [{MINEW_CORR}, gw-201]}}"))
    chk = subprocess.run([w.bin("care-edge"), "--check", "-c", bad], capture_output=True,
                         text=True, timeout=30)
    assert chk.returncode == 2, (chk.returncode, chk.stderr)
    assert re.search(r"bad\.yaml:\d+:\d+: error: key 'location': the site's BLE zones .* "
                     r"receiver gw-201 is in another zone", chk.stderr), chk.stderr
    log(f"three makes, one table: {n} readings for 5 advertisements x 4 receivers; located by the "
        "loudest across makes (room-201 by Minew, exit by Ingics); SOS heard by Ingics alone "
        "raised; rejections per bus: " +
        ", ".join(f"{b} {m['rejected']}" for b, m in sorted(got.items())))


if __name__ == "__main__":
    run_test(test_ble_makes)
