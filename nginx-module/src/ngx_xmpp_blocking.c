
/*
 * XEP-0191 Blocking Command (urn:xmpp:blocking).  The blocklist of a
 * user is stored in MariaDB (table blocklist, audit/schema/
 * 007_blocking.sql) and cached in each of the user's sessions, so that
 * enforcement costs no query per stanza:
 *
 *   - the session reads the list once, when it is bound (or resumed),
 *     through the db adapter (a pool thread, a timer); stanzas for it
 *     that arrive meanwhile wait in a bounded queue and are checked
 *     once the list is there (a resumed session gets a burst then:
 *     XEP-0198's queue and what came meanwhile); past the bound they
 *     go unchecked, but in their order;
 *   - <block/> and <unblock/> change the table, answer, then tell every
 *     session of the user, on whatever worker (IPC command
 *     NGX_XMPP_IPC_BLOCKING), which updates its copy and pushes the
 *     change to its client if it asked for the list (section 3.3).
 *
 * Enforcement (section 3.5): a stanza from a blocked JID is not
 * delivered; a message or an iq get/set is answered with
 * <service-unavailable/>, presence is dropped silently.  A stanza the
 * user addresses to a blocked JID is refused with <not-acceptable/> and
 * <blocked xmlns='urn:xmpp:blocking:errors'/>.  JIDs match as in
 * XEP-0016 section 2.1: an item matches that full JID, that bare JID
 * and its resources, or that domain and everything at it.
 *
 * Audit (COMPLIANCE.md: the trail records what users sent): a message
 * to a user who blocked its sender was sent and accepted, so its audit
 * record stands; it is only not delivered.  A message the user tries to
 * send to a JID they blocked is refused before it is accepted, like any
 * refused stanza, and is not recorded.
 */


#include "ngx_xmpp.h"
#include "ngx_xmpp_blocking.h"

#include <mysql.h>


typedef struct {
    ngx_uint_t             op;
    uint64_t               sid;
    ngx_str_t              owner;
    ngx_str_t              id;
    ngx_xmpp_wbuf_t        in;            /* owner, id, JIDs: NUL-ended */
    ngx_uint_t             nin;
    ngx_xmpp_wbuf_t        out;           /* JIDs read, NUL-ended */
    ngx_uint_t             nout;
    ngx_xmpp_wbuf_t        contacts;      /* [flags][JID NUL] */
    ngx_xmpp_wbuf_t        left;          /* unblock: the list after it */
    ngx_uint_t             nleft;
    uint64_t               count;
    ngx_uint_t             max;
    unsigned               full:1;
} ngx_xmpp_blocking_ctx_t;


static void ngx_xmpp_blocking_apply(ngx_xmpp_session_t *s, u_char op,
    u_char *jids, size_t len, ngx_uint_t replay);
static ngx_int_t ngx_xmpp_blocking_load(ngx_xmpp_session_t *s);


/* XEP-0016 section 2.1 matching of one item against a JID */
static ngx_uint_t
ngx_xmpp_blocking_match(u_char *item, size_t ilen,
    ngx_xmpp_jid_parts_t *j, ngx_str_t *full)
{
    size_t   blen;
    u_char  *p;

    if (ngx_xmpp_blocking_eq(item, ilen, full->data, full->len)) {
        return 1;
    }

    if (j->local) {
        /* the bare JID */
        blen = j->local_len + 1 + j->domain_len;

        if (j->resource_len && ngx_xmpp_blocking_eq(item, ilen, full->data,
                                                    blen))
        {
            return 1;
        }
    }

    if (ngx_xmpp_blocking_eq(item, ilen, (u_char *) j->domain,
                             j->domain_len))
    {
        return 1;
    }

    /* domain/resource */
    p = ngx_strlchr(item, item + ilen, '/');

    return j->local && j->resource_len && p
           && ngx_xmpp_blocking_eq(item, p - item, (u_char *) j->domain,
                                   j->domain_len)
           && ngx_xmpp_blocking_eq(p + 1, item + ilen - p - 1,
                                   (u_char *) j->resource, j->resource_len);
}


/*
 * Does one of the n items of list (NUL-ended JIDs, as the blocklist
 * table holds them) cover jid (normalized, full or bare)?  Also used
 * on lists read with a roster request (ngx_xmpp_roster.c), for the
 * presence of a session that has ended.
 */
ngx_int_t
ngx_xmpp_blocking_list_blocks(u_char *list, u_char *last, ngx_uint_t n,
    ngx_str_t *jid)
{
    u_char                *p;
    size_t                 len;
    ngx_uint_t             i;
    ngx_xmpp_jid_parts_t   parts;

    if (list == NULL || n == 0
        || ngx_xmpp_jid_split(jid->data, jid->len, &parts) != 0)
    {
        return 0;
    }

    p = list;

    for (i = 0; i < n && p < last; i++) {
        len = ngx_strlen(p);

        if (ngx_xmpp_blocking_match(p, len, &parts, jid)) {
            return 1;
        }

        p += len + 1;
    }

    return 0;
}


/* does the session's blocklist cover jid (normalized, full or bare)? */
ngx_int_t
ngx_xmpp_blocking_blocks(ngx_xmpp_session_t *s, ngx_str_t *jid)
{
    ngx_xmpp_blocklist_t  *bl;

    bl = s->blocklist;

    if (bl == NULL) {
        return 0;
    }

    return ngx_xmpp_blocking_list_blocks(bl->list.start, bl->list.last,
                                         bl->n, jid);
}


void
ngx_xmpp_blocking_list(ngx_xmpp_session_t *s, ngx_xmpp_jidlist_t *l)
{
    ngx_memzero(l, sizeof(ngx_xmpp_jidlist_t));

    if (s && s->blocklist) {
        l->start = s->blocklist->list.start;
        l->last = s->blocklist->list.last;
        l->n = s->blocklist->n;
    }
}


