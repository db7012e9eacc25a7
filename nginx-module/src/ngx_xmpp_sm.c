
/*
 * XEP-0198 stream management: acks and resumption (docs/routing.md
 * "Stream management").
 *
 * Counting.  After <enable/>, h_in counts the stanzas the client sent
 * and we handled, h_out the stanzas we sent; every stanza sent is kept
 * in the session's unacked queue (one growable buffer, no allocation
 * per stanza) until the client's <a h='...'/> covers it.
 *
 * Parking.  When a resumable session loses its connection without a
 * stream end, it is parked: a "ghost" session (its JID, presence and
 * directed presence, counters and queue) stays in this worker under
 * the same session id, its registry entry stays, and stanzas routed to
 * it are queued.  Nothing is broadcast: to everyone else the resource
 * is still online for conclave_sm_resume_timeout.
 *
 * Resumption.  The token (previd) is the 128-bit secret in hex followed
 * by the resource; the resuming client is authenticated, so its bare
 * JID and the resource find the session's registry entry, which names
 * the worker that holds it.  In that worker the ghost is taken over at
 * once; in another one the new worker asks over the inter-worker
 * channel (SM_TAKE), and the owner moves the registry entry to the new
 * session, sends the queued stanzas (SM_STANZA, in order) and the state
 * (SM_TAKEN).  What others route meanwhile is held by the new session
 * until the state arrives, or forwarded by the old worker, so nothing
 * is lost and the order of each sender's stanzas is kept.
 *
 * The end.  A ghost whose time is up, and the queue of a session that
 * ends in any other way (a clean </stream> included: XEP-0198 section
 * 5 and the "nothing is lost"), are handled as undeliverable:
 * messages go to the user's other resources, else to offline storage
 * when they have a body (RFC 6121 8.5.2.2.1, XEP-0160); requests get
 * an error, presence is dropped.  This runs from an event of its own,
 * never inside a routing loop.
 */


#include "ngx_xmpp.h"


#define NGX_XMPP_NS_SM           "urn:xmpp:sm:3"
#define NGX_XMPP_SM_SECRET_HEX   32
#define NGX_XMPP_SM_ASK_EVERY    5          /* unacked stanzas per <r/> */
#define NGX_XMPP_SM_WAIT         5000       /* ms for the old worker */
#define NGX_XMPP_SM_FORWARD      30000      /* ms a moved ghost forwards */


/* stanzas as [uint32 length][bytes], oldest first */
typedef struct {
    u_char                *buf;
    size_t                 head;
    size_t                 tail;
    size_t                 size;
    ngx_uint_t             n;
} ngx_xmpp_sm_queue_t;


struct ngx_xmpp_sm_s {
    uint32_t               h_in;
    uint32_t               h_out;
    uint32_t               acked;
    ngx_xmpp_sm_queue_t    q;
    u_char                 secret[NGX_XMPP_SM_SECRET_HEX];

    /* a resumption in progress (before <resumed/>) */
    uint32_t               client_h;
    ngx_xmpp_sm_queue_t    held_old;     /* SM_STANZA from the owner */
    ngx_xmpp_sm_queue_t    held_new;     /* routed here meanwhile */
    ngx_event_t            wait;
    ngx_xmpp_session_t    *session;

    unsigned               enabled:1;
    unsigned               resume:1;
    unsigned               asked:1;
    unsigned               resuming:1;
};


/* a detached session: parked for resumption, or ending */
typedef struct {
    ngx_rbtree_node_t      node;         /* key: the session id */
    ngx_xmpp_session_t     ghost;        /* id, conf, pool, jid, presence */
    ngx_connection_t       conn;         /* only its log, for callees */
    uint32_t               h_in;
    uint32_t               h_out;
    ngx_xmpp_sm_queue_t    q;
    u_char                 secret[NGX_XMPP_SM_SECRET_HEX];
    ngx_event_t            ev;
    ngx_pid_t              moved_pid;
    uint64_t               moved_sid;
    unsigned               parked:1;     /* in the tree, registry kept */
    unsigned               moved:1;      /* taken by another session */
} ngx_xmpp_sm_ghost_t;


/* SM_TAKE payload; the bare JID follows */
typedef struct {
    uint64_t               new_sid;
    uint32_t               h;
    u_char                 secret[NGX_XMPP_SM_SECRET_HEX];
} ngx_xmpp_sm_take_t;


/* SM_TAKEN payload; the resource, then [u16 len][JID] directed */
typedef struct {
    uint32_t               h_in;
    uint32_t               h_out;
    int32_t                priority;
    uint16_t               available;
    uint16_t               ndirected;
    uint16_t               res_len;
    uint16_t               moved;
} ngx_xmpp_sm_taken_t;


static void ngx_xmpp_sm_ghost_handler(ngx_event_t *ev);
static void ngx_xmpp_sm_wait_handler(ngx_event_t *ev);
static void ngx_xmpp_sm_failed(ngx_xmpp_session_t *s, const char *cond);


static ngx_rbtree_t       ngx_xmpp_sm_ghosts;
static ngx_rbtree_node_t  ngx_xmpp_sm_sentinel;


static ngx_int_t
ngx_xmpp_sm_queue_add(ngx_xmpp_sm_queue_t *q, u_char *data, size_t len)
{
    u_char    *nb;
    size_t     need, size;
    uint32_t   l;

    need = sizeof(uint32_t) + len;

    if (q->tail + need > q->size) {
        if (q->head && q->tail - q->head + need <= q->size) {
            ngx_memmove(q->buf, q->buf + q->head, q->tail - q->head);
            q->tail -= q->head;
            q->head = 0;

        } else {
            size = q->size ? q->size : 4096;

            while (size < q->tail - q->head + need) {
                size *= 2;
            }

            nb = ngx_alloc(size, ngx_cycle->log);
            if (nb == NULL) {
                return NGX_ERROR;
            }

            if (q->buf) {
                ngx_memcpy(nb, q->buf + q->head, q->tail - q->head);
                ngx_free(q->buf);
            }

            q->tail -= q->head;
            q->head = 0;
            q->buf = nb;
            q->size = size;
        }
    }

    l = (uint32_t) len;
    ngx_memcpy(q->buf + q->tail, &l, sizeof(uint32_t));
    ngx_memcpy(q->buf + q->tail + sizeof(uint32_t), data, len);
    q->tail += need;
    q->n++;

    return NGX_OK;
}


/* the oldest stanza, or NGX_DONE when the queue is empty */
static ngx_int_t
ngx_xmpp_sm_queue_peek(ngx_xmpp_sm_queue_t *q, u_char **data, size_t *len)
{
    uint32_t  l;

    if (q->n == 0) {
        return NGX_DONE;
    }

    ngx_memcpy(&l, q->buf + q->head, sizeof(uint32_t));
    *data = q->buf + q->head + sizeof(uint32_t);
    *len = l;

    return NGX_OK;
}


