/* Small files written whole: state that must survive a crash or a power cut
 * as either its old or its new version, never a mix. */
#ifndef CAREHUB_FILEIO_H
#define CAREHUB_FILEIO_H

#include <stddef.h>

/* Writes data (len bytes, borrowed) to path atomically and durably: into
 * path.tmp (mode 0600), fsync, rename over path, fsync of the directory.
 * Returns 0 or -errno (the temporary file is removed on failure). */
int ch_write_atomic(const char *path, const char *data, size_t len);

/* fsyncs the directory holding path (a rename or a new name in it becomes
 * durable). Returns 0 or -errno. */
int ch_fsync_dir_of(const char *path);

/* Reads the whole file at path (at most max bytes) into a NUL-terminated
 * malloc'ed buffer. Returns 0 with *data and *len, -EFBIG when it is larger
 * than max, or -errno. */
int ch_read_file(const char *path, size_t max, char **data, size_t *len);

#endif
