/* The pipeline after the adapters: dedup, zone estimation with hysteresis on
 * a scripted walk, liveness (in_range, battery_low, worn), SOS/fall latches,
 * and a receiver message end to end. */
#include "ble_dedup.h"
#include "ble_table.h"
#include "err.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

/* The test wearable: company 0x0D0A; battery, hr, a packet counter, flags
 * (bit 0 SOS, bit 1 fall, bit 2 worn). */
static struct ble_field fields[] = {
    {.metric = "battery", .offset = 0, .type = BLE_F_U8, .scale = 1},
    {.metric = "hr", .offset = 1, .type = BLE_F_U8, .scale = 1},
    {.metric = "seq", .offset = 2, .type = BLE_F_U8, .scale = 1},
    {.metric = "sos", .offset = 3, .type = BLE_F_U8, .mask = 1, .latch = true},
    {.metric = "fall", .offset = 3, .type = BLE_F_U8, .mask = 2, .latch = true},
    {.metric = "worn", .offset = 3, .type = BLE_F_U8, .mask = 4},
};
static struct ble_profile band = {.match = BLE_MATCH_COMPANY,
                                  .company_id = 0x0D0A,
                                  .fields = {fields, sizeof fields / sizeof fields[0]}};

static const uint8_t MAC[6] = {0xAC, 0x23, 0x3F, 0xA0, 0x00, 0x01};

enum { FL_SOS = 1, FL_FALL = 2, FL_WORN = 4 };

static struct ble_adv adv(const char *receiver, int rssi, int seq, int battery, int flags)
{
    struct ble_adv a = {.rssi = (int8_t)rssi};
    strcpy(a.receiver, receiver);
    memcpy(a.mac, MAC, 6);
    const uint8_t d[] = {7, 0xFF, 0x0A, 0x0D, (uint8_t)battery, 72, (uint8_t)seq, (uint8_t)flags};
    memcpy(a.data, d, sizeof d);
    a.len = sizeof d;
    return a;
}

static double value(const struct ble_state *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->m[i].name, name) == 0)
            return s->m[i].value;
    return -999;
}

/* zones: room-101 (R101), room-102 (R102), corridor (C1, C2), exit (E1) */
static struct ble_zones *make_zones(int64_t dwell_ms)
{
    char *r101[] = {"R101"}, *r102[] = {"R102"}, *corr[] = {"C1", "C2"},
         *ex[] = {"AC:23:3F:C0:00:E1"};
    struct ble_zone_cfg zc[] = {
        {.id = "room-101", .receivers = {r101, 1}},
        {.id = "room-102", .receivers = {r102, 1}},
        {.id = "corridor", .receivers = {corr, 2}},
        {.id = "exit-east", .exit = true, .receivers = {ex, 1}},
    };
    struct ble_location_cfg lc = {
        .window_ms = 8000, .margin_db = 6, .dwell_ms = dwell_ms, .zones = {zc, 4}};
    struct ble_zones *z = NULL;
    char err[160];
    assert_int_equal(ble_zones_new(&lc, &z, err, sizeof err), 0);
    return z;
}

static struct ble_table *make_table(struct ble_zones *z)
{
    struct ble_table_opts o = {
        .dedup_window_ms = 1000, .out_of_range_ms = 30000, .battery_low = 20};
    struct ble_table *t = ble_table_new(&o, z);
    char err[160];
    assert_int_equal(ble_profile_prepare(&band, err, sizeof err, NULL), 0);
    assert_int_equal(ble_table_add(t, "wb-101", MAC, &band), 0);
    return t;
}

