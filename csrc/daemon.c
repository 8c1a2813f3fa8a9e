/*
 * daemon.c - create, serve and destroy a store: segment creation with
 * stale-segment detection, heartbeat, client attach/detach, and reclaiming
 * what dead clients left.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "descriptor.h"
#include "errors.h"
#include "index.h"
#include "lock.h"
#include "messages.h"
#include "process.h"
#include "ring_spsc.h"
#include "segment.h"
#include "shmstore.h"
#include "spin_wait.h"
#include "store.h"

#define DEFAULT_MAX_CLIENTS 256u
#define DEFAULT_MAX_KEYS 65536u
#define MAX_CLIENTS_LIMIT 65536u
#define MAX_KEYS_LIMIT (UINT64_C(1) << 30)

/* Age in seconds below which an empty control segment is taken for one
 * that another daemon is creating. */
#define STARTING_GRACE_S 2

/* Maximum wait of the daemon for the store lock before it moves on and
 * retries a reclaim at its next scan, so that a client stopped inside the
 * lock (in a debugger, say) does not stall the daemon's other work. */
#define RECLAIM_LOCK_TIMEOUT_MS 500

/* How often the daemon checks whether attached clients still live. */
#define DEATH_SCAN_NS (100LL * 1000 * 1000)

struct shmstore_daemon {
    shm_store_t store;
    shm_mapping_t ctl;
    shm_mapping_t data;
    char name[SHMSTORE_NAME_MAX + 1];
    char ctl_name[SHM_SEGMENT_NAME_BYTES];
    char data_name[SHM_SEGMENT_NAME_BYTES];
    uint32_t doorbell_snapshot;
    int64_t last_death_scan_ns;
    uint8_t *announced;              /* per slot: ATTACH event already sent */
    shmstore_event_t *pending;       /* events not yet handed out by poll */
    size_t pending_count;
    size_t pending_capacity;
};

static uint64_t round_up(uint64_t value, uint64_t alignment)
{
    return (value + alignment - 1) / alignment * alignment;
}

static int queue_event(shmstore_daemon_t *daemon, shmstore_event_kind_t kind, int32_t pid,
                       uint64_t bytes, uint64_t views)
{
    if (daemon->pending_count == daemon->pending_capacity) {
        size_t capacity = daemon->pending_capacity ? daemon->pending_capacity * 2 : 16;
        shmstore_event_t *grown = realloc(daemon->pending, capacity * sizeof *grown);
        if (grown == NULL)
            return -ENOMEM;
        daemon->pending = grown;
        daemon->pending_capacity = capacity;
    }
    daemon->pending[daemon->pending_count++] =
        (shmstore_event_t){.kind = kind, .pid = pid, .bytes = bytes, .views = views};
    return 0;
}

/* Removes the segments of a dead daemon of the same name, or fails with
 * SHMSTORE_EBUSY when the daemon that made them still lives. */
static int remove_stale_segments(shmstore_daemon_t *daemon)
{
    int fd = shm_open(daemon->ctl_name, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) {
        if (errno != ENOENT) {
            int error = errno;
            return shm_fail(-error, "shm_open of %s failed: %s", daemon->ctl_name,
                            strerror(error));
        }
        /* A data segment without a control segment is left from a crash
         * during creation. */
        if (shm_unlink(daemon->data_name) == 0)
            return queue_event(daemon, SHMSTORE_EVENT_STALE, 0, 0, 0);
        return 0;
    }

    int32_t pid = 0;
    struct stat info;
    if (fstat(fd, &info) != 0)
        info.st_size = 0;
    if (info.st_size >= (off_t)sizeof(shm_header_t)) {
        void *header = mmap(NULL, sizeof(shm_header_t), PROT_READ, MAP_SHARED, fd, 0);
        if (header != MAP_FAILED) {
            pid = ((shm_header_t *)header)->daemon_pid;
            munmap(header, sizeof(shm_header_t));
        }
    }

    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        return shm_fail(SHMSTORE_EBUSY, "store \"%s\" is already served by daemon pid %d; "
                        "stop it first or choose another --name", daemon->name, (int)pid);
    }

    /* A creator locks its new control segment one system call after
     * creating it, while it is still empty. An empty segment younger than
     * STARTING_GRACE_S is taken for such a creator, not for a dead one. */
    if (info.st_size == 0 && time(NULL) - info.st_mtime < STARTING_GRACE_S) {
        close(fd);
        return shm_fail(SHMSTORE_EBUSY, "another daemon is creating store \"%s\" right now",
                        daemon->name);
    }
    close(fd);

    shm_unlink(daemon->ctl_name);
    shm_unlink(daemon->data_name);
    return queue_event(daemon, SHMSTORE_EVENT_STALE, pid, 0, 0);
}

