"""The local alarm console end to end in a real headless browser (issue 4):
"the local console shows an alarm raised by the simulator and acknowledging
it updates the page; keep a screenshot as a test artifact".

Real parts, each on a free loopback port in a temporary directory and
stopped by PID: the central Mosquitto, care-sim (Modbus TCP: an air board in
a nap room whose CO2 ramps past the co2-high rule's 1000 ppm, and a
nurse-call panel whose SOS cord a scenario pulls and releases), care-edge
with its console on 127.0.0.1 and one staff user, and Debian's chromium
(tests/integration/chromium.py, installed when missing and we are root).

The browser, sized like a phone, signs in through the login form, waits for
the event stream to be live and for both alarm cards the simulator caused
(state, priority, room, bed, resident, message), takes a screenshot, taps
Acknowledge on each: the CO2 card (CO2 still high) turns acknowledged, the
SOS card (cord released, latched) leaves the list as the alarm returns to
normal; a second screenshot. The console's HTTP API must show the ack
transitions recorded by "console:nurse1", and the central broker must have
received them.

Both languages: the carer picks English on the login page's switch (so the
English checks hold whatever the gateway's locale or the browser's language
is); each card's data-kind and headline follow the kind the alarm's JSON
carries (GET /api/alarms, fetched by the page itself: "other" and
"Alarm"/"报警" while the gateway sends no kind); where and who are the
display names when the JSON has them, else the ids. Then 中文 on the header's
switch: Chinese headings, buttons, states and headlines; a reload keeps
Chinese (localStorage) over anything else; a screenshot of each language;
back to English for the acknowledgements.

Screenshots are artifacts that outlive the temporary directory: they go to
$CAREHUB_ARTIFACTS, else <build dir>/test-artifacts/ (the parent of
CAREHUB_BIN), overwriting the previous run's; their paths are printed. A
failure also leaves console-browser-failure.png and the browser's log there.
"""
import os
import shutil
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chromium import Browser, ensure_installed  # noqa: E402
from cjk_font import ensure_cjk_font  # noqa: E402
from harness import BIN, Console, Mosquitto, free_port, log, run_test, wait_for  # noqa: E402
from care_site import (GW, SITE, USER, messages, site_config, sos_readings,  # noqa: E402
                       start_sim)

PASSWORD = "night shift 22"
CO2 = "co2-high:nap-co2"
SOS = "sos:panel-203"
WIDTH, HEIGHT = 412, 915

# The page's words these checks read, per language (edge/console/app.js).
KIND_TITLE = {
    "en": {"sos": "SOS call", "fall": "Fall", "call": "Nurse call", "wandering": "Wandering",
           "bed_exit": "Out of bed", "vital_signs": "Vital signs", "inactivity": "No movement",
           "device_battery": "Low battery", "device_offline": "Device offline",
           "air_quality": "Air quality", "gas": "Gas", "smoke": "Smoke",
           "temperature": "Temperature", "gateway": "Gateway fault", "other": "Alarm"},
    "zh-CN": {"sos": "紧急呼叫", "fall": "跌倒", "call": "呼叫", "wandering": "防走失",
              "bed_exit": "离床", "vital_signs": "生命体征异常", "inactivity": "长时间未活动",
              "device_battery": "电量低", "device_offline": "设备离线", "air_quality": "空气质量",
              "gas": "燃气泄漏", "smoke": "烟雾", "temperature": "温度异常",
              "gateway": "网关故障", "other": "报警"},
}
WORDS = {
    "en": {"tab.active": "Active", "tab.history": "History", "ack": "Acknowledge",
           "shelve15": "Shelve 15 min", "unack": "Not acknowledged", "for": "Active for ",
           "room": "Room {}", "bed": "Bed {}", "resident": "Resident {}", "logout": "Sign out",
           "login": "Sign in", "latched": "Latched"},
    "zh-CN": {"tab.active": "当前报警", "tab.history": "报警记录", "ack": "确认",
              "shelve15": "搁置 15分钟", "unack": "未确认", "for": "已持续 ",
              "room": "{}房", "bed": "{}床", "resident": "住户 {}", "logout": "退出",
              "login": "登录", "latched": "保持至确认"},
}


def artifact_dir():
    d = os.environ.get("CAREHUB_ARTIFACTS") or os.path.join(
        os.path.dirname(os.path.normpath(os.path.abspath(BIN))), "test-artifacts")
    os.makedirs(d, exist_ok=True)
    return d


def card(alarm_id):
    return f"document.querySelector('#active > [data-alarm-id=\"{alarm_id}\"]')"


