/*
 * test_store_stress.c - many threads of one process put, overwrite,
 * delete, rename and read the same keys through two clients, so that
 * ThreadSanitizer checks the lock-free read path race with the writers.
 *
 * Every tensor carries its key id, a version and a checksum; readers
 * verify each one they see. At the end the stored tensors must be exactly
 * the writers' last versions (the sum of their checksums is conserved),
 * and deleting everything must return every arena byte and descriptor.
 *
 * Exit 0: pass. Any other status: fail. Seed: env SHMSTORE_TEST_SEED.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "layout.h"
#include "shmstore.h"

#define WRITERS 3
#define READERS 3
#define KEYS_PER_WRITER 8
#define KEYS (WRITERS * KEYS_PER_WRITER)
#define MAX_ELEMENTS 2048
#define VIEWS_HELD 4

/* Two clients map the segments twice, so each shared word has two
 * addresses. ThreadSanitizer tracks synchronisation per address and would
 * miss the store lock's and the atomics' ordering between the mappings,
 * reporting races that cannot happen. Under it, all threads share one
 * client, and the writers do fewer operations because every access costs
 * more; the other builds exercise two clients. */
#if defined(__SANITIZE_THREAD__)
#define CLIENTS 1
#define OPS_PER_WRITER 3000
#else
#define CLIENTS 2
#define OPS_PER_WRITER 20000
#endif

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

static shmstore_client_t *clients[CLIENTS];
static atomic_int writers_done;
static atomic_ullong verified_reads;
static unsigned base_seed;

/* Final state per key, written only by the key's writer: the checksum of
 * its last version, or 0 when the key ended up deleted. */
static uint64_t final_checksum[KEYS];

#include "test_store_tensors.h"

static void key_name(char *out, uint64_t key)
{
    snprintf(out, 32, "stress-%llu", (unsigned long long)key);
}

static void *writer_main(void *argument)
{
    int writer = (int)(intptr_t)argument;
    uint64_t random_state = base_seed * 2654435761u + (uint64_t)writer + 1;
    shmstore_client_t *client = clients[writer % CLIENTS];
    uint64_t *buffer = malloc(MAX_ELEMENTS * sizeof *buffer);
    CHECK(buffer != NULL);
    char key[32];
    char moved[40];

    for (uint64_t version = 1; version <= OPS_PER_WRITER; version++) {
        uint64_t index = (uint64_t)writer * KEYS_PER_WRITER +
                         next_random(&random_state) % KEYS_PER_WRITER;
        key_name(key, index);
        uint64_t action = next_random(&random_state) % 16;
        int64_t count = (int64_t)(3 + next_random(&random_state) % (MAX_ELEMENTS - 2));

        if (action == 0) {
            int result = shmstore_delete(client, key);
            CHECK(result == 0 || result == SHMSTORE_ENOKEY);
            final_checksum[index] = 0;
        } else if (action == 1 && final_checksum[index] != 0) {
            /* Move the key away and back: its tensor survives unchanged. */
            snprintf(moved, sizeof moved, "moved-%llu", (unsigned long long)index);
            CHECK_OK(shmstore_rename(client, key, moved));
            CHECK_OK(shmstore_rename(client, moved, key));
        } else if (action == 2) {
            void *data = NULL;
            uint64_t token = 0;
            CHECK_OK(shmstore_put_begin(client, key, SHMSTORE_UINT64, 1, &count,
                                        SHMSTORE_ORDER_C, &data, &token));
            fill_tensor(data, (uint64_t)count, index, version);
            CHECK_OK(shmstore_put_abort(client, token));
        } else if (action == 3) {
            void *data = NULL;
            uint64_t token = 0;
            CHECK_OK(shmstore_put_begin(client, key, SHMSTORE_UINT64, 1, &count,
                                        SHMSTORE_ORDER_C, &data, &token));
            final_checksum[index] = fill_tensor(data, (uint64_t)count, index, version);
            CHECK_OK(shmstore_put_commit(client, token));
        } else {
            final_checksum[index] = fill_tensor(buffer, (uint64_t)count, index, version);
            CHECK_OK(shmstore_put(client, key, buffer, SHMSTORE_UINT64, 1, &count,
                                  SHMSTORE_ORDER_C));
        }
    }

    free(buffer);
    atomic_fetch_add(&writers_done, 1);
    return NULL;
}

