#include "ingest.h"
#include "acks.h"
#include "codec.h"
#include "lineproto.h"
#include "log.h"
#include "presence.h"
#include "rollup.h"
#include "util.h"

#include <inttypes.h>
#include <jansson.h>
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

struct ingest {
    struct presence *presence;
    int64_t rollup_after_ms;
    ingest_sink sink;
    void *sink_ctx;
    struct acks *acks;
    atomic_uint_fast64_t messages_received, telemetry_ok, status_ok, alerts_ok, readings, ignored;
    atomic_uint_fast64_t rejected[INGEST_N_REASONS];
};

struct ingest *ingest_new(struct presence *presence, ingest_sink sink, void *sink_ctx)
{
    struct ingest *in = ch_xcalloc(1, sizeof *in);
    in->presence = presence;
    in->sink = sink;
    in->sink_ctx = sink_ctx;
    return in;
}

void ingest_free(struct ingest *in)
{
    free(in);
}

void ingest_set_acks(struct ingest *in, struct acks *acks)
{
    in->acks = acks;
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

static int emit(struct ingest *in, struct lp_buf *b, bool alert)
{
    size_t len, lines;
    char *data = lp_take(b, &len, &lines);
    return data ? in->sink(in->sink_ctx, data, len, lines, alert) : 0;
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
        emit(in, &b, false);
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
    struct lp_buf b;
    lp_init(&b);
    lp_telemetry(&b, &t);
    int kept = emit(in, &b, false);
    mark_stale_days(in, &t, now_ms);
    if (kept == 0 && t.seq)
        settle(in, site, gw, ACKS_READINGS, t.seq, t.seq + t.n_readings - 1);
    count(&in->telemetry_ok, 1);
    count(&in->readings, t.n_readings);
    if (in->presence)
        presence_telemetry(in->presence, site, gw, t.seq, t.n_readings, t.historical, t.oldest,
                           now_ms);
    LOGD("ingest", show_topic(topic).s, "seq %" PRIu64 ": %zu readings%s", t.seq, t.n_readings,
         t.historical ? " (historical)" : "");
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
    /* A will has no ts of its own and is stamped on arrival; when the broker
     * replays it (retained) on a resubscribe it is old news, already stored
     * when it first came, and would add a false offline event. */
    if (s.ts_ms != 0 || !retained) {
        struct lp_buf b;
        lp_init(&b);
        lp_status(&b, &s, now_ms);
        emit(in, &b, false);
    }
    count(&in->status_ok, 1);
    ch_status_free(&s);
    return INGEST_ACCEPTED;
}

/* An alert is one alarm transition, stored as it is: the hub keeps no alarm
 * state (any hub instance may get any message), and a redelivery makes the
 * identical point, which overwrites itself. */
static enum ingest_result on_alert(struct ingest *in, const char *topic, const json_t *root,
                                   const char *site, const char *gw, int64_t now_ms)
{
    struct ch_alert a;
    char err[256];
    if (ch_alert_from_json(root, &a, err, sizeof err) != 0) {
        settle_refused(in, root, site, gw, true);
        return reject(in, topic, INGEST_INVALID_SCHEMA, "%s", err);
    }
    if (!same_origin(site, gw, a.site, a.gateway)) {
        settle_refused(in, root, site, gw, true);
        return reject(in, topic, INGEST_SITE_MISMATCH, "payload is from %s/%s", a.site, a.gateway);
    }
    struct lp_buf b;
    lp_init(&b);
    lp_alert(&b, &a);
    if (emit(in, &b, true) == 0)
        settle(in, site, gw, ACKS_ALERTS, a.seq, a.seq);
    if (in->presence)
        presence_alert(in->presence, site, gw, a.seq, a.oldest, now_ms);
    count(&in->alerts_ok, 1);
    LOGD("ingest", show_topic(topic).s, "alarm %s: %s -> %s", a.alarm_id,
         ch_alarm_event_name(a.event), ch_alarm_state_name(a.state));
    return INGEST_ACCEPTED;
}

enum ingest_result ingest_message(struct ingest *in, const char *topic, const void *payload,
                                  size_t len, bool retained, int64_t now_ms)
{
    count(&in->messages_received, 1);
    char site[CH_ID_MAX], gw[CH_ID_MAX];
    const char *kind;
    if (!ch_topic_parse(topic, site, gw, &kind))
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
    if (len > INGEST_MAX_PAYLOAD)
        return reject(in, topic, INGEST_OVERSIZE, "%zu bytes, more than %d", len,
                      INGEST_MAX_PAYLOAD);
    char err[256];
    json_t *root = ch_json_parse(payload, len, err, sizeof err);
    if (!root)
        return reject(in, topic, INGEST_INVALID_JSON, "%s", err);
    enum ingest_result r;
    switch (k) {
    case TELEMETRY:
        r = on_telemetry(in, topic, root, site, gw, now_ms);
        break;
    case STATUS:
        r = on_status(in, topic, root, site, gw, retained, now_ms);
        break;
    default:
        r = on_alert(in, topic, root, site, gw, now_ms);
        break;
    }
    json_decref(root);
    return r;
}

void ingest_stats(struct ingest *in, struct ingest_stats *out)
{
    out->messages_received = atomic_load(&in->messages_received);
    out->telemetry_ok = atomic_load(&in->telemetry_ok);
    out->status_ok = atomic_load(&in->status_ok);
    out->alerts_ok = atomic_load(&in->alerts_ok);
    out->ignored = atomic_load(&in->ignored);
    out->readings = atomic_load(&in->readings);
    for (int i = 0; i < INGEST_N_REASONS; i++)
        out->rejected[i] = atomic_load(&in->rejected[i]);
}
