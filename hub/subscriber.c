#include "subscriber.h"
#include "hubcfg.h"
#include "err.h"
#include "log.h"
#include "util.h"

#include <MQTTAsync.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_MIN_MS 1000
#define RETRY_MAX_MS 30000

#define MAX_FILTERS 2

struct sub {
    const struct hubcfg_mqtt *cfg;
    sub_handler handler;
    void *ctx;
    MQTTAsync client;
    char *filters[MAX_FILTERS]; /* topic, or $share/<group>/<topic>; the view's two */
    int n_filters;
    char *client_id;
    MQTTAsync_connectOptions conn;
    MQTTAsync_SSLOptions ssl;

    atomic_bool ever_connected;
    atomic_bool connect_failed; /* a first connection failed: sub_tick retries */
    atomic_bool refused;        /* the broker refused the subscription */
    atomic_bool disconnected;   /* DISCONNECT done (or failed) */
    int64_t retry_at;           /* main thread only */
    int64_t retry_ms;
};

static const char *broker(const struct sub *s)
{
    return s->cfg->broker;
}

static void on_subscribed(void *ctx, MQTTAsync_successData *r)
{
    struct sub *s = ctx;
    bool bad = false;
    if (r && s->n_filters == 1)
        bad = r->alt.qos == MQTT_BAD_SUBSCRIBE;
    else if (r && r->alt.qosList)
        for (int i = 0; i < s->n_filters; i++)
            bad = bad || r->alt.qosList[i] == MQTT_BAD_SUBSCRIBE;
    if (bad) {
        LOGE("mqtt", broker(s), "broker refused the subscription of %s", s->client_id);
        atomic_store(&s->refused, true);
        return;
    }
    LOGI("mqtt", broker(s), "%s subscribed to %s%s%s (QoS %d)", s->client_id, s->filters[0],
         s->n_filters > 1 ? " and " : "", s->n_filters > 1 ? s->filters[1] : "", 1);
}

static void on_subscribe_failed(void *ctx, MQTTAsync_failureData *r)
{
    struct sub *s = ctx;
    LOGE("mqtt", broker(s), "subscription of %s failed: %s (%d)", s->client_id,
         r && r->message ? r->message : "refused", r ? r->code : 0);
    atomic_store(&s->refused, true);
}

/* Paho calls this after the first connection and after every reconnection. */
static void on_connected(void *ctx, char *cause)
{
    (void)cause; /* Paho says "automatic reconnect" for the first connection too */
    struct sub *s = ctx;
    bool again = atomic_exchange(&s->ever_connected, true);
    LOGI("mqtt", broker(s), "%s", again ? "reconnected" : "connected");
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess = on_subscribed;
    ro.onFailure = on_subscribe_failed;
    ro.context = s;
    int qos[MAX_FILTERS] = {1, 1};
    int rc = s->n_filters == 1
                 ? MQTTAsync_subscribe(s->client, s->filters[0], 1, &ro)
                 : MQTTAsync_subscribeMany(s->client, s->n_filters, s->filters, qos, &ro);
    if (rc != MQTTASYNC_SUCCESS) {
        LOGE("mqtt", broker(s), "cannot subscribe to %s: %s", s->filters[0],
             MQTTAsync_strerror(rc));
        atomic_store(&s->refused, true);
    }
}

static void on_connect_failed(void *ctx, MQTTAsync_failureData *r)
{
    struct sub *s = ctx;
    const char *why = r && r->message ? r->message : MQTTAsync_strerror(r ? r->code : -1);
    if (atomic_load(&s->ever_connected)) {
        LOGW("mqtt", broker(s), "reconnect failed: %s", why);
        return;
    }
    LOGW("mqtt", broker(s), "connect failed: %s", why);
    atomic_store(&s->connect_failed, true);
}

static void on_connection_lost(void *ctx, char *cause)
{
    struct sub *s = ctx;
    LOGW("mqtt", broker(s), "connection lost (%s); reconnecting", cause ? cause : "no reason");
}

static int on_message(void *ctx, char *topic, int topic_len, MQTTAsync_message *m)
{
    struct sub *s = ctx;
    /* topic_len is non-zero only when the topic holds NUL bytes, which MQTT
     * forbids: show them as '?' so that the topic is refused, not truncated
     * into a valid one */
    char *copy = NULL;
    if (topic_len > 0) {
        copy = ch_xmalloc((size_t)topic_len + 1);
        for (int i = 0; i < topic_len; i++)
            copy[i] = topic[i] ? topic[i] : '?';
        copy[topic_len] = '\0';
    }
    s->handler(s->ctx, copy ? copy : topic, m->payload,
               m->payloadlen > 0 ? (size_t)m->payloadlen : 0, m->retained != 0);
    free(copy);
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    return 1;
}

static int start_connect(struct sub *s)
{
    int rc = MQTTAsync_connect(s->client, &s->conn);
    if (rc != MQTTASYNC_SUCCESS) {
        LOGE("mqtt", broker(s), "cannot start connecting: %s", MQTTAsync_strerror(rc));
        return CH_EINVAL;
    }
    return 0;
}

static void sub_free(struct sub *s)
{
    for (int i = 0; i < s->n_filters; i++)
        free(s->filters[i]);
    free(s->client_id);
    free(s);
}

