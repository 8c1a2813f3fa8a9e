/*
 * ring_mpmc.c - bounded multi-producer, multi-consumer queue with a
 * sequence number per cell; the protocol is described in ring_mpmc.h.
 *
 * Payload bytes are plain memory. The producer that owns a turn writes
 * them before its release store of the cell's sequence, and the consumer
 * reads them after its acquire load of it. The consumer then hands the
 * cell back with a release store, which the next lap's producer loads
 * with acquire.
 */
#include "ring_mpmc.h"

#include <errno.h>
#include <string.h>

/* Largest cell_bytes accepted, so that the stride fits in a uint32_t. */
#define CELL_BYTES_MAX (UINT32_MAX / 2u)

static uint64_t cell_stride(uint32_t cell_bytes)
{
    uint64_t bytes = sizeof(shm_mpmc_cell_t) + (uint64_t)cell_bytes;
    /* A whole number of cache lines per cell, so that producers and
     * consumers working on neighbouring cells do not share a line. */
    return (bytes + SHM_CACHE_LINE - 1) / SHM_CACHE_LINE * SHM_CACHE_LINE;
}

static shm_mpmc_cell_t *cell_at(shm_mpmc_t *queue, uint64_t ticket)
{
    uint64_t index = ticket & (uint64_t)(queue->cells - 1u);
    return (shm_mpmc_cell_t *)(queue->cell_area + index * queue->cell_stride);
}

size_t shm_mpmc_footprint(uint32_t cells, uint32_t cell_bytes)
{
    if (cells < 2 || (cells & (cells - 1u)) != 0)
        return 0;
    if (cell_bytes == 0 || cell_bytes > CELL_BYTES_MAX)
        return 0;
    return sizeof(shm_mpmc_t) + (size_t)cells * cell_stride(cell_bytes);
}

int shm_mpmc_init(void *mem, uint32_t cells, uint32_t cell_bytes)
{
    if (mem == NULL || ((uintptr_t)mem % SHM_CACHE_LINE) != 0)
        return -EINVAL;
    if (shm_mpmc_footprint(cells, cell_bytes) == 0)
        return -EINVAL;

    shm_mpmc_t *queue = mem;
    queue->magic = SHM_MPMC_MAGIC;
    queue->cells = cells;
    queue->cell_bytes = cell_bytes;
    queue->cell_stride = (uint32_t)cell_stride(cell_bytes);

    /* Relaxed, here and below: no process uses the queue before the creator
     * publishes the memory that contains it. */
    shm_store_relaxed(&queue->enqueue_ticket, 0);
    shm_store_relaxed(&queue->dequeue_ticket, 0);

    /* Cell i starts ready for the producer of ticket i. */
    for (uint32_t i = 0; i < cells; i++) {
        shm_mpmc_cell_t *cell = cell_at(queue, i);
        shm_store_relaxed(&cell->sequence, i);
        shm_store_relaxed(&cell->length, 0);
        cell->reserved = 0;
    }
    return 0;
}

int shm_mpmc_push(shm_mpmc_t *queue, const void *msg, uint32_t len)
{
    if (len > queue->cell_bytes)
        return -EMSGSIZE;

    /* Relaxed: a stale ticket only costs one more round of the loop. */
    uint64_t ticket = shm_load_relaxed(&queue->enqueue_ticket);
    shm_mpmc_cell_t *cell;
    for (;;) {
        cell = cell_at(queue, ticket);
        /* Acquire: pairs with the release store of the consumer that
         * emptied this cell on the previous lap, so its reads are done. */
        uint64_t sequence = shm_load_acquire(&cell->sequence);
        int64_t lag = (int64_t)(sequence - ticket);

        if (lag == 0) {
            /* acq_rel is stronger than needed: the cell's sequence carries
             * the ordering of the payload. On failure, ticket receives the
             * current counter. */
            if (shm_cas_weak_acq_rel(&queue->enqueue_ticket, &ticket, ticket + 1))
                break;
        } else if (lag < 0) {
            /* The cell still contains the message of the previous lap. */
            return -EAGAIN;
        } else {
            /* Relaxed: another producer took this ticket; fetch a newer one. */
            ticket = shm_load_relaxed(&queue->enqueue_ticket);
        }
    }

    /* Relaxed: published by the release store of sequence below. */
    shm_store_relaxed(&cell->length, len);
    if (len > 0)
        memcpy(cell->payload, msg, len);

    /* Release: pairs with the consumers' acquire load of sequence. */
    shm_store_release(&cell->sequence, ticket + 1);
    return 0;
}

int shm_mpmc_pop(shm_mpmc_t *queue, void *buf, uint32_t cap, uint32_t *len)
{
    /* Relaxed: a stale ticket only costs one more round of the loop. */
    uint64_t ticket = shm_load_relaxed(&queue->dequeue_ticket);
    shm_mpmc_cell_t *cell;
    uint32_t length;
    for (;;) {
        cell = cell_at(queue, ticket);
        /* Acquire: pairs with the producer's release store of sequence,
         * so length and payload are written. */
        uint64_t sequence = shm_load_acquire(&cell->sequence);
        int64_t lag = (int64_t)(sequence - (ticket + 1));

        if (lag == 0) {
            /* Relaxed: ordered by the acquire load of sequence. The value
             * read here belongs to this ticket if the claim below succeeds,
             * because the cell changes only after its claimer hands it
             * back. */
            length = shm_load_relaxed(&cell->length);
            if (length <= queue->cell_bytes && length > cap) {
                *len = length;
                return -EMSGSIZE;
            }
            /* acq_rel is stronger than needed, as in shm_mpmc_push(). */
            if (shm_cas_weak_acq_rel(&queue->dequeue_ticket, &ticket, ticket + 1))
                break;
        } else if (lag < 0) {
            /* The producer of this ticket has not published yet. */
            return -EAGAIN;
        } else {
            /* Relaxed: another consumer took this ticket; fetch a newer one. */
            ticket = shm_load_relaxed(&queue->dequeue_ticket);
        }
    }

    /* A length beyond cell_bytes means a corrupted cell: drop it rather
     * than read past the cell. */
    int result = -EBADMSG;
    if (length <= queue->cell_bytes) {
        if (length > 0)
            memcpy(buf, cell->payload, length);
        *len = length;
        result = 0;
    }

    /* Release: pairs with the next lap's producer's acquire load of
     * sequence, so it overwrites the payload only after the copy above. */
    shm_store_release(&cell->sequence, ticket + queue->cells);
    return result;
}

uint32_t shm_mpmc_size_approx(const shm_mpmc_t *queue)
{
    /* Acquire: keeps the enqueue load below after this one, so the
     * difference is never negative. */
    uint64_t dequeued = shm_load_acquire(&queue->dequeue_ticket);
    /* Relaxed: the result is a hint. */
    uint64_t enqueued = shm_load_relaxed(&queue->enqueue_ticket);

    uint64_t queued = enqueued - dequeued;
    /* Tickets taken by producers that have not published yet are counted,
     * so clamp to the number of cells. */
    if (queued > queue->cells)
        queued = queue->cells;
    return (uint32_t)queued;
}
