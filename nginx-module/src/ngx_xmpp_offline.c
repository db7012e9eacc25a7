
/*
 * Offline messages (XEP-0160, RFC 6121 8.5.2.2.1) in MariaDB, table
 * offline_message (audit/schema/002_chat.sql).
 *
 * A normal or chat message for a user with no available resource is
 * stored after its audit record is written (the router calls us from
 * the second half of delivery), with an XEP-0203 <delay/> already in
 * it.  The sender hears nothing when that works, and an error stanza
 * when it does not: <service-unavailable/> for an account that has
 * never been available and over the per-user quota
 * (conclave_offline_quota), <internal-server-error/> when MariaDB
 * cannot take it.  Nothing is dropped silently.
 *
 * Delivery starts at the user's initial presence.  A session claims a
 * batch of rows with one UPDATE ... WHERE claim IS NULL (InnoDB locks
 * each row, so two sessions of the user on different workers never
 * claim the same one), sends them, and deletes them with the next
 * request, which claims the next batch.  Rows of a session that ended
 * before sending are released; rows of a worker that died are claimed
 * again after a minute.
 */


#include "ngx_xmpp.h"

#include <mysql.h>


#define NGX_XMPP_OFFLINE_BATCH        100
#define NGX_XMPP_OFFLINE_BATCH_BYTES  (256 * 1024)


typedef struct {
    uint64_t               sid;           /* sender, or the recipient */
    uint64_t               quota;
    u_char                *mem;
    ngx_str_t              owner;

    /* store */
    ngx_str_t              stanza;
    uint64_t               ord;
    ngx_str_t              to;
    ngx_str_t              type;
    ngx_str_t              id;
    ngx_str_t              from;          /* the sender's full JID */
    uint64_t               known;
    uint64_t               count;
    uint64_t               blocked;
    unsigned               stored:1;

    /* delivery */
    u_char                 claim[64];
    size_t                 claim_len;
    uint64_t               del_upto;      /* id; 0: nothing to delete */
    uint64_t               del_ord;       /* and its ord */
    ngx_uint_t             rows;
    ngx_xmpp_wbuf_t        out;           /* rows: id, length, bytes */
    unsigned               remember:1;
    unsigned               release:1;
    unsigned               fetch:1;
    unsigned               leftover:1;    /* claimed rows not yet sent */
    unsigned               more:1;
} ngx_xmpp_offline_ctx_t;


static void ngx_xmpp_offline_next(ngx_xmpp_conf_t *xcf,
    ngx_xmpp_offline_ctx_t *prev, uint64_t del_upto, uint64_t del_ord,
    ngx_uint_t fetch, ngx_uint_t release);


static void
ngx_xmpp_offline_cleanup(ngx_xmpp_db_req_t *r)
{
    ngx_xmpp_offline_ctx_t  *ctx = r->ctx;

    ngx_free(ctx->mem);
    ngx_xmpp_wbuf_free(&ctx->out);
}


/* columns: is the owner known (0 or 1), stored messages of the owner */
static int
ngx_xmpp_offline_count_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols,
    ngx_uint_t n)
{
    ngx_xmpp_offline_ctx_t  *ctx = r->ctx;

    ctx->known = cols[0].data ? strtoull((char *) cols[0].data, NULL, 10)
                              : 0;
    ctx->count = cols[1].data ? strtoull((char *) cols[1].data, NULL, 10)
                              : 0;
    return 0;
}


/* columns: how many of the recipient's blocklist items cover the sender */
static int
ngx_xmpp_offline_blocked_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols,
    ngx_uint_t n)
{
    ngx_xmpp_offline_ctx_t  *ctx = r->ctx;

    ctx->blocked = cols[0].data ? strtoull((char *) cols[0].data, NULL, 10)
                                : 0;
    return 0;
}


/*
 * XEP-0191 3.5: a message from a JID the recipient blocked is refused
 * when it would be stored, not kept to be dropped at delivery.  The
 * items that cover a JID (XEP-0016 2.1): the full JID, the bare JID,
 * the domain, and domain/resource; the table is the one the recipient's
 * sessions cache (ngx_xmpp_blocking.c), read here in the store's own
 * transaction, so no query runs on the event loop.
 */
