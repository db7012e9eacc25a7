
/*
 * Routing of stanzas between sessions (RFC 6121 section 8.5): find the
 * target resources in the registry, then deliver in this worker or hand
 * the serialized stanza to the owning worker.  A stanza is serialized
 * once, with "from" already stamped, whatever the number of targets.
 */


#include "ngx_xmpp.h"


/*
 * Registry lookups copy their answer here rather than into a pool: the
 * array is large (a resource may be 1023 bytes) and delivery never
 * nests one lookup inside another.
 */
static ngx_xmpp_route_t  ngx_xmpp_routes[NGX_XMPP_ROUTE_MAX];
static ngx_xmpp_wbuf_t   ngx_xmpp_router_fan;    /* fan-out copies */


static void ngx_xmpp_router_ended(ngx_xmpp_conf_t *xcf, uint64_t sid,
    u_char *data, size_t len);


ngx_xmpp_route_t *
ngx_xmpp_router_routes(void)
{
    return ngx_xmpp_routes;
}


ngx_int_t
ngx_xmpp_jid_make(ngx_pool_t *pool, ngx_str_t *local, ngx_str_t *domain,
    ngx_str_t *resource, ngx_xmpp_jid_t *jid)
{
    size_t   len;
    u_char  *p;

    len = local->len + 1 + domain->len + 1 + resource->len;

    p = ngx_pnalloc(pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    jid->full.data = p;

    jid->local.data = p;
    jid->local.len = local->len;

    if (local->len) {
        p = ngx_cpymem(p, local->data, local->len);
        *p++ = '@';
    }

    jid->domain.data = p;
    jid->domain.len = domain->len;
    p = ngx_cpymem(p, domain->data, domain->len);

    ngx_xmpp_ascii_lower(jid->full.data, p - jid->full.data);

    jid->bare.data = jid->full.data;
    jid->bare.len = p - jid->full.data;

    jid->resource.len = resource->len;

    if (resource->len) {
        *p++ = '/';
        jid->resource.data = p;
        p = ngx_cpymem(p, resource->data, resource->len);

    } else {
        jid->resource.data = p;
    }

    jid->full.len = p - jid->full.data;

    return NGX_OK;
}


ngx_int_t
ngx_xmpp_jid_parse(ngx_pool_t *pool, ngx_str_t *s, ngx_xmpp_jid_t *jid)
{
    ngx_str_t             local, domain, resource;
    ngx_xmpp_jid_parts_t  parts;

    if (ngx_xmpp_jid_split(s->data, s->len, &parts) != 0) {
        return NGX_ERROR;
    }

    local.data = (u_char *) (parts.local ? parts.local
                                         : (const unsigned char *) "");
    local.len = parts.local_len;
    domain.data = (u_char *) parts.domain;
    domain.len = parts.domain_len;
    resource.data = (u_char *) parts.resource;
    resource.len = parts.resource_len;

    return ngx_xmpp_jid_make(pool, &local, &domain, &resource, jid);
}


static ngx_inline ngx_int_t
ngx_xmpp_str_is(ngx_str_t *s, const char *lit)
{
    size_t  len;

    len = ngx_strlen(lit);

    return s->len == len && ngx_strncmp(s->data, lit, len) == 0;
}


/*
 * NGX_OK: delivered or handed to the owning worker; NGX_DECLINED: the
 * session is gone.
 */
ngx_int_t
ngx_xmpp_router_to_session(ngx_xmpp_conf_t *xcf, ngx_xmpp_route_t *rt,
    u_char *data, size_t len)
{
    ngx_int_t            rc;
    ngx_xmpp_session_t  *s;

    if (rt->pid == ngx_pid) {
        s = ngx_xmpp_session_find(rt->sid);

        if (s == NULL) {
            /* XEP-0198: parked for resumption, or resumed elsewhere */
            return ngx_xmpp_sm_deliver(rt->sid, data, len);
        }

        if (!s->bound) {
            return ngx_xmpp_sm_hold(s, data, len) == NGX_OK ? NGX_OK
                                                             : NGX_DECLINED;
        }

        return ngx_xmpp_router_inbound(s, data, len) == NGX_OK
               ? NGX_OK : NGX_DECLINED;
    }

    rc = ngx_xmpp_ipc_send(rt->pid, NGX_XMPP_IPC_DELIVER, rt->sid, data, len);

    return rc == NGX_OK ? NGX_OK : NGX_DECLINED;
}


ngx_int_t
ngx_xmpp_router_to_bare(ngx_xmpp_conf_t *xcf, ngx_str_t *bare,
    ngx_uint_t kind, ngx_str_t *type, u_char *data, size_t len)
{
    return ngx_xmpp_router_to_bare_except(xcf, bare, kind, type, data, len,
                                          NULL);
}


/*
 * Delivery to a bare JID (RFC 6121 8.5.2.1): a message of type normal
 * or chat goes to the available resources of the highest non-negative
 * priority, a headline to all non-negative ones, presence to all
 * available ones.  The resources that except covers are left out, as
 * if they were not there (XEP-0191 section 3.3 with its JID matching:
 * an item that is a full JID blocks only that resource), and counted
 * in except->excluded.  Returns the number of sessions reached.
 */
ngx_int_t
ngx_xmpp_router_to_bare_except(ngx_xmpp_conf_t *xcf, ngx_str_t *bare,
    ngx_uint_t kind, ngx_str_t *type, u_char *data, size_t len,
    ngx_xmpp_jidlist_t *except)
{
    u_char             skip[NGX_XMPP_ROUTE_MAX];
    ngx_int_t          best, delivered;
    ngx_uint_t         i, n, all;
    ngx_xmpp_route_t  *routes;

    routes = ngx_xmpp_router_routes();

    n = ngx_xmpp_registry_lookup(xcf, bare, routes, NGX_XMPP_ROUTE_MAX);

    all = (kind == NGX_XMPP_STANZA_PRESENCE)
          || (type && ngx_xmpp_str_is(type, "headline"));

    best = -1;

    for (i = 0; i < n; i++) {
        skip[i] = !routes[i].available
                  || (except && except->n
                      && ngx_xmpp_blocking_route_blocked(except, bare,
                             routes[i].resource, routes[i].resource_len));

        if (skip[i] && routes[i].available) {
            except->excluded++;
        }

        if (!skip[i] && routes[i].priority > best) {
            best = routes[i].priority;
        }
    }

    delivered = 0;

    for (i = 0; i < n; i++) {
        if (skip[i]) {
            continue;
        }

        if (kind == NGX_XMPP_STANZA_PRESENCE) {
            /* presence goes to every available resource */

        } else if (routes[i].priority < 0
                   || (!all && routes[i].priority != best))
        {
            continue;
        }

        if (ngx_xmpp_router_to_session(xcf, &routes[i], data, len)
            == NGX_OK)
        {
            delivered++;
        }
    }

    return delivered;
}


ngx_int_t
ngx_xmpp_router_to_full_jid(ngx_xmpp_conf_t *xcf, ngx_xmpp_jid_t *to,
    u_char *data, size_t len)
{
    ngx_uint_t         i, n;
    ngx_xmpp_route_t  *routes;

    routes = ngx_xmpp_router_routes();

    n = ngx_xmpp_registry_lookup(xcf, &to->bare, routes,
                                 NGX_XMPP_ROUTE_MAX);

    for (i = 0; i < n; i++) {
        if (routes[i].resource_len == to->resource.len
            && ngx_memcmp(routes[i].resource, to->resource.data,
                          to->resource.len) == 0)
        {
            return ngx_xmpp_router_to_session(xcf, &routes[i], data, len);
        }
    }

    return NGX_DECLINED;
}


void
ngx_xmpp_router_route(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st)
{
    ngx_xmpp_wbuf_t      *b;
    ngx_xmpp_delivery_t   d;

    if (!st->has_to) {
        /* RFC 6120 10.3: no "to" means the sender's own bare JID */
        st->to = s->jid;
        st->to.full = s->jid.bare;
        st->to.resource.len = 0;
    }

    if (st->to.domain.len != s->conf->domain.len
        || ngx_strncmp(st->to.domain.data, s->conf->domain.data,
                       s->conf->domain.len) != 0)
    {
        /* no server-to-server yet */
        ngx_xmpp_router_error(s, st, "cancel", "remote-server-not-found");
        return;
    }

    if (st->to.local.len == 0) {
        /* a message to the server itself: nothing handles it yet */
        if (st->kind == NGX_XMPP_STANZA_MESSAGE) {
            ngx_xmpp_router_error(s, st, "cancel", "service-unavailable");
        }

        return;
    }

    if (st->kind == NGX_XMPP_STANZA_MESSAGE && s->conf->audit_zone
        && ngx_xmpp_mam_stamp(s, st) == NGX_ERROR)
    {
        ngx_xmpp_router_error(s, st, "wait", "resource-constraint");
        return;
    }

    b = ngx_xmpp_wbuf_scratch(s->conf->max_stanza_size + 4096);
    ngx_xmpp_serialize(b, st->node, NULL);

    if (b->failed) {
        ngx_xmpp_router_error(s, st, "wait", "resource-constraint");
        return;
    }

    d.kind = st->kind;
    d.type = st->type;
    d.id = st->id;
    d.to = st->to;
    d.data = b->start;
    d.len = b->last - b->start;

    if (st->kind == NGX_XMPP_STANZA_MESSAGE) {
        ngx_xmpp_metrics_message();
    }

    if (st->kind == NGX_XMPP_STANZA_MESSAGE && s->conf->audit_zone) {
        /* recorded first; routed now or once the record is durable */
        ngx_xmpp_audit_message(s, st, &d);
        return;
    }

    ngx_xmpp_router_deliver(s->conf, s, &d);
}


/*
 * The second half of routing, for a stanza already accepted (and, for
 * a message, recorded).  s is the sender's session, or NULL when it
 * has ended since: errors then have nobody to go to.
 */
void
ngx_xmpp_router_deliver(ngx_xmpp_conf_t *xcf, ngx_xmpp_session_t *s,
    ngx_xmpp_delivery_t *d)
{
    ngx_xmpp_jidlist_t  except;

    if (d->to.resource.len) {
        if (ngx_xmpp_router_to_full_jid(xcf, &d->to, d->data, d->len)
            == NGX_OK)
        {
            ngx_xmpp_carbons_copy(xcf, d, NGX_XMPP_CARBONS_FULL);
            return;
        }

        /*
         * RFC 6121 8.5.3.2.1: no resource matches.  A chat message is
         * handled as if sent to the bare JID, an error is dropped; an
         * iq and any other message (normal, headline, groupchat) get
         * <service-unavailable/> rather than reach another resource.
         */
        if (d->kind == NGX_XMPP_STANZA_MESSAGE
            && ngx_xmpp_str_is(&d->type, "error"))
        {
            return;
        }

        if (d->kind == NGX_XMPP_STANZA_IQ
            || (d->kind == NGX_XMPP_STANZA_MESSAGE
                && !ngx_xmpp_str_is(&d->type, "chat")))
        {
            ngx_xmpp_router_bounce(s, d, "cancel", "service-unavailable");
            return;
        }
    }

    if (d->kind == NGX_XMPP_STANZA_IQ
        || ngx_xmpp_str_is(&d->type, "groupchat"))
    {
        /* an iq to another user's bare JID is answered for the account */
        ngx_xmpp_router_bounce(s, d, "cancel", "service-unavailable");
        return;
    }

    /* XEP-0191 3.3: not to the resources of the contact the sender blocked */
    ngx_xmpp_blocking_list(s, &except);

    if (ngx_xmpp_router_to_bare_except(xcf, &d->to.bare, d->kind, &d->type,
                                       d->data, d->len, &except)
        > 0)
    {
        /*
         * A blocked resource gets no <received/> copy either: the copies
         * follow the priorities, which left it out, so none are sent.
         */
        ngx_xmpp_carbons_copy(xcf, d, except.excluded
                                      ? 0 : NGX_XMPP_CARBONS_BARE);
        return;
    }

    if (except.excluded) {
        /* only blocked resources are there: refused, not stored */
        ngx_xmpp_carbons_copy(xcf, d, 0);
        ngx_xmpp_router_bounce_text(s, d, "cancel", "not-acceptable",
                                    "the contact's resources are blocked");
        return;
    }

    /* XEP-0280 section 6: the sender's devices see it all the same */
    ngx_xmpp_carbons_copy(xcf, d, 0);

    /*
     * RFC 6121 8.5.2.2.1: no available resource.  A normal or chat
     * message is stored (XEP-0160) and its sender hears of it only if
     * that fails; a headline or an error is dropped silently.
     */
    if (d->kind != NGX_XMPP_STANZA_MESSAGE
        || ngx_xmpp_str_is(&d->type, "headline")
        || ngx_xmpp_str_is(&d->type, "error"))
    {
        return;
    }

    if (ngx_xmpp_offline_store(xcf, s, d) != NGX_OK) {
        ngx_xmpp_router_bounce_text(s, d, "wait", "internal-server-error",
                                    "offline storage is unavailable");
    }
}


/* RFC 6120 8.3: bounce an error to the sender; never answer an error */
void
ngx_xmpp_router_error(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    const char *type, const char *condition)
{
    ngx_str_t            *v;
    ngx_xmpp_delivery_t   d;

    ngx_memzero(&d, sizeof(ngx_xmpp_delivery_t));

    d.kind = st->kind;
    d.type = st->type;
    d.id = st->id;

    v = ngx_xmpp_node_attr(st->node, "to");

    if (v && st->has_to) {
        d.to.full = *v;

    } else {
        d.to.full = s->conf->domain;
    }

    ngx_xmpp_router_bounce(s, &d, type, condition);
}


void
ngx_xmpp_router_bounce(ngx_xmpp_session_t *s, ngx_xmpp_delivery_t *d,
    const char *type, const char *condition)
{
    ngx_xmpp_router_bounce_text(s, d, type, condition, NULL);
}


/* text: an RFC 6120 8.3.2 <text/> for the user, a static string */
void
ngx_xmpp_router_bounce_text(ngx_xmpp_session_t *s, ngx_xmpp_delivery_t *d,
    const char *type, const char *condition, const char *text)
{
    static const char  *kinds[] = { "message", "presence", "iq" };

    ngx_xmpp_wbuf_t  b;

    if (s == NULL
        || ngx_xmpp_str_is(&d->type, "error")
        || (d->kind == NGX_XMPP_STANZA_IQ
            && ngx_xmpp_str_is(&d->type, "result")))
    {
        return;
    }

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = 16384;

    ngx_xmpp_wbuf_lit(&b, "<");
    ngx_xmpp_wbuf_str(&b, kinds[d->kind]);
    ngx_xmpp_wbuf_lit(&b, " xmlns='" NGX_XMPP_NS_CLIENT "' type='error'");

    ngx_xmpp_wbuf_lit(&b, " from='");
    if (d->to.full.len) {
        ngx_xmpp_wbuf_escs(&b, &d->to.full);
    } else {
        ngx_xmpp_wbuf_nstr(&b, &s->conf->domain);
    }

    ngx_xmpp_wbuf_lit(&b, "' to='");
    ngx_xmpp_wbuf_escs(&b, &s->jid.full);
    ngx_xmpp_wbuf_lit(&b, "'");

    if (d->id.len) {
        ngx_xmpp_wbuf_lit(&b, " id='");
        ngx_xmpp_wbuf_escs(&b, &d->id);
        ngx_xmpp_wbuf_lit(&b, "'");
    }

    ngx_xmpp_wbuf_lit(&b, "><error type='");
    ngx_xmpp_wbuf_str(&b, type);
    ngx_xmpp_wbuf_lit(&b, "'><");
    ngx_xmpp_wbuf_str(&b, condition);
    ngx_xmpp_wbuf_lit(&b, " xmlns='" NGX_XMPP_NS_STANZAS "'/>");

    if (text) {
        ngx_xmpp_wbuf_lit(&b, "<text xmlns='" NGX_XMPP_NS_STANZAS "'>");
        ngx_xmpp_wbuf_str(&b, text);
        ngx_xmpp_wbuf_lit(&b, "</text>");
    }

    ngx_xmpp_wbuf_lit(&b, "</error></");
    ngx_xmpp_wbuf_str(&b, kinds[d->kind]);
    ngx_xmpp_wbuf_lit(&b, ">");

    (void) ngx_xmpp_session_send_wbuf(s, &b);
    ngx_xmpp_wbuf_free(&b);
}


void
ngx_xmpp_router_deliver_ipc(ngx_xmpp_conf_t *xcf, uint64_t sid,
    u_char *data, size_t len)
{
    ngx_xmpp_session_t  *s;

    s = ngx_xmpp_session_find(sid);

    if (s == NULL && ngx_xmpp_sm_deliver(sid, data, len) == NGX_OK) {
        return;
    }

    if (s && !s->bound && ngx_xmpp_sm_hold(s, data, len) == NGX_OK) {
        return;
    }

    if (s == NULL || !s->bound) {
        ngx_xmpp_router_ended(xcf, sid, data, len);
        return;
    }

    (void) ngx_xmpp_router_inbound(s, data, len);
}


/*
 * The session ended after the sender looked it up (RFC 6121 8.5.3.2:
 * no such resource any more): the stanza is handled as the unacked
 * stanzas of an ended XEP-0198 session are, so a message goes to the
 * account's other resources or to offline storage, not nowhere.
 */
static void
ngx_xmpp_router_ended(ngx_xmpp_conf_t *xcf, uint64_t sid, u_char *data,
    size_t len)
{
    ngx_uint_t   rc;
    ngx_pool_t  *pool;

    static const char  *what[] = {
        "dropped", "sent to other resources", "stored offline", "bounced"
    };

    pool = ngx_create_pool(1024, ngx_cycle->log);
    if (pool == NULL) {
        return;
    }

    rc = ngx_xmpp_sm_undeliverable(xcf, pool, sid, data, len);

    ngx_destroy_pool(pool);

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "xmpp: stanza for ended session #%uL %s", sid, what[rc]);
}


