/* The console's login throttle (edge/throttle.c) on a clock the test sets:
 * each counter on both sides of its limit, its window and its block; a
 * success giving its place back; concurrent attempts from threads getting no
 * more password checks than the limit (refused outright, or queued and then
 * refused); a blocked address surviving failures from thousands of others
 * in a small table and in the console's; the table full of blocks and of
 * checks in flight; which counter makes room; a user guessed from many addresses, with the
 * addresses where that user logged in spared; counters of different kinds apart. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "throttle.h"
#include "util.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define T0 1000000LL /* an arbitrary monotonic start */

/* An attempt that must be let through and then fails (or succeeds). */
static void attempt(struct throttle *t, const char *addr, const char *user, bool ok, int64_t now)
{
    struct throttle_ticket tk;
    int64_t wait = -1;
    assert_int_equal(throttle_begin(t, addr, user, now, &tk, &wait), THROTTLE_GO);
    assert_int_equal(wait, 0);
    throttle_end(t, &tk, ok, now);
}

/* The verdict on an attempt, which is given back at once if let through. */
static int verdict(struct throttle *t, const char *addr, const char *user, int64_t now,
                   int64_t *wait)
{
    struct throttle_ticket tk;
    int64_t w = 0;
    int why = throttle_begin(t, addr, user, now, &tk, &w);
    if (why == THROTTLE_GO)
        throttle_end(t, &tk, true, now);
    if (wait)
        *wait = w;
    return why;
}

