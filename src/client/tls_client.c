/* Client-side TLS for odmr-client. */
#include "client/tls_client.h"

#include <arpa/inet.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

SSL_CTX *tls_client_context(const char *ca, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "SSL_CTX_new failed");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int ok = ca != NULL ? SSL_CTX_load_verify_locations(ctx, ca, NULL)
                        : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        char detail[256];
        ERR_error_string_n(ERR_get_error(), detail, sizeof detail);
        snprintf(err, errlen, "cannot load CA %s: %s", ca ? ca : "(system store)", detail);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static bool is_ip_literal(const char *name)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

/* The certificate must name the host we meant to reach (DNS name or IP address SAN). */
static SSL *new_ssl(SSL_CTX *ctx, const char *name)
{
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL)
        return NULL;
    int ok;
    if (is_ip_literal(name)) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name);
    } else {
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        ok = SSL_set1_host(ssl, name) && SSL_set_tlsext_host_name(ssl, name);
    }
    if (!ok) {
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

struct bufferevent *tls_client_start(struct event_base *base, struct bufferevent *plain,
                                     SSL_CTX *ctx, const char *name)
{
    SSL *ssl = new_ssl(ctx, name);
    if (ssl == NULL)
        return NULL;
    struct bufferevent *tls = bufferevent_openssl_filter_new(
        base, plain, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (tls == NULL)
        SSL_free(ssl);
    return tls;
}

struct bufferevent *tls_client_socket(struct event_base *base, int fd, SSL_CTX *ctx,
                                      const char *name)
{
    SSL *ssl = new_ssl(ctx, name);
    if (ssl == NULL)
        return NULL;
    struct bufferevent *tls = bufferevent_openssl_socket_new(
        base, fd, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (tls == NULL)
        SSL_free(ssl);
    return tls;
}

void tls_client_failure(struct bufferevent *bev, char *out, size_t outlen)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    long verify = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
    unsigned long e = bufferevent_get_openssl_error(bev);
    if (verify != X509_V_OK) {
        snprintf(out, outlen, "certificate verification failed: %s",
                 X509_verify_cert_error_string(verify));
        return;
    }
    if (e != 0) {
        ERR_error_string_n(e, out, outlen);
        return;
    }
    snprintf(out, outlen, "TLS handshake failed");
}
