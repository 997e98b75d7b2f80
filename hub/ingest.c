#include "ingest.h"
#include "acks.h"
#include "codec.h"
#include "err.h"
#include "lineproto.h"
#include "log.h"
#include "presence.h"
#include "registry.h"
#include "rollup.h"
#include "util.h"

#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const reason_names[INGEST_N_REASONS] = {
    [INGEST_INVALID_TOPIC] = "invalid_topic",   [INGEST_OVERSIZE] = "oversize",
    [INGEST_UNKNOWN_KIND] = "unknown_kind",     [INGEST_INVALID_JSON] = "invalid_json",
    [INGEST_INVALID_SCHEMA] = "invalid_schema", [INGEST_SITE_MISMATCH] = "site_mismatch",
};

const char *ingest_reason_name(enum ingest_reason r)
{
    return (unsigned)r < INGEST_N_REASONS ? reason_names[r] : "?";
}

/* An alert seen: the hash of its topic and payload; claimed while the first
 * copy is being handled, done after (with its number, to acknowledge a
 * second copy again). */
enum seen_state { SEEN_NONE, SEEN_CLAIMED, SEEN_DONE };

struct seen {
    uint64_t hash;
    uint64_t seq;
    enum seen_state state;
};

struct ingest {
    struct presence *presence;
    struct registry *registry;
    ingest_alert_fn alert_hook; /* told each stored alert (the hub's notifier) */
    void *alert_arg;
    int64_t rollup_after_ms;
    ingest_sink sink;
    void *sink_ctx;
    struct acks *acks;
    pthread_mutex_t seen_lock;
    struct seen *seen; /* a ring of the last INGEST_ALERTS_SEEN alerts */
    size_t seen_next;
    atomic_uint_fast64_t messages_received, telemetry_ok, status_ok, alerts_ok, readings, ignored,
        alerts_duplicate;
    atomic_uint_fast64_t rejected[INGEST_N_REASONS];
};

struct ingest *ingest_new(struct presence *presence, ingest_sink sink, void *sink_ctx)
{
    struct ingest *in = ch_xcalloc(1, sizeof *in);
    in->presence = presence;
    in->sink = sink;
    in->sink_ctx = sink_ctx;
    pthread_mutex_init(&in->seen_lock, NULL);
    in->seen = ch_xcalloc(INGEST_ALERTS_SEEN, sizeof *in->seen);
    return in;
}

void ingest_free(struct ingest *in)
{
    if (!in)
        return;
    pthread_mutex_destroy(&in->seen_lock);
    free(in->seen);
    free(in);
}

void ingest_set_alert_hook(struct ingest *in, ingest_alert_fn fn, void *arg)
{
    in->alert_hook = fn;
    in->alert_arg = arg;
}

void ingest_set_acks(struct ingest *in, struct acks *acks)
{
    in->acks = acks;
}

void ingest_set_registry(struct ingest *in, struct registry *registry)
{
    in->registry = registry;
}

/* ---- the two copies of an alert ----------------------------------------------
 * A linear scan of a few thousand hashes per alert: alerts come a few a
 * minute per site. */

static uint64_t alert_hash(const char *topic, const void *payload, size_t len)
{
    /* over topic, its NUL, payload */
    uint64_t h = ch_fnv1a(ch_fnv1a(CH_FNV1A_INIT, topic, strlen(topic) + 1), payload, len);
    return h ? h : 1;
}

/* Claims the alert with this hash for handling: SEEN_NONE if it is new (now
 * claimed), else its state, with its number in *seq. */
static enum seen_state seen_claim(struct ingest *in, uint64_t hash, uint64_t *seq)
{
    pthread_mutex_lock(&in->seen_lock);
    for (size_t i = 0; i < INGEST_ALERTS_SEEN; i++)
        if (in->seen[i].hash == hash && in->seen[i].state != SEEN_NONE) {
            enum seen_state st = in->seen[i].state;
            *seq = in->seen[i].seq;
            pthread_mutex_unlock(&in->seen_lock);
            return st;
        }
    in->seen[in->seen_next] = (struct seen){hash, 0, SEEN_CLAIMED};
    in->seen_next = (in->seen_next + 1) % INGEST_ALERTS_SEEN;
    pthread_mutex_unlock(&in->seen_lock);
    return SEEN_NONE;
}

