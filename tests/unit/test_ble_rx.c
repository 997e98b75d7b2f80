/* Receiver adapters: OpenMQTTGateway, Minew JSON-LONG/JSON-RAW, Ingics
 * $GPRP lines; good messages and every class of hostile input. */
#include "ble_rx.h"
#include "err.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#define MAXGOT 16
struct got {
    size_t n;
    struct ble_adv a[MAXGOT];
};

static void collect(void *arg, const struct ble_adv *a)
{
    struct got *g = arg;
    if (g->n < MAXGOT)
        g->a[g->n++] = *a;
}

static int run(enum ble_rx_format f, const char *topic, const char *payload, struct got *g,
               struct ble_rx_stats *st)
{
    memset(g, 0, sizeof *g);
    return ble_rx_parse(f, topic, payload, strlen(payload), 1000, st, collect, g);
}

static const uint8_t MAC1[6] = {0xAC, 0x23, 0x3F, 0xA0, 0x01, 0x02};

static void omg_manufacturer_and_service(void **state)
{
    (void)state;
    struct got g;
    struct ble_rx_stats st = {0};
    int rc = run(BLE_RX_OMG, "home/gw-corr-1/BTtoMQTT/AC233FA00102",
                 "{\"id\":\"AC:23:3F:A0:01:02\",\"rssi\":-67,\"name\":\"band\","
                 "\"manufacturerdata\":\"4c000215e2c56db5dffb48d2b060d0f5a71096e000010002c5\","
                 "\"servicedata\":\"4002c409\",\"servicedatauuid\":\"0xfcd2\"}",
                 &g, &st);
    assert_int_equal(rc, 1);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.a[0].receiver, "gw-corr-1");
    assert_memory_equal(g.a[0].mac, MAC1, 6);
    assert_int_equal(g.a[0].rssi, -67);
    assert_int_equal(g.a[0].ts_ms, 1000);
    /* AD 0xFF with the 25 bytes, then AD 0x16 with UUID little-endian */
    assert_int_equal(g.a[0].len, 27 + 8);
    assert_int_equal(g.a[0].data[0], 26);
    assert_int_equal(g.a[0].data[1], 0xFF);
    assert_int_equal(g.a[0].data[2], 0x4C);
    const uint8_t sd[] = {7, 0x16, 0xD2, 0xFC, 0x40, 0x02, 0xC4, 0x09};
    assert_memory_equal(g.a[0].data + 27, sd, sizeof sd);
    assert_int_equal(st.advs, 1);
    assert_int_equal(ble_rx_rejected_total(&st), 0);

    /* the full base UUID spelling, and no payload at all (location only) */
    rc = run(BLE_RX_OMG, "home/gw2/BTtoMQTT/X",
             "{\"id\":\"ac233fa00102\",\"rssi\":-90,\"servicedata\":\"40\","
             "\"servicedatauuid\":\"0000fcd2-0000-1000-8000-00805f9b34fb\"}",
             &g, &st);
    assert_int_equal(rc, 1);
    assert_int_equal(g.a[0].data[2], 0xD2);
    rc = run(BLE_RX_OMG, "home/gw2/BTtoMQTT", "{\"id\":\"AC-23-3F-A0-01-02\",\"rssi\":0}", &g, &st);
    assert_int_equal(rc, 1);
    assert_int_equal(g.a[0].len, 0);
}

struct bad_case {
    const char *topic;
    const char *payload;
    enum ble_reject reason;
};

