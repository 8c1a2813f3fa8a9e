/*
 * infer_request.c - the request path between clients, workers and the
 * daemon. Every function follows the request protocol written out in
 * infer_layout.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* flock, kill and nanosleep under -std=c11 */
#endif

#include "infer_segment.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "spin_wait.h"

/* How often a waiting party tests whether the daemon still lives. */
#define LIVENESS_INTERVAL_NS (100LL * 1000 * 1000)
/* Maximum single sleep of a waiting party, so that it tests liveness and
 * its deadline at least this often. */
#define WAIT_SLICE_NS (100LL * 1000 * 1000)
/* Checks of a condition between two sched_yield() calls while spinning. */
#define SPIN_CHECKS_PER_YIELD 64
/* Pause between scans when every slot is busy or the queue is full. */
#define RETRY_PAUSE_NS (200LL * 1000)

static void format_message(char *message, size_t message_bytes, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

static void format_message(char *message, size_t message_bytes, const char *format, ...)
{
    if (message == NULL || message_bytes == 0)
        return;
    va_list args;
    va_start(args, format);
    vsnprintf(message, message_bytes, format, args);
    va_end(args);
}

static void pause_ns(int64_t duration_ns)
{
    struct timespec pause = {.tv_sec = duration_ns / 1000000000LL,
                             .tv_nsec = duration_ns % 1000000000LL};
    nanosleep(&pause, NULL);
}

static int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ---- client side ------------------------------------------------------------ */

/* Claims a free slot for the calling thread (protocol step 1). Threads of
 * one process start their scans at different places to avoid contention. */
static int claim_slot(infer_segment_t *segment, int64_t deadline_ns, uint32_t *out,
                      char *message, size_t message_bytes)
{
    uint32_t count = segment->header->slot_count;
    int32_t pid = (int32_t)getpid();
    uint64_t mix = (uint64_t)pid * 0x9e3779b97f4a7c15ull ^ (uint64_t)pthread_self();
    uint32_t start = (uint32_t)((mix >> 17) % count);

    for (;;) {
        for (uint32_t i = 0; i < count; i++) {
            uint32_t index = (start + i) % count;
            int32_t expected = 0;
            /* Acquire: pairs with the release store of owner = 0 by the
             * previous owner, whose reads of the slot are then finished. */
            if (shm_cas_acq_rel(&segment->slots[index].owner, &expected, pid)) {
                *out = index;
                return 0;
            }
        }
        if (shm_monotonic_ns() >= deadline_ns) {
            format_message(message, message_bytes,
                           "all %u inference request slots stayed busy until the timeout; "
                           "start the daemon with more slots or fewer concurrent callers",
                           count);
            return -ETIMEDOUT;
        }
        if (!infer_segment_daemon_alive(segment, LIVENESS_INTERVAL_NS))
            return SHMSTORE_ELOST;
        pause_ns(RETRY_PAUSE_NS);
    }
}

static int append_string(infer_slot_t *slot, size_t *used, const char *text)
{
    size_t length = strlen(text) + 1;
    if (*used + length > INFER_BODY_BYTES)
        return -ENAMETOOLONG;
    memcpy(slot->body + *used, text, length);
    *used += length;
    return 0;
}

static int write_body(infer_slot_t *slot, const infer_request_t *request, int64_t submitted_ns,
                      int64_t deadline_ns)
{
    size_t used = 0;
    int result = append_string(slot, &used, request->key);
    if (result == 0)
        result = append_string(slot, &used, request->function ? request->function : "");
    for (uint32_t i = 0; result == 0 && i < request->n_inputs; i++)
        result = append_string(slot, &used, request->inputs[i]);
    for (uint32_t i = 0; result == 0 && i < request->n_outputs; i++)
        result = append_string(slot, &used, request->outputs[i]);
    if (result != 0)
        return result;

    slot->submitted_ns = submitted_ns;
    slot->deadline_ns = deadline_ns;
    slot->kind = request->kind;
    slot->n_inputs = request->n_inputs;
    slot->n_outputs = request->n_outputs;
    slot->body_bytes = (uint32_t)used;
    return 0;
}

/* Returns 1 when key is a store key: 1 to SHMSTORE_KEY_MAX bytes. */
static int valid_key(const char *key)
{
    return key != NULL && key[0] != '\0' && strlen(key) <= SHMSTORE_KEY_MAX;
}

static int validate_request(const infer_request_t *request, char *message,
                            size_t message_bytes)
{
    if (!valid_key(request->key)) {
        format_message(message, message_bytes,
                       "invalid model key: it must have 1 to %d bytes", SHMSTORE_KEY_MAX);
        return SHMSTORE_EKEY;
    }
    if (request->kind != INFER_KIND_MODEL && request->kind != INFER_KIND_SCRIPT)
        return -EINVAL;
    if (request->n_inputs > INFER_MAX_TENSORS || request->n_outputs > INFER_MAX_TENSORS) {
        format_message(message, message_bytes,
                       "request for '%s' names %u inputs and %u outputs; at most %u of each "
                       "fit a request",
                       request->key, request->n_inputs, request->n_outputs, INFER_MAX_TENSORS);
        return -EINVAL;
    }
    for (uint32_t i = 0; i < request->n_inputs; i++) {
        if (!valid_key(request->inputs[i])) {
            format_message(message, message_bytes,
                           "invalid input key %u of the request for '%s': it must have 1 to "
                           "%d bytes",
                           i, request->key, SHMSTORE_KEY_MAX);
            return SHMSTORE_EKEY;
        }
    }
    for (uint32_t i = 0; i < request->n_outputs; i++) {
        if (!valid_key(request->outputs[i])) {
            format_message(message, message_bytes,
                           "invalid output key %u of the request for '%s': it must have 1 to "
                           "%d bytes",
                           i, request->key, SHMSTORE_KEY_MAX);
            return SHMSTORE_EKEY;
        }
    }
    if (request->timeout_ms <= 0) {
        format_message(message, message_bytes, "invalid timeout %lld ms: it must be positive",
                       (long long)request->timeout_ms);
        return -EINVAL;
    }
    return 0;
}

typedef struct completion_wait {
    infer_slot_t *slot;
    uint32_t sequence;
    infer_header_t *header;
} completion_wait_t;

/* Ready when our request is DONE or the daemon stops. */
static int completion_ready(void *context)
{
    completion_wait_t *wait = context;
    /* Acquire: pairs with the release store of DONE by the completer, so
     * result and error are visible once this returns 1. */
    uint64_t state = shm_load_acquire(&wait->slot->state);
    if (infer_state_sequence(state) == wait->sequence &&
        infer_state_status(state) == INFER_DONE)
        return 1;
    /* Acquire: pairs with the seq_cst store in infer_segment_destroy(). */
    return shm_load_acquire(&wait->header->stopping) != 0;
}

/* Results of abandon_request(). */
enum abandon_outcome {
    ABANDON_DONE = 0,                  /* the request is DONE: read the result */
    ABANDON_FREE = 1,                  /* abandoned; the client frees the slot */
    ABANDON_LEFT_TO_WORKER = 2,        /* abandoned while taken; the worker frees the slot */
};

/* Gives up on our request (protocol steps 4 and 5). Waits while the
 * completer is between COMPLETING and DONE. */
static enum abandon_outcome abandon_request(infer_segment_t *segment, infer_slot_t *slot,
                                            uint32_t sequence)
{
    for (;;) {
        /* Acquire: pairs with the completer's release store of DONE. */
        uint64_t state = shm_load_acquire(&slot->state);
        uint32_t status = infer_state_status(state);
        if (status == INFER_DONE)
            return ABANDON_DONE;
        if (status == INFER_ABANDONED)
            return ABANDON_FREE;
        if (status == INFER_COMPLETING) {
            /* The completer writes a result of at most INFER_ERROR_BYTES and
             * stores DONE. The daemon finishes a dead worker's COMPLETING, and
             * a dead daemon ends the wait. */
            if (!infer_segment_daemon_alive(segment, LIVENESS_INTERVAL_NS))
                return ABANDON_LEFT_TO_WORKER;
            pause_ns(RETRY_PAUSE_NS);
            continue;
        }

        uint32_t target = status == INFER_TAKEN ? INFER_ABANDONED_TAKEN : INFER_ABANDONED;
        uint64_t abandoned = infer_state_pack(sequence, infer_state_worker(state), target);
        /* acq_rel: orders against the worker's CAS on the same word; exactly
         * one of the two moves succeeds. */
        if (shm_cas_acq_rel(&slot->state, &state, abandoned))
            return target == INFER_ABANDONED ? ABANDON_FREE : ABANDON_LEFT_TO_WORKER;
    }
}

static int push_ticket(infer_segment_t *segment, infer_ticket_t ticket, int64_t deadline_ns)
{
    for (;;) {
        int result = shm_mpmc_push(segment->queue, &ticket, sizeof(ticket));
        if (result != -EAGAIN)
            return result;
        if (shm_monotonic_ns() >= deadline_ns)
            return -ETIMEDOUT;
        if (!infer_segment_daemon_alive(segment, LIVENESS_INTERVAL_NS))
            return SHMSTORE_ELOST;
        pause_ns(RETRY_PAUSE_NS);
    }
}

/* Returns 1 unless every queued ticket has a worker polling the queue
 * (infer_worker_take_spin), in which case ringing would only wake idle
 * workers for nothing. Call it after the push. */
static int wake_needed(infer_segment_t *segment, uint32_t worker_count)
{
    if (worker_count > INFER_MAX_WORKERS)
        worker_count = INFER_MAX_WORKERS;

    /* acq_rel: pairs with the same bump in stop_spinning(). The bumps are
     * ordered, so either the worker's bump came first and we see its flag
     * cleared, or ours came first and its next pop sees our ticket. (Two
     * seq_cst fences would do the same, but ThreadSanitizer rejects them.) */
    shm_fetch_add_acq_rel(&segment->header->spin_handoff, 1);
    uint32_t spinning = 0;
    for (uint32_t i = 0; i < worker_count; i++) {
        /* Relaxed: ordered by the bump above. */
        spinning += shm_load_relaxed(&segment->workers[i].spinning);
    }
    return spinning == 0 || shm_mpmc_size_approx(segment->queue) > spinning;
}

/* Returns the slot of the calling process's wait estimate for model key. */
static infer_wait_estimate_t *wait_estimate(infer_segment_t *segment, const char *key)
{
    /* FNV-1a over the key; 0 is reserved for an unused entry. */
    uint64_t hash = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)key; *p != 0; p++)
        hash = (hash ^ *p) * 0x100000001b3ull;
    if (hash == 0)
        hash = 1;
    infer_wait_estimate_t *estimate = &segment->wait_estimates[hash % INFER_WAIT_ESTIMATES];
    /* Relaxed: a hint; a race between threads only mixes two estimates. */
    if (shm_load_relaxed(&estimate->key_hash) != hash) {
        shm_store_relaxed(&estimate->average_ns, 0);
        shm_store_relaxed(&estimate->key_hash, hash);
    }
    return estimate;
}

