/*
 * spin_wait.c - spin, then sleep on a doorbell, until a condition holds.
 */
#define _GNU_SOURCE
#include "spin_wait.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

/* Largest SHMSTORE_SPIN_US accepted: one second. Spinning longer than that
 * only burns a core that a sleep would have saved. */
#define SPIN_US_MAX 1000000

/* Checks of ready() between two reads of the clock while spinning. */
#define SPINS_PER_CLOCK_READ 64

int64_t shm_monotonic_ns(void)
{
    struct timespec now;
    /* CLOCK_MONOTONIC cannot fail on Linux with a valid pointer. */
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

void shm_wait_policy_default(shm_wait_policy_t *policy)
{
    int64_t spin_us = SHM_SPIN_US_DEFAULT;

    const char *text = getenv("SHMSTORE_SPIN_US");
    if (text != NULL && *text != '\0') {
        char *end = NULL;
        errno = 0;
        long long value = strtoll(text, &end, 10);
        if (errno == 0 && *end == '\0' && value >= 0 && value <= SPIN_US_MAX)
            spin_us = value;
    }

    policy->spin_ns = spin_us * 1000;
}

int shm_wait_until(shm_doorbell_t *doorbell, int (*ready)(void *context), void *context,
                   const shm_wait_policy_t *policy, int64_t timeout_ns)
{
    if (ready(context))
        return 0;
    if (timeout_ns == 0)
        return -ETIMEDOUT;

    shm_wait_policy_t default_policy;
    if (policy == NULL) {
        shm_wait_policy_default(&default_policy);
        policy = &default_policy;
    }

    const int64_t start = shm_monotonic_ns();
    const int64_t deadline = timeout_ns < 0 ? INT64_MAX : start + timeout_ns;
    const int64_t spin_end = start + (policy->spin_ns > 0 ? policy->spin_ns : 0);

    /* Spin phase: no system call, so the wake-up latency is one cache-line
     * transfer. The clock is read only every few checks. */
    int64_t now = start;
    while (now < spin_end && now < deadline) {
        for (int i = 0; i < SPINS_PER_CLOCK_READ; i++) {
            if (ready(context))
                return 0;
            shm_cpu_relax();
        }
        now = shm_monotonic_ns();
    }

    /* Sleep phase: the snapshot comes before the check, so a ring between
     * the check and the sleep makes the sleep return at once. */
    for (;;) {
        uint32_t snapshot = shm_doorbell_snapshot(doorbell);
        if (ready(context))
            return 0;

        now = shm_monotonic_ns();
        if (now >= deadline)
            return -ETIMEDOUT;

        int64_t remaining = timeout_ns < 0 ? -1 : deadline - now;
        int rc = shm_doorbell_wait(doorbell, snapshot, remaining);
        if (rc != 0 && rc != -ETIMEDOUT)
            return rc;
        /* 0 or -ETIMEDOUT: loop to re-check the condition and the deadline
         * once more, because the condition may have come true just now. */
    }
}
