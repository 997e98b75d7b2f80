/* Spool benchmark: append throughput for telemetry (group commit) and for
 * alerts (fsync each, one thread and several), replay throughput after an
 * outage's backlog, time to the first alert behind that backlog, and bytes
 * written to disk per reading (flash wear on SD cards). Prints figures; never
 * fails on a number. Usage: bench_spool [DIR] (default /var/tmp: the local
 * disk, not a tmpfs). */
#include "bench_util.h"
#include "log.h"
#include "spool.h"
#include "util.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

static char base[4096];

static void fresh(char *dir, size_t cap, const char *name)
{
    snprintf(dir, cap, "%s/%s", base, name);
    bench_rm_rf(dir);
}

static struct spool *open_or_die(const char *dir, uint64_t max, int64_t commit)
{
    struct spool_opts o = {.max_bytes = max, .commit_interval_ms = commit, .name = "bench"};
    struct spool *s;
    int rc = spool_open(dir, &o, &s);
    if (rc != 0) {
        fprintf(stderr, "cannot open a spool in %s (%d)\n", dir, rc);
        exit(1);
    }
    return s;
}

/* A JSON-looking payload of about len bytes (what a batch looks like). */
static char *payload(size_t len, unsigned salt)
{
    char *p = ch_xmalloc(len + 1);
    size_t n = 0;
    while (n < len) {
        int w = snprintf(p + n, len + 1 - n,
                         "{\"device\":\"bed-%03u\",\"ts\":%u,\"metrics\":{\"hr\":%u,\"spo2\":%u}},",
                         salt % 100, 1700000000u + salt, 60 + salt % 40, 90 + salt % 10);
        if (w <= 0)
            break;
        n += (size_t)w;
        salt++;
    }
    return p;
}

/* Bytes written so far: by this process (/proc/self/io write_bytes, page
 * granular, without the file system journal) and by the whole device that
 * holds dir (sectors written, with the journal, and with anything else the
 * machine writes meanwhile). */
struct io {
    uint64_t proc, dev;
};

static struct io io_now(const char *dir)
{
    struct io r = {0, 0};
    FILE *f = fopen("/proc/self/io", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        unsigned long long v;
        if (sscanf(line, "write_bytes: %llu", &v) == 1)
            r.proc = v;
    }
    if (f)
        fclose(f);
    struct stat st;
    if (stat(dir, &st) == 0) {
        char p[128];
        snprintf(p, sizeof p, "/sys/dev/block/%u:%u/stat", major(st.st_dev), minor(st.st_dev));
        f = fopen(p, "r");
        unsigned long long v[7];
        if (f && fscanf(f, "%llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
                        &v[5], &v[6]) == 7)
            r.dev = v[6] * 512;
        if (f)
            fclose(f);
    }
    return r;
}

static void bench_telemetry(size_t len, size_t n, const char *what)
{
    char dir[4200];
    fresh(dir, sizeof dir, "telemetry");
    struct spool *s = open_or_die(dir, 4ull << 30, 1000);
    char *p = payload(len, 1);
    double t0 = now_s();
    for (size_t i = 0; i < n; i++)
        spool_append(s, SPOOL_TELEMETRY, 1, p, len, NULL);
    double t1 = now_s();
    spool_sync(s);
    double t2 = now_s();
    struct spool_stats st;
    spool_stats(s, &st);
    printf("telemetry %-28s %9.0f rec/s %7.1f MB/s  (appends alone %.0f rec/s; %" PRIu64
           " fsyncs)\n",
           what, (double)n / (t2 - t0), (double)(n * len) / (t2 - t0) / 1e6, (double)n / (t1 - t0),
           st.lane[SPOOL_TELEMETRY].fsyncs);
    free(p);
    spool_close(s);
    bench_rm_rf(dir);
}

struct alert_arg {
    struct spool *s;
    size_t n;
    double *lat;
};