/* Returns this process's moving average of how long requests for key took
 * from submission to completion, 0 when unknown. */
static int64_t expected_wait_ns(infer_segment_t *segment, const char *key)
{
    if (segment->max_spin_ns <= 0)
        return 0;
    /* Relaxed: a hint, see wait_estimate(). */
    return shm_load_relaxed(&wait_estimate(segment, key)->average_ns);
}

/* Adds one observed wait for key to the moving average (weight 1/4). An
 * outlier counts as at most twice the spin limit, so that one slow
 * request (a model's first call, a recompilation) does not turn the spin
 * off for long. */
static void record_wait_ns(infer_segment_t *segment, const char *key, int64_t wait_ns)
{
    if (segment->max_spin_ns <= 0)
        return;
    if (wait_ns > 2 * segment->max_spin_ns)
        wait_ns = 2 * segment->max_spin_ns;
    infer_wait_estimate_t *estimate = wait_estimate(segment, key);
    /* Relaxed: a hint, see wait_estimate(). */
    int64_t average = shm_load_relaxed(&estimate->average_ns);
    average = average == 0 ? wait_ns : average + (wait_ns - average) / 4;
    shm_store_relaxed(&estimate->average_ns, average > 0 ? average : 1);
}

/* Polls for the completion until end_ns, yielding the CPU between checks,
 * so that on a machine with more runnable processes than cores a spinning
 * client leaves the cores to the workers. Returns 1 when it completed. */
