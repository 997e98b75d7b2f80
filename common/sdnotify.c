/* sdnotify.c: the Type=notify protocol through libsystemd (see sdnotify.h).
 *
 * State is the main thread's alone (sdnotify.h): whether NOTIFY_SOCKET is
 * set, the keep-alive interval, when the next keep-alive is due and the
 * last STATUS= sent (so an unchanged status is not sent again). */
#include "sdnotify.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#define STATUS_MAX 256

static bool g_enabled;
static int64_t g_watchdog_ms; /* half of WATCHDOG_USEC; 0: no watchdog */
static int64_t g_due = INT64_MAX;
static char g_status[STATUS_MAX];

void sdnotify_init(void)
{
    const char *sock = getenv("NOTIFY_SOCKET");
    g_enabled = sock && *sock;
    g_watchdog_ms = 0;
    g_due = INT64_MAX;
    g_status[0] = '\0';
    if (!g_enabled)
        return;
    uint64_t usec = 0;
    /* > 0 only if WATCHDOG_USEC is set and WATCHDOG_PID, if set, is ours */
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        g_watchdog_ms = (int64_t)(usec / 2000);
        if (g_watchdog_ms < 1)
            g_watchdog_ms = 1;
    }
    g_due = ch_mono_ms();
}

bool sdnotify_enabled(void)
{
    return g_enabled;
}

int64_t sdnotify_watchdog_ms(void)
{
    return g_watchdog_ms;
}

int64_t sdnotify_due(void)
{
    return g_due;
}

/* Formats the status into buf (one line: newlines become spaces). */
__attribute__((format(printf, 3, 0))) static void format_status(char *buf, size_t n,
                                                                const char *fmt, va_list ap)
{
    if (vsnprintf(buf, n, fmt, ap) < 0)
        buf[0] = '\0';
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
}

/* Sends "HEAD\nSTATUS=status" (HEAD may be empty; status NULL: none). */
static void send_state(const char *head, const char *status)
{
    char msg[STATUS_MAX + 64];
    snprintf(msg, sizeof msg, "%s%s%s%s", head, *head && status ? "\n" : "",
             status ? "STATUS=" : "", status ? status : "");
    if (msg[0])
        (void)sd_notify(0, msg);
    if (status)
        ch_strlcpy(g_status, status, sizeof g_status);
}

__attribute__((format(printf, 2, 0))) static void notify_v(const char *head, const char *fmt,
                                                           va_list ap)
{
    if (!g_enabled)
        return;
    char st[STATUS_MAX] = "";
    if (fmt)
        format_status(st, sizeof st, fmt, ap);
    send_state(head, fmt ? st : NULL);
}

void sdnotify_ready(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    notify_v("READY=1", fmt, ap);
    va_end(ap);
}

void sdnotify_reloading(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    notify_v("RELOADING=1", fmt, ap);
    va_end(ap);
}

void sdnotify_stopping(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    notify_v("STOPPING=1", fmt, ap);
    va_end(ap);
    g_due = INT64_MAX; /* no keep-alives while stopping: systemd no longer watches */
}

void sdnotify_alive(const char *fmt, ...)
{
    if (!g_enabled)
        return;
    char st[STATUS_MAX];
    va_list ap;
    va_start(ap, fmt);
    format_status(st, sizeof st, fmt, ap);
    va_end(ap);
    bool changed = strcmp(st, g_status) != 0;
    if (g_watchdog_ms || changed)
        send_state(g_watchdog_ms ? "WATCHDOG=1" : "", changed ? st : NULL);
    g_due = ch_mono_ms() + (g_watchdog_ms ? g_watchdog_ms : SDNOTIFY_STATUS_MS);
}
