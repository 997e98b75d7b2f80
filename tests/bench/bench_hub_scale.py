"""Hub ingest when scaling out: points/s from MQTT into InfluxDB through one
care-hub, through two care-hubs sharing one subscription ($share/...), and
curl writing the same line protocol straight to InfluxDB (the limit), with
ratios. Two load shapes: bench_hub.py's (few big messages) and a
gateway-like one (many messages of a few readings). Each run writes to a
fresh database; each path runs several times, interleaved with the others,
and the median is printed (the machine is shared: single runs vary by
tens of percent). Prints figures; never passes or fails on a number. About
a minute.

  python3 tests/bench/bench_hub_scale.py [--big 200x500] [--small 5000x10] [--rounds 3]
"""
import argparse
import os
from statistics import median
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from bench_hub import count, make_payloads  # noqa: E402
from harness import Influx, Mosquitto, World, wait_for  # noqa: E402

TOPIC = "carehub/v1/bench-site/gw-1/telemetry"
CURL_LINES = 5000


def cpu_s(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def through_hubs(w, influx, mqtt, n_hubs, msgs, total, db):
    """Publishes msgs to n_hubs care-hubs on one shared subscription;
    returns (seconds until InfluxDB holds every point, hub CPU seconds,
    messages each hub got, seconds the publisher took)."""
    influx.query(f"CREATE DATABASE {db}")
    hubs = []
    for i in range(n_hubs):
        cfg = w.write(f"{db}-{i}.yaml", f"""
mqtt: {{broker: "{mqtt.uri}", client_id: {db}-{i}, shared_group: {db}, clean_session: true}}
influx: {{url: "{influx.url}", version: 1, database: {db}, batch_size: 5000, flush_interval: 200ms}}
spool: {{dir: spool-{db}-{i}}}
# one gateway as fast as it goes: no quota, no inventory, a queue for all of it (issue 11)
ingest: {{rate: 10000000, burst: 100000000, devices_before_birth: 10000,
          queue_bytes: 1073741824, queue_max_bytes: 1073741824}}
self_metrics_interval: 60s
""")
        hubs.append(w.spawn(f"care-hub-{db}-{i}", [w.bin("care-hub"), "-c", cfg]))
    for h in hubs:
        h.wait_log(r"subscribed to \$share/", 10)
    start = time.monotonic()
    p = subprocess.run(["mosquitto_pub"] + mqtt.client_args() + ["-q", "1", "-t", TOPIC, "-l"],
                       input="\n".join(msgs) + "\n", text=True, timeout=120)
    assert p.returncode == 0
    published = time.monotonic() - start
    wait_for(f"{total} points in {db}", lambda: count(influx, db) >= total, 120, 0.1)
    took = time.monotonic() - start
    cpu = sum(cpu_s(h.pid) for h in hubs)
    for h in hubs:
        assert h.stop() == 0, h.tail()
    got = []
    for h in hubs:
        line = [ln for ln in h.output().splitlines() if "final counters:" in ln][-1]
        got.append(int(line.split(" messages_received=")[1].split()[0]))
    return took, cpu, got, published


def through_curl(w, influx, lines, db):
    influx.query(f"CREATE DATABASE {db}")
    paths = [w.write(f"{db}-{i}.lp", "\n".join(lines[i:i + CURL_LINES]) + "\n")
             for i in range(0, len(lines), CURL_LINES)]
    start = time.monotonic()
    for path in paths:
        subprocess.run(["curl", "-s", "-f", "-XPOST", "--data-binary", f"@{path}",
                        f"{influx.url}/write?db={db}&precision=ms"], check=True, timeout=60)
    took = time.monotonic() - start
    assert count(influx, db) == len(lines)
    return took


def shape(s):
    m, r = s.lower().split("x")
    return int(m), int(r)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--big", type=shape, default=(200, 500), help="MESSAGESxREADINGS")
    ap.add_argument("--small", type=shape, default=(5000, 10), help="MESSAGESxREADINGS")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each path, interleaved")
    a = ap.parse_args()
    w = World("bench-hub-scale")
    t_all = time.monotonic()
    try:
        influx = Influx(w)
        mqtt = Mosquitto(w)
        print(f"{os.cpu_count()} cores, shared by Mosquitto, InfluxDB, the hubs and the publisher; "
              f"median of {a.rounds} interleaved runs (min-max)")
        for name, (n_msgs, n_readings) in (("big", a.big), ("small", a.small)):
            total = n_msgs * n_readings
            t0 = int(time.time() * 1000) - 3_600_000
            msgs, lines = make_payloads(n_msgs, n_readings, t0)
            one, two, curl, cpu1, cpu2, pub = [], [], [], [], [], []
            for r in range(a.rounds):
                s, c, _, p = through_hubs(w, influx, mqtt, 1, msgs, total, f"{name}{r}a")
                one.append(total / s)
                cpu1.append(c)
                pub.append(p)
                s, c, got, p = through_hubs(w, influx, mqtt, 2, msgs, total, f"{name}{r}b")
                two.append(total / s)
                cpu2.append(c)
                pub.append(p)
                curl.append(total / through_curl(w, influx, lines, f"{name}{r}c"))
            m1, m2, mc = median(one), median(two), median(curl)
            print(f"\n{name}: {total} points ({n_msgs} MQTT messages of {n_readings} readings, "
                  f"6 fields each; one mosquitto_pub -l publishes them in {median(pub):.2f} s)")
            print(f"  1 care-hub          : {m1:7.0f} points/s ({min(one):.0f}-{max(one):.0f}); "
                  f"hub CPU {1e6 * median(cpu1) / total:.1f} us/point")
            print(f"  2 care-hubs, shared : {m2:7.0f} points/s ({min(two):.0f}-{max(two):.0f}); "
                  f"hubs' CPU {1e6 * median(cpu2) / total:.1f} us/point; messages {got[0]} + {got[1]}")
            print(f"  curl -> InfluxDB    : {mc:7.0f} points/s ({min(curl):.0f}-{max(curl):.0f}); "
                  f"{CURL_LINES} lines per request")
            print(f"  ratios: 2 hubs / 1 hub {m2 / m1:.2f}; 1 hub / curl {m1 / mc:.2f}; "
                  f"2 hubs / curl {m2 / mc:.2f}")
        print(f"\n(total {time.monotonic() - t_all:.0f} s)")
    finally:
        w.close()


if __name__ == "__main__":
    main()
