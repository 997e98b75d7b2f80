/* GET /api/v1/series (a chart's means per interval) and /api/v1/export
 * (telemetry or alarm transitions of a site as CSV or JSON, streamed). A
 * regulator reads only the fields its allow-list grants (may_read; a
 * room label too); exported alarms are shown as privacy() shows them; CSV
 * cells that a spreadsheet would evaluate are neutralised (ex_csv). */
#include "api_internal.h"
#include "hubcfg.h"
#include "err.h"
#include "lineproto.h"
#include "log.h"
#include "retention.h"
#include "util.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#define SERIES_POINTS    2000
#define HOUR_MS          3600000LL
#define EXPORT_WINDOW_MS 3600000LL /* an export reads InfluxDB an hour at a time */

/* ---- series (charts) ---------------------------------------------------------------- */

/* Where a chart of [from, to) in steps of *every reads the hourly history
 * (retention.h) instead of the readings: before the returned time (from:
 * nowhere). When the readings' policy has lost part of the range, or the
 * steps are whole hours anyway, the history serves what it holds (up to
 * where the keeper got; without a keeper here, up to the policy's
 * horizon), in steps made whole hours; each step is read from one source. */
static int64_t hourly_cut(struct api *a, const char *meas, int64_t from, int64_t to, int64_t *every)
{
    int64_t raw_ms = a->cfg->influx.retention.raw_ms;
    if (!raw_ms || influx_kept_long(meas)) /* the history has readings only */
        return from;
    int64_t horizon = ch_now_ms() - raw_ms;
    if (from >= horizon && (*every < HOUR_MS || *every % HOUR_MS))
        return from;
    *every = ch_ceil_to(*every, HOUR_MS);
    int64_t done = retention_through(atomic_load(&a->retention));
    int64_t cut = done > horizon ? done : ch_ceil_to(horizon, HOUR_MS);
    cut = cut / *every * *every;
    return cut < from ? from : cut > to ? to : cut;
}

/* One statement of a chart: the means of metric over [from, to) from the
 * readings, or (hourly) from the hourly history's means. */
static void series_statement(struct api *a, struct qb *q, const char *site, const char *meas,
                             const char *metric, bool hourly, bool room, int64_t from, int64_t to,
                             int64_t every)
{
    char field[CH_ID_MAX + 8];
    snprintf(field, sizeof field, "%s%s", hourly ? "mean_" : "", metric);
    if (q->len)
        qb_add(q, "; ");
    qb_add(q, "SELECT mean(");
    qb_ident(q, field);
    qb_add(q, ") FROM ");
    if (hourly) {
        qb_add(q, "\"%s\".", INFLUX_RP_HOURLY);
        qb_ident(q, meas);
    } else {
        qb_readings(q, &a->cfg->influx, meas);
    }
    qb_add(q, " WHERE \"site\" = ");
    qb_str(q, site);
    where_time(q, from, to);
    qb_add(q, " GROUP BY time(%" PRId64 "ms), %s\"device\" fill(none)", every,
           room ? "\"room\", " : "");
}

