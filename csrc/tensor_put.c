/*
 * tensor_put.c - the two-phase put: reserve a block, copy, publish.
 */
#include <errno.h>
#include <string.h>

#include "alloc.h"
#include "descriptor.h"
#include "errors.h"
#include "index.h"
#include "lock.h"
#include "tensor.h"

static uint64_t round_up(uint64_t value, uint64_t alignment)
{
    return (value + alignment - 1) & ~(alignment - 1);
}

/* Checks dtype, order, rank and dims and computes the tensor's bytes. */
static int validate_tensor(shmstore_dtype_t dtype, int ndim, const int64_t *dims,
                           shmstore_order_t order, uint64_t *nbytes)
{
    size_t element = shmstore_dtype_size((int)dtype);
    if (element == 0)
        return shm_fail(-EINVAL, "dtype %d is not a shmstore dtype", (int)dtype);
    if (order != SHMSTORE_ORDER_C && order != SHMSTORE_ORDER_F)
        return shm_fail(-EINVAL, "order %d is invalid: use SHMSTORE_ORDER_C or _F", (int)order);
    if (ndim < 0 || ndim > SHMSTORE_NDIM_MAX)
        return shm_fail(-EINVAL, "rank %d is invalid: use 0 to %d", ndim, SHMSTORE_NDIM_MAX);
    if (ndim > 0 && dims == NULL)
        return shm_fail(-EINVAL, "dims is NULL for a tensor of rank %d", ndim);

    /* The product of the non-zero extents must fit in int64_t even when
     * another extent is zero, because readers compute strides from it
     * (numpy applies the same rule). */
    uint64_t total = element;
    int zero_sized = 0;
    for (int i = 0; i < ndim; i++) {
        if (dims[i] < 0)
            return shm_fail(-EINVAL, "dims[%d] is %lld; extents must not be negative", i,
                            (long long)dims[i]);
        uint64_t extent = (uint64_t)dims[i];
        if (extent == 0) {
            zero_sized = 1;
            continue;
        }
        if (total > (uint64_t)INT64_MAX / extent)
            return shm_fail(-EOVERFLOW, "tensor of rank %d: the product of its extents and "
                            "element size overflows 63 bits at dims[%d] = %lld", ndim, i,
                            (long long)dims[i]);
        total *= extent;
    }
    *nbytes = zero_sized ? 0 : total;
    return 0;
}

/* Returns the offset of the tensor bytes in a block: after the dims,
 * 64-byte aligned. */
static uint64_t data_offset_for(size_t key_length, int ndim)
{
    return round_up(shm_block_dims_offset(key_length) + (uint64_t)ndim * 8, SHM_ALIGN);
}

int shmstore_put_begin(shmstore_client_t *client, const char *key, shmstore_dtype_t dtype,
                       int ndim, const int64_t *dims, shmstore_order_t order, void **data,
                       uint64_t *token)
{
    if (client == NULL || data == NULL || token == NULL)
        return shm_fail(-EINVAL, "client, data or token is NULL");

    size_t key_length = 0;
    int result = shm_validate_key(key, &key_length);
    if (result != 0)
        return result;
    uint64_t nbytes = 0;
    result = validate_tensor(dtype, ndim, dims, order, &nbytes);
    if (result != 0)
        return result;

    uint64_t data_offset = data_offset_for(key_length, ndim);
    uint64_t block_bytes = data_offset + round_up(nbytes, SHM_ALIGN);
    if (nbytes > client->store.arena_bytes || block_bytes > client->store.arena_bytes) {
        return shm_fail(-ENOMEM, "put of \"%s\" needs %llu bytes, more than the whole store "
                        "(%llu bytes); start the daemon with more --memory", key,
                        (unsigned long long)block_bytes,
                        (unsigned long long)client->store.arena_bytes);
    }

    result = shm_client_lock(client);
    if (result != 0)
        return result;
    uint64_t offset = 0;
    result = shm_alloc(&client->store, block_bytes, (int32_t)client->slot, &offset);
    /* Relaxed: lock held, for the error message only. */
    uint64_t used = shm_load_relaxed(&client->store.header->used_bytes);
    uint64_t largest = result == 0 ? 0 : shm_alloc_largest_free(&client->store);
    shm_client_unlock(client);
    if (result != 0) {
        return shm_fail(-ENOMEM, "put of \"%s\" needs %llu bytes, store \"%s\" has %llu free "
                        "of %llu (largest free block %llu); delete keys or start the daemon "
                        "with more --memory", key, (unsigned long long)block_bytes,
                        client->name, (unsigned long long)(client->store.arena_bytes - used),
                        (unsigned long long)client->store.arena_bytes,
                        (unsigned long long)largest);
    }

    /* The block is ours (UNPUBLISHED, owner = our slot), so the tensor
     * metadata is written outside the lock. */
    shm_block_t *block = shm_block_at(&client->store, offset);
    unsigned char *base = (unsigned char *)block;
    memcpy(base + sizeof(shm_block_t), key, key_length + 1);
    if (ndim > 0)
        memcpy(base + shm_block_dims_offset(key_length), dims, (size_t)ndim * sizeof(int64_t));
    block->u.tensor.nbytes = nbytes;
    block->u.tensor.data_offset = (uint32_t)data_offset;
    block->u.tensor.key_length = (uint16_t)key_length;
    block->u.tensor.dtype = (uint8_t)dtype;
    block->u.tensor.order = (uint8_t)order;
    block->u.tensor.ndim = (uint8_t)ndim;

    shm_client_prefault(client, offset + data_offset, nbytes);

    *data = base + data_offset;
    *token = offset;
    return 0;
}

