/* Coalescing benchmark: Modbus requests per poll cycle against the number of
 * values and registers read, for every shipped profile and a synthetic
 * 100-value meter, with and without coalescing. Prints figures; never fails
 * on a number. Usage: bench_coalesce PROFILE.yaml... */
#include "site.h"
#include "model.h"
#include "regmap.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void row(const char *name, const struct reg_def *regs, size_t n, unsigned gap, unsigned maxr)
{
    struct regmap_plan with;
    if (regmap_plan_build(regs, n, gap, maxr, &with) != 0) {
        printf("%-22s (cannot plan)\n", name);
        return;
    }
    unsigned words = 0;
    for (size_t i = 0; i < with.n_reqs; i++)
        words += with.reqs[i].count;
    /* without coalescing: one request per value (32-bit values need their 2 registers) */
    size_t single = n;
    printf("%-22s %7zu %10u %13zu %12zu %8.1fx\n", name, n, words, with.n_reqs, single,
           (double)single / (double)with.n_reqs);
    regmap_plan_free(&with);
}

int main(int argc, char **argv)
{
    printf("%-22s %7s %10s %13s %12s %9s\n", "profile", "values", "registers", "requests",
           "uncoalesced", "saving");
    for (int i = 1; i < argc; i++) {
        struct profile p;
        memset(&p, 0, sizeof p);
        if (profile_load(argv[i], &p, NULL) != 0)
            continue;
        row(p.id, (const struct reg_def *)p.regs.items, p.regs.n, (unsigned)p.max_gap,
            (unsigned)p.max_registers);
        profile_free(&p);
    }
    /* a power/energy meter style map: 100 values, u16 and f32, with holes */
    struct reg_def regs[100];
    unsigned addr = 0;
    for (int i = 0; i < 100; i++) {
        memset(&regs[i], 0, sizeof regs[i]);
        regs[i].fc = 3;
        regs[i].type = (i % 3 == 0) ? REG_F32 : REG_U16;
        regs[i].address = addr;
        regs[i].bit = -1;
        regs[i].scale = 1;
        addr += reg_type_words(regs[i].type) + (i % 10 == 9 ? 6 : 0); /* a hole every 10 */
    }
    row("synthetic-100 (gap 8)", regs, 100, 8, 125);
    row("synthetic-100 (gap 0)", regs, 100, 0, 125);
    return 0;
}
