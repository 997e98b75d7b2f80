/* Advertisement decoding driven by wearable profiles.
 *
 * A profile says how to recognise a wearable's advertisement and where its
 * values sit. It matches one AD structure of the advertisement:
 *   company   manufacturer specific data (AD 0xFF) of company_id
 *   service   service data (AD 0x16) of the 16-bit service_uuid
 *   prefix    an AD structure of ad_type (default 0xFF) starting with prefix
 * and then reads fields at byte offsets counted from the first byte AFTER
 * what matched (after the 2-byte company id, the 2-byte UUID, the prefix).
 * Or it names a standard format decoded out of the box:
 *   ibeacon        major, minor, tx_power; the UUID as reading.ident
 *   eddystone_tlm  battery_mv, temperature (8.8 fixed point), adv_count, uptime_s
 *   bthome         BTHome v2 objects (battery, temperature, humidity, button, ...)
 *
 * A field is a value (raw * scale + add) or, with mask, a flag: 1 when any
 * bit of mask is set in the raw value (0 with invert), e.g. SOS pressed,
 * fall detected, worn, charging. latch: the metric is an event that the
 * state table holds at 1 until it has been read (ble_table.h).
 *
 * The profile as YAML (the `ble:` section of a device profile; the table is
 * ble_profile_keys, for cfg.h):
 *
 *   ble:
 *     match: company            # company | service | prefix | ibeacon | eddystone_tlm | bthome
 *     company_id: 0x0D0A        # match: company (0..0xFFFF)
 *     service_uuid: 0xFEE7      # match: service (16-bit)
 *     prefix: "0D0A01"          # match: prefix, hex, up to 29 bytes
 *     ad_type: 0xFF             # match: prefix, the AD type searched
 *     min_len: 8                # payload bytes needed (default: what the fields need)
 *     fields:
 *       - {metric: battery, offset: 0, type: u8}
 *       - {metric: hr,      offset: 1, type: u8}
 *       - {metric: steps,   offset: 2, type: u32le}
 *       - {metric: sos,     offset: 6, type: u8, mask: 0x01, latch: true}
 *       - {metric: fall,    offset: 6, type: u8, mask: 0x02, latch: true}
 *       - {metric: worn,    offset: 6, type: u8, mask: 0x04}
 *       - {metric: charging, offset: 6, type: u8, mask: 0x08}
 *       - {metric: skin_temp, offset: 7, type: i16le, scale: 0.01, add: 0}
 *
 * Field types: u8 i8 u16le u16be i16le i16be u24le u24be u32le u32be i32le i32be.
 * A payload shorter than min_len means "another frame of the same vendor":
 * no match, never a partial reading. */
#ifndef CAREHUB_BLE_DECODE_H
#define CAREHUB_BLE_DECODE_H

#include "ble_adv.h"
#include "cfg.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BLE_MAX_FIELDS  24
#define BLE_MAX_METRICS 32
#define BLE_METRIC_NAME 32 /* incl. NUL */
#define BLE_PREFIX_MAX  29 /* the data of one legacy AD structure */

enum ble_match {
    BLE_MATCH_COMPANY = 0,
    BLE_MATCH_SERVICE,
    BLE_MATCH_PREFIX,
    BLE_MATCH_IBEACON,
    BLE_MATCH_EDDYSTONE_TLM,
    BLE_MATCH_BTHOME,
};

enum ble_ftype {
    BLE_F_U8 = 0,
    BLE_F_I8,
    BLE_F_U16LE,
    BLE_F_U16BE,
    BLE_F_I16LE,
    BLE_F_I16BE,
    BLE_F_U24LE,
    BLE_F_U24BE,
    BLE_F_U32LE,
    BLE_F_U32BE,
    BLE_F_I32LE,
    BLE_F_I32BE,
};

struct ble_field {
    char *metric;
    int64_t offset;
    int type;     /* enum ble_ftype */
    int64_t mask; /* 0: a value; else a flag */
    bool invert;  /* flag is 1 when the masked bits are all clear */
    double scale;
    double add;
    bool latch;
    struct fy_node *node; /* for semantic errors (cfg_report) */
};

struct ble_profile {
    int match; /* enum ble_match */
    int64_t company_id;
    int64_t service_uuid;
    char *prefix;
    int64_t ad_type;
    int64_t min_len;
    struct cfg_list fields; /* struct ble_field */
    /* Filled by ble_profile_prepare(): */
    uint8_t prefix_bytes[BLE_PREFIX_MAX];
    size_t prefix_len;
    size_t need_len; /* max(min_len, end of the last field) */
};

/* The cfg.h tables: a profile (a CFG_MAP's .sub) and one of its fields. */
extern const struct cfg_key ble_profile_keys[];
extern const struct cfg_key ble_field_keys[];

/* Checks what the table cannot (the key the match needs is there, fields fit
 * an advertisement, masks fit their type, names fit BLE_METRIC_NAME) and
 * precomputes the prefix bytes. Returns 0, or CH_ECONFIG with a message in
 * err naming the key or field; *bad_field (if not NULL) is then the index of
 * the field at fault or -1. */
int ble_profile_prepare(struct ble_profile *p, char *err, size_t errlen, long *bad_field);

/* A built-in profile for a standard format (match ibeacon, eddystone_tlm,
 * bthome); static, never freed. NULL for other values. */
const struct ble_profile *ble_profile_builtin(enum ble_match m);

struct ble_metric {
    char name[BLE_METRIC_NAME];
    double value;
    bool latch;
};

struct ble_reading {
    size_t n;
    struct ble_metric m[BLE_MAX_METRICS];
    char ident[40]; /* iBeacon UUID ("E2C56DB5-DFFB-..."), else "" */
    bool truncated; /* BTHome: an unknown object id stopped decoding; what came before is kept */
};

/* Decodes advertisement adv (AD structures, len bytes) with profile p
 * (prepared). Returns 0 with out filled; CH_ENOTFOUND if the advertisement
 * is not one the profile describes; CH_EINVAL if it is malformed (an AD
 * structure overruns, a BTHome object is cut short); CH_EPROTO if it is
 * well-formed but unsupported (encrypted BTHome or Eddystone TLM, another
 * BTHome version). *why (if not NULL) gets a static reason on error. Pure;
 * borrows everything. */
int ble_decode(const struct ble_profile *p, const uint8_t *adv, size_t len, struct ble_reading *out,
               const char **why);

/* The standard formats, given the data of the matching AD structure (after
 * the type byte). Same returns as ble_decode. */
int ble_decode_ibeacon(const uint8_t *d, size_t n, struct ble_reading *out, const char **why);
int ble_decode_eddystone_tlm(const uint8_t *d, size_t n, struct ble_reading *out, const char **why);
int ble_decode_bthome(const uint8_t *d, size_t n, struct ble_reading *out, const char **why);

/* Adds a metric to out (false if full or the name does not fit). */
bool ble_reading_add(struct ble_reading *out, const char *name, double value, bool latch);

/* The value of metric name in r, or NULL. */
const struct ble_metric *ble_reading_find(const struct ble_reading *r, const char *name);

#endif
