"""A failing disk never silences a site (issue 10, test 6), through real
parts: care-sim (four air boards and the sounder's relay on one Modbus TCP
endpoint, two nurse-call panels each on its own, started when their SOS is
due), care-edge with its console, the central Mosquitto, care-hub and
InfluxDB. The spool lives on a 1 MiB tmpfs of the test's own.

0. care-edge runs 3 s with the broker down: its spool holds readings 1..N.
1. The tmpfs is remounted read-only and care-edge started again. It starts
   (console, sounder, uplink), reads readings 1..N from the read-only disk and
   numbers new readings from N+1, kept in memory; it says so once in its log,
   its console status (the banner's data) and the self-metric
   spool_degraded, and raises its own alarm spool-failed:gw-1 (high): the
   sounder sounds. The alarm state file falls back to $RUNTIME_DIRECTORY. A
   carer acknowledges spool-failed; an SOS pulled in room 203 reaches the
   console's event stream, drives the sounder, is acknowledged there, and
   its transitions reach the hub live. The broker and the hub go away for
   8 s: the memory buffer (64 KiB) overflows and the oldest readings in it are
   dropped, numbered.
2. The tmpfs is writable again: care-edge moves memory to disk, says so once,
   spool-failed clears, the state file is written where it belongs again.
3. The broker and the hub go away again; 3 s later a filler eats the disk
   (and keeps eating whatever is freed, as a runaway log would): ENOSPC, and
   care-edge frees the oldest unsent readings of the segment it is writing a
   small step (16 KiB) at a time, numbered and logged, never the whole
   segment; with nothing left to free it keeps new records in memory.
   disk_full, spool-failed raised again, the sounder on. The broker and the
   hub come back while the disk is still full: spool-failed is acknowledged,
   an SOS in room 204 is raised, sounded, acknowledged and stored by the hub
   live. The filler is removed: the alarm clears, readings flow from disk.

At the end care-edge stops cleanly. The reading numbers InfluxDB holds have
gaps exactly where care-edge logged drops (every missing number inside a
logged range; at most the drops it had sent already may have arrived anyway),
the edge's counters say how many, every alert number 1..M is stored, and no
reading was refused without a number.

Needs root (mounts a tmpfs); exits 77 (skipped) otherwise.
"""
import glob
import json
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (SRC, Console, Influx, Mosquitto, free_port, log, ranges,  # noqa: E402
                     run_test, wait_for)
from care_site import GW, SITE, USER, hash_password  # noqa: E402

DB = "carehub"
PASSWORD = "correct horse battery"
SPOOL_FAILED = f"spool-failed:{GW}"


def sh(*argv):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"{' '.join(argv)}: {r.stderr}"


class Disk:
    """A small tmpfs mounted in the test's directory."""

    def __init__(self, path, size="1m"):
        self.path = path
        os.makedirs(path, exist_ok=True)
        sh("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", path)
        self.mounted = True

    def readonly(self, ro):
        sh("mount", "-o", "remount," + ("ro" if ro else "rw"), self.path)

    def umount(self):
        if self.mounted:
            subprocess.run(["umount", "-l", self.path], capture_output=True, timeout=30)
            self.mounted = False


class Filler:
    """Another program eating the disk: appends until ENOSPC, and keeps
    taking whatever is freed, every 100 ms, until stopped."""

    def __init__(self, path):
        self.path = path
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        chunk = b"\0" * 4096
        with open(self.path, "ab", buffering=0) as f:
            while not self.stop_ev.is_set():
                try:
                    while True:
                        f.write(chunk)
                except OSError:
                    pass
                self.stop_ev.wait(0.1)

    def full(self):
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize < 4096

    def remove(self):
        self.stop_ev.set()
        self.thread.join(10)
        os.unlink(self.path)


def start_sim(w, name, slaves):
    port = free_port()
    cfg = w.write(f"{name}.yaml", f"""
seed: 5
endpoints: [{{id: lan, tcp: "127.0.0.1:{port}"}}]
slaves:
{slaves}
""")
    sim = w.spawn(name, [w.bin("care-sim"), "-c", cfg])
    sim.wait_log("care-sim ready", 10)
    return sim, port


def coil_changes(sim):
    return re.findall(r"relay-9: coil 0 -> (on|off)", sim.output())


def alarm_events(influx, alarm_id, after=0):
    rows = influx.series(f"SELECT * FROM \"alarm\" WHERE \"alarm_id\" = '{alarm_id}'", DB)
    return [r["event"] for r in rows if r["time"] >= after]


def stored_readings(influx):
    rows = influx.series(f'SELECT "seq" FROM /^(environment|nurse_call|relay|edge_.*)$/ WHERE '
                         f'"gateway" = \'{GW}\'', DB)
    return {int(r["seq"]) for r in rows if r.get("seq") is not None}