enum MHD_Result h_series(struct api *a, struct req *r, struct MHD_Connection *c)
{
    static const char *const allowed[] = {"site", "measurement", "metric", "from",
                                          "to",   "every",       NULL};
    enum MHD_Result ret = MHD_NO;
    const char *site;
    int64_t from, to;
    if (!site_range_params(r, c, allowed, true, &site, &from, &to, &ret))
        return ret;
    const char *meas = arg(c, "measurement") ? arg(c, "measurement") : "environment";
    const char *metric = arg(c, "metric");
    if (!ch_valid_id(meas))
        return fail(r, c, 400, "parameter 'measurement': not an identifier");
    if (!metric || !ch_valid_id(metric))
        return fail(r, c, 400, "parameter 'metric' is required: an identifier");
    int64_t every = 0;
    const char *es = arg(c, "every");
    long long secs;
    if (es && !ch_parse_int(es, &secs) && secs > 0 && secs < 400LL * 86400)
        every = secs * 1000; /* bare seconds */
    else if (es && (ch_parse_duration_ms(es, &every) || every < 1000))
        return fail(r, c, 400, "parameter 'every': seconds, or a duration of at least 1s (\"5m\")");
    int64_t min_every = (to - from + SERIES_POINTS - 1) / SERIES_POINTS;
    if (every < min_every)
        every = min_every < 1000 ? 1000 : min_every;
    if (!may_read(a, &r->who, meas, metric))
        return fail(r, c, 403, "%s of %s: this token has no grant for that series", metric, meas);
    bool room = may_read(a, &r->who, meas, "room"); /* a wearable's is where it was */
    int64_t cut = hourly_cut(a, meas, from, to, &every);
    struct qb q;
    qb_init(&q);
    if (cut > from) /* statement 0: the history's hours */
        series_statement(a, &q, site, meas, metric, true, room, from, cut, every);
    if (cut < to) /* then the readings */
        series_statement(a, &q, site, meas, metric, false, room, cut, to, every);
    json_t *res;
    char err[512];
    int rc = influxq_run_qb(&a->q, &q, &res, err, sizeof err);
    if (rc)
        return fail_query(r, c, rc, err);
    /* one series per room and device, the history's points before the readings' */
    json_t *out = json_array(), *by_key = json_object();
    for (size_t st = 0; st < json_array_size(res); st++) {
        size_t i;
        json_t *s;
        json_array_foreach(influxq_series(res, st), i, s)
        {
            json_t *tags = json_object_get(s, "tags");
            const char *rm = json_string_value(json_object_get(tags, "room")) ?: "";
            const char *dev = json_string_value(json_object_get(tags, "device")) ?: "";
            char key[2 * CH_ID_MAX + 2];
            snprintf(key, sizeof key, "%s|%s", rm, dev);
            json_t *pts = json_object_get(by_key, key);
            if (!pts) {
                pts = json_array();
                json_object_set(by_key, key, pts);
                json_array_append_new(
                    out, json_pack("{s:s,s:s,s:o}", "room", rm, "device", dev, "points", pts));
            }
            size_t j;
            json_t *row;
            json_array_foreach(json_object_get(s, "values"), j, row)
            {
                json_t *v = json_array_get(row, 1);
                if (!json_is_number(v))
                    continue;
                json_array_append_new(pts,
                                      json_pack("[I,f]", int_at(row, 0),
                                                round(json_number_value(v) * 1000.0) / 1000.0));
                r->rows++;
            }
        }
    }
    json_decref(by_key);
    json_decref(res);
    json_t *reply = json_pack("{s:s,s:s,s:I,s:o}", "measurement", meas, "metric", metric, "every_s",
                              (json_int_t)(every / 1000), "series", out);
    if (cut > from) /* the hourly means before this */
        json_object_set_new(reply, "hourly_before", json_integer(cut));
    return reply_json(r, c, 200, reply);
}

/* ---- export (streamed) ----------------------------------------------------------------- */

/* An export reads InfluxDB one window at a time and hands libmicrohttpd the
 * rows of that window; memory stays at one window of one site whatever the
 * range. Each window is a query, paid for from the token's rate as the
 * export goes (pay: a 400-day export is 9,600 of them, not one request),
 * and a token runs at most api.max_exports_per_token exports and summaries
 * at once (heavy_enter). */
struct export
{
    struct api *a;
    struct req *r; /* for the row count (the request outlives the response) */
    struct who who;
    char site[CH_ID_MAX];
    bool alarms, csv;
    int64_t from, to, cursor;
    char *meas; /* telemetry: the measurements to read, as a FROM list */
    char *buf;
    size_t len, off, cap;
    bool started, done;
};

static void ex_put(struct export *e, const char *s, size_t n)
{
    if (e->len + n + 1 > e->cap) {
        size_t cap = e->cap ? e->cap : 65536;
        while (cap < e->len + n + 1)
            cap *= 2;
        e->buf = ch_xrealloc(e->buf, cap);
        e->cap = cap;
    }
    memcpy(e->buf + e->len, s, n);
    e->len += n;
}

static void ex_puts(struct export *e, const char *s)
{
    ex_put(e, s, strlen(s));
}

/* Whether a spreadsheet could take text s for a formula (OWASP, "CSV
 * injection"): it starts with = + - @ (or their full-width forms, which
 * some spreadsheets read as these), tab or carriage return, after any
 * spaces. "-2+3+cmd|..." is one: a text that looks like a negative number
 * is still text. */
