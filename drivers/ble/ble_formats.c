/* The standard advertisement formats decoded without a profile's fields:
 * Apple iBeacon, Google Eddystone TLM (unencrypted), BTHome v2 (unencrypted). */
#include "ble_decode.h"
#include "err.h"

#include <stdio.h>
#include <string.h>

/* iBeacon: manufacturer data of Apple (0x004C), type 0x02, length 0x15:
 * 16-byte proximity UUID, major and minor (big-endian), measured power at 1 m
 * (signed dBm). */
int ble_decode_ibeacon(const uint8_t *d, size_t n, struct ble_reading *out, const char **why)
{
    if (n < 4 || d[0] != 0x4C || d[1] != 0x00 || d[2] != 0x02 || d[3] != 0x15)
        return CH_ENOTFOUND;
    if (n != 25) {
        *why = "iBeacon of the wrong length";
        return CH_EINVAL;
    }
    const uint8_t *u = d + 4;
    snprintf(out->ident, sizeof out->ident,
             "%02X%02X%02X%02X-%02X%02X-%02X%02X-%02X%02X-%02X%02X%02X%02X%02X%02X", u[0], u[1],
             u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
             u[15]);
    ble_reading_add(out, "major", (double)(d[20] << 8 | d[21]), false);
    ble_reading_add(out, "minor", (double)(d[22] << 8 | d[23]), false);
    ble_reading_add(out, "tx_power", (double)(int8_t)d[24], false);
    return 0;
}

/* Eddystone TLM: service data of 0xFEAA, frame type 0x20, version 0x00, then
 * big-endian battery mV (0: not reported), temperature as signed 8.8 fixed
 * point (0x8000: not reported), advertising PDU count, time since power-on
 * in 0.1 s. Version 0x01 is the encrypted TLM, which needs the EID key. */
int ble_decode_eddystone_tlm(const uint8_t *d, size_t n, struct ble_reading *out, const char **why)
{
    if (n < 3 || d[0] != 0xAA || d[1] != 0xFE || d[2] != 0x20)
        return CH_ENOTFOUND;
    if (n < 4 || d[3] != 0x00) {
        *why = "encrypted or unknown Eddystone TLM version";
        return CH_EPROTO;
    }
    if (n != 16) {
        *why = "Eddystone TLM of the wrong length";
        return CH_EINVAL;
    }
    unsigned vbatt = (unsigned)(d[4] << 8 | d[5]);
    unsigned temp = (unsigned)(d[6] << 8 | d[7]);
    uint32_t adv = (uint32_t)d[8] << 24 | (uint32_t)d[9] << 16 | (uint32_t)d[10] << 8 | d[11];
    uint32_t sec = (uint32_t)d[12] << 24 | (uint32_t)d[13] << 16 | (uint32_t)d[14] << 8 | d[15];
    if (vbatt)
        ble_reading_add(out, "battery_mv", vbatt, false);
    if (temp != 0x8000)
        ble_reading_add(out, "temperature", (double)(int16_t)(uint16_t)temp / 256.0, false);
    ble_reading_add(out, "adv_count", adv, false);
    ble_reading_add(out, "uptime_s", sec / 10.0, false);
    return 0;
}

/* BTHome v2 object ids: name, size in bytes (0: length-prefixed), signed,
 * factor. From the BTHome v2 format specification (bthome.io/format). */
struct bthome_obj {
    uint8_t id;
    uint8_t size;
    bool is_signed;
    bool latch;
    double factor;
    const char *name;
};

