/* log.c: one line per event, to the journal or to stderr (see log.h).
 *
 * Where a line goes is decided per line, cheaply: JOURNAL_STREAM (set by
 * systemd when it connects stderr to the journal, "DEVICE:INODE") is read
 * once; when it was set, each line compares it with fstat(2) of fd 2, the
 * documented way to know stderr is still that stream (a program or a test
 * may have pointed fd 2 elsewhere since). Outside systemd that costs a
 * pthread_once check and nothing more. */
#include "log.h"
#include "err.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* the location of these calls (log.c) would say nothing */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

static atomic_int g_level = LOGL_INFO;

/* JOURNAL_STREAM, parsed once */
static pthread_once_t g_stream_once = PTHREAD_ONCE_INIT;
static bool g_stream_set;
static dev_t g_stream_dev;
static ino_t g_stream_ino;

void log_set_level(enum log_level level)
{
    atomic_store(&g_level, (int)level);
}

enum log_level log_get_level(void)
{
    return (enum log_level)atomic_load(&g_level);
}

int log_level_parse(const char *s, enum log_level *out)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return CH_EINVAL;
}

/* JOURNAL_STREAM, if journald's socket is there: sd_journal_send reports
 * success when it is not (it drops the entry), and the line would be lost. */
static void read_stream_env(void)
{
    const char *e = getenv("JOURNAL_STREAM");
    uintmax_t dev, ino;
    char end;
    if (e && sscanf(e, "%ju:%ju%c", &dev, &ino, &end) == 2 &&
        access("/run/systemd/journal/socket", F_OK) == 0) {
        g_stream_dev = (dev_t)dev;
        g_stream_ino = (ino_t)ino;
        g_stream_set = true;
    }
}

/* True if fd 2 is the journal stream systemd connected (systemd.exec(5),
 * $JOURNAL_STREAM). */
static bool stderr_is_journal(void)
{
    pthread_once(&g_stream_once, read_stream_env);
    if (!g_stream_set)
        return false;
    struct stat st;
    return fstat(STDERR_FILENO, &st) == 0 && st.st_dev == g_stream_dev && st.st_ino == g_stream_ino;
}

/* To the journal with its priority and carehub's fields; false if it
 * failed (the caller then writes stderr). */
static bool to_journal(enum log_level level, const char *module, const char *instance,
                       const char *msg)
{
    static const int prio[] = {3, 4, 6, 7}; /* LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG */
    int rc;
    if (instance)
        rc = sd_journal_send("MESSAGE=%s", msg, "PRIORITY=%d", prio[level], "CAREHUB_MODULE=%s",
                             module, "CAREHUB_INSTANCE=%s", instance, "SYSLOG_IDENTIFIER=%s",
                             program_invocation_short_name, NULL);
    else
        rc = sd_journal_send("MESSAGE=%s", msg, "PRIORITY=%d", prio[level], "CAREHUB_MODULE=%s",
                             module, "SYSLOG_IDENTIFIER=%s", program_invocation_short_name, NULL);
    return rc >= 0;
}

/* "2026-11-22T22:10:01.123Z E [module:instance] " into buf (n >= 128);
 * returns its length, < n. */
static size_t stderr_prefix(char *buf, size_t n, enum log_level level, const char *module,
                            const char *instance)
{
    static const char letters[] = "EWID";
    struct tm tm;
    int64_t now = ch_now_ms(); /* the simulation clock's, when on (util.h) */
    time_t sec = (time_t)(now / 1000);
    gmtime_r(&sec, &tm);
    int k =
        snprintf(buf, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %c [%s%s%s] ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (long)(now % 1000),
                 letters[level], module, instance ? ":" : "", instance ? instance : "");
    if (k < 0)
        return 0;
    return (size_t)k < n ? (size_t)k : n - 1;
}

void log_write(enum log_level level, const char *module, const char *instance, const char *fmt, ...)
{
    if ((int)level > atomic_load(&g_level))
        return;
    char line[1024];
    bool journal = stderr_is_journal();
    /* the journal has its own time and fields: the message alone */
    size_t n = journal ? 0 : stderr_prefix(line, sizeof line, level, module, instance);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    size_t len = n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len] = '\0';
    if (journal) {
        int saved = errno; /* a caller's errno outlives its log line */
        bool sent = to_journal(level, module, instance, line);
        errno = saved;
        if (sent)
            return;
        /* the journal refused it: the stderr line instead */
        char out[256 + sizeof line];
        size_t p = stderr_prefix(out, 256, level, module, instance);
        memcpy(out + p, line, len);
        out[p + len] = '\n';
        ssize_t w = write(STDERR_FILENO, out, p + len + 1);
        (void)w;
        return;
    }
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
