/* The site registry: quotas on both sides of the limit, inventories from
 * births (newer only; a will changes nothing; devices left out kept for the
 * grace, then refused; max_devices), the allowance before a birth, and the
 * operator's file (unregistered gateways, devices that births do not
 * change, a bad file refused whole and a reload keeping the previous one). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "codec.h"
#include "hubcfg.h"
#include "err.h"
#include "log.h"
#include "registry.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct hubcfg_ingest cfg_default(void)
{
    return (struct hubcfg_ingest){.rate = 100,
                                  .burst = 1000,
                                  .max_devices = 100,
                                  .devices_before_birth = 2,
                                  .inventory_grace_ms = 3600000};
}

/* A birth of site/gw at ts declaring the ids (NULL-terminated). */
static void birth(struct registry *r, const char *gw, int64_t ts, const char *const *ids)
{
    struct ch_status s = {.online = true, .ts_ms = ts};
    strcpy(s.site, "s");
    ch_strlcpy(s.gateway, gw, sizeof s.gateway);
    size_t n = 0;
    while (ids[n])
        n++;
    s.devices = ch_xcalloc(n + 1, sizeof *s.devices);
    for (size_t i = 0; i < n; i++)
        ch_strlcpy(s.devices[i].id, ids[i], sizeof s.devices[i].id);
    s.n_devices = n;
    registry_status(r, &s);
    free(s.devices);
}

/* The verdict on one reading of device from s/gw. */
static int verdict(struct registry *r, const char *gw, const char *device)
{
    struct ch_reading rd = {0};
    ch_strlcpy(rd.device, device, sizeof rd.device);
    struct ch_telemetry t = {.n_readings = 1, .readings = &rd};
    strcpy(t.site, "s");
    ch_strlcpy(t.gateway, gw, sizeof t.gateway);
    uint8_t v = 0xff;
    registry_check(r, &t, &v);
    return v;
}

/* n readings charged to s/gw (devices that pass: its own id). */
static void charge(struct registry *r, const char *gw, size_t n)
{
    struct ch_reading *rd = ch_xcalloc(n, sizeof *rd);
    for (size_t i = 0; i < n; i++)
        ch_strlcpy(rd[i].device, gw, sizeof rd[i].device);
    struct ch_telemetry t = {.n_readings = n, .readings = rd};
    strcpy(t.site, "s");
    ch_strlcpy(t.gateway, gw, sizeof t.gateway);
    uint8_t *v = ch_xcalloc(n, 1);
    registry_check(r, &t, v);
    free(v);
    free(rd);
}

/* A message is admitted while the bucket holds a reading; it may take the
 * bucket below zero, and the gateway then waits for the refill at `rate`.
 * Gateways have a bucket each. */
static void test_quota(void **state)
{
    (void)state;
    struct hubcfg_ingest c = cfg_default(); /* 100/s, burst 1000 */
    struct registry *r = registry_new(&c);
    int64_t t = ch_mono_ms() + 1000; /* the buckets start full before it */
    assert_int_equal(registry_admit(r, "s", "g", t), REGISTRY_ADMIT);
    charge(r, "g", 5000); /* one big message: admitted whole, 4000 below */
    assert_int_equal(registry_admit(r, "s", "g", t), REGISTRY_SHED);
    assert_int_equal(registry_admit(r, "s", "g", t + 40000), REGISTRY_SHED);  /* 0 */
    assert_int_equal(registry_admit(r, "s", "h", t), REGISTRY_ADMIT);         /* its own */
    assert_int_equal(registry_admit(r, "s", "g", t + 40010), REGISTRY_ADMIT); /* 1 */
    charge(r, "g", 1);
    assert_int_equal(registry_admit(r, "s", "g", t + 40010), REGISTRY_SHED);
    /* a long quiet time refills to the burst, no more */
    assert_int_equal(registry_admit(r, "s", "g", t + 10000000), REGISTRY_ADMIT);
    charge(r, "g", 1000);
    assert_int_equal(registry_admit(r, "s", "g", t + 10000000), REGISTRY_SHED);
    struct registry_stats st;
    registry_stats(r, &st);
    assert_int_equal(st.messages_shed, 4);
    assert_int_equal(st.gateways_shedding, 1);
    assert_int_equal(st.gateways, 2);
    registry_free(r);
}

