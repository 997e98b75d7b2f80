"""Hub ingest throughput: points/s from MQTT through care-hub into InfluxDB,
against curl writing the same line protocol straight to InfluxDB (the
limit), as a ratio. Prints figures; never passes or fails on a number.

  python3 tests/bench/bench_hub.py [--messages 200] [--readings 500]
"""
import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../integration"))
from harness import Influx, Mosquitto, World, log, wait_for  # noqa: E402

METRICS = {"humidity": 55.1, "temperature": 23.4, "pm25": 12.0, "co2": 612.0, "tvoc": 150.0,
           "pm10": 30.0}


def make_payloads(n_msgs, n_readings, t0):
    msgs, lines = [], []
    for m in range(n_msgs):
        readings = []
        for r in range(n_readings):
            dev = f"air-{r % 100:03d}"
            ts = t0 + m * n_readings + r
            vals = {k: v + (m % 7) * 0.1 for k, v in METRICS.items()}
            readings.append('{"device":"%s","measurement":"environment","room":"r%03d","ts":%d,'
                            '"quality":"good","metrics":{%s}}' % (
                                dev, r % 100, ts, ",".join(f'"{k}":{v:.1f}' for k, v in vals.items())))
            fields = ",".join(f"{k}={v:.1f}" for k, v in vals.items())
            lines.append(f"environment,device={dev},gateway=gw-1,quality=good,room=r{r % 100:03d},"
                         f"site=bench-site {fields} {ts}")
        msgs.append('{"schema":"carehub/telemetry/1","site":"bench-site","gateway":"gw-1",'
                    '"seq":%d,"ts":%d,"readings":[%s]}' % (m + 1, t0, ",".join(readings)))
    return msgs, lines


def count(influx, db):
    try:
        rows = influx.series('SELECT count("co2") FROM "environment"', db)
    except AssertionError:  # the database does not exist yet
        return 0
    return rows[0]["count"] if rows else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--readings", type=int, default=500)
    a = ap.parse_args()
    total = a.messages * a.readings
    w = World("bench-hub")
    try:
        influx = Influx(w)
        mqtt = Mosquitto(w)
        hub_cfg = w.write("hub.yaml", f"""
mqtt: {{broker: "{mqtt.uri}", client_id: hub-bench}}
influx: {{url: "{influx.url}", version: 1, database: hubdb, batch_size: 5000, flush_interval: 200ms}}
spool: {{dir: hub-spool}}
# one gateway as fast as it goes: no quota, no inventory, a queue for all of it (issue 11)
ingest: {{rate: 10000000, burst: 100000000, devices_before_birth: 10000,
          queue_bytes: 1073741824, queue_max_bytes: 1073741824}}
self_metrics_interval: 60s
""")
        hub = w.spawn("care-hub", [w.bin("care-hub"), "-c", hub_cfg])
        hub.wait_log("subscribed", 10)
        t0 = int(time.time() * 1000) - 3_600_000
        msgs, lines = make_payloads(a.messages, a.readings, t0)

        # --- through the hub
        start = time.monotonic()
        p = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mqtt.port), "-q", "1",
                            "-t", "carehub/v1/bench-site/gw-1/telemetry", "-l"],
                           input="\n".join(msgs) + "\n", text=True, timeout=300)
        assert p.returncode == 0
        published = time.monotonic() - start
        wait_for("hub points", lambda: count(influx, "hubdb") >= total, 300, 0.2)
        hub_s = time.monotonic() - start
        cpu = [int(x) for x in open(f"/proc/{hub.pid}/stat").read().rsplit(")", 1)[1].split()[11:13]]
        hub_cpu_s = sum(cpu) / os.sysconf("SC_CLK_TCK")
        rss = [l for l in open(f"/proc/{hub.pid}/status") if l.startswith("VmHWM")][0].split()[1]

        # --- the limit: curl with the same lines, 5000 per request
        influx.query("CREATE DATABASE direct")
        batches = [lines[i:i + 5000] for i in range(0, len(lines), 5000)]
        paths = []
        for i, b in enumerate(batches):
            paths.append(w.write(f"batch-{i}.lp", "\n".join(b) + "\n"))
        start = time.monotonic()
        for path in paths:
            subprocess.run(["curl", "-s", "-f", "-XPOST", "--data-binary", f"@{path}",
                            f"{influx.url}/write?db=direct&precision=ms"], check=True, timeout=60)
        curl_s = time.monotonic() - start
        assert count(influx, "direct") == total

        hub_rate, curl_rate = total / hub_s, total / curl_s
        print(f"points: {total} ({a.messages} MQTT messages of {a.readings} readings, 6 fields each)")
        print(f"care-hub : {hub_s:6.2f} s  {hub_rate:9.0f} points/s  (publishing took {published:.2f} s; "
              f"hub CPU {hub_cpu_s:.2f} s = {1e6 * hub_cpu_s / total:.1f} us/point; peak RSS {int(rss) // 1024} MiB)")
        print(f"curl     : {curl_s:6.2f} s  {curl_rate:9.0f} points/s  (5000 lines per request)")
        print(f"ratio hub/curl: {hub_rate / curl_rate:.2f}")
    finally:
        w.close()


if __name__ == "__main__":
    main()
