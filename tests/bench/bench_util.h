/* Small helpers shared by the C benchmarks. */
#ifndef CAREHUB_BENCH_UTIL_H
#define CAREHUB_BENCH_UTIL_H

#include <ftw.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

/* Monotonic seconds. */
static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline int bench_rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

/* Removes a directory tree (a benchmark's scratch directory). */
static inline void bench_rm_rf(const char *dir)
{
    nftw(dir, bench_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
