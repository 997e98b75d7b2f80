/* The summary's figures kept per UTC day and hour, and the stale marks
 * ingest writes for them. See rollup.h for why and how a backlog is seen. */
#include "rollup.h"
#include "api_internal.h"
#include "codec.h"
#include "hubcfg.h"
#include "influx.h"
#include "lineproto.h"
#include "log.h"
#include "util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DAY_MS          86400000LL
#define HOUR_MS         3600000LL
#define ROLLUP_DATA_MAX 60000 /* InfluxDB 1.x keeps string fields up to 64 KiB */

/* ---- the stale marks (written by ingest) ------------------------------------------------ */

size_t rollup_mark_stale(struct lp_buf *b, const struct ch_telemetry *t, int64_t rollup_after_ms,
                         int64_t now_ms)
{
    if (!rollup_after_ms)
        return 0;
    int64_t kept_before = now_ms - rollup_after_ms; /* hours ending before may be kept */
    int64_t days[16];
    size_t n = 0;
    for (size_t i = 0; i < t->n_readings && n < CH_ARRAY_LEN(days); i++) {
        int64_t ts = t->readings[i].ts_ms;
        int64_t hour = ch_floor_to(ts, HOUR_MS);
        if (hour + HOUR_MS > kept_before)
            continue; /* its hour is not kept yet */
        int64_t day = ch_floor_to(ts, DAY_MS);
        bool seen = false;
        for (size_t k = 0; k < n && !seen; k++)
            seen = days[k] == day;
        if (!seen)
            days[n++] = day;
    }
    for (size_t k = 0; k < n; k++) {
        lp_begin(b, "carehub_rollup_stale");
        lp_tag(b, "site", t->site);
        /* a new id each time: a day summary names the mark it was computed
         * after, and any later mark (written behind the backlog's points)
         * differs from it */
        char id[33];
        ch_random_hex(id);
        lp_field_str(b, "mark", id);
        lp_field_int(b, "marked_ms", now_ms);
        lp_end(b, days[k]);
    }
    return n;
}

/* ---- the kept figures ------------------------------------------------------------------ */

static const char *tag_of(json_t *s, const char *key)
{
    const char *v = json_string_value(json_object_get(json_object_get(s, "tags"), key));
    return v ? v : "";
}

/* Adds readings numbered lo..hi (count of them stored) to gateway gw. */
static void gw_add(json_t *gws, const char *gw, json_int_t count, json_int_t lo, json_int_t hi)
{
    json_t *g = json_object_get(gws, gw);
    if (!g) {
        json_object_set_new(gws, gw, json_pack("[I,I,I]", count, lo, hi));
        return;
    }
    json_array_set_new(g, 0, json_integer(int_of(g, 0) + count));
    if (lo < int_of(g, 1))
        json_array_set_new(g, 1, json_integer(lo));
    if (hi > int_of(g, 2))
        json_array_set_new(g, 2, json_integer(hi));
}

static json_t *stats_new(void)
{
    return json_pack("{s:{},s:{},s:{}}", "env", "dev", "gw");
}

/* acc += add (figures of a window after acc's). */
static void stats_merge(json_t *acc, json_t *add)
{
    const char *key;
    json_t *v;
    json_t *env = json_object_get(acc, "env"), *dev = json_object_get(acc, "dev");
    json_object_foreach(json_object_get(add, "env"), key, v)
    {
        json_t *p = json_object_get(env, key);
        if (!p)
            json_object_set_new(env, key, json_pack("[I,I]", int_of(v, 0), int_of(v, 1)));
        else
            json_object_set_new(
                env, key,
                json_pack("[I,I]", int_of(p, 0) + int_of(v, 0), int_of(p, 1) + int_of(v, 1)));
    }
    json_object_foreach(json_object_get(add, "dev"), key, v) json_object_set_new(
        dev, key,
        json_integer(json_integer_value(json_object_get(dev, key)) + json_integer_value(v)));
    json_object_foreach(json_object_get(add, "gw"), key, v)
        gw_add(json_object_get(acc, "gw"), key, int_of(v, 0), int_of(v, 1), int_of(v, 2));
}

/* The figures of the span starting at t in by (an object: start -> figures),
 * made empty when new. */
static json_t *bucket(json_t *by, int64_t t)
{
    char at[24];
    snprintf(at, sizeof at, "%" PRId64, t);
    json_t *st = json_object_get(by, at);
    if (!st) {
        st = stats_new();
        json_object_set_new(by, at, st);
    }
    return st;
}

/* Reads the figures of [from, to) from InfluxDB in one request: *out is an
 * object of start (as text) -> figures, one per unit (GROUP BY time; an
 * empty span has none), or with unit 0 just from -> figures. */
