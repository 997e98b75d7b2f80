/* spool.c: the crash-safe store-and-forward spool (see spool.h for the API).
 *
 * WHY IT IS BUILT THIS WAY
 *
 * A gateway in a care home loses its uplink, its power and its process, in
 * any order, and must still deliver every reading and above all every alert.
 * The spool is the one place where that is decided, so it is deliberately
 * simple: append-only files, one CRC per record, no in-place updates except
 * an atomically replaced 32-byte cursor file. Everything that is hard to get
 * right (what is durable when, what recovery may assume) follows from a few
 * invariants listed below.
 *
 * ON DISK
 *
 *   DIR/lock                    flock'ed while open (one opener per spool)
 *   DIR/format                  the format marker, "carehub-spool-format 1\n"
 *                               (FORMAT, below)
 *   DIR/format.tmp              the marker while being written
 *   DIR/alert/, DIR/telemetry/  one directory per lane, holding:
 *     <16 hex digits>.seg       segments; the name is the next id when it
 *                               was created, normally its first record's (a
 *                               hint: recovery reads the ids from the records
 *                               and only uses the name to order segments and
 *                               to never hand out an id below it again)
 *     cursor                    the durable cursor (32 bytes, below)
 *     cursor.tmp                its next version while being written
 *
 * A segment is a plain concatenation of records, little-endian:
 *
 *    0  u32 magic   A7 'S' 'P' '1'   (the last byte: format 1, FORMAT below)
 *    4  u8  type    caller-defined
 *    5  u8  flags   0 (reserved; readers ignore it)
 *    6  u16 0       reserved
 *    8  u32 len     payload bytes, <= SPOOL_MAX_RECORD (16 MiB)
 *   12  u64 id      > 0 and < 2^62, strictly increasing within a lane
 *   20  i64 time    append time, ms since the epoch
 *   28  u32 hcrc    zlib crc32 of bytes 0..27
 *   32  payload     len bytes
 *   32+len u32 crc  zlib crc32 of bytes 0..31 and the payload
 *
 * The header CRC lets recovery validate a candidate header in O(1) without
 * trusting its length; the trailing CRC covers everything, and because it is
 * written last a record cut anywhere short of its end fails it. A length
 * above the bound is rejected before anything is read or allocated.
 *
 * The cursor file: u32 magic A7 'S' 'C' '1', u8 lane, 3 bytes 0, u64 acked
 * (every record with id <= acked was delivered), u64 next (the next id at
 * the time of writing), u32 0, u32 crc32 of bytes 0..27. It is replaced by
 * write cursor.tmp, fsync, rename over cursor, fsync the directory: a crash
 * leaves either the old or the new version, never a mix.
 *
 * FORMAT
 *
 * A later carehub may write records or cursors differently. To this build
 * its spool would look like damage, which recovery cuts and skips: a package
 * downgrade would lose the backlog. So a spool says its format: DIR/format
 * holds one line, "carehub-spool-format N\n" (N decimal, no leading zero;
 * bytes after the newline are reserved and ignored), written when the spool
 * is created as the cursor file is (format.tmp, fsync, rename -- one that
 * does not replace a marker that appeared meanwhile -- fsync the directory).
 * The magics' last byte is the same number ('1'). This build reads and
 * writes format SPOOL_FORMAT (1). spool_open() decides before it writes
 * anything in the directory, the lock file included:
 * - the marker says 1: the spool is opened as usual.
 * - no marker: the releases before markers wrote format 1 without one, so
 *   the spool is format 1 and gets its marker once locked (failing to write
 *   it is logged and tried again at the next open) -- unless a lane's cursor
 *   or a segment's first record begins with a later format's magic
 *   (A7 'S' 'C' or 'P', then '2'..'9'): a later release's spool that lost
 *   its marker, refused as below.
 * - a marker of another number, or a "format" that is not a marker (not a
 *   regular file, unreadable, no such line): spool_open() returns
 *   CH_EFORMAT, changes nothing, and logs the directory, what it found, the
 *   format this build reads and what to do (upgrade carehub, or move the
 *   directory away for an empty spool). A garbage marker is refused, not
 *   ignored: this spool never leaves a torn one (the rename), so garbage was
 *   put there by something else -- a later release that changed the marker,
 *   a person, a failing card -- and the directory can no longer be trusted
 *   to be format 1. Recovering it as format 1 would cut what it does not
 *   understand, which cannot be undone; refusing loses nothing, and the
 *   operator, told why, decides.
 * A later format bumps N and the magics' digit together (one this build can
 * still read safely keeps N). A degraded spool whose directory could not be
 * opened at open reads the marker when it retries the disk: another format
 * keeps it in memory (logged once, as for records from before).
 *
 * INVARIANTS (s->lock protects all of the in-memory state)
 *
 * 1. Records are written whole with one pwritev at the segment's known end
 *    (seg->size) under s->lock, so ids and file offsets agree and readers
 *    never see a half-written record below seg->size. A failed or short write
 *    is cut off again with ftruncate; if even that fails the segment is
 *    sealed, and recovery will skip the torn bytes as corruption.
 * 2. Ids in a lane strictly increase, across segments and across restarts:
 *    recovery sets next_id above the last valid record, above every segment
 *    name and above the cursor's acked and next fields. (After a power cut
 *    the ids of telemetry records that never reached the disk can be handed
 *    out again: those records exist nowhere any more.)
 * 3. An ALERT append returns 0 only after fdatasync of every segment holding
 *    its record returned 0 and, for a new segment, fsync of the directory
 *    (a new file's name is not durable until its directory is synced).
 *    Group commit: the appender that finds no sync running becomes the
 *    leader, snapshots every segment with unsynced bytes, drops the lock and
 *    syncs them; appenders arriving meanwhile wait on sync_cv and are covered
 *    by the next round, which one of them leads. One fsync serves everyone
 *    who wrote before it started.
 * 4. fsync failure is sticky per segment (seg->sync_err). After a failed
 *    fsync Linux may already have marked the pages clean, so a retry could
 *    "succeed" without the data being on disk (PostgreSQL's fsyncgate). The
 *    segment is sealed, every waiter on it gets the error, and appends
 *    continue in a fresh segment.
 * 5. The cursor only moves over acknowledged (or evicted, or unreadable)
 *    records; on disk it lags the one in memory (telemetry: by up to
 *    cursor_interval_ms; alerts: by one background-thread wake-up).
 *    Recovery with an old cursor offers a few records again: duplicates,
 *    which the receivers absorb (idempotent writes), never a loss. Segments
 *    are deleted only when every record in them is at or below the durable
 *    cursor (so its next id covers them), or when evicted at the bound.
 * 6. Only the syncer uses a segment's fd outside the lock (seg->io_busy);
 *    removing a segment then defers the close. Segment structs are
 *    reference-counted (lane membership + waiting appenders + the syncer), so
 *    an appender waiting for an fsync can look at its segment after it was
 *    evicted (and then returns 0: its record was dropped at the bound, and
 *    counted).
 * 7. The reader reads under s->lock with its own read-only fd (or the
 *    segment's): data from the page cache takes microseconds, and no segment
 *    can disappear under it.
 *
 * WHAT A CRASH DOES
 *
 * - Process crash (SIGKILL, abort): everything written is in the page cache
 *   and survives. At most the record being written is torn; recovery cuts it.
 * - Power cut: telemetry written since the last background fsync (at most
 *   commit_interval_ms) may be lost or torn in any way: a prefix, zeros, old
 *   garbage. Alerts whose append returned are on disk. A segment created
 *   but not yet synced may vanish, a deleted one may come back (recovery
 *   drops it again if it is below the cursor, or offers its records again).
 * - Recovery reads every segment: a valid record is kept; anything else
 *   starts a damaged run that ends at the next position where a whole valid
 *   record with a higher id begins (found by scanning for the magic, checking
 *   the header CRC, then the record CRC). A run with a valid record after it
 *   is skipped and counted as corrupt (the id gap says how many records it
 *   held); a run reaching the end of the file is a torn tail and is
 *   truncated. The spool always opens (a later format is not damage:
 *   FORMAT).
 *
 * DISK FULL (ENOSPC before max_bytes)
 *
 * The file system may fill before the bound does (logs, another program, an
 * SD card smaller than max_bytes). An append that meets ENOSPC frees the
 * oldest telemetry and tries again, a step at a time: step_bytes (a
 * sixteenth of a segment, at least 16 KiB) of whole records at the start of
 * the oldest segment holding any, by punching a hole over them
 * (fallocate PUNCH_HOLE, KEEP_SIZE: the file keeps its length and offsets,
 * its first blocks go back to the file system). Acknowledged records in the
 * step cost nothing; the others are dropped, logged with their ids and
 * counted, as at the bound. So a full disk never takes a whole segment (up to
 * 8 MiB, minutes of readings) at once, and never the one being written
 * (seg->punched says how far its start is gone). On a file system that cannot
 * punch holes, a whole segment other than the one being written goes
 * instead. Recovery finds a punched start with SEEK_DATA and begins reading
 * at the first whole record after it, without counting anything as corrupt
 * (it was counted when evicted). When no telemetry is left on disk to free,
 * the append fails, or with memory_bytes the spool degrades (below).
 * disk_full is raised at the first ENOSPC and lowered once fstatvfs shows
 * room for two segments again.
 *
 * WHEN THE DISK FAILS (opts.memory_bytes > 0; care-edge)
 *
 * An SD card remounted read-only after errors, a full disk with nothing left
 * to evict, an I/O error: the spool must not stop the gateway, whose local
 * alarming comes after it. It degrades to memory behind the same API:
 * - At open, a directory that cannot be created, opened or written is read
 *   if it can be (segments opened read-only, cursors read, nothing cut or
 *   deleted: a torn tail is skipped and cut later), so the backlog is still
 *   delivered and the ids continue after it. (If it cannot even be read, ids
 *   start at 1, logged; should it become readable holding records, the
 *   spool stays in memory until the next open, which delivers them: ids
 *   handed out twice would make the hub confuse two readings.)
 * - At run time, a failed create, write or fsync moves the lanes to memory
 *   (the failed record included, with its id: nothing is refused for the
 *   failure itself). Memory segments (seg->mem: the record bytes exactly as
 *   on disk, fd -1) follow the lane's disk segments in the same array, so
 *   ids, the reader's order (disk, then memory), acks, the cursor and
 *   eviction work unchanged; they are freed when acknowledged.
 * - Memory is bounded by memory_bytes over both lanes, in segments of
 *   mem_seg_bytes (a sixteenth of it, 4 KiB..256 KiB): beyond it the oldest
 *   telemetry segment in memory is dropped (logged with its ids, counted),
 *   alerts only for an alert when no telemetry is left; a telemetry record
 *   that cannot fit is refused with its id used up. Every drop is a gap in
 *   the numbers, as on disk.
 * - spool_append() returns SPOOL_NOT_DURABLE for a record kept in memory,
 *   and for an alert whose fsync failed (it is in a sealed segment, offered
 *   by the reader, but a power cut may lose it): "kept, not durable", so a
 *   caller whose contract is "durable before it counts" (care-edge's
 *   alarms) can say so instead of pretending.
 * - Cursor files are not written while degraded (they could not be); what is
 *   acknowledged is freed (memory at once, delivered disk segments where the
 *   file system lets them be deleted). After a crash the disk's records
 *   after its cursor are offered again: duplicates, never a loss.
 * - The background thread retries the disk after retry_interval_ms, doubling
 *   up to 8 times that (a flapping disk does not reset the back-off): it
 *   reopens what was not open, cuts torn tails left by a read-only recovery,
 *   writes each lane's records held in memory to new segments of at most
 *   segment_bytes (each named by its first id: they sort after every disk
 *   segment, and the bound still evicts a segment at a time), then syncs and
 *   writes both cursors. If all of it works the spool is back on disk; if not, those
 *   records stay where they are (memory, or a sealed segment) and it waits.
 * - Entering and leaving are logged once each; spool_stats() has the state.
 *   spool_close() tries the disk one last time and logs what it loses.
 *
 * MEMORY: 16 bytes per record held (an index of id, offset, length and an
 * acknowledged bit), about 0.6 % of the disk bytes for 2.5 KB telemetry
 * batches and 4 % for 400-byte alerts; degraded, up to memory_bytes more. */
#include "spool.h"
#include "err.h"
#include "log.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define MOD "spool"

#define REC_MAGIC   0x315053A7u /* A7 'S' 'P' '1' */
#define CUR_MAGIC   0x314353A7u /* A7 'S' 'C' '1' */
#define MAGIC_BYTE0 0xA7u
#define HDR_LEN     32u
#define TRL_LEN     4u
#define CUR_LEN     32u
#define ID_LIMIT    (UINT64_C(1) << 62) /* ids and names at or above: corrupt */
#define ACKED       0x80000000u         /* in rec_ix.lenf */
#define HANDED      0x40000000u         /* in rec_ix.lenf: spool_next returned it */
#define LEN_MASK    0x3fffffffu

#define DEF_MAX_BYTES     (UINT64_C(256) << 20)
#define MIN_MAX_BYTES     (UINT64_C(16) << 10)
#define MIN_SEGMENT_BYTES (UINT64_C(4) << 10)
#define MAX_SEGMENT_BYTES (UINT64_C(1) << 30)
#define DEF_SEG_LO        (UINT64_C(64) << 10)
#define DEF_SEG_HI        (UINT64_C(8) << 20)
#define SEG_FILE_MAX      (UINT64_C(2) << 30) /* larger files are not ours: left alone */
#define RL_INTERVAL_MS    10000
#define MIN_MEMORY_BYTES  (UINT64_C(16) << 10)
#define MEM_SEG_LO        (UINT64_C(4) << 10)
#define MEM_SEG_HI        (UINT64_C(256) << 10)
#define MIN_STEP_BYTES    (UINT64_C(16) << 10) /* ENOSPC eviction step, at least */
#define DEF_RETRY_MS      30000
#define RETRY_MAX_FACTOR  8 /* the disk retry backs off up to this many retry intervals */

