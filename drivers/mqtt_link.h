/* A Paho MQTTAsync client for a broker on the site LAN that reconnects on
 * its own (1 s, doubling to 30 s): the gateway's local broker for
 * nurse-station apps, BLE receivers and Wi-Fi sensors. The uplink to the
 * central broker is different (edge/uplink.c: its own reconnect, spool,
 * birth and will). */
#ifndef CAREHUB_MQTT_LINK_H
#define CAREHUB_MQTT_LINK_H

#include "cfg.h"

#include <MQTTAsync.h>

struct mqtt_link_cbs {
    void *ctx; /* passed to every callback */
    MQTTAsync_messageArrived *on_message;
    MQTTAsync_connectionLost *on_lost;      /* may be NULL */
    MQTTAsync_connected *on_connected;      /* subscribe here: sessions are clean */
    MQTTAsync_onFailure *on_connect_failed; /* first attempt only; may be NULL */
};

/* Creates the client for uri as client_id (user/password may be NULL) and
 * starts connecting. Returns 0, or -EINVAL / -ECONNREFUSED when Paho
 * refuses to even try; *out is then NULL. */
int mqtt_link_open(const char *uri, const char *client_id, const char *user, const char *password,
                   const struct mqtt_link_cbs *cbs, MQTTAsync *out);

/* As mqtt_link_open(), and over TLS when uri is ssl:// or mqtts:// and tls
 * is not NULL: the broker's certificate is checked against tls->ca_file
 * (the system's CAs if unset) and its host name when tls->verify, and the
 * client certificate tls->cert_file / tls->key_file is presented if set
 * (what care-edge's uplink does). tls is borrowed: Paho copies what it keeps.
 * Same returns as mqtt_link_open(). */
int mqtt_link_open_tls(const char *uri, const char *client_id, const char *user,
                       const char *password, const struct cfg_tls *tls,
                       const struct mqtt_link_cbs *cbs, MQTTAsync *out);

/* Disconnects (waiting at most half a second) and destroys the client: no
 * callback runs after it returns. */
void mqtt_link_close(MQTTAsync *client);

#endif
