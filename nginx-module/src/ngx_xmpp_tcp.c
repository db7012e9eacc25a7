
/*
 * XMPP over TCP (RFC 6120) in a stream server: the client's bytes go
 * straight into the session's parser, whose root is the client's own
 * <stream:stream>.  Plain connections may be upgraded with STARTTLS
 * (section 5) using the server's certificate; a listener with "ssl"
 * gives direct TLS (XEP-0368) before the first byte reaches us.
 *
 * Idle connections hold no read buffer: reads go through one buffer
 * per worker, as for WebSocket.  A TLS 1.3 connection continues on our
 * record layer once its handshake is done (ngx_xmpp_tls.c), whether
 * direct or after STARTTLS, unless conclave_tls_record_layer is off.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_stream.h>

#include "ngx_xmpp.h"


/* reads of ngx_xmpp_tcp_buf per read event before yielding */
#define NGX_XMPP_TCP_READS  8


typedef struct {
    ngx_stream_session_t    *stream;
    ngx_xmpp_session_t      *session;
    ngx_ssl_t               *ssl;          /* for STARTTLS, or NULL */
    ngx_xmpp_tls_t          *tls;          /* our record layer, or NULL */
    unsigned                 tls_pending:1;
    unsigned                 record_layer:1;
} ngx_xmpp_tcp_t;


static ngx_int_t ngx_xmpp_tcp_open(ngx_xmpp_session_t *s);
static ngx_int_t ngx_xmpp_tcp_send(ngx_xmpp_session_t *s, u_char *data,
    size_t len);
static void ngx_xmpp_tcp_end(ngx_xmpp_session_t *s);
static void ngx_xmpp_tcp_finalize(ngx_xmpp_session_t *s);
static ngx_int_t ngx_xmpp_tcp_starttls(ngx_xmpp_session_t *s);
static void ngx_xmpp_tcp_read(ngx_event_t *rev);
static void ngx_xmpp_tcp_write(ngx_event_t *wev);
static void ngx_xmpp_tcp_tls_start(ngx_xmpp_tcp_t *t);
static void ngx_xmpp_tcp_tls_done(ngx_connection_t *c);
static ngx_int_t ngx_xmpp_tcp_tls_switch(ngx_xmpp_tcp_t *t);


static ngx_xmpp_transport_t  ngx_xmpp_tcp_transport = {
    ngx_string("tcp"),
    ngx_xmpp_tcp_open,
    ngx_xmpp_tcp_send,
    ngx_xmpp_tcp_end,
    ngx_xmpp_tcp_finalize,
    ngx_xmpp_tcp_starttls
};


static u_char  ngx_xmpp_tcp_buf[16384];


/*
 * The content handler's half in the core.  ssl is the STARTTLS context
 * of the server, or NULL; a connection that is already TLS (direct TLS)
 * is secure from the start and offers no STARTTLS.  record_layer: TLS
 * 1.3 continues on ngx_xmpp_tls.c after the handshake.
 */
void
ngx_xmpp_tcp_init(ngx_stream_session_t *ss, ngx_xmpp_conf_t *xcf,
    ngx_ssl_t *ssl, ngx_uint_t record_layer)
{
    ngx_connection_t    *c;
    ngx_xmpp_tcp_t      *t;
    ngx_xmpp_session_t  *s;

    c = ss->connection;

    t = ngx_pcalloc(c->pool, sizeof(ngx_xmpp_tcp_t));
    if (t == NULL) {
        ngx_stream_finalize_session(ss, NGX_STREAM_INTERNAL_SERVER_ERROR);
        return;
    }

    t->stream = ss;
    t->ssl = ssl;
    t->record_layer = record_layer ? 1 : 0;

    ngx_stream_set_ctx(ss, t, ngx_stream_conclave_module);

    s = ngx_xmpp_session_create(c, c->pool, xcf, &ngx_xmpp_tcp_transport, t);
    if (s == NULL) {
        ngx_stream_finalize_session(ss, NGX_STREAM_INTERNAL_SERVER_ERROR);
        return;
    }

    t->session = s;
    s->secure = (c->ssl != NULL);
    s->tls_available = (c->ssl == NULL && ssl != NULL);

    if (c->ssl && ngx_xmpp_tcp_tls_switch(t) != NGX_OK) {
        ngx_stream_finalize_session(ss, NGX_STREAM_INTERNAL_SERVER_ERROR);
        return;
    }

    if (ngx_xmpp_parser_init(s, NULL, 0) != NGX_OK) {
        ngx_stream_finalize_session(ss, NGX_STREAM_INTERNAL_SERVER_ERROR);
        return;
    }

    c->log->action = "serving XMPP over TCP";

    /* stanzas are small writes: never wait for delayed ACKs */
    (void) ngx_tcp_nodelay(c);

    c->read->handler = ngx_xmpp_tcp_read;
    c->write->handler = ngx_xmpp_tcp_write;

    (void) ngx_xmpp_session_start(s);

    if (c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);
        return;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_xmpp_session_finalize(s);
    }
}


