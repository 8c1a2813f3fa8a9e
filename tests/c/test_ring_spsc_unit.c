/*
 * test_ring_spsc_unit.c - single-threaded cases of the SPSC ring: empty,
 * full, wrap-around (exact fit, one slot short, one byte over), oversize
 * messages, short buffers and corrupted indices.
 */
#include "test_ring_support.h"

#include <stdalign.h>

#include "ring_spsc.h"

#define CAPACITY 256u

/* The ring memory for every case, big enough for CAPACITY. */
static alignas(SHM_CACHE_LINE) unsigned char ring_memory[sizeof(shm_spsc_t) + CAPACITY];

static const unsigned char zeros[CAPACITY];

static shm_spsc_t *fresh_ring(void)
{
    CHECK_RC(shm_spsc_init(ring_memory, CAPACITY), 0);
    return (shm_spsc_t *)ring_memory;
}

/* Fills buf with len bytes derived from tag, so that a mix-up shows. */
static void fill_pattern(unsigned char *buf, uint32_t len, uint32_t tag)
{
    for (uint32_t i = 0; i < len; i++)
        buf[i] = (unsigned char)(tag * 31u + i);
}

static void push_pattern(shm_spsc_t *ring, uint32_t len, uint32_t tag)
{
    unsigned char buf[CAPACITY];
    fill_pattern(buf, len, tag);
    CHECK_RC(shm_spsc_push(ring, buf, len), 0);
}

static void pop_pattern(shm_spsc_t *ring, uint32_t len, uint32_t tag)
{
    unsigned char expected[CAPACITY];
    unsigned char got[CAPACITY];
    uint32_t got_len = UINT32_MAX;
    fill_pattern(expected, len, tag);
    CHECK_RC(shm_spsc_pop(ring, got, sizeof got, &got_len), 0);
    CHECK(got_len == len);
    CHECK(memcmp(got, expected, len) == 0);
}

/* Moves head and tail to byte offset within the data area, ring empty. */
static void advance_empty_ring(shm_spsc_t *ring, uint32_t offset)
{
    while ((shm_load_relaxed(&ring->tail) % CAPACITY) != offset) {
        push_pattern(ring, 0, 0);
        pop_pattern(ring, 0, 0);
    }
}

static void test_footprint(void)
{
    CHECK(shm_spsc_footprint(0) == 0);
    CHECK(shm_spsc_footprint(32) == 0);
    CHECK(shm_spsc_footprint(100) == 0);
    CHECK(shm_spsc_footprint(64) == sizeof(shm_spsc_t) + 64);
    CHECK(shm_spsc_footprint(1u << 31) == sizeof(shm_spsc_t) + (1ull << 31));
    CHECK(sizeof(shm_spsc_t) % SHM_CACHE_LINE == 0);

    CHECK_RC(shm_spsc_init(ring_memory + 8, CAPACITY), -EINVAL);
    CHECK_RC(shm_spsc_init(ring_memory, 48), -EINVAL);
    CHECK_RC(shm_spsc_init(NULL, CAPACITY), -EINVAL);
}

static void test_empty(void)
{
    shm_spsc_t *ring = fresh_ring();
    unsigned char buf[8];
    uint32_t len = 12345;

    CHECK(shm_spsc_empty(ring));
    CHECK_RC(shm_spsc_pop(ring, buf, sizeof buf, &len), -EAGAIN);
    CHECK(len == 12345);

    push_pattern(ring, 0, 0);
    CHECK(!shm_spsc_empty(ring));
    pop_pattern(ring, 0, 0);
    CHECK(shm_spsc_empty(ring));
}

static void test_oversize(void)
{
    shm_spsc_t *ring = fresh_ring();
    uint32_t max = shm_spsc_max_message(ring);
    CHECK(max == CAPACITY / 2 - 8);

    unsigned char buf[CAPACITY] = {0};
    CHECK_RC(shm_spsc_push(ring, buf, max + 1), -EMSGSIZE);
    CHECK_RC(shm_spsc_push(ring, buf, UINT32_MAX), -EMSGSIZE);
    CHECK(shm_spsc_empty(ring));

    push_pattern(ring, max, 7);
    pop_pattern(ring, max, 7);
}

static void test_full(void)
{
    shm_spsc_t *ring = fresh_ring();

    /* 24-byte payloads make 32-byte records: exactly CAPACITY / 32 fit. */
    uint32_t count = 0;
    unsigned char buf[24];
    for (;;) {
        fill_pattern(buf, sizeof buf, count);
        int rc = shm_spsc_push(ring, buf, sizeof buf);
        if (rc == -EAGAIN)
            break;
        CHECK_RC(rc, 0);
        count++;
    }
    CHECK(count == CAPACITY / 32);

    /* One pop makes room for exactly one more record. */
    pop_pattern(ring, 24, 0);
    push_pattern(ring, 24, count);
    CHECK_RC(shm_spsc_push(ring, buf, 0), -EAGAIN);

    for (uint32_t tag = 1; tag <= count; tag++)
        pop_pattern(ring, 24, tag);
    CHECK(shm_spsc_empty(ring));
}

static void test_short_buffer(void)
{
    shm_spsc_t *ring = fresh_ring();
    push_pattern(ring, 40, 3);

    unsigned char small[39];
    uint32_t len = 0;
    CHECK_RC(shm_spsc_pop(ring, small, sizeof small, &len), -EMSGSIZE);
    CHECK(len == 40);
    CHECK(!shm_spsc_empty(ring));

    pop_pattern(ring, 40, 3);
}

