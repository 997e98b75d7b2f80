/* The InfluxDB writer: a queue of line protocol and one thread that POSTs it.
 *
 * The MQTT side only appends (influx_enqueue is a memcpy-free hand-over under
 * a mutex); the writer thread cuts the queue into batches of batch_size
 * points, or less once the oldest queued point has waited flush_interval, and
 * sends them in order: v1 POST {url}/write?db=..&precision=ms (basic auth when
 * a username is set), v2 POST {url}/api/v2/write?org=..&bucket=..&precision=ms
 * with "Authorization: Token ..". Bodies are gzip'ed when configured.
 *
 * Outcome of a request:
 * - 2xx: written.
 * - 5xx, 408, 429, timeouts, refused or broken connections, and 401/403/404
 *   (credentials or database, not the data, are wrong: dropping every batch
 *   until someone fixes them would lose everything): retried, the same batch
 *   first, with a back-off doubling from 500 ms to max_backoff (every 500 ms
 *   once shutdown began), reset on success. On 404 the database is created
 *   again (v1, create_database).
 * - any other 4xx (the data is refused, e.g. 400 bad line or field type
 *   conflict, 413 too large): InfluxDB's error (first 300 chars) is logged,
 *   the refused points counted as write_rejected and dropped (InfluxDB 1.x
 *   still writes the rest of a batch and says "partial write: ... dropped=N").
 *   A dead-letter file comes in a later issue.
 *
 * Memory is bounded by max_buffer bytes (queued plus in flight). When a new
 * hand-over does not fit, it is dropped and counted; the first drop and the
 * return to normal (below half of max_buffer) are logged. The disk spool that
 * will hold them instead comes in a later issue. */
#ifndef CAREHUB_INFLUX_H
#define CAREHUB_INFLUX_H

#include <stddef.h>
#include <stdint.h>

struct hubcfg_influx;
struct influx;

struct influx_stats {
    uint64_t points_written; /* acknowledged by InfluxDB */
    uint64_t write_errors;   /* failed requests, whatever the reason */
    uint64_t write_retries;  /* requests repeated after a retryable failure */
    uint64_t write_rejected; /* points refused by InfluxDB (4xx) */
    uint64_t dropped;        /* points dropped: buffer full, or not written by shutdown */
    uint64_t queued_bytes;   /* now, including the batch in flight */
};

/* Starts the writer thread. cfg is borrowed until influx_close. The v1
 * database is created (if configured) by the thread before its first write,
 * so a hub starts while InfluxDB is still down. Returns 0, or CH_ENOMEM /
 * -errno if curl or the thread cannot be set up. curl_global_init must have
 * been called. */
int influx_open(const struct hubcfg_influx *cfg, struct influx **out);

/* Queues lines points of line protocol (data, len bytes, each point ending
 * in '\n'). Takes ownership of data in every case. Returns 0, or CH_EFULL
 * when the points were dropped because max_buffer is reached. Thread-safe. */
int influx_enqueue(struct influx *w, char *data, size_t len, size_t lines);

/* Counters so far. Thread-safe. */
void influx_stats(struct influx *w, struct influx_stats *out);

/* Writes out what is queued without waiting for flush_interval, for at most
 * shutdown_timeout (an unfinished request is aborted then), counts what is
 * left as dropped, stops the thread and frees everything. The final counters
 * go to *final when it is not NULL. */
void influx_close(struct influx *w, struct influx_stats *final);

#endif