/*
 * Does an item of l cover the resource res of bare?  Section 3.3 with
 * the JID matching of XEP-0191 (XEP-0016 2.1): an item that is a full
 * JID blocks that resource only, so delivery to a bare JID leaves that
 * one resource out, not the others.
 */
ngx_uint_t
ngx_xmpp_blocking_route_blocked(ngx_xmpp_jidlist_t *l, ngx_str_t *bare,
    u_char *res, size_t rlen)
{
    u_char     buf[NGX_XMPP_BLOCKING_FROM_MAX], *p;
    ngx_str_t  full;

    if (l->n == 0 || bare->len + 1 + rlen > sizeof(buf)) {
        return 0;
    }

    p = ngx_cpymem(buf, bare->data, bare->len);
    *p++ = '/';
    p = ngx_cpymem(p, res, rlen);

    full.data = buf;
    full.len = p - buf;

    return ngx_xmpp_blocking_list_blocks(l->start, l->last, l->n, &full);
}


static void
ngx_xmpp_blocking_cleanup(void *data)
{
    ngx_xmpp_blocklist_t  *bl = data;

    if (bl->req) {
        ngx_xmpp_db_cancel(bl->req);
        bl->req = NULL;
    }

    ngx_xmpp_wbuf_free(&bl->list);
    ngx_xmpp_wbuf_free(&bl->pending);
    ngx_xmpp_wbuf_free(&bl->deferred);
}


static void
ngx_xmpp_blocking_ctx_free(ngx_xmpp_db_req_t *r)
{
    ngx_xmpp_blocking_ctx_t  *ctx = r->ctx;

    ngx_xmpp_wbuf_free(&ctx->in);
    ngx_xmpp_wbuf_free(&ctx->out);
    ngx_xmpp_wbuf_free(&ctx->contacts);
    ngx_xmpp_wbuf_free(&ctx->left);
}


static int
ngx_xmpp_blocking_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols, ngx_uint_t n)
{
    ngx_xmpp_blocking_ctx_t  *ctx = r->ctx;

    if (cols[0].data == NULL) {
        return 0;
    }

    ngx_xmpp_wbuf_add(&ctx->out, cols[0].data, cols[0].len);
    ngx_xmpp_wbuf_add(&ctx->out, "", 1);
    ctx->nout++;

    return ctx->out.failed ? -1 : 0;
}


static int
ngx_xmpp_blocking_sql(struct st_mysql *conn, ngx_xmpp_db_req_t *r,
    const char *sql, ngx_str_t *p, ngx_uint_t n)
{
    MYSQL_STMT  *stmt;

    stmt = ngx_xmpp_db_exec(conn, r, sql, p, n);
    if (stmt == NULL) {
        return -1;
    }

    (void) mysql_stmt_close(stmt);

    return 0;
}


static int
ngx_xmpp_blocking_count_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols,
    ngx_uint_t n)
{
    ngx_xmpp_blocking_ctx_t  *ctx = r->ctx;

    ctx->count = cols[0].data ? strtoull((char *) cols[0].data, NULL, 10)
                              : 0;
    return 0;
}


/* columns: contact_jid, sub_to, sub_from */
static int
ngx_xmpp_blocking_contact_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols,
    ngx_uint_t n)
{
    u_char                    flags;
    ngx_xmpp_blocking_ctx_t  *ctx = r->ctx;

    if (cols[0].data == NULL || cols[0].len == 0) {
        return 0;
    }

    flags = (u_char) ((cols[1].len == 1 && cols[1].data[0] == '1')
                      | ((cols[2].len == 1 && cols[2].data[0] == '1') << 1));

    ngx_xmpp_wbuf_add(&ctx->contacts, &flags, 1);
    ngx_xmpp_wbuf_add(&ctx->contacts, cols[0].data, cols[0].len);
    ngx_xmpp_wbuf_add(&ctx->contacts, "", 1);

    return ctx->contacts.failed ? -1 : 0;
}


static int
ngx_xmpp_blocking_left_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols,
    ngx_uint_t n)
{
    ngx_xmpp_blocking_ctx_t  *ctx = r->ctx;

    if (cols[0].data == NULL) {
        return 0;
    }

    ngx_xmpp_wbuf_add(&ctx->left, cols[0].data, cols[0].len);
    ngx_xmpp_wbuf_add(&ctx->left, "", 1);
    ctx->nleft++;

    return ctx->left.failed ? -1 : 0;
}


/*
 * What done() needs for the presence of the user, read in the change's
 * transaction: the subscribed roster items (a block sends unavailable
 * to the "from" ones, section 3.3; an unblock gives them the presence
 * back, section 3.4, RFC 6121 4.3.2) and, for an empty <unblock/>, the
 * items it removes (read before the DELETE).
 */
static int
ngx_xmpp_blocking_contacts(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    ngx_xmpp_blocking_ctx_t  *ctx = r->ctx;

    if (ctx->op == NGX_XMPP_BLOCKING_UNBLOCK && ctx->nin == 0
        && ngx_xmpp_db_select(conn, r,
               "SELECT jid FROM blocklist WHERE owner_jid = ?",
               &ctx->owner, 1, ngx_xmpp_blocking_row)
           != 0)
    {
        return -1;
    }

    return ngx_xmpp_db_select(conn, r,
        "SELECT contact_jid, sub_to, sub_from FROM roster_item"
        " WHERE owner_jid = ? AND (sub_to = 1 OR sub_from = 1)",
        &ctx->owner, 1, ngx_xmpp_blocking_contact_row);
}


