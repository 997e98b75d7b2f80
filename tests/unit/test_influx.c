/* The InfluxDB writer and its spool against a scripted HTTP server in the
 * test process: batching by size and by time, order kept across retries,
 * records acknowledged in the spool only after a 2xx, what is retried and
 * what goes to the dead letter (400, 413 after splitting), the spool's bound,
 * the shutdown deadline and a restart that writes what the spool kept, gzip,
 * the v1 CREATE DATABASE and v2 token, and alarm transitions written by
 * their own writer while telemetry is being retried. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "hubcfg.h"
#include "err.h"
#include "influx.h"
#include "log.h"
#include "spool.h"
#include "util.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <regex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* ---- a scripted HTTP/1.1 server ------------------------------------------ */

#define MAX_REQ 256

struct request {
    char *target; /* "POST /write?db=x&precision=ms" */
    char *auth;   /* Authorization header or NULL */
    char *body;   /* decompressed */
    bool gzip;
    int status; /* answered */
};

#define MAX_CONN 16

struct server {
    int fd;
    int port;
    pthread_t thread;
    pthread_t conn[MAX_CONN]; /* a thread per connection: the writers have one each */
    int conn_fd[MAX_CONN];
    int n_conn;
    atomic_bool stop;
    pthread_mutex_t lock;
    struct request req[MAX_REQ];
    int n_req;
    int script[MAX_REQ];     /* status for request i; 0: status */
    atomic_int status;       /* otherwise; 0: 204 */
    atomic_int alert_status; /* for bodies of "alarm" points when set */
    const char *error_body;
};

static char *header(const char *head, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, name, n) == 0 && p[2 + n] == ':') {
            const char *v = p + 3 + n;
            while (*v == ' ')
                v++;
            const char *end = strstr(v, "\r\n");
            return strndup(v, (size_t)(end - v));
        }
    }
    return NULL;
}

static char *gunzip(const char *in, size_t len)
{
    size_t cap = 1 << 20;
    char *out = ch_xcalloc(1, cap + 1);
    z_stream z = {0};
    inflateInit2(&z, 15 + 16);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    z.next_out = (Bytef *)out;
    z.avail_out = (uInt)cap;
    assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
    inflateEnd(&z);
    return out;
}

/* Reads one request from fd into buf (which may hold the start of it);
 * returns false at EOF or stop. */
static bool read_request(struct server *s, int fd, char *buf, size_t cap, size_t *have,
                         size_t *head_len, size_t *body_len)
{
    for (;;) {
        char *end = memmem(buf, *have, "\r\n\r\n", 4);
        if (end) {
            buf[end - buf + 2] = '\0';
            char *cl = header(buf, "Content-Length");
            buf[end - buf + 2] = '\r';
            *head_len = (size_t)(end - buf) + 4;
            *body_len = cl ? (size_t)atol(cl) : 0;
            free(cl);
            if (*have >= *head_len + *body_len)
                return true;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (atomic_load(&s->stop))
            return false;
        if (poll(&p, 1, 50) <= 0)
            continue;
        ssize_t r = recv(fd, buf + *have, cap - *have, 0);
        if (r <= 0)
            return false;
        *have += (size_t)r;
    }
}

static void serve_conn(struct server *s, int fd)
{
    size_t cap = 8 << 20, have = 0;
    char *buf = ch_xmalloc(cap + 1);
    size_t head_len, body_len;
    while (read_request(s, fd, buf, cap, &have, &head_len, &body_len)) {
        char saved = buf[head_len - 2];
        buf[head_len - 2] = '\0';
        struct request rq = {0};
        char *sp = strstr(buf, " HTTP/1.1");
        rq.target = strndup(buf, (size_t)(sp - buf));
        rq.auth = header(buf, "Authorization");
        char *enc = header(buf, "Content-Encoding");
        rq.gzip = enc && strcmp(enc, "gzip") == 0;
        free(enc);
        buf[head_len - 2] = saved;
        rq.body = rq.gzip ? gunzip(buf + head_len, body_len) : strndup(buf + head_len, body_len);

        pthread_mutex_lock(&s->lock);
        int i = s->n_req;
        int status = i < MAX_REQ && s->script[i] ? s->script[i] : atomic_load(&s->status);
        if (atomic_load(&s->alert_status) && strncmp(rq.body, "alarm", 5) == 0)
            status = atomic_load(&s->alert_status);
        if (status == 0)
            status = 204;
        rq.status = status;
        if (i < MAX_REQ) {
            s->req[s->n_req++] = rq;
        } else {
            free(rq.target);
            free(rq.auth);
            free(rq.body);
        }
        pthread_mutex_unlock(&s->lock);

        const char *body = status == 204 ? "" : s->error_body ? s->error_body : "{\"error\":\"x\"}";
        char resp[512];
        int n = snprintf(resp, sizeof resp, "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n\r\n%s",
                         status, strlen(body), body);
        if (send(fd, resp, (size_t)n, MSG_NOSIGNAL) < 0)
            break;
        memmove(buf, buf + head_len + body_len, have - head_len - body_len);
        have -= head_len + body_len;
    }
    free(buf);
    close(fd);
}

struct conn_arg {
    struct server *s;
    int fd;
};

static void *conn_run(void *arg)
{
    struct conn_arg a = *(struct conn_arg *)arg;
    free(arg);
    serve_conn(a.s, a.fd);
    return NULL;
}

static void *server_run(void *arg)
{
    struct server *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            continue;
        if (s->n_conn == MAX_CONN) {
            close(c);
            continue;
        }
        struct conn_arg *a = ch_xmalloc(sizeof *a);
        *a = (struct conn_arg){s, c};
        pthread_create(&s->conn[s->n_conn++], NULL, conn_run, a);
    }
    for (int i = 0; i < s->n_conn; i++)
        pthread_join(s->conn[i], NULL);
    return NULL;
}

