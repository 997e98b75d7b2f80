/* care-sim's care home (sim_home.h): the home's config, residents' daily
 * pattern and walks through adjacent zones, RSSI by zone, a bracelet taken
 * off or flat, a silent receiver, Wi-Fi bed JSON, and what the receivers
 * publish read back by care-edge's own adapters (drivers/ble/ble_rx_*.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ble_adv.h"
#include "ble_rx.h"
#include "err.h"
#include "sim_config.h"
#include "sim_home.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *home_yaml =
    "seed: 3\n"
    "utc_offset_min: 0\n"
    "mqtt: {broker: 'tcp://127.0.0.1:1883'}\n"
    "zones:\n"
    "  - {id: room-1, adjacent: [corridor]}\n"
    "  - {id: corridor, adjacent: [dining, exit]}\n"
    "  - {id: dining}\n"
    "  - {id: exit}\n"
    "  - {id: garden, adjacent: [dining]}\n"
    "routine: {dining: dining, walk: [garden]}\n"
    "receivers:\n"
    "  - {id: gw-room, format: omg, zone: room-1}\n"
    "  - {id: AC233FA00001, format: minew, zone: corridor}\n"
    "  - {id: AC233FA00002, format: ingics, zone: exit}\n"
    "  - {id: gw-garden, format: omg, zone: garden}\n"
    "wearables:\n"
    "  - {mac: 'C3:00:00:00:00:01', resident: ann, home: room-1, interval: 1s}\n"
    "  - {mac: 'C3:00:00:00:00:02', resident: bob, home: room-1, battery: 30}\n"
    "wifi_beds:\n"
    "  - {name: bed-1, topic: beds/1, resident: ann, interval: 2s}\n"
    "scenario:\n"
    "  - {at: 10s, wearable: ann, walk: {to: exit, over: 30s}}\n"
    "  - {at: 100s, wearable: ann, set: {metric: worn, value: 0}}\n"
    "  - {at: 5s, wearable: bob, set: {metric: battery, ramp_to: 0, over: 10s}}\n"
    "  - {at: 5s, wearable: 'C3:00:00:00:00:02', set: {metric: sos, pulse: 1, for: 2s}}\n"
    "  - {at: 20s, receiver: gw-room, fault: silent}\n"
    "  - {at: 7s, wifi_bed: bed-1, set: {metric: in_bed, value: 0}}\n";

/* 2026-11-23 00:00 UTC: a day start, so scenario time is time of day */
#define DAY0 1795392000000LL
#define H    3600000LL

