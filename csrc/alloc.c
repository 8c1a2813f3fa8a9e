/*
 * alloc.c - the arena allocator (see alloc.h for the contract).
 *
 * Size classes count 64-byte units u. Classes 1..15 hold blocks of exactly
 * u units. From 16 units up, each power of two [2^k, 2^(k+1)) is split
 * into four classes of equal width, as in two-level segregated fit
 * allocators, so that finding a fitting class is a bitmap scan: O(1).
 */
#include "alloc.h"

#include <errno.h>

#include "errors.h"

#define UNIT_SHIFT 6                 /* log2 of the 64-byte unit */
#define EXACT_CLASSES 16u
#define BITMAP_WORDS (SHM_SIZE_CLASSES / 64)

/* Free blocks examined in the request's own class before moving to a class
 * whose every block fits. */
#define FIRST_FIT_PROBES 4

static uint32_t floor_log2(uint64_t value)
{
    return 63u - (uint32_t)__builtin_clzll(value);
}

static uint32_t size_class(uint64_t units)
{
    if (units < EXACT_CLASSES)
        return (uint32_t)units;

    uint32_t power = floor_log2(units);
    uint32_t quarter = (uint32_t)(units >> (power - 2)) & 3u;
    return EXACT_CLASSES + (power - 4) * 4 + quarter;
}

/* Returns the lowest class all of whose blocks hold at least units. */
static uint32_t fitting_class(uint64_t units)
{
    if (units < EXACT_CLASSES)
        return (uint32_t)units;

    uint32_t power = floor_log2(units);
    uint64_t rounded = units + (UINT64_C(1) << (power - 2)) - 1;
    return size_class(rounded);
}

static void list_insert(shm_store_t *store, uint64_t offset)
{
    shm_header_t *header = store->header;
    shm_block_t *block = shm_block_at(store, offset);
    uint32_t class = size_class(block->size >> UNIT_SHIFT);

    uint64_t head = header->free_heads[class];
    block->u.free.prev = SHM_NO_BLOCK;
    block->u.free.next = head;
    if (head != SHM_NO_BLOCK)
        shm_block_at(store, head)->u.free.prev = offset;
    header->free_heads[class] = offset;
    header->free_bitmap[class / 64] |= UINT64_C(1) << (class % 64);
}

static void list_remove(shm_store_t *store, uint64_t offset)
{
    shm_header_t *header = store->header;
    shm_block_t *block = shm_block_at(store, offset);
    uint32_t class = size_class(block->size >> UNIT_SHIFT);

    uint64_t next = block->u.free.next;
    uint64_t prev = block->u.free.prev;
    if (next != SHM_NO_BLOCK)
        shm_block_at(store, next)->u.free.prev = prev;
    if (prev != SHM_NO_BLOCK)
        shm_block_at(store, prev)->u.free.next = next;
    else
        header->free_heads[class] = next;

    if (header->free_heads[class] == SHM_NO_BLOCK)
        header->free_bitmap[class / 64] &= ~(UINT64_C(1) << (class % 64));
}

/* Returns the first non-empty class >= class, or SHM_SIZE_CLASSES. */
static uint32_t next_nonempty_class(const shm_header_t *header, uint32_t class)
{
    for (uint32_t word = class / 64; word < BITMAP_WORDS; word++) {
        uint64_t bits = header->free_bitmap[word];
        if (word == class / 64)
            bits &= ~UINT64_C(0) << (class % 64);
        if (bits != 0)
            return word * 64 + (uint32_t)__builtin_ctzll(bits);
    }
    return SHM_SIZE_CLASSES;
}

static void set_next_prev_size(shm_store_t *store, uint64_t offset, uint64_t size)
{
    uint64_t next = offset + size;
    if (next < store->arena_bytes)
        shm_block_at(store, next)->prev_size = size;
}

