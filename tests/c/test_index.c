/*
 * test_index.c - unit tests of the key index (csrc/index.c) through the
 * public API of an in-process store, with white-box checks of buckets.
 *
 * Exit 0: pass. Any other status: fail, with the failed check printed.
 * Seed: env SHMSTORE_TEST_SEED (printed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "index.h"
#include "shmstore.h"

#define MAX_KEYS 32

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

static shmstore_client_t *client;

static void put_value(const char *key, int64_t value)
{
    CHECK_OK(shmstore_put(client, key, &value, SHMSTORE_INT64, 0, NULL, SHMSTORE_ORDER_C));
}

/* Returns the stored scalar of key, or -1 when the key is absent. */
static int64_t get_value(const char *key)
{
    shmstore_view_t view;
    int result = shmstore_get(client, key, &view);
    if (result == SHMSTORE_ENOKEY)
        return -1;
    CHECK_OK(result);
    CHECK(view.ndim == 0);
    CHECK(view.nbytes == 8);
    int64_t value = *(const int64_t *)view.data;
    CHECK_OK(shmstore_release(&view));
    return value;
}

static uint64_t key_count(void)
{
    return shm_load_relaxed(&client->store.header->key_count);
}

static uint64_t bucket_of(const char *key)
{
    return shm_hash_key(key, strlen(key)) & client->store.index_mask;
}

/* Fills keys[0..count) with distinct keys "prefix-N" whose home bucket is
 * bucket. */
static void keys_for_bucket(char keys[][32], int count, const char *prefix, uint64_t bucket)
{
    int found = 0;
    for (int n = 0; found < count; n++) {
        snprintf(keys[found], 32, "%s-%d", prefix, n);
        if (bucket_of(keys[found]) == bucket)
            found++;
    }
}

static void test_insert_replace_delete(void)
{
    char key[32];
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof key, "basic-%d", i);
        put_value(key, i);
    }
    CHECK(key_count() == 10);

    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof key, "basic-%d", i);
        CHECK(get_value(key) == i);
    }

    put_value("basic-3", 300);
    CHECK(get_value("basic-3") == 300);
    CHECK(key_count() == 10);

    CHECK_OK(shmstore_delete(client, "basic-3"));
    CHECK(get_value("basic-3") == -1);
    CHECK(shmstore_delete(client, "basic-3") == SHMSTORE_ENOKEY);
    CHECK(key_count() == 9);

    put_value("basic-3", 3);
    CHECK(get_value("basic-3") == 3);

    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof key, "basic-%d", i);
        CHECK_OK(shmstore_delete(client, key));
    }
    CHECK(key_count() == 0);
}

static void test_tombstone_keeps_chain(void)
{
    char keys[4][32];
    keys_for_bucket(keys, 4, "chain", 5);

    for (int i = 0; i < 4; i++)
        put_value(keys[i], 10 + i);

    /* Deleting the head of the chain leaves a tombstone that lookups of
     * the later keys must step over. */
    CHECK_OK(shmstore_delete(client, keys[0]));
    CHECK_OK(shmstore_delete(client, keys[2]));
    CHECK(get_value(keys[0]) == -1);
    CHECK(get_value(keys[1]) == 11);
    CHECK(get_value(keys[2]) == -1);
    CHECK(get_value(keys[3]) == 13);

    /* A re-insert reuses the first tombstone and is still found once. */
    put_value(keys[2], 22);
    CHECK(get_value(keys[2]) == 22);
    uint64_t epoch;
    shm_atomic_u64 *table = shm_index_active(&client->store, &epoch);
    CHECK(shm_load_relaxed(&table[5]) != SHM_INDEX_TOMBSTONE);

    for (int i = 1; i < 4; i++)
        CHECK_OK(shmstore_delete(client, keys[i]));
    CHECK(key_count() == 0);
}

static void test_probe_wrap(void)
{
    char keys[5][32];
    uint64_t last = client->store.index_mask;
    keys_for_bucket(keys, 5, "wrap", last);

    for (int i = 0; i < 5; i++)
        put_value(keys[i], 100 + i);
    for (int i = 0; i < 5; i++)
        CHECK(get_value(keys[i]) == 100 + i);

    CHECK_OK(shmstore_delete(client, keys[1]));
    for (int i = 0; i < 5; i++)
        CHECK(get_value(keys[i]) == (i == 1 ? -1 : 100 + i));

    for (int i = 0; i < 5; i++) {
        if (i != 1)
            CHECK_OK(shmstore_delete(client, keys[i]));
    }
    CHECK(key_count() == 0);
}

