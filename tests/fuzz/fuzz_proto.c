
/*
 * libFuzzer target: JID splitting (RFC 7622), SASL PLAIN (RFC 4616) and
 * UTF-8 validation on any bytes.  Invariants: parts lie inside the input
 * and respect the length limits; a UTF-8 verdict does not depend on
 * where the input is cut.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_xmpp_proto.h"


#define inside(p, len)                                                     \
    ((len) == 0 || ((const uint8_t *) (p) >= data                          \
                    && (const uint8_t *) (p) + (len) <= data + size))


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                 i;
    uint32_t               whole, split;
    ngx_xmpp_jid_parts_t   jid;
    ngx_xmpp_sasl_plain_t  plain;

    if (ngx_xmpp_jid_split(data, size, &jid) == 0) {
        if (!inside(jid.local, jid.local_len)
            || !inside(jid.domain, jid.domain_len)
            || !inside(jid.resource, jid.resource_len)
            || jid.domain_len == 0
            || jid.local_len > NGX_XMPP_JID_PART_MAX
            || jid.domain_len > NGX_XMPP_JID_PART_MAX
            || jid.resource_len > NGX_XMPP_JID_PART_MAX)
        {
            abort();
        }
    }

    if (ngx_xmpp_sasl_plain_parse(data, size, &plain) == 0) {
        if (!inside(plain.authcid, plain.authcid_len)
            || !inside(plain.passwd, plain.passwd_len)
            || plain.authcid_len == 0 || plain.passwd_len == 0
            || memchr(plain.passwd, '\0', plain.passwd_len) != NULL)
        {
            abort();
        }
    }

    whole = ngx_xmpp_utf8_step(0, data, size);

    for (i = 0; i <= size && i < 8; i++) {
        split = ngx_xmpp_utf8_step(0, data, i);
        split = ngx_xmpp_utf8_step(split, data + i, size - i);

        if ((split == NGX_XMPP_UTF8_ACCEPT)
            != (whole == NGX_XMPP_UTF8_ACCEPT))
        {
            abort();
        }
    }

    return 0;
}
