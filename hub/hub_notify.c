/* care-hub's notifier (hub_notify.h). The outcome of a delivery names only
 * (alarm_id, raised_ms); the alarm's site, gateway, names and state are
 * those of the transition that asked for it, kept in a small table of the
 * latest transition per occurrence (a ring: an outcome that comes after
 * RECENT_MAX other occurrences were told is logged by the notifier, not
 * stored). */
#include "hub_notify.h"
#include "codec.h"
#include "err.h"
#include "log.h"
#include "notify.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD        "notify"
#define RECENT_MAX 1024

/* An occurrence told about: its latest transition, and the time of the
 * last "notified" transition stored for it. */
struct recent {
    struct ch_alert a;
    int64_t noted_ms;
};

struct hub_notify {
    struct ingest *in;
    struct notifier *n;
    int64_t max_age_ms;
    const char *locale; /* of the outcomes' words: the notifier's default, zh-CN */
    pthread_mutex_t lock;
    struct recent *recent; /* ring of RECENT_MAX */
    size_t next;
};

/* The entry of occurrence (alarm_id, raised_ms) of site/gateway (NULL:
 * any), or NULL. Locked. */
static struct recent *recent_find(struct hub_notify *hn, const char *alarm_id, int64_t raised_ms,
                                  const char *site, const char *gateway)
{
    for (size_t i = 0; i < RECENT_MAX; i++) {
        struct recent *r = &hn->recent[i];
        if (r->a.raised_ms == raised_ms && !strcmp(r->a.alarm_id, alarm_id) &&
            (!site || (!strcmp(r->a.site, site) && !strcmp(r->a.gateway, gateway))))
            return r;
    }
    return NULL;
}

/* Keeps t as its occurrence's latest transition. Locked. */
static void recent_put(struct hub_notify *hn, const struct ch_alert *t)
{
    struct recent *r = recent_find(hn, t->alarm_id, t->raised_ms, t->site, t->gateway);
    if (r) {
        r->a = *t;
        return;
    }
    hn->recent[hn->next] = (struct recent){.a = *t};
    hn->next = (hn->next + 1) % RECENT_MAX;
}

/* A delivery's final outcome: stored as a "notified" transition. */
static void on_result(void *arg, const struct notify_result *r)
{
    struct hub_notify *hn = arg;
    if (!r->final)
        return;
    struct ch_alert t;
    pthread_mutex_lock(&hn->lock);
    struct recent *kept = recent_find(hn, r->alarm_id, r->raised_ms, NULL, NULL);
    if (kept) {
        t = kept->a;
        /* one time each: the store keeps a point per (alarm, event, time), and
         * an acknowledgement may end several deliveries in one millisecond */
        int64_t ts = r->ts_ms ? r->ts_ms : ch_now_ms();
        if (ts <= kept->noted_ms)
            ts = kept->noted_ms + 1;
        if (ts <= t.ts_ms)
            ts = t.ts_ms + 1;
        kept->noted_ms = t.ts_ms = ts;
    }
    pthread_mutex_unlock(&hn->lock);
    if (!kept)
        return;
    t.event = CH_AE_NOTIFIED;
    t.escalation = r->level < 0 ? 0 : r->level > CH_ESCALATION_MAX ? CH_ESCALATION_MAX : r->level;
    t.seq = t.oldest = 0; /* the hub's, not the gateway's numbering */
    const char *who = r->recipient && *r->recipient ? r->recipient : r->channel;
    ch_utf8_copy(t.by, who ? who : "hub", sizeof t.by);
    char text[CH_TEXT_MAX];
    notify_outcome(r, hn->locale, text, sizeof text);
    ch_utf8_copy(t.message, text, sizeof t.message);
    if (ingest_store_alert(hn->in, &t) != 0)
        LOGW(MOD, r->alarm_id, "cannot store who was told (%s)", who ? who : "?");
}

struct hub_notify *hub_notify_open(const struct hubcfg *cfg, struct ingest *in)
{
    if (!cfg->notify || !in)
        return NULL;
    struct hub_notify *hn = ch_xcalloc(1, sizeof *hn);
    hn->in = in;
    hn->max_age_ms = cfg->notify_max_age_ms;
    hn->locale = "zh-CN";
    hn->recent = ch_xcalloc(RECENT_MAX, sizeof *hn->recent);
    pthread_mutex_init(&hn->lock, NULL);
    char *dir = cfg_resolve_path(cfg->spool.dir, "notify");
    const char *tz = cfg->notify_timezone && *cfg->notify_timezone ? cfg->notify_timezone : NULL;
    int rc = notify_open(cfg->notify, dir, tz, on_result, hn, &hn->n);
    free(dir);
    if (rc != 0) {
        LOGE(MOD, NULL, "cannot start the notifier: %s", ch_strerror(rc));
        pthread_mutex_destroy(&hn->lock);
        free(hn->recent);
        free(hn);
        return NULL;
    }
    return hn;
}

void hub_notify_alert(void *arg, const struct ch_alert *a, int64_t now_ms)
{
    struct hub_notify *hn = arg;
    struct notify_event ne;
    char where[2 * CH_NAME_MAX + 4];
    if (!hn || !notify_event_of_alert(a, &ne, where, sizeof where))
        return;
    if (now_ms - a->ts_ms > hn->max_age_ms) {
        LOGD(MOD, a->alarm_id, "not told: %s of %lld s ago (a backlog)",
             ch_alarm_event_name(a->event), (long long)((now_ms - a->ts_ms) / 1000));
        return;
    }
    pthread_mutex_lock(&hn->lock);
    recent_put(hn, a);
    pthread_mutex_unlock(&hn->lock);
    notify_event(hn->n, &ne);
}

void hub_notify_close(struct hub_notify *hn)
{
    if (!hn)
        return;
    notify_close(hn->n);
    pthread_mutex_destroy(&hn->lock);
    free(hn->recent);
    free(hn);
}
