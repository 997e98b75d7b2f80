/* The wire codec: jansson underneath, the rules of telemetry.schema.json,
 * status.schema.json, alert.schema.json and command.schema.json on top. Every
 * rule lives in one predicate below (id_ok, room_ok, unit_ok, alarm_id_ok,
 * alert_story, ...) used by both directions, so an encoder never emits
 * what a decoder would refuse. Decoders report the first problem, naming the
 * field path; anything taken from the input and shown in a message is cut and
 * stripped of control characters first, because messages end up in logs. */
#include "codec.h"
#include "err.h"
#include "util.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* InfluxDB stores nanoseconds in an int64: its last representable instant in
 * ms (2262-04-11). A later ts would make InfluxDB refuse the whole batch. */
#define TS_MAX_MS  INT64_C(9223372036854)
#define TWO_POW_63 9223372036854775808.0

static const char *const quality_names[] = {"good", "uncertain", "bad"};

const char *ch_quality_name(enum ch_quality q)
{
    if ((unsigned)q < CH_ARRAY_LEN(quality_names))
        return quality_names[q];
    return "?";
}

/* ---- rules shared by encoders and decoders ---------------------------- */

/* A fixed char array holds a terminated string. */
static bool terminated(const char *s, size_t cap)
{
    return memchr(s, '\0', cap) != NULL;
}

static bool id_ok(const char *s, size_t cap)
{
    return terminated(s, cap) && ch_valid_id(s);
}

static bool room_ok(const char *s)
{
    return terminated(s, CH_ID_MAX) && (s[0] == '\0' || ch_valid_id(s));
}

/* carehub_* is the hub's own (carehub_status, carehub_hub) and _* is InfluxDB 2's. */
static bool measurement_ok(const char *s)
{
    return id_ok(s, CH_ID_MAX) && s[0] != '_' && strncmp(s, "carehub_", 8) != 0;
}

/* InfluxDB 1.x refuses a field named "time"; InfluxDB 2 reserves _*; the hub
 * writes each reading's sequence number as the field "seq". */
static bool metric_name_ok(const char *s)
{
    return id_ok(s, CH_ID_MAX) && s[0] != '_' && strcmp(s, "time") != 0 && strcmp(s, "seq") != 0;
}

static bool no_controls(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

/* A unit is 1..CH_UNIT_MAX-1 bytes of UTF-8 without control characters
 * (jansson checks the UTF-8). */
static bool unit_ok(const char *s, size_t len)
{
    return len > 0 && len < CH_UNIT_MAX && no_controls(s, len);
}

/* A display name: empty, or ch_valid_name (a field of CH_NAME_MAX). */
static bool name_ok(const char *s)
{
    return terminated(s, CH_NAME_MAX) && (s[0] == '\0' || ch_valid_name(s));
}

/* A version: 1..CH_VERSION_MAX-1 chars of [A-Za-z0-9.+_-] (semver, git describe). */
static bool version_ok(const char *s, size_t len)
{
    if (len == 0 || len >= CH_VERSION_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '+' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static bool boot_id_ok(const char *s, size_t len)
{
    if (len != 32)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static bool ts_ok(int64_t ts)
{
    return ts > 0 && ts <= TS_MAX_MS;
}

/* ---- decoding --------------------------------------------------------- */

struct dec {
    char *err;
    size_t errn;
};

static int fail(struct dec *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct dec *d, const char *fmt, ...)
{
    if (d->errn) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->err, d->errn, fmt, ap);
        va_end(ap);
    }
    return CH_EINVAL;
}

/* Input text made safe for a message: at most 32 bytes (cut on a UTF-8
 * boundary, "..." appended), control characters and quotes as '?'. */
struct shown {
    char s[40];
};

static struct shown show(const char *in)
{
    struct shown o;
    size_t n = strlen(in), cut = n > 32 ? 32 : n;
    while (cut < n && cut > 0 && ((unsigned char)in[cut] & 0xc0) == 0x80)
        cut--;
    for (size_t i = 0; i < cut; i++) {
        unsigned char c = (unsigned char)in[i];
        o.s[i] = (c < 0x20 || c == 0x7f || c == '\'' || c == '"') ? '?' : (char)c;
    }
    strcpy(o.s + cut, cut < n ? "..." : "");
    return o;
}

/* "readings[3]" + "device" -> "readings[3].device"; "" + "seq" -> "seq". */
struct path {
    char s[96];
};

static struct path at(const char *base, const char *key)
{
    struct path p;
    /* a path cut short still names the place; the result is checked only
     * to tell the compiler that cutting is intended */
    if (snprintf(p.s, sizeof p.s, "%s%s%s", base, *base ? "." : "", key) < 0)
        p.s[0] = '\0';
    return p;
}

static int check_keys(struct dec *d, const json_t *obj, const char *base,
                      const char *const *allowed, size_t n_allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        size_t i = 0;
        while (i < n_allowed && strcmp(key, allowed[i]) != 0)
            i++;
        if (i == n_allowed)
            return fail(d, "%s: unknown key", at(base, show(key).s).s);
    }
    return 0;
}

static int need_string(struct dec *d, const json_t *obj, const char *base, const char *key,
                       bool required, const json_t **out)
{
    *out = json_object_get(obj, key);
    if (!*out)
        return required ? fail(d, "%s: missing", at(base, key).s) : 0;
    if (!json_is_string(*out))
        return fail(d, "%s: not a string", at(base, key).s);
    return 0;
}

#define ID_RULE "1..64 chars of [A-Za-z0-9_.-], not starting with '.' or '-'"

/* Reads an identifier (or, with empty_ok, an identifier or ""). */
static int get_id(struct dec *d, const json_t *obj, const char *base, const char *key,
                  bool required, bool empty_ok, char out[CH_ID_MAX])
{
    const json_t *v;
    int rc = need_string(d, obj, base, key, required, &v);
    if (rc || !v)
        return rc;
    const char *s = json_string_value(v);
    if (json_string_length(v) >= CH_ID_MAX || !(empty_ok ? room_ok(s) : ch_valid_id(s)))
        return fail(d, "%s: '%s' is not an identifier (%s%s)", at(base, key).s, show(s).s, ID_RULE,
                    empty_ok ? ", or empty" : "");
    memcpy(out, s, json_string_length(v) + 1);
    return 0;
}

/* An optional display name (absent and "" are the same). */
static int get_name(struct dec *d, const json_t *obj, const char *base, const char *key, char *out)
{
    const json_t *v;
    int rc = need_string(d, obj, base, key, false, &v);
    if (rc || !v)
        return rc;
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (len > 0 && (len >= CH_NAME_MAX || strlen(s) != len || !ch_valid_name(s)))
        return fail(d,
                    "%s%s%s: '%s' is not a name (1..%d bytes of text without control "
                    "characters, no leading or trailing space)",
                    base, *base ? "." : "", key, show(s).s, CH_NAME_MAX - 1);
    memcpy(out, s, len + 1);
    return 0;
}

/* JSON Schema counts 42.0 as an integer, so an integral real is accepted too. */
static bool as_int(const json_t *v, int64_t min, int64_t max, int64_t *out)
{
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x < min || x > max)
            return false;
        *out = (int64_t)x;
        return true;
    }
    if (json_is_real(v)) {
        double x = json_real_value(v);
        if (!isfinite(x) || x != floor(x) || x < (double)min || x >= TWO_POW_63 || x > (double)max)
            return false;
        *out = (int64_t)x;
        return true;
    }
    return false;
}

static int get_ts(struct dec *d, const json_t *obj, const char *base, bool required, int64_t *out)
{
    const json_t *v = json_object_get(obj, "ts");
    if (!v)
        return required ? fail(d, "%s: missing", at(base, "ts").s) : 0;
    if (!as_int(v, 1, TS_MAX_MS, out))
        return fail(d, "%s: not an integer in 1..%" PRId64 " (ms since the epoch)",
                    at(base, "ts").s, TS_MAX_MS);
    return 0;
}

