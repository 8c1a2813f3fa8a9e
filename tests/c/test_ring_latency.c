/*
 * test_ring_latency.c - measures ring latency and throughput between
 * processes and prints the figures. It checks only that every reply and
 * message arrives intact, never how fast.
 *
 *  - SPSC round trip: a client process sends a sequence number through one
 *    ring, and an echo process returns it incremented through another. The
 *    waits either spin (spin time 1 s) or sleep on the doorbell at once.
 *  - MPMC throughput: 4 producer and 2 consumer processes move 64-byte
 *    messages for 0.5 s, retrying with sched_yield() when the queue is
 *    full or empty.
 *
 * Under a sanitizer the counts shrink and the figures mean little.
 * ThreadSanitizer cannot see across processes, so under it the test skips.
 */
#include "test_ring_support.h"

#include <sched.h>

#include "doorbell.h"
#include "ring_mpmc.h"
#include "ring_spsc.h"
#include "spin_wait.h"

#define RING_CAPACITY 4096u
#define STALL_NS 2000000000ll
#define MPMC_PRODUCERS 4u
#define MPMC_CONSUMERS 2u
#define MPMC_CELLS 256u
#define MPMC_MESSAGE 64u
#define MPMC_RUN_NS 500000000ll

/* ---- SPSC round trip ---------------------------------------------------- */

typedef struct ping_pong {
    shm_doorbell_t request_ready;
    shm_doorbell_t reply_ready;
    shm_wait_policy_t policy;
    uint32_t rounds;
    _Alignas(SHM_CACHE_LINE) unsigned char requests[sizeof(shm_spsc_t) + RING_CAPACITY];
    _Alignas(SHM_CACHE_LINE) unsigned char replies[sizeof(shm_spsc_t) + RING_CAPACITY];
} ping_pong_t;

typedef struct pop_attempt {
    shm_spsc_t *ring;
    uint64_t value;
    int error;
} pop_attempt_t;

static int try_pop_value(void *context)
{
    pop_attempt_t *attempt = context;
    uint32_t len = 0;
    int rc = shm_spsc_pop(attempt->ring, &attempt->value, sizeof attempt->value, &len);
    if (rc == -EAGAIN)
        return 0;
    if (rc == 0 && len != sizeof attempt->value)
        rc = -EBADMSG;
    attempt->error = rc;
    return 1;
}

/* Waits for a value on ring; returns 0 or prints why not and returns -1. */
static int receive_value(shm_spsc_t *ring, shm_doorbell_t *doorbell,
                         const shm_wait_policy_t *policy, uint64_t *value, const char *role)
{
    pop_attempt_t attempt = {ring, 0, 0};
    int rc = shm_wait_until(doorbell, try_pop_value, &attempt, policy, STALL_NS);
    if (rc != 0 || attempt.error != 0) {
        fprintf(stderr, "%s: receive failed: wait %d, pop %d\n", role, rc, attempt.error);
        return -1;
    }
    *value = attempt.value;
    return 0;
}

static int send_value(shm_spsc_t *ring, shm_doorbell_t *doorbell, uint64_t value,
                      const char *role)
{
    /* One message in flight per direction, so the ring never fills. */
    int rc = shm_spsc_push(ring, &value, sizeof value);
    if (rc != 0) {
        fprintf(stderr, "%s: push failed: %d\n", role, rc);
        return -1;
    }
    shm_doorbell_ring(doorbell);
    return 0;
}

static int run_echo(void *arg)
{
    ping_pong_t *shared = arg;
    test_guard(30);
    shm_spsc_t *requests = (shm_spsc_t *)shared->requests;
    shm_spsc_t *replies = (shm_spsc_t *)shared->replies;
    for (uint32_t i = 0; i < shared->rounds; i++) {
        uint64_t value;
        if (receive_value(requests, &shared->request_ready, &shared->policy, &value, "echo") != 0)
            return 1;
        if (send_value(replies, &shared->reply_ready, value + 1, "echo") != 0)
            return 1;
    }
    return 0;
}