static void
ngx_xmpp_tcp_read(ngx_event_t *rev)
{
    ssize_t              n;
    ngx_int_t            rc;
    ngx_uint_t           i;
    ngx_xmpp_tcp_t      *t;
    ngx_connection_t    *c;
    ngx_xmpp_session_t  *s;

    c = rev->data;
    t = ngx_stream_get_module_ctx((ngx_stream_session_t *) c->data,
                                  ngx_stream_conclave_module);
    s = t->session;

    if (c->error || c->close) {
        ngx_xmpp_session_finalize(s);
        return;
    }

    if (rev->timedout) {
        rev->timedout = 0;
        ngx_xmpp_session_error(s, "connection-timeout", "idle too long");
    }

    for (i = 0; /* void */; i++) {

        if (i == NGX_XMPP_TCP_READS) {
            /* a client that keeps sending must not starve the others */
            ngx_post_event(rev, &ngx_posted_events);
            break;
        }

        n = c->recv(c, ngx_xmpp_tcp_buf, sizeof(ngx_xmpp_tcp_buf));

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_log_error(NGX_LOG_INFO, c->log, 0,
                          "xmpp: client closed the connection");
            if (s->end_reason == NULL) {
                s->end_reason = "connection-lost";
            }
            ngx_xmpp_session_finalize(s);
            return;
        }

        rc = ngx_xmpp_session_input(s, ngx_xmpp_tcp_buf, n);

        if (rc == NGX_DONE) {
            return;
        }

        if (t->tls_pending) {
            /* whatever else came in the clear is dropped with the parser */
            ngx_xmpp_tcp_tls_start(t);
            return;
        }

        if (rc != NGX_OK) {
            /* a stream error is on its way; the peer's close finalizes */
            break;
        }

        /* between stanzas an idle stream holds no parser (16 KiB) */
        ngx_xmpp_parser_release(s);
    }

    if (s->state == NGX_XMPP_ST_SESSION) {
        ngx_add_timer(rev, s->conf->idle_timeout);
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_xmpp_session_finalize(s);
    }
}


static void
ngx_xmpp_tcp_write(ngx_event_t *wev)
{
    ngx_int_t            rc;
    ngx_xmpp_tcp_t      *t;
    ngx_connection_t    *c;

    c = wev->data;
    t = ngx_stream_get_module_ctx((ngx_stream_session_t *) c->data,
                                  ngx_stream_conclave_module);

    if (t->tls && !c->error) {
        /* the record the kernel did not take goes before anything else */
        rc = ngx_xmpp_tls_flush(c, t->tls);

        if (rc == NGX_ERROR) {
            ngx_xmpp_session_finalize(t->session);
            return;
        }

        if (rc == NGX_AGAIN) {
            return;
        }
    }

    if (c->error || ngx_xmpp_session_flush(t->session) == NGX_ERROR) {
        ngx_xmpp_session_finalize(t->session);
        return;
    }

    if (t->tls_pending && t->session->out.last == t->session->out.start) {
        ngx_xmpp_tcp_tls_start(t);
    }
}


/* RFC 6120 4.7: our stream header answers the client's */
static ngx_int_t
ngx_xmpp_tcp_open(ngx_xmpp_session_t *s)
{
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_wbuf_scratch(1024);

    ngx_xmpp_wbuf_lit(b, "<?xml version='1.0'?><stream:stream xmlns='"
                      NGX_XMPP_NS_CLIENT "' xmlns:stream='"
                      NGX_XMPP_NS_STREAM "' from='");
    ngx_xmpp_wbuf_nstr(b, &s->conf->domain);
    ngx_xmpp_wbuf_lit(b, "' id='");
    ngx_xmpp_wbuf_add(b, s->stream_id, sizeof(s->stream_id));
    ngx_xmpp_wbuf_lit(b, "' version='1.0' xml:lang='en'>");

    return ngx_xmpp_session_send_wbuf(s, b);
}


