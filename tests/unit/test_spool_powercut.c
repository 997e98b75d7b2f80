/* Power cuts, simulated a few hundred times.
 *
 * Each trial runs a live spool: two threads append alerts (each counts as
 * raised once spool_append returned 0), one appends telemetry, one reads both
 * lanes with several records in flight and acknowledges them out of order,
 * sometimes starting over from the cursor as after a reconnect. At a random
 * moment the test takes the image a power cut could leave behind, while the
 * writers keep going:
 *
 *  - every file keeps at least the bytes an fdatasync/fsync made durable
 *    (tracked by interposing those calls) and is cut anywhere at or above
 *    that; the part that was never synced may also come back with a run of
 *    zeros in it or with garbage after it;
 *  - a name created or replaced since its directory was last fsync'd may be
 *    missing (a new segment, the renamed cursor); a file deleted or replaced
 *    since then may come back with its last durable content (a deleted
 *    segment, the previous cursor).
 *
 * Then the image is opened as a spool. It must open; every record it returns
 * must carry an intact payload (the payload holds its own CRC, checked here
 * independently of the spool's); ids must increase; every alert raised before
 * the cut and not yet acknowledged must come back with its id and payload;
 * the next ids must be above everything seen.
 *
 * The trial directories live in /dev/shm when there is one: the durability
 * model is the test's, not the file system's, so tmpfs costs nothing in
 * realism and keeps 300+ trials within seconds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "err.h"
#include "log.h"
#include "spool.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <zlib.h>

#define MIN_TRIALS 300
#define MAX_TRIALS 2000
#define BUDGET_MS  15000 /* stop adding trials after this, once MIN_TRIALS ran */

/* ---- the durability tracker (interposed syscalls) ------------------------ */

struct durable {
    dev_t dev;
    ino_t ino;
    uint64_t len;
};
struct link {
    char *path;
    ino_t ino;
};
struct ghost {
    char *path;
    uint8_t *data;
    size_t len;
    uint64_t gen;
};

static pthread_mutex_t tk = PTHREAD_MUTEX_INITIALIZER;
static char live[4096]; /* tracked tree; empty: track nothing */
static size_t live_len;
static struct durable *durs;
static size_t ndurs, capdurs;
static struct link *links;
static size_t nlinks, caplinks;
static struct ghost *ghosts;
static size_t nghosts, capghosts;
static uint64_t ghost_gen;
/* directory listings are applied in the order they were taken: when two
 * fsyncs of a directory overlap, the older listing must not undo the newer */
struct dirgen {
    char *path;
    uint64_t gen;
};
static struct dirgen *dirgens;
static size_t ndirgens;
static uint64_t list_gen;

static bool dirgen_newer(const char *path, uint64_t gen)
{
    for (size_t i = 0; i < ndirgens; i++) {
        if (strcmp(dirgens[i].path, path) == 0) {
            if (gen < dirgens[i].gen)
                return false;
            dirgens[i].gen = gen;
            return true;
        }
    }
    dirgens = ch_xrealloc(dirgens, (ndirgens + 1) * sizeof *dirgens);
    dirgens[ndirgens++] = (struct dirgen){ch_xstrdup(path), gen};
    return true;
}

static bool tracked(const char *path)
{
    return live_len && strncmp(path, live, live_len) == 0 &&
           (path[live_len] == '/' || path[live_len] == 0);
}

static bool fd_path(int fd, char *out, size_t cap)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(p, out, cap - 1);
    if (n <= 0)
        return false;
    out[n] = 0;
    return true;
}

static bool at_path(int dirfd, const char *name, char *out, size_t cap)
{
    if (name[0] == '/')
        return snprintf(out, cap, "%s", name) < (int)cap;
    char d[4096];
    if (!fd_path(dirfd, d, sizeof d))
        return false;
    return snprintf(out, cap, "%s/%s", d, name) < (int)cap;
}

static struct durable *dur_find(dev_t dev, ino_t ino)
{
    for (size_t i = 0; i < ndurs; i++)
        if (durs[i].dev == dev && durs[i].ino == ino)
            return &durs[i];
    return NULL;
}

