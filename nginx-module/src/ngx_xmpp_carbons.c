
/*
 * XEP-0280 Message Carbons (urn:xmpp:carbons:2): every resource of a
 * user that enabled carbons sees the chat its other resources send
 * (<sent/>) and receive (<received/>).
 *
 * The flag lives in the session and in its registry entry, so the
 * worker that delivers a message finds the carbons-enabled resources of
 * sender and recipient, whatever worker holds them, and hands each its
 * copy through the router (ngx_xmpp_router_to_session(): local send or
 * IPC).  Copies are made after the original has been accepted and
 * recorded, from its serialized bytes: the original is the audit
 * record, a copy never is.
 */


#include "ngx_xmpp.h"


typedef struct {
    ngx_pid_t              pid;
    uint64_t               sid;
    size_t                 end;           /* of its copy in the buffer */
} ngx_xmpp_carbon_target_t;


/* kept between messages: no allocation per copy once it has grown */
static ngx_xmpp_wbuf_t  ngx_xmpp_carbons_buf;


void
ngx_xmpp_carbons_iq(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_node_t *q)
{
    ngx_uint_t  enable;

    /* XEP-0280 section 4: an empty <enable/> or <disable/> in an iq set */
    if (st->type.len != 3 || ngx_strncmp(st->type.data, "set", 3) != 0
        || q->child != NULL)
    {
        ngx_xmpp_router_error(s, st, "modify", "bad-request");
        return;
    }

    enable = (q->name.len == 6);     /* "enable", else "disable" */

    if (s->carbons != enable) {
        s->carbons = enable;
        ngx_xmpp_registry_update(s);
    }

    ngx_xmpp_iq_result(s, st, NULL);
}


/*
 * The serialized bytes are ours (ngx_xmpp_serialize(): one quoting
 * style), and XML names are case-sensitive (XML 1.0 section 2.3), so a
 * plain memmem() finds what a case-blind scan did, at a fraction of
 * its cost.
 */
static ngx_uint_t
ngx_xmpp_carbons_has(ngx_xmpp_delivery_t *d, const char *what)
{
    return memmem(d->data, d->len, what, ngx_strlen(what)) != NULL;
}


/*
 * XEP-0280 section 6 (eligibility): chat; normal with a body; and the
 * IM payloads without a body (chat states, receipts, markers).  Never
 * one marked <private/> (section 7) or <no-copy/> (XEP-0334), never a
 * groupchat.  The serialized bytes are scanned: a body cannot hide an
 * element there, its '<' are escaped.  The caller has checked that the
 * stanza is a message and that a copy would go somewhere.
 */
static ngx_uint_t
ngx_xmpp_carbons_eligible(ngx_xmpp_delivery_t *d)
{
    ngx_uint_t  chat;

    chat = (d->type.len == 4 && ngx_strncmp(d->type.data, "chat", 4) == 0);

    if (!chat && d->type.len != 0
        && !(d->type.len == 6 && ngx_strncmp(d->type.data, "normal", 6) == 0))
    {
        /* groupchat, headline and error */
        return 0;
    }

    if (ngx_xmpp_carbons_has(d, "<private xmlns='" NGX_XMPP_NS_CARBONS "'")
        || ngx_xmpp_carbons_has(d, "<no-copy xmlns='urn:xmpp:hints'"))
    {
        return 0;
    }

    return chat
           || ngx_xmpp_carbons_has(d, "<body")
           || ngx_xmpp_carbons_has(d,
                  "xmlns='http://jabber.org/protocol/chatstates'")
           || ngx_xmpp_carbons_has(d, "xmlns='urn:xmpp:receipts'")
           || ngx_xmpp_carbons_has(d, "xmlns='urn:xmpp:chat-markers:0'");
}


/* the copy for one resource of bare (XEP-0280 examples 8 and 11) */
static void
ngx_xmpp_carbons_wrap(ngx_xmpp_wbuf_t *b, ngx_str_t *bare,
    ngx_xmpp_route_t *rt, ngx_xmpp_delivery_t *d, const char *dir)
{
    ngx_xmpp_wbuf_lit(b, "<message xmlns='" NGX_XMPP_NS_CLIENT "' from='");
    ngx_xmpp_wbuf_escs(b, bare);
    ngx_xmpp_wbuf_lit(b, "' to='");
    ngx_xmpp_wbuf_escs(b, bare);
    ngx_xmpp_wbuf_lit(b, "/");
    ngx_xmpp_wbuf_esc(b, rt->resource, rt->resource_len);

    if (d->type.len) {
        ngx_xmpp_wbuf_lit(b, "' type='");
        ngx_xmpp_wbuf_escs(b, &d->type);
    }

    ngx_xmpp_wbuf_lit(b, "'><");
    ngx_xmpp_wbuf_str(b, dir);
    ngx_xmpp_wbuf_lit(b, " xmlns='" NGX_XMPP_NS_CARBONS "'>"
                      "<forwarded xmlns='" NGX_XMPP_NS_FORWARD "'>");
    ngx_xmpp_wbuf_add(b, d->data, d->len);
    ngx_xmpp_wbuf_lit(b, "</forwarded></");
    ngx_xmpp_wbuf_str(b, dir);
    ngx_xmpp_wbuf_lit(b, "></message>");
}


