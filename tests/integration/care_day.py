"""A night in a care home, played by care-sim over MQTT (issue 5): residents'
bracelets heard by BLE receivers in all three formats (OpenMQTTGateway,
Minew, Ingics) and Wi-Fi bed sensors publish to the gateway's local
Mosquitto; care-edge reads them on its ble and mqtt buses, runs the care
rules and publishes to a central Mosquitto, whose telemetry and alerts are
captured. Each scenario must show in the normalised readings and raise its
alarm:

- a fall and an SOS press (pulses of one or two advertisements): latched;
- a resident at wandering risk walking to the exit: located there, alarmed;
- heart rate drifting above the resident's own limit ($hr_high);
- a bracelet taken off: worn 0 for 10 s;
- a bracelet's battery dying: battery_low, then out of range when flat;
- bed exit at night with no return (Wi-Fi bed);
- a receiver going offline: it publishes nothing more, and the resident it
  heard is still located in their room by the other receiver there.

Scenario times are seconds, so the whole test takes about a minute.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SRC, Mosquitto, log, run_test, wait_for  # noqa: E402
from care_site import messages  # noqa: E402

SITE, GW = "day-home", "gw-d"

# resident -> (bracelet MAC, device id on the edge)
BANDS = {
    "ann": ("C3:00:00:00:01:01", "band-ann"),    # walks to the exit (dementia)
    "bob": ("C3:00:00:00:01:02", "band-bob"),    # falls, presses SOS; his receiver fails
    "cai": ("C3:00:00:00:02:01", "band-cai"),    # heart rate drifts up
    "dan": ("C3:00:00:00:02:02", "band-dan"),    # takes the bracelet off
    "eve": ("C3:00:00:00:03:01", "band-eve"),    # battery dies
    "fay": ("C3:00:00:00:03:02", "band-fay"),    # a quiet night
}

SIM = """
seed: 5
utc_offset_min: 0
start_at: "04:00"          # everyone asleep, no routine trips out of bed
mqtt: {{broker: "{broker}"}}
zones:
  - {{id: room-101, adjacent: [corridor-1]}}
  - {{id: room-102, adjacent: [corridor-1]}}
  - {{id: corridor-1, adjacent: [exit-1]}}
  - {{id: exit-1}}
  - {{id: room-201, adjacent: [corridor-2]}}
  - {{id: room-202, adjacent: [corridor-2]}}
  - {{id: corridor-2}}
  - {{id: room-301, adjacent: [corridor-3]}}
  - {{id: room-302, adjacent: [corridor-3]}}
  - {{id: corridor-3}}
receivers:
  # floor 1: OpenMQTTGateway; room 102 has two receivers, one of them fails
  - {{id: gw-101, format: omg, zone: room-101}}
  - {{id: gw-102a, format: omg, zone: room-102}}
  - {{id: gw-102b, format: omg, zone: room-102}}
  - {{id: gw-c1, format: omg, zone: corridor-1}}
  - {{id: gw-exit1, format: omg, zone: exit-1}}
  # floor 2: Minew gateways; floor 3: Ingics
  - {{id: AC233FA00201, format: minew, zone: room-201}}
  - {{id: AC233FA00202, format: minew, zone: room-202}}
  - {{id: AC233FA00203, format: minew, zone: corridor-2}}
  - {{id: AC233FA00301, format: ingics, zone: room-301}}
  - {{id: AC233FA00302, format: ingics, zone: room-302}}
  - {{id: AC233FA00303, format: ingics, zone: corridor-3}}
wearables:
  - {{mac: "C3:00:00:00:01:01", resident: ann, home: room-101, interval: 500ms}}
  - {{mac: "C3:00:00:00:01:02", resident: bob, home: room-102, interval: 500ms}}
  - {{mac: "C3:00:00:00:02:01", resident: cai, home: room-201, interval: 500ms, hr: 70}}
  - {{mac: "C3:00:00:00:02:02", resident: dan, home: room-202, interval: 500ms}}
  - {{mac: "C3:00:00:00:03:01", resident: eve, home: room-301, interval: 500ms, battery: 40}}
  - {{mac: "C3:00:00:00:03:02", resident: fay, home: room-302, interval: 500ms}}
wifi_beds:
  - {{name: bed-102, topic: sensors/bed/102/state, resident: bob, interval: 500ms}}
  - {{name: bed-302, topic: sensors/bed/302/state, resident: fay, interval: 500ms}}
scenario:
  - {{at: 3s, receiver: gw-102a, fault: silent}}
  - {{at: 5s, wearable: bob, set: {{metric: fall, pulse: 1, for: 1s}}}}
  - {{at: 8s, wearable: bob, set: {{metric: sos, pulse: 1, for: 1s}}}}
  - {{at: 5s, wearable: ann, walk: {{to: exit-1, over: 8s}}}}
  - {{at: 5s, wearable: cai, set: {{metric: hr, ramp_to: 135, over: 8s}}}}
  - {{at: 5s, wearable: dan, set: {{metric: worn, value: 0}}}}
  - {{at: 5s, wearable: eve, set: {{metric: battery, ramp_to: 0, over: 10s}}}}
  - {{at: 5s, wifi_bed: bed-102, set: {{metric: in_bed, value: 0}}}}
