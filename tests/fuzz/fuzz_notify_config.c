/* The notifier's notify: section (common/notify_cfg.c) on arbitrary YAML,
 * handed over as care-edge will hand it (a CFG_NODE of the site file):
 * every problem is reported, nothing crashes or leaks. What it accepts
 * routes every priority, level and minute of the day to channels that
 * exist, and has what the worker uses without looking. */
#include "cfg.h"
#include "fuzz.h"
#include "notify_int.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct site {
    struct fy_node *notify;
};

static const struct cfg_key site_keys[] = {
    {.key = "notify", .type = CFG_NODE, .offset = offsetof(struct site, notify), .required = true},
    CFG_END,
};

static int load(const char *path, void *arg)
{
    struct notify_cfg **out = arg;
    struct site s = {0};
    struct cfg_file *f = NULL;
    int rc = cfg_load(path, site_keys, &s, &f);
    if (rc != 0)
        return rc;
    rc = notify_cfg_parse(s.notify, out);
    cfg_file_close(f); /* the parsed configuration keeps copies */
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct notify_cfg *c = NULL;
    if (fuzz_load_file("notify-config", data, size, load, &c) != 0)
        return 0;
    CHECK(c->channels.n > 0 && c->routes.n > 0 && c->retry.first_ms > 0 && c->queue > 0);
    for (size_t i = 0; i < c->channels.n; i++) {
        const struct notify_channel *ch = notify_chan(c, i);
        CHECK(ch->id && ch->name && ch->url && ch->t && ch->locale);
        CHECK(!ch->t->sign || !ch->sign || (ch->secret && ch->secret[0]));
    }
    const char *ids[64];
    for (int prio = 0; prio < 3; prio++)
        for (int level = 0; level < 4; level++)
            for (int minute = 0; minute < 1440; minute += 7) {
                size_t n = notify_targets(c, prio, level, minute, ids, 64);
                for (size_t i = 0; i < n; i++)
                    CHECK(notify_chan_find(c, ids[i]) >= 0);
            }
    notify_cfg_free(c);
    return 0;
}
