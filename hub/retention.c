/* The retention policies and the keeper of the hourly history. See
 * retention.h for what is kept where, and why the hub makes the history
 * itself. */
#include "retention.h"
#include "api.h"
#include "hubcfg.h"
#include "err.h"
#include "influx.h"
#include "influxq.h"
#include "lineproto.h"
#include "log.h"
#include "util.h"

#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HOUR_MS           ((int64_t)3600000)
#define DAY_MS            ((int64_t)86400000)
#define KEEPER_TIMEOUT_MS 300000 /* one hour of every site, or one site's figures */
#define MAX_DAYS          3700   /* retention.raw is at most 3660 days */

/* ---- the policies ----------------------------------------------------------------------- */

/* A policy's duration as InfluxDB shows it: "720h0m0s", "0s" for ever. */
static void duration_text(int64_t ms, char out[32])
{
    if (ms <= 0)
        snprintf(out, 32, "0s");
    else
        snprintf(out, 32, "%" PRId64 "h0m0s", (ms + HOUR_MS - 1) / HOUR_MS);
}

/* The duration clause of a policy: "720h", or "INF". */
static void duration_clause(int64_t ms, char out[32])
{
    if (ms <= 0)
        snprintf(out, 32, "INF");
    else
        snprintf(out, 32, "%" PRId64 "h", (ms + HOUR_MS - 1) / HOUR_MS);
}

static void days_text(int64_t ms, char out[32])
{
    if (ms <= 0)
        snprintf(out, 32, "for ever");
    else if (ms % DAY_MS == 0)
        snprintf(out, 32, "%" PRId64 " days", ms / DAY_MS);
    else
        snprintf(out, 32, "%" PRId64 " hours", (ms + HOUR_MS - 1) / HOUR_MS);
}

int retention_setup(const struct hubcfg_influx *c, char *err, size_t errn)
{
    struct influxq iq = {.cfg = c, .timeout_ms = c->timeout_ms};
    struct qb q;
    qb_init(&q);
    qb_add(&q, "SHOW RETENTION POLICIES ON ");
    qb_ident(&q, c->database);
    json_t *res;
    int rc = influxq_run_qb(&iq, &q, &res, err, errn);
    if (rc)
        return rc;
    static const char *const names[2] = {INFLUX_RP_RAW, INFLUX_RP_HOURLY};
    const int64_t want[2] = {c->retention.raw_ms, c->retention.hourly_ms};
    json_t *s = json_array_get(influxq_series(res, 0), 0);
    int cn = influxq_col(s, "name"), cd = influxq_col(s, "duration");
    qb_init(&q);
    char changes[256] = "";
    for (int p = 0; p < 2; p++) {
        char have[64] = "", text[32], clause[32];
        size_t i;
        json_t *row;
        json_array_foreach(json_object_get(s, "values"), i, row)
        {
            const char *name = json_string_value(json_array_get(row, (size_t)cn));
            const char *dur = json_string_value(json_array_get(row, (size_t)cd));
            if (name && dur && !strcmp(name, names[p]))
                snprintf(have, sizeof have, "%s", dur);
        }
        duration_text(want[p], text);
        if (have[0] && !strcmp(have, text))
            continue;
        duration_clause(want[p], clause);
        if (q.len)
            qb_add(&q, "; ");
        qb_add(&q, "%s RETENTION POLICY ", have[0] ? "ALTER" : "CREATE");
        qb_ident(&q, names[p]);
        qb_add(&q, " ON ");
        qb_ident(&q, c->database);
        qb_add(&q, " DURATION %s%s", clause, have[0] ? "" : " REPLICATION 1");
        size_t n = strlen(changes);
        snprintf(changes + n, sizeof changes - n, "%s%s %s%s%s", n ? ", " : "", names[p],
                 have[0] ? "from " : "created", have[0] ? have : "", have[0] ? " to " : "");
        if (have[0]) {
            n = strlen(changes);
            snprintf(changes + n, sizeof changes - n, "%s", text);
        }
    }
    json_decref(res);
    if (q.len) {
        rc = influxq_run_qb(&iq, &q, &res, err, errn);
        if (rc)
            return rc;
        json_decref(res);
        LOGI("retention", c->database, "retention policies: %s", changes);
    } else {
        qb_free(&q);
    }
    char raw[32], hourly[32];
    days_text(c->retention.raw_ms, raw);
    days_text(c->retention.hourly_ms, hourly);
    LOGI("retention", c->database,
         "readings are kept %s (policy %s), their hourly means, minima and maxima %s (%s); "
         "alarms, statuses, audit and summary figures in the default policy",
         raw, INFLUX_RP_RAW, hourly, INFLUX_RP_HOURLY);
    return 0;
}

/* ---- the keeper ------------------------------------------------------------------------- */

