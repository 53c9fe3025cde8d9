/* SPDX-License-Identifier: ISC */
/* Connection limits at accept (admission.h). */
#include "platform/admission.h"

#include "lib/peer_count.h"
#include "platform/listen.h"

const char *admission_check(evutil_socket_t fd, const char *key,
                            const struct admission_rule *rules, size_t count, bool say)
{
    size_t i;
    for (i = 0; i < count; i++) {
        const struct admission_rule *r = &rules[i];
        if (r->refuse || (r->peers != NULL && !peer_count_take(r->peers, key, r->limit)))
            break;
    }
    if (i == count)
        return NULL;
    for (size_t j = 0; j < i; j++)
        if (rules[j].peers != NULL)
            peer_count_release(rules[j].peers, key);
    listen_refuse(fd, say ? rules[i].reply : NULL);
    return rules[i].reason;
}
