/* SPDX-License-Identifier: ISC */
/* The users file loader (format: docs/users.md).
 *
 * The file is read whole, line by line, into arrays; then three sorted indexes are built
 * (users by name, domain claims by domain, domain lines by domain) so that the lookups made
 * on every AUTH, ATRN and RCPT are binary searches, and so that duplicate users and domains
 * claimed by two users are found by comparing neighbours instead of every pair. */
#include "store/userdb.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/smtp_grammar.h"

/* RFC 7677 section 4: SCRAM-SHA-256 iteration count at least 4096. The upper bound only keeps
 * a typo from making every login take minutes. */
enum { SCRAM_MIN_ITERATIONS = 4096, SCRAM_MAX_ITERATIONS = 10000000, SHA256_LEN = 32 };

/* A "domain NAME ..." line. */
struct domain_rule {
    char *name;                /* lower-case */
    bool shared;
    bool has_local_parts;      /* false: any local part is valid */
    char **local_parts;
    size_t local_part_count;
    unsigned line;
};

/* One (domain, user) pair of a domains= field: the index behind userdb_domain_hosted(). */
struct domain_claim {
    const char *domain;
    const struct odmr_user *user;
    unsigned line;
};

struct userdb {
    struct odmr_user *users;
    unsigned *user_lines;      /* user_lines[i]: line of users[i] */
    size_t user_count;
    struct domain_rule *rules;
    size_t rule_count;
    const struct odmr_user **users_by_name;
    struct domain_claim *claims;          /* sorted by domain, then line */
    size_t claim_count;
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
    char message[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    if (st->line == 0)          /* about the file as a whole */
        snprintf(st->err, st->errlen, "%s: %s", st->path, message);
    else
        snprintf(st->err, st->errlen, "%s:%u: %s", st->path, st->line, message);
    return -1;
}

/* ---- small helpers ---- */

/* Strict base64 (RFC 4648 section 4, padded, no whitespace). Returns malloc'ed octets plus a
 * terminating NUL, or NULL. */
static unsigned char *decode_base64(const char *b64, size_t *out_len)
{
    size_t len = strlen(b64);
    if (len == 0 || len % 4 != 0 || strspn(b64, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                                "0123456789+/=") != len)
        return NULL;
    size_t padding = (b64[len - 1] == '=') + (b64[len - 2] == '=');
    if (strchr(b64, '=') != NULL && strchr(b64, '=') != b64 + len - padding)
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
    *out_len = (size_t)n - padding;
    out[*out_len] = '\0';
    return out;
}

static bool base64_of_length(const char *b64, size_t want)
{
    size_t len = 0;
    unsigned char *octets = decode_base64(b64, &len);
    free(octets);
    return octets != NULL && (want == 0 ? len > 0 : len == want);
}

/* Splits "a,b,c" into strdup'ed items. Empty items ("a,,b", "a,") are refused. */
static int split_list(const char *text, char ***items_out, size_t *count_out)
{
    size_t n = 1;
    for (const char *p = text; *p; p++)
        n += *p == ',';
    char **items = calloc(n, sizeof *items);
    if (items == NULL)
        return -1;
    *items_out = items;
    *count_out = 0;
    const char *start = text;
    for (size_t i = 0; i < n; i++) {
        size_t len = strcspn(start, ",");
        if (len == 0)
            return -1;
        items[i] = strndup(start, len);
        if (items[i] == NULL)
            return -1;
        *count_out = i + 1;
        start += len + 1;
    }
    return 0;
}

static void free_list(char **items, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(items[i]);
    free(items);
}

bool userdb_user_name_valid(const char *name)
{
    size_t len = strlen(name);
    return len > 0 && len <= USERDB_NAME_MAX &&
           strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@+-") == len;
}

/* ---- user lines: "user NAME key=value ..." ---- */

static int parse_domains(struct load_state *st, struct odmr_user *u, const char *value)
{
    if (split_list(value, &u->domains, &u->domain_count) != 0)
        return load_error(st, "domains: empty item in \"%s\"", value);
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

static int parse_profile(struct load_state *st, struct odmr_user *u, const char *value)
{
    if (strcmp(value, "compat") == 0)
        u->profile = ODMR_PROFILE_COMPAT;
    else if (strcmp(value, "fast") == 0)
        u->profile = ODMR_PROFILE_FAST;
    else
        return load_error(st, "profile: \"%s\" is not compat or fast", value);
    return 0;
}

static int parse_cram(struct load_state *st, struct odmr_user *u, const char *value)
{
    u->cram_secret = userdb_decode_secret(value);
    if (u->cram_secret == NULL)
        return load_error(st, "cram: not base64 of a non-empty password without NUL octets");
    u->cram_enabled = true;
    return 0;
}

/* ITERATIONS:SALT:STOREDKEY:SERVERKEY, the RFC 5802 section 5 verifier for SCRAM-SHA-256
 * (RFC 7677); salt and keys base64, keys SHA-256 sized. */
static int parse_scram(struct load_state *st, struct odmr_user *u, const char *value)
{
    char *copy = strdup(value);
    if (copy == NULL)
        return load_error(st, "out of memory");
    char *fields[4] = {0};
    size_t count = 0;
    char *p = copy;
    for (; p != NULL && count < 4; count++) {       /* split on ':', keeping empty fields */
        fields[count] = p;
        p = strchr(p, ':');
        if (p != NULL)
            *p++ = '\0';
    }
    char *end = NULL;
    unsigned long iterations = count == 4 ? strtoul(fields[0], &end, 10) : 0;
    bool ok = count == 4 && p == NULL && end != fields[0] &&
              *end == '\0' && iterations >= SCRAM_MIN_ITERATIONS &&
              iterations <= SCRAM_MAX_ITERATIONS && base64_of_length(fields[1], 0) &&
              base64_of_length(fields[2], SHA256_LEN) && base64_of_length(fields[3], SHA256_LEN);
    if (ok) {
        u->scram_iterations = (unsigned)iterations;
        u->scram_salt_b64 = strdup(fields[1]);
        u->scram_stored_key_b64 = strdup(fields[2]);
        u->scram_server_key_b64 = strdup(fields[3]);
    }
    free(copy);
    if (!ok)
        return load_error(st, "scram-sha-256: expected ITERATIONS:SALT:STOREDKEY:SERVERKEY "
                              "(iterations %d to %d, base64, keys of %d octets)",
                          SCRAM_MIN_ITERATIONS, SCRAM_MAX_ITERATIONS, SHA256_LEN);
    return 0;
}

static int parse_tls_subject(struct load_state *st, struct odmr_user *u, const char *value)
{
    if (value[0] == '\0')
        return load_error(st, "tls-subject: empty");
    u->tls_subject = strdup(value);
    return 0;
}

static const struct {
    const char *key;
    int (*parse)(struct load_state *st, struct odmr_user *u, const char *value);
} user_fields[] = {
    {"domains", parse_domains},         {"profile", parse_profile},
    {"cram", parse_cram},               {"scram-sha-256", parse_scram},
    {"tls-subject", parse_tls_subject},
};
enum { USER_FIELD_COUNT = sizeof user_fields / sizeof user_fields[0] };

/* Splits "key=value" in place; refuses a token without "=". */
static int split_field(struct load_state *st, char *token, char **value)
{
    char *eq = strchr(token, '=');
    if (eq == NULL || eq == token)
        return load_error(st, "expected key=value, got \"%s\"", token);
    *eq = '\0';
    *value = eq + 1;
    return 0;
}

static int parse_user_field(struct load_state *st, struct odmr_user *u, char *token,
                            unsigned *seen)
{
    char *value = NULL;
    if (split_field(st, token, &value) != 0)
        return -1;
    for (size_t i = 0; i < USER_FIELD_COUNT; i++) {
        if (strcmp(token, user_fields[i].key) != 0)
            continue;
        if (*seen & (1u << i))
            return load_error(st, "%s= given twice", token);
        *seen |= 1u << i;
        return user_fields[i].parse(st, u, value);
    }
    return load_error(st, "unknown field \"%s\" (domains, profile, cram, scram-sha-256, "
                          "tls-subject)", token);
}

static int parse_user_record(struct load_state *st, char *name, char *rest)
{
    struct userdb *db = st->db;
    if (!userdb_user_name_valid(name))
        return load_error(st, "\"%s\": a user name is 1 to %d of A-Z a-z 0-9 . _ @ + -", name,
                          USERDB_NAME_MAX);
    struct odmr_user *grown = realloc(db->users, (db->user_count + 1) * sizeof *grown);
    if (grown != NULL)
        db->users = grown;
    unsigned *lines = realloc(db->user_lines, (db->user_count + 1) * sizeof *lines);
    if (lines != NULL)
        db->user_lines = lines;
    if (grown == NULL || lines == NULL)
        return load_error(st, "out of memory");
    struct odmr_user *u = &db->users[db->user_count];
    memset(u, 0, sizeof *u);
    db->user_lines[db->user_count++] = st->line;
    u->name = strdup(name);
    unsigned seen = 0;
    char *save = NULL;
    for (char *tok = strtok_r(rest, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save))
        if (parse_user_field(st, u, tok, &seen) != 0)
            return -1;
    if (u->domain_count == 0)
        return load_error(st, "user \"%s\" has no domains=", name);
    return 0;
}

/* ---- domain lines: "domain NAME [shared=yes|no] [local-parts=a,b]" ---- */

static int parse_local_parts(struct load_state *st, struct domain_rule *r, const char *value)
{
    if (split_list(value, &r->local_parts, &r->local_part_count) != 0)
        return load_error(st, "local-parts: empty item in \"%s\"", value);
    r->has_local_parts = true;
    for (size_t i = 0; i < r->local_part_count; i++)
        if (strlen(r->local_parts[i]) > SMTP_LOCAL_PART_MAX || strchr(r->local_parts[i], '@'))
            return load_error(st, "local-parts: \"%s\" is not a local part (at most %d octets, "
                                  "no @)", r->local_parts[i], SMTP_LOCAL_PART_MAX);
    return 0;
}

static int parse_domain_field(struct load_state *st, struct domain_rule *r, char *token,
                              unsigned *seen)
{
    char *value = NULL;
    if (split_field(st, token, &value) != 0)
        return -1;
    unsigned bit = strcmp(token, "shared") == 0 ? 1u : strcmp(token, "local-parts") == 0 ? 2u : 0;
    if (bit == 0)
        return load_error(st, "unknown field \"%s\" (shared, local-parts)", token);
    if (*seen & bit)
        return load_error(st, "%s= given twice", token);
    *seen |= bit;
    if (bit == 2u)
        return parse_local_parts(st, r, value);
    if (strcmp(value, "yes") != 0 && strcmp(value, "no") != 0)
        return load_error(st, "shared: \"%s\" is not yes or no", value);
    r->shared = strcmp(value, "yes") == 0;
    return 0;
}

static int parse_domain_record(struct load_state *st, char *name, char *rest)
{
    struct userdb *db = st->db;
    if (!smtp_domain_valid(name, false))
        return load_error(st, "\"%s\" is not a domain name", name);
    smtp_domain_lower(name);
    struct domain_rule *grown = realloc(db->rules, (db->rule_count + 1) * sizeof *grown);
    if (grown == NULL)
        return load_error(st, "out of memory");
    db->rules = grown;
    struct domain_rule *r = &db->rules[db->rule_count++];
    memset(r, 0, sizeof *r);
    r->name = strdup(name);
    r->line = st->line;
    unsigned seen = 0;
    char *save = NULL;
    for (char *tok = strtok_r(rest, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save))
        if (parse_domain_field(st, r, tok, &seen) != 0)
            return -1;
    return 0;
}

/* ---- lines ---- */

static const struct {
    const char *keyword;
    int (*parse)(struct load_state *st, char *name, char *rest);
} record_kinds[] = {
    {"user", parse_user_record},
    {"domain", parse_domain_record},
};

static int parse_line(struct load_state *st, char *line)
{
    line[strcspn(line, "\r\n")] = '\0';
    char *p = line + strspn(line, " \t");
    if (*p == '\0' || *p == '#')
        return 0;
    char *save = NULL;
    char *keyword = strtok_r(p, " \t", &save);
    char *name = strtok_r(NULL, " \t", &save);
    char *rest = save != NULL ? save : (char *)"";
    for (size_t i = 0; i < sizeof record_kinds / sizeof record_kinds[0]; i++) {
        if (strcmp(keyword, record_kinds[i].keyword) != 0)
            continue;
        if (name == NULL)
            return load_error(st, "%s: a name must follow", keyword);
        return record_kinds[i].parse(st, name, rest);
    }
    return load_error(st, "unknown keyword \"%s\" (user, domain)", keyword);
}

/* ---- indexes and whole-file checks ---- */

static int compare_user_ptr(const void *a, const void *b)
{
    const struct odmr_user *ua = *(const struct odmr_user *const *)a;
    const struct odmr_user *ub = *(const struct odmr_user *const *)b;
    int c = strcmp(ua->name, ub->name);
    return c != 0 ? c : (ua > ub) - (ua < ub);     /* file order among equals */
}

static int compare_claim(const void *a, const void *b)
{
    const struct domain_claim *ca = a, *cb = b;
    int c = strcasecmp(ca->domain, cb->domain);
    return c != 0 ? c : (ca->line > cb->line) - (ca->line < cb->line);
}

static int compare_rule(const void *a, const void *b)
{
    const struct domain_rule *ra = a, *rb = b;
    int c = strcasecmp(ra->name, rb->name);
    return c != 0 ? c : (ra->line > rb->line) - (ra->line < rb->line);
}

static int index_users(struct load_state *st)
{
    struct userdb *db = st->db;
    db->users_by_name = calloc(db->user_count + 1, sizeof *db->users_by_name);
    if (db->users_by_name == NULL)
        return load_error(st, "out of memory");
    for (size_t i = 0; i < db->user_count; i++)
        db->users_by_name[i] = &db->users[i];
    if (db->user_count > 1)
        qsort(db->users_by_name, db->user_count, sizeof *db->users_by_name, compare_user_ptr);
    for (size_t i = 1; i < db->user_count; i++) {
        const struct odmr_user *first = db->users_by_name[i - 1], *again = db->users_by_name[i];
        if (strcmp(first->name, again->name) == 0) {
            st->line = db->user_lines[again - db->users];
            return load_error(st, "user \"%s\" already defined on line %u", again->name,
                              db->user_lines[first - db->users]);
        }
    }
    return 0;
}

static int index_rules(struct load_state *st)
{
    struct userdb *db = st->db;
    if (db->rule_count > 1)     /* qsort() wants a non-NULL base even for 0 items */
        qsort(db->rules, db->rule_count, sizeof *db->rules, compare_rule);
    for (size_t i = 1; i < db->rule_count; i++)
        if (strcmp(db->rules[i - 1].name, db->rules[i].name) == 0) {
            st->line = db->rules[i].line;
            return load_error(st, "domain \"%s\" already described on line %u",
                              db->rules[i].name, db->rules[i - 1].line);
        }
    return 0;
}

static const struct domain_rule *find_rule(const struct userdb *db, const char *domain)
{
    size_t lo = 0, hi = domain != NULL ? db->rule_count : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcasecmp(domain, db->rules[mid].name);
        if (c == 0)
            return &db->rules[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* A domain belongs to one user unless a "domain NAME shared=yes" line says otherwise. */
static int index_claims(struct load_state *st)
{
    struct userdb *db = st->db;
    size_t total = 0;
    for (size_t i = 0; i < db->user_count; i++)
        total += db->users[i].domain_count;
    db->claims = calloc(total + 1, sizeof *db->claims);
    if (db->claims == NULL)
        return load_error(st, "out of memory");
    for (size_t i = 0; i < db->user_count; i++)
        for (size_t j = 0; j < db->users[i].domain_count; j++)
            db->claims[db->claim_count++] = (struct domain_claim){
                db->users[i].domains[j], &db->users[i], db->user_lines[i]};
    if (db->claim_count > 1)
        qsort(db->claims, db->claim_count, sizeof *db->claims, compare_claim);
    for (size_t i = 1; i < db->claim_count; i++) {
        const struct domain_claim *first = &db->claims[i - 1], *again = &db->claims[i];
        const struct domain_rule *rule = find_rule(db, again->domain);
        if (strcmp(first->domain, again->domain) != 0 || (rule != NULL && rule->shared))
            continue;
        st->line = again->line;
        return load_error(st, "domain %s is already listed by user %s (line %u); add "
                              "\"domain %s shared=yes\" to let several users fetch it",
                          again->domain, first->user->name, first->line, again->domain);
    }
    return 0;
}

/* ---- loading ---- */

static int check_private(struct load_state *st, int fd)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        return load_error(st, "%s", strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return load_error(st, "not a regular file");
    /* It holds CRAM-MD5 secrets, which are plaintext-equivalent: owner only. */
    if (sb.st_mode & (S_IRWXG | S_IRWXO))
        return load_error(st, "group or others have access (mode %04o); run chmod 600 %s",
                          (unsigned)(sb.st_mode & 07777), st->path);
    return 0;
}

static int parse_file(struct load_state *st, FILE *f)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int rc = 0;
    while (rc == 0 && (len = getline(&line, &cap, f)) > 0) {
        st->line++;
        if (strlen(line) != (size_t)len)
            rc = load_error(st, "NUL octet in the line");
        else
            rc = parse_line(st, line);
    }
    if (rc == 0 && ferror(f))
        rc = load_error(st, "read error: %s", strerror(errno));
    if (line != NULL)
        OPENSSL_cleanse(line, cap);      /* it held a secret */
    free(line);
    return rc;
}

struct userdb *userdb_load(const char *path, char *err, size_t errlen)
{
    struct load_state st = {calloc(1, sizeof(struct userdb)), path, 0, err, errlen};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
    if (st.db == NULL || f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(st.db != NULL ? errno : ENOMEM));
        if (f == NULL && fd >= 0)
            close(fd);
        if (f != NULL)
            fclose(f);
        userdb_free(st.db);
        return NULL;
    }
    int rc = check_private(&st, fd);
    if (rc == 0)
        rc = parse_file(&st, f);
    fclose(f);
    if (rc == 0)
        rc = index_users(&st);
    if (rc == 0)
        rc = index_rules(&st);
    if (rc == 0)
        rc = index_claims(&st);
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
    if (u->cram_secret != NULL)
        OPENSSL_cleanse(u->cram_secret, strlen(u->cram_secret));
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
    free(db->user_lines);
    free(db->rules);
    free(db->users_by_name);
    free(db->claims);
    free(db);
}

/* ---- lookups ---- */

const struct odmr_user *userdb_find_user(const struct userdb *db, const char *name)
{
    size_t lo = 0, hi = name != NULL && db->users_by_name != NULL ? db->user_count : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, db->users_by_name[mid]->name);
        if (c == 0)
            return db->users_by_name[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
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
    size_t lo = 0, hi = domain != NULL ? db->claim_count : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcasecmp(domain, db->claims[mid].domain);
        if (c == 0)
            return true;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return false;
}

bool userdb_local_part_valid(const struct userdb *db, const char *domain, const char *local_part)
{
    const struct domain_rule *r = find_rule(db, domain);
    if (r == NULL || !r->has_local_parts)
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

/* ---- the cram= encoding ---- */

char *userdb_decode_secret(const char *b64)
{
    size_t len = 0;
    unsigned char *octets = decode_base64(b64, &len);
    if (octets != NULL && (len == 0 || strlen((char *)octets) != len)) {
        OPENSSL_cleanse(octets, len);
        free(octets);
        return NULL;
    }
    return (char *)octets;
}

char *userdb_encode_secret(const char *secret)
{
    size_t len = strlen(secret);
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (out != NULL)
        EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)secret, (int)len);
    return out;
}
