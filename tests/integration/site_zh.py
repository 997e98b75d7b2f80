#!/usr/bin/env python3
"""A site named entirely in Chinese (issue 13): display names for the site,
rooms, beds, zones, devices, residents and a console user, ASCII ids for
topics and tags, and the shipped elderly-care pack in zh-CN; through real
Mosquitto brokers, care-edge's ble bus, care-hub and InfluxDB.

- care-edge --check passes the file (and a name with a control character,
  a leading space, or a console user name with ':' is refused at its line);
- a resident at wandering risk walks room -> corridor -> east exit: the
  wandering alarm says kind wandering, names the exit zone (id and display
  name), the bed, the resident and the device, when the resident was seen
  there (located_ms), and its message is the pack's Chinese text filled in
  with those names;
- the birth inventory carries the site's, devices' and rooms' names;
- the console user 护士小王 logs in and acknowledges an SOS: the alert's by
  is console:护士小王;
- every name reads back byte-exact from the gateway's console, the hub's
  API (/alarms/active, /alarms) and InfluxDB (alarm fields, carehub_device
  fields); kind is a tag;
- in both consoles (headless Chromium, screenshots kept as site-zh-*.png;
  each in Chinese by default: the site's locale, the hub's api.locale)
  the wandering card is headed by its kind (防走失), then the exit zone's
  name, then 王奶奶;
- a regulator gets neither the resident's label, nor the device's name (it
  names the wearer), nor a message holding them.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (SRC, Console, Influx, Mosquitto, free_port, hub_yaml, log,  # noqa: E402
                     new_tokens, run_test, wait_for)
from care_site import hash_password, messages  # noqa: E402
from hub_api import Api  # noqa: E402
from chromium import Browser, ensure_installed  # noqa: E402
from cjk_font import ensure_cjk_font  # noqa: E402
from console_browser import artifact_dir  # noqa: E402

MAC = "C3:00:00:AB:CD:21"
SITE, GW, DB = "cq-yz-002", "gw-zh", "carehub_zh"
NAMES = {
    "site": "渝中区 幸福里养老院",
    "room": "3楼 东区 301",
    "bed": "301-床A",
    "corridor": "三楼走廊",
    "exit": "东门 出口, \"A=1\" \\ 北",  # a comma, '=', quotes and a backslash too
    "device": "王奶奶的手环",
    "resident": "王奶奶",
    "user": "护士小王",
}
PASSWORD = "correct horse 电池"


def q(s):
    """A YAML double-quoted scalar."""
    return json.dumps(s, ensure_ascii=False)


def site_yaml(central, local, spool, console_port, user_hash, extra=""):
    n = NAMES
    return f"""
site: {SITE}
gateway: {GW}
site_name: {q(n['site'])}
locale: zh-CN
uplink: {{broker: "{central.uri}", batch_interval: 200ms}}
spool: {{dir: "{spool}"}}
profiles: [{SRC}/deploy/profiles]
rule_packs: [{SRC}/deploy/rules/elderly-care.yaml]
rooms:
  - id: "301"
    name: {q(n['room'])}
    beds: [{{id: 301-A, name: {q(n['bed'])}}}]
buses:
  - id: floor3
    type: ble
    host: 127.0.0.1
    port: {local.port}
    format: omg
    topics: ["home/+/BTtoMQTT/#"]
    out_of_range: 30s
    location:
      window: 2s
      margin: 6
      dwell: 1s
      zones:
        - {{id: room-301, name: {q(n['room'])}, receivers: [gw-301]}}
        - {{id: corridor-3, name: {q(n['corridor'])}, receivers: [gw-corr]}}
        - {{id: exit-east, name: {q(n['exit'])}, exit: true, receivers: [gw-exit]}}
devices:
  - {{id: band-wang, name: {q(n['device'])}, bus: floor3, mac: "{MAC}", profile: care-band,
     interval: 250ms, room: "301"}}
residents:
  - {{id: R-1001, name: {q(n['resident'])}, room: "301", bed: 301-A, devices: [band-wang],
     wandering_risk: true}}
