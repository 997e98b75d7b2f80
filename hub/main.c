/* care-hub: subscribes to every site's gateways, validates what they send,
 * writes it to InfluxDB, tracks which gateways are online, and reports its
 * own counters as carehub_hub points.
 *
 * Threads: Paho's one thread for both MQTT clients (ingest and view: it only
 * handles statuses, copies alerts into the alert queue, and admits telemetry
 * against its gateway's quota into that gateway's queue, ingestq.h), the
 * alert worker (alerts -> the spool's alert lane, fsync'ed), the ingest
 * workers (queued telemetry -> ingest -> spool, one gateway's message at a
 * time in turn), the InfluxDB writers (spool -> InfluxDB, one per lane:
 * alarms never wait behind telemetry), the spool's commit thread, and this
 * one, which waits for SIGTERM/SIGINT (blocked everywhere, taken with
 * sigtimedwait), retries a failed first MQTT connection, sends the storage
 * acknowledgements, writes the self-metrics and tells systemd it is alive
 * (keep_alive).
 *
 * Shutdown: stop consuming (MQTT DISCONNECT: a persistent session keeps the
 * rest at the broker), hand what is queued to the spool (its gateways hear
 * of it from the next hub: this one sends no more acks), spool a last
 * self-metrics point, let the writers flush
 * for up to influx.shutdown_timeout (what is left stays in the spool for the
 * next start), close the spool, then log the final counters.
 *
 * Exit status: 0 after a clean stop, 1 on a runtime failure, 2 for a bad
 * command line or configuration. */
#include "acks.h"
#include "api.h"
#include "codec.h"
#include "hubcfg.h"
#include "err.h"
#include "httpd.h"
#include "hub_notify.h"
#include "influx.h"
#include "ingest.h"
#include "ingestq.h"
#include "lineproto.h"
#include "log.h"
#include "presence.h"
#include "registry.h"
#include "retention.h"
#include "sdnotify.h"
#include "spool.h"
#include "subscriber.h"
#include "tokens.h"
#include "users.h"
#include "util.h"

#include <curl/curl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXIT_RUNTIME          1
#define EXIT_CONFIG           2
#define MQTT_CLOSE_TIMEOUT_MS 5000
#define TICK_MS               1000

struct hub {
    struct hubcfg cfg;
    struct presence *presence; /* what this process ingests (NULL when shared) */
    struct presence *view;     /* every gateway, from the view subscription */
    struct spool *spool;
    struct influx *influx;
    struct ingest *ingest;
    struct ingestq *queue;     /* telemetry waiting for the workers */
    struct registry *registry; /* gateways, inventories, quotas */
    struct sub *sub;
    struct sub *view_sub;
    struct api *api;
    struct retention *retention; /* the hourly history's keeper (NULL: none) */
    struct acks *acks;           /* storage acknowledgements to send */
    struct hub_notify *notify;   /* the hub's notifier (NULL: none) */
    char presence_file[4096];    /* the numbers received, kept across restarts */
    uint64_t acks_sent, acks_unsent;
};

/* ---- self-metrics --------------------------------------------------------- */

struct counter {
    const char *name;
    uint64_t value;
};

#define MAX_COUNTERS (48 + INGEST_N_REASONS)

static char rejected_names[INGEST_N_REASONS][48];

/* Every counter (the carehub_hub fields): ingest's, presence's and the
 * spool's now, the writer's from ws. Returns how many. */
