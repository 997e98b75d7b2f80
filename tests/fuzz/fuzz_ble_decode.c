/* The advertisement decoder and the pipeline behind it on arbitrary bytes.
 * Input: byte 0 picks the profile (iBeacon, Eddystone TLM, BTHome, a
 * company, a service or a prefix profile with every field type and flag
 * bits); the rest is the advertisement (AD structures), also fed to a state
 * table to exercise dedup, location and the latches. Never a crash; a
 * reading is within its bounds; a failed decode leaves no metrics. */
#include "ble_decode.h"
#include "ble_table.h"
#include "err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_ble_decode:%d: %s\n", __LINE__, #c);                             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static struct ble_field fields[] = {
    {.metric = "u8", .offset = 0, .type = BLE_F_U8, .scale = 1},
    {.metric = "i8", .offset = 1, .type = BLE_F_I8, .scale = 0.5},
    {.metric = "u16le", .offset = 2, .type = BLE_F_U16LE, .scale = 1},
    {.metric = "u16be", .offset = 2, .type = BLE_F_U16BE, .scale = 1},
    {.metric = "i16le", .offset = 3, .type = BLE_F_I16LE, .scale = 0.01},
    {.metric = "i16be", .offset = 3, .type = BLE_F_I16BE, .scale = 0.01},
    {.metric = "u24le", .offset = 4, .type = BLE_F_U24LE, .scale = 1},
    {.metric = "u24be", .offset = 4, .type = BLE_F_U24BE, .scale = 1},
    {.metric = "u32le", .offset = 5, .type = BLE_F_U32LE, .scale = 1},
    {.metric = "u32be", .offset = 5, .type = BLE_F_U32BE, .scale = 1},
    {.metric = "i32le", .offset = 6, .type = BLE_F_I32LE, .scale = 1},
    {.metric = "i32be", .offset = 6, .type = BLE_F_I32BE, .scale = 1},
    {.metric = "sos", .offset = 0, .type = BLE_F_U8, .mask = 1, .latch = true},
    {.metric = "worn", .offset = 1, .type = BLE_F_U8, .mask = 4, .invert = true},
};

static struct ble_profile custom[3] = {
    {.match = BLE_MATCH_COMPANY, .company_id = 0x0D0A, .fields = {fields, 14}},
    {.match = BLE_MATCH_SERVICE, .service_uuid = 0xFEE7, .fields = {fields, 14}},
    {.match = BLE_MATCH_PREFIX, .prefix = "5A01", .ad_type = 0xFF, .fields = {fields, 14}},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct ble_table *table;
    static const struct ble_profile *profiles[6];
    static const uint8_t mac[6] = {1, 2, 3, 4, 5, 6};
    if (!table) {
        char err[160];
        for (int i = 0; i < 3; i++) {
            CHECK(ble_profile_prepare(&custom[i], err, sizeof err, NULL) == 0);
            profiles[i] = &custom[i];
        }
        profiles[3] = ble_profile_builtin(BLE_MATCH_IBEACON);
        profiles[4] = ble_profile_builtin(BLE_MATCH_EDDYSTONE_TLM);
        profiles[5] = ble_profile_builtin(BLE_MATCH_BTHOME);
        table = ble_table_new(NULL, NULL);
    }
    if (size < 1)
        return 0;
    const struct ble_profile *p = profiles[data[0] % 6];
    data++;
    size--;
    uint8_t *adv = malloc(size ? size : 1);
    if (size)
        memcpy(adv, data, size);
    struct ble_reading r;
    const char *why = NULL;
    int rc = ble_decode(p, adv, size, &r, &why);
    CHECK(rc == 0 || rc == CH_ENOTFOUND || rc == CH_EINVAL || rc == CH_EPROTO);
    CHECK(r.n <= BLE_MAX_METRICS);
    if (rc != 0)
        CHECK(r.n == 0 && why != NULL);
    for (size_t i = 0; i < r.n; i++)
        CHECK(strnlen(r.m[i].name, BLE_METRIC_NAME) < BLE_METRIC_NAME);
    CHECK(strnlen(r.ident, sizeof r.ident) < sizeof r.ident);

    if (size <= BLE_ADV_MAX) {
        static int64_t now = 0;
        static int n;
        ble_table_remove(table, "w");
        CHECK(ble_table_add(table, "w", mac, p) == 0);
        struct ble_adv a = {.receiver = "gw", .rssi = -60, .len = size};
        memcpy(a.mac, mac, 6);
        memcpy(a.data, adv, size);
        now += 700;
        CHECK(ble_table_feed(table, &a, now) >= 0);
        struct ble_state s;
        if (++n % 3 == 0)
            CHECK(ble_table_poll(table, "w", now, &s) == 0 && s.n <= BLE_MAX_METRICS + 5);
    }
    free(adv);
    return 0;
}