static int spin_until(completion_wait_t *wait, int64_t end_ns)
{
    int64_t now = shm_monotonic_ns();
    while (now < end_ns) {
        for (int i = 0; i < SPIN_CHECKS_PER_YIELD; i++) {
            if (completion_ready(wait))
                return 1;
            shm_cpu_relax();
        }
        sched_yield();
        now = shm_monotonic_ns();
    }
    return completion_ready(wait);
}

/* The adaptive part of the client's wait, from the expected wait (this
 * process's moving average for the model) and max_spin_ns:
 *  - expected plus a quarter fits max_spin_ns: spin that long;
 *  - expected is longer, but below twice max_spin_ns (the largest wait the
 *    average records): sleep on the slot's doorbell until max_spin_ns / 2
 *    before the expected completion, then spin up to max_spin_ns. A client
 *    that is already polling when its result arrives sends its next request
 *    at once, so batches of many such clients stay large, while the sleep
 *    keeps the core free for most of the wait;
 *  - longer waits: nothing here, the caller sleeps at once.
 * Returns 0 when nothing is known about the model (the caller then spins
 * for SHMSTORE_SPIN_US), else 1. */
static int spin_for_completion(completion_wait_t *wait, int64_t expected_ns,
                               int64_t max_spin_ns, int64_t submitted_ns,
                               int64_t deadline_ns)
{
    if (expected_ns <= 0)
        return 0;
    int64_t spin_ns = expected_ns + expected_ns / 4;
    if (spin_ns <= max_spin_ns) {
        spin_until(wait, min_i64(shm_monotonic_ns() + spin_ns, deadline_ns));
        return 1;
    }
    if (expected_ns >= 2 * max_spin_ns)
        return 1;

    int64_t wake_ns = min_i64(submitted_ns + expected_ns - max_spin_ns / 2, deadline_ns);
    int64_t sleep_ns = wake_ns - shm_monotonic_ns();
    if (sleep_ns > 0) {
        shm_wait_policy_t sleep_only = {.spin_ns = 0};
        int result = shm_wait_until(&wait->slot->done, completion_ready, wait, &sleep_only,
                                    sleep_ns);
        /* Ready, or a signal that the caller's loop handles. */
        if (result != -ETIMEDOUT)
            return 1;
    }
    spin_until(wait, min_i64(shm_monotonic_ns() + max_spin_ns, deadline_ns));
    return 1;
}

