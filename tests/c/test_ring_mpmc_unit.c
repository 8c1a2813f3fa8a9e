/*
 * test_ring_mpmc_unit.c - single-threaded cases of the MPMC queue: empty,
 * full, many laps, oversize messages, short buffers, corrupted cells, and
 * recovery of cells whose producer or consumer died mid-operation.
 */
#include "test_ring_support.h"

#include <stdalign.h>

#include "ring_mpmc.h"

#define CELLS 8u
#define CELL_BYTES 100u

static alignas(SHM_CACHE_LINE) unsigned char queue_memory[64 * 1024];

static shm_mpmc_t *fresh_queue(void)
{
    CHECK(shm_mpmc_footprint(CELLS, CELL_BYTES) <= sizeof queue_memory);
    CHECK_RC(shm_mpmc_init(queue_memory, CELLS, CELL_BYTES), 0);
    return (shm_mpmc_t *)queue_memory;
}

static void fill_pattern(unsigned char *buf, uint32_t len, uint32_t tag)
{
    for (uint32_t i = 0; i < len; i++)
        buf[i] = (unsigned char)(tag * 31u + i);
}

static void push_pattern(shm_mpmc_t *queue, uint32_t len, uint32_t tag)
{
    unsigned char buf[CELL_BYTES];
    fill_pattern(buf, len, tag);
    CHECK_RC(shm_mpmc_push(queue, buf, len), 0);
}

static void pop_pattern(shm_mpmc_t *queue, uint32_t len, uint32_t tag)
{
    unsigned char expected[CELL_BYTES];
    unsigned char got[CELL_BYTES];
    uint32_t got_len = UINT32_MAX;
    fill_pattern(expected, len, tag);
    CHECK_RC(shm_mpmc_pop(queue, got, sizeof got, &got_len), 0);
    CHECK(got_len == len);
    CHECK(memcmp(got, expected, len) == 0);
}

static void test_footprint(void)
{
    CHECK(shm_mpmc_footprint(0, 8) == 0);
    CHECK(shm_mpmc_footprint(1, 8) == 0);
    CHECK(shm_mpmc_footprint(6, 8) == 0);
    CHECK(shm_mpmc_footprint(8, 0) == 0);
    CHECK(shm_mpmc_footprint(8, UINT32_MAX) == 0);

    /* A cell of 100 payload bytes plus its 16-byte header takes two lines. */
    CHECK(shm_mpmc_footprint(CELLS, CELL_BYTES) == sizeof(shm_mpmc_t) + CELLS * 128);
    CHECK(sizeof(shm_mpmc_t) % SHM_CACHE_LINE == 0);

    CHECK_RC(shm_mpmc_init(queue_memory + 8, CELLS, CELL_BYTES), -EINVAL);
    CHECK_RC(shm_mpmc_init(queue_memory, 3, CELL_BYTES), -EINVAL);
    CHECK_RC(shm_mpmc_init(NULL, CELLS, CELL_BYTES), -EINVAL);
}

static void test_empty(void)
{
    shm_mpmc_t *queue = fresh_queue();
    unsigned char buf[CELL_BYTES];
    uint32_t len = 12345;

    CHECK(shm_mpmc_size_approx(queue) == 0);
    CHECK_RC(shm_mpmc_pop(queue, buf, sizeof buf, &len), -EAGAIN);
    CHECK(len == 12345);

    push_pattern(queue, 0, 0);
    CHECK(shm_mpmc_size_approx(queue) == 1);
    pop_pattern(queue, 0, 0);
    CHECK(shm_mpmc_size_approx(queue) == 0);
}

static void test_full(void)
{
    shm_mpmc_t *queue = fresh_queue();
    for (uint32_t tag = 0; tag < CELLS; tag++)
        push_pattern(queue, tag + 1, tag);
    CHECK(shm_mpmc_size_approx(queue) == CELLS);

    unsigned char buf[CELL_BYTES] = {0};
    CHECK_RC(shm_mpmc_push(queue, buf, 1), -EAGAIN);

    /* One pop frees exactly one cell. */
    pop_pattern(queue, 1, 0);
    push_pattern(queue, 50, CELLS);
    CHECK_RC(shm_mpmc_push(queue, buf, 1), -EAGAIN);

    for (uint32_t tag = 1; tag < CELLS; tag++)
        pop_pattern(queue, tag + 1, tag);
    pop_pattern(queue, 50, CELLS);
    CHECK(shm_mpmc_size_approx(queue) == 0);
}

static void test_oversize(void)
{
    shm_mpmc_t *queue = fresh_queue();
    unsigned char buf[CELL_BYTES + 1] = {0};

    CHECK_RC(shm_mpmc_push(queue, buf, CELL_BYTES + 1), -EMSGSIZE);
    CHECK(shm_mpmc_size_approx(queue) == 0);

    push_pattern(queue, CELL_BYTES, 9);
    pop_pattern(queue, CELL_BYTES, 9);
}

static void test_short_buffer(void)
{
    shm_mpmc_t *queue = fresh_queue();
    push_pattern(queue, 40, 3);

    unsigned char small[39];
    uint32_t len = 0;
    CHECK_RC(shm_mpmc_pop(queue, small, sizeof small, &len), -EMSGSIZE);
    CHECK(len == 40);
    CHECK(shm_mpmc_size_approx(queue) == 1);

    pop_pattern(queue, 40, 3);
}

