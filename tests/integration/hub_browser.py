"""care-hub's web console (hub/www) end to end in a real headless browser.

Real parts, each on a free loopback port in a temporary directory and
stopped by PID: InfluxDB, the central Mosquitto, care-hub with its HTTP API
(hub/API.md) and two bearer tokens made with `care-hub --new-token` (staff
of the site; a regulator of a district whose prefix takes the site in),
care-sim (Modbus TCP: the nurse-call panel of room 203 and the nap room's air
board, tests/integration/care_site.py) and a real care-edge whose uplink is
that Mosquitto; Debian's chromium driven over the DevTools protocol
(tests/integration/chromium.py).

1. Staff, desktop window: signs in through the form (#token, #login); the
   board is live (#live[data-state=live]) and empty. Only then do care-sim and
   care-edge start: the SOS cord is pulled (and held) and the nap room's CO2
   climbs past 1000 ppm, so both cards can only come over the hub's event
   stream (the page fetched /api/v1/alarms/active before the gateway existed;
   that it did not fetch it again is checked, from its resource timings).
   Both cards are "unack" with an Acknowledge button; screenshot. A tap on Acknowledge of
   the SOS card: the page sends the command (the card waits, data-pending),
   the hub publishes it on the gateway's cmd/ack topic, care-edge acknowledges
   and its transition comes back through Mosquitto and the hub's stream: the
   card turns "acked", naming the token. Screenshots (desktop and phone).
   The gateway really did it: its log line, the "ack" point in InfluxDB by
   hub:<token>, the ack event on a second event stream read here, and
   /api/v1/alarms with ack_s.
2. Regulator: signs out the staff, signs in with the regulator token and
   lands on the supervision view; the site's summary card shows the same
   raised / acked / never-acknowledged / by-priority / median figures as
   /api/v1/summary for the very range the page asked for (read from the
   page's own resource timings), fetched here with the same token; the board
   shows the alarms read-only (no .ack-btn, no shelve, the read-only note, a
   re-keyed pseudonym). Screenshots of the supervision view at desktop size
   and at 390x844 (phone; no sideways scrolling).

Screenshots are artifacts that outlive the temporary directory, in
$CAREHUB_ARTIFACTS or <build dir>/test-artifacts/ as console_browser.py keeps
them (hub-browser-*.png, overwritten each run). On a failure (a timeout
included) the message says what was awaited, and hub-browser-failure.png and
the browser's log are left there too.
"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chromium import Browser, ensure_installed  # noqa: E402
from harness import (SRC, Influx, Mosquitto, free_port, log, new_tokens, run_test,  # noqa: E402
                     wait_for)
from care_site import GW, SITE, messages, site_config, start_sim  # noqa: E402
from console_browser import artifact_dir  # noqa: E402
from hub_api import Api, Stream  # noqa: E402

DB = "carehub_web"
STAFF, REGULATOR = "staff-sunny", "civil-affairs-sunny"
SOS = "sos:panel-203"
CO2 = "co2-high:nap-co2"
DESKTOP = (1280, 860)
PHONE = (390, 844)
PREFIX = "hub-browser"


# ---- setup ----------------------------------------------------------------

def make_tokens(w):
    """Two tokens from `care-hub --new-token`: {name: secret}, tokens file."""
    secrets, path, _ = new_tokens(w, {STAFF: f"role: staff\n    sites: [{SITE}]",
                                      REGULATOR: f"role: regulator\n    district: {SITE.split('-')[0]}-"})
    return secrets, path


def start_hub(w, central, influx, tokens_path, port):
    cfg = w.write("hub.yaml", f"""mqtt:
  broker: {central.uri}
  client_id: hub-web
influx:
  url: {influx.url}
  database: {DB}
  flush_interval: 100ms
  max_backoff: 1s
spool:
  dir: {w.path('hub-spool')}
api:
  bind: 127.0.0.1
  port: {port}
  tokens_file: {tokens_path}
  www_dir: {os.path.join(SRC, 'hub/www')}
  rate_limit: 50
