
/*
 * Presence (RFC 6121 section 4): initial and final presence of a
 * session, broadcast to the user's other resources and to the contacts
 * subscribed to it (through ngx_xmpp_roster.c, which knows who they
 * are), probes answered from the session's last presence, directed
 * presence, and the unavailable presence that the server sends for a
 * session that ends without saying goodbye (section 4.5.2).
 */


#include "ngx_xmpp.h"


static void ngx_xmpp_presence_directed(ngx_xmpp_session_t *s,
    ngx_xmpp_stanza_t *st, u_char *data, size_t len);
static void ngx_xmpp_presence_remember(ngx_xmpp_session_t *s,
    ngx_str_t *jid, ngx_uint_t add);


static ngx_int_t
ngx_xmpp_presence_priority(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n)
{
    ngx_int_t         p, sign;
    ngx_str_t         text;
    ngx_uint_t        i;
    ngx_xmpp_node_t  *pn;

    pn = ngx_xmpp_node_child(n, "priority", NGX_XMPP_NS_CLIENT);

    if (pn == NULL || ngx_xmpp_node_text(s->stanza_pool, pn, &text) != NGX_OK
        || text.len == 0 || text.len > 4)
    {
        return 0;
    }

    /* RFC 6121 4.7.2.3: an integer from -128 to +127 */
    sign = 1;
    i = 0;

    if (text.data[0] == '-' || text.data[0] == '+') {
        sign = (text.data[0] == '-') ? -1 : 1;
        i = 1;
    }

    p = ngx_atoi(text.data + i, text.len - i);

    if (p == NGX_ERROR || p > 128 || (p == 128 && sign == 1)) {
        return 0;
    }

    return sign * p;
}


/* to every available resource of the user, and the sender if self */
static void
ngx_xmpp_presence_broadcast_own(ngx_xmpp_session_t *s, u_char *data,
    size_t len, ngx_uint_t self)
{
    ngx_uint_t         i, n;
    ngx_xmpp_route_t  *routes;

    routes = ngx_xmpp_router_routes();

    n = ngx_xmpp_registry_lookup(s->conf, &s->jid.bare, routes,
                                 NGX_XMPP_ROUTE_MAX);

    for (i = 0; i < n; i++) {
        if (routes[i].pid == ngx_pid && routes[i].sid == s->id) {
            if (!self) {
                continue;
            }

        } else if (!routes[i].available) {
            continue;
        }

        (void) ngx_xmpp_router_to_session(s->conf, &routes[i], data, len);
    }
}


static ngx_uint_t
ngx_xmpp_presence_is_subscription(ngx_str_t *type)
{
    return (type->len == 9
            && ngx_strncmp(type->data, "subscribe", 9) == 0)
           || (type->len == 10
               && ngx_strncmp(type->data, "subscribed", 10) == 0)
           || (type->len == 11
               && ngx_strncmp(type->data, "unsubscribe", 11) == 0)
           || (type->len == 12
               && ngx_strncmp(type->data, "unsubscribed", 12) == 0);
}


/*
 * RFC 6121 4.2.2, 4.4.2, 4.5.2: the contacts subscribed to the user
 * hear the presence; it is kept (without "to") to answer their probes.
 */
static ngx_int_t
ngx_xmpp_presence_subscribers(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_uint_t unavailable, ngx_uint_t initial)
{
    size_t            len;
    u_char           *p;
    ngx_xmpp_wbuf_t  *b;

    ngx_xmpp_node_del_attr(st->node, "to");

    b = ngx_xmpp_wbuf_scratch(s->conf->max_stanza_size + 4096);
    ngx_xmpp_serialize(b, st->node, NULL);

    len = b->last - b->start;

    if (b->failed || len < sizeof("<presence") - 1
        || ngx_strncmp(b->start, "<presence", sizeof("<presence") - 1) != 0)
    {
        return NGX_ERROR;
    }

    ngx_free(s->last_presence.data);
    ngx_str_null(&s->last_presence);

    if (!unavailable) {
        p = ngx_alloc(len, s->connection->log);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(p, b->start, len);
        s->last_presence.data = p;
        s->last_presence.len = len;
    }

    s->presence_seq++;

    ngx_xmpp_roster_presence(s->conf, s, &s->jid.bare, b->start, len,
                             initial ? NGX_XMPP_ROSTER_INITIAL : 0);

    return NGX_OK;
}


