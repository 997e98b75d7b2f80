/* One log line per event on stderr:
 *   2026-11-22T22:10:01.123Z E [modbus:env-3f] read 3:0+12 failed: timeout
 * The module names the code, the instance names the device, bus or peer
 * (NULL when there is none). Thread-safe: each line is one write(2). */
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