void shm_alloc_init(shm_store_t *store)
{
    shm_header_t *header = store->header;

    for (uint32_t c = 0; c < SHM_SIZE_CLASSES; c++)
        header->free_heads[c] = SHM_NO_BLOCK;
    for (uint32_t w = 0; w < BITMAP_WORDS; w++)
        header->free_bitmap[w] = 0;

    shm_block_t *block = shm_block_at(store, 0);
    block->magic = SHM_BLOCK_MAGIC;
    block->state = SHM_BLOCK_FREE;
    block->size = store->arena_bytes;
    block->prev_size = 0;
    block->owner = -1;
    block->descriptor = 0;
    list_insert(store, 0);

    /* Under the lock; stats readers load it relaxed. */
    shm_store_relaxed(&header->used_bytes, 0);
}

/* Returns a free block of at least bytes, or SHM_NO_BLOCK. */
static uint64_t find_free_block(shm_store_t *store, uint64_t bytes)
{
    shm_header_t *header = store->header;
    uint64_t units = bytes >> UNIT_SHIFT;

    /* First fit among a few blocks of the request's own class keeps small
     * requests from splitting a much larger block. */
    uint32_t own = size_class(units);
    uint64_t candidate = header->free_heads[own];
    for (int probe = 0; probe < FIRST_FIT_PROBES && candidate != SHM_NO_BLOCK; probe++) {
        shm_block_t *block = shm_block_at(store, candidate);
        if (block->size >= bytes)
            return candidate;
        candidate = block->u.free.next;
    }

    uint32_t class = fitting_class(units);
    if (class >= SHM_SIZE_CLASSES)
        return SHM_NO_BLOCK;
    class = next_nonempty_class(header, class);
    if (class >= SHM_SIZE_CLASSES)
        return SHM_NO_BLOCK;
    return header->free_heads[class];
}

int shm_alloc(shm_store_t *store, uint64_t bytes, int32_t owner, uint64_t *offset)
{
    uint64_t found = find_free_block(store, bytes);
    if (found == SHM_NO_BLOCK)
        return -ENOMEM;

    list_remove(store, found);
    shm_block_t *block = shm_block_at(store, found);

    /* Split off the tail as a new free block. Its header is complete
     * before the shrinking store of block->size makes it reachable. */
    uint64_t rest = block->size - bytes;
    if (rest >= SHM_ALIGN) {
        uint64_t rest_offset = found + bytes;
        shm_block_t *tail = shm_block_at(store, rest_offset);
        tail->magic = SHM_BLOCK_MAGIC;
        tail->state = SHM_BLOCK_FREE;
        tail->size = rest;
        tail->prev_size = bytes;
        tail->owner = -1;
        tail->descriptor = 0;
        set_next_prev_size(store, rest_offset, rest);

        block->size = bytes;
        list_insert(store, rest_offset);
    }

    block->owner = owner;
    block->descriptor = 0;
    block->state = SHM_BLOCK_UNPUBLISHED;

    /* Under the lock; stats readers load it relaxed. */
    shm_store_relaxed(&store->header->used_bytes,
                      shm_load_relaxed(&store->header->used_bytes) + block->size);

    *offset = found;
    return 0;
}

uint64_t shm_alloc_free(shm_store_t *store, uint64_t offset)
{
    shm_block_t *block = shm_block_at(store, offset);

    /* Under the lock; stats readers load it relaxed. */
    shm_store_relaxed(&store->header->used_bytes,
                      shm_load_relaxed(&store->header->used_bytes) - block->size);

    block->state = SHM_BLOCK_FREE;
    block->owner = -1;

    uint64_t next = offset + block->size;
    if (next < store->arena_bytes) {
        shm_block_t *following = shm_block_at(store, next);
        if (following->state == SHM_BLOCK_FREE) {
            list_remove(store, next);
            block->size += following->size;
        }
    }

    if (offset > 0) {
        uint64_t prev = offset - block->prev_size;
        shm_block_t *preceding = shm_block_at(store, prev);
        if (preceding->state == SHM_BLOCK_FREE) {
            list_remove(store, prev);
            preceding->size += block->size;
            offset = prev;
            block = preceding;
        }
    }

    set_next_prev_size(store, offset, block->size);
    list_insert(store, offset);
    return offset;
}

