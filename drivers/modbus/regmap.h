/* Register maps: which Modbus requests read a device's registers, and how the
 * words that come back become numbers.
 *
 * Coalescing: registers of one function code are sorted by address and merged
 * into one request while the merged span stays within max_count registers and
 * the hole between two registers is at most max_gap unused registers. Reading
 * a few unused registers is cheaper than a second round trip on a 9600-baud
 * line (a request costs ~8 ms of frames plus the device's turnaround); most
 * meters answer unused addresses inside a block with zeros. */
#ifndef CAREHUB_REGMAP_H
#define CAREHUB_REGMAP_H

#include "model.h"

#include <stddef.h>
#include <stdint.h>

struct regmap_req {
    int fc;
    uint16_t start;
    uint16_t count; /* registers (fc 3/4) or bits (fc 1/2) */
};

/* Where register i of the profile is found: request index and offset in it. */
struct regmap_loc {
    size_t req;
    uint16_t offset;
};

struct regmap_plan {
    size_t n_reqs;
    struct regmap_req *reqs; /* owned */
    size_t n_regs;
    struct regmap_loc *locs; /* owned, one per profile register, in profile order */
};

/* Maximum span of one request: 125 registers or 2000 bits (Modbus spec). */
#define REGMAP_MAX_REGS 125
#define REGMAP_MAX_BITS 2000

/* Builds the request plan for regs[0..n). max_count is capped at the
 * protocol limit for each function code. Returns 0 or CH_EINVAL (a register
 * larger than max_count, or an address overflow). Caller frees with
 * regmap_plan_free. */
int regmap_plan_build(const struct reg_def *regs, size_t n, unsigned max_gap, unsigned max_count,
                      struct regmap_plan *out);
void regmap_plan_free(struct regmap_plan *p);

/* Decodes one register value from the words (fc 3/4) or bits (fc 1/2, one
 * per uint16_t, 0 or 1) starting at its location, applying bit extraction,
 * word order, scale and offset. Returns 0, or CH_EINVAL when the value is not
 * a finite number (an f32 NaN/Inf from a faulty device). */
int regmap_decode(const struct reg_def *r, const uint16_t *words, double *out);

#endif
