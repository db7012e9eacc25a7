
/*
 * XML stream parsing with libxml2's push parser and SAX2 callbacks.
 *
 * One parser lives as long as the stream.  The WebSocket transport
 * feeds it a synthetic root element first, so each WebSocket message
 * parses as one child of that root (RFC 7395 section 3.3.3); the TCP
 * transport feeds the client's own stream header.  Each top-level child
 * is built into a small tree in its own pool and handed to
 * ngx_xmpp_stream_element() when its end tag arrives.
 *
 * RFC 6120 section 11.1 restricts XML: no comments, processing
 * instructions, DTDs or entity references other than the predefined
 * ones.  libxml2 never loads DTDs or substitutes entities here
 * (no XML_PARSE_NOENT or XML_PARSE_DTDLOAD).
 */


#include "ngx_xmpp.h"


#define NGX_XMPP_ERR_NONE             0
#define NGX_XMPP_ERR_NOT_WELL_FORMED  1
#define NGX_XMPP_ERR_RESTRICTED       2
#define NGX_XMPP_ERR_POLICY           3
#define NGX_XMPP_ERR_INTERNAL         4
#define NGX_XMPP_ERR_NAMESPACE        5


static const char  *ngx_xmpp_parser_conditions[] = {
    NULL,
    "not-well-formed",
    "restricted-xml",
    "policy-violation",
    "internal-server-error",
    "invalid-namespace"
};


static void
ngx_xmpp_parser_fail(ngx_xmpp_session_t *s, ngx_uint_t err)
{
    if (s->parser_error == NGX_XMPP_ERR_NONE) {
        s->parser_error = err;
    }

    xmlStopParser(s->parser);
}


static size_t
ngx_xmpp_parser_limit(ngx_xmpp_session_t *s)
{
    return s->authenticated ? s->conf->max_stanza_size
                            : s->conf->max_stanza_size_preauth;
}


/* counts what a stanza will cost, and stops the parser over the limit */
static ngx_int_t
ngx_xmpp_parser_account(ngx_xmpp_session_t *s, size_t n)
{
    s->stanza_size += n;

    if (s->stanza_size > ngx_xmpp_parser_limit(s)) {
        ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                      "xmpp: stanza larger than %uz bytes",
                      ngx_xmpp_parser_limit(s));
        ngx_xmpp_parser_fail(s, NGX_XMPP_ERR_POLICY);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_xmpp_parser_str(ngx_xmpp_session_t *s, ngx_str_t *dst,
    const xmlChar *src, size_t len)
{
    if (src == NULL || len == 0) {
        dst->len = 0;
        dst->data = (u_char *) "";
        return NGX_OK;
    }

    dst->data = ngx_pnalloc(s->stanza_pool, len);
    if (dst->data == NULL) {
        ngx_xmpp_parser_fail(s, NGX_XMPP_ERR_INTERNAL);
        return NGX_ERROR;
    }

    ngx_memcpy(dst->data, src, len);
    dst->len = len;

    return NGX_OK;
}


/*
 * libxml2's SAX2 layer, without entity substitution, hands back "&amp;"
 * in attribute values as "&#38;"; no other reference survives it.
 */
static void
ngx_xmpp_parser_unescape_amp(ngx_str_t *v)
{
    u_char  *p, *q, *end;

    p = ngx_strlchr(v->data, v->data + v->len, '&');
    if (p == NULL) {
        return;
    }

    end = v->data + v->len;
    q = p;

    while (p < end) {
        if (end - p >= 5 && ngx_strncmp(p, "&#38;", 5) == 0) {
            *q++ = '&';
            p += 5;
            continue;
        }

        *q++ = *p++;
    }

    v->len = q - v->data;
}


/*
 * The root of a TCP stream must be <stream:stream> in the streams
 * namespace, with jabber:client as the default namespace of its
 * content (RFC 6120 4.8.1-4.8.2; otherwise <invalid-namespace/>).
 */
static ngx_int_t
ngx_xmpp_parser_root_ok(ngx_xmpp_session_t *s, const xmlChar *localname,
    const xmlChar *uri, int nb_namespaces, const xmlChar **namespaces)
{
    int  i;

    if (uri == NULL || ngx_strcmp(uri, NGX_XMPP_NS_STREAM) != 0
        || ngx_strcmp(localname, "stream") != 0)
    {
        ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                      "xmpp: the stream root is not <stream:stream>");
        ngx_xmpp_parser_fail(s, NGX_XMPP_ERR_NAMESPACE);
        return NGX_ERROR;
    }

    /* SAX2 namespaces: prefix, URI pairs */
    for (i = 0; i < nb_namespaces; i++) {
        if (namespaces[i * 2] == NULL && namespaces[i * 2 + 1]
            && ngx_strcmp(namespaces[i * 2 + 1], NGX_XMPP_NS_CLIENT) == 0)
        {
            return NGX_OK;
        }
    }

    ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                  "xmpp: the stream's default namespace is not "
                  "jabber:client");
    ngx_xmpp_parser_fail(s, NGX_XMPP_ERR_NAMESPACE);

    return NGX_ERROR;
}


