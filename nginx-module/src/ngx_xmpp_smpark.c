
/*
 * XEP-0198 parked sessions (ngx_xmpp_sm.c has the counting and the
 * resumption handshake; docs/routing.md "Stream management").
 *
 * Parking.  When a resumable session loses its connection without a
 * stream end, it is parked: a "ghost" session (its JID, presence and
 * directed presence, counters and queue) stays in this worker under
 * the same session id, its registry entry stays, and stanzas routed to
 * it are queued.  Nothing is broadcast: to everyone else the resource
 * is still online for conclave_sm_resume_timeout.
 *
 * Hand-over.  The ghost is taken by a session of this worker, or given
 * to one of another worker (SM_TAKE answered by SM_STANZA, SM_TAKEN);
 * a moved ghost then forwards what is still routed to it for a while.
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
#include "ngx_xmpp_sm.h"


static void ngx_xmpp_sm_ghost_handler(ngx_event_t *ev);
static ngx_uint_t ngx_xmpp_sm_named(ngx_xmpp_conf_t *xcf, ngx_str_t *bare,
    uint64_t sid);


static ngx_rbtree_t       ngx_xmpp_sm_ghosts;
static ngx_rbtree_node_t  ngx_xmpp_sm_sentinel;


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

    ngx_free(g->ghost.last_presence.data);
    ngx_xmpp_sm_queue_free(&g->q);
    ngx_destroy_pool(g->ghost.pool);
    ngx_free(g);
}


/*
 * What the client negotiated stays with the parked session, for the one
 * that resumes it (XEP-0198 section 5 resumes a session, not only its
 * stanzas): carbons (XEP-0280), client state (XEP-0352), roster pushes
 * (RFC 6121 2.1.6), the blocklist pushes (XEP-0191 3.2), the last
 * available presence (it answers probes meanwhile) and the caps
 * interests (XEP-0163 4.3.1: PEP notifications are queued meanwhile).
 * What CSI held is queued as if sent: the client gets it on resumption.
 */
