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
 *    0  u32 magic   A7 'S' 'P' '1'   (version 1 of the format)
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
 *   truncated. The spool always opens.
 *
 * MEMORY: 16 bytes per record held (an index of id, offset, length and an
 * acknowledged bit), about 0.6 % of the disk bytes for 2.5 KB telemetry
 * batches and 4 % for 400-byte alerts. */
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
    uint64_t name;   /* id in the file name */
    int fd;          /* writer/sync fd, -1 when closed */
    uint64_t size;   /* bytes of whole records (the file's length) */
    uint64_t synced; /* bytes known durable */
    bool dir_synced; /* the directory entry is durable */
    bool dead;       /* no longer part of the lane (deleted or evicted) */
    bool io_busy;    /* the syncer uses fd without the lock */
    int sync_err;    /* sticky: an fsync failed (invariant 4) */
    unsigned refs;   /* lane membership, waiting appenders, syncer */
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
    uint64_t disk; /* sum of segment sizes */
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
};

static const char *const lane_names[SPOOL_LANES] = {"alert", "telemetry"};

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
    free(g);
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
    char fn[32];
    seg_fname(g->name, fn);
    if (unlinkat(l->dfd, fn, 0) != 0 && errno != ENOENT)
        io_error(s, l, -errno, "unlink", fn);
    memmove(&l->segs[i], &l->segs[i + 1], (l->nsegs - i - 1) * sizeof *l->segs);
    l->nsegs--;
    l->disk -= g->size;
    s->disk -= g->size;
    if (l->active == g)
        l->active = NULL;
    if (l->rd_fd >= 0 && l->rd_name == g->name) {
        close(l->rd_fd);
        l->rd_fd = -1;
    }
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

/* Evicts one of the lane's segments holding bytes. Alerts: the oldest.
 * Telemetry: the oldest (not being written) whose records were never handed
 * out unacknowledged, else the oldest. Its unacknowledged
 * records are dropped, logged and counted. Preferring records that were
 * never sent keeps the count exact: a record sent once may have arrived (its
 * acknowledgement lost with the connection), and evicting it would count as
 * lost what the receiver has. Records handed out are few (the reader's
 * window), so at most a segment or two is passed over. Locked. */