static void test_full_table(void)
{
    char key[32];
    for (int i = 0; i < MAX_KEYS; i++) {
        snprintf(key, sizeof key, "full-%d", i);
        put_value(key, i);
    }
    CHECK(key_count() == MAX_KEYS);

    int64_t value = 1;
    int result = shmstore_put(client, "one-too-many", &value, SHMSTORE_INT64, 0, NULL,
                              SHMSTORE_ORDER_C);
    CHECK(result == SHMSTORE_EFULL);
    CHECK(strstr(shmstore_error_detail(), "maximum of 32 keys") != NULL);
    CHECK(get_value("one-too-many") == -1);

    /* Replacing an existing key needs no new entry. */
    put_value("full-0", 1000);
    CHECK(get_value("full-0") == 1000);

    CHECK_OK(shmstore_delete(client, "full-5"));
    put_value("one-too-many", 7);
    CHECK(get_value("one-too-many") == 7);

    for (int i = 0; i < MAX_KEYS; i++) {
        snprintf(key, sizeof key, "full-%d", i);
        if (i != 5)
            CHECK_OK(shmstore_delete(client, key));
    }
    CHECK_OK(shmstore_delete(client, "one-too-many"));
    CHECK(key_count() == 0);
    CHECK(shm_load_relaxed(&client->store.header->used_bytes) == 0);
}

/* Many distinct keys come and go: tombstones pile up and force table
 * rebuilds; a model of the live set checks every lookup. */
static void test_rebuild_with_model(unsigned seed)
{
    enum { UNIVERSE = 400, STEPS = 4000 };
    static int64_t model[UNIVERSE];
    char key[32];
    srand(seed);
    for (int i = 0; i < UNIVERSE; i++)
        model[i] = -1;

    uint64_t epoch_before = shm_load_relaxed(&client->store.header->index_epoch);
    int live = 0;

    for (int step = 0; step < STEPS; step++) {
        int i = rand() % UNIVERSE;
        snprintf(key, sizeof key, "model-%d", i);
        if (model[i] >= 0 && rand() % 2 == 0) {
            CHECK_OK(shmstore_delete(client, key));
            model[i] = -1;
            live--;
        } else if (model[i] >= 0 || live < MAX_KEYS) {
            if (model[i] < 0)
                live++;
            model[i] = step;
            put_value(key, step);
        }

        int probe = rand() % UNIVERSE;
        snprintf(key, sizeof key, "model-%d", probe);
        CHECK(get_value(key) == model[probe]);
    }
    CHECK(key_count() == (uint64_t)live);
    CHECK(shm_load_relaxed(&client->store.header->index_epoch) > epoch_before);

    for (int i = 0; i < UNIVERSE; i++) {
        snprintf(key, sizeof key, "model-%d", i);
        CHECK(get_value(key) == model[i]);
        if (model[i] >= 0)
            CHECK_OK(shmstore_delete(client, key));
    }
    CHECK(key_count() == 0);
}

static void test_hash(void)
{
    CHECK(shm_hash_key("a", 1) != shm_hash_key("b", 1));
    CHECK(shm_hash_key("ab", 2) != shm_hash_key("ba", 2));
    CHECK(shm_hash_key("key", 3) == shm_hash_key("key", 3));
    CHECK(shm_index_capacity(32) == 64);
    CHECK(shm_index_capacity(33) == 128);
    CHECK(shm_index_capacity(1) == 8);
}

int main(void)
{
    const char *text = getenv("SHMSTORE_TEST_SEED");
    unsigned seed = text ? (unsigned)strtoul(text, NULL, 10) : (unsigned)getpid();
    printf("test_index: SHMSTORE_TEST_SEED=%u\n", seed);

    char name[64];
    snprintf(name, sizeof name, "test-index-%d", (int)getpid());
    shmstore_daemon_config_t config = {.memory_bytes = 1u << 20, .max_keys = MAX_KEYS};
    shmstore_daemon_t *daemon = NULL;
    CHECK_OK(shmstore_daemon_create(name, &config, &daemon));
    CHECK_OK(shmstore_connect(name, &client));
    CHECK(client->store.index_mask + 1 == 64);

    test_hash();
    test_insert_replace_delete();
    test_tombstone_keeps_chain();
    test_probe_wrap();
    test_full_table();
    test_rebuild_with_model(seed);

    CHECK(shm_load_relaxed(&client->store.header->used_bytes) == 0);
    CHECK_OK(shmstore_disconnect(client));
    CHECK_OK(shmstore_daemon_destroy(daemon));
    printf("test_index: pass\n");
    return 0;
}
