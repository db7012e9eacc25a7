
/*
 * The SQL of XEP-0163 PEP (ngx_xmpp_pep.c), run in the MariaDB pool
 * threads of ngx_xmpp_db.c.  A change is one transaction that locks the
 * node's row first, so two publishers of one node (two resources, two
 * workers) take turns, and the item count and node size limits hold.
 */


#include "ngx_xmpp_pep.h"

#include <mysql.h>
#include <mysqld_error.h>


#define NGX_XMPP_PEP_TRIES  3


const char  *ngx_xmpp_pep_access[] = {
    "open", "presence", "whitelist", NULL
};

const char  *ngx_xmpp_pep_send_last_names[] = {
    "never", "on_sub", "on_sub_and_presence", NULL
};


void
ngx_xmpp_pep_put16(ngx_xmpp_wbuf_t *b, ngx_str_t *s)
{
    uint16_t  len;

    len = (uint16_t) ngx_min(s->len, 65535);
    ngx_xmpp_wbuf_add(b, &len, sizeof(uint16_t));
    ngx_xmpp_wbuf_add(b, s->data, len);
}


void
ngx_xmpp_pep_put32(ngx_xmpp_wbuf_t *b, ngx_str_t *s)
{
    uint32_t  len;

    len = (uint32_t) s->len;
    ngx_xmpp_wbuf_add(b, &len, sizeof(uint32_t));
    ngx_xmpp_wbuf_add(b, s->data, len);
}


/* reads what put16/put32 wrote; NGX_DONE at the end */
ngx_int_t
ngx_xmpp_pep_get(u_char **pp, u_char *end, ngx_str_t *s, ngx_uint_t wide)
{
    u_char    *p;
    uint16_t   l16;
    uint32_t   l32;
    size_t     len;

    p = *pp;

    if (p == NULL || p >= end) {
        return NGX_DONE;
    }

    if (wide) {
        if ((size_t) (end - p) < sizeof(uint32_t)) {
            return NGX_ERROR;
        }

        ngx_memcpy(&l32, p, sizeof(uint32_t));
        p += sizeof(uint32_t);
        len = l32;

    } else {
        if ((size_t) (end - p) < sizeof(uint16_t)) {
            return NGX_ERROR;
        }

        ngx_memcpy(&l16, p, sizeof(uint16_t));
        p += sizeof(uint16_t);
        len = l16;
    }

    if ((size_t) (end - p) < len) {
        return NGX_ERROR;
    }

    s->data = p;
    s->len = len;
    *pp = p + len;

    return NGX_OK;
}


static ngx_int_t
ngx_xmpp_pep_col_int(ngx_str_t *col)
{
    if (col->data == NULL) {
        return 0;
    }

    return ngx_atoi(col->data, col->len);
}


/* columns: access_model, persist_items, max_items, send_last */
static int
ngx_xmpp_pep_node_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols, ngx_uint_t n)
{
    ngx_int_t            v;
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    v = ngx_xmpp_pep_lookup(ngx_xmpp_pep_access, &cols[0]);
    ctx->conf.access = (v == NGX_ERROR) ? NGX_XMPP_PEP_ACCESS_WHITELIST : v;
    ctx->conf.persist = ngx_xmpp_pep_col_int(&cols[1]) ? 1 : 0;
    v = ngx_xmpp_pep_col_int(&cols[2]);
    ctx->conf.max_items = (v == NGX_ERROR) ? 1 : v;
    v = ngx_xmpp_pep_lookup(ngx_xmpp_pep_send_last_names, &cols[3]);
    ctx->conf.send_last = (v == NGX_ERROR) ? NGX_XMPP_PEP_LAST_NEVER : v;
    ctx->conf.set = 1;                       /* found */

    return 0;
}


static int
ngx_xmpp_pep_count_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols, ngx_uint_t n)
{
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    ctx->count = cols[0].data ? strtoull((char *) cols[0].data, NULL, 10)
                              : 0;
    ctx->counted = 1;

    return 0;
}


