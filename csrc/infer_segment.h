/*
 * infer_segment.h - the inference segment: creation by the daemon, mapping
 * by clients and workers, and the request path between them.
 *
 * Every function returns 0 (or a documented non-negative value) or a
 * negative code (negated errno or SHMSTORE_E*). Functions that can fail for
 * a reason worth explaining take a message buffer and write an English
 * sentence into it; they never touch the global errno as a result.
 */
#ifndef SHMSTORE_INFER_SEGMENT_H
#define SHMSTORE_INFER_SEGMENT_H

#include <stddef.h>
#include <stdint.h>

#include "infer_layout.h"
#include "shmstore.h"

/* "/shmstore-" + store name + "-infer" + NUL fits. */
#define SHMSTORE_INFER_SHM_NAME_MAX (SHMSTORE_NAME_MAX + 32)

/* Process-private handle of a mapped inference segment. */
/* Entries of a process's table of expected request times, by model key. */
#define INFER_WAIT_ESTIMATES 16u
/* Default and largest SHMSTORE_INFER_SPIN_US: the longest a client spins
 * for a result before it sleeps on the slot's doorbell. */
#define INFER_SPIN_US_DEFAULT 1000
#define INFER_SPIN_US_MAX 100000

/* A process-private moving average of one model's request time. */
typedef struct infer_wait_estimate {
    shm_atomic_u64 key_hash;           /* FNV-1a of the model key; 0: unused */
    shm_atomic_i64 average_ns;         /* submission to completion; 0: none yet */
} infer_wait_estimate_t;

typedef struct infer_segment {
    int fd;                            /* daemon: holds LOCK_EX for its lifetime */
    int is_daemon;                     /* 1: destroy unlinks the segment */
    void *base;
    size_t bytes;
    infer_header_t *header;
    infer_worker_entry_t *workers;
    shm_mpmc_t *queue;
    infer_slot_t *slots;
    /* Process-private, but several threads update it: the time of the last
     * flock test that found the daemon alive, see infer_segment_daemon_alive. */
    shm_atomic_i64 last_alive_ns;
    /* Process-private: the client's spin limit (SHMSTORE_INFER_SPIN_US) and
     * the expected time of recent requests per model key, which decides
     * whether a client spins for its result; see infer_call. */
    int64_t max_spin_ns;
    infer_wait_estimate_t wait_estimates[INFER_WAIT_ESTIMATES];
    char shm_name[SHMSTORE_INFER_SHM_NAME_MAX];
} infer_segment_t;

/* ---- segment ------------------------------------------------------------- */

/* Creates /dev/shm/shmstore-NAME-infer (mode 0600) with slot_count request
 * slots (0: the default, 256), locks it for the life of the daemon, and
 * sets the worker count. A segment left by a dead daemon is replaced; one
 * locked by a live daemon fails with SHMSTORE_EBUSY. Daemon only. */
int infer_segment_create(const char *store_name, uint32_t slot_count, uint32_t worker_count,
                         infer_segment_t **out, char *message, size_t message_bytes);

/* Maps the inference segment of store_name and validates its magic, ABI
 * version and size. Fails with SHMSTORE_ENOSTORE when no daemon created it
 * and SHMSTORE_EABI on a mismatch. Clients and workers. */
int infer_segment_open(const char *store_name, infer_segment_t **out, char *message,
                       size_t message_bytes);

/* Unmaps the segment and frees the handle; removes nothing. */
void infer_segment_close(infer_segment_t *segment);

/* Marks the segment as stopping (waiting clients fail with SHMSTORE_ELOST),
 * wakes every sleeper, unlinks the segment and frees the handle. Daemon
 * only. */
int infer_segment_destroy(infer_segment_t *segment);

/* Returns 1 while the daemon that created the segment lives and has not
 * begun to stop, 0 otherwise. Makes at most one flock(2) test per
 * min_interval_ns (0: test now); in between it returns the last result
 * when that was "alive". */
int infer_segment_daemon_alive(infer_segment_t *segment, int64_t min_interval_ns);

/* ---- client side ------------------------------------------------------------ */

typedef struct infer_request {
    uint32_t kind;                     /* enum infer_kind */
    const char *key;                   /* model or script key */
    const char *function;              /* script function; NULL or "" for a model */
    uint32_t n_inputs;
    const char *const *inputs;
    uint32_t n_outputs;
    const char *const *outputs;
    int64_t timeout_ms;                /* > 0 */
    /* Optional (NULL: none): called between waits of at most 100 ms. A
     * non-zero return abandons the request as a signal does (-EINTR), so a
     * binding can notice a signal that arrived outside a system call. */
    int (*interrupted)(void *context);
    void *interrupt_context;
} infer_request_t;

