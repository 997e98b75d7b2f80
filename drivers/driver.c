#include "driver.h"
#include "err.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

extern const struct driver drv_modbus;
extern const struct driver drv_radar;
extern const struct driver drv_mqtt_json;
extern const struct driver drv_ble;

/* Drivers compiled in. A new driver adds one line here. */
static const struct driver *const drivers[] = {&drv_modbus, &drv_radar, &drv_mqtt_json, &drv_ble};

const struct driver *driver_for_bus(int bus_type)
{
    for (size_t i = 0; i < sizeof drivers / sizeof drivers[0]; i++)
        for (const struct driver_bus_type *t = drivers[i]->bus_types; t->name; t++)
            if (t->type == bus_type)
                return drivers[i];
    return NULL;
}

const struct driver_bus_type *driver_bus_type(int bus_type)
{
    for (size_t i = 0; i < sizeof drivers / sizeof drivers[0]; i++)
        for (const struct driver_bus_type *t = drivers[i]->bus_types; t->name; t++)
            if (t->type == bus_type)
                return t;
    return NULL;
}

const struct driver_protocol *driver_protocol(int protocol)
{
    for (size_t i = 0; i < sizeof drivers / sizeof drivers[0]; i++)
        for (const struct driver_protocol *t = drivers[i]->protocols; t && t->name; t++)
            if (t->protocol == protocol)
                return t;
    return NULL;
}

int driver_check_metric_list(struct profile *p)
{
    if (!p->regs.n && p->metrics.n)
        return 0;
    const char *key = p->regs.n ? "registers" : "metrics";
    cfg_report(p->node, key,
               "key '%s': a %s profile lists its metrics (metrics: [{metric, unit}]), not "
               "registers",
               key, cfg_enum_name(driver_protocol_names, p->protocol));
    return 1;
}

#define BUS_TYPES_MAX 16
#define PROTOCOLS_MAX 16

struct cfg_enum driver_protocol_names[PROTOCOLS_MAX + 1];
struct cfg_enum driver_bus_type_names[BUS_TYPES_MAX + 1];
struct cfg_variant driver_bus_variants[BUS_TYPES_MAX + 1];
static pthread_once_t types_once = PTHREAD_ONCE_INIT;

static void collect_types(void)
{
    size_t n = 0;
    for (size_t i = 0; i < sizeof drivers / sizeof drivers[0]; i++)
        for (const struct driver_bus_type *t = drivers[i]->bus_types; t->name; t++) {
            if (n == BUS_TYPES_MAX)
                abort(); /* raise BUS_TYPES_MAX */
            driver_bus_type_names[n] = (struct cfg_enum){t->name, t->type};
            driver_bus_variants[n] = (struct cfg_variant){t->type, t->keys};
            n++;
        }
    driver_bus_type_names[n] = (struct cfg_enum){NULL, 0};
    driver_bus_variants[n] = (struct cfg_variant){0, NULL};
    n = 0;
    for (size_t i = 0; i < sizeof drivers / sizeof drivers[0]; i++)
        for (const struct driver_protocol *t = drivers[i]->protocols; t && t->name; t++) {
            if (n == PROTOCOLS_MAX)
                abort(); /* raise PROTOCOLS_MAX */
            driver_protocol_names[n++] = (struct cfg_enum){t->name, t->protocol};
        }
    driver_protocol_names[n] = (struct cfg_enum){NULL, 0};
}

void driver_types_init(void)
{
    pthread_once(&types_once, collect_types);
}

const struct cfg_enum driver_parities[] = {{"N", 'N'}, {"E", 'E'}, {"O", 'O'}, {NULL, 0}};

/* clang-format off */
const struct cfg_enum driver_baud_rates[] = {
    {"1200", 1200}, {"1800", 1800}, {"2400", 2400}, {"4800", 4800}, {"9600", 9600},
    {"19200", 19200}, {"38400", 38400}, {"57600", 57600}, {"115200", 115200},
    {"230400", 230400}, {"460800", 460800}, {"500000", 500000}, {"576000", 576000},
    {"921600", 921600}, {NULL, 0}};
/* clang-format on */

bool driver_err_is_link(int err)
{
    switch (err) {
    case -ECONNRESET:
    case -ECONNREFUSED:
    case -EPIPE:
    case -EBADF:
    case -ENOTCONN:
    case -EIO:
    case -ENXIO:
    case -ENODEV:
        return true;
    default:
        return false;
    }
}
