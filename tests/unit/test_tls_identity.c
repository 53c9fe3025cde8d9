/* SPDX-License-Identifier: ISC */
/* The AUTH EXTERNAL identity of a client certificate (issue 9, defect 8): the one CN, whole.
 * Certificates are built in memory; only the subject matters here. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/x509.h>
#include <string.h>

#include "platform/tls.h"

/* A certificate whose subject has the given CNs (lengths explicit: a NUL may be inside). */
static X509 *with_cns(const char *const *cns, const int *lens, size_t n)
{
    X509 *cert = X509_new();
    assert_non_null(cert);
    X509_NAME *name = X509_get_subject_name(cert);
    assert_int_equal(X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                                (const unsigned char *)"Bob Inc", -1, -1, 0), 1);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                                    (const unsigned char *)cns[i], lens[i], -1, 0),
                         1);
    return cert;
}

static int identity_of(const char *const *cns, const int *lens, size_t n, char *out, size_t outlen)
{
    X509 *cert = with_cns(cns, lens, n);
    int rc = tls_certificate_identity(cert, out, outlen);
    X509_free(cert);
    return rc;
}

static void test_one_cn_accepted(void **state)
{
    const char *cn[] = {"bob-mx.bob.example"};
    const int len[] = {-1};
    char out[256];
    assert_int_equal(identity_of(cn, len, 1, out, sizeof out), 0);
    assert_string_equal(out, "bob-mx.bob.example");
}

static void test_embedded_nul_refused(void **state)
{
    static const char raw[] = "bob-mx\0.mallory.example";
    const char *cn[] = {raw};
    const int len[] = {(int)sizeof raw - 1};   /* the whole string, NUL included */
    char out[256] = "untouched";
    assert_int_equal(identity_of(cn, len, 1, out, sizeof out), -1);
    assert_string_equal(out, "untouched");
}

static void test_two_cns_refused(void **state)
{
    const char *first_real[] = {"bob-mx.bob.example", "mallory.example"};
    const char *first_other[] = {"mallory.example", "bob-mx.bob.example"};
    const int len[] = {-1, -1};
    char out[256];
    assert_int_equal(identity_of(first_real, len, 2, out, sizeof out), -1);
    assert_int_equal(identity_of(first_other, len, 2, out, sizeof out), -1);
}

static void test_no_cn_control_and_overlong_refused(void **state)
{
    char out[8];
    assert_int_equal(identity_of(NULL, NULL, 0, out, sizeof out), -1);
    const char *control[] = {"bob\n"};
    const int len[] = {-1};
    assert_int_equal(identity_of(control, len, 1, out, sizeof out), -1);
    const char *exact[] = {"1234567"};   /* 7 octets and the terminator fit out[8] */
    assert_int_equal(identity_of(exact, len, 1, out, sizeof out), 0);
    const char *longer[] = {"12345678"};
    assert_int_equal(identity_of(longer, len, 1, out, sizeof out), -1);
    assert_int_equal(tls_certificate_identity(NULL, out, sizeof out), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_cn_accepted),
        cmocka_unit_test(test_embedded_nul_refused),
        cmocka_unit_test(test_two_cns_refused),
        cmocka_unit_test(test_no_cn_control_and_overlong_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
