/* One BLE advertisement as a receiver forwarded it, and the helpers every
 * receiver adapter and the decoder share: hex and MAC parsing, walking the AD
 * structures of an advertisement, and the reasons (with counters) for which
 * receiver input is rejected.
 *
 * Everything here is pure: no I/O, no allocation, no global state. */
#ifndef CAREHUB_BLE_ADV_H
#define CAREHUB_BLE_ADV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Legacy advertising data is at most 31 bytes; receivers that merge the scan
 * response send up to 62. Anything longer is rejected as oversized rather
 * than cut, because a cut AD structure would decode as garbage. */
#define BLE_ADV_MAX      62
#define BLE_RECEIVER_MAX 48 /* receiver id incl. NUL: a gateway name or 12 hex digits */
#define BLE_RSSI_MIN     (-127)
#define BLE_RSSI_MAX     0

struct ble_adv {
    char receiver[BLE_RECEIVER_MAX]; /* who heard it (normalised, see ble_receiver_norm) */
    uint8_t mac[6];                  /* transmitter, most significant byte first */
    int8_t rssi;                     /* dBm at the receiver */
    uint8_t data[BLE_ADV_MAX];       /* AD structures: [len][type][len-1 bytes]... */
    size_t len;                      /* 0: the receiver gave no payload (location only) */
    int64_t ts_ms;                   /* receiver's time if it sent one, else arrival time */
};

/* Why a receiver message or one entry of it was rejected. */
enum ble_reject {
    BLE_REJ_JSON = 0, /* not JSON, or not the JSON shape of the format */
    BLE_REJ_FIELD,    /* a required field missing or of the wrong type */
    BLE_REJ_HEX,      /* payload hex: odd length or not hex digits */
    BLE_REJ_MAC,      /* transmitter or receiver MAC malformed */
    BLE_REJ_RSSI,     /* RSSI not an integer in [BLE_RSSI_MIN, BLE_RSSI_MAX] */
    BLE_REJ_SIZE,     /* message, line or payload larger than the bounds */
    BLE_REJ_TOPIC,    /* the topic does not name the receiver */
    BLE_REJ_LINE,     /* text line of the wrong shape */
    BLE_REJ_TIME,     /* timestamp unreadable */
    BLE_REJ_COUNT
};

/* Counters kept by the adapters (the caller owns the struct and may zero it). */
struct ble_rx_stats {
    uint64_t messages;                /* messages handed to an adapter */
    uint64_t advs;                    /* advertisements accepted */
    uint64_t rejected[BLE_REJ_COUNT]; /* entries (or whole messages) rejected, per reason */
    char last_error[160];             /* the latest rejection, naming topic and entry */
};

/* A static name for a reason ("bad hex", ...); never NULL. */
const char *ble_reject_str(enum ble_reject r);

/* Total of stats->rejected[]. */
uint64_t ble_rx_rejected_total(const struct ble_rx_stats *stats);

/* Counts a rejection and records it in stats->last_error as
 * "<topic> entry <n>: <reason>: <detail>" (entry < 0: the whole message). */
void ble_rx_reject(struct ble_rx_stats *stats, enum ble_reject r, const char *topic, long entry,
                   const char *detail);

/* Decodes hex (upper or lower case, no separators) of exactly n chars into
 * out (capacity cap). Returns the byte count, or -1 if n is odd, a char is
 * not a hex digit, or the bytes would not fit in cap. */
long ble_hex_decode(const char *hex, size_t n, uint8_t *out, size_t cap);

/* Parses a MAC written as 12 hex digits, optionally with ':' or '-' between
 * every pair ("AC:23:3F:A0:01:02", "ac233fa00102"). Exactly n chars are
 * read (the string need not be terminated). Returns true on success. */
bool ble_mac_parse(const char *s, size_t n, uint8_t mac[6]);

/* Formats a MAC as "AC233FA00102" (13 bytes with NUL). */
void ble_mac_format(const uint8_t mac[6], char out[13]);

/* Normalises a receiver id of n chars into out: a MAC in any accepted
 * spelling becomes 12 upper-case hex digits (so a zone table written with
 * colons matches a gateway that sends none); any other id must be 1..47
 * chars of [A-Za-z0-9_.:-] and is copied as is. Returns false if invalid. */
bool ble_receiver_norm(const char *s, size_t n, char out[BLE_RECEIVER_MAX]);

/* Walks AD structures. Start with *pos = 0; each call returns 1 and sets
 * *type, *data, *dlen for the next structure, 0 at the end (data exhausted
 * or a zero length byte, which is padding), or -1 if a structure claims
 * more bytes than remain (the caller then stops: the rest is not trusted). */
int ble_ad_next(const uint8_t *adv, size_t len, size_t *pos, uint8_t *type, const uint8_t **data,
                size_t *dlen);

/* Appends one AD structure [dlen+1][type][data] to buf (length *len,
 * capacity cap). Returns false, leaving buf untouched, if it does not fit. */
bool ble_ad_append(uint8_t *buf, size_t *len, size_t cap, uint8_t type, const uint8_t *data,
                   size_t dlen);

/* Parses an ISO 8601 UTC time "2024-05-01T10:00:00[.123]Z" (or +00:00) into
 * ms since the epoch. Returns false if it is not one. */
bool ble_parse_iso8601(const char *s, int64_t *out_ms);

#endif
