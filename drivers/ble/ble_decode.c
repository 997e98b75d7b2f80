#include "ble_decode.h"
#include "err.h"

#include <stdio.h>
#include <string.h>

static const struct cfg_enum match_names[] = {
    {"company", BLE_MATCH_COMPANY},
    {"service", BLE_MATCH_SERVICE},
    {"prefix", BLE_MATCH_PREFIX},
    {"ibeacon", BLE_MATCH_IBEACON},
    {"eddystone_tlm", BLE_MATCH_EDDYSTONE_TLM},
    {"bthome", BLE_MATCH_BTHOME},
    {NULL, 0},
};

static const struct cfg_enum ftype_names[] = {
    {"u8", BLE_F_U8},
    {"i8", BLE_F_I8},
    {"u16le", BLE_F_U16LE},
    {"u16be", BLE_F_U16BE},
    {"i16le", BLE_F_I16LE},
    {"i16be", BLE_F_I16BE},
    {"u24le", BLE_F_U24LE},
    {"u24be", BLE_F_U24BE},
    {"u32le", BLE_F_U32LE},
    {"u32be", BLE_F_U32BE},
    {"i32le", BLE_F_I32LE},
    {"i32be", BLE_F_I32BE},
    {NULL, 0},
};

#define F(m) offsetof(struct ble_field, m)
#define P(m) offsetof(struct ble_profile, m)
/* clang-format off */
const struct cfg_key ble_field_keys[] = {
    {.key = "metric", .type = CFG_ID,    .offset = F(metric), .required = true},
    {.key = "offset", .type = CFG_INT,   .offset = F(offset), .required = true, .min = 0, .max = BLE_ADV_MAX - 1},
    {.key = "type",   .type = CFG_ENUM,  .offset = F(type), .def = "u8", .enums = ftype_names},
    {.key = "mask",   .type = CFG_INT,   .offset = F(mask), .def = "0", .min = 0, .max = 4294967295.0},
    {.key = "invert", .type = CFG_BOOL,  .offset = F(invert), .def = "false"},
    {.key = "scale",  .type = CFG_FLOAT, .offset = F(scale), .def = "1"},
    {.key = "add",    .type = CFG_FLOAT, .offset = F(add), .def = "0"},
    {.key = "latch",  .type = CFG_BOOL,  .offset = F(latch), .def = "false"},
    CFG_END,
};

const struct cfg_key ble_profile_keys[] = {
    {.key = "match",        .type = CFG_ENUM, .offset = P(match), .required = true, .enums = match_names},
    {.key = "company_id",   .type = CFG_INT,  .offset = P(company_id), .def = "-1", .min = -1, .max = 0xFFFF},
    {.key = "service_uuid", .type = CFG_INT,  .offset = P(service_uuid), .def = "-1", .min = -1, .max = 0xFFFF},
    {.key = "prefix",       .type = CFG_STR,  .offset = P(prefix)},
    {.key = "ad_type",      .type = CFG_INT,  .offset = P(ad_type), .def = "0xFF", .min = 1, .max = 0xFF},
    {.key = "min_len",      .type = CFG_INT,  .offset = P(min_len), .def = "0", .min = 0, .max = BLE_ADV_MAX},
    {.key = "fields",       .type = CFG_LIST, .offset = P(fields), .sub = ble_field_keys,
     .elem_size = sizeof(struct ble_field), .node_offset = (long)F(node)},
    CFG_END,
};
/* clang-format on */

static size_t ftype_size(int t)
{
    switch (t) {
    case BLE_F_U8:
    case BLE_F_I8:
        return 1;
    case BLE_F_U16LE:
    case BLE_F_U16BE:
    case BLE_F_I16LE:
    case BLE_F_I16BE:
        return 2;
    case BLE_F_U24LE:
    case BLE_F_U24BE:
        return 3;
    default:
        return 4;
    }
}

