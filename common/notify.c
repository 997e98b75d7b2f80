/* The notifier's queue, worker and state (notify.h says what it does).
 *
 * Data. Every delivery (one event, one channel, one recipient number) is a
 * struct dl on one list, n->q, until it is final; then it moves to n->fin,
 * which only the worker empties, calling the result callback with no lock
 * held. A final delivery's key is remembered in n->done (and in
 * delivered.log) for 24 h: that is what dedupes a repeated event, and what
 * tells an ACK which channels were told of the occurrence.
 *
 * Locking. One mutex covers everything above. The worker holds it except
 * while it sends (one request at a time) and while it calls the callback.
 * The delivery being sent is marked inflight: nothing else changes or
 * frees it then (an ACK does not cancel it, a full queue does not drop it),
 * so the worker reads its fields unlocked.
 *
 * Crash safety. A delivery's file is written (tmp, fsync, rename) before
 * the delivery is queued; its final line is appended to delivered.log and
 * fsync'd before the file is removed. So after a crash a delivery is either
 * still pending (its file) or final (its line; a file left beside a line is
 * removed at open), never lost; the one window is a receiver's answer not
 * yet recorded, which sends that message again after the restart.
 *
 * Clocks. Retry waits, give-up deadlines and rates run on the monotonic
 * clock. The wall clock labels (ts_ms, delivered.log, a delivery's
 * created_ms) and decides, at open only, how much of give_up a delivery
 * from before the restart has left. */
#include "notify.h"
#include "err.h"
#include "fileio.h"
#include "log.h"
#include "notify_int.h"
#include "util.h"

#include <ctype.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MOD          "notify"
#define DONE_KEEP_MS (24LL * 3600 * 1000)
#define BODY_MAX     (64u * 1024)
#define DELIVERY_MAX (256u * 1024) /* a delivery file larger than this is damaged */
#define HTTP_TIMEOUT 10000L
#define HTTP_CONNECT 5000L

/* ---- time zone: the site's time of day -------------------------------- */

/* UTC offsets from a TZif file (RFC 8536): transition times and the offset
 * from each. After the last transition the last offset holds (Debian's
 * tzdata lists transitions up to 2037). */