static void dedup_copies(void **state)
{
    (void)state;
    struct ble_zones *z = make_zones(5000);
    struct ble_table *t = make_table(z);
    /* one advertisement heard by four receivers within 300 ms: one reading */
    struct ble_adv a = adv("R101", -60, 1, 80, FL_WORN);
    assert_int_equal(ble_table_feed(t, &a, 1000), 1);
    const char *rx[] = {"C1", "C2", "AC233FC000E1"};
    for (int i = 0; i < 3; i++) {
        strcpy(a.receiver, rx[i]);
        a.rssi = (int8_t)(-70 - i);
        assert_int_equal(ble_table_feed(t, &a, 1100 + 100 * i), 0);
    }
    /* a new payload inside the window is a new reading; the same payload
     * after the window is one too (the wearable repeats itself) */
    struct ble_adv b = adv("R101", -60, 2, 80, FL_WORN);
    assert_int_equal(ble_table_feed(t, &b, 1500), 1);
    assert_int_equal(ble_table_feed(t, &a, 2100), 1);
    struct ble_table_stats st;
    ble_table_stats(t, &st);
    assert_int_equal(st.readings, 3);
    assert_int_equal(st.duplicates, 3);
    assert_int_equal(st.unknown_receiver, 0);
    /* the copies still served location: every receiver was counted */
    struct ble_state s;
    assert_int_equal(ble_table_poll(t, "wb-101", 2200, &s), 0);
    assert_string_equal(s.zone_id, "room-101");
    assert_true(value(&s, "rssi") == -60);

    /* an unknown MAC and an unknown receiver are counted, not tracked */
    struct ble_adv u = a;
    u.mac[5] = 0x99;
    assert_int_equal(ble_table_feed(t, &u, 3000), CH_ENOTFOUND);
    struct ble_adv v = adv("nowhere", -50, 3, 80, FL_WORN);
    assert_int_equal(ble_table_feed(t, &v, 3000), 1);
    ble_table_stats(t, &st);
    assert_int_equal(st.unknown_mac, 1);
    assert_int_equal(st.unknown_receiver, 1);
    ble_table_free(t);
    ble_zones_free(z);

    /* the table itself is bounded: 10000 distinct payloads in 64 slots */
    struct ble_dedup *d = ble_dedup_new(64, 1000);
    uint8_t p[4] = {0};
    for (uint32_t i = 0; i < 10000; i++) {
        memcpy(p, &i, 4);
        assert_false(ble_dedup_seen(d, MAC, p, 4, i));
    }
    memcpy(p, &(uint32_t){9999}, 4);
    assert_true(ble_dedup_seen(d, MAC, p, 4, 10000)); /* the newest is still there */
    ble_dedup_free(d);
}

/* One second of the walk: a new advertisement heard by the given receivers. */
struct hear {
    const char *rx;
    int rssi;
};

static int step(struct ble_table *t, int sec, const struct hear *h, size_t n, struct ble_state *s)
{
    int64_t now = 1000LL * sec;
    for (size_t i = 0; i < n; i++) {
        struct ble_adv a = adv(h[i].rx, h[i].rssi, sec & 0xFF, 80, FL_WORN);
        ble_table_feed(t, &a, now + 50 * (int64_t)i);
    }
    assert_int_equal(ble_table_poll(t, "wb-101", now + 500, s), 0);
    return s->zone;
}

static void zone_walk(void **state)
{
    (void)state;
    struct ble_zones *z = make_zones(5000);
    struct ble_table *t = make_table(z);
    struct ble_state s;
    int changes = 0, last = -1, entered_corridor = -1, entered_exit = -1;
    const struct hear room[] = {{"R101", -55}, {"C1", -80}, {"R102", -76}};
    /* in the corridor: the room's receiver fades, C1 and C2 get strong */
    const struct hear corridor[] = {{"R101", -84}, {"C1", -58}, {"C2", -69}};
    /* at the exit door: C2 still close, the exit receiver a little louder */
    const struct hear door[] = {{"C1", -80}, {"C2", -64}, {"AC233FC000E1", -60}};
    for (int sec = 0; sec < 60; sec++) {
        const struct hear *h = sec < 15 ? room : sec < 30 ? corridor : door;
        int zone = step(t, sec, h, 3, &s);
        if (zone != last) {
            changes++;
            last = zone;
            if (zone == 2)
                entered_corridor = sec;
            if (zone == 3)
                entered_exit = sec;
        }
        if (sec < 15)
            assert_string_equal(s.zone_id, "room-101");
        assert_true(s.in_range);
        assert_int_equal(value(&s, "zone"), zone);
        assert_int_equal(value(&s, "zone_exit"), zone == 3);
    }
    /* exactly room -> corridor -> exit, each within the window */
    assert_int_equal(changes, 3); /* -1 -> room counts as the first */
    assert_true(entered_corridor >= 15 && entered_corridor <= 15 + 8);
    assert_true(entered_exit >= 30 && entered_exit <= 30 + 8);
    assert_string_equal(s.zone_id, "exit-east");
    assert_true(s.zone_exit);

    /* walking out of the building: nothing hears it; the zone stays the
     * exit (the wandering rule keeps its evidence), in_range drops */
    assert_int_equal(ble_table_poll(t, "wb-101", 60000 + 29000, &s), 0);
    assert_true(s.in_range);
    assert_int_equal(ble_table_poll(t, "wb-101", 60000 + 31000, &s), 0);
    assert_false(s.in_range);
    assert_int_equal(value(&s, "in_range"), 0);
    assert_true(s.zone_exit);
    ble_table_free(t);
    ble_zones_free(z);
}