static int
ngx_xmpp_pep_sub_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols, ngx_uint_t n)
{
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    if (cols[0].data) {
        ngx_xmpp_pep_put16(&ctx->subs, &cols[0]);
    }

    return ctx->subs.failed ? -1 : 0;
}


/* columns: item_id, payload */
static int
ngx_xmpp_pep_item_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols, ngx_uint_t n)
{
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    if (cols[0].data == NULL || cols[1].data == NULL) {
        return 0;
    }

    ngx_xmpp_pep_put16(&ctx->out, &cols[0]);
    ngx_xmpp_pep_put32(&ctx->out, &cols[1]);

    return ctx->out.failed ? -1 : 0;
}


/*
 * The node's options; with lock, an existing node's row is locked for
 * the rest of the transaction.  A missing node is not looked up with a
 * locking read: that would take a gap lock, and the first publishes of
 * several new nodes of one account (one gap) would deadlock on their
 * inserts.  Two creators of one node meet on its key instead: the
 * second gets a duplicate key, and runs again (ngx_xmpp_pep_run).
 */
int
ngx_xmpp_pep_sql_node(struct st_mysql *conn, ngx_xmpp_db_req_t *r,
    ngx_str_t *owner, ngx_str_t *node, ngx_uint_t lock)
{
    ngx_str_t            p[2];
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    p[0] = *owner;
    p[1] = *node;
    ctx->conf.set = 0;

    if (ngx_xmpp_db_select(conn, r,
            "SELECT access_model, persist_items, max_items, send_last"
            " FROM pep_node WHERE owner_jid = ? AND node = ?",
            p, 2, ngx_xmpp_pep_node_row) != 0)
    {
        return -1;
    }

    if (!lock || !ctx->conf.set) {
        return 0;
    }

    ctx->conf.set = 0;

    return ngx_xmpp_db_select(conn, r,
        "SELECT access_model, persist_items, max_items, send_last"
        " FROM pep_node WHERE owner_jid = ? AND node = ? FOR UPDATE",
        p, 2, ngx_xmpp_pep_node_row);
}


/*
 * The set-up of every request on an existing node: its row (locked for
 * a change), and the owner and node as p[0], p[1].  1: there it is;
 * 0: it is not (ctx->error says so); -1: MariaDB failed.
 */
static int
ngx_xmpp_pep_sql_existing(struct st_mysql *conn, ngx_xmpp_db_req_t *r,
    ngx_uint_t lock, ngx_str_t *p)
{
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    if (ngx_xmpp_pep_sql_node(conn, r, &ctx->owner, &ctx->node, lock) != 0) {
        return -1;
    }

    if (!ctx->conf.set) {
        ctx->error = NGX_XMPP_PEP_E_NOT_FOUND;
        return 0;
    }

    p[0] = ctx->owner;
    p[1] = ctx->node;

    return 1;
}


static int
ngx_xmpp_pep_sql_create(struct st_mysql *conn, ngx_xmpp_db_req_t *r,
    ngx_xmpp_pep_config_t *c)
{
    u_char               persist[2], max[NGX_INT_T_LEN];
    ngx_str_t            p[6];
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    p[0] = ctx->owner;

    if (ngx_xmpp_db_select(conn, r,
            "SELECT COUNT(*) FROM pep_node WHERE owner_jid = ?", p, 1,
            ngx_xmpp_pep_count_row) != 0)
    {
        return -1;
    }

    if (ctx->count >= ctx->limit_nodes) {
        ctx->error = NGX_XMPP_PEP_E_MAX_NODES;
        return 0;
    }

    persist[0] = c->persist ? '1' : '0';

    p[1] = ctx->node;
    p[2].data = (u_char *) ngx_xmpp_pep_access[c->access];
    p[2].len = ngx_strlen(p[2].data);
    p[3].data = persist;
    p[3].len = 1;
    p[4].data = max;
    p[4].len = ngx_sprintf(max, "%ui", c->max_items) - max;
    p[5].data = (u_char *) ngx_xmpp_pep_send_last_names[c->send_last];
    p[5].len = ngx_strlen(p[5].data);

    if (ngx_xmpp_db_stmt(conn, r,
            "INSERT INTO pep_node (owner_jid, node, access_model,"
            " persist_items, max_items, send_last, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6))", p, 6, NULL) != 0)
    {
        return -1;
    }

    ctx->conf = *c;

    return 0;
}