/* Reads an optional reading or alert number (1..CH_NUMBER_MAX); *out stays 0
 * when the key is absent. */
static int get_number(struct dec *d, const json_t *obj, const char *base, const char *key,
                      uint64_t *out)
{
    const json_t *v = json_object_get(obj, key);
    int64_t x;
    if (!v)
        return 0;
    if (!as_int(v, 1, (int64_t)CH_NUMBER_MAX, &x))
        return fail(d, "%s: not an integer in 1..%" PRIu64, at(base, key).s, CH_NUMBER_MAX);
    *out = (uint64_t)x;
    return 0;
}

static int get_schema(struct dec *d, const json_t *root, const char *want)
{
    const json_t *v;
    int rc = need_string(d, root, "", "schema", true, &v);
    if (rc)
        return rc;
    if (strcmp(json_string_value(v), want) != 0)
        return fail(d, "schema: '%s' is not \"%s\"", show(json_string_value(v)).s, want);
    return 0;
}

static int get_array(struct dec *d, const json_t *obj, const char *key, bool required, size_t min,
                     size_t max, const json_t **out)
{
    *out = json_object_get(obj, key);
    if (!*out)
        return required ? fail(d, "%s: missing", key) : 0;
    if (!json_is_array(*out))
        return fail(d, "%s: not an array", key);
    size_t n = json_array_size(*out);
    if (n < min)
        return fail(d, "%s: must not be empty", key);
    if (n > max)
        return fail(d, "%s: more than %zu items", key, max);
    return 0;
}

json_t *ch_json_parse(const char *buf, size_t len, char *err, size_t errn)
{
    struct dec d = {err, errn};
    if (!buf) {
        fail(&d, "no payload");
        return NULL;
    }
    json_error_t je;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!root)
        fail(&d, "not JSON: %s at line %d column %d", je.text, je.line, je.column);
    return root;
}

static int decode_units(struct dec *d, const json_t *units, const json_t *metrics, const char *base)
{
    struct path p = at(base, "units");
    if (!json_is_object(units))
        return fail(d, "%s: not an object", p.s);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)units, key, v)
    {
        if (!json_object_get(metrics, key))
            return fail(d, "%s: not a metric of this reading", at(p.s, show(key).s).s);
        if (!json_is_string(v) || !unit_ok(json_string_value(v), json_string_length(v)))
            return fail(d, "%s: not a unit (1..%d bytes, no control characters)",
                        at(p.s, show(key).s).s, CH_UNIT_MAX - 1);
    }
    return 0;
}

static int decode_reading(struct dec *d, const json_t *o, size_t idx, struct ch_reading *r)
{
    static const char *const keys[] = {"device",  "measurement", "room", "ts",
                                       "quality", "metrics",     "units"};
    char base[32];
    snprintf(base, sizeof base, "readings[%zu]", idx);
    if (!json_is_object(o))
        return fail(d, "%s: not an object", base);
    int rc = check_keys(d, o, base, keys, CH_ARRAY_LEN(keys));
    if (!rc)
        rc = get_id(d, o, base, "device", true, false, r->device);
    if (!rc)
        rc = get_id(d, o, base, "measurement", true, false, r->measurement);
    if (!rc && !measurement_ok(r->measurement))
        rc = fail(d, "%s: '%s' is reserved (carehub_* and _* belong to the hub and InfluxDB)",
                  at(base, "measurement").s, r->measurement);
    if (!rc)
        rc = get_id(d, o, base, "room", false, true, r->room);
    if (!rc)
        rc = get_ts(d, o, base, true, &r->ts_ms);
    if (rc)
        return rc;

    const json_t *q;
    rc = need_string(d, o, base, "quality", true, &q);
    if (rc)
        return rc;
    size_t qi = 0;
    while (qi < CH_ARRAY_LEN(quality_names) && strcmp(json_string_value(q), quality_names[qi]))
        qi++;
    if (qi == CH_ARRAY_LEN(quality_names))
        return fail(d, "%s: '%s' is not one of good, uncertain, bad", at(base, "quality").s,
                    show(json_string_value(q)).s);
    r->quality = (enum ch_quality)qi;

    struct path mp = at(base, "metrics");
    const json_t *metrics = json_object_get(o, "metrics");
    if (!metrics)
        return fail(d, "%s: missing", mp.s);
    if (!json_is_object(metrics))
        return fail(d, "%s: not an object", mp.s);
    size_t n = json_object_size(metrics);
    if (n == 0)
        return fail(d, "%s: must not be empty", mp.s);
    if (n > CH_MAX_METRICS)
        return fail(d, "%s: more than %d metrics", mp.s, CH_MAX_METRICS);
    const json_t *units = json_object_get(o, "units");
    if (units && (rc = decode_units(d, units, metrics, base)) != 0)
        return rc;

    r->metrics = ch_xcalloc(n, sizeof *r->metrics);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)metrics, key, v)
    {
        struct ch_metric *m = &r->metrics[r->n_metrics];
        if (!metric_name_ok(key))
            return fail(d, "%s: not a metric name (%s; not 'time', not starting with '_')",
                        at(mp.s, show(key).s).s, ID_RULE);
        if (!json_is_number(v) || !isfinite(json_number_value(v)))
            return fail(d, "%s: not a finite number", at(mp.s, key).s);
        memcpy(m->name, key, strlen(key) + 1);
        m->value = json_number_value(v);
        const json_t *u = units ? json_object_get(units, key) : NULL;
        if (u)
            memcpy(m->unit, json_string_value(u), json_string_length(u) + 1);
        r->n_metrics++;
    }
    return 0;
}

static int decode_telemetry(const json_t *root, struct ch_telemetry *out, char *err, size_t errn)
{
    static const char *const keys[] = {"schema", "site",       "gateway", "seq",
                                       "ts",     "historical", "oldest",  "readings"};
    struct dec d = {err, errn};
    memset(out, 0, sizeof *out);
    if (!json_is_object(root))
        return fail(&d, "payload: not a JSON object");
    int rc = check_keys(&d, root, "", keys, CH_ARRAY_LEN(keys));
    if (!rc)
        rc = get_schema(&d, root, CH_SCHEMA_TELEMETRY);
    if (!rc)
        rc = get_id(&d, root, "", "site", true, false, out->site);
    if (!rc)
        rc = get_id(&d, root, "", "gateway", true, false, out->gateway);
    if (rc)
        return rc;

    const json_t *seq = json_object_get(root, "seq");
    int64_t seqv = 0;
    if (!seq)
        return fail(&d, "seq: missing");
    if (!as_int(seq, 0, INT64_MAX, &seqv))
        return fail(&d, "seq: not an integer in 0..%" PRId64, INT64_MAX);
    out->seq = (uint64_t)seqv;
    if ((rc = get_ts(&d, root, "", true, &out->ts_ms)) != 0)
        return rc;
    const json_t *hist = json_object_get(root, "historical");
    if (hist && !json_is_boolean(hist))
        return fail(&d, "historical: not a boolean");
    out->historical = json_is_true(hist);
    if ((rc = get_number(&d, root, "", "oldest", &out->oldest)) != 0)
        return rc;

    const json_t *readings;
    if ((rc = get_array(&d, root, "readings", true, 1, CH_MAX_READINGS, &readings)) != 0)
        return rc;
    size_t n = json_array_size(readings);
    out->readings = ch_xcalloc(n, sizeof *out->readings);
    for (size_t i = 0; i < n; i++) {
        /* counted first so that _free releases a half-decoded reading */
        out->n_readings++;
        rc = decode_reading(&d, json_array_get(readings, i), i, &out->readings[i]);
        if (rc)
            return rc;
    }
    return 0;
}

int ch_telemetry_from_json(const json_t *root, struct ch_telemetry *out, char *err, size_t errn)
{
    int rc = decode_telemetry(root, out, err, errn);
    if (rc)
        ch_telemetry_free(out);
    return rc;
}

