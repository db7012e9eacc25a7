
/*
 * XEP-0191 Blocking Command (urn:xmpp:blocking).  The blocklist of a
 * user is stored in MariaDB (table blocklist, audit/schema/
 * 007_blocking.sql) and cached in each of the user's sessions, so that
 * enforcement costs no query per stanza:
 *
 *   - the session reads the list once, when it is bound (or resumed),
 *     through the db adapter (a pool thread, a timer); stanzas for it
 *     that arrive meanwhile wait in a small bounded queue and are
 *     checked once the list is there;
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

#include <mysql.h>


#define NGX_XMPP_BLOCKING_JID_MAX      512    /* the column's width */
#define NGX_XMPP_BLOCKING_PENDING      64
#define NGX_XMPP_BLOCKING_PENDING_SIZE (256 * 1024)
#define NGX_XMPP_BLOCKING_FROM_MAX     (3 * NGX_XMPP_JID_PART_MAX + 3)

#define NGX_XMPP_BLOCKING_LOAD         0
#define NGX_XMPP_BLOCKING_GET          1
#define NGX_XMPP_BLOCKING_BLOCK        2
#define NGX_XMPP_BLOCKING_UNBLOCK      3


struct ngx_xmpp_blocklist_s {
    ngx_xmpp_session_t    *session;
    ngx_xmpp_db_req_t     *req;           /* the load, until done */
    ngx_xmpp_wbuf_t        list;          /* the JIDs, each NUL-ended */
    ngx_uint_t             n;
    ngx_xmpp_wbuf_t        pending;       /* [size_t len][stanza] ... */
    ngx_uint_t             npending;
    unsigned               loaded:1;
    unsigned               requested:1;   /* the client asked for it */
};


typedef struct {
    ngx_uint_t             op;
    uint64_t               sid;
    ngx_str_t              owner;
    ngx_str_t              id;
    ngx_xmpp_wbuf_t        in;            /* owner, id, JIDs: NUL-ended */
    ngx_uint_t             nin;
    ngx_xmpp_wbuf_t        out;           /* JIDs read, NUL-ended */
    ngx_uint_t             nout;
    ngx_xmpp_wbuf_t        contacts;      /* unblock: [flags][JID NUL] */
    uint64_t               count;
    ngx_uint_t             max;
    unsigned               full:1;
} ngx_xmpp_blocking_ctx_t;


static void ngx_xmpp_blocking_apply(ngx_xmpp_session_t *s, u_char op,
    u_char *jids, size_t len);
static void ngx_xmpp_blocking_presence_back(ngx_xmpp_session_t *s,
    ngx_xmpp_blocking_ctx_t *ctx, u_char *items, size_t len);


/* the bounce of a refused stanza looks routes up while others iterate */
static ngx_xmpp_route_t  ngx_xmpp_blocking_routes[NGX_XMPP_ROUTE_MAX];


static ngx_int_t
ngx_xmpp_blocking_eq(u_char *a, size_t alen, u_char *b, size_t blen)
{
    return alen == blen && ngx_memcmp(a, b, alen) == 0;
}


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
}


