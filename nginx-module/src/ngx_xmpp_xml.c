
/*
 * The element tree that the parser builds for each stanza, and the
 * writer that turns a tree back into XML.  Stanzas are re-serialized,
 * never forwarded as received: the router rewrites "from" (RFC 6120
 * section 8.1.2.1), and a canonical form keeps every namespace explicit,
 * as RFC 7395 section 3.3.3 needs for WebSocket.
 */


#include "ngx_xmpp.h"


static ngx_xmpp_wbuf_t  ngx_xmpp_scratch;


ngx_xmpp_node_t *
ngx_xmpp_node_child(ngx_xmpp_node_t *n, const char *name, const char *ns)
{
    size_t            len;
    ngx_xmpp_node_t  *c;

    len = ngx_strlen(name);

    for (c = n->child; c; c = c->next) {
        if (c->name.len == len
            && ngx_strncmp(c->name.data, name, len) == 0
            && (ns == NULL
                || (c->ns.len == ngx_strlen(ns)
                    && ngx_strncmp(c->ns.data, ns, c->ns.len) == 0)))
        {
            return c;
        }
    }

    return NULL;
}


ngx_xmpp_node_t *
ngx_xmpp_node_first_element(ngx_xmpp_node_t *n)
{
    ngx_xmpp_node_t  *c;

    for (c = n->child; c; c = c->next) {
        if (c->name.len) {
            return c;
        }
    }

    return NULL;
}


ngx_uint_t
ngx_xmpp_node_nchildren(ngx_xmpp_node_t *n)
{
    ngx_uint_t        k;
    ngx_xmpp_node_t  *c;

    k = 0;

    for (c = n->child; c; c = c->next) {
        if (c->name.len) {
            k++;
        }
    }

    return k;
}


/* unqualified attributes only: stanza attributes have no namespace */
ngx_str_t *
ngx_xmpp_node_attr(ngx_xmpp_node_t *n, const char *name)
{
    size_t      len;
    ngx_uint_t  i;

    len = ngx_strlen(name);

    for (i = 0; i < n->nattrs; i++) {
        if (n->attrs[i].ns.len == 0
            && n->attrs[i].name.len == len
            && ngx_strncmp(n->attrs[i].name.data, name, len) == 0)
        {
            return &n->attrs[i].value;
        }
    }

    return NULL;
}


ngx_int_t
ngx_xmpp_node_set_attr(ngx_pool_t *pool, ngx_xmpp_node_t *n,
    const char *name, ngx_str_t *value)
{
    ngx_str_t        *v;
    ngx_xmpp_attr_t  *a;

    v = ngx_xmpp_node_attr(n, name);
    if (v) {
        *v = *value;
        return NGX_OK;
    }

    a = ngx_palloc(pool, (n->nattrs + 1) * sizeof(ngx_xmpp_attr_t));
    if (a == NULL) {
        return NGX_ERROR;
    }

    if (n->nattrs) {
        ngx_memcpy(a, n->attrs, n->nattrs * sizeof(ngx_xmpp_attr_t));
    }

    a[n->nattrs].name.data = (u_char *) name;
    a[n->nattrs].name.len = ngx_strlen(name);
    ngx_str_null(&a[n->nattrs].ns);
    a[n->nattrs].value = *value;

    n->attrs = a;
    n->nattrs++;

    return NGX_OK;
}


void
ngx_xmpp_node_del_attr(ngx_xmpp_node_t *n, const char *name)
{
    size_t      len;
    ngx_uint_t  i;

    len = ngx_strlen(name);

    for (i = 0; i < n->nattrs; i++) {
        if (n->attrs[i].ns.len == 0
            && n->attrs[i].name.len == len
            && ngx_strncmp(n->attrs[i].name.data, name, len) == 0)
        {
            n->attrs[i] = n->attrs[n->nattrs - 1];
            n->nattrs--;
            return;
        }
    }
}


