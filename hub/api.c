/* care-hub's HTTP API (api.h; hub/API.md is the reference): starting and
 * stopping the server, authentication, the route table that says which
 * roles may call each endpoint, and a request's life from its first call
 * to its audit entry. The endpoints are in api_*.c (api_internal.h lists
 * them), the summary's kept figures in rollup.c. */
#include "api.h"
#include "api_internal.h"
#include "hubcfg.h"
#include "err.h"
#include "log.h"
#include "tokens.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define BODY_MAX       4096 /* request bodies beyond this: 413 */
#define CONN_TIMEOUT_S 60
#define KEEPALIVE_MS   15000

/* GB/T 18883-2022 (indoor air quality): CO2 <= 0.10 % (1000 ppm), PM2.5 <= 50
 * ug/m3 (24 h); temperature and humidity span its summer and winter bands. */
static const struct limit_def default_limits[] = {
    {"environment", "co2", -1e308, 1000},
    {"environment", "pm25", -1e308, 50},
    {"environment", "temperature", 16, 28},
    {"environment", "humidity", 30, 80},
};

/* ---- what a request costs ------------------------------------------------------------------ */

/* An export reads InfluxDB an hour at a time, a summary a day at a time: one
 * request can cost thousands of queries. They pay for those from the token's
 * rate (pay) and run at most api.max_exports_per_token at once per token
 * (heavy_enter): the table counts the running ones by token name, so that a
 * tokens reload does not reset it; an entry goes when its count does. */
struct heavy {
    char token[WHO_NAME_MAX];
    unsigned n;
};

#define PAY_SLICE_MS 200 /* a waiting request looks at the API's stop this often */

bool heavy_enter(struct api *a, struct req *r, struct MHD_Connection *c, enum MHD_Result *ret)
{
    unsigned max = (unsigned)a->cfg->api.max_exports_per_token;
    pthread_mutex_lock(&a->heavy_mu);
    struct heavy *h = NULL;
    for (size_t i = 0; i < a->n_heavy && !h; i++)
        if (!strcmp(a->heavy[i].token, r->who.name))
            h = &a->heavy[i];
    bool ok = !h || h->n < max;
    if (ok && !h) {
        a->heavy = ch_xrealloc(a->heavy, (a->n_heavy + 1) * sizeof *a->heavy);
        h = &a->heavy[a->n_heavy++];
        ch_strlcpy(h->token, r->who.name, sizeof h->token);
        h->n = 0;
    }
    if (ok)
        h->n++;
    pthread_mutex_unlock(&a->heavy_mu);
    r->heavy = ok;
    if (!ok)
        *ret = fail_hdr(r, c, 429, "Retry-After", "5",
                        "this token runs %u exports and summaries at once already "
                        "(api.max_exports_per_token): wait for one to finish",
                        max);
    return ok;
}

static void heavy_leave(struct api *a, const char *token)
{
    pthread_mutex_lock(&a->heavy_mu);
    for (size_t i = 0; i < a->n_heavy; i++) {
        if (strcmp(a->heavy[i].token, token))
            continue;
        if (--a->heavy[i].n == 0)
            a->heavy[i] = a->heavy[--a->n_heavy];
        break;
    }
    pthread_mutex_unlock(&a->heavy_mu);
}

int pay(struct api *a, const char *token, double cost, int64_t max_wait_ms, int64_t *wait_ms)
{
    double owed = cost;
    int64_t wait = 0;
    bool user = !strncmp(token, USER_PREFIX, strlen(USER_PREFIX));
    for (;;) {
        int rc;
        if (user) {
            pthread_rwlock_rdlock(&a->users_lock);
            rc = a->users ? users_pay(a->users, token + strlen(USER_PREFIX), &owed, max_wait_ms,
                                      ch_mono_ms(), &wait)
                          : CH_ENOTFOUND;
            pthread_rwlock_unlock(&a->users_lock);
        } else {
            pthread_rwlock_rdlock(&a->tokens_lock);
            rc = tokens_pay(a->tokens, token, &owed, max_wait_ms, ch_mono_ms(), &wait);
            pthread_rwlock_unlock(&a->tokens_lock);
        }
        if (wait_ms)
            *wait_ms = wait;
        if (rc || owed <= 0.0)
            return rc;
        max_wait_ms = INT64_MAX; /* the first estimate decided: wait for the rest */
        if (ch_sse_stopping(&a->sse))
            return CH_ESTATE;
        ch_sleep_ms(wait < PAY_SLICE_MS ? wait : PAY_SLICE_MS);
    }
}

