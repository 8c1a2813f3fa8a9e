/*
 * lock.h - the store lock: one robust, process-shared mutex in the control
 * header that guards the allocator, descriptor allocation and index writes.
 *
 * Robust means that a holder's death never blocks the others: the next
 * locker gets EOWNERDEAD, and shm_lock() then repairs what the dead holder
 * may have left half done (repair.h) before it marks the mutex consistent.
 */
#ifndef SHMSTORE_LOCK_H
#define SHMSTORE_LOCK_H

#include <pthread.h>

#include "store.h"

/* Initialises the mutex as process-shared and robust. Daemon only, before
 * the segment is published. Returns 0 or a negated errno. */
int shm_lock_init(pthread_mutex_t *mutex);

/* Takes the store lock, waiting at most timeout_ms (negative: no limit).
 * Returns 0, -ETIMEDOUT, or -ENOTRECOVERABLE when a repair after a dead
 * holder failed. Any thread of any process. */
int shm_lock(shm_store_t *store, int timeout_ms);

/* Drops the store lock. */
void shm_unlock(shm_store_t *store);

#endif /* SHMSTORE_LOCK_H */
