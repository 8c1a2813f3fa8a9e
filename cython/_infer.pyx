# cython: language_level=3
"""Bindings of the inference segment (csrc/infer_segment.h): the request path of clients,
the take/complete loop of workers and the daemon's side.

Every function returns or raises with the C result code kept: callers in
shmstore.inference.transport map codes to the ShmstoreError hierarchy. Calls that wait release
the GIL.
"""

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from cpython.exc cimport PyErr_CheckSignals, PyErr_Fetch, PyErr_Restore

cdef extern from "Python.h":
    # PyErr_CheckSignals without the `except -1` of cpython.exc: in a noexcept callback,
    # Cython would otherwise print the KeyboardInterrupt as unraisable and drop it before
    # the code below could keep it.
    int check_signals_unchecked "PyErr_CheckSignals"() noexcept
from cpython.ref cimport PyObject
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport memchr
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC


cdef extern from "errno.h":
    enum:
        EINTR
        EAGAIN
        ESTALE

import os


cdef extern from "infer_segment.h" nogil:
    enum:
        INFER_MAX_WORKERS
        INFER_MAX_TENSORS
        INFER_BODY_BYTES
        INFER_ERROR_BYTES
        INFER_DEVICE_BYTES
        INFER_KIND_MODEL
        INFER_KIND_SCRIPT
        INFER_WORKER_EMPTY
        INFER_WORKER_READY
        INFER_WORKER_DEAD

    ctypedef struct infer_segment_t:
        pass

    ctypedef struct infer_request_t:
        uint32_t kind
        const char *key
        const char *function
        uint32_t n_inputs
        const char *const *inputs
        uint32_t n_outputs
        const char *const *outputs
        int64_t timeout_ms
        int (*interrupted)(void *context) noexcept nogil
        void *interrupt_context

    ctypedef struct infer_taken_t:
        uint32_t slot
        uint32_t sequence
        int64_t submitted_ns
        int64_t deadline_ns
        uint32_t kind
        uint32_t n_inputs
        uint32_t n_outputs
        uint32_t body_bytes
        char body[1]

    ctypedef struct infer_worker_info_t:
        int32_t pid
        uint32_t state
        uint64_t requests_completed
        uint64_t batches_run
        uint32_t in_flight
        char device[1]

    ctypedef struct infer_segment_info_t:
        int32_t daemon_pid
        uint32_t slot_count
        uint32_t worker_count
        uint32_t queue_depth
        uint32_t slots_in_use
        uint64_t requests_submitted
        uint64_t segment_bytes

    ctypedef void (*infer_failed_callback)(const char *key, void *context)

    int infer_segment_create(const char *store_name, uint32_t slot_count, uint32_t worker_count,
                             infer_segment_t **out, char *message, size_t message_bytes)
    int infer_segment_open(const char *store_name, infer_segment_t **out, char *message,
                           size_t message_bytes)
    void infer_segment_close(infer_segment_t *segment)
    int infer_segment_destroy(infer_segment_t *segment)
    int infer_segment_daemon_alive(infer_segment_t *segment, int64_t min_interval_ns)
    int infer_call(infer_segment_t *segment, const infer_request_t *request, char *message,
                   size_t message_bytes)
    int infer_worker_register(infer_segment_t *segment, uint32_t index, int32_t pid,
                              const char *device)
    int infer_worker_take(infer_segment_t *segment, uint32_t index, int64_t timeout_ns,
                          infer_taken_t *out)
    int infer_worker_take_spin(infer_segment_t *segment, uint32_t index, int64_t timeout_ns,
                               int64_t spin_ns, infer_taken_t *out)
    int infer_worker_complete(infer_segment_t *segment, uint32_t index, uint32_t slot,
                              uint32_t sequence, int32_t result, const char *message)
    void infer_worker_count(infer_segment_t *segment, uint32_t index, uint64_t requests,
                            uint64_t batches)
    int infer_daemon_fail_worker(infer_segment_t *segment, uint32_t index, int32_t pid,
                                 infer_failed_callback callback, void *context)
    int infer_daemon_reclaim_clients(infer_segment_t *segment)
    void infer_daemon_set_worker_count(infer_segment_t *segment, uint32_t count)
    int infer_worker_info(infer_segment_t *segment, uint32_t index, infer_worker_info_t *out)
    void infer_segment_info(infer_segment_t *segment, infer_segment_info_t *out)


cdef extern from "shmstore.h" nogil:
    const char *shmstore_strerror(int code)


