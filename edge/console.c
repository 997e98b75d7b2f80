/* The local alarm console (see console.h for the API it serves).
 *
 * Threads. libmicrohttpd runs one thread per connection
 * (MHD_USE_THREAD_PER_CONNECTION) under an internal polling thread. That is
 * what makes Server-Sent Events simple here (common/httpd.h): an event
 * stream's content reader blocks until console_publish() has queued
 * something for it. The
 * connection limit allows each of max_clients phones its stream and one
 * connection for ordinary requests, plus headroom, so a full house of
 * phones cannot lock the API (and the acknowledge button) out.
 *
 * Slow clients. console_publish() never waits for a client: each stream has
 * a bounded queue; a client too far behind is disconnected, and the
 * browser's EventSource reconnects and starts with a fresh snapshot
 * (struct ch_sse, common/httpd.h).
 *
 * Sessions. A login creates a 256-bit random id (getrandom) kept in a fixed
 * table with an absolute expiry; the browser holds it in an HttpOnly,
 * SameSite=Strict cookie. Scripted clients (nurse-station apps) may send
 * HTTP Basic credentials instead, checked on every request.
 *
 * CSRF. Every state-changing request must be a POST with Content-Type
 * application/json: an HTML form on another site cannot send that, and a
 * cross-site fetch() with it needs a CORS preflight that this server never
 * grants. The cookie is SameSite=Strict as well, and an Origin header, when
 * the browser sends one, must name this host.
 *
 * Password guessing. Every login (form or Basic) takes its place in the
 * throttle (edge/throttle.h) before its password is hashed: per (address,
 * user), per address and per user, checked and reserved under one lock, so
 * concurrent guesses get no more checks than sequential ones. A refusal is
 * 429 with Retry-After and costs no hash. The per-user limit spares
 * addresses where that user has logged in, so that someone on the LAN cannot
 * lock the night nurse out of her account during an emergency. */
#include "console.h"
#include "site.h"

#include "console/assets.h"
#include "err.h"
#include "httpd.h"
#include "log.h"
#include "passwd.h"
#include "throttle.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#define MOD "console"

#define BODY_MAX           4096  /* request bodies beyond this: 413 */
#define SESSIONS_MAX       512   /* logins kept; the oldest goes when full */
#define SSE_KEEPALIVE_MS   15000 /* comment line on an idle stream */
#define CONN_TIMEOUT_S     45    /* idle connection closed (> keepalive) */
#define SHELVE_MINUTES_MAX (CH_SHELVE_MAX_MS / 60000)
#define COOKIE_NAME        "carehub_session"
#define SESSION_ID_LEN     64 /* hex chars: 256 bits */

struct session {
    char id[SESSION_ID_LEN + 1]; /* "" = free slot */
    size_t user;                 /* index into cfg->console.users */
    int64_t created_mono;
    int64_t expires_mono;
};

struct console {
    const struct site_config *cfg;
    struct console_ops ops;
    struct ch_httpd *http;
    uint16_t port;
    const char *dummy_hash; /* checked for unknown users: same time as a real one */

    struct ch_sse sse;  /* the event streams */
    pthread_mutex_t mu; /* everything below */
    struct session sessions[SESSIONS_MAX];
    struct throttle *throttle; /* failed logins; has its own lock */
};

/* Per request: the body as it arrives. */
struct req {
    struct ch_http_body body;
};

/* Who made a request. */
struct who {
    size_t user;
    bool basic; /* HTTP Basic rather than a session */
    int64_t expires_mono;
};

static const struct console_user *user_at(const struct console *k, size_t i)
{
    return &((const struct console_user *)k->cfg->console.users.items)[i];
}

static const char *role_name(int role)
{
    return role == ROLE_ADMIN ? "admin" : "staff";
}

/* ---- small buffers ---------------------------------------------------- */

