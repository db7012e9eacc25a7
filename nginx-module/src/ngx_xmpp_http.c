
/*
 * The HTTP work that the WebSocket upgrade (RFC 6455 section 4.2), BOSH
 * (XEP-0124 section 8), host-meta (RFC 6415), the admin console and the
 * status and metrics pages each need: a response header added, a
 * request header found, the body read, the answer sent.
 */


#include "ngx_xmpp_http.h"


/*
 * A response header; key and value are not copied, so they must live
 * as long as the request (literals, or the request's pool).
 */
ngx_int_t
ngx_xmpp_http_header_n(ngx_http_request_t *r, const char *key,
    u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value.data = value;
    h->value.len = len;
    h->lowcase_key = NULL;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif

    return NGX_OK;
}


ngx_int_t
ngx_xmpp_http_header(ngx_http_request_t *r, const char *key,
    const char *value)
{
    return ngx_xmpp_http_header_n(r, key, (u_char *) value,
                                  ngx_strlen(value));
}


/* the first request header of that name (RFC 9110 5.1: any case) */
ngx_table_elt_t *
ngx_xmpp_http_find(ngx_http_request_t *r, const char *name)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(name);
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


/*
 * Reads the request body without blocking, in one buffer; handler()
 * runs when all of it is there.  NGX_DONE, or the status to finalize
 * the request with.
 */
ngx_int_t
ngx_xmpp_http_read_body(ngx_http_request_t *r,
    ngx_http_client_body_handler_pt handler)
{
    ngx_int_t  rc;

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r, handler);

    return (rc >= NGX_HTTP_SPECIAL_RESPONSE) ? rc : NGX_DONE;
}


/* the response header set up so far, then b as the whole body */
ngx_int_t
ngx_xmpp_http_send(ngx_http_request_t *r, ngx_buf_t *b)
{
    ngx_int_t    rc;
    ngx_chain_t  out;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