int ble_profile_prepare(struct ble_profile *p, char *err, size_t errlen, long *bad_field)
{
    if (bad_field)
        *bad_field = -1;
    p->prefix_len = 0;
    p->need_len = p->min_len > 0 ? (size_t)p->min_len : 0;
    bool builtin = p->match == BLE_MATCH_IBEACON || p->match == BLE_MATCH_EDDYSTONE_TLM ||
                   p->match == BLE_MATCH_BTHOME;
    if (p->match == BLE_MATCH_COMPANY && (p->company_id < 0 || p->company_id > 0xFFFF)) {
        snprintf(err, errlen, "match: company needs company_id (0..0xFFFF)");
        return CH_ECONFIG;
    }
    if (p->match == BLE_MATCH_SERVICE && (p->service_uuid < 0 || p->service_uuid > 0xFFFF)) {
        snprintf(err, errlen, "match: service needs service_uuid (16-bit)");
        return CH_ECONFIG;
    }
    if (p->match == BLE_MATCH_PREFIX) {
        size_t n = p->prefix ? strlen(p->prefix) : 0;
        long b = n ? ble_hex_decode(p->prefix, n, p->prefix_bytes, sizeof p->prefix_bytes) : -1;
        if (b <= 0) {
            snprintf(err, errlen, "match: prefix needs prefix: 1..%d bytes of hex", BLE_PREFIX_MAX);
            return CH_ECONFIG;
        }
        p->prefix_len = (size_t)b;
    }
    if (builtin && p->fields.n) {
        snprintf(err, errlen, "fields: not used with a standard format (match: %s)",
                 cfg_enum_name(match_names, p->match));
        return CH_ECONFIG;
    }
    if (!builtin && p->fields.n == 0) {
        snprintf(err, errlen, "fields: at least one field is needed");
        return CH_ECONFIG;
    }
    if (p->fields.n > BLE_MAX_FIELDS) {
        snprintf(err, errlen, "fields: at most %d", BLE_MAX_FIELDS);
        return CH_ECONFIG;
    }
    const struct ble_field *fs = p->fields.items;
    for (size_t i = 0; i < p->fields.n; i++) {
        const struct ble_field *f = &fs[i];
        size_t sz = ftype_size(f->type);
        const char *name = f->metric ? f->metric : "";
        if (bad_field)
            *bad_field = (long)i;
        if (strlen(name) == 0 || strlen(name) >= BLE_METRIC_NAME) {
            snprintf(err, errlen, "fields[%zu]: metric name of 1..%d chars", i,
                     BLE_METRIC_NAME - 1);
            return CH_ECONFIG;
        }
        if (f->offset < 0 || (size_t)f->offset + sz > BLE_ADV_MAX) {
            snprintf(err, errlen, "fields[%zu] (%s): offset %lld + %zu bytes beyond %d", i, name,
                     (long long)f->offset, sz, BLE_ADV_MAX);
            return CH_ECONFIG;
        }
        if (f->mask < 0 || (sz < 4 && (uint64_t)f->mask >> (8 * sz)) ||
            (uint64_t)f->mask > 0xFFFFFFFFu) {
            snprintf(err, errlen, "fields[%zu] (%s): mask 0x%llx wider than the %zu-byte type", i,
                     name, (long long)f->mask, sz);
            return CH_ECONFIG;
        }
        if (f->invert && !f->mask) {
            snprintf(err, errlen, "fields[%zu] (%s): invert needs mask", i, name);
            return CH_ECONFIG;
        }
        if ((size_t)f->offset + sz > p->need_len)
            p->need_len = (size_t)f->offset + sz;
    }
    if (bad_field)
        *bad_field = -1;
    return 0;
}

bool ble_reading_add(struct ble_reading *out, const char *name, double value, bool latch)
{
    if (out->n >= BLE_MAX_METRICS || strlen(name) >= BLE_METRIC_NAME)
        return false;
    struct ble_metric *m = &out->m[out->n++];
    strcpy(m->name, name);
    m->value = value;
    m->latch = latch;
    return true;
}

const struct ble_metric *ble_reading_find(const struct ble_reading *r, const char *name)
{
    /* The last wins: a BTHome packet may carry an object twice. */
    for (size_t i = r->n; i-- > 0;)
        if (strcmp(r->m[i].name, name) == 0)
            return &r->m[i];
    return NULL;
}

/* The raw value of a field; d has at least ftype_size(type) bytes. Signed
 * types are sign-extended into the int64_t. */
