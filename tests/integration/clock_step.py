"""A wall-clock step of -1 h and +1 h during a run (issue 10, test 5).

care-edge runs under the clockshift shim (tests/integration/clockshift.c,
LD_PRELOAD), which adds an offset this test changes at run time to every
wall-clock reading care-edge makes, and never touches CLOCK_MONOTONIC. Two
CO2 meters (care-sim, Modbus TCP) and one rule: co2 > 1000 for 10 s,
escalating after 8 s unacknowledged. Every delay is measured here on the
test's own monotonic clock, from the moment care-sim changed the value (its
log) or care-edge announced the transition (the console's event stream):

  A  co2-a goes high; the wall clock is set back 1 h during the on-delay:
     the alarm is raised 10 s after the condition (on the wall clock it
     would wait an hour), labelled with the new wall-clock time.
  F  co2-b goes high 9 s after co2-a; the wall clock is set forward 1 h
     during its on-delay (step B below): raised 10 s after its condition,
     not at the step.
  B  co2-a unacknowledged, the wall clock set forward 1 h: escalation 8 s
     after the raise, not at the step.
  C  co2-a shelved for 8 s (a hub command through the central broker), the
     wall clock set forward 1 h: shelving ends 8 s after it began, not at
     the step; the condition is still there, so it is raised again.
  D  that new occurrence, the wall clock set back 1 h: escalation 8 s
     after the raise.
  E  shelved for 8 s again, the wall clock set back 1 h: ends after 8 s.

Throughout, telemetry keeps reaching the central broker (no gap longer than
3 s; batches every 200 ms, self-metrics every second), co2-a's readings
after each step carry the new wall-clock time, and care-edge logs each of
the five steps once, with its size, and counts them (clock_steps).
Runtime: about 65 s (the shim also works under ASan: the sanitizer build
runs this test as well).
"""
import json
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import BIN, SRC, Console, Mosquitto, free_port, log, run_test, wait_for  # noqa: E402
from care_site import hash_password  # noqa: E402

SITE, GW = "clock-home", "gw-1"
USER, PASSWORD = "nurse1", "correct horse battery"
HOUR = 3600 * 1000
ON_DELAY, ESCALATE, SHELVE = 10.0, 8.0, 8.0
# scenario seconds: co2-a and co2-b go high (care-sim's clock)
A_AT, B_AT = 8, 17
# how far a delay may run past its nominal length: a 300 ms poll, the
# 1 s tick, the event stream
LATE = 2.5
# how much earlier than nominal a delay may look from here: only the
# latency between care-sim logging its change and this test reading it
EARLY = 0.25
STEP_LOG = r"wall clock stepped (back|forward) by [0-9.]+ s"


class Tail:
    """Reads a growing log file in a thread, stamping each new line with this
    process's monotonic clock when it was first seen."""

    def __init__(self, path):
        self.path = path
        self.lines = []
        self.lock = threading.Lock()
        self.stop = False
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        pos, part = 0, ""
        while not self.stop:
            try:
                with open(self.path, "r", errors="replace") as f:
                    f.seek(pos)
                    data = f.read()
                    pos = f.tell()
            except FileNotFoundError:
                data = ""
            if data:
                now = time.monotonic()
                part += data
                *full, part = part.split("\n")
                with self.lock:
                    self.lines.extend((now, line) for line in full)
            time.sleep(0.01)

    def find(self, pattern):
        rx = re.compile(pattern)
        with self.lock:
            for t, line in self.lines:
                if rx.search(line):
                    return t, line
        return None

    def all(self, pattern):
        rx = re.compile(pattern)
        with self.lock:
            return [(t, line) for t, line in self.lines if rx.search(line)]


class Clock:
    """The offset the shim adds to care-edge's wall clock."""

    def __init__(self, w):
        self.path = w.path("clock-offset")
        self.offset = 0
        self.steps = []
        self.write(0)

    def write(self, ms):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{ms}\n")
        os.replace(tmp, self.path)  # the shim never sees half a number

    def step(self, ms, why):
        self.offset += ms
        self.write(self.offset)
        self.steps.append((time.monotonic(), ms))
        log(f"wall clock stepped {ms // 1000:+d} s ({why}): care-edge is {self.offset // 1000:+d} s off")


def site_config(w, mb_port, central, cport):
    return w.write("site.yaml", f"""
site: {SITE}
gateway: {GW}
timezone: Asia/Shanghai
uplink: {{broker: "{central.uri}", batch_interval: 200ms}}
spool: {{dir: "{w.path('spool')}"}}
profiles: [{SRC}/deploy/profiles]
buses:
  - {{id: lan, type: modbus-tcp, host: 127.0.0.1, port: {mb_port}, timeout: 500ms}}
devices:
  - {{id: co2-a, bus: lan, slave: 1, profile: air-board, interval: 300ms, room: nap-1}}
  - {{id: co2-b, bus: lan, slave: 2, profile: air-board, interval: 300ms, room: nap-2}}
rules:
  - id: co2-high
    when: co2 > 1000
    for: {int(ON_DELAY)}s
    deadband: 100
    priority: medium
    escalate: {int(ESCALATE)}s
    escalate_max: 1
    select: {{profile: [air-board]}}
console:
  enabled: true
  bind: 127.0.0.1
  port: {cport}
  users: [{{name: {USER}, password_hash: "{hash_password(w, PASSWORD)}"}}]
self_metrics_interval: 1s
""")


