
/*
 * The HTTP side of BOSH (XEP-0124, XEP-0206): the content handler of a
 * conclave_bosh location, the request body and its limits, the answers
 * with their XEP-0124 section 8 headers, and the hand-off of a request
 * whose session lives in another worker: it goes to the owner over the
 * inter-worker socket (ngx_xmpp_ipc.c) whole, and the HTTP request
 * waits here, under a timer of its own, for the owner's answer.  The
 * session side is in ngx_xmpp_bosh.c.
 */


#include "ngx_xmpp_bosh.h"
#include "ngx_xmpp_http.h"


/* a forwarded request outlives the owner's wait by this much */
#define NGX_XMPP_BOSH_FWD_GRACE  10000


/* a request handed to the owning worker, held here meanwhile */
typedef struct {
    ngx_queue_t                 queue;
    uint64_t                    tag;
    ngx_http_request_t         *r;
    ngx_event_t                 timer;
    unsigned                    linked:1;
} ngx_xmpp_bosh_fwd_t;


static void ngx_xmpp_bosh_body_handler(ngx_http_request_t *r);
static void ngx_xmpp_bosh_fwd_timeout(ngx_event_t *ev);


static ngx_queue_t  ngx_xmpp_bosh_fwds;
static uint64_t     ngx_xmpp_bosh_next_tag;


/* HTTP answers */

static ngx_int_t
ngx_xmpp_bosh_cors(ngx_http_request_t *r, ngx_xmpp_conf_t *xcf)
{
    if (xcf->bosh_cors_origin.len == 0) {
        return NGX_OK;
    }

    return ngx_xmpp_http_header_n(r, "Access-Control-Allow-Origin",
                                  xcf->bosh_cors_origin.data,
                                  xcf->bosh_cors_origin.len);
}