static int compare_int64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a;
    int64_t y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void measure_round_trip(const char *label, int64_t spin_ns, uint32_t rounds)
{
    ping_pong_t *shared = test_map_shared(sizeof *shared);
    shm_doorbell_init(&shared->request_ready);
    shm_doorbell_init(&shared->reply_ready);
    CHECK_RC(shm_spsc_init(shared->requests, RING_CAPACITY), 0);
    CHECK_RC(shm_spsc_init(shared->replies, RING_CAPACITY), 0);
    shared->policy.spin_ns = spin_ns;
    shared->rounds = rounds;

    int64_t *samples = calloc(rounds, sizeof *samples);
    CHECK(samples != NULL);

    pid_t echo = test_fork(run_echo, shared);
    shm_spsc_t *requests = (shm_spsc_t *)shared->requests;
    shm_spsc_t *replies = (shm_spsc_t *)shared->replies;
    for (uint32_t i = 0; i < rounds; i++) {
        uint64_t sent = (uint64_t)i * 7u;
        uint64_t reply = 0;
        int64_t start = shm_monotonic_ns();
        CHECK(send_value(requests, &shared->request_ready, sent, "client") == 0);
        CHECK(receive_value(replies, &shared->reply_ready, &shared->policy, &reply, "client") == 0);
        samples[i] = shm_monotonic_ns() - start;
        CHECK(reply == sent + 1);
    }
    CHECK(test_child_passed(echo, "echo"));

    qsort(samples, rounds, sizeof *samples, compare_int64);
    double mean = 0;
    for (uint32_t i = 0; i < rounds; i++)
        mean += (double)samples[i];
    mean /= rounds;
    printf("spsc round trip, %s: median %.2f us, p99 %.2f us, mean %.2f us (%u rounds)\n",
           label, (double)samples[rounds / 2] / 1e3, (double)samples[rounds * 99 / 100] / 1e3,
           mean / 1e3, rounds);
    fflush(stdout);

    free(samples);
    munmap(shared, sizeof *shared);
}

/* ---- MPMC throughput ---------------------------------------------------- */

typedef struct throughput {
    int64_t deadline_ns;
    shm_atomic_u32 producers_done;
    uint64_t sent_count[MPMC_PRODUCERS];
    uint64_t sent_sum[MPMC_PRODUCERS];
    uint64_t received_count[MPMC_CONSUMERS];
    uint64_t received_sum[MPMC_CONSUMERS];
    _Alignas(SHM_CACHE_LINE) unsigned char queue_memory[];
} throughput_t;

typedef struct throughput_role {
    throughput_t *shared;
    uint32_t index;
} throughput_role_t;

static int run_throughput_producer(void *arg)
{
    throughput_role_t *role = arg;
    throughput_t *shared = role->shared;
    shm_mpmc_t *queue = (shm_mpmc_t *)shared->queue_memory;
    test_guard(30);

    unsigned char message[MPMC_MESSAGE] = {0};
    uint64_t count = 0;
    uint64_t sum = 0;
    /* The clock is read every 256 messages. */
    while ((count & 255u) != 0 || shm_monotonic_ns() < shared->deadline_ns) {
        uint64_t value = ((uint64_t)role->index << 40) + count;
        memcpy(message, &value, sizeof value);
        int rc;
        while ((rc = shm_mpmc_push(queue, message, sizeof message)) == -EAGAIN)
            sched_yield();
        if (rc != 0) {
            fprintf(stderr, "producer %u: push failed: %d\n", role->index, rc);
            return 1;
        }
        count++;
        sum += value;
    }
    shared->sent_count[role->index] = count;
    shared->sent_sum[role->index] = sum;
    /* Release: pairs with the consumers' acquire load, so a consumer that
     * sees every producer done also sees every push. */
    shm_fetch_add_acq_rel(&shared->producers_done, 1);
    return 0;
}

