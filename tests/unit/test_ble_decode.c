/* Advertisement decoding: iBeacon, Eddystone TLM and BTHome v2 with the
 * specs' examples; profile fields (types, scale, flag bits, latch); the
 * profile's YAML table; malformed and hostile advertisements. */
#include "ble_decode.h"
#include "cfg.h"
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

static size_t hex(const char *h, uint8_t *out)
{
    long n = ble_hex_decode(h, strlen(h), out, BLE_ADV_MAX);
    assert_true(n >= 0);
    return (size_t)n;
}

static double metric(const struct ble_reading *r, const char *name)
{
    const struct ble_metric *m = ble_reading_find(r, name);
    if (!m)
        fail_msg("no metric %s", name);
    return m->value;
}

static void ibeacon_vector(void **state)
{
    (void)state;
    uint8_t a[BLE_ADV_MAX];
    struct ble_reading r;
    /* Apple's AirLocate sample UUID, major 0, minor 0, measured power -59 */
    size_t n = hex("0201061AFF4C000215E2C56DB5DFFB48D2B060D0F5A71096E000000000C5", a);
    const struct ble_profile *p = ble_profile_builtin(BLE_MATCH_IBEACON);
    assert_int_equal(ble_decode(p, a, n, &r, NULL), 0);
    assert_string_equal(r.ident, "E2C56DB5-DFFB-48D2-B060-D0F5A71096E0");
    assert_true(metric(&r, "major") == 0 && metric(&r, "minor") == 0);
    assert_true(metric(&r, "tx_power") == -59);
    n = hex("0201061AFF4C000215E2C56DB5DFFB48D2B060D0F5A71096E00102FFFEC5", a);
    assert_int_equal(ble_decode(p, a, n, &r, NULL), 0);
    assert_true(metric(&r, "major") == 258 && metric(&r, "minor") == 65534);
    /* not an iBeacon (another company); an iBeacon one byte short */
    n = hex("0201061AFF4D000215E2C56DB5DFFB48D2B060D0F5A71096E000000000C5", a);
    assert_int_equal(ble_decode(p, a, n, &r, NULL), CH_ENOTFOUND);
    const char *why = NULL;
    n = hex("02010619FF4C000215E2C56DB5DFFB48D2B060D0F5A71096E0000000C5", a);
    assert_int_equal(ble_decode(p, a, n, &r, &why), CH_EINVAL);
    assert_non_null(why);
}

static void eddystone_tlm_vector(void **state)
{
    (void)state;
    uint8_t a[BLE_ADV_MAX];
    struct ble_reading r;
    const struct ble_profile *p = ble_profile_builtin(BLE_MATCH_EDDYSTONE_TLM);
    /* 3000 mV, 24.5 C (0x1880 in 8.8), 500 PDUs, 3600 x 0.1 s */
    size_t n = hex("0201060303AAFE1116AAFE20000BB81880000001F400000E10", a);
    assert_int_equal(ble_decode(p, a, n, &r, NULL), 0);
    assert_true(metric(&r, "battery_mv") == 3000);
    assert_true(metric(&r, "temperature") == 24.5);
    assert_true(metric(&r, "adv_count") == 500);
    assert_true(metric(&r, "uptime_s") == 360);
    /* -0.5 C (0xFF80); battery and temperature "not reported" */
    n = hex("1116AAFE20000BB8FF80000001F400000E10", a);
    assert_int_equal(ble_decode(p, a, n, &r, NULL), 0);
    assert_true(metric(&r, "temperature") == -0.5);
    n = hex("1116AAFE2000000080000000000100000001", a);
    assert_int_equal(ble_decode(p, a, n, &r, NULL), 0);
    assert_null(ble_reading_find(&r, "battery_mv"));
    assert_null(ble_reading_find(&r, "temperature"));
    /* encrypted TLM (version 1); a URL frame (not TLM); TLM cut short */
    n = hex("1116AAFE20010BB81880000001F400000E10", a);
    assert_int_equal(ble_decode(p, a, n, &r, NULL), CH_EPROTO);
    n = hex("0A16AAFE10EE0367676C00", a);
    assert_int_equal(ble_decode(p, a, n, &r, NULL), CH_ENOTFOUND);
    n = hex("0F16AAFE20000BB81880000001F40000", a);
    assert_int_equal(ble_decode(p, a, n, &r, NULL), CH_EINVAL);
}