static void omg_hostile(void **state)
{
    (void)state;
    static char big[BLE_RX_MAX_MSG + 100];
    memset(big, ' ', sizeof big - 1);
    big[0] = '{';
    big[sizeof big - 2] = '}';
    const struct bad_case cases[] = {
        {"home/gw/other/X", "{\"id\":\"AC233FA00102\",\"rssi\":-60}", BLE_REJ_TOPIC},
        {"BTtoMQTT/X", "{\"id\":\"AC233FA00102\",\"rssi\":-60}", BLE_REJ_TOPIC},
        {"home/g w/BTtoMQTT/X", "{\"id\":\"AC233FA00102\",\"rssi\":-60}", BLE_REJ_TOPIC},
        {"home/gw/BTtoMQTT/X", "{\"id\":\"AC233FA00102\",\"rssi\":-60", BLE_REJ_JSON},
        {"home/gw/BTtoMQTT/X", "[1,2]", BLE_REJ_JSON},
        {"home/gw/BTtoMQTT/X", "{\"rssi\":-60}", BLE_REJ_FIELD},
        {"home/gw/BTtoMQTT/X", "{\"id\":\"AC233FA0010\",\"rssi\":-60}", BLE_REJ_MAC},
        {"home/gw/BTtoMQTT/X", "{\"id\":\"AC:23:3F:A0:01-02\",\"rssi\":-60}", BLE_REJ_MAC},
        {"home/gw/BTtoMQTT/X", "{\"id\":\"AC233FA00102\",\"rssi\":-128}", BLE_REJ_RSSI},
        {"home/gw/BTtoMQTT/X", "{\"id\":\"AC233FA00102\",\"rssi\":5}", BLE_REJ_RSSI},
        {"home/gw/BTtoMQTT/X", "{\"id\":\"AC233FA00102\",\"rssi\":\"-60\"}", BLE_REJ_RSSI},
        {"home/gw/BTtoMQTT/X", "{\"id\":\"AC233FA00102\"}", BLE_REJ_FIELD},
        {"home/gw/BTtoMQTT/X",
         "{\"id\":\"AC233FA00102\",\"rssi\":-60,\"manufacturerdata\":\"4c0\"}", BLE_REJ_HEX},
        {"home/gw/BTtoMQTT/X",
         "{\"id\":\"AC233FA00102\",\"rssi\":-60,\"manufacturerdata\":\"4cxx\"}", BLE_REJ_HEX},
        {"home/gw/BTtoMQTT/X",
         "{\"id\":\"AC233FA00102\",\"rssi\":-60,\"manufacturerdata\":"
         "\"00112233445566778899001122334455667788990011223344556677889900112233445566778899"
         "0011223344556677889900112233445566778899001122334455\"}",
         BLE_REJ_SIZE},
        {"home/gw/BTtoMQTT/X", "{\"id\":\"AC233FA00102\",\"rssi\":-60,\"servicedata\":\"40\"}",
         BLE_REJ_FIELD},
        {"home/gw/BTtoMQTT/X",
         "{\"id\":\"AC233FA00102\",\"rssi\":-60,\"servicedata\":\"40\",\"servicedatauuid\":"
         "\"0xfcd\"}",
         BLE_REJ_FIELD},
        {"home/gw/BTtoMQTT/X", big, BLE_REJ_SIZE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct got g;
        struct ble_rx_stats st = {0};
        int rc = run(BLE_RX_OMG, cases[i].topic, cases[i].payload, &g, &st);
        if (rc != CH_EINVAL || st.rejected[cases[i].reason] != 1)
            fail_msg("case %zu: rc %d, %s", i, rc, st.last_error);
        assert_int_equal(g.n, 0);
        assert_int_equal(ble_rx_rejected_total(&st), 1);
        assert_non_null(strstr(st.last_error, ble_reject_str(cases[i].reason)));
    }
}

static void minew_json_long(void **state)
{
    (void)state;
    struct got g;
    struct ble_rx_stats st = {0};
    /* JSON-LONG: the gateway's own element first; entry 2 has bad hex and
     * entry 3 a bad MAC: the other two still arrive. */
    int rc = run(BLE_RX_MINEW, "/gw/ac233fc0aaaa/status",
                 "[{\"timestamp\":\"2024-05-01T10:00:00.250Z\",\"type\":\"Gateway\","
                 "\"mac\":\"AC233FC0BBBB\",\"gatewayFree\":97,\"gatewayLoad\":0.05},"
                 "{\"timestamp\":\"2024-05-01T10:00:01.500Z\",\"type\":\"iBeacon\","
                 "\"mac\":\"AC233FA00102\",\"bleName\":\"\",\"rssi\":-58,"
                 "\"rawData\":\"0201061AFF4C000215E2C56DB5DFFB48D2B060D0F5A71096E000000000C5\"},"
                 "{\"timestamp\":\"2024-05-01T10:00:01.600Z\",\"type\":\"Unknown\","
                 "\"mac\":\"AC233FA00103\",\"rssi\":-70,\"rawData\":\"02010G\"},"
                 "{\"timestamp\":\"2024-05-01T10:00:01.700Z\",\"mac\":\"nope\",\"rssi\":-70},"
                 "{\"timestamp\":\"2024-05-01T10:00:01.800Z\",\"type\":\"Unknown\","
                 "\"mac\":\"AC233FA00104\",\"rssi\":-80,\"rawData\":\"020106\"}]",
                 &g, &st);
    assert_int_equal(rc, 2);
    assert_int_equal(g.n, 2);
    assert_string_equal(g.a[0].receiver, "AC233FC0BBBB"); /* payload beats topic */
    assert_memory_equal(g.a[0].mac, MAC1, 6);
    assert_int_equal(g.a[0].rssi, -58);
    assert_int_equal(g.a[0].len, 30);
    assert_int_equal(g.a[0].ts_ms, INT64_C(1714557601500));
    assert_int_equal(g.a[1].mac[5], 0x04);
    assert_int_equal(st.rejected[BLE_REJ_HEX], 1);
    assert_int_equal(st.rejected[BLE_REJ_MAC], 1);
    assert_non_null(strstr(st.last_error, "entry 3"));
}

/* JSON-LONG's decoded iBeacon fields, without rawData: the same
 * advertisement as its raw form (entry 1 of minew_json_long); malformed
 * fields are rejected, the rest still arrives. */
static void minew_json_long_ibeacon_fields(void **state)
{
    (void)state;
    struct got g;
    struct ble_rx_stats st = {0};
    int rc = run(BLE_RX_MINEW, "/gw/ac233fc0aaaa/status",
                 "[{\"type\":\"iBeacon\",\"mac\":\"AC233FA00102\",\"rssi\":-58,"
                 "\"ibeaconUuid\":\"E2C56DB5-DFFB-48D2-B060-D0F5A71096E0\",\"ibeaconMajor\":0,"
                 "\"ibeaconMinor\":0,\"ibeaconTxPower\":-59,\"battery\":100},"
                 "{\"type\":\"iBeacon\",\"mac\":\"AC233FA00103\",\"rssi\":-58,"
                 "\"ibeaconUuid\":\"E2C56DB5\",\"ibeaconMajor\":1,\"ibeaconMinor\":2,"
                 "\"ibeaconTxPower\":-59},"
                 "{\"type\":\"iBeacon\",\"mac\":\"AC233FA00104\",\"rssi\":-58,"
                 "\"ibeaconUuid\":\"E2C56DB5DFFB48D2B060D0F5A71096E0\",\"ibeaconMajor\":70000,"
                 "\"ibeaconMinor\":2,\"ibeaconTxPower\":-59}]",
                 &g, &st);
    /* the malformed two are counted, and still heard (location, liveness) */
    assert_int_equal(rc, 3);
    assert_int_equal(g.n, 3);
    assert_int_equal(g.a[1].len, 0);
    assert_int_equal(g.a[2].len, 0);
    uint8_t want[30];
    assert_int_equal(ble_hex_decode("0201061AFF4C000215E2C56DB5DFFB48D2B060D0F5A71096E000000000C5",
                                    60, want, 30),
                     30);
    assert_int_equal(g.a[0].len, 30);
    assert_memory_equal(g.a[0].data, want, 30);
    assert_int_equal(st.rejected[BLE_REJ_FIELD], 2);
}

static void minew_json_raw(void **state)
{
    (void)state;
    struct got g;
    struct ble_rx_stats st = {0};
    /* JSON-RAW, no gateway element: the receiver comes from the topic;
     * numeric timestamps in seconds. */
    int rc = run(BLE_RX_MINEW, "/gw/AC:23:3F:C0:AA:AA/status",
                 "[{\"timestamp\":1714557601,\"mac\":\"AC233FA00102\",\"rssi\":-61,"
                 "\"rawData\":\"0201060303AAFE\"},"
                 "{\"timestamp\":\"yesterday\",\"mac\":\"AC233FA00102\",\"rssi\":-61},"
                 "{\"mac\":\"AC233FA00102\",\"rssi\":-200},"
                 "7,"
                 "{\"mac\":\"AC233FA00102\",\"rssi\":-62}]",
                 &g, &st);
    assert_int_equal(rc, 2);
    assert_string_equal(g.a[0].receiver, "AC233FC0AAAA");
    assert_int_equal(g.a[0].ts_ms, INT64_C(1714557601000));
    assert_int_equal(g.a[0].len, 7);
    assert_int_equal(g.a[1].ts_ms, 1000); /* none given: arrival time */
    assert_int_equal(g.a[1].len, 0);
    assert_int_equal(st.rejected[BLE_REJ_TIME], 1);
    assert_int_equal(st.rejected[BLE_REJ_RSSI], 1);
    assert_int_equal(st.rejected[BLE_REJ_JSON], 1);

    /* a {"gateway": ...} element (newer JSON-RAW) */
    rc = run(BLE_RX_MINEW, "x",
             "[{\"gateway\":\"C30000000001\"},{\"mac\":\"AC233FA00102\","
             "\"rssi\":-50,\"rawData\":\"\"}]",
             &g, &st);
    assert_int_equal(rc, 1);
    assert_string_equal(g.a[0].receiver, "C30000000001");

    /* whole-message rejections */
    memset(&st, 0, sizeof st);
    assert_int_equal(
        run(BLE_RX_MINEW, "/gw/x", "[{\"mac\":\"AC233FA00102\",\"rssi\":-5}]", &g, &st), CH_EINVAL);
    assert_int_equal(st.rejected[BLE_REJ_TOPIC], 1);
    assert_int_equal(run(BLE_RX_MINEW, "/gw/AC233FC0AAAA", "{\"mac\":1}", &g, &st), CH_EINVAL);
    assert_int_equal(run(BLE_RX_MINEW, "/gw/AC233FC0AAAA", "[", &g, &st), CH_EINVAL);
    assert_int_equal(st.rejected[BLE_REJ_JSON], 2);
    rc =
        run(BLE_RX_MINEW, "/gw/AC233FC0AAAA",
            "[{\"mac\":\"AC233FA00102\",\"rssi\":-50,\"rawData\":\"00112233445566778899001122334455"
            "667788990011223344556677889900112233445566778899001122334455667788990011223344556677"
            "88990011223344556677889900\"}]",
            &g, &st);
    assert_int_equal(rc, 0);
    assert_int_equal(st.rejected[BLE_REJ_SIZE], 1);
}

static void ingics_lines(void **state)
{
    (void)state;
    struct got g;
    struct ble_rx_stats st = {0};
    int rc = run(BLE_RX_INGICS, "igs/gw1",
                 "$GPRP,AC233FA00102,F008D1789200,-71,0201061AFF4C000215E2C56DB5DFFB48D2B060D0F5"
                 "A71096E000000000C5,1714557601\r\n"
                 "\n"
                 "$GPRP,AC233FA00103,F008D1789200,-71,02010G\n"      /* bad hex */
                 "$GPRP,AC233FA0010,F008D1789200,-71,020106\n"       /* bad MAC */
                 "$GPRP,AC233FA00103,F008D178920,-71,020106\n"       /* bad gateway MAC */
                 "$GPRP,AC233FA00103,F008D1789200,-7a,020106\n"      /* bad RSSI */
                 "$GPRP,AC233FA00103,F008D1789200,-71\n"             /* too few fields */
                 "$GPRP,AC233FA00103,F008D1789200,-71,020106,1,2\n"  /* too many */
                 "$XYZ,AC233FA00103,F008D1789200,-71,020106\n"       /* unknown kind */
                 "$GPRP,AC233FA00103,F008D1789200,-71,020106,soon\n" /* bad time */
                 "$RSPR,AC233FA00104,F008D1789200,-80,020106",       /* no newline at end */
                 &g, &st);
    assert_int_equal(rc, 2);
    assert_string_equal(g.a[0].receiver, "F008D1789200");
    assert_int_equal(g.a[0].rssi, -71);
    assert_int_equal(g.a[0].len, 30);
    assert_int_equal(g.a[0].ts_ms, INT64_C(1714557601000));
    assert_int_equal(g.a[1].mac[5], 0x04);
    assert_int_equal(g.a[1].ts_ms, 1000);
    assert_int_equal(st.rejected[BLE_REJ_HEX], 1);
    assert_int_equal(st.rejected[BLE_REJ_MAC], 2);
    assert_int_equal(st.rejected[BLE_REJ_RSSI], 1);
    assert_int_equal(st.rejected[BLE_REJ_LINE], 3);
    assert_int_equal(st.rejected[BLE_REJ_TIME], 1);

    /* a line longer than the bound, NUL bytes, binary garbage */
    char longline[400];
    memset(longline, 'A', sizeof longline - 1);
    longline[sizeof longline - 1] = '\0';
    memset(&st, 0, sizeof st);
    assert_int_equal(run(BLE_RX_INGICS, "t", longline, &g, &st), 0);
    assert_int_equal(st.rejected[BLE_REJ_SIZE], 1);
    const char nul[] = "$GPRP,AC233FA00102,F008D1789200,-71,02\0"
                       "0106\n";
    assert_int_equal(ble_rx_ingics("t", nul, sizeof nul - 1, 0, &st, collect, &g), 0);
    assert_int_equal(st.rejected[BLE_REJ_LINE], 1);
}

static void receiver_names(void **state)
{
    (void)state;
    char out[BLE_RECEIVER_MAX];
    assert_true(ble_receiver_norm("ac:23:3f:c0:aa:aa", 17, out));
    assert_string_equal(out, "AC233FC0AAAA");
    assert_true(ble_receiver_norm("gw-corr-1", 9, out));
    assert_false(ble_receiver_norm("", 0, out));
    assert_false(ble_receiver_norm("a/b", 3, out));
    assert_false(ble_receiver_norm("0123456789012345678901234567890123456789012345678", 49, out));
    enum ble_rx_format f;
    assert_int_equal(ble_rx_format_parse("minew", &f), 0);
    assert_int_equal(f, BLE_RX_MINEW);
    assert_int_equal(ble_rx_format_parse("zigbee", &f), CH_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(omg_manufacturer_and_service),
        cmocka_unit_test(omg_hostile),
        cmocka_unit_test(minew_json_long),
        cmocka_unit_test(minew_json_long_ibeacon_fields),
        cmocka_unit_test(minew_json_raw),
        cmocka_unit_test(ingics_lines),
        cmocka_unit_test(receiver_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
