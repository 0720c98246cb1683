/* LD_PRELOAD shim for bench/state.py --fsync-delay-ms: fsync and fdatasync take at least
 * PLANTD_BENCH_FSYNC_DELAY_US longer, like the SD cards and eMMC of edge devices (2-20 ms),
 * where this machine's virtual disk answers in ~0.1 ms. Benchmarks only. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void delay(void) {
    const char *us = getenv("PLANTD_BENCH_FSYNC_DELAY_US");
    long n = us ? atol(us) : 0;
    if (n > 0) {
        struct timespec ts = {n / 1000000, (n % 1000000) * 1000};
        nanosleep(&ts, NULL);
    }
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    int rc = real(fd);
    delay();
    return rc;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    int rc = real(fd);
    delay();
    return rc;
}
