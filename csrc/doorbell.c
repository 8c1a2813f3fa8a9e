/*
 * doorbell.c - futex doorbell; the protocol is described in doorbell.h and
 * docs/rings.md.
 */
#define _GNU_SOURCE
#include "doorbell.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stddef.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Sleeps while *word equals expected, at most timeout (NULL: no limit).
 * Returns 0 or a negated errno. Without FUTEX_PRIVATE_FLAG the kernel keys
 * the wait on the physical page, so waiters and wakers may live in
 * different processes that map the page at different addresses. */
static int futex_wait_shared(shm_atomic_u32 *word, uint32_t expected,
                             const struct timespec *timeout)
{
    long rc = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, expected, timeout, NULL, 0);
    return rc == 0 ? 0 : -errno;
}

static void futex_wake_shared(shm_atomic_u32 *word)
{
    /* FUTEX_WAKE fails only on an invalid address, and the caller has just
     * made an atomic access to this word, so the result is ignored. */
    (void)syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

void shm_doorbell_init(shm_doorbell_t *doorbell)
{
    /* Relaxed: the creator publishes the whole segment afterwards. */
    shm_store_relaxed(&doorbell->sequence, 0);
    shm_store_relaxed(&doorbell->sleepers, 0);
}

uint32_t shm_doorbell_snapshot(shm_doorbell_t *doorbell)
{
    /* Acquire: pairs with the release bump in shm_doorbell_ring(); if this
     * load sees the bump, it also sees the condition the ringer set. */
    return shm_load_acquire(&doorbell->sequence);
}

void shm_doorbell_ring(shm_doorbell_t *doorbell)
{
    /* Release: pairs with the acquire in shm_doorbell_snapshot(), so a
     * waiter whose snapshot sees this bump also sees the condition that the
     * caller made true before ringing. */
    shm_fetch_add_acq_rel(&doorbell->sequence, 1);

    /* seq_cst fence: pairs with the fence in shm_doorbell_wait(). With one
     * fence between each side's write and read, either this load sees the
     * waiter's announce, or the waiter's re-read sees the bump above. */
    shm_fence_seq();

    /* Relaxed: ordered by the fence above. */
    if (shm_load_relaxed(&doorbell->sleepers) != 0)
        futex_wake_shared(&doorbell->sequence);
}

int shm_doorbell_wait(shm_doorbell_t *doorbell, uint32_t snapshot, int64_t timeout_ns)
{
    struct timespec timeout;
    const struct timespec *timeout_arg = NULL;
    if (timeout_ns >= 0) {
        timeout.tv_sec = (time_t)(timeout_ns / 1000000000);
        timeout.tv_nsec = (long)(timeout_ns % 1000000000);
        timeout_arg = &timeout;
    }

    /* Relaxed: the fence below orders the announce before the re-read. */
    shm_fetch_add_relaxed(&doorbell->sleepers, 1);

    /* seq_cst fence: pairs with the fence in shm_doorbell_ring(); see
     * there why no ring is lost between the announce and the sleep. */
    shm_fence_seq();

    int result = 0;
    /* Acquire: pairs with the release bump in shm_doorbell_ring(). */
    if (shm_load_acquire(&doorbell->sequence) == snapshot) {
        result = futex_wait_shared(&doorbell->sequence, snapshot, timeout_arg);
        /* EAGAIN: the sequence moved before the kernel compared it, which
         * is a ring, as is a plain wake-up. */
        if (result == -EAGAIN)
            result = 0;
    }

    /* Relaxed: a ringer that still sees this sleeper only makes one
     * needless FUTEX_WAKE.
     * NOTE: a process killed inside the sleep never takes itself off the
     * count, so every later ring makes a FUTEX_WAKE system call. That
     * costs time, never correctness. */
    shm_fetch_sub_relaxed(&doorbell->sleepers, 1);
    return result;
}
