
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
 *
 * This file is the session side; ngx_xmpp_bosh_http.c is the HTTP side
 * and the hand-off between workers.
 */


#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "ngx_xmpp_bosh.h"


#define NGX_XMPP_NS_XBOSH     "urn:xmpp:xbosh"

/* the synthetic root that makes each child of <body/> top-level */
#define NGX_XMPP_BOSH_ROOT  "<bosh xmlns='" NGX_XMPP_NS_CLIENT "'>"

#define NGX_XMPP_BOSH_EMPTY  "<body xmlns='" NGX_XMPP_NS_HTTPBIND "'/>"

#define NGX_XMPP_BOSH_SLOTS    8           /* conclave_bosh_max_requests */
#define NGX_XMPP_BOSH_KEY      NGX_XMPP_BOSH_KEY_LEN

/* the longest pause a client may ask for, seconds (XEP-0124 10) */
#define NGX_XMPP_BOSH_MAXPAUSE  120

/* the shortest polling interval, seconds ("polling", XEP-0124 12) */
#define NGX_XMPP_BOSH_POLLING   2


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
    unsigned                    legacy:1;  /* created without "ver" */
    unsigned                    ended:1;
    unsigned                    overflow:1;
    unsigned                    pausing:1; /* answer every held request */

    ngx_msec_t                  pause;     /* inactivity while paused */

    ngx_msec_t                  polled;    /* the last request in order */
    unsigned                    polled_empty:1;  /* ... and its answer */
};


static ngx_int_t ngx_xmpp_bosh_open(ngx_xmpp_session_t *s);
static ngx_int_t ngx_xmpp_bosh_send(ngx_xmpp_session_t *s, u_char *data,
    size_t len);
static void ngx_xmpp_bosh_end(ngx_xmpp_session_t *s);
static void ngx_xmpp_bosh_finalize(ngx_xmpp_session_t *s);
static void ngx_xmpp_bosh_flush_handler(ngx_event_t *ev);
static void ngx_xmpp_bosh_idle_handler(ngx_event_t *ev);
static void ngx_xmpp_bosh_wait_handler(ngx_event_t *ev);


static ngx_xmpp_transport_t  ngx_xmpp_bosh_transport = {
    ngx_string("bosh"),
    ngx_xmpp_bosh_open,
    ngx_xmpp_bosh_send,
    ngx_xmpp_bosh_end,
    ngx_xmpp_bosh_finalize,
    NULL
};


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
                         " inactivity='%M' polling='%d' ver='1.11'"
                         " maxpause='%d'"
                         " from='%V' authid='%*s' xmpp:version='1.0'"
                         " xmpp:restartlogic='true'",
                         (size_t) NGX_XMPP_BOSH_SID_LEN, bs->sid,
                         bs->wait / 1000, bs->requests, bs->hold,
                         s->conf->bosh_max_inactivity / 1000,
                         NGX_XMPP_BOSH_POLLING, NGX_XMPP_BOSH_MAXPAUSE,
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
        bs->polled_empty = 0;
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


/*
 * XEP-0124 section 12, overactivity: in a polling session (hold 0) two
 * empty requests in a row less than "polling" seconds apart, the first
 * answered without payload, end the session.  Called for each request
 * in rid order.
 */
