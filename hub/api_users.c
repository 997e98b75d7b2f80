/* People's accounts on the API (hub/API.md, "Users and sessions"): login
 * and logout, the session cookie, a user's own password, and the admins'
 * /users. See users.h (the file) and sessions.h (sessions, lockout).
 *
 * A login checks, in this order: the address's budget of refusals (the
 * route takes its place, tokens_addrs), CSRF (JSON only, same origin), the
 * name's lockout (sessions_login_begin, before any hash is computed), then
 * the password: against the user's hash, or a dummy hash when there is no
 * such user or it is disabled, so that every wrong login takes one
 * yescrypt's time and says the same thing. The answer to every failure is
 * one generic 401; the log and the audit say which name was tried.
 *
 * Changes by an admin go to the file first (read it, change it, write it
 * whole, users_save), then the table in use is replaced by the file read
 * again: the file stays the one truth, also for the other hubs of a
 * deployment that share it (they read it on SIGHUP). */
#include "api.h"
#include "api_internal.h"
#include "hubcfg.h"
#include "err.h"
#include "log.h"
#include "passwd.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GENERIC_LOGIN_FAILURE "wrong name or password"

/* ---- start, stop, reload ---------------------------------------------------------------- */

int users_start(struct api *a)
{
    const struct hubcfg_api *ac = &a->cfg->api;
    pthread_rwlock_init(&a->users_lock, NULL);
    pthread_mutex_init(&a->users_edit, NULL);
    a->sessions =
        sessions_new((size_t)ac->max_sessions, ac->session_idle_ms, ac->session_max_age_ms);
    if (!ac->users_file)
        return 0;
    int rc = users_load(ac->users_file, ac->rate_limit, true, &a->users);
    if (rc) {
        LOGE(MOD, ac->users_file, "cannot load the users file: %s", ch_strerror(rc));
        return rc;
    }
    (void)ch_passwd_dummy(); /* made now, not in the first login's time */
    return 0;
}

void users_stop(struct api *a)
{
    if (!a->sessions)
        return;
    users_free(a->users);
    a->users = NULL;
    sessions_free(a->sessions);
    a->sessions = NULL;
    pthread_rwlock_destroy(&a->users_lock);
    pthread_mutex_destroy(&a->users_edit);
}

/* Replaces the table in use by t (taken). */
static void users_swap(struct api *a, struct users *t)
{
    pthread_rwlock_wrlock(&a->users_lock);
    struct users *old = a->users;
    a->users = t;
    pthread_rwlock_unlock(&a->users_lock);
    users_free(old);
}

int api_reload_users(struct api *a)
{
    if (!a || !a->cfg->api.users_file)
        return 0;
    const char *path = a->cfg->api.users_file;
    struct users *t;
    pthread_mutex_lock(&a->users_edit);
    int rc = users_load(path, a->cfg->api.rate_limit, true, &t);
    if (!rc)
        users_swap(a, t);
    pthread_mutex_unlock(&a->users_edit);
    if (rc) {
        LOGE(MOD, path, "not reloaded: the users in use stay");
        return rc;
    }
    LOGI(MOD, path, "reloaded: %zu users", t->list.n);
    return 0;
}

/* ---- sessions ------------------------------------------------------------------------------ */

/* The user called name as r's who (users_lock held); false when there is
 * none or it is disabled. */
static bool who_user(struct req *r, const struct user *u)
{
    if (!u || u->disabled)
        return false;
    char name[WHO_NAME_MAX];
    snprintf(name, sizeof name, USER_PREFIX "%s", u->t.name);
    who_from(&r->who, &u->t, name);
    r->who.user = true;
    ch_strlcpy(r->who.display, u->display ? u->display : "", sizeof r->who.display);
    return true;
}