static void
ngx_xmpp_sm_queue_drop(ngx_xmpp_sm_queue_t *q)
{
    uint32_t  l;

    ngx_memcpy(&l, q->buf + q->head, sizeof(uint32_t));
    q->head += sizeof(uint32_t) + l;
    q->n--;

    if (q->n == 0) {
        q->head = 0;
        q->tail = 0;
    }
}


static void
ngx_xmpp_sm_queue_free(ngx_xmpp_sm_queue_t *q)
{
    ngx_free(q->buf);
    ngx_memzero(q, sizeof(ngx_xmpp_sm_queue_t));
}


static ngx_uint_t
ngx_xmpp_sm_is(ngx_xmpp_node_t *n, const char *name)
{
    return n->name.len == ngx_strlen(name)
           && ngx_strncmp(n->name.data, name, n->name.len) == 0;
}


/* message, presence or iq: what XEP-0198 counts */
static ngx_uint_t
ngx_xmpp_sm_stanza(u_char *data, size_t len)
{
    return (len > 3 && ngx_strncmp(data, "<iq", 3) == 0
            && (data[3] == ' ' || data[3] == '>'))
           || (len > 9 && ngx_strncmp(data, "<message", 8) == 0
               && (data[8] == ' ' || data[8] == '>'))
           || (len > 10 && ngx_strncmp(data, "<presence", 9) == 0
               && (data[9] == ' ' || data[9] == '>' || data[9] == '/'));
}


static void
ngx_xmpp_sm_raw(ngx_xmpp_session_t *s, const char *xml, size_t len)
{
    (void) s->transport->send(s, (u_char *) xml, len);
}


/*
 * The session's end, after ngx_xmpp_sm_detach() took what it keeps:
 * the rest is freed.  Runs from the session's detach and, should the
 * pool go first, from its cleanup (which then runs before the
 * session's own cleanup: the queue is left for the detach to take).
 */
void
ngx_xmpp_sm_release(ngx_xmpp_session_t *s)
{
    ngx_xmpp_sm_t  *sm;

    sm = s->sm;

    if (sm == NULL) {
        return;
    }

    if (sm->wait.timer_set) {
        ngx_del_timer(&sm->wait);
    }

    ngx_xmpp_sm_queue_free(&sm->q);
    ngx_xmpp_sm_queue_free(&sm->held_old);
    ngx_xmpp_sm_queue_free(&sm->held_new);
}


static void
ngx_xmpp_sm_pool_cleanup(void *data)
{
    ngx_xmpp_sm_t  *sm = data;

    if (sm->session->node.key != 0) {
        return;
    }

    ngx_xmpp_sm_release(sm->session);
}


