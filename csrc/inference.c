/*
 * inference.c - the public inference calls of the C API: storing models and
 * running them through the daemon's workers.
 *
 * Models are stored as described in infer_model.h. A run request travels
 * through the inference segment of the client's store (infer_segment.h),
 * which each process maps once per store name, on its first request.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "errors.h"
#include "infer_model.h"
#include "infer_segment.h"
#include "shmstore.h"

#define DEFAULT_MODEL_TIMEOUT_MS 60000
/* How often a mapped segment is re-tested for a dead daemon before use. */
#define SEGMENT_RECHECK_NS (100LL * 1000 * 1000)

/* ---- the process's mapped inference segments ------------------------------ */

/* One mapped segment per store name. A segment whose daemon died is marked
 * stale: the next request maps the new daemon's segment, and the old
 * mapping goes when its last request ends. */
typedef struct attached_segment {
    char store_name[SHMSTORE_NAME_MAX + 1];
    infer_segment_t *segment;
    int references;                    /* requests using it; guarded by attach_mutex */
    int stale;                         /* guarded by attach_mutex */
    struct attached_segment *next;
} attached_segment_t;

static pthread_mutex_t attach_mutex = PTHREAD_MUTEX_INITIALIZER;
static attached_segment_t *attached_list;

static void unlink_attached(attached_segment_t *entry)
{
    attached_segment_t **link = &attached_list;
    while (*link != NULL && *link != entry)
        link = &(*link)->next;
    if (*link == entry)
        *link = entry->next;
}

static int acquire_segment(const char *store_name, attached_segment_t **out)
{
    char message[512] = "";
    pthread_mutex_lock(&attach_mutex);

    for (attached_segment_t *entry = attached_list; entry != NULL; entry = entry->next) {
        if (entry->stale || strcmp(entry->store_name, store_name) != 0)
            continue;
        if (infer_segment_daemon_alive(entry->segment, SEGMENT_RECHECK_NS)) {
            entry->references++;
            pthread_mutex_unlock(&attach_mutex);
            *out = entry;
            return 0;
        }
        entry->stale = 1;
        if (entry->references == 0) {
            unlink_attached(entry);
            infer_segment_close(entry->segment);
            free(entry);
        }
        break;
    }

    attached_segment_t *entry = calloc(1, sizeof(*entry));
    if (entry == NULL) {
        pthread_mutex_unlock(&attach_mutex);
        return -ENOMEM;
    }
    int result = infer_segment_open(store_name, &entry->segment, message, sizeof(message));
    if (result != 0) {
        pthread_mutex_unlock(&attach_mutex);
        free(entry);
        if (result == SHMSTORE_ENOSTORE)
            return shm_fail(SHMSTORE_ENOWORKER, "store '%s' runs no inference service (%s)",
                            store_name, message);
        return shm_fail(result, "%s", message);
    }
    snprintf(entry->store_name, sizeof(entry->store_name), "%s", store_name);
    entry->references = 1;
    entry->next = attached_list;
    attached_list = entry;
    pthread_mutex_unlock(&attach_mutex);
    *out = entry;
    return 0;
}

static void release_segment(attached_segment_t *entry, int result)
{
    pthread_mutex_lock(&attach_mutex);
    if (result == SHMSTORE_ELOST)
        entry->stale = 1;
    entry->references--;
    if (entry->references == 0 && entry->stale) {
        unlink_attached(entry);
        infer_segment_close(entry->segment);
        free(entry);
    }
    pthread_mutex_unlock(&attach_mutex);
}

/* ---- models --------------------------------------------------------------- */

static int store_blob(shmstore_client_t *client, const char *key,
                      const infer_blob_settings_t *settings, const void *payload,
                      size_t payload_bytes)
{
    if (client == NULL || payload == NULL)
        return shm_fail(-EINVAL, "set_model: client and model must not be NULL");

    char internal_key[SHMSTORE_KEY_MAX + 1];
    if (infer_internal_key(settings->kind, key, internal_key, sizeof(internal_key)) != 0)
        return shm_fail(SHMSTORE_EKEY,
                        "invalid model key '%.100s': it must have 1 to %zu bytes",
                        key ? key : "", SHMSTORE_KEY_MAX - strlen(INFER_MODEL_PREFIX));

    infer_blob_header_t header;
    char message[512] = "";
    int result = infer_blob_header_init(&header, settings, payload_bytes, message,
                                        sizeof(message));
    if (result != 0)
        return shm_fail(result, "set_model('%.200s'): %s", key, message);

    int64_t dims[1] = {(int64_t)(sizeof(header) + payload_bytes)};
    void *data = NULL;
    uint64_t token = 0;
    result = shmstore_put_begin(client, internal_key, SHMSTORE_UINT8, 1, dims,
                                SHMSTORE_ORDER_C, &data, &token);
    if (result != 0)
        return result;
    memcpy(data, &header, sizeof(header));
    memcpy((unsigned char *)data + sizeof(header), payload, payload_bytes);
    return shmstore_put_commit(client, token);
}

int shmstore_set_model(shmstore_client_t *client, const char *key, const void *model,
                       size_t model_bytes, const char *backend, const char *device,
                       int batch_size, int min_batch_size, int min_batch_timeout_ms)
{
    infer_blob_settings_t settings = {
        .kind = INFER_KIND_MODEL,
        .backend = backend,
        .device = device,
        .batch_size = batch_size,
        .min_batch_size = min_batch_size,
        .min_batch_timeout_ms = min_batch_timeout_ms,
        .tag = NULL,
    };
    return store_blob(client, key, &settings, model, model_bytes);
}