static void *reader_main(void *argument)
{
    int reader = (int)(intptr_t)argument;
    uint64_t random_state = base_seed * 40503u + (uint64_t)reader + 101;
    shmstore_client_t *client = clients[reader % CLIENTS];
    shmstore_view_t held[VIEWS_HELD];
    uint64_t held_key[VIEWS_HELD];
    uint64_t held_sum[VIEWS_HELD];
    memset(held, 0, sizeof held);
    char key[32];
    unsigned long long reads = 0;

    while (atomic_load(&writers_done) < WRITERS) {
        uint64_t index = next_random(&random_state) % KEYS;
        key_name(key, index);
        int slot = (int)(next_random(&random_state) % VIEWS_HELD);

        if (held[slot].client_ != NULL) {
            /* A held view must not change, whatever the writers did. */
            CHECK(verify_tensor(&held[slot], held_key[slot]) == held_sum[slot]);
            CHECK_OK(shmstore_release(&held[slot]));
        }

        int result = shmstore_get(client, key, &held[slot]);
        if (result == SHMSTORE_ENOKEY)
            continue;
        CHECK_OK(result);
        held_key[slot] = index;
        held_sum[slot] = verify_tensor(&held[slot], index);
        reads++;

        if (next_random(&random_state) % 64 == 0) {
            int exists = shmstore_exists(client, key);
            CHECK(exists == 0 || exists == 1);
        }
    }

    for (int slot = 0; slot < VIEWS_HELD; slot++) {
        if (held[slot].client_ != NULL) {
            CHECK(verify_tensor(&held[slot], held_key[slot]) == held_sum[slot]);
            CHECK_OK(shmstore_release(&held[slot]));
        }
    }
    atomic_fetch_add(&verified_reads, reads);
    return NULL;
}

static int count_key(const char *key, size_t length, void *context)
{
    (void)key;
    (void)length;
    (*(int *)context)++;
    return 0;
}

int main(void)
{
    const char *text = getenv("SHMSTORE_TEST_SEED");
    base_seed = text ? (unsigned)strtoul(text, NULL, 10) : (unsigned)getpid();
    printf("test_store_stress: SHMSTORE_TEST_SEED=%u\n", base_seed);

    char name[64];
    snprintf(name, sizeof name, "test-stress-%d", (int)getpid());
    shmstore_daemon_config_t config = {.memory_bytes = 32u << 20, .max_keys = 64};
    shmstore_daemon_t *daemon = NULL;
    CHECK_OK(shmstore_daemon_create(name, &config, &daemon));
    for (int i = 0; i < CLIENTS; i++)
        CHECK_OK(shmstore_connect(name, &clients[i]));

    pthread_t threads[WRITERS + READERS];
    for (int i = 0; i < WRITERS; i++)
        CHECK(pthread_create(&threads[i], NULL, writer_main, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < READERS; i++)
        CHECK(pthread_create(&threads[WRITERS + i], NULL, reader_main, (void *)(intptr_t)i) == 0);

    /* The daemon keeps beating while the threads run. */
    shmstore_event_t events[8];
    while (atomic_load(&writers_done) < WRITERS)
        CHECK(shmstore_daemon_poll(daemon, 10, events, 8) >= 0);
    for (int i = 0; i < WRITERS + READERS; i++)
        CHECK(pthread_join(threads[i], NULL) == 0);
    printf("test_store_stress: %llu reads verified\n", (unsigned long long)verified_reads);
    CHECK(verified_reads > 0);

    /* Conservation: the store contains exactly the writers' last versions. */
    uint64_t expected_sum = 0;
    uint64_t stored_sum = 0;
    int expected_keys = 0;
    char key[32];
    for (uint64_t index = 0; index < KEYS; index++) {
        key_name(key, index);
        expected_sum += final_checksum[index];
        shmstore_view_t view;
        int result = shmstore_get(clients[0], key, &view);
        if (final_checksum[index] == 0) {
            CHECK(result == SHMSTORE_ENOKEY);
            continue;
        }
        CHECK_OK(result);
        uint64_t sum = verify_tensor(&view, index);
        CHECK(sum == final_checksum[index]);
        stored_sum += sum;
        expected_keys++;
        CHECK_OK(shmstore_release(&view));
    }
    CHECK(stored_sum == expected_sum);

    int listed = 0;
    CHECK_OK(shmstore_list_keys(clients[CLIENTS - 1], "*", count_key, &listed));
    CHECK(listed == expected_keys);

    /* Deleting every key returns every byte and every descriptor. */
    for (uint64_t index = 0; index < KEYS; index++) {
        key_name(key, index);
        int result = shmstore_delete(clients[0], key);
        CHECK(result == 0 || result == SHMSTORE_ENOKEY);
    }
    shm_store_t *store = &clients[0]->store;
    CHECK(shm_load_relaxed(&store->header->used_bytes) == 0);
    CHECK(shm_load_relaxed(&store->header->key_count) == 0);
    for (uint64_t d = 0; d < store->descriptor_count; d++) {
        uint64_t word = shm_load_relaxed(&shm_descriptor_at(store, d)->state);
        CHECK(SHM_DESC_STATE(word) == SHM_DESC_FREE);
        for (uint32_t w = 0; w < store->bitmap_words; w++)
            CHECK(shm_load_relaxed(&shm_descriptor_at(store, d)->readers[w]) == 0);
    }

    for (int i = 0; i < CLIENTS; i++)
        CHECK_OK(shmstore_disconnect(clients[i]));
    CHECK_OK(shmstore_daemon_destroy(daemon));
    printf("test_store_stress: pass\n");
    return 0;
}
