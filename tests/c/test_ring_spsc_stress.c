/*
 * test_ring_spsc_stress.c - a producer and a consumer pass messages
 * through one SPSC ring for about a second, first as two forked processes
 * (the ring in MAP_SHARED memory), then as two threads (so that
 * ThreadSanitizer can check the memory orders).
 *
 * Message sizes are picked so that records end exactly at the end of the
 * data area, leave only a header's room before it, or overrun it by a few
 * bytes, as well as at random. Every message carries its sequence number
 * and the checksum of its payload. The consumer verifies each one, and
 * both sides' totals must agree at the end. Both sides wait with
 * shm_wait_until() and a random spin time, so the doorbell sleep is
 * exercised as well as the spin.
 */
#include "test_ring_support.h"

#include <pthread.h>

#include "doorbell.h"
#include "ring_spsc.h"
#include "spin_wait.h"

#define CAPACITY 4096u
#define MIN_MESSAGE 16u                /* sequence number + checksum */
#define END_SEQUENCE UINT64_MAX
#define RUN_NS 1000000000ll            /* producer's run time per mode */
#define STALL_NS 2000000000ll          /* maximum wait before the test fails */
#define MAX_MESSAGES 5000000ull

typedef struct side_totals {
    uint64_t count;
    uint64_t checksum_sum;
    uint64_t checksum_xor;
} side_totals_t;

typedef struct stress_shared {
    shm_doorbell_t data_ready;         /* rung by the producer after a push */
    shm_doorbell_t space_ready;        /* rung by the consumer after a pop */
    uint64_t seed;
    int64_t deadline_ns;               /* CLOCK_MONOTONIC; the producer stops then */

    /* Written by each side before it exits, read by main after joining. */
    side_totals_t produced;
    side_totals_t consumed;
    uint64_t exact_fits;               /* records that ended at the end of the area */
    uint64_t paddings;                 /* records that started after padding */

    _Alignas(SHM_CACHE_LINE) unsigned char ring_memory[];
} stress_shared_t;

static shm_spsc_t *ring_of(stress_shared_t *shared)
{
    return (shm_spsc_t *)shared->ring_memory;
}

/* A push or pop attempt that shm_wait_until() repeats until it succeeds. */
typedef struct attempt {
    shm_spsc_t *ring;
    unsigned char *buf;
    uint32_t len;
    int error;                         /* an unexpected return code, else 0 */
} attempt_t;

static int try_push(void *context)
{
    attempt_t *attempt = context;
    int rc = shm_spsc_push(attempt->ring, attempt->buf, attempt->len);
    if (rc == -EAGAIN)
        return 0;
    attempt->error = rc;
    return 1;
}

static int try_pop(void *context)
{
    attempt_t *attempt = context;
    int rc = shm_spsc_pop(attempt->ring, attempt->buf, CAPACITY, &attempt->len);
    if (rc == -EAGAIN)
        return 0;
    attempt->error = rc;
    return 1;
}

/* Returns a payload length aimed at the wrap-around point, or at random. */
static uint32_t pick_length(shm_spsc_t *ring, uint64_t *random_state)
{
    uint32_t max = shm_spsc_max_message(ring);
    /* Relaxed: the producer reads its own index. */
    uint64_t offset = shm_load_relaxed(&ring->tail) % CAPACITY;
    int64_t to_end = (int64_t)(CAPACITY - offset);

    int64_t length;
    switch (test_random(random_state) % 8) {
    case 0: /* the record ends exactly at the end */
        length = to_end - 8;
        break;
    case 1: /* payload rounds up to an exact fit */
        length = to_end - 8 - test_random_range(random_state, 1, 7);
        break;
    case 2: /* only a header's room stays before the end */
        length = to_end - 16;
        break;
    case 3: /* a few bytes too long: padding, then offset 0 */
        length = to_end - 8 + test_random_range(random_state, 1, 8);
        break;
    default:
        length = -1;
        break;
    }
    if (length < (int64_t)MIN_MESSAGE || length > (int64_t)max)
        length = test_random_range(random_state, MIN_MESSAGE, max);
    return (uint32_t)length;
}

