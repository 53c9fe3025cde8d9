/* SPDX-License-Identifier: ISC */
/* odmrctl tls pin [FILE]: the public-key pin of odmrd's certificate ([tls] cert, or FILE), for
 * the provider to hand to customers (odmr-client --pin, docs/client.md). */
#include "ctl/ctl_tls.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sysexits.h>

#include "platform/tls_pin.h"

static int usage(void)
{
    fprintf(stderr, "usage: odmrctl tls pin [CERT-FILE]   (default: [tls] cert)\n");
    return EX_USAGE;
}

/* A file that cannot be opened is EX_NOINPUT; one that holds no certificate, EX_DATAERR. */
static int print_pin(const char *path)
{
    struct tls_pin pin;
    char err[512], text[TLS_PIN_TEXT_MAX];
    FILE *probe = fopen(path, "r");
    if (probe == NULL) {
        fprintf(stderr, "odmrctl: %s: %s%s\n", path, strerror(errno),
                errno == ENOENT ? " (odmrd makes a self-signed one on its first start)" : "");
        return EX_NOINPUT;
    }
    fclose(probe);
    if (tls_pin_of_pem_file(path, &pin, err, sizeof err) != 0) {
        fprintf(stderr, "odmrctl: %s\n", err);
        return EX_DATAERR;
    }
    printf("%s\n", tls_pin_format(&pin, text, sizeof text));
    return EX_OK;
}

int ctl_tls_main(const struct config *cfg, int argc, char **argv)
{
    if (argc < 2 || argc > 3 || strcmp(argv[1], "pin") != 0)
        return usage();
    return print_pin(argc == 3 ? argv[2] : cfg->tls_cert);
}