/*
 * One stanza to several sessions of this worker (NGX_XMPP_IPC_FAN): a
 * room's owner sends each room message once per worker, not once per
 * occupant, and this worker makes the copies.  Copy i is
 * "<" elem " to='" jid[i] "'" tail, the JIDs already escaped by the
 * sender; after the header come elem, tail, then per session its id,
 * the JID's length and the JID.  The datagram came from a worker with
 * the zone's secret, but its lengths are checked all the same.
 */
void
ngx_xmpp_router_fan_ipc(ngx_xmpp_conf_t *xcf, u_char *data, size_t len)
{
    u_char              *p, *end, *elem, *tail;
    uint64_t             sid;
    ngx_xmpp_wbuf_t     *b;
    ngx_xmpp_fan_hdr_t   h;
    ngx_xmpp_fan_rcpt_t  r;

    end = data + len;

    if (len < sizeof(h)) {
        goto malformed;
    }

    ngx_memcpy(&h, data, sizeof(h));
    p = data + sizeof(h);

    if (h.elem_len > (size_t) (end - p)
        || h.tail_len > (size_t) (end - p) - h.elem_len)
    {
        goto malformed;
    }

    elem = p;
    tail = p + h.elem_len;
    p = tail + h.tail_len;

    b = &ngx_xmpp_router_fan;
    b->max = len + 16;

    while (p < end) {
        if ((size_t) (end - p) < sizeof(r)) {
            goto malformed;
        }

        ngx_memcpy(&r, p, sizeof(r));
        p += sizeof(r);

        if (r.jid_len > (size_t) (end - p)) {
            goto malformed;
        }

        sid = r.sid;

        /* the scratch buffer of the worker's life: no allocation here */
        b->last = b->start;
        b->failed = 0;

        ngx_xmpp_wbuf_lit(b, "<");
        ngx_xmpp_wbuf_add(b, elem, h.elem_len);
        ngx_xmpp_wbuf_lit(b, " to='");
        ngx_xmpp_wbuf_add(b, p, r.jid_len);
        ngx_xmpp_wbuf_lit(b, "'");
        ngx_xmpp_wbuf_add(b, tail, h.tail_len);

        p += r.jid_len;

        if (!b->failed) {
            ngx_xmpp_router_deliver_ipc(xcf, sid, b->start,
                                        b->last - b->start);
        }
    }

    return;

malformed:

    ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                  "xmpp: malformed fan-out record from another worker");
}


