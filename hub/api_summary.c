/* GET /api/v1/summary: a site's alarms over a range (raised, acknowledged,
 * response percentiles) and, from the figures rollup.c keeps per day and
 * hour, its environment within the compliance limits, its devices online and
 * the completeness of its readings. A summary pays for the InfluxDB queries
 * it will make from its token's rate before it runs (summary_paid). */
#include "api.h"
#include "api_internal.h"
#include "hubcfg.h"
#include "err.h"
#include "log.h"
#include "presence.h"
#include "rollup.h"
#include "util.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DAY_MS          86400000LL
#define SUMMARY_WAIT_MS 30000 /* longest a summary waits for its token's rate */

static int dbl_cmp(const void *pa, const void *pb)
{
    double a = *(const double *)pa, b = *(const double *)pb;
    return a < b ? -1 : a > b;
}

double api_percentile(const double *v, size_t n, double p)
{
    double pos = p * (double)(n - 1);
    size_t lo = (size_t)floor(pos);
    size_t hi = lo + 1 < n ? lo + 1 : lo;
    return v[lo] + (v[hi] - v[lo]) * (pos - (double)lo);
}

static json_t *pct_or_null(double *v, size_t n, double p)
{
    if (n == 0)
        return json_null();
    return json_real(round(api_percentile(v, n, p) * 1000.0) / 1000.0);
}

static json_t *summary_alarms(struct ch_alert *v, size_t n)
{
    double *ack = ch_xcalloc(n + 1, sizeof *ack), *clr = ch_xcalloc(n + 1, sizeof *clr);
    double *res = ch_xcalloc(n + 1, sizeof *res);
    size_t na = 0, nc = 0, nr = 0;
    json_int_t by[3] = {0};
    for (size_t i = 0; i < n; i++) {
        const struct ch_alert *t = &v[i];
        by[t->priority >= 0 && t->priority < 3 ? t->priority : 0]++;
        if (t->acked_ms && t->acked_ms >= t->raised_ms)
            ack[na++] = (double)(t->acked_ms - t->raised_ms) / 1000.0;
        if (t->cleared_ms && t->cleared_ms >= t->raised_ms)
            clr[nc++] = (double)(t->cleared_ms - t->raised_ms) / 1000.0;
        /* its latest transition took it back to normal: the alarm's end */
        if (t->state == CH_AS_NORMAL && t->ts_ms >= t->raised_ms)
            res[nr++] = (double)(t->ts_ms - t->raised_ms) / 1000.0;
    }
    qsort(ack, na, sizeof *ack, dbl_cmp);
    qsort(clr, nc, sizeof *clr, dbl_cmp);
    qsort(res, nr, sizeof *res, dbl_cmp);
    json_t *o = json_pack("{s:I,s:{s:I,s:I,s:I},s:I,s:I,s:o,s:o,s:o}", "raised", (json_int_t)n,
                          "by_priority", "high", by[CH_PRIO_HIGH], "medium", by[CH_PRIO_MEDIUM],
                          "low", by[CH_PRIO_LOW], "acked", (json_int_t)na, "never_acked",
                          (json_int_t)(n - na), "ack_p50_s", pct_or_null(ack, na, 0.5), "ack_p90_s",
                          pct_or_null(ack, na, 0.9), "clear_p50_s", pct_or_null(clr, nc, 0.5));
    json_object_set_new(o, "resolved", json_integer((json_int_t)nr));
    json_object_set_new(o, "resolved_p50_s", pct_or_null(res, nr, 0.5));
    free(ack);
    free(clr);
    free(res);
    return o;
}

static double round2(double v)
{
    return round(v * 100.0) / 100.0;
}

static json_t *bound_or_null(double v)
{
    return fabs(v) >= 1e300 ? json_null() : json_real(v);
}

static int str_cmp(const void *pa, const void *pb)
{
    return strcmp(*(const char *const *)pa, *(const char *const *)pb);
}

/* The keys of object o, sorted (caller frees the array, not the keys). */
static const char **sorted_keys(json_t *o, size_t *n)
{
    const char **k = ch_xcalloc(json_object_size(o) + 1, sizeof *k);
    size_t i = 0;
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) k[i++] = key;
    qsort(k, i, sizeof *k, str_cmp);
    *n = i;
    return k;
}

static json_t *pct(json_int_t part, json_int_t whole)
{
    return whole > 0 ? json_real(round2(100.0 * (double)part / (double)whole)) : json_null();
}