void
ngx_xmpp_presence_handle(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st)
{
    size_t            len;
    u_char           *data;
    ngx_uint_t        unavailable, initial;
    ngx_xmpp_wbuf_t  *b;

    unavailable = (st->type.len == 11
                   && ngx_strncmp(st->type.data, "unavailable", 11) == 0);

    if (ngx_xmpp_presence_is_subscription(&st->type)) {
        ngx_xmpp_roster_subscription(s, st);
        return;
    }

    if (st->type.len == 0) {
        /* XEP-0153 section 4.3: the server's avatar hash, not the client's */
        ngx_xmpp_vcard_presence(s, st);
    }

    if (st->has_to
        && !(st->to.local.len == 0 && st->to.resource.len == 0
             && st->to.domain.len == s->conf->domain.len
             && ngx_strncmp(st->to.domain.data, s->conf->domain.data,
                            st->to.domain.len) == 0))
    {
        b = ngx_xmpp_wbuf_scratch(s->conf->max_stanza_size + 4096);
        ngx_xmpp_serialize(b, st->node, NULL);

        if (!b->failed) {
            ngx_xmpp_presence_directed(s, st, b->start, b->last - b->start);
        }

        return;
    }

    if (st->type.len && !unavailable) {
        /* RFC 6121 4.3: probes are the server's business; errors end */
        return;
    }

    initial = !s->available && !unavailable;

    if (unavailable) {
        s->available = 0;

    } else {
        s->available = 1;
        s->priority = ngx_xmpp_presence_priority(s, st->node);
    }

    ngx_xmpp_registry_update(s);

    if (!unavailable) {
        /* XEP-0115: what it wants of PEP (XEP-0163 4.3) */
        ngx_xmpp_caps_presence(s, st, initial);
    }

    if (ngx_xmpp_presence_subscribers(s, st, unavailable, initial)
        != NGX_OK)
    {
        return;
    }

    /* XEP-0160: stored messages go to the first available resource */
    if (initial && s->priority >= 0) {
        ngx_xmpp_offline_deliver(s);
    }

    /* RFC 6121 4.2.2 and 4.5.2: broadcast, with "to" the bare JID */
    if (ngx_xmpp_node_set_attr(st->pool, st->node, "to", &s->jid.bare)
        != NGX_OK)
    {
        return;
    }

    b = ngx_xmpp_wbuf_scratch(s->conf->max_stanza_size + 4096);
    ngx_xmpp_serialize(b, st->node, NULL);

    if (b->failed) {
        return;
    }

    data = b->start;
    len = b->last - b->start;

    ngx_xmpp_presence_broadcast_own(s, data, len, 1);

    if (unavailable) {
        ngx_xmpp_presence_gone_directed(s, data, len);
    }
}


static void
ngx_xmpp_presence_directed(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    u_char *data, size_t len)
{
    ngx_uint_t          available, unavailable;
    ngx_xmpp_jidlist_t  except;

    available = (st->type.len == 0);
    unavailable = (st->type.len == 11
                   && ngx_strncmp(st->type.data, "unavailable", 11) == 0);

    if (ngx_xmpp_muc_ours(s->conf, &st->to.domain)) {
        /* XEP-0045 7.2: joining, changing nick or status, leaving */
        if (st->to.local.len) {
            ngx_xmpp_muc_handoff(s, &st->to, data, len);
        }

    } else if (st->to.domain.len != s->conf->domain.len
               || ngx_strncmp(st->to.domain.data, s->conf->domain.data,
                              st->to.domain.len) != 0)
    {
        /* no server-to-server yet; presence errors are not bounced */
        return;

    } else if (st->type.len == 5
               && ngx_strncmp(st->type.data, "probe", 5) == 0)
    {
        /* RFC 6121 4.3.1: the server answers it, no client sees it */
        if (st->to.local.len) {
            ngx_xmpp_roster_probe(s, &st->to.bare);
        }

        return;

    } else if (st->to.resource.len) {
        (void) ngx_xmpp_router_to_full_jid(s->conf, &st->to, data, len);

    } else {
        /* XEP-0191 3.3: the resources of the target the user blocked */
        ngx_xmpp_blocking_list(s, &except);
        (void) ngx_xmpp_router_to_bare_except(s->conf, &st->to.bare,
                                              NGX_XMPP_STANZA_PRESENCE,
                                              &st->type, data, len, &except);
    }

    /* RFC 6121 4.6.3: remember who must hear that we went away */
    if (available || unavailable) {
        ngx_xmpp_presence_remember(s, &st->to.full, available);
    }
}


