/* The writers: ingest appends to the spool, one thread per lane drains it
 * to InfluxDB. See influx.h for the behaviour.
 *
 * WHY A SPOOL IN FRONT OF INFLUXDB
 *
 * The broker forgets a QoS 1 message once the hub has acknowledged it, and
 * the hub acknowledges it when ingest returns. Anything the hub keeps only in
 * memory after that is lost with the process, and anything it cannot keep
 * (a full memory queue during a long outage) is lost for good. So ingest
 * returns only once the batch is in the spool (write(2): it survives a
 * process crash; the spool fsyncs within commit_interval for power cuts),
 * and the spool, bounded in bytes on disk, holds the backlog instead of RAM.
 *
 * INVARIANTS
 *
 * - Each lane has its own writer thread, with its own HTTP connection and
 *   batch: only it reads that lane (spool_next) and acknowledges its records
 *   (spool_ack). It reads the records in id order and never skips one:
 *   rd_after is the last record wholly copied into a batch; part_id/part_off
 *   name a record whose first part_off bytes are in a batch (a batch ended
 *   inside it).
 * - Alarm transitions travel in the ALERT lane, everything else in
 *   TELEMETRY. The alert writer sends what its lane holds at once, whatever
 *   the telemetry writer is doing: an alarm never waits behind a batch of
 *   5,000 readings in flight, a telemetry backlog after an outage, or a
 *   telemetry batch being retried (each writer has its own back-off), and a
 *   full spool evicts alarms last.
 * - A record is acknowledged only when the batch holding its last line was
 *   answered 2xx or set aside in the dead letter (fdatasync'ed first), so the
 *   spool's cursor only passes points that InfluxDB or the dead letter has.
 *   Batches are resolved one at a time, in order: nothing overtakes a batch
 *   that is being retried.
 * - Ingest never waits for the writers: it appends to the spool (which has
 *   its own lock) and then adds to its lane writer's new_lines under
 *   in->lock, which a writer holds only to look at the counters or to wait.
 *   HTTP requests and spool reads run without it.
 * - No lost wake-up: a writer clears new_lines before reading its lane dry
 *   and waits only if new_lines is still 0 under the lock; an appender that
 *   comes later finds want_lines set and signals once enough lines arrived to
 *   fill the batch (one line when the batch is empty; a partial batch is
 *   otherwise sent at its due time; the alert writer never waits with one).
 * - The dead-letter file takes one entry at a time (dead_lock): each entry
 *   is whole, and a failed one is cut off without touching another's.
 *
 * WHAT A CRASH DOES
 *
 * - SIGKILL: every record appended is in the page cache. Records not yet
 *   acknowledged, and those acknowledged since the spool last wrote its
 *   cursor, are written again at the next start: duplicates, which InfluxDB
 *   overwrites (same series and timestamp), never a loss.
 * - Power cut: the spool may lose what was appended in the last
 *   commit_interval (already acknowledged to the broker).
 * - A dead-letter entry written but whose records were not acknowledged yet
 *   is written again after a restart: the same lines twice in the file,
 *   harmless to re-apply. */
#include "influx.h"
#include "influxq.h"
#include "retention.h"
#include "hubcfg.h"
#include "err.h"
#include "log.h"
#include "spool.h"
#include "util.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define BACKOFF_START_MS    500
#define SHUTDOWN_RETRY_MS   500
#define APPEND_RETRY_MIN_MS 100
#define APPEND_RETRY_MAX_MS 5000
#define READ_RETRY_MS       1000
#define ERROR_BODY_MAX      300        /* of InfluxDB's answer, in log lines */
#define RESP_MAX            4096       /* kept of it: "dropped=N" ends a long partial-write error */
#define RECORD_MAX          (1u << 20) /* bytes per spool record; a hand-over is cut above */

struct buf {
    char *data;
    size_t len, cap;
};

enum outcome { SENT, REFUSED, TOO_LARGE, RETRY };
enum resolved { DONE, ABANDONED }; /* written or set aside / given up at the shutdown deadline */
enum gathered { G_NONE, G_FULL, G_SEND, G_ERROR, G_ABANDONED };

struct influx;

/* One lane's writer: its own thread, HTTP connection and batch. */
struct writer {
    struct influx *in;
    const struct hubcfg_influx *cfg; /* in's, for short */
    struct spool *spool;
    const char *name;
    enum spool_lane lane;
    pthread_t thread;
    bool started;

    /* under in->lock */
    pthread_cond_t cond; /* enough new lines for this writer, or stop */
    size_t new_lines;    /* appended to the lane since the writer last read it dry */
    size_t want_lines;   /* > 0 while the writer waits: wake it at this many */