/*
 * The client's stream root again, as a prefix to start a fresh parser
 * with: the same qualified name (so the client's end tag matches) and
 * the same namespace declarations.  With it a TCP stream, like a
 * WebSocket one, gives its parser back between stanzas.
 */
static ngx_int_t
ngx_xmpp_parser_save_root(ngx_xmpp_session_t *s, const xmlChar *localname,
    const xmlChar *prefix, int nb_namespaces, const xmlChar **namespaces)
{
    int               i;
    ngx_xmpp_wbuf_t   b;

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = s->conf->max_stanza_size_preauth;

    ngx_xmpp_wbuf_lit(&b, "<");

    if (prefix) {
        ngx_xmpp_wbuf_str(&b, (const char *) prefix);
        ngx_xmpp_wbuf_lit(&b, ":");
    }

    ngx_xmpp_wbuf_str(&b, (const char *) localname);

    for (i = 0; i < nb_namespaces; i++) {
        ngx_xmpp_wbuf_lit(&b, " xmlns");

        if (namespaces[i * 2]) {
            ngx_xmpp_wbuf_lit(&b, ":");
            ngx_xmpp_wbuf_str(&b, (const char *) namespaces[i * 2]);
        }

        ngx_xmpp_wbuf_lit(&b, "='");
        ngx_xmpp_wbuf_esc(&b, namespaces[i * 2 + 1],
                          ngx_strlen(namespaces[i * 2 + 1]));
        ngx_xmpp_wbuf_lit(&b, "'");
    }

    ngx_xmpp_wbuf_lit(&b, ">");

    if (b.failed) {
        ngx_xmpp_wbuf_free(&b);
        ngx_xmpp_parser_fail(s, NGX_XMPP_ERR_POLICY);
        return NGX_ERROR;
    }

    s->stream_root.len = b.last - b.start;
    s->stream_root.data = ngx_pnalloc(s->pool, s->stream_root.len);

    if (s->stream_root.data == NULL) {
        ngx_xmpp_wbuf_free(&b);
        ngx_xmpp_parser_fail(s, NGX_XMPP_ERR_INTERNAL);
        return NGX_ERROR;
    }

    ngx_memcpy(s->stream_root.data, b.start, s->stream_root.len);
    ngx_xmpp_wbuf_free(&b);

    return NGX_OK;
}


static void
ngx_xmpp_parser_header(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n)
{
    ngx_pool_t  *pool;

    pool = s->stanza_pool;

    ngx_xmpp_stream_header(s, n);

    s->stanza_pool = NULL;
    ngx_destroy_pool(pool);

    if (s->close_pending) {
        xmlStopParser(s->parser);
        return;
    }

    /* from now on the parser may be dropped and taken again */
    s->parser_prefix = s->stream_root;
}