static void bthome_vectors(void **state)
{
    (void)state;
    uint8_t a[BLE_ADV_MAX];
    struct ble_reading r;
    const struct ble_profile *p = ble_profile_builtin(BLE_MATCH_BTHOME);
    /* The spec's object examples in one packet: packet id 1, battery 97 %
     * (01 61), temperature 25.06 C (02 CA 09), humidity 50.55 % (03 BF 13),
     * button press (3A 01), temperature 27.3 C (45 11 01). */
    size_t n = hex("020106"
                   "13"
                   "16D2FC40"
                   "0001"
                   "0161"
                   "02CA09"
                   "03BF13"
                   "3A01"
                   "451101",
                   a);
    assert_int_equal(ble_decode(p, a, n, &r, NULL), 0);
    assert_false(r.truncated);
    assert_true(metric(&r, "packet_id") == 1);
    assert_true(metric(&r, "battery") == 97);
    assert_float_equal(metric(&r, "humidity"), 50.55, 1e-9);
    assert_float_equal(metric(&r, "temperature"), 27.3, 1e-9); /* the later object wins */
    assert_float_equal(r.m[2].value, 25.06, 1e-9);
    assert_true(metric(&r, "button") == 1);
    assert_true(ble_reading_find(&r, "button")->latch);
    /* negative values: -10.00 C (02 18 FC), a signed 8-bit count -2 (59 FE) */
    n = hex("0916D2FC400218FC59FE", a);
    assert_int_equal(ble_decode(p, a, n, &r, NULL), 0);
    assert_float_equal(metric(&r, "temperature"), -10.0, 1e-9);
    assert_true(metric(&r, "count") == -2);
    /* text object (53, length 3) is skipped by its length */
    n = hex("0B16D2FC4053036162630164", a);
    assert_int_equal(ble_decode(p, a, n, &r, NULL), 0);
    assert_int_equal(r.n, 1);
    assert_true(metric(&r, "battery") == 100);
    /* an unknown object id (0x30): stop, keep what came before */
    n = hex("0A16D2FC40015A30010203", a);
    assert_int_equal(ble_decode(p, a, n, &r, NULL), 0);
    assert_true(r.truncated);
    assert_int_equal(r.n, 1);
    assert_true(metric(&r, "battery") == 90);
    /* object cut short; text longer than the packet */
    n = hex("0616D2FC4002CA", a);
    assert_int_equal(ble_decode(p, a, n, &r, NULL), CH_EINVAL);
    assert_int_equal(r.n, 0);
    n = hex("0716D2FC40530961", a);
    assert_int_equal(ble_decode(p, a, n, &r, NULL), CH_EINVAL);
    /* encrypted (bit 0), version 1 (0x20) */
    n = hex("0716D2FC41015A00", a);
    assert_int_equal(ble_decode(p, a, n, &r, NULL), CH_EPROTO);
    n = hex("0716D2FC20015A00", a);
    assert_int_equal(ble_decode(p, a, n, &r, NULL), CH_EPROTO);
    /* an AD structure claiming more bytes than there are */
    n = hex("020106FF16D2FC40", a);
    assert_int_equal(ble_decode(p, a, n, &r, NULL), CH_EINVAL);
    /* zero padding after the data ends the walk */
    n = hex("0616D2FC40015A000000", a);
    assert_int_equal(ble_decode(p, a, n, &r, NULL), 0);
}

/* A wearable profile built in C (what cfg_load fills in). */
static struct ble_field band_fields[] = {
    {.metric = "battery", .offset = 0, .type = BLE_F_U8, .scale = 1},
    {.metric = "hr", .offset = 1, .type = BLE_F_U8, .scale = 1},
    {.metric = "steps", .offset = 2, .type = BLE_F_U32LE, .scale = 1},
    {.metric = "sos", .offset = 6, .type = BLE_F_U8, .mask = 0x01, .latch = true},
    {.metric = "fall", .offset = 6, .type = BLE_F_U8, .mask = 0x02, .latch = true},
    {.metric = "worn", .offset = 6, .type = BLE_F_U8, .mask = 0x04},
    {.metric = "charging", .offset = 6, .type = BLE_F_U8, .mask = 0x08},
    {.metric = "skin_temp", .offset = 7, .type = BLE_F_I16LE, .scale = 0.01},
    {.metric = "pressure", .offset = 9, .type = BLE_F_U16BE, .scale = 0.1, .add = 800},
    {.metric = "off_wrist", .offset = 6, .type = BLE_F_U8, .mask = 0x04, .invert = true},
};

