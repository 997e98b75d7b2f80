/* The alarm life cycle on a fake clock: every transition as a table of
 * conditions, commands and ticks with the transitions they must make;
 * escalation timing, shelving expiry, out of service, flood detection and
 * grouping, the durable state across close/reopen, damaged state files, the
 * bounded history, and the sink's ordering outside the lock. */
#include "alarm.h"
#include "site.h"
#include "err.h"
#include "util.h"

#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "capture.h"

#define T0_S  1768482000LL
#define AT(s) ((T0_S + (s)) * 1000LL)
/* The monotonic clock at T0: time since boot, unrelated to the wall clock,
 * so a module mixing the two up fails every timing case. */
#define MONO0 86400000LL
#define HOUR  3600000LL

static const char *const event_names[] = {"raise",      "ack",    "clear",     "rtn",
                                          "escalate",   "shelve", "unshelve",  "oos",
                                          "in_service", "flood",  "flood_end", "notified"};
static const char *const state_names[] = {"normal",    "unack",   "acked",
                                          "rtn_unack", "shelved", "oos"};

static const char site_text[] =
    "site: t-site\n"
    "gateway: gw-1\n"
    "uplink: {broker: tcp://127.0.0.1:1883}\n"
    "spool: {dir: spool}\n"
    "profiles: [profiles]\n"
    "buses:\n"
    "  - {id: b, type: modbus-tcp, host: 127.0.0.1}\n"
    "devices:\n"
    "  - {id: d1, bus: b, slave: 1, profile: env, room: r1}\n"
    "  - {id: d2, bus: b, slave: 2, profile: env, room: r2}\n"
    "  - {id: d3, bus: b, slave: 3, profile: env, room: r3}\n"
    "  - {id: d4, bus: b, slave: 4, profile: env, room: r4}\n"
    "  - {id: d5, bus: b, slave: 5, profile: env, room: r5}\n"
    "  - {id: d6, bus: b, slave: 6, profile: env, room: r6}\n"
    "  - {id: d-call, bus: b, slave: 7, profile: callp}\n"
    "residents:\n"
    "  - {id: R-1, room: r7, bed: b7, devices: [d-call]}\n"
    "rules:\n"
    "  - {id: lo, when: co2 > 1000, priority: low}\n"
    "  - {id: med, when: co2 > 1500, priority: medium, escalate: 60s, escalate_max: 2}\n"
    "  - {id: sos, when: sos == 1, latch: true, priority: high, select: {kind: [call]}}\n"
    "alarms: {state_file: alarms.state, flood_count: 3, flood_window: 60s, history_max: 10, "
    "shelve_max: 1h}\n";

#define MAX_GOT 512

struct fx {
    char dir[64];
    struct site s;
    struct alarms *am;
    struct ch_alert got[MAX_GOT];
    size_t n;
    /* the fake clocks: calls take a true time t (AT(s)); the module gets
     * wall = t + skew (a stepped wall clock) and mono = t - AT(0) + MONO0 +
     * mono_off (mono_off: a reboot restarts the monotonic clock) */
    int64_t skew, mono_off, last;
    bool call_back; /* the sink reads the module, as care-edge's does */
    int in_sink;
    bool overlapped;
    size_t seen; /* every transition, also past MAX_GOT */
};

static void sink(void *arg, const struct ch_alert *t)
{
    struct fx *f = arg;
    if (__atomic_add_fetch(&f->in_sink, 1, __ATOMIC_SEQ_CST) > 1)
        f->overlapped = true;
    if (f->call_back && f->am) {
        /* would deadlock if the sink ran under the module's lock */
        struct alarms_stats st;
        alarms_get_stats(f->am, &st);
        struct ch_alert *v;
        alarms_active(f->am, &v);
        free(v);
    }
    f->seen++;
    if (f->n < MAX_GOT)
        f->got[f->n++] = *t;
    __atomic_sub_fetch(&f->in_sink, 1, __ATOMIC_SEQ_CST);
}

static struct ch_time clk(struct fx *f, int64_t t)
{
    __atomic_store_n(&f->last, t, __ATOMIC_RELAXED); /* test_threads: two callers */
    return (struct ch_time){.wall_ms = t + f->skew, .mono_ms = t - AT(0) + MONO0 + f->mono_off};
}

static void tick(struct fx *f, int64_t t)
{
    alarms_tick(f->am, clk(f, t));
}

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static const struct rule_cfg *rule(const struct fx *f, const char *id)
{
    for (size_t i = 0; i < f->s.cfg.n_all_rules; i++)
        if (!strcmp(f->s.cfg.all_rules[i]->id, id))
            return f->s.cfg.all_rules[i];
    fail_msg("no rule %s", id);
    return NULL;
}

static const struct device_cfg *device(const struct fx *f, const char *id)
{
    for (size_t i = 0; i < f->s.cfg.devices.n; i++)
        if (!strcmp(SITE_DEV(&f->s.cfg, i)->id, id))
            return SITE_DEV(&f->s.cfg, i);
    fail_msg("no device %s", id);
    return NULL;
}

static const struct resident_cfg *resident(const struct fx *f, const char *dev)
{
    return strcmp(dev, "d-call") == 0 ? SITE_RESIDENT(&f->s.cfg, 0) : NULL;
}

/* Registers every alarm, as rules_create does. */
static void register_all(struct fx *f)
{
    static const char *const pairs[][2] = {
        {"lo", "d1"}, {"lo", "d2"},  {"lo", "d3"},  {"lo", "d4"},  {"lo", "d5"},
        {"lo", "d6"}, {"med", "d1"}, {"med", "d2"}, {"med", "d6"}, {"sos", "d-call"}};
    for (size_t i = 0; i < CH_ARRAY_LEN(pairs); i++)
        alarms_register(f->am, rule(f, pairs[i][0]), device(f, pairs[i][1]),
                        resident(f, pairs[i][1]));
}

static void fx_open(struct fx *f)
{
    memset(f, 0, sizeof *f);
    ch_strlcpy(f->dir, "/tmp/carehub-alarm-XXXXXX", sizeof f->dir);
    assert_non_null(mkdtemp(f->dir));
    char p[256];
    snprintf(p, sizeof p, "%s/profiles", f->dir);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof p, "%s/profiles/env.yaml", f->dir);
    write_file(p, "profile: env\nregisters:\n  - {metric: co2, address: 0}\n");
    snprintf(p, sizeof p, "%s/profiles/call.yaml", f->dir);
    write_file(p, "profile: callp\nkind: call\nregisters:\n"
                  "  - {metric: sos, fc: 2, address: 0, type: bool}\n");
    snprintf(p, sizeof p, "%s/site.yaml", f->dir);
    write_file(p, site_text);
    struct capture cap;
    char out[8192];
    assert_int_equal(capture_begin(&cap), 0);
    int rc = site_load(p, &f->s);
    capture_end(&cap, out, sizeof out);
    if (rc != 0)
        fail_msg("site_load: %s", out);
    assert_int_equal(alarms_open(&f->s.cfg, sink, f, clk(f, AT(0)), &f->am), 0);
    register_all(f);
}

