/* The gateway's local MQTT broker, for nurse-station apps and pagers on the
 * site LAN: it works with the internet down.
 *
 * Topics (same namespace as the uplink, on the local broker):
 *   carehub/v1/{site}/{gateway}/alert     each alarm transition (QoS 1, not
 *                                         retained), JSON carehub/alert/1
 *   carehub/v1/{site}/{gateway}/alarms    retained: every active alarm now,
 *                                         {"site","gateway","ts_ms","alarms":[alert...]},
 *                                         refreshed on every transition and
 *                                         on every (re)connect, so an app that
 *                                         connects late sees the whole picture
 *   carehub/v1/{site}/{gateway}/cmd/{user}/{action}
 *                                         subscribed: commands from apps
 *                                         (JSON carehub/command/1); {user} is
 *                                         the broker's authenticated user (its
 *                                         ACL lets each user publish under its
 *                                         own name only), the command's
 *                                         identity: the payload's "by" and
 *                                         "role" are not taken
 *
 * Nothing here is spooled: the local broker is on the gateway itself, and the
 * retained snapshot makes a reconnecting app whole again. Paho reconnects on
 * its own (automaticReconnect). */
#ifndef CAREHUB_LOCAL_H
#define CAREHUB_LOCAL_H

#include "codec.h"
#include "site_model.h"
#include "uplink.h"

#include <stddef.h>

struct local;

/* The active alarms now (as alarms_active()); caller frees *out. */
typedef size_t (*edge_active_fn)(void *arg, struct ch_alert **out);

/* Creates the client for c->local_mqtt.broker (borrowed config). Returns 0
 * or a negative error after logging it. */
int local_create(const struct site_config *c, edge_cmd_fn on_cmd, edge_active_fn active, void *arg,
                 struct local **out);
/* Connects in the background (retrying). */
int local_start(struct local *l);
/* Publishes a transition and the refreshed snapshot. Thread-safe; never
 * blocks on the broker. */
void local_publish(struct local *l, const struct ch_alert *transition);
void local_destroy(struct local *l);

struct local_stats {
    uint64_t published;
    uint64_t publish_failures;
    uint64_t commands;
    bool connected;
};
void local_get_stats(struct local *l, struct local_stats *out);

/* The snapshot document of the alarms topic: caller frees; NULL on failure. */
char *local_snapshot_json(const struct site_config *c, const struct ch_alert *alarms, size_t n,
                          int64_t ts_ms);

#endif