static void zone_no_flicker(void **state)
{
    (void)state;
    struct ble_zones *z = make_zones(5000);
    struct ble_table *t = make_table(z);
    struct ble_state s;
    /* on the wall between rooms 101 and 102: who is louder alternates */
    for (int sec = 0; sec < 120; sec++) {
        int a = sec % 2 ? -70 : -66, b = sec % 2 ? -66 : -70;
        if (sec % 7 == 3)
            b = -60; /* a single loud sample now and then */
        const struct hear h[] = {{"R101", a}, {"R102", b}};
        int zone = step(t, sec, h, 2, &s);
        assert_int_equal(zone, 0);
    }
    /* but a consistent 4 dB lead (below the margin) wins after the dwell */
    int moved = -1;
    for (int sec = 120; sec < 140; sec++) {
        const struct hear h[] = {{"R101", -70}, {"R102", -66}};
        if (step(t, sec, h, 2, &s) == 1 && moved < 0)
            moved = sec;
    }
    assert_true(moved > 120 && moved <= 120 + 8 + 5);
    ble_table_free(t);
    ble_zones_free(z);
}

static void liveness(void **state)
{
    (void)state;
    struct ble_table *t = make_table(NULL);
    struct ble_state s;
    assert_int_equal(ble_table_poll(t, "wb-101", 1000, &s), 0);
    assert_false(s.heard);
    assert_false(s.in_range);
    assert_int_equal(s.zone, -1);
    assert_true(value(&s, "zone") == -999); /* not located: no zone metric */

    struct ble_adv a = adv("R101", -60, 1, 80, FL_WORN);
    assert_int_equal(ble_table_feed(t, &a, 2000), 1);
    assert_int_equal(ble_table_poll(t, "wb-101", 2000, &s), 0);
    assert_true(s.in_range && value(&s, "in_range") == 1);
    assert_true(value(&s, "battery") == 80 && value(&s, "battery_low") == 0);
    assert_true(value(&s, "worn") == 1);

    /* bracelet taken off, battery dying: separate metrics, still in range */
    a = adv("R101", -60, 2, 15, 0);
    assert_int_equal(ble_table_feed(t, &a, 10000), 1);
    assert_int_equal(ble_table_poll(t, "wb-101", 10000, &s), 0);
    assert_true(s.in_range);
    assert_true(value(&s, "worn") == 0);
    assert_true(value(&s, "battery") == 15 && value(&s, "battery_low") == 1);

    /* an advertisement the profile does not describe still says "alive" */
    struct ble_adv other = a;
    const uint8_t ib[] = {2, 1, 6};
    memcpy(other.data, ib, sizeof ib);
    other.len = sizeof ib;
    assert_int_equal(ble_table_feed(t, &other, 35000), 0);
    assert_int_equal(ble_table_poll(t, "wb-101", 40000 + 4999, &s), 0);
    assert_true(s.in_range);
    assert_int_equal(s.last_reading_ms, 10000);
    assert_int_equal(ble_table_poll(t, "wb-101", 65000, &s), 0);
    assert_false(s.in_range);
    assert_true(value(&s, "battery") == 15); /* last known values are kept */

    assert_int_equal(ble_table_poll(t, "nobody", 0, &s), CH_ENOTFOUND);
    assert_int_equal(ble_table_add(t, "wb-101", (uint8_t[6]){1, 2, 3, 4, 5, 6}, &band), CH_EINVAL);
    assert_int_equal(ble_table_add(t, "wb-x", MAC, &band), CH_EINVAL);
    assert_int_equal(ble_table_remove(t, "wb-101"), 0);
    assert_int_equal(ble_table_feed(t, &a, 70000), CH_ENOTFOUND);
    assert_int_equal(ble_table_add(t, "wb-x", MAC, &band), 0);
    ble_table_free(t);

    struct ble_table_opts o = {.max_wearables = 2, .battery_low = -1};
    t = ble_table_new(&o, NULL);
    assert_int_equal(ble_table_add(t, "a", (uint8_t[6]){1}, NULL), 0);
    assert_int_equal(ble_table_add(t, "b", (uint8_t[6]){2}, NULL), 0);
    assert_int_equal(ble_table_add(t, "c", (uint8_t[6]){3}, NULL), CH_EFULL);
    ble_table_free(t);
}