static int
ngx_xmpp_offline_sender_blocked(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    int                      rc;
    u_char                   dr[2 * NGX_XMPP_JID_PART_MAX + 2];
    ngx_str_t                p[5];
    MYSQL_STMT              *stmt;
    ngx_xmpp_jid_parts_t     j;
    ngx_xmpp_offline_ctx_t  *ctx = r->ctx;

    if (ctx->from.len == 0
        || ngx_xmpp_jid_split(ctx->from.data, ctx->from.len, &j) != 0)
    {
        return 0;
    }

    p[0] = ctx->owner;
    p[1] = ctx->from;
    p[2].data = ctx->from.data;
    p[2].len = j.local ? j.local_len + 1 + j.domain_len : j.domain_len;
    p[3].data = (u_char *) j.domain;
    p[3].len = j.domain_len;
    p[4] = p[3];

    if (j.resource_len && j.domain_len + 1 + j.resource_len <= sizeof(dr)) {
        p[4].data = dr;
        p[4].len = ngx_sprintf(dr, "%*s/%*s", j.domain_len, j.domain,
                               j.resource_len, j.resource) - dr;
    }

    stmt = ngx_xmpp_db_exec(conn, r,
        "SELECT COUNT(*) FROM blocklist WHERE owner_jid = ?"
        " AND jid IN (?, ?, ?, ?)", p, 5);
    if (stmt == NULL) {
        return -1;
    }

    rc = ngx_xmpp_db_rows(stmt, r, ngx_xmpp_offline_blocked_row);
    (void) mysql_stmt_close(stmt);

    return rc;
}


/*
 * Pool thread.  The user's chat_user row, locked for the transaction,
 * serializes the senders of one recipient, so that the quota is exact
 * whatever the number of workers and threads.
 */
static int
ngx_xmpp_offline_store_txn(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    int                      rc;
    u_char                   ord[NGX_INT64_LEN];
    ngx_str_t                p[3], *q;
    MYSQL_STMT              *stmt;
    ngx_xmpp_offline_ctx_t  *ctx = r->ctx;

    p[0] = ctx->owner;
    p[1] = ctx->owner;
    q = &p[2];

    stmt = ngx_xmpp_db_exec(conn, r,
        "SELECT COUNT(*), (SELECT COUNT(*) FROM offline_message"
        " WHERE owner_jid = ?) FROM chat_user WHERE jid = ? FOR UPDATE",
        p, 2);
    if (stmt == NULL) {
        return -1;
    }

    rc = ngx_xmpp_db_rows(stmt, r, ngx_xmpp_offline_count_row);
    (void) mysql_stmt_close(stmt);

    if (rc != 0) {
        return -1;
    }

    if (ctx->known == 0 || ctx->count >= ctx->quota) {
        return 0;
    }

    if (ngx_xmpp_offline_sender_blocked(conn, r) != 0) {
        return -1;
    }

    if (ctx->blocked) {
        return 0;
    }

    p[1] = ctx->stanza;
    q->data = ord;
    q->len = ngx_sprintf(ord, "%uL", ctx->ord) - ord;

    if (ngx_xmpp_db_stmt(conn, r,
            "INSERT INTO offline_message (owner_jid, stanza, ord, stored_at)"
            " VALUES (?, ?, ?, UTC_TIMESTAMP(6))", p, 3, NULL) != 0)
    {
        return -1;
    }

    ctx->stored = 1;

    return 0;
}


/* one transaction: the adapter commits it, or rolls it back */
static int
ngx_xmpp_offline_store_run(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    if (ngx_xmpp_offline_store_txn(conn, r) == 0) {
        return 0;
    }

    if (r->db_errno == 0) {
        r->db_errno = mysql_errno(conn);
    }

    return -1;
}


/*
 * The recipient may have become available while the row was written,
 * after its session had looked for stored messages: the session with
 * the highest priority looks again, on whatever worker it is.
 */