    /* the writer's thread only */
    CURL *curl;
    bool need_db;
    uint8_t batch_type; /* the record type of the batch's lines: one policy per request */
    bool read_failing;
    int64_t backoff_ms;
    struct buf batch;
    size_t batch_lines;
    int64_t due_ms; /* monotonic: the batch goes even if not full */
    uint64_t *acks; /* records whose last line is in the batch */
    size_t n_acks, cap_acks;
    struct {
        uint64_t rd_after;
        uint64_t part_id;
        size_t part_off;
    } rd;
    struct buf gz;
    char resp[RESP_MAX + 1]; /* start of the response body */
    size_t resp_len;
    char err[RESP_MAX + 1];        /* InfluxDB's error message, one line */
    long status;                   /* HTTP status of the last request; 0: no answer */
    char why[ERROR_BODY_MAX + 64]; /* what went wrong with the last request */
};

struct influx {
    const struct hubcfg_influx *cfg;
    struct spool *spool;
    const char *name; /* log instance: the URL */
    char *write_url;
    char *write_url_raw; /* the readings' retention policy (write_url without one) */
    char *query_url;     /* v1 /query, for CREATE DATABASE */
    struct curl_slist *headers;
    struct curl_slist *headers_gz;
    size_t record_max;
    struct writer lane[SPOOL_LANES];

    pthread_mutex_t lock;
    bool append_failing; /* the spool refuses appends (logged once) */
    int64_t deadline_ms; /* monotonic; set before stopping */
    atomic_bool stopping;
    atomic_bool intake_closed; /* influx_begin_stop: appends do not wait */
    atomic_bool db_created;    /* a writer created the v1 database: the other need not */
    pthread_mutex_t dead_lock; /* the dead-letter file */

    atomic_uint_fast64_t points_written, write_errors, write_retries, write_rejected,
        dead_letter_batches, dead_letter_lines, dropped;
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

/* Lines in p[0..n): newlines, plus one for an unterminated last line. */
static size_t count_lines(const char *p, size_t n)
{
    size_t k = 0;
    const char *end = p + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        k++;
        if (!nl)
            break;
        p = nl + 1;
    }
    return k;
}

/* Bytes of the first k lines of p[0..n). */
static size_t skip_lines(const char *p, size_t n, size_t k)
{
    size_t off = 0;
    for (; k > 0 && off < n; k--) {
        const char *nl = memchr(p + off, '\n', n - off);
        off = nl ? (size_t)(nl - p) + 1 : n;
    }
    return off;
}

/* ---- ingest's side: appending --------------------------------------------- */

/* The next record to cut from p..end: at most record_max bytes ending at a
 * line boundary, or one whole line when that line alone is longer. */
static size_t next_cut(const struct influx *w, const char *p, const char *end)
{
    size_t left = (size_t)(end - p);
    if (left <= w->record_max)
        return left;
    const char *nl = memrchr(p, '\n', w->record_max);
    if (!nl)
        nl = memchr(p + w->record_max, '\n', left - w->record_max);
    return nl ? (size_t)(nl + 1 - p) : left;
}

static void notify(struct influx *w, enum spool_lane lane, size_t lines)
{
    struct writer *l = &w->lane[lane];
    pthread_mutex_lock(&w->lock);
    l->new_lines += lines;
    if (l->want_lines && l->new_lines >= l->want_lines)
        pthread_cond_signal(&l->cond);
    pthread_mutex_unlock(&w->lock);
}

/* Sets the append-failure state; returns the previous one. */
static bool set_append_failing(struct influx *w, bool failing)
{
    pthread_mutex_lock(&w->lock);
    bool was = w->append_failing;
    w->append_failing = failing;
    pthread_mutex_unlock(&w->lock);
    return was;
}

/* Appends one record; while the spool cannot be written, retries with a
 * back-off when asked to (blocking the caller) until a stop begins. */
static int append(struct influx *w, enum spool_lane lane, uint8_t type, const char *p, size_t n,
                  bool retry)
{
    int64_t pause = APPEND_RETRY_MIN_MS;
    for (;;) {
        int rc = spool_append(w->spool, lane, type, p, n, NULL);
        if (rc == 0) {
            if (set_append_failing(w, false))
                LOGI("influx", w->name, "the spool takes batches again");
            return 0;
        }
        if (rc == CH_EINVAL || rc == CH_EFULL)
            return rc; /* this record can never be stored */
        if (!set_append_failing(w, true))
            LOGE("influx", w->name, "cannot append to the spool: %s; %s", ch_strerror(rc),
                 retry ? "ingest waits and retries (the broker keeps the unacknowledged "
                         "messages)"
                       : "retried with the next batches");
        if (!retry || atomic_load(&w->intake_closed))
            return rc;
        int64_t until = ch_mono_ms() + pause;
        for (int64_t now = ch_mono_ms(); now < until && !atomic_load(&w->intake_closed);
             now = ch_mono_ms())
            ch_sleep_ms(until - now < 50 ? until - now : 50);
        pause = pause * 2 > APPEND_RETRY_MAX_MS ? APPEND_RETRY_MAX_MS : pause * 2;
    }
}

