/*
 * test_store_crash.c - processes that die. A client is killed while it
 * holds views and an open put, and another inside the store lock in the
 * middle of a commit. A daemon is killed under its clients, and its
 * successor finds the segments it left.
 *
 * Uses fork, so it skips under ThreadSanitizer (exit 77); the threaded
 * tests cover the same code there.
 *
 * Exit 0: pass. Any other status: fail, with the failed check printed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "descriptor.h"
#include "index.h"
#include "process.h"
#include "shmstore.h"

#define CHECK(condition)                                                                 \
    do {                                                                                 \
        if (!(condition)) {                                                              \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #condition); \
            exit(1);                                                                     \
        }                                                                                \
    } while (0)

#define CHECK_OK(call)                                                                   \
    do {                                                                                 \
        int result_ = (call);                                                            \
        if (result_ != 0) {                                                              \
            fprintf(stderr, "%s:%d: %s returned %d (%s): %s\n", __FILE__, __LINE__, #call, \
                    result_, shmstore_strerror(result_), shmstore_error_detail());        \
            exit(1);                                                                     \
        }                                                                                \
    } while (0)

/* In a child: a failed check exits the child with status 3. */
#define CHILD_CHECK(condition)                                                           \
    do {                                                                                 \
        if (!(condition)) {                                                              \
            fprintf(stderr, "child %s:%d: check failed: %s\n", __FILE__, __LINE__,       \
                    #condition);                                                         \
            _exit(3);                                                                    \
        }                                                                                \
    } while (0)

#define MIB (1u << 20)

static int64_t now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static uint64_t used_bytes(const char *name)
{
    shmstore_stats_t stats;
    CHECK_OK(shmstore_stats(name, &stats, NULL, 0));
    return stats.used_bytes;
}

static void put_bytes(shmstore_client_t *client, const char *key, size_t bytes, int fill)
{
    void *data = NULL;
    uint64_t token = 0;
    int64_t dims[1] = {(int64_t)bytes};
    CHECK_OK(shmstore_put_begin(client, key, SHMSTORE_UINT8, 1, dims, SHMSTORE_ORDER_C, &data,
                                &token));
    memset(data, fill, bytes);
    CHECK_OK(shmstore_put_commit(client, token));
}

/* Polls the daemon until an event of kind arrives, at most timeout_ms. */
static shmstore_event_t wait_event(shmstore_daemon_t *daemon, shmstore_event_kind_t kind,
                                   int timeout_ms)
{
    shmstore_event_t events[16];
    int64_t deadline = now_ms() + timeout_ms;

    while (now_ms() < deadline) {
        int count = shmstore_daemon_poll(daemon, 20, events, 16);
        CHECK(count >= 0);
        for (int i = 0; i < count; i++) {
            if (events[i].kind == kind)
                return events[i];
        }
    }
    fprintf(stderr, "no event of kind %d within %d ms\n", (int)kind, timeout_ms);
    exit(1);
}

static void wait_child_killed(pid_t child)
{
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child);
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
        fprintf(stderr, "child %d ended with status %#x instead of SIGKILL\n", (int)child,
                status);
        exit(1);
    }
}

/* A client dies holding a view of an overwritten version and an open put:
 * the daemon unpins the view and frees both blocks. */
static void test_client_death(void)
{
    char name[64];
    snprintf(name, sizeof name, "test-crash-client-%d", (int)getpid());
    shmstore_daemon_config_t config = {.memory_bytes = 8 * MIB};
    shmstore_daemon_t *daemon = NULL;
    CHECK_OK(shmstore_daemon_create(name, &config, &daemon));
    shmstore_client_t *client = NULL;
    CHECK_OK(shmstore_connect(name, &client));
    put_bytes(client, "field", MIB, 1);
    uint64_t one_version = used_bytes(name);
    wait_event(daemon, SHMSTORE_EVENT_ATTACH, 1000);

    int ready[2];
    CHECK(pipe(ready) == 0);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        shmstore_client_t *mine = NULL;
        CHILD_CHECK(shmstore_connect(name, &mine) == 0);
        shmstore_view_t view;
        CHILD_CHECK(shmstore_get(mine, "field", &view) == 0);
        void *data = NULL;
        uint64_t token = 0;
        int64_t dims[1] = {2 * MIB};
        CHILD_CHECK(shmstore_put_begin(mine, "half", SHMSTORE_UINT8, 1, dims, SHMSTORE_ORDER_C,
                                       &data, &token) == 0);
        memset(data, 7, 2 * MIB);
        CHILD_CHECK(write(ready[1], "r", 1) == 1);
        pause();
        _exit(0);
    }

    char byte;
    CHECK(read(ready[0], &byte, 1) == 1);
    close(ready[0]);
    close(ready[1]);
    shmstore_event_t attach = wait_event(daemon, SHMSTORE_EVENT_ATTACH, 1000);
    CHECK(attach.pid == child);

    /* Overwrite while the child pins the old version, then kill it. */
    put_bytes(client, "field", MIB, 2);
    CHECK(used_bytes(name) > 3 * one_version);
    CHECK(kill(child, SIGKILL) == 0);
    wait_child_killed(child);

    shmstore_event_t died = wait_event(daemon, SHMSTORE_EVENT_DIED, 2000);
    CHECK(died.pid == child);
    CHECK(died.views == 1);
    CHECK(died.bytes >= 3 * MIB);
    CHECK(used_bytes(name) == one_version);
    CHECK(shmstore_exists(client, "half") == 0);

    shmstore_view_t view;
    CHECK_OK(shmstore_get(client, "field", &view));
    CHECK(((const unsigned char *)view.data)[MIB - 1] == 2);
    CHECK_OK(shmstore_release(&view));

    CHECK_OK(shmstore_disconnect(client));
    CHECK_OK(shmstore_daemon_destroy(daemon));
}

