/* SPDX-License-Identifier: ISC */
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

#include "platform/tls.h"

/* RFC 7469 2.4 digest of the leaf's SubjectPublicKeyInfo against the pins; with a CA the chain
 * and the name (X509_verify_cert, with the host set by new_ssl()) must hold as well. Without a
 * CA nothing else is checked: the pin is the trust anchor. */
static int verify_provider(X509_STORE_CTX *store, void *arg)
{
    struct tls_client_trust *trust = arg;
    if (trust->ca != NULL && X509_verify_cert(store) != 1)
        return 0;
    X509 *leaf = X509_STORE_CTX_get0_cert(store);
    if (leaf == NULL || tls_pin_of_cert(leaf, &trust->seen) != 0) {
        X509_STORE_CTX_set_error(store, X509_V_ERR_UNSPECIFIED);
        return 0;
    }
    for (size_t i = 0; i < trust->pin_count; i++)
        if (tls_pin_equal(&trust->pins[i], &trust->seen))
            return 1;
    trust->pin_mismatch = true;
    X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
}

static int load_anchors(SSL_CTX *ctx, const struct tls_client_trust *trust, char *err,
                        size_t errlen)
{
    if (trust->ca == NULL && trust->pin_count > 0)
        return 0;   /* the pins are the anchors */
    int ok = trust->ca != NULL ? SSL_CTX_load_verify_locations(ctx, trust->ca, NULL)
                               : SSL_CTX_set_default_verify_paths(ctx);
    if (ok == 1)
        return 0;
    char detail[256];
    ERR_error_string_n(ERR_get_error(), detail, sizeof detail);
    snprintf(err, errlen, "cannot load CA %s: %s", trust->ca ? trust->ca : "(system store)", detail);
    return -1;
}

SSL_CTX *tls_client_context(struct tls_client_trust *trust, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "SSL_CTX_new failed");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (trust->pin_count > 0)
        SSL_CTX_set_cert_verify_callback(ctx, verify_provider, trust);
    if (load_anchors(ctx, trust, err, errlen) != 0) {
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
    return tls_bufferevent(base, plain, -1, new_ssl(ctx, name), true);
}

struct bufferevent *tls_client_socket(struct event_base *base, int fd, SSL_CTX *ctx,
                                      const char *name)
{
    return tls_bufferevent(base, NULL, fd, new_ssl(ctx, name), true);
}

static void describe_pin_mismatch(const struct tls_client_trust *trust, char *out, size_t outlen)
{
    char pin[TLS_PIN_TEXT_MAX];
    size_t n = (size_t)snprintf(out, outlen, "certificate pin mismatch: the provider's key is %s, "
                                "expected", tls_pin_format(&trust->seen, pin, sizeof pin));
    for (size_t i = 0; i < trust->pin_count && n < outlen; i++)
        n += (size_t)snprintf(out + n, outlen - n, "%s %s", i == 0 ? "" : " or",
                              tls_pin_format(&trust->pins[i], pin, sizeof pin));
}

void tls_client_failure(struct bufferevent *bev, const struct tls_client_trust *trust, char *out,
                        size_t outlen)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    long verify = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
    unsigned long e = bufferevent_get_openssl_error(bev);
    if (verify == X509_V_ERR_APPLICATION_VERIFICATION && trust->pin_mismatch) {
        describe_pin_mismatch(trust, out, outlen);
        return;
    }
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