int session_authenticate(struct api *a, struct req *r, struct MHD_Connection *c,
                         enum MHD_Result *ret)
{
    const char *id = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, COOKIE_NAME);
    if (!id || !a->users)
        return -1;
    char name[SESSIONS_NAME_MAX], stamp[SESSIONS_STAMP_LEN + 1], now_stamp[SESSIONS_STAMP_LEN + 1];
    bool ok = sessions_find(a->sessions, id, ch_mono_ms(), name, stamp);
    int retry = 1;
    bool limited = false;
    if (ok) {
        pthread_rwlock_rdlock(&a->users_lock);
        const struct user *u = users_find(a->users, name);
        if (u)
            sessions_stamp(u->password_hash, now_stamp);
        /* another password (changed elsewhere, reset) ends the session */
        ok = u && !strcmp(stamp, now_stamp) && who_user(r, u);
        limited = ok && !users_take(a->users, u, ch_mono_ms(), &retry);
        pthread_rwlock_unlock(&a->users_lock);
        if (!ok)
            sessions_drop(a->sessions, id);
    }
    if (!ok) {
        if (address_limited(a, r, c, ret))
            return 429;
        *ret = fail_hdr(r, c, 401, "Set-Cookie",
                        COOKIE_NAME "=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
                        "the session has ended; log in again");
        return 401;
    }
    r->authed = true;
    ch_strlcpy(r->who.session, id, sizeof r->who.session);
    if (limited) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", retry);
        *ret = fail_hdr(r, c, 429, "Retry-After", ra, "too many requests for this user");
        return 429;
    }
    return 0;
}

/* ---- requests ------------------------------------------------------------------------------ */

/* The body as a JSON object, or NULL after answering 400. */
static json_t *body_object(struct req *r, struct MHD_Connection *c, enum MHD_Result *ret)
{
    json_error_t e;
    json_t *o =
        r->body.len ? json_loadb(r->body.data, r->body.len, JSON_REJECT_DUPLICATES, &e) : NULL;
    if (!json_is_object(o)) {
        json_decref(o);
        *ret = fail(r, c, 400, "the body must be a JSON object");
        return NULL;
    }
    return o;
}

/* Wipes a string of o (a password) before o goes. */
static void wipe(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (json_is_string(v))
        explicit_bzero((char *)json_string_value(v), json_string_length(v));
}

