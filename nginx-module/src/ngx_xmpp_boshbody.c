
/*
 * A BOSH request (XEP-0124 section 7, XEP-0206): one <body/> in the
 * httpbind namespace, its attributes, and its children serialized one
 * by one for the session's parser.  Pure C over libxml2, so the unit
 * test and the fuzzer link it alone.
 *
 * libxml2 builds the tree without loading DTDs or substituting
 * entities; a document with a DTD is refused outright (RFC 6120 11.1).
 */


#include <string.h>
#include <limits.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "ngx_xmpp_proto.h"


#define NGX_XMPP_BOSH_NS     "http://jabber.org/protocol/httpbind"
#define NGX_XMPP_BOSH_XBOSH  "urn:xmpp:xbosh"


/* an attribute into buf: its length, -2 absent, -1 too long */
static int
ngx_xmpp_bosh_body_attr(xmlNodePtr n, const char *name, const char *ns,
    char *buf, size_t size)
{
    size_t    len;
    xmlChar  *v;

    v = ns ? xmlGetNsProp(n, (const xmlChar *) name, (const xmlChar *) ns)
           : xmlGetNoNsProp(n, (const xmlChar *) name);

    if (v == NULL) {
        return -2;
    }

    len = strlen((const char *) v);

    if (len >= size) {
        xmlFree(v);
        return -1;
    }

    memcpy(buf, v, len + 1);
    xmlFree(v);

    return (int) len;
}


/* a decimal number; XEP-0124 section 14.1 keeps a rid below 2^53 */
static int
ngx_xmpp_bosh_body_number(const char *p, int len, uint64_t *n)
{
    int  i;

    if (len <= 0 || len > 16) {
        return -1;
    }

    *n = 0;

    for (i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }

        *n = *n * 10 + (uint64_t) (p[i] - '0');
    }

    return 0;
}


static int
ngx_xmpp_bosh_body_fail(ngx_xmpp_bosh_body_t *b, const char *why)
{
    b->error = why;
    return -1;
}


