
/*
 * Presence (RFC 6121 section 4): initial and final presence of a
 * session, directed presence, and the unavailable presence that the
 * server sends for a session that ends without saying goodbye
 * (section 4.5.2).  Rosters and subscriptions build on this later.
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


void
ngx_xmpp_presence_handle(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st)
{
    size_t            len;
    u_char           *data;
    ngx_uint_t        unavailable;
    ngx_xmpp_wbuf_t  *b;

    unavailable = (st->type.len == 11
                   && ngx_strncmp(st->type.data, "unavailable", 11) == 0);

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
        /* probes and subscriptions to the server: no roster yet */
        return;
    }

    if (unavailable) {
        s->available = 0;

    } else {
        s->available = 1;
        s->priority = ngx_xmpp_presence_priority(s, st->node);
    }

    ngx_xmpp_registry_update(s);

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
    ngx_uint_t  available, unavailable;

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

    } else if (st->to.resource.len) {
        (void) ngx_xmpp_router_to_full_jid(s->conf, &st->to, data, len);

    } else {
        (void) ngx_xmpp_router_to_bare(s->conf, &st->to.bare,
                                       NGX_XMPP_STANZA_PRESENCE, &st->type,
                                       data, len);
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
    ngx_uint_t      i;
    ngx_xmpp_jid_t  jid;

    for (i = 0; i < s->ndirected; i++) {
        if (data
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
                (void) ngx_xmpp_router_to_bare(s->conf, &jid.bare,
                                               NGX_XMPP_STANZA_PRESENCE,
                                               NULL, data, len);
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
    }

    ngx_xmpp_presence_gone_directed(s, b.start, b.last - b.start);

    ngx_xmpp_wbuf_free(&b);
}
