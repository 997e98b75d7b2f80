/* care-hub users: the users file from the command line (users.h,
 * care-hub(1)). Each command reads the file, changes it and writes it
 * whole (users_save); a running hub reads it on SIGHUP (systemctl reload
 * care-hub). Passwords come on stdin: one line, or asked twice without echo
 * when stdin is a terminal. */
#include "hubcfg.h"
#include "err.h"
#include "passwd.h"
#include "users.h"
#include "util.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#define EXIT_RUNTIME 1
#define EXIT_CONFIG  2
#define LIST_MAX     256

static void usage(FILE *to)
{
    fprintf(to,
            "usage: care-hub users -c FILE add NAME --role ROLE (--sites A,B | --district D)\n"
            "                        [--grants health,location] [--display TEXT]\n"
            "       care-hub users -c FILE passwd NAME\n"
            "       care-hub users -c FILE disable NAME | enable NAME | del NAME\n"
            "       care-hub users -c FILE list\n"
            "\n"
            "  -c, --config FILE  hub configuration; its api.users_file is changed\n"
            "  The password (add, passwd) is read from stdin: one line, or twice without\n"
            "  echo from a terminal; at least %d characters.\n"
            "  A running hub reads the file again on SIGHUP (systemctl reload care-hub).\n",
            USERS_PASSWORD_MIN);
}

/* One line of stdin into buf, without its line end; false at EOF. */
static bool read_line(const char *prompt, bool tty, char *buf, size_t n)
{
    struct termios old, quiet;
    if (tty) {
        fprintf(stderr, "%s", prompt);
        fflush(stderr);
        tcgetattr(STDIN_FILENO, &old);
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    bool ok = fgets(buf, (int)n, stdin) != NULL;
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fprintf(stderr, "\n");
    }
    if (ok)
        buf[strcspn(buf, "\r\n")] = '\0';
    return ok;
}

/* A new password from stdin, hashed; NULL after saying why. */
static char *new_password_hash(void)
{
    char a[USERS_PASSWORD_MAX + 2], b[USERS_PASSWORD_MAX + 2];
    bool tty = isatty(STDIN_FILENO);
    char *hash = NULL;
    if (!read_line("new password: ", tty, a, sizeof a)) {
        fprintf(stderr, "care-hub users: no password on stdin\n");
    } else if (tty && (!read_line("again: ", tty, b, sizeof b) || strcmp(a, b))) {
        fprintf(stderr, "care-hub users: the passwords differ\n");
    } else if (users_password_problem(a)) {
        fprintf(stderr, "care-hub users: %s\n", users_password_problem(a));
    } else if (!(hash = ch_passwd_hash("users", a))) {
        fprintf(stderr, "care-hub users: cannot hash the password\n");
    }
    explicit_bzero(a, sizeof a);
    explicit_bzero(b, sizeof b);
    return hash;
}

/* Splits s (modified) at commas into out. Returns how many. */
static size_t split(char *s, const char **out, size_t max)
{
    size_t n = 0;
    for (char *save = NULL, *p = strtok_r(s, ",", &save); p && n < max;
         p = strtok_r(NULL, ",", &save))
        if (*p)
            out[n++] = p;
    return n;
}

static void list(const struct users *u)
{
    for (size_t i = 0; i < u->list.n; i++) {
        const struct user *e = &((const struct user *)u->list.items)[i];
        printf("%s\t%s\t", e->t.name, token_role_name(e->t.role));
        if (e->t.district) {
            printf("district %s", e->t.district);
        } else {
            for (size_t j = 0; j < e->t.sites.n; j++)
                printf("%s%s", j ? "," : "", ((char **)e->t.sites.items)[j]);
        }
        printf("\t%s%s\n", e->display ? e->display : "", e->disabled ? "\t(disabled)" : "");
    }
}

struct opts {
    const char *config, *role, *display, *district;
    char *sites, *grants;
};

static int parse(int argc, char **argv, struct opts *o)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"role", required_argument, NULL, 'r'},
        {"sites", required_argument, NULL, 's'},  {"district", required_argument, NULL, 'd'},
        {"grants", required_argument, NULL, 'g'}, {"display", required_argument, NULL, 'D'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            o->config = optarg;
            break;
        case 'r':
            o->role = optarg;
            break;
        case 's':
            o->sites = optarg;
            break;
        case 'd':
            o->district = optarg;
            break;
        case 'g':
            o->grants = optarg;
            break;
        case 'D':
            o->display = optarg;
            break;
        case 'h':
            usage(stdout);
            return -1;
        default:
            usage(stderr);
            return EXIT_CONFIG;
        }
    }
    return 0;
}