static void addr_n(char *buf, size_t n, unsigned i)
{
    snprintf(buf, n, "10.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255, i & 255);
}

/* ---- each counter at its limit --------------------------------------------- */

/* Which counter a row fills: the failures come from one address for one
 * user, from one address for many users, or for one user from many
 * addresses. */
enum spread { ONE_PAIR, MANY_USERS, MANY_ADDRS };

static const struct limit_case {
    const char *name;
    enum spread spread;
    int fails;
    int expect;   /* on the next attempt, from the same spread */
    unsigned hit; /* what the last failure reported blocked */
} limit_cases[] = {
    {"pair below", ONE_PAIR, THROTTLE_PAIR_MAX - 1, THROTTLE_GO, 0},
    {"pair at", ONE_PAIR, THROTTLE_PAIR_MAX, THROTTLE_BLOCKED, THROTTLE_HIT_PAIR},
    {"address below", MANY_USERS, THROTTLE_ADDR_MAX - 1, THROTTLE_GO, 0},
    {"address at", MANY_USERS, THROTTLE_ADDR_MAX, THROTTLE_BLOCKED, THROTTLE_HIT_ADDR},
    {"user below", MANY_ADDRS, THROTTLE_USER_MAX - 1, THROTTLE_GO, 0},
    {"user at", MANY_ADDRS, THROTTLE_USER_MAX, THROTTLE_BLOCKED, THROTTLE_HIT_USER},
};

static void spread_key(enum spread s, int i, char *addr, char *user)
{
    addr_n(addr, 32, s == MANY_ADDRS ? (unsigned)i : 0);
    snprintf(user, 32, "u%d", s == MANY_USERS ? i : 0);
}

static void test_limits(void **state)
{
    (void)state;
    for (size_t c = 0; c < CH_ARRAY_LEN(limit_cases); c++) {
        const struct limit_case *lc = &limit_cases[c];
        struct throttle *t = throttle_new(THROTTLE_SLOTS);
        char addr[32], user[32];
        unsigned hit = 0;
        for (int i = 0; i < lc->fails; i++) {
            struct throttle_ticket tk;
            int64_t wait;
            spread_key(lc->spread, i, addr, user);
            assert_int_equal(throttle_begin(t, addr, user, T0 + i, &tk, &wait), THROTTLE_GO);
            hit = throttle_end(t, &tk, false, T0 + i);
        }
        assert_int_equal(hit, lc->hit);
        int64_t now = T0 + lc->fails, wait = 0;
        spread_key(lc->spread, lc->fails, addr, user);
        int why = verdict(t, addr, user, now, &wait);
        if (why != lc->expect)
            fail_msg("%s: verdict %d, expected %d", lc->name, why, lc->expect);
        if (lc->expect == THROTTLE_BLOCKED)
            assert_int_equal(wait, THROTTLE_BLOCK_MS - 1); /* blocked at now - 1 */
        /* a blocked address is blocked for every user, a blocked pair
         * only for its own */
        if (lc->spread == MANY_USERS && lc->expect == THROTTLE_BLOCKED)
            assert_int_equal(verdict(t, addr, "someone-else", now, NULL), THROTTLE_BLOCKED);
        if (lc->spread == ONE_PAIR && lc->expect == THROTTLE_BLOCKED)
            assert_int_equal(verdict(t, addr, "someone-else", now, NULL), THROTTLE_GO);
        throttle_free(t);
    }
}

/* Failures count within THROTTLE_WINDOW_MS of the first; a block lasts
 * THROTTLE_BLOCK_MS, refused attempts do not lengthen it, and once served
 * the counting starts again from nothing. */
static void test_window_and_block(void **state)
{
    (void)state;
    struct throttle *t = throttle_new(THROTTLE_SLOTS);
    for (int i = 0; i < THROTTLE_PAIR_MAX - 1; i++)
        attempt(t, "10.0.0.1", "nurse1", false, T0);
    attempt(t, "10.0.0.2", "nurse1", false, T0); /* same user, other address */
    /* the last failure just inside the window blocks */
    attempt(t, "10.0.0.1", "nurse1", false, T0 + THROTTLE_WINDOW_MS);
    int64_t blocked = T0 + THROTTLE_WINDOW_MS, wait = 0;
    assert_int_equal(verdict(t, "10.0.0.1", "nurse1", blocked, &wait), THROTTLE_BLOCKED);
    assert_int_equal(wait, THROTTLE_BLOCK_MS);
    for (int i = 0; i < 50; i++) /* hammering does not lengthen it */
        assert_int_equal(verdict(t, "10.0.0.1", "nurse1", blocked + i, NULL), THROTTLE_BLOCKED);
    assert_int_equal(verdict(t, "10.0.0.1", "nurse1", blocked + THROTTLE_BLOCK_MS - 1, &wait),
                     THROTTLE_BLOCKED);
    assert_int_equal(wait, 1);
    /* served: a fresh window, four more failures and still let through */
    int64_t after = blocked + THROTTLE_BLOCK_MS;
    for (int i = 0; i < THROTTLE_PAIR_MAX - 1; i++)
        attempt(t, "10.0.0.1", "nurse1", false, after);
    assert_int_equal(verdict(t, "10.0.0.1", "nurse1", after, NULL), THROTTLE_GO);

    throttle_free(t);

    /* just outside the window the old failures are forgotten */
    t = throttle_new(THROTTLE_SLOTS);
    for (int i = 0; i < THROTTLE_PAIR_MAX - 1; i++)
        attempt(t, "10.0.0.3", "nurse1", false, T0);
    attempt(t, "10.0.0.3", "nurse1", false, T0 + THROTTLE_WINDOW_MS + 1);
    assert_int_equal(verdict(t, "10.0.0.3", "nurse1", T0 + THROTTLE_WINDOW_MS + 1, NULL),
                     THROTTLE_GO);
    throttle_free(t);
}

/* A success gives its place back and forgives the pair, not the address:
 * a guesser cannot buy budget by logging in as itself. */
static void test_success_gives_back(void **state)
{
    (void)state;
    struct throttle *t = throttle_new(THROTTLE_SLOTS);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < THROTTLE_PAIR_MAX - 1; i++)
            attempt(t, "10.0.0.1", "nurse1", false, T0 + round);
        attempt(t, "10.0.0.1", "nurse1", true, T0 + round);
    }
    /* 12 failures so far; the pair was forgiven each time */
    assert_int_equal(verdict(t, "10.0.0.1", "nurse1", T0 + 3, NULL), THROTTLE_GO);
    for (int i = 3 * (THROTTLE_PAIR_MAX - 1); i < THROTTLE_ADDR_MAX - 1; i++) {
        char user[16];
        snprintf(user, sizeof user, "guess%d", i);
        attempt(t, "10.0.0.1", user, false, T0 + 3);
    }
    attempt(t, "10.0.0.1", "nurse1", true, T0 + 3); /* does not help the address */
    attempt(t, "10.0.0.1", "other", false, T0 + 3); /* the address's 20th failure */
    assert_int_equal(verdict(t, "10.0.0.1", "nurse1", T0 + 3, NULL), THROTTLE_BLOCKED);
    throttle_free(t);
}