/* How far one UTC day is in the hourly history. */
struct day_state {
    int64_t day;
    int64_t basis;   /* the day's newest stale mark (marked_ms) seen before reading; 0: none */
    int64_t through; /* the hours before this are done */
};

struct retention {
    const struct hubcfg *cfg;
    struct influx *writer;
    struct api *api;
    struct influxq q;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    atomic_bool stop;         /* set under mu; also ends a query under way */
    atomic_int_fast64_t done; /* retention_through */
    struct day_state *days;   /* the keeper's thread only: what it did or read */
    size_t n_days;
    bool failing; /* the last pass failed (logged once until one succeeds) */
};

static struct day_state *day_of(struct retention *r, int64_t day)
{
    for (size_t i = 0; i < r->n_days; i++)
        if (r->days[i].day == day)
            return &r->days[i];
    return NULL;
}

static void day_set(struct retention *r, int64_t day, int64_t basis, int64_t through)
{
    struct day_state *d = day_of(r, day);
    if (!d) {
        if (r->n_days == MAX_DAYS)
            return;
        d = &r->days[r->n_days++];
        d->day = day;
    }
    d->basis = basis;
    d->through = through;
}

/* Forgets days before first (gone from raw). */
static void days_trim(struct retention *r, int64_t first)
{
    size_t k = 0;
    for (size_t i = 0; i < r->n_days; i++)
        if (r->days[i].day >= first)
            r->days[k++] = r->days[i];
    r->n_days = k;
}

static bool stopping(struct retention *r)
{
    return atomic_load(&r->stop);
}

/* Reads the stored progress of the days from first on (what another hub,
 * or this one before a restart, did) and the days' newest stale marks into
 * *marks (an object: day start as text -> marked_ms). */
static int read_state(struct retention *r, int64_t first, json_t **marks, char *err, size_t errn)
{
    struct qb q;
    qb_init(&q);
    qb_add(&q, "SELECT \"basis\", \"through_ms\" FROM \"carehub_downsample\" WHERE time >= ");
    qb_time(&q, first);
    qb_add(&q, "; SELECT max(\"marked_ms\") FROM \"carehub_rollup_stale\" WHERE time >= ");
    qb_time(&q, first);
    qb_add(&q, " AND time <= now() GROUP BY time(1d) fill(none)");
    json_t *res;
    int rc = influxq_run_qb(&r->q, &q, &res, err, errn);
    if (rc)
        return rc;
    json_t *s = json_array_get(influxq_series(res, 0), 0);
    int cb = influxq_col(s, "basis"), ct = influxq_col(s, "through_ms");
    size_t i;
    json_t *row;
    json_array_foreach(json_object_get(s, "values"), i, row)
    {
        int64_t day = json_integer_value(json_array_get(row, 0));
        int64_t basis = json_integer_value(json_array_get(row, (size_t)cb));
        int64_t through = json_integer_value(json_array_get(row, (size_t)ct));
        struct day_state *d = day_of(r, day);
        /* what this process did last is newer than what it may not see yet */
        if (!d || (d->basis == basis && through > d->through))
            day_set(r, day, basis, through);
    }
    *marks = json_object();
    s = json_array_get(influxq_series(res, 1), 0);
    json_array_foreach(json_object_get(s, "values"), i, row)
    {
        char at[24];
        snprintf(at, sizeof at, "%" PRId64, (int64_t)json_integer_value(json_array_get(row, 0)));
        json_object_set_new(*marks, at, json_integer(json_integer_value(json_array_get(row, 1))));
    }
    json_decref(res);
    return 0;
}

/* The hourly history of [from, to), an hour per query, every site. */
static int downsample(struct retention *r, int64_t from, int64_t to, char *err, size_t errn)
{
    const char *db = r->cfg->influx.database;
    for (int64_t h = from; h < to; h += HOUR_MS) {
        if (stopping(r))
            return CH_ERETRY;
        struct qb q;
        qb_init(&q);
        qb_add(&q, "SELECT mean(*), min(*), max(*) INTO ");
        qb_ident(&q, db);
        qb_add(&q, ".\"%s\".:MEASUREMENT FROM ", INFLUX_RP_HOURLY);
        qb_ident(&q, db);
        qb_add(&q, ".");
        qb_readings(&q, &r->cfg->influx, NULL);
        qb_add(&q, " WHERE time >= ");
        qb_time(&q, h);
        qb_add(&q, " AND time < ");
        qb_time(&q, h + HOUR_MS);
        qb_add(&q, " GROUP BY time(1h), *");
        json_t *res;
        int rc = influxq_run_qb(&r->q, &q, &res, err, errn);
        if (rc)
            return rc;
        json_decref(res);
    }
    return 0;
}

