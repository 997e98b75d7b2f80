/* Ingics iGS gateways: text lines, several per message. */
#include "ble_rx.h"
#include "err.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { F_KIND, F_MAC, F_GW, F_RSSI, F_ADV, F_TIME, F_MAX };

/* Parses a decimal integer that fills the whole of s. */
static bool whole_int(const char *s, long long *out)
{
    if (!*s)
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* One line, NUL-terminated and writable (split in place). Returns true and
 * fills a, or counts the rejection. */
static bool parse_line(char *line, const char *topic, long entry, int64_t now_ms,
                       struct ble_rx_stats *stats, struct ble_adv *a)
{
    char *f[F_MAX];
    int nf = 0;
    char *p = line;
    for (;;) {
        if (nf == F_MAX) {
            ble_rx_reject(stats, BLE_REJ_LINE, topic, entry, "more than 6 fields");
            return false;
        }
        f[nf++] = p;
        char *comma = strchr(p, ',');
        if (!comma)
            break;
        *comma = '\0';
        p = comma + 1;
    }
    if (strcmp(f[F_KIND], "$GPRP") != 0 && strcmp(f[F_KIND], "$RSPR") != 0) {
        ble_rx_reject(stats, BLE_REJ_LINE, topic, entry, "not a $GPRP or $RSPR line");
        return false;
    }
    if (nf < F_TIME) {
        ble_rx_reject(stats, BLE_REJ_LINE, topic, entry, "fewer than 5 fields");
        return false;
    }
    if (!ble_mac_parse(f[F_MAC], strlen(f[F_MAC]), a->mac)) {
        ble_rx_reject(stats, BLE_REJ_MAC, topic, entry, "beacon MAC");
        return false;
    }
    uint8_t gw[6];
    if (!ble_mac_parse(f[F_GW], strlen(f[F_GW]), gw)) {
        ble_rx_reject(stats, BLE_REJ_MAC, topic, entry, "gateway MAC");
        return false;
    }
    ble_mac_format(gw, a->receiver);
    long long v;
    if (!whole_int(f[F_RSSI], &v) || v < BLE_RSSI_MIN || v > BLE_RSSI_MAX) {
        ble_rx_reject(stats, BLE_REJ_RSSI, topic, entry, "RSSI not an integer in [-127, 0]");
        return false;
    }
    a->rssi = (int8_t)v;
    size_t hl = strlen(f[F_ADV]);
    long n = ble_hex_decode(f[F_ADV], hl, a->data, sizeof a->data);
    if (n < 0) {
        ble_rx_reject(stats, hl / 2 > sizeof a->data ? BLE_REJ_SIZE : BLE_REJ_HEX, topic, entry,
                      "advertisement");
        return false;
    }
    a->len = (size_t)n;
    a->ts_ms = now_ms;
    if (nf > F_TIME) {
        /* Unix seconds; some firmware sends milliseconds. */
        if (!whole_int(f[F_TIME], &v) || v < 0 || v > 100000000000000LL) {
            ble_rx_reject(stats, BLE_REJ_TIME, topic, entry, "timestamp");
            return false;
        }
        a->ts_ms = v < 100000000000LL ? (int64_t)v * 1000 : (int64_t)v;
    }
    return true;
}

int ble_rx_ingics(const char *topic, const void *payload, size_t len, int64_t now_ms,
                  struct ble_rx_stats *stats, ble_adv_fn fn, void *arg)
{
    if (stats)
        stats->messages++;
    if (len > BLE_RX_MAX_MSG) {
        ble_rx_reject(stats, BLE_REJ_SIZE, topic, -1, "message larger than 64 KiB");
        return CH_EINVAL;
    }
    const char *s = payload;
    size_t pos = 0;
    long entry = 0;
    int delivered = 0;
    while (pos < len) {
        const char *nl = memchr(s + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - s) : len;
        size_t n = end - pos;
        if (n > 0 && s[pos + n - 1] == '\r')
            n--;
        if (n > 0) {
            char line[BLE_RX_MAX_LINE];
            if (n >= sizeof line) {
                ble_rx_reject(stats, BLE_REJ_SIZE, topic, entry, "line longer than 255");
            } else if (memchr(s + pos, '\0', n)) {
                ble_rx_reject(stats, BLE_REJ_LINE, topic, entry, "NUL byte in the line");
            } else {
                memcpy(line, s + pos, n);
                line[n] = '\0';
                struct ble_adv a = {0};
                if (parse_line(line, topic, entry, now_ms, stats, &a)) {
                    if (stats)
                        stats->advs++;
                    fn(arg, &a);
                    delivered++;
                }
            }
            entry++;
        }
        pos = end + 1;
    }
    return delivered;
}

int ble_rx_parse(enum ble_rx_format format, const char *topic, const void *payload, size_t len,
                 int64_t now_ms, struct ble_rx_stats *stats, ble_adv_fn fn, void *arg)
{
    switch (format) {
    case BLE_RX_OMG:
        return ble_rx_omg(topic, payload, len, now_ms, stats, fn, arg);
    case BLE_RX_MINEW:
        return ble_rx_minew(topic, payload, len, now_ms, stats, fn, arg);
    case BLE_RX_INGICS:
        return ble_rx_ingics(topic, payload, len, now_ms, stats, fn, arg);
    default:
        return CH_EINVAL;
    }
}

static const char *const format_names[BLE_RX_FORMATS] = {"omg", "minew", "ingics"};

int ble_rx_format_parse(const char *name, enum ble_rx_format *out)
{
    for (int i = 0; i < BLE_RX_FORMATS; i++)
        if (name && strcmp(name, format_names[i]) == 0) {
            *out = (enum ble_rx_format)i;
            return 0;
        }
    return CH_EINVAL;
}

const char *ble_rx_format_name(enum ble_rx_format format)
{
    return (unsigned)format < BLE_RX_FORMATS ? format_names[format] : "?";
}
