/* Scenario evaluation: what a scripted event does to a device over time.
 *
 * A scenario is a list of events at offsets from the simulator's start
 * (scenario clock, which --speed scales). Two kinds act on a device:
 *   - metric changes (struct sim_set): hold a value, ramp to a value over a
 *     duration, pulse a value for a duration (then whatever was in force
 *     before comes back), or release the metric back to its simulated curve;
 *   - faults (struct sim_fault_ev): silent, exception, garbage, none.
 * Both are evaluated as pure functions of the scenario time, so a value or
 * a fault at time t never depends on what was asked before. */
#ifndef CAREHUB_SIM_SCENARIO_H
#define CAREHUB_SIM_SCENARIO_H

#include "cfg.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sim_set_kind {
    SIM_SET_VALUE,   /* hold value from at_ms on */
    SIM_SET_RAMP,    /* go linearly from the value at at_ms to value over over_ms, then hold */
    SIM_SET_RELEASE, /* back to the simulated curve */
    SIM_SET_PULSE,   /* hold value for over_ms, then what was in force before it */
};

struct sim_set {
    int64_t at_ms; /* scenario time */
    enum sim_set_kind kind;
    double value;    /* VALUE, RAMP, PULSE: target in engineering units */
    int64_t over_ms; /* RAMP, PULSE: > 0 */
};

enum sim_fault {
    SIM_FAULT_NONE,      /* answers normally */
    SIM_FAULT_SILENT,    /* never answers */
    SIM_FAULT_EXCEPTION, /* answers every request with an exception code */
    SIM_FAULT_GARBAGE,   /* answers with a corrupt frame */
};

struct sim_fault_ev {
    int64_t at_ms;
    enum sim_fault fault;
    uint8_t exception_code; /* EXCEPTION: 1..11 */
};

/* The curve a metric follows when no event holds it: value at scenario
 * time at_ms. ctx is the caller's. */
typedef double (*sim_base_fn)(const void *ctx, int64_t at_ms);

/* Value of one metric at scenario time at_ms, given its events sets[0..n)
 * sorted by at_ms (later entries win at equal times) and its curve. A ramp
 * starts from whatever the metric showed at the ramp's own start, events
 * before it included. Borrows everything. */
double sim_scenario_value(const struct sim_set *sets, size_t n, int64_t at_ms, sim_base_fn base,
                          const void *ctx);

/* Whether an event decides the metric at at_ms (a hold, a ramp, a pulse
 * not yet over) rather than its curve. Same arguments as
 * sim_scenario_value(). */
bool sim_scenario_held(const struct sim_set *sets, size_t n, int64_t at_ms);

/* The fault in force at at_ms among evs[0..n) sorted by at_ms; NULL when
 * none has started (the device answers normally). Borrows evs. */
const struct sim_fault_ev *sim_scenario_fault(const struct sim_fault_ev *evs, size_t n,
                                              int64_t at_ms);

/* Fault names as written in scenario files ("silent"), for cfg tables and
 * cfg_enum_name(). */
extern const struct cfg_enum sim_fault_names[];

#endif
