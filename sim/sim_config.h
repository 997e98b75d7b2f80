/* care-sim configuration: endpoints, slaves and scenario events, read from
 * YAML with common/cfg.h tables and checked as a whole. Every problem is
 * reported as file:line:column with the key, all in one pass.
 *
 *   seed: 42                       # noise seed (default 0)
 *   utc_offset_min: 480            # local time for the daily curves (default +08:00)
 *   endpoints:
 *     - id: lan
 *       tcp: 127.0.0.1:15020       # loopback only unless allow_any_address
 *     - id: rs485-1
 *       rtu: /tmp/x/ptyB           # a PTY or serial device
 *       baud: 9600                 # parity N/E/O, data_bits 7/8, stop_bits 1/2
 *     - id: bed-12
 *       radar: /tmp/x/radarB       # a 60 GHz sleep radar streaming frames (115200 by
 *                                  # default); exactly one slave, of a radar model
 *   slaves:
 *     - name: room101-th
 *       endpoint: rs485-1
 *       unit: 1                    # default: the model's usual address
 *       model: jxct-th
 *       count: 1                   # replicas at unit..unit+count-1, named NAME-1..NAME-count
 *   scenario:                      # also accepted alone in a --scenario file
 *     - at: 30s
 *       slave: room101-th          # a name, or a replicated group's name (all replicas)
 *       fault: silent              # none | silent | exception | garbage (radar: noise
 *                                  # between frames, bad checksums and tails)
 *       exception_code: 4          # with fault: exception (1..11, default 4)
 *     - at: 1m
 *       slave: room101-th
 *       set: {metric: temperature, value: 35}   # or ramp_to: X, over: 10m; or release: true
 *
 * A care home's MQTT-side devices (sim_home.h), all optional:
 *   mqtt: {broker: tcp://127.0.0.1:1883, client_id: care-sim}   # loopback unless allowed
 *   start_at: "03:00"              # the simulated day starts at this local time today
 *                                  # (default: now); scenario times count from it
 *   zones:                         # where residents can be, and which zones touch
 *     - {id: room-101, adjacent: [corridor-1]}     # adjacency is made symmetric
 *     - {id: corridor-1, adjacent: [dining, exit-1]}
 *   routine: {dining: dining, walk: [garden]}      # zones of the daily pattern
 *   receivers:                     # BLE receivers forwarding what they hear
 *     - {id: gw-101, format: omg, zone: room-101}  # omg | minew | ingics; optional
 *                                  # topic: and interval: (minew/ingics upload, 1s)
 *   wearables:                     # care bracelets (care-band advertisements)
 *     - {mac: "C3:00:00:00:01:01", resident: alice, home: room-101, interval: 1s,
 *        battery: 90, hr: 72}
 *   wifi_beds:                     # Wi-Fi bed sensors publishing wifi-bed JSON
 *     - {name: bed-101, topic: sensors/bed/101/state, resident: alice, interval: 5s}
 *   scenario:                      # events name one target: slave, wearable (resident
 *     - {at: 3h, wearable: alice, set: {metric: fall, pulse: 1, for: 3s}}   # or MAC),
 *     - {at: 2m, wearable: alice, walk: {to: exit-1, over: 30s}}   # receiver, wifi_bed
 *     - {at: 1m, receiver: gw-101, fault: silent}
 *     - {at: 1m, wifi_bed: bed-101, set: {metric: in_bed, value: 0}}
 */
#ifndef CAREHUB_SIM_CONFIG_H
#define CAREHUB_SIM_CONFIG_H

#include "sim_model.h"
#include "sim_scenario.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sim_transport { SIM_TCP, SIM_RTU, SIM_RADAR };

struct sim_endpoint_conf {
    char *id;
    enum sim_transport transport;
    char *host, *port; /* TCP */
    char *path;        /* RTU, RADAR */
    int baud, data_bits, stop_bits;
    char parity; /* 'N', 'E' or 'O' */
};

