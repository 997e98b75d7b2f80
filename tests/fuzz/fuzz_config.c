/* The site configuration loader on arbitrary YAML: errors are reported and
 * nothing crashes or leaks. The input is written to a file beside the
 * shipped profiles' directory name, as care-edge would read it. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    if (!path[0])
        snprintf(path, sizeof path, "/tmp/carehub-fuzz-config-%d.yaml", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    FILE *saved = stderr;
    stderr = fopen("/dev/null", "w"); /* the loader reports every error: keep the log quiet */
    struct site s;
    if (site_load(path, &s) == 0)
        site_free(&s);
    fclose(stderr);
    stderr = saved;
    unlink(path);
    return 0;
}