_Static_assert(HDR_LEN + TRL_LEN == SPOOL_RECORD_OVERHEAD, "record overhead");

/* ---- little-endian fields ------------------------------------------------ */

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static uint32_t crc(uint32_t c, const void *p, size_t n)
{
    return (uint32_t)crc32(c, (const Bytef *)p, (uInt)n);
}

/* ---- in-memory state ----------------------------------------------------- */

struct rec_ix {
    uint64_t id;
    uint32_t off;
    uint32_t lenf; /* payload length | ACKED | HANDED */
};

struct seg {
    uint64_t name;    /* id in the file name */
    int fd;           /* writer/sync fd, -1 when closed (always for a memory segment) */
    uint64_t size;    /* bytes of whole records (the file's length) */
    uint64_t punched; /* bytes at the start given back by an ENOSPC eviction (a hole) */
    uint8_t *mem;     /* a memory segment (degraded): its records' bytes; NULL on disk */
    size_t mem_cap;   /* allocated bytes of mem */
    bool torn;        /* recovered read-only: the file has a torn tail past size to cut */
    uint64_t synced;  /* bytes known durable */
    bool dir_synced;  /* the directory entry is durable */
    bool dead;        /* no longer part of the lane (deleted or evicted) */
    bool io_busy;     /* the syncer uses fd without the lock */
    int sync_err;     /* sticky: an fsync failed (invariant 4) */
    unsigned refs;    /* lane membership, waiting appenders, syncer */
    struct rec_ix *ix;
    size_t n, cap;
};

/* Rate limiter for repeated log lines: one per RL_INTERVAL_MS, the rest counted. */
struct rl {
    int64_t next_ms;
    unsigned long suppressed;
};

struct lane {
    enum spool_lane which;
    const char *name;
    int dfd;
    struct seg **segs; /* oldest first; the active one, if any, is last */
    size_t nsegs, capsegs;
    struct seg *active;
    uint64_t next_id;
    uint64_t cursor;       /* in memory: contiguous acknowledged prefix */
    uint64_t saved_cursor; /* in the cursor file */
    uint64_t saved_next;
    uint64_t disk; /* bytes its disk segments hold (size - punched) */
    uint64_t mem;  /* bytes its memory segments hold */
    bool scanned;  /* its directory was read at open (else ids started at 1) */
    bool syncing;  /* a group-commit round is running */
    pthread_cond_t sync_cv;
    pthread_mutex_t cur_mu; /* serialises cursor file writes; taken before s->lock */
    int rd_fd;              /* reader's own fd for segment rd_name */
    uint64_t rd_name;
    uint8_t *rd_buf; /* holds the record last returned by spool_next */
    size_t rd_cap;
    struct spool_lane_stats st; /* counters; the "now" fields are filled on demand */
    struct rl rl_io, rl_drop;
};

struct spool {
    char *dir;
    char *inst; /* log instance */
    int dfd;
    int lock_fd;
    uint64_t max_bytes, segment_bytes;
    int64_t commit_ms, cursor_ms;
    pthread_mutex_t lock;
    uint64_t disk; /* both lanes */
    struct lane lane[SPOOL_LANES];
    pthread_t bg;
    bool bg_started, bg_stop, kick;
    pthread_cond_t bg_cv;
    /* the disk full and the disk failing (see the top of the file) */
    uint64_t step_bytes;            /* ENOSPC eviction step */
    uint64_t memory_max;            /* 0: no degraded mode */
    uint64_t mem_seg_bytes;         /* a memory segment's size */
    uint64_t mem;                   /* both lanes' memory segments */
    bool degraded;                  /* appends go to memory */
    bool recovering;                /* back on disk, not yet confirmed: a failure is quiet */
    bool foreign_said;              /* logged: the directory holds records from before */
    bool marked;                    /* DIR/format is there and says SPOOL_FORMAT */
    bool legacy;                    /* a spool of an earlier release, without a marker */
    bool disk_full;                 /* ENOSPC seen, no room for two segments since */
    int fail_err;                   /* what degraded it */
    int64_t since_ms;               /* wall clock: degraded or full since */
    uint64_t degraded_count;        /* times degraded */
    uint64_t disk_full_count;       /* times disk_full was raised */
    int64_t retry_ms, retry_delay;  /* first retry interval, the current one */
    int64_t retry_at, recovered_at; /* monotonic */
    int64_t full_check_at;          /* monotonic: next fstatvfs while disk_full */
};

static const char *const lane_names[SPOOL_LANES] = {"alert", "telemetry"};

static void degrade(struct spool *s, int err, const char *what);
static void try_disk(struct spool *s);
static void check_room(struct spool *s);

const char *spool_lane_name(enum spool_lane lane)
{
    return (unsigned)lane < SPOOL_LANES ? lane_names[lane] : "?";
}

static void lock(struct spool *s)
{
    pthread_mutex_lock(&s->lock);
}

static void unlock(struct spool *s)
{
    pthread_mutex_unlock(&s->lock);
}

static bool rl_allow(struct rl *r, unsigned long *suppressed)
{
    int64_t now = ch_mono_ms();
    if (r->next_ms && now < r->next_ms) {
        r->suppressed++;
        return false;
    }
    r->next_ms = now + RL_INTERVAL_MS;
    *suppressed = r->suppressed;
    r->suppressed = 0;
    return true;
}

static void seg_fname(uint64_t name, char out[32])
{
    snprintf(out, 32, "%016" PRIx64 ".seg", name);
}

/* Parses "<16 hex>.seg"; false for anything else. */
static bool seg_parse_name(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return false;
        v = v << 4 | d;
    }
    if (strcmp(s + 16, ".seg") != 0)
        return false;
    *out = v;
    return true;
}

/* Logs an I/O error on a lane file, rate-limited, and records it. Locked. */
static void io_error(struct spool *s, struct lane *l, int err, const char *what, const char *file)
{
    l->st.write_errors++;
    l->st.last_error = err;
    unsigned long sup;
    if (rl_allow(&l->rl_io, &sup))
        LOGE(MOD, s->inst, "%s %s/%s/%s failed: %s%s", what, s->dir, l->name, file,
             ch_strerror(err), sup ? " (and earlier errors, not logged)" : "");
}

/* ---- segments ------------------------------------------------------------ */

static struct seg *seg_new(uint64_t name, int fd)
{
    struct seg *g = ch_xcalloc(1, sizeof *g);
    g->name = name;
    g->fd = fd;
    g->refs = 1;
    return g;
}

static void seg_unref(struct seg *g)
{
    if (--g->refs > 0)
        return;
    if (g->fd >= 0)
        close(g->fd);
    free(g->ix);
    free(g->mem);
    free(g);
}

/* Bytes the segment holds: on disk what was not punched out, in memory all. */
static uint64_t seg_held(const struct seg *g)
{
    return g->size - g->punched;
}

/* A record's bytes with its framing. */
static uint64_t rec_bytes(const struct rec_ix *r)
{
    return (uint64_t)HDR_LEN + (r->lenf & LEN_MASK) + TRL_LEN;
}

static uint64_t seg_last_id(const struct seg *g)
{
    return g->n ? g->ix[g->n - 1].id : 0;
}

/* Monotone key for the binary search: the last id, or for an empty segment
 * (only ever the newest) the id just below its name, which is above every id
 * in the segments before it. */
static uint64_t seg_key(const struct seg *g)
{
    return g->n ? g->ix[g->n - 1].id : (g->name ? g->name - 1 : 0);
}

static void seg_push(struct seg *g, uint64_t id, uint64_t off, uint32_t len, bool acked)
{
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 64;
        g->ix = ch_xrealloc(g->ix, g->cap * sizeof *g->ix);
    }
    g->ix[g->n++] =
        (struct rec_ix){.id = id, .off = (uint32_t)off, .lenf = len | (acked ? ACKED : 0)};
}

/* Closes the write fd of a segment nobody writes or syncs any more. Locked. */
static void seg_maybe_close(struct lane *l, struct seg *g)
{
    if (g->fd >= 0 && !g->io_busy && g != l->active && (g->synced >= g->size || g->sync_err)) {
        close(g->fd);
        g->fd = -1;
    }
}

static void lane_push_seg(struct lane *l, struct seg *g)
{
    if (l->nsegs == l->capsegs) {
        l->capsegs = l->capsegs ? l->capsegs * 2 : 16;
        l->segs = ch_xrealloc(l->segs, l->capsegs * sizeof *l->segs);
    }
    l->segs[l->nsegs++] = g;
}

/* Deletes segment i of the lane from disk and memory. The caller has
 * accounted for its records. Locked. */
static void lane_remove_seg(struct spool *s, struct lane *l, size_t i)
{
    struct seg *g = l->segs[i];
    if (g->mem) {
        l->mem -= g->size;
        s->mem -= g->size;
    } else {
        char fn[32];
        seg_fname(g->name, fn);
        if (unlinkat(l->dfd, fn, 0) != 0 && errno != ENOENT)
            io_error(s, l, -errno, "unlink", fn);
        l->disk -= seg_held(g);
        s->disk -= seg_held(g);
        if (l->rd_fd >= 0 && l->rd_name == g->name) {
            close(l->rd_fd);
            l->rd_fd = -1;
        }
    }
    memmove(&l->segs[i], &l->segs[i + 1], (l->nsegs - i - 1) * sizeof *l->segs);
    l->nsegs--;
    if (l->active == g)
        l->active = NULL;
    g->dead = true;
    if (g->fd >= 0 && !g->io_busy) {
        close(g->fd);
        g->fd = -1;
    }
    seg_unref(g);
}

/* Position of the first record with id > x: segment *si, record *ri. */
static bool lane_find_after(const struct lane *l, uint64_t x, size_t *si, size_t *ri)
{
    size_t lo = 0, hi = l->nsegs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (seg_key(l->segs[mid]) > x)
            hi = mid;
        else
            lo = mid + 1;
    }
    for (; lo < l->nsegs; lo++) {
        const struct seg *g = l->segs[lo];
        if (g->n == 0 || g->ix[g->n - 1].id <= x)
            continue;
        size_t a = 0, b = g->n;
        while (a < b) {
            size_t m = a + (b - a) / 2;
            if (g->ix[m].id > x)
                b = m;
            else
                a = m + 1;
        }
        *si = lo;
        *ri = a;
        return true;
    }
    return false;
}

static bool lane_step(const struct lane *l, size_t *si, size_t *ri)
{
    (*ri)++;
    while (*si < l->nsegs && *ri >= l->segs[*si]->n) {
        (*si)++;
        *ri = 0;
    }
    return *si < l->nsegs;
}

/* Moves the cursor over acknowledged records that follow it. Locked. */
static void lane_advance_cursor(struct lane *l)
{
    size_t si, ri;
    if (!lane_find_after(l, l->cursor, &si, &ri))
        return;
    do {
        const struct rec_ix *r = &l->segs[si]->ix[ri];
        if (!(r->lenf & ACKED))
            break;
        l->cursor = r->id;
    } while (lane_step(l, &si, &ri));
}

/* Marks a record delivered (or otherwise gone) and updates the counts. */
static void rec_settle(struct lane *l, struct rec_ix *r)
{
    r->lenf |= ACKED;
    l->st.pending_records--;
    l->st.pending_bytes -= r->lenf & LEN_MASK;
}

/* Deletes segments whose records are all at or below upto, and empty ones
 * nobody writes to. Locked. */
static void lane_delete_done(struct spool *s, struct lane *l, uint64_t upto)
{
    for (size_t i = 0; i < l->nsegs;) {
        struct seg *g = l->segs[i];
        if (g != l->active && (g->n == 0 || seg_last_id(g) <= upto)) {
            LOGD(MOD, s->inst, "%s: deleting delivered segment %016" PRIx64, l->name, g->name);
            lane_remove_seg(s, l, i);
        } else {
            i++;
        }
    }
}

/* Degraded: frees the memory segments the cursor has passed (nothing on
 * disk needs them to say where the cursor was). Locked. */
static void lane_free_mem(struct spool *s, struct lane *l)
{
    for (size_t i = 0; i < l->nsegs;) {
        struct seg *g = l->segs[i];
        if (g->mem && g != l->active && seg_last_id(g) <= l->cursor)
            lane_remove_seg(s, l, i);
        else
            i++;
    }
}

/* True if some record of g was handed to the reader and not acknowledged:
 * it may have reached the receiver already (the acknowledgement was lost
 * with the connection). Locked. */
static bool seg_unconfirmed(const struct seg *g)
{
    for (size_t k = 0; k < g->n; k++)
        if ((g->ix[k].lenf & (ACKED | HANDED)) == HANDED)
            return true;
    return false;
}

/* Whether g holds bytes (disk: not all punched out; memory: any). */
static bool seg_holds(const struct seg *g)
{
    return seg_held(g) > 0;
}

/* Settles records k0..k1-1 of g as dropped (those not acknowledged yet),
 * counts them and logs their range (why: the reason). Locked. */
static void drop_records(struct spool *s, struct lane *l, struct seg *g, size_t k0, size_t k1,
                         const char *why)
{
    uint64_t recs = 0, bytes = 0, lo = 0, hi = 0, sent = 0;
    for (size_t k = k0; k < k1; k++) {
        struct rec_ix *r = &g->ix[k];
        if (r->lenf & ACKED)
            continue;
        recs++;
        if (r->lenf & HANDED)
            sent++;
        bytes += r->lenf & LEN_MASK;
        if (!lo)
            lo = r->id;
        hi = r->id;
        rec_settle(l, r);
    }
    l->st.dropped_records += recs;
    l->st.dropped_bytes += bytes;
    l->st.dropped_sent += sent;
    if (recs)
        LOGW(MOD, s->inst,
             "dropped %" PRIu64 " %s records (ids %" PRIu64 "..%" PRIu64 ", %" PRIu64
             " bytes; %" PRIu64 " of them sent but never acknowledged): %s",
             recs, l->name, lo, hi, bytes, sent, why);
}

