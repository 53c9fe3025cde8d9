/* SPDX-License-Identifier: ISC */
/* The users file: ODMR users, their secrets and their domains (docs/users.md).
 * Loaded whole into memory; reloaded on SIGHUP by building a new userdb and swapping. */
#ifndef ODMR_STORE_USERDB_H
#define ODMR_STORE_USERDB_H

#include <stdbool.h>
#include <stddef.h>

enum odmr_profile { ODMR_PROFILE_COMPAT = 0, ODMR_PROFILE_FAST = 1 };

struct odmr_user {
    char *name;
    char **domains;            /* lower-case, ASCII LDH */
    size_t domain_count;
    enum odmr_profile profile;
    bool cram_enabled;         /* CRAM-MD5 allowed: a plaintext-equivalent secret is stored */
    char *cram_secret;         /* the password itself (NULL when CRAM-MD5 is disabled) */
    /* SCRAM-SHA-256 verifier (RFC 7677/5802): iteration count, salt and keys, base64. */
    unsigned scram_iterations;
    char *scram_salt_b64;
    char *scram_stored_key_b64;
    char *scram_server_key_b64;
    char *tls_subject;         /* certificate subject CN mapped to this user for EXTERNAL, or NULL */
};

struct userdb;

/* Loads and validates the file. Refuses a file that is group- or world-accessible, has an
 * unknown keyword, a bad domain, or a domain claimed by two users without "shared".
 * On failure returns NULL and writes "PATH:LINE: reason" into err. */
struct userdb *userdb_load(const char *path, char *err, size_t errlen);
void userdb_free(struct userdb *db);

const struct odmr_user *userdb_find_user(const struct userdb *db, const char *name);
/* Is the domain (any case) hosted by some user? */
bool userdb_domain_hosted(const struct userdb *db, const char *domain);
/* Does user own (or share) the domain (any case)? */
bool userdb_user_has_domain(const struct odmr_user *user, const char *domain);
/* Recipient check for a hosted domain: true when the domain has no list of valid local
 * parts, or local_part (case-insensitive) is in it. */
bool userdb_local_part_valid(const struct userdb *db, const char *domain, const char *local_part);
size_t userdb_user_count(const struct userdb *db);
const struct odmr_user *userdb_user_at(const struct userdb *db, size_t index);

/* The cram= field keeps the secret base64-encoded (any octet may appear in a password).
 * Both return a malloc'ed string, or NULL on bad input. */
char *userdb_decode_secret(const char *b64);
char *userdb_encode_secret(const char *secret);

/* A user name (the SASL authentication identity): 1 to 64 of A-Z a-z 0-9 . _ @ + -,
 * compared case-sensitively. */
enum { USERDB_NAME_MAX = 64 };
bool userdb_user_name_valid(const char *name);

#endif
