/*
 * test_store.c - the public store API in one process: put, get, views
 * across overwrite and delete, rename, copy, list, poll, unpack, errors,
 * statistics and daemon events, against an in-process daemon.
 *
 * Exit 0: pass. Any other status: fail, with the failed check printed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shmstore.h"

#define ARENA_BYTES (4u << 20)

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

static char name[64];
static shmstore_daemon_t *daemon_handle;
static shmstore_client_t *client;

static uint64_t used_bytes(void)
{
    shmstore_stats_t stats;
    CHECK_OK(shmstore_stats(name, &stats, NULL, 0));
    return stats.used_bytes;
}

static uint64_t key_count(void)
{
    shmstore_stats_t stats;
    CHECK_OK(shmstore_stats(name, &stats, NULL, 0));
    return stats.key_count;
}

static void test_roundtrip_shapes(void)
{
    float matrix[2][3] = {{1, 2, 3}, {4, 5, 6}};
    int64_t dims[2] = {2, 3};
    CHECK_OK(shmstore_put(client, "matrix", matrix, SHMSTORE_FLOAT32, 2, dims, SHMSTORE_ORDER_C));

    shmstore_view_t view;
    CHECK_OK(shmstore_get(client, "matrix", &view));
    CHECK(view.dtype == SHMSTORE_FLOAT32);
    CHECK(view.order == SHMSTORE_ORDER_C);
    CHECK(view.ndim == 2);
    CHECK(view.dims[0] == 2);
    CHECK(view.dims[1] == 3);
    CHECK(view.nbytes == sizeof matrix);
    CHECK((uintptr_t)view.data % 64 == 0);
    CHECK(memcmp(view.data, matrix, sizeof matrix) == 0);
    CHECK_OK(shmstore_release(&view));
    /* A second release of the same view is a no-op. */
    CHECK_OK(shmstore_release(&view));

    /* 0-d scalar. */
    double scalar = 2.5;
    CHECK_OK(shmstore_put(client, "scalar", &scalar, SHMSTORE_FLOAT64, 0, NULL, SHMSTORE_ORDER_C));
    CHECK_OK(shmstore_get(client, "scalar", &view));
    CHECK(view.ndim == 0);
    CHECK(view.nbytes == 8);
    CHECK(*(const double *)view.data == 2.5);
    CHECK_OK(shmstore_release(&view));

    /* Zero-sized tensors: (0,) and (0, 3), with no data pointer. */
    int64_t empty_dims[2] = {0, 3};
    CHECK_OK(shmstore_put(client, "empty1", NULL, SHMSTORE_INT32, 1, empty_dims, SHMSTORE_ORDER_C));
    CHECK_OK(shmstore_put(client, "empty2", NULL, SHMSTORE_INT32, 2, empty_dims, SHMSTORE_ORDER_F));
    CHECK_OK(shmstore_get(client, "empty2", &view));
    CHECK(view.nbytes == 0);
    CHECK(view.ndim == 2);
    CHECK(view.dims[0] == 0);
    CHECK(view.dims[1] == 3);
    CHECK(view.order == SHMSTORE_ORDER_F);
    CHECK_OK(shmstore_release(&view));

    /* Every dtype round-trips its bytes. */
    for (int dtype = SHMSTORE_FLOAT16; dtype <= SHMSTORE_COMPLEX128; dtype++) {
        unsigned char bytes[5 * 16];
        for (size_t i = 0; i < sizeof bytes; i++)
            bytes[i] = (unsigned char)(i * 7 + (size_t)dtype);
        int64_t count = 5;
        size_t size = shmstore_dtype_size(dtype);
        CHECK(size > 0);
        CHECK_OK(shmstore_put(client, "dtype", bytes, (shmstore_dtype_t)dtype, 1, &count,
                              SHMSTORE_ORDER_C));
        CHECK_OK(shmstore_get(client, "dtype", &view));
        CHECK((int)view.dtype == dtype);
        CHECK(view.nbytes == 5 * size);
        CHECK(memcmp(view.data, bytes, 5 * size) == 0);
        CHECK_OK(shmstore_release(&view));
    }

    const char *keys[] = {"matrix", "scalar", "empty1", "empty2", "dtype"};
    for (int i = 0; i < 5; i++)
        CHECK_OK(shmstore_delete(client, keys[i]));
    CHECK(used_bytes() == 0);
}

