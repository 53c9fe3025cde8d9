/* SPDX-License-Identifier: ISC */
/* The queue's file format: token codec, envelope lines, message file validation
 * (queue_format.h; docs/queue.md "File formats"). */
#include "store/queue_format.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/queue_backend.h"
#include "store/queue_fs.h"
#include "store/queue_fs_entry.h"

/* ---- text buffer and token codec ---- */

int queue_text_append(struct queue_text *t, const void *data, size_t len)
{
    if (t->cap - t->len <= len) {
        size_t cap = t->cap != 0 ? t->cap : 256;
        while (cap - t->len <= len)
            cap *= 2;
        char *grown = realloc(t->data, cap);
        if (grown == NULL)
            return ENOMEM;
        t->data = grown;
        t->cap = cap;
    }
    memcpy(t->data + t->len, data, len);
    t->len += len;
    t->data[t->len] = '\0';
    return 0;
}

int queue_text_printf(struct queue_text *t, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof small)
        return EINVAL;   /* only used for short numeric fields */
    return queue_text_append(t, small, (size_t)n);
}

static bool octet_needs_escape(unsigned char c)
{
    return c <= 0x20 || c >= 0x7f || c == '%';
}

int queue_text_token(struct queue_text *t, const char *value)
{
    if (value == NULL)
        return queue_text_append(t, "-", 1);
    int rc = queue_text_append(t, "=", 1);
    for (const unsigned char *p = (const unsigned char *)value; rc == 0 && *p != '\0'; p++) {
        if (octet_needs_escape(*p)) {
            char escaped[4];
            snprintf(escaped, sizeof escaped, "%%%02X", *p);
            rc = queue_text_append(t, escaped, 3);
        } else {
            rc = queue_text_append(t, p, 1);
        }
    }
    return rc;
}

