#!/usr/bin/env python3
"""How many alarms a nurse gets in a simulated care-home day (issue 13),
against ISA-18.2's benchmark (ANSI/ISA-18.2-2016, IEC 62682): about 6
alarms per operator-hour is "very likely acceptable", 12 "manageable";
a flood is more than 10 in 10 minutes.

The day is deploy/sim/care-day.yaml (eight residents with bracelets and
Wi-Fi beds, three makes of BLE receiver, and the scripted events: a
receiver offline from 01:30 to 16:00, a bed exit at 02:10, a fall at 03:00,
wandering to the exit at 04:20, a heart rate climbing from 05:00, an SOS at
08:30, a bracelet taken off at 10:00, a battery running flat from 13:00),
played by care-sim to care-edge configured as deploy/sim/care-day-site.yaml
but with the shipped deploy/rules/elderly-care.yaml pack (its real delays:
bed exit 20 min, heart rate 2 min, not worn 10 min) instead of the demo's
shortened rules. care-sim and care-edge both run on the simulation clock
(CAREHUB_SIM_CLOCK, common/util.h) from 00:00 (Asia/Shanghai) at --speed
times real time, so the bracelets' advertisements, the beds' reports, the
rules' delays and windows and the night hours are the day's; the day
takes 24 h / speed.
The broker runs in real time (it keeps no clock that matters here).

Every alarm transition the gateway publishes is counted: raises per hour
(what the nurse on duty is given; one operator for eight residents),
the busiest 10 minutes, and each rule's share. Escalations are counted
apart: they go to the next person, not to the same nurse again. Nobody
acknowledges, so latched alarms stay raised all day (one raise each).

A benchmark: prints figures, never passes or fails on them.

  python3 tests/bench/bench_alarm_rate.py [--speed 60] [--hours 24]
  python3 tests/bench/bench_alarm_rate.py --capture DIR/alerts.capture   # report again
"""
import argparse
import collections
import json
import math
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../integration"))
from harness import Mosquitto, World, log  # noqa: E402

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))


def site_yaml(port, spool):
    """care-day-site.yaml on this broker, with the shipped pack's rules
    instead of the demo's, and without its console and notifications."""
    with open(os.path.join(SRC, "deploy/sim/care-day-site.yaml"), encoding="utf-8") as f:
        text = f.read()
    # its rules, console and notify come last: all dropped
    text = text.split("\nrules:\n", 1)[0] + "\n"
    text = text.replace("port: 1883", f"port: {port}")
    text = text.replace("broker: tcp://127.0.0.1:1883", f"broker: tcp://127.0.0.1:{port}")
    text = re.sub(r"spool: \{dir: [^}]*\}", f"spool: {{dir: {spool}}}", text)
    text = text.replace("profiles: [../profiles]",
                        f"profiles: [{SRC}/deploy/profiles]\n"
                        f"rule_packs: [{SRC}/deploy/rules/elderly-care.yaml]")
    return text


def sim_yaml(port):
    with open(os.path.join(SRC, "deploy/sim/care-day.yaml"), encoding="utf-8") as f:
        return f.read().replace("tcp://127.0.0.1:1883", f"tcp://127.0.0.1:{port}")


