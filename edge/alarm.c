/* Alarm life cycle (ISA-18.2 / IEC 62682). See alarm.h for the states.
 *
 * Records. One struct alarm per (rule, device), found by its id in an open
 * addressing table; the flood alarm is a record of its own outside the table
 * (rule NULL). A record keeps the current occurrence (raised, acked, cleared
 * times, escalation level, who acted) and `cond`, the condition as the rules
 * engine last reported it, which is what decides where shelving and out of
 * service lead back to.
 *
 * Ordering and the sink. Every public call does its work under the mutex,
 * appends the transitions it made to a pending queue, writes the state file
 * if anything changed, and only then delivers. Delivery runs without the
 * lock, by one thread at a time: a caller that finds another thread
 * delivering leaves its transitions in the queue for that thread, which
 * drains the queue until it is empty. So the sink sees every transition
 * exactly once, in the order they were made, never under our lock (it may
 * call alarms_active(), or even alarms_command()).
 *
 * Durability. The state file is JSON, replaced atomically (temporary file,
 * fsync, rename, fsync of the directory), written once per call that made
 * transitions and before the sink hears of them. It holds every alarm not in
 * normal, the flood state with the recent raise times, and the last
 * STATE_HISTORY transitions (the full history is in the spool's alert lane;
 * the file stays small enough to rewrite on every transition). A crash
 * between the write and the sink loses nothing the sink owed anybody: the
 * transition is in the file's history and the alarm in its new state. At
 * open, alarms whose rule or device are gone from the configuration are
 * dropped with a warning; a file that does not parse or breaks the format is
 * logged, renamed to state_file.bad and the module starts empty.
 *
 * Clocks. Deadlines and moments that durations are measured from
 * (next_escalate, shelve_end, the flood's raise times, when each history
 * entry was made) are monotonic; the raised/acked/cleared/last times are
 * wall-clock labels and nothing is timed from them. am->now is the newest
 * (by the monotonic clock) pair any call passed in: the labels of
 * deadlines in snapshots and in the state file are computed from it. The
 * file has only wall-clock times (the monotonic clock restarts at boot):
 * save_wall() turns a deadline into one, load_deadline() and load_past()
 * turn it back, counting from the file's saved_ms (see alarm.h). Files
 * written before these clocks (format /1 as well) have the same meaning:
 * wall-clock deadlines and a saved_ms.
 *
 * The gateway's own alarms (spool-failed, state-save-failed) are ordinary
 * records whose rule and device are this module's own (self_rule[],
 * self_dev: the gateway), registered at open and kept across reloads, so
 * acknowledging, shelving, the state file and the annunciators treat them
 * like any other. The state file's fallback (alarm.h) is chosen at open
 * (no directory is created until a save needs it); state_where remembers
 * where the last save went, so each change is logged once and raises or
 * clears state-save-failed, rather than one error line per save. */
#include "alarm.h"
#include "site.h"
#include "err.h"
#include "fileio.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_FORMAT    "carehub-alarm-state/1"
#define STATE_HISTORY   256        /* transitions kept in the state file */
#define STATE_MAX_BYTES (64 << 20) /* a bigger state file is damaged */

/* Where the last save of the state went. */
enum { STATE_UNKNOWN = 0, STATE_PRIMARY, STATE_FALLBACK, STATE_NOWHERE };

/* The gateway's own alarms, by enum alarm_self. */
static const struct {
    const char *id;
    int priority;
} self_alarms[ALARM_SELF_N] = {
    [ALARM_SELF_SPOOL] = {"spool-failed", CH_PRIO_HIGH},
    [ALARM_SELF_STATE] = {"state-save-failed", CH_PRIO_MEDIUM},
};

/* Names as on the wire (codec.h), for the alarm records of the state file
 * (history entries go through the codec itself). */
static const char *const state_names[] = {"normal",    "unack",   "acked",
                                          "rtn_unack", "shelved", "out_of_service"};
static const char *const event_names[] = {"raise",      "ack",    "clear",    "rtn",
                                          "escalate",   "shelve", "unshelve", "out_of_service",
                                          "in_service", "flood",  "flood_end"};

static int name_index(const char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; s && i < n; i++)
        if (strcmp(names[i], s) == 0)
            return (int)i;
    return -1;
}

struct alarm {
    char id[CH_ALARM_ID_MAX];
    const struct rule_cfg *rule; /* NULL: the flood alarm */
    const struct device_cfg *dev;
    const struct resident_cfg *res;
    int state; /* enum ch_alarm_state */
    bool cond; /* condition active, as last reported */
    int escalation;
    bool escalating;                         /* next_escalate is set */
    int64_t raised_ms, acked_ms, cleared_ms; /* wall-clock labels */
    int64_t shelve_end, next_escalate;       /* monotonic deadlines */
    int last_event;
    int64_t last_ms; /* wall-clock label of the last transition */
    char by[CH_ID_MAX];
    char metric[CH_ID_MAX];
    bool has_value;
    double value;
    char message[CH_TEXT_MAX];
    char where[CH_ID_MAX]; /* the zone it was located in last ("": the configured room) */
    int64_t where_ms;      /* wall clock of the latest reading located there */
    int64_t noted_ms;      /* label of its last "notified" transition */
    bool live;             /* registered by the rules engine of the configuration in force */
};

struct alarms {
    pthread_mutex_t lock;
    const struct site_config *c;
    alarm_sink_fn sink;
    void *arg;
    /* records */
    struct alarm **all;
    size_t n, cap;
    struct alarm **tab; /* open addressing by id; size a power of two */
    size_t tab_n;
    struct alarm flood;
    bool flooding;
    char flood_id[CH_ALARM_ID_MAX];
    /* the last flood_count + 1 raise times (monotonic), a ring */
    int64_t *raises;
    size_t raises_cap, raises_head, raises_n;
    /* history ring, grows up to history_max */
    struct hist *hist;
    size_t hist_cap, hist_head, hist_n, hist_max;
    /* transitions made, not yet handed to the sink */
    struct ch_alert *pending;
    size_t pend_n, pend_cap;
    bool delivering;
    bool dirty;
    struct ch_time now; /* the newest time a call passed in */
    struct alarms_stats st;
    /* the gateway's own alarms: rules and a device of this module's own */
    struct rule_cfg self_rule[ALARM_SELF_N];
    char self_id[ALARM_SELF_N][CH_ID_MAX];
    struct device_cfg self_dev;
    char self_gw[CH_ID_MAX];
    /* the state file's fallback, and where the last save went */
    char *state_fallback;
    char state_fallback_dir[PATH_MAX];
    int state_where;
};

struct hist {
    struct ch_alert t;
    int64_t mono; /* when it was made */
};

/* The wall-clock label of the monotonic time mono, as of am->now. */
static int64_t save_wall(const struct alarms *am, int64_t mono)
{
    return am->now.wall_ms + (mono - am->now.mono_ms);
}

