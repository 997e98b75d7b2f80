/* The pieces of care-hub's API that need no server: dates, percentiles,
 * InfluxQL quoting, the tokens file (hashes, scopes, rate limit), district
 * scopes. */
#include "api.h"
#include "err.h"
#include "influxq.h"
#include "tokens.h"
#include "util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static void test_dates(void **state)
{
    (void)state;
    int64_t ms;
    assert_int_equal(api_parse_time("2026-11-23T03:00:00Z", &ms), 0);
    assert_int_equal(ms, 1795402800000LL);
    assert_int_equal(api_parse_time("2026-11-23T11:00:00+08:00", &ms), 0);
    assert_int_equal(ms, 1795402800000LL);
    assert_int_equal(api_parse_time("2026-11-23T03:00:00.25Z", &ms), 0);
    assert_int_equal(ms, 1795402800250LL);
    assert_int_equal(api_parse_time("2026-11-23", &ms), 0);
    assert_int_equal(ms, 1795392000000LL);
    assert_int_equal(api_parse_time("1795402800000", &ms), 0);
    assert_int_equal(ms, 1795402800000LL);
    assert_int_equal(api_parse_time("2024-02-29", &ms), 0); /* leap year */
    static const char *const bad[] = {"",
                                      "yesterday",
                                      "2026-13-01",
                                      "2026-02-29",
                                      "2026-04-31",
                                      "2026-11-23T24:00:00Z",
                                      "2026-11-23T03:00:00",
                                      "2026-11-23T03:00:00+8",
                                      "2026-11-23T03:00:00.Z",
                                      "2026-11-23T03:00:00Z'",
                                      "-5",
                                      "1e9",
                                      "1969-12-31",
                                      "2026-11-23T03:00:00+08:00 OR 1=1",
                                      "99999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(api_parse_time(bad[i], &ms), -1);
}

static void test_percentiles(void **state)
{
    (void)state;
    double v[] = {30, 45, 90, 120};
    assert_true(api_percentile(v, 4, 0.5) == 67.5);
    assert_true(api_percentile(v, 4, 0.9) == 111.0);
    assert_true(api_percentile(v, 1, 0.9) == 30);
    double w[] = {1, 2, 3};
    assert_true(api_percentile(w, 3, 0.5) == 2);
    assert_true(api_percentile(w, 3, 1.0) == 3);
}

static void test_quoting(void **state)
{
    (void)state;
    struct qb q;
    qb_init(&q);
    qb_add(&q, "WHERE \"site\" = ");
    qb_str(&q, "x' OR '1'='1\\");
    assert_string_equal(q.s, "WHERE \"site\" = 'x\\' OR \\'1\\'=\\'1\\\\'");
    qb_free(&q);
    qb_ident(&q, "co2\") FROM x; --");
    assert_string_equal(q.s, "\"co2\\\") FROM x; --\"");
    qb_free(&q);
    qb_regex_prefix(&q, "cq.yz-/x");
    assert_string_equal(q.s, "/^cq\\.yz\\-\\/x/");
    qb_free(&q);
    qb_str(&q, "a\nb");
    assert_string_equal(q.s, "'ab'");
    qb_free(&q);
}

static char *write_file(const char *text)
{
    char *path = strdup("/tmp/carehub-tokens-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_tokens(void **state)
{
    (void)state;
    char tok[48], hash[65], tok2[48], hash2[65];
    tokens_generate(tok, hash);
    tokens_generate(tok2, hash2);
    assert_int_equal(strlen(tok), 47);
    assert_memory_equal(tok, "chk_", 4);
    assert_string_not_equal(tok, tok2);
    char text[1024];
    snprintf(text, sizeof text,
             "tokens:\n"
             "  - name: nurse\n    sha256: %s\n    role: staff\n    sites: [cq-yz-001]\n"
             "  - name: reg\n    sha256: %s\n    role: regulator\n    district: cq-yz-\n"
             "    grants: [health]\n    rate: 2\n",
             hash, hash2);
    char *path = write_file(text);
    struct tokens *t;
    assert_int_equal(tokens_load(path, 10, &t), 0);
    const struct token *k = tokens_find(t, tok);
    assert_non_null(k);
    assert_string_equal(k->name, "nurse");
    assert_true(token_in_scope(k, "cq-yz-001"));
    assert_false(token_in_scope(k, "cq-yz-0011"));
    const struct token *r = tokens_find(t, tok2);
    assert_non_null(r);
    assert_int_equal(r->role, ROLE_REGULATOR);
    assert_int_equal(r->grant_mask, GRANT_HEALTH);
    assert_true(token_in_scope(r, "cq-yz-777"));
    assert_false(token_in_scope(r, "cq-jb-001"));
    assert_string_equal(r->district, "cq-yz"); /* written "cq-yz-" */
    assert_true(token_in_scope(r, "cq-yz-0010"));
    assert_false(token_in_scope(r, "cq-yzb-001")); /* whole segments */
    assert_null(tokens_find(t, "chk_wrong"));
    assert_null(tokens_find(t, ""));
    /* rate 2/s, burst 4: four at once, then one every 500 ms */
    int retry = 0;
    int64_t now = ch_mono_ms() + 1000;
    for (int i = 0; i < 4; i++)
        assert_true(tokens_take(t, r, now, &retry));
    assert_false(tokens_take(t, r, now, &retry));
    assert_true(retry >= 1);
    assert_true(tokens_take(t, r, now + 500, &retry));
    tokens_free(t);
    unlink(path);
    free(path);

    static const char *const broken[] = {
        "tokens:\n  - name: a\n    sha256: abc\n    role: staff\n    sites: [s]\n",
        "tokens:\n  - name: a\n    sha256: %s\n    role: boss\n    sites: [s]\n",
        "tokens:\n  - name: a\n    sha256: %s\n    role: staff\n",
        "tokens:\n  - name: a\n    sha256: %s\n    role: staff\n    sites: [s]\n    district: s\n",
        "tokens:\n  - name: a\n    sha256: %s\n    role: staff\n    sites: [\"bad id\"]\n",
        "tokens:\n  - name: a\n    sha256: %s\n    role: regulator\n    sites: [s]\n    grants: "
        "[x]\n",
        "tokens:\n  - name: a\n    sha256: %s\n    role: staff\n    sites: [s]\n"
        "  - name: a\n    sha256: %s\n    role: staff\n    sites: [s]\n",
        "tokens:\n  - name: a\n    sha256: %s\n    role: regulator\n    district: \"-\"\n",
        "tokens:\n  - name: a\n    sha256: %s\n    role: regulator\n    district: cq-yz-*\n",
        "tokens:\n  - name: a\n    sha256: %s\n    role: regulator\n    district: -cq\n",
    };
    for (size_t i = 0; i < sizeof broken / sizeof *broken; i++) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        snprintf(text, sizeof text, broken[i], hash, hash);
#pragma GCC diagnostic pop
        path = write_file(text);
        assert_int_equal(tokens_load(path, 10, &t), CH_ECONFIG);
        unlink(path);
        free(path);
    }
}

/* District scopes are whole segments of site ids, separated by - . _ */
static void test_districts(void **state)
{
    (void)state;
    static const struct {
        const char *district, *site;
        bool covers;
    } cases[] = {
        {"cq-yz", "cq-yz-001", true},
        {"cq-yz", "cq-yz-0010", true},
        {"cq-yz", "cq-yz", true},
        {"cq-yz", "cq-yz.b", true},
        {"cq-yz", "cq-yz_b", true},
        {"cq-yz", "cq-yzb-001", false},
        {"cq-yz", "cq-y", false},
        {"cq-yz", "cq", false},
        {"cq-yz", "cq-jb-001", false},
        {"cq-yz-00", "cq-yz-0010", false},
        {"cq-yz-00", "cq-yz-001", false},
        {"cq-yz-00", "cq-yz-00", true},
        {"cq-yz-00", "cq-yz-00-1", true},
        {"cq-yz-001", "cq-yz-0010", false},
        {"cq-yz-", "cq-yz-001", true},
        {"cq-yz-", "cq-yzb-001", false},
        {"cq-yz-.", "cq-yz-001", true},
        {"", "cq-yz-001", false},
        {"-", "-x", false},
        {"cq-yz", "", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        if (tokens_district_covers(cases[i].district, cases[i].site) != cases[i].covers)
            fail_msg("district '%s', site '%s': %s expected", cases[i].district, cases[i].site,
                     cases[i].covers ? "covered" : "not covered");
    }
}

/* Text from the network into JSON: invalid UTF-8 becomes '?', valid text
 * (Chinese, emoji) stays as it was. */
static void test_utf8_fix(void **state)
{
    (void)state;
    const struct {
        const char *in, *out;
    } cases[] = {
        {"plain ascii", "plain ascii"},
        {"3\xe6\xa5\xbc \xe4\xb8\x9c\xe5\x8c\xba",
         "3\xe6\xa5\xbc \xe4\xb8\x9c\xe5\x8c\xba"}, /* 3楼 东区 */
        {"\xf0\x9f\x9a\xa8", "\xf0\x9f\x9a\xa8"},   /* U+1F6A8 */
        {"si\xc3te", "si?te"},                      /* a lead byte without its continuation */
        {"x=\xe9", "x=?"},                          /* Latin-1, from %E9 */
        {"cut \xe6\xa5", "cut ??"},                 /* a character cut at the end */
        {"\xc0\xaf", "??"},                         /* overlong '/' */
        {"\xed\xa0\x80", "???"},                    /* a surrogate */
        {"\xf4\x90\x80\x80", "????"},               /* above U+10FFFF */
        {"\x80\xbf", "??"},                         /* continuation bytes alone */
        {"\xff\xfe", "??"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[64];
        ch_strlcpy(buf, cases[i].in, sizeof buf);
        assert_string_equal(ch_utf8_fix(buf), cases[i].out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dates),     cmocka_unit_test(test_percentiles),
        cmocka_unit_test(test_quoting),   cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_districts), cmocka_unit_test(test_utf8_fix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
