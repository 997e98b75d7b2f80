"""The disk a site costs in InfluxDB 1.x with the retention policies and the
hourly history in place (issue 12; hub/retention.h).

One hour of a 120-resident site, as care-hub writes it (the tags and fields
of lp_telemetry, with each reading's seq), into the policy raw:
  wearable     120 bracelets, a reading a second (hr, battery, rssi, zone)
  bed          120 beds, every 5 s (hr, rr, in_bed, movement)
  environment  60 meters, every 10 s (temperature, humidity, co2, pm25)
  edge_device  the gateway's health of its 300 devices, every 10 s
about 180 points a second, values moving as sensors' do (random walks at
the sensors' resolution). Then care-hub (retention.raw 30d, its keeper
every second) makes the hour's history in the policy hourly, and the bench
writes that history again for the week before it (a shard group of hourly:
its index is per shard, so one hour alone would overstate it). With InfluxDB
told to compact cold shards after a few seconds, the bench measures the
bytes of each policy's shard directories once they stop changing, and
prints the disk per day and per month: raw holds 30 days at any time, the
hourly history grows by a month a month.

A benchmark: prints figures, never passes or fails on them.

  python3 tests/bench/bench_retention.py [--hours 1]
"""
import argparse
import os
import random
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../integration"))
from harness import Influx, Mosquitto, World, free_port, log, wait_for  # noqa: E402

DB = "carehub"
SITE, GW = "cq-yz-001", "gw-1"
HOUR = 3600000


def walk(v, step, lo, hi, q):
    v = min(hi, max(lo, v + random.uniform(-step, step)))
    return round(v / q) * q


def site_hour(start):
    """Line protocol of one hour of the site, in time order, with seq."""
    rnd = random.Random(7)
    random.seed(7)
    state = {}
    lines = []
    seq = 1
    for s in range(3600):
        ts = start + s * 1000
        batch = []
        for i in range(120):  # bracelets
            st = state.setdefault(("w", i), [70.0, 90.0, -65.0, float(rnd.randint(1, 12))])
            st[0] = walk(st[0], 2, 50, 120, 1)
            st[1] = max(0.0, st[1] - (1 if rnd.random() < 0.0005 else 0))
            st[2] = walk(st[2], 3, -95, -40, 1)
            if rnd.random() < 0.002:
                st[3] = float(rnd.randint(1, 12))
            batch.append(("wearable", f"band-{i:03d}", f"zone-{int(st[3])}",
                          f"hr={st[0]},battery={st[1]},rssi={st[2]},zone={st[3]}"))
        if s % 5 == 0:
            for i in range(120):
                st = state.setdefault(("b", i), [62.0, 16.0, 1.0, 0.0])
                st[0] = walk(st[0], 1, 45, 100, 1)
                st[1] = walk(st[1], 1, 8, 30, 1)
                if rnd.random() < 0.001:
                    st[2] = 1.0 - st[2]
                st[3] = float(rnd.randint(0, 3)) if rnd.random() < 0.2 else 0.0
                batch.append(("bed", f"bed-{i:03d}", f"{101 + i // 2}",
                              f"hr={st[0]},rr={st[1]},in_bed={st[2]},movement={st[3]}"))
        if s % 10 == 0:
            for i in range(60):
                st = state.setdefault(("e", i), [23.0, 50.0, 600.0, 20.0])
                st[0] = walk(st[0], 0.1, 16, 30, 0.1)
                st[1] = walk(st[1], 0.5, 20, 90, 0.1)
                st[2] = walk(st[2], 15, 400, 2500, 1)
                st[3] = walk(st[3], 2, 0, 300, 1)
                batch.append(("environment", f"air-{i:02d}", f"{101 + i * 2}",
                              f"temperature={st[0]:.1f},humidity={st[1]:.1f},"
                              f"co2={st[2]},pm25={st[3]}"))
            for i in range(300):
                batch.append(("edge_device", f"dev-{i:03d}", "",
                              f"ok=1,errors={rnd.randint(0, 1)},"
                              f"latency_ms={walk(20.0, 10, 1, 200, 1)},age_s={rnd.randint(0, 10)}"))
        for meas, dev, room, fields in batch:
            tags = f"device={dev},gateway={GW},quality=good" + (f",room={room}" if room else "")
            lines.append(f"{meas},{tags},site={SITE} {fields},seq={seq}i {ts}")
            seq += 1
    return lines


