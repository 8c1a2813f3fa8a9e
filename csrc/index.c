/*
 * index.c - the lock-free-read key index (see index.h).
 */
#include "index.h"

#include <string.h>

#include "descriptor.h"
#include "shmstore.h"

/* FNV-1a over the key bytes, then a final avalanche (the finaliser of a
 * 64-bit multiply-xorshift mixer), so that both the low bits (bucket) and
 * the high bits (stored tag) depend on every byte. */
uint64_t shm_hash_key(const char *key, size_t length)
{
    uint64_t hash = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < length; i++) {
        hash ^= (unsigned char)key[i];
        hash *= UINT64_C(0x100000001b3);
    }

    hash ^= hash >> 33;
    hash *= UINT64_C(0xff51afd7ed558ccd);
    hash ^= hash >> 33;
    hash *= UINT64_C(0xc4ceb9fe1a85ec53);
    hash ^= hash >> 33;
    return hash;
}

uint64_t shm_index_capacity(uint64_t max_keys)
{
    uint64_t capacity = 8;
    while (capacity < 2 * max_keys)
        capacity *= 2;
    return capacity;
}

static uint64_t bucket_word(uint64_t hash, uint32_t number)
{
    return (hash & UINT64_C(0xffffffff00000000)) | ((uint64_t)number + 1);
}

static int word_is_entry(uint64_t word)
{
    return word != SHM_INDEX_EMPTY && word != SHM_INDEX_TOMBSTONE;
}

static uint32_t word_descriptor(uint64_t word)
{
    return (uint32_t)(word & 0xffffffffu) - 1;
}

static int hash_matches(uint64_t word, uint64_t hash)
{
    return (word >> 32) == (hash >> 32);
}

shm_atomic_u64 *shm_index_active(shm_store_t *store, uint64_t *epoch)
{
    /* Acquire: pairs with the release increment in rebuild(), so that a
     * reader of the new table reads its copied entries. */
    *epoch = shm_load_acquire(&store->header->index_epoch);
    return store->index[*epoch & 1];
}

int64_t shm_index_lookup(shm_store_t *store, uint64_t hash, shm_index_match_fn match,
                         void *context)
{
    for (;;) {
        uint64_t epoch;
        shm_atomic_u64 *table = shm_index_active(store, &epoch);
        uint64_t mask = store->index_mask;
        int restart = 0;

        for (uint64_t i = 0, at = hash & mask; i <= mask; i++, at = (at + 1) & mask) {
            /* Acquire: pairs with the writer's release store of the bucket,
             * so the descriptor's LIVE state is visible before we pin. */
            uint64_t word = shm_load_acquire(&table[at]);
            if (word == SHM_INDEX_EMPTY)
                break;
            if (!word_is_entry(word) || !hash_matches(word, hash))
                continue;

            uint32_t number = word_descriptor(word);
            if (number >= store->descriptor_count)
                continue;
            int verdict = match(context, number);
            if (verdict == 1)
                return number;
            if (verdict < 0) {
                restart = 1;
                break;
            }
        }

        if (restart)
            continue;

        /* Acquire: the bucket loads above were acquires, so this load is
         * not reordered before them. An unchanged epoch means that the
         * table was not rebuilt during the probe, so the miss is genuine. */
        if (shm_load_acquire(&store->header->index_epoch) == epoch)
            return SHMSTORE_ENOKEY;
    }
}

/* Returns 1 when the block of LIVE descriptor number contains key. Lock held. */
static int descriptor_has_key(shm_store_t *store, uint32_t number, const char *key,
                              size_t length)
{
    const shm_block_t *block = shm_descriptor_block(store, number);
    return block->u.tensor.key_length == length && memcmp(shm_block_key(block), key, length) == 0;
}

/* Finds key's bucket in table, or the bucket where it would go (the first
 * tombstone on its chain, else the empty bucket that ends it). Lock held. */
static uint64_t find_bucket(shm_store_t *store, shm_atomic_u64 *table, uint64_t hash,
                            const char *key, size_t length, int *found)
{
    uint64_t mask = store->index_mask;
    uint64_t free_bucket = UINT64_MAX;

    for (uint64_t i = 0, at = hash & mask; i <= mask; i++, at = (at + 1) & mask) {
        /* Relaxed: buckets are written only under the lock we hold. */
        uint64_t word = shm_load_relaxed(&table[at]);
        if (word == SHM_INDEX_EMPTY) {
            *found = 0;
            return free_bucket != UINT64_MAX ? free_bucket : at;
        }
        if (word == SHM_INDEX_TOMBSTONE) {
            if (free_bucket == UINT64_MAX)
                free_bucket = at;
            continue;
        }
        if (hash_matches(word, hash) && descriptor_has_key(store, word_descriptor(word), key, length)) {
            *found = 1;
            return at;
        }
    }

    /* Never reached while tables stay at most 3/4 full; a full wrap means
     * there is no empty bucket, so the first tombstone is the place. */
    *found = 0;
    return free_bucket;
}

int64_t shm_index_find_locked(shm_store_t *store, uint64_t hash, const char *key,
                              size_t length)
{
    uint64_t epoch;
    shm_atomic_u64 *table = shm_index_active(store, &epoch);
    int found = 0;
    uint64_t at = find_bucket(store, table, hash, key, length, &found);
    if (!found)
        return SHMSTORE_ENOKEY;
    /* Relaxed: lock held. */
    return word_descriptor(shm_load_relaxed(&table[at]));
}

