/* SPDX-License-Identifier: ISC */
/* One fsync for every waiting caller (group_sync.h). */
#include "platform/group_sync.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

struct group_sync {
    int fd;
    bool data_only;
    pthread_mutex_t mutex;
    pthread_cond_t done;
    uint64_t requested;   /* tickets handed out */
    uint64_t synced;      /* every ticket up to this one is covered by a returned fsync */
    bool syncing;         /* a leader is in fsync() now */
    int error;            /* sticky fsync error */
};

struct group_sync *group_sync_new(int fd, bool data_only)
{
    struct group_sync *gs = calloc(1, sizeof *gs);
    if (gs == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    gs->fd = fd;
    gs->data_only = data_only;
    pthread_mutex_init(&gs->mutex, NULL);
    pthread_cond_init(&gs->done, NULL);
    return gs;
}

void group_sync_free(struct group_sync *gs)
{
    if (gs == NULL)
        return;
    pthread_mutex_destroy(&gs->mutex);
    pthread_cond_destroy(&gs->done);
    free(gs);
}

/* The caller becomes the leader: one fsync for every ticket handed out so far (mutex held on
 * entry and on return, released around the fsync). */
static void lead_one_sync(struct group_sync *gs)
{
    uint64_t target = gs->requested;
    gs->syncing = true;
    pthread_mutex_unlock(&gs->mutex);
    int rc = (gs->data_only ? fdatasync(gs->fd) : fsync(gs->fd)) == 0 ? 0 : errno;
    pthread_mutex_lock(&gs->mutex);
    gs->syncing = false;
    if (rc != 0 && gs->error == 0)
        gs->error = rc;
    if (gs->error == 0)
        gs->synced = target;
    pthread_cond_broadcast(&gs->done);
}

int group_sync(struct group_sync *gs)
{
    pthread_mutex_lock(&gs->mutex);
    /* The ticket is taken after the caller's changes: a sync whose target is at least the
     * ticket started after them and covers them. */
    uint64_t ticket = ++gs->requested;
    while (gs->error == 0 && gs->synced < ticket) {
        if (gs->syncing)
            pthread_cond_wait(&gs->done, &gs->mutex);
        else
            lead_one_sync(gs);
    }
    int rc = gs->synced >= ticket ? 0 : gs->error;
    pthread_mutex_unlock(&gs->mutex);
    return rc;
}