static ngx_xmpp_sm_t *
ngx_xmpp_sm_create(ngx_xmpp_session_t *s)
{
    ngx_pool_cleanup_t  *cln;
    ngx_xmpp_sm_t       *sm;

    sm = ngx_pcalloc(s->pool, sizeof(ngx_xmpp_sm_t));
    if (sm == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(s->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_xmpp_sm_pool_cleanup;
    cln->data = sm;

    sm->session = s;
    sm->wait.handler = ngx_xmpp_sm_wait_handler;
    sm->wait.data = sm;
    sm->wait.log = s->connection->log;

    s->sm = sm;

    return sm;
}


/* offered after authentication on transports with a stream to resume */
ngx_uint_t
ngx_xmpp_sm_offered(ngx_xmpp_session_t *s)
{
    return s->transport->name.len != sizeof("bosh") - 1
           || ngx_strncmp(s->transport->name.data, "bosh", 4) != 0;
}


/*
 * Every outgoing stanza of an enabled session: counted and kept until
 * acked.  Past conclave_sm_max_unacked the client is not acking, and
 * the stream ends with <policy-violation/> (the queue is then handled
 * as undeliverable, so nothing is lost).
 */
void
ngx_xmpp_sm_sent(ngx_xmpp_session_t *s, u_char *data, size_t len)
{
    ngx_xmpp_sm_t  *sm;

    sm = s->sm;

    if (sm == NULL || !sm->enabled || !ngx_xmpp_sm_stanza(data, len)) {
        return;
    }

    if (ngx_xmpp_sm_queue_add(&sm->q, data, len) != NGX_OK) {
        ngx_xmpp_session_error(s, "internal-server-error", NULL);
        return;
    }

    sm->h_out++;

    if (sm->q.n > s->conf->sm_max_unacked) {
        ngx_xmpp_session_error(s, "policy-violation",
                               "too many unacknowledged stanzas");
        return;
    }

    if (!sm->asked && sm->q.n >= NGX_XMPP_SM_ASK_EVERY) {
        sm->asked = 1;
        ngx_xmpp_sm_raw(s, "<r xmlns='" NGX_XMPP_NS_SM "'/>",
                        sizeof("<r xmlns='" NGX_XMPP_NS_SM "'/>") - 1);
    }
}


ngx_uint_t
ngx_xmpp_sm_resuming(ngx_xmpp_session_t *s)
{
    return s->sm && s->sm->resuming;
}


/* a stanza from the client was handled (XEP-0198 section 4) */
void
ngx_xmpp_sm_handled(ngx_xmpp_session_t *s)
{
    if (s->sm && s->sm->enabled) {
        s->sm->h_in++;
    }
}


static ngx_int_t
ngx_xmpp_sm_h(ngx_xmpp_node_t *n, uint32_t *h)
{
    ngx_str_t  *v;
    ngx_int_t   k;

    v = ngx_xmpp_node_attr(n, "h");
    if (v == NULL) {
        return NGX_ERROR;
    }

    k = ngx_atoi(v->data, v->len);
    if (k == NGX_ERROR || k > 0xffffffffLL) {
        return NGX_ERROR;
    }

    *h = (uint32_t) k;

    return NGX_OK;
}


/* <a h='N'/>: the client has everything up to N (mod 2^32) */
static void
ngx_xmpp_sm_ack(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n)
{
    uint32_t        h, k;
    ngx_xmpp_sm_t  *sm;

    sm = s->sm;

    if (ngx_xmpp_sm_h(n, &h) != NGX_OK) {
        ngx_xmpp_session_error(s, "invalid-xml", "bad <a/>");
        return;
    }

    k = h - sm->acked;

    if (k > sm->q.n) {
        /* XEP-0198 section 4: more than we sent */
        ngx_xmpp_session_error(s, "undefined-condition",
                               "handled-count-too-high");
        return;
    }

    while (k--) {
        ngx_xmpp_sm_queue_drop(&sm->q);
    }

    sm->acked = h;
    sm->asked = 0;
}


static void
ngx_xmpp_sm_enable(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n)
{
    u_char            buf[512], *p, rnd[NGX_XMPP_SM_SECRET_HEX / 2];
    ngx_str_t        *v;
    ngx_uint_t        i;
    ngx_xmpp_sm_t    *sm;
    ngx_xmpp_wbuf_t  *b;

    if (s->sm && s->sm->enabled) {
        ngx_xmpp_sm_failed(s, "unexpected-request");
        return;
    }

    sm = s->sm ? s->sm : ngx_xmpp_sm_create(s);
    if (sm == NULL) {
        ngx_xmpp_sm_failed(s, "internal-server-error");
        return;
    }

    sm->enabled = 1;

    v = ngx_xmpp_node_attr(n, "resume");
    sm->resume = v && ((v->len == 4 && ngx_strncmp(v->data, "true", 4) == 0)
                       || (v->len == 1 && v->data[0] == '1'));

    if (!sm->resume) {
        ngx_xmpp_sm_raw(s, "<enabled xmlns='" NGX_XMPP_NS_SM "'/>",
                        sizeof("<enabled xmlns='" NGX_XMPP_NS_SM "'/>") - 1);
        return;
    }

    for (i = 0; i < sizeof(rnd); i++) {
        rnd[i] = (u_char) ngx_random();
    }

    ngx_hex_dump(sm->secret, rnd, sizeof(rnd));

    /* the token: the secret, then the resource (the session's key) */
    p = ngx_snprintf(buf, sizeof(buf), "<enabled xmlns='" NGX_XMPP_NS_SM
                     "' resume='true' max='%M' id='",
                     s->conf->sm_resume_timeout / 1000);
    b = ngx_xmpp_wbuf_scratch(4096 + 6 * s->jid.resource.len);
    ngx_xmpp_wbuf_add(b, buf, p - buf);
    ngx_xmpp_wbuf_add(b, sm->secret, NGX_XMPP_SM_SECRET_HEX);
    ngx_xmpp_wbuf_escs(b, &s->jid.resource);
    ngx_xmpp_wbuf_lit(b, "'/>");

    if (!b->failed) {
        ngx_xmpp_sm_raw(s, (char *) b->start, b->last - b->start);
    }
}


static void
ngx_xmpp_sm_failed(ngx_xmpp_session_t *s, const char *cond)
{
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_wbuf_scratch(1024);

    ngx_xmpp_wbuf_lit(b, "<failed xmlns='" NGX_XMPP_NS_SM "'><");
    ngx_xmpp_wbuf_str(b, cond);
    ngx_xmpp_wbuf_lit(b, " xmlns='" NGX_XMPP_NS_STANZAS "'/></failed>");

    ngx_xmpp_sm_raw(s, (char *) b->start, b->last - b->start);
}


static ngx_xmpp_sm_ghost_t *
ngx_xmpp_sm_ghost_find(uint64_t sid)
{
    ngx_rbtree_key_t    key;
    ngx_rbtree_node_t  *node, *sentinel;

    if (ngx_xmpp_sm_ghosts.root == NULL) {
        return NULL;
    }

    key = (ngx_rbtree_key_t) sid;
    node = ngx_xmpp_sm_ghosts.root;
    sentinel = ngx_xmpp_sm_ghosts.sentinel;

    while (node != sentinel) {
        if (key != node->key) {
            node = (key < node->key) ? node->left : node->right;
            continue;
        }

        return (ngx_xmpp_sm_ghost_t *) node;
    }

    return NULL;
}


static void
ngx_xmpp_sm_ghost_free(ngx_xmpp_sm_ghost_t *g)
{
    ngx_uint_t  i;

    if (g->parked) {
        ngx_rbtree_delete(&ngx_xmpp_sm_ghosts, &g->node);
        g->parked = 0;
    }

    if (g->ev.timer_set) {
        ngx_del_timer(&g->ev);
    }

    if (g->ev.posted) {
        ngx_delete_posted_event(&g->ev);
    }

    for (i = 0; i < g->ghost.ndirected; i++) {
        ngx_free(g->ghost.directed[i].data);
    }

    ngx_xmpp_sm_queue_free(&g->q);
    ngx_destroy_pool(g->ghost.pool);
    ngx_free(g);
}


/*
 * Called when a bound session with stream management goes away.
 * NGX_OK: it is parked for resumption (its presence and registry entry
 * stay); otherwise its unacked stanzas are handled as undeliverable
 * from a posted event, after the caller has ended its presence.
 */
ngx_int_t
ngx_xmpp_sm_detach(ngx_xmpp_session_t *s)
{
    ngx_str_t             ip;
    ngx_uint_t            i, resumable;
    const char           *r;
    ngx_xmpp_sm_t        *sm;
    ngx_xmpp_sm_ghost_t  *g;

    sm = s->sm;

    if (sm == NULL || !sm->enabled) {
        return NGX_DECLINED;
    }

    r = s->end_reason;
    resumable = sm->resume && !ngx_exiting && !ngx_terminate
                && (r == NULL || ngx_strcmp(r, "connection-lost") == 0
                    || ngx_strcmp(r, "connection-timeout") == 0);

    if (!resumable && sm->q.n == 0) {
        return NGX_DECLINED;
    }

    g = ngx_calloc(sizeof(ngx_xmpp_sm_ghost_t), s->connection->log);
    if (g == NULL) {
        return NGX_DECLINED;
    }

    g->ghost.pool = ngx_create_pool(1024, ngx_cycle->log);
    if (g->ghost.pool == NULL) {
        ngx_free(g);
        return NGX_DECLINED;
    }

    /*
     * What presence_gone() and its callees (rooms) read of a session;
     * the ghost has no connection, only a log.
     */
    g->conn.log = ngx_cycle->log;
    g->conn.fd = (ngx_socket_t) -1;
    g->ghost.connection = &g->conn;
    g->ghost.transport = s->transport;
    g->ghost.id = s->id;
    g->ghost.conf = s->conf;
    ngx_memcpy(g->ghost.audit_sid, s->audit_sid, sizeof(s->audit_sid));

    if (s->audit_ip) {
        ip.data = s->audit_ip;
        ip.len = ngx_strlen(s->audit_ip);
        g->ghost.audit_ip = (u_char *) ngx_xmpp_cstr(g->ghost.pool, &ip);
    }

    g->ghost.available = s->available;
    g->ghost.priority = s->priority;
    g->ghost.bound = 1;
    g->h_in = sm->h_in;
    g->h_out = sm->h_out;
    g->q = sm->q;
    ngx_memzero(&sm->q, sizeof(ngx_xmpp_sm_queue_t));
    ngx_memcpy(g->secret, sm->secret, NGX_XMPP_SM_SECRET_HEX);

    g->ev.handler = ngx_xmpp_sm_ghost_handler;
    g->ev.data = g;
    g->ev.log = ngx_cycle->log;
    g->ev.cancelable = 1;

    if (ngx_xmpp_jid_make(g->ghost.pool, &s->jid.local, &s->jid.domain,
                          &s->jid.resource, &g->ghost.jid)
        != NGX_OK)
    {
        resumable = 0;
    }

    if (!resumable) {
        /* the caller ends the presence; the queue is rerouted later */
        ngx_post_event(&g->ev, &ngx_posted_events);
        return NGX_DECLINED;
    }

    g->ghost.directed = ngx_palloc(g->ghost.pool,
                                   NGX_XMPP_DIRECTED_MAX * sizeof(ngx_str_t));
    if (g->ghost.directed == NULL) {
        ngx_post_event(&g->ev, &ngx_posted_events);
        return NGX_DECLINED;
    }

    for (i = 0; i < s->ndirected; i++) {
        g->ghost.directed[i] = s->directed[i];
    }

    g->ghost.ndirected = s->ndirected;
    s->ndirected = 0;

    if (ngx_xmpp_sm_ghosts.root == NULL) {
        ngx_rbtree_init(&ngx_xmpp_sm_ghosts, &ngx_xmpp_sm_sentinel,
                        ngx_rbtree_insert_value);
    }

    g->node.key = (ngx_rbtree_key_t) s->id;
    ngx_rbtree_insert(&ngx_xmpp_sm_ghosts, &g->node);
    g->parked = 1;

    ngx_add_timer(&g->ev, s->conf->sm_resume_timeout);

    ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                  "xmpp: session of \"%V\" kept for resumption, "
                  "%ui unacked", &s->jid.full, g->q.n);

    return NGX_OK;
}


/* the value of attribute name in the start tag of our serialization */
static ngx_int_t
ngx_xmpp_sm_attr(ngx_pool_t *pool, u_char *data, size_t len,
    const char *name, ngx_str_t *v)
{
    u_char  *p, *end, *q, *o;
    size_t   n;

    end = ngx_strlchr(data, data + len, '>');
    if (end == NULL) {
        return NGX_DECLINED;
    }

    n = ngx_strlen(name);

    for (p = data; p + n + 3 < end; p++) {
        if (p[0] != ' ' || ngx_strncmp(p + 1, name, n) != 0
            || p[n + 1] != '=' || p[n + 2] != '\'')
        {
            continue;
        }

        p += n + 3;
        q = ngx_strlchr(p, end, '\'');
        if (q == NULL) {
            return NGX_DECLINED;
        }

        v->data = ngx_pnalloc(pool, q - p + 1);
        if (v->data == NULL) {
            return NGX_ERROR;
        }

        /* undo ngx_xmpp_wbuf_esc() */
        for (o = v->data; p < q; p++) {
            if (*p != '&') {
                *o++ = *p;

            } else if (ngx_strncmp(p, "&amp;", 5) == 0) {
                *o++ = '&'; p += 4;
            } else if (ngx_strncmp(p, "&lt;", 4) == 0) {
                *o++ = '<'; p += 3;
            } else if (ngx_strncmp(p, "&gt;", 4) == 0) {
                *o++ = '>'; p += 3;
            } else if (ngx_strncmp(p, "&apos;", 6) == 0) {
                *o++ = '\''; p += 5;
            } else if (ngx_strncmp(p, "&quot;", 6) == 0) {
                *o++ = '"'; p += 5;
            } else {
                *o++ = *p;
            }
        }

        v->len = o - v->data;
        return NGX_OK;
    }

    return NGX_DECLINED;
}


static ngx_uint_t
ngx_xmpp_sm_str_is(ngx_str_t *s, const char *lit)
{
    return s->len == ngx_strlen(lit)
           && ngx_strncmp(s->data, lit, s->len) == 0;
}


/* RFC 6120 8.3: <service-unavailable/> back to the sender */
static void
ngx_xmpp_sm_bounce(ngx_xmpp_conf_t *xcf, ngx_pool_t *pool, u_char *data,
    size_t len, ngx_str_t *to, ngx_str_t *from)
{
    ngx_str_t         id;
    ngx_xmpp_jid_t    jid;
    ngx_xmpp_wbuf_t   b;
    const char       *kind;

    kind = (data[1] == 'm') ? "message" : "iq";

    if (ngx_xmpp_jid_parse(pool, from, &jid) != NGX_OK) {
        return;
    }

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = 16384;

    ngx_xmpp_wbuf_lit(&b, "<");
    ngx_xmpp_wbuf_str(&b, kind);
    ngx_xmpp_wbuf_lit(&b, " xmlns='" NGX_XMPP_NS_CLIENT "' type='error'"
                      " from='");
    ngx_xmpp_wbuf_escs(&b, to);
    ngx_xmpp_wbuf_lit(&b, "' to='");
    ngx_xmpp_wbuf_escs(&b, from);
    ngx_xmpp_wbuf_lit(&b, "'");

    if (ngx_xmpp_sm_attr(pool, data, len, "id", &id) == NGX_OK)
    {
        ngx_xmpp_wbuf_lit(&b, " id='");
        ngx_xmpp_wbuf_escs(&b, &id);
        ngx_xmpp_wbuf_lit(&b, "'");
    }

    ngx_xmpp_wbuf_lit(&b, "><error type='cancel'><service-unavailable xmlns='"
                      NGX_XMPP_NS_STANZAS "'/></error></");
    ngx_xmpp_wbuf_str(&b, kind);
    ngx_xmpp_wbuf_lit(&b, ">");

    if (!b.failed) {
        if (jid.resource.len) {
            (void) ngx_xmpp_router_to_full_jid(xcf, &jid, b.start,
                                               b.last - b.start);
        } else {
            (void) ngx_xmpp_router_to_bare(xcf, &jid.bare,
                                           NGX_XMPP_STANZA_MESSAGE, NULL,
                                           b.start, b.last - b.start);
        }
    }

    ngx_xmpp_wbuf_free(&b);
}


/* a <body/> child in our own serialization of a message */
static ngx_uint_t
ngx_xmpp_sm_has_body(u_char *data, size_t len)
{
    u_char  *p, *last;

    last = data + len;
    p = data;

    while ((p = ngx_strlcasestrn(p, last, (u_char *) "<body", 4)) != NULL) {
        if (p + 5 < last && (p[5] == '>' || p[5] == ' ')) {
            return 1;
        }

        p += 5;
    }

    return 0;
}


/*
 * RFC 6121 8.5.2.2.1 and XEP-0160: a message with a body that no
 * resource can take is kept for the account, with the <delay/> of when
 * it was stored.  NGX_OK: handed to offline storage, which logs what it
 * cannot keep (there is no sender's session to answer any more).
 */
static ngx_int_t
ngx_xmpp_sm_offline(ngx_xmpp_sm_ghost_t *g, u_char *data, size_t len,
    ngx_str_t *type, ngx_xmpp_jid_t *to)
{
    ngx_xmpp_delivery_t  d;

    ngx_memzero(&d, sizeof(ngx_xmpp_delivery_t));
    d.kind = NGX_XMPP_STANZA_MESSAGE;
    d.type = *type;
    d.to = *to;
    d.data = data;
    d.len = len;

    if (ngx_xmpp_sm_attr(g->ghost.pool, data, len, "id", &d.id)
        == NGX_ERROR)
    {
        return NGX_ERROR;
    }

    return ngx_xmpp_offline_store(g->ghost.conf, NULL, &d);
}


/*
 * XEP-0198 section 5: stanzas the client never acknowledged are
 * undeliverable to it.  A message goes to the account's other
 * resources (RFC 6121 8.5.2.1), else to offline storage if it has a
 * body, else back to its sender; a request gets an error; presence,
 * results and errors are dropped (RFC 6121 8.5.2.2.2).
 */
static void
ngx_xmpp_sm_reroute(ngx_xmpp_sm_ghost_t *g)
{
    u_char          *data;
    size_t           len;
    ngx_str_t        type, to, from;
    ngx_uint_t       n, bounced, stored;
    ngx_xmpp_jid_t   tj, fj;

    n = 0;
    bounced = 0;
    stored = 0;

    while (ngx_xmpp_sm_queue_peek(&g->q, &data, &len) == NGX_OK) {
        type.len = 0;

        if (ngx_xmpp_sm_attr(g->ghost.pool, data, len, "type", &type)
            == NGX_ERROR
            || ngx_xmpp_sm_attr(g->ghost.pool, data, len, "to", &to)
               != NGX_OK
            || ngx_xmpp_sm_attr(g->ghost.pool, data, len, "from", &from)
               != NGX_OK
            || ngx_xmpp_jid_parse(g->ghost.pool, &to, &tj) != NGX_OK
            || ngx_xmpp_jid_parse(g->ghost.pool, &from, &fj) != NGX_OK)
        {
            goto next;
        }

        if (data[1] == 'i') {
            if (ngx_xmpp_sm_str_is(&type, "get")
                || ngx_xmpp_sm_str_is(&type, "set"))
            {
                ngx_xmpp_sm_bounce(g->ghost.conf, g->ghost.pool, data, len,
                                   &to, &from);
                bounced++;
            }

            goto next;
        }

        if (data[1] != 'm' || ngx_xmpp_sm_str_is(&type, "error")
            || ngx_xmpp_sm_str_is(&type, "groupchat")
            || (fj.resource.len == 0 && fj.bare.len == tj.bare.len
                && ngx_strncmp(fj.bare.data, tj.bare.data, tj.bare.len) == 0))
        {
            /* errors, rooms, and the account's own (MAM results) */
            goto next;
        }

        if (ngx_xmpp_router_to_bare(g->ghost.conf, &tj.bare,
                                    NGX_XMPP_STANZA_MESSAGE,
                                    type.len ? &type : NULL, data, len)
            > 0)
        {
            n++;
            goto next;
        }

        if (ngx_xmpp_sm_str_is(&type, "headline")) {
            goto next;
        }

        if (!ngx_xmpp_sm_has_body(data, len)) {
            /* chat states, receipts: nothing to keep (XEP-0160 3) */
            goto next;
        }

        if (ngx_xmpp_sm_offline(g, data, len, &type, &tj) == NGX_OK) {
            stored++;
            goto next;
        }

        ngx_xmpp_sm_bounce(g->ghost.conf, g->ghost.pool, data, len,
                           &to, &from);
        bounced++;

    next:

        ngx_xmpp_sm_queue_drop(&g->q);
    }

    if (n || bounced || stored) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "xmpp: unacked stanzas of \"%V\": %ui to other "
                      "resources, %ui to offline storage, %ui bounced",
                      &g->ghost.jid.full, n, stored, bounced);
    }
}


