
/*
 * XEP-0191 section 3.5, enforcement of the blocklist that each session
 * keeps (ngx_xmpp_blocking.c reads and updates it): a stanza from a
 * blocked JID is not delivered (a message or an iq get/set gets
 * <service-unavailable/>, presence is dropped), and a stanza the user
 * addresses to a blocked JID is refused with <not-acceptable/> and
 * <blocked xmlns='urn:xmpp:blocking:errors'/>.
 */


#include "ngx_xmpp.h"
#include "ngx_xmpp_blocking.h"


/* the bounce of a refused stanza looks routes up while others iterate */
static ngx_xmpp_route_t  ngx_xmpp_blocking_routes[NGX_XMPP_ROUTE_MAX];


/*
 * A message to a bare JID whose every resource that would get it
 * (available, non-negative priority: RFC 6121 8.5.2.1.1) is one the
 * user blocked: it would reach only blocked resources, so it is refused
 * as a stanza to a blocked JID (section 3.3), before it is accepted.
 */
static ngx_uint_t
ngx_xmpp_blocking_all_blocked(ngx_xmpp_session_t *s, ngx_str_t *bare)
{
    ngx_uint_t           i, n, eligible, blocked;
    ngx_xmpp_route_t    *rt;
    ngx_xmpp_jidlist_t   l;

    ngx_xmpp_blocking_list(s, &l);

    n = ngx_xmpp_registry_lookup(s->conf, bare, ngx_xmpp_blocking_routes,
                                 NGX_XMPP_ROUTE_MAX);
    eligible = 0;
    blocked = 0;

    for (i = 0; i < n; i++) {
        rt = &ngx_xmpp_blocking_routes[i];

        if (!rt->available || rt->priority < 0) {
            continue;
        }

        eligible++;

        if (ngx_xmpp_blocking_route_blocked(&l, bare, rt->resource,
                                            rt->resource_len))
        {
            blocked++;
        }
    }

    return eligible && eligible == blocked;
}


/*
 * Section 3.5, the user's side: a stanza to a blocked JID is refused.
 * NGX_OK: refused (answered); NGX_DECLINED: it goes on.
 */
ngx_int_t
ngx_xmpp_blocking_outbound(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st)
{
    ngx_str_t        *to;
    ngx_xmpp_wbuf_t   b;

    static const char  *kinds[] = { "message", "presence", "iq" };

    if (!st->has_to || s->blocklist == NULL || s->blocklist->n == 0
        || !(ngx_xmpp_blocking_blocks(s, &st->to.full)
             || (st->kind == NGX_XMPP_STANZA_MESSAGE
                 && st->to.resource.len == 0 && st->to.local.len
                 && ngx_xmpp_blocking_all_blocked(s, &st->to.bare))))
    {
        return NGX_DECLINED;
    }

    if ((st->type.len == 5 && ngx_strncmp(st->type.data, "error", 5) == 0)
        || (st->kind == NGX_XMPP_STANZA_IQ && st->type.len == 6
            && ngx_strncmp(st->type.data, "result", 6) == 0))
    {
        /* never answer an error or a result: it is dropped */
        return NGX_OK;
    }

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = 16384;

    to = ngx_xmpp_node_attr(st->node, "to");

    ngx_xmpp_wbuf_lit(&b, "<");
    ngx_xmpp_wbuf_str(&b, kinds[st->kind]);
    ngx_xmpp_wbuf_lit(&b, " xmlns='" NGX_XMPP_NS_CLIENT "' type='error'"
                      " from='");
    ngx_xmpp_wbuf_escs(&b, to);
    ngx_xmpp_wbuf_lit(&b, "' to='");
    ngx_xmpp_wbuf_escs(&b, &s->jid.full);
    ngx_xmpp_wbuf_lit(&b, "'");

    if (st->id.len) {
        ngx_xmpp_wbuf_lit(&b, " id='");
        ngx_xmpp_wbuf_escs(&b, &st->id);
        ngx_xmpp_wbuf_lit(&b, "'");
    }

    ngx_xmpp_wbuf_lit(&b, "><error type='cancel'><not-acceptable xmlns='"
                      NGX_XMPP_NS_STANZAS "'/><blocked xmlns='"
                      NGX_XMPP_NS_BLOCKING ":errors'/></error></");
    ngx_xmpp_wbuf_str(&b, kinds[st->kind]);
    ngx_xmpp_wbuf_lit(&b, ">");

    (void) ngx_xmpp_session_send_wbuf(s, &b);
    ngx_xmpp_wbuf_free(&b);

    return NGX_OK;
}


/*
 * Of the user's resources that a stanza to the bare JID reached (the
 * available ones of the highest priority, RFC 6121 8.5.2.1.1), the one
 * of the lowest (pid, sid) answers: each decides alone, on the shared
 * registry, so the sender gets one error rather than one per resource.
 */
