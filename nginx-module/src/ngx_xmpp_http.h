
/*
 * HTTP helpers of the files under the http module's locations: the
 * WebSocket upgrade, BOSH, host-meta, the admin console, the status
 * and metrics pages.  The stream module never includes this header.
 */


#ifndef _NGX_XMPP_HTTP_H_INCLUDED_
#define _NGX_XMPP_HTTP_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


ngx_int_t ngx_xmpp_http_header_n(ngx_http_request_t *r, const char *key,
    u_char *value, size_t len);
ngx_int_t ngx_xmpp_http_header(ngx_http_request_t *r, const char *key,
    const char *value);
ngx_table_elt_t *ngx_xmpp_http_find(ngx_http_request_t *r,
    const char *name);
ngx_int_t ngx_xmpp_http_send(ngx_http_request_t *r, ngx_buf_t *b);
ngx_int_t ngx_xmpp_http_read_body(ngx_http_request_t *r,
    ngx_http_client_body_handler_pt handler);


#endif /* _NGX_XMPP_HTTP_H_INCLUDED_ */
