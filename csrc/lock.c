/*
 * lock.c - the robust process-shared store lock.
 */
#define _GNU_SOURCE
#include "lock.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "errors.h"
#include "repair.h"
#include "shmstore.h"

int shm_lock_init(pthread_mutex_t *mutex)
{
    pthread_mutexattr_t attributes;
    int error = pthread_mutexattr_init(&attributes);
    if (error != 0)
        return -error;

    error = pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED);
    if (error == 0)
        error = pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
    if (error == 0)
        error = pthread_mutex_init(mutex, &attributes);

    pthread_mutexattr_destroy(&attributes);
    return -error;
}

/* Repairs the store after the previous holder died inside the lock, then
 * marks the mutex usable again. Called with the lock held. */
static int recover_dead_holder(shm_store_t *store)
{
    int result = shm_repair(store);
    if (result != 0) {
        char reason[256];
        snprintf(reason, sizeof reason, "%s", shmstore_error_detail());
        /* Leaving the mutex inconsistent makes every later lock fail with
         * ENOTRECOVERABLE instead of acting on a corrupt store. */
        pthread_mutex_unlock(&store->header->lock);
        return shm_fail(-ENOTRECOVERABLE,
                        "store lock holder died and the repair failed (%s); restart the "
                        "daemon",
                        reason);
    }

    pthread_mutex_consistent(&store->header->lock);
    return 0;
}

int shm_lock(shm_store_t *store, int timeout_ms)
{
    pthread_mutex_t *mutex = &store->header->lock;
    int error;

    if (timeout_ms < 0) {
        error = pthread_mutex_lock(mutex);
    } else {
        error = pthread_mutex_trylock(mutex);
        if (error == EBUSY) {
            struct timespec deadline;
            clock_gettime(CLOCK_REALTIME, &deadline);
            deadline.tv_sec += timeout_ms / 1000;
            deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
            if (deadline.tv_nsec >= 1000000000L) {
                deadline.tv_sec += 1;
                deadline.tv_nsec -= 1000000000L;
            }
            error = pthread_mutex_timedlock(mutex, &deadline);
        }
    }

    if (error == 0)
        return 0;
    if (error == EOWNERDEAD)
        return recover_dead_holder(store);
    if (error == ETIMEDOUT)
        return shm_fail(-ETIMEDOUT, "store lock not free after %d ms", timeout_ms);
    if (error == ENOTRECOVERABLE)
        return shm_fail(-ENOTRECOVERABLE,
                        "store lock is unusable after a failed repair; restart the daemon");
    return shm_fail(-error, "locking the store failed: %s", strerror(error));
}

void shm_unlock(shm_store_t *store)
{
    pthread_mutex_unlock(&store->header->lock);
}