static size_t snapshot(struct hub *h, const struct influx_stats *w,
                       struct counter out[MAX_COUNTERS])
{
    struct ingest_stats is;
    ingest_stats(h->ingest, &is);
    const struct influx_stats ws = *w;
    struct spool_stats sp;
    spool_stats(h->spool, &sp);
    /* both lanes together: telemetry, and the alarm transitions ahead of it */
    struct spool_lane_stats lanes = sp.lane[SPOOL_TELEMETRY];
    const struct spool_lane_stats *al = &sp.lane[SPOOL_ALERT];
    lanes.corrupt_records += al->corrupt_records;
    lanes.dropped_records += al->dropped_records;
    lanes.write_errors += al->write_errors;
    lanes.pending_records += al->pending_records;
    lanes.pending_bytes += al->pending_bytes;
    const struct spool_lane_stats *sl = &lanes;
    struct registry_stats rs;
    registry_stats(h->registry, &rs);
    struct ingestq_stats qs = {0};
    if (h->queue)
        ingestq_stats(h->queue, &qs);
    struct ch_httpd_stats hs;
    api_http_stats(h->api, &hs);
    struct presence_seq_stats ss = {0};
    if (h->presence)
        presence_check_gaps(h->presence, ch_now_ms(), h->cfg.gap_grace_ms, &ss);
    size_t n = 0;
    out[n++] = (struct counter){"acks_sent", h->acks_sent};
    out[n++] = (struct counter){"acks_unsent", h->acks_unsent};
    out[n++] = (struct counter){"alerts_duplicate", is.alerts_duplicate};
    out[n++] = (struct counter){"alerts_missing", ss.alerts_missing};
    out[n++] = (struct counter){"alerts_ok", is.alerts_ok};
    out[n++] = (struct counter){"alerts_pending", ss.alerts_pending};
    out[n++] = (struct counter){"dead_letter_batches", ws.dead_letter_batches};
    out[n++] = (struct counter){"dead_letter_lines", ws.dead_letter_lines};
    out[n++] = (struct counter){"dropped", ws.dropped};
    out[n++] =
        (struct counter){"gateways_online", presence_online(h->presence ? h->presence : h->view)};
    out[n++] = (struct counter){"gateways_shedding", rs.gateways_shedding};
    /* the API's connection guard (httpd.h): slow or greedy clients */
    out[n++] = (struct counter){"http_connections", hs.connections};
    out[n++] = (struct counter){"http_refused_address", hs.refused_address};
    out[n++] = (struct counter){"http_refused_slow", hs.refused_slow};
    out[n++] = (struct counter){"http_evicted", hs.evicted};
    out[n++] = (struct counter){"http_header_timeouts", hs.header_timeouts};
    out[n++] = (struct counter){"http_body_timeouts", hs.body_timeouts};
    out[n++] = (struct counter){"messages_ignored", is.ignored};
    out[n++] = (struct counter){"messages_received", is.messages_received};
    out[n++] = (struct counter){"messages_shed", rs.messages_shed};
    out[n++] = (struct counter){"messages_unregistered", rs.messages_unregistered};
    out[n++] = (struct counter){"points_written", ws.points_written};
    out[n++] = (struct counter){"queue_bytes", qs.bytes};
    out[n++] = (struct counter){"queue_peak_bytes", qs.peak_bytes};
    out[n++] = (struct counter){"queue_shed", qs.shed_full};
    out[n++] = (struct counter){"readings", is.readings};
    out[n++] = (struct counter){"readings_deferred", rs.readings_deferred};
    out[n++] = (struct counter){"readings_duplicate", ss.readings_duplicate};
    out[n++] = (struct counter){"readings_missing", ss.readings_missing};
    out[n++] = (struct counter){"readings_pending", ss.readings_pending};
    out[n++] = (struct counter){"readings_refused", rs.readings_refused};
    out[n++] = (struct counter){"seq_gaps", ss.gaps_reported};
    out[n++] = (struct counter){"spool_corrupt", sl->corrupt_records};
    out[n++] = (struct counter){"spool_disk_bytes", sp.disk_bytes};
    out[n++] = (struct counter){"spool_dropped", sl->dropped_records};
    out[n++] = (struct counter){"spool_errors", sl->write_errors};
    out[n++] = (struct counter){"spool_pending", sl->pending_records};
    out[n++] = (struct counter){"spool_pending_bytes", sl->pending_bytes};
    for (int r = 0; r < INGEST_N_REASONS; r++)
        out[n++] = (struct counter){rejected_names[r], is.rejected[r]};
    out[n++] = (struct counter){"status_ok", is.status_ok};
    out[n++] = (struct counter){"telemetry_ok", is.telemetry_ok};
    out[n++] = (struct counter){"write_errors", ws.write_errors};
    out[n++] = (struct counter){"write_rejected", ws.write_rejected};
    out[n++] = (struct counter){"write_retries", ws.write_retries};
    return n;
}