static void
ngx_xmpp_sax_start(void *ctx, const xmlChar *localname,
    const xmlChar *prefix, const xmlChar *uri, int nb_namespaces,
    const xmlChar **namespaces, int nb_attributes, int nb_defaulted,
    const xmlChar **attributes)
{
    ngx_xmpp_session_t *s = ctx;

    int               i;
    size_t            len;
    ngx_uint_t        header;
    ngx_xmpp_node_t  *n;
    ngx_xmpp_attr_t  *a;

    if (s->parser_error) {
        return;
    }

    /*
     * depth 0 is the stream root: synthetic for WebSocket, ignored; the
     * client's <stream:stream> for TCP, checked and handed on as the
     * stream header (RFC 6120 4.7, 4.8)
     */
    header = 0;

    if (s->depth++ == 0) {
        if (s->parser_prefix.len) {
            return;
        }

        if (ngx_xmpp_parser_root_ok(s, localname, uri, nb_namespaces,
                                    namespaces)
            != NGX_OK
            || ngx_xmpp_parser_save_root(s, localname, prefix,
                                         nb_namespaces, namespaces)
               != NGX_OK)
        {
            return;
        }

        header = 1;
    }

    if (s->depth - 1 > s->conf->max_depth) {
        ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                      "xmpp: element nesting deeper than %ui",
                      s->conf->max_depth);
        ngx_xmpp_parser_fail(s, NGX_XMPP_ERR_POLICY);
        return;
    }

    if ((ngx_uint_t) nb_attributes > s->conf->max_attrs) {
        ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                      "xmpp: more than %ui attributes", s->conf->max_attrs);
        ngx_xmpp_parser_fail(s, NGX_XMPP_ERR_POLICY);
        return;
    }

    if (s->depth == 2 || header) {
        s->stanza_size = 0;
        s->stanza_pool = ngx_create_pool(1024, s->connection->log);
        if (s->stanza_pool == NULL) {
            ngx_xmpp_parser_fail(s, NGX_XMPP_ERR_INTERNAL);
            return;
        }
    }

    n = ngx_pcalloc(s->stanza_pool, sizeof(ngx_xmpp_node_t));
    if (n == NULL) {
        ngx_xmpp_parser_fail(s, NGX_XMPP_ERR_INTERNAL);
        return;
    }

    len = ngx_strlen(localname);

    if (ngx_xmpp_parser_account(s, 2 * len + 16) != NGX_OK
        || ngx_xmpp_parser_str(s, &n->name, localname, len) != NGX_OK)
    {
        return;
    }

    len = uri ? ngx_strlen(uri) : 0;

    if (ngx_xmpp_parser_account(s, len + 10) != NGX_OK
        || ngx_xmpp_parser_str(s, &n->ns, uri, len) != NGX_OK)
    {
        return;
    }

    if (nb_attributes) {
        n->attrs = ngx_palloc(s->stanza_pool,
                              nb_attributes * sizeof(ngx_xmpp_attr_t));
        if (n->attrs == NULL) {
            ngx_xmpp_parser_fail(s, NGX_XMPP_ERR_INTERNAL);
            return;
        }
    }

    /* SAX2 attributes: localname, prefix, URI, value, end */
    for (i = 0; i < nb_attributes; i++) {
        a = &n->attrs[i];

        len = ngx_strlen(attributes[i * 5]);
        if (ngx_xmpp_parser_account(s, len + 4) != NGX_OK
            || ngx_xmpp_parser_str(s, &a->name, attributes[i * 5], len)
               != NGX_OK)
        {
            return;
        }

        len = attributes[i * 5 + 2] ? ngx_strlen(attributes[i * 5 + 2]) : 0;
        if (ngx_xmpp_parser_str(s, &a->ns, attributes[i * 5 + 2], len)
            != NGX_OK)
        {
            return;
        }

        len = attributes[i * 5 + 4] - attributes[i * 5 + 3];
        if (ngx_xmpp_parser_account(s, len) != NGX_OK
            || ngx_xmpp_parser_str(s, &a->value, attributes[i * 5 + 3], len)
               != NGX_OK)
        {
            return;
        }

        ngx_xmpp_parser_unescape_amp(&a->value);
    }

    n->nattrs = nb_attributes;

    if (header) {
        ngx_xmpp_parser_header(s, n);
        return;
    }

    if (s->depth == 2) {
        s->root = n;

    } else {
        n->parent = s->cur;

        if (s->cur->last) {
            s->cur->last->next = n;
        } else {
            s->cur->child = n;
        }

        s->cur->last = n;
    }

    s->cur = n;
}


