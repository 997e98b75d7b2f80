/* care-hub's configuration loader (hub/hubcfg.c) on arbitrary YAML: every
 * problem is reported, nothing crashes or leaks. What it accepts has what
 * the hub dereferences without looking: the broker, client id, topic, the
 * InfluxDB URL and the files defaulted beside the spool. */
#include "hubcfg.h"
#include "fuzz.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int load(const char *path, void *c)
{
    return hubcfg_load(path, c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct hubcfg c;
    if (fuzz_load_file("hub-config", data, size, load, &c) != 0)
        return 0;
    CHECK(c.mqtt.broker && c.mqtt.client_id && c.mqtt.topic && c.mqtt.topic[0]);
    CHECK(c.influx.url && c.spool.dir && c.influx.dead_letter && c.influx.dead_letter[0]);
    CHECK(!c.api.tokens_file || !c.api.tokens_file[0] ||
          (c.api.audit_log && c.api.audit_log[0] && c.api.pseudonym_key_file));
    hubcfg_free(&c);
    return 0;
}
