"""One gateway's flood and another site's alarms (issue 11): real Mosquitto,
InfluxDB 1.x and care-hub with its API on this machine.

Gateway F floods: rounds of 100 messages of 5,000 readings (the finding's
500,000-reading flood), published by mosquitto_pub as fast as the broker
takes them, a round every --round-interval seconds for --seconds. Meanwhile
site C raises an alarm every 100 ms. For each alarm: from its arrival at the
broker (a subscriber's receive time, mosquitto_sub %U) to the first answer
of GET /api/v1/alarms/active (polled back to back) that lists it (the alarm
is in the hub's spool and then written to InfluxDB, which the API reads),
and to its event on GET /api/v1/events (the hub's own part: it is sent when
the alarm reaches the hub); and hub CPU and peak RSS over the flood.
Variants:

  quota      the defaults: ingest.rate 5,000 readings/s, burst 10,000 per
             gateway (F's excess is shed, unacknowledged)
  unlimited  ingest.rate and burst so high that F is held back only by its
             queue (ingest.queue_bytes): the alarm path alone keeps alarms
             out of its way
  before     --before DIR: care-hub as built before this issue (bin/ of that
             build), same broker and flood

A benchmark: prints figures, never passes or fails on them.

  python3 tests/bench/bench_isolation.py [--seconds 15] [--before /tmp/before/bin]
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../integration"))
from harness import BIN, Influx, Mosquitto, World, free_port, log, wait_for  # noqa: E402
from hub_api import make_tokens  # noqa: E402
from hub_isolation import arrivals, birth, reset_peak  # noqa: E402

PER_MSG, MSGS = 5000, 100


def pct(v, p):
    return v[min(len(v) - 1, int(p / 100 * len(v)))] if v else float("nan")


def proc_cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def peak_mib(pid):
    return [int(l.split()[1]) for l in open(f"/proc/{pid}/status")
            if l.startswith("VmHWM")][0] / 1024


def flood_round(r, devs):
    now = int(time.time() * 1000) - 3_600_000
    out = []
    for m in range(MSGS):
        seq = 1 + (r * MSGS + m) * PER_MSG
        rs = ",".join('{"device":"%s","measurement":"environment","ts":%d,"quality":"good",'
                      '"metrics":{"co2":%d}}' % (devs[i % len(devs)], now + seq + i, 400 + i % 90)
                      for i in range(PER_MSG))
        out.append('{"schema":"carehub/telemetry/1","site":"b-f","gateway":"gw-f","seq":%d,'
                   '"ts":%d,"readings":[%s]}' % (seq, now, rs))
    return "\n".join(out) + "\n"


def alert(n, site="b-c", gw="gw-c"):
    ts = int(time.time() * 1000)
    return json.dumps({"schema": "carehub/alert/1", "site": site, "gateway": gw,
                       "alarm_id": f"fall:band-{n}", "rule": "fall", "device": f"band-{n}",
                       "room": "201", "priority": "high", "state": "unack", "event": "raise",
                       "escalation": 0, "latched": True, "metric": "fall", "value": 1.0,
                       "message": f"fall {n}", "ts_ms": ts, "raised_ms": ts, "seq": n})


# The two watchers run as processes of their own (no shared interpreter lock
# between them and the publisher): each prints "time<TAB>alarm_id" the first
# time it sees an alarm.
WATCH = r"""
import http.client, json, socket, sys, time
mode, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
seen = set()
def note(aid, t):
    if aid not in seen:
        seen.add(aid)
        print(f"{t:.6f}\t{aid}", flush=True)
if mode == "active":
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    while True:
        c.request("GET", "/api/v1/alarms/active?site=b-c",
                  headers={"Authorization": f"Bearer {token}"})
        r = c.getresponse()
        body = r.read()
        t = time.time()
        if r.status == 200:
            for x in json.loads(body)["alarms"]:
                note(x["alarm_id"], t)
else:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall((f"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n"
               f"Authorization: Bearer {token}\r\n\r\n").encode())
    buf = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        t = time.time()
        buf += d
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            for line in block.decode(errors="replace").splitlines():
                if line.startswith("data: {") and '"alarm_id"' in line:
                    note(json.loads(line[6:])["alarm_id"], t)
"""


def watched(path):
    out = {}
    with open(path) as f:
        for line in f:
            t, _, aid = line.rstrip("\n").partition("\t")
            if aid:
                out[aid] = float(t)
    return out


def run(variant, hub_bin, a):
    w = World(f"bench_isolation_{variant}")
    try:
        influx = Influx(w)
        mqtt = Mosquitto(w)
        secrets, tokens, _ = make_tokens(w, hub_bin)
        token = secrets["admin"]
        port = free_port()
        ingest = {"quota": "", "before": "",
                  "unlimited": "ingest: {rate: 10000000, burst: 100000000}\n"}[variant]
        cfg = w.write("hub.yaml", f"""mqtt: {{broker: "{mqtt.uri}", client_id: hub-bench}}
