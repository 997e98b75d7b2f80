/* care-hub's configuration file (YAML; example in deploy/hub/hub.yaml).
 * The key tables in config.c are the reference: key, type, default, range. */
#ifndef CAREHUB_HUBCFG_H
#define CAREHUB_HUBCFG_H

#include "cfg.h"

#include <stdbool.h>
#include <stdint.h>

struct notify_cfg;
struct fy_node;

struct hubcfg_mqtt {
    char *broker;    /* tcp://host:port or ssl://host:port */
    char *client_id; /* also the hub tag of the self-metrics */
    char *username;
    char *password;
    struct cfg_tls tls;
    char *topic;        /* subscription filter */
    char *shared_group; /* subscribe $share/<group>/<topic> when set */
    int64_t keepalive_ms;
    bool clean_session;
};

/* How long InfluxDB 1.x keeps what (retention.c): readings in the retention
 * policy "raw" for raw_ms, their hourly means, minima and maxima in "hourly"
 * for hourly_ms (0: forever); alarms, audit and the summary's kept figures
 * stay in the database's default policy. raw_ms 0: everything in the
 * default policy, kept as long as it keeps it (as before; also for stores
 * without retention policies). */
struct hubcfg_retention {
    int64_t raw_ms;
    int64_t hourly_ms;
    int64_t interval_ms; /* how often the hourly history is brought up to date */
};

struct hubcfg_influx {
    char *url;            /* http(s)://host:port, no path */
    int64_t version;      /* 1 or 2 */
    char *database;       /* v1 */
    char *username;       /* v1, optional */
    char *password;       /* v1, optional */
    char *org;            /* v2 */
    char *bucket;         /* v2 */
    char *token;          /* v2 */
    bool create_database; /* v1: CREATE DATABASE before the first write */
    bool gzip;            /* Content-Encoding: gzip */
    int64_t batch_size;   /* points per request */
    int64_t flush_interval_ms;
    int64_t timeout_ms;
    int64_t max_backoff_ms;
    int64_t shutdown_timeout_ms;
    char *dead_letter; /* file for refused writes; default dead-letter.lp beside spool.dir */
    struct hubcfg_retention retention;
};

/* The hub's spool: every batch of line protocol waits there for InfluxDB. */
struct hubcfg_spool {
    char *dir;                  /* absolute (relative paths are resolved against the file) */
    int64_t max_bytes;          /* bound on disk; the oldest batches are dropped beyond */
    int64_t commit_interval_ms; /* fsync at least this often (power cut window) */
};

/* A compliance limit: readings of metric (in measurement) within [min, max]. */
struct hubcfg_limit {
    char *metric;
    char *measurement;
    double min, max; /* -1e308 / 1e308: no bound */
    struct fy_node *node;
};

/* What a regulator reads (an allow-list; hub/API.md, "Regulators"): the
 * fields of measurement ("room": its room label), every field when fields
 * is empty, to every regulator or only to those with grant. */
struct hubcfg_view {
    char *measurement;
    struct cfg_list fields; /* char * */
    int grant;              /* 0 (none), GRANT_HEALTH or GRANT_LOCATION (tokens.h) */
    struct fy_node *node;
};

/* The HTTP API and web console (hub/API.md); on when tokens_file is set. */
struct hubcfg_api {
    char *bind;
    int64_t port;
    char *tokens_file;
    char *users_file;           /* people's accounts (users.h); NULL: tokens only */
    int64_t session_idle_ms;    /* a login ends after this long without a request ... */
    int64_t session_max_age_ms; /* ... or this long after it began */
    int64_t max_sessions;       /* logins kept at once (sessions.h) */
    char *www_dir;              /* the web console's files */
    int locale;                 /* the console's language before a person chooses: 0 en, 1 zh-CN */
    char *audit_log;            /* JSON lines; default audit.jsonl beside spool.dir */
    char *pseudonym_key_file;   /* regulators' pseudonyms; default pseudonym.key beside spool.dir */
    int64_t rate_limit;         /* requests per second per token (burst twice that) */
    int64_t max_clients;        /* event streams */
    struct cfg_https tls;       /* cert_file set: HTTPS only */
    struct cfg_http_limits connections;
    int64_t device_timeout_ms;
    int64_t query_timeout_ms;
    struct cfg_list compliance; /* struct hubcfg_limit; empty: GB/T 18883-2022 defaults */
    /* struct hubcfg_view; empty: the defaults in api_privacy.c */
    struct cfg_list regulator_view;

    /* what one token, site or address may take (API.md, "Limits") */
    int64_t max_streams_per_token; /* event streams of one token; 0: max(4, max_clients / 16) */
    int64_t max_streams_per_site;  /* of one site's tokens; 0: max(per token, max_clients / 4) */
    int64_t max_exports_per_token; /* exports and summaries of one token at once */
    int64_t address_rate_limit;    /* refused requests without a valid token per address and
                                      second (burst four times that); beyond: 429 */
    int64_t audit_max_bytes;       /* audit_log is rotated at this size ... */
    int64_t audit_keep;            /* ... keeping this many old files (audit_log.1 ..) */
    int64_t audit_refusal_interval_ms; /* refusals of one address counted over this */
};

/* Ingest isolation (registry.h): per-gateway quotas and inventories. */
struct hubcfg_ingest {
    int64_t rate;                 /* readings/s a gateway may send, sustained */
    int64_t burst;                /* readings it may send at once */
    int64_t max_devices;          /* devices a gateway's inventory may declare */
    int64_t devices_before_birth; /* distinct devices let through before its birth is known */
    int64_t inventory_grace_ms;   /* a device a birth leaves out stays declared this long */
    char *registry;               /* the operator's file of gateways (and devices), optional */
    int64_t queue_bytes;          /* telemetry a gateway may have waiting for the workers */
    int64_t queue_max_bytes;      /* ... all gateways together */
    int64_t workers;              /* threads parsing and storing telemetry */
};

struct hubcfg {
    struct hubcfg_mqtt mqtt;
    struct hubcfg_api api;
    struct hubcfg_ingest ingest;
    struct hubcfg_influx influx;
    struct hubcfg_spool spool;
    int64_t self_metrics_interval_ms;
    int64_t gap_grace_ms;    /* a gap in a gateway's readings open this long is reported lost */
    int64_t ack_interval_ms; /* storage acknowledgements to each gateway at most this often */
    int64_t rollup_after_ms; /* an hour's or day's summary figures are kept once it ended this long
                                ago */
    int log_level;           /* enum log_level */
    struct fy_node *notify_node; /* notify: while loading (hub_notify.h); NULL after */
    struct notify_cfg *notify;   /* parsed; NULL: the hub tells nobody */
    int64_t notify_max_age_ms;   /* an alert older than this when it arrives is not told */
    char *notify_timezone;       /* IANA zone of the rosters and times told; "": the hub's */
};

/* Reads and checks the file at path into *out (zeroed here). Returns 0, or
 * CH_ECONFIG / -errno after reporting every problem on stderr as
 * file:line:column with the key. On success the caller frees with
 * hubcfg_free. */
int hubcfg_load(const char *path, struct hubcfg *out);

/* api.locale's names ("en", "zh-CN"). */
extern const struct cfg_enum console_locales[];

void hubcfg_free(struct hubcfg *c);

#endif
