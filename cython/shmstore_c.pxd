# Declarations of the public C API in csrc/include/shmstore.h, for cimport.
# Keep in step with the header: a mismatch here compiles but breaks at run time.

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t


cdef extern from "shmstore.h" nogil:
    enum:
        SHMSTORE_ABI_VERSION
        SHMSTORE_KEY_MAX
        SHMSTORE_NAME_MAX
        SHMSTORE_NDIM_MAX

    enum:
        SHMSTORE_ENOKEY
        SHMSTORE_ENOSTORE
        SHMSTORE_ELOST
        SHMSTORE_EABI
        SHMSTORE_EBUSY
        SHMSTORE_EMISMATCH
        SHMSTORE_EFULL
        SHMSTORE_EKEY
        SHMSTORE_EMODEL
        SHMSTORE_EWORKER
        SHMSTORE_ENOWORKER

    ctypedef enum shmstore_dtype_t:
        SHMSTORE_FLOAT16
        SHMSTORE_BFLOAT16
        SHMSTORE_FLOAT32
        SHMSTORE_FLOAT64
        SHMSTORE_INT8
        SHMSTORE_INT16
        SHMSTORE_INT32
        SHMSTORE_INT64
        SHMSTORE_UINT8
        SHMSTORE_UINT16
        SHMSTORE_UINT32
        SHMSTORE_UINT64
        SHMSTORE_BOOL
        SHMSTORE_COMPLEX64
        SHMSTORE_COMPLEX128

    ctypedef enum shmstore_order_t:
        SHMSTORE_ORDER_C
        SHMSTORE_ORDER_F

    ctypedef struct shmstore_client_t:
        pass

    ctypedef struct shmstore_view_t:
        const void *data
        size_t nbytes
        shmstore_dtype_t dtype
        shmstore_order_t order
        int ndim
        const int64_t *dims

    const char *shmstore_strerror(int code)
    const char *shmstore_error_detail()
    size_t shmstore_dtype_size(int dtype)

    int shmstore_connect(const char *name, shmstore_client_t **out)
    int shmstore_disconnect(shmstore_client_t *client)
    int shmstore_set_timeout(shmstore_client_t *client, int timeout_ms)
    int shmstore_check_daemon(shmstore_client_t *client)

    int shmstore_put(shmstore_client_t *client, const char *key, const void *data,
                     shmstore_dtype_t dtype, int ndim, const int64_t *dims,
                     shmstore_order_t order)
    int shmstore_put_begin(shmstore_client_t *client, const char *key,
                           shmstore_dtype_t dtype, int ndim, const int64_t *dims,
                           shmstore_order_t order, void **data, uint64_t *token)
    int shmstore_put_commit(shmstore_client_t *client, uint64_t token)
    int shmstore_put_abort(shmstore_client_t *client, uint64_t token)
    int shmstore_get(shmstore_client_t *client, const char *key, shmstore_view_t *view)
    int shmstore_release(shmstore_view_t *view)
    int shmstore_unpack(shmstore_client_t *client, const char *key, void *out,
                        shmstore_dtype_t dtype, int ndim, const int64_t *dims,
                        shmstore_order_t order)
    int shmstore_delete(shmstore_client_t *client, const char *key)
    int shmstore_exists(shmstore_client_t *client, const char *key)
    int shmstore_poll(shmstore_client_t *client, const char *key, int interval_ms,
                      int tries)
    int shmstore_rename(shmstore_client_t *client, const char *old_key,
                        const char *new_key)
    int shmstore_copy(shmstore_client_t *client, const char *src_key,
                      const char *dst_key)

    ctypedef int (*shmstore_key_callback)(const char *key, size_t length, void *context)
    int shmstore_list_keys(shmstore_client_t *client, const char *pattern,
                           shmstore_key_callback callback, void *context)

    int shmstore_set_model(shmstore_client_t *client, const char *key, const void *model,
                           size_t model_bytes, const char *backend, const char *device,
                           int batch_size, int min_batch_size, int min_batch_timeout_ms)
    int shmstore_set_model_from_file(shmstore_client_t *client, const char *key,
                                     const char *path, const char *backend,
                                     const char *device, int batch_size,
                                     int min_batch_size, int min_batch_timeout_ms)
    int shmstore_model_exists(shmstore_client_t *client, const char *key)
    int shmstore_run_model(shmstore_client_t *client, const char *key, int n_inputs,
                           const char *const *inputs, int n_outputs,
                           const char *const *outputs, int timeout_ms)
    int shmstore_run_script(shmstore_client_t *client, const char *key,
                            const char *fn_name, int n_inputs,
                            const char *const *inputs, int n_outputs,
                            const char *const *outputs, int timeout_ms)

    ctypedef struct shmstore_stats_t:
        int32_t daemon_pid
        double uptime_s
        uint64_t arena_bytes
        uint64_t used_bytes
        uint64_t key_count
        uint32_t client_count
        uint32_t max_clients
        uint64_t max_keys

    int shmstore_stats(const char *name, shmstore_stats_t *stats, int32_t *pids,
                       int max_pids)

    ctypedef struct shmstore_daemon_t:
        pass

    ctypedef struct shmstore_daemon_config_t:
        uint64_t memory_bytes
        uint32_t max_clients
        uint64_t max_keys

    ctypedef enum shmstore_event_kind_t:
        SHMSTORE_EVENT_ATTACH
        SHMSTORE_EVENT_DETACH
        SHMSTORE_EVENT_DIED
        SHMSTORE_EVENT_STALE

    ctypedef struct shmstore_event_t:
        shmstore_event_kind_t kind
        int32_t pid
        uint64_t bytes
        uint64_t views

    int shmstore_daemon_create(const char *name, const shmstore_daemon_config_t *config,
                               shmstore_daemon_t **out)
    int shmstore_daemon_poll(shmstore_daemon_t *daemon, int timeout_ms,
                             shmstore_event_t *events, int max_events)
    int shmstore_daemon_destroy(shmstore_daemon_t *daemon)