static ngx_uint_t
ngx_xmpp_blocking_answers(ngx_xmpp_session_t *s)
{
    ngx_int_t          best;
    ngx_uint_t         i, n;
    ngx_xmpp_route_t  *rt, *first;

    n = ngx_xmpp_registry_lookup(s->conf, &s->jid.bare,
                                 ngx_xmpp_blocking_routes,
                                 NGX_XMPP_ROUTE_MAX);
    best = -1;

    for (i = 0; i < n; i++) {
        rt = &ngx_xmpp_blocking_routes[i];

        if (rt->available && rt->priority > best) {
            best = rt->priority;
        }
    }

    first = NULL;

    for (i = 0; i < n; i++) {
        rt = &ngx_xmpp_blocking_routes[i];

        if (!rt->available || rt->priority != best) {
            continue;
        }

        if (first == NULL || rt->pid < first->pid
            || (rt->pid == first->pid && rt->sid < first->sid))
        {
            first = rt;
        }
    }

    return first == NULL
           || (first->pid == ngx_pid && first->sid == s->id);
}


/*
 * The answer to a stanza a blocked JID sent (section 3.5): a message
 * or an iq get/set gets <service-unavailable/>, as if the user did not
 * exist; it is routed to the sender on whatever worker holds it.
 */
static void
ngx_xmpp_blocking_bounce(ngx_xmpp_session_t *s, u_char *data, size_t len,
    ngx_str_t *from)
{
    u_char                buf[NGX_XMPP_BLOCKING_FROM_MAX], ib[1024];
    u_char                tb[16];
    ngx_str_t             to, id, type, res;
    ngx_uint_t            i, n, iq;
    ngx_xmpp_wbuf_t       b;
    ngx_xmpp_jid_parts_t  parts;

    iq = (data[1] == 'i');

    if (ngx_xmpp_router_peek(data, len, "type", tb, sizeof(tb), &type)
        != NGX_OK)
    {
        type.len = 0;
    }

    if ((type.len == 5 && ngx_strncmp(type.data, "error", 5) == 0)
        || (type.len == 9 && ngx_strncmp(type.data, "groupchat", 9) == 0)
        || (iq && !(type.len == 3
                    && (ngx_strncmp(type.data, "get", 3) == 0
                        || ngx_strncmp(type.data, "set", 3) == 0))))
    {
        return;
    }

    if (ngx_xmpp_router_peek(data, len, "to", buf, sizeof(buf), &to)
        != NGX_OK)
    {
        to = s->jid.bare;
    }

    if (ngx_xmpp_router_peek(data, len, "id", ib, sizeof(ib), &id)
        != NGX_OK)
    {
        id.len = 0;
    }

    if (ngx_xmpp_jid_split(from->data, from->len, &parts) != 0
        || parts.local == NULL || parts.resource_len == 0)
    {
        return;
    }

    if (to.len == s->jid.bare.len
        && ngx_strncmp(to.data, s->jid.bare.data, to.len) == 0
        && !ngx_xmpp_blocking_answers(s))
    {
        /* sent to the bare JID: one of the resources that got it answers */
        return;
    }

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = 16384;

    ngx_xmpp_wbuf_str(&b, iq ? "<iq" : "<message");
    ngx_xmpp_wbuf_lit(&b, " xmlns='" NGX_XMPP_NS_CLIENT "' type='error'"
                      " from='");
    ngx_xmpp_wbuf_escs(&b, &to);
    ngx_xmpp_wbuf_lit(&b, "' to='");
    ngx_xmpp_wbuf_escs(&b, from);
    ngx_xmpp_wbuf_lit(&b, "'");

    if (id.len) {
        ngx_xmpp_wbuf_lit(&b, " id='");
        ngx_xmpp_wbuf_escs(&b, &id);
        ngx_xmpp_wbuf_lit(&b, "'");
    }

    ngx_xmpp_wbuf_lit(&b, "><error type='cancel'><service-unavailable"
                      " xmlns='" NGX_XMPP_NS_STANZAS "'/></error>");
    ngx_xmpp_wbuf_str(&b, iq ? "</iq>" : "</message>");

    if (b.failed) {
        ngx_xmpp_wbuf_free(&b);
        return;
    }

    to.data = from->data;
    to.len = parts.local_len + 1 + parts.domain_len;
    res.data = (u_char *) parts.resource;
    res.len = parts.resource_len;

    n = ngx_xmpp_registry_lookup(s->conf, &to, ngx_xmpp_blocking_routes,
                                 NGX_XMPP_ROUTE_MAX);

    for (i = 0; i < n; i++) {
        if (ngx_xmpp_blocking_eq(ngx_xmpp_blocking_routes[i].resource,
                                 ngx_xmpp_blocking_routes[i].resource_len,
                                 res.data, res.len))
        {
            (void) ngx_xmpp_router_to_session(s->conf,
                                              &ngx_xmpp_blocking_routes[i],
                                              b.start, b.last - b.start);
            break;
        }
    }

    ngx_xmpp_wbuf_free(&b);
}


