/* BLE pipeline benchmark: receiver adapter + decoder + dedup + location
 * (+ the driver's poll) for a floor of 40 residents and 12 receivers, each
 * wearable advertising once a second and heard by 4 receivers. Receivers
 * 0-3 speak OpenMQTTGateway (one message per copy), 4-7 Minew JSON-LONG and
 * 8-11 Ingics (one message per receiver per second, batching what each
 * heard). Prints the CPU share of the real floor load and the maximum rate
 * of one core; never fails on a number. Usage: bench_ble [SECONDS] [RESIDENTS]. */
#include "bench_util.h"
#include "ble_table.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RECEIVERS 12
#define HEARD_BY  4

struct msg {
    enum ble_rx_format fmt;
    char topic[64];
    char *payload;
    size_t len, cap;
    int64_t t_ms;
};

static struct msg *msgs;
static size_t nmsg, capmsg;

static struct msg *new_msg(enum ble_rx_format f, const char *topic, int64_t t)
{
    if (nmsg == capmsg) {
        capmsg = capmsg ? capmsg * 2 : 1024;
        msgs = ch_xrealloc(msgs, capmsg * sizeof *msgs);
    }
    struct msg *m = &msgs[nmsg++];
    m->fmt = f;
    snprintf(m->topic, sizeof m->topic, "%s", topic);
    m->cap = 256;
    m->payload = ch_xmalloc(m->cap);
    m->len = 0;
    m->t_ms = t;
    return m;
}

static void append(struct msg *m, const char *s)
{
    size_t n = strlen(s);
    while (m->len + n > m->cap) {
        m->cap *= 2;
        m->payload = ch_xrealloc(m->payload, m->cap);
    }
    memcpy(m->payload + m->len, s, n);
    m->len += n;
}

static const char *rx_name(int r, char *buf)
{
    /* OpenMQTTGateway receivers are named in their topic, the others by MAC */
    if (r < 4)
        sprintf(buf, "omg-%d", r);
    else
        sprintf(buf, "AC233FC000%02X", r);
    return buf;
}

/* The wearable's payload hex (manufacturer data of 0x0D0A): battery, hr, a
 * sequence number, flags. */
static void payload_hex(int w, int sec, char *out)
{
    sprintf(out, "0A0D%02X%02X%02X%02X", 60 + w % 40, 60 + (sec + w) % 30, sec & 0xFF, 4);
}

static void generate(int residents, int seconds)
{
    for (int sec = 0; sec < seconds; sec++) {
        int64_t t = 1000LL * sec;
        /* indices, not pointers: msgs grows by realloc */
        long batch[RECEIVERS];
        for (int r = 0; r < RECEIVERS; r++)
            batch[r] = -1;
        for (int w = 0; w < residents; w++) {
            char hex[32], mac[16], rxb[32];
            payload_hex(w, sec, hex);
            sprintf(mac, "C0FFEE00%04X", w);
            for (int k = 0; k < HEARD_BY; k++) {
                int r = (w + 3 * k + sec / 20) % RECEIVERS; /* residents move now and then */
                int rssi = -50 - 8 * k - (w + sec) % 5;
                char line[256];
                if (r < 4) {
                    char topic[64];
                    sprintf(topic, "home/%s/BTtoMQTT/%s", rx_name(r, rxb), mac);
                    struct msg *m = new_msg(BLE_RX_OMG, topic, t);
                    sprintf(line, "{\"id\":\"%s\",\"rssi\":%d,\"manufacturerdata\":\"%s\"}", mac,
                            rssi, hex);
                    append(m, line);
                } else if (r < 8) {
                    if (batch[r] < 0) {
                        char topic[64];
                        sprintf(topic, "/gw/%s/status", rx_name(r, rxb));
                        new_msg(BLE_RX_MINEW, topic, t);
                        batch[r] = (long)nmsg - 1;
                        sprintf(line, "[{\"type\":\"Gateway\",\"mac\":\"%s\"}", rx_name(r, rxb));
                        append(&msgs[batch[r]], line);
                    }
                    sprintf(line,
                            ",{\"timestamp\":\"2024-05-01T10:00:%02d.000Z\",\"type\":\"Unknown\","
                            "\"mac\":\"%s\",\"bleName\":\"\",\"rssi\":%d,\"rawData\":"
                            "\"020106%02XFF%s\"}",
                            sec % 60, mac, rssi, (int)strlen(hex) / 2 + 1, hex);
                    append(&msgs[batch[r]], line);
                } else {
                    if (batch[r] < 0) {
                        new_msg(BLE_RX_INGICS, "igs/floor", t);
                        batch[r] = (long)nmsg - 1;
                    }
                    sprintf(line, "$GPRP,%s,%s,%d,020106%02XFF%s\n", mac, rx_name(r, rxb), rssi,
                            (int)strlen(hex) / 2 + 1, hex);
                    append(&msgs[batch[r]], line);
                }
            }
        }
        for (int r = 4; r < 8; r++)
            if (batch[r] >= 0)
                append(&msgs[batch[r]], "]");
    }
}

