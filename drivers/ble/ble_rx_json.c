#include "ble_rx_json.h"
#include "ble_rx.h"

#include <stdio.h>
#include <string.h>

json_t *ble_rx_json_load(const char *topic, const void *payload, size_t len,
                         struct ble_rx_stats *stats)
{
    if (len > BLE_RX_MAX_MSG) {
        ble_rx_reject(stats, BLE_REJ_SIZE, topic, -1, "message larger than 64 KiB");
        return NULL;
    }
    json_error_t err;
    json_t *root = json_loadb(payload, len, 0, &err);
    if (!root) {
        char detail[100];
        snprintf(detail, sizeof detail, "line %d: %.70s", err.line, err.text);
        ble_rx_reject(stats, BLE_REJ_JSON, topic, -1, detail);
    }
    return root;
}

bool ble_rx_json_rssi(const json_t *obj, const char *topic, long entry, struct ble_rx_stats *stats,
                      int8_t *out)
{
    const json_t *v = json_object_get(obj, "rssi");
    if (!v) {
        ble_rx_reject(stats, BLE_REJ_FIELD, topic, entry, "no \"rssi\"");
        return false;
    }
    if (!json_is_integer(v) || json_integer_value(v) < BLE_RSSI_MIN ||
        json_integer_value(v) > BLE_RSSI_MAX) {
        ble_rx_reject(stats, BLE_REJ_RSSI, topic, entry, "\"rssi\" not an integer in [-127, 0]");
        return false;
    }
    *out = (int8_t)json_integer_value(v);
    return true;
}

bool ble_rx_json_mac(const json_t *obj, const char *key, const char *topic, long entry,
                     struct ble_rx_stats *stats, uint8_t mac[6])
{
    const json_t *v = json_object_get(obj, key);
    char detail[48];
    if (!json_is_string(v)) {
        snprintf(detail, sizeof detail, "no string \"%s\"", key);
        ble_rx_reject(stats, BLE_REJ_FIELD, topic, entry, detail);
        return false;
    }
    if (!ble_mac_parse(json_string_value(v), json_string_length(v), mac)) {
        snprintf(detail, sizeof detail, "\"%s\" is not a MAC", key);
        ble_rx_reject(stats, BLE_REJ_MAC, topic, entry, detail);
        return false;
    }
    return true;
}
