/* The ingest queue: telemetry waits here, one queue per gateway, for the
 * ingest workers, so that MQTT's thread is never busy parsing a gateway's
 * flood while another site's alarm waits behind it.
 *
 * WHY. Paho serves every MQTTAsync client of a process on one receive thread
 * (its callbacks included). A hub that parses telemetry in the callback (a
 * 5,000-reading message takes tens of milliseconds), or waits there for the
 * disk (an alert's fsync), makes the alarm on its priority client (the view,
 * subscriber.h) wait for that thread, whatever connection it came on. So the
 * callback does only what is quick: statuses are handled at once (small, no
 * fsync); an alert is copied into the alert queue, which its own worker
 * takes in order into the spool's alert lane (fsync'ed; written to InfluxDB
 * by the alert writer, influx.h), never behind telemetry; telemetry is
 * admitted against its gateway's quota (registry.h: else shed, unparsed),
 * then handled at once if it is small (at most INGESTQ_SYNC_MAX bytes: a
 * millisecond or two of parsing, care-edge's usual message) and nothing of
 * its gateway waits, else copied into its gateway's queue. Telemetry workers
 * take the gateways' queues in turn, one message of one gateway at a time,
 * so a gateway with a long queue gets no more than its turn: the others'
 * messages do not wait behind its backlog.
 *
 * BOUNDS. A gateway's queue holds at most queue_bytes, all queues together
 * queue_max_bytes; a message that does not fit is shed like one over quota:
 * not stored, not acknowledged to the gateway (its spool keeps it and sends
 * it again; counted messages_shed). Memory stays bounded whatever one
 * gateway sends.
 *
 * DELIVERY. Paho sends the broker its PUBACK as a message arrives, before
 * the callback runs; a queued message waits longer for the spool than one
 * handled at once. What a gateway may free is what the hub acknowledges
 * (acks.h), noted only once the points are in the spool: a hub that crashes
 * loses what was queued, never what it acknowledged, and the gateways send
 * it again. (A gateway that frees at the broker's PUBACK,
 * uplink.delivery: broker or a version from before the acknowledgements, has
 * no such second chance: at most queue_max_bytes of telemetry and the alerts
 * of the last moments.) More than INGESTQ_ALERTS_MAX alerts or
 * INGESTQ_ALERT_BYTES_MAX bytes of them waiting (an alarm storm the disk
 * cannot follow), and an alert over INGESTQ_ALERT_SIZE_MAX, are handled on
 * MQTT's thread instead: an alarm is never shed.
 *
 * Order: a gateway's messages are handled in the order they arrived, one at
 * a time (a gateway is taken by one worker at a time). Thread-safe. */
#ifndef CAREHUB_INGESTQ_H
#define CAREHUB_INGESTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Alerts waiting for the alert worker, at most, by count and by bytes, and
 * the largest one queued (an alert is about a kilobyte); beyond any of them,
 * handled on MQTT's thread: memory stays bounded whatever gateways send. */
#define INGESTQ_ALERTS_MAX      10000
#define INGESTQ_ALERT_BYTES_MAX (16 * 1024 * 1024)
#define INGESTQ_ALERT_SIZE_MAX  (64 * 1024)

/* Telemetry of at most this many bytes is handled on MQTT's thread when its
 * gateway has nothing queued (a few hundred readings: a millisecond or two);
 * larger messages wait for the workers. */
#define INGESTQ_SYNC_MAX 65536

struct hubcfg_ingest;
struct ingest;
struct ingestq;
struct registry;

/* Starts the alert worker and cfg->workers telemetry workers handing
 * messages to in (borrowed, as are reg,
 * which may be NULL, and cfg, until ingestq_close). Returns NULL if a thread
 * cannot start (logged). */
struct ingestq *ingestq_new(struct ingest *in, struct registry *reg,
                            const struct hubcfg_ingest *cfg);

/* One MQTT message (topic and payload borrowed): handled at once, shed, or
 * copied into its gateway's queue, as described above. Returns once the
 * message may be acknowledged to the broker. */
void ingestq_push(struct ingestq *q, const char *topic, const void *payload, size_t len,
                  bool retained, int64_t now_ms);

struct ingestq_stats {
    uint64_t queued;     /* telemetry messages queued since start */
    uint64_t shed_full;  /* shed because their gateway's queue, or all, were full */
    uint64_t bytes;      /* queued now */
    uint64_t peak_bytes; /* most queued at once since start */
    uint64_t gateways;   /* with messages queued now */
};

void ingestq_stats(struct ingestq *q, struct ingestq_stats *out);

/* Stops: what is queued (alerts and telemetry) is handed to ingest (into the
 * spool), then the workers end and everything is freed. No push may run concurrently or
 * follow (close the MQTT client first). NULL is a no-op. */
void ingestq_close(struct ingestq *q);

#endif