static const char *str_of(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* The /me object of user u (users_lock held). */
static json_t *user_json(const struct user *u, bool admin_view)
{
    json_t *sites = json_array();
    for (size_t i = 0; i < u->t.sites.n; i++)
        json_array_append_new(sites, json_string(((char **)u->t.sites.items)[i]));
    json_t *grants = json_array();
    for (size_t i = 0; i < u->t.grants.n; i++)
        json_array_append_new(grants, json_string(((char **)u->t.grants.items)[i]));
    json_t *o =
        json_pack("{s:s,s:s,s:s?,s:s,s:o,s:o,s:o}", "kind", "user", "name", u->t.name, "display",
                  u->display, "role", token_role_name(u->t.role), "sites",
                  u->t.district ? (json_decref(sites), json_null()) : sites, "district",
                  u->t.district ? json_string(u->t.district) : json_null(), "grants", grants);
    if (admin_view)
        json_object_set_new(o, "disabled", json_boolean(u->disabled));
    return o;
}

/* The cookie of session id, or the one that clears it (id NULL). */
static void cookie(const struct api *a, struct MHD_Connection *c, const char *id, char *out,
                   size_t n)
{
    bool https = ch_http_is_https(c);
    if (!id)
        snprintf(out, n, COOKIE_NAME "=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0%s",
                 https ? "; Secure" : "");
    else
        snprintf(out, n, COOKIE_NAME "=%s; HttpOnly; SameSite=Strict; Path=/; Max-Age=%lld%s", id,
                 (long long)(a->cfg->api.session_max_age_ms / 1000), https ? "; Secure" : "");
}

/* CSRF of a request that has no session yet (login, logout): the same
 * rule as a cookie's. Returns true, or false after answering. */
static bool csrf_ok(struct req *r, struct MHD_Connection *c, enum MHD_Result *ret)
{
    const char *why = NULL;
    unsigned st = ch_http_csrf_check(c, &why);
    if (st)
        *ret = fail(r, c, st, "%s", why);
    return st == 0;
}

static bool accounts_on(struct api *a, struct req *r, struct MHD_Connection *c,
                        enum MHD_Result *ret)
{
    if (a->users)
        return true;
    *ret = fail(r, c, 404, "people's accounts are off on this hub (api.users_file)");
    return false;
}

/* Checks password against name's hash (or the dummy's); *u_hash_stamp is
 * the stamp of the hash checked. The users_lock is not held while the hash
 * is computed. */
static bool check_password(struct api *a, const char *name, const char *password,
                           char stamp[SESSIONS_STAMP_LEN + 1])
{
    char *hash = NULL;
    bool usable = false;
    pthread_rwlock_rdlock(&a->users_lock);
    const struct user *u = users_find(a->users, name);
    if (u) {
        hash = ch_xstrdup(u->password_hash);
        usable = !u->disabled;
    }
    pthread_rwlock_unlock(&a->users_lock);
    bool ok;
    if (hash) {
        ok = ch_passwd_verify(password, hash) && usable;
        sessions_stamp(hash, stamp);
        free(hash);
    } else {
        const char *dummy = ch_passwd_dummy();
        ok = false;
        if (dummy)
            (void)ch_passwd_verify(password, dummy);
    }
    return ok;
}

enum MHD_Result h_login(struct api *a, struct req *r, struct MHD_Connection *c)
{
    enum MHD_Result ret = MHD_NO;
    if (!accounts_on(a, r, c, &ret) || !csrf_ok(r, c, &ret))
        return ret;
    json_t *o = body_object(r, c, &ret);
    if (!o)
        return ret;
    const char *name = str_of(o, "name"), *pass = str_of(o, "password");
    if (!name || !pass || !*name || strlen(pass) > USERS_PASSWORD_MAX) {
        wipe(o, "password");
        json_decref(o);
        return fail(r, c, 400, "expected {\"name\": ..., \"password\": ...}");
    }
    char tried[USERS_NAME_MAX + 1];
    ch_strlcpy(tried, name, sizeof tried); /* cut: the lockout and the log */
    ch_utf8_fix(tried);
    int64_t wait = sessions_login_begin(a->sessions, tried, r->addr, ch_mono_ms());
    if (wait > 0) {
        wipe(o, "password");
        json_decref(o);
        snprintf(r->event, sizeof r->event, "login throttled: %s", tried);
        char ra[24];
        snprintf(ra, sizeof ra, "%lld", (long long)((wait + 999) / 1000));
        return fail_hdr(r, c, 429, "Retry-After", ra, "too many failed logins; try again later");
    }
    char stamp[SESSIONS_STAMP_LEN + 1] = "";
    bool ok = users_valid_name(name) && check_password(a, name, pass, stamp);
    if (!users_valid_name(name) && ch_passwd_dummy())
        (void)ch_passwd_verify(pass, ch_passwd_dummy()); /* the same time */
    wipe(o, "password");
    int64_t locked = sessions_login_end(a->sessions, tried, r->addr, ok, ch_mono_ms());
    if (!ok) {
        json_decref(o);
        LOGW(MOD, r->addr, "login failed for '%s'%s", tried,
             locked ? ": the name is locked for a while" : "");
        if (locked)
            LOGW(MOD, r->addr, "'%s' locked for %lld s after %d or more failed logins", tried,
                 (long long)(locked / 1000), SESSIONS_LOCK_AFTER);
        snprintf(r->event, sizeof r->event, "login failed: %s", tried);
        return fail(r, c, 401, GENERIC_LOGIN_FAILURE);
    }
    char id[SESSIONS_ID_LEN + 1];
    int rc = sessions_create(a->sessions, name, stamp, ch_mono_ms(), id);
    if (rc) {
        json_decref(o);
        LOGE(MOD, r->addr, "no random bytes for a session id: %s", strerror(-rc));
        return fail(r, c, 500, "cannot create a session");
    }
    pthread_rwlock_rdlock(&a->users_lock);
    const struct user *u = users_find(a->users, name);
    json_t *me = u ? user_json(u, false) : NULL;
    if (u)
        r->authed = who_user(r, u);
    pthread_rwlock_unlock(&a->users_lock);
    json_decref(o);
    if (!me) { /* removed while its password was checked */
        sessions_drop(a->sessions, id);
        return fail(r, c, 401, GENERIC_LOGIN_FAILURE);
    }
    char ck[256];
    cookie(a, c, id, ck, sizeof ck);
    explicit_bzero(id, sizeof id);
    snprintf(r->event, sizeof r->event, "login");
    LOGI(MOD, r->addr, "%s logged in (%s)", r->who.name, token_role_name(r->who.role));
    char *body = json_dumps(me, JSON_COMPACT);
    json_decref(me);
    r->status = 200;
    ret = ch_http_send_body(c, 200, body, "Set-Cookie", ck);
    explicit_bzero(ck, sizeof ck);
    return ret;
}

enum MHD_Result h_logout(struct api *a, struct req *r, struct MHD_Connection *c)
{
    enum MHD_Result ret = MHD_NO;
    if (!csrf_ok(r, c, &ret))
        return ret;
    const char *id = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, COOKIE_NAME);
    if (id && a->sessions) {
        char name[SESSIONS_NAME_MAX], stamp[SESSIONS_STAMP_LEN + 1];
        if (sessions_find(a->sessions, id, ch_mono_ms(), name, stamp)) {
            r->authed = true;
            snprintf(r->who.name, sizeof r->who.name, USER_PREFIX "%s", name);
            r->who.role = ROLE_STAFF;
            pthread_rwlock_rdlock(&a->users_lock);
            const struct user *u = a->users ? users_find(a->users, name) : NULL;
            if (u)
                r->who.role = u->t.role;
            pthread_rwlock_unlock(&a->users_lock);
            LOGI(MOD, r->addr, "%s logged out", r->who.name);
            snprintf(r->event, sizeof r->event, "logout");
        }
        sessions_drop(a->sessions, id);
    }
    char ck[160];
    cookie(a, c, NULL, ck, sizeof ck);
    r->status = 200;
    return ch_http_send_body(c, 200, ch_xstrdup("{\"ok\":true}"), "Set-Cookie", ck);
}