def hour_of(ts_ms, t0_ms):
    return int((ts_ms - t0_ms) // 3_600_000)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--speed", type=float, default=60, help="simulated seconds per real second")
    ap.add_argument("--hours", type=float, default=24, help="simulated hours to play")
    ap.add_argument("--capture", help="report on the alert capture of an earlier run instead")
    a = ap.parse_args()
    if a.capture:
        report(transitions(a.capture), a.hours)
        return
    bin_dir = os.environ.get("CAREHUB_BIN", os.path.join(SRC, "build/bin"))
    w = World("bench_alarm_rate")
    try:
        mqtt = Mosquitto(w)
        site = w.write("site.yaml", site_yaml(mqtt.port, w.path("spool")))
        sim = w.write("care-day.yaml", sim_yaml(mqtt.port))
        subprocess.run([os.path.join(bin_dir, "care-edge"), "--check", "-c", site], check=True,
                       capture_output=True)
        cap = mqtt.subscribe("carehub/v1/care-day/gw-day/alert", "alerts")
        time.sleep(0.5)
        # care-sim and care-edge both run on the simulation clock (util.h):
        # the day from 00:00 local (care-day.yaml's start_at; UTC+8) at
        # --speed, each started where the other's clock is
        off_s = 8 * 3600
        day0_ms = ((int(time.time()) + off_s) // 86400 * 86400 - off_s) * 1000
        t_sim = time.monotonic()

        def sim_env():
            at = day0_ms + int((time.monotonic() - t_sim) * a.speed * 1000)
            return dict(os.environ, TZ="Asia/Shanghai", CAREHUB_SIM_CLOCK=f"{at},{a.speed:g}")
        sim_p = w.spawn("care-sim", [os.path.join(bin_dir, "care-sim"), "-c", sim], env=sim_env())
        edge = w.spawn("care-edge", [os.path.join(bin_dir, "care-edge"), "-c", site],
                       env=sim_env())
        real_s = a.hours * 3600 / a.speed
        log(f"playing {a.hours:g} simulated hours at x{a.speed:g}: {real_s:.0f} s")
        deadline = t_sim + real_s
        while time.monotonic() < deadline:
            assert edge.alive() and sim_p.alive(), (edge.tail(), sim_p.tail())
            time.sleep(min(10, max(0.1, deadline - time.monotonic())))
        edge.stop()
        sim_p.stop()
        time.sleep(1)
        cap.stop()
        report(transitions(cap.logpath), a.hours)
    finally:
        w.close()


def transitions(path):
    """The alarm transitions in a capture of the alert topic, each once: a
    gateway without a hub to acknowledge them sends its alerts again until
    one does (delivery: hub), so a copy is the same (alarm, event, ts)."""
    seen, out = set(), []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            _, _, payload = line.partition("\t")
            try:
                e = json.loads(payload)
            except ValueError:
                continue
            key = (e["alarm_id"], e["event"], e["ts_ms"], e.get("escalation", 0))
            if key not in seen:
                seen.add(key)
                out.append(e)
    return out


def report(events, hours):
    if not events:
        print("no alarm transitions were published")
        return
    raises = [e for e in events if e["event"] == "raise"]
    esc = [e for e in events if e["event"] == "escalate"]
    by_event = collections.Counter(e["event"] for e in events)
    print(f"\nalarm transitions in {hours:g} simulated hours: {dict(by_event)}")
    first = min(e["ts_ms"] for e in events)
    # the day's clock: local midnight of the first transition (UTC+8)
    midnight = (first + 8 * 3_600_000) // 86_400_000 * 86_400_000 - 8 * 3_600_000
    per_hour = collections.Counter(hour_of(e["ts_ms"], midnight) for e in raises)
    print("\nraises per hour of the day (the nurse on duty):")
    for h in range(math.ceil(hours)):
        print(f"  {h:02d}:00  {per_hour.get(h, 0):3d}  {'#' * min(per_hour.get(h, 0), 60)}")
    avg = len(raises) / hours
    busiest = max(per_hour.values()) if per_hour else 0
    ts = sorted(e["ts_ms"] for e in raises)
    flood10 = max((sum(1 for t in ts if s <= t < s + 600_000) for s in ts), default=0)
    floods = sum(1 for k in range(math.ceil(hours * 6))
                 if sum(1 for t in ts if midnight + k * 600_000 <= t < midnight + (k + 1) * 600_000)
                 > 10)
    print(f"\nraises: {len(raises)} in {hours:g} h = {avg:.2f} an hour on average "
          f"(ISA-18.2: about 6 acceptable, 12 manageable); busiest hour {busiest}; "
          f"most in any 10 minutes {flood10} (a flood is more than 10); "
          f"10-minute periods in flood {floods} of {math.ceil(hours * 6)}")
    print(f"escalations (to the next person): {len(esc)}")
    rules = collections.Counter(e["rule"] for e in raises)
    print("\nraises by rule (ISA-18.2's 'top ten' share):")
    for r, n in rules.most_common():
        kinds = {e.get("kind", "") for e in raises if e["rule"] == r}
        print(f"  {r:24} {','.join(sorted(kinds)):14} {n:3d}  {100 * n / len(raises):5.1f} %")
    chatter = collections.Counter((e["rule"], e["device"]) for e in raises)
    worst = chatter.most_common(1)[0]
    print(f"\nmost raises of one alarm: {worst[1]} ({worst[0][0]} on {worst[0][1]}; "
          f"ISA-18.2 calls an alarm raised 3 or more times a minute chattering)")


if __name__ == "__main__":
    main()
