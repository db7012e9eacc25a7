
/*
 * XEP-0163 section 4, what subscribers receive: the notification of a
 * publish, retraction or deletion (ngx_xmpp_pep.c's done handler) to
 * the owner's and the subscribers' available resources, on whatever
 * worker holds them, and the last items replayed to a session that
 * became available or to a new subscriber (4.3.2).  A session gets a
 * node's events only where its XEP-0115 caps ask for "<node>+notify"
 * (ngx_xmpp_caps.c); another worker's session is filtered there, where
 * its caps are known.
 */


#include "ngx_xmpp.h"
#include "ngx_xmpp_pep.h"


static ngx_int_t
ngx_xmpp_pep_str_cmp(const void *one, const void *two)
{
    ngx_str_t  *a = (ngx_str_t *) one;
    ngx_str_t  *b = (ngx_str_t *) two;
    ngx_int_t   rc;

    rc = ngx_memn2cmp(a->data, b->data, a->len, b->len);

    return rc;
}


/*
 * One notification to every available resource of a bare JID.  The
 * stanza is prefixed with the node's name for the receiving worker,
 * which delivers it where the session's caps ask for the node.
 */
static void
ngx_xmpp_pep_notify_bare(ngx_xmpp_conf_t *xcf, ngx_str_t *owner,
    ngx_str_t *bare, ngx_str_t *node, u_char *body, size_t len)
{
    u_char            *data, num[NGX_INT64_LEN];
    size_t             size;
    ngx_str_t          res;
    ngx_uint_t         i, n;
    ngx_xmpp_wbuf_t   *b;
    ngx_xmpp_route_t  *routes;

    static uint64_t    seq;

    routes = ngx_xmpp_router_routes();
    n = ngx_xmpp_registry_lookup(xcf, bare, routes, NGX_XMPP_ROUTE_MAX);

    for (i = 0; i < n; i++) {
        if (!routes[i].available) {
            continue;
        }

        res.data = routes[i].resource;
        res.len = routes[i].resource_len;

        b = ngx_xmpp_wbuf_scratch(len + node->len + 4096 + 6 * res.len);

        ngx_xmpp_pep_put16(b, node);
        ngx_xmpp_wbuf_lit(b, "<message xmlns='" NGX_XMPP_NS_CLIENT "'"
                          " type='headline' from='");
        ngx_xmpp_wbuf_escs(b, owner);
        ngx_xmpp_wbuf_lit(b, "' to='");
        ngx_xmpp_wbuf_escs(b, bare);
        ngx_xmpp_wbuf_lit(b, "/");
        ngx_xmpp_wbuf_escs(b, &res);
        ngx_xmpp_wbuf_lit(b, "' id='pep-");
        ngx_xmpp_wbuf_add(b, num, ngx_sprintf(num, "%uL", ++seq) - num);
        ngx_xmpp_wbuf_lit(b, "'>");
        ngx_xmpp_wbuf_add(b, body, len);
        ngx_xmpp_wbuf_lit(b, "</message>");

        if (b->failed) {
            return;
        }

        data = b->start;
        size = b->last - b->start;

        if (routes[i].pid == ngx_pid) {
            ngx_xmpp_pep_ipc(routes[i].sid, data, size);
            continue;
        }

        (void) ngx_xmpp_ipc_send(routes[i].pid, NGX_XMPP_IPC_PEP_NOTIFY,
                                 routes[i].sid, data, size);
    }
}


/*
 * NGX_XMPP_IPC_PEP_NOTIFY: a notification for a session of this
 * worker, which gets it if its caps ask for the node (XEP-0163 4.3.1).
 */
