/* SPDX-License-Identifier: ISC */
/* A new certificate and key for a running server (SIGHUP), without a restart: new TLS sessions
 * use them, sessions already running keep theirs. The server's SSL_CTX stays the same object
 * (the services hold it): a certificate callback on it hands each new session the reloaded
 * chain and key, replacing the context's own (a new key may be of another type: RSA -> EC).
 * Single-threaded: install, reload and the handshakes all run on the event loop's thread. */
#ifndef ODMR_PLATFORM_TLS_RELOAD_H
#define ODMR_PLATFORM_TLS_RELOAD_H

#include <openssl/ssl.h>
#include <stddef.h>

enum tls_reload_result {
    TLS_RELOAD_DONE,        /* new sessions get the new pair */
    TLS_RELOAD_UNCHANGED,   /* both files are as they were loaded: nothing done */
    TLS_RELOAD_UNSEEN,      /* a file cannot be looked at (stat): nothing done, err says why */
    TLS_RELOAD_FAILED,      /* the new files do not load: the old pair stays, err says why */
};

/* Sets the callback on the server context and notes the files' identity (once, at start). */
void tls_reload_install(SSL_CTX *live, const char *cert_path, const char *key_path);
/* When cert_path or key_path changed (device, inode, size, mtime), loads the chain and the key,
 * checked against each other as at start; all or nothing. On DONE the new key's pin
 * ("sha256:...") is in pin_out (at least TLS_PIN_TEXT_MAX octets). */
enum tls_reload_result tls_reload(const char *cert_path, const char *key_path, char *pin_out,
                                  size_t pin_len, char *err, size_t errlen);
/* Drops the reloaded pair (at exit). */
void tls_reload_free(void);

#endif