/* Spools one carehub_hub point with every counter as an integer field, and
 * the carehub_ingest points of the gateways whose counts changed. */
static void write_self_metrics(struct hub *h)
{
    struct influx_stats ws;
    influx_stats(h->influx, &ws);
    struct counter c[MAX_COUNTERS];
    size_t n = snapshot(h, &ws, c);
    struct lp_buf b;
    lp_init(&b);
    lp_begin(&b, "carehub_hub");
    lp_tag(&b, "hub", h->cfg.mqtt.client_id);
    for (size_t i = 0; i < n; i++)
        lp_field_int(&b, c[i].name, c[i].value > INT64_MAX ? INT64_MAX : (int64_t)c[i].value);
    int64_t now = ch_now_ms();
    lp_end(&b, now);
    registry_report(h->registry, &b, h->cfg.mqtt.client_id, now);
    size_t len, lines;
    char *data = lp_take(&b, &len, &lines);
    /* operational figures: kept as long as the readings */
    influx_enqueue_once(h->influx, INFLUX_RP_READINGS, data, len, lines);
}

static void log_final_counters(struct hub *h, const struct influx_stats *ws)
{
    struct counter c[MAX_COUNTERS];
    size_t n = snapshot(h, ws, c);
    char line[2500];
    size_t off = 0;
    for (size_t i = 0; i < n && off < sizeof line; i++)
        off +=
            (size_t)snprintf(line + off, sizeof line - off, " %s=%" PRIu64, c[i].name, c[i].value);
    LOGI("hub", h->cfg.mqtt.client_id, "final counters:%s", line);
}

/* ---- running ---------------------------------------------------------------- */

/* Ingest's sink: returns once the points are in the spool. */
static int to_influx(void *ctx, char *data, size_t len, size_t lines, enum ingest_points kind)
{
    if (kind == INGEST_ALERTS)
        return influx_enqueue_alert(ctx, data, len, lines);
    return influx_enqueue(ctx, kind == INGEST_READINGS ? INFLUX_RP_READINGS : INFLUX_RP_DEFAULT,
                          data, len, lines);
}

/* Delivered means stored (acks.h): what ingest noted since the last round is
 * made durable in the spool, then each gateway hears which of its numbers
 * are. An ack that cannot be published (broker away) is noted again for the
 * next round: nothing is acknowledged twice or lost, at worst later. */
static void send_acks(struct hub *h)
{
    if (!acks_pending(h->acks))
        return;
    struct ch_ack *v;
    size_t n = acks_take(h->acks, h->cfg.mqtt.client_id, ch_now_ms(), &v);
    int rc = n ? spool_sync(h->spool) : 0;
    if (rc != 0)
        LOGW("hub", h->cfg.mqtt.client_id, "cannot make the spool durable (%s): acks wait",
             ch_strerror(rc));
    /* what the gateways will free must be known received after a restart */
    if (rc == 0 && n && h->presence)
        rc = presence_save(h->presence, h->presence_file);
    for (size_t i = 0; i < n; i++) {
        char topic[256];
        char *msg = rc == 0 ? ch_ack_encode(&v[i]) : NULL;
        bool sent = msg && ch_ack_topic(topic, sizeof topic, v[i].site, v[i].gateway) &&
                    sub_publish(h->sub, topic, msg) == 0;
        free(msg);
        if (sent) {
            h->acks_sent++;
            continue;
        }
        h->acks_unsent++;
        for (size_t k = 0; k < v[i].n_readings; k++)
            acks_note(h->acks, v[i].site, v[i].gateway, ACKS_READINGS, v[i].readings[k].lo,
                      v[i].readings[k].hi);
        for (size_t k = 0; k < v[i].n_alerts; k++)
            acks_note(h->acks, v[i].site, v[i].gateway, ACKS_ALERTS, v[i].alerts[k].lo,
                      v[i].alerts[k].hi);
    }
    free(v);
}

