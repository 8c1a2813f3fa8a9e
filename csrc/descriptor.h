/*
 * descriptor.h - the descriptor table: one descriptor per stored tensor
 * version, with a state word and a reader bitmap (one bit per client slot).
 *
 * Descriptors are type-stable: a descriptor slot is only ever a descriptor.
 * So a reader may touch one that was freed and reused under it, because it
 * notices the change from the state word and retries.
 *
 * Freeing protocol. A version is freed when it is both RETIRED (out of the
 * index) and unpinned (bitmap all zero). The writer that retires it stores
 * RETIRED, then reads the bitmap; a reader that unpins clears its bit, then
 * reads the state. All four accesses are seq_cst, so at least one side sees
 * both facts and frees the version under the store lock.
 */
#ifndef SHMSTORE_DESCRIPTOR_H
#define SHMSTORE_DESCRIPTOR_H

#include <stdint.h>

#include "store.h"

/* Takes a FREE descriptor, marks it RESERVED with a new generation and
 * stores its number in *number. Lock held. Returns 0 or SHMSTORE_EFULL. */
int shm_descriptor_reserve(shm_store_t *store, uint32_t *number);

/* Points a RESERVED descriptor at the block at offset and marks both
 * LIVE / PUBLISHED. Lock held. The descriptor becomes visible to readers
 * only once its number is stored in the index. */
void shm_descriptor_publish(shm_store_t *store, uint32_t number, uint64_t block_offset);

/* Returns a RESERVED descriptor to FREE. Lock held. */
void shm_descriptor_unreserve(shm_store_t *store, uint32_t number);

/* Marks a LIVE descriptor RETIRED and frees it at once if no reader pins
 * it. Lock held. Returns the arena bytes freed (0 if still pinned). */
uint64_t shm_descriptor_retire(shm_store_t *store, uint32_t number);

/* Frees a RETIRED, unpinned descriptor and its block; does nothing
 * otherwise. Lock held. Returns the arena bytes freed. */
uint64_t shm_descriptor_try_free(shm_store_t *store, uint32_t number);

/* Frees every RETIRED, unpinned descriptor and its block. A process that
 * cleared the last pin of a retired version and died before it freed the
 * version leaves one of these behind. Lock held. Returns the arena bytes
 * freed. */
uint64_t shm_descriptor_free_unpinned(shm_store_t *store);

/* Sets slot's reader bit, then checks that the descriptor is LIVE.
 * Returns 0 when pinned, or -EAGAIN when it is not LIVE. The bit is then
 * cleared again, and *free_check is set to 1 when the caller must call
 * shm_descriptor_try_free under the lock. Any thread, no lock. */
int shm_descriptor_pin(shm_store_t *store, uint32_t number, uint32_t slot, int *free_check);

/* Clears slot's reader bit. Returns 1 when the version may now be
 * unpinned and RETIRED, so that the caller must call
 * shm_descriptor_try_free under the lock; else 0. Any thread, no lock. */
int shm_descriptor_unpin(shm_store_t *store, uint32_t number, uint32_t slot);

/* Returns 1 when slot's reader bit is set. */
int shm_descriptor_has_reader(const shm_store_t *store, uint32_t number, uint32_t slot);

/* Returns the block of a LIVE or RETIRED descriptor that the caller pinned
 * or that the lock protects. */
shm_block_t *shm_descriptor_block(const shm_store_t *store, uint32_t number);

#endif /* SHMSTORE_DESCRIPTOR_H */