static void dur_set(dev_t dev, ino_t ino, uint64_t len)
{
    struct durable *d = dur_find(dev, ino);
    if (!d) {
        if (ndurs == capdurs) {
            capdurs = capdurs ? capdurs * 2 : 64;
            durs = ch_xrealloc(durs, capdurs * sizeof *durs);
        }
        d = &durs[ndurs++];
        *d = (struct durable){dev, ino, 0};
    }
    if (len > d->len)
        d->len = len;
}

static void dur_forget(dev_t dev, ino_t ino)
{
    struct durable *d = dur_find(dev, ino);
    if (d)
        *d = durs[--ndurs];
}

static uint64_t dur_get(dev_t dev, ino_t ino)
{
    struct durable *d = dur_find(dev, ino);
    return d ? d->len : 0;
}

static struct link *link_find(const char *path)
{
    for (size_t i = 0; i < nlinks; i++)
        if (strcmp(links[i].path, path) == 0)
            return &links[i];
    return NULL;
}

static bool parent_is(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    return strncmp(path, dir, n) == 0 && path[n] == '/' && !strchr(path + n + 1, '/');
}

static uint8_t *slurp(const char *path, size_t *len)
{
    *len = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return NULL;
    struct stat st;
    fstat(fd, &st);
    size_t cap = (size_t)st.st_size;
    uint8_t *b = ch_xmalloc(cap ? cap : 1);
    while (*len < cap) {
        ssize_t n = pread(fd, b + *len, cap - *len, (off_t)*len);
        if (n <= 0)
            break;
        *len += (size_t)n;
    }
    close(fd);
    return b;
}

/* A file about to disappear (unlink, or replaced by rename): if its name was
 * durable, a power cut may bring it back with its durable content. Locked. */
static void ghost_add(const char *path)
{
    struct stat st;
    struct link *lk = link_find(path);
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return;
    if (lk && lk->ino == st.st_ino) {
        size_t len;
        uint8_t *data = slurp(path, &len);
        uint64_t d = dur_get(st.st_dev, st.st_ino);
        if (len > d)
            len = (size_t)d;
        if (nghosts == capghosts) {
            capghosts = capghosts ? capghosts * 2 : 16;
            ghosts = ch_xrealloc(ghosts, capghosts * sizeof *ghosts);
        }
        ghosts[nghosts++] = (struct ghost){ch_xstrdup(path), data, len, ghost_gen++};
    }
    dur_forget(st.st_dev, st.st_ino); /* the inode number may be reused */
}