self_metrics_interval: 1s
""")
    hub = w.spawn("care-hub", [w.bin("care-hub"), "-c", cfg])
    hub.wait_log(r"serving the API", 15)
    hub.wait_log(r"hub-web-view subscribed", 15)
    # Until its writer has created the database, care-hub answers the query
    # endpoints with 500 "the database refused the query" (InfluxDB: database
    # not found; reported), and the page would show that instead of an empty
    # board until its stream reconnects. Start from a hub that is ready.
    hub.wait_log(rf"database {DB} ready", 15)
    return hub


# ---- page helpers -----------------------------------------------------------

def card_sel(alarm_id):
    return f'.alarm-card[data-site="{SITE}"][data-alarm-id="{alarm_id}"]'


def card_info(b, alarm_id):
    return b.evaluate(
        "(() => { const c = document.querySelector(%s); if (!c) return null;"
        " return {state: c.dataset.state, prio: c.dataset.priority, gw: c.dataset.gateway,"
        " pending: c.dataset.pending || null, text: c.textContent,"
        " resident: c.querySelector('.resident')?.textContent || null,"
        " msg: c.querySelector('.msg')?.textContent || null,"
        " ack: !!c.querySelector('.ack-btn'),"
        " ack_disabled: !!c.querySelector('.ack-btn')?.disabled,"
        " shelve: !!c.querySelector('.shelve-btn')}; })()"
        % json.dumps(card_sel(alarm_id)))


def fetched(b, path):
    """URLs of the page's own requests to path (its resource timings)."""
    return b.evaluate("performance.getEntriesByType('resource').map(e => e.name)"
                      ".filter(n => new URL(n).pathname === %s)" % json.dumps(path))


