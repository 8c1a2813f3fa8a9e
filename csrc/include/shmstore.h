/*
 * shmstore.h - public C API of the node-local shared-memory tensor store.
 *
 * Conventions, the same in every function below:
 *  - Every function that can fail returns an int: 0 (or a documented
 *    non-negative value) on success, a negative code on failure. Codes are
 *    negative errno values (-ENOMEM, -EINVAL, -ETIMEDOUT, ...) or the project
 *    codes SHMSTORE_E* below. shmstore_strerror() names any of them, and
 *    shmstore_error_detail() returns the calling thread's message for its
 *    last failure (which key, which pid, what to do next).
 *  - The global errno is never the error channel.
 *  - Keys are NUL-terminated UTF-8 strings of 1 to SHMSTORE_KEY_MAX bytes.
 *  - A shmstore_client_t may be used by several threads of one process at
 *    once. A client never forks and never starts a process.
 *  - A client belongs to the process that connected it. In a child forked
 *    after the connect, calls on the inherited client fail with
 *    SHMSTORE_ELOST, and shmstore_release() and shmstore_disconnect() only
 *    unmap, so the parent's client and views stay intact. The child
 *    connects its own client.
 */
#ifndef SHMSTORE_H
#define SHMSTORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of the shared-memory layout; a client refuses a store whose
 * control segment carries another one. */
#define SHMSTORE_ABI_VERSION 1

#define SHMSTORE_KEY_MAX 1024     /* bytes, not counting the NUL */
#define SHMSTORE_NAME_MAX 200     /* bytes of a store name */

/* Project error codes. They sit below -200 so that they never collide with
 * a negated errno value. */
enum {
    SHMSTORE_ENOKEY = -201,       /* key not found */
    SHMSTORE_ENOSTORE = -202,     /* no store of that name on this node */
    SHMSTORE_ELOST = -203,        /* the daemon died: connection lost */
    SHMSTORE_EABI = -204,         /* magic number, ABI version or size mismatch */
    SHMSTORE_EBUSY = -205,        /* a live daemon already serves that name */
    SHMSTORE_EMISMATCH = -206,    /* dtype, rank or dims differ from the stored tensor */
    SHMSTORE_EFULL = -207,        /* a fixed table is full (clients, keys, views) */
    SHMSTORE_EKEY = -208,         /* invalid key (empty, too long) */
    SHMSTORE_EMODEL = -209,       /* the model or script failed on this request */
    SHMSTORE_EWORKER = -210,      /* the inference worker died during the request */
    SHMSTORE_ENOWORKER = -211,    /* the store runs no inference workers */
};

/* Element types. The numeric values are part of the ABI. */
typedef enum shmstore_dtype {
    SHMSTORE_FLOAT16 = 1,
    SHMSTORE_BFLOAT16 = 2,
    SHMSTORE_FLOAT32 = 3,
    SHMSTORE_FLOAT64 = 4,
    SHMSTORE_INT8 = 5,
    SHMSTORE_INT16 = 6,
    SHMSTORE_INT32 = 7,
    SHMSTORE_INT64 = 8,
    SHMSTORE_UINT8 = 9,
    SHMSTORE_UINT16 = 10,
    SHMSTORE_UINT32 = 11,
    SHMSTORE_UINT64 = 12,
    SHMSTORE_BOOL = 13,
    SHMSTORE_COMPLEX64 = 14,
    SHMSTORE_COMPLEX128 = 15,
} shmstore_dtype_t;

/* Memory order of a tensor's elements. */
typedef enum shmstore_order {
    SHMSTORE_ORDER_C = 0,         /* row-major: last index varies fastest */
    SHMSTORE_ORDER_F = 1,         /* column-major: first index varies fastest */
} shmstore_order_t;

#define SHMSTORE_NDIM_MAX 32      /* largest rank a tensor may have */

typedef struct shmstore_client shmstore_client_t;

/* A read-only view of one version of a stored tensor. The bytes stay valid
 * and unchanged until shmstore_release(), even if the key is overwritten or
 * deleted, and even after shmstore_disconnect() of its client. */
typedef struct shmstore_view {
    const void *data;             /* first element, 64-byte aligned */
    size_t nbytes;                /* product of dims times element size */
    shmstore_dtype_t dtype;
    shmstore_order_t order;
    int ndim;
    const int64_t *dims;          /* ndim extents, read-only, valid with the view */
    /* Private to the library. */
    shmstore_client_t *client_;
    uint32_t descriptor_;
} shmstore_view_t;

/* ---- errors -------------------------------------------------------------- */

/* Returns a static English description of code (0, -errno or SHMSTORE_E*). */
const char *shmstore_strerror(int code);

/* Returns the calling thread's message for its last failed call, or "" when
 * there is none. The string is thread-local and valid until the next call. */
const char *shmstore_error_detail(void);

/* Returns the size in bytes of one element of dtype, or 0 if it is invalid. */
size_t shmstore_dtype_size(int dtype);