static int window_stats(struct api *a, const char *site, int64_t from, int64_t to, int64_t unit,
                        json_t **out, char *err, size_t errn)
{
    const struct limit_def *lim = a->lims;
    size_t nl = a->n_lims;
    int64_t bucket_ms = a->cfg->api.device_timeout_ms;
    char by_time[48] = "";
    if (unit)
        snprintf(by_time, sizeof by_time, "time(%" PRId64 "ms), ", unit);
    struct qb q;
    qb_init(&q);
    /* statements 2i, 2i+1: the readings of limit i per room, all and within */
    for (size_t i = 0; i < nl; i++) {
        for (int within = 0; within < 2; within++) {
            qb_add(&q, "SELECT count(");
            qb_ident(&q, lim[i].metric);
            qb_add(&q, ") FROM ");
            qb_readings(&q, &a->cfg->influx, lim[i].measurement);
            qb_add(&q, " WHERE \"site\" = ");
            qb_str(&q, site);
            where_time(&q, from, to);
            if (within && lim[i].min > -1e300) {
                qb_add(&q, " AND ");
                qb_ident(&q, lim[i].metric);
                qb_add(&q, " >= %.17g", lim[i].min);
            }
            if (within && lim[i].max < 1e300) {
                qb_add(&q, " AND ");
                qb_ident(&q, lim[i].metric);
                qb_add(&q, " <= %.17g", lim[i].max);
            }
            qb_add(&q, " GROUP BY %s\"room\"; ", by_time);
        }
    }
    /* statement 2nl: per device, the intervals in which it sent something */
    qb_add(&q, "SELECT count(\"c\") FROM (SELECT count(\"seq\") AS \"c\" FROM ");
    qb_readings(&q, &a->cfg->influx, NULL);
    qb_add(&q, " WHERE \"site\" = ");
    qb_str(&q, site);
    where_time(&q, from, to);
    qb_add(&q,
           " GROUP BY time(%" PRId64 "ms), \"gateway\", \"device\") GROUP BY %s\"gateway\", "
           "\"device\"; ",
           bucket_ms, by_time);
    /* statement 2nl+1: per gateway and measurement, the reading numbers stored */
    qb_add(&q, "SELECT count(\"seq\"), min(\"seq\"), max(\"seq\") FROM ");
    qb_readings(&q, &a->cfg->influx, NULL);
    qb_add(&q, " WHERE \"site\" = ");
    qb_str(&q, site);
    where_time(&q, from, to);
    qb_add(&q, " GROUP BY %s\"gateway\"", by_time);
    json_t *res;
    int rc = influxq_run_qb(&a->q, &q, &res, err, errn);
    if (rc)
        return rc;
    json_t *by = json_object();
    char key[3 * CH_ID_MAX];
    size_t j, k;
    json_t *s, *row;
#define EACH_ROW(stmt)                                                                             \
    json_array_foreach(influxq_series(res, stmt), j, s)                                            \
        json_array_foreach(json_object_get(s, "values"), k, row)
    for (size_t i = 0; i < nl; i++) {
        for (int within = 0; within < 2; within++) {
            EACH_ROW(2 * i + (size_t)within)
            {
                json_int_t n = int_of(row, 1);
                if (n <= 0)
                    continue;
                json_t *env = json_object_get(bucket(by, unit ? int_at(row, 0) : from), "env");
                snprintf(key, sizeof key, "%s|%s", lim[i].metric, tag_of(s, "room"));
                json_t *pair = json_object_get(env, key);
                if (!pair) {
                    pair = json_pack("[i,i]", 0, 0);
                    json_object_set_new(env, key, pair);
                }
                json_array_set_new(pair, (size_t)within, json_integer(n));
            }
        }
    }
    EACH_ROW(2 * nl)
    {
        json_int_t n = int_of(row, 1);
        if (self_metrics_series(s) || n <= 0)
            continue;
        json_t *dev = json_object_get(bucket(by, unit ? int_at(row, 0) : from), "dev");
        snprintf(key, sizeof key, "%s/%s", tag_of(s, "gateway"), tag_of(s, "device"));
        if (n > json_integer_value(json_object_get(dev, key))) /* in two measurements: the busier */
            json_object_set_new(dev, key, json_integer(n));
    }
    EACH_ROW(2 * nl + 1)
    {
        const char *gw = tag_of(s, "gateway");
        if (!gw[0] || !json_is_integer(json_array_get(row, 2)))
            continue; /* an empty span */
        gw_add(json_object_get(bucket(by, unit ? int_at(row, 0) : from), "gw"), gw, int_of(row, 1),
               int_of(row, 2), int_of(row, 3));
    }
#undef EACH_ROW
    json_decref(res);
    *out = by;
    return 0;
}

