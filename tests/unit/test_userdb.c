/* SPDX-License-Identifier: ISC */
/* Users file: loading, every load error with its line, the mode check, shared domains, local
 * parts, and the writer (add, del, passwd) including the SCRAM-SHA-256 verifier it computes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <gsasl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/userdb.h"
#include "store/userdb_write.h"

/* Base64 of SHA-256-sized keys, for files that must load. */
#define KEY_A "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
#define SCRAM_OK "4096:c2FsdHNhbHQ=:" KEY_A ":" KEY_A

struct fixture {
    char dir[64];
    char path[128];
    char err[512];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/test_userdb.XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof f->path, "%s/users", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    DIR *d = opendir(f->dir);
    struct dirent *e;
    char p[512];
    while (d != NULL && (e = readdir(d)) != NULL) {
        snprintf(p, sizeof p, "%s/%s", f->dir, e->d_name);
        if (e->d_name[0] != '.')
            unlink(p);
    }
    if (d != NULL)
        closedir(d);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void write_file(const struct fixture *f, const char *text, mode_t mode)
{
    FILE *out = fopen(f->path, "w");
    assert_non_null(out);
    fputs(text, out);
    fclose(out);
    assert_int_equal(chmod(f->path, mode), 0);
}

static char *read_file(const struct fixture *f)
{
    FILE *in = fopen(f->path, "r");
    assert_non_null(in);
    char *text = calloc(1, 65536);
    size_t n = fread(text, 1, 65535, in);
    text[n] = '\0';
    fclose(in);
    return text;
}

static struct userdb *load_text(struct fixture *f, const char *text)
{
    write_file(f, text, 0600);
    return userdb_load(f->path, f->err, sizeof f->err);
}

/* ---- loading ---- */

static void test_valid_file(void **state)
{
    struct fixture *f = *state;
    struct userdb *db = load_text(f,
        "# provider users\n"
        "\n"
        "   # indented comment\n"
        "user alice domains=Example.ORG,example.net profile=fast cram=c2VjcmV0 "
        "scram-sha-256=" SCRAM_OK " tls-subject=alice.example\n"
        "user bob\tdomains=bob.example\r\n"
        "domain example.org local-parts=alice,Postmaster\n");
    assert_non_null(db);
    assert_int_equal(userdb_user_count(db), 2);

    const struct odmr_user *alice = userdb_find_user(db, "alice");
    assert_non_null(alice);
    assert_int_equal(alice->domain_count, 2);
    assert_string_equal(alice->domains[0], "example.org");     /* stored lower-case */
    assert_int_equal(alice->profile, ODMR_PROFILE_FAST);
    assert_true(alice->cram_enabled);
    assert_string_equal(alice->cram_secret, "secret");
    assert_int_equal(alice->scram_iterations, 4096);
    assert_string_equal(alice->scram_salt_b64, "c2FsdHNhbHQ=");
    assert_string_equal(alice->tls_subject, "alice.example");

    const struct odmr_user *bob = userdb_find_user(db, "bob");
    assert_non_null(bob);
    assert_int_equal(bob->profile, ODMR_PROFILE_COMPAT);
    assert_false(bob->cram_enabled);
    assert_null(bob->cram_secret);
    assert_int_equal(bob->scram_iterations, 0);
    assert_null(bob->tls_subject);

    assert_null(userdb_find_user(db, "Alice"));                /* names are case-sensitive */
    assert_null(userdb_find_user(db, "carol"));
    assert_true(userdb_domain_hosted(db, "EXAMPLE.org"));
    assert_true(userdb_domain_hosted(db, "bob.example"));
    assert_false(userdb_domain_hosted(db, "other.example"));
    assert_true(userdb_user_has_domain(alice, "Example.Net"));
    assert_false(userdb_user_has_domain(bob, "example.org"));
    assert_ptr_equal(userdb_user_at(db, 0), alice);
    assert_null(userdb_user_at(db, 2));
    userdb_free(db);
}

static void test_empty_file_is_valid(void **state)
{
    struct fixture *f = *state;
    struct userdb *db = load_text(f, "# nobody yet\n");
    assert_non_null(db);
    assert_int_equal(userdb_user_count(db), 0);
    assert_false(userdb_domain_hosted(db, "example.org"));
    assert_null(userdb_find_user(db, "alice"));
    userdb_free(db);
}

static const struct {
    const char *text;
    const char *error;     /* expected after "PATH" */
} load_errors[] = {
    {"group alice\n", ":1: unknown keyword \"group\""},
    {"# c\nuser\n", ":2: user: a name must follow"},
    {"user alice\n", ":1: user \"alice\" has no domains="},
    {"user alice domains=\n", ":1: domains: empty item"},
    {"user alice domains=a.example,,b.example\n", ":1: domains: empty item"},
    {"user alice domains=a.example,\n", ":1: domains: empty item"},
    {"user alice domains=bad_domain.example\n", ":1: domains: \"bad_domain.example\" is not"},
    {"user alice domains=a.example.\n", ":1: domains: \"a.example.\" is not"},
    {"user alice domains=[127.0.0.1]\n", ":1: domains: \"[127.0.0.1]\" is not"},
    {"user alice domains=a.example,A.example\n", ":1: domains: \"a.example\" listed twice"},
    {"user alice domains=a.example colour=blue\n", ":1: unknown field \"colour\""},
    {"user alice domains=a.example profile\n", ":1: expected key=value"},
    {"user alice domains=a.example profile=turbo\n", ":1: profile: \"turbo\""},
    {"user alice domains=a.example domains=b.example\n", ":1: domains= given twice"},
    {"user alice domains=a.example cram=!!!!\n", ":1: cram: not base64"},
    {"user alice domains=a.example cram=YQ\n", ":1: cram: not base64"},
    {"user alice domains=a.example cram=YQBi\n", ":1: cram: not base64"},    /* "a\0b" */
    {"user alice domains=a.example scram-sha-256=4096:c2FsdA==:" KEY_A "\n",
     ":1: scram-sha-256: expected"},
    {"user alice domains=a.example scram-sha-256=1000:c2FsdA==:" KEY_A ":" KEY_A "\n",
     ":1: scram-sha-256: expected"},
    {"user alice domains=a.example scram-sha-256=4096:c2FsdA==:YWJj:" KEY_A "\n",
     ":1: scram-sha-256: expected"},
    {"user alice domains=a.example scram-sha-256=4096::" KEY_A ":" KEY_A "\n",
     ":1: scram-sha-256: expected"},
    {"user alice domains=a.example scram-sha-256=" SCRAM_OK ":x\n", ":1: scram-sha-256: expected"},
    {"user al!ce domains=a.example\n", ":1: \"al!ce\": a user name"},
    {"user alice domains=a.example\n\nuser alice domains=b.example\n",
     ":3: user \"alice\" already defined on line 1"},
    {"user alice domains=a.example\nuser bob domains=B.example,A.EXAMPLE\n",
     ":2: domain a.example is already listed by user alice (line 1); add \"domain a.example "
     "shared=yes\""},
    {"domain a.example shared=no\nuser alice domains=a.example\nuser bob domains=a.example\n",
     ":3: domain a.example is already listed by user alice"},
    {"domain bad..example\n", ":1: \"bad..example\" is not a domain name"},
    {"domain a.example shared=maybe\n", ":1: shared: \"maybe\" is not yes or no"},
    {"domain a.example owner=alice\n", ":1: unknown field \"owner\""},
    {"domain a.example local-parts=\n", ":1: local-parts: empty item"},
    {"domain a.example local-parts=a@b\n", ":1: local-parts: \"a@b\" is not a local part"},
    {"domain a.example shared=yes shared=yes\n", ":1: shared= given twice"},
    {"domain a.example\ndomain A.example shared=yes\n",
     ":2: domain \"a.example\" already described on line 1"},
};

static void test_load_errors(void **state)
{
    struct fixture *f = *state;
    for (size_t i = 0; i < sizeof load_errors / sizeof load_errors[0]; i++) {
        struct userdb *db = load_text(f, load_errors[i].text);
        char expected[512];
        snprintf(expected, sizeof expected, "%s%s", f->path, load_errors[i].error);
        if (db != NULL || strncmp(f->err, expected, strlen(expected)) != 0)
            fail_msg("case %zu: %s\n  got:  %s\n  want: %s...", i, load_errors[i].text,
                     db ? "(loaded)" : f->err, expected);
        userdb_free(db);
    }
}

static void test_nul_octet_refused(void **state)
{
    struct fixture *f = *state;
    FILE *out = fopen(f->path, "w");
    assert_non_null(out);
    fwrite("user a\0b domains=a.example\n", 1, 27, out);
    fclose(out);
    chmod(f->path, 0600);
    assert_null(userdb_load(f->path, f->err, sizeof f->err));
    assert_non_null(strstr(f->err, ":1: NUL octet"));
}

static void test_missing_file(void **state)
{
    struct fixture *f = *state;
    assert_null(userdb_load(f->path, f->err, sizeof f->err));
    assert_non_null(strstr(f->err, "No such file"));
}

static void test_mode_check(void **state)
{
    struct fixture *f = *state;
    static const mode_t refused[] = {0640, 0604, 0660, 0644, 0610, 0601};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        write_file(f, "user alice domains=a.example\n", refused[i]);
        assert_null(userdb_load(f->path, f->err, sizeof f->err));
        assert_non_null(strstr(f->err, "run chmod 600"));
        assert_int_equal(strncmp(f->err, f->path, strlen(f->path)), 0);
    }
    write_file(f, "user alice domains=a.example\n", 0400);
    struct userdb *db = userdb_load(f->path, f->err, sizeof f->err);
    assert_non_null(db);
    userdb_free(db);
}