influx: {{url: "{influx.url}", version: 1, database: carehub}}
spool: {{dir: "{w.path('hub-spool')}"}}
api: {{port: {port}, tokens_file: "{tokens}", rate_limit: 100000}}
{ingest}""")
        hub = w.spawn("care-hub", [hub_bin, "-c", cfg])
        hub.wait_log("serving the API", 15)
        hub.wait_log("hub-bench subscribed", 15)
        devs = [f"air-{i:02d}" for i in range(10)]
        mqtt.publish("carehub/v1/b-f/gw-f/status", birth("b-f", "gw-f", devs), retain=True)
        mqtt.publish("carehub/v1/b-c/gw-c/status", birth("b-c", "gw-c", ["band-0"]), retain=True)
        # a first alarm at another site: the hub in service (measurement there, connection open)
        mqtt.publish("carehub/v1/b-w/gw-w/alert", alert(1, "b-w", "gw-w"))
        rounds = [flood_round(r, devs) for r in range(int(a.seconds // a.round_interval) + 1)]
        arr = w.spawn("arrivals", ["mosquitto_sub"] + mqtt.client_args() +
                      ["-q", "1", "-t", "carehub/v1/b-c/gw-c/alert", "-F", "%U\t%p"],
                      logpath=w.path("arrivals.log"))
        alarms = subprocess.Popen(["mosquitto_pub"] + mqtt.client_args() +
                                  ["-q", "1", "-t", "carehub/v1/b-c/gw-c/alert", "-l"],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        active = w.spawn("active", [sys.executable, "-c", WATCH, "active", str(port), token],
                         logpath=w.path("active.log"))
        sse = w.spawn("events", [sys.executable, "-c", WATCH, "events", str(port), token],
                      logpath=w.path("events.log"))
        time.sleep(1)

        def flood():
            for r, payload in enumerate(rounds):
                t_next = t_start + r * a.round_interval
                time.sleep(max(0, t_next - time.monotonic()))
                subprocess.run(["mosquitto_pub"] + mqtt.client_args() +
                               ["-q", "1", "-t", "carehub/v1/b-f/gw-f/telemetry", "-l"],
                               input=payload, text=True, timeout=600, capture_output=True)
        reset_peak(hub.pid)
        cpu0 = proc_cpu(hub.pid)
        t_start = time.monotonic()
        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        sent = {}
        n = 0
        while time.monotonic() - t_start < a.seconds:
            n += 1
            sent[f"fall:band-{n}"] = time.time()
            alarms.stdin.write((alert(n) + "\n").encode())
            alarms.stdin.flush()
            time.sleep(0.1)
        dt = time.monotonic() - t_start
        cpu = proc_cpu(hub.pid) - cpu0
        peak = peak_mib(hub.pid)
        alarms.stdin.close()
        alarms.wait(30)
        try:
            wait_for("every alarm in /alarms/active",
                     lambda: len(watched(active.logpath)) >= n, 120, 0.5)
        except AssertionError as e:
            log(f"{variant}: {e}")
        active.stop()
        sse.stop()
        seen, live = watched(active.logpath), watched(sse.logpath)
        flooder.join(600)
        arr.stop()
        arrived = arrivals(arr.logpath)
        lat = sorted((seen[k] - arrived[k]) * 1000 for k in arrived if k in seen)
        lat_pub = sorted((seen[k] - sent[k]) * 1000 for k in sent if k in seen)
        lat_ev = sorted((live[k] - arrived[k]) * 1000 for k in arrived if k in live)
        st = {}
        try:
            rows = influx.series('SELECT last(*) FROM "carehub_hub"', "carehub")
            st = {k[5:]: v for k, v in (rows[0] if rows else {}).items() if k.startswith("last_")}
        except AssertionError:
            pass
        out = {"variant": variant, "alarms": n, "seen": len(lat), "p50": pct(lat, 50),
               "p99": pct(lat, 99), "max": lat[-1] if lat else float("nan"),
               "pub_p50": pct(lat_pub, 50), "pub_p99": pct(lat_pub, 99),
               "ev_p50": pct(lat_ev, 50), "ev_p99": pct(lat_ev, 99), "events": len(lat_ev),
               "cpu_pct": 100 * cpu / dt, "peak_mib": peak,
               "flood_readings": len(rounds) * MSGS * PER_MSG,
               "shed_messages": st.get("messages_shed"), "stored": st.get("readings")}
        log(f"{variant}: {n} alarms during a flood of {out['flood_readings']} readings in "
            f"{len(rounds)} rounds over {dt:.0f} s: arrival at the broker -> /alarms/active p50 "
            f"{out['p50']:.0f} ms, p99 {out['p99']:.0f} ms, max {out['max']:.0f} ms "
            f"(from the publisher: p50 {out['pub_p50']:.0f}, p99 {out['pub_p99']:.0f}); "
            f"-> /events p50 {out['ev_p50']:.0f} ms, p99 "
            f"{out['ev_p99']:.0f} ms ({out['events']}); hub CPU {out['cpu_pct']:.0f} %, peak RSS "
            f"{peak:.0f} MiB; F's messages shed {out['shed_messages']}, readings stored "
            f"{out['stored']}")
        hub.stop()
        return out
    finally:
        w.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--round-interval", type=float, default=5)
    ap.add_argument("--before", help="bin/ of a build from before this issue")
    ap.add_argument("--variants", default="quota,unlimited")
    a = ap.parse_args()
    variants = [(v, os.path.join(BIN, "care-hub")) for v in a.variants.split(",")]
    if a.before:
        variants.append(("before", os.path.join(a.before, "care-hub")))
    for name, binary in variants:
        r = run(name, binary, a)
        print(f"RESULT {name}: alarms={r['alarms']} seen={r['seen']} p50_ms={r['p50']:.1f} "
              f"p99_ms={r['p99']:.1f} max_ms={r['max']:.1f} events_p50_ms={r['ev_p50']:.1f} "
              f"events_p99_ms={r['ev_p99']:.1f} hub_cpu_pct={r['cpu_pct']:.0f} "
              f"hub_peak_mib={r['peak_mib']:.0f} shed_messages={r['shed_messages']} "
              f"stored={r['stored']}", flush=True)


if __name__ == "__main__":
    main()