/* keeps the newest max_items (XEP-0060 7.1.3.6: the oldest go first) */
static int
ngx_xmpp_pep_sql_trim(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    u_char               sql[256], seq[NGX_INT64_LEN];
    ngx_uint_t           keep;
    ngx_str_t            p[3];
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    keep = ctx->conf.max_items ? ctx->conf.max_items : ctx->limit_items;

    if (!ctx->conf.persist) {
        /* a transient node keeps the last item for new subscribers */
        keep = 1;
    }

    p[0] = ctx->owner;
    p[1] = ctx->node;

    (void) ngx_snprintf(sql, sizeof(sql),
        "SELECT seq FROM pep_item WHERE owner_jid = ? AND node = ?"
        " ORDER BY seq DESC LIMIT 1 OFFSET %ui%Z", keep);

    ctx->counted = 0;

    if (ngx_xmpp_db_select(conn, r, (char *) sql, p, 2,
                           ngx_xmpp_pep_count_row)
        != 0)
    {
        return -1;
    }

    if (!ctx->counted) {
        return 0;
    }

    p[2].data = seq;
    p[2].len = ngx_sprintf(seq, "%uL", ctx->count) - seq;

    return ngx_xmpp_db_stmt(conn, r,
        "DELETE FROM pep_item WHERE owner_jid = ? AND node = ?"
        " AND seq <= ?", p, 3, NULL);
}


int
ngx_xmpp_pep_sql_subscribers(struct st_mysql *conn, ngx_xmpp_db_req_t *r,
    ngx_str_t *owner)
{
    ngx_str_t            p[1];
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    if (ctx->conf.access == NGX_XMPP_PEP_ACCESS_WHITELIST) {
        return 0;
    }

    p[0] = *owner;

    return ngx_xmpp_db_select(conn, r,
        "SELECT contact_jid FROM roster_item"
        " WHERE owner_jid = ? AND sub_from = 1", p, 1,
        ngx_xmpp_pep_sub_row);
}


static ngx_uint_t
ngx_xmpp_pep_preconditions(ngx_xmpp_pep_config_t *want,
    ngx_xmpp_pep_config_t *have)
{
    /* XEP-0060 7.1.5: every option given must be the node's */
    if (((want->set & NGX_XMPP_PEP_SET_ACCESS)
         && want->access != have->access)
        || ((want->set & NGX_XMPP_PEP_SET_PERSIST)
            && want->persist != have->persist)
        || ((want->set & NGX_XMPP_PEP_SET_MAX)
            && want->max_items != have->max_items)
        || ((want->set & NGX_XMPP_PEP_SET_LAST)
            && want->send_last != have->send_last))
    {
        return 0;
    }

    return 1;
}