static int enqueue(struct influx *w, enum spool_lane lane, enum influx_policy rp, char *data,
                   size_t len, bool retry)
{
    uint8_t type = rp == INFLUX_RP_READINGS ? INFLUX_RECORD_LP_RAW : INFLUX_RECORD_LP;
    int rc = 0;
    const char *p = data, *end = data + len;
    while (p < end) {
        size_t n = next_cut(w, p, end);
        size_t lines = count_lines(p, n);
        int r = append(w, lane, type, p, n, retry && !atomic_load(&w->intake_closed));
        if (r == 0) {
            notify(w, lane, lines);
        } else {
            count(&w->dropped, lines);
            LOGE("influx", w->name, "%zu point%s lost: the spool did not take them (%s)", lines,
                 lines == 1 ? "" : "s", ch_strerror(r));
            if (!rc)
                rc = r;
        }
        p += n;
    }
    free(data);
    return rc;
}

int influx_enqueue(struct influx *w, enum influx_policy rp, char *data, size_t len, size_t lines)
{
    (void)lines; /* counted again per record */
    return enqueue(w, SPOOL_TELEMETRY, rp, data, len, true);
}

int influx_enqueue_alert(struct influx *w, char *data, size_t len, size_t lines)
{
    (void)lines;
    return enqueue(w, SPOOL_ALERT, INFLUX_RP_DEFAULT, data, len, true);
}

int influx_enqueue_once(struct influx *w, enum influx_policy rp, char *data, size_t len,
                        size_t lines)
{
    (void)lines;
    return enqueue(w, SPOOL_TELEMETRY, rp, data, len, false);
}

bool influx_database_ready(struct influx *w)
{
    return w->cfg->version != 1 || !w->cfg->create_database || atomic_load(&w->db_created);
}

void influx_begin_stop(struct influx *w)
{
    atomic_store(&w->intake_closed, true);
}

/* ---- HTTP --------------------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *ctx)
{
    struct writer *w = ctx;
    size_t n = size * nmemb, room = RESP_MAX - w->resp_len;
    size_t take = n < room ? n : room;
    memcpy(w->resp + w->resp_len, data, take);
    w->resp_len += take;
    w->resp[w->resp_len] = '\0';
    return n;
}

static bool past_deadline(struct influx *w)
{
    return atomic_load(&w->stopping) && ch_mono_ms() >= w->deadline_ms;
}

/* Aborts a request that runs past the shutdown deadline. */
static int on_progress(void *ctx, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    const struct writer *w = ctx;
    return past_deadline(w->in);
}

/* InfluxDB's error message into w->err, on one line: the "error" (1.x) or
 * "message" (2.x) string of a JSON body, else the body itself. */
