# cython: language_level=3, embedsignature=True
"""Thin bindings over the shmstore C API (csrc/include/shmstore.h).

Rules that every wrapper below follows:
  - The GIL is released around each C call that can block or take time (connect, put, get,
    poll, list, stats, daemon poll).
  - A call that returns -EINTR ran into a signal. The wrapper runs the Python signal handlers
    (PyErr_CheckSignals, which raises KeyboardInterrupt on Ctrl-C) and then retries.
  - Waits longer than SIGNAL_SLICE_MS are split into slices so that Ctrl-C is seen promptly.
  - A negative code becomes the matching shmstore.errors exception, with the calling thread's
    shmstore_error_detail() as its detail.
"""

from cpython.buffer cimport PyBUF_FORMAT, PyBUF_ND, PyBUF_STRIDES, PyBUF_WRITABLE
from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBUF_F_CONTIGUOUS, PyBUF_ANY_CONTIGUOUS
from cpython.exc cimport PyErr_CheckSignals
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.buffer cimport PyBUF_WRITE, PyObject_GetBuffer, PyBuffer_Release
from libc.errno cimport EINTR, EBADF, EINVAL
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy
from posix.time cimport clock_gettime, nanosleep, timespec, CLOCK_MONOTONIC

cimport shmstore_c as c

from shmstore.errors import make_error

cdef enum:
    # Longest uninterrupted sleep of a wait done here, in ms: the Ctrl-C response time.
    SIGNAL_SLICE_MS = 50

ABI_VERSION = c.SHMSTORE_ABI_VERSION
KEY_MAX = c.SHMSTORE_KEY_MAX
NAME_MAX = c.SHMSTORE_NAME_MAX
NDIM_MAX = c.SHMSTORE_NDIM_MAX

ORDER_C = c.SHMSTORE_ORDER_C
ORDER_F = c.SHMSTORE_ORDER_F

# Project error codes, exported so that tests can compare them with shmstore.errors.
ERROR_CODES = {
    "SHMSTORE_ENOKEY": c.SHMSTORE_ENOKEY,
    "SHMSTORE_ENOSTORE": c.SHMSTORE_ENOSTORE,
    "SHMSTORE_ELOST": c.SHMSTORE_ELOST,
    "SHMSTORE_EABI": c.SHMSTORE_EABI,
    "SHMSTORE_EBUSY": c.SHMSTORE_EBUSY,
    "SHMSTORE_EMISMATCH": c.SHMSTORE_EMISMATCH,
    "SHMSTORE_EFULL": c.SHMSTORE_EFULL,
    "SHMSTORE_EKEY": c.SHMSTORE_EKEY,
    "SHMSTORE_EMODEL": c.SHMSTORE_EMODEL,
    "SHMSTORE_EWORKER": c.SHMSTORE_EWORKER,
    "SHMSTORE_ENOWORKER": c.SHMSTORE_ENOWORKER,
}

# dtype codes of shmstore.h by name. bfloat16 has no numpy dtype; its buffers carry the raw
# 16-bit patterns as uint16.
DTYPE_CODES = {
    "float16": c.SHMSTORE_FLOAT16,
    "bfloat16": c.SHMSTORE_BFLOAT16,
    "float32": c.SHMSTORE_FLOAT32,
    "float64": c.SHMSTORE_FLOAT64,
    "int8": c.SHMSTORE_INT8,
    "int16": c.SHMSTORE_INT16,
    "int32": c.SHMSTORE_INT32,
    "int64": c.SHMSTORE_INT64,
    "uint8": c.SHMSTORE_UINT8,
    "uint16": c.SHMSTORE_UINT16,
    "uint32": c.SHMSTORE_UINT32,
    "uint64": c.SHMSTORE_UINT64,
    "bool": c.SHMSTORE_BOOL,
    "complex64": c.SHMSTORE_COMPLEX64,
    "complex128": c.SHMSTORE_COMPLEX128,
}
DTYPE_NAMES = {code: name for name, code in DTYPE_CODES.items()}

EVENT_ATTACH = c.SHMSTORE_EVENT_ATTACH
EVENT_DETACH = c.SHMSTORE_EVENT_DETACH
EVENT_DIED = c.SHMSTORE_EVENT_DIED
EVENT_STALE = c.SHMSTORE_EVENT_STALE


