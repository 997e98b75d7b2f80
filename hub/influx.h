/* The InfluxDB writer: every batch of line protocol goes through the hub's
 * spool on disk, and two threads write the spool to InfluxDB in order, one
 * per lane: the alert lane's writer has its own HTTP connection and sends an
 * alarm transition at once, never behind a telemetry batch in flight, a
 * telemetry backlog or a telemetry batch being retried.
 *
 * Ingest (Paho's callback thread) appends each hand-over to the telemetry
 * lane of the spool (influx_enqueue) and returns once it is written there:
 * the MQTT message is acknowledged to the broker only after that, so a hub
 * crash loses nothing it acknowledged, and a long InfluxDB outage neither
 * blocks ingest nor loses data (up to the spool's max_bytes; beyond it the
 * oldest records are evicted, logged and counted by the spool).
 *
 * Each writer thread reads its lane's records in order (spool_next), cuts
 * them into requests of batch_size points, or less once the oldest point has
 * waited flush_interval (the alert writer sends what it has at once; a
 * record may be split between two requests at a line boundary), and
 * acknowledges a record (spool_ack) only once all its points were answered
 * 2xx or set aside in the dead-letter file. Requests: v1 POST
 * {url}/write?db=..&precision=ms[&rp=raw] (basic auth when a username is set), v2 POST
 * {url}/api/v2/write?org=..&bucket=..&precision=ms with "Authorization: Token
 * ..". Bodies are gzip'ed when configured.
 *
 * Outcome of a request:
 * - 2xx: written; its records are acknowledged.
 * - 5xx, 408, 429, timeouts, refused or broken connections: retried, the same
 *   points first, with a back-off doubling from 500 ms to max_backoff (every
 *   500 ms once shutdown began), reset on success.
 * - 401, 403, 404 and any other status that is not about the data (3xx,
 *   405...): the credentials, database or URL are wrong, not the points;
 *   dropping everything until someone fixes them would lose it all: retried
 *   the same way, logged as a configuration problem. On 404 the v1 database
 *   is created again (create_database).
 * - 413 (too large): the points are split in halves and each half sent
 *   again, down to a single point; a single point refused 413 goes to the
 *   dead letter.
 * - 400 and 422 (the data is refused: bad line, field type conflict, outside
 *   the retention policy): the whole request goes to the dead-letter file as
 *   "# <ISO 8601 UTC time> HTTP 400: <InfluxDB's error>" followed by its
 *   lines, made durable (fdatasync) before its records are acknowledged, and
 *   the writer goes on. InfluxDB 1.x writes the good points of such a batch
 *   ("partial write: ... dropped=N"); re-applying the dead letter later is
 *   idempotent. If the dead letter cannot be written, writing it is retried
 *   with the back-off (the writer waits on it): never discarded, never lost.
 *   A spool record of neither line-protocol type goes there as it is.
 *
 * Shutdown (influx_close): what is in the spool is written without waiting
 * for flush_interval, for at most shutdown_timeout; an unfinished request is
 * then aborted and everything not yet acknowledged stays in the spool for the
 * next start (which writes it first: a few points may be written twice,
 * which InfluxDB absorbs: same series and timestamp). */
#ifndef CAREHUB_INFLUX_H
#define CAREHUB_INFLUX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hubcfg_influx;
struct influx;
struct spool;

/* The spool record types of a batch of line protocol (whole lines, each
 * ending in '\n'): for the database's default retention policy, and for the
 * readings' own (written with rp=raw when influx.retention.raw is set, to the
 * default policy otherwise). A request holds lines of one type. */
#define INFLUX_RECORD_LP     1
#define INFLUX_RECORD_LP_RAW 2

/* Where points are kept (retention.h): readings in their own policy (raw,
 * when configured); alarms, statuses, audit and the hub's records in the
 * database's default one. */
enum influx_policy { INFLUX_RP_DEFAULT, INFLUX_RP_READINGS };

struct influx_stats {
    uint64_t points_written;      /* accepted by InfluxDB */
    uint64_t write_errors;        /* failed requests, whatever the reason */
    uint64_t write_retries;       /* requests repeated after a retryable failure */
    uint64_t write_rejected;      /* points InfluxDB refused (400/413/422) */
    uint64_t dead_letter_batches; /* requests set aside in the dead-letter file */
    uint64_t dead_letter_lines;   /* their lines (the whole request, good points too) */
    uint64_t dropped;             /* points the spool would not take (see influx_enqueue) */
};

/* Starts the writer threads on spool (borrowed until influx_close; each
 * writer is the only reader of its lane). cfg is borrowed until
 * influx_close; cfg->dead_letter names the dead-letter file (created when
 * first needed). The v1 database is created (if configured) by each writer
 * before its first write, so a hub starts while InfluxDB is still down.
 * Records left in the spool by an earlier run are written first. Returns 0,
 * or CH_ENOMEM / -errno if curl or the thread cannot be set up.
 * curl_global_init must have been called. */
int influx_open(const struct hubcfg_influx *cfg, struct spool *spool, struct influx **out);

/* Appends lines points of line protocol (data, len bytes, each point ending
 * in '\n') to the spool and returns once they are written there (large
 * hand-overs become several records, cut at line boundaries). Takes ownership
 * of data in every case. When the spool cannot be written (-EIO, -EROFS...)
 * the append is retried with a back-off, blocking the caller (so that MQTT
 * does not acknowledge what the hub could not keep) until it succeeds or a
 * stop begins (influx_begin_stop). Returns 0; CH_EINVAL when a single line is
 * larger than a spool record may be; or the spool's error when it gave up
 * because of the stop. In the error cases the points are lost: logged and
 * counted as dropped. Thread-safe. */
int influx_enqueue(struct influx *w, enum influx_policy rp, char *data, size_t len, size_t lines);

/* As influx_enqueue, for the points of alarm transitions: they go to the
 * spool's alert lane (fsync'ed before it returns), are written by the alert
 * writer at once, whatever telemetry is in flight or waiting, and are
 * evicted last when the spool is full. */
int influx_enqueue_alert(struct influx *w, char *data, size_t len, size_t lines);

/* As influx_enqueue, but tries the spool once and never blocks (for the
 * self-metrics, written by the thread that must stay free to see signals). */
int influx_enqueue_once(struct influx *w, enum influx_policy rp, char *data, size_t len,
                        size_t lines);

/* A stop begins: an influx_enqueue blocked on a spool that cannot be written
 * gives up (its points are counted as dropped), and later ones do not wait,
 * so that the MQTT client can be closed. Call before closing it. */
void influx_begin_stop(struct influx *w);

/* Whether the v1 database (and its retention policies) was created by a
 * writer, or need not be (create_database off, version 2). Thread-safe. */
bool influx_database_ready(struct influx *w);

/* Counters so far. Thread-safe. */
void influx_stats(struct influx *w, struct influx_stats *out);

/* Writes out what the spool holds without waiting for flush_interval, for at
 * most shutdown_timeout (an unfinished request is aborted then); what is left
 * stays in the spool. Stops the thread and frees everything but the spool
 * (the caller closes it after). The final counters go to *final when it is
 * not NULL. Implies influx_begin_stop. No influx_enqueue may run
 * concurrently or follow. */
void influx_close(struct influx *w, struct influx_stats *final);

#endif