/* ---- records ------------------------------------------------------------ */

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static struct alarm *find(struct alarms *am, const char *id)
{
    if (strcmp(id, am->flood_id) == 0)
        return &am->flood;
    if (!am->tab_n)
        return NULL;
    size_t mask = am->tab_n - 1;
    for (size_t i = hash_str(id) & mask;; i = (i + 1) & mask) {
        struct alarm *a = am->tab[i];
        if (!a)
            return NULL;
        if (strcmp(a->id, id) == 0)
            return a;
    }
}

static void tab_insert(struct alarm **tab, size_t n, struct alarm *a)
{
    size_t mask = n - 1, i = hash_str(a->id) & mask;
    while (tab[i])
        i = (i + 1) & mask;
    tab[i] = a;
}

static const struct resident_cfg *resident_of(const struct site_config *c, const char *dev)
{
    for (size_t i = 0; i < c->residents.n; i++) {
        const struct resident_cfg *r = SITE_RESIDENT(c, i);
        for (size_t k = 0; k < r->devices.n; k++)
            if (strcmp(((char **)r->devices.items)[k], dev) == 0)
                return r;
    }
    return NULL;
}

static struct alarm *get(struct alarms *am, const struct rule_cfg *rule,
                         const struct device_cfg *dev, const struct resident_cfg *res)
{
    char id[CH_ALARM_ID_MAX];
    snprintf(id, sizeof id, "%s:%s", rule->id, dev->id);
    struct alarm *a = find(am, id);
    if (a && a != &am->flood) {
        a->rule = rule; /* the same ids, perhaps a reloaded model */
        a->dev = dev;
        a->res = res;
        a->live = true;
        return a;
    }
    if ((am->n + 1) * 2 > am->tab_n) {
        size_t nn = am->tab_n ? am->tab_n * 2 : 64;
        struct alarm **t = ch_xcalloc(nn, sizeof *t);
        for (size_t i = 0; i < am->n; i++)
            tab_insert(t, nn, am->all[i]);
        free(am->tab);
        am->tab = t;
        am->tab_n = nn;
    }
    if (am->n == am->cap) {
        am->cap = am->cap ? am->cap * 2 : 64;
        am->all = ch_xrealloc(am->all, am->cap * sizeof *am->all);
    }
    a = ch_xcalloc(1, sizeof *a);
    ch_strlcpy(a->id, id, sizeof a->id);
    a->rule = rule;
    a->dev = dev;
    a->res = res;
    a->live = true;
    a->state = CH_AS_NORMAL;
    am->all[am->n++] = a;
    tab_insert(am->tab, am->tab_n, a);
    return a;
}

/* ---- transitions -------------------------------------------------------- */

static void fill(const struct alarms *am, const struct alarm *a, struct ch_alert *t)
{
    const struct site_config *c = am->c;
    memset(t, 0, sizeof *t);
    ch_strlcpy(t->site, c->site, sizeof t->site);
    ch_strlcpy(t->gateway, c->gateway, sizeof t->gateway);
    ch_strlcpy(t->alarm_id, a->id, sizeof t->alarm_id);
    if (a->rule) {
        ch_strlcpy(t->rule, a->rule->id, sizeof t->rule);
        ch_strlcpy(t->device, a->dev->id, sizeof t->device);
        /* where a carer must go: the wearable's zone, else the room */
        const char *room = a->where[0]                     ? a->where
                           : a->dev->room && *a->dev->room ? a->dev->room
                           : a->res && a->res->room        ? a->res->room
                                                           : "";
        ch_strlcpy(t->room, room, sizeof t->room);
        if (a->res) {
            ch_strlcpy(t->bed, a->res->bed ? a->res->bed : "", sizeof t->bed);
            ch_strlcpy(t->resident, a->res->id, sizeof t->resident);
            const char *bed = site_bed_name(c, a->res->room, a->res->bed);
            ch_strlcpy(t->bed_name, bed ? bed : "", sizeof t->bed_name);
            ch_strlcpy(t->resident_name, a->res->name ? a->res->name : "", sizeof t->resident_name);
        }
        const char *room_name = site_room_name(c, room);
        ch_strlcpy(t->room_name, room_name ? room_name : "", sizeof t->room_name);
        ch_strlcpy(t->device_name, a->dev->name ? a->dev->name : "", sizeof t->device_name);
        ch_strlcpy(t->kind, rule_kind_name(a->rule->kind), sizeof t->kind);
        /* located: a zone other than the configured room (a wearable's);
         * a meter's readings carry its own room, which says nothing new */
        const char *home = a->dev->room && *a->dev->room ? a->dev->room
                           : a->res && a->res->room      ? a->res->room
                                                         : "";
        t->located_ms = a->where[0] && strcmp(a->where, home) ? a->where_ms : 0;
        t->priority = a->rule->priority;
        t->latched = a->rule->latch;
        if (am->flooding && t->priority == CH_PRIO_LOW)
            ch_strlcpy(t->group, am->flood_id, sizeof t->group);
    } else {
        ch_strlcpy(t->rule, "flood", sizeof t->rule);
        ch_strlcpy(t->device, c->gateway, sizeof t->device);
        t->priority = CH_PRIO_HIGH;
    }
    ch_strlcpy(t->site_name, c->site_name ? c->site_name : "", sizeof t->site_name);
    t->state = a->state;
    t->event = a->last_event;
    t->escalation = a->escalation;
    ch_strlcpy(t->metric, a->metric, sizeof t->metric);
    t->has_value = a->has_value;
    t->value = a->has_value ? a->value : 0;
    ch_strlcpy(t->message, a->message, sizeof t->message);
    t->ts_ms = a->last_ms;
    t->raised_ms = a->raised_ms;
    t->acked_ms = a->acked_ms;
    t->cleared_ms = a->cleared_ms;
    /* a label: the wall clock now plus what is left */
    t->shelved_until_ms = a->state == CH_AS_SHELVED ? save_wall(am, a->shelve_end) : 0;
    ch_strlcpy(t->by, a->by, sizeof t->by);
}

static void history_push(struct alarms *am, const struct ch_alert *t, int64_t mono)
{
    if (am->hist_max == 0)
        return;
    struct hist e = {.t = *t, .mono = mono};
    if (am->hist_n == am->hist_cap && am->hist_cap < am->hist_max) {
        size_t nc = am->hist_cap ? am->hist_cap * 2 : 64;
        if (nc > am->hist_max)
            nc = am->hist_max;
        struct hist *h = ch_xcalloc(nc, sizeof *h);
        for (size_t i = 0; i < am->hist_n; i++)
            h[i] = am->hist[(am->hist_head + i) % am->hist_cap];
        free(am->hist);
        am->hist = h;
        am->hist_cap = nc;
        am->hist_head = 0;
    }
    if (am->hist_n == am->hist_cap) { /* full at history_max: the oldest goes */
        am->hist[am->hist_head] = e;
        am->hist_head = (am->hist_head + 1) % am->hist_cap;
        return;
    }
    am->hist[(am->hist_head + am->hist_n) % am->hist_cap] = e;
    am->hist_n++;
}

/* Forgets transitions made more than history_ms before now (monotonic). */
static void history_trim(struct alarms *am, int64_t now)
{
    int64_t oldest = now - am->c->alarms.history_ms;
    while (am->hist_n && am->hist[am->hist_head].mono < oldest) {
        am->hist_head = (am->hist_head + 1) % am->hist_cap;
        am->hist_n--;
    }
}

