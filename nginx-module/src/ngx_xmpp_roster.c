
/*
 * Rosters and presence subscriptions (RFC 6121 sections 2 and 3), kept
 * in MariaDB (table roster_item, audit/schema/002_chat.sql).
 *
 * Every operation is one ngx_xmpp_db request: the SQL runs in a pool
 * thread, as one transaction that changes both sides of a subscription
 * at once (both users are local: the owner's item of the contact and
 * the contact's item of the owner), and the results go out on the
 * event loop afterwards: the IQ result, roster pushes to the interested
 * resources of both users (through the router, so on any worker), the
 * presence stanza for the contact, and the presence that a change of
 * subscription implies (RFC 6121 3.1.5, 3.2.2, 3.3.3).  A request never
 * holds a session pointer: done() looks the session up by id, which
 * finds nothing once it has ended.
 *
 * This file is the event-loop half; the SQL and the subscription state
 * machine run in pool threads, in ngx_xmpp_rosterdb.c.
 *
 * The subscription state of Appendix A is four flags per row: sub_to
 * and sub_from (the subscription), ask_out (pending out) and pending_in.
 * pending_in survives offline periods because it is stored: the request
 * is delivered again at the contact's next initial presence (3.1.3).
 */


#include "ngx_xmpp_roster.h"


static void ngx_xmpp_roster_done(ngx_xmpp_db_req_t *r);
static void ngx_xmpp_roster_cleanup(ngx_xmpp_db_req_t *r);
static void ngx_xmpp_roster_presence_done(ngx_xmpp_db_req_t *r);
static ngx_str_t *ngx_xmpp_roster_shared_jids(ngx_pool_t *pool,
    ngx_str_t *owner, ngx_uint_t *n);


static ngx_inline ngx_uint_t
ngx_xmpp_roster_str_is(ngx_str_t *s, const char *lit)
{
    size_t  len;

    len = ngx_strlen(lit);

    return s->len == len && ngx_strncmp(s->data, lit, len) == 0;
}


/*
 * A request with copies of the given strings (any may be NULL) in one
 * heap block, since the stanza pool is gone before done() runs.
 */
static ngx_xmpp_db_req_t *
ngx_xmpp_roster_req(ngx_xmpp_conf_t *xcf, ngx_log_t *log, ngx_uint_t op,
    ngx_str_t **in, ngx_uint_t nin)
{
    size_t                  size;
    u_char                 *p;
    ngx_str_t              *dst[8];
    ngx_uint_t              i;
    ngx_xmpp_db_req_t      *r;
    ngx_xmpp_roster_ctx_t  *ctx;

    r = ngx_xmpp_db_create(xcf, sizeof(ngx_xmpp_roster_ctx_t), log);
    if (r == NULL) {
        return NULL;
    }

    ctx = r->ctx;
    ctx->op = op;
    ctx->max_items = xcf->roster_max_items;
    ctx->out.max = NGX_XMPP_ROSTER_OUT_MAX;
    ctx->jids.max = NGX_XMPP_ROSTER_OUT_MAX;

    dst[0] = &ctx->owner;
    dst[1] = &ctx->contact;
    dst[2] = &ctx->name;
    dst[3] = &ctx->groups;
    dst[4] = &ctx->id;
    dst[5] = &ctx->reply_from;
    dst[6] = &ctx->ver;
    dst[7] = &ctx->stanza;

    size = 0;

    for (i = 0; i < nin; i++) {
        if (in[i]) {
            size += in[i]->len + 1;
        }
    }

    r->run = ngx_xmpp_roster_run;
    r->done = ngx_xmpp_roster_done;
    r->cleanup = ngx_xmpp_roster_cleanup;

    /*
     * A presence broadcast (twice per session: available, unavailable)
     * and a probe only read: no COMMIT round trip (ngx_xmpp_db.c).  A
     * roster get stays a transaction: its version and its items must
     * come from one snapshot (RFC 6121 2.6).
     */
    r->readonly = (op == NGX_XMPP_ROSTER_OP_PRESENCE
                   || op == NGX_XMPP_ROSTER_OP_PROBE);

    ctx->mem = ngx_alloc(size + 1, log);
    if (ctx->mem == NULL) {
        ngx_xmpp_db_destroy(r);
        return NULL;
    }

    p = ctx->mem;

    for (i = 0; i < nin; i++) {
        if (in[i] == NULL) {
            continue;
        }

        dst[i]->data = p;
        dst[i]->len = in[i]->len;

        /* an empty attribute value may have NULL data */
        if (in[i]->len) {
            p = ngx_cpymem(p, in[i]->data, in[i]->len);
        }

        *p++ = '\0';
    }

    return r;
}


static void
ngx_xmpp_roster_cleanup(ngx_xmpp_db_req_t *r)
{
    ngx_xmpp_roster_ctx_t  *ctx = r->ctx;

    ngx_free(ctx->mem);
    ngx_free(ctx->oi.name.data);
    ngx_free(ctx->oi.groups.data);
    ngx_free(ctx->ci.name.data);
    ngx_free(ctx->ci.groups.data);
    ngx_xmpp_wbuf_free(&ctx->out);
    ngx_xmpp_wbuf_free(&ctx->jids);
}


/* event loop: what the results mean to the users */

/*
 * RFC 6121 2.1.6: a roster push to every interested resource of owner,
 * on whatever worker each one is.
 */
