/*
 * client.c - connect, disconnect, timeouts and daemon liveness.
 */
#define _GNU_SOURCE
#include "client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "errors.h"
#include "layout.h"
#include "lock.h"
#include "messages.h"
#include "process.h"
#include "ring_spsc.h"
#include "spin_wait.h"

/* Process-private: how many times this process's ancestors forked since
 * the library was loaded, counted in each child by a pthread_atfork
 * handler. Written by the handler while the child has a single thread. */
static shm_atomic_u64 fork_counter;
static pthread_once_t fork_handler_once = PTHREAD_ONCE_INIT;

static void count_fork_in_child(void)
{
    /* Relaxed: the child runs one thread while the handler runs. */
    shm_store_relaxed(&fork_counter, shm_load_relaxed(&fork_counter) + 1);
}

static void install_fork_handler(void)
{
    /* NOTE: a fork that bypasses pthread_atfork (a raw clone system call)
     * is not counted, so its child can still act on the parent's slot. */
    pthread_atfork(NULL, NULL, count_fork_in_child);
}

int shm_client_forked(const shmstore_client_t *client)
{
    /* Relaxed: only this process writes the counter, before any thread
     * of the child can call in. */
    return shm_load_relaxed(&fork_counter) != client->fork_generation;
}

/* Maximum single wait for the store lock between two liveness checks. */
#define LOCK_SLICE_MS 250

static int timeout_from_environment(void)
{
    const char *text = getenv("SHMSTORE_TIMEOUT_MS");
    if (text == NULL || *text == '\0')
        return SHM_DEFAULT_TIMEOUT_MS;

    char *end = NULL;
    long value = strtol(text, &end, 10);
    if (*end != '\0' || value <= 0 || value > 24L * 3600 * 1000)
        return SHM_DEFAULT_TIMEOUT_MS;
    return (int)value;
}

/* Returns 1 when the daemon holds its exclusive flock on the control
 * segment, which the kernel drops however the daemon dies. */
static int daemon_holds_lock(int ctl_fd)
{
    if (flock(ctl_fd, LOCK_SH | LOCK_NB) == 0) {
        flock(ctl_fd, LOCK_UN);
        return 0;
    }
    return 1;
}

int shm_client_check_alive(shmstore_client_t *client)
{
    shm_header_t *header = client->store.header;

    if (shm_client_forked(client)) {
        return shm_fail(SHMSTORE_ELOST, "this client of store \"%s\" was connected by pid %d "
                        "before pid %d forked from it; connect a new client in the child",
                        client->name, (int)client->pid, (int)getpid());
    }

    /* Acquire: pairs with the daemon's release store of stopping. */
    if (shm_load_acquire(&header->stopping) != 0) {
        return shm_fail(SHMSTORE_ELOST, "store \"%s\" is shutting down (daemon pid %d stopped)",
                        client->name, (int)header->daemon_pid);
    }

    /* Relaxed: the heartbeat is a timestamp; no other data depends on it. */
    int64_t heartbeat = shm_load_relaxed(&header->heartbeat_ns);
    if (shm_monotonic_ns() - heartbeat <= SHM_HEARTBEAT_STALE_NS)
        return 0;

    if (daemon_holds_lock(client->ctl.fd))
        return 0;
    return shm_fail(SHMSTORE_ELOST, "daemon pid %d of store \"%s\" died; restart it",
                    (int)header->daemon_pid, client->name);
}

int shmstore_check_daemon(shmstore_client_t *client)
{
    if (client == NULL)
        return shm_fail(-EINVAL, "client is NULL");
    return shm_client_check_alive(client);
}

int shmstore_set_timeout(shmstore_client_t *client, int timeout_ms)
{
    if (client == NULL)
        return shm_fail(-EINVAL, "client is NULL");
    if (timeout_ms <= 0)
        return shm_fail(-EINVAL, "timeout of %d ms is invalid: give a positive number",
                        timeout_ms);
    /* Relaxed: a setting read once per call; nothing else depends on it. */
    shm_store_relaxed(&client->timeout_ms, timeout_ms);
    return 0;
}

