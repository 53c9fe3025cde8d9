/* SPDX-License-Identifier: ISC */
/* ATRN domain list parser. */
#include "lib/domain_list.h"

#include <string.h>

static int fail(const char **why, const char *reason)
{
    if (why)
        *why = reason;
    return -1;
}

static bool already_listed(const struct domain_list *list, const char *name)
{
    for (size_t i = 0; i < list->count; i++)
        if (strcmp(list->names[i], name) == 0)
            return true;
    return false;
}

int domain_list_parse(const char *arg, struct domain_list *out, const char **why)
{
    out->count = 0;
    const char *p = arg;
    if (*p == '\0')
        return 0;
    for (;;) {
        size_t len = strcspn(p, ",");
        char name[SMTP_DOMAIN_MAX + 1];
        if (len == 0 || len > SMTP_DOMAIN_MAX)
            return fail(why, len == 0 ? "empty domain in the list" : "domain too long");
        memcpy(name, p, len);
        name[len] = '\0';
        /* RFC 2645 5.2.1 grammar: LDH domains of at least two labels; we accept one label too
         * only if smtp_domain_valid does, and never address literals or UTF-8. */
        if (!smtp_domain_valid(name, false))
            return fail(why, "not a domain name");
        smtp_domain_lower(name);
        if (!already_listed(out, name)) {
            if (out->count == DOMAIN_LIST_MAX)
                return fail(why, "too many domains");
            memcpy(out->names[out->count++], name, len + 1);
        }
        p += len;
        if (*p == '\0')
            return 0;
        p++;   /* the comma */
        while (*p == ' ')
            p++;
    }
}
