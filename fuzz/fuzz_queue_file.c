/* SPDX-License-Identifier: ISC */
/* libFuzzer target: the queue's message file validator and envelope parser. The input is
 * planted as a committed message in a private spool and opened like the push would. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "fuzz_tmp.h"
#include "store/queue.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct queue *q;
    const char *spool = fuzz_tmp_path("spool");
    char err[256], path[128];
    if (q == NULL) {
        q = queue_open_fs(spool, NULL, 0, err, sizeof err);
        if (q == NULL)
            abort();
    }
    static const char id[] = "8DyGvdsl1000feiC";
    snprintf(path, sizeof path, "%s/msg/%s", spool, id);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return 0;
    ssize_t written = write(fd, data, size);
    close(fd);
    if (written != (ssize_t)size)
        return 0;
    struct queue_message *m = NULL;
    if (queue_message_open(q, id, &m) == 0)
        queue_message_close(m);
    return 0;
}
