/* SPDX-License-Identifier: ISC */
/* sd_notify(3)'s protocol over $NOTIFY_SOCKET (see sd_notify.h). */
#include "platform/sd_notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* "/path" or "@abstract" -> a sockaddr_un and its length. */
static int notify_address(const char *name, struct sockaddr_un *addr, socklen_t *len)
{
    size_t n = strlen(name);
    if ((name[0] != '/' && name[0] != '@') || n < 2 || n >= sizeof addr->sun_path) {
        errno = EINVAL;
        return -1;
    }
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    memcpy(addr->sun_path, name, n);
    if (name[0] == '@')
        addr->sun_path[0] = '\0';   /* an abstract name: exactly n octets, no terminator */
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (name[0] == '/'));
    return 0;
}

int service_notify(const char *state)
{
    const char *name = getenv("NOTIFY_SOCKET");
    struct sockaddr_un addr;
    socklen_t len;
    if (name == NULL || name[0] == '\0')
        return 0;
    if (notify_address(name, &addr, &len) != 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    size_t size = strlen(state);
    ssize_t sent = sendto(fd, state, size, MSG_NOSIGNAL, (struct sockaddr *)&addr, len);
    int saved = errno;
    close(fd);
    errno = saved;
    return sent == (ssize_t)size ? 0 : -1;
}

int service_notify_reloading(void)
{
    struct timespec now;
    char state[64];
    clock_gettime(CLOCK_MONOTONIC, &now);
    snprintf(state, sizeof state, "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)now.tv_sec * 1000000ull +
                 (unsigned long long)now.tv_nsec / 1000ull);
    return service_notify(state);
}
