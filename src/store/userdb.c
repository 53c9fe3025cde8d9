/* The users file loader (format: docs/users.md). */
#include "store/userdb.h"

#include <errno.h>
#include <openssl/evp.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/smtp_grammar.h"

struct domain_rule {
    char *name;
    bool shared;
    char **local_parts;        /* NULL: any local part is valid */
    size_t local_part_count;
};

struct userdb {
    struct odmr_user *users;
    size_t user_count;
    struct domain_rule *rules;
    size_t rule_count;
};

struct load_state {
    struct userdb *db;
    const char *path;
    unsigned line;
    char *err;
    size_t errlen;
};

__attribute__((format(printf, 2, 3)))
static int load_error(struct load_state *st, const char *fmt, ...)
{
    char message[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    snprintf(st->err, st->errlen, "%s:%u: %s", st->path, st->line, message);
    return -1;
}

/* Splits "a,b,c" into a NULL-terminated-free array of strdup'ed items. */
static char **split_list(const char *text, size_t *count)
{
    size_t n = 1;
    for (const char *p = text; *p; p++)
        n += *p == ',';
    char **items = calloc(n, sizeof *items);
    char *copy = strdup(text);
    char *save = NULL;
    *count = 0;
    if (items == NULL || copy == NULL) {
        free(items);
        free(copy);
        return NULL;
    }
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        items[(*count)++] = strdup(tok);
    free(copy);
    return items;
}

static void free_list(char **items, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(items[i]);
    free(items);
}

static int parse_domains(struct load_state *st, struct odmr_user *u, const char *value)
{
    u->domains = split_list(value, &u->domain_count);
    if (u->domains == NULL || u->domain_count == 0)
        return load_error(st, "domains: empty list");
    for (size_t i = 0; i < u->domain_count; i++) {
        if (!smtp_domain_valid(u->domains[i], false))
            return load_error(st, "domains: \"%s\" is not a domain name", u->domains[i]);
        smtp_domain_lower(u->domains[i]);
        for (size_t j = 0; j < i; j++)
            if (strcmp(u->domains[i], u->domains[j]) == 0)
                return load_error(st, "domains: \"%s\" listed twice", u->domains[i]);
    }
    return 0;
}

static int parse_scram(struct load_state *st, struct odmr_user *u, const char *value)
{
    char copy[512];
    char *fields[4];
    char *save = NULL;
    size_t n = 0;
    snprintf(copy, sizeof copy, "%s", value);
    for (char *tok = strtok_r(copy, ":", &save); tok && n < 4; tok = strtok_r(NULL, ":", &save))
        fields[n++] = tok;
    char *end;
    unsigned long iterations = n == 4 ? strtoul(fields[0], &end, 10) : 0;
    if (n != 4 || *end != '\0' || iterations < 4096 || iterations > 10000000)
        return load_error(st, "scram-sha-256: expected ITERATIONS:SALT:STOREDKEY:SERVERKEY "
                              "(iterations at least 4096)");
    u->scram_iterations = (unsigned)iterations;
    u->scram_salt_b64 = strdup(fields[1]);
    u->scram_stored_key_b64 = strdup(fields[2]);
    u->scram_server_key_b64 = strdup(fields[3]);
    return 0;
}

static int parse_user_field(struct load_state *st, struct odmr_user *u, const char *key,
                            const char *value)
{
    if (strcmp(key, "domains") == 0)
        return parse_domains(st, u, value);
    if (strcmp(key, "profile") == 0) {
        if (strcmp(value, "compat") != 0 && strcmp(value, "fast") != 0)
            return load_error(st, "profile: \"%s\" is not compat or fast", value);
        u->profile = strcmp(value, "fast") == 0 ? ODMR_PROFILE_FAST : ODMR_PROFILE_COMPAT;
        return 0;
    }
    if (strcmp(key, "cram") == 0) {
        u->cram_secret = userdb_decode_secret(value);
        if (u->cram_secret == NULL)
            return load_error(st, "cram: not valid base64");
        u->cram_enabled = true;
        return 0;
    }
    if (strcmp(key, "scram-sha-256") == 0)
        return parse_scram(st, u, value);
    if (strcmp(key, "tls-subject") == 0) {
        u->tls_subject = strdup(value);
        return 0;
    }
    return load_error(st, "unknown field \"%s\" (domains, profile, cram, scram-sha-256, "
                          "tls-subject)", key);
}

static int add_user(struct load_state *st, char *name, char *rest)
{
    struct userdb *db = st->db;
    if (userdb_find_user(db, name) != NULL)
        return load_error(st, "user \"%s\" defined twice", name);
    struct odmr_user *grown = realloc(db->users, (db->user_count + 1) * sizeof *grown);
    if (grown == NULL)
        return load_error(st, "out of memory");
    db->users = grown;
    struct odmr_user *u = &db->users[db->user_count++];
    memset(u, 0, sizeof *u);
    u->name = strdup(name);
    char *save = NULL;
    for (char *field = strtok_r(rest, " \t", &save); field; field = strtok_r(NULL, " \t", &save)) {
        char *eq = strchr(field, '=');
        if (eq == NULL)
            return load_error(st, "expected key=value, got \"%s\"", field);
        *eq = '\0';
        if (parse_user_field(st, u, field, eq + 1) != 0)
            return -1;
    }
    if (u->domain_count == 0)
        return load_error(st, "user \"%s\" has no domains=", name);
    if (u->cram_secret == NULL && u->scram_iterations == 0)
        return load_error(st, "user \"%s\" has no secret (cram= or scram-sha-256=)", name);
    return 0;
}

static struct domain_rule *find_rule(const struct userdb *db, const char *domain)
{
    for (size_t i = 0; i < db->rule_count; i++)
        if (strcasecmp(db->rules[i].name, domain) == 0)
            return &db->rules[i];
    return NULL;
}

static int add_domain_rule(struct load_state *st, char *name, char *rest)
{
    struct userdb *db = st->db;
    if (!smtp_domain_valid(name, false))
        return load_error(st, "\"%s\" is not a domain name", name);
    smtp_domain_lower(name);
    if (find_rule(db, name) != NULL)
        return load_error(st, "domain \"%s\" described twice", name);
    struct domain_rule *grown = realloc(db->rules, (db->rule_count + 1) * sizeof *grown);
    if (grown == NULL)
        return load_error(st, "out of memory");
    db->rules = grown;
    struct domain_rule *r = &db->rules[db->rule_count++];
    memset(r, 0, sizeof *r);
    r->name = strdup(name);
    char *save = NULL;
    for (char *field = strtok_r(rest, " \t", &save); field; field = strtok_r(NULL, " \t", &save)) {
        if (strcmp(field, "shared=yes") == 0)
            r->shared = true;
        else if (strncmp(field, "local-parts=", 12) == 0)
            r->local_parts = split_list(field + 12, &r->local_part_count);
        else
            return load_error(st, "unknown field \"%s\" (shared=yes, local-parts=a,b)", field);
    }
    return 0;
}

static int parse_line(struct load_state *st, char *line)
{
    line[strcspn(line, "\r\n")] = '\0';
    char *p = line + strspn(line, " \t");
    if (*p == '\0' || *p == '#')
        return 0;
    char *save = NULL;
    char *kind = strtok_r(p, " \t", &save);
    char *name = strtok_r(NULL, " \t", &save);
    char *rest = save ? save : (char *)"";
    if (name == NULL)
        return load_error(st, "expected \"user NAME ...\" or \"domain NAME ...\"");
    if (strcmp(kind, "user") == 0)
        return add_user(st, name, rest);
    if (strcmp(kind, "domain") == 0)
        return add_domain_rule(st, name, rest);
    return load_error(st, "unknown record \"%s\" (user or domain)", kind);
}

/* A domain belongs to one user unless a "domain NAME shared=yes" line says otherwise. */
static int check_ownership(struct load_state *st)
{
    const struct userdb *db = st->db;
    st->line = 0;
    for (size_t a = 0; a < db->user_count; a++)
        for (size_t i = 0; i < db->users[a].domain_count; i++)
            for (size_t b = a + 1; b < db->user_count; b++) {
                const char *d = db->users[a].domains[i];
                const struct domain_rule *r = find_rule(db, d);
                if (userdb_user_has_domain(&db->users[b], d) && (r == NULL || !r->shared))
                    return load_error(st, "domain %s is listed by users %s and %s; add \"domain "
                                          "%s shared=yes\" to allow that", d, db->users[a].name,
                                      db->users[b].name, d);
            }
    return 0;
}

static int check_private(struct load_state *st, int fd)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        return load_error(st, "%s", strerror(errno));
    /* It holds CRAM-MD5 secrets (plaintext-equivalent): owner only. */
    if (sb.st_mode & 077)
        return load_error(st, "readable by group or others (mode %04o); run chmod 600 %s",
                          (unsigned)(sb.st_mode & 07777), st->path);
    return 0;
}