/* ---- authentication and routing ----------------------------------------------------------- */

bool in_scope(const struct who *w, const char *site)
{
    if (w->all)
        return true;
    if (w->district[0])
        return tokens_district_covers(w->district, site);
    for (size_t i = 0; i < w->n_sites; i++)
        if (!strcmp(w->sites[i], site))
            return true;
    return false;
}

void who_from(struct who *w, const struct token *k, const char *name)
{
    ch_strlcpy(w->name, name, sizeof w->name);
    w->role = k->role;
    w->all = k->all_sites;
    ch_strlcpy(w->district, k->district ? k->district : "", sizeof w->district);
    w->grants = k->grant_mask;
    free(w->sites);
    w->n_sites = k->sites.n;
    w->sites = ch_xcalloc(k->sites.n + 1, CH_ID_MAX);
    for (size_t i = 0; i < k->sites.n; i++)
        ch_strlcpy(w->sites[i], ((char **)k->sites.items)[i], CH_ID_MAX);
}

/* The per-address limit (api_internal.h); given back in on_completed. */
bool address_limited(struct api *a, struct req *r, struct MHD_Connection *c, enum MHD_Result *ret)
{
    int retry = 1;
    if (!tokens_addrs_take(a->addrs, r->addr, ch_mono_ms(), &retry)) {
        r->addr_taken = true;
        return false;
    }
    char ra[16];
    snprintf(ra, sizeof ra, "%d", retry);
    r->addr_limited = true;
    *ret = fail_hdr(r, c, 429, "Retry-After", ra, "too many refused requests from this address");
    return true;
}

/* The bearer token's holder, or without an Authorization header the
 * session cookie's user, into r->who. Returns 0, or the status after
 * answering (401, or 429 for the token's or user's rate or the address's). */
static unsigned authenticate(struct api *a, struct req *r, struct MHD_Connection *c,
                             enum MHD_Result *ret)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h) {
        int st = session_authenticate(a, r, c, ret);
        if (st >= 0)
            return (unsigned)st;
    }
    if (!h || strncasecmp(h, "Bearer ", 7) || !h[7] || strlen(h) > 256) {
        if (address_limited(a, r, c, ret))
            return 429;
        *ret = fail_hdr(r, c, 401, "WWW-Authenticate", "Bearer realm=\"carehub\"",
                        "a bearer token is required (Authorization: Bearer ...)");
        return 401;
    }
    const char *secret = h + 7;
    while (*secret == ' ')
        secret++;
    pthread_rwlock_rdlock(&a->tokens_lock);
    const struct token *k = tokens_find(a->tokens, secret);
    int retry = 1;
    bool limited = k && !tokens_take(a->tokens, k, ch_mono_ms(), &retry);
    if (k) {
        r->authed = true;
        who_from(&r->who, k, k->name);
    }
    pthread_rwlock_unlock(&a->tokens_lock);
    if (!k) {
        if (address_limited(a, r, c, ret))
            return 429;
        *ret = fail_hdr(r, c, 401, "WWW-Authenticate",
                        "Bearer realm=\"carehub\", error=\"invalid_token\"",
                        "unknown or revoked token");
        return 401;
    }
    if (limited) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", retry);
        *ret = fail_hdr(r, c, 429, "Retry-After", ra, "too many requests for this token");
        return 429;
    }
    return 0;
}

/* The endpoints under /api, and who may call them. Every one but login and
 * logout needs a valid token or session (authenticate); a role the route
 * does not allow is refused (403, refusal) before its handler runs. Within
 * a handler the token's scope decides which sites it sees (site_param,
 * where_sites, in_scope), and a regulator's grants which series it reads
 * (may_read) and how residents and staff are shown (privacy); only an
 * admin takes alarms out of or back into service (h_command). A request
 * with a session cookie that changes something (any method but GET and
 * HEAD) must also pass ch_http_csrf_check. */