static void
ngx_xmpp_sm_keep(ngx_xmpp_sm_ghost_t *g, ngx_xmpp_session_t *s)
{
    u_char      *data;
    size_t       len;
    ngx_str_t    ver, notify;
    ngx_uint_t   i;

    g->ghost.carbons = s->carbons;
    g->ghost.csi_inactive = s->csi_inactive;
    g->ghost.roster_interested = s->roster_interested;
    g->blocklist = ngx_xmpp_blocking_requested(s) ? 1 : 0;

    g->ghost.last_presence = s->last_presence;
    ngx_str_null(&s->last_presence);

    ngx_xmpp_caps_get(s, &ver, &notify);

    if (ver.len && ngx_xmpp_caps_put(&g->ghost, &ver, &notify) == NGX_ERROR)
    {
        ngx_log_error(NGX_LOG_ERR, s->connection->log, 0,
                      "xmpp: caps of \"%V\" not kept for resumption",
                      &s->jid.full);
    }

    i = 0;

    while (ngx_xmpp_csi_held(s, &i, &data, &len) == NGX_OK) {
        if (ngx_xmpp_sm_queue_add(&g->q, data, len) != NGX_OK) {
            break;
        }

        g->h_out++;
    }
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

    ngx_xmpp_sm_keep(g, s);

    if (ngx_xmpp_sm_ghosts.root == NULL) {
        ngx_rbtree_init(&ngx_xmpp_sm_ghosts, &ngx_xmpp_sm_sentinel,
                        ngx_rbtree_insert_value);
    }

    g->node.key = (ngx_rbtree_key_t) s->id;
    ngx_rbtree_insert(&ngx_xmpp_sm_ghosts, &g->node);
    g->parked = 1;

    /* found as parked: what waited for the list is queued when read */
    ngx_xmpp_blocking_park(s, &g->ghost);

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
ngx_xmpp_sm_offline(ngx_xmpp_conf_t *xcf, ngx_pool_t *pool, u_char *data,
    size_t len, ngx_str_t *type, ngx_xmpp_jid_t *to)
{
    ngx_xmpp_delivery_t  d;

    ngx_memzero(&d, sizeof(ngx_xmpp_delivery_t));
    d.kind = NGX_XMPP_STANZA_MESSAGE;
    d.type = *type;
    d.to = *to;
    d.data = data;
    d.len = len;

    if (ngx_xmpp_sm_attr(pool, data, len, "id", &d.id) == NGX_ERROR) {
        return NGX_ERROR;
    }

    return ngx_xmpp_offline_store(xcf, NULL, &d);
}


/*
 * XEP-0198 section 5 and RFC 6121 8.5.2: one stanza that its session
 * can no longer take.  A message goes to the account's other resources
 * (8.5.2.1), else to offline storage if it has a body, else back to its
 * sender; a request gets an error; presence, results and errors are
 * dropped (8.5.2.2.2).  sid, if not 0, is a session of this worker
 * that is gone: while the registry still names it, the other resources
 * are skipped, since a stale entry on each of two workers would
 * otherwise send the stanza back and forth for ever.
 */
ngx_uint_t
ngx_xmpp_sm_undeliverable(ngx_xmpp_conf_t *xcf, ngx_pool_t *pool,
    uint64_t sid, u_char *data, size_t len)
{
    ngx_str_t        type, to, from;
    ngx_xmpp_jid_t   tj, fj;

    type.len = 0;

    if (ngx_xmpp_sm_attr(pool, data, len, "type", &type) == NGX_ERROR
        || ngx_xmpp_sm_attr(pool, data, len, "to", &to) != NGX_OK
        || ngx_xmpp_sm_attr(pool, data, len, "from", &from) != NGX_OK
        || ngx_xmpp_jid_parse(pool, &to, &tj) != NGX_OK
        || ngx_xmpp_jid_parse(pool, &from, &fj) != NGX_OK)
    {
        return NGX_XMPP_UNDELIVERABLE_DROPPED;
    }

    if (data[1] == 'i') {
        if (ngx_xmpp_sm_str_is(&type, "get")
            || ngx_xmpp_sm_str_is(&type, "set"))
        {
            ngx_xmpp_sm_bounce(xcf, pool, data, len, &to, &from);
            return NGX_XMPP_UNDELIVERABLE_BOUNCED;
        }

        return NGX_XMPP_UNDELIVERABLE_DROPPED;
    }

    if (data[1] != 'm' || ngx_xmpp_sm_str_is(&type, "error")
        || ngx_xmpp_sm_str_is(&type, "groupchat")
        || (fj.resource.len == 0 && fj.bare.len == tj.bare.len
            && ngx_strncmp(fj.bare.data, tj.bare.data, tj.bare.len) == 0))
    {
        /* errors, rooms, and the account's own (MAM results) */
        return NGX_XMPP_UNDELIVERABLE_DROPPED;
    }

    if (!ngx_xmpp_sm_named(xcf, &tj.bare, sid)
        && ngx_xmpp_router_to_bare(xcf, &tj.bare, NGX_XMPP_STANZA_MESSAGE,
                                   type.len ? &type : NULL, data, len)
           > 0)
    {
        return NGX_XMPP_UNDELIVERABLE_RESOURCES;
    }

    if (ngx_xmpp_sm_str_is(&type, "headline")
        || !ngx_xmpp_sm_has_body(data, len))
    {
        /* headlines; chat states, receipts: nothing to keep (XEP-0160 3) */
        return NGX_XMPP_UNDELIVERABLE_DROPPED;
    }

    if (ngx_xmpp_sm_offline(xcf, pool, data, len, &type, &tj) == NGX_OK) {
        return NGX_XMPP_UNDELIVERABLE_STORED;
    }

    ngx_xmpp_sm_bounce(xcf, pool, data, len, &to, &from);

    return NGX_XMPP_UNDELIVERABLE_BOUNCED;
}


/* the registry names session sid of this worker under bare */
static ngx_uint_t
ngx_xmpp_sm_named(ngx_xmpp_conf_t *xcf, ngx_str_t *bare, uint64_t sid)
{
    ngx_uint_t         i, n;
    ngx_xmpp_route_t  *routes;

    if (sid == 0) {
        return 0;
    }

    routes = ngx_xmpp_router_routes();
    n = ngx_xmpp_registry_lookup(xcf, bare, routes, NGX_XMPP_ROUTE_MAX);

    for (i = 0; i < n; i++) {
        if (routes[i].pid == ngx_pid && routes[i].sid == sid) {
            return 1;
        }
    }

    return 0;
}


/* XEP-0198 section 5: what the client never acknowledged */
static void
ngx_xmpp_sm_reroute(ngx_xmpp_sm_ghost_t *g)
{
    u_char      *data;
    size_t       len;
    ngx_uint_t   n[NGX_XMPP_UNDELIVERABLE_N];

    ngx_memzero(n, sizeof(n));

    while (ngx_xmpp_sm_queue_peek(&g->q, &data, &len) == NGX_OK) {
        n[ngx_xmpp_sm_undeliverable(g->ghost.conf, g->ghost.pool, 0, data,
                                    len)]++;
        ngx_xmpp_sm_queue_drop(&g->q);
    }

    if (n[NGX_XMPP_UNDELIVERABLE_RESOURCES]
        || n[NGX_XMPP_UNDELIVERABLE_STORED]
        || n[NGX_XMPP_UNDELIVERABLE_BOUNCED])
    {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "xmpp: unacked stanzas of \"%V\": %ui to other "
                      "resources, %ui to offline storage, %ui bounced",
                      &g->ghost.jid.full,
                      n[NGX_XMPP_UNDELIVERABLE_RESOURCES],
                      n[NGX_XMPP_UNDELIVERABLE_STORED],
                      n[NGX_XMPP_UNDELIVERABLE_BOUNCED]);
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
    ngx_xmpp_route_t      rt;
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

        /*
         * As any delivery to that session: the successor may itself be
         * parked or moved on since (a chain of resumptions), or being
         * resumed elsewhere.
         */
        rt.pid = ngx_pid;
        rt.sid = g->moved_sid;

        return ngx_xmpp_router_to_session(g->ghost.conf, &rt, data, len);
    }

    if (!ngx_xmpp_sm_stanza(data, len)) {
        return NGX_OK;
    }

    if (ngx_xmpp_blocking_parked_inbound(&g->ghost, data, len) == NGX_OK) {
        /* XEP-0191 3.5: from a blocked JID, never queued for the client */
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
ngx_xmpp_sm_ghost_t *
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


/*
 * The ghost now only forwards to its successor, for a while (conclave_
 * sm_forward_timeout).  Rooms name their occupants by worker and
 * session id (ngx_xmpp_muc_occ_t): those of this worker learn the new
 * ones now, those of the other workers by SM_MOVED (the new session's
 * worker did already, when it asked), so that room messages do not
 * depend on the forwarding.  SM_MOVED carries the full JID: the worker
 * it reaches follows the registry, not this message, which may come
 * after a newer move (ngx_xmpp_sm_moved_ipc()).
 */
void
ngx_xmpp_sm_moved(ngx_xmpp_sm_ghost_t *g, ngx_pid_t pid, uint64_t sid)
{
    u_char                buf[sizeof(ngx_xmpp_sm_moved_t)
                              + NGX_XMPP_SM_JID_MAX];
    size_t                len;
    ngx_int_t             i;
    ngx_pid_t             p;
    ngx_xmpp_sm_moved_t   m;

    g->moved = 1;
    g->moved_pid = pid;
    g->moved_sid = sid;

    ngx_xmpp_muc_moved(ngx_pid, g->ghost.id, &g->ghost.jid.full, pid, sid);

    m.pid = pid;
    m.sid = sid;
    ngx_memcpy(buf, &m, sizeof(m));
    len = sizeof(m);

    if (g->ghost.jid.full.len <= NGX_XMPP_SM_JID_MAX) {
        len += g->ghost.jid.full.len;
        ngx_memcpy(buf + sizeof(m), g->ghost.jid.full.data,
                   g->ghost.jid.full.len);
    }

    /*
     * Every slot, not ngx_last_process: a worker inherits that count
     * from the master at fork, so the first worker saw 0 and told
     * nobody; the later workers' pids come by NGX_CMD_OPEN_CHANNEL
     * into their slots, and a slot whose process exited has its
     * channel closed (NGX_CMD_CLOSE_CHANNEL).
     */
    for (i = 0; i < NGX_MAX_PROCESSES; i++) {
        p = ngx_processes[i].pid;

        if (p <= 0 || p == ngx_pid || p == pid
            || ngx_processes[i].channel[0] == -1)
        {
            continue;
        }

        (void) ngx_xmpp_ipc_send(p, NGX_XMPP_IPC_SM_MOVED, g->ghost.id,
                                 buf, len);
    }

    ngx_xmpp_sm_queue_free(&g->q);

    if (g->ev.timer_set) {
        ngx_del_timer(&g->ev);
    }

    ngx_add_timer(&g->ev, g->ghost.conf->sm_forward_timeout);
}


/*
 * The ghost's state for the session (pid, sid) that takes it over
 * (ngx_xmpp_sm_taken_t); the registry entry names that session from
 * now on.  The directed JIDs pass to it.  NULL: no memory, nothing
 * changed.
 */
u_char *
ngx_xmpp_sm_pack(ngx_xmpp_sm_ghost_t *g, ngx_pid_t pid, uint64_t sid,
    size_t *size)
{
    u_char               *p, *payload;
    size_t                n;
    uint16_t              l;
    ngx_str_t             ver, notify, presence;
    ngx_uint_t            i;
    ngx_xmpp_sm_taken_t   t;

    ngx_xmpp_caps_get(&g->ghost, &ver, &notify);
    presence = g->ghost.last_presence;

    n = sizeof(ngx_xmpp_sm_taken_t) + g->ghost.jid.resource.len
        + ver.len + notify.len;

    for (i = 0; i < g->ghost.ndirected; i++) {
        n += sizeof(uint16_t) + g->ghost.directed[i].len;
    }

    if (n + presence.len > NGX_XMPP_SM_TAKEN_MAX) {
        /* the session stays available; probes go unanswered till then */
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "xmpp: presence of \"%V\" too large to hand over",
                      &g->ghost.jid.full);
        ngx_str_null(&presence);
    }

    n += presence.len;

    payload = ngx_alloc(n, ngx_cycle->log);
    if (payload == NULL) {
        return NULL;
    }

    ngx_memzero(&t, sizeof(ngx_xmpp_sm_taken_t));
    t.h_in = g->h_in;
    t.h_out = g->h_out;
    t.priority = (int32_t) g->ghost.priority;
    t.available = g->ghost.available;
    t.ndirected = (uint16_t) g->ghost.ndirected;
    t.res_len = (uint16_t) g->ghost.jid.resource.len;
    t.presence_len = (uint32_t) presence.len;
    t.ver_len = (uint16_t) ver.len;
    t.notify_len = (uint16_t) notify.len;
    t.flags = (g->ghost.carbons ? NGX_XMPP_SM_CARBONS : 0)
              | (g->ghost.csi_inactive ? NGX_XMPP_SM_INACTIVE : 0)
              | (g->ghost.roster_interested ? NGX_XMPP_SM_ROSTER : 0)
              | (g->blocklist ? NGX_XMPP_SM_BLOCKLIST : 0);

    t.moved = (ngx_xmpp_registry_move(g->ghost.conf, &g->ghost.jid.bare,
                                      ngx_pid, g->ghost.id, pid, sid)
               == NGX_OK);

    p = ngx_cpymem(payload, &t, sizeof(ngx_xmpp_sm_taken_t));
    p = ngx_cpymem(p, g->ghost.jid.resource.data, g->ghost.jid.resource.len);

    for (i = 0; i < g->ghost.ndirected; i++) {
        l = (uint16_t) g->ghost.directed[i].len;
        ngx_memcpy(p, &l, sizeof(uint16_t));
        p = ngx_cpymem(p + sizeof(uint16_t), g->ghost.directed[i].data, l);
        ngx_free(g->ghost.directed[i].data);
    }

    g->ghost.ndirected = 0;

    /* an empty part may have no data pointer: memcpy() must not see it */
    if (presence.len) {
        p = ngx_cpymem(p, presence.data, presence.len);
    }

    if (ver.len) {
        p = ngx_cpymem(p, ver.data, ver.len);
        (void) ngx_cpymem(p, notify.data, notify.len);
    }

    *size = n;

    return payload;
}


/*
 * What waited for the ghost's blocklist (ngx_xmpp_blocking_hand_over())
 * goes to the session that takes the ghost over, as held commands: into
 * its held_wait queue (local) in this worker, as SM_WAITED before
 * SM_TAKEN to another one.  ngx_xmpp_sm_finish() replays them after
 * the unacked queue and before what was held in the window, and they
 * wait there for the new session's own list (XEP-0191 3.5).
 */
void
ngx_xmpp_sm_give_waited(ngx_xmpp_sm_ghost_t *g, ngx_pid_t pid,
    uint64_t sid, ngx_xmpp_sm_queue_t *local)
{
    u_char           *p, *last, tag;
    size_t            len;
    ngx_uint_t        n;
    ngx_xmpp_wbuf_t   pending, *b;

    ngx_xmpp_blocking_hand_over(&g->ghost, &pending);

    n = 0;
    p = pending.start;
    last = pending.last;

    while (p && last - p >= (ssize_t) sizeof(size_t)) {
        ngx_memcpy(&len, p, sizeof(size_t));
        p += sizeof(size_t);

        if (len == 0 || (size_t) (last - p) < len) {
            break;
        }

        /* a probe that waited is '?' and the JID to answer */
        tag = (p[0] == '?') ? NGX_XMPP_IPC_PROBE : NGX_XMPP_IPC_DELIVER;

        if (tag == NGX_XMPP_IPC_PROBE) {
            p++;
            len--;
        }

        if (local) {
            if (ngx_xmpp_sm_queue_put(local, &tag, 1, p, len) != NGX_OK) {
                ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                              "xmpp: a stanza for \"%V\" lost in the "
                              "takeover", &g->ghost.jid.full);
            }

        } else {
            b = ngx_xmpp_wbuf_scratch(len + 1);
            ngx_xmpp_wbuf_add(b, &tag, 1);
            ngx_xmpp_wbuf_add(b, p, len);

            if (b->failed
                || ngx_xmpp_ipc_send(pid, NGX_XMPP_IPC_SM_WAITED, sid,
                                     b->start, b->last - b->start)
                   != NGX_OK)
            {
                ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                              "xmpp: a stanza for \"%V\" lost in the "
                              "hand-over", &g->ghost.jid.full);
            }
        }

        p += len;
        n++;
    }

    ngx_xmpp_wbuf_free(&pending);

    if (n) {
        ngx_log_debug2(NGX_LOG_DEBUG_CORE, ngx_cycle->log, 0,
                       "xmpp: %ui stanzas of \"%V\" waited for its "
                       "blocklist, handed over", n, &g->ghost.jid.full);
    }
}