/* Returns our UNPUBLISHED block for a token, or NULL. Lock held. */
static shm_block_t *reserved_block(shmstore_client_t *client, uint64_t token)
{
    shm_block_t *block = shm_alloc_check(&client->store, token, SHM_BLOCK_UNPUBLISHED);
    if (block == NULL || block->owner != (int32_t)client->slot)
        return NULL;
    return block;
}

int shm_commit_locked(shmstore_client_t *client, uint64_t offset, uint64_t hash,
                      uint64_t spare_keys)
{
    shm_store_t *store = &client->store;
    shm_header_t *header = store->header;
    shm_block_t *block = shm_block_at(store, offset);
    const char *key = shm_block_key(block);
    size_t key_length = block->u.tensor.key_length;

    /* Lock held; stats readers load key_count relaxed. */
    uint64_t keys = shm_load_relaxed(&header->key_count);
    int64_t existing = shm_index_find_locked(store, hash, key, key_length);
    if (existing < 0 && keys >= header->max_keys + spare_keys) {
        shm_alloc_free(store, offset);
        return shm_fail(SHMSTORE_EFULL, "store \"%s\" holds its maximum of %llu keys; delete "
                        "keys or restart the daemon with more --max-keys", client->name,
                        (unsigned long long)header->max_keys);
    }

    uint32_t number = 0;
    int result = shm_descriptor_reserve(store, &number);
    if (result != 0) {
        shm_alloc_free(store, offset);
        return result;
    }

    shm_descriptor_publish(store, number, offset);

    uint32_t old = 0;
    if (shm_index_upsert(store, hash, key, key_length, number, &old) == 1)
        shm_descriptor_retire(store, old);
    else
        shm_store_relaxed(&header->key_count, keys + 1); /* relaxed: lock held */
    return 0;
}

int shmstore_put_commit(shmstore_client_t *client, uint64_t token)
{
    if (client == NULL)
        return shm_fail(-EINVAL, "client is NULL");

    int result = shm_client_lock(client);
    if (result != 0)
        return result;

    shm_block_t *block = reserved_block(client, token);
    if (block == NULL) {
        shm_client_unlock(client);
        return shm_fail(-EINVAL, "token %llu is not an open put of this client",
                        (unsigned long long)token);
    }

    /* The key was written by this thread in put_begin; hashing it here
     * under the lock costs less than a second pass over it later. */
    uint64_t hash = shm_hash_key(shm_block_key(block), block->u.tensor.key_length);
    result = shm_commit_locked(client, token, hash, 0);
    shm_client_unlock(client);
    return result;
}

int shmstore_put_abort(shmstore_client_t *client, uint64_t token)
{
    if (client == NULL)
        return shm_fail(-EINVAL, "client is NULL");

    /* The store lock is needed even after the daemon died, to return the
     * block; shm_client_lock fails then and the block dies with the store. */
    int result = shm_client_lock(client);
    if (result != 0)
        return result;

    if (reserved_block(client, token) == NULL) {
        shm_client_unlock(client);
        return shm_fail(-EINVAL, "token %llu is not an open put of this client",
                        (unsigned long long)token);
    }
    shm_alloc_free(&client->store, token);
    shm_client_unlock(client);
    return 0;
}

int shmstore_put(shmstore_client_t *client, const char *key, const void *data,
                 shmstore_dtype_t dtype, int ndim, const int64_t *dims, shmstore_order_t order)
{
    void *target = NULL;
    uint64_t token = 0;

    int result = shmstore_put_begin(client, key, dtype, ndim, dims, order, &target, &token);
    if (result != 0)
        return result;

    uint64_t nbytes = shm_block_at(&client->store, token)->u.tensor.nbytes;
    if (nbytes > 0) {
        if (data == NULL) {
            shmstore_put_abort(client, token);
            return shm_fail(-EINVAL, "data is NULL for a tensor of %llu bytes",
                            (unsigned long long)nbytes);
        }
        memcpy(target, data, (size_t)nbytes);
    }

    return shmstore_put_commit(client, token);
}
