"""care-edge throughput and footprint with 100 devices: readings/s from
care-sim (Modbus TCP) through care-edge to the broker, care-edge's CPU per
reading and its resident memory. Prints figures; never passes or fails on a
number.

  python3 tests/bench/bench_edge.py [--devices 100] [--buses 4] [--interval 100ms] [--seconds 20]
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../integration"))
from harness import SRC, Mosquitto, World, free_port, log  # noqa: E402


def proc_stat(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    status = {l.split(":")[0]: l.split()[1] for l in open(f"/proc/{pid}/status") if len(l.split()) > 1}
    return cpu, int(status["VmRSS"]) // 1024, int(status["VmHWM"]) // 1024


def run(w, mqtt, n_dev, n_bus, interval, seconds):
    port = free_port()
    sim_cfg = w.write(f"sim-{interval}.yaml", f"""
seed: 1
endpoints:
  - {{id: lan, tcp: "127.0.0.1:{port}"}}
slaves:
  - {{name: air, endpoint: lan, unit: 1, model: air-board, count: {n_dev}}}
""")
    sim = w.spawn(f"care-sim-{interval}", [w.bin("care-sim"), "-c", sim_cfg])
    sim.wait_log("care-sim ready", 10)
    buses = "\n".join(f"  - {{id: gw{b}, type: modbus-tcp, host: 127.0.0.1, port: {port}}}"
                      for b in range(n_bus))
    devs = "\n".join(f"  - {{id: air-{i + 1:03d}, bus: gw{i % n_bus}, slave: {i + 1}, "
                     f"profile: air-board, interval: {interval}, room: r{i + 1:03d}}}"
                     for i in range(n_dev))
    site = w.write(f"site-{interval}.yaml", f"""
site: bench-site
gateway: gw-1
uplink: {{broker: "{mqtt.uri}", batch_interval: 1s}}
spool: {{dir: "{w.path('spool-' + interval)}"}}
profiles: [{SRC}/deploy/profiles]
buses:
{buses}
devices:
{devs}
self_metrics_interval: 60s
""")
    stats = w.path(f"stats-{interval}.json")
    edge = w.spawn(f"care-edge-{interval}", [w.bin("care-edge"), "-c", site, "--stats-file", stats])
    cap = mqtt.subscribe("carehub/v1/bench-site/gw-1/telemetry", f"capture-{interval}")
    edge.wait_log("connected to", 10)
    time.sleep(2)  # let the schedule settle
    cpu0, _, _ = proc_stat(edge.pid)
    t0, w0 = time.monotonic(), time.time() * 1000
    time.sleep(seconds)
    cpu1, rss, hwm = proc_stat(edge.pid)
    elapsed, w1 = time.monotonic() - t0, time.time() * 1000
    edge.stop()
    sim.stop()
    time.sleep(0.5)
    cap.stop()
    # readings polled inside the window, as the broker saw them
    total = 0
    with open(cap.logpath) as f:
        for line in f:
            doc = json.loads(line.split("\t", 1)[1])
            total += sum(1 for r in doc["readings"]
                         if r["measurement"] == "environment" and w0 <= r["ts"] < w1)
    with open(stats) as f:
        st = json.load(f)
    requests = sum(d["requests"] for d in st["devices"].values())
    polls = sum(d["polls_ok"] + d["polls_failed"] for d in st["devices"].values())
    rate = total / elapsed
    per = 1e6 * (cpu1 - cpu0) / max(1, total)
    print(f"{n_dev} devices on {n_bus} Modbus TCP connections, interval {interval}: "
          f"{rate:7.0f} readings/s delivered to the broker, {requests / max(polls, 1):.2f} "
          f"requests/poll, care-edge CPU {100 * (cpu1 - cpu0) / elapsed:4.1f}% "
          f"({per:.0f} us/reading), RSS {rss} MiB (peak {hwm} MiB)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--buses", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=20)
    a = ap.parse_args()
    w = World("bench-edge")
    try:
        mqtt = Mosquitto(w)
        # 10ms: above what the schedule asks of 100 meters in practice, to find the ceiling
        for interval in ("10ms", "100ms", "1s"):
            run(w, mqtt, a.devices, a.buses, interval, a.seconds)
    finally:
        w.close()


if __name__ == "__main__":
    main()