/* Protocol steps 1, 4 and 5, from the client's side. */
int infer_call(infer_segment_t *segment, const infer_request_t *request, char *message,
               size_t message_bytes)
{
    format_message(message, message_bytes, "%s", "");
    infer_header_t *header = segment->header;

    int result = validate_request(request, message, message_bytes);
    if (result != 0)
        return result;
    if (!infer_segment_daemon_alive(segment, 0)) {
        format_message(message, message_bytes,
                       "the daemon of this store died or is stopping; request for '%s' "
                       "not sent",
                       request->key);
        return SHMSTORE_ELOST;
    }
    /* Relaxed: a setting the daemon writes at start; a stale value only
     * changes which error a racing caller sees. */
    uint32_t worker_count = shm_load_relaxed(&header->worker_count);
    if (worker_count == 0) {
        format_message(message, message_bytes,
                       "this store runs no inference workers; start the daemon with "
                       "`shmstore serve --workers N` to run '%s'",
                       request->key);
        return SHMSTORE_ENOWORKER;
    }

    int64_t submitted_ns = shm_monotonic_ns();
    int64_t deadline_ns = submitted_ns + request->timeout_ms * 1000000LL;
    uint32_t index;
    result = claim_slot(segment, deadline_ns, &index, message, message_bytes);
    if (result != 0)
        return result;
    infer_slot_t *slot = &segment->slots[index];
    int keep_slot = 0;                 /* 1: a worker frees the slot (ABANDONED_TAKEN) */

    /* Relaxed: we own the slot and its state is DONE, ABANDONED or IDLE,
     * which no other party changes. */
    uint64_t state = shm_load_relaxed(&slot->state);
    uint32_t sequence = infer_state_sequence(state) + 1;
    if (sequence == 0)
        sequence = 1;

    result = write_body(slot, request, submitted_ns, deadline_ns);
    if (result != 0) {
        format_message(message, message_bytes,
                       "the keys of the request for '%s' take more than the %u bytes a "
                       "request can carry; use shorter or fewer keys",
                       request->key, INFER_BODY_BYTES);
        goto release;
    }

    /* Release: pairs with the worker's acquire CAS to TAKEN, which then sees
     * the body written above. */
    shm_store_release(&slot->state, infer_state_pack(sequence, 0, INFER_SUBMITTED));

    infer_ticket_t ticket = {.slot = index, .sequence = sequence};
    result = push_ticket(segment, ticket, deadline_ns);
    if (result != 0) {
        /* Nothing was queued, so no worker can hold the request. */
        if (abandon_request(segment, slot, sequence) == ABANDON_DONE) {
            result = 0;
            goto read_result;
        }
        format_message(message, message_bytes,
                       result == -ETIMEDOUT
                           ? "the inference queue stayed full until the timeout; request "
                             "for '%s' not sent"
                           : "the daemon died while the request for '%s' was being queued",
                       request->key);
        goto release;
    }
    /* Relaxed: a statistics counter. */
    shm_fetch_add_relaxed(&header->requests_submitted, 1);
    if (wake_needed(segment, worker_count))
        shm_doorbell_ring(&header->worker_doorbell);

    completion_wait_t wait = {.slot = slot, .sequence = sequence, .header = header};
    shm_wait_policy_t policy;
    shm_wait_policy_default(&policy);
    int64_t expected_ns = expected_wait_ns(segment, request->key);
    if (spin_for_completion(&wait, expected_ns, segment->max_spin_ns, submitted_ns,
                            deadline_ns))
        policy.spin_ns = 0;    /* the adaptive spin decided; sleep at once if it missed */
    for (;;) {
        int64_t remaining_ns = deadline_ns - shm_monotonic_ns();
        if (remaining_ns > 0) {
            result = shm_wait_until(&slot->done, completion_ready, &wait, &policy,
                                    min_i64(remaining_ns, WAIT_SLICE_NS));
        } else {
            result = -ETIMEDOUT;
        }

        if (result == 0 && completion_ready(&wait) &&
            infer_state_status(shm_load_acquire(&slot->state)) == INFER_DONE)
            goto read_result;

        if (result != -EINTR && request->interrupted != NULL &&
            request->interrupted(request->interrupt_context))
            result = -EINTR;

        int daemon_alive = infer_segment_daemon_alive(segment, LIVENESS_INTERVAL_NS);
        if (result == -EINTR || !daemon_alive || deadline_ns <= shm_monotonic_ns()) {
            enum abandon_outcome outcome = abandon_request(segment, slot, sequence);
            if (outcome == ABANDON_DONE)
                goto read_result;
            keep_slot = outcome == ABANDON_LEFT_TO_WORKER;
            if (result == -EINTR) {
                format_message(message, message_bytes,
                               "a signal interrupted the wait for '%s'; request abandoned",
                               request->key);
            } else if (!daemon_alive) {
                result = SHMSTORE_ELOST;
                format_message(message, message_bytes,
                               "the daemon of this store died or stopped while '%s' was "
                               "running",
                               request->key);
            } else {
                result = -ETIMEDOUT;
                format_message(message, message_bytes,
                               "'%s' did not complete within %lld ms (%u requests queued, "
                               "%u workers); raise the timeout (SHMSTORE_MODEL_TIMEOUT, ms) "
                               "or start more workers",
                               request->key, (long long)request->timeout_ms,
                               infer_queue_depth(segment), worker_count);
            }
            goto release;
        }
    }

read_result:
    record_wait_ns(segment, request->key, shm_monotonic_ns() - submitted_ns);
    /* The acquire load that found DONE makes result and error visible. */
    result = slot->result;
    if (result != 0)
        format_message(message, message_bytes, "%.*s", (int)(INFER_ERROR_BYTES - 1),
                       slot->error);

release:
    /* Release: pairs with the acquire CAS of the next owner in claim_slot(),
     * ordering our reads of the slot before its writes. */
    if (!keep_slot)
        shm_store_release(&slot->owner, 0);
    return result;
}

