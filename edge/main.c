/* care-edge: the site gateway daemon. */
#include "alarm.h"
#include "authz.h"
#include "site.h"
#include "console.h"
#include "driver.h"
#include "err.h"
#include "local.h"
#include "log.h"
#include "notify.h"
#include "poller.h"
#include "rules.h"
#include "sdnotify.h"
#include "spool.h"
#include "uplink.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXIT_RUNTIME 1
#define EXIT_CONFIG  2

static void usage(FILE *out)
{
    fputs(
        "Usage: care-edge -c FILE [options]\n"
        "\n"
        "Polls a care site's devices, and publishes their readings to the central broker.\n"
        "\n"
        "  -c, --config FILE      site configuration (YAML)\n"
        "      --check            validate the configuration and the profiles it names, then exit\n"
        "      --once             poll every device once, print the decoded readings, exit\n"
        "                         (no MQTT; for checking the wiring on site)\n"
        "      --log-level LEVEL  error, warn, info (default) or debug; overrides the file\n"
        "      --stats-file FILE  at exit, write per-device delivery counts as JSON\n"
        "      --hash-password    read a console password on stdin, print its hash for\n"
        "                         console.users[].password_hash, exit\n"
        "  -V, --version          print the version\n"
        "  -h, --help             this text\n"
        "\n"
        "Exit status: 0 clean stop, 1 runtime failure, 2 bad configuration.\n",
        out);
}

struct app {
    struct site site;      /* as started: the uplink, console, local broker and spool keep it */
    struct site *live;     /* in force for devices, rules and alarms (&site until a reload) */
    struct site **retired; /* replaced by reloads, kept until exit: alarms may point into them */
    size_t n_retired;
    const char *config_path;
    /* held for reading by other threads that use poller and live (the alarm
     * sink's annunciators, the console's status); a reload swaps them under
     * it for writing, with no bus thread running */
    pthread_rwlock_t swap_lock;
    struct poller *poller;
    struct spool *spool;
    struct uplink *uplink;
    struct alarms *alarms;
    struct rules *rules;
    struct console *console;
    struct local *local;
    struct notifier *notifier; /* NULL: no notify: section */
    const char **dev_ids;      /* the uplink's device indexes: append-only across reloads */
    size_t n_ids;
    size_t *up_index;  /* poller device i -> index in dev_ids */
    size_t *cfg_index; /* poller device i -> index in live->cfg.devices */
    /* uptime is a duration: monotonic */
    int64_t started_mono;
    /* wall-clock steps (NTP, an installer): seen by the main loop's tick,
     * logged once each, counted in self-metrics (clock_steps) */
    struct ch_clock_watch clock;
    uint64_t clock_steps;
    uint64_t alert_spool_errors;
    uint64_t alerts_not_durable; /* kept in memory only: the spool's disk failed */
    int spool_state;             /* 0 ok, 1 disk full, 2 degraded (memory); -1 not looked yet */
    uint64_t commands_ok, commands_rejected;
    uint64_t commands_denied; /* of the rejected, those the identity may not give */
};

static void emit(void *arg, size_t dev, struct ch_reading *r)
{
    struct app *a = arg;
    /* spooled first: the reading is safe before any rule acts on it */
    uplink_submit(a->uplink, r, (int)a->up_index[dev]);
    if (a->rules)
        rules_feed(a->rules, a->cfg_index[dev], r, ch_time_now());
    free(r->metrics);
}

/* Drives each annunciator coil from the alarms active now. */
static void update_annunciators(struct app *a)
{
    pthread_rwlock_rdlock(&a->swap_lock);
    const struct site_config *c = &a->live->cfg;
    for (size_t i = 0; i < c->annunciators.n; i++) {
        const struct annunciator_cfg *an = SITE_ANNUNCIATOR(c, i);
        unsigned m =
            alarms_annunciate_mask(a->alarms, an->include_acknowledged, (int)an->min_escalation);
        poller_set_output(a->poller, i, (m & an->prio_mask) != 0);
    }
    pthread_rwlock_unlock(&a->swap_lock);
}

/* A transition worth telling someone (a raise, an escalation, an
 * acknowledgement that stops what is still to be sent, the alarm's end) to
 * the notifier, with the names people read. */
static void notify_transition(struct app *a, const struct ch_alert *t)
{
    struct notify_event ne;
    char where[2 * CH_NAME_MAX + 4];
    if (notify_event_of_alert(t, &ne, where, sizeof where))
        notify_event(a->notifier, &ne);
}

/* A delivery's outcome (from the notifier's thread): a line of the alarm's
 * history, "已通知 护士长 · 企业微信 ok" on the consoles and at the hub. A
 * phone number is shown with its middle hidden. Failed tries are the
 * notifier's to log; the final outcome is the alarm's. */
static void on_notified(void *arg, const struct notify_result *r)
{
    struct app *a = arg;
    if (!r->final)
        return;
    char text[CH_TEXT_MAX];
    notify_outcome(r, site_locale_name(a->site.cfg.locale), text, sizeof text);
    alarms_note(a->alarms, r->alarm_id, r->raised_ms, r->level,
                r->recipient && *r->recipient ? r->recipient : r->channel, text, ch_time_now());
}

/* Every alarm transition: durable in the spool's alert lane first (it then
 * counts as raised, and goes to the hub ahead of any telemetry backlog),
 * then to everything on site that tells staff: console, local broker, coils. */