static void
ngx_xmpp_roster_push(ngx_xmpp_conf_t *xcf, ngx_str_t *owner, ngx_str_t *jid,
    ngx_xmpp_ritem_t *it, ngx_uint_t removed)
{
    u_char            *item;
    size_t             item_len;
    ngx_uint_t         i, n;
    ngx_xmpp_wbuf_t    ib, b;
    ngx_xmpp_route_t  *routes;

    ngx_memzero(&ib, sizeof(ngx_xmpp_wbuf_t));
    ib.max = NGX_XMPP_ROSTER_OUT_MAX;
    ngx_xmpp_roster_item_xml(&ib, jid, it, removed);

    if (ib.failed) {
        ngx_xmpp_wbuf_free(&ib);
        return;
    }

    item = ib.start;
    item_len = ib.last - ib.start;

    routes = ngx_xmpp_router_routes();
    n = ngx_xmpp_registry_lookup(xcf, owner, routes, NGX_XMPP_ROUTE_MAX);

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = NGX_XMPP_ROSTER_OUT_MAX;

    for (i = 0; i < n; i++) {
        if (!routes[i].interested) {
            continue;
        }

        b.last = b.start;
        ngx_xmpp_wbuf_lit(&b, "<iq xmlns='" NGX_XMPP_NS_CLIENT "' type='set'"
                          " id='push");
        b.last = ngx_sprintf(b.last, "%uL", it->ver);
        ngx_xmpp_wbuf_lit(&b, "' to='");
        ngx_xmpp_wbuf_escs(&b, owner);
        ngx_xmpp_wbuf_lit(&b, "/");
        ngx_xmpp_wbuf_esc(&b, routes[i].resource, routes[i].resource_len);
        ngx_xmpp_wbuf_lit(&b, "'><query xmlns='" NGX_XMPP_NS_ROSTER
                          "' ver='");
        if (ngx_xmpp_wbuf_reserve(&b, NGX_INT64_LEN) == NGX_OK) {
            b.last = ngx_sprintf(b.last, "%uL", it->ver);
        }
        ngx_xmpp_wbuf_lit(&b, "'>");
        ngx_xmpp_wbuf_add(&b, item, item_len);
        ngx_xmpp_wbuf_lit(&b, "</query></iq>");

        if (b.failed) {
            break;
        }

        (void) ngx_xmpp_router_to_session(xcf, &routes[i], b.start,
                                          b.last - b.start);
    }

    ngx_xmpp_wbuf_free(&b);
    ngx_xmpp_wbuf_free(&ib);
}


static void
ngx_xmpp_roster_iq_reply(ngx_xmpp_session_t *s, ngx_xmpp_roster_ctx_t *ctx,
    const char *condition, ngx_str_t *payload)
{
    ngx_xmpp_wbuf_t  b;

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = NGX_XMPP_ROSTER_OUT_MAX;

    ngx_xmpp_wbuf_lit(&b, "<iq xmlns='" NGX_XMPP_NS_CLIENT "' type='");
    ngx_xmpp_wbuf_str(&b, condition ? "error" : "result");
    ngx_xmpp_wbuf_lit(&b, "' from='");
    ngx_xmpp_wbuf_escs(&b, &ctx->reply_from);
    ngx_xmpp_wbuf_lit(&b, "' to='");
    ngx_xmpp_wbuf_escs(&b, &s->jid.full);
    ngx_xmpp_wbuf_lit(&b, "' id='");
    ngx_xmpp_wbuf_escs(&b, &ctx->id);

    if (condition) {
        ngx_xmpp_wbuf_lit(&b, "'><error type='");
        ngx_xmpp_wbuf_str(&b, ngx_strcmp(condition, "internal-server-error")
                              == 0 ? "wait" : "cancel");
        ngx_xmpp_wbuf_lit(&b, "'><");
        ngx_xmpp_wbuf_str(&b, condition);
        ngx_xmpp_wbuf_lit(&b, " xmlns='" NGX_XMPP_NS_STANZAS
                          "'/></error></iq>");

    } else if (payload) {
        ngx_xmpp_wbuf_lit(&b, "'>");
        ngx_xmpp_wbuf_nstr(&b, payload);
        ngx_xmpp_wbuf_lit(&b, "</iq>");

    } else {
        ngx_xmpp_wbuf_lit(&b, "'/>");
    }

    (void) ngx_xmpp_session_send_wbuf(s, &b);
    ngx_xmpp_wbuf_free(&b);
}


/* the JIDs of a list made by ngx_xmpp_roster_jid_add(), into an array */
static ngx_str_t *
ngx_xmpp_roster_jids(ngx_pool_t *pool, ngx_xmpp_wbuf_t *b, ngx_uint_t *n)
{
    u_char     *p;
    uint16_t    len;
    ngx_uint_t  i;
    ngx_str_t  *jids;

    *n = 0;

    for (p = b->start; p && b->last - p >= (ssize_t) sizeof(uint16_t);
         p += len)
    {
        ngx_memcpy(&len, p, sizeof(uint16_t));
        p += sizeof(uint16_t);
        (*n)++;
    }

    jids = ngx_palloc(pool, (*n + 1) * sizeof(ngx_str_t));
    if (jids == NULL) {
        return NULL;
    }

    for (i = 0, p = b->start; i < *n; i++, p += len) {
        ngx_memcpy(&len, p, sizeof(uint16_t));
        p += sizeof(uint16_t);
        jids[i].data = p;
        jids[i].len = len;
    }

    return jids;
}


