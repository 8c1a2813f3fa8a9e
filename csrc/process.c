/*
 * process.c - process start times and liveness from /proc.
 */
#define _GNU_SOURCE
#include "process.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Reads the state letter (field 3), the thread count (field 20) and the
 * start time (field 22) of pid from /proc/PID/stat. */
static int read_stat(pid_t pid, char *state, long *threads, uint64_t *ticks)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? -ESRCH : -errno;

    char text[1024];
    ssize_t length = read(fd, text, sizeof text - 1);
    int error = errno;
    close(fd);
    if (length <= 0)
        return length < 0 ? -error : -EIO;
    text[length] = '\0';

    /* The command name (field 2) is in parentheses and may contain spaces
     * and ')', so count fields from the last ')'. The space after it
     * starts field 3; each step below moves to the space before the next
     * field, ending at the space before field 22, the start time. */
    char *cursor = strrchr(text, ')');
    if (cursor == NULL || cursor[1] != ' ' || cursor[2] == '\0')
        return -EIO;
    *state = cursor[2];
    cursor++;
    for (int field = 3; field < 22; field++) {
        cursor = strchr(cursor + 1, ' ');
        if (cursor == NULL)
            return -EIO;
        if (field + 1 == 20)
            *threads = strtol(cursor + 1, NULL, 10);
    }

    *ticks = strtoull(cursor + 1, NULL, 10);
    return 0;
}

int shm_process_start_ticks(pid_t pid, uint64_t *ticks)
{
    char state = 0;
    long threads = 0;
    return read_stat(pid, &state, &threads, ticks);
}

/* Returns 1 if pid runs (and, when match_ticks is set, started at
 * start_ticks), else 0. */
static int process_runs(pid_t pid, int match_ticks, uint64_t start_ticks)
{
    if (pid <= 0)
        return 0;
    if (kill(pid, 0) != 0 && errno == ESRCH)
        return 0;

    uint64_t ticks = 0;
    char state = 0;
    long threads = 0;
    int result = read_stat(pid, &state, &threads, &ticks);
    if (result == -ESRCH)
        return 0;
    if (result != 0)
        return 1;       /* cannot tell: never reclaim a client that may live */

    /* A zombie ('Z') or dying ('X') process keeps its pid until its parent
     * reaps it, but it has unmapped its memory and runs no code again. A
     * main thread that exited while other threads run also shows 'Z', but
     * with more than one thread, and those threads may still use the store. */
    if ((state == 'Z' || state == 'X') && threads <= 1)
        return 0;
    return !match_ticks || ticks == start_ticks;
}

int shm_process_alive(pid_t pid, uint64_t start_ticks)
{
    return process_runs(pid, 1, start_ticks);
}

int shm_process_running(pid_t pid)
{
    return process_runs(pid, 0, 0);
}