/* After records were dropped: the cursor moves over them, and over whatever
 * acknowledged records follow; the alert cursor is persisted soon. Locked. */
static void after_drop(struct spool *s, struct lane *l)
{
    lane_advance_cursor(l);
    if (l->which == SPOOL_ALERT) {
        s->kick = true;
        pthread_cond_signal(&s->bg_cv);
    }
}

/* Evicts segment i of the lane: its unacknowledged records are dropped,
 * logged and counted, the segment deleted. Locked. */
static void lane_evict_seg(struct spool *s, struct lane *l, size_t i, const char *why)
{
    struct seg *g = l->segs[i];
    bool oldest = true; /* no segment before it holds records */
    for (size_t k = 0; k < i && oldest; k++)
        oldest = !seg_holds(l->segs[k]);
    drop_records(s, l, g, 0, g->n, why);
    uint64_t last = seg_last_id(g);
    lane_remove_seg(s, l, i);
    /* when no segment before it holds records, the cursor may jump
     * (invariant 5); otherwise it moves once those are acknowledged */
    if (oldest && last > l->cursor)
        l->cursor = last;
    after_drop(s, l);
}

/* Evicts one of the lane's segments holding bytes, among those on disk
 * (mem false) or in memory (true). Alerts: the oldest. Telemetry: the
 * oldest (not being written) whose records were never handed out
 * unacknowledged, else the oldest (alerts on disk: not the one being
 * written). Its unacknowledged records are dropped,
 * logged and counted. Preferring records that were never sent keeps the
 * count exact: a record sent once may have arrived (its acknowledgement lost
 * with the connection), and evicting it would count as lost what the
 * receiver has. Records handed out are few (the reader's window), so at most
 * a segment or two is passed over. Returns false if there was none. Locked. */
static bool lane_evict_oldest(struct spool *s, struct lane *l, const char *why, bool mem)
{
    size_t i = l->nsegs, first = l->nsegs;
    for (size_t k = 0; k < l->nsegs; k++) {
        const struct seg *g = l->segs[k];
        if (!seg_holds(g) || (g->mem != NULL) != mem)
            continue;
        if (first == l->nsegs)
            first = k;
        /* never the segment being written, unless it is the oldest: its ids
         * are the lane's newest, and after a power cut they would be
         * handed out again if nothing newer were left on disk. Alerts on
         * disk: never at all (a hub tells a new alert from a copy by its
         * number; seen as "alert id 1 reused" by test_spool_powercut under
         * qemu, where cursors lag and the bound evicted the only segment) */
        bool alerts_disk = l->which != SPOOL_TELEMETRY && !mem;
        if (alerts_disk ? g != l->active
                        : l->which != SPOOL_TELEMETRY || (g != l->active && !seg_unconfirmed(g))) {
            i = k;
            break;
        }
    }
    if (first == l->nsegs || (l->which != SPOOL_TELEMETRY && !mem && i == l->nsegs))
        return false;
    lane_evict_seg(s, l, i == l->nsegs ? first : i, why);
    return true;
}

/* Frees room for a record of need bytes within max_bytes: oldest telemetry
 * first; alert segments only for an alert and only once no telemetry is left.
 * Returns 0 or CH_EFULL. Locked. */
static int make_room(struct spool *s, enum spool_lane which, uint64_t need)
{
    struct lane *t = &s->lane[SPOOL_TELEMETRY], *a = &s->lane[SPOOL_ALERT];
    char why[96];
    /* telemetry never displaces alerts: if it cannot fit even without any
     * telemetry, refuse it rather than throw the backlog away for nothing */
    if (which == SPOOL_TELEMETRY && s->disk - t->disk + need > s->max_bytes)
        return CH_EFULL;
    while (s->disk + need > s->max_bytes) {
        snprintf(why, sizeof why, "spool full (max_bytes %" PRIu64 ")", s->max_bytes);
        if (!lane_evict_oldest(s, t, why, false) &&
            !(which == SPOOL_ALERT && lane_evict_oldest(s, a, why, false)))
            return CH_EFULL;
    }
    return 0;
}

/* The same for a record kept in memory, within memory_max. Locked. */
static int make_room_mem(struct spool *s, enum spool_lane which, uint64_t need)
{
    struct lane *t = &s->lane[SPOOL_TELEMETRY], *a = &s->lane[SPOOL_ALERT];
    char why[128];
    if (need > s->memory_max ||
        (which == SPOOL_TELEMETRY && s->mem - t->mem + need > s->memory_max))
        return CH_EFULL;
    while (s->mem + need > s->memory_max) {
        snprintf(why, sizeof why,
                 "memory buffer full (memory_bytes %" PRIu64 ", the disk cannot be written)",
                 s->memory_max);
        if (!lane_evict_oldest(s, t, why, true) &&
            !(which == SPOOL_ALERT && lane_evict_oldest(s, a, why, true)))
            return CH_EFULL;
    }
    return 0;
}

/* ---- the cursor file ----------------------------------------------------- */

enum { CUR_OK = 0, CUR_MISSING, CUR_CORRUPT };

