
/*
 * Conclave's stream module: the home of XMPP over TCP (RFC 6120, with
 * STARTTLS and XEP-0368 direct TLS).  It registers with nginx so that
 * the one .so carries both halves; the TCP transport itself is not
 * written yet and this module has no directives so far.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_stream.h>

#include "ngx_xmpp.h"


static ngx_stream_module_t  ngx_stream_conclave_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL                                   /* merge server configuration */
};


ngx_module_t  ngx_stream_conclave_module = {
    NGX_MODULE_V1,
    &ngx_stream_conclave_module_ctx,       /* module context */
    NULL,                                  /* module directives */
    NGX_STREAM_MODULE,                     /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};
