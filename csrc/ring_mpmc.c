/*
 * ring_mpmc.c - bounded multi-producer, multi-consumer queue with an owner
 * tagged state word per cell; the protocol is described in ring_mpmc.h.
 *
 * Payload bytes are plain memory. A party reads or writes them only while
 * it owns the cell: its claim is an acquire compare-and-swap on the state
 * word, and it hands the cell on with a release store of the next state.
 * Each hand-over therefore orders the payload accesses of the previous
 * owner before those of the next.
 */
#define _GNU_SOURCE
#include "ring_mpmc.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

/* Largest cell_bytes accepted, so that the stride fits in a uint32_t and
 * no real length can equal DROPPED_LENGTH. */
#define CELL_BYTES_MAX (UINT32_MAX / 2u)

/* Length of a message that shm_mpmc_recover() dropped: consumers skip it. */
#define DROPPED_LENGTH UINT32_MAX

static uint64_t pack_state(uint32_t turn, uint32_t owner)
{
    return ((uint64_t)turn << 32) | owner;
}

static uint32_t state_turn(uint64_t state)
{
    return (uint32_t)(state >> 32);
}

static uint32_t state_owner(uint64_t state)
{
    return (uint32_t)state;
}

/* Returns the turn at which the producer of ticket may claim its cell;
 * the consumer's turn is one more. Turns wrap modulo 2^32. */
static uint32_t producer_turn(const shm_mpmc_t *queue, uint64_t ticket)
{
    uint64_t lap = ticket >> __builtin_ctz(queue->cells);
    return (uint32_t)(lap * 2u);
}

static uint64_t cell_stride(uint32_t cell_bytes)
{
    uint64_t bytes = sizeof(shm_mpmc_cell_t) + (uint64_t)cell_bytes;
    /* A whole number of cache lines per cell, so that parties working on
     * neighbouring cells do not share a line. */
    return (bytes + SHM_CACHE_LINE - 1) / SHM_CACHE_LINE * SHM_CACHE_LINE;
}

static shm_mpmc_cell_t *cell_at(shm_mpmc_t *queue, uint64_t ticket)
{
    uint64_t index = ticket & (uint64_t)(queue->cells - 1u);
    return (shm_mpmc_cell_t *)(queue->cell_area + index * queue->cell_stride);
}

/* Moves counter from ticket to ticket + 1, unless another party already
 * did. Called only for a ticket whose cell has been claimed. */
static void advance_ticket(shm_atomic_u64 *counter, uint64_t ticket)
{
    uint64_t expected = ticket;
    /* acq_rel is stronger than needed: the counter only hands out tickets,
     * and each cell's state word orders the payload. */
    shm_cas_acq_rel(counter, &expected, ticket + 1);
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

    /* Relaxed, here and below: no process uses the queue before the
     * creator publishes the memory that contains it. */
    shm_store_relaxed(&queue->enqueue_ticket, 0);
    shm_store_relaxed(&queue->dequeue_ticket, 0);

    /* Every cell starts empty, waiting for the producer of lap 0. */
    for (uint32_t i = 0; i < cells; i++) {
        shm_mpmc_cell_t *cell = cell_at(queue, i);
        shm_store_relaxed(&cell->state, pack_state(0, 0));
        shm_store_relaxed(&cell->length, 0);
        cell->reserved = 0;
    }
    return 0;
}

int shm_mpmc_push_as(shm_mpmc_t *queue, uint32_t owner, const void *msg, uint32_t len)
{
    if (owner == 0)
        return -EINVAL;
    if (len > queue->cell_bytes)
        return -EMSGSIZE;

    /* Relaxed: a stale ticket only costs one more round of the loop. */
    uint64_t ticket = shm_load_relaxed(&queue->enqueue_ticket);
    shm_mpmc_cell_t *cell;
    uint32_t turn;
    for (;;) {
        cell = cell_at(queue, ticket);
        turn = producer_turn(queue, ticket);
        /* Acquire: pairs with the release store that emptied this cell on
         * the previous lap, so that consumer's reads are done. */
        uint64_t state = shm_load_acquire(&cell->state);
        int32_t lag = (int32_t)(state_turn(state) - turn);

        if (lag < 0)
            return -EAGAIN; /* the previous lap's message is still there */

        if (lag == 0 && state_owner(state) == 0) {
            /* acq_rel: the acquire half pairs with the same release store
             * as the load above. */
            if (shm_cas_acq_rel(&cell->state, &state, pack_state(turn, owner)))
                break;
            continue;
        }

        /* Another producer claimed this ticket: move the counter on for
         * it, which it may be unable to do itself if it died. */
        advance_ticket(&queue->enqueue_ticket, ticket);
        /* Relaxed: as above. */
        ticket = shm_load_relaxed(&queue->enqueue_ticket);
    }
    advance_ticket(&queue->enqueue_ticket, ticket);

    /* Relaxed: published by the release store of state below. */
    shm_store_relaxed(&cell->length, len);
    if (len > 0)
        memcpy(cell->payload, msg, len);

    /* Release: pairs with the consumers' acquire load and claim. */
    shm_store_release(&cell->state, pack_state(turn + 1u, 0));
    return 0;
}