static void
ngx_xmpp_offline_recheck(ngx_str_t *owner)
{
    ngx_int_t           best;
    ngx_uint_t          i, n;
    ngx_xmpp_conf_t    *xcf;
    ngx_xmpp_route_t   *routes, *rt;

    xcf = ngx_xmpp_cycle_conf((ngx_cycle_t *) ngx_cycle);
    routes = ngx_xmpp_router_routes();
    n = ngx_xmpp_registry_lookup(xcf, owner, routes, NGX_XMPP_ROUTE_MAX);

    rt = NULL;
    best = -1;

    for (i = 0; i < n; i++) {
        if (routes[i].available && routes[i].priority > best) {
            best = routes[i].priority;
            rt = &routes[i];
        }
    }

    if (rt == NULL) {
        return;
    }

    if (rt->pid == ngx_pid) {
        ngx_xmpp_offline_deliver_sid(rt->sid);
        return;
    }

    (void) ngx_xmpp_ipc_send(rt->pid, NGX_XMPP_IPC_OFFLINE, rt->sid, NULL, 0);
}


/*
 * A message stored for no session (the unacked stanzas of an ended
 * XEP-0198 session, a room's invitation: sid 0) that could not be
 * kept: its sender, when an account of ours, is told (RFC 6120 8.3)
 * through routing, as the router tells a sender's session.  The sender
 * is the "from" of our own serialization of the stanza.
 */
static void
ngx_xmpp_offline_bounce_sender(ngx_xmpp_offline_ctx_t *ctx,
    const char *type, const char *condition, const char *text)
{
    u_char           *p, *q, *end;
    ngx_str_t         from;
    ngx_pool_t       *pool;
    ngx_xmpp_jid_t    jid;
    ngx_xmpp_conf_t  *xcf;
    ngx_xmpp_wbuf_t   b;

    xcf = ngx_xmpp_cycle_conf((ngx_cycle_t *) ngx_cycle);
    end = ngx_strlchr(ctx->stanza.data, ctx->stanza.data + ctx->stanza.len,
                      '>');
    p = end ? ngx_strlcasestrn(ctx->stanza.data, end, (u_char *) " from='",
                               6)
            : NULL;
    q = p ? ngx_strlchr(p + 7, end, '\'') : NULL;

    if (xcf == NULL || q == NULL) {
        return;
    }

    from.data = p + 7;
    from.len = q - from.data;

    if (ngx_strlchr(from.data, q, '&') != NULL) {
        /* an escaped resource: not worth undoing for an error */
        return;
    }

    pool = ngx_create_pool(1024, ngx_cycle->log);
    if (pool == NULL) {
        return;
    }

    if (ngx_xmpp_jid_parse(pool, &from, &jid) != NGX_OK
        || jid.domain.len != xcf->domain.len
        || ngx_strncmp(jid.domain.data, xcf->domain.data, jid.domain.len)
           != 0)
    {
        ngx_destroy_pool(pool);
        return;
    }

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = 16384;

    ngx_xmpp_wbuf_lit(&b, "<message xmlns='" NGX_XMPP_NS_CLIENT "'"
                      " type='error' from='");
    ngx_xmpp_wbuf_escs(&b, &ctx->to);
    ngx_xmpp_wbuf_lit(&b, "' to='");
    ngx_xmpp_wbuf_escs(&b, &jid.full);
    ngx_xmpp_wbuf_lit(&b, "'");

    if (ctx->id.len) {
        ngx_xmpp_wbuf_lit(&b, " id='");
        ngx_xmpp_wbuf_escs(&b, &ctx->id);
        ngx_xmpp_wbuf_lit(&b, "'");
    }

    ngx_xmpp_wbuf_lit(&b, "><error type='");
    ngx_xmpp_wbuf_str(&b, type);
    ngx_xmpp_wbuf_lit(&b, "'><");
    ngx_xmpp_wbuf_str(&b, condition);
    ngx_xmpp_wbuf_lit(&b, " xmlns='" NGX_XMPP_NS_STANZAS "'/><text xmlns='"
                      NGX_XMPP_NS_STANZAS "'>");
    ngx_xmpp_wbuf_str(&b, text);
    ngx_xmpp_wbuf_lit(&b, "</text></error></message>");

    if (!b.failed) {
        if (jid.resource.len == 0
            || ngx_xmpp_router_to_full_jid(xcf, &jid, b.start,
                                           b.last - b.start)
               != NGX_OK)
        {
            (void) ngx_xmpp_router_to_bare(xcf, &jid.bare,
                                           NGX_XMPP_STANZA_MESSAGE, NULL,
                                           b.start, b.last - b.start);
        }
    }

    ngx_xmpp_wbuf_free(&b);
    ngx_destroy_pool(pool);
}


