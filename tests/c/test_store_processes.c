/*
 * test_store_processes.c - reader processes and writer threads share one
 * store, as ranks of a simulation do: each reader process maps the
 * segments at its own address and pins versions while the writers
 * overwrite and delete them.
 *
 * Every tensor carries its key id, a version and a checksum, which the
 * readers verify. At the end the store must contain exactly the writers'
 * last versions, and deleting them must return every arena byte,
 * descriptor and reader bit.
 *
 * Uses fork, so it skips under ThreadSanitizer (exit 77); the threaded
 * stress test covers the same paths there.
 *
 * Exit 0: pass. Any other status: fail. Seed: env SHMSTORE_TEST_SEED.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client.h"
#include "layout.h"
#include "shmstore.h"

#define WRITERS 2
#define READER_PROCESSES 2
#define KEYS_PER_WRITER 6
#define KEYS (WRITERS * KEYS_PER_WRITER)
#define OPS_PER_WRITER 30000
#define MAX_ELEMENTS 4096
#define VIEWS_HELD 3

#define CHECK(condition)                                                                 \
    do {                                                                                 \
        if (!(condition)) {                                                              \
            fprintf(stderr, "%d %s:%d: check failed: %s\n", (int)getpid(), __FILE__,     \
                    __LINE__, #condition);                                               \
            _exit(1);                                                                    \
        }                                                                                \
    } while (0)

#define CHECK_OK(call)                                                                   \
    do {                                                                                 \
        int result_ = (call);                                                            \
        if (result_ != 0) {                                                              \
            fprintf(stderr, "%d %s:%d: %s returned %d (%s): %s\n", (int)getpid(),        \
                    __FILE__, __LINE__, #call, result_, shmstore_strerror(result_),       \
                    shmstore_error_detail());                                            \
            _exit(1);                                                                    \
        }                                                                                \
    } while (0)

/* Shared with the reader processes through an anonymous shared mapping. */
typedef struct shared_state {
    atomic_int writers_done;
    atomic_ullong verified_reads;
} shared_state_t;

static shared_state_t *shared;
static shmstore_client_t *client;
static unsigned base_seed;
static char name[64];

/* Final state per key, written only by the key's writer thread: the
 * checksum of its last version, or 0 when the key ended up deleted. */
static uint64_t final_checksum[KEYS];

#include "test_store_tensors.h"

static void key_name(char *out, uint64_t key)
{
    snprintf(out, 32, "proc-%llu", (unsigned long long)key);
}

static void *writer_main(void *argument)
{
    int writer = (int)(intptr_t)argument;
    uint64_t random_state = base_seed * 2654435761u + (uint64_t)writer + 7;
    uint64_t *buffer = malloc(MAX_ELEMENTS * sizeof *buffer);
    CHECK(buffer != NULL);
    char key[32];

    for (uint64_t version = 1; version <= OPS_PER_WRITER; version++) {
        uint64_t index = (uint64_t)writer * KEYS_PER_WRITER +
                         next_random(&random_state) % KEYS_PER_WRITER;
        key_name(key, index);
        int64_t count = (int64_t)(3 + next_random(&random_state) % (MAX_ELEMENTS - 2));

        if (next_random(&random_state) % 10 == 0) {
            int result = shmstore_delete(client, key);
            CHECK(result == 0 || result == SHMSTORE_ENOKEY);
            final_checksum[index] = 0;
            continue;
        }
        final_checksum[index] = fill_tensor(buffer, (uint64_t)count, index, version);
        CHECK_OK(shmstore_put(client, key, buffer, SHMSTORE_UINT64, 1, &count,
                              SHMSTORE_ORDER_C));
    }

    free(buffer);
    atomic_fetch_add(&shared->writers_done, 1);
    return NULL;
}

/* Runs in a child process: reads and verifies until the writers finish. */
static void reader_process(int reader)
{
    shmstore_client_t *mine = NULL;
    CHECK_OK(shmstore_connect(name, &mine));
    uint64_t random_state = base_seed * 40503u + (uint64_t)reader + 301;
    shmstore_view_t held[VIEWS_HELD];
    uint64_t held_key[VIEWS_HELD];
    uint64_t held_sum[VIEWS_HELD];
    memset(held, 0, sizeof held);
    char key[32];
    unsigned long long reads = 0;

    while (atomic_load(&shared->writers_done) < WRITERS) {
        uint64_t index = next_random(&random_state) % KEYS;
        key_name(key, index);
        int slot = (int)(next_random(&random_state) % VIEWS_HELD);

        if (held[slot].client_ != NULL) {
            CHECK(verify_tensor(&held[slot], held_key[slot]) == held_sum[slot]);
            CHECK_OK(shmstore_release(&held[slot]));
        }

        int result = shmstore_get(mine, key, &held[slot]);
        if (result == SHMSTORE_ENOKEY)
            continue;
        CHECK_OK(result);
        held_key[slot] = index;
        held_sum[slot] = verify_tensor(&held[slot], index);
        reads++;
    }

    for (int slot = 0; slot < VIEWS_HELD; slot++) {
        if (held[slot].client_ != NULL)
            CHECK_OK(shmstore_release(&held[slot]));
    }
    CHECK_OK(shmstore_disconnect(mine));
    atomic_fetch_add(&shared->verified_reads, reads);
    _exit(0);
}

