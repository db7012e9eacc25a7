
/*
 * XEP-0191 and presence: what a committed change of the blocklist does
 * to the user's presence (ngx_xmpp_blocking.c stores the change and
 * tells the sessions).  It runs in the worker that committed it:
 *
 *   - block (section 3.3): "the user's server MUST send unavailable
 *     presence information to the contact (but only if the contact is
 *     allowed to receive presence notifications from the user ...)":
 *     the contacts with a "from" subscription (RFC 6121 4.2.2) and the
 *     shared directory contacts hear "unavailable" from each available
 *     resource of the user; each session sends it to the newly blocked
 *     targets of its directed presence (RFC 6121 4.6.3).  A blocked JID
 *     that never had the presence gets nothing.
 *   - unblock (section 3.4): the user's current presence goes to the
 *     unblocked "from" contacts, and the "to" contacts are probed
 *     (RFC 6121 4.3.2, 4.2.2), once every worker that holds a session
 *     of the user has applied the change: a contact's answer reaches
 *     all of the user's resources and must not meet a stale copy of
 *     the list.  The change went to each worker before a SYNC, and the
 *     channel keeps the order, so a worker's SYNCED means it has it.
 *
 * Items match as section 4 of the XEP says (XEP-0016 2.1): a bare JID
 * or a domain covers the contact, a full JID (or domain/resource) one
 * resource of it, and only that resource is concerned.
 */


#include "ngx_xmpp.h"


#define NGX_XMPP_BLOCKPRES_WAIT    2000      /* ms for the SYNCED answers */
#define NGX_XMPP_BLOCKPRES_JID     (3 * NGX_XMPP_JID_PART_MAX + 3)


typedef struct {
    ngx_queue_t                  queue;
    ngx_event_t                  ev;
    uint64_t                     token;
    ngx_uint_t                   waiting;
    ngx_xmpp_blocking_change_t   ch;
    u_char                       data[1];
} ngx_xmpp_blockpres_sync_t;


static ngx_queue_t  ngx_xmpp_blockpres_syncs;
static uint64_t     ngx_xmpp_blockpres_token;


/*
 * Which JID of the contact c (a bare JID) the item covers: 1, c itself
 * (the item is c or its domain); 2, one resource of c (the item is a
 * full JID of c, or domain/resource), put in t (buf); 0, none.
 */
static ngx_uint_t
ngx_xmpp_blockpres_target(u_char *item, ngx_str_t *c, u_char *buf,
    size_t size, ngx_str_t *t)
{
    u_char                *p;
    size_t                 ilen;
    ngx_xmpp_jid_parts_t   ip, cp;

    ilen = ngx_strlen(item);

    if (ngx_xmpp_blocking_list_blocks(item, item + ilen + 1, 1, c)) {
        *t = *c;
        return 1;
    }

    if (ngx_xmpp_jid_split(item, ilen, &ip) != 0 || ip.resource_len == 0
        || ngx_xmpp_jid_split(c->data, c->len, &cp) != 0)
    {
        return 0;
    }

    if (ip.local) {
        if (ip.local_len + 1 + ip.domain_len != c->len
            || ngx_memcmp(item, c->data, c->len) != 0)
        {
            return 0;
        }

        t->data = item;
        t->len = ilen;
        return 2;
    }

    if (ip.domain_len != cp.domain_len
        || ngx_memcmp(ip.domain, cp.domain, cp.domain_len) != 0
        || c->len + 1 + ip.resource_len > size)
    {
        return 0;
    }

    p = ngx_cpymem(buf, c->data, c->len);
    *p++ = '/';
    p = ngx_cpymem(p, ip.resource, ip.resource_len);

    t->data = buf;
    t->len = p - buf;

    return 2;
}


/* a presence stanza to a bare or full JID of the local domain */
static void
ngx_xmpp_blockpres_route(ngx_xmpp_conf_t *xcf, ngx_pool_t *pool,
    ngx_str_t *to, u_char *data, size_t len)
{
    ngx_xmpp_jid_t  jid;

    if (ngx_xmpp_jid_parse(pool, to, &jid) != NGX_OK
        || jid.local.len == 0
        || jid.domain.len != xcf->domain.len
        || ngx_strncmp(jid.domain.data, xcf->domain.data, jid.domain.len)
           != 0)
    {
        return;
    }

    if (jid.resource.len) {
        (void) ngx_xmpp_router_to_full_jid(xcf, &jid, data, len);

    } else {
        (void) ngx_xmpp_router_to_bare(xcf, &jid.bare,
                                       NGX_XMPP_STANZA_PRESENCE, NULL, data,
                                       len);
    }
}