/* Puts transition t in the history and the transitions to deliver. */
static void record(struct alarms *am, const struct ch_alert *t, struct ch_time now)
{
    history_push(am, t, now.mono_ms);
    if (am->pend_n == am->pend_cap) {
        am->pend_cap = am->pend_cap ? am->pend_cap * 2 : 8;
        am->pending = ch_xrealloc(am->pending, am->pend_cap * sizeof *am->pending);
    }
    am->pending[am->pend_n++] = *t;
    am->st.transitions++;
}

/* Records one transition of a: history, pending delivery, state to save. */
static void emit(struct alarms *am, struct alarm *a, int event, struct ch_time now)
{
    a->last_event = event;
    a->last_ms = now.wall_ms;
    struct ch_alert t;
    fill(am, a, &t);
    record(am, &t, now);
    am->dirty = true;
}

/* now: monotonic. */
static size_t raises_in_window(const struct alarms *am, int64_t now)
{
    size_t n = 0;
    int64_t from = now - am->c->alarms.flood_window_ms;
    for (size_t i = 0; i < am->raises_n; i++) {
        size_t k = (am->raises_head + am->raises_n - 1 - i) % am->raises_cap;
        if (am->raises[k] <= from)
            break;
        n++;
    }
    return n;
}

static void flood_note_raise(struct alarms *am, struct ch_time now)
{
    if (am->raises_n == am->raises_cap) {
        am->raises[am->raises_head] = now.mono_ms;
        am->raises_head = (am->raises_head + 1) % am->raises_cap;
    } else {
        am->raises[(am->raises_head + am->raises_n) % am->raises_cap] = now.mono_ms;
        am->raises_n++;
    }
    size_t n = raises_in_window(am, now.mono_ms);
    if (am->flooding || n <= (size_t)am->c->alarms.flood_count)
        return;
    am->flooding = true;
    am->st.floods++;
    struct alarm *f = &am->flood;
    f->state = CH_AS_UNACK;
    f->raised_ms = now.wall_ms;
    f->acked_ms = f->cleared_ms = 0;
    f->by[0] = '\0';
    f->has_value = true;
    f->value = (double)n;
    snprintf(f->message, sizeof f->message,
             "alarm flood: more than %lld alarms within %lld min; low-priority alarms grouped",
             (long long)am->c->alarms.flood_count,
             (long long)(am->c->alarms.flood_window_ms / 60000));
    LOGW("alarm", am->flood_id, "%s", f->message);
    emit(am, f, CH_AE_FLOOD, now);
}

static void flood_check_end(struct alarms *am, struct ch_time now)
{
    if (!am->flooding)
        return;
    size_t n = raises_in_window(am, now.mono_ms);
    if (2 * n >= (size_t)am->c->alarms.flood_count)
        return;
    am->flooding = false;
    struct alarm *f = &am->flood;
    f->state = CH_AS_NORMAL;
    f->cleared_ms = now.wall_ms;
    f->value = (double)n;
    snprintf(f->message, sizeof f->message, "alarm flood over: %zu alarms in the last %lld min", n,
             (long long)(am->c->alarms.flood_window_ms / 60000));
    LOGI("alarm", am->flood_id, "%s", f->message);
    emit(am, f, CH_AE_FLOOD_END, now);
}

static void raise_alarm(struct alarms *am, struct alarm *a, struct ch_time now)
{
    if (a->state != CH_AS_RTN_UNACK) { /* a new occurrence */
        a->raised_ms = now.wall_ms;
        a->acked_ms = 0;
        a->escalation = 0;
        a->by[0] = '\0';
    }
    a->cleared_ms = 0;
    a->state = CH_AS_UNACK;
    a->escalating = a->rule->escalate_ms > 0;
    a->next_escalate = now.mono_ms + a->rule->escalate_ms;
    am->st.raised++;
    emit(am, a, CH_AE_RAISE, now);
    flood_note_raise(am, now);
}

/* Shelving or out of service ends: back to normal, raised again at once if
 * the condition is active. */
static void back_in(struct alarms *am, struct alarm *a, int event, const char *by,
                    struct ch_time now)
{
    a->state = CH_AS_NORMAL;
    ch_utf8_copy(a->by, by ? by : "", sizeof a->by);
    emit(am, a, event, now);
    if (a->cond)
        raise_alarm(am, a, now);
}

/* ---- the state file ----------------------------------------------------- */

/* A history entry is stored as the alert message itself (the contract,
 * schemas/codec.h): one encoder and one strict decoder for both. */
static json_t *alert_json(const struct ch_alert *t)
{
    char *text = ch_alert_encode(t);
    json_t *o = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    return o;
}

/* Readers for the state file: false if the field is missing or wrong. */
static bool rd_str(const json_t *o, const char *key, char *dst, size_t n)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_string(v) || json_string_length(v) >= n ||
        strlen(json_string_value(v)) != json_string_length(v))
        return false;
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return true;
}

static bool rd_int(const json_t *o, const char *key, int64_t min, int64_t max, int64_t *out)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        return false;
    json_int_t x = json_integer_value(v);
    if (x < min || x > max)
        return false;
    *out = (int64_t)x;
    return true;
}

static bool rd_name(const json_t *o, const char *key, const char *const *names, size_t n, int *out)
{
    int i = name_index(names, n, json_string_value(json_object_get(o, key)));
    if (i < 0)
        return false;
    *out = i;
    return true;
}

static bool rd_alert(const json_t *o, struct ch_alert *t)
{
    char err[160];
    return ch_alert_from_json(o, t, err, sizeof err) == 0;
}

static json_t *alarm_json(const struct alarms *am, const struct alarm *a)
{
    /* deadlines as wall-clock times (alarm.h); 0 is "none", so a real one
     * is at least 1 (a clock near 1970) */
    int64_t until = a->state == CH_AS_SHELVED ? save_wall(am, a->shelve_end) : 0;
    int64_t next = a->escalating ? save_wall(am, a->next_escalate) : 0;
    if (a->state == CH_AS_SHELVED && until < 1)
        until = 1;
    if (a->escalating && next < 1)
        next = 1;
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(a->id));
    json_object_set_new(o, "state", json_string(state_names[a->state]));
    json_object_set_new(o, "cond", json_boolean(a->cond));
    json_object_set_new(o, "escalation", json_integer(a->escalation));
    json_object_set_new(o, "raised_ms", json_integer(a->raised_ms));
    json_object_set_new(o, "acked_ms", json_integer(a->acked_ms));
    json_object_set_new(o, "cleared_ms", json_integer(a->cleared_ms));
    json_object_set_new(o, "shelved_until_ms", json_integer(until));
    json_object_set_new(o, "next_escalate_ms", json_integer(next));
    json_object_set_new(o, "last_event", json_string(event_names[a->last_event]));
    json_object_set_new(o, "last_ms", json_integer(a->last_ms));
    json_object_set_new(o, "by", json_string(a->by));
    json_object_set_new(o, "metric", json_string(a->metric));
    if (a->has_value && isfinite(a->value))
        json_object_set_new(o, "value", json_real(a->value));
    json_object_set_new(o, "message", json_string(a->message));
    if (a->where[0]) {
        json_object_set_new(o, "where", json_string(a->where));
        json_object_set_new(o, "where_ms", json_integer(a->where_ms));
    }
    return o;
}