static void
ngx_xmpp_sax_end(void *ctx, const xmlChar *localname, const xmlChar *prefix,
    const xmlChar *uri)
{
    ngx_xmpp_session_t *s = ctx;

    ngx_pool_t       *pool;
    ngx_xmpp_node_t  *root;

    if (s->parser_error) {
        return;
    }

    if (s->depth == 0) {
        return;
    }

    if (--s->depth == 0) {
        /* the client closed the stream root: only TCP has one */
        s->elements++;
        ngx_xmpp_stream_element(s, NULL);
        return;
    }

    if (s->depth > 1) {
        s->cur = s->cur->parent;
        return;
    }

    root = s->root;
    pool = s->stanza_pool;

    s->root = NULL;
    s->cur = NULL;
    s->elements++;

    /* the stanza's pool stays s->stanza_pool while it is dispatched */
    ngx_xmpp_stream_element(s, root);

    s->stanza_pool = NULL;
    ngx_destroy_pool(pool);

    if (s->close_pending) {
        xmlStopParser(s->parser);
    }
}


static void
ngx_xmpp_sax_text(void *ctx, const xmlChar *ch, int len)
{
    ngx_xmpp_session_t *s = ctx;

    ngx_xmpp_node_t  *n, *last;

    if (s->parser_error) {
        return;
    }

    /* whitespace between stanzas is keepalive (RFC 6120 section 4.6.1) */
    if (s->depth < 2) {
        return;
    }

    /*
     * libxml2 splits text at every reference; each piece becomes its own
     * text node, since appending would copy quadratically.  The node's
     * own cost is accounted too.
     */
    if (ngx_xmpp_parser_account(s, len + 32) != NGX_OK) {
        return;
    }

    last = s->cur->last;

    n = ngx_pcalloc(s->stanza_pool, sizeof(ngx_xmpp_node_t));
    if (n == NULL) {
        ngx_xmpp_parser_fail(s, NGX_XMPP_ERR_INTERNAL);
        return;
    }

    if (ngx_xmpp_parser_str(s, &n->text, ch, len) != NGX_OK) {
        return;
    }

    n->parent = s->cur;

    if (last) {
        last->next = n;
    } else {
        s->cur->child = n;
    }

    s->cur->last = n;
}


static void
ngx_xmpp_sax_restricted(void *ctx, const xmlChar *a, const xmlChar *b)
{
    ngx_xmpp_session_t *s = ctx;

    ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                  "xmpp: restricted XML (processing instruction)");
    ngx_xmpp_parser_fail(s, NGX_XMPP_ERR_RESTRICTED);
}


static void
ngx_xmpp_sax_comment(void *ctx, const xmlChar *value)
{
    ngx_xmpp_session_t *s = ctx;

    ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                  "xmpp: restricted XML (comment)");
    ngx_xmpp_parser_fail(s, NGX_XMPP_ERR_RESTRICTED);
}


static void
ngx_xmpp_sax_subset(void *ctx, const xmlChar *name,
    const xmlChar *external_id, const xmlChar *system_id)
{
    ngx_xmpp_session_t *s = ctx;

    ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                  "xmpp: restricted XML (DTD)");
    ngx_xmpp_parser_fail(s, NGX_XMPP_ERR_RESTRICTED);
}