/* bytewise order, as utf8mb4_bin sorts */
static ngx_int_t
ngx_xmpp_roster_jid_cmp(ngx_str_t *a, ngx_str_t *b)
{
    ngx_int_t  rc;

    rc = ngx_memn2cmp(a->data, b->data, a->len, b->len);

    return rc;
}


static ngx_uint_t
ngx_xmpp_roster_jid_in(ngx_str_t *jids, ngx_uint_t n, ngx_str_t *jid)
{
    ngx_int_t   rc;
    ngx_uint_t  lo, hi, mid;

    lo = 0;
    hi = n;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        rc = ngx_xmpp_roster_jid_cmp(&jids[mid], jid);

        if (rc == 0) {
            return 1;
        }

        if (rc < 0) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    return 0;
}


/*
 * The <item/> of the shared directory contact c[i] (issue 6 item 3):
 * subscription "both", its department as a roster group, and the
 * groups of the later of the n entries with the same JID, which are
 * then marked merged (jid.len 0): one item per contact.  Also built by
 * the directory's roster answers (ngx_xmpp_dir.c).
 */
void
ngx_xmpp_roster_shared_item(ngx_xmpp_wbuf_t *b, ngx_xmpp_contact_t *c,
    ngx_uint_t i, ngx_uint_t n)
{
    ngx_uint_t  j;

    ngx_xmpp_wbuf_lit(b, "<item jid='");
    ngx_xmpp_wbuf_escs(b, &c[i].jid);

    if (c[i].name.len) {
        ngx_xmpp_wbuf_lit(b, "' name='");
        ngx_xmpp_wbuf_escs(b, &c[i].name);
    }

    ngx_xmpp_wbuf_lit(b, "' subscription='both'><group>");
    ngx_xmpp_wbuf_escs(b, &c[i].group);
    ngx_xmpp_wbuf_lit(b, "</group>");

    for (j = i + 1; j < n; j++) {
        if (c[j].jid.len == c[i].jid.len
            && ngx_strncmp(c[j].jid.data, c[i].jid.data, c[i].jid.len) == 0)
        {
            ngx_xmpp_wbuf_lit(b, "<group>");
            ngx_xmpp_wbuf_escs(b, &c[j].group);
            ngx_xmpp_wbuf_lit(b, "</group>");
            c[j].jid.len = 0;
        }
    }

    ngx_xmpp_wbuf_lit(b, "</item>");
}


/*
 * Issue 6 item 3: the directory's shared contacts as roster items,
 * subscription "both", the department groups as roster groups (one
 * item per contact); a contact that is also a personal item is left
 * out: the personal item wins.
 */
static ngx_int_t
ngx_xmpp_roster_shared_xml(ngx_pool_t *pool, ngx_str_t *owner,
    ngx_str_t *personal, ngx_uint_t npersonal, ngx_xmpp_wbuf_t *b)
{
    ngx_uint_t           i;
    ngx_array_t          contacts;
    ngx_xmpp_contact_t  *c;

    if (ngx_array_init(&contacts, pool, 16, sizeof(ngx_xmpp_contact_t))
        != NGX_OK
        || ngx_xmpp_dir_shared_contacts(owner, pool, &contacts) != NGX_OK)
    {
        return NGX_ERROR;
    }

    c = contacts.elts;

    for (i = 0; i < contacts.nelts; i++) {
        if (c[i].jid.len == 0
            || ngx_xmpp_roster_jid_in(personal, npersonal, &c[i].jid))
        {
            continue;
        }

        ngx_xmpp_roster_shared_item(b, c, i, contacts.nelts);
    }

    return b->failed ? NGX_ERROR : NGX_OK;
}


/*
 * RFC 6121 2.2 and 2.6: the personal items from MariaDB and the shared
 * ones from the directory.  The version is the personal one, followed
 * by a CRC of the shared items when there are any, so that a change of
 * either makes a client's copy stale; an unchanged copy gets an empty
 * result (2.6.3).
 */
static void
ngx_xmpp_roster_get_done(ngx_xmpp_session_t *s, ngx_xmpp_roster_ctx_t *ctx)
{
    u_char           ver[2 * NGX_INT64_LEN], *v;
    ngx_str_t        payload, *personal;
    ngx_uint_t       npersonal;
    ngx_pool_t      *pool;
    ngx_xmpp_wbuf_t  b, sb;

    pool = ngx_create_pool(4096, s->connection->log);
    if (pool == NULL) {
        ngx_xmpp_roster_iq_reply(s, ctx, "internal-server-error", NULL);
        return;
    }

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = NGX_XMPP_ROSTER_OUT_MAX;
    ngx_memzero(&sb, sizeof(ngx_xmpp_wbuf_t));
    sb.max = NGX_XMPP_ROSTER_OUT_MAX;

    personal = ngx_xmpp_roster_jids(pool, &ctx->jids, &npersonal);

    if (personal == NULL
        || ngx_xmpp_roster_shared_xml(pool, &s->jid.bare, personal,
                                      npersonal, &sb) != NGX_OK)
    {
        ngx_xmpp_roster_iq_reply(s, ctx, "internal-server-error", NULL);
        goto done;
    }

    v = ngx_sprintf(ver, "%uL", ctx->cur_ver);

    if (sb.last != sb.start) {
        v = ngx_sprintf(v, "-%08xD",
                        ngx_crc32_long(sb.start, sb.last - sb.start));
    }

    if (ctx->ver.data && ctx->ver.len == (size_t) (v - ver)
        && ngx_strncmp(ctx->ver.data, ver, ctx->ver.len) == 0)
    {
        ngx_xmpp_roster_iq_reply(s, ctx, NULL, NULL);
        goto done;
    }

    ngx_xmpp_wbuf_lit(&b, "<query xmlns='" NGX_XMPP_NS_ROSTER "' ver='");
    ngx_xmpp_wbuf_add(&b, ver, v - ver);
    ngx_xmpp_wbuf_lit(&b, "'>");
    ngx_xmpp_wbuf_add(&b, ctx->out.start, ctx->out.last - ctx->out.start);
    ngx_xmpp_wbuf_add(&b, sb.start, sb.last - sb.start);
    ngx_xmpp_wbuf_lit(&b, "</query>");

    if (b.failed) {
        ngx_xmpp_roster_iq_reply(s, ctx, "internal-server-error", NULL);

    } else {
        payload.data = b.start;
        payload.len = b.last - b.start;
        ngx_xmpp_roster_iq_reply(s, ctx, NULL, &payload);
    }

done:

    ngx_xmpp_wbuf_free(&b);
    ngx_xmpp_wbuf_free(&sb);
    ngx_destroy_pool(pool);
}