/* The command cmd on u (name: its argument). Returns 0 (u changed, to be
 * written), -1 (nothing to write) or an exit status. */
static int run(struct users *u, const char *cmd, const char *name, struct opts *o)
{
    char err[256];
    struct user_change ch = USER_CHANGE_NONE;
    const char *sites[LIST_MAX], *grants[LIST_MAX];
    int rc;
    if (!strcmp(cmd, "list")) {
        list(u);
        return -1;
    }
    if (!strcmp(cmd, "del")) {
        rc = users_remove(u, name);
        snprintf(err, sizeof err, "no user '%s'", name);
    } else if (!strcmp(cmd, "disable") || !strcmp(cmd, "enable")) {
        ch.disabled = !strcmp(cmd, "disable");
        rc = users_set(u, name, false, &ch, err, sizeof err);
    } else if (!strcmp(cmd, "passwd") || !strcmp(cmd, "add")) {
        bool add = !strcmp(cmd, "add");
        if (add) {
            ch.role = o->role ? users_role_of(o->role) : -1;
            if (ch.role < 0) {
                fprintf(stderr, "care-hub users add: --role staff|operator|regulator|admin\n");
                return EXIT_CONFIG;
            }
            ch.set_scope = true;
            ch.sites = sites;
            ch.n_sites = o->sites ? split(o->sites, sites, LIST_MAX) : 0;
            ch.district = o->district;
            ch.set_grants = o->grants != NULL;
            ch.grants = grants;
            ch.n_grants = o->grants ? split(o->grants, grants, LIST_MAX) : 0;
            ch.display = o->display;
            if (!users_valid_name(name)) {
                fprintf(stderr,
                        "care-hub users add: '%s': a name is 1 to 64 bytes of UTF-8, without "
                        "control characters, ':' or spaces at either end\n",
                        name);
                return EXIT_CONFIG;
            }
            if (users_find(u, name)) {
                fprintf(stderr, "care-hub users add: there is a user '%s' already\n", name);
                return EXIT_CONFIG;
            }
        } else if (!users_find(u, name)) {
            fprintf(stderr, "care-hub users passwd: no user '%s'\n", name);
            return EXIT_CONFIG;
        }
        char *hash = new_password_hash();
        if (!hash)
            return EXIT_CONFIG;
        ch.password_hash = hash;
        rc = users_set(u, name, add, &ch, err, sizeof err);
        free(hash);
    } else {
        usage(stderr);
        return EXIT_CONFIG;
    }
    if (rc) {
        fprintf(stderr, "care-hub users %s: %s\n", cmd, err);
        return EXIT_CONFIG;
    }
    return 0;
}

int users_cli(int argc, char **argv)
{
    struct opts o = {0};
    int rc = parse(argc, argv, &o);
    if (rc)
        return rc < 0 ? 0 : rc;
    int left = argc - optind;
    const char *cmd = left > 0 ? argv[optind] : NULL;
    bool named = cmd && strcmp(cmd, "list");
    if (!o.config || !cmd || left != (named ? 2 : 1)) {
        usage(stderr);
        return EXIT_CONFIG;
    }
    const char *name = named ? argv[optind + 1] : NULL;
    struct hubcfg cfg;
    if (hubcfg_load(o.config, &cfg))
        return EXIT_CONFIG;
    const char *path = cfg.api.users_file;
    if (!path) {
        fprintf(stderr, "care-hub users: %s sets no api.users_file\n", o.config);
        hubcfg_free(&cfg);
        return EXIT_CONFIG;
    }
    struct users *u;
    if (users_load(path, cfg.api.rate_limit, true, &u)) {
        hubcfg_free(&cfg);
        return EXIT_CONFIG;
    }
    int status = run(u, cmd, name, &o);
    if (status == 0) {
        int w = users_save(u, path);
        if (w) {
            fprintf(stderr, "care-hub users: cannot write %s: %s\n", path, ch_strerror(w));
            status = EXIT_RUNTIME;
        } else {
            fprintf(stderr,
                    "%s: %s %s; a running hub reads it on SIGHUP (systemctl reload care-hub)\n",
                    path, cmd, name);
        }
    } else if (status < 0) {
        status = 0;
    }
    users_free(u);
    hubcfg_free(&cfg);
    return status;
}
