/* Minew MG3/G1 gateways, JSON-LONG and JSON-RAW upload formats: one array
 * per upload, one element per advertisement heard, plus (depending on the
 * firmware) an element describing the gateway itself. */
#include "ble_rx.h"
#include "ble_rx_json.h"
#include "err.h"

#include <math.h>
#include <string.h>

/* A segment of the topic that is a MAC (Minew's default topic is
 * /gw/<gateway MAC>/status). */
static bool receiver_from_topic(const char *topic, char out[BLE_RECEIVER_MAX])
{
    uint8_t mac[6];
    const char *seg = topic;
    while (seg && *seg) {
        const char *slash = strchr(seg, '/');
        size_t n = slash ? (size_t)(slash - seg) : strlen(seg);
        if (ble_mac_parse(seg, n, mac)) {
            ble_mac_format(mac, out);
            return true;
        }
        seg = slash ? slash + 1 : NULL;
    }
    return false;
}

/* A JSON-LONG iBeacon entry without rawData ("ibeaconUuid", 32 hex digits
 * with or without dashes, "ibeaconMajor", "ibeaconMinor", "ibeaconTxPower")
 * rebuilt as the advertisement it was decoded from (flags, then Apple's
 * iBeacon manufacturer data), so the iBeacon profile reads it as from any
 * receiver. Returns the length, 0 if the entry has no such fields, -1 if
 * they are malformed. */
static long ibeacon_from_fields(const json_t *e, uint8_t *out, size_t cap)
{
    const json_t *uuid = json_object_get(e, "ibeaconUuid");
    if (!uuid)
        return 0;
    const json_t *major = json_object_get(e, "ibeaconMajor");
    const json_t *minor = json_object_get(e, "ibeaconMinor");
    const json_t *tx = json_object_get(e, "ibeaconTxPower");
    if (!json_is_string(uuid) || !json_is_integer(major) || !json_is_integer(minor) ||
        !json_is_integer(tx))
        return -1;
    json_int_t ma = json_integer_value(major), mi = json_integer_value(minor),
               tp = json_integer_value(tx);
    if (ma < 0 || ma > 0xFFFF || mi < 0 || mi > 0xFFFF || tp < -128 || tp > 127)
        return -1;
    char hex[33];
    size_t n = 0;
    for (const char *s = json_string_value(uuid); *s; s++) {
        if (*s == '-')
            continue;
        if (n == 32)
            return -1;
        hex[n++] = *s;
    }
    uint8_t m[25] = {0x4C, 0x00, 0x02, 0x15}; /* Apple, iBeacon, 21 bytes follow */
    if (n != 32 || ble_hex_decode(hex, 32, m + 4, 16) != 16)
        return -1;
    m[20] = (uint8_t)(ma >> 8);
    m[21] = (uint8_t)ma;
    m[22] = (uint8_t)(mi >> 8);
    m[23] = (uint8_t)mi;
    m[24] = (uint8_t)(int8_t)tp;
    static const uint8_t flags = 0x06; /* LE general discoverable, no BR/EDR */
    size_t len = 0;
    if (!ble_ad_append(out, &len, cap, 0x01, &flags, 1) ||
        !ble_ad_append(out, &len, cap, 0xFF, m, sizeof m))
        return -1;
    return (long)len;
}

static bool is_gateway_entry(const json_t *e)
{
    const json_t *t = json_object_get(e, "type");
    return (json_is_string(t) && strcmp(json_string_value(t), "Gateway") == 0) ||
           json_object_get(e, "gateway") != NULL;
}

static bool entry_time(const json_t *e, int64_t now_ms, int64_t *out)
{
    const json_t *t = json_object_get(e, "timestamp");
    if (!t) {
        *out = now_ms;
        return true;
    }
    if (json_is_string(t))
        return ble_parse_iso8601(json_string_value(t), out);
    if (json_is_number(t)) {
        double v = json_number_value(t);
        if (!isfinite(v) || v < 0 || v > 1e14)
            return false;
        /* Unix seconds until the year 5138; beyond that the gateway sent ms. */
        *out = v < 1e11 ? (int64_t)(v * 1000) : (int64_t)v;
        return true;
    }
    return false;
}

int ble_rx_minew(const char *topic, const void *payload, size_t len, int64_t now_ms,
                 struct ble_rx_stats *stats, ble_adv_fn fn, void *arg)
{
    if (stats)
        stats->messages++;
    json_t *root = ble_rx_json_load(topic, payload, len, stats);
    if (!root)
        return CH_EINVAL;
    int rc = CH_EINVAL;
    if (!json_is_array(root)) {
        ble_rx_reject(stats, BLE_REJ_JSON, topic, -1, "not a JSON array");
        goto out;
    }
    char receiver[BLE_RECEIVER_MAX] = "";
    size_t i;
    json_t *e;
    json_array_foreach(root, i, e)
    {
        if (!json_is_object(e) || !is_gateway_entry(e))
            continue;
        const json_t *g = json_object_get(e, "gateway");
        if (!json_is_string(g))
            g = json_object_get(e, "mac");
        if (json_is_string(g) &&
            ble_receiver_norm(json_string_value(g), json_string_length(g), receiver))
            break;
        receiver[0] = '\0';
    }
    if (!receiver[0] && !(topic && receiver_from_topic(topic, receiver))) {
        ble_rx_reject(stats, BLE_REJ_TOPIC, topic, -1,
                      "no gateway element and no gateway MAC in the topic");
        goto out;
    }
    rc = 0;
    json_array_foreach(root, i, e)
    {
        long entry = (long)i;
        if (!json_is_object(e)) {
            ble_rx_reject(stats, BLE_REJ_JSON, topic, entry, "not an object");
            continue;
        }
        if (is_gateway_entry(e))
            continue;
        struct ble_adv a = {0};
        memcpy(a.receiver, receiver, sizeof a.receiver);
        if (!ble_rx_json_mac(e, "mac", topic, entry, stats, a.mac) ||
            !ble_rx_json_rssi(e, topic, entry, stats, &a.rssi))
            continue;
        if (!entry_time(e, now_ms, &a.ts_ms)) {
            ble_rx_reject(stats, BLE_REJ_TIME, topic, entry, "\"timestamp\"");
            continue;
        }
        const json_t *raw = json_object_get(e, "rawData");
        if (raw) {
            if (!json_is_string(raw)) {
                ble_rx_reject(stats, BLE_REJ_FIELD, topic, entry, "\"rawData\" not a string");
                continue;
            }
            size_t hl = json_string_length(raw);
            long n = ble_hex_decode(json_string_value(raw), hl, a.data, sizeof a.data);
            if (n < 0) {
                ble_rx_reject(stats, hl / 2 > sizeof a.data ? BLE_REJ_SIZE : BLE_REJ_HEX, topic,
                              entry, "\"rawData\"");
                continue;
            }
            a.len = (size_t)n;
        } else {
            long n = ibeacon_from_fields(e, a.data, sizeof a.data);
            if (n < 0) /* counted; still heard, for location and liveness */
                ble_rx_reject(stats, BLE_REJ_FIELD, topic, entry, "iBeacon fields");
            a.len = n > 0 ? (size_t)n : 0;
        }
        if (stats)
            stats->advs++;
        fn(arg, &a);
        rc++;
    }
out:
    json_decref(root);
    return rc;
}
