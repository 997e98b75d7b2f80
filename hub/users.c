/* The users file (users.h). */
#include "users.h"
#include "err.h"
#include "fileio.h"
#include "passwd.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <jansson.h>
#include <libfyaml.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* clang-format off */
#define U(k) offsetof(struct user, k)
#define UT(k) offsetof(struct user, t.k)
static const struct cfg_key user_keys[] = {
    {.key = "name",          .type = CFG_STR,  .offset = UT(name), .required = true},
    {.key = "display",       .type = CFG_STR,  .offset = U(display)},
    {.key = "password_hash", .type = CFG_STR,  .offset = U(password_hash), .required = true},
    {.key = "disabled",      .type = CFG_BOOL, .offset = U(disabled), .def = "false"},
    TOKENS_SCOPE_KEYS(UT),
    CFG_END,
};
#undef UT
#undef U

static const struct cfg_key file_keys[] = {
    {.key = "users", .type = CFG_LIST, .offset = offsetof(struct users, list),
     .sub = user_keys, .elem_size = sizeof(struct user), .node_offset = offsetof(struct user, t.node)},
    CFG_END,
};
/* clang-format on */

static struct user *at(const struct users *u, size_t i)
{
    return &((struct user *)u->list.items)[i];
}

/* The code point at *p (advanced past it), or -1 for a byte that does not
 * start a well-formed UTF-8 sequence (overlong forms and surrogates
 * included). */
static long next_cp(const unsigned char **p)
{
    const unsigned char *s = *p;
    long cp;
    int n;
    if (s[0] < 0x80) {
        *p = s + 1;
        return s[0];
    }
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        cp = s[0] & 0x1f, n = 1;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        cp = s[0] & 0x0f, n = 2;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        cp = s[0] & 0x07, n = 3;
    else
        return -1;
    for (int i = 1; i <= n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return -1;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return -1;
    *p = s + n + 1;
    return cp;
}

static bool control(long cp)
{
    return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f);
}

/* Whether s is valid UTF-8 without control characters; its code points in
 * *count. */
static bool clean_text(const char *s, size_t *count)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = 0;
    while (*p) {
        long cp = next_cp(&p);
        if (cp < 0 || control(cp))
            return false;
        n++;
    }
    *count = n;
    return true;
}

bool users_valid_name(const char *name)
{
    size_t len = name ? strlen(name) : 0, cps;
    if (len == 0 || len > USERS_NAME_MAX || !clean_text(name, &cps))
        return false;
    if (strchr(name, ':') || name[0] == ' ' || name[len - 1] == ' ')
        return false;
    return true;
}

const char *users_password_problem(const char *password)
{
    size_t cps = 0;
    if (!password || strlen(password) > USERS_PASSWORD_MAX)
        return "a password is at most 1024 bytes";
    if (!clean_text(password, &cps))
        return "a password is UTF-8 text without control characters";
    if (cps < USERS_PASSWORD_MIN)
        return "a password needs at least 10 characters";
    return NULL;
}

int users_role_of(const char *name)
{
    for (const struct cfg_enum *e = tokens_roles; e->name; e++)
        if (!strcmp(e->name, name))
            return e->value;
    return -1;
}

/* The checks of one entry beyond its keys' types, each problem to report. */
static int check_user(struct user *e, tokens_report_fn *report, void *ctx)
{
    int errors = 0;
    char msg[256];
    size_t cps;
    if (!users_valid_name(e->t.name)) {
        report(ctx, "name",
               "key 'name': 1 to 64 bytes of UTF-8, without control characters, ':' or "
               "spaces at either end");
        errors++;
    }
    if (e->display && (strlen(e->display) > USERS_DISPLAY_MAX || !clean_text(e->display, &cps))) {
        report(ctx, "display",
               "key 'display': at most 128 bytes of UTF-8 without control characters");
        errors++;
    }
    if (!ch_passwd_valid_hash(e->password_hash)) {
        snprintf(msg, sizeof msg,
                 "key 'password_hash': not a crypt(3) hash (care-hub users passwd %.64s sets "
                 "one)",
                 e->t.name);
        report(ctx, "password_hash", msg);
        errors++;
    }
    errors += tokens_check_scope(&e->t, report, ctx);
    return errors;
}