/* The figures of [from, to) as one window: one request. */
static int window_total(struct api *a, const char *site, int64_t from, int64_t to, json_t **out,
                        char *err, size_t errn)
{
    json_t *by;
    int rc = window_stats(a, site, from, to, 0, &by, err, errn);
    if (rc)
        return rc;
    *out = json_incref(bucket(by, from));
    json_decref(by);
    return 0;
}

/* What a kept day's figures were computed with: they are recomputed when it
 * changes (limits, device_timeout). */
static void rollup_key(const struct api *a, char out[17])
{
    char buf[256];
    int n = snprintf(buf, sizeof buf, "v1 %" PRId64, a->cfg->api.device_timeout_ms);
    uint64_t h = ch_fnv1a(CH_FNV1A_INIT, buf, (size_t)n);
    for (size_t l = 0; l < a->n_lims; l++) {
        n = snprintf(buf, sizeof buf, ";%s %s %.17g %.17g", a->lims[l].measurement,
                     a->lims[l].metric, a->lims[l].min, a->lims[l].max);
        h = ch_fnv1a(h, buf, n < (int)sizeof buf ? (size_t)n : sizeof buf - 1);
    }
    snprintf(out, 17, "%016" PRIx64, h);
}

static void rollup_keep(struct api *a, const char *site, const char *span, int64_t start,
                        json_t *st, const char *key, const char *basis)
{
    char *data = json_dumps(st, JSON_COMPACT | JSON_SORT_KEYS);
    if (!data || strlen(data) > ROLLUP_DATA_MAX) {
        LOGW(MOD, site,
             "the figures of one %s are too large to keep (%zu bytes): computed each time", span,
             data ? strlen(data) : 0);
        free(data);
        return;
    }
    struct lp_buf b;
    lp_init(&b);
    lp_begin(&b, "carehub_rollup");
    lp_tag(&b, "site", site);
    lp_tag(&b, "span", span);
    lp_field_str(&b, "basis", basis);
    lp_field_int(&b, "computed_ms", ch_now_ms());
    lp_field_str(&b, "data", data);
    lp_field_str(&b, "key", key);
    lp_end(&b, start);
    free(data);
    size_t len, lines;
    char *lp = lp_take(&b, &len, &lines);
    if (lp)
        influx_enqueue_once(a->writer, INFLUX_RP_DEFAULT, lp, len, lines);
}

/* The figures of the whole spans [u0, u1) of unit (a day or an hour), added
 * to acc. One request reads what is kept and the days' marks; kept figures
 * are used while their basis is their day's mark; the others are read (a
 * day in one request each, hours together in one) and kept once the span
 * ended rollup_after ago. */