int shmstore_set_model_from_file(shmstore_client_t *client, const char *key,
                                 const char *path, const char *backend,
                                 const char *device, int batch_size, int min_batch_size,
                                 int min_batch_timeout_ms)
{
    if (path == NULL)
        return shm_fail(-EINVAL, "set_model_from_file: path must not be NULL");
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        int code = errno;
        return shm_fail(-code, "cannot open model file '%s': %s", path, strerror(code));
    }

    unsigned char *bytes = NULL;
    size_t used = 0;
    size_t capacity = 0;
    int result = 0;
    for (;;) {
        if (used == capacity) {
            capacity = capacity == 0 ? 1 << 20 : capacity * 2;
            unsigned char *grown = realloc(bytes, capacity);
            if (grown == NULL) {
                result = shm_fail(-ENOMEM, "cannot read model file '%s': out of memory",
                                  path);
                break;
            }
            bytes = grown;
        }
        size_t count = fread(bytes + used, 1, capacity - used, file);
        used += count;
        if (count == 0) {
            if (ferror(file))
                result = shm_fail(-EIO, "cannot read model file '%s'", path);
            break;
        }
    }
    fclose(file);

    if (result == 0)
        result = shmstore_set_model(client, key, bytes, used, backend, device, batch_size,
                                    min_batch_size, min_batch_timeout_ms);
    free(bytes);
    return result;
}

int shmstore_model_exists(shmstore_client_t *client, const char *key)
{
    char internal_key[SHMSTORE_KEY_MAX + 1];
    if (client == NULL)
        return shm_fail(-EINVAL, "model_exists: client must not be NULL");
    if (infer_internal_key(INFER_KIND_MODEL, key, internal_key, sizeof(internal_key)) != 0)
        return shm_fail(SHMSTORE_EKEY, "invalid model key '%.100s'", key ? key : "");
    return shmstore_exists(client, internal_key);
}

/* ---- run requests ------------------------------------------------------------ */

/* Returns the timeout to use: timeout_ms when positive, else
 * $SHMSTORE_MODEL_TIMEOUT (ms), else DEFAULT_MODEL_TIMEOUT_MS. */
static int64_t resolve_timeout_ms(int timeout_ms)
{
    if (timeout_ms > 0)
        return timeout_ms;
    const char *text = getenv("SHMSTORE_MODEL_TIMEOUT");
    if (text != NULL && text[0] != '\0') {
        char *end = NULL;
        long long value = strtoll(text, &end, 10);
        if (*end == '\0' && value > 0 && value <= INT_MAX)
            return value;
    }
    return DEFAULT_MODEL_TIMEOUT_MS;
}

static int run_request(shmstore_client_t *client, uint32_t kind, const char *key,
                       const char *function, int n_inputs, const char *const *inputs,
                       int n_outputs, const char *const *outputs, int timeout_ms)
{
    if (client == NULL)
        return shm_fail(-EINVAL, "run_model: client must not be NULL");
    if (n_inputs < 0 || n_outputs < 0 || (n_inputs > 0 && inputs == NULL) ||
        (n_outputs > 0 && outputs == NULL))
        return shm_fail(-EINVAL, "run_model('%.200s'): invalid input or output list",
                        key ? key : "");
    if (timeout_ms == 0)
        return shm_fail(-EINVAL, "run_model('%.200s'): timeout 0 ms; pass a positive "
                                 "timeout, or a negative one for the default",
                        key ? key : "");

    attached_segment_t *entry = NULL;
    int result = acquire_segment(client->name, &entry);
    if (result != 0)
        return result;

    infer_request_t request = {
        .kind = kind,
        .key = key,
        .function = function,
        .n_inputs = (uint32_t)n_inputs,
        .inputs = inputs,
        .n_outputs = (uint32_t)n_outputs,
        .outputs = outputs,
        .timeout_ms = resolve_timeout_ms(timeout_ms),
    };
    char message[INFER_ERROR_BYTES + 512] = "";
    result = infer_call(entry->segment, &request, message, sizeof(message));
    release_segment(entry, result);

    if (result != 0)
        return shm_fail(result, "%s", message[0] ? message : shmstore_strerror(result));
    return 0;
}

int shmstore_run_model(shmstore_client_t *client, const char *key, int n_inputs,
                       const char *const *inputs, int n_outputs,
                       const char *const *outputs, int timeout_ms)
{
    return run_request(client, INFER_KIND_MODEL, key, NULL, n_inputs, inputs, n_outputs,
                       outputs, timeout_ms);
}

int shmstore_run_script(shmstore_client_t *client, const char *key, const char *fn_name,
                        int n_inputs, const char *const *inputs, int n_outputs,
                        const char *const *outputs, int timeout_ms)
{
    if (fn_name == NULL || fn_name[0] == '\0')
        return shm_fail(-EINVAL, "run_script('%.200s'): the function name is empty",
                        key ? key : "");
    return run_request(client, INFER_KIND_SCRIPT, key, fn_name, n_inputs, inputs, n_outputs,
                       outputs, timeout_ms);
}