console:
  enabled: true
  bind: 127.0.0.1
  port: {console_port}
  users: [{{name: {q(n['user'])}, password_hash: "{user_hash}"}}]
self_metrics_interval: 1s
{extra}"""


def adv(local, receiver, rssi, flags=0x04):
    payload = {"id": MAC, "rssi": rssi, "manufacturerdata": f"ffff5a{flags:02x}48"}
    local.publish(f"home/{receiver}/BTtoMQTT/{MAC.replace(':', '')}", json.dumps(payload))


def hear(local, loudest, flags=0x04):
    for rx in ("gw-301", "gw-corr", "gw-exit"):
        adv(local, rx, -50 if rx == loudest else -85, flags)


def check_refused(w, central, local, user_hash):
    """Names that are not names: refused by --check at their file, line and key."""
    good = site_yaml(central, local, w.path("spool-bad"), free_port(), user_hash)
    cases = [  # (what, replaced, by, key)
        ("a control character", f"site_name: {q(NAMES['site'])}", 'site_name: "A\\u0007B"',
         "site_name"),
        ("a leading space", f"name: {q(NAMES['room'])}\n    beds", 'name: " 301"\n    beds',
         "name"),
        ("a user name with ':'", q(NAMES["user"]), q("护士:小王"), "name"),
    ]
    for i, (what, old, new, key) in enumerate(cases):
        assert old in good, old
        path = w.write(f"bad-{i}.yaml", good.replace(old, new, 1))
        r = subprocess.run([w.bin("care-edge"), "--check", "-c", path], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode != 0, f"{what} passed --check"
        assert f"bad-{i}.yaml:" in r.stderr and f"'{key}'" in r.stderr, (what, r.stderr)


def start_hub(w, central, influx):
    secrets, tokens, _ = new_tokens(w, {"staff": f"role: staff\n    sites: [{SITE}]",
                                        "reg": "role: regulator\n    district: cq-yz"})
    port = free_port()
    cfg = w.write("hub.yaml", hub_yaml(central, influx, DB, "hub-zh", w.path("hub-spool"), f"""api:
  port: {port}
  tokens_file: {tokens}
  rate_limit: 500
  locale: zh-CN