/* Since when each device of site exists: the earlier of its first
 * declaration in a birth (carehub_device) and its first stored reading (or
 * the hour of it in the hourly history, once raw has lost it), as an
 * object "gateway/device" -> ms. NULL (logged) when InfluxDB cannot say:
 * every device then counts over the whole range. */
static json_t *device_starts(struct api *a, const char *site)
{
    struct qb q;
    qb_init(&q);
    qb_add(&q, "SELECT first(\"profile\") FROM \"carehub_device\" WHERE \"site\" = ");
    qb_str(&q, site);
    qb_add(&q, " GROUP BY \"gateway\", \"device\"; SELECT first(\"seq\") FROM ");
    qb_readings(&q, &a->cfg->influx, NULL);
    qb_add(&q, " WHERE \"site\" = ");
    qb_str(&q, site);
    qb_add(&q, " GROUP BY \"gateway\", \"device\"");
    size_t statements = 2;
    if (a->cfg->influx.retention.raw_ms) { /* readings gone from raw: their hours */
        qb_add(&q,
               "; SELECT first(\"mean_seq\") FROM \"%s\"./.*/ WHERE \"site\" = ", INFLUX_RP_HOURLY);
        qb_str(&q, site);
        qb_add(&q, " GROUP BY \"gateway\", \"device\"");
        statements++;
    }
    json_t *res;
    char err[512];
    if (influxq_run_qb(&a->q, &q, &res, err, sizeof err)) {
        LOGW(MOD, site, "devices' start unknown (online rate over the whole range): %s", err);
        return NULL;
    }
    json_t *starts = json_object();
    for (size_t st = 0; st < statements; st++) {
        size_t i;
        json_t *s;
        json_array_foreach(influxq_series(res, st), i, s)
        {
            if (st > 0 && self_metrics_series(s)) /* statement 0 is carehub_device's */
                continue;
            json_t *tags = json_object_get(s, "tags");
            char key[2 * CH_ID_MAX + 2];
            snprintf(key, sizeof key, "%s/%s",
                     json_string_value(json_object_get(tags, "gateway")) ?: "",
                     json_string_value(json_object_get(tags, "device")) ?: "");
            int64_t t = int_at(json_array_get(json_object_get(s, "values"), 0), 0);
            json_t *have = json_object_get(starts, key);
            if (!have || t < json_integer_value(have))
                json_object_set_new(starts, key, json_integer(t));
        }
    }
    json_decref(res);
    return starts;
}

/* Device online rate: of each device's device_timeout intervals since it
 * exists (starts; from for one it does not know), the share in which it
 * sent a reading (dev: the intervals with one, per device). A device that
 * exists only after the range is not counted. Without starts, every device
 * of the gateways' inventories over the whole range. */
static json_t *devices_online(struct api *a, const char *site, json_t *dev, json_t *starts,
                              int64_t from, int64_t to)
{
    int64_t bucket = a->cfg->api.device_timeout_ms;
    /* the intervals of [s, to), as InfluxDB's GROUP BY time cuts them (ALL),
     * and those [s, to) covers whole (WHOLE): an interval the range ends or
     * the device began in counts only if the device sent in it, which its
     * count of intervals with a reading (n) above WHOLE says: a device that
     * sends every minute is not offline in the 20 s of an interval it has
     * not sent in yet */
    int64_t last = to % bucket ? to / bucket - 1 : (to - 1) / bucket;
#define FIRST(s)       ((s) / bucket + ((s) % bucket ? 1 : 0))
#define WHOLE(s)       (last - FIRST(s) + 1 > 0 ? last - FIRST(s) + 1 : 0)
#define ALL(s)         ((to - 1) / bucket - (s) / bucket + 1)
#define EXPECTED(s, n) ((n) < WHOLE(s) ? WHOLE(s) : (n) > ALL(s) ? ALL(s) : (n))
#define ONLINE(s, n)   ((n) < ALL(s) ? (n) : ALL(s))
    json_int_t online = 0, expected = 0;
    size_t total = 0;
    const char *key;
    json_t *v;
    if (starts) {
        json_t *all = json_deep_copy(starts);
        json_object_foreach(dev, key, v) if (!json_object_get(all, key))
            json_object_set_new(all, key, json_integer(from));
        json_object_foreach(all, key, v)
        {
            int64_t s = json_integer_value(v) > from ? json_integer_value(v) : from;
            if (s >= to)
                continue; /* not there yet */
            json_int_t n = json_integer_value(json_object_get(dev, key));
            online += ONLINE(s, n);
            expected += EXPECTED(s, n);
            total++;
        }
        json_decref(all);
    } else {
        json_object_foreach(dev, key, v)
        {
            online += ONLINE(from, json_integer_value(v));
            expected += EXPECTED(from, json_integer_value(v));
        }
        struct presence_gw *g;
        size_t ng = presence_list(a->view, &g);
        size_t inventory = 0;
        for (size_t k = 0; k < ng; k++)
            if (!strcmp(g[k].site, site))
                inventory += g[k].n_devices;
        free(g);
        total = inventory > json_object_size(dev) ? inventory : json_object_size(dev);
        expected += (json_int_t)(total - json_object_size(dev)) * WHOLE(from); /* never sent */
    }
#undef ONLINE
#undef EXPECTED
#undef ALL
#undef WHOLE
#undef FIRST
    return json_pack("{s:I,s:o}", "total", (json_int_t)total, "online_pct", pct(online, expected));
}