static void test_shared_domain(void **state)
{
    struct fixture *f = *state;
    /* The domain line may come after the users that share it. */
    struct userdb *db = load_text(f,
        "user alice domains=shared.example,a.example\n"
        "user bob domains=SHARED.example\n"
        "user carol domains=shared.example\n"
        "domain Shared.Example shared=yes\n");
    assert_non_null(db);
    assert_true(userdb_user_has_domain(userdb_find_user(db, "alice"), "shared.example"));
    assert_true(userdb_user_has_domain(userdb_find_user(db, "bob"), "shared.example"));
    assert_true(userdb_user_has_domain(userdb_find_user(db, "carol"), "shared.example"));
    assert_false(userdb_user_has_domain(userdb_find_user(db, "bob"), "a.example"));
    assert_true(userdb_domain_hosted(db, "shared.example"));
    userdb_free(db);
}

static void test_local_parts(void **state)
{
    struct fixture *f = *state;
    struct userdb *db = load_text(f,
        "user alice domains=listed.example,open.example\n"
        "domain LISTED.example local-parts=alice,Bob,postmaster\n"
        "domain open.example shared=yes\n");
    assert_non_null(db);
    assert_true(userdb_local_part_valid(db, "listed.example", "alice"));
    assert_true(userdb_local_part_valid(db, "Listed.Example", "BOB"));
    assert_true(userdb_local_part_valid(db, "listed.example", "PostMaster"));
    assert_false(userdb_local_part_valid(db, "listed.example", "carol"));
    assert_false(userdb_local_part_valid(db, "listed.example", "alic"));
    assert_true(userdb_local_part_valid(db, "open.example", "anyone"));
    assert_true(userdb_local_part_valid(db, "unlisted.example", "anyone"));
    userdb_free(db);
}