/* pool thread: the change in one transaction, the limit checked in it */
static int
ngx_xmpp_blocking_change(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    u_char                   *p;
    ngx_str_t                 par[2];
    ngx_uint_t                i;
    ngx_xmpp_blocking_ctx_t  *ctx = r->ctx;

    par[0] = ctx->owner;

    if (ngx_xmpp_blocking_contacts(conn, r) != 0) {
        return -1;
    }

    if (ctx->op == NGX_XMPP_BLOCKING_UNBLOCK && ctx->nin == 0) {
        /* section 3.4: an empty <unblock/> empties the list */
        return ngx_xmpp_blocking_sql(conn, r,
                   "DELETE FROM blocklist WHERE owner_jid = ?", par, 1);
    }

    p = ctx->id.data + ctx->id.len + 1;

    for (i = 0; i < ctx->nin; i++) {
        par[1].data = p;
        par[1].len = ngx_strlen(p);
        p += par[1].len + 1;

        if (ngx_xmpp_blocking_sql(conn, r,
                ctx->op == NGX_XMPP_BLOCKING_BLOCK
                ? "INSERT IGNORE INTO blocklist (owner_jid, jid, created_at)"
                  " VALUES (?, ?, UTC_TIMESTAMP(6))"
                : "DELETE FROM blocklist WHERE owner_jid = ? AND jid = ?",
                par, 2)
            != 0)
        {
            return -1;
        }
    }

    if (ctx->op != NGX_XMPP_BLOCKING_BLOCK) {
        /* what still blocks an unblocked contact (a domain, its bare JID) */
        return ngx_xmpp_db_select(conn, r,
                   "SELECT jid FROM blocklist WHERE owner_jid = ?",
                   &ctx->owner, 1, ngx_xmpp_blocking_left_row);
    }

    if (ngx_xmpp_db_select(conn, r,
            "SELECT COUNT(*) FROM blocklist WHERE owner_jid = ?",
            &ctx->owner, 1, ngx_xmpp_blocking_count_row)
        != 0)
    {
        return -1;
    }

    ctx->full = (ctx->count > ctx->max);

    return 0;
}


static int
ngx_xmpp_blocking_run(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    ngx_xmpp_blocking_ctx_t  *ctx = r->ctx;

    if (ctx->op == NGX_XMPP_BLOCKING_LOAD || ctx->op == NGX_XMPP_BLOCKING_GET)
    {
        return ngx_xmpp_db_select(conn, r,
            "SELECT jid FROM blocklist WHERE owner_jid = ? ORDER BY jid",
            &ctx->owner, 1, ngx_xmpp_blocking_row);
    }

    /* one transaction, committed by the adapter (ngx_xmpp_db.c) only if
     * its answer is still to be given; a refused change rolls back */
    if (ngx_xmpp_blocking_change(conn, r) == 0) {
        if (ctx->full) {
            (void) mysql_rollback(conn);
        }

        return 0;
    }

    if (r->db_errno == 0) {
        r->db_errno = mysql_errno(conn);
    }

    return -1;
}


/* replaces the session's copy by the JIDs read (NUL-ended, n of them) */
static void
ngx_xmpp_blocking_set_list(ngx_xmpp_blocklist_t *bl, ngx_xmpp_wbuf_t *jids,
    ngx_uint_t n)
{
    ngx_xmpp_wbuf_free(&bl->list);

    bl->list = *jids;
    bl->n = n;

    ngx_memzero(jids, sizeof(ngx_xmpp_wbuf_t));
}


/*
 * The stanzas that waited for the list go through the router's check,
 * and the probes that waited are answered, in the order they came.
 */
void
ngx_xmpp_blocking_release(ngx_xmpp_session_t *s)
{
    u_char                *p, *last;
    size_t                 len;
    ngx_uint_t             parked;
    ngx_xmpp_wbuf_t        pending;
    ngx_xmpp_blocklist_t  *bl;

    bl = s->blocklist;
    parked = (ngx_xmpp_session_find(s->id) != s);
    pending = bl->pending;
    ngx_memzero(&bl->pending, sizeof(ngx_xmpp_wbuf_t));
    bl->npending = 0;

    p = pending.start;
    last = pending.last;

    while (p && last - p >= (ssize_t) sizeof(size_t)) {
        ngx_memcpy(&len, p, sizeof(size_t));
        p += sizeof(size_t);

        if ((size_t) (last - p) < len) {
            break;
        }

        if (len && p[0] == '?') {
            /* a probe that waited (ngx_xmpp_blocking_probe_wait()) */
            ngx_xmpp_presence_probe_local(s->id, p + 1, len - 1);

        } else if (parked) {
            /* XEP-0198: checked now, and queued for the client */
            (void) ngx_xmpp_sm_deliver(s->id, p, len);

        } else {
            (void) ngx_xmpp_router_inbound(s, p, len);
        }

        p += len;
    }

    ngx_xmpp_wbuf_free(&pending);
}


static void
ngx_xmpp_blocking_reply_list(ngx_xmpp_session_t *s, ngx_str_t *id,
    ngx_xmpp_blocking_ctx_t *ctx)
{
    u_char           *p;
    size_t            len;
    ngx_uint_t        i;
    ngx_xmpp_wbuf_t   b;

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = (ctx->out.last - ctx->out.start) * 6 + 4096;

    ngx_xmpp_wbuf_lit(&b, "<iq xmlns='" NGX_XMPP_NS_CLIENT "' type='result'"
                      " to='");
    ngx_xmpp_wbuf_escs(&b, &s->jid.full);
    ngx_xmpp_wbuf_lit(&b, "' id='");
    ngx_xmpp_wbuf_escs(&b, id);
    ngx_xmpp_wbuf_lit(&b, "'><blocklist xmlns='" NGX_XMPP_NS_BLOCKING "'>");

    p = ctx->out.start;

    for (i = 0; i < ctx->nout; i++) {
        len = ngx_strlen(p);
        ngx_xmpp_wbuf_lit(&b, "<item jid='");
        ngx_xmpp_wbuf_esc(&b, p, len);
        ngx_xmpp_wbuf_lit(&b, "'/>");
        p += len + 1;
    }

    ngx_xmpp_wbuf_lit(&b, "</blocklist></iq>");

    (void) ngx_xmpp_session_send_wbuf(s, &b);
    ngx_xmpp_wbuf_free(&b);
}


