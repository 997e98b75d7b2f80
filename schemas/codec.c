/* The wire codec: jansson underneath, the rules of telemetry.schema.json and
 * status.schema.json on top. Every rule lives in one predicate below (id_ok,
 * room_ok, unit_ok, ...) used by both directions, so an encoder never emits
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
                                       "ts",     "historical", "readings"};
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
    static const char *const keys[] = {"id", "profile", "bus", "room"};
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
    return rc;
}

static int decode_status(const json_t *root, struct ch_status *out, char *err, size_t errn)
{
    static const char *const keys[] = {"schema", "site",    "gateway", "online",
                                       "ts",     "version", "boot_id", "devices"};
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
                        bool historical, const char *readings_json, size_t len)
{
    if (!id_ok(site, CH_ID_MAX) || !id_ok(gateway, CH_ID_MAX) || seq > INT64_MAX || !ts_ok(ts_ms) ||
        len < 2 || readings_json[0] != '[' || readings_json[len - 1] != ']')
        return NULL;
    /* ids are [A-Za-z0-9_.-]: nothing to escape, so the envelope is plain text
     * around the readings, which were encoded (and checked) when spooled */
    static const char fmt[] = "{\"schema\":\"" CH_SCHEMA_TELEMETRY "\",\"site\":\"%s\","
                              "\"gateway\":\"%s\",\"seq\":%llu,\"ts\":%lld,"
                              "\"historical\":%s,\"readings\":";
    int head = snprintf(NULL, 0, fmt, site, gateway, (unsigned long long)seq, (long long)ts_ms,
                        historical ? "true" : "false");
    if (head < 0)
        return NULL;
    char *out = ch_xmalloc((size_t)head + len + 2);
    snprintf(out, (size_t)head + 1, fmt, site, gateway, (unsigned long long)seq, (long long)ts_ms,
             historical ? "true" : "false");
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
    char *out = ch_telemetry_wrap(t->site, t->gateway, t->seq, t->ts_ms, t->historical, readings,
                                  strlen(readings));
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
        (s->online && (s->ts_ms == 0 || vlen == 0 || blen == 0)))
        return NULL;
    json_t *root = json_object();
    bool ok = put(root, "schema", json_string(CH_SCHEMA_STATUS)) &&
              put(root, "site", json_string(s->site)) &&
              put(root, "gateway", json_string(s->gateway)) &&
              put(root, "online", json_boolean(s->online)) &&
              (s->ts_ms == 0 || put(root, "ts", json_integer(s->ts_ms))) &&
              (vlen == 0 || put(root, "version", json_string(s->version))) &&
              (blen == 0 || put(root, "boot_id", json_string(s->boot_id)));
    if (ok && (s->online || s->n_devices > 0)) {
        json_t *devices = json_array();
        for (size_t i = 0; ok && i < s->n_devices; i++) {
            const struct ch_device_info *dv = &s->devices[i];
            json_t *o = json_object();
            ok = id_ok(dv->id, CH_ID_MAX) && id_ok(dv->profile, CH_ID_MAX) &&
                 id_ok(dv->bus, CH_ID_MAX) && room_ok(dv->room) &&
                 put(o, "id", json_string(dv->id)) && put(o, "profile", json_string(dv->profile)) &&
                 put(o, "bus", json_string(dv->bus)) &&
                 (!dv->room[0] || put(o, "room", json_string(dv->room)));
            ok = ok && json_array_append(devices, o) == 0;
            json_decref(o);
        }
        ok = ok && put(root, "devices", json_incref(devices));
        json_decref(devices);
    }
    return dump(root, ok);
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