/* The ingest subscription: into the queue. */
static void on_ingest(void *ctx, const char *topic, const void *payload, size_t len, bool retained)
{
    struct hub *h = ctx;
    ingestq_push(h->queue, topic, payload, len, retained, ch_now_ms());
}

/* The view subscription: statuses into the view and the registry,
 * transitions to the API's live streams and, through the alert queue, to the
 * spool's alert lane and the gateway's ack: the priority path, on its own
 * broker queue, so an alarm never waits behind another site's telemetry
 * (the ingest subscription's copy, which may, is then recognised and not
 * stored again). Anything malformed is ingest's to count; here it is
 * skipped. */
static void on_view(void *ctx, const char *topic, const void *payload, size_t len, bool retained)
{
    struct hub *h = ctx;
    char site[CH_ID_MAX], gw[CH_ID_MAX];
    const char *kind;
    if (!ch_topic_parse(topic, site, gw, &kind) || len > INGEST_MAX_PAYLOAD)
        return;
    char err[256];
    if (!strcmp(kind, "status")) {
        struct ch_status s;
        if (ch_status_decode(payload, len, &s, err, sizeof err))
            return;
        if (!strcmp(s.site, site) && !strcmp(s.gateway, gw)) {
            registry_status(h->registry, &s);
            presence_status(h->view, &s, ch_now_ms());
            api_site_changed(h->api, site);
        }
        ch_status_free(&s);
    } else if (!strcmp(kind, "alert")) {
        struct ch_alert a;
        if (ch_alert_decode(payload, len, &a, err, sizeof err) == 0 && !strcmp(a.site, site) &&
            !strcmp(a.gateway, gw))
            api_alert(h->api, &a);
        ingestq_push(h->queue, topic, payload, len, retained, ch_now_ms());
    }
}

/* The main loop's keep-alive to systemd, with its status line (sdnotify.h).
 *
 * What WATCHDOG=1 vouches for: it is sent from this loop only, after its
 * work of the round (acks made durable, the subscriber ticked), and after
 * taking once each the locks that the other threads share with this loop:
 * the presence's, the ingest queue's (the MQTT thread and the ingest
 * workers) and the spool's (the writers). A loop that hangs, or a thread
 * that deadlocks or dies holding one of those locks, stops the keep-alives,
 * and systemd restarts care-hub after WatchdogSec.
 *
 * What it does not wait for: the InfluxDB writers' progress. They have no
 * heartbeat, and a writer waits legitimately for as long as InfluxDB is
 * down (retries with back-off); that shows in the status line, the
 * self-metrics and the log (write_errors, spool_pending), and a restart
 * would not bring InfluxDB back. Nor the broker: subscribers reconnect by
 * themselves. */
static void keep_alive(struct hub *h)
{
    size_t online = presence_online(h->presence ? h->presence : h->view);
    struct ingestq_stats qs = {0};
    if (h->queue)
        ingestq_stats(h->queue, &qs);
    struct spool_stats sp;
    spool_stats(h->spool, &sp);
    struct influx_stats ws;
    influx_stats(h->influx, &ws);
    uint64_t pending =
        sp.lane[SPOOL_TELEMETRY].pending_records + sp.lane[SPOOL_ALERT].pending_records;
    sdnotify_alive("%zu gateways online, %" PRIu64 " points written, %" PRIu64
                   " records to write, %" PRIu64 " write errors",
                   online, ws.points_written, pending, ws.write_errors);
}