/* the resumption timeout, the end of forwarding, or an ended session */
static void
ngx_xmpp_sm_ghost_handler(ngx_event_t *ev)
{
    ngx_xmpp_sm_ghost_t  *g;

    g = ev->data;

    if (g->parked && !g->moved) {
        ngx_log_error(NGX_LOG_INFO, ev->log, 0,
                      "xmpp: session of \"%V\" was not resumed in time",
                      &g->ghost.jid.full);

        ngx_rbtree_delete(&ngx_xmpp_sm_ghosts, &g->node);
        g->parked = 0;

        /* the entry first: what presence_gone routes must not come back */
        ngx_xmpp_registry_remove(&g->ghost);
        ngx_xmpp_presence_gone(&g->ghost);
    }

    if (!g->moved) {
        ngx_xmpp_sm_reroute(g);
    }

    ngx_xmpp_sm_ghost_free(g);
}


/*
 * A stanza for a session id that is not a live session here: a parked
 * session queues it, a moved one hands it to its successor.
 */
ngx_int_t
ngx_xmpp_sm_deliver(uint64_t sid, u_char *data, size_t len)
{
    ngx_xmpp_session_t   *s;
    ngx_xmpp_sm_ghost_t  *g;

    g = ngx_xmpp_sm_ghost_find(sid);
    if (g == NULL) {
        return NGX_DECLINED;
    }

    if (g->moved) {
        if (g->moved_pid != ngx_pid) {
            return ngx_xmpp_ipc_send(g->moved_pid, NGX_XMPP_IPC_DELIVER,
                                     g->moved_sid, data, len);
        }

        s = ngx_xmpp_session_find(g->moved_sid);
        if (s == NULL) {
            return NGX_DECLINED;
        }

        return ngx_xmpp_session_send(s, data, len) == NGX_OK ? NGX_OK
                                                             : NGX_DECLINED;
    }

    if (!ngx_xmpp_sm_stanza(data, len)) {
        return NGX_OK;
    }

    if (g->q.n >= g->ghost.conf->sm_max_unacked
        || ngx_xmpp_sm_queue_add(&g->q, data, len) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    g->h_out++;

    return NGX_OK;
}


/* a session waiting for the old worker's state holds what comes */
ngx_int_t
ngx_xmpp_sm_hold(ngx_xmpp_session_t *s, u_char *data, size_t len)
{
    if (s->sm == NULL || !s->sm->resuming) {
        return NGX_DECLINED;
    }

    return ngx_xmpp_sm_queue_add(&s->sm->held_new, data, len);
}


/* RFC 6120 7.7.2.2: a new session took the parked one's resource */
void
ngx_xmpp_sm_kick(uint64_t sid)
{
    ngx_xmpp_sm_ghost_t  *g;

    g = ngx_xmpp_sm_ghost_find(sid);

    if (g == NULL || g->moved) {
        return;
    }

    ngx_rbtree_delete(&ngx_xmpp_sm_ghosts, &g->node);
    g->parked = 0;

    if (g->ev.timer_set) {
        ngx_del_timer(&g->ev);
    }

    /* its presence now belongs to the new session: only the queue */
    ngx_post_event(&g->ev, &ngx_posted_events);
}


/*
 * The ghost of session sid if secret is its token's; a session that is
 * still attached (its client reconnected before we saw the old
 * connection fail) is cut off and parked first (XEP-0198 section 5).
 */
static ngx_xmpp_sm_ghost_t *
ngx_xmpp_sm_take(uint64_t sid, u_char *secret, ngx_str_t *bare)
{
    ngx_xmpp_session_t   *s;
    ngx_xmpp_sm_ghost_t  *g;

    g = ngx_xmpp_sm_ghost_find(sid);

    if (g == NULL) {
        s = ngx_xmpp_session_find(sid);

        if (s == NULL || !s->bound || s->sm == NULL || !s->sm->resume
            || ngx_memcmp(s->sm->secret, secret, NGX_XMPP_SM_SECRET_HEX)
               != 0)
        {
            return NULL;
        }

        ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                      "xmpp: stream resumed elsewhere, closing this one");

        s->end_reason = "connection-lost";
        ngx_xmpp_session_finalize(s);

        g = ngx_xmpp_sm_ghost_find(sid);
    }

    if (g == NULL || g->moved
        || ngx_memcmp(g->secret, secret, NGX_XMPP_SM_SECRET_HEX) != 0
        || g->ghost.jid.bare.len != bare->len
        || ngx_strncmp(g->ghost.jid.bare.data, bare->data, bare->len) != 0)
    {
        return NULL;
    }

    return g;
}


