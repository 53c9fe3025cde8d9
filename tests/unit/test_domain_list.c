/* SPDX-License-Identifier: ISC */
/* ATRN argument parsing (RFC 2645 5.2.1). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "lib/domain_list.h"

static void test_accepted(void **state)
{
    static const struct { const char *arg; size_t count; const char *names[3]; } cases[] = {
        {"", 0, {NULL}},
        {"example.org", 1, {"example.org"}},
        {"a.example,b.example", 2, {"a.example", "b.example"}},
        {"a.example, b.example", 2, {"a.example", "b.example"}},
        {"A.Example,  B.EXAMPLE", 2, {"a.example", "b.example"}},
        {"a.example,A.EXAMPLE,a.example", 1, {"a.example"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct domain_list list;
        const char *why = NULL;
        assert_int_equal(domain_list_parse(cases[i].arg, &list, &why), 0);
        assert_int_equal(list.count, cases[i].count);
        for (size_t j = 0; j < list.count; j++)
            assert_string_equal(list.names[j], cases[i].names[j]);
    }
}

static void test_refused(void **state)
{
    static const char *const bad[] = {
        ",", "a.example,", ",a.example", "a.example,,b.example", "a..example", "[127.0.0.1]",
        "a.example b.example", "-a.example", "a.example;b.example", " a.example",
        "exa\xc3\xa4mple.org",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct domain_list list;
        const char *why = NULL;
        if (domain_list_parse(bad[i], &list, &why) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_non_null(why);
    }
}

static void test_too_many(void **state)
{
    char arg[DOMAIN_LIST_MAX * 16 + 64] = "";
    struct domain_list list;
    const char *why = NULL;
    for (int i = 0; i <= DOMAIN_LIST_MAX; i++)
        snprintf(arg + strlen(arg), sizeof arg - strlen(arg), "%sd%d.example", i ? "," : "", i);
    assert_int_equal(domain_list_parse(arg, &list, &why), -1);
    assert_string_equal(why, "too many domains");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_too_many),
    };
    return cmocka_run_group_tests_name("domain_list", tests, NULL, NULL);
}