#define ROLE_BIT(role) (1u << (role))
#define ANY_ROLE                                                                                   \
    (ROLE_BIT(ROLE_STAFF) | ROLE_BIT(ROLE_OPERATOR) | ROLE_BIT(ROLE_REGULATOR) |                   \
     ROLE_BIT(ROLE_ADMIN))

enum { M_GET = 1, M_POST = 2, M_PUT = 4, M_DELETE = 8 }; /* M_GET: GET and HEAD */

typedef enum MHD_Result handler(struct api *a, struct req *r, struct MHD_Connection *c);
typedef enum MHD_Result handler_one(struct api *a, struct req *r, struct MHD_Connection *c,
                                    const char *one);

static const struct route {
    const char *path; /* after /api; one ending in '/' takes the rest (one segment, or with
                         rest all of it) */
    unsigned methods; /* M_* */
    unsigned roles;   /* ROLE_BITs of the roles allowed */
    const char *refusal;
    handler *h;
    handler_one *h_one; /* instead of h: NULL or the last segment */
    bool open;          /* no token or session needed */
    bool rest;
} routes[] = {
    {"/v1/me", M_GET, ANY_ROLE, NULL, h_me, NULL, false, false},
    {"/v1/console", M_GET, ANY_ROLE, NULL, h_console, NULL, true, false},
    {"/v1/me/password", M_POST, ANY_ROLE, NULL, h_password, NULL, false, false},
    {"/v1/login", M_POST, ANY_ROLE, NULL, h_login, NULL, true, false},
    {"/v1/logout", M_POST, ANY_ROLE, NULL, h_logout, NULL, true, false},
    {"/v1/users", M_GET | M_POST, ROLE_BIT(ROLE_ADMIN), "only an admin may manage users", NULL,
     h_users, false, false},
    {"/v1/users/", M_GET | M_PUT | M_DELETE, ROLE_BIT(ROLE_ADMIN), "only an admin may manage users",
     NULL, h_users, false, true},
    {"/v1/sites", M_GET, ANY_ROLE, NULL, NULL, h_sites, false, false},
    {"/v1/sites/", M_GET, ANY_ROLE, NULL, NULL, h_sites, false, false},
    {"/v1/alarms", M_GET, ANY_ROLE, NULL, h_alarms, NULL, false, false},
    {"/v1/alarms/active", M_GET, ANY_ROLE, NULL, h_active, NULL, false, false},
    {"/v1/commands", M_POST, ANY_ROLE & ~ROLE_BIT(ROLE_REGULATOR),
     "a regulator token may not send commands", h_command, NULL, false, false},
    {"/v1/events", M_GET, ANY_ROLE, NULL, h_events, NULL, false, false},
    {"/v1/summary", M_GET, ANY_ROLE, NULL, h_summary, NULL, false, false},
    {"/v1/series", M_GET, ANY_ROLE, NULL, h_series, NULL, false, false},
    {"/v1/export", M_GET, ANY_ROLE, NULL, h_export, NULL, false, false},
    {"/v1/audit", M_GET, ROLE_BIT(ROLE_ADMIN), "only an admin may read the audit log", h_audit,
     NULL, false, false},
};

static unsigned method_bit(const char *method)
{
    if (!strcmp(method, "GET") || !strcmp(method, "HEAD"))
        return M_GET;
    if (!strcmp(method, "POST"))
        return M_POST;
    if (!strcmp(method, "PUT"))
        return M_PUT;
    if (!strcmp(method, "DELETE"))
        return M_DELETE;
    return 0;
}

/* The Allow header of methods. */
static void allow_of(unsigned methods, char *out, size_t n)
{
    static const char *const names[] = {"GET, HEAD", "POST", "PUT", "DELETE"};
    out[0] = '\0';
    for (unsigned i = 0; i < 4; i++) {
        if (!(methods & (1u << i)))
            continue;
        size_t len = strlen(out);
        snprintf(out + len, n - len, "%s%s", len ? ", " : "", names[i]);
    }
}

