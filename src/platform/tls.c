/* SPDX-License-Identifier: ISC */
/* TLS: server contexts and the first-run self-signed certificate. */
#include "platform/tls.h"

#include <errno.h>
#include <event2/bufferevent.h>
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static void openssl_error(char *err, size_t errlen, const char *what)
{
    char detail[256];
    ERR_error_string_n(ERR_get_error(), detail, sizeof detail);
    snprintf(err, errlen, "%s: %s", what, detail);
}

/* mkdir -p of the directory part of path (mode 0700). */
static int make_parent_dir(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL || slash == dir)
        return 0;
    *slash = '\0';
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0700) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

static int add_extension(X509 *cert, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, cert, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (ext == NULL)
        return -1;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

static X509 *build_certificate(EVP_PKEY *key, const char *hostname)
{
    X509 *cert = X509_new();
    char san[300];
    if (cert == NULL)
        return NULL;
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), (long)time(NULL));
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), 10L * 365 * 86400);
    X509_set_pubkey(cert, key);
    X509_NAME *name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)hostname, -1, -1, 0);
    X509_set_issuer_name(cert, name);
    snprintf(san, sizeof san, "DNS:%s", hostname);
    if (add_extension(cert, NID_subject_alt_name, san) != 0 ||
        add_extension(cert, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
        X509_sign(cert, key, EVP_sha256()) == 0) {
        X509_free(cert);
        return NULL;
    }
    return cert;
}

static int write_pem(const char *path, mode_t mode, EVP_PKEY *key, X509 *cert)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    FILE *f = fdopen(fd, "w");
    if (f == NULL) {
        close(fd);
        return -1;
    }
    int ok = key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)
                 : PEM_write_X509(f, cert);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        ok = 0;
    fclose(f);
    return ok ? 0 : -1;
}

int tls_ensure_self_signed(const char *cert_path, const char *key_path, const char *hostname,
                           char *err, size_t errlen)
{
    bool cert_exists = access(cert_path, F_OK) == 0;
    bool key_exists = access(key_path, F_OK) == 0;
    if (cert_exists && key_exists)
        return 0;
    if (cert_exists || key_exists) {
        snprintf(err, errlen, "%s exists but %s does not: fix [tls] cert and key",
                 cert_exists ? cert_path : key_path, cert_exists ? key_path : cert_path);
        return -1;
    }
    if (make_parent_dir(cert_path) != 0 || make_parent_dir(key_path) != 0) {
        snprintf(err, errlen, "cannot create the directory of %s: %s", cert_path, strerror(errno));
        return -1;
    }
    EVP_PKEY *key = EVP_RSA_gen(2048);
    X509 *cert = key ? build_certificate(key, hostname) : NULL;
    int rc = -1;
    if (cert == NULL)
        openssl_error(err, errlen, "cannot make a self-signed certificate");
    else if (write_pem(key_path, 0600, key, NULL) != 0 || write_pem(cert_path, 0644, NULL, cert) != 0)
        snprintf(err, errlen, "cannot write %s / %s: %s", key_path, cert_path, strerror(errno));
    else
        rc = 1;
    X509_free(cert);
    EVP_PKEY_free(key);
    return rc;
}