/* the ghost now only forwards to its successor, for a while */
static void
ngx_xmpp_sm_moved(ngx_xmpp_sm_ghost_t *g, ngx_pid_t pid, uint64_t sid)
{
    g->moved = 1;
    g->moved_pid = pid;
    g->moved_sid = sid;

    ngx_xmpp_sm_queue_free(&g->q);

    if (g->ev.timer_set) {
        ngx_del_timer(&g->ev);
    }

    ngx_add_timer(&g->ev, NGX_XMPP_SM_FORWARD);
}


/*
 * <resumed/> (XEP-0198 section 5): the session takes the ghost's JID,
 * presence and counters; the stanzas the client did not get (those
 * after its h) are sent again, then what was routed here meanwhile.
 */
static void
ngx_xmpp_sm_finish(ngx_xmpp_session_t *s, ngx_xmpp_sm_taken_t *t,
    ngx_str_t *resource, ngx_xmpp_sm_queue_t *old)
{
    u_char            *data;
    size_t             len;
    uint32_t           missing, skip;
    uint64_t           osid;
    ngx_pid_t          opid;
    ngx_xmpp_sm_t     *sm;
    ngx_xmpp_jid_t     jid;
    ngx_xmpp_wbuf_t   *b;

    sm = s->sm;

    if (sm->wait.timer_set) {
        ngx_del_timer(&sm->wait);
    }

    if (ngx_xmpp_jid_make(s->pool, &s->user, &s->conf->domain, resource,
                          &jid)
        != NGX_OK)
    {
        ngx_xmpp_session_finalize(s);
        return;
    }

    s->jid = jid;
    s->available = t->available ? 1 : 0;
    s->priority = t->priority;

    if (ngx_xmpp_audit_session_bound(s) != NGX_OK) {
        ngx_xmpp_session_finalize(s);
        return;
    }

    if (!t->moved) {
        /* the entry was gone: a new one, as bind would make */
        if (ngx_xmpp_registry_add(s, &opid, &osid) != NGX_OK) {
            ngx_xmpp_session_error(s, "resource-constraint", NULL);
            return;
        }

        if (opid) {
            ngx_xmpp_router_kick(opid, osid);
        }
    }

    s->bound = 1;
    s->state = NGX_XMPP_ST_SESSION;
    ngx_xmpp_metrics_session(s, 1);
    /* XEP-0191: the resumed session reads the blocklist again */
    ngx_xmpp_blocking_start(s);

    if (s->timer.timer_set) {
        ngx_del_timer(&s->timer);
    }

    ngx_xmpp_registry_update(s);

    missing = t->h_out - sm->client_h;
    skip = (missing <= old->n) ? old->n - missing : 0;

    sm->enabled = 1;
    sm->resume = 1;
    sm->resuming = 0;
    sm->h_in = t->h_in;
    sm->h_out = t->h_out - (old->n - skip);
    sm->acked = sm->h_out;

    ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                  "xmpp: resumed \"%V\", %ui stanzas sent again",
                  &s->jid.full, (ngx_uint_t) (old->n - skip));

    b = ngx_xmpp_wbuf_scratch(4096 + 6 * resource->len);
    ngx_xmpp_wbuf_lit(b, "<resumed xmlns='" NGX_XMPP_NS_SM "' previd='");
    ngx_xmpp_wbuf_add(b, sm->secret, NGX_XMPP_SM_SECRET_HEX);
    ngx_xmpp_wbuf_escs(b, resource);
    b->last = ngx_sprintf(b->last, "' h='%uD'/>", t->h_in);
    ngx_xmpp_sm_raw(s, (char *) b->start, b->last - b->start);

    while (ngx_xmpp_sm_queue_peek(old, &data, &len) == NGX_OK) {
        if (skip) {
            skip--;

        } else {
            (void) ngx_xmpp_session_send(s, data, len);
        }

        ngx_xmpp_sm_queue_drop(old);
    }

    while (ngx_xmpp_sm_queue_peek(&sm->held_new, &data, &len) == NGX_OK) {
        (void) ngx_xmpp_session_send(s, data, len);
        ngx_xmpp_sm_queue_drop(&sm->held_new);
    }

    ngx_xmpp_sm_queue_free(&sm->held_old);
    ngx_xmpp_sm_queue_free(&sm->held_new);
}