static void buf_printf(struct ch_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void buf_printf(struct ch_buf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        ch_buf_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* ---- alerts as JSON ---------------------------------------------------- */

/* Highest priority first, then the oldest occurrence first (the one that
 * has waited longest), then by id so the order is stable. */
static int alert_cmp(const void *pa, const void *pb)
{
    const struct ch_alert *a = pa, *b = pb;
    if (a->priority != b->priority)
        return a->priority > b->priority ? -1 : 1;
    int64_t ra = a->raised_ms ? a->raised_ms : a->ts_ms;
    int64_t rb = b->raised_ms ? b->raised_ms : b->ts_ms;
    if (ra != rb)
        return ra < rb ? -1 : 1;
    return strcmp(a->alarm_id, b->alarm_id);
}

/* Appends "[a,b,...]". An alert the codec refuses is left out and logged:
 * one bad record must not blank the whole console. */
static void alerts_json(struct ch_buf *b, const struct ch_alert *a, size_t n)
{
    ch_buf_str(b, "[");
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        char *j = ch_alert_encode(&a[i]);
        if (!j) {
            LOGW(MOD, NULL, "alarm '%s' cannot be encoded; left out", a[i].alarm_id);
            continue;
        }
        if (!first)
            ch_buf_str(b, ",");
        ch_buf_str(b, j);
        free(j);
        first = false;
    }
    ch_buf_str(b, "]");
}

/* {"alarms":[...],"server_ms":N}: the active list, sorted. The server's
 * clock lets the page show ages right even when a phone's clock is off. */
static char *active_json(struct console *k)
{
    struct ch_alert *a = NULL;
    size_t n = k->ops.active ? k->ops.active(k->ops.arg, &a) : 0;
    if (n > 1)
        qsort(a, n, sizeof *a, alert_cmp);
    struct ch_buf b = {0};
    ch_buf_str(&b, "{\"alarms\":");
    alerts_json(&b, a, n);
    buf_printf(&b, ",\"server_ms\":%lld}", (long long)ch_now_ms());
    free(a);
    return ch_buf_take(&b);
}

/* One SSE event. data is JSON; compact JSON has no line breaks, but should
 * one appear, each line becomes its own "data:" line as SSE requires. */
/* ---- responses ---------------------------------------------------------- */

/* Sends a jansson object (reference stolen). */
static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, json_t *o,
                                 const char *hdr, const char *val)
{
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return ch_http_send_body(c, status, s, hdr, val);
}

static enum MHD_Result send_error_hdr(struct MHD_Connection *c, unsigned status, const char *msg,
                                      const char *hdr, const char *val)
{
    return send_json(c, status, json_pack("{s:s}", "error", msg), hdr, val);
}

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *msg)
{
    return send_error_hdr(c, status, msg, NULL, NULL);
}

static enum MHD_Result send_method_not_allowed(struct MHD_Connection *c, const char *allow)
{
    return send_error_hdr(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed", "Allow", allow);
}

/* ---- static assets ------------------------------------------------------- */

static enum MHD_Result serve_asset(struct MHD_Connection *c, const char *url, const char *method)
{
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
        return send_method_not_allowed(c, "GET, HEAD");
    if (!strcmp(url, "/"))
        url = "/index.html";
    /* Only names in the compiled-in table exist: no file system is ever
     * touched, so "../" and friends have nothing to reach. */
    const struct console_asset *a = NULL;
    for (size_t i = 0; i < console_n_assets; i++)
        if (!strcmp(console_assets[i].path, url))
            a = &console_assets[i];
    if (!a)
        return send_error(c, MHD_HTTP_NOT_FOUND, "not found");

