/*
 * infer_model.h - how models and scripts are stored in the store.
 *
 * A model (or script) stored under KEY is an ordinary uint8 tensor under
 * the internal key "__shmstore__/model/KEY" (or "__shmstore__/script/KEY"):
 * a fixed 512-byte header with the settings, then the payload (the bytes of
 * a file saved by torch.jit.save, or TorchScript source code). One put makes
 * settings and bytes visible together, and every rank and worker reads the
 * same copy. Keys under "__shmstore__/" are internal and hidden from key
 * listings. shmstore/inference/blob.py reads and writes the same format.
 */
#ifndef SHMSTORE_INFER_MODEL_H
#define SHMSTORE_INFER_MODEL_H

#include <stddef.h>
#include <stdint.h>

#define INFER_INTERNAL_PREFIX "__shmstore__/"
#define INFER_MODEL_PREFIX INFER_INTERNAL_PREFIX "model/"
#define INFER_SCRIPT_PREFIX INFER_INTERNAL_PREFIX "script/"

#define INFER_BLOB_MAGIC "SHMMODL1"
#define INFER_BLOB_HEADER_BYTES 512u
#define INFER_BACKEND_BYTES 16u
#define INFER_BLOB_DEVICE_BYTES 32u
#define INFER_TAG_BYTES 256u

/* The header of a stored model or script, in native byte order. */
typedef struct infer_blob_header {
    char magic[8];                     /* INFER_BLOB_MAGIC, no NUL */
    uint32_t header_bytes;             /* INFER_BLOB_HEADER_BYTES */
    uint32_t kind;                     /* enum infer_kind */
    int32_t batch_size;                /* max samples per batch; 0: no batching */
    int32_t min_batch_size;
    int32_t min_batch_timeout_ms;
    uint32_t reserved;
    uint64_t version;                  /* random, new for every store of the key */
    uint64_t payload_bytes;
    char backend[INFER_BACKEND_BYTES]; /* "TORCH", NUL-terminated */
    char device[INFER_BLOB_DEVICE_BYTES]; /* "CPU", "GPU" or "GPU:N" */
    char tag[INFER_TAG_BYTES];
    unsigned char padding[INFER_BLOB_HEADER_BYTES - 352];
} infer_blob_header_t;

_Static_assert(sizeof(infer_blob_header_t) == INFER_BLOB_HEADER_BYTES,
               "the blob header must be exactly INFER_BLOB_HEADER_BYTES");

/* Settings of a model or script to store. */
typedef struct infer_blob_settings {
    uint32_t kind;                     /* enum infer_kind */
    const char *backend;               /* NULL: "TORCH" */
    const char *device;                /* NULL: "CPU" */
    int batch_size;
    int min_batch_size;
    int min_batch_timeout_ms;
    const char *tag;                   /* NULL: "" */
} infer_blob_settings_t;

/* Checks settings and fills *header (version and payload size included).
 * Returns 0, or -EINVAL with a message naming the invalid setting. */
int infer_blob_header_init(infer_blob_header_t *header, const infer_blob_settings_t *settings,
                           uint64_t payload_bytes, char *message, size_t message_bytes);

/* Writes the internal key of a model or script key into out. Returns 0, or
 * SHMSTORE_EKEY when key is empty or the internal key would exceed
 * SHMSTORE_KEY_MAX bytes. */
int infer_internal_key(uint32_t kind, const char *key, char *out, size_t out_bytes);

#endif /* SHMSTORE_INFER_MODEL_H */
