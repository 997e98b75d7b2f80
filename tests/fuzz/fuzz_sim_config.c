/* care-sim's configuration and scenario loader (sim/sim_config.c)
 * on arbitrary YAML. Input: the config file, then optionally a line
 * "#--scenario" and a --scenario file (its events name the config's slaves,
 * wearables, receivers and Wi-Fi beds); each goes to a file of its own.
 * Never a crash or a leak; what loads is consistent: every index points
 * into its list and the events are in time order. */
#include "fuzz.h"
#include "sim_config.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SCENARIO_MARK "#--scenario\n"

static size_t targets(const struct sim_config *c, enum sim_target t)
{
    switch (t) {
    case SIM_TARGET_SLAVE:
        return c->nslaves;
    case SIM_TARGET_WEARABLE:
        return c->nwearables;
    case SIM_TARGET_RECEIVER:
        return c->nreceivers;
    case SIM_TARGET_WIFI_BED:
        return c->nwifi_beds;
    }
    return 0;
}

static void check_loaded(const struct sim_config *c)
{
    for (size_t i = 0; i < c->nslaves; i++)
        CHECK(c->slaves[i].endpoint < c->nendpoints && c->slaves[i].model);
    for (size_t i = 0; i < c->nevents; i++) {
        const struct sim_event_conf *e = &c->events[i];
        CHECK(i == 0 || c->events[i - 1].at_ms <= e->at_ms);
        CHECK(e->slave < targets(c, e->target));
        if (e->kind == SIM_EVENT_WALK && !e->walk.release)
            CHECK(e->target == SIM_TARGET_WEARABLE && e->walk.to < c->nzones);
    }
    for (size_t i = 0; i < c->nreceivers; i++)
        CHECK(c->receivers[i].zone < c->nzones);
    for (size_t i = 0; i < c->nwearables; i++) {
        const struct sim_wearable_conf *w = &c->wearables[i];
        CHECK(w->home < c->nzones);
        CHECK(w->bed < 0 || (size_t)w->bed < c->nwifi_beds);
    }
    CHECK(c->routine.dining < 0 || (size_t)c->routine.dining < c->nzones);
    for (size_t i = 0; i < c->routine.nwalk; i++)
        CHECK(c->routine.walk[i] < c->nzones);
}

struct load_arg {
    const char *scenario; /* NULL: none */
    struct sim_config *c;
};

static int load(const char *path, void *arg)
{
    struct load_arg *a = arg;
    return sim_config_load(path, a->scenario, false, a->c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char scn_path[64];
    fuzz_file_path(scn_path, sizeof scn_path, "sim-scenario");
    const uint8_t *mark = memmem(data, size, SCENARIO_MARK, strlen(SCENARIO_MARK));
    size_t cfg_len = mark ? (size_t)(mark - data) : size;
    struct sim_config c = {0}; /* freed after an error too, as the loader asks */
    struct load_arg a = {.c = &c};
    if (mark) {
        size_t skip = cfg_len + strlen(SCENARIO_MARK);
        if (fuzz_file_write(scn_path, data + skip, size - skip) != 0)
            return 0;
        a.scenario = scn_path;
    }
    int rc = fuzz_load_file("sim-config", data, cfg_len, load, &a);
    if (a.scenario)
        unlink(scn_path);
    if (rc == 0)
        check_loaded(&c);
    sim_config_free(&c);
    return 0;
}