void queue_text_free(struct queue_text *t)
{
    free(t->data);
    memset(t, 0, sizeof *t);
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int queue_token_decode(const char *token, size_t len, char **out)
{
    *out = NULL;
    if (len == 1 && token[0] == '-')
        return 0;
    if (len == 0 || token[0] != '=')
        return EBADMSG;
    char *value = malloc(len);
    if (value == NULL)
        return ENOMEM;
    size_t n = 0;
    for (size_t i = 1; i < len; i++) {
        unsigned char c = (unsigned char)token[i];
        if (c == '%') {
            int hi = i + 2 < len ? hex_value(token[i + 1]) : -1;
            int lo = hi >= 0 ? hex_value(token[i + 2]) : -1;
            if (lo < 0 || (hi == 0 && lo == 0)) {
                free(value);
                return EBADMSG;
            }
            value[n++] = (char)(hi * 16 + lo);
            i += 2;
        } else if (octet_needs_escape(c)) {
            free(value);
            return EBADMSG;
        } else {
            value[n++] = (char)c;
        }
    }
    value[n] = '\0';
    *out = value;
    return 0;
}

/* ---- envelope lines ---- */

static const char *const body_type_names[] = {
    [QUEUE_BODY_7BIT] = "7BIT",
    [QUEUE_BODY_8BITMIME] = "8BITMIME",
    [QUEUE_BODY_BINARYMIME] = "BINARYMIME",
};

static const char *const rcpt_state_names[] = {
    [QUEUE_RCPT_PENDING] = "pending",
    [QUEUE_RCPT_DONE] = "done",
    [QUEUE_RCPT_FAILED] = "failed",
    [QUEUE_RCPT_BOUNCED] = "bounced",
};

const char *queue_rcpt_state_name(enum queue_rcpt_state state)
{
    if (state == QUEUE_OUTCOME_WARNED)
        return "warned";   /* an outcome, not a state: logged by the queue */
    return (unsigned)state <= QUEUE_RCPT_STATE_LAST ? rcpt_state_names[state] : "unknown";
}

int queue_rcpt_state_parse(const char *name, size_t len, enum queue_rcpt_state *out)
{
    for (unsigned i = 0; i <= QUEUE_RCPT_STATE_LAST; i++) {
        if (strlen(rcpt_state_names[i]) == len && memcmp(rcpt_state_names[i], name, len) == 0) {
            *out = (enum queue_rcpt_state)i;
            return 0;
        }
    }
    return EBADMSG;
}

static int format_token_line(struct queue_text *t, const char *key, const char *value)
{
    int rc = queue_text_printf(t, "%s ", key);
    if (rc == 0)
        rc = queue_text_token(t, value);
    if (rc == 0)
        rc = queue_text_append(t, "\n", 1);
    return rc;
}

static int format_rcpt_line(struct queue_text *t, const struct queue_rcpt *r)
{
    const char *fields[] = {r->domain, r->address, r->notify, r->orcpt};
    int rc = queue_text_append(t, "rcpt", 4);
    for (size_t i = 0; rc == 0 && i < 4; i++) {
        rc = queue_text_append(t, " ", 1);
        if (rc == 0)
            rc = queue_text_token(t, fields[i]);
    }
    if (rc == 0)
        rc = queue_text_append(t, "\n", 1);
    return rc;
}

int queue_envelope_format(struct queue_text *t, const struct queue_envelope *env)
{
    unsigned body = (unsigned)env->body <= QUEUE_BODY_BINARYMIME ? env->body : QUEUE_BODY_7BIT;
    int rc = queue_text_printf(t, "id %s\narrival %" PRId64 "\n", env->id, (int64_t)env->arrival);
    if (rc == 0)
        rc = format_token_line(t, "sender", env->sender);
    if (rc == 0)
        rc = queue_text_printf(t, "body %s\nsmtputf8 %d\n", body_type_names[body],
                               env->smtputf8 ? 1 : 0);
    if (rc == 0)
        rc = format_token_line(t, "ret", env->ret);
    if (rc == 0)
        rc = format_token_line(t, "envid", env->envid);
    if (rc == 0)
        rc = queue_text_printf(t, "size %" PRIu64 "\n", env->declared_size);
    if (rc == 0)
        rc = format_token_line(t, "helo", env->helo);
    if (rc == 0)
        rc = format_token_line(t, "client", env->client_addr);
    if (rc == 0)
        rc = format_token_line(t, "protocol", env->protocol);
    for (size_t i = 0; rc == 0 && i < env->rcpt_count; i++)
        rc = format_rcpt_line(t, &env->rcpts[i]);
    return rc;
}

/* A parsed line: key, then the rest split at single spaces into at most 4 fields. */
struct env_line {
    const char *key;
    size_t key_len;
    const char *field[4];
    size_t field_len[4];
    size_t fields;
};

static int split_line(const char *line, size_t len, struct env_line *out)
{
    memset(out, 0, sizeof *out);
    const char *end = line + len;
    const char *sp = memchr(line, ' ', len);
    if (sp == NULL || sp == line)
        return EBADMSG;
    out->key = line;
    out->key_len = (size_t)(sp - line);
    const char *p = sp + 1;
    while (p <= end) {
        const char *next = memchr(p, ' ', (size_t)(end - p));
        const char *stop = next != NULL ? next : end;
        if (out->fields == 4 || stop == p)
            return EBADMSG;   /* too many fields, or an empty one */
        out->field[out->fields] = p;
        out->field_len[out->fields++] = (size_t)(stop - p);
        p = stop + 1;
    }
    return 0;
}

static bool key_is(const struct env_line *l, const char *key)
{
    return l->key_len == strlen(key) && memcmp(l->key, key, l->key_len) == 0;
}

static int parse_u64(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 20)
        return EBADMSG;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return EBADMSG;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return EBADMSG;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int parse_rcpt_line(const struct env_line *l, struct queue_envelope *env)
{
    if (l->fields != 4)
        return EBADMSG;
    struct queue_rcpt *grown = realloc(env->rcpts, (env->rcpt_count + 1) * sizeof *grown);
    if (grown == NULL)
        return ENOMEM;
    env->rcpts = grown;
    struct queue_rcpt *r = &env->rcpts[env->rcpt_count++];
    memset(r, 0, sizeof *r);
    char **targets[] = {&r->domain, &r->address, &r->notify, &r->orcpt};
    for (size_t i = 0; i < 4; i++) {
        int rc = queue_token_decode(l->field[i], l->field_len[i], targets[i]);
        if (rc != 0)
            return rc;
    }
    char normalized[QUEUE_DOMAIN_MAX];
    if (r->domain == NULL || r->address == NULL ||
        queue_domain_normalize(r->domain, normalized) != 0 || strcmp(normalized, r->domain) != 0)
        return EBADMSG;
    return 0;
}

static int parse_body_type(const struct env_line *l, struct queue_envelope *env)
{
    for (unsigned i = 0; i <= QUEUE_BODY_BINARYMIME; i++) {
        if (l->field_len[0] == strlen(body_type_names[i]) &&
            memcmp(l->field[0], body_type_names[i], l->field_len[0]) == 0) {
            env->body = (enum queue_body_type)i;
            return 0;
        }
    }
    return EBADMSG;
}

/* Keys that must appear exactly once, in this bit order. */
enum {
    SEEN_ID = 1 << 0, SEEN_ARRIVAL = 1 << 1, SEEN_SENDER = 1 << 2, SEEN_BODY = 1 << 3,
    SEEN_SMTPUTF8 = 1 << 4, SEEN_RET = 1 << 5, SEEN_ENVID = 1 << 6, SEEN_SIZE = 1 << 7,
    SEEN_HELO = 1 << 8, SEEN_CLIENT = 1 << 9, SEEN_PROTOCOL = 1 << 10, SEEN_ALL = (1 << 11) - 1,
};

static int parse_token_field(const struct env_line *l, char **target, bool required)
{
    if (*target != NULL)
        free(*target);
    int rc = queue_token_decode(l->field[0], l->field_len[0], target);
    if (rc == 0 && required && *target == NULL)
        rc = EBADMSG;
    return rc;
}

static int parse_scalar_line(const struct env_line *l, struct queue_envelope *env, unsigned *seen)
{
    uint64_t number = 0;
    unsigned bit;
    int rc;
    if (l->fields != 1)
        return EBADMSG;
    if (key_is(l, "id")) {
        bit = SEEN_ID;
        if (l->field_len[0] >= QUEUE_ID_MAX)
            return EBADMSG;
        memcpy(env->id, l->field[0], l->field_len[0]);
        env->id[l->field_len[0]] = '\0';
        rc = queue_id_valid(env->id) ? 0 : EBADMSG;
    } else if (key_is(l, "arrival")) {
        bit = SEEN_ARRIVAL;
        rc = parse_u64(l->field[0], l->field_len[0], &number);
        if (rc == 0 && number > INT64_MAX)
            rc = EBADMSG;
        env->arrival = (time_t)number;
    } else if (key_is(l, "sender")) {
        bit = SEEN_SENDER;
        rc = parse_token_field(l, &env->sender, true);
    } else if (key_is(l, "body")) {
        bit = SEEN_BODY;
        rc = parse_body_type(l, env);
    } else if (key_is(l, "smtputf8")) {
        bit = SEEN_SMTPUTF8;
        rc = l->field_len[0] == 1 && (l->field[0][0] == '0' || l->field[0][0] == '1') ? 0
                                                                                     : EBADMSG;
        env->smtputf8 = l->field[0][0] == '1';
    } else if (key_is(l, "ret")) {
        bit = SEEN_RET;
        rc = parse_token_field(l, &env->ret, false);
    } else if (key_is(l, "envid")) {
        bit = SEEN_ENVID;
        rc = parse_token_field(l, &env->envid, false);
    } else if (key_is(l, "size")) {
        bit = SEEN_SIZE;
        rc = parse_u64(l->field[0], l->field_len[0], &env->declared_size);
    } else if (key_is(l, "helo")) {
        bit = SEEN_HELO;
        rc = parse_token_field(l, &env->helo, false);
    } else if (key_is(l, "client")) {
        bit = SEEN_CLIENT;
        rc = parse_token_field(l, &env->client_addr, false);
    } else if (key_is(l, "protocol")) {
        bit = SEEN_PROTOCOL;
        rc = parse_token_field(l, &env->protocol, false);
    } else {
        return EBADMSG;   /* an unknown key needs a new format version */
    }
    if (*seen & bit)
        return EBADMSG;
    *seen |= bit;
    return rc;
}

int queue_envelope_parse(const char *text, size_t len, struct queue_envelope *env,
                         const char **reason)
{
    unsigned seen = 0;
    size_t pos = 0;
    memset(env, 0, sizeof *env);
    *reason = "bad envelope line";
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        if (nl == NULL)
            return EBADMSG;
        struct env_line line;
        int rc = split_line(text + pos, (size_t)(nl - (text + pos)), &line);
        if (rc == 0)
            rc = key_is(&line, "rcpt") ? parse_rcpt_line(&line, env)
                                       : parse_scalar_line(&line, env, &seen);
        if (rc != 0)
            return rc;
        pos = (size_t)(nl - text) + 1;
    }
    if (seen != SEEN_ALL) {
        *reason = "envelope field missing";
        return EBADMSG;
    }
    if (env->rcpt_count == 0) {
        *reason = "envelope without recipients";
        return EBADMSG;
    }
    *reason = NULL;
    return 0;
}

