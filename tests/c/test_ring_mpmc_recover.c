/*
 * test_ring_mpmc_recover.c - kills producer and consumer processes of an
 * MPMC queue with SIGKILL at random moments, recovers their cells with
 * shm_mpmc_recover(), and checks that the queue neither stalls nor
 * delivers a torn or duplicated message.
 *
 * Each round forks 2 producers and 2 consumers, lets them run for a few
 * milliseconds, kills all four, recovers each dead pid and drains the
 * queue. Messages are large (up to 32 KiB), so most kills land inside a
 * copy, with a cell claimed. A producer marks a message committed after
 * its push returns, and a consumer marks it received after verifying it.
 * A kill may lose at most one message per consumer (claimed or popped
 * but not yet marked). It may also add at most one uncommitted message
 * per producer (published but not yet marked). The checks allow exactly
 * that much.
 */
#include "test_ring_support.h"

#include <sched.h>
#include <time.h>

#include "ring_mpmc.h"
#include "spin_wait.h"

#define CELLS 8u
#define CELL_BYTES (32u * 1024u)
#define PRODUCERS 2u
#define CONSUMERS 2u
#define ROUNDS 100u                   /* gave 5 to 24 recoveries per run in testing */
#define MAX_PER_PRODUCER 4096u        /* messages one producer sends per round at most */
#define WORD_BYTES 8u

typedef struct recover_shared {
    uint64_t seed;
    /* Indexed by round, producer and number: set by the producer after its
     * push returned, and by a consumer or main after verifying the message. */
    shm_atomic_u32 committed[ROUNDS][PRODUCERS][MAX_PER_PRODUCER];
    shm_atomic_u32 received[ROUNDS][PRODUCERS][MAX_PER_PRODUCER];
    _Alignas(SHM_CACHE_LINE) unsigned char queue_memory[];
} recover_shared_t;

typedef struct role {
    recover_shared_t *shared;
    uint32_t round;
    uint32_t index;
} role_t;

static shm_mpmc_t *queue_of(recover_shared_t *shared)
{
    return (shm_mpmc_t *)shared->queue_memory;
}

/* Word i of a message's payload, after the id in word 0. */
static uint64_t payload_word(uint64_t id, uint32_t i)
{
    return id ^ ((uint64_t)i * 0x9e3779b97f4a7c15ull);
}

static uint64_t make_id(uint32_t round, uint32_t producer, uint32_t number)
{
    return ((uint64_t)round << 40) | ((uint64_t)producer << 32) | number;
}

/* Verifies a message and marks it received. Returns 0, or -1 after
 * printing what is wrong. */
static int receive(recover_shared_t *shared, const uint64_t *words, uint32_t len,
                   const char *who)
{
    if (len < WORD_BYTES || len % WORD_BYTES != 0) {
        fprintf(stderr, "%s: message of %u bytes, expected a positive multiple of %u\n", who,
                len, WORD_BYTES);
        return -1;
    }
    uint64_t id = words[0];
    uint32_t round = (uint32_t)(id >> 40);
    uint32_t producer = (uint32_t)(id >> 32) & 0xffu;
    uint32_t number = (uint32_t)id;
    if (round >= ROUNDS || producer >= PRODUCERS || number >= MAX_PER_PRODUCER) {
        fprintf(stderr, "%s: invalid id %016" PRIx64 "\n", who, id);
        return -1;
    }
    for (uint32_t i = 1; i < len / WORD_BYTES; i++) {
        if (words[i] != payload_word(id, i)) {
            fprintf(stderr, "%s: message %016" PRIx64 " is torn at word %u of %u\n", who, id, i,
                    len / WORD_BYTES);
            return -1;
        }
    }
    /* Relaxed: main reads the table after every child is dead. */
    uint32_t before = shm_fetch_add_relaxed(&shared->received[round][producer][number], 1);
    if (before != 0) {
        fprintf(stderr, "%s: message %016" PRIx64 " received twice\n", who, id);
        return -1;
    }
    return 0;
}

static int run_producer(void *arg)
{
    role_t *role = arg;
    recover_shared_t *shared = role->shared;
    shm_mpmc_t *queue = queue_of(shared);
    uint64_t random_state = shared->seed ^ make_id(role->round, role->index, 0);
    static uint64_t words[CELL_BYTES / WORD_BYTES];

    for (uint32_t number = 0; number < MAX_PER_PRODUCER; number++) {
        uint64_t id = make_id(role->round, role->index, number);
        uint32_t count = test_random_range(&random_state, 1, CELL_BYTES / WORD_BYTES);
        words[0] = id;
        for (uint32_t i = 1; i < count; i++)
            words[i] = payload_word(id, i);

        int rc;
        while ((rc = shm_mpmc_push(queue, words, count * WORD_BYTES)) == -EAGAIN)
            sched_yield();
        if (rc != 0) {
            fprintf(stderr, "producer %u: push failed: %d\n", role->index, rc);
            return 1;
        }
        /* Relaxed: main reads the table after every child is dead. */
        shm_store_relaxed(&shared->committed[role->round][role->index][number], 1);
    }
    /* Wait to be killed, so that every child dies the same way. */
    for (;;)
        pause();
}

static int run_consumer(void *arg)
{
    role_t *role = arg;
    recover_shared_t *shared = role->shared;
    shm_mpmc_t *queue = queue_of(shared);
    static uint64_t words[CELL_BYTES / WORD_BYTES];
    char who[32];
    snprintf(who, sizeof who, "consumer %u", role->index);

    for (;;) {
        uint32_t len = 0;
        int rc = shm_mpmc_pop(queue, words, CELL_BYTES, &len);
        if (rc == -EAGAIN) {
            sched_yield();
            continue;
        }
        if (rc != 0) {
            fprintf(stderr, "%s: pop failed: %d\n", who, rc);
            return 1;
        }
        if (receive(shared, words, len, who) != 0)
            return 1;
    }
}