/* "unavailable" from the full JID "from" to "to" */
static void
ngx_xmpp_blockpres_unavailable(ngx_xmpp_conf_t *xcf, ngx_pool_t *pool,
    ngx_str_t *from, ngx_str_t *to)
{
    ngx_xmpp_wbuf_t  b;

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = 4096 + 6 * (from->len + to->len);

    ngx_xmpp_wbuf_lit(&b, "<presence xmlns='" NGX_XMPP_NS_CLIENT
                      "' type='unavailable' from='");
    ngx_xmpp_wbuf_escs(&b, from);
    ngx_xmpp_wbuf_lit(&b, "' to='");
    ngx_xmpp_wbuf_escs(&b, to);
    ngx_xmpp_wbuf_lit(&b, "'/>");

    if (!b.failed) {
        ngx_xmpp_blockpres_route(xcf, pool, to, b.start, b.last - b.start);
    }

    ngx_xmpp_wbuf_free(&b);
}


/* section 3.3: each available resource of the owner goes offline for t */
static void
ngx_xmpp_blockpres_gone_for(ngx_xmpp_conf_t *xcf, ngx_pool_t *pool,
    ngx_str_t *owner, ngx_str_t *t)
{
    u_char            *p;
    ngx_str_t          from;
    ngx_uint_t         i, n, m;
    ngx_xmpp_route_t  *routes;
    u_char            *full[NGX_XMPP_ROUTE_MAX];
    size_t             flen[NGX_XMPP_ROUTE_MAX];

    routes = ngx_xmpp_router_routes();
    n = ngx_xmpp_registry_lookup(xcf, owner, routes, NGX_XMPP_ROUTE_MAX);

    /* copied out: delivery looks routes up again */
    for (i = 0, m = 0; i < n; i++) {
        if (!routes[i].available) {
            continue;
        }

        p = ngx_pnalloc(pool, owner->len + 1 + routes[i].resource_len);
        if (p == NULL) {
            return;
        }

        full[m] = p;
        p = ngx_cpymem(p, owner->data, owner->len);
        *p++ = '/';
        p = ngx_cpymem(p, routes[i].resource, routes[i].resource_len);
        flen[m] = p - full[m];
        m++;
    }

    for (i = 0; i < m; i++) {
        from.data = full[i];
        from.len = flen[i];
        ngx_xmpp_blockpres_unavailable(xcf, pool, &from, t);
    }
}


/*
 * One contact (flags: 1 "to", 2 "from") against the items of a change:
 * a block sends "unavailable" to what an item covers of a "from"
 * contact; an unblock (back) gives it the presence and probes a "to"
 * contact, unless what is left of the list still blocks it.
 */
static void
ngx_xmpp_blockpres_contact(ngx_xmpp_conf_t *xcf, ngx_pool_t *pool,
    ngx_xmpp_blocking_change_t *ch, ngx_str_t *c, ngx_uint_t flags)
{
    u_char      *item, buf[NGX_XMPP_BLOCKPRES_JID];
    ngx_str_t    t;
    ngx_uint_t   i, probed;

    probed = 0;
    item = ch->items.start;

    for (i = 0; i < ch->items.n && item < ch->items.last;
         i++, item += ngx_strlen(item) + 1)
    {
        if (ngx_xmpp_blockpres_target(item, c, buf, sizeof(buf), &t) == 0) {
            continue;
        }

        if (ch->op == 'b') {
            if (flags & 2) {
                ngx_xmpp_blockpres_gone_for(xcf, pool, &ch->owner, &t);
            }

            continue;
        }

        if (ngx_xmpp_blocking_list_blocks(ch->left.start, ch->left.last,
                                          ch->left.n, &t))
        {
            continue;
        }

        /* RFC 6121 4.3.2: each available resource answers, as to a probe */
        if (flags & 2) {
            (void) ngx_xmpp_presence_probe(xcf, &ch->owner, &t);
        }

        /* 4.2.2: the contact's resources tell the user's theirs */
        if ((flags & 1) && !probed) {
            (void) ngx_xmpp_presence_probe(xcf, c, &ch->owner);
            probed = 1;
        }
    }
}