void
ngx_xmpp_router_exit_worker(void)
{
    ngx_xmpp_wbuf_free(&ngx_xmpp_router_fan);
}


void
ngx_xmpp_router_kick(ngx_pid_t pid, uint64_t sid)
{
    if (pid == ngx_pid) {
        ngx_xmpp_router_kick_local(sid);
        return;
    }

    (void) ngx_xmpp_ipc_send(pid, NGX_XMPP_IPC_KICK, sid, NULL, 0);
}


/* RFC 6120 4.9.3.3: the older session of a resource gives way */
void
ngx_xmpp_router_kick_local(uint64_t sid)
{
    ngx_xmpp_session_t  *s;

    s = ngx_xmpp_session_find(sid);

    if (s) {
        ngx_xmpp_session_error(s, "conflict", "replaced by a new session");
        return;
    }

    ngx_xmpp_sm_kick(sid);
}


/*
 * The last step before a stanza from elsewhere reaches a bound session
 * of this worker: XEP-0191 drops what a blocked JID sent (and answers
 * it), XEP-0352 holds what can wait while the client is inactive.
 */
ngx_int_t
ngx_xmpp_router_inbound(ngx_xmpp_session_t *s, u_char *data, size_t len)
{
    ngx_int_t  rc;

    rc = ngx_xmpp_blocking_inbound(s, data, len);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    rc = ngx_xmpp_csi_filter(s, data, len);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    return ngx_xmpp_session_send(s, data, len);
}


