#!/usr/bin/env python3
"""Checks the wire contract independently of the C code.

- Every schemas/*.schema.json is a valid JSON Schema (of the draft it names).
- Every schemas/examples/*.json validates against the schema its file name
  starts with (telemetry-... -> telemetry.schema.json); every
  schemas/examples/bad/*.json fails, by its JSON or by its schema.
- The limits in the schemas equal the ones in schemas/codec.h.

JSON is read as strictly as the C decoder reads it (jansson): duplicate keys,
NaN and Infinity are errors. The rules JSON Schema cannot say are the
schemas' x- keywords, implemented here: x-keysIn (every key of one property
is a key of another), x-maxBytes (length in UTF-8 bytes), x-joined (one
property is others joined by a separator: alarm_id = rule ":" device) and
x-sameAs (two properties are equal: the flood alarm's device is the gateway)
and x-ordered (an ack range [lo, hi] has lo <= hi).

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


def _joined(validator, spec, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    for prop, how in spec.items():
        parts = [instance.get(p) for p in how["parts"]]
        whole = instance.get(prop)
        if not isinstance(whole, str) or not all(isinstance(p, str) for p in parts):
            continue  # missing or mistyped: the ordinary keywords say so
        want = how["separator"].join(parts)
        if whole != want:
            yield jsonschema.ValidationError(f"{prop}: {whole!r} is not {want!r}")


def _same_as(validator, spec, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    for prop, other in spec.items():
        if prop in instance and other in instance and instance[prop] != instance[other]:
            yield jsonschema.ValidationError(
                f"{prop}: {instance[prop]!r} is not {other} ({instance[other]!r})")


def _ordered(validator, spec, instance, schema):
    if spec and validator.is_type(instance, "array") and len(instance) == 2 and \
            all(validator.is_type(x, "integer") for x in instance) and instance[0] > instance[1]:
        yield jsonschema.ValidationError(f"{instance!r}: lo is above hi")


X_KEYWORDS = {"x-keysIn": _keys_in, "x-maxBytes": _max_bytes, "x-joined": _joined,
              "x-sameAs": _same_as, "x-ordered": _ordered}

# The wire payloads: each needs good and bad examples. Other schemas in the
# folder (config files) are checked for validity, and for examples if any.
WIRE = ("telemetry", "status", "alert", "command", "ack")


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
    al, cmd = schemas["alert"], schemas["command"]
    reading = tel["$defs"]["reading"]["properties"]
    return [
        ("alert schema const", al["properties"]["schema"]["const"], c["CH_SCHEMA_ALERT"]),
        ("command schema const", cmd["properties"]["schema"]["const"], c["CH_SCHEMA_COMMAND"]),
        ("alert id maxLength", al["$defs"]["id"]["maxLength"], c["CH_ID_MAX"] - 1),
        ("alert alarm_id maxLength", al["$defs"]["alarm_id"]["maxLength"], c["CH_ALARM_ID_MAX"] - 1),
        ("command alarm_id maxLength", cmd["$defs"]["alarm_id"]["maxLength"],
         c["CH_ALARM_ID_MAX"] - 1),
        ("alert message x-maxBytes", al["properties"]["message"]["x-maxBytes"], c["CH_TEXT_MAX"] - 1),
        ("alert by x-maxBytes", al["$defs"]["by"]["x-maxBytes"], c["CH_ID_MAX"] - 1),
        ("command by x-maxBytes", cmd["properties"]["by"]["x-maxBytes"], c["CH_ID_MAX"] - 1),
        ("alert escalation maximum", al["properties"]["escalation"]["maximum"],
         c["CH_ESCALATION_MAX"]),
        ("command duration_ms maximum", cmd["properties"]["duration_ms"]["maximum"],
         c["CH_SHELVE_MAX_MS"]),
        ("telemetry schema const", tel["properties"]["schema"]["const"], c["CH_SCHEMA_TELEMETRY"]),
        ("status schema const", st["properties"]["schema"]["const"], c["CH_SCHEMA_STATUS"]),
        ("ack schema const", schemas["ack"]["properties"]["schema"]["const"], c["CH_SCHEMA_ACK"]),
        ("ack ranges maxItems", schemas["ack"]["$defs"]["ranges"]["maxItems"],
         c["CH_ACK_MAX_RANGES"]),
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
        report(False, "a schema for each wire payload exists: " +
               ", ".join(f"schemas/{k}.schema.json" for k in WIRE))
        print(f"{passed} passed, {failed} failed")
        return 1

    for what, in_schema, in_codec in limit_checks(schemas):
        report(in_schema == in_codec, f"{what}: schema {in_schema!r}, codec.h {in_codec!r}")
    for d, names in (("id", ("status", "alert", "ack")), ("ts", ("status", "alert", "command", "ack")),
                     ("alarm_id", ("command",))):
        first = "telemetry" if d != "alarm_id" else "alert"
        for other in names:
            same = rules(schemas[first]["$defs"][d]) == rules(schemas[other]["$defs"][d])
            report(same, f"$defs/{d} is the same in {first} and {other}")
    al, cmd = schemas["alert"], schemas["command"]
    report(rules(al["$defs"]["by"]) == rules(cmd["properties"]["by"]),
           "'by' is the same rule in alert and command")
    metric = al["properties"]["metric"]["anyOf"][1]["allOf"]
    report(metric[1:] == schemas["telemetry"]["$defs"]["metric_name"]["allOf"][1:],
           "alert metric follows telemetry's metric_name rule")

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