/* Computes the control segment's layout into header; returns its size. */
static uint64_t plan_layout(shm_header_t *header, uint32_t max_clients, uint64_t max_keys)
{
    header->max_clients = max_clients;
    header->bitmap_words = (max_clients + 63) / 64;
    header->max_keys = max_keys;
    header->descriptor_count = 2 * max_keys;
    header->descriptor_stride =
        round_up(sizeof(shm_descriptor_t) + header->bitmap_words * sizeof(uint64_t), SHM_ALIGN);
    header->index_capacity = shm_index_capacity(max_keys);
    header->ring_stride = round_up(shm_spsc_footprint(SHM_RING_CAPACITY), SHM_ALIGN);

    uint64_t at = round_up(sizeof(shm_header_t), SHM_PAGE);
    header->slots_offset = at;
    at = round_up(at + (uint64_t)max_clients * sizeof(shm_slot_t), SHM_PAGE);
    header->rings_offset = at;
    at = round_up(at + (uint64_t)max_clients * header->ring_stride, SHM_PAGE);
    header->descriptors_offset = at;
    at = round_up(at + header->descriptor_count * header->descriptor_stride, SHM_PAGE);
    header->index_offset[0] = at;
    at = round_up(at + header->index_capacity * sizeof(uint64_t), SHM_PAGE);
    header->index_offset[1] = at;
    at = round_up(at + header->index_capacity * sizeof(uint64_t), SHM_PAGE);
    return at;
}

static shm_spsc_t *slot_ring(shmstore_daemon_t *daemon, uint32_t slot)
{
    shm_header_t *header = daemon->store.header;
    return (shm_spsc_t *)(daemon->store.ctl + header->rings_offset +
                          (uint64_t)slot * header->ring_stride);
}

static int initialise_control(shmstore_daemon_t *daemon, const shm_header_t *plan,
                              uint64_t ctl_bytes, uint64_t arena_bytes)
{
    shm_header_t *header = daemon->ctl.base;

    /* The segment is fresh from ftruncate, so everything else is zero:
     * FREE slots and descriptors, empty index buckets. */
    memcpy(header, plan, sizeof *header);
    header->abi_version = SHMSTORE_ABI_VERSION;
    header->header_bytes = sizeof(shm_header_t);
    header->ctl_bytes = ctl_bytes;
    header->arena_bytes = arena_bytes;
    header->daemon_pid = (int32_t)getpid();
    uint64_t ticks = 0;
    shm_process_start_ticks(getpid(), &ticks);
    header->daemon_start_ticks = ticks;
    header->created_ns = shm_monotonic_ns();
    header->descriptor_cursor = 0;
    header->index_used = 0;

    int result = shm_lock_init(&header->lock);
    if (result != 0)
        return shm_fail(result, "initialising the store lock failed: %s", strerror(-result));
    shm_doorbell_init(&header->doorbell);

    shm_store_bind(&daemon->store, daemon->ctl.base, daemon->data.base);
    for (uint32_t s = 0; s < header->max_clients; s++)
        shm_spsc_init(slot_ring(daemon, s), SHM_RING_CAPACITY);
    shm_alloc_init(&daemon->store);

    /* Relaxed: published with the magic below. */
    shm_store_relaxed(&header->heartbeat_ns, shm_monotonic_ns());
    shm_store_relaxed(&header->index_epoch, 0);
    shm_store_relaxed(&header->key_count, 0);

    /* Release: pairs with the client's acquire load of the magic; this is
     * the step that makes the initialised segment usable. */
    shm_store_release(&header->magic, SHM_HEADER_MAGIC);
    return 0;
}

static void free_daemon(shmstore_daemon_t *daemon)
{
    shm_segment_close(&daemon->data);
    shm_segment_close(&daemon->ctl);
    free(daemon->announced);
    free(daemon->pending);
    free(daemon);
}