static int decode_device(struct dec *d, const json_t *o, size_t idx, struct ch_device_info *dev)
{
    static const char *const keys[] = {"id", "profile", "bus", "room", "name", "room_name"};
    char base[32];
    snprintf(base, sizeof base, "devices[%zu]", idx);
    if (!json_is_object(o))
        return fail(d, "%s: not an object", base);
    int rc = check_keys(d, o, base, keys, CH_ARRAY_LEN(keys));
    if (!rc)
        rc = get_id(d, o, base, "id", true, false, dev->id);
    if (!rc)
        rc = get_id(d, o, base, "profile", true, false, dev->profile);
    if (!rc)
        rc = get_id(d, o, base, "bus", true, false, dev->bus);
    if (!rc)
        rc = get_id(d, o, base, "room", false, true, dev->room);
    if (!rc)
        rc = get_name(d, o, base, "name", dev->name);
    if (!rc)
        rc = get_name(d, o, base, "room_name", dev->room_name);
    return rc;
}

static int decode_status(const json_t *root, struct ch_status *out, char *err, size_t errn)
{
    static const char *const keys[] = {
        "schema",  "site",    "gateway",        "online",       "ts",       "version",
        "boot_id", "devices", "oldest_reading", "oldest_alert", "site_name"};
    struct dec d = {err, errn};
    memset(out, 0, sizeof *out);
    if (!json_is_object(root))
        return fail(&d, "payload: not a JSON object");
    int rc = check_keys(&d, root, "", keys, CH_ARRAY_LEN(keys));
    if (!rc)
        rc = get_schema(&d, root, CH_SCHEMA_STATUS);
    if (!rc)
        rc = get_id(&d, root, "", "site", true, false, out->site);
    if (!rc)
        rc = get_id(&d, root, "", "gateway", true, false, out->gateway);
    if (rc)
        return rc;
    const json_t *online = json_object_get(root, "online");
    if (!online)
        return fail(&d, "online: missing");
    if (!json_is_boolean(online))
        return fail(&d, "online: not a boolean");
    out->online = json_is_true(online);

    /* a birth (online) says everything; the will may say only site, gateway, online */
    if ((rc = get_ts(&d, root, "", out->online, &out->ts_ms)) != 0)
        return rc;
    const json_t *v;
    if ((rc = need_string(&d, root, "", "version", out->online, &v)) != 0)
        return rc;
    if (v && !version_ok(json_string_value(v), json_string_length(v)))
        return fail(&d, "version: '%s' is not 1..%d chars of [A-Za-z0-9.+_-]",
                    show(json_string_value(v)).s, CH_VERSION_MAX - 1);
    if (v)
        memcpy(out->version, json_string_value(v), json_string_length(v) + 1);
    if ((rc = need_string(&d, root, "", "boot_id", out->online, &v)) != 0)
        return rc;
    if (v && !boot_id_ok(json_string_value(v), json_string_length(v)))
        return fail(&d, "boot_id: '%s' is not 32 lowercase hex digits",
                    show(json_string_value(v)).s);
    if (v)
        memcpy(out->boot_id, json_string_value(v), json_string_length(v) + 1);
    if ((rc = get_number(&d, root, "", "oldest_reading", &out->oldest_reading)) != 0 ||
        (rc = get_number(&d, root, "", "oldest_alert", &out->oldest_alert)) != 0 ||
        (rc = get_name(&d, root, "", "site_name", out->site_name)) != 0)
        return rc;

    const json_t *devices;
    if ((rc = get_array(&d, root, "devices", out->online, 0, CH_MAX_DEVICES, &devices)) != 0)
        return rc;
    size_t n = devices ? json_array_size(devices) : 0;
    if (n == 0)
        return 0;
    out->devices = ch_xcalloc(n, sizeof *out->devices);
    for (size_t i = 0; i < n; i++) {
        rc = decode_device(&d, json_array_get(devices, i), i, &out->devices[i]);
        if (rc)
            return rc;
        out->n_devices++;
    }
    return 0;
}

int ch_status_from_json(const json_t *root, struct ch_status *out, char *err, size_t errn)
{
    int rc = decode_status(root, out, err, errn);
    if (rc)
        ch_status_free(out);
    return rc;
}

int ch_telemetry_decode(const char *buf, size_t len, struct ch_telemetry *out, char *err,
                        size_t errn)
{
    memset(out, 0, sizeof *out);
    json_t *root = ch_json_parse(buf, len, err, errn);
    if (!root)
        return CH_EINVAL;
    int rc = ch_telemetry_from_json(root, out, err, errn);
    json_decref(root);
    return rc;
}

int ch_status_decode(const char *buf, size_t len, struct ch_status *out, char *err, size_t errn)
{
    memset(out, 0, sizeof *out);
    json_t *root = ch_json_parse(buf, len, err, errn);
    if (!root)
        return CH_EINVAL;
    int rc = ch_status_from_json(root, out, err, errn);
    json_decref(root);
    return rc;
}

void ch_telemetry_free(struct ch_telemetry *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n_readings; i++)
        free(t->readings[i].metrics);
    free(t->readings);
    memset(t, 0, sizeof *t);
}

void ch_status_free(struct ch_status *s)
{
    if (!s)
        return;
    free(s->devices);
    memset(s, 0, sizeof *s);
}

/* ---- encoding --------------------------------------------------------- */

/* Sets key to a new value; false (and nothing leaked) if the value is NULL,
 * e.g. json_string() on invalid UTF-8. */
static bool put(json_t *obj, const char *key, json_t *v)
{
    return v && json_object_set_new(obj, key, v) == 0;
}

static char *dump(json_t *root, bool ok)
{
    /* 15 significant digits: every decimal a sensor reports survives, and
     * 23.4 stays "23.4" instead of 17-digit noise. */
    char *s = ok ? json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(root);
    return s;
}

