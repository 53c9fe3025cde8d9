/* SPDX-License-Identifier: ISC */
/* Public-key pins (tls_pin.h): OpenSSL computes the DER SubjectPublicKeyInfo, the digest and
 * the base64; nothing here is hand-written crypto. */
#include "platform/tls_pin.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    PIN_BASE64_LEN = 44,          /* 32 octets: 10 groups of 4, the last "xxx=" */
    PIN_DECODED_LEN = 33,         /* EVP_DecodeBlock counts the padding octet */
};

/* Both prefixes name the same digest: ours, and curl's --pinnedpubkey form. */
static const char *const pin_prefixes[] = {"sha256:", "sha256//"};

static const char *skip_prefix(const char *text)
{
    for (size_t i = 0; i < sizeof pin_prefixes / sizeof pin_prefixes[0]; i++) {
        size_t n = strlen(pin_prefixes[i]);
        if (strncmp(text, pin_prefixes[i], n) == 0)
            return text + n;
    }
    return NULL;
}

int tls_pin_parse(const char *text, struct tls_pin *out)
{
    const char *b64 = skip_prefix(text);
    unsigned char decoded[PIN_DECODED_LEN + 3];
    unsigned char again[PIN_BASE64_LEN + 1];
    if (b64 == NULL || strlen(b64) != PIN_BASE64_LEN)
        return -1;
    if (EVP_DecodeBlock(decoded, (const unsigned char *)b64, PIN_BASE64_LEN) != PIN_DECODED_LEN)
        return -1;
    /* EVP_DecodeBlock is lenient (spaces, padding); only the canonical form is a pin. */
    EVP_EncodeBlock(again, decoded, TLS_PIN_DIGEST_LEN);
    if (memcmp(again, b64, PIN_BASE64_LEN) != 0)
        return -1;
    memcpy(out->digest, decoded, TLS_PIN_DIGEST_LEN);
    return 0;
}

int tls_pin_of_cert(X509 *cert, struct tls_pin *out)
{
    X509_PUBKEY *spki = X509_get_X509_PUBKEY(cert);
    unsigned char *der = NULL;
    unsigned int len = 0;
    if (spki == NULL)
        return -1;
    int der_len = i2d_X509_PUBKEY(spki, &der);
    if (der_len <= 0)
        return -1;
    int ok = EVP_Digest(der, (size_t)der_len, out->digest, &len, EVP_sha256(), NULL);
    OPENSSL_free(der);
    return ok == 1 && len == TLS_PIN_DIGEST_LEN ? 0 : -1;
}

int tls_pin_of_pem_file(const char *path, struct tls_pin *out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    X509 *cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (cert == NULL) {
        ERR_clear_error();
        snprintf(err, errlen, "%s: no PEM certificate in the file", path);
        return -1;
    }
    int rc = tls_pin_of_cert(cert, out);
    X509_free(cert);
    if (rc != 0)
        snprintf(err, errlen, "%s: cannot encode the certificate's public key", path);
    return rc;
}

const char *tls_pin_format(const struct tls_pin *pin, char *out, size_t outlen)
{
    unsigned char b64[PIN_BASE64_LEN + 1];
    EVP_EncodeBlock(b64, pin->digest, TLS_PIN_DIGEST_LEN);
    snprintf(out, outlen, "%s%s", pin_prefixes[0], (const char *)b64);
    return out;
}

int tls_pin_equal(const struct tls_pin *a, const struct tls_pin *b)
{
    return CRYPTO_memcmp(a->digest, b->digest, TLS_PIN_DIGEST_LEN) == 0;
}
