/* Atomic rewrites of the users file. */
#include "store/userdb_write.h"

#include <errno.h>
#include <fcntl.h>
#include <gsasl.h>
#include <libgen.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* RFC 7677 4: at least 4096 iterations for SCRAM-SHA-256. */
enum { SCRAM_ITERATIONS = 4096, SCRAM_SALT_LEN = 16 };

struct lines {
    char **items;
    size_t count;
};

static void lines_free(struct lines *l)
{
    for (size_t i = 0; i < l->count; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->count = 0;
}

static int lines_push(struct lines *l, char *line)
{
    char **grown = realloc(l->items, (l->count + 1) * sizeof *grown);
    if (grown == NULL || line == NULL) {
        free(line);
        return -1;
    }
    l->items = grown;
    l->items[l->count++] = line;
    return 0;
}

/* A missing file is an empty one: "user add" creates it. */
static int read_lines(const char *path, struct lines *l, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        line[strcspn(line, "\n")] = '\0';
        if (lines_push(l, strdup(line)) != 0)
            break;
    }
    free(line);
    fclose(f);
    return 0;
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
        if (strncmp(p, name, name_len) == 0 && (p[name_len] == ' ' || p[name_len] == '\t' ||
                                                p[name_len] == '\0'))
            return (long)i;
    }
    return -1;
}

static int fsync_dir_of(const char *path)
{
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", path);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int write_all(int fd, const struct lines *l)
{
    for (size_t i = 0; i < l->count; i++) {
        size_t len = strlen(l->items[i]);
        if (write(fd, l->items[i], len) != (ssize_t)len || write(fd, "\n", 1) != 1)
            return -1;
    }
    return fsync(fd);
}

/* Writes path.tmp, checks it loads, renames it over path, fsyncs the directory. */
static enum userdb_change_status replace_file(const char *path, const struct lines *l, char *err,
                                              size_t errlen)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    struct stat old;
    /* Run by root, keep the owner: the file belongs to the account odmrd runs as. */
    if (fd >= 0 && geteuid() == 0 && stat(path, &old) == 0 && fchown(fd, old.st_uid, old.st_gid) != 0)
        snprintf(err, errlen, "%s: cannot keep the owner: %s", path, strerror(errno));
    if (fd < 0 || write_all(fd, l) != 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        unlink(tmp);
        return USERDB_IO_ERROR;
    }
    close(fd);
    struct userdb *check = userdb_load(tmp, err, errlen);
    if (check == NULL) {
        unlink(tmp);
        return USERDB_INVALID;
    }
    userdb_free(check);
    if (rename(tmp, path) != 0 || fsync_dir_of(path) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        unlink(tmp);
        return USERDB_IO_ERROR;
    }
    return USERDB_CHANGED;
}

static bool name_valid(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > 64)
        return false;
    return strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@+-") == len;
}

/* Builds " cram=... scram-sha-256=ITER:SALT:STORED:SERVER" for password. */
static int secret_fields(const char *password, bool cram, char *out, size_t outlen)
{
    unsigned char salt[SCRAM_SALT_LEN];
    char salted[32], client_key[32], server_key[32], stored_key[32];
    char *salt_b64 = NULL, *stored_b64 = NULL, *server_b64 = NULL, *cram_b64 = NULL;
    int rc = -1;
    if (RAND_bytes(salt, sizeof salt) != 1 ||
        gsasl_scram_secrets_from_password(GSASL_HASH_SHA256, password, SCRAM_ITERATIONS,
                                          (const char *)salt, sizeof salt, salted, client_key,
                                          server_key, stored_key) != GSASL_OK)
        return -1;
    if (gsasl_base64_to((const char *)salt, sizeof salt, &salt_b64, NULL) == GSASL_OK &&
        gsasl_base64_to(stored_key, 32, &stored_b64, NULL) == GSASL_OK &&
        gsasl_base64_to(server_key, 32, &server_b64, NULL) == GSASL_OK &&
        (!cram || (cram_b64 = userdb_encode_secret(password)) != NULL)) {
        snprintf(out, outlen, "%s%s scram-sha-256=%d:%s:%s:%s", cram ? " cram=" : "",
                 cram ? cram_b64 : "", SCRAM_ITERATIONS, salt_b64, stored_b64, server_b64);
        rc = 0;
    }
    free(salt_b64);
    free(stored_b64);
    free(server_b64);
    free(cram_b64);
    return rc;
}

