
/*
 * XMPP over BOSH (XEP-0124, XEP-0206) in an http location.
 *
 * A BOSH session has no connection of its own: each POST carries a
 * <body/> whose children are stanzas, and the answer is a <body/> with
 * whatever the session has queued for the client.  The session here is
 * an ordinary core session with a connection-less stand-in for logging,
 * its own pool, and a synthetic root for its parser (as WebSocket has),
 * so the children of every body parse as top-level elements and the
 * parser is given back between requests.
 *
 * Requests are taken in rid order within the window of "requests"
 * (XEP-0124 section 14.3): one that arrives ahead of a missing rid
 * waits for it; an answered rid is replayed from a small cache.  Of the
 * processed requests at most "hold" are held; a held request is
 * answered when output arrives, after "wait", or when a newer one would
 * exceed "hold" (section 11).
 *
 * The sid names the owning worker's pid, the core session id and 128
 * random bits.  A request that lands on another worker is handed to the
 * owner over the inter-worker socket (ngx_xmpp_ipc.c) whole; the owner
 * answers the same way and the receiving worker holds the HTTP request
 * meanwhile, under a timer of its own.
 */


#include <ngx_http.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "ngx_xmpp.h"


#define NGX_XMPP_NS_HTTPBIND  "http://jabber.org/protocol/httpbind"
#define NGX_XMPP_NS_XBOSH     "urn:xmpp:xbosh"

/* the synthetic root that makes each child of <body/> top-level */
#define NGX_XMPP_BOSH_ROOT  "<bosh xmlns='" NGX_XMPP_NS_CLIENT "'>"

#define NGX_XMPP_BOSH_EMPTY  "<body xmlns='" NGX_XMPP_NS_HTTPBIND "'/>"

#define NGX_XMPP_BOSH_SLOTS    8           /* conclave_bosh_max_requests */
#define NGX_XMPP_BOSH_KEY      NGX_XMPP_BOSH_KEY_LEN

/* the longest pause a client may ask for, seconds (XEP-0124 10) */
#define NGX_XMPP_BOSH_MAXPAUSE  120

/* what fits one inter-worker datagram, with room for its header */
#define NGX_XMPP_BOSH_IPC_MAX  (255 * 1024)

/* a forwarded request outlives the owner's wait by this much */
#define NGX_XMPP_BOSH_FWD_GRACE  10000


/* who gets the answer: a local HTTP request or another worker's */
typedef struct {
    ngx_http_request_t         *r;
    ngx_pid_t                   pid;
    uint64_t                    tag;
} ngx_xmpp_bosh_peer_t;


typedef struct ngx_xmpp_bosh_s  ngx_xmpp_bosh_t;


/* a request the session has taken and not answered yet */
typedef struct {
    ngx_xmpp_bosh_peer_t        peer;
    uint64_t                    rid;
    u_char                     *early;     /* ahead of its turn: body */
    size_t                      early_len;
    ngx_event_t                 wait;
    ngx_xmpp_bosh_t            *bosh;
    unsigned                    used:1;
    unsigned                    held:1;
} ngx_xmpp_bosh_slot_t;


/* an answer kept for a replayed rid: status (4 bytes), then the XML */
typedef struct {
    uint64_t                    rid;
    u_char                     *data;
    size_t                      len;
} ngx_xmpp_bosh_cached_t;


struct ngx_xmpp_bosh_s {
    ngx_xmpp_session_t         *session;
    ngx_connection_t            conn;      /* stand-in for logging */
    ngx_log_t                   log;

    u_char                      key[NGX_XMPP_BOSH_KEY];
    u_char                      sid[NGX_XMPP_BOSH_SID_LEN];

    uint64_t                    rid;       /* the last one processed */
    ngx_msec_t                  wait;
    ngx_uint_t                  hold;
    ngx_uint_t                  requests;

    ngx_xmpp_wbuf_t             out;       /* stanzas for the client */

    ngx_xmpp_bosh_slot_t        slots[NGX_XMPP_BOSH_SLOTS];
    ngx_xmpp_bosh_cached_t      cache[NGX_XMPP_BOSH_SLOTS];
    ngx_uint_t                  cache_next;

    ngx_event_t                 idle;      /* inactivity */
    ngx_event_t                 flush;     /* posted: answer what can be */

    const char                 *condition; /* of the terminating body */

