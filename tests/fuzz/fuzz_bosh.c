
/*
 * libFuzzer target: the BOSH request parser (XEP-0124, XEP-0206) on any
 * bytes, then every child serialized on its own, as the transport does
 * before the session's parser sees it.  Invariants: a refused body says
 * why, a child is never empty, and a split sid stays inside the sid.
 */


#include <stdint.h>
#include <string.h>

#include <libxml/parser.h>

#include "ngx_xmpp_proto.h"


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;

    xmlInitParser();

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                    rc;
    uint32_t               pid;
    uint64_t               id;
    const char            *key;
    ngx_xmpp_bosh_body_t   b;

    rc = ngx_xmpp_bosh_body_parse(&b, data, size);

    if (rc != 0) {
        if (b.error == NULL) {
            __builtin_trap();
        }

        ngx_xmpp_bosh_body_free(&b);
        return 0;
    }

    if (b.sid_len >= sizeof(b.sid)) {
        __builtin_trap();
    }

    if (ngx_xmpp_bosh_sid_split(b.sid, b.sid_len, &pid, &id, &key) == 0
        && (key < b.sid || key + NGX_XMPP_BOSH_KEY_LEN > b.sid + b.sid_len))
    {
        __builtin_trap();
    }

    while ((rc = ngx_xmpp_bosh_body_next(&b)) == 1) {
        if (b.child_len == 0 || b.child[0] != '<') {
            __builtin_trap();
        }
    }

    ngx_xmpp_bosh_body_free(&b);

    return 0;
}