static void
ngx_xmpp_presence_remember(ngx_xmpp_session_t *s, ngx_str_t *jid,
    ngx_uint_t add)
{
    ngx_uint_t  i;

    for (i = 0; i < s->ndirected; i++) {
        if (s->directed[i].len == jid->len
            && ngx_strncmp(s->directed[i].data, jid->data, jid->len) == 0)
        {
            if (!add) {
                ngx_free(s->directed[i].data);
                s->directed[i] = s->directed[--s->ndirected];
            }

            return;
        }
    }

    if (!add || s->ndirected == NGX_XMPP_DIRECTED_MAX) {
        return;
    }

    if (s->directed == NULL) {
        s->directed = ngx_palloc(s->pool,
                                 NGX_XMPP_DIRECTED_MAX * sizeof(ngx_str_t));
        if (s->directed == NULL) {
            return;
        }
    }

    /* on the heap: the list shrinks and grows over a long session */
    s->directed[s->ndirected].data = ngx_alloc(jid->len, s->connection->log);
    if (s->directed[s->ndirected].data == NULL) {
        return;
    }

    ngx_memcpy(s->directed[s->ndirected].data, jid->data, jid->len);
    s->directed[s->ndirected].len = jid->len;
    s->ndirected++;
}


/* the stored directed-presence targets hear "unavailable", then forget */
void
ngx_xmpp_presence_gone_directed(ngx_xmpp_session_t *s, u_char *data,
    size_t len)
{
    ngx_uint_t          i;
    ngx_xmpp_jid_t      jid;
    ngx_xmpp_jidlist_t  except;

    ngx_xmpp_blocking_list(s, &except);

    for (i = 0; i < s->ndirected; i++) {
        if (data
            && !ngx_xmpp_blocking_blocks(s, &s->directed[i])
            && ngx_xmpp_jid_parse(s->stanza_pool ? s->stanza_pool : s->pool,
                                  &s->directed[i], &jid) == NGX_OK)
        {
            if (ngx_xmpp_muc_ours(s->conf, &jid.domain)) {
                /* the room sees its occupant leave (XEP-0045 7.14) */
                if (jid.local.len) {
                    ngx_xmpp_muc_handoff(s, &jid, data, len);
                }

            } else if (jid.resource.len) {
                (void) ngx_xmpp_router_to_full_jid(s->conf, &jid, data, len);

            } else {
                (void) ngx_xmpp_router_to_bare_except(s->conf, &jid.bare,
                           NGX_XMPP_STANZA_PRESENCE, NULL, data, len,
                           &except);
            }
        }

        ngx_free(s->directed[i].data);
    }

    s->ndirected = 0;
}