static int spans_stats(struct api *a, const char *site, int64_t u0, int64_t u1, int64_t unit,
                       json_t *acc, char *err, size_t errn)
{
    const char *span = unit == DAY_MS ? "day" : "hour";
    char key[17];
    rollup_key(a, key);
    struct qb q;
    qb_init(&q);
    qb_add(&q, "SELECT \"data\", \"key\", \"basis\" FROM \"carehub_rollup\" WHERE \"site\" = ");
    qb_str(&q, site);
    qb_add(&q, " AND \"span\" = ");
    qb_str(&q, span);
    where_time(&q, u0, u1);
    qb_add(&q, "; SELECT \"mark\" FROM \"carehub_rollup_stale\" WHERE \"site\" = ");
    qb_str(&q, site);
    where_time(&q, ch_floor_to(u0, DAY_MS), u1);
    json_t *res;
    int rc = influxq_run_qb(&a->q, &q, &res, err, errn);
    if (rc)
        return rc;
    /* spans from here back have lost readings to the raw policy
     * (retention.h): their kept figures are all there is, whatever they were
     * computed with, and figures computed now are not kept */
    int64_t raw_ms = a->cfg->influx.retention.raw_ms;
    int64_t horizon = raw_ms ? ch_now_ms() - raw_ms : INT64_MIN;
    json_t *kept = json_object(), *marks = json_object();
    char at[24];
    size_t i;
    json_t *row;
    json_t *rs = json_array_get(influxq_series(res, 0), 0);
    int cd = influxq_col(rs, "data"), ck = influxq_col(rs, "key"), cb = influxq_col(rs, "basis");
    json_array_foreach(json_object_get(rs, "values"), i, row)
    {
        if (strcmp(str_at(row, ck), key) && int_at(row, 0) >= horizon)
            continue; /* computed with other limits */
        snprintf(at, sizeof at, "%" PRId64, int_at(row, 0));
        json_object_set_new(kept, at, json_pack("[s,s]", str_at(row, cd), str_at(row, cb)));
    }
    json_t *ms = json_array_get(influxq_series(res, 1), 0);
    int cm = influxq_col(ms, "mark");
    json_array_foreach(json_object_get(ms, "values"), i, row)
    {
        snprintf(at, sizeof at, "%" PRId64, int_at(row, 0));
        json_object_set_new(marks, at, json_string(str_at(row, cm)));
    }
    json_decref(res);
    /* the figures of each span: kept ones, or null */
    json_t *have = json_object();
    int64_t lo = INT64_MAX, hi = 0; /* the spans to read */
    for (int64_t u = u0; u < u1; u += unit) {
        snprintf(at, sizeof at, "%" PRId64, ch_floor_to(u, DAY_MS));
        const char *mark = json_string_value(json_object_get(marks, at));
        snprintf(at, sizeof at, "%" PRId64, u);
        json_t *k = json_object_get(kept, at), *st = NULL;
        if (k &&
            (u < horizon || !strcmp(json_string_value(json_array_get(k, 1)), mark ? mark : "")))
            st = json_loads(json_string_value(json_array_get(k, 0)), 0, NULL);
        if (!st) {
            lo = u < lo ? u : lo;
            hi = u + unit;
        }
        json_object_set_new(have, at, st ? st : json_null());
    }
    int64_t keep_before = ch_now_ms() - a->cfg->rollup_after_ms;
    json_t *read = NULL;
    if (hi && unit != DAY_MS) /* the hours to read, in one request */
        rc = window_stats(a, site, lo, hi, unit, &read, err, errn);
    for (int64_t u = u0; u < u1 && !rc; u += unit) {
        snprintf(at, sizeof at, "%" PRId64, u);
        json_t *st = json_incref(json_object_get(have, at));
        if (json_is_null(st)) {
            json_decref(st);
            if (unit == DAY_MS)
                rc = window_total(a, site, u, u + unit, &st, err, errn);
            else
                st = json_incref(bucket(read, u));
            if (rc)
                break;
            char day[24];
            snprintf(day, sizeof day, "%" PRId64, ch_floor_to(u, DAY_MS));
            const char *mark = json_string_value(json_object_get(marks, day));
            if (u + unit <= keep_before && u >= horizon)
                rollup_keep(a, site, span, u, st, key, mark ? mark : "");
        }
        stats_merge(acc, st);
        json_decref(st);
    }
    json_decref(read);
    json_decref(have);
    json_decref(kept);
    json_decref(marks);
    return rc;
}

/* The figures of [s, e), shorter than a day: its whole hours from kept
 * figures, the partial hours at its ends read now. */
static int part_stats(struct api *a, const char *site, int64_t s, int64_t e, json_t *acc, char *err,
                      size_t errn)
{
    int64_t h0 = ch_ceil_to(s, HOUR_MS), h1 = ch_floor_to(e, HOUR_MS);
    if (h0 >= h1)
        h0 = h1 = e;
    int rc = h0 < h1 ? spans_stats(a, site, h0, h1, HOUR_MS, acc, err, errn) : 0;
    const int64_t part[2][2] = {{s, h0}, {h1, e}};
    for (int p = 0; p < 2 && !rc; p++) {
        if (part[p][0] >= part[p][1])
            continue;
        json_t *st;
        rc = window_total(a, site, part[p][0], part[p][1], &st, err, errn);
        if (!rc) {
            stats_merge(acc, st);
            json_decref(st);
        }
    }
    return rc;
}

/* The figures of [from, to): whole UTC days and hours from kept figures,
 * the rest read now. *out: caller decrefs. */
int rollup_range(struct api *a, const char *site, int64_t from, int64_t to, json_t **out, char *err,
                 size_t errn)
{
    int64_t d0 = ch_ceil_to(from, DAY_MS), d1 = ch_floor_to(to, DAY_MS);
    json_t *acc = stats_new();
    int rc;
    if (d0 >= d1) { /* no whole day */
        rc = part_stats(a, site, from, to, acc, err, errn);
    } else {
        rc = spans_stats(a, site, d0, d1, DAY_MS, acc, err, errn);
        if (!rc && from < d0)
            rc = part_stats(a, site, from, d0, acc, err, errn);
        if (!rc && d1 < to)
            rc = part_stats(a, site, d1, to, acc, err, errn);
    }
    if (rc) {
        json_decref(acc);
        return rc;
    }
    *out = acc;
    return 0;
}
