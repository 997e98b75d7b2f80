#include "ble_zone.h"
#include "err.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ZC(m) offsetof(struct ble_zone_cfg, m)
#define LC(m) offsetof(struct ble_location_cfg, m)
/* clang-format off */
const struct cfg_key ble_zone_keys[] = {
    {.key = "id",        .type = CFG_ID,      .offset = ZC(id), .required = true},
    {.key = "name",      .type = CFG_NAME,    .offset = ZC(name)},
    {.key = "exit",      .type = CFG_BOOL,    .offset = ZC(exit), .def = "false"},
    {.key = "receivers", .type = CFG_STRLIST, .offset = ZC(receivers), .required = true},
    CFG_END,
};

const struct cfg_key ble_location_keys[] = {
    {.key = "window", .type = CFG_DURATION, .offset = LC(window_ms), .def = "8s", .min = 1000, .max = 60000},
    {.key = "margin", .type = CFG_FLOAT,    .offset = LC(margin_db), .def = "6", .min = 0, .max = 40},
    {.key = "dwell",  .type = CFG_DURATION, .offset = LC(dwell_ms), .def = "5s", .min = 0, .max = 600000},
    {.key = "zones",  .type = CFG_LIST,     .offset = LC(zones), .required = true, .sub = ble_zone_keys,
     .elem_size = sizeof(struct ble_zone_cfg), .node_offset = (long)ZC(node)},
    CFG_END,
};
/* clang-format on */

#define RX_HASH 2048 /* >= 2 x BLE_MAX_RECEIVERS: probes stay short */

struct ble_zones {
    int64_t window_ms, dwell_ms;
    double margin_db;
    size_t nzones, nrx;
    char zone_id[BLE_MAX_ZONES][65];
    bool zone_exit[BLE_MAX_ZONES];
    char rx_id[BLE_MAX_RECEIVERS][BLE_RECEIVER_MAX];
    int16_t rx_zone[BLE_MAX_RECEIVERS];
    int16_t hash[RX_HASH]; /* receiver index + 1; 0 empty */
};

static unsigned str_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h & (RX_HASH - 1);
}

int ble_zones_receiver(const struct ble_zones *z, const char *receiver)
{
    for (unsigned i = str_hash(receiver), k = 0; k < RX_HASH; i = (i + 1) & (RX_HASH - 1), k++) {
        int r = z->hash[i] - 1;
        if (r < 0)
            return -1;
        if (strcmp(z->rx_id[r], receiver) == 0)
            return r;
    }
    return -1;
}

int ble_zones_new(const struct ble_location_cfg *cfg, struct ble_zones **out, char *err,
                  size_t errlen)
{
    *out = NULL;
    if (cfg->zones.n > BLE_MAX_ZONES) {
        snprintf(err, errlen, "zones: at most %d", BLE_MAX_ZONES);
        return CH_ECONFIG;
    }
    struct ble_zones *z = ch_xcalloc(1, sizeof *z);
    z->window_ms = cfg->window_ms > 0 ? cfg->window_ms : 8000;
    z->margin_db = cfg->margin_db;
    z->dwell_ms = cfg->dwell_ms;
    const struct ble_zone_cfg *zc = cfg->zones.items;
    for (size_t i = 0; i < cfg->zones.n; i++) {
        const char *id = zc[i].id ? zc[i].id : "";
        if (!*id || strlen(id) >= sizeof z->zone_id[0]) {
            snprintf(err, errlen, "zones[%zu]: id of 1..64 chars", i);
            goto fail;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(z->zone_id[j], id) == 0) {
                snprintf(err, errlen, "zones[%zu]: zone '%.64s' given twice", i, id);
                goto fail;
            }
        strcpy(z->zone_id[i], id);
        z->zone_exit[i] = zc[i].exit;
        z->nzones++;
        char *const *rx = zc[i].receivers.items;
        for (size_t k = 0; k < zc[i].receivers.n; k++) {
            char norm[BLE_RECEIVER_MAX];
            const char *r = rx[k] ? rx[k] : "";
            if (!ble_receiver_norm(r, strlen(r), norm)) {
                snprintf(err, errlen, "zones[%zu] (%s): receiver '%.64s' is not a MAC or id", i, id,
                         r);
                goto fail;
            }
            if (ble_zones_receiver(z, norm) >= 0) {
                snprintf(err, errlen, "zones[%zu] (%s): receiver %s is in another zone", i, id,
                         norm);
                goto fail;
            }
            if (z->nrx >= BLE_MAX_RECEIVERS) {
                snprintf(err, errlen, "zones: at most %d receivers", BLE_MAX_RECEIVERS);
                goto fail;
            }
            size_t ri = z->nrx++;
            strcpy(z->rx_id[ri], norm);
            z->rx_zone[ri] = (int16_t)i;
            unsigned h = str_hash(norm);
            while (z->hash[h])
                h = (h + 1) & (RX_HASH - 1);
            z->hash[h] = (int16_t)(ri + 1);
        }
    }
    *out = z;
    return 0;
fail:
    free(z);
    return CH_ECONFIG;
}

