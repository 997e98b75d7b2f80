/* The audit trail: every request, refused ones too, once finished, as one
 * JSON line in api.audit_log and one carehub_audit point through the hub's
 * spool; and GET /api/v1/audit, which admins read from any hub.
 *
 * Bounded, whatever clients send:
 *
 * - Refusals are counted, not written one by one. A request refused
 *   without a valid token (401, 404, 429 ...), or a token's 429, is written
 *   as it comes only when it is the first of its address (and token) in
 *   api.audit_refusal_interval; the others of that interval are counted in a
 *   fixed table (AGG_SLOTS entries) and written as one entry when it ends
 *   ("refused": how many, "statuses": "401:20,429:99980", first_ms,
 *   last_ms), by a thread that looks once a second, and at stop. A full
 *   table writes its oldest entry early. A flood from one address costs two
 *   lines and two points an interval; one from many addresses a line and a
 *   point per address and interval, which the rotation bounds.
 * - The file is rotated at api.audit_max_bytes as logrotate does
 *   (audit.jsonl -> audit.jsonl.1 -> ... -> .N, api.audit_keep of them, the
 *   oldest dropped), under the mutex every write takes, so that no line is
 *   cut or lands in a renamed file. On disk: at most (keep + 1) x max_bytes.
 *   When it cannot be renamed or reopened, lines are dropped (counted,
 *   logged once a minute; the points still go to InfluxDB) and the open is
 *   retried every 10 s: the bound holds.
 * - The file is created 0640 (it names tokens, addresses and sites); an
 *   existing one with wider permissions is narrowed to that. */
#include "api_internal.h"
#include "hubcfg.h"
#include "influx.h"
#include "lineproto.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define AUDIT_MODE      0640
#define AGG_SLOTS       256   /* addresses (and tokens) whose refusals are counted */
#define AGG_STATUSES    4     /* distinct statuses counted apart; the rest as "other" */
#define FLUSH_TICK_MS   1000  /* the counts are looked at this often */
#define REOPEN_RETRY_MS 10000 /* after a failed rotation or open */

/* The refusals of one address (and token) in an interval, beyond the first. */
struct agg {
    bool used;
    char addr[64];
    char token[WHO_NAME_MAX]; /* "-": none valid */
    char role[16];
    char method[8];
    char path[PATH_MAX_LEN + 1]; /* the first refusal's */
    unsigned status[AGG_STATUSES];
    uint64_t count[AGG_STATUSES], other;
    uint64_t n;
    int64_t first_ms, last_ms; /* wall clock, of those counted */
    int64_t opened;            /* monotonic: the interval began */
};

struct audit {
    pthread_mutex_t mu; /* everything below; every write to the file */
    pthread_cond_t cond;
    pthread_t flusher;
    bool stopping;
    const char *path; /* the configuration's */
    FILE *f;          /* NULL: could not be opened (retry_at) */
    int64_t bytes, max_bytes, keep, interval_ms;
    int64_t last_ms;  /* audit points get distinct times per hub */
    int64_t retry_at; /* monotonic */
    uint64_t lost;    /* lines not written since lost_logged */
    int64_t lost_logged;
    struct agg agg[AGG_SLOTS];
};

/* What one entry says (a request's, or a count's). */
struct entry {
    const char *token, *role, *method, *path, *query, *sites, *remote;
    const char *event; /* NULL or what an account request did ("login failed: NAME") */
    unsigned status;
    uint64_t rows;
    int64_t ms;
};

/* ---- the file ------------------------------------------------------------------------------- */