    unsigned                    created:1; /* creation answer still due */
    unsigned                    ended:1;
    unsigned                    overflow:1;
    unsigned                    pausing:1; /* answer every held request */

    ngx_msec_t                  pause;     /* inactivity while paused */
};


/* a request handed to the owning worker, held here meanwhile */
typedef struct {
    ngx_queue_t                 queue;
    uint64_t                    tag;
    ngx_http_request_t         *r;
    ngx_event_t                 timer;
    unsigned                    linked:1;
} ngx_xmpp_bosh_fwd_t;


static ngx_int_t ngx_xmpp_bosh_open(ngx_xmpp_session_t *s);
static ngx_int_t ngx_xmpp_bosh_send(ngx_xmpp_session_t *s, u_char *data,
    size_t len);
static void ngx_xmpp_bosh_end(ngx_xmpp_session_t *s);
static void ngx_xmpp_bosh_finalize(ngx_xmpp_session_t *s);
static void ngx_xmpp_bosh_body_handler(ngx_http_request_t *r);
static void ngx_xmpp_bosh_serve(ngx_xmpp_conf_t *xcf,
    ngx_xmpp_bosh_peer_t *peer, ngx_xmpp_bosh_body_t *body, u_char *data,
    size_t len);
static void ngx_xmpp_bosh_flush_handler(ngx_event_t *ev);
static void ngx_xmpp_bosh_idle_handler(ngx_event_t *ev);
static void ngx_xmpp_bosh_wait_handler(ngx_event_t *ev);
static void ngx_xmpp_bosh_fwd_timeout(ngx_event_t *ev);


static ngx_xmpp_transport_t  ngx_xmpp_bosh_transport = {
    ngx_string("bosh"),
    ngx_xmpp_bosh_open,
    ngx_xmpp_bosh_send,
    ngx_xmpp_bosh_end,
    ngx_xmpp_bosh_finalize,
    NULL
};


static ngx_queue_t  ngx_xmpp_bosh_fwds;
static uint64_t     ngx_xmpp_bosh_next_tag;


/* HTTP answers */

static ngx_int_t
ngx_xmpp_bosh_header(ngx_http_request_t *r, const char *key,
    const char *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value.data = (u_char *) value;
    h->value.len = ngx_strlen(value);

    return NGX_OK;
}


