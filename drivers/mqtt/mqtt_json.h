/* The payload decoder of the mqtt-json driver (mqtt_json.c), as a pure
 * function: a Wi-Fi bed sensor's (or any mqtt-json device's) JSON message
 * against its profile's field mapping. No I/O, no locks; the driver calls it
 * on Paho's thread, the fuzz target on arbitrary bytes. */
#ifndef CAREHUB_MQTT_JSON_H
#define CAREHUB_MQTT_JSON_H

#include "model.h"

#include <stdbool.h>
#include <stddef.h>

/* Decodes payload[0..len) (not NUL-terminated) for a device with profile p
 * (protocol mqtt-json). For every metric i of p whose field (members joined
 * by dots) the payload has as a number, or as true/false (1/0), and whose
 * value times scale plus offset is finite, sets values[i] to it and have[i]
 * to true; the other entries are left as they were. values and have hold
 * p->metrics.n entries. Borrows everything. Returns NULL, or why the payload
 * was rejected, written to why[0..n) (over 64 KiB, not JSON, none of the
 * profile's fields in it); a rejected payload changes nothing. */
const char *mqtt_json_decode(const struct profile *p, const char *payload, size_t len,
                             double *values, bool *have, char *why, size_t n);

#endif