struct userdb *userdb_load(const char *path, char *err, size_t errlen)
{
    struct load_state st = {calloc(1, sizeof(struct userdb)), path, 0, err, errlen};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (st.db == NULL || fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(st.db ? errno : ENOMEM));
        if (fd >= 0)
            close(fd);
        userdb_free(st.db);
        return NULL;
    }
    FILE *f = fdopen(fd, "r");
    char *line = NULL;
    size_t cap = 0;
    int rc = check_private(&st, fd);
    while (rc == 0 && getline(&line, &cap, f) > 0) {
        st.line++;
        rc = parse_line(&st, line);
    }
    if (rc == 0)
        rc = check_ownership(&st);
    free(line);
    fclose(f);
    if (rc != 0) {
        userdb_free(st.db);
        return NULL;
    }
    return st.db;
}

static void free_user(struct odmr_user *u)
{
    free(u->name);
    free_list(u->domains, u->domain_count);
    if (u->cram_secret)
        memset(u->cram_secret, 0, strlen(u->cram_secret));
    free(u->cram_secret);
    free(u->scram_salt_b64);
    free(u->scram_stored_key_b64);
    free(u->scram_server_key_b64);
    free(u->tls_subject);
}

void userdb_free(struct userdb *db)
{
    if (db == NULL)
        return;
    for (size_t i = 0; i < db->user_count; i++)
        free_user(&db->users[i]);
    for (size_t i = 0; i < db->rule_count; i++) {
        free(db->rules[i].name);
        free_list(db->rules[i].local_parts, db->rules[i].local_part_count);
    }
    free(db->users);
    free(db->rules);
    free(db);
}

