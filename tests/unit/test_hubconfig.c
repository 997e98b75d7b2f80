/* care-hub's configuration: the spool section and the dead letter, their
 * defaults and paths (relative to the file), the keys that are gone, and the
 * ingest section (quotas, inventories, queues) on both sides of its limits. */
#include "hubcfg.h"
#include "err.h"

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

#define HEAD                                                                                       \
    "mqtt:\n  broker: tcp://127.0.0.1:1883\n  client_id: hub-1\n"                                  \
    "influx:\n  url: http://127.0.0.1:8086\n  database: carehub\n"

struct fx {
    char dir[64];
    char path[96];
    char err[4096];
    struct hubcfg c;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/test_hubconfig.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/hub.yaml", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* Writes text to the fixture's file and loads it with stderr captured. */
static int load(struct fx *f, const char *text)
{
    FILE *fp = fopen(f->path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
    struct capture cap = {-1, -1};
    assert_int_equal(capture_begin(&cap), 0);
    int rc = hubcfg_load(f->path, &f->c);
    capture_end(&cap, f->err, sizeof f->err);
    return rc;
}

static void test_defaults(void **state)
{
    struct fx *f = *state;
    assert_int_equal(load(f, HEAD), 0);
    assert_string_equal(f->c.spool.dir, "/var/lib/carehub/hub-spool");
    assert_int_equal(f->c.spool.max_bytes, 1073741824);
    assert_int_equal(f->c.spool.commit_interval_ms, 1000);
    assert_string_equal(f->c.influx.dead_letter, "/var/lib/carehub/dead-letter.lp");
    hubcfg_free(&f->c);
}

/* Paths are relative to the file; the dead letter defaults to the spool
 * directory's parent. */
static void test_relative_paths(void **state)
{
    struct fx *f = *state;
    char want[160];
    assert_int_equal(load(f, HEAD "spool:\n  dir: hub-spool/\n  max_bytes: 1048576\n"
                                  "  commit_interval: 200ms\n"),
                     0);
    snprintf(want, sizeof want, "%s/hub-spool/", f->dir);
    assert_string_equal(f->c.spool.dir, want);
    snprintf(want, sizeof want, "%s/dead-letter.lp", f->dir);
    assert_string_equal(f->c.influx.dead_letter, want);
    assert_int_equal(f->c.spool.commit_interval_ms, 200);
    hubcfg_free(&f->c);

    assert_int_equal(load(f, HEAD "  dead_letter: refused/dl.lp\nspool: {dir: /spool}\n"), 0);
    snprintf(want, sizeof want, "%s/refused/dl.lp", f->dir);
    assert_string_equal(f->c.influx.dead_letter, want);
    hubcfg_free(&f->c);

    assert_int_equal(load(f, HEAD "spool: {dir: /spool}\n"), 0);
    assert_string_equal(f->c.influx.dead_letter, "/dead-letter.lp");
    hubcfg_free(&f->c);
}

/* The in-memory buffer is gone (the spool holds the backlog): its key is an
 * error like any unknown key, and the spool's bound is checked. */
static void test_bad(void **state)
{
    struct fx *f = *state;
    assert_int_equal(load(f, HEAD "  max_buffer: 134217728\n"), CH_ECONFIG);
    assert_non_null(strstr(f->err, "hub.yaml:7:"));
    assert_non_null(strstr(f->err, "max_buffer"));
    assert_int_equal(load(f, HEAD "spool:\n  max_bytes: 1000\n"), CH_ECONFIG);
    assert_non_null(strstr(f->err, "hub.yaml:8:"));
    assert_non_null(strstr(f->err, "max_bytes"));
    assert_int_equal(load(f, HEAD "spool:\n  size: 1\n"), CH_ECONFIG);
    assert_non_null(strstr(f->err, "size"));
}

/* ingest: defaults (every gateway may send 5,000 readings/s; a birth
 * declares up to 2,000 devices), the registry file relative to the file,
 * and each range on both sides. */
static void test_ingest(void **state)
{
    struct fx *f = *state;
    assert_int_equal(load(f, HEAD), 0);
    const struct hubcfg_ingest *g = &f->c.ingest;
    assert_int_equal(g->rate, 5000);
    assert_int_equal(g->burst, 10000);
    assert_int_equal(g->max_devices, 2000);
    assert_int_equal(g->devices_before_birth, 32);
    assert_int_equal(g->inventory_grace_ms, 86400000);
    assert_null(g->registry);
    assert_int_equal(g->queue_bytes, 4194304);
    assert_int_equal(g->queue_max_bytes, 33554432);
    assert_int_equal(g->workers, 1);
    hubcfg_free(&f->c);
    char want[160];
    assert_int_equal(load(f, HEAD "ingest: {registry: reg.yaml, max_devices: 10000, "
                                  "devices_before_birth: 0, inventory_grace: 0s, "
                                  "queue_bytes: 1048576, workers: 16}\n"),
                     0);
    snprintf(want, sizeof want, "%s/reg.yaml", f->dir);
    assert_string_equal(f->c.ingest.registry, want);
    assert_int_equal(f->c.ingest.devices_before_birth, 0);
    hubcfg_free(&f->c);
    static const char *const bad[] = {
        "ingest: {rate: 0}\n",
        "ingest: {max_devices: 10001}\n",
        "ingest: {queue_bytes: 1048575}\n",
        "ingest: {workers: 17}\n",
        "ingest: {burst: 0}\n",
        "ingest: {devices_before_birth: -1}\n",
        "ingest: {quota: 5}\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char text[512];
        snprintf(text, sizeof text, "%s%s", HEAD, bad[i]);
        assert_int_equal(load(f, text), CH_ECONFIG);
        assert_non_null(strstr(f->err, "hub.yaml:7:"));
    }
}

/* influx.retention: off by default; durations in days ("30d"); a day of
 * readings at least, the history at least as long, version 1 only, each
 * error at its line. */
static void test_retention(void **state)
{
    struct fx *f = *state;
    assert_int_equal(load(f, HEAD), 0);
    assert_int_equal(f->c.influx.retention.raw_ms, 0);
    assert_int_equal(f->c.influx.retention.interval_ms, 600000);
    hubcfg_free(&f->c);
    assert_int_equal(load(f, HEAD "  retention: {raw: 30d, hourly: 3650d, interval: 1m}\n"), 0);
    assert_int_equal(f->c.influx.retention.raw_ms, 30 * 86400000LL);
    assert_int_equal(f->c.influx.retention.hourly_ms, 3650 * 86400000LL);
    assert_int_equal(f->c.influx.retention.interval_ms, 60000);
    hubcfg_free(&f->c);
    assert_int_equal(load(f, HEAD "  retention: {raw: 1.5d}\n"), 0);
    assert_int_equal(f->c.influx.retention.raw_ms, 129600000);
    hubcfg_free(&f->c);
    static const char *const bad[][2] = {
        {"  retention: {raw: 23h}\n", "'raw'"},
        {"  retention: {raw: 30d, hourly: 29d}\n", "'hourly'"},
        {"  retention: {hourly: 30d}\n", "'hourly'"},
        {"  retention: {raw: 30x}\n", "raw"},
        {"  retention: {raw: 30d, keep: 1}\n", "keep"},
        {"  retention: {raw: 30d, interval: 0s}\n", "interval"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char text[512];
        snprintf(text, sizeof text, "%s%s", HEAD, bad[i][0]);
        assert_int_equal(load(f, text), CH_ECONFIG);
        assert_non_null(strstr(f->err, "hub.yaml:7:"));
        assert_non_null(strstr(f->err, bad[i][1]));
    }
    assert_int_equal(load(f, "mqtt:\n  broker: tcp://127.0.0.1:1883\n  client_id: hub-1\n"
                             "influx:\n  url: http://127.0.0.1:8086\n  version: 2\n"
                             "  org: o\n  bucket: b\n  token: t\n  retention: {raw: 30d}\n"),
                     CH_ECONFIG);
    assert_non_null(strstr(f->err, "hub.yaml:10:"));
    assert_non_null(strstr(f->err, "version 2"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ingest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relative_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
