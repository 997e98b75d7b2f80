#include "ble_dedup.h"
#include "util.h"

#include <stdlib.h>

#define PROBE 8

struct slot {
    uint64_t key; /* 0: empty */
    int64_t first_ms;
};

struct ble_dedup {
    size_t mask;
    int64_t window_ms;
    struct slot *slots;
};

struct ble_dedup *ble_dedup_new(size_t slots, int64_t window_ms)
{
    size_t n = 64;
    while (n < slots && n < 65536)
        n <<= 1;
    struct ble_dedup *d = ch_xcalloc(1, sizeof *d);
    d->mask = n - 1;
    d->window_ms = window_ms;
    d->slots = ch_xcalloc(n, sizeof *d->slots);
    return d;
}

void ble_dedup_free(struct ble_dedup *d)
{
    if (!d)
        return;
    free(d->slots);
    free(d);
}

bool ble_dedup_seen(struct ble_dedup *d, const uint8_t mac[6], const uint8_t *data, size_t len,
                    int64_t now_ms)
{
    uint8_t l = (uint8_t)len;
    uint64_t key = ch_fnv1a(CH_FNV1A_INIT, mac, 6);
    key = ch_fnv1a(key, &l, 1);
    key = ch_fnv1a(key, data, len);
    if (key == 0)
        key = 1;
    size_t base = (size_t)(key ^ (key >> 32)) & d->mask;
    struct slot *victim = NULL;
    for (size_t i = 0; i < PROBE; i++) {
        struct slot *s = &d->slots[(base + i) & d->mask];
        if (s->key == key) {
            if (now_ms - s->first_ms < d->window_ms)
                return true;
            s->first_ms = now_ms; /* the same payload again, later: a new reading */
            return false;
        }
        /* Replace an empty slot if there is one, else the oldest. */
        if (s->key == 0) {
            if (!victim || victim->key != 0)
                victim = s;
        } else if (!victim || (victim->key != 0 && s->first_ms < victim->first_ms)) {
            victim = s;
        }
    }
    victim->key = key;
    victim->first_ms = now_ms;
    return false;
}