static void test_many_users_indexes(void **state)
{
    struct fixture *f = *state;
    size_t cap = 3000 * 64;
    char *text = malloc(cap), *p = text;
    for (int i = 2999; i >= 0; i--)
        p += snprintf(p, cap - (size_t)(p - text), "user u%d domains=d%d.example\n", i, i);
    struct userdb *db = load_text(f, text);
    free(text);
    assert_non_null(db);
    assert_int_equal(userdb_user_count(db), 3000);
    for (int i = 0; i < 3000; i += 7) {
        char name[16], domain[32];
        snprintf(name, sizeof name, "u%d", i);
        snprintf(domain, sizeof domain, "D%d.EXAMPLE", i);
        const struct odmr_user *u = userdb_find_user(db, name);
        assert_non_null(u);
        assert_string_equal(u->name, name);
        assert_true(userdb_domain_hosted(db, domain));
        assert_true(userdb_user_has_domain(u, domain));
    }
    assert_false(userdb_domain_hosted(db, "d3000.example"));
    userdb_free(db);
}

/* ---- the cram= encoding ---- */

static void test_secret_round_trip(void **state)
{
    static const char *secrets[] = {"a", "ab", "abc", "p@ss w0rd=:,#", "\xc3\xa9t\xc3\xa9",
                                    "tab\there"};
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++) {
        char *b64 = userdb_encode_secret(secrets[i]);
        assert_non_null(b64);
        assert_null(strpbrk(b64, " \t#"));
        char *back = userdb_decode_secret(b64);
        assert_non_null(back);
        assert_string_equal(back, secrets[i]);
        free(b64);
        free(back);
    }
    assert_null(userdb_decode_secret(""));
    assert_null(userdb_decode_secret("abc"));
    assert_null(userdb_decode_secret("ab=c"));
    assert_null(userdb_decode_secret("a b="));
    assert_null(userdb_decode_secret("AA=="));     /* a single NUL octet */
}

