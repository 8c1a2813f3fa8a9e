/*
 * spin_wait.h - the spin-then-sleep wait policy.
 *
 * A waiter first spins for spin_ns (low latency, one busy core), then
 * sleeps on a doorbell (no CPU, a wake-up costs tens of microseconds).
 * spin_ns sets that trade-off; SHMSTORE_SPIN_US sets its default.
 */
#ifndef SHMSTORE_SPIN_WAIT_H
#define SHMSTORE_SPIN_WAIT_H

#include <stdint.h>

#include "doorbell.h"

/* Default spin time in microseconds when SHMSTORE_SPIN_US is unset. */
#define SHM_SPIN_US_DEFAULT 50

typedef struct shm_wait_policy {
    int64_t spin_ns; /* time to spin before sleeping; 0 sleeps at once */
} shm_wait_policy_t;

/* Returns CLOCK_MONOTONIC in nanoseconds. */
int64_t shm_monotonic_ns(void);

/* Fills policy with the default: spin_ns from SHMSTORE_SPIN_US
 * (microseconds, a non-negative integer), else SHM_SPIN_US_DEFAULT.
 * An invalid value falls back to the default. */
void shm_wait_policy_default(shm_wait_policy_t *policy);

/* Waits until ready(context) returns non-zero: spins for policy->spin_ns
 * (NULL policy: the default), then sleeps on doorbell between checks.
 * The party that makes ready() true must ring doorbell afterwards.
 * timeout_ns bounds the whole wait (negative: no limit, 0: one check).
 * Returns 0 when ready, -ETIMEDOUT, -EINTR when a signal interrupted
 * the sleep, or another negated errno from FUTEX_WAIT (a bad doorbell
 * address gives -EFAULT). Any thread or process. Callers that must also watch another
 * process's liveness pass a bounded timeout and loop. */
int shm_wait_until(shm_doorbell_t *doorbell, int (*ready)(void *context), void *context,
                   const shm_wait_policy_t *policy, int64_t timeout_ns);

#endif /* SHMSTORE_SPIN_WAIT_H */