/* Opens the log at au->path. Returns 0 or -errno (logged). */
static int open_log(struct audit *au)
{
    int fd = open(au->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, AUDIT_MODE);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) {
        int e = errno;
        LOGE(MOD, au->path, "cannot open the audit log: %s", strerror(e));
        if (fd >= 0)
            close(fd);
        return -e;
    }
    mode_t mode = st.st_mode & 07777;
    if (mode & ~(mode_t)AUDIT_MODE) {
        if (fchmod(fd, mode & AUDIT_MODE))
            LOGW(MOD, au->path, "audit log mode %04o: cannot narrow it to %04o: %s", (unsigned)mode,
                 (unsigned)(mode & AUDIT_MODE), strerror(errno));
        else
            LOGW(MOD, au->path, "audit log mode was %04o: now %04o", (unsigned)mode,
                 (unsigned)(mode & AUDIT_MODE));
    }
    au->f = fdopen(fd, "a");
    if (!au->f) {
        int e = errno;
        close(fd);
        return -e;
    }
    au->bytes = st.st_size;
    return 0;
}

/* path.i (i > 0) or path into out. */
static void numbered(const struct audit *au, int64_t i, char *out, size_t n)
{
    if (i)
        snprintf(out, n, "%s.%" PRId64, au->path, i);
    else
        snprintf(out, n, "%s", au->path);
}

/* audit.jsonl.N-1 -> .N, ..., audit.jsonl -> .1, and a new audit.jsonl.
 * Under mu. On a failure au->f stays NULL until retry_at. */
static void rotate(struct audit *au)
{
    fclose(au->f);
    au->f = NULL;
    char from[PATH_MAX], to[PATH_MAX];
    int rc = 0;
    for (int64_t i = au->keep; i >= 1 && !rc; i--) {
        numbered(au, i - 1, from, sizeof from);
        numbered(au, i, to, sizeof to);
        if (rename(from, to) && errno != ENOENT)
            rc = -errno;
    }
    if (!rc && au->keep == 0 && unlink(au->path) && errno != ENOENT)
        rc = -errno;
    if (rc)
        LOGE(MOD, au->path, "cannot rotate the audit log: %s", strerror(-rc));
    else
        rc = open_log(au);
    if (rc)
        au->retry_at = ch_mono_ms() + REOPEN_RETRY_MS;
}

/* Appends line and a newline, rotating first when the file would pass
 * max_bytes. Under mu. */
static void put_line(struct audit *au, const char *line)
{
    int64_t len = (int64_t)strlen(line) + 1;
    int64_t now = ch_mono_ms();
    if (!au->f && now >= au->retry_at && open_log(au))
        au->retry_at = now + REOPEN_RETRY_MS;
    if (au->f && au->bytes > 0 && au->bytes + len > au->max_bytes)
        rotate(au);
    if (!au->f) {
        au->lost++;
        if (now - au->lost_logged >= 60000) {
            LOGE(MOD, au->path, "%" PRIu64 " audit lines not written (see above)", au->lost);
            au->lost = 0;
            au->lost_logged = now;
        }
        return;
    }
    fputs(line, au->f);
    fputc('\n', au->f);
    fflush(au->f);
    au->bytes += len;
}

/* A time for a point, after the last one: two entries in one millisecond
 * stay two points. Under mu. */
static int64_t stamp(struct audit *au, int64_t now)
{
    if (now <= au->last_ms)
        now = au->last_ms + 1;
    au->last_ms = now;
    return now;
}

/* ---- entries ------------------------------------------------------------------------------ */

/* "401:20,429:99980" and the status counted most. */
static unsigned agg_statuses(const struct agg *g, char *out, size_t n)
{
    unsigned top = 0;
    uint64_t most = 0;
    out[0] = '\0';
    for (int i = 0; i < AGG_STATUSES && g->status[i]; i++) {
        size_t k = strlen(out);
        snprintf(out + k, n - k, "%s%u:%" PRIu64, k ? "," : "", g->status[i], g->count[i]);
        if (g->count[i] > most)
            most = g->count[i], top = g->status[i];
    }
    if (g->other) {
        size_t k = strlen(out);
        snprintf(out + k, n - k, ",other:%" PRIu64, g->other);
    }
    return top;
}

/* The entry's line (caller frees) and point (added to b), at ts; with g,
 * the count's fields too. */
