#!/usr/bin/env python3
"""Tenants sharing one care-hub (issue 11): no token, no site and no address
takes the hub from the others. Real Mosquitto, InfluxDB and care-hub.

1. Event streams: one token opening 1,000 streams gets its share
   (api.max_streams_per_token) and 503 beyond; another site's token, and
   another token of the same site up to the site's share, still get theirs;
   the audit log says 503 (not 200) for every refused stream.
2. Requests without a valid token: 100,000 of them from one address are
   limited per address (429 with Retry-After beyond api.address_rate_limit)
   and aggregated in the audit log (one line as they begin, then one per
   address and api.audit_refusal_interval saying how many), which grows by
   a few kilobytes, is created 0640 (an existing 0644 file is narrowed) and
   rotates at api.audit_max_bytes keeping api.audit_keep files.
3. Exports and summaries are charged by their InfluxDB queries (an export
   one per hour window as it goes, a summary the days it must read up
   front) and at most api.max_exports_per_token run at once per token; the
   token's other requests keep a reserve meanwhile.
"""
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Influx, Mosquitto, free_port, log, run_test, wait_for  # noqa: E402
from hub_api import Api  # noqa: E402

DB = "carehub_tenants"
FAST = 100000  # a token rate that never limits
# hub 1: max_clients 64 -> per token max(4, 64/16) = 4 streams, per site max(4, 64/4) = 16
MAX_CLIENTS, PER_TOKEN, PER_SITE = 64, 4, 16
# hub 2
AUDIT_MAX, AUDIT_KEEP, REFUSAL_INTERVAL_S, ADDR_RATE = 65536, 2, 2, 5
FLOOD = 100000

TOKENS = {
    "flood": ("cq-a-001", FAST), "a2": ("cq-a-001", FAST), "a3": ("cq-a-001", FAST),
    "a4": ("cq-a-001", FAST), "a5": ("cq-a-001", FAST), "b1": ("cq-b-001", FAST),
    "exp-slow": ("cq-a-001", 10), "exp-fast": ("cq-a-001", FAST),
    "sum-slow": ("cq-a-002", 10), "sum-one": ("cq-a-003", 1),
}


def new_tokens(w, binary):
    """Tokens made by care-hub --new-token: (secrets by name, tokens file)."""
    secrets, entries = {}, []
    for name, spec in list(TOKENS.items()) + [("admin", ("*", FAST))]:
        out = subprocess.run([binary, "--new-token", name], check=True, capture_output=True,
                             text=True).stdout
        secrets[name] = re.search(r"chk_\S+", out).group(0)
        sha = re.search(r"sha256:\s*([0-9a-f]{64})", out).group(1)
        role = "admin" if name == "admin" else "staff"
        entries.append(f"  - name: {name}\n    sha256: {sha}\n    role: {role}\n"
                       f"    sites: [\"{spec[0]}\"]\n    rate: {spec[1]}\n")
    return secrets, w.write("tokens.yaml", "tokens:\n" + "".join(entries))


def start_hub(w, n, mqtt, influx, tokens, api_extra):
    port = free_port()
    cfg = w.write(f"hub-{n}.yaml", f"""mqtt:
  broker: {mqtt.uri}
  client_id: hub-ten-{n}
influx:
  url: {influx.url}
  database: {DB}
  flush_interval: 100ms
  max_backoff: 1s
spool:
  dir: spool-{n}
api:
  port: {port}
  tokens_file: {tokens}
  audit_log: audit-{n}.jsonl
{api_extra}""")
    hub = w.spawn(f"care-hub-{n}", [w.bin("care-hub"), "-c", cfg])
    hub.wait_log(r"serving the API")
    return hub, port


def audit_lines(path):
    """Every entry of an audit log and its rotated files, oldest file first."""
    out = []
    for i in range(9, -1, -1):
        p = f"{path}.{i}" if i else path
        if os.path.exists(p):
            with open(p, encoding="utf-8") as f:
                out += [json.loads(line) for line in f]
    return out


# ---- 1. event streams ---------------------------------------------------------------------