/* the response to one request; returns what to finalize it with */
static ngx_int_t
ngx_xmpp_bosh_http_reply(ngx_http_request_t *r, ngx_uint_t status,
    u_char *data, size_t len)
{
    ngx_buf_t        *b;
    ngx_xmpp_conf_t  *xcf;

    xcf = ngx_http_get_module_main_conf(r, ngx_http_conclave_module);

    b = ngx_create_temp_buf(r->pool, len ? len : 1);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->last = ngx_cpymem(b->pos, data, len);
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    ngx_str_set(&r->headers_out.content_type, "text/xml; charset=utf-8");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    /* XEP-0124 section 8: no caching anywhere on the way */
    if (ngx_xmpp_http_header(r, "Cache-Control", "no-store") != NGX_OK
        || ngx_xmpp_bosh_cors(r, xcf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_xmpp_http_send(r, b);
}


/* answers a request that waited: from a timer or another handler */
static void
ngx_xmpp_bosh_http_answer(ngx_http_request_t *r, ngx_uint_t status,
    u_char *data, size_t len)
{
    ngx_connection_t  *c;

    c = r->connection;

    ngx_http_finalize_request(r, ngx_xmpp_bosh_http_reply(r, status, data,
                                                          len));
    ngx_http_run_posted_requests(c);
}


/*
 * XEP-0124 section 17: a terminal condition, with its HTTP status.  A
 * connection manager that speaks "ver" sends HTTP errors only to legacy
 * clients (17.1).  Every other client gets the condition with HTTP 200
 * (17.2), and so does a request that cannot be tied to a session (no
 * such session, an owner that does not answer, a body that cannot be
 * read): the client learns the condition from the body, not from an
 * HTTP error that any intermediary could have sent.
 */
static ngx_uint_t
ngx_xmpp_bosh_error_body(const char *condition, ngx_uint_t legacy,
    u_char *buf, size_t size, size_t *len)
{
    u_char  *p;

    p = ngx_snprintf(buf, size, "<body type='terminate' condition='%s' "
                     "xmlns='" NGX_XMPP_NS_HTTPBIND "'/>", condition);
    *len = p - buf;

    if (!legacy) {
        return NGX_HTTP_OK;
    }

    if (ngx_strcmp(condition, "item-not-found") == 0) {
        return NGX_HTTP_NOT_FOUND;
    }

    if (ngx_strcmp(condition, "bad-request") == 0) {
        return NGX_HTTP_BAD_REQUEST;
    }

    return NGX_HTTP_FORBIDDEN;
}


static ngx_int_t
ngx_xmpp_bosh_http_error(ngx_http_request_t *r, const char *condition)
{
    u_char      buf[256];
    size_t      len;
    ngx_uint_t  status;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "xmpp: BOSH request refused: %s", condition);

    status = ngx_xmpp_bosh_error_body(condition, 0, buf, sizeof(buf), &len);

    return ngx_xmpp_bosh_http_reply(r, status, buf, len);
}


/* delivery of an answer (status, then XML) to whoever asked */
void
ngx_xmpp_bosh_peer_answer(ngx_xmpp_bosh_peer_t *peer, u_char *data,
    size_t len)
{
    uint32_t  status;

    if (peer->r) {
        ngx_memcpy(&status, data, sizeof(uint32_t));
        ngx_xmpp_bosh_http_answer(peer->r, status, data + sizeof(uint32_t),
                                  len - sizeof(uint32_t));
        peer->r = NULL;
        return;
    }

    if (peer->pid) {
        (void) ngx_xmpp_ipc_send(peer->pid, NGX_XMPP_IPC_BOSH_RESP,
                                 peer->tag, data, len);
        peer->pid = 0;
    }
}


/* an XEP-0124 section 17 condition to whoever asked */
void
ngx_xmpp_bosh_peer_error(ngx_xmpp_bosh_peer_t *peer, const char *condition)
{
    u_char    buf[256];
    size_t    len;
    uint32_t  status;

    status = ngx_xmpp_bosh_error_body(condition, peer->legacy,
                                      buf + sizeof(uint32_t),
                                      sizeof(buf) - sizeof(uint32_t), &len);
    ngx_memcpy(buf, &status, sizeof(uint32_t));

    if (peer->r) {
        ngx_log_error(NGX_LOG_INFO, peer->r->connection->log, 0,
                      "xmpp: BOSH request refused: %s", condition);
    }

    ngx_xmpp_bosh_peer_answer(peer, buf, len + sizeof(uint32_t));
}


/* the HTTP side */

/*
 * The content handler of a conclave_bosh location: POST only (and the
 * CORS preflight when conclave_bosh_cors_origin is set), a body no
 * larger than conclave_bosh_max_body.
 */
ngx_int_t
ngx_xmpp_bosh_handler(ngx_http_request_t *r, ngx_xmpp_conf_t *xcf)
{
    ngx_int_t  rc;

    if (r->method == NGX_HTTP_OPTIONS && xcf->bosh_cors_origin.len) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        if (ngx_xmpp_bosh_cors(r, xcf) != NGX_OK
            || ngx_xmpp_http_header(r, "Access-Control-Allow-Methods",
                                    "POST, OPTIONS") != NGX_OK
            || ngx_xmpp_http_header(r, "Access-Control-Allow-Headers",
                                    "Content-Type") != NGX_OK
            || ngx_xmpp_http_header(r, "Access-Control-Max-Age", "86400")
               != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        r->headers_out.status = NGX_HTTP_OK;
        r->headers_out.content_length_n = 0;
        r->header_only = 1;

        return ngx_http_send_header(r);
    }

    if (r->method != NGX_HTTP_POST) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    if (r->headers_in.content_length_n > (off_t) xcf->bosh_max_body) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        /* XEP-0124 section 17: a request the server will not take */
        return ngx_xmpp_bosh_http_error(r, "policy-violation");
    }

    return ngx_xmpp_http_read_body(r, ngx_xmpp_bosh_body_handler);
}


/* the body in one piece; a chunked one may still be too large */
static ngx_int_t
ngx_xmpp_bosh_read_body(ngx_http_request_t *r, ngx_xmpp_conf_t *xcf,
    ngx_str_t *body)
{
    off_t         size;
    u_char       *p;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    size = 0;
    body->data = NULL;

    if (r->request_body == NULL) {
        body->len = 0;
        return NGX_OK;
    }

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        size += ngx_buf_size(cl->buf);
    }

    if (size > (off_t) xcf->bosh_max_body) {
        return NGX_DECLINED;
    }

    p = ngx_pnalloc(r->pool, (size_t) size + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (ngx_buf_special(b)) {
            continue;
        }

        if (b->in_file) {
            /*
             * The location's client_body_buffer_size is at least
             * conclave_bosh_max_body, so only client_body_in_file_only
             * puts a body here; reading it back would be disk I/O on
             * the event loop.
             */
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "xmpp: BOSH body in a temp file refused "
                          "(client_body_in_file_only is set?)");
            return NGX_ERROR;
        }

        p = ngx_cpymem(p, b->pos, b->last - b->pos);
    }

    body->len = p - body->data;

    return NGX_OK;
}


