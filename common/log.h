/* One log line per event.
 *
 * On stderr, when it is not the journal:
 *   2026-11-22T22:10:01.123Z E [modbus:env-3f] read 3:0+12 failed: timeout
 * The module names the code, the instance names the device, bus or peer
 * (NULL when there is none).
 *
 * To the journal, when systemd connected stderr to it (JOURNAL_STREAM names
 * fd 2's device and inode): one entry per line with sd_journal_send, MESSAGE=
 * the text alone, PRIORITY= 3 (error), 4 (warn), 6 (info) or 7 (debug),
 * CAREHUB_MODULE= the module, CAREHUB_INSTANCE= the instance (absent when
 * NULL) and SYSLOG_IDENTIFIER= the program; so
 *   journalctl -u care-edge -p warning CAREHUB_MODULE=poller
 * lists the device failures. If the journal refuses an entry, the stderr
 * line is written instead.
 *
 * Thread-safe: each line is one write(2) or one journal datagram. */
#ifndef CAREHUB_LOG_H
#define CAREHUB_LOG_H

enum log_level { LOGL_ERROR = 0, LOGL_WARN, LOGL_INFO, LOGL_DEBUG };

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parses "error", "warn", "info", "debug". Returns 0 or CH_EINVAL. */
int log_level_parse(const char *s, enum log_level *out);

void log_write(enum log_level level, const char *module, const char *instance, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define LOGE(mod, inst, ...) log_write(LOGL_ERROR, mod, inst, __VA_ARGS__)
#define LOGW(mod, inst, ...) log_write(LOGL_WARN, mod, inst, __VA_ARGS__)
#define LOGI(mod, inst, ...) log_write(LOGL_INFO, mod, inst, __VA_ARGS__)
#define LOGD(mod, inst, ...)                                                                       \
    do {                                                                                           \
        if (log_get_level() >= LOGL_DEBUG)                                                         \
            log_write(LOGL_DEBUG, mod, inst, __VA_ARGS__);                                         \
    } while (0)

#endif