/* A record that ends exactly at the end of the data area needs no padding. */
static void test_wrap_exact_fit(void)
{
    shm_spsc_t *ring = fresh_ring();
    advance_empty_ring(ring, CAPACITY - 64);

    push_pattern(ring, 56, 1);
    CHECK(shm_load_relaxed(&ring->tail) % CAPACITY == 0);
    push_pattern(ring, 5, 2);
    CHECK(shm_load_relaxed(&ring->tail) % CAPACITY == 16);

    pop_pattern(ring, 56, 1);
    pop_pattern(ring, 5, 2);
    CHECK(shm_spsc_empty(ring));
}

/* A record that leaves exactly one header's room: the next record pads. */
static void test_wrap_header_left(void)
{
    shm_spsc_t *ring = fresh_ring();
    advance_empty_ring(ring, CAPACITY - 64);

    push_pattern(ring, 48, 1);
    CHECK(shm_load_relaxed(&ring->tail) % CAPACITY == CAPACITY - 8);
    push_pattern(ring, 1, 2);
    CHECK(shm_load_relaxed(&ring->tail) % CAPACITY == 16);

    pop_pattern(ring, 48, 1);
    pop_pattern(ring, 1, 2);
    CHECK(shm_spsc_empty(ring));
}

/* A record one byte too long for the space left starts at offset 0. */
static void test_wrap_one_byte_over(void)
{
    shm_spsc_t *ring = fresh_ring();
    advance_empty_ring(ring, CAPACITY - 64);

    push_pattern(ring, 57, 1);
    CHECK(shm_load_relaxed(&ring->tail) % CAPACITY == 72);

    pop_pattern(ring, 57, 1);
    CHECK(shm_spsc_empty(ring));
}

/* The padding also counts against free space: a record that would fit
 * without it is rejected until the consumer catches up. */
static void test_wrap_padding_full(void)
{
    shm_spsc_t *ring = fresh_ring();
    advance_empty_ring(ring, 64);

    /* A 128-byte record at [64, 192) leaves 128 bytes free, 64 of them
     * before the end. An 80-byte record needs 64 + 80 with padding. */
    push_pattern(ring, 120, 1);
    CHECK_RC(shm_spsc_push(ring, zeros, 72), -EAGAIN);

    /* A 48-byte record at [192, 240) leaves 80 free, 16 before the end. */
    push_pattern(ring, 40, 2);
    CHECK_RC(shm_spsc_push(ring, zeros, 64), -EAGAIN);

    /* A 24-byte record needs 16 + 24 and fits at [0, 24). */
    push_pattern(ring, 9, 3);
    CHECK(shm_load_relaxed(&ring->tail) % CAPACITY == 24);

    pop_pattern(ring, 120, 1);
    pop_pattern(ring, 40, 2);
    pop_pattern(ring, 9, 3);
    CHECK(shm_spsc_empty(ring));
}

/* A message of the maximum size fits into the empty ring at any offset. */
static void test_max_message_any_offset(void)
{
    for (uint32_t offset = 0; offset < CAPACITY; offset += 8) {
        shm_spsc_t *ring = fresh_ring();
        advance_empty_ring(ring, offset);
        uint32_t max = shm_spsc_max_message(ring);
        push_pattern(ring, max, offset);
        pop_pattern(ring, max, offset);
        CHECK(shm_spsc_empty(ring));
    }
}

static void test_corrupted(void)
{
    unsigned char buf[CAPACITY];
    uint32_t len = 0;

    /* A record length beyond the maximum message. */
    shm_spsc_t *ring = fresh_ring();
    push_pattern(ring, 8, 1);
    uint32_t bad_length = CAPACITY;
    memcpy(ring->data, &bad_length, sizeof bad_length);
    CHECK_RC(shm_spsc_pop(ring, buf, sizeof buf, &len), -EBADMSG);

    /* A tail more than one capacity ahead of head. */
    ring = fresh_ring();
    shm_store_relaxed(&ring->tail, CAPACITY + 8);
    CHECK_RC(shm_spsc_pop(ring, buf, sizeof buf, &len), -EBADMSG);

    /* A record that claims more bytes than were produced. */
    ring = fresh_ring();
    push_pattern(ring, 8, 1);
    bad_length = 64;
    memcpy(ring->data, &bad_length, sizeof bad_length);
    CHECK_RC(shm_spsc_pop(ring, buf, sizeof buf, &len), -EBADMSG);

    /* Padding that is the last thing produced. */
    ring = fresh_ring();
    advance_empty_ring(ring, CAPACITY - 8);
    bad_length = UINT32_MAX;
    memcpy(ring->data + CAPACITY - 8, &bad_length, sizeof bad_length);
    shm_store_relaxed(&ring->tail, shm_load_relaxed(&ring->tail) + 8);
    CHECK_RC(shm_spsc_pop(ring, buf, sizeof buf, &len), -EBADMSG);
}

int main(void)
{
    test_guard(20);
    test_footprint();
    test_empty();
    test_oversize();
    test_full();
    test_short_buffer();
    test_wrap_exact_fit();
    test_wrap_header_left();
    test_wrap_one_byte_over();
    test_wrap_padding_full();
    test_max_message_any_offset();
    test_corrupted();
    printf("test_ring_spsc_unit: all cases passed\n");
    return 0;
}
