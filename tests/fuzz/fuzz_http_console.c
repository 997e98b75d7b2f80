/* care-edge's alarm console (edge/console.c over common/httpd.c and
 * libmicrohttpd) on arbitrary bytes from a client: the real server, started
 * once in this process on 127.0.0.1 (port 0) with fake alarm ops, as
 * tests/integration/console_fixture.c runs it; each input is written to a
 * connection of its own as it is (one request, several pipelined, or
 * garbage), the write side shut down, the answer read (fuzz_http.h).
 *
 * The corpus holds real requests: the page and its assets, /healthz, logins,
 * every /api endpoint with a session, commands, event streams, Basic
 * credentials (refused over plain HTTP), bad methods, chunked bodies, huge
 * headers, %-escapes. Two marks in an input are replaced before it is sent:
 * @SID@ by the session id of user nurse1 (staff), @ADM@ by that of admin;
 * both log in from 127.0.0.2 at start, and again whenever their session is
 * gone (an input logged out, or 512 logins evicted it).
 *
 * Checked: the answer is nothing or well-framed HTTP/1.x responses
 * (fuzz_http.h); no 5xx but 503 (streams full) and libmicrohttpd's 501 and
 * 505 (a request it does not implement); never a file (/etc/passwd) that
 * the input did not carry itself; and every CHECK_EVERY inputs the server
 * still answers GET /healthz 200 (to 127.0.0.2) and the sessions still
 * work. A memory error on a connection thread is the sanitizers' to
 * report. */
#include "authz.h"
#include "console.h"
#include "err.h"
#include "fuzz_http.h"
#include "log.h"
#include "util.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK_EVERY 64
#define ANSWER_MAX  (1u << 20)
#define CONTROL_MS  5000 /* a login hashes a password */

static struct console *con;
static uint16_t port;
static struct console_user users[2];
static struct site_config site;
static char *answer;
static char passwd[256];

struct session {
    const char *mark, *user, *password;
    char id[65];
};

static struct session sessions[] = {
    {"@SID@", "nurse1", "night-shift-2", ""},
    {"@ADM@", "admin", "s3cret-admin", ""},
};

/* ---- fake alarms: a fixed table, one alarm in each state ------------------------------------ */

static struct ch_alert alarms[6];

static void alarm_set(struct ch_alert *a, const char *rule, const char *device, int prio, int state)
{
    memset(a, 0, sizeof *a);
    ch_strlcpy(a->site, "site-test", sizeof a->site);
    ch_strlcpy(a->gateway, "gw-test", sizeof a->gateway);
    snprintf(a->alarm_id, sizeof a->alarm_id, "%s:%s", rule, device);
    ch_strlcpy(a->rule, rule, sizeof a->rule);
    ch_strlcpy(a->device, device, sizeof a->device);
    ch_strlcpy(a->room, "101", sizeof a->room);
    ch_strlcpy(a->resident, "R-0417", sizeof a->resident);
    ch_strlcpy(a->message, "CO2 1450 ppm", sizeof a->message);
    ch_strlcpy(a->metric, "co2", sizeof a->metric);
    a->has_value = true;
    a->value = 1450;
    a->priority = prio;
    a->state = state;
    a->ts_ms = a->raised_ms = ch_now_ms() - 60000;
}

static void alarms_init(void)
{
    alarm_set(&alarms[0], "sos", "call-101", CH_PRIO_HIGH, CH_AS_UNACK);
    alarm_set(&alarms[1], "co2_high", "air-101", CH_PRIO_MEDIUM, CH_AS_ACKED);
    alarm_set(&alarms[2], "fall", "band-7", CH_PRIO_HIGH, CH_AS_RTN_UNACK);
    alarm_set(&alarms[3], "temp-low", "env-001", CH_PRIO_LOW, CH_AS_SHELVED);
    alarm_set(&alarms[4], "gas", "lel-2", CH_PRIO_HIGH, CH_AS_OOS);
    alarm_set(&alarms[5], "bed-exit", "bed-3", CH_PRIO_MEDIUM, CH_AS_NORMAL);
}

