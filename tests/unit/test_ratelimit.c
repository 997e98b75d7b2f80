/* The API's rate limits on a fake clock (hub/tokens.h): what an export or a
 * summary pays from its token's bucket and the reserve it leaves, and the
 * per-address limit of requests without a valid token, its bounded table,
 * blocks that other addresses cannot evict, and a full table failing
 * closed. */
#include "err.h"
#include "tokens.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#define HASH "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"

/* A tokens file with one token, "t", of rate 10 (burst 20). */
static struct tokens *load(void)
{
    char path[] = "/tmp/test_ratelimit_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f,
            "tokens:\n  - name: t\n    sha256: %s\n    role: staff\n    sites: [a]\n"
            "    rate: 10\n",
            HASH);
    fclose(f);
    struct tokens *t = NULL;
    assert_int_equal(tokens_load(path, 20, &t), 0);
    unlink(path);
    return t;
}

static const struct token *first(struct tokens *t)
{
    return &((struct token *)t->list.items)[0];
}

/* What tokens_take lets through at now: how many requests in a row. */
static int takes(struct tokens *t, int64_t now)
{
    int n = 0;
    while (n < 100 && tokens_take(t, first(t), now, NULL))
        n++;
    return n;
}

static void test_pay_leaves_reserve(void **state)
{
    (void)state;
    struct tokens *t = load();
    int64_t now = first(t)->bucket_ms, wait = -1;
    double owed = 5; /* 20 in the bucket, 10 of them the reserve */
    assert_int_equal(tokens_pay(t, "t", &owed, INT64_MAX, now, &wait), 0);
    assert_true(owed == 0 && wait == 0);
    owed = 10; /* 5 above the reserve: 5 owed, half a second at 10 a second */
    assert_int_equal(tokens_pay(t, "t", &owed, INT64_MAX, now, &wait), 0);
    assert_true(owed > 4.999 && owed < 5.001);
    assert_in_range(wait, 500, 501);
    owed = 5;
    assert_int_equal(tokens_pay(t, "t", &owed, INT64_MAX, now + 499, &wait), 0);
    assert_true(owed > 0 && wait >= 1); /* 4.99 there: not quite */
    assert_int_equal(tokens_pay(t, "t", &owed, INT64_MAX, now + 500, &wait), 0);
    assert_true(owed == 0 && wait == 0);
    /* the reserve is the token's other requests': 10 of them (give or take
       the rounding of the halves paid) */
    assert_in_range(takes(t, now + 500), 9, 10);
    tokens_free(t);
}

static void test_pay_too_long_takes_nothing(void **state)
{
    (void)state;
    struct tokens *t = load();
    int64_t now = first(t)->bucket_ms, wait = 0;
    /* 10 above the reserve; 300 more at 10 a second is 30 s */
    double owed = 310;
    assert_int_equal(tokens_pay(t, "t", &owed, 29999, now, &wait), CH_EFULL);
    assert_true(owed == 310);
    assert_in_range(wait, 30000, 30001);
    assert_int_equal(takes(t, now), 20); /* nothing was taken */
    owed = 310;
    assert_int_equal(tokens_pay(t, "t", &owed, 30001, now + 100000, &wait), 0);
    assert_true(owed > 299.999 && owed < 300.001);
    /* a revoked (unknown) token pays nothing */
    owed = 1;
    assert_int_equal(tokens_pay(t, "gone", &owed, INT64_MAX, now, &wait), CH_ENOTFOUND);
    tokens_free(t);
}

/* How many of n requests from addr at now take a place (are not limited). */
static int taken(struct tokens_addrs *a, const char *addr, int n, int64_t now)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += !tokens_addrs_take(a, addr, now, NULL);
    return k;
}

static void test_address_burst_and_rate(void **state)
{
    (void)state;
    struct tokens_addrs *a = tokens_addrs_new(5); /* burst 20 */
    int retry = 0;
    assert_int_equal(taken(a, "192.0.2.1", 20, 1000), 20);
    assert_true(tokens_addrs_take(a, "192.0.2.1", 1000, &retry));
    assert_int_equal(retry, 1);
    assert_int_equal(taken(a, "192.0.2.2", 1, 1000), 1);
    /* one a fifth of a second */
    assert_int_equal(taken(a, "192.0.2.1", 1, 1199), 0);
    assert_int_equal(taken(a, "192.0.2.1", 2, 1200), 1);
    /* a request that was not refused gives its place back */
    tokens_addrs_refund(a, "192.0.2.1", 1200);
    assert_int_equal(taken(a, "192.0.2.1", 2, 1200), 1);
    tokens_addrs_free(a);
}

static void test_address_groups(void **state)
{
    (void)state;
    struct tokens_addrs *a = tokens_addrs_new(1); /* burst 4 */
    assert_int_equal(taken(a, "2001:db8:1:2::1", 2, 0), 2);
    assert_int_equal(taken(a, "2001:db8:1:2:ffff::9", 3, 0), 2); /* the same /64 */
    assert_int_equal(taken(a, "2001:db8:1:3::1", 1, 0), 1);
    assert_int_equal(taken(a, "::ffff:198.51.100.7", 4, 0), 4); /* IPv4 on an IPv6 socket */
    assert_int_equal(taken(a, "198.51.100.7", 1, 0), 0);
    assert_int_equal(taken(a, "198.51.100.8", 1, 0), 1);
    tokens_addrs_free(a);
}

static void addr_n(char *out, size_t n, unsigned i)
{
    snprintf(out, n, "10.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255, i & 255);
}

static void test_address_blocks_not_evicted(void **state)
{
    (void)state;
    struct tokens_addrs *a = tokens_addrs_new(1); /* burst 4: a block lasts 1 s a refusal */
    char addr[32];
    assert_int_equal(taken(a, "203.0.113.9", 5, 0), 4);
    /* many other addresses, one refusal each: they take what is not blocked */
    for (unsigned i = 0; i < 3 * TOKENS_ADDR_SLOTS; i++) {
        addr_n(addr, sizeof addr, i);
        assert_int_equal(taken(a, addr, 1, 0), 1);
    }
    assert_int_equal(taken(a, "203.0.113.9", 1, 0), 0);
    /* twice as many blocked addresses as entries: each ends limited, blocked
       in the table or (its set full of blocks) failing closed; none of them
       evicted the first */
    for (unsigned i = 0; i < 2 * TOKENS_ADDR_SLOTS; i++) {
        addr_n(addr, sizeof addr, 100000 + i);
        taken(a, addr, 4, 0);
        assert_int_equal(taken(a, addr, 1, 0), 0);
    }
    assert_int_equal(taken(a, "203.0.113.9", 1, 0), 0);
    /* a new address fails closed while its set has no room, for a while */
    int retry = 0;
    assert_true(tokens_addrs_take(a, "198.18.0.1", 0, &retry));
    assert_in_range(retry, 1, 2);
    assert_int_equal(taken(a, "198.18.0.1", 1, 1000), 1);
    tokens_addrs_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pay_leaves_reserve),
        cmocka_unit_test(test_pay_too_long_takes_nothing),
        cmocka_unit_test(test_address_burst_and_rate),
        cmocka_unit_test(test_address_groups),
        cmocka_unit_test(test_address_blocks_not_evicted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
