/* The local alarm console: what carers see on their phones when an alarm
 * goes off, served by care-edge on the site LAN with libmicrohttpd. It works
 * with the internet down: the page (edge/console/) is compiled into the
 * binary and loads nothing from elsewhere.
 *
 * HTTP API (JSON bodies; every error is {"error": "..."} with a 4xx/5xx):
 *   POST /api/login {"user","password"}  -> session cookie, {"user","role"}
 *   POST /api/logout                     -> ends the session
 *   GET  /api/me                         -> {"user","role","site","gateway",...}
 *   GET  /api/alarms                     -> {"alarms":[alert...],"server_ms"}
 *   GET  /api/history?hours=N            -> {"history":[alert...],"since_ms","server_ms"}
 *   GET  /api/events                     -> Server-Sent Events: "snapshot" first,
 *                                           then one "alert" per transition
 *   GET  /api/status                     -> the gateway's status and the console's
 *   POST /api/alarms/{id}/ack|shelve|unshelve          (any user)
 *   POST /api/alarms/{id}/out_of_service|in_service    (role admin)
 * Everything but the page and its assets needs a session cookie or HTTP
 * Basic credentials; state-changing requests must be POST with
 * Content-Type: application/json (a cross-site form cannot send that).
 *
 * The console knows nothing about the alarm module: it reads and commands
 * alarms through struct console_ops, so it can be tested alone. */
#ifndef CAREHUB_CONSOLE_H
#define CAREHUB_CONSOLE_H

#include "codec.h"
#include "site_model.h"

#include <stddef.h>
#include <stdint.h>

struct console;

/* How the console reaches the alarms. Every callback may be called from any
 * of the console's connection threads, concurrently; arg is passed back. */
struct console_ops {
    void *arg;
    /* Alarms not in normal. Returns the count; *out is malloc'ed (caller,
     * i.e. the console, frees), NULL when 0. */
    size_t (*active)(void *arg, struct ch_alert **out);
    /* Transitions since since_ms, oldest first; same ownership as active. */
    size_t (*history)(void *arg, int64_t since_ms, struct ch_alert **out);
    /* Carries out a carer's command (borrowed for the call; its by and role
     * are the logged-in user's). Returns 0, CH_EDENIED (the role may not:
     * edge/authz.h), CH_ENOTFOUND (no such alarm), CH_ESTATE (not in this
     * state) or CH_EINVAL (bad duration). */
    int (*command)(void *arg, const struct ch_command *cmd);
    /* The gateway's status as a JSON object (uplink up?, devices online);
     * caller frees. May be NULL (the callback, or what it returns). */
    char *(*status_json)(void *arg);
};

/* Starts the console for site c (borrowed until console_stop: users,
 * session length, max_clients, bind address and port; port 0 picks a free
 * port, see console_port()). ops is copied. Listens on c->console.bind:port
 * at once, so a port in use is reported here. Returns 0 and *out, or
 * -errno / CH_E... after logging why. */
int console_start(const struct site_config *c, const struct console_ops *ops, struct console **out);

/* Pushes one transition (borrowed) to every event-stream client. Never
 * blocks on a client: each has a bounded queue, and a client that falls
 * behind is disconnected (its EventSource reconnects and gets a fresh
 * snapshot). Safe from any thread, including from inside the ops. */
void console_publish(struct console *k, const struct ch_alert *transition);

/* Stops serving: open event streams are ended, connection threads joined.
 * Returns promptly even with streams open. k may be NULL. */
void console_stop(struct console *k);

/* The port the console listens on. */
uint16_t console_port(const struct console *k);

/* Event-stream clients connected now (for status and tests). */
size_t console_clients(struct console *k);

/* Hashes a password for the site config's console.users[].password_hash:
 * crypt(3) yescrypt ("$y$...") with a random salt. Caller frees; NULL on
 * failure (logged). */
char *console_hash_password(const char *password);

#endif