static void test_views_survive_overwrite_and_delete(void)
{
    int64_t dims[1] = {1024};
    int32_t first[1024], second[1024];
    for (int i = 0; i < 1024; i++) {
        first[i] = i;
        second[i] = -i;
    }

    CHECK_OK(shmstore_put(client, "v", first, SHMSTORE_INT32, 1, dims, SHMSTORE_ORDER_C));
    uint64_t one_version = used_bytes();
    shmstore_view_t old_view;
    CHECK_OK(shmstore_get(client, "v", &old_view));

    /* Two views of one version in one client share one pin. */
    shmstore_view_t twin;
    CHECK_OK(shmstore_get(client, "v", &twin));
    CHECK(twin.data == old_view.data);

    CHECK_OK(shmstore_put(client, "v", second, SHMSTORE_INT32, 1, dims, SHMSTORE_ORDER_C));
    CHECK(used_bytes() == 2 * one_version);
    CHECK(memcmp(old_view.data, first, sizeof first) == 0);

    shmstore_view_t new_view;
    CHECK_OK(shmstore_get(client, "v", &new_view));
    CHECK(memcmp(new_view.data, second, sizeof second) == 0);

    CHECK_OK(shmstore_release(&old_view));
    CHECK(used_bytes() == 2 * one_version);
    CHECK(memcmp(twin.data, first, sizeof first) == 0);
    CHECK_OK(shmstore_release(&twin));
    CHECK(used_bytes() == one_version);

    CHECK_OK(shmstore_delete(client, "v"));
    CHECK(shmstore_exists(client, "v") == 0);
    CHECK(memcmp(new_view.data, second, sizeof second) == 0);
    CHECK(used_bytes() == one_version);
    CHECK_OK(shmstore_release(&new_view));
    CHECK(used_bytes() == 0);
}

static void test_two_phase_put(void)
{
    int64_t dims[2] = {4, 4};
    void *data = NULL;
    uint64_t token = 0;

    CHECK_OK(shmstore_put_begin(client, "two", SHMSTORE_FLOAT64, 2, dims, SHMSTORE_ORDER_F,
                                &data, &token));
    CHECK((uintptr_t)data % 64 == 0);
    CHECK(shmstore_exists(client, "two") == 0);
    for (int i = 0; i < 16; i++)
        ((double *)data)[i] = i * 0.5;
    CHECK_OK(shmstore_put_commit(client, token));
    CHECK(shmstore_exists(client, "two") == 1);

    /* A spent token is rejected, as is one that never was. */
    CHECK(shmstore_put_commit(client, token) == -EINVAL);
    CHECK(shmstore_put_abort(client, token) == -EINVAL);
    CHECK(shmstore_put_commit(client, 12345) == -EINVAL);

    uint64_t before = used_bytes();
    CHECK_OK(shmstore_put_begin(client, "aborted", SHMSTORE_FLOAT64, 2, dims, SHMSTORE_ORDER_C,
                                &data, &token));
    CHECK(used_bytes() > before);
    CHECK_OK(shmstore_put_abort(client, token));
    CHECK(used_bytes() == before);
    CHECK(shmstore_exists(client, "aborted") == 0);

    CHECK_OK(shmstore_delete(client, "two"));
    CHECK(used_bytes() == 0);
}

static int collect_key(const char *key, size_t length, void *context)
{
    char *list = context;
    CHECK(strlen(key) == length);
    strcat(list, key);
    strcat(list, ";");
    return 0;
}

static int stop_at_first(const char *key, size_t length, void *context)
{
    (void)key;
    (void)length;
    (*(int *)context)++;
    return 42;
}