static shm_wait_policy_t random_policy(uint64_t *random_state)
{
    /* Half the waits sleep at once, half spin up to 20 us first. */
    shm_wait_policy_t policy = {.spin_ns = (test_random(random_state) & 1) ? 20000 : 0};
    return policy;
}

static int run_producer(void *arg)
{
    stress_shared_t *shared = arg;
    shm_spsc_t *ring = ring_of(shared);
    uint64_t random_state = shared->seed;
    unsigned char buf[CAPACITY];
    side_totals_t totals = {0, 0, 0};

    for (uint64_t sequence = 0;; sequence++) {
        int last = sequence >= MAX_MESSAGES || shm_monotonic_ns() >= shared->deadline_ns;
        uint32_t len;
        if (last) {
            uint64_t end = END_SEQUENCE;
            memcpy(buf, &end, sizeof end);
            memcpy(buf + 8, &sequence, sizeof sequence);
            len = MIN_MESSAGE;
        } else {
            len = pick_length(ring, &random_state);
            for (uint32_t i = MIN_MESSAGE; i < len; i++)
                buf[i] = (unsigned char)test_random(&random_state);
            uint64_t checksum = test_checksum(buf + MIN_MESSAGE, len - MIN_MESSAGE);
            memcpy(buf, &sequence, sizeof sequence);
            memcpy(buf + 8, &checksum, sizeof checksum);
            totals.count++;
            totals.checksum_sum += checksum;
            totals.checksum_xor ^= checksum ^ sequence;
        }

        uint64_t tail_before = shm_load_relaxed(&ring->tail);
        attempt_t attempt = {ring, buf, len, 0};
        shm_wait_policy_t policy = random_policy(&random_state);
        int rc = shm_wait_until(&shared->space_ready, try_push, &attempt, &policy, STALL_NS);
        if (rc != 0 || attempt.error != 0) {
            fprintf(stderr, "producer: push of message %" PRIu64 " (%u bytes) failed: "
                    "wait %d, push %d; a timeout means no space for 2 s\n",
                    sequence, len, rc, attempt.error);
            return 1;
        }
        shm_doorbell_ring(&shared->data_ready);

        uint64_t tail_after = shm_load_relaxed(&ring->tail);
        if (tail_after % CAPACITY == 0)
            shared->exact_fits++;
        uint64_t record = 8u + ((len + 7u) & ~7u);  /* header + padded payload */
        if (tail_after - tail_before > record)
            shared->paddings++;
        if (last)
            break;
    }

    shared->produced = totals;
    return 0;
}

static int run_consumer(void *arg)
{
    stress_shared_t *shared = arg;
    shm_spsc_t *ring = ring_of(shared);
    uint64_t random_state = shared->seed ^ 0x5a5a5a5a5a5a5a5aull;
    unsigned char buf[CAPACITY];
    side_totals_t totals = {0, 0, 0};

    for (uint64_t expected = 0;; expected++) {
        attempt_t attempt = {ring, buf, 0, 0};
        shm_wait_policy_t policy = random_policy(&random_state);
        int rc = shm_wait_until(&shared->data_ready, try_pop, &attempt, &policy, STALL_NS);
        if (rc != 0 || attempt.error != 0) {
            fprintf(stderr, "consumer: pop of message %" PRIu64 " failed: wait %d, pop %d; "
                    "a timeout means no message for 2 s (lost wake-up?)\n",
                    expected, rc, attempt.error);
            return 1;
        }
        shm_doorbell_ring(&shared->space_ready);

        if (attempt.len < MIN_MESSAGE) {
            fprintf(stderr, "consumer: message %" PRIu64 " has %u bytes, below %u\n",
                    expected, attempt.len, MIN_MESSAGE);
            return 1;
        }
        uint64_t sequence;
        uint64_t checksum;
        memcpy(&sequence, buf, sizeof sequence);
        memcpy(&checksum, buf + 8, sizeof checksum);

        if (sequence == END_SEQUENCE) {
            if (checksum != expected) {
                fprintf(stderr, "consumer: end marker says %" PRIu64 " messages, "
                        "received %" PRIu64 "\n", checksum, expected);
                return 1;
            }
            break;
        }
        if (sequence != expected) {
            fprintf(stderr, "consumer: expected message %" PRIu64 ", got %" PRIu64 "\n",
                    expected, sequence);
            return 1;
        }
        uint64_t actual = test_checksum(buf + MIN_MESSAGE, attempt.len - MIN_MESSAGE);
        if (actual != checksum) {
            fprintf(stderr, "consumer: message %" PRIu64 " (%u bytes) has checksum %016"
                    PRIx64 ", sender wrote %016" PRIx64 "\n",
                    sequence, attempt.len, actual, checksum);
            return 1;
        }
        totals.count++;
        totals.checksum_sum += checksum;
        totals.checksum_xor ^= checksum ^ sequence;
    }

    shared->consumed = totals;
    return 0;
}