"""


def site_yaml(w, central, local):
    def bus(bid, fmt, topics, zones):
        zl = "\n".join(f"        - {{id: {z}, receivers: [{', '.join(r)}]{', exit: true' if z.startswith('exit') else ''}}}"
                       for z, r in zones)
        return f"""  - id: {bid}
    type: ble
    host: 127.0.0.1
    port: {local.port}
    format: {fmt}
    topics: {topics}
    out_of_range: 3s
    location:
      window: 2s
      margin: 6
      dwell: 1s
      zones:
{zl}
"""
    buses = (bus("ble-1", "omg", '["home/+/BTtoMQTT/#"]',
                 [("room-101", ["gw-101"]), ("room-102", ["gw-102a", "gw-102b"]),
                  ("corridor-1", ["gw-c1"]), ("exit-1", ["gw-exit1"])]) +
             bus("ble-2", "minew", '["gw/+/status"]',
                 [("room-201", ["AC233FA00201"]), ("room-202", ["AC233FA00202"]),
                  ("corridor-2", ["AC233FA00203"])]) +
             bus("ble-3", "ingics", '["ingics/#"]',
                 [("room-301", ["AC233FA00301"]), ("room-302", ["AC233FA00302"]),
                  ("corridor-3", ["AC233FA00303"])]))
    floor = {"ann": 1, "bob": 1, "cai": 2, "dan": 2, "eve": 3, "fay": 3}
    devices = "\n".join(f'  - {{id: {dev}, bus: ble-{floor[r]}, mac: "{mac}", profile: care-band, '
                        f'interval: 250ms}}' for r, (mac, dev) in BANDS.items())
    # a window around the wall clock (UTC) stands for "at night"
    now = time.gmtime()
    lo, hi = (now.tm_hour + 23) % 24, (now.tm_hour + 1) % 24
    window = f"{lo:02d}:{now.tm_min:02d}-{hi:02d}:{now.tm_min:02d}"
    return w.write("site.yaml", f"""
site: {SITE}
gateway: {GW}
uplink: {{broker: "{central.uri}", batch_interval: 200ms}}
spool: {{dir: "{w.path('spool')}"}}
profiles: [{SRC}/deploy/profiles]
timezone: UTC
buses:
{buses}  - {{id: wifi, type: mqtt, host: 127.0.0.1, port: {local.port}}}
devices:
{devices}
  - {{id: bed-102, bus: wifi, topic: sensors/bed/102/state, profile: wifi-bed, interval: 250ms, room: "102"}}
  - {{id: bed-302, bus: wifi, topic: sensors/bed/302/state, profile: wifi-bed, interval: 250ms, room: "302"}}
residents:
  - {{id: R-ann, room: "101", devices: [band-ann], wandering_risk: true}}
  - {{id: R-bob, room: "102", devices: [band-bob, bed-102]}}
  - {{id: R-cai, room: "201", devices: [band-cai], params: {{hr_high: 110}}}}
  - {{id: R-dan, room: "202", devices: [band-dan]}}
  - {{id: R-eve, room: "301", devices: [band-eve]}}
  - {{id: R-fay, room: "302", devices: [band-fay, bed-302], wandering_risk: true}}
rules:
  - {{id: sos, when: sos == 1, latch: true, priority: high, select: {{kind: [wearable]}}}}
  - {{id: fall, when: fall == 1, latch: true, priority: high, select: {{kind: [wearable]}}}}
  - {{id: wandering, when: zone_exit == 1, priority: high, select: {{wandering_risk: true}}}}
  - {{id: not-worn, when: worn == 0, for: 10s, priority: low, select: {{kind: [wearable]}}}}
  - {{id: battery, when: battery_low == 1, priority: low, select: {{kind: [wearable]}}}}
  - {{id: heart-rate, when: worn == 1 and (hr < $hr_low or hr > $hr_high), for: 1s,
      params: {{hr_low: 40, hr_high: 130}}, priority: high, select: {{kind: [wearable]}}}}
  - {{id: bed-exit-night, when: in_bed == 0, for: 3s, window: "{window}", priority: medium,
      select: {{kind: [bed]}}}}
