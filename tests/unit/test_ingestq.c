/* The ingest queue: small telemetry handled at once unless its gateway has
 * some queued, gateways served in turn (a long queue gets one message per
 * turn), each gateway's messages in order, a gateway's bound and the total
 * bound (beyond: shed, counted, not acknowledged), alarm transitions handled
 * by their own worker while telemetry is stuck, and everything queued handed
 * over at close. The sink holds telemetry while a test wants the queue to
 * fill; the messages are larger than INGESTQ_SYNC_MAX unless a test says. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "acks.h"
#include "hubcfg.h"
#include "ingest.h"
#include "ingestq.h"
#include "log.h"
#include "registry.h"
#include "util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct capture {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool hold;           /* telemetry waits in the sink while set */
    char hold_only;      /* ... only that of devices starting with this letter, if set */
    int telemetry_calls; /* telemetry hand-overs */
    int alert_calls;
    char order[64][8]; /* the device of each telemetry hand-over */
};

static int sink(void *ctx, char *data, size_t len, size_t lines, enum ingest_points kind)
{
    (void)len, (void)lines;
    struct capture *c = ctx;
    pthread_mutex_lock(&c->lock);
    if (kind == INGEST_ALERTS) {
        c->alert_calls++;
    } else {
        const char *d = strstr(data, "device=");
        if (d && c->telemetry_calls < 64)
            sscanf(d + 7, "%7[^,]", c->order[c->telemetry_calls]);
        int i = c->telemetry_calls++;
        while (c->hold && (!c->hold_only || (i < 64 && c->order[i][0] == c->hold_only)))
            pthread_cond_wait(&c->cond, &c->lock);
    }
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    free(data);
    return 0;
}

struct fx {
    struct capture cap;
    struct hubcfg_ingest cfg;
    struct registry *reg;
    struct ingest *in;
    struct acks *acks;
    struct ingestq *q;
};

static int setup(void **state)
{
    struct fx *f = ch_xcalloc(1, sizeof *f);
    pthread_mutex_init(&f->cap.lock, NULL);
    pthread_cond_init(&f->cap.cond, NULL);
    f->cfg = (struct hubcfg_ingest){.rate = 1000000,
                                    .burst = 1000000,
                                    .max_devices = 100,
                                    .devices_before_birth = 100,
                                    .queue_bytes = 1 << 20,
                                    .queue_max_bytes = 1 << 22,
                                    .workers = 1};
    *state = f;
    return 0;
}

static void start(struct fx *f)
{
    f->reg = registry_new(&f->cfg);
    f->in = ingest_new(NULL, sink, &f->cap);
    f->acks = acks_new();
    ingest_set_registry(f->in, f->reg);
    ingest_set_acks(f->in, f->acks);
    f->q = ingestq_new(f->in, f->reg, &f->cfg);
    assert_non_null(f->q);
}

static int teardown(void **state)
{
    struct fx *f = *state;
    ingestq_close(f->q);
    ingest_free(f->in);
    registry_free(f->reg);
    acks_free(f->acks);
    pthread_cond_destroy(&f->cap.cond);
    pthread_mutex_destroy(&f->cap.lock);
    free(f);
    return 0;
}

static void hold(struct fx *f, bool on)
{
    pthread_mutex_lock(&f->cap.lock);
    f->cap.hold = on;
    pthread_cond_broadcast(&f->cap.cond);
    pthread_mutex_unlock(&f->cap.lock);
}

/* Waits until the sink had n telemetry hand-overs. */
static void wait_telemetry(struct fx *f, int n)
{
    int64_t end = ch_mono_ms() + 5000;
    pthread_mutex_lock(&f->cap.lock);
    while (f->cap.telemetry_calls < n && ch_mono_ms() < end)
        ch_cond_wait_until(&f->cap.cond, &f->cap.lock, end);
    int got = f->cap.telemetry_calls;
    pthread_mutex_unlock(&f->cap.lock);
    assert_int_equal(got, n);
}