static json_t *encode_reading(const struct ch_reading *r)
{
    if (!id_ok(r->device, CH_ID_MAX) || !measurement_ok(r->measurement) || !room_ok(r->room) ||
        !ts_ok(r->ts_ms) || (unsigned)r->quality >= CH_ARRAY_LEN(quality_names) ||
        r->n_metrics == 0 || r->n_metrics > CH_MAX_METRICS || !r->metrics)
        return NULL;
    json_t *o = json_object(), *metrics = json_object(), *units = json_object();
    bool ok = put(o, "device", json_string(r->device)) &&
              put(o, "measurement", json_string(r->measurement)) &&
              (!r->room[0] || put(o, "room", json_string(r->room))) &&
              put(o, "ts", json_integer(r->ts_ms)) &&
              put(o, "quality", json_string(quality_names[r->quality]));
    for (size_t i = 0; ok && i < r->n_metrics; i++) {
        const struct ch_metric *m = &r->metrics[i];
        ok = metric_name_ok(m->name) && isfinite(m->value) && !json_object_get(metrics, m->name) &&
             terminated(m->unit, CH_UNIT_MAX) && put(metrics, m->name, json_real(m->value)) &&
             (!m->unit[0] ||
              (unit_ok(m->unit, strlen(m->unit)) && put(units, m->name, json_string(m->unit))));
    }
    ok = ok && put(o, "metrics", json_incref(metrics)) &&
         (json_object_size(units) == 0 || put(o, "units", json_incref(units)));
    json_decref(metrics);
    json_decref(units);
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

char *ch_reading_encode(const struct ch_reading *r)
{
    json_t *o = encode_reading(r);
    return o ? dump(o, true) : NULL;
}

char *ch_readings_encode(const struct ch_reading *readings, size_t n)
{
    if (n == 0 || n > CH_MAX_READINGS || !readings)
        return NULL;
    json_t *arr = json_array();
    bool ok = true;
    for (size_t i = 0; ok && i < n; i++) {
        json_t *r = encode_reading(&readings[i]);
        ok = r && json_array_append_new(arr, r) == 0;
    }
    return dump(arr, ok);
}

char *ch_telemetry_wrap(const char *site, const char *gateway, uint64_t seq, int64_t ts_ms,
                        bool historical, uint64_t oldest, const char *readings_json, size_t len)
{
    if (!id_ok(site, CH_ID_MAX) || !id_ok(gateway, CH_ID_MAX) || seq > INT64_MAX || !ts_ok(ts_ms) ||
        oldest > CH_NUMBER_MAX || len < 2 || readings_json[0] != '[' ||
        readings_json[len - 1] != ']')
        return NULL;
    /* ids are [A-Za-z0-9_.-]: nothing to escape, so the envelope is plain text
     * around the readings, which were encoded (and checked) when spooled */
    char old[40] = "";
    if (oldest)
        snprintf(old, sizeof old, "\"oldest\":%llu,", (unsigned long long)oldest);
    static const char fmt[] = "{\"schema\":\"" CH_SCHEMA_TELEMETRY "\",\"site\":\"%s\","
                              "\"gateway\":\"%s\",\"seq\":%llu,\"ts\":%lld,"
                              "\"historical\":%s,%s\"readings\":";
    int head = snprintf(NULL, 0, fmt, site, gateway, (unsigned long long)seq, (long long)ts_ms,
                        historical ? "true" : "false", old);
    if (head < 0)
        return NULL;
    char *out = ch_xmalloc((size_t)head + len + 2);
    snprintf(out, (size_t)head + 1, fmt, site, gateway, (unsigned long long)seq, (long long)ts_ms,
             historical ? "true" : "false", old);
    memcpy(out + head, readings_json, len);
    out[(size_t)head + len] = '}';
    out[(size_t)head + len + 1] = '\0';
    return out;
}

char *ch_telemetry_encode(const struct ch_telemetry *t)
{
    char *readings = ch_readings_encode(t->readings, t->n_readings);
    if (!readings)
        return NULL;
    char *out = ch_telemetry_wrap(t->site, t->gateway, t->seq, t->ts_ms, t->historical, t->oldest,
                                  readings, strlen(readings));
    free(readings);
    return out;
}

char *ch_status_encode(const struct ch_status *s)
{
    size_t vlen = terminated(s->version, CH_VERSION_MAX) ? strlen(s->version) : CH_VERSION_MAX;
    size_t blen =
        terminated(s->boot_id, sizeof s->boot_id) ? strlen(s->boot_id) : sizeof s->boot_id;
    if (!id_ok(s->site, CH_ID_MAX) || !id_ok(s->gateway, CH_ID_MAX) ||
        (s->ts_ms != 0 && !ts_ok(s->ts_ms)) || (vlen != 0 && !version_ok(s->version, vlen)) ||
        (blen != 0 && !boot_id_ok(s->boot_id, blen)) || s->n_devices > CH_MAX_DEVICES ||
        (s->n_devices > 0 && !s->devices) ||
        (s->online && (s->ts_ms == 0 || vlen == 0 || blen == 0)) ||
        s->oldest_reading > CH_NUMBER_MAX || s->oldest_alert > CH_NUMBER_MAX)
        return NULL;
    json_t *root = json_object();
    bool ok = put(root, "schema", json_string(CH_SCHEMA_STATUS)) &&
              put(root, "site", json_string(s->site)) &&
              put(root, "gateway", json_string(s->gateway)) &&
              put(root, "online", json_boolean(s->online)) &&
              (s->ts_ms == 0 || put(root, "ts", json_integer(s->ts_ms))) &&
              (vlen == 0 || put(root, "version", json_string(s->version))) &&
              (blen == 0 || put(root, "boot_id", json_string(s->boot_id))) &&
              (!s->oldest_reading ||
               put(root, "oldest_reading", json_integer((json_int_t)s->oldest_reading))) &&
              (!s->oldest_alert ||
               put(root, "oldest_alert", json_integer((json_int_t)s->oldest_alert))) &&
              name_ok(s->site_name) &&
              (!s->site_name[0] || put(root, "site_name", json_string(s->site_name)));
    if (ok && (s->online || s->n_devices > 0)) {
        json_t *devices = json_array();
        for (size_t i = 0; ok && i < s->n_devices; i++) {
            const struct ch_device_info *dv = &s->devices[i];
            json_t *o = json_object();
            ok = id_ok(dv->id, CH_ID_MAX) && id_ok(dv->profile, CH_ID_MAX) &&
                 id_ok(dv->bus, CH_ID_MAX) && room_ok(dv->room) &&
                 put(o, "id", json_string(dv->id)) && put(o, "profile", json_string(dv->profile)) &&
                 put(o, "bus", json_string(dv->bus)) &&
                 (!dv->room[0] || put(o, "room", json_string(dv->room))) && name_ok(dv->name) &&
                 (!dv->name[0] || put(o, "name", json_string(dv->name))) &&
                 name_ok(dv->room_name) &&
                 (!dv->room_name[0] || put(o, "room_name", json_string(dv->room_name)));
            ok = ok && json_array_append(devices, o) == 0;
            json_decref(o);
        }
        ok = ok && put(root, "devices", json_incref(devices));
        json_decref(devices);
    }
    return dump(root, ok);
}

/* ---- alerts and commands ------------------------------------------------
 * One alert is one transition of one alarm. Beyond the per-field rules the
 * fields must tell one consistent story, because the hub stores every
 * transition as it comes and reports (time to acknowledge, alarms per
 * resident) are computed from them: alert_story() holds those rules, and
 * both the encoder and the decoder apply it, so care-edge finds out in its
 * own tests, not at the hub, when it describes a transition the contract
 * does not allow. */

static const char *const priority_names[] = {"low", "medium", "high"};
static const char *const state_names[] = {"normal",    "unack",   "acked",
                                          "rtn_unack", "shelved", "out_of_service"};
static const char *const event_names[] = {"raise",      "ack",    "clear",     "rtn",
                                          "escalate",   "shelve", "unshelve",  "out_of_service",
                                          "in_service", "flood",  "flood_end", "notified"};
static const char *const action_names[] = {"ack", "shelve", "unshelve", "out_of_service",
                                           "in_service"};
static const char *const role_names[] = {"staff", "admin"};

const char *ch_role_name(int r)
{
    return r >= 0 && (size_t)r < CH_ARRAY_LEN(role_names) ? role_names[r] : "?";
}

/* a name for every enumerator of codec.h, and no more */
_Static_assert(CH_ARRAY_LEN(priority_names) == CH_PRIO_HIGH + 1, "priority names");
_Static_assert(CH_ARRAY_LEN(state_names) == CH_AS_OOS + 1, "state names");
_Static_assert(CH_ARRAY_LEN(event_names) == CH_AE_NOTIFIED + 1, "event names");
_Static_assert(CH_ARRAY_LEN(action_names) == CH_CMD_IN_SERVICE + 1, "action names");

/* the rule id of the site's flood alarm, "flood:<gateway>" */
#define FLOOD_RULE "flood"

static const char *name_of(const char *const *names, size_t n, int i)
{
    return i >= 0 && (size_t)i < n ? names[i] : "?";
}

static int index_of(const char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return (int)i;
    return -1;
}

const char *ch_priority_name(int p)
{
    return name_of(priority_names, CH_ARRAY_LEN(priority_names), p);
}

const char *ch_alarm_state_name(int s)
{
    return name_of(state_names, CH_ARRAY_LEN(state_names), s);
}

const char *ch_alarm_event_name(int e)
{
    return name_of(event_names, CH_ARRAY_LEN(event_names), e);
}

const char *ch_command_action_name(int a)
{
    return name_of(action_names, CH_ARRAY_LEN(action_names), a);
}

int ch_command_action_parse(const char *name)
{
    if (!name)
        return -1;
    if (strncmp(name, "cmd/", 4) == 0)
        name += 4;
    return index_of(action_names, CH_ARRAY_LEN(action_names), name);
}

#define BIT(s) (1u << (s))
/* active: raised and not yet back to normal (raised_ms is known) */
#define ACTIVE            (BIT(CH_AS_UNACK) | BIT(CH_AS_ACKED) | BIT(CH_AS_RTN_UNACK))
#define IN_SERVICE_STATES (BIT(CH_AS_NORMAL) | ACTIVE)

/* The states an alarm may be in after each event (the comments on enum
 * ch_alarm_event in codec.h, as a table). */
static const unsigned states_after[] = {
    [CH_AE_RAISE] = BIT(CH_AS_UNACK),
    [CH_AE_ACK] = BIT(CH_AS_ACKED) | BIT(CH_AS_NORMAL),
    [CH_AE_CLEAR] = BIT(CH_AS_NORMAL),
    [CH_AE_RTN] = BIT(CH_AS_RTN_UNACK),
    [CH_AE_ESCALATE] = BIT(CH_AS_UNACK) | BIT(CH_AS_RTN_UNACK),
    [CH_AE_SHELVE] = BIT(CH_AS_SHELVED),
    [CH_AE_UNSHELVE] = IN_SERVICE_STATES,
    [CH_AE_OUT_OF_SERVICE] = BIT(CH_AS_OOS),
    [CH_AE_IN_SERVICE] = IN_SERVICE_STATES,
    [CH_AE_FLOOD] = BIT(CH_AS_UNACK) | BIT(CH_AS_ACKED),
    [CH_AE_FLOOD_END] = BIT(CH_AS_NORMAL) | BIT(CH_AS_RTN_UNACK),
    [CH_AE_NOTIFIED] = IN_SERVICE_STATES | BIT(CH_AS_SHELVED) | BIT(CH_AS_OOS),
};
_Static_assert(CH_ARRAY_LEN(states_after) == CH_ARRAY_LEN(event_names), "a row per event");

/* "rule:device", both identifiers (an identifier has no ':'). */
static bool alarm_id_ok(const char *s, size_t cap)
{
    if (!terminated(s, cap))
        return false;
    const char *colon = strchr(s, ':');
    if (!colon || (size_t)(colon - s) >= CH_ID_MAX)
        return false;
    char rule[CH_ID_MAX];
    memcpy(rule, s, (size_t)(colon - s));
    rule[colon - s] = '\0';
    return strlen(colon + 1) < CH_ID_MAX && ch_valid_id(rule) && ch_valid_id(colon + 1);
}

static bool empty_or(bool ok, const char *s)
{
    return s[0] == '\0' || ok;
}

/* Text for people (message): fewer than max bytes of UTF-8 (jansson checks
 * the encoding both ways), no control characters: it is shown in one-line
 * logs, console rows and SMS, and InfluxDB line protocol cannot carry a
 * newline in a way every reader splits correctly. */
static bool text_ok(const char *s, size_t len, size_t max)
{
    return len < max && no_controls(s, len);
}

/* Who acted ("console:nurse1", "hub:operator7"): 1..64 bytes of text; not an
 * identifier, because staff log-in names need not be ASCII. */
static bool by_ok(const char *s, size_t len)
{
    return len > 0 && text_ok(s, len, CH_ID_MAX);
}

static bool ms_ok(int64_t ms)
{
    return ms == 0 || ts_ok(ms);
}

/* Every per-field rule of an alert in struct form (for the encoder; the
 * decoder checks the same rules field by field, naming the field). */
static bool alert_fields_ok(const struct ch_alert *a)
{
    return id_ok(a->site, CH_ID_MAX) && id_ok(a->gateway, CH_ID_MAX) &&
           alarm_id_ok(a->alarm_id, CH_ALARM_ID_MAX) && id_ok(a->rule, CH_ID_MAX) &&
           id_ok(a->device, CH_ID_MAX) && room_ok(a->room) && room_ok(a->bed) &&
           room_ok(a->resident) && a->priority >= 0 &&
           (size_t)a->priority < CH_ARRAY_LEN(priority_names) && a->state >= 0 &&
           (size_t)a->state < CH_ARRAY_LEN(state_names) && a->event >= 0 &&
           (size_t)a->event < CH_ARRAY_LEN(event_names) && a->escalation >= 0 &&
           a->escalation <= CH_ESCALATION_MAX && terminated(a->metric, CH_ID_MAX) &&
           empty_or(metric_name_ok(a->metric), a->metric) &&
           (!a->has_value || isfinite(a->value)) && terminated(a->message, CH_TEXT_MAX) &&
           text_ok(a->message, strlen(a->message), CH_TEXT_MAX) && ts_ok(a->ts_ms) &&
           ms_ok(a->raised_ms) && ms_ok(a->acked_ms) && ms_ok(a->cleared_ms) &&
           ms_ok(a->shelved_until_ms) && terminated(a->by, CH_ID_MAX) &&
           empty_or(by_ok(a->by, strlen(a->by)), a->by) && terminated(a->group, CH_ALARM_ID_MAX) &&
           empty_or(alarm_id_ok(a->group, CH_ALARM_ID_MAX), a->group) && a->seq <= CH_NUMBER_MAX &&
           a->oldest <= CH_NUMBER_MAX && room_ok(a->kind) && name_ok(a->site_name) &&
           name_ok(a->room_name) && name_ok(a->bed_name) && name_ok(a->resident_name) &&
           name_ok(a->device_name) && ms_ok(a->located_ms);
}

/* The rules across fields, on an alert whose fields are each valid. Returns
 * NULL, or writes what is wrong (naming the field) into why. */
static const char *alert_story(const struct ch_alert *a, char *why, size_t n)
{
    const char *ev = event_names[a->event], *st = state_names[a->state];
    size_t rl = strlen(a->rule);
    if (strncmp(a->alarm_id, a->rule, rl) != 0 || a->alarm_id[rl] != ':' ||
        strcmp(a->alarm_id + rl + 1, a->device) != 0)
        snprintf(why, n, "alarm_id: '%s' is not rule:device ('%s:%s')", a->alarm_id, a->rule,
                 a->device);
    else if (strcmp(a->rule, FLOOD_RULE) == 0 && strcmp(a->device, a->gateway) != 0)
        snprintf(why, n, "device: '%s' is not the gateway; the flood alarm is flood:<gateway>",
                 a->device);
    else if ((a->event == CH_AE_FLOOD || a->event == CH_AE_FLOOD_END) &&
             strcmp(a->rule, FLOOD_RULE) != 0)
        snprintf(why, n, "rule: event '%s' belongs to the flood alarm (rule 'flood'), not '%s'", ev,
                 a->rule);
    else if (!(states_after[a->event] & BIT(a->state)))
        snprintf(why, n, "state: '%s' cannot follow event '%s'", st, ev);
    else if (a->event == CH_AE_NOTIFIED && !a->by[0])
        snprintf(why, n, "by: missing for event 'notified' (who was told)");
    else if (a->event == CH_AE_ESCALATE && a->escalation < 1)
        snprintf(why, n, "escalation: must be at least 1 for event 'escalate'");
    else if ((a->state == CH_AS_SHELVED) != (a->shelved_until_ms != 0))
        snprintf(why, n, "shelved_until_ms: %s",
                 a->state == CH_AS_SHELVED ? "missing for state 'shelved'"
                                           : "only for state 'shelved'");
    else if ((ACTIVE & BIT(a->state) || a->event == CH_AE_RAISE) && a->raised_ms == 0)
        snprintf(why, n, "raised_ms: missing for state '%s'", st);
    else if ((a->state == CH_AS_ACKED || a->event == CH_AE_ACK) && a->acked_ms == 0)
        snprintf(why, n, "acked_ms: missing for %s '%s'", a->event == CH_AE_ACK ? "event" : "state",
                 a->event == CH_AE_ACK ? ev : st);
    else if ((a->state == CH_AS_RTN_UNACK || a->event == CH_AE_RTN || a->event == CH_AE_CLEAR) &&
             a->cleared_ms == 0)
        snprintf(why, n, "cleared_ms: missing for %s '%s'",
                 a->state == CH_AS_RTN_UNACK ? "state" : "event",
                 a->state == CH_AS_RTN_UNACK ? st : ev);
    else
        return NULL;
    return why;
}

static int get_enum(struct dec *d, const json_t *obj, const char *key, const char *const *names,
                    size_t n, int *out)
{
    const json_t *v;
    int rc = need_string(d, obj, "", key, true, &v);
    if (rc)
        return rc;
    int i = index_of(names, n, json_string_value(v));
    if (i < 0) {
        char list[160] = "";
        for (size_t k = 0; k < n; k++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k ? ", " : "",
                     names[k]);
        return fail(d, "%s: '%s' is not one of %s", key, show(json_string_value(v)).s, list);
    }
    *out = i;
    return 0;
}

/* A time in ms: required, or optional (absent = 0; present = 1..TS_MAX_MS). */
static int get_ms(struct dec *d, const json_t *obj, const char *key, bool required, int64_t *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v)
        return required ? fail(d, "%s: missing", key) : 0;
    if (!as_int(v, 1, TS_MAX_MS, out))
        return fail(d, "%s: not an integer in 1..%" PRId64 " (ms since the epoch)", key, TS_MAX_MS);
    return 0;
}

