
/*
 * XEP-0156 connection discovery over HTTP: /.well-known/host-meta as
 * XRD (RFC 6415 section 3) and /.well-known/host-meta.json as JRD
 * (RFC 6415 appendix A), each naming the WebSocket endpoint (RFC 7395
 * section 4) and, when one is configured, the BOSH endpoint (XEP-0206).
 *
 * The URLs come from conclave_websocket_url and conclave_bosh_url.  An
 * unset one is derived from the request: ws:// or wss:// (http:// or
 * https:// for BOSH) by whether the connection is TLS, then the Host
 * header, then the first literal location that holds conclave_websocket
 * (conclave_bosh).  Without a BOSH location there is no BOSH link.  A
 * server behind a TLS-terminating proxy sets the URLs.
 */


#include <ngx_http.h>

#include "ngx_xmpp.h"
#include "ngx_xmpp_http.h"


#define NGX_XMPP_HOSTMETA_WS_PATH    "/xmpp-websocket"
#define NGX_XMPP_HOSTMETA_CACHE      "max-age=300"
#define NGX_XMPP_HOSTMETA_HOST_MAX   262

#define NGX_XMPP_REL_WEBSOCKET  "urn:xmpp:alt-connections:websocket"
#define NGX_XMPP_REL_XBOSH      "urn:xmpp:alt-connections:xbosh"

#define NGX_XMPP_XRD_HEAD                                                  \
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"                         \
    "<XRD xmlns=\"http://docs.oasis-open.org/ns/xri/xrd-1.0\">\n"


typedef struct {
    ngx_str_t    rel;
    ngx_str_t    href;
} ngx_xmpp_hostmeta_link_t;


/* one document type: its framing around the links, and its escaping */
typedef struct {
    ngx_str_t    content_type;
    ngx_str_t    head;
    ngx_str_t    rel;                    /* before the rel value */
    ngx_str_t    href;                   /* between rel and href */
    ngx_str_t    end;                    /* after the href */
    ngx_str_t    sep;                    /* between two links */
    ngx_str_t    tail;
    uintptr_t  (*escape)(u_char *dst, u_char *src, size_t size);
} ngx_xmpp_hostmeta_format_t;


static ngx_xmpp_hostmeta_format_t  ngx_xmpp_hostmeta_xrd = {
    ngx_string("application/xrd+xml"),
    ngx_string(NGX_XMPP_XRD_HEAD),
    ngx_string("  <Link rel=\""),
    ngx_string("\" href=\""),
    ngx_string("\"/>\n"),
    ngx_string(""),
    ngx_string("</XRD>\n"),
    ngx_escape_html
};

static ngx_xmpp_hostmeta_format_t  ngx_xmpp_hostmeta_jrd = {
    ngx_string("application/json"),
    ngx_string("{\"links\":["),
    ngx_string("{\"rel\":\""),
    ngx_string("\",\"href\":\""),
    ngx_string("\"}"),
    ngx_string(","),
    ngx_string("]}\n"),
    ngx_escape_json
};


static ngx_int_t ngx_xmpp_hostmeta_url(ngx_http_request_t *r,
    const char *scheme, ngx_str_t *path, ngx_str_t *url);
static ngx_int_t ngx_xmpp_hostmeta_body(ngx_pool_t *pool,
    ngx_xmpp_hostmeta_format_t *f, ngx_xmpp_hostmeta_link_t *links,
    ngx_uint_t n, ngx_str_t *body);
static ngx_int_t ngx_xmpp_hostmeta_send(ngx_http_request_t *r,
    ngx_xmpp_hostmeta_format_t *f, ngx_str_t *body);


/*
 * The URL directives.  Both must be absolute: host-meta is fetched from
 * another origin than the one it names (XEP-0156 section 2).  Characters
 * RFC 3986 never allows in a URL are refused here, so the documents can
 * quote the URL as is.
 */