static void test_rename_copy_list(void)
{
    int16_t values[3] = {1, 2, 3};
    int64_t dims[1] = {3};
    CHECK_OK(shmstore_put(client, "src", values, SHMSTORE_INT16, 1, dims, SHMSTORE_ORDER_C));

    CHECK_OK(shmstore_copy(client, "src", "dst"));
    int16_t other[3] = {7, 8, 9};
    CHECK_OK(shmstore_put(client, "src", other, SHMSTORE_INT16, 1, dims, SHMSTORE_ORDER_C));
    shmstore_view_t view;
    CHECK_OK(shmstore_get(client, "dst", &view));
    CHECK(memcmp(view.data, values, sizeof values) == 0);
    CHECK_OK(shmstore_release(&view));

    CHECK_OK(shmstore_rename(client, "src", "moved"));
    CHECK(shmstore_exists(client, "src") == 0);
    CHECK_OK(shmstore_get(client, "moved", &view));
    CHECK(memcmp(view.data, other, sizeof other) == 0);
    CHECK(view.ndim == 1);
    CHECK(view.dims[0] == 3);
    CHECK(view.dtype == SHMSTORE_INT16);
    CHECK_OK(shmstore_release(&view));
    CHECK(key_count() == 2);

    /* Rename onto an existing key replaces it; onto itself changes nothing. */
    CHECK_OK(shmstore_rename(client, "moved", "dst"));
    CHECK_OK(shmstore_get(client, "dst", &view));
    CHECK(memcmp(view.data, other, sizeof other) == 0);
    CHECK_OK(shmstore_release(&view));
    CHECK_OK(shmstore_rename(client, "dst", "dst"));
    CHECK(shmstore_exists(client, "dst") == 1);
    CHECK(key_count() == 1);

    CHECK(shmstore_rename(client, "absent", "x") == SHMSTORE_ENOKEY);
    CHECK(shmstore_copy(client, "absent", "x") == SHMSTORE_ENOKEY);
    CHECK(shmstore_exists(client, "x") == 0);

    CHECK_OK(shmstore_put(client, "field.u", values, SHMSTORE_INT16, 1, dims, SHMSTORE_ORDER_C));
    CHECK_OK(shmstore_put(client, "field.v", values, SHMSTORE_INT16, 1, dims, SHMSTORE_ORDER_C));
    char list[256] = "";
    CHECK_OK(shmstore_list_keys(client, "field.*", collect_key, list));
    CHECK(strlen(list) == strlen("field.u;field.v;"));
    CHECK(strstr(list, "field.u;") != NULL);
    CHECK(strstr(list, "field.v;") != NULL);

    list[0] = '\0';
    CHECK_OK(shmstore_list_keys(client, "*", collect_key, list));
    CHECK(strstr(list, "dst;") != NULL);

    int calls = 0;
    CHECK(shmstore_list_keys(client, "*", stop_at_first, &calls) == 42);
    CHECK(calls == 1);

    CHECK_OK(shmstore_delete(client, "dst"));
    CHECK_OK(shmstore_delete(client, "field.u"));
    CHECK_OK(shmstore_delete(client, "field.v"));
    CHECK(used_bytes() == 0);
}

static void test_poll(void)
{
    CHECK(shmstore_poll(client, "later", 1, 3) == 0);
    int8_t byte = 1;
    CHECK_OK(shmstore_put(client, "later", &byte, SHMSTORE_INT8, 0, NULL, SHMSTORE_ORDER_C));
    CHECK(shmstore_poll(client, "later", 1, 3) == 1);
    CHECK(shmstore_poll(client, "later", 1, 0) == -EINVAL);
    CHECK(shmstore_poll(client, "later", -1, 1) == -EINVAL);
    CHECK_OK(shmstore_delete(client, "later"));
}

static void test_unpack(void)
{
    /* A 2x3x4 tensor in C order contains the value 100*i + 10*j + k at [i,j,k]. */
    int64_t dims[3] = {2, 3, 4};
    int32_t c_order[24];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 4; k++)
                c_order[(i * 3 + j) * 4 + k] = 100 * i + 10 * j + k;
    CHECK_OK(shmstore_put(client, "t", c_order, SHMSTORE_INT32, 3, dims, SHMSTORE_ORDER_C));

    int32_t out[24];
    CHECK_OK(shmstore_unpack(client, "t", out, SHMSTORE_INT32, 3, dims, SHMSTORE_ORDER_C));
    CHECK(memcmp(out, c_order, sizeof out) == 0);

    CHECK_OK(shmstore_unpack(client, "t", out, SHMSTORE_INT32, 3, dims, SHMSTORE_ORDER_F));
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 4; k++)
                CHECK(out[i + 2 * (j + 3 * k)] == 100 * i + 10 * j + k);

    /* And back: store the F-order copy, unpack it into C order. */
    CHECK_OK(shmstore_put(client, "f", out, SHMSTORE_INT32, 3, dims, SHMSTORE_ORDER_F));
    int32_t back[24];
    CHECK_OK(shmstore_unpack(client, "f", back, SHMSTORE_INT32, 3, dims, SHMSTORE_ORDER_C));
    CHECK(memcmp(back, c_order, sizeof back) == 0);

    int64_t wrong_dims[3] = {2, 4, 3};
    CHECK(shmstore_unpack(client, "t", out, SHMSTORE_INT32, 3, wrong_dims, SHMSTORE_ORDER_C) ==
          SHMSTORE_EMISMATCH);
    CHECK(strstr(shmstore_error_detail(), "dims[1]") != NULL);
    CHECK(shmstore_unpack(client, "t", out, SHMSTORE_FLOAT32, 3, dims, SHMSTORE_ORDER_C) ==
          SHMSTORE_EMISMATCH);
    CHECK(shmstore_unpack(client, "t", out, SHMSTORE_INT32, 2, dims, SHMSTORE_ORDER_C) ==
          SHMSTORE_EMISMATCH);
    CHECK(shmstore_unpack(client, "none", out, SHMSTORE_INT32, 3, dims, SHMSTORE_ORDER_C) ==
          SHMSTORE_ENOKEY);

    CHECK_OK(shmstore_delete(client, "t"));
    CHECK_OK(shmstore_delete(client, "f"));
}

