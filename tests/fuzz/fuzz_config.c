/* The site configuration loader on arbitrary YAML: errors are reported and
 * nothing crashes or leaks. The input is written to a file beside the
 * shipped profiles' directory name, as care-edge would read it. */
#include "site.h"
#include "fuzz.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int load(const char *path, void *s)
{
    return site_load(path, s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct site s;
    if (fuzz_load_file("config", data, size, load, &s) == 0)
        site_free(&s);
    return 0;
}