def post(url, body):
    req = urllib.request.Request(url, data=body.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status


def dir_bytes(path):
    """Bytes on disk (allocated blocks: InfluxDB preallocates its index files)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def hourly_week(influx, start):
    """The hour's history written again for the 167 hours before it, values
    moved a little: a week of history, one shard group of the policy hourly
    (its index is per shard: one hour alone would count it whole)."""
    res = influx.query('SELECT * FROM "hourly"./.*/ GROUP BY *', DB)["results"][0]["series"]
    ints = set()
    for s in influx.query('SHOW FIELD KEYS FROM "hourly"./.*/', DB)["results"][0]["series"]:
        ints |= {(s["name"], k) for k, t in s["values"] if t == "integer"}
    rnd = random.Random(3)
    lines = []
    for h in range(1, 168):
        for s in res:
            tags = ",".join(f"{k}={v}" for k, v in sorted(s["tags"].items()) if v)
            for row in s["values"]:
                fields = ",".join(
                    f"{c}={int(v)}i" if (s["name"], c) in ints
                    else f"{c}={v * (1 + rnd.uniform(-0.02, 0.02)):.6g}"
                    for c, v in zip(s["columns"], row)
                    if c != "time" and isinstance(v, (int, float)))
                lines.append(f"{s['name']},{tags} {fields} {row[0] - h * HOUR}")
    for i in range(0, len(lines), 5000):
        post(f"{influx.url}/write?db={DB}&rp=hourly&precision=ms",
             "\n".join(lines[i:i + 5000]) + "\n")
    return len(lines)


def settled(paths, quiet=6, limit=180):
    """The bytes of paths once they have not changed for quiet seconds."""
    last, since, end = None, time.monotonic(), time.monotonic() + limit
    while time.monotonic() < end:
        now = [dir_bytes(p) for p in paths]
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(1)
    return last


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=int, default=1)
    args = ap.parse_args()
    # compact a shard fully once it had no writes for a few seconds, so
    # that the figures are those of data at rest, as after a day
    os.environ["INFLUXDB_DATA_CACHE_SNAPSHOT_WRITE_COLD_DURATION"] = "2s"
    os.environ["INFLUXDB_DATA_COMPACT_FULL_WRITE_COLD_DURATION"] = "3s"
    w = World("bench_retention")
    try:
        influx = Influx(w)
        mqtt = Mosquitto(w)
        influx.query(f'CREATE DATABASE "{DB}"')
        influx.query(f'CREATE RETENTION POLICY "raw" ON "{DB}" DURATION 720h REPLICATION 1')
        start = (int(time.time() * 1000) // HOUR - 1 - args.hours) * HOUR
        points = 0
        t0 = time.monotonic()
        for h in range(args.hours):
            lines = site_hour(start + h * HOUR)
            for i in range(0, len(lines), 5000):
                post(f"{influx.url}/write?db={DB}&rp=raw&precision=ms",
                     "\n".join(lines[i:i + 5000]) + "\n")
            points += len(lines)
        log(f"{points} points ({points / 3600 / args.hours:.0f}/s of the site) written to raw "
            f"in {time.monotonic() - t0:.1f} s")
        hub_yaml = w.write("hub.yaml", f"""mqtt:
  broker: {mqtt.uri}
  client_id: bench-ret
influx:
  url: {influx.url}
  database: {DB}
  retention: {{raw: 30d, interval: 1s}}
spool:
  dir: hub-spool
rollup_after: 1m
""")
        t0 = time.monotonic()
        hub = w.spawn("care-hub", [w.bin("care-hub"), "-c", hub_yaml])
        want = args.hours * (120 + 120 + 60 + 300)

        def history():
            r = influx.series('SELECT count("mean_seq") FROM "hourly"./.*/', DB)
            return sum(x["count"] for x in r) >= want
        wait_for("the hourly history", history, 600)
        log(f"care-hub made the hourly history of {args.hours} h in "
            f"{time.monotonic() - t0:.1f} s (from its start, 30 days of hours looked at)")
        hub.stop()
        n = hourly_week(influx, start)
        log(f"the history of that hour written again for the week before it ({n} points)")
        data = os.path.join(w.dir("influx"), "data", DB)
        raw_b, hourly_b, default_b, index_b = settled([os.path.join(data, p) for p in (
            "raw", "hourly", "autogen", "_series")])
        raw_day = raw_b / args.hours * 24
        hourly_day = hourly_b / 7
        mib = 1024 * 1024
        print()
        print(f"site: 120 residents, {points / 3600 / args.hours:.0f} points/s "
              f"({points / args.hours * 24 / 1e6:.1f} million a day)")
        print(f"raw readings:   {raw_b / points:.2f} bytes/point at rest, "
              f"{raw_day / mib:.0f} MiB/day, 30 days held: {raw_day * 30 / 1024**3:.2f} GiB")
        print(f"hourly history: {hourly_day / mib:.2f} MiB/day, "
              f"{hourly_day * 30 / mib:.0f} MiB/month, {hourly_day * 365 / mib:.0f} MiB/year "
              f"({raw_day / max(hourly_day, 1):.0f}x smaller than raw)")
        print(f"default policy (alarms, statuses, figures, progress): {default_b / 1024:.0f} KiB "
              f"in this run; the database's series index: {index_b / mib:.1f} MiB")
        print(f"per site: {raw_day * 30 / 1024**3:.2f} GiB held in raw + "
              f"{hourly_day * 30 / mib:.0f} MiB more each month "
              f"(without retention: {raw_day * 30 / 1024**3:.2f} GiB more each month)")
    finally:
        w.close()


if __name__ == "__main__":
    main()