static char *write_tmp(const char *text)
{
    char *path = strdup("/tmp/test_sim_home_XXXXXX.yaml");
    int fd = mkstemps(path, 5);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void load(const char *yaml, struct sim_config *c)
{
    char *p = write_tmp(yaml);
    assert_int_equal(sim_config_load(p, NULL, false, c), 0);
    unlink(p);
    free(p);
}

static size_t zone_id(const struct sim_config *c, const char *id)
{
    for (size_t i = 0; i < c->nzones; i++)
        if (strcmp(c->zones[i].id, id) == 0)
            return i;
    fail_msg("no zone %s", id);
    return 0;
}

static void test_config(void **state)
{
    (void)state;
    struct sim_config c;
    load(home_yaml, &c);
    assert_int_equal(c.nzones, 5);
    assert_int_equal(c.nreceivers, 4);
    assert_int_equal(c.nwearables, 2);
    assert_int_equal(c.nwifi_beds, 1);
    assert_int_equal(c.nevents, 6);
    /* adjacency is symmetric */
    assert_true(c.zones[zone_id(&c, "dining")].adjacent[zone_id(&c, "corridor")]);
    assert_false(c.zones[zone_id(&c, "room-1")].adjacent[zone_id(&c, "exit")]);
    assert_string_equal(c.receivers[0].topic, "home/gw-room/BTtoMQTT");
    assert_string_equal(c.receivers[1].topic, "gw/AC233FA00001/status");
    assert_int_equal(c.wearables[0].bed, 0); /* ann sleeps in bed-1 */
    assert_int_equal(c.wearables[1].bed, -1);
    /* sorted by time; the resident and the MAC name the same wearable (bob) */
    assert_int_equal(c.events[0].target, SIM_TARGET_WEARABLE);
    assert_int_equal(c.events[0].slave, 1);
    assert_int_equal(c.events[1].target, SIM_TARGET_WEARABLE);
    assert_int_equal(c.events[1].slave, 1);
    assert_int_equal(c.events[2].target, SIM_TARGET_WIFI_BED);
    sim_config_free(&c);
}

static int load_capturing(const char *yaml, char *buf, size_t n)
{
    char *p = write_tmp(yaml);
    char cap[] = "/tmp/test_sim_home_err_XXXXXX";
    int fd = mkstemp(cap);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    struct sim_config c;
    int rc = sim_config_load(p, NULL, false, &c);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    ssize_t got = pread(fd, buf, n - 1, 0);
    buf[got > 0 ? got : 0] = '\0';
    close(fd);
    unlink(cap);
    sim_config_free(&c);
    unlink(p);
    free(p);
    return rc;
}

static void test_bad_configs(void **state)
{
    (void)state;
    static const char *const base = "mqtt: {broker: 'tcp://127.0.0.1:1883'}\n"
                                    "zones: [{id: a, adjacent: [b]}, {id: b}]\n";
    static const struct {
        const char *yaml, *says;
    } bad[] = {
        {"receivers: [{id: gw-1, format: ingics, zone: a}]\n", "named by its MAC"},
        {"receivers: [{id: gw-1, format: omg, zone: c}]\n", "no zone has id 'c'"},
        {"wearables: [{mac: nope, resident: x, home: a}]\n", "is not a MAC"},
        {"wearables: [{mac: 'C3:00:00:00:00:01', resident: x, home: a}]\n"
         "scenario: [{at: 1s, wearable: x, walk: {to: z}}]\n",
         "no zone has id 'z'"},
        {"wearables: [{mac: 'C3:00:00:00:00:01', resident: x, home: a}]\n"
         "scenario: [{at: 1s, wearable: x, set: {metric: co2, value: 1}}]\n",
         "a wearable has no metric 'co2'"},
        {"wearables: [{mac: 'C3:00:00:00:00:01', resident: x, home: a}]\n"
         "scenario: [{at: 1s, wearable: x, fault: silent}]\n",
         "exactly one of 'set' or 'walk'"},
        {"receivers: [{id: gw-1, format: omg, zone: a}]\n"
         "scenario: [{at: 1s, receiver: gw-1, fault: garbage}]\n",
         "can be 'silent' or 'none'"},
        {"wearables: [{mac: 'C3:00:00:00:00:01', resident: x, home: a}]\n"
         "scenario: [{at: 1s, wearable: y, set: {metric: sos, value: 1}}]\n",
         "no wearable has the resident or MAC 'y'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char yaml[1024], report[4096];
        snprintf(yaml, sizeof yaml, "%s%s", base, bad[i].yaml);
        int rc = load_capturing(yaml, report, sizeof report);
        if (rc != CH_ECONFIG || !strstr(report, bad[i].says))
            fail_msg("bad config %zu (rc %d) does not say \"%s\":\n%s", i, rc, bad[i].says, report);
    }
    char report[4096];
    assert_int_equal(load_capturing("wearables: [{mac: 'C3:00:00:00:00:01', resident: x, home: "
                                    "a}]\nzones: [{id: a}]\n",
                                    report, sizeof report),
                     CH_ECONFIG);
    assert_non_null(strstr(report, "publish over MQTT"));
    assert_int_equal(load_capturing("mqtt: {broker: 'tcp://192.0.2.1:1883'}\nzones: [{id: a}]\n"
                                    "receivers: [{id: r, format: omg, zone: a}]\n",
                                    report, sizeof report),
                     CH_ECONFIG);
    assert_non_null(strstr(report, "not a loopback address"));
}

static void test_daily_pattern(void **state)
{
    (void)state;
    struct sim_config c;
    load(home_yaml, &c);
    struct sim_home *h = sim_home_new(&c);
    size_t room = zone_id(&c, "room-1"), dining = zone_id(&c, "dining");
    for (int day = 0; day < 5; day++) {
        int64_t d = DAY0 + day * 24 * H;
        /* asleep in their room at 04:00, at lunch at 12:00 (meals start
         * 11:30-11:50 and last 40 min; the nap starts at 12:15 at the earliest) */
        assert_int_equal(sim_home_routine_zone(h, 0, d + 4 * H), room);
        assert_int_equal(sim_home_routine_zone(h, 1, d + 4 * H), room);
        assert_int_equal(sim_home_routine_zone(h, 0, d + 12 * H), dining);
        assert_int_equal(sim_home_routine_zone(h, 1, d + 12 * H), dining);
    }
    /* over a day each resident visits the dining room, the garden and passes
     * the corridor on the way (room-1 and dining are not adjacent) */
    bool seen[SIM_MAX_ZONES] = {false};
    for (int64_t t = DAY0; t < DAY0 + 24 * H; t += 30000)
        seen[sim_home_routine_zone(h, 0, t)] = true;
    assert_true(seen[room] && seen[dining] && seen[zone_id(&c, "corridor")] &&
                seen[zone_id(&c, "garden")]);
    assert_false(seen[zone_id(&c, "exit")]);
    /* deterministic: the same seed, the same day */
    struct sim_home *h2 = sim_home_new(&c);
    for (int64_t t = DAY0; t < DAY0 + 24 * H; t += 61000)
        assert_int_equal(sim_home_routine_zone(h, 0, t), sim_home_routine_zone(h2, 0, t));
    sim_home_free(h2);
    sim_home_free(h);
    sim_config_free(&c);
}

static void test_walk_and_worn(void **state)
{
    (void)state;
    struct sim_config c;
    load(home_yaml, &c);
    struct sim_home *h = sim_home_new(&c);
    int64_t start = DAY0 + 4 * H; /* asleep: the walk starts in room-1 */
    size_t room = zone_id(&c, "room-1"), corr = zone_id(&c, "corridor"), exit = zone_id(&c, "exit");
    /* room-1 -> corridor -> exit over 30 s from 10 s: 15 s a zone */
    assert_int_equal(sim_home_zone(h, 0, start, 9999), room);
    assert_int_equal(sim_home_zone(h, 0, start, 24999), room);
    assert_int_equal(sim_home_zone(h, 0, start, 25000), corr);
    assert_int_equal(sim_home_zone(h, 0, start, 39999), corr);
    assert_int_equal(sim_home_zone(h, 0, start, 40000), exit);
    assert_int_equal(sim_home_zone(h, 0, start, 99000), exit);
    double v[SIM_WEAR_METRICS];
    sim_home_wearable_values(h, 0, start, 99000, v);
    assert_true(v[SIM_WEAR_WORN] == 1.0 && v[SIM_WEAR_HR] > 40 && v[SIM_WEAR_BATTERY] == 90);
    /* taken off at 100 s: no pulse, and it lies at the exit */
    sim_home_wearable_values(h, 0, start, 200000, v);
    assert_true(v[SIM_WEAR_WORN] == 0.0 && v[SIM_WEAR_HR] == 0.0);
    assert_int_equal(sim_home_zone(h, 0, start, 200000), exit);
    /* bob: SOS for 2 s, battery ramping to 0 */
    sim_home_wearable_values(h, 1, start, 6000, v);
    assert_true(v[SIM_WEAR_SOS] == 1.0 && v[SIM_WEAR_BATTERY] < 30 && v[SIM_WEAR_BATTERY] > 20);
    uint8_t mfr[5];
    sim_home_mfr_data(v, mfr);
    assert_int_equal(mfr[0], 0xFF);
    assert_int_equal(mfr[1], 0xFF);
    assert_int_equal(mfr[3], 0x05); /* SOS, worn */
    sim_home_wearable_values(h, 1, start, 8000, v);
    assert_true(v[SIM_WEAR_SOS] == 0.0);
    sim_home_free(h);
    sim_config_free(&c);
}

static void test_rssi_by_zone(void **state)
{
    (void)state;
    struct sim_config c;
    load(home_yaml, &c);
    struct sim_home *h = sim_home_new(&c);
    size_t room = zone_id(&c, "room-1");
    int heard_adj = 0;
    for (uint64_t k = 0; k < 200; k++) {
        int rssi;
        assert_true(sim_home_rssi(h, 0, 0, room, k, &rssi)); /* same zone: always */
        assert_true(rssi >= SIM_RSSI_SAME - 4 && rssi <= SIM_RSSI_SAME + 4);
        if (sim_home_rssi(h, 0, 1, room, k, &rssi)) { /* corridor: adjacent */
            heard_adj++;
            assert_true(rssi >= SIM_RSSI_ADJACENT - 4 && rssi <= SIM_RSSI_ADJACENT + 4);
        }
        assert_false(sim_home_rssi(h, 0, 2, room, k, &rssi)); /* exit: two zones away */
        assert_false(sim_home_rssi(h, 0, 3, room, k, &rssi)); /* garden */
    }
    assert_true(heard_adj > 150 && heard_adj < 200); /* about one in ten missed */
    int a, b;
    assert_true(sim_home_rssi(h, 0, 0, room, 7, &a) && sim_home_rssi(h, 0, 0, room, 7, &b));
    assert_int_equal(a, b);
    sim_home_free(h);
    sim_config_free(&c);
}

/* What the receivers publish, read back with care-edge's adapters. */
struct capture {
    int advs[3];   /* by format: adapter deliveries */
    int room_msgs; /* messages from gw-room */
    int bed_msgs;  /* on beds/1 */
    char bed_last[256];
    int bad_mfr;
    int64_t at_ms;
};

static void on_adv(void *arg, const struct ble_adv *a)
{
    struct capture *cap = arg;
    const uint8_t *d;
    size_t dl;
    uint8_t type;
    size_t pos = 0;
    bool found = false;
    while (ble_ad_next(a->data, a->len, &pos, &type, &d, &dl) > 0)
        if (type == 0xFF && dl == 5 && d[0] == 0xFF && d[1] == 0xFF)
            found = true;
    if (!found || a->mac[0] != 0xC3 || a->rssi > -40 || a->rssi < -90)
        cap->bad_mfr++;
}

static void on_publish(void *ctx, const char *topic, const void *payload, size_t len)
{
    struct capture *cap = ctx;
    enum ble_rx_format f;
    if (strncmp(topic, "home/", 5) == 0)
        f = BLE_RX_OMG;
    else if (strncmp(topic, "gw/", 3) == 0)
        f = BLE_RX_MINEW;
    else if (strncmp(topic, "ingics/", 7) == 0)
        f = BLE_RX_INGICS;
    else {
        assert_string_equal(topic, "beds/1");
        cap->bed_msgs++;
        snprintf(cap->bed_last, sizeof cap->bed_last, "%.*s", (int)len, (const char *)payload);
        return;
    }
    if (strncmp(topic, "home/gw-room/", 13) == 0)
        cap->room_msgs++;
    struct ble_rx_stats st = {0};
    int n = ble_rx_parse(f, topic, payload, len, 0, &st, on_adv, cap);
    if (n <= 0)
        fail_msg("%s rejected: %.*s (%s)", topic, (int)len, (const char *)payload, st.last_error);
    cap->advs[f] += n;
}

static void test_publish_round_trip(void **state)
{
    (void)state;
    struct sim_config c;
    load(home_yaml, &c);
    struct sim_home *h = sim_home_new(&c);
    struct capture cap = {0};
    int64_t start = DAY0 + 4 * H, mono = 1000000;
    /* 60 s of scenario time in 100 ms steps: ann walks through every format */
    int room_before = 0;
    for (int64_t at = 0; at <= 60000; at += 100) {
        sim_home_step(h, mono + at, start, at, on_publish, &cap);
        if (at == 19900)
            room_before = cap.room_msgs;
    }
    assert_true(cap.advs[BLE_RX_OMG] > 20);
    assert_true(cap.advs[BLE_RX_MINEW] > 20);
    assert_true(cap.advs[BLE_RX_INGICS] > 5); /* only ann, once she is near the exit */
    assert_int_equal(cap.bad_mfr, 0);
    /* gw-room silent from 20 s: bob is in room-1 but nothing more from it */
    assert_true(room_before > 10);
    assert_int_equal(cap.room_msgs, room_before);
    /* bed-1 every 2 s; empty since 7 s */
    assert_true(cap.bed_msgs >= 29 && cap.bed_msgs <= 31);
    assert_non_null(strstr(cap.bed_last, "\"bed\":{\"occupied\":false}"));
    assert_non_null(strstr(cap.bed_last, "\"heart\":0"));
    /* bob went flat at 15 s: no advertisements from him since */
    const struct sim_home_stats *st = sim_home_stats(h);
    assert_true(st->advs < 61 + 16 && st->advs > 61 + 10);
    sim_home_free(h);
    sim_config_free(&c);
}

static void test_bed_json(void **state)
{
    (void)state;
    struct sim_config c;
    load(home_yaml, &c);
    struct sim_home *h = sim_home_new(&c);
    char buf[256];
    int64_t start = DAY0 + 4 * H;
    assert_true(sim_home_bed_json(h, 0, start, 1000, buf, sizeof buf) > 0);
    int heart, breath, motion;
    assert_int_equal(sscanf(buf,
                            "{\"bed\":{\"occupied\":true},\"vitals\":{\"heart\":%d,\"breath\":%d},"
                            "\"motion\":%d,\"presence\":true}",
                            &heart, &breath, &motion),
                     3);
    assert_true(heart > 40 && heart < 100 && breath > 5 && breath < 30);
    sim_home_free(h);
    sim_config_free(&c);
}

static void test_shipped_care_day_loads(void **state)
{
    (void)state;
    const char *src = getenv("CAREHUB_SRC");
    if (!src)
        skip();
    static const char *const files[][2] = {
        {"care-day.yaml", NULL},
        {"care-day.yaml", "care-day-demo.yaml"},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char a[512], b[512];
        snprintf(a, sizeof a, "%s/deploy/sim/%s", src, files[i][0]);
        if (files[i][1])
            snprintf(b, sizeof b, "%s/deploy/sim/%s", src, files[i][1]);
        struct sim_config c;
        if (sim_config_load(a, files[i][1] ? b : NULL, false, &c) != 0)
            fail_msg("%s %s does not load", files[i][0], files[i][1] ? files[i][1] : "");
        assert_true(c.nwearables > 0 && c.nreceivers > 0 && c.nwifi_beds > 0);
        sim_config_free(&c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),        cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_daily_pattern), cmocka_unit_test(test_walk_and_worn),
        cmocka_unit_test(test_rssi_by_zone),  cmocka_unit_test(test_publish_round_trip),
        cmocka_unit_test(test_bed_json),      cmocka_unit_test(test_shipped_care_day_loads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