def card_info(b, alarm_id):
    return b.evaluate(
        "(() => { const c = %s; if (!c) return null;"
        " return {state: c.dataset.state, prio: c.dataset.priority, text: c.textContent,"
        " where: c.querySelector('.where')?.textContent, msg: c.querySelector('.msg')?.textContent,"
        " ack: !!c.querySelector('.ack')}; })()" % card(alarm_id))


def alarms_json(b):
    """The alarms as the gateway sends them, fetched by the page itself (its
    session cookie): what the cards are drawn from."""
    return {a["alarm_id"]: a for a in b.evaluate(
        "fetch('/api/alarms', {credentials: 'same-origin'}).then(r => r.json())"
        ".then(d => d.alarms)")}


def expected_where(a, lang):
    """Where, as the page must say it: a display name as it is, else the id
    in the language's label; a wearable's zone when located_ms is set."""
    w = WORDS[lang]
    if a.get("located_ms"):
        return None  # "Last seen at ..." with a time: checked by its prefix
    parts = []
    if a.get("room_name") or a.get("room"):
        parts.append(a.get("room_name") or w["room"].format(a["room"]))
    if a.get("bed_name") or a.get("bed"):
        parts.append(a.get("bed_name") or w["bed"].format(a["bed"]))
    return " \u00b7 ".join(parts)


def check_cards(b, lang, ids):
    """Every card of ids says, in lang, what (the kind its JSON carries, or
    "other"), where and who; its buttons and state are in lang too."""
    data = alarms_json(b)
    w = WORDS[lang]
    for aid in ids:
        a = data[aid]
        c = b.evaluate(
            "(() => { const c = %s; if (!c) return null;"
            " return {kind: c.dataset.kind, title: c.querySelector('.kind')?.textContent,"
            " icon: !!c.querySelector('.card-head svg.kind-icon path'),"
            " where: c.querySelector('.where')?.textContent,"
            " who: c.querySelector('.who')?.textContent, age: c.querySelector('.age')?.textContent,"
            " ack: c.querySelector('.ack')?.textContent,"
            " shelve: c.querySelector('.shelve[data-minutes=\"15\"]')?.textContent,"
            " state: c.querySelector('.tag.state')?.textContent,"
            " head: c.querySelector('.card-head')?.textContent}; })()" % card(aid))
        want_kind = a.get("kind") if a.get("kind") in KIND_TITLE["en"] else "other"
        assert c["kind"] == want_kind, (aid, a.get("kind"), c)
        assert c["title"] == KIND_TITLE[lang][want_kind] and c["icon"], (lang, aid, c)
        where = expected_where(a, lang)
        if where is not None:
            assert c["where"] == where, (lang, aid, c, a)
        if a.get("resident_name") or a.get("resident"):
            assert c["who"] == (a.get("resident_name") or w["resident"].format(a["resident"])), \
                (lang, aid, c)
        assert c["age"].startswith(w["for"]), (lang, aid, c)
        if a["state"] == "unack":
            assert c["state"] == w["unack"] and c["ack"] == w["ack"], (lang, aid, c)
            assert c["shelve"] == w["shelve15"], (lang, aid, c)
    return data


def check_lang(b, lang):
    """The page's chrome is in lang, and says so."""
    got = b.evaluate(
        "(() => ({lang: document.documentElement.lang,"
        " pressed: [...document.querySelectorAll('header button[data-lang]')]"
        ".filter(e => e.getAttribute('aria-pressed') === 'true').map(e => e.dataset.lang),"
        " active: document.querySelector('#tab-active [data-i18n]').textContent,"
        " history: document.querySelector('#tab-history').textContent,"
        " logout: document.querySelector('#logout').textContent,"
        " saved: localStorage.getItem('carehub.lang')}))()")
    w = WORDS[lang]
    assert got["lang"] == lang and got["pressed"] == [lang], got
    assert got["active"] == w["tab.active"] and got["history"] == w["tab.history"], got
    assert got["logout"] == w["logout"] and got["saved"] == lang, got