int
ngx_xmpp_bosh_body_parse(ngx_xmpp_bosh_body_t *b, const unsigned char *data,
    size_t len)
{
    int         rc;
    char        buf[NGX_XMPP_BOSH_ATTR_MAX];
    uint64_t    n;
    xmlDocPtr   doc;
    xmlNodePtr  body;

    memset(b, 0, sizeof(ngx_xmpp_bosh_body_t));
    b->hold = -1;

    if (len == 0 || len > INT_MAX) {
        return ngx_xmpp_bosh_body_fail(b, "empty body");
    }

    doc = xmlReadMemory((const char *) data, (int) len, NULL, NULL,
                        XML_PARSE_NONET | XML_PARSE_NOCDATA
                        | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (doc == NULL) {
        return ngx_xmpp_bosh_body_fail(b, "not well-formed XML");
    }

    b->doc = doc;
    body = xmlDocGetRootElement(doc);

    if (doc->intSubset) {
        return ngx_xmpp_bosh_body_fail(b, "a DTD");
    }

    if (body == NULL || body->ns == NULL
        || xmlStrcmp(body->name, (const xmlChar *) "body") != 0
        || xmlStrcmp(body->ns->href, (const xmlChar *) NGX_XMPP_BOSH_NS)
           != 0)
    {
        return ngx_xmpp_bosh_body_fail(b, "not a <body/> in the httpbind "
                                       "namespace");
    }

    b->body = body;

    rc = ngx_xmpp_bosh_body_attr(body, "rid", NULL, buf, sizeof(buf));
    if (ngx_xmpp_bosh_body_number(buf, rc, &b->rid) != 0) {
        return ngx_xmpp_bosh_body_fail(b, "no numeric rid");
    }

    rc = ngx_xmpp_bosh_body_attr(body, "sid", NULL, b->sid, sizeof(b->sid));
    if (rc == -1) {
        return ngx_xmpp_bosh_body_fail(b, "sid too long");
    }

    b->sid_len = (rc > 0) ? (size_t) rc : 0;

    rc = ngx_xmpp_bosh_body_attr(body, "type", NULL, buf, sizeof(buf));
    b->terminate = (rc == 9 && strcmp(buf, "terminate") == 0);

    /* XEP-0124 section 17.1: a client that sends no "ver" is legacy */
    b->ver = (ngx_xmpp_bosh_body_attr(body, "ver", NULL, buf, sizeof(buf))
              != -2);

    rc = ngx_xmpp_bosh_body_attr(body, "restart", NGX_XMPP_BOSH_XBOSH, buf,
                                 sizeof(buf));
    b->restart = (rc == 4 && strcmp(buf, "true") == 0);

    rc = ngx_xmpp_bosh_body_attr(body, "wait", NULL, buf, sizeof(buf));
    if (rc != -2) {
        if (ngx_xmpp_bosh_body_number(buf, rc, &n) != 0) {
            return ngx_xmpp_bosh_body_fail(b, "bad wait");
        }

        b->wait = (n > 3600) ? 3600 : (unsigned) n;
    }

    rc = ngx_xmpp_bosh_body_attr(body, "hold", NULL, buf, sizeof(buf));
    if (rc != -2) {
        if (ngx_xmpp_bosh_body_number(buf, rc, &n) != 0) {
            return ngx_xmpp_bosh_body_fail(b, "bad hold");
        }

        b->hold = (n > 1) ? 1 : (int) n;
    }

    rc = ngx_xmpp_bosh_body_attr(body, "pause", NULL, buf, sizeof(buf));
    if (rc != -2) {
        if (ngx_xmpp_bosh_body_number(buf, rc, &n) != 0 || n == 0) {
            return ngx_xmpp_bosh_body_fail(b, "bad pause");
        }

        b->pause = (n > 86400) ? 86400 : (unsigned) n;
    }

    return 0;
}


/* 1: the body carries no element, a poll (XEP-0124 section 12) */
int
ngx_xmpp_bosh_body_empty(ngx_xmpp_bosh_body_t *b)
{
    xmlNodePtr  n;

    for (n = ((xmlNodePtr) b->body)->children; n; n = n->next) {
        if (n->type == XML_ELEMENT_NODE) {
            return 0;
        }
    }

    return 1;
}


/*
 * The next child element, serialized on its own: a copy outside the
 * tree declares on itself the namespaces it took from <body/>.  1: one
 * more in b->child/b->child_len; 0: no more; -1: out of memory.
 */
int
ngx_xmpp_bosh_body_next(ngx_xmpp_bosh_body_t *b)
{
    xmlNodePtr    n, copy;
    xmlBufferPtr  buf;

    if (b->cursor == b->body) {
        return 0;
    }

    n = b->cursor ? ((xmlNodePtr) b->cursor)->next
                  : ((xmlNodePtr) b->body)->children;

    while (n && n->type != XML_ELEMENT_NODE) {
        n = n->next;
    }

    if (n == NULL) {
        /* the body itself marks the end */
        b->cursor = b->body;
        return 0;
    }

    b->cursor = n;

    if (b->buf == NULL) {
        b->buf = xmlBufferCreate();
        if (b->buf == NULL) {
            return -1;
        }
    }

    buf = b->buf;
    xmlBufferEmpty(buf);

    copy = xmlDocCopyNode(n, b->doc, 1);
    if (copy == NULL) {
        return -1;
    }

    if (xmlNodeDump(buf, b->doc, copy, 0, 0) < 0) {
        xmlFreeNode(copy);
        return -1;
    }

    xmlFreeNode(copy);

    b->child = xmlBufferContent(buf);
    b->child_len = (size_t) xmlBufferLength(buf);

    return 1;
}


void
ngx_xmpp_bosh_body_free(ngx_xmpp_bosh_body_t *b)
{
    if (b->buf) {
        xmlBufferFree(b->buf);
        b->buf = NULL;
    }

    if (b->doc) {
        xmlFreeDoc(b->doc);
        b->doc = NULL;
    }
}


static int
ngx_xmpp_bosh_hex(const char *p, size_t len, uint64_t *n)
{
    size_t  i;
    int     c;

    *n = 0;

    for (i = 0; i < len; i++) {
        c = p[i];

        if (c >= '0' && c <= '9') {
            c -= '0';

        } else if (c >= 'a' && c <= 'f') {
            c -= 'a' - 10;

        } else {
            return -1;
        }

        *n = (*n << 4) | (uint64_t) c;
    }

    return 0;
}


/* sid: owner pid (8 hex), session id (16 hex), key (32 hex) */
int
ngx_xmpp_bosh_sid_split(const char *sid, size_t len, uint32_t *pid,
    uint64_t *id, const char **key)
{
    uint64_t  n;

    if (len != NGX_XMPP_BOSH_SID_LEN) {
        return -1;
    }

    if (ngx_xmpp_bosh_hex(sid, 8, &n) != 0 || n == 0) {
        return -1;
    }

    *pid = (uint32_t) n;

    if (ngx_xmpp_bosh_hex(sid + 8, 16, id) != 0 || *id == 0) {
        return -1;
    }

    if (ngx_xmpp_bosh_hex(sid + 24, NGX_XMPP_BOSH_KEY_LEN, &n) != 0) {
        return -1;
    }

    *key = sid + 24;

    return 0;
}