struct tzinfo {
    bool local; /* no zone given: the process's local time (localtime_r) */
    int64_t *at;
    int32_t *off;
    size_t n;
    int32_t off0; /* before the first transition */
};

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int tz_load(struct tzinfo *tz, const char *name)
{
    memset(tz, 0, sizeof *tz);
    if (!name || !*name) {
        tz->local = true;
        return 0;
    }
    if (strstr(name, "..") || name[0] == '/' ||
        strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/_+-") !=
            strlen(name)) {
        LOGE(MOD, NULL, "time zone '%s' is not an IANA zone name", name);
        return CH_ECONFIG;
    }
    const char *dir = getenv("TZDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : "/usr/share/zoneinfo", name);
    char *data = NULL;
    size_t len = 0;
    if (ch_read_file(path, 1u << 20, &data, &len) != 0 || len < 44 || memcmp(data, "TZif", 4)) {
        LOGE(MOD, NULL, "time zone '%s': %s is not a TZif file", name, path);
        free(data);
        return CH_ECONFIG;
    }
    const unsigned char *p = (const unsigned char *)data, *end = p + len;
    uint32_t c[6];
    for (int i = 0; i < 6; i++)
        c[i] = be32(p + 20 + 4 * i);
    size_t tsz = 4;
    if (data[4] >= '2') { /* skip the 32-bit block: the 64-bit one follows */
        size_t v1 = (size_t)c[3] * 5 + (size_t)c[4] * 6 + c[5] + (size_t)c[2] * 8 + c[1] + c[0];
        p += 44 + v1;
        if (p + 44 > end || memcmp(p, "TZif", 4)) {
            free(data);
            LOGE(MOD, NULL, "time zone '%s': damaged TZif file", name);
            return CH_ECONFIG;
        }
        for (int i = 0; i < 6; i++)
            c[i] = be32(p + 20 + 4 * i);
        tsz = 8;
    }
    size_t timecnt = c[3], typecnt = c[4];
    p += 44;
    if (typecnt == 0 || p + timecnt * (tsz + 1) + typecnt * 6 > end) {
        free(data);
        LOGE(MOD, NULL, "time zone '%s': damaged TZif file", name);
        return CH_ECONFIG;
    }
    const unsigned char *times = p, *idx = p + timecnt * tsz, *types = idx + timecnt;
    tz->at = ch_xcalloc(timecnt ? timecnt : 1, sizeof *tz->at);
    tz->off = ch_xcalloc(timecnt ? timecnt : 1, sizeof *tz->off);
    tz->off0 = (int32_t)be32(types);
    for (size_t i = 0; i < timecnt; i++) {
        const unsigned char *t = times + i * tsz;
        tz->at[i] =
            tsz == 8 ? (int64_t)((uint64_t)be32(t) << 32 | be32(t + 4)) : (int64_t)(int32_t)be32(t);
        size_t ti = idx[i] < typecnt ? idx[i] : 0;
        tz->off[i] = (int32_t)be32(types + ti * 6);
    }
    tz->n = timecnt;
    free(data);
    return 0;
}

static void tz_free(struct tzinfo *tz)
{
    free(tz->at);
    free(tz->off);
}

/* Seconds east of UTC at Unix time t (s). */
static int64_t tz_offset(const struct tzinfo *tz, int64_t t)
{
    if (tz->local) {
        time_t tt = (time_t)t;
        struct tm tm;
        return localtime_r(&tt, &tm) ? tm.tm_gmtoff : 0;
    }
    if (!tz->n || t < tz->at[0])
        return tz->off0;
    size_t lo = 0, hi = tz->n; /* the last transition at or before t */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (tz->at[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    return tz->off[lo];
}

/* Seconds into the local day of wall time ms. */
static int64_t tz_day_s(const struct tzinfo *tz, int64_t ms)
{
    int64_t s = ch_floor_to(ms, 1000) / 1000;
    return s + tz_offset(tz, s) - ch_floor_to(s + tz_offset(tz, s), 86400);
}

static void tz_hms(const struct tzinfo *tz, int64_t ms, char out[16])
{
    int64_t d = tz_day_s(tz, ms);
    snprintf(out, 16, "%02d:%02d:%02d", (int)(d / 3600), (int)(d / 60 % 60), (int)(d % 60));
}

/* ---- the notifier ----------------------------------------------------- */

struct dl {
    struct dl *next;
    uint64_t seq;
    struct notify_event ev; /* strings owned */
    size_t chan;
    char *to; /* recipient number, or NULL */
    int attempts;
    int64_t created_ms;           /* wall */
    int64_t give_up_at, next_try; /* mono */
    bool inflight, limited;
    bool cancelled; /* acknowledged while a try was under way: not tried again */
    bool ok;        /* final: delivered */
    char detail[160];
};

struct done {
    char *alarm_id, *chan;
    int64_t raised_ms, ts_ms;
    int level, event;
    bool ok;
};

struct rate { /* the send times of the last minute, a ring */
    int64_t *t;
    size_t cap, n, head;
};

struct notifier {
    const struct notify_cfg *cfg;
    char *pending_dir, *log_path; /* NULL: memory only */
    int log_fd;
    size_t log_lines;
    size_t since_prune; /* records since the last done_prune */
    struct tzinfo tz;
    notify_result_fn cb;
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thr;
    bool stop;
    struct dl *q;   /* pending */
    struct dl *fin; /* final, to report (in order) */
    struct dl **fin_tail;
    size_t nq;
    struct done *done;
    size_t ndone, capdone;
    struct rate *rates; /* per channel */
    uint64_t seq, rng;
    struct notify_stats st;
};

static char *dupn(const char *s)
{
    return s ? ch_xstrdup(s) : NULL;
}

static void event_copy(struct notify_event *d, const struct notify_event *s)
{
    *d = *s;
    d->site = dupn(s->site);
    d->site_name = dupn(s->site_name);
    d->gateway = dupn(s->gateway);
    d->alarm_id = ch_xstrdup(s->alarm_id ? s->alarm_id : "");
    d->rule = dupn(s->rule);
    d->kind = dupn(s->kind);
    d->title = dupn(s->title);
    d->where = dupn(s->where);
    d->who = dupn(s->who);
    d->device = dupn(s->device);
    d->message = dupn(s->message);
    d->by = dupn(s->by);
}

static void event_free(struct notify_event *e)
{
    const char *s[] = {e->site,  e->site_name, e->gateway, e->alarm_id, e->rule,    e->kind,
                       e->title, e->where,     e->who,     e->device,   e->message, e->by};
    for (size_t i = 0; i < CH_ARRAY_LEN(s); i++)
        free((char *)(uintptr_t)s[i]);
}

static void dl_free(struct dl *d)
{
    event_free(&d->ev);
    free(d->to);
    free(d);
}

static const struct notify_channel *chan_of(const struct notifier *n, const struct dl *d)
{
    return notify_chan(n->cfg, d->chan);
}

static bool same_key(const struct dl *d, const char *alarm_id, int64_t raised_ms, int level,
                     int event, size_t chan)
{
    return d->ev.raised_ms == raised_ms && d->ev.level == level && d->ev.event == event &&
           d->chan == chan && strcmp(d->ev.alarm_id, alarm_id) == 0;
}

static void fmt_duration(int64_t ms, char *out, size_t n)
{
    if (ms % 3600000 == 0)
        snprintf(out, n, "%lldh", (long long)(ms / 3600000));
    else if (ms % 60000 == 0)
        snprintf(out, n, "%lldm", (long long)(ms / 60000));
    else
        snprintf(out, n, "%llds", (long long)((ms + 999) / 1000));
}

/* ---- delivered.log ---------------------------------------------------- */

/* alarm ids are ASCII; anything else (space, %, control, 8-bit) as %XX */
static void esc_id(const char *s, char *out, size_t n)
{
    size_t o = 0;
    out[o++] = 'a'; /* never empty */
    for (const unsigned char *p = (const unsigned char *)s; *p && o + 4 < n; p++) {
        if (*p <= 0x20 || *p >= 0x7f || *p == '%')
            o += (size_t)snprintf(out + o, n - o, "%%%02X", *p);
        else
            out[o++] = (char)*p;
    }
    out[o] = '\0';
}

static void unesc_id(const char *s, char *out, size_t n)
{
    size_t o = 0;
    for (const char *p = *s == 'a' ? s + 1 : s; *p && o + 1 < n; p++) {
        unsigned v;
        if (*p == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2]) &&
            sscanf(p + 1, "%2x", &v) == 1) {
            out[o++] = (char)v;
            p += 2;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

static int done_line(const struct done *d, char *buf, size_t n)
{
    char id[512];
    esc_id(d->alarm_id, id, sizeof id);
    return snprintf(buf, n, "%lld %d %lld %d %d %s %s\n", (long long)d->ts_ms, d->ok ? 1 : 0,
                    (long long)d->raised_ms, d->level, d->event, d->chan, id);
}

static void done_add(struct notifier *n, const struct done *d)
{
    if (n->ndone == n->capdone) {
        n->capdone = n->capdone ? n->capdone * 2 : 64;
        n->done = ch_xrealloc(n->done, n->capdone * sizeof *n->done);
    }
    n->done[n->ndone++] = *d;
}

/* Drops what is older than a day (by the wall clock) from memory. */
static void done_prune(struct notifier *n, int64_t now_ms)
{
    size_t o = 0;
    for (size_t i = 0; i < n->ndone; i++) {
        if (now_ms - n->done[i].ts_ms > DONE_KEEP_MS) {
            free(n->done[i].alarm_id);
            free(n->done[i].chan);
            continue;
        }
        n->done[o++] = n->done[i];
    }
    n->ndone = o;
}

/* Rewrites delivered.log from memory (atomically) and reopens it. */
static void log_compact(struct notifier *n)
{
    done_prune(n, ch_now_ms());
    struct ch_buf b = {0};
    char line[700];
    for (size_t i = 0; i < n->ndone; i++) {
        int len = done_line(&n->done[i], line, sizeof line);
        ch_buf_add(&b, line, (size_t)len);
    }
    char *all = ch_buf_take(&b);
    if (n->log_fd >= 0)
        close(n->log_fd);
    int rc = ch_write_atomic(n->log_path, all, strlen(all));
    if (rc != 0)
        LOGW(MOD, NULL, "cannot rewrite %s: %s", n->log_path, strerror(-rc));
    free(all);
    n->log_fd = open(n->log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (n->log_fd < 0)
        LOGW(MOD, NULL, "cannot open %s: %s", n->log_path, strerror(errno));
    n->log_lines = n->ndone;
}

static void log_load(struct notifier *n)
{
    char *data = NULL;
    size_t len = 0;
    int rc = ch_read_file(n->log_path, 64u << 20, &data, &len);
    if (rc != 0 && rc != -ENOENT)
        LOGW(MOD, NULL, "cannot read %s: %s", n->log_path, strerror(-rc));
    for (char *line = data, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (!nl)
            break; /* a torn last line */
        *nl = '\0';
        long long ts, raised;
        int ok, level, event;
        char chan[80], id[520], alarm[520];
        if (sscanf(line, "%lld %d %lld %d %d %79s %519s", &ts, &ok, &raised, &level, &event, chan,
                   id) != 7)
            continue;
        unesc_id(id, alarm, sizeof alarm);
        done_add(n, &(struct done){.alarm_id = ch_xstrdup(alarm),
                                   .chan = ch_xstrdup(chan),
                                   .raised_ms = raised,
                                   .ts_ms = ts,
                                   .level = level,
                                   .event = event,
                                   .ok = ok != 0});
    }
    free(data);
    log_compact(n);
}

/* The channel part of a delivered key: the channel's id, and for one
 * delivery per number (sms) the number too ("nurse>13900000002"): each
 * number is its own delivery, delivered or not. */
static void done_chan(const char *chan, const char *to, char *out, size_t n)
{
    if (!to || !*to) {
        snprintf(out, n, "%s", chan);
        return;
    }
    char esc[160];
    esc_id(to, esc, sizeof esc); /* no spaces: the log's fields are space-separated */
    snprintf(out, n, "%s>%s", chan, esc);
}

static bool done_has(const struct notifier *n, const char *alarm_id, int64_t raised_ms, int level,
                     int event, const char *chan)
{
    for (size_t i = 0; i < n->ndone; i++) {
        const struct done *d = &n->done[i];
        if (d->raised_ms == raised_ms && d->level == level && d->event == event &&
            strcmp(d->chan, chan) == 0 && strcmp(d->alarm_id, alarm_id) == 0)
            return true;
    }
    return false;
}

static void done_record(struct notifier *n, const struct dl *d)
{
    char key[240];
    done_chan(chan_of(n, d)->id, d->to, key, sizeof key);
    struct done rec = {.alarm_id = ch_xstrdup(d->ev.alarm_id),
                       .chan = ch_xstrdup(key),
                       .raised_ms = d->ev.raised_ms,
                       .ts_ms = ch_now_ms(),
                       .level = d->ev.level,
                       .event = d->ev.event,
                       .ok = d->ok};
    done_add(n, &rec);
    if (!n->log_path)
        return;
    if (n->log_fd >= 0) {
        char line[700];
        int len = done_line(&rec, line, sizeof line);
        if (write(n->log_fd, line, (size_t)len) != len || fdatasync(n->log_fd) != 0)
            LOGW(MOD, NULL, "cannot append to %s: %s", n->log_path, strerror(errno));
        n->log_lines++;
    }
    /* forget what is over a day old now and then, and rewrite the log once
     * it holds twice what is remembered (log_compact prunes too) */
    if (++n->since_prune >= 256) {
        n->since_prune = 0;
        done_prune(n, ch_now_ms());
    }
    if (n->log_lines > 2 * n->ndone + 256)
        log_compact(n);
}

/* ---- pending files ---------------------------------------------------- */

static void dl_path(const struct notifier *n, uint64_t seq, char *out, size_t len)
{
    snprintf(out, len, "%s/%016llx.json", n->pending_dir, (unsigned long long)seq);
}

static const char *const ev_keys[] = {"site", "site_name", "gateway", "alarm_id",
                                      "rule", "kind",      "title",   "where",
                                      "who",  "device",    "message", "by"};

static const char **ev_field(struct notify_event *e, size_t i)
{
    const char **f[] = {&e->site,  &e->site_name, &e->gateway, &e->alarm_id, &e->rule,    &e->kind,
                        &e->title, &e->where,     &e->who,     &e->device,   &e->message, &e->by};
    return f[i];
}

static int dl_save(const struct notifier *n, struct dl *d)
{
    if (!n->pending_dir)
        return 0;
    json_t *j = json_object();
    json_object_set_new(j, "v", json_integer(1));
    json_object_set_new(j, "channel", json_string(chan_of(n, d)->id));
    if (d->to)
        json_object_set_new(j, "to", json_string(d->to));
    json_object_set_new(j, "created_ms", json_integer(d->created_ms));
    for (size_t i = 0; i < CH_ARRAY_LEN(ev_keys); i++) {
        const char *s = *ev_field(&d->ev, i);
        if (s) {
            char *c = ch_utf8_fix(ch_xstrdup(s));
            json_object_set_new(j, ev_keys[i], json_string(c));
            free(c);
        }
    }
    json_object_set_new(j, "priority", json_integer(d->ev.priority));
    json_object_set_new(j, "level", json_integer(d->ev.level));
    json_object_set_new(j, "event", json_integer(d->ev.event));
    json_object_set_new(j, "raised_ms", json_integer(d->ev.raised_ms));
    json_object_set_new(j, "ts_ms", json_integer(d->ev.ts_ms));
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    char path[600];
    dl_path(n, d->seq, path, sizeof path);
    int rc = s ? ch_write_atomic(path, s, strlen(s)) : CH_ENOMEM;
    free(s);
    if (rc != 0)
        LOGW(MOD, chan_of(n, d)->id, "cannot write %s (kept in memory only): %s", path,
             rc < 0 && rc > -1000 ? strerror(-rc) : ch_strerror(rc));
    return rc;
}

static void dl_unlink(const struct notifier *n, const struct dl *d)
{
    if (!n->pending_dir)
        return;
    char path[600];
    dl_path(n, d->seq, path, sizeof path);
    if (unlink(path) != 0 && errno != ENOENT)
        LOGW(MOD, NULL, "cannot remove %s: %s", path, strerror(errno));
}

/* A delivery from its file, or NULL (damaged). *chan_id: its channel. */
static struct dl *dl_parse(const char *text, char *chan_id, size_t cn)
{
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);
    const char *ch = json_string_value(json_object_get(j, "channel"));
    if (!j || !ch || json_integer_value(json_object_get(j, "v")) != 1) {
        json_decref(j);
        return NULL;
    }
    ch_strlcpy(chan_id, ch, cn);
    struct dl *d = ch_xcalloc(1, sizeof *d);
    struct notify_event e = {0};
    for (size_t i = 0; i < CH_ARRAY_LEN(ev_keys); i++)
        *ev_field(&e, i) = json_string_value(json_object_get(j, ev_keys[i]));
    e.priority = (int)json_integer_value(json_object_get(j, "priority"));
    e.level = (int)json_integer_value(json_object_get(j, "level"));
    e.event = (int)json_integer_value(json_object_get(j, "event"));
    e.raised_ms = json_integer_value(json_object_get(j, "raised_ms"));
    e.ts_ms = json_integer_value(json_object_get(j, "ts_ms"));
    event_copy(&d->ev, &e);
    d->to = dupn(json_string_value(json_object_get(j, "to")));
    d->created_ms = json_integer_value(json_object_get(j, "created_ms"));
    json_decref(j);
    return d;
}

/* ---- the queue -------------------------------------------------------- */

static void result_of(const struct notifier *n, const struct dl *d, bool final,
                      struct notify_result *r)
{
    const struct notify_channel *c = chan_of(n, d);
    *r = (struct notify_result){.alarm_id = d->ev.alarm_id,
                                .raised_ms = d->ev.raised_ms,
                                .level = d->ev.level,
                                .event = d->ev.event,
                                .channel = c->id,
                                .recipient = c->name,
                                .to = d->to ? d->to : "",
                                .type = c->t->name,
                                .ok = d->ok,
                                .final = final,
                                .attempts = d->attempts,
                                .detail = d->detail,
                                .ts_ms = ch_now_ms()};
}

/* Takes d off the queue as final (ok or not, detail saying why): records
 * its key, removes its file, and queues it for the callback. */
static void finalize(struct notifier *n, struct dl *d, bool ok, const char *detail)
{
    for (struct dl **pp = &n->q; *pp; pp = &(*pp)->next)
        if (*pp == d) {
            *pp = d->next;
            n->nq--;
            break;
        }
    d->next = NULL;
    d->ok = ok;
    ch_strlcpy(d->detail, detail, sizeof d->detail);
    done_record(n, d);
    dl_unlink(n, d);
    *n->fin_tail = d;
    n->fin_tail = &d->next;
    const struct notify_channel *c = chan_of(n, d);
    const char *to = d->to ? d->to : "";
    if (ok)
        LOGI(MOD, c->id, "%s %s level %d of %s delivered to %s%s%s after %d tr%s",
             notify_event_name(d->ev.event), d->ev.alarm_id, d->ev.level,
             d->ev.kind ? d->ev.kind : "alarm", c->name, *to ? " " : "", to, d->attempts,
             d->attempts == 1 ? "y" : "ies");
    else
        LOGW(MOD, c->id, "%s %s level %d for %s%s%s not delivered: %s (%d tr%s)",
             notify_event_name(d->ev.event), d->ev.alarm_id, d->ev.level, c->name, *to ? " " : "",
             to, detail, d->attempts, d->attempts == 1 ? "y" : "ies");
}

/* Adds d to the queue (a full queue drops its lowest priority delivery,
 * or d if lower still). Returns false if d was dropped (and freed). */
static bool enqueue(struct notifier *n, struct dl *d)
{
    if (n->nq >= (size_t)n->cfg->queue) {
        struct dl *victim = NULL;
        for (struct dl *x = n->q; x; x = x->next)
            if (!x->inflight && (!victim || x->ev.priority < victim->ev.priority ||
                                 (x->ev.priority == victim->ev.priority && x->seq < victim->seq)))
                victim = x;
        n->st.given_up++;
        n->st.dropped++;
        if (!victim || d->ev.priority < victim->ev.priority) {
            LOGW(MOD, chan_of(n, d)->id, "queue full (%zu): %s %s dropped", n->nq,
                 notify_event_name(d->ev.event), d->ev.alarm_id);
            d->next = n->q; /* finalize() expects it on the queue */
            n->q = d;
            n->nq++;
            finalize(n, d, false, "dropped: queue full");
            return false;
        }
        finalize(n, victim, false, "dropped: queue full");
    }
    dl_save(n, d);
    struct dl **pp = &n->q;
    while (*pp)
        pp = &(*pp)->next;
    *pp = d;
    n->nq++;
    n->st.queued++;
    return true;
}

static struct dl *dl_new(struct notifier *n, const struct notify_event *ev, size_t chan,
                         const char *to, int64_t created_ms, int64_t now)
{
    struct dl *d = ch_xcalloc(1, sizeof *d);
    d->seq = ++n->seq;
    event_copy(&d->ev, ev);
    d->chan = chan;
    d->to = dupn(to);
    d->created_ms = created_ms;
    int64_t age = ch_now_ms() - created_ms;
    if (age < 0)
        age = 0;
    d->give_up_at = now + n->cfg->retry.give_up_ms - age;
    d->next_try = now;
    return d;
}

/* The channels an ACK or CLEAR of an occurrence goes to: those told of it,
 * or being told now. */
static size_t told_channels(const struct notifier *n, const struct notify_event *ev, size_t *chans,
                            size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < n->ndone; i++) {
        const struct done *d = &n->done[i];
        if (!d->ok || d->raised_ms != ev->raised_ms || strcmp(d->alarm_id, ev->alarm_id) ||
            (d->event != NOTIFY_RAISE && d->event != NOTIFY_ESCALATE))
            continue;
        long ci = notify_chan_find(n->cfg, d->chan);
        bool have = false;
        for (size_t j = 0; j < k; j++)
            have |= chans[j] == (size_t)ci;
        if (ci >= 0 && !have && k < max)
            chans[k++] = (size_t)ci;
    }
    for (const struct dl *d = n->q; d; d = d->next) {
        if (!d->inflight || d->ev.raised_ms != ev->raised_ms ||
            strcmp(d->ev.alarm_id, ev->alarm_id) || d->ev.event > NOTIFY_ESCALATE)
            continue;
        bool have = false;
        for (size_t j = 0; j < k; j++)
            have |= chans[j] == d->chan;
        if (!have && k < max)
            chans[k++] = d->chan;
    }
    return k;
}

/* An ACK: the occurrence's pending RAISE/ESCALATE deliveries are cancelled. */
static void cancel_pending(struct notifier *n, const struct notify_event *ev)
{
    for (struct dl *d = n->q, *next; d; d = next) {
        next = d->next;
        if (d->ev.event > NOTIFY_ESCALATE || d->ev.raised_ms != ev->raised_ms ||
            strcmp(d->ev.alarm_id, ev->alarm_id) != 0)
            continue;
        if (d->inflight) { /* the worker decides when the try ends */
            d->cancelled = true;
            continue;
        }
        n->st.cancelled++;
        finalize(n, d, false, "cancelled: acknowledged");
    }
}

void notify_event(struct notifier *n, const struct notify_event *ev)
{
    const char *alarm_id = ev->alarm_id ? ev->alarm_id : "";
    if (ev->event < NOTIFY_RAISE || ev->event > NOTIFY_CLEAR) {
        LOGW(MOD, NULL, "%s: unknown event kind %d ignored", alarm_id, ev->event);
        return;
    }
    struct notify_event e = *ev;
    e.alarm_id = alarm_id;
    size_t chans[64], nch = 0;
    pthread_mutex_lock(&n->mu);
    if (ev->event == NOTIFY_ACK)
        cancel_pending(n, &e);
    const struct notify_route *r = notify_route_for(n->cfg, ev->priority);
    if (r && (r->event_mask & (1u << ev->event))) {
        if (ev->event <= NOTIFY_ESCALATE && r->nlv) {
            size_t li = ev->level < 0                 ? 0
                        : (size_t)ev->level >= r->nlv ? r->nlv - 1
                                                      : (size_t)ev->level;
            int minute = (int)(tz_day_s(&n->tz, ev->ts_ms) / 60);
            nch = notify_level_channels(n->cfg, &r->lv[li], minute, chans, 0, CH_ARRAY_LEN(chans));
            if (!nch)
                LOGW(MOD, NULL, "%s %s level %d: no channel on duty at %02d:%02d",
                     notify_event_name(ev->event), alarm_id, ev->level, minute / 60, minute % 60);
        } else if (ev->event >= NOTIFY_ACK) {
            nch = told_channels(n, &e, chans, CH_ARRAY_LEN(chans));
        }
    }
    int64_t now = ch_mono_ms(), wall = ch_now_ms();
    for (size_t i = 0; i < nch; i++) {
        const struct notify_channel *c = notify_chan(n->cfg, chans[i]);
        size_t nto = c->t->templated && c->to.n ? c->to.n : 1;
        for (size_t k = 0; k < nto; k++) {
            const char *to = c->t->templated && c->to.n ? ((char **)c->to.items)[k] : NULL;
            char key[240];
            done_chan(c->id, to, key, sizeof key);
            bool dup = done_has(n, alarm_id, ev->raised_ms, ev->level, ev->event, key);
            for (const struct dl *d = n->q; d && !dup; d = d->next)
                dup = same_key(d, alarm_id, ev->raised_ms, ev->level, ev->event, chans[i]) &&
                      !strcmp(d->to ? d->to : "", to ? to : "");
            if (dup) {
                n->st.deduped++;
                LOGD(MOD, c->id, "%s %s level %d: already queued or done",
                     notify_event_name(ev->event), alarm_id, ev->level);
                continue;
            }
            enqueue(n, dl_new(n, &e, chans[i], to, wall, now));
        }
    }
    pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->mu);
}

/* ---- the worker ------------------------------------------------------- */

static bool rate_ok(const struct rate *r, int64_t now, int64_t *when)
{
    if (!r->cap || r->n < r->cap || now - r->t[r->head] >= 60000)
        return true;
    *when = r->t[r->head] + 60000;
    return false;
}

static void rate_take(struct rate *r, int64_t now)
{
    if (!r->cap)
        return;
    if (r->n < r->cap) {
        r->t[(r->head + r->n++) % r->cap] = now;
        return;
    }
    r->t[r->head] = now;
    r->head = (r->head + 1) % r->cap;
}

static uint64_t rnd(struct notifier *n)
{
    n->rng ^= n->rng << 13;
    n->rng ^= n->rng >> 7;
    n->rng ^= n->rng << 17;
    return n->rng;
}

/* first, doubling, capped at max, ±20 % */
static int64_t backoff(struct notifier *n, int attempts)
{
    const struct notify_retry *rt = &n->cfg->retry;
    int64_t d = rt->first_ms;
    for (int i = 1; i < attempts && d < rt->max_ms; i++)
        d *= 2;
    if (d > rt->max_ms)
        d = rt->max_ms;
    int64_t j = (int64_t)(rnd(n) % 4001) - 2000; /* -20.00 % .. +20.00 % */
    return d + d * j / 10000;
}

struct body {
    char *s;
    size_t len;
};

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg)
{
    struct body *b = arg;
    size_t n = size * nmemb, take = b->len + n > BODY_MAX ? BODY_MAX - b->len : n;
    memcpy(b->s + b->len, p, take);
    b->len += take;
    b->s[b->len] = '\0';
    return n;
}

/* One try: true if delivered, else detail says why. */
static bool send_one(CURL *h, const struct notify_channel *c, const struct notify_msg *m,
                     char *detail, size_t dn)
{
    struct notify_req req = {0};
    if (c->t->build(c, m, &req) != 0) {
        notify_req_free(&req);
        snprintf(detail, dn, "cannot build the request");
        return false;
    }
    struct body b = {.s = ch_xmalloc(BODY_MAX + 1)};
    b.s[0] = '\0';
    struct curl_slist *hdr = NULL;
    char ct[160], err[CURL_ERROR_SIZE] = "";
    snprintf(ct, sizeof ct, "Content-Type: %s", req.content_type);
    hdr = curl_slist_append(hdr, ct);
    hdr = curl_slist_append(hdr, "Expect:");
    for (size_t i = 0; i < c->nhdrs; i++)
        hdr = curl_slist_append(hdr, c->hdrs[i]);
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, req.url);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, req.body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(req.body));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "carehub-notify/" CAREHUB_VERSION);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, HTTP_TIMEOUT);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, HTTP_CONNECT);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L); /* a redirect is an answer: failed */
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    bool ok = false;
    if (rc != CURLE_OK) {
        snprintf(detail, dn, "%s", *err ? err : curl_easy_strerror(rc));
    } else if (curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status),
               status < 200 || status > 299) {
        snprintf(detail, dn, "HTTP %ld", status);
    } else if (c->t->accepted && !c->t->accepted(b.s, detail, dn)) {
        ok = false;
    } else {
        snprintf(detail, dn, "ok");
        ok = true;
    }
    curl_slist_free_all(hdr);
    free(b.s);
    notify_req_free(&req);
    return ok;
}