static void
ngx_xmpp_offline_store_done(ngx_xmpp_db_req_t *r)
{
    ngx_xmpp_session_t      *s;
    ngx_xmpp_delivery_t      d;
    ngx_xmpp_offline_ctx_t  *ctx = r->ctx;

    if (r->rc == NGX_XMPP_DB_OK && ctx->stored) {
        ngx_xmpp_offline_recheck(&ctx->owner);
        return;
    }

    s = ngx_xmpp_session_find(ctx->sid);
    if (s && !s->bound) {
        s = NULL;
    }

    ngx_memzero(&d, sizeof(ngx_xmpp_delivery_t));
    d.kind = NGX_XMPP_STANZA_MESSAGE;
    d.type = ctx->type;
    d.id = ctx->id;
    d.to.full = ctx->to;

    if (r->rc != NGX_XMPP_DB_OK) {
        ngx_log_error(NGX_LOG_ERR, s ? s->connection->log : ngx_cycle->log,
                      0, "xmpp: offline message for %V not stored (%ui): "
                      "%s", &ctx->owner, r->rc, r->err);
        if (ctx->sid == 0) {
            ngx_xmpp_offline_bounce_sender(ctx, "wait",
                                           "internal-server-error",
                                           "offline storage is unavailable");
            return;
        }

        ngx_xmpp_router_bounce_text(s, &d, "wait", "internal-server-error",
                                    "offline storage is unavailable");
        return;
    }

    if (ctx->known == 0 || ctx->blocked) {
        /*
         * RFC 6121 8.5.2.2.1: nobody to keep it for; XEP-0191 3.5: the
         * recipient blocked the sender, who hears the same as if the
         * user did not exist.  The audit record was written before
         * routing and stays (docs/chat.md, "Blocking").
         */
        if (ctx->sid == 0) {
            ngx_xmpp_offline_bounce_sender(ctx, "cancel",
                                           "service-unavailable",
                                           "no offline storage for the "
                                           "recipient");
            return;
        }

        ngx_xmpp_router_bounce(s, &d, "cancel", "service-unavailable");
        return;
    }

    ngx_log_error(NGX_LOG_INFO, s ? s->connection->log : ngx_cycle->log, 0,
                  "xmpp: offline storage of %V is full", &ctx->owner);

    /*
     * XEP-0160 section 2, step 3: a full offline queue answers
     * <service-unavailable/>, the one error RFC 6121 8.5.2.2.1 allows
     * here; type "wait" and the text tell the sender it is the quota
     */
    if (ctx->sid == 0) {
        ngx_xmpp_offline_bounce_sender(ctx, "wait", "service-unavailable",
                                       "the recipient's offline storage "
                                       "is full");
        return;
    }

    ngx_xmpp_router_bounce_text(s, &d, "wait", "service-unavailable",
                                "the recipient's offline storage is full");
}


