/*
 * repair.c - consistency repair after a store-lock holder died.
 *
 * Every change made under the store lock keeps the block headers walkable
 * (alloc.h) and links a version both ways: the descriptor holds its block's
 * offset and the PUBLISHED block holds its descriptor's number. The repair
 * trusts only those links and rebuilds everything else from them.
 */
#include "repair.h"

#include <errno.h>
#include <stdlib.h>

#include "alloc.h"
#include "descriptor.h"
#include "errors.h"
#include "index.h"

typedef struct index_check {
    shm_store_t *store;
    uint8_t *indexed;                /* per descriptor: 1 when an index entry points to it */
    uint64_t keys;
} index_check_t;

static uint32_t descriptor_state(shm_store_t *store, uint64_t number)
{
    /* Relaxed: the lock is held; readers never write the state. */
    return SHM_DESC_STATE(shm_load_relaxed(&shm_descriptor_at(store, number)->state));
}

static void set_descriptor_free(shm_store_t *store, uint64_t number)
{
    shm_descriptor_t *descriptor = shm_descriptor_at(store, number);
    /* Relaxed: FREE means "not LIVE" to readers, who act only on LIVE. */
    uint64_t word = shm_load_relaxed(&descriptor->state);
    shm_store_relaxed(&descriptor->state, SHM_DESC_WORD(SHM_DESC_GENERATION(word), SHM_DESC_FREE));
}

/* Returns 1 when the descriptor and a PUBLISHED block point to each other. */
static int linked(shm_store_t *store, uint64_t number)
{
    /* Relaxed: lock held. */
    uint64_t offset = shm_load_relaxed(&shm_descriptor_at(store, number)->block);
    shm_block_t *block = shm_alloc_check(store, offset, SHM_BLOCK_PUBLISHED);
    return block != NULL && block->descriptor == number;
}

static void repair_descriptors(shm_store_t *store)
{
    for (uint64_t d = 0; d < store->descriptor_count; d++) {
        uint32_t state = descriptor_state(store, d);
        if (state == SHM_DESC_FREE)
            continue;

        if (state == SHM_DESC_RESERVED) {
            /* An interrupted commit: give the block back to its writer as
             * UNPUBLISHED; the daemon frees it when it reclaims the writer. */
            if (linked(store, d)) {
                /* Relaxed: lock held. */
                uint64_t offset = shm_load_relaxed(&shm_descriptor_at(store, d)->block);
                shm_block_at(store, offset)->state = SHM_BLOCK_UNPUBLISHED;
            }
            shm_descriptor_unreserve(store, (uint32_t)d);
            continue;
        }

        /* LIVE or RETIRED without its block: a free that freed the block
         * but not yet the descriptor. */
        if (!linked(store, d))
            set_descriptor_free(store, d);
    }
}

static void check_entry(void *context, uint64_t bucket, uint32_t number)
{
    index_check_t *check = context;

    if (descriptor_state(check->store, number) != SHM_DESC_LIVE || check->indexed[number]) {
        shm_index_drop_bucket(check->store, bucket);
        return;
    }
    check->indexed[number] = 1;
    check->keys++;
}

static void free_orphan_blocks(shm_store_t *store)
{
    uint64_t offset = 0;

    while (offset < store->arena_bytes) {
        shm_block_t *block = shm_block_at(store, offset);
        if (block->state == SHM_BLOCK_PUBLISHED) {
            uint32_t number = block->descriptor;
            int owned = number < store->descriptor_count &&
                        descriptor_state(store, number) >= SHM_DESC_LIVE && linked(store, number);
            if (!owned) {
                offset = shm_alloc_free(store, offset);
                block = shm_block_at(store, offset);
            }
        }
        offset += block->size;
    }
}

int shm_repair(shm_store_t *store)
{
    int result = shm_alloc_rebuild(store);
    if (result != 0)
        return result;

    repair_descriptors(store);

    index_check_t check = {.store = store, .keys = 0};
    check.indexed = calloc(store->descriptor_count, 1);
    if (check.indexed == NULL)
        return shm_fail(-ENOMEM, "out of process memory while repairing the store");
    shm_index_recount(store);
    shm_index_for_each_locked(store, check_entry, &check);

    /* A LIVE version that no entry points to was replaced or deleted by
     * the dead holder just before it could retire it. */
    for (uint64_t d = 0; d < store->descriptor_count; d++) {
        if (descriptor_state(store, d) == SHM_DESC_LIVE && !check.indexed[d])
            shm_descriptor_retire(store, (uint32_t)d);
    }
    free(check.indexed);

    free_orphan_blocks(store);

    /* Lock held; stats readers load key_count relaxed. */
    shm_store_relaxed(&store->header->key_count, check.keys);
    return 0;
}
