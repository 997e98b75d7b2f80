/* clockshift: an LD_PRELOAD shim that steps the wall clock of one program
 * while it runs, for tests of what a wall-clock step (NTP, an installer)
 * does to care-edge.
 *
 * CAREHUB_CLOCKSHIFT_FILE names a file holding a signed offset in
 * milliseconds ("-3600000"); clock_gettime(CLOCK_REALTIME and
 * CLOCK_REALTIME_COARSE), gettimeofday(), time() and timespec_get() return
 * the true wall clock plus that offset. The file is read again at most
 * every 100 ms (on the monotonic clock), so a test steps the clock by
 * rewriting it (write a temporary file and rename it: a half-written file
 * is ignored, the offset stays). No file, or no variable: offset 0.
 * CLOCK_MONOTONIC, CLOCK_BOOTTIME and the rest are never touched.
 *
 * Only calls made from the main program are shifted (CAREHUB_CLOCKSHIFT_ALL=1:
 * every caller). Libraries keep the true wall clock: Paho, for one, waits
 * on condition variables with CLOCK_REALTIME deadlines it computes with
 * clock_gettime(), and the kernel checks them against the true clock, so a
 * shifted view would stall or spin its threads for as long as the offset
 * lasts, which no real step does (a real step moves the kernel's clock
 * too). carehub's own code is linked into the program, so all of its
 * reading of the wall clock is shifted.
 *
 * The true time comes from the system call itself (no dlsym, no vDSO), so
 * the shim works under AddressSanitizer as well (with
 * ASAN_OPTIONS=verify_asan_link_order=0, since the shim is loaded first). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <link.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define REREAD_NS 100000000LL

static int64_t offset_ms;        /* atomic */
static int64_t next_read_ns;     /* atomic; monotonic */
static int reading;              /* atomic: one thread reads the file */
static uintptr_t exe_lo, exe_hi; /* the main program's mapped range */
static int shift_all;

static int real_gettime(clockid_t id, struct timespec *ts)
{
    return (int)syscall(SYS_clock_gettime, id, ts);
}

static int find_exe(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    (void)arg;
    /* the main program comes first, with an empty name */
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        if (!exe_lo || lo < exe_lo)
            exe_lo = lo;
        if (hi > exe_hi)
            exe_hi = hi;
    }
    return 1;
}

__attribute__((constructor)) static void clockshift_init(void)
{
    dl_iterate_phdr(find_exe, NULL);
    const char *all = getenv("CAREHUB_CLOCKSHIFT_ALL");
    shift_all = all && strcmp(all, "1") == 0;
}

static void reread(void)
{
    struct timespec m;
    real_gettime(CLOCK_MONOTONIC, &m);
    int64_t now = (int64_t)m.tv_sec * 1000000000LL + m.tv_nsec;
    if (now < __atomic_load_n(&next_read_ns, __ATOMIC_ACQUIRE))
        return;
    if (__atomic_exchange_n(&reading, 1, __ATOMIC_ACQ_REL))
        return; /* another thread is at it */
    const char *path = getenv("CAREHUB_CLOCKSHIFT_FILE");
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (fd >= 0) {
        char buf[32];
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n > 0) {
            buf[n] = '\0';
            char *end;
            long long v = strtoll(buf, &end, 10);
            if (end != buf && (*end == '\0' || *end == '\n'))
                __atomic_store_n(&offset_ms, (int64_t)v, __ATOMIC_RELEASE);
        }
    }
    __atomic_store_n(&next_read_ns, now + REREAD_NS, __ATOMIC_RELEASE);
    __atomic_store_n(&reading, 0, __ATOMIC_RELEASE);
}

/* The offset for a call returning to caller. */
static int64_t offset_for(const void *caller)
{
    uintptr_t c = (uintptr_t)caller;
    if (!shift_all && (c < exe_lo || c >= exe_hi))
        return 0;
    reread();
    return __atomic_load_n(&offset_ms, __ATOMIC_ACQUIRE);
}

static void shift(struct timespec *ts, int64_t off_ms)
{
    int64_t ns = (int64_t)ts->tv_nsec + (off_ms % 1000) * 1000000LL;
    int64_t s = (int64_t)ts->tv_sec + off_ms / 1000;
    while (ns < 0) {
        ns += 1000000000LL;
        s--;
    }
    while (ns >= 1000000000LL) {
        ns -= 1000000000LL;
        s++;
    }
    ts->tv_sec = (time_t)s;
    ts->tv_nsec = (long)ns;
}

static int wall(struct timespec *ts, clockid_t id, const void *caller)
{
    int rc = real_gettime(id, ts);
    if (rc == 0)
        shift(ts, offset_for(caller));
    return rc;
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
    if (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)
        return wall(ts, id, __builtin_return_address(0));
    return real_gettime(id, ts);
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
    (void)tz;
    struct timespec ts;
    int rc = wall(&ts, CLOCK_REALTIME, __builtin_return_address(0));
    if (rc == 0) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return rc;
}

time_t time(time_t *out)
{
    struct timespec ts;
    if (wall(&ts, CLOCK_REALTIME, __builtin_return_address(0)) != 0)
        return (time_t)-1;
    if (out)
        *out = ts.tv_sec;
    return ts.tv_sec;
}

int timespec_get(struct timespec *ts, int base)
{
    if (base != TIME_UTC || wall(ts, CLOCK_REALTIME, __builtin_return_address(0)) != 0)
        return 0;
    return base;
}