/*
 * A presence stanza of the given type from one bare JID to another: to
 * the session s if given, else to the available resources of "to".
 */
static void
ngx_xmpp_roster_send_presence(ngx_xmpp_conf_t *xcf, ngx_xmpp_session_t *s,
    ngx_str_t *from, ngx_str_t *to, const char *type)
{
    ngx_str_t        t;
    ngx_xmpp_wbuf_t  b;

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = 4096;

    ngx_xmpp_wbuf_lit(&b, "<presence xmlns='" NGX_XMPP_NS_CLIENT "' type='");
    ngx_xmpp_wbuf_str(&b, type);
    ngx_xmpp_wbuf_lit(&b, "' from='");
    ngx_xmpp_wbuf_escs(&b, from);
    ngx_xmpp_wbuf_lit(&b, "' to='");
    ngx_xmpp_wbuf_escs(&b, to);
    ngx_xmpp_wbuf_lit(&b, "'/>");

    if (s && !b.failed) {
        (void) ngx_xmpp_session_send(s, b.start, b.last - b.start);

    } else if (!b.failed) {
        t.data = (u_char *) type;
        t.len = ngx_strlen(type);
        (void) ngx_xmpp_router_to_bare(xcf, to, NGX_XMPP_STANZA_PRESENCE, &t,
                                       b.start, b.last - b.start);
    }

    ngx_xmpp_wbuf_free(&b);
}


/* a presence of the given type from the bare JID "from" to one session */
static void
ngx_xmpp_roster_probe_answer(ngx_xmpp_conf_t *xcf, ngx_str_t *from,
    ngx_str_t *to, const char *type)
{
    ngx_pool_t       *pool;
    ngx_xmpp_jid_t    jid;
    ngx_xmpp_wbuf_t   b;

    pool = ngx_create_pool(1024, ngx_cycle->log);
    if (pool == NULL) {
        return;
    }

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = 4096 + 6 * (from->len + to->len);

    ngx_xmpp_wbuf_lit(&b, "<presence xmlns='" NGX_XMPP_NS_CLIENT "' type='");
    ngx_xmpp_wbuf_str(&b, type);
    ngx_xmpp_wbuf_lit(&b, "' from='");
    ngx_xmpp_wbuf_escs(&b, from);
    ngx_xmpp_wbuf_lit(&b, "' to='");
    ngx_xmpp_wbuf_escs(&b, to);
    ngx_xmpp_wbuf_lit(&b, "'/>");

    if (!b.failed && ngx_xmpp_jid_parse(pool, to, &jid) == NGX_OK
        && jid.resource.len)
    {
        (void) ngx_xmpp_router_to_full_jid(xcf, &jid, b.start,
                                           b.last - b.start);
    }

    ngx_xmpp_wbuf_free(&b);
    ngx_destroy_pool(pool);
}


/*
 * RFC 6121 4.3.2, the contact's server answering a probe (ctx->stanza
 * is the prober's full JID):
 *   1. the prober is not a "from" (or "both") subscriber, nor a shared
 *      directory contact, or the contact does not exist: "the contact's
 *      server SHOULD return a presence stanza of type 'unsubscribed'";
 *   2. a subscriber and no resource of the contact is available: "the
 *      server SHOULD reply ... by sending to the user a presence stanza
 *      of type 'unavailable'" from the contact's bare JID;
 *   3. else each available resource answers with its last presence.
 * XEP-0191 3.5 comes first: a prober the contact blocked (its full or
 * bare JID, its domain) gets nothing at all, "the server MUST NOT
 * respond" to a probe; the list is read in the same request, so no
 * session's copy is needed.
 */
static void
ngx_xmpp_roster_probe_done(ngx_xmpp_conf_t *xcf, ngx_xmpp_roster_ctx_t *ctx)
{
    ngx_str_t   *shared;
    ngx_uint_t   n, subscribed;
    ngx_pool_t  *pool;

    if (ngx_xmpp_blocking_list_blocks(ctx->jids.start, ctx->jids.last,
                                      ctx->nblocked, &ctx->stanza))
    {
        return;
    }

    /* one's own account: its resources answer, as to a subscriber */
    subscribed = ctx->ci.sub_from
                 || (ctx->contact.len == ctx->owner.len
                     && ngx_strncmp(ctx->contact.data, ctx->owner.data,
                                    ctx->owner.len) == 0);

    if (!subscribed) {
        pool = ngx_create_pool(4096, ngx_cycle->log);
        if (pool == NULL) {
            return;
        }

        shared = ngx_xmpp_roster_shared_jids(pool, &ctx->contact, &n);
        subscribed = shared && ngx_xmpp_roster_jid_in(shared, n, &ctx->owner);

        ngx_destroy_pool(pool);
    }

    if (!subscribed) {
        ngx_xmpp_roster_probe_answer(xcf, &ctx->contact, &ctx->stanza,
                                     "unsubscribed");
        return;
    }

    if (ngx_xmpp_presence_probe(xcf, &ctx->contact, &ctx->stanza) == 0) {
        ngx_xmpp_roster_probe_answer(xcf, &ctx->contact, &ctx->stanza,
                                     "unavailable");
    }
}