cdef const char *buffer_format(int dtype) noexcept:
    """Return the struct-module format of dtype, or NULL if dtype is invalid."""
    if dtype == c.SHMSTORE_FLOAT16:
        return b"e"
    if dtype == c.SHMSTORE_BFLOAT16:
        return b"H"
    if dtype == c.SHMSTORE_FLOAT32:
        return b"f"
    if dtype == c.SHMSTORE_FLOAT64:
        return b"d"
    if dtype == c.SHMSTORE_INT8:
        return b"b"
    if dtype == c.SHMSTORE_INT16:
        return b"h"
    if dtype == c.SHMSTORE_INT32:
        return b"i"
    if dtype == c.SHMSTORE_INT64:
        return b"q"
    if dtype == c.SHMSTORE_UINT8:
        return b"B"
    if dtype == c.SHMSTORE_UINT16:
        return b"H"
    if dtype == c.SHMSTORE_UINT32:
        return b"I"
    if dtype == c.SHMSTORE_UINT64:
        return b"Q"
    if dtype == c.SHMSTORE_BOOL:
        return b"?"
    if dtype == c.SHMSTORE_COMPLEX64:
        return b"Zf"
    if dtype == c.SHMSTORE_COMPLEX128:
        return b"Zd"
    return NULL


def strerror(int code):
    """Return the fixed English description of a C code."""
    return c.shmstore_strerror(code).decode("utf-8", "replace")


def dtype_size(int dtype):
    """Return the size in bytes of one element of dtype, 0 if dtype is invalid."""
    return c.shmstore_dtype_size(dtype)


cdef int check(int rc, str context) except -1:
    """Return rc when it is not negative, else raise the exception for that code."""
    if rc >= 0:
        return rc
    detail = c.shmstore_error_detail().decode("utf-8", "replace")
    raise make_error(rc, context, detail, strerror(rc))


cdef bytes encode_text(object text, str what):
    """Encode a key, name or pattern as NUL-free UTF-8, or raise ValueError naming it."""
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a str, got {type(text).__name__} {text!r}")
    encoded = (<str>text).encode("utf-8")
    if b"\0" in encoded:
        raise ValueError(f"{what} {text!r} contains a NUL character")
    return encoded


cdef bytes encode_key(object key):
    """Encode a key as UTF-8 of 1 to KEY_MAX bytes, or raise ValueError naming it."""
    encoded = encode_text(key, "key")
    if len(encoded) == 0:
        raise ValueError("key must not be empty")
    if len(encoded) > c.SHMSTORE_KEY_MAX:
        shown = key[:40] + "..."
        raise ValueError(
            f"key {shown!r} is {len(encoded)} bytes of UTF-8; the maximum is "
            f"{c.SHMSTORE_KEY_MAX}")
    return encoded


cdef int check_buffer_length(object key, str what, Py_ssize_t length, int dtype,
                             object shape) except -1:
    """Raise ValueError unless a buffer of length bytes holds exactly the tensor of shape.

    The C core copies as many bytes as dtype and shape describe, so a shorter buffer would be
    read or written past its end. An unknown dtype passes here and the C core rejects it.
    """
    cdef size_t element = c.shmstore_dtype_size(dtype)
    if element == 0:
        return 0
    expected = element
    for extent in shape:
        expected *= extent
    if length != expected:
        raise ValueError(f"{what} for tensor {key!r} has {length} bytes, but dtype code {dtype} "
                         f"and shape {tuple(shape)} describe {expected} bytes")
    return 0


cdef double monotonic_ms() noexcept nogil:
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC, &now)
    return now.tv_sec * 1000.0 + now.tv_nsec / 1.0e6


cdef void sleep_ms(double duration_ms) noexcept nogil:
    """Sleep up to duration_ms; a signal may end the sleep early."""
    cdef timespec request
    if duration_ms <= 0:
        return
    request.tv_sec = <long>(duration_ms / 1000.0)
    request.tv_nsec = <long>((duration_ms - request.tv_sec * 1000.0) * 1.0e6)
    nanosleep(&request, NULL)


