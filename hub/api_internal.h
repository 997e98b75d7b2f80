/* What the files of care-hub's API share; private to hub/ (the public API is
 * api.h, the reference hub/API.md).
 *
 *   api.c           start and stop, authentication, the route table (who may
 *                   call which endpoint), request life cycle, what a
 *                   request costs (exports and summaries at once, queries)
 *   api_req.c       responses, parameters, InfluxQL conditions, answer rows
 *   api_privacy.c   regulators: pseudonyms, what they may read (an allow-list)
 *   api_sites.c     /sites, /sites/{site}, /me
 *   api_alarms.c    /alarms, /alarms/active, alarm rows and objects
 *   api_commands.c  /commands
 *   api_summary.c   /summary (its figures: rollup.h)
 *   api_series.c    /series, /export
 *   api_audit.c     /audit and the audit entry of every request (refusals
 *                   counted, the log rotated)
 *   api_events.c    /events, api_alert, api_site_changed
 *   api_static.c    the web console's files
 *   api_users.c     /login, /logout, /me/password, /users (people's
 *                   accounts: users.h, sessions.h)
 *
 * Every handler runs on the connection's thread, after authentication and
 * the route's role check; it answers through reply_json or fail and returns
 * what they return. */
#ifndef CAREHUB_API_INTERNAL_H
#define CAREHUB_API_INTERNAL_H

#include "codec.h"
#include "httpd.h"
#include "influxq.h"
#include "sessions.h"
#include "tokens.h"
#include "users.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define MOD              "api" /* every file of the API logs as [api:...] */
#define ALARMS_LIMIT_MAX 10000 /* most rows of /alarms and /audit */
#define PATH_MAX_LEN     200
#define WHO_NAME_MAX     80 /* a token's name, or "user:" and a user's name */
#define USER_PREFIX      "user:"
#define COOKIE_NAME      "carehub_session"

struct audit;
struct heavy;
struct hubcfg;
struct presence;
struct influx;
struct sub;

/* An entry of what a regulator reads (config api.regulator_view): fields of
 * measurement ("room" is its room label), with grant. */
struct allow_def {
    const char *measurement;
    const char *const *fields; /* none: every field of it */
    size_t n_fields;
    unsigned grant; /* 0: every regulator; else the GRANT_ bit it needs */
};

/* An environment limit of the summary (config api.compliance). */
struct limit_def {
    const char *measurement, *metric;
    double min, max;
};

struct api {
    const struct hubcfg *cfg;
    const struct allow_def *allow; /* the configuration's, or the defaults */
    size_t n_allow;
    const struct limit_def *lims;
    size_t n_lims;
    struct presence *view;
    struct influx *writer;
    struct retention *_Atomic retention; /* api_set_retention */
    struct sub *mqtt;
    struct ch_httpd *http;
    uint16_t port;
    struct influxq q;
    struct ch_sse sse;
    unsigned char pkey[32]; /* regulators' pseudonym key */

    pthread_rwlock_t tokens_lock;
    struct tokens *tokens;

    /* people's accounts (api_users.c); users NULL when api.users_file is not set */
    pthread_rwlock_t users_lock;
    struct users *users;
    pthread_mutex_t users_edit; /* one change of the users file at a time */
    struct sessions *sessions;

    struct audit *audit;        /* api_audit.c */
    struct tokens_addrs *addrs; /* requests without a valid token, per address */

    pthread_mutex_t heavy_mu; /* exports and summaries running, per token */
    struct heavy *heavy;
    size_t n_heavy;
};

/* Who asks: a copy of the token's or user's name, role and scope (the
 * tokens and users may be reloaded while a stream runs). A user is named
 * "user:NAME" (USER_PREFIX), in the audit log too. */
struct who {
    char name[WHO_NAME_MAX];
    bool user;                           /* logged in (a session cookie), not a token */
    char session[SESSIONS_ID_LEN + 1];   /* user: the session's id */
    char display[USERS_DISPLAY_MAX + 1]; /* user: the display name, or "" */
    int role;
    bool all;
    char district[CH_ID_MAX];
    size_t n_sites;
    char (*sites)[CH_ID_MAX];
    unsigned grants;
};

/* Per request. */
struct req {
    struct ch_http_body body;
    int64_t start_mono;
    /* for the audit entry */
    bool authed;
    struct who who;
    char method[8];
    char path[PATH_MAX_LEN + 1];
    char query[256];
    char sites[256]; /* sites the answer concerned, comma separated */
    char event[160]; /* what an account request did, for the audit ("login failed: NAME") */
    char addr[64];
    unsigned status;
    uint64_t rows;
    bool addr_taken;   /* took its place from its address's bucket (tokens.h) */
    bool addr_limited; /* answered 429 by the per-address limit */
    bool heavy;        /* an export or summary (heavy_enter) */
};

/* ---- who asks (api.c) ---------------------------------------------------------------------- */

static inline bool is_regulator(const struct who *w)
{
    return w->role == ROLE_REGULATOR;
}