int shmstore_daemon_create(const char *name, const shmstore_daemon_config_t *config,
                           shmstore_daemon_t **out)
{
    if (config == NULL || out == NULL)
        return shm_fail(-EINVAL, "config or output pointer is NULL");
    *out = NULL;

    uint32_t max_clients = config->max_clients ? config->max_clients : DEFAULT_MAX_CLIENTS;
    uint64_t max_keys = config->max_keys ? config->max_keys : DEFAULT_MAX_KEYS;
    uint64_t arena_bytes = config->memory_bytes / SHM_ALIGN * SHM_ALIGN;
    if (arena_bytes < SHM_PAGE)
        return shm_fail(-EINVAL, "memory of %llu bytes is too small: give at least %u bytes",
                        (unsigned long long)config->memory_bytes, SHM_PAGE);
    if (max_clients > MAX_CLIENTS_LIMIT)
        return shm_fail(-EINVAL, "max_clients %u exceeds the limit of %u", max_clients,
                        MAX_CLIENTS_LIMIT);
    if (max_keys > MAX_KEYS_LIMIT)
        return shm_fail(-EINVAL, "max_keys %llu exceeds the limit of %llu",
                        (unsigned long long)max_keys, (unsigned long long)MAX_KEYS_LIMIT);

    int result = 0;
    const char *store_name = shm_store_name(name, &result);
    if (store_name == NULL)
        return result;

    shmstore_daemon_t *daemon = calloc(1, sizeof *daemon);
    if (daemon == NULL)
        return shm_fail(-ENOMEM, "out of process memory for the daemon handle");
    daemon->ctl.fd = -1;
    daemon->data.fd = -1;
    snprintf(daemon->name, sizeof daemon->name, "%s", store_name);
    shm_segment_name(daemon->ctl_name, store_name, "ctl");
    shm_segment_name(daemon->data_name, store_name, "data");

    result = remove_stale_segments(daemon);
    if (result != 0)
        goto fail;

    shm_header_t plan;
    memset(&plan, 0, sizeof plan);
    uint64_t ctl_bytes = plan_layout(&plan, max_clients, max_keys);
    result = shm_check_free_space(ctl_bytes + arena_bytes);
    if (result != 0)
        goto fail;

    /* The daemon holds an exclusive flock on the control segment for its
     * whole life. The kernel drops it however the daemon dies, so clients
     * and successors test the lock to tell whether the daemon lives. */
    result = shm_segment_create(daemon->ctl_name, ctl_bytes, 0, 1, &daemon->ctl);
    if (result == -EEXIST) {
        result = shm_fail(SHMSTORE_EBUSY, "another daemon is creating store \"%s\" right now",
                          store_name);
        goto fail;
    }
    if (result != 0)
        goto fail;

    result = shm_segment_create(daemon->data_name, arena_bytes, 0, 0, &daemon->data);
    if (result != 0) {
        shm_unlink(daemon->ctl_name);
        goto fail;
    }

    daemon->announced = calloc(max_clients, 1);
    if (daemon->announced == NULL) {
        result = shm_fail(-ENOMEM, "out of process memory for %u client slots", max_clients);
        goto fail_unlink;
    }

    result = initialise_control(daemon, &plan, ctl_bytes, arena_bytes);
    if (result != 0)
        goto fail_unlink;

    daemon->doorbell_snapshot = shm_doorbell_snapshot(&daemon->store.header->doorbell);
    daemon->last_death_scan_ns = shm_monotonic_ns();
    *out = daemon;
    return 0;

fail_unlink:
    shm_unlink(daemon->ctl_name);
    shm_unlink(daemon->data_name);
fail:
    free_daemon(daemon);
    return result;
}

/* Frees everything a slot's client left: its reader bits (freeing versions
 * that were retired and are now unpinned), its UNPUBLISHED blocks and,
 * when it died, any retired version whose last pin it cleared but did not
 * free. Then resets the slot's ring and frees the slot. */
static int reclaim_slot(shmstore_daemon_t *daemon, uint32_t slot, int died, uint64_t *bytes,
                        uint64_t *views)
{
    shm_store_t *store = &daemon->store;
    *bytes = 0;
    *views = 0;

    int result = shm_lock(store, RECLAIM_LOCK_TIMEOUT_MS);
    if (result != 0)
        return result;

    for (uint64_t d = 0; d < store->descriptor_count; d++) {
        if (!shm_descriptor_has_reader(store, (uint32_t)d, slot))
            continue;
        shm_descriptor_unpin(store, (uint32_t)d, slot);
        (*views)++;
        *bytes += shm_descriptor_try_free(store, (uint32_t)d);
    }
    *bytes += shm_alloc_free_owned(store, (int32_t)slot);

    /* A dead client may have died between clearing its last pin of a
     * retired version and freeing that version; no pin is left to free it
     * later. A client that detached cleanly finished its releases. */
    if (died)
        *bytes += shm_descriptor_free_unpinned(store);
    shm_unlock(store);

    shm_spsc_init(slot_ring(daemon, slot), SHM_RING_CAPACITY);
    daemon->announced[slot] = 0;

    /* Release: pairs with the acquire of a client's claiming CAS, so the
     * next owner sees the reset ring. */
    shm_store_release(&store->slots[slot].owner, SHM_SLOT_WORD(0, SHM_SLOT_FREE));
    return 0;
}

static void announce(shmstore_daemon_t *daemon, uint32_t slot, int32_t pid)
{
    if (daemon->announced[slot])
        return;
    daemon->announced[slot] = 1;
    queue_event(daemon, SHMSTORE_EVENT_ATTACH, pid, 0, 0);
}

