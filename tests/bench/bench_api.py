"""care-hub's HTTP API on a month of one care home: the latency of what a
regulator and the console ask (GET /api/v1/summary over 1, 7 and 30 days,
/api/v1/alarms, /api/v1/sites), and how many such homes one hub process
can ingest at the default reporting intervals. Prints figures; never passes
or fails on a number. About five minutes on the 2-core development machine
(loading ~2 minutes, the 30-day summary ~1 minute a request).

The site: 120 residents in 60 rooms of two, each resident with a BLE
bracelet (care-band, `wearable`, 1 s) and a Wi-Fi bed sensor (wifi-bed,
`bed`, 5 s), one air board per room (air-board, `environment`, 10 s: the
device default of edge/site.c), all on one gateway: the "full home" of
bench_home.py. 30 days of it are written straight to InfluxDB 1.x as gzip'ed
line protocol (POST /write?precision=ms, big batches), in the schema
care-hub writes (hub/lineproto.c: lp_telemetry, lp_alert): tags device
gateway quality room site, a float field per metric, the integer field
`seq` numbered consecutively for the gateway, and ~1500 alarm transitions
(raise, ack, rtn, clear, escalate; acknowledgement delays drawn per priority)
in `alarm`. At full rate that month is 389 million points, which this
machine cannot load in minutes (InfluxDB takes 130-160 k points/s here), so the
environment meters and the alarms (what the summary's compliance and alarm
parts read) are loaded at their real interval and the bracelets and beds at
one reading per 5 minutes. The output says what was
loaded and what full rate would be; the summary also counts `seq` over every
measurement (device online rate, completeness), so its cost at full rate is
extrapolated from the measured cost per point and labelled as such.

care-hub (with an `api:` section, tokens made with `care-hub --new-token`)
knows the site's 300 devices from the gateway's retained birth message.

  python3 tests/bench/bench_api.py [--days 30] [--requests 30] [--row-budget 15]
"""
import argparse
import gzip
import http.client
import json
import os
import queue
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../integration"))
from harness import Influx, Mosquitto, World, free_port, log, wait_for  # noqa: E402

SITE, GW, DB = "cq-bench-001", "gw-1", "carehub_bench"
RESIDENTS, ROOMS = 120, 60          # two residents a room, one air board a room
NDEV = 2 * RESIDENTS + ROOMS        # the gateway's inventory
BAND_S, BED_S, AIR_S = 1, 5, 10     # the default intervals (bench_home.py, edge/site.c)
SELF_S = 10                         # care-edge self_metrics_interval default (edge/site.c)
COARSE_S = 300                      # bracelets and beds as loaded: one reading each per 5 min
CHUNK_MS = COARSE_S * 1000          # the generator's unit: 5 minutes of the site
ROUNDS = CHUNK_MS // (AIR_S * 1000)  # air board rounds per chunk (30)
TZ_S = 8 * 3600                     # Asia/Shanghai: the daily rhythm is local time
DAY_MS = 86_400_000
BATCH_LINES = 50_000
# README "Scaling out" (bench_hub_scale.py): one hub, InfluxDB and Mosquitto on this 2-core box
HUB_SMALL = (10, 32_100)            # (readings per message, points/s)
HUB_LARGE = (500, 65_800)
SAFETY = 0.5
# not the default 30 s: to measure how long the month's summary takes rather than see it 503
QUERY_TIMEOUT = "30s"  # the default: with kept figures no single query needs more