static int get_alarm_id(struct dec *d, const json_t *obj, const char *key, bool required,
                        char out[CH_ALARM_ID_MAX])
{
    const json_t *v;
    int rc = need_string(d, obj, "", key, required, &v);
    if (rc || !v)
        return rc;
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (len == 0 && !required)
        return 0;
    if (len >= CH_ALARM_ID_MAX || strlen(s) != len || !alarm_id_ok(s, CH_ALARM_ID_MAX))
        return fail(d, "%s: '%s' is not rule:device (two identifiers: %s)", key, show(s).s,
                    ID_RULE);
    memcpy(out, s, len + 1);
    return 0;
}

/* Optional text: absent and "" are the same. */
static int get_text(struct dec *d, const json_t *obj, const char *key, size_t max, bool is_by,
                    char *out)
{
    const json_t *v;
    int rc = need_string(d, obj, "", key, false, &v);
    if (rc || !v)
        return rc;
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (len > 0 && (is_by ? !by_ok(s, len) : !text_ok(s, len, max)))
        return fail(d, "%s: '%s' is not text of at most %zu bytes without control characters", key,
                    show(s).s, max - 1);
    memcpy(out, s, len + 1);
    return 0;
}

static int decode_alert(const json_t *root, struct ch_alert *out, char *err, size_t errn)
{
    static const char *const keys[] = {"schema",
                                       "site",
                                       "gateway",
                                       "alarm_id",
                                       "rule",
                                       "device",
                                       "room",
                                       "bed",
                                       "resident",
                                       "priority",
                                       "state",
                                       "event",
                                       "escalation",
                                       "latched",
                                       "metric",
                                       "value",
                                       "message",
                                       "ts_ms",
                                       "raised_ms",
                                       "acked_ms",
                                       "cleared_ms",
                                       "shelved_until_ms",
                                       "by",
                                       "group",
                                       "seq",
                                       "oldest",
                                       "kind",
                                       "site_name",
                                       "room_name",
                                       "bed_name",
                                       "resident_name",
                                       "device_name",
                                       "located_ms"};
    struct dec d = {err, errn};
    if (!json_is_object(root))
        return fail(&d, "payload: not a JSON object");
    int rc = check_keys(&d, root, "", keys, CH_ARRAY_LEN(keys));
    if (!rc)
        rc = get_schema(&d, root, CH_SCHEMA_ALERT);
    if (!rc)
        rc = get_id(&d, root, "", "site", true, false, out->site);
    if (!rc)
        rc = get_id(&d, root, "", "gateway", true, false, out->gateway);
    if (!rc)
        rc = get_alarm_id(&d, root, "alarm_id", true, out->alarm_id);
    if (!rc)
        rc = get_id(&d, root, "", "rule", true, false, out->rule);
    if (!rc)
        rc = get_id(&d, root, "", "device", true, false, out->device);
    if (!rc)
        rc = get_id(&d, root, "", "room", false, true, out->room);
    if (!rc)
        rc = get_id(&d, root, "", "bed", false, true, out->bed);
    if (!rc)
        rc = get_id(&d, root, "", "resident", false, true, out->resident);
    if (!rc)
        rc = get_enum(&d, root, "priority", priority_names, CH_ARRAY_LEN(priority_names),
                      &out->priority);
    if (!rc)
        rc = get_enum(&d, root, "state", state_names, CH_ARRAY_LEN(state_names), &out->state);
    if (!rc)
        rc = get_enum(&d, root, "event", event_names, CH_ARRAY_LEN(event_names), &out->event);
    if (rc)
        return rc;

    const json_t *v = json_object_get(root, "escalation");
    int64_t esc;
    if (!v)
        return fail(&d, "escalation: missing");
    if (!as_int(v, 0, CH_ESCALATION_MAX, &esc))
        return fail(&d, "escalation: not an integer in 0..%d", CH_ESCALATION_MAX);
    out->escalation = (int)esc;
    v = json_object_get(root, "latched");
    if (!v)
        return fail(&d, "latched: missing");
    if (!json_is_boolean(v))
        return fail(&d, "latched: not a boolean");
    out->latched = json_is_true(v);

    if ((rc = get_id(&d, root, "", "metric", false, true, out->metric)) != 0)
        return rc;
    if (out->metric[0] && !metric_name_ok(out->metric))
        return fail(&d,
                    "metric: '%s' is not a metric name (not 'time' or 'seq', not starting "
                    "with '_')",
                    out->metric);
    v = json_object_get(root, "value");
    if (v) {
        if (!json_is_number(v) || !isfinite(json_number_value(v)))
            return fail(&d, "value: not a finite number");
        out->has_value = true;
        out->value = json_number_value(v);
    }
    if ((rc = get_text(&d, root, "message", CH_TEXT_MAX, false, out->message)) != 0)
        return rc;
    if ((rc = get_ms(&d, root, "ts_ms", true, &out->ts_ms)) != 0 ||
        (rc = get_ms(&d, root, "raised_ms", false, &out->raised_ms)) != 0 ||
        (rc = get_ms(&d, root, "acked_ms", false, &out->acked_ms)) != 0 ||
        (rc = get_ms(&d, root, "cleared_ms", false, &out->cleared_ms)) != 0 ||
        (rc = get_ms(&d, root, "shelved_until_ms", false, &out->shelved_until_ms)) != 0)
        return rc;
    if ((rc = get_text(&d, root, "by", CH_ID_MAX, true, out->by)) != 0)
        return rc;
    if ((rc = get_alarm_id(&d, root, "group", false, out->group)) != 0)
        return rc;
    if ((rc = get_number(&d, root, "", "seq", &out->seq)) != 0 ||
        (rc = get_number(&d, root, "", "oldest", &out->oldest)) != 0)
        return rc;
    if ((rc = get_id(&d, root, "", "kind", false, true, out->kind)) != 0 ||
        (rc = get_name(&d, root, "", "site_name", out->site_name)) != 0 ||
        (rc = get_name(&d, root, "", "room_name", out->room_name)) != 0 ||
        (rc = get_name(&d, root, "", "bed_name", out->bed_name)) != 0 ||
        (rc = get_name(&d, root, "", "resident_name", out->resident_name)) != 0 ||
        (rc = get_name(&d, root, "", "device_name", out->device_name)) != 0 ||
        (rc = get_ms(&d, root, "located_ms", false, &out->located_ms)) != 0)
        return rc;

    char why[400];
    if (alert_story(out, why, sizeof why))
        return fail(&d, "%s", why);
    return 0;
}