static void *alert_thread(void *p)
{
    struct alert_arg *a = p;
    char *pl = payload(400, 7);
    for (size_t i = 0; i < a->n; i++) {
        double t = now_s();
        spool_append(a->s, SPOOL_ALERT, 2, pl, 400, NULL);
        a->lat[i] = now_s() - t;
    }
    free(pl);
    return NULL;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void bench_alerts(int threads, size_t per)
{
    char dir[4200];
    fresh(dir, sizeof dir, "alerts");
    struct spool *s = open_or_die(dir, 1ull << 30, 1000);
    struct alert_arg a[16];
    pthread_t th[16];
    double *lat = ch_xmalloc(sizeof(double) * per * (size_t)threads);
    double t0 = now_s();
    for (int i = 0; i < threads; i++) {
        a[i] = (struct alert_arg){s, per, lat + per * (size_t)i};
        pthread_create(&th[i], NULL, alert_thread, &a[i]);
    }
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    double dt = now_s() - t0;
    size_t n = per * (size_t)threads;
    struct spool_stats st;
    spool_stats(s, &st);
    qsort(lat, n, sizeof *lat, cmp_d);
    printf("alerts    %d thread%s, 400 B, fsync'd     %9.0f rec/s %7.2f MB/s  (%.2f fsyncs per "
           "alert; latency p50 %.2f ms, p99 %.2f ms)\n",
           threads, threads > 1 ? "s" : " ", (double)n / dt, (double)(n * 400) / dt / 1e6,
           (double)st.lane[SPOOL_ALERT].fsyncs / (double)n, lat[n / 2] * 1e3,
           lat[n * 99 / 100] * 1e3);
    free(lat);
    spool_close(s);
    bench_rm_rf(dir);
}

/* Evicts a spool's files from the page cache (a cold replay). */
static void drop_cache(const char *dir)
{
    static const char *const lanes[] = {"alert", "telemetry"};
    for (int l = 0; l < 2; l++) {
        char d[4300];
        snprintf(d, sizeof d, "%s/%s", dir, lanes[l]);
        DIR *dd = opendir(d);
        struct dirent *de;
        while (dd && (de = readdir(dd)) != NULL) {
            char p[4600];
            snprintf(p, sizeof p, "%s/%s", d, de->d_name);
            int fd = open(p, O_RDONLY);
            if (fd >= 0) {
                fdatasync(fd);
                posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
                close(fd);
            }
        }
        if (dd)
            closedir(dd);
    }
}

/* An outage of hours at 100 devices every 10 s: batches of 10 readings
 * (1 s of data, ~2.5 KB), or one record per reading (~250 B). Then: open
 * (recovery), first alert, replay everything with acks. */
static void bench_replay(double hours, size_t readings_per_record, bool cold)
{
    char dir[4200];
    fresh(dir, sizeof dir, "replay");
    size_t readings = (size_t)(36000 * hours);
    size_t n = readings / readings_per_record, len = 250 * readings_per_record;
    struct spool *s = open_or_die(dir, 8ull << 30, 1000);
    char *p = payload(len, 3);
    for (size_t i = 0; i < n; i++)
        spool_append(s, SPOOL_TELEMETRY, 1, p, len, NULL);
    char *alert = payload(400, 9);
    spool_append(s, SPOOL_ALERT, 2, alert, 400, NULL); /* raised during the outage */
    free(alert);
    spool_close(s);
    if (cold)
        drop_cache(dir);
    double t0 = now_s();
    s = open_or_die(dir, 8ull << 30, 1000);
    double t1 = now_s();
    struct spool_record r;
    spool_next(s, SPOOL_ALERT, 0, &r); /* the sender drains alerts first */
    spool_ack(s, SPOOL_ALERT, r.id);
    double t2 = now_s();
    uint64_t after = 0, got = 0, bytes = 0;
    while (spool_next(s, SPOOL_TELEMETRY, after, &r) == 1) {
        after = r.id;
        got++;
        bytes += r.len;
        spool_ack(s, SPOOL_TELEMETRY, r.id);
    }
    spool_sync(s);
    double t3 = now_s();
    char what[96];
    snprintf(what, sizeof what, "%.0f h backlog, %zu x %zu B, %s", hours, n, len,
             cold ? "cold cache" : "warm cache");
    printf("replay    %-40s open %6.1f ms, first alert +%.2f ms, replay %8.0f rec/s %7.1f MB/s "
           "(%.0f readings/s)\n",
           what, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (double)got / (t3 - t2),
           (double)bytes / (t3 - t2) / 1e6, (double)(got * readings_per_record) / (t3 - t2));
    free(p);
    spool_close(s);
    bench_rm_rf(dir);
}

/* 20 minutes of live operation in scaled time, the background thread doing
 * what it does: one "second" is 5 ms, the commit interval 5 ms (1 s scaled)
 * and the cursor interval 50 ms (10 s scaled, the default), or as given in
 * scaled seconds. Each second one record of per_record
 * readings (or records_per_s records of one reading) is appended and the
 * previous one acknowledged (PUBACK) unless in an outage. */
static void bench_wear(size_t per_record, size_t records_per_s, bool acks, int commit_s,
                       int cursor_s, const char *what)
{
    enum { SECONDS = 1200, TICK_US = 5000 };
    char dir[4200];
    fresh(dir, sizeof dir, "wear");
    struct spool_opts o = {.max_bytes = 1ull << 30,
                           .commit_interval_ms = 5 * commit_s,
                           .cursor_interval_ms = 5 * cursor_s,
                           .name = "bench"};
    struct spool *s;
    if (spool_open(dir, &o, &s) != 0)
        return;
    size_t len = 250 * per_record;
    char *p = payload(len, 5);
    spool_sync(s);
    struct io a = io_now(dir);
    struct spool_stats st0;
    spool_stats(s, &st0);
    double t0 = now_s();
    uint64_t last = 0;
    for (int sec = 0; sec < SECONDS; sec++) {
        for (size_t k = 0; k < records_per_s; k++) {
            uint64_t id;
            spool_append(s, SPOOL_TELEMETRY, 1, p, len, &id);
            if (acks && last)
                spool_ack(s, SPOOL_TELEMETRY, last);
            last = id;
        }
        double next = t0 + (double)(sec + 1) * TICK_US / 1e6;
        double wait = next - now_s();
        if (wait > 0)
            usleep((useconds_t)(wait * 1e6));
    }
    struct spool_stats st;
    spool_stats(s, &st);
    struct io b = io_now(dir);
    double readings = (double)SECONDS * (double)(per_record * records_per_s);
    double logical = (double)(len + SPOOL_RECORD_OVERHEAD) * SECONDS * (double)records_per_s;
    printf("wear      %-44s %5.0f B/reading logical, %5.0f B/reading written by the process, "
           "%5.0f at the device (%.2f fsyncs per scaled s)\n",
           what, logical / readings, (double)(b.proc - a.proc) / readings,
           (double)(b.dev - a.dev) / readings,
           (double)(st.lane[SPOOL_TELEMETRY].fsyncs - st0.lane[SPOOL_TELEMETRY].fsyncs) / SECONDS);
    free(p);
    spool_close(s);
    bench_rm_rf(dir);
}

int main(int argc, char **argv)
{
    const char *where = argc > 1 ? argv[1] : "/var/tmp";
    snprintf(base, sizeof base, "%s/bench_spool.XXXXXX", where);
    if (!mkdtemp(base)) {
        perror(base);
        return 1;
    }
    log_set_level(LOGL_WARN);
    printf("spool benchmark in %s\n", base);
    bench_telemetry(2500, 20000, "2.5 KB (batch of 10)");
    bench_telemetry(250, 100000, "250 B (one reading)");
    bench_alerts(1, 2000);
    bench_alerts(8, 500);
    bench_replay(1, 10, false);
    bench_replay(1, 10, true);
    bench_replay(1, 1, true);
    bench_replay(24, 10, true);
    printf("(wear: 20 min of operation in scaled time, 100 devices every 10 s; \"at the device\" "
           "counts the file system journal and anything else this machine writes meanwhile)\n");
    bench_wear(10, 1, true, 1, 10, "batches of 10, commit 1 s, acked");
    bench_wear(10, 1, true, 1, 1, "  the same with the cursor written every 1 s");
    bench_wear(10, 1, false, 1, 10, "batches of 10, commit 1 s, outage (no acks)");
    bench_wear(10, 1, true, 5, 10, "batches of 10, commit 5 s, acked");
    bench_wear(1, 10, true, 1, 10, "one record per reading, commit 1 s, acked");
    rmdir(base);
    return 0;
}