/* ---- changing the file ------------------------------------------------------------------- */

/* Runs change on the file's users (read again, under users_edit), writes
 * the file and serves the result. Returns 0, or the error with the answer's
 * status in *status and its message in err. */
typedef int change_fn(struct users *u, void *arg, char *err, size_t errn);

static int edit_file(struct api *a, change_fn *change, void *arg, unsigned *status, char *err,
                     size_t errn)
{
    const char *path = a->cfg->api.users_file;
    pthread_mutex_lock(&a->users_edit);
    struct users *u = NULL;
    int rc = users_load(path, a->cfg->api.rate_limit, true, &u);
    if (rc) {
        snprintf(err, errn, "the users file cannot be read (see the hub's log)");
        *status = 500;
    } else if ((rc = change(u, arg, err, errn))) {
        *status = rc == CH_ENOTFOUND ? 404 : rc == CH_ESTATE ? 409 : 400;
    } else if ((rc = users_save(u, path))) {
        LOGE(MOD, path, "cannot write the users file: %s", strerror(-rc));
        snprintf(err, errn, "the users file cannot be written (see the hub's log)");
        *status = 500;
    } else {
        users_swap(a, u);
        u = NULL;
    }
    pthread_mutex_unlock(&a->users_edit);
    users_free(u);
    return rc;
}

struct set_args {
    const char *name;
    bool create;
    struct user_change ch;
};

static int do_set(struct users *u, void *arg, char *err, size_t errn)
{
    struct set_args *s = arg;
    return users_set(u, s->name, s->create, &s->ch, err, errn);
}

static int do_remove(struct users *u, void *arg, char *err, size_t errn)
{
    int rc = users_remove(u, arg);
    if (rc)
        snprintf(err, errn, "no user '%.64s'", (const char *)arg);
    return rc;
}

enum MHD_Result h_password(struct api *a, struct req *r, struct MHD_Connection *c)
{
    enum MHD_Result ret = MHD_NO;
    if (!r->who.user)
        return fail(r, c, 400, "a token has no password: log in as a user to change yours");
    json_t *o = body_object(r, c, &ret);
    if (!o)
        return ret;
    const char *old = str_of(o, "old"), *new = str_of(o, "new");
    const char *name = r->who.name + strlen(USER_PREFIX);
    const char *problem =
        new ? users_password_problem(new) : "expected {\"old\": ..., \"new\": ...}";
    if (!old || problem) {
        wipe(o, "old");
        wipe(o, "new");
        json_decref(o);
        return fail(r, c, 400, "%s", old ? problem : "expected {\"old\": ..., \"new\": ...}");
    }
    /* the old password is checked as a login is: throttled per name */
    int64_t wait = sessions_login_begin(a->sessions, name, r->addr, ch_mono_ms());
    if (wait > 0) {
        wipe(o, "old");
        wipe(o, "new");
        json_decref(o);
        char ra[24];
        snprintf(ra, sizeof ra, "%lld", (long long)((wait + 999) / 1000));
        return fail_hdr(r, c, 429, "Retry-After", ra, "too many failed attempts; try again later");
    }
    char stamp[SESSIONS_STAMP_LEN + 1] = "";
    bool ok = check_password(a, name, old, stamp);
    sessions_login_end(a->sessions, name, r->addr, ok, ch_mono_ms());
    char *hash = ok ? ch_passwd_hash(MOD, new) : NULL;
    wipe(o, "old");
    wipe(o, "new");
    json_decref(o);
    if (!ok) {
        snprintf(r->event, sizeof r->event, "password change refused: wrong password");
        return fail(r, c, 403, "the current password is wrong");
    }
    if (!hash)
        return fail(r, c, 500, "cannot hash the password");
    struct set_args s = {.name = name, .ch = USER_CHANGE_NONE};
    s.ch.password_hash = hash;
    unsigned status = 500;
    char err[256];
    int rc = edit_file(a, do_set, &s, &status, err, sizeof err);
    if (rc) {
        free(hash);
        return fail(r, c, status, "%s", err);
    }
    sessions_stamp(hash, stamp);
    free(hash);
    sessions_restamp(a->sessions, r->who.session, stamp);
    size_t ended = sessions_drop_user(a->sessions, name, r->who.session);
    snprintf(r->event, sizeof r->event, "password changed");
    LOGI(MOD, r->addr, "%s changed the password (%zu other sessions ended)", r->who.name, ended);
    return reply_json(r, c, 200, json_pack("{s:b}", "ok", 1));
}