/* the session ends: RFC 6121 4.5.2 and 4.6.3 */
void
ngx_xmpp_presence_gone(ngx_xmpp_session_t *s)
{
    ngx_xmpp_wbuf_t  b;

    ngx_free(s->last_presence.data);
    ngx_str_null(&s->last_presence);

    if (!s->available && s->ndirected == 0) {
        return;
    }

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = 8192;

    ngx_xmpp_wbuf_lit(&b, "<presence xmlns='" NGX_XMPP_NS_CLIENT
                      "' type='unavailable' from='");
    ngx_xmpp_wbuf_escs(&b, &s->jid.full);
    ngx_xmpp_wbuf_lit(&b, "'/>");

    if (b.failed) {
        ngx_xmpp_presence_gone_directed(s, NULL, 0);
        ngx_xmpp_wbuf_free(&b);
        return;
    }

    if (s->available) {
        s->available = 0;
        ngx_xmpp_registry_update(s);
        ngx_xmpp_presence_broadcast_own(s, b.start, b.last - b.start, 0);

        /* the subscribers, once the roster says who they are */
        ngx_xmpp_roster_presence(s->conf, NULL, &s->jid.bare, b.start,
                                 b.last - b.start, 0);
    }

    ngx_xmpp_presence_gone_directed(s, b.start, b.last - b.start);

    ngx_xmpp_wbuf_free(&b);
}


/*
 * Presence without "to" ("<presence" first) for the bare JID "to",
 * except its resources that the list except covers.
 */
void
ngx_xmpp_presence_send_to(ngx_xmpp_conf_t *xcf, ngx_str_t *to, u_char *data,
    size_t len, ngx_xmpp_jidlist_t *except)
{
    ngx_xmpp_wbuf_t  b;

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = len + 4096;

    ngx_xmpp_wbuf_lit(&b, "<presence to='");
    ngx_xmpp_wbuf_escs(&b, to);
    ngx_xmpp_wbuf_lit(&b, "'");
    ngx_xmpp_wbuf_add(&b, data + sizeof("<presence") - 1,
                      len - (sizeof("<presence") - 1));

    /* XEP-0191 3.3: not to the contact's resources the user blocked */
    if (!b.failed) {
        (void) ngx_xmpp_router_to_bare_except(xcf, to,
                                              NGX_XMPP_STANZA_PRESENCE, NULL,
                                              b.start, b.last - b.start,
                                              except);
    }

    ngx_xmpp_wbuf_free(&b);
}


/*
 * RFC 6121 4.3.2: the server answers a probe for the user: each
 * available resource of target sends its last presence to "to" (a bare
 * or full JID), from whichever worker holds it.  Returns how many
 * resources were asked.
 */
ngx_uint_t
ngx_xmpp_presence_probe(ngx_xmpp_conf_t *xcf, ngx_str_t *target,
    ngx_str_t *to)
{
    ngx_pid_t          pids[NGX_XMPP_ROUTE_MAX];
    uint64_t           sids[NGX_XMPP_ROUTE_MAX];
    ngx_uint_t         i, n, m;
    ngx_xmpp_route_t  *routes;

    routes = ngx_xmpp_router_routes();
    n = ngx_xmpp_registry_lookup(xcf, target, routes, NGX_XMPP_ROUTE_MAX);

    /* copied out: answering looks routes up again */
    for (i = 0, m = 0; i < n; i++) {
        if (routes[i].available) {
            pids[m] = routes[i].pid;
            sids[m++] = routes[i].sid;
        }
    }

    for (i = 0; i < m; i++) {
        if (pids[i] == ngx_pid) {
            ngx_xmpp_presence_probe_local(sids[i], to->data, to->len);

        } else {
            (void) ngx_xmpp_ipc_send(pids[i], NGX_XMPP_IPC_PROBE, sids[i],
                                     to->data, to->len);
        }
    }

    return m;
}


