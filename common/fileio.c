#include "fileio.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int ch_fsync_dir_of(const char *path)
{
    char dir[PATH_MAX];
    ch_strlcpy(dir, path, sizeof dir);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        ch_strlcpy(dir, ".", sizeof dir);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

/* Removes the temporary file after a failure and returns the error. */
static int undo(int fd, const char *tmp, int err)
{
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return err;
}

int ch_write_atomic(const char *path, const char *data, size_t len)
{
    char tmp[PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return -ENAMETOOLONG;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return undo(fd, tmp, w < 0 ? -errno : -EIO);
        off += (size_t)w;
    }
    if (fsync(fd) != 0)
        return undo(fd, tmp, -errno);
    int rc = close(fd);
    if (rc != 0)
        return undo(-1, tmp, -errno);
    if (rename(tmp, path) != 0)
        return undo(-1, tmp, -errno);
    return ch_fsync_dir_of(path);
}

int ch_read_file(const char *path, size_t max, char **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    char *buf = ch_xmalloc(max + 1);
    size_t n = 0;
    int rc = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, max + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            break;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > max) {
            rc = -EFBIG;
            break;
        }
    }
    close(fd);
    if (rc) {
        explicit_bzero(buf, n > max ? max + 1 : n);
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 0;
}
