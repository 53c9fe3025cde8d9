/* SPDX-License-Identifier: ISC */
/* The check of the target before ATRN (target_probe.h): the client engine on a private event
 * loop, or the local target's own check. */
#include "client/target_probe.h"

#include <event2/event.h>
#include <stdio.h>
#include <string.h>

#include "client/target_connect.h"
#include "client/target_local.h"

struct probe {
    struct event_base *base;
    struct smtp_client *client;
    struct smtp_client_ext *caps;
    bool ready;
    char reason[200];
};

static void probe_ready(void *arg, const struct smtp_client_ext *ext,
                        const struct smtp_client_reply *greeting)
{
    struct probe *p = arg;
    *p->caps = *ext;
    p->ready = true;
    smtp_client_quit(p->client);
}

static void probe_closed(void *arg, enum smtp_client_end how, const char *reason)
{
    struct probe *p = arg;
    snprintf(p->reason, sizeof p->reason, "%s", reason);
    event_base_loopbreak(p->base);
}

static void probe_txn_done(void *arg, struct smtp_client_txn *txn)
{
}

static const struct smtp_client_callbacks probe_callbacks = {
    .ready = probe_ready, .txn_done = probe_txn_done, .closed = probe_closed,
};

static int probe_exchange(const struct target_spec *spec, const struct client_options *o,
                          const char *helo, struct smtp_client_ext *caps, char *err,
                          size_t errlen)
{
    struct target_link t = {.spec = spec, .opts = o, .helo = helo,
                            .tls_ctx = target_tls_context(spec)};
    struct probe p = {.caps = caps};
    p.base = event_base_new();
    if (p.base == NULL) {
        SSL_CTX_free(t.tls_ctx);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p.client = target_connect(p.base, &t, &probe_callbacks, &p, err, errlen);
    if (p.client != NULL) {
        event_base_dispatch(p.base);
        smtp_client_free(p.client);
        event_base_loop(p.base, EVLOOP_NONBLOCK);   /* libevent frees the bufferevent there */
        if (!p.ready)
            snprintf(err, errlen, "%s", p.reason);
    }
    event_base_free(p.base);
    SSL_CTX_free(t.tls_ctx);
    return p.ready ? 0 : -1;
}

int target_probe(const struct target_spec *spec, const struct client_options *o,
                 const char *helo, struct smtp_client_ext *caps, char *err, size_t errlen)
{
    memset(caps, 0, sizeof *caps);
    if (target_spec_is_local(spec))
        return target_local_probe(spec, caps, err, errlen);
    return probe_exchange(spec, o, helo, caps, err, errlen);
}
