/* Local MQTT for nurse-station apps. See local.h. */
#include "local.h"
#include "err.h"
#include "log.h"
#include "mqtt_link.h"
#include "util.h"

#include <MQTTAsync.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define MOD "local-mqtt"

struct local {
    const struct site_config *cfg;
    MQTTAsync client;
    edge_cmd_fn on_cmd;
    edge_active_fn active;
    void *arg;
    char topic_alert[256];
    char topic_alarms[256];
    char topic_cmd[256];
    pthread_mutex_t lock; /* serialises snapshot publication (order of retained docs) */
    atomic_bool connected;
    atomic_uint_fast64_t published, failures, commands;
};

char *local_snapshot_json(const struct site_config *c, const struct ch_alert *alarms, size_t n,
                          int64_t ts_ms)
{
    size_t cap = 256, len = 0;
    char *buf = ch_xmalloc(cap);
    len = (size_t)snprintf(buf, cap,
                           "{\"site\":\"%s\",\"gateway\":\"%s\",\"ts_ms\":%lld,\"alarms\":[",
                           c->site, c->gateway, (long long)ts_ms);
    for (size_t i = 0; i < n; i++) {
        char *a = ch_alert_encode(&alarms[i]);
        if (!a)
            continue; /* cannot happen for the module's own alerts; never block the rest */
        size_t al = strlen(a);
        if (len + al + 4 > cap) {
            cap = (len + al + 4) * 2;
            buf = ch_xrealloc(buf, cap);
        }
        if (buf[len - 1] != '[')
            buf[len++] = ',';
        memcpy(buf + len, a, al);
        len += al;
        free(a);
    }
    if (len + 3 > cap)
        buf = ch_xrealloc(buf, len + 3);
    memcpy(buf + len, "]}", 3);
    return buf;
}

static void send_msg(struct local *l, const char *topic, const char *payload, bool retained)
{
    MQTTAsync_message m = MQTTAsync_message_initializer;
    m.payload = (void *)(uintptr_t)payload;
    m.payloadlen = (int)strlen(payload);
    m.qos = 1;
    m.retained = retained;
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    int rc = MQTTAsync_sendMessage(l->client, topic, &m, &ro);
    if (rc == MQTTASYNC_SUCCESS) {
        atomic_fetch_add(&l->published, 1);
    } else {
        atomic_fetch_add(&l->failures, 1);
        LOGD(MOD, NULL, "publish on %s failed: %s", topic, MQTTAsync_strerror(rc));
    }
}

static void publish_snapshot(struct local *l)
{
    struct ch_alert *act = NULL;
    size_t n = l->active(l->arg, &act);
    char *doc = local_snapshot_json(l->cfg, act, n, ch_now_ms());
    free(act);
    send_msg(l, l->topic_alarms, doc, true);
    free(doc);
}

static void on_subscribed(void *ctx, MQTTAsync_successData *resp)
{
    (void)resp;
    struct local *l = ctx;
    LOGI(MOD, NULL, "listening for commands on %s", l->topic_cmd);
}

static void on_sub_failed(void *ctx, MQTTAsync_failureData *resp)
{
    struct local *l = ctx;
    LOGW(MOD, NULL, "cannot subscribe to %s (%d)", l->topic_cmd, resp ? resp->code : 0);
}

static void on_connected(void *ctx, char *cause)
{
    (void)cause;
    struct local *l = ctx;
    atomic_store(&l->connected, true);
    LOGI(MOD, NULL, "connected to %s", l->cfg->local_mqtt.broker);
    MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
    ro.onSuccess = on_subscribed;
    ro.onFailure = on_sub_failed;
    ro.context = l;
    MQTTAsync_subscribe(l->client, l->topic_cmd, 1, &ro);
    pthread_mutex_lock(&l->lock);
    publish_snapshot(l);
    pthread_mutex_unlock(&l->lock);
}

static void on_lost(void *ctx, char *cause)
{
    struct local *l = ctx;
    atomic_store(&l->connected, false);
    LOGW(MOD, NULL, "connection to %s lost%s%s; reconnecting", l->cfg->local_mqtt.broker,
         cause ? ": " : "", cause ? cause : "");
}