/* ---- worker side ------------------------------------------------------------ */

int infer_worker_register(infer_segment_t *segment, uint32_t index, int32_t pid,
                          const char *device)
{
    if (index >= INFER_MAX_WORKERS)
        return -EINVAL;
    infer_worker_entry_t *entry = &segment->workers[index];

    snprintf(entry->device, sizeof(entry->device), "%s", device ? device : "");
    /* Relaxed: published by the release store of READY below. */
    shm_store_relaxed(&entry->pid, pid);
    /* Release: pairs with acquire loads of state by status readers, which
     * then see pid and device. */
    shm_store_release(&entry->state, INFER_WORKER_READY);
    return 0;
}

/* Ready when a ticket may be queued or the daemon stops. */
static int queue_ready(void *context)
{
    infer_segment_t *segment = context;
    /* Acquire: pairs with the seq_cst store in infer_segment_destroy(). */
    if (shm_load_acquire(&segment->header->stopping) != 0)
        return 1;
    return shm_mpmc_size_approx(segment->queue) > 0;
}

/* Copies the body of a request this worker just took (protocol step 2).
 * The client does not change the body while a worker holds the request,
 * even if it abandons it (step 5). */
static void copy_taken(const infer_slot_t *slot, infer_taken_t *out)
{
    out->submitted_ns = slot->submitted_ns;
    out->deadline_ns = slot->deadline_ns;
    out->kind = slot->kind;
    out->n_inputs = slot->n_inputs;
    out->n_outputs = slot->n_outputs;
    out->body_bytes = slot->body_bytes;
    if (out->body_bytes > INFER_BODY_BYTES)
        out->body_bytes = INFER_BODY_BYTES;
    memcpy(out->body, slot->body, out->body_bytes);
}

/* Pops tickets until one names a request that this worker can claim
 * (protocol step 2). Returns 0 with the request copied to out, or -EAGAIN
 * when the queue is empty, or another negative code of the queue. */
