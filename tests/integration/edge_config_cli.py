"""care-edge --check on every bad-config fixture exits 2 and names file,
line and key; the good fixture and the shipped example sites pass."""
import os
import subprocess
import sys
import tempfile

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


def main():
    passed = 0
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