static void on_connect_failed(void *ctx, MQTTAsync_failureData *resp)
{
    struct local *l = ctx;
    LOGW(MOD, NULL, "cannot connect to %s (%s); retrying", l->cfg->local_mqtt.broker,
         resp && resp->message ? resp->message : MQTTAsync_strerror(resp ? resp->code : -1));
}

static int on_message(void *ctx, char *topic, int tlen, MQTTAsync_message *msg)
{
    (void)tlen;
    struct local *l = ctx;
    char site[CH_ID_MAX], gw[CH_ID_MAX], user[CH_ID_MAX];
    const char *kind = NULL, *slash;
    /* cmd/{user}/{action}: the user is the broker's, its ACL lets each user
     * publish under its own name only (deploy/mosquitto/local.acl) */
    if (ch_topic_parse(topic, site, gw, &kind) && strncmp(kind, "cmd/", 4) == 0 &&
        (slash = strchr(kind + 4, '/')) != NULL && (size_t)(slash - kind - 4) < sizeof user) {
        memcpy(user, kind + 4, (size_t)(slash - kind - 4));
        user[slash - kind - 4] = '\0';
        atomic_fetch_add(&l->commands, 1);
        if (ch_valid_id(user))
            l->on_cmd(l->arg, "local-mqtt", user, slash + 1, msg->payload, (size_t)msg->payloadlen);
        else
            LOGW(MOD, NULL, "command from a user name that is not an id: ignored");
    }
    MQTTAsync_freeMessage(&msg);
    MQTTAsync_free(topic);
    return 1;
}

int local_create(const struct site_config *c, edge_cmd_fn on_cmd, edge_active_fn active, void *arg,
                 struct local **out)
{
    struct local *l = ch_xcalloc(1, sizeof *l);
    l->cfg = c;
    l->on_cmd = on_cmd;
    l->active = active;
    l->arg = arg;
    pthread_mutex_init(&l->lock, NULL);
    ch_topic(l->topic_alert, sizeof l->topic_alert, c->site, c->gateway, "alert");
    ch_topic(l->topic_alarms, sizeof l->topic_alarms, c->site, c->gateway, "alarms");
    /* a subscription filter: ch_topic() writes topics only, never wildcards */
    ch_topic(l->topic_cmd, sizeof l->topic_cmd - 4, c->site, c->gateway, "cmd");
    strcat(l->topic_cmd, "/+/+");
    *out = l;
    return 0;
}

int local_start(struct local *l)
{
    const struct local_mqtt_cfg *m = &l->cfg->local_mqtt;
    char cid[256];
    if (m->client_id && *m->client_id)
        ch_strlcpy(cid, m->client_id, sizeof cid);
    else
        snprintf(cid, sizeof cid, "carehub-local-%s-%s", l->cfg->site, l->cfg->gateway);
    struct mqtt_link_cbs cbs = {.ctx = l,
                                .on_message = on_message,
                                .on_lost = on_lost,
                                .on_connected = on_connected,
                                .on_connect_failed = on_connect_failed};
    int rc =
        mqtt_link_open_tls(m->broker, cid, m->username, m->password, &m->tls, &cbs, &l->client);
    if (rc != 0) {
        LOGE(MOD, NULL, "cannot start connecting to %s: %s", m->broker, ch_strerror(rc));
        return CH_EINVAL;
    }
    return 0;
}

void local_publish(struct local *l, const struct ch_alert *transition)
{
    if (!l || !atomic_load(&l->connected))
        return; /* the snapshot on reconnect makes up for it */
    char *a = ch_alert_encode(transition);
    pthread_mutex_lock(&l->lock);
    if (a)
        send_msg(l, l->topic_alert, a, false);
    publish_snapshot(l);
    pthread_mutex_unlock(&l->lock);
    free(a);
}

void local_destroy(struct local *l)
{
    if (!l)
        return;
    mqtt_link_close(&l->client);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

void local_get_stats(struct local *l, struct local_stats *out)
{
    out->published = atomic_load(&l->published);
    out->publish_failures = atomic_load(&l->failures);
    out->commands = atomic_load(&l->commands);
    out->connected = atomic_load(&l->connected);
}