/* Waits for a stop signal, ticking the subscriber and writing self-metrics;
 * SIGHUP reads the API's tokens and users again. Returns 0 on a stop signal,
 * EXIT_RUNTIME on a fatal MQTT error. */
static int run(struct hub *h, const sigset_t *stop)
{
    int64_t next_metrics = ch_mono_ms() + h->cfg.self_metrics_interval_ms;
    int64_t next_acks = ch_mono_ms() + h->cfg.ack_interval_ms;
    for (;;) {
        int64_t now = ch_mono_ms();
        int64_t wait = next_metrics - now < TICK_MS ? next_metrics - now : TICK_MS;
        if (next_acks - now < wait)
            wait = next_acks - now;
        if (sdnotify_due() - now < wait)
            wait = sdnotify_due() - now;
        if (wait < 0)
            wait = 0;
        struct timespec ts = {.tv_sec = (time_t)(wait / 1000),
                              .tv_nsec = (long)(wait % 1000) * 1000000L};
        int sig = sigtimedwait(stop, NULL, &ts);
        if (sig == SIGHUP) {
            sdnotify_reloading("reloading the tokens, users and the gateway registry");
            if (h->api) {
                api_reload_tokens(h->api);
                api_reload_users(h->api);
            }
            if (h->cfg.ingest.registry)
                registry_load_file(h->registry, h->cfg.ingest.registry);
            sdnotify_ready("reloaded the tokens, users and the gateway registry");
            continue;
        }
        if (sig > 0) {
            LOGI("hub", h->cfg.mqtt.client_id, "%s: stopping", strsignal(sig));
            sdnotify_stopping("stopping: queued messages to the spool, writing to InfluxDB");
            return 0;
        }
        if (ch_mono_ms() >= next_acks) {
            send_acks(h);
            next_acks = ch_mono_ms() + h->cfg.ack_interval_ms;
        }
        if (sub_tick(h->sub) != 0 || (h->view_sub && sub_tick(h->view_sub) != 0)) {
            LOGE("hub", h->cfg.mqtt.client_id, "cannot subscribe: stopping");
            return EXIT_RUNTIME;
        }
        if (ch_mono_ms() >= next_metrics) {
            write_self_metrics(h);
            next_metrics += h->cfg.self_metrics_interval_ms;
            if (next_metrics < ch_mono_ms())
                next_metrics = ch_mono_ms() + h->cfg.self_metrics_interval_ms;
        }
        if (ch_mono_ms() >= sdnotify_due())
            keep_alive(h);
    }
}

