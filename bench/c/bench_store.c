/*
 * bench_store.c - times shmstore put, get and put+get from C against memcpy.
 *
 * Usage: bench_store STORE_NAME BYTES REPETITIONS [BYTES REPETITIONS ...]
 *
 * For each size it times these operations, one call per sample, with CLOCK_MONOTONIC:
 *   memcpy   memcpy into a preallocated, already touched buffer
 *   put      shmstore_put of a float64 vector under one key, replacing the last version
 *   get      shmstore_get plus shmstore_release of that key (zero-copy)
 *   put_get  the two above in a row
 * It prints one JSON object on stdout with the median and the 99th percentile (nearest
 * rank) of each, in microseconds. Errors go to stderr with exit code 1.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shmstore.h"

#define WARMUP_CALLS 3

typedef struct bench_context {
    shmstore_client_t *client;
    const char *key;
    double *source;
    double *destination;
    size_t nbytes;
} bench_context_t;

typedef int (*bench_operation)(bench_context_t *context);

static uint64_t now_ns(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

static int compare_u64(const void *a, const void *b)
{
    uint64_t left = *(const uint64_t *)a;
    uint64_t right = *(const uint64_t *)b;

    return (left > right) - (left < right);
}

static int run_memcpy(bench_context_t *context)
{
    memcpy(context->destination, context->source, context->nbytes);

    /* The destination is never read, so tell the compiler that it is, or it may drop the
     * copy. */
    __asm__ volatile("" : : "r"(context->destination) : "memory");
    return 0;
}

static int run_put(bench_context_t *context)
{
    int64_t dims[1] = {(int64_t)(context->nbytes / sizeof(double))};

    return shmstore_put(context->client, context->key, context->source, SHMSTORE_FLOAT64,
                        1, dims, SHMSTORE_ORDER_C);
}

static int run_get(bench_context_t *context)
{
    shmstore_view_t view;
    int rc = shmstore_get(context->client, context->key, &view);

    if (rc < 0)
        return rc;
    if (view.nbytes != context->nbytes) {
        shmstore_release(&view);
        return -EPROTO;
    }
    return shmstore_release(&view);
}

static int run_put_get(bench_context_t *context)
{
    int rc = run_put(context);

    if (rc < 0)
        return rc;
    return run_get(context);
}

/* Times repetitions calls of operation and prints "name": {median, p99} as JSON. */
static int time_operation(const char *name, bench_operation operation,
                          bench_context_t *context, size_t repetitions, int last)
{
    uint64_t *samples = malloc(repetitions * sizeof(*samples));
    int rc = 0;

    if (samples == NULL)
        return -ENOMEM;

    for (int i = 0; i < WARMUP_CALLS && rc == 0; i++)
        rc = operation(context);

    for (size_t i = 0; i < repetitions && rc == 0; i++) {
        uint64_t start = now_ns();

        rc = operation(context);
        samples[i] = now_ns() - start;
    }

    if (rc < 0) {
        fprintf(stderr, "bench_store: %s of %zu bytes failed: %s (%s)\n", name,
                context->nbytes, shmstore_strerror(rc), shmstore_error_detail());
        free(samples);
        return rc;
    }

    qsort(samples, repetitions, sizeof(*samples), compare_u64);
    size_t p99_index = (size_t)(0.99 * (double)repetitions);
    if (p99_index >= repetitions)
        p99_index = repetitions - 1;

    /* The median of an even count is the mean of the two middle samples. */
    double median_ns = repetitions % 2
        ? (double)samples[repetitions / 2]
        : 0.5 * ((double)samples[repetitions / 2 - 1] + (double)samples[repetitions / 2]);

    printf("\"%s\": {\"median_us\": %.4f, \"p99_us\": %.4f, \"samples\": %zu}%s", name,
           median_ns / 1e3, (double)samples[p99_index] / 1e3, repetitions, last ? "" : ", ");
    free(samples);
    return 0;
}

static int parse_size(const char *text, const char *what, size_t *out)
{
    char *end = NULL;
    unsigned long long value;

    errno = 0;
    value = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value == 0) {
        fprintf(stderr, "bench_store: invalid %s '%s': expected a positive integer\n", what,
                text);
        return -EINVAL;
    }
    *out = (size_t)value;
    return 0;
}

/* Times every operation for one tensor size and prints its JSON object. */
static int bench_size(shmstore_client_t *client, size_t nbytes, size_t repetitions, int last)
{
    bench_context_t context = {.client = client, .key = "bench/c", .nbytes = nbytes};
    int rc = 0;

    context.source = malloc(nbytes);
    context.destination = malloc(nbytes);
    if (context.source == NULL || context.destination == NULL) {
        fprintf(stderr, "bench_store: failed to allocate two buffers of %zu bytes\n", nbytes);
        rc = -ENOMEM;
        goto out;
    }

    /* Touch both buffers so that page faults stay out of the memcpy timings. */
    for (size_t i = 0; i < nbytes / sizeof(double); i++)
        context.source[i] = (double)i;
    memset(context.destination, 1, nbytes);

    printf("{\"bytes\": %zu, ", nbytes);
    rc = time_operation("memcpy", run_memcpy, &context, repetitions, 0);
    if (rc == 0)
        rc = time_operation("put", run_put, &context, repetitions, 0);
    if (rc == 0)
        rc = time_operation("get", run_get, &context, repetitions, 0);
    if (rc == 0)
        rc = time_operation("put_get", run_put_get, &context, repetitions, 1);
    printf("}%s", last ? "" : ", ");

    if (rc == 0)
        rc = shmstore_delete(client, context.key);

out:
    free(context.source);
    free(context.destination);
    return rc;
}

int main(int argc, char **argv)
{
    shmstore_client_t *client = NULL;
    int rc;

    if (argc < 4 || argc % 2 != 0) {
        fprintf(stderr, "usage: %s STORE_NAME BYTES REPETITIONS [BYTES REPETITIONS ...]\n",
                argv[0]);
        return 2;
    }

    rc = shmstore_connect(argv[1], &client);
    if (rc < 0) {
        fprintf(stderr, "bench_store: failed to connect to store '%s': %s (%s)\n", argv[1],
                shmstore_strerror(rc), shmstore_error_detail());
        return 1;
    }

    printf("{\"store\": \"%s\", \"sizes\": [", argv[1]);
    for (int i = 2; i < argc && rc == 0; i += 2) {
        size_t nbytes;
        size_t repetitions;

        rc = parse_size(argv[i], "size", &nbytes);
        if (rc == 0)
            rc = parse_size(argv[i + 1], "repetition count", &repetitions);
        if (rc == 0 && nbytes % sizeof(double) != 0) {
            fprintf(stderr, "bench_store: size %zu is not a multiple of 8 bytes\n", nbytes);
            rc = -EINVAL;
        }
        if (rc == 0)
            rc = bench_size(client, nbytes, repetitions, i + 2 >= argc);
    }
    printf("]}\n");

    shmstore_disconnect(client);
    return rc == 0 ? 0 : 1;
}