static size_t copy_alarms(bool active, int64_t since_ms, struct ch_alert **out)
{
    *out = malloc(sizeof alarms);
    CHECK(*out);
    size_t n = 0;
    for (size_t i = 0; i < CH_ARRAY_LEN(alarms); i++)
        if ((!active || alarms[i].state != CH_AS_NORMAL) && alarms[i].ts_ms >= since_ms)
            (*out)[n++] = alarms[i];
    return n;
}

static size_t op_active(void *arg, struct ch_alert **out)
{
    (void)arg;
    return copy_alarms(true, 0, out);
}

static size_t op_history(void *arg, int64_t since_ms, struct ch_alert **out)
{
    (void)arg;
    return copy_alarms(false, since_ms, out);
}

/* The life cycle's answer without changing the table (each input sees the
 * same alarms); a transition it allows is published to the streams. */
static int op_command(void *arg, const struct ch_command *cmd)
{
    (void)arg;
    if (authz_check(cmd->action, cmd->role, NULL) != 0)
        return CH_EDENIED;
    const struct ch_alert *a = NULL;
    for (size_t i = 0; i < CH_ARRAY_LEN(alarms) && !a; i++)
        if (alarms[i].state != CH_AS_NORMAL && !strcmp(alarms[i].alarm_id, cmd->alarm_id))
            a = &alarms[i];
    if (!a)
        return CH_ENOTFOUND;
    struct ch_alert t = *a;
    switch (cmd->action) {
    case CH_CMD_ACK:
        if (a->state != CH_AS_UNACK && a->state != CH_AS_RTN_UNACK)
            return CH_ESTATE;
        t.state = a->state == CH_AS_UNACK ? CH_AS_ACKED : CH_AS_NORMAL;
        t.event = CH_AE_ACK;
        break;
    case CH_CMD_SHELVE:
        if (a->state != CH_AS_UNACK && a->state != CH_AS_ACKED)
            return CH_ESTATE;
        if (cmd->duration_ms <= 0 || cmd->duration_ms > CH_SHELVE_MAX_MS)
            return CH_EINVAL;
        t.state = CH_AS_SHELVED;
        t.event = CH_AE_SHELVE;
        break;
    case CH_CMD_UNSHELVE:
        if (a->state != CH_AS_SHELVED)
            return CH_ESTATE;
        t.state = CH_AS_UNACK;
        t.event = CH_AE_UNSHELVE;
        break;
    case CH_CMD_OUT_OF_SERVICE:
        t.state = CH_AS_OOS;
        t.event = CH_AE_OUT_OF_SERVICE;
        break;
    case CH_CMD_IN_SERVICE:
        if (a->state != CH_AS_OOS)
            return CH_ESTATE;
        t.state = CH_AS_UNACK;
        t.event = CH_AE_IN_SERVICE;
        break;
    default:
        return CH_EINVAL;
    }
    t.ts_ms = cmd->ts_ms;
    ch_strlcpy(t.by, cmd->by, sizeof t.by);
    console_publish(con, &t);
    return 0;
}

static char *op_status(void *arg)
{
    (void)arg;
    return ch_xstrdup("{\"uplink\":\"fuzz\",\"devices_online\":0}");
}

/* ---- the checks' own requests (from FUZZ_HTTP_CONTROL) --------------------------------------- */

static int control(const char *req, char *out, size_t cap, size_t *len)
{
    bool capped, closed;
    *len = fuzz_http_exchange(FUZZ_HTTP_CONTROL, port, req, strlen(req), out, cap - 1, CONTROL_MS,
                              &capped, &closed);
    out[*len] = '\0';
    return fuzz_http_first_status(out, *len);
}

static void login(struct session *s)
{
    char body[128], req[512], ans[4096];
    snprintf(body, sizeof body, "{\"user\":\"%s\",\"password\":\"%s\"}", s->user, s->password);
    snprintf(req, sizeof req,
             "POST /api/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
             strlen(body), body);
    size_t len;
    int status = control(req, ans, sizeof ans, &len);
    const char *c = strstr(ans, "carehub_session=");
    bool ok = status == 200 && c && strspn(c + 16, "0123456789abcdef") == 64;
    if (!ok)
        fprintf(stderr, "%s: login of %s: %.*s\n", FUZZ_NAME, s->user, (int)len, ans);
    CHECK(ok);
    memcpy(s->id, c + 16, 64);
    s->id[64] = '\0';
}