cdef class View:
    """A read-only, zero-copy view of one version of a stored tensor.

    The view pins that version: its bytes stay valid and unchanged until the View is released
    (explicitly with release(), or when it is garbage-collected), even if the key is
    overwritten or deleted, and even after its Client is closed. It exports the buffer
    protocol, so `numpy.asarray(view)` wraps the memory without copying.
    """

    cdef c.shmstore_view_t view
    cdef bint pinned
    cdef Py_ssize_t *shape
    cdef Py_ssize_t *strides
    cdef Py_ssize_t itemsize
    cdef int exports
    cdef readonly str key

    def __cinit__(self):
        self.pinned = False
        self.shape = NULL
        self.strides = NULL
        self.exports = 0

    cdef int setup_layout(self) except -1:
        """Fill shape and strides (in bytes) from the C view's dims and order."""
        cdef int ndim = self.view.ndim
        cdef int i
        cdef Py_ssize_t step

        self.itemsize = c.shmstore_dtype_size(self.view.dtype)
        if self.itemsize == 0 or buffer_format(self.view.dtype) == NULL:
            raise ValueError(f"tensor {self.key!r} has the unknown dtype code {self.view.dtype}")
        if ndim == 0:
            return 0

        self.shape = <Py_ssize_t *>malloc(2 * ndim * sizeof(Py_ssize_t))
        if self.shape == NULL:
            raise MemoryError()
        self.strides = self.shape + ndim

        for i in range(ndim):
            self.shape[i] = <Py_ssize_t>self.view.dims[i]

        step = self.itemsize
        if self.view.order == c.SHMSTORE_ORDER_F:
            for i in range(ndim):
                self.strides[i] = step
                step *= self.shape[i]
        else:
            for i in range(ndim - 1, -1, -1):
                self.strides[i] = step
                step *= self.shape[i]
        return 0

    def __dealloc__(self):
        if self.pinned:
            c.shmstore_release(&self.view)
            self.pinned = False
        free(self.shape)
        self.shape = NULL

    def release(self):
        """Unpin the version now. Fails while a buffer (a numpy array) still uses it."""
        if self.exports > 0:
            raise BufferError(
                f"view of {self.key!r} still has {self.exports} buffer export(s); "
                "delete the arrays that use it first")
        if self.pinned:
            self.pinned = False
            check(c.shmstore_release(&self.view), f"release of {self.key!r}")

    @property
    def released(self):
        return not self.pinned

    @property
    def dtype(self):
        """dtype name ("float32", "bfloat16", ...)."""
        return DTYPE_NAMES.get(self.view.dtype, str(self.view.dtype))

    @property
    def dtype_code(self):
        return <int>self.view.dtype

    @property
    def order(self):
        """Memory order: "C" (row-major) or "F" (column-major)."""
        return "F" if self.view.order == c.SHMSTORE_ORDER_F else "C"

    @property
    def shape_tuple(self):
        return tuple(self.view.dims[i] for i in range(self.view.ndim))

    @property
    def nbytes(self):
        return self.view.nbytes

    @property
    def address(self):
        """Address of the first element in this process (for tests of zero-copy)."""
        return <size_t>self.view.data

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        cdef bint f_layout = self.view.order == c.SHMSTORE_ORDER_F and self.view.ndim > 1
        cdef bint c_layout = self.view.order == c.SHMSTORE_ORDER_C and self.view.ndim > 1

        if not self.pinned:
            raise BufferError(f"view of {self.key!r} was released")
        if flags & PyBUF_WRITABLE:
            raise BufferError(f"view of {self.key!r} is read-only")
        if f_layout and (flags & PyBUF_STRIDES) != PyBUF_STRIDES:
            raise BufferError(
                f"tensor {self.key!r} is in Fortran order; request strides to use it")
        if f_layout and (flags & PyBUF_C_CONTIGUOUS) == PyBUF_C_CONTIGUOUS:
            raise BufferError(f"tensor {self.key!r} is in Fortran order, not C order")
        if c_layout and (flags & PyBUF_F_CONTIGUOUS) == PyBUF_F_CONTIGUOUS:
            raise BufferError(f"tensor {self.key!r} is in C order, not Fortran order")

        # A zero-sized tensor may have no data pointer; consumers want a non-NULL one.
        buffer.buf = <void *>self.view.data if self.view.data != NULL else <void *>self
        buffer.obj = self
        buffer.len = self.view.nbytes
        buffer.readonly = 1
        buffer.itemsize = self.itemsize
        buffer.format = <char *>buffer_format(self.view.dtype) if flags & PyBUF_FORMAT else NULL
        buffer.ndim = self.view.ndim
        buffer.shape = self.shape if (flags & PyBUF_ND) == PyBUF_ND else NULL
        buffer.strides = self.strides if (flags & PyBUF_STRIDES) == PyBUF_STRIDES else NULL
        buffer.suboffsets = NULL
        buffer.internal = NULL
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *buffer):
        self.exports -= 1

    def __repr__(self):
        state = "released" if not self.pinned else f"{self.view.nbytes} bytes"
        return (f"<shmstore View {self.key!r} {self.dtype} {self.shape_tuple} "
                f"order={self.order} {state}>")