def drops_logged(text):
    """What care-edge's spool logged as dropped telemetry: (id ranges, count,
    of them sent)."""
    spans, count, sent = [], 0, 0
    for m in re.finditer(r"dropped (\d+) telemetry records \(ids (\d+)\.\.(\d+), \d+ bytes; "
                         r"(\d+) of them sent", text):
        spans.append((int(m[2]), int(m[3])))
        count += int(m[1])
        sent += int(m[4])
    for m in re.finditer(r"dropped telemetry record (\d+) of", text):
        spans.append((int(m[1]), int(m[1])))
        count += 1
    return spans, count, sent


class Site:
    def __init__(self, w, disk):
        self.w = w
        self.influx = Influx(w)
        self.central = Mosquitto(w, name="central", start=False)
        self.hub_cfg = w.write("hub.yaml", f"""
mqtt: {{broker: "{self.central.uri}", client_id: hub-disk}}
influx: {{url: "{self.influx.url}", version: 1, database: {DB}, flush_interval: 200ms}}
spool: {{dir: "{w.path('hub-spool')}"}}
ack_interval: 300ms
""")
        self.hub = None
        airs = "\n".join(f"  - {{name: air-{i}, endpoint: lan, unit: {i}, model: air-board}}"
                         for i in range(1, 5))
        self.sim, lan = start_sim(w, "sim-lan", airs + "\n  - {name: relay-9, endpoint: lan, "
                                  "unit: 9, model: relay-4ch}")
        self.call_ports = [free_port(), free_port()]
        self.run_dir = w.dir("run")
        self.console_port = free_port()
        self.stats = w.path("stats.json")
        devs = "\n".join(f"  - {{id: air-{i}, bus: lan, slave: {i}, profile: air-board, "
                         f"interval: 250ms, room: \"10{i}\"}}" for i in range(1, 5))
        self.site = w.write("site.yaml", f"""
site: {SITE}
gateway: {GW}
timezone: Asia/Shanghai
uplink: {{broker: "{self.central.uri}", batch_interval: 200ms, hub_ack_timeout: 2s,
          reconnect_max: 2s}}
spool: {{dir: "{disk.path}/spool", max_bytes: 262144, memory_bytes: 65536, retry_interval: 1s}}
profiles: [{SRC}/deploy/profiles]
buses:
  - {{id: lan, type: modbus-tcp, host: 127.0.0.1, port: {lan}, timeout: 500ms}}
  - {{id: call-1, type: modbus-tcp, host: 127.0.0.1, port: {self.call_ports[0]}, timeout: 300ms,
     backoff_max: 1s}}
  - {{id: call-2, type: modbus-tcp, host: 127.0.0.1, port: {self.call_ports[1]}, timeout: 300ms,
     backoff_max: 1s}}
devices:
{devs}
  - {{id: panel-203, bus: call-1, slave: 2, profile: call-panel, interval: 300ms, room: "203"}}
  - {{id: panel-204, bus: call-2, slave: 2, profile: call-panel, interval: 300ms, room: "204"}}
residents:
  - {{id: R-0417, room: "203", bed: 203-A, devices: [panel-203]}}
  - {{id: R-0418, room: "204", bed: 204-A, devices: [panel-204]}}
rules:
  - id: sos
    when: sos == 1
    latch: true
    priority: high
    select: {{kind: [call]}}
    message: "SOS pulled in {{room}} ({{resident}})"
console:
  enabled: true
  bind: 127.0.0.1
  port: {self.console_port}
  users: [{{name: {USER}, password_hash: "{hash_password(w, PASSWORD)}"}}]
annunciators:
  - {{id: sounder, bus: lan, slave: 9, coil: 0, priorities: [high]}}
self_metrics_interval: 1s
""")
        self.edge = None
        self.con = None

    def start_hub(self, name):
        self.hub = self.w.spawn(name, [self.w.bin("care-hub"), "-c", self.hub_cfg])
        self.hub.wait_log("subscribed", 30)

    def outage(self, seconds, during=None):
        """The broker and the hub away for `seconds`."""
        self.hub.stop()
        self.central.stop()
        t0 = time.monotonic()
        if during:
            during()
        time.sleep(max(0, seconds - (time.monotonic() - t0)))
        self.central.start()
        self.start_hub(f"care-hub-{int(time.monotonic())}")

    def start_edge(self, name):
        env = dict(os.environ, RUNTIME_DIRECTORY=self.run_dir)
        self.edge = self.w.spawn(name, [self.w.bin("care-edge"), "-c", self.site,
                                        "--stats-file", self.stats], env=env)
        return self.edge

    def login(self):
        self.con = Console(self.console_port, USER, PASSWORD)
        assert self.con.status == 200, f"login: HTTP {self.con.status}"
        self.con.listen()

    def spool_status(self):
        st, body = self.con.request("GET", "/api/status")
        assert st == 200, (st, body)
        return body["status"]["spool"]

    def active(self, alarm_id):
        st, body = self.con.request("GET", "/api/alarms")
        assert st == 200, body
        return [a for a in body["alarms"] if a["alarm_id"] == alarm_id]

    def event(self, alarm_id, event, timeout, after=0.0):
        return wait_for(f"{event} of {alarm_id} on the console's event stream",
                        lambda: self.con.find(lambda n, d: n == "alert" and d.get("alarm_id") ==
                                              alarm_id and d.get("event") == event and
                                              d.get("ts_ms", 0) >= after), timeout)

    def ack(self, alarm_id):
        st, body = self.con.request("POST", f"/api/alarms/{alarm_id}/ack", {})
        assert st == 200, (st, body)

    def coil(self, want, timeout=5):
        wait_for(f"the sounder coil {want}", lambda: coil_changes(self.sim)[-1:] == [want],
                 timeout)

    def at_hub(self, alarm_id, events, timeout=20, after=0):
        wait_for(f"{', '.join(events)} of {alarm_id} stored through the hub",
                 lambda: set(events) <= set(alarm_events(self.influx, alarm_id, after)), timeout,
                 0.3)

    def sos(self, panel, port, name):
        """Pulls the cord of `panel` (its own care-sim, on `port`): raised on
        the console, the sounder on, acknowledged there, the sounder off, and
        both transitions stored by the hub while it happens."""
        aid = f"sos:{panel}"
        self.w.spawn(name, [self.w.bin("care-sim"), "-c", self.w.write(f"{name}.yaml", f"""
seed: 3
endpoints: [{{id: p, tcp: "127.0.0.1:{port}"}}]
slaves: [{{name: {panel}, endpoint: p, unit: 2, model: call-panel}}]
scenario: [{{at: 1s, slave: {panel}, set: {{metric: sos, pulse: 1, for: 2s}}}}]
""")]).wait_log("care-sim ready", 10)
        ev = self.event(aid, "raise", 15)[2]
        assert ev["priority"] == "high" and ev["latched"] and ev["room"] == panel[-3:], ev
        self.coil("on")
        self.ack(aid)
        ack = self.event(aid, "ack", 5)[2]
        assert ack["by"] == f"console:{USER}", ack
        self.coil("off")
        self.at_hub(aid, ["raise", "ack"])