static int
ngx_xmpp_pep_run_publish(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    u_char                seq[NGX_INT_T_LEN];
    ngx_str_t             p[5];
    ngx_xmpp_pep_config_t c;
    ngx_xmpp_pep_ctx_t   *ctx = r->ctx;

    if (ngx_xmpp_pep_sql_node(conn, r, &ctx->owner, &ctx->node, 1) != 0) {
        return -1;
    }

    if (!ctx->conf.set) {
        c = ctx->want;

        if (ngx_xmpp_pep_sql_create(conn, r, &c) != 0 || ctx->error) {
            return ctx->error ? 0 : -1;
        }

    } else if (ctx->op == NGX_XMPP_PEP_CREATE) {
        ctx->error = NGX_XMPP_PEP_E_EXISTS;
        return 0;

    } else if (!ngx_xmpp_pep_preconditions(&ctx->want, &ctx->conf)) {
        ctx->error = NGX_XMPP_PEP_E_PRECONDITION;
        return 0;
    }

    if (ctx->op == NGX_XMPP_PEP_CREATE) {
        return 0;
    }

    p[0] = ctx->owner;
    p[1] = ctx->node;
    p[2] = ctx->item_id;
    p[3] = ctx->payload;

    if (ngx_xmpp_db_select(conn, r,
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM pep_item"
            " WHERE owner_jid = ? AND node = ?", p, 2,
            ngx_xmpp_pep_count_row) != 0)
    {
        return -1;
    }

    p[4].data = seq;
    p[4].len = ngx_sprintf(seq, "%uL", ctx->count) - seq;

    if (ngx_xmpp_db_stmt(conn, r,
            "INSERT INTO pep_item (owner_jid, node, item_id, payload, seq,"
            " published_at) VALUES (?, ?, ?, ?, ?, UTC_TIMESTAMP(6))"
            " ON DUPLICATE KEY UPDATE seq = VALUES(seq),"
            " published_at = VALUES(published_at),"
            " payload = VALUES(payload)", p, 5, NULL) != 0
        || ngx_xmpp_pep_sql_trim(conn, r) != 0)
    {
        return -1;
    }

    if (ngx_xmpp_db_select(conn, r,
            "SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM pep_item"
            " WHERE owner_jid = ? AND node = ?", p, 2,
            ngx_xmpp_pep_count_row) != 0)
    {
        return -1;
    }

    if (ctx->count > ctx->limit_size) {
        ctx->error = NGX_XMPP_PEP_E_NODE_FULL;
        return 0;
    }

    if (ctx->avatar
        && (ngx_xmpp_avatar_sql_check(conn, r) != 0 || ctx->error))
    {
        return ctx->error ? 0 : -1;
    }

    return ngx_xmpp_pep_sql_subscribers(conn, r, &ctx->owner);
}


static int
ngx_xmpp_pep_run_retract(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    int                  rc;
    uint64_t             n;
    ngx_str_t            p[3];
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    rc = ngx_xmpp_pep_sql_existing(conn, r, 1, p);
    if (rc <= 0) {
        return rc;
    }

    p[2] = ctx->item_id;

    if (ngx_xmpp_db_stmt(conn, r,
            "DELETE FROM pep_item WHERE owner_jid = ? AND node = ?"
            " AND item_id = ?", p, 3, &n) != 0)
    {
        return -1;
    }

    if (n == 0) {
        ctx->error = NGX_XMPP_PEP_E_NOT_FOUND;
        return 0;
    }

    return ngx_xmpp_pep_sql_subscribers(conn, r, &ctx->owner);
}


static int
ngx_xmpp_pep_run_delete(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    int                  rc;
    ngx_str_t            p[2];
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    rc = ngx_xmpp_pep_sql_existing(conn, r, 1, p);
    if (rc <= 0) {
        return rc;
    }

    if (ngx_xmpp_db_stmt(conn, r,
            "DELETE FROM pep_item WHERE owner_jid = ? AND node = ?",
            p, 2, NULL) != 0
        || ngx_xmpp_db_stmt(conn, r,
            "DELETE FROM pep_node WHERE owner_jid = ? AND node = ?",
            p, 2, NULL) != 0)
    {
        return -1;
    }

    return ngx_xmpp_pep_sql_subscribers(conn, r, &ctx->owner);
}