/*
 * Copies for the carbons-enabled resources of bare except the one that
 * sent (skip) or those that got the original (got_best: the resources
 * of the highest non-negative priority, RFC 6121 8.5.2.1.1).  They are
 * all built before any is delivered: delivery looks routes up again.
 * The stanza's eligibility (*eligible: -1 not known yet) is scanned
 * for only once a resource would get a copy: most users have none.
 */
static void
ngx_xmpp_carbons_send(ngx_xmpp_conf_t *xcf, ngx_str_t *bare,
    ngx_str_t *skip, ngx_uint_t got_best, ngx_xmpp_delivery_t *d,
    const char *dir, ngx_int_t *eligible)
{
    u_char                    *p;
    ngx_int_t                  best;
    ngx_uint_t                 i, n, m;
    ngx_xmpp_route_t          *routes, rt;
    ngx_xmpp_carbon_target_t   t[NGX_XMPP_ROUTE_MAX];

    routes = ngx_xmpp_router_routes();
    n = ngx_xmpp_registry_lookup(xcf, bare, routes, NGX_XMPP_ROUTE_MAX);

    best = -1;

    for (i = 0; i < n; i++) {
        if (routes[i].available && routes[i].priority > best) {
            best = routes[i].priority;
        }
    }

    ngx_xmpp_carbons_buf.last = ngx_xmpp_carbons_buf.start;
    ngx_xmpp_carbons_buf.failed = 0;
    ngx_xmpp_carbons_buf.max = NGX_XMPP_ROUTE_MAX * (xcf->max_stanza_size
                                                     + 4096);

    for (i = 0, m = 0; i < n; i++) {
        if (!routes[i].carbons) {
            continue;
        }

        if (skip && routes[i].resource_len == skip->len
            && ngx_memcmp(routes[i].resource, skip->data, skip->len) == 0)
        {
            continue;
        }

        if (got_best && routes[i].available && routes[i].priority >= 0
            && routes[i].priority == best)
        {
            continue;
        }

        if (*eligible == -1) {
            *eligible = ngx_xmpp_carbons_eligible(d);
        }

        if (!*eligible) {
            return;
        }

        ngx_xmpp_carbons_wrap(&ngx_xmpp_carbons_buf, bare, &routes[i], d,
                              dir);

        t[m].pid = routes[i].pid;
        t[m].sid = routes[i].sid;
        t[m].end = ngx_xmpp_carbons_buf.last - ngx_xmpp_carbons_buf.start;
        m++;
    }

    if (m == 0 || ngx_xmpp_carbons_buf.failed) {
        return;
    }

    p = ngx_xmpp_carbons_buf.start;

    for (i = 0; i < m; i++) {
        ngx_memzero(&rt, offsetof(ngx_xmpp_route_t, resource));
        rt.pid = t[i].pid;
        rt.sid = t[i].sid;

        (void) ngx_xmpp_router_to_session(xcf, &rt, p,
                                          ngx_xmpp_carbons_buf.start
                                          + t[i].end - p);
        p = ngx_xmpp_carbons_buf.start + t[i].end;
    }
}


/*
 * Called by the router once a message has been handed on: delivered is
 * NGX_XMPP_CARBONS_FULL (to the full JID d->to), _BARE (to the
 * resources of the highest priority) or 0 (stored or bounced).  d->data
 * is the original with "from" stamped by the sender's server.
 */
void
ngx_xmpp_carbons_copy(ngx_xmpp_conf_t *xcf, ngx_xmpp_delivery_t *d,
    ngx_int_t delivered)
{
    u_char                buf[3 * NGX_XMPP_JID_PART_MAX + 3];
    ngx_int_t             eligible;
    ngx_str_t             from, bare, res;
    ngx_xmpp_jid_parts_t  parts;

    /*
     * No session anywhere has carbons enabled: no copy can go anywhere,
     * so neither the sender's nor the recipient's resources are looked
     * up (two registry lookups and a scan for "from" per message).
     */
    if (d->kind != NGX_XMPP_STANZA_MESSAGE
        || ngx_xmpp_registry_carbons(xcf) == 0)
    {
        return;
    }

    eligible = -1;

    if (ngx_xmpp_router_peek(d->data, d->len, "from", buf, sizeof(buf),
                             &from)
        != NGX_OK
        || ngx_xmpp_jid_split(from.data, from.len, &parts) != 0
        || parts.local == NULL)
    {
        return;
    }

    bare.data = from.data;
    bare.len = parts.local_len + 1 + parts.domain_len;
    res.data = (u_char *) parts.resource;
    res.len = parts.resource_len;

    if (bare.len == d->to.bare.len
        && ngx_strncmp(bare.data, d->to.bare.data, bare.len) == 0)
    {
        /* to oneself: every resource concerned gets the original */
        return;
    }

    if (parts.domain_len == xcf->domain.len
        && ngx_strncmp(parts.domain, xcf->domain.data, xcf->domain.len)
           == 0)
    {
        /* section 5: the sender's other resources */
        ngx_xmpp_carbons_send(xcf, &bare, &res, 0, d, "sent", &eligible);
    }

    if (!delivered) {
        return;
    }

    /* section 5: the recipient's resources that did not get it */
    if (delivered == NGX_XMPP_CARBONS_FULL) {
        ngx_xmpp_carbons_send(xcf, &d->to.bare, &d->to.resource, 0, d,
                              "received", &eligible);

    } else {
        ngx_xmpp_carbons_send(xcf, &d->to.bare, NULL, 1, d, "received",
                              &eligible);
    }
}
