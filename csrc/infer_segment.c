/*
 * infer_segment.c - create, map, validate and remove the inference segment.
 *
 * Liveness: the daemon holds an exclusive flock(2) on the segment for as
 * long as it lives, and the kernel drops it however the daemon dies. A
 * client or worker tests it with a shared, non-blocking flock on its own
 * descriptor: the test fails while the daemon lives. A new daemon uses the
 * same test to tell a stale segment from one in use.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* flock, kill and nanosleep under -std=c11 */
#endif

#include "infer_segment.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spin_wait.h"

#define INFER_DEFAULT_SLOTS 256u
#define INFER_MAX_SLOTS 65536u

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

static size_t align_up(size_t value, size_t alignment)
{
    return (value + alignment - 1) / alignment * alignment;
}

static uint32_t next_power_of_two(uint32_t value)
{
    uint32_t power = 2;
    while (power < value)
        power <<= 1;
    return power;
}

static int build_shm_name(const char *store_name, char *out, size_t out_bytes, char *message,
                          size_t message_bytes)
{
    size_t length = store_name == NULL ? 0 : strlen(store_name);
    if (length == 0 || length > SHMSTORE_NAME_MAX || strchr(store_name, '/') != NULL) {
        format_message(message, message_bytes,
                       "invalid store name '%s': it must have 1 to %d bytes and no '/'",
                       store_name == NULL ? "" : store_name, SHMSTORE_NAME_MAX);
        return -EINVAL;
    }
    snprintf(out, out_bytes, "/shmstore-%s-infer", store_name);
    return 0;
}

/* Offsets of the parts of a segment with slot_count slots. */
typedef struct infer_geometry {
    uint32_t queue_cells;
    uint64_t workers_offset;
    uint64_t queue_offset;
    uint64_t slots_offset;
    uint64_t segment_bytes;
} infer_geometry_t;

static int compute_geometry(uint32_t slot_count, infer_geometry_t *geometry)
{
    /* Twice the slots, so that tickets of abandoned requests that still sit
     * in the queue rarely make a push wait. */
    geometry->queue_cells = next_power_of_two(2 * slot_count);
    size_t queue_bytes = shm_mpmc_footprint(geometry->queue_cells, sizeof(infer_ticket_t));
    if (queue_bytes == 0)
        return -EINVAL;

    geometry->workers_offset = align_up(sizeof(infer_header_t), SHM_CACHE_LINE);
    geometry->queue_offset = align_up(
        geometry->workers_offset + INFER_MAX_WORKERS * sizeof(infer_worker_entry_t),
        SHM_CACHE_LINE);
    geometry->slots_offset = align_up(geometry->queue_offset + queue_bytes, SHM_CACHE_LINE);
    uint64_t end = geometry->slots_offset + (uint64_t)slot_count * sizeof(infer_slot_t);
    geometry->segment_bytes = align_up(end, (size_t)sysconf(_SC_PAGESIZE));
    return 0;
}

static void attach_pointers(infer_segment_t *segment)
{
    unsigned char *base = segment->base;
    infer_header_t *header = segment->header;
    segment->workers = (infer_worker_entry_t *)(base + header->workers_offset);
    segment->queue = (shm_mpmc_t *)(base + header->queue_offset);
    segment->slots = (infer_slot_t *)(base + header->slots_offset);
}

/* Opens an existing segment and removes it when no live daemon holds it.
 * Returns 0 when it was removed (or vanished), SHMSTORE_EBUSY when a live
 * daemon holds it. */
static int remove_stale_segment(const char *shm_name, char *message, size_t message_bytes)
{
    int fd = shm_open(shm_name, O_RDWR, 0);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;

    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int code = errno;
        close(fd);
        if (code == EWOULDBLOCK) {
            format_message(message, message_bytes,
                           "inference segment /dev/shm%s is held by a live daemon; "
                           "stop it first or choose another store name",
                           shm_name);
            return SHMSTORE_EBUSY;
        }
        return -code;
    }

    int result = 0;
    if (shm_unlink(shm_name) != 0 && errno != ENOENT)
        result = -errno;
    close(fd);
    return result;
}

