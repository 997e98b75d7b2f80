/* Site configuration: the good fixture loads with its defaults; every class
 * of bad input fails with a message naming file, line and key. */
#include "codec.h"
#include "site.h"
#include "driver.h"
#include "err.h"

#include <jansson.h>

#include <dirent.h>
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
        {"bad-resident-device.yaml",
         "bad-resident-device.yaml:34:", "key 'devices': no device with id 'th-999'"},
        {"bad-annunciator.yaml",
         "bad-annunciator.yaml:33:", "key 'priorities': 'urgent' is not one of"},
        {"bad-rule-duplicate.yaml",
         "bad-rule-duplicate.yaml:34:", "key 'id': rule 'co2-high' is also defined in"},
        {"bad-console-hash.yaml",
         "bad-console-hash.yaml:35:", "key 'password_hash': not a crypt(3) hash"},
        {"bad-console-nousers.yaml",
         "bad-console-nousers.yaml:33:", "key 'users': an enabled console needs at least one user"},
        {"bad-params.yaml",
         "bad-params.yaml:35:", "key 'params': parameter 'limit' must be a number"},
        {"bad-utf8.yaml", "bad-utf8.yaml:2:15:", "error: not UTF-8 text (byte 0xff)"},
        {"bad-disable.yaml",
         "bad-disable.yaml:33:", "key 'disable_rules': no rule pack has a rule 'no-such-rule'"},
        /* a key of another driver's bus; a speed no serial line has */
        {"bad-bus-key.yaml", "bad-bus-key.yaml:17:",
         "key 'battery_low' does not apply to type 'modbus-tcp' (it is a key of ble)"},
        {"bad-baud.yaml", "bad-baud.yaml:11:", "key 'baud': '12345' is not one of: 1200"},
        /* a key that addresses a device on another type of bus */
        {"bad-address.yaml", "bad-address.yaml:32:",
         "key 'topic': a device on bus 'lan' (type modbus-tcp) has no topic"},
        /* a directory with no profile in it (the fuzzer's `profiles: [/]`) */
        {"bad-profiles-empty.yaml",
         "bad-profiles-empty.yaml:6:", "../../unit' holds no *.yaml or *.yml file"},
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

/* Rules, rule packs, residents and the alarm outputs: loaded, resolved, and
 * the rules in force assembled from the packs (less disable_rules) and the
 * site's own. */
static void test_alarm_sections(void **state)
{
    (void)state;
    struct site s;
    char out[8192];
    int rc = load_capturing(fx("good-alarms.yaml"), &s, out, sizeof out);
    if (rc != 0)
        fail_msg("good-alarms.yaml failed: %s", out);
    const struct site_config *c = &s.cfg;
    assert_string_equal(c->timezone, "Asia/Shanghai");
    assert_int_equal(c->n_all_rules, 2); /* co2-high from the pack, hall-co2; too-warm disabled */
    assert_string_equal(c->all_rules[0]->id, "co2-high");
    assert_int_equal(c->all_rules[0]->on_delay_ms, 300000);
    assert_true(strstr(c->all_rules[0]->source, "rules/pack.yaml") != NULL);
    assert_int_equal(c->all_rules[0]->select.profiles.n, 2);
    const struct rule_cfg *h = c->all_rules[1];
    assert_string_equal(h->id, "hall-co2");
    assert_int_equal(h->priority, CH_PRIO_HIGH);
    assert_int_equal(h->escalate_ms, 120000);
    assert_int_equal(h->escalate_max, 3);
    const struct cfg_param *lim = cfg_param_find(&h->params, "limit");
    assert_non_null(lim);
    assert_true(lim->value == 1200);
    const struct resident_cfg *r = SITE_RESIDENT(c, 0);
    assert_string_equal(r->id, "R-0417");
    assert_string_equal(r->bed, "101-A");
    assert_true(r->wandering_risk);
    assert_true(cfg_param_find(&r->params, "hr_low")->value == 45);
    assert_null(cfg_param_find(&r->params, "hr_high"));
    assert_int_equal(c->alarms.flood_count, 20);
    assert_int_equal(c->alarms.flood_window_ms, 600000);
    assert_int_equal(c->alarms.shelve_max_ms, 7200000);
    assert_non_null(strstr(c->alarms.state_file, "alarms.state"));
    assert_true(c->console.enabled);
    assert_int_equal(c->console.port, 18080);
    assert_int_equal(c->console.users.n, 2);
    assert_int_equal(((struct console_user *)c->console.users.items)[1].role, ROLE_ADMIN);
    assert_string_equal(c->local_mqtt.broker, "tcp://127.0.0.1:1884");
    const struct annunciator_cfg *a = SITE_ANNUNCIATOR(c, 0);
    assert_string_equal(a->busp->id, "lan");
    assert_int_equal(a->prio_mask, (1u << CH_PRIO_HIGH) | (1u << CH_PRIO_MEDIUM));
    site_free(&s);
}

/* Every line of want is in out, and marker occurs exactly count times. */
static void expect_reported(const char *out, const char *const *want, size_t n_want,
                            const char *marker, size_t count)
{
    for (size_t i = 0; i < n_want; i++)
        if (!strstr(out, want[i]))
            fail_msg("missing '%s' in:\n%s", want[i], out);
    size_t n = 0;
    for (const char *p = out; (p = strstr(p, marker)) != NULL; p++)
        n++;
    if (n != count)
        fail_msg("'%s' %zu times, want %zu:\n%s", marker, n, count, out);
}