def pct(values, p):
    """Linear interpolation between closest ranks (as the API does)."""
    v = sorted(values)
    pos = p * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def cpu_s(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


# ---- the site's month, as line protocol --------------------------------------------------

class Month:
    """Generates the site's readings 5 minutes (one chunk) at a time. Per
    chunk: 30 rounds of 10 s; in each, the 60 air boards (at 150 ms steps)
    then 8 of the 240 bracelets and beds (each once a chunk). seq follows that (time) order: 1 + chunk * per_chunk + position."""

    def __init__(self, t_start, days, seed=1):
        self.t0 = t_start
        rnd = random.Random(seed)
        s = f"gateway={GW},quality=good"
        self.air_pfx = [f"environment,device=air-{m + 1:03d},{s},room=r{m + 1:03d},site={SITE} "
                        for m in range(ROOMS)]
        self.band_pfx = [f"wearable,device=band-{i:03d},{s},site={SITE} " for i in range(RESIDENTS)]
        self.bed_pfx = [f"bed,device=bed-{i:03d},{s},room=r{i // 2 + 1:03d},site={SITE} "
                        for i in range(RESIDENTS)]
        self.per_round = ROOMS + 2 * RESIDENTS // ROUNDS   # 68
        self.per_chunk = self.per_round * ROUNDS             # 2040
        self.tenths = [f"{v // 10}.{v % 10}" for v in range(1001)]
        self.jit = [rnd.randint(-25, 25) for _ in range(4099)]
        # rooms: how stuffy at night, how warm in the afternoon, how dry
        self.co2_amp = [rnd.uniform(250, 780) for _ in range(ROOMS)]
        self.warm = [rnd.uniform(0.0, 4.5) if m % 7 == 0 else rnd.uniform(0.0, 1.5) for m in range(ROOMS)]
        self.t_base = [rnd.uniform(21.5, 24.0) for _ in range(ROOMS)]
        self.h_base = [rnd.uniform(38, 58) for _ in range(ROOMS)]
        days += 2
        self.day_co2 = [[rnd.uniform(0.75, 1.2) for _ in range(ROOMS)] for _ in range(days)]
        self.day_pm = [rnd.choice([8, 10, 12, 15, 18, 22]) + (38 if rnd.random() < 0.12 else 0)
                       for _ in range(days)]
        self.day_dry = [rnd.choice([0, 0, 0, 0, 0, 12]) for _ in range(days)]
        self.battery0 = [rnd.uniform(30, 100) for _ in range(RESIDENTS)]
        self.hr0 = [rnd.randint(62, 80) for _ in range(RESIDENTS)]
        self.counts = {"environment": 0, "wearable": 0, "bed": 0}

    @staticmethod
    def night(h):
        """0..1: how long a room has been shut with two sleepers in it."""
        if h >= 21:
            return (h - 21) / 8
        if h < 5:
            return (h + 3) / 8
        if h < 8:
            return 1.0 - 0.8 * (h - 5) / 3
        return 0.2 + 0.1 * (12 <= h < 15)

    def chunk(self, c):
        ts0 = self.t0 + c * CHUNK_MS
        local = (ts0 // 1000 + TZ_S) % 86400
        h = local / 3600
        day = ((ts0 // 1000 + TZ_S) - (self.t0 // 1000 + TZ_S)) // 86400
        n = self.night(h)
        afternoon = max(0.0, 1 - abs(h - 15) / 4)
        pm_day = self.day_pm[day]
        dry = self.day_dry[day]
        co2b = [int(420 + self.co2_amp[m] * n * self.day_co2[day][m]) for m in range(ROOMS)]
        tb = [int(10 * (self.t_base[m] + self.warm[m] * afternoon)) for m in range(ROOMS)]
        hb = [int(10 * (self.h_base[m] - dry + 4 * n)) for m in range(ROOMS)]
        pmb = [pm_day + (m % 5) + (6 if 11 <= h < 13 else 0) for m in range(ROOMS)]
        # bracelets and beds: one reading each per chunk
        asleep = h >= 21 or h < 6 or 12.5 <= h < 14
        others = []
        for i in range(RESIDENTS):
            batt = self.battery0[i] - 0.5 * ((ts0 - self.t0) / 3_600_000) % 80
            batt = int(batt if batt > 20 else batt + 80)
            hr = self.hr0[i] + (-4 if asleep else 6) + (c * 7 + i) % 5
            zone = i % 12 if asleep or (c + i) % 6 else 12 + (i % 3)
            rssi = -55 - (c * 13 + i * 7) % 30
            others.append(f"battery={batt},battery_low={int(batt < 20)},fall=0,hr={hr},in_range=1,"
                          f"rssi={rssi},sos=0,worn={0 if (asleep and i % 9 == 0) else 1},"
                          f"zone={zone},zone_exit=0")
        for i in range(RESIDENTS):
            inb = 1 if asleep and (i + c) % 97 else 0
            others.append(f"hr={self.hr0[i] - 5 + (c + i) % 4 if inb else 0},in_bed={inb},"
                          f"movement={(c * 3 + i) % 17 if inb else 0},presence={inb},"
                          f"rr={14 + (c + i) % 4 if inb else 0}")
        pfx_other = self.band_pfx + self.bed_pfx
        out = []
        app = out.append
        seq = 1 + c * self.per_chunk
        jit, ten, air = self.jit, self.tenths, self.air_pfx
        k = 8
        for r in range(ROUNDS):
            t = ts0 + r * 10_000
            j0 = (c * 31 + r * 7) % 4000
            for m in range(ROOMS):
                j = jit[j0 + m]
                p25 = pmb[m] + j // 8
                app(f"{air[m]}co2={co2b[m] + j},humidity={ten[hb[m] + j // 5]},pm10={p25 * 2 - 3},"
                    f"pm25={p25},temperature={ten[tb[m] + j // 10]},tvoc={150 + j * 3},"
                    f"seq={seq}i {t + m * 150}\n")
                seq += 1
            for q in range(k):
                o = r * k + q
                app(f"{pfx_other[o]}{others[o]},seq={seq}i {t + 9000 + q * 120}\n")
                seq += 1
        self.counts["environment"] += ROUNDS * ROOMS
        self.counts["wearable"] += RESIDENTS
        self.counts["bed"] += RESIDENTS
        return out


RULES = [  # (rule, device kind, priority, metric, value, weight, latched)
    ("bed-exit-night", "bed", "medium", "in_bed", 0, 28, False),
    ("heart-rate", "bed", "high", "hr", 128, 7, False),
    ("respiration-rate", "bed", "high", "rr", 27, 4, False),
    ("sos", "band", "high", "sos", 1, 6, True),
    ("fall", "band", "high", "fall", 1, 5, True),
    ("co2-high", "air", "low", "co2", 1120, 24, False),
    ("temperature-high", "air", "low", "temperature", 28.6, 8, False),
    ("humidity-low", "air", "low", "humidity", 28.5, 6, False),
    ("pm25-24h", "air", "low", "pm25", 55, 4, False),
    ("bed-sensor-silent", "bed", "medium", "", None, 5, False),
    ("meter-silent", "air", "low", "", None, 3, False),
]
ACK_MEDIAN_S = {"high": 40, "medium": 95, "low": 420}
NURSES = ["console:nurse-li", "console:nurse-wang", "console:nurse-chen", "console:nurse-zhao",
          "hub:nurse-station-1"]


def lp_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def alarm_lines(t_start, t_end, target, seed=2):
    """About target alarm transitions in [t_start, t_end), as lp_alert writes
    them; returns (lines, occurrences, transitions by event)."""
    rnd = random.Random(seed)
    weights = [r[5] for r in RULES]
    lines, by_event, occ = [], {}, 0
    while len(lines) < target:
        rule, kind, prio, metric, value, _, latched = rnd.choices(RULES, weights)[0]
        day = rnd.randrange((t_end - t_start) // DAY_MS)
        if rule in ("bed-exit-night", "co2-high"):
            hour = rnd.choice([22, 23, 0, 1, 2, 3, 4, 5])
        elif rule == "temperature-high":
            hour = rnd.choice([13, 14, 15, 16])
        else:
            hour = rnd.randrange(24)
        midnight = t_start - ((t_start // 1000 + TZ_S) % 86400) * 1000   # local, before t_start
        raised = midnight + day * DAY_MS + hour * 3_600_000 + rnd.randrange(3_600_000)
        if raised < t_start or raised >= t_end - 3_600_000:
            continue
        n = rnd.randrange(RESIDENTS)
        if kind == "air":
            dev, room, bed, res = f"air-{n // 2 + 1:03d}", f"r{n // 2 + 1:03d}", "", ""
        else:
            dev = f"{kind}-{n:03d}"
            room, bed, res = f"r{n // 2 + 1:03d}", f"r{n // 2 + 1:03d}-{'AB'[n % 2]}", f"R-{n:03d}"
        ack_ms = int(ACK_MEDIAN_S[prio] * rnd.lognormvariate(0, 0.8) * 1000)
        if latched:            # SOS and falls stay until a carer resets them after coming
            clear_ms = ack_ms + rnd.randint(60, 600) * 1000
        elif kind == "air":
            clear_ms = rnd.randint(10, 150) * 60_000
        elif rule.endswith("silent"):
            clear_ms = rnd.randint(2, 40) * 60_000
        else:                  # back in bed, the rate settles
            clear_ms = rnd.randint(3, 20) * 60_000
        never = rnd.random() < 0.015
        by = rnd.choice(NURSES)
        msg = {"bed-exit-night": f"Out of bed at night: {bed}", "sos": f"SOS: {room}",
               "fall": f"Fall detected: {room}"}.get(rule, f"{rule} on {dev} in {room}")
        aid = f"{rule}:{dev}"
        tags = (f"alarm,alarm_id={aid}" + (f",bed={bed}" if bed else "") + f",device={dev}"
                ",event={ev},gateway=" + GW + f",priority={prio}" + (f",resident={res}" if res else "")
                + f",room={room},rule={rule},site={SITE},state={{st}}")
        head = ((f"value={value}," if value is not None else "") +
                (f"metric={lp_str(metric)}," if metric else ""))

        def point(ev, st, ts, esc=0, acked=0, cleared=0, who=""):
            f = (f"{head}escalation={esc}i,latched={'true' if latched else 'false'},"
                 f"message={lp_str(msg)},raised_ms={raised}i")
            if acked:
                f += f",acked_ms={acked}i"
            if cleared:
                f += f",cleared_ms={cleared}i"
            if who:
                f += f",by={lp_str(who)}"
            lines.append(f"{tags.format(ev=ev, st=st)} {f} {ts}\n")
            by_event[ev] = by_event.get(ev, 0) + 1

        occ += 1
        point("raise", "unack", raised)
        esc = 0
        if prio == "high" and (never or ack_ms > 120_000):   # the rule's escalation delay: 2 min
            esc = 1
            point("escalate", "unack", raised + 120_000, esc=1)
        if never:
            if clear_ms < 600_000:
                point("rtn", "rtn_unack", raised + clear_ms, esc, cleared=raised + clear_ms)
            continue
        a, cl = raised + ack_ms, raised + clear_ms
        if cl < a:             # returned to normal before anyone acknowledged
            point("rtn", "rtn_unack", cl, esc, cleared=cl)
            point("ack", "normal", a, esc, acked=a, cleared=cl, who=by)
        else:
            point("ack", "acked", a, esc, acked=a, who=by)
            point("clear", "normal", cl, esc, acked=a, cleared=cl, who=by)
    lines.sort(key=lambda l: int(l.rsplit(" ", 1)[1]))
    return lines, occ, by_event


class Loader:
    """POSTs gzip'ed line protocol to /write?precision=ms from three threads
    (which also join and compress, beside the generator: InfluxDB parses
    requests in parallel, and this keeps both cores busy)."""

    def __init__(self, url, threads=3):
        self.url = f"{url}/write?db={DB}&precision=ms"
        self.q = queue.Queue(threads)
        self.lock = threading.Lock()
        self.errors, self.retries, self.requests, self.raw, self.sent = [], 0, 0, 0, 0
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self):
        while True:
            lines = self.q.get()
            if lines is None:
                return
            raw = "".join(lines).encode()
            body = gzip.compress(raw, 1)
            with self.lock:
                self.raw += len(raw)
                self.sent += len(body)
            err = "no 204"
            for attempt in range(5):
                try:
                    req = urllib.request.Request(self.url, data=body,
                                                 headers={"Content-Encoding": "gzip"})
                    with urllib.request.urlopen(req, timeout=120) as r:
                        if r.status == 204:
                            break
                except (urllib.error.URLError, OSError) as e:
                    err = e
                self.retries += 1
                time.sleep(0.5 * (attempt + 1))
            else:
                self.errors.append(str(err))
            with self.lock:
                self.requests += 1

    def put(self, lines):
        self.q.put(lines)

    def close(self):
        for _ in self.threads:
            self.q.put(None)
        for t in self.threads:
            t.join()


# ---- the API -----------------------------------------------------------------------------

def make_tokens(w, hub_bin):
    specs = {"regulator": "role: regulator\n    district: cq-bench-",
             "staff": f"role: staff\n    sites: [{SITE}]"}
    secrets, entries = {}, []
    for name, spec in specs.items():
        out = subprocess.run([hub_bin, "--new-token", name], check=True, capture_output=True,
                             text=True).stdout
        secrets[name] = [l.strip() for l in out.splitlines() if l.strip().startswith("chk_")][0]
        sha = [l.split(":", 1)[1].strip() for l in out.splitlines() if "sha256:" in l][0]
        entries.append(f"  - name: {name}\n    sha256: {sha}\n    {spec}\n")
    return secrets, w.write("tokens.yaml", "tokens:\n" + "".join(entries))


def get(port, path, token):
    """(status, seconds, body bytes) of one request on a new connection."""
    t = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, time.perf_counter() - t, data


def birth():
    devs = []
    for i in range(RESIDENTS):
        devs.append({"id": f"band-{i:03d}", "profile": "care-band", "bus": "ble-1"})
        devs.append({"id": f"bed-{i:03d}", "profile": "wifi-bed", "bus": "wifi",
                     "room": f"r{i // 2 + 1:03d}"})
    for m in range(ROOMS):
        devs.append({"id": f"air-{m + 1:03d}", "profile": "air-board", "bus": "lan-air",
                     "room": f"r{m + 1:03d}"})
    return {"schema": "carehub/status/1", "site": SITE, "gateway": GW, "online": True,
            "ts": int(time.time() * 1000), "version": "0.9.1",
            "boot_id": "3f2a9c0d4b5e6f708192a3b4c5d6e7f8", "devices": devs}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--requests", type=int, default=30, help="timed requests per row (after 1 warm-up)")
    ap.add_argument("--row-budget", type=float, default=15.0,
                    help="s at most per row: fewer requests if they are slow (the count is printed)")
    a = ap.parse_args()
    began = time.monotonic()
    w = World("bench-api")
    try:
        influx = Influx(w)
        mqtt = Mosquitto(w)
        influx.query(f"CREATE DATABASE {DB}")
        secrets, tokens = make_tokens(w, w.bin("care-hub"))
        port = free_port()
        cfg = w.write("hub.yaml", f"""mqtt: {{broker: "{mqtt.uri}", client_id: hub-bench}}
influx: {{url: "{influx.url}", version: 1, database: {DB}}}
spool: {{dir: hub-spool}}
api: {{port: {port}, tokens_file: {tokens}, rate_limit: 100000, query_timeout: {QUERY_TIMEOUT}}}
self_metrics_interval: 60s
""")
        hub = w.spawn("care-hub", [w.bin("care-hub"), "-c", cfg])
        hub.wait_log(r"serving the API")
        hub.wait_log(r"hub-bench-view subscribed")
        log(f"care-hub {w.bin('care-hub')}: API on port {port}, api.rate_limit 100000 (no 429s), "
            f"api.query_timeout {QUERY_TIMEOUT} (default 30 s), everything else default")
        mqtt.publish(f"carehub/v1/{SITE}/{GW}/status", json.dumps(birth()), retain=True)

        # ---- load the month
        now = int(time.time() * 1000)
        t_end = now // CHUNK_MS * CHUNK_MS
        t_start = t_end - a.days * DAY_MS
        month = Month(t_start, a.days)
        n_chunks = (t_end - t_start) // CHUNK_MS
        alarms, occ, by_event = alarm_lines(t_start, t_end, target=50 * a.days)
        log(f"loading {a.days} days of {SITE} into InfluxDB {influx.url} ...")
        inf_cpu0 = cpu_s(influx.proc.pid)
        start = time.monotonic()
        loader = Loader(influx.url)
        loader.put(alarms)
        buf = []
        for c in range(n_chunks):
            buf += month.chunk(c)
            if len(buf) >= BATCH_LINES:
                loader.put(buf)
                buf = []
        if buf:
            loader.put(buf)
        loader.close()
        load_s = time.monotonic() - start
        inf_load_cpu = cpu_s(influx.proc.pid) - inf_cpu0
        assert not loader.errors, loader.errors[:3]
        points = sum(month.counts.values()) + len(alarms)
        disk = du(w.path("influx"))

        full = {"wearable": RESIDENTS * 86400 // BAND_S, "bed": RESIDENTS * 86400 // BED_S,
                "environment": ROOMS * 86400 // AIR_S}
        print(f"\n== Loaded: {a.days} days of one site ({RESIDENTS} residents, {ROOMS} rooms, 1 gateway)"
              f" into InfluxDB 1.6, gzip'ed line protocol")
        print(f"{'measurement':<12} {'devices':>7} {'fields':>6} {'interval loaded':>15} {'points loaded':>14}"
              f" {'default interval':>16} {'points at full rate':>19}")
        rows = [("wearable", RESIDENTS, 10, f"{COARSE_S} s", f"{BAND_S} s"),
                ("bed", RESIDENTS, 5, f"{COARSE_S} s", f"{BED_S} s"),
                ("environment", ROOMS, 6, f"{AIR_S} s", f"{AIR_S} s")]
        full_total = 0
        for meas, ndev, nf, loaded, dflt in rows:
            f = full[meas] * a.days
            full_total += f
            print(f"{meas:<12} {ndev:>7} {nf:>6} {loaded:>15} {month.counts[meas]:>14,} {dflt:>16} {f:>19,}")
        print(f"{'alarm':<12} {'':>7} {'':>6} {'as raised':>15} {len(alarms):>14,} {'':>16} {len(alarms):>19,}")
        print(f"{'total':<12} {'':>7} {'':>6} {'':>15} {points:>14,} {'':>16} {full_total + len(alarms):>19,}")
        print(f"alarms: {occ} occurrences, {len(alarms)} transitions (" +
              ", ".join(f"{k} {v}" for k, v in sorted(by_event.items())) + ")")
        self_full = (NDEV + 1) * 86400 // SELF_S * a.days
        print(f"not loaded: care-edge's own health points (edge_device per device, edge_gateway; every "
              f"{SELF_S} s by default): {self_full:,} more at full rate")
        print(f"load: {load_s:.1f} s = {points / load_s:,.0f} points/s, {loader.requests} requests of "
              f"~{BATCH_LINES:,} lines, {loader.raw / 1e6:,.0f} MB of line protocol sent as "
              f"{loader.sent / 1e6:,.0f} MB gzip, {loader.retries} retries; InfluxDB CPU "
              f"{inf_load_cpu:.0f} s; on disk {disk / 1e6:,.0f} MB")
        at_rate = full_total / (points / load_s)
        print(f"at full rate the month would take ~{at_rate / 60:,.0f} min to load at this rate")

        # ---- the API
        def site_ready():
            st, _, body = get(port, "/api/v1/sites", secrets["staff"])
            s = json.loads(body)["sites"]
            return st == 200 and s and s[0]["devices_total"] == NDEV
        wait_for("the site's 300 devices in /api/v1/sites", site_ready, 20)

        rng = lambda days: urllib.parse.urlencode({"site": SITE, "from": t_end - days * DAY_MS, "to": t_end})
        all_rng = lambda days: urllib.parse.urlencode({"from": t_end - days * DAY_MS, "to": t_end})
        # cheap rows first, the month last: (row, path, token, summary days)
        cases = [
            ("sites (staff)", "/api/v1/sites", "staff", None),
            ("alarms, default range 1 d (staff)", "/api/v1/alarms", "staff", None),
            (f"alarms {a.days} d (staff)", f"/api/v1/alarms?{all_rng(a.days)}", "staff", None),
            (f"alarms {a.days} d (regulator)", f"/api/v1/alarms?{all_rng(a.days)}", "regulator", None),
            ("summary 1 d (regulator)", f"/api/v1/summary?{rng(1)}", "regulator", 1),
            (f"summary {min(7, a.days)} d (regulator)", f"/api/v1/summary?{rng(min(7, a.days))}",
             "regulator", min(7, a.days)),
            (f"summary {a.days} d (regulator)", f"/api/v1/summary?{rng(a.days)}", "regulator", a.days),
        ]
        cases = [c for i, c in enumerate(cases) if c[0] not in [d[0] for d in cases[i + 1:]]]
        results, summaries = {}, {}
        for name, path, who, days in cases:
            log(f"GET {name} ...")
            row_t0 = time.monotonic()
            st, warm_s, body = get(port, path, secrets[who])
            if st == 200 and days:
                summaries[days] = json.loads(body)
            times, statuses = [], {}
            h0, i0 = cpu_s(hub.pid), cpu_s(influx.proc.pid)
            t0 = time.monotonic()
            while len(times) < a.requests and (not times or time.monotonic() - t0 < a.row_budget):
                st, dt, body = get(port, path, secrets[who])
                statuses[st] = statuses.get(st, 0) + 1
                times.append(dt)
            results[name] = {"n": len(times), "warm": warm_s, "p50": pct(times, 0.5),
                             "p99": pct(times, 0.99), "max": max(times),
                             "hub_cpu": (cpu_s(hub.pid) - h0) / len(times),
                             "inf_cpu": (cpu_s(influx.proc.pid) - i0) / len(times),
                             "bytes": len(body), "status": statuses, "took": time.monotonic() - row_t0}
        month_row = results[cases[-1][0]]

        print(f"\n== API latency (client wall time, a new connection per request; InfluxDB, care-hub "
              f"and this client on the same 2 cores)")
        print(f"{'request':<36} {'n':>3} {'warm-up':>8} {'p50':>9} {'p99':>9} {'max':>9} "
              f"{'hub CPU':>9} {'Influx CPU':>10} {'body':>9}  status")
        for name, *_ in cases[::-1][:3] + cases[:-3]:
            r = results[name]
            print(f"{name:<36} {r['n']:>3} {r['warm']:>7.3f}s {r['p50']:>8.3f}s {r['p99']:>8.3f}s "
                  f"{r['max']:>8.3f}s {r['hub_cpu'] * 1000:>7.1f}ms {r['inf_cpu']:>9.2f}s {r['bytes']:>8,}B  "
                  + ", ".join(f"{k} x{v}" for k, v in sorted(r["status"].items())))
        print(f"(n: timed requests after one warm-up: {a.requests}, or fewer when they take more than "
              f"--row-budget {a.row_budget:.0f} s (at least one); with few requests p99 is their max. "
              f"CPU: per timed request)")
        s = summaries.get(a.days)
        assert s, f"no {a.days}-day summary answered 200"
        print(f"{a.days}-day summary: {s['alarms']['raised']} alarms raised (high {s['alarms']['by_priority']['high']}, "
              f"medium {s['alarms']['by_priority']['medium']}, low {s['alarms']['by_priority']['low']}), "
              f"ack p50 {s['alarms']['ack_p50_s']} s, p90 {s['alarms']['ack_p90_s']} s, never acked "
              f"{s['alarms']['never_acked']}; {len(s['environment'])} (room, metric) compliance rows, "
              f"CO2 within {sum(e['within'] for e in s['environment'] if e['metric'] == 'co2') / max(1, sum(e['samples'] for e in s['environment'] if e['metric'] == 'co2')) * 100:.1f} %; "
              f"devices {s['devices']['total']}, online {s['devices']['online_pct']} %; completeness "
              f"{s['completeness']['received']:,}/{s['completeness']['expected']:,}")
        stored = s["completeness"]["received"]
        tele = sum(month.counts.values())
        print(f"check: readings the summary counted = {stored:,}, loaded = {tele:,}"
              f"{'' if stored == tele else '  <-- MISMATCH'}")
        # The summary's device-online and completeness statements (hub/api.c summary_devices)
        # read `seq` of every reading of the range; its compliance statements read the air boards
        # only, which are loaded at full rate. Time the seq statements (as api.c writes them)
        # straight against InfluxDB, over the last 7 days (their cost is linear in the readings),
        # to scale just that part to full rate.
        sd = min(7, a.days)
        where = f"\"site\" = '{SITE}' AND time >= {t_end - sd * DAY_MS}ms AND time < {t_end}ms"
        seq_q = (f"SELECT count(\"c\") FROM (SELECT count(\"seq\") AS \"c\" FROM /.*/ WHERE {where} "
                 f"GROUP BY time(300000ms), \"gateway\", \"device\") GROUP BY \"gateway\", \"device\"; "
                 f"SELECT count(\"seq\"), min(\"seq\"), max(\"seq\") FROM /.*/ WHERE {where} GROUP BY \"gateway\"")
        t = time.perf_counter()
        body = urllib.parse.urlencode({"db": DB, "q": seq_q, "epoch": "ms"}).encode()
        with urllib.request.urlopen(influx.url + "/query", data=body, timeout=600) as r:
            assert r.status == 200 and b'"error"' not in r.read()
        per_reading = (time.perf_counter() - t) / (tele * sd / a.days)
        seq_m = per_reading * tele
        p50_m = month_row["p50"]
        factor = (full_total + self_full) / tele
        full_per_hour = (full_total + self_full) / (a.days * 24)
        print(f"the summary's two seq statements (device online, completeness), straight to InfluxDB "
              f"over {sd} days: {per_reading * 1e9:.0f} ns a reading (the compliance counts read the "
              f"air boards only, loaded at full rate)")
        print(f"kept figures (hub/api.c): the first {a.days}-day summary reads each whole day once "
              f"(one query a day) and the hours at its ends (one query) and keeps them "
              f"({month_row['warm']:.1f} s here); later ones read the kept days and hours, and only the "
              f"minutes at the ends and the last rollup_after (15 min): p50 {p50_m:.2f} s here")
        print(f"extrapolated, not measured, at full rate (x{factor:.0f} readings, care-edge health "
              f"included): reading one day once ~{24 * full_per_hour * per_reading:.0f} s of InfluxDB "
              f"(one query, under api.query_timeout's 30 s); a month's first summary "
              f"~{seq_m * factor:,.0f} s, once; afterwards the live part (at most two partial hours "
              f"and 15 min, ~2.25 h of readings) ~{2.25 * full_per_hour * per_reading:.1f} s")

        # ---- how many sites one hub ingests
        print(f"\n== Sites of {RESIDENTS} residents per hub process at the default reporting intervals")
        per = [("bracelets (care-band, wearable)", RESIDENTS, BAND_S, 10),
               ("bed sensors (wifi-bed, bed)", RESIDENTS, BED_S, 5),
               ("air boards (air-board, environment)", ROOMS, AIR_S, 6)]
        rs = 0.0
        for what, n, iv, nf in per:
            r = n / iv
            rs += r
            print(f"  {what:<38} {n:>4} x 1/{iv} s = {r:7.1f} readings/s ({r * nf:6.0f} field values/s)")
        self_r = (NDEV + 1) / SELF_S
        print(f"  {'= readings':<38} {'':>4}          {rs:7.1f} readings/s = {rs:.1f} points/s")
        print(f"  {'care-edge health (edge_device, edge_gateway)':<46} {NDEV + 1} / {SELF_S} s = "
              f"{self_r:5.1f} points/s (self_metrics_interval {SELF_S} s; 60 s in the example site.yaml)")
        alarms_s = len(alarms) / (a.days * 86400)
        pts = rs + self_r + alarms_s
        print(f"  {'alarm transitions':<46} {len(alarms)} / {a.days} d = {alarms_s:.4f} points/s")
        print(f"  points/s per site: {rs:.1f} + {self_r:.1f} + {alarms_s:.4f} = {pts:.1f}")
        msgs = 1.0 + alarms_s + 2 / 86400
        per_msg = pts / 1.0
        print(f"  messages/s per site: care-edge sends its pending readings every uplink.batch_interval "
              f"(1 s) up to batch_max (500): ~1 telemetry message/s of ~{per_msg:.0f} readings, + "
              f"{alarms_s * 86400:.0f} alerts/day = {msgs:.3f} messages/s; at ~50 us a message that is "
              f"{msgs * 50:.0f} us/s of hub CPU per site: the message count does not limit a site "
              f"(it would with many gateways a site or a short batch_interval)")
        # points/s of one hub, interpolated between README's two loads: time per point = a + b/n
        (n1, r1), (n2, r2) = HUB_SMALL, HUB_LARGE
        b = (1 / r1 - 1 / r2) / (1 / n1 - 1 / n2)
        a0 = 1 / r2 - b / n2
        r_site = 1 / (a0 + b / per_msg)
        print(f"  one hub (README \"Scaling out\", hub + InfluxDB + Mosquitto on this 2-core box): "
              f"{r1 / 1000:.1f} k points/s with {n1}-reading messages, {r2 / 1000:.1f} k with {n2}; "
              f"as wall time a + b/n per point (hub, broker and InfluxDB on the same cores): "
              f"a = {a0 * 1e6:.1f} us, b = {b * 1e6:.0f} us a message -> "
              f"{r_site / 1000:.1f} k points/s at {per_msg:.0f} readings a message")
        print(f"  safety factor {SAFETY:.0%} (room for replayed backlogs after outages, the API's "
              f"queries on the same InfluxDB, bursts):")
        for label, r in ((f"small messages ({n1} readings), the floor", r1),
                         (f"this site's messages (~{per_msg:.0f} readings)", r_site),
                         (f"large messages ({n2} readings)", r2)):
            print(f"    {label:<40} {r:>8,.0f} x {SAFETY} / {pts:.1f} = {int(r * SAFETY / pts):>4} sites "
                  f"({int(r * SAFETY / pts) * RESIDENTS:,} residents)")
        print(f"  -> one hub process on this box: about {int(r_site * SAFETY / pts)} sites of {RESIDENTS} residents "
              f"({int(r1 * SAFETY / pts)} if the gateways sent small messages); InfluxDB on the same cores is "
              f"the limit. Points count readings: a bracelet's point has 10 fields, the README's 6, so "
              f"InfluxDB's share per point is somewhat higher here; the bracelets (1 s) are "
              f"{RESIDENTS / BAND_S / pts:.0%} of a site's points")
        per_pt = inf_load_cpu / points
        ic_m = month_row["inf_cpu"]
        print(f"  the API shares that InfluxDB: loading cost {per_pt * 1e6:.1f} us of InfluxDB CPU a point; "
              f"one {a.days}-day summary cost {ic_m:.1f} s of it, the same as writing ~{ic_m / per_pt:,.0f} "
              f"points (~{ic_m / per_pt / pts / 3600:.1f} h of one site at its default rate)")
        assert hub.stop() == 0, hub.tail()
        print(f"\n(this benchmark took {time.monotonic() - began:.0f} s: loading {load_s:.0f} s, the "
              f"{a.days}-day summary's warm-up and {month_row['n']} timed request(s) {month_row['took']:.0f} s; "
              f"{a.requests} of them would take ~{(a.requests + 1) * month_row['p50'] / 60:.0f} min)")
    finally:
        w.close()


if __name__ == "__main__":
    main()
