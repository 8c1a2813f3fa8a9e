/*
 * alloc.h - the arena allocator: boundary-tagged blocks in the data
 * segment, segregated free lists by size class, coalescing of neighbours.
 *
 * Every function here runs under the store lock. Block sizes are multiples
 * of 64 bytes, so every block, and every tensor's data, is 64-byte aligned.
 *
 * Crash safety: each block header stores its own size and the size of the
 * block before it. Splits and merges change sizes in an order that keeps
 * "walk from offset 0 by size" valid after every single store, so a holder
 * that dies at any instruction leaves a walkable arena, and
 * shm_alloc_rebuild() recreates the free lists and counters from it.
 */
#ifndef SHMSTORE_ALLOC_H
#define SHMSTORE_ALLOC_H

#include <stdint.h>

#include "store.h"

/* Turns the whole arena into one free block. Daemon only, at creation. */
void shm_alloc_init(shm_store_t *store);

/* Allocates a block of bytes (a multiple of 64, at least 64) marked
 * UNPUBLISHED with owner as its owner slot, and stores its arena offset in
 * *offset. Returns 0 or -ENOMEM (no detail set; the caller knows the key). */
int shm_alloc(shm_store_t *store, uint64_t bytes, int32_t owner, uint64_t *offset);

/* Frees the allocated block at offset, merging it with free neighbours.
 * Returns the offset of the resulting free block. */
uint64_t shm_alloc_free(shm_store_t *store, uint64_t offset);

/* Frees every UNPUBLISHED block of owner and returns the bytes freed. */
uint64_t shm_alloc_free_owned(shm_store_t *store, int32_t owner);

/* Returns the size of the largest free block (for error messages). */
uint64_t shm_alloc_largest_free(const shm_store_t *store);

/* Checks that offset is the start of a block with the given state; returns
 * the block or NULL. Walks nothing: it checks bounds, alignment and magic. */
shm_block_t *shm_alloc_check(const shm_store_t *store, uint64_t offset, uint32_t state);

/* Rebuilds the free lists, the prev_size tags and the used-bytes counter by
 * walking the arena. Returns 0, or -EUCLEAN with a detail when a block
 * header is not valid. */
int shm_alloc_rebuild(shm_store_t *store);

#endif /* SHMSTORE_ALLOC_H */