KIND_MODEL = INFER_KIND_MODEL
KIND_SCRIPT = INFER_KIND_SCRIPT
MAX_WORKERS = INFER_MAX_WORKERS
MAX_TENSORS = INFER_MAX_TENSORS
WORKER_STATES = {INFER_WORKER_EMPTY: "empty", INFER_WORKER_READY: "ready",
                 INFER_WORKER_DEAD: "dead"}

cdef enum:
    MESSAGE_BYTES = 2048


class InferError(Exception):
    """A failed call of the inference segment; .code is the negative C code, .detail the
    message the C side wrote."""

    def __init__(self, code, detail):
        self.code = code
        self.detail = detail
        text = detail or shmstore_strerror(code).decode("utf-8", "replace")
        super().__init__(text)


def strerror(int code):
    """Return the C library's description of a result code."""
    return shmstore_strerror(code).decode("utf-8", "replace")


cdef bytes _encode(object text, str what):
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, not {type(text).__name__}")
    cdef bytes data = text.encode("utf-8")
    if b"\0" in data:
        raise ValueError(f"{what} {text!r} contains a NUL character")
    return data


cdef void _collect_key(const char *key, void *context) noexcept with gil:
    (<list>context).append(key.decode("utf-8", "replace"))



cdef object monotonic_ns():
    """Return CLOCK_MONOTONIC in nanoseconds, the clock of the request timestamps."""
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC, &now)
    return <int64_t>now.tv_sec * 1000000000 + now.tv_nsec


cdef tuple _taken_tuple(const infer_taken_t *taken, object taken_ns):
    """Return a taken request as the tuple of Segment.take_many. The body holds the model
    key, the function name, the input keys and the output keys, each ended by a NUL."""
    cdef const char *cursor = taken.body
    cdef const char *end = taken.body + taken.body_bytes
    cdef list texts = []
    cdef const char *nul
    cdef Py_ssize_t length
    cdef uint32_t count = 2 + taken.n_inputs + taken.n_outputs
    cdef Py_ssize_t n_inputs
    # The body and the counts lie in shared memory. A body cut short (no client writes one)
    # yields fewer names, never a read past it or a loop driven by a wrong count alone.
    while <uint32_t>len(texts) < count and cursor < end:
        nul = <const char *>memchr(cursor, 0, <size_t>(end - cursor))
        length = (nul - cursor) if nul != NULL else (end - cursor)
        texts.append(PyUnicode_DecodeUTF8(cursor, length, "replace"))
        cursor = cursor + length + 1 if cursor + length < end else end
    while len(texts) < 2:
        texts.append("")
    n_inputs = min(<Py_ssize_t>taken.n_inputs, len(texts) - 2)
    return (taken.slot, taken.sequence, taken.submitted_ns, taken.deadline_ns, taken.kind,
            texts[0], texts[1], texts[2:2 + n_inputs], texts[2 + n_inputs:], taken_ns)


cdef struct PendingSignal:
    # The exception a signal handler raised during a wait, kept until the wait returns.
    PyObject *type
    PyObject *value
    PyObject *traceback
    int raised


cdef int _signal_raised(void *context) noexcept nogil:
    """Run pending Python signal handlers between waits; keep what they raise."""
    cdef PendingSignal *pending = <PendingSignal *>context
    with gil:
        if check_signals_unchecked() != 0:
            PyErr_Fetch(&pending.type, &pending.value, &pending.traceback)
            pending.raised = 1
            return 1
    return 0


cdef int _raise_pending(PendingSignal *pending) except -1:
    PyErr_Restore(pending.type, pending.value, pending.traceback)
    return -1