static void profile_fields(void **state)
{
    (void)state;
    struct ble_profile p = {.match = BLE_MATCH_COMPANY,
                            .company_id = 0x0D0A,
                            .fields = {band_fields, sizeof band_fields / sizeof band_fields[0]}};
    char err[160];
    assert_int_equal(ble_profile_prepare(&p, err, sizeof err, NULL), 0);
    assert_int_equal(p.need_len, 11);
    uint8_t a[BLE_ADV_MAX];
    struct ble_reading r;
    /* company 0x0D0A (LE 0A 0D): battery 85, hr 72, steps 1234, flags
     * sos|worn, skin 36.50 C (0x0E42), pressure 0x00C8 -> 820 */
    size_t n = hex("020106"
                   "0EFF0A0D"
                   "55"
                   "48"
                   "D2040000"
                   "05"
                   "420E"
                   "00C8",
                   a);
    assert_int_equal(ble_decode(&p, a, n, &r, NULL), 0);
    assert_true(metric(&r, "battery") == 85);
    assert_true(metric(&r, "hr") == 72);
    assert_true(metric(&r, "steps") == 1234);
    assert_true(metric(&r, "sos") == 1);
    assert_true(ble_reading_find(&r, "sos")->latch);
    assert_true(metric(&r, "fall") == 0);
    assert_true(metric(&r, "worn") == 1);
    assert_true(metric(&r, "charging") == 0);
    assert_true(metric(&r, "off_wrist") == 0);
    assert_float_equal(metric(&r, "skin_temp"), 36.5, 1e-9);
    assert_float_equal(metric(&r, "pressure"), 820, 1e-9);
    /* fall | charging, not worn; negative skin temperature from i16 */
    n = hex("0EFF0A0D"
            "10"
            "00"
            "00000000"
            "0A"
            "FEFF"
            "0000",
            a);
    assert_int_equal(ble_decode(&p, a, n, &r, NULL), 0);
    assert_true(metric(&r, "fall") == 1 && metric(&r, "charging") == 1);
    assert_true(metric(&r, "worn") == 0 && metric(&r, "off_wrist") == 1);
    assert_float_equal(metric(&r, "skin_temp"), -0.02, 1e-9);
    /* another company; a shorter frame of the same company: no match */
    n = hex("0EFF0B0D55480000000005420E00C8", a);
    assert_int_equal(ble_decode(&p, a, n, &r, NULL), CH_ENOTFOUND);
    n = hex("05FF0A0D5548", a);
    assert_int_equal(ble_decode(&p, a, n, &r, NULL), CH_ENOTFOUND);

    /* service-data and prefix profiles read the same way after the match */
    struct ble_field svc_fields[] = {
        {.metric = "battery", .offset = 0, .type = BLE_F_U8, .scale = 1},
        {.metric = "x", .offset = 1, .type = BLE_F_I32BE, .scale = 1},
    };
    struct ble_profile s = {
        .match = BLE_MATCH_SERVICE, .service_uuid = 0xFEE7, .fields = {svc_fields, 2}};
    assert_int_equal(ble_profile_prepare(&s, err, sizeof err, NULL), 0);
    n = hex("0816E7FE40FFFFFFFE", a);
    assert_int_equal(ble_decode(&s, a, n, &r, NULL), 0);
    assert_true(metric(&r, "battery") == 64 && metric(&r, "x") == -2);
    struct ble_profile pre = {
        .match = BLE_MATCH_PREFIX, .prefix = "5A0102", .ad_type = 0xFF, .fields = {svc_fields, 1}};
    assert_int_equal(ble_profile_prepare(&pre, err, sizeof err, NULL), 0);
    n = hex("05FF5A010263", a);
    assert_int_equal(ble_decode(&pre, a, n, &r, NULL), 0);
    assert_true(metric(&r, "battery") == 99);
    n = hex("05FF5A010363", a);
    assert_int_equal(ble_decode(&pre, a, n, &r, NULL), CH_ENOTFOUND);
}