static bool password_valid(const char *password, char *err, size_t errlen)
{
    if (password[0] != '\0' && strpbrk(password, "\r\n") == NULL)
        return true;
    snprintf(err, errlen, "the password must not be empty");
    return false;
}

enum userdb_change_status userdb_add_user(const char *path, const struct userdb_new_user *user,
                                          char *err, size_t errlen)
{
    struct lines l = {0};
    char secrets[1024], *line;
    if (!name_valid(user->name)) {
        snprintf(err, errlen, "\"%s\": a user name is 1-64 of A-Z a-z 0-9 . _ @ + -", user->name);
        return USERDB_INVALID;
    }
    if (!password_valid(user->password, err, errlen))
        return USERDB_INVALID;
    if (read_lines(path, &l, err, errlen) != 0)
        return USERDB_IO_ERROR;
    if (find_user_line(&l, user->name) >= 0) {
        snprintf(err, errlen, "user %s already exists", user->name);
        lines_free(&l);
        return USERDB_EXISTS;
    }
    if (secret_fields(user->password, user->cram, secrets, sizeof secrets) != 0 ||
        asprintf(&line, "user %s domains=%s profile=%s%s", user->name, user->domains,
                 user->profile == ODMR_PROFILE_FAST ? "fast" : "compat", secrets) < 0 ||
        lines_push(&l, line) != 0) {
        snprintf(err, errlen, "cannot compute the secrets");
        lines_free(&l);
        return USERDB_IO_ERROR;
    }
    enum userdb_change_status st = replace_file(path, &l, err, errlen);
    lines_free(&l);
    return st;
}

enum userdb_change_status userdb_delete_user(const char *path, const char *name, char *err,
                                             size_t errlen)
{
    struct lines l = {0};
    if (read_lines(path, &l, err, errlen) != 0)
        return USERDB_IO_ERROR;
    long at = find_user_line(&l, name);
    if (at < 0) {
        snprintf(err, errlen, "no user %s", name);
        lines_free(&l);
        return USERDB_NO_SUCH_USER;
    }
    free(l.items[at]);
    memmove(&l.items[at], &l.items[at + 1], (l.count - (size_t)at - 1) * sizeof l.items[0]);
    l.count--;
    enum userdb_change_status st = replace_file(path, &l, err, errlen);
    lines_free(&l);
    return st;
}

/* Keeps every field but the secrets; CRAM-MD5 stays enabled only if it was. */
static char *line_with_new_secrets(const char *old, const char *password)
{
    char secrets[1024], *kept = NULL;
    size_t kept_len = 0;
    FILE *f = open_memstream(&kept, &kept_len);
    char *copy = strdup(old), *save = NULL;
    bool cram = false;
    if (f == NULL || copy == NULL) {
        if (f)
            fclose(f);
        free(kept);
        free(copy);
        return NULL;
    }
    for (char *tok = strtok_r(copy, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
        if (strncmp(tok, "cram=", 5) == 0)
            cram = true;
        else if (strncmp(tok, "scram-sha-256=", 14) != 0)
            fprintf(f, "%s%s", ftell(f) ? " " : "", tok);
    }
    fclose(f);
    free(copy);
    char *line = NULL;
    if (secret_fields(password, cram, secrets, sizeof secrets) == 0 &&
        asprintf(&line, "%s%s", kept, secrets) < 0)
        line = NULL;
    free(kept);
    return line;
}

enum userdb_change_status userdb_set_password(const char *path, const char *name,
                                              const char *password, char *err, size_t errlen)
{
    struct lines l = {0};
    if (!password_valid(password, err, errlen))
        return USERDB_INVALID;
    if (read_lines(path, &l, err, errlen) != 0)
        return USERDB_IO_ERROR;
    long at = find_user_line(&l, name);
    if (at < 0) {
        snprintf(err, errlen, "no user %s", name);
        lines_free(&l);
        return USERDB_NO_SUCH_USER;
    }
    char *line = line_with_new_secrets(l.items[at], password);
    if (line == NULL) {
        snprintf(err, errlen, "cannot compute the secrets");
        lines_free(&l);
        return USERDB_IO_ERROR;
    }
    free(l.items[at]);
    l.items[at] = line;
    enum userdb_change_status st = replace_file(path, &l, err, errlen);
    lines_free(&l);
    return st;
}