static void latches(void **state)
{
    (void)state;
    struct ble_table *t = make_table(NULL);
    struct ble_state s;
    struct ble_adv a = adv("R101", -60, 1, 80, FL_WORN);
    ble_table_feed(t, &a, 1000);
    ble_table_poll(t, "wb-101", 1500, &s);
    assert_true(value(&s, "sos") == 0 && value(&s, "fall") == 0);

    /* SOS pressed and released between two polls: seen once, then cleared */
    a = adv("R101", -60, 2, 80, FL_WORN | FL_SOS);
    assert_int_equal(ble_table_feed(t, &a, 2000), 1);
    a = adv("R101", -60, 3, 80, FL_WORN);
    assert_int_equal(ble_table_feed(t, &a, 3000), 1);
    ble_table_poll(t, "wb-101", 4000, &s);
    assert_true(value(&s, "sos") == 1);
    assert_true(value(&s, "fall") == 0);
    ble_table_poll(t, "wb-101", 5000, &s);
    assert_true(value(&s, "sos") == 0);

    /* a fall still reported at the poll stays 1 on the next poll too */
    a = adv("R101", -60, 4, 80, FL_WORN | FL_FALL);
    ble_table_feed(t, &a, 6000);
    ble_table_poll(t, "wb-101", 6500, &s);
    assert_true(value(&s, "fall") == 1);
    ble_table_poll(t, "wb-101", 7000, &s);
    assert_true(value(&s, "fall") == 1);
    a = adv("R101", -60, 5, 80, FL_WORN);
    ble_table_feed(t, &a, 8000);
    ble_table_poll(t, "wb-101", 8500, &s);
    assert_true(value(&s, "fall") == 0);
    ble_table_free(t);
}

/* BTHome v2 from a wearable's button: packet id pid, a press (button 1). */
static struct ble_adv bthome_press(uint8_t pid)
{
    struct ble_adv a = {.rssi = -60};
    strcpy(a.receiver, "R101");
    memcpy(a.mac, MAC, 6);
    const uint8_t d[] = {8, 0x16, 0xD2, 0xFC, 0x40, 0x00, pid, 0x3A, 0x01};
    memcpy(a.data, d, sizeof d);
    a.len = sizeof d;
    return a;
}

/* A BTHome device repeats a packet for seconds, longer than the dedup
 * window: the same packet id is the same press, a new id a new one. */
static void bthome_packet_ids(void **state)
{
    (void)state;
    struct ble_table_opts o = {.dedup_window_ms = 1000};
    struct ble_table *t = ble_table_new(&o, NULL);
    assert_int_equal(ble_table_add(t, "btn-1", MAC, ble_profile_builtin(BLE_MATCH_BTHOME)), 0);
    struct ble_state s;
    struct ble_adv a = bthome_press(9);
    assert_int_equal(ble_table_feed(t, &a, 1000), 1);
    ble_table_poll(t, "btn-1", 1100, &s);
    assert_true(value(&s, "button") == 1);
    for (int64_t now = 2500; now <= 6500; now += 2000) /* repeated, past the window */
        assert_int_equal(ble_table_feed(t, &a, now), 0);
    ble_table_poll(t, "btn-1", 7000, &s);
    assert_int_equal(s.last_reading_ms, 1000); /* no new press */
    struct ble_table_stats st;
    ble_table_stats(t, &st);
    assert_int_equal(st.readings, 1);
    assert_int_equal(st.duplicates, 3);
    a = bthome_press(10); /* pressed again */
    assert_int_equal(ble_table_feed(t, &a, 8000), 1);
    ble_table_poll(t, "btn-1", 8100, &s);
    assert_int_equal(s.last_reading_ms, 8000);
    assert_true(value(&s, "button") == 1);
    ble_table_free(t);
}

