/* What the HTTP server targets share (fuzz_http_console, fuzz_http_hub): a
 * client for a server running in this very process, so that ASan and UBSan
 * see its connection threads.
 *
 * fuzz_http_exchange: one connection (from the loopback address src),
 * the input written as it is (a request, several pipelined, or garbage),
 * the write side shut down, the answer read until the server closes or goes
 * quiet (an event stream: at once). Writing and reading interleave, so
 * that a server answering a large pipeline cannot deadlock with a client
 * still writing; signals (libFuzzer's -timeout ticks) interrupt nothing.
 *
 * fuzz_http_check_answer: what came back is nothing (the server closed the
 * connection) or responses one after the other, each with a status line
 * "HTTP/1.1 NNN" (or 1.0), headers, and a body framed by Content-Length or
 * chunked encoding (or running to the end); the last one may be cut short
 * (the server ended a stream, or we stopped reading). Every status passes
 * status_ok. fuzz_http_leaks: a secret in the answer that the input did not
 * carry (an error message may quote what the client sent).
 *
 * The inputs come from 127.0.0.1; the targets' own checks (/healthz, logins)
 * from 127.0.0.2, so that what the inputs cost their address (a login
 * throttle, a rate of refusals) never locks the checks out. */
#ifndef CAREHUB_FUZZ_HTTP_H
#define CAREHUB_FUZZ_HTTP_H

#include "fuzz.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FUZZ_HTTP_INPUT     "127.0.0.1"
#define FUZZ_HTTP_CONTROL   "127.0.0.2"
#define FUZZ_HTTP_IDLE_MS   300  /* the server said nothing for this long: stop */
#define FUZZ_HTTP_MAX_MS    3000 /* one exchange at most */
#define FUZZ_HTTP_STREAM_MS 20   /* quiet after an event stream began: stop */

static inline int64_t fuzz_http_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* poll(2) for events on fd, for at most ms, through signals (libFuzzer's
 * -timeout ticks with SIGALRM): the events that came, 0 when none did. */
static inline short fuzz_http_poll(int fd, short events, int64_t ms)
{
    int64_t end = fuzz_http_now_ms() + ms;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int64_t left = end - fuzz_http_now_ms();
        int n = poll(&p, 1, left > 0 ? (int)left : 0);
        if (n > 0)
            return p.revents;
        if (n == 0 || errno != EINTR || left <= 0)
            return 0;
    }
}

/* A non-blocking connection from src to 127.0.0.1:port; -1 if it cannot
 * be made. */
static inline int fuzz_http_connect(const char *src, uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    if (strcmp(src, FUZZ_HTTP_INPUT)) {
        /* the port is chosen at connect(), where TIME_WAIT ones are reused */
        int one = 1;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        inet_pton(AF_INET, src, &sa.sin_addr);
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa)) {
            close(fd);
            return -1;
        }
    }
    sa.sin_port = htons(port);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    int err = 0;
    socklen_t len = sizeof err;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) &&
        (errno != EINPROGRESS || !fuzz_http_poll(fd, POLLOUT, FUZZ_HTTP_MAX_MS) ||
         getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) || err)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends req[0..n) from src, shuts the write side, reads the answer into
 * out[0..cap) (what does not fit is read and dropped: *capped) until the
 * server closes, says nothing for idle_ms, or FUZZ_HTTP_MAX_MS pass.
 * Returns the bytes kept; *closed tells whether the server closed. */
