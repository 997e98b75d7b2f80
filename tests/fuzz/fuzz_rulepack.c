/* The rule pack loader on arbitrary YAML: the input is a pack that a fixed
 * site (below: devices of the profiles the shipped packs select, residents
 * with params) loads with rule_packs, as care-edge reads deploy/rules/. Loading
 * checks the pack's rules against the site (edge/site.c) and compiles
 * their conditions (edge/rules.c rules_check); a site that loads then builds
 * the rules engine (rules_create: instances, params, history windows).
 * Never a crash or a leak; what loads builds. */
#include "site.h"
#include "fuzz.h"
#include "rules.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* printf format: the pack. The profiles are those the shipped packs' rules
 * select (kinds environment, gas, call, bed, wearable), not the whole
 * directory: a run loads every file named here. */
#define PROF CAREHUB_PROFILES_DIR "/"
#define SITE_FMT                                                                                   \
    "site: fuzz-site\n"                                                                            \
    "gateway: gw-1\n"                                                                              \
    "uplink: {broker: tcp://127.0.0.1:1}\n"                                                        \
    "spool: {dir: /tmp/carehub-fuzz-rulepack-spool}\n"                                             \
    "profiles: [" PROF "air-board.yaml, " PROF "co2-s8.yaml, " PROF "gas-lel.yaml, " PROF          \
    "call-panel.yaml, " PROF "bed-mb.yaml, " PROF "mr60-radar.yaml, " PROF "wifi-bed.yaml, " PROF  \
    "care-band.yaml]\n"                                                                            \
    "timezone: Asia/Shanghai\n"                                                                    \
    "rule_packs: [\"%s\"]\n"                                                                       \
    "buses:\n"                                                                                     \
    "  - {id: rs485, type: modbus-rtu, device: /dev/null}\n"                                       \
    "  - {id: radar, type: radar-uart, device: /dev/null}\n"                                       \
    "  - {id: wifi, type: mqtt, host: 127.0.0.1, port: 1883}\n"                                    \
    "  - {id: ble, type: ble, host: 127.0.0.1, port: 1883, topics: [\"home/+/BTtoMQTT/#\"]}\n"     \
    "devices:\n"                                                                                   \
    "  - {id: co2-nap, bus: rs485, slave: 3, profile: co2-s8, room: nap-room}\n"                   \
    "  - {id: air-hall, bus: rs485, slave: 4, profile: air-board, room: hall}\n"                   \
    "  - {id: gas-kitchen, bus: rs485, slave: 5, profile: gas-lel, room: kitchen}\n"               \
    "  - {id: bed-101, bus: rs485, slave: 6, profile: bed-mb, room: \"101\"}\n"                    \
    "  - {id: panel-101, bus: rs485, slave: 7, profile: call-panel, room: \"101\"}\n"              \
    "  - {id: radar-102, bus: radar, profile: mr60-radar, room: \"102\"}\n"                        \
    "  - {id: bed-103, bus: wifi, topic: sensors/bed/103/state, profile: wifi-bed, room: "         \
    "\"103\"}\n"                                                                                   \
    "  - {id: band-101, bus: ble, mac: \"C3:00:00:00:01:01\", profile: care-band}\n"               \
    "  - {id: band-102, bus: ble, mac: \"C3:00:00:00:01:02\", profile: care-band}\n"               \
    "residents:\n"                                                                                 \
    "  - {id: R-1001, room: \"101\", bed: \"101-a\", devices: [bed-101, panel-101, band-101],\n"   \
    "     wandering_risk: true, params: {hr_low: 45, hr_high: 120}}\n"                             \
    "  - {id: R-1002, room: \"102\", devices: [radar-102, band-102]}\n"                            \
    "  - {id: R-1003, room: \"103\", devices: [bed-103], params: {rr_high: 28}}\n"

static char site_path[64];

static void remove_site(void)
{
    unlink(site_path);
}

/* path is the pack's: the site names it */
static int load(const char *path, void *s)
{
    (void)path;
    return site_load(site_path, s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!site_path[0]) {
        char pack_path[64], site[4096];
        fuzz_file_path(site_path, sizeof site_path, "rulepack-site");
        fuzz_file_path(pack_path, sizeof pack_path, "rulepack"); /* fuzz_load_file's */
        int n = snprintf(site, sizeof site, SITE_FMT, pack_path);
        CHECK(n > 0 && (size_t)n < sizeof site);
        CHECK(fuzz_file_write(site_path, site, (size_t)n) == 0);
        atexit(remove_site);
    }
    struct site s;
    if (fuzz_load_file("rulepack", data, size, load, &s) != 0)
        return 0;
    CHECK(s.n_packs == 1 && s.cfg.n_all_rules == s.packs[0].rules.n); /* the site has none */
    struct rules *r = NULL;
    CHECK(rules_create(&s.cfg, NULL, &r) == 0);
    rules_destroy(r);
    site_free(&s);
    return 0;
}