static int64_t read_raw(const uint8_t *d, int type)
{
    switch (type) {
    case BLE_F_U8:
        return d[0];
    case BLE_F_I8:
        return (int8_t)d[0];
    case BLE_F_U16LE:
        return d[0] | d[1] << 8;
    case BLE_F_U16BE:
        return d[1] | d[0] << 8;
    case BLE_F_I16LE:
        return (int16_t)(uint16_t)(d[0] | d[1] << 8);
    case BLE_F_I16BE:
        return (int16_t)(uint16_t)(d[1] | d[0] << 8);
    case BLE_F_U24LE:
        return d[0] | d[1] << 8 | (int64_t)d[2] << 16;
    case BLE_F_U24BE:
        return d[2] | d[1] << 8 | (int64_t)d[0] << 16;
    case BLE_F_U32LE:
        return (int64_t)((uint32_t)d[0] | (uint32_t)d[1] << 8 | (uint32_t)d[2] << 16 |
                         (uint32_t)d[3] << 24);
    case BLE_F_U32BE:
        return (int64_t)((uint32_t)d[3] | (uint32_t)d[2] << 8 | (uint32_t)d[1] << 16 |
                         (uint32_t)d[0] << 24);
    case BLE_F_I32LE:
        return (int32_t)((uint32_t)d[0] | (uint32_t)d[1] << 8 | (uint32_t)d[2] << 16 |
                         (uint32_t)d[3] << 24);
    case BLE_F_I32BE:
        return (int32_t)((uint32_t)d[3] | (uint32_t)d[2] << 8 | (uint32_t)d[1] << 16 |
                         (uint32_t)d[0] << 24);
    default:
        return 0;
    }
}

/* The payload after what p matches in one AD structure, or NULL. */
static const uint8_t *match_ad(const struct ble_profile *p, uint8_t type, const uint8_t *d,
                               size_t n, size_t *plen)
{
    switch (p->match) {
    case BLE_MATCH_COMPANY:
        if (type != 0xFF || n < 2 || (d[0] | d[1] << 8) != p->company_id)
            return NULL;
        *plen = n - 2;
        return d + 2;
    case BLE_MATCH_SERVICE:
        if (type != 0x16 || n < 2 || (d[0] | d[1] << 8) != p->service_uuid)
            return NULL;
        *plen = n - 2;
        return d + 2;
    case BLE_MATCH_PREFIX:
        if (type != p->ad_type || n < p->prefix_len ||
            memcmp(d, p->prefix_bytes, p->prefix_len) != 0)
            return NULL;
        *plen = n - p->prefix_len;
        return d + p->prefix_len;
    default:
        return NULL;
    }
}

static int decode_fields(const struct ble_profile *p, const uint8_t *d, size_t n,
                         struct ble_reading *out)
{
    const struct ble_field *fs = p->fields.items;
    for (size_t i = 0; i < p->fields.n; i++) {
        const struct ble_field *f = &fs[i];
        int64_t raw = read_raw(d + f->offset, f->type);
        double v;
        if (f->mask) {
            bool set = ((uint64_t)raw & (uint64_t)f->mask) != 0;
            v = (set != f->invert) ? 1.0 : 0.0;
        } else {
            v = (double)raw * f->scale + f->add;
        }
        ble_reading_add(out, f->metric, v, f->latch);
    }
    (void)n;
    return 0;
}

int ble_decode(const struct ble_profile *p, const uint8_t *adv, size_t len, struct ble_reading *out,
               const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    memset(out, 0, sizeof *out);
    *why = "no matching AD structure";
    size_t pos = 0;
    uint8_t type;
    const uint8_t *d;
    size_t n;
    int rc = CH_ENOTFOUND;
    int r;
    while ((r = ble_ad_next(adv, len, &pos, &type, &d, &n)) == 1) {
        int got = CH_ENOTFOUND;
        const char *w = NULL;
        switch (p->match) {
        case BLE_MATCH_IBEACON:
            got = type == 0xFF ? ble_decode_ibeacon(d, n, out, &w) : CH_ENOTFOUND;
            break;
        case BLE_MATCH_EDDYSTONE_TLM:
            got = type == 0x16 ? ble_decode_eddystone_tlm(d, n, out, &w) : CH_ENOTFOUND;
            break;
        case BLE_MATCH_BTHOME:
            got = type == 0x16 ? ble_decode_bthome(d, n, out, &w) : CH_ENOTFOUND;
            break;
        default: {
            size_t plen;
            const uint8_t *pl = match_ad(p, type, d, n, &plen);
            if (!pl)
                break;
            if (plen < p->need_len) {
                got = CH_ENOTFOUND;
                w = "payload shorter than the profile needs";
                break;
            }
            got = decode_fields(p, pl, plen, out);
        }
        }
        if (got != CH_ENOTFOUND) {
            if (got != 0) {
                memset(out, 0, sizeof *out);
                *why = w ? w : "malformed";
            }
            return got;
        }
        if (w)
            *why = w;
    }
    if (r < 0) {
        memset(out, 0, sizeof *out);
        *why = "AD structure overruns the advertisement";
        return CH_EINVAL;
    }
    return rc;
}