static void
ngx_xmpp_blocking_iq_error(ngx_xmpp_session_t *s, ngx_str_t *id,
    const char *type, const char *condition, const char *text)
{
    ngx_xmpp_delivery_t  d;

    ngx_memzero(&d, sizeof(ngx_xmpp_delivery_t));
    d.kind = NGX_XMPP_STANZA_IQ;
    d.id = *id;
    d.to.full = s->jid.bare;

    ngx_xmpp_router_bounce_text(s, &d, type, condition, text);
}


static void
ngx_xmpp_blocking_result(ngx_xmpp_session_t *s, ngx_str_t *id)
{
    ngx_xmpp_wbuf_t  b;

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = 4096 + 6 * id->len;

    ngx_xmpp_wbuf_lit(&b, "<iq xmlns='" NGX_XMPP_NS_CLIENT "' type='result'"
                      " from='");
    ngx_xmpp_wbuf_escs(&b, &s->jid.bare);
    ngx_xmpp_wbuf_lit(&b, "' to='");
    ngx_xmpp_wbuf_escs(&b, &s->jid.full);
    ngx_xmpp_wbuf_lit(&b, "' id='");
    ngx_xmpp_wbuf_escs(&b, id);
    ngx_xmpp_wbuf_lit(&b, "'/>");

    (void) ngx_xmpp_session_send_wbuf(s, &b);
    ngx_xmpp_wbuf_free(&b);
}


/*
 * The change reaches every session of the user: (pid, sid) pairs are
 * taken first, since applying a change routes presence (and so looks
 * routes up again).  The other workers reached are given in pids (each
 * once) for ngx_xmpp_blockpres_changed().
 */
static ngx_uint_t
ngx_xmpp_blocking_tell(ngx_xmpp_conf_t *xcf, ngx_str_t *owner, u_char op,
    u_char *jids, size_t len, ngx_pid_t *pids)
{
    u_char            *data;
    ngx_uint_t         i, j, n, m;
    ngx_xmpp_route_t  *routes;
    ngx_pid_t          pid[NGX_XMPP_ROUTE_MAX];
    uint64_t           sid[NGX_XMPP_ROUTE_MAX];

    routes = ngx_xmpp_router_routes();
    n = ngx_xmpp_registry_lookup(xcf, owner, routes, NGX_XMPP_ROUTE_MAX);

    for (i = 0; i < n; i++) {
        pid[i] = routes[i].pid;
        sid[i] = routes[i].sid;
    }

    data = ngx_alloc(len + 1, ngx_cycle->log);
    if (data == NULL) {
        return 0;
    }

    data[0] = op;
    if (len) {
        ngx_memcpy(data + 1, jids, len);
    }

    m = 0;

    for (i = 0; i < n; i++) {
        if (pid[i] == ngx_pid) {
            ngx_xmpp_blocking_ipc(sid[i], data, len + 1);
            continue;
        }

        if (ngx_xmpp_ipc_send(pid[i], NGX_XMPP_IPC_BLOCKING, sid[i], data,
                              len + 1)
            != NGX_OK)
        {
            continue;
        }

        for (j = 0; j < m && pids[j] != pid[i]; j++) { /* void */ }

        if (j == m) {
            pids[m++] = pid[i];
        }
    }

    ngx_free(data);

    return m;
}


static void
ngx_xmpp_blocking_loaded(ngx_xmpp_db_req_t *r)
{
    ngx_xmpp_session_t       *s;
    ngx_xmpp_blocklist_t     *bl;
    ngx_xmpp_blocking_ctx_t  *ctx = r->ctx;

    bl = r->data;
    bl->req = NULL;
    s = bl->session;

    if (r->rc != NGX_XMPP_DB_OK) {
        /* documented: delivery goes on without the list (docs) */
        ngx_log_error(NGX_LOG_ERR, s->connection->log, 0,
                      "xmpp: blocklist of %V not read (%ui): %s",
                      &ctx->owner, r->rc, r->err);

    } else if (bl->stale) {
        /*
         * A change reached the session while its list was read, maybe
         * before it was committed: the list is read again, and what
         * waits goes on waiting for it.
         */
        bl->stale = 0;

        if (ngx_xmpp_blocking_load(s) == NGX_OK) {
            return;
        }

    } else {
        ngx_xmpp_blocking_set_list(bl, &ctx->out, ctx->nout);
    }

    bl->loaded = 1;
    ngx_xmpp_blocking_release(s);
}


