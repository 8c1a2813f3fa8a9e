/*
 * infer_layout.h - layout of the inference segment /dev/shm/shmstore-NAME-infer.
 *
 * The daemon creates the segment at start and unlinks it at stop. It holds:
 *  - a header (magic, ABI version, own size, offsets of the parts below);
 *  - the doorbell that idle workers sleep on;
 *  - the worker table (one entry per worker process);
 *  - the request queue (an MPMC queue of infer_ticket_t: slot number and
 *    sequence number of a submitted request);
 *  - the request slots: a client process claims a free slot for one call,
 *    writes its request into it, queues a ticket and waits on the slot's
 *    doorbell until a worker (or the daemon, when the worker died) completes
 *    it.
 *
 * Everything is addressed by offsets from the start of the segment, because
 * each process maps it at its own address.
 *
 * The request protocol (each function of infer_request.c points back here):
 *
 * A slot's state word packs three fields: the request's sequence number in
 * the high 32 bits, the index of the worker that took it in bits 8..15 and
 * the status in bits 0..7. Every status change is a compare-and-swap on the
 * whole word, so a party holding an old sequence number (a worker that took
 * a request its client has since abandoned, a ticket left in the queue)
 * can never change a newer request in the same slot.
 *
 *   IDLE --client--> SUBMITTED --worker--> TAKEN --worker--> COMPLETING --> DONE
 *                        |                   |
 *                        | client timeout    | client timeout
 *                        v                   v
 *                    ABANDONED        ABANDONED_TAKEN --worker--> IDLE
 *
 *  1. The client claims the slot (owner 0 -> its pid), bumps the sequence
 *     number, writes the request body, and publishes SUBMITTED with a
 *     release store. Then it pushes a ticket and rings the worker doorbell.
 *  2. A worker pops the ticket and moves SUBMITTED -> TAKEN with its own
 *     index (acquire: it then reads the body the client wrote).
 *  3. When done, the worker moves TAKEN -> COMPLETING, writes the result code
 *     and message, stores DONE with a release store and rings the slot's
 *     doorbell. Only the party that won COMPLETING writes the result, so a
 *     late worker never overwrites the result of a newer request.
 *  4. A client whose timeout passes moves SUBMITTED -> ABANDONED, or
 *     TAKEN -> ABANDONED_TAKEN, and fails with -ETIMEDOUT. If the client
 *     finds COMPLETING, the result is moments away and it waits for DONE.
 *  5. The client frees the slot (owner -> 0) after DONE or ABANDONED. After
 *     ABANDONED_TAKEN it leaves the slot to the worker, which may still read
 *     the body: the worker's CAS to COMPLETING fails, so it drops the result,
 *     moves ABANDONED_TAKEN -> IDLE and frees the slot. The body therefore
 *     never changes while a worker holds the request.
 *  6. When a worker dies, the daemon completes every slot that the dead
 *     worker holds in TAKEN or COMPLETING with SHMSTORE_EWORKER, and frees
 *     its ABANDONED_TAKEN slots. The worker is dead, so nothing races it.
 *  7. When a client dies, the daemon abandons its SUBMITTED slots and frees
 *     its slots that no worker holds.
 */
#ifndef SHMSTORE_INFER_LAYOUT_H
#define SHMSTORE_INFER_LAYOUT_H

#include <stdint.h>

#include "atomics.h"
#include "doorbell.h"
#include "ring_mpmc.h"

#define INFER_MAGIC 0x524546494d485353ull /* "SSHMIFER" read as little-endian bytes */
#define INFER_ABI_VERSION 2u

#define INFER_MAX_WORKERS 64u
#define INFER_MAX_TENSORS 64u          /* most input keys, and most output keys, of a request */
#define INFER_BODY_BYTES 16384u        /* model key, function name, input and output keys */
#define INFER_ERROR_BYTES 1024u        /* result message, NUL included */
#define INFER_DEVICE_BYTES 32u

/* Status values of the low byte of a slot's state word. */
enum infer_status {
    INFER_IDLE = 0,
    INFER_SUBMITTED = 1,
    INFER_TAKEN = 2,
    INFER_COMPLETING = 3,
    INFER_DONE = 4,
    INFER_ABANDONED = 5,
    INFER_ABANDONED_TAKEN = 6,         /* abandoned while a worker held it; the worker frees it */
};

/* Request kinds. */
enum infer_kind {
    INFER_KIND_MODEL = 1,
    INFER_KIND_SCRIPT = 2,
};