/* Closes and opens the module again on the same state file, at true time
 * t (-1: the time of the last call). */
static void fx_reopen_at(struct fx *f, int64_t t)
{
    alarms_close(f->am);
    f->am = NULL;
    size_t before = f->n;
    assert_int_equal(alarms_open(&f->s.cfg, sink, f, clk(f, t < 0 ? f->last : t), &f->am), 0);
    register_all(f);
    assert_int_equal(f->n, before); /* nothing replayed to the sink */
}

static void fx_reopen(struct fx *f)
{
    fx_reopen_at(f, -1);
}

static void fx_close(struct fx *f)
{
    alarms_close(f->am);
    site_free(&f->s);
    nftw(f->dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

static void cond(struct fx *f, const char *id, bool on, double v, int64_t now)
{
    char r[CH_ALARM_ID_MAX];
    ch_strlcpy(r, id, sizeof r);
    char *colon = strchr(r, ':');
    *colon = '\0';
    alarms_condition(f->am, rule(f, r), device(f, colon + 1), resident(f, colon + 1), on,
                     on ? "co2" : NULL, v, NULL, "test message", clk(f, now));
}

static int command(struct fx *f, int action, const char *id, int64_t dur, int64_t now)
{
    struct ch_command c = {.action = action, .ts_ms = now, .duration_ms = dur};
    ch_strlcpy(c.alarm_id, id, sizeof c.alarm_id);
    ch_strlcpy(c.by, "console:nurse1", sizeof c.by);
    return alarms_command(f->am, &c, clk(f, now));
}

/* "event>state event>state" of the transitions from index from. */
static void events_since(const struct fx *f, size_t from, char *buf, size_t n)
{
    buf[0] = '\0';
    for (size_t i = from; i < f->n; i++) {
        size_t len = strlen(buf);
        snprintf(buf + len, n - len, "%s%s>%s", len ? " " : "", event_names[f->got[i].event],
                 state_names[f->got[i].state]);
    }
}

enum op { ON, OFF, ACK, SHELVE, UNSHELVE, OOS, INS, TICK, STEP };

struct aop {
    int64_t t;
    int op;
    const char *alarm;
    int64_t dur_s; /* shelve; STEP: the wall clock moves by this many seconds */
    int rc;        /* of a command */
    const char *want;
};

struct acase {
    const char *name;
    struct aop ops[12];
};

#define END                                                                                        \
    {                                                                                              \
        0, 0, NULL, 0, 0, NULL                                                                     \
    }

static const struct acase acases[] = {
    {"raise, ack, clear",
     {{0, ON, "lo:d1", 0, 0, "raise>unack"},
      {1, ON, "lo:d1", 0, 0, ""}, /* the same state again: nothing */
      {5, ACK, "lo:d1", 0, 0, "ack>acked"},
      {9, OFF, "lo:d1", 0, 0, "clear>normal"},
      END}},
    {"return to normal unacknowledged, then ack",
     {{0, ON, "lo:d1", 0, 0, "raise>unack"},
      {5, OFF, "lo:d1", 0, 0, "rtn>rtn_unack"},
      {9, ACK, "lo:d1", 0, 0, "ack>normal"},
      END}},
    {"latched: the condition clearing does not leave unack; ack ends it",
     {{0, ON, "sos:d-call", 0, 0, "raise>unack"},
      {5, OFF, "sos:d-call", 0, 0, ""},
      {60, TICK, NULL, 0, 0, ""},
      {90, ACK, "sos:d-call", 0, 0, "ack>normal"},
      END}},
    {"latched, acknowledged while active, clears after",
     {{0, ON, "sos:d-call", 0, 0, "raise>unack"},
      {5, ACK, "sos:d-call", 0, 0, "ack>acked"},
      {9, OFF, "sos:d-call", 0, 0, "clear>normal"},
      END}},
    {"commands that do not apply",
     {{0, ACK, "lo:d1", 0, CH_ESTATE, ""},
      {1, ACK, "nope:d1", 0, CH_ENOTFOUND, ""},
      {2, ON, "lo:d1", 0, 0, "raise>unack"},
      {3, ACK, "lo:d1", 0, 0, "ack>acked"},
      {4, ACK, "lo:d1", 0, CH_ESTATE, ""},
      {5, UNSHELVE, "lo:d1", 0, CH_ESTATE, ""},
      {6, INS, "lo:d1", 0, CH_ESTATE, ""},
      {7, SHELVE, "lo:d1", 0, CH_EINVAL, ""},
      {8, SHELVE, "lo:d1", 7200, CH_EINVAL, ""}, /* over shelve_max (1h) */
      {9, SHELVE, "flood:gw-1", 60, CH_ENOTFOUND, ""},
      END}},
    {"shelving expires and re-raises an active condition",
     {{0, ON, "lo:d1", 0, 0, "raise>unack"},
      {10, SHELVE, "lo:d1", 60, 0, "shelve>shelved"},
      {20, OFF, "lo:d1", 0, 0, ""},
      {30, ON, "lo:d1", 0, 0, ""},
      {69, TICK, NULL, 0, 0, ""},
      {70, TICK, NULL, 0, 0, "unshelve>normal raise>unack"},
      END}},
    {"shelving expires quietly when the condition is gone",
     {{0, ON, "lo:d1", 0, 0, "raise>unack"},
      {10, SHELVE, "lo:d1", 60, 0, "shelve>shelved"},
      {20, OFF, "lo:d1", 0, 0, ""},
      {70, TICK, NULL, 0, 0, "unshelve>normal"},
      {80, ON, "lo:d1", 0, 0, "raise>unack"},
      END}},
    {"unshelve by hand",
     {{0, ON, "lo:d1", 0, 0, "raise>unack"},
      {10, SHELVE, "lo:d1", 600, 0, "shelve>shelved"},
      {20, UNSHELVE, "lo:d1", 0, 0, "unshelve>normal raise>unack"},
      END}},
    {"out of service, before it ever fired",
     {{0, OOS, "lo:d2", 0, 0, "oos>oos"},
      {1, OOS, "lo:d2", 0, CH_ESTATE, ""},
      {2, SHELVE, "lo:d2", 60, CH_ESTATE, ""},
      {5, ON, "lo:d2", 0, 0, ""},
      {6, OFF, "lo:d2", 0, 0, ""},
      {7, ON, "lo:d2", 0, 0, ""},
      {9, INS, "lo:d2", 0, 0, "in_service>normal raise>unack"},
      END}},
    {"escalation every escalate_ms up to escalate_max",
     {{0, ON, "med:d1", 0, 0, "raise>unack"},
      {59, TICK, NULL, 0, 0, ""},
      {60, TICK, NULL, 0, 0, "escalate>unack"},
      {119, TICK, NULL, 0, 0, ""},
      {120, TICK, NULL, 0, 0, "escalate>unack"},
      {600, TICK, NULL, 0, 0, ""},
      {601, ACK, "med:d1", 0, 0, "ack>acked"},
      END}},
    {"acknowledgement stops escalation",
     {{0, ON, "med:d1", 0, 0, "raise>unack"},
      {30, ACK, "med:d1", 0, 0, "ack>acked"},
      {60, TICK, NULL, 0, 0, ""},
      {300, TICK, NULL, 0, 0, ""},
      END}},
    /* durations on the monotonic clock: the wall clock stepping (STEP) moves
     * neither escalation nor shelve expiry, either way */
    {"escalation on the monotonic clock: wall clock +1 h, then -1 h",
     {{0, ON, "med:d1", 0, 0, "raise>unack"},
      {1, STEP, NULL, 3600, 0, ""},
      {2, TICK, NULL, 0, 0, ""}, /* on the wall clock: both escalations at once */
      {59, TICK, NULL, 0, 0, ""},
      {60, TICK, NULL, 0, 0, "escalate>unack"},
      {61, STEP, NULL, -7200, 0, ""},
      {119, TICK, NULL, 0, 0, ""},
      {120, TICK, NULL, 0, 0, "escalate>unack"}, /* on the wall clock: in an hour */
      END}},
    {"shelve expiry on the monotonic clock: wall clock +1 h, then -1 h",
     {{0, ON, "lo:d1", 0, 0, "raise>unack"},
      {10, SHELVE, "lo:d1", 60, 0, "shelve>shelved"},
      {11, STEP, NULL, 3600, 0, ""},
      {12, TICK, NULL, 0, 0, ""}, /* on the wall clock: expired already */
      {69, TICK, NULL, 0, 0, ""},
      {70, TICK, NULL, 0, 0, "unshelve>normal raise>unack"},
      {71, SHELVE, "lo:d1", 60, 0, "shelve>shelved"},
      {72, STEP, NULL, -7200, 0, ""},
      {130, TICK, NULL, 0, 0, ""},
      {131, TICK, NULL, 0, 0, "unshelve>normal raise>unack"}, /* wall clock: in 2 h */
      END}},
    {"return to normal stops escalation; a late tick catches up",
     {{0, ON, "med:d2", 0, 0, "raise>unack"},
      {10, OFF, "med:d2", 0, 0, "rtn>rtn_unack"},
      {100, TICK, NULL, 0, 0, ""},
      {101, ON, "med:d2", 0, 0, "raise>unack"},
      {300, TICK, NULL, 0, 0, "escalate>unack escalate>unack"},
      END}},
};

static void test_life_cycle(void **state)
{
    (void)state;
    for (size_t c = 0; c < CH_ARRAY_LEN(acases); c++) {
        struct fx *f = calloc(1, sizeof *f);
        fx_open(f);
        f->call_back = true;
        for (const struct aop *o = acases[c].ops; o->want; o++) {
            size_t mark = f->n;
            int rc = 0;
            int64_t now = AT(o->t);
            switch (o->op) {
            case ON:
            case OFF:
                cond(f, o->alarm, o->op == ON, 1234, now);
                break;
            case TICK:
                tick(f, now);
                break;
            case STEP:
                f->skew += o->dur_s * 1000;
                break;
            case ACK:
                rc = command(f, CH_CMD_ACK, o->alarm, 0, now);
                break;
            case SHELVE:
                rc = command(f, CH_CMD_SHELVE, o->alarm, o->dur_s * 1000, now);
                break;
            case UNSHELVE:
                rc = command(f, CH_CMD_UNSHELVE, o->alarm, 0, now);
                break;
            case OOS:
                rc = command(f, CH_CMD_OUT_OF_SERVICE, o->alarm, 0, now);
                break;
            default:
                rc = command(f, CH_CMD_IN_SERVICE, o->alarm, 0, now);
                break;
            }
            char got[256];
            events_since(f, mark, got, sizeof got);
            if (rc != o->rc || strcmp(got, o->want) != 0)
                fail_msg("%s: at t=%llds want rc %d '%s', got rc %d '%s'", acases[c].name,
                         (long long)o->t, o->rc, o->want, rc, got);
        }
        assert_false(f->overlapped);
        fx_close(f);
        free(f);
    }
}

/* The fields of the transitions tell one consistent occurrence. */
static void test_occurrence_fields(void **state)
{
    (void)state;
    struct fx *f = calloc(1, sizeof *f);
    fx_open(f);
    cond(f, "med:d1", true, 1600, AT(0));
    tick(f, AT(60));
    tick(f, AT(120));
    cond(f, "med:d1", false, 0, AT(130));
    cond(f, "med:d1", true, 1700, AT(140)); /* chatter: the same occurrence */
    assert_int_equal(command(f, CH_CMD_ACK, "med:d1", 0, AT(150)), 0);
    cond(f, "med:d1", false, 0, AT(160));
    assert_int_equal(f->n, 7);
    const struct ch_alert *raise = &f->got[0], *esc2 = &f->got[2], *rtn = &f->got[3];
    const struct ch_alert *again = &f->got[4], *ack = &f->got[5], *clear = &f->got[6];
    assert_string_equal(raise->alarm_id, "med:d1");
    assert_string_equal(raise->rule, "med");
    assert_string_equal(raise->device, "d1");
    assert_string_equal(raise->room, "r1");
    assert_int_equal(raise->priority, CH_PRIO_MEDIUM);
    assert_int_equal(raise->raised_ms, AT(0));
    assert_int_equal(raise->ts_ms, AT(0));
    assert_string_equal(raise->metric, "co2");
    assert_true(raise->has_value && raise->value == 1600);
    assert_string_equal(raise->message, "test message");
    assert_int_equal(esc2->escalation, 2);
    assert_int_equal(rtn->cleared_ms, AT(130));
    assert_int_equal(again->event, CH_AE_RAISE);
    assert_int_equal(again->raised_ms, AT(0)); /* not a new alarm */
    assert_int_equal(again->cleared_ms, 0);
    assert_int_equal(again->escalation, 2);
    assert_int_equal(ack->acked_ms, AT(150));
    assert_string_equal(ack->by, "console:nurse1");
    assert_int_equal(clear->cleared_ms, AT(160));
    assert_int_equal(clear->raised_ms, AT(0));
    struct alarms_stats st;
    alarms_get_stats(f->am, &st);
    assert_int_equal(st.transitions, 7);
    assert_int_equal(st.raised, 2);
    assert_int_equal(st.active, 0);
    /* a new occurrence after normal */
    cond(f, "med:d1", true, 1600, AT(200));
    assert_int_equal(f->got[7].raised_ms, AT(200));
    assert_int_equal(f->got[7].escalation, 0);
    assert_int_equal(f->got[7].acked_ms, 0);
    /* bed and resident come from the resident owning the device */
    cond(f, "sos:d-call", true, 1, AT(210));
    assert_string_equal(f->got[8].bed, "b7");
    assert_string_equal(f->got[8].resident, "R-1");
    assert_string_equal(f->got[8].room, "r7");
    assert_true(f->got[8].latched);
    fx_close(f);
    free(f);
}

/* More than flood_count (3) raises within flood_window (60 s): a flood
 * alert; low-priority alarms are grouped while it lasts; it ends when the
 * rate is back under half the limit. */
static void test_flood(void **state)
{
    (void)state;
    struct fx *f = calloc(1, sizeof *f);
    fx_open(f);
    cond(f, "lo:d1", true, 1, AT(0));
    cond(f, "lo:d2", true, 1, AT(1));
    cond(f, "lo:d3", true, 1, AT(2));
    assert_int_equal(f->n, 3);
    cond(f, "lo:d4", true, 1, AT(3));
    assert_int_equal(f->n, 5);
    const struct ch_alert *fl = &f->got[4];
    assert_int_equal(fl->event, CH_AE_FLOOD);
    assert_string_equal(fl->alarm_id, "flood:gw-1");
    assert_string_equal(fl->rule, "flood");
    assert_string_equal(fl->device, "gw-1");
    assert_int_equal(fl->priority, CH_PRIO_HIGH);
    assert_int_equal(fl->state, CH_AS_UNACK);
    assert_string_equal(f->got[3].group, ""); /* the raise that started it */
    cond(f, "lo:d5", true, 1, AT(5));
    assert_string_equal(f->got[5].group, "flood:gw-1");
    cond(f, "med:d6", true, 1600, AT(6));
    assert_string_equal(f->got[6].group, ""); /* only low priority is grouped */
    struct ch_alert *act;
    size_t n = alarms_active(f->am, &act);
    assert_int_equal(n, 7); /* the flood alarm and six alarms */
    assert_string_equal(act[0].alarm_id, "flood:gw-1");
    assert_string_equal(act[1].alarm_id, "med:d6");
    assert_string_equal(act[2].alarm_id, "lo:d1");
    assert_string_equal(act[2].group, "flood:gw-1");
    free(act);
    assert_int_equal(command(f, CH_CMD_ACK, "flood:gw-1", 0, AT(7)), 0);
    /* raises at 0 1 2 3 5 6: at 64 two remain in the window (not under half
     * of 3), at 65 one */
    size_t mark = f->n;
    tick(f, AT(64));
    assert_int_equal(f->n, mark);
    tick(f, AT(65));
    assert_int_equal(f->n, mark + 1);
    assert_int_equal(f->got[mark].event, CH_AE_FLOOD_END);
    assert_int_equal(f->got[mark].state, CH_AS_NORMAL);
    cond(f, "lo:d1", false, 0, AT(70));
    assert_string_equal(f->got[f->n - 1].group, "");
    struct alarms_stats st;
    alarms_get_stats(f->am, &st);
    assert_int_equal(st.floods, 1);
    fx_close(f);
    free(f);
}

static void test_annunciate_mask(void **state)
{
    (void)state;
    struct fx *f = calloc(1, sizeof *f);
    fx_open(f);
    assert_int_equal(alarms_annunciate_mask(f->am, true, 0), 0);
    cond(f, "lo:d1", true, 1, AT(0));
    cond(f, "sos:d-call", true, 1, AT(1));
    assert_int_equal(alarms_annunciate_mask(f->am, false, 0),
                     (1u << CH_PRIO_LOW) | (1u << CH_PRIO_HIGH));
    command(f, CH_CMD_ACK, "sos:d-call", 0, AT(2));
    assert_int_equal(alarms_annunciate_mask(f->am, false, 0), 1u << CH_PRIO_LOW);
    assert_int_equal(alarms_annunciate_mask(f->am, true, 0),
                     (1u << CH_PRIO_LOW) | (1u << CH_PRIO_HIGH));
    /* a sounder for escalated alarms: silent until the medium one escalates */
    cond(f, "med:d1", true, 1600, AT(3));
    assert_int_equal(alarms_annunciate_mask(f->am, false, 1), 0);
    tick(f, AT(3 + 60));
    assert_int_equal(alarms_annunciate_mask(f->am, false, 1), 1u << CH_PRIO_MEDIUM);
    assert_int_equal(alarms_annunciate_mask(f->am, false, 2), 0);
    tick(f, AT(3 + 120));
    assert_int_equal(alarms_annunciate_mask(f->am, false, 2), 1u << CH_PRIO_MEDIUM);
    command(f, CH_CMD_ACK, "med:d1", 0, AT(124));
    assert_int_equal(alarms_annunciate_mask(f->am, false, 1), 0);
    fx_close(f);
    free(f);
}

/* Who was told: a "notified" transition of the occurrence, its state
 * unchanged, each with a time of its own (several at once get one ms
 * apart); nothing for another occurrence or an unknown alarm. */
static void test_notified(void **state)
{
    (void)state;
    struct fx *f = calloc(1, sizeof *f);
    fx_open(f);
    cond(f, "sos:d-call", true, 1, AT(0));
    size_t n = f->n;
    int64_t raised = f->got[n - 1].raised_ms;
    alarms_note(f->am, "sos:d-call", raised, 0, "值班护理员群", "企业微信 ok", clk(f, AT(5)));
    alarms_note(f->am, "sos:d-call", raised, 1, "护士长", "短信 139****0002 ok", clk(f, AT(5)));
    alarms_note(f->am, "sos:d-call", raised - 1, 1, "护士长", "an older occurrence", clk(f, AT(5)));
    alarms_note(f->am, "nope:d-call", raised, 1, "护士长", "unknown", clk(f, AT(5)));
    assert_int_equal(f->n, n + 2);
    const struct ch_alert *a = &f->got[n], *b = &f->got[n + 1];
    assert_int_equal(a->event, CH_AE_NOTIFIED);
    assert_int_equal(a->state, CH_AS_UNACK);
    assert_string_equal(a->by, "值班护理员群");
    assert_string_equal(a->message, "企业微信 ok");
    assert_int_equal(a->escalation, 0);
    assert_int_equal(b->escalation, 1);
    assert_int_equal(a->ts_ms, AT(5));
    assert_int_equal(b->ts_ms, AT(5) + 1); /* one label each */
    assert_int_equal(a->raised_ms, raised);
    char *json = ch_alert_encode(a); /* within the contract */
    assert_non_null(json);
    free(json);
    fx_close(f);
    free(f);
}

/* A latched SOS is still active after care-edge restarts; a shelved alarm
 * still expires; history is still there. */
static void test_state_survives_restart(void **state)
{
    (void)state;
    struct fx *f = calloc(1, sizeof *f);
    fx_open(f);
    cond(f, "sos:d-call", true, 1, AT(0));
    cond(f, "sos:d-call", false, 0, AT(1));
    cond(f, "lo:d1", true, 1, AT(2));
    command(f, CH_CMD_SHELVE, "lo:d1", 60000, AT(3));
    command(f, CH_CMD_OUT_OF_SERVICE, "lo:d2", 0, AT(4));
    cond(f, "med:d1", true, 1600, AT(5));
    fx_reopen(f);
    struct ch_alert *act;
    size_t n = alarms_active(f->am, &act);
    assert_int_equal(n, 4);
    assert_string_equal(act[0].alarm_id, "sos:d-call");
    assert_int_equal(act[0].state, CH_AS_UNACK);
    assert_int_equal(act[0].raised_ms, AT(0));
    assert_string_equal(act[0].resident, "R-1");
    free(act);
    struct ch_alert *h;
    n = alarms_history(f->am, 0, &h);
    assert_int_equal(n, 5);
    free(h);
    /* the rules engine says the condition is gone: still latched */
    size_t mark = f->n;
    cond(f, "sos:d-call", false, 0, AT(100));
    assert_int_equal(f->n, mark);
    /* escalation timing carried over: med escalates 60 s after its raise */
    tick(f, AT(65));
    char got[256];
    events_since(f, mark, got, sizeof got);
    assert_string_equal(got, "unshelve>normal raise>unack escalate>unack");
    assert_int_equal(command(f, CH_CMD_ACK, "sos:d-call", 0, AT(120)), 0);
    assert_int_equal(f->got[f->n - 1].state, CH_AS_NORMAL);
    assert_int_equal(command(f, CH_CMD_IN_SERVICE, "lo:d2", 0, AT(121)), 0);
    fx_reopen(f);
    n = alarms_active(f->am, &act);
    assert_int_equal(n, 2); /* lo:d1 raised again, med:d1 */
    free(act);
    fx_close(f);
    free(f);
}

/* A wearable's alarm says where the wearer is (the zone of its latest
 * reading), not the configured room: at the raise, after a move while it
 * is active (a latched SOS whose button is released too: in the views at
 * once, in its next transition), across a restart; a device without a zone
 * keeps its configured room. */
static void test_where(void **state)
{
    (void)state;
    struct fx *f = calloc(1, sizeof *f);
    fx_open(f);
    const struct rule_cfg *sos = rule(f, "sos");
    const struct device_cfg *call = device(f, "d-call");
    const struct resident_cfg *res = resident(f, "d-call");
    alarms_condition(f->am, sos, call, res, true, "sos", 1, "corridor-2", "SOS", clk(f, AT(0)));
    assert_int_equal(f->n, 1);
    assert_string_equal(f->got[0].room, "corridor-2");
    alarms_condition(f->am, sos, call, res, false, NULL, 0, "corridor-2", NULL, clk(f, AT(1)));
    size_t mark = f->n;
    alarms_where(f->am, call, "exit-east", clk(f, AT(2)));
    assert_int_equal(f->n, mark); /* no transition of its own */
    struct ch_alert *act;
    assert_int_equal(alarms_active(f->am, &act), 1);
    assert_string_equal(act[0].room, "exit-east");
    free(act);
    fx_reopen(f);
    assert_int_equal(alarms_active(f->am, &act), 1);
    assert_string_equal(act[0].room, "exit-east");
    free(act);
    assert_int_equal(command(f, CH_CMD_ACK, "sos:d-call", 0, AT(10)), 0);
    assert_string_equal(f->got[f->n - 1].room, "exit-east");
    assert_int_equal(f->got[f->n - 1].state, CH_AS_NORMAL);
    /* back to normal: a move changes nothing; the next raise has its own */
    alarms_where(f->am, call, "dining", clk(f, AT(11)));
    alarms_condition(f->am, sos, call, res, true, "sos", 1, NULL, "SOS", clk(f, AT(20)));
    assert_string_equal(f->got[f->n - 1].room, "r7"); /* no zone: the resident's room */
    cond(f, "med:d1", true, 1600, AT(21));
    assert_string_equal(f->got[f->n - 1].room, "r1");
    fx_close(f);
    free(f);
}

static void test_damaged_state_file(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "this is not json",
        "{\"format\":\"carehub-alarm-state/1\",\"alarms\":[",
        "{}",
        "{\"format\":\"carehub-alarm-state/9\",\"alarms\":[],\"flood\":{\"active\":false,"
        "\"raises\":[]},\"history\":[]}",
        "{\"format\":\"carehub-alarm-state/1\",\"alarms\":[{\"id\":1}],\"flood\":{\"active\":"
        "false,\"raises\":[]},\"history\":[]}",
        "{\"format\":\"carehub-alarm-state/1\",\"alarms\":[],\"flood\":{\"active\":false,"
        "\"raises\":[\"x\"]},\"history\":[]}",
        "{\"format\":\"carehub-alarm-state/1\",\"alarms\":[],\"flood\":{\"active\":false,"
        "\"raises\":[]},\"history\":[{\"alarm_id\":\"lo:d1\"}]}",
    };
    for (size_t i = 0; i < CH_ARRAY_LEN(bad); i++) {
        struct fx *f = calloc(1, sizeof *f);
        fx_open(f);
        cond(f, "sos:d-call", true, 1, AT(0));
        alarms_close(f->am);
        f->am = NULL;
        const char *path = f->s.cfg.alarms.state_file;
        write_file(path, bad[i]);
        struct capture cap;
        char out[4096];
        assert_int_equal(capture_begin(&cap), 0);
        int rc = alarms_open(&f->s.cfg, sink, f, clk(f, AT(0)), &f->am);
        capture_end(&cap, out, sizeof out);
        assert_int_equal(rc, 0);
        if (!strstr(out, "damaged") || !strstr(out, ".bad"))
            fail_msg("case %zu: not reported: %s", i, out);
        char badp[512];
        snprintf(badp, sizeof badp, "%s.bad", path);
        assert_int_equal(access(badp, F_OK), 0);
        assert_int_not_equal(access(path, F_OK), 0);
        struct ch_alert *act;
        assert_int_equal(alarms_active(f->am, &act), 0);
        /* and it works on */
        register_all(f);
        cond(f, "lo:d1", true, 1, AT(10));
        assert_int_equal(alarms_active(f->am, &act), 1);
        free(act);
        fx_close(f);
        free(f);
    }
}

/* An alarm whose rule is gone from the configuration is dropped, not fatal. */
static void test_state_unknown_rule(void **state)
{
    (void)state;
    struct fx *f = calloc(1, sizeof *f);
    fx_open(f);
    alarms_close(f->am);
    f->am = NULL;
    write_file(f->s.cfg.alarms.state_file,
               "{\"format\":\"carehub-alarm-state/1\",\"alarms\":[{\"id\":\"gone:d1\","
               "\"state\":\"unack\",\"cond\":true,\"escalation\":0,\"raised_ms\":1,"
               "\"acked_ms\":0,\"cleared_ms\":0,\"shelved_until_ms\":0,\"next_escalate_ms\":0,"
               "\"last_event\":\"raise\",\"last_ms\":1,\"by\":\"\",\"metric\":\"co2\","
               "\"message\":\"\"}],\"flood\":{\"active\":false,\"raises\":[1]},\"history\":[]}");
    struct capture cap;
    char out[4096];
    assert_int_equal(capture_begin(&cap), 0);
    assert_int_equal(alarms_open(&f->s.cfg, sink, f, clk(f, AT(0)), &f->am), 0);
    capture_end(&cap, out, sizeof out);
    assert_non_null(strstr(out, "gone:d1"));
    assert_null(strstr(out, "damaged"));
    struct ch_alert *act;
    assert_int_equal(alarms_active(f->am, &act), 0);
    fx_close(f);
    free(f);
}

/* History: at most history_max (10), no older than history (1 min here is
 * the minimum the config allows: the test site keeps the 24h default). */
static void test_history_bounds(void **state)
{
    (void)state;
    struct fx *f = calloc(1, sizeof *f);
    fx_open(f);
    for (int i = 0; i < 15; i++) {
        cond(f, "lo:d1", true, 1, AT(2 * i));
        cond(f, "lo:d1", false, 0, AT(2 * i + 1));
    }
    struct ch_alert *h;
    size_t n = alarms_history(f->am, 0, &h);
    assert_int_equal(n, 10);
    assert_int_equal(h[9].ts_ms, AT(29));
    assert_int_equal(h[0].ts_ms, AT(20));
    free(h);
    n = alarms_history(f->am, AT(25), &h);
    assert_int_equal(n, 5);
    free(h);
    /* a day later only what that tick did is left: the end of the flood the
     * fifteen raises within a minute made */
    tick(f, AT(30) + 24LL * 3600 * 1000);
    n = alarms_history(f->am, 0, &h);
    assert_int_equal(n, 1);
    assert_int_equal(h[0].event, CH_AE_FLOOD_END);
    free(h);
    fx_close(f);
    free(f);
}

/* Wall-clock time only labels: a transition carries the wall clock of its
 * moment; a shelving's end shows as the wall clock now plus what is left;
 * history keeps the order made, is searched by label and kept by the
 * monotonic clock. */
static void test_clock_labels(void **state)
{
    (void)state;
    struct fx *f = calloc(1, sizeof *f);
    fx_open(f);
    cond(f, "med:d1", true, 1600, AT(0));
    f->skew = -HOUR;
    assert_int_equal(command(f, CH_CMD_SHELVE, "med:d1", 600000, AT(10)), 0);
    const struct ch_alert *sh = &f->got[f->n - 1];
    assert_int_equal(sh->event, CH_AE_SHELVE);
    assert_int_equal(sh->ts_ms, AT(10) - HOUR);
    assert_int_equal(sh->raised_ms, AT(0)); /* as labelled when it happened */
    assert_int_equal(sh->shelved_until_ms, AT(610) - HOUR);
    f->skew = HOUR; /* and forward two hours */
    tick(f, AT(20));
    struct ch_alert *act;
    assert_int_equal(alarms_active(f->am, &act), 1);
    assert_int_equal(act[0].state, CH_AS_SHELVED);
    assert_int_equal(act[0].shelved_until_ms, AT(610) + HOUR); /* wall now + 590 s */
    free(act);
    struct ch_alert *h;
    assert_int_equal(alarms_history(f->am, 0, &h), 2);
    assert_int_equal(h[0].event, CH_AE_RAISE);
    assert_int_equal(h[1].event, CH_AE_SHELVE); /* made later, labelled earlier */
    free(h);
    assert_int_equal(alarms_history(f->am, AT(0), &h), 1);
    assert_int_equal(h[0].event, CH_AE_RAISE);
    free(h);
    assert_int_equal(alarms_history(f->am, AT(1), &h), 0);
    /* kept for history_ms (24 h) on the monotonic clock: a month's step of
     * the wall clock throws nothing away */
    f->skew = 30 * 24 * HOUR;
    tick(f, AT(30));
    assert_int_equal(alarms_history(f->am, 0, &h), 2);
    free(h);
    fx_close(f);
    free(f);
}

/* The flood window runs on the monotonic clock. */
static void test_flood_clock(void **state)
{
    (void)state;
    struct fx *f = calloc(1, sizeof *f);
    fx_open(f);
    for (int i = 0; i < 4; i++) {
        char id[16];
        snprintf(id, sizeof id, "lo:d%d", i + 1);
        cond(f, id, true, 1, AT(i));
    }
    assert_int_equal(f->got[f->n - 1].event, CH_AE_FLOOD);
    size_t mark = f->n;
    f->skew = HOUR;
    tick(f, AT(5)); /* on the wall clock every raise is an hour old: over */
    assert_int_equal(f->n, mark);
    f->skew = -HOUR;
    tick(f, AT(61)); /* raises at 2 and 3 are within 60 s */
    assert_int_equal(f->n, mark);
    tick(f, AT(62));
    assert_int_equal(f->n, mark + 1);
    assert_int_equal(f->got[mark].event, CH_AE_FLOOD_END);
    assert_int_equal(f->got[mark].cleared_ms, AT(62) - HOUR);
    fx_close(f);
    free(f);
}

static bool file_has(const char *path, const char *needle)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return false;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

/* The state file across restarts and reboots: it holds wall-clock times
 * (the monotonic clock restarts at boot); what a timer had left at the save
 * is carried over less the downtime, never more than it had left. */
static void test_state_clock(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int64_t skew;    /* of the wall clock at reopen */
        bool reboot;     /* the monotonic clock restarted */
        int64_t esc_at;  /* the first escalation of med:d1 (s) */
        int64_t shel_at; /* lo:d1's shelving ends (s) */
        const char *log; /* alarms_open says this, or NULL */
    } cases[] = {
        {"restart after 100 s, clocks as before", 0, false, 100, 600, NULL},
        {"reboot, the wall clock at its last saved time (RTC-less board)", -100000, true, 160, 700,
         NULL},
        {"reboot, the wall clock in 1970", -AT(0), true, 160, 700, "ahead of the wall clock"},
        {"reboot, the wall clock a day ahead", 24 * HOUR, true, 100, 100, NULL},
    };
    for (size_t c = 0; c < CH_ARRAY_LEN(cases); c++) {
        struct fx *f = calloc(1, sizeof *f);
        fx_open(f);
        cond(f, "med:d1", true, 1600, AT(0)); /* escalates every 60 s */
        cond(f, "lo:d1", true, 1, AT(0));
        assert_int_equal(command(f, CH_CMD_SHELVE, "lo:d1", 600000, AT(0)), 0);
        char want[64];
        snprintf(want, sizeof want, "\"shelved_until_ms\":%lld", (long long)AT(600));
        if (!file_has(f->s.cfg.alarms.state_file, want))
            fail_msg("%s: the state file has no %s", cases[c].name, want);
        /* down from 0 to 100 s */
        f->skew = cases[c].skew;
        if (cases[c].reboot)
            f->mono_off = -(MONO0 + 100000) + 5000; /* 5 s after boot at t=100 */
        struct capture cap;
        char out[4096];
        assert_int_equal(capture_begin(&cap), 0);
        fx_reopen_at(f, AT(100));
        capture_end(&cap, out, sizeof out);
        if (cases[c].log && !strstr(out, cases[c].log))
            fail_msg("%s: alarms_open did not say '%s': %s", cases[c].name, cases[c].log, out);
        size_t mark = f->n;
        int64_t last = cases[c].esc_at > cases[c].shel_at ? cases[c].esc_at : cases[c].shel_at;
        int64_t esc = -1, shel = -1;
        for (int64_t t = 100; t <= last + 1 && (esc < 0 || shel < 0); t++) {
            tick(f, AT(t));
            for (; mark < f->n; mark++) {
                if (f->got[mark].event == CH_AE_ESCALATE && esc < 0)
                    esc = t;
                if (f->got[mark].event == CH_AE_UNSHELVE && shel < 0)
                    shel = t;
            }
        }
        if (esc != cases[c].esc_at || shel != cases[c].shel_at)
            fail_msg("%s: want escalation at %llds, unshelve at %llds; got %llds, %llds",
                     cases[c].name, (long long)cases[c].esc_at, (long long)cases[c].shel_at,
                     (long long)esc, (long long)shel);
        fx_close(f);
        free(f);
    }
}

