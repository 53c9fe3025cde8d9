/* SPDX-License-Identifier: ISC */
/* The release version. It is written in one place, the VERSION file at the top of the tree;
 * the Makefile passes it to version.c as ODMR_VERSION (and debian/changelog must agree,
 * tests/proto/test_install.py checks it). */
#ifndef ODMR_LIB_VERSION_H
#define ODMR_LIB_VERSION_H

const char *odmr_version(void);
/* --version: "PROGRAM (odmrd) VERSION" and the licence line on stdout. */
void version_print(const char *program);

#endif
