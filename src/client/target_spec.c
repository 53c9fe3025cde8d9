/* SPDX-License-Identifier: ISC */
/* The --deliver target spec (target_spec.h): smtp:, lmtp:, their +starttls: forms, maildir:,
 * mda: (docs/client.md "Local delivery target"). */
#include "client/target_spec.h"

#include <stdio.h>
#include <string.h>

static int split_host_port(const char *text, struct target_spec *out, char *err, size_t errlen)
{
    const char *colon;
    const char *host = text;
    size_t hlen;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':')
            goto bad;
        host = text + 1;
        hlen = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (colon == NULL)
            goto bad;
        hlen = (size_t)(colon - text);
    }
    const char *port = colon + 1;
    if (hlen == 0 || hlen >= sizeof out->host || strlen(port) == 0 ||
        strlen(port) >= sizeof out->port || strspn(port, "0123456789") != strlen(port))
        goto bad;
    memcpy(out->host, host, hlen);
    out->host[hlen] = '\0';
    snprintf(out->port, sizeof out->port, "%s", port);
    return 0;
bad:
    snprintf(err, errlen, "bad target address '%s': use HOST:PORT", text);
    return -1;
}

static int parse_network(const char *text, const char *rest, struct target_spec *out, char *err,
                         size_t errlen)
{
    if (strncmp(rest, "unix:", 5) != 0)
        return split_host_port(rest, out, err, errlen);
    if (rest[5] != '/' || strlen(rest + 5) >= sizeof out->unix_path) {
        snprintf(err, errlen, "bad unix socket path in '%s'", text);
        return -1;
    }
    out->is_unix = true;
    snprintf(out->unix_path, sizeof out->unix_path, "%s", rest + 5);
    return 0;
}

static int parse_network_tls(const char *text, const char *rest, struct target_spec *out,
                             char *err, size_t errlen)
{
    out->starttls_required = true;
    if (strncmp(rest, "unix:", 5) == 0) {
        snprintf(err, errlen, "STARTTLS needs a TCP target: '%s'", text);
        return -1;
    }
    return parse_network(text, rest, out, err, errlen);
}

static int parse_maildir(const char *text, const char *rest, struct target_spec *out, char *err,
                         size_t errlen)
{
    snprintf(out->local, sizeof out->local, "%s", rest);
    return maildir_template_check(rest, err, errlen);
}

static int parse_mda(const char *text, const char *rest, struct target_spec *out, char *err,
                     size_t errlen)
{
    struct mda_command c;
    snprintf(out->local, sizeof out->local, "%s", rest);
    return mda_parse(rest, &c, err, errlen);
}

int target_parse(const char *text, struct target_spec *out, char *err, size_t errlen)
{
    static const struct {
        const char *prefix;
        enum target_kind kind;
        int (*parse)(const char *, const char *, struct target_spec *, char *, size_t);
    } kinds[] = {
        {"smtp:", TARGET_SMTP, parse_network},
        {"lmtp:", TARGET_LMTP, parse_network},
        {"smtp+starttls:", TARGET_SMTP, parse_network_tls},
        {"lmtp+starttls:", TARGET_LMTP, parse_network_tls},
        {"maildir:", TARGET_MAILDIR, parse_maildir},
        {"mda:", TARGET_MDA, parse_mda},
    };
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        size_t plen = strlen(kinds[i].prefix);
        if (strncmp(text, kinds[i].prefix, plen) != 0)
            continue;
        out->kind = kinds[i].kind;
        return kinds[i].parse(text, text + plen, out, err, errlen);
    }
    snprintf(err, errlen, "unsupported --deliver '%s': use smtp:HOST:PORT, lmtp:HOST:PORT, "
             "lmtp:unix:/path, smtp+starttls:HOST:PORT, lmtp+starttls:HOST:PORT, "
             "maildir:/path or mda:/path/to/command args", text);
    return -1;
}

bool target_spec_is_local(const struct target_spec *spec)
{
    return spec->kind == TARGET_MAILDIR || spec->kind == TARGET_MDA;
}
