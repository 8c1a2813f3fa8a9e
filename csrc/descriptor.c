/*
 * descriptor.c - descriptor reservation, pins and the freeing protocol.
 */
#include "descriptor.h"

#include <errno.h>

#include "alloc.h"
#include "errors.h"
#include "shmstore.h"

static uint64_t reader_bit(uint32_t slot)
{
    return UINT64_C(1) << (slot % 64);
}

/* Returns 1 when no reader bit is set. seq_cst loads: they pair with the
 * seq_cst fetch_or of a pinning reader (see the freeing protocol). */
static int bitmap_empty(const shm_store_t *store, shm_descriptor_t *descriptor)
{
    for (uint32_t w = 0; w < store->bitmap_words; w++) {
        if (shm_load_seq(&descriptor->readers[w]) != 0)
            return 0;
    }
    return 1;
}

int shm_descriptor_reserve(shm_store_t *store, uint32_t *number)
{
    shm_header_t *header = store->header;
    uint64_t count = store->descriptor_count;
    uint64_t at = header->descriptor_cursor;

    for (uint64_t tries = 0; tries < count; tries++, at++) {
        if (at >= count)
            at = 0;
        shm_descriptor_t *descriptor = shm_descriptor_at(store, at);

        /* Relaxed: state is only written under the lock we hold. */
        uint64_t word = shm_load_relaxed(&descriptor->state);
        if (SHM_DESC_STATE(word) != SHM_DESC_FREE)
            continue;

        /* Relaxed: RESERVED means "not LIVE" to readers, who act only on LIVE. */
        shm_store_relaxed(&descriptor->state,
                          SHM_DESC_WORD(SHM_DESC_GENERATION(word) + 1, SHM_DESC_RESERVED));
        header->descriptor_cursor = at + 1;
        *number = (uint32_t)at;
        return 0;
    }

    return shm_fail(SHMSTORE_EFULL,
                    "all %llu descriptors are in use by stored tensors and by old versions "
                    "that readers still hold; release views or raise max_keys",
                    (unsigned long long)count);
}

void shm_descriptor_publish(shm_store_t *store, uint32_t number, uint64_t block_offset)
{
    shm_descriptor_t *descriptor = shm_descriptor_at(store, number);
    shm_block_t *block = shm_block_at(store, block_offset);

    block->descriptor = number;
    block->state = SHM_BLOCK_PUBLISHED;

    /* Relaxed: ordered before readers' use by the release store of state. */
    shm_store_relaxed(&descriptor->block, block_offset);

    /* Release: pairs with the reader's seq_cst load of state in
     * shm_descriptor_pin, so that a reader that loads LIVE also loads the
     * block offset and the tensor bytes written before the commit. */
    uint64_t word = shm_load_relaxed(&descriptor->state);
    shm_store_release(&descriptor->state,
                      SHM_DESC_WORD(SHM_DESC_GENERATION(word), SHM_DESC_LIVE));
}

void shm_descriptor_unreserve(shm_store_t *store, uint32_t number)
{
    shm_descriptor_t *descriptor = shm_descriptor_at(store, number);

    /* Relaxed: the descriptor was never LIVE, so no reader used it. */
    uint64_t word = shm_load_relaxed(&descriptor->state);
    shm_store_relaxed(&descriptor->state, SHM_DESC_WORD(SHM_DESC_GENERATION(word), SHM_DESC_FREE));
}

uint64_t shm_descriptor_retire(shm_store_t *store, uint32_t number)
{
    shm_descriptor_t *descriptor = shm_descriptor_at(store, number);

    /* seq_cst: pairs with the reader's seq_cst fetch_or and state load in
     * shm_descriptor_pin and its fetch_and and state load in unpin. */
    uint64_t word = shm_load_relaxed(&descriptor->state);
    shm_store_seq(&descriptor->state,
                  SHM_DESC_WORD(SHM_DESC_GENERATION(word), SHM_DESC_RETIRED));

    return shm_descriptor_try_free(store, number);
}

uint64_t shm_descriptor_try_free(shm_store_t *store, uint32_t number)
{
    shm_descriptor_t *descriptor = shm_descriptor_at(store, number);

    /* seq_cst: the state is written under the lock we hold; this load
     * orders the bitmap loads below after it. */
    uint64_t word = shm_load_seq(&descriptor->state);
    if (SHM_DESC_STATE(word) != SHM_DESC_RETIRED || !bitmap_empty(store, descriptor))
        return 0;

    /* Free the block first: a holder that dies between the two steps
     * leaves a RETIRED descriptor whose block is no longer PUBLISHED for
     * it, which the repair recognises and frees. */
    uint64_t offset = shm_load_relaxed(&descriptor->block);
    uint64_t bytes = shm_block_at(store, offset)->size;
    shm_alloc_free(store, offset);

    /* Relaxed: FREE means "not LIVE" to readers, who act only on LIVE. */
    shm_store_relaxed(&descriptor->state, SHM_DESC_WORD(SHM_DESC_GENERATION(word), SHM_DESC_FREE));
    return bytes;
}

uint64_t shm_descriptor_free_unpinned(shm_store_t *store)
{
    uint64_t bytes = 0;
    for (uint64_t d = 0; d < store->descriptor_count; d++)
        bytes += shm_descriptor_try_free(store, (uint32_t)d);
    return bytes;
}

int shm_descriptor_pin(shm_store_t *store, uint32_t number, uint32_t slot, int *free_check)
{
    shm_descriptor_t *descriptor = shm_descriptor_at(store, number);

    /* seq_cst: pairs with the writer's seq_cst RETIRED store and bitmap
     * loads in shm_descriptor_retire / try_free. */
    shm_fetch_or_seq(&descriptor->readers[slot / 64], reader_bit(slot));

    /* seq_cst: see above; as an acquire it also pairs with the release
     * store of LIVE in shm_descriptor_publish. */
    uint64_t word = shm_load_seq(&descriptor->state);
    if (SHM_DESC_STATE(word) == SHM_DESC_LIVE) {
        *free_check = 0;
        return 0;
    }

    *free_check = shm_descriptor_unpin(store, number, slot);
    return -EAGAIN;
}

int shm_descriptor_unpin(shm_store_t *store, uint32_t number, uint32_t slot)
{
    shm_descriptor_t *descriptor = shm_descriptor_at(store, number);

    /* seq_cst: pairs with the writer's seq_cst RETIRED store and bitmap
     * loads; whichever comes second in the total order observes both facts. */
    shm_fetch_and_seq(&descriptor->readers[slot / 64], ~reader_bit(slot));
    uint64_t word = shm_load_seq(&descriptor->state);
    if (SHM_DESC_STATE(word) != SHM_DESC_RETIRED)
        return 0;
    return bitmap_empty(store, descriptor);
}

int shm_descriptor_has_reader(const shm_store_t *store, uint32_t number, uint32_t slot)
{
    shm_descriptor_t *descriptor = shm_descriptor_at(store, number);

    /* Relaxed: callers hold the lock and only need the bit's own value. */
    return (shm_load_relaxed(&descriptor->readers[slot / 64]) & reader_bit(slot)) != 0;
}

shm_block_t *shm_descriptor_block(const shm_store_t *store, uint32_t number)
{
    shm_descriptor_t *descriptor = shm_descriptor_at(store, number);

    /* Relaxed: ordered by the caller's pin (seq_cst state load) or lock. */
    return shm_block_at(store, shm_load_relaxed(&descriptor->block));
}
