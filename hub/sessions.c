/* Sessions and the per-name lockout (sessions.h). */
#include "sessions.h"
#include "passwd.h"
#include "tokens.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define BUSY_MS 1000 /* wait suggested while checks in flight could lock a name */

struct session {
    char id[SESSIONS_ID_LEN + 1]; /* "": free */
    char name[SESSIONS_NAME_MAX];
    char stamp[SESSIONS_STAMP_LEN + 1];
    int64_t created, last;
};

struct name_entry {
    char name[SESSIONS_NAME_MAX]; /* "": free */
    unsigned failures;            /* in a row */
    unsigned inflight;            /* checks begun, not ended */
    int64_t last_fail, locked_until;
    char good_addr[64]; /* where the name last logged in */
};

struct sessions {
    pthread_mutex_t mu;
    int64_t idle_ms, max_age_ms;
    size_t max;
    struct session *s;
    struct name_entry names[SESSIONS_NAMES];
};

struct sessions *sessions_new(size_t max, int64_t idle_ms, int64_t max_age_ms)
{
    struct sessions *s = ch_xcalloc(1, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    s->max = max ? max : 1;
    s->idle_ms = idle_ms;
    s->max_age_ms = max_age_ms;
    s->s = ch_xcalloc(s->max, sizeof *s->s);
    return s;
}

void sessions_free(struct sessions *s)
{
    if (!s)
        return;
    explicit_bzero(s->s, s->max * sizeof *s->s);
    free(s->s);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

void sessions_stamp(const char *password_hash, char out[SESSIONS_STAMP_LEN + 1])
{
    char h[65];
    tokens_sha256_hex(password_hash, strlen(password_hash), h);
    memcpy(out, h, SESSIONS_STAMP_LEN);
    out[SESSIONS_STAMP_LEN] = '\0';
}

static bool alive(const struct sessions *s, const struct session *e, int64_t now)
{
    return e->id[0] && now - e->last < s->idle_ms && now - e->created < s->max_age_ms;
}

int sessions_create(struct sessions *s, const char *name, const char *stamp, int64_t now,
                    char id[SESSIONS_ID_LEN + 1])
{
    unsigned char raw[SESSIONS_ID_LEN / 2];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        return errno ? -errno : -EIO;
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(id + 2 * i, 3, "%02x", raw[i]);
    explicit_bzero(raw, sizeof raw);
    pthread_mutex_lock(&s->mu);
    struct session *slot = NULL;
    for (size_t i = 0; i < s->max && !slot; i++)
        if (!alive(s, &s->s[i], now))
            slot = &s->s[i];
    if (!slot) { /* full: the one idle longest goes */
        slot = &s->s[0];
        for (size_t i = 1; i < s->max; i++)
            if (s->s[i].last < slot->last)
                slot = &s->s[i];
    }
    memcpy(slot->id, id, SESSIONS_ID_LEN + 1);
    ch_strlcpy(slot->name, name, sizeof slot->name);
    ch_strlcpy(slot->stamp, stamp, sizeof slot->stamp);
    slot->created = slot->last = now;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* The entry of id (s->mu held), or NULL. Every entry is compared, in
 * constant time each: neither the time nor the order says anything of the
 * ids. */
static struct session *lookup(struct sessions *s, const char *id)
{
    struct session *found = NULL;
    if (strlen(id) != SESSIONS_ID_LEN)
        return NULL;
    for (size_t i = 0; i < s->max; i++)
        if (s->s[i].id[0] && ch_secret_eq(s->s[i].id, id))
            found = &s->s[i];
    return found;
}

bool sessions_find(struct sessions *s, const char *id, int64_t now, char name[SESSIONS_NAME_MAX],
                   char stamp[SESSIONS_STAMP_LEN + 1])
{
    bool ok = false;
    pthread_mutex_lock(&s->mu);
    struct session *e = lookup(s, id);
    if (e && alive(s, e, now)) {
        e->last = now;
        memcpy(name, e->name, SESSIONS_NAME_MAX);
        memcpy(stamp, e->stamp, SESSIONS_STAMP_LEN + 1);
        ok = true;
    } else if (e) {
        memset(e, 0, sizeof *e);
    }
    pthread_mutex_unlock(&s->mu);
    return ok;
}

void sessions_drop(struct sessions *s, const char *id)
{
    pthread_mutex_lock(&s->mu);
    struct session *e = lookup(s, id);
    if (e)
        memset(e, 0, sizeof *e);
    pthread_mutex_unlock(&s->mu);
}

size_t sessions_drop_user(struct sessions *s, const char *name, const char *keep)
{
    size_t n = 0;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->max; i++) {
        struct session *e = &s->s[i];
        if (e->id[0] && !strcmp(e->name, name) && !(keep && !strcmp(e->id, keep))) {
            memset(e, 0, sizeof *e);
            n++;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

void sessions_restamp(struct sessions *s, const char *id, const char *stamp)
{
    pthread_mutex_lock(&s->mu);
    struct session *e = lookup(s, id);
    if (e)
        ch_strlcpy(e->stamp, stamp, sizeof e->stamp);
    pthread_mutex_unlock(&s->mu);
}

size_t sessions_count(struct sessions *s, int64_t now)
{
    size_t n = 0;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->max; i++)
        n += alive(s, &s->s[i], now);
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* ---- lockout per name ------------------------------------------------------------------- */

static int64_t lock_ms(unsigned failures)
{
    unsigned over = failures - SESSIONS_LOCK_AFTER; /* failures >= SESSIONS_LOCK_AFTER */
    int64_t ms = SESSIONS_LOCK_FIRST_MS;
    for (unsigned i = 0; i < over && ms < SESSIONS_LOCK_MAX_MS; i++)
        ms *= 2;
    return ms < SESSIONS_LOCK_MAX_MS ? ms : SESSIONS_LOCK_MAX_MS;
}

/* name's entry (s->mu held), or one it may take when create: a free one,
 * else the unlocked one without checks in flight that failed longest ago;
 * NULL when none. */
static struct name_entry *name_entry(struct sessions *s, const char *name, int64_t now, bool create)
{
    struct name_entry *victim = NULL;
    for (size_t i = 0; i < SESSIONS_NAMES; i++) {
        struct name_entry *e = &s->names[i];
        if (e->name[0] && !strcmp(e->name, name)) {
            if (!e->inflight && now - e->last_fail > SESSIONS_FORGET_MS && e->locked_until <= now)
                e->failures = 0;
            return e;
        }
    }
    if (!create)
        return NULL;
    for (size_t i = 0; i < SESSIONS_NAMES; i++) {
        struct name_entry *e = &s->names[i];
        if (!e->name[0])
            return e;
        if (e->locked_until > now || e->inflight)
            continue;
        /* a name's own station (good_addr) goes last: guesses at other names
         * filling the table must not take away what keeps its owner from
         * being locked out; among equals, the oldest failure goes */
        bool keeps = e->good_addr[0] != '\0', vkeeps = victim && victim->good_addr[0] != '\0';
        if (!victim || (vkeeps && !keeps) || (keeps == vkeeps && e->last_fail < victim->last_fail))
            victim = e;
    }
    return victim;
}

int64_t sessions_login_begin(struct sessions *s, const char *name, const char *addr, int64_t now)
{
    int64_t wait = 0;
    pthread_mutex_lock(&s->mu);
    struct name_entry *e = name_entry(s, name, now, true);
    if (!e) {
        wait = BUSY_MS; /* every entry locked: fail closed */
    } else {
        if (strcmp(e->name, name)) { /* a new entry */
            memset(e, 0, sizeof *e);
            ch_strlcpy(e->name, name, sizeof e->name);
        }
        bool exempt = e->good_addr[0] && !strcmp(e->good_addr, addr);
        if (!exempt && e->locked_until > now)
            wait = e->locked_until - now;
        else if (!exempt && e->failures < SESSIONS_LOCK_AFTER &&
                 e->failures + e->inflight >= SESSIONS_LOCK_AFTER)
            wait = BUSY_MS; /* the checks in flight would lock it */
        else if (!exempt && e->failures >= SESSIONS_LOCK_AFTER && e->inflight)
            wait = BUSY_MS; /* a lock served: one check at a time */
        else
            e->inflight++;
    }
    pthread_mutex_unlock(&s->mu);
    return wait;
}

int64_t sessions_login_end(struct sessions *s, const char *name, const char *addr, bool ok,
                           int64_t now)
{
    int64_t locked = 0;
    pthread_mutex_lock(&s->mu);
    struct name_entry *e = name_entry(s, name, now, false);
    if (e) {
        if (e->inflight)
            e->inflight--;
        if (ok) {
            e->failures = 0;
            e->locked_until = 0;
            ch_strlcpy(e->good_addr, addr, sizeof e->good_addr);
        } else {
            e->failures++;
            e->last_fail = now;
            if (e->failures >= SESSIONS_LOCK_AFTER) {
                locked = lock_ms(e->failures);
                e->locked_until = now + locked;
            }
        }
    }
    pthread_mutex_unlock(&s->mu);
    return locked;
}