static int take_queued(infer_segment_t *segment, uint32_t index, infer_taken_t *out)
{
    for (;;) {
        infer_ticket_t ticket;
        uint32_t length = 0;
        int result = shm_mpmc_pop(segment->queue, &ticket, sizeof(ticket), &length);
        if (result != 0)
            return result;
        if (length != sizeof(ticket) || ticket.slot >= segment->header->slot_count)
            continue;
        infer_slot_t *slot = &segment->slots[ticket.slot];
        uint64_t expected = infer_state_pack(ticket.sequence, 0, INFER_SUBMITTED);
        uint64_t taken = infer_state_pack(ticket.sequence, index, INFER_TAKEN);
        /* acq_rel: the acquire pairs with the client's release store of
         * SUBMITTED, so the body is then visible. A failure means that
         * the ticket is stale, because the request was abandoned. */
        if (!shm_cas_acq_rel(&slot->state, &expected, taken))
            continue;
        copy_taken(slot, out);
        out->slot = ticket.slot;
        out->sequence = ticket.sequence;
        return 0;
    }
}

/* Clears the worker's polling flag; afterwards its pops see every ticket
 * whose client skipped the ring because of the flag. */
static void stop_spinning(infer_segment_t *segment, infer_worker_entry_t *entry)
{
    /* Relaxed: only this worker (or the daemon, once it is dead) writes it;
     * the bump below publishes it. */
    shm_store_relaxed(&entry->spinning, 0);
    /* acq_rel: pairs with the bump in wake_needed(). */
    shm_fetch_add_acq_rel(&segment->header->spin_handoff, 1);
}

int infer_worker_take_spin(infer_segment_t *segment, uint32_t index, int64_t timeout_ns,
                           int64_t spin_ns, infer_taken_t *out)
{
    if (index >= INFER_MAX_WORKERS)
        return -EINVAL;
    if (spin_ns <= 0 || timeout_ns == 0)
        return infer_worker_take(segment, index, timeout_ns, out);

    /* While the flag is set, clients skip the doorbell for tickets this
     * worker will pop, so the other idle workers keep sleeping. */
    infer_worker_entry_t *entry = &segment->workers[index];
    /* Relaxed: a client that misses the flag only rings once too often. */
    shm_store_relaxed(&entry->spinning, 1);

    int64_t now = shm_monotonic_ns();
    int64_t deadline_ns = timeout_ns < 0 ? INT64_MAX : now + timeout_ns;
    int64_t end = min_i64(now + spin_ns, deadline_ns);
    int result = -EAGAIN;
    while (now < end) {
        for (int i = 0; i < SPIN_CHECKS_PER_YIELD; i++) {
            result = take_queued(segment, index, out);
            if (result != -EAGAIN)
                break;
            shm_cpu_relax();
        }
        if (result != -EAGAIN)
            break;
        /* Acquire: pairs with the seq_cst store in infer_segment_destroy(). */
        if (shm_load_acquire(&segment->header->stopping) != 0)
            break;
        sched_yield();
        now = shm_monotonic_ns();
    }
    stop_spinning(segment, entry);
    if (result != -EAGAIN)
        return result;

    /* The spin found nothing: the ordinary take pops once more (after the
     * bump in stop_spinning) and then sleeps for the rest of the timeout. */
    int64_t left_ns = -1;
    if (timeout_ns > 0) {
        left_ns = deadline_ns - shm_monotonic_ns();
        if (left_ns < 0)
            left_ns = 0;
    }
    return infer_worker_take(segment, index, left_ns, out);
}

int infer_worker_take(infer_segment_t *segment, uint32_t index, int64_t timeout_ns,
                      infer_taken_t *out)
{
    if (index >= INFER_MAX_WORKERS)
        return -EINVAL;
    int64_t deadline_ns = timeout_ns < 0 ? INT64_MAX : shm_monotonic_ns() + timeout_ns;
    shm_wait_policy_t policy;
    shm_wait_policy_default(&policy);

    for (;;) {
        int result = take_queued(segment, index, out);
        if (result == 0)
            return 0;
        if (result != -EAGAIN)
            return result;

        if (!infer_segment_daemon_alive(segment, LIVENESS_INTERVAL_NS))
            return SHMSTORE_ELOST;
        int64_t remaining_ns = deadline_ns - shm_monotonic_ns();
        if (timeout_ns == 0 || remaining_ns <= 0)
            return -EAGAIN;

        result = shm_wait_until(&segment->header->worker_doorbell, queue_ready, segment,
                                &policy, min_i64(remaining_ns, WAIT_SLICE_NS));
        if (result == -EINTR)
            return -EINTR;
    }
}

