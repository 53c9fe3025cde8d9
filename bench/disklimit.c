/* SPDX-License-Identifier: ISC */
/* disklimit: how many records per second the disk under a directory makes durable.
 *
 *   disklimit wal   DIR WRITERS SECONDS SIZE
 *   disklimit files DIR WRITERS SECONDS SIZE
 *
 * wal:   WRITERS threads append SIZE-octet records to one file and each waits until an
 *        fdatasync() issued by one committer thread covers its record; the committer syncs
 *        everything appended since its previous sync (group commit). The ceiling of a
 *        journal-based queue.
 * files: each thread loops over the pattern of a file-per-message queue: create a file,
 *        write SIZE octets, fsync it, rename it into DIR, fsync DIR.
 *
 * Prints one line: "mode=M writers=W size=S records/s=R syncs/s=Y records/sync=Z".
 * Build: cc -O2 -pthread -o disklimit disklimit.c (bench/limits does it). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { MAX_WRITERS = 256 };

static struct {
    int dirfd;
    int logfd;
    size_t size;
    atomic_int stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned long appended, synced, syncs;
} g = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "disklimit: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void *wal_writer(void *arg)
{
    char *rec = malloc(g.size);
    if (!rec)
        die("malloc");
    memset(rec, 'r', g.size);
    while (!atomic_load(&g.stop)) {
        pthread_mutex_lock(&g.mu);
        if (write(g.logfd, rec, g.size) != (ssize_t)g.size)
            die("write");
        unsigned long mine = ++g.appended;
        pthread_cond_broadcast(&g.cv);
        while (g.synced < mine && !atomic_load(&g.stop))
            pthread_cond_wait(&g.cv, &g.mu);
        pthread_mutex_unlock(&g.mu);
    }
    free(rec);
    return arg;
}

static void *wal_committer(void *arg)
{
    pthread_mutex_lock(&g.mu);
    while (!atomic_load(&g.stop)) {
        while (g.appended == g.synced && !atomic_load(&g.stop))
            pthread_cond_wait(&g.cv, &g.mu);
        unsigned long upto = g.appended;
        pthread_mutex_unlock(&g.mu);
        if (fdatasync(g.logfd) != 0)
            die("fdatasync");
        pthread_mutex_lock(&g.mu);
        g.synced = upto;
        g.syncs++;
        pthread_cond_broadcast(&g.cv);
    }
    pthread_mutex_unlock(&g.mu);
    return arg;
}

static void *files_writer(void *arg)
{
    unsigned long me = (unsigned long)(size_t)arg;
    char *buf = malloc(g.size);
    if (!buf)
        die("malloc");
    memset(buf, 'f', g.size);
    for (unsigned long i = 0; !atomic_load(&g.stop); i++) {
        char tmp[64], fin[64];
        snprintf(tmp, sizeof tmp, ".t.%lu.%lu", me, i);
        snprintf(fin, sizeof fin, "f.%lu.%lu", me, i);
        int fd = openat(g.dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
        if (fd < 0 || write(fd, buf, g.size) != (ssize_t)g.size || fsync(fd) != 0)
            die("file write");
        close(fd);
        if (renameat(g.dirfd, tmp, g.dirfd, fin) != 0 || fsync(g.dirfd) != 0)
            die("rename");
        pthread_mutex_lock(&g.mu);
        g.synced++;
        g.syncs += 2;
        pthread_mutex_unlock(&g.mu);
        unlinkat(g.dirfd, fin, 0);   /* not timed apart; keeps the directory small */
    }
    free(buf);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: disklimit wal|files DIR WRITERS SECONDS SIZE\n");
        return 2;
    }
    int wal = strcmp(argv[1], "wal") == 0;
    int writers = atoi(argv[3]);
    double seconds = atof(argv[4]);
    g.size = (size_t)atol(argv[5]);
    if ((!wal && strcmp(argv[1], "files") != 0) || writers < 1 || writers > MAX_WRITERS ||
        seconds <= 0 || g.size < 1) {
        fprintf(stderr, "disklimit: bad arguments\n");
        return 2;
    }
    g.dirfd = open(argv[2], O_RDONLY | O_DIRECTORY);
    if (g.dirfd < 0)
        die(argv[2]);
    g.logfd = -1;
    if (wal) {
        g.logfd = openat(g.dirfd, ".disklimit.log", O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
        if (g.logfd < 0)
            die("log file");
    }
    pthread_t committer, thr[MAX_WRITERS];
    if (wal)
        pthread_create(&committer, NULL, wal_committer, NULL);
    double t0 = now();
    for (int i = 0; i < writers; i++)
        pthread_create(&thr[i], NULL, wal ? wal_writer : files_writer, (void *)(size_t)i);
    usleep((useconds_t)(seconds * 1e6));
    atomic_store(&g.stop, 1);
    pthread_mutex_lock(&g.mu);
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    for (int i = 0; i < writers; i++)
        pthread_join(thr[i], NULL);
    if (wal)
        pthread_join(committer, NULL);
    double dt = now() - t0;
    if (wal)
        unlinkat(g.dirfd, ".disklimit.log", 0);
    printf("mode=%s writers=%d size=%zu records/s=%.0f syncs/s=%.0f records/sync=%.1f\n",
           argv[1], writers, g.size, (double)g.synced / dt, (double)g.syncs / dt,
           g.syncs ? (double)g.synced / (double)g.syncs : 0.0);
    return 0;
}