static void
ngx_xmpp_sax_entity_decl(void *ctx, const xmlChar *name, int type,
    const xmlChar *public_id, const xmlChar *system_id, xmlChar *content)
{
    ngx_xmpp_session_t *s = ctx;

    ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                  "xmpp: restricted XML (entity declaration)");
    ngx_xmpp_parser_fail(s, NGX_XMPP_ERR_RESTRICTED);
}


/* no entity other than the five predefined ones exists */
static xmlEntityPtr
ngx_xmpp_sax_get_entity(void *ctx, const xmlChar *name)
{
    ngx_xmpp_session_t *s = ctx;

    ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                  "xmpp: restricted XML (entity reference)");
    ngx_xmpp_parser_fail(s, NGX_XMPP_ERR_RESTRICTED);

    return NULL;
}


static void
ngx_xmpp_sax_error(void *ctx, xmlErrorPtr err)
{
    ngx_xmpp_session_t *s = ctx;

    ngx_uint_t  e;

    if (err == NULL || err->level < XML_ERR_ERROR) {
        return;
    }

    switch (err->code) {

    /* an XML declaration or PI where none may be (RFC 6120 11.1, 11.5) */
    case XML_ERR_RESERVED_XML_NAME:
    case XML_ERR_PI_NOT_STARTED:
    case XML_ERR_PI_NOT_FINISHED:
    case XML_ERR_DOCTYPE_NOT_FINISHED:
    case XML_ERR_ENTITYREF_SEMICOL_MISSING:
    case XML_ERR_UNDECLARED_ENTITY:
    case XML_WAR_UNDECLARED_ENTITY:
        e = NGX_XMPP_ERR_RESTRICTED;
        break;

    default:
        e = NGX_XMPP_ERR_NOT_WELL_FORMED;
        break;
    }

    ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                  "xmpp: bad XML at line %d: %s", err->line,
                  err->message ? err->message : "(no message)");

    ngx_xmpp_parser_fail(s, e);
}


static xmlSAXHandler  ngx_xmpp_sax;


static void
ngx_xmpp_parser_sax_init(void)
{
    if (ngx_xmpp_sax.initialized) {
        return;
    }

    ngx_xmpp_sax.startElementNs = ngx_xmpp_sax_start;
    ngx_xmpp_sax.endElementNs = ngx_xmpp_sax_end;
    ngx_xmpp_sax.characters = ngx_xmpp_sax_text;
    ngx_xmpp_sax.cdataBlock = ngx_xmpp_sax_text;
    ngx_xmpp_sax.processingInstruction = ngx_xmpp_sax_restricted;
    ngx_xmpp_sax.comment = ngx_xmpp_sax_comment;
    ngx_xmpp_sax.internalSubset = ngx_xmpp_sax_subset;
    ngx_xmpp_sax.externalSubset = ngx_xmpp_sax_subset;
    ngx_xmpp_sax.entityDecl = ngx_xmpp_sax_entity_decl;
    ngx_xmpp_sax.getEntity = ngx_xmpp_sax_get_entity;
    ngx_xmpp_sax.getParameterEntity = ngx_xmpp_sax_get_entity;
    ngx_xmpp_sax.serror = ngx_xmpp_sax_error;
    ngx_xmpp_sax.initialized = XML_SAX2_MAGIC;
}


static void
ngx_xmpp_parser_cleanup(void *data)
{
    ngx_xmpp_parser_free(data);
}


/*
 * A libxml2 push parser costs about 16 KiB.  A WebSocket stream needs one
 * only while a message is being parsed, since every message is a whole
 * element (RFC 7395 3.3.3): between messages the session returns its
 * parser to a per-worker cache, reset, and idle sessions hold none.
 * A parser whose dictionary has grown (many distinct names) is freed
 * rather than cached, so one client cannot inflate it for everyone.
 * The cache fills to what the busiest moment needed (a burst of
 * sign-ins: up to 64, 1 MiB); ngx_xmpp_parser_trim() frees what then
 * stays unused.
 */

#define NGX_XMPP_PARSER_CACHE     64
#define NGX_XMPP_PARSER_DICT_MAX  1024

