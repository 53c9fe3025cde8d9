/* SPDX-License-Identifier: ISC */
/* SASL server exchanges through GNU SASL. */
#include "platform/sasl.h"

#include <gsasl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sasl_server {
    Gsasl *ctx;
    sasl_lookup_fn lookup;
    void *lookup_arg;
    unsigned char secret[SASL_SECRET_LEN];
};

/* Base64 of a made-up SCRAM verifier (and CRAM-MD5 secret) for one name. */
struct decoy {
    char salt[4 * ((SASL_SCRAM_SALT_LEN + 2) / 3) + 1];
    char stored_key[45];
    char server_key[45];
    char cram_secret[45];
};

struct sasl_exchange {
    struct sasl_server *server;
    Gsasl_session *session;
    char *tls_exporter_b64;
    char *tls_subject;
    char *user;              /* set once authenticated */
    bool external;
    struct decoy decoy;
};

static struct sasl_exchange *exchange_of(Gsasl_session *sctx)
{
    return gsasl_session_hook_get(sctx);
}

static bool lookup(struct sasl_exchange *ex, const char *authid, struct sasl_credentials *out)
{
    memset(out, 0, sizeof *out);
    return authid != NULL && ex->server->lookup(ex->server->lookup_arg, authid, out);
}

/* Base64 of the first len octets of HMAC-SHA-256(key, name) into out. */
static void derive(const unsigned char *key, size_t key_len, const char *name, size_t len,
                   char *out)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    if (HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)name, strlen(name), mac,
             &mac_len) == NULL || mac_len < len)
        RAND_bytes(mac, (int)len);   /* never: then at least nothing guessable */
    EVP_EncodeBlock((unsigned char *)out, mac, (int)len);
}

/* A key of its own per purpose: HMAC-SHA-256(secret, label) keys the derivation. */
static void derive_labelled(const struct sasl_server *server, const char *label, const char *name,
                            size_t len, char *out)
{
    unsigned char key[EVP_MAX_MD_SIZE];
    unsigned int key_len = 0;
    if (HMAC(EVP_sha256(), server->secret, sizeof server->secret, (const unsigned char *)label,
             strlen(label), key, &key_len) == NULL)
        RAND_bytes(key, key_len = 32);
    derive(key, key_len, name, len, out);
}

/* The SCRAM credentials of authid. A user without a verifier, an unknown one included, gets a
 * decoy: the salt is HMAC-SHA-256(server secret, name) cut to the length odmrctl writes, with
 * its iteration count, the same every time, so the server-first message does not tell such a
 * name from a real user. A user with a stored password keeps working: GNU SASL derives the
 * keys from the password with that salt. Anyone else gets derived keys no proof can match, so
 * the exchange fails at the client proof exactly as with a wrong password. */
static void scram_credentials(struct sasl_exchange *ex, const char *authid,
                              struct sasl_credentials *c)
{
    bool known = lookup(ex, authid, c);
    if (known && c->scram_iterations != 0)
        return;
    const char *name = authid ? authid : "";
    derive(ex->server->secret, sizeof ex->server->secret, name, SASL_SCRAM_SALT_LEN,
           ex->decoy.salt);
    c->scram_iterations = SASL_SCRAM_ITERATIONS;
    c->scram_salt_b64 = ex->decoy.salt;
    if (known && c->password != NULL)
        return;
    derive_labelled(ex->server, "StoredKey", name, 32, ex->decoy.stored_key);
    derive_labelled(ex->server, "ServerKey", name, 32, ex->decoy.server_key);
    c->scram_stored_key_b64 = ex->decoy.stored_key;
    c->scram_server_key_b64 = ex->decoy.server_key;
}

static int provide_scram(Gsasl_session *sctx, Gsasl_property prop,
                         const struct sasl_credentials *c)
{
    char iterations[16];
    switch (prop) {
    case GSASL_SCRAM_ITER:
        snprintf(iterations, sizeof iterations, "%u", c->scram_iterations);
        return gsasl_property_set(sctx, prop, iterations);
    case GSASL_SCRAM_SALT:
        return gsasl_property_set(sctx, prop, c->scram_salt_b64);
    /* gsasl.h says "hex-encoded", but GNU SASL 2.2 takes the keys in base64 (its own
     * scram-nopasswd test does); checked by tests/unit/test_userdb.c and test_odmr.py. */
    case GSASL_SCRAM_STOREDKEY:
        return c->scram_stored_key_b64 ? gsasl_property_set(sctx, prop, c->scram_stored_key_b64)
                                       : GSASL_NO_CALLBACK;
    case GSASL_SCRAM_SERVERKEY:
        return c->scram_server_key_b64 ? gsasl_property_set(sctx, prop, c->scram_server_key_b64)
                                       : GSASL_NO_CALLBACK;
    default:
        return GSASL_NO_CALLBACK;
    }
}

