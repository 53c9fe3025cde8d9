/* SPDX-License-Identifier: ISC */
/* libFuzzer target: the odmrd.conf loader (inih + the key table). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "fuzz_tmp.h"
#include "lib/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_tmp_path("config");
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    struct config cfg;
    char err[512];
    if (config_load(&cfg, path, err, sizeof err) == 0)
        config_free(&cfg);
    return 0;
}