/* XEP-0203: <delay/> before the end tag of the serialized message */
static ngx_int_t
ngx_xmpp_offline_stamp(ngx_xmpp_conf_t *xcf, ngx_xmpp_delivery_t *d,
    ngx_xmpp_wbuf_t *b)
{
    u_char      *end;
    size_t       len;
    ngx_tm_t     tm;
    ngx_time_t  *tp;
    u_char       stamp[sizeof("1970-01-01T00:00:00.000Z")];

    static const char  etag[] = "</message>";

    len = d->len;
    end = d->data + len;

    if (len >= sizeof(etag) - 1
        && ngx_strncmp(end - (sizeof(etag) - 1), etag, sizeof(etag) - 1)
           == 0)
    {
        len -= sizeof(etag) - 1;

    } else if (len >= 2 && end[-2] == '/' && end[-1] == '>') {
        len -= 2;

    } else {
        return NGX_ERROR;
    }

    tp = ngx_timeofday();
    ngx_gmtime(tp->sec, &tm);

    (void) ngx_sprintf(stamp, "%4d-%02d-%02dT%02d:%02d:%02d.%03MZ",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec,
                       tp->msec);

    ngx_xmpp_wbuf_add(b, d->data, len);

    if (len + 2 == d->len) {
        ngx_xmpp_wbuf_lit(b, ">");
    }

    ngx_xmpp_wbuf_lit(b, "<delay xmlns='" NGX_XMPP_NS_DELAY "' from='");
    ngx_xmpp_wbuf_escs(b, &xcf->domain);
    ngx_xmpp_wbuf_lit(b, "' stamp='");
    ngx_xmpp_wbuf_add(b, stamp, sizeof(stamp) - 1);
    ngx_xmpp_wbuf_lit(b, "'>Offline storage</delay></message>");

    return b->failed ? NGX_ERROR : NGX_OK;
}


/*
 * The order of arrival, strictly increasing in this worker: several
 * pool threads insert, so the row ids need not follow it.
 */
static uint64_t
ngx_xmpp_offline_ord(void)
{
    uint64_t     ord;
    ngx_time_t  *tp;

    static uint64_t  last;

    tp = ngx_timeofday();
    ord = ((uint64_t) tp->sec * 1000 + tp->msec) * 1000;

    if (ord <= last) {
        ord = last + 1;
    }

    last = ord;

    return ord;
}


/*
 * Stores a message the router could not deliver.  NGX_OK: the request
 * is posted and its done() answers the sender if need be; NGX_ERROR:
 * nothing was done, the caller bounces the message.
 */
