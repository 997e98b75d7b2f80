/* The uplink: every outgoing message goes through the spool first (write
 * ahead), then out to the central broker over MQTT (Paho MQTTAsync, QoS 1,
 * TLS optional, reconnect with back-off).
 *
 * A reading becomes one spool record at once, in the poller's thread, so a
 * crash of care-edge loses none (common/spool.h). The record's id is the
 * reading's number: the sender cuts runs of consecutive records into
 * telemetry messages whose seq is the first reading's number. An alert
 * (uplink_alert) is durable before the call returns, always goes out before
 * telemetry, and is numbered too (its record id, "seq" on the wire).
 *
 * When the spool's disk fails (spool.h, "degraded"), the uplink does not
 * change: the spool keeps new records in memory, bounded, and the sender
 * reads them as it reads the disk, so live readings and alerts still go
 * out while the broker is up. A reading the spool could not keep still has
 * its number (the loss is a gap); uplink_alert() then says "kept, not
 * durable" (SPOOL_NOT_DURABLE).
 *
 * Delivered means stored: a record is freed when a hub acknowledges having
 * stored it (topic carehub/ack/v1/{site}/{gateway}, ranges of numbers), not
 * at the broker's PUBACK;
 * what the broker took and no hub acknowledged within hub_ack_timeout (while
 * hubs acknowledge; 10 times that while none does) is sent again. With
 * delivery: broker, the PUBACK frees it (a broker with no carehub hub).
 *
 * Live data and backlog: records appended while connected are live and go
 * out in batches of at most batch_max readings or batch_interval of age.
 * Records the spool held when care-edge started or when the broker came back
 * are backlog: they go out marked historical, at most replay_rate readings/s,
 * beside the live data, so a long outage does not hold up what is happening
 * now. Whatever was in flight when the connection dropped is sent again
 * (a duplicate is harmless: the hub's writes are idempotent).
 *
 * On every (re)connect the retained birth message goes out first; the MQTT
 * will, retained too, marks the gateway offline if it vanishes. */
#ifndef CAREHUB_UPLINK_H
#define CAREHUB_UPLINK_H

#include "codec.h"
#include "site_model.h"

#include <stdint.h>

struct uplink;
struct spool;

/* A command arrived for this gateway (topic .../cmd/<action>): action is the
 * topic's last level ("ack"), payload is borrowed for the call, source names
 * where it came from ("uplink", "local-mqtt"), user is the identity the
 * transport authenticated (the local broker's user), or NULL where the
 * command names it itself (from a hub: only hubs may publish there). */
typedef void (*edge_cmd_fn)(void *arg, const char *source, const char *user, const char *action,
                            const char *payload, size_t len);

struct uplink_stats {
    uint64_t messages_published;   /* acknowledged telemetry messages */
    uint64_t readings_published;   /* readings in them */
    uint64_t historical_published; /* of which from a backlog */
    uint64_t alerts_published;
    uint64_t publish_failures;   /* sends that failed and were retried */
    uint64_t spool_errors;       /* readings the spool refused (disk full, ...) */
    uint64_t dropped;            /* readings evicted from the full spool, never stored by a hub */
    uint64_t dropped_sent;       /* of them, sent but never acknowledged (may have been stored) */
    uint64_t alerts_dropped;     /* alerts evicted, never stored by a hub */
    uint64_t alerts_queued;      /* alerts waiting in the spool now */
    uint64_t alert_seq;          /* number of the last alert spooled */
    uint64_t oldest_reading;     /* oldest reading number still held */
    uint64_t hub_acks;           /* ack messages from hubs */
    uint64_t hub_acked_readings; /* readings they freed */
    uint64_t hub_acked_alerts;   /* alerts they freed */
    uint64_t acks_rejected;      /* ack messages refused (invalid, another gateway's) */
    uint64_t redeliveries; /* times what the broker took was sent again for want of a hub ack */
    uint64_t queued;       /* readings waiting in the spool now */
    uint64_t connects;     /* successful (re)connections */
    uint64_t seq;          /* number of the last reading spooled */
    bool connected;
};

/* Creates the client. birth is the status message to publish (copied);
 * device_ids (borrowed, n of them) are the devices whose delivered readings
 * are counted one by one; spool (borrowed) must outlive the uplink. Returns 0
 * or a negative error after logging it. */
int uplink_create(const struct site_config *cfg, const struct ch_status *birth,
                  const char *const *device_ids, size_t n, struct spool *spool,
                  struct uplink **out);

/* Subscribes to carehub/v1/{site}/{gateway}/cmd/+ (and, with delivery: hub,
 * carehub/ack/v1/{site}/{gateway}) on every connect and
 * hands what arrives to fn (Paho's thread). Call before uplink_start. */
void uplink_set_command_handler(struct uplink *u, edge_cmd_fn fn, void *arg);

/* Connects (in the background, retrying) and starts the sender thread. */
int uplink_start(struct uplink *u);

/* Spools a reading of device dev (index in device_ids, or -1 for the
 * gateway's own metrics). Borrows r. Returns 0, SPOOL_NOT_DURABLE (kept in
 * memory: the spool is degraded), or the spool's error after logging it
 * (the reading is then lost, counted, and its number a gap). Thread-safe. */
int uplink_submit(struct uplink *u, const struct ch_reading *r, int dev);

/* Spools an alert message (JSON, len bytes, borrowed) for the alert topic;
 * returns once it is on disk. Returns 0 (durable), SPOOL_NOT_DURABLE (kept
 * and sent, but in memory: a crash before it is delivered loses it), or the
 * spool's error (lost, counted). Thread-safe. */
int uplink_alert(struct uplink *u, const char *json, size_t len);

/* Sends what is spooled while the broker takes it, for up to drain_ms, then
 * publishes the retained offline status, disconnects and joins the sender.
 * What is left stays in the spool for the next start. */
void uplink_stop(struct uplink *u, int64_t drain_ms);

void uplink_destroy(struct uplink *u);

void uplink_get_stats(struct uplink *u, struct uplink_stats *out);

/* After a configuration reload: the device index space grows to n (indexes
 * never change meaning, so records spooled before the reload are still
 * counted for the right device), and the retained birth message with the
 * new inventory replaces the old one, published at once if connected. */
void uplink_add_devices(struct uplink *u, size_t n);
int uplink_set_birth(struct uplink *u, const struct ch_status *birth);

/* Readings of device_ids[i] acknowledged by the broker since start. */
uint64_t uplink_device_published(struct uplink *u, size_t i);

#endif