def open_stream(port, token):
    """GET /api/v1/events: (status, the answer's head (and whole body when it
    is not a stream), the socket left open on 200)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"GET /api/v1/events HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n"
              .encode())
    data = b""
    while b"\r\n\r\n" not in data:
        d = s.recv(4096)
        if not d:
            break
        data += d
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    if status != 200:
        m = re.search(rb"\r\nContent-Length: (\d+)", data)
        while m and len(data) < data.index(b"\r\n\r\n") + 4 + int(m.group(1)):
            data += s.recv(4096)
        s.close()
        s = None
    return status, data.decode(errors="replace"), s


def streams(w, port, secrets, influx, audit):
    # one token opens 1,000 streams (8 threads at once, each keeping what it gets)
    got, kept, lock = {}, [], threading.Lock()
    no_retry = []

    def attacker():
        for _ in range(125):
            st, head, s = open_stream(port, secrets["flood"])
            with lock:
                got[st] = got.get(st, 0) + 1
                if s:
                    kept.append(s)
                elif "\r\nRetry-After: " not in head:
                    no_retry.append(head)
    ts = [threading.Thread(target=attacker) for _ in range(8)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    log(f"streams: 1,000 opened by one token in {time.monotonic() - t0:.1f} s: {got}")
    assert got == {200: PER_TOKEN, 503: 1000 - PER_TOKEN}, got
    assert not no_retry, no_retry[:1]

    # another site's token is not denied; an all-sites admin neither
    st, head, b1 = open_stream(port, secrets["b1"])
    assert st == 200, head
    st, head, adm = open_stream(port, secrets["admin"])
    assert st == 200, head
    # other tokens of the same site: up to the site's share, not beyond
    same = []
    for name in ("a2", "a3", "a4"):
        for _ in range(PER_TOKEN):
            st, head, s = open_stream(port, secrets[name])
            assert st == 200, (name, head)
            same.append(s)
    st, head, _ = open_stream(port, secrets["a5"])
    assert st == 503 and f"{PER_SITE} live event streams of site cq-a-001" in head, head
    log(f"streams: another site's token and an admin still get theirs; the site's share "
        f"({PER_SITE}) holds for its other tokens")

    # the way back: a closed stream frees its place (the hub looks every second)
    kept.pop().close()
    t0 = time.monotonic()

    def reopen():
        st, head, s = open_stream(port, secrets["flood"])
        got[st] = got.get(st, 0) + 1
        return s
    again = wait_for("the freed place taken again", reopen, 5, interval=0.2)
    log(f"streams: a closed stream's place taken again after {time.monotonic() - t0:.1f} s")
    for s in kept + same + [b1, adm, again]:
        s.close()

    # the audit log says 503 for every refusal, in the file and in InfluxDB
    def refused_in_file():
        ev = [e for e in audit_lines(audit) if e["token"] == "flood" and
              e["path"] == "/api/v1/events"]
        return ev if sum(e["status"] == 503 for e in ev) == got[503] else None
    ev = wait_for("the refusals in the audit log", refused_in_file, 10)
    assert not [e for e in ev if e["status"] == 200], "a refused stream audited as 200"
    q = ("SELECT count(\"status\") FROM \"carehub_audit\" WHERE \"token\" = 'flood' AND "
         "\"status\" = 503")
    wait_for("the refusals in carehub_audit",
             lambda: (influx.series(q, DB) or [{}])[0].get("count") == got[503], 20)
    log("streams: every refusal audited as 503 (audit log and carehub_audit)")


# ---- 3. exports and summaries ------------------------------------------------------------


def exports(w, api, secrets, influx):
    now = int(time.time() * 1000) // 3600000 * 3600000
    day = 86400000
    # one reading an hour at cq-a-001 for two days
    influx.write("\n".join(f"environment,device=air-1,gateway=gw-1,quality=good,room=101,"
                           f"site=cq-a-001 co2={400 + h},seq={h}i {now - 2 * day + h * 3600000}"
                           for h in range(48)), DB)
    rng = {"from": str(now - 2 * day), "to": str(now)}

    def export(token, span=rng, out=None):
        t0 = time.monotonic()
        st, hdr, body = api.call("GET", "/api/v1/export?site=cq-a-001&format=json&from="
                                 f"{span['from']}&to={span['to']}", token, raw=True)
        r = (st, time.monotonic() - t0, json.loads(body) if st == 200 else body, hdr)
        if out is not None:
            out.append(r)
        return r

    st, fast_s, rows, _ = export(secrets["exp-fast"])
    assert st == 200 and len(rows) == 48, (st, rows)
    # 48 hour windows, each a query: the request and 9 windows from the burst (20) above the
    # reserve (10), the other 38 at 10 a second
    st, slow_s, rows, _ = export(secrets["exp-slow"])
    assert st == 200 and len(rows) == 48, (st, rows)
    log(f"export of 48 hours: {fast_s:.2f} s at rate {FAST}, {slow_s:.2f} s at rate 10")
    assert fast_s < 2.5, fast_s
    assert slow_s >= 3.0, f"48 queries in {slow_s:.2f} s at 10 a second: not charged per query"

    # two at once per token (api.max_exports_per_token: 2): a third export and a summary wait
    res = []
    one = {"from": str(now - day), "to": str(now)}
    ts = [threading.Thread(target=export, args=(secrets["exp-slow"], one, res)) for _ in range(2)]
    for t in ts:
        t.start()
    time.sleep(0.8)
    st3 = export(secrets["exp-slow"])
    assert st3[0] == 429 and "Retry-After" in st3[3] and b"at once" in st3[2], st3
    st, body = api.get("/api/v1/summary", secrets["exp-slow"], site="cq-a-001")
    assert st == 429, body
    # meanwhile the token's other requests have their reserve, another token its exports
    for _ in range(3):
        st, body = api.get("/api/v1/me", secrets["exp-slow"])
        assert st == 200, body
    assert export(secrets["exp-fast"])[0] == 200
    for t in ts:
        t.join(60)
    assert [r[0] for r in res] == [200, 200] and all(len(r[2]) == 24 for r in res), res
    assert export(secrets["exp-slow"], {"from": str(now - 3600000), "to": str(now)})[0] == 200
    log(f"exports: two at once per token, the third 429; both took {max(r[1] for r in res):.1f} "
        f"s sharing the token's rate; its other requests went through meanwhile")

    # a summary pays up front for the days it must read: 30 days not kept yet
    month = {"from": str(now // day * day - 30 * day), "to": str(now // day * day)}
    t0 = time.monotonic()
    st, body = api.get("/api/v1/summary", secrets["sum-slow"], site="cq-a-002", **month)
    first = time.monotonic() - t0
    assert st == 200, body
    assert first >= 1.5, f"a summary reading 30 days took {first:.2f} s at 10 a second"
    q = ("SELECT count(\"computed_ms\") FROM \"carehub_rollup\" WHERE \"site\" = 'cq-a-002' "
         "AND \"span\" = 'day'")
    wait_for("30 kept days", lambda: (influx.series(q, DB) or [{}])[0].get("count") == 30, 20)
    time.sleep(1.5)  # the bucket refills
    t0 = time.monotonic()
    st, body = api.get("/api/v1/summary", secrets["sum-slow"], site="cq-a-002", **month)
    again = time.monotonic() - t0
    assert st == 200 and again < 1.0, (st, again)
    # more than api's wait allows at rate 1: refused at once, with advice
    t0 = time.monotonic()
    st, hdr, body = api.call("GET", f"/api/v1/summary?site=cq-a-003&from={now - 400 * day}&to="
                             f"{now}", secrets["sum-one"], raw=True)
    assert st == 429 and "Retry-After" in hdr and b"shorter range" in body, (st, body)
    assert time.monotonic() - t0 < 2
    log(f"summary: 30 days to read took {first:.1f} s at 10 a second, {again:.2f} s once kept; "
        f"400 days at 1 a second refused at once")


# ---- 2. requests without a token --------------------------------------------------------

REQS = [b"GET /api/v1/sites HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /api/v1/alarms HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer chk_not-a-token\r\n\r\n",
        b"GET /api/v1/nothing HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /static/nothing.js HTTP/1.1\r\nHost: t\r\n\r\n"]
STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")


async def pipelined(port, reqs, n, batch, counts, retry_after):
    """Sends n requests (cycling through reqs) on one kept-alive connection,
    batch at a time, and counts the statuses of the answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = got = 0
    buf = b""
    while got < n:
        if sent == got:
            k = min(batch, n - sent)
            writer.write(b"".join(reqs[(sent + i) % len(reqs)] for i in range(k)))
            sent += k
        d = await asyncio.wait_for(reader.read(1 << 20), 20)
        if not d:
            raise AssertionError(f"connection closed after {got} of {n} answers")
        buf += d
        end = 0
        for m in STATUS.finditer(buf):
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
            got += 1
            end = m.end()
        retry_after[0] += buf[:end].count(b"\r\nRetry-After: ")
        buf = buf[end:]
    while b"\r\n\r\n" not in buf:  # the last answer's headers
        buf += await asyncio.wait_for(reader.read(1 << 16), 20)
    retry_after[0] += buf.count(b"\r\nRetry-After: ")
    writer.close()