static struct server *server_start(void)
{
    struct server *s = ch_xcalloc(1, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s->fd, 4), 0);
    getsockname(s->fd, (struct sockaddr *)&a, &alen);
    s->port = ntohs(a.sin_port);
    pthread_create(&s->thread, NULL, server_run, s);
    return s;
}

static void server_stop(struct server *s)
{
    atomic_store(&s->stop, true);
    pthread_join(s->thread, NULL);
    close(s->fd);
    for (int i = 0; i < s->n_req; i++) {
        free(s->req[i].target);
        free(s->req[i].auth);
        free(s->req[i].body);
    }
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static int requests(struct server *s)
{
    pthread_mutex_lock(&s->lock);
    int n = s->n_req;
    pthread_mutex_unlock(&s->lock);
    return n;
}

static void wait_requests(struct server *s, int n)
{
    int64_t end = ch_mono_ms() + 10000;
    while (requests(s) < n && ch_mono_ms() < end)
        ch_sleep_ms(5);
    assert_true(requests(s) >= n);
}

/* ---- fixtures ---------------------------------------------------------------- */

struct fx {
    struct server *srv;
    struct hubcfg_influx cfg;
    char url[64];
    char dir[64];       /* temporary directory of the test */
    char spool_dir[96]; /* the spool in it */
    char dead[96];      /* the dead letter in it */
    struct spool_opts so;
    struct spool *sp;
    struct influx *w;
};

static int setup(void **state)
{
    struct fx *f = ch_xcalloc(1, sizeof *f);
    f->srv = server_start();
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%d", f->srv->port);
    strcpy(f->dir, "/tmp/test_influx.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->spool_dir, sizeof f->spool_dir, "%s/spool", f->dir);
    snprintf(f->dead, sizeof f->dead, "%s/dead-letter.lp", f->dir);
    f->so = (struct spool_opts){.commit_interval_ms = 50};
    f->cfg = (struct hubcfg_influx){
        .url = f->url,
        .version = 1,
        .database = "db",
        .batch_size = 3,
        .flush_interval_ms = 3600000,
        .timeout_ms = 2000,
        .max_backoff_ms = 100,
        .shutdown_timeout_ms = 2000,
        .dead_letter = f->dead,
    };
    *state = f;
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int teardown(void **state)
{
    struct fx *f = *state;
    server_stop(f->srv);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void open_spool(struct fx *f)
{
    assert_int_equal(spool_open(f->spool_dir, &f->so, &f->sp), 0);
}

static void open_writer(struct fx *f)
{
    if (!f->sp)
        open_spool(f);
    assert_int_equal(influx_open(&f->cfg, f->sp, &f->w), 0);
}

/* Stops the writer (flushing for up to shutdown_timeout) and closes the
 * spool, as care-hub does. */
static struct influx_stats close_writer(struct fx *f)
{
    struct influx_stats st;
    influx_close(f->w, &st);
    f->w = NULL;
    spool_close(f->sp);
    f->sp = NULL;
    return st;
}

static size_t nlines(const char *lines)
{
    size_t n = 0;
    for (const char *p = lines; *p; p++)
        n += *p == '\n';
    return n;
}

static void put(struct fx *f, const char *lines)
{
    assert_int_equal(
        influx_enqueue(f->w, INFLUX_RP_DEFAULT, ch_xstrdup(lines), strlen(lines), nlines(lines)),
        0);
}

static const char *body(struct fx *f, int i)
{
    return f->srv->req[i].body;
}

/* Records in the spool not acknowledged yet. */
static uint64_t pending(struct fx *f)
{
    uint64_t n;
    spool_pending(f->sp, SPOOL_TELEMETRY, &n, NULL);
    return n;
}

static void wait_pending(struct fx *f, uint64_t n)
{
    int64_t end = ch_mono_ms() + 10000;
    while (pending(f) != n && ch_mono_ms() < end)
        ch_sleep_ms(5);
    assert_int_equal(pending(f), n);
}

static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return NULL;
    char *s = ch_xcalloc(1, 1 << 20);
    size_t n = fread(s, 1, (1 << 20) - 1, fp);
    s[n] = '\0';
    fclose(fp);
    return s;
}

static bool matches(const char *s, const char *rx)
{
    regex_t re;
    assert_int_equal(regcomp(&re, rx, REG_EXTENDED | REG_NOSUB), 0);
    bool ok = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

#define ISO_TIME "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z"

/* ---- tests ------------------------------------------------------------------- */

/* batch_size points per request, cut inside a hand-over at a line boundary;
 * the rest goes out at close without waiting for the flush interval. */
static void test_batch_by_size(void **state)
{
    struct fx *f = *state;
    open_writer(f);
    put(f, "m v=1 1\n");
    put(f, "m v=2 2\nm v=3 3\nm v=4 4\nm v=5 5\n");
    put(f, "m v=6 6\nm v=7 7\n");
    wait_requests(f->srv, 2);
    struct influx_stats st = close_writer(f);
    assert_int_equal(requests(f->srv), 3);
    assert_string_equal(f->srv->req[0].target, "POST /write?db=db&precision=ms");
    assert_string_equal(body(f, 0), "m v=1 1\nm v=2 2\nm v=3 3\n");
    assert_string_equal(body(f, 1), "m v=4 4\nm v=5 5\nm v=6 6\n");
    assert_string_equal(body(f, 2), "m v=7 7\n");
    assert_int_equal(st.points_written, 7);
    assert_int_equal(st.write_errors + st.dropped + st.write_rejected + st.dead_letter_lines, 0);
}

static void test_batch_by_time(void **state)
{
    struct fx *f = *state;
    f->cfg.batch_size = 1000;
    f->cfg.flush_interval_ms = 50;
    open_writer(f);
    int64_t t0 = ch_mono_ms();
    put(f, "m v=1 1\n");
    put(f, "m v=2 2\n");
    wait_requests(f->srv, 1);
    int64_t took = ch_mono_ms() - t0;
    assert_true(took >= 45 && took < 2000);
    assert_string_equal(body(f, 0), "m v=1 1\nm v=2 2\n");
    close_writer(f);
}

/* 5xx, 408, 429 and configuration problems (401, 403): the same batch again,
 * first, until it is written; nothing is lost or reordered. */
static void test_retry_keeps_order(void **state)
{
    struct fx *f = *state;
    int script[] = {503, 500, 429, 401, 403, 408, 302};
    int n = (int)(sizeof script / sizeof *script);
    memcpy(f->srv->script, script, sizeof script);
    open_writer(f);
    put(f, "a v=1 1\na v=2 2\na v=3 3\n");
    put(f, "b v=1 1\n");
    wait_requests(f->srv, n + 1);
    struct influx_stats st = close_writer(f);
    assert_int_equal(requests(f->srv), n + 2);
    for (int i = 0; i <= n; i++)
        assert_string_equal(body(f, i), "a v=1 1\na v=2 2\na v=3 3\n");
    assert_string_equal(body(f, n + 1), "b v=1 1\n");
    assert_int_equal(st.points_written, 4);
    assert_int_equal(st.write_errors, n);
    assert_int_equal(st.write_retries, n);
    assert_int_equal(st.dropped + st.write_rejected + st.dead_letter_batches, 0);
}

/* A record is acknowledged in the spool only once InfluxDB answered 2xx:
 * while it fails, everything stays pending; then the spool empties. */
static void test_ack_only_after_2xx(void **state)
{
    struct fx *f = *state;
    atomic_store(&f->srv->status, 503);
    open_writer(f);
    put(f, "m v=1 1\nm v=2 2\n");
    put(f, "m v=3 3\n");
    put(f, "m v=4 4\n");
    wait_requests(f->srv, 3);
    assert_int_equal(pending(f), 3);
    struct spool_stats ss;
    spool_stats(f->sp, &ss);
    assert_int_equal(ss.lane[SPOOL_TELEMETRY].acked_records, 0);
    atomic_store(&f->srv->status, 204);
    /* the first batch (records 1 and 2) goes; record 3 waits for its flush
     * time, unacknowledged, until close */
    wait_pending(f, 1);
    spool_stats(f->sp, &ss);
    assert_int_equal(ss.lane[SPOOL_TELEMETRY].acked_records, 2);
    assert_int_equal(ss.lane[SPOOL_TELEMETRY].cursor, 2);
    struct influx_stats st;
    influx_stats(f->w, &st);
    assert_int_equal(st.points_written, 3);
    influx_close(f->w, &st);
    f->w = NULL;
    assert_int_equal(pending(f), 0);
    assert_int_equal(st.points_written, 4);
    spool_close(f->sp);
    f->sp = NULL;
}

/* Alarm transitions go in the spool's alert lane and have their own writer:
 * while a telemetry batch is refused and retried (InfluxDB busy, or one
 * batch of a backlog), an alarm is written at once, and the telemetry goes
 * on in its order afterwards. An alarm refused in turn is retried by its
 * writer without holding up telemetry. */
static void test_alerts_ahead_of_backlog(void **state)
{
    struct fx *f = *state;
    atomic_store(&f->srv->status, 503);
    atomic_store(&f->srv->alert_status, 204);
    open_writer(f);
    put(f, "t v=1 1\nt v=2 2\nt v=3 3\n");
    put(f, "t v=4 4\nt v=5 5\nt v=6 6\n");
    put(f, "t v=7 7\n");
    wait_requests(f->srv, 2); /* the first batch, refused and retried */
    const char *alarm = "alarm,alarm_id=sos:p1,event=raise escalation=0i 8\n";
    assert_int_equal(influx_enqueue_alert(f->w, ch_xstrdup(alarm), strlen(alarm), 1), 0);
    struct influx_stats st;
    int64_t end = ch_mono_ms() + 5000;
    do { /* written while the telemetry is still refused */
        ch_sleep_ms(5);
        influx_stats(f->w, &st);
    } while (st.points_written < 1 && ch_mono_ms() < end);
    assert_int_equal(st.points_written, 1);
    uint64_t n;
    spool_pending(f->sp, SPOOL_ALERT, &n, NULL);
    assert_int_equal(n, 0);
    assert_true(pending(f) > 0);
    /* an alarm refused (503) is retried by its own writer; telemetry goes */
    atomic_store(&f->srv->alert_status, 503);
    const char *alarm2 = "alarm,alarm_id=sos:p2,event=raise escalation=0i 9\n";
    assert_int_equal(influx_enqueue_alert(f->w, ch_xstrdup(alarm2), strlen(alarm2), 1), 0);
    atomic_store(&f->srv->status, 204);
    end = ch_mono_ms() + 5000;
    do { /* the two full batches (the last, partial, waits for its flush) */
        ch_sleep_ms(5);
        influx_stats(f->w, &st);
    } while (st.points_written < 7 && ch_mono_ms() < end);
    assert_int_equal(st.points_written, 7);
    spool_pending(f->sp, SPOOL_ALERT, &n, NULL);
    assert_int_equal(n, 1);
    atomic_store(&f->srv->alert_status, 204);
    st = close_writer(f);
    /* the telemetry in its order, each batch once written */
    int r = requests(f->srv);
    const char *want[] = {"t v=1 1\nt v=2 2\nt v=3 3\n", "t v=4 4\nt v=5 5\nt v=6 6\n",
                          "t v=7 7\n"};
    int k = 0, alarms = 0;
    for (int i = 0; i < r; i++) {
        if (f->srv->req[i].status == 204 && strncmp(body(f, i), "t ", 2) == 0)
            assert_string_equal(body(f, i), want[k++]);
        alarms += f->srv->req[i].status == 204 && strcmp(body(f, i), alarm2) == 0;
    }
    assert_int_equal(k, 3);
    assert_int_equal(alarms, 1); /* written once its writer's retry came */
    assert_int_equal(st.points_written, 9);
    /* both lanes acknowledged: nothing would be written again */
    open_spool(f);
    spool_pending(f->sp, SPOOL_ALERT, &n, NULL);
    assert_int_equal(n, 0);
    assert_int_equal(pending(f), 0);
    spool_close(f->sp);
    f->sp = NULL;
}

/* 400 (InfluxDB 1.x partial write: a field type conflict): the whole batch
 * goes to the dead letter with InfluxDB's reason, is acknowledged, is not
 * retried, and the next batch goes through. */
static void test_dead_letter_400(void **state)
{
    struct fx *f = *state;
    f->srv->script[0] = 400;
    f->srv->error_body = "{\"error\":\"partial write: field type conflict: input field "
                         "\\\"v\\\" on measurement \\\"m\\\" is type float, already exists as "
                         "type integer dropped=1\"}";
    open_writer(f);
    put(f, "m v=1 1\nm v=2 2\nm v=3 3\n");
    put(f, "m v=4 4\n");
    struct influx_stats st = close_writer(f);
    assert_int_equal(requests(f->srv), 2); /* no retry of the refused batch */
    assert_string_equal(body(f, 1), "m v=4 4\n");
    assert_int_equal(st.dead_letter_batches, 1);
    assert_int_equal(st.dead_letter_lines, 3);
    assert_int_equal(st.write_rejected, 1);
    assert_int_equal(st.points_written, 3); /* 2 of the partial write, then 1 */
    assert_int_equal(st.write_errors, 1);
    assert_int_equal(st.write_retries, 0);
    char *dl = slurp(f->dead);
    assert_non_null(dl);
    assert_true(matches(dl, "^# " ISO_TIME " HTTP 400: partial write: field type conflict: input "
                            "field \"v\" on measurement \"m\" is type float, already exists as "
                            "type integer dropped=1\n"
                            "m v=1 1\nm v=2 2\nm v=3 3\n$"));
    free(dl);
    open_spool(f); /* acknowledged: nothing is sent again after a restart */
    assert_int_equal(pending(f), 0);
    spool_close(f->sp);
    f->sp = NULL;
}

/* 413: split in halves down to one line; the one line InfluxDB still refuses
 * goes to the dead letter, the others are written, in order. */
static void test_413_split(void **state)
{
    struct fx *f = *state;
    f->srv->script[0] = 413; /* 1 2 3 */
    f->srv->script[2] = 413; /* 2 3 */
    f->srv->script[3] = 413; /* 2 */
    f->srv->error_body = "{\"error\":\"Request Entity Too Large\"}";
    open_writer(f);
    put(f, "m v=1 1\nm v=2 2\nm v=3 3\n");
    put(f, "m v=4 4\n");
    struct influx_stats st = close_writer(f);
    assert_int_equal(requests(f->srv), 6);
    const char *want[] = {"m v=1 1\nm v=2 2\nm v=3 3\n",
                          "m v=1 1\n",
                          "m v=2 2\nm v=3 3\n",
                          "m v=2 2\n",
                          "m v=3 3\n",
                          "m v=4 4\n"};
    for (int i = 0; i < 6; i++)
        assert_string_equal(body(f, i), want[i]);
    assert_int_equal(st.points_written, 3);
    assert_int_equal(st.dead_letter_batches, 1);
    assert_int_equal(st.dead_letter_lines, 1);
    assert_int_equal(st.write_rejected, 1);
    assert_int_equal(st.write_retries, 0);
    char *dl = slurp(f->dead);
    assert_true(matches(dl, "^# " ISO_TIME " HTTP 413: Request Entity Too Large\nm v=2 2\n$"));
    free(dl);
}

/* The dead letter cannot be written (its directory is missing): the refused
 * batch is neither dropped nor acknowledged, and the writer waits on it;
 * once the directory exists the entry is written and the writer goes on. */
static void test_dead_letter_unwritable(void **state)
{
    struct fx *f = *state;
    char dir[128];
    snprintf(dir, sizeof dir, "%s/later", f->dir);
    snprintf(f->dead, sizeof f->dead, "%s/later/dl.lp", f->dir);
    f->srv->script[0] = 400;
    open_writer(f);
    put(f, "m v=1 1\nm v=2 2\nm v=3 3\n");
    put(f, "m v=4 4\nm v=5 5\nm v=6 6\n");
    wait_requests(f->srv, 1);
    ch_sleep_ms(300); /* a few attempts at the dead letter */
    assert_int_equal(requests(f->srv), 1);
    assert_int_equal(pending(f), 2);
    assert_int_equal(mkdir(dir, 0750), 0);
    wait_requests(f->srv, 2);
    struct influx_stats st = close_writer(f);
    assert_string_equal(body(f, 1), "m v=4 4\nm v=5 5\nm v=6 6\n");
    assert_int_equal(st.dead_letter_lines, 3);
    char *dl = slurp(f->dead);
    assert_true(matches(dl, "^# " ISO_TIME " HTTP 400: x\nm v=1 1\nm v=2 2\nm v=3 3\n$"));
    free(dl);
}

/* InfluxDB never answers well: close gives up at the shutdown deadline; what
 * is left stays in the spool, and the next start writes all of it, in
 * order, before anything new. */
static void test_restart_writes_spool(void **state)
{
    struct fx *f = *state;
    atomic_store(&f->srv->status, 503);
    f->cfg.shutdown_timeout_ms = 1200;
    f->cfg.max_backoff_ms = 60000;
    open_writer(f);
    put(f, "m v=1 1\nm v=2 2\nm v=3 3\n");
    put(f, "m v=4 4\nm v=5 5\n");
    wait_requests(f->srv, 1);
    int64_t t0 = ch_mono_ms();
    struct influx_stats st = close_writer(f);
    int64_t took = ch_mono_ms() - t0;
    assert_true(took < 2500);
    assert_int_equal(st.points_written, 0);
    assert_int_equal(st.dropped, 0);
    int before = requests(f->srv);
    assert_true(before >= 2); /* retried every 500 ms at most during shutdown */

    atomic_store(&f->srv->status, 204);
    open_spool(f);
    assert_int_equal(pending(f), 2);
    open_writer(f);
    put(f, "m v=6 6\n");
    wait_requests(f->srv, before + 2);
    st = close_writer(f);
    assert_int_equal(requests(f->srv), before + 2);
    assert_string_equal(body(f, before), "m v=1 1\nm v=2 2\nm v=3 3\n");
    assert_string_equal(body(f, before + 1), "m v=4 4\nm v=5 5\nm v=6 6\n");
    assert_int_equal(st.points_written, 6);
    open_spool(f);
    assert_int_equal(pending(f), 0);
    spool_close(f->sp);
    f->sp = NULL;
}

/* A long outage fills the spool's bound: the oldest records are dropped and
 * counted by the spool, ingest never blocks, and what is kept is written in
 * order without duplicates once InfluxDB is back. */
static void test_spool_bound(void **state)
{
    struct fx *f = *state;
    atomic_store(&f->srv->status, 503);
    f->so.max_bytes = 64 * 1024;
    f->so.segment_bytes = 4096;
    f->cfg.batch_size = 100000;
    f->cfg.flush_interval_ms = 10;
    open_writer(f);
    enum { N = 3000 };
    int64_t t0 = ch_mono_ms();
    for (int i = 1; i <= N; i++) {
        char line[64];
        snprintf(line, sizeof line, "m v=%d %d\n", i, i);
        put(f, line);
    }
    assert_true(ch_mono_ms() - t0 < 5000);
    struct spool_stats ss;
    spool_stats(f->sp, &ss);
    uint64_t dropped = ss.lane[SPOOL_TELEMETRY].dropped_records;
    assert_true(dropped > 0);
    assert_true(ss.disk_bytes <= 64 * 1024);
    atomic_store(&f->srv->status, 204);
    struct influx_stats st = close_writer(f);
    /* the first batch, read before the bound was reached, is retried from
     * memory; then comes what the spool kept, up to the newest, in order */
    int last = 0, written = 0;
    for (int i = 0; i < requests(f->srv); i++) {
        if (f->srv->req[i].status != 204)
            continue;
        for (const char *p = body(f, i); *p; p = strchr(p, '\n') + 1) {
            int v = atoi(p + 4);
            assert_true(v > last);
            last = v;
            written++;
        }
    }
    assert_int_equal(last, N);
    assert_int_equal((uint64_t)written, st.points_written);
    assert_true((uint64_t)written + dropped >= N);
}

/* A hand-over larger than a spool record is stored as several records, cut
 * at line boundaries, and written whole and in order. */
static void test_large_handover(void **state)
{
    struct fx *f = *state;
    f->so.max_bytes = 64 * 1024; /* records of at most 16 KiB */
    f->cfg.batch_size = 100000;
    f->cfg.flush_interval_ms = 10;
    open_writer(f);
    size_t cap = 40000, len = 0;
    char *big = ch_xmalloc(cap);
    int n = 0;
    while (len + 32 < cap)
        len += (size_t)snprintf(big + len, cap - len, "m v=%d %d\n", n, n), n++;
    char *copy = ch_xstrdup(big);
    assert_int_equal(influx_enqueue(f->w, INFLUX_RP_DEFAULT, copy, len, (size_t)n), 0);
    struct spool_stats ss;
    spool_stats(f->sp, &ss);
    assert_true(ss.lane[SPOOL_TELEMETRY].appended_records >= 3);
    struct influx_stats st = close_writer(f);
    assert_int_equal(st.points_written, n);
    size_t got = 0;
    for (int i = 0; i < requests(f->srv); i++) {
        size_t k = strlen(body(f, i));
        assert_memory_equal(body(f, i), big + got, k);
        got += k;
    }
    assert_int_equal(got, len);
    free(big);
}

/* A record that is not line protocol (another version's?) is never sent and
 * never lost: it goes to the dead letter; the batches around it are written. */
static void test_foreign_record(void **state)
{
    struct fx *f = *state;
    open_spool(f);
    assert_int_equal(spool_append(f->sp, SPOOL_TELEMETRY, INFLUX_RECORD_LP, "a v=1 1\n", 8, NULL),
                     0);
    assert_int_equal(spool_append(f->sp, SPOOL_TELEMETRY, 9, "opaque\n", 7, NULL), 0);
    assert_int_equal(spool_append(f->sp, SPOOL_TELEMETRY, INFLUX_RECORD_LP, "b v=1 1\n", 8, NULL),
                     0);
    open_writer(f);
    struct influx_stats st = close_writer(f);
    assert_int_equal(requests(f->srv), 2);
    assert_string_equal(body(f, 0), "a v=1 1\n");
    assert_string_equal(body(f, 1), "b v=1 1\n");
    assert_int_equal(st.dead_letter_batches, 1);
    char *dl = slurp(f->dead);
    assert_true(matches(dl, "^# " ISO_TIME " spool record 2 has type 9, not line protocol "
                            "\\(1, 2\\)\nopaque\n$"));
    free(dl);
}

static void test_gzip_and_create_database(void **state)
{
    struct fx *f = *state;
    f->cfg.gzip = true;
    f->cfg.create_database = true;
    f->cfg.username = "u";
    f->cfg.password = "p";
    f->cfg.database = "care.db";
    open_writer(f);
    put(f, "m v=1 1\nm v=2 2\nm v=3 3\n");
    wait_requests(f->srv, 2);
    close_writer(f);
    assert_string_equal(f->srv->req[0].target, "POST /query");
    assert_string_equal(body(f, 0), "q=CREATE%20DATABASE%20%22care.db%22");
    assert_string_equal(f->srv->req[0].auth, "Basic dTpw");
    assert_string_equal(f->srv->req[1].target, "POST /write?db=care.db&precision=ms");
    assert_true(f->srv->req[1].gzip);
    assert_string_equal(body(f, 1), "m v=1 1\nm v=2 2\nm v=3 3\n");
}

/* A 403 on CREATE DATABASE (no admin rights) does not stop the writes; a 404
 * on a write (database dropped) creates it again. */
static void test_create_database(void **state)
{
    struct fx *f = *state;
    f->cfg.create_database = true;
    f->srv->script[0] = 403; /* CREATE DATABASE */
    f->srv->script[1] = 404; /* write */
    open_writer(f);
    put(f, "m v=1 1\nm v=2 2\nm v=3 3\n");
    wait_requests(f->srv, 4);
    struct influx_stats st = close_writer(f);
    assert_string_equal(f->srv->req[1].target, "POST /write?db=db&precision=ms");
    assert_string_equal(f->srv->req[2].target, "POST /query");
    assert_string_equal(f->srv->req[3].target, "POST /write?db=db&precision=ms");
    assert_int_equal(st.points_written, 3);
}

/* With influx.retention.raw, readings go to the policy raw and the rest to
 * the default one: a request never mixes them, and their order holds. */
static void test_readings_policy(void **state)
{
    struct fx *f = *state;
    f->cfg.retention.raw_ms = 30 * 86400000LL;
    f->cfg.flush_interval_ms = 10;
    open_writer(f);
    const char *lines[] = {"r v=1 1\n", "d v=2 2\n", "r v=3 3\n"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(influx_enqueue(f->w, i == 1 ? INFLUX_RP_DEFAULT : INFLUX_RP_READINGS,
                                        ch_xstrdup(lines[i]), strlen(lines[i]), 1),
                         0);
    wait_requests(f->srv, 3);
    struct influx_stats st = close_writer(f);
    assert_int_equal(requests(f->srv), 3);
    assert_string_equal(f->srv->req[0].target, "POST /write?db=db&precision=ms&rp=raw");
    assert_string_equal(body(f, 0), lines[0]);
    assert_string_equal(f->srv->req[1].target, "POST /write?db=db&precision=ms");
    assert_string_equal(body(f, 1), lines[1]);
    assert_string_equal(f->srv->req[2].target, "POST /write?db=db&precision=ms&rp=raw");
    assert_string_equal(body(f, 2), lines[2]);
    assert_int_equal(st.points_written, 3);
}

static void test_v2(void **state)
{
    struct fx *f = *state;
    strcat(f->url, "/");
    f->cfg.version = 2;
    f->cfg.database = NULL;
    f->cfg.org = "care home";
    f->cfg.bucket = "raw/7d";
    f->cfg.token = "t0ken==";
    f->cfg.create_database = true; /* v1 only: no /query */
    open_writer(f);
    put(f, "m v=1 1\nm v=2 2\nm v=3 3\n");
    wait_requests(f->srv, 1);
    close_writer(f);
    assert_int_equal(requests(f->srv), 1);
    assert_string_equal(f->srv->req[0].target,
                        "POST /api/v2/write?org=care%20home&bucket=raw%2F7d&precision=ms");
    assert_string_equal(f->srv->req[0].auth, "Token t0ken==");
}

int main(void)
{
    log_set_level(LOGL_ERROR);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_batch_by_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_by_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_keeps_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ack_only_after_2xx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alerts_ahead_of_backlog, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_letter_400, setup, teardown),
        cmocka_unit_test_setup_teardown(test_413_split, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_letter_unwritable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_writes_spool, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spool_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_handover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreign_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gzip_and_create_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readings_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_v2, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