ngx_int_t
ngx_xmpp_offline_store(ngx_xmpp_conf_t *xcf, ngx_xmpp_session_t *s,
    ngx_xmpp_delivery_t *d)
{
    u_char                  *p;
    u_char                   fb[3 * NGX_XMPP_JID_PART_MAX + 3];
    size_t                   size;
    ngx_str_t                from;
    ngx_xmpp_wbuf_t          b;
    ngx_xmpp_db_req_t       *r;
    ngx_xmpp_offline_ctx_t  *ctx;

    if (d->to.bare.len > 255) {
        return NGX_ERROR;
    }

    /* the sender, as the router stamped it, for the blocklist check */
    if (ngx_xmpp_router_peek(d->data, d->len, "from", fb, sizeof(fb),
                             &from)
        != NGX_OK)
    {
        from.len = 0;
    }

    ngx_memzero(&b, sizeof(ngx_xmpp_wbuf_t));
    b.max = d->len + 4096;

    if (ngx_xmpp_offline_stamp(xcf, d, &b) != NGX_OK) {
        ngx_xmpp_wbuf_free(&b);
        return NGX_ERROR;
    }

    r = ngx_xmpp_db_create(xcf, sizeof(ngx_xmpp_offline_ctx_t),
                           s ? s->connection->log : ngx_cycle->log);
    if (r == NULL) {
        ngx_xmpp_wbuf_free(&b);
        return NGX_ERROR;
    }

    r->run = ngx_xmpp_offline_store_run;
    r->done = ngx_xmpp_offline_store_done;
    r->cleanup = ngx_xmpp_offline_cleanup;

    ctx = r->ctx;
    ctx->sid = s ? s->id : 0;
    ctx->quota = xcf->offline_quota;
    ctx->ord = ngx_xmpp_offline_ord();

    /* the stanza's buffer becomes the block of every string */
    size = d->to.bare.len + d->to.full.len + d->type.len + d->id.len
           + from.len;

    if (ngx_xmpp_wbuf_reserve(&b, size) != NGX_OK) {
        ngx_xmpp_wbuf_free(&b);
        ngx_xmpp_db_destroy(r);
        return NGX_ERROR;
    }

    ctx->mem = b.start;
    ctx->stanza.data = b.start;
    ctx->stanza.len = b.last - b.start;

    p = b.last;
    ctx->owner.data = p;
    ctx->owner.len = d->to.bare.len;
    p = ngx_cpymem(p, d->to.bare.data, d->to.bare.len);
    ctx->to.data = p;
    ctx->to.len = d->to.full.len;
    p = ngx_cpymem(p, d->to.full.data, d->to.full.len);
    ctx->type.data = p;
    ctx->type.len = d->type.len;
    if (d->type.len) {
        p = ngx_cpymem(p, d->type.data, d->type.len);
    }
    ctx->id.data = p;
    ctx->id.len = d->id.len;
    if (d->id.len) {
        p = ngx_cpymem(p, d->id.data, d->id.len);
    }
    ctx->from.data = p;
    ctx->from.len = from.len;
    if (from.len) {
        ngx_memcpy(p, from.data, from.len);
    }

    if (ngx_xmpp_db_post(r) != NGX_OK) {
        ngx_xmpp_db_destroy(r);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* columns: id, ord, stanza */
static int
ngx_xmpp_offline_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols, ngx_uint_t n)
{
    uint32_t                 len;
    uint64_t                 id, ord;
    ngx_xmpp_offline_ctx_t  *ctx = r->ctx;

    if (cols[0].data == NULL || cols[1].data == NULL || cols[2].data == NULL)
    {
        return 0;
    }

    if (ctx->rows
        && (size_t) (ctx->out.last - ctx->out.start) + cols[2].len
           > NGX_XMPP_OFFLINE_BATCH_BYTES)
    {
        /* claimed, kept for the next round */
        ctx->more = 1;
        ctx->leftover = 1;
        return 0;
    }

    id = strtoull((char *) cols[0].data, NULL, 10);
    ord = strtoull((char *) cols[1].data, NULL, 10);
    len = (uint32_t) cols[2].len;

    ngx_xmpp_wbuf_add(&ctx->out, &id, sizeof(uint64_t));
    ngx_xmpp_wbuf_add(&ctx->out, &ord, sizeof(uint64_t));
    ngx_xmpp_wbuf_add(&ctx->out, &len, sizeof(uint32_t));
    ngx_xmpp_wbuf_add(&ctx->out, cols[2].data, cols[2].len);
    ctx->rows++;

    return ctx->out.failed ? -1 : 0;
}


/* pool thread: delete what was sent, release or claim, then fetch */
static int
ngx_xmpp_offline_deliver_run(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    int                      rc;
    u_char                   upto[NGX_INT64_LEN], ord[NGX_INT64_LEN];
    uint64_t                 claimed;
    ngx_str_t                p[4];
    MYSQL_STMT              *stmt;
    ngx_xmpp_offline_ctx_t  *ctx = r->ctx;

    p[0].data = ctx->claim;
    p[0].len = ctx->claim_len;

    if (ctx->remember
        && ngx_xmpp_db_stmt(conn, r,
               "INSERT IGNORE INTO chat_user (jid, first_seen)"
               " VALUES (?, UTC_TIMESTAMP(6))", &ctx->owner, 1, NULL) != 0)
    {
        return -1;
    }

    if (ctx->del_upto) {
        /* what was sent: the claimed rows up to (ord, id) */
        p[1].data = ord;
        p[1].len = ngx_sprintf(ord, "%uL", ctx->del_ord) - ord;
        p[2] = p[1];
        p[3].data = upto;
        p[3].len = ngx_sprintf(upto, "%uL", ctx->del_upto) - upto;

        if (ngx_xmpp_db_stmt(conn, r,
                "DELETE FROM offline_message WHERE claim = ?"
                " AND (ord < ? OR (ord = ? AND id <= ?))", p, 4, NULL) != 0)
        {
            return -1;
        }
    }

    if (ctx->release) {
        return ngx_xmpp_db_stmt(conn, r,
                   "UPDATE offline_message SET claim = NULL,"
                   " claimed_at = NULL WHERE claim = ?", p, 1, NULL);
    }

    if (!ctx->fetch) {
        return 0;
    }

    if (!ctx->leftover) {
        p[1] = ctx->owner;

        if (ngx_xmpp_db_stmt(conn, r,
                "UPDATE offline_message SET claim = ?,"
                " claimed_at = UTC_TIMESTAMP(6) WHERE owner_jid = ?"
                " AND (claim IS NULL"
                " OR claimed_at < UTC_TIMESTAMP(6) - INTERVAL 60 SECOND)"
                " ORDER BY ord, id LIMIT 100", p, 2, &claimed) != 0)
        {
            return -1;
        }

        ctx->more = (claimed == NGX_XMPP_OFFLINE_BATCH);

        if (claimed == 0 && ctx->remember) {
            /*
             * The first round's claim is new (a serial per delivery):
             * when the UPDATE took no row, no row carries it, and the
             * SELECT would find none.  Most sign-ins end here.
             */
            return 0;
        }
    }

    ctx->leftover = 0;

    stmt = ngx_xmpp_db_exec(conn, r,
        "SELECT id, ord, stanza FROM offline_message WHERE claim = ?"
        " ORDER BY ord, id LIMIT 100", p, 1);
    if (stmt == NULL) {
        return -1;
    }

    rc = ngx_xmpp_db_rows(stmt, r, ngx_xmpp_offline_row);
    (void) mysql_stmt_close(stmt);

    return rc;
}


static void
ngx_xmpp_offline_deliver_done(ngx_xmpp_db_req_t *r)
{
    u_char                  *p, *end;
    uint32_t                 len;
    uint64_t                 id, ord, sent, sent_ord;
    ngx_xmpp_conf_t         *xcf;
    ngx_xmpp_session_t      *s;
    ngx_xmpp_offline_ctx_t  *ctx = r->ctx;

    if (r->rc != NGX_XMPP_DB_OK) {
        /* claimed rows are taken again after a minute */
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "xmpp: offline messages of %V not delivered (%ui): "
                      "%s", &ctx->owner, r->rc, r->err);
        return;
    }

    if (!ctx->fetch) {
        return;
    }

    xcf = ngx_xmpp_cycle_conf((ngx_cycle_t *) ngx_cycle);

    s = ngx_xmpp_session_find(ctx->sid);

    if (s == NULL || !s->bound || s->state == NGX_XMPP_ST_CLOSING) {
        /*
         * The SELECT saw every row of the claim (nothing left over):
         * with none, there is nothing to release, and a session that
         * closed at once costs no second request.
         */
        if (ctx->rows || ctx->leftover) {
            ngx_xmpp_offline_next(xcf, ctx, 0, 0, 0, 1);
        }

        return;
    }

    sent = 0;
    sent_ord = 0;
    p = ctx->out.start;
    end = ctx->out.last;

    while (p
           && end - p >= (ssize_t) (2 * sizeof(uint64_t) + sizeof(uint32_t)))
    {
        ngx_memcpy(&id, p, sizeof(uint64_t));
        ngx_memcpy(&ord, p + sizeof(uint64_t), sizeof(uint64_t));
        ngx_memcpy(&len, p + 2 * sizeof(uint64_t), sizeof(uint32_t));
        p += 2 * sizeof(uint64_t) + sizeof(uint32_t);

        if ((size_t) (end - p) < len) {
            break;
        }

        /* XEP-0191: what a blocked JID left is dropped now */
        if (ngx_xmpp_router_inbound(s, p, len) != NGX_OK) {
            /* what was written is deleted, the rest waits */
            ngx_xmpp_offline_next(xcf, ctx, sent, sent_ord, 0, 1);
            return;
        }

        sent = id;
        sent_ord = ord;
        p += len;
    }

    if (sent || ctx->more) {
        ngx_xmpp_offline_next(xcf, ctx, sent, sent_ord, ctx->more, 0);
    }
}


