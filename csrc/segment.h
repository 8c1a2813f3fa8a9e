/*
 * segment.h - create, open and map the POSIX shared-memory segments of a
 * store: /dev/shm/shmstore-NAME-ctl and /dev/shm/shmstore-NAME-data.
 */
#ifndef SHMSTORE_SEGMENT_H
#define SHMSTORE_SEGMENT_H

#include <stddef.h>
#include <stdint.h>

#include "shmstore.h"

/* Bytes of a shm_open name: "/shmstore-" NAME "-data" and a NUL. */
#define SHM_SEGMENT_NAME_BYTES (SHMSTORE_NAME_MAX + 32)

/* One mapped segment. */
typedef struct shm_mapping {
    int fd;                          /* open file descriptor, -1 when closed */
    void *base;                      /* mapping address, NULL when unmapped */
    uint64_t bytes;                  /* size of the mapping */
} shm_mapping_t;

/* Resolves a store name: name itself, else $SHMSTORE_NAME, else "default".
 * Returns the name, or NULL with the error detail set (via *code) when it
 * is invalid: 1 to SHMSTORE_NAME_MAX bytes of [A-Za-z0-9._-]. */
const char *shm_store_name(const char *name, int *code);

/* Writes the shm_open name of a store's segment (suffix "ctl" or "data"). */
void shm_segment_name(char *out, const char *store, const char *suffix);

/* Fails with -ENOSPC and a detail naming both sizes when /dev/shm has less
 * than bytes free. */
int shm_check_free_space(uint64_t bytes);

/* Creates a segment that must not exist yet, with mode 0600, sized and
 * reserved with posix_fallocate (so that running out of /dev/shm fails here
 * with -ENOSPC, never later with SIGBUS), and maps it read-write.
 * populate: also pre-fault the page tables (MAP_POPULATE). lock: take an
 * exclusive flock right after creating it, so that nobody who opens it
 * later mistakes it for the segment of a dead daemon. Fails with
 * SHMSTORE_EBUSY when another process took that lock first. */
int shm_segment_create(const char *shm_name, uint64_t bytes, int populate, int lock,
                       shm_mapping_t *out);

/* Opens and maps an existing segment of its current size. Returns
 * SHMSTORE_ENOSTORE when it does not exist. */
int shm_segment_open(const char *shm_name, int writable, int populate, shm_mapping_t *out);

/* Unmaps and closes; safe on a closed mapping. */
void shm_segment_close(shm_mapping_t *mapping);

#endif /* SHMSTORE_SEGMENT_H */