/* Tickets run over many laps of the cells, at every fill level. */
static void test_laps(void)
{
    shm_mpmc_t *queue = fresh_queue();
    uint32_t pushed = 0;
    uint32_t popped = 0;
    for (uint32_t round = 0; round < 50; round++) {
        uint32_t fill = round % (CELLS + 1);
        while (pushed - popped < fill) {
            push_pattern(queue, pushed % (CELL_BYTES + 1), pushed);
            pushed++;
        }
        CHECK(shm_mpmc_size_approx(queue) == fill);
        while (popped < pushed) {
            pop_pattern(queue, popped % (CELL_BYTES + 1), popped);
            popped++;
        }
    }
    CHECK(pushed > 10 * CELLS);
}

/* A cell whose length exceeds cell_bytes is dropped with -EBADMSG, and the
 * queue goes on. */
static void test_corrupted(void)
{
    shm_mpmc_t *queue = fresh_queue();
    push_pattern(queue, 4, 1);
    push_pattern(queue, 5, 2);

    shm_mpmc_cell_t *first = (shm_mpmc_cell_t *)queue->cell_area;
    shm_store_relaxed(&first->length, CELL_BYTES + 1);

    unsigned char buf[CELL_BYTES];
    uint32_t len = 0;
    CHECK_RC(shm_mpmc_pop(queue, buf, sizeof buf, &len), -EBADMSG);
    pop_pattern(queue, 5, 2);
    CHECK(shm_mpmc_size_approx(queue) == 0);
}

/* Cell state as the header documents it: turn << 32 | owner. */
static uint64_t cell_state(uint32_t turn, uint32_t owner)
{
    return ((uint64_t)turn << 32) | owner;
}

static shm_mpmc_cell_t *cell_of(shm_mpmc_t *queue, uint32_t index)
{
    return (shm_mpmc_cell_t *)(queue->cell_area + (size_t)index * queue->cell_stride);
}

static void test_owner_zero(void)
{
    shm_mpmc_t *queue = fresh_queue();
    unsigned char buf[CELL_BYTES] = {0};
    uint32_t len = 0;
    CHECK_RC(shm_mpmc_push_as(queue, 0, buf, 1), -EINVAL);
    push_pattern(queue, 1, 1);
    CHECK_RC(shm_mpmc_pop_as(queue, 0, buf, sizeof buf, &len), -EINVAL);
    CHECK(shm_mpmc_recover(queue, 0, NULL, NULL) == 0);
    pop_pattern(queue, 1, 1);
}

/* A producer that died after claiming ticket 1, before moving the ticket
 * counter on or publishing: other producers move past it, consumers stop
 * at it until shm_mpmc_recover() drops it. */
static void test_recover_producer(void)
{
    const uint32_t dead = 4242;
    shm_mpmc_t *queue = fresh_queue();
    push_pattern(queue, 10, 0);
    shm_store_relaxed(&cell_of(queue, 1)->state, cell_state(0, dead));

    push_pattern(queue, 20, 2);
    CHECK(shm_load_relaxed(&queue->enqueue_ticket) == 3);

    pop_pattern(queue, 10, 0);
    unsigned char buf[CELL_BYTES];
    uint32_t len = 0;
    CHECK_RC(shm_mpmc_pop(queue, buf, sizeof buf, &len), -EAGAIN);

    CHECK(shm_mpmc_recover(queue, dead + 1, NULL, NULL) == 0);
    uint32_t dropped = 99;
    uint32_t lost = 99;
    CHECK(shm_mpmc_recover(queue, dead, &dropped, &lost) == 1);
    CHECK(dropped == 1);
    CHECK(lost == 0);

    pop_pattern(queue, 20, 2);
    CHECK_RC(shm_mpmc_pop(queue, buf, sizeof buf, &len), -EAGAIN);
    CHECK(shm_mpmc_size_approx(queue) == 0);

    /* The queue keeps working over the next laps. */
    for (uint32_t tag = 0; tag < 3 * CELLS; tag++) {
        push_pattern(queue, tag % CELL_BYTES, tag);
        pop_pattern(queue, tag % CELL_BYTES, tag);
    }
}

/* A consumer that died while copying ticket 0 out: other consumers move
 * past it, and producers stop at its cell one lap later until
 * shm_mpmc_recover() hands the cell on. */
static void test_recover_consumer(void)
{
    const uint32_t dead = 4343;
    shm_mpmc_t *queue = fresh_queue();
    for (uint32_t tag = 0; tag < CELLS; tag++)
        push_pattern(queue, tag + 1, tag);
    shm_store_relaxed(&cell_of(queue, 0)->state, cell_state(1, dead));

    for (uint32_t tag = 1; tag < CELLS; tag++)
        pop_pattern(queue, tag + 1, tag);

    unsigned char buf[CELL_BYTES] = {0};
    CHECK_RC(shm_mpmc_push(queue, buf, 1), -EAGAIN);

    uint32_t dropped = 99;
    uint32_t lost = 99;
    CHECK(shm_mpmc_recover(queue, dead, &dropped, &lost) == 1);
    CHECK(dropped == 0);
    CHECK(lost == 1);

    for (uint32_t tag = 0; tag < 3 * CELLS; tag++) {
        push_pattern(queue, tag % CELL_BYTES, tag);
        pop_pattern(queue, tag % CELL_BYTES, tag);
    }
}

int main(void)
{
    test_guard(20);
    test_footprint();
    test_empty();
    test_full();
    test_oversize();
    test_short_buffer();
    test_laps();
    test_corrupted();
    test_owner_zero();
    test_recover_producer();
    test_recover_consumer();
    printf("test_ring_mpmc_unit: all cases passed\n");
    return 0;
}