static char *entry_out(const struct api *a, const struct entry *e, const struct agg *g, int64_t ts,
                       struct lp_buf *b)
{
    json_t *o = json_pack("{s:I,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:i,s:I,s:I,s:s}", "ts_ms",
                          (json_int_t)ts, "hub", a->cfg->mqtt.client_id, "token", e->token, "role",
                          e->role, "method", e->method, "path", e->path, "query", e->query, "sites",
                          e->sites, "status", (int)e->status, "rows", (json_int_t)e->rows, "ms",
                          (json_int_t)e->ms, "remote", e->remote);
    lp_begin(b, "carehub_audit");
    lp_tag(b, "hub", a->cfg->mqtt.client_id);
    lp_tag(b, "role", e->role);
    lp_tag(b, "token", e->token);
    lp_field_str(b, "method", e->method);
    lp_field_str(b, "path", e->path);
    lp_field_str(b, "query", e->query);
    lp_field_str(b, "sites", e->sites);
    lp_field_int(b, "status", e->status);
    lp_field_int(b, "rows", (int64_t)e->rows);
    lp_field_int(b, "ms", e->ms);
    lp_field_str(b, "remote", e->remote);
    if (e->event && e->event[0]) {
        json_object_set_new(o, "event", json_string(e->event));
        lp_field_str(b, "event", e->event);
    }
    if (g) {
        char st[128], sum[192];
        agg_statuses(g, st, sizeof st);
        snprintf(sum, sizeof sum, "%" PRIu64 " requests refused (%s)", g->n, st);
        json_object_update_new(o, json_pack("{s:I,s:s,s:I,s:I,s:s}", "refused", (json_int_t)g->n,
                                            "statuses", st, "first_ms", (json_int_t)g->first_ms,
                                            "last_ms", (json_int_t)g->last_ms, "summary", sum));
        lp_field_int(b, "refused", (int64_t)g->n);
        lp_field_str(b, "statuses", st);
        lp_field_int(b, "first_ms", g->first_ms);
        lp_field_int(b, "last_ms", g->last_ms);
        lp_field_str(b, "summary", sum);
    }
    lp_end(b, ts);
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return line;
}

/* Writes g's count (when it has one) and frees its entry. Under mu. */
static void agg_flush(const struct api *a, struct agg *g, struct lp_buf *b)
{
    if (g->n) {
        char st[128];
        struct entry e = {.token = g->token,
                          .role = g->role,
                          .method = g->method,
                          .path = g->path,
                          .query = "",
                          .sites = "",
                          .remote = g->addr,
                          .status = agg_statuses(g, st, sizeof st)};
        char *line = entry_out(a, &e, g, stamp(a->audit, g->last_ms), b);
        if (line)
            put_line(a->audit, line);
        free(line);
    }
    g->used = false;
}

static void enqueue(struct api *a, struct lp_buf *b)
{
    size_t len, lines;
    char *data = lp_take(b, &len, &lines);
    if (data)
        influx_enqueue_once(a->writer, INFLUX_RP_DEFAULT, data, len, lines);
}

/* Counts r, a refusal, when its address (and token) has an interval open;
 * else opens one and returns false: r is written as it comes. */
static bool agg_count(struct api *a, struct req *r, const char *token, const char *role,
                      int64_t now)
{
    struct audit *au = a->audit;
    struct lp_buf b;
    lp_init(&b);
    pthread_mutex_lock(&au->mu);
    struct agg *g = NULL, *spare = NULL;
    for (size_t i = 0; i < AGG_SLOTS && !g; i++) {
        struct agg *x = &au->agg[i];
        if (x->used && !strcmp(x->addr, r->addr) && !strcmp(x->token, token))
            g = x;
        else if (!spare || (spare->used && (!x->used || x->opened < spare->opened)))
            spare = x;
    }
    if (g) {
        int i = 0;
        while (i < AGG_STATUSES && g->status[i] && g->status[i] != r->status)
            i++;
        if (i == AGG_STATUSES) {
            g->other++;
        } else {
            g->status[i] = r->status;
            g->count[i]++;
        }
        if (!g->n++)
            g->first_ms = now;
        g->last_ms = now;
    } else {
        if (spare->used) /* the table is full: the oldest count is written early */
            agg_flush(a, spare, &b);
        memset(spare, 0, sizeof *spare);
        spare->used = true;
        spare->opened = ch_mono_ms();
        ch_strlcpy(spare->addr, r->addr, sizeof spare->addr);
        ch_strlcpy(spare->token, token, sizeof spare->token);
        ch_strlcpy(spare->role, role, sizeof spare->role);
        ch_strlcpy(spare->method, r->method, sizeof spare->method);
        ch_strlcpy(spare->path, r->path, sizeof spare->path);
    }
    pthread_mutex_unlock(&au->mu);
    enqueue(a, &b);
    return g != NULL;
}

