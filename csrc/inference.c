/*
 * inference.c - client side of model storage and run requests.
 */
#include <errno.h>
#include <stddef.h>

#include "shmstore.h"

/* NOTE: placeholders until the inference request path lands; every entry
 * point fails with -ENOSYS so that programs link and get a clear error. */

int shmstore_set_model(shmstore_client_t *client, const char *key, const void *model,
                       size_t model_bytes, const char *backend, const char *device,
                       int batch_size, int min_batch_size, int min_batch_timeout_ms)
{
    (void)client; (void)key; (void)model; (void)model_bytes; (void)backend; (void)device;
    (void)batch_size; (void)min_batch_size; (void)min_batch_timeout_ms;
    return -ENOSYS;
}

int shmstore_set_model_from_file(shmstore_client_t *client, const char *key,
                                 const char *path, const char *backend,
                                 const char *device, int batch_size, int min_batch_size,
                                 int min_batch_timeout_ms)
{
    (void)client; (void)key; (void)path; (void)backend; (void)device;
    (void)batch_size; (void)min_batch_size; (void)min_batch_timeout_ms;
    return -ENOSYS;
}

int shmstore_model_exists(shmstore_client_t *client, const char *key)
{
    (void)client; (void)key;
    return -ENOSYS;
}

int shmstore_run_model(shmstore_client_t *client, const char *key, int n_inputs,
                       const char *const *inputs, int n_outputs,
                       const char *const *outputs, int timeout_ms)
{
    (void)client; (void)key; (void)n_inputs; (void)inputs; (void)n_outputs; (void)outputs;
    (void)timeout_ms;
    return -ENOSYS;
}

int shmstore_run_script(shmstore_client_t *client, const char *key, const char *fn_name,
                        int n_inputs, const char *const *inputs, int n_outputs,
                        const char *const *outputs, int timeout_ms)
{
    (void)client; (void)key; (void)fn_name; (void)n_inputs; (void)inputs; (void)n_outputs;
    (void)outputs; (void)timeout_ms;
    return -ENOSYS;
}