static int run_throughput_consumer(void *arg)
{
    throughput_role_t *role = arg;
    throughput_t *shared = role->shared;
    shm_mpmc_t *queue = (shm_mpmc_t *)shared->queue_memory;
    test_guard(30);

    unsigned char message[MPMC_MESSAGE];
    uint64_t count = 0;
    uint64_t sum = 0;
    for (;;) {
        uint32_t len = 0;
        int rc = shm_mpmc_pop(queue, message, sizeof message, &len);
        if (rc == -EAGAIN) {
            /* Acquire: pairs with the producers' release increment. The
             * queue is re-checked after it, so no message is left. */
            if (shm_load_acquire(&shared->producers_done) == MPMC_PRODUCERS &&
                shm_mpmc_pop(queue, message, sizeof message, &len) == -EAGAIN)
                break;
            sched_yield();
            continue;
        }
        if (rc != 0 || len != MPMC_MESSAGE) {
            fprintf(stderr, "consumer %u: pop failed: %d, length %u\n", role->index, rc, len);
            return 1;
        }
        uint64_t value;
        memcpy(&value, message, sizeof value);
        count++;
        sum += value;
    }
    shared->received_count[role->index] = count;
    shared->received_sum[role->index] = sum;
    return 0;
}

static void measure_mpmc_throughput(void)
{
    size_t bytes = sizeof(throughput_t) + shm_mpmc_footprint(MPMC_CELLS, MPMC_MESSAGE);
    throughput_t *shared = test_map_shared(bytes);
    CHECK_RC(shm_mpmc_init(shared->queue_memory, MPMC_CELLS, MPMC_MESSAGE), 0);

    throughput_role_t producers[MPMC_PRODUCERS];
    throughput_role_t consumers[MPMC_CONSUMERS];
    pid_t producer_pids[MPMC_PRODUCERS];
    pid_t consumer_pids[MPMC_CONSUMERS];

    int64_t start = shm_monotonic_ns();
    shared->deadline_ns = start + MPMC_RUN_NS;
    for (uint32_t i = 0; i < MPMC_CONSUMERS; i++) {
        consumers[i] = (throughput_role_t){shared, i};
        consumer_pids[i] = test_fork(run_throughput_consumer, &consumers[i]);
    }
    for (uint32_t i = 0; i < MPMC_PRODUCERS; i++) {
        producers[i] = (throughput_role_t){shared, i};
        producer_pids[i] = test_fork(run_throughput_producer, &producers[i]);
    }
    int all_passed = 1;
    for (uint32_t i = 0; i < MPMC_PRODUCERS; i++)
        all_passed &= test_child_passed(producer_pids[i], "producer");
    for (uint32_t i = 0; i < MPMC_CONSUMERS; i++)
        all_passed &= test_child_passed(consumer_pids[i], "consumer");
    CHECK(all_passed);
    double seconds = (double)(shm_monotonic_ns() - start) / 1e9;

    uint64_t sent = 0, sent_sum = 0, received = 0, received_sum = 0;
    for (uint32_t i = 0; i < MPMC_PRODUCERS; i++) {
        sent += shared->sent_count[i];
        sent_sum += shared->sent_sum[i];
    }
    for (uint32_t i = 0; i < MPMC_CONSUMERS; i++) {
        received += shared->received_count[i];
        received_sum += shared->received_sum[i];
    }
    printf("mpmc throughput, %u producers, %u consumers, %u-byte messages: "
           "%.2f million per s (%" PRIu64 " in %.2f s)\n", MPMC_PRODUCERS, MPMC_CONSUMERS,
           MPMC_MESSAGE, (double)received / seconds / 1e6, received, seconds);
    fflush(stdout);

    CHECK(received == sent);
    CHECK(received_sum == sent_sum);
    munmap(shared, bytes);
}

int main(void)
{
    if (TEST_UNDER_TSAN) {
        printf("test_ring_latency: skipped under ThreadSanitizer, which does not see "
               "accesses made by other processes\n");
        return TEST_EXIT_SKIP;
    }
    test_guard(60);

    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    printf("test_ring_latency: %ld online cores%s\n", cores,
           TEST_UNDER_SANITIZER ? "; built with a sanitizer, figures are not representative"
                                : "");
    uint32_t scale = TEST_UNDER_SANITIZER ? 10u : 1u;

    measure_round_trip("both sides spinning", 1000000000ll, 100000u / scale);
    measure_round_trip("both sides sleeping on the doorbell", 0, 5000u / scale);
    measure_mpmc_throughput();

    printf("test_ring_latency: passed\n");
    return 0;
}