/* The clocks at load, for the state file's wall-clock times. */
struct loadclk {
    struct ch_time now;
    int64_t saved_ms; /* wall clock of the save */
    int64_t down_ms;  /* from the save to now by the wall clock; never < 0 */
};

/* A deadline from the file (wall clock) on the monotonic clock: what was
 * left at the save, less the downtime, never more than was left then. */
static int64_t load_deadline(const struct loadclk *lc, int64_t wall)
{
    int64_t left = wall - lc->saved_ms;
    if (left < 0)
        left = 0;
    left = left > lc->down_ms ? left - lc->down_ms : 0;
    return lc->now.mono_ms + left;
}

/* A past moment from the file (wall clock) on the monotonic clock: its age
 * at the save plus the downtime. */
static int64_t load_past(const struct loadclk *lc, int64_t wall)
{
    int64_t age = lc->saved_ms - wall;
    if (age < 0)
        age = 0;
    return lc->now.mono_ms - age - lc->down_ms;
}

static bool rd_alarm(const json_t *o, struct alarm *a, const struct loadclk *lc)
{
    memset(a, 0, sizeof *a);
    int64_t esc, until, next;
    const json_t *cond = json_object_get(o, "cond");
    const json_t *value = json_object_get(o, "value");
    if (!json_is_object(o) || !rd_str(o, "id", a->id, sizeof a->id) ||
        !rd_name(o, "state", state_names, CH_ARRAY_LEN(state_names), &a->state) ||
        !json_is_boolean(cond) || !rd_int(o, "escalation", 0, 1000, &esc) ||
        !rd_int(o, "raised_ms", 0, INT64_MAX, &a->raised_ms) ||
        !rd_int(o, "acked_ms", 0, INT64_MAX, &a->acked_ms) ||
        !rd_int(o, "cleared_ms", 0, INT64_MAX, &a->cleared_ms) ||
        !rd_int(o, "shelved_until_ms", 0, INT64_MAX, &until) ||
        !rd_int(o, "next_escalate_ms", 0, INT64_MAX, &next) ||
        !rd_name(o, "last_event", event_names, CH_ARRAY_LEN(event_names), &a->last_event) ||
        !rd_int(o, "last_ms", 0, INT64_MAX, &a->last_ms) || !rd_str(o, "by", a->by, sizeof a->by) ||
        !rd_str(o, "metric", a->metric, sizeof a->metric) ||
        !rd_str(o, "message", a->message, sizeof a->message))
        return false;
    if (value && !json_is_number(value))
        return false;
    /* "where" is absent from the files of the releases before it */
    if (json_object_get(o, "where") && !rd_str(o, "where", a->where, sizeof a->where))
        return false;
    if (json_object_get(o, "where_ms") && !rd_int(o, "where_ms", 0, INT64_MAX, &a->where_ms))
        return false;
    a->cond = json_is_true(cond);
    a->escalation = (int)esc;
    a->shelve_end = load_deadline(lc, until);
    a->escalating = next > 0;
    a->next_escalate = a->escalating ? load_deadline(lc, next) : 0;
    a->has_value = value != NULL;
    a->value = value ? json_number_value(value) : 0;
    return isfinite(a->value);
}

static void condition_locked(struct alarms *am, struct alarm *a, bool active, const char *metric,
                             double value, const char *where, const char *message,
                             struct ch_time now);
static struct alarm *self_alarm(struct alarms *am, enum alarm_self which);

/* Writes text to the fallback (alarm.h), making its directory if needed.
 * Returns 0 or -errno. */
static int write_fallback(struct alarms *am, const char *text)
{
    if (!am->state_fallback)
        return CH_EINVAL;
    if (mkdir(am->state_fallback_dir, 0700) != 0 && errno != EEXIST)
        return -errno;
    return ch_write_atomic(am->state_fallback, text, strlen(text));
}

/* After a save: logs where it went when that changed, removes a fallback no
 * longer needed, raises or clears state-save-failed. rc, rc2: the errors of
 * the state file and of the fallback. Locked. */
static void state_saved(struct alarms *am, int where, int rc, int rc2)
{
    const char *path = am->c->alarms.state_file;
    int was = am->state_where;
    am->state_where = where;
    am->st.state_fallback = where == STATE_FALLBACK;
    am->st.state_unsaved = where == STATE_NOWHERE;
    if (where == was)
        return;
    char msg[CH_TEXT_MAX];
    const char *e1 = rc == CH_ENOMEM ? "out of memory" : strerror(-rc);
    switch (where) {
    case STATE_PRIMARY:
        if (am->state_fallback && unlink(am->state_fallback) == 0 && was != STATE_UNKNOWN)
            LOGI("alarm", NULL, "alarm state saved to %s again (%s removed)", path,
                 am->state_fallback);
        else if (was != STATE_UNKNOWN)
            LOGI("alarm", NULL, "alarm state saved to %s again", path);
        break;
    case STATE_FALLBACK:
        LOGW("alarm", NULL,
             "cannot write the alarm state to %s (%s): saving it to %s until it can be (that "
             "survives a restart of care-edge, not a reboot)",
             path, e1, am->state_fallback);
        break;
    default:
        LOGE("alarm", NULL,
             "cannot write the alarm state to %s (%s) nor to %s (%s): a restart of care-edge "
             "would forget which alarms are active",
             path, e1, am->state_fallback ? am->state_fallback : "(none)",
             rc2 == CH_EINVAL ? "no fallback" : strerror(-rc2));
        break;
    }
    if (where == STATE_NOWHERE)
        snprintf(msg, sizeof msg,
                 "告警状态无法保存 / Alarm state cannot be saved (%s: %s): a restart would forget "
                 "active alarms",
                 path, e1);
    condition_locked(am, self_alarm(am, ALARM_SELF_STATE), where == STATE_NOWHERE, NULL, 0, NULL,
                     where == STATE_NOWHERE ? msg : NULL, am->now);
}