static void test_invalid_arguments(void)
{
    int32_t value = 1;
    int64_t dims[1] = {1};
    char long_key[SHMSTORE_KEY_MAX + 2];
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = '\0';

    CHECK(shmstore_put(client, "", &value, SHMSTORE_INT32, 1, dims, SHMSTORE_ORDER_C) ==
          SHMSTORE_EKEY);
    CHECK(shmstore_put(client, long_key, &value, SHMSTORE_INT32, 1, dims, SHMSTORE_ORDER_C) ==
          SHMSTORE_EKEY);
    CHECK(strstr(shmstore_error_detail(), "longer than 1024") != NULL);
    CHECK(shmstore_get(client, NULL, &(shmstore_view_t){0}) == SHMSTORE_EKEY);

    /* A key of exactly the maximum length is valid. */
    long_key[SHMSTORE_KEY_MAX] = '\0';
    CHECK_OK(shmstore_put(client, long_key, &value, SHMSTORE_INT32, 1, dims, SHMSTORE_ORDER_C));
    CHECK(shmstore_exists(client, long_key) == 1);
    CHECK_OK(shmstore_delete(client, long_key));

    CHECK(shmstore_put(client, "k", &value, (shmstore_dtype_t)99, 1, dims, SHMSTORE_ORDER_C) ==
          -EINVAL);
    int64_t negative[1] = {-1};
    CHECK(shmstore_put(client, "k", &value, SHMSTORE_INT32, 1, negative, SHMSTORE_ORDER_C) ==
          -EINVAL);
    CHECK(shmstore_put(client, "k", &value, SHMSTORE_INT32, SHMSTORE_NDIM_MAX + 1, dims,
                       SHMSTORE_ORDER_C) == -EINVAL);
    CHECK(shmstore_put(client, "k", &value, SHMSTORE_INT32, 1, dims, (shmstore_order_t)5) ==
          -EINVAL);
    CHECK(shmstore_get(client, "k", &(shmstore_view_t){0}) == SHMSTORE_ENOKEY);
    CHECK(strstr(shmstore_error_detail(), "\"k\" not found") != NULL);
    CHECK(shmstore_delete(client, "k") == SHMSTORE_ENOKEY);
    CHECK(shmstore_set_timeout(client, 0) == -EINVAL);
    CHECK_OK(shmstore_set_timeout(client, 5000));

    CHECK(shmstore_dtype_size(SHMSTORE_COMPLEX128) == 16);
    CHECK(shmstore_dtype_size(SHMSTORE_BFLOAT16) == 2);
    CHECK(shmstore_dtype_size(0) == 0);
    CHECK(strcmp(shmstore_strerror(SHMSTORE_ENOKEY), "key not found") == 0);
    CHECK(strlen(shmstore_strerror(-ENOMEM)) > 0);
    CHECK(strcmp(shmstore_strerror(-12345), "unknown error code") == 0);
}