static void on_transition(void *arg, const struct ch_alert *t)
{
    struct app *a = arg;
    char *json = ch_alert_encode(t);
    int rc = json ? uplink_alert(a->uplink, json, strlen(json)) : CH_EINVAL;
    if (!json)
        LOGE("alarm", t->alarm_id, "cannot encode the %s transition",
             ch_alarm_event_name(t->event));
    else if (rc < 0) /* logged by the uplink; local annunciation still goes on */
        __atomic_add_fetch(&a->alert_spool_errors, 1, __ATOMIC_RELAXED);
    else if (rc == SPOOL_NOT_DURABLE) /* sent, but lost if care-edge stops before */
        __atomic_add_fetch(&a->alerts_not_durable, 1, __ATOMIC_RELAXED);
    free(json);
    LOGI("alarm", t->alarm_id, "%s -> %s (%s%s%s)", ch_alarm_event_name(t->event),
         ch_alarm_state_name(t->state), ch_priority_name(t->priority), t->by[0] ? ", by " : "",
         t->by);
    if (a->console)
        console_publish(a->console, t);
    if (a->local)
        local_publish(a->local, t);
    update_annunciators(a);
    pthread_rwlock_rdlock(&a->swap_lock); /* run() takes the notifier away under it */
    if (a->notifier)
        notify_transition(a, t);
    pthread_rwlock_unlock(&a->swap_lock);
}

/* Every command, from any path, with the identity its receiver
 * authenticated: checked against the table of edge/authz.h, then carried
 * out. Refusals are logged with the source and reason, and counted. */
static int run_command(struct app *a, const char *source, const struct ch_command *cmd)
{
    const char *why = NULL;
    int rc = authz_check(cmd->action, cmd->role, &why);
    if (rc == 0)
        rc = alarms_command(a->alarms, cmd, ch_time_now());
    if (rc == 0) {
        __atomic_add_fetch(&a->commands_ok, 1, __ATOMIC_RELAXED);
        LOGI("edge", source, "%s of %s by %s (%s)", ch_command_action_name(cmd->action),
             cmd->alarm_id, cmd->by, ch_role_name(cmd->role));
        return 0;
    }
    __atomic_add_fetch(&a->commands_rejected, 1, __ATOMIC_RELAXED);
    if (rc == CH_EDENIED)
        __atomic_add_fetch(&a->commands_denied, 1, __ATOMIC_RELAXED);
    LOGW("edge", source, "%s of %s by %s (%s) refused: %s", ch_command_action_name(cmd->action),
         cmd->alarm_id, cmd->by, ch_role_name(cmd->role), why ? why : ch_strerror(rc));
    return rc;
}

/* A command from the hub (uplink) or an app on the local broker (user: the
 * broker's authenticated user). */
static void on_command(void *arg, const char *source, const char *user, const char *action,
                       const char *payload, size_t len)
{
    struct app *a = arg;
    struct ch_command cmd;
    char err[256];
    int want = ch_command_action_parse(action);
    int rc = ch_command_decode(payload, len, &cmd, err, sizeof err);
    if (rc == 0 && cmd.action != want) {
        snprintf(err, sizeof err, "action '%s' does not match the topic's cmd/%s",
                 ch_command_action_name(cmd.action), action);
        rc = CH_EINVAL;
    }
    if (rc == 0 && !user && strncmp(cmd.by, "hub:", 4) != 0) {
        snprintf(err, sizeof err, "a command from the hub names its asker \"hub:...\", not \"%s\"",
                 cmd.by);
        rc = CH_EINVAL;
    }
    if (rc != 0) {
        __atomic_add_fetch(&a->commands_rejected, 1, __ATOMIC_RELAXED);
        LOGW("edge", source, "command on cmd/%.32s rejected: %s", action, err);
        return;
    }
    if (user) { /* the sender's own "by" and "role" count for nothing */
        snprintf(cmd.by, sizeof cmd.by, "local:%s", user);
        /* the console's users, as started (the console keeps them too) */
        const struct cfg_list *users = &a->site.cfg.console.users;
        cmd.role = authz_local_role(users->items, users->n, user);
    }
    run_command(a, source, &cmd);
}

static size_t ops_active(void *arg, struct ch_alert **out)
{
    struct app *a = arg;
    return alarms_active(a->alarms, out);
}

static size_t ops_history(void *arg, int64_t since_ms, struct ch_alert **out)
{
    struct app *a = arg;
    return alarms_history(a->alarms, since_ms, out);
}

static int ops_command(void *arg, const struct ch_command *cmd)
{
    return run_command(arg, "console", cmd);
}

/* The spool's health for the console's status (a banner while it fails). */
static json_t *spool_json(const struct spool_stats *ss)
{
    return json_pack("{s:b, s:b, s:s?, s:I, s:I, s:I, s:I}", "degraded", ss->degraded, "disk_full",
                     ss->disk_full, "error", ss->error ? ch_strerror(ss->error) : NULL, "since_ms",
                     (json_int_t)ss->since_ms, "memory_bytes", (json_int_t)ss->memory_bytes,
                     "memory_max", (json_int_t)ss->memory_max, "dropped",
                     (json_int_t)ss->lane[SPOOL_TELEMETRY].dropped_records);
}

/* How many of the live devices are online; *n: how many there are. */
static size_t devices_online(struct app *a, size_t *n)
{
    pthread_rwlock_rdlock(&a->swap_lock);
    size_t online = 0;
    *n = poller_device_count(a->poller);
    for (size_t i = 0; i < *n; i++) {
        struct poller_dev_stats ds;
        poller_device_stats(a->poller, i, &ds);
        online += ds.online;
    }
    pthread_rwlock_unlock(&a->swap_lock);
    return online;
}

