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
 * With a registry (ingest_set_registry, registry.h), a telemetry message is
 * first admitted against its gateway's quota (else shed, unparsed and not
 * acknowledged), and each of its readings is accepted, refused (a device
 * outside the gateway's declared inventory: not stored, acknowledged) or
 * deferred (no birth known yet: not stored, not acknowledged).
 *
 * Alarm transitions reach ingest twice in care-hub: on the ingest
 * subscription, behind any telemetry backlog, and on the priority path (the
 * view client, which gets nothing but statuses and alerts), which does not
 * wait behind it. The first copy of an alert to arrive is handled, the other
 * is recognised (a hash of topic and payload, the last INGEST_ALERTS_SEEN
 * kept) and only acknowledged again: never stored or counted twice.
 *
 * Points go to a sink (the InfluxDB writer in care-hub, a capture in tests). */
#ifndef CAREHUB_INGEST_H
#define CAREHUB_INGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Payloads above this many bytes are rejected unread. The broker should
 * refuse them before anyone holds them (deploy/mosquitto: message_size_limit
 * the same, max_packet_size a little above): Paho hands over whole messages
 * only. */
#define INGEST_MAX_PAYLOAD (1024 * 1024)

/* Alerts remembered to recognise the second copy of each. */
#define INGEST_ALERTS_SEEN 4096

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
    uint64_t telemetry_ok;     /* telemetry messages accepted */
    uint64_t status_ok;        /* status messages accepted */
    uint64_t alerts_ok;        /* alert messages (alarm transitions) accepted */
    uint64_t ignored;          /* messages not for the hub (commands to gateways) */
    uint64_t readings;         /* readings stored (of accepted telemetry) */
    uint64_t alerts_duplicate; /* second copies of alerts (the other path's), not handled again */
    uint64_t rejected[INGEST_N_REASONS];
};

/* Receives the points of one message: data (len bytes, lines points of line
 * protocol) of the kind given. Takes ownership of data. Returns 0 once
 * the points are kept (in the hub's spool), or a negative error: then the
 * message's numbers are not acknowledged to the gateway, which sends them
 * again. */
enum ingest_points {
    INGEST_READINGS, /* telemetry: the readings' retention policy */
    INGEST_RECORDS,  /* statuses, stale marks: kept long, in order with the readings */
    INGEST_ALERTS,   /* alarm transitions: ahead of telemetry, dropped last, kept long */
};
typedef int (*ingest_sink)(void *ctx, char *data, size_t len, size_t lines,
                           enum ingest_points kind);

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

struct ch_alert;
/* Each alert stored (its points handed to the sink), after that, on the
 * thread that ingested it (fn must not block): care-hub's notifier. */
typedef void (*ingest_alert_fn)(void *arg, const struct ch_alert *a, int64_t now_ms);
void ingest_set_alert_hook(struct ingest *in, ingest_alert_fn fn, void *arg);

/* Stores one alert the hub made itself (a "notified" line of an alarm's
 * history) as the alert path stores a gateway's: 0, or the sink's error. */
int ingest_store_alert(struct ingest *in, const struct ch_alert *a);

struct registry;
/* The site registry (borrowed; NULL: none, every reading is accepted):
 * quotas and inventories, told about statuses. */
void ingest_set_registry(struct ingest *in, struct registry *registry);

enum ingest_result { INGEST_ACCEPTED, INGEST_IGNORED, INGEST_REJECTED, INGEST_SHED };

/* Handles one message. topic is NUL-terminated and payload len bytes (both
 * borrowed). retained: the broker replayed it because of a new subscription.
 * now_ms: wall-clock receive time. INGEST_SHED: a telemetry message not
 * admitted (quota, registry file), not acknowledged. INGEST_IGNORED also
 * for the second copy of an alert. Thread-safe: care-hub calls it from its
 * ingest workers and MQTT's thread (ingestq.h). */
enum ingest_result ingest_message(struct ingest *in, const char *topic, const void *payload,
                                  size_t len, bool retained, int64_t now_ms);

/* The two halves of ingest_message for telemetry that waits in a queue
 * (ingestq.h). ingest_admit: counts a telemetry message of site/gateway as
 * received and asks the registry whether it is admitted (false: shed,
 * counted there, not acknowledged). ingest_queued: handles it later, as
 * ingest_message does (its gateway's quota is checked again then: what
 * waited is shed if the gateway went over it meanwhile), without counting it
 * received again. */
bool ingest_admit(struct ingest *in, const char *site, const char *gateway);
enum ingest_result ingest_queued(struct ingest *in, const char *topic, const void *payload,
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
