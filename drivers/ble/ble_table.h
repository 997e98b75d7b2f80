/* The BLE wearable pipeline and its per-wearable state table: what the
 * BLE driver calls from its MQTT message callback and from poll().
 *
 *   receiver message --ble_rx_*--> struct ble_adv
 *        --(known wearable?)--> location sample (every copy, with its RSSI)
 *        --ble_dedup--> first copy only: ble_decode with the wearable's
 *                       profile --> latest metrics, latches, zone estimate
 *   poll: ble_table_poll() --> metrics + in_range, zone, zone_exit,
 *                              battery_low, rssi; latches cleared
 *
 * Liveness is three separate things, so staff can act on each: in_range
 * (some receiver heard the wearable within out_of_range_ms), battery_low
 * (its battery metric, in %, below battery_low), and the profile's own worn
 * flag. Event metrics (a profile field with latch, BTHome button) are held
 * at their non-zero value until a poll has returned them: an SOS pressed and
 * released between two polls is still seen once.
 *
 * Only registered wearables are tracked; advertisements from other MACs
 * (phones, other tags) are counted and dropped before decoding. Times are
 * arrival times from one monotonic clock (ch_mono_ms), not the receivers'
 * clocks, which may be unset.
 *
 * Thread-safe: one mutex guards the table, so an MQTT client thread may call
 * ble_table_ingest() while the scheduler calls ble_table_poll(). */
#ifndef CAREHUB_BLE_TABLE_H
#define CAREHUB_BLE_TABLE_H

#include "ble_adv.h"
#include "ble_decode.h"
#include "ble_rx.h"
#include "ble_zone.h"

#include <stdbool.h>
#include <stdint.h>

#define BLE_MAX_WEARABLES 4096

struct ble_table_opts {
    int64_t dedup_window_ms; /* default 1000 when 0 */
    int64_t out_of_range_ms; /* default 60000 when 0 */
    double battery_low;      /* % below which battery_low = 1; < 0: no battery_low metric */
    size_t max_wearables;    /* default 1024 when 0, at most BLE_MAX_WEARABLES */
};

struct ble_table_stats {
    struct ble_rx_stats rx;    /* adapter counters (rejections by reason) */
    uint64_t unknown_mac;      /* advertisements of MACs that are not registered */
    uint64_t unknown_receiver; /* copies from receivers in no zone (no location) */
    uint64_t duplicates;       /* copies folded into an earlier one */
    uint64_t readings;         /* advertisements decoded into metrics */
    uint64_t no_match;         /* first copies the wearable's profile does not describe */
    uint64_t malformed;        /* ... that are malformed (CH_EINVAL) */
    uint64_t unsupported;      /* ... that are encrypted or of another version */
    uint64_t truncated;        /* BTHome packets cut at an unknown object id */
};

struct ble_table;

/* Creates a table over zones (borrowed: must outlive the table; NULL: no
 * location). Caller frees with ble_table_free. */
struct ble_table *ble_table_new(const struct ble_table_opts *opts, const struct ble_zones *zones);
void ble_table_free(struct ble_table *t);

/* Registers a wearable: id (1..64 chars, copied), its MAC, and its profile
 * (borrowed, prepared with ble_profile_prepare or ble_profile_builtin; must
 * outlive the registration; NULL: location and liveness only). Returns 0,
 * CH_EINVAL (bad id, id or MAC already registered) or CH_EFULL. */
int ble_table_add(struct ble_table *t, const char *id, const uint8_t mac[6],
                  const struct ble_profile *profile);

/* Gives wearable id limits of its own instead of the table's (its
 * out_of_range_ms when > 0, its battery_low). Returns 0 or CH_ENOTFOUND. */
int ble_table_set_limits(struct ble_table *t, const char *id, int64_t out_of_range_ms,
                         double battery_low);

/* Forgets a wearable (its pending latches with it). CH_ENOTFOUND if none. */
int ble_table_remove(struct ble_table *t, const char *id);

/* Runs one receiver message through the adapter of format and feeds every
 * advertisement in it. Returns the adapter's count of advertisements, or
 * CH_EINVAL if the message was rejected whole (see ble_table_stats). The
 * payload is borrowed. */
int ble_table_ingest(struct ble_table *t, enum ble_rx_format format, const char *topic,
                     const void *payload, size_t len, int64_t now_ms);

/* As ble_table_ingest, with the adapter's counts kept in *rx (one receiver
 * connection's, guarded by the table's lock; NULL: the table's own), and
 * their total of rejections after this message in *rejected (if not NULL). */
int ble_table_ingest_rx(struct ble_table *t, enum ble_rx_format format, const char *topic,
                        const void *payload, size_t len, int64_t now_ms, struct ble_rx_stats *rx,
                        uint64_t *rejected);
/* A copy of *rx, taken under the table's lock. */
void ble_table_rx_stats(struct ble_table *t, const struct ble_rx_stats *rx,
                        struct ble_rx_stats *out);

/* Feeds one advertisement. Returns 1 if it produced a reading, 0 if it only
 * served location and liveness (a copy, no payload, no match, a bad
 * payload: counted), CH_ENOTFOUND if the MAC is not registered. */
int ble_table_feed(struct ble_table *t, const struct ble_adv *adv, int64_t now_ms);

struct ble_state {
    char id[65];
    uint8_t mac[6];
    bool heard;              /* ever heard since registration */
    int64_t last_heard_ms;   /* any copy (0 if never) */
    int64_t last_reading_ms; /* last decoded reading (0 if never) */
    bool in_range;
    int zone;            /* -1 unknown */
    const char *zone_id; /* borrowed from the zones; NULL if unknown */
    bool zone_exit;
    char ident[40]; /* iBeacon UUID if the profile is ibeacon */
    /* Everything above as metrics too, for the driver to copy into its
     * reading: the profile's metrics (latched ones resolved), then in_range,
     * zone and zone_exit (when located), battery_low (when the wearable
     * reports battery and battery_low >= 0), rssi (its zone's score). */
    size_t n;
    struct ble_metric m[BLE_MAX_METRICS + 5];
};

/* Copies wearable id's state at now_ms into *out and clears the latches it
 * returned. Returns 0 or CH_ENOTFOUND. */
int ble_table_poll(struct ble_table *t, const char *id, int64_t now_ms, struct ble_state *out);

/* A copy of the counters. */
void ble_table_stats(struct ble_table *t, struct ble_table_stats *out);

#endif
