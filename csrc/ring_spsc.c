/*
 * ring_spsc.c - single-producer, single-consumer ring of variable-length
 * records; the layout is described in ring_spsc.h.
 *
 * The producer owns tail and head_cache, the consumer owns head and
 * tail_cache. Record bytes are plain memory. The producer writes them
 * before its release store of tail, and the consumer reads them after its
 * acquire load of tail. The consumer finishes reading before its release
 * store of head, and the producer overwrites them only after its acquire
 * load of head.
 */
#include "ring_spsc.h"

#include <errno.h>
#include <string.h>

/* Length value of a padding header: the rest of the data area up to its
 * end contains no record, and the next record starts at offset 0. */
#define PADDING_LENGTH UINT32_MAX

#define RECORD_HEADER_BYTES 8u

typedef struct record_header {
    uint32_t length;
    uint32_t reserved;
} record_header_t;

_Static_assert(sizeof(record_header_t) == RECORD_HEADER_BYTES, "record header is 8 bytes");

/* Returns the bytes a record of a len-byte payload takes: header plus the
 * payload rounded up to a multiple of 8. */
static uint64_t record_bytes(uint32_t len)
{
    return RECORD_HEADER_BYTES + (((uint64_t)len + 7u) & ~(uint64_t)7u);
}

static uint32_t max_message(uint32_t capacity)
{
    return capacity / 2u - RECORD_HEADER_BYTES;
}

size_t shm_spsc_footprint(uint32_t capacity)
{
    if (capacity < SHM_SPSC_MIN_CAPACITY || (capacity & (capacity - 1u)) != 0)
        return 0;
    return sizeof(shm_spsc_t) + (size_t)capacity;
}

int shm_spsc_init(void *mem, uint32_t capacity)
{
    if (mem == NULL || ((uintptr_t)mem % SHM_CACHE_LINE) != 0)
        return -EINVAL;
    if (shm_spsc_footprint(capacity) == 0)
        return -EINVAL;

    shm_spsc_t *ring = mem;
    ring->magic = SHM_SPSC_MAGIC;
    ring->capacity = capacity;
    ring->head_cache = 0;
    ring->tail_cache = 0;

    /* Relaxed: no process uses the ring before the creator publishes the memory
     * that contains it, and that publication orders these stores. */
    shm_store_relaxed(&ring->head, 0);
    shm_store_relaxed(&ring->tail, 0);
    return 0;
}

uint32_t shm_spsc_max_message(const shm_spsc_t *ring)
{
    return max_message(ring->capacity);
}

int shm_spsc_push(shm_spsc_t *ring, const void *msg, uint32_t len)
{
    const uint64_t capacity = ring->capacity;
    if (len > max_message(ring->capacity))
        return -EMSGSIZE;

    /* Relaxed: only this producer writes tail. */
    uint64_t tail = shm_load_relaxed(&ring->tail);

    uint64_t record = record_bytes(len);
    uint64_t offset = tail & (capacity - 1u);
    uint64_t to_end = capacity - offset;
    /* A record that does not fit before the end also consumes the rest of
     * the data area as padding. */
    uint64_t needed = record <= to_end ? record : to_end + record;

    if (tail + needed - ring->head_cache > capacity) {
        /* Acquire: pairs with the consumer's release store of head, so the
         * consumer has finished reading the bytes we are about to reuse. */
        ring->head_cache = shm_load_acquire(&ring->head);
        if (tail + needed - ring->head_cache > capacity)
            return -EAGAIN;
    }

    if (record > to_end) {
        record_header_t padding = {PADDING_LENGTH, 0};
        memcpy(ring->data + offset, &padding, sizeof padding);
        tail += to_end;
        offset = 0;
    }

    record_header_t header = {len, 0};
    memcpy(ring->data + offset, &header, sizeof header);
    if (len > 0)
        memcpy(ring->data + offset + RECORD_HEADER_BYTES, msg, len);

    /* Release: pairs with the consumer's acquire load of tail, publishing
     * the padding, header and payload written above. */
    shm_store_release(&ring->tail, tail + record);
    return 0;
}

int shm_spsc_pop(shm_spsc_t *ring, void *buf, uint32_t cap, uint32_t *len)
{
    const uint64_t capacity = ring->capacity;

    /* Relaxed: only this consumer writes head. */
    uint64_t head = shm_load_relaxed(&ring->head);

    if (head == ring->tail_cache) {
        /* Acquire: pairs with the producer's release store of tail, so the
         * records before it are fully written. */
        ring->tail_cache = shm_load_acquire(&ring->tail);
        if (head == ring->tail_cache)
            return -EAGAIN;
    }
    uint64_t tail = ring->tail_cache;

    /* The indices come from memory that another process writes, so check
     * them before touching the data area: a bad value means a bug or a
     * corrupted segment, and must not make us read out of bounds. */
    if (tail - head > capacity)
        return -EBADMSG;

    uint64_t offset = head & (capacity - 1u);
    record_header_t header;
    memcpy(&header, ring->data + offset, sizeof header);

    if (header.length == PADDING_LENGTH) {
        head += capacity - offset;
        offset = 0;
        if (head >= tail)
            return -EBADMSG;
        memcpy(&header, ring->data, sizeof header);
    }

    if (header.length > max_message(ring->capacity))
        return -EBADMSG;
    uint64_t record = record_bytes(header.length);
    if (record > tail - head || record > capacity - offset)
        return -EBADMSG;

    *len = header.length;
    if (header.length > cap)
        return -EMSGSIZE;
    if (header.length > 0)
        memcpy(buf, ring->data + offset + RECORD_HEADER_BYTES, header.length);

    /* Release: pairs with the producer's acquire load of head, so the
     * producer reuses these bytes only after the copy above. */
    shm_store_release(&ring->head, head + record);
    return 0;
}

int shm_spsc_empty(const shm_spsc_t *ring)
{
    /* Acquire: keeps the tail load below after this one. tail only grows
     * and never passes a later head, so the result never shows more
     * consumed than produced. */
    uint64_t head = shm_load_acquire(&ring->head);
    /* Acquire: pairs with the producer's release store of tail. */
    uint64_t tail = shm_load_acquire(&ring->tail);
    return head == tail;
}
