/* SPDX-License-Identifier: ISC */
/* Default paths: in-tree ./run layout or installed FHS layout (see paths.h). */
#include "lib/paths.h"

#include <stdio.h>

#if defined(ODMR_SYSCONFDIR) != defined(ODMR_SPOOLDIR)
#error "define both ODMR_SYSCONFDIR and ODMR_SPOOLDIR (installed build) or neither (in-tree)"
#endif

/* Relative to the directory chosen below. */
static const char *const relative[] = {
    [DEFAULT_SPOOL] = "spool",
    [DEFAULT_USERS] = "users",
    [DEFAULT_TLS_CERT] = "tls/cert.pem",
    [DEFAULT_TLS_KEY] = "tls/key.pem",
};

#ifdef ODMR_SYSCONFDIR

const char *paths_default_config(void)
{
    return ODMR_SYSCONFDIR "/odmrd.conf";
}

void paths_default(enum default_path which, const char *base_dir, char *out, size_t outlen)
{
    if (which == DEFAULT_SPOOL)
        snprintf(out, outlen, "%s", ODMR_SPOOLDIR);
    else
        snprintf(out, outlen, "%s/%s", ODMR_SYSCONFDIR, relative[which]);
}

#else

const char *paths_default_config(void)
{
    return NULL;
}

void paths_default(enum default_path which, const char *base_dir, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/run/%s", base_dir ? base_dir : ".", relative[which]);
}

#endif