int ch_alert_from_json(const json_t *root, struct ch_alert *out, char *err, size_t errn)
{
    memset(out, 0, sizeof *out);
    int rc = decode_alert(root, out, err, errn);
    if (rc)
        memset(out, 0, sizeof *out);
    return rc;
}

int ch_alert_decode(const char *buf, size_t len, struct ch_alert *out, char *err, size_t errn)
{
    memset(out, 0, sizeof *out);
    json_t *root = ch_json_parse(buf, len, err, errn);
    if (!root)
        return CH_EINVAL;
    int rc = ch_alert_from_json(root, out, err, errn);
    json_decref(root);
    return rc;
}

char *ch_alert_encode(const struct ch_alert *a)
{
    char why[400];
    if (!alert_fields_ok(a) || alert_story(a, why, sizeof why))
        return NULL;
    json_t *root = json_object();
    /* keys in contract order; empty strings and zero times are left out */
    bool ok =
        put(root, "schema", json_string(CH_SCHEMA_ALERT)) &&
        put(root, "site", json_string(a->site)) && put(root, "gateway", json_string(a->gateway)) &&
        put(root, "alarm_id", json_string(a->alarm_id)) &&
        put(root, "rule", json_string(a->rule)) && put(root, "device", json_string(a->device)) &&
        (!a->room[0] || put(root, "room", json_string(a->room))) &&
        (!a->bed[0] || put(root, "bed", json_string(a->bed))) &&
        (!a->resident[0] || put(root, "resident", json_string(a->resident))) &&
        put(root, "priority", json_string(priority_names[a->priority])) &&
        put(root, "state", json_string(state_names[a->state])) &&
        put(root, "event", json_string(event_names[a->event])) &&
        put(root, "escalation", json_integer(a->escalation)) &&
        put(root, "latched", json_boolean(a->latched)) &&
        (!a->metric[0] || put(root, "metric", json_string(a->metric))) &&
        (!a->has_value || put(root, "value", json_real(a->value))) &&
        (!a->message[0] || put(root, "message", json_string(a->message))) &&
        put(root, "ts_ms", json_integer(a->ts_ms)) &&
        (!a->raised_ms || put(root, "raised_ms", json_integer(a->raised_ms))) &&
        (!a->acked_ms || put(root, "acked_ms", json_integer(a->acked_ms))) &&
        (!a->cleared_ms || put(root, "cleared_ms", json_integer(a->cleared_ms))) &&
        (!a->shelved_until_ms ||
         put(root, "shelved_until_ms", json_integer(a->shelved_until_ms))) &&
        (!a->by[0] || put(root, "by", json_string(a->by))) &&
        (!a->group[0] || put(root, "group", json_string(a->group))) &&
        (!a->seq || put(root, "seq", json_integer((json_int_t)a->seq))) &&
        (!a->oldest || put(root, "oldest", json_integer((json_int_t)a->oldest))) &&
        (!a->kind[0] || put(root, "kind", json_string(a->kind))) &&
        (!a->site_name[0] || put(root, "site_name", json_string(a->site_name))) &&
        (!a->room_name[0] || put(root, "room_name", json_string(a->room_name))) &&
        (!a->bed_name[0] || put(root, "bed_name", json_string(a->bed_name))) &&
        (!a->resident_name[0] || put(root, "resident_name", json_string(a->resident_name))) &&
        (!a->device_name[0] || put(root, "device_name", json_string(a->device_name))) &&
        (!a->located_ms || put(root, "located_ms", json_integer(a->located_ms)));
    if (!ok) {
        json_decref(root);
        return NULL;
    }
    /* The value is the alert's one real: written with 15 significant digits
     * (1250.4 stays "1250.4"), or 16 or 17 where that is what it takes to
     * read back as the same double. Fewer would not only lose precision: a
     * value near DBL_MAX rounded to 15 digits overflows, and the decoder
     * would refuse what the encoder wrote. */
    int prec = 15;
    while (a->has_value && prec < 17) {
        char num[40];
        snprintf(num, sizeof num, "%.*g", prec, a->value);
        if (strtod(num, NULL) == a->value)
            break;
        prec++;
    }
    char *out = json_dumps(root, JSON_COMPACT | (size_t)JSON_REAL_PRECISION(prec));
    json_decref(root);
    return out;
}

