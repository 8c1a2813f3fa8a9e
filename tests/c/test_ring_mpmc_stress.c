/*
 * test_ring_mpmc_stress.c - 4 producers and 2 consumers share one MPMC
 * queue for about a second, first as forked processes (the queue in
 * MAP_SHARED memory), then as threads (so that ThreadSanitizer can check
 * the memory orders).
 *
 * Every message carries a unique id (producer << 32 | number) and the
 * checksum of a random payload. Consumers verify each checksum, check
 * that each producer's messages reach them in order, and count every id
 * in a shared table. At the end every id sent must have been received
 * exactly once, and the sums and xors of ids and checksums on both sides
 * must agree.
 */
#include "test_ring_support.h"

#include <pthread.h>

#include "doorbell.h"
#include "ring_mpmc.h"
#include "spin_wait.h"

#define PRODUCERS 4u
#define CONSUMERS 2u
#define CELLS 64u
#define CELL_BYTES 200u
#define HEADER_BYTES 16u               /* id + checksum */
#define END_ID UINT64_MAX
#define MAX_PER_PRODUCER 200000u
#define RUN_NS 1000000000ll
#define STALL_NS 2000000000ll          /* maximum wait before the test fails */

typedef struct side_totals {
    uint64_t count;
    uint64_t id_sum;
    uint64_t id_xor;
    uint64_t checksum_sum;
} side_totals_t;

typedef struct stress_shared {
    shm_doorbell_t items_ready;        /* rung by producers after a push */
    shm_doorbell_t space_ready;        /* rung by consumers after a pop */
    uint64_t seed;
    int64_t deadline_ns;               /* CLOCK_MONOTONIC; producers stop then */
    shm_atomic_u32 producers_done;

    /* Each role writes its own slot before it exits; main reads them
     * after joining. */
    side_totals_t produced[PRODUCERS];
    side_totals_t consumed[CONSUMERS];

    /* How often each id was received, indexed producer * MAX + number. */
    shm_atomic_u32 receipts[PRODUCERS * MAX_PER_PRODUCER];

    _Alignas(SHM_CACHE_LINE) unsigned char queue_memory[];
} stress_shared_t;

typedef struct role {
    stress_shared_t *shared;
    uint32_t index;
} role_t;

static shm_mpmc_t *queue_of(stress_shared_t *shared)
{
    return (shm_mpmc_t *)shared->queue_memory;
}

typedef struct attempt {
    shm_mpmc_t *queue;
    unsigned char *buf;
    uint32_t len;
    int error;                         /* an unexpected return code, else 0 */
} attempt_t;

static int try_push(void *context)
{
    attempt_t *attempt = context;
    int rc = shm_mpmc_push(attempt->queue, attempt->buf, attempt->len);
    if (rc == -EAGAIN)
        return 0;
    attempt->error = rc;
    return 1;
}

static int try_pop(void *context)
{
    attempt_t *attempt = context;
    int rc = shm_mpmc_pop(attempt->queue, attempt->buf, CELL_BYTES, &attempt->len);
    if (rc == -EAGAIN)
        return 0;
    attempt->error = rc;
    return 1;
}

static int push_message(stress_shared_t *shared, unsigned char *buf, uint32_t len,
                        uint64_t *random_state)
{
    attempt_t attempt = {queue_of(shared), buf, len, 0};
    shm_wait_policy_t policy = {.spin_ns = (test_random(random_state) & 1) ? 20000 : 0};
    int rc = shm_wait_until(&shared->space_ready, try_push, &attempt, &policy, STALL_NS);
    if (rc != 0 || attempt.error != 0) {
        fprintf(stderr, "producer: push failed: wait %d, push %d; a timeout means no "
                "free cell for 2 s\n", rc, attempt.error);
        return -1;
    }
    shm_doorbell_ring(&shared->items_ready);
    return 0;
}

