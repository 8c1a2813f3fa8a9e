/*
 * reorder.c - copy a tensor between row-major and column-major order.
 */
#include <string.h>

#include "tensor.h"

void shm_reorder_copy(void *dst, shmstore_order_t dst_order, const void *src,
                      shmstore_order_t src_order, int ndim, const int64_t *dims,
                      size_t element_size)
{
    size_t count = 1;
    for (int i = 0; i < ndim; i++)
        count *= (size_t)dims[i];
    if (count == 0)
        return;

    if (dst_order == src_order || ndim <= 1) {
        memcpy(dst, src, count * element_size);
        return;
    }

    /* Element strides of src, for each axis. */
    size_t src_stride[SHMSTORE_NDIM_MAX];
    size_t stride = 1;
    for (int k = 0; k < ndim; k++) {
        int axis = src_order == SHMSTORE_ORDER_C ? ndim - 1 - k : k;
        src_stride[axis] = stride;
        stride *= (size_t)dims[axis];
    }

    /* Walk dst contiguously: an odometer over the axes in dst's order, the
     * fastest first, keeping the matching src element offset. */
    int64_t position[SHMSTORE_NDIM_MAX] = {0};
    size_t src_offset = 0;
    unsigned char *out = dst;
    const unsigned char *in = src;

    for (size_t n = 0; n < count; n++) {
        memcpy(out + n * element_size, in + src_offset * element_size, element_size);

        for (int k = 0; k < ndim; k++) {
            int axis = dst_order == SHMSTORE_ORDER_C ? ndim - 1 - k : k;
            position[axis]++;
            src_offset += src_stride[axis];
            if (position[axis] < dims[axis])
                break;
            src_offset -= src_stride[axis] * (size_t)dims[axis];
            position[axis] = 0;
        }
    }
}
