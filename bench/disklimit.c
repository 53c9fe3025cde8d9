/* SPDX-License-Identifier: ISC */
/* disklimit: how many records per second the disk under a directory makes durable.
 *
 *   disklimit wal   DIR WRITERS SECONDS SIZE [GAP_US]
 *   disklimit ring  DIR WRITERS SECONDS SIZE [GAP_US]
 *   disklimit files DIR WRITERS SECONDS SIZE [GAP_US]
 *
 * wal:   WRITERS threads append SIZE-octet records to one file and each waits until an
 *        fdatasync() issued by one committer thread covers its record; the committer syncs
 *        everything appended since its previous sync (group commit). The ceiling of a
 *        journal-based queue.
 * ring:  as wal, but the records overwrite a zero-filled, synced file of RING_OCTETS (from
 *        its start again when full), as odmrd's standby segments are (docs/queue.md): no
 *        block allocation and no size change for the sync to write. The least one record's
 *        sync can cost.
 * files: each thread loops over the pattern of a file-per-message queue: create a file,
 *        write SIZE octets, fsync it, rename it into DIR, fsync DIR.
 * GAP_US (default 0): each writer waits so long (sleeping) after each durable record before it
 *        writes the next, as a server waits for its client's next message: the ceiling of one
 *        request/response session, whose disk starts each sync from idle (bench/README.md).
 *
 * Prints one line: "mode=M writers=W size=S gap_us=G records/s=R syncs/s=Y records/sync=Z
 * commit_us=C", C the mean time from a record's write to the end of the sync covering it.
 * Build: cc -O2 -pthread -o disklimit disklimit.c (bench/limits does it). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

enum { MAX_WRITERS = 256 };
#define RING_OCTETS (64L << 20)

static struct {
    int dirfd;
    int logfd;
    size_t size;
    long gap_us;
    int ring;            /* records overwrite a zero-filled file of RING_OCTETS */
    off_t offset;        /* the next record's place in it */
    atomic_int stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned long appended, synced, syncs;
    double commit_seconds;   /* summed over records: from the write to the covering sync */
} g = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The client's turn between two records (GAP_US): the writer sleeps, as a server does. */
static void think(void)
{
    if (g.gap_us <= 0)
        return;
    struct timespec t = { g.gap_us / 1000000, (g.gap_us % 1000000) * 1000 };
    while (nanosleep(&t, &t) != 0 && errno == EINTR)
        ;
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
        double t0 = now();
        pthread_mutex_lock(&g.mu);
        if (g.ring && g.offset + (off_t)g.size > RING_OCTETS)
            g.offset = 0;
        ssize_t n = g.ring ? pwrite(g.logfd, rec, g.size, g.offset) : write(g.logfd, rec, g.size);
        if (n != (ssize_t)g.size)
            die("write");
        if (g.ring)
            g.offset += (off_t)g.size;
        unsigned long mine = ++g.appended;
        pthread_cond_broadcast(&g.cv);
        while (g.synced < mine && !atomic_load(&g.stop))
            pthread_cond_wait(&g.cv, &g.mu);
        if (g.synced >= mine)
            g.commit_seconds += now() - t0;
        pthread_mutex_unlock(&g.mu);
        think();
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
        double t0 = now();
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
        g.commit_seconds += now() - t0;
        pthread_mutex_unlock(&g.mu);
        unlinkat(g.dirfd, fin, 0);   /* not timed apart; keeps the directory small */
        think();
    }
    free(buf);
    return NULL;
}

/* The ring file zero-filled and synced before the timed part, as a standby segment is. */
static void fill_ring(void)
{
    enum { CHUNK = 1 << 20 };
    char *zeros = calloc(1, CHUNK);
    if (!zeros)
        die("calloc");
    for (off_t at = 0; at < RING_OCTETS; at += CHUNK)
        if (pwrite(g.logfd, zeros, CHUNK, at) != CHUNK)
            die("ring fill");
    if (fsync(g.logfd) != 0)
        die("ring fsync");
    free(zeros);
}

int main(int argc, char **argv)
{
    if (argc != 6 && argc != 7) {
        fprintf(stderr, "usage: disklimit wal|ring|files DIR WRITERS SECONDS SIZE [GAP_US]\n");
        return 2;
    }
    g.ring = strcmp(argv[1], "ring") == 0;
    int wal = g.ring || strcmp(argv[1], "wal") == 0;
    int writers = atoi(argv[3]);
    double seconds = atof(argv[4]);
    g.size = (size_t)atol(argv[5]);
    g.gap_us = argc == 7 ? atol(argv[6]) : 0;
    if (g.gap_us < 0 || (!wal && strcmp(argv[1], "files") != 0) || writers < 1 ||
        writers > MAX_WRITERS || (g.ring && g.size > RING_OCTETS) ||
        seconds <= 0 || g.size < 1) {
        fprintf(stderr, "disklimit: bad arguments\n");
        return 2;
    }
    g.dirfd = open(argv[2], O_RDONLY | O_DIRECTORY);
    if (g.dirfd < 0)
        die(argv[2]);
    g.logfd = -1;
    if (wal) {
        g.logfd = openat(g.dirfd, ".disklimit.log",
                         O_WRONLY | O_CREAT | O_TRUNC | (g.ring ? 0 : O_APPEND), 0600);
        if (g.logfd < 0)
            die("log file");
        if (g.ring)
            fill_ring();
    }
    /* The gap as asked, not 50 us more: a server is woken by its client, not by a timer. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
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
    printf("mode=%s writers=%d size=%zu gap_us=%ld records/s=%.0f syncs/s=%.0f records/sync=%.1f "
           "commit_us=%.0f\n",
           argv[1], writers, g.size, g.gap_us, (double)g.synced / dt, (double)g.syncs / dt,
           g.syncs ? (double)g.synced / (double)g.syncs : 0.0,
           g.synced ? 1e6 * g.commit_seconds / (double)g.synced : 0.0);
    return 0;
}
