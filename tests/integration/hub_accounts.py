#!/usr/bin/env python3
"""People's accounts on care-hub (hub/API.md, "Users and sessions"): the
users file, login sessions, the admins' /users, and the console's sign-in.

Real parts, each on a free loopback port in a temporary directory and
stopped by PID: InfluxDB, Mosquitto, care-hub (api.users_file), and Debian's
chromium over the DevTools protocol (tests/integration/chromium.py). Two
sites are announced (retained statuses) and each raises one alarm.

1. `care-hub users add` makes a Chinese-named staff user of one site
   (password on stdin) and an admin; the file is 0600.
2. Chromium: the nurse signs in with name and password (the default form),
   sees only her site on the sites view and only its alarm on the board; no
   token in sessionStorage, the cookie not readable by the page;
   screenshots. She signs out: the hub ended the session (its cookie is
   refused after).
3. The admin signs in in Chromium, opens Users and adds a user through the
   form (POST /api/v1/users); screenshot. That user logs in (the API).
4. Over HTTP (from chosen loopback source addresses): a wrong password gets
   one generic 401 (unknown names too) and is audited ("login failed");
   after 5 the name is locked (429 with Retry-After, even for the right
   password) while the address the nurse logged in from still gets in;
   wrong logins from one address under many names hit the per-address
   limit (429); a cookie POST without JSON (415) or from another origin
   (403) is refused; /me; password change (too short: 400; the old one
   then fails); an admin's disable, reset and delete end sessions; a
   staff session may not manage users (403); `care-hub users disable` and
   SIGHUP end a session.
5. A hub with session_idle 2s: a session idle for 3 s is gone.

Screenshots go to $CAREHUB_ARTIFACTS or <build dir>/test-artifacts/ as
hub-accounts-*.png (hub_browser.py's way).
"""
import http.client
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chromium import Browser, ensure_installed  # noqa: E402
from harness import (SRC, Influx, Mosquitto, free_port, hub_yaml, log, run_test,  # noqa: E402
                     wait_for)
from console_browser import artifact_dir  # noqa: E402
from hub_api import alert, status  # noqa: E402

DB = "carehub_accounts"
PREFIX = "hub-accounts"
NURSE, NURSE_PW, NURSE_DISPLAY = "护士小王", "xiaowang-2026!", "王护士"
ADMIN, ADMIN_PW = "admin-li", "li-admin-pass-42"
HELPER, HELPER_PW = "护工老张", "laozhang-pass-9"
MINE, OTHER = "sunny-01", "rainy-02"
DESKTOP = (1280, 860)


class Http:
    """One request per connection, from a chosen loopback source address,
    with a cookie jar of one session cookie."""

    def __init__(self, port, source="127.0.0.1"):
        self.port, self.source = port, source
        self.cookie = None

    def call(self, method, path, body=None, headers=None, cookie=True):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30,
                                       source_address=(self.source, 0))
        h = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        if cookie and self.cookie:
            h["Cookie"] = "carehub_session=" + self.cookie
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        c.close()
        sc = hdrs.get("set-cookie")
        if sc:
            m = re.match(r"carehub_session=([^;]*)", sc)
            self.cookie = m.group(1) if m and m.group(1) else None
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data
        return r.status, parsed, hdrs

    def login(self, name, password):
        return self.call("POST", "/api/v1/login", {"name": name, "password": password})