uint64_t shm_alloc_free_owned(shm_store_t *store, int32_t owner)
{
    uint64_t freed = 0;
    uint64_t offset = 0;

    while (offset < store->arena_bytes) {
        shm_block_t *block = shm_block_at(store, offset);
        if (block->state == SHM_BLOCK_UNPUBLISHED && block->owner == owner) {
            freed += block->size;
            offset = shm_alloc_free(store, offset);
            block = shm_block_at(store, offset);
        }
        offset += block->size;
    }
    return freed;
}

uint64_t shm_alloc_largest_free(const shm_store_t *store)
{
    const shm_header_t *header = store->header;
    uint64_t largest = 0;

    /* The top non-empty class holds the largest blocks; scan its list. */
    for (uint32_t class = SHM_SIZE_CLASSES; class-- > 0;) {
        if (header->free_heads[class] == SHM_NO_BLOCK)
            continue;
        for (uint64_t at = header->free_heads[class]; at != SHM_NO_BLOCK;) {
            const shm_block_t *block = shm_block_at(store, at);
            if (block->size > largest)
                largest = block->size;
            at = block->u.free.next;
        }
        break;
    }
    return largest;
}

shm_block_t *shm_alloc_check(const shm_store_t *store, uint64_t offset, uint32_t state)
{
    if (offset % SHM_ALIGN != 0 || offset >= store->arena_bytes)
        return NULL;

    shm_block_t *block = shm_block_at(store, offset);
    if (block->magic != SHM_BLOCK_MAGIC || block->state != state)
        return NULL;
    if (block->size < SHM_ALIGN || block->size > store->arena_bytes - offset)
        return NULL;
    return block;
}

int shm_alloc_rebuild(shm_store_t *store)
{
    shm_header_t *header = store->header;

    for (uint32_t c = 0; c < SHM_SIZE_CLASSES; c++)
        header->free_heads[c] = SHM_NO_BLOCK;
    for (uint32_t w = 0; w < BITMAP_WORDS; w++)
        header->free_bitmap[w] = 0;

    uint64_t used = 0;
    uint64_t offset = 0;
    uint64_t prev_size = 0;
    uint64_t free_run = SHM_NO_BLOCK;  /* start of the free block being grown */

    while (offset < store->arena_bytes) {
        shm_block_t *block = shm_block_at(store, offset);
        uint64_t size = block->size;
        int valid = block->magic == SHM_BLOCK_MAGIC && block->state <= SHM_BLOCK_PUBLISHED &&
                    size >= SHM_ALIGN && size % SHM_ALIGN == 0 &&
                    size <= store->arena_bytes - offset;
        if (!valid) {
            return shm_fail(-EUCLEAN, "arena block at offset %llu has an invalid header",
                            (unsigned long long)offset);
        }

        if (block->state == SHM_BLOCK_FREE && free_run != SHM_NO_BLOCK) {
            /* Merge into the free block just before; its size store alone
             * makes this header unreachable. */
            shm_block_at(store, free_run)->size += size;
        } else {
            block->prev_size = prev_size;
            if (block->state == SHM_BLOCK_FREE) {
                if (free_run == SHM_NO_BLOCK)
                    free_run = offset;
            } else {
                if (free_run != SHM_NO_BLOCK) {
                    list_insert(store, free_run);
                    block->prev_size = shm_block_at(store, free_run)->size;
                    free_run = SHM_NO_BLOCK;
                }
                used += size;
            }
            prev_size = size;
        }
        offset += size;
    }
    if (free_run != SHM_NO_BLOCK)
        list_insert(store, free_run);

    /* Under the lock; stats readers load it relaxed. */
    shm_store_relaxed(&header->used_bytes, used);
    return 0;
}