static xmlParserCtxtPtr  ngx_xmpp_parser_cache[NGX_XMPP_PARSER_CACHE];
static ngx_uint_t        ngx_xmpp_parser_cached;
static ngx_uint_t        ngx_xmpp_parser_low;   /* fewest since the trim */


static ngx_int_t
ngx_xmpp_parser_acquire(ngx_xmpp_session_t *s)
{
    xmlParserCtxtPtr  ctxt;

    if (ngx_xmpp_parser_cached) {
        ctxt = ngx_xmpp_parser_cache[--ngx_xmpp_parser_cached];
        ctxt->userData = s;

        if (ngx_xmpp_parser_cached < ngx_xmpp_parser_low) {
            ngx_xmpp_parser_low = ngx_xmpp_parser_cached;
        }

        ngx_xmpp_metrics_parsers(ngx_xmpp_parser_cached);

    } else {
        ctxt = xmlCreatePushParserCtxt(&ngx_xmpp_sax, s, NULL, 0, NULL);
        if (ctxt == NULL) {
            ngx_log_error(NGX_LOG_ERR, s->connection->log, 0,
                          "xmpp: xmlCreatePushParserCtxt() failed");
            return NGX_ERROR;
        }
    }

    xmlCtxtUseOptions(ctxt, XML_PARSE_NONET | XML_PARSE_NOCDATA
                            | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);

    s->parser = ctxt;
    s->depth = 0;

    if (s->parser_prefix.len == 0) {
        return NGX_OK;
    }

    return ngx_xmpp_parser_feed(s, s->parser_prefix.data,
                                s->parser_prefix.len);
}


/* at a WebSocket message boundary: give the parser back if idle */
void
ngx_xmpp_parser_release(ngx_xmpp_session_t *s)
{
    xmlParserCtxtPtr  ctxt;

    ctxt = s->parser;

    if (ctxt == NULL || s->parser_prefix.len == 0 || s->depth != 1
        || s->parser_error || s->stanza_pool || s->close_pending
        || s->restart_pending
        || (ctxt->input && ctxt->input->end > ctxt->input->cur))
    {
        return;
    }

    s->parser = NULL;
    s->depth = 0;

    if (ngx_xmpp_parser_cached < NGX_XMPP_PARSER_CACHE
        && xmlDictSize(ctxt->dict) < NGX_XMPP_PARSER_DICT_MAX
        && xmlCtxtResetPush(ctxt, NULL, 0, NULL, NULL) == 0)
    {
        ctxt->userData = NULL;
        ngx_xmpp_parser_cache[ngx_xmpp_parser_cached++] = ctxt;
        ngx_xmpp_metrics_parsers(ngx_xmpp_parser_cached);
        return;
    }

    xmlFreeParserCtxt(ctxt);
}


/*
 * Called once a second (the housekeeping timer).  The cache is a stack:
 * the bottom ngx_xmpp_parser_low entries were not taken since the last
 * call, so this worker's load did not need them; they are freed, and
 * the ones in use keep their place.  Returns how many were freed.
 */
ngx_uint_t
ngx_xmpp_parser_trim(void)
{
    ngx_uint_t  i, n;

    n = ngx_xmpp_parser_low;

    for (i = 0; i < n; i++) {
        xmlFreeParserCtxt(ngx_xmpp_parser_cache[i]);
    }

    ngx_xmpp_parser_cached -= n;

    if (n && ngx_xmpp_parser_cached) {
        ngx_memmove(ngx_xmpp_parser_cache, ngx_xmpp_parser_cache + n,
                    ngx_xmpp_parser_cached * sizeof(xmlParserCtxtPtr));
    }

    ngx_xmpp_parser_low = ngx_xmpp_parser_cached;

    if (n) {
        ngx_xmpp_metrics_parsers(ngx_xmpp_parser_cached);
    }

    return n;
}


/*
 * prefix: the synthetic root for WebSocket (the parser is then taken
 * lazily), or NULL for TCP, whose parser lives as long as the stream.
 */
