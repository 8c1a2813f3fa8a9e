/*
 * test_ring_doorbell.c - the futex doorbell and the spin-then-sleep wait:
 * timeouts, wake-ups from another thread and another process, a signal
 * interrupting the sleep, and the SHMSTORE_SPIN_US policy.
 */
#include "test_ring_support.h"

#include <pthread.h>
#include <stdalign.h>
#include <time.h>

#include "doorbell.h"
#include "spin_wait.h"

#define MS 1000000ll

static void sleep_ns(int64_t ns)
{
    struct timespec delay = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    while (nanosleep(&delay, &delay) != 0 && errno == EINTR)
        continue;
}

/* A flag and its doorbell, shared between a waiter and a ringer. */
typedef struct flag_bell {
    shm_doorbell_t doorbell;
    shm_atomic_u32 flag;
    int64_t delay_ns;                 /* ringer: sleep before setting flag */
} flag_bell_t;

static int flag_is_set(void *context)
{
    flag_bell_t *shared = context;
    /* Acquire: pairs with the release store in set_flag_and_ring(). */
    return shm_load_acquire(&shared->flag) != 0;
}

static void set_flag_and_ring(flag_bell_t *shared)
{
    /* Release: pairs with the acquire load in flag_is_set(). */
    shm_store_release(&shared->flag, 1);
    shm_doorbell_ring(&shared->doorbell);
}

static void *ringer_thread(void *arg)
{
    flag_bell_t *shared = arg;
    sleep_ns(shared->delay_ns);
    set_flag_and_ring(shared);
    return NULL;
}

static void test_stale_snapshot(void)
{
    alignas(SHM_CACHE_LINE) shm_doorbell_t doorbell;
    shm_doorbell_init(&doorbell);

    uint32_t snapshot = shm_doorbell_snapshot(&doorbell);
    shm_doorbell_ring(&doorbell);
    CHECK(shm_doorbell_snapshot(&doorbell) == snapshot + 1);

    /* The ring came after the snapshot, so the wait returns at once. */
    int64_t start = shm_monotonic_ns();
    CHECK_RC(shm_doorbell_wait(&doorbell, snapshot, 5000 * MS), 0);
    CHECK(shm_monotonic_ns() - start < 1000 * MS);
    CHECK(shm_load_relaxed(&doorbell.sleepers) == 0);
}

static void test_timeout(void)
{
    alignas(SHM_CACHE_LINE) shm_doorbell_t doorbell;
    shm_doorbell_init(&doorbell);

    int64_t start = shm_monotonic_ns();
    CHECK_RC(shm_doorbell_wait(&doorbell, shm_doorbell_snapshot(&doorbell), 20 * MS),
             -ETIMEDOUT);
    CHECK(shm_monotonic_ns() - start >= 20 * MS);
    CHECK(shm_load_relaxed(&doorbell.sleepers) == 0);

    /* shm_wait_until: a condition that never comes true times out. */
    flag_bell_t shared;
    shm_doorbell_init(&shared.doorbell);
    shm_store_relaxed(&shared.flag, 0);
    shm_wait_policy_t policy = {.spin_ns = 1 * MS};
    start = shm_monotonic_ns();
    CHECK_RC(shm_wait_until(&shared.doorbell, flag_is_set, &shared, &policy, 30 * MS),
             -ETIMEDOUT);
    CHECK(shm_monotonic_ns() - start >= 30 * MS);

    /* A zero timeout checks once. */
    CHECK_RC(shm_wait_until(&shared.doorbell, flag_is_set, &shared, &policy, 0), -ETIMEDOUT);
    shm_store_relaxed(&shared.flag, 1);
    CHECK_RC(shm_wait_until(&shared.doorbell, flag_is_set, &shared, &policy, 0), 0);
}

/* A thread sets the flag after the waiter has gone to sleep. */
static void test_wake_thread(void)
{
    flag_bell_t shared;
    shm_doorbell_init(&shared.doorbell);
    shm_store_relaxed(&shared.flag, 0);
    shared.delay_ns = 30 * MS;

    pthread_t ringer;
    CHECK_RC(pthread_create(&ringer, NULL, ringer_thread, &shared), 0);

    shm_wait_policy_t sleep_at_once = {.spin_ns = 0};
    int64_t start = shm_monotonic_ns();
    CHECK_RC(shm_wait_until(&shared.doorbell, flag_is_set, &shared, &sleep_at_once, 5000 * MS),
             0);
    int64_t waited = shm_monotonic_ns() - start;
    CHECK_RC(pthread_join(ringer, NULL), 0);

    CHECK(flag_is_set(&shared));
    CHECK(waited < 4000 * MS);
    CHECK(shm_load_relaxed(&shared.doorbell.sleepers) == 0);
}