static void
ngx_xmpp_blockpres_run(ngx_xmpp_conf_t *xcf, ngx_xmpp_blocking_change_t *ch)
{
    u_char              *p, *end, f;
    ngx_str_t            contact;
    ngx_uint_t           i;
    ngx_pool_t          *pool;
    ngx_array_t          shared;
    ngx_xmpp_contact_t  *c;

    pool = ngx_create_pool(4096, ngx_cycle->log);
    if (pool == NULL) {
        return;
    }

    p = ch->contacts;
    end = ch->contacts_end;

    while (p && end - p >= 2) {
        f = *p++;
        contact.data = p;
        contact.len = ngx_strlen(p);
        p += contact.len + 1;

        ngx_xmpp_blockpres_contact(xcf, pool, ch, &contact, f);
    }

    /* shared directory contacts are subscribed both ways (issue 6.3) */
    if (ngx_array_init(&shared, pool, 16, sizeof(ngx_xmpp_contact_t))
        == NGX_OK
        && ngx_xmpp_dir_shared_contacts(&ch->owner, pool, &shared) == NGX_OK)
    {
        c = shared.elts;

        for (i = 0; i < shared.nelts; i++) {
            ngx_xmpp_blockpres_contact(xcf, pool, ch, &c[i].jid, 3);
        }
    }

    ngx_destroy_pool(pool);
}


static void
ngx_xmpp_blockpres_sync_done(ngx_xmpp_blockpres_sync_t *sy)
{
    ngx_xmpp_conf_t  *xcf;

    if (sy->ev.timer_set) {
        ngx_del_timer(&sy->ev);
    }

    ngx_queue_remove(&sy->queue);

    xcf = ngx_xmpp_cycle_conf((ngx_cycle_t *) ngx_cycle);
    ngx_xmpp_blockpres_run(xcf, &sy->ch);

    ngx_free(sy);
}


static void
ngx_xmpp_blockpres_timeout(ngx_event_t *ev)
{
    ngx_xmpp_blockpres_sync_t  *sy = ev->data;

    /* a worker that does not answer must not withhold the presence */
    ngx_log_error(NGX_LOG_INFO, ev->log, 0,
                  "xmpp: unblock of %V: %ui workers did not confirm",
                  &sy->ch.owner, sy->waiting);

    ngx_xmpp_blockpres_sync_done(sy);
}


static u_char *
ngx_xmpp_blockpres_copy(u_char *p, u_char **start, u_char **last)
{
    size_t  len;

    len = *start ? (size_t) (*last - *start) : 0;

    if (len) {
        ngx_memcpy(p, *start, len);
    }

    *start = p;
    *last = p + len;

    return p + len;
}


/*
 * The change ch was committed and told to the sessions; pids are the
 * other workers it was sent to.  See the comment at the top.
 */
void
ngx_xmpp_blockpres_changed(ngx_xmpp_conf_t *xcf,
    ngx_xmpp_blocking_change_t *ch, ngx_pid_t *pids, ngx_uint_t npids)
{
    u_char                     *p;
    size_t                      size;
    ngx_uint_t                  i;
    ngx_xmpp_blockpres_sync_t  *sy;

    if (ch->op == 'b' || npids == 0) {
        ngx_xmpp_blockpres_run(xcf, ch);
        return;
    }

    size = ch->owner.len + (ch->items.last - ch->items.start)
           + (ch->contacts_end - ch->contacts)
           + (ch->left.last - ch->left.start);

    sy = ngx_alloc(sizeof(ngx_xmpp_blockpres_sync_t) + size, ngx_cycle->log);
    if (sy == NULL) {
        ngx_xmpp_blockpres_run(xcf, ch);
        return;
    }

    ngx_memzero(sy, sizeof(ngx_xmpp_blockpres_sync_t));
    sy->ch = *ch;

    p = ngx_cpymem(sy->data, ch->owner.data, ch->owner.len);
    sy->ch.owner.data = sy->data;
    p = ngx_xmpp_blockpres_copy(p, &sy->ch.items.start, &sy->ch.items.last);
    p = ngx_xmpp_blockpres_copy(p, &sy->ch.contacts, &sy->ch.contacts_end);
    (void) ngx_xmpp_blockpres_copy(p, &sy->ch.left.start, &sy->ch.left.last);

    if (ngx_xmpp_blockpres_syncs.next == NULL) {
        ngx_queue_init(&ngx_xmpp_blockpres_syncs);
    }

    ngx_queue_insert_tail(&ngx_xmpp_blockpres_syncs, &sy->queue);

    sy->token = ++ngx_xmpp_blockpres_token;
    sy->ev.handler = ngx_xmpp_blockpres_timeout;
    sy->ev.data = sy;
    sy->ev.log = ngx_cycle->log;
    sy->ev.cancelable = 1;

    for (i = 0; i < npids; i++) {
        /* no payload; a pointer all the same for memcpy() when queued */
        if (ngx_xmpp_ipc_send(pids[i], NGX_XMPP_IPC_BLOCKING_SYNC, sy->token,
                              (u_char *) "", 0)
            == NGX_OK)
        {
            sy->waiting++;
        }
    }

    if (sy->waiting == 0) {
        ngx_xmpp_blockpres_sync_done(sy);
        return;
    }

    ngx_add_timer(&sy->ev, NGX_XMPP_BLOCKPRES_WAIT);
}