static void sleep_random(uint64_t *random_state, uint32_t max_us)
{
    struct timespec delay = {0, (long)test_random_range(random_state, 0, max_us) * 1000L};
    nanosleep(&delay, NULL);
}

/* Kills a child with SIGKILL and reaps it. A child that already exited
 * reported a failure, which fails the test. */
static void kill_child(pid_t pid, const char *role)
{
    kill(pid, SIGKILL);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
        fprintf(stderr, "%s %d ended before it was killed (status %d)\n", role, (int)pid,
                status);
        exit(1);
    }
}

int main(void)
{
    if (TEST_UNDER_TSAN) {
        printf("test_ring_mpmc_recover: skipped under ThreadSanitizer, which does not see "
               "accesses made by other processes\n");
        return TEST_EXIT_SKIP;
    }
    test_guard(60);
    uint64_t seed = test_seed("test_ring_mpmc_recover");
    uint64_t random_state = seed;

    size_t bytes = sizeof(recover_shared_t) + shm_mpmc_footprint(CELLS, CELL_BYTES);
    recover_shared_t *shared = test_map_shared(bytes);
    shared->seed = seed;
    CHECK_RC(shm_mpmc_init(shared->queue_memory, CELLS, CELL_BYTES), 0);
    shm_mpmc_t *queue = queue_of(shared);
    static uint64_t words[CELL_BYTES / WORD_BYTES];

    uint32_t total_dropped = 0;
    uint32_t total_lost = 0;
    for (uint32_t round = 0; round < ROUNDS; round++) {
        role_t producers[PRODUCERS];
        role_t consumers[CONSUMERS];
        pid_t producer_pids[PRODUCERS];
        pid_t consumer_pids[CONSUMERS];
        for (uint32_t i = 0; i < CONSUMERS; i++) {
            consumers[i] = (role_t){shared, round, i};
            consumer_pids[i] = test_fork(run_consumer, &consumers[i]);
        }
        for (uint32_t i = 0; i < PRODUCERS; i++) {
            producers[i] = (role_t){shared, round, i};
            producer_pids[i] = test_fork(run_producer, &producers[i]);
        }

        /* Kill the four children one by one, a random time apart. */
        sleep_random(&random_state, 3000);
        for (uint32_t i = 0; i < PRODUCERS + CONSUMERS; i++) {
            int is_producer = (i + round) % 2 == 0;
            uint32_t index = i / 2;
            if (is_producer)
                kill_child(producer_pids[index], "producer");
            else
                kill_child(consumer_pids[index], "consumer");
            sleep_random(&random_state, 500);
        }

        uint32_t dropped = 0;
        uint32_t lost = 0;
        uint32_t dropped_round = 0;
        uint32_t lost_round = 0;
        for (uint32_t i = 0; i < PRODUCERS; i++) {
            shm_mpmc_recover(queue, (uint32_t)producer_pids[i], &dropped, &lost);
            CHECK(lost == 0);
            dropped_round += dropped;
        }
        for (uint32_t i = 0; i < CONSUMERS; i++) {
            shm_mpmc_recover(queue, (uint32_t)consumer_pids[i], &dropped, &lost);
            CHECK(dropped == 0);
            lost_round += lost;
        }
        CHECK(dropped_round <= PRODUCERS);
        CHECK(lost_round <= CONSUMERS);
        total_dropped += dropped_round;
        total_lost += lost_round;

        /* Drain what the dead consumers left; the queue must not stall. */
        for (;;) {
            uint32_t len = 0;
            int rc = shm_mpmc_pop(queue, words, CELL_BYTES, &len);
            if (rc == -EAGAIN)
                break;
            CHECK_RC(rc, 0);
            CHECK(receive(shared, words, len, "main") == 0);
        }
        CHECK(shm_mpmc_size_approx(queue) == 0);

        /* Committed but never received: at most one per consumer. Received
         * but not committed: at most one per producer. */
        uint32_t missing = 0;
        uint32_t uncommitted = 0;
        for (uint32_t p = 0; p < PRODUCERS; p++) {
            for (uint32_t n = 0; n < MAX_PER_PRODUCER; n++) {
                uint32_t was_committed = shm_load_relaxed(&shared->committed[round][p][n]);
                uint32_t was_received = shm_load_relaxed(&shared->received[round][p][n]);
                missing += was_committed && !was_received;
                uncommitted += was_received && !was_committed;
            }
        }
        if (missing > CONSUMERS || uncommitted > PRODUCERS) {
            fprintf(stderr, "round %u: %u committed messages missing (at most %u allowed), "
                    "%u uncommitted received (at most %u allowed)\n",
                    round, missing, CONSUMERS, uncommitted, PRODUCERS);
            return 1;
        }
    }

    /* A final clean pass through every cell. */
    for (uint32_t n = 0; n < 4 * CELLS; n++) {
        uint64_t id = make_id(ROUNDS - 1, 0, MAX_PER_PRODUCER - 1 - n);
        CHECK_RC(shm_mpmc_push(queue, &id, sizeof id), 0);
        uint32_t len = 0;
        uint64_t got = 0;
        CHECK_RC(shm_mpmc_pop(queue, &got, sizeof got, &len), 0);
        CHECK(got == id);
    }

    printf("test_ring_mpmc_recover: %u rounds, %u cells of dead producers dropped, "
           "%u of dead consumers lost\n", ROUNDS, total_dropped, total_lost);
    CHECK(total_dropped + total_lost > 0);
    munmap(shared, bytes);
    printf("test_ring_mpmc_recover: passed\n");
    return 0;
}
