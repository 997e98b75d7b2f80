/* The uplink: readings in, telemetry batches out to the central broker over
 * MQTT (Paho MQTTAsync, QoS 1, TLS optional, automatic reconnect).
 *
 * Readings wait in a bounded in-memory queue; a sender thread cuts them into
 * batches of at most batch_max readings or batch_interval of age, numbers
 * each batch with the gateway's sequence, and publishes it. A batch counts
 * as delivered only when the broker's PUBACK arrives. Batches in flight when
 * the connection drops are sent again, in sequence order, after the
 * reconnect (a duplicate is harmless: the hub's writes are idempotent).
 * While the broker is unreachable the queue holds up to queue_max readings
 * and then drops the oldest, counting every drop. (The disk spool replaces
 * the queue in a later step.)
 *
 * On every (re)connect the retained birth message goes out first; the MQTT
 * will, retained too, marks the gateway offline if it vanishes. */
#ifndef CAREHUB_UPLINK_H
#define CAREHUB_UPLINK_H

#include "codec.h"
#include "model.h"

#include <stdint.h>

struct uplink;

struct uplink_stats {
    uint64_t messages_published; /* acknowledged telemetry messages */
    uint64_t readings_published; /* readings in them */
    uint64_t publish_failures;   /* sends that failed and were retried */
    uint64_t dropped;            /* readings dropped because the queue was full */
    uint64_t queued;             /* readings waiting now */
    uint64_t connects;           /* successful (re)connections */
    uint64_t seq;                /* number of the last reading sent (readings are numbered) */
    bool connected;
};

/* Creates the client. birth is the status message to publish (copied);
 * device_ids (borrowed, n of them) are the devices whose delivered readings
 * are counted one by one. Returns 0 or a negative error after logging it. */
int uplink_create(const struct site_config *cfg, const struct ch_status *birth,
                  const char *const *device_ids, size_t n, struct uplink **out);

/* Connects (in the background, retrying) and starts the sender thread. */
int uplink_start(struct uplink *u);

/* Queues a reading; takes ownership of r->metrics. dev is the index in
 * device_ids whose delivery count it adds to once acknowledged, or -1 (the
 * gateway's own metrics). Thread-safe. */
void uplink_submit(struct uplink *u, struct ch_reading *r, int dev);

/* Sends what is queued, waits up to drain_ms for the broker's
 * acknowledgements, publishes the retained offline status, disconnects and
 * joins the sender. Logs what could not be delivered. */
void uplink_stop(struct uplink *u, int64_t drain_ms);

void uplink_destroy(struct uplink *u);

void uplink_get_stats(struct uplink *u, struct uplink_stats *out);

/* Readings of device_ids[i] acknowledged by the broker so far. */
uint64_t uplink_device_published(struct uplink *u, size_t i);

#endif
