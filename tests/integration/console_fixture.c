/* A console with a fake alarm module, for browser tests of the page.
 *
 *   console_fixture [PORT] [--tls CERT KEY] [--limit NAME=VALUE]...
 *
 * Serves the console on 127.0.0.1:PORT (0 or absent: a free port; HTTPS with
 * --tls; --limit sets a console.connections key: max, per_address, pending,
 * pending_per_address, header_timeout_ms, body_timeout_ms) with two
 * users, nurse1 / night-shift-2 (staff) and admin / s3cret-admin (admin),
 * and prints "PORT <n>" once listening. Then reads commands on stdin, one a
 * line, answering "OK <what>" or "ERR <why>" on stdout:
 *
 *   raise RULE DEVICE PRIORITY [ROOM [BED [RESIDENT [MESSAGE...]]]]
 *   clear ALARM_ID          condition gone: acked -> normal, unack -> rtn_unack
 *   flood N                 N low-priority alarms grouped under flood:gw-test
 *   quit                    (or end of input)
 *
 * Acknowledge, shelve and the rest from the page act on these alarms as the
 * real life cycle would, and every transition is published to the page. */
#include "authz.h"
#include "console.h"
#include "err.h"
#include "log.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ALARMS  256
#define MAX_HISTORY 2048

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct ch_alert alarms[MAX_ALARMS]; /* state normal = free slot */
static struct ch_alert history[MAX_HISTORY];
static size_t n_history;
static struct console *con;

static void record(const struct ch_alert *a)
{
    if (n_history == MAX_HISTORY) {
        memmove(history, history + 1, (MAX_HISTORY - 1) * sizeof *history);
        n_history--;
    }
    history[n_history++] = *a;
}

/* Publishes outside the lock: the console may call back into the ops. */
static void emit(struct ch_alert a)
{
    console_publish(con, &a);
}

static struct ch_alert *find(const char *id)
{
    for (size_t i = 0; i < MAX_ALARMS; i++)
        if (alarms[i].state != CH_AS_NORMAL && !strcmp(alarms[i].alarm_id, id))
            return &alarms[i];
    return NULL;
}

static size_t op_active(void *arg, struct ch_alert **out)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    *out = malloc(MAX_ALARMS * sizeof **out);
    size_t n = 0;
    for (size_t i = 0; i < MAX_ALARMS; i++)
        if (alarms[i].state != CH_AS_NORMAL)
            (*out)[n++] = alarms[i];
    pthread_mutex_unlock(&mu);
    return n;
}

static size_t op_history(void *arg, int64_t since_ms, struct ch_alert **out)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    *out = malloc((n_history + 1) * sizeof **out);
    size_t n = 0;
    for (size_t i = 0; i < n_history; i++)
        if (history[i].ts_ms >= since_ms)
            (*out)[n++] = history[i];
    pthread_mutex_unlock(&mu);
    return n;
}

static int op_command(void *arg, const struct ch_command *cmd)
{
    (void)arg;
    if (authz_check(cmd->action, cmd->role, NULL) != 0) /* as care-edge does */
        return CH_EDENIED;
    int64_t now = ch_now_ms();
    pthread_mutex_lock(&mu);
    struct ch_alert *a = find(cmd->alarm_id);
    if (!a) {
        pthread_mutex_unlock(&mu);
        return CH_ENOTFOUND;
    }
    int rc = 0;
    switch (cmd->action) {
    case CH_CMD_ACK:
        if (a->state == CH_AS_UNACK) {
            a->state = CH_AS_ACKED;
        } else if (a->state == CH_AS_RTN_UNACK) {
            a->state = CH_AS_NORMAL;
        } else {
            rc = CH_ESTATE;
            break;
        }
        a->event = CH_AE_ACK;
        a->acked_ms = now;
        break;
    case CH_CMD_SHELVE:
        if (a->state != CH_AS_UNACK && a->state != CH_AS_ACKED) {
            rc = CH_ESTATE;
            break;
        }
        a->state = CH_AS_SHELVED;
        a->event = CH_AE_SHELVE;
        a->shelved_until_ms = now + cmd->duration_ms;
        break;
    case CH_CMD_UNSHELVE:
        if (a->state != CH_AS_SHELVED) {
            rc = CH_ESTATE;
            break;
        }
        a->state = CH_AS_UNACK;
        a->event = CH_AE_UNSHELVE;
        a->shelved_until_ms = 0;
        a->acked_ms = 0;
        break;
    case CH_CMD_OUT_OF_SERVICE:
        a->state = CH_AS_OOS;
        a->event = CH_AE_OUT_OF_SERVICE;
        a->shelved_until_ms = 0;
        break;
    case CH_CMD_IN_SERVICE:
        if (a->state != CH_AS_OOS) {
            rc = CH_ESTATE;
            break;
        }
        a->state = CH_AS_UNACK;
        a->event = CH_AE_IN_SERVICE;
        a->acked_ms = 0;
        break;
    default:
        rc = CH_EINVAL;
    }
    struct ch_alert t = *a;
    if (!rc) {
        a->ts_ms = t.ts_ms = now;
        ch_strlcpy(a->by, cmd->by, sizeof a->by);
        ch_strlcpy(t.by, cmd->by, sizeof t.by);
        record(&t);
    }
    pthread_mutex_unlock(&mu);
    if (!rc)
        emit(t);
    return rc;
}