static void
ngx_xmpp_bosh_fwd_cleanup(void *data)
{
    ngx_xmpp_bosh_fwd_t  *fwd = data;

    if (fwd->linked) {
        ngx_queue_remove(&fwd->queue);
        fwd->linked = 0;
    }

    if (fwd->timer.timer_set) {
        ngx_del_timer(&fwd->timer);
    }
}


/* the session lives in another worker: hand the request over */
static ngx_int_t
ngx_xmpp_bosh_forward(ngx_http_request_t *r, ngx_xmpp_conf_t *xcf,
    ngx_pid_t pid, ngx_str_t *data)
{
    ngx_pool_cleanup_t   *cln;
    ngx_xmpp_bosh_fwd_t  *fwd;

    if (data->len > NGX_XMPP_BOSH_IPC_MAX) {
        return ngx_xmpp_bosh_http_error(r, "policy-violation");
    }

    if (ngx_xmpp_bosh_fwds.next == NULL) {
        ngx_queue_init(&ngx_xmpp_bosh_fwds);
    }

    fwd = ngx_pcalloc(r->pool, sizeof(ngx_xmpp_bosh_fwd_t));
    if (fwd == NULL) {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_xmpp_bosh_fwd_cleanup;
    cln->data = fwd;

    fwd->r = r;
    fwd->tag = ++ngx_xmpp_bosh_next_tag;

    if (ngx_xmpp_ipc_send(pid, NGX_XMPP_IPC_BOSH_REQ, fwd->tag, data->data,
                          data->len)
        != NGX_OK)
    {
        /* the owner is gone: so is the session */
        return ngx_xmpp_bosh_http_error(r, "item-not-found");
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "xmpp: BOSH request handed to worker %P", pid);

    ngx_queue_insert_tail(&ngx_xmpp_bosh_fwds, &fwd->queue);
    fwd->linked = 1;

    fwd->timer.handler = ngx_xmpp_bosh_fwd_timeout;
    fwd->timer.data = r->connection;
    fwd->timer.log = r->connection->log;

    /* an exiting worker need not wait for an owner that is exiting too */
    fwd->timer.cancelable = 1;

    ngx_add_timer(&fwd->timer, xcf->bosh_max_wait + NGX_XMPP_BOSH_FWD_GRACE);

    return NGX_DONE;
}


static void
ngx_xmpp_bosh_fwd_timeout(ngx_event_t *ev)
{
    u_char                buf[256];
    size_t                len;
    ngx_uint_t            status;
    ngx_xmpp_bosh_fwd_t  *fwd;

    fwd = (ngx_xmpp_bosh_fwd_t *) ((u_char *) ev
                                   - offsetof(ngx_xmpp_bosh_fwd_t, timer));

    ngx_log_error(NGX_LOG_INFO, ev->log, 0,
                  "xmpp: the worker owning a BOSH session did not answer");

    ngx_queue_remove(&fwd->queue);
    fwd->linked = 0;

    status = ngx_xmpp_bosh_error_body("item-not-found", 0, buf,
                                      sizeof(buf), &len);
    ngx_xmpp_bosh_http_answer(fwd->r, status, buf, len);
}


/*
 * A worker that exits gracefully does not wait for the requests it
 * forwarded (their timers are cancelable: the owner may be exiting
 * too), and nginx would find their sockets open.  Each is answered as
 * if the owner were gone, item-not-found, and closed: an answer that
 * nginx would finish later (a lingering close, a write left) cannot
 * be waited for either.
 */
void
ngx_xmpp_bosh_exit_worker(void)
{
    u_char                buf[256];
    size_t                len;
    ngx_uint_t            status;
    ngx_queue_t          *q;
    ngx_connection_t     *c;
    ngx_http_request_t   *r;
    ngx_xmpp_bosh_fwd_t  *fwd;

    if (ngx_xmpp_bosh_fwds.next == NULL) {
        return;
    }

    status = ngx_xmpp_bosh_error_body("item-not-found", 0, buf,
                                      sizeof(buf), &len);

    while (!ngx_queue_empty(&ngx_xmpp_bosh_fwds)) {
        q = ngx_queue_head(&ngx_xmpp_bosh_fwds);
        fwd = ngx_queue_data(q, ngx_xmpp_bosh_fwd_t, queue);

        ngx_queue_remove(q);
        fwd->linked = 0;

        if (fwd->timer.timer_set) {
            ngx_del_timer(&fwd->timer);
        }

        r = fwd->r;
        c = r->connection;

        ngx_xmpp_bosh_http_answer(r, status, buf, len);

        if (c->fd != (ngx_socket_t) -1) {
            ngx_log_error(NGX_LOG_INFO, c->log, 0,
                          "xmpp: BOSH request closed at exit");
            ngx_http_free_request(r, 0);
            ngx_http_close_connection(c);
        }
    }
}


static void
ngx_xmpp_bosh_body_handler(ngx_http_request_t *r)
{
    ngx_int_t              rc;
    ngx_str_t              data;
    uint64_t               id;
    uint32_t               pid;
    const char            *key;
    ngx_xmpp_conf_t       *xcf;
    ngx_xmpp_bosh_body_t   body;
    ngx_xmpp_bosh_peer_t   peer;

    xcf = ngx_http_get_module_main_conf(r, ngx_http_conclave_module);

    rc = ngx_xmpp_bosh_read_body(r, xcf, &data);

    if (rc == NGX_DECLINED) {
        ngx_http_finalize_request(r, ngx_xmpp_bosh_http_error(r,
                                                  "policy-violation"));
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (ngx_xmpp_bosh_body_parse(&body, data.data, data.len) != 0) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "xmpp: bad BOSH request: %s", body.error);
        ngx_xmpp_bosh_body_free(&body);
        ngx_http_finalize_request(r, ngx_xmpp_bosh_http_error(r,
                                                          "bad-request"));
        return;
    }

    if (body.sid_len) {
        if (ngx_xmpp_bosh_sid_split(body.sid, body.sid_len, &pid, &id, &key)
            != 0)
        {
            ngx_xmpp_bosh_body_free(&body);
            ngx_http_finalize_request(r, ngx_xmpp_bosh_http_error(r,
                                                      "item-not-found"));
            return;
        }

        if ((ngx_pid_t) pid != ngx_pid) {
            ngx_xmpp_bosh_body_free(&body);
            rc = ngx_xmpp_bosh_forward(r, xcf, (ngx_pid_t) pid, &data);

            if (rc != NGX_DONE) {
                ngx_http_finalize_request(r, rc);
            }

            return;
        }
    }

    peer.r = r;
    peer.pid = 0;
    peer.tag = 0;
    peer.legacy = 0;

    ngx_xmpp_bosh_serve(xcf, &peer, &body, data.data, data.len);

    ngx_xmpp_bosh_body_free(&body);

    /* the request is answered now, or held by the session */
}