def add_user(w, cfg, name, password, *args):
    r = subprocess.run([w.bin("care-hub"), "users", "-c", cfg, "add", name, *args],
                       input=password + "\n", capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"care-hub users add {name}: {r.stderr}"


def hub_config(w, mqtt, influx, port, idle="1h"):
    tokens = w.write("tokens.yaml", "tokens: []\n")
    return w.write("hub.yaml", hub_yaml(mqtt, influx, DB, "hub-accounts", w.path("hub-spool"), f"""api:
  bind: 127.0.0.1
  port: {port}
  tokens_file: {tokens}
  users_file: {w.path('users.yaml')}
  www_dir: {os.path.join(SRC, 'hub/www')}
  session_idle: {idle}
  address_rate_limit: 2
self_metrics_interval: 1s
"""))


def start_hub(w, cfg, name="care-hub"):
    hub = w.spawn(name, [w.bin("care-hub"), "-c", cfg])
    hub.wait_log(r"serving the API", 15)
    hub.wait_log(r"hub-accounts-view subscribed", 15)
    return hub


def shot(b, art, name):
    path = b.screenshot(os.path.join(art, f"{PREFIX}-{name}.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", path
    assert os.path.getsize(path) > 5000, path
    log(f"screenshot: {path}")


def browser_login(b, base, name, password, shown):
    b.navigate(base + "/")
    b.wait_for("!document.querySelector('#view-login').hidden"
               " && !document.querySelector('#login-name').closest('[hidden]')",
               timeout=10, what="the name and password form (the default)")
    b.fill("#login-name", name)
    b.fill("#password", password)
    b.click("#login")
    b.wait_for("document.querySelector('#user-name').textContent === %s" % json.dumps(shown),
               timeout=15, what=f"{shown} to be signed in")


def browser_part(b, base, port, art):
    # the nurse: her site only
    browser_login(b, base, NURSE, NURSE_PW, NURSE_DISPLAY)
    assert b.evaluate("document.querySelector('#user-role').dataset.role") == "staff"
    assert b.evaluate("sessionStorage.getItem('carehub.token')") is None, "no token stored"
    assert "carehub_session" not in b.evaluate("document.cookie"), "the cookie is HttpOnly"
    assert b.evaluate("document.querySelector('[data-nav=users]').hidden"), \
        "no Users view for staff"
    b.wait_for("document.querySelectorAll('.alarm-card').length === 1", timeout=15,
               what="her site's one alarm on the board")
    assert b.evaluate("document.querySelector('.alarm-card').dataset.site") == MINE
    b.wait_for("document.querySelector('#live').dataset.state === 'live'", timeout=15,
               what="the event stream (with the cookie) to be live")
    shot(b, art, "nurse-alarms")
    b.navigate(base + "/#/sites")
    b.wait_for("document.querySelectorAll('.site-tile').length >= 1", timeout=10,
               what="the site tiles")
    tiles = b.evaluate("[...document.querySelectorAll('.site-tile')].map(e => e.dataset.site)")
    assert tiles == [MINE], f"the nurse sees {tiles}, only {MINE} expected"
    shot(b, art, "nurse-sites")
    log(f"{NURSE} signed in with her password in Chromium and sees only {MINE}")
    # a reload keeps the session (the cookie), then sign out ends it at the hub
    b.navigate(base + "/#/alarms")
    b.wait_for("document.querySelector('#user-name').textContent === %s"
               % json.dumps(NURSE_DISPLAY), timeout=10, what="the session to survive a reload")
    b.click("#logout")
    b.wait_for("!document.querySelector('#view-login').hidden", timeout=10,
               what="the login form after signing out")
    b.navigate(base + "/")
    time.sleep(1)
    assert b.evaluate("!document.querySelector('#view-login').hidden"), \
        "after logout a reload must not sign in again"

    # the admin adds a user through the Users view
    browser_login(b, base, ADMIN, ADMIN_PW, ADMIN)
    assert not b.evaluate("document.querySelector('[data-nav=users]').hidden")
    b.navigate(base + "/#/users")
    b.wait_for("document.querySelectorAll('tr.user-row').length === 2", timeout=10,
               what="the two users listed")
    b.fill("#new-user-name", HELPER)
    b.fill("#new-user-display", "张师傅")
    b.evaluate("document.querySelector('#new-user-role').value = 'staff'")
    b.fill("#new-user-sites", OTHER)
    b.fill("#new-user-password", HELPER_PW)
    b.click("#user-add")
    b.wait_for("!!document.querySelector('tr.user-row[data-user=%s]')" % json.dumps(HELPER),
               timeout=10, what=f"{HELPER} in the list after adding")
    shot(b, art, "admin-users")
    b.click("#logout")
    b.wait_for("!document.querySelector('#view-login').hidden", timeout=10, what="signed out")
    # the token way still works from the same form
    assert b.evaluate("document.querySelector('#token-box').hidden")
    b.click("#use-token")
    assert not b.evaluate("document.querySelector('#token-box').hidden")
    shot(b, art, "login-token-way")
    errors = [c for c in b.console if c.startswith("exception")]
    assert not errors, f"page exceptions: {errors}"


def throttle_part(port, w):
    """Per name and per address; generic answers; the audit."""
    good = Http(port)  # 127.0.0.1: where the nurse logged in (the browser)
    st, body, _ = good.login(NURSE, NURSE_PW)
    assert st == 200, body
    bad = Http(port, "127.0.0.3")
    st1, b1, _ = bad.login(NURSE, "wrong-password-1")
    st2, b2, _ = bad.login("nobody-here", "wrong-password-1")
    assert st1 == st2 == 401 and b1["message"] == b2["message"] == "wrong name or password", \
        (b1, b2)
    for i in range(4):
        st, body, _ = bad.login(NURSE, f"wrong-password-{i + 2}")
        assert st == 401, (i, st, body)
    st, body, h = bad.login(NURSE, NURSE_PW)
    assert st == 429 and int(h["retry-after"]) >= 1, (st, body, h)
    log(f"after 5 wrong passwords {NURSE} is locked: {st}, Retry-After {h['retry-after']}")
    st, body, _ = Http(port, "127.0.0.4").login(NURSE, NURSE_PW)
    assert st == 429, "locked for addresses where she never logged in"
    st, body, _ = good.login(NURSE, NURSE_PW)
    assert st == 200, ("her own station still gets in", st, body)
    # per address: unknown names, so no name locks; address_rate_limit 2 (burst 8)
    scan = Http(port, "127.0.0.5")
    codes = [scan.login(f"guess-{i}", "wrong-password")[0] for i in range(20)]
    assert codes[0] == 401 and 429 in codes, codes
    log(f"one address guessing many names: {codes}")
    audit = os.path.join(w.path("hub-spool") + "/..", "audit.jsonl")
    audit = os.path.normpath(audit)
    lines = [json.loads(x) for x in open(audit, encoding="utf-8")]
    failed = [x for x in lines if x.get("event", "").startswith("login failed: " + NURSE)]
    assert len(failed) >= 5, [x.get("event") for x in lines][-20:]
    ok = [x for x in lines if x.get("event") == "login" and x["token"] == "user:" + NURSE]
    assert ok and ok[0]["role"] == "staff", "the audit names the user"
    return good


def session_part(port, w, hub, cfg):
    nurse = Http(port)
    st, me, _ = nurse.login(NURSE, NURSE_PW)
    assert st == 200 and me["name"] == NURSE and me["display"] == NURSE_DISPLAY, me
    st, me, _ = nurse.call("GET", "/api/v1/me")
    assert st == 200 and me["kind"] == "user" and me["sites"] == [MINE], me
    st, sites, _ = nurse.call("GET", "/api/v1/sites")
    assert st == 200 and [s["site"] for s in sites["sites"]] == [MINE], sites
    st, body, _ = nurse.call("GET", "/api/v1/sites/" + OTHER)
    assert st == 403, body
    # CSRF: a cookie POST must be JSON, from this origin
    pw = json.dumps({"old": NURSE_PW, "new": "another-password-1"})
    st, body, _ = nurse.call("POST", "/api/v1/me/password", pw,
                             headers={"Content-Type": "text/plain"})
    assert st == 415, (st, body)
    st, body, _ = nurse.call("POST", "/api/v1/commands", "{}")  # no Content-Type at all
    assert st == 415, (st, body)
    st, body, _ = nurse.call("POST", "/api/v1/me/password", pw,
                             headers={"Content-Type": "application/json",
                                      "Origin": "http://evil.example"})
    assert st == 403, (st, body)
    st, body, _ = nurse.call("GET", "/api/v1/users")
    assert st == 403, "staff may not manage users"
    # password change
    st, body, _ = nurse.call("POST", "/api/v1/me/password", {"old": NURSE_PW, "new": "short1"})
    assert st == 400 and "10 characters" in body["message"], body
    st, body, _ = nurse.call("POST", "/api/v1/me/password",
                             {"old": NURSE_PW, "new": "another-password-1"})
    assert st == 200, body
    assert nurse.call("GET", "/api/v1/me")[0] == 200, "her own session goes on"
    assert Http(port).login(NURSE, NURSE_PW)[0] == 401
    assert Http(port).login(NURSE, "another-password-1")[0] == 200
    # logout
    st, body, h = nurse.call("POST", "/api/v1/logout", {})
    assert st == 200 and "Max-Age=0" in h["set-cookie"], h
    old = Http(port)
    assert old.login(NURSE, "another-password-1")[0] == 200
    saved = old.cookie
    assert old.call("POST", "/api/v1/logout", {})[0] == 200 and old.cookie is None
    old.cookie = saved
    assert old.call("GET", "/api/v1/me")[0] == 401, "a logged-out session is gone"

    # the admin's API: the helper added in the browser logs in; disable, reset, delete
    admin = Http(port)
    assert admin.login(ADMIN, ADMIN_PW)[0] == 200
    helper = Http(port)
    st, me, _ = helper.login(HELPER, HELPER_PW)
    assert st == 200 and me["sites"] == [OTHER] and me["display"] == "张师傅", me
    st, sites, _ = helper.call("GET", "/api/v1/sites")
    assert [s["site"] for s in sites["sites"]] == [OTHER], sites
    path = "/api/v1/users/" + urllib_quote(HELPER)
    st, body, _ = admin.call("PUT", path, {"disabled": True})
    assert st == 200 and body["disabled"] is True, body
    assert helper.call("GET", "/api/v1/me")[0] == 401, "disabling ends the sessions"
    assert Http(port).login(HELPER, HELPER_PW)[0] == 401
    st, body, _ = admin.call("PUT", path, {"disabled": False, "password": "new-helper-pass"})
    assert st == 200, body
    assert Http(port).login(HELPER, "new-helper-pass")[0] == 200
    st, body, _ = admin.call("POST", "/api/v1/users", {"name": "bad:name", "password":
                                                       "long-enough-1", "role": "staff",
                                                       "sites": [MINE]})
    assert st == 400, body
    st, body, _ = admin.call("POST", "/api/v1/users", {"name": NURSE, "password":
                                                       "long-enough-1", "role": "staff",
                                                       "sites": [MINE]})
    assert st == 409, body
    st, body, _ = admin.call("DELETE", path)
    assert st == 415, "with a cookie, DELETE too must say JSON (CSRF)"
    st, body, _ = admin.call("DELETE", path, headers={"Content-Type": "application/json"})
    assert st == 200, body
    assert Http(port).login(HELPER, "new-helper-pass")[0] == 401
    mode = stat.S_IMODE(os.stat(w.path("users.yaml")).st_mode)
    assert mode == 0o600, oct(mode)
    st, lst, _ = admin.call("GET", "/api/v1/users")
    assert sorted(u["name"] for u in lst["users"]) == sorted([NURSE, ADMIN]), lst
    assert all("password_hash" not in u for u in lst["users"])

    # the command line and SIGHUP
    nurse2 = Http(port)
    assert nurse2.login(NURSE, "another-password-1")[0] == 200
    r = subprocess.run([w.bin("care-hub"), "users", "-c", cfg, "disable", NURSE],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert nurse2.call("GET", "/api/v1/me")[0] == 200, "not before the reload"
    os.kill(hub.pid, signal.SIGHUP)
    hub.wait_log(r"reloaded: 2 users", 10)
    assert nurse2.call("GET", "/api/v1/me")[0] == 401, "disabled on SIGHUP"
    r = subprocess.run([w.bin("care-hub"), "users", "-c", cfg, "list"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and NURSE in r.stdout and "(disabled)" in r.stdout, r.stdout
    log("sessions: CSRF, password change, logout, admin changes and SIGHUP all checked")


def urllib_quote(s):
    import urllib.parse
    return urllib.parse.quote(s, safe="")


def test_hub_accounts(w):
    ensure_installed()
    art = artifact_dir()
    for f in os.listdir(art):
        if f.startswith(PREFIX + "-"):
            os.remove(os.path.join(art, f))
    influx = Influx(w)
    mqtt = Mosquitto(w)
    port = free_port()
    cfg = hub_config(w, mqtt, influx, port)
    add_user(w, cfg, NURSE, NURSE_PW, "--role", "staff", "--sites", MINE,
             "--display", NURSE_DISPLAY)
    add_user(w, cfg, ADMIN, ADMIN_PW, "--role", "admin", "--sites", "*")
    assert stat.S_IMODE(os.stat(w.path("users.yaml")).st_mode) == 0o600
    r = subprocess.run([w.bin("care-hub"), "users", "-c", cfg, "add", "x", "--role", "staff",
                        "--sites", MINE], input="short\n", capture_output=True, text=True)
    assert r.returncode == 2 and "10 characters" in r.stderr, r.stderr
    hub = start_hub(w, cfg)
    t0 = int(time.time() * 1000)
    for i, site in enumerate((MINE, OTHER)):
        mqtt.publish(f"carehub/v1/{site}/gw-1/status", json.dumps(status(site, True)),
                     retain=True)
        a = alert(site, f"A{i + 1}", i + 1, "high", "unack", "raise", t0, t0)
        mqtt.publish(f"carehub/v1/{site}/gw-1/alert", json.dumps(a))
    wait_for("both alarms in InfluxDB", lambda: (influx.series(
        'SELECT count("latched") FROM "alarm"', DB) or [{"count": 0}])[0]["count"] == 2, 30)
    base = f"http://127.0.0.1:{port}"
    chromium_log = w.path("chromium.log")
    with Browser(width=DESKTOP[0], height=DESKTOP[1], mobile=False, log_path=chromium_log) as b:
        try:
            browser_part(b, base, port, art)
        except BaseException as e:
            log(f"FAILED: {e}; page console: {b.console[-20:]}")
            try:
                b.screenshot(os.path.join(art, f"{PREFIX}-failure.png"))
            except Exception as e2:
                log(f"no failure screenshot: {e2!r}")
            if os.path.exists(chromium_log):
                shutil.copy(chromium_log, os.path.join(art, f"{PREFIX}-chromium.log"))
            raise
    throttle_part(port, w)
    session_part(port, w, hub, cfg)
    assert hub.stop() == 0, hub.tail()

    # idle expiry: a hub whose sessions end after 2 s without a request
    subprocess.run([w.bin("care-hub"), "users", "-c", cfg, "enable", NURSE], check=True,
                   capture_output=True, timeout=30)
    port2 = free_port()
    cfg2 = hub_config(w, mqtt, influx, port2, idle="2s")
    hub2 = start_hub(w, cfg2, "care-hub-idle")
    s = Http(port2)
    assert s.login(ADMIN, ADMIN_PW)[0] == 200
    for _ in range(3):  # requests within the idle time keep it
        time.sleep(1)
        assert s.call("GET", "/api/v1/me")[0] == 200
    time.sleep(3)
    st, body, h = s.call("GET", "/api/v1/me")
    assert st == 401 and "ended" in body["message"], (st, body)
    log("a session idle for longer than api.session_idle is gone")
    assert hub2.stop() == 0, hub2.tail()
    for p in w.procs:
        if p.name.startswith("care-hub"):
            out = p.output()
            assert "AddressSanitizer" not in out and "runtime error:" not in out, p.tail(60)


if __name__ == "__main__":
    run_test(test_hub_accounts)