static int run_producer(role_t *role)
{
    stress_shared_t *shared = role->shared;
    uint64_t random_state = shared->seed + role->index;
    unsigned char buf[CELL_BYTES];
    side_totals_t totals = {0, 0, 0, 0};

    for (uint32_t number = 0; number < MAX_PER_PRODUCER; number++) {
        if (shm_monotonic_ns() >= shared->deadline_ns)
            break;
        uint64_t id = ((uint64_t)role->index << 32) | number;
        uint32_t len = test_random_range(&random_state, HEADER_BYTES, CELL_BYTES);
        for (uint32_t i = HEADER_BYTES; i < len; i++)
            buf[i] = (unsigned char)test_random(&random_state);
        uint64_t checksum = test_checksum(buf + HEADER_BYTES, len - HEADER_BYTES);
        memcpy(buf, &id, sizeof id);
        memcpy(buf + 8, &checksum, sizeof checksum);

        if (push_message(shared, buf, len, &random_state) != 0)
            return 1;
        totals.count++;
        totals.id_sum += id;
        totals.id_xor ^= id;
        totals.checksum_sum += checksum;
    }
    shared->produced[role->index] = totals;

    /* acq_rel: the release half publishes this producer's pushes to the
     * last producer, whose acquire half sees all of them done; the end
     * markers it pushes then take the last tickets. */
    uint32_t done = shm_fetch_add_acq_rel(&shared->producers_done, 1) + 1;
    if (done == PRODUCERS) {
        uint64_t end = END_ID;
        memcpy(buf, &end, sizeof end);
        for (uint32_t i = 0; i < CONSUMERS; i++)
            if (push_message(shared, buf, HEADER_BYTES, &random_state) != 0)
                return 1;
    }
    return 0;
}

