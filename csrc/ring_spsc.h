/*
 * ring_spsc.h - single-producer, single-consumer ring of variable-length
 * messages in caller-provided (usually shared) memory.
 *
 * Layout: a header of four cache lines, then `capacity` data bytes. The
 * header lines contain the constants, the consumer's head, the producer's
 * tail, and each side's private copy of the other side's index. head and tail count bytes since init and
 * never wrap; the data offset is the count modulo capacity.
 *
 * Each message is one record: an 8-byte header (uint32 length, uint32
 * reserved) then the payload, padded to a multiple of 8 bytes. A record
 * never wraps: when it does not fit before the end of the data area, the
 * producer writes a padding header there and the record starts at offset
 * 0. That keeps every payload contiguous. So that a message of the
 * maximum size always fits into an empty ring, the maximum payload is
 * capacity / 2 - 8 bytes (shm_spsc_max_message()).
 *
 * Exactly one thread at a time may push and one thread at a time may pop.
 * A pusher and a popper in different processes need no lock.
 */
#ifndef SHMSTORE_RING_SPSC_H
#define SHMSTORE_RING_SPSC_H

#include <stddef.h>
#include <stdint.h>

#include "atomics.h"

#define SHM_SPSC_MAGIC 0x53505343u     /* "SPSC" */
#define SHM_SPSC_MIN_CAPACITY 64u      /* bytes of data area */

typedef struct shm_spsc {
    /* Written once by shm_spsc_init(), then read by both sides. */
    uint32_t magic;
    uint32_t capacity;                              /* data bytes, a power of two */

    /* Shared: written by the consumer, read by the producer. */
    _Alignas(SHM_CACHE_LINE) shm_atomic_u64 head;   /* bytes consumed */

    /* Shared: written by the producer, read by the consumer. */
    _Alignas(SHM_CACHE_LINE) shm_atomic_u64 tail;   /* bytes produced */

    /* Producer only: the last head it loaded. */
    _Alignas(SHM_CACHE_LINE) uint64_t head_cache;

    /* Consumer only: the last tail it loaded. */
    _Alignas(SHM_CACHE_LINE) uint64_t tail_cache;

    /* Shared: written by the producer before it publishes tail, read by
     * the consumer after. */
    _Alignas(SHM_CACHE_LINE) unsigned char data[];
} shm_spsc_t;

/* Returns the bytes a ring of capacity data bytes needs, or 0 when
 * capacity is not a power of two of at least SHM_SPSC_MIN_CAPACITY. */
size_t shm_spsc_footprint(uint32_t capacity);

/* Initialises a ring in mem, which must be shm_spsc_footprint(capacity)
 * bytes, aligned to SHM_CACHE_LINE. The creator calls it once, before
 * either side uses the ring; mem may then be used as shm_spsc_t *.
 * Returns 0, or -EINVAL on a bad capacity or alignment. */
int shm_spsc_init(void *mem, uint32_t capacity);

/* Returns the largest payload a push accepts: capacity / 2 - 8. */
uint32_t shm_spsc_max_message(const shm_spsc_t *ring);

/* Appends a copy of the len bytes at msg (len may be 0). Producer only.
 * Returns 0, -EAGAIN when the ring has no room now, or -EMSGSIZE when
 * len exceeds shm_spsc_max_message(). */
int shm_spsc_push(shm_spsc_t *ring, const void *msg, uint32_t len);

/* Removes the oldest message and copies it into buf (cap bytes), storing
 * its length in *len. Consumer only. Returns 0, -EAGAIN when the ring is
 * empty, -EMSGSIZE with *len set when cap is too small (the message
 * then stays in the ring), or -EBADMSG when the indices or a record
 * header are out of range, which means a corrupted ring. */
int shm_spsc_pop(shm_spsc_t *ring, void *buf, uint32_t cap, uint32_t *len);

/* Returns 1 if the ring contains no message, else 0. Exact for the consumer
 * (a message may arrive right after); approximate for the producer and
 * for any third party. */
int shm_spsc_empty(const shm_spsc_t *ring);

#endif /* SHMSTORE_RING_SPSC_H */
