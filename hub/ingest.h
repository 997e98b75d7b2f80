/* What the hub does with one MQTT message, independent of MQTT itself.
 *
 * topic carehub/v1/{site}/{gateway}/{kind}:
 *   telemetry -> ch_telemetry_from_json -> one point per reading
 *   status    -> ch_status_from_json    -> presence, one carehub_status point
 *   alert     -> ch_alert_from_json     -> one "alarm" point (lp_alert)
 *   cmd, cmd/... -> ignored, not an error: commands from the hub or staff to
 *                   gateways travel in the same namespace the hub subscribes to
 *   anything else -> rejected
 * The payload's site and gateway must be the topic's: a gateway may write only
 * its own data. Each rejection is one log line,
 *   [ingest:<topic>] rejected: <reason>: <what, naming the field>
 * and one count under its reason; ingest always goes on.
 *
 * Points go to a sink (the InfluxDB writer in care-hub, a capture in tests). */
#ifndef CAREHUB_INGEST_H
#define CAREHUB_INGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Payloads above this many bytes are rejected unread. */
#define INGEST_MAX_PAYLOAD (1024 * 1024)

enum ingest_reason {
    INGEST_INVALID_TOPIC,  /* not carehub/v1/{site}/{gateway}/{kind} with valid ids */
    INGEST_OVERSIZE,       /* payload above INGEST_MAX_PAYLOAD */
    INGEST_UNKNOWN_KIND,   /* a kind the hub does not take */
    INGEST_INVALID_JSON,   /* not (strict) JSON */
    INGEST_INVALID_SCHEMA, /* JSON that breaks the contract */
    INGEST_SITE_MISMATCH,  /* payload site/gateway differ from the topic's */
    INGEST_N_REASONS
};

/* "invalid_topic", "oversize", ...: the names used in logs and self-metrics. */
const char *ingest_reason_name(enum ingest_reason r);

struct ingest_stats {
    uint64_t messages_received;
    uint64_t telemetry_ok; /* telemetry messages accepted */
    uint64_t status_ok;    /* status messages accepted */
    uint64_t alerts_ok;    /* alert messages (alarm transitions) accepted */
    uint64_t ignored;      /* messages not for the hub (commands to gateways) */
    uint64_t readings;     /* readings in accepted telemetry */
    uint64_t rejected[INGEST_N_REASONS];
};

/* Receives the points of one message: data (len bytes, lines points of line
 * protocol). alert: the points are an alarm transition (they go ahead of
 * telemetry, and are dropped last). Takes ownership of data. Returns 0 once
 * the points are kept (in the hub's spool), or a negative error: then the
 * message's numbers are not acknowledged to the gateway, which sends them
 * again. */
typedef int (*ingest_sink)(void *ctx, char *data, size_t len, size_t lines, bool alert);

struct presence;
struct ingest;

/* presence (borrowed; NULL: none, as in a shared subscription, where this
 * process sees only part of each gateway's numbers) is told about statuses
 * and telemetry; sink gets the
 * points. Caller frees with ingest_free. */
struct ingest *ingest_new(struct presence *presence, ingest_sink sink, void *sink_ctx);
void ingest_free(struct ingest *in);

struct acks;
/* Storage acknowledgements (borrowed; NULL: none): the reading numbers of an
 * accepted telemetry message and the number of an accepted alert are noted
 * once the sink kept their points. The numbers of a message refused for its
 * content (schema, site) are noted too, when they can be read: sending it
 * again would be refused again, forever; it is logged and counted instead. */
void ingest_set_acks(struct ingest *in, struct acks *acks);

enum ingest_result { INGEST_ACCEPTED, INGEST_IGNORED, INGEST_REJECTED };

/* Handles one message. topic is NUL-terminated and payload len bytes (both
 * borrowed). retained: the broker replayed it because of a new subscription.
 * now_ms: wall-clock receive time. Counters are safe to read from another
 * thread; messages are handled one at a time (Paho's callback thread). */
enum ingest_result ingest_message(struct ingest *in, const char *topic, const void *payload,
                                  size_t len, bool retained, int64_t now_ms);

void ingest_stats(struct ingest *in, struct ingest_stats *out);

/* The summary figures kept in InfluxDB per UTC day and hour (measurement
 * carehub_rollup, see rollup.h) cover hours that ended rollup_after_ms ago. A
 * reading that arrives for such an hour (a gateway's backlog after an
 * outage) marks its day's kept figures, and its hours', stale: one carehub_rollup_stale point (tag
 * site, fields mark (a new random id) and marked_ms, at the day's start) per site and day in the
 * message, through the sink, after the message's points.
 * 0 (the default): no marks. */
void ingest_set_rollup_after(struct ingest *in, int64_t rollup_after_ms);

#endif
