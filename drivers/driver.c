#include "driver.h"
#include "err.h"

#include <errno.h>

extern const struct driver drv_modbus;
extern const struct driver drv_radar;
extern const struct driver drv_mqtt_json;
extern const struct driver drv_ble;

/* Drivers compiled in. A new driver adds one line here. */
static const struct driver *const drivers[] = {&drv_modbus, &drv_radar, &drv_mqtt_json, &drv_ble};

const struct driver *driver_for_bus(int bus_type)
{
    for (size_t i = 0; i < sizeof drivers / sizeof drivers[0]; i++)
        for (const int *t = drivers[i]->bus_types; *t >= 0; t++)
            if (*t == bus_type)
                return drivers[i];
    return NULL;
}

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
