
/*
 * XMPP over WebSocket (RFC 7395) in an http location: the opening
 * handshake (RFC 6455 section 4.2), then raw frames on the connection,
 * the way nginx's own upgraded proxy connections work.  Each text
 * message is fed to the session's parser as it arrives, so a message
 * is never buffered whole; server frames go out unmasked.
 *
 * After the 101 the HTTP request is freed, the way HTTP/2 gives back
 * what an idle connection does not need: its pool (request line,
 * headers in and out, variables: most of an idle session's memory) and
 * the header buffer.  The session lives in the connection's pool and
 * the connection's own handlers read and write, as over TCP.  The
 * request is freed from a posted event, once nginx has returned from
 * the content handler; until then it only holds the connection.
 */


#include <ngx_http.h>
#include <ngx_sha1.h>

#include "ngx_xmpp.h"
#include "ngx_xmpp_http.h"


/* reads of ngx_xmpp_ws_buf per read event before yielding */
#define NGX_XMPP_WS_READS  8

#define NGX_XMPP_WS_GUID  "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* the synthetic root that makes each message a child element */
#define NGX_XMPP_WS_ROOT  "<ws xmlns='" NGX_XMPP_NS_CLIENT "'>"


typedef struct {
    ngx_http_request_t      *request;     /* until it is freed */
    ngx_xmpp_session_t      *session;
    ngx_event_t              detach;
    u_char                  *pending;     /* bytes after the header */
    size_t                   pending_len;
    ngx_xmpp_ws_decoder_t    dec;
    unsigned                 close_sent:1;
    unsigned                 close_received:1;
    unsigned                 failed:1;
} ngx_xmpp_ws_t;


static ngx_int_t ngx_xmpp_ws_keep_addr(ngx_connection_t *c,
    ngx_sockaddr_t *sa, socklen_t socklen, u_char *text, size_t len);
static ngx_int_t ngx_xmpp_ws_open(ngx_xmpp_session_t *s);
static ngx_int_t ngx_xmpp_ws_send(ngx_xmpp_session_t *s, u_char *data,
    size_t len);
static void ngx_xmpp_ws_end(ngx_xmpp_session_t *s);
static void ngx_xmpp_ws_finalize(ngx_xmpp_session_t *s);
static void ngx_xmpp_ws_detach(ngx_event_t *ev);
static void ngx_xmpp_ws_read(ngx_event_t *rev);
static void ngx_xmpp_ws_write(ngx_event_t *wev);
static ngx_int_t ngx_xmpp_ws_process(ngx_xmpp_ws_t *ws, u_char *p,
    u_char *last);


static ngx_xmpp_transport_t  ngx_xmpp_ws_transport = {
    ngx_string("websocket"),
    ngx_xmpp_ws_open,
    ngx_xmpp_ws_send,
    ngx_xmpp_ws_end,
    ngx_xmpp_ws_finalize,
    NULL
};


static u_char  ngx_xmpp_ws_buf[16384];


