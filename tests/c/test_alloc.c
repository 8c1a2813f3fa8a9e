/*
 * test_alloc.c - unit tests of the arena allocator (csrc/alloc.c) on the
 * real shared memory of an in-process daemon.
 *
 * Exit 0: pass. Any other status: fail, with the failed check printed.
 * Seed: env SHMSTORE_TEST_SEED (printed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "client.h"
#include "lock.h"
#include "shmstore.h"

#define ARENA_BYTES (1u << 20)

#define CHECK(condition)                                                                 \
    do {                                                                                 \
        if (!(condition)) {                                                              \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #condition); \
            exit(1);                                                                     \
        }                                                                                \
    } while (0)

#define CHECK_OK(call)                                                                   \
    do {                                                                                 \
        int result_ = (call);                                                            \
        if (result_ != 0) {                                                              \
            fprintf(stderr, "%s:%d: %s returned %d (%s): %s\n", __FILE__, __LINE__, #call, \
                    result_, shmstore_strerror(result_), shmstore_error_detail());        \
            exit(1);                                                                     \
        }                                                                                \
    } while (0)

static shm_store_t *store;

static uint64_t used_bytes(void)
{
    return shm_load_relaxed(&store->header->used_bytes);
}

/* Walks the arena and checks the allocator's invariants: sizes tile the
 * arena, prev_size tags match, no two free blocks touch, used-bytes counts
 * the allocated ones. Returns the number of free blocks. */
static uint64_t check_arena(void)
{
    uint64_t offset = 0;
    uint64_t prev_size = 0;
    uint64_t used = 0;
    uint64_t free_blocks = 0;
    int prev_free = 0;

    while (offset < store->arena_bytes) {
        shm_block_t *block = shm_block_at(store, offset);
        CHECK(block->magic == SHM_BLOCK_MAGIC);
        CHECK(block->size >= SHM_ALIGN);
        CHECK(block->size % SHM_ALIGN == 0);
        CHECK(block->prev_size == prev_size);
        int is_free = block->state == SHM_BLOCK_FREE;
        CHECK(!(is_free && prev_free));
        if (is_free)
            free_blocks++;
        else
            used += block->size;
        prev_free = is_free;
        prev_size = block->size;
        offset += block->size;
    }
    CHECK(offset == store->arena_bytes);
    CHECK(used == used_bytes());
    return free_blocks;
}

static void test_alignment_and_sizes(void)
{
    uint64_t sizes[] = {64, 128, 192, 4096, 64 * 1000, 640};
    uint64_t offsets[6];

    for (int i = 0; i < 6; i++) {
        CHECK_OK(shm_alloc(store, sizes[i], 1, &offsets[i]));
        CHECK(offsets[i] % SHM_ALIGN == 0);
        CHECK(shm_block_at(store, offsets[i])->size == sizes[i]);
        CHECK(shm_block_at(store, offsets[i])->state == SHM_BLOCK_UNPUBLISHED);
        CHECK(shm_block_at(store, offsets[i])->owner == 1);
        CHECK(((uintptr_t)(store->arena + offsets[i])) % SHM_ALIGN == 0);
    }
    check_arena();

    for (int i = 0; i < 6; i++)
        shm_alloc_free(store, offsets[i]);
    CHECK(used_bytes() == 0);
    CHECK(check_arena() == 1);
    CHECK(shm_alloc_largest_free(store) == store->arena_bytes);
}

static void test_coalesce_both_sides(void)
{
    uint64_t a, b, c, d;
    CHECK_OK(shm_alloc(store, 256, 1, &a));
    CHECK_OK(shm_alloc(store, 256, 1, &b));
    CHECK_OK(shm_alloc(store, 256, 1, &c));
    CHECK_OK(shm_alloc(store, 256, 1, &d));

    shm_alloc_free(store, a);
    shm_alloc_free(store, c);
    check_arena();

    /* b sits between two free blocks: freeing it merges all three. */
    uint64_t merged = shm_alloc_free(store, b);
    CHECK(merged == a);
    CHECK(shm_block_at(store, a)->size == 768);
    check_arena();

    shm_alloc_free(store, d);
    CHECK(check_arena() == 1);
    CHECK(used_bytes() == 0);
}

static void test_fragmentation(void)
{
    enum { COUNT = 64 };
    uint64_t offsets[COUNT];

    for (int i = 0; i < COUNT; i++)
        CHECK_OK(shm_alloc(store, 128, 1, &offsets[i]));
    uint64_t rest;
    CHECK_OK(shm_alloc(store, store->arena_bytes - used_bytes(), 1, &rest));
    CHECK(shm_alloc_largest_free(store) == 0);

    /* Free every other block: plenty of free bytes, none contiguous. */
    for (int i = 0; i < COUNT; i += 2)
        shm_alloc_free(store, offsets[i]);
    check_arena();
    uint64_t big;
    CHECK(shm_alloc(store, 256, 1, &big) == -ENOMEM);

    /* A small request reuses a hole exactly. */
    uint64_t small;
    CHECK_OK(shm_alloc(store, 128, 1, &small));
    CHECK(small == offsets[0] || small % 256 == 0);
    shm_alloc_free(store, small);

    for (int i = 1; i < COUNT; i += 2)
        shm_alloc_free(store, offsets[i]);
    shm_alloc_free(store, rest);
    CHECK(check_arena() == 1);
}