def test_disk_failure(w):
    if os.geteuid() != 0:
        print("SKIP: needs root to mount a tmpfs")
        sys.exit(77)
    disk = Disk(w.path("disk"))
    try:
        run(w, disk)
    finally:
        disk.umount()


def run(w, disk):
    s = Site(w, disk)
    t_start = time.monotonic()

    # 0. a backlog on disk, written with the broker down
    e1 = s.start_edge("care-edge-1")
    e1.wait_log("serving the alarm console", 10)
    time.sleep(3)
    assert e1.stop() == 0, e1.tail()
    with open(s.stats) as f:
        backlog = json.load(f)["last_seq"]
    assert backlog > 10, backlog
    log(f"readings 1..{backlog} spooled with the broker down")

    # 1. read-only at start
    disk.readonly(True)
    s.central.start()
    s.start_hub("care-hub-1")
    edge = s.start_edge("care-edge-2")
    edge.wait_log("serving the alarm console", 10)
    assert "kept in memory only" in edge.output(), edge.tail()
    s.login()  # raised before anyone looked: in the list the console starts from
    ev = wait_for("spool-failed on the console", lambda: s.active(SPOOL_FAILED), 10)[0]
    assert ev["priority"] == "high" and ev["device"] == GW and ev["state"] == "unack", ev
    assert "Storage failure: data kept in memory only" in ev["message"], ev
    sp = s.spool_status()
    assert sp["degraded"] and sp["error"] == "Read-only file system", sp
    s.coil("on")  # spool-failed is high priority
    s.ack(SPOOL_FAILED)
    s.coil("off")
    s.at_hub(SPOOL_FAILED, ["raise", "ack"])
    wait_for("the alarm state in the fallback", lambda: glob.glob(f"{s.run_dir}/alarms-*.state"),
             5)
    s.sos("panel-203", s.call_ports[0], "sim-call-1")
    wait_for("readings 1.. from the read-only disk and live ones from memory at the hub",
             lambda: set(range(1, backlog + 20)) <= stored_readings(s.influx), 20, 0.5)
    log("read-only spool: console, sounder, SOS and live delivery work; numbers continue")
    s.outage(8)
    wait_for("drops from the full memory buffer", lambda: "memory buffer full" in edge.output(),
             1)

    # 2. writable again
    disk.readonly(False)
    edge.wait_log("back on disk", 15)
    s.event(SPOOL_FAILED, "clear", 5)
    assert not s.spool_status()["degraded"]
    wait_for("the fallback state file removed",
             lambda: not glob.glob(f"{s.run_dir}/alarms-*.state"), 5)
    assert os.path.exists(os.path.join(disk.path, "spool", "alarms.state"))
    log("writable again: memory moved to disk, spool-failed cleared")

    # 3. a full disk during the run, while the broker is away
    t_full = int(time.time() * 1000)
    t0 = time.monotonic()
    s.hub.stop()
    s.central.stop()
    time.sleep(3)  # unsent readings pile up in the segment being written
    filler = Filler(os.path.join(disk.path, "filler"))
    wait_for("the disk full", filler.full, 10)
    edge.wait_log(r"dropped \d+ telemetry records .*: disk full \(ENOSPC\)", 10)
    ev = s.event(SPOOL_FAILED, "raise", 10, after=t_full)[2]
    assert "Disk full" in ev["message"] or "No space left on device" in ev["message"], ev
    sp = s.spool_status()
    assert sp["disk_full"] and sp["error"] == "No space left on device", sp
    s.coil("on")
    time.sleep(max(0, 8 - (time.monotonic() - t0)))
    s.central.start()
    s.start_hub("care-hub-3")
    s.ack(SPOOL_FAILED)
    s.coil("off")
    s.sos("panel-204", s.call_ports[1], "sim-call-2")  # live, the disk still full
    s.at_hub(SPOOL_FAILED, ["raise", "ack"], after=t_full)
    filler.remove()
    s.event(SPOOL_FAILED, "clear", 15, after=t_full)
    s.at_hub(SPOOL_FAILED, ["clear"], after=t_full)
    assert not s.spool_status()["disk_full"]
    log("full disk: console, sounder, SOS and live delivery work; the alarm cleared")

    # every number accounted for
    before = len(stored_readings(s.influx))
    wait_for("live readings from disk at the hub again",
             lambda: len(stored_readings(s.influx)) >= before + 60, 15, 0.5)
    s.con.close()
    assert edge.stop() == 0, edge.tail()
    with open(s.stats) as f:
        st = json.load(f)
    text = edge.output()
    spans, count, sent = drops_logged(text)
    held = st["oldest_reading"]  # from here on still in the spool (not delivered, not lost)

    def explained():
        missing = sorted(set(range(1, held)) - stored_readings(s.influx))
        out = [n for n in missing if not any(lo <= n <= hi for lo, hi in spans)]
        return (missing,) if not out else None
    try:
        missing = wait_for("every missing number inside a logged drop", explained, 20, 0.5)[0]
    except AssertionError:
        missing = sorted(set(range(1, held)) - stored_readings(s.influx))
        raise AssertionError(f"missing {ranges(missing)}; drops logged {spans}")
    log(f"readings 1..{held - 1}: {len(missing)} missing ({ranges(missing)}); edge dropped "
        f"{count} ({sent} of them sent before): {spans}")
    assert st["dropped"] == count and st["dropped_sent"] == sent, (st, count, sent)
    assert missing, "no gap: nothing was dropped, the test did not test it"
    assert count - sent <= len(missing) <= count, (len(missing), count, sent)
    alerts = sorted(int(r["alert_seq"]) for r in s.influx.series(
        f'SELECT "alert_seq" FROM "alarm" WHERE "gateway" = \'{GW}\'', DB))
    assert alerts == list(range(1, st["last_alert_seq"] + 1)), alerts
    # loud, once per change, not once per write
    # to memory in phase 1, and in phase 3 when the filler left nothing to evict
    degraded = text.count("kept in memory only")
    assert degraded in (1, 2) and text.count("back on disk") == degraded, degraded
    assert text.count("disk full (ENOSPC) under") == 1
    # small steps, never the whole segment being written (64 KiB here) at once
    steps = [int(b) for b in re.findall(r"dropped \d+ telemetry records \(ids \d+\.\.\d+, "
                                        r"(\d+) bytes; \d+ of them sent but never "
                                        r"acknowledged\): disk full \(ENOSPC\)", text)]
    assert steps and max(steps) < 16384 + 2048, steps
    assert text.count("cannot write the alarm state") == 2
    assert "cannot spool" not in text  # no reading refused for want of a disk
    # counts, not the state: the samples taken while the disk was full may be
    # among the readings the full disk dropped
    metrics = s.influx.series('SELECT max("spool_degraded_count") AS d, '
                              'max("spool_disk_full_count") AS f, max("alerts_not_durable") AS n '
                              f'FROM "edge_gateway" WHERE "gateway" = \'{GW}\'', DB)[0]
    assert metrics["d"] == degraded and metrics["f"] == 1 and metrics["n"] >= 3, metrics
    log(f"done in {time.monotonic() - t_start:.0f} s")


if __name__ == "__main__":
    run_test(test_disk_failure)