SSL_CTX *tls_server_context(const char *cert_path, const char *key_path, const char *ca_path,
                            char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        openssl_error(err, errlen, "SSL_CTX_new");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_path) != 1) {
        openssl_error(err, errlen, cert_path);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_path, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        openssl_error(err, errlen, key_path);
        goto fail;
    }
    if (ca_path != NULL) {
        if (SSL_CTX_load_verify_locations(ctx, ca_path, NULL) != 1) {
            openssl_error(err, errlen, ca_path);
            goto fail;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

struct bufferevent *tls_bufferevent(struct event_base *base, struct bufferevent *plain, int fd,
                                    SSL *ssl, bool connecting)
{
    const enum bufferevent_ssl_state state =
        connecting ? BUFFEREVENT_SSL_CONNECTING : BUFFEREVENT_SSL_ACCEPTING;
    const int options = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;
    if (ssl == NULL)
        return NULL;
    struct bufferevent *tls = plain != NULL
                                  ? bufferevent_openssl_filter_new(base, plain, ssl, state, options)
                                  : bufferevent_openssl_socket_new(base, fd, ssl, state, options);
    if (tls == NULL)
        SSL_free(ssl);
    return tls;
}

struct bufferevent *tls_start_server(struct event_base *base, struct bufferevent *plain,
                                     SSL_CTX *ctx)
{
    return tls_bufferevent(base, plain, -1, SSL_new(ctx), false);
}

struct bufferevent *tls_accept_socket(struct event_base *base, int fd, SSL_CTX *ctx)
{
    return tls_bufferevent(base, NULL, fd, SSL_new(ctx), false);
}

bool tls_handshake_done(struct bufferevent *bev)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    return ssl != NULL && SSL_is_init_finished(ssl);
}

int tls_channel_binding(struct bufferevent *bev, char *out, size_t outlen)
{
    static const char label[] = "EXPORTER-Channel-Binding";
    unsigned char key[32];
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    if (ssl == NULL || !SSL_is_init_finished(ssl) || outlen < 4 * ((sizeof key + 2) / 3) + 1)
        return -1;
    if (SSL_export_keying_material(ssl, key, sizeof key, label, sizeof label - 1, NULL, 0, 0) != 1)
        return -1;
    EVP_EncodeBlock((unsigned char *)out, key, sizeof key);
    return 0;
}

static bool printable_identity(const unsigned char *text, int len)
{
    for (int i = 0; i < len; i++)
        if (text[i] < 0x20 || text[i] == 0x7f)
            return false;
    return true;
}

/* RFC 4422 appendix A (EXTERNAL): the identity comes from the TLS layer, so it must be exactly
 * what the certificate says. The CN is taken whole (its ASN.1 length, as UTF-8), never as a C
 * string: "bob-mx\0.mallory.example" is refused, not read as "bob-mx". A subject with more
 * than one CN is refused (which one would be meant is a guess); so are control characters and
 * a CN that does not fit out. The subjectAltName is not consulted (docs/odmr.md). */
int tls_certificate_identity(X509 *cert, char *out, size_t outlen)
{
    X509_NAME *name = cert ? X509_get_subject_name(cert) : NULL;
    int at = name ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
    if (at < 0 || X509_NAME_get_index_by_NID(name, NID_commonName, at) >= 0)
        return -1;
    unsigned char *text = NULL;
    int len = ASN1_STRING_to_UTF8(&text, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, at)));
    int rc = -1;
    if (len > 0 && (size_t)len < outlen && memchr(text, '\0', (size_t)len) == NULL &&
        printable_identity(text, len)) {
        memcpy(out, text, (size_t)len);
        out[len] = '\0';
        rc = 0;
    }
    OPENSSL_free(text);
    return rc;
}

int tls_peer_subject(struct bufferevent *bev, char *out, size_t outlen)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    X509 *cert = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    if (cert == NULL || SSL_get_verify_result(ssl) != X509_V_OK)
        return -1;
    return tls_certificate_identity(cert, out, outlen);
}

bool tls_can_write(struct bufferevent *bev)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    return ssl == NULL || SSL_is_init_finished(ssl);
}

/* After STARTTLS the OpenSSL filter writes into the plain socket bufferevent below it: what
 * waits there (the last reply, the close_notify) would be freed with it, unsent. Writes it now,
 * as far as the socket takes it without blocking. A socket bufferevent keeps its output frozen
 * at the front (only its own writes drain it), hence the unfreeze: the buffer dies next. */
static void flush_underlying_output(struct bufferevent *bev)
{
    struct bufferevent *below = bufferevent_get_underlying(bev);
    if (below == NULL)
        return;
    evutil_socket_t fd = bufferevent_getfd(below);
    struct evbuffer *pending = bufferevent_get_output(below);
    evbuffer_unfreeze(pending, 1);
    while (fd >= 0 && evbuffer_get_length(pending) > 0 && evbuffer_write(pending, fd) > 0)
        continue;
}

/* Reads and drops what the peer sent and nobody read (a close_notify and FIN after a pipelined
 * QUIT, say): close() on a socket with unread input sends a reset instead of a FIN, and a reset
 * throws away the last reply still on its way (docs/architecture.md, "the client
 * half-closes"). Bounded: a peer that keeps sending is not waited for. */
static void discard_unread_input(struct bufferevent *bev)
{
    struct bufferevent *below = bufferevent_get_underlying(bev);
    evutil_socket_t fd = bufferevent_getfd(below != NULL ? below : bev);
    char sink[4096];
    for (int i = 0; fd >= 0 && i < 64; i++)
        if (recv(fd, sink, sizeof sink, MSG_DONTWAIT) <= 0)
            break;
}

void tls_bufferevent_close(struct bufferevent *bev)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    /* Best effort on a non-blocking socket: the alert is small and goes out at once; a
     * peer that already left gets nothing, which is fine. Our close_notify is sent even
     * when the peer's has come (a half-close): OpenSSL writes until we send our own. */
    if (ssl != NULL && SSL_is_init_finished(ssl))
        SSL_shutdown(ssl);
    flush_underlying_output(bev);
    discard_unread_input(bev);
    bufferevent_free(bev);
}