static const struct route *find_route(const char *p, const char **one)
{
    for (size_t i = 0; i < CH_ARRAY_LEN(routes); i++) {
        const struct route *rt = &routes[i];
        size_t n = strlen(rt->path);
        if (rt->path[n - 1] == '/') { /* /v1/sites/{site} */
            if (!strncmp(p, rt->path, n) && (rt->rest || !strchr(p + n, '/'))) {
                *one = p + n;
                return rt;
            }
        } else if (!strcmp(p, rt->path)) {
            return rt;
        }
    }
    return NULL;
}

static enum MHD_Result route(struct api *a, struct MHD_Connection *c, const char *url,
                             const char *method, struct req *r)
{
    unsigned m = method_bit(method);
    if (!strcmp(url, "/healthz")) {
        if (m != M_GET)
            return fail_hdr(r, c, 405, "Allow", "GET, HEAD", "method not allowed");
        return reply_json(r, c, 200, json_pack("{s:s}", "status", "ok"));
    }
    enum MHD_Result ret = MHD_NO;
    if (strncmp(url, "/api/", 5)) { /* no token: a limited address gets nothing */
        if (address_limited(a, r, c, &ret))
            return ret;
        if (m != M_GET)
            return fail_hdr(r, c, 405, "Allow", "GET, HEAD", "method not allowed");
        return serve_file(a, r, c, url);
    }
    const char *one = NULL;
    const struct route *rt = find_route(url + 4, &one);
    bool bad_method = rt && !(rt->methods & m);
    if ((!rt || bad_method || rt->open) && address_limited(a, r, c, &ret))
        return ret;
    if (!rt)
        return fail(r, c, 404, "no such endpoint");
    if (bad_method) {
        char allow[64];
        allow_of(rt->methods, allow, sizeof allow);
        return fail_hdr(r, c, 405, "Allow", allow, "method not allowed");
    }
    if (r->body.too_big && rt->open)
        return fail(r, c, 413, "request body larger than %d bytes", BODY_MAX);
    if (rt->open)
        return rt->h(a, r, c);
    if (authenticate(a, r, c, &ret))
        return ret;
    if (r->body.too_big)
        return fail(r, c, 413, "request body larger than %d bytes", BODY_MAX);
    const char *why = NULL;
    unsigned st = r->who.user && m != M_GET ? ch_http_csrf_check(c, &why) : 0;
    if (st)
        return fail(r, c, st, "%s", why);
    if (!(rt->roles & ROLE_BIT(r->who.role)))
        return fail(r, c, 403, "%s", rt->refusal);
    return rt->h_one ? rt->h_one(a, r, c, one) : rt->h(a, r, c);
}

static enum MHD_Result collect_query(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    (void)kind;
    struct req *r = cls;
    size_t n = strlen(r->query);
    snprintf(r->query + n, sizeof r->query - n, "%s%s=%s", n ? "&" : "", key, value ? value : "");
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    struct api *a = cls;
    (void)version;
    struct req *r = *con_cls;
    if (!r) {
        r = ch_xcalloc(1, sizeof *r);
        r->start_mono = ch_mono_ms();
        ch_strlcpy(r->method, method, sizeof r->method);
        ch_strlcpy(r->path, url, sizeof r->path);
        ch_http_client_addr(c, r->addr, sizeof r->addr);
        MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, collect_query, r);
        *con_cls = r;
        if (ch_http_body_declared_too_big(c, &r->body))
            return fail(r, c, 413, "request body larger than %d bytes", BODY_MAX);
        return MHD_YES;
    }
    if (*upload_size) {
        if (!ch_http_body_feed(&r->body, upload, upload_size, BODY_MAX))
            return fail(r, c, 413, "request body larger than %d bytes", BODY_MAX);
        return MHD_YES;
    }
    return route(a, c, url, method, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode why)
{
    struct api *a = cls;
    (void)c;
    struct req *r = *con_cls;
    if (!r)
        return;
    if (why != MHD_REQUEST_TERMINATED_COMPLETED_OK && r->status == 200)
        r->status = 499; /* the client went away mid-answer (nginx's code) */
    /* a refusal without a valid token counts against its address: it took
       its place as it came (or, refused before routing, takes it now); a
       request that was not refused gives it back. The 429 of the limit
       itself counts nothing: a client that waits Retry-After gets in. */
    bool refused = r->status >= 400 && r->status < 500 && r->status != 499;
    if (r->addr_taken && !refused)
        tokens_addrs_refund(a->addrs, r->addr, ch_mono_ms());
    else if (!r->authed && refused && !r->addr_taken && !r->addr_limited)
        tokens_addrs_take(a->addrs, r->addr, ch_mono_ms(), NULL);
    /* static files are not worth an audit entry each; refusals of them are */
    bool api = !strncmp(r->path, "/api/", 5) || r->status >= 400;
    if (api && r->status)
        audit_write(a, r);
    if (r->heavy)
        heavy_leave(a, r->who.name);
    ch_http_body_free(&r->body);
    free(r->who.sites);
    free(r);
    *con_cls = NULL;
}