static char *op_status(void *arg)
{
    (void)arg;
    return ch_xstrdup("{\"uplink\":\"fixture\",\"devices_online\":0}");
}

static int parse_priority(const char *s)
{
    if (!s)
        return -1;
    if (!strcmp(s, "high"))
        return CH_PRIO_HIGH;
    if (!strcmp(s, "medium"))
        return CH_PRIO_MEDIUM;
    if (!strcmp(s, "low"))
        return CH_PRIO_LOW;
    return -1;
}

static void raise_alarm(const char *rule, const char *device, int prio, const char *room,
                        const char *bed, const char *resident, const char *message,
                        const char *group)
{
    int64_t now = ch_now_ms();
    pthread_mutex_lock(&mu);
    char id[CH_ALARM_ID_MAX];
    snprintf(id, sizeof id, "%s:%s", rule, device);
    struct ch_alert *a = find(id);
    if (!a) {
        for (size_t i = 0; i < MAX_ALARMS && !a; i++)
            if (alarms[i].state == CH_AS_NORMAL)
                a = &alarms[i];
    }
    if (!a) {
        pthread_mutex_unlock(&mu);
        printf("ERR too many alarms\n");
        return;
    }
    memset(a, 0, sizeof *a);
    ch_strlcpy(a->site, "site-test", sizeof a->site);
    ch_strlcpy(a->gateway, "gw-test", sizeof a->gateway);
    ch_strlcpy(a->alarm_id, id, sizeof a->alarm_id);
    ch_strlcpy(a->rule, rule, sizeof a->rule);
    ch_strlcpy(a->device, device, sizeof a->device);
    ch_strlcpy(a->room, room ? room : "", sizeof a->room);
    ch_strlcpy(a->bed, bed ? bed : "", sizeof a->bed);
    ch_strlcpy(a->resident, resident ? resident : "", sizeof a->resident);
    ch_strlcpy(a->message, message ? message : "", sizeof a->message);
    ch_strlcpy(a->group, group ? group : "", sizeof a->group);
    a->priority = prio;
    a->state = CH_AS_UNACK;
    a->event = CH_AE_RAISE;
    a->latched = !strcmp(rule, "sos");
    ch_strlcpy(a->metric, "co2", sizeof a->metric);
    a->has_value = true;
    a->value = 1250;
    a->ts_ms = a->raised_ms = now;
    struct ch_alert t = *a;
    record(&t);
    pthread_mutex_unlock(&mu);
    emit(t);
    printf("OK %s\n", id);
}

static void clear_alarm(const char *id)
{
    int64_t now = ch_now_ms();
    pthread_mutex_lock(&mu);
    struct ch_alert *a = id ? find(id) : NULL;
    if (!a) {
        pthread_mutex_unlock(&mu);
        printf("ERR no such alarm\n");
        return;
    }
    a->cleared_ms = now;
    a->ts_ms = now;
    if (a->state == CH_AS_UNACK) {
        a->state = CH_AS_RTN_UNACK;
        a->event = CH_AE_RTN;
    } else {
        a->state = CH_AS_NORMAL;
        a->event = CH_AE_CLEAR;
        a->shelved_until_ms = 0;
    }
    struct ch_alert t = *a;
    record(&t);
    pthread_mutex_unlock(&mu);
    emit(t);
    printf("OK %s\n", t.alarm_id);
}

