/*
 * layout.h - the structs that live in the two shared-memory segments.
 *
 * Control segment (shmstore-NAME-ctl), in this order, each part aligned to
 * a page:
 *   shm_header_t                   magic, sizes, liveness, store lock, allocator state
 *   max_clients x shm_slot_t       one per attached client
 *   max_clients x SPSC ring        client -> daemon messages (HELLO, BYE)
 *   descriptor_count descriptors   descriptor_stride bytes each
 *   2 x index_capacity uint64_t    the two key-index tables (see index.h)
 *
 * Data segment (shmstore-NAME-data): the arena of blocks (see alloc.h).
 *
 * Everything is addressed by offsets, because every process maps the
 * segments at its own address. Field comments say who touches a field:
 * "fixed" fields are written by the daemon before it publishes the magic
 * and never change; "lock" fields are read and written only under the store
 * lock; "shared" fields are atomics that processes touch without the lock.
 */
#ifndef SHMSTORE_LAYOUT_H
#define SHMSTORE_LAYOUT_H

#include <pthread.h>
#include <stdint.h>

#include "atomics.h"
#include "doorbell.h"

#define SHM_HEADER_MAGIC 0x53484d53544f5231ULL /* "SHMSTOR1" */
#define SHM_BLOCK_MAGIC 0x424c4b31u           /* "BLK1" */

#define SHM_PAGE 4096u
#define SHM_ALIGN 64u                /* alignment of blocks and tensor data */

/* Segregated free lists: 16 exact classes for blocks of 1..15 units of 64
 * bytes, then 4 classes per power of two (see alloc.c). 256 lists cover
 * every 64-bit size. */
#define SHM_SIZE_CLASSES 256u
#define SHM_NO_BLOCK UINT64_MAX      /* null arena offset in free-list links */

#define SHM_RING_CAPACITY 4096u      /* data bytes of each client -> daemon ring */

/* ---- control header -------------------------------------------------- */

typedef struct shm_header {
    /* Shared: stored last by the daemon with release order once the whole
     * segment is initialised; a client reads it with acquire order first. */
    shm_atomic_u64 magic;

    /* Fixed. */
    uint32_t abi_version;
    uint32_t header_bytes;           /* sizeof(shm_header_t) */
    uint64_t ctl_bytes;              /* size of the control segment */
    uint64_t arena_bytes;            /* size of the data segment */
    uint32_t max_clients;
    uint32_t bitmap_words;           /* uint64 words of a descriptor's reader bitmap */
    uint64_t max_keys;
    uint64_t descriptor_count;
    uint64_t descriptor_stride;      /* bytes from one descriptor to the next */
    uint64_t index_capacity;         /* buckets per index table, a power of two */
    uint64_t slots_offset;
    uint64_t rings_offset;
    uint64_t ring_stride;            /* bytes from one ring to the next */
    uint64_t descriptors_offset;
    uint64_t index_offset[2];
    int32_t daemon_pid;
    uint32_t reserved0;
    uint64_t daemon_start_ticks;     /* field 22 of /proc/PID/stat of the daemon */
    int64_t created_ns;              /* CLOCK_MONOTONIC at creation */

    /* Shared: written by the daemon, read by clients. */
    _Alignas(SHM_CACHE_LINE) shm_atomic_i64 heartbeat_ns; /* CLOCK_MONOTONIC, every poll */
    shm_atomic_u32 stopping;         /* 1 once the daemon shuts down */

    /* Shared: the daemon sleeps on it; clients ring it after a message. */
    shm_doorbell_t doorbell;

    /* Shared: the robust, process-shared store lock (lock.h). */
    _Alignas(SHM_CACHE_LINE) pthread_mutex_t lock;

    /* Lock for writes; shared for reads by stats (relaxed, approximate). */
    _Alignas(SHM_CACHE_LINE) shm_atomic_u64 used_bytes;   /* allocated arena bytes */
    shm_atomic_u64 key_count;

    /* Lock. */
    uint64_t descriptor_cursor;      /* where the next free-descriptor search starts */
    uint64_t index_used;             /* live + tombstone buckets in the active table */
    uint64_t free_bitmap[SHM_SIZE_CLASSES / 64]; /* bit c set: free list c non-empty */
    uint64_t free_heads[SHM_SIZE_CLASSES];       /* first free block of each class */

    /* Shared: lock for writes; lock-free readers load it with acquire
     * order. The low bit selects the active index table. */
    _Alignas(SHM_CACHE_LINE) shm_atomic_u64 index_epoch;
} shm_header_t;

