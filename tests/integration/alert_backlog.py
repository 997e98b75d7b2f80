"""An alarm raised while a large telemetry backlog is spooled reaches the hub
before the backlog has drained (issue 3, test 3), and the time from the
broker coming back to the first alert delivered.

20 air boards polled every 100 ms (200 readings/s) while the central broker
is down; the nap-room board's CO2 climbs past the limit during the outage,
so an alarm is raised into the spool's alert lane behind ~1,800 spooled
readings. The broker comes back; the backlog replays at 300 readings/s
(several seconds), and the alert must arrive at the broker — and so at
care-hub, which subscribes in order — ahead of the end of the backlog. In the
end InfluxDB has the alert and every reading, each once.
"""
import datetime
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (SRC, Influx, Mosquitto, free_port, log, run_test, seq_coverage,  # noqa: E402
                     wait_for)

DB = "carehub"
N = 20
OUTAGE_S = 9


def test_alert_ahead_of_backlog(w):
    influx = Influx(w)
    mqtt = Mosquitto(w, name="central", start=False, persistent=True)
    port = free_port()
    sim_cfg = w.write("sim.yaml", f"""
seed: 5
endpoints:
  - {{id: lan, tcp: "127.0.0.1:{port}"}}
slaves:
  - {{name: air, endpoint: lan, unit: 1, model: air-board, count: {N}}}
scenario:
  - {{at: 4s, slave: air-1, set: {{metric: co2, ramp_to: 2500, over: 1s}}}}
""")
    sim = w.spawn("care-sim", [w.bin("care-sim"), "-c", sim_cfg])
    sim.wait_log("care-sim ready", 10)
    devices = "\n".join(f"  - {{id: air-{i}, bus: lan, slave: {i}, profile: air-board, "
                        f"interval: 100ms, room: r{i}}}" for i in range(1, N + 1))
    site = w.write("site.yaml", f"""
site: backlog-site
gateway: gw-b
uplink: {{broker: "{mqtt.uri}", batch_interval: 200ms, batch_max: 200}}
spool: {{dir: "{w.path('spool')}", replay_rate: 300}}
profiles: [{SRC}/deploy/profiles]
buses:
  - {{id: lan, type: modbus-tcp, host: 127.0.0.1, port: {port}, timeout: 500ms}}
devices:
{devices}
rules:
  - {{id: co2-high, when: co2 > 1000, priority: high, select: {{device: [air-1]}}}}
self_metrics_interval: 1s
""")
    stats = w.path("stats.json")
    edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", site, "--stats-file", stats])
    edge.wait_log(r"\[alarm:co2-high:air-1\] raise", 15)
    time.sleep(max(0.0, OUTAGE_S - 5))

    mqtt.start()
    back = time.time()
    cap = w.spawn("capture", ["mosquitto_sub"] + mqtt.client_args() +
                  ["-q", "1", "-v", "-t", "carehub/v1/backlog-site/gw-b/#", "-F", "%U\t%t\t%p"],
                  logpath=w.path("capture.tsv"))
    hub_cfg = w.write("hub.yaml", f"""
mqtt: {{broker: "{mqtt.uri}", client_id: hub-backlog}}
influx: {{url: "{influx.url}", version: 1, database: {DB}, flush_interval: 300ms}}
spool: {{dir: hub-spool}}
""")
    w.spawn("care-hub", [w.bin("care-hub"), "-c", hub_cfg])

    def spooled():
        with open(cap.logpath, errors="replace") as f:
            return sum(1 for line in f if '"historical":true' in line)

    wait_for("the backlog to start replaying", lambda: spooled() > 0, 30)
    # let the whole backlog drain (it replays at 300/s beside the live data)
    prev = -1
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(1.5)
        now = spooled()
        if now == prev:
            break
        prev = now
    assert edge.stop() == 0, edge.tail()
    time.sleep(0.5)
    cap.stop()

    first_alert = last_hist = None
    hist_after_alert = hist_msgs = 0
    with open(cap.logpath, errors="replace") as f:
        for line in f:
            ts, topic, payload = line.rstrip("\n").split("\t", 2)
            t = float(ts)
            if topic.endswith("/alert"):
                doc = json.loads(payload)
                if first_alert is None and doc["alarm_id"] == "co2-high:air-1":
                    first_alert = t
            elif topic.endswith("/telemetry") and '"historical":true' in payload:
                hist_msgs += 1
                last_hist = t
                if first_alert is not None:
                    hist_after_alert += len(json.loads(payload)["readings"])
    assert first_alert is not None, "the alert never reached the broker"
    assert hist_msgs > 0, "no backlog was replayed"
    assert first_alert < last_hist and hist_after_alert > 0, \
        f"the alert came after the backlog (alert {first_alert}, last backlog message {last_hist})"

    with open(stats) as f:
        last = json.load(f)["last_seq"]
    wait_for("every reading in InfluxDB",
             lambda: (lambda c: c if c[0] == last and c[1] == last else None)(
                 seq_coverage(influx, DB, "gw-b")), 60, 0.5)
    pts = influx.series("SELECT * FROM \"alarm\" WHERE \"alarm_id\" = 'co2-high:air-1'", DB)
    assert any(p["event"] == "raise" for p in pts), pts
    # when care-edge saw the broker again (its reconnect back-off runs from
    # the broker's return to this moment)
    m = re.findall(r"^(\S+) I \[uplink\] connected to", edge.output(), re.M)
    reconnected = datetime.datetime.strptime(m[-1], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    log(f"alert raised behind the backlog; broker back -> care-edge reconnected "
        f"{reconnected - back:.1f} s (back-off) -> first alert at the broker "
        f"{1000 * (first_alert - reconnected):.0f} ms later; {hist_after_alert} backlog readings "
        f"({hist_msgs} historical messages in all) arrived after it; backlog drained "
        f"{last_hist - first_alert:.1f} s after the alert; {last} readings stored once each")


if __name__ == "__main__":
    run_test(test_alert_ahead_of_backlog)