def copy_views(views, out):
    """Copy the tensors of views, one after the other, into out, a writable C-contiguous
    buffer of exactly their total size: the inference workers stack requests' rows this way,
    with one copy. Every view must be in C order (or of rank 0 or 1). Raises ValueError
    otherwise, before anything is copied."""
    cdef Py_buffer target
    cdef View view
    cdef size_t total = 0
    cdef size_t offset = 0

    for item in views:
        view = <View?>item
        if not view.pinned:
            raise ValueError(f"copy_views: the view of {view.key!r} was released")
        if view.view.ndim > 1 and view.view.order != c.SHMSTORE_ORDER_C:
            raise ValueError(f"copy_views: tensor {view.key!r} is in Fortran order")
        total += view.view.nbytes

    PyObject_GetBuffer(out, &target, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE)
    try:
        if <size_t>target.len != total:
            raise ValueError(f"copy_views: the views hold {total} bytes, but the target "
                             f"buffer has {target.len}")
        for item in views:
            view = <View>item
            # A zero-sized tensor may have no data pointer, which memcpy must not get.
            if view.view.nbytes > 0:
                memcpy(<char *>target.buf + offset, view.view.data, view.view.nbytes)
            offset += view.view.nbytes
    finally:
        PyBuffer_Release(&target)


cdef class PendingPut:
    """Arena memory reserved by put_begin, not yet visible under its key.

    `memory` is a writable 1-d memoryview of the tensor bytes. commit() publishes the tensor
    in one atomic step; abort() returns the memory. A PendingPut dropped without either is
    aborted.
    """

    cdef Client client
    cdef uint64_t token
    cdef bint open
    cdef readonly object memory
    cdef readonly str key

    def __dealloc__(self):
        if self.open and self.client is not None and self.client.handle != NULL:
            c.shmstore_put_abort(self.client.handle, self.token)
            self.open = False

    cdef int finish(self) except -1:
        self.open = False
        memory = self.memory
        self.memory = None
        if memory is not None:
            try:
                memory.release()
            except BufferError:
                # An array made from the memory is still alive; the memoryview ends with it.
                pass
        return 0

    def commit(self):
        """Publish the tensor under its key, replacing any earlier version in one step."""
        cdef int rc
        if not self.open:
            raise ValueError(f"put of {self.key!r} was already committed or aborted")
        cdef c.shmstore_client_t *handle = self.client.require()
        self.finish()
        with nogil:
            rc = c.shmstore_put_commit(handle, self.token)
        check(rc, f"put_tensor({self.key!r}) commit")

    def abort(self):
        """Return the reserved memory; nothing becomes visible under the key."""
        cdef int rc
        if not self.open:
            return
        cdef c.shmstore_client_t *handle = self.client.require()
        self.finish()
        with nogil:
            rc = c.shmstore_put_abort(handle, self.token)
        check(rc, f"put_tensor({self.key!r}) abort")


cdef struct KeyList:
    char *data              # records of a size_t length followed by the key bytes
    size_t used
    size_t capacity
    size_t count
    bint out_of_memory


cdef int collect_key(const char *key, size_t length, void *context) noexcept nogil:
    """Append one key to the KeyList in context; runs without the GIL."""
    cdef KeyList *keys = <KeyList *>context
    cdef size_t needed = keys.used + sizeof(size_t) + length
    cdef size_t capacity
    cdef char *grown

    if needed > keys.capacity:
        capacity = keys.capacity * 2 if keys.capacity else 4096
        while capacity < needed:
            capacity *= 2
        grown = <char *>realloc(keys.data, capacity)
        if grown == NULL:
            keys.out_of_memory = True
            return 1
        keys.data = grown
        keys.capacity = capacity

    memcpy(keys.data + keys.used, &length, sizeof(size_t))
    memcpy(keys.data + keys.used + sizeof(size_t), key, length)
    keys.used = needed
    keys.count += 1
    return 0