/* Worker table states. */
enum infer_worker_state {
    INFER_WORKER_EMPTY = 0,            /* no process */
    INFER_WORKER_READY = 1,            /* registered and taking requests */
    INFER_WORKER_DEAD = 2,             /* died; the daemon failed its requests */
};

static inline uint64_t infer_state_pack(uint32_t sequence, uint32_t worker, uint32_t status)
{
    return ((uint64_t)sequence << 32) | ((uint64_t)(worker & 0xffu) << 8) | (status & 0xffu);
}

static inline uint32_t infer_state_sequence(uint64_t state) { return (uint32_t)(state >> 32); }
static inline uint32_t infer_state_worker(uint64_t state) { return (uint32_t)(state >> 8) & 0xffu; }
static inline uint32_t infer_state_status(uint64_t state) { return (uint32_t)state & 0xffu; }

/* The message that travels through the request queue. */
typedef struct infer_ticket {
    uint32_t slot;
    uint32_t sequence;
} infer_ticket_t;

typedef struct infer_worker_entry {
    /* Shared: written by the worker at registration and by the daemon when
     * it clears a dead worker; read by the daemon and by status readers. */
    shm_atomic_i32 pid;
    shm_atomic_u32 state;              /* enum infer_worker_state */
    shm_atomic_u64 requests_completed; /* bumped by the worker */
    shm_atomic_u64 batches_run;        /* bumped by the worker */
    /* Shared: 1 while the worker polls the queue instead of sleeping on the
     * worker doorbell. Set and cleared by the worker, cleared by the daemon
     * when the worker dies; clients read it to skip a ring that would only
     * wake idle workers (see infer_worker_take_spin). */
    shm_atomic_u32 spinning;
    /* Written by the worker before it stores READY; read after. */
    char device[INFER_DEVICE_BYTES];
} infer_worker_entry_t;

typedef struct infer_slot {
    /* Shared: pid of the client process that owns the slot, 0 when free.
     * Claimed by CAS by clients; cleared by the owner or by the daemon. */
    _Alignas(SHM_CACHE_LINE) shm_atomic_i32 owner;
    uint32_t reserved;
    /* Shared: the state word, see the protocol in the file comment. */
    shm_atomic_u64 state;

    /* Shared: rung by whoever stores DONE; the owner sleeps on it. */
    shm_doorbell_t done;

    /* Written by the owner before it stores SUBMITTED; read by the worker
     * after its acquire CAS to TAKEN. */
    int64_t submitted_ns;              /* CLOCK_MONOTONIC at submission */
    int64_t deadline_ns;               /* CLOCK_MONOTONIC */
    uint32_t kind;                     /* enum infer_kind */
    uint32_t n_inputs;
    uint32_t n_outputs;
    uint32_t body_bytes;
    /* NUL-terminated strings, one after the other: the model (or script)
     * key, the function name ("" for a model), the inputs, the outputs. */
    char body[INFER_BODY_BYTES];

    /* Written by the party that won COMPLETING, before it stores DONE;
     * read by the owner after it loads DONE. */
    int32_t result;
    char error[INFER_ERROR_BYTES];
} infer_slot_t;

typedef struct infer_header {
    /* Shared: stored last by the daemon with a release store, once the rest
     * of the segment is initialised; openers load it with acquire. */
    shm_atomic_u64 magic;
    /* Written once by the daemon before magic. */
    uint32_t abi_version;
    uint32_t slot_count;
    uint64_t segment_bytes;
    uint64_t workers_offset;
    uint64_t queue_offset;
    uint64_t slots_offset;
    int32_t daemon_pid;
    uint32_t reserved;

    /* Shared: set by the daemon when it stops; clients and workers give up. */
    shm_atomic_u32 stopping;
    /* Shared: how many workers the daemon runs (0: inference is off).
     * Written by the daemon, read by clients before they submit. */
    shm_atomic_u32 worker_count;
    /* Shared: bumped by each client submission, for statistics. */
    shm_atomic_u64 requests_submitted;

    /* Shared: idle workers sleep on it; clients ring it after a push. */
    shm_doorbell_t worker_doorbell;
    /* Shared: bumped by clients after a push and by workers after they
     * clear their spinning flag, so that the two are ordered; see
     * wake_needed() in infer_request.c. The value means nothing. */
    _Alignas(SHM_CACHE_LINE) shm_atomic_u32 spin_handoff;
} infer_header_t;

#endif /* SHMSTORE_INFER_LAYOUT_H */
