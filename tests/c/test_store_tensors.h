/*
 * test_store_tensors.h - self-checking tensors for the store stress tests.
 *
 * A tensor is uint64 [key, version, values..., checksum], so a reader can
 * verify any version it gets without knowing which one the writer put.
 * Include it after defining CHECK(condition) and MAX_ELEMENTS.
 */
#ifndef SHMSTORE_TEST_STORE_TENSORS_H
#define SHMSTORE_TEST_STORE_TENSORS_H

#include <stdint.h>

#include "shmstore.h"

/* Advances a xorshift64 generator; state must not be 0. */
static inline uint64_t next_random(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

static inline uint64_t element_value(uint64_t key, uint64_t version, uint64_t i)
{
    uint64_t x = key * 0x9e3779b97f4a7c15ULL ^ version * 0xbf58476d1ce4e5b9ULL ^ i;
    x ^= x >> 31;
    return x * 0x94d049bb133111ebULL;
}

/* Fills count elements (count >= 3) for key and version; returns the checksum. */
static inline uint64_t fill_tensor(uint64_t *data, uint64_t count, uint64_t key,
                                   uint64_t version)
{
    data[0] = key;
    data[1] = version;
    uint64_t sum = key + version;
    for (uint64_t i = 2; i + 1 < count; i++) {
        data[i] = element_value(key, version, i);
        sum += data[i];
    }
    data[count - 1] = sum;
    return sum;
}

/* Checks a tensor of key read from the store; returns its checksum. */
static inline uint64_t verify_tensor(const shmstore_view_t *view, uint64_t key)
{
    CHECK(view->dtype == SHMSTORE_UINT64);
    CHECK(view->ndim == 1);
    uint64_t count = (uint64_t)view->dims[0];
    CHECK(count >= 3);
    CHECK(count <= MAX_ELEMENTS);
    CHECK(view->nbytes == count * 8);

    const uint64_t *data = view->data;
    CHECK(data[0] == key);
    uint64_t sum = data[0] + data[1];
    for (uint64_t i = 2; i + 1 < count; i++) {
        CHECK(data[i] == element_value(key, data[1], i));
        sum += data[i];
    }
    CHECK(data[count - 1] == sum);
    return sum;
}

#endif /* SHMSTORE_TEST_STORE_TENSORS_H */