static int check(struct users *u)
{
    int errors = 0;
    for (size_t i = 0; i < u->list.n; i++) {
        struct user *e = at(u, i);
        errors += check_user(e, tokens_report_at_node, e->t.node);
        for (size_t j = 0; j < i; j++) {
            if (!strcmp(at(u, j)->t.name, e->t.name)) {
                cfg_report(e->t.node, "name", "key 'name': '%s' is used twice", e->t.name);
                errors++;
            }
        }
        tokens_bucket_fill(&e->t, u->default_rate);
    }
    return errors;
}

struct users *users_new(int64_t default_rate)
{
    struct users *u = ch_xcalloc(1, sizeof *u);
    u->default_rate = default_rate;
    pthread_mutex_init(&u->lock, NULL);
    return u;
}

int users_load(const char *path, int64_t default_rate, bool missing_ok, struct users **out)
{
    *out = NULL;
    struct stat st;
    if (missing_ok && stat(path, &st) && errno == ENOENT) {
        *out = users_new(default_rate);
        return 0;
    }
    struct users *u = ch_xcalloc(1, sizeof *u);
    u->default_rate = default_rate;
    struct cfg_file *f = NULL;
    int rc = cfg_load(path, file_keys, u, &f);
    if (rc) {
        free(u);
        return rc;
    }
    int errors = check(u);
    cfg_file_close(f);
    for (size_t i = 0; i < u->list.n; i++)
        at(u, i)->t.node = NULL; /* the document is gone */
    if (errors) {
        fprintf(stderr, "%s: %d error%s\n", path, errors, errors == 1 ? "" : "s");
        cfg_free(file_keys, u);
        free(u);
        return CH_ECONFIG;
    }
    pthread_mutex_init(&u->lock, NULL);
    *out = u;
    return 0;
}

void users_free(struct users *u)
{
    if (!u)
        return;
    pthread_mutex_destroy(&u->lock);
    cfg_free(file_keys, u);
    free(u);
}

const struct user *users_find(const struct users *u, const char *name)
{
    for (size_t i = 0; i < u->list.n; i++)
        if (!strcmp(at(u, i)->t.name, name))
            return at(u, i);
    return NULL;
}

bool users_take(struct users *u, const struct user *e, int64_t mono_ms, int *retry_s)
{
    return tokens_bucket_take(&u->lock, &e->t, u->default_rate, mono_ms, retry_s);
}

int users_pay(struct users *u, const char *name, double *owed, int64_t max_wait_ms, int64_t mono_ms,
              int64_t *wait_ms)
{
    *wait_ms = 0;
    struct user *e = (struct user *)users_find(u, name);
    if (!e)
        return CH_ENOTFOUND;
    return tokens_bucket_pay(&u->lock, &e->t, u->default_rate, owed, max_wait_ms, mono_ms, wait_ms);
}