void ble_zones_free(struct ble_zones *z)
{
    free(z);
}

int ble_zones_zone_of(const struct ble_zones *z, int r)
{
    return r >= 0 && (size_t)r < z->nrx ? z->rx_zone[r] : -1;
}

const char *ble_zones_id(const struct ble_zones *z, int i)
{
    return i >= 0 && (size_t)i < z->nzones ? z->zone_id[i] : NULL;
}

bool ble_zones_is_exit(const struct ble_zones *z, int i)
{
    return i >= 0 && (size_t)i < z->nzones && z->zone_exit[i];
}

void ble_loc_init(struct ble_loc *l)
{
    memset(l, 0, sizeof *l);
    l->zone = -1;
    l->cand = -1;
}

void ble_loc_observe(struct ble_loc *l, int r, int8_t rssi, int64_t now_ms)
{
    if (r < 0 || r >= BLE_MAX_RECEIVERS)
        return;
    l->s[l->head].ts_ms = now_ms;
    l->s[l->head].receiver = (int16_t)r;
    l->s[l->head].rssi = rssi;
    l->head = (l->head + 1) % BLE_LOC_SAMPLES;
    if (l->n < BLE_LOC_SAMPLES)
        l->n++;
}

int ble_loc_update(struct ble_loc *l, const struct ble_zones *z, int64_t now_ms, double *best_rssi)
{
    /* Mean RSSI per receiver heard within the window (at most
     * BLE_LOC_SAMPLES distinct receivers), then the best receiver per zone. */
    int16_t rx[BLE_LOC_SAMPLES];
    int sum[BLE_LOC_SAMPLES], cnt[BLE_LOC_SAMPLES];
    size_t nrx = 0;
    for (unsigned k = 0; k < l->n; k++) {
        unsigned i = (l->head + BLE_LOC_SAMPLES - 1 - k) % BLE_LOC_SAMPLES;
        if (now_ms - l->s[i].ts_ms >= z->window_ms)
            break; /* older samples are older still */
        size_t j = 0;
        while (j < nrx && rx[j] != l->s[i].receiver)
            j++;
        if (j == nrx) {
            rx[nrx] = l->s[i].receiver;
            sum[nrx] = 0;
            cnt[nrx] = 0;
            nrx++;
        }
        sum[j] += l->s[i].rssi;
        cnt[j]++;
    }
    double score[BLE_MAX_ZONES];
    for (size_t i = 0; i < z->nzones; i++)
        score[i] = -INFINITY;
    for (size_t j = 0; j < nrx; j++) {
        int zi = ble_zones_zone_of(z, rx[j]);
        double mean = (double)sum[j] / cnt[j];
        if (zi >= 0 && mean > score[zi])
            score[zi] = mean;
    }
    int best = -1;
    for (size_t i = 0; i < z->nzones; i++)
        if (score[i] > -INFINITY && (best < 0 || score[i] > score[best]))
            best = (int)i;

    if (best < 0) {
        l->cand = -1; /* nothing heard: keep the last zone */
    } else if (l->zone < 0 || (size_t)l->zone >= z->nzones) {
        l->zone = best;
        l->changed_ms = now_ms;
        l->cand = -1;
    } else if (best == l->zone) {
        l->cand = -1;
    } else if (score[best] >= score[l->zone] + z->margin_db) {
        l->zone = best; /* also when the current zone is not heard at all */
        l->changed_ms = now_ms;
        l->cand = -1;
    } else if (score[best] < score[l->zone] + z->margin_db / 2) {
        l->cand = -1; /* a lead this small is noise (one loud sample lifts a mean for a window) */
    } else if (l->cand != best) {
        l->cand = best;
        l->cand_since_ms = now_ms;
    } else if (now_ms - l->cand_since_ms >= z->dwell_ms) {
        l->zone = best;
        l->changed_ms = now_ms;
        l->cand = -1;
    }
    if (best_rssi)
        *best_rssi = l->zone >= 0 && (size_t)l->zone < z->nzones && score[l->zone] > -INFINITY
                         ? score[l->zone]
                         : 0;
    return l->zone;
}