/* clang-format off */
static const struct bthome_obj bthome_objs[] = {
    {0x00, 1, false, false, 1, "packet_id"},
    {0x01, 1, false, false, 1, "battery"},
    {0x02, 2, true, false, 0.01, "temperature"},
    {0x03, 2, false, false, 0.01, "humidity"},
    {0x04, 3, false, false, 0.01, "pressure"},
    {0x05, 3, false, false, 0.01, "illuminance"},
    {0x06, 2, false, false, 0.01, "mass_kg"},
    {0x07, 2, false, false, 0.01, "mass_lb"},
    {0x08, 2, true, false, 0.01, "dewpoint"},
    {0x09, 1, false, false, 1, "count"},
    {0x0A, 3, false, false, 0.001, "energy"},
    {0x0B, 3, false, false, 0.01, "power"},
    {0x0C, 2, false, false, 0.001, "voltage"},
    {0x0D, 2, false, false, 1, "pm25"},
    {0x0E, 2, false, false, 1, "pm10"},
    {0x0F, 1, false, false, 1, "generic"},
    {0x10, 1, false, false, 1, "power_on"},
    {0x11, 1, false, false, 1, "opening"},
    {0x12, 2, false, false, 1, "co2"},
    {0x13, 2, false, false, 1, "tvoc"},
    {0x14, 2, false, false, 0.01, "moisture"},
    {0x15, 1, false, false, 1, "battery_low"},
    {0x16, 1, false, false, 1, "charging"},
    {0x17, 1, false, false, 1, "co"},
    {0x18, 1, false, false, 1, "cold"},
    {0x19, 1, false, false, 1, "connectivity"},
    {0x1A, 1, false, false, 1, "door"},
    {0x1B, 1, false, false, 1, "garage_door"},
    {0x1C, 1, false, false, 1, "gas"},
    {0x1D, 1, false, false, 1, "heat"},
    {0x1E, 1, false, false, 1, "light"},
    {0x1F, 1, false, false, 1, "lock"},
    {0x20, 1, false, false, 1, "moisture_detected"},
    {0x21, 1, false, false, 1, "motion"},
    {0x22, 1, false, false, 1, "moving"},
    {0x23, 1, false, false, 1, "occupancy"},
    {0x24, 1, false, false, 1, "plug"},
    {0x25, 1, false, false, 1, "presence"},
    {0x26, 1, false, false, 1, "problem"},
    {0x27, 1, false, false, 1, "running"},
    {0x28, 1, false, false, 1, "safety"},
    {0x29, 1, false, false, 1, "smoke"},
    {0x2A, 1, false, false, 1, "sound"},
    {0x2B, 1, false, false, 1, "tamper"},
    {0x2C, 1, false, false, 1, "vibration"},
    {0x2D, 1, false, false, 1, "window"},
    {0x2E, 1, false, false, 1, "humidity"},
    {0x2F, 1, false, false, 1, "moisture"},
    {0x3A, 1, false, true, 1, "button"},   /* event: 1 press, 2 double, 4 long, 0x80 hold */
    {0x3C, 2, false, true, 1, "dimmer"},   /* event + steps */
    {0x3D, 2, false, false, 1, "count"},
    {0x3E, 4, false, false, 1, "count"},
    {0x3F, 2, true, false, 0.1, "rotation"},
    {0x40, 2, false, false, 1, "distance_mm"},
    {0x41, 2, false, false, 0.1, "distance_m"},
    {0x42, 3, false, false, 0.001, "duration"},
    {0x43, 2, false, false, 0.001, "current"},
    {0x44, 2, false, false, 0.01, "speed"},
    {0x45, 2, true, false, 0.1, "temperature"},
    {0x46, 1, false, false, 0.1, "uv_index"},
    {0x47, 2, false, false, 0.1, "volume_l"},
    {0x48, 2, false, false, 1, "volume_ml"},
    {0x49, 2, false, false, 0.001, "flow_rate"},
    {0x4A, 2, false, false, 0.1, "voltage"},
    {0x4B, 3, false, false, 0.001, "gas_m3"},
    {0x4C, 4, false, false, 0.001, "gas_m3"},
    {0x4D, 4, false, false, 0.001, "energy"},
    {0x4E, 4, false, false, 0.001, "volume_l"},
    {0x4F, 4, false, false, 0.001, "water_l"},
    {0x50, 4, false, false, 1, "timestamp"},
    {0x51, 2, false, false, 0.001, "acceleration"},
    {0x52, 2, false, false, 0.001, "gyroscope"},
    {0x53, 0, false, false, 1, NULL},       /* text */
    {0x54, 0, false, false, 1, NULL},       /* raw */
    {0x55, 4, false, false, 0.001, "volume_storage"},
    {0x56, 2, false, false, 1, "conductivity"},
    {0x57, 1, true, false, 1, "temperature"},
    {0x58, 1, true, false, 0.35, "temperature"},
    {0x59, 1, true, false, 1, "count"},
    {0x5A, 2, true, false, 1, "count"},
    {0x5B, 4, true, false, 1, "count"},
    {0x5C, 4, true, false, 0.01, "power"},
    {0x5D, 2, true, false, 0.001, "current"},
    {0x5E, 2, false, false, 0.01, "direction"},
    {0x5F, 2, false, false, 0.1, "precipitation"},
    {0x60, 1, false, false, 1, "channel"},
    {0xF0, 2, false, false, 1, "device_type"},
    {0xF1, 4, false, false, 1, "firmware"},
    {0xF2, 3, false, false, 1, "firmware"},
};
/* clang-format on */