/* ---- writing ---- */

static enum userdb_change_status add(struct fixture *f, const char *name, const char *domains,
                                     const char *password, bool cram)
{
    struct userdb_new_user u = {name, domains, password, cram, ODMR_PROFILE_COMPAT};
    return userdb_add_user(f->path, &u, f->err, sizeof f->err);
}

static struct userdb *reload(struct fixture *f)
{
    struct userdb *db = userdb_load(f->path, f->err, sizeof f->err);
    if (db == NULL)
        fail_msg("%s", f->err);
    return db;
}

static size_t files_in_dir(const struct fixture *f)
{
    DIR *d = opendir(f->dir);
    size_t n = 0;
    for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    if (d != NULL)
        closedir(d);
    return n;
}

/* What gsasl computes from the password and the stored salt must equal the stored keys. */
static void assert_scram_matches(const struct odmr_user *u, const char *password)
{
    char *salt = NULL, *stored_b64 = NULL, *server_b64 = NULL;
    size_t salt_len = 0;
    char salted[GSASL_HASH_SHA256_SIZE], client_key[GSASL_HASH_SHA256_SIZE];
    char server_key[GSASL_HASH_SHA256_SIZE], stored_key[GSASL_HASH_SHA256_SIZE];
    assert_int_equal(u->scram_iterations, 4096);
    assert_int_equal(gsasl_base64_from(u->scram_salt_b64, strlen(u->scram_salt_b64), &salt,
                                       &salt_len), GSASL_OK);
    assert_int_equal(salt_len, 16);
    assert_int_equal(gsasl_scram_secrets_from_password(GSASL_HASH_SHA256, password,
                                                       u->scram_iterations, salt, salt_len,
                                                       salted, client_key, server_key,
                                                       stored_key), GSASL_OK);
    assert_int_equal(gsasl_base64_to(stored_key, sizeof stored_key, &stored_b64, NULL), GSASL_OK);
    assert_int_equal(gsasl_base64_to(server_key, sizeof server_key, &server_b64, NULL), GSASL_OK);
    assert_string_equal(u->scram_stored_key_b64, stored_b64);
    assert_string_equal(u->scram_server_key_b64, server_b64);
    free(salt);
    free(stored_b64);
    free(server_b64);
}

/* The verifier as the server side of GNU SASL takes it: gsasl 2.2 wants the salt, StoredKey and
 * ServerKey base64 (as stored; its header calls the keys hex, its own tests pass base64), and
 * must then accept the right password and refuse a wrong one with no password available. */
struct scram_peer {
    const struct odmr_user *user;   /* server side */
    const char *password;           /* client side */
};

static int scram_callback(Gsasl *ctx, Gsasl_session *sctx, Gsasl_property prop)
{
    const struct scram_peer *peer = gsasl_session_hook_get(sctx);
    char iterations[16];
    if (peer->user == NULL) {
        if (prop == GSASL_AUTHID)
            return gsasl_property_set(sctx, prop, "alice");
        return prop == GSASL_PASSWORD ? gsasl_property_set(sctx, prop, peer->password)
                                      : GSASL_NO_CALLBACK;
    }
    switch (prop) {
    case GSASL_SCRAM_ITER:
        snprintf(iterations, sizeof iterations, "%u", peer->user->scram_iterations);
        return gsasl_property_set(sctx, prop, iterations);
    case GSASL_SCRAM_SALT:
        return gsasl_property_set(sctx, prop, peer->user->scram_salt_b64);
    case GSASL_SCRAM_STOREDKEY:
        return gsasl_property_set(sctx, prop, peer->user->scram_stored_key_b64);
    case GSASL_SCRAM_SERVERKEY:
        return gsasl_property_set(sctx, prop, peer->user->scram_server_key_b64);
    default:
        return GSASL_NO_CALLBACK;      /* no GSASL_PASSWORD: the verifier alone must do */
    }
}

