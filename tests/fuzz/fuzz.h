/* What the fuzz targets share.
 *
 * CHECK(c): abort() naming the target and the broken expectation.
 *
 * File loaders take a path, so an input is written to a file of this
 * process's own under /tmp (ctest may replay several corpora at once), and
 * they report every problem on stderr, which is quieted while they run:
 * stdio's stderr only, so a sanitizer's report (written to fd 2) still
 * shows. FUZZ_VERBOSE=1 keeps the loaders' reports. */
#ifndef CAREHUB_FUZZ_H
#define CAREHUB_FUZZ_H

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: %s\n", FUZZ_NAME, __LINE__, #c);                               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* "/tmp/carehub-fuzz-<name>-<pid>.yaml" in path[0..n). */
static inline void fuzz_file_path(char *path, size_t n, const char *name)
{
    snprintf(path, n, "/tmp/carehub-fuzz-%s-%d.yaml", name, (int)getpid());
}

/* Writes data[0..size) to path (replacing it). Returns 0, or -1 if it cannot
 * (the input is then skipped). */
static inline int fuzz_file_write(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t put = fwrite(data, 1, size, f);
    return fclose(f) == 0 && put == size ? 0 : -1;
}

/* Points stderr at /dev/null; returns what to give fuzz_loud(). */
static inline FILE *fuzz_quiet(void)
{
    FILE *saved = stderr;
    if (getenv("FUZZ_VERBOSE"))
        return NULL;
    FILE *null = fopen("/dev/null", "w");
    if (null)
        stderr = null;
    return null ? saved : NULL;
}

static inline void fuzz_loud(FILE *saved)
{
    if (!saved)
        return;
    fclose(stderr);
    stderr = saved;
}

/* The whole round for a loader of one file: writes the input to the file
 * for name, calls load(path, arg) quietly, removes the file. Returns what
 * load returned, or INT_MIN when the file could not be written. */
static inline int fuzz_load_file(const char *name, const uint8_t *data, size_t size,
                                 int (*load)(const char *path, void *arg), void *arg)
{
    char path[64];
    fuzz_file_path(path, sizeof path, name);
    if (fuzz_file_write(path, data, size) != 0)
        return INT_MIN;
    FILE *saved = fuzz_quiet(); /* the loader reports every error */
    int rc = load(path, arg);
    fuzz_loud(saved);
    unlink(path);
    return rc;
}

#endif