int shm_client_lock(shmstore_client_t *client)
{
    /* Relaxed: see shmstore_set_timeout. */
    int timeout_ms = shm_load_relaxed(&client->timeout_ms);
    int64_t deadline = shm_monotonic_ns() + (int64_t)timeout_ms * 1000000;

    for (;;) {
        int result = shm_client_check_alive(client);
        if (result != 0)
            return result;

        int64_t left_ms = (deadline - shm_monotonic_ns()) / 1000000;
        if (left_ms < 0)
            left_ms = 0;
        int slice = LOCK_SLICE_MS;
        if (left_ms < LOCK_SLICE_MS)
            slice = (int)left_ms;
        result = shm_lock(&client->store, slice);
        if (result != -ETIMEDOUT)
            return result;
        if (shm_monotonic_ns() >= deadline) {
            return shm_fail(-ETIMEDOUT,
                            "store lock of \"%s\" still taken after %d ms while the daemon "
                            "lives; raise the timeout (SHMSTORE_TIMEOUT_MS)",
                            client->name, timeout_ms);
        }
    }
}

void shm_client_unlock(shmstore_client_t *client)
{
    shm_unlock(&client->store);
}

static shm_spsc_t *slot_ring(shmstore_client_t *client)
{
    shm_header_t *header = client->store.header;
    return (shm_spsc_t *)(client->store.ctl + header->rings_offset +
                          (uint64_t)client->slot * header->ring_stride);
}

/* Sends a message to the daemon and rings its doorbell. A full ring only
 * delays the event: the daemon also learns of attaching and detaching from
 * the slot state. */
static void send_message(shmstore_client_t *client, uint32_t type)
{
    shm_message_t message = {.type = type, .pid = client->pid};
    shm_spsc_push(slot_ring(client), &message, sizeof message);
    shm_doorbell_ring(&client->store.header->doorbell);
}

static int validate_header(const shm_mapping_t *ctl, const char *name)
{
    const shm_header_t *header = ctl->base;

    if (ctl->bytes < sizeof(shm_header_t)) {
        return shm_fail(SHMSTORE_EABI, "control segment of store \"%s\" has %llu bytes, less "
                        "than its %zu-byte header", name, (unsigned long long)ctl->bytes,
                        sizeof(shm_header_t));
    }

    /* Acquire: pairs with the daemon's release store of the magic, the
     * last step of initialising the segment. */
    uint64_t magic = shm_load_acquire(&((shm_header_t *)ctl->base)->magic);
    if (magic == 0) {
        return shm_fail(SHMSTORE_ENOSTORE, "store \"%s\" is still being created; retry",
                        name);
    }
    if (magic != SHM_HEADER_MAGIC) {
        return shm_fail(SHMSTORE_EABI, "control segment of store \"%s\" has magic %#llx, "
                        "expected %#llx: not a shmstore segment", name,
                        (unsigned long long)magic, (unsigned long long)SHM_HEADER_MAGIC);
    }
    if (header->abi_version != SHMSTORE_ABI_VERSION) {
        return shm_fail(SHMSTORE_EABI, "store \"%s\" uses layout version %u but this library "
                        "uses %d; use the same shmstore build for daemon and clients", name,
                        header->abi_version, SHMSTORE_ABI_VERSION);
    }
    if (header->header_bytes != sizeof(shm_header_t) || header->ctl_bytes != ctl->bytes) {
        return shm_fail(SHMSTORE_EABI, "store \"%s\" header or segment size differs from "
                        "this library's (header %u vs %zu bytes, segment %llu vs %llu bytes)",
                        name, header->header_bytes, sizeof(shm_header_t),
                        (unsigned long long)header->ctl_bytes, (unsigned long long)ctl->bytes);
    }
    return 0;
}

/* Claims a free client slot for this process. Returns its number or
 * SHMSTORE_EFULL. */
static int claim_slot(shmstore_client_t *client)
{
    uint64_t ticks = 0;
    shm_process_start_ticks(client->pid, &ticks);

    for (uint32_t s = 0; s < client->store.max_clients; s++) {
        shm_slot_t *slot = &client->store.slots[s];
        uint64_t expected = SHM_SLOT_WORD(0, SHM_SLOT_FREE);

        /* acq_rel: the acquire pairs with the daemon's release store of
         * FREE after it reset the slot's ring. */
        if (!shm_cas_acq_rel(&slot->owner, &expected,
                             SHM_SLOT_WORD(client->pid, SHM_SLOT_ATTACHING)))
            continue;

        /* Relaxed: published by the release store of ATTACHED below. */
        shm_store_relaxed(&slot->start_ticks, ticks);
        /* Release: pairs with the daemon's acquire load of owner, so it reads
         * the start time before it checks the pid. */
        shm_store_release(&slot->owner, SHM_SLOT_WORD(client->pid, SHM_SLOT_ATTACHED));
        client->slot = s;
        return 0;
    }

    return shm_fail(SHMSTORE_EFULL, "all %u client slots of store \"%s\" are taken; "
                    "disconnect idle clients or restart the daemon with more --max-clients",
                    client->store.max_clients, client->name);
}