    const char *inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-None-Match");
    bool fresh = inm && strstr(inm, a->etag);
    struct MHD_Response *r =
        fresh ? MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT)
              : MHD_create_response_from_buffer(a->len, (void *)a->data, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", a->type);
    MHD_add_response_header(r, "ETag", a->etag);
    /* Revalidate every time (cheap with the ETag): after a software update
     * a carer's phone must not keep running yesterday's page. */
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    ch_http_security_headers(r, false);
    enum MHD_Result ret = MHD_queue_response(c, fresh ? MHD_HTTP_NOT_MODIFIED : MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- passwords, sessions, throttling ------------------------------------ */

char *console_hash_password(const char *password)
{
    return ch_passwd_hash(MOD, password);
}

/* Checks user and password; *user is set when they match. The password is
 * hashed even for an unknown user so that a reply's timing does not tell
 * which user names exist. */
static bool credentials_ok(struct console *k, const char *name, const char *password, size_t *user)
{
    const struct cfg_list *users = &k->cfg->console.users;
    for (size_t i = 0; i < users->n; i++) {
        if (!strcmp(user_at(k, i)->name, name)) {
            if (!ch_passwd_verify(password, user_at(k, i)->password_hash))
                return false;
            *user = i;
            return true;
        }
    }
    if (k->dummy_hash)
        (void)ch_passwd_verify(password, k->dummy_hash);
    return false;
}

/* Takes a login attempt's place in the throttle (throttle.h) before its
 * password is hashed. Returns 0 with *tk, to be ended by login_end, or how
 * many milliseconds to wait (429). Behind checks in flight for the same
 * counters it queues for THROTTLE_QUEUE_MS at most. */
static int64_t login_begin(struct console *k, const char *addr, const char *user,
                           struct throttle_ticket *tk)
{
    int64_t wait = 0;
    int why =
        throttle_begin_wait(k->throttle, addr, user, ch_mono_ms() + THROTTLE_QUEUE_MS, tk, &wait);
    if (why == THROTTLE_GO)
        return 0;
    if (why == THROTTLE_FULL)
        LOGW(MOD, addr, "login refused: all %d throttle entries are blocked or in use",
             THROTTLE_SLOTS);
    return wait > 0 ? wait : 1;
}

/* Ends an attempt login_begin let through: ok if the password was right.
 * Logs the blocks a failure starts. */
static void login_end(struct console *k, const char *addr, const char *user,
                      const struct throttle_ticket *tk, bool ok)
{
    unsigned hit = throttle_end(k->throttle, tk, ok, ch_mono_ms());
    if (hit & THROTTLE_HIT_PAIR)
        LOGW(MOD, addr, "%d failed logins for user '%.64s': blocked from this address for %d s",
             THROTTLE_PAIR_MAX, user, THROTTLE_BLOCK_MS / 1000);
    if (hit & THROTTLE_HIT_ADDR)
        LOGW(MOD, addr, "%d failed logins from this address: blocked for %d s", THROTTLE_ADDR_MAX,
             THROTTLE_BLOCK_MS / 1000);
    if (hit & THROTTLE_HIT_USER)
        LOGW(MOD, addr,
             "%d failed logins for user '%.64s' from any address: blocked for %d s but where "
             "that user has logged in",
             THROTTLE_USER_MAX, user, THROTTLE_BLOCK_MS / 1000);
}

/* 429 with Retry-After: wait_ms rounded up to whole seconds. */
static enum MHD_Result send_throttled(struct MHD_Connection *c, int64_t wait_ms)
{
    char secs[24];
    snprintf(secs, sizeof secs, "%lld", (long long)((wait_ms + 999) / 1000));
    return send_error_hdr(c, MHD_HTTP_TOO_MANY_REQUESTS, "too many failed logins; try again later",
                          "Retry-After", secs);
}

/* A new session for user; writes its id. Returns false if no randomness. */
static bool session_new(struct console *k, size_t user, char id[SESSION_ID_LEN + 1])
{
    unsigned char raw[SESSION_ID_LEN / 2];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        return false; /* never fall back to a guessable id */
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(id + 2 * i, 3, "%02x", raw[i]);
    explicit_bzero(raw, sizeof raw);

    int64_t now = ch_mono_ms();
    pthread_mutex_lock(&k->mu);
    struct session *slot = NULL;
    for (size_t i = 0; i < SESSIONS_MAX && !slot; i++)
        if (!k->sessions[i].id[0] || k->sessions[i].expires_mono <= now)
            slot = &k->sessions[i];
    if (!slot) { /* all in use: the oldest login goes */
        slot = &k->sessions[0];
        for (size_t i = 1; i < SESSIONS_MAX; i++)
            if (k->sessions[i].created_mono < slot->created_mono)
                slot = &k->sessions[i];
    }
    memcpy(slot->id, id, SESSION_ID_LEN + 1);
    slot->user = user;
    slot->created_mono = now;
    slot->expires_mono = now + k->cfg->console.session_ms;
    pthread_mutex_unlock(&k->mu);
    return true;
}

/* The session named by the request's cookie; false if none or expired. */
static bool session_find(struct console *k, struct MHD_Connection *c, struct who *w, bool drop)
{
    const char *id = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, COOKIE_NAME);
    if (!id || strlen(id) != SESSION_ID_LEN)
        return false;
    int64_t now = ch_mono_ms();
    bool found = false;
    pthread_mutex_lock(&k->mu);
    for (size_t i = 0; i < SESSIONS_MAX; i++) {
        struct session *s = &k->sessions[i];
        if (s->id[0] && ch_secret_eq(s->id, id)) {
            if (s->expires_mono > now) {
                found = true;
                w->user = s->user;
                w->basic = false;
                w->expires_mono = s->expires_mono;
            }
            if (drop || s->expires_mono <= now)
                memset(s, 0, sizeof *s);
        }
    }
    pthread_mutex_unlock(&k->mu);
    return found;
}

static size_t session_count(struct console *k)
{
    int64_t now = ch_mono_ms();
    size_t n = 0;
    pthread_mutex_lock(&k->mu);
    for (size_t i = 0; i < SESSIONS_MAX; i++)
        n += k->sessions[i].id[0] && k->sessions[i].expires_mono > now;
    pthread_mutex_unlock(&k->mu);
    return n;
}

/* Who is asking: a session cookie, or HTTP Basic credentials. Returns 0, or
 * the HTTP status to answer with after queueing the answer's text in msg
 * (429: Basic credentials throttled, *wait_ms until they may be tried). */
static unsigned authenticate(struct console *k, struct MHD_Connection *c, const char *addr,
                             struct who *w, const char **msg, int64_t *wait_ms)
{
    if (session_find(k, c, w, false))
        return 0;
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!auth || strncasecmp(auth, "Basic ", 6)) {
        *msg = "login required";
        return MHD_HTTP_UNAUTHORIZED;
    }
    if (!ch_http_is_https(c)) {
        /* Basic sends the password with every request: only inside TLS.
           Not even checked, so a wrong one costs no throttle step either. */
        LOGW(MOD, addr, "HTTP Basic refused over plain HTTP");
        *msg = "HTTP Basic authentication only over HTTPS; log in instead";
        return MHD_HTTP_FORBIDDEN;
    }
    char *pass = NULL;
    char *name = MHD_basic_auth_get_username_password(c, &pass);
    unsigned status = 0;
    struct throttle_ticket tk;
    if (!name || !pass) {
        *msg = "bad Basic credentials";
        status = MHD_HTTP_UNAUTHORIZED;
    } else if ((*wait_ms = login_begin(k, addr, name, &tk)) > 0) {
        *msg = "too many failed logins; try again later";
        status = MHD_HTTP_TOO_MANY_REQUESTS;
    } else if (!credentials_ok(k, name, pass, &w->user)) {
        login_end(k, addr, name, &tk, false);
        LOGW(MOD, addr, "Basic authentication failed for user '%.64s'", name);
        *msg = "wrong user or password";
        status = MHD_HTTP_UNAUTHORIZED;
    } else {
        login_end(k, addr, name, &tk, true);
        w->basic = true;
        w->expires_mono = 0;
    }
    if (pass) {
        explicit_bzero(pass, strlen(pass));
        MHD_free(pass);
    }
    if (name)
        MHD_free(name);
    return status;
}

/* ---- request helpers ------------------------------------------------------ */

/* Parses the body as a JSON object; an empty body is {}. NULL: not JSON or
 * not an object. */
static json_t *body_object(const struct req *r)
{
    if (r->body.len == 0)
        return json_object();
    json_error_t e;
    json_t *o = json_loadb(r->body.data, r->body.len, JSON_REJECT_DUPLICATES, &e);
    if (o && !json_is_object(o)) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

static bool valid_alarm_id(const char *s, size_t n)
{
    if (n == 0 || n >= CH_ALARM_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == '-' || ch == ':'))
            return false;
    }
    return true;
}

