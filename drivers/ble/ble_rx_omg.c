/* OpenMQTTGateway: one JSON object per advertisement. */
#include "ble_rx.h"
#include "ble_rx_json.h"
#include "err.h"

#include <string.h>

/* The receiver is the topic segment before "BTtoMQTT" (OpenMQTTGateway's
 * gateway name, home/<gateway>/BTtoMQTT/<MAC>). */
static bool receiver_from_topic(const char *topic, char out[BLE_RECEIVER_MAX])
{
    if (!topic)
        return false;
    const char *prev = NULL, *seg = topic;
    size_t prev_len = 0;
    for (;;) {
        const char *slash = strchr(seg, '/');
        size_t n = slash ? (size_t)(slash - seg) : strlen(seg);
        if (n == 8 && memcmp(seg, "BTtoMQTT", 8) == 0)
            return prev && ble_receiver_norm(prev, prev_len, out);
        prev = seg;
        prev_len = n;
        if (!slash)
            return false;
        seg = slash + 1;
    }
}

/* A 16-bit service UUID written "0xfcd2", "fcd2" or as the full Bluetooth
 * base UUID "0000fcd2-0000-1000-8000-00805f9b34fb". */
static bool uuid16(const char *s, size_t n, uint16_t *out)
{
    static const char base_tail[] = "-0000-1000-8000-00805f9b34fb";
    uint8_t b[2];
    if (n == 6 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        s += 2, n -= 2;
    else if (n == 36 && memcmp(s, "0000", 4) == 0 && strncasecmp(s + 8, base_tail, 28) == 0)
        s += 4, n = 4;
    if (n != 4 || ble_hex_decode(s, 4, b, 2) != 2)
        return false;
    *out = (uint16_t)(b[0] << 8 | b[1]);
    return true;
}

int ble_rx_omg(const char *topic, const void *payload, size_t len, int64_t now_ms,
               struct ble_rx_stats *stats, ble_adv_fn fn, void *arg)
{
    if (stats)
        stats->messages++;
    struct ble_adv a = {.ts_ms = now_ms};
    if (!receiver_from_topic(topic, a.receiver)) {
        ble_rx_reject(stats, BLE_REJ_TOPIC, topic, -1, "no <gateway>/BTtoMQTT in the topic");
        return CH_EINVAL;
    }
    json_t *root = ble_rx_json_load(topic, payload, len, stats);
    if (!root)
        return CH_EINVAL;
    int rc = CH_EINVAL;
    if (!json_is_object(root)) {
        ble_rx_reject(stats, BLE_REJ_JSON, topic, -1, "not a JSON object");
        goto out;
    }
    if (!ble_rx_json_mac(root, "id", topic, -1, stats, a.mac) ||
        !ble_rx_json_rssi(root, topic, -1, stats, &a.rssi))
        goto out;

    uint8_t buf[BLE_ADV_MAX];
    const json_t *md = json_object_get(root, "manufacturerdata");
    if (md) {
        if (!json_is_string(md)) {
            ble_rx_reject(stats, BLE_REJ_FIELD, topic, -1, "\"manufacturerdata\" not a string");
            goto out;
        }
        size_t hl = json_string_length(md);
        long n = ble_hex_decode(json_string_value(md), hl, buf, sizeof buf);
        if (n < 0) {
            ble_rx_reject(stats, hl / 2 > sizeof buf ? BLE_REJ_SIZE : BLE_REJ_HEX, topic, -1,
                          "\"manufacturerdata\"");
            goto out;
        }
        if (!ble_ad_append(a.data, &a.len, sizeof a.data, 0xFF, buf, (size_t)n)) {
            ble_rx_reject(stats, BLE_REJ_SIZE, topic, -1, "\"manufacturerdata\" too long");
            goto out;
        }
    }
    const json_t *sd = json_object_get(root, "servicedata");
    if (sd) {
        const json_t *su = json_object_get(root, "servicedatauuid");
        uint16_t uuid;
        if (!json_is_string(sd) || !json_is_string(su) ||
            !uuid16(json_string_value(su), json_string_length(su), &uuid)) {
            ble_rx_reject(stats, BLE_REJ_FIELD, topic, -1,
                          "\"servicedata\" needs a 16-bit \"servicedatauuid\"");
            goto out;
        }
        size_t hl = json_string_length(sd);
        buf[0] = (uint8_t)(uuid & 0xFF); /* AD service data: UUID little-endian first */
        buf[1] = (uint8_t)(uuid >> 8);
        long n = ble_hex_decode(json_string_value(sd), hl, buf + 2, sizeof buf - 2);
        if (n < 0) {
            ble_rx_reject(stats, hl / 2 > sizeof buf - 2 ? BLE_REJ_SIZE : BLE_REJ_HEX, topic, -1,
                          "\"servicedata\"");
            goto out;
        }
        if (!ble_ad_append(a.data, &a.len, sizeof a.data, 0x16, buf, (size_t)n + 2)) {
            ble_rx_reject(stats, BLE_REJ_SIZE, topic, -1, "\"servicedata\" too long");
            goto out;
        }
    }
    if (stats)
        stats->advs++;
    fn(arg, &a);
    rc = 1;
out:
    json_decref(root);
    return rc;
}