static bool csv_formula(const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    for (;;) { /* spaces: ASCII, no-break (C2 A0), ideographic (E3 80 80) */
        if (u[0] == ' ')
            u++;
        else if (u[0] == 0xC2 && u[1] == 0xA0)
            u += 2;
        else if (u[0] == 0xE3 && u[1] == 0x80 && u[2] == 0x80)
            u += 3;
        else
            break;
    }
    if (u[0] && strchr("=+-@\t\r\n", u[0]))
        return true;
    /* U+FF1D = EF BC 9D, U+FF0B + EF BC 8B, U+FF0D - EF BC 8D, U+FF20 @ EF BC A0 */
    return u[0] == 0xEF && u[1] == 0xBC &&
           (u[2] == 0x9D || u[2] == 0x8B || u[2] == 0x8D || u[2] == 0xA0);
}

/* Whether s is a number as the export writes them (lp_format_float, or
 * whole milliseconds). */
static bool csv_number(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    return s[0] && s[0] != ' ' && !*end && isfinite(v);
}

/* A CSV cell: in a numeric column a number as it is; any other text quoted
 * when it holds a comma, quote or line break, and when a spreadsheet would
 * evaluate it, quoted and prefixed with ' (shown as text, not run). */
static void ex_csv(struct export *e, const char *s, bool numeric, bool last)
{
    bool formula = !(numeric && csv_number(s)) && csv_formula(s);
    bool quote = formula || strpbrk(s, ",\"\r\n") != NULL;
    if (quote)
        ex_puts(e, "\"");
    if (formula)
        ex_puts(e, "'");
    for (const char *p = s; *p; p++) {
        if (*p == '"')
            ex_puts(e, "\"");
        ex_put(e, p, 1);
    }
    if (quote)
        ex_puts(e, "\"");
    ex_puts(e, last ? "\r\n" : ",");
}