static int wait_in_child(void *arg)
{
    flag_bell_t *shared = arg;
    test_guard(10);
    shm_wait_policy_t sleep_at_once = {.spin_ns = 0};
    int rc = shm_wait_until(&shared->doorbell, flag_is_set, shared, &sleep_at_once, 5000 * MS);
    if (rc != 0) {
        fprintf(stderr, "child wait returned %d (%s)\n", rc, strerror(-rc));
        return 1;
    }
    return 0;
}

/* The waiter is another process that maps the doorbell at its own
 * address: FUTEX_WAKE must reach it through the shared page. */
static void test_wake_process(void)
{
    flag_bell_t *shared = test_map_shared(sizeof *shared);
    shm_doorbell_init(&shared->doorbell);

    pid_t child = test_fork(wait_in_child, shared);

    /* Ring only once the child sleeps (or after 2 s, if it never
     * announces itself, which the child's result then shows). */
    int64_t start = shm_monotonic_ns();
    while (shm_load_relaxed(&shared->doorbell.sleepers) == 0 &&
           shm_monotonic_ns() - start < 2000 * MS)
        sleep_ns(1 * MS);
    set_flag_and_ring(shared);

    CHECK(test_child_passed(child, "waiting child"));
    munmap(shared, sizeof *shared);
}

static volatile sig_atomic_t signals_received;

static void count_signal(int signal_number)
{
    (void)signal_number;
    signals_received++;
}

typedef struct interrupter {
    pthread_t target;
    shm_atomic_u32 stop;
} interrupter_t;

/* Sends SIGUSR1 to the target every 10 ms until stop is set, because a
 * signal that arrives before the target sleeps does not interrupt it. */
static void *interrupter_thread(void *arg)
{
    interrupter_t *interrupter = arg;
    /* Acquire: pairs with the release store in test_interrupted(). */
    while (!shm_load_acquire(&interrupter->stop)) {
        sleep_ns(10 * MS);
        pthread_kill(interrupter->target, SIGUSR1);
    }
    return NULL;
}

static void test_interrupted(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = count_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;              /* no SA_RESTART: the wait must return -EINTR */
    CHECK_RC(sigaction(SIGUSR1, &action, NULL), 0);

    flag_bell_t shared;
    shm_doorbell_init(&shared.doorbell);
    shm_store_relaxed(&shared.flag, 0);

    interrupter_t interrupter = {.target = pthread_self()};
    shm_store_relaxed(&interrupter.stop, 0);
    pthread_t thread;
    CHECK_RC(pthread_create(&thread, NULL, interrupter_thread, &interrupter), 0);

    shm_wait_policy_t sleep_at_once = {.spin_ns = 0};
    int rc = shm_wait_until(&shared.doorbell, flag_is_set, &shared, &sleep_at_once, 5000 * MS);

    /* Release: pairs with the acquire load in interrupter_thread(). */
    shm_store_release(&interrupter.stop, 1);
    CHECK_RC(pthread_join(thread, NULL), 0);
    signal(SIGUSR1, SIG_IGN);

    CHECK_RC(rc, -EINTR);
    CHECK(signals_received > 0);
    CHECK(shm_load_relaxed(&shared.doorbell.sleepers) == 0);
}

static void test_policy_env(void)
{
    shm_wait_policy_t policy;

    unsetenv("SHMSTORE_SPIN_US");
    shm_wait_policy_default(&policy);
    CHECK(policy.spin_ns == SHM_SPIN_US_DEFAULT * 1000ll);

    setenv("SHMSTORE_SPIN_US", "7", 1);
    shm_wait_policy_default(&policy);
    CHECK(policy.spin_ns == 7000);

    setenv("SHMSTORE_SPIN_US", "0", 1);
    shm_wait_policy_default(&policy);
    CHECK(policy.spin_ns == 0);

    const char *invalid[] = {"abc", "-5", "12x", "", "99999999999"};
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        setenv("SHMSTORE_SPIN_US", invalid[i], 1);
        shm_wait_policy_default(&policy);
        CHECK(policy.spin_ns == SHM_SPIN_US_DEFAULT * 1000ll);
    }
    unsetenv("SHMSTORE_SPIN_US");
}

int main(void)
{
    test_guard(30);
    test_stale_snapshot();
    test_timeout();
    test_wake_thread();
    test_wake_process();
    test_interrupted();
    test_policy_env();
    printf("test_ring_doorbell: all cases passed\n");
    return 0;
}
