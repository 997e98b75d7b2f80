"""Alarm latency: from a reading entering care-edge to the alarm on the local
console's event stream, on the local broker, and in InfluxDB through the
central broker and care-hub. Prints p50/p99; never passes or fails on a
number.

N nurse-call panels on care-sim (Modbus TCP), polled every 100 ms; panel i's
SOS is pulled at 3 s + i x 0.5 s. The start of each measurement is the
timestamp of the first reading with sos == 1 (taken when care-edge polled
it, so the Modbus round trip is included); the ends are the arrival times at
an SSE client of the console, at a subscriber of the local broker
(mosquitto_sub %U) and the first moment the point can be queried from
InfluxDB (polled every 20 ms).

  python3 tests/bench/bench_alarm.py [--panels 40]
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../integration"))
from harness import SRC, Console, Influx, Mosquitto, World, free_port, log  # noqa: E402

PASSWORD = "bench password 1"


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--panels", type=int, default=40)
    args = ap.parse_args()
    n = args.panels
    w = World("bench-alarm")
    try:
        influx = Influx(w)
        central = Mosquitto(w, name="central")
        local = Mosquitto(w, name="local")
        port = free_port()
        scen = "\n".join(f"  - {{at: {3 + 0.5 * i:.1f}s, slave: panel-{i + 1}, set: {{metric: sos, value: 1}}}}"
                         for i in range(n))
        sim_cfg = w.write("sim.yaml", f"""
seed: 3
endpoints:
  - {{id: lan, tcp: "127.0.0.1:{port}"}}
slaves:
  - {{name: panel, endpoint: lan, unit: 1, model: call-panel, count: {n}}}
scenario:
{scen}
""")
        hub_cfg = w.write("hub.yaml", f"""
mqtt: {{broker: "{central.uri}", client_id: hub-bench}}
influx: {{url: "{influx.url}", version: 1, database: carehub, flush_interval: 100ms}}
spool: {{dir: hub-spool}}
""")
        w.spawn("care-hub", [w.bin("care-hub"), "-c", hub_cfg])
        hashed = subprocess.run([w.bin("care-edge"), "--hash-password"], input=PASSWORD + "\n",
                                capture_output=True, text=True, check=True).stdout.strip()
        cport = free_port()
        devs = "\n".join(f"  - {{id: panel-{i + 1}, bus: lan, slave: {i + 1}, profile: call-panel, "
                         f"interval: 100ms, room: r{i + 1}}}" for i in range(n))
        site = w.write("site.yaml", f"""
site: bench-site
gateway: gw-a
uplink: {{broker: "{central.uri}", batch_interval: 100ms}}
spool: {{dir: "{w.path('spool')}"}}
profiles: [{SRC}/deploy/profiles]
buses:
  - {{id: lan, type: modbus-tcp, host: 127.0.0.1, port: {port}, timeout: 500ms}}
devices:
{devs}
rules:
  - {{id: sos, when: sos == 1, priority: high, select: {{kind: [call]}}}}
alarms: {{flood_count: 100000}}
console:
  enabled: true
  bind: 127.0.0.1
  port: {cport}
  users: [{{name: bench, password_hash: "{hashed}"}}]
local_mqtt: {{broker: "{local.uri}"}}
""")
        tel = w.spawn("tel", ["mosquitto_sub"] + central.client_args() +
                      ["-q", "1", "-t", "carehub/v1/bench-site/gw-a/telemetry"],
                      logpath=w.path("tel.json"))
        loc = w.spawn("loc", ["mosquitto_sub"] + local.client_args() +
                      ["-q", "1", "-t", "carehub/v1/bench-site/gw-a/alert", "-F", "%U\t%p"],
                      logpath=w.path("loc.tsv"))
        time.sleep(0.3)
        edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", site])
        edge.wait_log("serving the alarm console", 10)
        con = Console(cport, "bench", PASSWORD)
        con.listen()
        w.spawn("care-sim", [w.bin("care-sim"), "-c", sim_cfg]).wait_log("care-sim ready", 10)

        seen_influx = {}
        stop = threading.Event()

        def poll_influx():
            while not stop.is_set():
                try:
                    for r in influx.series('SELECT "escalation", "device" FROM "alarm" WHERE "event" = \'raise\'',
                                           "carehub"):
                        seen_influx.setdefault(r["device"], time.time())
                except Exception:
                    pass
                time.sleep(0.02)

        th = threading.Thread(target=poll_influx, daemon=True)
        th.start()
        deadline = time.time() + 3 + 0.5 * n + 15
        while time.time() < deadline and len(seen_influx) < n:
            time.sleep(0.2)
        stop.set()
        th.join()
        edge.stop()

        first_sos = {}
        with open(tel.logpath) as f:
            for line in f:
                doc = json.loads(line)
                for r in doc["readings"]:
                    if r["metrics"].get("sos") == 1:
                        first_sos.setdefault(r["device"], r["ts"] / 1000)
        sse = {}
        # SSE events carry arrival times on the monotonic clock: convert
        offset = time.time() - time.monotonic()
        with con.lock:
            for t_mono, name, d in con.events:
                if name == "alert" and isinstance(d, dict) and d.get("event") == "raise":
                    sse.setdefault(d["device"], t_mono + offset)
        locb = {}
        with open(loc.logpath) as f:
            for line in f:
                ts, payload = line.rstrip("\n").split("\t", 1)
                d = json.loads(payload)
                if d.get("event") == "raise":
                    locb.setdefault(d["device"], float(ts))
        for name, arr in (("console event stream", sse), ("local broker", locb),
                          ("InfluxDB via hub", seen_influx)):
            lat = [1000 * (arr[d] - first_sos[d]) for d in first_sos if d in arr]
            if not lat:
                print(f"{name:22s}: no samples")
                continue
            print(f"{name:22s}: p50 {pct(lat, 50):6.1f} ms  p99 {pct(lat, 99):6.1f} ms  "
                  f"max {max(lat):6.1f} ms  ({len(lat)} alarms)")
    finally:
        w.close()


if __name__ == "__main__":
    main()