/* ---- editing ---------------------------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
    return s ? ch_xstrdup(s) : NULL;
}

static void strlist_set(struct cfg_list *l, const char *const *v, size_t n)
{
    for (size_t i = 0; i < l->n; i++)
        free(((char **)l->items)[i]);
    free(l->items);
    l->items = n ? ch_xcalloc(n, sizeof(char *)) : NULL;
    l->n = n;
    for (size_t i = 0; i < n; i++)
        ((char **)l->items)[i] = ch_xstrdup(v[i]);
}

static void copy_user(struct user *dst, const struct user *src)
{
    memset(dst, 0, sizeof *dst);
    dst->t.name = ch_xstrdup(src->t.name);
    dst->t.role = src->t.role;
    strlist_set(&dst->t.sites, (const char *const *)src->t.sites.items, src->t.sites.n);
    dst->t.district = dup_or_null(src->t.district);
    strlist_set(&dst->t.grants, (const char *const *)src->t.grants.items, src->t.grants.n);
    dst->t.rate = src->t.rate;
    dst->display = dup_or_null(src->display);
    dst->password_hash = dup_or_null(src->password_hash);
    dst->disabled = src->disabled;
}

static void replace(char **field, const char *v)
{
    free(*field);
    *field = v && *v ? ch_xstrdup(v) : NULL;
}

struct first_problem {
    char *err;
    size_t n;
    bool set;
};

static void keep_first(void *ctx, const char *key, const char *msg)
{
    (void)key;
    struct first_problem *p = ctx;
    if (!p->set && p->err)
        snprintf(p->err, p->n, "%s", msg);
    p->set = true;
}

int users_set(struct users *u, const char *name, bool create, const struct user_change *ch,
              char *err, size_t errn)
{
    struct user *old = (struct user *)users_find(u, name);
    if (create && old) {
        snprintf(err, errn, "there is a user '%s' already", name);
        return CH_ESTATE;
    }
    if (!create && !old) {
        snprintf(err, errn, "no user '%s'", name);
        return CH_ENOTFOUND;
    }
    struct user e;
    if (old) {
        copy_user(&e, old);
    } else {
        memset(&e, 0, sizeof e);
        e.t.name = ch_xstrdup(name);
        e.t.role = -1;
    }
    if (ch->display)
        replace(&e.display, ch->display);
    if (ch->password_hash)
        replace(&e.password_hash, ch->password_hash);
    if (ch->role >= 0)
        e.t.role = ch->role;
    if (ch->set_scope) {
        strlist_set(&e.t.sites, ch->sites, ch->n_sites);
        replace(&e.t.district, ch->district);
    }
    if (ch->set_grants)
        strlist_set(&e.t.grants, ch->grants, ch->n_grants);
    if (ch->disabled >= 0)
        e.disabled = ch->disabled != 0;
    struct first_problem p = {.err = err, .n = errn};
    if (e.t.role < 0 || !token_role_name(e.t.role) || !strcmp(token_role_name(e.t.role), "?"))
        keep_first(&p, "role", "key 'role': staff, operator, regulator or admin");
    if (!e.password_hash)
        keep_first(&p, "password_hash", "a new user needs a password");
    else
        check_user(&e, keep_first, &p);
    if (p.set) {
        cfg_free(user_keys, &e);
        return CH_EINVAL;
    }
    tokens_bucket_fill(&e.t, u->default_rate);
    if (old) {
        cfg_free(user_keys, old);
        *old = e;
    } else {
        u->list.items = ch_xrealloc(u->list.items, (u->list.n + 1) * sizeof e);
        *at(u, u->list.n++) = e;
    }
    return 0;
}

int users_remove(struct users *u, const char *name)
{
    struct user *e = (struct user *)users_find(u, name);
    if (!e)
        return CH_ENOTFOUND;
    size_t i = (size_t)(e - at(u, 0));
    cfg_free(user_keys, e);
    memmove(e, e + 1, (u->list.n - i - 1) * sizeof *e);
    u->list.n--;
    return 0;
}

/* ---- writing ---------------------------------------------------------------------------- */

struct out {
    char *p;
    size_t len, cap;
};

static void put(struct out *o, const char *s)
{
    size_t n = strlen(s);
    if (o->len + n + 1 > o->cap) {
        o->cap = (o->len + n + 1) * 2;
        o->p = ch_xrealloc(o->p, o->cap);
    }
    memcpy(o->p + o->len, s, n + 1);
    o->len += n;
}

/* s as a YAML double-quoted scalar (a JSON string is one). */
static void put_str(struct out *o, const char *s)
{
    json_t *j = json_string(s);
    char *q = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    put(o, q ? q : "\"\"");
    free(q);
    json_decref(j);
}