/* the inter-worker side */

void
ngx_xmpp_bosh_ipc(ngx_uint_t cmd, ngx_pid_t from, uint64_t tag,
    u_char *data, size_t len)
{
    uint32_t               status;
    ngx_queue_t           *q;
    ngx_xmpp_conf_t       *xcf;
    ngx_xmpp_bosh_fwd_t   *fwd;
    ngx_xmpp_bosh_body_t   body;
    ngx_xmpp_bosh_peer_t   peer;

    if (cmd == NGX_XMPP_IPC_BOSH_REQ) {
        xcf = ngx_http_cycle_get_module_main_conf(
                  (ngx_cycle_t *) ngx_cycle,
                                                  ngx_http_conclave_module);
        peer.r = NULL;
        peer.pid = from;
        peer.tag = tag;
        peer.legacy = 0;

        if (ngx_xmpp_bosh_body_parse(&body, data, len) != 0
            || body.sid_len == 0)
        {
            ngx_xmpp_bosh_body_free(&body);
            ngx_xmpp_bosh_peer_error(&peer, "bad-request");
            return;
        }

        ngx_xmpp_bosh_serve(xcf, &peer, &body, data, len);
        ngx_xmpp_bosh_body_free(&body);
        return;
    }

    /* NGX_XMPP_IPC_BOSH_RESP: status, then the body to send */
    if (len < sizeof(uint32_t) || ngx_xmpp_bosh_fwds.next == NULL) {
        return;
    }

    for (q = ngx_queue_head(&ngx_xmpp_bosh_fwds);
         q != ngx_queue_sentinel(&ngx_xmpp_bosh_fwds);
         q = ngx_queue_next(q))
    {
        fwd = ngx_queue_data(q, ngx_xmpp_bosh_fwd_t, queue);

        if (fwd->tag != tag) {
            continue;
        }

        ngx_queue_remove(&fwd->queue);
        fwd->linked = 0;

        if (fwd->timer.timer_set) {
            ngx_del_timer(&fwd->timer);
        }

        ngx_memcpy(&status, data, sizeof(uint32_t));
        ngx_xmpp_bosh_http_answer(fwd->r, status, data + sizeof(uint32_t),
                                  len - sizeof(uint32_t));
        return;
    }
}
