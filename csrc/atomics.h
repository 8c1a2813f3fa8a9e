/*
 * atomics.h - every memory-ordering primitive of the C core, in one place.
 *
 * Shared-memory fields that other processes read or write are declared with
 * the shm_atomic_* types below; plain fields of a shared struct are written
 * only before the struct is published, or under the store lock. Callers
 * state at each use what the order pairs with, in one line.
 */
#ifndef SHMSTORE_ATOMICS_H
#define SHMSTORE_ATOMICS_H

#include <stdatomic.h>
#include <stdint.h>

typedef _Atomic uint32_t shm_atomic_u32;
typedef _Atomic uint64_t shm_atomic_u64;
typedef _Atomic int32_t shm_atomic_i32;
typedef _Atomic int64_t shm_atomic_i64;

/* Lock-free 32- and 64-bit atomics are a precondition: shared memory is
 * useless with lock-based emulation, whose lock lives in one process. */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free");
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");

#define shm_load_relaxed(p) atomic_load_explicit((p), memory_order_relaxed)
#define shm_load_acquire(p) atomic_load_explicit((p), memory_order_acquire)
#define shm_load_seq(p) atomic_load_explicit((p), memory_order_seq_cst)

#define shm_store_relaxed(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)
#define shm_store_release(p, v) atomic_store_explicit((p), (v), memory_order_release)
#define shm_store_seq(p, v) atomic_store_explicit((p), (v), memory_order_seq_cst)

#define shm_fetch_add_relaxed(p, v) atomic_fetch_add_explicit((p), (v), memory_order_relaxed)
#define shm_fetch_add_acq_rel(p, v) atomic_fetch_add_explicit((p), (v), memory_order_acq_rel)
#define shm_fetch_sub_relaxed(p, v) atomic_fetch_sub_explicit((p), (v), memory_order_relaxed)
#define shm_fetch_sub_acq_rel(p, v) atomic_fetch_sub_explicit((p), (v), memory_order_acq_rel)
#define shm_fetch_or_seq(p, v) atomic_fetch_or_explicit((p), (v), memory_order_seq_cst)
#define shm_fetch_and_seq(p, v) atomic_fetch_and_explicit((p), (v), memory_order_seq_cst)

/* Compare-and-swap; *expected receives the current value on failure. */
#define shm_cas_acq_rel(p, expected, desired)                                         \
    atomic_compare_exchange_strong_explicit((p), (expected), (desired),              \
                                            memory_order_acq_rel, memory_order_acquire)
#define shm_cas_seq(p, expected, desired)                                             \
    atomic_compare_exchange_strong_explicit((p), (expected), (desired),              \
                                            memory_order_seq_cst, memory_order_seq_cst)
#define shm_cas_weak_acq_rel(p, expected, desired)                                    \
    atomic_compare_exchange_weak_explicit((p), (expected), (desired),                \
                                          memory_order_acq_rel, memory_order_acquire)

#define shm_fence_seq() atomic_thread_fence(memory_order_seq_cst)
#define shm_fence_acquire() atomic_thread_fence(memory_order_acquire)
#define shm_fence_release() atomic_thread_fence(memory_order_release)

/* Tells the CPU that this is a spin-wait loop (saves power, helps the
 * sibling hyper-thread). Not a memory barrier. */
static inline void shm_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

#define SHM_CACHE_LINE 64

#endif /* SHMSTORE_ATOMICS_H */