static ngx_xmpp_db_req_t *
ngx_xmpp_offline_deliver_req(ngx_xmpp_conf_t *xcf, ngx_log_t *log,
    uint64_t sid, ngx_str_t *owner)
{
    ngx_xmpp_db_req_t       *r;
    ngx_xmpp_offline_ctx_t  *ctx;

    r = ngx_xmpp_db_create(xcf, sizeof(ngx_xmpp_offline_ctx_t), log);
    if (r == NULL) {
        return NULL;
    }

    r->run = ngx_xmpp_offline_deliver_run;
    r->done = ngx_xmpp_offline_deliver_done;
    r->cleanup = ngx_xmpp_offline_cleanup;

    ctx = r->ctx;
    ctx->sid = sid;
    ctx->out.max = NGX_XMPP_OFFLINE_BATCH_BYTES + xcf->max_stanza_size
                   + 65536;

    ctx->mem = ngx_alloc(owner->len, log);
    if (ctx->mem == NULL) {
        ngx_xmpp_db_destroy(r);
        return NULL;
    }

    ngx_memcpy(ctx->mem, owner->data, owner->len);
    ctx->owner.data = ctx->mem;
    ctx->owner.len = owner->len;

    return r;
}


/* the request after prev: delete rows up to del_upto, then the rest */
static void
ngx_xmpp_offline_next(ngx_xmpp_conf_t *xcf, ngx_xmpp_offline_ctx_t *prev,
    uint64_t del_upto, uint64_t del_ord, ngx_uint_t fetch,
    ngx_uint_t release)
{
    ngx_xmpp_db_req_t       *r;
    ngx_xmpp_offline_ctx_t  *ctx;

    r = ngx_xmpp_offline_deliver_req(xcf, ngx_cycle->log, prev->sid,
                                     &prev->owner);
    if (r == NULL) {
        goto failed;
    }

    ctx = r->ctx;
    ngx_memcpy(ctx->claim, prev->claim, prev->claim_len);
    ctx->claim_len = prev->claim_len;
    ctx->del_upto = del_upto;
    ctx->del_ord = del_ord;
    ctx->fetch = fetch;
    ctx->release = release;
    ctx->leftover = prev->leftover;

    if (ngx_xmpp_db_post(r) == NGX_OK) {
        return;
    }

    ngx_xmpp_db_destroy(r);

failed:

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "xmpp: offline delivery of %V interrupted; its claimed "
                  "messages are delivered again at a later sign-in",
                  &prev->owner);
}


