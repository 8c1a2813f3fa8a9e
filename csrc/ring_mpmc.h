/*
 * ring_mpmc.h - bounded multi-producer, multi-consumer queue of
 * fixed-size cells in caller-provided (usually shared) memory.
 *
 * Each cell has a 64-bit sequence number that records whose turn it is. A
 * producer holding ticket t may fill cell t % cells when its sequence is
 * t, and then stores t + 1. That lets the consumer holding ticket t empty
 * the cell and store t + cells, which hands it to the producer of the
 * next lap.
 * Producers and consumers take tickets with a compare-and-swap on their
 * own counter, so each cell has one writer at a time and no lock is held.
 *
 * A cell carries a uint32 length and up to cell_bytes payload bytes.
 *
 * NOTE: a producer or consumer that dies between taking a ticket and
 * publishing its cell leaves that cell unfinished, and the queue stalls
 * at that cell for good. The window is one memcpy of at most cell_bytes.
 */
#ifndef SHMSTORE_RING_MPMC_H
#define SHMSTORE_RING_MPMC_H

#include <stddef.h>
#include <stdint.h>

#include "atomics.h"

#define SHM_MPMC_MAGIC 0x4d504d43u     /* "MPMC" */

typedef struct shm_mpmc_cell {
    /* Shared: the turn counter, see the file comment. */
    shm_atomic_u64 sequence;
    /* Shared: written by the producer that owns the turn before it
     * publishes sequence; read by consumers after they load sequence.
     * Atomic because a consumer reads it before claiming the cell. */
    shm_atomic_u32 length;
    uint32_t reserved;
    /* Shared: cell_bytes bytes, written and read like length, but only by
     * the producer and the consumer that own the turn. */
    unsigned char payload[];
} shm_mpmc_cell_t;

typedef struct shm_mpmc {
    /* Written once by shm_mpmc_init(), then read by everyone. */
    uint32_t magic;
    uint32_t cells;                                 /* a power of two */
    uint32_t cell_bytes;                            /* max payload per cell */
    uint32_t cell_stride;                           /* bytes from one cell to the next */

    /* Shared: producers' ticket counter. */
    _Alignas(SHM_CACHE_LINE) shm_atomic_u64 enqueue_ticket;

    /* Shared: consumers' ticket counter. */
    _Alignas(SHM_CACHE_LINE) shm_atomic_u64 dequeue_ticket;

    /* The cells, cell_stride bytes apart. */
    _Alignas(SHM_CACHE_LINE) unsigned char cell_area[];
} shm_mpmc_t;

/* Returns the bytes a queue of cells cells of cell_bytes payload bytes
 * needs, or 0 when cells is not a power of two >= 2 or cell_bytes is 0. */
size_t shm_mpmc_footprint(uint32_t cells, uint32_t cell_bytes);

/* Initialises a queue in mem, which must be shm_mpmc_footprint() bytes,
 * aligned to SHM_CACHE_LINE. The creator calls it once, before anyone
 * uses the queue; mem may then be used as shm_mpmc_t *. Returns 0, or
 * -EINVAL on bad sizes or alignment. */
int shm_mpmc_init(void *mem, uint32_t cells, uint32_t cell_bytes);

/* Appends a copy of the len bytes at msg. Any thread or process. Returns
 * 0, -EAGAIN when every cell is taken, or -EMSGSIZE when len exceeds
 * cell_bytes. */
int shm_mpmc_push(shm_mpmc_t *queue, const void *msg, uint32_t len);

/* Removes the oldest message and copies it into buf (cap bytes), storing
 * its length in *len. Any thread or process. Returns 0, -EAGAIN when the
 * queue is empty, -EMSGSIZE with *len set when cap is too small (the
 * message then stays queued, and a cap of at least cell_bytes avoids it), or
 * -EBADMSG when the cell's length exceeds cell_bytes, which means a
 * corrupted cell; that cell is then dropped. */
int shm_mpmc_pop(shm_mpmc_t *queue, void *buf, uint32_t cap, uint32_t *len);

/* Returns how many messages are queued. Approximate for everyone: pushes
 * and pops in flight may or may not be counted. */
uint32_t shm_mpmc_size_approx(const shm_mpmc_t *queue);

#endif /* SHMSTORE_RING_MPMC_H */