/* duration_ms belongs to shelve alone, and shelve needs one. */
static bool duration_ok(int action, int64_t ms)
{
    return action == CH_CMD_SHELVE ? ms > 0 && ms <= CH_SHELVE_MAX_MS : ms == 0;
}

static int decode_command(const json_t *root, struct ch_command *out, char *err, size_t errn)
{
    static const char *const keys[] = {"schema", "action",      "alarm_id", "by",
                                       "ts_ms",  "duration_ms", "role"};
    struct dec d = {err, errn};
    if (!json_is_object(root))
        return fail(&d, "payload: not a JSON object");
    int rc = check_keys(&d, root, "", keys, CH_ARRAY_LEN(keys));
    if (!rc)
        rc = get_schema(&d, root, CH_SCHEMA_COMMAND);
    if (!rc)
        rc = get_enum(&d, root, "action", action_names, CH_ARRAY_LEN(action_names), &out->action);
    if (!rc)
        rc = get_alarm_id(&d, root, "alarm_id", true, out->alarm_id);
    if (rc)
        return rc;
    if (!json_object_get(root, "by"))
        return fail(&d, "by: missing");
    if ((rc = get_text(&d, root, "by", CH_ID_MAX, true, out->by)) != 0)
        return rc;
    if (!out->by[0])
        return fail(&d, "by: must not be empty (who asks)");
    if ((rc = get_ms(&d, root, "ts_ms", true, &out->ts_ms)) != 0)
        return rc;
    if (json_object_get(root, "role") &&
        (rc = get_enum(&d, root, "role", role_names, CH_ARRAY_LEN(role_names), &out->role)) != 0)
        return rc;
    const json_t *v = json_object_get(root, "duration_ms");
    if (out->action != CH_CMD_SHELVE) {
        if (v)
            return fail(&d, "duration_ms: only for action 'shelve'");
        return 0;
    }
    if (!v)
        return fail(&d, "duration_ms: missing (action 'shelve' needs one)");
    if (!as_int(v, 1, CH_SHELVE_MAX_MS, &out->duration_ms))
        return fail(&d, "duration_ms: not an integer in 1..%" PRId64 " (at most 7 days)",
                    (int64_t)CH_SHELVE_MAX_MS);
    return 0;
}

int ch_command_from_json(const json_t *root, struct ch_command *out, char *err, size_t errn)
{
    memset(out, 0, sizeof *out);
    int rc = decode_command(root, out, err, errn);
    if (rc)
        memset(out, 0, sizeof *out);
    return rc;
}

int ch_command_decode(const char *buf, size_t len, struct ch_command *out, char *err, size_t errn)
{
    memset(out, 0, sizeof *out);
    json_t *root = ch_json_parse(buf, len, err, errn);
    if (!root)
        return CH_EINVAL;
    int rc = ch_command_from_json(root, out, err, errn);
    json_decref(root);
    return rc;
}

char *ch_command_encode(const struct ch_command *c)
{
    if (c->action < 0 || (size_t)c->action >= CH_ARRAY_LEN(action_names) || c->role < 0 ||
        (size_t)c->role >= CH_ARRAY_LEN(role_names) || !alarm_id_ok(c->alarm_id, CH_ALARM_ID_MAX) ||
        !terminated(c->by, CH_ID_MAX) || !by_ok(c->by, strlen(c->by)) || !ts_ok(c->ts_ms) ||
        !duration_ok(c->action, c->duration_ms))
        return NULL;
    json_t *root = json_object();
    bool ok =
        put(root, "schema", json_string(CH_SCHEMA_COMMAND)) &&
        put(root, "action", json_string(action_names[c->action])) &&
        put(root, "alarm_id", json_string(c->alarm_id)) && put(root, "by", json_string(c->by)) &&
        put(root, "ts_ms", json_integer(c->ts_ms)) &&
        (c->action != CH_CMD_SHELVE || put(root, "duration_ms", json_integer(c->duration_ms))) &&
        (c->role == CH_ROLE_STAFF || put(root, "role", json_string(role_names[c->role])));
    return dump(root, ok);
}

/* ---- numbers added to stored messages ------------------------------------ */

/* json (an object, len bytes) with the text of `fields` ("\"k\":1,\"j\":2",
 * may be empty) added as its first members. */
