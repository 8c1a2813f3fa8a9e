/*
 * ring_mpmc.h - bounded multi-producer, multi-consumer queue of
 * fixed-size cells in caller-provided (usually shared) memory, which a
 * daemon can repair after a producer or consumer dies mid-operation.
 *
 * Ticket t belongs to cell t % cells in lap t / cells. Each cell has one
 * 64-bit state word: the high 32 bits are the cell's turn, the low 32 bits
 * the owner id of the party working on it (0: none). In lap L the cell
 * goes through these four states, and (2L + 2, 0) starts the next lap:
 *
 *   (2L, 0)          empty, waiting for the producer of lap L
 *   (2L, owner)      that producer is writing the payload
 *   (2L + 1, 0)      full, waiting for the consumer of lap L
 *   (2L + 1, owner)  that consumer is copying the payload out
 * A party claims a cell with a
 * compare-and-swap that sets its owner id, then moves the shared ticket
 * counter on. A party that finds the cell of its ticket already claimed
 * moves the counter on for the claimer, so a claimer that dies never
 * blocks the counter. Turns are compared modulo 2^32.
 *
 * Because the owner is recorded in the same atomic step as the claim,
 * shm_mpmc_recover() can finish the cells of a dead owner: a half-written
 * message is dropped and a half-read one is lost, and the queue goes on.
 * Until then, consumers stop at a cell whose producer died, and producers
 * stop one lap later at a cell whose consumer died.
 *
 * A cell carries a uint32 length and up to cell_bytes payload bytes.
 */
#ifndef SHMSTORE_RING_MPMC_H
#define SHMSTORE_RING_MPMC_H

#include <stddef.h>
#include <stdint.h>

#include "atomics.h"

#define SHM_MPMC_MAGIC 0x4d504d43u     /* "MPMC" */

typedef struct shm_mpmc_cell {
    /* Shared: turn << 32 | owner id, see the file comment. */
    shm_atomic_u64 state;
    /* Shared: written by the owning producer before it publishes the cell,
     * read by consumers after they load state. Atomic because a consumer
     * reads it before claiming the cell. */
    shm_atomic_u32 length;
    uint32_t reserved;
    /* Shared: cell_bytes bytes, written and read only by the owner. */
    unsigned char payload[];
} shm_mpmc_cell_t;

typedef struct shm_mpmc {
    /* Written once by shm_mpmc_init(), then read by everyone. */
    uint32_t magic;
    uint32_t cells;                                 /* a power of two */
    uint32_t cell_bytes;                            /* max payload per cell */
    uint32_t cell_stride;                           /* bytes from one cell to the next */

    /* Shared: the next ticket for producers. */
    _Alignas(SHM_CACHE_LINE) shm_atomic_u64 enqueue_ticket;

    /* Shared: the next ticket for consumers. */
    _Alignas(SHM_CACHE_LINE) shm_atomic_u64 dequeue_ticket;

    /* The cells, cell_stride bytes apart. */
    _Alignas(SHM_CACHE_LINE) unsigned char cell_area[];
} shm_mpmc_t;

/* Returns the bytes a queue of cells cells of cell_bytes payload bytes
 * needs, or 0 when cells is not a power of two >= 2 or cell_bytes is 0 or
 * above UINT32_MAX / 2. */
size_t shm_mpmc_footprint(uint32_t cells, uint32_t cell_bytes);

/* Initialises a queue in mem, which must be shm_mpmc_footprint() bytes,
 * aligned to SHM_CACHE_LINE. The creator calls it once, before anyone
 * uses the queue; mem may then be used as shm_mpmc_t *. Returns 0, or
 * -EINVAL on bad sizes or alignment. */
int shm_mpmc_init(void *mem, uint32_t cells, uint32_t cell_bytes);

/* Appends a copy of the len bytes at msg, recording owner (non-zero, for
 * example the caller's pid) in the cell while it writes. Any thread or
 * process. Returns 0, -EAGAIN when every cell is taken, -EMSGSIZE when
 * len exceeds cell_bytes, or -EINVAL when owner is 0. */
int shm_mpmc_push_as(shm_mpmc_t *queue, uint32_t owner, const void *msg, uint32_t len);

/* Removes the oldest message and copies it into buf (cap bytes), storing
 * its length in *len, with owner recorded as in shm_mpmc_push_as(). Any
 * thread or process. Skips messages dropped by shm_mpmc_recover().
 * Returns 0 or one of these errors:
 *  -EAGAIN    the queue is empty, or its oldest message is being written;
 *  -EMSGSIZE  cap is too small: *len is set and the message stays queued
 *             (a cap of at least cell_bytes never fails so);
 *  -EBADMSG   the cell's length exceeds cell_bytes, so the cell is
 *             corrupted; it is dropped;
 *  -EINVAL    owner is 0. */
int shm_mpmc_pop_as(shm_mpmc_t *queue, uint32_t owner, void *buf, uint32_t cap,
                    uint32_t *len);

/* shm_mpmc_push_as() and shm_mpmc_pop_as() with the caller's pid as the
 * owner, so that a daemon that learns of a dead pid can recover its cells. */
int shm_mpmc_push(shm_mpmc_t *queue, const void *msg, uint32_t len);
int shm_mpmc_pop(shm_mpmc_t *queue, void *buf, uint32_t cap, uint32_t *len);

/* Finishes every cell that owner had claimed. A message it was writing is
 * dropped (consumers skip it), and a message it was reading is lost.
 * Returns how many cells it finished, and stores the two counts in
 * *dropped and *lost (either may be NULL).
 * Call it only once owner can no longer touch the queue, because its
 * process is dead, and from one thread at a time. Other parties may keep
 * using the queue meanwhile.
 * NOTE: a new process may receive the dead one's pid. If it is inside a
 * push or pop when that pid is recovered, its cell is finished under it.
 * Callers that cannot rule that out pass owner ids that are never reused. */
uint32_t shm_mpmc_recover(shm_mpmc_t *queue, uint32_t owner, uint32_t *dropped,
                          uint32_t *lost);

/* Returns how many messages are queued. Approximate for everyone: pushes
 * and pops in flight may or may not be counted. */
uint32_t shm_mpmc_size_approx(const shm_mpmc_t *queue);

#endif /* SHMSTORE_RING_MPMC_H */