/* --tls and --limit into the console's configuration; false on a bad one */
static bool options(int argc, char **argv, struct console_cfg *cc)
{
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--tls") && i + 2 < argc) {
            cc->tls.cert_file = argv[++i];
            cc->tls.key_file = argv[++i];
            continue;
        }
        if (strcmp(argv[i], "--limit") || i + 1 >= argc)
            return false;
        char name[32];
        long long v;
        if (sscanf(argv[++i], "%31[a-z_]=%lld", name, &v) != 2)
            return false;
        struct cfg_http_limits *l = &cc->connections;
        int64_t *f = !strcmp(name, "max")                   ? &l->max
                     : !strcmp(name, "per_address")         ? &l->per_address
                     : !strcmp(name, "pending")             ? &l->pending
                     : !strcmp(name, "pending_per_address") ? &l->pending_per_address
                     : !strcmp(name, "header_timeout_ms")   ? &l->header_timeout_ms
                     : !strcmp(name, "body_timeout_ms")     ? &l->body_timeout_ms
                                                            : NULL;
        if (!f)
            return false;
        *f = v;
    }
    return true;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct console_user users[2] = {
        {.name = "nurse1",
         .password_hash = console_hash_password("night-shift-2"),
         .role = ROLE_STAFF},
        {.name = "admin",
         .password_hash = console_hash_password("s3cret-admin"),
         .role = ROLE_ADMIN},
    };
    if (!users[0].password_hash || !users[1].password_hash)
        return 1;
    struct site_config site = {
        .site = "site-test",
        .gateway = "gw-test",
        .alarms = {.history_ms = 24 * 3600000LL},
        .console = {.enabled = true,
                    .bind = "127.0.0.1",
                    .port = argc > 1 ? atoi(argv[1]) : 0,
                    .users = {.items = users, .n = 2},
                    .session_ms = 3600000,
                    .max_clients = 16},
    };
    if (!options(argc, argv, &site.console)) {
        fprintf(stderr, "usage: console_fixture [PORT] [--tls CERT KEY] [--limit NAME=VALUE]...\n");
        return 2;
    }
    const struct console_ops ops = {.active = op_active,
                                    .history = op_history,
                                    .command = op_command,
                                    .status_json = op_status};
    if (console_start(&site, &ops, &con))
        return 1;
    printf("PORT %u\n", console_port(con));

    char line[1024];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *save = NULL;
        char *verb = strtok_r(line, " ", &save);
        if (!verb)
            continue;
        if (!strcmp(verb, "quit"))
            break;
        if (!strcmp(verb, "raise")) {
            char *rule = strtok_r(NULL, " ", &save);
            char *dev = strtok_r(NULL, " ", &save);
            int prio = parse_priority(strtok_r(NULL, " ", &save));
            char *room = strtok_r(NULL, " ", &save);
            char *bed = strtok_r(NULL, " ", &save);
            char *resident = strtok_r(NULL, " ", &save);
            char *msg = strtok_r(NULL, "", &save);
            if (!rule || !dev || prio < 0 || !ch_valid_id(rule) || !ch_valid_id(dev))
                printf(
                    "ERR usage: raise RULE DEVICE high|medium|low [ROOM [BED [RESIDENT [MSG]]]]\n");
            else
                raise_alarm(rule, dev, prio, room, bed, resident, msg, NULL);
        } else if (!strcmp(verb, "clear")) {
            clear_alarm(strtok_r(NULL, " ", &save));
        } else if (!strcmp(verb, "flood")) {
            const char *n = strtok_r(NULL, " ", &save);
            int count = n ? atoi(n) : 0;
            for (int i = 0; i < count && i < 100; i++) {
                char dev[32], room[16];
                snprintf(dev, sizeof dev, "env-%03d", i);
                snprintf(room, sizeof room, "%d", 200 + i);
                raise_alarm("temp-low", dev, CH_PRIO_LOW, room, NULL, NULL,
                            "Room temperature below 16 C", "flood:gw-test");
            }
        } else {
            printf("ERR unknown command '%s'\n", verb);
        }
    }
    console_stop(con);
    free(users[0].password_hash);
    free(users[1].password_hash);
    return 0;
}