int shm_mpmc_pop_as(shm_mpmc_t *queue, uint32_t owner, void *buf, uint32_t cap,
                    uint32_t *len)
{
    if (owner == 0)
        return -EINVAL;

    for (;;) {
        /* Relaxed: a stale ticket only costs one more round of the loop. */
        uint64_t ticket = shm_load_relaxed(&queue->dequeue_ticket);
        shm_mpmc_cell_t *cell;
        uint32_t turn;
        uint32_t length;
        for (;;) {
            cell = cell_at(queue, ticket);
            turn = producer_turn(queue, ticket) + 1u;
            /* Acquire: pairs with the producer's release store that
             * published the cell, so length and payload are written. */
            uint64_t state = shm_load_acquire(&cell->state);
            int32_t lag = (int32_t)(state_turn(state) - turn);

            if (lag < 0)
                return -EAGAIN; /* empty, or the message is being written */

            if (lag == 0 && state_owner(state) == 0) {
                /* Relaxed: ordered by the acquire load of state. If the
                 * claim below succeeds, the state did not change since,
                 * so this is the length of this ticket's message. */
                length = shm_load_relaxed(&cell->length);
                if (length <= queue->cell_bytes && length > cap) {
                    *len = length;
                    return -EMSGSIZE;
                }
                /* acq_rel: the acquire half pairs with the same release
                 * store as the load above. */
                if (shm_cas_acq_rel(&cell->state, &state, pack_state(turn, owner)))
                    break;
                continue;
            }

            /* Another consumer claimed this ticket: move the counter on. */
            advance_ticket(&queue->dequeue_ticket, ticket);
            /* Relaxed: as above. */
            ticket = shm_load_relaxed(&queue->dequeue_ticket);
        }
        advance_ticket(&queue->dequeue_ticket, ticket);

        int result = 0;
        if (length == DROPPED_LENGTH) {
            result = -EAGAIN; /* a dropped message: skip it below */
        } else if (length > queue->cell_bytes) {
            /* A corrupted cell: drop it rather than read past its end. */
            result = -EBADMSG;
        } else {
            if (length > 0)
                memcpy(buf, cell->payload, length);
            *len = length;
        }

        /* Release: pairs with the next lap's producer's acquire load and
         * claim, so it overwrites the payload only after the copy above. */
        shm_store_release(&cell->state, pack_state(turn + 1u, 0));

        if (result != -EAGAIN)
            return result;
    }
}

/* This process's pid, or 0 before the first use and in a child after
 * fork(). Caching it saves a getpid() system call per push and pop, which
 * cost more than half of the queue's throughput when measured. */
static shm_atomic_u32 cached_pid;
static pthread_once_t fork_handler_once = PTHREAD_ONCE_INIT;

static void forget_pid(void)
{
    /* Relaxed: process-private, and the child runs one thread here. */
    shm_store_relaxed(&cached_pid, 0);
}

static void install_fork_handler(void)
{
    /* If registration fails (ENOMEM), a child forked later would use its
     * parent's pid as owner id, which only weakens shm_mpmc_recover(). */
    (void)pthread_atfork(NULL, NULL, forget_pid);
}

/* Returns this process's pid. NOTE: a child created by a raw clone()
 * system call runs no fork handlers, so it would keep its parent's pid
 * here. Children of fork() and posix_spawn() get their own. */
static uint32_t current_pid(void)
{
    /* Relaxed: every thread of this process stores the same value. */
    uint32_t pid = shm_load_relaxed(&cached_pid);
    if (pid == 0) {
        pthread_once(&fork_handler_once, install_fork_handler);
        pid = (uint32_t)getpid();
        shm_store_relaxed(&cached_pid, pid);
    }
    return pid;
}

int shm_mpmc_push(shm_mpmc_t *queue, const void *msg, uint32_t len)
{
    return shm_mpmc_push_as(queue, current_pid(), msg, len);
}

int shm_mpmc_pop(shm_mpmc_t *queue, void *buf, uint32_t cap, uint32_t *len)
{
    return shm_mpmc_pop_as(queue, current_pid(), buf, cap, len);
}

uint32_t shm_mpmc_recover(shm_mpmc_t *queue, uint32_t owner, uint32_t *dropped,
                          uint32_t *lost)
{
    uint32_t dropped_count = 0;
    uint32_t lost_count = 0;

    for (uint32_t i = 0; owner != 0 && i < queue->cells; i++) {
        shm_mpmc_cell_t *cell = cell_at(queue, i);
        /* Acquire: pairs with the dead owner's claim, the last change it
         * made to the state word. */
        uint64_t state = shm_load_acquire(&cell->state);
        if (state_owner(state) != owner)
            continue;

        uint32_t turn = state_turn(state);
        if ((turn & 1u) == 0) {
            /* A producer died while writing: publish the cell as dropped.
             * Relaxed: published by the release store below. */
            shm_store_relaxed(&cell->length, DROPPED_LENGTH);
            dropped_count++;
        } else {
            /* A consumer died while reading: hand the cell to the next lap. */
            lost_count++;
        }
        /* Release: pairs with the acquire load of the next party, as the
         * dead owner's own release store would have. */
        shm_store_release(&cell->state, pack_state(turn + 1u, 0));
    }

    if (dropped != NULL)
        *dropped = dropped_count;
    if (lost != NULL)
        *lost = lost_count;
    return dropped_count + lost_count;
}

uint32_t shm_mpmc_size_approx(const shm_mpmc_t *queue)
{
    /* Acquire: keeps the enqueue load below after this one, so the
     * difference is never negative. */
    uint64_t dequeued = shm_load_acquire(&queue->dequeue_ticket);
    /* Relaxed: the result is a hint. */
    uint64_t enqueued = shm_load_relaxed(&queue->enqueue_ticket);

    /* A producer that died between claiming its cell and moving the
     * enqueue counter on leaves the counter one behind until the next push,
     * while consumers have already passed the dropped cell; so the
     * dequeue counter may lead, and the queue is then empty. */
    if (dequeued >= enqueued)
        return 0;
    uint64_t queued = enqueued - dequeued;
    /* Tickets taken by producers that have not published yet are counted,
     * so clamp to the number of cells. */
    if (queued > queue->cells)
        queued = queue->cells;
    return (uint32_t)queued;
}
