/*
 * test_ring_support.h - helpers shared by the ring and doorbell tests:
 * failure reporting, the seed, a random generator, payload checksums and
 * memory shared between forked processes.
 *
 * Exit codes: 0 pass, 1 fail, 77 skip.
 */
#ifndef SHMSTORE_TEST_RING_SUPPORT_H
#define SHMSTORE_TEST_RING_SUPPORT_H

#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TEST_EXIT_SKIP 77

/* GCC defines __SANITIZE_THREAD__ / __SANITIZE_ADDRESS__ under
 * -fsanitize=thread / address. */
#if defined(__SANITIZE_THREAD__)
#define TEST_UNDER_TSAN 1
#else
#define TEST_UNDER_TSAN 0
#endif
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define TEST_UNDER_SANITIZER 1
#else
#define TEST_UNDER_SANITIZER 0
#endif

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);  \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

/* Checks that a call returned the expected code and prints both if not. */
#define CHECK_RC(call, expected)                                                      \
    do {                                                                              \
        long check_rc_value = (long)(call);                                           \
        if (check_rc_value != (long)(expected)) {                                     \
            fprintf(stderr, "%s:%d: %s returned %ld (%s), expected %ld\n", __FILE__,  \
                    __LINE__, #call, check_rc_value, strerror((int)-check_rc_value), \
                    (long)(expected));                                                \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

/* Kills the test with SIGALRM after seconds, so that a hang (for example a
 * lost wake-up) fails the test instead of blocking the suite. A forked
 * child inherits no alarm, so children call this too. */
static inline void test_guard(unsigned seconds)
{
    signal(SIGALRM, SIG_DFL);
    alarm(seconds);
}

/* Returns the seed from SHMSTORE_TEST_SEED, else one from the pid and the
 * clock, and prints it so that a failing run can be repeated. */
static inline uint64_t test_seed(const char *test_name)
{
    uint64_t seed;
    const char *text = getenv("SHMSTORE_TEST_SEED");
    if (text != NULL && *text != '\0')
        seed = strtoull(text, NULL, 0);
    else
        seed = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL);
    printf("%s: SHMSTORE_TEST_SEED=%" PRIu64 "\n", test_name, seed);
    fflush(stdout);
    return seed;
}

/* splitmix64: a small generator whose every seed gives a good stream. */
static inline uint64_t test_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Returns a value in [low, high]. */
static inline uint32_t test_random_range(uint64_t *state, uint32_t low, uint32_t high)
{
    return low + (uint32_t)(test_random(state) % ((uint64_t)high - low + 1));
}

/* FNV-1a, 64-bit: the checksum every stress message carries. */
static inline uint64_t test_checksum(const void *data, size_t len)
{
    const unsigned char *bytes = data;
    uint64_t hash = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        hash ^= bytes[i];
        hash *= 0x100000001b3ull;
    }
    return hash;
}

/* Maps bytes of zeroed memory shared with children forked later. */
static inline void *test_map_shared(size_t bytes)
{
    void *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        fprintf(stderr, "mmap of %zu shared bytes failed: %s\n", bytes, strerror(errno));
        exit(1);
    }
    return mem;
}

/* Forks a child that runs body(arg) and exits with its result. */
static inline pid_t test_fork(int (*body)(void *), void *arg)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "fork failed: %s\n", strerror(errno));
        exit(1);
    }
    if (pid == 0)
        _exit(body(arg));
    return pid;
}

/* Waits for a child and returns 1 when it exited with status 0, printing
 * why not otherwise. */
static inline int test_child_passed(pid_t pid, const char *role)
{
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) {
        fprintf(stderr, "waitpid for %s %d failed: %s\n", role, (int)pid, strerror(errno));
        return 0;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 1;
    if (WIFSIGNALED(status))
        fprintf(stderr, "%s %d was killed by signal %d\n", role, (int)pid, WTERMSIG(status));
    else
        fprintf(stderr, "%s %d exited with status %d\n", role, (int)pid, WEXITSTATUS(status));
    return 0;
}

#endif /* SHMSTORE_TEST_RING_SUPPORT_H */