struct worker {
    struct fx *f;
    const char *id;
    int64_t base;
};

static void *hammer(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 100; i++) {
        cond(w->f, w->id, true, 1, w->base + i * 10);
        command(w->f, CH_CMD_ACK, w->id, 0, w->base + i * 10 + 1);
        cond(w->f, w->id, false, 0, w->base + i * 10 + 2);
        tick(w->f, w->base + i * 10 + 3);
    }
    return NULL;
}

/* The gateway's own alarm spool-failed: the usual life cycle, the gateway
 * as its device, high priority (the sounder), kept across a reload (no rules
 * engine reports it) and a restart. */
static void test_self_alarm(void **state)
{
    (void)state;
    struct fx *f = calloc(1, sizeof *f);
    fx_open(f);
    size_t mark = f->n;
    alarms_self(f->am, ALARM_SELF_SPOOL, true, "storage failure", clk(f, AT(0)));
    assert_int_equal(f->n, mark + 1);
    const struct ch_alert *t = &f->got[mark];
    assert_string_equal(t->alarm_id, "spool-failed:gw-1");
    assert_string_equal(t->rule, "spool-failed");
    assert_string_equal(t->device, "gw-1");
    assert_string_equal(t->message, "storage failure");
    assert_int_equal(t->priority, CH_PRIO_HIGH);
    assert_int_equal(t->event, CH_AE_RAISE);
    assert_false(t->latched);
    assert_int_equal(alarms_annunciate_mask(f->am, false, 0), 1u << CH_PRIO_HIGH);
    alarms_self(f->am, ALARM_SELF_SPOOL, true, "disk full", clk(f, AT(1))); /* no transition */
    assert_int_equal(f->n, mark + 1);
    struct ch_alert *act;
    assert_int_equal(alarms_active(f->am, &act), 1);
    assert_string_equal(act[0].message, "disk full"); /* the view follows */
    free(act);
    /* a reload keeps it: its condition does not end */
    alarms_reconfigure(f->am, &f->s.cfg);
    register_all(f);
    alarms_reconfigured(f->am, clk(f, AT(2)));
    assert_int_equal(f->n, mark + 1);
    /* a restart keeps it */
    fx_reopen(f);
    assert_int_equal(alarms_active(f->am, &act), 1);
    assert_string_equal(act[0].alarm_id, "spool-failed:gw-1");
    assert_int_equal(act[0].state, CH_AS_UNACK);
    free(act);
    assert_int_equal(command(f, CH_CMD_ACK, "spool-failed:gw-1", 0, AT(10)), 0);
    alarms_self(f->am, ALARM_SELF_SPOOL, false, NULL, clk(f, AT(20)));
    alarms_self(f->am, ALARM_SELF_SPOOL, true, "again", clk(f, AT(100)));
    alarms_self(f->am, ALARM_SELF_SPOOL, false, NULL, clk(f, AT(110)));
    char got[256];
    events_since(f, mark + 1, got, sizeof got);
    assert_string_equal(got, "ack>acked clear>normal raise>unack rtn>rtn_unack");
    fx_close(f);
    free(f);
}