/* The strings of JSON array v into out (at most max; borrowed from v).
 * Returns how many, or -1 when v is not an array of strings or too long. */
static long str_array(json_t *v, const char **out, size_t max)
{
    if (!json_is_array(v) || json_array_size(v) > max)
        return -1;
    for (size_t i = 0; i < json_array_size(v); i++) {
        out[i] = json_string_value(json_array_get(v, i));
        if (!out[i])
            return -1;
    }
    return (long)json_array_size(v);
}

#define LIST_MAX 256 /* sites or grants in one request */

/* The fields of a POST or PUT body into *ch (pointers into o and the
 * arrays). Returns NULL, or what is wrong. */
static const char *parse_change(json_t *o, struct user_change *ch, const char **sites,
                                const char **grants, char **hash)
{
    static const char *const known[] = {"name",     "display", "password", "role", "sites",
                                        "district", "grants",  "disabled", NULL};
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        bool ok = false;
        for (const char *const *k = known; *k && !ok; k++)
            ok = !strcmp(*k, key);
        if (!ok)
            return "unknown key (name, display, password, role, sites, district, grants, "
                   "disabled)";
    }
    if ((v = json_object_get(o, "display"))) {
        if (!json_is_string(v) && !json_is_null(v))
            return "'display' must be a string";
        ch->display = json_is_null(v) ? "" : json_string_value(v);
    }
    if ((v = json_object_get(o, "role"))) {
        ch->role = json_is_string(v) ? users_role_of(json_string_value(v)) : -1;
        if (ch->role < 0)
            return "'role': staff, operator, regulator or admin";
    }
    json_t *s = json_object_get(o, "sites"), *d = json_object_get(o, "district");
    if (s || d) {
        ch->set_scope = true;
        long n = s && !json_is_null(s) ? str_array(s, sites, LIST_MAX) : 0;
        if (n < 0)
            return "'sites' must be a list of site ids (or [\"*\"])";
        ch->sites = sites;
        ch->n_sites = (size_t)n;
        if (d && !json_is_null(d) && !json_is_string(d))
            return "'district' must be a string";
        ch->district = d ? json_string_value(d) : NULL;
    }
    if ((v = json_object_get(o, "grants"))) {
        long n = str_array(v, grants, LIST_MAX);
        if (n < 0)
            return "'grants' must be a list (health, location)";
        ch->set_grants = true;
        ch->grants = grants;
        ch->n_grants = (size_t)n;
    }
    if ((v = json_object_get(o, "disabled"))) {
        if (!json_is_boolean(v))
            return "'disabled' must be true or false";
        ch->disabled = json_is_true(v);
    }
    if ((v = json_object_get(o, "password"))) {
        const char *problem =
            json_is_string(v) ? users_password_problem(json_string_value(v)) : "a string";
        if (problem)
            return problem;
        *hash = ch_passwd_hash(MOD, json_string_value(v));
        if (!*hash)
            return "cannot hash the password";
        ch->password_hash = *hash;
    }
    return NULL;
}

