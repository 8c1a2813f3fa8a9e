/*
 * store.h - one process's handle on the mapped segments of a store, and
 * address helpers that turn the offsets stored in shared memory into
 * pointers of this process.
 */
#ifndef SHMSTORE_STORE_H
#define SHMSTORE_STORE_H

#include <stdint.h>

#include "layout.h"

typedef struct shm_store {
    shm_header_t *header;
    unsigned char *ctl;              /* control segment base */
    unsigned char *arena;            /* data segment base */
    uint64_t arena_bytes;
    shm_slot_t *slots;
    unsigned char *descriptors;
    uint64_t descriptor_stride;
    uint64_t descriptor_count;
    uint32_t bitmap_words;
    uint32_t max_clients;
    shm_atomic_u64 *index[2];
    uint64_t index_mask;             /* index_capacity - 1 */
} shm_store_t;

/* Fills store with the addresses of a mapped, initialised control segment
 * and data segment. */
void shm_store_bind(shm_store_t *store, void *ctl, void *arena);

static inline shm_descriptor_t *shm_descriptor_at(const shm_store_t *store, uint64_t number)
{
    return (shm_descriptor_t *)(store->descriptors + number * store->descriptor_stride);
}

static inline shm_block_t *shm_block_at(const shm_store_t *store, uint64_t offset)
{
    return (shm_block_t *)(store->arena + offset);
}

/* Returns the key bytes stored in a tensor block (NUL-terminated). */
static inline const char *shm_block_key(const shm_block_t *block)
{
    return (const char *)block + sizeof(shm_block_t);
}

/* Returns the offset of the dims in a tensor block with a key of
 * key_length bytes: after the header and the key's NUL, 8-byte aligned. */
static inline uint64_t shm_block_dims_offset(uint64_t key_length)
{
    return (sizeof(shm_block_t) + key_length + 1 + 7) & ~(uint64_t)7;
}

#endif /* SHMSTORE_STORE_H */
