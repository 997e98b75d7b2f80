/* Telling systemd how a service is doing (sd_notify(3), the Type=notify
 * protocol), for care-edge and care-hub alike.
 *
 *   READY=1       once it really serves: configuration loaded, spool open,
 *                 servers listening. Not "connected to the broker": a
 *                 gateway without its uplink still alarms on site, and a
 *                 broker that is down must not fail the start.
 *   RELOADING=1   a SIGHUP reload begins; READY=1 again when it is done
 *                 (systemd 252: no MONOTONIC_USEC needed).
 *   STOPPING=1    a stop signal was taken; the clean stop begins.
 *   WATCHDOG=1    the main loop is alive and its checks passed, every half
 *                 WATCHDOG_USEC (WatchdogSec=); systemd restarts a service
 *                 that misses it.
 *   STATUS=...    one line for systemctl status: what the service is doing.
 *
 * Under systemd (NOTIFY_SOCKET set) each call sends one datagram; without it
 * every call returns at once and does nothing. Every function is for the
 * main thread only: keep-alives must come from the loop they vouch for
 * (a timer thread would keep a hung loop alive), and the units say
 * NotifyAccess=main. Errors of sd_notify are ignored: systemd that cannot
 * be told is no reason to stop serving. */
#ifndef CAREHUB_SDNOTIFY_H
#define CAREHUB_SDNOTIFY_H

#include <stdbool.h>
#include <stdint.h>

/* Keep-alive interval without a watchdog: STATUS= is refreshed this often. */
#define SDNOTIFY_STATUS_MS 10000

/* Reads NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID (sd_watchdog_enabled)
 * once. Call from main before anything else here, before threads start. */
void sdnotify_init(void);

/* True when running under systemd's notification protocol. */
bool sdnotify_enabled(void);

/* The watchdog's keep-alive interval in ms (half of WATCHDOG_USEC), or 0
 * when systemd does not watch this process. */
int64_t sdnotify_watchdog_ms(void);

/* When the main loop should next call sdnotify_alive(), in ch_mono_ms();
 * INT64_MAX when not under systemd. Loops that wait bound their wait by it. */
int64_t sdnotify_due(void);

/* READY=1 with a STATUS= line (printf-style; NULL: none). */
void sdnotify_ready(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* RELOADING=1 with a STATUS= line. */
void sdnotify_reloading(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* STOPPING=1 with a STATUS= line. */
void sdnotify_stopping(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The main loop is alive and healthy: WATCHDOG=1 when systemd watches, and
 * STATUS= when the line differs from the last one sent. Sets the next due
 * time (sdnotify_due) from now. */
void sdnotify_alive(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