/* Padding that makes a message too large to be handled at once. */
#define BIG (INGESTQ_SYNC_MAX + 1)
/* About the size of a message padded with BIG + 1000. */
#define M_EST (BIG + 1300)

/* A telemetry message of gateway gw whose one reading is of device dev,
 * padded with pad bytes. */
static void push_small(struct fx *f, const char *gw, const char *dev, size_t pad)
{
    char *m = ch_xmalloc(pad + 512);
    int n = snprintf(m, pad + 512,
                     "{\"schema\":\"carehub/telemetry/1\",\"site\":\"s\",\"gateway\":\"%s\","
                     "\"seq\":1,\"ts\":1763850000123,\"readings\":[{\"device\":\"%s\","
                     "\"measurement\":\"m\",\"ts\":1,\"quality\":\"good\",\"metrics\":{\"x\":1}}]",
                     gw, dev);
    memset(m + n, ' ', pad);
    strcpy(m + n + pad, "}");
    char topic[128];
    snprintf(topic, sizeof topic, "carehub/v1/s/%s/telemetry", gw);
    ingestq_push(f->q, topic, m, strlen(m), false, 1763850099000);
    free(m);
}

/* The same, too large to be handled at once (pad more bytes beyond that). */
static void push_tel(struct fx *f, const char *gw, const char *dev, size_t pad)
{
    push_small(f, gw, dev, BIG + pad);
}

/* A small message whose gateway has nothing queued is handled before the
 * push returns; one whose gateway has messages waiting goes behind them. */
static void test_small_at_once(void **state)
{
    struct fx *f = *state;
    start(f);
    push_small(f, "a", "a1", 0);
    assert_int_equal(f->cap.telemetry_calls, 1); /* at once, on this thread */
    f->cap.hold_only = 'b';
    hold(f, true);
    push_tel(f, "b", "b1", 0);
    wait_telemetry(f, 2); /* the worker holds b1 */
    push_tel(f, "b", "b2", 0);
    push_small(f, "b", "b3", 0); /* behind b2, in order */
    push_small(f, "c", "c1", 0); /* nothing of c waits: at once */
    pthread_mutex_lock(&f->cap.lock);
    assert_int_equal(f->cap.telemetry_calls, 3);
    assert_string_equal(f->cap.order[2], "c1");
    pthread_mutex_unlock(&f->cap.lock);
    hold(f, false);
    wait_telemetry(f, 5);
    assert_string_equal(f->cap.order[3], "b2");
    assert_string_equal(f->cap.order[4], "b3");
    struct ingestq_stats st;
    ingestq_stats(f->q, &st);
    assert_int_equal(st.queued, 3);
}

/* Gateways in turn, one message each per turn, each gateway's in order. */
static void test_round_robin(void **state)
{
    struct fx *f = *state;
    start(f);
    hold(f, true);
    push_tel(f, "a", "a1", 0);
    wait_telemetry(f, 1); /* the worker holds a1 */
    push_tel(f, "a", "a2", 0);
    push_tel(f, "a", "a3", 0);
    push_tel(f, "a", "a4", 0);
    push_tel(f, "b", "b1", 0);
    push_tel(f, "b", "b2", 0);
    push_tel(f, "c", "c1", 0);
    struct ingestq_stats st;
    ingestq_stats(f->q, &st);
    assert_int_equal(st.gateways, 3);
    hold(f, false);
    wait_telemetry(f, 7);
    const char *want[] = {"a1", "b1", "c1", "a2", "b2", "a3", "a4"};
    for (int i = 0; i < 7; i++)
        assert_string_equal(f->cap.order[i], want[i]);
    ingestq_stats(f->q, &st);
    assert_int_equal(st.queued, 7);
    assert_int_equal(st.shed_full, 0);
}

/* A gateway's queue is bounded, and all of them together: a message that
 * does not fit is shed (counted as the gateway's messages_shed, not
 * acknowledged), the other gateways go on. */