static void
ngx_xmpp_blocking_done(ngx_xmpp_db_req_t *r)
{
    size_t                       len;
    ngx_pid_t                    pids[NGX_XMPP_ROUTE_MAX];
    ngx_uint_t                   npids;
    ngx_xmpp_conf_t             *xcf;
    ngx_xmpp_session_t          *s;
    ngx_xmpp_blocking_ctx_t     *ctx = r->ctx;
    ngx_xmpp_blocking_change_t   ch;

    if (ctx->op == NGX_XMPP_BLOCKING_LOAD) {
        ngx_xmpp_blocking_loaded(r);
        return;
    }

    s = ngx_xmpp_session_find(ctx->sid);

    if (s && (!s->bound || s->blocklist == NULL)) {
        s = NULL;
    }

    if (r->rc != NGX_XMPP_DB_OK) {
        ngx_log_error(NGX_LOG_ERR, s ? s->connection->log : ngx_cycle->log,
                      0, "xmpp: blocklist of %V: %ui: %s",
                      &ctx->owner, r->rc, r->err);

        if (s) {
            ngx_xmpp_blocking_iq_error(s, &ctx->id, "wait",
                                       "internal-server-error",
                                       "the blocklist is unavailable");
        }

        return;
    }

    if (ctx->op == NGX_XMPP_BLOCKING_GET) {
        if (s) {
            /* section 3.2: from now on this client gets the pushes */
            s->blocklist->requested = 1;
            ngx_xmpp_blocking_reply_list(s, &ctx->id, ctx);
            ngx_xmpp_blocking_set_list(s->blocklist, &ctx->out, ctx->nout);
        }

        return;
    }

    if (ctx->full) {
        if (s) {
            ngx_xmpp_blocking_iq_error(s, &ctx->id, "cancel",
                                       "not-acceptable",
                                       "the blocklist is full");
        }

        return;
    }

    if (s) {
        ngx_xmpp_blocking_result(s, &ctx->id);
    }

    /*
     * Committed: every session of the user hears of it even if the one
     * that asked is gone meanwhile (section 3.3: the pushes).
     */
    xcf = ngx_xmpp_cycle_conf((ngx_cycle_t *) ngx_cycle);

    ngx_memzero(&ch, sizeof(ngx_xmpp_blocking_change_t));
    ch.owner = ctx->owner;
    ch.op = ctx->op == NGX_XMPP_BLOCKING_BLOCK ? 'b' : (ctx->nin ? 'u' : 'a');
    ch.items.start = ctx->id.data + ctx->id.len + 1;
    ch.items.last = ctx->in.last;
    ch.items.n = ctx->nin;
    len = ch.items.last - ch.items.start;

    npids = ngx_xmpp_blocking_tell(xcf, &ctx->owner, ch.op, ch.items.start,
                                   len, pids);

    if (ch.op == 'a') {
        ch.items.start = ctx->out.start;
        ch.items.last = ctx->out.last;
        ch.items.n = ctx->nout;
    }

    ch.contacts = ctx->contacts.start;
    ch.contacts_end = ctx->contacts.last;
    ch.left.start = ctx->left.start;
    ch.left.last = ctx->left.last;
    ch.left.n = ctx->nleft;

    ngx_xmpp_blockpres_changed(xcf, &ch, pids, npids);
}


static ngx_xmpp_db_req_t *
ngx_xmpp_blocking_req(ngx_xmpp_session_t *s, ngx_uint_t op, ngx_str_t *id)
{
    ngx_xmpp_db_req_t        *r;
    ngx_xmpp_blocking_ctx_t  *ctx;

    /*
     * The cycle's log: a request that timed out may finish after the
     * session (and its connection's log) is gone, and is logged then.
     */
    r = ngx_xmpp_db_create(s->conf, sizeof(ngx_xmpp_blocking_ctx_t),
                           ngx_cycle->log);
    if (r == NULL) {
        return NULL;
    }

    r->run = ngx_xmpp_blocking_run;
    r->done = ngx_xmpp_blocking_done;
    r->cleanup = ngx_xmpp_blocking_ctx_free;

    /* a sign-in's load and a get read one statement: no COMMIT */
    r->readonly = (op == NGX_XMPP_BLOCKING_LOAD
                   || op == NGX_XMPP_BLOCKING_GET);

    ctx = r->ctx;
    ctx->op = op;
    ctx->sid = s->id;
    ctx->max = s->conf->blocklist_max;
    ctx->in.max = s->conf->max_stanza_size + 4096;
    ctx->out.max = (size_t) s->conf->blocklist_max
                   * (NGX_XMPP_BLOCKING_JID_MAX + 1) + 4096;
    ctx->contacts.max = (s->conf->roster_max_items + 1) * 260;
    ctx->left.max = ctx->out.max;

    /* owner and id first: the strings point into the buffer */
    ngx_xmpp_wbuf_nstr(&ctx->in, &s->jid.bare);
    ngx_xmpp_wbuf_add(&ctx->in, "", 1);
    ngx_xmpp_wbuf_nstr(&ctx->in, id);
    ngx_xmpp_wbuf_add(&ctx->in, "", 1);

    if (ctx->in.failed) {
        ngx_xmpp_db_destroy(r);
        return NULL;
    }

    ctx->owner.data = ctx->in.start;
    ctx->owner.len = s->jid.bare.len;
    ctx->id.data = ctx->in.start + s->jid.bare.len + 1;
    ctx->id.len = id->len;

    return r;
}


