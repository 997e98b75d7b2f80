#!/usr/bin/env python3
"""Prints the demo's alarms as the gateways raise them: follows the central
broker's alert topics (carehub/v1/SITE/GATEWAY/alert) with mosquitto_sub and
prints each transition with its kind, where and who (the sites' display
names), and the seconds since the demo started.

  demo_alarms.py PORT T0 SUMMARY   follow until SIGTERM; T0 the demo's start
                                   (epoch seconds); the raises so far are kept
                                   in SUMMARY (JSON) after every one
  demo_alarms.py --summary SUMMARY [KIND...]
                                   one line per raise, and the KINDs never raised
  demo_alarms.py --ack PORT USER PASSWORD ALARM_ID
                                   a carer acknowledges an alarm on a gateway's
                                   console (login, then POST .../ack)
  demo_alarms.py --hub-login PORT USER PASSWORD
                                   logs in to the hub's API and prints /me
"""
import json
import os
import signal
import subprocess
import sys
import time

# the titles the consoles give each kind (hub/www/kinds.js)
TITLES = {"other": "报警", "sos": "紧急呼叫", "fall": "跌倒", "call": "呼叫", "wandering": "防走失",
          "bed_exit": "离床", "vital_signs": "生命体征异常", "inactivity": "长时间未活动",
          "device_battery": "电量低", "device_offline": "设备离线", "air_quality": "空气质量",
          "gas": "燃气泄漏", "smoke": "烟雾", "temperature": "温度异常", "gateway": "网关故障"}
# what is printed before the kind's title ('notified' lines: the phones show those)
EVENTS = {"raise": "", "escalate": "升级 ", "ack": "已确认 ", "rtn": "已恢复 ", "clear": "已解除 ",
          "shelve": "已搁置 ", "unshelve": "取消搁置 "}
COLOR = {"high": "1;31", "medium": "1;33", "low": "1;36"}


def describe(a):
    kind = a.get("kind") or "other"
    # a wearable located in a zone (located_ms) is there, not in its bed
    bed = "" if a.get("located_ms") else a.get("bed_name") or a.get("bed", "")
    where = " ".join(x for x in (a.get("room_name") or a.get("room", ""), bed) if x)
    who = a.get("resident_name") or a.get("resident") or ""
    device = a.get("device_name") or a.get("device", "")
    return kind, where, who, device


def follow(port, t0, summary_path):
    raised, seen = [], set()
    sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-q", "1",
                            "-t", "carehub/v1/+/+/alert", "-v"],
                           stdout=subprocess.PIPE, text=True, encoding="utf-8")
    signal.signal(signal.SIGTERM, lambda *_: sub.terminate())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the demo stops it
    for line in sub.stdout:
        _, _, payload = line.partition(" ")
        try:
            a = json.loads(payload)
        except ValueError:
            continue
        ev = a.get("event", "")
        key = (a.get("alarm_id"), ev, a.get("ts_ms"))
        if ev not in EVENTS or key in seen:
            continue
        seen.add(key)
        kind, where, who, device = describe(a)
        t = a.get("ts_ms", time.time() * 1000) / 1000 - t0
        site = a.get("site_name") or a.get("site", "")
        head = f"{EVENTS[ev]}{TITLES.get(kind, kind)}"
        if ev == "escalate":
            head += f" (第{a.get('escalation', 0)}级)"
        parts = [x for x in (where, who) if x] or [device]
        by = f" · 确认人 {a['by']}" if ev == "ack" and a.get("by") else ""
        color = COLOR.get(a.get("priority"), "1") if ev == "raise" else "2"
        print(f"\033[{color}m[alarm +{t:5.1f}s] {head}\033[0m · {' · '.join(parts)}{by}"
              f"  ({site}, {a.get('priority')}, {kind})"
              + (f"\n                 {a['message']}" if ev == "raise" and a.get("message") else ""),
              flush=True)
        if ev == "raise":
            raised.append({"t": round(t, 1), "site": a.get("site"), "kind": kind,
                           "title": TITLES.get(kind, kind), "where": where, "who": who,
                           "alarm_id": a.get("alarm_id")})
            with open(summary_path + ".tmp", "w", encoding="utf-8") as f:
                json.dump(raised, f, ensure_ascii=False)
            os.replace(summary_path + ".tmp", summary_path)
    sub.wait()


def summary(path, want):
    try:
        with open(path, encoding="utf-8") as f:
            raised = json.load(f)
    except (OSError, ValueError):
        raised = []
    sites = sorted({r["site"] for r in raised})
    for site in sites:
        rs = [r for r in raised if r["site"] == site]
        print(f"  {site}: {len(rs)} raised: " +
              ", ".join(f"{r['title']} +{r['t']:.0f}s ({r['who'] or r['where']})" for r in rs))
    missing = [k for k in want if not any(r["kind"] == k for r in raised)]
    if missing:
        print(f"  not raised within the run: {', '.join(TITLES.get(k, k) for k in missing)}")
    return 0


def call(port, method, path, body=None, cookie=None):
    """(status, parsed JSON or None, the session cookie it set)."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h = {"Content-Type": "application/json"} if body is not None else {}
    if cookie:
        h["Cookie"] = cookie
    c.request(method, path, json.dumps(body) if body is not None else None, h)
    r = c.getresponse()
    raw = r.read()
    set_cookie = (r.getheader("Set-Cookie") or "").split(";", 1)[0]
    c.close()
    try:
        return r.status, json.loads(raw) if raw else None, set_cookie
    except ValueError:
        return r.status, None, set_cookie


def ack(port, user, password, alarm_id):
    st, _, cookie = call(port, "POST", "/api/login", {"user": user, "password": password})
    if st != 200:
        print(f"  console login of {user}: HTTP {st}")
        return 1
    st, body, _ = call(port, "POST", f"/api/alarms/{alarm_id}/ack", {}, cookie)
    print(f"  {user} acknowledges {alarm_id} on the care-day console: HTTP {st}")
    return 0 if st == 200 else 1


def hub_login(port, user, password):
    st, _, cookie = call(port, "POST", "/api/v1/login", {"name": user, "password": password})
    if st != 200:
        print(f"  hub login {user}: HTTP {st}")
        return 1
    st, me, _ = call(port, "GET", "/api/v1/me", cookie=cookie)
    me = me or {}
    scope = ",".join(me.get("sites") or []) or (me.get("district") or "")
    print(f"  hub login {user}: ok ({me.get('role')}, sites {scope})")
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "--ack":
        sys.exit(ack(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]))
    if sys.argv[1] == "--hub-login":
        sys.exit(hub_login(int(sys.argv[2]), sys.argv[3], sys.argv[4]))
    if sys.argv[1] == "--summary":
        sys.exit(summary(sys.argv[2], sys.argv[3:]))
    follow(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3])