static int run_consumer(role_t *role)
{
    stress_shared_t *shared = role->shared;
    uint64_t random_state = shared->seed ^ (0xc0ffeeull + role->index);
    unsigned char buf[CELL_BYTES];
    side_totals_t totals = {0, 0, 0, 0};
    int64_t last_number[PRODUCERS];
    for (uint32_t p = 0; p < PRODUCERS; p++)
        last_number[p] = -1;

    for (;;) {
        attempt_t attempt = {queue_of(shared), buf, 0, 0};
        shm_wait_policy_t policy = {.spin_ns = (test_random(&random_state) & 1) ? 20000 : 0};
        int rc = shm_wait_until(&shared->items_ready, try_pop, &attempt, &policy, STALL_NS);
        if (rc != 0 || attempt.error != 0) {
            fprintf(stderr, "consumer %u: pop failed: wait %d, pop %d; a timeout means "
                    "no message for 2 s (lost wake-up?)\n", role->index, rc, attempt.error);
            return 1;
        }
        shm_doorbell_ring(&shared->space_ready);

        if (attempt.len < HEADER_BYTES) {
            fprintf(stderr, "consumer %u: message of %u bytes, below %u\n", role->index,
                    attempt.len, HEADER_BYTES);
            return 1;
        }
        uint64_t id;
        uint64_t checksum;
        memcpy(&id, buf, sizeof id);
        memcpy(&checksum, buf + 8, sizeof checksum);
        if (id == END_ID)
            break;

        uint32_t producer = (uint32_t)(id >> 32);
        uint32_t number = (uint32_t)id;
        if (producer >= PRODUCERS || number >= MAX_PER_PRODUCER) {
            fprintf(stderr, "consumer %u: invalid id %016" PRIx64 "\n", role->index, id);
            return 1;
        }
        if ((int64_t)number <= last_number[producer]) {
            fprintf(stderr, "consumer %u: message %u of producer %u after message %" PRId64
                    "\n", role->index, number, producer, last_number[producer]);
            return 1;
        }
        last_number[producer] = number;

        uint64_t actual = test_checksum(buf + HEADER_BYTES, attempt.len - HEADER_BYTES);
        if (actual != checksum) {
            fprintf(stderr, "consumer %u: id %016" PRIx64 " has checksum %016" PRIx64
                    ", sender wrote %016" PRIx64 "\n", role->index, id, actual, checksum);
            return 1;
        }

        /* Relaxed: main reads the table after joining every role. */
        shm_fetch_add_relaxed(&shared->receipts[producer * MAX_PER_PRODUCER + number], 1);
        totals.count++;
        totals.id_sum += id;
        totals.id_xor ^= id;
        totals.checksum_sum += checksum;
    }
    shared->consumed[role->index] = totals;
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

static void check_conservation(stress_shared_t *shared)
{
    side_totals_t sent = {0, 0, 0, 0};
    side_totals_t received = {0, 0, 0, 0};
    for (uint32_t p = 0; p < PRODUCERS; p++) {
        sent.count += shared->produced[p].count;
        sent.id_sum += shared->produced[p].id_sum;
        sent.id_xor ^= shared->produced[p].id_xor;
        sent.checksum_sum += shared->produced[p].checksum_sum;
    }
    for (uint32_t c = 0; c < CONSUMERS; c++) {
        received.count += shared->consumed[c].count;
        received.id_sum += shared->consumed[c].id_sum;
        received.id_xor ^= shared->consumed[c].id_xor;
        received.checksum_sum += shared->consumed[c].checksum_sum;
    }
    CHECK(received.count == sent.count);
    CHECK(received.id_sum == sent.id_sum);
    CHECK(received.id_xor == sent.id_xor);
    CHECK(received.checksum_sum == sent.checksum_sum);

    /* Exactly once: every id sent was received once, no other id at all. */
    for (uint32_t p = 0; p < PRODUCERS; p++) {
        for (uint32_t number = 0; number < MAX_PER_PRODUCER; number++) {
            uint32_t receipts = shm_load_relaxed(&shared->receipts[p * MAX_PER_PRODUCER + number]);
            uint32_t expected = number < shared->produced[p].count ? 1u : 0u;
            if (receipts != expected) {
                fprintf(stderr, "message %u of producer %u received %u times, expected %u\n",
                        number, p, receipts, expected);
                exit(1);
            }
        }
        CHECK(shared->produced[p].count >= 100);
    }
}

static void run_mode(stress_shared_t *shared, uint64_t seed, int use_processes)
{
    const char *mode = use_processes ? "processes" : "threads";
    CHECK_RC(shm_mpmc_init(shared->queue_memory, CELLS, CELL_BYTES), 0);
    shm_doorbell_init(&shared->items_ready);
    shm_doorbell_init(&shared->space_ready);
    shared->seed = seed;
    shared->deadline_ns = shm_monotonic_ns() + RUN_NS;
    shm_store_relaxed(&shared->producers_done, 0);
    memset(shared->produced, 0, sizeof shared->produced);
    memset(shared->consumed, 0, sizeof shared->consumed);
    for (size_t i = 0; i < PRODUCERS * MAX_PER_PRODUCER; i++)
        shm_store_relaxed(&shared->receipts[i], 0);

    role_t producers[PRODUCERS];
    role_t consumers[CONSUMERS];
    for (uint32_t i = 0; i < PRODUCERS; i++)
        producers[i] = (role_t){shared, i};
    for (uint32_t i = 0; i < CONSUMERS; i++)
        consumers[i] = (role_t){shared, i};

    int64_t start = shm_monotonic_ns();
    if (use_processes) {
        pid_t consumer_pids[CONSUMERS];
        pid_t producer_pids[PRODUCERS];
        for (uint32_t i = 0; i < CONSUMERS; i++)
            consumer_pids[i] = test_fork(child_consumer, &consumers[i]);
        for (uint32_t i = 0; i < PRODUCERS; i++)
            producer_pids[i] = test_fork(child_producer, &producers[i]);
        int all_passed = 1;
        for (uint32_t i = 0; i < PRODUCERS; i++)
            all_passed &= test_child_passed(producer_pids[i], "producer");
        for (uint32_t i = 0; i < CONSUMERS; i++)
            all_passed &= test_child_passed(consumer_pids[i], "consumer");
        CHECK(all_passed);
    } else {
        pthread_t consumer_threads[CONSUMERS];
        pthread_t producer_threads[PRODUCERS];
        for (uint32_t i = 0; i < CONSUMERS; i++)
            CHECK_RC(pthread_create(&consumer_threads[i], NULL, consumer_thread, &consumers[i]), 0);
        for (uint32_t i = 0; i < PRODUCERS; i++)
            CHECK_RC(pthread_create(&producer_threads[i], NULL, producer_thread, &producers[i]), 0);
        int all_passed = 1;
        for (uint32_t i = 0; i < PRODUCERS; i++) {
            void *rc;
            CHECK_RC(pthread_join(producer_threads[i], &rc), 0);
            all_passed &= rc == NULL;
        }
        for (uint32_t i = 0; i < CONSUMERS; i++) {
            void *rc;
            CHECK_RC(pthread_join(consumer_threads[i], &rc), 0);
            all_passed &= rc == NULL;
        }
        CHECK(all_passed);
    }
    double seconds = (double)(shm_monotonic_ns() - start) / 1e9;

    uint64_t total = 0;
    for (uint32_t c = 0; c < CONSUMERS; c++)
        total += shared->consumed[c].count;
    printf("mpmc stress (%s, %u producers, %u consumers): %" PRIu64 " messages in %.2f s "
           "(%.0f per s)\n", mode, PRODUCERS, CONSUMERS, total, seconds,
           (double)total / seconds);
    fflush(stdout);

    check_conservation(shared);
}

int main(void)
{
    test_guard(60);
    uint64_t seed = test_seed("test_ring_mpmc_stress");
    size_t bytes = sizeof(stress_shared_t) + shm_mpmc_footprint(CELLS, CELL_BYTES);
    stress_shared_t *shared = test_map_shared(bytes);

    if (TEST_UNDER_TSAN)
        printf("mpmc stress (processes): skipped under ThreadSanitizer, which does not "
               "see accesses made by other processes\n");
    else
        run_mode(shared, seed, 1);
    run_mode(shared, seed, 0);

    munmap(shared, bytes);
    printf("test_ring_mpmc_stress: passed\n");
    return 0;
}
