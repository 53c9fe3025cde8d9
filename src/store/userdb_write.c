/* SPDX-License-Identifier: ISC */
/* Atomic rewrites of the users file (docs/users.md, "Changing the file").
 *
 * Every change is read-modify-write of the whole file under an exclusive flock(2) on the
 * file's directory, so two odmrctl runs cannot lose each other's change. The new content goes
 * to a temporary file in the same directory (mode 0600), is fsync'ed, is loaded with
 * userdb_load() as a check, is renamed over the old file, and the directory is fsync'ed so the
 * rename itself survives a crash. Lines the change does not touch (comments, blank lines,
 * domain lines, other users) are written back byte for byte. */
#include "store/userdb_write.h"

#include <errno.h>
#include <fcntl.h>
#include <gsasl.h>
#include <libgen.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/smtp_grammar.h"
#include "platform/sasl.h"

/* RFC 7677 section 4: at least 4096 iterations for SCRAM-SHA-256; RFC 5802 section 5.1
 * wants a random salt; 16 octets is plenty. */
enum { SCRAM_ITERATIONS = SASL_SCRAM_ITERATIONS, SCRAM_SALT_LEN = SASL_SCRAM_SALT_LEN };

struct lines {
    char **items;
    size_t count;
};

static void lines_free(struct lines *l)
{
    for (size_t i = 0; i < l->count; i++) {
        OPENSSL_cleanse(l->items[i], strlen(l->items[i]));    /* lines hold secrets */
        free(l->items[i]);
    }
    free(l->items);
    l->items = NULL;
    l->count = 0;
}

/* Takes ownership of line (freed on failure). */
static int lines_push(struct lines *l, char *line)
{
    char **grown = line != NULL ? realloc(l->items, (l->count + 1) * sizeof *grown) : NULL;
    if (grown == NULL) {
        free(line);
        return -1;
    }
    l->items = grown;
    l->items[l->count++] = line;
    return 0;
}

static void lines_remove(struct lines *l, size_t at)
{
    OPENSSL_cleanse(l->items[at], strlen(l->items[at]));
    free(l->items[at]);
    memmove(&l->items[at], &l->items[at + 1], (l->count - at - 1) * sizeof l->items[0]);
    l->count--;
}

/* A missing file reads as an empty one, so "user add" can create it. Any other failure,
 * including running out of memory half-way, is an error: a partial read written back would
 * lose users. */
static int read_lines(const char *path, struct lines *l, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    ssize_t n;
    while (rc == 0 && (n = getline(&line, &cap, f)) > 0) {
        /* A NUL would cut the line short when written back: refuse, never truncate. */
        if (strlen(line) != (size_t)n) {
            snprintf(err, errlen, "%s: NUL octet in a line (nothing changed)", path);
            rc = -1;
            break;
        }
        line[strcspn(line, "\n")] = '\0';
        rc = lines_push(l, strdup(line));
        if (rc != 0)
            snprintf(err, errlen, "%s: out of memory", path);
    }
    if (rc == 0 && ferror(f)) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        rc = -1;
    }
    if (line != NULL)
        OPENSSL_cleanse(line, cap);
    free(line);
    fclose(f);
    return rc;
}

/* Index of the "user NAME ..." line, or -1. */
static long find_user_line(const struct lines *l, const char *name)
{
    size_t name_len = strlen(name);
    for (size_t i = 0; i < l->count; i++) {
        const char *p = l->items[i] + strspn(l->items[i], " \t");
        if (strncmp(p, "user", 4) != 0 || (p[4] != ' ' && p[4] != '\t'))
            continue;
        p += 4 + strspn(p + 4, " \t");
        if (strncmp(p, name, name_len) == 0 &&
            (p[name_len] == ' ' || p[name_len] == '\t' || p[name_len] == '\0'))
            return (long)i;
    }
    return -1;
}

/* ---- the atomic replacement ---- */