/* ---- concurrency ------------------------------------------------------------- */

#define RACERS 60

struct race {
    struct throttle *t;
    pthread_barrier_t *begun;
    enum spread spread;
    int i;
    bool queue; /* throttle_begin_wait, as the console calls it */
    bool right; /* the password is right */
    int why;
    int64_t wait;
};

static void *racer(void *arg)
{
    struct race *r = arg;
    char addr[32], user[32];
    spread_key(r->spread, r->i, addr, user);
    struct throttle_ticket tk;
    if (r->queue) {
        r->why = throttle_begin_wait(r->t, addr, user, ch_mono_ms() + 5000, &tk, &r->wait);
        if (r->why == THROTTLE_GO) {
            ch_sleep_ms(5); /* the password hash */
            throttle_end(r->t, &tk, r->right, ch_mono_ms());
        }
        return NULL;
    }
    r->why = throttle_begin(r->t, addr, user, T0, &tk, &r->wait);
    /* every racer has decided before any check ends: the worst race */
    pthread_barrier_wait(r->begun);
    if (r->why == THROTTLE_GO)
        throttle_end(r->t, &tk, r->right, T0);
    return NULL;
}

/* RACERS attempts at once; counts the verdicts. */
static void race(struct throttle *t, enum spread spread, bool queue, bool right, int count[4])
{
    pthread_barrier_t begun;
    pthread_barrier_init(&begun, NULL, RACERS);
    static struct race r[RACERS];
    pthread_t th[RACERS];
    for (int i = 0; i < RACERS; i++) {
        r[i] = (struct race){
            .t = t, .begun = &begun, .spread = spread, .i = i, .queue = queue, .right = right};
        assert_int_equal(pthread_create(&th[i], NULL, racer, &r[i]), 0);
    }
    memset(count, 0, 4 * sizeof count[0]);
    for (int i = 0; i < RACERS; i++) {
        pthread_join(th[i], NULL);
        assert_true(r[i].why >= 0 && r[i].why < 4);
        count[r[i].why]++;
        if (r[i].why != THROTTLE_GO)
            assert_true(r[i].wait > 0);
    }
    pthread_barrier_destroy(&begun);
}

/* 60 wrong passwords at once get exactly the limit of checks, whichever
 * counter limits them; the rest are refused without one. */
static void test_concurrent_refused(void **state)
{
    (void)state;
    static const struct {
        enum spread spread;
        int max;
    } cases[] = {{ONE_PAIR, THROTTLE_PAIR_MAX},
                 {MANY_USERS, THROTTLE_ADDR_MAX},
                 {MANY_ADDRS, THROTTLE_USER_MAX}};
    for (size_t c = 0; c < CH_ARRAY_LEN(cases); c++) {
        struct throttle *t = throttle_new(THROTTLE_SLOTS);
        int count[4];
        race(t, cases[c].spread, false, false, count);
        assert_int_equal(count[THROTTLE_GO], cases[c].max);
        assert_int_equal(count[THROTTLE_BUSY], RACERS - cases[c].max);
        /* and once those checks have failed, the counter is blocked */
        char addr[32], user[32];
        spread_key(cases[c].spread, RACERS, addr, user);
        assert_int_equal(verdict(t, addr, user, T0, NULL), THROTTLE_BLOCKED);
        throttle_free(t);
    }
}

/* Queued as the console queues them: wrong passwords still get the limit of
 * checks and then find the block; right ones all get through. */