/* The summary's environment (the limits whose readings w may read, per
 * room), devices and completeness from the figures of [from, to) of site. */
static void stats_render(struct api *a, const struct who *w, const char *site, json_t *st,
                         int64_t from, int64_t to, json_t *starts, json_t **env_out,
                         json_t **dev_out, json_t **comp_out)
{
    /* environment: per limit, its rooms in order */
    json_t *env = json_object_get(st, "env"), *out = json_array();
    size_t nk;
    const char **keys = sorted_keys(env, &nk);
    for (size_t i = 0; i < a->n_lims; i++) {
        const struct limit_def *l = &a->lims[i];
        if (!may_read(a, w, l->measurement, l->metric) || !may_read(a, w, l->measurement, "room"))
            continue;
        size_t ml = strlen(l->metric);
        for (size_t k = 0; k < nk; k++) {
            if (strncmp(keys[k], l->metric, ml) || keys[k][ml] != '|')
                continue;
            json_t *p = json_object_get(env, keys[k]);
            json_int_t total = int_of(p, 0), ok = int_of(p, 1);
            if (total <= 0)
                continue;
            json_array_append_new(
                out, json_pack("{s:s,s:s,s:o,s:o,s:I,s:I,s:f}", "room", keys[k] + ml + 1, "metric",
                               l->metric, "min", bound_or_null(l->min), "max",
                               bound_or_null(l->max), "samples", total, "within", ok, "within_pct",
                               round2(100.0 * (double)ok / (double)total)));
        }
    }
    free(keys);
    *env_out = out;

    *dev_out = devices_online(a, site, json_object_get(st, "dev"), starts, from, to);

    /* completeness: per gateway, over every measurement */
    json_t *gws = json_object_get(st, "gw"), *list = json_array();
    json_int_t rec = 0, exp = 0;
    keys = sorted_keys(gws, &nk);
    for (size_t k = 0; k < nk; k++) {
        json_t *gv = json_object_get(gws, keys[k]);
        json_int_t r = int_of(gv, 0), e = int_of(gv, 2) - int_of(gv, 1) + 1;
        rec += r;
        exp += e;
        json_array_append_new(list, json_pack("{s:s,s:I,s:I,s:o}", "gateway", keys[k], "received",
                                              r, "expected", e, "pct", pct(r, e)));
    }
    free(keys);
    *comp_out = json_pack("{s:I,s:I,s:o,s:o}", "received", rec, "expected", exp, "pct",
                          pct(rec, exp), "gateways", list);
}

/* What a summary costs: about one InfluxDB query for its alarms, one for the
 * kept figures, one for each whole UTC day of its range not kept yet (read
 * whole, then kept: rollup.h) and one for each part of a day at its ends.
 * Which days are kept is one more (small) query. Figures kept with other
 * limits count as kept: an estimate, low only after a change of limits. */
static int summary_cost(struct api *a, const char *site, int64_t from, int64_t to, double *cost,
                        char *err, size_t errn)
{
    int64_t d0 = (from + DAY_MS - 1) / DAY_MS * DAY_MS, d1 = to / DAY_MS * DAY_MS;
    *cost = 2.0 + (d0 >= d1 ? 1.0 : (from < d0) + (d1 < to));
    if (d0 >= d1)
        return 0;
    struct qb q;
    qb_init(&q);
    qb_add(&q, "SELECT count(\"computed_ms\") FROM \"carehub_rollup\" WHERE \"site\" = ");
    qb_str(&q, site);
    qb_add(&q, " AND \"span\" = 'day'");
    where_time(&q, d0, d1);
    json_t *res;
    int rc = influxq_run_qb(&a->q, &q, &res, err, errn);
    if (rc)
        return rc;
    json_t *s = json_array_get(influxq_series(res, 0), 0);
    int64_t days = (d1 - d0) / DAY_MS;
    int64_t kept = int_at(json_array_get(json_object_get(s, "values"), 0), 1);
    json_decref(res);
    *cost += (double)(days - (kept < days ? kept : days));
    return 0;
}