static void iso_time(int64_t ms, char out[32])
{
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

static const char *const telemetry_cols[] = {"time", "measurement", "gateway", "device",
                                             "room", "quality",     "metric",  "value"};
static const char *const alarm_cols[] = {
    "time",     "site",  "gateway",   "alarm_id",  "event",         "state",
    "priority", "rule",  "device",    "room",      "bed",           "resident",
    "metric",   "value", "message",   "raised_ms", "acked_ms",      "cleared_ms",
    "acked_by", "kind",  "room_name", "bed_name",  "resident_name", "device_name"};

static void ex_row_begin(struct export *e)
{
    if (!e->csv)
        ex_puts(e, e->r->rows ? ",\n" : "\n");
    e->r->rows++;
}

/* One row given as parallel names and text values (NULL: null). */
static void ex_row(struct export *e, const char *const *cols, const char **vals, const bool *num,
                   size_t n)
{
    ex_row_begin(e);
    if (e->csv) {
        for (size_t i = 0; i < n; i++)
            ex_csv(e, vals[i] ? vals[i] : "", num && num[i], i + 1 == n);
        return;
    }
    json_t *o = json_object();
    for (size_t i = 0; i < n; i++) {
        json_t *v = !vals[i]        ? json_null()
                    : num && num[i] ? json_real(strtod(vals[i], NULL))
                                    : json_string(vals[i]);
        json_object_set_new(o, cols[i], v);
    }
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    ex_puts(e, s);
    free(s);
}

static void ex_telemetry_window(struct export *e, json_t *res)
{
    size_t i;
    json_t *s;
    json_array_foreach(influxq_series(res, 0), i, s)
    {
        const char *meas = json_string_value(json_object_get(s, "name"));
        json_t *cols = json_object_get(s, "columns");
        int ct = influxq_col(s, "time"), cg = influxq_col(s, "gateway"),
            cd = influxq_col(s, "device"), cr = influxq_col(s, "room"),
            cq = influxq_col(s, "quality");
        size_t j;
        json_t *row;
        json_array_foreach(json_object_get(s, "values"), j, row)
        {
            char ts[32];
            iso_time(int_at(row, ct), ts);
            size_t k;
            json_t *col;
            json_array_foreach(cols, k, col)
            {
                const char *name = json_string_value(col);
                json_t *v = json_array_get(row, k);
                if ((int)k == ct || (int)k == cg || (int)k == cd || (int)k == cr || (int)k == cq ||
                    !json_is_number(v) || !strcmp(name, "seq") || !strcmp(name, "site"))
                    continue;
                if (!may_read(e->a, &e->who, meas, name))
                    continue;
                const char *room = may_read(e->a, &e->who, meas, "room") ? str_at(row, cr) : "";
                char val[LP_FLOAT_MAX];
                lp_format_float(val, json_number_value(v));
                const char *vals[] = {
                    ts, meas, str_at(row, cg), str_at(row, cd), room, str_at(row, cq), name, val};
                static const bool num[] = {0, 0, 0, 0, 0, 0, 0, 1};
                ex_row(e, telemetry_cols, vals, num, CH_ARRAY_LEN(vals));
            }
        }
    }
}

static void ex_alarm_window(struct export *e, json_t *res)
{
    size_t i;
    json_t *s;
    json_array_foreach(influxq_series(res, 0), i, s)
    {
        size_t j;
        json_t *row;
        json_array_foreach(json_object_get(s, "values"), j, row)
        {
            struct ch_alert t;
            row_to_alert(s, row, &t);
            char ts[32], val[LP_FLOAT_MAX] = "", rms[24] = "", ams[24] = "", cms[24] = "";
            iso_time(t.ts_ms, ts);
            struct shown sh;
            privacy(e->a, &t, &e->who, &sh);
            if (sh.has_value)
                lp_format_float(val, sh.value);
            if (t.raised_ms)
                snprintf(rms, sizeof rms, "%" PRId64, t.raised_ms);
            if (t.acked_ms)
                snprintf(ams, sizeof ams, "%" PRId64, t.acked_ms);
            if (t.cleared_ms)
                snprintf(cms, sizeof cms, "%" PRId64, t.cleared_ms);
            const char *resident = sh.resident, *message = sh.message, *by = sh.by;
            const char *vals[] = {ts,
                                  t.site,
                                  t.gateway,
                                  t.alarm_id,
                                  ch_alarm_event_name(t.event),
                                  ch_alarm_state_name(t.state),
                                  ch_priority_name(t.priority),
                                  t.rule,
                                  t.device,
                                  t.room,
                                  t.bed,
                                  resident,
                                  sh.metric,
                                  sh.has_value ? val : NULL,
                                  message,
                                  rms[0] ? rms : NULL,
                                  ams[0] ? ams : NULL,
                                  cms[0] ? cms : NULL,
                                  by,
                                  t.kind[0] ? t.kind : "other",
                                  t.room_name,
                                  t.bed_name,
                                  sh.resident_name,
                                  sh.device_name};
            static const bool num[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                       0, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0};
            ex_row(e, alarm_cols, vals, num, CH_ARRAY_LEN(vals));
        }
    }
}

/* Reads the next window into the buffer. Returns false when the export
 * cannot go on (the stream then ends with an error: the client sees a
 * truncated download, not a complete-looking one). */
static bool ex_next_window(struct export *e)
{
    int64_t end = e->cursor + EXPORT_WINDOW_MS < e->to ? e->cursor + EXPORT_WINDOW_MS : e->to;
    int paid = pay(e->a, e->who.name, 1.0, INT64_MAX, NULL);
    if (paid) {
        LOGW(MOD, e->site, "export of '%s' stopped at %" PRId64 ": %s", e->who.name, e->cursor,
             paid == CH_ENOTFOUND ? "its token was revoked" : "the API is stopping");
        return false;
    }
    struct qb q;
    qb_init(&q);
    if (e->alarms)
        qb_add(&q, "SELECT * FROM \"alarm\" WHERE \"site\" = ");
    else
        qb_add(&q, "SELECT * FROM %s WHERE \"site\" = ", e->meas);
    qb_str(&q, e->site);
    where_time(&q, e->cursor, end);
    json_t *res;
    char err[512];
    int rc = influxq_run_qb(&e->a->q, &q, &res, err, sizeof err);
    if (rc) {
        LOGW(MOD, e->site, "export stopped at %" PRId64 ": %s", e->cursor, err);
        return false;
    }
    if (e->alarms)
        ex_alarm_window(e, res);
    else
        ex_telemetry_window(e, res);
    json_decref(res);
    e->cursor = end;
    return true;
}

static ssize_t ex_read(void *cls, uint64_t pos, char *out, size_t max)
{
    struct export *e = cls;
    (void)pos;
    while (e->off == e->len) {
        e->off = e->len = 0;
        if (e->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (!e->started) {
            e->started = true;
            if (e->csv) {
                const char *const *cols = e->alarms ? alarm_cols : telemetry_cols;
                size_t n = e->alarms ? CH_ARRAY_LEN(alarm_cols) : CH_ARRAY_LEN(telemetry_cols);
                for (size_t i = 0; i < n; i++)
                    ex_csv(e, cols[i], false, i + 1 == n);
            } else {
                ex_puts(e, "[");
            }
            continue;
        }
        if (e->cursor >= e->to || !e->meas) {
            if (!e->csv)
                ex_puts(e, "\n]\n");
            e->done = true;
            continue;
        }
        if (!ex_next_window(e)) {
            e->r->status = 500;
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    size_t n = e->len - e->off < max ? e->len - e->off : max;
    memcpy(out, e->buf + e->off, n);
    e->off += n;
    return (ssize_t)n;
}

static void ex_free(void *cls)
{
    struct export *e = cls;
    free(e->buf);
    free(e->meas);
    free(e->who.sites);
    free(e);
}

/* The measurements a telemetry export reads: those of the site but the
 * hub's own and the alarms, and for a regulator only those with a field it
 * may read (the fields are filtered per row). NULL: none. */
static char *export_measurements(struct api *a, const struct who *w, int *rc, char *err,
                                 size_t errn)
{
    json_t *res;
    *rc = influxq_run(&a->q, "SHOW MEASUREMENTS", &res, err, errn);
    if (*rc)
        return NULL;
    struct qb q;
    qb_init(&q);
    size_t i;
    json_t *s;
    json_array_foreach(influxq_series(res, 0), i, s)
    {
        size_t j;
        json_t *row;
        json_array_foreach(json_object_get(s, "values"), j, row)
        {
            const char *m = str_at(row, 0);
            if (!m[0] || !strcmp(m, "alarm") || !strncmp(m, "carehub_", 8))
                continue;
            if (!may_read_some(a, w, m))
                continue;
            if (q.len)
                qb_add(&q, ", ");
            qb_readings(&q, &a->cfg->influx, m);
        }
    }
    json_decref(res);
    return q.s;
}

enum MHD_Result h_export(struct api *a, struct req *r, struct MHD_Connection *c)
{
    static const char *const allowed[] = {"site", "from", "to", "data", "format", NULL};
    enum MHD_Result ret = MHD_NO;
    const char *site;
    int64_t from, to;
    if (!site_range_params(r, c, allowed, true, &site, &from, &to, &ret))
        return ret;
    const char *data = arg(c, "data") ? arg(c, "data") : "telemetry";
    const char *format = arg(c, "format") ? arg(c, "format") : "csv";
    if (strcmp(data, "telemetry") && strcmp(data, "alarms"))
        return fail(r, c, 400, "parameter 'data': telemetry or alarms");
    if (strcmp(format, "csv") && strcmp(format, "json"))
        return fail(r, c, 400, "parameter 'format': csv or json");
    if (!heavy_enter(a, r, c, &ret))
        return ret;
    struct export *e = ch_xcalloc(1, sizeof *e);
    e->a = a;
    e->r = r;
    e->who = r->who;
    e->who.sites = NULL; /* the site is checked already */
    e->who.n_sites = 0;
    ch_strlcpy(e->site, site, sizeof e->site);
    e->alarms = !strcmp(data, "alarms");
    e->csv = !strcmp(format, "csv");
    e->from = e->cursor = from;
    e->to = to;
    if (!e->alarms) {
        int rc;
        char err[512];
        e->meas = export_measurements(a, &r->who, &rc, err, sizeof err);
        if (rc) {
            ex_free(e);
            return fail_query(r, c, rc, err);
        }
    } else {
        e->meas = ch_xstrdup("\"alarm\"");
    }
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 65536, ex_read, e, ex_free);
    if (!resp) {
        ex_free(e);
        return MHD_NO;
    }
    char fname[256], disp[300], f1[32], f2[32];
    iso_time(from, f1);
    iso_time(to, f2);
    f1[10] = f2[10] = '\0';
    snprintf(fname, sizeof fname, "%s-%s-%s-%s.%s", site, data, f1, f2, format);
    snprintf(disp, sizeof disp, "attachment; filename=\"%s\"", fname);
    MHD_add_response_header(resp, "Content-Type",
                            e->csv ? "text/csv; charset=utf-8" : "application/json; charset=utf-8");
    MHD_add_response_header(resp, "Content-Disposition", disp);
    ch_http_security_headers(resp, true);
    r->status = 200;
    ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}