static void test_concurrent_queued(void **state)
{
    (void)state;
    struct throttle *t = throttle_new(THROTTLE_SLOTS);
    int count[4];
    race(t, ONE_PAIR, true, false, count);
    assert_int_equal(count[THROTTLE_GO], THROTTLE_PAIR_MAX);
    assert_int_equal(count[THROTTLE_BLOCKED], RACERS - THROTTLE_PAIR_MAX);
    throttle_free(t);

    t = throttle_new(THROTTLE_SLOTS);
    race(t, ONE_PAIR, true, true, count); /* a script's parallel Basic requests */
    assert_int_equal(count[THROTTLE_GO], RACERS);
    throttle_free(t);

    /* a queue that does not move within its deadline: refused, busy */
    t = throttle_new(THROTTLE_SLOTS);
    struct throttle_ticket held[THROTTLE_PAIR_MAX], tk;
    int64_t now = ch_mono_ms(), wait = 0;
    for (int i = 0; i < THROTTLE_PAIR_MAX; i++)
        assert_int_equal(throttle_begin(t, "10.0.0.1", "nurse1", now, &held[i], &wait), 0);
    assert_int_equal(throttle_begin_wait(t, "10.0.0.1", "nurse1", ch_mono_ms() + 30, &tk, &wait),
                     THROTTLE_BUSY);
    assert_int_equal(wait, THROTTLE_BUSY_MS);
    for (int i = 0; i < THROTTLE_PAIR_MAX; i++)
        throttle_end(t, &held[i], true, now);
    assert_int_equal(throttle_begin_wait(t, "10.0.0.1", "nurse1", ch_mono_ms() + 30, &tk, &wait),
                     THROTTLE_GO);
    throttle_end(t, &tk, true, ch_mono_ms());
    throttle_free(t);
}

/* ---- bounded memory ----------------------------------------------------------- */

/* A blocked address and a blocked pair stay blocked however many other
 * addresses fail once each: in a table just big enough, and in the
 * console's own (2000 addresses, three counters each: 6000 > 4096). */
static void test_no_eviction_of_blocks(void **state)
{
    (void)state;
    static const struct {
        size_t slots;
        unsigned others;
    } cases[] = {{16, 131}, {16, 5000}, {THROTTLE_SLOTS, 131}, {THROTTLE_SLOTS, 2000}};
    for (size_t c = 0; c < CH_ARRAY_LEN(cases); c++) {
        struct throttle *t = throttle_new(cases[c].slots);
        for (int i = 0; i < THROTTLE_PAIR_MAX; i++)
            attempt(t, "192.168.1.66", "nurse1", false, T0);
        for (int i = THROTTLE_PAIR_MAX; i < THROTTLE_ADDR_MAX; i++) {
            char user[16];
            snprintf(user, sizeof user, "guess%d", i);
            attempt(t, "192.168.1.66", user, false, T0);
        }
        assert_int_equal(verdict(t, "192.168.1.66", "admin", T0, NULL), THROTTLE_BLOCKED);
        attempt(t, "192.168.1.77", "nurse1", false, T0); /* a pair one failure short... */
        for (int i = 0; i < THROTTLE_PAIR_MAX - 2; i++)
            attempt(t, "192.168.1.77", "nurse1", false, T0);
        for (unsigned i = 0; i < cases[c].others; i++) {
            char addr[32], user[32];
            addr_n(addr, sizeof addr, i);
            snprintf(user, sizeof user, "x%u", i);
            /* never refused: unblocked counters make room */
            attempt(t, addr, user, false, T0 + 1);
        }
        int64_t wait = 0;
        assert_int_equal(verdict(t, "192.168.1.66", "admin", T0 + 2, &wait), THROTTLE_BLOCKED);
        assert_int_equal(wait, THROTTLE_BLOCK_MS - 2);
        assert_int_equal(verdict(t, "192.168.1.66", "nurse1", T0 + 2, NULL), THROTTLE_BLOCKED);
        /* in the console's table nothing was evicted at 131 others, so the
         * pair one failure short is still counted */
        if (cases[c].slots == THROTTLE_SLOTS && cases[c].others < 1000) {
            attempt(t, "192.168.1.77", "nurse1", false, T0 + 2);
            assert_int_equal(verdict(t, "192.168.1.77", "nurse1", T0 + 2, NULL), THROTTLE_BLOCKED);
        }
        /* and the block ends on time */
        assert_int_equal(verdict(t, "192.168.1.66", "admin", T0 + THROTTLE_BLOCK_MS, NULL),
                         THROTTLE_GO);
        throttle_free(t);
    }
}

/* Every entry blocked or in flight: an attempt needing a new counter is
 * refused (not let through unthrottled, not evicting a block), takes
 * nothing, and gets in once a block ends or a check ends. */
