/* A care home's MQTT-side devices for care-sim: residents wearing care
 * bracelets, the BLE receivers that hear them, and Wi-Fi bed sensors.
 *
 * Where a resident is and what their bracelet says are pure functions of
 * (seed, the resident, scenario time), like every other simulated value
 * (sim_value.h), so a seed replays the same day:
 *   - the daily pattern: in their room (home zone) while their bed's routine
 *     has them in bed and through the rest of the day, in the dining zone for
 *     meals (07:30, 11:40, 17:30, about 40 min, +-10 min per day), on a walk
 *     in one of the routine's walk zones in the afternoon (starting
 *     15:00-16:00, 40 min); moving from one zone to another they pass the
 *     zones between, a minute each (shortest path over `adjacent`);
 *   - scenario walks take them through adjacent zones to a zone over a given
 *     time, where they stay until another walk or a `walk: {release: true}`;
 *   - a bracelet taken off (worn held at 0) stays where it was taken off and
 *     shows no heart rate; one whose battery is empty advertises nothing.
 *
 * Radio: each wearable advertises every `interval` (real time; values at
 * scenario time). Every receiver in its zone hears it at about -55 dBm,
 * those of adjacent zones at about -78 dBm (missing about one in ten),
 * farther ones not at all; the noise is drawn from (seed, wearable,
 * receiver, advertisement number). A receiver with `fault: silent` hears and
 * publishes nothing. Receivers publish in their own format, exactly what
 * care-edge's adapters (drivers/ble/ble_rx_*.c) read:
 *   omg     one message per advertisement on <topic>/<MAC without colons>,
 *           {"id":"C3:00:..","rssi":-55,"manufacturerdata":"ffff5a0448"}
 *   minew   one JSON-LONG array per upload interval:
 *           [{"type":"Gateway","mac":"<id>"},{"type":"Unknown","mac":"C30000000101",
 *             "rssi":-55,"rawData":"0201060...."},...]
 *   ingics  one message per upload interval, a line per advertisement:
 *           $GPRP,C30000000101,<gateway MAC>,-55,02010606FFFFFF5A0448
 * Wi-Fi beds publish deploy/profiles/wifi-bed.yaml's JSON every interval,
 * with the values of a bed-mb Modbus bed sensor of the same name (the same
 * routine, the same scenario sets). */
#ifndef CAREHUB_SIM_HOME_H
#define CAREHUB_SIM_HOME_H

#include "sim_config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIM_RSSI_SAME     (-55)
#define SIM_RSSI_ADJACENT (-78)
#define SIM_TRANSIT_MS    60000 /* time spent in each zone passed on the way */

struct sim_home;

/* Hands one message to MQTT; payload borrowed for the call. */
typedef void (*sim_publish_fn)(void *ctx, const char *topic, const void *payload, size_t len);

struct sim_home_stats {
    uint64_t advs;     /* advertisements sent by wearables */
    uint64_t heard;    /* receptions (one advertisement, one receiver) */
    uint64_t messages; /* MQTT messages handed over: receivers and beds */
    uint64_t beds;     /* Wi-Fi bed messages among them */
};

/* The home of cfg (borrowed: it must outlive the home), with its scenario
 * events. Caller frees with sim_home_free(). Aborts on OOM. */
struct sim_home *sim_home_new(const struct sim_config *cfg);
void sim_home_free(struct sim_home *h);

/* Whether cfg has any MQTT device, i.e. whether a home is worth making. */
bool sim_home_wanted(const struct sim_config *cfg);

/* Zone index of wearable w at scenario time at_ms, the simulated day having
 * started at Unix time start_ms. */
size_t sim_home_zone(const struct sim_home *h, size_t w, int64_t start_ms, int64_t at_ms);

/* The daily pattern alone (no scenario) at Unix time t_ms. */
size_t sim_home_routine_zone(const struct sim_home *h, size_t w, int64_t t_ms);

/* What wearable w says at at_ms: values[SIM_WEAR_METRICS]. */
void sim_home_wearable_values(const struct sim_home *h, size_t w, int64_t start_ms, int64_t at_ms,
                              double *values);

/* Whether receiver rx hears advertisement number k of wearable w, which is
 * in zone; *rssi is then its strength. Ignores faults. */
bool sim_home_rssi(const struct sim_home *h, size_t w, size_t rx, size_t zone, uint64_t k,
                   int *rssi);

/* Whether receiver rx is silent (scenario fault) at at_ms. */
bool sim_home_receiver_silent(const struct sim_home *h, size_t rx, int64_t at_ms);

/* The care-band manufacturer data for values: company 0xFFFF (little
 * endian), battery, flags (bit 0 SOS, 1 fall, 2 worn), heart rate; 5 bytes
 * into out. */
void sim_home_mfr_data(const double *values, uint8_t out[5]);

/* The wifi-bed JSON of Wi-Fi bed b at at_ms into buf (NUL-terminated).
 * Returns its length, or 0 when the bed is silent (scenario fault). */
size_t sim_home_bed_json(const struct sim_home *h, size_t b, int64_t start_ms, int64_t at_ms,
                         char *buf, size_t n);

/* Sends what is due at monotonic time mono_ms (advertisements through the
 * receivers, receiver uploads, bed messages) through publish. Returns the
 * monotonic time of the next thing due. */
int64_t sim_home_step(struct sim_home *h, int64_t mono_ms, int64_t start_ms, int64_t at_ms,
                      sim_publish_fn publish, void *ctx);

/* Borrowed; valid while h lives. */
const struct sim_home_stats *sim_home_stats(const struct sim_home *h);

#endif