/* Pops the slot's messages; HELLO announces the client. */
static void drain_ring(shmstore_daemon_t *daemon, uint32_t slot, int32_t pid)
{
    shm_message_t message;
    uint32_t length = 0;

    while (shm_spsc_pop(slot_ring(daemon, slot), &message, sizeof message, &length) == 0) {
        if (length == sizeof message && message.type == SHM_MESSAGE_HELLO)
            announce(daemon, slot, pid);
    }
}

static int scan_slots(shmstore_daemon_t *daemon, int check_deaths)
{
    shm_store_t *store = &daemon->store;

    for (uint32_t s = 0; s < store->max_clients; s++) {
        shm_slot_t *slot = &store->slots[s];
        /* Acquire: pairs with the client's release stores of ATTACHED and
         * DETACHED, so the start time and the last messages are visible. */
        uint64_t word = shm_load_acquire(&slot->owner);
        uint32_t state = SHM_SLOT_STATE(word);
        int32_t pid = SHM_SLOT_PID(word);
        if (state == SHM_SLOT_FREE)
            continue;

        drain_ring(daemon, s, pid);

        uint64_t bytes = 0;
        uint64_t views = 0;
        if (state == SHM_SLOT_DETACHED) {
            announce(daemon, s, pid);
            int result = reclaim_slot(daemon, s, 0, &bytes, &views);
            if (result == -ETIMEDOUT)
                continue;
            if (result != 0)
                return result;
            queue_event(daemon, SHMSTORE_EVENT_DETACH, pid, bytes, views);
            continue;
        }

        if (state == SHM_SLOT_ATTACHED)
            announce(daemon, s, pid);
        if (!check_deaths)
            continue;

        int alive;
        if (state == SHM_SLOT_ATTACHED) {
            /* Relaxed: ordered by the acquire load of owner above. */
            alive = shm_process_alive(pid, shm_load_relaxed(&slot->start_ticks));
        } else {
            /* ATTACHING: the start time may not be written yet. */
            alive = shm_process_running(pid);
        }
        if (alive)
            continue;

        int result = reclaim_slot(daemon, s, 1, &bytes, &views);
        if (result == -ETIMEDOUT)
            continue;
        if (result != 0)
            return result;
        queue_event(daemon, SHMSTORE_EVENT_DIED, pid, bytes, views);
    }
    return 0;
}

int shmstore_daemon_poll(shmstore_daemon_t *daemon, int timeout_ms, shmstore_event_t *events,
                         int max_events)
{
    if (daemon == NULL || (events == NULL && max_events > 0) || max_events < 0)
        return shm_fail(-EINVAL, "daemon or events is NULL, or max_events is negative");
    shm_header_t *header = daemon->store.header;

    if (daemon->pending_count == 0 && timeout_ms > 0) {
        /* -EINTR and -ETIMEDOUT both just end the wait; a signal is the
         * caller's to handle after this poll returns. */
        shm_doorbell_wait(&header->doorbell, daemon->doorbell_snapshot,
                          (int64_t)timeout_ms * 1000000);
    }

    /* Taken before the scan: a client that rings after this point makes
     * the next wait return at once, so no message waits a whole timeout. */
    daemon->doorbell_snapshot = shm_doorbell_snapshot(&header->doorbell);

    int64_t now = shm_monotonic_ns();
    /* Relaxed: a timestamp that clients only compare with their clock. */
    shm_store_relaxed(&header->heartbeat_ns, now);

    int check_deaths = now - daemon->last_death_scan_ns >= DEATH_SCAN_NS;
    if (check_deaths)
        daemon->last_death_scan_ns = now;
    int result = scan_slots(daemon, check_deaths);
    if (result != 0)
        return result;

    size_t count = daemon->pending_count < (size_t)max_events ? daemon->pending_count
                                                               : (size_t)max_events;
    if (count > 0) {
        memcpy(events, daemon->pending, count * sizeof *events);
        memmove(daemon->pending, daemon->pending + count,
                (daemon->pending_count - count) * sizeof *events);
        daemon->pending_count -= count;
    }
    return (int)count;
}

int shmstore_daemon_destroy(shmstore_daemon_t *daemon)
{
    if (daemon == NULL)
        return shm_fail(-EINVAL, "daemon is NULL");
    shm_header_t *header = daemon->store.header;

    /* Release: pairs with the clients' acquire load of stopping. */
    shm_store_release(&header->stopping, 1);
    shm_doorbell_ring(&header->doorbell);

    shm_unlink(daemon->ctl_name);
    shm_unlink(daemon->data_name);
    free_daemon(daemon);
    return 0;
}