/* ---- handlers ---------------------------------------------------------------- */

static enum MHD_Result h_login(struct console *k, struct MHD_Connection *c, const char *addr,
                               const struct req *r)
{
    json_t *o = body_object(r);
    const char *name = o ? json_string_value(json_object_get(o, "user")) : NULL;
    const char *pass = o ? json_string_value(json_object_get(o, "password")) : NULL;
    if (!name || !pass || !*name) {
        json_decref(o);
        return send_error(c, MHD_HTTP_BAD_REQUEST, "expected {\"user\": ..., \"password\": ...}");
    }
    struct throttle_ticket tk;
    int64_t wait = login_begin(k, addr, name, &tk);
    if (wait > 0) {
        json_decref(o);
        return send_throttled(c, wait);
    }
    size_t user = 0;
    bool ok = credentials_ok(k, name, pass, &user);
    login_end(k, addr, name, &tk, ok);
    if (!ok) {
        LOGW(MOD, addr, "login failed for user '%.64s'", name);
        json_decref(o);
        return send_error(c, MHD_HTTP_UNAUTHORIZED, "wrong user or password");
    }
    json_decref(o);
    char id[SESSION_ID_LEN + 1];
    if (!session_new(k, user, id)) {
        LOGE(MOD, addr, "no random bytes for a session id: %s", strerror(errno));
        return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot create a session");
    }
    /* HttpOnly keeps the id from scripts, SameSite=Strict from other sites,
     * Secure (over HTTPS) off any plain-HTTP request to this host. */
    char cookie[256];
    snprintf(cookie, sizeof cookie,
             COOKIE_NAME "=%s; HttpOnly; SameSite=Strict; Path=/; Max-Age=%lld%s", id,
             (long long)(k->cfg->console.session_ms / 1000), ch_http_is_https(c) ? "; Secure" : "");
    explicit_bzero(id, sizeof id);
    const struct console_user *u = user_at(k, user);
    LOGI(MOD, addr, "user '%s' logged in (%s)", u->name, role_name(u->role));
    enum MHD_Result ret = send_json(
        c, MHD_HTTP_OK, json_pack("{s:s,s:s}", "user", u->name, "role", role_name(u->role)),
        "Set-Cookie", cookie);
    explicit_bzero(cookie, sizeof cookie);
    return ret;
}

