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

enum sim_event_kind { SIM_EVENT_FAULT, SIM_EVENT_SET };

struct sim_event_conf {
    int64_t at_ms;
    size_t slave; /* index into slaves; group events are expanded per replica */
    enum sim_event_kind kind;
    struct sim_fault_ev fault; /* FAULT */
    size_t metric;             /* SET: index into the slave's model metrics */
    struct sim_set set;        /* SET */
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
