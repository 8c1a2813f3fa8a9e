/*
 * store.c - binding a process's mappings to the layout of a store.
 */
#include "store.h"

void shm_store_bind(shm_store_t *store, void *ctl, void *arena)
{
    shm_header_t *header = ctl;

    store->header = header;
    store->ctl = ctl;
    store->arena = arena;
    store->arena_bytes = header->arena_bytes;
    store->slots = (shm_slot_t *)(store->ctl + header->slots_offset);
    store->descriptors = store->ctl + header->descriptors_offset;
    store->descriptor_stride = header->descriptor_stride;
    store->descriptor_count = header->descriptor_count;
    store->bitmap_words = header->bitmap_words;
    store->max_clients = header->max_clients;
    store->index[0] = (shm_atomic_u64 *)(store->ctl + header->index_offset[0]);
    store->index[1] = (shm_atomic_u64 *)(store->ctl + header->index_offset[1]);
    store->index_mask = header->index_capacity - 1;
}