int main(void)
{
#if defined(__SANITIZE_THREAD__)
    printf("test_store_processes: skipped: uses fork, which ThreadSanitizer does not "
           "support\n");
    return 77;
#endif
    const char *text = getenv("SHMSTORE_TEST_SEED");
    base_seed = text ? (unsigned)strtoul(text, NULL, 10) : (unsigned)getpid();
    printf("test_store_processes: SHMSTORE_TEST_SEED=%u\n", base_seed);
    fflush(stdout);

    shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                  -1, 0);
    CHECK(shared != MAP_FAILED);
    atomic_init(&shared->writers_done, 0);
    atomic_init(&shared->verified_reads, 0);

    snprintf(name, sizeof name, "test-processes-%d", (int)getpid());
    shmstore_daemon_config_t config = {.memory_bytes = 16u << 20, .max_keys = 64};
    shmstore_daemon_t *daemon = NULL;
    CHECK_OK(shmstore_daemon_create(name, &config, &daemon));
    CHECK_OK(shmstore_connect(name, &client));

    pid_t readers[READER_PROCESSES];
    for (int i = 0; i < READER_PROCESSES; i++) {
        readers[i] = fork();
        CHECK(readers[i] >= 0);
        if (readers[i] == 0)
            reader_process(i);
    }

    pthread_t threads[WRITERS];
    for (int i = 0; i < WRITERS; i++)
        CHECK(pthread_create(&threads[i], NULL, writer_main, (void *)(intptr_t)i) == 0);

    shmstore_event_t events[8];
    while (atomic_load(&shared->writers_done) < WRITERS)
        CHECK(shmstore_daemon_poll(daemon, 10, events, 8) >= 0);
    for (int i = 0; i < WRITERS; i++)
        CHECK(pthread_join(threads[i], NULL) == 0);

    for (int i = 0; i < READER_PROCESSES; i++) {
        int status = 0;
        CHECK(waitpid(readers[i], &status, 0) == readers[i]);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "reader process %d ended with status %#x\n", (int)readers[i],
                    status);
            return 1;
        }
    }
    printf("test_store_processes: %llu reads verified\n",
           (unsigned long long)atomic_load(&shared->verified_reads));
    CHECK(atomic_load(&shared->verified_reads) > 0);

    /* Conservation: the store contains exactly the writers' last versions. */
    uint64_t expected_sum = 0;
    uint64_t stored_sum = 0;
    char key[32];
    for (uint64_t index = 0; index < KEYS; index++) {
        key_name(key, index);
        expected_sum += final_checksum[index];
        shmstore_view_t view;
        int result = shmstore_get(client, key, &view);
        if (final_checksum[index] == 0) {
            CHECK(result == SHMSTORE_ENOKEY);
            continue;
        }
        CHECK_OK(result);
        stored_sum += verify_tensor(&view, index);
        CHECK_OK(shmstore_release(&view));
    }
    CHECK(stored_sum == expected_sum);

    /* The readers detached cleanly: no reader bit and no extra byte stays. */
    for (uint64_t index = 0; index < KEYS; index++) {
        key_name(key, index);
        int result = shmstore_delete(client, key);
        CHECK(result == 0 || result == SHMSTORE_ENOKEY);
    }
    shm_store_t *store = &client->store;
    CHECK(shm_load_relaxed(&store->header->used_bytes) == 0);
    CHECK(shm_load_relaxed(&store->header->key_count) == 0);
    for (uint64_t d = 0; d < store->descriptor_count; d++) {
        uint64_t word = shm_load_relaxed(&shm_descriptor_at(store, d)->state);
        CHECK(SHM_DESC_STATE(word) == SHM_DESC_FREE);
        for (uint32_t w = 0; w < store->bitmap_words; w++)
            CHECK(shm_load_relaxed(&shm_descriptor_at(store, d)->readers[w]) == 0);
    }

    CHECK_OK(shmstore_disconnect(client));
    CHECK_OK(shmstore_daemon_destroy(daemon));
    printf("test_store_processes: pass\n");
    return 0;
}