/* Copies the live entries of the active table into the other one and makes
 * it active. Lock held. */
static void rebuild(shm_store_t *store)
{
    shm_header_t *header = store->header;
    /* Relaxed: only writers change the epoch, and we hold the lock. */
    uint64_t epoch = shm_load_relaxed(&header->index_epoch);
    shm_atomic_u64 *from = store->index[epoch & 1];
    shm_atomic_u64 *to = store->index[(epoch + 1) & 1];
    uint64_t mask = store->index_mask;

    /* Relaxed stores: readers still probing this old table from an earlier
     * epoch only act on entries they verify, and recheck the epoch on a miss. */
    for (uint64_t at = 0; at <= mask; at++)
        shm_store_relaxed(&to[at], SHM_INDEX_EMPTY);

    uint64_t used = 0;
    for (uint64_t at = 0; at <= mask; at++) {
        /* Relaxed: lock held, and only lock holders write buckets. */
        uint64_t word = shm_load_relaxed(&from[at]);
        if (!word_is_entry(word))
            continue;
        /* The stored tag is the high half of the hash; the bucket comes from
         * the low half, so recompute it from the key. */
        const shm_block_t *block = shm_descriptor_block(store, word_descriptor(word));
        uint64_t hash = shm_hash_key(shm_block_key(block), block->u.tensor.key_length);
        uint64_t slot;
        for (slot = hash & mask; shm_load_relaxed(&to[slot]) != SHM_INDEX_EMPTY;
             slot = (slot + 1) & mask) {
        }
        shm_store_relaxed(&to[slot], word);
        used++;
    }

    /* Release: pairs with the acquire load in shm_index_active, so that a
     * reader that loads the new epoch also loads the copied entries. */
    shm_store_release(&header->index_epoch, epoch + 1);
    header->index_used = used;
}

int shm_index_upsert(shm_store_t *store, uint64_t hash, const char *key, size_t length,
                     uint32_t number, uint32_t *old)
{
    uint64_t epoch;
    shm_atomic_u64 *table = shm_index_active(store, &epoch);
    int found = 0;
    uint64_t at = find_bucket(store, table, hash, key, length, &found);

    if (found) {
        /* Relaxed: lock held. */
        *old = word_descriptor(shm_load_relaxed(&table[at]));
        /* Release: pairs with the reader's acquire load of the bucket; this
         * is the one store that makes the new version visible. */
        shm_store_release(&table[at], bucket_word(hash, number));
        return 1;
    }

    /* A full wrap without a free bucket (at == UINT64_MAX) means that
     * index_used was wrong. Rebuilding recounts it and frees tombstones. */
    uint64_t capacity = store->index_mask + 1;
    if (store->header->index_used + 1 > capacity / 4 * 3 || at == UINT64_MAX) {
        rebuild(store);
        table = shm_index_active(store, &epoch);
        at = find_bucket(store, table, hash, key, length, &found);
    }

    /* Relaxed: lock held; counts a previously empty bucket only. */
    if (shm_load_relaxed(&table[at]) == SHM_INDEX_EMPTY)
        store->header->index_used++;

    /* Release: pairs with the reader's acquire load of the bucket. */
    shm_store_release(&table[at], bucket_word(hash, number));
    return 0;
}

int shm_index_remove(shm_store_t *store, uint64_t hash, const char *key, size_t length,
                     uint32_t *old)
{
    uint64_t epoch;
    shm_atomic_u64 *table = shm_index_active(store, &epoch);
    int found = 0;
    uint64_t at = find_bucket(store, table, hash, key, length, &found);
    if (!found)
        return SHMSTORE_ENOKEY;

    /* Relaxed: lock held. */
    *old = word_descriptor(shm_load_relaxed(&table[at]));
    /* Release: orders nothing readers need, but keeps every bucket write a
     * release store so a reader never sees it before earlier ones. */
    shm_store_release(&table[at], SHM_INDEX_TOMBSTONE);
    return 0;
}

void shm_index_for_each_locked(shm_store_t *store,
                               void (*visit)(void *context, uint64_t bucket, uint32_t number),
                               void *context)
{
    uint64_t epoch;
    shm_atomic_u64 *table = shm_index_active(store, &epoch);

    for (uint64_t at = 0; at <= store->index_mask; at++) {
        /* Relaxed: lock held. */
        uint64_t word = shm_load_relaxed(&table[at]);
        if (word_is_entry(word))
            visit(context, at, word_descriptor(word));
    }
}

void shm_index_recount(shm_store_t *store)
{
    uint64_t epoch;
    shm_atomic_u64 *table = shm_index_active(store, &epoch);
    uint64_t used = 0;

    for (uint64_t at = 0; at <= store->index_mask; at++) {
        /* Relaxed: lock held. */
        if (shm_load_relaxed(&table[at]) != SHM_INDEX_EMPTY)
            used++;
    }
    store->header->index_used = used;
}

void shm_index_drop_bucket(shm_store_t *store, uint64_t bucket)
{
    uint64_t epoch;
    shm_atomic_u64 *table = shm_index_active(store, &epoch);

    /* Release: as in shm_index_remove. */
    shm_store_release(&table[bucket], SHM_INDEX_TOMBSTONE);
}