static ngx_int_t
ngx_xmpp_router_unescape(u_char *p, size_t n, u_char *buf, size_t size,
    ngx_str_t *value)
{
    size_t       i, k, m;
    u_char      *d;
    ngx_uint_t   j;

    static const struct {
        const char  *ent;
        u_char       ch;
    } ents[] = {
        { "&amp;", '&' }, { "&lt;", '<' }, { "&gt;", '>' },
        { "&apos;", '\'' }, { "&quot;", '"' }
    };

    d = buf;

    for (i = 0; i < n; i++) {
        if ((size_t) (d - buf) >= size) {
            return NGX_DECLINED;
        }

        if (p[i] != '&') {
            *d++ = p[i];
            continue;
        }

        for (j = 0; j < sizeof(ents) / sizeof(ents[0]); j++) {
            m = ngx_strlen(ents[j].ent);
            if (n - i >= m && ngx_strncmp(p + i, ents[j].ent, m) == 0) {
                break;
            }
        }

        if (j == sizeof(ents) / sizeof(ents[0])) {
            /* character references: not in what we serialize */
            return NGX_DECLINED;
        }

        *d++ = ents[j].ch;
        k = ngx_strlen(ents[j].ent);
        i += k - 1;
    }

    value->data = buf;
    value->len = d - buf;

    return NGX_OK;
}