/* ---- the message file ---- */

int queue_format_pread(int fd, void *data, size_t len, off_t offset)
{
    char *p = data;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? errno : EIO;   /* a short file here is an I/O surprise */
        p += n;
        len -= (size_t)n;
        offset += n;
    }
    return 0;
}

static bool header_complete(const char *buf, size_t len, size_t from, size_t *header_len)
{
    for (size_t i = from > 0 ? from - 1 : 0; i + 1 < len; i++) {
        if (buf[i] == '\n' && buf[i + 1] == '\n') {
            *header_len = i + 2;
            return true;
        }
    }
    return false;
}

/* Appends chunk to the header buffer until the blank line is seen. */
static int collect_header(struct queue_text *header, bool *done, size_t *header_len,
                          const char *chunk, size_t n)
{
    if (*done)
        return 0;
    size_t before = header->len;
    int rc = queue_text_append(header, chunk, n);
    if (rc != 0)
        return rc;
    if (header_complete(header->data, header->len, before, header_len))
        *done = true;
    else if (header->len > QUEUE_FS_HEADER_MAX)
        return EBADMSG;
    return 0;
}

struct parsed_trailer {
    uint64_t body_len;
    unsigned char sha256[32];
};

static int parse_trailer(const char *t, struct parsed_trailer *out)
{
    size_t prefix = strlen(QUEUE_FS_TRAILER_PREFIX);
    if (memcmp(t, QUEUE_FS_TRAILER_PREFIX, prefix) != 0 || t[prefix + 20] != ' ' ||
        t[QUEUE_FS_TRAILER_LEN - 1] != '\n')
        return EBADMSG;
    char digits[21];
    memcpy(digits, t + prefix, 20);
    digits[20] = '\0';
    if (!queue_fs_parse_number(digits, UINT64_MAX, &out->body_len))
        return EBADMSG;
    const char *hex = t + prefix + 21;
    /* Lower-case hex only: the writer's form, so one file has one valid trailer. */
    if (strspn(hex, "0123456789abcdef") < 64)
        return EBADMSG;
    for (size_t i = 0; i < 32; i++)
        out->sha256[i] = (unsigned char)(hex_value(hex[2 * i]) * 16 + hex_value(hex[2 * i + 1]));
    return 0;
}

