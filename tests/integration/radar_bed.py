"""A 60 GHz sleep radar at a bedside, end to end (issue 5): care-sim's
mr60-radar streams R60ABD1 frames into one end of a socat PTY pair, with
line noise, false headers and a bad checksum or tail now and then (fault
garbage); care-edge reads the other end with the radar-uart driver and a
bed-exit rule (in_bed == 0 for 2 s); a real Mosquitto carries its telemetry
and alerts, captured by mosquitto_sub.

Asserts:
- the normalised readings arrive: in_bed 1, presence 1, hr and rr in a
  sleeper's range with their units, movement, motion and sleep_stage;
- no bed-exit alarm while the resident is in bed;
- when the scenario takes the resident out of bed, in_bed 0 arrives and the
  bed-exit alarm is raised (high priority, room and bed of the resident),
  no earlier than the rule's 2 s after the first in_bed 0 reading;
- the noise was seen and dropped (care-edge reports the rejected frames by
  reason) without the radar ever being marked offline.
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import SRC, Mosquitto, log, run_test, wait_for  # noqa: E402
from care_site import messages  # noqa: E402

SITE, GW = "sunny-home", "gw-1"
EXIT_AT = 12  # scenario seconds: the resident gets up and leaves


def readings(cap, device):
    return [r for doc in messages(cap, "/telemetry") for r in doc.get("readings", [])
            if r.get("device") == device]


def test_radar_bed_exit(w):
    central = Mosquitto(w)
    cap = central.subscribe(f"carehub/v1/{SITE}/{GW}/#", name="capture")
    edge_pty, sim_pty = w.socat_pair("radar")

    sim_cfg = w.write("sim.yaml", f"""
seed: 5
endpoints:
  - {{id: bed-line, radar: "{sim_pty}"}}
slaves:
  - {{name: bed-12a, endpoint: bed-line, model: mr60-radar}}
scenario:
  - {{at: 0s, slave: bed-12a, fault: garbage}}
  - {{at: 0s, slave: bed-12a, set: {{metric: in_bed, value: 1}}}}
  - {{at: {EXIT_AT}s, slave: bed-12a, set: {{metric: in_bed, value: 0}}}}
""")
    sim = w.spawn("care-sim", [w.bin("care-sim"), "-c", sim_cfg, "--stats-interval", "2s"])
    sim.wait_log("care-sim ready", 10)

    site = w.write("site.yaml", f"""
site: {SITE}
gateway: {GW}
uplink: {{broker: "{central.uri}", batch_interval: 200ms}}
spool: {{dir: "{w.path('spool')}"}}
profiles: [{SRC}/deploy/profiles]
buses:
  - {{id: radar-12a, type: radar-uart, device: "{edge_pty}"}}
devices:
  - {{id: bed-12a, bus: radar-12a, profile: mr60-radar, interval: 500ms, room: "12"}}
residents:
  - {{id: R-0912, room: "12", bed: 12-A, devices: [bed-12a]}}
rules:
  - id: bed-exit
    when: in_bed == 0
    for: 2s
    priority: high
    select: {{kind: [bed]}}
    message: "{{resident}} out of bed in {{room}}"
self_metrics_interval: 1s
""")
    edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", site])
    edge.wait_log(r"\[radar:radar-12a\] opened", 10)

    def in_bed_reading():
        for r in readings(cap, "bed-12a"):
            m = r["metrics"]
            if (m.get("in_bed") == 1 and m.get("presence") == 1 and "hr" in m and "rr" in m
                    and "movement" in m and "motion" in m and "sleep_stage" in m):
                return r
        return None
    r = wait_for("a full in-bed reading from the radar", in_bed_reading, EXIT_AT)
    m, u = r["metrics"], r.get("units", {})
    log(f"in bed: {m}")
    assert 40 <= m["hr"] <= 100 and 8 <= m["rr"] <= 25, m
    assert 0 <= m["movement"] <= 100 and m["motion"] in (0, 1, 2), m
    assert m["sleep_stage"] in (0, 1, 2, 3), m
    assert u.get("hr") == "bpm" and u.get("rr") == "/min", u
    assert r["measurement"] == "bed" and r["room"] == "12", r
    assert not [a for a in messages(cap, "/alert") if a.get("rule") == "bed-exit"], \
        "bed-exit raised while the resident was in bed"

    raise_ev = wait_for(
        "the bed-exit alarm",
        lambda: next((a for a in messages(cap, "/alert")
                      if a.get("alarm_id") == "bed-exit:bed-12a" and a.get("event") == "raise"),
                     None), EXIT_AT + 25)
    log(f"alarm: {raise_ev}")
    assert raise_ev["priority"] == "high" and raise_ev["state"] == "unack", raise_ev
    assert raise_ev.get("room") == "12" and raise_ev.get("bed") == "12-A", raise_ev
    assert raise_ev.get("resident") == "R-0912", raise_ev
    out = [r for r in readings(cap, "bed-12a") if r["metrics"].get("in_bed") == 0]
    assert out, "no in_bed 0 reading before the alarm"
    assert raise_ev["ts_ms"] >= out[0]["ts"] + 1900, (raise_ev["ts_ms"], out[0]["ts"])
    assert all("hr" not in r["metrics"] or r["metrics"]["hr"] >= 0 for r in out)

    # the noise reached the parser, was dropped and counted, and the radar
    # never went offline because of it
    wait_for("care-edge to report dropped frames",
             lambda: re.search(r"\[radar:bed-12a\] [1-9]\d* frames dropped on .* \(checksum "
                               r"\d+, tail \d+, length \d+\)", edge.output()), 20)
    assert "offline after" not in edge.output(), edge.tail()
    stats = re.findall(r"\[sim:bed-line\] stats: radar line open, (\d+) frames sent .* (\d+) "
                       r"corrupted, (\d+) noise bytes\), (\d+) frames received", sim.output())
    assert stats and int(stats[-1][1]) > 0 and int(stats[-1][2]) > 0, stats
    assert int(stats[-1][3]) > 0, "care-edge sent no state queries"
    assert edge.stop() == 0 and sim.stop() == 0


if __name__ == "__main__":
    run_test(test_radar_bed_exit)