/* Before a birth, the first devices_before_birth devices pass and the rest
 * wait; the gateway's own id always passes. A birth declares the inventory:
 * undeclared devices are refused from then on. An older birth (a retained
 * one replayed) and a will change nothing. */
static void test_inventory(void **state)
{
    (void)state;
    struct hubcfg_ingest c = cfg_default();
    struct registry *r = registry_new(&c);
    assert_int_equal(verdict(r, "g", "x"), REGISTRY_ACCEPT); /* no entry yet: created by admit */
    assert_int_equal(registry_admit(r, "s", "g", ch_mono_ms()), REGISTRY_ADMIT);
    assert_int_equal(verdict(r, "g", "x"), REGISTRY_ACCEPT);
    assert_int_equal(verdict(r, "g", "y"), REGISTRY_ACCEPT);
    assert_int_equal(verdict(r, "g", "z"), REGISTRY_DEFER); /* the third */
    assert_int_equal(verdict(r, "g", "x"), REGISTRY_ACCEPT);
    assert_int_equal(verdict(r, "g", "g"), REGISTRY_ACCEPT);
    birth(r, "g", 1000, (const char *[]){"a", "z", "a", "bad id", NULL});
    assert_int_equal(verdict(r, "g", "z"), REGISTRY_ACCEPT);
    assert_int_equal(verdict(r, "g", "a"), REGISTRY_ACCEPT);
    assert_int_equal(verdict(r, "g", "x"), REGISTRY_REFUSE); /* let through before, not declared */
    assert_int_equal(verdict(r, "g", "g"), REGISTRY_ACCEPT);
    birth(r, "g", 999, (const char *[]){"x", NULL}); /* older: ignored */
    assert_int_equal(verdict(r, "g", "x"), REGISTRY_REFUSE);
    struct ch_status will = {.online = false};
    strcpy(will.site, "s");
    strcpy(will.gateway, "g");
    registry_status(r, &will);
    assert_int_equal(verdict(r, "g", "a"), REGISTRY_ACCEPT);
    struct registry_stats st;
    registry_stats(r, &st);
    assert_int_equal(st.readings_refused, 2);
    assert_int_equal(st.readings_deferred, 1);
    /* many refused devices: counted, each verdict the same */
    for (int i = 0; i < 3 * REGISTRY_LOG_DEVICES; i++) {
        char id[16];
        snprintf(id, sizeof id, "inv-%d", i);
        assert_int_equal(verdict(r, "g", id), REGISTRY_REFUSE);
    }
    registry_stats(r, &st);
    assert_int_equal(st.readings_refused, 2 + 3 * REGISTRY_LOG_DEVICES);
    registry_free(r);
}

/* A device a newer birth leaves out stays declared for inventory_grace
 * (a reloaded gateway's backlog), then is refused; with no grace, at once.
 * At most max_devices: the newest birth's first. */
