/*
 * tensor_keys.c - key operations: delete, exists, poll, rename, copy,
 * list, and unpack into a caller's buffer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fnmatch.h>
#include <locale.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "descriptor.h"
#include "errors.h"
#include "index.h"
#include "infer_model.h"
#include "lock.h"
#include "tensor.h"

int shmstore_delete(shmstore_client_t *client, const char *key)
{
    if (client == NULL)
        return shm_fail(-EINVAL, "client is NULL");
    size_t length = 0;
    int result = shm_validate_key(key, &length);
    if (result != 0)
        return result;
    uint64_t hash = shm_hash_key(key, length);

    result = shm_client_lock(client);
    if (result != 0)
        return result;

    shm_header_t *header = client->store.header;
    uint32_t old = 0;
    result = shm_index_remove(&client->store, hash, key, length, &old);
    if (result == 0) {
        shm_descriptor_retire(&client->store, old);
        /* Lock held; stats readers load key_count relaxed. */
        shm_store_relaxed(&header->key_count, shm_load_relaxed(&header->key_count) - 1);
    }
    shm_client_unlock(client);

    if (result != 0)
        return shm_fail(result, "key \"%s\" not found in store \"%s\"", key, client->name);
    return 0;
}

int shmstore_exists(shmstore_client_t *client, const char *key)
{
    if (client == NULL)
        return shm_fail(-EINVAL, "client is NULL");
    size_t length = 0;
    int result = shm_validate_key(key, &length);
    if (result != 0)
        return result;
    result = shm_client_check_alive(client);
    if (result != 0)
        return result;

    int64_t number = shm_find_pinned(client, key, length);
    if (number < 0)
        return 0;
    shm_unpin_view(client, (uint32_t)number);
    return 1;
}

int shmstore_poll(shmstore_client_t *client, const char *key, int interval_ms, int tries)
{
    if (client == NULL)
        return shm_fail(-EINVAL, "client is NULL");
    if (interval_ms < 0 || tries < 1)
        return shm_fail(-EINVAL, "poll of \"%s\" with interval %d ms and %d tries is invalid: "
                        "give interval >= 0 and tries >= 1", key ? key : "(null)", interval_ms,
                        tries);

    for (int attempt = 0; attempt < tries; attempt++) {
        int result = shmstore_exists(client, key);
        if (result != 0)
            return result;
        if (attempt + 1 == tries)
            break;

        struct timespec pause = {.tv_sec = interval_ms / 1000,
                                 .tv_nsec = (long)(interval_ms % 1000) * 1000000L};
        if (nanosleep(&pause, NULL) != 0 && errno == EINTR)
            return shm_fail(-EINTR, "poll of \"%s\" interrupted by a signal", key);
    }
    return 0;
}

/* Stores a copy of a pinned view under dst_key. When remove_source is set,
 * the source version leaves its key in the same locked step, if it is
 * still the key's current version. */
static int store_copy(shmstore_client_t *client, const shmstore_view_t *view,
                      const char *src_key, size_t src_length, const char *dst_key,
                      int remove_source)
{
    void *target = NULL;
    uint64_t token = 0;
    int result = shmstore_put_begin(client, dst_key, view->dtype, view->ndim, view->dims,
                                    view->order, &target, &token);
    if (result != 0)
        return result;
    if (view->nbytes > 0)
        memcpy(target, view->data, view->nbytes);

    uint64_t dst_hash = shm_hash_key(dst_key, strlen(dst_key));
    result = shm_client_lock(client);
    if (result != 0) {
        shmstore_put_abort(client, token);
        return result;
    }

    /* The rename inserts the new key before it removes the old one, so
     * the key count may pass max_keys by one for the moment. */
    result = shm_commit_locked(client, token, dst_hash, remove_source ? 1 : 0);
    if (result == 0 && remove_source) {
        shm_store_t *store = &client->store;
        uint64_t src_hash = shm_hash_key(src_key, src_length);
        int64_t current = shm_index_find_locked(store, src_hash, src_key, src_length);
        uint32_t old = 0;
        if (current == (int64_t)view->descriptor_ &&
            shm_index_remove(store, src_hash, src_key, src_length, &old) == 0) {
            shm_descriptor_retire(store, old);
            /* Lock held; stats readers load key_count relaxed. */
            shm_store_relaxed(&store->header->key_count,
                              shm_load_relaxed(&store->header->key_count) - 1);
        }
    }
    shm_client_unlock(client);
    return result;
}

int shmstore_rename(shmstore_client_t *client, const char *old_key, const char *new_key)
{
    if (client == NULL)
        return shm_fail(-EINVAL, "client is NULL");
    size_t old_length = 0;
    size_t new_length = 0;
    int result = shm_validate_key(old_key, &old_length);
    if (result == 0)
        result = shm_validate_key(new_key, &new_length);
    if (result != 0)
        return result;

    shmstore_view_t view;
    result = shmstore_get(client, old_key, &view);
    if (result != 0)
        return result;

    /* Renaming a key onto itself changes nothing. */
    if (old_length != new_length || memcmp(old_key, new_key, old_length) != 0)
        result = store_copy(client, &view, old_key, old_length, new_key, 1);
    shmstore_release(&view);
    return result;
}