/* The claimed alert was handled (done: stored or refused for good, with its
 * number, 0 if none) or could not be kept (forgotten: the next copy is
 * handled). */
static void seen_finish(struct ingest *in, uint64_t hash, bool done, uint64_t seq)
{
    pthread_mutex_lock(&in->seen_lock);
    for (size_t i = 0; i < INGEST_ALERTS_SEEN; i++)
        if (in->seen[i].hash == hash && in->seen[i].state == SEEN_CLAIMED) {
            in->seen[i].state = done ? SEEN_DONE : SEEN_NONE;
            in->seen[i].seq = seq;
            break;
        }
    pthread_mutex_unlock(&in->seen_lock);
}

/* Numbers lo..hi of site/gw are settled: stored, or refused for good. */
static void settle(struct ingest *in, const char *site, const char *gw, enum acks_lane lane,
                   uint64_t lo, uint64_t hi)
{
    if (in->acks && lo)
        acks_note(in->acks, site, gw, lane, lo, hi);
}

/* A message refused for its content: its numbers, if they can be read, are
 * acknowledged all the same (see ingest_set_acks). */
static void settle_refused(struct ingest *in, const json_t *root, const char *site, const char *gw,
                           bool alert)
{
    const json_t *seq = json_object_get(root, "seq");
    if (!in->acks || !json_is_integer(seq) || json_integer_value(seq) < 1 ||
        (uint64_t)json_integer_value(seq) > CH_NUMBER_MAX)
        return;
    uint64_t lo = (uint64_t)json_integer_value(seq), n = 1;
    if (!alert) {
        size_t k = json_array_size(json_object_get(root, "readings"));
        if (k == 0 || k > CH_MAX_READINGS || lo + k - 1 > CH_NUMBER_MAX)
            return;
        n = k;
    }
    settle(in, site, gw, alert ? ACKS_ALERTS : ACKS_READINGS, lo, lo + n - 1);
}

