"""care-edge --check on every bad-config fixture exits 2 and names file,
line and key; the good fixture and the shipped example sites pass. A spool
of another format makes care-edge exit 2 too, untouched (spool_format)."""
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import BIN, SRC, log  # noqa: E402

FX = os.path.join(SRC, "tests/fixtures/config")
CASES = {
    "bad-type.yaml": ["bad-type.yaml:26:", "key 'slave'"],
    "bad-unknown-key.yaml": ["bad-unknown-key.yaml:22:", "unknown key 'intervall'"],
    "bad-missing-key.yaml": ["bad-missing-key.yaml:24:", "missing required key 'profile'"],
    "bad-syntax.yaml": ["bad-syntax.yaml:8:"],
    "bad-unknown-profile.yaml": ["bad-unknown-profile.yaml:31:", "key 'profile'"],
    "bad-duplicate-device.yaml": ["bad-duplicate-device.yaml:24:", "duplicate device id"],
}


def check(name):
    p = subprocess.run([os.path.join(BIN, "care-edge"), "--check", "-c", os.path.join(FX, name)],
                       capture_output=True, text=True, timeout=20)
    return p.returncode, p.stdout + p.stderr


def tree_hash(d):
    """Every path under d with its mode and bytes: what 'untouched' means."""
    h = hashlib.sha256()
    for top, dirs, files in os.walk(d):
        dirs.sort()
        for name in sorted(dirs + files):
            p = os.path.join(top, name)
            st = os.lstat(p)
            h.update(f"{os.path.relpath(p, d)}\0{st.st_mode}\0".encode())
            if os.path.isfile(p):
                with open(p, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()


def spool_site(tmp, spool):
    """good.yaml with its spool in spool (and absolute profile paths)."""
    with open(os.path.join(FX, "good.yaml")) as f:
        text = f.read()
    text = text.replace("../../../deploy/profiles", os.path.join(SRC, "deploy/profiles"))
    text += f"spool:\n  dir: {spool}\n  memory_bytes: 1048576\n"
    path = os.path.join(tmp, "site.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def spool_format():
    """A spool of another format (issue 12: a package downgrade after a later
    carehub changed the format): care-edge exits 2 at once (the units'
    RestartPreventExitStatus: a restart would not mend it), saying which
    directory, which format it found, which it reads and what to do, and
    nothing in the directory changes. A spool of the releases before the
    format marker starts as before and gets the marker. Returns the checks
    passed."""
    passed = 0
    edge = os.path.join(BIN, "care-edge")
    good = os.path.join(SRC, "tests/fixtures/spool/good")
    cases = [
        ("later", b"carehub-spool-format 2\n", "is in format 2 (its format file says"),
        ("garbage", b"\x00\x01garbage\n",
         "is in an unknown format (its format file is not a marker"),
    ]
    for what, marker, needle in cases:
        with tempfile.TemporaryDirectory() as tmp:
            spool = os.path.join(tmp, "spool")
            shutil.copytree(good, spool)
            with open(os.path.join(spool, "format"), "wb") as f:
                f.write(marker)
            before = tree_hash(spool)
            site = spool_site(tmp, spool)
            t0 = time.monotonic()
            p = subprocess.run([edge, "-c", site], capture_output=True, text=True, timeout=20)
            took = time.monotonic() - t0
            out = p.stdout + p.stderr
            assert p.returncode == 2, f"{what} spool: exit {p.returncode}, want 2\n{out}"
            for n in (f"spool {spool} {needle}", "this build reads spool format 1",
                      "nothing in it was changed", "Upgrade carehub",
                      "move the directory away", f"cannot open the spool in {spool}",
                      "exiting with status 2"):
                assert n in out, f"{what} spool: output lacks {n!r}:\n{out}"
            assert tree_hash(spool) == before, f"{what} spool: the directory changed"
            line = next(ln for ln in out.splitlines() if "this build reads" in ln)
            said = line[line.find("spool "):][:150]
            log(f"{what} spool format: exit 2 in {took:.2f} s, untouched: {said}...")
            passed += 1
    # the releases before the marker: their spool opens, keeps its records, is marked
    with tempfile.TemporaryDirectory() as tmp:
        spool = os.path.join(tmp, "spool")
        shutil.copytree(good, spool)
        segs = {}
        for top, _, files in os.walk(spool):
            for name in files:
                with open(os.path.join(top, name), "rb") as f:
                    segs[os.path.join(top, name)] = f.read()
        proc = subprocess.Popen([edge, "-c", spool_site(tmp, spool)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        marker = os.path.join(spool, "format")
        deadline = time.monotonic() + 15
        while not os.path.exists(marker) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert alive and os.path.exists(marker), \
            f"legacy spool: not marked, care-edge alive {alive}\n{out}"
        with open(marker, "rb") as f:
            assert f.read() == b"carehub-spool-format 1\n"
        assert "a spool of an earlier release (format 1, no marker): marked" in out, out
        assert proc.returncode == 0, f"legacy spool: exit {proc.returncode} after SIGTERM\n{out}"
        for path, data in segs.items():
            if path.endswith(".seg"):
                with open(path, "rb") as f:
                    assert f.read(len(data)) == data, f"legacy spool: {path} changed"
        log("legacy spool (no marker): started, marked format 1, its records kept; "
            "exit 0 on SIGTERM")
        passed += 1
    return passed


def main():
    passed = spool_format()
    rc, out = check("good.yaml")
    assert rc == 0, f"good.yaml: exit {rc}\n{out}"
    assert "OK" in out
    passed += 1
    for name, needles in CASES.items():
        rc, out = check(name)
        assert rc == 2, f"{name}: exit {rc}, want 2\n{out}"
        for n in needles:
            assert n in out, f"{name}: output lacks {n!r}:\n{out}"
        log(f"{name}: exit 2, {out.strip().splitlines()[0]}")
        passed += 1
    # the shipped examples, with the install paths pointing into the tree
    for ex in ("deploy/examples/site.yaml", "deploy/examples/site-minimal.yaml",
               "deploy/sim/care-day-site.yaml"):
        with open(os.path.join(SRC, ex)) as f:
            text = f.read()
        text = text.replace("/usr/share/carehub/profiles", os.path.join(SRC, "deploy/profiles"))
        text = text.replace("/usr/share/carehub/rules", os.path.join(SRC, "deploy/rules"))
        text = text.replace("[../profiles]", "[" + os.path.join(SRC, "deploy/profiles") + "]")
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as t:
            t.write(text)
        try:
            p = subprocess.run([os.path.join(BIN, "care-edge"), "--check", "-c", t.name],
                               capture_output=True, text=True, timeout=20)
        finally:
            os.unlink(t.name)
        assert p.returncode == 0 and "OK" in p.stdout, f"{ex}: exit {p.returncode}\n{p.stderr}"
        passed += 1
    p = subprocess.run([os.path.join(BIN, "care-edge")], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "-c FILE" in p.stderr
    passed += 1
    print(f"edge_config_cli: {passed} passed, 0 failed")


if __name__ == "__main__":
    main()
