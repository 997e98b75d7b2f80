/* Helpers the JSON receiver adapters share (not part of the public API). */
#ifndef CAREHUB_BLE_RX_JSON_H
#define CAREHUB_BLE_RX_JSON_H

#include "ble_adv.h"

#include <jansson.h>
#include <stdbool.h>

/* Parses a JSON document of len bytes; NULL (and a counted rejection) if it
 * is oversized or not JSON. */
json_t *ble_rx_json_load(const char *topic, const void *payload, size_t len,
                         struct ble_rx_stats *stats);

/* Reads "rssi" of obj into *out; on failure counts the reason and returns
 * false. */
bool ble_rx_json_rssi(const json_t *obj, const char *topic, long entry, struct ble_rx_stats *stats,
                      int8_t *out);

/* Reads a MAC-valued string member into mac; counts and returns false if
 * missing or malformed. */
bool ble_rx_json_mac(const json_t *obj, const char *key, const char *topic, long entry,
                     struct ble_rx_stats *stats, uint8_t mac[6]);

#endif
