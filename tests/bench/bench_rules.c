/* Rule evaluation throughput: readings/s through rules_feed (with the real
 * alarm module behind it) for 50 devices under the elderly-care pack, and
 * for 50 devices under 1,000 rules. Readings stay in the normal range, as
 * they do almost always, so the figure is the cost of evaluating, not of
 * writing alarm state. The clock is simulated: every device reports once a
 * second and rules_tick/alarms_tick run once a simulated second.
 *
 *   bench_rules [SOURCE_DIR] [READINGS]
 *
 * Prints figures; never fails on a number. */
#include "bench_util.h"
#include "alarm.h"
#include "site.h"
#include "rules.h"
#include "util.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define N_DEVICES 50
#define T0_MS     1768482000000LL

struct dev_model {
    const char *profile;
    const char *metrics[8];
    double values[8];
};

static const struct dev_model models[] = {
    {"air-board",
     {"humidity", "temperature", "pm25", "co2", "tvoc", "pm10"},
     {50, 23, 20, 600, 50, 40}},
    {"co2-s8", {"meter_status", "co2"}, {0, 600}},
    {"jxct-th", {"humidity", "temperature"}, {50, 23}},
    {"bed-mb", {"in_bed", "hr", "rr", "movement", "presence"}, {1, 70, 14, 0, 1}},
    {"call-panel", {"sos", "fall", "call", "battery", "tamper"}, {0, 0, 0, 90, 0}},
};

static void sink(void *arg, const struct ch_alert *t)
{
    (void)t;
    (*(unsigned long *)arg)++;
}

/* Writes the site file; n_models: how many device models to rotate through
 * (1: all air boards). extra_rules: number of generated site rules. */
static void write_site(const char *dir, const char *src, const char *pack, size_t n_models,
                       int extra_rules)
{
    char path[512];
    snprintf(path, sizeof path, "%s/site.yaml", dir);
    FILE *fp = fopen(path, "w");
    if (!fp) {
        perror(path);
        exit(1);
    }
    fprintf(fp,
            "site: bench\ngateway: gw\ntimezone: Asia/Shanghai\n"
            "uplink: {broker: tcp://127.0.0.1:1883}\nspool: {dir: %s/spool}\n"
            "profiles: [%s/deploy/profiles]\n"
            "alarms: {state_file: %s/alarms.state}\n"
            "buses:\n  - {id: b, type: modbus-tcp, host: 127.0.0.1}\n"
            "devices:\n",
            dir, src, dir);
    for (int i = 0; i < N_DEVICES; i++)
        fprintf(fp, "  - {id: dev-%02d, bus: b, slave: %d, profile: %s, room: r%02d}\n", i, i + 1,
                models[(size_t)i % n_models].profile, i);
    if (pack)
        fprintf(fp, "rule_packs: [%s/deploy/rules/%s]\n", src, pack);
    if (extra_rules > 0) {
        fprintf(fp, "rules:\n");
        for (int i = 0; i < extra_rules; i++) {
            switch (i % 5) {
            case 0:
                fprintf(fp, "  - {id: g%04d, when: co2 > %d, for: 5m, deadband: 50}\n", i,
                        1000 + i);
                break;
            case 1:
                fprintf(fp,
                        "  - {id: g%04d, when: temperature > %d and humidity > 70, "
                        "priority: low}\n",
                        i, 28 + i % 7);
                break;
            case 2:
                fprintf(fp, "  - {id: g%04d, when: \"rise(temperature, 10m) >= %d\"}\n", i,
                        5 + i % 5);
                break;
            case 3:
                fprintf(fp, "  - {id: g%04d, when: pm25 > $lim or pm10 > 150, params: {lim: %d}}\n",
                        i, 75 + i % 20);
                break;
            default:
                fprintf(fp, "  - {id: g%04d, when: \"avg(tvoc, 8h) > %d\", deadband: 10}\n", i,
                        160 + i % 40);
                break;
            }
        }
    }
    fclose(fp);
}

