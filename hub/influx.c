/* The writer thread and its queue; see influx.h for the behaviour.
 *
 * Invariants (all under w->lock):
 * - the queue is a FIFO of chunks, one per hand-over; a chunk may be cut at a
 *   line boundary when a batch ends inside it (off, lines say what is left);
 * - q_lines/q_bytes count what is queued, inflight_bytes the batch being sent;
 *   their sum never exceeds max_buffer after an accepted enqueue;
 * - only the writer thread takes from the queue, so batches leave in the order
 *   points arrived, and a batch is retried until it is written, refused, or
 *   the shutdown deadline passes: nothing overtakes it.
 * The HTTP request runs without the lock held; the MQTT thread is never
 * blocked by InfluxDB. */
#include "influx.h"
#include "config.h"
#include "err.h"
#include "log.h"
#include "util.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#define BACKOFF_START_MS  500
#define SHUTDOWN_RETRY_MS 500
#define ERROR_BODY_MAX    300  /* logged of InfluxDB's answer */
#define RESP_MAX          4096 /* kept of it: "dropped=N" ends a long partial-write error */

struct chunk {
    struct chunk *next;
    char *data;
    size_t len, off; /* data[off..len) is still queued */
    size_t lines;    /* points still queued */
    int64_t at_ms;   /* monotonic time of the hand-over */
};

struct buf {
    char *data;
    size_t len, cap;
};

enum outcome { SENT, REFUSED, RETRY };

struct influx {
    const struct hubcfg_influx *cfg;
    const char *name; /* log instance: the URL */
    char *write_url;
    char *query_url; /* v1 /query, for CREATE DATABASE */
    CURL *curl;
    struct curl_slist *headers;
    struct curl_slist *headers_gz;
    pthread_t thread;

    pthread_mutex_t lock;
    pthread_cond_t cond; /* data arrived, or stop */
    struct chunk *head, *tail;
    size_t q_lines, q_bytes, inflight_bytes;
    bool full; /* dropping since the buffer filled up */
    uint64_t dropped_while_full;
    int64_t deadline_ms; /* monotonic; set before stopping */
    atomic_bool stopping;

    /* writer thread only */
    bool need_db;
    int64_t backoff_ms;
    struct buf batch;
    size_t batch_lines;
    struct buf gz;
    char resp[RESP_MAX + 1]; /* start of the response body */
    size_t resp_len;
    long status;                   /* HTTP status of the last request; 0: no answer */
    char why[ERROR_BODY_MAX + 64]; /* what went wrong with the last request */

    atomic_uint_fast64_t points_written, write_errors, write_retries, write_rejected, dropped;
};