static int track_sync(int fd, bool data_only)
{
    char path[4096];
    bool t = fd_path(fd, path, sizeof path) && tracked(path);
    struct stat st;
    if (fstat(fd, &st) != 0)
        t = false;
    /* what a sync covers is fixed when it starts */
    char **names = NULL;
    ino_t *inos = NULL;
    size_t nn = 0;
    uint64_t gen = 0, lgen = 0;
    if (t && S_ISDIR(st.st_mode)) {
        pthread_mutex_lock(&tk);
        gen = ghost_gen;
        lgen = ++list_gen;
        pthread_mutex_unlock(&tk);
        DIR *d = opendir(path);
        struct dirent *de;
        while (d && (de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.')
                continue;
            names = ch_xrealloc(names, (nn + 1) * sizeof *names);
            inos = ch_xrealloc(inos, (nn + 1) * sizeof *inos);
            size_t n = strlen(path) + strlen(de->d_name) + 2;
            names[nn] = ch_xmalloc(n);
            snprintf(names[nn], n, "%s/%s", path, de->d_name);
            inos[nn++] = de->d_ino;
        }
        if (d)
            closedir(d);
    }
    int r = (int)syscall(data_only ? SYS_fdatasync : SYS_fsync, fd);
    if (r == 0 && t) {
        pthread_mutex_lock(&tk);
        if (S_ISDIR(st.st_mode) && dirgen_newer(path, lgen)) {
            for (size_t i = 0; i < nlinks;) {
                if (parent_is(links[i].path, path)) {
                    free(links[i].path);
                    links[i] = links[--nlinks];
                } else {
                    i++;
                }
            }
            for (size_t i = 0; i < nn; i++) {
                if (nlinks == caplinks) {
                    caplinks = caplinks ? caplinks * 2 : 64;
                    links = ch_xrealloc(links, caplinks * sizeof *links);
                }
                links[nlinks++] = (struct link){names[i], inos[i]};
                names[i] = NULL;
            }
            for (size_t i = 0; i < nghosts;) {
                if (ghosts[i].gen < gen && parent_is(ghosts[i].path, path)) {
                    free(ghosts[i].path);
                    free(ghosts[i].data);
                    ghosts[i] = ghosts[--nghosts];
                } else {
                    i++;
                }
            }
        } else if (!S_ISDIR(st.st_mode)) {
            dur_set(st.st_dev, st.st_ino, (uint64_t)st.st_size);
        }
        pthread_mutex_unlock(&tk);
    }
    for (size_t i = 0; i < nn; i++)
        free(names[i]);
    free(names);
    free(inos);
    return r;
}

int fdatasync(int fd)
{
    return track_sync(fd, true);
}

int fsync(int fd)
{
    return track_sync(fd, false);
}

int unlinkat(int dirfd, const char *name, int flags)
{
    char path[4096];
    if (!(flags & AT_REMOVEDIR) && at_path(dirfd, name, path, sizeof path) && tracked(path)) {
        pthread_mutex_lock(&tk);
        ghost_add(path);
        pthread_mutex_unlock(&tk);
    }
    return (int)syscall(SYS_unlinkat, dirfd, name, flags);
}

int renameat(int olddirfd, const char *oldname, int newdirfd, const char *newname)
{
    char path[4096];
    if (at_path(newdirfd, newname, path, sizeof path) && tracked(path)) {
        pthread_mutex_lock(&tk);
        ghost_add(path);
        pthread_mutex_unlock(&tk);
    }
    return (int)syscall(SYS_renameat, olddirfd, oldname, newdirfd, newname);
}

static void tracker_reset(const char *dir)
{
    pthread_mutex_lock(&tk);
    for (size_t i = 0; i < nlinks; i++)
        free(links[i].path);
    for (size_t i = 0; i < nghosts; i++) {
        free(ghosts[i].path);
        free(ghosts[i].data);
    }
    for (size_t i = 0; i < ndirgens; i++)
        free(dirgens[i].path);
    free(dirgens);
    dirgens = NULL;
    ndurs = nlinks = nghosts = ndirgens = 0;
    snprintf(live, sizeof live, "%s", dir ? dir : "");
    live_len = strlen(live);
    pthread_mutex_unlock(&tk);
}

static void tracker_free(void)
{
    tracker_reset(NULL);
    free(durs);
    free(links);
    free(ghosts);
    durs = NULL;
    links = NULL;
    ghosts = NULL;
    capdurs = caplinks = capghosts = 0;
}

/* ---- random numbers (per thread state, seeded per trial) ------------------ */

static uint64_t rnd(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* ---- payloads that check themselves ----------------------------------------- */

/* magic "PCUT", lane, writer, seq (u32), body length (u32), crc32 of the
 * first 12 bytes and the body, then the body */
#define PL_HDR 16

static size_t make_payload(uint8_t *p, int lane, int writer, uint32_t seq, size_t body)
{
    memcpy(p, "PCUT", 4);
    p[4] = (uint8_t)lane;
    p[5] = (uint8_t)writer;
    memcpy(p + 6, &seq, 4);
    uint16_t bl = (uint16_t)body;
    memcpy(p + 10, &bl, 2);
    uint64_t x = ((uint64_t)seq << 16 | (uint64_t)writer << 8 | (uint64_t)lane) + 1;
    for (size_t i = 0; i < body; i++)
        p[PL_HDR + i] = (uint8_t)rnd(&x);
    uint32_t c = (uint32_t)crc32(crc32(0, p, 12), p + PL_HDR, (uInt)body);
    memcpy(p + 12, &c, 4);
    return PL_HDR + body;
}

static bool payload_ok(const uint8_t *p, size_t len, int lane, int *writer, uint32_t *seq)
{
    if (len < PL_HDR || memcmp(p, "PCUT", 4) != 0 || p[4] != lane)
        return false;
    uint16_t bl;
    memcpy(&bl, p + 10, 2);
    if (len != PL_HDR + (size_t)bl)
        return false;
    uint32_t c;
    memcpy(&c, p + 12, 4);
    if (c != (uint32_t)crc32(crc32(0, p, 12), p + PL_HDR, bl))
        return false;
    *writer = p[5];
    memcpy(seq, p + 6, 4);
    return true;
}

/* ---- one trial -------------------------------------------------------------- */

#define MAX_IDS 200000

struct trial {
    struct spool *s;
    atomic_bool stop;
    uint64_t seed;
    /* under tk: alerts raised (id -> writer << 32 | seq), ids acked */
    uint64_t *raised;
    uint8_t *acked[SPOOL_LANES];
    uint64_t max_raised;
    bool cut; /* under tk: the image is taken; later raises and acks do not count */
    atomic_int errors;
};

struct writer {
    struct trial *t;
    int lane, id;
};

static void *writer_main(void *p)
{
    struct writer *w = p;
    struct trial *t = w->t;
    uint64_t x = t->seed * 31 + (uint64_t)w->id * 7 + 1;
    uint8_t buf[PL_HDR + 4000];
    for (uint32_t seq = 1; !atomic_load(&t->stop); seq++) {
        size_t body = w->lane == SPOOL_ALERT ? 16 + rnd(&x) % 600 : 100 + rnd(&x) % 3000;
        size_t len = make_payload(buf, w->lane, w->id, seq, body);
        uint64_t id;
        int rc = spool_append(t->s, (enum spool_lane)w->lane, (uint8_t)w->lane, buf, len, &id);
        if (rc != 0) {
            atomic_fetch_add(&t->errors, 1);
            continue;
        }
        if (w->lane == SPOOL_ALERT && id < MAX_IDS) {
            pthread_mutex_lock(&tk);
            if (!t->cut)
                t->raised[id] = (uint64_t)w->id << 32 | seq;
            if (!t->cut && id > t->max_raised)
                t->max_raised = id;
            pthread_mutex_unlock(&tk);
        }
        if (rnd(&x) % 2 == 0)
            usleep((useconds_t)(rnd(&x) % 400));
    }
    return NULL;
}

static void *reader_main(void *p)
{
    struct trial *t = p;
    uint64_t x = t->seed * 17 + 3;
    uint64_t after[SPOOL_LANES] = {0, 0};
    uint64_t fl[SPOOL_LANES][16];
    int nfl[SPOOL_LANES] = {0, 0};
    while (!atomic_load(&t->stop)) {
        bool idle = true;
        for (int lane = 0; lane < SPOOL_LANES; lane++) {
            struct spool_record r;
            while (nfl[lane] < 16 &&
                   spool_next(t->s, (enum spool_lane)lane, after[lane], &r) == 1) {
                int wr;
                uint32_t seq;
                if (!payload_ok(r.data, r.len, lane, &wr, &seq))
                    atomic_fetch_add(&t->errors, 1);
                after[lane] = r.id;
                fl[lane][nfl[lane]++] = r.id;
                idle = false;
            }
            /* PUBACKs: some of those in flight, in any order */
            for (int n = (int)(rnd(&x) % 12); n > 0 && nfl[lane]; n--) {
                int k = (int)(rnd(&x) % (uint64_t)nfl[lane]);
                uint64_t id = fl[lane][k];
                fl[lane][k] = fl[lane][--nfl[lane]];
                if (id < MAX_IDS) {
                    pthread_mutex_lock(&tk);
                    if (!t->cut)
                        t->acked[lane][id] = 1; /* before the spool can act on it */
                    pthread_mutex_unlock(&tk);
                }
                spool_ack(t->s, (enum spool_lane)lane, id);
            }
            /* a reconnect now and then: what is in flight is sent again */
            if (rnd(&x) % 500 == 0) {
                nfl[lane] = 0;
                after[lane] = 0;
            }
        }
        /* a third of the trials each: a fast peer, a slow one, an outage */
        if (idle || t->seed % 3)
            usleep(t->seed % 3 == 2 ? 5000 : 200);
    }
    return NULL;
}

struct cut_stats {
    unsigned files, cut, zeroed, garbage, dropped_names, ghosts_back;
};

static void write_file(const char *path, const uint8_t *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0640);
    assert_true(fd >= 0);
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        assert_true(n > 0);
        off += (size_t)n;
    }
    close(fd);
}