/* a ghost of this worker taken over by session s of this worker */
static void
ngx_xmpp_sm_resume_local(ngx_xmpp_session_t *s, ngx_xmpp_sm_ghost_t *g)
{
    ngx_uint_t           i;
    ngx_xmpp_sm_taken_t  t;

    t.h_in = g->h_in;
    t.h_out = g->h_out;
    t.priority = (int32_t) g->ghost.priority;
    t.available = g->ghost.available;
    t.moved = (ngx_xmpp_registry_move(s->conf, &g->ghost.jid.bare, ngx_pid,
                                      g->ghost.id, ngx_pid, s->id)
               == NGX_OK);

    s->directed = ngx_palloc(s->pool,
                             NGX_XMPP_DIRECTED_MAX * sizeof(ngx_str_t));
    if (s->directed) {
        for (i = 0; i < g->ghost.ndirected; i++) {
            s->directed[i] = g->ghost.directed[i];
        }

        s->ndirected = g->ghost.ndirected;
        g->ghost.ndirected = 0;
    }

    ngx_xmpp_sm_finish(s, &t, &g->ghost.jid.resource, &g->q);
    ngx_xmpp_sm_moved(g, ngx_pid, s->id);
}


/*
 * <resume previd='...' h='...'/> instead of a bind: find the session by
 * the authenticated user and the token's resource, in this worker or
 * through its owner (SM_TAKE).
 */