/* Gives up what is past its deadline; returns the earliest deadline left. */
static int64_t expire(struct notifier *n, int64_t now, int64_t wake)
{
    char txt[256], dur[32];
    for (struct dl *d = n->q, *next; d; d = next) {
        next = d->next;
        if (d->inflight)
            continue;
        if (d->give_up_at <= now) {
            fmt_duration(n->cfg->retry.give_up_ms, dur, sizeof dur);
            snprintf(txt, sizeof txt, "expired after %s%s%s", dur, d->detail[0] ? ": " : "",
                     d->detail);
            n->st.given_up++;
            finalize(n, d, false, txt);
        } else if (d->give_up_at < wake) {
            wake = d->give_up_at;
        }
    }
    return wake;
}

/* The delivery to send now (highest priority, then oldest), or NULL with
 * *wake lowered to when one may be due. */
static struct dl *pick(struct notifier *n, int64_t now, int64_t *wake)
{
    struct dl *best = NULL;
    for (struct dl *d = n->q; d; d = d->next) {
        if (d->inflight)
            continue;
        if (d->next_try > now) {
            if (d->next_try < *wake)
                *wake = d->next_try;
            continue;
        }
        int64_t when = now;
        if (!rate_ok(&n->rates[d->chan], now, &when)) {
            if (!d->limited) {
                d->limited = true;
                n->st.rate_limited++;
                LOGI(MOD, chan_of(n, d)->id, "rate of %lld a minute reached: %s %s waits",
                     (long long)chan_of(n, d)->rate, notify_event_name(d->ev.event),
                     d->ev.alarm_id);
            }
            if (when < *wake)
                *wake = when;
            continue;
        }
        if (!best || d->ev.priority > best->ev.priority ||
            (d->ev.priority == best->ev.priority && d->seq < best->seq))
            best = d;
    }
    return best;
}