static int cursor_read(struct lane *l, uint64_t *acked, uint64_t *next)
{
    int fd = openat(l->dfd, "cursor", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? CUR_MISSING : CUR_CORRUPT;
    uint8_t b[CUR_LEN + 1];
    ssize_t n;
    do
        n = pread(fd, b, sizeof b, 0);
    while (n < 0 && errno == EINTR);
    close(fd);
    if (n != (ssize_t)CUR_LEN || get32(b) != CUR_MAGIC || b[4] != (uint8_t)l->which ||
        get32(b + 28) != crc(0, b, 28))
        return CUR_CORRUPT;
    *acked = get64(b + 8);
    *next = get64(b + 16);
    if (*acked >= ID_LIMIT || *next >= ID_LIMIT)
        return CUR_CORRUPT;
    return CUR_OK;
}

static int write_full(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Replaces the cursor file (tmp, fsync, rename, fsync dir). Unlocked; the
 * caller holds l->cur_mu. Returns 0 or -errno; *what names the failed step. */
static int cursor_write(struct lane *l, uint64_t acked, uint64_t next, const char **what)
{
    uint8_t b[CUR_LEN];
    memset(b, 0, sizeof b);
    put32(b, CUR_MAGIC);
    b[4] = (uint8_t)l->which;
    put64(b + 8, acked);
    put64(b + 16, next);
    put32(b + 28, crc(0, b, 28));
    *what = "create";
    int fd = openat(l->dfd, "cursor.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return -errno;
    *what = "write";
    int rc = write_full(fd, b, sizeof b);
    if (rc == 0) {
        *what = "fsync";
        rc = fsync(fd) == 0 ? 0 : -errno;
    }
    close(fd);
    if (rc == 0) {
        *what = "rename";
        rc = renameat(l->dfd, "cursor.tmp", l->dfd, "cursor") == 0 ? 0 : -errno;
    }
    if (rc == 0) {
        *what = "fsync directory of";
        rc = fsync(l->dfd) == 0 ? 0 : -errno;
    }
    if (rc != 0)
        unlinkat(l->dfd, "cursor.tmp", 0);
    return rc;
}

/* Writes the cursor file if the cursor moved (or, with force, if next_id
 * moved), then deletes segments the cursor has passed. Degraded, nothing is
 * written (it could not be) and what the cursor passed is deleted. Unlocked. */
static int lane_persist(struct spool *s, struct lane *l, bool force)
{
    pthread_mutex_lock(&l->cur_mu);
    lock(s);
    uint64_t c = l->cursor, n = l->next_id;
    bool need =
        !s->degraded && l->dfd >= 0 && (c != l->saved_cursor || (force && n != l->saved_next));
    bool degraded = s->degraded;
    unlock(s);
    int rc = 0;
    const char *what = "";
    if (need)
        rc = cursor_write(l, c, n, &what);
    lock(s);
    if (need) {
        if (rc == 0) {
            l->saved_cursor = c;
            l->saved_next = n;
            l->st.fsyncs += 2;
        } else {
            io_error(s, l, rc, what, "cursor");
        }
    }
    /* normally only below the durable cursor, so that the cursor file's next
     * id covers what disappears; when the cursor cannot be written (disk
     * full), deleting what was delivered is the only way to free space */
    uint64_t upto = l->saved_cursor < l->cursor ? l->saved_cursor : l->cursor;
    lane_delete_done(s, l, rc == 0 && !degraded ? upto : l->cursor);
    unlock(s);
    pthread_mutex_unlock(&l->cur_mu);
    return rc;
}

/* ---- group commit --------------------------------------------------------- */

struct sync_item {
    struct seg *g;
    uint64_t target; /* size to be durable after this round */
    bool data, dir;
    int rc;
};

static int fsync_retry(int fd, bool data_only)
{
    int r;
    do
        r = data_only ? fdatasync(fd) : fsync(fd);
    while (r != 0 && errno == EINTR);
    return r == 0 ? 0 : -errno;
}

/* One group-commit round for a lane: syncs every segment with unsynced bytes
 * (and the directory for new segments) with the lock dropped. The caller set
 * l->syncing and clears it afterwards. Returns 0 or the first error. Locked
 * on entry and on return. */
static int lane_sync_locked(struct spool *s, struct lane *l)
{
    size_t n = 0;
    for (size_t i = 0; i < l->nsegs; i++) {
        const struct seg *g = l->segs[i];
        if (!g->sync_err && g->fd >= 0 && (g->synced < g->size || !g->dir_synced))
            n++;
    }
    if (n == 0)
        return 0;
    struct sync_item *it = ch_xcalloc(n, sizeof *it);
    size_t k = 0;
    bool need_dir = false;
    for (size_t i = 0; i < l->nsegs && k < n; i++) {
        struct seg *g = l->segs[i];
        if (g->sync_err || g->fd < 0 || (g->synced >= g->size && g->dir_synced))
            continue;
        it[k] = (struct sync_item){
            .g = g, .target = g->size, .data = g->synced < g->size, .dir = !g->dir_synced};
        need_dir |= it[k].dir;
        g->refs++;
        g->io_busy = true;
        k++;
    }
    unlock(s);
    unsigned calls = 0;
    for (size_t i = 0; i < n; i++) {
        if (it[i].data) {
            it[i].rc = fsync_retry(it[i].g->fd, true);
            calls++;
        }
    }
    int rc_dir = 0;
    if (need_dir) {
        rc_dir = fsync_retry(l->dfd, false);
        calls++;
    }
    lock(s);
    l->st.fsyncs += calls;
    int first = 0;
    for (size_t i = 0; i < n; i++) {
        struct seg *g = it[i].g;
        g->io_busy = false;
        int rc = it[i].rc ? it[i].rc : (it[i].dir ? rc_dir : 0);
        if (rc == 0) {
            if (it[i].target > g->synced)
                g->synced = it[i].target;
            if (it[i].dir)
                g->dir_synced = true;
        } else if (!g->dead) {
            g->sync_err = rc;
            if (l->active == g)
                l->active = NULL; /* sealed: appends go to a new segment */
            char fn[32];
            seg_fname(g->name, fn);
            io_error(s, l, rc, it[i].rc ? "fdatasync" : "fsync directory for", fn);
            if (!first)
                first = rc;
            if (s->memory_max)
                degrade(s, rc, it[i].rc ? "fdatasync a segment in" : "fsync");
        }
        if (g->dead) {
            if (g->fd >= 0) {
                close(g->fd);
                g->fd = -1;
            }
        } else {
            seg_maybe_close(l, g);
        }
        seg_unref(g);
    }
    free(it);
    return first;
}

/* Runs a group-commit round for the lane, waiting for one already running.
 * Returns its error; with sticky, also that of an earlier round whose data
 * is still held. */
static int lane_sync(struct spool *s, struct lane *l, bool sticky)
{
    lock(s);
    while (l->syncing)
        pthread_cond_wait(&l->sync_cv, &s->lock);
    l->syncing = true;
    int rc = lane_sync_locked(s, l);
    l->syncing = false;
    pthread_cond_broadcast(&l->sync_cv);
    /* a segment whose earlier fsync failed holds data of unknown durability */
    for (size_t i = 0; sticky && rc == 0 && i < l->nsegs; i++)
        if (l->segs[i]->sync_err && l->segs[i]->n)
            rc = l->segs[i]->sync_err;
    unlock(s);
    return rc;
}

/* ---- appending ------------------------------------------------------------ */

/* Creates the lane's active segment, named by the next id. Names must sort
 * after every existing segment: an empty last segment (its first write
 * failed) is replaced; a foreign name at or above the next id (the name is
 * only a hint, recovery trusts the ids inside) is stepped over. Locked. */
static int lane_new_segment(struct spool *s, struct lane *l)
{
    uint64_t name = l->next_id;
    while (l->nsegs && l->segs[l->nsegs - 1]->name >= name) {
        struct seg *last = l->segs[l->nsegs - 1];
        if (last->n != 0) {
            name = last->name + 1;
            break;
        }
        lane_remove_seg(s, l, l->nsegs - 1);
    }
    if (name >= ID_LIMIT)
        return CH_EINVAL;
    char fn[32];
    seg_fname(name, fn);
    int fd = openat(l->dfd, fn, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        int rc = -errno;
        io_error(s, l, rc, "create", fn);
        return rc;
    }
    struct seg *g = seg_new(name, fd);
    lane_push_seg(l, g);
    l->active = g;
    return 0;
}

static int pwritev_full(int fd, struct iovec *iov, int cnt, off_t off)
{
    while (cnt > 0) {
        ssize_t w = pwritev(fd, iov, cnt, off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (w == 0)
            return -EIO;
        off += w;
        size_t left = (size_t)w;
        while (cnt > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

/* Notes an ENOSPC: disk_full, logged when it begins. Locked. */
static void note_enospc(struct spool *s)
{
    if (s->disk_full)
        return;
    s->disk_full = true;
    s->disk_full_count++;
    if (!s->degraded)
        s->since_ms = ch_now_ms();
    s->full_check_at = ch_mono_ms() + s->retry_ms;
    LOGE(MOD, s->inst,
         "disk full (ENOSPC) under %s: the oldest telemetry is dropped in steps of %" PRIu64
         " bytes to make room%s",
         s->dir, s->step_bytes,
         s->memory_max ? "; when none is left, new records go to memory" : "");
    pthread_cond_signal(&s->bg_cv);
}

/* Gives back the first `upto` bytes of disk segment g (rounded down to the
 * file system's block) with a hole. Returns the new punched offset, or
 * -errno (-EOPNOTSUPP: the file system cannot). Locked. */
static int64_t seg_punch(struct spool *s, struct lane *l, struct seg *g, uint64_t upto)
{
    char fn[32];
    seg_fname(g->name, fn);
    int fd = g->fd >= 0 ? g->fd : openat(l->dfd, fn, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    uint64_t blk = fstat(fd, &st) == 0 && st.st_blksize > 0 ? (uint64_t)st.st_blksize : 4096;
    uint64_t to = upto / blk * blk;
    int rc = 0;
    if (to > g->punched &&
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)to) != 0)
        rc = -errno;
    if (fd != g->fd)
        close(fd);
    if (rc != 0) {
        if (rc != -EOPNOTSUPP && rc != -ENOSYS)
            io_error(s, l, rc, "punch a hole in", fn);
        return rc;
    }
    return (int64_t)(to > g->punched ? to : g->punched);
}

/* Frees disk space after ENOSPC (see "DISK FULL" at the top): about
 * step_bytes of whole records at the start of the oldest telemetry segment
 * holding any. The segment being written keeps its newest record (its id
 * stays on disk, invariant 2), unless all (an alert needs the room); a
 * segment whose records all go is deleted instead. True if something was
 * freed. Locked. */
static bool evict_for_disk(struct spool *s, bool all)
{
    struct lane *t = &s->lane[SPOOL_TELEMETRY];
    const char *why = "disk full (ENOSPC)";
    for (size_t i = 0; i < t->nsegs; i++) {
        struct seg *g = t->segs[i];
        if (g->mem || !seg_holds(g) || g->n == 0)
            continue;
        size_t k0 = 0; /* the first record not wholly punched out */
        while (k0 < g->n && g->ix[k0].off + rec_bytes(&g->ix[k0]) <= g->punched)
            k0++;
        size_t last = g == t->active && !all ? g->n - 1 : g->n; /* records it may take */
        if (k0 >= last)
            continue;
        size_t k = k0;
        uint64_t end = g->punched;
        while (k < last && (k == k0 || end - g->punched < s->step_bytes)) {
            end = g->ix[k].off + rec_bytes(&g->ix[k]);
            k++;
        }
        if (k == g->n && g != t->active) { /* all of a segment not being written: delete it */
            lane_evict_seg(s, t, i, why);
            return true;
        }
        int64_t to = seg_punch(s, t, g, end);
        while (to >= 0 && (uint64_t)to <= g->punched && k < last) {
            end = g->ix[k].off + rec_bytes(&g->ix[k]); /* less than a block: take more */
            k++;
            to = seg_punch(s, t, g, end);
        }
        if (to < 0 || (uint64_t)to <= g->punched) {
            if (g == t->active)
                continue;                 /* never the whole segment being written */
            lane_evict_seg(s, t, i, why); /* cannot punch: the whole segment, the old way */
            return true;
        }
        uint64_t freed = (uint64_t)to - g->punched;
        g->punched = (uint64_t)to;
        t->disk -= freed;
        s->disk -= freed;
        drop_records(s, t, g, k0, k, why);
        after_drop(s, t);
        return true;
    }
    return false;
}

/* Fills the header and trailer of a record. */
static void rec_frame(uint8_t h[HDR_LEN], uint8_t t[TRL_LEN], uint8_t type, const void *data,
                      size_t len, uint64_t id)
{
    memset(h, 0, HDR_LEN);
    put32(h, REC_MAGIC);
    h[4] = type;
    put16(h + 6, 0);
    put32(h + 8, (uint32_t)len);
    put64(h + 12, id);
    put64(h + 20, (uint64_t)ch_now_ms());
    put32(h + 28, crc(0, h, 28));
    put32(t, crc(crc(0, h, HDR_LEN), data, len));
}

/* Counts a record appended to g as id (need bytes with its framing). Locked. */
static void appended(struct spool *s, struct lane *l, struct seg *g, uint64_t id, size_t len)
{
    uint64_t need = (uint64_t)len + SPOOL_RECORD_OVERHEAD;
    seg_push(g, id, g->size, (uint32_t)len, false);
    g->size += need;
    if (g->mem) {
        l->mem += need;
        s->mem += need;
    } else {
        l->disk += need;
        s->disk += need;
    }
    l->next_id++;
    l->st.appended_records++;
    l->st.appended_bytes += len;
    l->st.pending_records++;
    l->st.pending_bytes += len;
}

/* A record that cannot be kept: its id is used up (a gap, like an
 * eviction), it is counted as dropped and logged (rate-limited). Returns rc.
 * Locked. */
static int refuse(struct spool *s, struct lane *l, size_t len, int rc, const char *why,
                  uint64_t *id_out)
{
    uint64_t lost = l->next_id++;
    l->st.dropped_records++;
    l->st.dropped_bytes += len;
    l->st.last_error = rc;
    unsigned long sup;
    if (rl_allow(&l->rl_drop, &sup))
        LOGW(MOD, s->inst, "dropped %s record %" PRIu64 " of %zu bytes: %s (%lu more not logged)",
             l->name, lost, len, why, sup);
    if (id_out)
        *id_out = lost;
    return rc;
}

/* Degraded: keeps the record in the lane's memory segment (a new one when
 * there is none or it is full). Returns SPOOL_NOT_DURABLE, or CH_EFULL
 * (refused, numbered) when memory holds alerts only. Locked. */
static int append_mem(struct spool *s, struct lane *l, uint8_t type, const void *data, size_t len,
                      uint64_t *id_out)
{
    uint64_t need = (uint64_t)len + SPOOL_RECORD_OVERHEAD;
    char why[96];
    if (make_room_mem(s, l->which, need) != 0) {
        snprintf(why, sizeof why, "alerts fill the memory buffer (memory_bytes %" PRIu64 ")",
                 s->memory_max);
        return refuse(s, l, len, CH_EFULL, why, id_out);
    }
    struct seg *g = l->active;
    if (g && (!g->mem || (g->size > 0 && g->size + need > s->mem_seg_bytes))) {
        l->active = NULL;
        seg_maybe_close(l, g);
        g = NULL;
    }
    if (!g) {
        g = seg_new(l->next_id, -1);
        g->mem_cap = (size_t)(need > s->mem_seg_bytes ? need : s->mem_seg_bytes);
        g->mem = ch_xmalloc(g->mem_cap);
        lane_push_seg(l, g);
        l->active = g;
    }
    uint64_t id = l->next_id;
    uint8_t *p = g->mem + g->size;
    rec_frame(p, p + HDR_LEN + len, type, data, len, id);
    if (len)
        memcpy(p + HDR_LEN, data, len);
    appended(s, l, g, id, len);
    if (id_out)
        *id_out = id;
    return SPOOL_NOT_DURABLE;
}

/* Writes a record at the end of the lane's disk segment (a new one when
 * there is none or it is full). On ENOSPC the oldest telemetry is evicted
 * a step at a time and the write tried again. Returns 0 with *gp and *idp,
 * or the error (logged). Locked. */
static int append_disk(struct spool *s, struct lane *l, uint8_t type, const void *data, size_t len,
                       struct seg **gp, uint64_t *idp)
{
    uint64_t need = (uint64_t)len + SPOOL_RECORD_OVERHEAD;
    int rc;
    for (;;) {
        struct seg *g = l->active;
        if (g && (g->mem || (g->size > 0 && g->size + need > s->segment_bytes))) {
            l->active = NULL; /* roll: the old one is synced by the next round */
            seg_maybe_close(l, g);
        }
        if (!l->active && (rc = lane_new_segment(s, l)) != 0) {
            if (rc == -ENOSPC) {
                note_enospc(s);
                if (evict_for_disk(s, l->which == SPOOL_ALERT))
                    continue;
            }
            return rc;
        }
        g = l->active;
        uint64_t id = l->next_id;
        uint8_t h[HDR_LEN], t[TRL_LEN];
        rec_frame(h, t, type, data, len, id);
        struct iovec iov[3] = {{h, HDR_LEN}, {(void *)(uintptr_t)data, len}, {t, TRL_LEN}};
        rc = pwritev_full(g->fd, iov, 3, (off_t)g->size);
        if (rc == 0) {
            appended(s, l, g, id, len);
            *gp = g;
            *idp = id;
            return 0;
        }
        /* undo a partial write so the segment stays a clean run of records */
        if (ftruncate(g->fd, (off_t)g->size) != 0) {
            l->active = NULL; /* torn bytes stay: recovery skips them */
            seg_maybe_close(l, g);
        }
        if (rc == -ENOSPC) {
            note_enospc(s);
            if (evict_for_disk(s, l->which == SPOOL_ALERT))
                continue;
        }
        char fn[32];
        seg_fname(g->name, fn);
        io_error(s, l, rc, "write to", fn);
        return rc;
    }
}

int spool_append(struct spool *s, enum spool_lane which, uint8_t type, const void *data, size_t len,
                 uint64_t *id_out)
{
    if (!s || (unsigned)which >= SPOOL_LANES || (!data && len) || len > SPOOL_MAX_RECORD)
        return CH_EINVAL;
    struct lane *l = &s->lane[which];
    uint64_t need = (uint64_t)len + SPOOL_RECORD_OVERHEAD;
    if (need > s->max_bytes) {
        LOGE(MOD, s->inst, "%s record of %zu bytes can never fit in max_bytes %" PRIu64, l->name,
             len, s->max_bytes);
        return CH_EINVAL;
    }
    lock(s);
    if (l->next_id >= ID_LIMIT) { /* 2^62 ids: only a forged file gets here */
        LOGE(MOD, s->inst, "%s: record ids exhausted", l->name);
        unlock(s);
        return CH_EINVAL;
    }
    int rc;
    if (s->degraded) {
        rc = append_mem(s, l, type, data, len, id_out);
        unlock(s);
        return rc;
    }
    char why[96];
    rc = make_room(s, which, need);
    if (rc != 0) {
        /* refused, but numbered: its id is used up, so the loss shows as a
         * gap in the ids like an eviction, not as nothing at all */
        snprintf(why, sizeof why, "alerts fill max_bytes %" PRIu64, s->max_bytes);
        rc = refuse(s, l, len, rc, why, id_out);
        unlock(s);
        return rc;
    }
    struct seg *g = NULL;
    uint64_t id = 0;
    rc = append_disk(s, l, type, data, len, &g, &id);
    if (rc != 0) {
        if (s->memory_max) { /* the disk failed: memory, with this record */
            degrade(s, rc, "write to");
            rc = append_mem(s, l, type, data, len, id_out);
        } else { /* the caller's to retry (the hub does): no id used, nothing dropped */
            l->st.last_error = rc;
        }
        unlock(s);
        return rc;
    }
    if (id_out)
        *id_out = id;
    if (which == SPOOL_TELEMETRY) {
        unlock(s);
        return 0;
    }
    /* ALERT: wait until a group-commit round covers this record (invariant 3) */
    uint64_t end = g->size;
    g->refs++;
    rc = 0;
    for (;;) {
        if (g->sync_err) {
            /* kept (in a sealed segment, offered by the reader), not durable */
            rc = s->memory_max ? SPOOL_NOT_DURABLE : g->sync_err;
            break;
        }
        if (g->dead || (g->synced >= end && g->dir_synced))
            break;
        if (!l->syncing) {
            l->syncing = true;
            lane_sync_locked(s, l);
            l->syncing = false;
            pthread_cond_broadcast(&l->sync_cv);
            continue;
        }
        pthread_cond_wait(&l->sync_cv, &s->lock);
    }
    seg_unref(g);
    unlock(s);
    return rc;
}

/* Syncs both lanes and writes the cursors that moved; on close (final) also
 * those whose next id moved, so a clean restart continues without a gap. */
static int sync_all(struct spool *s, bool final)
{
    int rc = 0;
    for (int i = 0; i < SPOOL_LANES; i++) {
        int r = lane_sync(s, &s->lane[i], true);
        if (!rc)
            rc = r;
        r = lane_persist(s, &s->lane[i], final);
        if (!rc)
            rc = r;
    }
    return rc;
}

int spool_sync(struct spool *s)
{
    if (!s)
        return CH_EINVAL;
    int rc = sync_all(s, false);
    lock(s);
    if (s->degraded)
        rc = s->fail_err;
    unlock(s);
    return rc;
}

/* ---- reading and acknowledging -------------------------------------------- */

/* Reads and re-checks record r of segment g into the lane's buffer. Returns 0,
 * 1 when the record is damaged or gone, or -errno for a failure that is not
 * the record's fault (e.g. EMFILE). Locked. */
static int read_record(struct spool *s, struct lane *l, struct seg *g, const struct rec_ix *r)
{
    int fd = g->fd;
    char fn[32];
    seg_fname(g->name, fn);
    size_t len = r->lenf & LEN_MASK;
    size_t total = HDR_LEN + len + TRL_LEN;
    if (total > l->rd_cap) {
        l->rd_cap = total < 4096 ? 4096 : total;
        l->rd_buf = ch_xrealloc(l->rd_buf, l->rd_cap);
    }
    if (g->mem) { /* held in memory (degraded): a copy, borrowed like one read */
        memcpy(l->rd_buf, g->mem + r->off, total);
        return 0;
    }
    if (fd < 0) {
        if (l->rd_fd >= 0 && l->rd_name != g->name) {
            close(l->rd_fd);
            l->rd_fd = -1;
        }
        if (l->rd_fd < 0) {
            l->rd_fd = openat(l->dfd, fn, O_RDONLY | O_CLOEXEC);
            if (l->rd_fd < 0) {
                int rc = -errno;
                if (rc == -ENOENT)
                    return 1;
                io_error(s, l, rc, "open", fn);
                return rc;
            }
            l->rd_name = g->name;
        }
        fd = l->rd_fd;
    }
    size_t got = 0;
    while (got < total) {
        ssize_t n = pread(fd, l->rd_buf + got, total - got, (off_t)(r->off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            LOGE(MOD, s->inst, "read %s/%s/%s at %" PRIu32 ": %s", s->dir, l->name, fn, r->off,
                 n < 0 ? ch_strerror(-errno) : "file shorter than expected");
            return 1;
        }
        got += (size_t)n;
    }
    const uint8_t *h = l->rd_buf;
    if (get32(h) != REC_MAGIC || get32(h + 28) != crc(0, h, 28) || get32(h + 8) != len ||
        get64(h + 12) != r->id ||
        get32(h + HDR_LEN + len) != crc(crc(0, h, HDR_LEN), h + HDR_LEN, len)) {
        LOGE(MOD, s->inst, "record %" PRIu64 " in %s/%s/%s at %" PRIu32 " fails its CRC", r->id,
             s->dir, l->name, fn, r->off);
        return 1;
    }
    return 0;
}

int spool_next(struct spool *s, enum spool_lane which, uint64_t after_id, struct spool_record *rec)
{
    if (!s || (unsigned)which >= SPOOL_LANES || !rec)
        return CH_EINVAL;
    struct lane *l = &s->lane[which];
    lock(s);
    uint64_t thr = after_id > l->cursor ? after_id : l->cursor;
    for (;;) {
        size_t si, ri;
        if (!lane_find_after(l, thr, &si, &ri)) {
            unlock(s);
            return 0;
        }
        while (l->segs[si]->ix[ri].lenf & ACKED) {
            if (!lane_step(l, &si, &ri)) {
                unlock(s);
                return 0;
            }
        }
        struct seg *g = l->segs[si];
        struct rec_ix *r = &g->ix[ri];
        int rc = read_record(s, l, g, r);
        if (rc < 0) {
            unlock(s);
            return rc;
        }
        if (rc == 0) {
            const uint8_t *h = l->rd_buf;
            rec->id = r->id;
            rec->type = h[4];
            rec->time_ms = (int64_t)get64(h + 20);
            rec->data = h + HDR_LEN;
            rec->len = r->lenf & LEN_MASK;
            r->lenf |= HANDED;
            unlock(s);
            return 1;
        }
        /* damaged since recovery (media error): skip it, never stall on it */
        rec_settle(l, r);
        l->st.corrupt_records++;
        thr = r->id;
        lane_advance_cursor(l);
    }
}

/* Acknowledges the records lo..hi (those there and not acknowledged yet),
 * moves the cursor over the acknowledged prefix and returns how many. Locked. */
static uint64_t ack_range_locked(struct spool *s, enum spool_lane which, uint64_t lo, uint64_t hi)
{
    struct lane *l = &s->lane[which];
    uint64_t n = 0;
    size_t si, ri;
    uint64_t from = lo - 1 > l->cursor ? lo - 1 : l->cursor;
    if (from < hi && lane_find_after(l, from, &si, &ri)) {
        do {
            struct rec_ix *r = &l->segs[si]->ix[ri];
            if (r->id > hi)
                break;
            if (!(r->lenf & ACKED)) {
                rec_settle(l, r);
                n++;
            }
        } while (lane_step(l, &si, &ri));
    }
    if (n) {
        l->st.acked_records += n;
        uint64_t before = l->cursor;
        lane_advance_cursor(l);
        if (which == SPOOL_ALERT && l->cursor != before) {
            s->kick = true;
            pthread_cond_signal(&s->bg_cv);
        }
        if (l->mem && l->cursor != before)
            lane_free_mem(s, l);
    }
    return n;
}

int spool_ack(struct spool *s, enum spool_lane which, uint64_t id)
{
    if (!s || (unsigned)which >= SPOOL_LANES || id == 0)
        return CH_EINVAL;
    lock(s);
    int rc = id < s->lane[which].next_id ? 0 : CH_EINVAL;
    if (rc == 0)
        ack_range_locked(s, which, id, id);
    unlock(s);
    return rc;
}

int spool_ack_range(struct spool *s, enum spool_lane which, uint64_t lo, uint64_t hi,
                    uint64_t *acked)
{
    if (acked)
        *acked = 0;
    if (!s || (unsigned)which >= SPOOL_LANES || lo == 0 || lo > hi)
        return CH_EINVAL;
    lock(s);
    uint64_t n = ack_range_locked(s, which, lo, hi);
    unlock(s);
    if (acked)
        *acked = n;
    return 0;
}

void spool_pending(struct spool *s, enum spool_lane which, uint64_t *records, uint64_t *bytes)
{
    uint64_t r = 0, b = 0;
    if (s && (unsigned)which < SPOOL_LANES) {
        lock(s);
        r = s->lane[which].st.pending_records;
        b = s->lane[which].st.pending_bytes;
        unlock(s);
    }
    if (records)
        *records = r;
    if (bytes)
        *bytes = b;
}

void spool_stats(struct spool *s, struct spool_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!s)
        return;
    lock(s);
    for (int i = 0; i < SPOOL_LANES; i++) {
        struct lane *l = &s->lane[i];
        out->lane[i] = l->st;
        out->lane[i].segments = l->nsegs;
        out->lane[i].disk_bytes = l->disk;
        out->lane[i].memory_bytes = l->mem;
        out->lane[i].next_id = l->next_id;
        out->lane[i].cursor = l->cursor;
    }
    out->disk_bytes = s->disk;
    out->max_bytes = s->max_bytes;
    out->segment_bytes = s->segment_bytes;
    bool degraded = s->degraded || s->recovering; /* back on disk once confirmed */
    out->degraded = degraded;
    out->disk_full = s->disk_full;
    out->error = degraded ? s->fail_err : s->disk_full ? -ENOSPC : 0;
    out->since_ms = degraded || s->disk_full ? s->since_ms : 0;
    out->degraded_count = s->degraded_count;
    out->disk_full_count = s->disk_full_count;
    out->memory_bytes = s->mem;
    out->memory_max = s->memory_max;
    unlock(s);
}

/* ---- the background thread ------------------------------------------------ */

/* Every commit interval: fsync telemetry written since the last round.
 * Every cursor interval: persist the telemetry cursor if it moved (two
 * fsyncs and a new inode: in live operation, with an ack every second, doing
 * it every second would write twice as much as the data itself; measured by
 * bench_spool). At once when kicked: persist the alert cursor. Degraded:
 * retry the disk when due; disk full: look for room every retry interval.
 * Sleeps otherwise: an idle spool does no I/O (SD cards). */
static void *bg_main(void *arg)
{
    struct spool *s = arg;
    lock(s);
    int64_t due = ch_mono_ms() + s->commit_ms;
    int64_t cursor_due = ch_mono_ms() + s->cursor_ms;
    while (!s->bg_stop) {
        if (s->kick) {
            s->kick = false;
            unlock(s);
            lane_persist(s, &s->lane[SPOOL_ALERT], false);
            lock(s);
            continue;
        }
        int64_t now = ch_mono_ms();
        if (s->degraded && now >= s->retry_at) {
            unlock(s);
            try_disk(s);
            lock(s);
            continue;
        }
        if (s->disk_full && !s->degraded && now >= s->full_check_at) {
            check_room(s);
            continue;
        }
        if (now >= due) {
            bool cursors = now >= cursor_due;
            unlock(s);
            lane_sync(s, &s->lane[SPOOL_TELEMETRY], true);
            if (cursors) {
                lane_persist(s, &s->lane[SPOOL_TELEMETRY], false);
                lane_persist(s, &s->lane[SPOOL_ALERT], false); /* retries a failed write */
            }
            lock(s);
            due = now + s->commit_ms;
            if (cursors)
                cursor_due = now + s->cursor_ms;
            continue;
        }
        int64_t wake = due;
        if (s->degraded && s->retry_at < wake)
            wake = s->retry_at;
        if (s->disk_full && !s->degraded && s->full_check_at < wake)
            wake = s->full_check_at;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t wait = wake > now ? wake - now : 0;
        ts.tv_sec += (time_t)(wait / 1000);
        ts.tv_nsec += (long)(wait % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->bg_cv, &s->lock, &ts);
    }
    unlock(s);
    return NULL;
}

/* ---- recovery -------------------------------------------------------------- */

struct hdr {
    uint8_t type;
    uint32_t len;
    uint64_t id;
};

/* A header at p whose magic, header CRC, length bound and id range hold. */
static bool hdr_ok(const uint8_t *p, struct hdr *h)
{
    if (get32(p) != REC_MAGIC || get32(p + 28) != crc(0, p, 28))
        return false;
    h->type = p[4];
    h->len = get32(p + 8);
    h->id = get64(p + 12);
    return h->len <= SPOOL_MAX_RECORD && h->id > 0 && h->id < ID_LIMIT;
}

/* A framed record at buf[off]: a valid header (see hdr_ok) with an id above
 * prev and the whole record inside the file. Its payload is not checked. */
static bool framed_at(const uint8_t *buf, uint64_t size, uint64_t off, uint64_t prev, struct hdr *h)
{
    return size - off >= HDR_LEN + TRL_LEN && hdr_ok(buf + off, h) && h->id > prev &&
           size - off - HDR_LEN - TRL_LEN >= h->len;
}

static bool payload_ok(const uint8_t *p, uint32_t len)
{
    return get32(p + HDR_LEN + len) == crc(crc(0, p, HDR_LEN), p + HDR_LEN, len);
}

/* The next offset after off where a whole valid record (framed, with a good
 * payload CRC) starts, or size. Payload CRCs are only computed for framed
 * candidates and charged to *budget; once it is spent (a hostile file full of
 * valid-looking headers: real damage costs about the segment's size), a
 * framed header is accepted as it is, which keeps recovery linear. */
static uint64_t resync(const uint8_t *buf, uint64_t size, uint64_t off, uint64_t prev,
                       struct hdr *h, uint64_t *budget)
{
    for (uint64_t p = off + 1; p + HDR_LEN + TRL_LEN <= size; p++) {
        const uint8_t *m = memchr(buf + p, (int)MAGIC_BYTE0, size - p);
        if (!m)
            break;
        p = (uint64_t)(m - buf);
        if (!framed_at(buf, size, p, prev, h))
            continue;
        if (*budget == 0)
            return p;
        *budget = h->len < *budget ? *budget - h->len : 0;
        if (payload_ok(buf + p, h->len))
            return p;
    }
    return size;
}

/* Scans segment g (its bytes in buf) into its index. *prev is the last valid
 * id of the lane so far; next_name the name of the following segment (0 if
 * last), used to count what a damaged tail held. *from: where the file's
 * data begins (above 0 after an ENOSPC eviction punched its start out); the
 * scan starts at the first whole valid record from there, and *from becomes
 * its offset (size when there is none). Returns the length of the valid
 * prefix (the caller truncates the rest).
 *
 * Damage is skipped up to the next whole valid record with a higher id; the
 * ids missing across it say how many records it held (a record whose header
 * is intact but whose payload fails the CRC is named in the log). Damage with
 * no valid record after it is a tail. */
static uint64_t seg_scan(struct spool *s, struct lane *l, struct seg *g, const uint8_t *buf,
                         uint64_t size, uint64_t *prev, uint64_t next_name, uint64_t *from)
{
    char fn[32];
    seg_fname(g->name, fn);
    uint64_t off = 0, end = 0, budget = 16 * size + (4u << 20);
    uint64_t expect = g->name > *prev ? g->name : *prev + 1; /* id the next record should have */
    struct hdr h;
    if (*from > 0) { /* evicted records: not damage, counted when they went */
        *from = *from >= size ? size : resync(buf, size, *from - 1, *prev, &h, &budget);
        if (*from == size)
            return size;
        off = end = *from;
    }
    while (off < size) {
        bool framed = framed_at(buf, size, off, *prev, &h);
        if (framed && (payload_ok(buf + off, h.len) || budget == 0)) {
            uint64_t next = off + HDR_LEN + h.len + TRL_LEN;
            if (budget == 0 && !payload_ok(buf + off, h.len)) {
                l->st.corrupt_records++; /* hostile file: skipped by its framing */
                off = next;
                continue;
            }
            seg_push(g, h.id, off, h.len, false);
            *prev = h.id;
            expect = h.id + 1;
            end = off = next;
            continue;
        }
        uint64_t bad_id = framed ? h.id : 0;
        uint64_t p = resync(buf, size, off, *prev, &h, &budget);
        if (p == size)
            break; /* nothing valid follows: a tail */
        uint64_t lost = h.id > expect ? h.id - expect : 1;
        uint64_t fit = (p - off) / (HDR_LEN + TRL_LEN);
        if (lost > fit)
            lost = fit ? fit : 1;
        l->st.corrupt_records += lost;
        if (bad_id)
            LOGW(MOD, s->inst,
                 "%s/%s/%s: record %" PRIu64 " at offset %" PRIu64 " fails its CRC; %" PRIu64
                 " bytes skipped",
                 s->dir, l->name, fn, bad_id, off, p - off);
        else if (h.id > expect)
            LOGW(MOD, s->inst,
                 "%s/%s/%s: %" PRIu64 " damaged bytes at offset %" PRIu64 " (records %" PRIu64
                 "..%" PRIu64 ")",
                 s->dir, l->name, fn, p - off, off, expect, h.id - 1);
        else
            LOGW(MOD, s->inst,
                 "%s/%s/%s: %" PRIu64 " damaged bytes at offset %" PRIu64
                 " (not a record in sequence)",
                 s->dir, l->name, fn, p - off, off);
        off = p;
    }
    if (end < size) {
        if (next_name) {
            /* the tail of an older segment: records lost, counted as corrupt */
            uint64_t lost = next_name > expect ? next_name - expect : 1;
            uint64_t fit = (size - end) / (HDR_LEN + TRL_LEN);
            if (lost > fit)
                lost = fit ? fit : 1;
            l->st.corrupt_records += lost;
        }
        LOGW(MOD, s->inst,
             "%s/%s/%s: truncated %" PRIu64 " bytes of torn or garbage tail at offset %" PRIu64,
             s->dir, l->name, fn, size - end, end);
        l->st.truncated_bytes += size - end;
    }
    return end;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Lists the segment names in the lane directory, sorted. Removes a stale
 * cursor.tmp. Returns the count; *out is malloc'ed. */
static size_t list_segments(struct spool *s, struct lane *l, uint64_t **out)
{
    *out = NULL;
    size_t n = 0, cap = 0;
    int dfd = dup(l->dfd);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        if (dfd >= 0)
            close(dfd);
        LOGE(MOD, s->inst, "cannot list %s/%s: %s", s->dir, l->name, ch_strerror(-errno));
        return 0;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        uint64_t v;
        if (seg_parse_name(nm, &v)) {
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                *out = ch_xrealloc(*out, cap * sizeof **out);
            }
            (*out)[n++] = v;
        } else if (strcmp(nm, "cursor.tmp") == 0) {
            unlinkat(l->dfd, nm, 0);
        } else if (strcmp(nm, ".") != 0 && strcmp(nm, "..") != 0 && strcmp(nm, "cursor") != 0) {
            LOGW(MOD, s->inst, "%s/%s: ignoring unexpected file %s", s->dir, l->name, nm);
        }
    }
    closedir(d);
    if (n > 1)
        qsort(*out, n, sizeof **out, cmp_u64);
    return n;
}

/* Recovers one segment file (name; next_name: the following segment's, 0
 * if last) into the lane: see "WHAT A CRASH DOES" and, for a punched start,
 * "DISK FULL". ro: read only (a torn tail is cut later). *prev: the last
 * valid id of the lane so far. Returns true if the file was cut. A file that
 * cannot be read is logged and left alone. */
static bool seg_recover(struct spool *s, struct lane *l, uint64_t name, uint64_t next_name, bool ro,
                        uint64_t *prev)
{
    char fn[32];
    seg_fname(name, fn);
    bool cut = false;
    int fd = openat(l->dfd, fn, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    bool fd_ro = ro;
    if (fd < 0 && (errno == EROFS || errno == EACCES)) { /* read what can be read */
        fd = openat(l->dfd, fn, O_RDONLY | O_CLOEXEC);
        fd_ro = true;
    }
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        LOGE(MOD, s->inst, "cannot open %s/%s/%s: %s; left alone", s->dir, l->name, fn,
             ch_strerror(-errno));
        if (fd >= 0)
            close(fd);
        return false;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > SEG_FILE_MAX) {
        LOGE(MOD, s->inst, "%s/%s/%s is not a segment (%s); left alone", s->dir, l->name, fn,
             S_ISREG(st.st_mode) ? "too large" : "not a file");
        close(fd);
        return false;
    }
    struct seg *g = seg_new(name, -1);
    uint64_t size = (uint64_t)st.st_size, end = 0, from = 0;
    off_t data = size > 0 ? lseek(fd, 0, SEEK_DATA) : 0;
    if (data > 0 || (data < 0 && errno == ENXIO)) /* its start was punched out */
        from = data > 0 ? (uint64_t)data : size;
    if (size > 0) {
        void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            LOGE(MOD, s->inst, "cannot map %s/%s/%s: %s; left alone", s->dir, l->name, fn,
                 ch_strerror(-errno));
            close(fd);
            seg_unref(g);
            return false;
        }
        end = seg_scan(s, l, g, map, size, prev, next_name, &from);
        munmap(map, (size_t)size);
    }
    if (from > 0)
        LOGI(MOD, s->inst,
             "%s/%s/%s: its first %" PRIu64 " bytes were given back when the disk was full "
             "(records evicted then); reading from there",
             s->dir, l->name, fn, from);
    if (end < size && fd_ro) {
        g->torn = true; /* cut when the disk can be written */
    } else if (end < size) {
        if (ftruncate(fd, (off_t)end) != 0 || fsync_retry(fd, true) != 0)
            LOGE(MOD, s->inst, "cannot truncate %s/%s/%s: %s", s->dir, l->name, fn,
                 ch_strerror(-errno));
        cut = true;
    }
    close(fd);
    g->size = g->synced = end;
    g->punched = from < end ? from : end;
    g->dir_synced = true;
    lane_push_seg(l, g);
    l->disk += seg_held(g);
    s->disk += seg_held(g);
    return cut;
}

/* Recovers one lane (see "WHAT A CRASH DOES"). Returns 0 or -errno when the
 * lane directory itself is unusable. *created tells whether it was new. ro
 * (the directory cannot be written, "WHEN THE DISK FAILS"): what is there is
 * read and nothing is written, cut or deleted; a lane directory that does
 * not exist is an empty lane. */
static int lane_recover(struct spool *s, struct lane *l, bool *created, bool ro)
{
    *created = false;
    int mk = mkdirat(s->dfd, l->name, 0750) == 0 ? 0 : -errno;
    if (mk == 0)
        *created = true;
    else if (mk != -EEXIST && !ro)
        return mk;
    l->dfd = openat(s->dfd, l->name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (l->dfd < 0)
        return ro && errno == ENOENT ? 0 : -errno;

    uint64_t c_acked = 0, c_next = 0;
    int cst = cursor_read(l, &c_acked, &c_next);
    uint64_t *names;
    size_t nn = list_segments(s, l, &names);
    bool changed = false;
    uint64_t prev = 0, next = 1;
    for (size_t i = 0; i < nn; i++) {
        char fn[32];
        seg_fname(names[i], fn);
        if (names[i] >= ID_LIMIT) {
            LOGE(MOD, s->inst, "%s/%s/%s: not a name this spool writes; left alone", s->dir,
                 l->name, fn);
            continue;
        }
        if (names[i] > next)
            next = names[i];
        changed |= seg_recover(s, l, names[i], i + 1 < nn ? names[i + 1] : 0, ro, &prev);
    }
    if (prev + 1 > next)
        next = prev + 1;
    bool cursor_bad = cst != CUR_OK && (cst == CUR_CORRUPT || nn > 0);
    if (cst == CUR_OK) {
        if (c_acked + 1 > next)
            next = c_acked + 1;
        if (c_next > next)
            next = c_next;
        l->cursor = c_acked;
    }
    l->next_id = next;
    /* the cursor makes records acknowledged; the rest are pending */
    uint64_t lo = 0, hi = 0;
    for (size_t i = 0; i < l->nsegs; i++) {
        struct seg *g = l->segs[i];
        for (size_t k = 0; k < g->n; k++) {
            if (g->ix[k].id <= l->cursor) {
                g->ix[k].lenf |= ACKED;
                continue;
            }
            l->st.pending_records++;
            l->st.pending_bytes += g->ix[k].lenf & LEN_MASK;
            if (!lo)
                lo = g->ix[k].id;
            hi = g->ix[k].id;
        }
    }
    if (cursor_bad)
        LOGW(MOD, s->inst,
             "%s/%s/cursor is %s: resending from the oldest record (id %" PRIu64
             "); duplicates possible",
             s->dir, l->name, cst == CUR_MISSING ? "missing" : "corrupt", lo);
    size_t before = l->nsegs;
    if (!ro)
        lane_delete_done(s, l, l->cursor);
    changed |= l->nsegs != before;
    if (changed && fsync_retry(l->dfd, false) == 0)
        l->st.fsyncs++;
    /* record the cursor and next id now, so that a missing cursor is always
     * abnormal. Failing (disk full) is not fatal: it is retried later. */
    l->saved_cursor = c_acked;
    l->saved_next = c_next;
    if (ro && cst != CUR_OK) {
        l->saved_cursor = UINT64_MAX; /* written once the disk can be */
    } else if (cst != CUR_OK) {
        const char *what = "";
        int rc = cursor_write(l, l->cursor, l->next_id, &what);
        if (rc == 0) {
            l->saved_cursor = l->cursor;
            l->saved_next = l->next_id;
            l->st.fsyncs += 2;
        } else {
            io_error(s, l, rc, what, "cursor");
            l->saved_cursor = UINT64_MAX; /* makes the next persist write it */
        }
    }
    if (l->st.pending_records || l->st.corrupt_records || l->st.truncated_bytes)
        LOGI(MOD, s->inst,
             "%s: %" PRIu64 " records pending (ids %" PRIu64 "..%" PRIu64 "), %" PRIu64
             " corrupt skipped, %" PRIu64 " tail bytes cut, next id %" PRIu64,
             l->name, l->st.pending_records, lo, hi, l->st.corrupt_records, l->st.truncated_bytes,
             l->next_id);
    free(names);
    return 0;
}

/* ---- the format marker (see "FORMAT" at the top) ---------------------------- */

#define FMT_FILE     "format"
#define FMT_TMP      "format.tmp"
#define FMT_PREFIX   "carehub-spool-format "
#define FMT_READ_MAX 256u /* the marker's first line must end within this */

/* The format a magic claims (A7 'S' kind digit) when it is a later one than
 * this build's, else 0 (this format, or not a magic at all: damage). */
static long magic_later(const uint8_t b[4], char kind)
{
    if (b[0] != MAGIC_BYTE0 || b[1] != 'S' || b[2] != (uint8_t)kind)
        return 0;
    return b[3] > '0' + SPOOL_FORMAT && b[3] <= '9' ? b[3] - '0' : 0;
}

/* Copies up to 32 bytes of b to out for a log line, non-printables as '?'. */
static void printable(const uint8_t *b, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n && i < 32 && k + 1 < cap; i++)
        out[k++] = b[i] >= 0x20 && b[i] < 0x7f ? (char)b[i] : '?';
    out[k] = '\0';
}

/* Parses a marker: FMT_PREFIX, a format number (1 to 9 digits, no leading
 * zero), '\n'; what follows the newline is ignored (reserved). Returns the
 * number, or 0 when b is not a marker. */
static long fmt_parse(const uint8_t *b, size_t n)
{
    size_t pl = sizeof FMT_PREFIX - 1, i = pl;
    if (n < pl || memcmp(b, FMT_PREFIX, pl) != 0)
        return 0;
    long v = 0;
    for (; i < n && i < pl + 9 && b[i] >= '0' && b[i] <= '9'; i++) {
        if (i == pl && b[i] == '0')
            return 0;
        v = v * 10 + (b[i] - '0');
    }
    return i > pl && i < n && b[i] == '\n' ? v : 0;
}

/* Reads DIR/format without changing anything. Returns 0 when it says
 * SPOOL_FORMAT, 1 when there is none, or CH_EFORMAT with *found (the format
 * it says, 0 when it cannot be read or is not a marker) and why. */
static int fmt_read(int dfd, long *found, char *why, size_t cap)
{
    *found = 0;
    /* O_NONBLOCK: a FIFO put there must not hang the open */
    int fd = openat(dfd, FMT_FILE, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return 1;
    uint8_t b[FMT_READ_MAX];
    ssize_t n = -1;
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0) {
        if (S_ISREG(st.st_mode)) {
            do
                n = pread(fd, b, sizeof b, 0);
            while (n < 0 && errno == EINTR);
        } else {
            errno = EINVAL; /* a directory, a FIFO...: not a marker */
        }
    }
    int err = errno;
    if (fd >= 0)
        close(fd);
    if (n < 0) {
        snprintf(why, cap, "its " FMT_FILE " file cannot be read: %s",
                 err == EINVAL ? "not a regular file" : ch_strerror(-err));
        return CH_EFORMAT;
    }
    *found = fmt_parse(b, (size_t)n);
    if (*found == SPOOL_FORMAT)
        return 0;
    char text[40];
    if (*found) { /* its line, without the newline */
        const uint8_t *nl = memchr(b, '\n', (size_t)n);
        printable(b, (size_t)(nl - b), text, sizeof text);
        snprintf(why, cap, "its " FMT_FILE " file says \"%s\"", text);
    } else {
        printable(b, (size_t)n, text, sizeof text);
        snprintf(why, cap, "its " FMT_FILE " file is not a marker (%zd bytes: \"%s\")", n, text);
    }
    return CH_EFORMAT;
}

/* The first four bytes of the data of file fn in directory dfd (after a hole
 * an ENOSPC eviction punched); false when there are none or it cannot be
 * read (recovery says so later). */
static bool first_bytes(int dfd, const char *fn, uint8_t b[4])
{
    int fd = openat(dfd, fn, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return false;
    struct stat st;
    bool ok = false;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        off_t at = lseek(fd, 0, SEEK_DATA);
        if (at < 0 && errno != ENXIO)
            at = 0; /* a file system without SEEK_DATA */
        ok = at >= 0 && pread(fd, b, 4, at) == 4;
    }
    close(fd);
    return ok;
}

/* A spool without a marker: one written by a release before markers
 * (format 1), or a new one. Looks, without changing anything, for a later
 * format's magic at the start of each lane's cursor and segments. Returns 0,
 * or CH_EFORMAT with *found and why. *lanes: a lane directory exists. */
static int fmt_probe(struct spool *s, long *found, char *why, size_t cap, bool *lanes)
{
    *lanes = false;
    for (int i = 0; i < SPOOL_LANES; i++) {
        int ldfd = openat(s->dfd, lane_names[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (ldfd < 0)
            continue; /* missing: a new lane; unusable: lane_recover says so */
        *lanes = true;
        uint8_t b[4];
        if (first_bytes(ldfd, "cursor", b) && (*found = magic_later(b, 'C')) != 0)
            snprintf(why, cap,
                     "%s/cursor begins with a format-%ld magic, and there is no " FMT_FILE " file",
                     lane_names[i], *found);
        int dd = *found ? -1 : dup(ldfd);
        DIR *d = dd >= 0 ? fdopendir(dd) : NULL;
        if (!d && dd >= 0)
            close(dd);
        struct dirent *de;
        uint64_t v;
        while (d && !*found && (de = readdir(d)) != NULL)
            if (seg_parse_name(de->d_name, &v) && first_bytes(ldfd, de->d_name, b) &&
                (*found = magic_later(b, 'P')) != 0)
                snprintf(why, cap,
                         "%s/%.64s begins with a format-%ld record, and there is no " FMT_FILE
                         " file",
                         lane_names[i], de->d_name, *found);
        if (d)
            closedir(d);
        close(ldfd);
        if (*found)
            return CH_EFORMAT;
    }
    return 0;
}

/* Decides, before anything in the directory is written (the lock file
 * included), whether this build may use the spool: see "FORMAT". Sets
 * s->marked when the marker is there, s->legacy for a spool of an earlier
 * release without one. Returns 0, or CH_EFORMAT after logging why, what was
 * found and what to do. */
static int fmt_check(struct spool *s, bool probe)
{
    long found = 0;
    char why[160] = "";
    bool lanes = false;
    int rc = fmt_read(s->dfd, &found, why, sizeof why);
    s->marked = rc == 0;
    if (rc == 1)
        rc = probe ? fmt_probe(s, &found, why, sizeof why, &lanes) : 0;
    s->legacy = rc == 0 && !s->marked && lanes;
    if (rc == 0)
        return 0;
    char fmt[32];
    if (found)
        snprintf(fmt, sizeof fmt, "format %ld", found);
    else
        snprintf(fmt, sizeof fmt, "an unknown format");
    LOGE(MOD, s->inst,
         "spool %s is in %s (%s); this build reads spool format %d: refused, nothing in it was "
         "changed. Upgrade carehub to a release that reads it, or move the directory away to start "
         "an empty spool (what it holds is then not delivered)",
         s->dir, fmt, why, SPOOL_FORMAT);
    return CH_EFORMAT;
}

/* Writes the marker of a spool that has none (tmp, fsync, rename without
 * replacing, fsync the directory: a crash leaves no marker or a whole one).
 * Returns 0, 1 when a marker appeared meanwhile (the caller reads it again),
 * or -errno with *what naming the failed step. Holds the directory's lock. */
static int fmt_write(struct spool *s, const char **what)
{
    char b[64];
    int n = snprintf(b, sizeof b, FMT_PREFIX "%d\n", SPOOL_FORMAT);
    *what = "create";
    int fd = openat(s->dfd, FMT_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return -errno;
    *what = "write";
    int rc = write_full(fd, (const uint8_t *)b, (size_t)n);
    if (rc == 0) {
        *what = "fsync";
        rc = fsync(fd) == 0 ? 0 : -errno;
    }
    close(fd);
    if (rc == 0) {
        *what = "rename";
        rc = renameat2(s->dfd, FMT_TMP, s->dfd, FMT_FILE, RENAME_NOREPLACE) == 0 ? 0 : -errno;
        if (rc == -EINVAL || rc == -ENOSYS) /* a file system without RENAME_NOREPLACE */
            rc = renameat(s->dfd, FMT_TMP, s->dfd, FMT_FILE) == 0 ? 0 : -errno;
    }
    if (rc == 0) {
        *what = "fsync the directory of";
        rc = fsync(s->dfd) == 0 ? 0 : -errno;
        s->marked = rc == 0;
        return rc;
    }
    unlinkat(s->dfd, FMT_TMP, 0);
    return rc == -EEXIST ? 1 : rc;
}

/* After the lock: gives a spool without a marker its marker. Returns 0,
 * CH_EFORMAT when a marker of another format appeared since fmt_check (a
 * later release opened it in between: logged), or -errno when it cannot be
 * written. A stale FMT_TMP of a crash is removed. */
static int fmt_mark(struct spool *s, const char **what)
{
    if (s->marked) {
        unlinkat(s->dfd, FMT_TMP, 0);
        return 0;
    }
    int rc = fmt_write(s, what);
    if (rc == 1)
        rc = fmt_check(s, false);
    if (rc == 0 && s->legacy)
        LOGI(MOD, s->inst, "%s: a spool of an earlier release (format %d, no marker): marked",
             s->dir, SPOOL_FORMAT);
    return rc;
}

/* ---- when the disk fails ------------------------------------------------- */

/* Enters the degraded mode after err on `what` (see "WHEN THE DISK FAILS"):
 * the lanes' disk segments being written are sealed, appends go to memory.
 * Logged once per entry. Only with memory_max. Locked. */
static void degrade(struct spool *s, int err, const char *what)
{
    for (int i = 0; i < SPOOL_LANES; i++) {
        struct lane *l = &s->lane[i];
        struct seg *g = l->active;
        if (g && !g->mem) {
            l->active = NULL;
            seg_maybe_close(l, g);
        }
    }
    if (s->degraded)
        return;
    s->degraded = true;
    int64_t now = ch_mono_ms();
    if (s->recovering) { /* back on disk was not confirmed: still the same failure */
        s->retry_at = now + s->retry_delay;
        return;
    }
    s->fail_err = err;
    s->degraded_count++;
    if (!s->disk_full)
        s->since_ms = ch_now_ms();
    /* a disk that fails again soon after coming back keeps the back-off */
    if (!s->retry_delay || now - s->recovered_at > RETRY_MAX_FACTOR * s->retry_ms)
        s->retry_delay = s->retry_ms;
    s->retry_at = now + s->retry_delay;
    LOGE(MOD, s->inst,
         "cannot %s %s: %s: new records are kept in memory only (at most %" PRIu64
         " bytes, lost if the process stops) until the disk can be written again; retrying in "
         "%.1f s",
         what, s->dir, ch_strerror(err), s->memory_max, (double)s->retry_delay / 1000.0);
    pthread_cond_signal(&s->bg_cv);
}

/* Disk full and not degraded: lowers disk_full once the file system has
 * room for two segments again. Locked. */
static void check_room(struct spool *s)
{
    struct statvfs v;
    uint64_t room = 0;
    if (s->dfd >= 0 && fstatvfs(s->dfd, &v) == 0)
        room = (uint64_t)v.f_bavail * (uint64_t)v.f_frsize;
    if (room >= 2 * s->segment_bytes) {
        s->disk_full = false;
        LOGW(MOD, s->inst, "disk under %s has room again (%" PRIu64 " bytes free)", s->dir, room);
        return;
    }
    s->full_check_at = ch_mono_ms() + s->retry_ms;
}

/* Reopens what the degraded spool could not open: the directory, its lock,
 * the lane directories; cuts the torn tails a read-only recovery left. A
 * directory read for the first time must hold no segments (their ids could
 * be ours). Returns 0 or an error; *what names the step. Locked. */
static int disk_reopen(struct spool *s, const char **what)
{
    *what = "open";
    if (s->dfd < 0) {
        if (mkdir(s->dir, 0750) != 0 && errno != EEXIST)
            return -errno;
        s->dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->dfd < 0)
            return -errno;
    }
    if (!s->marked) { /* before anything is written (FORMAT) */
        long found;
        char why[160];
        *what = "use (it holds a spool of another format)";
        int rc = fmt_read(s->dfd, &found, why, sizeof why);
        if (rc == CH_EFORMAT)
            return rc;
        s->marked = rc == 0;
    }
    if (s->lock_fd < 0) {
        *what = "write to";
        s->lock_fd = openat(s->dfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0640);
        if (s->lock_fd < 0)
            return -errno;
        if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
            int rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
            close(s->lock_fd);
            s->lock_fd = -1;
            *what = "lock";
            return rc;
        }
    }
    for (int i = 0; i < SPOOL_LANES; i++) {
        struct lane *l = &s->lane[i];
        *what = "create a lane directory in";
        if (l->dfd < 0) {
            if (mkdirat(s->dfd, l->name, 0750) != 0 && errno != EEXIST)
                return -errno;
            l->dfd = openat(s->dfd, l->name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (l->dfd < 0)
                return -errno;
            uint64_t *names = NULL;
            size_t nn = l->scanned ? 0 : list_segments(s, l, &names);
            free(names);
            if (nn) {
                *what = "use (it holds records from before this start: care-edge must be "
                        "restarted to deliver them)";
                return CH_ESTATE;
            }
        }
        for (size_t k = 0; k < l->nsegs; k++) {
            struct seg *g = l->segs[k];
            if (!g->torn)
                continue;
            char fn[32];
            seg_fname(g->name, fn);
            *what = "cut the torn tail of a segment in";
            int fd = openat(l->dfd, fn, O_RDWR | O_CLOEXEC);
            if (fd < 0)
                return -errno;
            int rc = ftruncate(fd, (off_t)g->size) == 0 ? 0 : -errno;
            close(fd);
            if (rc != 0)
                return rc;
            g->torn = false;
        }
    }
    *what = "write the format marker in";
    return fmt_mark(s, what);
}

/* Writes a segment made of memory records to its file. Locked. */
static int flush_seg(struct lane *l, struct seg *g, const uint8_t *buf)
{
    char fn[32];
    seg_fname(g->name, fn);
    g->fd = openat(l->dfd, fn, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (g->fd < 0)
        return -errno;
    return write_full(g->fd, buf, (size_t)g->size);
}

/* Writes the lane's records held in memory (those not acknowledged) to new
 * disk segments of at most segment_bytes (so the bound still evicts them a
 * segment at a time), each named by its first id; they replace the memory
 * segments, the last one is written next. *moved counts the records.
 * Returns 0 or -errno (nothing changed, the files removed). Locked. */
static int lane_flush_mem(struct spool *s, struct lane *l, uint64_t *moved)
{
    size_t first = l->nsegs; /* memory segments are the lane's newest */
    for (size_t k = 0; k < l->nsegs && first == l->nsegs; k++)
        if (l->segs[k]->mem)
            first = k;
    if (first == l->nsegs)
        return 0;
    struct seg **out = NULL, *cur = NULL;
    size_t nout = 0;
    uint8_t *buf = NULL;
    size_t cap = 0;
    uint64_t prev = first > 0 ? l->segs[first - 1]->name : 0, total = 0, recs = 0;
    int rc = 0;
    for (size_t k = first; k < l->nsegs && rc == 0; k++) {
        const struct seg *m = l->segs[k];
        for (size_t j = 0; j < m->n && rc == 0; j++) {
            const struct rec_ix *r = &m->ix[j];
            uint64_t rb = rec_bytes(r);
            if (r->lenf & ACKED)
                continue;
            if (cur && cur->size + rb > s->segment_bytes) { /* full: to its file */
                rc = flush_seg(l, cur, buf);
                out = ch_xrealloc(out, (nout + 1) * sizeof *out);
                out[nout++] = cur;
                cur = NULL;
                if (rc != 0)
                    break;
            }
            if (!cur) { /* named by its first id, after every segment before it */
                prev = r->id > prev ? r->id : prev + 1;
                cur = seg_new(prev, -1);
            }
            if (cur->size + rb > cap) {
                cap = (size_t)(cur->size + rb) * 2;
                buf = ch_xrealloc(buf, cap);
            }
            memcpy(buf + cur->size, m->mem + r->off, (size_t)rb);
            seg_push(cur, r->id, cur->size, r->lenf & LEN_MASK, false);
            cur->ix[cur->n - 1].lenf = r->lenf; /* HANDED stays */
            cur->size += rb;
            total += rb;
            recs++;
        }
    }
    if (cur) {
        if (rc == 0)
            rc = flush_seg(l, cur, buf);
        out = ch_xrealloc(out, (nout + 1) * sizeof *out);
        out[nout++] = cur;
    }
    free(buf);
    if (rc != 0) {
        for (size_t i = 0; i < nout; i++) {
            char fn[32];
            seg_fname(out[i]->name, fn);
            if (out[i]->fd >= 0)
                unlinkat(l->dfd, fn, 0);
            seg_unref(out[i]);
        }
        free(out);
        return rc;
    }
    while (l->nsegs > first)
        lane_remove_seg(s, l, l->nsegs - 1);
    for (size_t i = 0; i < nout; i++)
        lane_push_seg(l, out[i]);
    l->active = nout ? out[nout - 1] : NULL;
    l->disk += total;
    s->disk += total;
    *moved += recs;
    free(out);
    return 0;
}

/* The retry of a degraded spool (background thread, when due; spool_close):
 * reopen, move memory to disk, then prove the disk with a sync and both
 * cursor files. Back on disk if all of it works; else the next retry waits
 * twice as long, up to RETRY_MAX_FACTOR retry intervals. Unlocked. */
static void try_disk(struct spool *s)
{
    lock(s);
    if (!s->degraded) {
        unlock(s);
        return;
    }
    const char *what = "open";
    uint64_t moved = 0;
    int rc = disk_reopen(s, &what);
    for (int i = 0; i < SPOOL_LANES && rc == 0; i++) {
        what = "write to";
        rc = lane_flush_mem(s, &s->lane[i], &moved);
    }
    if (rc == 0) { /* appends go to disk again; a failure below degrades quietly */
        s->degraded = false;
        s->recovering = true;
        s->lane[SPOOL_TELEMETRY].saved_cursor = UINT64_MAX; /* both cursors are written */
        s->lane[SPOOL_ALERT].saved_cursor = UINT64_MAX;
    }
    unlock(s);
    for (int i = 0; i < SPOOL_LANES && rc == 0; i++) {
        what = "fsync";
        rc = lane_sync(s, &s->lane[i], false);
        if (rc == 0) {
            what = "write the cursor in";
            rc = lane_persist(s, &s->lane[i], true);
        }
    }
    lock(s);
    bool back = rc == 0 && !s->degraded;
    if (!back) {
        if (!s->degraded)
            degrade(s, rc, what); /* quiet while recovering */
        bool foreign = rc == CH_ESTATE || rc == CH_EFORMAT;
        if (foreign && !s->foreign_said)
            LOGE(MOD, s->inst, "%s can be read again but cannot %s", s->dir, what);
        s->foreign_said |= foreign;
        int64_t cap = RETRY_MAX_FACTOR * s->retry_ms;
        s->retry_delay = s->retry_delay * 2 < cap ? s->retry_delay * 2 : cap;
        s->retry_at = ch_mono_ms() + s->retry_delay;
        LOGD(MOD, s->inst, "disk still failing (cannot %s %s: %s); next try in %.1f s", what,
             s->dir, ch_strerror(rc ? rc : s->fail_err), (double)s->retry_delay / 1000.0);
    } else {
        int64_t secs = (ch_now_ms() - s->since_ms) / 1000;
        s->fail_err = 0;
        s->recovered_at = ch_mono_ms();
        if (!s->disk_full)
            s->since_ms = 0;
        else
            s->full_check_at = ch_mono_ms();
        LOGW(MOD, s->inst,
             "%s can be written again after %lld s: %" PRIu64
             " records moved from memory to disk; back on disk",
             s->dir, (long long)secs, moved);
    }
    s->recovering = false;
    unlock(s);
}

/* Degraded at close: what memory still holds is lost; logged. Locked. */
static void log_lost(struct spool *s)
{
    for (int i = 0; i < SPOOL_LANES; i++) {
        struct lane *l = &s->lane[i];
        uint64_t n = 0, lo = 0, hi = 0;
        for (size_t k = 0; k < l->nsegs; k++) {
            const struct seg *g = l->segs[k];
            for (size_t j = 0; g->mem && j < g->n; j++) {
                if (g->ix[j].lenf & ACKED)
                    continue;
                n++;
                lo = lo ? lo : g->ix[j].id;
                hi = g->ix[j].id;
            }
        }
        if (n)
            LOGE(MOD, s->inst,
                 "%" PRIu64 " %s records held in memory are lost (ids %" PRIu64 "..%" PRIu64
                 "): %s cannot be written",
                 n, l->name, lo, hi, s->dir);
    }
}

/* ---- open and close -------------------------------------------------------- */

static void spool_free(struct spool *s)
{
    for (int i = 0; i < SPOOL_LANES; i++) {
        struct lane *l = &s->lane[i];
        for (size_t k = 0; k < l->nsegs; k++) {
            l->segs[k]->dead = true;
            seg_unref(l->segs[k]);
        }
        free(l->segs);
        free(l->rd_buf);
        if (l->rd_fd >= 0)
            close(l->rd_fd);
        if (l->dfd >= 0)
            close(l->dfd);
        pthread_cond_destroy(&l->sync_cv);
        pthread_mutex_destroy(&l->cur_mu);
    }
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* releases the flock */
    if (s->dfd >= 0)
        close(s->dfd);
    pthread_cond_destroy(&s->bg_cv);
    pthread_mutex_destroy(&s->lock);
    free(s->dir);
    free(s->inst);
    free(s);
}

/* spool_open() with memory_max, after rc on `*what` (creating, opening or
 * writing the directory): opens what can be read, takes the lock if the lock
 * file exists, and degrades. Returns 0, -EBUSY when another process holds
 * the lock, or CH_EFORMAT (logged) for a spool of another format. */
static int open_degraded(struct spool *s, int rc, const char **what)
{
    if (s->dfd < 0) {
        s->dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->dfd >= 0 && fmt_check(s, true) != 0) /* as spool_open does */
            return CH_EFORMAT;
    }
    if (s->dfd >= 0 && s->lock_fd < 0)
        s->lock_fd = openat(s->dfd, "lock", O_RDONLY | O_CLOEXEC); /* flock needs no write */
    if (s->lock_fd >= 0 && flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            *what = "lock";
            return -EBUSY;
        }
        close(s->lock_fd);
        s->lock_fd = -1;
    }
    degrade(s, rc, *what);
    return 0;
}

/* Fills in the defaults of opts (o) and checks them. Returns 0 or CH_EINVAL
 * after logging what is wrong. */
static int opts_resolve(struct spool_opts *o, const char *inst)
{
    if (o->max_bytes == 0)
        o->max_bytes = DEF_MAX_BYTES;
    if (o->segment_bytes == 0) {
        o->segment_bytes = o->max_bytes / 16;
        if (o->segment_bytes < DEF_SEG_LO)
            o->segment_bytes = DEF_SEG_LO;
        if (o->segment_bytes > DEF_SEG_HI)
            o->segment_bytes = DEF_SEG_HI;
        /* a small bound still gets several segments to evict one by one */
        if (o->segment_bytes > o->max_bytes / 4)
            o->segment_bytes =
                o->max_bytes / 4 < MIN_SEGMENT_BYTES ? MIN_SEGMENT_BYTES : o->max_bytes / 4;
    }
    if (o->commit_interval_ms == 0)
        o->commit_interval_ms = 1000;
    if (o->cursor_interval_ms == 0)
        o->cursor_interval_ms = 10000;
    if (o->cursor_interval_ms < o->commit_interval_ms)
        o->cursor_interval_ms = o->commit_interval_ms;
    if (o->retry_interval_ms == 0)
        o->retry_interval_ms = DEF_RETRY_MS;
    if ((o->memory_bytes && o->memory_bytes < MIN_MEMORY_BYTES) || o->retry_interval_ms < 1 ||
        o->retry_interval_ms > 24 * 3600 * 1000) {
        LOGE(MOD, inst,
             "bad options: memory_bytes %" PRIu64 " (0 or at least %" PRIu64
             "), retry_interval %" PRId64 " ms (1..86400000)",
             o->memory_bytes, MIN_MEMORY_BYTES, o->retry_interval_ms);
        return CH_EINVAL;
    }
    if (o->max_bytes < MIN_MAX_BYTES || o->segment_bytes < MIN_SEGMENT_BYTES ||
        o->segment_bytes > MAX_SEGMENT_BYTES || o->segment_bytes > o->max_bytes ||
        o->commit_interval_ms < 1 || o->commit_interval_ms > 3600 * 1000 ||
        o->cursor_interval_ms > 24 * 3600 * 1000) {
        LOGE(MOD, inst,
             "bad options: max_bytes %" PRIu64 " (>= %" PRIu64 "), segment_bytes %" PRIu64
             " (%" PRIu64 "..min(max_bytes, %" PRIu64 ")), commit_interval %" PRId64
             " ms (1..3600000), cursor_interval %" PRId64 " ms (up to 86400000)",
             o->max_bytes, MIN_MAX_BYTES, o->segment_bytes, MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES,
             o->commit_interval_ms, o->cursor_interval_ms);
        return CH_EINVAL;
    }
    return 0;
}

int spool_open(const char *dir, const struct spool_opts *opts, struct spool **out)
{
    if (!dir || !*dir || !out)
        return CH_EINVAL;
    *out = NULL;
    struct spool_opts o = {0};
    if (opts)
        o = *opts;
    const char *inst = o.name ? o.name : dir;
    if (opts_resolve(&o, inst) != 0)
        return CH_EINVAL;

    struct spool *s = ch_xcalloc(1, sizeof *s);
    s->dir = ch_xstrdup(dir);
    s->inst = ch_xstrdup(inst);
    s->dfd = s->lock_fd = -1;
    s->max_bytes = o.max_bytes;
    s->segment_bytes = o.segment_bytes;
    s->commit_ms = o.commit_interval_ms;
    s->cursor_ms = o.cursor_interval_ms;
    s->step_bytes = o.segment_bytes / 16 > MIN_STEP_BYTES ? o.segment_bytes / 16 : MIN_STEP_BYTES;
    s->memory_max = o.memory_bytes;
    s->mem_seg_bytes = o.memory_bytes / 16;
    if (s->mem_seg_bytes < MEM_SEG_LO)
        s->mem_seg_bytes = MEM_SEG_LO;
    if (s->mem_seg_bytes > MEM_SEG_HI)
        s->mem_seg_bytes = MEM_SEG_HI;
    s->retry_ms = o.retry_interval_ms;
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->bg_cv, &ca);
    pthread_condattr_destroy(&ca);
    for (int i = 0; i < SPOOL_LANES; i++) {
        struct lane *l = &s->lane[i];
        l->which = (enum spool_lane)i;
        l->name = lane_names[i];
        l->dfd = l->rd_fd = -1;
        l->next_id = 1;
        pthread_cond_init(&l->sync_cv, NULL);
        pthread_mutex_init(&l->cur_mu, NULL);
    }

    int rc = 0;
    const char *what = "create";
    bool made_root = false;
    if (mkdir(dir, 0750) == 0)
        made_root = true;
    else if (errno != EEXIST)
        rc = -errno;
    if (rc == 0) {
        what = "open";
        s->dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->dfd < 0)
            rc = -errno;
    }
    /* before anything is written to it, the lock file included */
    if (rc == 0 && !made_root && fmt_check(s, true) != 0) {
        spool_free(s);
        return CH_EFORMAT;
    }
    if (rc == 0) {
        /* also the writability check: a read-only or foreign directory fails here */
        what = "write to";
        s->lock_fd = openat(s->dfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0640);
        if (s->lock_fd < 0)
            rc = -errno;
    }
    if (rc == 0 && flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
        what = "lock";
    }
    if (rc == 0) {
        /* a spool without a marker is a format-1 spool whatever happens:
         * failing to mark it is logged and tried again at the next open */
        const char *fwhat = "";
        int frc = fmt_mark(s, &fwhat);
        if (frc == CH_EFORMAT) {
            spool_free(s);
            return frc;
        }
        if (frc != 0)
            LOGW(MOD, inst, "cannot %s %s/" FMT_FILE ": %s; marked at the next open", fwhat, dir,
                 ch_strerror(frc));
    }
    if (rc != 0 && rc != -EBUSY && s->memory_max)
        rc = open_degraded(s, rc, &what);
    if (rc == CH_EFORMAT) {
        spool_free(s);
        return rc;
    }
    if (rc != 0) {
        LOGE(MOD, inst, "cannot %s spool directory %s: %s%s", what, dir, ch_strerror(rc),
             rc == -EBUSY ? " (in use by another process or spool)" : "");
        spool_free(s);
        return rc;
    }
    int64_t t0 = ch_mono_ms();
    bool created_any = made_root;
    for (int i = 0; i < SPOOL_LANES && rc == 0 && s->dfd >= 0; i++) {
        bool created;
        struct lane *l = &s->lane[i];
        rc = lane_recover(s, l, &created, s->degraded);
        created_any |= created;
        if (rc != 0)
            LOGE(MOD, inst, "cannot open spool lane %s/%s: %s", dir, lane_names[i],
                 ch_strerror(rc));
        l->scanned = rc == 0;
        if (rc != 0 && s->memory_max) {
            if (l->dfd >= 0)
                close(l->dfd);
            l->dfd = -1;
            degrade(s, rc, "open a lane directory in");
            rc = 0;
        }
    }
    for (int i = 0; i < SPOOL_LANES; i++)
        if (!s->lane[i].scanned)
            LOGE(MOD, inst,
                 "%s/%s cannot be read: %s ids start at 1; whatever it holds is delivered after "
                 "a restart once it can be read",
                 dir, lane_names[i], lane_names[i]);
    if (rc == 0 && !s->degraded && created_any && fsync_retry(s->dfd, false) != 0) {
        rc = -errno;
        if (s->memory_max) {
            degrade(s, rc, "fsync");
            rc = 0;
        }
    }
    if (rc == 0) {
        rc = -pthread_create(&s->bg, NULL, bg_main, s);
        s->bg_started = rc == 0;
    }
    if (rc != 0) {
        spool_free(s);
        return rc;
    }
    LOGD(MOD, inst, "opened %s in %" PRId64 " ms: %" PRIu64 " bytes, max %" PRIu64, dir,
         ch_mono_ms() - t0, s->disk, s->max_bytes);
    *out = s;
    return 0;
}

void spool_close(struct spool *s)
{
    if (!s)
        return;
    if (s->bg_started) {
        lock(s);
        s->bg_stop = true;
        pthread_cond_signal(&s->bg_cv);
        unlock(s);
        pthread_join(s->bg, NULL);
    }
    try_disk(s); /* degraded: one last chance for what memory holds */
    lock(s);
    if (s->degraded)
        log_lost(s);
    unlock(s);
    sync_all(s, true);
    spool_free(s);
}