/* Protocol step 3. */
int infer_worker_complete(infer_segment_t *segment, uint32_t index, uint32_t slot_index,
                          uint32_t sequence, int32_t result, const char *message)
{
    if (slot_index >= segment->header->slot_count || index >= INFER_MAX_WORKERS)
        return -EINVAL;
    infer_slot_t *slot = &segment->slots[slot_index];

    uint64_t expected = infer_state_pack(sequence, index, INFER_TAKEN);
    /* acq_rel: against the client's abandoning CAS on the same word; only
     * the winner of COMPLETING writes the result. */
    if (!shm_cas_acq_rel(&slot->state, &expected,
                         infer_state_pack(sequence, index, INFER_COMPLETING))) {
        if (expected == infer_state_pack(sequence, index, INFER_ABANDONED_TAKEN)) {
            /* The client gave up and left the slot to us (protocol step 5).
             * Relaxed: only we change an ABANDONED_TAKEN of our index, and
             * the release store of owner below publishes it. */
            shm_store_relaxed(&slot->state, infer_state_pack(sequence, index, INFER_IDLE));
            /* Release: pairs with the acquire CAS of the next owner. */
            shm_store_release(&slot->owner, 0);
        }
        return -ESTALE;
    }

    slot->result = result;
    snprintf(slot->error, sizeof(slot->error), "%s", message ? message : "");
    /* Release: pairs with the client's acquire load of DONE, which then sees
     * result and error. */
    shm_store_release(&slot->state, infer_state_pack(sequence, index, INFER_DONE));
    shm_doorbell_ring(&slot->done);
    return 0;
}

void infer_worker_count(infer_segment_t *segment, uint32_t index, uint64_t requests,
                        uint64_t batches)
{
    if (index >= INFER_MAX_WORKERS)
        return;
    /* Relaxed: statistics counters. */
    shm_fetch_add_relaxed(&segment->workers[index].requests_completed, requests);
    shm_fetch_add_relaxed(&segment->workers[index].batches_run, batches);
}

/* ---- daemon side ------------------------------------------------------------ */

/* Protocol step 6. */
/* Finishes one slot of dead worker index (protocol step 6). Returns 1 when
 * it failed a request, 0 otherwise. */
static int fail_worker_slot(infer_slot_t *slot, uint32_t index, int32_t pid,
                            infer_failed_callback callback, void *context)
{
    for (;;) {
        /* Acquire: pairs with the worker's CAS to TAKEN, after which the body
         * is the client's finished request. */
        uint64_t state = shm_load_acquire(&slot->state);
        uint32_t status = infer_state_status(state);
        uint32_t sequence = infer_state_sequence(state);
        if (infer_state_worker(state) != index)
            return 0;

        if (status == INFER_ABANDONED_TAKEN) {
            /* The client gave up, and the dead worker would have freed the
             * slot. Relaxed: published by the release store of owner. */
            shm_store_relaxed(&slot->state, infer_state_pack(sequence, index, INFER_IDLE));
            /* Release: pairs with the acquire CAS of the next owner. */
            shm_store_release(&slot->owner, 0);
            return 0;
        }
        if (status != INFER_TAKEN && status != INFER_COMPLETING)
            return 0;

        uint64_t completing = infer_state_pack(sequence, index, INFER_COMPLETING);
        /* acq_rel: against the client's abandoning CAS; when the client wins,
         * look at the slot again. A COMPLETING left by the dead worker is
         * ours to finish, because no other party touches it. */
        if (status == INFER_TAKEN && !shm_cas_acq_rel(&slot->state, &state, completing))
            continue;

        if (callback != NULL) {
            char key[SHMSTORE_KEY_MAX + 1];
            snprintf(key, sizeof(key), "%.*s", (int)SHMSTORE_KEY_MAX, slot->body);
            callback(key, context);
        }
        slot->result = SHMSTORE_EWORKER;
        snprintf(slot->error, sizeof(slot->error),
                 "inference worker %u (pid %d) died while running '%.200s'; the daemon "
                 "restarts it, so retry the request",
                 index, (int)pid, slot->body);
        /* Release: pairs with the client's acquire load of DONE. */
        shm_store_release(&slot->state, infer_state_pack(sequence, index, INFER_DONE));
        shm_doorbell_ring(&slot->done);
        return 1;
    }
}

int infer_daemon_fail_worker(infer_segment_t *segment, uint32_t index, int32_t pid,
                             infer_failed_callback callback, void *context)
{
    if (index >= INFER_MAX_WORKERS)
        return -EINVAL;

    int failed = 0;
    for (uint32_t i = 0; i < segment->header->slot_count; i++)
        failed += fail_worker_slot(&segment->slots[i], index, pid, callback, context);

    /* Clients that skipped their ring because this worker was polling get
     * it now; stop_spinning() orders the ring after their pushes. */
    infer_worker_entry_t *entry = &segment->workers[index];
    stop_spinning(segment, entry);
    shm_doorbell_ring(&segment->header->worker_doorbell);
    /* Relaxed: the worker is dead; status readers tolerate a stale pid. */
    shm_store_relaxed(&entry->pid, 0);
    /* Release: pairs with acquire loads of state by status readers. */
    shm_store_release(&entry->state, INFER_WORKER_DEAD);
    return failed;
}