static void
ngx_xmpp_sm_resume(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n)
{
    u_char               *p;
    uint32_t              h;
    ngx_str_t            *previd, res;
    ngx_uint_t            i, nr;
    ngx_xmpp_sm_t        *sm;
    ngx_xmpp_jid_t        jid;
    ngx_xmpp_route_t     *routes;
    ngx_xmpp_sm_take_t   *take;
    ngx_xmpp_sm_ghost_t  *g;

    previd = ngx_xmpp_node_attr(n, "previd");

    if (previd == NULL || previd->len <= NGX_XMPP_SM_SECRET_HEX
        || ngx_xmpp_sm_h(n, &h) != NGX_OK
        || (s->sm && (s->sm->resuming || s->sm->enabled)))
    {
        ngx_xmpp_sm_failed(s, "bad-request");
        return;
    }

    res.data = previd->data + NGX_XMPP_SM_SECRET_HEX;
    res.len = previd->len - NGX_XMPP_SM_SECRET_HEX;

    if (!ngx_xmpp_jid_resource_valid(res.data, res.len)
        || ngx_xmpp_jid_make(s->pool, &s->user, &s->conf->domain, &res,
                             &jid)
           != NGX_OK)
    {
        ngx_xmpp_sm_failed(s, "item-not-found");
        return;
    }

    routes = ngx_xmpp_router_routes();
    nr = ngx_xmpp_registry_lookup(s->conf, &jid.bare, routes,
                                  NGX_XMPP_ROUTE_MAX);

    for (i = 0; i < nr; i++) {
        if (routes[i].resource_len == res.len
            && ngx_memcmp(routes[i].resource, res.data, res.len) == 0)
        {
            break;
        }
    }

    sm = s->sm ? s->sm : ngx_xmpp_sm_create(s);

    if (i == nr || sm == NULL) {
        ngx_xmpp_sm_failed(s, "item-not-found");
        return;
    }

    ngx_memcpy(sm->secret, previd->data, NGX_XMPP_SM_SECRET_HEX);
    sm->client_h = h;
    sm->resuming = 1;

    if (routes[i].pid == ngx_pid) {
        g = ngx_xmpp_sm_take(routes[i].sid, sm->secret, &jid.bare);

        if (g == NULL) {
            sm->resuming = 0;
            ngx_xmpp_sm_failed(s, "item-not-found");
            return;
        }

        ngx_xmpp_sm_resume_local(s, g);
        return;
    }

    p = ngx_palloc(s->pool, sizeof(ngx_xmpp_sm_take_t) + jid.bare.len);
    if (p == NULL) {
        ngx_xmpp_session_finalize(s);
        return;
    }

    take = (ngx_xmpp_sm_take_t *) p;
    take->new_sid = s->id;
    take->h = h;
    ngx_memcpy(take->secret, sm->secret, NGX_XMPP_SM_SECRET_HEX);
    ngx_memcpy(p + sizeof(ngx_xmpp_sm_take_t), jid.bare.data, jid.bare.len);

    if (ngx_xmpp_ipc_send(routes[i].pid, NGX_XMPP_IPC_SM_TAKE,
                          routes[i].sid, p,
                          sizeof(ngx_xmpp_sm_take_t) + jid.bare.len)
        != NGX_OK)
    {
        sm->resuming = 0;
        ngx_xmpp_sm_failed(s, "item-not-found");
        return;
    }

    /* the owner answers at once; a timer covers a worker that died */
    ngx_add_timer(&sm->wait, NGX_XMPP_SM_WAIT);
}


static void
ngx_xmpp_sm_wait_handler(ngx_event_t *ev)
{
    ngx_xmpp_sm_t  *sm;

    sm = ev->data;

    if (!sm->resuming) {
        return;
    }

    ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                  "xmpp: the session's worker did not hand it over");

    sm->resuming = 0;
    ngx_xmpp_sm_queue_free(&sm->held_old);
    ngx_xmpp_sm_queue_free(&sm->held_new);
    ngx_xmpp_sm_failed(sm->session, "item-not-found");
}


/* the owner's side of SM_TAKE: hand everything to (from, new_sid) */
static void
ngx_xmpp_sm_give(ngx_pid_t from, uint64_t sid, u_char *data, size_t len)
{
    u_char               *p, *payload;
    size_t                size;
    uint16_t              l;
    ngx_str_t             bare;
    ngx_uint_t            i;
    ngx_xmpp_sm_take_t    take;
    ngx_xmpp_sm_taken_t  *t;
    ngx_xmpp_sm_ghost_t  *g;

    if (len <= sizeof(ngx_xmpp_sm_take_t)) {
        return;
    }

    ngx_memcpy(&take, data, sizeof(ngx_xmpp_sm_take_t));
    bare.data = data + sizeof(ngx_xmpp_sm_take_t);
    bare.len = len - sizeof(ngx_xmpp_sm_take_t);

    g = ngx_xmpp_sm_take(sid, take.secret, &bare);

    if (g == NULL) {
        (void) ngx_xmpp_ipc_send(from, NGX_XMPP_IPC_SM_FAILED, take.new_sid,
                                 NULL, 0);
        return;
    }

    size = sizeof(ngx_xmpp_sm_taken_t) + g->ghost.jid.resource.len;

    for (i = 0; i < g->ghost.ndirected; i++) {
        size += sizeof(uint16_t) + g->ghost.directed[i].len;
    }

    payload = ngx_alloc(size, ngx_cycle->log);
    if (payload == NULL) {
        (void) ngx_xmpp_ipc_send(from, NGX_XMPP_IPC_SM_FAILED, take.new_sid,
                                 NULL, 0);
        return;
    }

    t = (ngx_xmpp_sm_taken_t *) payload;
    t->h_in = g->h_in;
    t->h_out = g->h_out;
    t->priority = (int32_t) g->ghost.priority;
    t->available = g->ghost.available;
    t->ndirected = (uint16_t) g->ghost.ndirected;
    t->res_len = (uint16_t) g->ghost.jid.resource.len;

    /* from now on the registry names the new session */
    t->moved = (ngx_xmpp_registry_move(g->ghost.conf, &g->ghost.jid.bare,
                                       ngx_pid, sid, from, take.new_sid)
                == NGX_OK);

    p = ngx_cpymem(payload + sizeof(ngx_xmpp_sm_taken_t),
                   g->ghost.jid.resource.data, g->ghost.jid.resource.len);

    for (i = 0; i < g->ghost.ndirected; i++) {
        l = (uint16_t) g->ghost.directed[i].len;
        ngx_memcpy(p, &l, sizeof(uint16_t));
        p = ngx_cpymem(p + sizeof(uint16_t), g->ghost.directed[i].data, l);
        ngx_free(g->ghost.directed[i].data);
    }

    g->ghost.ndirected = 0;

    /* in order: the unacked stanzas, then the state */
    while (ngx_xmpp_sm_queue_peek(&g->q, &data, &len) == NGX_OK) {
        (void) ngx_xmpp_ipc_send(from, NGX_XMPP_IPC_SM_STANZA, take.new_sid,
                                 data, len);
        ngx_xmpp_sm_queue_drop(&g->q);
    }

    (void) ngx_xmpp_ipc_send(from, NGX_XMPP_IPC_SM_TAKEN, take.new_sid,
                             payload, size);
    ngx_free(payload);

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "xmpp: session of \"%V\" handed to worker %P",
                  &g->ghost.jid.full, from);

    ngx_xmpp_sm_moved(g, from, take.new_sid);
}