static void costs_init(struct api *a)
{
    a->addrs = tokens_addrs_new(a->cfg->api.address_rate_limit);
    pthread_mutex_init(&a->heavy_mu, NULL);
}

static void costs_free(struct api *a)
{
    tokens_addrs_free(a->addrs);
    pthread_mutex_destroy(&a->heavy_mu);
    free(a->heavy);
}

/* ---- start and stop -------------------------------------------------------------------------- */

/* What regulators read (api_privacy.c) and the compliance limits, from the
 * configuration (whose strings they borrow) or the defaults. */
static void set_policies(struct api *a)
{
    const struct hubcfg_api *ac = &a->cfg->api;
    privacy_setup(a);
    a->lims = default_limits;
    a->n_lims = CH_ARRAY_LEN(default_limits);
    if (ac->compliance.n) {
        struct limit_def *v = ch_xcalloc(ac->compliance.n, sizeof *v);
        for (size_t i = 0; i < ac->compliance.n; i++) {
            const struct hubcfg_limit *h = &((struct hubcfg_limit *)ac->compliance.items)[i];
            v[i] = (struct limit_def){h->measurement, h->metric, h->min, h->max};
        }
        a->lims = v;
        a->n_lims = ac->compliance.n;
    }
}

static void free_policies(struct api *a)
{
    privacy_free(a);
    if (a->lims != default_limits)
        free((void *)a->lims);
}

/* The regulators' pseudonym key: 32 random bytes as hex in the file, made on
 * first start (mode 0600). Every hub of a deployment must share the file. */
static int load_key(struct api *a, const char *path)
{
    FILE *f = fopen(path, "r");
    char hex[80] = "";
    if (f) {
        if (!fgets(hex, sizeof hex, f))
            hex[0] = '\0';
        fclose(f);
    } else if (errno == ENOENT) {
        char h1[33], h2[33];
        ch_random_hex(h1);
        ch_random_hex(h2);
        snprintf(hex, sizeof hex, "%s%s\n", h1, h2);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, hex, 65) != 65 || fsync(fd)) {
            int e = errno;
            LOGE(MOD, path, "cannot create the pseudonym key: %s", strerror(e));
            if (fd >= 0)
                close(fd);
            return -e;
        }
        close(fd);
        LOGI(MOD, path, "new pseudonym key (give every hub of this deployment the same file)");
    } else {
        int e = errno;
        LOGE(MOD, path, "cannot read the pseudonym key: %s", strerror(e));
        return -e;
    }
    for (int i = 0; i < 32; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) {
            LOGE(MOD, path, "the pseudonym key must be 64 hex digits");
            return CH_ECONFIG;
        }
        a->pkey[i] = (unsigned char)v;
    }
    return 0;
}