/* Calls the callback for the final deliveries, unlocked; frees them. */
static void report_finals(struct notifier *n)
{
    while (n->fin) {
        struct dl *list = n->fin;
        n->fin = NULL;
        n->fin_tail = &n->fin;
        pthread_mutex_unlock(&n->mu);
        for (struct dl *d = list, *next; d; d = next) {
            next = d->next;
            if (n->cb) {
                struct notify_result r;
                result_of(n, d, true, &r);
                n->cb(n->arg, &r);
            }
            dl_free(d);
        }
        pthread_mutex_lock(&n->mu);
    }
}

static void *worker(void *arg)
{
    struct notifier *n = arg;
    CURL *h = curl_easy_init();
    if (!h)
        abort();
    pthread_mutex_lock(&n->mu);
    for (;;) {
        int64_t now = ch_mono_ms(), wake = now + 60000;
        wake = expire(n, now, wake);
        report_finals(n);
        if (n->stop)
            break;
        struct dl *d = pick(n, now, &wake);
        if (!d) {
            ch_cond_wait_until(&n->cv, &n->mu, wake);
            continue;
        }
        d->inflight = true;
        d->attempts++;
        rate_take(&n->rates[d->chan], now);
        pthread_mutex_unlock(&n->mu);

        /* unlocked: d is inflight, so nobody else touches it */
        char hms[16], detail[sizeof d->detail];
        tz_hms(&n->tz, d->ev.raised_ms, hms);
        struct notify_msg m = {.ev = &d->ev, .to = d->to, .raise_hms = hms, .now_ms = ch_now_ms()};
        const struct notify_channel *c = chan_of(n, d);
        bool ok = send_one(h, c, &m, detail, sizeof detail);
        if (!ok) {
            ch_strlcpy(d->detail, detail, sizeof d->detail);
            LOGW(MOD, c->id, "%s %s level %d to %s%s%s: try %d failed: %s",
                 notify_event_name(d->ev.event), d->ev.alarm_id, d->ev.level, c->name,
                 d->to ? " " : "", d->to ? d->to : "", d->attempts, detail);
            if (n->cb) {
                struct notify_result r;
                result_of(n, d, false, &r);
                r.ok = false;
                n->cb(n->arg, &r);
            }
        }

        pthread_mutex_lock(&n->mu);
        d->inflight = false;
        if (ok) {
            n->st.sent++;
            finalize(n, d, true, "ok");
        } else if (d->cancelled) { /* acknowledged during the try: no retry */
            n->st.failed_tries++;
            n->st.cancelled++;
            finalize(n, d, false, "cancelled: acknowledged");
        } else {
            n->st.failed_tries++;
            d->next_try = ch_mono_ms() + backoff(n, d->attempts);
        }
    }
    pthread_mutex_unlock(&n->mu);
    curl_easy_cleanup(h);
    return NULL;
}