/*
 * An attribute of the first element of a serialized stanza, unescaped
 * into buf: delivery has bytes, not a tree.  NGX_DECLINED: absent, or
 * longer than size.
 */
ngx_int_t
ngx_xmpp_router_peek(u_char *data, size_t len, const char *name,
    u_char *buf, size_t size, ngx_str_t *value)
{
    u_char  *p, *last, *n, *v, q;
    size_t   nlen, an;

    p = data;
    last = data + len;
    nlen = ngx_strlen(name);

    if (p == last || *p != '<') {
        return NGX_DECLINED;
    }

    for (p++; p < last && *p != ' ' && *p != '>' && *p != '/'; p++) {
        /* the element name */
    }

    for ( ;; ) {
        while (p < last && (*p == ' ' || *p == '\t' || *p == '\r'
                            || *p == '\n'))
        {
            p++;
        }

        if (p >= last || *p == '>' || *p == '/') {
            return NGX_DECLINED;
        }

        n = p;

        while (p < last && *p != '=' && *p != ' ') {
            p++;
        }

        an = p - n;

        while (p < last && *p == ' ') {
            p++;
        }

        if (p >= last || *p++ != '=') {
            return NGX_DECLINED;
        }

        while (p < last && *p == ' ') {
            p++;
        }

        if (p >= last || (*p != '\'' && *p != '"')) {
            return NGX_DECLINED;
        }

        q = *p++;
        v = p;

        while (p < last && *p != q) {
            p++;
        }

        if (p >= last) {
            return NGX_DECLINED;
        }

        if (an == nlen && ngx_strncmp(n, name, nlen) == 0) {
            return ngx_xmpp_router_unescape(v, p - v, buf, size, value);
        }

        p++;
    }
}


