/* care-hub's HTTP API and web console (hub/api*.c over common/httpd.c and
 * libmicrohttpd) on arbitrary bytes from a client: the real server (api_start),
 * started once in this process on 127.0.0.1 (port 0); each input is written
 * to a connection of its own as it is, the write side shut down, the answer
 * read (fuzz_http.h).
 *
 * What it runs with, as care-hub's serve() builds it (hub/main.c), in
 * /tmp/carehub-fuzz-http-hub-<pid> (removed at exit; a run that crashed
 * leaves it to the next run, which removes those of dead processes):
 * - a configuration file read by hubcfg_load (rate limits out of the way, so
 *   that what an input gets does not depend on the inputs before it; the
 *   audit log and the spool small);
 * - a tokens file with one token of each role, hashed as care-hub
 *   --new-token does (tokens_sha256_hex of "chk_" and 43 base64url
 *   characters); the secrets are fixed, so the corpus carries them:
 *   staff (sites [cq-yz-001]), operator (district cq-yz), regulator
 *   (district cq-yz, grant health), admin (every site);
 * - www_dir: hub/www of the source tree (FUZZ_WWW_DIR);
 * - the view: a presence with gateway cq-yz-001/gw-1 online and
 *   cq-yz-002/gw-2 offline;
 * - InfluxDB and the MQTT broker at a loopback port that is bound and never
 *   listens: every query fails at once (503), and the view client
 *   (sub_open_view) never connects, so a command to the online gateway
 *   reaches sub_publish and is answered 503;
 * - the writer (influx_open on a spool), which takes the audit points.
 *
 * The corpus holds requests to every /api/v1 endpoint with and without a
 * token, parameters with bad times, ranges, sites, measurements, formats and
 * limits, /healthz, and the console's files with traversal attempts.
 *
 * Checked: the answer is nothing or well-framed HTTP/1.x responses; no 5xx
 * but 503 and libmicrohttpd's 501 and 505; no token's hash and no file from
 * outside www_dir (/etc/passwd) in an answer, unless the input carried it
 * (an error message may quote a parameter); and every CHECK_EVERY inputs
 * /healthz and an admin's /api/v1/me still answer 200 (to 127.0.0.2). */
#include "api.h"
#include "codec.h"
#include "hubcfg.h"
#include "fuzz_http.h"
#include "influx.h"
#include "log.h"
#include "presence.h"
#include "spool.h"
#include "subscriber.h"
#include "tokens.h"
#include "util.h"

#include <curl/curl.h>
#include <ftw.h>
#include <glob.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK_EVERY 64
#define ANSWER_MAX  (1u << 20)
#define CONTROL_MS  5000

/* One token of each role. The secrets are "chk_" and 43 base64url
 * characters, as tokens_generate makes them. */
static const struct fuzz_token {
    const char *name, *role, *scope, *secret;
} fuzz_tokens[] = {
    {"fuzz-staff", "staff", "sites: [cq-yz-001]",
     "chk_fuzz-staff-00000000000000000000000000000000"},
    {"fuzz-operator", "operator", "district: cq-yz",
     "chk_fuzz-operator-00000000000000000000000000000"},
    {"fuzz-regulator", "regulator", "district: cq-yz\n    grants: [health]",
     "chk_fuzz-regulator-0000000000000000000000000000"},
    {"fuzz-admin", "admin", "sites: [\"*\"]", "chk_fuzz-admin-00000000000000000000000000000000"},
};

#define DIR_PREFIX "/tmp/carehub-fuzz-http-hub-"

static char dir[64];
static int closed_fd = -1; /* bound, never listening: InfluxDB and the broker */
static struct hubcfg cfg;
static bool cfg_loaded;
static struct presence *view;
static struct spool *spool;
static struct influx *writer;
static struct sub *mqtt;
static struct api *api;
static uint16_t port;
static char hashes[CH_ARRAY_LEN(fuzz_tokens)][65];
static char *answer;
static char passwd[256];

static void write_file(const char *name, const char *text)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    CHECK(fuzz_file_write(path, text, strlen(text)) == 0);
}

static void write_tokens(void)
{
    char text[4096];
    size_t off = (size_t)snprintf(text, sizeof text, "tokens:\n");
    for (size_t i = 0; i < CH_ARRAY_LEN(fuzz_tokens); i++) {
        const struct fuzz_token *t = &fuzz_tokens[i];
        CHECK(strlen(t->secret) == 47);
        tokens_sha256_hex(t->secret, strlen(t->secret), hashes[i]);
        off += (size_t)snprintf(text + off, sizeof text - off,
                                "  - name: %s\n    sha256: %s\n    role: %s\n    %s\n", t->name,
                                hashes[i], t->role, t->scope);
        CHECK(off < sizeof text);
    }
    write_file("tokens.yaml", text);
}

