/* The spool: a crash-safe, bounded, two-lane store and forward queue on disk.
 *
 * care-edge writes every outgoing MQTT message to it before publishing;
 * care-hub writes line-protocol batches to it while InfluxDB is away. The
 * spool does not look inside a record: a record is a caller-defined type byte
 * and up to SPOOL_MAX_RECORD bytes of payload.
 *
 * Two lanes, each its own directory of append-only segment files and a
 * durable read cursor:
 *   SPOOL_ALERT      spool_append() returns only once the record is on disk
 *                    (fdatasync, group-committed: appenders waiting at the
 *                    same time share one fsync).
 *   SPOOL_TELEMETRY  spool_append() returns after write(2): a process crash
 *                    loses nothing (the page cache survives it); a background
 *                    thread fsyncs at least every commit_interval_ms, so a
 *                    power cut loses at most that window.
 *
 * A sender reads with spool_next() (several records may be in flight) and
 * calls spool_ack() when the peer has the record (PUBACK, HTTP 2xx); acks may
 * arrive in any order. The durable cursor covers the contiguous acknowledged
 * prefix; after a crash the records after it are offered again (a few
 * duplicates, never a loss; a clean close loses no position).
 *
 * Bounded by max_bytes over both lanes. When an append would exceed it, whole
 * segments are dropped: the oldest telemetry first, alerts only when no
 * telemetry is left and the record to store is an alert. When the disk is
 * full (ENOSPC) before the bound, the oldest telemetry is freed in small
 * steps (a hole punched over a few records, never a whole segment being
 * written). Every drop is logged and counted in spool_stats(); a record
 * dropped or refused for want of room has used up its id, so the loss shows
 * as a gap in the ids.
 *
 * When the disk fails (opts.memory_bytes > 0): a directory that cannot be
 * opened or written (read-only, full with nothing left to evict, I/O errors)
 * does not stop the spool. What can be read is still read; new records are
 * kept in memory, bounded by memory_bytes (the oldest telemetry dropped first,
 * numbered and counted), served by spool_next() in id order after what is on
 * disk; spool_append() then returns SPOOL_NOT_DURABLE. The disk is retried
 * every retry_interval_ms (doubling up to 8 times that); when it works again
 * the records held in memory are written to it and the spool is back on disk.
 * spool_stats() says which (degraded, disk_full), and the spool logs one line
 * per change. Without memory_bytes, the errors are returned as before (the
 * hub, whose caller retries).
 *
 * Recovery at open never refuses a damaged spool: a torn tail is cut, corrupt
 * records are skipped and counted, a lost cursor means "resend from the
 * oldest record". It refuses a spool of another format (a later carehub's,
 * after a downgrade), untouched: the directory's format marker, DIR/format
 * ("carehub-spool-format 1"), says which; a spool of the releases before the
 * marker (format 1) gets it at its first open. The file format, the marker
 * and the invariants are described at the top of spool.c.
 *
 * Threads: any number of threads may append at once; one reader per lane
 * calls spool_next(); spool_ack(), spool_pending() and spool_stats() may be
 * called from any thread. spool_close() must not race with any other call. */
#ifndef CAREHUB_SPOOL_H
#define CAREHUB_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct spool;

enum spool_lane { SPOOL_ALERT = 0, SPOOL_TELEMETRY = 1 };
#define SPOOL_LANES 2

/* The on-disk format this build reads and writes: DIR/format says it, and
 * the record and cursor magics end in its digit. A later format that this
 * build could not read bumps it (spool.c, FORMAT). */
#define SPOOL_FORMAT 1

/* Largest payload of one record. A length field above it is corruption. */
#define SPOOL_MAX_RECORD (16u * 1024u * 1024u)
/* Bytes a record occupies on disk besides its payload. */
#define SPOOL_RECORD_OVERHEAD 36u

/* spool_append() kept the record, but not durably: in memory (the disk
 * cannot be written), or in a segment whose fsync failed. It is offered by
 * spool_next() like any other and has its id; a crash before it is delivered
 * or written to disk loses it. A positive value: callers that only test
 * rc < 0 for failure treat it as stored. */
#define SPOOL_NOT_DURABLE 1

