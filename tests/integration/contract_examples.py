#!/usr/bin/env python3
"""Checks the wire contract independently of the C code.

- Every schemas/*.schema.json is a valid JSON Schema (of the draft it names).
- Every schemas/examples/*.json validates against the schema its file name
  starts with (telemetry-... -> telemetry.schema.json); every
  schemas/examples/bad/*.json fails, by its JSON or by its schema.
- The limits in the schemas equal the ones in schemas/codec.h.

JSON is read as strictly as the C decoder reads it (jansson): duplicate keys,
NaN and Infinity are errors. The two rules JSON Schema cannot say are the
schemas' x- keywords, implemented here: x-keysIn (every key of one property
is a key of another) and x-maxBytes (length in UTF-8 bytes).

Uses only the standard library and python3-jsonschema (4.10 or later).
"""

import json
import os
import pathlib
import re
import sys

import jsonschema
from jsonschema import validators

SRC = pathlib.Path(os.environ.get("CAREHUB_SRC", pathlib.Path(__file__).resolve().parents[2]))
SCHEMAS = SRC / "schemas"


class StrictJSONError(ValueError):
    pass


def _no_duplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise StrictJSONError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name):
    raise StrictJSONError(f"{name} is not JSON")


def load_strict(path):
    return json.loads(
        path.read_text(encoding="utf-8"),
        object_pairs_hook=_no_duplicates,
        parse_constant=_no_constant,
    )


def _keys_in(validator, spec, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    for prop, other in spec.items():
        sub, ref = instance.get(prop), instance.get(other)
        if not isinstance(sub, dict) or not isinstance(ref, dict):
            continue
        for key in sub:
            if key not in ref:
                yield jsonschema.ValidationError(f"{prop}.{key}: not a key of {other}")


def _max_bytes(validator, limit, instance, schema):
    if validator.is_type(instance, "string") and len(instance.encode("utf-8")) > limit:
        yield jsonschema.ValidationError(f"{instance!r} is longer than {limit} UTF-8 bytes")


X_KEYWORDS = {"x-keysIn": _keys_in, "x-maxBytes": _max_bytes}

# The wire payloads: each needs good and bad examples. Other schemas in the
# folder (config files) are checked for validity, and for examples if any.
WIRE = ("telemetry", "status")


def validator(schema):
    return validators.extend(validators.validator_for(schema), X_KEYWORDS)(schema)


def codec_limits():
    text = (SCHEMAS / "codec.h").read_text(encoding="utf-8")
    found = dict(re.findall(r"#define\s+(CH_\w+)\s+(\d+|\"[^\"]*\")", text))
    return {k: json.loads(v) for k, v in found.items()}


def limit_checks(schemas):
    """(what, value in the schema, value in codec.h) for every shared limit."""
    c = codec_limits()
    tel, st = schemas["telemetry"], schemas["status"]
    reading = tel["$defs"]["reading"]["properties"]
    return [
        ("telemetry schema const", tel["properties"]["schema"]["const"], c["CH_SCHEMA_TELEMETRY"]),
        ("status schema const", st["properties"]["schema"]["const"], c["CH_SCHEMA_STATUS"]),
        ("readings maxItems", tel["properties"]["readings"]["maxItems"], c["CH_MAX_READINGS"]),
        ("metrics maxProperties", reading["metrics"]["maxProperties"], c["CH_MAX_METRICS"]),
        ("devices maxItems", st["properties"]["devices"]["maxItems"], c["CH_MAX_DEVICES"]),
        ("unit x-maxBytes", tel["$defs"]["unit"]["x-maxBytes"], c["CH_UNIT_MAX"] - 1),
        ("version maxLength", st["properties"]["version"]["maxLength"], c["CH_VERSION_MAX"] - 1),
        ("telemetry id maxLength", tel["$defs"]["id"]["maxLength"], c["CH_ID_MAX"] - 1),
        ("status id maxLength", st["$defs"]["id"]["maxLength"], c["CH_ID_MAX"] - 1),
    ]


def rules(d):
    """A schema without its prose, for comparing the copies of a rule."""
    return {k: v for k, v in d.items() if k != "description"}


def main():
    passed = failed = 0

    def report(ok, what):
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
        print(f"{'ok  ' if ok else 'FAIL'} {what}")

    schemas = {}
    for path in sorted(SCHEMAS.glob("*.schema.json")):
        name = path.name[: -len(".schema.json")]
        try:
            schemas[name] = load_strict(path)
            validators.validator_for(schemas[name]).check_schema(schemas[name])
            report(True, f"{path.name} is a valid JSON Schema")
        except (ValueError, jsonschema.SchemaError) as e:
            report(False, f"{path.name}: {e}")
    if set(WIRE) - schemas.keys():
        report(False, "schemas/telemetry.schema.json and schemas/status.schema.json both exist")
        print(f"{passed} passed, {failed} failed")
        return 1

    for what, in_schema, in_codec in limit_checks(schemas):
        report(in_schema == in_codec, f"{what}: schema {in_schema!r}, codec.h {in_codec!r}")
    for d in ("id", "ts"):
        same = rules(schemas["telemetry"]["$defs"][d]) == rules(schemas["status"]["$defs"][d])
        report(same, f"$defs/{d} is the same in both schemas")

    for expect_valid, folder in ((True, SCHEMAS / "examples"), (False, SCHEMAS / "examples" / "bad")):
        files = sorted(folder.glob("*.json"))
        report(bool(files), f"{folder.relative_to(SRC)} has examples")
        seen = set()
        for path in files:
            kind = path.name.split("-")[0].split(".")[0]
            rel = path.relative_to(SRC)
            if kind not in schemas:
                report(False, f"{rel}: no schema named {kind}.schema.json")
                continue
            seen.add(kind)
            try:
                errors = sorted(
                    validator(schemas[kind]).iter_errors(load_strict(path)),
                    key=lambda e: list(e.absolute_path),
                )
                problem = None
                if errors:
                    where = "/".join(str(p) for p in errors[0].absolute_path) or "(root)"
                    problem = f"{where}: {errors[0].message}"
            except ValueError as e:  # json.JSONDecodeError and StrictJSONError
                problem = f"not JSON: {e}"
            if expect_valid:
                report(problem is None, f"{rel} is valid" + (f" -- {problem}" if problem else ""))
            else:
                report(problem is not None, f"{rel} is refused" + (f": {problem}" if problem else " -- but it validates"))
        for kind in sorted(set(WIRE) - seen):
            report(False, f"{folder.relative_to(SRC)} has no example for {kind}")

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