/* A client dies inside the store lock after its commit replaced a key in
 * the index but before it retired the old version, and another dies after
 * publishing a descriptor that never reached the index. The next locker
 * repairs both. */
static void test_lock_holder_death(void)
{
    char name[64];
    snprintf(name, sizeof name, "test-crash-lock-%d", (int)getpid());
    shmstore_daemon_config_t config = {.memory_bytes = 8 * MIB};
    shmstore_daemon_t *daemon = NULL;
    CHECK_OK(shmstore_daemon_create(name, &config, &daemon));
    shmstore_client_t *client = NULL;
    CHECK_OK(shmstore_connect(name, &client));
    put_bytes(client, "kept", 4096, 1);
    uint64_t one_version = used_bytes(name);

    for (int variant = 0; variant < 2; variant++) {
        pid_t child = fork();
        CHECK(child >= 0);
        if (child == 0) {
            shmstore_client_t *mine = NULL;
            CHILD_CHECK(shmstore_connect(name, &mine) == 0);
            void *data = NULL;
            uint64_t token = 0;
            int64_t dims[1] = {4096};
            const char *key = variant == 0 ? "kept" : "orphan";
            CHILD_CHECK(shmstore_put_begin(mine, key, SHMSTORE_UINT8, 1, dims,
                                           SHMSTORE_ORDER_C, &data, &token) == 0);
            memset(data, 9, 4096);

            CHILD_CHECK(shm_client_lock(mine) == 0);
            uint32_t number = 0;
            CHILD_CHECK(shm_descriptor_reserve(&mine->store, &number) == 0);
            shm_descriptor_publish(&mine->store, number, token);
            if (variant == 0) {
                uint32_t old = 0;
                CHILD_CHECK(shm_index_upsert(&mine->store, shm_hash_key(key, strlen(key)), key,
                                             strlen(key), number, &old) == 1);
            }
            raise(SIGKILL);
            _exit(0);
        }
        wait_child_killed(child);

        /* The next lock (inside this put) gets EOWNERDEAD and repairs. */
        put_bytes(client, "after", 4096, 3);
        CHECK(shmstore_exists(client, "orphan") == 0);

        shmstore_view_t view;
        CHECK_OK(shmstore_get(client, "kept", &view));
        /* The first child's commit reached the index, so its bytes stay. */
        CHECK(((const unsigned char *)view.data)[100] == 9);
        CHECK_OK(shmstore_release(&view));
        CHECK(used_bytes(name) == 2 * one_version);

        shmstore_event_t died = wait_event(daemon, SHMSTORE_EVENT_DIED, 2000);
        CHECK(died.pid == child);
        CHECK(used_bytes(name) == 2 * one_version);
        CHECK_OK(shmstore_delete(client, "after"));
    }

    shmstore_stats_t stats;
    CHECK_OK(shmstore_stats(name, &stats, NULL, 0));
    CHECK(stats.key_count == 1);
    CHECK_OK(shmstore_disconnect(client));
    CHECK_OK(shmstore_daemon_destroy(daemon));
}

/* A reader dies after it cleared its last pin of a retired version but
 * before it took the store lock to free that version. No pin is left to
 * trigger the free, so the daemon's reclaim of the dead reader must find
 * the retired, unpinned version and free it. */