int main(int argc, char **argv)
{
    int seconds = argc > 1 ? atoi(argv[1]) : 600;
    int residents = argc > 2 ? atoi(argv[2]) : 40;
    if (seconds < 1 || residents < 1 || residents > 4000)
        return 2;

    static struct ble_field fields[] = {
        {.metric = "battery", .offset = 0, .type = BLE_F_U8, .scale = 1},
        {.metric = "hr", .offset = 1, .type = BLE_F_U8, .scale = 1},
        {.metric = "sos", .offset = 3, .type = BLE_F_U8, .mask = 1, .latch = true},
        {.metric = "worn", .offset = 3, .type = BLE_F_U8, .mask = 4},
    };
    struct ble_profile band = {
        .match = BLE_MATCH_COMPANY, .company_id = 0x0D0A, .fields = {fields, 4}};
    char err[160];
    if (ble_profile_prepare(&band, err, sizeof err, NULL) != 0)
        return 1;
    /* 8 rooms of one receiver, a corridor of three, an exit */
    char names[RECEIVERS][32];
    char *rxp[RECEIVERS];
    for (int r = 0; r < RECEIVERS; r++) {
        rx_name(r, names[r]);
        rxp[r] = names[r];
    }
    struct ble_zone_cfg zc[10];
    char zid[10][16];
    for (int i = 0; i < 10; i++) {
        sprintf(zid[i], "zone-%d", i);
        zc[i] = (struct ble_zone_cfg){.id = zid[i]};
    }
    for (int i = 0; i < 8; i++)
        zc[i].receivers = (struct cfg_list){&rxp[i], 1};
    zc[8].receivers = (struct cfg_list){&rxp[8], 3};
    zc[9].receivers = (struct cfg_list){&rxp[11], 1};
    zc[9].exit = true;
    struct ble_location_cfg lc = {
        .window_ms = 8000, .margin_db = 6, .dwell_ms = 5000, .zones = {zc, 10}};
    struct ble_zones *z;
    if (ble_zones_new(&lc, &z, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    struct ble_table_opts o = {.battery_low = 20};
    struct ble_table *t = ble_table_new(&o, z);
    char ids[4000][16];
    for (int w = 0; w < residents; w++) {
        uint8_t mac[6] = {0xC0, 0xFF, 0xEE, 0x00, (uint8_t)(w >> 8), (uint8_t)w};
        sprintf(ids[w], "wb-%d", w);
        ble_table_add(t, ids[w], mac, &band);
    }

    double g0 = now_s();
    generate(residents, seconds);
    double g1 = now_s();

    /* Run: every message in arrival order, and every wearable polled once a
     * simulated second, as the driver would. */
    struct ble_state s;
    int64_t next_poll = 1000;
    double t0 = now_s();
    for (size_t i = 0; i < nmsg; i++) {
        if (msgs[i].t_ms >= next_poll) {
            for (int w = 0; w < residents; w++)
                ble_table_poll(t, ids[w], next_poll, &s);
            next_poll += 1000;
        }
        ble_table_ingest(t, msgs[i].fmt, msgs[i].topic, msgs[i].payload, msgs[i].len, msgs[i].t_ms);
    }
    double t1 = now_s();

    struct ble_table_stats st;
    ble_table_stats(t, &st);
    double el = t1 - t0;
    double copies = (double)st.rx.advs, advs = (double)st.readings;
    double sim_s = seconds;
    printf(
        "bench_ble: %d residents, %d receivers, %d simulated s, each advertisement heard by %d\n",
        residents, RECEIVERS, seconds, HEARD_BY);
    printf("  messages                 %zu (generated in %.2f s)\n", nmsg, g1 - g0);
    printf("  receiver copies          %.0f (rejected %llu, duplicates %llu)\n", copies,
           (unsigned long long)ble_rx_rejected_total(&st.rx), (unsigned long long)st.duplicates);
    printf("  readings (advertisements) %.0f\n", advs);
    printf("  wall time                %.3f s\n", el);
    printf("  floor load               %.0f advertisements/s = %.0f copies/s\n", advs / sim_s,
           copies / sim_s);
    printf("  CPU for the floor load   %.4f %% of one core\n", 100.0 * el / sim_s);
    printf("  maximum                  %.0f advertisements/s (%.0f copies/s, %.0f msgs/s) on one "
           "core\n",
           advs / el, copies / el, (double)nmsg / el);
    printf("  per advertisement        %.2f us (4 copies + decode + dedup + location + poll)\n",
           1e6 * el / advs);
    if (ble_table_poll(t, ids[0], next_poll, &s) == 0)
        printf("  wb-0: zone %s, in_range %d, %zu metrics\n", s.zone_id ? s.zone_id : "-",
               s.in_range, s.n);
    for (size_t i = 0; i < nmsg; i++)
        free(msgs[i].payload);
    free(msgs);
    ble_table_free(t);
    ble_zones_free(z);
    return 0;
}