/* Five errors of five kinds in one file: all five reported in one run,
 * each at its line, with suggestions for the mistyped names. */
static void test_every_error_at_once(void **state)
{
    (void)state;
    struct site s;
    char out[16384];
    int rc = load_capturing(fx("bad-five.yaml"), &s, out, sizeof out);
    assert_int_equal(rc, CH_ECONFIG);
    static const char *const want[] = {
        "bad-five.yaml:11:11: error: key 'baud': '14400' is not one of",
        "bad-five.yaml:17:5: error: key 'topics' does not apply to type 'modbus-tcp'",
        "bad-five.yaml:23:5: error: unknown key 'intervall' (did you mean 'interval'?)",
        "bad-five.yaml:28:14: error: key 'profile': unknown profile 'co2-s8x' (did you mean "
        "'co2-s8'?",
        "bad-five.yaml:30:10: error: key 'bus': no bus with id 'lan2' (did you mean 'lan'?)",
    };
    expect_reported(out, want, sizeof want / sizeof want[0], ": error: ", 5);
}

/* Registers read twice are refused, each at its line; different bits of
 * one u16 and the same address under another function code are not. */
static void test_overlapping_registers(void **state)
{
    (void)state;
    struct site s;
    char out[16384];
    assert_int_equal(load_capturing(fx("bad-overlap.yaml"), &s, out, sizeof out), CH_ECONFIG);
    static const char *const want[] = {
        "overlap.yaml:7:37: error: key 'address': u16 at 11 (fc 3) overlaps 'energy' (u32 at "
        "10)",
        "overlap.yaml:9:39: error: key 'address': u16 at 20 (fc 3) overlaps 'co2' (u16 at 20)",
    };
    /* and no more: lines 10-13 (bits 0 and 1 of register 30, fc 4 at 10) */
    expect_reported(out, want, sizeof want / sizeof want[0], " overlaps ", 2);
}

/* The core never asks what kind of bus or profile it handles: no BUS_ or
 * PROTO_ constant in edge/ (the drivers' tables say it). */
static void test_core_has_no_driver_kinds(void **state)
{
    (void)state;
    const char *src = getenv("CAREHUB_SRC");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/edge", src ? src : ".");
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    size_t files = 0;
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (n < 3 || (strcmp(de->d_name + n - 2, ".c") && strcmp(de->d_name + n - 2, ".h")))
            continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "r");
        assert_non_null(f);
        char line[4096];
        for (int no = 1; fgets(line, sizeof line, f); no++)
            if (strstr(line, "BUS_") || strstr(line, "PROTO_"))
                fail_msg("%s:%d names a driver's kind: %s", path, no, line);
        fclose(f);
        files++;
    }
    closedir(d);
    assert_true(files > 10);
}

/* The JSON Schema's bus variants are the drivers' tables: per type, the
 * same keys (with those every bus has) and the same required ones. */
static void test_schema_bus_variants(void **state)
{
    (void)state;
    char path[4096];
    const char *src = getenv("CAREHUB_SRC");
    snprintf(path, sizeof path, "%s/schemas/site-config.schema.json", src ? src : ".");
    json_error_t jerr;
    json_t *schema = json_load_file(path, 0, &jerr);
    if (!schema)
        fail_msg("%s: %s", path, jerr.text);
    json_t *buses = json_object_get(json_object_get(schema, "properties"), "buses");
    json_t *variants = json_object_get(json_object_get(buses, "items"), "oneOf");
    assert_true(json_is_array(variants));
    driver_types_init();
    size_t ntypes = 0;
    for (const struct cfg_variant *v = driver_bus_variants; v->keys; v++, ntypes++) {
        const char *name = cfg_enum_name(driver_bus_type_names, v->value);
        json_t *var = NULL, *it;
        size_t i;
        json_array_foreach(variants, i, it)
        {
            const char *t = json_string_value(json_object_get(
                json_object_get(json_object_get(it, "properties"), "type"), "const"));
            if (t && !strcmp(t, name))
                var = it;
        }
        if (!var)
            fail_msg("schema: no variant for bus type %s", name);
        json_t *props = json_object_get(var, "properties"), *req = json_object_get(var, "required");
        size_t nkeys = 0, nreq = 0;
        for (const struct cfg_key *k = site_bus_keys; k->key; k++, nkeys++)
            if (!json_object_get(props, k->key))
                fail_msg("schema: %s lacks %s", name, k->key);
        for (const struct cfg_key *k = v->keys; k->key; k++, nkeys++) {
            if (!json_object_get(props, k->key))
                fail_msg("schema: %s lacks %s", name, k->key);
            bool in_req = false;
            json_t *r;
            size_t j;
            json_array_foreach(req, j, r) in_req |= !strcmp(json_string_value(r), k->key);
            if (in_req != k->required)
                fail_msg("schema: %s: %s required %d, the driver says %d", name, k->key, in_req,
                         k->required);
            nreq += k->required;
        }
        if (json_object_size(props) != nkeys)
            fail_msg("schema: %s has %zu keys, the driver %zu", name, json_object_size(props),
                     nkeys);
        assert_int_equal(json_array_size(req), nreq + 2); /* and id, type */
    }
    assert_int_equal(json_array_size(variants), ntypes);
    json_decref(schema);
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
        cmocka_unit_test(test_alarm_sections),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_every_error_at_once),
        cmocka_unit_test(test_overlapping_registers),
        cmocka_unit_test(test_schema_bus_variants),
        cmocka_unit_test(test_core_has_no_driver_kinds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