static bool have_name(char **names, size_t n, const char *path)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], path) == 0)
            return true;
    return false;
}

/* Takes the power-cut image of dir into snap. Holds tk: no sync can complete
 * and no alert can count as raised meanwhile; the writers keep writing. */
static void power_cut(struct trial *t, const char *dir, const char *snap, uint64_t *x,
                      struct cut_stats *cs)
{
    static const char *const lanes[] = {"alert", "telemetry"};
    pthread_mutex_lock(&tk);
    t->cut = true;
    mkdir(snap, 0750);
    char **taken = NULL;
    size_t ntaken = 0;
    for (int l = 0; l < 2; l++) {
        char ld[4200], sd[4200];
        if (snprintf(ld, sizeof ld, "%s/%s", dir, lanes[l]) >= (int)sizeof ld ||
            snprintf(sd, sizeof sd, "%s/%s", snap, lanes[l]) >= (int)sizeof sd)
            fail_msg("path too long");
        mkdir(sd, 0750);
        DIR *d = opendir(ld);
        assert_non_null(d);
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.')
                continue;
            char path[4500], out[4500];
            snprintf(path, sizeof path, "%s/%s", ld, de->d_name);
            snprintf(out, sizeof out, "%s/%s", sd, de->d_name);
            int fd = open(path, O_RDONLY);
            if (fd < 0)
                continue; /* deleted meanwhile */
            struct stat st;
            fstat(fd, &st);
            close(fd);
            size_t len;
            uint8_t *data = slurp(path, &len);
            if (!data)
                continue;
            uint64_t durable = dur_get(st.st_dev, st.st_ino);
            if (len < durable)
                fail_msg("%s: %zu bytes on disk, %llu known durable", path, len,
                         (unsigned long long)durable);
            struct link *lk = link_find(path);
            bool named = lk && lk->ino == st.st_ino;
            cs->files++;
            if (!named && rnd(x) % 2) {
                cs->dropped_names++; /* the new name did not make it */
                free(data);
                continue;
            }
            /* keep the durable part; of the rest, any prefix, maybe damaged */
            size_t keep = len;
            int how = (int)(rnd(x) % 3);
            if (how == 0)
                keep = (size_t)durable;
            else if (how == 1 && len > durable)
                keep = (size_t)durable + (size_t)(rnd(x) % (len - durable + 1));
            if (keep < len)
                cs->cut++;
            size_t extra = 0;
            if (keep > durable && rnd(x) % 4 == 0) {
                size_t a = (size_t)durable + (size_t)(rnd(x) % (keep - durable));
                size_t b = a + (size_t)(rnd(x) % (keep - a + 1));
                memset(data + a, 0, b - a);
                cs->zeroed++;
            }
            if (rnd(x) % 6 == 0) {
                extra = 1 + (size_t)(rnd(x) % 300);
                data = ch_xrealloc(data, keep + extra);
                for (size_t i = 0; i < extra; i++)
                    data[keep + i] = (uint8_t)rnd(x);
                cs->garbage++;
            }
            write_file(out, data, keep + extra);
            free(data);
            taken = ch_xrealloc(taken, (ntaken + 1) * sizeof *taken);
            taken[ntaken++] = ch_xstrdup(path);
        }
        closedir(d);
    }
    /* deletions and replacements not yet made durable may be undone */
    for (size_t i = 0; i < nghosts; i++) {
        if (have_name(taken, ntaken, ghosts[i].path) || rnd(x) % 2)
            continue;
        const char *rel = ghosts[i].path + strlen(dir);
        char out[4096 + 256];
        snprintf(out, sizeof out, "%s%s", snap, rel);
        write_file(out, ghosts[i].data, ghosts[i].len);
        cs->ghosts_back++;
        taken = ch_xrealloc(taken, (ntaken + 1) * sizeof *taken);
        taken[ntaken++] = ch_xstrdup(ghosts[i].path);
    }
    for (size_t i = 0; i < ntaken; i++)
        free(taken[i]);
    free(taken);
    pthread_mutex_unlock(&tk);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

