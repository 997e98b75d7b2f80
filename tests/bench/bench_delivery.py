"""What "delivered means stored" costs (issue 10): the full home of
bench_home.py (120 bracelets, 120 Wi-Fi beds, 60 Modbus meters, the
elderly-care pack) through a central Mosquitto to care-hub and InfluxDB, run
with care-edge freeing its spool at

  hub     the hub's acknowledgement (the default, this issue),
  broker  the broker's PUBACK (uplink.delivery: broker), and
  before  the PUBACK, with care-edge as built before this issue (--before DIR,
          a build directory's bin/ of that commit; skipped without it)

on the same machine in one run. Prints for each: readings/s published, care-edge
CPU per reading (µs), the acknowledgement traffic to the gateway (messages/s,
bytes/s), and the delay until the hub's ack covering a reading (p50, p99),
from the reading's own time stamp (which for pushed devices is the device's,
before care-edge appends it) and from its telemetry message's arrival at the
broker (after the append, by at most uplink.batch_interval). A benchmark: never passes or fails on a number.

  python3 tests/bench/bench_delivery.py [--seconds 30] [--rounds 1] [--before /tmp/before/build/bin]
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../integration"))
sys.path.insert(0, os.path.dirname(__file__))
from bench_home import home, proc_stat  # noqa: E402
from harness import BIN, Influx, Mosquitto, World, log  # noqa: E402

TEL = "carehub/v1/bench-home/gw-h/telemetry"
ACK = "carehub/ack/v1/bench-home/gw-h"


def pct(v, p):
    return v[min(len(v) - 1, int(p / 100 * len(v)))] if v else float("nan")


def run(variant, edge_bin, uplink_extra, a):
    w = World(f"bench_delivery_{variant}")
    try:
        local = Mosquitto(w, name="local")
        central = Mosquitto(w, name="central")
        influx = Influx(w)
        hub = w.spawn("care-hub", [w.bin("care-hub"), "-c", w.write("hub.yaml", f"""
mqtt: {{broker: "{central.uri}", client_id: hub-bench}}
influx: {{url: "{influx.url}", version: 1, database: carehub}}
spool: {{dir: "{w.path('hub-spool')}"}}
""")])
        hub.wait_log("subscribed", 10)
        sim_cfg, site, _ = home(w, a.residents, a.meters, local, central, uplink_extra)
        cap = w.spawn("capture", ["mosquitto_sub"] + central.client_args() +
                      ["-q", "1", "-t", TEL, "-t", ACK, "-F", "%U\t%t\t%p"],
                      logpath=w.path("capture.log"))
        sim = w.spawn("care-sim", [w.bin("care-sim"), "-c", sim_cfg, "--stats-interval", "0"])
        sim.wait_log(r"\[sim:mqtt\] connected", 10)
        edge = w.spawn("care-edge", [edge_bin, "-c", site])
        edge.wait_log(r"\[ble:ble-ingics\] connected", 15)
        time.sleep(3)
        c0, _, _ = proc_stat(edge.pid)
        t0, wall0 = time.monotonic(), time.time()
        time.sleep(a.seconds)
        c1, rss, _ = proc_stat(edge.pid)
        dt, wall1 = time.monotonic() - t0, time.time()
        time.sleep(4)  # the acks of the window's last readings
        edge.stop()
        readings = {}  # number -> reading ts (ms), for readings published in the window
        sent = {}      # number -> when its telemetry message reached the broker (ms)
        acks = []      # (arrival ms, payload bytes, ranges)
        with open(cap.logpath, errors="replace") as f:
            for line in f:
                parts = line.rstrip("\n").split("\t", 2)
                if len(parts) != 3:
                    continue
                at, topic, payload = float(parts[0]), parts[1], parts[2]
                try:
                    doc = json.loads(payload)
                except ValueError:
                    continue
                if topic == ACK:
                    acks.append((at * 1000, len(payload), doc.get("readings", [])))
                elif wall0 <= at <= wall1:
                    for k, r in enumerate(doc["readings"]):
                        readings[doc["seq"] + k] = r["ts"]
                        sent.setdefault(doc["seq"] + k, at * 1000)
        delays, msg_delays = [], []
        pending = dict(readings)
        for at, _, ranges in sorted(acks):
            for lo, hi in ranges:
                for n in [n for n in pending if lo <= n <= hi]:
                    delays.append(at - pending.pop(n))
                    msg_delays.append(at - sent[n])
        delays.sort()
        msg_delays.sort()
        in_window = [x for x in acks if wall0 * 1000 <= x[0] <= wall1 * 1000]
        cpu = c1 - c0
        out = {"variant": variant, "readings_per_s": len(readings) / dt,
               "cpu_pct": 100 * cpu / dt,
               "cpu_us_per_reading": 1e6 * cpu / max(1, len(readings)),
               "rss_mib": rss, "acks_per_s": len(in_window) / dt,
               "ack_bytes_per_s": sum(x[1] for x in in_window) / dt,
               "delay_p50_ms": pct(delays, 50), "delay_p99_ms": pct(delays, 99),
               "sent_p50_ms": pct(msg_delays, 50), "sent_p99_ms": pct(msg_delays, 99),
               "unacked": len(pending) if acks else None}
        log(f"{variant}: {out['readings_per_s']:.0f} readings/s, care-edge "
            f"{out['cpu_pct']:.1f} % CPU = {out['cpu_us_per_reading']:.1f} µs/reading, "
            f"{rss:.1f} MiB; acks {out['acks_per_s']:.2f}/s, {out['ack_bytes_per_s']:.0f} B/s; "
            f"reading's ts -> ack p50 {out['delay_p50_ms']:.0f} ms, p99 {out['delay_p99_ms']:.0f} ms; "
            f"its message at the broker -> ack p10 {pct(msg_delays, 10):.0f} ms, p50 "
            f"{out['sent_p50_ms']:.0f} ms, p99 {out['sent_p99_ms']:.0f} ms")
        sim.stop()
        return out
    finally:
        w.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--residents", type=int, default=120)
    ap.add_argument("--meters", type=int, default=60)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--before", help="bin/ of a build from before this issue")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the variants in turn this many times; report each one's median")
    a = ap.parse_args()
    edge = os.path.join(BIN, "care-edge")
    variants = [("hub", edge, ""), ("broker", edge, "delivery: broker")]
    if a.before:
        variants.append(("before", os.path.join(a.before, "care-edge"), ""))
    results = {v[0]: [] for v in variants}
    for _ in range(a.rounds):  # interleaved: a slow minute hits every variant alike
        for name, binary, extra in variants:
            results[name].append(run(name, binary, extra, a))
    # each variant's run of median CPU per reading (the noisiest figure)
    runs = [sorted(rs, key=lambda r: r["cpu_us_per_reading"])[len(rs) // 2]
            for rs in results.values()]
    base = runs[-1]
    for r in runs:
        print(f"RESULT {r['variant']}: readings/s={r['readings_per_s']:.0f} "
              f"cpu_us_per_reading={r['cpu_us_per_reading']:.2f} "
              f"(x{r['cpu_us_per_reading'] / base['cpu_us_per_reading']:.3f} of {base['variant']}) "
              f"acks/s={r['acks_per_s']:.2f} ack_B/s={r['ack_bytes_per_s']:.0f} "
              f"delay_p50_ms={r['delay_p50_ms']:.0f} delay_p99_ms={r['delay_p99_ms']:.0f} "
              f"sent_p50_ms={r['sent_p50_ms']:.0f} sent_p99_ms={r['sent_p99_ms']:.0f}")


if __name__ == "__main__":
    main()