def flood(port, reqs, n, conns=8, batch=250):
    counts, ra = {}, [0]

    async def main():
        await asyncio.gather(*(pipelined(port, reqs, n // conns, batch, counts, ra)
                               for _ in range(conns)))
    asyncio.run(main())
    return {int(k): v for k, v in counts.items()}, ra[0]


def audit_bytes(path):
    return sum(os.path.getsize(p) for p in [path] + [f"{path}.{i}" for i in range(1, 10)]
               if os.path.exists(p))


def unauthenticated(w, port, secrets, influx, audit):
    api = Api(port)
    mode = os.stat(audit).st_mode & 0o777
    assert mode in (0o600, 0o640), f"audit log mode {mode:o}"
    before = audit_bytes(audit)
    t0 = time.monotonic()
    counts, retry_after = flood(port, REQS, FLOOD)
    secs = time.monotonic() - t0
    log(f"flood: {FLOOD} requests without a token in {secs:.1f} s "
        f"({FLOOD / secs:.0f}/s): {counts}")
    assert sum(counts.values()) == FLOOD, counts
    # per address: burst (4 x rate) then rate a second, each refused; the rest 429
    passed = FLOOD - counts.get(429, 0)
    assert 4 * ADDR_RATE <= passed <= 4 * ADDR_RATE + ADDR_RATE * (secs + 1), (passed, secs)
    assert counts.get(429, 0) >= FLOOD - 200 and retry_after == counts[429], (counts, retry_after)
    # a valid token from the same address, and another address, are not limited
    assert api.get("/api/v1/me", secrets["admin"])[0] == 200
    s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0))
    s.sendall(REQS[0])
    assert s.recv(4096).startswith(b"HTTP/1.1 401 "), "another address was limited"
    s.close()

    # the audit log: the first refusal as it comes, then one line per window
    def accounted():
        refused = [e for e in audit_lines(audit) if e["remote"] == "127.0.0.1" and
                   e["token"] == "-"]
        return refused if sum(e.get("refused", 1) for e in refused) == FLOOD else None
    refused = wait_for("every refusal accounted for", accounted, REFUSAL_INTERVAL_S + 5)
    grown = audit_bytes(audit) - before
    agg = [e for e in refused if "refused" in e]
    log(f"audit: grew {grown} bytes for {FLOOD} refusals ({len(refused)} entries); "
        f"e.g. {agg[0]['summary']!r}")
    assert grown <= 8192, f"the audit log grew {grown} bytes"
    assert all(e["statuses"] and e["first_ms"] <= e["last_ms"] for e in agg), agg
    q = "SELECT * FROM \"carehub_audit\" WHERE \"token\" = '-' AND \"remote\" = '127.0.0.1'"
    pts = wait_for("the refusals in carehub_audit", lambda: (lambda p: p if sum(
        e.get("refused") or 1 for e in p) == FLOOD else None)(influx.series(q, DB)), 20)
    assert len(pts) <= 2 * (secs / REFUSAL_INTERVAL_S + 2), len(pts)
    log(f"audit: {len(pts)} carehub_audit points for them")

    # rotation at audit_max_bytes, audit_keep files kept, each 0640 or 0600
    me = (f"GET /api/v1/me HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {secrets['admin']}\r\n"
          f"\r\n").encode()
    counts, _ = flood(port, [me], 1200, conns=4, batch=100)
    assert counts == {200: 1200}, counts
    wait_for("the last entry", lambda: audit_lines(audit)[-1]["path"] == "/api/v1/me", 5)
    files = [audit] + [f"{audit}.{i}" for i in range(1, AUDIT_KEEP + 1)]
    for p in files:
        assert os.path.exists(p), p
        assert os.path.getsize(p) <= AUDIT_MAX, (p, os.path.getsize(p))
        assert os.stat(p).st_mode & 0o777 in (0o600, 0o640), p
    assert not os.path.exists(f"{audit}.{AUDIT_KEEP + 1}")
    n = len(audit_lines(audit))  # every line whole JSON
    log(f"audit: rotated at {AUDIT_MAX} bytes, {AUDIT_KEEP} old files kept ({n} entries)")


