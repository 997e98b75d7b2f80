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