static void test_table_full(void **state)
{
    (void)state;
    /* two blocked pairs; the address's and a user's counters may be taken */
    struct throttle *t = throttle_new(4);
    for (int i = 0; i < THROTTLE_PAIR_MAX; i++)
        attempt(t, "10.0.0.1", "nurse1", false, T0);
    for (int i = 0; i < THROTTLE_PAIR_MAX; i++)
        attempt(t, "10.0.0.1", "nurse2", false, T0 + 5);
    int64_t wait = 0;
    assert_int_equal(verdict(t, "10.0.0.2", "admin", T0 + 10, &wait), THROTTLE_FULL);
    assert_int_equal(wait, THROTTLE_BLOCK_MS - 10); /* until the first block ends */
    assert_int_equal(verdict(t, "10.0.0.2", "admin", T0 + 10, NULL), THROTTLE_FULL);
    assert_int_equal(verdict(t, "10.0.0.1", "x", T0 + 10, NULL), THROTTLE_FULL);
    assert_int_equal(verdict(t, "10.0.0.1", "nurse1", T0 + 10, NULL), THROTTLE_BLOCKED);
    assert_int_equal(verdict(t, "10.0.0.1", "nurse2", T0 + 10, NULL), THROTTLE_BLOCKED);
    /* the first block ends, making room; the refusals forgot nothing: the
     * address's ten failures (its window not over yet) and ten more block it */
    int64_t later = T0 + THROTTLE_BLOCK_MS;
    for (int i = 0; i < THROTTLE_ADDR_MAX - 2 * THROTTLE_PAIR_MAX; i++) {
        char user[16];
        snprintf(user, sizeof user, "y%d", i);
        attempt(t, "10.0.0.1", user, false, later);
    }
    assert_int_equal(verdict(t, "10.0.0.1", "z", later, NULL), THROTTLE_BLOCKED);
    assert_int_equal(verdict(t, "10.0.0.1", "nurse2", later, NULL), THROTTLE_BLOCKED);
    /* the second block ends: room for a new address */
    assert_int_equal(verdict(t, "10.0.0.2", "admin", T0 + 5 + THROTTLE_BLOCK_MS, NULL),
                     THROTTLE_GO);
    throttle_free(t);

    /* one attempt in flight holds the whole table */
    t = throttle_new(3);
    struct throttle_ticket tk;
    assert_int_equal(throttle_begin(t, "10.0.0.1", "nurse1", T0, &tk, &wait), THROTTLE_GO);
    assert_int_equal(verdict(t, "10.0.0.2", "admin", T0, &wait), THROTTLE_FULL);
    assert_int_equal(wait, THROTTLE_BUSY_MS);
    /* two counters found, the third not: refused, holding nothing */
    assert_int_equal(verdict(t, "10.0.0.1", "admin", T0, NULL), THROTTLE_FULL);
    throttle_end(t, &tk, false, T0);
    attempt(t, "10.0.0.2", "admin", false, T0);
    throttle_free(t);

    /* a table of nothing but counters in flight is refused, not overrun */
    t = throttle_new(6);
    struct throttle_ticket a, b;
    assert_int_equal(throttle_begin(t, "10.0.0.1", "u1", T0, &a, &wait), THROTTLE_GO);
    assert_int_equal(throttle_begin(t, "10.0.0.2", "u2", T0, &b, &wait), THROTTLE_GO);
    assert_int_equal(verdict(t, "10.0.0.3", "u3", T0, NULL), THROTTLE_FULL);
    throttle_end(t, &a, true, T0);
    throttle_end(t, &b, true, T0);
    /* thousands of addresses through six entries: never refused */
    for (unsigned i = 0; i < 3000; i++) {
        char addr[32], user[32];
        addr_n(addr, sizeof addr, i);
        snprintf(user, sizeof user, "x%u", i);
        attempt(t, addr, user, i % 3 == 0, T0 + i);
    }
    throttle_free(t);
}

/* Which counter goes when a new one needs room: one that holds nothing (its
 * window over) before one counting failures, however recently used; among
 * counting ones, the least recently used, wherever it sits in the table. */