static inline size_t fuzz_http_exchange(const char *src, uint16_t port, const void *req, size_t n,
                                        char *out, size_t cap, int idle_ms, bool *capped,
                                        bool *closed)
{
    *capped = false;
    *closed = false;
    int fd = fuzz_http_connect(src, port);
    CHECK(fd >= 0); /* the server listens while the process lives */
    size_t sent = 0, got = 0;
    bool wr_open = true;
    int64_t end = fuzz_http_now_ms() + FUZZ_HTTP_MAX_MS;
    for (;;) {
        if (wr_open && sent == n) {
            shutdown(fd, SHUT_WR);
            wr_open = false;
        }
        int64_t left = end - fuzz_http_now_ms();
        short ev = left <= 0 ? 0
                             : fuzz_http_poll(fd, (short)(POLLIN | (wr_open ? POLLOUT : 0)),
                                              left < idle_ms ? left : idle_ms);
        if (!ev)
            break; /* quiet (a stream, a slow handler), or too long: enough */
        if (wr_open && (ev & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t w = send(fd, (const char *)req + sent, n - sent, MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR)
                sent = n; /* the server stopped reading (closed): read its answer */
        }
        if (!(ev & (POLLIN | POLLERR | POLLHUP)))
            continue;
        char tmp[16384];
        ssize_t r = recv(fd, tmp, sizeof tmp, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
            *closed = true;
            break;
        }
        if (r < 0)
            continue;
        size_t keep = got + (size_t)r <= cap ? (size_t)r : cap - got;
        memcpy(out + got, tmp, keep);
        got += keep;
        *capped = *capped || keep < (size_t)r;
        /* an event stream ends when the server sees the client gone, up to
           a second later: what it sends at once is what there is to check */
        size_t from = got - keep > 16 ? got - keep - 16 : 0;
        if (memmem(out + from, got - from, "text/event-stream", 17))
            idle_ms = FUZZ_HTTP_STREAM_MS;
    }
    close(fd);
    return got;
}

/* "HTTP/1.1 NNN" or "HTTP/1.0 NNN" followed by a space or the line's end
 * at p (left bytes): its status, or -1. */
static inline int fuzz_http_status_line(const char *p, size_t left)
{
    if (left < 13 || (memcmp(p, "HTTP/1.1 ", 9) && memcmp(p, "HTTP/1.0 ", 9)))
        return -1;
    for (int i = 9; i < 12; i++)
        if (p[i] < '0' || p[i] > '9')
            return -1;
    if (p[12] != ' ' && p[12] != '\r')
        return -1;
    return (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
}

/* The value of header name in the header block h[0..n) (from the status
 * line to the blank line), into val (cut to vn - 1); false if absent. */
static inline bool fuzz_http_header(const char *h, size_t n, const char *name, char *val, size_t vn)
{
    size_t nl = strlen(name);
    const char *end = h + n;
    for (const char *line = h; line < end;) {
        const char *eol = memmem(line, (size_t)(end - line), "\r\n", 2);
        if (!eol)
            eol = end;
        if ((size_t)(eol - line) > nl && line[nl] == ':' && !strncasecmp(line, name, nl)) {
            const char *v = line + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            size_t k = (size_t)(eol - v) < vn - 1 ? (size_t)(eol - v) : vn - 1;
            memcpy(val, v, k);
            val[k] = '\0';
            return true;
        }
        line = eol + 2;
    }
    return false;
}

/* Skips a chunked body at a[*pos..len): false if it is cut short. */
static inline bool fuzz_http_skip_chunked(const char *a, size_t len, size_t *pos)
{
    for (;;) {
        const char *p = a + *pos;
        size_t left = len - *pos;
        const char *eol = memmem(p, left, "\r\n", 2);
        if (!eol)
            return false;
        size_t size = 0, digits = 0;
        for (const char *q = p; q < eol && digits < 16; q++, digits++) {
            int v = *q >= '0' && *q <= '9'   ? *q - '0'
                    : *q >= 'a' && *q <= 'f' ? *q - 'a' + 10
                    : *q >= 'A' && *q <= 'F' ? *q - 'A' + 10
                                             : -1;
            if (v < 0)
                break;
            size = size * 16 + (size_t)v;
        }
        CHECK(digits > 0); /* a chunk starts with its size */
        *pos = (size_t)(eol - a) + 2;
        if (size == 0) { /* trailers, then the blank line */
            const char *t = a + *pos;
            if (len - *pos >= 2 && !memcmp(t, "\r\n", 2)) {
                *pos += 2;
                return true;
            }
            const char *blank = memmem(t, len - *pos, "\r\n\r\n", 4);
            if (!blank)
                return false;
            *pos = (size_t)(blank - a) + 4;
            return true;
        }
        if (len - *pos < size + 2)
            return false;
        CHECK(!memcmp(a + *pos + size, "\r\n", 2)); /* the chunk is as long as it said */
        *pos += size + 2;
    }
}

static inline void fuzz_http_check_answer(const char *a, size_t len, bool (*status_ok)(int))
{
    size_t pos = 0;
    while (pos < len) {
        const char *p = a + pos;
        size_t left = len - pos;
        if (left < 13) { /* cut short: still the start of a status line */
            CHECK(!memcmp(p, "HTTP/1.1 ", left < 9 ? left : 9) ||
                  !memcmp(p, "HTTP/1.0 ", left < 9 ? left : 9));
            return;
        }
        int status = fuzz_http_status_line(p, left);
        CHECK(status >= 100);
        if (!status_ok(status)) {
            fprintf(stderr, "%s: status %d in:\n%.*s\n", FUZZ_NAME, status,
                    (int)(left < 2000 ? left : 2000), p);
            CHECK(status_ok(status));
        }
        const char *eoh = memmem(p, left, "\r\n\r\n", 4);
        if (!eoh)
            return;
        size_t hlen = (size_t)(eoh - p) + 4;
        char te[64] = "", cl[32] = "";
        bool chunked = fuzz_http_header(p, hlen - 2, "Transfer-Encoding", te, sizeof te) &&
                       strstr(te, "chunked");
        bool has_len = fuzz_http_header(p, hlen - 2, "Content-Length", cl, sizeof cl);
        pos += hlen;
        if (status < 200 || status == 204 || status == 304)
            continue; /* no body */
        if (fuzz_http_status_line(a + pos, len - pos) >= 0)
            continue; /* the answer to a HEAD: no body */
        if (chunked) {
            if (!fuzz_http_skip_chunked(a, len, &pos))
                return;
        } else if (has_len) {
            char *e;
            unsigned long long n = strtoull(cl, &e, 10);
            CHECK(e != cl && *e == '\0');
            if (n > len - pos)
                return;
            pos += (size_t)n;
        } else {
            return; /* to the end of the connection */
        }
    }
}

/* The status of the first response in a[0..len), or -1. */
static inline int fuzz_http_first_status(const char *a, size_t len)
{
    return fuzz_http_status_line(a, len);
}

/* Whether secret is in the answer a[0..len) without having been in the
 * input in[0..n): an echo of what the client sent (an error message naming
 * a bad parameter) is not a leak. */
static inline bool fuzz_http_leaks(const char *a, size_t len, const void *in, size_t n,
                                   const char *secret)
{
    size_t sl = strlen(secret);
    return memmem(a, len, secret, sl) && !memmem(in, n, secret, sl);
}

/* The first line of /etc/passwd with its line feed, into out: what a path
 * that escaped the server's files would bring back whole (a JSON message
 * cannot hold a raw line feed). */
static inline void fuzz_http_passwd_line(char *out, size_t n)
{
    snprintf(out, n, "root:x:0:0:");
    FILE *f = fopen("/etc/passwd", "r");
    if (f && fgets(out, (int)n, f) && !strchr(out, '\n'))
        snprintf(out, n, "root:x:0:0:");
    if (f)
        fclose(f);
}

/* Replaces every mark in in[0..n) by repl: a new buffer (caller frees) and
 * its length in *out_n; NULL when mark does not occur. */
static inline char *fuzz_http_replace(const uint8_t *in, size_t n, const char *mark,
                                      const char *repl, size_t *out_n)
{
    size_t ml = strlen(mark), rl = strlen(repl), count = 0;
    for (const uint8_t *p = in; (p = memmem(p, n - (size_t)(p - in), mark, ml)); p += ml)
        count++;
    if (!count)
        return NULL;
    char *out = malloc(n + count * rl + 1);
    CHECK(out);
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (n - i >= ml && !memcmp(in + i, mark, ml)) {
            memcpy(out + o, repl, rl);
            o += rl;
            i += ml;
        } else {
            out[o++] = (char)in[i++];
        }
    }
    *out_n = o;
    return out;
}

#endif
