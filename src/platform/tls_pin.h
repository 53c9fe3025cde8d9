/* SPDX-License-Identifier: ISC */
/* Public-key pins: "sha256:" + base64 of the SHA-256 digest of a certificate's DER
 * SubjectPublicKeyInfo. The digest is the one of HPKP (RFC 7469 2.4) and of curl's
 * --pinnedpubkey sha256//...; it names the key, so it survives a renewal that keeps the key. */
#ifndef ODMR_PLATFORM_TLS_PIN_H
#define ODMR_PLATFORM_TLS_PIN_H

#include <openssl/x509.h>
#include <stddef.h>

enum {
    TLS_PIN_DIGEST_LEN = 32,      /* SHA-256 */
    TLS_PIN_TEXT_MAX = 64,        /* "sha256:" + 44 base64 characters + NUL, rounded up */
};

struct tls_pin {
    unsigned char digest[TLS_PIN_DIGEST_LEN];
};

/* "sha256:BASE64" (or curl's "sha256//BASE64"): exactly 44 canonical base64 characters that
 * decode to 32 octets. 0, or -1 when text is anything else. */
int tls_pin_parse(const char *text, struct tls_pin *out);
/* The pin of cert's public key. 0 or -1. */
int tls_pin_of_cert(X509 *cert, struct tls_pin *out);
/* The pin of the first certificate in a PEM file. -1 with a message in err. */
int tls_pin_of_pem_file(const char *path, struct tls_pin *out, char *err, size_t errlen);
/* "sha256:BASE64" into out (at least TLS_PIN_TEXT_MAX octets). Returns out. */
const char *tls_pin_format(const struct tls_pin *pin, char *out, size_t outlen);
/* Constant-time comparison; 1 when equal. */
int tls_pin_equal(const struct tls_pin *a, const struct tls_pin *b);

#endif
