/* SPDX-License-Identifier: ISC */
/* libFuzzer target: the ATRN domain list parser. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/domain_list.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    struct domain_list list;
    const char *why = NULL;
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    if (domain_list_parse(text, &list, &why) == 0) {
        for (size_t i = 0; i < list.count; i++)
            if (!smtp_domain_valid(list.names[i], false))
                __builtin_trap();
    } else if (why == NULL) {
        __builtin_trap();
    }
    free(text);
    return 0;
}