/* Returns 1 when a slot is DETACHED: its client left and the daemon has
 * not freed it yet. */
static int slot_being_freed(const shmstore_client_t *client)
{
    for (uint32_t s = 0; s < client->store.max_clients; s++) {
        /* Relaxed: a hint whether waiting can help; the claim's CAS decides. */
        uint64_t word = shm_load_relaxed(&client->store.slots[s].owner);
        if (SHM_SLOT_STATE(word) == SHM_SLOT_DETACHED)
            return 1;
    }
    return 0;
}

/* Claims a slot. When every slot is taken but some client has just
 * detached, waits for the daemon to free that slot, up to the client's
 * timeout, so that a process that closes and reopens clients in a loop is
 * not rejected while the daemon catches up. */
static int claim_slot_waiting(shmstore_client_t *client)
{
    /* Relaxed: no other thread can reach the handle yet. */
    int timeout_ms = shm_load_relaxed(&client->timeout_ms);
    int64_t deadline = shm_monotonic_ns() + (int64_t)timeout_ms * 1000000;

    for (;;) {
        int result = claim_slot(client);
        if (result != SHMSTORE_EFULL || !slot_being_freed(client) ||
            shm_monotonic_ns() >= deadline)
            return result;
        result = shm_client_check_alive(client);
        if (result != 0)
            return result;

        shm_doorbell_ring(&client->store.header->doorbell);
        struct timespec pause = {.tv_sec = 0, .tv_nsec = 1000000L};
        nanosleep(&pause, NULL);
    }
}

/* MADV_POPULATE_WRITE appeared in Linux 5.14; older kernels reject it
 * with EINVAL and the put just takes its page faults. */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

void shm_client_prefault(shmstore_client_t *client, uint64_t offset, uint64_t bytes)
{
    if (bytes < SHM_PREFAULT_MIN_BYTES || client->prefaulted == NULL)
        return;

    uint64_t first = offset / SHM_PREFAULT_CHUNK;
    uint64_t last = (offset + bytes - 1) / SHM_PREFAULT_CHUNK;
    for (uint64_t chunk = first; chunk <= last; chunk++) {
        uint64_t bit = UINT64_C(1) << (chunk % 64);
        /* Relaxed: a hint only; two threads may both populate a chunk. */
        if (shm_load_relaxed(&client->prefaulted[chunk / 64]) & bit)
            continue;

        uint64_t start = chunk * SHM_PREFAULT_CHUNK;
        uint64_t length = client->data.bytes - start;
        if (length > SHM_PREFAULT_CHUNK)
            length = SHM_PREFAULT_CHUNK;
        if (madvise(client->store.arena + start, (size_t)length, MADV_POPULATE_WRITE) != 0)
            return;
        /* seq_cst is stronger than needed; the bit is a hint like above. */
        shm_fetch_or_seq(&client->prefaulted[chunk / 64], bit);
    }
}

static int populate_from_environment(void)
{
    const char *text = getenv("SHMSTORE_MAP_POPULATE");
    return text != NULL && strcmp(text, "1") == 0;
}