static int check_magic(const char *header, size_t len, const char **reason)
{
    size_t prefix = strlen(QUEUE_FS_MAGIC_PREFIX);
    if (len < prefix || memcmp(header, QUEUE_FS_MAGIC_PREFIX, prefix) != 0) {
        *reason = "bad magic";
        return EBADMSG;
    }
    if (len < strlen(QUEUE_FS_MAGIC_LINE) ||
        memcmp(header, QUEUE_FS_MAGIC_LINE, strlen(QUEUE_FS_MAGIC_LINE)) != 0) {
        *reason = "unsupported version";
        return EBADMSG;
    }
    return 0;
}

/* Hashes [0, content_len) and collects the header on the way. 0, EBADMSG or errno. */
static int hash_and_collect(int fd, uint64_t content_len, unsigned char sha256[32],
                            struct queue_text *header, size_t *header_len, const char **reason)
{
    enum { CHUNK = 64 << 10 };
    char *chunk = malloc(CHUNK);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool done = false;
    int rc = chunk == NULL || ctx == NULL ? ENOMEM : 0;
    if (rc == 0 && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
        rc = EIO;
    for (uint64_t off = 0; rc == 0 && off < content_len;) {
        size_t n = content_len - off < CHUNK ? (size_t)(content_len - off) : CHUNK;
        rc = queue_format_pread(fd, chunk, n, (off_t)off);
        if (rc == 0 && EVP_DigestUpdate(ctx, chunk, n) != 1)
            rc = EIO;
        if (rc == 0)
            rc = collect_header(header, &done, header_len, chunk, n);
        if (rc == EBADMSG)
            *reason = "header too long";
        off += n;
    }
    if (rc == 0 && EVP_DigestFinal_ex(ctx, sha256, NULL) != 1)
        rc = EIO;
    if (rc == 0 && !done) {
        *reason = "no end of envelope";
        rc = EBADMSG;
    }
    EVP_MD_CTX_free(ctx);
    free(chunk);
    return rc;
}

/* The octets before the trailer of a file of size octets, when it can hold magic and trailer. */
static int content_length(uint64_t size, uint64_t *content_len, const char **reason)
{
    if (size < strlen(QUEUE_FS_MAGIC_LINE) + 1 + QUEUE_FS_TRAILER_LEN) {
        *reason = "truncated";
        return EBADMSG;
    }
    *content_len = size - QUEUE_FS_TRAILER_LEN;
    return 0;
}

static int check_trailer(const char *text, struct parsed_trailer *out, const char **reason)
{
    if (parse_trailer(text, out) == 0)
        return 0;
    *reason = "bad trailer (truncated?)";
    return EBADMSG;
}

/* The checks after the hash, shared by both validators: header[0, header_len) is the magic,
 * the envelope lines and the blank line; sha256 covers the content_len octets before the
 * trailer. 0 (out filled) or EBADMSG / ENOMEM (out cleared). */
static int check_message(const char *header, size_t header_len, uint64_t content_len,
                         const unsigned char sha256[32], const struct parsed_trailer *trailer,
                         const char *id, struct queue_format_validated *out, const char **reason)
{
    int rc = check_magic(header, header_len, reason);
    if (rc == 0 && memcmp(sha256, trailer->sha256, 32) != 0) {
        *reason = "checksum mismatch";
        rc = EBADMSG;
    }
    if (rc == 0 && content_len - header_len != trailer->body_len) {
        *reason = "length mismatch";
        rc = EBADMSG;
    }
    if (rc == 0) {
        size_t magic_len = strlen(QUEUE_FS_MAGIC_LINE);
        rc = queue_envelope_parse(header + magic_len, header_len - 1 - magic_len, &out->env,
                                  reason);
    }
    if (rc == 0 && strcmp(out->env.id, id) != 0) {
        *reason = "id does not match the file name";
        rc = EBADMSG;
    }
    if (rc != 0) {
        queue_envelope_clear(&out->env);
        return rc;
    }
    out->body_offset = (off_t)header_len;
    out->body_len = trailer->body_len;
    out->env.body_size = trailer->body_len;
    return 0;
}

int queue_format_validate(int fd, const char *id, struct queue_format_validated *out,
                          const char **reason)
{
    struct stat st;
    struct queue_text header = {0};
    struct parsed_trailer trailer;
    char trailer_text[QUEUE_FS_TRAILER_LEN];
    unsigned char sha256[32];
    size_t header_len = 0;
    uint64_t content_len = 0;
    memset(out, 0, sizeof *out);
    if (fstat(fd, &st) != 0)
        return errno;
    int rc = content_length((uint64_t)st.st_size, &content_len, reason);
    if (rc == 0)
        rc = queue_format_pread(fd, trailer_text, sizeof trailer_text, (off_t)content_len);
    if (rc == 0)
        rc = check_trailer(trailer_text, &trailer, reason);
    if (rc == 0)
        rc = hash_and_collect(fd, content_len, sha256, &header, &header_len, reason);
    if (rc == 0)
        rc = check_message(header.data, header_len, content_len, sha256, &trailer, id, out,
                           reason);
    queue_text_free(&header);
    return rc;
}

int queue_format_validate_buffer(const char *data, size_t len, const char *id,
                                 struct queue_format_validated *out, const char **reason)
{
    struct parsed_trailer trailer;
    unsigned char sha256[32];
    size_t header_len = 0;
    uint64_t content_len = 0;
    memset(out, 0, sizeof *out);
    int rc = content_length(len, &content_len, reason);
    if (rc == 0)
        rc = check_trailer(data + content_len, &trailer, reason);
    if (rc == 0 && EVP_Digest(data, (size_t)content_len, sha256, NULL, EVP_sha256(), NULL) != 1)
        rc = EIO;
    if (rc == 0 && !header_complete(data, (size_t)content_len, 0, &header_len)) {
        *reason = content_len > QUEUE_FS_HEADER_MAX ? "header too long" : "no end of envelope";
        rc = EBADMSG;
    }
    if (rc == 0)
        rc = check_message(data, header_len, content_len, sha256, &trailer, id, out, reason);
    return rc;
}

int queue_format_read_envelope(int fd, struct queue_envelope *env)
{
    enum { CHUNK = 16 << 10 };
    char chunk[CHUNK];
    struct queue_text header = {0};
    const char *reason = NULL;
    bool done = false;
    size_t header_len = 0;
    memset(env, 0, sizeof *env);
    int rc = 0;
    for (off_t off = 0; rc == 0 && !done;) {
        ssize_t n = pread(fd, chunk, sizeof chunk, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            rc = n < 0 ? errno : EBADMSG;
        else
            rc = collect_header(&header, &done, &header_len, chunk, (size_t)n);
        off += n > 0 ? n : 0;
    }
    if (rc == 0)
        rc = check_magic(header.data, header.len, &reason);
    if (rc == 0) {
        size_t magic_len = strlen(QUEUE_FS_MAGIC_LINE);
        rc = queue_envelope_parse(header.data + magic_len, header_len - 1 - magic_len, env,
                                  &reason);
    }
    queue_text_free(&header);
    if (rc != 0)
        queue_envelope_clear(env);
    return rc;
}