static int
ngx_xmpp_pep_run_conf(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    int                  rc;
    u_char               persist[2], max[NGX_INT_T_LEN];
    ngx_str_t            p[6];
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    rc = ngx_xmpp_pep_sql_existing(conn, r, ctx->op == NGX_XMPP_PEP_CONF_SET,
                                   p);
    if (rc <= 0) {
        return rc;
    }

    if (ctx->op == NGX_XMPP_PEP_CONF_GET) {
        return 0;
    }

    if (ctx->want.set & NGX_XMPP_PEP_SET_ACCESS) {
        ctx->conf.access = ctx->want.access;
    }

    if (ctx->want.set & NGX_XMPP_PEP_SET_PERSIST) {
        ctx->conf.persist = ctx->want.persist;
    }

    if (ctx->want.set & NGX_XMPP_PEP_SET_MAX) {
        ctx->conf.max_items = ctx->want.max_items;
    }

    if (ctx->want.set & NGX_XMPP_PEP_SET_LAST) {
        ctx->conf.send_last = ctx->want.send_last;
    }

    persist[0] = ctx->conf.persist ? '1' : '0';

    p[0].data = (u_char *) ngx_xmpp_pep_access[ctx->conf.access];
    p[0].len = ngx_strlen(p[0].data);
    p[1].data = persist;
    p[1].len = 1;
    p[2].data = max;
    p[2].len = ngx_sprintf(max, "%ui", ctx->conf.max_items) - max;
    p[3].data = (u_char *) ngx_xmpp_pep_send_last_names[ctx->conf.send_last];
    p[3].len = ngx_strlen(p[3].data);
    p[4] = ctx->owner;
    p[5] = ctx->node;

    if (ngx_xmpp_db_stmt(conn, r,
            "UPDATE pep_node SET access_model = ?, persist_items = ?,"
            " max_items = ?, send_last = ? WHERE owner_jid = ?"
            " AND node = ?", p, 6, NULL) != 0)
    {
        return -1;
    }

    return ngx_xmpp_pep_sql_trim(conn, r);
}


static int
ngx_xmpp_pep_contact_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols,
    ngx_uint_t n)
{
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    ctx->contact = 1;

    return 0;
}


static int
ngx_xmpp_pep_run_items(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    int                  rc;
    u_char               sql[512], *p, *end;
    ngx_str_t            q[3];
    ngx_uint_t           n;
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    rc = ngx_xmpp_pep_sql_existing(conn, r, 0, q);
    if (rc <= 0) {
        return rc;
    }

    q[1] = ctx->requester;

    if (ctx->owner.len != ctx->requester.len
        || ngx_strncmp(ctx->owner.data, ctx->requester.data,
                       ctx->owner.len) != 0)
    {
        /* XEP-0060 6.5.9.18 and 6.5.9.19 */
        if (ctx->conf.access == NGX_XMPP_PEP_ACCESS_WHITELIST) {
            ctx->error = NGX_XMPP_PEP_E_WHITELIST;
            return 0;
        }

        if (ctx->conf.access == NGX_XMPP_PEP_ACCESS_PRESENCE
            && !ctx->contact)
        {
            if (ngx_xmpp_db_select(conn, r,
                    "SELECT 1 FROM roster_item WHERE owner_jid = ?"
                    " AND contact_jid = ? AND sub_from = 1", q, 2,
                    ngx_xmpp_pep_contact_row) != 0)
            {
                return -1;
            }

            if (!ctx->contact) {
                ctx->error = NGX_XMPP_PEP_E_PRESENCE;
                return 0;
            }
        }
    }

    q[1] = ctx->node;

    if (ctx->ids.len) {
        p = ctx->ids.data;
        end = p + ctx->ids.len;

        while (ngx_xmpp_pep_get(&p, end, &q[2], 0) == NGX_OK) {
            if (ngx_xmpp_db_select(conn, r,
                    "SELECT item_id, payload FROM pep_item"
                    " WHERE owner_jid = ? AND node = ? AND item_id = ?",
                    q, 3, ngx_xmpp_pep_item_row) != 0)
            {
                return -1;
            }
        }

        return 0;
    }

    n = ctx->max_req ? ctx->max_req : ctx->limit_items;

    /* XEP-0060 6.5.7: the n most recent, here oldest first */
    (void) ngx_snprintf(sql, sizeof(sql),
        "SELECT item_id, payload FROM (SELECT item_id, payload, seq"
        " FROM pep_item WHERE owner_jid = ? AND node = ?"
        " ORDER BY seq DESC LIMIT %ui) t ORDER BY seq%Z", n);

    return ngx_xmpp_db_select(conn, r, (char *) sql, q, 2,
                              ngx_xmpp_pep_item_row);
}