static char *
ngx_xmpp_hostmeta_conf_url(ngx_conf_t *cf, ngx_command_t *cmd, void *conf,
    const char **schemes)
{
    size_t        n;
    u_char       *p, *last;
    ngx_str_t    *field, *value;
    ngx_uint_t    i;

    field = (ngx_str_t *) ((char *) conf + cmd->offset);

    if (field->data != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;
    last = value[1].data + value[1].len;

    for (p = value[1].data; p < last; p++) {
        if (*p <= 0x20 || *p >= 0x7f
            || ngx_strchr("\"<>\\^`{|}", *p) != NULL)
        {
            return "has a character not allowed in a URL";
        }
    }

    for (i = 0; schemes[i] != NULL; i++) {
        n = ngx_strlen(schemes[i]);

        if (value[1].len > n
            && ngx_strncasecmp(value[1].data, (u_char *) schemes[i], n) == 0
            && value[1].data[n] != '/')
        {
            *field = value[1];
            return NGX_CONF_OK;
        }
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"%V\" must be an absolute %s or %s URL, not \"%V\"",
                       &cmd->name, schemes[0], schemes[1], &value[1]);

    return NGX_CONF_ERROR;
}


char *
ngx_xmpp_hostmeta_conf_ws_url(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    static const char  *schemes[] = { "wss://", "ws://", NULL };

    return ngx_xmpp_hostmeta_conf_url(cf, cmd, conf, schemes);
}


char *
ngx_xmpp_hostmeta_conf_bosh_url(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    static const char  *schemes[] = { "https://", "http://", NULL };

    return ngx_xmpp_hostmeta_conf_url(cf, cmd, conf, schemes);
}


/*
 * GET or HEAD /.well-known/host-meta[.json].  The document type follows
 * the URI: XEP-0156 section 2 names both, and clients ask for one by
 * name rather than by Accept.  host-meta must be readable from any
 * origin (CORS, XEP-0156 section 2), and it rarely changes.
 */

ngx_int_t
ngx_xmpp_hostmeta_handler(ngx_http_request_t *r, ngx_xmpp_conf_t *xcf)
{
    ngx_int_t                    rc;
    ngx_str_t                    body, path;
    ngx_uint_t                   n;
    ngx_xmpp_hostmeta_link_t     links[2];
    ngx_xmpp_hostmeta_format_t  *f;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        if (ngx_xmpp_http_header(r, "Allow", "GET, HEAD") != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    ngx_str_set(&links[0].rel, NGX_XMPP_REL_WEBSOCKET);

    if (xcf->websocket_url.len) {
        links[0].href = xcf->websocket_url;

    } else {
        path = xcf->websocket_location;

        if (path.len == 0) {
            ngx_str_set(&path, NGX_XMPP_HOSTMETA_WS_PATH);
        }

        rc = ngx_xmpp_hostmeta_url(r, "ws", &path, &links[0].href);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    n = 1;

    if (xcf->bosh_url.len) {
        links[1].href = xcf->bosh_url;
        n = 2;

    } else if (xcf->bosh_location.len) {
        rc = ngx_xmpp_hostmeta_url(r, "http", &xcf->bosh_location,
                                   &links[1].href);
        if (rc != NGX_OK) {
            return rc;
        }

        n = 2;
    }

    ngx_str_set(&links[1].rel, NGX_XMPP_REL_XBOSH);

    if (r->uri.len > 5
        && ngx_strncmp(r->uri.data + r->uri.len - 5, ".json", 5) == 0)
    {
        f = &ngx_xmpp_hostmeta_jrd;

    } else {
        f = &ngx_xmpp_hostmeta_xrd;
    }

    if (ngx_xmpp_hostmeta_body(r->pool, f, links, n, &body) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_xmpp_hostmeta_send(r, f, &body);
}


static ngx_int_t
ngx_xmpp_hostmeta_send(ngx_http_request_t *r, ngx_xmpp_hostmeta_format_t *f,
    ngx_str_t *body)
{
    ngx_buf_t  *b;

    r->headers_out.content_type = f->content_type;
    r->headers_out.content_type_len = f->content_type.len;
    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = body->len;

    if (ngx_xmpp_http_header(r, "Access-Control-Allow-Origin", "*")
        != NGX_OK
        || ngx_xmpp_http_header(r, "Cache-Control", NGX_XMPP_HOSTMETA_CACHE)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = body->data;
    b->last = body->data + body->len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    return ngx_xmpp_http_send(r, b);
}


/*
 * A URL derived from the request: scheme ("ws" or "http", with an "s"
 * on TLS), host and path.  The Host header goes into the documents, so
 * it must look like a host and an optional port (RFC 7230 section 5.4):
 * anything else is a 400.  Without a Host header (HTTP/1.0) the local
 * address stands in.
 */

static ngx_int_t
ngx_xmpp_hostmeta_url(ngx_http_request_t *r, const char *scheme,
    ngx_str_t *path, ngx_str_t *url)
{
    u_char      *p, *last;
    ngx_str_t    host;
    ngx_uint_t   secure;
    u_char       addr[NGX_SOCKADDR_STRLEN];

    if (r->headers_in.host != NULL) {
        host = r->headers_in.host->value;

    } else {
        host.data = addr;
        host.len = NGX_SOCKADDR_STRLEN;

        if (ngx_connection_local_sockaddr(r->connection, &host, 1)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (host.len == 0 || host.len > NGX_XMPP_HOSTMETA_HOST_MAX) {
        return NGX_HTTP_BAD_REQUEST;
    }

    last = host.data + host.len;

    for (p = host.data; p < last; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
            || (*p >= '0' && *p <= '9')
            || (*p != '\0' && ngx_strchr(".-_:[]", *p) != NULL))
        {
            continue;
        }

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "host-meta: client sent a bad Host header");
        return NGX_HTTP_BAD_REQUEST;
    }

    secure = 0;

#if (NGX_HTTP_SSL)
    secure = (r->connection->ssl != NULL);
#endif

    url->len = ngx_strlen(scheme) + sizeof("s://") - 1 + host.len + path->len;

    url->data = ngx_pnalloc(r->pool, url->len);
    if (url->data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(url->data, "%s%s://%V%V", scheme, secure ? "s" : "",
                    &host, path);
    url->len = p - url->data;

    return NGX_OK;
}


/*
 * The document: its size first, with room for escaping each href (an XML
 * attribute or a JSON string), then the bytes.
 */

static ngx_int_t
ngx_xmpp_hostmeta_body(ngx_pool_t *pool, ngx_xmpp_hostmeta_format_t *f,
    ngx_xmpp_hostmeta_link_t *links, ngx_uint_t n, ngx_str_t *body)
{
    u_char      *p;
    size_t       len;
    ngx_str_t   *href;
    ngx_uint_t   i;

    len = f->head.len + f->tail.len;

    for (i = 0; i < n; i++) {
        href = &links[i].href;
        len += f->sep.len + f->rel.len + links[i].rel.len + f->href.len
               + href->len + f->escape(NULL, href->data, href->len)
               + f->end.len;
    }

    p = ngx_pnalloc(pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;
    p = ngx_cpymem(p, f->head.data, f->head.len);

    for (i = 0; i < n; i++) {
        href = &links[i].href;

        if (i > 0) {
            p = ngx_cpymem(p, f->sep.data, f->sep.len);
        }

        p = ngx_cpymem(p, f->rel.data, f->rel.len);
        p = ngx_cpymem(p, links[i].rel.data, links[i].rel.len);
        p = ngx_cpymem(p, f->href.data, f->href.len);
        p = (u_char *) f->escape(p, href->data, href->len);
        p = ngx_cpymem(p, f->end.data, f->end.len);
    }

    p = ngx_cpymem(p, f->tail.data, f->tail.len);
    body->len = p - body->data;

    return NGX_OK;
}