/* a probe reached the session sid of this worker: it answers "to" */
void
ngx_xmpp_presence_probe_local(uint64_t sid, u_char *to, size_t len)
{
    u_char              *slash;
    ngx_str_t            bare, t;
    ngx_xmpp_jid_t       jid;
    ngx_xmpp_wbuf_t      b;
    ngx_xmpp_session_t  *s;
    ngx_xmpp_jidlist_t   except;

    s = ngx_xmpp_session_find(sid);

    if (s == NULL) {
        /* XEP-0198: a parked session still looks available */
        s = ngx_xmpp_sm_parked(sid);

    } else if (!s->bound) {
        /* XEP-0198: being resumed, it answers with the state it gets */
        (void) ngx_xmpp_sm_hold_ipc(s, NGX_XMPP_IPC_PROBE, to, len);
        return;
    }

    if (s == NULL || !s->bound || !s->available || !s->last_presence.len
        || len == 0 || len > NGX_XMPP_JID_PART_MAX * 3)
    {
        return;
    }

    if (ngx_xmpp_blocking_probe_wait(s, to, len) == NGX_OK) {
        /* XEP-0191 3.3: the list being read decides, once it is read */
        return;
    }

    t.data = to;
    t.len = len;

    if (ngx_xmpp_blocking_blocks(s, &t)) {
        /* XEP-0191 3.3: no presence of the user reaches a blocked JID */
        return;
    }

    slash = ngx_strlchr(to, to + len, '/');

    bare.data = to;
    bare.len = slash ? (size_t) (slash - to) : len;

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = s->last_presence.len + 4096 + len;

    ngx_xmpp_wbuf_lit(&b, "<presence to='");
    ngx_xmpp_wbuf_esc(&b, to, len);
    ngx_xmpp_wbuf_lit(&b, "'");
    ngx_xmpp_wbuf_add(&b, s->last_presence.data + sizeof("<presence") - 1,
                      s->last_presence.len - (sizeof("<presence") - 1));

    if (b.failed) {
        ngx_xmpp_wbuf_free(&b);
        return;
    }

    if (slash) {
        ngx_memzero(&jid, sizeof(ngx_xmpp_jid_t));
        jid.bare = bare;
        jid.resource.data = slash + 1;
        jid.resource.len = to + len - slash - 1;
        (void) ngx_xmpp_router_to_full_jid(s->conf, &jid, b.start,
                                           b.last - b.start);

    } else {
        /* XEP-0191 3.3: a blocked resource of "to" is left out */
        ngx_xmpp_blocking_list(s, &except);
        (void) ngx_xmpp_router_to_bare_except(s->conf, &bare,
                                              NGX_XMPP_STANZA_PRESENCE, NULL,
                                              b.start, b.last - b.start,
                                              &except);
    }

    ngx_xmpp_wbuf_free(&b);
}


/*
 * RFC 6121 3.2.2 and 3.3.3: a subscription ended, so the former
 * subscriber "to" hears "unavailable" from each available resource of
 * "from".
 */
void
ngx_xmpp_presence_unavailable_to(ngx_xmpp_conf_t *xcf, ngx_str_t *from,
    ngx_str_t *to)
{
    u_char            *p;
    size_t             ends[NGX_XMPP_ROUTE_MAX];
    ngx_uint_t         i, n, m;
    ngx_xmpp_wbuf_t    b;
    ngx_xmpp_route_t  *routes;

    routes = ngx_xmpp_router_routes();
    n = ngx_xmpp_registry_lookup(xcf, from, routes, NGX_XMPP_ROUTE_MAX);

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = NGX_XMPP_ROUTE_MAX * 4096;

    /* built first: delivery looks routes up again */
    for (i = 0, m = 0; i < n; i++) {
        if (!routes[i].available) {
            continue;
        }

        ngx_xmpp_wbuf_lit(&b, "<presence xmlns='" NGX_XMPP_NS_CLIENT
                          "' type='unavailable' from='");
        ngx_xmpp_wbuf_escs(&b, from);
        ngx_xmpp_wbuf_lit(&b, "/");
        ngx_xmpp_wbuf_esc(&b, routes[i].resource, routes[i].resource_len);
        ngx_xmpp_wbuf_lit(&b, "' to='");
        ngx_xmpp_wbuf_escs(&b, to);
        ngx_xmpp_wbuf_lit(&b, "'/>");

        ends[m++] = b.last - b.start;
    }

    if (b.failed) {
        ngx_xmpp_wbuf_free(&b);
        return;
    }

    p = b.start;

    for (i = 0; i < m; i++) {
        (void) ngx_xmpp_router_to_bare(xcf, to, NGX_XMPP_STANZA_PRESENCE,
                                       NULL, p, b.start + ends[i] - p);
        p = b.start + ends[i];
    }

    ngx_xmpp_wbuf_free(&b);
}