/* columns: owner, node, item_id, payload */
static int
ngx_xmpp_pep_last_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols, ngx_uint_t n)
{
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    if (cols[0].data == NULL || cols[1].data == NULL
        || cols[2].data == NULL || cols[3].data == NULL)
    {
        return 0;
    }

    ngx_xmpp_pep_put16(&ctx->out, &cols[0]);
    ngx_xmpp_pep_put16(&ctx->out, &cols[1]);
    ngx_xmpp_pep_put16(&ctx->out, &cols[2]);
    ngx_xmpp_pep_put32(&ctx->out, &cols[3]);

    return ctx->out.failed ? -1 : 0;
}


/*
 * XEP-0163 section 4.3.2 (send_last_published_item on_sub_and_presence):
 * the last item of the user's own nodes and of every contact the user
 * is subscribed to, for the nodes a contact may read.
 */
static int
ngx_xmpp_pep_run_last(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    u_char               sql[1024];
    ngx_str_t            p[3];
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    p[0] = ctx->requester;
    p[1] = ctx->requester;
    p[2] = ctx->payload;                 /* shared contacts, JSON */

    if (p[2].len == 0) {
        ngx_str_set(&p[2], "[]");
    }

    (void) ngx_snprintf(sql, sizeof(sql),
        "SELECT i.owner_jid, i.node, i.item_id, i.payload FROM pep_item i"
        " JOIN pep_node n ON n.owner_jid = i.owner_jid AND n.node = i.node"
        " WHERE n.send_last = 'on_sub_and_presence'"
        " AND (i.owner_jid = ? OR (n.access_model <> 'whitelist'"
        " AND (i.owner_jid IN (SELECT contact_jid FROM roster_item"
        " WHERE owner_jid = ? AND sub_to = 1)"
        " OR i.owner_jid IN (SELECT t.j COLLATE utf8mb4_bin FROM"
        " JSON_TABLE(?, '$[*]' COLUMNS (j VARCHAR(255) CHARACTER SET"
        " utf8mb4 PATH '$')) AS t))))"
        " AND i.seq = (SELECT MAX(j.seq) FROM pep_item j"
        " WHERE j.owner_jid = i.owner_jid AND j.node = i.node)"
        " LIMIT %ui%Z", (ngx_uint_t) NGX_XMPP_PEP_LAST_MAX);

    return ngx_xmpp_db_select(conn, r, (char *) sql, p, 3,
                              ngx_xmpp_pep_last_row);
}


/*
 * XEP-0163 4.3.2 for a subscription just approved: the last item of
 * each of the publisher's (ctx->owner) nodes that a subscriber reads.
 */
static int
ngx_xmpp_pep_run_last_of(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    u_char               sql[768];
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    (void) ngx_snprintf(sql, sizeof(sql),
        "SELECT i.owner_jid, i.node, i.item_id, i.payload FROM pep_item i"
        " JOIN pep_node n ON n.owner_jid = i.owner_jid AND n.node = i.node"
        " WHERE n.send_last = 'on_sub_and_presence'"
        " AND n.access_model <> 'whitelist' AND i.owner_jid = ?"
        " AND i.seq = (SELECT MAX(j.seq) FROM pep_item j"
        " WHERE j.owner_jid = i.owner_jid AND j.node = i.node)"
        " LIMIT %ui%Z", (ngx_uint_t) NGX_XMPP_PEP_LAST_MAX);

    return ngx_xmpp_db_select(conn, r, (char *) sql, &ctx->owner, 1,
                              ngx_xmpp_pep_last_row);
}


/* columns: payload -> ctx->out (u32 len, bytes); avatar.c's too */
int
ngx_xmpp_pep_payload_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols,
    ngx_uint_t n)
{
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    if (cols[0].data) {
        ngx_xmpp_pep_put32(&ctx->out, &cols[0]);
    }

    return ctx->out.failed ? -1 : 0;
}


