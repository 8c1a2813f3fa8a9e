/*
 * test_infer_request.c - the inference request protocol (csrc/infer_request.c)
 * with client and worker threads in one process, so that ThreadSanitizer
 * checks it.
 *
 * Client threads send requests whose body encodes a number; worker threads
 * complete each with a result code and a message derived from the body.
 * Every client checks its own results, and at the end the sums of what the
 * clients received and what the workers delivered must agree
 * (conservation). A second phase has slow workers and clients with short
 * timeouts: each request then either completes or times out, and every
 * completion a worker delivered is one a client received. Seed: env
 * SHMSTORE_TEST_SEED.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "infer_segment.h"
#include "shmstore.h"

#define CLIENTS 4
#define WORKERS 2
#define REQUESTS_PER_CLIENT 2000
#define SLOW_REQUESTS_PER_CLIENT 40

#define CHECK(condition)                                                              \
    do {                                                                              \
        if (!(condition)) {                                                           \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,         \
                    #condition);                                                      \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

static char store_name[64];
static infer_segment_t *daemon_segment;
static atomic_int stop_workers;
static atomic_int slow_workers;            /* phase 2: workers sleep before completing */
static atomic_uint_fast64_t delivered_sum;   /* sum of numbers whose completion was accepted */
static atomic_uint_fast64_t delivered_count;
static atomic_uint_fast64_t stale_count;     /* completions the client had abandoned */
static unsigned seed;

/* The result code a worker returns for request number n: negative, below
 * every real code, so that it travels like an error with its message. */
static int32_t result_for(uint64_t number)
{
    return -100000 - (int32_t)(number % 50000);
}

static void *worker_main(void *argument)
{
    uint32_t index = (uint32_t)(uintptr_t)argument;
    infer_taken_t *taken = malloc(sizeof(*taken));
    CHECK(taken != NULL);
    CHECK(infer_worker_register(daemon_segment, index, (int32_t)getpid(), "cpu") == 0);
    unsigned random_state = seed + index;

    while (!atomic_load(&stop_workers)) {
        int result = infer_worker_take(daemon_segment, index, 20 * 1000 * 1000, taken);
        if (result == -EAGAIN)
            continue;
        CHECK(result == 0);
        CHECK(taken->kind == INFER_KIND_MODEL);
        CHECK(taken->n_inputs == 1);
        CHECK(taken->n_outputs == 1);

        /* Body: key "model", function "", input "n=<number>", output "out". */
        const char *key = taken->body;
        const char *function = key + strlen(key) + 1;
        const char *input = function + strlen(function) + 1;
        const char *output = input + strlen(input) + 1;
        CHECK(strcmp(key, "model") == 0);
        CHECK(function[0] == '\0');
        CHECK(strncmp(input, "n=", 2) == 0);
        CHECK(strcmp(output, "out") == 0);
        uint64_t number = strtoull(input + 2, NULL, 10);

        if (atomic_load(&slow_workers)) {
            struct timespec pause = {0, (long)(rand_r(&random_state) % 4000) * 1000};
            nanosleep(&pause, NULL);
        }

        char message[64];
        snprintf(message, sizeof(message), "done %" PRIu64, number);
        result = infer_worker_complete(daemon_segment, index, taken->slot, taken->sequence,
                                       result_for(number), message);
        if (result == 0) {
            atomic_fetch_add(&delivered_sum, number);
            atomic_fetch_add(&delivered_count, 1);
        } else {
            CHECK(result == -ESTALE);
            atomic_fetch_add(&stale_count, 1);
        }
    }
    free(taken);
    return NULL;
}

typedef struct client_totals {
    uint64_t received_sum;
    uint64_t received_count;
    uint64_t timed_out;
} client_totals_t;

static void run_client(infer_segment_t *segment, uint32_t client, uint32_t requests,
                       int64_t timeout_ms, client_totals_t *totals)
{
    unsigned random_state = seed * 31 + client;
    for (uint32_t i = 0; i < requests; i++) {
        uint64_t number = (uint64_t)client * 1000000 + (uint64_t)(rand_r(&random_state) % 999983);
        char input[32];
        snprintf(input, sizeof(input), "n=%" PRIu64, number);
        const char *inputs[] = {input};
        const char *outputs[] = {"out"};
        infer_request_t request = {
            .kind = INFER_KIND_MODEL,
            .key = "model",
            .function = "",
            .n_inputs = 1,
            .inputs = inputs,
            .n_outputs = 1,
            .outputs = outputs,
            .timeout_ms = timeout_ms,
        };
        char message[INFER_ERROR_BYTES + 512];
        int result = infer_call(segment, &request, message, sizeof(message));
        if (result == -ETIMEDOUT) {
            totals->timed_out++;
            continue;
        }

        char expected[64];
        snprintf(expected, sizeof(expected), "done %" PRIu64, number);
        if (result != result_for(number) || strcmp(message, expected) != 0) {
            fprintf(stderr, "client %u request %u: got %d '%s', expected %d '%s'\n", client,
                    i, result, message, result_for(number), expected);
            exit(1);
        }
        totals->received_sum += number;
        totals->received_count++;
    }
}

typedef struct client_arguments {
    uint32_t client;
    uint32_t requests;
    int64_t timeout_ms;
    client_totals_t totals;
} client_arguments_t;

