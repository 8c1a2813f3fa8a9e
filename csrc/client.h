/*
 * client.h - the client handle and the helpers every client call uses:
 * liveness checks, the store lock with the client's timeout, references.
 */
#ifndef SHMSTORE_CLIENT_H
#define SHMSTORE_CLIENT_H

#include <pthread.h>
#include <stdint.h>

#include "segment.h"
#include "shmstore.h"
#include "store.h"

/* A daemon heartbeat older than this makes a client test the daemon's
 * flock; the daemon beats every poll, at least every 100 ms. */
#define SHM_HEARTBEAT_STALE_NS (250LL * 1000 * 1000)

#define SHM_DEFAULT_TIMEOUT_MS 3000

/* Granularity of prefaulting the arena before large puts. */
#define SHM_PREFAULT_CHUNK (2u << 20)

/* Puts smaller than this just take their page faults. */
#define SHM_PREFAULT_MIN_BYTES (64u << 10)

struct shmstore_client {
    shm_store_t store;
    shm_mapping_t ctl;
    shm_mapping_t data;
    uint32_t slot;
    int32_t pid;
    /* Process-private: the value of the process's fork counter at connect.
     * A forked child inherits the handle but not the slot (see
     * shm_client_forked). */
    uint64_t fork_generation;
    shm_atomic_i32 timeout_ms;       /* shared by the threads of this process */
    /* Process-private: the handle itself plus one per live view; the
     * mapping goes with the last reference. */
    shm_atomic_i32 references;
    /* Views of each descriptor in this client. The descriptor's reader
     * bit for our slot is set while the count is non-zero. */
    pthread_mutex_t pin_mutex;
    uint32_t *pin_counts;
    /* Process-private: one bit per SHM_PREFAULT_CHUNK of the arena whose
     * page tables this process has populated. */
    shm_atomic_u64 *prefaulted;
    char name[SHMSTORE_NAME_MAX + 1];
};

/* Returns 1 in a child forked after client connected. The slot, its pins
 * and its ring belong to the parent, so the child must leave them alone. */
int shm_client_forked(const shmstore_client_t *client);

/* Returns 0 while the daemon lives, else SHMSTORE_ELOST with a detail.
 * Also SHMSTORE_ELOST in a child forked after client connected. */
int shm_client_check_alive(shmstore_client_t *client);

/* Takes the store lock, checking the daemon's liveness while waiting.
 * Returns 0, SHMSTORE_ELOST, or -ETIMEDOUT after the client's timeout. */
int shm_client_lock(shmstore_client_t *client);

/* Drops the store lock. */
void shm_client_unlock(shmstore_client_t *client);

/* Populates this process's page tables for the arena bytes [offset,
 * offset + bytes) in whole chunks, once per chunk, so that a large put
 * copies without a page fault per 4 KiB page. */
void shm_client_prefault(shmstore_client_t *client, uint64_t offset, uint64_t bytes);

/* Adds a reference (a new view). */
void shm_client_ref(shmstore_client_t *client);

/* Drops a reference; the last one detaches and frees the client. */
void shm_client_unref(shmstore_client_t *client);

#endif /* SHMSTORE_CLIENT_H */
