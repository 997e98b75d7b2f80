/* GET /api/v1/alarms (occurrences raised in a range, each as its latest
 * transition) and /api/v1/alarms/active (the alarms whose last transition
 * is not normal), read from the "alarm" measurement; and the API's alarm
 * object, which the live events share. */
#include "api_internal.h"
#include "util.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define ACTIVE_LOOKBACK "90d"  /* an alarm silent for longer is not "active" */
#define ALARM_ROWS_MAX  100000 /* alarm transitions one query may return */

#define N_STATES 6 /* enum ch_alarm_state */

static int event_parse(const char *name)
{
    for (int e = 0; e <= CH_AE_NOTIFIED; e++)
        if (!strcmp(ch_alarm_event_name(e), name))
            return e;
    return 0;
}

static json_t *ms_or_null(int64_t v)
{
    return v ? json_integer(v) : json_null();
}

static json_t *secs_or_null(int64_t a, int64_t b)
{
    return a && b && b >= a ? json_real((double)(b - a) / 1000.0) : json_null();
}

/* The API's alarm object for one transition (the latest of an occurrence),
 * as w sees it: for a regulator, metric, value and message only of the
 * kinds its allow-list opens (privacy). */
json_t *alarm_object(const struct api *a, const struct ch_alert *t, const struct who *w)
{
    struct shown sh;
    privacy(a, t, w, &sh);
    const char *resident = sh.resident, *message = sh.message, *by = sh.by;
    json_t *o = json_object();
    json_object_set_new(o, "site", json_string(t->site));
    json_object_set_new(o, "gateway", json_string(t->gateway));
    json_object_set_new(o, "alarm_id", json_string(t->alarm_id));
    json_object_set_new(o, "rule", json_string(t->rule));
    json_object_set_new(o, "device", json_string(t->device));
    json_object_set_new(o, "room", json_string(t->room));
    json_object_set_new(o, "bed", json_string(t->bed));
    json_object_set_new(o, "resident", json_string(resident));
    json_object_set_new(o, "kind", json_string(t->kind[0] ? t->kind : "other"));
    json_object_set_new(o, "site_name", json_string(t->site_name));
    json_object_set_new(o, "room_name", json_string(t->room_name));
    json_object_set_new(o, "bed_name", json_string(t->bed_name));
    json_object_set_new(o, "resident_name", json_string(sh.resident_name));
    json_object_set_new(o, "device_name", json_string(sh.device_name));
    json_object_set_new(o, "located_ms", ms_or_null(t->located_ms));
    json_object_set_new(o, "priority", json_string(ch_priority_name(t->priority)));
    json_object_set_new(o, "state", json_string(ch_alarm_state_name(t->state)));
    json_object_set_new(o, "event", json_string(ch_alarm_event_name(t->event)));
    json_object_set_new(o, "message", json_string(message));
    json_object_set_new(o, "metric", json_string(sh.metric));
    json_object_set_new(o, "value", sh.has_value ? json_real(sh.value) : json_null());
    json_object_set_new(o, "escalation", json_integer(t->escalation));
    json_object_set_new(o, "latched", json_boolean(t->latched));
    json_object_set_new(o, "raised_ms", ms_or_null(t->raised_ms));
    json_object_set_new(o, "acked_ms", ms_or_null(t->acked_ms));
    json_object_set_new(o, "cleared_ms", ms_or_null(t->cleared_ms));
    json_object_set_new(o, "updated_ms", json_integer(t->ts_ms));
    json_object_set_new(o, "ack_s", secs_or_null(t->raised_ms, t->acked_ms));
    json_object_set_new(o, "clear_s", secs_or_null(t->raised_ms, t->cleared_ms));
    /* the alarm's end: back to normal (acknowledged, and its condition over) */
    json_object_set_new(o, "resolved_s",
                        t->state == CH_AS_NORMAL ? secs_or_null(t->raised_ms, t->ts_ms)
                                                 : json_null());
    json_object_set_new(o, "acked_by", by && t->acked_ms ? json_string(by) : json_null());
    /* a "notified" transition: who was told (its message: what came of it) */
    json_object_set_new(o, "notified_to",
                        t->event == CH_AE_NOTIFIED && by ? json_string(by) : json_null());
    json_object_set_new(o, "shelved_until_ms", ms_or_null(t->shelved_until_ms));
    json_object_set_new(o, "group", json_string(t->group));
    return o;
}

/* A row of the alarm measurement (columns of series s) back into a
 * transition. tags: the series' group-by tags (site, gateway, alarm_id). */
