/*
 * segment.c - create, open and map the shared-memory segments of a store.
 */
#define _GNU_SOURCE
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "errors.h"

#define SHM_DIRECTORY "/dev/shm"

const char *shm_store_name(const char *name, int *code)
{
    if (name == NULL || *name == '\0')
        name = getenv("SHMSTORE_NAME");
    if (name == NULL || *name == '\0')
        name = "default";

    size_t length = strlen(name);
    if (length > SHMSTORE_NAME_MAX) {
        *code = shm_fail(-EINVAL, "store name of %zu bytes is too long (max %d)", length,
                         SHMSTORE_NAME_MAX);
        return NULL;
    }

    for (size_t i = 0; i < length; i++) {
        char c = name[i];
        int valid = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
        if (!valid) {
            *code = shm_fail(-EINVAL,
                             "invalid store name \"%s\": use only letters, digits, '.', '_' "
                             "and '-'",
                             name);
            return NULL;
        }
    }

    *code = 0;
    return name;
}

void shm_segment_name(char *out, const char *store, const char *suffix)
{
    snprintf(out, SHM_SEGMENT_NAME_BYTES, "/shmstore-%s-%s", store, suffix);
}

int shm_check_free_space(uint64_t bytes)
{
    struct statvfs info;
    if (statvfs(SHM_DIRECTORY, &info) != 0) {
        int error = errno;
        return shm_fail(-error, "statvfs of " SHM_DIRECTORY " failed: %s", strerror(error));
    }

    uint64_t free_bytes = (uint64_t)info.f_bavail * (uint64_t)info.f_frsize;
    if (free_bytes < bytes) {
        return shm_fail(-ENOSPC,
                        "store needs %llu bytes but " SHM_DIRECTORY " has %llu free; "
                        "ask for less memory or free space in " SHM_DIRECTORY,
                        (unsigned long long)bytes, (unsigned long long)free_bytes);
    }
    return 0;
}

static int map_segment(int fd, uint64_t bytes, int writable, int populate, const char *shm_name,
                       shm_mapping_t *out)
{
    int protection = writable ? PROT_READ | PROT_WRITE : PROT_READ;
    int flags = MAP_SHARED | (populate ? MAP_POPULATE : 0);

    void *base = mmap(NULL, (size_t)bytes, protection, flags, fd, 0);
    if (base == MAP_FAILED) {
        int error = errno;
        return shm_fail(-error, "mmap of %s (%llu bytes) failed: %s", shm_name,
                        (unsigned long long)bytes, strerror(error));
    }

    out->fd = fd;
    out->base = base;
    out->bytes = bytes;
    return 0;
}

int shm_segment_create(const char *shm_name, uint64_t bytes, int populate, int lock,
                       shm_mapping_t *out)
{
    out->fd = -1;
    out->base = NULL;
    out->bytes = 0;

    int fd = shm_open(shm_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        int error = errno;
        return shm_fail(-error, "shm_open of %s failed: %s", shm_name, strerror(error));
    }

    int result = 0;
    if (lock && flock(fd, LOCK_EX | LOCK_NB) != 0) {
        result = shm_fail(SHMSTORE_EBUSY, "another process locked %s while this one created it",
                          shm_name);
        close(fd);
        return result;
    }

    /* The umask may have cleared bits of 0600, never added any, but a
     * restrictive one could leave the owner without access. */
    if (fchmod(fd, 0600) != 0) {
        int error = errno;
        result = shm_fail(-error, "fchmod of %s failed: %s", shm_name, strerror(error));
        goto fail;
    }

    if (ftruncate(fd, (off_t)bytes) != 0) {
        int error = errno;
        result = shm_fail(-error, "ftruncate of %s to %llu bytes failed: %s", shm_name,
                          (unsigned long long)bytes, strerror(error));
        goto fail;
    }

    /* posix_fallocate returns the error number instead of setting errno. */
    int error = posix_fallocate(fd, 0, (off_t)bytes);
    if (error != 0) {
        if (error == ENOSPC) {
            result = shm_fail(-ENOSPC,
                              "reserving %llu bytes for %s failed: /dev/shm is full; ask for "
                              "less memory or free space in /dev/shm",
                              (unsigned long long)bytes, shm_name);
        } else {
            result = shm_fail(-error, "posix_fallocate of %llu bytes for %s failed: %s",
                              (unsigned long long)bytes, shm_name, strerror(error));
        }
        goto fail;
    }

    result = map_segment(fd, bytes, 1, populate, shm_name, out);
    if (result != 0)
        goto fail;
    return 0;

fail:
    close(fd);
    shm_unlink(shm_name);
    return result;
}

int shm_segment_open(const char *shm_name, int writable, int populate, shm_mapping_t *out)
{
    out->fd = -1;
    out->base = NULL;
    out->bytes = 0;

    int fd = shm_open(shm_name, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC, 0);
    if (fd < 0) {
        int error = errno;
        if (error == ENOENT)
            return shm_fail(SHMSTORE_ENOSTORE, "no store segment %s: is the daemon running?",
                            shm_name);
        return shm_fail(-error, "shm_open of %s failed: %s", shm_name, strerror(error));
    }

    struct stat info;
    if (fstat(fd, &info) != 0) {
        int error = errno;
        close(fd);
        return shm_fail(-error, "fstat of %s failed: %s", shm_name, strerror(error));
    }
    if (info.st_size <= 0) {
        close(fd);
        return shm_fail(SHMSTORE_ENOSTORE, "store segment %s is empty: the daemon is still "
                        "starting or died while starting", shm_name);
    }

    int result = map_segment(fd, (uint64_t)info.st_size, writable, populate, shm_name, out);
    if (result != 0)
        close(fd);
    return result;
}

void shm_segment_close(shm_mapping_t *mapping)
{
    if (mapping->base != NULL)
        munmap(mapping->base, (size_t)mapping->bytes);
    if (mapping->fd >= 0)
        close(mapping->fd);
    mapping->base = NULL;
    mapping->fd = -1;
    mapping->bytes = 0;
}