def set_viewport(b, size, mobile):
    """Resizes the page (the emulated device); screenshots follow it."""
    b.width, b.height, b.mobile = size[0], size[1], mobile
    b.send("Emulation.setDeviceMetricsOverride",
           {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": mobile})
    b.wait_for(f"window.innerWidth === {size[0]}", timeout=5, what=f"a {size[0]} px wide page")
    time.sleep(0.3)  # the page's resize handler is debounced 150 ms


def shot(b, art, name, size, full_page=True):
    """A screenshot kept as an artifact: the whole page, or (full_page
    False) what the screen shows, as a phone user sees it (a full-page
    capture draws the fixed bottom navigation of the phone layout over the
    middle of the page, where the viewport's bottom was)."""
    path = b.screenshot(os.path.join(art, f"{PREFIX}-{name}.png"), full_page=full_page)
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    assert width == size[0] and (height >= size[1] if full_page else height == size[1]), \
        (path, width, height, size)
    assert os.path.getsize(path) > 5000, f"{path}: only {os.path.getsize(path)} bytes"
    log(f"screenshot: {path} ({width}x{height})")
    return path


def login(b, token, who):
    b.wait_for("!document.querySelector('#view-login').hidden", timeout=10,
               what="the login form")
    b.fill("#token", token)
    b.click("#login")
    b.wait_for("document.querySelector('#user-name').textContent === %s" % json.dumps(who),
               timeout=10, what=f"{who} to be signed in (#user-name)")
    b.wait_for("document.querySelector('#live').dataset.state === 'live'", timeout=15,
               what="the event stream to be live (#live[data-state=live])")


# ---- the test -------------------------------------------------------------------

def staff_part(w, b, base, api, tokens, central, art, cap):
    """Sign in, see the alarms arrive live, acknowledge one. Returns (edge,
    sim, seconds from the tap to the acknowledged card)."""
    b.navigate(base + "/")
    login(b, tokens[STAFF], STAFF)
    assert b.evaluate("location.hash") == "#/alarms", "staff land on the alarm board"
    assert b.evaluate("document.querySelector('#user-role').dataset.role") == "staff"
    assert b.evaluate("document.querySelector('[data-nav=supervision]').hidden"), \
        "the supervision view is not offered to staff"
    b.wait_for("!document.querySelector('#alarms-status').hidden"
               " && document.querySelector('#alarms-status').classList.contains('ok')",
               timeout=10, what="the board to say there are no active alarms")
    assert b.evaluate("document.querySelectorAll('.alarm-card').length") == 0
    snapshots = len(fetched(b, "/api/v1/alarms/active"))
    assert snapshots >= 1, "the board loads the active alarms once the stream is live"
    log("staff signed in; the board is live and empty")

    # Now the site: the alarms can only reach the open page over the stream.
    sim, mb_port = start_sim(w, """
  - {at: 1s, slave: panel-203, set: {metric: sos, value: 1}}
  - {at: 1s, slave: nap-co2, set: {metric: co2, ramp_to: 2200, over: 2s}}
""")
    site = site_config(w, mb_port, central, free_port(), "unused password 1")
    edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", site])
    edge.wait_log("serving the alarm console", 15)

    t0 = time.monotonic()
    b.wait_for("document.querySelector(%s)" % json.dumps(card_sel(SOS)), timeout=20,
               what=f"the card of {SOS} (pulled by care-sim) on the live board")
    log(f"SOS card shown {time.monotonic() - t0:.1f} s after care-edge started")
    b.wait_for("document.querySelector(%s)" % json.dumps(card_sel(CO2)), timeout=20,
               what=f"the card of {CO2} (CO2 ramped by care-sim) on the live board")
    sos, co2 = card_info(b, SOS), card_info(b, CO2)
    log(f"SOS card: {sos}")
    log(f"CO2 card: {co2}")
    assert sos["state"] == "unack" and sos["prio"] == "high" and sos["gw"] == GW, sos
    assert sos["ack"] and sos["shelve"] and not sos["pending"], sos
    assert sos["resident"] and "R-0417" in sos["resident"], "staff see the site's pseudonym"
    assert "SOS pulled in 203 (R-0417)" in sos["text"], sos
    assert co2["state"] == "unack" and co2["prio"] == "medium" and co2["ack"], co2
    order = b.evaluate("[...document.querySelectorAll('.alarm-card')].map(c => c.dataset.alarmId)")
    assert order == [SOS, CO2], f"high priority first: {order}"
    assert b.evaluate("document.querySelector('#nav-alarm-count').textContent") == "2"
    active = fetched(b, "/api/v1/alarms/active")
    assert len(active) == snapshots, \
        f"the cards must come over the event stream, not a refetch: {active}"
    assert b.evaluate("document.querySelector('#live').dataset.state") == "live"
    shot(b, art, "alarms", DESKTOP)

    # A second stream, read here: the hub's own record of what the page gets.
    stream = Stream(api.port, tokens[STAFF])
    cmds = central.subscribe(f"carehub/v1/{SITE}/{GW}/cmd/#", "cmds")
    time.sleep(0.5)

    t0 = time.monotonic()
    b.click(card_sel(SOS) + " .ack-btn")
    pend = card_info(b, SOS)
    log(f"just after the tap: state={pend['state']} pending={pend['pending']}")
    assert pend["state"] in ("unack", "acked"), pend
    if pend["state"] == "unack":  # the page waits for the gateway, it does not guess
        assert pend["pending"] == "ack" and pend["ack_disabled"], pend
    b.wait_for("document.querySelector(%s)?.dataset.state === 'acked'" % json.dumps(card_sel(SOS)),
               timeout=15, what=f"the card of {SOS} to turn acked (the gateway's transition "
                                f"over the hub's event stream)")
    took = time.monotonic() - t0
    b.wait_for("!document.querySelector(%s).dataset.pending" % json.dumps(card_sel(SOS)),
               timeout=5, what="the card to stop waiting")
    sos = card_info(b, SOS)
    log(f"SOS card {took:.2f} s after the tap: {sos}")
    assert not sos["ack"] and sos["shelve"], sos
    assert STAFF in sos["text"], f"the card names who acknowledged: {sos['text']}"
    assert card_info(b, CO2)["state"] == "unack"
    assert b.evaluate("document.querySelector('#nav-alarm-count').textContent") == "1"
    assert len(fetched(b, "/api/v1/alarms/active")) == snapshots, "no refetch: the change came live"
    posts = fetched(b, "/api/v1/commands")
    assert len(posts) == 1, posts
    shot(b, art, "acked", DESKTOP)
    set_viewport(b, PHONE, True)
    b.evaluate("window.scrollTo(0, 0)")
    shot(b, art, "acked-phone", PHONE, full_page=False)
    set_viewport(b, DESKTOP, False)

    # What the gateway did with it.
    line = edge.wait_log(rf"ack of {re.escape(SOS)} by hub:{STAFF}", 5)
    log(f"care-edge: {edge.output()[line.start():line.end()]}")
    cmd = wait_for("the command on the gateway's cmd topic",
                   lambda: messages(cmds, "/cmd/ack"), 5)
    assert cmd[0]["alarm_id"] == SOS and cmd[0]["by"] == f"hub:{STAFF}", cmd
    up = wait_for("the gateway's ack transition on the central broker",
                  lambda: [x for x in messages(cap, "/alert")
                           if x.get("alarm_id") == SOS and x.get("event") == "ack"], 5)
    assert up[0]["state"] == "acked" and up[0]["by"] == f"hub:{STAFF}", up
    ev = wait_for("the ack on the hub's event stream",
                  lambda: [d for e, d in stream.events
                           if e == "alarm" and d["alarm_id"] == SOS and d["event"] == "ack"], 5)
    assert ev[0]["state"] == "acked" and ev[0]["acked_by"] == f"hub:{STAFF}", ev
    stream.close()
    return edge, sim, took


def site_page_part(b, base, influx, art):
    """The site page for people (issue 13): in the last hour, a bed's heart rate
    and a bracelet's battery (written to InfluxDB as care-hub stores them)
    are charted per device under Residents; the bracelet's zone timeline has
    a band per zone it was located in (its room 203 for 15 min, then the
    corridor), in time order; a resident chart without data (breathing
    rate) is left out rather than drawn empty; the range asks the hub for
    15 s steps."""
    now = int(time.time() * 1000)
    lines = []
    for i in range(30):
        ts = now - 30 * 60000 + i * 60000
        lines.append(f"bed,device=bed-1,gateway={GW},quality=good,room=203,site={SITE} "
                     f"hr={60 + i % 5},in_bed=1,seq={1000 + 2 * i}i {ts}")
        zone, zi = ("room-203", 0) if i < 15 else ("corridor-2", 1)
        lines.append(f"wearable,device=band-1,gateway={GW},quality=good,room={zone},"
                     f"site={SITE} battery={90 - i // 10},zone={zi},seq={1001 + 2 * i}i {ts}")
    influx.write("\n".join(lines), DB)
    b.navigate(f"{base}/#/site/{SITE}")
    b.wait_for("document.querySelector('#site-range [data-range=\"1h\"]')", timeout=10,
               what="the site page's 1 h range")
    b.click('#site-range [data-range="1h"]')
    b.wait_for("document.querySelector('#care-charts figure[data-metric=\"bed.hr\"] svg')"
               " && document.querySelector('#care-charts figure[data-metric=\"wearable.battery\"]"
               " svg')", timeout=15, what="the bed's heart rate and the bracelet's battery charted")
    shown = b.evaluate("[...document.querySelectorAll('#care-charts figure')]"
                       ".map(f => f.dataset.metric)")
    assert "bed.rr" not in shown and "wearable.hr" not in shown, f"empty charts drawn: {shown}"
    assert "bed.in_bed" in shown and "wearable.zone" in shown, shown
    bands = b.evaluate("[...document.querySelectorAll('#care-charts figure[data-metric=\"wearable.zone\"]"
                       " rect[data-zone]')].map(r => [r.dataset.zone, +r.getAttribute('x')])")
    first = {z: min(x for zz, x in bands if zz == z) for z, _ in bands}
    assert set(first) == {"room-203", "corridor-2"}, bands
    assert first["room-203"] < first["corridor-2"], first  # the room, then the corridor
    title = b.evaluate("document.querySelector('#care-charts figure[data-metric=\"bed.hr\"]"
                       " .chart-title').textContent")
    assert title in ("心率 · 床垫", "Heart rate · bed"), title
    urls = [u for u in fetched(b, "/api/v1/series") if "measurement=bed" in u and "metric=hr" in u]
    assert any("every=15" in u for u in urls), urls
    shot(b, art, "site-residents", DESKTOP)
    log(f"site page, last hour: resident charts {shown}; none drawn empty")


def stored_ack(influx):
    pts = influx.series(f"SELECT * FROM \"alarm\" WHERE \"alarm_id\" = '{SOS}'", DB)
    return [p for p in pts if p["event"] == "ack"]


def regulator_part(b, api, tokens, art):
    b.click("#logout")
    b.wait_for("!document.querySelector('#view-login').hidden", timeout=5,
               what="the login form after signing out")
    assert b.evaluate("sessionStorage.length") == 0, "the token leaves with the session"
    assert b.evaluate("document.querySelectorAll('.alarm-card').length") == 0
    b.evaluate("performance.clearResourceTimings()")
    login(b, tokens[REGULATOR], REGULATOR)
    assert b.evaluate("location.hash") == "#/supervision", "a regulator lands on supervision"
    b.click("[data-nav=supervision]")
    b.wait_for("!document.querySelector('#view-supervision').hidden", timeout=5,
               what="the supervision view")
    card = f'.summary-card[data-site="{SITE}"]'
    b.wait_for("document.querySelector(%s)?.dataset.status === 'ok'" % json.dumps(card),
               timeout=15, what=f"the summary card of {SITE} to load")
    figs = b.evaluate(
        "Object.fromEntries([...document.querySelector(%s).querySelectorAll('[data-figure]')]"
        ".map(e => [e.dataset.figure, {value: e.dataset.value ?? null, text: e.textContent}]))"
        % json.dumps(card))
    log(f"summary card: {figs}")

    urls = [u for u in fetched(b, "/api/v1/summary")
            if urllib.parse.parse_qs(urllib.parse.urlparse(u).query).get("site") == [SITE]]
    assert len(urls) == 1, f"one summary request for the site: {urls}"
    q = urllib.parse.parse_qs(urllib.parse.urlparse(urls[0]).query)
    frm, to = q["from"][0], q["to"][0]
    days = (int(to) - int(frm)) / 86400e3
    assert abs(days - 7) < 0.01, f"the default period is the last 7 days: {days:.3f} d"
    st, sm = api.get("/api/v1/summary", tokens[REGULATOR], site=SITE, **{"from": frm, "to": to})
    assert st == 200, (st, sm)
    a = sm["alarms"]
    log(f"/api/v1/summary (from={frm} to={to}): {a}")

    def num(key):
        v = figs[key]["value"]
        return None if v in ("", None) else float(v)
    assert num("raised") == a["raised"], (figs["raised"], a)
    assert a["raised"] >= 2 and a["by_priority"]["high"] >= 1 and a["by_priority"]["medium"] >= 1, a
    assert num("acked") == a["acked"] == 1, (figs["acked"], a)
    assert num("never_acked") == a["never_acked"] == a["raised"] - 1, (figs["never_acked"], a)
    assert a["ack_p50_s"] is not None and num("ack_p50_s") == a["ack_p50_s"], (figs, a)
    # the alarm's end and the condition's end, each shown as the hub gave it
    for key in ("resolved_p50_s", "clear_p50_s"):
        assert num(key) == a[key], (key, figs, a)
    defs = b.evaluate("[...document.querySelectorAll(%s)].map(e => e.closest('.fig').title)"
                      % json.dumps(card + " [data-figure$='_p50_s']"))
    assert len(defs) == 3 and all(defs), f"each median figure has its definition: {defs}"
    for p in ("high", "medium", "low"):
        assert int(figs[f"by_priority.{p}"]["text"]) == a["by_priority"].get(p, 0), (p, figs, a)
    assert str(a["raised"]) in figs["raised"]["text"], figs["raised"]
    assert not b.evaluate("document.querySelector('.ack-btn')"), "no .ack-btn for a regulator"
    shot(b, art, "supervision", DESKTOP)
    set_viewport(b, PHONE, True)
    over = b.evaluate("document.documentElement.scrollWidth")
    assert over <= PHONE[0], f"the supervision view scrolls sideways on a phone: {over} px"
    b.evaluate("window.scrollTo(0, 0)")
    shot(b, art, "supervision-phone", PHONE, full_page=False)
    b.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    shot(b, art, "supervision-phone-end", PHONE, full_page=False)
    # column heads of the compliance table stay within their column on a phone
    cramped = b.evaluate("[...document.querySelectorAll('.env-table thead .env-m')]"
                         ".filter(e => e.scrollWidth > e.clientWidth).map(e => e.textContent)")
    assert not cramped, f"compliance table heads overflow their column at {PHONE[0]} px: {cramped}"
    set_viewport(b, DESKTOP, False)

    # The board, read-only: the same alarms, no buttons, re-keyed pseudonyms.
    b.click("[data-nav=alarms]")
    b.wait_for("document.querySelector(%s)" % json.dumps(card_sel(CO2)), timeout=10,
               what="the alarms on the regulator's board")
    sos, co2 = card_info(b, SOS), card_info(b, CO2)
    log(f"regulator's SOS card: {sos}")
    assert sos["state"] == "acked" and co2["state"] == "unack", (sos, co2)
    assert not co2["ack"] and not co2["shelve"] and not sos["shelve"], (sos, co2)
    assert b.evaluate("document.querySelectorAll('.ack-btn, .shelve-btn, .unshelve-btn')"
                      ".length") == 0, "no command buttons for a regulator"
    assert not b.evaluate("document.querySelector('#alarms-readonly').hidden"), "the read-only note"
    assert sos["resident"] and "R-0417" not in sos["resident"] \
        and re.search(r"\bP-", sos["resident"]), \
        f"a regulator sees a re-keyed pseudonym: {sos['resident']}"
    # the message is written from the rule's template ("SOS pulled in {room}
    # ({resident})"): the hub re-keys the pseudonym in it too
    assert sos["msg"] and re.search(r"\bP-", sos["msg"]), sos
    assert "R-0417" not in sos["text"], sos["text"]
    assert STAFF not in sos["text"], f"no staff names for a regulator: {sos['text']}"
    shot(b, art, "regulator-alarms", DESKTOP)
    b.click("[data-nav=sites]")
    tile = json.dumps(f'.site-tile[data-site="{SITE}"]')
    b.wait_for(f"document.querySelector({tile})?.dataset.online === 'true'",
               timeout=10, what="the site's tile, online")
    return a


def test_hub_console_in_browser(w):
    ensure_installed()
    art = artifact_dir()
    for f in os.listdir(art):
        if f.startswith(PREFIX + "-"):
            os.remove(os.path.join(art, f))
    started = time.monotonic()
    chromium_log = w.path("chromium.log")
    with Browser(width=DESKTOP[0], height=DESKTOP[1], mobile=False, log_path=chromium_log) as b:
        influx = Influx(w)
        central = Mosquitto(w, name="central")
        cap = central.subscribe(f"carehub/v1/{SITE}/{GW}/#", "central-capture")
        tokens, tokens_path = make_tokens(w)
        port = free_port()
        hub = start_hub(w, central, influx, tokens_path, port)
        api = Api(port)
        base = f"http://127.0.0.1:{port}"
        log(f"hub and browser ready in {time.monotonic() - started:.1f} s")
        try:
            edge, sim, took = staff_part(w, b, base, api, tokens, central, art, cap)
            site_page_part(b, base, influx, art)
            ack = wait_for("the acknowledgement in InfluxDB (through care-hub)",
                           lambda: stored_ack(influx), 10)
            assert ack[0]["by"] == f"hub:{STAFF}" and ack[0]["state"] == "acked", ack
            st, body = api.get("/api/v1/alarms", tokens[STAFF], site=SITE)
            occ = {x["alarm_id"]: x for x in body["alarms"]}
            assert st == 200 and occ[SOS]["ack_s"] is not None, body
            assert occ[SOS]["acked_by"] == f"hub:{STAFF}" and occ[CO2]["state"] == "unack", body
            log(f"stored: {SOS} acknowledged by {ack[0]['by']} after {occ[SOS]['ack_s']} s")
            summary = regulator_part(b, api, tokens, art)
            errors = [c for c in b.console if c.startswith("exception")]
            assert not errors, f"page exceptions: {errors}"
        except BaseException as e:
            log(f"FAILED: {e}")
            log(f"page console: {b.console[-20:]}")
            try:
                fail = b.screenshot(os.path.join(art, f"{PREFIX}-failure.png"))
                log(f"failure screenshot: {fail} (page {b.evaluate('location.href')})")
            except Exception as e2:  # the browser itself may be what failed
                log(f"no failure screenshot: {e2!r}")
            if os.path.exists(chromium_log):
                shutil.copy(chromium_log, os.path.join(art, f"{PREFIX}-chromium.log"))
            raise
    assert edge.stop() == 0, edge.tail()
    assert hub.stop() == 0, hub.tail()
    assert sim.stop() == 0, sim.tail()
    for p in w.procs:  # a sanitizer build (-DCAREHUB_SANITIZE=ON) reports here
        if p.name in ("care-hub", "care-edge", "care-sim"):
            out = p.output()
            assert "AddressSanitizer" not in out and "runtime error:" not in out, p.tail(60)
    log(f"PASS in {time.monotonic() - started:.1f} s: alarms from care-sim shown live, "
        f"acknowledged in the page ({took:.2f} s tap to acked card), summary as the API's; "
        f"screenshots in {art}")


if __name__ == "__main__":
    run_test(test_hub_console_in_browser)