static char *ops_status(void *arg)
{
    struct app *a = arg;
    const struct site_config *c = &a->site.cfg;
    struct uplink_stats us;
    uplink_get_stats(a->uplink, &us);
    size_t n, online = devices_online(a, &n);
    struct spool_stats ss;
    spool_stats(a->spool, &ss);
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:b, s:I, s:I, s:I, s:I, s:o}", "site", c->site, "gateway", c->gateway,
        "version", CAREHUB_VERSION, "uplink_connected", us.connected, "devices", (json_int_t)n,
        "devices_online", (json_int_t)online, "spool_pending", (json_int_t)us.queued, "uptime_s",
        (json_int_t)((ch_mono_ms() - a->started_mono) / 1000), "spool", spool_json(&ss));
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

/* A self-metric: its name and value. */
struct named_value {
    const char *name;
    double v;
};

/* Publishes one self-metrics reading of device (measurement) from a table. */
static void submit_metrics(struct app *a, const char *device, const char *measurement,
                           int64_t ts_ms, const struct named_value *nv, size_t n)
{
    struct ch_reading r = {.ts_ms = ts_ms, .quality = CH_Q_GOOD, .n_metrics = n};
    ch_strlcpy(r.device, device, sizeof r.device);
    ch_strlcpy(r.measurement, measurement, sizeof r.measurement);
    r.metrics = ch_xcalloc(n + 1, sizeof *r.metrics);
    for (size_t k = 0; k < n; k++) {
        ch_strlcpy(r.metrics[k].name, nv[k].name, sizeof r.metrics[k].name);
        r.metrics[k].value = nv[k].v;
    }
    uplink_submit(a->uplink, &r, -1);
    free(r.metrics);
}

#define LOAD(x) ((double)__atomic_load_n(&(x), __ATOMIC_RELAXED))

/* Publishes the gateway's own health as telemetry, and logs a summary. */
static void self_metrics(struct app *a, int64_t window_ms, uint64_t *last_readings)
{
    const struct site_config *c = &a->site.cfg;
    size_t n = poller_device_count(a->poller);
    uint64_t ok = 0, failed = 0;
    size_t online = 0;
    int64_t now = ch_now_ms();
    for (size_t i = 0; i < n; i++) {
        struct poller_dev_stats ds;
        poller_device_stats(a->poller, i, &ds);
        ok += ds.polls_ok;
        failed += ds.polls_failed;
        online += ds.online;
        /* failed polls by why: a wrong register map (exceptions) is not a
           flaky line (timeouts, CRC errors) */
        const struct named_value dm[] = {
            {"online", ds.online ? 1 : 0},
            {"polls_ok", (double)ds.polls_ok},
            {"polls_failed", (double)ds.polls_failed},
            {"timeouts", (double)ds.timeouts},
            {"exceptions", (double)ds.exceptions},
            {"crc_errors", (double)ds.crc_errors},
            {"bad_replies", (double)ds.bad_replies},
            {"rejected", (double)ds.rejected},
            {"dropped", (double)ds.dropped},
            {"requests", (double)ds.requests},
            {"registers", (double)ds.registers},
            {"latency_ms", ds.last_latency_ms},
        };
        submit_metrics(a, ds.id, "edge_device", now, dm, CH_ARRAY_LEN(dm));
        if (n <= 20)
            LOGI("poller", ds.id, "%s, %llu polls ok, %llu failed%s%s",
                 ds.online ? "online" : "OFFLINE", (unsigned long long)ds.polls_ok,
                 (unsigned long long)ds.polls_failed, ds.last_err ? ", last error: " : "",
                 ds.last_err ? ch_strerror(ds.last_err) : "");
        if (n <= 20 && ds.last_err && ds.last_detail[0])
            LOGI("poller", ds.id, "last failure: %s", ds.last_detail);
    }
    /* each bus's own counts (a BLE receiver connection's messages and
       rejections): a broken receiver must not look like a quiet one */
    for (size_t b = 0; b < poller_bus_count(a->poller); b++) {
        const char *id;
        size_t nc = poller_bus_counters(a->poller, b, &id, NULL, 0);
        if (nc == 0)
            continue;
        struct drv_counter *dc = ch_xcalloc(nc, sizeof *dc);
        struct named_value *nv = ch_xcalloc(nc, sizeof *nv);
        size_t got = poller_bus_counters(a->poller, b, &id, dc, nc);
        nc = got < nc ? got : nc;
        for (size_t k = 0; k < nc; k++)
            nv[k] = (struct named_value){dc[k].name, dc[k].value};
        submit_metrics(a, id, "edge_bus", now, nv, nc);
        free(nv);
        free(dc);
    }
    struct uplink_stats us;
    uplink_get_stats(a->uplink, &us);
    struct spool_stats ss;
    spool_stats(a->spool, &ss);
    struct alarms_stats as;
    alarms_get_stats(a->alarms, &as);
    struct local_stats ls = {0};
    if (a->local)
        local_get_stats(a->local, &ls);
    uint64_t coil_ok = 0, coil_failed = 0, coils_unconfirmed = 0;
    for (size_t i = 0; i < poller_output_count(a->poller); i++) {
        struct poller_out_stats os;
        poller_output_stats(a->poller, i, &os);
        coil_ok += os.writes_ok;
        coil_failed += os.writes_failed;
        coils_unconfirmed += os.last_err != 0;
    }
    const struct named_value gm[] = {
        {"uptime_s", (double)(ch_mono_ms() - a->started_mono) / 1000.0},
        {"devices", (double)n},
        {"devices_online", (double)online},
        {"polls_ok", (double)ok},
        {"polls_failed", (double)failed},
        {"messages_published", (double)us.messages_published},
        {"readings_published", (double)us.readings_published},
        {"historical_published", (double)us.historical_published},
        {"alerts_published", (double)us.alerts_published},
        {"publish_failures", (double)us.publish_failures},
        {"spool_pending", (double)us.queued},
        {"spool_dropped", (double)us.dropped},
        {"spool_dropped_sent", (double)us.dropped_sent},
        {"alerts_dropped", (double)us.alerts_dropped},
        {"alerts_pending", (double)us.alerts_queued},
        {"hub_acks", (double)us.hub_acks},
        {"hub_redeliveries", (double)us.redeliveries},
        {"spool_errors", (double)us.spool_errors},
        {"spool_disk_bytes", (double)ss.disk_bytes},
        {"spool_degraded", ss.degraded ? 1 : 0},
        {"spool_disk_full", ss.disk_full ? 1 : 0},
        /* counts since start: a state that came and went between two
           samples, or whose samples were themselves dropped from a full
           disk, still shows */
        {"spool_degraded_count", (double)ss.degraded_count},
        {"spool_disk_full_count", (double)ss.disk_full_count},
        {"spool_memory_bytes", (double)ss.memory_bytes},
        {"alerts_not_durable", LOAD(a->alerts_not_durable)},
        {"spool_corrupt",
         (double)(ss.lane[SPOOL_ALERT].corrupt_records + ss.lane[SPOOL_TELEMETRY].corrupt_records)},
        {"alarms_active", (double)as.active},
        {"alarm_transitions", (double)as.transitions},
        {"alarm_floods", (double)as.floods},
        {"alarm_state_errors", (double)as.state_errors},
        {"alarm_state_fallback", as.state_fallback ? 1 : 0},
        {"alert_spool_errors", LOAD(a->alert_spool_errors)},
        {"commands_ok", LOAD(a->commands_ok)},
        {"clock_steps", (double)a->clock_steps},
        {"commands_rejected", LOAD(a->commands_rejected)},
        {"commands_denied", LOAD(a->commands_denied)},
        /* the sounders and relays alarms drive: a coil that cannot be set
           is an alarm nobody hears */
        {"coil_writes_ok", (double)coil_ok},
        {"coil_writes_failed", (double)coil_failed},
        {"coils_unconfirmed", (double)coils_unconfirmed},
        /* the local broker nurse-station apps listen on (last: left out
           when the site has none) */
        {"local_connected", ls.connected ? 1 : 0},
        {"local_published", (double)ls.published},
        {"local_publish_failures", (double)ls.publish_failures},
        {"local_commands", (double)ls.commands},
    };
    submit_metrics(a, c->gateway, "edge_gateway", now, gm, CH_ARRAY_LEN(gm) - (a->local ? 0 : 4));

    double rate = window_ms > 0 ? (double)(us.readings_published - *last_readings) * 1000.0 /
                                      (double)window_ms
                                : 0;
    *last_readings = us.readings_published;
    LOGI("edge", c->gateway,
         "%zu/%zu devices online, %llu polls ok, %llu failed; %llu readings published "
         "(%.1f/s), %llu in the spool, %llu dropped, broker %s",
         online, n, (unsigned long long)ok, (unsigned long long)failed,
         (unsigned long long)us.readings_published, rate, (unsigned long long)us.queued,
         (unsigned long long)us.dropped, us.connected ? "connected" : "DISCONNECTED");
}

