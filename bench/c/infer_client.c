/*
 * infer_client.c - one client process of the inference benchmark, written in C like the
 * ranks of a simulation.
 *
 * Usage: infer_client STORE MODEL_KEY ROWS NUMBER
 *
 * Same protocol as the benchmark's Python client: after one warm-up request it prints
 * "ready", reads the common start and end times (CLOCK_MONOTONIC seconds) from standard
 * input, sends requests from start until end, and prints {"latencies": [seconds, ...]}.
 * One request is a put of ROWS x 4 float32 values, a run_model and a zero-copy get of the
 * output.
 */

#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "shmstore.h"

static double monotonic_seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

static void fail(const char *call, int code)
{
    fprintf(stderr, "infer_client: %s failed: %s (%s)\n", call, shmstore_strerror(code),
            shmstore_error_detail());
    exit(1);
}

/* Sends one request: put the input, run the model, read the output without copying it. */
static void request(shmstore_client_t *client, const char *model_key, const char *input_key,
                    const char *output_key, const float *input, const int64_t *dims)
{
    int code = shmstore_put(client, input_key, input, SHMSTORE_FLOAT32, 2, dims,
                            SHMSTORE_ORDER_C);
    if (code != 0)
        fail("shmstore_put", code);

    const char *inputs[1] = {input_key};
    const char *outputs[1] = {output_key};
    code = shmstore_run_model(client, model_key, 1, inputs, 1, outputs, -1);
    if (code != 0)
        fail("shmstore_run_model", code);

    shmstore_view_t view;
    code = shmstore_get(client, output_key, &view);
    if (code != 0)
        fail("shmstore_get", code);
    shmstore_release(&view);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: infer_client STORE MODEL_KEY ROWS NUMBER\n");
        return 2;
    }
    const char *store = argv[1];
    const char *model_key = argv[2];
    long rows = strtol(argv[3], NULL, 10);
    long number = strtol(argv[4], NULL, 10);
    if (rows < 1) {
        fprintf(stderr, "infer_client: invalid ROWS %s (expected at least 1)\n", argv[3]);
        return 2;
    }

    shmstore_client_t *client = NULL;
    int code = shmstore_connect(store, &client);
    if (code != 0)
        fail("shmstore_connect", code);

    float *input = malloc((size_t)rows * 4 * sizeof(float));
    double *latencies = malloc(sizeof(double) * 1000000);
    if (input == NULL || latencies == NULL) {
        fprintf(stderr, "infer_client: out of memory\n");
        return 1;
    }
    srand((unsigned)number + 1);
    for (long i = 0; i < rows * 4; i++)
        input[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    int64_t dims[2] = {rows, 4};
    char input_key[64], output_key[64];
    snprintf(input_key, sizeof input_key, "bench-in-%ld", number);
    snprintf(output_key, sizeof output_key, "bench-out-%ld", number);

    request(client, model_key, input_key, output_key, input, dims);
    printf("ready\n");
    fflush(stdout);

    double start, end;
    if (scanf("%lf %lf", &start, &end) != 2) {
        fprintf(stderr, "infer_client: missing start and end times on standard input\n");
        return 1;
    }
    while (monotonic_seconds() < start) {
        struct timespec pause = {0, 500 * 1000};
        nanosleep(&pause, NULL);
    }

    long count = 0;
    for (;;) {
        double began = monotonic_seconds();
        if (began >= end || count == 1000000)
            break;
        request(client, model_key, input_key, output_key, input, dims);
        latencies[count++] = monotonic_seconds() - began;
    }

    printf("{\"latencies\": [");
    for (long i = 0; i < count; i++)
        printf(i == 0 ? "%.9f" : ", %.9f", latencies[i]);
    printf("]}\n");

    shmstore_disconnect(client);
    free(latencies);
    free(input);
    return 0;
}