/* the owner's side of SM_TAKE: hand everything to (from, new_sid) */
void
ngx_xmpp_sm_give(ngx_pid_t from, uint64_t sid, u_char *data, size_t len)
{
    u_char               *payload;
    size_t                size;
    ngx_str_t             bare;
    ngx_xmpp_sm_take_t    take;
    ngx_xmpp_sm_ghost_t  *g;

    if (len <= sizeof(ngx_xmpp_sm_take_t)) {
        return;
    }

    ngx_memcpy(&take, data, sizeof(ngx_xmpp_sm_take_t));
    bare.data = data + sizeof(ngx_xmpp_sm_take_t);
    bare.len = len - sizeof(ngx_xmpp_sm_take_t);

    g = ngx_xmpp_sm_take(sid, take.secret, &bare);

    payload = g ? ngx_xmpp_sm_pack(g, from, take.new_sid, &size) : NULL;

    if (payload == NULL) {
        (void) ngx_xmpp_ipc_send(from, NGX_XMPP_IPC_SM_FAILED, take.new_sid,
                                 NULL, 0);
        return;
    }

    /* in order: the unacked stanzas, then the state */
    while (ngx_xmpp_sm_queue_peek(&g->q, &data, &len) == NGX_OK) {
        (void) ngx_xmpp_ipc_send(from, NGX_XMPP_IPC_SM_STANZA, take.new_sid,
                                 data, len);
        ngx_xmpp_sm_queue_drop(&g->q);
    }

    ngx_xmpp_sm_give_waited(g, from, take.new_sid, NULL);

    (void) ngx_xmpp_ipc_send(from, NGX_XMPP_IPC_SM_TAKEN, take.new_sid,
                             payload, size);
    ngx_free(payload);

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "xmpp: session of \"%V\" handed to worker %P",
                  &g->ghost.jid.full, from);

    ngx_xmpp_sm_moved(g, from, take.new_sid);
}