/* Options; zero (or a NULL pointer) means the default. */
struct spool_opts {
    uint64_t max_bytes;         /* bound on both lanes' segments; default 256 MiB, min 16 KiB */
    uint64_t segment_bytes;     /* default max_bytes/16 clamped to [64 KiB, 8 MiB] and to at
                                   most max_bytes/4; min 4 KiB */
    int64_t commit_interval_ms; /* telemetry fsync interval; default 1000 */
    int64_t cursor_interval_ms; /* telemetry cursor write interval; default 10000, at least
                                   commit_interval_ms (each write costs 2 fsyncs: SD cards) */
    const char *name;           /* instance in log lines; default the directory */
    uint64_t memory_bytes;      /* > 0: degrade to memory, bounded by this (min 16 KiB), when
                                   the disk fails (see above); 0: return the errors */
    int64_t retry_interval_ms;  /* degraded: first retry of the disk; default 30000 */
};

struct spool_record {
    uint64_t id;      /* > 0, increasing within a lane, kept across restarts */
    int64_t time_ms;  /* wall clock at append */
    uint8_t type;     /* as given to spool_append */
    const void *data; /* borrowed: valid until the next spool_next() on the lane or spool_close() */
    size_t len;
};

struct spool_lane_stats {
    uint64_t appended_records; /* since open */
    uint64_t appended_bytes;   /* payload bytes, since open */
    uint64_t pending_records;  /* on disk and not yet acknowledged, now */
    uint64_t pending_bytes;    /* their payload bytes */
    uint64_t acked_records;    /* since open */
    uint64_t dropped_records;  /* unacknowledged records evicted at the bound, or refused */
    uint64_t dropped_bytes;    /* their payload bytes */
    uint64_t dropped_sent;     /* of dropped_records, those handed to the reader before: sent,
                                  perhaps received, but never acknowledged */
    uint64_t corrupt_records;  /* skipped at recovery or when read (estimate per damaged run) */
    uint64_t truncated_bytes;  /* torn or garbage tail bytes cut at recovery */
    uint64_t fsyncs;           /* fdatasync/fsync calls for this lane (data, directory, cursor) */
    uint64_t write_errors;     /* failed writes and syncs */
    uint64_t segments;         /* segment files now */
    uint64_t disk_bytes;       /* their size (less what an ENOSPC eviction punched out) */
    uint64_t memory_bytes;     /* held in memory (degraded), record framing included */
    uint64_t next_id;          /* id the next append will get */
    uint64_t cursor;           /* every record with id <= cursor is acknowledged or gone */
    int last_error;            /* latest error (negative: -errno or CH_*), 0 if none */
};

struct spool_stats {
    struct spool_lane_stats lane[SPOOL_LANES];
    uint64_t disk_bytes; /* both lanes */
    uint64_t max_bytes;
    uint64_t segment_bytes;
    bool degraded;            /* new records are kept in memory: the disk cannot be written */
    bool disk_full;           /* an append met ENOSPC, and the file system has not had room
                                 for two segments since (checked every retry interval) */
    int error;                /* why (degraded: what failed; else -ENOSPC when disk_full), or 0 */
    int64_t since_ms;         /* wall clock when it began (a label), 0 when neither */
    uint64_t degraded_count;  /* times the spool went to memory since open */
    uint64_t disk_full_count; /* times an append met a full disk since open */
    uint64_t memory_bytes;    /* both lanes, held in memory now */
    uint64_t memory_max;      /* opts.memory_bytes */
};

/* "alert" or "telemetry" (the lane's directory name); "?" otherwise. */
const char *spool_lane_name(enum spool_lane lane);

/* Opens (creating if needed) the spool in directory dir and recovers it: each
 * lane's segments are scanned, torn tails truncated, corrupt records skipped,
 * the cursor read (or, when missing or corrupt, replaced by "from the
 * oldest"), and the next id restored. Everything found is logged. Starts the
 * background commit thread. dir and opts are copied. The directory is locked
 * (flock) against a second opener.
 * Returns 0 and *out (free with spool_close), or: -errno when dir cannot be
 * created, opened or written (-EACCES, -EROFS, -ENOTDIR, -ENOSPC...), -EBUSY
 * when another spool holds it, CH_EINVAL for bad options, CH_EFORMAT when
 * the directory holds a spool of another format (its DIR/format marker says
 * a format other than SPOOL_FORMAT or is not a marker; without a marker, a
 * lane's cursor or first record has a later format's magic): logged with
 * the directory, the format found and what to do, and nothing in the
 * directory is changed; retrying will not help (care-edge exits 2). A spool
 * without a marker is otherwise format 1 (the releases before the marker)
 * and gets one. Damage to the data is never an error. With
 * opts->memory_bytes, a directory that cannot be
 * created, opened or written is not an error either: the spool opens
 * degraded (spool_stats), reading what the directory holds if it can be read
 * (ids continue after it; if it cannot even be read they start at 1, and a
 * directory that becomes readable later holding records is not written to
 * until the next open, which delivers them). Only -EBUSY, CH_EINVAL and
 * CH_EFORMAT remain. */
