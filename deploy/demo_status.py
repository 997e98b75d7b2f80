#!/usr/bin/env python3
"""Prints what a running carehub demo has stored in InfluxDB.

  demo_status.py URL DB table [PREV_JSON]   per-device table (readings, rate, latest values)
  demo_status.py URL DB final               one line: readings stored, care data apart
"""
import json
import sys
import time
import urllib.parse
import urllib.request


def query(url, db, q):
    data = urllib.parse.urlencode({"q": q, "db": db, "epoch": "ms"}).encode()
    with urllib.request.urlopen(url + "/query", data=data, timeout=5) as r:
        res = json.loads(r.read())["results"][0]
    if "error" in res:
        raise RuntimeError(res["error"])
    return res.get("series", [])


def measurements(url, db):
    out = []
    for s in query(url, db, "SHOW MEASUREMENTS"):
        out += [v[0] for v in s["values"]]
    return out


def counts(url, db, meas):
    """readings (points) per device in a measurement: max over its fields."""
    per = {}
    for s in query(url, db, f'SELECT count(*) FROM "{meas}" GROUP BY "device"'):
        dev = s.get("tags", {}).get("device", "?")
        per[dev] = max(v for v in s["values"][0][1:] if v is not None)
    return per


def table(url, db, state_path):
    now = time.time()
    try:
        with open(state_path) as f:
            prev = json.load(f)
    except (OSError, ValueError):
        prev = {"t": now, "counts": {}}
    rows, cur = [], {}
    for meas in ("environment", "safety"):
        if meas not in measurements(url, db):
            continue
        per = counts(url, db, meas)
        last = {}
        for s in query(url, db, f'SELECT last(*) FROM "{meas}" GROUP BY "device", "room"'):
            tags = s.get("tags", {})
            vals = {c[5:]: v for c, v in zip(s["columns"], s["values"][0])
                    if c.startswith("last_") and c != "last_seq"}
            last[tags.get("device")] = (tags.get("room", ""), vals)
        for dev in sorted(per):
            n = per[dev]
            cur[dev] = n
            dt = max(now - prev["t"], 0.001)
            rate = f'{(n - prev["counts"][dev]) / dt:6.2f}/s' if dev in prev["counts"] else "     -  "
            room, vals = last.get(dev, ("", {}))
            shown = " ".join(f"{k}={v:g}" for k, v in sorted(vals.items()) if v is not None)
            rows.append(f"  {dev:<14} {room:<10} {n:>7} {rate}  {shown}")
    with open(state_path, "w") as f:
        json.dump({"t": now, "counts": cur}, f)
    print(f"  {'DEVICE':<14} {'ROOM':<10} {'STORED':>7} {'RATE':>8}  LATEST")
    print("\n".join(rows) if rows else "  (nothing stored yet)")


def final(url, db):
    """Residents' and rooms' readings apart from the alarm transitions and from
    the gateways' and the hub's own figures (edge_*, carehub_*)."""
    care, own, alarms = [], [], 0
    for meas in sorted(measurements(url, db)):
        if meas == "carehub_status":
            continue
        n = sum(counts(url, db, meas).values())
        if meas == "alarm":
            alarms = n
        elif meas.startswith(("carehub_", "edge_")):
            own.append(f"{meas}={n}")
        else:
            care.append((meas, n))
    total = sum(n for _, n in care)
    print(f"stored: {total} readings of residents and rooms "
          f"({', '.join(f'{m}={n}' for m, n in care) or 'none'}); {alarms} alarm transitions; "
          f"internal (the gateways' and the hub's own figures): {', '.join(own) or 'none'}")
    return 0 if total > 0 else 1


if __name__ == "__main__":
    url, db, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    try:
        if mode == "table":
            table(url, db, sys.argv[4])
            sys.exit(0)
        sys.exit(final(url, db))
    except Exception as e:  # InfluxDB gone or not yet up: say so, do not crash the demo
        print(f"  (InfluxDB query failed: {e})")
        sys.exit(1)