static void *client_main(void *argument)
{
    client_arguments_t *arguments = argument;
    infer_segment_t *segment = NULL;
    char message[512];
    CHECK(infer_segment_open(store_name, &segment, message, sizeof(message)) == 0);
    run_client(segment, arguments->client, arguments->requests, arguments->timeout_ms,
               &arguments->totals);
    infer_segment_close(segment);
    return NULL;
}

/* Runs CLIENTS client threads; returns the totals of all of them. */
static client_totals_t run_clients(uint32_t requests, int64_t timeout_ms)
{
    pthread_t threads[CLIENTS];
    client_arguments_t arguments[CLIENTS];
    for (uint32_t i = 0; i < CLIENTS; i++) {
        arguments[i] = (client_arguments_t){.client = i, .requests = requests,
                                            .timeout_ms = timeout_ms};
        CHECK(pthread_create(&threads[i], NULL, client_main, &arguments[i]) == 0);
    }
    client_totals_t sum = {0, 0, 0};
    for (uint32_t i = 0; i < CLIENTS; i++) {
        CHECK(pthread_join(threads[i], NULL) == 0);
        sum.received_sum += arguments[i].totals.received_sum;
        sum.received_count += arguments[i].totals.received_count;
        sum.timed_out += arguments[i].totals.timed_out;
    }
    return sum;
}

static void check_no_workers_fails_fast(void)
{
    infer_segment_t *segment = NULL;
    char message[512];
    char name[80];
    snprintf(name, sizeof(name), "%s-idle", store_name);
    CHECK(infer_segment_create(name, 8, 0, &segment, message, sizeof(message)) == 0);

    const char *inputs[] = {"x"};
    infer_request_t request = {.kind = INFER_KIND_MODEL, .key = "m", .n_inputs = 1,
                               .inputs = inputs, .timeout_ms = 1000};
    CHECK(infer_call(segment, &request, message, sizeof(message)) == SHMSTORE_ENOWORKER);
    CHECK(strstr(message, "--workers") != NULL);
    CHECK(infer_segment_destroy(segment) == 0);
}

int main(void)
{
    const char *seed_text = getenv("SHMSTORE_TEST_SEED");
    seed = seed_text ? (unsigned)strtoul(seed_text, NULL, 10) : (unsigned)time(NULL);
    printf("SHMSTORE_TEST_SEED=%u\n", seed);
    alarm(100);

    snprintf(store_name, sizeof(store_name), "test-infer-%d", (int)getpid());
    char message[512];
    CHECK(infer_segment_create(store_name, 16, WORKERS, &daemon_segment, message,
                               sizeof(message)) == 0);
    check_no_workers_fails_fast();

    pthread_t workers[WORKERS];
    for (uintptr_t i = 0; i < WORKERS; i++)
        CHECK(pthread_create(&workers[i], NULL, worker_main, (void *)i) == 0);

    /* Phase 1: every request completes; what clients received equals what
     * workers delivered. */
    client_totals_t fast = run_clients(REQUESTS_PER_CLIENT, 30000);
    CHECK(fast.timed_out == 0);
    CHECK(fast.received_count == (uint64_t)CLIENTS * REQUESTS_PER_CLIENT);
    /* A worker counts a delivery just after its client may have returned. */
    for (int i = 0; i < 1000 && atomic_load(&delivered_count) < fast.received_count; i++) {
        struct timespec pause = {0, 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    CHECK(atomic_load(&delivered_count) == fast.received_count);
    CHECK(atomic_load(&delivered_sum) == fast.received_sum);
    CHECK(atomic_load(&stale_count) == 0);

    /* Phase 2: slow workers, 2 ms timeouts. A request either completes or
     * times out; a worker's completion is accepted exactly when its client
     * received it. */
    atomic_store(&slow_workers, 1);
    atomic_store(&delivered_sum, 0);
    atomic_store(&delivered_count, 0);
    client_totals_t slow = run_clients(SLOW_REQUESTS_PER_CLIENT, 2);
    CHECK(slow.received_count + slow.timed_out == (uint64_t)CLIENTS * SLOW_REQUESTS_PER_CLIENT);

    /* Let workers finish requests abandoned at the end of the phase. */
    struct timespec settle = {0, 50 * 1000 * 1000};
    nanosleep(&settle, NULL);
    atomic_store(&stop_workers, 1);
    for (int i = 0; i < WORKERS; i++)
        CHECK(pthread_join(workers[i], NULL) == 0);

    CHECK(atomic_load(&delivered_count) == slow.received_count);
    CHECK(atomic_load(&delivered_sum) == slow.received_sum);
    printf("phase 1: %" PRIu64 " requests; phase 2: %" PRIu64 " completed, %" PRIu64
           " timed out, %" PRIu64 " stale completions\n",
           fast.received_count, slow.received_count, slow.timed_out,
           (uint64_t)atomic_load(&stale_count));

    /* Stopping fails new calls with SHMSTORE_ELOST. */
    infer_segment_t *late = NULL;
    CHECK(infer_segment_open(store_name, &late, message, sizeof(message)) == 0);
    CHECK(infer_segment_destroy(daemon_segment) == 0);
    const char *inputs[] = {"n=1"};
    infer_request_t request = {.kind = INFER_KIND_MODEL, .key = "model", .n_inputs = 1,
                               .inputs = inputs, .timeout_ms = 1000};
    CHECK(infer_call(late, &request, message, sizeof(message)) == SHMSTORE_ELOST);
    infer_segment_close(late);
    return 0;
}