/* BLOCKING_SYNC: what came before it is applied; SYNCED: one answer */
void
ngx_xmpp_blockpres_ipc(ngx_uint_t cmd, ngx_pid_t from, uint64_t sid)
{
    ngx_queue_t                *q;
    ngx_xmpp_blockpres_sync_t  *sy;

    if (cmd == NGX_XMPP_IPC_BLOCKING_SYNC) {
        (void) ngx_xmpp_ipc_send(from, NGX_XMPP_IPC_BLOCKING_SYNCED, sid,
                                 (u_char *) "", 0);
        return;
    }

    if (ngx_xmpp_blockpres_syncs.next == NULL) {
        return;
    }

    for (q = ngx_queue_head(&ngx_xmpp_blockpres_syncs);
         q != ngx_queue_sentinel(&ngx_xmpp_blockpres_syncs);
         q = ngx_queue_next(q))
    {
        sy = ngx_queue_data(q, ngx_xmpp_blockpres_sync_t, queue);

        if (sy->token == sid) {
            if (--sy->waiting == 0) {
                ngx_xmpp_blockpres_sync_done(sy);
            }

            return;
        }
    }
}


/*
 * Section 3.3 for one session (live or parked): a newly blocked target
 * of its directed presence (RFC 6121 4.6) sees it go offline and is
 * forgotten; a target that is a bare JID of which one resource is now
 * blocked: that resource only.  Rooms are left alone (XEP-0045 has
 * its own way to leave).
 */
void
ngx_xmpp_blockpres_directed(ngx_xmpp_session_t *s, u_char *jids, size_t len)
{
    u_char      *q, *last, buf[NGX_XMPP_BLOCKPRES_JID];
    ngx_str_t    t, *d;
    ngx_uint_t   i, k;
    ngx_pool_t  *pool;

    if (s->ndirected == 0) {
        return;
    }

    pool = ngx_create_pool(1024, ngx_cycle->log);
    if (pool == NULL) {
        return;
    }

    last = jids + len;

    for (i = 0; i < s->ndirected; /* void */) {
        d = &s->directed[i];
        k = 0;

        for (q = jids; q < last; q += ngx_strlen(q) + 1) {
            if (ngx_xmpp_blocking_list_blocks(q, q + ngx_strlen(q) + 1, 1,
                                              d))
            {
                k = 1;
                break;
            }

            if (ngx_strlchr(d->data, d->data + d->len, '/') == NULL
                && ngx_xmpp_blockpres_target(q, d, buf, sizeof(buf), &t)
                   == 2)
            {
                ngx_xmpp_blockpres_unavailable(s->conf, pool, &s->jid.full,
                                               &t);
            }
        }

        if (!k) {
            i++;
            continue;
        }

        ngx_xmpp_blockpres_unavailable(s->conf, pool, &s->jid.full, d);

        ngx_free(d->data);
        s->directed[i] = s->directed[--s->ndirected];
    }

    ngx_destroy_pool(pool);
}


void
ngx_xmpp_blockpres_exit_worker(void)
{
    ngx_queue_t                *q;
    ngx_xmpp_blockpres_sync_t  *sy;

    if (ngx_xmpp_blockpres_syncs.next == NULL) {
        return;
    }

    while (!ngx_queue_empty(&ngx_xmpp_blockpres_syncs)) {
        q = ngx_queue_head(&ngx_xmpp_blockpres_syncs);
        sy = ngx_queue_data(q, ngx_xmpp_blockpres_sync_t, queue);

        if (sy->ev.timer_set) {
            ngx_del_timer(&sy->ev);
        }

        ngx_queue_remove(q);
        ngx_free(sy);
    }
}
