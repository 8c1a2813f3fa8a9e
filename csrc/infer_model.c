/*
 * infer_model.c - the header of stored models and scripts, see infer_model.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* getrandom under -std=c11 */
#endif

#include "infer_model.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "infer_layout.h"
#include "shmstore.h"

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

/* Returns a random non-zero version number; getrandom(2) without blocking,
 * else a mix of the clock and the pid. */
static uint64_t new_version(void)
{
    uint64_t version = 0;
    if (getrandom(&version, sizeof(version), GRND_NONBLOCK) != (ssize_t)sizeof(version)) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        version = ((uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec) ^
                  ((uint64_t)getpid() << 40);
    }
    return version == 0 ? 1 : version;
}

/* Copies device in canonical form ("CPU", "GPU", "GPU:N") into out, or
 * returns -EINVAL. */
static int canonical_device(const char *device, char *out, size_t out_bytes)
{
    char upper[INFER_BLOB_DEVICE_BYTES];
    size_t length = strlen(device);
    if (length == 0 || length >= sizeof(upper))
        return -EINVAL;
    for (size_t i = 0; i <= length; i++)
        upper[i] = (char)toupper((unsigned char)device[i]);

    if (strcmp(upper, "CPU") == 0 || strcmp(upper, "GPU") == 0) {
        snprintf(out, out_bytes, "%s", upper);
        return 0;
    }
    if (strncmp(upper, "GPU:", 4) == 0 && upper[4] != '\0') {
        char *end = NULL;
        long index = strtol(upper + 4, &end, 10);
        if (*end != '\0' || index < 0 || index > 1024)
            return -EINVAL;
        snprintf(out, out_bytes, "GPU:%ld", index);
        return 0;
    }
    return -EINVAL;
}

int infer_blob_header_init(infer_blob_header_t *header, const infer_blob_settings_t *settings,
                           uint64_t payload_bytes, char *message, size_t message_bytes)
{
    memset(header, 0, sizeof(*header));
    const char *backend = settings->backend ? settings->backend : "TORCH";
    const char *device = settings->device ? settings->device : "CPU";
    const char *tag = settings->tag ? settings->tag : "";

    if (strcasecmp(backend, "TORCH") != 0) {
        format_message(message, message_bytes,
                       "unsupported backend '%s': only TORCH (TorchScript) is supported",
                       backend);
        return -EINVAL;
    }
    if (canonical_device(device, header->device, sizeof(header->device)) != 0) {
        format_message(message, message_bytes,
                       "invalid device '%s': use CPU, GPU (the first GPU) or GPU:N", device);
        return -EINVAL;
    }
    if (settings->batch_size < 0 || settings->min_batch_size < 0 ||
        settings->min_batch_timeout_ms < 0) {
        format_message(message, message_bytes,
                       "invalid batch settings batch_size=%d min_batch_size=%d "
                       "min_batch_timeout=%d: none may be negative",
                       settings->batch_size, settings->min_batch_size,
                       settings->min_batch_timeout_ms);
        return -EINVAL;
    }
    if (settings->batch_size == 0 &&
        (settings->min_batch_size > 0 || settings->min_batch_timeout_ms > 0)) {
        format_message(message, message_bytes,
                       "min_batch_size=%d and min_batch_timeout=%d need batching: set "
                       "batch_size > 0",
                       settings->min_batch_size, settings->min_batch_timeout_ms);
        return -EINVAL;
    }
    if (settings->min_batch_size > settings->batch_size) {
        format_message(message, message_bytes,
                       "min_batch_size=%d exceeds batch_size=%d", settings->min_batch_size,
                       settings->batch_size);
        return -EINVAL;
    }
    if (strlen(tag) >= INFER_TAG_BYTES) {
        format_message(message, message_bytes, "tag has %zu bytes; at most %u fit",
                       strlen(tag), INFER_TAG_BYTES - 1);
        return -EINVAL;
    }
    if (payload_bytes == 0) {
        format_message(message, message_bytes, "the model or script is empty (0 bytes)");
        return -EINVAL;
    }

    memcpy(header->magic, INFER_BLOB_MAGIC, sizeof(header->magic));
    header->header_bytes = INFER_BLOB_HEADER_BYTES;
    header->kind = settings->kind;
    header->batch_size = settings->batch_size;
    header->min_batch_size = settings->min_batch_size;
    header->min_batch_timeout_ms = settings->min_batch_timeout_ms;
    header->version = new_version();
    header->payload_bytes = payload_bytes;
    snprintf(header->backend, sizeof(header->backend), "TORCH");
    snprintf(header->tag, sizeof(header->tag), "%s", tag);
    return 0;
}

int infer_internal_key(uint32_t kind, const char *key, char *out, size_t out_bytes)
{
    const char *prefix = kind == INFER_KIND_SCRIPT ? INFER_SCRIPT_PREFIX : INFER_MODEL_PREFIX;
    if (key == NULL || key[0] == '\0')
        return SHMSTORE_EKEY;
    size_t length = strlen(prefix) + strlen(key);
    if (length > SHMSTORE_KEY_MAX || length >= out_bytes)
        return SHMSTORE_EKEY;
    snprintf(out, out_bytes, "%s%s", prefix, key);
    return 0;
}
