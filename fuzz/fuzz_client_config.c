/* SPDX-License-Identifier: ISC */
/* libFuzzer target: odmr-client's config file (inih + the settings table, settings.c), fed
 * from memory. Each input starts from the defaults and is freed, so leaks show. */
#include <stdint.h>
#include <stdio.h>

#include "client/settings.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct client_options o;
    char err[512];
    if (size == 0)
        return 0;
    FILE *in = fmemopen((void *)data, size, "r");
    if (in == NULL)
        return 0;
    settings_init(&o);
    (void)settings_load_stream(&o, in, "fuzz.conf", "/etc/odmr", err, sizeof err);
    fclose(in);
    settings_free(&o);
    return 0;
}