static void lane_evict_oldest(struct spool *s, struct lane *l, const char *why)
{
    size_t i = l->nsegs, first = l->nsegs;
    for (size_t k = 0; k < l->nsegs; k++) {
        if (l->segs[k]->size == 0)
            continue;
        if (first == l->nsegs)
            first = k;
        /* never the segment being written, unless it is the oldest: its ids
         * are the lane's newest, and after a power cut they would be
         * handed out again if nothing newer were left on disk */
        if (l->which != SPOOL_TELEMETRY ||
            (l->segs[k] != l->active && !seg_unconfirmed(l->segs[k]))) {
            i = k;
            break;
        }
    }
    if (first == l->nsegs)
        return;
    if (i == l->nsegs)
        i = first;
    struct seg *g = l->segs[i];
    uint64_t recs = 0, bytes = 0, lo = 0, hi = 0, sent = 0;
    for (size_t k = 0; k < g->n; k++) {
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
    uint64_t last = seg_last_id(g);
    if (recs)
        LOGW(MOD, s->inst,
             "dropped %" PRIu64 " %s records (ids %" PRIu64 "..%" PRIu64 ", %" PRIu64
             " bytes; %" PRIu64 " of them sent but never acknowledged): %s",
             recs, l->name, lo, hi, bytes, sent, why);
    lane_remove_seg(s, l, i);
    /* when no segment before it holds records, the cursor may jump
     * (invariant 5); otherwise it moves once those are acknowledged */
    if (i == first && last > l->cursor)
        l->cursor = last;
    lane_advance_cursor(l);
    if (l->which == SPOOL_ALERT) {
        s->kick = true;
        pthread_cond_signal(&s->bg_cv);
    }
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
        if (t->disk > 0)
            lane_evict_oldest(s, t, why);
        else if (which == SPOOL_ALERT && a->disk > 0)
            lane_evict_oldest(s, a, why);
        else
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
 * moved), then deletes segments the cursor has passed. Unlocked. */
static int lane_persist(struct spool *s, struct lane *l, bool force)
{
    pthread_mutex_lock(&l->cur_mu);
    lock(s);
    uint64_t c = l->cursor, n = l->next_id;
    bool need = c != l->saved_cursor || (force && n != l->saved_next);
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
    lane_delete_done(s, l, rc == 0 ? upto : l->cursor);
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

/* Runs a group-commit round for the lane, waiting for one already running. */
static int lane_sync(struct spool *s, struct lane *l)
{
    lock(s);
    while (l->syncing)
        pthread_cond_wait(&l->sync_cv, &s->lock);
    l->syncing = true;
    int rc = lane_sync_locked(s, l);
    l->syncing = false;
    pthread_cond_broadcast(&l->sync_cv);
    /* a segment whose earlier fsync failed holds data of unknown durability */
    for (size_t i = 0; rc == 0 && i < l->nsegs; i++)
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

/* Frees disk space after ENOSPC by evicting the oldest telemetry segment that
 * is not the one being written. True if something was evicted. Locked. */
static bool evict_for_disk(struct spool *s, const struct seg *writing)
{
    struct lane *t = &s->lane[SPOOL_TELEMETRY];
    for (size_t i = 0; i < t->nsegs; i++) {
        if (t->segs[i]->size == 0)
            continue;
        if (t->segs[i] == writing)
            return false;
        lane_evict_oldest(s, t, "disk full (ENOSPC)");
        return true;
    }
    return false;
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
    int rc = make_room(s, which, need);
    if (rc != 0) {
        /* refused, but numbered: its id is used up, so the loss shows as a
         * gap in the ids like an eviction, not as nothing at all */
        uint64_t lost = l->next_id++;
        l->st.dropped_records++;
        l->st.dropped_bytes += len;
        l->st.last_error = rc;
        unsigned long sup;
        if (rl_allow(&l->rl_drop, &sup))
            LOGW(MOD, s->inst,
                 "dropped %s record %" PRIu64 " of %zu bytes: alerts fill max_bytes %" PRIu64
                 " (%lu more not logged)",
                 l->name, lost, len, s->max_bytes, sup);
        if (id_out)
            *id_out = lost;
        unlock(s);
        return rc;
    }
    struct seg *g;
    uint64_t id;
    for (;;) {
        g = l->active;
        if (g && g->size > 0 && g->size + need > s->segment_bytes) {
            l->active = NULL; /* roll: the old one is synced by the next round */
            seg_maybe_close(l, g);
        }
        if (!l->active && (rc = lane_new_segment(s, l)) != 0) {
            if (rc == -ENOSPC && evict_for_disk(s, NULL))
                continue;
            unlock(s);
            return rc;
        }
        g = l->active;
        id = l->next_id;
        uint8_t h[HDR_LEN], t[TRL_LEN];
        memset(h, 0, sizeof h);
        put32(h, REC_MAGIC);
        h[4] = type;
        put16(h + 6, 0);
        put32(h + 8, (uint32_t)len);
        put64(h + 12, id);
        put64(h + 20, (uint64_t)ch_now_ms());
        put32(h + 28, crc(0, h, 28));
        put32(t, crc(crc(0, h, HDR_LEN), data, len));
        struct iovec iov[3] = {{h, HDR_LEN}, {(void *)(uintptr_t)data, len}, {t, TRL_LEN}};
        rc = pwritev_full(g->fd, iov, 3, (off_t)g->size);
        if (rc == 0)
            break;
        /* undo a partial write so the segment stays a clean run of records */
        if (ftruncate(g->fd, (off_t)g->size) != 0) {
            l->active = NULL; /* torn bytes stay: recovery skips them */
            seg_maybe_close(l, g);
        }
        if (rc == -ENOSPC && evict_for_disk(s, g))
            continue;
        char fn[32];
        seg_fname(g->name, fn);
        io_error(s, l, rc, "write to", fn);
        unlock(s);
        return rc;
    }
    seg_push(g, id, g->size, (uint32_t)len, false);
    g->size += need;
    l->disk += need;
    s->disk += need;
    l->next_id++;
    l->st.appended_records++;
    l->st.appended_bytes += len;
    l->st.pending_records++;
    l->st.pending_bytes += len;
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
            rc = g->sync_err;
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
        int r = lane_sync(s, &s->lane[i]);
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
    return s ? sync_all(s, false) : CH_EINVAL;
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
    size_t len = r->lenf & LEN_MASK;
    size_t total = HDR_LEN + len + TRL_LEN;
    if (total > l->rd_cap) {
        l->rd_cap = total < 4096 ? 4096 : total;
        l->rd_buf = ch_xrealloc(l->rd_buf, l->rd_cap);
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
        out->lane[i].next_id = l->next_id;
        out->lane[i].cursor = l->cursor;
    }
    out->disk_bytes = s->disk;
    out->max_bytes = s->max_bytes;
    out->segment_bytes = s->segment_bytes;
    unlock(s);
}

/* ---- the background thread ------------------------------------------------ */

/* Every commit interval: fsync telemetry written since the last round.
 * Every cursor interval: persist the telemetry cursor if it moved (two
 * fsyncs and a new inode: in live operation, with an ack every second, doing
 * it every second would write twice as much as the data itself; measured by
 * bench_spool). At once when kicked: persist the alert cursor. Sleeps
 * otherwise: an idle spool does no I/O (SD cards). */
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
        if (now >= due) {
            bool cursors = now >= cursor_due;
            unlock(s);
            lane_sync(s, &s->lane[SPOOL_TELEMETRY]);
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
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t wait = due - now;
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
 * last), used to count what a damaged tail held. Returns the length of the
 * valid prefix (the caller truncates the rest).
 *
 * Damage is skipped up to the next whole valid record with a higher id; the
 * ids missing across it say how many records it held (a record whose header
 * is intact but whose payload fails the CRC is named in the log). Damage with
 * no valid record after it is a tail. */
static uint64_t seg_scan(struct spool *s, struct lane *l, struct seg *g, const uint8_t *buf,
                         uint64_t size, uint64_t *prev, uint64_t next_name)
{
    char fn[32];
    seg_fname(g->name, fn);
    uint64_t off = 0, end = 0, budget = 16 * size + (4u << 20);
    uint64_t expect = g->name > *prev ? g->name : *prev + 1; /* id the next record should have */
    struct hdr h;
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

/* Recovers one lane (see "WHAT A CRASH DOES"). Returns 0 or -errno when the
 * lane directory itself is unusable. *created tells whether it was new. */
static int lane_recover(struct spool *s, struct lane *l, bool *created)
{
    *created = false;
    if (mkdirat(s->dfd, l->name, 0750) == 0)
        *created = true;
    else if (errno != EEXIST)
        return -errno;
    l->dfd = openat(s->dfd, l->name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (l->dfd < 0)
        return -errno;

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
        int fd = openat(l->dfd, fn, O_RDWR | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0) {
            LOGE(MOD, s->inst, "cannot open %s/%s/%s: %s; left alone", s->dir, l->name, fn,
                 ch_strerror(-errno));
            if (fd >= 0)
                close(fd);
            continue;
        }
        if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > SEG_FILE_MAX) {
            LOGE(MOD, s->inst, "%s/%s/%s is not a segment (%s); left alone", s->dir, l->name, fn,
                 S_ISREG(st.st_mode) ? "too large" : "not a file");
            close(fd);
            continue;
        }
        struct seg *g = seg_new(names[i], -1);
        uint64_t size = (uint64_t)st.st_size, end = 0;
        if (size > 0) {
            void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
            if (map == MAP_FAILED) {
                LOGE(MOD, s->inst, "cannot map %s/%s/%s: %s; left alone", s->dir, l->name, fn,
                     ch_strerror(-errno));
                close(fd);
                seg_unref(g);
                continue;
            }
            end = seg_scan(s, l, g, map, size, &prev, i + 1 < nn ? names[i + 1] : 0);
            munmap(map, (size_t)size);
        }
        if (end < size) {
            if (ftruncate(fd, (off_t)end) != 0 || fsync_retry(fd, true) != 0)
                LOGE(MOD, s->inst, "cannot truncate %s/%s/%s: %s", s->dir, l->name, fn,
                     ch_strerror(-errno));
            changed = true;
        }
        close(fd);
        g->size = g->synced = end;
        g->dir_synced = true;
        lane_push_seg(l, g);
        l->disk += end;
        s->disk += end;
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
    lane_delete_done(s, l, l->cursor);
    changed |= l->nsegs != before;
    if (changed && fsync_retry(l->dfd, false) == 0)
        l->st.fsyncs++;
    /* record the cursor and next id now, so that a missing cursor is always
     * abnormal. Failing (disk full) is not fatal: it is retried later. */
    l->saved_cursor = c_acked;
    l->saved_next = c_next;
    if (cst != CUR_OK) {
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

int spool_open(const char *dir, const struct spool_opts *opts, struct spool **out)
{
    if (!dir || !*dir || !out)
        return CH_EINVAL;
    *out = NULL;
    struct spool_opts o = {0};
    if (opts)
        o = *opts;
    const char *inst = o.name ? o.name : dir;
    if (o.max_bytes == 0)
        o.max_bytes = DEF_MAX_BYTES;
    if (o.segment_bytes == 0) {
        o.segment_bytes = o.max_bytes / 16;
        if (o.segment_bytes < DEF_SEG_LO)
            o.segment_bytes = DEF_SEG_LO;
        if (o.segment_bytes > DEF_SEG_HI)
            o.segment_bytes = DEF_SEG_HI;
        /* a small bound still gets several segments to evict one by one */
        if (o.segment_bytes > o.max_bytes / 4)
            o.segment_bytes =
                o.max_bytes / 4 < MIN_SEGMENT_BYTES ? MIN_SEGMENT_BYTES : o.max_bytes / 4;
    }
    if (o.commit_interval_ms == 0)
        o.commit_interval_ms = 1000;
    if (o.cursor_interval_ms == 0)
        o.cursor_interval_ms = 10000;
    if (o.cursor_interval_ms < o.commit_interval_ms)
        o.cursor_interval_ms = o.commit_interval_ms;
    if (o.max_bytes < MIN_MAX_BYTES || o.segment_bytes < MIN_SEGMENT_BYTES ||
        o.segment_bytes > MAX_SEGMENT_BYTES || o.segment_bytes > o.max_bytes ||
        o.commit_interval_ms < 1 || o.commit_interval_ms > 3600 * 1000 ||
        o.cursor_interval_ms > 24 * 3600 * 1000) {
        LOGE(MOD, inst,
             "bad options: max_bytes %" PRIu64 " (>= %" PRIu64 "), segment_bytes %" PRIu64
             " (%" PRIu64 "..min(max_bytes, %" PRIu64 ")), commit_interval %" PRId64
             " ms (1..3600000), cursor_interval %" PRId64 " ms (up to 86400000)",
             o.max_bytes, MIN_MAX_BYTES, o.segment_bytes, MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES,
             o.commit_interval_ms, o.cursor_interval_ms);
        return CH_EINVAL;
    }

    struct spool *s = ch_xcalloc(1, sizeof *s);
    s->dir = ch_xstrdup(dir);
    s->inst = ch_xstrdup(inst);
    s->dfd = s->lock_fd = -1;
    s->max_bytes = o.max_bytes;
    s->segment_bytes = o.segment_bytes;
    s->commit_ms = o.commit_interval_ms;
    s->cursor_ms = o.cursor_interval_ms;
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
    if (rc != 0) {
        LOGE(MOD, inst, "cannot %s spool directory %s: %s%s", what, dir, ch_strerror(rc),
             rc == -EBUSY ? " (in use by another process or spool)" : "");
        spool_free(s);
        return rc;
    }
    int64_t t0 = ch_mono_ms();
    bool created_any = made_root;
    for (int i = 0; i < SPOOL_LANES && rc == 0; i++) {
        bool created;
        rc = lane_recover(s, &s->lane[i], &created);
        created_any |= created;
        if (rc != 0)
            LOGE(MOD, inst, "cannot open spool lane %s/%s: %s", dir, lane_names[i],
                 ch_strerror(rc));
    }
    if (rc == 0 && created_any && fsync_retry(s->dfd, false) != 0)
        rc = -errno;
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
    sync_all(s, true);
    spool_free(s);
}