static void test_eviction_order(void **state)
{
    (void)state;
    struct throttle *t = throttle_new(6); /* two attempts' counters */
    attempt(t, "10.0.0.2", "uy", false, T0);
    for (int i = 0; i < THROTTLE_PAIR_MAX - 1; i++)
        attempt(t, "10.0.0.1", "ux", false, T0 + 30000);
    for (int i = 0; i < THROTTLE_PAIR_MAX - 2; i++)
        attempt(t, "10.0.0.2", "uy", false, T0 + 59000);
    /* uy's window (from T0) is over, ux's (from T0 + 30000) is not */
    int64_t now = T0 + THROTTLE_WINDOW_MS + 1;
    attempt(t, "10.0.0.3", "uz", false, now);
    attempt(t, "10.0.0.1", "ux", false, now);
    assert_int_equal(verdict(t, "10.0.0.1", "ux", now, NULL), THROTTLE_BLOCKED);
    throttle_free(t);

    t = throttle_new(6);
    for (int i = 0; i < THROTTLE_PAIR_MAX - 2; i++) /* first in the table */
        attempt(t, "10.0.0.1", "ux", false, T0);
    for (int i = 0; i < THROTTLE_PAIR_MAX - 1; i++)
        attempt(t, "10.0.0.2", "uy", false, T0 + 1);
    attempt(t, "10.0.0.1", "ux", false, T0 + 2); /* ux used last */
    attempt(t, "10.0.0.3", "uz", false, T0 + 3); /* takes uy's place */
    attempt(t, "10.0.0.1", "ux", false, T0 + 4);
    assert_int_equal(verdict(t, "10.0.0.1", "ux", T0 + 4, NULL), THROTTLE_BLOCKED);
    attempt(t, "10.0.0.2", "uy", false, T0 + 4); /* counted from nothing */
    assert_int_equal(verdict(t, "10.0.0.2", "uy", T0 + 4, NULL), THROTTLE_GO);
    throttle_free(t);
}

/* Trusted pairs outlast counters under a flood: evicted only after every
 * counter that only a failure made. */
static void test_trusted_kept_longest(void **state)
{
    (void)state;
    struct throttle *t = throttle_new(8);
    attempt(t, "10.0.0.5", "nurse1", true, T0); /* trusted pair */
    for (unsigned i = 0; i < 500; i++) {
        char addr[32], user[32];
        addr_n(addr, sizeof addr, 1000 + i);
        snprintf(user, sizeof user, "x%u", i);
        attempt(t, addr, user, false, T0 + 1 + i);
    }
    /* the per-user block does not reach the trusted address */
    for (int i = 0; i < THROTTLE_USER_MAX; i++) {
        char addr[32];
        addr_n(addr, sizeof addr, 9000 + (unsigned)i);
        attempt(t, addr, "nurse1", false, T0 + 600 + i);
    }
    assert_int_equal(verdict(t, "10.0.0.9", "nurse1", T0 + 600, NULL), THROTTLE_BLOCKED);
    assert_int_equal(verdict(t, "10.0.0.5", "nurse1", T0 + 600, NULL), THROTTLE_GO);
    throttle_free(t);
}

/* ---- per user ------------------------------------------------------------------ */

/* A user guessed from many addresses is blocked from new ones for a bounded
 * time, but not from where that user has logged in within a week; there
 * only the pair and address limits apply. */