/* Whether site is in w's scope (all sites, a district's, or a list). */
bool in_scope(const struct who *w, const char *site);

/* w from token or user entry k (its role, scope, grants), named name. */
void who_from(struct who *w, const struct token *k, const char *name);

/* Requests without a valid token or session, per address (tokens.h): true,
 * after answering 429, while r's address is over api.address_rate_limit;
 * else r takes its place from the address's bucket, given back when it
 * ends without being refused. */
bool address_limited(struct api *a, struct req *r, struct MHD_Connection *c, enum MHD_Result *ret);

/* ---- what a request costs (api.c) ---------------------------------------------------------- */

/* An export or a summary begins: false, after answering 429, when r's token
 * runs api.max_exports_per_token of them already. It counts until the
 * request is over (its stream too). */
bool heavy_enter(struct api *a, struct req *r, struct MHD_Connection *c, enum MHD_Result *ret);

/* Pays cost (InfluxDB queries) from the rate of the token called token
 * (tokens_pay), waiting for its bucket as needed. Returns 0 once paid;
 * CH_EFULL, nothing paid, when the wait would be longer than max_wait_ms
 * (*wait_ms: how long); CH_ENOTFOUND when the token was revoked; CH_ESTATE
 * when the API is stopping. */
int pay(struct api *a, const char *token, double cost, int64_t max_wait_ms, int64_t *wait_ms);

/* ---- requests (api_req.c) ------------------------------------------------------------------ */

/* Adds site to the sites the answer concerned (for the audit entry). */
void note_site(struct req *r, const char *site);

/* Answers status with o (takes ownership), as compact JSON. */
enum MHD_Result reply_json(struct req *r, struct MHD_Connection *c, unsigned status, json_t *o);

/* Answers status with {"error": <code of status>, "message": fmt...}, and
 * the header hdr: val when hdr is not NULL. */
