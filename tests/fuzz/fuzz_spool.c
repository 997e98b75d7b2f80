/* Spool recovery on arbitrary bytes: they become a lane's segment file(s)
 * and cursor, then open (recover), read everything, acknowledge every other
 * record, append, close, and open again. Never a crash or a leak, the spool
 * always opens, ids increase, and nothing unacknowledged is lost between the
 * two opens.
 *
 * The format marker (spool.c, FORMAT): a spool whose DIR/format is not
 * exactly "carehub-spool-format 1\n" (and whatever follows), or that has none
 * and whose cursor or a segment begins with a later format's magic (A7 'S'
 * 'C'/'P' '2'..'9'), is refused with CH_EFORMAT and nothing under the
 * directory changes; any other spool opens and has the marker afterwards.
 * That is the only refusal: damage is never one.
 *
 * Input: byte 0 = flags: bit 0 the lane (alert/telemetry); bit 1 the next 32
 * bytes are that lane's cursor file; bit 3 the next byte is a length n and
 * the n bytes after it the spool's format file; bit 2 the next 2 bytes
 * (little-endian) split the rest into two segments, the second named
 * 1 + split % 64. The rest is the segment. tests/fixtures/spool/
 * make_fixtures.py writes the seeds in tests/fuzz/corpus/spool/; regress-*
 * there are inputs the fuzzer found. FUZZ_SPOOL_VERBOSE=1 shows the spool's
 * log and what was lost. */
#include "err.h"
#include "log.h"
#include "spool.h"
#include "util.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* abort() naming the broken expectation */
#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_spool:%d: %s\n", __LINE__, #c);                                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static char root[256];

static void clear_dir(const char *d)
{
    DIR *dir = opendir(d);
    if (!dir)
        return;
    struct dirent *de;
    char p[600];
    while ((de = readdir(dir)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s", d, de->d_name);
        unlink(p);
    }
    closedir(dir);
}

static void cleanup(void)
{
    char p[300];
    snprintf(p, sizeof p, "%s/alert", root);
    clear_dir(p);
    rmdir(p);
    snprintf(p, sizeof p, "%s/telemetry", root);
    clear_dir(p);
    rmdir(p);
    clear_dir(root);
    rmdir(root);
}

static void put(const char *lane, const char *name, const uint8_t *p, size_t n)
{
    char path[400];
    snprintf(path, sizeof path, "%s/%s/%s", root, lane, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0640);
    CHECK(fd >= 0);
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        CHECK(w > 0);
        p += w;
        n -= (size_t)w;
    }
    close(fd);
}

/* Reads a lane; stores up to cap ids; checks that ids increase. */
static size_t read_lane(struct spool *s, enum spool_lane lane, uint64_t *ids, size_t cap)
{
    size_t n = 0;
    uint64_t after = 0;
    struct spool_record r;
    while (spool_next(s, lane, after, &r) == 1) {
        CHECK(r.id > after && r.len <= SPOOL_MAX_RECORD && (r.data || !r.len));
        if (n < cap)
            ids[n] = r.id;
        n++;
        after = r.id;
    }
    return n;
}

static const char marker1[] = "carehub-spool-format 1\n";

/* A later format's magic (A7 'S' kind '2'..'9') at the start of p[0..n). */
static bool later_magic(const uint8_t *p, size_t n, char kind)
{
    return n >= 4 && p[0] == 0xA7 && p[1] == 'S' && p[2] == kind && p[3] >= '2' && p[3] <= '9';
}

/* FNV-1a over the name and bytes of every file in dir (not recursive),
 * combined independently of their order, and their count. */
static uint64_t hash_dir(const char *d)
{
    uint64_t acc = 0;
    DIR *dir = opendir(d);
    if (!dir)
        return 0;
    struct dirent *de;
    char p[600];
    while ((de = readdir(dir)) != NULL) {
        if (de->d_name[0] == '.' && (!de->d_name[1] || !strcmp(de->d_name, "..")))
            continue;
        uint64_t h = 1469598103934665603ull;
        for (const char *c = de->d_name; *c; c++)
            h = (h ^ (uint8_t)*c) * 1099511628211ull;
        snprintf(p, sizeof p, "%s/%s", d, de->d_name);
        FILE *f = fopen(p, "rb");
        int c;
        while (f && (c = fgetc(f)) != EOF) /* a directory: fgetc fails, its name counts */
            h = (h ^ (uint8_t)c) * 1099511628211ull;
        if (f)
            fclose(f);
        acc += h * 0x9E3779B97F4A7C15ull + 1;
    }
    closedir(dir);
    return acc;
}

static uint64_t hash_spool(void)
{
    char p[300];
    uint64_t h = hash_dir(root);
    snprintf(p, sizeof p, "%s/alert", root);
    h ^= hash_dir(p) * 3;
    snprintf(p, sizeof p, "%s/telemetry", root);
    return h ^ hash_dir(p) * 5;
}

