/* The console's login throttle (see throttle.h for the policy and why).
 *
 * One fixed array of entries, each a counter of one kind: (address, user),
 * address or user. Lookups scan it: the few scans of 4096 entries an
 * attempt makes take tens of microseconds, nothing beside the password hash
 * that follows, and a scan has no hash function to aim collisions at.
 *
 * Invariants, all under mu:
 * - pending is the number of attempts holding a ticket on the entry; an
 *   entry with pending > 0 keeps its place (the ticket names it by index).
 * - fails counts failures since window_start. blocked_until is 0, or the end
 *   of a block that fails reaching the limit started; once that end has
 *   passed, the next look (refresh) starts a fresh window.
 * - An entry is only ever taken for a new counter when it is free, or when
 *   it is neither blocked nor in flight (victim).
 * Nothing is kept on disk: a restart forgets every counter, as before. */
#include "throttle.h"

#include "util.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum kind { K_FREE, K_PAIR, K_ADDR, K_USER };

/* The three counters of an attempt, in ticket order, with their limits. */
static const enum kind kinds[3] = {K_PAIR, K_ADDR, K_USER};
static const int limits[3] = {THROTTLE_PAIR_MAX, THROTTLE_ADDR_MAX, THROTTLE_USER_MAX};

struct entry {
    char addr[INET6_ADDRSTRLEN];      /* K_PAIR, K_ADDR */
    char user[THROTTLE_USER_LEN + 1]; /* K_PAIR, K_USER */
    enum kind kind;
    int pending;           /* attempts holding a ticket on it */
    int fails;             /* failures since window_start */
    int64_t window_start;  /* monotonic ms */
    int64_t blocked_until; /* 0: not blocked in this window */
    int64_t trusted_until; /* K_PAIR: last success + THROTTLE_TRUST_MS */
    int64_t last;          /* last attempt begun or ended: eviction order */
};

struct throttle {
    pthread_mutex_t mu;
    pthread_cond_t ended; /* an attempt ended: queued ones decide again */
    size_t n;
    struct entry e[];
};

/* An attempt's address and user as the table stores them (cut short). */
struct key {
    char addr[INET6_ADDRSTRLEN];
    char user[THROTTLE_USER_LEN + 1];
};

static void key_make(struct key *k, const char *addr, const char *user)
{
    ch_strlcpy(k->addr, addr, sizeof k->addr);
    ch_strlcpy(k->user, user, sizeof k->user);
}

struct throttle *throttle_new(size_t slots)
{
    if (slots < 3)
        slots = 3; /* one attempt's three counters */
    struct throttle *t = ch_xcalloc(1, sizeof *t + slots * sizeof t->e[0]);
    t->n = slots;
    pthread_mutex_init(&t->mu, NULL);
    ch_cond_init_monotonic(&t->ended);
    return t;
}