static void count(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* The topic as a log instance: at most 160 bytes, control characters as '?'
 * (MQTT allows them in topics; a log line must stay one line). */
struct shown_topic {
    char s[168];
};

static struct shown_topic show_topic(const char *topic)
{
    struct shown_topic o;
    size_t n = strlen(topic), cut = n > 160 ? 160 : n;
    for (size_t i = 0; i < cut; i++) {
        unsigned char c = (unsigned char)topic[i];
        o.s[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    strcpy(o.s + cut, cut < n ? "..." : "");
    return o;
}

static enum ingest_result reject(struct ingest *in, const char *topic, enum ingest_reason r,
                                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static enum ingest_result reject(struct ingest *in, const char *topic, enum ingest_reason r,
                                 const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    count(&in->rejected[r], 1);
    LOGW("ingest", show_topic(topic).s, "rejected: %s: %s", reason_names[r], why);
    return INGEST_REJECTED;
}

static int emit(struct ingest *in, struct lp_buf *b, enum ingest_points kind)
{
    size_t len, lines;
    char *data = lp_take(b, &len, &lines);
    return data ? in->sink(in->sink_ctx, data, len, lines, kind) : 0;
}

static bool same_origin(const char *site, const char *gw, const char *psite, const char *pgw)
{
    return strcmp(site, psite) == 0 && strcmp(gw, pgw) == 0;
}

void ingest_set_rollup_after(struct ingest *in, int64_t rollup_after_ms)
{
    in->rollup_after_ms = rollup_after_ms;
}

/* Marks the kept days the readings of t fall in (rollup.h). */
static void mark_stale_days(struct ingest *in, const struct ch_telemetry *t, int64_t now_ms)
{
    struct lp_buf b;
    lp_init(&b);
    if (rollup_mark_stale(&b, t, in->rollup_after_ms, now_ms))
        emit(in, &b, INGEST_RECORDS);
}

/* The end of the run of readings from i whose verdict is `want` (or, with
 * negate, is not). */
static size_t run_end(const uint8_t *verdict, size_t n, size_t i, uint8_t want, bool negate)
{
    while (i < n && ((verdict[i] == want) != negate))
        i++;
    return i;
}

/* The readings of t from i, n of them, as a message of their own (the
 * readings' numbers follow their place in t). */
static struct ch_telemetry part_of(const struct ch_telemetry *t, size_t i, size_t n)
{
    struct ch_telemetry p = *t;
    p.seq = t->seq ? t->seq + i : 0;
    p.readings = t->readings + i;
    p.n_readings = n;
    return p;
}

/* The numbers of every reading not deferred are settled (stored or refused
 * for good), and presence hears of them; deferred ones are neither: the
 * gateway sends them again. */
static void settle_handled(struct ingest *in, const struct ch_telemetry *t, const uint8_t *verdict,
                           bool kept, int64_t now_ms)
{
    size_t n = t->n_readings;
    for (size_t i = 0; i < n;) {
        size_t end = verdict ? run_end(verdict, n, i, REGISTRY_DEFER, true) : n;
        if (end > i) {
            struct ch_telemetry p = part_of(t, i, end - i);
            if (kept && p.seq)
                settle(in, t->site, t->gateway, ACKS_READINGS, p.seq, p.seq + p.n_readings - 1);
            if (in->presence)
                presence_telemetry(in->presence, t->site, t->gateway, p.seq, p.n_readings,
                                   t->historical, t->oldest, now_ms);
        }
        i = verdict ? run_end(verdict, n, end, REGISTRY_DEFER, false) : n;
    }
}

static enum ingest_result on_telemetry(struct ingest *in, const char *topic, const json_t *root,
                                       const char *site, const char *gw, int64_t now_ms)
{
    struct ch_telemetry t;
    char err[256];
    if (ch_telemetry_from_json(root, &t, err, sizeof err) != 0) {
        settle_refused(in, root, site, gw, false);
        return reject(in, topic, INGEST_INVALID_SCHEMA, "%s", err);
    }
    if (!same_origin(site, gw, t.site, t.gateway)) {
        reject(in, topic, INGEST_SITE_MISMATCH, "payload is from %s/%s", t.site, t.gateway);
        settle_refused(in, root, site, gw, false);
        ch_telemetry_free(&t);
        return INGEST_REJECTED;
    }
    uint8_t *verdict = NULL;
    if (in->registry) {
        verdict = ch_xcalloc(t.n_readings + 1, 1);
        registry_check(in->registry, &t, verdict);
    }
    /* the accepted readings, in runs that keep their numbers; and as one
     * message for the kept days they mark */
    struct lp_buf b;
    lp_init(&b);
    struct ch_telemetry ok = t;
    ok.readings = verdict ? ch_xcalloc(t.n_readings + 1, sizeof *ok.readings) : t.readings;
    ok.n_readings = 0;
    for (size_t i = 0; i < t.n_readings;) {
        size_t end =
            verdict ? run_end(verdict, t.n_readings, i, REGISTRY_ACCEPT, false) : t.n_readings;
        struct ch_telemetry p = part_of(&t, i, end - i);
        lp_telemetry(&b, &p);
        if (verdict)
            memcpy(&ok.readings[ok.n_readings], p.readings, p.n_readings * sizeof *p.readings);
        ok.n_readings += p.n_readings;
        i = verdict ? run_end(verdict, t.n_readings, end, REGISTRY_ACCEPT, true) : t.n_readings;
    }
    int kept = emit(in, &b, INGEST_READINGS);
    if (ok.n_readings)
        mark_stale_days(in, &ok, now_ms);
    settle_handled(in, &t, verdict, kept == 0, now_ms);
    if (in->registry && kept == 0)
        registry_stored(in->registry, site, gw, ok.n_readings);
    count(&in->telemetry_ok, 1);
    count(&in->readings, ok.n_readings);
    LOGD("ingest", show_topic(topic).s, "seq %" PRIu64 ": %zu readings%s, %zu stored", t.seq,
         t.n_readings, t.historical ? " (historical)" : "", ok.n_readings);
    if (verdict)
        free(ok.readings); /* a shallow copy: the readings are t's */
    free(verdict);
    ch_telemetry_free(&t);
    return INGEST_ACCEPTED;
}

static enum ingest_result on_status(struct ingest *in, const char *topic, const json_t *root,
                                    const char *site, const char *gw, bool retained, int64_t now_ms)
{
    struct ch_status s;
    char err[256];
    if (ch_status_from_json(root, &s, err, sizeof err) != 0)
        return reject(in, topic, INGEST_INVALID_SCHEMA, "%s", err);
    if (!same_origin(site, gw, s.site, s.gateway)) {
        reject(in, topic, INGEST_SITE_MISMATCH, "payload is from %s/%s", s.site, s.gateway);
        ch_status_free(&s);
        return INGEST_REJECTED;
    }
    if (in->presence)
        presence_status(in->presence, &s, now_ms);
    if (in->registry)
        registry_status(in->registry, &s);
    /* A will has no ts of its own and is stamped on arrival; when the broker
     * replays it (retained) on a resubscribe it is old news, already stored
     * when it first came, and would add a false offline event. */
    if (s.ts_ms != 0 || !retained) {
        struct lp_buf b;
        lp_init(&b);
        lp_status(&b, &s, now_ms);
        lp_inventory(&b, &s, now_ms); /* a birth: since when each device exists */
        emit(in, &b, INGEST_RECORDS);
    }
    count(&in->status_ok, 1);
    ch_status_free(&s);
    return INGEST_ACCEPTED;
}

/* An alert is one alarm transition, stored as it is: the hub keeps no alarm
 * state (any hub instance may get any message), and a redelivery makes the
 * identical point, which overwrites itself. */
static enum ingest_result on_alert(struct ingest *in, const char *topic, const json_t *root,
                                   const char *site, const char *gw, int64_t now_ms, uint64_t hash)
{
    struct ch_alert a;
    char err[256];
    if (ch_alert_from_json(root, &a, err, sizeof err) != 0) {
        settle_refused(in, root, site, gw, true);
        seen_finish(in, hash, true, 0);
        return reject(in, topic, INGEST_INVALID_SCHEMA, "%s", err);
    }
    if (!same_origin(site, gw, a.site, a.gateway)) {
        settle_refused(in, root, site, gw, true);
        seen_finish(in, hash, true, 0);
        return reject(in, topic, INGEST_SITE_MISMATCH, "payload is from %s/%s", a.site, a.gateway);
    }
    struct lp_buf b;
    lp_init(&b);
    lp_alert(&b, &a);
    bool kept = emit(in, &b, INGEST_ALERTS) == 0;
    if (kept)
        settle(in, site, gw, ACKS_ALERTS, a.seq, a.seq);
    seen_finish(in, hash, kept, a.seq); /* not kept: the other copy may be */
    if (in->presence)
        presence_alert(in->presence, site, gw, a.seq, a.oldest, now_ms);
    if (kept && in->alert_hook)
        in->alert_hook(in->alert_arg, &a, now_ms);
    count(&in->alerts_ok, 1);
    LOGD("ingest", show_topic(topic).s, "alarm %s: %s -> %s", a.alarm_id,
         ch_alarm_event_name(a.event), ch_alarm_state_name(a.state));
    return INGEST_ACCEPTED;
}

int ingest_store_alert(struct ingest *in, const struct ch_alert *a)
{
    struct lp_buf b;
    lp_init(&b);
    if (lp_alert(&b, a) != 0) {
        lp_free(&b);
        return CH_EINVAL;
    }
    return emit(in, &b, INGEST_ALERTS);
}

/* The second copy of an alert: acknowledged again (its ack may be what the
 * gateway missed) once the first copy is done, not handled again. */
static enum ingest_result duplicate(struct ingest *in, const char *site, const char *gw,
                                    enum seen_state st, uint64_t seq)
{
    count(&in->alerts_duplicate, 1);
    if (st == SEEN_DONE)
        settle(in, site, gw, ACKS_ALERTS, seq, seq);
    return INGEST_IGNORED;
}

/* ingest_message, counting the message received unless it was already
 * (ingest_admit). */
static enum ingest_result handle(struct ingest *in, const char *topic, const void *payload,
                                 size_t len, bool retained, int64_t now_ms, bool counted)
{
    char site[CH_ID_MAX], gw[CH_ID_MAX];
    const char *kind;
    bool topic_ok = ch_topic_parse(topic, site, gw, &kind);
    uint64_t hash = 0, seq = 0;
    if (topic_ok && strcmp(kind, "alert") == 0) {
        hash = alert_hash(topic, payload, len);
        enum seen_state st = seen_claim(in, hash, &seq);
        if (st != SEEN_NONE)
            return duplicate(in, site, gw, st, seq);
    }
    if (!counted)
        count(&in->messages_received, 1);
    if (!topic_ok)
        return reject(in, topic, INGEST_INVALID_TOPIC,
                      "not carehub/v1/{site}/{gateway}/{kind} with valid ids");
    if (strcmp(kind, "cmd") == 0 || strncmp(kind, "cmd/", 4) == 0) {
        count(&in->ignored, 1);
        LOGD("ingest", show_topic(topic).s, "command: not for the hub");
        return INGEST_IGNORED;
    }
    enum { TELEMETRY, STATUS, ALERT } k;
    if (strcmp(kind, "telemetry") == 0)
        k = TELEMETRY;
    else if (strcmp(kind, "status") == 0)
        k = STATUS;
    else if (strcmp(kind, "alert") == 0)
        k = ALERT;
    else
        return reject(in, topic, INGEST_UNKNOWN_KIND, "kind '%s'", kind);
    if (len > INGEST_MAX_PAYLOAD) {
        if (hash)
            seen_finish(in, hash, true, 0);
        return reject(in, topic, INGEST_OVERSIZE, "%zu bytes, more than %d", len,
                      INGEST_MAX_PAYLOAD);
    }
    if (k == TELEMETRY && in->registry &&
        registry_admit(in->registry, site, gw, ch_mono_ms()) != REGISTRY_ADMIT)
        return INGEST_SHED; /* counted and logged by the registry */
    char err[256];
    json_t *root = ch_json_parse(payload, len, err, sizeof err);
    if (!root) {
        if (hash)
            seen_finish(in, hash, true, 0);
        return reject(in, topic, INGEST_INVALID_JSON, "%s", err);
    }
    enum ingest_result r;
    switch (k) {
    case TELEMETRY:
        r = on_telemetry(in, topic, root, site, gw, now_ms);
        break;
    case STATUS:
        r = on_status(in, topic, root, site, gw, retained, now_ms);
        break;
    default:
        r = on_alert(in, topic, root, site, gw, now_ms, hash);
        break;
    }
    json_decref(root);
    return r;
}

enum ingest_result ingest_message(struct ingest *in, const char *topic, const void *payload,
                                  size_t len, bool retained, int64_t now_ms)
{
    return handle(in, topic, payload, len, retained, now_ms, false);
}

bool ingest_admit(struct ingest *in, const char *site, const char *gateway)
{
    count(&in->messages_received, 1);
    return !in->registry ||
           registry_admit(in->registry, site, gateway, ch_mono_ms()) == REGISTRY_ADMIT;
}

enum ingest_result ingest_queued(struct ingest *in, const char *topic, const void *payload,
                                 size_t len, bool retained, int64_t now_ms)
{
    return handle(in, topic, payload, len, retained, now_ms, true);
}

void ingest_stats(struct ingest *in, struct ingest_stats *out)
{
    out->messages_received = atomic_load(&in->messages_received);
    out->telemetry_ok = atomic_load(&in->telemetry_ok);
    out->status_ok = atomic_load(&in->status_ok);
    out->alerts_ok = atomic_load(&in->alerts_ok);
    out->ignored = atomic_load(&in->ignored);
    out->readings = atomic_load(&in->readings);
    out->alerts_duplicate = atomic_load(&in->alerts_duplicate);
    for (int i = 0; i < INGEST_N_REASONS; i++)
        out->rejected[i] = atomic_load(&in->rejected[i]);
}
