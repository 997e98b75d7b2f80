#include "regmap.h"
#include "err.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

unsigned reg_type_words(int type)
{
    switch (type) {
    case REG_U32:
    case REG_I32:
    case REG_F32:
        return 2;
    default:
        return 1;
    }
}

struct slot {
    size_t idx; /* index in the profile */
    int fc;
    unsigned addr;
    unsigned words;
};

static int slot_cmp(const void *a, const void *b)
{
    const struct slot *x = a, *y = b;
    if (x->fc != y->fc)
        return x->fc < y->fc ? -1 : 1;
    if (x->addr != y->addr)
        return x->addr < y->addr ? -1 : 1;
    return x->idx < y->idx ? -1 : (x->idx > y->idx);
}

int regmap_plan_build(const struct reg_def *regs, size_t n, unsigned max_gap, unsigned max_count,
                      struct regmap_plan *out)
{
    memset(out, 0, sizeof *out);
    struct slot *s = ch_xcalloc(n, sizeof *s);
    for (size_t i = 0; i < n; i++) {
        s[i].idx = i;
        s[i].fc = (int)regs[i].fc;
        s[i].addr = (unsigned)regs[i].address;
        s[i].words = reg_type_words(regs[i].type);
        if (regs[i].address < 0 || s[i].addr + s[i].words > 65536u) {
            free(s);
            return CH_EINVAL;
        }
    }
    qsort(s, n, sizeof *s, slot_cmp);

    out->reqs = ch_xcalloc(n, sizeof *out->reqs);
    out->locs = ch_xcalloc(n, sizeof *out->locs);
    out->n_regs = n;
    for (size_t i = 0; i < n; i++) {
        bool bits = s[i].fc == 1 || s[i].fc == 2;
        unsigned limit = bits ? REGMAP_MAX_BITS : REGMAP_MAX_REGS;
        if (max_count && max_count < limit)
            limit = max_count;
        if (s[i].words > limit) {
            regmap_plan_free(out);
            free(s);
            return CH_EINVAL;
        }
        struct regmap_req *cur = out->n_reqs ? &out->reqs[out->n_reqs - 1] : NULL;
        if (cur && cur->fc == s[i].fc) {
            unsigned cur_end = (unsigned)cur->start + cur->count; /* one past the last */
            unsigned new_end = s[i].addr + s[i].words;
            unsigned gap = s[i].addr > cur_end ? s[i].addr - cur_end : 0;
            unsigned span = (new_end > cur_end ? new_end : cur_end) - cur->start;
            if (gap <= max_gap && span <= limit) {
                cur->count = (uint16_t)span;
                out->locs[s[i].idx].req = out->n_reqs - 1;
                out->locs[s[i].idx].offset = (uint16_t)(s[i].addr - cur->start);
                continue;
            }
        }
        cur = &out->reqs[out->n_reqs];
        cur->fc = s[i].fc;
        cur->start = (uint16_t)s[i].addr;
        cur->count = (uint16_t)s[i].words;
        out->locs[s[i].idx].req = out->n_reqs;
        out->locs[s[i].idx].offset = 0;
        out->n_reqs++;
    }
    free(s);
    return 0;
}

void regmap_plan_free(struct regmap_plan *p)
{
    free(p->reqs);
    free(p->locs);
    memset(p, 0, sizeof *p);
}

/* Assembles a 32-bit value from two registers in the given order. w[0] is
 * the register at the lower address. */
static uint32_t join32(const uint16_t *w, int order)
{
    uint32_t hi = w[0], lo = w[1];
    switch (order) {
    case ORDER_CDAB: /* low word first */
        return (lo << 16) | hi;
    case ORDER_BADC: /* bytes swapped within each word */
        return ((uint32_t)__builtin_bswap16((uint16_t)hi) << 16) | __builtin_bswap16((uint16_t)lo);
    case ORDER_DCBA: /* fully little-endian */
        return ((uint32_t)__builtin_bswap16((uint16_t)lo) << 16) | __builtin_bswap16((uint16_t)hi);
    default: /* ABCD, big-endian, the Modbus default */
        return (hi << 16) | lo;
    }
}

int regmap_decode(const struct reg_def *r, const uint16_t *words, double *out)
{
    double raw;
    switch (r->type) {
    case REG_BOOL:
        raw = words[0] ? 1.0 : 0.0;
        break;
    case REG_U16:
        raw = r->bit >= 0 ? (double)((words[0] >> r->bit) & 1u) : (double)words[0];
        break;
    case REG_I16:
        raw = (double)(int16_t)words[0];
        break;
    case REG_U32:
        raw = (double)join32(words, r->order);
        break;
    case REG_I32:
        raw = (double)(int32_t)join32(words, r->order);
        break;
    case REG_F32: {
        uint32_t u = join32(words, r->order);
        float f;
        memcpy(&f, &u, sizeof f);
        raw = (double)f;
        break;
    }
    default:
        return CH_EINVAL;
    }
    double v = raw * r->scale + r->offset;
    if (!isfinite(v))
        return CH_EINVAL;
    *out = v;
    return 0;
}