static void put_list(struct out *o, const char *key, const struct cfg_list *l)
{
    put(o, "    ");
    put(o, key);
    put(o, ": [");
    for (size_t i = 0; i < l->n; i++) {
        if (i)
            put(o, ", ");
        put_str(o, ((char **)l->items)[i]);
    }
    put(o, "]\n");
}

/* Writes all of data at the start of fd. 0 or -errno. */
static int write_all(int fd, const char *data, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t w = pwrite(fd, data + off, len - off, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EIO;
        off += (size_t)w;
    }
    return 0;
}

/* Rewrites path in place (it exists): for a directory the hub may not
 * write in (/etc/carehub under the packaged unit's ProtectSystem=strict,
 * where only the file itself is writable). One write of a small file, then
 * the rest cut off and fsync: not atomic against a power cut in between,
 * which the atomic way is. */
static int write_in_place(const char *path, const char *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    int rc = write_all(fd, data, len);
    if (!rc && (ftruncate(fd, (off_t)len) || fsync(fd)))
        rc = -errno;
    close(fd);
    return rc;
}

/* The users file written whole, mode 0600, keeping the owner and group of
 * the file it replaces (care-hub users run as root must leave the file to
 * the service's user): path.<pid>.tmp, fsync, rename, fsync of the directory;
 * where the directory may not be written, in place. */
static int write_file(const char *path, const char *data, size_t len)
{
    struct stat st;
    bool exists = stat(path, &st) == 0;
    char tmp[PATH_MAX];
    /* a name of this process's own: care-hub users and a running hub's
     * /api/v1/users writing at once each rename a whole file (the last one
     * wins), never one the other half wrote */
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid()) >= sizeof tmp)
        return -ENAMETOOLONG;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        int e = errno;
        if (exists && (e == EACCES || e == EROFS || e == EPERM))
            return write_in_place(path, data, len);
        return -e;
    }
    int rc = write_all(fd, data, len);
    if (!rc && exists && (st.st_uid != geteuid() || st.st_gid != getegid()) &&
        fchown(fd, st.st_uid, st.st_gid))
        rc = -errno; /* not root: renaming would hand the file to us */
    if (!rc && fsync(fd))
        rc = -errno;
    close(fd);
    if (!rc && rename(tmp, path))
        rc = -errno;
    if (rc) {
        unlink(tmp);
        return rc;
    }
    return ch_fsync_dir_of(path);
}

int users_save(const struct users *u, const char *path)
{
    struct out o = {0};
    put(&o, "# care-hub users (hub/API.md, \"Users file\"). Written by care-hub: edit with\n"
            "# `care-hub users` or the admin API; a running hub reads it again on SIGHUP.\n");
    put(&o, u->list.n ? "users:\n" : "users: []\n");
    char num[32];
    for (size_t i = 0; i < u->list.n; i++) {
        const struct user *e = at(u, i);
        put(&o, "  - name: ");
        put_str(&o, e->t.name);
        put(&o, "\n");
        if (e->display) {
            put(&o, "    display: ");
            put_str(&o, e->display);
            put(&o, "\n");
        }
        put(&o, "    password_hash: ");
        put_str(&o, e->password_hash);
        put(&o, "\n    role: ");
        put(&o, token_role_name(e->t.role));
        put(&o, "\n");
        if (e->t.district) {
            put(&o, "    district: ");
            put_str(&o, e->t.district);
            put(&o, "\n");
        } else {
            put_list(&o, "sites", &e->t.sites);
        }
        if (e->t.grants.n)
            put_list(&o, "grants", &e->t.grants);
        if (e->t.rate) {
            snprintf(num, sizeof num, "    rate: %lld\n", (long long)e->t.rate);
            put(&o, num);
        }
        if (e->disabled)
            put(&o, "    disabled: true\n");
    }
    int rc = write_file(path, o.p, o.len);
    explicit_bzero(o.p, o.len);
    free(o.p);
    return rc;
}