/* Logs in again each user whose session is gone. */
static void sessions_check(void)
{
    for (size_t i = 0; i < CH_ARRAY_LEN(sessions); i++) {
        char req[256], ans[4096];
        snprintf(req, sizeof req,
                 "GET /api/me HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: carehub_session=%s\r\n"
                 "Connection: close\r\n\r\n",
                 sessions[i].id);
        size_t len;
        int status = control(req, ans, sizeof ans, &len);
        if (status != 200 && status != 401)
            fprintf(stderr, "%s: /api/me of %s: %.*s\n", FUZZ_NAME, sessions[i].user, (int)len,
                    ans);
        CHECK(status == 200 || status == 401);
        if (status == 401)
            login(&sessions[i]);
    }
}

static void healthz(void)
{
    char ans[4096];
    size_t len;
    int status = control("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                         ans, sizeof ans, &len);
    if (status != 200)
        fprintf(stderr, "%s: /healthz: %.*s\n", FUZZ_NAME, (int)len, ans);
    CHECK(status == 200);
}

/* ---- the target ------------------------------------------------------------------------------ */

static void stop(void)
{
    console_stop(con);
    con = NULL;
    for (size_t i = 0; i < CH_ARRAY_LEN(users); i++)
        free(users[i].password_hash);
    free(answer);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    if (!getenv("FUZZ_VERBOSE"))
        log_set_level(LOGL_ERROR); /* a line per failed login, per stream ... */
    alarms_init();
    users[0] = (struct console_user){.name = "nurse1", .role = ROLE_STAFF};
    users[1] = (struct console_user){.name = "admin", .role = ROLE_ADMIN};
    /* hashed once: a yescrypt hash costs tens of milliseconds */
    for (size_t i = 0; i < CH_ARRAY_LEN(users); i++) {
        users[i].password_hash = console_hash_password(sessions[i].password);
        CHECK(users[i].password_hash);
    }
    site = (struct site_config){
        .site = "site-test",
        .gateway = "gw-test",
        .alarms = {.history_ms = 24 * 3600000LL},
        .console = {.enabled = true,
                    .bind = "127.0.0.1",
                    .port = 0,
                    .users = {.items = users, .n = CH_ARRAY_LEN(users)},
                    .session_ms = 3600000,
                    .max_clients = 4,
                    /* a request cut short is closed soon, not in 10 s */
                    .connections = {.header_timeout_ms = 1000, .body_timeout_ms = 1000}},
    };
    const struct console_ops ops = {.active = op_active,
                                    .history = op_history,
                                    .command = op_command,
                                    .status_json = op_status};
    CHECK(console_start(&site, &ops, &con) == 0);
    port = console_port(con);
    answer = malloc(ANSWER_MAX);
    CHECK(answer);
    fuzz_http_passwd_line(passwd, sizeof passwd);
    for (size_t i = 0; i < CH_ARRAY_LEN(sessions); i++)
        login(&sessions[i]);
    atexit(stop); /* the connection threads end before the process does */
    return 0;
}

static bool status_ok(int status)
{
    return status < 500 || status == 501 || status == 503 || status == 505;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned runs;
    /* the marks, replaced by the sessions' ids */
    char *req = NULL;
    size_t n = size;
    bool marked = false;
    for (size_t i = 0; i < CH_ARRAY_LEN(sessions); i++) {
        size_t m;
        char *r = fuzz_http_replace(req ? (const uint8_t *)req : data, n, sessions[i].mark,
                                    sessions[i].id, &m);
        if (r) {
            free(req);
            req = r;
            n = m;
            marked = true;
        }
    }
    bool capped, closed;
    size_t len = fuzz_http_exchange(FUZZ_HTTP_INPUT, port, req ? req : (const char *)data, n,
                                    answer, ANSWER_MAX, FUZZ_HTTP_IDLE_MS, &capped, &closed);
    free(req);
    fuzz_http_check_answer(answer, len, status_ok);
    CHECK(!fuzz_http_leaks(answer, len, data, size, passwd)); /* assets only, never a file */
    if (marked && memmem(answer, len, " 401 ", 5))
        sessions_check(); /* the input logged out, or logins evicted a session */
    if (++runs % CHECK_EVERY == 0) {
        healthz();
        sessions_check();
    }
    return 0;
}
