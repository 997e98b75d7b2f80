/* care-hub's people's accounts: the users file (every class of bad entry
 * reported as file:line with its key), names and passwords on both sides of
 * their limits, editing and writing the file back (mode 0600, read again
 * the same), and the sessions' expiries and the per-name lockout on a
 * clock the test drives. */
#include "err.h"
#include "passwd.h"
#include "sessions.h"
#include "users.h"

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

/* A real yescrypt hash (of "correct-horse-1"), made once. */
static char *hash;

struct fx {
    char dir[64];
    char path[96];
    char err[4096];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/test_users.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/users.yaml", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static int load(struct fx *f, const char *text, struct users **u)
{
    FILE *fp = fopen(f->path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
    struct capture cap = {-1, -1};
    assert_int_equal(capture_begin(&cap), 0);
    int rc = users_load(f->path, 20, false, u);
    capture_end(&cap, f->err, sizeof f->err);
    return rc;
}

static void test_good(void **state)
{
    struct fx *f = *state;
    char text[1024];
    snprintf(text, sizeof text,
             "users:\n"
             "  - name: 护士小王\n    display: 王护士\n    password_hash: \"%s\"\n"
             "    role: staff\n    sites: [sunny-01]\n"
             "  - name: reg\n    password_hash: \"%s\"\n    role: regulator\n"
             "    district: cq-yz-\n    grants: [health]\n    disabled: true\n",
             hash, hash);
    struct users *u;
    assert_int_equal(load(f, text, &u), 0);
    assert_int_equal(u->list.n, 2);
    const struct user *a = users_find(u, "护士小王");
    assert_non_null(a);
    assert_string_equal(a->display, "王护士");
    assert_true(token_in_scope(&a->t, "sunny-01"));
    assert_false(token_in_scope(&a->t, "sunny-02"));
    const struct user *r = users_find(u, "reg");
    assert_true(r->disabled);
    assert_string_equal(r->t.district, "cq-yz"); /* the trailing separator cut */
    assert_true(token_in_scope(&r->t, "cq-yz-001"));
    assert_int_equal(r->t.grant_mask, GRANT_HEALTH);
    assert_null(users_find(u, "护士小"));
    users_free(u);
    /* an empty list, and a file that is not there (missing_ok) */
    assert_int_equal(load(f, "# nobody yet\nusers: []\n", &u), 0);
    assert_int_equal(u->list.n, 0);
    users_free(u);
    unlink(f->path);
    assert_int_equal(users_load(f->path, 20, true, &u), 0);
    assert_int_equal(u->list.n, 0);
    users_free(u);
}

/* Each bad entry: the file:line of the key named and the message. */
static void test_bad(void **state)
{
    struct fx *f = *state;
    static const struct {
        const char *entry; /* after "users:\n  - name: ...\n" (line 2), from line 3 */
        const char *where, *what;
    } cases[] = {
        {"    password_hash: nope\n    role: staff\n    sites: [a]\n",
         "users.yaml:3:", "key 'password_hash': not a crypt(3) hash"},
        {"    password_hash: \"H\"\n    role: boss\n    sites: [a]\n",
         "users.yaml:4:", "key 'role'"},
        {"    password_hash: \"H\"\n    role: staff\n", "users.yaml:2:", "give either 'sites'"},
        {"    password_hash: \"H\"\n    role: staff\n    sites: [a]\n    district: cq\n",
         "users.yaml:6:", "give either 'sites'"},
        {"    password_hash: \"H\"\n    role: staff\n    sites: [\"a b\"]\n",
         "users.yaml:5:", "key 'sites': 'a b' is not a site id"},
        {"    password_hash: \"H\"\n    role: staff\n    district: \"-\"\n",
         "users.yaml:5:", "key 'district'"},
        {"    password_hash: \"H\"\n    role: staff\n    sites: [a]\n    grants: [wealth]\n",
         "users.yaml:6:", "key 'grants': 'wealth' is not health or location"},
        {"    password_hash: \"H\"\n    role: staff\n    sites: [a]\n    colour: red\n",
         "users.yaml:6:", "colour"},
        {"    display: \"a\\tb\"\n    password_hash: \"H\"\n    role: staff\n    sites: [a]\n",
         "users.yaml:3:", "key 'display'"},
        {"    role: staff\n    sites: [a]\n", "users.yaml:2:", "password_hash"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char entry[512], text[1024];
        /* "H": the real hash */
        const char *p = cases[i].entry, *h = strstr(p, "\"H\"");
        if (h)
            snprintf(entry, sizeof entry, "%.*s\"%s\"%s", (int)(h - p), p, hash, h + 3);
        else
            snprintf(entry, sizeof entry, "%s", p);
        snprintf(text, sizeof text, "users:\n  - name: nurse\n%s", entry);
        struct users *u = NULL;
        assert_int_equal(load(f, text, &u), CH_ECONFIG);
        assert_null(u);
        if (!strstr(f->err, cases[i].where) || !strstr(f->err, cases[i].what))
            fail_msg("case %zu: expected %s ... %s in:\n%s", i, cases[i].where, cases[i].what,
                     f->err);
    }
    /* names: ':' and a name used twice */
    char text[1024];
    snprintf(text, sizeof text,
             "users:\n  - name: \"a:b\"\n    password_hash: \"%s\"\n    role: staff\n"
             "    sites: [a]\n  - name: x\n    password_hash: \"%s\"\n    role: staff\n"
             "    sites: [a]\n  - name: x\n    password_hash: \"%s\"\n    role: staff\n"
             "    sites: [a]\n",
             hash, hash, hash);
    struct users *u = NULL;
    assert_int_equal(load(f, text, &u), CH_ECONFIG);
    assert_non_null(strstr(f->err, "users.yaml:2:"));
    assert_non_null(strstr(f->err, "key 'name': 1 to 64 bytes"));
    assert_non_null(strstr(f->err, "users.yaml:10:"));
    assert_non_null(strstr(f->err, "'x' is used twice"));
}

static void test_names_and_passwords(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        bool ok;
    } names[] = {
        {"护士小王", true},
        {"a", true},
        {"Li Na", true},
        {"", false},
        {" lead", false},
        {"trail ", false},
        {"a:b", false},
        {"tab\there", false},
        {"del\x7f", false},
        {"c1\xc2\x85", false},   /* U+0085, a C1 control */
        {"bad\xc3", false},      /* cut short */
        {"over\xc0\xaf", false}, /* overlong '/' */
        {"1234567890123456789012345678901234567890123456789012345678901234", true},   /* 64 */
        {"12345678901234567890123456789012345678901234567890123456789012345", false}, /* 65 */
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (users_valid_name(names[i].name) != names[i].ok)
            fail_msg("name %zu '%s': expected %s", i, names[i].name, names[i].ok ? "ok" : "bad");
    assert_null(users_password_problem("0123456789"));             /* 10 */
    assert_non_null(users_password_problem("012345678"));          /* 9 */
    assert_null(users_password_problem("护士小王护士小王护士小")); /* 11 characters, 33 bytes */
    assert_non_null(users_password_problem("护士小王护士小王护")); /* 9 characters, 27 bytes */
    assert_non_null(users_password_problem("0123456789\n"));
    assert_true(ch_passwd_verify("correct-horse-1", hash));
    assert_false(ch_passwd_verify("correct-horse-2", hash));
    assert_false(ch_passwd_verify("correct-horse-1", "not a hash"));
    assert_non_null(ch_passwd_dummy());
    assert_false(ch_passwd_verify("", ch_passwd_dummy()));
}

static void test_edit_and_save(void **state)
{
    struct fx *f = *state;
    struct users *u = users_new(20);
    char err[256];
    const char *sites[] = {"sunny-01", "sunny-02"};
    struct user_change ch = USER_CHANGE_NONE;
    ch.role = ROLE_STAFF;
    ch.set_scope = true;
    ch.sites = sites;
    ch.n_sites = 2;
    ch.display = "王护士";
    assert_int_equal(users_set(u, "护士小王", true, &ch, err, sizeof err), CH_EINVAL);
    assert_non_null(strstr(err, "password")); /* a new user needs one */
    ch.password_hash = hash;
    assert_int_equal(users_set(u, "护士小王", true, &ch, err, sizeof err), 0);
    assert_int_equal(users_set(u, "护士小王", true, &ch, err, sizeof err), CH_ESTATE);
    struct user_change bad = USER_CHANGE_NONE;
    const char *bad_sites[] = {"no such/site"};
    bad.set_scope = true;
    bad.sites = bad_sites;
    bad.n_sites = 1;
    assert_int_equal(users_set(u, "护士小王", false, &bad, err, sizeof err), CH_EINVAL);
    assert_non_null(strstr(err, "is not a site id"));
    assert_true(token_in_scope(&users_find(u, "护士小王")->t, "sunny-02")); /* unchanged */
    struct user_change off = USER_CHANGE_NONE;
    off.disabled = 1;
    assert_int_equal(users_set(u, "护士小王", false, &off, err, sizeof err), 0);
    assert_int_equal(users_set(u, "nobody", false, &off, err, sizeof err), CH_ENOTFOUND);
    assert_int_equal(users_save(u, f->path), 0);
    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    struct users *v;
    assert_int_equal(users_load(f->path, 20, false, &v), 0);
    const struct user *e = users_find(v, "护士小王");
    assert_non_null(e);
    assert_true(e->disabled);
    assert_string_equal(e->display, "王护士");
    assert_string_equal(e->password_hash, hash);
    assert_int_equal(e->t.sites.n, 2);
    assert_int_equal(users_remove(v, "护士小王"), 0);
    assert_int_equal(users_remove(v, "护士小王"), CH_ENOTFOUND);
    assert_int_equal(users_save(v, f->path), 0);
    users_free(v);
    assert_int_equal(users_load(f->path, 20, false, &v), 0);
    assert_int_equal(v->list.n, 0);
    users_free(v);
    users_free(u);
    char tmp[128];
    snprintf(tmp, sizeof tmp, "%s.tmp", f->path);
    assert_int_not_equal(access(tmp, F_OK), 0); /* nothing left behind */
}

static void test_sessions(void **state)
{
    (void)state;
    struct sessions *s = sessions_new(2, 1000, 5000); /* idle 1 s, 5 s at most */
    char id[SESSIONS_ID_LEN + 1], id2[SESSIONS_ID_LEN + 1], id3[SESSIONS_ID_LEN + 1];
    char name[SESSIONS_NAME_MAX], stamp[SESSIONS_STAMP_LEN + 1], st0[SESSIONS_STAMP_LEN + 1];
    sessions_stamp(hash, st0);
    assert_int_equal(sessions_create(s, "护士小王", st0, 0, id), 0);
    assert_int_equal(strlen(id), SESSIONS_ID_LEN);
    assert_true(sessions_find(s, id, 999, name, stamp)); /* idle: 999 < 1000 */
    assert_string_equal(name, "护士小王");
    assert_string_equal(stamp, st0);
    for (int64_t t = 1900; t < 5000; t += 900) /* kept alive by use ... */
        assert_true(sessions_find(s, id, t, name, stamp));
    assert_false(sessions_find(s, id, 5000, name, stamp)); /* ... until its max age */
    assert_int_equal(sessions_create(s, "a", st0, 10000, id), 0);
    assert_false(sessions_find(s, id, 11000, name, stamp)); /* idle exactly 1 s */
    /* bounded: a third login takes the place of the one idle longest */
    assert_int_equal(sessions_create(s, "a", st0, 20000, id), 0);
    assert_int_equal(sessions_create(s, "b", st0, 20100, id2), 0);
    assert_true(sessions_find(s, id, 20200, name, stamp));
    assert_int_equal(sessions_create(s, "c", st0, 20300, id3), 0);
    assert_false(sessions_find(s, id2, 20400, name, stamp));
    assert_true(sessions_find(s, id, 20400, name, stamp));
    assert_int_equal(sessions_drop_user(s, "a", NULL), 1);
    assert_false(sessions_find(s, id, 20500, name, stamp));
    sessions_drop(s, id3);
    assert_int_equal(sessions_count(s, 20500), 0);
    sessions_free(s);
}

static void test_lockout(void **state)
{
    (void)state;
    struct sessions *s = sessions_new(4, 1000, 5000);
    int64_t t = 1000;
    /* a good login from .1 makes it her address */
    assert_int_equal(sessions_login_begin(s, "nurse", "10.0.0.1", t), 0);
    assert_int_equal(sessions_login_end(s, "nurse", "10.0.0.1", true, t), 0);
    for (int i = 0; i < SESSIONS_LOCK_AFTER - 1; i++) {
        assert_int_equal(sessions_login_begin(s, "nurse", "10.0.0.9", t), 0);
        assert_int_equal(sessions_login_end(s, "nurse", "10.0.0.9", false, t), 0);
    }
    /* the 5th failure locks, for SESSIONS_LOCK_FIRST_MS */
    assert_int_equal(sessions_login_begin(s, "nurse", "10.0.0.9", t), 0);
    assert_int_equal(sessions_login_end(s, "nurse", "10.0.0.9", false, t), SESSIONS_LOCK_FIRST_MS);
    assert_int_equal(sessions_login_begin(s, "nurse", "10.0.0.9", t + 1),
                     SESSIONS_LOCK_FIRST_MS - 1);
    assert_int_equal(sessions_login_begin(s, "nurse", "10.0.0.7", t + 1),
                     SESSIONS_LOCK_FIRST_MS - 1);
    /* her own address is not locked out */
    assert_int_equal(sessions_login_begin(s, "nurse", "10.0.0.1", t + 1), 0);
    assert_int_equal(sessions_login_end(s, "nurse", "10.0.0.1", false, t + 1),
                     2 * SESSIONS_LOCK_FIRST_MS); /* the 6th: twice as long */
    t += 2 * SESSIONS_LOCK_FIRST_MS + 1;
    assert_int_equal(sessions_login_begin(s, "nurse", "10.0.0.9", t), 0); /* served */
    assert_int_equal(sessions_login_end(s, "nurse", "10.0.0.9", true, t), 0);
    assert_int_equal(sessions_login_begin(s, "nurse", "10.0.0.9", t), 0); /* reset */
    assert_int_equal(sessions_login_end(s, "nurse", "10.0.0.9", false, t), 0);
    /* checks in flight count: 5 begun, the 6th waits */
    for (int i = 0; i < SESSIONS_LOCK_AFTER - 1; i++)
        assert_int_equal(sessions_login_begin(s, "x", "10.0.0.2", t), 0);
    assert_int_equal(sessions_login_begin(s, "x", "10.0.0.2", t), 0);
    assert_true(sessions_login_begin(s, "x", "10.0.0.2", t) > 0);
    /* an unknown name locks like a known one: nothing tells them apart */
    sessions_free(s);
}

int main(void)
{
    hash = ch_passwd_hash("test", "correct-horse-1");
    if (!hash)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_good, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad, setup, teardown),
        cmocka_unit_test(test_names_and_passwords),
        cmocka_unit_test_setup_teardown(test_edit_and_save, setup, teardown),
        cmocka_unit_test(test_sessions),
        cmocka_unit_test(test_lockout),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    free(hash);
    return rc;
}