/* ---- connection ---------------------------------------------------------- */

/* Attaches to the store called name (NULL: $SHMSTORE_NAME, else "default").
 * Fails with SHMSTORE_ENOSTORE when no daemon serves the name,
 * SHMSTORE_EABI on a layout mismatch and SHMSTORE_EFULL when the client
 * table is full. With SHMSTORE_MAP_POPULATE=1 it also populates the page
 * tables of the whole data arena, which takes time in proportion to its
 * size; otherwise large puts populate the parts they touch. */
int shmstore_connect(const char *name, shmstore_client_t **out);

/* Detaches. Views still held stay readable; the mapping goes with the last
 * of them. Removes nothing from the store. */
int shmstore_disconnect(shmstore_client_t *client);

/* Sets how long (ms) a call may wait on a daemon that does not respond
 * before it fails with SHMSTORE_ELOST. Default: $SHMSTORE_TIMEOUT_MS, else
 * 3000. */
int shmstore_set_timeout(shmstore_client_t *client, int timeout_ms);

/* Returns 0 if the daemon is alive, SHMSTORE_ELOST otherwise. */
int shmstore_check_daemon(shmstore_client_t *client);

/* ---- tensors ------------------------------------------------------------- */

/* Stores a copy of a contiguous tensor under key, replacing any tensor of
 * that key in one atomic step. dims contains ndim extents (ndim 0: a scalar). */
int shmstore_put(shmstore_client_t *client, const char *key, const void *data,
                 shmstore_dtype_t dtype, int ndim, const int64_t *dims,
                 shmstore_order_t order);

/* Two-phase put: reserves arena memory for the tensor and returns a
 * writable pointer to it in *data; nothing is visible under key until
 * shmstore_put_commit(). shmstore_put_abort() returns the memory. A commit
 * that fails (SHMSTORE_EFULL) returns the memory too. So the first commit
 * or abort spends the token, and a second one fails with -EINVAL. A client that dies between the two leaks nothing once the
 * daemon notices. */
int shmstore_put_begin(shmstore_client_t *client, const char *key,
                       shmstore_dtype_t dtype, int ndim, const int64_t *dims,
                       shmstore_order_t order, void **data, uint64_t *token);
int shmstore_put_commit(shmstore_client_t *client, uint64_t token);
int shmstore_put_abort(shmstore_client_t *client, uint64_t token);

/* Pins the current version of key and fills *view with a read-only,
 * zero-copy view of it. Fails with SHMSTORE_ENOKEY when key is absent. */
int shmstore_get(shmstore_client_t *client, const char *key, shmstore_view_t *view);

/* Unpins a view filled by shmstore_get(). Safe to call once per view. */
int shmstore_release(shmstore_view_t *view);

/* Copies the tensor under key into out, which has room for a tensor of the given
 * dtype, rank, dims and order. Fails with SHMSTORE_EMISMATCH when dtype,
 * rank or dims differ. When only the order differs, the elements are
 * reordered so that out[i, j, ...] equals the stored [i, j, ...]. */
int shmstore_unpack(shmstore_client_t *client, const char *key, void *out,
                    shmstore_dtype_t dtype, int ndim, const int64_t *dims,
                    shmstore_order_t order);

/* Removes key. Views of the removed version stay valid. */
int shmstore_delete(shmstore_client_t *client, const char *key);

/* Returns 1 if key exists, 0 if not, or a negative code. */
int shmstore_exists(shmstore_client_t *client, const char *key);

/* Checks for key up to tries times, sleeping interval_ms between checks.
 * Returns 1 when found, 0 when all tries missed, SHMSTORE_ELOST if the
 * daemon dies meanwhile, -EINTR if a signal interrupted the sleep. */
int shmstore_poll(shmstore_client_t *client, const char *key, int interval_ms,
                  int tries);

/* Moves the tensor under old_key to new_key (replacing new_key if it
 * exists). Readers see either the old key or the new one. */
int shmstore_rename(shmstore_client_t *client, const char *old_key,
                    const char *new_key);

/* Stores a copy of the tensor under src_key under dst_key. */
int shmstore_copy(shmstore_client_t *client, const char *src_key,
                  const char *dst_key);

/* Calls callback for every key matching the fnmatch(3) glob pattern,
 * matched in the C.UTF-8 locale whatever the caller's locale, so that '?'
 * matches one UTF-8 character. A non-zero return of callback stops the
 * walk and is returned. Keys put or deleted during the walk may or may not
 * be seen. The internal keys of stored models and scripts (prefix
 * "__shmstore__/") are listed only when pattern starts with that prefix. */
typedef int (*shmstore_key_callback)(const char *key, size_t length, void *context);
int shmstore_list_keys(shmstore_client_t *client, const char *pattern,
                       shmstore_key_callback callback, void *context);

/* ---- inference ------------------------------------------------------------ */