static int open_directory_of(const char *path)
{
    char copy[4096];
    if ((size_t)snprintf(copy, sizeof copy, "%s", path) >= sizeof copy) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

static int write_fully(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static int write_lines(int fd, const struct lines *l)
{
    for (size_t i = 0; i < l->count; i++)
        if (write_fully(fd, l->items[i], strlen(l->items[i])) != 0 || write_fully(fd, "\n", 1) != 0)
            return -1;
    return fsync(fd);
}

/* The new file keeps the old one's mode (0600 or 0400) and, run by root, its owner: it belongs
 * to the account odmrd runs as, which must still be able to read it. A first file is 0600. */
static int keep_owner_and_mode(int fd, const struct stat *old)
{
    if (old == NULL)
        return fchmod(fd, 0600);
    if (fchmod(fd, old->st_mode & 07777) != 0)
        return -1;
    return geteuid() == 0 ? fchown(fd, old->st_uid, old->st_gid) : 0;
}

/* "TMP:LINE: reason" from the check load becomes "PATH:LINE: reason". */
static void blame_real_path(char *err, size_t errlen, const char *tmp, const char *path)
{
    size_t tmp_len = strlen(tmp);
    if (strncmp(err, tmp, tmp_len) != 0)
        return;
    char reason[512];
    snprintf(reason, sizeof reason, "%s", err + tmp_len);
    snprintf(err, errlen, "%s%s (nothing changed)", path, reason);
}

static enum userdb_change_status install_file(const char *path, const char *tmp, int dir_fd,
                                              char *err, size_t errlen)
{
    struct userdb *check = userdb_load(tmp, err, errlen);
    if (check == NULL) {
        blame_real_path(err, errlen, tmp, path);
        return USERDB_INVALID;
    }
    userdb_free(check);
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: rename: %s", path, strerror(errno));
        return USERDB_IO_ERROR;
    }
    if (fsync(dir_fd) != 0) {
        snprintf(err, errlen, "%s: changed, but fsync of its directory failed: %s", path,
                 strerror(errno));
        return USERDB_IO_ERROR;
    }
    return USERDB_CHANGED;
}

static enum userdb_change_status replace_file(const char *path, const struct lines *l,
                                              const struct stat *old, int dir_fd, char *err,
                                              size_t errlen)
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.XXXXXX", path) >= sizeof tmp) {
        snprintf(err, errlen, "%s: path too long", path);
        return USERDB_IO_ERROR;
    }
    int fd = mkostemp(tmp, O_CLOEXEC);          /* created 0600 */
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot create a temporary file: %s", path, strerror(errno));
        return USERDB_IO_ERROR;
    }
    if (keep_owner_and_mode(fd, old) != 0 || write_lines(fd, l) != 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return USERDB_IO_ERROR;
    }
    if (close(fd) != 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        unlink(tmp);
        return USERDB_IO_ERROR;
    }
    enum userdb_change_status st = install_file(path, tmp, dir_fd, err, errlen);
    if (st == USERDB_INVALID || (st == USERDB_IO_ERROR && access(tmp, F_OK) == 0))
        unlink(tmp);
    return st;
}

/* ---- one change = lock, read, edit, replace, unlock ---- */

typedef enum userdb_change_status (*line_editor)(struct lines *l, const void *arg, char *err,
                                                 size_t errlen);

/* The file as it is must load as odmrd would load it: a line odmrctl cannot parse (a NUL, an
 * unknown field ...) would otherwise be rewritten without the part it did not understand.
 * *exists is false for a missing file (the first "user add" creates it). */
static enum userdb_change_status check_current(const char *path, struct stat *st, bool *exists,
                                               char *err, size_t errlen)
{
    char why[512];
    *exists = stat(path, st) == 0;
    if (!*exists && errno == ENOENT)
        return USERDB_CHANGED;
    if (!*exists) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return USERDB_IO_ERROR;
    }
    struct userdb *db = userdb_load(path, why, sizeof why);
    if (db == NULL) {
        snprintf(err, errlen, "%s; odmrctl changes only a users file that loads: fix it with an "
                 "editor first (nothing changed)", why);
        return USERDB_BROKEN;
    }
    userdb_free(db);
    return USERDB_CHANGED;
}

