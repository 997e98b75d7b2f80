/* The MQTT side of care-hub: a Paho MQTTAsync client subscribed at QoS 1 to
 * the carehub topics (optionally as member of a shared subscription), handing
 * every message to a handler on Paho's callback thread (care-hub's:
 * ingestq_push), and the unshared view client beside it.
 *
 * Session: clean_session is false by default, with a fixed client_id, so the
 * broker keeps the subscription and queues QoS 1 messages while the hub is
 * restarting or upgrading: the gateways' spools do not help there, because the
 * broker has already acknowledged their publishes. The same holds with
 * shared_group: Mosquitto 2.0 goes on handing a dead member its share, queued
 * in its session until that client_id reconnects (a clean session would drop
 * it); tests/integration/hub_shared.py shows it.
 *
 * Threads: Paho serves every client of the process on one receive thread,
 * callbacks included, so a handler must be quick: care-hub's queues
 * telemetry for its workers (ingestq.h) and handles statuses and alerts at
 * once.
 *
 * Connection: Paho reconnects by itself (1 s doubling to 30 s) once connected;
 * a first connection that fails is retried from sub_tick() with the same
 * back-off. Every (re)connection subscribes again from the connected
 * callback. A broker that refuses the subscription (ACL) is fatal. */
#ifndef CAREHUB_SUBSCRIBER_H
#define CAREHUB_SUBSCRIBER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hubcfg_mqtt;
struct sub;

/* One message: topic NUL-terminated, payload len bytes (both borrowed). The
 * broker gets its PUBACK when the handler returns. */
typedef void (*sub_handler)(void *ctx, const char *topic, const void *payload, size_t len,
                            bool retained);

/* The ingest client: subscribes cfg->topic (as a member of cfg->shared_group
 * when set), messages to handler on Paho's thread. Creates the client and
 * starts connecting in the background. cfg and ctx are borrowed until
 * sub_close. Returns 0, or CH_EINVAL when Paho refuses the broker URI or
 * options (logged). */
int sub_open(const struct hubcfg_mqtt *cfg, sub_handler handler, void *ctx, struct sub **out);

/* The hub's view of every site, beside the (perhaps shared) ingest
 * subscription: a second client, "<client_id>-view", clean session, that
 * subscribes carehub/v1/+/+/status and carehub/v1/+/+/alert without sharing,
 * so that every hub process sees every gateway's retained status and every
 * alarm transition (a few messages a minute per site): for the API's live
 * state, the registry's inventories, and as the priority path of alarm
 * transitions (its own broker queue: an alarm never waits there behind a
 * telemetry flood queued for the ingest client). Messages go to handler on
 * Paho's thread. It also publishes the commands to gateways (sub_publish). */
int sub_open_view(const struct hubcfg_mqtt *cfg, sub_handler handler, void *ctx, struct sub **out);

/* Publishes payload at QoS 1, not retained. Returns 0 once Paho has it, or
 * CH_ERETRY when not connected. */
int sub_publish(struct sub *s, const char *topic, const char *payload);

/* Call from the main loop (about once a second): retries a failed first
 * connection when its back-off has passed. Returns 0, or CH_EREJECTED once
 * the broker refused the subscription. */
int sub_tick(struct sub *s);

/* Stops consuming: sends DISCONNECT (a persistent session keeps further
 * messages at the broker), waits up to timeout_ms, frees the client. No
 * message reaches ingest after it returns. */
void sub_close(struct sub *s, int64_t timeout_ms);

#endif