static int serve(struct hub *h)
{
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGHUP);
    /* before any thread starts, so that every thread inherits the mask */
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);
    sdnotify_init();

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        LOGE("hub", NULL, "libcurl cannot start");
        return EXIT_RUNTIME;
    }
    for (int r = 0; r < INGEST_N_REASONS; r++)
        snprintf(rejected_names[r], sizeof rejected_names[r], "rejected_%s",
                 ingest_reason_name((enum ingest_reason)r));

    int status = EXIT_RUNTIME;
    /* In a shared subscription this process sees only part of each
     * gateway's reading numbers: gap tracking would report the rest as lost.
     * Completeness then comes from what is stored (the API's summary). */
    if (!h->cfg.mqtt.shared_group) {
        h->presence = presence_new();
        snprintf(h->presence_file, sizeof h->presence_file, "%s/presence.json", h->cfg.spool.dir);
        presence_load(h->presence, h->presence_file);
    }
    h->view = presence_new();
    presence_statuses_only(h->view);
    const struct hubcfg_spool *sc = &h->cfg.spool;
    /* the cursor is written as often as the data is synced: on a server two
     * fsyncs a second cost nothing, and a crash then resends at most that
     * window of acknowledged batches (care-edge spares its SD card instead) */
    struct spool_opts so = {.max_bytes = (uint64_t)sc->max_bytes,
                            .commit_interval_ms = sc->commit_interval_ms,
                            .cursor_interval_ms = sc->commit_interval_ms,
                            .name = "hub"};
    int rc = spool_open(sc->dir, &so, &h->spool);
    if (rc != 0)
        LOGE("hub", h->cfg.mqtt.client_id, "cannot open the spool in %s: %s", sc->dir,
             ch_strerror(rc));
    if (rc == CH_EFORMAT) /* a later release's spool: restarting will not change it */
        status = EXIT_CONFIG;
    if (rc == 0 && !(h->registry = registry_new(&h->cfg.ingest))) {
        rc = CH_ECONFIG;
        status = EXIT_CONFIG;
    }
    if (rc == 0 && influx_open(&h->cfg.influx, h->spool, &h->influx) == 0) {
        h->ingest = ingest_new(h->presence, to_influx, h->influx);
        h->acks = acks_new();
        ingest_set_acks(h->ingest, h->acks);
        ingest_set_registry(h->ingest, h->registry);
        ingest_set_rollup_after(h->ingest, h->cfg.rollup_after_ms);
        if ((h->notify = hub_notify_open(&h->cfg, h->ingest)) != NULL)
            ingest_set_alert_hook(h->ingest, hub_notify_alert, h->notify);
        h->queue = ingestq_new(h->ingest, h->registry, &h->cfg.ingest);
        /* the view: the priority path of alarm transitions, every gateway's
         * birth for the registry, the API's live state, and gateways_online
         * when this process sees only its share of the statuses */
        bool api_on = h->cfg.api.tokens_file != NULL;
        bool view_ok = h->queue && sub_open_view(&h->cfg.mqtt, on_view, h, &h->view_sub) == 0;
        if (view_ok && api_on &&
            api_start(&h->cfg, h->view, h->influx, h->view_sub, &h->api) != 0) {
            sub_close(h->view_sub, MQTT_CLOSE_TIMEOUT_MS);
            h->view_sub = NULL;
            view_ok = false;
        }
        if (view_ok) {
            h->retention = retention_start(&h->cfg, h->influx, h->api);
            api_set_retention(h->api, h->retention);
        }
        if (view_ok && sub_open(&h->cfg.mqtt, on_ingest, h, &h->sub) == 0) {
            LOGI("hub", h->cfg.mqtt.client_id, "care-hub %s running", CAREHUB_VERSION);
            /* serving: the spool open, the writers and ingest started, the
             * API listening; the broker and InfluxDB are reached (and
             * retried) by their clients, not conditions of readiness */
            sdnotify_ready("running: API %s, broker %s, InfluxDB %s", h->api ? "listening" : "off",
                           h->cfg.mqtt.broker, h->cfg.influx.url);
            status = run(h, &stop);
            influx_begin_stop(h->influx);
            send_acks(h); /* what is stored by now, before the client goes */
            sub_close(h->sub, MQTT_CLOSE_TIMEOUT_MS);
        }
        /* the API's requests and streams end before the view client that
           carries its commands and feeds its streams goes; the view client
           before the API is freed (its callbacks call api_alert) */
        /* the keeper uses the API (day figures) and the writer */
        retention_stop(h->retention);
        h->retention = NULL;
        api_quiesce(h->api);
        if (h->view_sub)
            sub_close(h->view_sub, MQTT_CLOSE_TIMEOUT_MS);
        api_stop(h->api);
        h->api = NULL;
        /* what the broker handed over and waits in the queues: to the spool
         * (not acknowledged: the gateways send it again, a duplicate) */
        ingestq_close(h->queue);
        h->queue = NULL;
        /* nothing more to tell; what it has not sent stays in its directory */
        ingest_set_alert_hook(h->ingest, NULL, NULL);
        hub_notify_close(h->notify);
        h->notify = NULL;
        if (h->presence)
            presence_save(h->presence, h->presence_file);
        write_self_metrics(h);
        struct influx_stats final;
        influx_close(h->influx, &final);
        log_final_counters(h, &final);
    }
    spool_close(h->spool);
    if (h->ingest)
        ingest_free(h->ingest);
    registry_free(h->registry);
    acks_free(h->acks);
    presence_free(h->presence);
    presence_free(h->view);
    curl_global_cleanup();
    return status;
}