static void count(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static void buf_put(struct buf *b, const char *s, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->len + n)
            cap *= 2;
        b->data = ch_xrealloc(b->data, cap);
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

/* ---- the queue (lock held) ---------------------------------------------- */

static void pop_chunk(struct influx *w)
{
    struct chunk *c = w->head;
    w->head = c->next;
    if (!w->head)
        w->tail = NULL;
    free(c->data);
    free(c);
}

/* Moves up to batch_size points from the queue into w->batch. */
static void take_batch(struct influx *w)
{
    size_t want = (size_t)w->cfg->batch_size;
    w->batch.len = 0;
    w->batch_lines = 0;
    while (w->head && w->batch_lines < want) {
        struct chunk *c = w->head;
        size_t need = want - w->batch_lines, end = c->len, n = c->lines;
        if (c->lines > need) {
            /* cut after the need-th newline */
            end = c->off;
            for (size_t k = 0; k < need; k++)
                end = (size_t)((char *)memchr(c->data + end, '\n', c->len - end) - c->data) + 1;
            n = need;
        }
        buf_put(&w->batch, c->data + c->off, end - c->off);
        w->batch_lines += n;
        w->q_bytes -= end - c->off;
        w->q_lines -= n;
        c->off = end;
        c->lines -= n;
        if (c->lines == 0)
            pop_chunk(w);
    }
    w->inflight_bytes = w->batch.len;
}

/* Drops everything queued (shutdown gave up); counts it. */
static void drop_queue(struct influx *w)
{
    if (w->q_lines)
        LOGE("influx", w->name, "%zu points not written by the end of the shutdown timeout",
             w->q_lines);
    count(&w->dropped, w->q_lines);
    while (w->head)
        pop_chunk(w);
    w->q_lines = w->q_bytes = 0;
}

int influx_enqueue(struct influx *w, char *data, size_t len, size_t lines)
{
    if (lines == 0) {
        free(data);
        return 0;
    }
    size_t max = (size_t)w->cfg->max_buffer;
    pthread_mutex_lock(&w->lock);
    size_t used = w->q_bytes + w->inflight_bytes;
    if (w->full && used + len <= max / 2) {
        LOGI("influx", w->name, "buffer has room again; %" PRIu64 " points were dropped",
             w->dropped_while_full);
        w->full = false;
        w->dropped_while_full = 0;
    }
    if (used + len > max) {
        if (!w->full)
            LOGE("influx", w->name,
                 "buffer full (%zu bytes queued): dropping new points until InfluxDB catches up",
                 used);
        w->full = true;
        w->dropped_while_full += lines;
        pthread_mutex_unlock(&w->lock);
        count(&w->dropped, lines);
        free(data);
        return CH_EFULL;
    }
    struct chunk *c = ch_xmalloc(sizeof *c);
    *c = (struct chunk){.data = data, .len = len, .lines = lines, .at_ms = ch_mono_ms()};
    if (w->tail)
        w->tail->next = c;
    else
        w->head = c;
    w->tail = c;
    bool wake = w->q_lines == 0 || w->q_lines + lines >= (size_t)w->cfg->batch_size;
    w->q_lines += lines;
    w->q_bytes += len;
    if (wake)
        pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

/* ---- HTTP --------------------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *ctx)
{
    struct influx *w = ctx;
    size_t n = size * nmemb, room = RESP_MAX - w->resp_len;
    size_t take = n < room ? n : room;
    memcpy(w->resp + w->resp_len, data, take);
    w->resp_len += take;
    w->resp[w->resp_len] = '\0';
    return n;
}

/* Aborts a request that runs past the shutdown deadline. */
static int on_progress(void *ctx, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    struct influx *w = ctx;
    return atomic_load(&w->stopping) && ch_mono_ms() > w->deadline_ms;
}

/* Strips the response to one line for the log. */
static const char *resp_text(struct influx *w)
{
    for (size_t i = 0; i < w->resp_len; i++)
        if (w->resp[i] == '\n' || w->resp[i] == '\r')
            w->resp[i] = ' ';
    return w->resp_len ? w->resp : "(no body)";
}

/* POSTs body to url and classifies the result; on failure w->why says what
 * happened. */
static enum outcome post(struct influx *w, const char *url, const char *body, size_t len,
                         struct curl_slist *headers)
{
    CURL *c = w->curl;
    w->resp_len = 0;
    w->resp[0] = '\0';
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    w->status = 0;
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
        snprintf(w->why, sizeof w->why, "%s", curl_easy_strerror(rc));
        return RETRY;
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    w->status = status;
    if (status >= 200 && status < 300)
        return SENT;
    snprintf(w->why, sizeof w->why, "HTTP %ld: %.*s", status, ERROR_BODY_MAX, resp_text(w));
    if (status >= 500 || status == 408 || status == 429 || status == 401 || status == 403 ||
        status == 404) {
        if (status == 404 && w->cfg->version == 1 && w->cfg->create_database)
            w->need_db = true;
        return RETRY;
    }
    return REFUSED;
}

/* Creates the v1 database. A refusal (403 for a user without admin rights on
 * a database that exists, say) is logged and the writes go ahead; only an
 * unreachable or failing InfluxDB is retried. */
static enum outcome create_database(struct influx *w)
{
    char *name = curl_easy_escape(w->curl, w->cfg->database, 0);
    if (!name)
        abort(); /* out of memory, as ch_xmalloc does */
    /* the name is an identifier ([A-Za-z0-9_.-]), safe inside double quotes */
    size_t n = strlen(name) + 64;
    char *body = ch_xmalloc(n);
    snprintf(body, n, "q=CREATE%%20DATABASE%%20%%22%s%%22", name);
    curl_free(name);
    enum outcome o = post(w, w->query_url, body, strlen(body), NULL);
    free(body);
    if (o == SENT)
        LOGI("influx", w->name, "database %s ready", w->cfg->database);
    else if (w->status >= 400 && w->status < 500)
        LOGW("influx", w->name, "CREATE DATABASE %s refused (%s); writing anyway", w->cfg->database,
             w->why);
    else
        return RETRY;
    w->need_db = false;
    return SENT;
}

/* gzip of the batch into w->gz; false if zlib fails (then sent plain). */
static bool compress_batch(struct influx *w)
{
    z_stream z = {0};
    if (deflateInit2(&z, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return false;
    size_t bound = deflateBound(&z, (uLong)w->batch.len) + 32;
    if (w->gz.cap < bound) {
        w->gz.data = ch_xrealloc(w->gz.data, bound);
        w->gz.cap = bound;
    }
    z.next_in = (Bytef *)w->batch.data;
    z.avail_in = (uInt)w->batch.len;
    z.next_out = (Bytef *)w->gz.data;
    z.avail_out = (uInt)w->gz.cap;
    int rc = deflate(&z, Z_FINISH);
    w->gz.len = z.total_out;
    deflateEnd(&z);
    return rc == Z_STREAM_END;
}

static enum outcome write_batch(struct influx *w)
{
    if (w->cfg->gzip && compress_batch(w))
        return post(w, w->write_url, w->gz.data, w->gz.len, w->headers_gz);
    return post(w, w->write_url, w->batch.data, w->batch.len, w->headers);
}

/* ---- the thread ----------------------------------------------------------- */

static void deadline_to_timespec(int64_t mono_ms, struct timespec *ts)
{
    ts->tv_sec = (time_t)(mono_ms / 1000);
    ts->tv_nsec = (long)(mono_ms % 1000) * 1000000L;
}

/* The back-off pause (lock held): waits until mono time until, ignoring
 * hand-overs; returns early when a stop begins, and never waits past the
 * shutdown deadline. */
static void wait_until(struct influx *w, int64_t until)
{
    bool stopping = atomic_load(&w->stopping);
    for (;;) {
        if (!stopping && atomic_load(&w->stopping))
            return;
        int64_t end = until;
        if (atomic_load(&w->stopping) && w->deadline_ms < end)
            end = w->deadline_ms;
        if (ch_mono_ms() >= end)
            return;
        struct timespec ts;
        deadline_to_timespec(end, &ts);
        pthread_cond_timedwait(&w->cond, &w->lock, &ts);
    }
}

static int64_t first_backoff(const struct hubcfg_influx *cfg)
{
    return BACKOFF_START_MS < cfg->max_backoff_ms ? BACKOFF_START_MS : cfg->max_backoff_ms;
}

static bool past_deadline(struct influx *w)
{
    return atomic_load(&w->stopping) && ch_mono_ms() >= w->deadline_ms;
}

/* InfluxDB 1.x writes the good points of a batch and answers 400 "partial
 * write: ... dropped=N". Returns N, or the whole batch when it does not say. */
static size_t refused_points(const struct influx *w)
{
    const char *p = strstr(w->resp, "partial write");
    const char *d = p ? strstr(p, "dropped=") : NULL;
    if (d) {
        unsigned long long n = strtoull(d + 8, NULL, 10);
        if (n > 0 && n <= w->batch_lines)
            return (size_t)n;
    }
    return w->batch_lines;
}

/* Sends w->batch until it is written or refused, or shutdown gives up on it. */
static void deliver(struct influx *w)
{
    for (int failures = 0;; failures++) {
        char what[64] = "CREATE DATABASE";
        enum outcome o = w->need_db ? create_database(w) : SENT;
        if (o == SENT) {
            snprintf(what, sizeof what, "write of %zu point%s", w->batch_lines,
                     w->batch_lines == 1 ? "" : "s");
            o = write_batch(w);
        }
        if (o == SENT) {
            if (failures)
                LOGI("influx", w->name, "%s succeeded after %d failed attempts", what, failures);
            count(&w->points_written, w->batch_lines);
            w->backoff_ms = first_backoff(w->cfg);
            return;
        }
        count(&w->write_errors, 1);
        if (o == REFUSED) {
            size_t refused = refused_points(w);
            LOGE("influx", w->name, "%s: %zu refused and dropped: %s", what, refused, w->why);
            count(&w->write_rejected, refused);
            count(&w->points_written, w->batch_lines - refused);
            return;
        }
        pthread_mutex_lock(&w->lock);
        /* during shutdown, try often: InfluxDB may be back any moment */
        int64_t pause = atomic_load(&w->stopping) && w->backoff_ms > SHUTDOWN_RETRY_MS
                            ? SHUTDOWN_RETRY_MS
                            : w->backoff_ms;
        LOGW("influx", w->name, "%s failed: %s; retry in %" PRId64 " ms", what, w->why, pause);
        if (!past_deadline(w))
            wait_until(w, ch_mono_ms() + pause);
        bool give_up = past_deadline(w);
        pthread_mutex_unlock(&w->lock);
        if (give_up) {
            LOGE("influx", w->name, "shutdown timeout: %zu points in flight not written",
                 w->batch_lines);
            count(&w->dropped, w->batch_lines);
            return;
        }
        count(&w->write_retries, 1);
        w->backoff_ms =
            w->backoff_ms * 2 > w->cfg->max_backoff_ms ? w->cfg->max_backoff_ms : w->backoff_ms * 2;
    }
}

static bool batch_due(struct influx *w)
{
    if (w->q_lines >= (size_t)w->cfg->batch_size)
        return true;
    return w->q_lines > 0 && (atomic_load(&w->stopping) ||
                              ch_mono_ms() >= w->head->at_ms + w->cfg->flush_interval_ms);
}

static void *run(void *arg)
{
    struct influx *w = arg;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!batch_due(w)) {
            if (atomic_load(&w->stopping))
                goto out; /* nothing left */
            /* woken by a full batch, a stop, or the oldest point's flush time */
            if (w->q_lines) {
                struct timespec ts;
                deadline_to_timespec(w->head->at_ms + w->cfg->flush_interval_ms, &ts);
                pthread_cond_timedwait(&w->cond, &w->lock, &ts);
            } else {
                pthread_cond_wait(&w->cond, &w->lock);
            }
        }
        if (past_deadline(w)) {
            drop_queue(w);
            goto out;
        }
        take_batch(w);
        pthread_mutex_unlock(&w->lock);
        deliver(w);
        pthread_mutex_lock(&w->lock);
        w->inflight_bytes = 0;
    }
out:
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* ---- set-up --------------------------------------------------------------- */

static char *str_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *str_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    if (!s)
        abort(); /* out of memory, as ch_xmalloc does */
    return s;
}

static int build_urls(struct influx *w)
{
    const struct hubcfg_influx *c = w->cfg;
    size_t n = strlen(c->url);
    while (n > 0 && c->url[n - 1] == '/')
        n--;
    int base_len = (int)n;
    if (c->version == 1) {
        char *db = curl_easy_escape(w->curl, c->database, 0);
        if (!db)
            return CH_ENOMEM;
        w->write_url = str_printf("%.*s/write?db=%s&precision=ms", base_len, c->url, db);
        w->query_url = str_printf("%.*s/query", base_len, c->url);
        curl_free(db);
        return 0;
    }
    char *org = curl_easy_escape(w->curl, c->org, 0);
    char *bucket = curl_easy_escape(w->curl, c->bucket, 0);
    if (org && bucket)
        w->write_url = str_printf("%.*s/api/v2/write?org=%s&bucket=%s&precision=ms", base_len,
                                  c->url, org, bucket);
    curl_free(org);
    curl_free(bucket);
    return w->write_url ? 0 : CH_ENOMEM;
}

/* Appends h to list; on failure frees the list and returns NULL. */
static struct curl_slist *add_header(struct curl_slist *list, const char *h)
{
    struct curl_slist *more = curl_slist_append(list, h);
    if (!more)
        curl_slist_free_all(list);
    return more;
}

static struct curl_slist *make_headers(const struct hubcfg_influx *c, bool gzip)
{
    struct curl_slist *h = add_header(NULL, "Content-Type: text/plain; charset=utf-8");
    if (h && gzip)
        h = add_header(h, "Content-Encoding: gzip");
    if (h && c->version == 2) {
        char *auth = str_printf("Authorization: Token %s", c->token);
        h = add_header(h, auth);
        free(auth);
    }
    return h;
}

static int setup_curl(struct influx *w)
{
    const struct hubcfg_influx *c = w->cfg;
    w->curl = curl_easy_init();
    if (!w->curl)
        return CH_ENOMEM;
    int rc = build_urls(w);
    if (rc)
        return rc;
    CURL *h = w->curl;
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, w);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, w);
    if (c->version == 1 && c->username && c->username[0]) {
        curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(h, CURLOPT_USERNAME, c->username);
        curl_easy_setopt(h, CURLOPT_PASSWORD, c->password ? c->password : "");
    }
    w->headers = make_headers(c, false);
    w->headers_gz = make_headers(c, true);
    return w->headers && w->headers_gz ? 0 : CH_ENOMEM;
}

