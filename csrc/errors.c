/*
 * errors.c - error names, the thread-local error detail and dtype sizes.
 */
#define _GNU_SOURCE
#include "errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "shmstore.h"

/* Longest detail kept; longer messages are cut. */
#define DETAIL_BYTES 1024

static _Thread_local char error_detail[DETAIL_BYTES];

int shm_fail(int code, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(error_detail, sizeof error_detail, format, arguments);
    va_end(arguments);
    return code;
}

const char *shmstore_error_detail(void)
{
    return error_detail;
}

const char *shmstore_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
    case SHMSTORE_ENOKEY:
        return "key not found";
    case SHMSTORE_ENOSTORE:
        return "no store of that name on this node";
    case SHMSTORE_ELOST:
        return "connection to the store lost: the daemon stopped or died";
    case SHMSTORE_EABI:
        return "shared-memory layout mismatch (magic, ABI version or size)";
    case SHMSTORE_EBUSY:
        return "a live daemon already serves that store name";
    case SHMSTORE_EMISMATCH:
        return "dtype, rank or dims differ from the stored tensor";
    case SHMSTORE_EFULL:
        return "a fixed-size table of the store is full";
    case SHMSTORE_EKEY:
        return "invalid key";
    case SHMSTORE_EMODEL:
        return "the model or script failed on this request";
    case SHMSTORE_EWORKER:
        return "the inference worker died during the request";
    case SHMSTORE_ENOWORKER:
        return "the store runs no inference workers";
    default:
        break;
    }

    if (code < 0 && code > -200) {
        /* strerrordesc_np is thread-safe and returns a static string. */
        const char *text = strerrordesc_np(-code);
        if (text != NULL)
            return text;
    }
    return "unknown error code";
}

size_t shmstore_dtype_size(int dtype)
{
    switch (dtype) {
    case SHMSTORE_INT8:
    case SHMSTORE_UINT8:
    case SHMSTORE_BOOL:
        return 1;
    case SHMSTORE_FLOAT16:
    case SHMSTORE_BFLOAT16:
    case SHMSTORE_INT16:
    case SHMSTORE_UINT16:
        return 2;
    case SHMSTORE_FLOAT32:
    case SHMSTORE_INT32:
    case SHMSTORE_UINT32:
        return 4;
    case SHMSTORE_FLOAT64:
    case SHMSTORE_INT64:
    case SHMSTORE_UINT64:
    case SHMSTORE_COMPLEX64:
        return 8;
    case SHMSTORE_COMPLEX128:
        return 16;
    default:
        return 0;
    }
}
