
/*
 * JIDs (RFC 7622).  Conclave compares localparts and domainparts
 * case-insensitively in ASCII; full PRECIS profiles for non-ASCII text
 * are not applied yet, so non-ASCII octets are only checked to be UTF-8.
 */


#include "ngx_xmpp_proto.h"


/*
 * RFC 7622 section 3.3.1: the localpart may not contain
 * " & ' / : < > @ nor controls and spaces (IdentifierClass).
 */
int
ngx_xmpp_jid_local_valid(const unsigned char *s, size_t len)
{
    size_t  i;

    if (len == 0 || len > NGX_XMPP_JID_PART_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        switch (s[i]) {
        case '"': case '&': case '\'': case '/': case ':':
        case '<': case '>': case '@':
            return 0;
        }

        if (s[i] <= 0x20 || s[i] == 0x7f) {
            return 0;
        }
    }

    return ngx_xmpp_utf8_step(0, s, len) == NGX_XMPP_UTF8_ACCEPT;
}


/* RFC 7622 section 3.4: FreeformClass allows spaces, not controls */
int
ngx_xmpp_jid_resource_valid(const unsigned char *s, size_t len)
{
    size_t  i;

    if (len == 0 || len > NGX_XMPP_JID_PART_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (s[i] < 0x20 || s[i] == 0x7f) {
            return 0;
        }
    }

    return ngx_xmpp_utf8_step(0, s, len) == NGX_XMPP_UTF8_ACCEPT;
}


static int
ngx_xmpp_jid_domain_valid(const unsigned char *s, size_t len)
{
    size_t  i;

    if (len == 0 || len > NGX_XMPP_JID_PART_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (s[i] <= 0x20 || s[i] == 0x7f || s[i] == '@' || s[i] == '/') {
            return 0;
        }
    }

    /* RFC 7622 section 3.2: a trailing dot is stripped before use */
    if (s[len - 1] == '.' && len == 1) {
        return 0;
    }

    return ngx_xmpp_utf8_step(0, s, len) == NGX_XMPP_UTF8_ACCEPT;
}


/*
 * Splits "local@domain/resource" (RFC 7622 section 3.1): the first '/'
 * ends the domain, and the '@' before it ends the localpart.
 */
int
ngx_xmpp_jid_split(const unsigned char *s, size_t len,
    ngx_xmpp_jid_parts_t *jid)
{
    size_t  i, slash, at;

    jid->local = NULL;
    jid->local_len = 0;
    jid->resource = NULL;
    jid->resource_len = 0;

    slash = len;

    for (i = 0; i < len; i++) {
        if (s[i] == '/') {
            slash = i;
            break;
        }
    }

    at = slash;

    for (i = 0; i < slash; i++) {
        if (s[i] == '@') {
            at = i;
            break;
        }
    }

    if (at < slash) {
        if (!ngx_xmpp_jid_local_valid(s, at)) {
            return -1;
        }

        jid->local = s;
        jid->local_len = at;
        jid->domain = s + at + 1;
        jid->domain_len = slash - at - 1;

    } else {
        jid->domain = s;
        jid->domain_len = slash;
    }

    if (jid->domain_len > 1 && jid->domain[jid->domain_len - 1] == '.') {
        jid->domain_len--;
    }

    if (!ngx_xmpp_jid_domain_valid(jid->domain, jid->domain_len)) {
        return -1;
    }

    if (slash < len) {
        if (!ngx_xmpp_jid_resource_valid(s + slash + 1, len - slash - 1)) {
            return -1;
        }

        jid->resource = s + slash + 1;
        jid->resource_len = len - slash - 1;
    }

    return 0;
}


void
ngx_xmpp_ascii_lower(unsigned char *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (s[i] >= 'A' && s[i] <= 'Z') {
            s[i] |= 0x20;
        }
    }
}