static void test_out_of_memory(void)
{
    int64_t huge[1] = {ARENA_BYTES};
    CHECK(shmstore_put(client, "huge", NULL, SHMSTORE_UINT8, 1, huge, SHMSTORE_ORDER_C) ==
          -ENOMEM);
    CHECK(strstr(shmstore_error_detail(), "put of \"huge\" needs") != NULL);

    /* Fill the store with 256 KiB tensors until it is full; earlier keys
     * stay intact and the detail names the sizes. */
    static unsigned char chunk[256 * 1024];
    int64_t dims[1] = {sizeof chunk};
    char key[32];
    int stored = 0;
    for (;; stored++) {
        memset(chunk, stored, sizeof chunk);
        snprintf(key, sizeof key, "fill-%d", stored);
        int result = shmstore_put(client, key, chunk, SHMSTORE_UINT8, 1, dims, SHMSTORE_ORDER_C);
        if (result == -ENOMEM)
            break;
        CHECK_OK(result);
    }
    CHECK(stored >= 10);
    CHECK(strstr(shmstore_error_detail(), "free of") != NULL);

    for (int i = 0; i < stored; i++) {
        snprintf(key, sizeof key, "fill-%d", i);
        shmstore_view_t view;
        CHECK_OK(shmstore_get(client, key, &view));
        CHECK(((const unsigned char *)view.data)[sizeof chunk - 1] == (unsigned char)i);
        CHECK_OK(shmstore_release(&view));
        CHECK_OK(shmstore_delete(client, key));
    }
    CHECK(used_bytes() == 0);
}

static void test_disconnect_with_live_view(void)
{
    shmstore_client_t *second = NULL;
    CHECK_OK(shmstore_connect(name, &second));
    double values[2] = {1.5, -2.5};
    int64_t dims[1] = {2};
    CHECK_OK(shmstore_put(second, "kept", values, SHMSTORE_FLOAT64, 1, dims, SHMSTORE_ORDER_C));

    shmstore_view_t view;
    CHECK_OK(shmstore_get(second, "kept", &view));
    CHECK_OK(shmstore_disconnect(second));

    /* The view keeps the mapping and the pin after disconnect. */
    CHECK_OK(shmstore_delete(client, "kept"));
    CHECK(used_bytes() > 0);
    CHECK(memcmp(view.data, values, sizeof values) == 0);
    CHECK(view.dims[0] == 2);
    CHECK_OK(shmstore_release(&view));
    CHECK(used_bytes() == 0);
}

static void test_stats_and_events(void)
{
    shmstore_stats_t stats;
    int32_t pids[8];
    CHECK_OK(shmstore_stats(name, &stats, pids, 8));
    CHECK(stats.daemon_pid == (int32_t)getpid());
    CHECK(stats.client_count == 1);
    CHECK(pids[0] == (int32_t)getpid());
    CHECK(stats.max_clients == 256);
    CHECK(stats.max_keys == 65536);
    CHECK(stats.arena_bytes == ARENA_BYTES);
    CHECK(stats.uptime_s >= 0);

    shmstore_event_t events[16];
    int count = shmstore_daemon_poll(daemon_handle, 0, events, 16);
    CHECK(count >= 1);

    shmstore_client_t *visitor = NULL;
    CHECK_OK(shmstore_connect(name, &visitor));
    CHECK_OK(shmstore_disconnect(visitor));
    count = shmstore_daemon_poll(daemon_handle, 100, events, 16);
    CHECK(count == 2);
    CHECK(events[0].kind == SHMSTORE_EVENT_ATTACH);
    CHECK(events[0].pid == (int32_t)getpid());
    CHECK(events[1].kind == SHMSTORE_EVENT_DETACH);
    CHECK(events[1].pid == (int32_t)getpid());
    CHECK(events[1].views == 0);
    CHECK(events[1].bytes == 0);
    CHECK(shmstore_daemon_poll(daemon_handle, 0, events, 16) == 0);

    CHECK(shmstore_stats("no-such-store-for-test", &stats, NULL, 0) == SHMSTORE_ENOSTORE);
}

/* A store with two client slots: a third client is rejected until a
 * slot is freed, and an open put left at disconnect is reclaimed. */