/*
 * SM_MOVED: session sid of worker from is now m.sid of worker m.pid,
 * the full JID follows.  Moves from different workers can arrive out
 * of order (A->B told by A, then B->A told by B, read in the other
 * order), so the occupants of that JID follow what the registry names
 * now, or the resumption this worker itself waits for
 * (ngx_xmpp_sm_route_now()); only without a route they take m.
 */
void
ngx_xmpp_sm_moved_ipc(ngx_pid_t from, uint64_t sid, u_char *data,
    size_t len)
{
    ngx_str_t             full;
    ngx_xmpp_route_t      rt;
    ngx_xmpp_sm_moved_t   m;

    if (len < sizeof(ngx_xmpp_sm_moved_t)) {
        return;
    }

    ngx_memcpy(&m, data, sizeof(ngx_xmpp_sm_moved_t));

    full.data = data + sizeof(ngx_xmpp_sm_moved_t);
    full.len = len - sizeof(ngx_xmpp_sm_moved_t);

    if (full.len && ngx_xmpp_sm_route_now(&full, &rt) == NGX_OK) {
        ngx_xmpp_muc_moved(from, sid, &full, rt.pid, rt.sid);
        return;
    }

    ngx_xmpp_muc_moved(from, sid, NULL, m.pid, m.sid);
}