/* Reopens the module with the state file at path (relative to the test's
 * directory) and the runtime directory at rundir (NULL: none). */
static void fx_reopen_state(struct fx *f, const char *path, const char *rundir)
{
    char p[512];
    alarms_close(f->am);
    f->am = NULL;
    snprintf(p, sizeof p, "%s/%s", f->dir, path);
    free(f->s.cfg.alarms.state_file);
    f->s.cfg.alarms.state_file = ch_xstrdup(p);
    if (rundir) {
        snprintf(p, sizeof p, "%s/%s", f->dir, rundir);
        setenv("RUNTIME_DIRECTORY", p, 1);
    } else {
        unsetenv("RUNTIME_DIRECTORY");
    }
    assert_int_equal(alarms_open(&f->s.cfg, sink, f, clk(f, f->last), &f->am), 0);
    register_all(f);
}

/* The state file cannot be written (its disk failed): the state goes to the
 * fallback in the runtime directory, said once, read back at a restart, and
 * removed once the state file works again; if neither can be written, the
 * gateway's own alarm state-save-failed says so. */
static void test_state_fallback(void **state)
{
    (void)state;
    struct fx *f = calloc(1, sizeof *f);
    fx_open(f);
    char p[512];
    snprintf(p, sizeof p, "%s/broken", f->dir);
    write_file(p, "a file where the state file's directory should be\n");
    fx_reopen_state(f, "broken/alarms.state", "run");
    struct capture cap;
    char out[8192];
    assert_int_equal(capture_begin(&cap), 0);
    cond(f, "sos:d-call", true, 1, AT(0));
    cond(f, "lo:d1", true, 1, AT(100));
    capture_end(&cap, out, sizeof out);
    assert_non_null(strstr(out, "cannot write the alarm state to"));
    assert_non_null(strstr(out, "/run/alarms-"));
    assert_null(strstr(out + (strstr(out, "/run/alarms-") - out) + 1, "cannot write")); /* once */
    struct alarms_stats st;
    alarms_get_stats(f->am, &st);
    assert_true(st.state_fallback);
    assert_false(st.state_unsaved);
    assert_int_equal(st.state_errors, 2);
    /* a restart, the disk still failing: the fallback is read */
    assert_int_equal(capture_begin(&cap), 0);
    fx_reopen_state(f, "broken/alarms.state", "run");
    capture_end(&cap, out, sizeof out);
    assert_non_null(strstr(out, "read from the fallback"));
    struct ch_alert *act;
    assert_int_equal(alarms_active(f->am, &act), 2);
    free(act);
    /* the disk is back: the state file is written, the fallback goes */
    assert_int_equal(unlink(p), 0);
    assert_int_equal(mkdir(p, 0700), 0);
    assert_int_equal(capture_begin(&cap), 0);
    assert_int_equal(command(f, CH_CMD_ACK, "lo:d1", 0, AT(200)), 0);
    capture_end(&cap, out, sizeof out);
    assert_non_null(strstr(out, "saved to"));
    assert_non_null(strstr(out, "removed"));
    alarms_get_stats(f->am, &st);
    assert_false(st.state_fallback);
    /* neither the state file nor the fallback: state-save-failed */
    char st_path[600];
    snprintf(st_path, sizeof st_path, "%s/alarms.state", p);
    assert_int_equal(unlink(st_path), 0);
    assert_int_equal(rmdir(p), 0);
    write_file(p, "broken again\n");
    snprintf(p, sizeof p, "%s/runfile", f->dir);
    write_file(p, "not a directory\n");
    fx_reopen_state(f, "broken/alarms.state", "runfile");
    size_t mark = f->n;
    assert_int_equal(capture_begin(&cap), 0);
    cond(f, "lo:d2", true, 1, AT(300));
    cond(f, "lo:d3", true, 1, AT(400));
    capture_end(&cap, out, sizeof out);
    assert_int_equal(f->n, mark + 3);
    assert_string_equal(f->got[mark + 1].alarm_id, "state-save-failed:gw-1");
    assert_int_equal(f->got[mark + 1].event, CH_AE_RAISE);
    assert_int_equal(f->got[mark + 1].priority, CH_PRIO_MEDIUM);
    assert_non_null(strstr(f->got[mark + 1].message, "cannot be saved"));
    assert_non_null(strstr(out, "nor to"));
    assert_null(strstr(strstr(out, "nor to") + 1, "nor to")); /* said once */
    alarms_get_stats(f->am, &st);
    assert_true(st.state_unsaved);
    fx_reopen_state(f, "alarms.state", NULL);
    unsetenv("RUNTIME_DIRECTORY");
    fx_close(f);
    free(f);
}