/* ---- command line ------------------------------------------------------------ */

static void usage(FILE *to)
{
    fprintf(to, "usage: care-hub -c FILE [--check]\n"
                "       care-hub --new-token NAME\n"
                "       care-hub users -c FILE add|passwd|disable|enable|del|list ...\n"
                "       care-hub --version | --help\n"
                "\n"
                "  -c, --config FILE  hub configuration (YAML; see deploy/hub/hub.yaml)\n"
                "      --check        check the configuration and exit\n"
                "      --new-token NAME  print a new API token and its tokens-file entry\n"
                "  -V, --version      print the version and exit\n"
                "  -h, --help         print this help and exit\n"
                "\n"
                "Exit status: 0 stopped cleanly, 1 runtime failure, 2 bad command line or "
                "configuration.\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check", no_argument, NULL, 'k'},
        {"new-token", required_argument, NULL, 't'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    if (argc > 1 && !strcmp(argv[1], "users"))
        return users_cli(argc - 1, argv + 1);
    const char *path = NULL;
    bool check = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "c:Vh", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 'k':
            check = true;
            break;
        case 't': {
            if (!ch_valid_id(optarg)) {
                fprintf(stderr, "care-hub: --new-token: '%s' is not a name ([A-Za-z0-9_.-])\n",
                        optarg);
                return EXIT_CONFIG;
            }
            char tok[48], hash[65];
            tokens_generate(tok, hash);
            printf("token (give it to %s; it is not stored anywhere):\n  %s\n\n"
                   "tokens file entry (set role and scope):\n"
                   "  - name: %s\n    sha256: %s\n    role: staff\n    sites: [your-site-id]\n",
                   optarg, tok, optarg, hash);
            explicit_bzero(tok, sizeof tok);
            return 0;
        }
        case 'V':
            printf("care-hub %s\n", CAREHUB_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EXIT_CONFIG;
        }
    }
    if (!path || optind != argc) {
        usage(stderr);
        return EXIT_CONFIG;
    }

    struct hub h = {0};
    if (hubcfg_load(path, &h.cfg) != 0)
        return EXIT_CONFIG;
    if (check && h.cfg.ingest.registry) {
        struct registry *r = registry_new(&h.cfg.ingest);
        if (!r) {
            hubcfg_free(&h.cfg);
            return EXIT_CONFIG;
        }
        registry_free(r);
    }
    if (check && h.cfg.api.tokens_file) {
        struct tokens *t;
        if (tokens_load(h.cfg.api.tokens_file, h.cfg.api.rate_limit, &t) != 0) {
            hubcfg_free(&h.cfg);
            return EXIT_CONFIG;
        }
        tokens_free(t);
    }
    if (check && h.cfg.api.tokens_file && h.cfg.api.users_file) {
        struct users *u;
        if (users_load(h.cfg.api.users_file, h.cfg.api.rate_limit, true, &u) != 0) {
            hubcfg_free(&h.cfg);
            return EXIT_CONFIG;
        }
        users_free(u);
    }
    if (check) {
        printf("%s: configuration OK\n", path);
        hubcfg_free(&h.cfg);
        return 0;
    }
    log_set_level((enum log_level)h.cfg.log_level);
    int status = serve(&h);
    hubcfg_free(&h.cfg);
    return status;
}