void row_to_alert(json_t *s, json_t *row, struct ch_alert *t)
{
    memset(t, 0, sizeof *t);
    json_t *tags = json_object_get(s, "tags");
#define TXT(field, name)                                                                           \
    do {                                                                                           \
        json_t *tv = json_object_get(tags, name);                                                  \
        ch_strlcpy(t->field,                                                                       \
                   json_is_string(tv) ? json_string_value(tv) : str_at(row, influxq_col(s, name)), \
                   sizeof t->field);                                                               \
    } while (0)
    TXT(site, "site");
    TXT(gateway, "gateway");
    TXT(alarm_id, "alarm_id");
    TXT(rule, "rule");
    TXT(device, "device");
    TXT(room, "room");
    TXT(bed, "bed");
    TXT(resident, "resident");
    TXT(metric, "metric");
    TXT(message, "message");
    TXT(by, "by");
    TXT(group, "group");
    TXT(kind, "kind");
    TXT(site_name, "site_name");
    TXT(room_name, "room_name");
    TXT(bed_name, "bed_name");
    TXT(resident_name, "resident_name");
    TXT(device_name, "device_name");
#undef TXT
    char tmp[32];
    ch_strlcpy(tmp, str_at(row, influxq_col(s, "priority")), sizeof tmp);
    t->priority = !strcmp(tmp, "high")     ? CH_PRIO_HIGH
                  : !strcmp(tmp, "medium") ? CH_PRIO_MEDIUM
                                           : CH_PRIO_LOW;
    ch_strlcpy(tmp, str_at(row, influxq_col(s, "state")), sizeof tmp);
    t->state = CH_AS_NORMAL;
    for (int i = 0; i < N_STATES; i++)
        if (!strcmp(tmp, ch_alarm_state_name(i)))
            t->state = i;
    t->event = event_parse(str_at(row, influxq_col(s, "event")));
    t->ts_ms = int_at(row, influxq_col(s, "time"));
    t->raised_ms = int_at(row, influxq_col(s, "raised_ms"));
    t->acked_ms = int_at(row, influxq_col(s, "acked_ms"));
    t->cleared_ms = int_at(row, influxq_col(s, "cleared_ms"));
    t->shelved_until_ms = int_at(row, influxq_col(s, "shelved_until_ms"));
    t->escalation = (int)int_at(row, influxq_col(s, "escalation"));
    t->located_ms = int_at(row, influxq_col(s, "located_ms"));
    json_t *lv = json_array_get(row, (size_t)influxq_col(s, "latched"));
    t->latched = json_is_true(lv);
    json_t *vv =
        influxq_col(s, "value") >= 0 ? json_array_get(row, (size_t)influxq_col(s, "value")) : NULL;
    t->has_value = json_is_number(vv);
    t->value = t->has_value ? json_number_value(vv) : 0;
}

/* An occurrence (site, gateway, alarm_id, raised_ms) is represented by its
 * latest transition. */
static int occ_key_cmp(const struct ch_alert *a, const struct ch_alert *b)
{
    int c = strcmp(a->site, b->site);
    if (!c)
        c = strcmp(a->gateway, b->gateway);
    if (!c)
        c = strcmp(a->alarm_id, b->alarm_id);
    if (!c)
        c = a->raised_ms < b->raised_ms ? -1 : a->raised_ms > b->raised_ms;
    return c;
}

static int occ_sort(const void *pa, const void *pb)
{
    const struct ch_alert *a = pa, *b = pb;
    int c = occ_key_cmp(a, b);
    if (c)
        return c;
    return a->ts_ms < b->ts_ms ? -1 : a->ts_ms > b->ts_ms;
}

static int occ_newest_first(const void *pa, const void *pb)
{
    const struct ch_alert *a = pa, *b = pb;
    if (a->raised_ms != b->raised_ms)
        return a->raised_ms > b->raised_ms ? -1 : 1;
    return strcmp(a->alarm_id, b->alarm_id);
}

/* Reads the occurrences raised in [from, to) at the sites (site, or the
 * scope); *out (caller frees), count in *n. Returns 0 or the query's error. */
int read_occurrences(struct api *a, const struct who *w, const char *site, int64_t from, int64_t to,
                     struct ch_alert **out, size_t *n, char *err, size_t errn)
{
    struct qb q;
    qb_init(&q);
    qb_add(&q, "SELECT * FROM \"alarm\" WHERE ");
    where_sites(&q, w, site);
    qb_add(&q, " AND \"raised_ms\" >= %" PRId64 " AND \"raised_ms\" < %" PRId64, from, to);
    /* who was told is a line of the history, not a step of the alarm: a
     * message delivered after the alarm ended would move its end */
    qb_add(&q, " AND \"event\" != 'notified'");
    qb_add(&q, " AND time >= ");
    qb_time(&q, from);
    qb_add(&q, " LIMIT %d", ALARM_ROWS_MAX);
    json_t *res;
    int rc = influxq_run_qb(&a->q, &q, &res, err, errn);
    *out = NULL;
    *n = 0;
    if (rc)
        return rc;
    size_t cap = 0, cnt = 0;
    struct ch_alert *v = NULL;
    size_t i;
    json_t *s;
    json_array_foreach(influxq_series(res, 0), i, s)
    {
        size_t j;
        json_t *row;
        json_array_foreach(json_object_get(s, "values"), j, row)
        {
            if (cnt == cap) {
                cap = cap ? 2 * cap : 64;
                v = ch_xrealloc(v, cap * sizeof *v);
            }
            row_to_alert(s, row, &v[cnt]);
            cnt++;
        }
    }
    json_decref(res);
    if (cnt)
        qsort(v, cnt, sizeof *v, occ_sort);
    /* keep the last transition of each occurrence */
    size_t k = 0;
    for (size_t j = 0; j < cnt; j++) {
        if (j + 1 < cnt && occ_key_cmp(&v[j], &v[j + 1]) == 0)
            continue;
        v[k++] = v[j];
    }
    *out = v;
    *n = k;
    return 0;
}

