/* Deduplication: several receivers forward the same advertisement, and the
 * wearable's reading must count once. An advertisement is a copy when the
 * same MAC sent the same payload bytes (the caller picks which: ble_table
 * compares the manufacturer and service data) less than window_ms before (measured
 * from the first copy, so a burst of copies cannot keep one alive forever).
 *
 * A bounded, lossy table: (MAC, payload) is reduced to a 64-bit FNV-1a hash
 * and kept in a fixed number of slots probed in groups of 8; when a group is
 * full the oldest entry goes. Losing an entry early only means a late copy
 * counts as a second reading of identical values, never a lost reading. */
#ifndef CAREHUB_BLE_DEDUP_H
#define CAREHUB_BLE_DEDUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ble_dedup;

/* slots is rounded up to a power of two in [64, 65536]. Caller frees with
 * ble_dedup_free. */
struct ble_dedup *ble_dedup_new(size_t slots, int64_t window_ms);
void ble_dedup_free(struct ble_dedup *d);

/* True if this (mac, data) is a copy of one first seen less than window_ms
 * before now_ms; false if it is new (and is then remembered). now_ms should
 * come from one monotonic clock; a clock going back counts as "within". */
bool ble_dedup_seen(struct ble_dedup *d, const uint8_t mac[6], const uint8_t *data, size_t len,
                    int64_t now_ms);

#endif