"""))
    hub = w.spawn("care-hub", [w.bin("care-hub"), "-c", cfg])
    wait_for("the hub's API", lambda: Api(port).get("/healthz")[0] == 200, 15)
    return hub, Api(port), secrets


def names_of(a):
    return {k: a.get(k) for k in ("kind", "site_name", "room", "room_name", "bed_name",
                                  "resident_name", "device_name")}


WANT_WANDERING = {"kind": "wandering", "site_name": NAMES["site"], "room": "exit-east",
                  "room_name": NAMES["exit"], "bed_name": NAMES["bed"],
                  "resident_name": NAMES["resident"], "device_name": NAMES["device"]}


WANDER = "wandering:band-wang"


def card_text(b, selector, what):
    b.wait_for("!!document.querySelector(%s)" % json.dumps(selector), timeout=15, what=what)
    return b.evaluate("(() => { const c = document.querySelector(%s);"
                      " return {kind: c.dataset.kind, text: c.innerText}; })()"
                      % json.dumps(selector))


def check_card(card):
    assert card["kind"] == "wandering", card
    for want in ("防走失", NAMES["exit"], NAMES["resident"]):
        assert want in card["text"], (want, card["text"])
    # the headline comes first: what happened, then where, then who
    text = card["text"]
    assert text.index("防走失") < text.index(NAMES["exit"]) < text.index(NAMES["resident"]), text


def browser_part(w, cport, api_port, token):
    """The wandering card in both consoles, in Chinese."""
    ensure_installed()
    ensure_cjk_font(log)
    art = artifact_dir()
    with Browser(width=412, height=915, mobile=True, log_path=w.path("chromium.log")) as b:
        b.navigate(f"http://127.0.0.1:{cport}/")
        b.wait_for("!!document.querySelector('#login-user')", timeout=10, what="the login form")
        b.fill("#login-user", NAMES["user"])
        b.fill("#login-password", PASSWORD)
        b.click("#login-submit")
        card = card_text(b, f"#active > [data-alarm-id=\"{WANDER}\"]", "the gateway's card")
        check_card(card)
        assert b.evaluate("document.documentElement.lang") == "zh-CN", "the site's locale"
        b.screenshot(os.path.join(art, "site-zh-edge.png"), full_page=False)

        b.navigate(f"http://127.0.0.1:{api_port}/")
        b.wait_for("!document.querySelector('#view-login').hidden", timeout=10,
                   what="the hub's login form")
        # no language chosen in this browser: the hub's api.locale, not the
        # browser's (en-US in headless Chromium)
        b.wait_for("document.documentElement.lang === 'zh-CN'", timeout=10,
                   what="the hub's console in Chinese by api.locale")
        b.fill("#token", token)
        b.click("#login")
        card = card_text(b, f".alarm-card[data-alarm-id=\"{WANDER}\"]", "the hub's card")
        check_card(card)
        b.screenshot(os.path.join(art, "site-zh-hub.png"), full_page=False)
    log(f"both consoles head the card 防走失 · {NAMES['exit']} · {NAMES['resident']} "
        f"(screenshots in {art})")


def test_site_zh(w):
    central = Mosquitto(w, name="central")
    local = Mosquitto(w, name="local")
    influx = Influx(w)
    user_hash = hash_password(w, PASSWORD)
    check_refused(w, central, local, user_hash)

    cport = free_port()
    site = w.write("site.yaml", site_yaml(central, local, w.path("spool"), cport, user_hash))
    r = subprocess.run([w.bin("care-edge"), "--check", "-c", site], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    log(f"--check: {r.stdout.strip() or r.stderr.strip()}")

    hub, api, tok = start_hub(w, central, influx)
    cap = central.subscribe(f"carehub/v1/{SITE}/{GW}/#", "capture")
    edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", site])
    edge.wait_log(r"\[ble:floor3\] connected", 10)
    time.sleep(0.3)

    # the birth names the site, the device and its room
    birth = wait_for("the birth", lambda: next((s for s in messages(cap, "/status")
                                                if s.get("online")), None), 10)
    assert birth["site_name"] == NAMES["site"], birth
    dev = birth["devices"][0]
    assert dev["name"] == NAMES["device"] and dev["room_name"] == NAMES["room"], dev

    for _ in range(3):
        hear(local, "gw-301")
        time.sleep(0.4)
    hear(local, "gw-301", flags=0x05)  # SOS pressed in the room
    hear(local, "gw-301")
    edge.wait_log(r"\[alarm:wearable-sos:band-wang\] raise", 5)
    t_walk = int(time.time() * 1000)
    for loud in ["gw-corr"] * 4 + ["gw-exit"] * 6:
        hear(local, loud)
        time.sleep(0.4)
    edge.wait_log(r"\[alarm:wandering:band-wang\] raise", 10)

    alert = next(a for a in messages(cap, "/alert") if a["alarm_id"] == "wandering:band-wang")
    assert names_of(alert) == WANT_WANDERING, names_of(alert)
    # the pack's zh-CN text, filled in with the names
    assert alert["message"] == f"{NAMES['resident']} 到达出口：{NAMES['exit']}", alert["message"]
    assert t_walk <= alert["located_ms"] <= alert["ts_ms"], alert
    sos = next(a for a in messages(cap, "/alert") if a["alarm_id"] == "wearable-sos:band-wang")
    assert sos["kind"] == "sos" and sos["room"] == "room-301", sos
    assert sos["room_name"] == NAMES["room"], sos
    assert sos["message"] == f"{NAMES['resident']} 紧急呼叫，位置：{NAMES['room']}", sos

    # the console: the Chinese user logs in, reads the names, acknowledges
    con = Console(cport, NAMES["user"], PASSWORD)
    assert con.status == 200, f"login as {NAMES['user']}: HTTP {con.status}"
    st, me = con.request("GET", "/api/me")
    assert st == 200 and me["user"] == NAMES["user"], me
    assert me["locale"] == "zh-CN" and me["site_name"] == NAMES["site"], me
    st, snap = con.request("GET", "/api/alarms")
    assert st == 200, snap
    seen = next(a for a in snap["alarms"] if a["alarm_id"] == "wandering:band-wang")
    assert names_of(seen) == WANT_WANDERING, names_of(seen)
    st, body = con.request("POST", "/api/alarms/wearable-sos:band-wang/ack", {})
    assert st == 200, (st, body)
    acked = wait_for("the acknowledgement on the wire", lambda: next(
        (a for a in messages(cap, "/alert")
         if a["alarm_id"] == "wearable-sos:band-wang" and a["event"] == "ack"), None), 10)
    assert acked["by"] == f"console:{NAMES['user']}", acked

    # the hub's API, byte-exact
    def hub_active():
        st, d = api.get("/api/v1/alarms/active", tok["staff"], site=SITE)
        assert st == 200, d
        return {a["alarm_id"]: a for a in d["alarms"]}

    act = wait_for("the wandering alarm at the hub",
                   lambda: hub_active().get("wandering:band-wang"), 15)
    assert names_of(act) == WANT_WANDERING, names_of(act)
    assert act["message"] == alert["message"] and act["located_ms"] == alert["located_ms"], act
    def hub_sos():  # acknowledged with its button released: back to normal, not active
        st, d = api.get("/api/v1/alarms", tok["staff"], site=SITE, **{
            "from": str(t_walk - 600000), "to": str(int(time.time() * 1000) + 60000)})
        assert st == 200, d
        return next((a for a in d["alarms"] if a["alarm_id"] == "wearable-sos:band-wang"
                     and a.get("acked_by")), None)

    ack_hub = wait_for("the acknowledgement at the hub", hub_sos, 15)
    assert ack_hub["kind"] == "sos" and ack_hub["resident_name"] == NAMES["resident"], ack_hub
    assert ack_hub["acked_by"] == f"console:{NAMES['user']}", ack_hub

    # InfluxDB, byte-exact: names as fields, kind as a tag
    rows = influx.series(f"SELECT * FROM \"alarm\" WHERE \"alarm_id\" = 'wandering:band-wang' "
                         f"AND \"event\" = 'raise'", DB)
    assert rows, "no stored raise of the wandering alarm"
    row = rows[0]
    for k in ("kind", "site_name", "room_name", "bed_name", "resident_name", "device_name",
              "message"):
        assert row[k] == (WANT_WANDERING.get(k) or alert[k]), (k, row[k])
    tags = {r["tagKey"] for r in influx.series('SHOW TAG KEYS FROM "alarm"', DB)}
    assert "kind" in tags and "room_name" not in tags, tags
    inv = wait_for("the stored inventory", lambda: influx.series(
        "SELECT * FROM \"carehub_device\" WHERE \"device\" = 'band-wang'", DB), 15)
    assert inv[0]["name"] == NAMES["device"] and inv[0]["room_name"] == NAMES["room"], inv[0]
    assert inv[0]["site_name"] == NAMES["site"], inv[0]

    # a regulator: no label, no message holding it
    st, d = api.get("/api/v1/alarms/active", tok["reg"], site=SITE)
    assert st == 200, d
    reg = next(a for a in d["alarms"] if a["alarm_id"] == "wandering:band-wang")
    assert reg["resident_name"] == "" and reg["device_name"] == "", reg
    assert reg["resident"] != "R-1001", reg
    assert NAMES["resident"] not in json.dumps(reg, ensure_ascii=False), reg

    browser_part(w, cport, api.port, tok["staff"])
    assert edge.stop() == 0, edge.tail()
    assert hub.stop() == 0, hub.tail()
    log(f"site in Chinese: --check ok; wandering at {NAMES['exit']!r} named in the alert, the "
        "console, the hub API and InfluxDB byte for byte; acknowledged by console:"
        f"{NAMES['user']}; the regulator sees no label")


if __name__ == "__main__":
    run_test(test_site_zh)
