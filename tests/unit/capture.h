/* Captures what a call writes to stderr (config errors are reported there),
 * for tests that check the message names file, line and key. */
#ifndef CAREHUB_TEST_CAPTURE_H
#define CAREHUB_TEST_CAPTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct capture {
    int fd, saved;
};

/* Starts sending stderr to an unlinked temporary file. Returns 0 or -1. */
static inline int capture_begin(struct capture *c)
{
    char tmpl[] = "/tmp/carehub-capture-XXXXXX";
    c->saved = -1;
    c->fd = mkstemp(tmpl);
    if (c->fd < 0)
        return -1;
    unlink(tmpl);
    fflush(stderr);
    c->saved = dup(STDERR_FILENO);
    dup2(c->fd, STDERR_FILENO);
    return 0;
}

/* Restores stderr and copies what was written (NUL-terminated) into buf. */
static inline void capture_end(struct capture *c, char *buf, size_t n)
{
    fflush(stderr);
    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
    ssize_t got = pread(c->fd, buf, n - 1, 0);
    buf[got > 0 ? got : 0] = '\0';
    close(c->fd);
}

#endif
