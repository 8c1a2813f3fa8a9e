/*
 * doorbell.h - a process-shared futex doorbell that idle parties sleep on.
 *
 * A doorbell is a 32-bit sequence word (the futex word) and a count of
 * announced sleepers. A waiter takes a snapshot of the sequence before it
 * checks its condition. A ringer makes the condition true, then bumps the
 * sequence, and calls FUTEX_WAKE only if a sleeper has announced itself.
 * The waiter announces itself, re-reads the sequence and sleeps only if it
 * still equals the snapshot, so a ring that happens between the check and
 * the sleep is never lost. docs/rings.md gives the full argument.
 *
 * The doorbell lives in caller-provided memory, usually shared memory that
 * several processes map at different addresses. It contains no pointers.
 * The futex calls omit FUTEX_PRIVATE_FLAG, so they work across processes.
 */
#ifndef SHMSTORE_DOORBELL_H
#define SHMSTORE_DOORBELL_H

#include <stdint.h>

#include "atomics.h"

/* Fills one cache line, so that ringing it never slows down a neighbour. */
typedef struct shm_doorbell {
    /* Shared: every process reads and writes both fields. */
    _Alignas(SHM_CACHE_LINE) shm_atomic_u32 sequence; /* futex word, bumped by each ring */
    shm_atomic_u32 sleepers;                          /* waiters inside shm_doorbell_wait */
} shm_doorbell_t;

/* Initialises a doorbell. The creator calls it once, before any other
 * process or thread uses the doorbell. */
void shm_doorbell_init(shm_doorbell_t *doorbell);

/* Returns the current sequence, to pass to shm_doorbell_wait(). Take it
 * before checking the condition you wait for. Any thread or process. */
uint32_t shm_doorbell_snapshot(shm_doorbell_t *doorbell);

/* Wakes every sleeper. Call it after making the awaited condition true.
 * Makes no system call unless a waiter has announced itself. Any thread or
 * process. */
void shm_doorbell_ring(shm_doorbell_t *doorbell);

/* Sleeps until the doorbell rings after snapshot was taken, or
 * timeout_ns passes (negative: no limit). Returns 0 when rung or when the
 * sequence already differs from snapshot (also on a rare spurious wake-up,
 * so re-check the condition), -ETIMEDOUT, or -EINTR when a signal
 * interrupted the sleep. Any thread or process. */
int shm_doorbell_wait(shm_doorbell_t *doorbell, uint32_t snapshot, int64_t timeout_ns);

#endif /* SHMSTORE_DOORBELL_H */
