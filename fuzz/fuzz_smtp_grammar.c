/* SPDX-License-Identifier: ISC */
/* libFuzzer target: the SMTP grammar. The input, NUL-terminated, goes to MAIL and RCPT with
 * and without SMTPUTF8, and to the domain, literal, xtext and HELO checks. Accepted results
 * are checked against the header's bounds and re-validated with the standalone checkers. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/smtp_grammar.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void require(bool cond)
{
    if (!cond)
        __builtin_trap();
}

static void check_mailbox(const struct smtp_mailbox *mb, bool utf8)
{
    require(strlen(mb->local) <= SMTP_LOCAL_PART_MAX && mb->local[0] != '\0');
    require(strlen(mb->domain) <= SMTP_DOMAIN_MAX);
    require(utf8 || !mb->needs_smtputf8);
    if (mb->domain_is_literal)
        require(smtp_address_literal_valid(mb->domain));
    else if (mb->domain[0] != '\0')
        require(smtp_domain_valid(mb->domain, utf8));
    else
        require(strcasecmp(mb->local, "postmaster") == 0);
}

static void check_result(enum smtp_parse_status st, const struct smtp_path_command *cmd,
                         const char *why, bool utf8)
{
    if (st != SMTP_PARSE_OK) {
        require(why != NULL && why[0] != '\0');
        return;
    }
    require(cmd->param_count <= SMTP_PARAMS_MAX);
    for (size_t i = 0; i < cmd->param_count; i++) {
        const struct smtp_param *p = &cmd->params[i];
        require(p->keyword[0] != '\0' && strlen(p->keyword) <= SMTP_PARAM_KEYWORD_MAX);
        require(strlen(p->value) <= SMTP_PARAM_VALUE_MAX);
        require(p->has_value == (p->value[0] != '\0'));
    }
    if (!cmd->null_path)
        check_mailbox(&cmd->mailbox, utf8);
}

static void parse_both(const char *text)
{
    static struct smtp_path_command cmd;
    enum smtp_parse_status ascii_st[2];
    for (int verb = 0; verb < 2; verb++) {
        for (int utf8 = 0; utf8 < 2; utf8++) {
            const char *why = NULL;
            enum smtp_parse_status st = verb == 0
                                            ? smtp_parse_mail_from(text, utf8, &cmd, &why)
                                            : smtp_parse_rcpt_to(text, utf8, &cmd, &why);
            check_result(st, &cmd, why, utf8);
            if (verb == 1)
                require(st != SMTP_PARSE_OK || !cmd.null_path);
            if (!utf8)
                ascii_st[verb] = st;
            else /* SMTPUTF8 only widens the grammar */
                require(ascii_st[verb] != SMTP_PARSE_OK || st == SMTP_PARSE_OK);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    parse_both(text);
    bool d_ascii = smtp_domain_valid(text, false);
    bool d_utf8 = smtp_domain_valid(text, true);
    require(!d_ascii || d_utf8);
    require(!d_utf8 || strlen(text) <= SMTP_DOMAIN_MAX);
    (void)smtp_address_literal_valid(text);
    (void)smtp_xtext_valid(text);
    require(!smtp_helo_valid(text) || d_ascii || smtp_address_literal_valid(text));

    /* "FROM:<" / "TO:<" prefixes let the fuzzer reach the path grammar quickly. */
    if (size > 0 && size < 4096) {
        char *prefixed = malloc(size + 7);
        if (prefixed != NULL) {
            memcpy(prefixed, data[0] & 1 ? "TO:<" : "FROM:<", data[0] & 1 ? 4 : 6);
            size_t off = data[0] & 1 ? 4 : 6;
            memcpy(prefixed + off, data + 1, size - 1);
            prefixed[off + size - 1] = '\0';
            parse_both(prefixed);
            free(prefixed);
        }
    }

    smtp_domain_lower(text);
    free(text);
    return 0;
}