void throttle_free(struct throttle *t)
{
    if (!t)
        return;
    pthread_cond_destroy(&t->ended);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

static struct entry *find(struct throttle *t, enum kind kind, const struct key *k)
{
    for (size_t i = 0; i < t->n; i++) {
        const struct entry *e = &t->e[i];
        if (e->kind == kind && (kind == K_USER || !strcmp(e->addr, k->addr)) &&
            (kind == K_ADDR || !strcmp(e->user, k->user)))
            return &t->e[i];
    }
    return NULL;
}

/* A served block or a lapsed window starts a fresh window. */
static void refresh(struct entry *e, int64_t now)
{
    bool served = e->blocked_until && e->blocked_until <= now;
    bool lapsed = !e->blocked_until && now - e->window_start > THROTTLE_WINDOW_MS;
    if (served || lapsed) {
        e->fails = 0;
        e->window_start = now;
        e->blocked_until = 0;
    }
}

/* What losing an entry would forget: -1 a block or a check in flight (never
 * evicted), 0 nothing, 1 failures in the window, 2 a trusted pair. */
static int worth(const struct entry *e, int64_t now)
{
    if (e->pending > 0 || e->blocked_until > now)
        return -1;
    if (e->kind == K_FREE)
        return 0;
    if (e->kind == K_PAIR && e->trusted_until > now)
        return 2;
    if (e->fails > 0 && !e->blocked_until && now - e->window_start <= THROTTLE_WINDOW_MS)
        return 1;
    return 0;
}

/* The entry a new counter takes: free first, then the least worth, least
 * recently used. NULL when every entry is blocked or in flight. */
static struct entry *victim(struct throttle *t, int64_t now)
{
    struct entry *best = NULL;
    int best_worth = 0;
    for (size_t i = 0; i < t->n; i++) {
        struct entry *e = &t->e[i];
        int w = worth(e, now);
        if (e->kind == K_FREE && w == 0)
            return e;
        if (w >= 0 && (!best || w < best_worth || (w == best_worth && e->last < best->last))) {
            best = e;
            best_worth = w;
        }
    }
    return best;
}

/* Until the first block ends (the table has room again), at least
 * THROTTLE_BUSY_MS. */
static int64_t first_unblock(const struct throttle *t, int64_t now)
{
    int64_t wait = 0;
    for (size_t i = 0; i < t->n; i++) {
        int64_t left = t->e[i].blocked_until - now;
        if (left > 0 && (!wait || left < wait))
            wait = left;
    }
    return wait > THROTTLE_BUSY_MS ? wait : THROTTLE_BUSY_MS;
}

/* Decides and, on THROTTLE_GO, reserves; mu held. */
static int begin_locked(struct throttle *t, const struct key *k, int64_t now,
                        struct throttle_ticket *ticket, int64_t *wait_ms)
{
    struct entry *e[3];
    for (size_t i = 0; i < 3; i++) {
        e[i] = find(t, kinds[i], k);
        if (e[i])
            refresh(e[i], now);
    }
    /* The per-user counter spares addresses where this user logged in. */
    bool trusted = e[0] && e[0]->trusted_until > now;
    int why = THROTTLE_GO;
    *wait_ms = 0;
    for (size_t i = 0; i < 3; i++) {
        if (!e[i] || (kinds[i] == K_USER && trusted))
            continue;
        if (e[i]->blocked_until > now) {
            why = THROTTLE_BLOCKED;
            if (e[i]->blocked_until - now > *wait_ms)
                *wait_ms = e[i]->blocked_until - now;
        } else if (e[i]->fails + e[i]->pending >= limits[i]) {
            if (why == THROTTLE_GO)
                why = THROTTLE_BUSY;
            if (*wait_ms < THROTTLE_BUSY_MS)
                *wait_ms = THROTTLE_BUSY_MS;
        }
    }
    if (why != THROTTLE_GO)
        return why;

    /* Reserve: the counters found first, so that no victim is one of them
     * (pending > 0), then victims for the missing ones, each held the same
     * way while the next is chosen. Nothing is overwritten until all three
     * are in hand: a table too full refuses without forgetting anything. */
    bool made[3] = {false, false, false};
    for (size_t i = 0; i < 3; i++)
        if (e[i])
            e[i]->pending++;
    for (size_t i = 0; i < 3; i++) {
        if (e[i])
            continue;
        struct entry *v = victim(t, now);
        if (!v) {
            for (size_t j = 0; j < 3; j++)
                if (e[j])
                    e[j]->pending--;
            *wait_ms = first_unblock(t, now);
            return THROTTLE_FULL;
        }
        v->pending++;
        e[i] = v;
        made[i] = true;
    }
    for (size_t i = 0; i < 3; i++) {
        if (!made[i])
            continue;
        struct entry *v = e[i];
        memset(v, 0, sizeof *v);
        v->kind = kinds[i];
        if (kinds[i] != K_USER)
            memcpy(v->addr, k->addr, sizeof v->addr);
        if (kinds[i] != K_ADDR)
            memcpy(v->user, k->user, sizeof v->user);
        v->window_start = now;
        v->pending = 1;
    }
    for (size_t i = 0; i < 3; i++) {
        e[i]->last = now;
        ticket->slot[i] = (size_t)(e[i] - t->e);
    }
    return THROTTLE_GO;
}

/* Decides at now_ms; while the answer is THROTTLE_BUSY and deadline_ms is
 * not reached, waits for an attempt to end and decides again (now from the
 * monotonic clock). */
static int begin(struct throttle *t, const char *addr, const char *user, int64_t now_ms,
                 int64_t deadline_ms, struct throttle_ticket *ticket, int64_t *wait_ms)
{
    struct key k;
    key_make(&k, addr, user);
    pthread_mutex_lock(&t->mu);
    int why;
    for (;;) {
        why = begin_locked(t, &k, now_ms, ticket, wait_ms);
        if (why != THROTTLE_BUSY || now_ms >= deadline_ms)
            break;
        ch_cond_wait_until(&t->ended, &t->mu, deadline_ms);
        now_ms = ch_mono_ms();
    }
    pthread_mutex_unlock(&t->mu);
    return why;
}

int throttle_begin(struct throttle *t, const char *addr, const char *user, int64_t now_ms,
                   struct throttle_ticket *ticket, int64_t *wait_ms)
{
    return begin(t, addr, user, now_ms, now_ms, ticket, wait_ms);
}

int throttle_begin_wait(struct throttle *t, const char *addr, const char *user, int64_t deadline_ms,
                        struct throttle_ticket *ticket, int64_t *wait_ms)
{
    return begin(t, addr, user, ch_mono_ms(), deadline_ms, ticket, wait_ms);
}

unsigned throttle_end(struct throttle *t, const struct throttle_ticket *ticket, bool ok,
                      int64_t now_ms)
{
    unsigned hit = 0;
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < 3; i++) {
        struct entry *e = &t->e[ticket->slot[i]];
        if (e->pending > 0)
            e->pending--;
        e->last = now_ms;
        if (ok) {
            /* Given back. The pair's failures are forgiven and the pair
             * trusted; the address's and the user's stand. */
            if (kinds[i] == K_PAIR) {
                e->fails = 0;
                e->window_start = now_ms;
                e->trusted_until = now_ms + THROTTLE_TRUST_MS;
            }
            continue;
        }
        refresh(e, now_ms);
        if (++e->fails >= limits[i]) {
            if (!e->blocked_until)
                hit |= 1u << i;
            e->blocked_until = now_ms + THROTTLE_BLOCK_MS;
        }
    }
    pthread_cond_broadcast(&t->ended);
    pthread_mutex_unlock(&t->mu);
    return hit;
}
