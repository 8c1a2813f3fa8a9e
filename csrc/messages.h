/*
 * messages.h - the messages a client sends the daemon through its SPSC
 * ring (one ring per client slot, in the control segment).
 */
#ifndef SHMSTORE_MESSAGES_H
#define SHMSTORE_MESSAGES_H

#include <stdint.h>

enum shm_message_type {
    SHM_MESSAGE_HELLO = 1,           /* the client attached to this slot */
    SHM_MESSAGE_BYE = 2,             /* the client is leaving; DETACHED follows */
};

typedef struct shm_message {
    uint32_t type;
    int32_t pid;
} shm_message_t;

#endif /* SHMSTORE_MESSAGES_H */
