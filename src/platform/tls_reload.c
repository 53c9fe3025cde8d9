/* SPDX-License-Identifier: ISC */
/* Certificate reload for a live server context (see tls_reload.h). */
#include "platform/tls_reload.h"

#include <errno.h>
#include <openssl/err.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "platform/tls.h"
#include "platform/tls_pin.h"

/* The reloaded pair; NULL until the first successful reload (the context's own pair serves). */
static struct {
    X509 *cert;
    EVP_PKEY *key;
    STACK_OF(X509) *chain;
} current;

static int use_current(SSL *ssl, void *arg)
{
    if (current.cert == NULL)
        return 1;
    SSL_certs_clear(ssl);     /* the session's copy of the context's pair, every key type */
    return SSL_use_cert_and_key(ssl, current.cert, current.key, current.chain, 1) == 1;
}

/* What identifies a version of a file: a rename, a rewrite or a touch changes it. */
struct file_id {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
};

static struct file_id loaded_cert, loaded_key;

static int file_id_of(const char *path, struct file_id *out)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return -1;
    *out = (struct file_id){st.st_dev, st.st_ino, st.st_size, st.st_mtim};
    return 0;
}

static bool same_file(const struct file_id *a, const struct file_id *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

void tls_reload_install(SSL_CTX *live, const char *cert_path, const char *key_path)
{
    SSL_CTX_set_cert_cb(live, use_current, NULL);
    file_id_of(cert_path, &loaded_cert);
    file_id_of(key_path, &loaded_key);
}

void tls_reload_free(void)
{
    X509_free(current.cert);
    EVP_PKEY_free(current.key);
    sk_X509_pop_free(current.chain, X509_free);
    current.cert = NULL;
    current.key = NULL;
    current.chain = NULL;
}

/* The chain of fresh's certificate as a stack of our own (NULL when there is none). */
static int copy_chain(SSL_CTX *fresh, STACK_OF(X509) **out)
{
    STACK_OF(X509) *chain = NULL;
    *out = NULL;
    if (SSL_CTX_get0_chain_certs(fresh, &chain) != 1)
        return -1;
    if (chain != NULL && (*out = X509_chain_up_ref(chain)) == NULL)
        return -1;
    return 0;
}

/* Takes fresh's pair over as the current one. */
static int take_over(SSL_CTX *fresh, struct tls_pin *pin)
{
    X509 *cert = SSL_CTX_get0_certificate(fresh);
    EVP_PKEY *key = SSL_CTX_get0_privatekey(fresh);
    STACK_OF(X509) *chain;
    if (cert == NULL || key == NULL || tls_pin_of_cert(cert, pin) != 0 ||
        copy_chain(fresh, &chain) != 0)
        return -1;
    X509_up_ref(cert);
    EVP_PKEY_up_ref(key);
    tls_reload_free();
    current.cert = cert;
    current.key = key;
    current.chain = chain;
    return 0;
}

enum tls_reload_result tls_reload(const char *cert_path, const char *key_path, char *pin_out,
                                  size_t pin_len, char *err, size_t errlen)
{
    struct file_id cert_id, key_id;
    struct tls_pin pin;
    const char *unseen = file_id_of(cert_path, &cert_id) != 0  ? cert_path
                         : file_id_of(key_path, &key_id) != 0 ? key_path
                                                               : NULL;
    if (unseen != NULL) {
        snprintf(err, errlen, "%s: %s", unseen, strerror(errno));
        return TLS_RELOAD_UNSEEN;
    }
    if (same_file(&cert_id, &loaded_cert) && same_file(&key_id, &loaded_key))
        return TLS_RELOAD_UNCHANGED;
    SSL_CTX *fresh = tls_server_context(cert_path, key_path, NULL, err, errlen);
    if (fresh == NULL)
        return TLS_RELOAD_FAILED;
    int rc = take_over(fresh, &pin);
    SSL_CTX_free(fresh);
    if (rc != 0) {
        snprintf(err, errlen, "%s: cannot take the certificate over", cert_path);
        ERR_clear_error();
        return TLS_RELOAD_FAILED;
    }
    loaded_cert = cert_id;
    loaded_key = key_id;
    tls_pin_format(&pin, pin_out, pin_len);
    return TLS_RELOAD_DONE;
}