static void save_state(struct alarms *am)
{
    const char *path = am->c->alarms.state_file;
    if (!path || !*path)
        return;
    json_t *root = json_object();
    json_object_set_new(root, "format", json_string(STATE_FORMAT));
    json_object_set_new(root, "saved_ms", json_integer(am->now.wall_ms));
    json_t *list = json_array();
    for (size_t i = 0; i < am->n; i++)
        if (am->all[i]->state != CH_AS_NORMAL)
            json_array_append_new(list, alarm_json(am, am->all[i]));
    json_object_set_new(root, "alarms", list);
    json_t *raises = json_array();
    for (size_t i = 0; i < am->raises_n; i++)
        json_array_append_new(raises, json_integer(save_wall(
                                          am, am->raises[(am->raises_head + i) % am->raises_cap])));
    json_t *flood = json_object();
    json_object_set_new(flood, "active", json_boolean(am->flooding));
    json_object_set_new(flood, "raises", raises);
    if (am->flooding)
        json_object_set_new(flood, "alarm", alarm_json(am, &am->flood));
    json_object_set_new(root, "flood", flood);
    json_t *hist = json_array();
    size_t from = am->hist_n > STATE_HISTORY ? am->hist_n - STATE_HISTORY : 0;
    for (size_t i = from; i < am->hist_n; i++) {
        json_t *e = alert_json(&am->hist[(am->hist_head + i) % am->hist_cap].t);
        if (e) /* the module only makes alerts the contract accepts; never lose the rest */
            json_array_append_new(hist, e);
    }
    json_object_set_new(root, "history", hist);
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    int rc = text ? ch_write_atomic(path, text, strlen(text)) : CH_ENOMEM, rc2 = 0;
    int where = STATE_PRIMARY;
    if (rc != 0) {
        am->st.state_errors++;
        rc2 = text ? write_fallback(am, text) : CH_ENOMEM;
        where = rc2 == 0 ? STATE_FALLBACK : STATE_NOWHERE;
    }
    free(text);
    state_saved(am, where, rc, rc2);
}

static const struct rule_cfg *find_rule(const struct site_config *c, const char *id)
{
    for (size_t i = 0; i < c->n_all_rules; i++)
        if (strcmp(c->all_rules[i]->id, id) == 0)
            return c->all_rules[i];
    return NULL;
}

static const struct device_cfg *find_device(const struct site_config *c, const char *id)
{
    for (size_t i = 0; i < c->devices.n; i++)
        if (strcmp(SITE_DEV(c, i)->id, id) == 0)
            return SITE_DEV(c, i);
    return NULL;
}

/* Applies a parsed state file. Returns NULL, or what is wrong with it. */
static const char *apply_state(struct alarms *am, const json_t *root)
{
    if (!json_is_object(root))
        return "not a JSON object";
    if (!json_is_string(json_object_get(root, "format")) ||
        strcmp(json_string_value(json_object_get(root, "format")), STATE_FORMAT) != 0)
        return "format is not " STATE_FORMAT;
    const json_t *list = json_object_get(root, "alarms");
    const json_t *flood = json_object_get(root, "flood");
    const json_t *hist = json_object_get(root, "history");
    if (!json_is_array(list) || !json_is_object(flood) || !json_is_array(hist))
        return "alarms, flood or history missing";
    const json_t *saved = json_object_get(root, "saved_ms");
    if (saved && !json_is_integer(saved))
        return "saved_ms is not an integer";
    struct loadclk lc = {.now = am->now,
                         .saved_ms = saved ? (int64_t)json_integer_value(saved) : am->now.wall_ms};
    lc.down_ms = am->now.wall_ms > lc.saved_ms ? am->now.wall_ms - lc.saved_ms : 0;
    if (lc.saved_ms > am->now.wall_ms + 2000)
        LOGW("alarm", NULL,
             "the alarm state was saved %lld s ahead of the wall clock now (clock set back, or "
             "not set yet): shelving and escalation resume with the time they had left",
             (long long)((lc.saved_ms - am->now.wall_ms) / 1000));
    size_t i;
    const json_t *v;
    json_array_foreach(list, i, v)
    {
        struct alarm tmp;
        if (!rd_alarm(v, &tmp, &lc))
            return "an alarm has a missing or bad field";
        char rule_id[CH_ALARM_ID_MAX];
        ch_strlcpy(rule_id, tmp.id, sizeof rule_id);
        char *colon = strchr(rule_id, ':');
        if (!colon)
            return "an alarm id is not rule:device";
        *colon = '\0';
        const struct rule_cfg *rule = find_rule(am->c, rule_id);
        const struct device_cfg *dev = find_device(am->c, colon + 1);
        for (int k = 0; k < ALARM_SELF_N; k++) /* the gateway's own */
            if (!strcmp(rule_id, am->self_rule[k].id) && !strcmp(colon + 1, am->self_gw)) {
                rule = &am->self_rule[k];
                dev = &am->self_dev;
            }
        if (!rule || !dev) {
            LOGW("alarm", tmp.id, "dropped from the saved state: its %s is no longer configured",
                 rule ? "device" : "rule");
            continue;
        }
        struct alarm *a = get(am, rule, dev, resident_of(am->c, dev->id));
        tmp.rule = a->rule;
        tmp.dev = a->dev;
        tmp.res = a->res;
        *a = tmp;
    }
    const json_t *active = json_object_get(flood, "active");
    const json_t *raises = json_object_get(flood, "raises");
    if (!json_is_boolean(active) || !json_is_array(raises))
        return "flood state has a missing or bad field";
    json_array_foreach(raises, i, v)
    {
        if (!json_is_integer(v))
            return "flood raise times are not integers";
        int64_t ts = load_past(&lc, (int64_t)json_integer_value(v));
        if (am->raises_n == am->raises_cap) {
            am->raises[am->raises_head] = ts;
            am->raises_head = (am->raises_head + 1) % am->raises_cap;
        } else {
            am->raises[(am->raises_head + am->raises_n++) % am->raises_cap] = ts;
        }
    }
    if (json_is_true(active)) {
        struct alarm tmp;
        if (!rd_alarm(json_object_get(flood, "alarm"), &tmp, &lc) ||
            strcmp(tmp.id, am->flood_id) != 0)
            return "the flood alarm has a missing or bad field";
        am->flood = tmp;
        am->flooding = true;
    }
    json_array_foreach(hist, i, v)
    {
        struct ch_alert t;
        if (!rd_alert(v, &t))
            return "a history entry has a missing or bad field";
        history_push(am, &t, load_past(&lc, t.ts_ms));
    }
    return NULL;
}

/* Forgets everything loaded (after a damaged file). */
static void reset(struct alarms *am)
{
    for (size_t i = 0; i < am->n; i++)
        free(am->all[i]);
    am->n = 0;
    if (am->tab)
        memset(am->tab, 0, am->tab_n * sizeof *am->tab);
    am->raises_n = am->raises_head = 0;
    am->hist_n = am->hist_head = 0;
    am->flooding = false;
    memset(&am->flood, 0, sizeof am->flood);
    ch_strlcpy(am->flood.id, am->flood_id, sizeof am->flood.id);
}

/* Reads a state file. Returns its JSON, or NULL: missing (*why NULL),
 * unreadable (logged, *why NULL) or damaged (*why says how; jerr holds it). */
static json_t *read_state(const char *path, const char **why, char *jerr, size_t n)
{
    *why = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT)
            LOGE("alarm", NULL, "cannot read the alarm state %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    json_t *root = NULL;
    if (fstat(fd, &st) != 0 || st.st_size > STATE_MAX_BYTES) {
        *why = "too big";
    } else {
        json_error_t je;
        root = json_loadfd(fd, JSON_REJECT_DUPLICATES, &je);
        if (!root) {
            snprintf(jerr, n, "line %d: %s", je.line, je.text);
            *why = jerr;
        }
    }
    close(fd);
    return root;
}

