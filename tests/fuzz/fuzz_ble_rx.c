/* A BLE receiver adapter on arbitrary bytes; built once per format
 * (RX_FORMAT: BLE_RX_OMG, BLE_RX_MINEW, BLE_RX_INGICS). Input: the topic,
 * a newline, then the payload (no newline in the first 128 bytes: the whole
 * input is the payload under a default topic). Never a crash or a leak;
 * every record delivered is within its bounds; every entry is either
 * delivered or counted as rejected. */
#include "ble_rx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, FUZZ_NAME ":%d: %s\n", __LINE__, #c);                                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void check_adv(void *arg, const struct ble_adv *a)
{
    (*(int *)arg)++;
    CHECK(a->len <= BLE_ADV_MAX);
    CHECK(a->rssi >= BLE_RSSI_MIN && a->rssi <= BLE_RSSI_MAX);
    size_t n = strnlen(a->receiver, sizeof a->receiver);
    CHECK(n > 0 && n < sizeof a->receiver);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char topic[129] = "home/gw-1/BTtoMQTT/AC233FA00102";
    const uint8_t *nl = memchr(data, '\n', size < 128 ? size : 128);
    if (nl) {
        size_t tl = (size_t)(nl - data);
        memcpy(topic, data, tl);
        topic[tl] = '\0';
        size -= tl + 1;
        data = nl + 1;
    }
    /* a copy of exactly size bytes, so ASan sees any read past the end */
    uint8_t *p = malloc(size ? size : 1);
    if (size)
        memcpy(p, data, size);
    struct ble_rx_stats st = {0};
    int delivered = 0;
    int rc = ble_rx_parse(RX_FORMAT, topic, p, size, 1000, &st, check_adv, &delivered);
    CHECK(rc < 0 ? delivered == 0 : rc == delivered);
    CHECK(st.advs == (uint64_t)delivered);
    CHECK(rc >= 0 || ble_rx_rejected_total(&st) == 1);
    CHECK(strlen(st.last_error) < sizeof st.last_error);
    free(p);
    return 0;
}