static enum userdb_change_status change_file(const char *path, line_editor edit,
                                             const void *arg, char *err, size_t errlen)
{
    int dir_fd = open_directory_of(path);
    if (dir_fd < 0 || flock(dir_fd, LOCK_EX) != 0) {
        snprintf(err, errlen, "%s: cannot open or lock its directory: %s", path, strerror(errno));
        if (dir_fd >= 0)
            close(dir_fd);
        return USERDB_IO_ERROR;
    }
    struct lines l = {0};
    struct stat old;
    bool exists;
    enum userdb_change_status st = check_current(path, &old, &exists, err, errlen);
    if (st == USERDB_CHANGED)
        st = read_lines(path, &l, err, errlen) == 0 ? USERDB_CHANGED : USERDB_IO_ERROR;
    if (st == USERDB_CHANGED)
        st = edit(&l, arg, err, errlen);
    if (st == USERDB_CHANGED)
        st = replace_file(path, &l, exists ? &old : NULL, dir_fd, err, errlen);
    lines_free(&l);
    close(dir_fd);                  /* releases the lock */
    return st;
}

/* ---- secrets ---- */

static int base64_field(const char *octets, size_t len, char **out)
{
    return gsasl_base64_to(octets, len, out, NULL) == GSASL_OK ? 0 : -1;
}

/* Builds " cram=B64 scram-sha-256=ITER:SALT:STOREDKEY:SERVERKEY" (RFC 5802 section 3:
 * StoredKey = H(ClientKey), ServerKey = HMAC(SaltedPassword, "Server Key")). */
static int secret_fields(const char *password, bool cram, char *out, size_t outlen)
{
    unsigned char salt[SCRAM_SALT_LEN];
    char salted[GSASL_HASH_SHA256_SIZE], client_key[GSASL_HASH_SHA256_SIZE];
    char server_key[GSASL_HASH_SHA256_SIZE], stored_key[GSASL_HASH_SHA256_SIZE];
    const size_t key_len = gsasl_hash_length(GSASL_HASH_SHA256);
    char *salt_b64 = NULL, *stored_b64 = NULL, *server_b64 = NULL, *cram_b64 = NULL;
    int rc = -1;
    if (RAND_bytes(salt, sizeof salt) == 1 &&
        gsasl_scram_secrets_from_password(GSASL_HASH_SHA256, password, SCRAM_ITERATIONS,
                                          (const char *)salt, sizeof salt, salted, client_key,
                                          server_key, stored_key) == GSASL_OK &&
        base64_field((const char *)salt, sizeof salt, &salt_b64) == 0 &&
        base64_field(stored_key, key_len, &stored_b64) == 0 &&
        base64_field(server_key, key_len, &server_b64) == 0 &&
        (!cram || (cram_b64 = userdb_encode_secret(password)) != NULL)) {
        int n = snprintf(out, outlen, "%s%s scram-sha-256=%d:%s:%s:%s", cram ? " cram=" : "",
                         cram ? cram_b64 : "", SCRAM_ITERATIONS, salt_b64, stored_b64,
                         server_b64);
        rc = n > 0 && (size_t)n < outlen ? 0 : -1;
    }
    OPENSSL_cleanse(salted, sizeof salted);
    OPENSSL_cleanse(client_key, sizeof client_key);
    if (cram_b64 != NULL)
        OPENSSL_cleanse(cram_b64, strlen(cram_b64));
    free(salt_b64);
    free(stored_b64);
    free(server_b64);
    free(cram_b64);
    return rc;
}

static bool password_valid(const char *password, char *err, size_t errlen)
{
    if (password[0] == '\0') {
        snprintf(err, errlen, "the password must not be empty");
        return false;
    }
    if (strpbrk(password, "\r\n") != NULL) {
        snprintf(err, errlen, "the password must be one line");
        return false;
    }
    return true;
}