static ngx_int_t
ngx_xmpp_tcp_send(ngx_xmpp_session_t *s, u_char *data, size_t len)
{
    return ngx_xmpp_session_write(s, data, len);
}


/* RFC 6120 4.4: our end tag; the client's, or the close timer, ends it */
static void
ngx_xmpp_tcp_end(ngx_xmpp_session_t *s)
{
    static u_char  end[] = "</stream:stream>";

    (void) ngx_xmpp_session_write(s, end, sizeof(end) - 1);
}


static void
ngx_xmpp_tcp_finalize(ngx_xmpp_session_t *s)
{
    ngx_xmpp_tcp_t  *t;

    t = s->transport_data;

    if (t->tls) {
        ngx_xmpp_tls_close(s->connection, t->tls);
    }

    ngx_stream_finalize_session(t->stream, NGX_STREAM_OK);
}


/*
 * Called while the parser is stopped at <starttls/>: the handshake
 * starts once the feed has returned and <proceed/> is on the wire.
 */
static ngx_int_t
ngx_xmpp_tcp_starttls(ngx_xmpp_session_t *s)
{
    ngx_xmpp_tcp_t  *t;

    t = s->transport_data;

    /* s->secure, not c->ssl: on our record layer c->ssl is NULL */
    if (t->ssl == NULL || s->secure) {
        return NGX_ERROR;
    }

    t->tls_pending = 1;

    return NGX_OK;
}


static void
ngx_xmpp_tcp_tls_start(ngx_xmpp_tcp_t *t)
{
    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_xmpp_session_t  *s;

    s = t->session;
    c = s->connection;

    if (s->out.last > s->out.start) {
        /* <proceed/> must leave in the clear first: the write handler */
        return;
    }

    t->tls_pending = 0;

    if (ngx_ssl_create_connection(t->ssl, c, 0) != NGX_OK) {
        ngx_xmpp_session_finalize(s);
        return;
    }

    ngx_xmpp_session_tls_mode(c);

    c->log->action = "doing the STARTTLS handshake";

    rc = ngx_ssl_handshake(c);

    if (rc == NGX_AGAIN) {
        /* the session's auth timer bounds a handshake that stalls */
        c->ssl->handler = ngx_xmpp_tcp_tls_done;
        return;
    }

    ngx_xmpp_tcp_tls_done(c);
}


static void
ngx_xmpp_tcp_tls_done(ngx_connection_t *c)
{
    ngx_xmpp_tcp_t      *t;
    ngx_xmpp_session_t  *s;

    t = ngx_stream_get_module_ctx((ngx_stream_session_t *) c->data,
                                  ngx_stream_conclave_module);
    s = t->session;

    if (!c->ssl->handshaked) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "xmpp: STARTTLS handshake failed");
        s->end_reason = "tls-handshake-failed";
        ngx_xmpp_session_finalize(s);
        return;
    }

    c->log->action = "serving XMPP over TCP";
    s->secure = 1;

    if (ngx_xmpp_tcp_tls_switch(t) != NGX_OK) {
        ngx_xmpp_session_finalize(s);
        return;
    }

    c->read->handler = ngx_xmpp_tcp_read;
    c->write->handler = ngx_xmpp_tcp_write;

    /* the client now opens a new stream, over TLS */
    ngx_post_event(c->read, &ngx_posted_events);
}


/* the hand-over to our record layer, where the port does it */
static ngx_int_t
ngx_xmpp_tcp_tls_switch(ngx_xmpp_tcp_t *t)
{
    if (!t->record_layer) {
        return NGX_OK;
    }

    if (ngx_xmpp_tls_switch(t->session->connection, &t->tls) == NGX_ERROR) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the record layer's state of a connection (ngx_xmpp_tls.c) */
ngx_xmpp_tls_t *
ngx_xmpp_tcp_tls(ngx_connection_t *c)
{
    ngx_xmpp_tcp_t  *t;

    t = ngx_stream_get_module_ctx((ngx_stream_session_t *) c->data,
                                  ngx_stream_conclave_module);

    return t->tls;
}