static enum MHD_Result h_logout(struct console *k, struct MHD_Connection *c, const char *addr,
                                const struct who *w)
{
    struct who drop;
    session_find(k, c, &drop, true);
    LOGI(MOD, addr, "user '%s' logged out", user_at(k, w->user)->name);
    return send_json(c, MHD_HTTP_OK, json_pack("{s:b}", "ok", 1), "Set-Cookie",
                     COOKIE_NAME "=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
}

static int64_t history_max_hours(const struct console *k)
{
    int64_t ms = k->cfg->alarms.history_ms;
    if (ms <= 0)
        return 24;
    int64_t h = (ms + 3599999) / 3600000;
    return h < 1 ? 1 : h;
}

static enum MHD_Result h_me(struct console *k, struct MHD_Connection *c, const struct who *w)
{
    const struct console_user *u = user_at(k, w->user);
    json_t *o =
        json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:b}", "user", u->name, "role", role_name(u->role),
                  "site", k->cfg->site ? k->cfg->site : "", "gateway",
                  k->cfg->gateway ? k->cfg->gateway : "", "server_ms", (json_int_t)ch_now_ms(),
                  "history_max_hours", (json_int_t)history_max_hours(k), "basic", w->basic);
    if (!w->basic)
        json_object_set_new(o, "expires_in_ms", json_integer(w->expires_mono - ch_mono_ms()));
    /* the page's language unless the user chose one; the site's name */
    json_object_set_new(o, "locale", json_string(site_locale_name(k->cfg->locale)));
    if (k->cfg->site_name)
        json_object_set_new(o, "site_name", json_string(k->cfg->site_name));
    return send_json(c, MHD_HTTP_OK, o, NULL, NULL);
}

static enum MHD_Result h_history(struct console *k, struct MHD_Connection *c)
{
    int64_t hours = 8, max = history_max_hours(k);
    const char *q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "hours");
    if (q) {
        long long v;
        if (ch_parse_int(q, &v) || v < 1 || v > 100000)
            return send_error(c, MHD_HTTP_BAD_REQUEST, "hours: a whole number from 1");
        hours = v;
    }
    if (hours > max)
        hours = max; /* the alarm module keeps no more than this */
    int64_t now = ch_now_ms(), since = now - hours * 3600000;
    struct ch_alert *a = NULL;
    size_t n = k->ops.history ? k->ops.history(k->ops.arg, since, &a) : 0;
    struct ch_buf b = {0};
    ch_buf_str(&b, "{\"history\":");
    alerts_json(&b, a, n);
    buf_printf(&b, ",\"hours\":%lld,\"since_ms\":%lld,\"server_ms\":%lld}", (long long)hours,
               (long long)since, (long long)now);
    free(a);
    return ch_http_send_body(c, MHD_HTTP_OK, ch_buf_take(&b), NULL, NULL);
}

static enum MHD_Result h_status(struct console *k, struct MHD_Connection *c)
{
    json_t *gw = NULL;
    char *s = k->ops.status_json ? k->ops.status_json(k->ops.arg) : NULL;
    if (s) {
        json_error_t e;
        gw = json_loads(s, 0, &e);
        free(s);
    }
    pthread_mutex_lock(&k->mu);
    size_t clients = ch_sse_clients(&k->sse);
    pthread_mutex_unlock(&k->mu);
    json_t *o = json_pack(
        "{s:s,s:s,s:s,s:I,s:o,s:{s:I,s:I,s:I},s:o}", "site", k->cfg->site ? k->cfg->site : "",
        "gateway", k->cfg->gateway ? k->cfg->gateway : "", "version", CAREHUB_VERSION, "server_ms",
        (json_int_t)ch_now_ms(), "status", gw ? gw : json_null(), "console", "clients",
        (json_int_t)clients, "max_clients", (json_int_t)k->cfg->console.max_clients, "sessions",
        (json_int_t)session_count(k), "http", ch_httpd_stats_json(k->http));
    return send_json(c, MHD_HTTP_OK, o, NULL, NULL);
}