static int process_is_dead(int32_t pid)
{
    /* errno is read right after the call that set it, not used as a
     * result channel. */
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* Protocol step 7. */
int infer_daemon_reclaim_clients(infer_segment_t *segment)
{
    int freed = 0;
    for (uint32_t i = 0; i < segment->header->slot_count; i++) {
        infer_slot_t *slot = &segment->slots[i];
        /* Acquire: pairs with the owner's claim CAS. */
        int32_t owner = shm_load_acquire(&slot->owner);
        /* NOTE: a pid reused by a new process keeps a dead client's slot
         * claimed until that process exits too; the slot is only wasted. */
        if (owner == 0 || !process_is_dead(owner))
            continue;

        /* Acquire: pairs with the release stores of SUBMITTED and DONE. */
        uint64_t state = shm_load_acquire(&slot->state);
        uint32_t status = infer_state_status(state);
        if (status == INFER_TAKEN || status == INFER_COMPLETING ||
            status == INFER_ABANDONED_TAKEN)
            continue;
        if (status == INFER_SUBMITTED) {
            uint64_t abandoned =
                infer_state_pack(infer_state_sequence(state), 0, INFER_ABANDONED);
            /* acq_rel: against a worker's CAS to TAKEN; the loser retries
             * in the next round. */
            if (!shm_cas_acq_rel(&slot->state, &state, abandoned))
                continue;
        }
        /* acq_rel: pairs with the next owner's claim CAS; fails harmlessly
         * if the owner changed meanwhile. */
        if (shm_cas_acq_rel(&slot->owner, &owner, 0))
            freed++;
    }
    return freed;
}

void infer_daemon_set_worker_count(infer_segment_t *segment, uint32_t count)
{
    /* Relaxed: clients read it as a hint, see infer_call(). */
    shm_store_relaxed(&segment->header->worker_count, count);
}

uint32_t infer_queue_depth(infer_segment_t *segment)
{
    return shm_mpmc_size_approx(segment->queue);
}

/* ---- status ---------------------------------------------------------------- */

int infer_worker_info(infer_segment_t *segment, uint32_t index, infer_worker_info_t *out)
{
    if (index >= INFER_MAX_WORKERS)
        return -EINVAL;
    infer_worker_entry_t *entry = &segment->workers[index];

    /* Acquire: pairs with the worker's release store of READY, after which
     * pid and device are written. */
    out->state = shm_load_acquire(&entry->state);
    /* Relaxed: status counters, each read on its own. */
    out->pid = shm_load_relaxed(&entry->pid);
    out->requests_completed = shm_load_relaxed(&entry->requests_completed);
    out->batches_run = shm_load_relaxed(&entry->batches_run);
    memcpy(out->device, entry->device, sizeof(out->device));
    out->device[sizeof(out->device) - 1] = '\0';

    out->in_flight = 0;
    for (uint32_t i = 0; i < segment->header->slot_count; i++) {
        /* Relaxed: an approximate count. */
        uint64_t state = shm_load_relaxed(&segment->slots[i].state);
        uint32_t status = infer_state_status(state);
        /* A request its client abandoned still occupies the worker until it
         * finishes, so it counts. */
        if (infer_state_worker(state) == index &&
            (status == INFER_TAKEN || status == INFER_COMPLETING ||
             status == INFER_ABANDONED_TAKEN))
            out->in_flight++;
    }
    return 0;
}

void infer_segment_info(infer_segment_t *segment, infer_segment_info_t *out)
{
    infer_header_t *header = segment->header;
    out->daemon_pid = header->daemon_pid;
    out->slot_count = header->slot_count;
    out->segment_bytes = header->segment_bytes;
    /* Relaxed: status counters, each read on its own. */
    out->worker_count = shm_load_relaxed(&header->worker_count);
    out->requests_submitted = shm_load_relaxed(&header->requests_submitted);
    out->queue_depth = infer_queue_depth(segment);

    out->slots_in_use = 0;
    for (uint32_t i = 0; i < header->slot_count; i++) {
        /* Relaxed: an approximate count. */
        if (shm_load_relaxed(&segment->slots[i].owner) != 0)
            out->slots_in_use++;
    }
}