int api_start(const struct hubcfg *cfg, struct presence *view, struct influx *writer,
              struct sub *mqtt, struct api **out)
{
    *out = NULL;
    const struct hubcfg_api *ac = &cfg->api;
    struct api *a = ch_xcalloc(1, sizeof *a);
    a->cfg = cfg;
    a->view = view;
    a->writer = writer;
    a->mqtt = mqtt;
    a->q = (struct influxq){.cfg = &cfg->influx, .timeout_ms = ac->query_timeout_ms};
    set_policies(a);
    int rc = tokens_load(ac->tokens_file, ac->rate_limit, &a->tokens);
    if (!rc)
        rc = load_key(a, ac->pseudonym_key_file);
    struct stat st;
    if (!rc && (stat(ac->www_dir, &st) || !S_ISDIR(st.st_mode))) {
        LOGE(MOD, ac->www_dir, "www_dir: not a directory (the web console's files)");
        rc = CH_ECONFIG;
    }
    if (!rc)
        rc = users_start(a);
    if (!rc)
        rc = audit_open(a);
    if (rc) {
        users_stop(a);
        tokens_free(a->tokens);
        free_policies(a);
        free(a);
        return rc;
    }
    pthread_rwlock_init(&a->tokens_lock, NULL);
    costs_init(a);
    ch_sse_init(&a->sse, MOD, (size_t)ac->max_clients, KEEPALIVE_MS);
    /* a thread per connection: max is bounded by memory, not CPU (an idle
       thread holds a few pages of its stack) */
    int64_t max = ac->max_clients + 768;
    struct ch_httpd_opts ho = {
        .mod = MOD,
        .bind = ac->bind,
        .port = ac->port,
        .https = &ac->tls,
        .limits = &ac->connections,
        .defaults = {.max = max,
                     .per_address = 64,
                     .pending = max / 2,
                     .pending_per_address = 16,
                     .header_timeout_ms = 10000,
                     .body_timeout_ms = 30000},
        .idle_timeout_s = CONN_TIMEOUT_S,
        .handler = on_request,
        .completed = on_completed,
        .cls = a,
    };
    rc = ch_httpd_start(&ho, &a->http);
    if (rc) {
        api_stop(a);
        return rc;
    }
    a->port = ch_httpd_port(a->http);
    char url[128];
    ch_httpd_url(a->http, url, sizeof url);
    LOGI(MOD, NULL, "serving the API and console on %s (%zu tokens, %zu users)", url,
         a->tokens->list.n, a->users ? a->users->list.n : 0);
    if (!ch_httpd_is_https(a->http) && !ch_http_is_loopback(ac->bind))
        LOGW(MOD, NULL,
             "the API is plain HTTP on %s: tokens cross the network in clear; set api.tls "
             "(deploy/pki/carehub-pki web)",
             ac->bind);
    *out = a;
    return 0;
}

void api_http_stats(struct api *a, struct ch_httpd_stats *out)
{
    memset(out, 0, sizeof *out);
    if (a && a->http)
        ch_httpd_get_stats(a->http, out);
}

uint16_t api_port(const struct api *a)
{
    return a ? a->port : 0;
}

int api_reload_tokens(struct api *a)
{
    if (!a)
        return 0;
    struct tokens *t;
    int rc = tokens_load(a->cfg->api.tokens_file, a->cfg->api.rate_limit, &t);
    if (rc) {
        LOGE(MOD, a->cfg->api.tokens_file, "not reloaded: the tokens in use stay");
        return rc;
    }
    pthread_rwlock_wrlock(&a->tokens_lock);
    struct tokens *old = a->tokens;
    a->tokens = t;
    pthread_rwlock_unlock(&a->tokens_lock);
    tokens_free(old);
    LOGI(MOD, a->cfg->api.tokens_file, "reloaded: %zu tokens", t->list.n);
    return 0;
}

void api_quiesce(struct api *a)
{
    if (!a || !a->http)
        return;
    ch_sse_stop(&a->sse);
    ch_httpd_stop(a->http);
    a->http = NULL;
}

void api_stop(struct api *a)
{
    if (!a)
        return;
    api_quiesce(a);
    ch_sse_destroy(&a->sse);
    tokens_free(a->tokens);
    users_stop(a);
    audit_close(a);
    pthread_rwlock_destroy(&a->tokens_lock);
    costs_free(a);
    explicit_bzero(a->pkey, sizeof a->pkey);
    free_policies(a);
    LOGI(MOD, NULL, "stopped");
    free(a);
}