static void test_unpinner_death(void)
{
    char name[64];
    snprintf(name, sizeof name, "test-crash-unpin-%d", (int)getpid());
    shmstore_daemon_config_t config = {.memory_bytes = 8 * MIB, .max_keys = 4};
    shmstore_daemon_t *daemon = NULL;
    CHECK_OK(shmstore_daemon_create(name, &config, &daemon));
    shmstore_client_t *client = NULL;
    CHECK_OK(shmstore_connect(name, &client));
    uint64_t empty = used_bytes(name);
    put_bytes(client, "field", 4096, 1);
    wait_event(daemon, SHMSTORE_EVENT_ATTACH, 1000);

    int pinned[2];
    int retired[2];
    CHECK(pipe(pinned) == 0);
    CHECK(pipe(retired) == 0);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        shmstore_client_t *mine = NULL;
        CHILD_CHECK(shmstore_connect(name, &mine) == 0);
        shmstore_view_t view;
        CHILD_CHECK(shmstore_get(mine, "field", &view) == 0);
        char byte;
        CHILD_CHECK(write(pinned[1], "p", 1) == 1);
        CHILD_CHECK(read(retired[0], &byte, 1) == 1);

        /* The first half of shmstore_release: the bit goes and the reader
         * learns that the version is now its to free. Then it dies. */
        CHILD_CHECK(shm_descriptor_unpin(&mine->store, view.descriptor_, mine->slot) == 1);
        raise(SIGKILL);
        _exit(0);
    }

    char byte;
    CHECK(read(pinned[0], &byte, 1) == 1);
    CHECK_OK(shmstore_delete(client, "field"));
    CHECK(used_bytes(name) > empty);
    CHECK(write(retired[1], "r", 1) == 1);
    wait_child_killed(child);
    for (int i = 0; i < 2; i++) {
        close(pinned[i]);
        close(retired[i]);
    }

    shmstore_event_t died = wait_event(daemon, SHMSTORE_EVENT_DIED, 2000);
    CHECK(died.pid == child);
    CHECK(used_bytes(name) == empty);

    /* Every descriptor is free again: as many held versions as there are
     * descriptors (twice max_keys) fit. */
    shmstore_view_t views[8];
    for (int i = 0; i < 8; i++) {
        put_bytes(client, "field", 64, i);
        CHECK_OK(shmstore_get(client, "field", &views[i]));
    }
    for (int i = 0; i < 8; i++)
        CHECK_OK(shmstore_release(&views[i]));
    CHECK_OK(shmstore_delete(client, "field"));
    CHECK(used_bytes(name) == empty);

    CHECK_OK(shmstore_disconnect(client));
    CHECK_OK(shmstore_daemon_destroy(daemon));
}

/* A daemon killed under a client: calls fail with SHMSTORE_ELOST soon
 * after, and a new daemon replaces the stale segments. */
static void test_daemon_death(void)
{
    char name[64];
    snprintf(name, sizeof name, "test-crash-daemon-%d", (int)getpid());

    int ready[2];
    CHECK(pipe(ready) == 0);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        shmstore_daemon_config_t config = {.memory_bytes = MIB};
        shmstore_daemon_t *daemon = NULL;
        CHILD_CHECK(shmstore_daemon_create(name, &config, &daemon) == 0);
        CHILD_CHECK(write(ready[1], "r", 1) == 1);
        shmstore_event_t events[8];
        for (;;)
            shmstore_daemon_poll(daemon, 50, events, 8);
    }
    char byte;
    CHECK(read(ready[0], &byte, 1) == 1);
    close(ready[0]);
    close(ready[1]);

    shmstore_client_t *client = NULL;
    CHECK_OK(shmstore_connect(name, &client));
    int8_t value = 5;
    CHECK_OK(shmstore_put(client, "x", &value, SHMSTORE_INT8, 0, NULL, SHMSTORE_ORDER_C));
    CHECK_OK(shmstore_check_daemon(client));

    CHECK(kill(child, SIGKILL) == 0);
    wait_child_killed(child);

    /* The heartbeat goes stale within 250 ms; then a flock test decides. */
    int64_t start = now_ms();
    int result = 0;
    while ((result = shmstore_exists(client, "x")) == 1)
        CHECK(now_ms() - start < 2000);
    CHECK(result == SHMSTORE_ELOST);
    char pid_text[32];
    snprintf(pid_text, sizeof pid_text, "pid %d", (int)child);
    CHECK(strstr(shmstore_error_detail(), pid_text) != NULL);
    CHECK(shmstore_poll(client, "y", 10, 100) == SHMSTORE_ELOST);
    CHECK_OK(shmstore_disconnect(client));

    /* New clients get SHMSTORE_ENOSTORE: nobody serves the name. */
    CHECK(shmstore_connect(name, &client) == SHMSTORE_ENOSTORE);
    CHECK(strstr(shmstore_error_detail(), "not running") != NULL);

    /* A new daemon removes the dead one's segments and reports it. */
    shmstore_daemon_config_t config = {.memory_bytes = MIB};
    shmstore_daemon_t *daemon = NULL;
    CHECK_OK(shmstore_daemon_create(name, &config, &daemon));
    shmstore_event_t stale = wait_event(daemon, SHMSTORE_EVENT_STALE, 100);
    CHECK(stale.pid == child);
    CHECK_OK(shmstore_connect(name, &client));
    CHECK(shmstore_exists(client, "x") == 0);
    CHECK_OK(shmstore_disconnect(client));
    CHECK_OK(shmstore_daemon_destroy(daemon));
}