static void
ngx_xmpp_roster_done(ngx_xmpp_db_req_t *r)
{
    ngx_xmpp_conf_t        *xcf;
    ngx_xmpp_session_t     *s;
    ngx_xmpp_roster_ctx_t  *ctx = r->ctx;

    xcf = ngx_xmpp_cycle_conf((ngx_cycle_t *) ngx_cycle);

    s = ngx_xmpp_session_find(ctx->sid);
    if (s && !s->bound) {
        s = NULL;
    }

    if (r->rc != NGX_XMPP_DB_OK) {
        ngx_log_error(NGX_LOG_ERR, s ? s->connection->log : ngx_cycle->log,
                      0, "xmpp: roster request failed (%ui): %s", r->rc,
                      r->err);

        if (s && ctx->id.data) {
            ngx_xmpp_roster_iq_reply(s, ctx, "internal-server-error", NULL);
        }

        return;
    }

    if (ctx->op == NGX_XMPP_ROSTER_OP_GET) {
        if (s) {
            ngx_xmpp_roster_get_done(s, ctx);
        }

        return;
    }

    if (ctx->op == NGX_XMPP_ROSTER_OP_PROBE) {
        ngx_xmpp_roster_probe_done(xcf, ctx);
        return;
    }

    if (ctx->refused) {
        if (s && ctx->id.data) {
            ngx_xmpp_roster_iq_reply(s, ctx, ctx->refused, NULL);
        }

        return;
    }

    if (ctx->opush) {
        ngx_xmpp_roster_push(xcf, &ctx->owner, &ctx->contact, &ctx->oi,
                             ctx->oremoved);
    }

    if (ctx->cpush) {
        ngx_xmpp_roster_push(xcf, &ctx->contact, &ctx->owner, &ctx->ci, 0);
    }

    if (s && ctx->id.data) {
        ngx_xmpp_roster_iq_reply(s, ctx, NULL, NULL);
    }

    if (ctx->deliver && ctx->stanza.len) {
        (void) ngx_xmpp_router_to_bare(xcf, &ctx->contact,
                                       NGX_XMPP_STANZA_PRESENCE, NULL,
                                       ctx->stanza.data, ctx->stanza.len);
    }

    if (ctx->deliver_unsub) {
        ngx_xmpp_roster_send_presence(xcf, NULL, &ctx->owner, &ctx->contact,
                                      "unsubscribe");
    }

    if (ctx->deliver_unsubd) {
        ngx_xmpp_roster_send_presence(xcf, NULL, &ctx->owner, &ctx->contact,
                                      "unsubscribed");
    }

    if (ctx->reply_subscribed) {
        ngx_xmpp_roster_send_presence(xcf, NULL, &ctx->contact, &ctx->owner,
                                      "subscribed");
    }

    /* RFC 6121 3.1.5: the new subscriber hears the current presence */
    if (ctx->probe_c2o) {
        ngx_xmpp_presence_probe(xcf, &ctx->contact, &ctx->owner);
    }

    if (ctx->probe_o2c) {
        ngx_xmpp_presence_probe(xcf, &ctx->owner, &ctx->contact);
    }

    /*
     * XEP-0163 4.3.2 and 6.1: a subscription just approved brings the
     * new subscriber the publisher's last items, now.
     */
    if (ctx->op == NGX_XMPP_ROSTER_OP_SUBSCRIBED && ctx->cpush) {
        ngx_xmpp_pep_approved(xcf, &ctx->owner, &ctx->contact);
    }

    if (ctx->reply_subscribed && ctx->opush) {
        ngx_xmpp_pep_approved(xcf, &ctx->contact, &ctx->owner);
    }

    /* RFC 6121 3.2.2 and 3.3.3: a former subscriber hears "unavailable" */
    if (ctx->unavail_c2o) {
        ngx_xmpp_presence_unavailable_to(xcf, &ctx->contact, &ctx->owner);
    }

    if (ctx->unavail_o2c) {
        ngx_xmpp_presence_unavailable_to(xcf, &ctx->owner, &ctx->contact);
    }
}