self_metrics_interval: 1s
""")


def test_care_day(w):
    central = Mosquitto(w, name="central")
    local = Mosquitto(w, name="local")
    cap = central.subscribe(f"carehub/v1/{SITE}/{GW}/#", "capture")
    rx_cap = local.subscribe("home/gw-102a/#", "gw102a")
    site = site_yaml(w, central, local)
    edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", site])
    for b in ("ble-1", "ble-2", "ble-3"):
        edge.wait_log(rf"\[ble:{b}\] connected", 10)
    edge.wait_log(r"\[mqtt-json:wifi\] connected", 10)
    time.sleep(0.3)  # subscriptions
    sim_cfg = w.write("sim.yaml", SIM.format(broker=local.uri))
    sim = w.spawn("care-sim", [w.bin("care-sim"), "-c", sim_cfg, "--stats-interval", "5s"])
    sim.wait_log(r"\[sim:mqtt\] connected", 10)
    t0 = time.monotonic()

    def readings(dev):
        return [r for d in messages(cap, "/telemetry") for r in d["readings"]
                if r["device"] == dev and r["measurement"] in ("wearable", "bed")]

    def alerts(alarm_id):
        return [a for a in messages(cap, "/alert") if a["alarm_id"] == alarm_id]

    def metric_seen(dev, pred):
        return next((r for r in readings(dev) if pred(r["metrics"])), None)

    # before the scenario: everyone in their room, worn, in range
    for res, (_, dev) in BANDS.items():
        home = {"ann": "room-101", "bob": "room-102", "cai": "room-201", "dan": "room-202",
                "eve": "room-301", "fay": "room-302"}[res]
        r = wait_for(f"{dev} located in {home}",
                     lambda: next((x for x in readings(dev) if x.get("room") == home), None), 10)
        m = r["metrics"]
        assert m["worn"] == 1 and m["in_range"] == 1 and m["sos"] == 0 and m["fall"] == 0, (dev, m)
        assert 40 <= m["hr"] <= 110, (dev, m)
    bed = wait_for("bed-302 occupied",
                   lambda: metric_seen("bed-302", lambda m: m["in_bed"] == 1 and m["hr"] > 0), 5)
    assert bed["metrics"]["presence"] == 1, bed

    # the alarms, each from its own scenario
    expected = {
        "fall:band-bob": "R-bob", "sos:band-bob": "R-bob", "wandering:band-ann": "R-ann",
        "heart-rate:band-cai": "R-cai", "not-worn:band-dan": "R-dan",
        "battery:band-eve": "R-eve", "bed-exit-night:bed-102": "R-bob",
    }
    for alarm_id, resident in expected.items():
        a = wait_for(f"alarm {alarm_id}", lambda: next(iter(alerts(alarm_id)), None),
                     max(5.0, 40 - (time.monotonic() - t0)))
        assert a["resident"] == resident and a["state"] != "normal", a
    log(f"all {len(expected)} alarms raised {time.monotonic() - t0:.1f}s after care-sim started")

    # ... and the normalised readings behind them
    assert metric_seen("band-bob", lambda m: m["fall"] == 1), "no fall reading"
    assert metric_seen("band-bob", lambda m: m["sos"] == 1), "no SOS reading"
    ex = metric_seen("band-ann", lambda m: m["zone_exit"] == 1)
    assert ex and next(r for r in readings("band-ann") if r["metrics"]["zone_exit"] == 1).get("room") == "exit-1"
    assert any(r.get("room") == "corridor-1" for r in readings("band-ann")), "never seen in the corridor"
    assert metric_seen("band-cai", lambda m: m["hr"] > 110 and m["worn"] == 1), "no high heart rate"
    off = metric_seen("band-dan", lambda m: m["worn"] == 0)
    assert off and off["metrics"]["hr"] == 0 and off.get("room") == "room-202", off
    assert metric_seen("band-eve", lambda m: m["battery_low"] == 1 and m["battery"] <= 20)
    gone = wait_for("band-eve out of range once flat",
                    lambda: metric_seen("band-eve", lambda m: m["in_range"] == 0), 15)
    assert gone["metrics"]["battery_low"] == 1, gone
    assert metric_seen("bed-102", lambda m: m["in_bed"] == 0 and m["hr"] == 0)
    # no alarms where nothing happened
    for quiet in ("wandering:band-fay", "bed-exit-night:bed-302", "heart-rate:band-ann",
                  "not-worn:band-bob", "battery:band-fay"):
        assert not alerts(quiet), alerts(quiet)

    # the failed receiver: silent from 3 s on, bob still located in his room by the other
    def gw102a_count():
        with open(rx_cap.logpath, errors="replace") as f:
            return sum(1 for _ in f)
    n = gw102a_count()
    assert n > 0, "gw-102a was never heard before it failed"
    time.sleep(2)
    assert gw102a_count() == n, "gw-102a still publishing after its fault"
    late = [r for r in readings("band-bob") if r["ts"] > (time.time() - 4) * 1000]
    assert late and all(r.get("room") == "room-102" and r["metrics"]["in_range"] == 1 for r in late), late
    sim.wait_log(r"\[sim:gw-102a\] scenario 3s: fault silent", 1)

    assert sim.stop() == 0, sim.tail()
    assert edge.stop() == 0, edge.tail()
    log(f"care day: {sum(len(readings(d)) for _, d in BANDS.values())} bracelet readings over "
        f"3 receiver formats, {len(readings('bed-102')) + len(readings('bed-302'))} Wi-Fi bed "
        f"readings; fall, SOS, wandering, heart rate, not worn, battery, bed exit alarmed; "
        f"bob located by gw-102b with gw-102a offline")


if __name__ == "__main__":
    run_test(test_care_day)
