/*
 * tensor_get.c - lock-free lookup, pins, get and release.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "descriptor.h"
#include "errors.h"
#include "index.h"
#include "lock.h"
#include "tensor.h"

int shm_validate_key(const char *key, size_t *length)
{
    if (key == NULL)
        return shm_fail(SHMSTORE_EKEY, "key is NULL");

    size_t bytes = strnlen(key, SHMSTORE_KEY_MAX + 1);
    if (bytes == 0)
        return shm_fail(SHMSTORE_EKEY, "key is empty; give 1 to %d bytes", SHMSTORE_KEY_MAX);
    if (bytes > SHMSTORE_KEY_MAX) {
        return shm_fail(SHMSTORE_EKEY, "key \"%.40s...\" is longer than %d bytes", key,
                        SHMSTORE_KEY_MAX);
    }
    *length = bytes;
    return 0;
}

/* Frees a retired version whose last pin just went. */
static void free_unpinned(shmstore_client_t *client, uint32_t number)
{
    /* NOTE: when the store lock cannot be taken (daemon gone, timeout), the
     * retired version stays allocated; the store is unusable then anyway. */
    if (shm_client_lock(client) != 0)
        return;
    shm_descriptor_try_free(&client->store, number);
    shm_client_unlock(client);
}

int shm_pin_view(shmstore_client_t *client, uint32_t number)
{
    shm_store_t *store = &client->store;
    int free_check = 0;
    int result = 0;

    pthread_mutex_lock(&client->pin_mutex);
    if (client->pin_counts[number] == 0) {
        result = shm_descriptor_pin(store, number, client->slot, &free_check);
    } else {
        /* Our bit already keeps the version allocated; check that it is
         * still the key's current version. seq_cst like the pin's load. */
        uint64_t word = shm_load_seq(&shm_descriptor_at(store, number)->state);
        if (SHM_DESC_STATE(word) != SHM_DESC_LIVE)
            result = -EAGAIN;
    }
    if (result == 0)
        client->pin_counts[number]++;
    pthread_mutex_unlock(&client->pin_mutex);

    if (free_check)
        free_unpinned(client, number);
    return result;
}

void shm_unpin_view(shmstore_client_t *client, uint32_t number)
{
    int free_check = 0;

    pthread_mutex_lock(&client->pin_mutex);
    if (--client->pin_counts[number] == 0)
        free_check = shm_descriptor_unpin(&client->store, number, client->slot);
    pthread_mutex_unlock(&client->pin_mutex);

    if (free_check)
        free_unpinned(client, number);
}

typedef struct key_match {
    shmstore_client_t *client;
    const char *key;
    size_t length;
} key_match_t;

/* Pins a candidate descriptor and keeps it if its block holds the key. */
static int match_pinned(void *context, uint32_t number)
{
    key_match_t *match = context;

    if (shm_pin_view(match->client, number) != 0)
        return -EAGAIN;

    const shm_block_t *block = shm_descriptor_block(&match->client->store, number);
    if (block->u.tensor.key_length == match->length &&
        memcmp(shm_block_key(block), match->key, match->length) == 0)
        return 1;

    shm_unpin_view(match->client, number);
    return 0;
}

int64_t shm_find_pinned(shmstore_client_t *client, const char *key, size_t length)
{
    key_match_t match = {.client = client, .key = key, .length = length};
    uint64_t hash = shm_hash_key(key, length);
    return shm_index_lookup(&client->store, hash, match_pinned, &match);
}

int shmstore_get(shmstore_client_t *client, const char *key, shmstore_view_t *view)
{
    if (client == NULL || view == NULL)
        return shm_fail(-EINVAL, "client or view is NULL");
    memset(view, 0, sizeof *view);

    size_t length = 0;
    int result = shm_validate_key(key, &length);
    if (result != 0)
        return result;
    result = shm_client_check_alive(client);
    if (result != 0)
        return result;

    int64_t number = shm_find_pinned(client, key, length);
    if (number < 0)
        return shm_fail((int)number, "key \"%s\" not found in store \"%s\"", key, client->name);

    const shm_block_t *block = shm_descriptor_block(&client->store, (uint32_t)number);
    const unsigned char *base = (const unsigned char *)block;
    uint64_t dims_offset = shm_block_dims_offset(block->u.tensor.key_length);

    shm_client_ref(client);
    view->data = base + block->u.tensor.data_offset;
    view->nbytes = (size_t)block->u.tensor.nbytes;
    view->dtype = (shmstore_dtype_t)block->u.tensor.dtype;
    view->order = (shmstore_order_t)block->u.tensor.order;
    view->ndim = block->u.tensor.ndim;
    view->dims = (const int64_t *)(base + dims_offset);
    view->client_ = client;
    view->descriptor_ = (uint32_t)number;
    return 0;
}

int shmstore_release(shmstore_view_t *view)
{
    if (view == NULL)
        return shm_fail(-EINVAL, "view is NULL");
    shmstore_client_t *client = view->client_;
    if (client == NULL)
        return 0;

    view->client_ = NULL;
    view->data = NULL;
    view->dims = NULL;
    /* The reader bit of a forked child's inherited view is the parent's. */
    if (!shm_client_forked(client))
        shm_unpin_view(client, view->descriptor_);
    shm_client_unref(client);
    return 0;
}