static void profile_checks(void **state)
{
    (void)state;
    char err[160];
    long bad;
    struct ble_field f_wide[] = {{.metric = "sos", .offset = 0, .type = BLE_F_U8, .mask = 0x100}};
    struct ble_field f_far[] = {{.metric = "x", .offset = 60, .type = BLE_F_U32LE}};
    struct ble_field f_inv[] = {{.metric = "x", .offset = 0, .type = BLE_F_U8, .invert = true}};
    struct ble_profile cases[] = {
        {.match = BLE_MATCH_COMPANY, .company_id = -1, .fields = {f_far, 0}},
        {.match = BLE_MATCH_SERVICE, .service_uuid = -1},
        {.match = BLE_MATCH_PREFIX, .prefix = "ABC"},
        {.match = BLE_MATCH_PREFIX, .prefix = NULL},
        {.match = BLE_MATCH_COMPANY, .company_id = 1, .fields = {f_wide, 1}},
        {.match = BLE_MATCH_COMPANY, .company_id = 1, .fields = {f_far, 1}},
        {.match = BLE_MATCH_COMPANY, .company_id = 1, .fields = {f_inv, 1}},
        {.match = BLE_MATCH_COMPANY, .company_id = 1, .fields = {NULL, 0}},
        {.match = BLE_MATCH_BTHOME, .fields = {f_far, 1}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = '\0';
        if (ble_profile_prepare(&cases[i], err, sizeof err, &bad) != CH_ECONFIG)
            fail_msg("case %zu accepted", i);
        assert_true(strlen(err) > 0);
    }
    assert_int_equal(ble_profile_prepare(&cases[4], err, sizeof err, &bad), CH_ECONFIG);
    assert_int_equal(bad, 0);
    assert_non_null(strstr(err, "mask"));
}

struct doc {
    struct ble_profile ble;
};
static const struct cfg_key doc_keys[] = {
    {.key = "ble",
     .type = CFG_MAP,
     .offset = offsetof(struct doc, ble),
     .required = true,
     .sub = ble_profile_keys},
    CFG_END,
};

static int load_yaml(const char *text, struct doc *d)
{
    char path[] = "/tmp/test_ble_profile.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    memset(d, 0, sizeof *d);
    int rc = cfg_load(path, doc_keys, d, NULL);
    unlink(path);
    return rc;
}

static void profile_yaml(void **state)
{
    (void)state;
    struct doc d;
    int rc = load_yaml("ble:\n"
                       "  match: company\n"
                       "  company_id: 0x0D0A\n"
                       "  fields:\n"
                       "    - {metric: battery, offset: 0, type: u8}\n"
                       "    - {metric: sos, offset: 6, mask: 0x01, latch: true}\n"
                       "    - {metric: skin_temp, offset: 7, type: i16le, scale: 0.01}\n",
                       &d);
    assert_int_equal(rc, 0);
    char err[160];
    assert_int_equal(ble_profile_prepare(&d.ble, err, sizeof err, NULL), 0);
    assert_int_equal(d.ble.company_id, 0x0D0A);
    assert_int_equal(d.ble.fields.n, 3);
    const struct ble_field *f = d.ble.fields.items;
    assert_string_equal(f[1].metric, "sos");
    assert_true(f[1].latch && f[1].mask == 1 && f[1].type == BLE_F_U8 && f[1].scale == 1);
    assert_int_equal(f[2].type, BLE_F_I16LE);
    uint8_t a[BLE_ADV_MAX];
    struct ble_reading r;
    size_t n = hex("0CFF0A0D55480000000001420E", a);
    assert_int_equal(ble_decode(&d.ble, a, n, &r, NULL), 0);
    assert_true(metric(&r, "sos") == 1);
    cfg_free(doc_keys, &d);

    /* unknown keys, a type that does not exist, an offset beyond 62 bytes */
    assert_int_equal(load_yaml("ble: {match: company, company_id: 1, fieldz: []}\n", &d),
                     CH_ECONFIG);
    assert_int_equal(load_yaml("ble: {match: company, company_id: 1,\n"
                               "  fields: [{metric: a, offset: 0, type: u64}]}\n",
                               &d),
                     CH_ECONFIG);
    assert_int_equal(load_yaml("ble: {match: company, company_id: 1,\n"
                               "  fields: [{metric: a, offset: 99}]}\n",
                               &d),
                     CH_ECONFIG);
    assert_int_equal(load_yaml("ble: {match: nfc}\n", &d), CH_ECONFIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ibeacon_vector), cmocka_unit_test(eddystone_tlm_vector),
        cmocka_unit_test(bthome_vectors), cmocka_unit_test(profile_fields),
        cmocka_unit_test(profile_checks), cmocka_unit_test(profile_yaml),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
