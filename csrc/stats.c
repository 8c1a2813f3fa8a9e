/*
 * stats.c - read a store's statistics without attaching to it.
 */
#include <errno.h>
#include <string.h>

#include "errors.h"
#include "layout.h"
#include "segment.h"
#include "shmstore.h"
#include "spin_wait.h"

int shmstore_stats(const char *name, shmstore_stats_t *stats, int32_t *pids, int max_pids)
{
    if (stats == NULL || (pids == NULL && max_pids > 0) || max_pids < 0)
        return shm_fail(-EINVAL, "stats is NULL, or pids is NULL with max_pids > 0");
    memset(stats, 0, sizeof *stats);

    int result = 0;
    const char *store_name = shm_store_name(name, &result);
    if (store_name == NULL)
        return result;

    char shm_name[SHM_SEGMENT_NAME_BYTES];
    shm_segment_name(shm_name, store_name, "ctl");
    shm_mapping_t ctl;
    result = shm_segment_open(shm_name, 0, 0, &ctl);
    if (result != 0)
        return result;

    const shm_header_t *header = ctl.base;
    /* Acquire: pairs with the daemon's release store of the magic. */
    if (ctl.bytes < sizeof(shm_header_t) ||
        shm_load_acquire(&((shm_header_t *)ctl.base)->magic) != SHM_HEADER_MAGIC ||
        header->abi_version != SHMSTORE_ABI_VERSION || header->ctl_bytes != ctl.bytes) {
        shm_segment_close(&ctl);
        return shm_fail(SHMSTORE_EABI, "store \"%s\" has a layout this library does not "
                        "read (or is still starting)", store_name);
    }

    stats->daemon_pid = header->daemon_pid;
    stats->uptime_s = (double)(shm_monotonic_ns() - header->created_ns) / 1e9;
    stats->arena_bytes = header->arena_bytes;
    /* Relaxed: statistics are approximate snapshots. */
    stats->used_bytes = shm_load_relaxed(&((shm_header_t *)ctl.base)->used_bytes);
    stats->key_count = shm_load_relaxed(&((shm_header_t *)ctl.base)->key_count);
    stats->max_clients = header->max_clients;
    stats->max_keys = header->max_keys;

    const shm_slot_t *slots = (const shm_slot_t *)((const unsigned char *)ctl.base +
                                                   header->slots_offset);
    uint32_t attached = 0;
    for (uint32_t s = 0; s < header->max_clients; s++) {
        /* Relaxed: an approximate snapshot of who is attached. */
        uint64_t word = shm_load_relaxed(&((shm_slot_t *)slots)[s].owner);
        if (SHM_SLOT_STATE(word) != SHM_SLOT_ATTACHED)
            continue;
        if ((int)attached < max_pids)
            pids[attached] = SHM_SLOT_PID(word);
        attached++;
    }
    stats->client_count = attached;

    shm_segment_close(&ctl);
    return 0;
}
