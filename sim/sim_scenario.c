#include "sim_scenario.h"

/* Number of events in force at at_ms: those with at_ms <= the time. */
static size_t in_force(const struct sim_set *sets, size_t n, int64_t at_ms)
{
    while (n > 0 && sets[n - 1].at_ms > at_ms)
        n--;
    return n;
}

/* Value at at_ms when exactly the first k events are in force. A ramp needs
 * the value at its own start, which is the same question one event earlier:
 * the recursion is as deep as a chain of ramps. */
static double value_with(const struct sim_set *sets, size_t k, int64_t at_ms, sim_base_fn base,
                         const void *ctx)
{
    if (k == 0)
        return base(ctx, at_ms);
    const struct sim_set *e = &sets[k - 1];
    switch (e->kind) {
    case SIM_SET_VALUE:
        return e->value;
    case SIM_SET_RELEASE:
        return base(ctx, at_ms);
    case SIM_SET_PULSE:
        /* a pull cord let go or a resident back in bed: the events before
         * the pulse decide again, as if it had never been */
        if (at_ms - e->at_ms < e->over_ms)
            return e->value;
        return value_with(sets, k - 1, at_ms, base, ctx);
    case SIM_SET_RAMP:
        break;
    }
    int64_t into = at_ms - e->at_ms;
    if (into >= e->over_ms)
        return e->value;
    double from = value_with(sets, k - 1, e->at_ms, base, ctx);
    return from + (e->value - from) * (double)into / (double)e->over_ms;
}

double sim_scenario_value(const struct sim_set *sets, size_t n, int64_t at_ms, sim_base_fn base,
                          const void *ctx)
{
    return value_with(sets, in_force(sets, n, at_ms), at_ms, base, ctx);
}

bool sim_scenario_held(const struct sim_set *sets, size_t n, int64_t at_ms)
{
    for (size_t k = in_force(sets, n, at_ms); k > 0; k--) {
        const struct sim_set *e = &sets[k - 1];
        switch (e->kind) {
        case SIM_SET_VALUE:
        case SIM_SET_RAMP:
            return true;
        case SIM_SET_RELEASE:
            return false;
        case SIM_SET_PULSE:
            if (at_ms - e->at_ms < e->over_ms)
                return true;
            break; /* over: the event before it decides */
        }
    }
    return false;
}

const struct sim_fault_ev *sim_scenario_fault(const struct sim_fault_ev *evs, size_t n,
                                              int64_t at_ms)
{
    while (n > 0 && evs[n - 1].at_ms > at_ms)
        n--;
    return n ? &evs[n - 1] : NULL;
}

const struct cfg_enum sim_fault_names[] = {
    {"none", SIM_FAULT_NONE},
    {"silent", SIM_FAULT_SILENT},
    {"exception", SIM_FAULT_EXCEPTION},
    {"garbage", SIM_FAULT_GARBAGE},
    {NULL, 0},
};
