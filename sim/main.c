/* care-sim: simulated Modbus devices (TCP and RTU) with scripted scenarios,
 * for carehub's demo and tests: meters, bed sensors, nurse-call panels and
 * relay boards; and a care home's MQTT devices (sim_home.h): residents'
 * bracelets heard by BLE receivers, Wi-Fi bed sensors. See deploy/sim/README.md and
 * deploy/sim/care-devices.md.
 *
 * Exit status: 0 after SIGINT/SIGTERM or a passed --check, 1 when an
 * endpoint cannot be opened or the loop fails, 2 for a bad command line or
 * configuration. */
#include "err.h"
#include "log.h"
#include "sim_config.h"
#include "sim_server.h"
#include "util.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void usage(FILE *f)
{
    fputs("usage: care-sim -c FILE [options]\n"
          "Simulated Modbus devices (meters, bed sensors, nurse-call panels, relay boards)\n"
          "over TCP and RTU (pseudo-terminal), sleep radars, and a care home's residents\n"
          "with BLE bracelets, receivers and Wi-Fi bed sensors over MQTT, with scenarios.\n"
          "\n"
          "  -c, --config FILE          simulator config (endpoints, slaves, scenario)\n"
          "      --scenario FILE        more scenario events (a file with a 'scenario:' list)\n"
          "      --seed N               noise seed, overrides the config's 'seed'\n"
          "      --speed X              scenario clock rate (default 1; 60 = a minute a second)\n"
          "      --stats-interval D     statistics lines every D (default 10s; 0 = never)\n"
          "      --allow-any-address    let TCP endpoints listen on non-loopback addresses\n"
          "      --log-level LEVEL      error, warn, info (default) or debug\n"
          "      --check                check the configuration and exit\n"
          "      --version              print the version and exit\n"
          "      --help                 print this help and exit\n"
          "\n"
          "Logs go to stderr; \"care-sim ready\" is logged once every endpoint is open.\n"
          "Exit status: 0 stopped by SIGINT/SIGTERM, 1 runtime failure, 2 bad configuration.\n",
          f);
}

int main(int argc, char **argv)
{
    enum { OPT_SCENARIO = 256, OPT_SEED, OPT_SPEED, OPT_STATS, OPT_ANY, OPT_LOG, OPT_CHECK };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"scenario", required_argument, NULL, OPT_SCENARIO},
        {"seed", required_argument, NULL, OPT_SEED},
        {"speed", required_argument, NULL, OPT_SPEED},
        {"stats-interval", required_argument, NULL, OPT_STATS},
        {"allow-any-address", no_argument, NULL, OPT_ANY},
        {"log-level", required_argument, NULL, OPT_LOG},
        {"check", no_argument, NULL, OPT_CHECK},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *scenario = NULL;
    long long seed = -1;
    bool check = false, allow_any = false;
    struct sim_server_opts sopts = {.speed = 1.0, .stats_interval_ms = 10000};
    int o;
    while ((o = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        char *end;
        enum log_level level;
        switch (o) {
        case 'c':
            config = optarg;
            break;
        case OPT_SCENARIO:
            scenario = optarg;
            break;
        case OPT_SEED:
            if (ch_parse_int(optarg, &seed) != 0 || seed < 0) {
                fprintf(stderr, "care-sim: --seed: '%s' is not a whole number >= 0\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case OPT_SPEED:
            sopts.speed = strtod(optarg, &end);
            if (end == optarg || *end || !(sopts.speed > 0.0 && sopts.speed <= 1e6)) {
                fprintf(stderr, "care-sim: --speed: '%s' is not a number in (0, 1e6]\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case OPT_STATS:
            if (ch_parse_duration_ms(optarg, &sopts.stats_interval_ms) != 0) {
                fprintf(stderr, "care-sim: --stats-interval: '%s' is not a duration (10s, 1m)\n",
                        optarg);
                return EXIT_USAGE;
            }
            break;
        case OPT_ANY:
            allow_any = true;
            break;
        case OPT_LOG:
            if (log_level_parse(optarg, &level) != 0) {
                fprintf(stderr, "care-sim: --log-level: '%s' is not error, warn, info or debug\n",
                        optarg);
                return EXIT_USAGE;
            }
            log_set_level(level);
            break;
        case OPT_CHECK:
            check = true;
            break;
        case 'V':
            printf("care-sim %s (libmodbus %s)\n", CAREHUB_VERSION, LIBMODBUS_VERSION_STRING);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (!config || optind != argc) {
        usage(stderr);
        return EXIT_USAGE;
    }

    struct sim_config cfg;
    int rc = sim_config_load(config, scenario, allow_any, &cfg);
    if (rc != 0) {
        sim_config_free(&cfg);
        /* an unreadable file is a bad configuration too: the operator must fix the path */
        return EXIT_USAGE;
    }
    if (seed >= 0)
        cfg.seed = (uint64_t)seed;
    if (check) {
        printf("%s: ok: %zu endpoints, %zu slaves, %zu zones, %zu receivers, %zu wearables, %zu "
               "Wi-Fi beds, %zu scenario events\n",
               config, cfg.nendpoints, cfg.nslaves, cfg.nzones, cfg.nreceivers, cfg.nwearables,
               cfg.nwifi_beds, cfg.nevents);
        sim_config_free(&cfg);
        return 0;
    }

    /* SIGINT/SIGTERM stay blocked except while the loop waits in ppoll(). */
    sigset_t block, wait_mask;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &wait_mask);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct sim_server *srv = sim_server_new(&cfg, &sopts);
    int status = 0;
    if (sim_server_open(srv) != 0) {
        LOGE("sim", NULL, "not started (see above)");
        status = EXIT_RUNTIME;
    } else {
        rc = sim_server_run(srv, &wait_mask, &g_stop);
        if (sopts.stats_interval_ms > 0)
            sim_server_log_stats(srv);
        if (rc != 0) {
            LOGE("sim", NULL, "stopped: %s", ch_strerror(rc));
            status = EXIT_RUNTIME;
        }
    }
    sim_server_free(srv);
    sim_config_free(&cfg);
    if (status == 0)
        LOGI("sim", NULL, "stopped");
    return status;
}