static void *producer_thread(void *arg)
{
    return (void *)(intptr_t)run_producer(arg);
}

static void *consumer_thread(void *arg)
{
    return (void *)(intptr_t)run_consumer(arg);
}

static int child_producer(void *arg)
{
    test_guard(20);
    return run_producer(arg);
}

static int child_consumer(void *arg)
{
    test_guard(20);
    return run_consumer(arg);
}

static void run_mode(stress_shared_t *shared, uint64_t seed, int use_processes)
{
    const char *mode = use_processes ? "processes" : "threads";
    CHECK_RC(shm_spsc_init(shared->ring_memory, CAPACITY), 0);
    shm_doorbell_init(&shared->data_ready);
    shm_doorbell_init(&shared->space_ready);
    shared->seed = seed;
    shared->deadline_ns = shm_monotonic_ns() + RUN_NS;
    memset(&shared->produced, 0, sizeof shared->produced);
    memset(&shared->consumed, 0, sizeof shared->consumed);
    shared->exact_fits = 0;
    shared->paddings = 0;

    int64_t start = shm_monotonic_ns();
    if (use_processes) {
        pid_t consumer = test_fork(child_consumer, shared);
        pid_t producer = test_fork(child_producer, shared);
        int producer_ok = test_child_passed(producer, "producer");
        int consumer_ok = test_child_passed(consumer, "consumer");
        CHECK(producer_ok);
        CHECK(consumer_ok);
    } else {
        pthread_t consumer;
        pthread_t producer;
        void *producer_rc;
        void *consumer_rc;
        CHECK_RC(pthread_create(&consumer, NULL, consumer_thread, shared), 0);
        CHECK_RC(pthread_create(&producer, NULL, producer_thread, shared), 0);
        CHECK_RC(pthread_join(producer, &producer_rc), 0);
        CHECK_RC(pthread_join(consumer, &consumer_rc), 0);
        CHECK(producer_rc == NULL);
        CHECK(consumer_rc == NULL);
    }
    double seconds = (double)(shm_monotonic_ns() - start) / 1e9;

    printf("spsc stress (%s): %" PRIu64 " messages in %.2f s (%.0f per s), "
           "%" PRIu64 " exact fits, %" PRIu64 " paddings\n",
           mode, shared->consumed.count, seconds, (double)shared->consumed.count / seconds,
           shared->exact_fits, shared->paddings);
    fflush(stdout);

    CHECK(shared->consumed.count == shared->produced.count);
    CHECK(shared->consumed.checksum_sum == shared->produced.checksum_sum);
    CHECK(shared->consumed.checksum_xor == shared->produced.checksum_xor);
    CHECK(shared->produced.count >= 1000);
    CHECK(shared->exact_fits > 0);
    CHECK(shared->paddings > 0);
}

int main(void)
{
    test_guard(60);
    uint64_t seed = test_seed("test_ring_spsc_stress");
    size_t bytes = sizeof(stress_shared_t) + shm_spsc_footprint(CAPACITY);
    stress_shared_t *shared = test_map_shared(bytes);

    if (TEST_UNDER_TSAN)
        printf("spsc stress (processes): skipped under ThreadSanitizer, which does not "
               "see accesses made by other processes\n");
    else
        run_mode(shared, seed, 1);
    run_mode(shared, seed, 0);

    munmap(shared, bytes);
    printf("test_ring_spsc_stress: passed\n");
    return 0;
}