/* Writes the counts whose interval ended (all of them with all). */
static void agg_flush_due(struct api *a, bool all)
{
    struct audit *au = a->audit;
    struct lp_buf b;
    lp_init(&b);
    pthread_mutex_lock(&au->mu);
    int64_t now = ch_mono_ms();
    for (size_t i = 0; i < AGG_SLOTS; i++) {
        struct agg *g = &au->agg[i];
        if (g->used && (all || now - g->opened >= au->interval_ms))
            agg_flush(a, g, &b);
    }
    pthread_mutex_unlock(&au->mu);
    enqueue(a, &b);
}

static void *flusher(void *arg)
{
    struct api *a = arg;
    struct audit *au = a->audit;
    pthread_mutex_lock(&au->mu);
    while (!au->stopping) {
        ch_cond_wait_until(&au->cond, &au->mu, ch_mono_ms() + FLUSH_TICK_MS);
        pthread_mutex_unlock(&au->mu);
        agg_flush_due(a, false);
        pthread_mutex_lock(&au->mu);
    }
    pthread_mutex_unlock(&au->mu);
    return NULL;
}

int audit_open(struct api *a)
{
    const struct hubcfg_api *ac = &a->cfg->api;
    struct audit *au = ch_xcalloc(1, sizeof *au);
    au->path = ac->audit_log;
    au->max_bytes = ac->audit_max_bytes;
    au->keep = ac->audit_keep;
    au->interval_ms = ac->audit_refusal_interval_ms;
    int rc = open_log(au);
    if (rc) {
        free(au);
        return rc;
    }
    pthread_mutex_init(&au->mu, NULL);
    ch_cond_init_monotonic(&au->cond);
    a->audit = au;
    rc = -pthread_create(&au->flusher, NULL, flusher, a);
    if (rc) {
        LOGE(MOD, NULL, "cannot start the audit thread: %s", strerror(-rc));
        pthread_cond_destroy(&au->cond);
        pthread_mutex_destroy(&au->mu);
        fclose(au->f);
        free(au);
        a->audit = NULL;
    }
    return rc;
}

void audit_close(struct api *a)
{
    struct audit *au = a->audit;
    if (!au)
        return;
    pthread_mutex_lock(&au->mu);
    au->stopping = true;
    pthread_cond_signal(&au->cond);
    pthread_mutex_unlock(&au->mu);
    pthread_join(au->flusher, NULL);
    agg_flush_due(a, true);
    if (au->f)
        fclose(au->f);
    pthread_cond_destroy(&au->cond);
    pthread_mutex_destroy(&au->mu);
    free(au);
    a->audit = NULL;
}

void audit_write(struct api *a, struct req *r)
{
    int64_t now = ch_now_ms();
    /* as the client sent them, cut to size: perhaps not UTF-8, which a JSON
       line cannot hold (json_pack would fail and the line be lost) */
    ch_utf8_fix(r->method);
    ch_utf8_fix(r->path);
    ch_utf8_fix(r->query);
    ch_utf8_fix(r->event);
    const char *token = r->authed ? r->who.name : "-";
    const char *role = r->authed ? token_role_name(r->who.role) : "-";
    bool refusal = r->status >= 400 && (!r->authed || r->status == 429);
    /* account events (a failed login) are each written: the per-address
       and per-name limits bound how many there are */
    if (refusal && !r->event[0] && agg_count(a, r, token, role, now))
        return;
    struct entry e = {.token = token,
                      .role = role,
                      .method = r->method,
                      .path = r->path,
                      .query = r->query,
                      .sites = r->sites,
                      .remote = r->addr,
                      .event = r->event,
                      .status = r->status,
                      .rows = r->rows,
                      .ms = ch_mono_ms() - r->start_mono};
    struct lp_buf b;
    lp_init(&b);
    pthread_mutex_lock(&a->audit->mu);
    char *line = entry_out(a, &e, NULL, stamp(a->audit, now), &b);
    if (line)
        put_line(a->audit, line);
    pthread_mutex_unlock(&a->audit->mu);
    free(line);
    enqueue(a, &b);
}