/* Who may do which is edge/authz.c's table, applied by ops.command for every
 * path alike; here only the names. */
struct action {
    const char *name;
    int cmd; /* enum ch_command_action */
};

static const struct action actions[] = {
    {"ack", CH_CMD_ACK},
    {"shelve", CH_CMD_SHELVE},
    {"unshelve", CH_CMD_UNSHELVE},
    {"out_of_service", CH_CMD_OUT_OF_SERVICE},
    {"in_service", CH_CMD_IN_SERVICE},
};

static enum MHD_Result h_command(struct console *k, struct MHD_Connection *c, const char *addr,
                                 const struct who *w, const char *id, size_t id_len,
                                 const struct action *act, const struct req *r)
{
    const struct console_user *u = user_at(k, w->user);
    json_t *o = body_object(r);
    if (!o)
        return send_error(c, MHD_HTTP_BAD_REQUEST, "body: not a JSON object");
    struct ch_command cmd = {.action = act->cmd, .ts_ms = ch_now_ms()};
    memcpy(cmd.alarm_id, id, id_len);
    cmd.alarm_id[id_len] = '\0';
    snprintf(cmd.by, sizeof cmd.by, "console:%s", u->name);
    cmd.role = u->role == ROLE_ADMIN ? CH_ROLE_ADMIN : CH_ROLE_STAFF;
    if (act->cmd == CH_CMD_SHELVE) {
        json_t *m = json_object_get(o, "minutes");
        if (!json_is_integer(m) || json_integer_value(m) < 1 ||
            json_integer_value(m) > SHELVE_MINUTES_MAX) {
            json_decref(o);
            return send_error(c, MHD_HTTP_BAD_REQUEST, "minutes: a whole number from 1");
        }
        cmd.duration_ms = (int64_t)json_integer_value(m) * 60000;
    }
    json_decref(o);

    int rc = k->ops.command ? k->ops.command(k->ops.arg, &cmd) : CH_ENOTFOUND;
    if (act->cmd == CH_CMD_SHELVE)
        LOGI(MOD, addr, "%s %s for %lld min by %s: %s", act->name, cmd.alarm_id,
             (long long)(cmd.duration_ms / 60000), cmd.by, rc ? ch_strerror(rc) : "done");
    else
        LOGI(MOD, addr, "%s %s by %s: %s", act->name, cmd.alarm_id, cmd.by,
             rc ? ch_strerror(rc) : "done");
    switch (rc) {
    case 0:
        return send_json(c, MHD_HTTP_OK,
                         json_pack("{s:b,s:s,s:s,s:s}", "ok", 1, "alarm_id", cmd.alarm_id, "action",
                                   act->name, "by", cmd.by),
                         NULL, NULL);
    case CH_ENOTFOUND:
        return send_error(c, MHD_HTTP_NOT_FOUND, "no such alarm");
    case CH_EDENIED:
        return send_error(c, MHD_HTTP_FORBIDDEN, "only an admin may do that");
    case CH_ESTATE:
        return send_error(c, MHD_HTTP_CONFLICT, "not possible in the alarm's current state");
    case CH_EINVAL:
        return send_error(c, MHD_HTTP_BAD_REQUEST, "invalid command");
    default:
        return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, ch_strerror(rc));
    }
}

/* ---- Server-Sent Events ---------------------------------------------------- */

static char *snapshot_event(void *arg)
{
    char *snap = active_json(arg);
    char *ev = ch_sse_format("snapshot", snap);
    free(snap);
    return ev;
}

static enum MHD_Result streams_full(struct MHD_Connection *c)
{
    return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "too many live clients");
}

static enum MHD_Result h_events(struct console *k, struct MHD_Connection *c, const char *addr,
                                const struct who *w)
{
    return ch_sse_open(&k->sse, c, snapshot_event, k, NULL, user_at(k, w->user)->name, addr,
                       streams_full);
}

void console_publish(struct console *k, const struct ch_alert *t)
{
    if (!k || !t)
        return;
    char *json = ch_alert_encode(t);
    if (!json) {
        LOGW(MOD, NULL, "transition of alarm '%s' cannot be encoded; not shown", t->alarm_id);
        return;
    }
    char *ev = ch_sse_format("alert", json);
    free(json);
    ch_sse_publish(&k->sse, ev, NULL, NULL);
    free(ev);
}