void
ngx_xmpp_pep_ipc(uint64_t sid, u_char *data, size_t len)
{
    u_char              *p, *end;
    ngx_str_t            node;
    ngx_xmpp_session_t  *s;

    p = data;
    end = data + len;

    if (ngx_xmpp_pep_get(&p, end, &node, 0) != NGX_OK || p == end) {
        return;
    }

    s = ngx_xmpp_session_find(sid);

    if (s == NULL) {
        /* XEP-0198: parked, or resumed elsewhere */
        ngx_xmpp_sm_pep(sid, &node, p, end - p);
        return;
    }

    if (!s->bound) {
        /* XEP-0198: being resumed; its interests come with its state */
        (void) ngx_xmpp_sm_hold_ipc(s, NGX_XMPP_IPC_PEP_NOTIFY, data, len);
        return;
    }

    if (!s->available || !ngx_xmpp_caps_notify(s, &node)) {
        return;
    }

    /*
     * The router's last step, as for any stanza from elsewhere: a
     * notification from a blocked JID is dropped (XEP-0191 3.5), and
     * while a resumed session reads its blocklist the notification
     * waits in the same queue as the messages.  One that an old
     * session forwarded (ngx_xmpp_sm_deliver(): a plain delivery)
     * waits there too, so a later one of the same node, routed here
     * directly, must not overtake it (RFC 6120 10.1).
     */
    (void) ngx_xmpp_router_inbound(s, p, end - p);
}


/*
 * The notification of one node to every available resource of the
 * owner and of each subscriber (subs: u16 len + bare JID) and, unless
 * the node is a whitelist one, of the owner's shared directory
 * contacts (subscribed both ways, issue 6.3).  body is the <event/>.
 */
void
ngx_xmpp_pep_notify(ngx_xmpp_conf_t *xcf, ngx_str_t *owner, ngx_str_t *node,
    ngx_xmpp_wbuf_t *subs, ngx_uint_t whitelist, u_char *body, size_t len)
{
    u_char              *p, *end;
    ngx_str_t            jid, *j, *js;
    ngx_uint_t           i;
    ngx_pool_t          *pool;
    ngx_array_t          jids, shared;
    ngx_xmpp_contact_t  *c;

    pool = ngx_create_pool(4096, ngx_cycle->log);
    if (pool == NULL) {
        return;
    }

    if (ngx_array_init(&jids, pool, 16, sizeof(ngx_str_t)) != NGX_OK
        || ngx_array_init(&shared, pool, 16, sizeof(ngx_xmpp_contact_t))
           != NGX_OK)
    {
        goto done;
    }

    j = ngx_array_push(&jids);
    if (j == NULL) {
        goto done;
    }

    *j = *owner;

    if (!whitelist) {
        p = subs ? subs->start : NULL;
        end = subs ? subs->last : NULL;

        while (ngx_xmpp_pep_get(&p, end, &jid, 0) == NGX_OK) {
            j = ngx_array_push(&jids);
            if (j == NULL) {
                goto done;
            }

            *j = jid;
        }

        if (ngx_xmpp_dir_shared_contacts(owner, pool, &shared) == NGX_OK) {
            c = shared.elts;

            for (i = 0; i < shared.nelts; i++) {
                j = ngx_array_push(&jids);
                if (j == NULL) {
                    goto done;
                }

                *j = c[i].jid;
            }
        }
    }

    js = jids.elts;
    ngx_sort(js, jids.nelts, sizeof(ngx_str_t), ngx_xmpp_pep_str_cmp);

    for (i = 0; i < jids.nelts; i++) {
        if (i > 0 && ngx_xmpp_pep_str_cmp(&js[i - 1], &js[i]) == 0) {
            continue;
        }

        ngx_xmpp_pep_notify_bare(xcf, owner, &js[i], node, body, len);
    }

done:

    ngx_destroy_pool(pool);
}


/* <event/> of a publish, a retraction or a deletion (XEP-0060 7.1.2) */
ngx_int_t
ngx_xmpp_pep_event(ngx_xmpp_wbuf_t *b, ngx_xmpp_pep_ctx_t *ctx)
{
    ngx_xmpp_wbuf_lit(b, "<event xmlns='" NGX_XMPP_NS_PUBSUB_EVENT "'>");

    if (ctx->op == NGX_XMPP_PEP_DELETE) {
        ngx_xmpp_wbuf_lit(b, "<delete node='");
        ngx_xmpp_wbuf_escs(b, &ctx->node);
        ngx_xmpp_wbuf_lit(b, "'/></event>");
        return b->failed ? NGX_ERROR : NGX_OK;
    }

    ngx_xmpp_wbuf_lit(b, "<items node='");
    ngx_xmpp_wbuf_escs(b, &ctx->node);

    if (ctx->op == NGX_XMPP_PEP_RETRACT) {
        ngx_xmpp_wbuf_lit(b, "'><retract id='");
        ngx_xmpp_wbuf_escs(b, &ctx->item_id);
        ngx_xmpp_wbuf_lit(b, "'/></items></event>");
        return b->failed ? NGX_ERROR : NGX_OK;
    }

    ngx_xmpp_wbuf_lit(b, "'><item id='");
    ngx_xmpp_wbuf_escs(b, &ctx->item_id);
    ngx_xmpp_wbuf_lit(b, "'>");
    ngx_xmpp_wbuf_nstr(b, &ctx->payload);
    ngx_xmpp_wbuf_lit(b, "</item></items></event>");

    return b->failed ? NGX_ERROR : NGX_OK;
}