static void run(const char *name, const char *src, const char *pack, size_t n_models,
                int extra_rules, long readings)
{
    char dir[] = "/tmp/carehub-bench-rules-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
    write_site(dir, src, pack, n_models, extra_rules);
    char path[512];
    snprintf(path, sizeof path, "%s/site.yaml", dir);
    struct site s;
    if (site_load(path, &s) != 0) {
        fprintf(stderr, "%s: site does not load\n", name);
        exit(1);
    }
    unsigned long transitions = 0;
    struct alarms *am;
    struct rules *r;
    if (alarms_open(&s.cfg, sink, &transitions, (struct ch_time){T0_MS, T0_MS}, &am) != 0 ||
        rules_create(&s.cfg, am, &r) != 0) {
        fprintf(stderr, "%s: cannot start\n", name);
        exit(1);
    }
    size_t inst = rules_instances(r);

    struct ch_metric m[N_DEVICES][8];
    struct ch_reading rd[N_DEVICES];
    for (int i = 0; i < N_DEVICES; i++) {
        const struct dev_model *dm = &models[(size_t)i % n_models];
        memset(&rd[i], 0, sizeof rd[i]);
        snprintf(rd[i].device, sizeof rd[i].device, "dev-%02d", i);
        rd[i].metrics = m[i];
        for (size_t k = 0; k < 8 && dm->metrics[k]; k++) {
            memset(&m[i][k], 0, sizeof m[i][k]);
            ch_strlcpy(m[i][k].name, dm->metrics[k], sizeof m[i][k].name);
            m[i][k].value = dm->values[k];
            rd[i].n_metrics++;
        }
    }

    int64_t now = T0_MS;
    double tick_s = 0;
    long ticks = 0;
    unsigned seed = 1;
    double t0 = now_s();
    for (long n = 0; n < readings; n++) {
        int d = (int)(n % N_DEVICES);
        for (size_t k = 0; k < rd[d].n_metrics; k++) /* a little noise, stays normal */
            m[d][k].value =
                models[(size_t)d % n_models].values[k] * (1.0 + (rand_r(&seed) % 5) / 100.0);
        rd[d].ts_ms = now;
        rules_feed(r, (size_t)d, &rd[d], (struct ch_time){now, now});
        now += 1000 / N_DEVICES; /* each device once a second */
        if (d == N_DEVICES - 1) {
            double a = now_s();
            rules_tick(r, (struct ch_time){now, now});
            alarms_tick(am, (struct ch_time){now, now});
            tick_s += now_s() - a;
            ticks++;
        }
    }
    double el = now_s() - t0 - tick_s;
    double per_reading = (double)inst / N_DEVICES;
    printf("%-34s rules %4zu  instances %6zu  readings %8ld  %10.0f readings/s  "
           "%7.2f us/reading  %6.1f M evals/s  tick %7.1f us  transitions %lu\n",
           name, s.cfg.n_all_rules, inst, readings, (double)readings / el,
           el / (double)readings * 1e6, (double)readings * per_reading / el / 1e6,
           ticks ? tick_s / (double)ticks * 1e6 : 0, transitions);
    rules_destroy(r);
    alarms_close(am);
    site_free(&s);
    bench_rm_rf(dir);
}

int main(int argc, char **argv)
{
    const char *src = argc > 1 ? argv[1] : getenv("CAREHUB_SRC");
    if (!src)
        src = ".";
    long readings = argc > 2 ? atol(argv[2]) : 1000000;
    if (readings < N_DEVICES)
        readings = N_DEVICES;
    printf("bench_rules: %d devices, one reading per device per simulated second\n", N_DEVICES);
    run("elderly-care pack, mixed devices", src, "elderly-care.yaml", CH_ARRAY_LEN(models), 0,
        readings);
    run("elderly-care pack, air boards", src, "elderly-care.yaml", 1, 0, readings);
    run("nursery pack, air boards", src, "nursery.yaml", 1, 0, readings);
    run("1000 rules, air boards", src, NULL, 1, 1000, readings / 10);
    return 0;
}