static ngx_uint_t
ngx_xmpp_bosh_overactive(ngx_xmpp_bosh_t *bs, ngx_xmpp_bosh_body_t *body)
{
    ngx_uint_t  empty, over;

    if (bs->hold != 0) {
        return 0;
    }

    empty = !body->restart && !body->terminate && body->pause == 0
            && ngx_xmpp_bosh_body_empty(body);

    over = empty && bs->polled_empty
           && ngx_current_msec - bs->polled < NGX_XMPP_BOSH_POLLING * 1000;

    bs->polled = ngx_current_msec;
    bs->polled_empty = empty;

    return over;
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
    bs->legacy = peer->legacy;

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


/* section 14.2: the session the sid names, if it is ours; else answered */
static ngx_xmpp_bosh_t *
ngx_xmpp_bosh_find(ngx_xmpp_bosh_peer_t *peer, ngx_xmpp_bosh_body_t *body)
{
    const char          *key;
    uint64_t             id;
    uint32_t             pid;
    ngx_xmpp_bosh_t     *bs;
    ngx_xmpp_session_t  *s;

    if (ngx_xmpp_bosh_sid_split(body->sid, body->sid_len, &pid, &id, &key)
           != 0
        || (ngx_pid_t) pid != ngx_pid
        || (s = ngx_xmpp_session_find(id)) == NULL
        || s->transport != &ngx_xmpp_bosh_transport)
    {
        ngx_xmpp_bosh_peer_error(peer, "item-not-found");
        return NULL;
    }

    bs = s->transport_data;

    if (CRYPTO_memcmp(bs->key, key, NGX_XMPP_BOSH_KEY) != 0 || bs->ended) {
        ngx_xmpp_bosh_peer_error(peer, "item-not-found");
        return NULL;
    }

    return bs;
}


/*
 * Section 14.3: a repeated rid gets the same answer again, and one still
 * held takes the place of the first copy.  NGX_DONE: answered.
 */
static ngx_int_t
ngx_xmpp_bosh_repeat(ngx_xmpp_bosh_t *bs, ngx_xmpp_bosh_peer_t *peer,
    uint64_t rid)
{
    uint32_t                 status;
    ngx_uint_t               i;
    ngx_xmpp_bosh_slot_t    *slot;
    ngx_xmpp_bosh_peer_t     old;
    ngx_xmpp_bosh_cached_t  *c;

    u_char                   empty[sizeof(uint32_t)
                                   + sizeof(NGX_XMPP_BOSH_EMPTY)];

    for (i = 0; i < bs->requests; i++) {
        c = &bs->cache[i];

        if (c->data && c->rid == rid) {
            ngx_xmpp_bosh_peer_answer(peer, c->data, c->len);
            ngx_xmpp_bosh_post_flush(bs);
            return NGX_DONE;
        }
    }

    slot = ngx_xmpp_bosh_slot_find(bs, rid);

    if (slot == NULL || !slot->held) {
        return NGX_DECLINED;
    }

    /*
     * Still held: the client gave up on the first copy.  This one
     * takes its place; the first is answered empty.
     */
    old = slot->peer;
    slot->peer = *peer;

    status = NGX_HTTP_OK;
    ngx_memcpy(empty, &status, sizeof(uint32_t));
    ngx_memcpy(empty + sizeof(uint32_t), NGX_XMPP_BOSH_EMPTY,
               sizeof(NGX_XMPP_BOSH_EMPTY) - 1);

    ngx_xmpp_bosh_peer_answer(&old, empty, sizeof(empty) - 1);

    return NGX_DONE;
}


/*
 * Section 14.3 (the rid window) and section 11 (no more requests at
 * once than agreed): a request outside them ends the session.
 */
static ngx_int_t
ngx_xmpp_bosh_window(ngx_xmpp_bosh_t *bs, ngx_xmpp_bosh_peer_t *peer,
    uint64_t rid)
{
    const char  *condition;

    if (rid <= bs->rid || rid > bs->rid + bs->requests
        || ngx_xmpp_bosh_slot_find(bs, rid))
    {
        ngx_log_error(NGX_LOG_INFO, &bs->log, 0,
                      "xmpp: BOSH rid %uL outside the window after %uL",
                      rid, bs->rid);
        condition = "item-not-found";

    } else if (ngx_xmpp_bosh_slots_used(bs, 0) >= bs->requests) {
        condition = "policy-violation";

    } else {
        return NGX_OK;
    }

    ngx_xmpp_bosh_peer_error(peer, condition);
    bs->condition = condition;
    bs->session->end_reason = condition;
    ngx_xmpp_session_close(bs->session);

    return NGX_DONE;
}


/*
 * One request for a session of this worker, from here or from another
 * worker: checks sid and rid (XEP-0124 sections 14.2, 14.3), then
 * processes it or, ahead of its turn, keeps it until its turn comes.
 */
void
ngx_xmpp_bosh_serve(ngx_xmpp_conf_t *xcf, ngx_xmpp_bosh_peer_t *peer,
    ngx_xmpp_bosh_body_t *body, u_char *data, size_t len)
{
    ngx_xmpp_bosh_t       *bs;
    ngx_xmpp_bosh_slot_t  *slot;

    if (body->sid_len == 0) {
        if (peer->r == NULL) {
            ngx_xmpp_bosh_peer_error(peer, "bad-request");
            return;
        }

        peer->legacy = !body->ver;
        ngx_xmpp_bosh_create(xcf, peer, body);
        return;
    }

    bs = ngx_xmpp_bosh_find(peer, body);
    if (bs == NULL) {
        return;
    }

    peer->legacy = bs->legacy;

    if (bs->idle.timer_set) {
        ngx_del_timer(&bs->idle);
    }

    /* any request ends a pause (XEP-0124 section 10) */
    bs->pause = 0;

    if ((body->rid <= bs->rid
         && ngx_xmpp_bosh_repeat(bs, peer, body->rid) == NGX_DONE)
        || ngx_xmpp_bosh_window(bs, peer, body->rid) == NGX_DONE)
    {
        return;
    }

    if (body->rid == bs->rid + 1 && ngx_xmpp_bosh_overactive(bs, body)) {
        ngx_log_error(NGX_LOG_INFO, &bs->log, 0,
                      "xmpp: BOSH polls more often than every %ds",
                      NGX_XMPP_BOSH_POLLING);
        ngx_xmpp_bosh_peer_error(peer, "policy-violation");
        bs->condition = "policy-violation";
        bs->session->end_reason = "policy-violation";
        ngx_xmpp_session_close(bs->session);
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

    if (ngx_xmpp_bosh_run(bs, slot, body) != NGX_DONE) {
        ngx_xmpp_bosh_post_flush(bs);
    }
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