/* ---- open, close ------------------------------------------------------ */

static int mkdir_p(const char *dir)
{
    if (mkdir(dir, 0700) == 0 || errno == EEXIST)
        return 0;
    return -errno;
}

static int cmp_seq(const void *a, const void *b)
{
    const struct dl *x = *(struct dl *const *)a, *y = *(struct dl *const *)b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Queues again the deliveries left in pending/ (oldest first). */
static void pending_load(struct notifier *n)
{
    DIR *dir = opendir(n->pending_dir);
    if (!dir)
        return;
    struct dl **all = NULL;
    size_t cnt = 0, cap = 0;
    struct dirent *de;
    int64_t now = ch_mono_ms();
    while ((de = readdir(dir)) != NULL) {
        unsigned long long seq;
        char tail[8], path[600], chan[80];
        if (sscanf(de->d_name, "%16llx.%5s", &seq, tail) != 2 || strcmp(tail, "json") != 0 ||
            strlen(de->d_name) != 21)
            continue;
        snprintf(path, sizeof path, "%s/%s", n->pending_dir, de->d_name);
        char *text = NULL;
        size_t len = 0;
        struct dl *d = NULL;
        if (ch_read_file(path, DELIVERY_MAX, &text, &len) == 0)
            d = dl_parse(text, chan, sizeof chan);
        free(text);
        if (!d) {
            char bad[620];
            snprintf(bad, sizeof bad, "%s.bad", path);
            LOGW(MOD, NULL, "%s is damaged: kept aside as %s", path, bad);
            rename(path, bad);
            continue;
        }
        d->seq = seq;
        if (seq > n->seq)
            n->seq = seq;
        long ci = notify_chan_find(n->cfg, chan);
        char key[240];
        done_chan(chan, d->to, key, sizeof key);
        if (ci < 0 || done_has(n, d->ev.alarm_id, d->ev.raised_ms, d->ev.level, d->ev.event, key)) {
            if (ci < 0)
                LOGW(MOD, chan, "channel no longer configured: %s %s dropped",
                     notify_event_name(d->ev.event), d->ev.alarm_id);
            unlink(path); /* done before the crash: its file was left behind */
            dl_free(d);
            continue;
        }
        d->chan = (size_t)ci;
        int64_t age = ch_now_ms() - d->created_ms;
        d->give_up_at = now + n->cfg->retry.give_up_ms - (age > 0 ? age : 0);
        d->next_try = now;
        if (cnt == cap)
            all = ch_xrealloc(all, (cap = cap ? cap * 2 : 16) * sizeof *all);
        all[cnt++] = d;
    }
    closedir(dir);
    if (cnt)
        qsort(all, cnt, sizeof *all, cmp_seq);
    for (size_t i = 0; i < cnt; i++) {
        all[i]->next = NULL;
        struct dl **pp = &n->q;
        while (*pp)
            pp = &(*pp)->next;
        *pp = all[i];
        n->nq++;
        n->st.queued++;
    }
    if (cnt)
        LOGI(MOD, NULL, "%zu pending deliver%s resumed from %s", cnt, cnt == 1 ? "y" : "ies",
             n->pending_dir);
    free(all);
}

int notify_open(const struct notify_cfg *cfg, const char *state_dir, const char *tz,
                notify_result_fn cb, void *arg, struct notifier **out)
{
    struct notifier *n = ch_xcalloc(1, sizeof *n);
    n->cfg = cfg;
    n->cb = cb;
    n->arg = arg;
    n->log_fd = -1;
    n->fin_tail = &n->fin;
    int rc = tz_load(&n->tz, tz);
    if (rc != 0) {
        free(n);
        return rc;
    }
    if (state_dir) {
        size_t len = strlen(state_dir) + 32;
        n->pending_dir = ch_xmalloc(len);
        n->log_path = ch_xmalloc(len);
        snprintf(n->pending_dir, len, "%s/pending", state_dir);
        snprintf(n->log_path, len, "%s/delivered.log", state_dir);
        if ((rc = mkdir_p(state_dir)) != 0 || (rc = mkdir_p(n->pending_dir)) != 0) {
            LOGE(MOD, NULL, "cannot create %s: %s", n->pending_dir, strerror(-rc));
            tz_free(&n->tz);
            free(n->pending_dir);
            free(n->log_path);
            free(n);
            return rc;
        }
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    n->rates = ch_xcalloc(cfg->channels.n ? cfg->channels.n : 1, sizeof *n->rates);
    for (size_t i = 0; i < cfg->channels.n; i++) {
        n->rates[i].cap = (size_t)notify_chan(cfg, i)->rate;
        n->rates[i].t = ch_xcalloc(n->rates[i].cap ? n->rates[i].cap : 1, sizeof(int64_t));
    }
    n->rng = (uint64_t)ch_now_ms() ^ (uint64_t)getpid() << 32 ^ 0x9E3779B97F4A7C15ull;
    pthread_mutex_init(&n->mu, NULL);
    ch_cond_init_monotonic(&n->cv);
    if (n->log_path) {
        log_load(n);
        pending_load(n);
    }
    if ((rc = pthread_create(&n->thr, NULL, worker, n)) != 0) {
        LOGE(MOD, NULL, "cannot start the worker: %s", strerror(rc));
        n->thr = pthread_self();
        notify_close(n);
        return -rc;
    }
    *out = n;
    return 0;
}

void notify_close(struct notifier *n)
{
    if (!n)
        return;
    pthread_mutex_lock(&n->mu);
    n->stop = true;
    pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->mu);
    if (!pthread_equal(n->thr, pthread_self()))
        pthread_join(n->thr, NULL);
    for (struct dl *d = n->q, *next; d; d = next) {
        next = d->next;
        dl_free(d);
    }
    for (struct dl *d = n->fin, *next; d; d = next) {
        next = d->next;
        dl_free(d);
    }
    for (size_t i = 0; i < n->ndone; i++) {
        free(n->done[i].alarm_id);
        free(n->done[i].chan);
    }
    free(n->done);
    for (size_t i = 0; i < n->cfg->channels.n; i++)
        free(n->rates[i].t);
    free(n->rates);
    if (n->log_fd >= 0)
        close(n->log_fd);
    tz_free(&n->tz);
    free(n->pending_dir);
    free(n->log_path);
    pthread_mutex_destroy(&n->mu);
    pthread_cond_destroy(&n->cv);
    free(n);
}

void notify_get_stats(struct notifier *n, struct notify_stats *s)
{
    pthread_mutex_lock(&n->mu);
    *s = n->st;
    s->pending = n->nq;
    pthread_mutex_unlock(&n->mu);
}