static void
ngx_xmpp_blocking_ctx_free(ngx_xmpp_db_req_t *r)
{
    ngx_xmpp_blocking_ctx_t  *ctx = r->ctx;

    ngx_xmpp_wbuf_free(&ctx->in);
    ngx_xmpp_wbuf_free(&ctx->out);
    ngx_xmpp_wbuf_free(&ctx->contacts);
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


/*
 * Section 3.4 (unblock): what done() needs to give the unblocked
 * contacts the user's presence back (RFC 6121 4.3.2, 4.2.2): the
 * subscribed roster items, and, for an empty <unblock/>, the items it
 * removes (read before the DELETE, in the same transaction).
 */
static int
ngx_xmpp_blocking_unblocked(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    int                       rc;
    MYSQL_STMT               *stmt;
    ngx_xmpp_blocking_ctx_t  *ctx = r->ctx;

    if (ctx->nin == 0) {
        stmt = ngx_xmpp_db_exec(conn, r,
            "SELECT jid FROM blocklist WHERE owner_jid = ?", &ctx->owner, 1);
        if (stmt == NULL) {
            return -1;
        }

        rc = ngx_xmpp_db_rows(stmt, r, ngx_xmpp_blocking_row);
        (void) mysql_stmt_close(stmt);

        if (rc != 0) {
            return -1;
        }
    }

    stmt = ngx_xmpp_db_exec(conn, r,
        "SELECT contact_jid, sub_to, sub_from FROM roster_item"
        " WHERE owner_jid = ? AND (sub_to = 1 OR sub_from = 1)",
        &ctx->owner, 1);
    if (stmt == NULL) {
        return -1;
    }

    rc = ngx_xmpp_db_rows(stmt, r, ngx_xmpp_blocking_contact_row);
    (void) mysql_stmt_close(stmt);

    return rc;
}


/* pool thread: the change in one transaction, the limit checked in it */
static int
ngx_xmpp_blocking_change(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    u_char                   *p;
    ngx_str_t                 par[2];
    ngx_uint_t                i;
    MYSQL_STMT               *stmt;
    ngx_xmpp_blocking_ctx_t  *ctx = r->ctx;

    par[0] = ctx->owner;

    if (ctx->op == NGX_XMPP_BLOCKING_UNBLOCK
        && ngx_xmpp_blocking_unblocked(conn, r) != 0)
    {
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
        return 0;
    }

    stmt = ngx_xmpp_db_exec(conn, r,
        "SELECT COUNT(*) FROM blocklist WHERE owner_jid = ?", par, 1);
    if (stmt == NULL) {
        return -1;
    }

    if (ngx_xmpp_db_rows(stmt, r, ngx_xmpp_blocking_count_row) != 0) {
        (void) mysql_stmt_close(stmt);
        return -1;
    }

    (void) mysql_stmt_close(stmt);

    ctx->full = (ctx->count > ctx->max);

    return 0;
}


static int
ngx_xmpp_blocking_run(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    int                       rc;
    MYSQL_STMT               *stmt;
    ngx_xmpp_blocking_ctx_t  *ctx = r->ctx;

    if (ctx->op == NGX_XMPP_BLOCKING_LOAD || ctx->op == NGX_XMPP_BLOCKING_GET)
    {
        stmt = ngx_xmpp_db_exec(conn, r,
            "SELECT jid FROM blocklist WHERE owner_jid = ? ORDER BY jid",
            &ctx->owner, 1);
        if (stmt == NULL) {
            return -1;
        }

        rc = ngx_xmpp_db_rows(stmt, r, ngx_xmpp_blocking_row);
        (void) mysql_stmt_close(stmt);

        return rc;
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


/* the stanzas that waited for the list go through the router's check */
static void
ngx_xmpp_blocking_release(ngx_xmpp_session_t *s)
{
    u_char                *p, *last;
    size_t                 len;
    ngx_xmpp_wbuf_t        pending;
    ngx_xmpp_blocklist_t  *bl;

    bl = s->blocklist;
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

        (void) ngx_xmpp_router_inbound(s, p, len);
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
 * routes up again).
 */
static void
ngx_xmpp_blocking_tell(ngx_xmpp_conf_t *xcf, ngx_str_t *owner, u_char op,
    u_char *jids, size_t len)
{
    u_char              *data;
    ngx_uint_t           i, n;
    ngx_xmpp_route_t    *routes;
    ngx_xmpp_session_t  *s;
    ngx_pid_t            pid[NGX_XMPP_ROUTE_MAX];
    uint64_t             sid[NGX_XMPP_ROUTE_MAX];

    routes = ngx_xmpp_router_routes();
    n = ngx_xmpp_registry_lookup(xcf, owner, routes, NGX_XMPP_ROUTE_MAX);

    for (i = 0; i < n; i++) {
        pid[i] = routes[i].pid;
        sid[i] = routes[i].sid;
    }

    data = ngx_alloc(len + 1, ngx_cycle->log);
    if (data == NULL) {
        return;
    }

    data[0] = op;
    if (len) {
        ngx_memcpy(data + 1, jids, len);
    }

    for (i = 0; i < n; i++) {
        if (pid[i] != ngx_pid) {
            (void) ngx_xmpp_ipc_send(pid[i], NGX_XMPP_IPC_BLOCKING, sid[i],
                                     data, len + 1);
            continue;
        }

        s = ngx_xmpp_session_find(sid[i]);

        if (s && s->bound) {
            ngx_xmpp_blocking_apply(s, op, jids, len);
        }
    }

    ngx_free(data);
}


static void
ngx_xmpp_blocking_done(ngx_xmpp_db_req_t *r)
{
    u_char                   *jids;
    size_t                    len;
    ngx_xmpp_conf_t          *xcf;
    ngx_xmpp_session_t       *s;
    ngx_xmpp_blocklist_t     *bl;
    ngx_xmpp_blocking_ctx_t  *ctx = r->ctx;

    s = ngx_xmpp_session_find(ctx->sid);

    if (ctx->op == NGX_XMPP_BLOCKING_LOAD) {
        bl = r->data;
        bl->req = NULL;
        s = bl->session;

        if (r->rc != NGX_XMPP_DB_OK) {
            /* documented: delivery goes on without the list (docs) */
            ngx_log_error(NGX_LOG_ERR, s->connection->log, 0,
                          "xmpp: blocklist of %V not read (%ui): %s",
                          &ctx->owner, r->rc, r->err);

        } else {
            ngx_xmpp_blocking_set_list(bl, &ctx->out, ctx->nout);
        }

        bl->loaded = 1;
        ngx_xmpp_blocking_release(s);
        return;
    }

    if (s == NULL || !s->bound || s->blocklist == NULL) {
        return;
    }

    if (r->rc != NGX_XMPP_DB_OK) {
        ngx_log_error(NGX_LOG_ERR, s->connection->log, 0,
                      "xmpp: blocklist of %V: %ui: %s",
                      &ctx->owner, r->rc, r->err);
        ngx_xmpp_blocking_iq_error(s, &ctx->id, "wait",
                                   "internal-server-error",
                                   "the blocklist is unavailable");
        return;
    }

    if (ctx->op == NGX_XMPP_BLOCKING_GET) {
        /* section 3.2: from now on this client gets the pushes */
        s->blocklist->requested = 1;
        ngx_xmpp_blocking_reply_list(s, &ctx->id, ctx);
        ngx_xmpp_blocking_set_list(s->blocklist, &ctx->out, ctx->nout);
        return;
    }

    if (ctx->full) {
        ngx_xmpp_blocking_iq_error(s, &ctx->id, "cancel", "not-acceptable",
                                   "the blocklist is full");
        return;
    }

    ngx_xmpp_blocking_result(s, &ctx->id);

    xcf = s->conf;
    jids = ctx->id.data + ctx->id.len + 1;
    len = ctx->in.last - jids;

    ngx_xmpp_blocking_tell(xcf, &ctx->owner,
                           ctx->op == NGX_XMPP_BLOCKING_BLOCK ? 'b'
                           : (ctx->nin ? 'u' : 'a'),
                           jids, len);

    if (ctx->op == NGX_XMPP_BLOCKING_UNBLOCK) {
        /* told first: this session's copy no longer blocks them */
        ngx_xmpp_blocking_presence_back(s, ctx, jids, len);
    }
}


/* one contact given back its presence: see ..._presence_back() */
static void
ngx_xmpp_blocking_contact_back(ngx_xmpp_session_t *s, ngx_str_t *contact,
    ngx_uint_t flags, u_char *items, u_char *last, ngx_uint_t n)
{
    if (!ngx_xmpp_blocking_list_blocks(items, last, n, contact)
        || ngx_xmpp_blocking_blocks(s, contact))
    {
        /* not one of the unblocked, or another item still blocks it */
        return;
    }

    /* a "from" subscription: each available resource of the user */
    if (flags & 2) {
        ngx_xmpp_presence_probe(s->conf, &s->jid.bare, contact);
    }

    /* a "to" subscription: the contact's resources answer a probe */
    if (flags & 1) {
        ngx_xmpp_presence_probe(s->conf, contact, &s->jid.bare);
    }
}


/*
 * Section 3.4: presence was withheld from the contacts while they were
 * blocked (section 3.3), so the unblocked ones that have a subscription
 * get the user's current presence (RFC 6121 4.3.2), and the user's
 * resources the contact's, as a probe would (4.2.2).  Shared directory
 * contacts are subscribed both ways.  items are the unblocked JIDs
 * (NUL-ended); none: the whole old list, read before the DELETE.
 */
static void
ngx_xmpp_blocking_presence_back(ngx_xmpp_session_t *s,
    ngx_xmpp_blocking_ctx_t *ctx, u_char *items, size_t len)
{
    u_char              *p, *end, *last, f;
    ngx_str_t            contact;
    ngx_uint_t           i, n;
    ngx_pool_t          *pool;
    ngx_array_t          shared;
    ngx_xmpp_contact_t  *c;

    n = ctx->nin;
    last = items + len;

    if (n == 0) {
        items = ctx->out.start;
        last = ctx->out.last;
        n = ctx->nout;
    }

    p = ctx->contacts.start;
    end = ctx->contacts.last;

    while (p && end - p >= 2) {
        f = *p++;
        contact.data = p;
        contact.len = ngx_strlen(p);
        p += contact.len + 1;

        ngx_xmpp_blocking_contact_back(s, &contact, f, items, last, n);
    }

    pool = ngx_create_pool(4096, s->connection->log);
    if (pool == NULL) {
        return;
    }

    if (ngx_array_init(&shared, pool, 16, sizeof(ngx_xmpp_contact_t))
        == NGX_OK
        && ngx_xmpp_dir_shared_contacts(&s->jid.bare, pool, &shared)
           == NGX_OK)
    {
        c = shared.elts;

        for (i = 0; i < shared.nelts; i++) {
            ngx_xmpp_blocking_contact_back(s, &c[i].jid, 3, items, last, n);
        }
    }

    ngx_destroy_pool(pool);
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

    ctx = r->ctx;
    ctx->op = op;
    ctx->sid = s->id;
    ctx->max = s->conf->blocklist_max;
    ctx->in.max = s->conf->max_stanza_size + 4096;
    ctx->out.max = (size_t) s->conf->blocklist_max
                   * (NGX_XMPP_BLOCKING_JID_MAX + 1) + 4096;
    ctx->contacts.max = (s->conf->roster_max_items + 1) * 260;

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


/* at bind or resumption: the session reads its user's blocklist */
void
ngx_xmpp_blocking_start(ngx_xmpp_session_t *s)
{
    ngx_str_t              none = ngx_string("");
    ngx_xmpp_db_req_t     *r;
    ngx_pool_cleanup_t    *cln;
    ngx_xmpp_blocklist_t  *bl;

    if (s->blocklist) {
        return;
    }

    bl = ngx_pcalloc(s->pool, sizeof(ngx_xmpp_blocklist_t));
    if (bl == NULL) {
        return;
    }

    cln = ngx_pool_cleanup_add(s->pool, 0);
    if (cln == NULL) {
        return;
    }

    cln->handler = ngx_xmpp_blocking_cleanup;
    cln->data = bl;

    bl->session = s;
    bl->list.max = (size_t) s->conf->blocklist_max
                   * (NGX_XMPP_BLOCKING_JID_MAX + 1) + 4096;
    bl->pending.max = NGX_XMPP_BLOCKING_PENDING_SIZE;
    s->blocklist = bl;

    r = ngx_xmpp_blocking_req(s, NGX_XMPP_BLOCKING_LOAD, &none);
    if (r == NULL) {
        /* no MariaDB for chat (or no memory): no blocklist either */
        bl->loaded = 1;
        return;
    }

    r->data = bl;

    if (ngx_xmpp_db_post(r) != NGX_OK) {
        ngx_xmpp_db_destroy(r);
        ngx_log_error(NGX_LOG_ERR, s->connection->log, 0,
                      "xmpp: blocklist of %V not read: no thread",
                      &s->jid.bare);
        bl->loaded = 1;
        return;
    }

    bl->req = r;
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


void
ngx_xmpp_blocking_set_requested(ngx_xmpp_session_t *s)
{
    if (s->blocklist) {
        s->blocklist->requested = 1;
    }
}


/*
 * Section 3.3/3.4 in one session: the copy changes (op 'b' block, 'u'
 * unblock, 'a' unblock all; jids NUL-ended), the client hears of it if
 * it asked for the list, and a newly blocked contact sees the user's
 * resource go offline.
 */
static void
ngx_xmpp_blocking_apply(ngx_xmpp_session_t *s, u_char op, u_char *jids,
    size_t len)
{
    u_char                *p, *q, *last, *end;
    size_t                 l;
    ngx_uint_t             i, keep;
    ngx_str_t              jid;
    ngx_xmpp_wbuf_t        list, b;
    ngx_xmpp_jid_t         to;
    ngx_xmpp_blocklist_t  *bl;

    static ngx_uint_t  push_id;

    bl = s->blocklist;
    if (bl == NULL) {
        return;
    }

    last = jids + len;

    /* the new copy: the old one without the JIDs named, then the new */
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

    if (bl->requested) {
        ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
        b.max = 6 * len + 4096;

        ngx_xmpp_wbuf_lit(&b, "<iq xmlns='" NGX_XMPP_NS_CLIENT "' type='set'"
                          " to='");
        ngx_xmpp_wbuf_escs(&b, &s->jid.full);
        b.last = ngx_sprintf(b.last, "' id='block-push-%ui'>", ++push_id);
        ngx_xmpp_wbuf_str(&b, op == 'b' ? "<block" : "<unblock");
        ngx_xmpp_wbuf_lit(&b, " xmlns='" NGX_XMPP_NS_BLOCKING "'>");

        for (q = jids; op != 'a' && q < last; q += ngx_strlen(q) + 1) {
            ngx_xmpp_wbuf_lit(&b, "<item jid='");
            ngx_xmpp_wbuf_esc(&b, q, ngx_strlen(q));
            ngx_xmpp_wbuf_lit(&b, "'/>");
        }

        ngx_xmpp_wbuf_str(&b, op == 'b' ? "</block></iq>" : "</unblock></iq>");
        (void) ngx_xmpp_session_send_wbuf(s, &b);
        ngx_xmpp_wbuf_free(&b);
    }

    if (op != 'b' || !s->available) {
        return;
    }

    /* section 3.3: the blocked contact sees this resource go offline */
    for (q = jids; q < last; q = end + 1) {
        end = q + ngx_strlen(q);
        jid.data = q;
        jid.len = end - q;

        if (ngx_xmpp_jid_parse(s->pool, &jid, &to) != NGX_OK
            || to.local.len == 0
            || to.domain.len != s->conf->domain.len
            || ngx_strncmp(to.domain.data, s->conf->domain.data,
                           to.domain.len) != 0)
        {
            continue;
        }

        ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
        b.max = 4096 + 6 * (jid.len + s->jid.full.len);

        ngx_xmpp_wbuf_lit(&b, "<presence xmlns='" NGX_XMPP_NS_CLIENT
                          "' type='unavailable' from='");
        ngx_xmpp_wbuf_escs(&b, &s->jid.full);
        ngx_xmpp_wbuf_lit(&b, "' to='");
        ngx_xmpp_wbuf_escs(&b, &jid);
        ngx_xmpp_wbuf_lit(&b, "'/>");

        if (!b.failed) {
            if (to.resource.len) {
                (void) ngx_xmpp_router_to_full_jid(s->conf, &to, b.start,
                                                   b.last - b.start);
            } else {
                (void) ngx_xmpp_router_to_bare(s->conf, &to.bare,
                                               NGX_XMPP_STANZA_PRESENCE,
                                               NULL, b.start,
                                               b.last - b.start);
            }
        }

        ngx_xmpp_wbuf_free(&b);
    }
}


void
ngx_xmpp_blocking_ipc(uint64_t sid, u_char *data, size_t len)
{
    ngx_xmpp_session_t  *s;

    s = ngx_xmpp_session_find(sid);

    if (s == NULL || !s->bound || len == 0) {
        /* parked (XEP-0198): it reads the list again when resumed */
        return;
    }

    ngx_xmpp_blocking_apply(s, data[0], data + 1, len - 1);
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
        || !ngx_xmpp_blocking_blocks(s, &st->to.full))
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
        if (ngx_xmpp_blocking_wait(bl, data, len) == NGX_OK) {
            return NGX_OK;
        }

        ngx_log_error(NGX_LOG_WARN, s->connection->log, 0,
                      "xmpp: too much for %V while its blocklist is read",
                      &s->jid.full);
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
