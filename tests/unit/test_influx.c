/* The InfluxDB writer against a scripted HTTP server in the test process:
 * batching by size and by time, order kept across retries, what is retried
 * and what is dropped, the memory bound, the shutdown deadline, gzip, and the
 * v1 CREATE DATABASE and v2 token. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "config.h"
#include "err.h"
#include "influx.h"
#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

/* ---- a scripted HTTP/1.1 server ------------------------------------------ */

#define MAX_REQ 64

struct request {
    char *target; /* "POST /write?db=x&precision=ms" */
    char *auth;   /* Authorization header or NULL */
    char *body;   /* decompressed */
    bool gzip;
};

struct server {
    int fd;
    int port;
    pthread_t thread;
    atomic_bool stop;
    pthread_mutex_t lock;
    struct request req[MAX_REQ];
    int n_req;
    int script[MAX_REQ]; /* status for request i; 0: 204 */
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
        int status = i < MAX_REQ && s->script[i] ? s->script[i] : 204;
        if (i < MAX_REQ)
            s->req[s->n_req++] = rq;
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

static void *server_run(void *arg)
{
    struct server *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int c = accept(s->fd, NULL, NULL);
        if (c >= 0)
            serve_conn(s, c);
    }
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
    struct influx *w;
};

static int setup(void **state)
{
    struct fx *f = ch_xcalloc(1, sizeof *f);
    f->srv = server_start();
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%d", f->srv->port);
    f->cfg = (struct hubcfg_influx){
        .url = f->url,
        .version = 1,
        .database = "db",
        .batch_size = 3,
        .flush_interval_ms = 3600000,
        .timeout_ms = 2000,
        .max_backoff_ms = 100,
        .max_buffer = 1 << 20,
        .shutdown_timeout_ms = 2000,
    };
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    server_stop(f->srv);
    free(f);
    return 0;
}

static void open_writer(struct fx *f)
{
    assert_int_equal(influx_open(&f->cfg, &f->w), 0);
}

static struct influx_stats close_writer(struct fx *f)
{
    struct influx_stats st;
    influx_close(f->w, &st);
    f->w = NULL;
    return st;
}

static void put(struct fx *f, const char *lines)
{
    size_t n = 0;
    for (const char *p = lines; *p; p++)
        n += *p == '\n';
    assert_int_equal(influx_enqueue(f->w, ch_xstrdup(lines), strlen(lines), n), 0);
}

static const char *body(struct fx *f, int i)
{
    return f->srv->req[i].body;
}

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
    assert_int_equal(st.write_errors + st.dropped + st.write_rejected, 0);
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

/* 5xx and the like: the same batch again, first, until it is written. */
static void test_retry_keeps_order(void **state)
{
    struct fx *f = *state;
    f->srv->script[0] = 503;
    f->srv->script[1] = 500;
    f->srv->script[2] = 429;
    f->srv->script[3] = 401;
    open_writer(f);
    put(f, "a v=1 1\na v=2 2\na v=3 3\n");
    put(f, "b v=1 1\n");
    wait_requests(f->srv, 5);
    struct influx_stats st = close_writer(f);
    assert_int_equal(requests(f->srv), 6);
    for (int i = 0; i < 5; i++)
        assert_string_equal(body(f, i), "a v=1 1\na v=2 2\na v=3 3\n");
    assert_string_equal(body(f, 5), "b v=1 1\n");
    assert_int_equal(st.points_written, 4);
    assert_int_equal(st.write_errors, 4);
    assert_int_equal(st.write_retries, 4);
    assert_int_equal(st.dropped + st.write_rejected, 0);
}

/* 400 with InfluxDB 1.x's partial write: the refused points are counted. */
static void test_partial_write(void **state)
{
    struct fx *f = *state;
    f->srv->script[0] = 400;
    f->srv->error_body = "{\"error\":\"partial write: field type conflict: input field "
                         "\\\"v\\\" on measurement \\\"m\\\" is type float dropped=1\"}";
    open_writer(f);
    put(f, "m v=1 1\nm v=2 2\nm v=3 3\n");
    put(f, "m v=4 4\n");
    struct influx_stats st = close_writer(f);
    assert_int_equal(requests(f->srv), 2); /* no retry of the refused batch */
    assert_int_equal(st.write_rejected, 1);
    assert_int_equal(st.points_written, 3);
    assert_int_equal(st.write_errors, 1);
    assert_int_equal(st.write_retries, 0);
}

/* Any other 4xx: the whole batch is refused, dropped and counted; the next
 * one goes on. */
static void test_refused(void **state)
{
    struct fx *f = *state;
    f->srv->script[0] = 413;
    open_writer(f);
    put(f, "m v=1 1\nm v=2 2\nm v=3 3\n");
    put(f, "m v=4 4\n");
    struct influx_stats st = close_writer(f);
    assert_int_equal(requests(f->srv), 2);
    assert_int_equal(st.write_rejected, 3);
    assert_int_equal(st.points_written, 1);
}

/* max_buffer bounds what waits in memory; beyond it points are dropped and
 * counted, and what was accepted is still written. */
static void test_buffer_full(void **state)
{
    struct fx *f = *state;
    f->srv->script[0] = 503;
    f->srv->script[1] = 503;
    f->cfg.max_buffer = 40;
    f->cfg.batch_size = 1000;
    f->cfg.flush_interval_ms = 10;
    open_writer(f);
    put(f, "m v=1 1\n");  /* 8 bytes */
    put(f, "m v=22 2\n"); /* 9 */
    char *big = ch_xstrdup("m v=3333333333333333333333333 3\n");
    assert_int_equal(influx_enqueue(f->w, big, strlen(big), 1), CH_EFULL);
    put(f, "m v=4 4\n");
    struct influx_stats st;
    influx_stats(f->w, &st);
    assert_int_equal(st.dropped, 1);
    assert_int_equal(st.queued_bytes, 25);
    wait_requests(f->srv, 1);
    st = close_writer(f);
    assert_int_equal(st.points_written, 3);
    assert_int_equal(st.dropped, 1);
    for (int i = 0; i < requests(f->srv); i++)
        assert_null(strstr(body(f, i), "3333"));
}

/* InfluxDB never answers well: close gives up at the shutdown deadline and
 * counts what it could not write. */
static void test_shutdown_deadline(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < MAX_REQ; i++)
        f->srv->script[i] = 503;
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
    assert_int_equal(st.dropped, 5);
    assert_true(requests(f->srv) >= 2); /* retried every 500 ms at most during shutdown */
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

/* A 403 on CREATE DATABASE (no admin rights) does not stop the writes. */
static void test_create_database_refused(void **state)
{
    struct fx *f = *state;
    f->cfg.create_database = true;
    f->srv->script[0] = 403;
    open_writer(f);
    put(f, "m v=1 1\nm v=2 2\nm v=3 3\n");
    wait_requests(f->srv, 2);
    struct influx_stats st = close_writer(f);
    assert_string_equal(f->srv->req[1].target, "POST /write?db=db&precision=ms");
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
        cmocka_unit_test_setup_teardown(test_partial_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buffer_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gzip_and_create_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_database_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_v2, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