int shmstore_copy(shmstore_client_t *client, const char *src_key, const char *dst_key)
{
    if (client == NULL)
        return shm_fail(-EINVAL, "client is NULL");
    size_t src_length = 0;
    size_t dst_length = 0;
    int result = shm_validate_key(src_key, &src_length);
    if (result == 0)
        result = shm_validate_key(dst_key, &dst_length);
    if (result != 0)
        return result;

    shmstore_view_t view;
    result = shmstore_get(client, src_key, &view);
    if (result != 0)
        return result;
    result = store_copy(client, &view, src_key, src_length, dst_key, 0);
    shmstore_release(&view);
    return result;
}

/* Process-private: a UTF-8 character-type locale for matching keys, or
 * (locale_t)0 when the C library has none. */
static locale_t utf8_locale;
static pthread_once_t utf8_locale_once = PTHREAD_ONCE_INIT;

static void create_utf8_locale(void)
{
    /* NOTE: without a C.UTF-8 locale (glibc before 2.35 without the
     * locales package) patterns match under the caller's locale, where
     * '?' may match one byte of a multi-byte character. */
    utf8_locale = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
}

/* Matches key against pattern with fnmatch(3) in a UTF-8 locale, so that
 * '?' and bracket expressions match whole characters of the UTF-8 keys
 * whatever locale the calling thread uses. Returns 1 on a match. */
static int key_matches(const char *pattern, const char *key)
{
    pthread_once(&utf8_locale_once, create_utf8_locale);
    if (utf8_locale == (locale_t)0)
        return fnmatch(pattern, key, 0) == 0;

    locale_t previous = uselocale(utf8_locale);
    int result = fnmatch(pattern, key, 0);
    uselocale(previous);
    return result == 0;
}

int shmstore_list_keys(shmstore_client_t *client, const char *pattern,
                       shmstore_key_callback callback, void *context)
{
    if (client == NULL || pattern == NULL || callback == NULL)
        return shm_fail(-EINVAL, "client, pattern or callback is NULL");
    int result = shm_client_check_alive(client);
    if (result != 0)
        return result;

    /* NOTE: the walk reads one index table. A writer that rebuilds the
     * index twice during the walk clears that table, so the walk may then
     * miss keys that did not change. Two rebuilds are at least a quarter
     * of the table's capacity of inserts apart, so this needs heavy churn. */
    shm_store_t *store = &client->store;
    uint64_t epoch;
    shm_atomic_u64 *table = shm_index_active(store, &epoch);
    char key[SHMSTORE_KEY_MAX + 1];

    /* Models, scripts and statistics live under an internal prefix; they are
     * listed only when the pattern itself starts with that prefix. */
    size_t internal_length = strlen(INFER_INTERNAL_PREFIX);
    int hide_internal = strncmp(pattern, INFER_INTERNAL_PREFIX, internal_length) != 0;

    for (uint64_t at = 0; at <= store->index_mask; at++) {
        /* Acquire: pairs with the writer's release store of the bucket. */
        uint64_t word = shm_load_acquire(&table[at]);
        if (word == SHM_INDEX_EMPTY || word == SHM_INDEX_TOMBSTONE)
            continue;
        uint32_t number = (uint32_t)(word & 0xffffffffu) - 1;
        if (number >= store->descriptor_count || shm_pin_view(client, number) != 0)
            continue;

        const shm_block_t *block = shm_descriptor_block(store, number);
        size_t length = block->u.tensor.key_length;
        memcpy(key, shm_block_key(block), length);
        key[length] = '\0';
        shm_unpin_view(client, number);

        if (hide_internal && strncmp(key, INFER_INTERNAL_PREFIX, internal_length) == 0)
            continue;
        if (!key_matches(pattern, key))
            continue;
        result = callback(key, length, context);
        if (result != 0)
            return result;
    }
    return 0;
}

int shmstore_unpack(shmstore_client_t *client, const char *key, void *out,
                    shmstore_dtype_t dtype, int ndim, const int64_t *dims,
                    shmstore_order_t order)
{
    if (client == NULL)
        return shm_fail(-EINVAL, "client is NULL");
    if (order != SHMSTORE_ORDER_C && order != SHMSTORE_ORDER_F)
        return shm_fail(-EINVAL, "order %d is invalid: use SHMSTORE_ORDER_C or _F", (int)order);

    shmstore_view_t view;
    int result = shmstore_get(client, key, &view);
    if (result != 0)
        return result;

    if (view.dtype != dtype || view.ndim != ndim) {
        result = shm_fail(SHMSTORE_EMISMATCH, "unpack of \"%s\": stored dtype %d rank %d, "
                          "requested dtype %d rank %d", key, (int)view.dtype, view.ndim,
                          (int)dtype, ndim);
        goto done;
    }
    for (int i = 0; i < ndim; i++) {
        if (dims == NULL || view.dims[i] != dims[i]) {
            result = shm_fail(SHMSTORE_EMISMATCH, "unpack of \"%s\": stored dims[%d] is %lld, "
                              "requested %lld", key, i, (long long)view.dims[i],
                              dims ? (long long)dims[i] : -1LL);
            goto done;
        }
    }
    if (view.nbytes > 0 && out == NULL) {
        result = shm_fail(-EINVAL, "output buffer is NULL for %zu bytes", view.nbytes);
        goto done;
    }

    shm_reorder_copy(out, order, view.data, view.order, ndim, view.dims,
                     shmstore_dtype_size((int)dtype));

done:
    shmstore_release(&view);
    return result;
}
