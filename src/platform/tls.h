/* TLS contexts (OpenSSL 3) and the self-signed certificate made on first run. */
#ifndef ODMR_PLATFORM_TLS_H
#define ODMR_PLATFORM_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

/* When neither cert nor key exists, writes a self-signed certificate for hostname (RSA 2048,
 * SHA-256, 10 years) and its key (mode 0600), creating the directory. Returns 1 when made,
 * 0 when both already existed, -1 on error (err set). */
int tls_ensure_self_signed(const char *cert_path, const char *key_path, const char *hostname,
                           char *err, size_t errlen);
/* Server context: TLS 1.2+, cert chain and key checked against each other; with ca_path,
 * client certificates are requested (not required) and verified against it. */
SSL_CTX *tls_server_context(const char *cert_path, const char *key_path, const char *ca_path,
                            char *err, size_t errlen);

#endif