size_t console_clients(struct console *k)
{
    return ch_sse_clients(&k->sse);
}

/* ---- routing ------------------------------------------------------------------ */

static enum MHD_Result route(struct console *k, struct MHD_Connection *c, const char *url,
                             const char *method, struct req *r)
{
    if (!strcmp(url, "/healthz")) /* for a monitor: answers while the console serves */
        return ch_http_send_body(c, MHD_HTTP_OK, ch_xstrdup("{\"ok\":true}"), NULL, NULL);
    if (strncmp(url, "/api/", 5))
        return serve_asset(c, url, method);

    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    bool post = !strcmp(method, "POST");
    const char *path = url + 4; /* "/..." */
    char addr[INET6_ADDRSTRLEN];
    ch_http_client_addr(c, addr, sizeof addr);

    /* Which route, and is the method right? Decided before authentication
     * so that a wrong path is 404 and a wrong method 405 for everyone. */
    enum { R_LOGIN, R_LOGOUT, R_ME, R_ALARMS, R_HISTORY, R_EVENTS, R_STATUS, R_CMD } which;
    const char *id = NULL;
    size_t id_len = 0;
    const struct action *act = NULL;
    bool wants_post;
    if (!strcmp(path, "/login"))
        which = R_LOGIN, wants_post = true;
    else if (!strcmp(path, "/logout"))
        which = R_LOGOUT, wants_post = true;
    else if (!strcmp(path, "/me"))
        which = R_ME, wants_post = false;
    else if (!strcmp(path, "/alarms"))
        which = R_ALARMS, wants_post = false;
    else if (!strcmp(path, "/history"))
        which = R_HISTORY, wants_post = false;
    else if (!strcmp(path, "/events"))
        which = R_EVENTS, wants_post = false;
    else if (!strcmp(path, "/status"))
        which = R_STATUS, wants_post = false;
    else if (!strncmp(path, "/alarms/", 8)) {
        id = path + 8;
        const char *slash = strrchr(id, '/');
        if (!slash)
            return send_error(c, MHD_HTTP_NOT_FOUND, "not found");
        for (size_t i = 0; i < CH_ARRAY_LEN(actions) && !act; i++)
            if (!strcmp(slash + 1, actions[i].name))
                act = &actions[i];
        id_len = (size_t)(slash - id);
        if (!act)
            return send_error(c, MHD_HTTP_NOT_FOUND, "not found");
        which = R_CMD, wants_post = true;
    } else {
        return send_error(c, MHD_HTTP_NOT_FOUND, "not found");
    }
    if (wants_post && !post)
        return send_method_not_allowed(c, "POST");
    if (!wants_post && !get)
        return send_method_not_allowed(c, "GET, HEAD");
    if (r->body.too_big)
        return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large");
    if (wants_post) {
        const char *msg = NULL;
        unsigned st = ch_http_csrf_check(c, &msg);
        if (st)
            return send_error(c, st, msg);
    }
    if (which == R_LOGIN)
        return h_login(k, c, addr, r);

    struct who w = {0};
    const char *msg = NULL;
    int64_t wait_ms = 0;
    unsigned st = authenticate(k, c, addr, &w, &msg, &wait_ms);
    if (st == MHD_HTTP_TOO_MANY_REQUESTS)
        return send_throttled(c, wait_ms);
    if (st) {
        /* The Basic challenge only for clients that tried Basic: a browser
         * whose session ran out must see the login form, not a pop-up. */
        bool tried_basic = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
        if (st == MHD_HTTP_UNAUTHORIZED && tried_basic)
            return send_error_hdr(c, st, msg, "WWW-Authenticate",
                                  "Basic realm=\"carehub console\", charset=\"UTF-8\"");
        return send_error(c, st, msg);
    }
    switch (which) {
    case R_LOGOUT:
        return h_logout(k, c, addr, &w);
    case R_ME:
        return h_me(k, c, &w);
    case R_ALARMS:
        return ch_http_send_body(c, MHD_HTTP_OK, active_json(k), NULL, NULL);
    case R_HISTORY:
        return h_history(k, c);
    case R_EVENTS:
        return h_events(k, c, addr, &w);
    case R_STATUS:
        return h_status(k, c);
    case R_CMD:
        if (!valid_alarm_id(id, id_len))
            return send_error(c, MHD_HTTP_BAD_REQUEST, "bad alarm id");
        return h_command(k, c, addr, &w, id, id_len, act, r);
    case R_LOGIN:
        break;
    }
    return send_error(c, MHD_HTTP_NOT_FOUND, "not found");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    struct console *k = cls;
    (void)version;
    struct req *r = *con_cls;
    if (!r) {
        r = ch_xcalloc(1, sizeof *r);
        *con_cls = r;
        if (ch_http_body_declared_too_big(c, &r->body))
            return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large");
        return MHD_YES;
    }
    if (*upload_size) {
        if (!ch_http_body_feed(&r->body, upload, upload_size, BODY_MAX))
            return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large");
        return MHD_YES;
    }
    return route(k, c, url, method, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode why)
{
    (void)cls;
    (void)c;
    (void)why;
    struct req *r = *con_cls;
    if (r) {
        ch_http_body_free(&r->body); /* wiped: it may hold a password */
        free(r);
        *con_cls = NULL;
    }
}

/* ---- start and stop ------------------------------------------------------------- */

int console_start(const struct site_config *c, const struct console_ops *ops, struct console **out)
{
    *out = NULL;
    const struct console_cfg *cc = &c->console;
    if (cc->session_ms <= 0 || cc->max_clients <= 0) {
        LOGE(MOD, NULL, "session and max_clients must be positive");
        return CH_ECONFIG;
    }
    for (size_t i = 0; i < cc->users.n; i++) {
        const struct console_user *u = &((const struct console_user *)cc->users.items)[i];
        if (strlen(u->name) > CH_ID_MAX - 1 - strlen("console:"))
            LOGW(MOD, u->name, "user name longer than %zu characters: cut short in \"by\"",
                 (size_t)(CH_ID_MAX - 1 - strlen("console:")));
    }
    struct console *k = ch_xcalloc(1, sizeof *k);
    k->cfg = c;
    k->ops = *ops;
    /* An unknown user costs the same hash as a known one (see
     * credentials_ok); the first user's hash has the site's usual cost. */
    if (cc->users.n > 0)
        k->dummy_hash = ((const struct console_user *)cc->users.items)[0].password_hash;
    pthread_mutex_init(&k->mu, NULL);
    k->throttle = throttle_new(THROTTLE_SLOTS);
    ch_sse_init(&k->sse, MOD, (size_t)cc->max_clients, SSE_KEEPALIVE_MS);

    /* Every phone's event stream and a few requests each; slow clients may
       hold `pending`, the rest is kept for whole requests (httpd.h). */
    int64_t max = 2 * cc->max_clients + 64;
    struct ch_httpd_opts ho = {
        .mod = MOD,
        .bind = cc->bind,
        .port = cc->port,
        .https = &cc->tls,
        .limits = &cc->connections,
        .defaults = {.max = max,
                     .per_address = cc->max_clients + 8,
                     .pending = max / 2,
                     .pending_per_address = 8,
                     .header_timeout_ms = 10000,
                     .body_timeout_ms = 20000},
        .idle_timeout_s = CONN_TIMEOUT_S,
        .handler = on_request,
        .completed = on_completed,
        .cls = k,
    };
    int rc = ch_httpd_start(&ho, &k->http);
    if (rc) {
        ch_sse_destroy(&k->sse);
        throttle_free(k->throttle);
        pthread_mutex_destroy(&k->mu);
        free(k);
        return rc;
    }
    k->port = ch_httpd_port(k->http);
    char url[128];
    ch_httpd_url(k->http, url, sizeof url);
    LOGI(MOD, NULL, "serving the alarm console on %s (%zu users)", url, cc->users.n);
    if (!ch_httpd_is_https(k->http) && !ch_http_is_loopback(cc->bind))
        LOGW(MOD, NULL,
             "the console is plain HTTP on %s: passwords and sessions cross the network in "
             "clear; set console.tls (deploy/pki/carehub-pki server)",
             cc->bind && *cc->bind ? cc->bind : "0.0.0.0");
    *out = k;
    return 0;
}

uint16_t console_port(const struct console *k)
{
    return k ? k->port : 0;
}

void console_stop(struct console *k)
{
    if (!k)
        return;
    /* Wake every stream first: a reader waiting for events returns at
     * once, and libmicrohttpd's stop (which shuts the sockets down and
     * joins the connection threads) does not wait out a keepalive. */
    ch_sse_stop(&k->sse);
    ch_httpd_stop(k->http);
    explicit_bzero(k->sessions, sizeof k->sessions);
    ch_sse_destroy(&k->sse);
    throttle_free(k->throttle);
    pthread_mutex_destroy(&k->mu);
    LOGI(MOD, NULL, "stopped");
    free(k);
}