/* The columns only a count has: left out of the other entries. */
static bool count_column(const char *name)
{
    static const char *const cols[] = {"refused", "statuses", "first_ms", "last_ms", "summary"};
    for (size_t i = 0; i < CH_ARRAY_LEN(cols); i++)
        if (!strcmp(name, cols[i]))
            return true;
    return false;
}

enum MHD_Result h_audit(struct api *a, struct req *r, struct MHD_Connection *c)
{
    static const char *const allowed[] = {"from", "to", "token", "limit", NULL};
    const char *bad = unknown_param(c, allowed);
    if (bad)
        return fail(r, c, 400, "unknown parameter '%.64s'", bad);
    enum MHD_Result ret = MHD_NO;
    int64_t from, to;
    if (!time_range(r, c, &from, &to, &ret))
        return ret;
    const char *tok = arg(c, "token");
    if (tok && !ch_valid_id(tok) &&
        !(!strncmp(tok, USER_PREFIX, strlen(USER_PREFIX)) &&
          users_valid_name(tok + strlen(USER_PREFIX))))
        return fail(r, c, 400, "parameter 'token': a token name, or user:NAME");
    long long limit = 1000;
    const char *ls = arg(c, "limit");
    if (ls && (ch_parse_int(ls, &limit) || limit < 1 || limit > ALARMS_LIMIT_MAX))
        return fail(r, c, 400, "parameter 'limit': a whole number from 1 to %d", ALARMS_LIMIT_MAX);
    struct qb q;
    qb_init(&q);
    qb_add(&q, "SELECT * FROM \"carehub_audit\" WHERE time >= ");
    qb_time(&q, from);
    qb_add(&q, " AND time < ");
    qb_time(&q, to);
    if (tok) {
        qb_add(&q, " AND \"token\" = ");
        qb_str(&q, tok);
    }
    qb_add(&q, " ORDER BY time DESC LIMIT %lld", limit);
    json_t *res;
    char err[512];
    int rc = influxq_run_qb(&a->q, &q, &res, err, sizeof err);
    if (rc)
        return fail_query(r, c, rc, err);
    json_t *out = json_array();
    size_t i;
    json_t *s;
    json_array_foreach(influxq_series(res, 0), i, s)
    {
        json_t *cols = json_object_get(s, "columns");
        size_t j;
        json_t *row;
        json_array_foreach(json_object_get(s, "values"), j, row)
        {
            json_t *o = json_object();
            size_t k;
            json_t *col;
            json_array_foreach(cols, k, col)
            {
                const char *name = json_string_value(col);
                json_t *v = json_array_get(row, k);
                if ((!v || json_is_null(v)) && count_column(name))
                    continue;
                json_object_set(o, !strcmp(name, "time") ? "ts_ms" : name, v ? v : json_null());
            }
            json_t *sites = json_array();
            const char *sl = json_string_value(json_object_get(o, "sites"));
            char buf[256];
            ch_strlcpy(buf, sl ? sl : "", sizeof buf);
            char *save = NULL;
            for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
                json_array_append_new(sites, json_string(t));
            json_object_set_new(o, "sites", sites);
            json_array_append_new(out, o);
        }
    }
    json_decref(res);
    r->rows = json_array_size(out);
    return reply_json(r, c, 200, json_pack("{s:o}", "entries", out));
}