static void ingest_end_to_end(void **state)
{
    (void)state;
    struct ble_zones *z = make_zones(5000);
    struct ble_table *t = make_table(z);
    /* the same advertisement through an OpenMQTTGateway receiver (manufacturer
     * data only) and an Ingics one (with the flags AD too: still one reading),
     * plus a stranger's phone */
    const char *omg = "{\"id\":\"AC:23:3F:A0:00:01\",\"rssi\":-61,"
                      "\"manufacturerdata\":\"0a0d1e480700\"}";
    assert_int_equal(
        ble_table_ingest(t, BLE_RX_OMG, "home/R101/BTtoMQTT/AC233FA00001", omg, strlen(omg), 1000),
        1);
    const char *igs = "$GPRP,AC233FA00001,C1,-75,07FF0A0D1E480700\n"
                      "$GPRP,AC233FA00001,AC233FC000E1,-80,02010607FF0A0D1E480700\n"
                      "$GPRP,112233445566,AC233FC000E1,-40,020106\n";
    /* "C1" is not a MAC: Ingics names gateways by MAC, so that line is bad */
    assert_int_equal(ble_table_ingest(t, BLE_RX_INGICS, "igs", igs, strlen(igs), 1200), 2);
    const char *bad = "{\"id\":";
    assert_int_equal(
        ble_table_ingest(t, BLE_RX_OMG, "home/R101/BTtoMQTT/x", bad, strlen(bad), 1300), CH_EINVAL);
    struct ble_table_stats st;
    ble_table_stats(t, &st);
    assert_int_equal(st.readings, 1);
    assert_int_equal(st.duplicates, 1);
    assert_int_equal(st.unknown_mac, 1);
    assert_int_equal(st.rx.rejected[BLE_REJ_MAC], 1);
    assert_int_equal(st.rx.rejected[BLE_REJ_JSON], 1);
    assert_int_equal(st.rx.advs, 3);
    struct ble_state s;
    assert_int_equal(ble_table_poll(t, "wb-101", 1500, &s), 0);
    assert_true(value(&s, "battery") == 30 && value(&s, "hr") == 72 && value(&s, "seq") == 7);
    assert_true(value(&s, "sos") == 0 && value(&s, "worn") == 0);
    assert_string_equal(s.zone_id, "room-101");
    ble_table_free(t);
    ble_zones_free(z);
}

static void zone_config_errors(void **state)
{
    (void)state;
    char *a[] = {"R1"}, *dup[] = {"R1"}, *bad[] = {"r/1"};
    struct ble_zone_cfg two[] = {{.id = "x", .receivers = {a, 1}},
                                 {.id = "y", .receivers = {dup, 1}}};
    struct ble_zone_cfg same[] = {{.id = "x", .receivers = {a, 1}},
                                  {.id = "x", .receivers = {NULL, 0}}};
    struct ble_zone_cfg badrx[] = {{.id = "x", .receivers = {bad, 1}}};
    struct ble_location_cfg cases[] = {
        {.window_ms = 8000, .zones = {two, 2}},
        {.window_ms = 8000, .zones = {same, 2}},
        {.window_ms = 8000, .zones = {badrx, 1}},
    };
    for (size_t i = 0; i < 3; i++) {
        struct ble_zones *z = NULL;
        char err[160] = "";
        assert_int_equal(ble_zones_new(&cases[i], &z, err, sizeof err), CH_ECONFIG);
        assert_null(z);
        assert_true(strlen(err) > 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(dedup_copies),      cmocka_unit_test(zone_walk),
        cmocka_unit_test(zone_no_flicker),   cmocka_unit_test(liveness),
        cmocka_unit_test(latches),           cmocka_unit_test(bthome_packet_ids),
        cmocka_unit_test(ingest_end_to_end), cmocka_unit_test(zone_config_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
