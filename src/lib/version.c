/* SPDX-License-Identifier: ISC */
/* The release version, from the VERSION file through -DODMR_VERSION (see version.h). */
#include "lib/version.h"

#include <stdio.h>

#ifndef ODMR_VERSION
#error "ODMR_VERSION must be defined (the Makefile passes the VERSION file's content)"
#endif

const char *odmr_version(void)
{
    return ODMR_VERSION;
}

void version_print(const char *program)
{
    printf("%s (odmrd) %s\n"
           "Copyright (c) 2026 the odmrd authors. ISC licence: free to use, copy, modify and\n"
           "distribute; no warranty (see LICENSE).\n",
           program, ODMR_VERSION);
}