ngx_int_t
ngx_xmpp_parser_init(ngx_xmpp_session_t *s, u_char *prefix, size_t len)
{
    ngx_pool_cleanup_t  *cln;

    ngx_xmpp_parser_sax_init();

    cln = ngx_pool_cleanup_add(s->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_xmpp_parser_cleanup;
    cln->data = s;

    s->parser_error = NGX_XMPP_ERR_NONE;
    s->parser_prefix.data = prefix;
    s->parser_prefix.len = prefix ? len : 0;
    s->own_root = (prefix == NULL);

    if (prefix) {
        return NGX_OK;
    }

    return ngx_xmpp_parser_acquire(s);
}


static ngx_int_t
ngx_xmpp_parser_renew(ngx_xmpp_session_t *s)
{
    ngx_xmpp_parser_free(s);

    s->parser_error = NGX_XMPP_ERR_NONE;
    s->root = NULL;
    s->cur = NULL;

    return ngx_xmpp_parser_acquire(s);
}


/*
 * A TCP stream starts over with a new header after STARTTLS and after
 * SASL (RFC 6120 5.4.3.3, 6.4.6), which needs a fresh parser.  Asked
 * for during a feed (STARTTLS), the rest of that chunk is dropped, as
 * it must be: nothing sent in the clear after <starttls/> may count.
 * WebSocket restarts with a new <open/> inside the same parser.
 */
ngx_int_t
ngx_xmpp_parser_restart(ngx_xmpp_session_t *s)
{
    if (!s->own_root) {
        return NGX_OK;
    }

    /* the next bytes are a new stream header, not a resumed stream */
    s->parser_prefix.len = 0;

    if (s->in_feed) {
        s->restart_pending = 1;
        xmlStopParser(s->parser);
        return NGX_OK;
    }

    return ngx_xmpp_parser_renew(s);
}


/*
 * Feeds bytes; on a parse error sends the stream error and returns
 * NGX_ERROR.  Bytes that libxml2 holds without finishing a token count
 * against the stanza limit too, so an endless attribute value is cut.
 */
ngx_int_t
ngx_xmpp_parser_feed(ngx_xmpp_session_t *s, u_char *data, size_t len)
{
    int                 rc;
    size_t              held;
    xmlParserInputPtr   in;

    if (s->parser == NULL) {
        /* a released parser: a TCP stream always has its root saved */
        if ((s->parser_prefix.len == 0 && !s->own_root)
            || ngx_xmpp_parser_acquire(s) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    rc = xmlParseChunk(s->parser, (const char *) data, (int) len, 0);

    if (s->restart_pending && !s->parser_error && !s->close_pending) {
        s->restart_pending = 0;
        return ngx_xmpp_parser_renew(s);
    }

    if (s->parser_error == NGX_XMPP_ERR_NONE && s->parser) {
        in = s->parser->input;

        held = (in && in->end > in->cur) ? (size_t) (in->end - in->cur) : 0;

        if (held > ngx_xmpp_parser_limit(s)) {
            ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                          "xmpp: %uz unparsed bytes held", held);
            s->parser_error = NGX_XMPP_ERR_POLICY;
        }

        if (rc != XML_ERR_OK && !s->close_pending && !s->parser_error) {
            s->parser_error = NGX_XMPP_ERR_NOT_WELL_FORMED;
        }
    }

    if (s->parser_error && !s->close_pending) {
        ngx_xmpp_session_error(s,
                               ngx_xmpp_parser_conditions[s->parser_error],
                               NULL);
        return NGX_ERROR;
    }

    return s->close_pending ? NGX_ERROR : NGX_OK;
}


void
ngx_xmpp_parser_free(ngx_xmpp_session_t *s)
{
    if (s->stanza_pool) {
        ngx_destroy_pool(s->stanza_pool);
        s->stanza_pool = NULL;
    }

    if (s->parser) {
        xmlFreeParserCtxt(s->parser);
        s->parser = NULL;
    }
}