static ngx_xmpp_blocklist_t *
ngx_xmpp_blocking_new(ngx_xmpp_session_t *s)
{
    ngx_pool_cleanup_t    *cln;
    ngx_xmpp_blocklist_t  *bl;

    if (s->blocklist) {
        return s->blocklist;
    }

    bl = ngx_pcalloc(s->pool, sizeof(ngx_xmpp_blocklist_t));
    if (bl == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(s->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_xmpp_blocking_cleanup;
    cln->data = bl;

    bl->session = s;
    bl->list.max = (size_t) s->conf->blocklist_max
                   * (NGX_XMPP_BLOCKING_JID_MAX + 1) + 4096;
    bl->pending.max = NGX_XMPP_BLOCKING_PENDING_SIZE;
    bl->deferred.max = bl->list.max;
    s->blocklist = bl;

    return bl;
}


/* the list is read (again), through the db adapter; NGX_OK: posted */
static ngx_int_t
ngx_xmpp_blocking_load(ngx_xmpp_session_t *s)
{
    ngx_str_t           none = ngx_string("");
    ngx_xmpp_db_req_t  *r;

    r = ngx_xmpp_blocking_req(s, NGX_XMPP_BLOCKING_LOAD, &none);
    if (r == NULL) {
        /* no MariaDB for chat (or no memory): no blocklist either */
        return NGX_DECLINED;
    }

    r->data = s->blocklist;

    if (ngx_xmpp_db_post(r) != NGX_OK) {
        ngx_xmpp_db_destroy(r);
        ngx_log_error(NGX_LOG_ERR, s->connection->log, 0,
                      "xmpp: blocklist of %V not read: no thread",
                      &s->jid.bare);
        return NGX_ERROR;
    }

    s->blocklist->req = r;

    return NGX_OK;
}


/* at bind or resumption: the session reads its user's blocklist */
void
ngx_xmpp_blocking_start(ngx_xmpp_session_t *s)
{
    ngx_xmpp_blocklist_t  *bl;

    if (s->blocklist && (s->blocklist->req || s->blocklist->loaded)) {
        return;
    }

    bl = ngx_xmpp_blocking_new(s);
    if (bl == NULL) {
        return;
    }

    if (ngx_xmpp_blocking_load(s) != NGX_OK) {
        bl->loaded = 1;
    }
}


/*
 * XEP-0198 section 5: a resumed session reads the list afresh (it is
 * read after every change that reached the parked session was
 * committed) and keeps getting the pushes if its client asked.
 */
void
ngx_xmpp_blocking_resume(ngx_xmpp_session_t *s, ngx_uint_t requested)
{
    ngx_xmpp_blocking_start(s);

    if (requested && s->blocklist) {
        s->blocklist->requested = 1;
    }
}


/*
 * A change that reached the session while it waited for the old
 * worker's state (resuming, not bound yet) is kept, and applied once
 * <resumed/> and the old stanzas are out: its push then follows them,
 * in the order of the changes.
 */
static void
ngx_xmpp_blocking_defer(ngx_xmpp_session_t *s, u_char *data, size_t len)
{
    ngx_xmpp_blocklist_t  *bl;

    bl = ngx_xmpp_blocking_new(s);
    if (bl == NULL) {
        return;
    }

    ngx_xmpp_wbuf_add(&bl->deferred, &len, sizeof(size_t));
    ngx_xmpp_wbuf_add(&bl->deferred, data, len);

    if (bl->deferred.failed) {
        ngx_log_error(NGX_LOG_WARN, s->connection->log, 0,
                      "xmpp: a blocklist change not pushed to a resuming "
                      "session");
    }
}


void
ngx_xmpp_blocking_replay(ngx_xmpp_session_t *s)
{
    u_char                *p, *last;
    size_t                 len;
    ngx_xmpp_wbuf_t        deferred;
    ngx_xmpp_blocklist_t  *bl;

    bl = s->blocklist;

    if (bl == NULL || bl->deferred.start == NULL) {
        return;
    }

    deferred = bl->deferred;
    ngx_memzero(&bl->deferred, sizeof(ngx_xmpp_wbuf_t));
    bl->deferred.max = deferred.max;

    p = deferred.start;
    last = deferred.failed ? deferred.start : deferred.last;

    while (last - p > (ssize_t) sizeof(size_t)) {
        ngx_memcpy(&len, p, sizeof(size_t));
        p += sizeof(size_t);

        if ((size_t) (last - p) < len || len == 0) {
            break;
        }

        ngx_xmpp_blocking_apply(s, p[0], p + 1, len - 1, 1);
        p += len;
    }

    ngx_xmpp_wbuf_free(&deferred);
}


/*
 * Section 3.2: a client that asked for the list gets the pushes; a
 * resumed session (XEP-0198) still does, and reads the list afresh,
 * since changes made while it was parked reached no session of it.
 */
ngx_uint_t
ngx_xmpp_blocking_requested(ngx_xmpp_session_t *s)
{
    return s->blocklist != NULL && s->blocklist->requested;
}


/*
 * The push of a change (section 3.3, 3.4: op 'b' block, 'u' unblock,
 * 'a' unblock all; jids NUL-ended) for the client of "to".
 */
ngx_int_t
ngx_xmpp_blocking_push(ngx_xmpp_wbuf_t *b, ngx_str_t *to, u_char op,
    u_char *jids, size_t len)
{
    u_char  *q, *last;

    static ngx_uint_t  push_id;

    ngx_memzero(b, sizeof(ngx_xmpp_wbuf_t));
    b->max = 6 * len + 6 * to->len + 4096;
    last = jids + len;

    ngx_xmpp_wbuf_lit(b, "<iq xmlns='" NGX_XMPP_NS_CLIENT "' type='set'"
                      " to='");
    ngx_xmpp_wbuf_escs(b, to);

    if (!b->failed) {
        b->last = ngx_sprintf(b->last, "' id='block-push-%ui'>", ++push_id);
    }

    ngx_xmpp_wbuf_str(b, op == 'b' ? "<block" : "<unblock");
    ngx_xmpp_wbuf_lit(b, " xmlns='" NGX_XMPP_NS_BLOCKING "'>");

    for (q = jids; op != 'a' && q < last; q += ngx_strlen(q) + 1) {
        ngx_xmpp_wbuf_lit(b, "<item jid='");
        ngx_xmpp_wbuf_esc(b, q, ngx_strlen(q));
        ngx_xmpp_wbuf_lit(b, "'/>");
    }

    ngx_xmpp_wbuf_str(b, op == 'b' ? "</block></iq>" : "</unblock></iq>");

    if (b->failed) {
        ngx_xmpp_wbuf_free(b);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the session's copy without the JIDs named, then with the new ones */
static void
ngx_xmpp_blocking_update(ngx_xmpp_session_t *s, u_char op, u_char *jids,
    size_t len)
{
    u_char                *p, *q, *last;
    size_t                 l;
    ngx_uint_t             i, keep;
    ngx_xmpp_wbuf_t        list;
    ngx_xmpp_blocklist_t  *bl;

    bl = s->blocklist;
    last = jids + len;

    ngx_memzero(&list, sizeof(ngx_xmpp_wbuf_t));
    list.max = bl->list.max;
    keep = 0;

    p = bl->list.start;

    for (i = 0; op != 'a' && i < bl->n; i++) {
        l = ngx_strlen(p);

        for (q = jids; q < last; q += ngx_strlen(q) + 1) {
            if (ngx_strlen(q) == l && ngx_memcmp(q, p, l) == 0) {
                break;
            }
        }

        if (q >= last) {
            ngx_xmpp_wbuf_add(&list, p, l + 1);
            keep++;
        }

        p += l + 1;
    }

    for (q = jids; op == 'b' && q < last; q += ngx_strlen(q) + 1) {
        ngx_xmpp_wbuf_add(&list, q, ngx_strlen(q) + 1);
        keep++;
    }

    if (list.failed) {
        ngx_xmpp_wbuf_free(&list);
        ngx_log_error(NGX_LOG_ERR, s->connection->log, 0,
                      "xmpp: blocklist of %V not updated", &s->jid.bare);
        return;
    }

    ngx_xmpp_blocking_set_list(bl, &list, keep);
}


/*
 * Section 3.3/3.4 in one session: the copy changes, the client hears
 * of it if it asked for the list, and a newly blocked target of the
 * session's directed presence sees it go offline.  replay: a deferred
 * change, already in the list the session reads.
 */
static void
ngx_xmpp_blocking_apply(ngx_xmpp_session_t *s, u_char op, u_char *jids,
    size_t len, ngx_uint_t replay)
{
    ngx_xmpp_wbuf_t        b;
    ngx_xmpp_blocklist_t  *bl;

    bl = s->blocklist;
    if (bl == NULL) {
        return;
    }

    /*
     * While the list is still read too: the user's own stanzas are
     * checked against this copy (ngx_xmpp_blocking_outbound()), and
     * once <block/> was answered, one to that JID must be refused
     * (section 3.5); the read replaces the copy when it comes.
     */
    ngx_xmpp_blocking_update(s, op, jids, len);

    if (!bl->loaded && !replay) {
        /* the list being read may predate the change: read it again */
        bl->stale = 1;
    }

    if (bl->requested
        && ngx_xmpp_blocking_push(&b, &s->jid.full, op, jids, len) == NGX_OK)
    {
        (void) ngx_xmpp_session_send_wbuf(s, &b);
        ngx_xmpp_wbuf_free(&b);
    }

    if (op == 'b') {
        ngx_xmpp_blockpres_directed(s, jids, len);
    }
}


/*
 * A change for the session sid of this worker: applied by a live one,
 * kept by one being resumed here, and for a parked one (XEP-0198) see
 * ngx_xmpp_sm_blocking().
 */
void
ngx_xmpp_blocking_ipc(uint64_t sid, u_char *data, size_t len)
{
    ngx_xmpp_session_t  *s;

    if (len == 0) {
        return;
    }

    s = ngx_xmpp_session_find(sid);

    if (s == NULL) {
        ngx_xmpp_sm_blocking(sid, data, len);
        return;
    }

    if (!s->bound) {
        if (ngx_xmpp_sm_resuming(s)) {
            ngx_xmpp_blocking_defer(s, data, len);
        }

        return;
    }

    ngx_xmpp_blocking_apply(s, data[0], data + 1, len - 1, 0);
}


/*
 * XEP-0198 section 5: the session is parked.  Its copy of the list goes
 * with it (moved, not read again), so that what a parked session still
 * does for the user reveals nothing to a blocked JID (XEP-0191 3.3):
 * it answers probes (RFC 6121 4.3.2), its directed presence ends at the
 * timeout, and what it queues for the client passes section 3.5 when
 * it is queued (ngx_xmpp_sm_deliver()).  A list still being read is
 * read again for the parked session.
 */
void
ngx_xmpp_blocking_park(ngx_xmpp_session_t *s, ngx_xmpp_session_t *ghost)
{
    ngx_xmpp_blocklist_t  *bl, *gbl;

    bl = s->blocklist;

    if (bl == NULL) {
        return;
    }

    gbl = ngx_xmpp_blocking_new(ghost);
    if (gbl == NULL) {
        ngx_log_error(NGX_LOG_ERR, s->connection->log, 0,
                      "xmpp: blocklist of parked \"%V\" not kept",
                      &s->jid.full);
        return;
    }

    gbl->requested = bl->requested;

    if (bl->loaded) {
        ngx_xmpp_blocking_set_list(gbl, &bl->list, bl->n);
        bl->n = 0;
        gbl->loaded = 1;
        return;
    }

    /* what waits for the list waits with the parked session */
    ngx_xmpp_wbuf_free(&gbl->pending);
    gbl->pending = bl->pending;
    gbl->npending = bl->npending;
    ngx_memzero(&bl->pending, sizeof(ngx_xmpp_wbuf_t));
    bl->pending.max = gbl->pending.max;
    bl->npending = 0;

    if (ngx_xmpp_blocking_load(ghost) != NGX_OK) {
        gbl->loaded = 1;
        ngx_xmpp_blocking_release(ghost);
    }
}


/*
 * XEP-0198 section 5: the parked session is taken over while its list
 * is still being read (ngx_xmpp_blocking_park()).  What waits for the
 * list is not in its unacked queue yet: it goes with the session, to
 * wait for the resuming session's own list, behind the queue and ahead
 * of anything routed later (RFC 6120 10.1).  Released here, it would
 * be forwarded once the read is done, after later stanzas of the same
 * senders.  *pending: [size_t len][stanza, or '?' and a probe's JID].
 */
void
ngx_xmpp_blocking_hand_over(ngx_xmpp_session_t *ghost,
    ngx_xmpp_wbuf_t *pending)
{
    ngx_xmpp_blocklist_t  *bl;

    bl = ghost->blocklist;

    if (bl == NULL) {
        ngx_memzero(pending, sizeof(ngx_xmpp_wbuf_t));
        return;
    }

    *pending = bl->pending;
    ngx_memzero(&bl->pending, sizeof(ngx_xmpp_wbuf_t));
    bl->pending.max = pending->max;
    bl->npending = 0;
}


/*
 * Section 3.5 for a stanza queued for a parked session: NGX_OK when it
 * is consumed (from a blocked JID: dropped, or answered with an error
 * as for a live session), NGX_DECLINED when it is queued.
 */
ngx_int_t
ngx_xmpp_blocking_parked_inbound(ngx_xmpp_session_t *ghost, u_char *data,
    size_t len)
{
    if (ghost->blocklist == NULL) {
        return NGX_DECLINED;
    }

    /* a list still being read: it waits (ngx_xmpp_blocking_release()) */
    return ngx_xmpp_blocking_inbound(ghost, data, len);
}


/*
 * A change for a parked session (XEP-0198 section 5): the push is
 * queued as any stanza routed to it while it is away, so the client
 * gets the pushes it missed, in order, when it resumes (on any worker:
 * the queue goes with the session); the resumed session then reads the
 * list itself.  Its directed presence is handled now, as for a live
 * one: to everyone else it is still online.
 */
void
ngx_xmpp_blocking_parked(ngx_xmpp_session_t *ghost, ngx_uint_t requested,
    u_char *data, size_t len)
{
    ngx_xmpp_wbuf_t  b;

    if (len == 0) {
        return;
    }

    /* its copy follows, for the probes it answers meanwhile */
    if (ghost->blocklist && ghost->blocklist->loaded) {
        ngx_xmpp_blocking_update(ghost, data[0], data + 1, len - 1);

    } else if (ghost->blocklist) {
        ghost->blocklist->stale = 1;
    }

    if (requested
        && ngx_xmpp_blocking_push(&b, &ghost->jid.full, data[0], data + 1,
                                  len - 1)
           == NGX_OK)
    {
        if (ngx_xmpp_sm_deliver(ghost->id, b.start, b.last - b.start)
            != NGX_OK)
        {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "xmpp: blocklist push for parked \"%V\" not "
                          "queued", &ghost->jid.full);
        }

        ngx_xmpp_wbuf_free(&b);
    }

    if (data[0] == 'b') {
        ngx_xmpp_blockpres_directed(ghost, data + 1, len - 1);
    }
}


/*
 * <blocklist/> (get), <block/> and <unblock/> (set), sections 3.2-3.4.
 * Every item is checked before anything is stored: one bad JID refuses
 * the whole request with <jid-malformed/>.
 */
void
ngx_xmpp_blocking_iq(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_node_t *q)
{
    ngx_str_t                *v;
    ngx_uint_t                get, op, n;
    ngx_xmpp_jid_t            jid;
    ngx_xmpp_node_t          *c;
    ngx_xmpp_db_req_t        *r;
    ngx_xmpp_blocking_ctx_t  *ctx;

    get = (st->type.len == 3 && ngx_strncmp(st->type.data, "get", 3) == 0);

    if (q->name.len == 9 && ngx_strncmp(q->name.data, "blocklist", 9) == 0) {
        op = NGX_XMPP_BLOCKING_GET;

    } else if (q->name.len == 5
               && ngx_strncmp(q->name.data, "block", 5) == 0)
    {
        op = NGX_XMPP_BLOCKING_BLOCK;

    } else if (q->name.len == 7
               && ngx_strncmp(q->name.data, "unblock", 7) == 0)
    {
        op = NGX_XMPP_BLOCKING_UNBLOCK;

    } else {
        ngx_xmpp_router_error(s, st, "cancel", "feature-not-implemented");
        return;
    }

    if (get != (op == NGX_XMPP_BLOCKING_GET) || s->blocklist == NULL) {
        ngx_xmpp_router_error(s, st, "modify", "bad-request");
        return;
    }

    r = ngx_xmpp_blocking_req(s, op, &st->id);
    if (r == NULL) {
        ngx_xmpp_router_error(s, st, "wait", "internal-server-error");
        return;
    }

    ctx = r->ctx;
    n = 0;

    for (c = q->child; op != NGX_XMPP_BLOCKING_GET && c; c = c->next) {
        if (c->name.len == 0) {
            continue;    /* whitespace */
        }

        v = ngx_xmpp_node_attr(c, "jid");

        if (!(c->name.len == 4 && ngx_strncmp(c->name.data, "item", 4) == 0)
            || v == NULL)
        {
            ngx_xmpp_db_destroy(r);
            ngx_xmpp_router_error(s, st, "modify", "bad-request");
            return;
        }

        if (ngx_xmpp_jid_parse(st->pool, v, &jid) != NGX_OK
            || jid.full.len > NGX_XMPP_BLOCKING_JID_MAX)
        {
            ngx_xmpp_db_destroy(r);
            ngx_xmpp_router_error(s, st, "modify", "jid-malformed");
            return;
        }

        if (++n > s->conf->blocklist_max) {
            ngx_xmpp_db_destroy(r);
            ngx_xmpp_router_error(s, st, "cancel", "not-acceptable");
            return;
        }

        ngx_xmpp_wbuf_nstr(&ctx->in, &jid.full);
        ngx_xmpp_wbuf_add(&ctx->in, "", 1);
    }

    /* section 3.3: a <block/> without items is a bad request */
    if (op == NGX_XMPP_BLOCKING_BLOCK && n == 0) {
        ngx_xmpp_db_destroy(r);
        ngx_xmpp_router_error(s, st, "modify", "bad-request");
        return;
    }

    if (ctx->in.failed) {
        ngx_xmpp_db_destroy(r);
        ngx_xmpp_router_error(s, st, "modify", "not-acceptable");
        return;
    }

    /* the buffer may have moved while it grew */
    ctx->owner.data = ctx->in.start;
    ctx->id.data = ctx->in.start + ctx->owner.len + 1;
    ctx->nin = n;

    if (ngx_xmpp_db_post(r) != NGX_OK) {
        ngx_xmpp_db_destroy(r);
        ngx_xmpp_router_error(s, st, "wait", "internal-server-error");
    }
}
