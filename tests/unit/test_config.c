/* Site configuration: the good fixture loads with its defaults; every class
 * of bad input fails with a message naming file, line and key. */
#include "config.h"
#include "err.h"

#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "capture.h"

static char fixture[4096];

static const char *fx(const char *name)
{
    const char *dir = getenv("CAREHUB_FIXTURES");
    snprintf(fixture, sizeof fixture, "%s/config/%s", dir ? dir : "tests/fixtures", name);
    return fixture;
}

/* Runs site_load with stderr captured; returns its result, output in buf. */
static int load_capturing(const char *path, struct site *s, char *buf, size_t n)
{
    struct capture cap = {-1, -1};
    assert_int_equal(capture_begin(&cap), 0);
    int rc = site_load(path, s);
    capture_end(&cap, buf, n);
    return rc;
}

static void test_good_config_and_defaults(void **state)
{
    (void)state;
    struct site s;
    char out[8192];
    int rc = load_capturing(fx("good.yaml"), &s, out, sizeof out);
    if (rc != 0)
        fail_msg("good.yaml failed: %s", out);
    const struct site_config *c = &s.cfg;
    assert_string_equal(c->site, "cq-test-001");
    assert_int_equal(c->buses.n, 2);
    assert_int_equal(c->devices.n, 3);
    assert_int_equal(SITE_BUS(c, 0)->timeout_ms, 200);
    assert_int_equal(SITE_BUS(c, 0)->parity, 'N');
    assert_int_equal(SITE_BUS(c, 1)->timeout_ms, 1000); /* default */
    assert_int_equal(SITE_DEV(c, 0)->interval_ms, 1000);
    assert_int_equal(SITE_DEV(c, 1)->interval_ms, 10000); /* default */
    assert_int_equal(SITE_DEV(c, 1)->slave, 254);         /* 0xFE */
    assert_string_equal(SITE_DEV(c, 1)->prof->id, "co2-s8");
    assert_string_equal(SITE_DEV(c, 2)->busp->id, "lan");
    assert_int_equal(c->uplink.batch_max, 500);
    assert_true(c->uplink.tls.verify);
    const struct profile *p = site_profile(&s, "gas-lel");
    assert_non_null(p);
    assert_int_equal(PROFILE_REG(p, 0)->type, REG_F32);
    assert_int_equal(PROFILE_REG(p, 0)->order, ORDER_CDAB);
    assert_string_equal(p->measurement, "safety");
    site_free(&s);
}

struct bad_case {
    const char *file;
    const char *where; /* "file:line:" */
    const char *what;  /* names the key */
};

static void test_bad_configs(void **state)
{
    (void)state;
    static const struct bad_case cases[] = {
        {"bad-type.yaml", "bad-type.yaml:26:", "key 'slave': expected an integer, got 'abc'"},
        {"bad-unknown-key.yaml",
         "bad-unknown-key.yaml:22:", "unknown key 'intervall' (did you mean 'interval'?)"},
        {"bad-missing-key.yaml", "bad-missing-key.yaml:24:", "missing required key 'profile'"},
        {"bad-syntax.yaml", "bad-syntax.yaml:8:", "error"},
        {"bad-unknown-profile.yaml",
         "bad-unknown-profile.yaml:31:", "key 'profile': unknown profile 'air-bored'"},
        {"bad-duplicate-device.yaml",
         "bad-duplicate-device.yaml:24:", "key 'id': duplicate device id 'th-101'"},
        {"bad-duration.yaml", "bad-duration.yaml:12:", "key 'timeout': expected a duration"},
        {"bad-unknown-bus.yaml", "bad-unknown-bus.yaml:29:", "key 'bus': no bus with id 'lan2'"},
        {"bad-profile-file.yaml",
         "bad-profile.yaml:4:", "key 'metric': 'temperature' appears twice"},
        {"bad-profile-file.yaml", "bad-profile.yaml:5:", "key 'type': u16 with fc 1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct site s;
        char out[8192];
        int rc = load_capturing(fx(cases[i].file), &s, out, sizeof out);
        if (rc != CH_ECONFIG)
            fail_msg("%s: rc %d, want CH_ECONFIG", cases[i].file, rc);
        if (!strstr(out, cases[i].where) || !strstr(out, cases[i].what))
            fail_msg("%s: output does not name '%s' and '%s':\n%s", cases[i].file, cases[i].where,
                     cases[i].what, out);
    }
}

static void test_missing_file(void **state)
{
    (void)state;
    struct site s;
    char out[1024];
    int rc = load_capturing(fx("does-not-exist.yaml"), &s, out, sizeof out);
    assert_true(rc < 0);
    assert_non_null(strstr(out, "does-not-exist.yaml"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_config_and_defaults),
        cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_missing_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
