/* Location: which zone (room, corridor, exit) a wearable is in, from the
 * RSSI with which the receivers of each zone hear it.
 *
 * Each receiver belongs to one zone. Over the last window_ms, a receiver's
 * score is the mean RSSI of the copies it heard; a zone's score is its best
 * receiver's. The best-scoring zone replaces the current one only when it
 * beats it by margin_db, or when it has stayed the best by at least half the
 * margin for dwell_ms (smaller leads are noise: one loud sample lifts a
 * receiver's mean for a whole window): the
 * margin lets a real move (room -> corridor, where the room's receiver drops
 * by 20 dB) show at once, the dwell lets a move between two zones heard
 * almost alike (adjacent rooms, a corridor and its exit) show after a
 * moment, and a wearable on the wall between two rooms, whose best zone
 * alternates, never flickers. When nothing hears the wearable the zone stays
 * the last one (its liveness says it is out of range): a resident last
 * located at an exit stays flagged there.
 *
 * The YAML shape (the table is ble_location_keys):
 *
 *   location:
 *     window: 8s          # RSSI averaging window (1s..60s)
 *     margin: 6           # dB a new zone must beat the current one by
 *     dwell: 5s           # or stay the best for this long
 *     zones:
 *       - {id: room-101, receivers: [AC233FA00101]}
 *       - {id: corridor-1, receivers: [gw-corr-1, "AC:23:3F:A0:01:02"]}
 *       - {id: exit-east, exit: true, receivers: [C30000ABCD01]}
 */
#ifndef CAREHUB_BLE_ZONE_H
#define CAREHUB_BLE_ZONE_H

#include "ble_adv.h"
#include "cfg.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BLE_MAX_ZONES     256
#define BLE_MAX_RECEIVERS 1024
#define BLE_LOC_SAMPLES   64 /* per wearable: 8 s x 1 adv/s x ~4 receivers, with room */

struct ble_zone_cfg {
    char *id;
    char *name; /* display name ("东门出口"); NULL: the id */
    bool exit;
    struct cfg_list receivers; /* char * */
    struct fy_node *node;
};

struct ble_location_cfg {
    int64_t window_ms;
    double margin_db;
    int64_t dwell_ms;
    struct cfg_list zones; /* struct ble_zone_cfg */
};

extern const struct cfg_key ble_zone_keys[];
extern const struct cfg_key ble_location_keys[];

struct ble_zones;

/* Builds the receiver -> zone map (copies what it needs from cfg). Returns 0,
 * or CH_ECONFIG with a message in err (too many zones or receivers, a
 * receiver id that is not valid or is in two zones, a duplicate zone id). */
int ble_zones_new(const struct ble_location_cfg *cfg, struct ble_zones **out, char *err,
                  size_t errlen);
void ble_zones_free(struct ble_zones *z);

/* The index of receiver (normalised, ble_receiver_norm) in the map, or -1. */
int ble_zones_receiver(const struct ble_zones *z, const char *receiver);
/* The zone of receiver index r. */
int ble_zones_zone_of(const struct ble_zones *z, int r);
/* The id of zone i (borrowed, lives as long as z), or NULL. */
const char *ble_zones_id(const struct ble_zones *z, int i);
bool ble_zones_is_exit(const struct ble_zones *z, int i);

/* One wearable's location state; plain data, zero-initialise with
 * ble_loc_init. */
struct ble_loc {
    struct {
        int64_t ts_ms;
        int16_t receiver;
        int8_t rssi;
    } s[BLE_LOC_SAMPLES];
    unsigned head, n; /* ring of samples, newest at head - 1 */
    int zone;         /* current zone, -1 unknown */
    int cand;         /* zone that has been the best since cand_since, -1 none */
    int64_t cand_since_ms;
    int64_t changed_ms; /* when zone last changed */
};

void ble_loc_init(struct ble_loc *l);

/* Records that receiver index r heard the wearable at rssi (time now_ms).
 * When the ring is full the oldest sample goes (a shorter window). */
void ble_loc_observe(struct ble_loc *l, int r, int8_t rssi, int64_t now_ms);

/* Re-estimates the zone at now_ms; returns it (-1 if never located). If
 * best_rssi is not NULL it gets the current zone's score (0 if none). */
int ble_loc_update(struct ble_loc *l, const struct ble_zones *z, int64_t now_ms, double *best_rssi);

#endif