static enum MHD_Result users_list(struct api *a, struct req *r, struct MHD_Connection *c,
                                  const char *one)
{
    json_t *out = NULL;
    pthread_rwlock_rdlock(&a->users_lock);
    if (one) {
        const struct user *u = users_find(a->users, one);
        out = u ? user_json(u, true) : NULL;
    } else {
        json_t *list = json_array();
        for (size_t i = 0; i < a->users->list.n; i++)
            json_array_append_new(list, user_json(&((struct user *)a->users->list.items)[i], true));
        out = json_pack("{s:o}", "users", list);
    }
    pthread_rwlock_unlock(&a->users_lock);
    if (!out)
        return fail(r, c, 404, "no user '%.64s'", one);
    return reply_json(r, c, 200, out);
}

static enum MHD_Result users_change(struct api *a, struct req *r, struct MHD_Connection *c,
                                    const char *one)
{
    enum MHD_Result ret = MHD_NO;
    json_t *o = body_object(r, c, &ret);
    if (!o)
        return ret;
    bool create = !one;
    const char *name = one ? one : str_of(o, "name");
    if (!name || !users_valid_name(name)) {
        wipe(o, "password");
        json_decref(o);
        return fail(r, c, 400,
                    "'name': 1 to 64 bytes of UTF-8, without control characters, ':' or spaces "
                    "at either end");
    }
    if (one && json_object_get(o, "name") &&
        strcmp(str_of(o, "name") ? str_of(o, "name") : "", one)) {
        wipe(o, "password");
        json_decref(o);
        return fail(r, c, 400, "'name' cannot be changed (remove the user and add another)");
    }
    if (create && !json_is_string(json_object_get(o, "password"))) {
        json_decref(o);
        return fail(r, c, 400, "a new user needs an initial 'password'");
    }
    const char *sites[LIST_MAX], *grants[LIST_MAX];
    char *hash = NULL;
    struct set_args s = {.name = name, .create = create, .ch = USER_CHANGE_NONE};
    const char *problem = parse_change(o, &s.ch, sites, grants, &hash);
    wipe(o, "password");
    unsigned status = 400;
    char err[256];
    int rc = problem ? (snprintf(err, sizeof err, "%s", problem), CH_EINVAL)
                     : edit_file(a, do_set, &s, &status, err, sizeof err);
    bool ended = !rc && (s.ch.password_hash || s.ch.disabled == 1);
    char who[WHO_NAME_MAX + 8];
    snprintf(who, sizeof who, "%s", name);
    free(hash);
    if (rc) {
        json_decref(o);
        return fail(r, c, status, "%s", err);
    }
    size_t n = ended ? sessions_drop_user(a->sessions, who, NULL) : 0;
    snprintf(r->event, sizeof r->event, "%s %s%s%s",
             create ? "user created:" : "user changed:", who,
             s.ch.password_hash && !create ? " (password reset)" : "",
             s.ch.disabled == 1 ? " (disabled)" : "");
    LOGI(MOD, r->addr, "%s: %s%s", r->who.name, r->event, n ? " (its sessions ended)" : "");
    json_decref(o);
    pthread_rwlock_rdlock(&a->users_lock);
    const struct user *u = users_find(a->users, who);
    json_t *out = u ? user_json(u, true) : json_object();
    pthread_rwlock_unlock(&a->users_lock);
    return reply_json(r, c, create ? 201 : 200, out);
}

enum MHD_Result h_users(struct api *a, struct req *r, struct MHD_Connection *c, const char *one)
{
    enum MHD_Result ret = MHD_NO;
    if (!accounts_on(a, r, c, &ret))
        return ret;
    if (one && !*one)
        return fail(r, c, 404, "no such endpoint");
    bool get = !strcmp(r->method, "GET") || !strcmp(r->method, "HEAD");
    if (get)
        return users_list(a, r, c, one);
    if (!strcmp(r->method, "DELETE")) {
        unsigned status = 500;
        char err[256];
        if (edit_file(a, do_remove, (void *)one, &status, err, sizeof err))
            return fail(r, c, status, "%s", err);
        size_t n = sessions_drop_user(a->sessions, one, NULL);
        snprintf(r->event, sizeof r->event, "user removed: %s", one);
        LOGI(MOD, r->addr, "%s: %s (%zu sessions ended)", r->who.name, r->event, n);
        return reply_json(r, c, 200, json_pack("{s:b}", "ok", 1));
    }
    return users_change(a, r, c, one); /* POST /users, PUT /users/{name} */
}