static void test_bounds(void **state)
{
    struct fx *f = *state;
    f->cfg.queue_bytes = 2 * M_EST + M_EST / 2;
    f->cfg.queue_max_bytes = 3 * M_EST + M_EST / 2;
    start(f);
    hold(f, true);
    push_tel(f, "a", "a1", 0);
    wait_telemetry(f, 1);
    push_tel(f, "a", "a2", 1000);
    push_tel(f, "a", "a3", 1000);
    push_tel(f, "a", "a4", 1000); /* over a's bound */
    push_tel(f, "b", "b1", 1000);
    push_tel(f, "c", "c1", 1000); /* over the bound of all */
    struct ingestq_stats st;
    ingestq_stats(f->q, &st);
    assert_int_equal(st.shed_full, 2);
    assert_true(st.bytes <= (uint64_t)f->cfg.queue_max_bytes && st.peak_bytes == st.bytes);
    struct registry_stats rs;
    registry_stats(f->reg, &rs);
    assert_int_equal(rs.messages_shed, 2);
    hold(f, false);
    wait_telemetry(f, 4);
    const char *want[] = {"a1", "b1", "a2", "a3"};
    for (int i = 0; i < 4; i++)
        assert_string_equal(f->cap.order[i], want[i]);
    struct ingest_stats is;
    ingest_stats(f->in, &is);
    assert_int_equal(is.messages_received, 6); /* shed ones too */
}

#define ALERT                                                                                      \
    "{\"schema\":\"carehub/alert/1\",\"site\":\"s\",\"gateway\":\"a\",\"seq\":1,"                  \
    "\"alarm_id\":\"sos:b1\",\"rule\":\"sos\",\"device\":\"b1\",\"priority\":\"high\","            \
    "\"state\":\"unack\",\"event\":\"raise\",\"escalation\":0,\"latched\":true,"                   \
    "\"ts_ms\":1763850300000,\"raised_ms\":1763850300000}"

/* An alarm transition is handled by the alert worker while telemetry is
 * stuck; its second copy (the other subscription's) is recognised. */
static void test_alert_not_behind_telemetry(void **state)
{
    struct fx *f = *state;
    start(f);
    hold(f, true);
    push_tel(f, "a", "a1", 0);
    wait_telemetry(f, 1);
    push_tel(f, "a", "a2", 0);
    ingestq_push(f->q, "carehub/v1/s/a/alert", ALERT, strlen(ALERT), false, 1763850300001);
    ingestq_push(f->q, "carehub/v1/s/a/alert", ALERT, strlen(ALERT), false, 1763850300002);
    int64_t end = ch_mono_ms() + 5000;
    struct ingest_stats is;
    do {
        ch_sleep_ms(2);
        ingest_stats(f->in, &is);
    } while (is.alerts_ok + is.alerts_duplicate < 2 && ch_mono_ms() < end);
    assert_int_equal(is.alerts_ok, 1);
    assert_int_equal(is.alerts_duplicate, 1);
    pthread_mutex_lock(&f->cap.lock);
    assert_int_equal(f->cap.alert_calls, 1);
    assert_int_equal(f->cap.telemetry_calls, 1); /* still held */
    pthread_mutex_unlock(&f->cap.lock);
    hold(f, false);
    wait_telemetry(f, 2);
}

/* Closing hands over everything queued. */
static void test_close_drains(void **state)
{
    struct fx *f = *state;
    start(f);
    hold(f, true);
    push_tel(f, "a", "a1", 0);
    wait_telemetry(f, 1);
    for (int i = 0; i < 5; i++)
        push_tel(f, i % 2 ? "b" : "c", "x", 100);
    hold(f, false);
    ingestq_close(f->q);
    f->q = NULL;
    assert_int_equal(f->cap.telemetry_calls, 6);
    struct ingest_stats is;
    ingest_stats(f->in, &is);
    assert_int_equal(is.readings, 6);
}

int main(void)
{
    log_set_level(LOGL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_small_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_robin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alert_not_behind_telemetry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_drains, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