static void error_text(struct writer *w)
{
    json_t *j = json_loadb(w->resp, w->resp_len, 0, NULL);
    const char *s = NULL;
    if (json_is_object(j)) {
        s = json_string_value(json_object_get(j, "error"));
        if (!s)
            s = json_string_value(json_object_get(j, "message"));
    }
    snprintf(w->err, sizeof w->err, "%s", s ? s : w->resp_len ? w->resp : "(no body)");
    json_decref(j);
    for (char *p = w->err; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
}

/* POSTs body to url and classifies the result; on failure w->why says what
 * happened and w->err holds InfluxDB's message. */
static enum outcome post(struct writer *w, const char *url, const char *body, size_t len,
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
        snprintf(w->err, sizeof w->err, "%s", w->why);
        return RETRY;
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    w->status = status;
    if (status >= 200 && status < 300)
        return SENT;
    error_text(w);
    snprintf(w->why, sizeof w->why, "HTTP %ld: %.*s", status, ERROR_BODY_MAX, w->err);
    if (status == 400 || status == 422)
        return REFUSED;
    if (status == 413)
        return TOO_LARGE;
    /* the database, or the readings' retention policy, was dropped */
    if ((status == 404 || (status == 500 && strstr(w->err, "retention policy not found"))) &&
        w->cfg->version == 1 && w->cfg->create_database) {
        w->need_db = true;
        atomic_store(&w->in->db_created, false);
    }
    return RETRY;
}

/* A failure that goes away by itself (InfluxDB down, busy or slow), as
 * opposed to a configuration problem (URL, database, credentials). */
static bool transient(long status)
{
    return status == 0 || status >= 500 || status == 408 || status == 429;
}

/* Creates the v1 database. A refusal (403 for a user without admin rights on
 * a database that exists, say) is logged and the writes go ahead; only an
 * unreachable or failing InfluxDB is retried. */
static enum outcome create_database(struct writer *w)
{
    char *name = curl_easy_escape(w->curl, w->cfg->database, 0);
    if (!name)
        abort(); /* out of memory, as ch_xmalloc does */
    /* the name is an identifier ([A-Za-z0-9_.-]), safe inside double quotes */
    char *body = str_printf("q=CREATE%%20DATABASE%%20%%22%s%%22", name);
    curl_free(name);
    enum outcome o = post(w, w->in->query_url, body, strlen(body), NULL);
    free(body);
    if (o == SENT && w->cfg->retention.raw_ms) {
        /* the readings' and the history's policies (retention.h) */
        char err[256];
        int rc = retention_setup(w->cfg, err, sizeof err);
        if (rc == CH_ERETRY) {
            snprintf(w->why, sizeof w->why, "%s", err);
            w->status = 0;
            return RETRY;
        }
        if (rc)
            LOGE("influx", w->name,
                 "the retention policies of %s cannot be made (%s): readings cannot be written "
                 "until they exist",
                 w->cfg->database, err);
    }
    if (o == SENT)
        LOGI("influx", w->name, "database %s ready", w->cfg->database);
    else if (w->status >= 400 && w->status < 500)
        LOGW("influx", w->name, "CREATE DATABASE %s refused (%s); writing anyway", w->cfg->database,
             w->why);
    else
        return RETRY;
    w->need_db = false;
    atomic_store(&w->in->db_created, true);
    return SENT;
}

/* gzip of body into w->gz; false if zlib fails (then sent plain). */
static bool compress_body(struct writer *w, const char *body, size_t len)
{
    z_stream z = {0};
    if (deflateInit2(&z, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return false;
    size_t bound = deflateBound(&z, (uLong)len) + 32;
    if (w->gz.cap < bound) {
        w->gz.data = ch_xrealloc(w->gz.data, bound);
        w->gz.cap = bound;
    }
    z.next_in = (Bytef *)(uintptr_t)body;
    z.avail_in = (uInt)len;
    z.next_out = (Bytef *)w->gz.data;
    z.avail_out = (uInt)w->gz.cap;
    int rc = deflate(&z, Z_FINISH);
    w->gz.len = z.total_out;
    deflateEnd(&z);
    return rc == Z_STREAM_END;
}

static enum outcome write_body(struct writer *w, const char *body, size_t len)
{
    const struct influx *in = w->in;
    const char *url = w->batch_type == INFLUX_RECORD_LP_RAW ? in->write_url_raw : in->write_url;
    if (w->cfg->gzip && compress_body(w, body, len))
        return post(w, url, w->gz.data, w->gz.len, in->headers_gz);
    return post(w, url, body, len, in->headers);
}

/* ---- waiting ---------------------------------------------------------------- */

/* The back-off pause (in->lock held): waits until mono time until,
 * ignoring hand-overs; returns early when a stop begins, and never waits
 * past the shutdown deadline. */
static void wait_until(struct writer *w, int64_t until)
{
    struct influx *in = w->in;
    bool stopping = atomic_load(&in->stopping);
    for (;;) {
        if (!stopping && atomic_load(&in->stopping))
            return;
        int64_t end = until;
        if (atomic_load(&in->stopping) && in->deadline_ms < end)
            end = in->deadline_ms;
        if (ch_mono_ms() >= end)
            return;
        ch_cond_wait_until(&w->cond, &in->lock, end);
    }
}

static int64_t first_backoff(const struct hubcfg_influx *cfg)
{
    return BACKOFF_START_MS < cfg->max_backoff_ms ? BACKOFF_START_MS : cfg->max_backoff_ms;
}

/* The pause before the next attempt: the back-off, or at most
 * SHUTDOWN_RETRY_MS once a stop began (InfluxDB may be back any moment). */
static int64_t next_pause(struct writer *w)
{
    return atomic_load(&w->in->stopping) && w->backoff_ms > SHUTDOWN_RETRY_MS ? SHUTDOWN_RETRY_MS
                                                                              : w->backoff_ms;
}

/* Waits pause ms and doubles the back-off. Returns false when the shutdown
 * deadline has passed: give up. */
static bool pause_then_retry(struct writer *w, int64_t pause)
{
    pthread_mutex_lock(&w->in->lock);
    if (!past_deadline(w->in))
        wait_until(w, ch_mono_ms() + pause);
    bool give_up = past_deadline(w->in);
    pthread_mutex_unlock(&w->in->lock);
    w->backoff_ms =
        w->backoff_ms * 2 > w->cfg->max_backoff_ms ? w->cfg->max_backoff_ms : w->backoff_ms * 2;
    return !give_up;
}

/* ---- the dead letter ---------------------------------------------------------- */

static void iso_time(char out[40])
{
    int64_t ms = ch_now_ms();
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t n = strftime(out, 40, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 40 - n, ".%03dZ", (int)(ms % 1000));
}

static int writev_full(int fd, struct iovec *iov, int cnt)
{
    while (cnt > 0) {
        ssize_t n = writev(fd, iov, cnt);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        size_t left = (size_t)n;
        while (cnt > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

/* Makes a new file's directory entry durable. */
static int sync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir)
        abort();
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = fd >= 0 && fsync(fd) == 0 ? 0 : -errno;
    if (fd >= 0)
        close(fd);
    free(dir);
    return rc;
}

/* Appends "# <time> <reason>" and the lines to the dead-letter file and makes
 * them durable. A failed write is cut off again, so the file holds only whole
 * entries. Returns 0 or -errno. dead_lock held. */
static int dead_letter_write(struct influx *w, const char *reason, const char *body, size_t len)
{
    const char *path = w->cfg->dead_letter;
    bool created = true;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0 && errno == EEXIST) {
        created = false;
        fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    }
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    char ts[40];
    iso_time(ts);
    char *head = str_printf("# %s %s\n", ts, reason);
    struct iovec iov[3] = {
        {head, strlen(head)}, {(void *)(uintptr_t)body, len}, {(void *)(uintptr_t) "\n", 1}};
    int rc = writev_full(fd, iov, len && body[len - 1] != '\n' ? 3 : 2);
    if (rc == 0 && fdatasync(fd) != 0)
        rc = -errno;
    if (rc != 0 && ftruncate(fd, st.st_size) != 0)
        LOGE("influx", w->name, "cannot cut a failed entry off %s: %s", path, ch_strerror(-errno));
    close(fd);
    free(head);
    if (rc == 0 && created) {
        int r = sync_parent(path);
        if (r)
            LOGW("influx", w->name, "cannot sync the directory of %s: %s", path, ch_strerror(r));
    }
    return rc;
}

/* Sets lines aside in the dead letter with the reason, retrying (the lines
 * must not be lost) until it works or the shutdown deadline passes. */
static enum resolved dead_letter(struct writer *w, const char *reason, const char *body, size_t len,
                                 size_t lines)
{
    for (;;) {
        pthread_mutex_lock(&w->in->dead_lock);
        int rc = dead_letter_write(w->in, reason, body, len);
        pthread_mutex_unlock(&w->in->dead_lock);
        if (rc == 0) {
            count(&w->in->dead_letter_batches, 1);
            count(&w->in->dead_letter_lines, lines);
            LOGE("influx", w->name, "%zu line%s set aside in %s: %s", lines, lines == 1 ? "" : "s",
                 w->cfg->dead_letter, reason);
            return DONE;
        }
        int64_t pause = next_pause(w);
        LOGE("influx", w->name,
             "cannot write %zu refused line%s to the dead letter %s: %s; retry in %" PRId64 " ms",
             lines, lines == 1 ? "" : "s", w->cfg->dead_letter, ch_strerror(rc), pause);
        if (!pause_then_retry(w, pause))
            return ABANDONED;
    }
}

/* ---- writing a batch ---------------------------------------------------------- */

/* InfluxDB 1.x writes the good points of a batch and answers 400 "partial
 * write: ... dropped=N". Returns N, or the whole batch when it does not say. */
static size_t refused_points(const struct writer *w, size_t lines)
{
    const char *p = strstr(w->resp, "partial write");
    const char *d = p ? strstr(p, "dropped=") : NULL;
    if (d) {
        unsigned long long n = strtoull(d + 8, NULL, 10);
        if (n > 0 && n <= lines)
            return (size_t)n;
    }
    return lines;
}

/* Sends lines points (body, len bytes) until they are written or set aside,
 * or shutdown gives up on them. A 413 splits them in halves, sent in order. */
static enum resolved deliver(struct writer *w, const char *body, size_t len, size_t lines)
{
    struct influx *in = w->in;
    for (int failures = 0;; failures++) {
        if (past_deadline(in))
            return ABANDONED;
        char what[64] = "CREATE DATABASE";
        if (w->need_db && atomic_load(&in->db_created))
            w->need_db = false; /* the other writer did */
        enum outcome o = w->need_db ? create_database(w) : SENT;
        if (o == SENT) {
            snprintf(what, sizeof what, "write of %zu point%s", lines, lines == 1 ? "" : "s");
            o = write_body(w, body, len);
        }
        if (o == SENT) {
            if (failures)
                LOGI("influx", w->name, "%s succeeded after %d failed attempts", what, failures);
            count(&in->points_written, lines);
            w->backoff_ms = first_backoff(w->cfg);
            return DONE;
        }
        count(&in->write_errors, 1);
        if (o == TOO_LARGE && lines > 1) {
            size_t half = lines / 2, cut = skip_lines(body, len, half);
            LOGW("influx", w->name, "%s: %s; sending it in two halves", what, w->why);
            if (deliver(w, body, cut, half) == ABANDONED)
                return ABANDONED;
            return deliver(w, body + cut, len - cut, lines - half);
        }
        if (o == REFUSED || o == TOO_LARGE) {
            size_t refused = refused_points(w, lines);
            count(&in->write_rejected, refused);
            count(&in->points_written, lines - refused);
            /* re-applied with the same URL: the policy is in it */
            char *reason =
                str_printf("HTTP %ld: %s%s", w->status, w->err,
                           w->batch_type == INFLUX_RECORD_LP_RAW && w->cfg->retention.raw_ms
                               ? " (retention policy " INFLUX_RP_RAW ": rp=" INFLUX_RP_RAW ")"
                               : "");
            enum resolved r = dead_letter(w, reason, body, len, lines);
            free(reason);
            return r;
        }
        int64_t pause = next_pause(w);
        if (transient(w->status))
            LOGW("influx", w->name, "%s failed: %s; retry in %" PRId64 " ms", what, w->why, pause);
        else
            LOGE("influx", w->name,
                 "%s failed: %s: a configuration problem (URL, database or bucket, "
                 "credentials), not the data; retry in %" PRId64 " ms",
                 what, w->why, pause);
        if (!pause_then_retry(w, pause))
            return ABANDONED;
        count(&in->write_retries, 1);
    }
}

/* Writes the batch, then acknowledges the records it completes. */
static enum resolved send_batch(struct writer *w)
{
    if (deliver(w, w->batch.data, w->batch.len, w->batch_lines) == ABANDONED)
        return ABANDONED;
    for (size_t i = 0; i < w->n_acks; i++) {
        int rc = spool_ack(w->spool, w->lane, w->acks[i]);
        if (rc)
            LOGE("influx", w->name, "spool ack of record %" PRIu64 ": %s", w->acks[i],
                 ch_strerror(rc));
    }
    w->n_acks = 0;
    w->batch.len = 0;
    w->batch_lines = 0;
    return DONE;
}

/* ---- reading the spool ---------------------------------------------------------- */

static void ack_later(struct writer *w, uint64_t id)
{
    if (w->n_acks == w->cap_acks) {
        w->cap_acks = w->cap_acks ? w->cap_acks * 2 : 64;
        w->acks = ch_xrealloc(w->acks, w->cap_acks * sizeof *w->acks);
    }
    w->acks[w->n_acks++] = id;
}

/* When a batch whose oldest point was appended at wall time t must go. */
static int64_t due_time(const struct writer *w, int64_t t)
{
    int64_t flush = w->cfg->flush_interval_ms, waited = ch_now_ms() - t;
    if (waited < 0)
        waited = 0;
    return ch_mono_ms() + (waited < flush ? flush - waited : 0);
}

/* A record that is not line protocol (written by another version?) cannot
 * be sent; it goes to the dead letter as it is. */
static enum resolved set_aside_record(struct writer *w, const struct spool_record *rec)
{
    char *reason = str_printf("spool record %" PRIu64 " has type %u, not line protocol (%u, %u)",
                              rec->id, rec->type, INFLUX_RECORD_LP, INFLUX_RECORD_LP_RAW);
    enum resolved r = dead_letter(w, reason, rec->data, rec->len, count_lines(rec->data, rec->len));
    free(reason);
    if (r == DONE) {
        spool_ack(w->spool, w->lane, rec->id);
        w->rd.rd_after = rec->id;
    }
    return r;
}

/* Fills the batch from the writer's lane, up to batch_size points: G_FULL,
 * G_NONE (the lane has nothing more now), G_SEND (the batch must go before
 * the next record, or now: alarms), G_ERROR (the spool cannot be read now)
 * or G_ABANDONED. */
static enum gathered gather(struct writer *w)
{
    size_t max = (size_t)w->cfg->batch_size;
    enum spool_lane lane = w->lane;
    while (w->batch_lines < max) {
        struct spool_record rec;
        int r = spool_next(w->spool, lane, w->rd.rd_after, &rec);
        if (r < 0) {
            if (!w->read_failing)
                LOGE("influx", w->name, "cannot read the spool: %s; retrying", ch_strerror(r));
            w->read_failing = true;
            return G_ERROR;
        }
        if (w->read_failing)
            LOGI("influx", w->name, "the spool can be read again");
        w->read_failing = false;
        if (r == 0)
            return lane == SPOOL_ALERT && w->batch_lines ? G_SEND : G_NONE; /* alarms: now */
        if (rec.type != INFLUX_RECORD_LP && rec.type != INFLUX_RECORD_LP_RAW) {
            if (w->batch_lines)
                return G_SEND;
            if (set_aside_record(w, &rec) == ABANDONED)
                return G_ABANDONED;
            continue;
        }
        if (w->batch_lines && rec.type != w->batch_type)
            return G_SEND; /* another retention policy: another request */
        w->batch_type = rec.type;
        const char *data = rec.data, *end = data + rec.len;
        size_t off = rec.id == w->rd.part_id && w->rd.part_off < rec.len ? w->rd.part_off : 0;
        const char *p = data + off;
        size_t n = 0;
        while (n < max - w->batch_lines && p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            p = nl ? nl + 1 : end;
            n++;
        }
        if (w->batch_lines == 0)
            w->due_ms = due_time(w, rec.time_ms);
        buf_put(&w->batch, data + off, (size_t)(p - data) - off);
        if (p == end && p > data + off && p[-1] != '\n')
            buf_put(&w->batch, "\n", 1);
        w->batch_lines += n;
        if (p == end) {
            ack_later(w, rec.id);
            w->rd.rd_after = rec.id;
            w->rd.part_id = 0;
            w->rd.part_off = 0;
        } else {
            w->rd.part_id = rec.id;
            w->rd.part_off = (size_t)(p - data);
        }
    }
    return G_FULL;
}

/* ---- the thread ----------------------------------------------------------- */

static void *run(void *arg)
{
    struct writer *w = arg;
    struct influx *in = w->in;
    size_t max = (size_t)w->cfg->batch_size;
    /* the database and its policies at once, not at the first write: one
     * attempt (the first write retries), by the telemetry writer */
    if (w->need_db && w->lane == SPOOL_TELEMETRY && create_database(w) != SENT)
        LOGW("influx", w->name, "database %s not created yet: %s; again before the first write",
             w->cfg->database, w->why);
    for (;;) {
        pthread_mutex_lock(&in->lock);
        w->new_lines = 0;
        pthread_mutex_unlock(&in->lock);
        enum gathered g = gather(w);
        if (g == G_ABANDONED)
            break;
        bool stopping = atomic_load(&in->stopping);
        if (w->batch_lines && (g != G_NONE || stopping || ch_mono_ms() >= w->due_ms)) {
            if (send_batch(w) == ABANDONED)
                break;
            continue;
        }
        if (g == G_ERROR) {
            pthread_mutex_lock(&in->lock);
            wait_until(w, ch_mono_ms() + READ_RETRY_MS);
            pthread_mutex_unlock(&in->lock);
            if (past_deadline(in))
                break;
            continue;
        }
        if (stopping)
            break; /* everything is written */
        pthread_mutex_lock(&in->lock);
        if (w->new_lines == 0 && !atomic_load(&in->stopping)) {
            /* woken by enough lines to fill the batch, a stop, or its due time */
            w->want_lines = w->batch_lines ? max - w->batch_lines : 1;
            if (w->batch_lines)
                ch_cond_wait_until(&w->cond, &in->lock, w->due_ms);
            else
                pthread_cond_wait(&w->cond, &in->lock);
            w->want_lines = 0;
        }
        pthread_mutex_unlock(&in->lock);
    }
    uint64_t recs, bytes;
    spool_pending(w->spool, w->lane, &recs, &bytes);
    if (recs)
        LOGW("influx", w->name,
             "shutdown timeout: %" PRIu64 " %s record%s (%" PRIu64
             " bytes) not written yet stay in the spool for the next start",
             recs, spool_lane_name(w->lane), recs == 1 ? "" : "s", bytes);
    return NULL;
}

/* ---- set-up --------------------------------------------------------------- */

static int build_urls(struct influx *w, CURL *curl)
{
    const struct hubcfg_influx *c = w->cfg;
    size_t n = strlen(c->url);
    while (n > 0 && c->url[n - 1] == '/')
        n--;
    int base_len = (int)n;
    if (c->version == 1) {
        char *db = curl_easy_escape(curl, c->database, 0);
        if (!db)
            return CH_ENOMEM;
        w->write_url = str_printf("%.*s/write?db=%s&precision=ms", base_len, c->url, db);
        if (c->retention.raw_ms)
            w->write_url_raw = str_printf("%s&rp=%s", w->write_url, INFLUX_RP_RAW);
        w->query_url = str_printf("%.*s/query", base_len, c->url);
        curl_free(db);
        return 0;
    }
    char *org = curl_easy_escape(curl, c->org, 0);
    char *bucket = curl_easy_escape(curl, c->bucket, 0);
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

/* The writer's connection. */
static int setup_curl(struct writer *w)
{
    const struct hubcfg_influx *c = w->cfg;
    w->curl = curl_easy_init();
    if (!w->curl)
        return CH_ENOMEM;
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
    return 0;
}

/* What the writers share: URLs and headers. */
static int setup_shared(struct influx *w)
{
    CURL *curl = curl_easy_init();
    if (!curl)
        return CH_ENOMEM;
    int rc = build_urls(w, curl);
    curl_easy_cleanup(curl);
    if (rc)
        return rc;
    if (!w->write_url_raw) /* no policy of their own: readings go with the rest */
        w->write_url_raw = str_printf("%s", w->write_url);
    w->headers = make_headers(w->cfg, false);
    w->headers_gz = make_headers(w->cfg, true);
    return w->headers && w->headers_gz ? 0 : CH_ENOMEM;
}

/* Warns at start when the dead letter could not be created when needed. */
static void check_dead_letter(const struct influx *w)
{
    const char *path = w->cfg->dead_letter;
    if (!path || !*path)
        return;
    if (access(path, F_OK) == 0) {
        if (access(path, W_OK) != 0)
            LOGW("influx", w->name, "dead letter %s is not writable: %s", path,
                 ch_strerror(-errno));
        return;
    }
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir)
        abort();
    if (access(dir, W_OK) != 0)
        LOGW("influx", w->name, "dead letter %s cannot be created: %s: %s", path, dir,
             ch_strerror(-errno));
    free(dir);
}

/* Stops the writers that run (a stop must have begun) and frees everything. */
static void destroy(struct influx *w)
{
    for (int i = 0; i < SPOOL_LANES; i++) {
        struct writer *l = &w->lane[i];
        if (l->started)
            pthread_join(l->thread, NULL);
        if (l->curl)
            curl_easy_cleanup(l->curl);
        free(l->batch.data);
        free(l->gz.data);
        free(l->acks);
        pthread_cond_destroy(&l->cond);
    }
    curl_slist_free_all(w->headers);
    curl_slist_free_all(w->headers_gz);
    free(w->write_url);
    free(w->write_url_raw);
    free(w->query_url);
    pthread_mutex_destroy(&w->dead_lock);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

/* Begins the stop: the writers write what is left until the deadline. */
static void stop_writers(struct influx *w, int64_t deadline_ms)
{
    influx_begin_stop(w);
    pthread_mutex_lock(&w->lock);
    w->deadline_ms = deadline_ms;
    atomic_store(&w->stopping, true);
    for (int i = 0; i < SPOOL_LANES; i++)
        pthread_cond_broadcast(&w->lane[i].cond);
    pthread_mutex_unlock(&w->lock);
}

int influx_open(const struct hubcfg_influx *cfg, struct spool *spool, struct influx **out)
{
    struct influx *w = ch_xcalloc(1, sizeof *w);
    w->cfg = cfg;
    w->spool = spool;
    w->name = cfg->url;
    /* a record must fit the spool's bound several times over */
    struct spool_stats ss;
    spool_stats(spool, &ss);
    uint64_t cap =
        ss.max_bytes / 4 > SPOOL_RECORD_OVERHEAD ? ss.max_bytes / 4 - SPOOL_RECORD_OVERHEAD : 1;
    w->record_max = cap < RECORD_MAX ? (size_t)cap : RECORD_MAX;
    pthread_mutex_init(&w->lock, NULL);
    pthread_mutex_init(&w->dead_lock, NULL);
    for (int i = 0; i < SPOOL_LANES; i++) {
        struct writer *l = &w->lane[i];
        l->in = w;
        l->cfg = cfg;
        l->spool = spool;
        l->name = w->name;
        l->lane = (enum spool_lane)i;
        l->backoff_ms = first_backoff(cfg);
        l->need_db = cfg->version == 1 && cfg->create_database;
        ch_cond_init_monotonic(&l->cond);
    }
    check_dead_letter(w);
    int rc = setup_shared(w);
    for (int i = 0; rc == 0 && i < SPOOL_LANES; i++) {
        struct writer *l = &w->lane[i];
        rc = setup_curl(l);
        if (rc == 0)
            rc = -pthread_create(&l->thread, NULL, run, l);
        l->started = rc == 0;
    }
    if (rc) {
        LOGE("influx", w->name, "cannot start the writers: %s", ch_strerror(rc));
        stop_writers(w, ch_mono_ms());
        destroy(w);
        return rc;
    }
    uint64_t recs, arecs;
    spool_pending(spool, SPOOL_TELEMETRY, &recs, NULL);
    spool_pending(spool, SPOOL_ALERT, &arecs, NULL);
    recs += arecs;
    LOGI("influx", w->name, "writing to %s%s", w->write_url,
         recs ? " (the spool's backlog first)" : "");
    *out = w;
    return 0;
}

void influx_stats(struct influx *w, struct influx_stats *out)
{
    out->points_written = atomic_load(&w->points_written);
    out->write_errors = atomic_load(&w->write_errors);
    out->write_retries = atomic_load(&w->write_retries);
    out->write_rejected = atomic_load(&w->write_rejected);
    out->dead_letter_batches = atomic_load(&w->dead_letter_batches);
    out->dead_letter_lines = atomic_load(&w->dead_letter_lines);
    out->dropped = atomic_load(&w->dropped);
}

void influx_close(struct influx *w, struct influx_stats *final)
{
    stop_writers(w, ch_mono_ms() + w->cfg->shutdown_timeout_ms);
    for (int i = 0; i < SPOOL_LANES; i++) {
        struct writer *l = &w->lane[i];
        if (l->started)
            pthread_join(l->thread, NULL);
        l->started = false;
    }
    if (final)
        influx_stats(w, final);
    destroy(w);
}