/* a comma-separated header value contains the token (RFC 7230 7) */
static ngx_int_t
ngx_xmpp_ws_has_token(ngx_str_t *value, const char *token)
{
    size_t   len;
    u_char  *p, *end, *start;

    len = ngx_strlen(token);
    p = value->data;
    end = p + value->len;

    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) {
            p++;
        }

        start = p;

        while (p < end && *p != ',' && *p != ' ' && *p != '\t') {
            p++;
        }

        if ((size_t) (p - start) == len
            && ngx_strncasecmp(start, (u_char *) token, len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/*
 * The content handler of a conclave_websocket location.  Failures of
 * the handshake answer with an HTTP status: 400 for a malformed or
 * non-"xmpp" request, 426 for a WebSocket version other than 13.
 */
ngx_int_t
ngx_xmpp_ws_handler(ngx_http_request_t *r, ngx_xmpp_conf_t *xcf)
{
    u_char              *accept, key_raw[32];
    ngx_int_t            rc;
    ngx_str_t            key, decoded, src;
    ngx_sha1_t           sha1;
    ngx_xmpp_ws_t       *ws;
    ngx_table_elt_t     *h;
    ngx_connection_t    *c;
    ngx_xmpp_session_t  *s;
    u_char               digest[20];

    c = r->connection;

    if (r->method != NGX_HTTP_GET) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    if (r->http_version != NGX_HTTP_VERSION_11 || r->stream) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "xmpp: WebSocket needs HTTP/1.1");
        return NGX_HTTP_BAD_REQUEST;
    }

    h = ngx_xmpp_http_find(r, "Upgrade");
    if (h == NULL || !ngx_xmpp_ws_has_token(&h->value, "websocket")) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "xmpp: not a WebSocket upgrade request");
        return NGX_HTTP_BAD_REQUEST;
    }

    h = ngx_xmpp_http_find(r, "Connection");
    if (h == NULL || !ngx_xmpp_ws_has_token(&h->value, "upgrade")) {
        return NGX_HTTP_BAD_REQUEST;
    }

    h = ngx_xmpp_http_find(r, "Sec-WebSocket-Version");
    if (h == NULL || h->value.len != 2
        || ngx_strncmp(h->value.data, "13", 2) != 0)
    {
        /* RFC 6455 section 4.4: name the version we speak */
        if (ngx_xmpp_http_header(r, "Sec-WebSocket-Version", "13")
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return 426;
    }

    h = ngx_xmpp_http_find(r, "Sec-WebSocket-Key");
    if (h == NULL || h->value.len != 24) {
        return NGX_HTTP_BAD_REQUEST;
    }

    key = h->value;
    decoded.data = key_raw;

    if (ngx_decode_base64(&decoded, &key) != NGX_OK || decoded.len != 16) {
        return NGX_HTTP_BAD_REQUEST;
    }

    /* RFC 7395 section 3.1: the subprotocol must be "xmpp" */
    h = ngx_xmpp_http_find(r, "Sec-WebSocket-Protocol");
    if (h == NULL || !ngx_xmpp_ws_has_token(&h->value, "xmpp")) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "xmpp: WebSocket request without the \"xmpp\" "
                      "subprotocol");
        return NGX_HTTP_BAD_REQUEST;
    }

    /* the request body would be frames: refuse one that is declared */
    if (r->headers_in.content_length_n > 0 || r->headers_in.chunked) {
        return NGX_HTTP_BAD_REQUEST;
    }

    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, key.data, key.len);
    ngx_sha1_update(&sha1, NGX_XMPP_WS_GUID, sizeof(NGX_XMPP_WS_GUID) - 1);
    ngx_sha1_final(digest, &sha1);

    accept = ngx_pnalloc(r->pool, ngx_base64_encoded_length(20));
    if (accept == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    src.data = digest;
    src.len = 20;
    decoded.data = accept;
    ngx_encode_base64(&decoded, &src);

    if (ngx_xmpp_http_header(r, "Upgrade", "websocket") != NGX_OK
        || ngx_xmpp_http_header_n(r, "Sec-WebSocket-Accept", decoded.data,
                                  decoded.len) != NGX_OK
        || ngx_xmpp_http_header(r, "Sec-WebSocket-Protocol", "xmpp")
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* from here on the connection ends with the session (c->pool) */
    r->keepalive = 0;
    r->lingering_close = 0;

    ws = ngx_pcalloc(c->pool, sizeof(ngx_xmpp_ws_t));
    if (ws == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ws->request = r;
    ngx_xmpp_ws_decoder_init(&ws->dec, xcf->ws_max_message);

    s = ngx_xmpp_session_create(c, c->pool, xcf, &ngx_xmpp_ws_transport, ws);
    if (s == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ws->session = s;
    s->secure = (c->ssl != NULL);

    if (ngx_xmpp_parser_init(s, (u_char *) NGX_XMPP_WS_ROOT,
                             sizeof(NGX_XMPP_WS_ROOT) - 1)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = NGX_HTTP_SWITCHING_PROTOCOLS;
    ngx_str_set(&r->headers_out.status_line, "101 Switching Protocols");
    r->headers_out.content_length_n = -1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK) {
        return rc;
    }

    if (ngx_http_send_special(r, NGX_HTTP_FLUSH) == NGX_ERROR) {
        return NGX_ERROR;
    }

    /* the request, and the output it would hold, go: the 101 must be
     * out, as it always is on a fresh connection's empty socket buffer */
    if (c->buffered || r->out) {
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "xmpp: WebSocket 101 response not sent at once");
        return NGX_ERROR;
    }

    /* frames that arrived with the request header outlive its buffer */
    if (r->header_in->pos < r->header_in->last) {
        ws->pending_len = r->header_in->last - r->header_in->pos;
        ws->pending = ngx_pnalloc(c->pool, ws->pending_len);
        if (ws->pending == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(ws->pending, r->header_in->pos, ws->pending_len);
        r->header_in->pos = r->header_in->last;
    }

    c->log->action = "serving XMPP over WebSocket";

    /*
     * Stanzas are small writes: without TCP_NODELAY each one waits for
     * the peer's delayed ACK (up to 40 ms); nginx sets it only for TLS.
     */
    (void) ngx_tcp_nodelay(c);

    /* input waits for the detach: never finalize inside the content
     * handler */
    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_request_empty_handler;
    r->main->count++;

    ngx_http_set_ctx(r, ws, ngx_http_conclave_module);

    ws->detach.handler = ngx_xmpp_ws_detach;
    ws->detach.data = c;
    ws->detach.log = c->log;
    ngx_post_event(&ws->detach, &ngx_posted_events);

    (void) ngx_xmpp_session_start(s);

    return NGX_DONE;
}


/*
 * Frees the request and its pool (ngx_http_free_request() also writes
 * the access log line, status 101) and the header buffers, as
 * ngx_http_set_keepalive() does for an idle keep-alive connection, and
 * hands the connection to our handlers.
 */
static void
ngx_xmpp_ws_detach(ngx_event_t *ev)
{
    size_t                   len;
    socklen_t                socklen;
    ngx_chain_t             *cl;
    ngx_xmpp_ws_t           *ws;
    ngx_sockaddr_t           sa;
    struct sockaddr         *addr;
    ngx_connection_t        *c;
    ngx_http_request_t      *r;
    ngx_http_connection_t   *hc;
    u_char                   text[NGX_SOCKADDR_STRLEN];

    c = ev->data;
    r = c->data;
    ws = ngx_http_get_module_ctx(r, ngx_http_conclave_module);
    hc = r->http_connection;

    addr = c->sockaddr;
    socklen = ngx_min(c->socklen, (socklen_t) sizeof(ngx_sockaddr_t));
    ngx_memcpy(&sa, c->sockaddr, socklen);
    len = ngx_min(c->addr_text.len, NGX_SOCKADDR_STRLEN);
    ngx_memcpy(text, c->addr_text.data, len);

    ngx_http_free_request(r, 0);

    /* the request is gone, the connection is not */
    c->destroyed = 0;
    c->data = ws;
    ws->request = NULL;
    c->log->action = "serving XMPP over WebSocket";

    /*
     * The realip module (set_real_ip_from) gives the connection the
     * client's address for the request's lifetime only: a cleanup of
     * the request's pool puts the proxy's back.  The session outlives
     * the request, so it keeps the client's (the session list, the
     * log's "client:", every later record).
     */
    if (c->sockaddr != addr
        && ngx_xmpp_ws_keep_addr(c, &sa, socklen, text, len) != NGX_OK)
    {
        ngx_xmpp_session_finalize(ws->session);
        return;
    }

    if (c->buffer && c->buffer->start
        && ngx_pfree(c->pool, c->buffer->start) == NGX_OK)
    {
        c->buffer->start = NULL;
        c->buffer->pos = NULL;
        c->buffer->last = NULL;
        c->buffer->end = NULL;
    }

    for (cl = hc->free; cl; cl = cl->next) {
        ngx_pfree(c->pool, cl->buf->start);
    }

    for (cl = hc->busy; cl; cl = cl->next) {
        ngx_pfree(c->pool, cl->buf->start);
    }

    hc->free = NULL;
    hc->busy = NULL;
    hc->nbusy = 0;

    c->read->handler = ngx_xmpp_ws_read;
    c->write->handler = ngx_xmpp_ws_write;

    if (c->read->ready || ws->pending_len) {
        ngx_xmpp_ws_read(c->read);
        return;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_xmpp_session_finalize(ws->session);
    }
}


/* the client's address, copied into the connection's pool */
static ngx_int_t
ngx_xmpp_ws_keep_addr(ngx_connection_t *c, ngx_sockaddr_t *sa,
    socklen_t socklen, u_char *text, size_t len)
{
    u_char           *p;
    struct sockaddr  *addr;

    addr = ngx_palloc(c->pool, socklen);
    if (addr == NULL) {
        return NGX_ERROR;
    }

    p = ngx_pnalloc(c->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(addr, sa, socklen);
    ngx_memcpy(p, text, len);

    c->sockaddr = addr;
    c->socklen = socklen;
    c->addr_text.data = p;
    c->addr_text.len = len;

    return NGX_OK;
}


static ngx_int_t
ngx_xmpp_ws_control(ngx_xmpp_ws_t *ws, unsigned opcode, u_char *payload,
    size_t len)
{
    u_char  hdr[16];
    size_t  hl;

    hl = ngx_xmpp_ws_frame_header(hdr, opcode, len);

    return ngx_xmpp_session_writev(ws->session, hdr, hl, payload, len);
}


static void
ngx_xmpp_ws_send_close(ngx_xmpp_ws_t *ws, unsigned code)
{
    u_char  payload[2];

    if (ws->close_sent) {
        return;
    }

    ws->close_sent = 1;

    payload[0] = (u_char) (code >> 8);
    payload[1] = (u_char) code;

    (void) ngx_xmpp_ws_control(ws, NGX_XMPP_WS_OP_CLOSE, payload,
                               code ? 2 : 0);
}


/*
 * Decodes and dispatches a slice of input.  NGX_DONE: the session and
 * the request are gone, touch nothing.
 */
static ngx_int_t
ngx_xmpp_ws_process(ngx_xmpp_ws_t *ws, u_char *p, u_char *last)
{
    ngx_int_t            rc;
    ngx_xmpp_ws_ev_e     ev;
    ngx_xmpp_session_t  *s;

    s = ws->session;

    while (!ws->failed) {

        ev = ngx_xmpp_ws_decode(&ws->dec, &p, last);

        switch (ev) {

        case NGX_XMPP_WS_EV_NEED_MORE:
            return NGX_OK;

        case NGX_XMPP_WS_EV_DATA:
            if (s->close_pending) {
                break;
            }

            rc = ngx_xmpp_session_input(s, ws->dec.data, ws->dec.len);

            if (rc == NGX_DONE) {
                return NGX_DONE;
            }

            break;

        case NGX_XMPP_WS_EV_MESSAGE_END:
            ngx_xmpp_parser_release(s);
            break;

        case NGX_XMPP_WS_EV_PING:
            /* RFC 6455 section 5.5.2: a pong with the same payload */
            (void) ngx_xmpp_ws_control(ws, NGX_XMPP_WS_OP_PONG, ws->dec.ctl,
                                       ws->dec.ctl_len);
            break;

        case NGX_XMPP_WS_EV_PONG:
            break;

        case NGX_XMPP_WS_EV_CLOSE:
            /* section 5.5.1: answer with the same code, then close */
            ws->close_received = 1;
            ngx_xmpp_ws_send_close(ws, ws->dec.close_code);
            ngx_xmpp_session_finalize(s);
            return NGX_DONE;

        default: /* NGX_XMPP_WS_EV_ERROR */
            ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                          "xmpp: bad WebSocket frame, closing with %ui",
                          (ngx_uint_t) ws->dec.close_code);
            ws->failed = 1;
            ngx_xmpp_ws_send_close(ws, ws->dec.close_code);
            ngx_xmpp_session_finalize(s);
            return NGX_DONE;
        }
    }

    return NGX_OK;
}


static void
ngx_xmpp_ws_read(ngx_event_t *rev)
{
    u_char              *p;
    size_t               len;
    ssize_t              n;
    ngx_uint_t           i;
    ngx_int_t            rc;
    ngx_xmpp_ws_t       *ws;
    ngx_connection_t    *c;
    ngx_xmpp_session_t  *s;

    c = rev->data;
    ws = c->data;
    s = ws->session;

    if (c->error || c->close) {
        ngx_xmpp_session_finalize(s);
        return;
    }

    if (rev->timedout) {
        rev->timedout = 0;
        ngx_xmpp_session_error(s, "connection-timeout", "idle too long");
    }

    if (ws->pending_len) {
        p = ws->pending;
        len = ws->pending_len;
        ws->pending_len = 0;

        rc = ngx_xmpp_ws_process(ws, p, p + len);
        if (rc == NGX_DONE) {
            return;
        }

        ngx_pfree(c->pool, p);
        ws->pending = NULL;
    }

    for (i = 0; /* void */; i++) {

        if (i == NGX_XMPP_WS_READS) {
            /* a client that keeps sending must not starve the others */
            ngx_post_event(rev, &ngx_posted_events);
            break;
        }

        n = c->recv(c, ngx_xmpp_ws_buf, sizeof(ngx_xmpp_ws_buf));

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            /* the client went away without a close frame */
            ngx_log_error(NGX_LOG_INFO, c->log, 0,
                          "xmpp: client closed the connection");
            ngx_xmpp_session_finalize(s);
            return;
        }

        rc = ngx_xmpp_ws_process(ws, ngx_xmpp_ws_buf,
                                 ngx_xmpp_ws_buf + n);
        if (rc == NGX_DONE) {
            return;
        }
    }

    if (s->state == NGX_XMPP_ST_SESSION) {
        ngx_add_timer(rev, s->conf->idle_timeout);
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_xmpp_session_finalize(s);
    }
}


static void
ngx_xmpp_ws_write(ngx_event_t *wev)
{
    ngx_xmpp_ws_t       *ws;
    ngx_connection_t    *c;

    c = wev->data;
    ws = c->data;

    if (c->error || ngx_xmpp_session_flush(ws->session) == NGX_ERROR) {
        ngx_xmpp_session_finalize(ws->session);
    }
}


static ngx_int_t
ngx_xmpp_ws_open(ngx_xmpp_session_t *s)
{
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_wbuf_scratch(1024);

    ngx_xmpp_wbuf_lit(b, "<open xmlns='" NGX_XMPP_NS_FRAMING "' from='");
    ngx_xmpp_wbuf_nstr(b, &s->conf->domain);
    ngx_xmpp_wbuf_lit(b, "' id='");
    ngx_xmpp_wbuf_add(b, s->stream_id, sizeof(s->stream_id));
    ngx_xmpp_wbuf_lit(b, "' version='1.0' xml:lang='en'/>");

    return ngx_xmpp_session_send_wbuf(s, b);
}


static ngx_int_t
ngx_xmpp_ws_send(ngx_xmpp_session_t *s, u_char *data, size_t len)
{
    u_char  hdr[16];
    size_t  hl;

    hl = ngx_xmpp_ws_frame_header(hdr, NGX_XMPP_WS_OP_TEXT, len);

    return ngx_xmpp_session_writev(s, hdr, hl, data, len);
}


/* RFC 7395 section 3.6: <close/>, then the WebSocket close handshake */
static void
ngx_xmpp_ws_end(ngx_xmpp_session_t *s)
{
    u_char          hdr[16];
    size_t          hl;
    ngx_xmpp_ws_t  *ws;

    static u_char   close[] = "<close xmlns='" NGX_XMPP_NS_FRAMING "'/>";

    ws = s->transport_data;

    hl = ngx_xmpp_ws_frame_header(hdr, NGX_XMPP_WS_OP_TEXT,
                                  sizeof(close) - 1);

    (void) ngx_xmpp_session_writev(s, hdr, hl, close, sizeof(close) - 1);

    ngx_xmpp_ws_send_close(ws, NGX_XMPP_WS_CLOSE_NORMAL);

    /* the peer's close frame, or the close timer, finalizes */
}


static void
ngx_xmpp_ws_finalize(ngx_xmpp_session_t *s)
{
    ngx_xmpp_ws_t       *ws;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    ws = s->transport_data;
    r = ws->request;
    c = s->connection;

    if (ws->detach.posted) {
        ngx_delete_posted_event(&ws->detach);
    }

    if (r) {
        /*
         * Not detached yet.  Termination is posted as a request; from
         * timers and other sessions' handlers nobody else would run it.
         */
        ngx_http_finalize_request(r, NGX_HTTP_CLOSE);
        ngx_http_run_posted_requests(c);
        return;
    }

    /* frees c->pool, and the session in it, after a TLS shutdown */
    ngx_http_close_connection(c);
}