int infer_segment_create(const char *store_name, uint32_t slot_count, uint32_t worker_count,
                         infer_segment_t **out, char *message, size_t message_bytes)
{
    *out = NULL;
    if (slot_count == 0)
        slot_count = INFER_DEFAULT_SLOTS;
    if (slot_count > INFER_MAX_SLOTS || worker_count > INFER_MAX_WORKERS) {
        format_message(message, message_bytes,
                       "invalid inference settings: %u slots (max %u), %u workers (max %u)",
                       slot_count, INFER_MAX_SLOTS, worker_count, INFER_MAX_WORKERS);
        return -EINVAL;
    }

    infer_segment_t *segment = calloc(1, sizeof(*segment));
    if (segment == NULL)
        return -ENOMEM;
    segment->fd = -1;
    segment->is_daemon = 1;

    int result = build_shm_name(store_name, segment->shm_name, sizeof(segment->shm_name),
                                message, message_bytes);
    if (result != 0)
        goto fail;

    infer_geometry_t geometry;
    result = compute_geometry(slot_count, &geometry);
    if (result != 0)
        goto fail;

    result = remove_stale_segment(segment->shm_name, message, message_bytes);
    if (result != 0)
        goto fail;

    segment->fd = shm_open(segment->shm_name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (segment->fd < 0) {
        result = -errno;
        format_message(message, message_bytes, "cannot create /dev/shm%s: %s",
                       segment->shm_name, strerror(-result));
        goto fail;
    }

    /* The umask may have narrowed the mode, never widened it; set it exactly. */
    if (fchmod(segment->fd, 0600) != 0 || flock(segment->fd, LOCK_EX | LOCK_NB) != 0) {
        result = -errno;
        format_message(message, message_bytes, "cannot set up /dev/shm%s: %s",
                       segment->shm_name, strerror(-result));
        goto fail_unlink;
    }

    if (ftruncate(segment->fd, (off_t)geometry.segment_bytes) != 0) {
        result = -errno;
        goto fail_unlink;
    }
    /* Reserve the pages now, so that a full /dev/shm fails here and never
     * with SIGBUS later. posix_fallocate returns the error number itself. */
    int fallocate_error = posix_fallocate(segment->fd, 0, (off_t)geometry.segment_bytes);
    if (fallocate_error != 0) {
        result = -fallocate_error;
        format_message(message, message_bytes,
                       "cannot reserve %llu bytes for /dev/shm%s: %s",
                       (unsigned long long)geometry.segment_bytes, segment->shm_name,
                       strerror(fallocate_error));
        goto fail_unlink;
    }

    segment->bytes = geometry.segment_bytes;
    segment->base = mmap(NULL, segment->bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
                         segment->fd, 0);
    if (segment->base == MAP_FAILED) {
        segment->base = NULL;
        result = -errno;
        goto fail_unlink;
    }

    /* ftruncate zero-filled the segment: every slot is IDLE and free, every
     * worker entry EMPTY. */
    infer_header_t *header = segment->header = segment->base;
    header->abi_version = INFER_ABI_VERSION;
    header->slot_count = slot_count;
    header->segment_bytes = geometry.segment_bytes;
    header->workers_offset = geometry.workers_offset;
    header->queue_offset = geometry.queue_offset;
    header->slots_offset = geometry.slots_offset;
    header->daemon_pid = (int32_t)getpid();
    shm_doorbell_init(&header->worker_doorbell);
    attach_pointers(segment);

    result = shm_mpmc_init(segment->queue, geometry.queue_cells, sizeof(infer_ticket_t));
    if (result != 0)
        goto fail_unlink;
    for (uint32_t i = 0; i < slot_count; i++)
        shm_doorbell_init(&segment->slots[i].done);

    /* Relaxed: published by the release store of magic below. */
    shm_store_relaxed(&header->worker_count, worker_count);
    /* Release: pairs with the acquire load in infer_segment_open(), which then
     * sees every field written above. */
    shm_store_release(&header->magic, INFER_MAGIC);

    *out = segment;
    return 0;

fail_unlink:
    shm_unlink(segment->shm_name);
fail:
    if (segment->base != NULL)
        munmap(segment->base, segment->bytes);
    if (segment->fd >= 0)
        close(segment->fd);
    free(segment);
    return result;
}

/* Returns SHMSTORE_INFER_SPIN_US in nanoseconds: a decimal integer of
 * microseconds from 0 (no adaptive spin) to INFER_SPIN_US_MAX. An unset or
 * invalid value gives INFER_SPIN_US_DEFAULT. */
static int64_t client_max_spin_ns(void)
{
    int64_t spin_us = INFER_SPIN_US_DEFAULT;
    const char *text = getenv("SHMSTORE_INFER_SPIN_US");
    if (text != NULL && *text != '\0') {
        char *end = NULL;
        errno = 0;
        long long value = strtoll(text, &end, 10);
        if (errno == 0 && *end == '\0' && value >= 0 && value <= INFER_SPIN_US_MAX)
            spin_us = value;
    }
    return spin_us * 1000;
}

int infer_segment_open(const char *store_name, infer_segment_t **out, char *message,
                       size_t message_bytes)
{
    *out = NULL;
    infer_segment_t *segment = calloc(1, sizeof(*segment));
    if (segment == NULL)
        return -ENOMEM;
    segment->fd = -1;
    segment->max_spin_ns = client_max_spin_ns();

    int result = build_shm_name(store_name, segment->shm_name, sizeof(segment->shm_name),
                                message, message_bytes);
    if (result != 0)
        goto fail;

    segment->fd = shm_open(segment->shm_name, O_RDWR, 0);
    if (segment->fd < 0) {
        result = errno == ENOENT ? SHMSTORE_ENOSTORE : -errno;
        format_message(message, message_bytes,
                       "no inference segment for store '%s' (/dev/shm%s: %s); "
                       "start the daemon with `shmstore serve --name %s --workers N`",
                       store_name, segment->shm_name, strerror(errno), store_name);
        goto fail;
    }

    struct stat status;
    if (fstat(segment->fd, &status) != 0) {
        result = -errno;
        goto fail;
    }
    if ((uint64_t)status.st_size < sizeof(infer_header_t)) {
        result = SHMSTORE_ENOSTORE;
        format_message(message, message_bytes,
                       "inference segment /dev/shm%s is not ready yet (%lld bytes); "
                       "retry once the daemon reports ready",
                       segment->shm_name, (long long)status.st_size);
        goto fail;
    }

    segment->bytes = (size_t)status.st_size;
    segment->base = mmap(NULL, segment->bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
                         segment->fd, 0);
    if (segment->base == MAP_FAILED) {
        segment->base = NULL;
        result = -errno;
        goto fail;
    }
    infer_header_t *header = segment->header = segment->base;

    /* Acquire: pairs with the daemon's release store of magic, after which
     * the whole header is initialised. */
    uint64_t magic = shm_load_acquire(&header->magic);
    if (magic == 0) {
        result = SHMSTORE_ENOSTORE;
        format_message(message, message_bytes,
                       "inference segment /dev/shm%s is not ready yet; "
                       "retry once the daemon reports ready",
                       segment->shm_name);
        goto fail;
    }
    if (magic != INFER_MAGIC || header->abi_version != INFER_ABI_VERSION ||
        header->segment_bytes != segment->bytes) {
        result = SHMSTORE_EABI;
        format_message(message, message_bytes,
                       "inference segment /dev/shm%s does not match this library: magic "
                       "%#llx (expected %#llx), ABI version %u (expected %u), size %llu "
                       "(file has %zu); run client and daemon from the same shmstore build",
                       segment->shm_name, (unsigned long long)magic,
                       (unsigned long long)INFER_MAGIC, header->abi_version,
                       INFER_ABI_VERSION, (unsigned long long)header->segment_bytes,
                       segment->bytes);
        goto fail;
    }
    if (header->slots_offset + (uint64_t)header->slot_count * sizeof(infer_slot_t) >
        segment->bytes) {
        result = SHMSTORE_EABI;
        format_message(message, message_bytes,
                       "inference segment /dev/shm%s is corrupt: %u slots do not fit "
                       "in %zu bytes",
                       segment->shm_name, header->slot_count, segment->bytes);
        goto fail;
    }
    attach_pointers(segment);

    *out = segment;
    return 0;

fail:
    if (segment->base != NULL)
        munmap(segment->base, segment->bytes);
    if (segment->fd >= 0)
        close(segment->fd);
    free(segment);
    return result;
}

void infer_segment_close(infer_segment_t *segment)
{
    if (segment == NULL)
        return;
    munmap(segment->base, segment->bytes);
    close(segment->fd);
    free(segment);
}

int infer_segment_destroy(infer_segment_t *segment)
{
    if (segment == NULL)
        return -EINVAL;
    infer_header_t *header = segment->header;

    /* seq_cst: a waiter that loads stopping after its doorbell snapshot sees
     * it, and one that slept before is woken by the rings below. */
    shm_store_seq(&header->stopping, 1);
    shm_doorbell_ring(&header->worker_doorbell);
    for (uint32_t i = 0; i < header->slot_count; i++)
        shm_doorbell_ring(&segment->slots[i].done);

    int result = 0;
    if (shm_unlink(segment->shm_name) != 0 && errno != ENOENT)
        result = -errno;
    infer_segment_close(segment);
    return result;
}

int infer_segment_daemon_alive(infer_segment_t *segment, int64_t min_interval_ns)
{
    /* Acquire: pairs with the seq_cst store in infer_segment_destroy(). */
    if (shm_load_acquire(&segment->header->stopping) != 0)
        return 0;
    if (segment->is_daemon)
        return 1;

    int64_t now = shm_monotonic_ns();
    /* Relaxed: a cache of a past result; a stale value only delays a test. */
    if (min_interval_ns > 0 && now - shm_load_relaxed(&segment->last_alive_ns) < min_interval_ns)
        return 1;

    /* A shared lock succeeds only when the daemon's exclusive lock is gone. */
    if (flock(segment->fd, LOCK_SH | LOCK_NB) == 0) {
        flock(segment->fd, LOCK_UN);
        return 0;
    }
    /* Relaxed: see the load above. */
    shm_store_relaxed(&segment->last_alive_ns, now);
    return 1;
}