/* The summary pays its cost from the token's rate before it runs, waiting
 * up to SUMMARY_WAIT_MS for it. Returns true, or false after answering
 * (429 when it would wait longer: a shorter range costs less). */
static bool summary_paid(struct api *a, struct req *r, struct MHD_Connection *c, const char *site,
                         int64_t from, int64_t to, enum MHD_Result *ret)
{
    double cost;
    char err[512];
    int rc = summary_cost(a, site, from, to, &cost, err, sizeof err);
    if (rc) {
        *ret = fail_query(r, c, rc, err);
        return false;
    }
    int64_t wait = 0;
    rc = pay(a, r->who.name, cost, SUMMARY_WAIT_MS, &wait);
    if (rc == CH_EFULL) {
        char ra[24];
        snprintf(ra, sizeof ra, "%" PRId64, wait / 1000 + 1);
        *ret = fail_hdr(r, c, 429, "Retry-After", ra,
                        "this summary costs about %.0f queries (a day not summarised yet is "
                        "one): more than this token's rate allows within %d s; ask for a "
                        "shorter range (a day once read is kept, and costs nothing after)",
                        cost, SUMMARY_WAIT_MS / 1000);
        return false;
    }
    if (rc == CH_ENOTFOUND)
        *ret = fail(r, c, 401, "the token was revoked");
    else if (rc)
        *ret = fail_hdr(r, c, 503, "Retry-After", "5", "the hub is stopping");
    return rc == 0;
}

enum MHD_Result h_summary(struct api *a, struct req *r, struct MHD_Connection *c)
{
    static const char *const allowed[] = {"site", "from", "to", NULL};
    enum MHD_Result ret = MHD_NO;
    const char *site;
    int64_t from, to;
    if (!site_range_params(r, c, allowed, true, &site, &from, &to, &ret))
        return ret;
    if (!heavy_enter(a, r, c, &ret) || !summary_paid(a, r, c, site, from, to, &ret))
        return ret;
    struct ch_alert *v;
    size_t n;
    char err[512];
    int rc = read_occurrences(a, &r->who, site, from, to, &v, &n, err, sizeof err);
    if (rc)
        return fail_query(r, c, rc, err);
    json_t *alarms = summary_alarms(v, n);
    free(v);
    json_t *st, *env, *dev, *comp;
    rc = rollup_range(a, site, from, to, &st, err, sizeof err);
    if (rc) {
        json_decref(alarms);
        return fail_query(r, c, rc, err);
    }
    json_t *starts = device_starts(a, site);
    stats_render(a, &r->who, site, st, from, to, starts, &env, &dev, &comp);
    json_decref(starts);
    json_decref(st);
    r->rows = 1;
    return reply_json(r, c, 200,
                      json_pack("{s:s,s:I,s:I,s:o,s:o,s:o,s:o}", "site", site, "from_ms",
                                (json_int_t)from, "to_ms", (json_int_t)to, "alarms", alarms,
                                "environment", env, "devices", dev, "completeness", comp));
}

void api_set_retention(struct api *a, struct retention *r)
{
    if (a)
        atomic_store(&a->retention, r);
}

static int site_cmp(const void *pa, const void *pb)
{
    return strcmp(((const struct presence_gw *)pa)->site, ((const struct presence_gw *)pb)->site);
}

int api_keep_figures(struct api *a, int64_t from, int64_t to, const atomic_bool *stop, char *err,
                     size_t errn)
{
    struct presence_gw *g;
    size_t n = presence_list(a->view, &g);
    qsort(g, n, sizeof *g, site_cmp);
    int rc = 0;
    for (size_t i = 0; i < n && !rc && !atomic_load(stop); i++) {
        if (i && !strcmp(g[i].site, g[i - 1].site))
            continue;
        json_t *st;
        rc = rollup_range(a, g[i].site, from, to, &st, err, errn);
        if (!rc)
            json_decref(st);
    }
    free(g);
    return rc;
}