static void destroy(struct influx *w)
{
    while (w->head)
        pop_chunk(w);
    curl_slist_free_all(w->headers);
    curl_slist_free_all(w->headers_gz);
    if (w->curl)
        curl_easy_cleanup(w->curl);
    free(w->write_url);
    free(w->query_url);
    free(w->batch.data);
    free(w->gz.data);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

int influx_open(const struct hubcfg_influx *cfg, struct influx **out)
{
    struct influx *w = ch_xcalloc(1, sizeof *w);
    w->cfg = cfg;
    w->name = cfg->url;
    w->backoff_ms = first_backoff(cfg);
    w->need_db = cfg->version == 1 && cfg->create_database;
    pthread_mutex_init(&w->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &ca);
    pthread_condattr_destroy(&ca);
    int rc = setup_curl(w);
    if (rc == 0)
        rc = -pthread_create(&w->thread, NULL, run, w);
    if (rc) {
        LOGE("influx", w->name, "cannot start the writer: %s", ch_strerror(rc));
        destroy(w);
        return rc;
    }
    LOGI("influx", w->name, "writing to %s", w->write_url);
    *out = w;
    return 0;
}

void influx_stats(struct influx *w, struct influx_stats *out)
{
    out->points_written = atomic_load(&w->points_written);
    out->write_errors = atomic_load(&w->write_errors);
    out->write_retries = atomic_load(&w->write_retries);
    out->write_rejected = atomic_load(&w->write_rejected);
    out->dropped = atomic_load(&w->dropped);
    pthread_mutex_lock(&w->lock);
    out->queued_bytes = w->q_bytes + w->inflight_bytes;
    pthread_mutex_unlock(&w->lock);
}

void influx_close(struct influx *w, struct influx_stats *final)
{
    pthread_mutex_lock(&w->lock);
    w->deadline_ms = ch_mono_ms() + w->cfg->shutdown_timeout_ms;
    atomic_store(&w->stopping, true);
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    if (final)
        influx_stats(w, final);
    destroy(w);
}