cdef class Client:
    """A connection to the store of one name on this node.

    NOTE: close() must not run while another thread of this process is inside a call on the
    same Client; the C handle is freed by close().
    """

    cdef c.shmstore_client_t *handle
    cdef readonly str name

    def __cinit__(self, name=None, timeout_ms=None):
        cdef c.shmstore_client_t *handle = NULL
        cdef const char *name_ptr = NULL
        cdef bytes encoded
        cdef int rc

        self.handle = NULL
        if name is not None:
            encoded = encode_text(name, "store name")
            name_ptr = encoded

        while True:
            with nogil:
                rc = c.shmstore_connect(name_ptr, &handle)
            if rc != -EINTR:
                break
            PyErr_CheckSignals()
        check(rc, f"connect to store {name!r}" if name is not None else "connect to store")
        self.handle = handle
        self.name = name

        if timeout_ms is not None:
            self.set_timeout(timeout_ms)

    def __dealloc__(self):
        if self.handle != NULL:
            c.shmstore_disconnect(self.handle)
            self.handle = NULL

    cdef c.shmstore_client_t *require(self) except NULL:
        if self.handle == NULL:
            raise make_error(-EBADF, "", "", "the client is closed; create a new Client")
        return self.handle

    @property
    def closed(self):
        return self.handle == NULL

    def close(self):
        """Detach from the store. Views still held stay readable."""
        cdef c.shmstore_client_t *handle = self.handle
        cdef int rc
        if handle == NULL:
            return
        self.handle = NULL
        with nogil:
            rc = c.shmstore_disconnect(handle)
        check(rc, "close")

    def set_timeout(self, int timeout_ms):
        """Set how long (ms) a call waits on an unresponsive daemon before it fails."""
        check(c.shmstore_set_timeout(self.require(), timeout_ms), f"set_timeout({timeout_ms})")

    def check_daemon(self):
        """Raise ConnectionLostError if the daemon is gone."""
        cdef c.shmstore_client_t *handle = self.require()
        cdef int rc
        with nogil:
            rc = c.shmstore_check_daemon(handle)
        check(rc, "check_daemon")

    def put_begin(self, key, int dtype, shape, int order):
        """Reserve arena memory for a tensor and return a PendingPut to fill and commit."""
        cdef c.shmstore_client_t *handle = self.require()
        cdef bytes encoded = encode_key(key)
        cdef const char *key_ptr = encoded
        cdef int ndim = len(shape)
        cdef int64_t dims[c.SHMSTORE_NDIM_MAX]
        cdef void *data = NULL
        cdef uint64_t token = 0
        cdef size_t nbytes
        cdef int rc
        cdef int i

        if ndim > c.SHMSTORE_NDIM_MAX:
            raise ValueError(
                f"tensor {key!r} has rank {ndim}; the maximum is {c.SHMSTORE_NDIM_MAX}")
        nbytes = c.shmstore_dtype_size(dtype)
        if nbytes == 0:
            raise TypeError(f"unknown dtype code {dtype} for tensor {key!r}")
        # A Python int for messages: the size_t product wraps for shapes the C core rejects.
        requested_bytes = nbytes
        for i in range(ndim):
            if shape[i] < 0:
                raise ValueError(f"tensor {key!r} has a negative extent in shape {tuple(shape)}")
            dims[i] = shape[i]
            nbytes *= <size_t>dims[i]
            requested_bytes *= shape[i]

        while True:
            with nogil:
                rc = c.shmstore_put_begin(handle, key_ptr, <c.shmstore_dtype_t>dtype, ndim,
                                          dims, <c.shmstore_order_t>order, &data, &token)
            if rc != -EINTR:
                break
            PyErr_CheckSignals()
        check(rc, f"put_tensor({key!r}, {requested_bytes} bytes)")

        pending = PendingPut()
        pending.client = self
        pending.token = token
        pending.open = True
        pending.key = key
        if nbytes > 0:
            pending.memory = PyMemoryView_FromMemory(<char *>data, nbytes, PyBUF_WRITE)
        else:
            pending.memory = memoryview(bytearray())
        return pending

    def put_buffer(self, key, data, int dtype, shape, int order):
        """Store a copy of data, a C- or Fortran-contiguous buffer, in one C call.

        The bytes are taken as they lie in memory; dtype, shape and order describe them.
        """
        cdef c.shmstore_client_t *handle = self.require()
        cdef bytes encoded = encode_key(key)
        cdef const char *key_ptr = encoded
        cdef int ndim = len(shape)
        cdef int64_t dims[c.SHMSTORE_NDIM_MAX]
        cdef Py_buffer source
        cdef int rc
        cdef int i

        if ndim > c.SHMSTORE_NDIM_MAX:
            raise ValueError(
                f"tensor {key!r} has rank {ndim}; the maximum is {c.SHMSTORE_NDIM_MAX}")
        for i in range(ndim):
            dims[i] = shape[i]

        PyObject_GetBuffer(data, &source, PyBUF_ANY_CONTIGUOUS | PyBUF_STRIDES)
        try:
            check_buffer_length(key, "data", source.len, dtype, shape)
            while True:
                with nogil:
                    rc = c.shmstore_put(handle, key_ptr, source.buf, <c.shmstore_dtype_t>dtype,
                                        ndim, dims, <c.shmstore_order_t>order)
                if rc != -EINTR:
                    break
                PyErr_CheckSignals()
            check(rc, f"put_tensor({key!r}, {source.len} bytes)")
        finally:
            PyBuffer_Release(&source)

    def put_rows(self, keys, data, int dtype, shape, rows):
        """Store consecutive blocks of rows of data under keys, one C call per key.

        data is a C-contiguous buffer of the given dtype and shape; block i is the next
        rows[i] rows along dimension 0 and keeps the other extents. Used by the inference
        workers to hand each request of a batch its own rows. Returns a list with one result
        code per key (0 or a negative code); an error does not stop the later keys.
        """
        cdef c.shmstore_client_t *handle = self.require()
        cdef int ndim = len(shape)
        cdef int64_t dims[c.SHMSTORE_NDIM_MAX]
        cdef Py_buffer source
        cdef size_t row_bytes
        cdef size_t offset = 0
        cdef bytes encoded
        cdef const char *key_ptr
        cdef const char *base
        cdef int rc
        cdef int i

        if ndim < 1 or ndim > c.SHMSTORE_NDIM_MAX:
            raise ValueError(f"put_rows needs a tensor of rank 1 to {c.SHMSTORE_NDIM_MAX}, "
                             f"not {ndim}")
        if len(keys) != len(rows):
            raise ValueError(f"put_rows got {len(keys)} keys for {len(rows)} row counts")
        if any(count < 0 for count in rows):
            raise ValueError(f"put_rows: invalid row counts {list(rows)} (expected none "
                             f"below 0)")
        if sum(rows) != shape[0]:
            raise ValueError(f"put_rows: row counts add up to {sum(rows)}, but the tensor "
                             f"has {shape[0]} rows")
        for i in range(ndim):
            dims[i] = shape[i]
        row_bytes = c.shmstore_dtype_size(dtype)
        for i in range(1, ndim):
            row_bytes *= <size_t>dims[i]

        results = []
        PyObject_GetBuffer(data, &source, PyBUF_C_CONTIGUOUS)
        try:
            check_buffer_length("put_rows", "data", source.len, dtype, shape)
            base = <const char *>source.buf
            for key, count in zip(keys, rows):
                try:
                    encoded = encode_key(key)
                except ValueError:
                    results.append(-EINVAL)
                    offset += row_bytes * <size_t>count
                    continue
                key_ptr = encoded
                dims[0] = count
                while True:
                    with nogil:
                        rc = c.shmstore_put(handle, key_ptr, base + offset,
                                            <c.shmstore_dtype_t>dtype, ndim, dims,
                                            c.SHMSTORE_ORDER_C)
                    if rc != -EINTR:
                        break
                    PyErr_CheckSignals()
                results.append(rc)
                offset += row_bytes * <size_t>count
        finally:
            PyBuffer_Release(&source)
        return results

    def get(self, key):
        """Pin the current version of key and return a View of it."""
        return self.pin(key)

    cdef View pin(self, object key):
        cdef c.shmstore_client_t *handle = self.require()
        cdef bytes encoded = encode_key(key)
        cdef const char *key_ptr = encoded
        cdef View view = View()
        cdef int rc

        view.key = key
        while True:
            with nogil:
                rc = c.shmstore_get(handle, key_ptr, &view.view)
            if rc != -EINTR:
                break
            PyErr_CheckSignals()
        if rc < 0:
            check(rc, f"get_tensor({key!r})")
        view.pinned = True
        view.setup_layout()
        return view

    def get_views(self, keys):
        """Pin the current version of each key of keys; return (views, rows, layout).

        Made for the inputs of one inference request, which the workers stack with other
        requests' inputs along dimension 0. rows is the first extent of the first tensor (0
        for rank 0 or no keys). layout is a hashable tuple of each tensor's dtype code and
        other extents, so requests with equal layouts can be stacked (in C or Fortran order);
        it is None when the tensors cannot be stacked with any others (one has rank 0, or
        their first extents differ). Raises like get() for the first key that cannot be read,
        with that key in the exception's .key.
        """
        cdef list views = []
        cdef list layout = []
        cdef View view
        cdef int64_t rows = 0
        cdef bint stackable = True
        cdef int i

        for key in keys:
            try:
                view = self.pin(key)
            except Exception as error:
                error.key = key
                raise
            views.append(view)

            if view.view.ndim == 0:
                stackable = False
            elif len(views) == 1:
                rows = view.view.dims[0]
            elif view.view.dims[0] != rows:
                stackable = False
            layout.append(<int>view.view.dtype)
            layout.append(tuple(view.view.dims[i] for i in range(1, view.view.ndim)))

        if not views or not stackable:
            return views, rows, None
        return views, rows, tuple(layout)

    def unpack(self, key, out, int dtype, shape, int order):
        """Copy the tensor under key into out, a writable C- or Fortran-contiguous buffer."""
        cdef c.shmstore_client_t *handle = self.require()
        cdef bytes encoded = encode_key(key)
        cdef const char *key_ptr = encoded
        cdef int ndim = len(shape)
        cdef int64_t dims[c.SHMSTORE_NDIM_MAX]
        cdef Py_buffer target
        cdef int rc
        cdef int i

        if ndim > c.SHMSTORE_NDIM_MAX:
            raise ValueError(f"output for {key!r} has rank {ndim}; the maximum is "
                             f"{c.SHMSTORE_NDIM_MAX}")
        for i in range(ndim):
            dims[i] = shape[i]

        PyObject_GetBuffer(out, &target, PyBUF_WRITABLE | PyBUF_ANY_CONTIGUOUS | PyBUF_STRIDES)
        try:
            check_buffer_length(key, "out", target.len, dtype, shape)
            while True:
                with nogil:
                    rc = c.shmstore_unpack(handle, key_ptr, target.buf,
                                           <c.shmstore_dtype_t>dtype, ndim, dims,
                                           <c.shmstore_order_t>order)
                if rc != -EINTR:
                    break
                PyErr_CheckSignals()
            check(rc, f"unpack_tensor({key!r})")
        finally:
            PyBuffer_Release(&target)

    def delete(self, key):
        cdef c.shmstore_client_t *handle = self.require()
        cdef bytes encoded = encode_key(key)
        cdef const char *key_ptr = encoded
        cdef int rc
        while True:
            with nogil:
                rc = c.shmstore_delete(handle, key_ptr)
            if rc != -EINTR:
                break
            PyErr_CheckSignals()
        check(rc, f"delete_tensor({key!r})")

    def exists(self, key):
        cdef c.shmstore_client_t *handle = self.require()
        cdef bytes encoded = encode_key(key)
        cdef const char *key_ptr = encoded
        cdef int rc
        while True:
            with nogil:
                rc = c.shmstore_exists(handle, key_ptr)
            if rc != -EINTR:
                break
            PyErr_CheckSignals()
        return check(rc, f"exists({key!r})") == 1

    def poll(self, key, int interval_ms, int tries):
        """Check for key up to tries times, interval_ms apart; return True when found.

        The sleeps are done here in slices of at most SIGNAL_SLICE_MS, checking the daemon's
        liveness and the Python signal handlers after each slice, so that Ctrl-C raises
        KeyboardInterrupt and a dead daemon raises ConnectionLostError without waiting for the
        whole interval.
        """
        cdef c.shmstore_client_t *handle = self.require()
        cdef bytes encoded = encode_key(key)
        cdef const char *key_ptr = encoded
        cdef double deadline
        cdef double remaining
        cdef int attempt
        cdef int rc

        if tries < 1:
            raise ValueError(f"poll of {key!r}: tries must be at least 1, got {tries}")
        if interval_ms < 0:
            raise ValueError(f"poll of {key!r}: interval_ms must not be negative, got "
                             f"{interval_ms}")

        for attempt in range(tries):
            while True:
                with nogil:
                    rc = c.shmstore_exists(handle, key_ptr)
                if rc != -EINTR:
                    break
                PyErr_CheckSignals()
            if check(rc, f"poll_tensor({key!r})") == 1:
                return True
            if attempt == tries - 1:
                break

            deadline = monotonic_ms() + interval_ms
            remaining = interval_ms
            while remaining > 0:
                with nogil:
                    sleep_ms(remaining if remaining < SIGNAL_SLICE_MS else SIGNAL_SLICE_MS)
                    rc = c.shmstore_check_daemon(handle)
                PyErr_CheckSignals()
                check(rc, f"poll_tensor({key!r})")
                remaining = deadline - monotonic_ms()
        return False

    def rename(self, old_key, new_key):
        cdef c.shmstore_client_t *handle = self.require()
        cdef bytes old_encoded = encode_key(old_key)
        cdef bytes new_encoded = encode_key(new_key)
        cdef const char *old_ptr = old_encoded
        cdef const char *new_ptr = new_encoded
        cdef int rc
        while True:
            with nogil:
                rc = c.shmstore_rename(handle, old_ptr, new_ptr)
            if rc != -EINTR:
                break
            PyErr_CheckSignals()
        check(rc, f"rename_tensor({old_key!r}, {new_key!r})")

    def copy(self, src_key, dst_key):
        cdef c.shmstore_client_t *handle = self.require()
        cdef bytes src_encoded = encode_key(src_key)
        cdef bytes dst_encoded = encode_key(dst_key)
        cdef const char *src_ptr = src_encoded
        cdef const char *dst_ptr = dst_encoded
        cdef int rc
        while True:
            with nogil:
                rc = c.shmstore_copy(handle, src_ptr, dst_ptr)
            if rc != -EINTR:
                break
            PyErr_CheckSignals()
        check(rc, f"copy_tensor({src_key!r}, {dst_key!r})")

    def keys(self, pattern="*"):
        """Return the keys matching the fnmatch(3) glob pattern, as a list of str."""
        cdef c.shmstore_client_t *handle = self.require()
        cdef bytes encoded = encode_text(pattern, "key pattern")
        cdef const char *pattern_ptr = encoded
        cdef KeyList collected
        cdef size_t offset = 0
        cdef size_t length
        cdef int rc

        collected.data = NULL
        collected.used = 0
        collected.capacity = 0
        collected.count = 0
        collected.out_of_memory = False
        try:
            while True:
                with nogil:
                    rc = c.shmstore_list_keys(handle, pattern_ptr, collect_key, &collected)
                if rc != -EINTR:
                    break
                collected.used = 0
                collected.count = 0
                PyErr_CheckSignals()
            if collected.out_of_memory:
                raise MemoryError(f"keys({pattern!r}): out of process memory after "
                                  f"{collected.count} keys")
            check(rc, f"keys({pattern!r})")

            result = []
            while offset < collected.used:
                memcpy(&length, collected.data + offset, sizeof(size_t))
                offset += sizeof(size_t)
                result.append(collected.data[offset:offset + length].decode("utf-8", "replace"))
                offset += length
            return result
        finally:
            free(collected.data)