/* Runs client-first, server-first, client-final, server-final; returns the server's verdict. */
static int scram_exchange(const struct odmr_user *user, const char *password)
{
    Gsasl *ctx = NULL;
    Gsasl_session *client = NULL, *server = NULL;
    struct scram_peer client_peer = {NULL, password}, server_peer = {user, NULL};
    assert_int_equal(gsasl_init(&ctx), GSASL_OK);
    gsasl_callback_set(ctx, scram_callback);
    assert_int_equal(gsasl_client_start(ctx, "SCRAM-SHA-256", &client), GSASL_OK);
    assert_int_equal(gsasl_server_start(ctx, "SCRAM-SHA-256", &server), GSASL_OK);
    gsasl_session_hook_set(client, &client_peer);
    gsasl_session_hook_set(server, &server_peer);
    char *c1 = NULL, *s1 = NULL, *c2 = NULL, *s2 = NULL;
    assert_int_equal(gsasl_step64(client, "", &c1), GSASL_NEEDS_MORE);
    assert_int_equal(gsasl_step64(server, c1, &s1), GSASL_NEEDS_MORE);
    assert_int_equal(gsasl_step64(client, s1, &c2), GSASL_NEEDS_MORE);
    int verdict = gsasl_step64(server, c2, &s2);
    free(c1);
    free(s1);
    free(c2);
    free(s2);
    gsasl_finish(client);
    gsasl_finish(server);
    gsasl_done(ctx);
    return verdict;
}

static void test_scram_verifier_accepted_by_gsasl_server(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(add(f, "alice", "a.example", "correct horse", false), USERDB_CHANGED);
    struct userdb *db = reload(f);
    const struct odmr_user *alice = userdb_find_user(db, "alice");
    assert_int_equal(scram_exchange(alice, "correct horse"), GSASL_OK);
    assert_int_equal(scram_exchange(alice, "battery staple"), GSASL_AUTHENTICATION_ERROR);
    userdb_free(db);
}