static void test_grace_and_cap(void **state)
{
    (void)state;
    struct hubcfg_ingest c = cfg_default();
    c.inventory_grace_ms = 150;
    c.max_devices = 3;
    struct registry *r = registry_new(&c);
    birth(r, "g", 1, (const char *[]){"a", "b", NULL});
    birth(r, "g", 2, (const char *[]){"c", NULL});
    assert_int_equal(verdict(r, "g", "a"), REGISTRY_ACCEPT); /* left, within the grace */
    assert_int_equal(verdict(r, "g", "c"), REGISTRY_ACCEPT);
    birth(r, "g", 3, (const char *[]){"c", "d", NULL}); /* room for one of a, b */
    int kept =
        (verdict(r, "g", "a") == REGISTRY_ACCEPT) + (verdict(r, "g", "b") == REGISTRY_ACCEPT);
    assert_int_equal(kept, 1);
    ch_sleep_ms(200);
    assert_int_equal(verdict(r, "g", "a"), REGISTRY_REFUSE);
    assert_int_equal(verdict(r, "g", "b"), REGISTRY_REFUSE);
    assert_int_equal(verdict(r, "g", "d"), REGISTRY_ACCEPT);
    /* a birth of more than max_devices: the first three (in id order) */
    birth(r, "g", 4, (const char *[]){"e", "f", "h", "i", NULL});
    assert_int_equal(verdict(r, "g", "e"), REGISTRY_ACCEPT);
    assert_int_equal(verdict(r, "g", "h"), REGISTRY_ACCEPT);
    assert_int_equal(verdict(r, "g", "i"), REGISTRY_REFUSE);
    assert_int_equal(verdict(r, "g", "c"), REGISTRY_REFUSE); /* no room left for the grace */
    registry_free(r);
    c.inventory_grace_ms = 0;
    c.max_devices = 100;
    r = registry_new(&c);
    birth(r, "g", 1, (const char *[]){"a", NULL});
    birth(r, "g", 2, (const char *[]){"b", NULL});
    assert_int_equal(verdict(r, "g", "a"), REGISTRY_REFUSE);
    registry_free(r);
}

static char *write_file(const char *text)
{
    char *path = ch_xstrdup("/tmp/test_registry.XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

/* The operator's file: unlisted gateways are not admitted; a listed device
 * list is the inventory whatever births say; a bad file is refused whole
 * (every error reported) and a reload with one keeps the previous file. */
static void test_file(void **state)
{
    (void)state;
    struct hubcfg_ingest c = cfg_default();
    char *bad = write_file("gateways:\n"
                           "  - {site: s, gateway: g, devices: [a, 'b c']}\n"
                           "  - {site: s, gateway: g}\n"
                           "  - {site: s, gatway: h}\n");
    c.registry = bad;
    assert_null(registry_new(&c));
    char *good = write_file("gateways:\n"
                            "  - {site: s, gateway: g, devices: [a, b]}\n"
                            "  - {site: s, gateway: h}\n");
    c.registry = good;
    struct registry *r = registry_new(&c);
    assert_non_null(r);
    int64_t t = ch_mono_ms();
    assert_int_equal(registry_admit(r, "s", "g", t), REGISTRY_ADMIT);
    assert_int_equal(registry_admit(r, "s", "h", t), REGISTRY_ADMIT);
    assert_int_equal(registry_admit(r, "s", "x", t), REGISTRY_UNREGISTERED);
    assert_int_equal(registry_admit(r, "t", "g", t), REGISTRY_UNREGISTERED);
    assert_int_equal(verdict(r, "g", "a"), REGISTRY_ACCEPT); /* the file: no birth needed */
    assert_int_equal(verdict(r, "g", "c"), REGISTRY_REFUSE);
    birth(r, "g", 5, (const char *[]){"c", NULL}); /* the file's devices stand */
    assert_int_equal(verdict(r, "g", "c"), REGISTRY_REFUSE);
    birth(r, "h", 5, (const char *[]){"c", NULL}); /* listed without devices: its birth */
    assert_int_equal(verdict(r, "h", "c"), REGISTRY_ACCEPT);
    assert_int_equal(registry_load_file(r, bad), CH_ECONFIG);
    assert_int_equal(registry_admit(r, "s", "x", t), REGISTRY_UNREGISTERED); /* unchanged */
    char *more = write_file("gateways:\n  - {site: s, gateway: x}\n");
    assert_int_equal(registry_load_file(r, more), 0);
    assert_int_equal(registry_admit(r, "s", "x", t), REGISTRY_ADMIT);
    assert_int_equal(registry_admit(r, "s", "h", t), REGISTRY_UNREGISTERED);
    struct registry_stats st;
    registry_stats(r, &st);
    assert_int_equal(st.messages_unregistered, 4);
    registry_free(r);
    unlink(bad);
    unlink(good);
    unlink(more);
    free(bad);
    free(good);
    free(more);
}

int main(void)
{
    log_set_level(LOGL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quota),
        cmocka_unit_test(test_inventory),
        cmocka_unit_test(test_grace_and_cap),
        cmocka_unit_test(test_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