static void test_client_slots(void)
{
    char small[80];
    snprintf(small, sizeof small, "slots-%d", (int)getpid());
    shmstore_daemon_config_t config = {.memory_bytes = 1u << 20, .max_clients = 2};
    shmstore_daemon_t *daemon = NULL;
    CHECK_OK(shmstore_daemon_create(small, &config, &daemon));

    shmstore_client_t *first = NULL;
    shmstore_client_t *second = NULL;
    shmstore_client_t *third = NULL;
    CHECK_OK(shmstore_connect(small, &first));
    CHECK_OK(shmstore_connect(small, &second));
    CHECK(shmstore_connect(small, &third) == SHMSTORE_EFULL);
    CHECK(strstr(shmstore_error_detail(), "all 2 client slots") != NULL);

    void *data = NULL;
    uint64_t token = 0;
    int64_t dims[1] = {1000};
    CHECK_OK(shmstore_put_begin(second, "never", SHMSTORE_UINT8, 1, dims, SHMSTORE_ORDER_C,
                                &data, &token));
    CHECK_OK(shmstore_disconnect(second));

    /* The slot is free only once the daemon has seen the client leave. */
    shmstore_event_t events[8];
    int count = shmstore_daemon_poll(daemon, 100, events, 8);
    CHECK(count == 3);
    CHECK(events[2].kind == SHMSTORE_EVENT_DETACH);
    CHECK(events[2].bytes >= 1000);

    shmstore_stats_t stats;
    CHECK_OK(shmstore_stats(small, &stats, NULL, 0));
    CHECK(stats.used_bytes == 0);
    CHECK(stats.client_count == 1);

    CHECK_OK(shmstore_connect(small, &third));
    CHECK(shmstore_exists(third, "never") == 0);
    CHECK_OK(shmstore_disconnect(third));
    CHECK_OK(shmstore_disconnect(first));
    CHECK_OK(shmstore_daemon_destroy(daemon));
}

static void test_second_daemon_and_missing_store(void)
{
    shmstore_daemon_config_t config = {.memory_bytes = 1u << 20};
    shmstore_daemon_t *other = NULL;
    CHECK(shmstore_daemon_create(name, &config, &other) == SHMSTORE_EBUSY);
    char pid_text[32];
    snprintf(pid_text, sizeof pid_text, "pid %d", (int)getpid());
    CHECK(strstr(shmstore_error_detail(), pid_text) != NULL);

    shmstore_client_t *none = NULL;
    char missing[80];
    snprintf(missing, sizeof missing, "missing-%d", (int)getpid());
    CHECK(shmstore_connect(missing, &none) == SHMSTORE_ENOSTORE);
    CHECK(none == NULL);
    CHECK(shmstore_connect("bad/name", &none) == -EINVAL);

    config.memory_bytes = UINT64_C(1) << 50;
    CHECK(shmstore_daemon_create(missing, &config, &other) == -ENOSPC);
    CHECK(strstr(shmstore_error_detail(), "/dev/shm has") != NULL);
}

static void test_lost_after_destroy(void)
{
    int8_t byte = 1;
    CHECK_OK(shmstore_put(client, "last", &byte, SHMSTORE_INT8, 0, NULL, SHMSTORE_ORDER_C));
    shmstore_view_t view;
    CHECK_OK(shmstore_get(client, "last", &view));

    CHECK_OK(shmstore_daemon_destroy(daemon_handle));
    daemon_handle = NULL;

    CHECK(shmstore_exists(client, "last") == SHMSTORE_ELOST);
    CHECK(shmstore_put(client, "x", &byte, SHMSTORE_INT8, 0, NULL, SHMSTORE_ORDER_C) ==
          SHMSTORE_ELOST);
    CHECK(shmstore_check_daemon(client) == SHMSTORE_ELOST);
    CHECK(shmstore_poll(client, "x", 1, 5) == SHMSTORE_ELOST);

    /* The view outlives the daemon. */
    CHECK(*(const int8_t *)view.data == 1);
    CHECK_OK(shmstore_release(&view));
    CHECK_OK(shmstore_disconnect(client));
}

int main(void)
{
    snprintf(name, sizeof name, "test-store-%d", (int)getpid());
    shmstore_daemon_config_t config = {.memory_bytes = ARENA_BYTES};
    CHECK_OK(shmstore_daemon_create(name, &config, &daemon_handle));
    CHECK_OK(shmstore_connect(name, &client));
    CHECK_OK(shmstore_check_daemon(client));

    test_roundtrip_shapes();
    test_views_survive_overwrite_and_delete();
    test_two_phase_put();
    test_rename_copy_list();
    test_poll();
    test_unpack();
    test_invalid_arguments();
    test_out_of_memory();
    test_disconnect_with_live_view();
    test_stats_and_events();
    test_client_slots();
    test_second_daemon_and_missing_store();
    test_lost_after_destroy();

    printf("test_store: pass\n");
    return 0;
}