cdef class Segment:
    """A mapped inference segment of one store."""

    cdef infer_segment_t *segment
    cdef infer_taken_t *taken      # take_many's buffer, reused for every request
    cdef readonly str store_name
    cdef readonly bint is_daemon

    def __cinit__(self):
        self.segment = NULL
        self.taken = <infer_taken_t *>malloc(sizeof(infer_taken_t) + INFER_BODY_BYTES)
        if self.taken == NULL:
            raise MemoryError()

    @staticmethod
    def create(str store_name, uint32_t slot_count=0, uint32_t worker_count=0):
        """Create the segment of store_name (daemon only); see infer_segment_create."""
        cdef Segment self = Segment.__new__(Segment)
        cdef bytes name = _encode(store_name, "store name")
        cdef char message[MESSAGE_BYTES]
        message[0] = 0
        cdef int code = infer_segment_create(name, slot_count, worker_count, &self.segment,
                                             message, MESSAGE_BYTES)
        if code != 0:
            raise InferError(code, (<char *>message).decode("utf-8", "replace"))
        self.store_name = store_name
        self.is_daemon = True
        return self

    @staticmethod
    def open(str store_name):
        """Map the segment of store_name (clients and workers)."""
        cdef Segment self = Segment.__new__(Segment)
        cdef bytes name = _encode(store_name, "store name")
        cdef char message[MESSAGE_BYTES]
        message[0] = 0
        cdef int code = infer_segment_open(name, &self.segment, message, MESSAGE_BYTES)
        if code != 0:
            raise InferError(code, (<char *>message).decode("utf-8", "replace"))
        self.store_name = store_name
        self.is_daemon = False
        return self

    cdef infer_segment_t *_checked(self) except NULL:
        if self.segment == NULL:
            raise ValueError(f"inference segment of store {self.store_name!r} is closed")
        return self.segment

    def close(self):
        """Unmap the segment (the daemon's handle also unlinks it)."""
        if self.segment == NULL:
            return
        if self.is_daemon:
            infer_segment_destroy(self.segment)
        else:
            infer_segment_close(self.segment)
        self.segment = NULL

    def __dealloc__(self):
        free(self.taken)
        self.taken = NULL
        if self.segment != NULL:
            if self.is_daemon:
                infer_segment_destroy(self.segment)
            else:
                infer_segment_close(self.segment)
            self.segment = NULL

    def daemon_alive(self, int64_t min_interval_ns=0):
        """Return True while the daemon lives and is not stopping."""
        return infer_segment_daemon_alive(self._checked(), min_interval_ns) == 1

    # ---- client side ---------------------------------------------------------------------

    def call(self, uint32_t kind, str key, str function, inputs, outputs, int64_t timeout_ms):
        """Submit one request and wait for it; raise InferError on failure."""
        cdef infer_segment_t *segment = self._checked()
        cdef bytes key_bytes = _encode(key, "model key")
        cdef bytes function_bytes = _encode(function, "function name")
        cdef list input_bytes = [_encode(name, "input key") for name in inputs]
        cdef list output_bytes = [_encode(name, "output key") for name in outputs]
        if len(input_bytes) > INFER_MAX_TENSORS or len(output_bytes) > INFER_MAX_TENSORS:
            raise ValueError(f"request for {key!r} names {len(input_bytes)} inputs and "
                             f"{len(output_bytes)} outputs; at most {INFER_MAX_TENSORS} of "
                             f"each fit a request")

        cdef const char **input_array = <const char **>malloc(
            (len(input_bytes) + 1) * sizeof(char *))
        cdef const char **output_array = <const char **>malloc(
            (len(output_bytes) + 1) * sizeof(char *))
        if input_array == NULL or output_array == NULL:
            free(input_array)
            free(output_array)
            raise MemoryError()

        cdef Py_ssize_t i
        for i in range(len(input_bytes)):
            input_array[i] = <bytes>input_bytes[i]
        for i in range(len(output_bytes)):
            output_array[i] = <bytes>output_bytes[i]

        cdef infer_request_t request
        request.kind = kind
        request.key = key_bytes
        request.function = function_bytes
        request.n_inputs = <uint32_t>len(input_bytes)
        request.inputs = input_array
        request.n_outputs = <uint32_t>len(output_bytes)
        request.outputs = output_array
        request.timeout_ms = timeout_ms
        # A signal that arrives outside the futex wait (for example before the call starts)
        # interrupts no system call, so the wait also runs the handlers every 100 ms.
        cdef PendingSignal pending
        pending.type = NULL
        pending.value = NULL
        pending.traceback = NULL
        pending.raised = 0
        request.interrupted = _signal_raised
        request.interrupt_context = &pending

        cdef char message[INFER_ERROR_BYTES + 512]
        message[0] = 0
        cdef int code
        with nogil:
            code = infer_call(segment, &request, message, sizeof(message))
        free(input_array)
        free(output_array)

        if pending.raised:
            _raise_pending(&pending)
        if code == -EINTR:
            # Let a pending KeyboardInterrupt through before the InferError.
            PyErr_CheckSignals()
        if code != 0:
            raise InferError(code, (<char *>message).decode("utf-8", "replace"))

    # ---- worker side ---------------------------------------------------------------------

    def register_worker(self, uint32_t index, str device):
        """Record this process as worker index, READY."""
        cdef bytes device_bytes = _encode(device, "device")
        cdef int code = infer_worker_register(self._checked(), index, os.getpid(),
                                              device_bytes)
        if code != 0:
            raise InferError(code, f"cannot register inference worker {index}")

    def take_many(self, uint32_t index, double timeout_s, double spin_s=0.0,
                  Py_ssize_t max_count=1):
        """Take requests for worker index: wait up to timeout_s seconds (0: no wait) for the
        first, of which the first spin_s poll the queue without sleeping (see
        infer_worker_take_spin), then take up to max_count - 1 more that are already queued.

        Return a list, empty when nothing came, of tuples (slot, sequence, submitted_ns,
        deadline_ns, kind, key, function, inputs, outputs, taken_ns) in the order of the
        fields of batcher.PendingRequest; times are CLOCK_MONOTONIC ns, and taken_ns is when
        the first request was taken. One call per round keeps the per-request cost in C.
        """
        cdef infer_segment_t *segment = self._checked()
        cdef infer_taken_t *taken = self.taken
        cdef int64_t timeout_ns = <int64_t>(timeout_s * 1e9)
        cdef int64_t spin_ns = <int64_t>(spin_s * 1e9)
        cdef int code
        cdef list requests = []
        cdef object taken_ns = None

        with nogil:
            code = infer_worker_take_spin(segment, index, timeout_ns, spin_ns, taken)
        while True:
            if code == -EAGAIN:
                return requests
            if code == -EINTR:
                PyErr_CheckSignals()
                return requests
            if code != 0:
                if requests:
                    # The requests already taken are this worker's to complete; the error
                    # comes back on the next call.
                    return requests
                raise InferError(code, "")
            if taken_ns is None:
                taken_ns = monotonic_ns()
            requests.append(_taken_tuple(taken, taken_ns))
            if len(requests) >= max_count:
                return requests
            code = infer_worker_take(segment, index, 0, taken)

    def complete(self, uint32_t index, uint32_t slot, uint32_t sequence, int32_t result,
                 str message):
        """Complete a taken request. Return False when the client abandoned it."""
        cdef bytes message_bytes = message.encode("utf-8", "replace").replace(b"\0", b" ")
        cdef int code = infer_worker_complete(self._checked(), index, slot, sequence, result,
                                              message_bytes)
        if code == -ESTALE:
            return False
        if code != 0:
            raise InferError(code, "")
        return True

    def complete_ok(self, uint32_t index, slots, sequences):
        """Complete taken requests with success, one C call each, without a message.
        Return the positions of the requests whose client abandoned them."""
        cdef infer_segment_t *segment = self._checked()
        cdef int code
        cdef uint32_t slot
        cdef uint32_t sequence
        abandoned = []
        for position in range(len(slots)):
            slot = slots[position]
            sequence = sequences[position]
            code = infer_worker_complete(segment, index, slot, sequence, 0, b"")
            if code == -ESTALE:
                abandoned.append(position)
            elif code != 0:
                raise InferError(code, "")
        return abandoned

    def count(self, uint32_t index, uint64_t requests, uint64_t batches):
        """Add to worker index's request and batch counters."""
        infer_worker_count(self._checked(), index, requests, batches)

    # ---- daemon side ---------------------------------------------------------------------

    def fail_worker(self, uint32_t index, int32_t pid):
        """Fail every request of dead worker index; return the model keys of those
        requests, one per request."""
        cdef list keys = []
        cdef int code = infer_daemon_fail_worker(self._checked(), index, pid, _collect_key,
                                                 <void *>keys)
        if code < 0:
            raise InferError(code, "")
        return keys

    def reclaim_clients(self):
        """Free the slots of dead client processes; return how many."""
        return infer_daemon_reclaim_clients(self._checked())

    def set_worker_count(self, uint32_t count):
        infer_daemon_set_worker_count(self._checked(), count)

    # ---- status --------------------------------------------------------------------------

    def info(self):
        """Return the segment's counters as a dict."""
        cdef infer_segment_info_t info
        infer_segment_info(self._checked(), &info)
        return {
            "daemon_pid": info.daemon_pid,
            "slot_count": info.slot_count,
            "worker_count": info.worker_count,
            "queue_depth": info.queue_depth,
            "slots_in_use": info.slots_in_use,
            "requests_submitted": info.requests_submitted,
            "segment_bytes": info.segment_bytes,
        }

    def worker(self, uint32_t index):
        """Return worker table entry index as a dict."""
        cdef infer_worker_info_t *info = <infer_worker_info_t *>malloc(
            sizeof(infer_worker_info_t) + INFER_DEVICE_BYTES)
        if info == NULL:
            raise MemoryError()
        try:
            code = infer_worker_info(self._checked(), index, info)
            if code != 0:
                raise InferError(code, f"no worker table entry {index}")
            return {
                "index": index,
                "pid": info.pid,
                "state": WORKER_STATES.get(info.state, str(info.state)),
                "requests_completed": info.requests_completed,
                "batches_run": info.batches_run,
                "in_flight": info.in_flight,
                "device": (<char *>info.device).decode("utf-8", "replace"),
            }
        finally:
            free(info)