static ngx_int_t
ngx_xmpp_roster_post(ngx_xmpp_session_t *s, ngx_xmpp_db_req_t *r)
{
    ngx_xmpp_roster_ctx_t  *ctx = r->ctx;

    ctx->sid = s ? s->id : 0;

    if (ngx_xmpp_db_post(r) != NGX_OK) {
        ngx_xmpp_db_destroy(r);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* RFC 6121 2.3.3: what a roster set must look like */
static const char *
ngx_xmpp_roster_parse_item(ngx_xmpp_session_t *s, ngx_xmpp_node_t *q,
    ngx_xmpp_jid_t *jid, ngx_str_t **name, ngx_xmpp_wbuf_t *groups,
    ngx_uint_t *remove)
{
    ngx_str_t        *v, text, seen[NGX_XMPP_ROSTER_GROUPS_MAX];
    ngx_uint_t        i, n, nitems;
    ngx_xmpp_node_t  *c, *item;

    item = NULL;
    nitems = 0;

    for (c = q->child; c; c = c->next) {
        if (c->name.len) {
            item = c;
            nitems++;
        }
    }

    if (nitems != 1
        || !ngx_xmpp_roster_str_is(&item->name, "item")
        || !ngx_xmpp_roster_str_is(&item->ns, NGX_XMPP_NS_ROSTER))
    {
        return "bad-request";
    }

    v = ngx_xmpp_node_attr(item, "jid");
    if (v == NULL) {
        return "bad-request";
    }

    if (ngx_xmpp_jid_parse(s->stanza_pool, v, jid) != NGX_OK) {
        return "jid-malformed";
    }

    if (jid->bare.len > NGX_XMPP_ROSTER_JID_MAX) {
        return "not-acceptable";
    }

    v = ngx_xmpp_node_attr(item, "subscription");
    *remove = (v && ngx_xmpp_roster_str_is(v, "remove"));

    *name = ngx_xmpp_node_attr(item, "name");

    if (*name && (*name)->len > NGX_XMPP_ROSTER_NAME_MAX) {
        return "not-acceptable";
    }

    if (*name && (*name)->len == 0) {
        *name = NULL;
    }

    n = 0;

    for (c = item->child; c; c = c->next) {
        if (!ngx_xmpp_roster_str_is(&c->name, "group")) {
            continue;
        }

        if (ngx_xmpp_node_text(s->stanza_pool, c, &text) != NGX_OK) {
            return "internal-server-error";
        }

        if (text.len == 0 || text.len > NGX_XMPP_ROSTER_GROUP_MAX
            || n == NGX_XMPP_ROSTER_GROUPS_MAX)
        {
            return "not-acceptable";
        }

        for (i = 0; i < n; i++) {
            if (seen[i].len == text.len
                && ngx_strncmp(seen[i].data, text.data, text.len) == 0)
            {
                return "bad-request";
            }
        }

        seen[n++] = text;

        ngx_xmpp_wbuf_lit(groups, "<group>");
        ngx_xmpp_wbuf_escs(groups, &text);
        ngx_xmpp_wbuf_lit(groups, "</group>");
    }

    return groups->failed ? "not-acceptable" : NULL;
}


static void
ngx_xmpp_roster_iq_error(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    const char *condition)
{
    ngx_xmpp_router_error(s, st,
                          ngx_strcmp(condition, "internal-server-error") == 0
                          ? "wait" : "modify", condition);
}


static void
ngx_xmpp_roster_set(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_node_t *q, ngx_str_t *reply_from)
{
    ngx_str_t           *in[8], *name, groups;
    ngx_uint_t           remove;
    const char          *err;
    ngx_xmpp_jid_t       jid;
    ngx_xmpp_wbuf_t      gb;
    ngx_xmpp_db_req_t   *r;

    ngx_memzero(&gb, sizeof(ngx_xmpp_wbuf_t));
    gb.max = 60000;      /* TEXT column */

    err = ngx_xmpp_roster_parse_item(s, q, &jid, &name, &gb, &remove);

    if (err) {
        ngx_xmpp_wbuf_free(&gb);
        ngx_xmpp_roster_iq_error(s, st, err);
        return;
    }

    groups.data = gb.start;
    groups.len = gb.last - gb.start;

    in[0] = &s->jid.bare;
    in[1] = &jid.bare;
    in[2] = name;
    in[3] = &groups;
    in[4] = &st->id;
    in[5] = reply_from;

    r = ngx_xmpp_roster_req(s->conf, s->connection->log,
                            remove ? NGX_XMPP_ROSTER_OP_REMOVE
                                   : NGX_XMPP_ROSTER_OP_SET, in, 6);

    ngx_xmpp_wbuf_free(&gb);

    if (r == NULL || ngx_xmpp_roster_post(s, r) != NGX_OK) {
        ngx_xmpp_roster_iq_error(s, st, "internal-server-error");
    }
}


/*
 * jabber:iq:roster get and set from the user (RFC 6121 2.2-2.5).  A
 * get makes the resource "interested" (2.1.6): it receives pushes.
 */
void
ngx_xmpp_roster_iq(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_node_t *q)
{
    ngx_str_t          *in[7], *ver, *to;
    ngx_xmpp_db_req_t  *r;

    to = ngx_xmpp_node_attr(st->node, "to");
    if (!st->has_to || to == NULL) {
        to = &s->conf->domain;
    }

    if (!(st->type.len == 3 && ngx_strncmp(st->type.data, "get", 3) == 0)) {
        ngx_xmpp_roster_set(s, st, q, to);
        return;
    }

    if (!s->roster_interested) {
        s->roster_interested = 1;
        ngx_xmpp_registry_update(s);
    }

    ver = ngx_xmpp_node_attr(q, "ver");

    in[0] = &s->jid.bare;
    in[1] = NULL;
    in[2] = NULL;
    in[3] = NULL;
    in[4] = &st->id;
    in[5] = to;
    in[6] = ver;

    r = ngx_xmpp_roster_req(s->conf, s->connection->log,
                            NGX_XMPP_ROSTER_OP_GET, in, 7);

    if (r == NULL || ngx_xmpp_roster_post(s, r) != NGX_OK) {
        ngx_xmpp_roster_iq_error(s, st, "internal-server-error");
    }
}


/*
 * An outbound subscription stanza (RFC 6121 3.1-3.3): the user's server
 * stamps it with the bare JIDs (3.1.2), updates both sides and routes
 * it to the contact if Appendix A says so.
 */
void
ngx_xmpp_roster_subscription(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st)
{
    ngx_str_t          *in[8], stanza;
    ngx_uint_t          op;
    ngx_xmpp_wbuf_t    *b;
    ngx_xmpp_db_req_t  *r;

    if (!st->has_to || st->to.local.len == 0
        || st->to.bare.len > NGX_XMPP_ROSTER_JID_MAX
        || (st->to.bare.len == s->jid.bare.len
            && ngx_strncmp(st->to.bare.data, s->jid.bare.data,
                           s->jid.bare.len) == 0))
    {
        /* no contact, or oneself: nothing to subscribe to */
        return;
    }

    if (st->to.domain.len != s->conf->domain.len
        || ngx_strncmp(st->to.domain.data, s->conf->domain.data,
                       s->conf->domain.len) != 0)
    {
        ngx_xmpp_router_error(s, st, "cancel", "remote-server-not-found");
        return;
    }

    if (ngx_xmpp_roster_str_is(&st->type, "subscribe")) {
        op = NGX_XMPP_ROSTER_OP_SUBSCRIBE;

    } else if (ngx_xmpp_roster_str_is(&st->type, "subscribed")) {
        op = NGX_XMPP_ROSTER_OP_SUBSCRIBED;

    } else if (ngx_xmpp_roster_str_is(&st->type, "unsubscribe")) {
        op = NGX_XMPP_ROSTER_OP_UNSUBSCRIBE;

    } else {
        op = NGX_XMPP_ROSTER_OP_UNSUBSCRIBED;
    }

    if (ngx_xmpp_node_set_attr(st->pool, st->node, "from", &s->jid.bare)
           != NGX_OK
        || ngx_xmpp_node_set_attr(st->pool, st->node, "to", &st->to.bare)
           != NGX_OK)
    {
        return;
    }

    b = ngx_xmpp_wbuf_scratch(s->conf->max_stanza_size + 4096);
    ngx_xmpp_serialize(b, st->node, NULL);

    if (b->failed) {
        ngx_xmpp_router_error(s, st, "wait", "resource-constraint");
        return;
    }

    stanza.data = b->start;
    stanza.len = b->last - b->start;

    in[0] = &s->jid.bare;
    in[1] = &st->to.bare;
    in[2] = NULL;
    in[3] = NULL;
    in[4] = NULL;
    in[5] = NULL;
    in[6] = NULL;
    in[7] = &stanza;

    r = ngx_xmpp_roster_req(s->conf, s->connection->log, op, in, 8);

    if (r == NULL || ngx_xmpp_roster_post(s, r) != NGX_OK) {
        ngx_xmpp_router_error(s, st, "wait", "internal-server-error");
    }
}


/*
 * RFC 6121 4.3.1 (note): a presence probe the client of s sent to a
 * local contact is processed by the server, not delivered to the
 * contact's resources.
 */
void
ngx_xmpp_roster_probe(ngx_xmpp_session_t *s, ngx_str_t *contact)
{
    ngx_str_t          *in[8];
    ngx_xmpp_db_req_t  *r;

    if (contact->len > NGX_XMPP_ROSTER_JID_MAX) {
        return;
    }

    ngx_memzero(in, sizeof(in));
    in[0] = &s->jid.bare;
    in[1] = contact;
    in[7] = &s->jid.full;

    r = ngx_xmpp_roster_req(s->conf, s->connection->log,
                            NGX_XMPP_ROSTER_OP_PROBE, in, 8);
    if (r) {
        (void) ngx_xmpp_roster_post(s, r);
    }
}


/*
 * Presence and the roster (RFC 6121 4.2-4.5): data is a presence
 * stanza without "to" ("<presence" first).  It goes to every contact
 * with a "from" subscription; with NGX_XMPP_ROSTER_INITIAL the
 * session s also probes its "to" contacts (4.2.2) and hears the
 * subscription requests that waited for it (3.1.3).  s is NULL for a
 * session that has ended.
 */
void
ngx_xmpp_roster_presence(ngx_xmpp_conf_t *xcf, ngx_xmpp_session_t *s,
    ngx_str_t *bare, u_char *data, size_t len, ngx_uint_t flags)
{
    ngx_str_t               stanza, *in[8];
    ngx_xmpp_db_req_t      *r;
    ngx_xmpp_roster_ctx_t  *ctx;

    stanza.data = data;
    stanza.len = len;

    in[0] = bare;
    in[1] = NULL;
    in[2] = NULL;
    in[3] = NULL;
    in[4] = NULL;
    in[5] = NULL;
    in[6] = NULL;
    in[7] = &stanza;

    r = ngx_xmpp_roster_req(xcf, s ? s->connection->log : ngx_cycle->log,
                            NGX_XMPP_ROSTER_OP_PRESENCE, in, 8);
    if (r == NULL) {
        return;
    }

    r->done = ngx_xmpp_roster_presence_done;

    ctx = r->ctx;
    ctx->flags = flags;
    ctx->seq = s ? s->presence_seq : 0;

    (void) ngx_xmpp_roster_post(s, r);
}


/* one contact of the presence list: flags as in ..._presence_row() */
static void
ngx_xmpp_roster_presence_one(ngx_xmpp_conf_t *xcf, ngx_xmpp_session_t *s,
    ngx_xmpp_roster_ctx_t *ctx, ngx_str_t *contact, ngx_uint_t f,
    ngx_uint_t broadcast)
{
    ngx_xmpp_jidlist_t  except;

    if (ngx_xmpp_blocking_list_blocks(ctx->jids.start, ctx->jids.last,
                                      ctx->nblocked, contact))
    {
        return;
    }

    if ((f & 2) && broadcast) {
        /* XEP-0191 3.3: an item that is a full JID keeps one resource out */
        except.start = ctx->jids.start;
        except.last = ctx->jids.last;
        except.n = ctx->nblocked;
        except.excluded = 0;

        ngx_xmpp_presence_send_to(xcf, contact, ctx->stanza.data,
                                  ctx->stanza.len, &except);
    }

    if (s == NULL || !(ctx->flags & NGX_XMPP_ROSTER_INITIAL)) {
        return;
    }

    if (f & 1) {
        ngx_xmpp_presence_probe(xcf, contact, &s->jid.full);
    }

    if (f & 4) {
        ngx_xmpp_roster_send_presence(xcf, s, contact, &s->jid.bare,
                                      "subscribe");
    }
}


static int ngx_libc_cdecl
ngx_xmpp_roster_sort_cmp(const void *a, const void *b)
{
    return (int) ngx_xmpp_roster_jid_cmp((ngx_str_t *) a, (ngx_str_t *) b);
}


/*
 * The shared contacts of owner (issue 6 item 3), sorted, each once.
 * Their subscription is "both": they hear the user's presence and are
 * probed like personal contacts with that subscription.
 */
static ngx_str_t *
ngx_xmpp_roster_shared_jids(ngx_pool_t *pool, ngx_str_t *owner,
    ngx_uint_t *n)
{
    ngx_uint_t           i, m;
    ngx_str_t           *jids;
    ngx_array_t          contacts;
    ngx_xmpp_contact_t  *c;

    *n = 0;

    if (ngx_array_init(&contacts, pool, 16, sizeof(ngx_xmpp_contact_t))
        != NGX_OK
        || ngx_xmpp_dir_shared_contacts(owner, pool, &contacts) != NGX_OK)
    {
        return NULL;
    }

    jids = ngx_palloc(pool, (contacts.nelts + 1) * sizeof(ngx_str_t));
    if (jids == NULL) {
        return NULL;
    }

    c = contacts.elts;

    for (i = 0; i < contacts.nelts; i++) {
        jids[i] = c[i].jid;
    }

    ngx_qsort(jids, contacts.nelts, sizeof(ngx_str_t),
              ngx_xmpp_roster_sort_cmp);

    for (i = 0, m = 0; i < contacts.nelts; i++) {
        if (m == 0 || ngx_xmpp_roster_jid_cmp(&jids[m - 1], &jids[i]) != 0) {
            jids[m++] = jids[i];
        }
    }

    *n = m;

    return jids;
}


static void
ngx_xmpp_roster_presence_done(ngx_xmpp_db_req_t *r)
{
    u_char                 *p, *end, f;
    uint16_t                len;
    ngx_str_t               contact, *shared;
    ngx_uint_t              broadcast, nshared, i;
    ngx_pool_t             *pool;
    ngx_xmpp_conf_t        *xcf;
    ngx_xmpp_session_t     *s;
    ngx_xmpp_roster_ctx_t  *ctx = r->ctx;

    xcf = ngx_xmpp_cycle_conf((ngx_cycle_t *) ngx_cycle);
    s = NULL;

    if (ctx->sid) {
        s = ngx_xmpp_session_find(ctx->sid);

        if (s == NULL || !s->bound) {
            /* gone: its final presence has its own request */
            return;
        }
    }

    if (r->rc != NGX_XMPP_DB_OK) {
        ngx_log_error(NGX_LOG_ERR, s ? s->connection->log : ngx_cycle->log,
                      0, "xmpp: presence not sent to subscribers, roster "
                      "unavailable (%ui): %s", r->rc, r->err);
        return;
    }

    /* a later presence of the session has its own request: it wins */
    broadcast = (s == NULL || s->presence_seq == ctx->seq);

    pool = ngx_create_pool(4096, ngx_cycle->log);
    if (pool == NULL) {
        return;
    }

    shared = ngx_xmpp_roster_shared_jids(pool, &ctx->owner, &nshared);
    if (shared == NULL) {
        nshared = 0;
    }

    p = ctx->out.start;
    end = ctx->out.last;

    /* both lists are sorted: a shared contact in MariaDB too is one */
    i = 0;

    while (p && end - p >= 3) {
        f = *p++;
        ngx_memcpy(&len, p, sizeof(uint16_t));
        p += sizeof(uint16_t);

        if ((size_t) (end - p) < len) {
            break;
        }

        contact.data = p;
        contact.len = len;
        p += len;

        while (i < nshared
               && ngx_xmpp_roster_jid_cmp(&shared[i], &contact) < 0)
        {
            ngx_xmpp_roster_presence_one(xcf, s, ctx, &shared[i++], 3,
                                         broadcast);
        }

        if (i < nshared && ngx_xmpp_roster_jid_cmp(&shared[i], &contact) == 0)
        {
            f |= 3;
            i++;
        }

        ngx_xmpp_roster_presence_one(xcf, s, ctx, &contact, f, broadcast);
    }

    while (i < nshared) {
        ngx_xmpp_roster_presence_one(xcf, s, ctx, &shared[i++], 3,
                                     broadcast);
    }

    ngx_destroy_pool(pool);
}