/* XEP-0049: one element per namespace, at most conclave_pep_max_nodes */
static int
ngx_xmpp_pep_run_private(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    ngx_str_t            p[3];
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    p[0] = ctx->owner;
    p[1] = ctx->node;
    p[2] = ctx->payload;

    if (ctx->op == NGX_XMPP_PEP_PRIV_GET) {
        return ngx_xmpp_db_select(conn, r,
            "SELECT payload FROM private_storage WHERE owner_jid = ?"
            " AND ns = ?", p, 2, ngx_xmpp_pep_payload_row);
    }

    if (ngx_xmpp_db_select(conn, r,
            "SELECT COUNT(*) FROM private_storage WHERE owner_jid = ?"
            " AND ns <> ?", p, 2, ngx_xmpp_pep_count_row) != 0)
    {
        return -1;
    }

    if (ctx->count >= ctx->limit_nodes) {
        ctx->error = NGX_XMPP_PEP_E_MAX_NODES;
        return 0;
    }

    return ngx_xmpp_db_stmt(conn, r,
        "INSERT INTO private_storage (owner_jid, ns, payload, updated_at)"
        " VALUES (?, ?, ?, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE"
        " payload = VALUES(payload), updated_at = VALUES(updated_at)",
        p, 3, NULL);
}


/*
 * XEP-0402 5.3: storage:bookmarks written through XEP-0049 replaces the
 * items of the urn:xmpp:bookmarks:1 node (created as section 3 says if
 * need be).  ctx->payload holds the new items (u16 id, u32 payload);
 * ctx->out gets the ids that were there, for retract notifications.
 */
static int
ngx_xmpp_pep_run_bm_set(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    u_char                *pos, *end, seq[NGX_INT_T_LEN];
    ngx_str_t              p[5];
    ngx_uint_t             i;
    ngx_xmpp_pep_config_t  c;
    ngx_xmpp_pep_ctx_t    *ctx = r->ctx;

    if (ngx_xmpp_pep_sql_node(conn, r, &ctx->owner, &ctx->node, 1) != 0) {
        return -1;
    }

    if (!ctx->conf.set) {
        c.access = NGX_XMPP_PEP_ACCESS_WHITELIST;
        c.persist = 1;
        c.max_items = 0;
        c.send_last = NGX_XMPP_PEP_LAST_NEVER;
        c.set = 0;

        if (ngx_xmpp_pep_sql_create(conn, r, &c) != 0 || ctx->error) {
            return ctx->error ? 0 : -1;
        }
    }

    p[0] = ctx->owner;
    p[1] = ctx->node;

    if (ngx_xmpp_db_select(conn, r,
            "SELECT item_id, '' FROM pep_item WHERE owner_jid = ?"
            " AND node = ?", p, 2, ngx_xmpp_pep_item_row) != 0
        || ngx_xmpp_db_stmt(conn, r,
            "DELETE FROM pep_item WHERE owner_jid = ? AND node = ?",
            p, 2, NULL) != 0)
    {
        return -1;
    }

    pos = ctx->payload.data;
    end = pos + ctx->payload.len;

    for (i = 1; ngx_xmpp_pep_get(&pos, end, &p[2], 0) == NGX_OK; i++) {
        if (ngx_xmpp_pep_get(&pos, end, &p[3], 1) != NGX_OK) {
            break;
        }

        p[4].data = seq;
        p[4].len = ngx_sprintf(seq, "%ui", i) - seq;

        if (ngx_xmpp_db_stmt(conn, r,
                "INSERT INTO pep_item (owner_jid, node, item_id, payload,"
                " seq, published_at) VALUES (?, ?, ?, ?, ?,"
                " UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE"
                " seq = VALUES(seq), payload = VALUES(payload)",
                p, 5, NULL) != 0)
        {
            return -1;
        }
    }

    return ngx_xmpp_pep_sql_subscribers(conn, r, &ctx->owner);
}


/*
 * XEP-0402 5.3 (#compat-pep): after a change of the bookmarks node, the
 * whole list (rc: the change's), for the storage:bookmarks view.
 */