static int64_t saved_of(const json_t *root)
{
    const json_t *v = json_object_get(root, "saved_ms");
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

/* Loads the newer of state_file and its fallback (alarm.h). A damaged
 * state_file is kept aside as .bad; a damaged fallback is ignored. */
static void load_state(struct alarms *am)
{
    const char *path = am->c->alarms.state_file;
    if (!path || !*path)
        return;
    char jerr[200], ferr[200];
    const char *why = NULL, *fwhy = NULL;
    json_t *root = read_state(path, &why, jerr, sizeof jerr);
    json_t *fb =
        am->state_fallback ? read_state(am->state_fallback, &fwhy, ferr, sizeof ferr) : NULL;
    if (fwhy)
        LOGW("alarm", NULL, "alarm state fallback %s is damaged (%s): ignored", am->state_fallback,
             fwhy);
    const char *from = path, *bad_fb = NULL;
    if (fb && (!root || saved_of(fb) > saved_of(root))) {
        bad_fb = apply_state(am, fb);
        if (!bad_fb) {
            from = am->state_fallback;
            am->state_where = STATE_FALLBACK; /* the first save to state_file says so */
            LOGW("alarm", NULL,
                 "alarm state read from the fallback %s, saved after %s (which could not be "
                 "written then)",
                 from, path);
        } else {
            LOGW("alarm", NULL, "alarm state fallback %s: %s; ignored", am->state_fallback, bad_fb);
            reset(am);
        }
    }
    bool loaded = from != path;
    if (!loaded && root && !why)
        why = apply_state(am, root);
    json_decref(root);
    json_decref(fb);
    if (!loaded && !root && !why)
        return; /* no state yet */
    if (!why || loaded) {
        size_t kept = 0;
        for (size_t i = 0; i < am->n; i++)
            kept += am->all[i]->state != CH_AS_NORMAL;
        LOGI("alarm", NULL, "restored %zu alarm(s) not in normal from %s", kept, from);
        if (!why)
            return;
    } else {
        reset(am);
    }
    char bad[PATH_MAX];
    snprintf(bad, sizeof bad, "%s.bad", path);
    if (rename(path, bad) == 0)
        LOGE("alarm", NULL, "alarm state %s is damaged (%s): kept as %s%s", path, why, bad,
             loaded ? "" : ", starting empty");
    else
        LOGE("alarm", NULL, "alarm state %s is damaged (%s) and cannot be moved aside (%s)%s", path,
             why, strerror(errno), loaded ? "" : "; starting empty");
}

/* ---- delivery ----------------------------------------------------------- */

/* Ends a public call: saves the state if it changed, then hands pending
 * transitions to the sink outside the lock. Called with the lock held;
 * returns with it released. */
static void finish(struct alarms *am)
{
    if (am->dirty) {
        am->dirty = false;
        save_state(am);
    }
    if (am->delivering || am->pend_n == 0) {
        pthread_mutex_unlock(&am->lock);
        return;
    }
    am->delivering = true;
    while (am->pend_n) {
        struct ch_alert *batch = am->pending;
        size_t n = am->pend_n;
        am->pending = NULL;
        am->pend_n = am->pend_cap = 0;
        pthread_mutex_unlock(&am->lock);
        for (size_t i = 0; i < n; i++)
            if (am->sink)
                am->sink(am->arg, &batch[i]);
        free(batch);
        pthread_mutex_lock(&am->lock);
    }
    am->delivering = false;
    pthread_mutex_unlock(&am->lock);
}

static void enter(struct alarms *am, struct ch_time now)
{
    pthread_mutex_lock(&am->lock);
    if (now.mono_ms >= am->now.mono_ms)
        am->now = now;
}

/* ---- the API ------------------------------------------------------------ */

/* Where the state file goes when it cannot be written (alarm.h). */
static void fallback_init(struct alarms *am, const char *path)
{
    const char *rd = getenv("RUNTIME_DIRECTORY"), *tmp = getenv("TMPDIR");
    if (rd && *rd) /* systemd may list several, colon-separated */
        snprintf(am->state_fallback_dir, sizeof am->state_fallback_dir, "%.*s",
                 (int)strcspn(rd, ":"), rd);
    else if (access("/run/carehub", W_OK) == 0 || access("/run", W_OK) == 0)
        ch_strlcpy(am->state_fallback_dir, "/run/carehub", sizeof am->state_fallback_dir);
    else
        ch_strlcpy(am->state_fallback_dir, tmp && *tmp ? tmp : "/tmp",
                   sizeof am->state_fallback_dir);
    uint64_t h = ch_fnv1a(CH_FNV1A_INIT, path, strlen(path)); /* one per state file */
    size_t n = strlen(am->state_fallback_dir) + 40;
    am->state_fallback = ch_xmalloc(n);
    snprintf(am->state_fallback, n, "%s/alarms-%016llx.state", am->state_fallback_dir,
             (unsigned long long)h);
}

/* The gateway's own alarms: rules and a device of the module's own. */
static void self_init(struct alarms *am, const struct site_config *c)
{
    ch_strlcpy(am->self_gw, c->gateway, sizeof am->self_gw);
    am->self_dev.id = am->self_gw;
    am->self_dev.slave = -1;
    am->self_dev.enabled = true;
    for (int i = 0; i < ALARM_SELF_N; i++) {
        struct rule_cfg *r = &am->self_rule[i];
        ch_strlcpy(am->self_id[i], self_alarms[i].id, sizeof am->self_id[i]);
        r->id = am->self_id[i];
        r->priority = self_alarms[i].priority;
        r->kind = KIND_GATEWAY;
        get(am, r, &am->self_dev, NULL);
    }
    if (c->alarms.state_file && *c->alarms.state_file)
        fallback_init(am, c->alarms.state_file);
}

static bool is_self(const struct alarms *am, const struct alarm *a)
{
    for (int i = 0; i < ALARM_SELF_N; i++)
        if (a->rule == &am->self_rule[i])
            return true;
    return false;
}

int alarms_open(const struct site_config *c, alarm_sink_fn sink, void *arg, struct ch_time now,
                struct alarms **out)
{
    *out = NULL;
    if (c->alarms.flood_count < 1 || c->alarms.flood_window_ms <= 0) {
        LOGE("alarm", NULL, "flood_count and flood_window must be positive");
        return CH_EINVAL;
    }
    struct alarms *am = ch_xcalloc(1, sizeof *am);
    pthread_mutex_init(&am->lock, NULL);
    am->c = c;
    am->sink = sink;
    am->arg = arg;
    am->now = now;
    snprintf(am->flood_id, sizeof am->flood_id, "flood:%s", c->gateway);
    ch_strlcpy(am->flood.id, am->flood_id, sizeof am->flood.id);
    am->raises_cap = (size_t)c->alarms.flood_count + 1;
    am->raises = ch_xcalloc(am->raises_cap, sizeof *am->raises);
    am->hist_max = c->alarms.history_max > 0 ? (size_t)c->alarms.history_max : 0;
    self_init(am, c);
    load_state(am);
    *out = am;
    return 0;
}

void alarms_close(struct alarms *am)
{
    if (!am)
        return;
    for (size_t i = 0; i < am->n; i++)
        free(am->all[i]);
    free(am->all);
    free(am->tab);
    free(am->raises);
    free(am->hist);
    free(am->pending);
    free(am->state_fallback);
    pthread_mutex_destroy(&am->lock);
    free(am);
}

void alarms_reconfigure(struct alarms *am, const struct site_config *c)
{
    pthread_mutex_lock(&am->lock);
    am->c = c;
    size_t cap = (size_t)c->alarms.flood_count + 1;
    if (cap != am->raises_cap) { /* keep the newest raise times */
        int64_t *r = ch_xcalloc(cap, sizeof *r);
        size_t keep = am->raises_n < cap ? am->raises_n : cap;
        for (size_t i = 0; i < keep; i++)
            r[i] = am->raises[(am->raises_head + am->raises_n - keep + i) % am->raises_cap];
        free(am->raises);
        am->raises = r;
        am->raises_cap = cap;
        am->raises_head = 0;
        am->raises_n = keep;
    }
    am->hist_max = c->alarms.history_max > 0 ? (size_t)c->alarms.history_max : 0;
    for (size_t i = 0; i < am->n; i++)
        am->all[i]->live = is_self(am, am->all[i]); /* no rules engine reports these */
    pthread_mutex_unlock(&am->lock);
}

void alarms_reconfigured(struct alarms *am, struct ch_time now)
{
    /* nothing will report these conditions again: they are over, as if
     * they had cleared (a latched alarm still waits for its acknowledgement) */
    struct alarm **gone = NULL;
    size_t n = 0;
    pthread_mutex_lock(&am->lock);
    for (size_t i = 0; i < am->n; i++) {
        struct alarm *a = am->all[i];
        if (a->live || !a->cond)
            continue;
        gone = ch_xrealloc(gone, (n + 1) * sizeof *gone);
        gone[n++] = a;
    }
    pthread_mutex_unlock(&am->lock);
    for (size_t i = 0; i < n; i++) {
        LOGW("alarm", gone[i]->id, "its rule or device is no longer configured: condition over");
        /* records are never freed while the module is open, and the rule
         * and device they point to belong to a model kept alive */
        alarms_condition(am, gone[i]->rule, gone[i]->dev, gone[i]->res, false, NULL, 0, NULL, NULL,
                         now);
        gone[i]->live = false;
    }
    free(gone);
}

void alarms_register(struct alarms *am, const struct rule_cfg *rule, const struct device_cfg *dev,
                     const struct resident_cfg *resident)
{
    if (!am || !rule || !dev)
        return;
    pthread_mutex_lock(&am->lock);
    get(am, rule, dev, resident);
    pthread_mutex_unlock(&am->lock);
}

/* The condition of alarm a is active or not at now (alarms_condition).
 * Locked. */
static void condition_locked(struct alarms *am, struct alarm *a, bool active, const char *metric,
                             double value, const char *where, const char *message,
                             struct ch_time now)
{
    const struct rule_cfg *rule = a->rule;
    bool was = a->cond;
    a->cond = active;
    if (active) {
        ch_strlcpy(a->where, where ? where : "", sizeof a->where);
        a->where_ms = a->where[0] ? now.wall_ms : 0;
        ch_strlcpy(a->metric, metric ? metric : "", sizeof a->metric);
        a->has_value = metric && isfinite(value);
        a->value = a->has_value ? value : 0;
        if (message)
            ch_utf8_copy(a->message, message, sizeof a->message);
    }
    switch (a->state) {
    case CH_AS_NORMAL:
    case CH_AS_RTN_UNACK:
        if (active)
            raise_alarm(am, a, now);
        break;
    case CH_AS_UNACK:
        if (active && !was) {
            a->cleared_ms = 0; /* a latched alarm whose condition came back */
        } else if (!active && was) {
            a->cleared_ms = now.wall_ms;
            if (!rule->latch) {
                a->state = CH_AS_RTN_UNACK;
                emit(am, a, CH_AE_RTN, now);
            }
        }
        break;
    case CH_AS_ACKED:
        if (!active) {
            a->cleared_ms = now.wall_ms;
            a->state = CH_AS_NORMAL;
            emit(am, a, CH_AE_CLEAR, now);
        }
        break;
    default: /* shelved, out of service: remembered for when they end */
        break;
    }
}

void alarms_condition(struct alarms *am, const struct rule_cfg *rule, const struct device_cfg *dev,
                      const struct resident_cfg *resident, bool active, const char *metric,
                      double value, const char *where, const char *message, struct ch_time now)
{
    if (!am || !rule || !dev)
        return;
    enter(am, now);
    condition_locked(am, get(am, rule, dev, resident), active, metric, value, where, message, now);
    finish(am);
}

void alarms_where(struct alarms *am, const struct device_cfg *dev, const char *where,
                  struct ch_time now)
{
    if (!am || !dev || !where || !where[0])
        return;
    enter(am, now);
    for (size_t i = 0; i < am->n; i++) {
        struct alarm *a = am->all[i];
        if (a->dev != dev || a->state == CH_AS_NORMAL)
            continue;
        a->where_ms = now.wall_ms;
        if (strcmp(a->where, where)) {
            ch_strlcpy(a->where, where, sizeof a->where);
            am->dirty = true; /* kept across a restart like the rest of it */
        }
    }
    finish(am);
}

void alarms_note(struct alarms *am, const char *alarm_id, int64_t raised_ms, int level,
                 const char *who, const char *text, struct ch_time now)
{
    if (!am || !alarm_id || !who || !*who)
        return;
    enter(am, now);
    struct alarm *a = find(am, alarm_id);
    if (a && a->raised_ms == raised_ms && raised_ms) {
        struct ch_alert t;
        fill(am, a, &t);
        t.event = CH_AE_NOTIFIED;
        /* one label each: the hub stores a transition as a point of its
         * time, and an acknowledgement may end several deliveries at once */
        t.ts_ms = now.wall_ms > a->noted_ms && now.wall_ms > a->last_ms
                      ? now.wall_ms
                      : (a->noted_ms > a->last_ms ? a->noted_ms : a->last_ms) + 1;
        a->noted_ms = t.ts_ms;
        t.escalation = level < 0 ? 0 : level > CH_ESCALATION_MAX ? CH_ESCALATION_MAX : level;
        ch_utf8_copy(t.by, who, sizeof t.by);
        ch_utf8_copy(t.message, text ? text : "", sizeof t.message);
        record(am, &t, now);
    }
    finish(am);
}

/* The record of one of the gateway's own alarms. Locked. */
static struct alarm *self_alarm(struct alarms *am, enum alarm_self which)
{
    return get(am, &am->self_rule[which], &am->self_dev, NULL);
}

void alarms_self(struct alarms *am, enum alarm_self which, bool active, const char *message,
                 struct ch_time now)
{
    if (!am || (unsigned)which >= ALARM_SELF_N)
        return;
    enter(am, now);
    condition_locked(am, self_alarm(am, which), active, NULL, 0, NULL, message, now);
    finish(am);
}

void alarms_tick(struct alarms *am, struct ch_time now)
{
    if (!am)
        return;
    enter(am, now);
    for (size_t i = 0; i < am->n; i++) {
        struct alarm *a = am->all[i];
        if (a->state == CH_AS_UNACK && a->rule->escalate_ms > 0) {
            while (a->escalation < a->rule->escalate_max && a->escalating &&
                   now.mono_ms >= a->next_escalate) {
                a->escalation++;
                a->next_escalate += a->rule->escalate_ms;
                LOGW("alarm", a->id, "not acknowledged: escalation %d", a->escalation);
                emit(am, a, CH_AE_ESCALATE, now);
            }
        } else if (a->state == CH_AS_SHELVED && now.mono_ms >= a->shelve_end) {
            back_in(am, a, CH_AE_UNSHELVE, "", now);
        }
    }
    flood_check_end(am, now);
    history_trim(am, now.mono_ms);
    finish(am);
}

int alarms_command(struct alarms *am, const struct ch_command *cmd, struct ch_time now)
{
    if (!am || !cmd)
        return CH_EINVAL;
    enter(am, now);
    struct alarm *a = find(am, cmd->alarm_id);
    if (!a || (a == &am->flood && !am->flooding)) {
        pthread_mutex_unlock(&am->lock);
        return CH_ENOTFOUND;
    }
    bool flood = a == &am->flood;
    int rc = 0;
    switch (cmd->action) {
    case CH_CMD_ACK:
        if (a->state == CH_AS_UNACK) {
            /* a latched alarm whose condition is gone ends with its ack */
            a->state = !flood && a->rule->latch && !a->cond ? CH_AS_NORMAL : CH_AS_ACKED;
        } else if (a->state == CH_AS_RTN_UNACK) {
            a->state = CH_AS_NORMAL;
        } else {
            rc = CH_ESTATE;
            break;
        }
        a->acked_ms = now.wall_ms;
        ch_utf8_copy(a->by, cmd->by, sizeof a->by);
        emit(am, a, CH_AE_ACK, now);
        break;
    case CH_CMD_SHELVE:
        if (flood || a->state == CH_AS_OOS) {
            rc = CH_ESTATE;
            break;
        }
        if (cmd->duration_ms <= 0 || cmd->duration_ms > am->c->alarms.shelve_max_ms) {
            rc = CH_EINVAL;
            break;
        }
        a->state = CH_AS_SHELVED;
        a->shelve_end = now.mono_ms + cmd->duration_ms;
        ch_utf8_copy(a->by, cmd->by, sizeof a->by);
        emit(am, a, CH_AE_SHELVE, now);
        break;
    case CH_CMD_UNSHELVE:
        if (a->state != CH_AS_SHELVED) {
            rc = CH_ESTATE;
            break;
        }
        back_in(am, a, CH_AE_UNSHELVE, cmd->by, now);
        break;
    case CH_CMD_OUT_OF_SERVICE:
        if (flood || a->state == CH_AS_OOS) {
            rc = CH_ESTATE;
            break;
        }
        a->state = CH_AS_OOS;
        ch_utf8_copy(a->by, cmd->by, sizeof a->by);
        emit(am, a, CH_AE_OUT_OF_SERVICE, now);
        break;
    case CH_CMD_IN_SERVICE:
        if (a->state != CH_AS_OOS) {
            rc = CH_ESTATE;
            break;
        }
        back_in(am, a, CH_AE_IN_SERVICE, cmd->by, now);
        break;
    default:
        rc = CH_EINVAL;
        break;
    }
    finish(am);
    return rc;
}

static int active_cmp(const void *x, const void *y)
{
    const struct ch_alert *a = x, *b = y;
    if (a->priority != b->priority)
        return b->priority - a->priority;
    if (a->raised_ms != b->raised_ms)
        return a->raised_ms < b->raised_ms ? -1 : 1;
    return strcmp(a->alarm_id, b->alarm_id);
}

size_t alarms_active(struct alarms *am, struct ch_alert **out)
{
    *out = NULL;
    if (!am)
        return 0;
    pthread_mutex_lock(&am->lock);
    size_t n = am->flooding;
    for (size_t i = 0; i < am->n; i++)
        n += am->all[i]->state != CH_AS_NORMAL;
    if (n == 0) {
        pthread_mutex_unlock(&am->lock);
        return 0;
    }
    struct ch_alert *v = ch_xcalloc(n, sizeof *v);
    size_t k = 0;
    if (am->flooding)
        fill(am, &am->flood, &v[k++]);
    for (size_t i = 0; i < am->n; i++)
        if (am->all[i]->state != CH_AS_NORMAL)
            fill(am, am->all[i], &v[k++]);
    pthread_mutex_unlock(&am->lock);
    qsort(v, n, sizeof *v, active_cmp);
    *out = v;
    return n;
}

size_t alarms_history(struct alarms *am, int64_t since_ms, struct ch_alert **out)
{
    *out = NULL;
    if (!am)
        return 0;
    pthread_mutex_lock(&am->lock);
    history_trim(am, am->now.mono_ms);
    /* each entry on its own label: after the clock was set back, entries
     * in the order made do not have rising labels */
    size_t n = 0;
    for (size_t i = 0; i < am->hist_n; i++)
        n += am->hist[(am->hist_head + i) % am->hist_cap].t.ts_ms >= since_ms;
    if (n == 0) {
        pthread_mutex_unlock(&am->lock);
        return 0;
    }
    struct ch_alert *v = ch_xmalloc(n * sizeof *v);
    size_t k = 0;
    for (size_t i = 0; i < am->hist_n; i++) {
        const struct ch_alert *t = &am->hist[(am->hist_head + i) % am->hist_cap].t;
        if (t->ts_ms >= since_ms)
            v[k++] = *t;
    }
    pthread_mutex_unlock(&am->lock);
    *out = v;
    return n;
}

unsigned alarms_annunciate_mask(struct alarms *am, bool acknowledged, int min_escalation)
{
    if (!am)
        return 0;
    unsigned mask = 0;
    pthread_mutex_lock(&am->lock);
    for (size_t i = 0; i < am->n; i++) {
        const struct alarm *a = am->all[i];
        if ((a->state == CH_AS_UNACK || (acknowledged && a->state == CH_AS_ACKED)) &&
            a->escalation >= min_escalation)
            mask |= 1u << a->rule->priority;
    }
    if (am->flooding && min_escalation <= 0 &&
        (am->flood.state == CH_AS_UNACK || (acknowledged && am->flood.state == CH_AS_ACKED)))
        mask |= 1u << CH_PRIO_HIGH;
    pthread_mutex_unlock(&am->lock);
    return mask;
}

void alarms_get_stats(struct alarms *am, struct alarms_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!am)
        return;
    pthread_mutex_lock(&am->lock);
    *out = am->st;
    out->active = am->flooding;
    for (size_t i = 0; i < am->n; i++)
        out->active += am->all[i]->state != CH_AS_NORMAL;
    pthread_mutex_unlock(&am->lock);
}