def start_sim(w):
    port = free_port()
    cfg = w.write("sim.yaml", f"""
seed: 7
endpoints:
  - {{id: lan, tcp: "127.0.0.1:{port}"}}
slaves:
  - {{name: co2-a, endpoint: lan, unit: 1, model: air-board}}
  - {{name: co2-b, endpoint: lan, unit: 2, model: air-board}}
scenario:
  - {{at: 0s, slave: co2-a, set: {{metric: co2, value: 600}}}}
  - {{at: 0s, slave: co2-b, set: {{metric: co2, value: 600}}}}
  - {{at: {A_AT}s, slave: co2-a, set: {{metric: co2, value: 1500}}}}
  - {{at: {B_AT}s, slave: co2-b, set: {{metric: co2, value: 1500}}}}
""")
    sim = w.spawn("care-sim", [w.bin("care-sim"), "-c", cfg])
    sim.wait_log("care-sim ready", 10)
    return sim, port


def test_clock_steps(w):
    shim = os.path.join(BIN, "clockshift.so")
    assert os.path.exists(shim), f"{shim} not built"
    central = Mosquitto(w, name="central")
    tel = central.subscribe(f"carehub/v1/{SITE}/{GW}/telemetry", "telemetry")
    tel_tail = Tail(tel.logpath)
    sim, mb_port = start_sim(w)
    sim_tail = Tail(sim.logpath)
    clock = Clock(w)
    cport = free_port()
    site = site_config(w, mb_port, central, cport)
    env = dict(os.environ, LD_PRELOAD=shim, CAREHUB_CLOCKSHIFT_FILE=clock.path,
               # the shim comes ahead of the ASan runtime in a sanitizer build
               ASAN_OPTIONS=(os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0").lstrip(":"))
    edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", site], env=env)
    edge.wait_log("serving the alarm console", 10)
    edge_tail = Tail(edge.logpath)
    con = Console(cport, USER, PASSWORD)
    assert con.status == 200, f"login: HTTP {con.status}"
    con.listen()
    alarm_a, alarm_b = "co2-high:co2-a", "co2-high:co2-b"

    def event(aid, name, after=0.0):
        """(time seen, data) of aid's first `name` transition seen after `after`."""
        with con.lock:
            for t, n, d in con.events:
                if n == "alert" and d.get("alarm_id") == aid and d.get("event") == name and t > after:
                    return t, d
        return None

    def wait_event(aid, name, after, due, what):
        """Waits for aid's event after `after`; asserts it came `due` s
        after `after` by the monotonic clock (no earlier, at most LATE
        later). Returns (time, data)."""
        got = wait_for(what, lambda: event(aid, name, after), due + LATE + 1)
        took = got[0] - after
        log(f"{what}: {took:.2f} s (nominal {due:.0f} s)")
        assert due - EARLY <= took <= due + LATE, f"{what}: after {took:.2f} s, want {due:.0f} s"
        return got

    def shelve(aid, seconds):
        doc = {"schema": "carehub/command/1", "action": "shelve", "alarm_id": aid,
               "by": "hub:operator7", "ts_ms": int(time.time() * 1000),
               "duration_ms": int(seconds * 1000)}
        central.publish(f"carehub/v1/{SITE}/{GW}/cmd/shelve", json.dumps(doc))
        return wait_for(f"{aid} shelved", lambda: event(aid, "shelve", last_shelve[0]), 5)

    last_shelve = [0.0]

    # A: on-delay, wall clock set back 1 h one second into it
    t_a = wait_for("co2-a going high (care-sim)",
                   lambda: sim_tail.find(r"co2-a\] scenario 8s: co2 held at 1500"), A_AT + 15)[0]
    time.sleep(max(0.0, t_a + 1 - time.monotonic()))
    clock.step(-HOUR, "A: during co2-a's on-delay")
    t_raise, d = wait_event(alarm_a, "raise", t_a, ON_DELAY, "A: co2-a raised after its condition")
    assert abs(d["ts_ms"] - (time.time() * 1000 - HOUR)) < 5000, d  # labelled with the new time
    assert d["raised_ms"] == d["ts_ms"], d

    # B (and F): wall clock set forward 1 h, 1 s after the raise: co2-a
    # escalates 8 s after its raise; co2-b, high since B_AT, is inside its
    # own on-delay at the step
    t_b = wait_for("co2-b going high (care-sim)",
                   lambda: sim_tail.find(r"co2-b\] scenario 17s: co2 held at 1500"), 5)[0]
    time.sleep(max(0.0, t_raise + 1 - time.monotonic()))
    t_step_b = time.monotonic()
    clock.step(HOUR, "B: co2-a unacknowledged, co2-b in its on-delay")
    assert t_b < t_step_b < t_b + ON_DELAY - 1, "the +1 h step missed co2-b's on-delay"
    t_esc, d = wait_event(alarm_a, "escalate", t_raise, ESCALATE,
                          "B: co2-a escalated after its raise")
    assert d["escalation"] == 1 and abs(d["ts_ms"] - time.time() * 1000) < 5000, d
    wait_event(alarm_b, "raise", t_b, ON_DELAY, "F: co2-b raised after its condition")

    # C: shelved 8 s, wall clock set forward 1 h a second later
    t_sh, d = shelve(alarm_a, SHELVE)
    last_shelve[0] = t_sh
    assert d["state"] == "shelved", d
    assert abs(d["shelved_until_ms"] - (time.time() * 1000 + SHELVE * 1000)) < 3000, d
    time.sleep(max(0.0, t_sh + 1 - time.monotonic()))
    clock.step(HOUR, "C: co2-a shelved")
    # once care-edge's tick has seen the step, the console shows the end of
    # the shelving as the wall clock now plus what is left
    wait_for("care-edge to notice the step", lambda: len(edge_tail.all(STEP_LOG)) == 3, 3)
    time.sleep(0.2)
    st, body = con.request("GET", "/api/alarms")
    shown = next(x for x in body["alarms"] if x["alarm_id"] == alarm_a)
    left = shown["shelved_until_ms"] - (time.time() * 1000 + HOUR)  # wall now + what is left
    assert shown["state"] == "shelved" and 0 < left < SHELVE * 1000, (shown, left)
    t_un, _ = wait_event(alarm_a, "unshelve", t_sh, SHELVE, "C: co2-a's shelving ended")
    t_re, d = wait_for("co2-a raised again (a new occurrence)",
                       lambda: event(alarm_a, "raise", t_un - 0.5), 3)
    assert d["escalation"] == 0, d

    # D: the new occurrence escalates 8 s after its raise; wall clock set
    # back 1 h a second after the raise
    time.sleep(max(0.0, t_re + 1 - time.monotonic()))
    clock.step(-HOUR, "D: co2-a unacknowledged again")
    t_esc2, _ = wait_event(alarm_a, "escalate", t_re, ESCALATE, "D: co2-a escalated after its raise")

    # E: shelved 8 s again, wall clock set back 1 h a second later
    t_sh2, _ = shelve(alarm_a, SHELVE)
    last_shelve[0] = t_sh2
    time.sleep(max(0.0, t_sh2 + 1 - time.monotonic()))
    clock.step(-HOUR, "E: co2-a shelved")
    wait_event(alarm_a, "unshelve", t_sh2, SHELVE, "E: co2-a's shelving ended")
    t_end = time.monotonic()

    # every step logged once, with its size; counted in self-metrics
    steps = edge_tail.all(STEP_LOG)
    sizes = [(1 if "forward" in line else -1) * float(re.search(r"by ([0-9.]+) s", line).group(1))
             for _, line in steps]
    want = [ms / 1000 for _, ms in clock.steps]
    assert len(sizes) == len(want) and all(abs(a - b) < 2 for a, b in zip(sizes, want)), (sizes, want)

    def clock_steps_metric():
        for _, line in reversed(tel_tail.all(r"telemetry\t")):
            doc = json.loads(line.split("\t", 1)[1])
            for r in doc.get("readings", []):
                if r.get("device") == GW and "clock_steps" in r.get("metrics", {}):
                    return r["metrics"]["clock_steps"]
        return None
    wait_for("clock_steps = 5 in the gateway's self-metrics",
             lambda: clock_steps_metric() == len(clock.steps), 5)

    # telemetry never stalled; co2-a's readings after each step carry the
    # wall clock of their time
    msgs = tel_tail.all(r"telemetry\t")
    times = [t for t, _ in msgs if t <= t_end]
    assert times and times[0] < clock.steps[0][0], "no telemetry before the first step"
    gaps = [b - a for a, b in zip(times, times[1:])]
    worst = max(gaps)
    log(f"telemetry: {len(times)} messages, longest gap {worst:.2f} s across {len(clock.steps)} steps")
    assert worst <= 3.0, f"telemetry stalled for {worst:.2f} s"
    for i, (t_step, _) in enumerate(clock.steps):
        offset = sum(ms for _, ms in clock.steps[:i + 1])
        later = [(t, json.loads(line.split("\t", 1)[1])) for t, line in msgs if t_step + 0.5 < t]
        labels = [(t, r["ts"] if "ts" in r else r.get("ts_ms")) for t, doc in later
                  for r in doc.get("readings", []) if r.get("device") == "co2-a"]
        assert labels, f"no co2-a reading after step {i + 1}"
        t, ts = labels[0]
        assert abs(ts - (time.time() * 1000 - (time.monotonic() - t) * 1000 + offset)) < 3000, \
            (i, ts, offset)
    con.close()
    assert edge.stop() == 0, edge.tail()
    for tl in (tel_tail, sim_tail, edge_tail):
        tl.stop = True


if __name__ == "__main__":
    run_test(test_clock_steps)