static bool same_secret(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    return la == lb && CRYPTO_memcmp(a, b, la) == 0;
}

/* PLAIN and LOGIN: against the stored secret, or the SCRAM verifier when no secret is stored
 * (users with CRAM-MD5 disabled keep no plaintext-equivalent). */
static bool password_matches(const struct sasl_credentials *c, const char *password)
{
    if (c->password != NULL)
        return same_secret(c->password, password);
    if (c->scram_iterations == 0 || c->scram_salt_b64 == NULL || c->scram_stored_key_b64 == NULL)
        return false;
    char *salt = NULL;
    size_t salt_len = 0;
    char salted[32], client_key[32], server_key[32], stored_key[32];
    if (gsasl_base64_from(c->scram_salt_b64, strlen(c->scram_salt_b64), &salt, &salt_len) != GSASL_OK)
        return false;
    int rc = gsasl_scram_secrets_from_password(GSASL_HASH_SHA256, password, c->scram_iterations,
                                               salt, salt_len, salted, client_key, server_key,
                                               stored_key);
    free(salt);
    if (rc != GSASL_OK)
        return false;
    char *expected = NULL;
    size_t expected_len = 0;
    if (gsasl_base64_from(c->scram_stored_key_b64, strlen(c->scram_stored_key_b64), &expected,
                          &expected_len) != GSASL_OK)
        return false;
    bool ok = expected_len == 32 && CRYPTO_memcmp(expected, stored_key, 32) == 0;
    free(expected);
    return ok;
}

/* RFC 4422 3.4.1: we do not let one user act for another; an authzid must name the authid. */
static bool authzid_acceptable(const char *authzid, const char *authid)
{
    return authzid == NULL || authzid[0] == '\0' || strcmp(authzid, authid) == 0;
}

static int validate_simple(struct sasl_exchange *ex, Gsasl_session *sctx)
{
    const char *authid = gsasl_property_fast(sctx, GSASL_AUTHID);
    const char *password = gsasl_property_fast(sctx, GSASL_PASSWORD);
    struct sasl_credentials c;
    if (password == NULL)
        return GSASL_AUTHENTICATION_ERROR;
    /* An unknown user is checked against a decoy verifier: the same work, the same failure. */
    scram_credentials(ex, authid, &c);
    if (!authzid_acceptable(gsasl_property_fast(sctx, GSASL_AUTHZID), authid) ||
        !password_matches(&c, password))
        return GSASL_AUTHENTICATION_ERROR;
    return GSASL_OK;
}

/* EXTERNAL (RFC 4422 appendix A): the TLS client certificate names the user. The authzid, if
 * any, must be the user the certificate is mapped to. */
static int validate_external(struct sasl_exchange *ex, Gsasl_session *sctx)
{
    const char *authzid = gsasl_property_fast(sctx, GSASL_AUTHZID);
    struct sasl_credentials c;
    if (ex->tls_subject == NULL || authzid == NULL || authzid[0] == '\0')
        return GSASL_AUTHENTICATION_ERROR;
    if (!lookup(ex, authzid, &c) || c.tls_subject == NULL ||
        strcmp(c.tls_subject, ex->tls_subject) != 0)
        return GSASL_AUTHENTICATION_ERROR;
    ex->external = true;
    return GSASL_OK;
}

/* CRAM-MD5 (and SCRAM for a user with a stored password): a user without a secret, an unknown
 * one included, is checked against a decoy secret, so the response is computed and compared
 * all the same and fails like a wrong password. */
static int provide_password(struct sasl_exchange *ex, Gsasl_session *sctx)
{
    const char *authid = gsasl_property_fast(sctx, GSASL_AUTHID);
    struct sasl_credentials c;
    if (lookup(ex, authid, &c) && c.password != NULL)
        return gsasl_property_set(sctx, GSASL_PASSWORD, c.password);
    derive_labelled(ex->server, "CRAM", authid ? authid : "", 32, ex->decoy.cram_secret);
    return gsasl_property_set(sctx, GSASL_PASSWORD, ex->decoy.cram_secret);
}