/* another worker stored a message for the available session sid */
void
ngx_xmpp_offline_deliver_sid(uint64_t sid)
{
    ngx_xmpp_session_t  *s;

    s = ngx_xmpp_session_find(sid);

    if (s && !s->bound) {
        /* XEP-0198: being resumed; it fetches them once it is */
        (void) ngx_xmpp_sm_hold_ipc(s, NGX_XMPP_IPC_OFFLINE, NULL, 0);
        return;
    }

    if (s && s->available && s->priority >= 0) {
        ngx_xmpp_offline_deliver(s);
    }
}


/* XEP-0160: the session became available; its stored messages follow */
void
ngx_xmpp_offline_deliver(ngx_xmpp_session_t *s)
{
    ngx_xmpp_db_req_t       *r;
    ngx_xmpp_offline_ctx_t  *ctx;

    static uint64_t  serial;

    if (s->jid.bare.len > 255) {
        return;
    }

    r = ngx_xmpp_offline_deliver_req(s->conf, s->connection->log, s->id,
                                     &s->jid.bare);
    if (r == NULL) {
        return;
    }

    ctx = r->ctx;
    ctx->remember = 1;
    ctx->fetch = 1;
    ctx->claim_len = ngx_sprintf(ctx->claim, "%P.%uL.%uL", ngx_pid, s->id,
                                 ++serial)
                     - ctx->claim;

    if (ngx_xmpp_db_post(r) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, s->connection->log, 0,
                      "xmpp: offline messages not fetched: database queue "
                      "full");
        ngx_xmpp_db_destroy(r);
    }
}