/* the concatenated character data directly inside n */
ngx_int_t
ngx_xmpp_node_text(ngx_pool_t *pool, ngx_xmpp_node_t *n, ngx_str_t *text)
{
    size_t            len;
    u_char           *p;
    ngx_xmpp_node_t  *c;

    len = 0;

    for (c = n->child; c; c = c->next) {
        if (c->name.len == 0) {
            len += c->text.len;
        }
    }

    text->len = len;

    if (len == 0) {
        text->data = (u_char *) "";
        return NGX_OK;
    }

    p = ngx_pnalloc(pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    text->data = p;

    for (c = n->child; c; c = c->next) {
        if (c->name.len == 0) {
            p = ngx_cpymem(p, c->text.data, c->text.len);
        }
    }

    return NGX_OK;
}


/*
 * The writer.  Every element is written unprefixed, with xmlns wherever
 * its namespace differs from its parent's; namespaced attributes other
 * than xml:* get a local prefix declared on the same element.
 */
void
ngx_xmpp_serialize(ngx_xmpp_wbuf_t *b, ngx_xmpp_node_t *n,
    ngx_str_t *parent_ns)
{
    u_char            pfx[16], *p;
    ngx_uint_t        i, k;
    ngx_xmpp_attr_t  *a;
    ngx_xmpp_node_t  *c;

    if (n->name.len == 0) {
        ngx_xmpp_wbuf_escs(b, &n->text);
        return;
    }

    ngx_xmpp_wbuf_lit(b, "<");
    ngx_xmpp_wbuf_nstr(b, &n->name);

    if (parent_ns == NULL
        || n->ns.len != parent_ns->len
        || ngx_strncmp(n->ns.data, parent_ns->data, n->ns.len) != 0)
    {
        ngx_xmpp_wbuf_lit(b, " xmlns='");
        ngx_xmpp_wbuf_escs(b, &n->ns);
        ngx_xmpp_wbuf_lit(b, "'");
    }

    k = 0;

    for (i = 0; i < n->nattrs; i++) {
        a = &n->attrs[i];

        ngx_xmpp_wbuf_lit(b, " ");

        if (a->ns.len == sizeof(NGX_XMPP_NS_XML) - 1
            && ngx_strncmp(a->ns.data, NGX_XMPP_NS_XML, a->ns.len) == 0)
        {
            ngx_xmpp_wbuf_lit(b, "xml:");

        } else if (a->ns.len) {
            p = ngx_sprintf(pfx, "a%ui", k++);
            ngx_xmpp_wbuf_lit(b, "xmlns:");
            ngx_xmpp_wbuf_add(b, pfx, p - pfx);
            ngx_xmpp_wbuf_lit(b, "='");
            ngx_xmpp_wbuf_escs(b, &a->ns);
            ngx_xmpp_wbuf_lit(b, "' ");
            ngx_xmpp_wbuf_add(b, pfx, p - pfx);
            ngx_xmpp_wbuf_lit(b, ":");
        }

        ngx_xmpp_wbuf_nstr(b, &a->name);
        ngx_xmpp_wbuf_lit(b, "='");
        ngx_xmpp_wbuf_escs(b, &a->value);
        ngx_xmpp_wbuf_lit(b, "'");
    }

    if (n->child == NULL) {
        ngx_xmpp_wbuf_lit(b, "/>");
        return;
    }

    ngx_xmpp_wbuf_lit(b, ">");

    for (c = n->child; c; c = c->next) {
        ngx_xmpp_serialize(b, c, &n->ns);
    }

    ngx_xmpp_wbuf_lit(b, "</");
    ngx_xmpp_wbuf_nstr(b, &n->name);
    ngx_xmpp_wbuf_lit(b, ">");
}


/*
 * One scratch buffer per worker for building outgoing stanzas; it is
 * reset by each user and only grows up to the largest stanza allowed.
 */
ngx_xmpp_wbuf_t *
ngx_xmpp_wbuf_scratch(size_t max)
{
    ngx_xmpp_wbuf_t  *b;

    b = &ngx_xmpp_scratch;

    b->last = b->start;
    b->max = max;
    b->failed = 0;

    return b;
}


ngx_int_t
ngx_xmpp_wbuf_reserve(ngx_xmpp_wbuf_t *b, size_t n)
{
    size_t   size, used;
    u_char  *p;

    if (b->failed) {
        return NGX_ERROR;
    }

    if ((size_t) (b->end - b->last) >= n) {
        return NGX_OK;
    }

    used = b->last - b->start;

    if (used + n > b->max) {
        b->failed = 1;
        return NGX_ERROR;
    }

    size = (b->end - b->start) * 2;
    if (size < 4096) {
        size = 4096;
    }

    while (size < used + n) {
        size *= 2;
    }

    p = ngx_alloc(size, ngx_cycle->log);
    if (p == NULL) {
        b->failed = 1;
        return NGX_ERROR;
    }

    if (used) {
        ngx_memcpy(p, b->start, used);
    }

    if (b->start) {
        ngx_free(b->start);
    }

    b->start = p;
    b->last = p + used;
    b->end = p + size;

    return NGX_OK;
}


void
ngx_xmpp_wbuf_add(ngx_xmpp_wbuf_t *b, const void *data, size_t len)
{
    if (len == 0 || ngx_xmpp_wbuf_reserve(b, len) != NGX_OK) {
        return;
    }

    b->last = ngx_cpymem(b->last, data, len);
}


void
ngx_xmpp_wbuf_str(ngx_xmpp_wbuf_t *b, const char *s)
{
    ngx_xmpp_wbuf_add(b, s, ngx_strlen(s));
}


/* escapes for both text and single-quoted attribute values */
void
ngx_xmpp_wbuf_esc(ngx_xmpp_wbuf_t *b, const u_char *p, size_t len)
{
    size_t  i, start;

    start = 0;

    for (i = 0; i < len; i++) {
        switch (p[i]) {
        case '&':
        case '<':
        case '>':
        case '\'':
        case '"':
            break;
        default:
            continue;
        }

        ngx_xmpp_wbuf_add(b, p + start, i - start);
        start = i + 1;

        switch (p[i]) {
        case '&':
            ngx_xmpp_wbuf_lit(b, "&amp;");
            break;
        case '<':
            ngx_xmpp_wbuf_lit(b, "&lt;");
            break;
        case '>':
            ngx_xmpp_wbuf_lit(b, "&gt;");
            break;
        case '\'':
            ngx_xmpp_wbuf_lit(b, "&apos;");
            break;
        default:
            ngx_xmpp_wbuf_lit(b, "&quot;");
            break;
        }
    }

    ngx_xmpp_wbuf_add(b, p + start, len - start);
}


void
ngx_xmpp_wbuf_free(ngx_xmpp_wbuf_t *b)
{
    if (b->start) {
        ngx_free(b->start);
    }

    b->start = NULL;
    b->last = NULL;
    b->end = NULL;
}