struct totals {
    unsigned trials;
    uint64_t alerts_checked, records_back, corrupt, truncated;
    struct cut_stats cs;
};

static void one_trial(const char *base, uint64_t seed, struct totals *tot)
{
    char dir[4200], snap[4200];
    snprintf(dir, sizeof dir, "%s/live", base);
    snprintf(snap, sizeof snap, "%s/snap", base);
    tracker_reset(dir);
    struct trial t = {.seed = seed};
    t.raised = ch_xcalloc(MAX_IDS, sizeof *t.raised);
    for (int l = 0; l < SPOOL_LANES; l++)
        t.acked[l] = ch_xcalloc(MAX_IDS, 1);
    struct spool_opts o = {.max_bytes = 1 << 20,
                           .segment_bytes = 8 << 10,
                           .commit_interval_ms = 1 + (int64_t)(seed % 10),
                           .cursor_interval_ms = 1 + (int64_t)(seed % 25),
                           .name = "live"};
    assert_int_equal(spool_open(dir, &o, &t.s), 0);

    struct writer w[3] = {{&t, SPOOL_ALERT, 0}, {&t, SPOOL_ALERT, 1}, {&t, SPOOL_TELEMETRY, 2}};
    pthread_t th[4];
    for (int i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, writer_main, &w[i]);
    pthread_create(&th[3], NULL, reader_main, &t);
    uint64_t x = seed * 2654435761u + 11;
    usleep((useconds_t)(500 + rnd(&x) % 15000));
    struct cut_stats cs = {0};
    power_cut(&t, dir, snap, &x, &cs);
    atomic_store(&t.stop, true);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    struct spool_stats st;
    spool_stats(t.s, &st);
    /* the check below is about alerts the bound never touched */
    assert_int_equal(st.lane[SPOOL_ALERT].dropped_records, 0);
    assert_int_equal(atomic_load(&t.errors), 0);
    spool_close(t.s);

    /* what was raised and acknowledged before the cut (tk is free now) */
    tracker_reset(NULL);
    struct spool *s = NULL;
    struct spool_opts ro = {.max_bytes = 1 << 20, .segment_bytes = 8 << 10, .name = "recovered"};
    int rc = spool_open(snap, &ro, &s);
    if (rc != 0)
        fail_msg("trial seed %llu: recovery failed: %s", (unsigned long long)seed, ch_strerror(rc));
    uint8_t *back = ch_xcalloc(MAX_IDS, 1);
    uint64_t max_id[SPOOL_LANES] = {0, 0};
    for (int lane = 0; lane < SPOOL_LANES; lane++) {
        uint64_t after = 0;
        struct spool_record r;
        while ((rc = spool_next(s, (enum spool_lane)lane, after, &r)) == 1) {
            int wr;
            uint32_t seq;
            if (r.id <= after)
                fail_msg("seed %llu: %s id %llu after %llu", (unsigned long long)seed,
                         spool_lane_name((enum spool_lane)lane), (unsigned long long)r.id,
                         (unsigned long long)after);
            if (!payload_ok(r.data, r.len, lane, &wr, &seq))
                fail_msg("seed %llu: %s record %llu has a damaged payload",
                         (unsigned long long)seed, spool_lane_name((enum spool_lane)lane),
                         (unsigned long long)r.id);
            if (lane == SPOOL_ALERT && r.id < MAX_IDS) {
                back[r.id] = 1;
                uint64_t want = t.raised[r.id];
                if (want && want != ((uint64_t)wr << 32 | seq))
                    fail_msg("seed %llu: alert %llu came back with another payload",
                             (unsigned long long)seed, (unsigned long long)r.id);
            }
            after = r.id;
            tot->records_back++;
        }
        assert_int_equal(rc, 0);
        max_id[lane] = after;
    }
    for (uint64_t id = 1; id <= t.max_raised; id++) {
        if (!t.raised[id] || t.acked[SPOOL_ALERT][id])
            continue;
        tot->alerts_checked++;
        if (!back[id])
            fail_msg("seed %llu: alert %llu was raised before the cut and is lost",
                     (unsigned long long)seed, (unsigned long long)id);
    }
    spool_stats(s, &st);
    tot->corrupt += st.lane[0].corrupt_records + st.lane[1].corrupt_records;
    tot->truncated += st.lane[0].truncated_bytes + st.lane[1].truncated_bytes;
    /* ids go on above everything seen, and above every alert raised */
    for (int lane = 0; lane < SPOOL_LANES; lane++) {
        uint64_t id;
        assert_int_equal(spool_append(s, (enum spool_lane)lane, 0, "z", 1, &id), 0);
        if (id <= max_id[lane] || (lane == SPOOL_ALERT && id <= t.max_raised))
            fail_msg("seed %llu: %s id %llu reused (max seen %llu, raised %llu)",
                     (unsigned long long)seed, spool_lane_name((enum spool_lane)lane),
                     (unsigned long long)id, (unsigned long long)max_id[lane],
                     (unsigned long long)t.max_raised);
    }
    spool_close(s);
    tot->cs.files += cs.files;
    tot->cs.cut += cs.cut;
    tot->cs.zeroed += cs.zeroed;
    tot->cs.garbage += cs.garbage;
    tot->cs.dropped_names += cs.dropped_names;
    tot->cs.ghosts_back += cs.ghosts_back;
    tot->trials++;
    free(back);
    free(t.raised);
    for (int l = 0; l < SPOOL_LANES; l++)
        free(t.acked[l]);
    nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    mkdir(base, 0750);
}