static char *splice_front(const char *json, size_t len, const char *fields)
{
    size_t i = 0;
    while (i < len && (json[i] == ' ' || json[i] == '\t' || json[i] == '\n' || json[i] == '\r'))
        i++;
    if (i >= len || json[i] != '{')
        return NULL;
    size_t j = i + 1; /* is the object empty? then no comma after the fields */
    while (j < len && (json[j] == ' ' || json[j] == '\t' || json[j] == '\n' || json[j] == '\r'))
        j++;
    bool empty = j < len && json[j] == '}';
    size_t f = strlen(fields);
    char *out = ch_xmalloc(len + f + 3);
    size_t n = 0;
    out[n++] = '{';
    memcpy(out + n, fields, f);
    n += f;
    if (f && !empty)
        out[n++] = ',';
    memcpy(out + n, json + i + 1, len - i - 1);
    n += len - i - 1;
    out[n] = '\0';
    return out;
}

/* "\"ka\":a,\"kb\":b" with the zeros left out, into buf. */
static void number_fields(char *buf, size_t n, const char *ka, uint64_t a, const char *kb,
                          uint64_t b)
{
    int w = 0;
    buf[0] = '\0';
    if (a)
        w = snprintf(buf, n, "\"%s\":%llu", ka, (unsigned long long)a);
    if (b && w >= 0 && (size_t)w < n)
        snprintf(buf + w, n - (size_t)w, "%s\"%s\":%llu", w ? "," : "", kb, (unsigned long long)b);
}

char *ch_alert_numbered(const char *json, size_t len, uint64_t seq, uint64_t oldest)
{
    if (seq > CH_NUMBER_MAX || oldest > CH_NUMBER_MAX)
        return NULL;
    char f[96];
    number_fields(f, sizeof f, "seq", seq, "oldest", oldest);
    return splice_front(json, len, f);
}

char *ch_status_numbered(const char *json, size_t len, uint64_t oldest_reading,
                         uint64_t oldest_alert)
{
    if (oldest_reading > CH_NUMBER_MAX || oldest_alert > CH_NUMBER_MAX)
        return NULL;
    char f[96];
    number_fields(f, sizeof f, "oldest_reading", oldest_reading, "oldest_alert", oldest_alert);
    return splice_front(json, len, f);
}

/* ---- acknowledgements ----------------------------------------------------- */

static bool ranges_ok(const struct ch_range *r, size_t n)
{
    if (n > CH_ACK_MAX_RANGES)
        return false;
    for (size_t i = 0; i < n; i++)
        if (r[i].lo < 1 || r[i].lo > r[i].hi || r[i].hi > CH_NUMBER_MAX)
            return false;
    return true;
}

static json_t *ranges_json(const struct ch_range *r, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("[II]", (json_int_t)r[i].lo, (json_int_t)r[i].hi));
    return arr;
}

char *ch_ack_encode(const struct ch_ack *a)
{
    if (!id_ok(a->site, CH_ID_MAX) || !id_ok(a->gateway, CH_ID_MAX) ||
        !terminated(a->hub, CH_ID_MAX) || (a->hub[0] && !id_ok(a->hub, CH_ID_MAX)) ||
        !ts_ok(a->ts_ms) || !ranges_ok(a->readings, a->n_readings) ||
        !ranges_ok(a->alerts, a->n_alerts))
        return NULL;
    json_t *root = json_object();
    bool ok = put(root, "schema", json_string(CH_SCHEMA_ACK)) &&
              put(root, "site", json_string(a->site)) &&
              put(root, "gateway", json_string(a->gateway)) &&
              (!a->hub[0] || put(root, "hub", json_string(a->hub))) &&
              put(root, "ts", json_integer(a->ts_ms)) &&
              put(root, "readings", ranges_json(a->readings, a->n_readings)) &&
              put(root, "alerts", ranges_json(a->alerts, a->n_alerts));
    return dump(root, ok);
}

static int decode_ranges(struct dec *d, const json_t *root, const char *key, struct ch_range *out,
                         size_t *n)
{
    const json_t *arr;
    int rc = get_array(d, root, key, true, 0, CH_ACK_MAX_RANGES, &arr);
    if (rc)
        return rc;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const json_t *r = json_array_get(arr, i);
        int64_t lo, hi;
        if (!json_is_array(r) || json_array_size(r) != 2 ||
            !as_int(json_array_get(r, 0), 1, (int64_t)CH_NUMBER_MAX, &lo) ||
            !as_int(json_array_get(r, 1), lo, (int64_t)CH_NUMBER_MAX, &hi))
            return fail(d, "%s[%zu]: not [lo, hi] with 1 <= lo <= hi <= %" PRIu64, key, i,
                        CH_NUMBER_MAX);
        out[i].lo = (uint64_t)lo;
        out[i].hi = (uint64_t)hi;
        (*n)++;
    }
    return 0;
}

int ch_ack_decode(const char *buf, size_t len, struct ch_ack *out, char *err, size_t errn)
{
    static const char *const keys[] = {"schema", "site",     "gateway", "hub",
                                       "ts",     "readings", "alerts"};
    struct dec d = {err, errn};
    memset(out, 0, sizeof *out);
    json_t *root = ch_json_parse(buf, len, err, errn);
    if (!root)
        return CH_EINVAL;
    int rc = json_is_object(root) ? 0 : fail(&d, "payload: not a JSON object");
    if (!rc)
        rc = check_keys(&d, root, "", keys, CH_ARRAY_LEN(keys));
    if (!rc)
        rc = get_schema(&d, root, CH_SCHEMA_ACK);
    if (!rc)
        rc = get_id(&d, root, "", "site", true, false, out->site);
    if (!rc)
        rc = get_id(&d, root, "", "gateway", true, false, out->gateway);
    if (!rc)
        rc = get_id(&d, root, "", "hub", false, false, out->hub);
    if (!rc)
        rc = get_ts(&d, root, "", true, &out->ts_ms);
    if (!rc)
        rc = decode_ranges(&d, root, "readings", out->readings, &out->n_readings);
    if (!rc)
        rc = decode_ranges(&d, root, "alerts", out->alerts, &out->n_alerts);
    json_decref(root);
    if (rc)
        memset(out, 0, sizeof *out);
    return rc;
}

/* ---- topics ----------------------------------------------------------- */

#define TOPIC_PREFIX "carehub/v1/"

bool ch_topic(char *buf, size_t n, const char *site, const char *gateway, const char *kind)
{
    if (!ch_valid_id(site) || !ch_valid_id(gateway) || !kind[0] || strpbrk(kind, "+#"))
        return false;
    int w = snprintf(buf, n, TOPIC_PREFIX "%s/%s/%s", site, gateway, kind);
    return w > 0 && (size_t)w < n;
}

bool ch_ack_topic(char *buf, size_t n, const char *site, const char *gateway)
{
    if (!ch_valid_id(site) || !ch_valid_id(gateway))
        return false;
    int w = snprintf(buf, n, "carehub/ack/v1/%s/%s", site, gateway);
    return w > 0 && (size_t)w < n;
}

/* Copies the level at *p up to the next '/' into out if it is an id; moves *p past the '/'. */
static bool topic_level(const char **p, char out[CH_ID_MAX])
{
    const char *slash = strchr(*p, '/');
    if (!slash || slash == *p || (size_t)(slash - *p) >= CH_ID_MAX)
        return false;
    size_t len = (size_t)(slash - *p);
    memcpy(out, *p, len);
    out[len] = '\0';
    *p = slash + 1;
    return ch_valid_id(out);
}

bool ch_topic_parse(const char *topic, char site[CH_ID_MAX], char gateway[CH_ID_MAX],
                    const char **kind)
{
    const char *p = topic;
    if (strncmp(p, TOPIC_PREFIX, sizeof TOPIC_PREFIX - 1) != 0)
        return false;
    p += sizeof TOPIC_PREFIX - 1;
    /* the kind is what ch_topic() would write: no wildcards, nothing empty */
    if (!topic_level(&p, site) || !topic_level(&p, gateway) || !*p || strpbrk(p, "+#"))
        return false;
    *kind = p;
    return true;
}
