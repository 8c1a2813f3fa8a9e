/*
 * tensor.h - helpers shared by the tensor calls (put, get, key operations).
 */
#ifndef SHMSTORE_TENSOR_H
#define SHMSTORE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "client.h"
#include "shmstore.h"

/* Checks a key: 1 to SHMSTORE_KEY_MAX bytes. Stores its length. Returns 0
 * or SHMSTORE_EKEY with a detail. */
int shm_validate_key(const char *key, size_t *length);

/* Pins descriptor number for client (one reader bit per client, counted
 * per view). Returns 0, or -EAGAIN when the descriptor is not LIVE. */
int shm_pin_view(shmstore_client_t *client, uint32_t number);

/* Drops one pin taken by shm_pin_view, freeing the version when it was the
 * last pin of a retired version. */
void shm_unpin_view(shmstore_client_t *client, uint32_t number);

/* Looks key up and pins its current version. Returns the descriptor number
 * or SHMSTORE_ENOKEY. */
int64_t shm_find_pinned(shmstore_client_t *client, const char *key, size_t length);

/* Publishes the UNPUBLISHED block at offset (owned by client) under its
 * key. spare_keys lets the key count pass max_keys by that many for the
 * moment (rename inserts before it removes). On failure the block is
 * freed. Store lock held. */
int shm_commit_locked(shmstore_client_t *client, uint64_t offset, uint64_t hash,
                      uint64_t spare_keys);

/* Copies the elements of a tensor from src in order src_order into dst in
 * order dst_order, so that dst[i, j, ...] equals src[i, j, ...]. */
void shm_reorder_copy(void *dst, shmstore_order_t dst_order, const void *src,
                      shmstore_order_t src_order, int ndim, const int64_t *dims,
                      size_t element_size);

#endif /* SHMSTORE_TENSOR_H */