static void test_power_cuts(void **state)
{
    (void)state;
    const char *tmp = getenv("SPOOL_POWERCUT_DIR");
    if (!tmp) {
        struct stat st;
        tmp = stat("/dev/shm", &st) == 0 && access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    }
    char base[4096];
    snprintf(base, sizeof base, "%s/spoolpc.XXXXXX", tmp);
    assert_non_null(mkdtemp(base));
    const char *env = getenv("SPOOL_POWERCUT_SEED");
    uint64_t seed0 = env ? strtoull(env, NULL, 0) : (uint64_t)ch_now_ms();
    print_message("power cuts: seed %llu (SPOOL_POWERCUT_SEED to repeat), in %s\n",
                  (unsigned long long)seed0, base);
    /* the recoveries log every cut tail; only errors are of interest here */
    log_set_level(LOGL_ERROR);
    struct totals tot = {0};
    int64_t t0 = ch_mono_ms();
    for (unsigned i = 0; i < MAX_TRIALS; i++) {
        if (i >= MIN_TRIALS && ch_mono_ms() - t0 > BUDGET_MS)
            break;
        one_trial(base, seed0 + i, &tot);
    }
    log_set_level(LOGL_INFO);
    rmdir(base);
    tracker_free();
    print_message("power cuts: %u trials in %lld ms; %llu unacknowledged raised alerts checked, "
                  "all back; %llu records recovered; %llu corrupt records skipped, %llu torn "
                  "bytes cut\n",
                  tot.trials, (long long)(ch_mono_ms() - t0),
                  (unsigned long long)tot.alerts_checked, (unsigned long long)tot.records_back,
                  (unsigned long long)tot.corrupt, (unsigned long long)tot.truncated);
    print_message("  images: %u files, %u cut short, %u with zeroed runs, %u with garbage "
                  "appended, %u new names lost, %u deleted/replaced files back\n",
                  tot.cs.files, tot.cs.cut, tot.cs.zeroed, tot.cs.garbage, tot.cs.dropped_names,
                  tot.cs.ghosts_back);
    assert_true(tot.trials >= MIN_TRIALS);
    assert_true(tot.alerts_checked > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_power_cuts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