static bool state_matches(const char *want, int state)
{
    if (!want)
        return true;
    if (!strcmp(want, "active"))
        return state != CH_AS_NORMAL;
    return !strcmp(want, ch_alarm_state_name(state));
}

enum MHD_Result h_alarms(struct api *a, struct req *r, struct MHD_Connection *c)
{
    static const char *const allowed[] = {"site", "from", "to", "priority", "state", "limit", NULL};
    enum MHD_Result ret = MHD_NO;
    const char *site;
    int64_t from, to;
    if (!site_range_params(r, c, allowed, false, &site, &from, &to, &ret))
        return ret;
    const char *prio = arg(c, "priority"), *state = arg(c, "state");
    if (prio && strcmp(prio, "low") && strcmp(prio, "medium") && strcmp(prio, "high"))
        return fail(r, c, 400, "parameter 'priority': low, medium or high");
    bool state_ok = !state || !strcmp(state, "active");
    for (int i = 0; i < N_STATES && !state_ok; i++)
        state_ok = !strcmp(state, ch_alarm_state_name(i));
    if (!state_ok)
        return fail(r, c, 400,
                    "parameter 'state': active, unack, acked, rtn_unack, normal, shelved or "
                    "out_of_service");
    long long limit = 1000;
    const char *ls = arg(c, "limit");
    if (ls && (ch_parse_int(ls, &limit) || limit < 1 || limit > ALARMS_LIMIT_MAX))
        return fail(r, c, 400, "parameter 'limit': a whole number from 1 to %d", ALARMS_LIMIT_MAX);
    struct ch_alert *v;
    size_t n;
    char err[512];
    int rc = read_occurrences(a, &r->who, site, from, to, &v, &n, err, sizeof err);
    if (rc)
        return fail_query(r, c, rc, err);
    if (n)
        qsort(v, n, sizeof *v, occ_newest_first);
    json_t *arr = json_array();
    for (size_t i = 0; i < n && json_array_size(arr) < (size_t)limit; i++) {
        const struct ch_alert *t = &v[i];
        if (prio && strcmp(prio, ch_priority_name(t->priority)))
            continue;
        if (!state_matches(state, t->state))
            continue;
        note_site(r, t->site);
        json_array_append_new(arr, alarm_object(a, t, &r->who));
    }
    free(v);
    r->rows = json_array_size(arr);
    return reply_json(r, c, 200, json_pack("{s:o}", "alarms", arr));
}

/* The last transition of every alarm heard of in ACTIVE_LOOKBACK whose state
 * is not normal. */
int read_active(struct api *a, const struct who *w, const char *site, struct ch_alert **out,
                size_t *n, char *err, size_t errn)
{
    struct qb q;
    qb_init(&q);
    qb_add(&q, "SELECT * FROM \"alarm\" WHERE ");
    where_sites(&q, w, site);
    qb_add(&q,
           " AND \"event\" != 'notified' AND time > now() - %s GROUP BY \"site\", \"gateway\", "
           "\"alarm_id\" ORDER BY time "
           "DESC LIMIT 1",
           ACTIVE_LOOKBACK);
    json_t *res;
    int rc = influxq_run_qb(&a->q, &q, &res, err, errn);
    *out = NULL;
    *n = 0;
    if (rc)
        return rc;
    json_t *series = influxq_series(res, 0);
    struct ch_alert *v = ch_xcalloc(json_array_size(series) + 1, sizeof *v);
    size_t k = 0, i;
    json_t *s;
    json_array_foreach(series, i, s)
    {
        json_t *row = json_array_get(json_object_get(s, "values"), 0);
        if (!row)
            continue;
        row_to_alert(s, row, &v[k]);
        if (v[k].state != CH_AS_NORMAL)
            k++;
    }
    json_decref(res);
    if (k)
        qsort(v, k, sizeof *v, occ_newest_first);
    *out = v;
    *n = k;
    return 0;
}

enum MHD_Result h_active(struct api *a, struct req *r, struct MHD_Connection *c)
{
    static const char *const allowed[] = {"site", NULL};
    const char *bad = unknown_param(c, allowed);
    if (bad)
        return fail(r, c, 400, "unknown parameter '%.64s'", bad);
    enum MHD_Result ret = MHD_NO;
    const char *site;
    if (!site_param(r, c, false, &site, &ret))
        return ret;
    struct ch_alert *v;
    size_t n;
    char err[512];
    int rc = read_active(a, &r->who, site, &v, &n, err, sizeof err);
    if (rc)
        return fail_query(r, c, rc, err);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        note_site(r, v[i].site);
        json_array_append_new(arr, alarm_object(a, &v[i], &r->who));
    }
    free(v);
    r->rows = json_array_size(arr);
    return reply_json(r, c, 200, json_pack("{s:o}", "alarms", arr));
}
