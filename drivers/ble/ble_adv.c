#include "ble_adv.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *const reject_names[BLE_REJ_COUNT] = {
    [BLE_REJ_JSON] = "bad JSON",
    [BLE_REJ_FIELD] = "bad field",
    [BLE_REJ_HEX] = "bad hex",
    [BLE_REJ_MAC] = "bad MAC",
    [BLE_REJ_RSSI] = "RSSI out of range",
    [BLE_REJ_SIZE] = "oversized",
    [BLE_REJ_TOPIC] = "bad topic",
    [BLE_REJ_LINE] = "bad line",
    [BLE_REJ_TIME] = "bad timestamp",
};

const char *ble_reject_str(enum ble_reject r)
{
    return (unsigned)r < BLE_REJ_COUNT ? reject_names[r] : "?";
}

uint64_t ble_rx_rejected_total(const struct ble_rx_stats *stats)
{
    uint64_t n = 0;
    for (int i = 0; i < BLE_REJ_COUNT; i++)
        n += stats->rejected[i];
    return n;
}

void ble_rx_reject(struct ble_rx_stats *stats, enum ble_reject r, const char *topic, long entry,
                   const char *detail)
{
    if (!stats)
        return;
    if ((unsigned)r < BLE_REJ_COUNT)
        stats->rejected[r]++;
    /* The topic comes from the network: print at most 64 chars of it so the
     * reason always fits. */
    if (entry >= 0)
        snprintf(stats->last_error, sizeof stats->last_error, "%.64s entry %ld: %s: %s",
                 topic ? topic : "-", entry, ble_reject_str(r), detail ? detail : "");
    else
        snprintf(stats->last_error, sizeof stats->last_error, "%.64s: %s: %s", topic ? topic : "-",
                 ble_reject_str(r), detail ? detail : "");
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long ble_hex_decode(const char *hex, size_t n, uint8_t *out, size_t cap)
{
    if (n % 2 != 0 || n / 2 > cap)
        return -1;
    for (size_t i = 0; i < n; i += 2) {
        int hi = hexval(hex[i]), lo = hexval(hex[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    return (long)(n / 2);
}

bool ble_mac_parse(const char *s, size_t n, uint8_t mac[6])
{
    if (n == 12) {
        return ble_hex_decode(s, 12, mac, 6) == 6;
    }
    if (n != 17)
        return false;
    char sep = s[2];
    if (sep != ':' && sep != '-')
        return false;
    for (int i = 0; i < 6; i++) {
        const char *p = s + i * 3;
        if (i < 5 && p[2] != sep)
            return false;
        if (ble_hex_decode(p, 2, &mac[i], 1) != 1)
            return false;
    }
    return true;
}

void ble_mac_format(const uint8_t mac[6], char out[13])
{
    static const char digits[] = "0123456789ABCDEF";
    for (int i = 0; i < 6; i++) {
        out[2 * i] = digits[mac[i] >> 4];
        out[2 * i + 1] = digits[mac[i] & 15];
    }
    out[12] = '\0';
}

bool ble_receiver_norm(const char *s, size_t n, char out[BLE_RECEIVER_MAX])
{
    uint8_t mac[6];
    if (ble_mac_parse(s, n, mac)) {
        ble_mac_format(mac, out);
        return true;
    }
    if (n == 0 || n >= BLE_RECEIVER_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == ':' || c == '-';
        if (!ok)
            return false;
    }
    memcpy(out, s, n);
    out[n] = '\0';
    return true;
}

int ble_ad_next(const uint8_t *adv, size_t len, size_t *pos, uint8_t *type, const uint8_t **data,
                size_t *dlen)
{
    if (*pos >= len)
        return 0;
    size_t l = adv[*pos];
    if (l == 0)
        return 0; /* padding: some receivers send the full 31 bytes zero-filled */
    if (l > len - *pos - 1)
        return -1;
    *type = adv[*pos + 1];
    *data = adv + *pos + 2;
    *dlen = l - 1;
    *pos += l + 1;
    return 1;
}

bool ble_ad_append(uint8_t *buf, size_t *len, size_t cap, uint8_t type, const uint8_t *data,
                   size_t dlen)
{
    if (dlen > 254 || *len > cap || cap - *len < dlen + 2)
        return false;
    buf[*len] = (uint8_t)(dlen + 1);
    buf[*len + 1] = type;
    if (dlen)
        memcpy(buf + *len + 2, data, dlen);
    *len += dlen + 2;
    return true;
}

/* Reads exactly n decimal digits. */
static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

bool ble_parse_iso8601(const char *s, int64_t *out_ms)
{
    int y, mo, d, h, mi, sec;
    if (strlen(s) < 20 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) ||
        s[7] != '-' || !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != ' ') ||
        !digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &mi) || s[16] != ':' ||
        !digits(s + 17, 2, &sec))
        return false;
    if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
        sec > 60)
        return false;
    const char *p = s + 19;
    int ms = 0;
    if (*p == '.') {
        p++;
        int nd = 0;
        while (*p >= '0' && *p <= '9') {
            if (nd < 3)
                ms = ms * 10 + (*p - '0');
            nd++;
            p++;
        }
        if (nd == 0)
            return false;
        for (; nd < 3; nd++)
            ms *= 10;
    }
    if (!(strcmp(p, "Z") == 0 || strcmp(p, "+00:00") == 0))
        return false;
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = sec};
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return false;
    *out_ms = (int64_t)t * 1000 + ms;
    return true;
}