/* an empty or one-child result for an iq the server answers itself */
void
ngx_xmpp_iq_result(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    const char *payload)
{
    ngx_str_t        *to;
    ngx_xmpp_wbuf_t   b;

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = 65536;

    ngx_xmpp_wbuf_lit(&b, "<iq xmlns='" NGX_XMPP_NS_CLIENT "' type='result'"
                      " from='");

    to = ngx_xmpp_node_attr(st->node, "to");

    if (st->has_to && to) {
        ngx_xmpp_wbuf_escs(&b, to);
    } else {
        ngx_xmpp_wbuf_escs(&b, &s->jid.bare);
    }

    ngx_xmpp_wbuf_lit(&b, "' to='");
    ngx_xmpp_wbuf_escs(&b, &s->jid.full);
    ngx_xmpp_wbuf_lit(&b, "' id='");
    ngx_xmpp_wbuf_escs(&b, &st->id);

    if (payload) {
        ngx_xmpp_wbuf_lit(&b, "'>");
        ngx_xmpp_wbuf_str(&b, payload);
        ngx_xmpp_wbuf_lit(&b, "</iq>");

    } else {
        ngx_xmpp_wbuf_lit(&b, "'/>");
    }

    (void) ngx_xmpp_session_send_wbuf(s, &b);
    ngx_xmpp_wbuf_free(&b);
}