/* a parked session of this worker, to answer probes (RFC 6121 4.3.2) */
ngx_xmpp_session_t *
ngx_xmpp_sm_parked(uint64_t sid)
{
    ngx_xmpp_sm_ghost_t  *g;

    g = ngx_xmpp_sm_ghost_find(sid);

    return (g && g->parked && !g->moved) ? &g->ghost : NULL;
}


/*
 * A PEP notification for a session id that is not a live session here
 * (XEP-0163 4.3.1): a parked session that wants the node queues it, a
 * moved one hands it to its successor, which has the same interests.
 */
void
ngx_xmpp_sm_pep(uint64_t sid, ngx_str_t *node, u_char *data, size_t len)
{
    ngx_xmpp_sm_ghost_t  *g;

    g = ngx_xmpp_sm_ghost_find(sid);

    if (g == NULL || !g->ghost.available
        || !ngx_xmpp_caps_notify(&g->ghost, node))
    {
        return;
    }

    (void) ngx_xmpp_sm_deliver(sid, data, len);
}


/*
 * An XEP-0191 change (ngx_xmpp_blocking_ipc()) for a session id that is
 * not a live session here: a parked session queues the push if its
 * client asked for the list (ngx_xmpp_blocking_parked()); a moved one
 * hands the change itself to its successor, which applies it.
 */
void
ngx_xmpp_sm_blocking(uint64_t sid, u_char *data, size_t len)
{
    ngx_xmpp_sm_ghost_t  *g;

    g = ngx_xmpp_sm_ghost_find(sid);

    if (g == NULL) {
        return;
    }

    if (g->moved) {
        if (g->moved_pid != ngx_pid) {
            (void) ngx_xmpp_ipc_send(g->moved_pid, NGX_XMPP_IPC_BLOCKING,
                                     g->moved_sid, data, len);

        } else if (g->moved_sid != sid) {
            ngx_xmpp_blocking_ipc(g->moved_sid, data, len);
        }

        return;
    }

    ngx_xmpp_blocking_parked(&g->ghost, g->blocklist, data, len);
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