static int on_property(Gsasl *ctx, Gsasl_session *sctx, Gsasl_property prop)
{
    struct sasl_exchange *ex = exchange_of(sctx);
    struct sasl_credentials c;
    switch (prop) {
    case GSASL_PASSWORD:
        return provide_password(ex, sctx);
    case GSASL_SCRAM_ITER:
    case GSASL_SCRAM_SALT:
    case GSASL_SCRAM_STOREDKEY:
    case GSASL_SCRAM_SERVERKEY:
        scram_credentials(ex, gsasl_property_fast(sctx, GSASL_AUTHID), &c);
        return provide_scram(sctx, prop, &c);
    case GSASL_CB_TLS_EXPORTER:
        return ex->tls_exporter_b64 ? gsasl_property_set(sctx, prop, ex->tls_exporter_b64)
                                    : GSASL_NO_CALLBACK;
    case GSASL_VALIDATE_SIMPLE:
        return validate_simple(ex, sctx);
    case GSASL_VALIDATE_EXTERNAL:
        return validate_external(ex, sctx);
    default:
        return GSASL_NO_CALLBACK;
    }
}

struct sasl_server *sasl_server_new(sasl_lookup_fn lookup_fn, void *arg)
{
    struct sasl_server *server = calloc(1, sizeof *server);
    if (server == NULL)
        return NULL;
    if (gsasl_init(&server->ctx) != GSASL_OK) {
        free(server);
        return NULL;
    }
    gsasl_callback_set(server->ctx, on_property);
    server->lookup = lookup_fn;
    server->lookup_arg = arg;
    if (RAND_bytes(server->secret, sizeof server->secret) != 1) {
        sasl_server_free(server);
        return NULL;
    }
    return server;
}

void sasl_server_set_secret(struct sasl_server *server, const unsigned char *secret)
{
    memcpy(server->secret, secret, sizeof server->secret);
}

void sasl_server_free(struct sasl_server *server)
{
    if (server == NULL)
        return;
    gsasl_done(server->ctx);
    OPENSSL_cleanse(server->secret, sizeof server->secret);
    free(server);
}

bool sasl_server_supports(const struct sasl_server *server, const char *mechanism)
{
    return gsasl_server_support_p(server->ctx, mechanism) != 0;
}

struct sasl_exchange *sasl_exchange_start(struct sasl_server *server, const char *mechanism,
                                          const char *tls_exporter_b64, const char *tls_subject)
{
    struct sasl_exchange *ex = calloc(1, sizeof *ex);
    if (ex == NULL)
        return NULL;
    ex->server = server;
    ex->tls_exporter_b64 = tls_exporter_b64 ? strdup(tls_exporter_b64) : NULL;
    ex->tls_subject = tls_subject ? strdup(tls_subject) : NULL;
    if (gsasl_server_start(server->ctx, mechanism, &ex->session) != GSASL_OK) {
        sasl_exchange_free(ex);
        return NULL;
    }
    gsasl_session_hook_set(ex->session, ex);
    return ex;
}

static void remember_user(struct sasl_exchange *ex)
{
    const char *name = ex->external ? gsasl_property_fast(ex->session, GSASL_AUTHZID)
                                    : gsasl_property_fast(ex->session, GSASL_AUTHID);
    ex->user = name ? strdup(name) : NULL;
}

enum sasl_result sasl_exchange_step(struct sasl_exchange *ex, const char *input_b64,
                                    char **output_b64)
{
    *output_b64 = NULL;
    int rc = gsasl_step64(ex->session, input_b64, output_b64);
    switch (rc) {
    case GSASL_OK:
        remember_user(ex);
        if (ex->user == NULL)
            return SASL_RESULT_FAILED;
        if (*output_b64 == NULL)
            *output_b64 = strdup("");
        return SASL_RESULT_OK;
    case GSASL_NEEDS_MORE:
        if (*output_b64 == NULL)
            *output_b64 = strdup("");
        return SASL_RESULT_CONTINUE;
    case GSASL_BASE64_ERROR:
    case GSASL_MECHANISM_PARSE_ERROR:
        free(*output_b64);
        *output_b64 = NULL;
        return SASL_RESULT_BAD_INPUT;
    case GSASL_MALLOC_ERROR:
    case GSASL_CRYPTO_ERROR:
        free(*output_b64);
        *output_b64 = NULL;
        return SASL_RESULT_UNAVAILABLE;
    default:
        free(*output_b64);
        *output_b64 = NULL;
        return SASL_RESULT_FAILED;
    }
}

const char *sasl_exchange_user(const struct sasl_exchange *ex)
{
    return ex->user;
}

void sasl_exchange_free(struct sasl_exchange *ex)
{
    if (ex == NULL)
        return;
    if (ex->session)
        gsasl_finish(ex->session);
    free(ex->tls_exporter_b64);
    free(ex->tls_subject);
    free(ex->user);
    free(ex);
}
