/* The device profile loader (edge/site.c profile_load) on arbitrary YAML:
 * every problem is reported, nothing crashes or leaks, and a profile it
 * accepts has an id and, for Modbus, registers that fit the address space.
 * Its registers then go to the request planner as the Modbus driver gives
 * them (drivers/modbus/regmap.c): a plan it makes reads every register within one
 * request of at most max_registers. Seeds: the shipped deploy/profiles/. */
#include "site.h"
#include "err.h"
#include "fuzz.h"
#include "regmap.h"

#include <stdbool.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int load(const char *path, void *p)
{
    return profile_load(path, p, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct profile p = {0};
    if (fuzz_load_file("profile", data, size, load, &p) != 0)
        return 0;
    CHECK(p.id && p.id[0] && p.node == NULL);
    for (size_t i = 0; i < p.regs.n; i++) {
        const struct reg_def *r = PROFILE_REG(&p, i);
        CHECK(r->address >= 0 && r->address + reg_type_words(r->type) <= 65536);
    }
    struct regmap_plan plan;
    int rc = regmap_plan_build((const struct reg_def *)p.regs.items, p.regs.n, (unsigned)p.max_gap,
                               (unsigned)p.max_registers, &plan);
    CHECK(rc == 0 || rc == CH_EINVAL);
    for (size_t i = 0; rc == 0 && i < p.regs.n; i++) {
        const struct reg_def *r = PROFILE_REG(&p, i);
        const struct regmap_loc *l = &plan.locs[i];
        CHECK(l->req < plan.n_reqs);
        const struct regmap_req *q = &plan.reqs[l->req];
        bool bits = r->fc == 1 || r->fc == 2;
        CHECK(q->fc == r->fc && q->start + l->offset == r->address);
        CHECK(l->offset + (bits ? 1 : reg_type_words(r->type)) <= q->count);
        CHECK(q->count <= p.max_registers); /* bits too: the profile's cap is below 2000 */
    }
    if (rc == 0)
        regmap_plan_free(&plan);
    profile_free(&p);
    return 0;
}