static void test_exhaustion(void)
{
    uint64_t total = 0;
    uint64_t offset;
    uint64_t *offsets = calloc(store->arena_bytes / 4096 + 1, sizeof *offsets);
    CHECK(offsets != NULL);
    size_t count = 0;

    while (shm_alloc(store, 4096, 1, &offset) == 0) {
        offsets[count++] = offset;
        total += 4096;
    }
    CHECK(total == store->arena_bytes / 4096 * 4096);
    CHECK(used_bytes() == total);
    CHECK(shm_alloc(store, 64, 1, &offset) == -ENOMEM || store->arena_bytes % 4096 != 0);

    for (size_t i = 0; i < count; i++)
        shm_alloc_free(store, offsets[i]);
    CHECK(check_arena() == 1);
    free(offsets);
}

static void test_owner_walk(void)
{
    uint64_t offsets[12];
    uint64_t owned = 0;

    for (int i = 0; i < 12; i++) {
        int32_t owner = i % 3 == 0 ? 7 : 8;
        CHECK_OK(shm_alloc(store, 64 * (uint64_t)(i + 1), owner, &offsets[i]));
        if (owner == 7)
            owned += 64 * (uint64_t)(i + 1);
    }

    /* A PUBLISHED block of owner 7 is not the walk's to free. */
    shm_block_at(store, offsets[3])->state = SHM_BLOCK_PUBLISHED;
    owned -= 64 * 4;

    CHECK(shm_alloc_free_owned(store, 7) == owned);
    check_arena();
    CHECK(shm_alloc_free_owned(store, 7) == 0);

    shm_block_at(store, offsets[3])->state = SHM_BLOCK_UNPUBLISHED;
    CHECK(shm_alloc_free_owned(store, 7) == 64 * 4);
    CHECK(shm_alloc_free_owned(store, 8) > 0);
    CHECK(check_arena() == 1);
    CHECK(used_bytes() == 0);
}

static void test_rebuild(void)
{
    uint64_t a, b, c;
    CHECK_OK(shm_alloc(store, 640, 1, &a));
    CHECK_OK(shm_alloc(store, 640, 1, &b));
    CHECK_OK(shm_alloc(store, 640, 1, &c));
    shm_alloc_free(store, b);

    /* Simulate a holder that died mid-merge: it grew a's neighbour count
     * wrongly and emptied the lists. The rebuild trusts only block sizes. */
    uint64_t used = used_bytes();
    shm_store_relaxed(&store->header->used_bytes, 12345);
    for (uint32_t k = 0; k < SHM_SIZE_CLASSES; k++)
        store->header->free_heads[k] = SHM_NO_BLOCK;
    memset(store->header->free_bitmap, 0, sizeof store->header->free_bitmap);
    shm_block_at(store, c)->prev_size = 1;

    CHECK_OK(shm_alloc_rebuild(store));
    CHECK(used_bytes() == used);
    check_arena();

    uint64_t again;
    CHECK_OK(shm_alloc(store, 640, 1, &again));
    CHECK(again == b);
    shm_alloc_free(store, again);
    shm_alloc_free(store, a);
    shm_alloc_free(store, c);
    CHECK(check_arena() == 1);

    /* A corrupt header is reported, not walked past. */
    uint32_t magic = shm_block_at(store, 0)->magic;
    shm_block_at(store, 0)->magic = 0;
    CHECK(shm_alloc_rebuild(store) == -EUCLEAN);
    shm_block_at(store, 0)->magic = magic;
    CHECK_OK(shm_alloc_rebuild(store));
}

static void test_random(unsigned seed)
{
    enum { SLOTS = 200, STEPS = 20000 };
    uint64_t offsets[SLOTS];
    uint64_t sizes[SLOTS];
    memset(offsets, 0xff, sizeof offsets);
    srand(seed);

    for (int step = 0; step < STEPS; step++) {
        int i = rand() % SLOTS;
        if (offsets[i] == UINT64_MAX) {
            uint64_t units = (uint64_t)(rand() % 16 == 0 ? rand() % 400 + 1 : rand() % 20 + 1);
            if (shm_alloc(store, units * 64, 2, &offsets[i]) == 0) {
                sizes[i] = units * 64;
                CHECK(shm_block_at(store, offsets[i])->size == sizes[i]);
            } else {
                offsets[i] = UINT64_MAX;
            }
        } else {
            shm_alloc_free(store, offsets[i]);
            offsets[i] = UINT64_MAX;
        }
        if (step % 1000 == 0)
            check_arena();
    }

    for (int i = 0; i < SLOTS; i++) {
        if (offsets[i] != UINT64_MAX)
            shm_alloc_free(store, offsets[i]);
    }
    CHECK(check_arena() == 1);
    CHECK(used_bytes() == 0);
}

int main(void)
{
    const char *text = getenv("SHMSTORE_TEST_SEED");
    unsigned seed = text ? (unsigned)strtoul(text, NULL, 10) : (unsigned)getpid();
    printf("test_alloc: SHMSTORE_TEST_SEED=%u\n", seed);

    char name[64];
    snprintf(name, sizeof name, "test-alloc-%d", (int)getpid());
    shmstore_daemon_config_t config = {.memory_bytes = ARENA_BYTES, .max_keys = 64};
    shmstore_daemon_t *daemon = NULL;
    CHECK_OK(shmstore_daemon_create(name, &config, &daemon));
    shmstore_client_t *client = NULL;
    CHECK_OK(shmstore_connect(name, &client));
    store = &client->store;

    CHECK_OK(shm_lock(store, -1));
    CHECK(check_arena() == 1);
    test_alignment_and_sizes();
    test_coalesce_both_sides();
    test_fragmentation();
    test_exhaustion();
    test_owner_walk();
    test_rebuild();
    test_random(seed);
    shm_unlock(store);

    CHECK_OK(shmstore_disconnect(client));
    CHECK_OK(shmstore_daemon_destroy(daemon));
    printf("test_alloc: pass\n");
    return 0;
}