enum MHD_Result fail_hdr(struct req *r, struct MHD_Connection *c, unsigned status, const char *hdr,
                         const char *val, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

#define fail(r, c, status, ...) fail_hdr(r, c, status, NULL, NULL, __VA_ARGS__)

/* An InfluxDB failure (rc, err) as the client sees it: 503 when retryable,
 * else 500; logged. */
enum MHD_Result fail_query(struct req *r, struct MHD_Connection *c, int rc, const char *err);

/* NULL if every query parameter is one of allowed (NULL-terminated), else
 * the first that is not. */
const char *unknown_param(struct MHD_Connection *c, const char *const *allowed);

/* The query parameter key, or NULL when absent or empty. */
const char *arg(struct MHD_Connection *c, const char *key);

/* from/to of the request: defaults to the last day; checked. Returns true,
 * or false after answering 400 (*ret). */
bool time_range(struct req *r, struct MHD_Connection *c, int64_t *from, int64_t *to,
                enum MHD_Result *ret);

/* The site parameter: absent (NULL, when optional), or a valid id in scope
 * (noted). Returns true, or false after answering (*ret). */
bool site_param(struct req *r, struct MHD_Connection *c, bool required, const char **site,
                enum MHD_Result *ret);

/* The opening of a handler over a site and a time range: no parameter but
 * the allowed ones (400 naming the first other), the site (required or
 * not) in the asker's scope, from and to. Returns true, or false with the
 * answer queued and its result in *ret. */
bool site_range_params(struct req *r, struct MHD_Connection *c, const char *const *allowed,
                       bool site_required, const char **site, int64_t *from, int64_t *to,
                       enum MHD_Result *ret);

/* WHERE condition on sites: the one asked for, or w's scope. */
void where_sites(struct qb *q, const struct who *w, const char *site);

/* " AND time >= from AND time < to". */
void where_time(struct qb *q, int64_t from, int64_t to);

/* Column i of an answer row as text ("" when not text) or as a whole number
 * (0 when not a number); i < 0 is a missing column. */
const char *str_at(json_t *row, int i);
int64_t int_at(json_t *row, int i);

/* Element i of a JSON array as a whole number (0 when not one). */
json_int_t int_of(json_t *arr, size_t i);

/* The gateways' own metrics (edge_device, edge_gateway) and the hub's
 * (carehub_*): their readings are not a device's. */
bool self_metrics_series(json_t *series);

/* ---- privacy (api_privacy.c) --------------------------------------------------------------- */

/* What of a transition a reader sees: all of it, or for a regulator the
 * re-keyed pseudonym (in the message too) and "staff" for who acted, and
 * metric, value and message only when its allow-list lets it read the
 * alarm's metric (else "", none, ""). The pointers are into t or into out. */
struct shown {
    const char *resident, *message, *by;     /* by: NULL when nobody acted */
    const char *resident_name, *device_name; /* "" for a regulator */
    const char *metric;
    bool has_value;
    double value;
    char pseud[16];
    char msg[CH_TEXT_MAX];
};

void privacy(const struct api *a, const struct ch_alert *t, const struct who *w, struct shown *out);

/* Whether w may read field of measurement: anyone but a regulator may; a
 * regulator only what its allow-list grants ("room": the room label). */
bool may_read(const struct api *a, const struct who *w, const char *measurement, const char *field);

/* Whether w may read some field of measurement. */
bool may_read_some(const struct api *a, const struct who *w, const char *measurement);

/* The allow-list from the configuration (whose strings it borrows) or the
 * defaults, into a; privacy_free undoes it. */
void privacy_setup(struct api *a);
void privacy_free(struct api *a);

/* ---- alarms (api_alarms.c) ----------------------------------------------------------------- */

/* The API's alarm object for one transition as w sees it (privacy). Caller
 * decrefs. */
json_t *alarm_object(const struct api *a, const struct ch_alert *t, const struct who *w);

/* A row of the alarm measurement (columns of series s) back into t. */
void row_to_alert(json_t *s, json_t *row, struct ch_alert *t);

/* The occurrences raised in [from, to) at site (NULL: w's scope), each as its
 * latest transition: *out (caller frees), count in *n. Returns 0 or the
 * query's error (err). */
int read_occurrences(struct api *a, const struct who *w, const char *site, int64_t from, int64_t to,
                     struct ch_alert **out, size_t *n, char *err, size_t errn);

/* The alarms whose last transition is not normal, newest first; as above. */
int read_active(struct api *a, const struct who *w, const char *site, struct ch_alert **out,
                size_t *n, char *err, size_t errn);

/* ---- sites (api_sites.c) ------------------------------------------------------------------- */

/* Site objects (see API.md) for the sites in w's scope (or just site),
 * sorted; caller decrefs. Without with_influx (on the MQTT thread, which
 * must not wait for a database), the figures from InfluxDB are left out. */
json_t *sites_json(struct api *a, const struct who *w, const char *site, bool with_influx);

/* ---- audit (api_audit.c) ------------------------------------------------------------------- */

/* Opens api.audit_log (created 0640; an existing file's mode is narrowed to
 * that) and starts the thread that writes the counts of refusals. Returns 0
 * or -errno, logged. */
int audit_open(struct api *a);

/* Writes the refusals counted so far, stops the thread, closes the log. */
void audit_close(struct api *a);

/* The audit entry of a finished request: a line in api.audit_log (rotated at
 * api.audit_max_bytes) and a carehub_audit point. A refusal without a valid
 * token, or a token's 429, is written as it comes only when it is its
 * address's (and token's) first in api.audit_refusal_interval; the others
 * are counted and written as one entry when the interval ends. */
void audit_write(struct api *a, struct req *r);

/* ---- static files (api_static.c) ----------------------------------------------------------- */

/* A file of the web console ("/" is index.html), or 404. */
enum MHD_Result serve_file(struct api *a, struct req *r, struct MHD_Connection *c, const char *url);

/* ---- the endpoints --------------------------------------------------------------------------- */

enum MHD_Result h_me(struct api *a, struct req *r, struct MHD_Connection *c);
enum MHD_Result h_console(struct api *a, struct req *r, struct MHD_Connection *c);
/* one: the site of /sites/{site}, or NULL for every site in scope. */
enum MHD_Result h_sites(struct api *a, struct req *r, struct MHD_Connection *c, const char *one);
enum MHD_Result h_alarms(struct api *a, struct req *r, struct MHD_Connection *c);
enum MHD_Result h_active(struct api *a, struct req *r, struct MHD_Connection *c);
enum MHD_Result h_command(struct api *a, struct req *r, struct MHD_Connection *c);
enum MHD_Result h_events(struct api *a, struct req *r, struct MHD_Connection *c);
enum MHD_Result h_summary(struct api *a, struct req *r, struct MHD_Connection *c);
enum MHD_Result h_series(struct api *a, struct req *r, struct MHD_Connection *c);
enum MHD_Result h_export(struct api *a, struct req *r, struct MHD_Connection *c);
enum MHD_Result h_audit(struct api *a, struct req *r, struct MHD_Connection *c);
enum MHD_Result h_login(struct api *a, struct req *r, struct MHD_Connection *c);
enum MHD_Result h_logout(struct api *a, struct req *r, struct MHD_Connection *c);
enum MHD_Result h_password(struct api *a, struct req *r, struct MHD_Connection *c);
/* one: NULL for /users, else the name of /users/{name}; by method. */
enum MHD_Result h_users(struct api *a, struct req *r, struct MHD_Connection *c, const char *one);

/* ---- people's accounts (api_users.c) ------------------------------------------------------ */

/* Loads api.users_file (a missing file is no users) and makes the sessions
 * table. Returns 0 or the load's error. */
int users_start(struct api *a);
void users_stop(struct api *a);

/* The session of r's cookie into r->who. Returns 0; 401 or 429 after
 * answering; or -1 when there is no session cookie (try a token). */
int session_authenticate(struct api *a, struct req *r, struct MHD_Connection *c,
                         enum MHD_Result *ret);

#endif