/* Stores a TorchScript model (the bytes of a file saved by torch.jit.save)
 * under key, with its settings, so that every rank and worker uses one copy.
 * backend: "TORCH". device: "CPU", "GPU" (first GPU) or "GPU:N".
 * batch_size: maximum samples (sum of the requests' first dimensions) per
 * model call, 0 for no batching; a larger request runs in chunks of at most
 * batch_size samples. A batch waits at most min_batch_timeout_ms for
 * min_batch_size samples. Storing again under key switches new requests to
 * the new model; requests in flight finish on the old one. */
int shmstore_set_model(shmstore_client_t *client, const char *key, const void *model,
                       size_t model_bytes, const char *backend, const char *device,
                       int batch_size, int min_batch_size, int min_batch_timeout_ms);
int shmstore_set_model_from_file(shmstore_client_t *client, const char *key,
                                 const char *path, const char *backend,
                                 const char *device, int batch_size, int min_batch_size,
                                 int min_batch_timeout_ms);

/* Returns 1 if a model is stored under key, 0 if not, or a negative code. */
int shmstore_model_exists(shmstore_client_t *client, const char *key);

/* Runs the model stored under key on the tensors under the n_inputs input
 * keys and stores its outputs under the n_outputs output keys. Waits at
 * most timeout_ms (negative: $SHMSTORE_MODEL_TIMEOUT, else 60000) and fails
 * with -ETIMEDOUT after that, SHMSTORE_EMODEL when the model rejects the
 * request (the detail carries the model's message), SHMSTORE_EWORKER when
 * the worker died during it. */
int shmstore_run_model(shmstore_client_t *client, const char *key, int n_inputs,
                       const char *const *inputs, int n_outputs,
                       const char *const *outputs, int timeout_ms);

/* Runs function fn_name of the TorchScript script stored under key, with
 * the same conventions as shmstore_run_model(). */
int shmstore_run_script(shmstore_client_t *client, const char *key, const char *fn_name,
                        int n_inputs, const char *const *inputs, int n_outputs,
                        const char *const *outputs, int timeout_ms);

/* ---- store statistics (read-only, no client slot used) ------------------- */

typedef struct shmstore_stats {
    int32_t daemon_pid;
    double uptime_s;
    uint64_t arena_bytes;         /* size of the data arena */
    uint64_t used_bytes;          /* allocated arena bytes, headers included */
    uint64_t key_count;
    uint32_t client_count;        /* attached clients */
    uint32_t max_clients;
    uint64_t max_keys;
} shmstore_stats_t;

/* Reads the statistics of the store called name. pids (may be NULL)
 * receives up to max_pids pids of attached clients. */
int shmstore_stats(const char *name, shmstore_stats_t *stats, int32_t *pids,
                   int max_pids);

/* ---- daemon side (used by `shmstore serve`) ------------------------------ */

typedef struct shmstore_daemon shmstore_daemon_t;

typedef struct shmstore_daemon_config {
    uint64_t memory_bytes;        /* data arena size */
    uint32_t max_clients;         /* 0: default 256 */
    uint64_t max_keys;            /* 0: default 65536 */
} shmstore_daemon_config_t;

typedef enum shmstore_event_kind {
    SHMSTORE_EVENT_ATTACH = 1,    /* a client attached: pid */
    SHMSTORE_EVENT_DETACH = 2,    /* a client detached cleanly: pid */
    SHMSTORE_EVENT_DIED = 3,      /* a client died: pid; bytes reclaimed, views unpinned */
    SHMSTORE_EVENT_STALE = 4,     /* start-up removed segments of a dead daemon: pid */
} shmstore_event_kind_t;

typedef struct shmstore_event {
    shmstore_event_kind_t kind;
    int32_t pid;
    uint64_t bytes;               /* DIED: arena bytes reclaimed */
    uint64_t views;               /* DIED: views unpinned */
} shmstore_event_t;

/* Creates the segments of store name, removing those of a dead daemon of
 * the same name, and reserves the arena. Fails with SHMSTORE_EBUSY if a
 * live daemon holds the name, -ENOSPC if /dev/shm is too small (the detail
 * gives both sizes). */
int shmstore_daemon_create(const char *name, const shmstore_daemon_config_t *config,
                           shmstore_daemon_t **out);

/* Does one round of housekeeping: heartbeat, attach and detach messages,
 * reclaiming dead clients. Waits on the daemon doorbell up to timeout_ms
 * first. Writes up to max_events events and returns how many, or a
 * negative code. */
int shmstore_daemon_poll(shmstore_daemon_t *daemon, int timeout_ms,
                         shmstore_event_t *events, int max_events);

/* Marks the store as stopping (new and blocked client calls fail with
 * SHMSTORE_ELOST), unlinks every segment and frees the handle. */
int shmstore_daemon_destroy(shmstore_daemon_t *daemon);

#ifdef __cplusplus
}
#endif

#endif /* SHMSTORE_H */
