"""Contract: the shipped example configs, the test fixtures and every device
profile validate against schemas/site-config.schema.json and
profile.schema.json with an independent validator (python3-jsonschema), and
the schema-detectable bad fixtures do not. Keeps the JSON Schemas and the C
key tables from drifting apart (the C side is tested by test_config)."""
import glob
import json
import os
import sys

import jsonschema
import yaml

sys.path.insert(0, os.path.dirname(__file__))
from harness import SRC, log  # noqa: E402


def read_schema(name):
    with open(os.path.join(SRC, "schemas", name)) as f:
        return json.load(f)


def load_schema(name):
    s = read_schema(name)
    jsonschema.Draft7Validator.check_schema(s)
    # rule packs refer to the site schema's rule definition
    site = read_schema("site-config.schema.json")
    resolver = jsonschema.RefResolver.from_schema(s, store={site["$id"]: site})
    return jsonschema.Draft7Validator(s, resolver=resolver)


def main():
    site = load_schema("site-config.schema.json")
    prof = load_schema("profile.schema.json")
    passed = 0
    good = glob.glob(os.path.join(SRC, "deploy/examples/*.yaml")) + \
        [os.path.join(SRC, "tests/fixtures/config/good.yaml")]
    for path in good:
        with open(path) as f:
            doc = yaml.safe_load(f)
        errs = list(site.iter_errors(doc))
        assert not errs, f"{path}: {[e.message for e in errs]}"
        passed += 1
    for path in glob.glob(os.path.join(SRC, "deploy/profiles/*.yaml")):
        with open(path) as f:
            doc = yaml.safe_load(f)
        errs = list(prof.iter_errors(doc))
        assert not errs, f"{path}: {[e.message for e in errs]}"
        passed += 1
    packs = load_schema("rule-pack.schema.json")
    for path in glob.glob(os.path.join(SRC, "deploy/rules/*.yaml")):
        with open(path) as f:
            doc = yaml.safe_load(f)
        errs = list(packs.iter_errors(doc))
        assert not errs, f"{path}: {[e.message for e in errs]}"
        passed += 1
    # what a schema can see (semantic errors such as an unknown profile are C-only)
    for name in ["bad-type.yaml", "bad-unknown-key.yaml", "bad-missing-key.yaml",
                 "bad-duration.yaml", "bad-bus-key.yaml", "bad-baud.yaml", "bad-five.yaml"]:
        with open(os.path.join(SRC, "tests/fixtures/config", name)) as f:
            doc = yaml.safe_load(f)
        assert list(site.iter_errors(doc)), f"{name} should not validate"
        passed += 1
    log(f"config_schema: {passed} documents checked")
    print(f"config_schema: {passed} passed, 0 failed")


if __name__ == "__main__":
    main()
