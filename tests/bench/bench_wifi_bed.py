"""The Wi-Fi bed path of care-edge (issue 14): beds that publish JSON to the
gateway's local broker, care-edge taking each message to the spool and the
central broker. care-sim plays --beds beds, each publishing every
--period; care-edge's devices have a 1 s interval (its liveness clock since
the driver pushes; its poll clock before). A probe bed publishes 10 messages
a second on top, each with its sequence number as its heart rate.

Prints, per build: messages the beds sent against readings care-edge
published (kept %), care-edge's CPU per reading (uplink batches of 1 s, the
default), and for the probe the share of its messages kept and how long
after its publish each kept reading was stamped (a pushed reading is
stamped and spooled in the same call; a polled one was stamped on arrival
but spooled only at the next poll, and only the newest). --before BIN_DIR
runs an older build the same way first, and the ratios. A benchmark: never
passes or fails.

  python3 tests/bench/bench_wifi_bed.py [--beds 200] [--period 1s] [--seconds 20] [--before DIR]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../integration"))
from harness import SRC, Mosquitto, World, log  # noqa: E402

PROBE = "sensors/probe/state"


def period_s(text):
    """Seconds of a care-sim duration ("500ms", "1s", "2m")."""
    for unit, f in (("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)):
        if text.endswith(unit) and text[:-len(unit)].replace(".", "", 1).isdigit():
            return float(text[:-len(unit)]) * f
    return float(text)


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Central:
    """mosquitto_sub on the central broker, collecting payloads."""

    def __init__(self, broker, topic):
        self.proc = subprocess.Popen(["mosquitto_sub"] + broker.client_args() +
                                     ["-q", "1", "-t", topic], stdout=subprocess.PIPE)
        self.got = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            self.got.append(line)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def run(w, label, bindir, beds, period, seconds):
    local = Mosquitto(w, name=f"local-{label}")
    central = Mosquitto(w, name=f"central-{label}")
    sim_beds = "\n".join(f"  - {{name: bed-{i:03d}, topic: sensors/bed/{i:03d}/state, "
                         f"interval: {period}}}" for i in range(beds))
    sim_cfg = w.write(f"sim-{label}.yaml", f"""
seed: 1
mqtt: {{broker: "{local.uri}"}}
wifi_beds:
{sim_beds}
""")
    devs = "\n".join(f"  - {{id: bed-{i:03d}, bus: wifi, topic: sensors/bed/{i:03d}/state, "
                     f"profile: wifi-bed, interval: 1s}}" for i in range(beds))
    site = w.write(f"site-{label}.yaml", f"""
site: bench-wifi
gateway: gw-w
uplink: {{broker: "{central.uri}", delivery: broker}}
spool: {{dir: "{w.path('spool-' + label)}"}}
profiles: [{SRC}/deploy/profiles]
buses:
  - {{id: wifi, type: mqtt, host: 127.0.0.1, port: {local.port}}}
devices:
  - {{id: probe, bus: wifi, topic: {PROBE}, profile: wifi-bed, interval: 1s}}
{devs}
""")
    sub = Central(central, "carehub/v1/bench-wifi/gw-w/telemetry")
    edge = w.spawn(f"care-edge-{label}", [os.path.join(bindir, "care-edge"), "-c", site])
    edge.wait_log(r"\[mqtt-json:wifi\] connected", 10)
    sim = w.spawn(f"care-sim-{label}", [os.path.join(bindir, "care-sim"), "-c", sim_cfg,
                                        "--stats-interval", "0"])
    sim.wait_log(r"\[sim:mqtt\] connected", 10)
    time.sleep(2)  # every bed heard, buffers at their working size
    probe = subprocess.Popen(["mosquitto_pub"] + local.client_args() +
                             ["-q", "1", "-t", PROBE, "-l"], stdin=subprocess.PIPE)
    n0 = len(sub.got)
    c0, t0 = cpu_seconds(edge.pid), time.monotonic()
    sent = {}
    seq = 0
    while time.monotonic() - t0 < seconds:
        seq += 1
        sent[seq] = time.time() * 1000
        probe.stdin.write(json.dumps({"bed": {"occupied": True},
                                      "vitals": {"heart": seq, "breath": 14}}).encode() + b"\n")
        probe.stdin.flush()
        time.sleep(0.1)
    dt = time.monotonic() - t0
    c1 = cpu_seconds(edge.pid)
    probe.stdin.close()
    probe.wait(10)
    time.sleep(2.5)  # the last batches
    sub.stop()
    readings, delays = 0, []
    for line in sub.got[n0:]:
        try:
            for r in json.loads(line)["readings"]:
                if r["measurement"] != "bed":
                    continue
                readings += 1
                hr = r["metrics"].get("hr")
                if r["device"] == "probe" and hr in sent:
                    delays.append(r["ts"] - sent.pop(hr))
        except (ValueError, KeyError):
            pass
    edge.stop()
    sim.stop()
    messages = beds * dt / period_s(period) + seq
    delays.sort()
    res = {
        "kept": 100 * min(readings / messages, 1.0),
        "cpu_us": 1e6 * (c1 - c0) / max(readings, 1),
        "probe_kept": 100 * (seq - len(sent)) / seq,
        "p50": statistics.median(delays) if delays else float("nan"),
        "p99": delays[int(0.99 * (len(delays) - 1))] if delays else float("nan"),
    }
    log(f"{label}: {beds} beds every {period} + a probe at 10/s for {dt:.0f} s: "
        f"{readings} readings of about {messages:.0f} messages ({res['kept']:.0f} % kept), "
        f"care-edge {res['cpu_us']:.1f} us CPU per reading; probe: {res['probe_kept']:.0f} % "
        f"kept, stamped p50 {res['p50']:.1f} ms, p99 {res['p99']:.1f} ms after its publish")
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--beds", type=int, default=200)
    ap.add_argument("--period", default="1s")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--before", help="bin/ of an older build, run the same way first")
    a = ap.parse_args()
    w = World("bench_wifi_bed")
    try:
        before = run(w, "before", a.before, a.beds, a.period, a.seconds) if a.before else None
        now = run(w, "now", os.environ.get("CAREHUB_BIN", os.path.join(SRC, "build/bin")),
                  a.beds, a.period, a.seconds)
        if before:
            log(f"now/before: CPU per reading {now['cpu_us'] / before['cpu_us']:.2f}x; probe "
                f"messages kept {now['probe_kept']:.0f} % vs {before['probe_kept']:.0f} %")
        print("RESULT " + " ".join(f"{k}={v:.1f}" for k, v in now.items()))
    finally:
        w.close()


if __name__ == "__main__":
    main()
