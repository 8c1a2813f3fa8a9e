/*
 * repair.h - bring the store back to a consistent state after a process
 * died while it held the store lock.
 */
#ifndef SHMSTORE_REPAIR_H
#define SHMSTORE_REPAIR_H

#include "store.h"

/* Repairs the store after a lock holder died. It rebuilds the allocator
 * from the block headers and returns the descriptors of interrupted
 * commits and frees to FREE. It recounts the index buckets and drops index
 * entries that point to no live descriptor. It retires live descriptors
 * that no index entry points to and frees PUBLISHED blocks that no
 * descriptor owns. Store lock held (the caller got EOWNERDEAD). Returns 0,
 * or a negative code when the arena cannot be walked. */
int shm_repair(shm_store_t *store);

#endif /* SHMSTORE_REPAIR_H */