static uint16_t closed_port(void)
{
    closed_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    socklen_t len = sizeof sa;
    CHECK(closed_fd >= 0 && bind(closed_fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
          getsockname(closed_fd, (struct sockaddr *)&sa, &len) == 0);
    return ntohs(sa.sin_port);
}

static void write_config(uint16_t nowhere)
{
    char text[2048];
    snprintf(text, sizeof text,
             "mqtt:\n"
             "  broker: tcp://127.0.0.1:%u\n"
             "  client_id: fuzz-hub\n"
             "influx:\n"
             "  url: http://127.0.0.1:%u\n"
             "  database: carehub\n"
             "  timeout: 1s\n"
             "  max_backoff: 5s\n"
             "  shutdown_timeout: 0s\n"
             "spool:\n"
             "  dir: %s/spool\n"
             "  max_bytes: 2097152\n"
             "api:\n"
             "  bind: 127.0.0.1\n"
             "  port: 0\n"
             "  tokens_file: %s/tokens.yaml\n"
             "  www_dir: " FUZZ_WWW_DIR "\n"
             "  rate_limit: 100000\n"
             "  address_rate_limit: 100000\n"
             "  max_clients: 8\n"
             "  audit_max_bytes: 1048576\n"
             "  audit_keep: 1\n"
             "  query_timeout: 1s\n"
             "  connections: {header_timeout: 1s, body_timeout: 1s}\n",
             nowhere, nowhere, dir, dir);
    write_file("hub.yaml", text);
}

/* The view: one gateway online, one offline. */
static void view_init(void)
{
    view = presence_new();
    presence_statuses_only(view);
    int64_t now = ch_now_ms();
    struct ch_status s = {.site = "cq-yz-001", .gateway = "gw-1", .online = true, .ts_ms = now};
    ch_strlcpy(s.version, "0.1.0", sizeof s.version);
    presence_status(view, &s, now);
    struct ch_status off = {.site = "cq-yz-002", .gateway = "gw-2", .online = false, .ts_ms = now};
    presence_status(view, &off, now);
}

static void on_view(void *ctx, const char *topic, const void *payload, size_t len, bool retained)
{
    (void)ctx;
    (void)topic;
    (void)payload;
    (void)len;
    (void)retained;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* The directories of runs that ended without stop() (a crash, a CHECK):
 * those whose process is gone. */
static void remove_stale_dirs(void)
{
    glob_t g;
    if (glob(DIR_PREFIX "*", GLOB_NOSORT, NULL, &g))
        return;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        char *end;
        long pid = strtol(g.gl_pathv[i] + strlen(DIR_PREFIX), &end, 10);
        if (*end == '\0' && pid > 0 && kill((pid_t)pid, 0) && errno == ESRCH)
            nftw(g.gl_pathv[i], remove_one, 8, FTW_DEPTH | FTW_PHYS);
    }
    globfree(&g);
}

static void stop(void)
{
    api_stop(api); /* its streams end before the view client they are fed from */
    api = NULL;
    sub_close(mqtt, 100);
    if (writer) {
        struct influx_stats st;
        influx_begin_stop(writer);
        influx_close(writer, &st);
    }
    spool_close(spool);
    presence_free(view);
    if (cfg_loaded)
        hubcfg_free(&cfg);
    if (closed_fd >= 0)
        close(closed_fd);
    if (dir[0])
        nftw(dir, remove_one, 8, FTW_DEPTH | FTW_PHYS);
    free(answer);
    curl_global_cleanup();
}

/* ---- the checks' own requests (from FUZZ_HTTP_CONTROL) --------------------------------------- */

static int control(const char *path, const char *secret)
{
    char req[512], ans[8192];
    snprintf(req, sizeof req,
             "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s%sConnection: close\r\n\r\n", path,
             secret ? "Authorization: Bearer " : "", secret ? secret : "", secret ? "\r\n" : "");
    bool capped, closed;
    size_t len = fuzz_http_exchange(FUZZ_HTTP_CONTROL, port, req, strlen(req), ans, sizeof ans - 1,
                                    CONTROL_MS, &capped, &closed);
    int status = fuzz_http_first_status(ans, len);
    if (status != 200)
        fprintf(stderr, "%s: %s: %.*s\n", FUZZ_NAME, path, (int)len, ans);
    return status;
}

/* ---- the target ------------------------------------------------------------------------------ */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    if (!getenv("FUZZ_VERBOSE"))
        log_set_level(LOGL_ERROR); /* a line per failed query, per refused request ... */
    CHECK(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK);
    atexit(stop); /* the connection and writer threads end before the process does */
    remove_stale_dirs();
    snprintf(dir, sizeof dir, DIR_PREFIX "%d", (int)getpid());
    CHECK(mkdir(dir, 0700) == 0);
    write_tokens();
    write_config(closed_port());
    char path[128];
    snprintf(path, sizeof path, "%s/hub.yaml", dir);
    CHECK(hubcfg_load(path, &cfg) == 0);
    cfg_loaded = true;
    view_init();
    struct spool_opts so = {.max_bytes = (uint64_t)cfg.spool.max_bytes,
                            .commit_interval_ms = cfg.spool.commit_interval_ms,
                            .cursor_interval_ms = cfg.spool.commit_interval_ms,
                            .name = "fuzz-hub"};
    CHECK(spool_open(cfg.spool.dir, &so, &spool) == 0);
    CHECK(influx_open(&cfg.influx, spool, &writer) == 0);
    CHECK(sub_open_view(&cfg.mqtt, on_view, NULL, &mqtt) == 0);
    CHECK(api_start(&cfg, view, writer, mqtt, &api) == 0);
    port = api_port(api);
    answer = malloc(ANSWER_MAX);
    CHECK(answer);
    fuzz_http_passwd_line(passwd, sizeof passwd);
    return 0;
}

static bool status_ok(int status)
{
    return status < 500 || status == 501 || status == 503 || status == 505;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned runs;
    bool capped, closed;
    size_t len = fuzz_http_exchange(FUZZ_HTTP_INPUT, port, data, size, answer, ANSWER_MAX,
                                    FUZZ_HTTP_IDLE_MS, &capped, &closed);
    fuzz_http_check_answer(answer, len, status_ok);
    CHECK(!fuzz_http_leaks(answer, len, data, size, passwd)); /* www_dir only */
    for (size_t i = 0; i < CH_ARRAY_LEN(hashes); i++)
        CHECK(!fuzz_http_leaks(answer, len, data, size, hashes[i]));
    if (++runs % CHECK_EVERY == 0) {
        CHECK(control("/healthz", NULL) == 200);
        CHECK(control("/api/v1/me", fuzz_tokens[3].secret) == 200);
    }
    return 0;
}
