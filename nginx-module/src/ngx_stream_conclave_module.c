
/*
 * Conclave's stream module: XMPP over TCP (RFC 6120) in a stream
 * server.  "conclave_xmpp" makes the server's connections XMPP streams
 * (a listener with "ssl" gives XEP-0368 direct TLS);
 * "conclave_starttls_certificate" and "_key" enable STARTTLS on plain
 * listeners; "conclave_tls_record_layer" hands TLS 1.3 connections to
 * our record layer after OpenSSL's handshake (ngx_xmpp_tls.c).  The
 * XMPP settings themselves (domain, directory, limits, audit) are the
 * http block's: one core, one configuration.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_stream.h>
#include <ngx_http.h>
#include <ngx_stream_ssl_module.h>

#include "ngx_xmpp.h"


typedef struct {
    ngx_flag_t              enabled;
    ngx_str_t               certificate;
    ngx_str_t               certificate_key;
    ngx_uint_t              protocols;
    ngx_flag_t              record_layer;
    ngx_ssl_t              *ssl;          /* STARTTLS context */
} ngx_stream_conclave_srv_conf_t;


static void *ngx_stream_conclave_create_srv_conf(ngx_conf_t *cf);
static char *ngx_stream_conclave_merge_srv_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_stream_conclave_xmpp(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static void ngx_stream_conclave_handler(ngx_stream_session_t *s);
static ngx_int_t ngx_stream_conclave_postconfiguration(ngx_conf_t *cf);


static ngx_conf_bitmask_t  ngx_stream_conclave_protocols[] = {
    { ngx_string("TLSv1.2"), NGX_SSL_TLSv1_2 },
    { ngx_string("TLSv1.3"), NGX_SSL_TLSv1_3 },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_stream_conclave_commands[] = {

    { ngx_string("conclave_xmpp"),
      NGX_STREAM_SRV_CONF|NGX_CONF_NOARGS,
      ngx_stream_conclave_xmpp,
      NGX_STREAM_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("conclave_starttls_certificate"),
      NGX_STREAM_MAIN_CONF|NGX_STREAM_SRV_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_STREAM_SRV_CONF_OFFSET,
      offsetof(ngx_stream_conclave_srv_conf_t, certificate),
      NULL },

    { ngx_string("conclave_starttls_certificate_key"),
      NGX_STREAM_MAIN_CONF|NGX_STREAM_SRV_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_STREAM_SRV_CONF_OFFSET,
      offsetof(ngx_stream_conclave_srv_conf_t, certificate_key),
      NULL },

    /* RFC 7590 3.1: TLS 1.2 or later */
    { ngx_string("conclave_starttls_protocols"),
      NGX_STREAM_MAIN_CONF|NGX_STREAM_SRV_CONF|NGX_CONF_1MORE,
      ngx_conf_set_bitmask_slot,
      NGX_STREAM_SRV_CONF_OFFSET,
      offsetof(ngx_stream_conclave_srv_conf_t, protocols),
      &ngx_stream_conclave_protocols },

    { ngx_string("conclave_tls_record_layer"),
      NGX_STREAM_MAIN_CONF|NGX_STREAM_SRV_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_STREAM_SRV_CONF_OFFSET,
      offsetof(ngx_stream_conclave_srv_conf_t, record_layer),
      NULL },

      ngx_null_command
};


static ngx_stream_module_t  ngx_stream_conclave_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_stream_conclave_postconfiguration, /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    ngx_stream_conclave_create_srv_conf,   /* create server configuration */
    ngx_stream_conclave_merge_srv_conf     /* merge server configuration */
};


ngx_module_t  ngx_stream_conclave_module = {
    NGX_MODULE_V1,
    &ngx_stream_conclave_module_ctx,       /* module context */
    ngx_stream_conclave_commands,          /* module directives */
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


static void *
ngx_stream_conclave_create_srv_conf(ngx_conf_t *cf)
{
    ngx_stream_conclave_srv_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_stream_conclave_srv_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->enabled = NGX_CONF_UNSET;
    conf->record_layer = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_stream_conclave_merge_srv_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_stream_conclave_srv_conf_t *prev = parent;
    ngx_stream_conclave_srv_conf_t *conf = child;

    ngx_pool_cleanup_t  *cln;

    ngx_conf_merge_value(conf->enabled, prev->enabled, 0);
    ngx_conf_merge_value(conf->record_layer, prev->record_layer, 1);
    ngx_conf_merge_str_value(conf->certificate, prev->certificate, "");
    ngx_conf_merge_str_value(conf->certificate_key, prev->certificate_key,
                             "");
    ngx_conf_merge_bitmask_value(conf->protocols, prev->protocols,
                                 (NGX_CONF_BITMASK_SET|NGX_SSL_TLSv1_2
                                  |NGX_SSL_TLSv1_3));

    if (!conf->enabled || conf->certificate.len == 0) {
        return NGX_CONF_OK;
    }

    if (conf->certificate_key.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "no \"conclave_starttls_certificate_key\" for "
                           "\"conclave_starttls_certificate\"");
        return NGX_CONF_ERROR;
    }

    conf->ssl = ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t));
    if (conf->ssl == NULL) {
        return NGX_CONF_ERROR;
    }

    conf->ssl->log = cf->log;

    if (ngx_ssl_create(conf->ssl, conf->protocols, NULL) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ngx_ssl_cleanup_ctx(conf->ssl);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_ssl_cleanup_ctx;
    cln->data = conf->ssl;

    if (ngx_ssl_certificate(cf, conf->ssl, &conf->certificate,
                            &conf->certificate_key, NULL)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_stream_conclave_xmpp(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_stream_conclave_srv_conf_t  *ccf = conf;

    ngx_stream_core_srv_conf_t  *cscf;

    if (ccf->enabled != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    /* the core's settings live in the http block, parsed before */
    if (ngx_xmpp_cycle_conf(cf->cycle) == NULL) {
        return "needs an http block with \"conclave_domain\" before the "
               "stream block";
    }

    ccf->enabled = 1;

    cscf = ngx_stream_conf_get_module_srv_conf(cf, ngx_stream_core_module);
    cscf->handler = ngx_stream_conclave_handler;

    return NGX_CONF_OK;
}


static void
ngx_stream_conclave_handler(ngx_stream_session_t *s)
{
    ngx_xmpp_conf_t                 *xcf;
    ngx_stream_conclave_srv_conf_t  *ccf;

    xcf = ngx_xmpp_cycle_conf((ngx_cycle_t *) ngx_cycle);
    if (xcf == NULL) {
        ngx_stream_finalize_session(s, NGX_STREAM_INTERNAL_SERVER_ERROR);
        return;
    }

    ccf = ngx_stream_get_module_srv_conf(s, ngx_stream_conclave_module);

    ngx_xmpp_tcp_init(s, xcf, ccf->ssl, ccf->record_layer);
}


/*
 * After every server's merge, when both TLS contexts of an XMPP server
 * exist (direct TLS: the stream ssl module's; STARTTLS: ours): where
 * the record layer is on, they are made to hand their TLS 1.3
 * connections over.
 */
static ngx_int_t
ngx_stream_conclave_postconfiguration(ngx_conf_t *cf)
{
    ngx_uint_t                       i;
    ngx_stream_ssl_conf_t           *sslcf;
    ngx_stream_core_srv_conf_t     **cscfp;
    ngx_stream_core_main_conf_t     *cmcf;
    ngx_stream_conclave_srv_conf_t  *ccf;

    cmcf = ngx_stream_conf_get_module_main_conf(cf, ngx_stream_core_module);
    cscfp = cmcf->servers.elts;

    for (i = 0; i < cmcf->servers.nelts; i++) {
        ccf = cscfp[i]->ctx->srv_conf[ngx_stream_conclave_module.ctx_index];

        if (ccf->enabled != 1 || !ccf->record_layer) {
            continue;
        }

        sslcf = cscfp[i]->ctx->srv_conf[ngx_stream_ssl_module.ctx_index];

        if (sslcf->ssl.ctx
            && ngx_xmpp_tls_prepare(cf, sslcf->ssl.ctx) != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (ccf->ssl && ngx_xmpp_tls_prepare(cf, ccf->ssl->ctx) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}