const struct odmr_user *userdb_find_user(const struct userdb *db, const char *name)
{
    for (size_t i = 0; name && i < db->user_count; i++)
        if (strcmp(db->users[i].name, name) == 0)
            return &db->users[i];
    return NULL;
}

bool userdb_user_has_domain(const struct odmr_user *user, const char *domain)
{
    for (size_t i = 0; i < user->domain_count; i++)
        if (strcasecmp(user->domains[i], domain) == 0)
            return true;
    return false;
}

bool userdb_domain_hosted(const struct userdb *db, const char *domain)
{
    for (size_t i = 0; i < db->user_count; i++)
        if (userdb_user_has_domain(&db->users[i], domain))
            return true;
    return false;
}

bool userdb_local_part_valid(const struct userdb *db, const char *domain, const char *local_part)
{
    const struct domain_rule *r = find_rule(db, domain);
    if (r == NULL || r->local_parts == NULL)
        return true;
    for (size_t i = 0; i < r->local_part_count; i++)
        if (strcasecmp(r->local_parts[i], local_part) == 0)
            return true;
    return false;
}

size_t userdb_user_count(const struct userdb *db)
{
    return db->user_count;
}

const struct odmr_user *userdb_user_at(const struct userdb *db, size_t index)
{
    return index < db->user_count ? &db->users[index] : NULL;
}

char *userdb_decode_secret(const char *b64)
{
    size_t len = strlen(b64);
    if (len == 0 || len % 4 != 0)
        return NULL;
    unsigned char *out = malloc(len / 4 * 3 + 1);
    if (out == NULL)
        return NULL;
    int n = EVP_DecodeBlock(out, (const unsigned char *)b64, (int)len);
    if (n < 0) {
        free(out);
        return NULL;
    }
    /* EVP_DecodeBlock counts the padding as zero octets: take them off again. */
    for (const char *p = b64 + len - 1; p >= b64 && *p == '='; p--)
        n--;
    out[n] = '\0';
    if (strlen((char *)out) != (size_t)n) {
        free(out);
        return NULL;
    }
    return (char *)out;
}

char *userdb_encode_secret(const char *secret)
{
    size_t len = strlen(secret);
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (out != NULL)
        EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)secret, (int)len);
    return out;
}