/* Keeps a day's progress (through the spool, in the default policy). */
static void keep_progress(struct retention *r, int64_t day, int64_t basis, int64_t through)
{
    struct lp_buf b;
    lp_init(&b);
    lp_begin(&b, "carehub_downsample");
    lp_field_int(&b, "basis", basis);
    lp_field_int(&b, "computed_ms", ch_now_ms());
    lp_field_int(&b, "through_ms", through);
    lp_end(&b, day);
    size_t len, lines;
    char *lp = lp_take(&b, &len, &lines);
    if (lp)
        influx_enqueue_once(r->writer, INFLUX_RP_DEFAULT, lp, len, lines);
}

/* One pass: every day of raw up to the last hour that ended rollup_after
 * ago, oldest first; then the API's day figures. */
static int pass(struct retention *r, char *err, size_t errn)
{
    if (!influx_database_ready(r->writer))
        return 0; /* nothing written yet: the first write makes the database */
    int64_t now = ch_now_ms();
    int64_t horizon = now - r->cfg->influx.retention.raw_ms;
    /* the first whole hour still in raw, and the last that ended rollup_after ago */
    int64_t first = ch_floor_to(horizon, HOUR_MS) + HOUR_MS;
    int64_t end = ch_floor_to(now - r->cfg->rollup_after_ms, HOUR_MS);
    days_trim(r, ch_floor_to(first, DAY_MS));
    json_t *marks;
    int rc = read_state(r, ch_floor_to(first, DAY_MS), &marks, err, errn);
    if (rc)
        return rc;
    int64_t through = 0; /* the contiguous history from first */
    bool contiguous = true;
    for (int64_t day = ch_floor_to(first, DAY_MS); day < end && !rc; day += DAY_MS) {
        char at[24];
        snprintf(at, sizeof at, "%" PRId64, day);
        int64_t basis = json_integer_value(json_object_get(marks, at));
        int64_t lo = day > first ? day : first, hi = day + DAY_MS < end ? day + DAY_MS : end;
        const struct day_state *d = day_of(r, day);
        int64_t from = d && d->basis == basis && d->through > lo ? d->through : lo;
        if (from < hi) {
            rc = downsample(r, from, hi, err, errn);
            if (rc == 0) {
                day_set(r, day, basis, hi);
                keep_progress(r, day, basis, hi);
                LOGD("retention", at, "hourly history of %" PRId64 "..%" PRId64 " made", from, hi);
            }
        }
        if (rc == 0 && contiguous)
            through = hi;
        contiguous = contiguous && rc == 0;
    }
    json_decref(marks);
    if (through)
        atomic_store(&r->done, through);
    if (rc == 0 && r->api && end - DAY_MS >= first)
        rc = api_keep_figures(r->api, ch_floor_to(first, DAY_MS) + DAY_MS, ch_floor_to(end, DAY_MS),
                              &r->stop, err, errn);
    return rc;
}

static void *run(void *arg)
{
    struct retention *r = arg;
    int64_t interval = r->cfg->influx.retention.interval_ms;
    for (;;) {
        char err[512] = "";
        int rc = pass(r, err, sizeof err);
        if (rc && !r->failing && !stopping(r))
            LOGW("retention", r->cfg->influx.database,
                 "the hourly history could not be brought up to date: %s; again in %" PRId64 " s",
                 err, interval / 1000);
        else if (!rc && r->failing)
            LOGI("retention", r->cfg->influx.database, "the hourly history is up to date again");
        r->failing = rc != 0;
        pthread_mutex_lock(&r->mu);
        int64_t until = ch_mono_ms() + interval;
        while (!atomic_load(&r->stop) && ch_mono_ms() < until)
            ch_cond_wait_until(&r->cond, &r->mu, until);
        bool stop = atomic_load(&r->stop);
        pthread_mutex_unlock(&r->mu);
        if (stop)
            return NULL;
    }
}

struct retention *retention_start(const struct hubcfg *cfg, struct influx *writer, struct api *api)
{
    if (!cfg->influx.retention.raw_ms || cfg->influx.version != 1)
        return NULL;
    struct retention *r = ch_xcalloc(1, sizeof *r);
    r->cfg = cfg;
    r->writer = writer;
    r->api = api;
    r->q.cfg = &cfg->influx;
    r->q.timeout_ms = KEEPER_TIMEOUT_MS;
    r->q.cancel = &r->stop;
    r->days = ch_xcalloc(MAX_DAYS, sizeof *r->days);
    pthread_mutex_init(&r->mu, NULL);
    ch_cond_init_monotonic(&r->cond);
    if (pthread_create(&r->thread, NULL, run, r) != 0) {
        LOGE("retention", cfg->influx.database, "cannot start the keeper of the hourly history");
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->cond);
        free(r->days);
        free(r);
        return NULL;
    }
    return r;
}

int64_t retention_through(const struct retention *r)
{
    return r ? atomic_load(&r->done) : 0;
}

void retention_stop(struct retention *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    atomic_store(&r->stop, true);
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cond);
    free(r->days);
    free(r);
}
