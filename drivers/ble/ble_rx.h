/* Receiver adapters: turn what a BLE receiver publishes on the local MQTT
 * broker into struct ble_adv records, one callback per advertisement.
 *
 *   format   topic                          payload
 *   omg      home/<gateway>/BTtoMQTT/<MAC>  one JSON object: "id", "rssi",
 *                                           "manufacturerdata" and/or
 *                                           "servicedata"+"servicedatauuid" hex
 *   minew    e.g. /gw/<gateway MAC>/status  JSON array (JSON-LONG or JSON-RAW):
 *                                           a {"type":"Gateway","mac":..} or
 *                                           {"gateway":..} element names the
 *                                           receiver; the others are
 *                                           {"timestamp","mac","rssi","rawData"}
 *   ingics   anything                       lines "$GPRP,<MAC>,<gateway MAC>,
 *                                           <rssi>,<adv hex>[,<unix time>]"
 *                                           ($RSPR scan responses alike)
 *
 * The receiver id comes from the topic for OpenMQTTGateway, from the payload
 * (falling back to a MAC in the topic) for Minew, from each line for Ingics;
 * it is normalised with ble_receiver_norm().
 *
 * OpenMQTTGateway gives the manufacturer and service data as separate fields;
 * the adapter rebuilds them as AD structures (0xFF, 0x16) so one decoder
 * serves every format. An entry without payload is still delivered (len 0):
 * its RSSI serves location.
 *
 * Bad input never stops the rest: each rejected entry is counted in
 * stats->rejected[reason] and described in stats->last_error; the other
 * entries of the same array or message are still delivered. Pure functions:
 * the payload is borrowed (need not be NUL-terminated); the record passed to
 * fn lives only during the call. Safe to call from any thread as long as
 * each thread has its own stats. */
#ifndef CAREHUB_BLE_RX_H
#define CAREHUB_BLE_RX_H

#include "ble_adv.h"

#include <stddef.h>
#include <stdint.h>

/* Bound on one MQTT message; larger ones are rejected whole (BLE_REJ_SIZE). */
#define BLE_RX_MAX_MSG  (64 * 1024)
#define BLE_RX_MAX_LINE 256

enum ble_rx_format { BLE_RX_OMG = 0, BLE_RX_MINEW, BLE_RX_INGICS, BLE_RX_FORMATS };

typedef void (*ble_adv_fn)(void *arg, const struct ble_adv *adv);

/* Each returns the number of advertisements delivered to fn (>= 0), or
 * CH_EINVAL when the message as a whole was rejected (nothing delivered).
 * now_ms stands in for receivers that send no time. stats may be NULL. */
int ble_rx_omg(const char *topic, const void *payload, size_t len, int64_t now_ms,
               struct ble_rx_stats *stats, ble_adv_fn fn, void *arg);
int ble_rx_minew(const char *topic, const void *payload, size_t len, int64_t now_ms,
                 struct ble_rx_stats *stats, ble_adv_fn fn, void *arg);
int ble_rx_ingics(const char *topic, const void *payload, size_t len, int64_t now_ms,
                  struct ble_rx_stats *stats, ble_adv_fn fn, void *arg);

/* Dispatches on format. */
int ble_rx_parse(enum ble_rx_format format, const char *topic, const void *payload, size_t len,
                 int64_t now_ms, struct ble_rx_stats *stats, ble_adv_fn fn, void *arg);

/* "omg", "minew", "ingics" -> format; returns 0 or CH_EINVAL. */
int ble_rx_format_parse(const char *name, enum ble_rx_format *out);
const char *ble_rx_format_name(enum ble_rx_format format);

#endif