def test_hub_tenants(w):
    os.umask(0o022)  # what a service's default umask would give: 0644 before the fix
    influx = Influx(w)
    mqtt = Mosquitto(w)
    secrets, tokens = new_tokens(w, w.bin("care-hub"))
    hub1, port1 = start_hub(w, 1, mqtt, influx, tokens, f"""  max_clients: {MAX_CLIENTS}
  max_exports_per_token: 2
  connections:
    per_address: 256
""")
    streams(w, port1, secrets, influx, w.path("audit-1.jsonl"))
    exports(w, Api(port1), secrets, influx)
    assert hub1.stop() == 0, hub1.tail()

    # an audit log left 0644 by an older version is narrowed
    with open(w.path("audit-2.jsonl"), "w") as f:
        f.write("{\"ts_ms\": 1, \"token\": \"-\", \"remote\": \"old\", \"path\": \"/\"}\n")
    os.chmod(w.path("audit-2.jsonl"), 0o644)
    hub2, port2 = start_hub(w, 2, mqtt, influx, tokens, f"""  audit_max_bytes: {AUDIT_MAX}
  audit_keep: {AUDIT_KEEP}
  audit_refusal_interval: {REFUSAL_INTERVAL_S}s
  address_rate_limit: {ADDR_RATE}
""")
    unauthenticated(w, port2, secrets, influx, w.path("audit-2.jsonl"))
    assert hub2.stop() == 0, hub2.tail()


if __name__ == "__main__":
    run_test(test_hub_tenants)
    print("1 passed, 0 failed")