static ngx_int_t
ngx_xmpp_bosh_cors(ngx_http_request_t *r, ngx_xmpp_conf_t *xcf)
{
    ngx_table_elt_t  *h;

    if (xcf->bosh_cors_origin.len == 0) {
        return NGX_OK;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Access-Control-Allow-Origin");
    h->value = xcf->bosh_cors_origin;

    return NGX_OK;
}


/* the response to one request; returns what to finalize it with */
static ngx_int_t
ngx_xmpp_bosh_http_reply(ngx_http_request_t *r, ngx_uint_t status,
    u_char *data, size_t len)
{
    ngx_int_t         rc;
    ngx_buf_t        *b;
    ngx_chain_t       out;
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
    if (ngx_xmpp_bosh_header(r, "Cache-Control", "no-store") != NGX_OK
        || ngx_xmpp_bosh_cors(r, xcf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
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


/* XEP-0124 section 17: a terminal condition, with its HTTP status */
static ngx_uint_t
ngx_xmpp_bosh_error_body(const char *condition, u_char *buf, size_t size,
    size_t *len)
{
    u_char  *p;

    p = ngx_snprintf(buf, size, "<body type='terminate' condition='%s' "
                     "xmlns='" NGX_XMPP_NS_HTTPBIND "'/>", condition);
    *len = p - buf;

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

    status = ngx_xmpp_bosh_error_body(condition, buf, sizeof(buf), &len);

    return ngx_xmpp_bosh_http_reply(r, status, buf, len);
}


/* delivery of an answer (status, then XML) to whoever asked */
static void
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


static void
ngx_xmpp_bosh_peer_error(ngx_xmpp_bosh_peer_t *peer, const char *condition)
{
    u_char    buf[256];
    size_t    len;
    uint32_t  status;

    status = ngx_xmpp_bosh_error_body(condition, buf + sizeof(uint32_t),
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
            || ngx_xmpp_bosh_header(r, "Access-Control-Allow-Methods",
                                    "POST, OPTIONS") != NGX_OK
            || ngx_xmpp_bosh_header(r, "Access-Control-Allow-Headers",
                                    "Content-Type") != NGX_OK
            || ngx_xmpp_bosh_header(r, "Access-Control-Max-Age", "86400")
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

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r, ngx_xmpp_bosh_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
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

    status = ngx_xmpp_bosh_error_body("item-not-found", buf, sizeof(buf),
                                      &len);
    ngx_xmpp_bosh_http_answer(fwd->r, status, buf, len);
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


/* the session side */

static void
ngx_xmpp_bosh_post_flush(ngx_xmpp_bosh_t *bs)
{
    if (!bs->flush.posted) {
        ngx_post_event(&bs->flush, &ngx_posted_events);
    }
}


static ngx_xmpp_bosh_slot_t *
ngx_xmpp_bosh_slot_find(ngx_xmpp_bosh_t *bs, uint64_t rid)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_XMPP_BOSH_SLOTS; i++) {
        if (bs->slots[i].used && bs->slots[i].rid == rid) {
            return &bs->slots[i];
        }
    }

    return NULL;
}


static ngx_uint_t
ngx_xmpp_bosh_slots_used(ngx_xmpp_bosh_t *bs, ngx_uint_t held_only)
{
    ngx_uint_t  i, n;

    n = 0;

    for (i = 0; i < NGX_XMPP_BOSH_SLOTS; i++) {
        if (bs->slots[i].used && (!held_only || bs->slots[i].held)) {
            n++;
        }
    }

    return n;
}


static ngx_xmpp_bosh_slot_t *
ngx_xmpp_bosh_oldest_held(ngx_xmpp_bosh_t *bs)
{
    ngx_uint_t             i;
    ngx_xmpp_bosh_slot_t  *slot;

    slot = NULL;

    for (i = 0; i < NGX_XMPP_BOSH_SLOTS; i++) {
        if (bs->slots[i].used && bs->slots[i].held
            && (slot == NULL || bs->slots[i].rid < slot->rid))
        {
            slot = &bs->slots[i];
        }
    }

    return slot;
}


static void
ngx_xmpp_bosh_slot_free(ngx_xmpp_bosh_slot_t *slot)
{
    if (slot->wait.timer_set) {
        ngx_del_timer(&slot->wait);
    }

    if (slot->early) {
        ngx_free(slot->early);
        slot->early = NULL;
    }

    slot->used = 0;
    slot->held = 0;
}


static void
ngx_xmpp_bosh_cache_put(ngx_xmpp_bosh_t *bs, uint64_t rid, u_char *data,
    size_t len)
{
    ngx_xmpp_bosh_cached_t  *c;

    c = &bs->cache[bs->cache_next];
    bs->cache_next = (bs->cache_next + 1) % bs->requests;

    if (c->data) {
        ngx_free(c->data);
        c->data = NULL;
    }

    c->data = ngx_alloc(len, &bs->log);
    if (c->data == NULL) {
        return;
    }

    ngx_memcpy(c->data, data, len);
    c->len = len;
    c->rid = rid;
}


/*
 * Answers one request with everything queued (XEP-0206 section 6);
 * the first answer also carries the session's attributes (XEP-0124
 * section 7.1, XEP-0206 section 5).
 */
static void
ngx_xmpp_bosh_answer(ngx_xmpp_bosh_t *bs, ngx_xmpp_bosh_slot_t *slot,
    ngx_uint_t terminate)
{
    u_char                *p, attrs[1024];
    uint64_t               rid;
    uint32_t               status;
    ngx_xmpp_wbuf_t        b;
    ngx_xmpp_session_t    *s;
    ngx_xmpp_bosh_peer_t   peer;

    s = bs->session;

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = (bs->out.last - bs->out.start) + 2048;

    status = NGX_HTTP_OK;
    ngx_xmpp_wbuf_add(&b, &status, sizeof(uint32_t));
    ngx_xmpp_wbuf_lit(&b, "<body xmlns='" NGX_XMPP_NS_HTTPBIND "'");

    if (bs->created) {
        bs->created = 0;

        p = ngx_snprintf(attrs, sizeof(attrs),
                         " xmlns:xmpp='" NGX_XMPP_NS_XBOSH "'"
                         " xmlns:stream='" NGX_XMPP_NS_STREAM "'"
                         " sid='%*s' wait='%M' requests='%ui' hold='%ui'"
                         " inactivity='%M' polling='2' ver='1.11'"
                         " maxpause='%d'"
                         " from='%V' authid='%*s' xmpp:version='1.0'"
                         " xmpp:restartlogic='true'",
                         (size_t) NGX_XMPP_BOSH_SID_LEN, bs->sid,
                         bs->wait / 1000, bs->requests, bs->hold,
                         s->conf->bosh_max_inactivity / 1000,
                         NGX_XMPP_BOSH_MAXPAUSE,
                         &s->conf->domain, sizeof(s->stream_id),
                         s->stream_id);
        ngx_xmpp_wbuf_add(&b, attrs, p - attrs);
    }

    if (terminate) {
        ngx_xmpp_wbuf_lit(&b, " type='terminate'");

        if (bs->condition) {
            ngx_xmpp_wbuf_lit(&b, " condition='");
            ngx_xmpp_wbuf_str(&b, bs->condition);
            ngx_xmpp_wbuf_lit(&b, "'");
        }
    }

    if (bs->out.last == bs->out.start) {
        ngx_xmpp_wbuf_lit(&b, "/>");

    } else {
        ngx_xmpp_wbuf_lit(&b, ">");
        ngx_xmpp_wbuf_add(&b, bs->out.start, bs->out.last - bs->out.start);
        ngx_xmpp_wbuf_lit(&b, "</body>");
        ngx_xmpp_wbuf_free(&bs->out);
        bs->out.max = s->conf->max_output;
    }

    peer = slot->peer;
    rid = slot->rid;
    ngx_xmpp_bosh_slot_free(slot);

    if (b.failed) {
        ngx_log_error(NGX_LOG_ERR, &bs->log, 0,
                      "xmpp: could not build a BOSH response");
        ngx_xmpp_wbuf_free(&b);
        ngx_xmpp_bosh_peer_error(&peer, "internal-server-error");
        return;
    }

    if (peer.r == NULL
        && (size_t) (b.last - b.start) > NGX_XMPP_BOSH_IPC_MAX)
    {
        ngx_log_error(NGX_LOG_INFO, &bs->log, 0,
                      "xmpp: BOSH response too large for another worker");
        ngx_xmpp_wbuf_free(&b);
        ngx_xmpp_bosh_peer_error(&peer, "policy-violation");
        bs->overflow = 1;
        ngx_xmpp_bosh_post_flush(bs);
        return;
    }

    ngx_xmpp_bosh_cache_put(bs, rid, b.start, b.last - b.start);
    ngx_xmpp_bosh_peer_answer(&peer, b.start, b.last - b.start);
    ngx_xmpp_wbuf_free(&b);
}


/*
 * After input, output, or a timer: answer what can be answered.
 * Queued output goes to the oldest held request; more held requests
 * than "hold" are answered empty; with none left, the inactivity timer
 * runs (XEP-0124 section 7.1).
 */
static void
ngx_xmpp_bosh_flush_handler(ngx_event_t *ev)
{
    ngx_uint_t             i;
    ngx_xmpp_bosh_t       *bs;
    ngx_xmpp_session_t    *s;
    ngx_xmpp_bosh_slot_t  *slot;

    bs = (ngx_xmpp_bosh_t *) ((u_char *) ev
                              - offsetof(ngx_xmpp_bosh_t, flush));
    s = bs->session;

    if (bs->overflow && !bs->ended) {
        ngx_log_error(NGX_LOG_INFO, &bs->log, 0,
                      "xmpp: BOSH output over %uz bytes, closing",
                      s->conf->max_output);
        bs->condition = "policy-violation";
        s->end_reason = "policy-violation";
        ngx_xmpp_session_close(s);
    }

    if (bs->ended) {
        for (i = 0; i < NGX_XMPP_BOSH_SLOTS; i++) {
            if (bs->slots[i].used) {
                ngx_xmpp_bosh_answer(bs, &bs->slots[i], 1);
            }
        }

        ngx_xmpp_session_finalize(s);
        return;
    }

    while (bs->out.last > bs->out.start) {
        slot = ngx_xmpp_bosh_oldest_held(bs);
        if (slot == NULL) {
            break;
        }

        ngx_xmpp_bosh_answer(bs, slot, 0);
    }

    /* section 10: a pause answers every held request at once */
    while (ngx_xmpp_bosh_slots_used(bs, 1) > (bs->pausing ? 0 : bs->hold)) {
        ngx_xmpp_bosh_answer(bs, ngx_xmpp_bosh_oldest_held(bs), 0);
    }

    bs->pausing = 0;

    if (ngx_xmpp_bosh_slots_used(bs, 0) == 0 && !bs->idle.timer_set) {
        ngx_add_timer(&bs->idle, bs->pause ? bs->pause
                                           : s->conf->bosh_max_inactivity);
    }
}


static void
ngx_xmpp_bosh_idle_handler(ngx_event_t *ev)
{
    ngx_xmpp_bosh_t  *bs;

    bs = (ngx_xmpp_bosh_t *) ((u_char *) ev
                              - offsetof(ngx_xmpp_bosh_t, idle));

    ngx_log_error(NGX_LOG_INFO, &bs->log, 0,
                  "xmpp: BOSH session inactive, closing");

    bs->session->end_reason = "connection-timeout";
    ngx_xmpp_session_close(bs->session);
}


/* "wait" passed without output: an empty answer */
static void
ngx_xmpp_bosh_wait_handler(ngx_event_t *ev)
{
    ngx_xmpp_bosh_slot_t  *slot;

    slot = (ngx_xmpp_bosh_slot_t *) ((u_char *) ev
                                     - offsetof(ngx_xmpp_bosh_slot_t, wait));

    ngx_xmpp_bosh_answer(slot->bosh, slot, 0);
    ngx_xmpp_bosh_post_flush(slot->bosh);
}


static ngx_int_t
ngx_xmpp_bosh_feed(ngx_xmpp_bosh_t *bs, u_char *data, size_t len)
{
    ngx_int_t  rc;

    rc = ngx_xmpp_session_input(bs->session, data, len);

    if (rc == NGX_DONE) {
        return NGX_DONE;
    }

    ngx_xmpp_parser_release(bs->session);

    return rc;
}


/* a synthetic <open/>: a new session or a restart (XEP-0206 5, 7) */
static ngx_int_t
ngx_xmpp_bosh_feed_open(ngx_xmpp_bosh_t *bs)
{
    u_char  buf[512], *p;

    p = ngx_snprintf(buf, sizeof(buf), "<open xmlns='" NGX_XMPP_NS_FRAMING
                     "' to='%V' version='1.0'/>",
                     &bs->session->conf->domain);

    return ngx_xmpp_bosh_feed(bs, buf, p - buf);
}


/*
 * The stanzas of one body, in order.  Each child is copied out with
 * the namespaces it uses from <body/> declared on itself, serialized
 * and fed to the session's parser.  NGX_DONE: the session is gone.
 */
static ngx_int_t
ngx_xmpp_bosh_process(ngx_xmpp_bosh_t *bs, ngx_xmpp_bosh_body_t *body)
{
    int        more;
    ngx_int_t  rc;

    static u_char  close[] = "<close xmlns='" NGX_XMPP_NS_FRAMING "'/>";

    if (body->restart) {
        rc = ngx_xmpp_bosh_feed_open(bs);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    for ( ;; ) {
        more = ngx_xmpp_bosh_body_next(body);

        if (more == 0) {
            break;
        }

        if (more < 0) {
            ngx_log_error(NGX_LOG_ERR, &bs->log, 0,
                          "xmpp: could not copy a BOSH stanza");
            return NGX_ERROR;
        }

        rc = ngx_xmpp_bosh_feed(bs, (u_char *) body->child, body->child_len);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    if (body->terminate) {
        /* XEP-0124 section 12: the stanzas first, then the end */
        return ngx_xmpp_bosh_feed(bs, close, sizeof(close) - 1);
    }

    return NGX_OK;
}


static ngx_xmpp_bosh_slot_t *
ngx_xmpp_bosh_slot_take(ngx_xmpp_bosh_t *bs, ngx_xmpp_bosh_peer_t *peer,
    uint64_t rid)
{
    ngx_uint_t             i;
    ngx_xmpp_bosh_slot_t  *slot;

    for (i = 0; i < NGX_XMPP_BOSH_SLOTS; i++) {
        slot = &bs->slots[i];

        if (slot->used) {
            continue;
        }

        slot->used = 1;
        slot->held = 0;
        slot->rid = rid;
        slot->peer = *peer;
        slot->bosh = bs;
        slot->early = NULL;

        ngx_memzero(&slot->wait, sizeof(ngx_event_t));
        slot->wait.handler = ngx_xmpp_bosh_wait_handler;
        slot->wait.data = &bs->conn;
        slot->wait.log = &bs->log;

        return slot;
    }

    return NULL;
}


/* processes a request now due, then any that waited for it */
static ngx_int_t
ngx_xmpp_bosh_run(ngx_xmpp_bosh_t *bs, ngx_xmpp_bosh_slot_t *slot,
    ngx_xmpp_bosh_body_t *body)
{
    ngx_int_t              rc;
    ngx_uint_t             pause;
    ngx_xmpp_bosh_body_t   early;

    for ( ;; ) {
        pause = body->pause;
        bs->rid = slot->rid;
        slot->held = 1;
        ngx_add_timer(&slot->wait, bs->wait);

        rc = ngx_xmpp_bosh_process(bs, body);

        if (body == &early) {
            ngx_xmpp_bosh_body_free(&early);
        }

        if (rc == NGX_DONE) {
            return NGX_DONE;
        }

        if (rc != NGX_OK || bs->ended) {
            return rc;
        }

        if (pause > NGX_XMPP_BOSH_MAXPAUSE) {
            ngx_log_error(NGX_LOG_INFO, &bs->log, 0,
                          "xmpp: BOSH pause of %uis refused", pause);
            bs->condition = "policy-violation";
            bs->session->end_reason = "policy-violation";
            ngx_xmpp_session_close(bs->session);
            return NGX_OK;
        }

        if (pause) {
            bs->pause = pause * 1000;
            bs->pausing = 1;
        }

        slot = ngx_xmpp_bosh_slot_find(bs, bs->rid + 1);
        if (slot == NULL || slot->early == NULL) {
            return NGX_OK;
        }

        if (ngx_xmpp_bosh_body_parse(&early, slot->early, slot->early_len)
            != 0)
        {
            ngx_xmpp_bosh_body_free(&early);
            return NGX_ERROR;
        }

        ngx_free(slot->early);
        slot->early = NULL;
        body = &early;
    }
}


/* a new session (XEP-0124 section 7, XEP-0206 section 5) */
static void
ngx_xmpp_bosh_create(ngx_xmpp_conf_t *xcf, ngx_xmpp_bosh_peer_t *peer,
    ngx_xmpp_bosh_body_t *body)
{
    u_char                 rnd[16];
    ngx_pool_t            *pool;
    ngx_connection_t      *hc;
    ngx_xmpp_bosh_t       *bs;
    ngx_xmpp_session_t    *s;
    ngx_xmpp_bosh_slot_t  *slot;

    hc = peer->r->connection;

    pool = ngx_create_pool(2048, ngx_cycle->log);
    if (pool == NULL) {
        ngx_xmpp_bosh_peer_error(peer, "internal-server-error");
        return;
    }

    bs = ngx_pcalloc(pool, sizeof(ngx_xmpp_bosh_t));
    if (bs == NULL) {
        goto failed;
    }

    /* the HTTP connection's log context dies with it: not ours */
    bs->log = *ngx_cycle->log;
    bs->log.handler = NULL;
    bs->log.data = NULL;
    bs->log.action = "serving XMPP over BOSH";
    pool->log = &bs->log;

    bs->conn.fd = (ngx_socket_t) -1;
    bs->conn.log = &bs->log;
    bs->conn.pool = pool;
    bs->conn.number = hc->number;

    bs->conn.addr_text.data = ngx_pstrdup(pool, &hc->addr_text);
    if (bs->conn.addr_text.data == NULL) {
        goto failed;
    }

    bs->conn.addr_text.len = hc->addr_text.len;

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        goto failed;
    }

    ngx_hex_dump(bs->key, rnd, sizeof(rnd));

    s = ngx_xmpp_session_create(&bs->conn, pool, xcf,
                                &ngx_xmpp_bosh_transport, bs);
    if (s == NULL) {
        goto failed;
    }

    bs->session = s;
    s->secure = (hc->ssl != NULL);

    ngx_sprintf(bs->sid, "%08xD%016xL%*s", (uint32_t) ngx_pid, s->id,
                (size_t) NGX_XMPP_BOSH_KEY, bs->key);

    bs->rid = body->rid;
    bs->requests = xcf->bosh_max_requests;
    bs->hold = (body->hold >= 0) ? (ngx_uint_t) body->hold : 1;
    bs->wait = xcf->bosh_max_wait;

    if (body->wait && body->wait * 1000 < bs->wait) {
        bs->wait = body->wait * 1000;
    }

    bs->out.max = xcf->max_output;
    bs->created = 1;

    bs->idle.handler = ngx_xmpp_bosh_idle_handler;
    bs->idle.data = &bs->conn;
    bs->idle.log = &bs->log;
    bs->flush.handler = ngx_xmpp_bosh_flush_handler;
    bs->flush.data = &bs->conn;
    bs->flush.log = &bs->log;

    if (ngx_xmpp_parser_init(s, (u_char *) NGX_XMPP_BOSH_ROOT,
                             sizeof(NGX_XMPP_BOSH_ROOT) - 1)
        != NGX_OK)
    {
        goto failed;
    }

    slot = ngx_xmpp_bosh_slot_take(bs, peer, body->rid);
    slot->held = 1;
    ngx_add_timer(&slot->wait, bs->wait);

    ngx_log_error(NGX_LOG_INFO, hc->log, 0,
                  "xmpp: BOSH session %*s", (size_t) 24, bs->sid);

    (void) ngx_xmpp_session_start(s);

    if (ngx_xmpp_bosh_feed_open(bs) == NGX_DONE) {
        return;
    }

    ngx_xmpp_bosh_post_flush(bs);
    return;

failed:

    ngx_destroy_pool(pool);
    ngx_xmpp_bosh_peer_error(peer, "internal-server-error");
}


/*
 * One request for a session of this worker, from here or from another
 * worker: checks sid and rid (XEP-0124 sections 14.2, 14.3), then
 * processes it or, ahead of its turn, keeps it until its turn comes.
 */
static void
ngx_xmpp_bosh_serve(ngx_xmpp_conf_t *xcf, ngx_xmpp_bosh_peer_t *peer,
    ngx_xmpp_bosh_body_t *body, u_char *data, size_t len)
{
    const char              *key;
    uint64_t                 id;
    ngx_int_t                rc;
    ngx_uint_t               i;
    uint32_t                 pid;
    ngx_xmpp_bosh_t         *bs;
    ngx_xmpp_session_t      *s;
    ngx_xmpp_bosh_slot_t    *slot;
    ngx_xmpp_bosh_cached_t  *c;
    uint32_t                 status;
    ngx_xmpp_bosh_peer_t     old;

    u_char                   empty[sizeof(uint32_t)
                                   + sizeof(NGX_XMPP_BOSH_EMPTY)];

    if (body->sid_len == 0) {
        if (peer->r == NULL) {
            ngx_xmpp_bosh_peer_error(peer, "bad-request");
            return;
        }

        ngx_xmpp_bosh_create(xcf, peer, body);
        return;
    }

    if (ngx_xmpp_bosh_sid_split(body->sid, body->sid_len, &pid, &id, &key)
           != 0
        || (ngx_pid_t) pid != ngx_pid
        || (s = ngx_xmpp_session_find(id)) == NULL
        || s->transport != &ngx_xmpp_bosh_transport)
    {
        ngx_xmpp_bosh_peer_error(peer, "item-not-found");
        return;
    }

    bs = s->transport_data;

    if (CRYPTO_memcmp(bs->key, key, NGX_XMPP_BOSH_KEY) != 0 || bs->ended) {
        ngx_xmpp_bosh_peer_error(peer, "item-not-found");
        return;
    }

    if (bs->idle.timer_set) {
        ngx_del_timer(&bs->idle);
    }

    /* any request ends a pause (XEP-0124 section 10) */
    bs->pause = 0;

    if (body->rid <= bs->rid) {
        /* section 14.3: a repeated rid gets the same answer again */
        for (i = 0; i < bs->requests; i++) {
            c = &bs->cache[i];

            if (c->data && c->rid == body->rid) {
                ngx_xmpp_bosh_peer_answer(peer, c->data, c->len);
                ngx_xmpp_bosh_post_flush(bs);
                return;
            }
        }

        slot = ngx_xmpp_bosh_slot_find(bs, body->rid);

        if (slot && slot->held) {
            /*
             * Still held: the client gave up on the first copy.  This
             * one takes its place; the first is answered empty.
             */
            old = slot->peer;
            slot->peer = *peer;

            status = NGX_HTTP_OK;
            ngx_memcpy(empty, &status, sizeof(uint32_t));
            ngx_memcpy(empty + sizeof(uint32_t), NGX_XMPP_BOSH_EMPTY,
                       sizeof(NGX_XMPP_BOSH_EMPTY) - 1);

            ngx_xmpp_bosh_peer_answer(&old, empty, sizeof(empty) - 1);
            return;
        }
    }

    if (body->rid <= bs->rid || body->rid > bs->rid + bs->requests
        || ngx_xmpp_bosh_slot_find(bs, body->rid))
    {
        ngx_log_error(NGX_LOG_INFO, &bs->log, 0,
                      "xmpp: BOSH rid %uL outside the window after %uL",
                      body->rid, bs->rid);
        ngx_xmpp_bosh_peer_error(peer, "item-not-found");
        bs->condition = "item-not-found";
        s->end_reason = "item-not-found";
        ngx_xmpp_session_close(s);
        return;
    }

    if (ngx_xmpp_bosh_slots_used(bs, 0) >= bs->requests) {
        /* section 11: more simultaneous requests than allowed */
        ngx_xmpp_bosh_peer_error(peer, "policy-violation");
        bs->condition = "policy-violation";
        s->end_reason = "policy-violation";
        ngx_xmpp_session_close(s);
        return;
    }

    slot = ngx_xmpp_bosh_slot_take(bs, peer, body->rid);

    if (body->rid != bs->rid + 1) {
        /* ahead of a missing rid: its turn comes after that one */
        slot->early = ngx_alloc(len, &bs->log);
        if (slot->early == NULL) {
            ngx_xmpp_bosh_peer_error(&slot->peer, "internal-server-error");
            ngx_xmpp_bosh_slot_free(slot);
            return;
        }

        ngx_memcpy(slot->early, data, len);
        slot->early_len = len;
        return;
    }

    rc = ngx_xmpp_bosh_run(bs, slot, body);

    if (rc == NGX_DONE) {
        return;
    }

    ngx_xmpp_bosh_post_flush(bs);
}


/* the transport callbacks */

/* the stream attributes travel in the session's first <body/> */
static ngx_int_t
ngx_xmpp_bosh_open(ngx_xmpp_session_t *s)
{
    return NGX_OK;
}


static ngx_int_t
ngx_xmpp_bosh_send(ngx_xmpp_session_t *s, u_char *data, size_t len)
{
    ngx_xmpp_bosh_t  *bs;

    bs = s->transport_data;

    if (bs->ended || bs->overflow) {
        return NGX_ERROR;
    }

    ngx_xmpp_wbuf_add(&bs->out, data, len);

    if (bs->out.failed) {
        /* the client does not collect: end it from the flush */
        bs->overflow = 1;
        bs->out.failed = 0;
        ngx_xmpp_bosh_post_flush(bs);
        return NGX_ERROR;
    }

    ngx_xmpp_bosh_post_flush(bs);

    return NGX_OK;
}


/* the stream ends: the held requests get a terminating body */
static void
ngx_xmpp_bosh_end(ngx_xmpp_session_t *s)
{
    ngx_xmpp_bosh_t  *bs;

    bs = s->transport_data;
    bs->ended = 1;

    if (bs->condition == NULL && s->end_reason
        && ngx_strcmp(s->end_reason, "client-closed") != 0)
    {
        /* XEP-0206 section 8: a stream error ends the BOSH session */
        bs->condition = "remote-stream-error";
    }

    ngx_xmpp_bosh_post_flush(bs);
}


static void
ngx_xmpp_bosh_finalize(ngx_xmpp_session_t *s)
{
    ngx_uint_t        i;
    ngx_xmpp_bosh_t  *bs;

    bs = s->transport_data;
    bs->ended = 1;

    for (i = 0; i < NGX_XMPP_BOSH_SLOTS; i++) {
        if (bs->slots[i].used) {
            ngx_xmpp_bosh_answer(bs, &bs->slots[i], 1);
        }
    }

    for (i = 0; i < NGX_XMPP_BOSH_SLOTS; i++) {
        if (bs->cache[i].data) {
            ngx_free(bs->cache[i].data);
            bs->cache[i].data = NULL;
        }
    }

    if (bs->idle.timer_set) {
        ngx_del_timer(&bs->idle);
    }

    if (bs->flush.posted) {
        ngx_delete_posted_event(&bs->flush);
    }

    ngx_xmpp_wbuf_free(&bs->out);

    ngx_destroy_pool(s->pool);
}