/* Threads: the sink is never entered twice at once and sees every
 * transition once. */
static void test_threads(void **state)
{
    (void)state;
    struct fx *f = calloc(1, sizeof *f);
    fx_open(f);
    f->call_back = true;
    struct worker w[2] = {{f, "med:d1", AT(0)}, {f, "med:d2", AT(0)}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, hammer, &w[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    struct alarms_stats st;
    alarms_get_stats(f->am, &st);
    assert_false(f->overlapped);
    assert_int_equal(f->seen, st.transitions);
    assert_true(st.transitions >= 2 * 100 * 3); /* raise, ack, clear each time, and a flood */
    fx_close(f);
    free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_life_cycle),
        cmocka_unit_test(test_occurrence_fields),
        cmocka_unit_test(test_flood),
        cmocka_unit_test(test_annunciate_mask),
        cmocka_unit_test(test_notified),
        cmocka_unit_test(test_state_survives_restart),
        cmocka_unit_test(test_where),
        cmocka_unit_test(test_damaged_state_file),
        cmocka_unit_test(test_state_unknown_rule),
        cmocka_unit_test(test_history_bounds),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_clock_labels),
        cmocka_unit_test(test_flood_clock),
        cmocka_unit_test(test_state_clock),
        cmocka_unit_test(test_self_alarm),
        cmocka_unit_test(test_state_fallback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
