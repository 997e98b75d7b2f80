/* The Wi-Fi bed JSON decoder (drivers/mqtt/mqtt_json.c mqtt_json_decode) on
 * arbitrary payloads, against two profiles: the shipped wifi-bed mapping
 * (deploy/profiles/wifi-bed.yaml) and one with scale and offset, a deep
 * path, fields sharing a prefix and paths no payload can match (empty
 * member, over-long member). Never a crash or a leak; a payload accepted
 * set at least one metric and only finite values; a payload rejected
 * changed nothing and said why. */
#include "fuzz.h"
#include "mqtt_json.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LONG_MEMBER                                                                                \
    "m0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890" \
    "1234567890123456789012345678901234567890"

static struct metric_def wifi_bed[] = {
    {.metric = "in_bed", .field = "bed.occupied", .scale = 1},
    {.metric = "hr", .field = "vitals.heart", .unit = "bpm", .scale = 1},
    {.metric = "rr", .field = "vitals.breath", .unit = "/min", .scale = 1},
    {.metric = "movement", .field = "motion", .scale = 1},
    {.metric = "presence", .field = "presence", .scale = 1},
};

static struct metric_def odd[] = {
    {.metric = "temperature", .field = "t", .scale = 0.1, .offset = -40},
    {.metric = "deep", .field = "a.b.c.d.e.f", .scale = 1e300},
    {.metric = "prefix", .field = "vitals", .scale = 1},
    {.metric = "empty", .field = "vitals..heart", .scale = 1},
    {.metric = "trailing", .field = "motion.", .scale = 1},
    {.metric = "long", .field = LONG_MEMBER, .scale = 1},
};

static const struct profile profiles[] = {
    {.id = "wifi-bed", .protocol = PROTO_MQTT_JSON, .metrics = {wifi_bed, 5}},
    {.id = "odd", .protocol = PROTO_MQTT_JSON, .metrics = {odd, 6}},
};

#define MAX_METRICS 6

static void decode(const struct profile *p, const char *payload, size_t len)
{
    double values[MAX_METRICS], before[MAX_METRICS];
    bool have[MAX_METRICS];
    for (size_t i = 0; i < MAX_METRICS; i++) {
        values[i] = before[i] = -12345.5;
        have[i] = false;
    }
    char why[160];
    const char *bad = mqtt_json_decode(p, payload, len, values, have, why, sizeof why);
    size_t set = 0;
    for (size_t i = 0; i < MAX_METRICS; i++) {
        CHECK(i < p->metrics.n || !have[i]);
        if (have[i]) {
            CHECK(isfinite(values[i]));
            set++;
        } else {
            CHECK(values[i] == before[i]);
        }
    }
    if (bad)
        CHECK(bad == why && set == 0 && strlen(why) > 0);
    else
        CHECK(set > 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *payload = malloc(size ? size : 1); /* exactly size bytes: overreads show */
    if (!payload)
        return 0;
    memcpy(payload, data, size);
    for (size_t i = 0; i < sizeof profiles / sizeof profiles[0]; i++)
        decode(&profiles[i], payload, size);
    free(payload);
    return 0;
}