static int
ngx_xmpp_pep_sql_bm_list(struct st_mysql *conn, ngx_xmpp_db_req_t *r,
    int rc)
{
    ngx_str_t            p[2];
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    if (rc != 0 || ctx->error || ctx->op == NGX_XMPP_PEP_CREATE
        || !ngx_xmpp_pep_str_is(&ctx->node, NGX_XMPP_NS_BOOKMARKS))
    {
        return rc;
    }

    p[0] = ctx->owner;
    p[1] = ctx->node;
    ctx->bm_list = 1;

    return ngx_xmpp_db_select(conn, r,
        "SELECT item_id, payload FROM pep_item WHERE owner_jid = ?"
        " AND node = ? ORDER BY seq", p, 2, ngx_xmpp_pep_item_row);
}


static int
ngx_xmpp_pep_run_once(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    switch (ctx->op) {
    case NGX_XMPP_PEP_ITEMS:
    case NGX_XMPP_PEP_BM_GET:
        return ngx_xmpp_pep_run_items(conn, r);
    case NGX_XMPP_PEP_LAST:
        return ngx_xmpp_pep_run_last(conn, r);
    case NGX_XMPP_PEP_LAST_OF:
        return ngx_xmpp_pep_run_last_of(conn, r);
    case NGX_XMPP_PEP_PRIV_GET:
    case NGX_XMPP_PEP_PRIV_SET:
        return ngx_xmpp_pep_run_private(conn, r);
    case NGX_XMPP_PEP_PUBLISH:
    case NGX_XMPP_PEP_CREATE:
        return ngx_xmpp_pep_sql_bm_list(conn, r,
                                        ngx_xmpp_pep_run_publish(conn, r));
    case NGX_XMPP_PEP_RETRACT:
        return ngx_xmpp_pep_sql_bm_list(conn, r,
                                        ngx_xmpp_pep_run_retract(conn, r));
    case NGX_XMPP_PEP_DELETE:
        return ngx_xmpp_pep_sql_bm_list(conn, r,
                                        ngx_xmpp_pep_run_delete(conn, r));
    case NGX_XMPP_PEP_BM_SET:
        return ngx_xmpp_pep_run_bm_set(conn, r);
    case NGX_XMPP_PEP_VCARD_SET:
    case NGX_XMPP_PEP_VCARD_GET:
    case NGX_XMPP_PEP_AVATAR_LOAD:
        return ngx_xmpp_avatar_run(conn, r);
    default:
        return ngx_xmpp_pep_run_conf(conn, r);
    }
}


/*
 * Pool thread.  One request is one transaction, which the adapter
 * commits after we return 0 (ngx_xmpp_db.c); a change refused half-way
 * (a limit, a precondition) is rolled back here and answered.  Two
 * first publishes to one new node race for its row (a duplicate key or
 * a deadlock on the gap lock): the loser runs again and finds the node.
 */
int
ngx_xmpp_pep_run(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    ngx_uint_t           try;
    ngx_xmpp_pep_ctx_t  *ctx = r->ctx;

    for (try = 0; try < NGX_XMPP_PEP_TRIES; try++) {

        if (ngx_xmpp_pep_run_once(conn, r) == 0) {
            if (ctx->error) {
                /* nothing of a refused change is committed */
                (void) mysql_rollback(conn);
            }

            return 0;
        }

        if (r->db_errno == 0) {
            r->db_errno = mysql_errno(conn);
        }

        if ((r->db_errno != ER_LOCK_DEADLOCK
             && r->db_errno != ER_LOCK_WAIT_TIMEOUT
             && r->db_errno != ER_DUP_ENTRY)
            || try + 1 == NGX_XMPP_PEP_TRIES)
        {
            return -1;
        }

        (void) mysql_rollback(conn);

        ctx->out.last = ctx->out.start;
        ctx->out.failed = 0;
        ctx->subs.last = ctx->subs.start;
        ctx->subs.failed = 0;
        ctx->bm_list = 0;
        ctx->error = 0;
        r->db_errno = 0;
        r->err[0] = '\0';
    }

    return -1;
}