/* "Example.ORG,example.net" -> "example.org,example.net" after checking each. */
static char *normalized_domains(const char *list, char *err, size_t errlen)
{
    char *copy = strdup(list);
    if (copy == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (char *d = copy, *next; d != NULL; d = next) {
        next = strchr(d, ',');
        if (next != NULL)
            *next = '\0';
        bool ok = smtp_domain_valid(d, false);
        if (ok)
            smtp_domain_lower(d);
        else
            snprintf(err, errlen, "\"%s\" is not a domain name", d);
        if (next != NULL)
            *next++ = ',';
        if (!ok) {
            free(copy);
            return NULL;
        }
    }
    return copy;
}

/* ---- the changes ---- */

static enum userdb_change_status append_user(struct lines *l, const void *arg, char *err,
                                             size_t errlen)
{
    const struct userdb_new_user *user = arg;
    char secrets[1024], *line = NULL;
    if (find_user_line(l, user->name) >= 0) {
        snprintf(err, errlen, "user %s already exists", user->name);
        return USERDB_EXISTS;
    }
    char *domains = normalized_domains(user->domains, err, errlen);
    if (domains == NULL)
        return USERDB_INVALID;
    int rc = secret_fields(user->password, user->cram, secrets, sizeof secrets);
    if (rc == 0 && asprintf(&line, "user %s domains=%s profile=%s%s", user->name, domains,
                            user->profile == ODMR_PROFILE_FAST ? "fast" : "compat", secrets) < 0)
        rc = -1;
    OPENSSL_cleanse(secrets, sizeof secrets);
    free(domains);
    if (rc != 0 || lines_push(l, line) != 0) {
        snprintf(err, errlen, "cannot compute the secrets");
        return USERDB_IO_ERROR;
    }
    return USERDB_CHANGED;
}

enum userdb_change_status userdb_add_user(const char *path, const struct userdb_new_user *user,
                                          char *err, size_t errlen)
{
    if (!userdb_user_name_valid(user->name)) {
        snprintf(err, errlen, "\"%s\": a user name is 1 to %d of A-Z a-z 0-9 . _ @ + -",
                 user->name, USERDB_NAME_MAX);
        return USERDB_INVALID;
    }
    if (!password_valid(user->password, err, errlen))
        return USERDB_INVALID;
    return change_file(path, append_user, user, err, errlen);
}

static enum userdb_change_status remove_user(struct lines *l, const void *arg, char *err,
                                             size_t errlen)
{
    const char *name = arg;
    long at = find_user_line(l, name);
    if (at < 0) {
        snprintf(err, errlen, "no user %s", name);
        return USERDB_NO_SUCH_USER;
    }
    lines_remove(l, (size_t)at);
    return USERDB_CHANGED;
}

enum userdb_change_status userdb_delete_user(const char *path, const char *name, char *err,
                                             size_t errlen)
{
    return change_file(path, remove_user, name, err, errlen);
}

/* Keeps every field but the secrets, in order; CRAM-MD5 stays enabled only if it was. */
static char *line_with_new_secrets(const char *old, const char *password)
{
    char secrets[1024], *kept = NULL, *line = NULL;
    size_t kept_len = 0;
    FILE *f = open_memstream(&kept, &kept_len);
    char *copy = strdup(old), *save = NULL;
    bool cram = false;
    if (f != NULL && copy != NULL)
        for (char *tok = strtok_r(copy, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
            if (strncmp(tok, "cram=", 5) == 0)
                cram = true;
            else if (strncmp(tok, "scram-sha-256=", 14) != 0)
                fprintf(f, "%s%s", ftell(f) > 0 ? " " : "", tok);
        }
    if (f != NULL)
        fclose(f);
    if (copy != NULL) {
        OPENSSL_cleanse(copy, strlen(old));
        free(copy);
    }
    if (kept != NULL && secret_fields(password, cram, secrets, sizeof secrets) == 0) {
        if (asprintf(&line, "%s%s", kept, secrets) < 0)
            line = NULL;
        OPENSSL_cleanse(secrets, sizeof secrets);
    }
    free(kept);
    return line;
}

struct password_change {
    const char *name;
    const char *password;
};

static enum userdb_change_status replace_secrets(struct lines *l, const void *arg, char *err,
                                                 size_t errlen)
{
    const struct password_change *change = arg;
    long at = find_user_line(l, change->name);
    if (at < 0) {
        snprintf(err, errlen, "no user %s", change->name);
        return USERDB_NO_SUCH_USER;
    }
    char *line = line_with_new_secrets(l->items[at], change->password);
    if (line == NULL) {
        snprintf(err, errlen, "cannot compute the secrets");
        return USERDB_IO_ERROR;
    }
    OPENSSL_cleanse(l->items[at], strlen(l->items[at]));
    free(l->items[at]);
    l->items[at] = line;
    return USERDB_CHANGED;
}

enum userdb_change_status userdb_set_password(const char *path, const char *name,
                                              const char *password, char *err, size_t errlen)
{
    if (!password_valid(password, err, errlen))
        return USERDB_INVALID;
    struct password_change change = {name, password};
    return change_file(path, replace_secrets, &change, err, errlen);
}
