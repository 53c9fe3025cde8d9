/* SPDX-License-Identifier: ISC */
/* The ATRN argument (RFC 2645 5.2.1): atrn = "ATRN" [SP domain *("," domain)].
 * Spaces after a comma are tolerated (some documents show them); domains are lower-cased and
 * duplicates dropped. Pure function, bounded output. */
#ifndef ODMR_LIB_DOMAIN_LIST_H
#define ODMR_LIB_DOMAIN_LIST_H

#include <stddef.h>

#include "lib/smtp_grammar.h"

enum { DOMAIN_LIST_MAX = 64 };

struct domain_list {
    size_t count;
    char names[DOMAIN_LIST_MAX][SMTP_DOMAIN_MAX + 1];
};

/* 0 on success (an empty argument gives count 0); -1 with *why set on a syntax error. */
int domain_list_parse(const char *arg, struct domain_list *out, const char **why);

#endif