int shmstore_connect(const char *name, shmstore_client_t **out)
{
    if (out == NULL)
        return shm_fail(-EINVAL, "output pointer is NULL");
    *out = NULL;

    int result = 0;
    const char *store_name = shm_store_name(name, &result);
    if (store_name == NULL)
        return result;

    shmstore_client_t *client = calloc(1, sizeof *client);
    if (client == NULL)
        return shm_fail(-ENOMEM, "out of process memory for a client handle");
    client->ctl.fd = -1;
    client->data.fd = -1;
    snprintf(client->name, sizeof client->name, "%s", store_name);
    client->pid = (int32_t)getpid();
    pthread_once(&fork_handler_once, install_fork_handler);
    /* Relaxed: see shm_client_forked. */
    client->fork_generation = shm_load_relaxed(&fork_counter);
    /* Relaxed: no other thread can reach the handle yet. */
    shm_store_relaxed(&client->timeout_ms, timeout_from_environment());
    shm_store_relaxed(&client->references, 1);

    char shm_name[SHM_SEGMENT_NAME_BYTES];
    shm_segment_name(shm_name, store_name, "ctl");
    result = shm_segment_open(shm_name, 1, 0, &client->ctl);
    if (result != 0)
        goto fail;
    result = validate_header(&client->ctl, store_name);
    if (result != 0)
        goto fail;

    shm_header_t *header = client->ctl.base;
    if (!daemon_holds_lock(client->ctl.fd)) {
        result = shm_fail(SHMSTORE_ENOSTORE, "daemon pid %d of store \"%s\" is not running; "
                          "start it with `shmstore serve --name %s`",
                          (int)header->daemon_pid, store_name, store_name);
        goto fail;
    }
    /* Acquire: pairs with the daemon's release store of stopping. */
    if (shm_load_acquire(&header->stopping) != 0) {
        result = shm_fail(SHMSTORE_ENOSTORE, "store \"%s\" is shutting down", store_name);
        goto fail;
    }

    /* SHMSTORE_MAP_POPULATE=1 populates the page tables of the whole arena
     * here, which costs time in proportion to the arena's size; by default
     * large puts populate the chunks they touch (shm_client_prefault). */
    shm_segment_name(shm_name, store_name, "data");
    result = shm_segment_open(shm_name, 1, populate_from_environment(), &client->data);
    if (result != 0)
        goto fail;
    if (client->data.bytes < header->arena_bytes) {
        result = shm_fail(SHMSTORE_EABI, "data segment of store \"%s\" has %llu bytes, less "
                          "than the %llu bytes its header gives", store_name,
                          (unsigned long long)client->data.bytes,
                          (unsigned long long)header->arena_bytes);
        goto fail;
    }

    shm_store_bind(&client->store, client->ctl.base, client->data.base);

    client->pin_counts = calloc(client->store.descriptor_count, sizeof(uint32_t));
    if (client->pin_counts == NULL) {
        result = shm_fail(-ENOMEM, "out of process memory for %llu pin counts",
                          (unsigned long long)client->store.descriptor_count);
        goto fail;
    }
    uint64_t chunks = (client->data.bytes + SHM_PREFAULT_CHUNK - 1) / SHM_PREFAULT_CHUNK;
    client->prefaulted = calloc((chunks + 63) / 64, sizeof(uint64_t));
    int error = pthread_mutex_init(&client->pin_mutex, NULL);
    if (error != 0) {
        free(client->pin_counts);
        client->pin_counts = NULL;
        free(client->prefaulted);
        result = shm_fail(-error, "pthread_mutex_init failed: %s", strerror(error));
        goto fail;
    }

    result = claim_slot_waiting(client);
    if (result != 0) {
        pthread_mutex_destroy(&client->pin_mutex);
        free(client->pin_counts);
        client->pin_counts = NULL;
        free(client->prefaulted);
        goto fail;
    }

    send_message(client, SHM_MESSAGE_HELLO);
    *out = client;
    return 0;

fail:
    shm_segment_close(&client->data);
    shm_segment_close(&client->ctl);
    free(client);
    return result;
}

/* Leaves the slot and unmaps. The last reference calls it, so no view of
 * this client remains and every reader bit of the slot is clear, unless
 * this process is a forked child, which leaves the parent's slot alone. */
static void detach(shmstore_client_t *client)
{
    shm_slot_t *slot = &client->store.slots[client->slot];

    /* A forked child only unmaps: the slot stays with the parent. */
    if (!shm_client_forked(client)) {
        send_message(client, SHM_MESSAGE_BYE);
        /* Release: pairs with the daemon's acquire load of owner, so it
         * reads the BYE message and every earlier write before it frees
         * the slot. After this store the slot and its ring belong to the
         * daemon. */
        shm_store_release(&slot->owner, SHM_SLOT_WORD(client->pid, SHM_SLOT_DETACHED));
        shm_doorbell_ring(&client->store.header->doorbell);
    }

    /* NOTE: in a forked child this mutex may be locked by a thread that
     * did not survive the fork; destroying it then is undefined in POSIX
     * but harmless in glibc. */
    pthread_mutex_destroy(&client->pin_mutex);
    free(client->pin_counts);
    free(client->prefaulted);
    shm_segment_close(&client->data);
    shm_segment_close(&client->ctl);
    free(client);
}

void shm_client_ref(shmstore_client_t *client)
{
    /* Relaxed: like a reference count; the caller already holds one. */
    shm_fetch_add_relaxed(&client->references, 1);
}

void shm_client_unref(shmstore_client_t *client)
{
    /* acq_rel: the last dropper must see every other user's writes. */
    if (shm_fetch_sub_acq_rel(&client->references, 1) == 1)
        detach(client);
}

int shmstore_disconnect(shmstore_client_t *client)
{
    if (client == NULL)
        return shm_fail(-EINVAL, "client is NULL");
    shm_client_unref(client);
    return 0;
}