static const struct bthome_obj *bthome_find(uint8_t id)
{
    /* Sorted by id: binary search keeps a long packet cheap. */
    size_t lo = 0, hi = sizeof bthome_objs / sizeof bthome_objs[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (bthome_objs[mid].id == id)
            return &bthome_objs[mid];
        if (bthome_objs[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* BTHome v2: service data of 0xFCD2; a device information byte (bit 0
 * encrypted, bit 2 trigger based, bits 5..7 version = 2), then objects: an
 * id byte and a little-endian value whose size the id fixes. An unknown id
 * has unknown size, so decoding stops there (reading.truncated) and keeps
 * what came before. */
int ble_decode_bthome(const uint8_t *d, size_t n, struct ble_reading *out, const char **why)
{
    if (n < 2 || d[0] != 0xD2 || d[1] != 0xFC)
        return CH_ENOTFOUND;
    if (n < 3) {
        *why = "BTHome without device information";
        return CH_EINVAL;
    }
    uint8_t info = d[2];
    if ((info >> 5) != 2) {
        *why = "BTHome version other than 2";
        return CH_EPROTO;
    }
    if (info & 1) {
        *why = "encrypted BTHome (no key)";
        return CH_EPROTO;
    }
    size_t i = 3;
    while (i < n) {
        const struct bthome_obj *o = bthome_find(d[i]);
        if (!o) {
            out->truncated = true;
            break;
        }
        i++;
        if (o->size == 0) {
            if (i >= n || d[i] > n - i - 1) {
                *why = "BTHome text/raw object cut short";
                return CH_EINVAL;
            }
            i += 1 + d[i];
            continue;
        }
        if (o->size > n - i) {
            *why = "BTHome object cut short";
            return CH_EINVAL;
        }
        uint32_t u = 0;
        for (size_t k = 0; k < o->size; k++)
            u |= (uint32_t)d[i + k] << (8 * k);
        double v;
        if (o->is_signed) {
            unsigned bits = 8u * o->size;
            int64_t s = (int64_t)u;
            if (bits < 32 && (u >> (bits - 1)) & 1)
                s -= (int64_t)1 << bits;
            else if (bits == 32)
                s = (int32_t)u;
            v = (double)s * o->factor;
        } else {
            v = (double)u * o->factor;
        }
        ble_reading_add(out, o->name, v, o->latch);
        i += o->size;
    }
    return 0;
}

static const struct ble_profile builtin_ibeacon = {.match = BLE_MATCH_IBEACON};
static const struct ble_profile builtin_tlm = {.match = BLE_MATCH_EDDYSTONE_TLM};
static const struct ble_profile builtin_bthome = {.match = BLE_MATCH_BTHOME};

const struct ble_profile *ble_profile_builtin(enum ble_match m)
{
    switch (m) {
    case BLE_MATCH_IBEACON:
        return &builtin_ibeacon;
    case BLE_MATCH_EDDYSTONE_TLM:
        return &builtin_tlm;
    case BLE_MATCH_BTHOME:
        return &builtin_bthome;
    default:
        return NULL;
    }
}
