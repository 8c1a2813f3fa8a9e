/*
 * index.h - the key index: an open-addressing hash table of 64-bit words
 * that maps a key to the descriptor of its current version.
 *
 * Bucket word: the high 32 bits of the key's hash, then the descriptor
 * number plus one in the low 32 bits. 0 is an empty bucket and
 * SHM_INDEX_TOMBSTONE a deleted one. Probing is linear and wraps around.
 *
 * Readers take no lock: they load buckets with acquire order and check
 * every candidate by pinning its descriptor and comparing the key stored in
 * its block. Writers hold the store lock. Deletions leave tombstones, so
 * that probe chains stay intact. When live plus tombstone buckets pass 3/4
 * of the capacity, the writer copies the live entries into the second
 * table and switches to it by bumping index_epoch. A reader whose probe
 * missed rechecks the epoch and retries if it changed, because it may have
 * probed a table that was being rebuilt.
 */
#ifndef SHMSTORE_INDEX_H
#define SHMSTORE_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define SHM_INDEX_EMPTY UINT64_C(0)
#define SHM_INDEX_TOMBSTONE UINT64_MAX

/* Returns the 64-bit hash of a key. */
uint64_t shm_hash_key(const char *key, size_t length);

/* Returns the smallest power of two >= 2 * max_keys: the capacity of each
 * index table. */
uint64_t shm_index_capacity(uint64_t max_keys);

/* Called for each bucket whose hash bits match. Returns 1 to stop with this
 * descriptor (the callee pinned it), 0 to keep probing, or -EAGAIN to
 * restart the whole lookup. */
typedef int (*shm_index_match_fn)(void *context, uint32_t descriptor);

/* Looks up a key without a lock. Returns the descriptor number that match
 * accepted, or SHMSTORE_ENOKEY. Any thread. */
int64_t shm_index_lookup(shm_store_t *store, uint64_t hash, shm_index_match_fn match,
                         void *context);

/* Returns the descriptor of key in the active table, or SHMSTORE_ENOKEY.
 * Lock held. */
int64_t shm_index_find_locked(shm_store_t *store, uint64_t hash, const char *key,
                              size_t length);

/* Makes number the descriptor of key: replaces the existing entry in place
 * (storing the old descriptor in *old and returning 1) or inserts a new one
 * (returning 0). The release store of the bucket is the step that makes
 * the new version visible. Lock held. */
int shm_index_upsert(shm_store_t *store, uint64_t hash, const char *key, size_t length,
                     uint32_t number, uint32_t *old);

/* Replaces the entry of key with a tombstone and stores its descriptor in
 * *old. Returns 0 or SHMSTORE_ENOKEY. Lock held. */
int shm_index_remove(shm_store_t *store, uint64_t hash, const char *key, size_t length,
                     uint32_t *old);

/* Calls visit for every live entry of the active table. Lock held. */
void shm_index_for_each_locked(shm_store_t *store,
                               void (*visit)(void *context, uint64_t bucket, uint32_t number),
                               void *context);

/* Recounts the live and tombstone buckets of the active table into
 * index_used. Lock held (used by the repair). */
void shm_index_recount(shm_store_t *store);

/* Replaces the bucket of the active table at position bucket with a
 * tombstone. Lock held (used by the repair). */
void shm_index_drop_bucket(shm_store_t *store, uint64_t bucket);

/* Returns the active table. Readers load the epoch with acquire order. */
shm_atomic_u64 *shm_index_active(shm_store_t *store, uint64_t *epoch);

#endif /* SHMSTORE_INDEX_H */
