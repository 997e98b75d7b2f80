/* The devices of drivers whose devices push their data (MQTT): prepare()
 * registers a device, release() forgets it, and the bus's message callback
 * (Paho's thread) finds devices here. A driver embeds struct push_dev first
 * in its own device struct and keeps one registry for all its buses. */
#ifndef CAREHUB_PUSH_REGISTRY_H
#define CAREHUB_PUSH_REGISTRY_H

#include "model.h"

#include <pthread.h>

struct push_dev {
    const struct device_cfg *cfg;
    const struct bus_cfg *bus;
    struct push_dev *next;
};

struct push_registry {
    pthread_mutex_t lock; /* guards the list, and what drivers keep in their devices */
    struct push_dev *head;
};

#define PUSH_REGISTRY_INIT                                                                         \
    {                                                                                              \
        PTHREAD_MUTEX_INITIALIZER, NULL                                                            \
    }

void push_registry_add(struct push_registry *r, struct push_dev *d);
void push_registry_remove(struct push_registry *r, struct push_dev *d);

#endif
