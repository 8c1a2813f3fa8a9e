/*
 * process.h - facts about processes that liveness checks need.
 */
#ifndef SHMSTORE_PROCESS_H
#define SHMSTORE_PROCESS_H

#include <stdint.h>
#include <sys/types.h>

/* Reads the start time of process pid (field 22 of /proc/PID/stat, clock
 * ticks since boot) into *ticks. Returns 0, -ESRCH when the process does
 * not exist, or another negated errno. */
int shm_process_start_ticks(pid_t pid, uint64_t *ticks);

/* Returns 1 if process pid exists and started at start_ticks, else 0. A pid
 * that was reused by a newer process counts as dead, and so does a zombie
 * (exited, not yet reaped) whose threads have all exited. */
int shm_process_alive(pid_t pid, uint64_t start_ticks);

/* Returns 1 if process pid exists and has not exited, whatever its start
 * time, else 0. Like shm_process_alive, a zombie counts as exited. */
int shm_process_running(pid_t pid);

#endif /* SHMSTORE_PROCESS_H */