def stats(name=None, int max_pids=1024):
    """Read the statistics of the store called name; return a dict.

    Keys: daemon_pid, uptime_s, arena_bytes, used_bytes, free_bytes, key_count, client_count,
    max_clients, max_keys, client_pids (a list of at most max_pids pids).
    """
    cdef bytes encoded
    cdef const char *name_ptr = NULL
    cdef c.shmstore_stats_t result
    cdef int32_t *pids = <int32_t *>malloc(max(max_pids, 1) * sizeof(int32_t))
    cdef int rc
    cdef int i

    if pids == NULL:
        raise MemoryError()
    try:
        if name is not None:
            encoded = encode_text(name, "store name")
            name_ptr = encoded
        with nogil:
            rc = c.shmstore_stats(name_ptr, &result, pids, max_pids)
        check(rc, f"stats of store {name!r}")

        count = min(<int>result.client_count, max_pids)
        return {
            "daemon_pid": result.daemon_pid,
            "uptime_s": result.uptime_s,
            "arena_bytes": result.arena_bytes,
            "used_bytes": result.used_bytes,
            "free_bytes": result.arena_bytes - result.used_bytes,
            "key_count": result.key_count,
            "client_count": result.client_count,
            "max_clients": result.max_clients,
            "max_keys": result.max_keys,
            "client_pids": [pids[i] for i in range(count)],
        }
    finally:
        free(pids)