/*
 * The last items found for a session that became available: those of
 * the nodes its caps ask for (XEP-0163 4.3.2), one message each.
 */
void
ngx_xmpp_pep_send_last(ngx_xmpp_session_t *s, ngx_xmpp_pep_ctx_t *ctx)
{
    u_char           *p, *end;
    ngx_str_t         owner, node, id, payload;
    ngx_xmpp_wbuf_t  *b;

    p = ctx->out.start;
    end = ctx->out.last;

    while (ngx_xmpp_pep_get(&p, end, &owner, 0) == NGX_OK
           && ngx_xmpp_pep_get(&p, end, &node, 0) == NGX_OK
           && ngx_xmpp_pep_get(&p, end, &id, 0) == NGX_OK
           && ngx_xmpp_pep_get(&p, end, &payload, 1) == NGX_OK)
    {
        if (!ngx_xmpp_caps_notify(s, &node)) {
            continue;
        }

        b = ngx_xmpp_wbuf_scratch(payload.len + 6 * (owner.len + node.len
                                  + id.len + s->jid.full.len) + 1024);

        ngx_xmpp_wbuf_lit(b, "<message xmlns='" NGX_XMPP_NS_CLIENT "'"
                          " type='headline' from='");
        ngx_xmpp_wbuf_escs(b, &owner);
        ngx_xmpp_wbuf_lit(b, "' to='");
        ngx_xmpp_wbuf_escs(b, &s->jid.full);
        ngx_xmpp_wbuf_lit(b, "'><event xmlns='" NGX_XMPP_NS_PUBSUB_EVENT
                          "'><items node='");
        ngx_xmpp_wbuf_escs(b, &node);
        ngx_xmpp_wbuf_lit(b, "'><item id='");
        ngx_xmpp_wbuf_escs(b, &id);
        ngx_xmpp_wbuf_lit(b, "'>");
        ngx_xmpp_wbuf_nstr(b, &payload);
        ngx_xmpp_wbuf_lit(b, "</item></items></event></message>");

        if (ngx_xmpp_session_send_wbuf(s, b) != NGX_OK) {
            return;
        }
    }
}


/*
 * The last items of one publisher for a new subscriber: as
 * notifications, which reach its available resources whose caps ask
 * for the node, on whatever worker (ngx_xmpp_pep_ipc).
 */
void
ngx_xmpp_pep_send_last_of(ngx_xmpp_conf_t *xcf, ngx_xmpp_pep_ctx_t *ctx)
{
    u_char           *p, *end;
    ngx_str_t         owner;
    ngx_xmpp_wbuf_t   ev;

    p = ctx->out.start;
    end = ctx->out.last;

    ngx_memzero(&ev, sizeof(ngx_xmpp_wbuf_t));
    ev.max = ctx->out.max + 4096;

    while (ngx_xmpp_pep_get(&p, end, &owner, 0) == NGX_OK
           && ngx_xmpp_pep_get(&p, end, &ctx->node, 0) == NGX_OK
           && ngx_xmpp_pep_get(&p, end, &ctx->item_id, 0) == NGX_OK
           && ngx_xmpp_pep_get(&p, end, &ctx->payload, 1) == NGX_OK)
    {
        ev.last = ev.start;

        if (ngx_xmpp_pep_event(&ev, ctx) != NGX_OK) {
            break;
        }

        ngx_xmpp_pep_notify_bare(xcf, &owner, &ctx->requester, &ctx->node,
                                 ev.start, ev.last - ev.start);
    }

    ngx_xmpp_wbuf_free(&ev);
}
