/* SPDX-License-Identifier: ISC */
/* SASL client exchanges through GNU SASL (gsasl_client_start / gsasl_step64). */
#include "platform/sasl_client.h"

#include <gsasl.h>
#include <stdlib.h>
#include <string.h>

struct sasl_client {
    Gsasl *ctx;
};

struct sasl_client_exchange {
    Gsasl_session *session;
};

struct sasl_client *sasl_client_new(void)
{
    struct sasl_client *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    if (gsasl_init(&c->ctx) != GSASL_OK) {
        free(c);
        return NULL;
    }
    return c;
}

void sasl_client_free(struct sasl_client *c)
{
    if (c == NULL)
        return;
    gsasl_done(c->ctx);
    free(c);
}

bool sasl_client_supports(const struct sasl_client *c, const char *mechanism)
{
    return gsasl_client_support_p(c->ctx, mechanism) != 0;
}

/* The properties a client mechanism asks for are all known up front: set them on the
 * session instead of answering callbacks. */
static int set_properties(Gsasl_session *s, const char *user, const char *password,
                          const char *service, const char *hostname, const char *cb_b64)
{
    const struct {
        Gsasl_property prop;
        const char *value;
    } props[] = {
        {GSASL_AUTHID, user},       {GSASL_PASSWORD, password},
        {GSASL_SERVICE, service},   {GSASL_HOSTNAME, hostname},
        {GSASL_CB_TLS_EXPORTER, cb_b64},
    };
    for (size_t i = 0; i < sizeof props / sizeof props[0]; i++)
        if (props[i].value != NULL && gsasl_property_set(s, props[i].prop, props[i].value) != GSASL_OK)
            return -1;
    return 0;
}

struct sasl_client_exchange *sasl_client_start(struct sasl_client *c, const char *mechanism,
                                               const char *user, const char *password,
                                               const char *service, const char *hostname,
                                               const char *tls_exporter_b64)
{
    struct sasl_client_exchange *ex = calloc(1, sizeof *ex);
    if (ex == NULL)
        return NULL;
    if (gsasl_client_start(c->ctx, mechanism, &ex->session) != GSASL_OK ||
        set_properties(ex->session, user, password, service, hostname, tls_exporter_b64) != 0) {
        sasl_client_exchange_free(ex);
        return NULL;
    }
    return ex;
}

enum sasl_client_result sasl_client_step(struct sasl_client_exchange *ex, const char *input_b64,
                                         char **output_b64)
{
    *output_b64 = NULL;
    int rc = gsasl_step64(ex->session, input_b64, output_b64);
    if (rc != GSASL_OK && rc != GSASL_NEEDS_MORE) {
        free(*output_b64);
        *output_b64 = NULL;
        return SASL_CLIENT_FAILED;
    }
    if (*output_b64 == NULL)
        *output_b64 = strdup("");
    if (*output_b64 == NULL)
        return SASL_CLIENT_FAILED;
    return rc == GSASL_OK ? SASL_CLIENT_DONE : SASL_CLIENT_CONTINUE;
}

void sasl_client_exchange_free(struct sasl_client_exchange *ex)
{
    if (ex == NULL)
        return;
    if (ex->session != NULL)
        gsasl_finish(ex->session);
    free(ex);
}