static void test_user_across_addresses(void **state)
{
    (void)state;
    struct throttle *t = throttle_new(THROTTLE_SLOTS);
    attempt(t, "10.9.9.1", "nurse1", true, T0);   /* her phone */
    attempt(t, "10.9.9.2", "nurse1", true, T0);   /* the station */
    attempt(t, "10.9.9.2", "nurse1", false, T0);  /* a typo there: still trusted */
    for (int i = 1; i < THROTTLE_USER_MAX; i++) { /* 30 failures in all */
        char addr[32];
        addr_n(addr, sizeof addr, (unsigned)i);
        attempt(t, addr, "nurse1", false, T0 + 1);
    }
    int64_t wait = 0;
    assert_int_equal(verdict(t, "10.200.0.1", "nurse1", T0 + 1, &wait), THROTTLE_BLOCKED);
    assert_int_equal(wait, THROTTLE_BLOCK_MS);
    assert_int_equal(verdict(t, "10.200.0.1", "nurse2", T0 + 1, NULL), THROTTLE_GO);
    assert_int_equal(verdict(t, "10.9.9.1", "nurse1", T0 + 1, NULL), THROTTLE_GO);
    /* the trusted station still has only its pair limit */
    for (int i = 0; i < THROTTLE_PAIR_MAX - 1; i++)
        attempt(t, "10.9.9.2", "nurse1", false, T0 + 2);
    assert_int_equal(verdict(t, "10.9.9.2", "nurse1", T0 + 2, NULL), THROTTLE_BLOCKED);
    /* bounded: after the block (which the station's failures renewed),
     * new addresses may try again */
    assert_int_equal(verdict(t, "10.200.0.1", "nurse1", T0 + 1 + THROTTLE_BLOCK_MS, NULL),
                     THROTTLE_BLOCKED);
    assert_int_equal(verdict(t, "10.200.0.1", "nurse1", T0 + 2 + THROTTLE_BLOCK_MS, NULL),
                     THROTTLE_GO);
    throttle_free(t);

    /* trust lapses THROTTLE_TRUST_MS after the success */
    static const struct {
        int64_t after;
        int expect;
    } trust[] = {{THROTTLE_TRUST_MS - 1, THROTTLE_GO}, {THROTTLE_TRUST_MS, THROTTLE_BLOCKED}};
    for (size_t c = 0; c < CH_ARRAY_LEN(trust); c++) {
        t = throttle_new(THROTTLE_SLOTS);
        attempt(t, "10.9.9.1", "nurse1", true, T0);
        int64_t now = T0 + trust[c].after;
        for (int i = 0; i < THROTTLE_USER_MAX; i++) {
            char addr[32];
            addr_n(addr, sizeof addr, (unsigned)i);
            attempt(t, addr, "nurse1", false, now);
        }
        assert_int_equal(verdict(t, "10.9.9.1", "nurse1", now, NULL), trust[c].expect);
        throttle_free(t);
    }
}

/* An address, a user of the same name and a pair are different counters;
 * user names are compared up to THROTTLE_USER_LEN characters. */
static void test_kinds_apart(void **state)
{
    (void)state;
    struct throttle *t = throttle_new(THROTTLE_SLOTS);
    for (int i = 0; i < THROTTLE_ADDR_MAX; i++) {
        char user[16];
        snprintf(user, sizeof user, "g%d", i);
        attempt(t, "10.0.0.1", user, false, T0);
    }
    assert_int_equal(verdict(t, "10.0.0.1", "x", T0, NULL), THROTTLE_BLOCKED);
    assert_int_equal(verdict(t, "10.0.0.2", "10.0.0.1", T0, NULL), THROTTLE_GO);

    char long_a[THROTTLE_USER_LEN + 8], long_b[THROTTLE_USER_LEN + 8];
    memset(long_a, 'n', sizeof long_a - 1);
    long_a[sizeof long_a - 1] = '\0';
    memcpy(long_b, long_a, sizeof long_b);
    long_b[THROTTLE_USER_LEN] = 'X'; /* differs only past the cut */
    for (int i = 0; i < THROTTLE_PAIR_MAX; i++)
        attempt(t, "10.0.0.3", i % 2 ? long_a : long_b, false, T0);
    assert_int_equal(verdict(t, "10.0.0.3", long_a, T0, NULL), THROTTLE_BLOCKED);
    long_b[THROTTLE_USER_LEN - 1] = 'X'; /* differs before it */
    assert_int_equal(verdict(t, "10.0.0.3", long_b, T0, NULL), THROTTLE_GO);
    throttle_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_window_and_block),
        cmocka_unit_test(test_success_gives_back),
        cmocka_unit_test(test_concurrent_refused),
        cmocka_unit_test(test_concurrent_queued),
        cmocka_unit_test(test_no_eviction_of_blocks),
        cmocka_unit_test(test_table_full),
        cmocka_unit_test(test_eviction_order),
        cmocka_unit_test(test_trusted_kept_longest),
        cmocka_unit_test(test_user_across_addresses),
        cmocka_unit_test(test_kinds_apart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
