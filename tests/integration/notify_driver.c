/* A stand-in for care-edge's alarm module around the notifier, for
 * notify_delivery.py: opens the notifier with the notify: section of a YAML
 * file and reads commands on stdin, one a line:
 *   event {"alarm_id": "...", "event": "raise", "priority": 2, "level": 0, ...}
 *   stats                   prints "stats {...}"
 *   quit                    closes the notifier (pending stays in state_dir)
 * Every result callback is printed as "result {...}" (one JSON line).
 *
 *   notify_driver CONFIG.yaml STATE_DIR|- [TZ] */
#include "cfg.h"
#include "notify.h"

#include <jansson.h>
#include <libfyaml.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;

static void print_line(const char *tag, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    pthread_mutex_lock(&out_mu);
    printf("%s %s\n", tag, s);
    fflush(stdout);
    pthread_mutex_unlock(&out_mu);
    free(s);
    json_decref(j);
}

static void on_result(void *arg, const struct notify_result *r)
{
    (void)arg;
    print_line("result",
               json_pack("{s:s,s:I,s:i,s:i,s:s,s:s,s:s,s:s,s:b,s:b,s:i,s:s,s:I}", "alarm_id",
                         r->alarm_id, "raised_ms", (json_int_t)r->raised_ms, "level", r->level,
                         "event", r->event, "channel", r->channel, "recipient", r->recipient, "to",
                         r->to, "type", r->type, "ok", r->ok, "final", r->final, "attempts",
                         r->attempts, "detail", r->detail, "ts_ms", (json_int_t)r->ts_ms));
}

static const char *str(json_t *j, const char *k)
{
    return json_string_value(json_object_get(j, k));
}

static int event_kind(const char *s)
{
    static const char *const names[] = {"raise", "escalate", "ack", "clear"};
    for (int i = 0; i < 4; i++)
        if (s && strcmp(s, names[i]) == 0)
            return i;
    return NOTIFY_RAISE;
}

static void feed(struct notifier *n, const char *text)
{
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);
    if (!j) {
        fprintf(stderr, "bad event: %s\n", err.text);
        return;
    }
    struct notify_event ev = {
        .site = str(j, "site"),
        .site_name = str(j, "site_name"),
        .gateway = str(j, "gateway"),
        .alarm_id = str(j, "alarm_id"),
        .rule = str(j, "rule"),
        .kind = str(j, "kind"),
        .title = str(j, "title"),
        .where = str(j, "where"),
        .who = str(j, "who"),
        .device = str(j, "device"),
        .message = str(j, "message"),
        .by = str(j, "by"),
        .priority = (int)json_integer_value(json_object_get(j, "priority")),
        .level = (int)json_integer_value(json_object_get(j, "level")),
        .event = event_kind(str(j, "event")),
        .raised_ms = json_integer_value(json_object_get(j, "raised_ms")),
        .ts_ms = json_integer_value(json_object_get(j, "ts_ms")),
    };
    notify_event(n, &ev);
    json_decref(j);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s CONFIG.yaml STATE_DIR|- [TZ]\n", argv[0]);
        return 2;
    }
    struct fy_document *doc = fy_document_build_from_file(NULL, argv[1]);
    struct fy_node *root = doc ? fy_document_root(doc) : NULL;
    struct fy_node *node = root ? fy_node_mapping_lookup_by_string(root, "notify", FY_NT) : NULL;
    struct notify_cfg *cfg = NULL;
    if (!node || notify_cfg_parse(node, &cfg) != 0) {
        fprintf(stderr, "%s: no valid notify: section\n", argv[1]);
        return 1;
    }
    fy_document_destroy(doc); /* the configuration keeps copies */
    struct notifier *n = NULL;
    const char *state = strcmp(argv[2], "-") == 0 ? NULL : argv[2];
    if (notify_open(cfg, state, argc > 3 ? argv[3] : NULL, on_result, NULL, &n) != 0)
        return 1;
    print_line("ready", json_object());
    char line[8192];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "event ", 6) == 0) {
            feed(n, line + 6);
        } else if (strcmp(line, "stats") == 0) {
            struct notify_stats s;
            notify_get_stats(n, &s);
            print_line("stats", json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "queued",
                                          (json_int_t)s.queued, "sent", (json_int_t)s.sent,
                                          "failed_tries", (json_int_t)s.failed_tries, "given_up",
                                          (json_int_t)s.given_up, "deduped", (json_int_t)s.deduped,
                                          "rate_limited", (json_int_t)s.rate_limited, "cancelled",
                                          (json_int_t)s.cancelled, "dropped", (json_int_t)s.dropped,
                                          "pending", (json_int_t)s.pending));
        } else if (strcmp(line, "quit") == 0) {
            break;
        }
    }
    notify_close(n);
    notify_cfg_free(cfg);
    print_line("closed", json_object());
    return 0;
}