struct sim_slave_conf {
    char *name;      /* replicas already expanded: "bench-air-7" */
    size_t endpoint; /* index into endpoints */
    uint8_t unit;
    const struct sim_model *model; /* static table */
};

enum sim_event_kind { SIM_EVENT_FAULT, SIM_EVENT_SET, SIM_EVENT_WALK };

/* What an event acts on; .slave indexes the matching list of struct
 * sim_config. */
enum sim_target {
    SIM_TARGET_SLAVE = 0,
    SIM_TARGET_WEARABLE,
    SIM_TARGET_RECEIVER,
    SIM_TARGET_WIFI_BED
};

/* A resident walking to a zone through adjacent zones (sim_home.h). */
struct sim_walk {
    int64_t at_ms;
    size_t to;       /* zone index */
    int64_t over_ms; /* arrives at at_ms + over_ms */
    bool release;    /* back to the daily pattern instead */
};

struct sim_event_conf {
    int64_t at_ms;
    enum sim_target target;
    size_t slave; /* index into the target's list; group events are expanded per replica */
    enum sim_event_kind kind;
    struct sim_fault_ev fault; /* FAULT */
    size_t metric;             /* SET: index into the model's (or wearable's) metrics */
    struct sim_set set;        /* SET */
    struct sim_walk walk;      /* WALK (wearables) */
};

#define SIM_MAX_ZONES 64

enum sim_rx_format { SIM_RX_OMG, SIM_RX_MINEW, SIM_RX_INGICS };

struct sim_zone_conf {
    char *id;
    bool *adjacent; /* nzones entries, symmetric; a zone is not adjacent to itself */
};

struct sim_receiver_conf {
    char *id; /* as the receiver names itself; ingics: a MAC */
    enum sim_rx_format format;
    size_t zone;
    char *topic;         /* where it publishes */
    int64_t interval_ms; /* minew, ingics: one upload per interval */
};

struct sim_wearable_conf {
    uint8_t mac[6];
    char mac_str[18]; /* "C3:00:00:00:01:01" */
    char *resident;
    size_t home; /* zone index */
    int64_t interval_ms;
    double battery, hr;
    long bed; /* index into wifi_beds of the resident's bed (its routine), or -1 */
};

struct sim_wifi_bed_conf {
    char *name, *topic, *resident;
    int64_t interval_ms;
};

struct sim_routine_conf {
    long dining;  /* zone index, or -1: meals at home */
    size_t *walk; /* zones of the afternoon walk, one per day in turn */
    size_t nwalk;
};

struct sim_config {
    uint64_t seed;
    int utc_offset_min;
    struct sim_endpoint_conf *endpoints;
    size_t nendpoints;
    struct sim_slave_conf *slaves;
    size_t nslaves;
    struct sim_event_conf *events; /* sorted by at_ms; file order at equal times */
    size_t nevents;
    /* the home's MQTT devices (sim_home.h) */
    char *mqtt_broker, *mqtt_client_id; /* NULL: no MQTT devices */
    bool has_start_at;
    int start_at_s; /* local second of the day the simulated clock starts at */
    struct sim_zone_conf *zones;
    size_t nzones;
    struct sim_receiver_conf *receivers;
    size_t nreceivers;
    struct sim_wearable_conf *wearables;
    size_t nwearables;
    struct sim_wifi_bed_conf *wifi_beds;
    size_t nwifi_beds;
    struct sim_routine_conf routine;
};

/* Loads path and, if scenario_path is not NULL, the scenario events of that
 * file too, into *out (caller frees with sim_config_free, also after an
 * error). TCP endpoints must listen on loopback unless allow_any_address.
 * Returns 0; CH_ECONFIG after reporting every problem on stderr; or -errno
 * when a file cannot be read. */
int sim_config_load(const char *path, const char *scenario_path, bool allow_any_address,
                    struct sim_config *out);

void sim_config_free(struct sim_config *c);

#endif