/* while the list is read: the stanza waits, within bounds */
static ngx_int_t
ngx_xmpp_blocking_wait(ngx_xmpp_blocklist_t *bl, u_char *data, size_t len)
{
    size_t  used;

    used = bl->pending.last - bl->pending.start;

    if (bl->npending == NGX_XMPP_BLOCKING_PENDING
        || used + sizeof(size_t) + len > bl->pending.max)
    {
        return NGX_DECLINED;
    }

    ngx_xmpp_wbuf_add(&bl->pending, &len, sizeof(size_t));
    ngx_xmpp_wbuf_add(&bl->pending, data, len);

    if (bl->pending.failed) {
        bl->pending.failed = 0;
        bl->pending.last = bl->pending.start + used;
        return NGX_DECLINED;
    }

    bl->npending++;

    return NGX_OK;
}


/*
 * A probe (RFC 6121 4.3.2) that reached a session whose list is still
 * being read (just resumed, XEP-0198 5, or parked meanwhile): its
 * answer waits for the list like a stanza does, so that a blocked
 * prober gets nothing (XEP-0191 3.3).  Kept as "?" and the prober's
 * JID: ngx_xmpp_blocking_release() answers it then.  NGX_OK: it waits.
 */
ngx_int_t
ngx_xmpp_blocking_probe_wait(ngx_xmpp_session_t *s, u_char *to,
    size_t len)
{
    u_char  buf[NGX_XMPP_BLOCKING_FROM_MAX + 1];

    if (s->blocklist == NULL || s->blocklist->loaded
        || len >= sizeof(buf))
    {
        return NGX_DECLINED;
    }

    buf[0] = '?';
    ngx_memcpy(buf + 1, to, len);

    if (ngx_xmpp_blocking_wait(s->blocklist, buf, len + 1) != NGX_OK) {
        /* too much waits: no answer rather than one to a blocked JID */
        ngx_log_error(NGX_LOG_WARN, s->connection->log, 0,
                      "xmpp: a probe of %V not answered while its "
                      "blocklist is read", &s->jid.full);
    }

    return NGX_OK;
}


/*
 * Section 3.5, the contact's side, from the router's last step
 * (ngx_xmpp_router_inbound): NGX_OK when the stanza is consumed
 * (dropped, answered, or waiting for the list), NGX_DECLINED when it
 * goes on.
 */
ngx_int_t
ngx_xmpp_blocking_inbound(ngx_xmpp_session_t *s, u_char *data, size_t len)
{
    u_char                *p;
    u_char                 buf[NGX_XMPP_BLOCKING_FROM_MAX];
    ngx_str_t              from;
    ngx_xmpp_blocklist_t  *bl;

    static const char  fwd[] = "<received xmlns='" NGX_XMPP_NS_CARBONS "'>"
                               "<forwarded xmlns='" NGX_XMPP_NS_FORWARD
                               "'>";

    bl = s->blocklist;

    if (bl == NULL) {
        return NGX_DECLINED;
    }

    if (!bl->loaded) {
        if (bl->unchecked
            || ngx_xmpp_blocking_wait(bl, data, len) == NGX_OK)
        {
            /* unchecked: a release below, the stanza goes on */
            return bl->unchecked ? NGX_DECLINED : NGX_OK;
        }

        ngx_log_error(NGX_LOG_WARN, s->connection->log, 0,
                      "xmpp: too much for %V while its blocklist is read, "
                      "%ui stanzas delivered unchecked", &s->jid.full,
                      bl->npending + 1);

        /*
         * What waited goes first, unchecked like this one: a later
         * stanza must not overtake an earlier one of the same sender
         * (RFC 6120 10.1).  What comes next waits again.
         */
        bl->unchecked = 1;
        ngx_xmpp_blocking_release(s);
        bl->unchecked = 0;
        bl->pending.max = NGX_XMPP_BLOCKING_PENDING_SIZE;

        return NGX_DECLINED;
    }

    if (bl->n == 0 || len < 2
        || ngx_xmpp_router_peek(data, len, "from", buf, sizeof(buf), &from)
           != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (from.len == s->jid.bare.len
        && ngx_strncmp(from.data, s->jid.bare.data, from.len) == 0)
    {
        /* an XEP-0280 copy of a message from a blocked JID: dropped */
        p = ngx_strlcasestrn(data, data + len, (u_char *) fwd,
                             sizeof(fwd) - 2);

        if (p == NULL
            || ngx_xmpp_router_peek(p + sizeof(fwd) - 1,
                                    data + len - p - (sizeof(fwd) - 1),
                                    "from", buf, sizeof(buf), &from)
               != NGX_OK
            || !ngx_xmpp_blocking_blocks(s, &from))
        {
            return NGX_DECLINED;
        }

        return NGX_OK;
    }

    if (!ngx_xmpp_blocking_blocks(s, &from)) {
        return NGX_DECLINED;
    }

    if (data[1] != 'p') {
        ngx_xmpp_blocking_bounce(s, data, len, &from);
    }

    return NGX_OK;
}
