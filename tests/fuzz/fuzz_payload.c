/* MQTT payloads and topics: the decoders must never crash, and whatever they
 * accept must encode again and decode to the same thing. First byte picks
 * the parser. */
#include "codec.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same_telemetry(const struct ch_telemetry *a, const struct ch_telemetry *b)
{
    if (a->seq != b->seq || a->n_readings != b->n_readings || strcmp(a->site, b->site) != 0)
        abort();
    for (size_t i = 0; i < a->n_readings; i++) {
        const struct ch_reading *x = &a->readings[i], *y = &b->readings[i];
        if (x->n_metrics != y->n_metrics || x->ts_ms != y->ts_ms ||
            strcmp(x->device, y->device) != 0)
            abort();
        for (size_t m = 0; m < x->n_metrics; m++)
            /* values travel with 15 significant digits (23.4 stays 23.4) */
            if (fabs(x->metrics[m].value - y->metrics[m].value) >
                    1e-14 * fabs(x->metrics[m].value) ||
                strcmp(x->metrics[m].name, y->metrics[m].name) != 0)
                abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;
    char err[256];
    switch (data[0] % 3) {
    case 0: {
        struct ch_telemetry t;
        if (ch_telemetry_decode(buf, len, &t, err, sizeof err) != 0)
            return 0;
        char *again = ch_telemetry_encode(&t);
        if (!again)
            abort(); /* accepted input must be encodable */
        struct ch_telemetry t2;
        if (ch_telemetry_decode(again, strlen(again), &t2, err, sizeof err) != 0)
            abort();
        same_telemetry(&t, &t2);
        ch_telemetry_free(&t2);
        free(again);
        ch_telemetry_free(&t);
        return 0;
    }
    case 1: {
        struct ch_status s;
        if (ch_status_decode(buf, len, &s, err, sizeof err) != 0)
            return 0;
        char *again = ch_status_encode(&s);
        if (!again)
            abort();
        free(again);
        ch_status_free(&s);
        return 0;
    }
    default: {
        char topic[512];
        size_t n = len < sizeof topic - 1 ? len : sizeof topic - 1;
        memcpy(topic, buf, n);
        topic[n] = '\0';
        char site[CH_ID_MAX], gw[CH_ID_MAX];
        const char *kind;
        if (ch_topic_parse(topic, site, gw, &kind)) {
            char again[512];
            if (!ch_topic(again, sizeof again, site, gw, kind) || strcmp(again, topic) != 0)
                abort();
        }
        return 0;
    }
    }
}