/* Thread body: returns after one byte arrives on the pipe *context. */
static void *wait_for_byte(void *context)
{
    char byte;
    if (read(*(int *)context, &byte, 1) != 1)
        _exit(3);
    return NULL;
}

/* Returns the state letter of pid from /proc/PID/stat, or 0. */
static char process_state(pid_t pid)
{
    char path[64];
    char text[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *file = fopen(path, "r");
    if (file == NULL)
        return 0;
    size_t length = fread(text, 1, sizeof text - 1, file);
    fclose(file);
    text[length] = '\0';
    char *end = strrchr(text, ')');
    return end != NULL && end[1] == ' ' ? end[2] : 0;
}

static void test_process_liveness(void)
{
    uint64_t ticks = 0;
    CHECK_OK(shm_process_start_ticks(getpid(), &ticks));
    CHECK(shm_process_alive(getpid(), ticks) == 1);
    CHECK(shm_process_alive(getpid(), ticks + 1) == 0);

    /* Growing memory changes other /proc fields, not the start time. */
    void *big = malloc(64 * MIB);
    CHECK(big != NULL);
    memset(big, 1, 64 * MIB);
    CHECK(shm_process_alive(getpid(), ticks) == 1);
    free(big);

    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0)
        _exit(0);
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child);
    CHECK(shm_process_alive(child, 0) == 0);
    CHECK(shm_process_start_ticks(child, &ticks) == -ESRCH);

    /* A zombie (exited, not yet reaped by its parent) keeps its pid and
     * start time but runs no code any more, so it counts as dead. */
    int go[2];
    CHECK(pipe(go) == 0);
    child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        char byte;
        CHILD_CHECK(read(go[0], &byte, 1) == 1);
        _exit(0);
    }
    uint64_t child_ticks = 0;
    CHECK_OK(shm_process_start_ticks(child, &child_ticks));
    CHECK(shm_process_alive(child, child_ticks) == 1);
    CHECK(shm_process_running(child) == 1);
    CHECK(write(go[1], "g", 1) == 1);
    siginfo_t info;
    CHECK(waitid(P_PID, (id_t)child, &info, WEXITED | WNOWAIT) == 0);
    CHECK(shm_process_alive(child, child_ticks) == 0);
    CHECK(shm_process_running(child) == 0);
    CHECK(waitpid(child, &status, 0) == child);
    close(go[0]);
    close(go[1]);

    /* A main thread that exits while another thread runs also shows 'Z',
     * and the process must still count as alive. */
    int release[2];
    int started[2];
    CHECK(pipe(release) == 0);
    CHECK(pipe(started) == 0);
    child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        pthread_t thread;
        CHILD_CHECK(pthread_create(&thread, NULL, wait_for_byte, &release[0]) == 0);
        CHILD_CHECK(write(started[1], "s", 1) == 1);
        pthread_exit(NULL);
    }
    char byte;
    CHECK(read(started[0], &byte, 1) == 1);
    CHECK_OK(shm_process_start_ticks(child, &child_ticks));
    char state = 0;
    for (int tries = 0; tries < 1000 && state != 'Z'; tries++) {
        state = process_state(child);
        usleep(1000);
    }
    CHECK(state == 'Z');
    CHECK(shm_process_alive(child, child_ticks) == 1);
    CHECK(shm_process_running(child) == 1);
    CHECK(write(release[1], "r", 1) == 1);
    CHECK(waitid(P_PID, (id_t)child, &info, WEXITED | WNOWAIT) == 0);
    CHECK(shm_process_alive(child, child_ticks) == 0);
    CHECK(waitpid(child, &status, 0) == child);
    for (int i = 0; i < 2; i++) {
        close(release[i]);
        close(started[i]);
    }
}

int main(void)
{
#if defined(__SANITIZE_THREAD__)
    printf("test_store_crash: skipped: uses fork, which ThreadSanitizer does not support\n");
    return 77;
#endif
    test_process_liveness();
    test_client_death();
    test_lock_holder_death();
    test_unpinner_death();
    test_daemon_death();
    printf("test_store_crash: pass\n");
    return 0;
}