static int open_client(const struct hubcfg_mqtt *cfg, struct sub *s, bool clean, struct sub **out)
{
    s->cfg = cfg;
    s->retry_ms = RETRY_MIN_MS;
    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
    co.MQTTVersion = MQTTVERSION_3_1_1;
    int rc = MQTTAsync_createWithOptions(&s->client, cfg->broker, s->client_id,
                                         MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
    if (rc != MQTTASYNC_SUCCESS) {
        LOGE("mqtt", cfg->broker, "cannot create the client: %s", MQTTAsync_strerror(rc));
        sub_free(s);
        return CH_EINVAL;
    }
    MQTTAsync_setCallbacks(s->client, s, on_connection_lost, on_message, NULL);
    MQTTAsync_setConnected(s->client, s, on_connected);

    MQTTAsync_connectOptions conn = MQTTAsync_connectOptions_initializer;
    conn.MQTTVersion = MQTTVERSION_3_1_1;
    conn.keepAliveInterval = (int)(cfg->keepalive_ms / 1000);
    conn.cleansession = clean;
    conn.automaticReconnect = 1;
    conn.minRetryInterval = RETRY_MIN_MS / 1000;
    conn.maxRetryInterval = RETRY_MAX_MS / 1000;
    conn.username = cfg->username;
    conn.password = cfg->password;
    conn.onFailure = on_connect_failed;
    conn.context = s;
    if (strncmp(cfg->broker, "ssl://", 6) == 0) {
        MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
        ssl.trustStore = cfg->tls.ca_file;
        ssl.keyStore = cfg->tls.cert_file;
        ssl.privateKey = cfg->tls.key_file;
        ssl.enableServerCertAuth = cfg->tls.verify;
        ssl.verify = cfg->tls.verify; /* host name too */
        s->ssl = ssl;
        conn.ssl = &s->ssl;
    }
    s->conn = conn;

    LOGI("mqtt", cfg->broker, "connecting as %s (clean session %s)", s->client_id,
         clean ? "true" : "false");
    if (start_connect(s) != 0) {
        MQTTAsync_destroy(&s->client);
        sub_free(s);
        return CH_EINVAL;
    }
    *out = s;
    return 0;
}

int sub_open(const struct hubcfg_mqtt *cfg, sub_handler handler, void *ctx, struct sub **out)
{
    struct sub *s = ch_xcalloc(1, sizeof *s);
    s->handler = handler;
    s->ctx = ctx;
    s->client_id = ch_xstrdup(cfg->client_id);
    if (cfg->shared_group) {
        size_t n = strlen(cfg->shared_group) + strlen(cfg->topic) + 9;
        s->filters[0] = ch_xmalloc(n);
        snprintf(s->filters[0], n, "$share/%s/%s", cfg->shared_group, cfg->topic);
    } else {
        s->filters[0] = ch_xstrdup(cfg->topic);
    }
    s->n_filters = 1;
    return open_client(cfg, s, cfg->clean_session, out);
}

int sub_open_view(const struct hubcfg_mqtt *cfg, sub_handler handler, void *ctx, struct sub **out)
{
    struct sub *s = ch_xcalloc(1, sizeof *s);
    s->handler = handler;
    s->ctx = ctx;
    size_t n = strlen(cfg->client_id) + sizeof "-view";
    s->client_id = ch_xmalloc(n);
    snprintf(s->client_id, n, "%s-view", cfg->client_id);
    s->filters[0] = ch_xstrdup("carehub/v1/+/+/status");
    s->filters[1] = ch_xstrdup("carehub/v1/+/+/alert");
    s->n_filters = 2;
    return open_client(cfg, s, true, out);
}

int sub_publish(struct sub *s, const char *topic, const char *payload)
{
    if (!MQTTAsync_isConnected(s->client))
        return CH_ERETRY;
    MQTTAsync_message m = MQTTAsync_message_initializer;
    m.payload = (void *)payload;
    m.payloadlen = (int)strlen(payload);
    m.qos = 1;
    m.retained = 0;
    int rc = MQTTAsync_sendMessage(s->client, topic, &m, NULL);
    if (rc != MQTTASYNC_SUCCESS) {
        LOGW("mqtt", broker(s), "cannot publish to %s: %s", topic, MQTTAsync_strerror(rc));
        return CH_ERETRY;
    }
    return 0;
}

int sub_tick(struct sub *s)
{
    if (atomic_load(&s->refused))
        return CH_EREJECTED;
    if (!atomic_load(&s->connect_failed))
        return 0;
    int64_t now = ch_mono_ms();
    if (s->retry_at == 0) {
        s->retry_at = now + s->retry_ms;
        LOGI("mqtt", broker(s), "retrying in %" PRId64 " s", s->retry_ms / 1000);
        return 0;
    }
    if (now < s->retry_at)
        return 0;
    s->retry_at = 0;
    s->retry_ms = s->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : s->retry_ms * 2;
    atomic_store(&s->connect_failed, false);
    if (start_connect(s) != 0)
        atomic_store(&s->connect_failed, true);
    return 0;
}

static void on_disconnected(void *ctx, MQTTAsync_successData *r)
{
    (void)r;
    struct sub *s = ctx;
    atomic_store(&s->disconnected, true);
}

static void on_disconnect_failed(void *ctx, MQTTAsync_failureData *r)
{
    struct sub *s = ctx;
    LOGW("mqtt", broker(s), "disconnect failed: %s",
         r && r->message ? r->message : "no reason given");
    atomic_store(&s->disconnected, true);
}

void sub_close(struct sub *s, int64_t timeout_ms)
{
    if (!s)
        return;
    MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
    d.timeout = (int)timeout_ms;
    d.onSuccess = on_disconnected;
    d.onFailure = on_disconnect_failed;
    d.context = s;
    if (MQTTAsync_disconnect(s->client, &d) == MQTTASYNC_SUCCESS) {
        int64_t end = ch_mono_ms() + timeout_ms;
        while (!atomic_load(&s->disconnected) && ch_mono_ms() < end)
            ch_sleep_ms(10);
    }
    MQTTAsync_destroy(&s->client);
    LOGI("mqtt", s->cfg->broker, "%s closed", s->client_id);
    sub_free(s);
}