cdef struct shmstore_event_buffer:
    c.shmstore_event_t items[64]


cdef class Daemon:
    """The daemon side of a store: owns its segments from create to destroy()."""

    cdef c.shmstore_daemon_t *handle
    cdef readonly str name

    def __cinit__(self, str name, uint64_t memory_bytes, unsigned int max_clients=0,
                  uint64_t max_keys=0):
        cdef bytes encoded = encode_text(name, "store name")
        cdef const char *name_ptr = encoded
        cdef c.shmstore_daemon_config_t config
        cdef c.shmstore_daemon_t *handle = NULL
        cdef int rc

        self.handle = NULL
        self.name = name
        config.memory_bytes = memory_bytes
        config.max_clients = max_clients
        config.max_keys = max_keys
        with nogil:
            rc = c.shmstore_daemon_create(name_ptr, &config, &handle)
        check(rc, f"create store {name!r} with {memory_bytes} bytes")
        self.handle = handle

    def __dealloc__(self):
        if self.handle != NULL:
            c.shmstore_daemon_destroy(self.handle)
            self.handle = NULL

    def poll(self, int timeout_ms, int max_events=64):
        """Do one round of housekeeping; return a list of (kind, pid, bytes, views) events.

        Returns an empty list when a signal interrupted the wait, after running the Python
        signal handlers (which may raise).
        """
        cdef shmstore_event_buffer events
        cdef int rc
        cdef int i

        if self.handle == NULL:
            raise make_error(-EBADF, f"poll of store {self.name!r}", "",
                             "the daemon was destroyed")
        if max_events > 64:
            max_events = 64
        with nogil:
            rc = c.shmstore_daemon_poll(self.handle, timeout_ms, events.items, max_events)
        if rc == -EINTR:
            PyErr_CheckSignals()
            return []
        check(rc, f"housekeeping of store {self.name!r}")
        return [(events.items[i].kind, events.items[i].pid, events.items[i].bytes,
                 events.items[i].views) for i in range(rc)]

    def destroy(self):
        """Mark the store as stopping, unlink its segments and free the handle."""
        cdef c.shmstore_daemon_t *handle = self.handle
        cdef int rc
        if handle == NULL:
            return
        self.handle = NULL
        with nogil:
            rc = c.shmstore_daemon_destroy(handle)
        check(rc, f"destroy store {self.name!r}")