int spool_open(const char *dir, const struct spool_opts *opts, struct spool **out);

/* Syncs both lanes, persists both cursors, stops the background thread and
 * frees everything. No other call may run concurrently or follow. NULL is a
 * no-op. Failures are logged (the data already written stays recoverable).
 * Degraded: tries the disk once more for the records held in memory; what
 * still cannot be written is lost, and logged with its ids. */
void spool_close(struct spool *s);

/* Appends a record of len bytes (copied) to a lane; on success stores its id
 * in *id (may be NULL). ALERT: returns once the record is durable (group
 * commit). TELEMETRY: returns once written; durable within commit_interval.
 * Returns 0; SPOOL_NOT_DURABLE (degraded mode, above: kept in memory, or an
 * alert whose fsync failed); CH_EINVAL (bad lane, len > SPOOL_MAX_RECORD or
 * does not fit in max_bytes at all); CH_EFULL when the bound leaves no room
 * (a telemetry record while alerts fill the bound, or fill memory_bytes when
 * degraded): counted as dropped, its id used up and stored in *id (the loss
 * is a gap in the ids, as an eviction is); -errno when the write or fsync
 * failed (-ENOSPC, -EROFS, -EIO...) and there is no memory_bytes to fall
 * back on, logged with the path, repeated lines rate-limited, no id used
 * (the caller may retry). With memory_bytes every record gets its id. On
 * ENOSPC the oldest telemetry is evicted in steps (dropped, counted) to make
 * room before giving up. After an error the spool stays usable: later
 * appends may succeed. An alert whose fsync failed is still offered by
 * spool_next(). Thread-safe. */
int spool_append(struct spool *s, enum spool_lane lane, uint8_t type, const void *data, size_t len,
                 uint64_t *id);

/* Makes every record appended so far durable and writes the cursors that
 * moved (for shutdown, or a caller that needs telemetry on disk now).
 * Returns 0 or the first -errno (also when an earlier fsync of data still
 * held failed; degraded: the error that degraded it). Thread-safe. */
int spool_sync(struct spool *s);

/* The reader: stores in *rec the first record of the lane with id > after_id
 * that is not acknowledged (after_id 0: from the cursor, i.e. the oldest
 * unacknowledged record). rec->data is borrowed (see struct spool_record).
 * Each record's CRC is checked again; one that fails (media damage) is
 * skipped, logged and counted as corrupt. Returns 1 with a record, 0 when
 * there is none (yet), CH_EINVAL for a bad lane, -errno when a segment
 * cannot be opened (-EMFILE...). One reader per lane; it may race with
 * appenders and ackers. */
int spool_next(struct spool *s, enum spool_lane lane, uint64_t after_id, struct spool_record *rec);

/* Marks record id delivered. Acks may come in any order; the cursor moves
 * over the contiguous acknowledged prefix and is persisted at once (by the
 * background thread) for ALERT, within cursor_interval_ms for TELEMETRY
 * (after a crash, up to that much delivered telemetry is offered again).
 * Segments wholly at or below the cursor are deleted. Acking an id that is
 * already acknowledged, evicted or skipped is a no-op returning 0. Returns
 * CH_EINVAL for id 0, an id never handed out, or a bad lane. Thread-safe. */
int spool_ack(struct spool *s, enum spool_lane lane, uint64_t id);

/* Acknowledges every record of the lane with lo <= id <= hi at once (as
 * spool_ack for each; ids not in the spool or already acknowledged are
 * ignored, whether or not spool_next handed them out in this process). *acked (may be NULL) gets
 * how many records this call acknowledged. Returns 0, or CH_EINVAL for lo 0, lo > hi or a bad lane.
 * Thread-safe. */
int spool_ack_range(struct spool *s, enum spool_lane lane, uint64_t lo, uint64_t hi,
                    uint64_t *acked);

/* Unacknowledged records and their payload bytes in a lane (either pointer
 * may be NULL). Thread-safe. */
void spool_pending(struct spool *s, enum spool_lane lane, uint64_t *records, uint64_t *bytes);

/* Counters and sizes now. Thread-safe. */
void spool_stats(struct spool *s, struct spool_stats *out);

#endif