static bool has(const uint64_t *ids, size_t n, uint64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id)
            return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!root[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(root, sizeof root, "%s/fuzzspool.XXXXXX", base);
        CHECK(mkdtemp(root) != NULL);
        atexit(cleanup);
        log_set_level(getenv("FUZZ_SPOOL_VERBOSE") ? LOGL_DEBUG : LOGL_ERROR);
    }
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    data++;
    size--;
    const char *lane = (flags & 1) ? "telemetry" : "alert";
    char p[300];
    clear_dir(root); /* lock, format (the lane directories stay) */
    snprintf(p, sizeof p, "%s/alert", root);
    mkdir(p, 0750);
    clear_dir(p);
    snprintf(p, sizeof p, "%s/telemetry", root);
    mkdir(p, 0750);
    clear_dir(p);
    bool later = false;    /* no marker, and a later format's magic */
    bool bad_mark = false; /* a marker that is not format 1's */
    if ((flags & 2) && size >= 32) {
        put(lane, "cursor", data, 32);
        later = later_magic(data, 32, 'C');
        data += 32;
        size -= 32;
    }
    bool marked = false;
    if ((flags & 8) && size >= 1) {
        size_t n = data[0] < size - 1 ? data[0] : size - 1;
        put(".", "format", data + 1, n);
        marked = true;
        bad_mark = n < sizeof marker1 - 1 || memcmp(data + 1, marker1, sizeof marker1 - 1) != 0;
        data += 1 + n;
        size -= 1 + n;
    }
    size_t split = size;
    unsigned second = 0;
    if ((flags & 4) && size >= 2) {
        split = (size_t)(data[0] | data[1] << 8);
        second = 1 + (unsigned)(split % 64);
        data += 2;
        size -= 2;
        if (split > size)
            split = size;
    }
    put(lane, "0000000000000001.seg", data, split);
    if (second != 1) /* else the second replaces it */
        later = later || later_magic(data, split, 'P');
    if (second) {
        char name[32];
        snprintf(name, sizeof name, "%016x.seg", second);
        put(lane, name, data + split, size - split);
        later = later || later_magic(data + split, size - split, 'P');
    }

    struct spool_opts o = {.max_bytes = 64 << 20, .commit_interval_ms = 3600000};
    struct spool *s = NULL;
    if (marked ? bad_mark : later) { /* refused, and nothing changed */
        uint64_t before = hash_spool();
        CHECK(spool_open(root, &o, &s) == CH_EFORMAT && s == NULL);
        CHECK(hash_spool() == before);
        snprintf(p, sizeof p, "%s/lock", root);
        CHECK(access(p, F_OK) != 0);
        return 0;
    }
    CHECK(spool_open(root, &o, &s) == 0); /* damage is never a reason to refuse */
    enum { CAP = 4096 };
    static uint64_t first[SPOOL_LANES][CAP], again[SPOOL_LANES][CAP];
    size_t n1[SPOOL_LANES], n2[SPOOL_LANES];
    uint64_t added[SPOOL_LANES];
    for (int l = 0; l < SPOOL_LANES; l++) {
        n1[l] = read_lane(s, (enum spool_lane)l, first[l], CAP);
        for (size_t i = 0; i < n1[l] && i < CAP; i += 2)
            CHECK(spool_ack(s, (enum spool_lane)l, first[l][i]) == 0);
        if (spool_append(s, (enum spool_lane)l, 9, "fuzz", 4, &added[l]) != 0) {
            struct spool_stats st;
            spool_stats(s, &st);
            CHECK(st.lane[l].next_id >= (UINT64_C(1) << 62)); /* only forged ids stop appends */
            added[l] = 0;
            continue;
        }
        /* ids go on above what recovery found */
        CHECK(!n1[l] || added[l] > first[l][(n1[l] < CAP ? n1[l] : CAP) - 1]);
    }
    spool_close(s);
    s = NULL;
    CHECK(spool_open(root, &o, &s) == 0);
    struct spool_stats st;
    spool_stats(s, &st);
    for (int l = 0; l < SPOOL_LANES; l++) {
        CHECK(st.lane[l].truncated_bytes == 0); /* the first open left clean tails */
        n2[l] = read_lane(s, (enum spool_lane)l, again[l], CAP);
        if (n1[l] < CAP && n2[l] < CAP) {
            /* every unacknowledged record is still there, plus the new one */
            for (size_t i = 1; i < n1[l]; i += 2) {
                if (getenv("FUZZ_SPOOL_VERBOSE") && !has(again[l], n2[l], first[l][i]))
                    fprintf(stderr, "lane %d: record %llu lost\n", l,
                            (unsigned long long)first[l][i]);
                CHECK(has(again[l], n2[l], first[l][i]));
            }
            CHECK(!added[l] || has(again[l], n2[l], added[l]));
        }
    }
    spool_close(s);
    /* marked (or left as it was: a marker of format 1 with reserved bytes) */
    snprintf(p, sizeof p, "%s/format", root);
    int fd = open(p, O_RDONLY);
    char m[sizeof marker1];
    CHECK(fd >= 0 && read(fd, m, sizeof m - 1) == sizeof m - 1 &&
          !memcmp(m, marker1, sizeof m - 1));
    close(fd);
    return 0;
}