/* ---- client slots ------------------------------------------------------ */

enum shm_slot_state {
    SHM_SLOT_FREE = 0,
    SHM_SLOT_ATTACHING = 1,          /* claimed, start time not yet written */
    SHM_SLOT_ATTACHED = 2,
    SHM_SLOT_DETACHED = 3,           /* left cleanly; the daemon frees it */
};

/* Packs a slot's owner word: pid in the high 32 bits, state in the low 8. */
#define SHM_SLOT_WORD(pid, state) (((uint64_t)(uint32_t)(pid) << 32) | (uint64_t)(state))
#define SHM_SLOT_PID(word) ((int32_t)(uint32_t)((word) >> 32))
#define SHM_SLOT_STATE(word) ((uint32_t)((word)&0xffu))

typedef struct shm_slot {
    /* Shared: a client claims a free slot with a compare-and-swap and
     * sets DETACHED when it leaves; the daemon reads it and frees it. */
    _Alignas(SHM_CACHE_LINE) shm_atomic_u64 owner;
    /* Shared: written by the client before it sets ATTACHED, read by the
     * daemon to tell a reused pid from the client. */
    shm_atomic_u64 start_ticks;
} shm_slot_t;

/* ---- descriptors ------------------------------------------------------- */

enum shm_descriptor_state {
    SHM_DESC_FREE = 0,
    SHM_DESC_RESERVED = 1,           /* taken by a commit in progress (lock held) */
    SHM_DESC_LIVE = 2,               /* the current version of its key */
    SHM_DESC_RETIRED = 3,            /* out of the index, freed when unpinned */
};

/* Packs a descriptor state word: a generation that grows with every reuse
 * in the high 56 bits, the state in the low 8. */
#define SHM_DESC_WORD(generation, state) (((uint64_t)(generation) << 8) | (uint64_t)(state))
#define SHM_DESC_GENERATION(word) ((word) >> 8)
#define SHM_DESC_STATE(word) ((uint32_t)((word)&0xffu))

typedef struct shm_descriptor {
    /* Shared: lock for writes; readers load it with seq_cst order after
     * setting their reader bit (descriptor.c). */
    shm_atomic_u64 state;
    /* Shared: lock for writes; readers load it relaxed, ordered by their
     * acquire of state. Arena offset of the version's block. */
    shm_atomic_u64 block;
    /* Shared: one bit per client slot, set and cleared by readers with
     * seq_cst read-modify-writes; bitmap_words words. */
    shm_atomic_u64 readers[];
} shm_descriptor_t;

/* ---- arena blocks ------------------------------------------------------ */

enum shm_block_state {
    SHM_BLOCK_FREE = 0,
    SHM_BLOCK_UNPUBLISHED = 1,       /* allocated to owner, not yet in the index */
    SHM_BLOCK_PUBLISHED = 2,         /* belongs to descriptor */
};

/* The 64-byte header at the start of every block. A tensor block holds,
 * after it, the key (key_length bytes and a NUL), the dims (ndim int64,
 * 8-byte aligned) and, at data_offset, the tensor bytes, 64-byte aligned. */
typedef struct shm_block {
    /* Lock: written only by the allocator and by commit and reclaim. */
    uint32_t magic;
    uint32_t state;
    uint64_t size;                   /* bytes of the whole block, a multiple of 64 */
    uint64_t prev_size;              /* size of the block just before, 0 for the first */
    int32_t owner;                   /* writer's slot while UNPUBLISHED */
    uint32_t descriptor;             /* PUBLISHED: descriptor number */
    union {
        /* Written by the owner while UNPUBLISHED, outside the lock; read
         * by anyone holding a pin after the block is PUBLISHED. */
        struct {
            uint64_t nbytes;         /* tensor bytes */
            uint32_t data_offset;    /* from the block start */
            uint16_t key_length;     /* bytes, no NUL */
            uint8_t dtype;
            uint8_t order;
            uint8_t ndim;
        } tensor;
        /* Lock: free-list links of a FREE block (arena offsets). */
        struct {
            uint64_t next;
            uint64_t prev;
        } free;
    } u;
} shm_block_t;

_Static_assert(sizeof(shm_block_t) <= SHM_ALIGN, "a block header fits in 64 bytes");

#endif /* SHMSTORE_LAYOUT_H */
