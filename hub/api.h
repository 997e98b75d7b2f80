/* care-hub's HTTP API and web console (hub/API.md is the reference).
 *
 * libmicrohttpd, one thread per connection. Every /api/v1 request carries a
 * bearer token (tokens.h): its role says what it may do, its scope which
 * sites it may see; a request outside the scope is refused before anything
 * is read. Data comes from InfluxDB (influxq.h, InfluxQL built with quoted
 * literals only), from the hub's view of every gateway's status (presence),
 * and, live, from the alarm transitions the view subscription hands to
 * api_alert(). Commands to gateways go out through the view's MQTT client.
 *
 * People log in with a name and password instead (api.users_file, users.h):
 * a session cookie then stands for the token, with the user's role and
 * scope (api_users.c).
 *
 * Every request, refused ones too, is audited once it is finished (so an
 * export's row count is known): one JSON line in api.audit_log and one
 * carehub_audit point through the hub's spool, readable by admins from any
 * hub (GET /api/v1/audit). */
#ifndef CAREHUB_API_H
#define CAREHUB_API_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct hubcfg;
struct presence;
struct influx;
struct sub;
struct ch_alert;
struct ch_status;
struct api;

/* cfg, view (every gateway's status), writer (audit points) and mqtt (the
 * view client, for commands; NULL: commands answer 503) are borrowed until
 * api_stop. Returns 0, or
 * CH_ECONFIG (tokens file, www_dir, pseudonym key) / -errno, logged. */
int api_start(const struct hubcfg *cfg, struct presence *view, struct influx *writer,
              struct sub *mqtt, struct api **out);

struct ch_httpd_stats;
/* The HTTP server's connection counters (httpd.h); zeros without a. */
void api_http_stats(struct api *a, struct ch_httpd_stats *out);

/* The port it listens on (the one chosen when api.port is 0). */
uint16_t api_port(const struct api *a);

/* A transition seen by the view subscription: to the event streams in scope. */
void api_alert(struct api *a, const struct ch_alert *t);

/* A gateway's status changed: its site to the event streams in scope. */
void api_site_changed(struct api *a, const char *site);

struct retention;
/* The keeper of the hourly history (retention.h; NULL: none): charts of
 * ranges older than the raw readings read its history up to where it got. */
void api_set_retention(struct api *a, struct retention *r);

/* Keeps the summary figures of every site's whole UTC days in [from, to)
 * (rollup.h), computing the ones not kept yet: called by the keeper while
 * the days' readings are still in raw. Stops between sites once *stop is
 * set. Returns 0 or the first query's error (err). */
int api_keep_figures(struct api *a, int64_t from, int64_t to, const atomic_bool *stop, char *err,
                     size_t errn);

/* Reads the tokens file again (SIGHUP): on success the new tokens apply to
 * the next request; on error the old ones stay (reported). Returns 0 or the
 * load error. */
int api_reload_tokens(struct api *a);

/* Reads the users file (api.users_file) again (SIGHUP), as
 * api_reload_tokens; sessions of users now gone, disabled or with another
 * password end at their next request. Returns 0 or the load error. */
int api_reload_users(struct api *a);

/* Ends the event streams and stops the HTTP server: from then on no request
 * runs (none publishes through mqtt), while api_alert and api_site_changed
 * still may be called. Then close mqtt, then api_stop. */
void api_quiesce(struct api *a);

/* Quiesces if not done, and frees a. */
void api_stop(struct api *a);

/* Exposed for the unit tests. */
/* RFC 3339 (2026-11-23T03:00:00Z, fractions, +08:00), a bare date (UTC
 * midnight), or epoch milliseconds. Returns 0 with *ms, or -1. */
int api_parse_time(const char *s, int64_t *ms);
/* Linear interpolation between closest ranks (sorted v, n > 0). */
double api_percentile(const double *v, size_t n, double p);

#endif