def check_png(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    assert width == WIDTH and height >= HEIGHT, (path, width, height)
    assert os.path.getsize(path) > 5000, f"{path}: only {os.path.getsize(path)} bytes"


def browse(w, b, base, central_cap, art):
    """The carer's part, in the browser."""
    b.navigate(base + "/")
    b.wait_for("!document.querySelector('#login-view').hidden", what="the login form")
    # English, chosen on the login page: it wins over the gateway's locale
    # and the browser's language.
    b.click("#login-view button[data-lang='en']")
    assert b.evaluate("[document.documentElement.lang, document.querySelector('#login-form h1')"
                      ".textContent, localStorage.getItem('carehub.lang')]") == \
        ["en", WORDS["en"]["login"], "en"]
    b.fill("#login-user", USER)
    b.fill("#login-password", PASSWORD)
    b.click("#login-submit")
    b.wait_for("document.querySelector('#live').dataset.state === 'live'", timeout=15,
               what="the event stream to be live")
    assert b.evaluate("document.querySelector('#whoami').textContent") == USER
    early = b.evaluate(card(CO2) + " !== null")
    log("page live; the CO2 alarm " + ("was already raised (snapshot)" if early
                                       else "is not raised yet (it will come over the stream)"))

    b.wait_for(card(CO2), timeout=30, what=f"the card of {CO2}")
    b.wait_for(card(SOS), timeout=15, what=f"the card of {SOS}")
    co2, sos = card_info(b, CO2), card_info(b, SOS)
    log(f"CO2 card: {co2}")
    log(f"SOS card: {sos}")
    data = alarms_json(b)
    named = any(k in a for a in data.values() for k in ("room_name", "bed_name", "resident_name"))
    assert co2["state"] == "unack" and co2["prio"] == "medium" and co2["ack"], co2
    assert named or co2["where"] == "Room nap-1", co2
    assert co2["msg"].startswith("CO2 ") and co2["msg"].endswith(" ppm in nap-1"), co2
    assert float(co2["msg"].split()[1]) > 1000, co2
    assert sos["state"] == "unack" and sos["prio"] == "high" and sos["ack"], sos
    assert named or sos["where"] == "Room 203 \u00b7 Bed 203-A", sos
    assert sos["msg"] == "SOS pulled in 203 (R-0417)", sos
    assert named or "Resident R-0417" in sos["text"], sos
    assert "Latched" in sos["text"], sos
    order = b.evaluate("[...document.querySelectorAll('#active > [data-alarm-id]')]"
                       ".map(e => e.dataset.alarmId)")
    assert order == [SOS, CO2], f"high before medium: {order}"
    assert b.evaluate("document.querySelector('#active-count').textContent") == "2"
    check_lang(b, "en")
    data = check_cards(b, "en", [SOS, CO2])
    log("kinds the gateway sent: " + ", ".join(f"{k}={v.get('kind')!r}" for k, v in data.items()))

    # The cord is released at 8 s; the SOS alarm stays (latched) until
    # acknowledged. Wait until care-edge has read the released cord, so the
    # acknowledgement below returns it to normal.
    wait_for("a reading of the released cord after the pull (central broker)",
             lambda: 1 in sos_readings(central_cap) and sos_readings(central_cap)[-1] == 0, 15)
    assert card_info(b, SOS)["state"] == "unack", "a latched alarm stays until acknowledged"

    shot1 = b.screenshot(os.path.join(art, "console-browser-alarms.png"))
    check_png(shot1)
    log(f"screenshot: {shot1}")
    shots = [shot1] + languages(b, base, art)

    # Acknowledge the CO2 alarm: CO2 is still high, so it stays, acknowledged.
    b.click(f"#active > [data-alarm-id=\"{CO2}\"] .ack")
    b.wait_for(card(CO2) + "?.dataset.state === 'acked'", timeout=10,
               what="the CO2 card to show acknowledged")
    co2 = card_info(b, CO2)
    assert not co2["ack"] and "Acknowledged" in co2["text"] and USER in co2["text"], co2
    # Acknowledge the SOS alarm: the cord is back, so it returns to normal
    # and leaves the list.
    b.click(f"#active > [data-alarm-id=\"{SOS}\"] .ack")
    b.wait_for("!" + card(SOS), timeout=10, what="the SOS card to leave the list")
    b.wait_for("document.querySelector('#active-count').textContent === '1'", timeout=5,
               what="the active count to drop to 1")
    assert b.evaluate("[...document.querySelectorAll('#active > [data-alarm-id]')]"
                      ".map(e => e.dataset.alarmId)") == [CO2]
    assert b.evaluate("document.querySelector('#live').dataset.state") == "live"
    shot2 = b.screenshot(os.path.join(art, "console-browser-acked.png"))
    check_png(shot2)
    log(f"screenshot: {shot2}")

    errors = [c for c in b.console if c.startswith("exception")]
    assert not errors, f"page exceptions: {errors}"
    return shots + [shot2]


def languages(b, base, art):
    """English, then Chinese from the header's switch, kept over a reload;
    a screenshot of each; back to English. Returns the screenshots' paths."""
    en = b.screenshot(os.path.join(art, "console-browser-en.png"), full_page=False)
    check_png(en)
    b.click("header button[data-lang='zh-CN']")
    check_lang(b, "zh-CN")
    check_cards(b, "zh-CN", [SOS, CO2])
    sos = card_info(b, SOS)
    assert WORDS["zh-CN"]["latched"] in sos["text"], sos
    # remembered: a reload comes back in Chinese, before and after signing in
    b.navigate(base + "/")
    b.wait_for("document.querySelector('#live').dataset.state === 'live'", timeout=15,
               what="the event stream to be live after the reload")
    b.wait_for(card(SOS) + " && " + card(CO2), timeout=10, what="both cards after the reload")
    check_lang(b, "zh-CN")
    check_cards(b, "zh-CN", [SOS, CO2])
    title = b.evaluate("document.title")
    assert title.startswith("(2) ") and title.endswith(" 报警"), title
    zh = b.screenshot(os.path.join(art, "console-browser-zh-CN.png"), full_page=False)
    check_png(zh)
    log(f"screenshots: {en} {zh}")
    b.click("header button[data-lang='en']")
    check_lang(b, "en")
    check_cards(b, "en", [SOS, CO2])
    return [en, zh]


def test_console_in_browser(w):
    ensure_installed()
    ensure_cjk_font(log)
    art = artifact_dir()
    for name in ("console-browser-failure.png", "console-browser-chromium.log"):
        try:
            os.remove(os.path.join(art, name))
        except FileNotFoundError:
            pass
    # The browser first: it is the slowest to start on a busy machine, and
    # the simulator's clock starts with care-sim.
    chromium_log = w.path("chromium.log")
    with Browser(width=WIDTH, height=HEIGHT, log_path=chromium_log) as b:
        central = Mosquitto(w, name="central")
        cap = central.subscribe(f"carehub/v1/{SITE}/{GW}/#", "central-capture")
        # CO2 climbs from 6 s; the SOS cord is pulled at 6 s and released at
        # 8 s (the rule latches): late enough that the page is usually live
        # first (it passes either way: the snapshot brings earlier alarms)
        sim, mb_port = start_sim(w, """
  - {at: 6s, slave: nap-co2, set: {metric: co2, ramp_to: 2200, over: 3s}}
  - {at: 6s, slave: panel-203, set: {metric: sos, value: 1}}
  - {at: 8s, slave: panel-203, set: {metric: sos, value: 0}}
""")
        cport = free_port()
        site = site_config(w, mb_port, central, cport, PASSWORD)
        edge = w.spawn("care-edge", [w.bin("care-edge"), "-c", site])
        edge.wait_log("serving the alarm console", 15)
        base = f"http://127.0.0.1:{cport}"
        try:
            shots = browse(w, b, base, cap, art)
        except BaseException:
            try:
                log(f"page console: {b.console[-20:]}")
                fail = b.screenshot(os.path.join(art, "console-browser-failure.png"))
                log(f"failure screenshot: {fail}")
            except Exception as e:  # the browser itself may be what failed
                log(f"no failure screenshot: {e!r}")
            if os.path.exists(chromium_log):
                shutil.copy(chromium_log, os.path.join(art, "console-browser-chromium.log"))
            raise

    # What the page did, as the console and the central broker recorded it.
    con = Console(cport, USER, PASSWORD)
    assert con.status == 200, f"login: HTTP {con.status}"
    st, body = con.request("GET", "/api/history?hours=1")
    assert st == 200, (st, body)
    hist = body["history"]
    acks = {h["alarm_id"]: h for h in hist if h["event"] == "ack"}
    assert set(acks) == {CO2, SOS}, hist
    for aid, h in acks.items():
        assert h["by"] == f"console:{USER}", h
    assert acks[CO2]["state"] == "acked", acks[CO2]
    assert any(h["event"] == "raise" and h["alarm_id"] == aid for aid in (CO2, SOS) for h in hist)
    log(f"history: {[(h['event'], h['alarm_id'], h.get('state'), h.get('by')) for h in hist]}")
    st, body = con.request("GET", "/api/alarms")
    assert st == 200 and [(a["alarm_id"], a["state"]) for a in body["alarms"]] == [(CO2, "acked")], body
    central_acks = wait_for(
        "both acknowledgements on the central broker",
        lambda: (lambda a: a if {x["alarm_id"] for x in a} >= {CO2, SOS} else None)(
            [x for x in messages(cap, "/alert") if x.get("event") == "ack"]), 10)
    assert all(x["by"] == f"console:{USER}" for x in central_acks), central_acks
    assert edge.stop() == 0, edge.tail()
    log(f"PASS: alarms from care-sim shown in English and Chinese and acknowledged in chromium; "
        f"screenshots: {' '.join(shots)}")


if __name__ == "__main__":
    run_test(test_console_in_browser)