/* the new worker's side of SM_TAKEN */
static void
ngx_xmpp_sm_taken(ngx_xmpp_session_t *s, u_char *data, size_t len)
{
    u_char               *p, *end;
    uint16_t              l;
    ngx_str_t             res;
    ngx_uint_t            i;
    ngx_xmpp_sm_taken_t   t;

    if (len < sizeof(ngx_xmpp_sm_taken_t)) {
        return;
    }

    ngx_memcpy(&t, data, sizeof(ngx_xmpp_sm_taken_t));
    p = data + sizeof(ngx_xmpp_sm_taken_t);
    end = data + len;

    if (t.res_len > end - p || t.ndirected > NGX_XMPP_DIRECTED_MAX) {
        return;
    }

    res.data = p;
    res.len = t.res_len;
    p += t.res_len;

    s->directed = ngx_palloc(s->pool,
                             NGX_XMPP_DIRECTED_MAX * sizeof(ngx_str_t));

    for (i = 0; s->directed && i < t.ndirected; i++) {
        if (end - p < (ssize_t) sizeof(uint16_t)) {
            break;
        }

        ngx_memcpy(&l, p, sizeof(uint16_t));
        p += sizeof(uint16_t);

        if (l > end - p) {
            break;
        }

        s->directed[i].data = ngx_alloc(l ? l : 1, s->connection->log);
        if (s->directed[i].data == NULL) {
            break;
        }

        ngx_memcpy(s->directed[i].data, p, l);
        s->directed[i].len = l;
        s->ndirected = i + 1;
        p += l;
    }

    ngx_xmpp_sm_finish(s, &t, &res, &s->sm->held_old);
}


/* NGX_XMPP_IPC_SM_*: resumption across workers */
void
ngx_xmpp_sm_ipc(ngx_uint_t cmd, ngx_pid_t from, uint64_t sid, u_char *data,
    size_t len)
{
    ngx_xmpp_session_t  *s;

    if (cmd == NGX_XMPP_IPC_SM_TAKE) {
        ngx_xmpp_sm_give(from, sid, data, len);
        return;
    }

    s = ngx_xmpp_session_find(sid);

    if (s == NULL || s->sm == NULL || !s->sm->resuming) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "xmpp: stream management message %ui for "
                      "session #%uL, which is not resuming", cmd, sid);
        return;
    }

    switch (cmd) {

    case NGX_XMPP_IPC_SM_STANZA:
        if (ngx_xmpp_sm_queue_add(&s->sm->held_old, data, len) != NGX_OK) {
            ngx_xmpp_session_error(s, "internal-server-error", NULL);
        }
        break;

    case NGX_XMPP_IPC_SM_TAKEN:
        ngx_xmpp_sm_taken(s, data, len);
        break;

    default: /* NGX_XMPP_IPC_SM_FAILED */
        if (s->sm->wait.timer_set) {
            ngx_del_timer(&s->sm->wait);
        }

        s->sm->resuming = 0;
        ngx_xmpp_sm_failed(s, "item-not-found");
        break;
    }
}


/*
 * Elements of urn:xmpp:sm:3.  <resume/> only before a bind, <enable/>
 * only after one (XEP-0198 sections 3 and 5); <r/> and <a/> once
 * enabled.
 */
void
ngx_xmpp_sm_element(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n)
{
    u_char  buf[64], *p;

    if (ngx_xmpp_sm_is(n, "resume")) {
        if (s->state != NGX_XMPP_ST_WAIT_BIND || !ngx_xmpp_sm_offered(s)) {
            ngx_xmpp_sm_failed(s, "unexpected-request");
            return;
        }

        ngx_xmpp_sm_resume(s, n);
        return;
    }

    if (s->state != NGX_XMPP_ST_SESSION || !ngx_xmpp_sm_offered(s)) {
        if (ngx_xmpp_sm_is(n, "enable")) {
            ngx_xmpp_sm_failed(s, "unexpected-request");
            return;
        }

        ngx_xmpp_session_error(s, "unsupported-stanza-type", NULL);
        return;
    }

    if (ngx_xmpp_sm_is(n, "enable")) {
        ngx_xmpp_sm_enable(s, n);
        return;
    }

    if (s->sm == NULL || !s->sm->enabled) {
        ngx_xmpp_session_error(s, "unsupported-stanza-type",
                               "stream management is not enabled");
        return;
    }

    if (ngx_xmpp_sm_is(n, "r")) {
        p = ngx_sprintf(buf, "<a xmlns='" NGX_XMPP_NS_SM "' h='%uD'/>",
                        s->sm->h_in);
        ngx_xmpp_sm_raw(s, (char *) buf, p - buf);
        return;
    }

    if (ngx_xmpp_sm_is(n, "a")) {
        ngx_xmpp_sm_ack(s, n);
        return;
    }

    ngx_xmpp_session_error(s, "unsupported-stanza-type", NULL);
}


/* a worker that exits cannot keep sessions for resumption */
void
ngx_xmpp_sm_exit_worker(void)
{
    ngx_rbtree_node_t    *node;
    ngx_xmpp_sm_ghost_t  *g;

    if (ngx_xmpp_sm_ghosts.root == NULL) {
        return;
    }

    while (ngx_xmpp_sm_ghosts.root != ngx_xmpp_sm_ghosts.sentinel) {
        node = ngx_rbtree_min(ngx_xmpp_sm_ghosts.root,
                              ngx_xmpp_sm_ghosts.sentinel);
        g = (ngx_xmpp_sm_ghost_t *) node;
        ngx_xmpp_sm_ghost_handler(&g->ev);
    }
}