static void test_add_creates_file(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(add(f, "alice", "A.Example,b.example", "pass word", true), USERDB_CHANGED);
    struct stat sb;
    assert_int_equal(stat(f->path, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0600);
    assert_int_equal(files_in_dir(f), 1);              /* no temporary file left */
    struct userdb *db = reload(f);
    const struct odmr_user *alice = userdb_find_user(db, "alice");
    assert_non_null(alice);
    assert_string_equal(alice->domains[0], "a.example");
    assert_true(alice->cram_enabled);
    assert_string_equal(alice->cram_secret, "pass word");
    assert_scram_matches(alice, "pass word");
    char *text = read_file(f);
    assert_non_null(strstr(text, "domains=a.example,b.example"));   /* written lower-case */
    free(text);
    userdb_free(db);
}

static void test_add_del_passwd_round_trip(void **state)
{
    struct fixture *f = *state;
    const char *original =
        "# Users of example.org -- keep this comment\n"
        "\n"
        "domain shared.example shared=yes\n"
        "user carol domains=c.example,shared.example profile=fast tls-subject=carol.example\n"
        "  # indented comment\n";
    write_file(f, original, 0600);
    assert_int_equal(add(f, "alice", "a.example,shared.example", "alice-pw", true), USERDB_CHANGED);
    assert_int_equal(add(f, "bob", "b.example", "bob-pw", false), USERDB_CHANGED);

    struct userdb *db = reload(f);
    assert_int_equal(userdb_user_count(db), 3);
    const struct odmr_user *bob = userdb_find_user(db, "bob");
    assert_false(bob->cram_enabled);
    assert_null(bob->cram_secret);
    assert_scram_matches(bob, "bob-pw");
    assert_scram_matches(userdb_find_user(db, "alice"), "alice-pw");
    userdb_free(db);

    char *text = read_file(f);
    assert_int_equal(strncmp(text, original, strlen(original)), 0);    /* kept byte for byte */
    free(text);

    /* passwd: new secrets, other fields kept, CRAM-MD5 stays as it was. */
    assert_int_equal(userdb_set_password(f->path, "alice", "alice-new", f->err, sizeof f->err),
                     USERDB_CHANGED);
    assert_int_equal(userdb_set_password(f->path, "bob", "bob-new", f->err, sizeof f->err),
                     USERDB_CHANGED);
    assert_int_equal(userdb_set_password(f->path, "carol", "carol-pw", f->err, sizeof f->err),
                     USERDB_CHANGED);
    db = reload(f);
    const struct odmr_user *alice = userdb_find_user(db, "alice");
    assert_string_equal(alice->cram_secret, "alice-new");
    assert_scram_matches(alice, "alice-new");
    assert_false(userdb_find_user(db, "bob")->cram_enabled);
    assert_scram_matches(userdb_find_user(db, "bob"), "bob-new");
    const struct odmr_user *carol = userdb_find_user(db, "carol");
    assert_int_equal(carol->profile, ODMR_PROFILE_FAST);
    assert_string_equal(carol->tls_subject, "carol.example");
    assert_false(carol->cram_enabled);
    assert_scram_matches(carol, "carol-pw");
    userdb_free(db);

    /* del: only that line goes. */
    assert_int_equal(userdb_delete_user(f->path, "alice", f->err, sizeof f->err), USERDB_CHANGED);
    assert_int_equal(userdb_delete_user(f->path, "bob", f->err, sizeof f->err), USERDB_CHANGED);
    assert_int_equal(userdb_delete_user(f->path, "carol", f->err, sizeof f->err), USERDB_CHANGED);
    text = read_file(f);
    assert_string_equal(text, "# Users of example.org -- keep this comment\n\n"
                              "domain shared.example shared=yes\n  # indented comment\n");
    free(text);
    assert_int_equal(files_in_dir(f), 1);
}

static void test_write_refusals_leave_file_alone(void **state)
{
    struct fixture *f = *state;
    const char *original = "# x\nuser alice domains=a.example cram=cHc=\n";
    write_file(f, original, 0600);
    assert_int_equal(add(f, "alice", "z.example", "pw", true), USERDB_EXISTS);
    assert_int_equal(add(f, "bob", "a.example", "pw", true), USERDB_INVALID);  /* not shared */
    assert_non_null(strstr(f->err, "already listed by user alice"));
    assert_int_equal(strncmp(f->err, f->path, strlen(f->path)), 0);     /* not the temp name */
    assert_int_equal(add(f, "bob", "bad_domain", "pw", true), USERDB_INVALID);
    assert_non_null(strstr(f->err, "bad_domain"));
    assert_int_equal(add(f, "bob", "b.example,", "pw", true), USERDB_INVALID);
    assert_int_equal(add(f, "b b", "b.example", "pw", true), USERDB_INVALID);
    assert_int_equal(add(f, "bob", "b.example", "", true), USERDB_INVALID);
    assert_int_equal(add(f, "bob", "b.example", "two\nlines", true), USERDB_INVALID);
    assert_int_equal(userdb_delete_user(f->path, "bob", f->err, sizeof f->err),
                     USERDB_NO_SUCH_USER);
    assert_int_equal(userdb_delete_user(f->path, "alic", f->err, sizeof f->err),
                     USERDB_NO_SUCH_USER);
    assert_int_equal(userdb_set_password(f->path, "bob", "pw", f->err, sizeof f->err),
                     USERDB_NO_SUCH_USER);
    assert_int_equal(userdb_set_password(f->path, "alice", "", f->err, sizeof f->err),
                     USERDB_INVALID);
    char *text = read_file(f);
    assert_string_equal(text, original);
    free(text);
    assert_int_equal(files_in_dir(f), 1);
}

static void test_add_to_shared_domain(void **state)
{
    struct fixture *f = *state;
    write_file(f, "domain s.example shared=yes\n", 0600);
    assert_int_equal(add(f, "alice", "s.example", "pw1", true), USERDB_CHANGED);
    assert_int_equal(add(f, "bob", "S.EXAMPLE", "pw2", true), USERDB_CHANGED);
    struct userdb *db = reload(f);
    assert_true(userdb_user_has_domain(userdb_find_user(db, "bob"), "s.example"));
    userdb_free(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_valid_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_file_is_valid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nul_octet_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mode_check, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared_domain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_local_parts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_users_indexes, setup, teardown),
        cmocka_unit_test(test_secret_round_trip),
        cmocka_unit_test_setup_teardown(test_add_creates_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_add_del_passwd_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_refusals_leave_file_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_add_to_shared_domain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scram_verifier_accepted_by_gsasl_server, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
