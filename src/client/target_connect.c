/* SPDX-License-Identifier: ISC */
/* The connection to an SMTP or LMTP target (target_connect.h): TLS toward it, the client
 * engine's settings, the socket. */
#include "client/target_connect.h"

#include <event2/bufferevent.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "client/wire.h"

enum {
    BODY_HIGH = 256 << 10,   /* the largest single write of the body */
};

static bool is_loopback(const char *host)
{
    return strcmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0 ||
           strcmp(host, "::1") == 0;
}

/* STARTTLS toward the target (RFC 3207, docs/client.md "Local delivery target"): required and
 * verified for +starttls; otherwise opportunistic and unauthenticated (RFC 7435) toward a host
 * that is not loopback; never over loopback or a unix socket, where TLS protects nothing. */
SSL_CTX *target_tls_context(const struct target_spec *spec)
{
    if (target_spec_is_local(spec) || spec->is_unix ||
        (!spec->starttls_required && is_loopback(spec->host)))
        return NULL;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, spec->starttls_required ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    if (spec->starttls_required && SSL_CTX_set_default_verify_paths(ctx) != 1) {
        SSL_CTX_free(ctx);
        return NULL;   /* the engine then refuses to go on in clear */
    }
    return ctx;
}


/* RFC 5321 4.5.3.2 timeouts, from the client's settings (whole seconds, scaled). */
static struct smtp_client_config engine_config(const struct target_link *t)
{
    const struct client_options *o = t->opts;
    unsigned flags = SMTP_CLIENT_USE_PIPELINING | SMTP_CLIENT_USE_CHUNKING |
                     SMTP_CLIENT_STRICT_CRLF;
    if (t->spec->kind == TARGET_LMTP)
        flags |= SMTP_CLIENT_LMTP;
    if (t->spec->starttls_required)
        flags |= SMTP_CLIENT_STARTTLS_REQUIRED;
    else if (t->tls_ctx != NULL)
        flags |= SMTP_CLIENT_STARTTLS;
    return (struct smtp_client_config){
        .helo_name = t->helo,
        .flags = flags,
        .tls_ctx = t->tls_ctx,
        .tls_name = t->spec->host,
        .timeouts = {
            .greeting = client_timeout_seconds(o, TIMEOUT_GREETING),
            .command = client_timeout_seconds(o, TIMEOUT_COMMAND),
            .data_init = client_timeout_seconds(o, TIMEOUT_DATA_INIT),
            .data_block = client_timeout_seconds(o, TIMEOUT_DATA_BLOCK),
            .data_end = client_timeout_seconds(o, TIMEOUT_DATA_END),
        },
    };
}

/* Connects (blocking, bounded) and hands the socket to the engine on base. */
struct smtp_client *target_connect(struct event_base *base, const struct target_link *t,
                                   const struct smtp_client_callbacks *cb, void *arg, char *err,
                                   size_t errlen)
{
    const struct target_spec *spec = t->spec;
    int fd = wire_connect(spec->host, spec->port, spec->is_unix ? spec->unix_path : NULL,
                          client_timeout(t->opts, TIMEOUT_CONNECT), err, errlen);
    if (fd < 0)
        return NULL;
    struct bufferevent *bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        close(fd);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    /* libevent writes at most 16 KiB per callback by default: the body goes in bigger writes */
    bufferevent_set_max_single_write(bev, BODY_HIGH);
    const struct smtp_client_config cfg = engine_config(t);
    struct smtp_client *c = smtp_client_new(base, bev, &cfg, cb, arg);
    if (c == NULL) {
        bufferevent_free(bev);
        snprintf(err, errlen, "out of memory");
    }
    return c;
}
