
/*
 * SASL PLAIN (RFC 4616): message = [authzid] NUL authcid NUL passwd.
 * The parser only splits and bounds the message; the credentials are
 * checked by the directory (ldap/).
 */


#include <string.h>

#include "ngx_xmpp_proto.h"


int
ngx_xmpp_sasl_plain_parse(const unsigned char *msg, size_t len,
    ngx_xmpp_sasl_plain_t *out)
{
    const unsigned char  *nul1, *nul2, *end;

    if (len > 3 * NGX_XMPP_SASL_FIELD_MAX + 2) {
        return -1;
    }

    end = msg + len;

    nul1 = memchr(msg, '\0', len);
    if (nul1 == NULL) {
        return -1;
    }

    nul2 = memchr(nul1 + 1, '\0', end - nul1 - 1);
    if (nul2 == NULL) {
        return -1;
    }

    /* a third NUL would make the password ambiguous */
    if (memchr(nul2 + 1, '\0', end - nul2 - 1) != NULL) {
        return -1;
    }

    out->authzid = msg;
    out->authzid_len = nul1 - msg;
    out->authcid = nul1 + 1;
    out->authcid_len = nul2 - nul1 - 1;
    out->passwd = nul2 + 1;
    out->passwd_len = end - nul2 - 1;

    if (out->authcid_len == 0 || out->passwd_len == 0
        || out->authzid_len > NGX_XMPP_SASL_FIELD_MAX
        || out->authcid_len > NGX_XMPP_SASL_FIELD_MAX
        || out->passwd_len > NGX_XMPP_SASL_FIELD_MAX)
    {
        return -1;
    }

    /* RFC 4616 section 2: all three are UTF-8 */
    if (ngx_xmpp_utf8_step(0, msg, len) != NGX_XMPP_UTF8_ACCEPT) {
        return -1;
    }

    return 0;
}