static int write_stats(struct app *a, const char *path)
{
    json_t *root = json_object();
    json_t *devs = json_object();
    size_t n = poller_device_count(a->poller);
    for (size_t i = 0; i < n; i++) {
        struct poller_dev_stats ds;
        poller_device_stats(a->poller, i, &ds);
        json_t *d = json_object();
        json_object_set_new(d, "polls_ok", json_integer((json_int_t)ds.polls_ok));
        json_object_set_new(d, "polls_failed", json_integer((json_int_t)ds.polls_failed));
        json_object_set_new(d, "timeouts", json_integer((json_int_t)ds.timeouts));
        json_object_set_new(d, "exceptions", json_integer((json_int_t)ds.exceptions));
        json_object_set_new(d, "crc_errors", json_integer((json_int_t)ds.crc_errors));
        json_object_set_new(d, "bad_replies", json_integer((json_int_t)ds.bad_replies));
        json_object_set_new(d, "requests", json_integer((json_int_t)ds.requests));
        json_object_set_new(
            d, "published",
            json_integer((json_int_t)uplink_device_published(a->uplink, a->up_index[i])));
        json_object_set_new(devs, ds.id, d);
    }
    struct uplink_stats us;
    uplink_get_stats(a->uplink, &us);
    json_object_set_new(root, "devices", devs);
    json_object_set_new(root, "messages_published",
                        json_integer((json_int_t)us.messages_published));
    json_object_set_new(root, "readings_published",
                        json_integer((json_int_t)us.readings_published));
    json_object_set_new(root, "dropped", json_integer((json_int_t)us.dropped));
    json_object_set_new(root, "dropped_sent", json_integer((json_int_t)us.dropped_sent));
    json_object_set_new(root, "alerts_dropped", json_integer((json_int_t)us.alerts_dropped));
    json_object_set_new(root, "last_alert_seq", json_integer((json_int_t)us.alert_seq));
    json_object_set_new(root, "oldest_reading", json_integer((json_int_t)us.oldest_reading));
    json_object_set_new(root, "hub_acks", json_integer((json_int_t)us.hub_acks));
    json_object_set_new(root, "redeliveries", json_integer((json_int_t)us.redeliveries));
    json_object_set_new(root, "last_seq", json_integer((json_int_t)us.seq));
    int rc = json_dump_file(root, path, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(root);
    if (rc != 0)
        LOGE("edge", NULL, "cannot write stats file %s", path);
    return rc;
}

/* Maps the poller's devices to the uplink's device indexes (new ids are
 * appended: an index keeps its device for the whole run) and to the live
 * configuration's device list. */
static void map_devices(struct app *a)
{
    const struct site_config *c = &a->live->cfg;
    size_t n = poller_device_count(a->poller);
    free(a->up_index);
    free(a->cfg_index);
    a->up_index = ch_xcalloc(n + 1, sizeof *a->up_index);
    a->cfg_index = ch_xcalloc(n + 1, sizeof *a->cfg_index);
    for (size_t i = 0; i < n; i++) {
        struct poller_dev_stats ds;
        poller_device_stats(a->poller, i, &ds);
        size_t k = 0;
        while (k < a->n_ids && strcmp(a->dev_ids[k], ds.id) != 0)
            k++;
        if (k == a->n_ids) {
            a->dev_ids = ch_xrealloc(a->dev_ids, (a->n_ids + 2) * sizeof *a->dev_ids);
            a->dev_ids[a->n_ids++] = ds.id; /* owned by a configuration kept until exit */
        }
        a->up_index[i] = k;
        for (size_t j = 0; j < c->devices.n; j++)
            if (SITE_DEV(c, j)->id == ds.id)
                a->cfg_index[i] = j;
    }
    if (a->uplink)
        uplink_add_devices(a->uplink, a->n_ids);
}

/* The retained status: online, version, and the live inventory. */
static void make_birth(struct app *a, struct ch_status *birth)
{
    const struct site_config *c = &a->live->cfg;
    static char boot_id[33];
    if (!boot_id[0])
        ch_random_hex(boot_id);
    memset(birth, 0, sizeof *birth);
    birth->online = true;
    birth->ts_ms = ch_now_ms();
    ch_strlcpy(birth->site, c->site, sizeof birth->site);
    ch_strlcpy(birth->gateway, c->gateway, sizeof birth->gateway);
    ch_strlcpy(birth->version, CAREHUB_VERSION, sizeof birth->version);
    ch_strlcpy(birth->boot_id, boot_id, sizeof birth->boot_id);
    ch_strlcpy(birth->site_name, c->site_name ? c->site_name : "", sizeof birth->site_name);
    birth->devices = ch_xcalloc(c->devices.n + 1, sizeof *birth->devices);
    for (size_t i = 0; i < c->devices.n; i++) {
        const struct device_cfg *d = SITE_DEV(c, i);
        if (!d->enabled)
            continue;
        struct ch_device_info *di = &birth->devices[birth->n_devices++];
        ch_strlcpy(di->id, d->id, sizeof di->id);
        ch_strlcpy(di->profile, d->profile, sizeof di->profile);
        ch_strlcpy(di->bus, d->bus, sizeof di->bus);
        ch_strlcpy(di->room, d->room ? d->room : "", sizeof di->room);
        ch_strlcpy(di->name, d->name ? d->name : "", sizeof di->name);
        const char *room_name = site_room_name(c, d->room);
        ch_strlcpy(di->room_name, room_name ? room_name : "", sizeof di->room_name);
    }
}

/* True if a setting that only a restart applies differs; logs which. */
static bool restart_only_changed(const struct site_config *o, const struct site_config *n)
{
    const char *what = NULL;
    if (strcmp(o->site, n->site) || strcmp(o->gateway, n->gateway))
        what = "site or gateway";
    else if (strcmp(o->uplink.broker, n->uplink.broker) ||
             strcmp(o->spool.dir ? o->spool.dir : "", n->spool.dir ? n->spool.dir : ""))
        what = "uplink broker or spool directory";
    else if (o->console.enabled != n->console.enabled || o->console.port != n->console.port ||
             o->console.users.n != n->console.users.n)
        what = "console";
    else if (strcmp(o->local_mqtt.broker ? o->local_mqtt.broker : "",
                    n->local_mqtt.broker ? n->local_mqtt.broker : ""))
        what = "local broker";
    else if (strcmp(o->timezone ? o->timezone : "", n->timezone ? n->timezone : ""))
        what = "timezone";
    else if (strcmp(o->notify_src ? o->notify_src : "", n->notify_src ? n->notify_src : ""))
        what = "notify section";
    else if (o->locale != n->locale)
        what = "locale";
    if (what)
        LOGW("edge", NULL,
             "reload: the %s changed, which takes a restart; the running values stay until then",
             what);
    return what != NULL;
}

/* SIGHUP: devices, residents, rules and annunciators from the file again,
 * without a restart. The new file is checked first; if it has errors, they
 * are reported (file:line:key) and everything goes on as it was. Readings
 * are spooled up to the moment the old bus threads stop and from the moment
 * the new ones start (a poll in progress finishes first); alarms keep their
 * state (alarm.h). Returns true if the new file is in force. */
static bool reload(struct app *a)
{
    struct site *next = ch_xcalloc(1, sizeof *next);
    LOGI("edge", NULL, "SIGHUP: reloading %s", a->config_path);
    if (site_load(a->config_path, next) != 0) {
        LOGE("edge", NULL, "reload: %s has errors (above); the running configuration stays",
             a->config_path);
        free(next);
        return false;
    }
    restart_only_changed(&a->site.cfg, &next->cfg);
    struct poller *np = NULL;
    if (poller_create(&next->cfg, emit, a, &np) != 0) {
        LOGE("edge", NULL, "reload: %s has errors (above); the running configuration stays",
             a->config_path);
        site_free(next);
        free(next);
        return false;
    }
    /* no bus thread runs from here until the new ones start: nothing can
     * feed the rules or be emitted while they are swapped */
    poller_stop(a->poller);
    rules_destroy(a->rules);
    a->rules = NULL;
    alarms_reconfigure(a->alarms, &next->cfg);
    struct rules *nr = NULL;
    if (rules_create(&next->cfg, a->alarms, &nr) != 0) {
        /* rules_check passed in site_load, so this is not expected: keep
         * the old model rather than run without rules */
        LOGE("edge", NULL, "reload: cannot build the rules; the running configuration stays");
        alarms_reconfigure(a->alarms, &a->live->cfg);
        rules_create(&a->live->cfg, a->alarms, &a->rules);
        alarms_reconfigured(a->alarms, ch_time_now());
        poller_destroy(np);
        site_free(next);
        free(next);
        poller_start(a->poller);
        return false;
    }
    a->rules = nr;
    struct poller *old = a->poller;
    pthread_rwlock_wrlock(&a->swap_lock);
    a->poller = np;
    if (a->live != &a->site) {
        a->retired = ch_xrealloc(a->retired, (a->n_retired + 1) * sizeof *a->retired);
        a->retired[a->n_retired++] = a->live;
    }
    a->live = next;
    map_devices(a);
    pthread_rwlock_unlock(&a->swap_lock);
    poller_destroy(old);
    alarms_reconfigured(a->alarms, ch_time_now()); /* its transitions see the new outputs */
    struct ch_status birth;
    make_birth(a, &birth);
    uplink_set_birth(a->uplink, &birth);
    ch_status_free(&birth);
    update_annunciators(a);
    if (poller_start(a->poller) != 0) {
        LOGE("edge", NULL, "reload: cannot start the bus threads");
        return false;
    }
    LOGI("edge", a->live->cfg.gateway,
         "reloaded: %zu devices on %zu buses, %zu residents, %zu rule instances",
         poller_device_count(a->poller), a->live->cfg.buses.n, a->live->cfg.residents.n,
         rules_instances(a->rules));
    return true;
}

/* The one place a wall-clock step is noticed: logged once per step, with
 * its size, and counted. Nothing needs fixing up: every timer runs on the
 * monotonic clock; readings and transitions from now on carry the new
 * time, in the order they happen (spool numbers, not timestamps, order
 * them). */
static void clock_watch(struct app *a, struct ch_time t)
{
    int64_t step = ch_clock_step(&a->clock, t, 2000);
    if (!step)
        return;
    a->clock_steps++;
    LOGW("edge", NULL,
         "wall clock stepped %s by %.1f s: timers (on-delays, no-data, escalation, shelving) run "
         "on the monotonic clock and are not affected; readings and alarm transitions are "
         "labelled with the new time from here on",
         step > 0 ? "forward" : "back", (double)(step > 0 ? step : -step) / 1000.0);
}

/* The spool's health, each second: the gateway's own alarm spool-failed is
 * raised while the disk is full or cannot be written (the spool logs the
 * change itself, once), and cleared when it works again. */
static void spool_watch(struct app *a)
{
    struct spool_stats ss;
    spool_stats(a->spool, &ss);
    int state = ss.degraded ? 2 : ss.disk_full ? 1 : 0;
    if (state == a->spool_state)
        return;
    a->spool_state = state;
    char msg[CH_TEXT_MAX];
    const char *dir = a->site.cfg.spool.dir, *err = ch_strerror(ss.error);
    if (state == 2)
        snprintf(msg, sizeof msg,
                 "本机存储故障：数据仅保存在内存中 / Storage failure: data kept in memory only "
                 "(%s: %s)",
                 dir, err);
    else
        snprintf(msg, sizeof msg,
                 "本机存储已满：最早的数据被删除 / Disk full: the oldest readings are dropped to "
                 "make room (%s)",
                 dir);
    alarms_self(a->alarms, ALARM_SELF_SPOOL, state != 0, state ? msg : NULL, ch_time_now());
}

/* The main loop's keep-alive to systemd, with its status line (sdnotify.h).
 *
 * What WATCHDOG=1 vouches for: it is sent from this loop only, after its
 * tick (rules and alarms timed, the spool looked at, each under its lock),
 * and after taking once each the locks that the other threads share with
 * alarming: the spool's and the uplink's (uplink_get_stats), the poller's
 * under swap_lock (devices_online), the alarms' (alarms_get_stats). A loop
 * that hangs, or a thread that deadlocks or dies holding one of those
 * locks, stops the keep-alives, and systemd restarts care-edge after
 * WatchdogSec.
 *
 * What it does not wait for: the bus threads' progress. They have no
 * heartbeat, and a bus thread is blocked for long legitimately: a response
 * timeout per silent slave, a TCP connect to a meter that is off, a sleep
 * until a slow device is due. A dead line or device is reported already
 * (offline, the stale-data rules), a restart would not mend it, and
 * restarting every WatchdogSec would soon reach StartLimitBurst and leave
 * the site with no local alarming at all. Nor the broker: the gateway
 * alarms on site without it. */
static void keep_alive(struct app *a)
{
    struct uplink_stats us;
    uplink_get_stats(a->uplink, &us);
    size_t n, online = devices_online(a, &n);
    struct alarms_stats as;
    alarms_get_stats(a->alarms, &as);
    sdnotify_alive("%zu/%zu devices online, %zu alarms active, broker %s, %llu readings to send",
                   online, n, as.active, us.connected ? "connected" : "disconnected",
                   (unsigned long long)us.queued);
}

static int run(struct app *a, const char *stats_file)
{
    const struct site_config *c = &a->site.cfg;
    /* before any thread starts (the spool's is the first): a thread that
     * does not block them would take SIGTERM while the main loop is busy in
     * a tick, and its default action would end care-edge without a clean
     * stop */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* threads created below inherit it */
    sdnotify_init();
    map_devices(a);
    struct ch_status birth;
    make_birth(a, &birth);
    /* a disk that cannot be written does not stop the gateway: the spool
     * keeps new records in memory (spool.h), spool-failed says so */
    struct spool_opts so = {.max_bytes = (uint64_t)c->spool.max_bytes,
                            .commit_interval_ms = c->spool.commit_interval_ms,
                            .memory_bytes = (uint64_t)c->spool.memory_bytes,
                            .retry_interval_ms = c->spool.retry_interval_ms};
    int rc = spool_open(c->spool.dir, &so, &a->spool);
    if (rc != 0) { /* another process on it, bad options, or a spool of another format */
        LOGE("edge", NULL, "cannot open the spool in %s: %s%s", c->spool.dir, ch_strerror(rc),
             rc == CH_EFORMAT ? "; exiting with status 2: restarting will not change it" : "");
        ch_status_free(&birth);
        return rc == CH_EFORMAT ? EXIT_CONFIG : EXIT_RUNTIME;
    }
    rc = uplink_create(c, &birth, a->dev_ids, a->n_ids, a->spool, &a->uplink);
    ch_status_free(&birth);
    if (rc != 0)
        return EXIT_RUNTIME;
    uplink_set_command_handler(a->uplink, on_command, a);
    if (alarms_open(c, on_transition, a, ch_time_now(), &a->alarms) != 0)
        return EXIT_RUNTIME;
    if (rules_create(c, a->alarms, &a->rules) != 0)
        return EXIT_RUNTIME;
    if (c->notify) { /* its pending deliveries are kept beside the spool */
        char *dir = cfg_resolve_path(c->spool.dir, "notify");
        rc = notify_open(c->notify, dir, c->timezone && *c->timezone ? c->timezone : NULL,
                         on_notified, a, &a->notifier);
        free(dir);
        if (rc != 0) {
            LOGE("edge", NULL, "cannot start the notifier: %s", ch_strerror(rc));
            return EXIT_RUNTIME;
        }
    }
    update_annunciators(a); /* a latched alarm from before a restart sounds again */
    if (c->local_mqtt.broker && *c->local_mqtt.broker &&
        local_create(c, on_command, ops_active, a, &a->local) != 0)
        return EXIT_RUNTIME;

    a->started_mono = ch_mono_ms();
    if (c->console.enabled) {
        struct console_ops ops = {.arg = a,
                                  .active = ops_active,
                                  .history = ops_history,
                                  .command = ops_command,
                                  .status_json = ops_status};
        if (console_start(c, &ops, &a->console) != 0) {
            LOGE("edge", NULL, "cannot start the local console on %s:%lld", c->console.bind,
                 (long long)c->console.port);
            return EXIT_RUNTIME;
        }
    }
    if (a->local && local_start(a->local) != 0)
        return EXIT_RUNTIME;
    if (uplink_start(a->uplink) != 0 || poller_start(a->poller) != 0) {
        LOGE("edge", NULL, "cannot start threads");
        uplink_stop(a->uplink, 0); /* no sender may outlive the client it uses */
        return EXIT_RUNTIME;
    }
    LOGI("edge", c->gateway,
         "started: site %s, %zu devices on %zu buses, %zu rule instances, broker %s", c->site,
         poller_device_count(a->poller), c->buses.n, rules_instances(a->rules), c->uplink.broker);
    if (a->console)
        LOGI("console", NULL, "serving the alarm console on http://%s:%u/", c->console.bind,
             (unsigned)console_port(a->console));
    /* serving: the spool open, the alarms loaded, the console listening, the
     * bus threads polling; the broker is the uplink's to reach, not a
     * condition (a gateway alarms on site without it) */
    sdnotify_ready("started: site %s, %zu devices, broker %s", c->site,
                   poller_device_count(a->poller), c->uplink.broker);

    uint64_t last_readings = 0;
    int64_t last = ch_mono_ms();
    int64_t next = last + c->self_metrics_interval_ms;
    int64_t next_tick = last + 1000;
    clock_watch(a, ch_time_now()); /* the first look: from here on */
    a->spool_state = -1;
    spool_watch(a); /* a disk that failed before the start, or one fixed since */
    for (;;) {
        int64_t until = next < next_tick ? next : next_tick;
        if (sdnotify_due() < until)
            until = sdnotify_due();
        int64_t wait = until - ch_mono_ms();
        if (wait < 0)
            wait = 0;
        struct timespec ts = {.tv_sec = wait / 1000, .tv_nsec = (wait % 1000) * 1000000};
        int sig = sigtimedwait(&set, NULL, &ts);
        if (sig == SIGINT || sig == SIGTERM) {
            LOGI("edge", NULL, "%s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
            sdnotify_stopping("stopping: sending what the spool holds, saving the alarms");
            break;
        }
        if (sig == SIGHUP) {
            sdnotify_reloading("reloading %s", a->config_path);
            if (reload(a))
                sdnotify_ready("reloaded %s: %zu devices", a->config_path,
                               poller_device_count(a->poller));
            else
                sdnotify_ready("reload of %s failed (see the log): the running configuration "
                               "stays",
                               a->config_path);
            continue;
        }
        int64_t now = ch_mono_ms();
        if (now >= next_tick) {
            /* time-driven rules (on-delays, stale data, windows) and alarms
             * (escalation, shelving expiry, flood end): timed on the
             * monotonic clock, labelled with the wall clock */
            struct ch_time t = ch_time_now();
            clock_watch(a, t);
            spool_watch(a);
            rules_tick(a->rules, t);
            alarms_tick(a->alarms, t);
            next_tick += 1000;
            if (next_tick <= now)
                next_tick = now + 1000;
        }
        if (now >= next) {
            self_metrics(a, now - last, &last_readings);
            last = now;
            next += c->self_metrics_interval_ms;
            if (next <= now)
                next = now + c->self_metrics_interval_ms;
        }
        if (ch_mono_ms() >= sdnotify_due())
            keep_alive(a);
    }

    poller_stop(a->poller);
    if (a->console) {
        console_stop(a->console);
        a->console = NULL;
    }
    uplink_stop(a->uplink, 5000);
    /* after the console and the hub's commands (an acknowledgement then still
     * cancels what was to be sent); what it has not sent stays in its
     * directory for the next start */
    pthread_rwlock_wrlock(&a->swap_lock);
    struct notifier *notifier = a->notifier;
    a->notifier = NULL;
    pthread_rwlock_unlock(&a->swap_lock);
    notify_close(notifier);
    struct uplink_stats us;
    uplink_get_stats(a->uplink, &us);
    for (size_t i = 0; i < poller_device_count(a->poller); i++) {
        struct poller_dev_stats ds;
        poller_device_stats(a->poller, i, &ds);
        LOGI("edge", ds.id, "%llu polls ok, %llu failed, %llu readings delivered",
             (unsigned long long)ds.polls_ok, (unsigned long long)ds.polls_failed,
             (unsigned long long)uplink_device_published(a->uplink, a->up_index[i]));
    }
    LOGI("edge", c->gateway, "stopped: %llu messages (%llu readings) delivered, last seq %llu",
         (unsigned long long)us.messages_published, (unsigned long long)us.readings_published,
         (unsigned long long)us.seq);
    if (stats_file && write_stats(a, stats_file) != 0)
        return EXIT_RUNTIME;
    return 0;
}

/* Reads one password line on stdin and prints its crypt(3) hash. */
static int hash_password(void)
{
    char line[1024];
    if (!fgets(line, sizeof line, stdin)) {
        fprintf(stderr, "care-edge: no password on stdin\n");
        return EXIT_CONFIG;
    }
    line[strcspn(line, "\r\n")] = '\0';
    if (strlen(line) < 8) {
        fprintf(stderr, "care-edge: a console password needs at least 8 characters\n");
        return EXIT_CONFIG;
    }
    char *h = console_hash_password(line);
    explicit_bzero(line, sizeof line);
    if (!h) {
        fprintf(stderr, "care-edge: cannot hash the password\n");
        return EXIT_RUNTIME;
    }
    printf("%s\n", h);
    free(h);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check", no_argument, NULL, 'k'},
        {"once", no_argument, NULL, 'o'},
        {"log-level", required_argument, NULL, 'l'},
        {"stats-file", required_argument, NULL, 's'},
        {"hash-password", no_argument, NULL, 'H'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *level = NULL, *stats_file = NULL;
    bool check = false, once = false;
    int ch;
    while ((ch = getopt_long(argc, argv, "c:Vh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config = optarg;
            break;
        case 'k':
            check = true;
            break;
        case 'o':
            once = true;
            break;
        case 'l':
            level = optarg;
            break;
        case 's':
            stats_file = optarg;
            break;
        case 'V':
            printf("care-edge %s\n", CAREHUB_VERSION);
            return 0;
        case 'H':
            return hash_password();
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EXIT_CONFIG;
        }
    }
    if (!config || optind != argc) {
        fprintf(stderr, "care-edge: %s\n", config ? "unexpected argument" : "-c FILE is required");
        usage(stderr);
        return EXIT_CONFIG;
    }

    struct app a = {0};
    a.live = &a.site;
    a.config_path = config;
    pthread_rwlock_init(&a.swap_lock, NULL);
    int rc = site_load(config, &a.site);
    if (rc != 0)
        return EXIT_CONFIG;
    enum log_level lv = (enum log_level)a.site.cfg.log_level;
    if (level && log_level_parse(level, &lv) != 0) {
        fprintf(stderr, "care-edge: unknown log level '%s' (error, warn, info, debug)\n", level);
        site_free(&a.site);
        return EXIT_CONFIG;
    }
    log_set_level(lv);
    if (poller_create(&a.site.cfg, emit, &a, &a.poller) != 0) {
        fprintf(stderr, "%s: configuration has errors\n", config);
        site_free(&a.site);
        return EXIT_CONFIG;
    }

    int status = 0;
    if (check) {
        printf("%s: OK (site %s, gateway %s, %zu devices on %zu buses, %zu profiles, %zu rules)\n",
               config, a.site.cfg.site, a.site.cfg.gateway, poller_device_count(a.poller),
               a.site.cfg.buses.n, a.site.cfg.n_profiles, a.site.cfg.n_all_rules);
    } else if (once) {
        status = poller_once(a.poller, stdout) ? EXIT_RUNTIME : 0;
    } else {
        status = run(&a, stats_file);
    }
    poller_stop(a.poller);
    poller_destroy(a.poller);
    if (a.local)
        local_destroy(a.local);
    rules_destroy(a.rules);
    alarms_close(a.alarms);
    if (a.uplink)
        uplink_destroy(a.uplink);
    spool_close(a.spool);
    free(a.dev_ids);
    free(a.up_index);
    free(a.cfg_index);
    if (a.live != &a.site) {
        site_free(a.live);
        free(a.live);
    }
    for (size_t i = 0; i < a.n_retired; i++) {
        site_free(a.retired[i]);
        free(a.retired[i]);
    }
    free(a.retired);
    site_free(&a.site);
    pthread_rwlock_destroy(&a.swap_lock);
    return status;
}
