/*
 * errors.h - the calling thread's error detail, shared by every module.
 */
#ifndef SHMSTORE_ERRORS_H
#define SHMSTORE_ERRORS_H

/* Formats the calling thread's error detail (printf style) and returns
 * code, so that a caller can write `return shm_fail(-EINVAL, "...")`. */
int shm_fail(int code, const char *format, ...) __attribute__((format(printf, 2, 3)));

#endif /* SHMSTORE_ERRORS_H */
