#include "mqtt_link.h"
#include "util.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

int mqtt_link_open(const char *uri, const char *client_id, const char *user, const char *password,
                   const struct mqtt_link_cbs *cbs, MQTTAsync *out)
{
    return mqtt_link_open_tls(uri, client_id, user, password, NULL, cbs, out);
}

int mqtt_link_open_tls(const char *uri, const char *client_id, const char *user,
                       const char *password, const struct cfg_tls *tls,
                       const struct mqtt_link_cbs *cbs, MQTTAsync *out)
{
    *out = NULL;
    MQTTAsync c = NULL;
    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
    if (MQTTAsync_createWithOptions(&c, uri, client_id, MQTTCLIENT_PERSISTENCE_NONE, NULL, &co) !=
        MQTTASYNC_SUCCESS)
        return -EINVAL;
    MQTTAsync_setCallbacks(c, cbs->ctx, cbs->on_lost, cbs->on_message, NULL);
    MQTTAsync_setConnected(c, cbs->ctx, cbs->on_connected);
    MQTTAsync_connectOptions o = MQTTAsync_connectOptions_initializer;
    o.keepAliveInterval = 30;
    o.cleansession = 1;
    o.automaticReconnect = 1;
    o.minRetryInterval = 1;
    o.maxRetryInterval = 30;
    o.connectTimeout = 5;
    o.username = user;
    o.password = password;
    MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
    if (tls && (strncmp(uri, "ssl://", 6) == 0 || strncmp(uri, "mqtts://", 8) == 0)) {
        ssl.trustStore = tls->ca_file;
        ssl.keyStore = tls->cert_file;
        ssl.privateKey = tls->key_file;
        ssl.enableServerCertAuth = tls->verify;
        ssl.verify = tls->verify; /* host name too */
        o.ssl = &ssl;
    }
    o.onFailure = cbs->on_connect_failed;
    o.context = cbs->ctx;
    /* before connecting: on_connected (Paho's thread) may subscribe with it
       before MQTTAsync_connect has returned */
    *out = c;
    if (MQTTAsync_connect(c, &o) != MQTTASYNC_SUCCESS) {
        MQTTAsync_destroy(&c);
        *out = NULL;
        return -ECONNREFUSED;
    }
    return 0;
}

void mqtt_link_close(MQTTAsync *client)
{
    if (!client || !*client)
        return;
    if (MQTTAsync_isConnected(*client)) {
        MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
        d.timeout = 500;
        MQTTAsync_disconnect(*client, &d);
        for (int i = 0; i < 20 && MQTTAsync_isConnected(*client); i++)
            ch_sleep_real_ms(25); /* Paho's time, not the simulation's */
    }
    MQTTAsync_destroy(client);
}