/* Submits request and waits for its result; see the protocol in
 * infer_layout.h. The caller first spins for the result when this process's
 * recent requests for the same key completed within SHMSTORE_INFER_SPIN_US
 * (a quarter more is allowed), yielding the CPU between checks. It does not
 * spin when they took longer, and spins for SHMSTORE_SPIN_US for a key
 * without history. Then it sleeps on the slot's doorbell. Returns the result code the worker set (0 on success),
 * -ETIMEDOUT, SHMSTORE_ELOST when the daemon dies or stops while waiting,
 * SHMSTORE_ENOWORKER when the store runs no workers, -EINVAL or
 * -ENAMETOOLONG for a request that does not fit a slot, -EINTR when a
 * signal interrupted the wait (the request is then abandoned). message
 * receives the explanation of any failure. Any thread. */
int infer_call(infer_segment_t *segment, const infer_request_t *request, char *message,
               size_t message_bytes);

/* ---- worker side ------------------------------------------------------------ */

/* A request a worker took, with a private copy of its body. */
typedef struct infer_taken {
    uint32_t slot;
    uint32_t sequence;
    int64_t submitted_ns;
    int64_t deadline_ns;
    uint32_t kind;
    uint32_t n_inputs;
    uint32_t n_outputs;
    uint32_t body_bytes;
    char body[INFER_BODY_BYTES];
} infer_taken_t;

/* Records the calling process as worker index (its pid and device) and
 * marks it READY. Worker only. */
int infer_worker_register(infer_segment_t *segment, uint32_t index, int32_t pid,
                          const char *device);

/* Takes the next request for worker index. Waits up to timeout_ns
 * (0: do not wait; negative: no limit) spinning first, then sleeping on the
 * worker doorbell. Returns 0, -EAGAIN when nothing came in time, -EINTR,
 * or SHMSTORE_ELOST when the daemon died or stops. Worker only. */
int infer_worker_take(infer_segment_t *segment, uint32_t index, int64_t timeout_ns,
                      infer_taken_t *out);

/* Like infer_worker_take, but first polls the queue for up to spin_ns
 * without sleeping, yielding the CPU between polls. Meanwhile the worker
 * is marked as polling, so clients skip the doorbell for tickets it will
 * take and other idle workers keep sleeping. A worker that has just
 * completed requests calls it, because the next request often follows
 * within microseconds. Worker only. */
int infer_worker_take_spin(infer_segment_t *segment, uint32_t index, int64_t timeout_ns,
                           int64_t spin_ns, infer_taken_t *out);

/* Completes a request taken by worker index with result (0 or a negative
 * code) and message ("" on success). Returns 0, or -ESTALE when the client
 * abandoned the request meanwhile (the result is dropped). Worker only. */
int infer_worker_complete(infer_segment_t *segment, uint32_t index, uint32_t slot,
                          uint32_t sequence, int32_t result, const char *message);

/* Adds to the worker's completed-request and batch counters. Worker only. */
void infer_worker_count(infer_segment_t *segment, uint32_t index, uint64_t requests,
                        uint64_t batches);

/* ---- daemon side ------------------------------------------------------------ */

/* Called once per failed request by infer_daemon_fail_worker with the
 * model (or script) key of the request. */
typedef void (*infer_failed_callback)(const char *key, void *context);

/* Fails every request that worker index (process pid) held with
 * SHMSTORE_EWORKER and a message naming the worker and pid, marks the
 * worker DEAD, and returns how many requests it failed. Daemon only, after
 * the worker process is known to be dead. */
int infer_daemon_fail_worker(infer_segment_t *segment, uint32_t index, int32_t pid,
                             infer_failed_callback callback, void *context);

/* Frees the slots of client processes that died: abandons their queued
 * requests and releases slots no worker holds. Returns how many slots it
 * freed. Daemon only. */
int infer_daemon_reclaim_clients(infer_segment_t *segment);

/* Sets how many workers the daemon runs (0 turns inference off: calls fail
 * at once with SHMSTORE_ENOWORKER). Daemon only. */
void infer_daemon_set_worker_count(infer_segment_t *segment, uint32_t count);

/* Returns the approximate number of queued tickets. Anyone. */
uint32_t infer_queue_depth(infer_segment_t *segment);

/* ---- status ---------------------------------------------------------------- */

/* A copy of one worker table entry, read without a lock: each field is
 * current, but they may come from slightly different moments. */
typedef struct infer_worker_info {
    int32_t pid;
    uint32_t state;                    /* enum infer_worker_state */
    uint64_t requests_completed;
    uint64_t batches_run;
    uint32_t in_flight;                /* requests it holds, abandoned ones too */
    char device[INFER_DEVICE_BYTES];
} infer_worker_info_t;

/* Fills *out with worker index. Anyone. */
int infer_worker_info(infer_segment_t *segment, uint32_t index, infer_worker_info_t *out);

/* A copy of the header's counters. */
typedef struct infer_segment_info {
    int32_t daemon_pid;
    uint32_t slot_count;
    uint32_t worker_count;
    uint32_t queue_depth;              /* approximate */
    uint32_t slots_in_use;             /* approximate */
    uint64_t requests_submitted;
    uint64_t segment_bytes;
} infer_segment_info_t;

/* Fills *out with the segment's counters. Anyone. */
void infer_segment_info(infer_segment_t *segment, infer_segment_info_t *out);

#endif /* SHMSTORE_INFER_SEGMENT_H */
