
/*
 * The pool-thread half of rosters and subscriptions (ngx_xmpp_roster.c
 * has the event-loop half): the SQL of every roster request, and the
 * subscription state machine of RFC 6121 Appendix A.
 *
 * A change is one transaction that changes both sides of a
 * subscription at once (both users are local: the owner's item of the
 * contact and the contact's item of the owner); the adapter
 * (ngx_xmpp_db.c) commits it after ngx_xmpp_roster_run() returns 0.
 * What the change means to the users (pushes, presence) is set as
 * flags in the context, for done() on the event loop.
 */


#include "ngx_xmpp_roster.h"

#include <mysql.h>
#include <mysqld_error.h>


/* <item/> of RFC 6121 2.1.2; also built for pushes, on the event loop */
void
ngx_xmpp_roster_item_xml(ngx_xmpp_wbuf_t *b, ngx_str_t *jid,
    ngx_xmpp_ritem_t *it, ngx_uint_t removed)
{
    static const char  *subs[] = { "none", "from", "to", "both" };

    ngx_xmpp_wbuf_lit(b, "<item jid='");
    ngx_xmpp_wbuf_escs(b, jid);
    ngx_xmpp_wbuf_lit(b, "'");

    if (removed) {
        ngx_xmpp_wbuf_lit(b, " subscription='remove'/>");
        return;
    }

    if (it->name.data) {
        ngx_xmpp_wbuf_lit(b, " name='");
        ngx_xmpp_wbuf_escs(b, &it->name);
        ngx_xmpp_wbuf_lit(b, "'");
    }

    ngx_xmpp_wbuf_lit(b, " subscription='");
    ngx_xmpp_wbuf_str(b, subs[it->sub_from | (it->sub_to << 1)]);
    ngx_xmpp_wbuf_lit(b, "'");

    if (it->ask_out) {
        ngx_xmpp_wbuf_lit(b, " ask='subscribe'");
    }

    if (it->groups.len == 0) {
        ngx_xmpp_wbuf_lit(b, "/>");
        return;
    }

    ngx_xmpp_wbuf_lit(b, ">");
    ngx_xmpp_wbuf_nstr(b, &it->groups);
    ngx_xmpp_wbuf_lit(b, "</item>");
}

/* pool thread helpers */

static ngx_int_t
ngx_xmpp_roster_flag(ngx_str_t *col)
{
    return col->data && col->len == 1 && col->data[0] == '1';
}


static int
ngx_xmpp_roster_dup(ngx_str_t *dst, ngx_str_t *src)
{
    if (src->data == NULL) {
        dst->data = NULL;
        dst->len = 0;
        return 0;
    }

    dst->data = malloc(src->len + 1);
    if (dst->data == NULL) {
        return -1;
    }

    ngx_memcpy(dst->data, src->data, src->len);
    dst->len = src->len;

    return 0;
}


/* columns: sub_to, sub_from, ask_out, pending_in, listed, ver, name,
 * groups_xml */
static int
ngx_xmpp_roster_item_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols, ngx_uint_t n)
{
    ngx_xmpp_roster_ctx_t  *ctx = r->ctx;

    ngx_xmpp_ritem_t  *it;

    it = ctx->cur;

    it->found = 1;
    it->sub_to = ngx_xmpp_roster_flag(&cols[0]);
    it->sub_from = ngx_xmpp_roster_flag(&cols[1]);
    it->ask_out = ngx_xmpp_roster_flag(&cols[2]);
    it->pending_in = ngx_xmpp_roster_flag(&cols[3]);
    it->listed = ngx_xmpp_roster_flag(&cols[4]);
    it->ver = cols[5].data ? strtoull((char *) cols[5].data, NULL, 10) : 0;

    if (ngx_xmpp_roster_dup(&it->name, &cols[6]) != 0
        || ngx_xmpp_roster_dup(&it->groups, &cols[7]) != 0)
    {
        return -1;
    }

    return 0;
}


/* OP_PROBE: the row goes to ci, the contact's item of the owner */
static int
ngx_xmpp_roster_probe_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols,
    ngx_uint_t n)
{
    ngx_xmpp_roster_ctx_t  *ctx = r->ctx;

    ctx->cur = &ctx->ci;

    return ngx_xmpp_roster_item_row(r, cols, n);
}


static int
ngx_xmpp_roster_load(struct st_mysql *conn, ngx_xmpp_db_req_t *r,
    ngx_str_t *owner, ngx_str_t *contact, ngx_xmpp_ritem_t *it)
{
    ngx_str_t               p[2];
    ngx_xmpp_roster_ctx_t  *ctx = r->ctx;

    p[0] = *owner;
    p[1] = *contact;
    ctx->cur = it;

    return ngx_xmpp_db_select(conn, r,
        "SELECT sub_to, sub_from, ask_out, pending_in, listed, ver, name,"
        " groups_xml FROM roster_item"
        " WHERE owner_jid = ? AND contact_jid = ? FOR UPDATE",
        p, 2, ngx_xmpp_roster_item_row);
}


static int
ngx_xmpp_roster_count_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols,
    ngx_uint_t n)
{
    ngx_xmpp_roster_ctx_t  *ctx = r->ctx;

    ctx->count = cols[0].data ? strtoull((char *) cols[0].data, NULL, 10)
                              : 0;
    return 0;
}


/* 0: room for one more row of owner; 1: full; -1: error */
static int
ngx_xmpp_roster_full(struct st_mysql *conn, ngx_xmpp_db_req_t *r,
    ngx_str_t *owner)
{
    ngx_xmpp_roster_ctx_t  *ctx = r->ctx;

    if (ngx_xmpp_db_select(conn, r,
            "SELECT COUNT(*) FROM roster_item WHERE owner_jid = ?",
            owner, 1, ngx_xmpp_roster_count_row)
        != 0)
    {
        return -1;
    }

    return ctx->count >= ctx->max_items;
}


static int
ngx_xmpp_roster_ver_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols, ngx_uint_t n)
{
    ngx_xmpp_roster_ctx_t  *ctx = r->ctx;

    ctx->cur_ver = cols[0].data ? strtoull((char *) cols[0].data, NULL, 10)
                                : 0;
    return 0;
}


/* RFC 6121 2.6: every change raises the owner's roster version */
static int
ngx_xmpp_roster_bump(struct st_mysql *conn, ngx_xmpp_db_req_t *r,
    ngx_str_t *owner, uint64_t *ver)
{
    ngx_xmpp_roster_ctx_t  *ctx = r->ctx;

    ctx->cur_ver = 0;

    if (ngx_xmpp_db_stmt(conn, r,
            "INSERT INTO roster_version (owner_jid, ver) VALUES (?, 1)"
            " ON DUPLICATE KEY UPDATE ver = ver + 1", owner, 1, NULL) != 0
        || ngx_xmpp_db_select(conn, r,
            "SELECT ver FROM roster_version WHERE owner_jid = ?",
            owner, 1, ngx_xmpp_roster_ver_row) != 0)
    {
        return -1;
    }

    *ver = ctx->cur_ver;

    return 0;
}


/* writes the row, or deletes it once nothing is left of it */
static int
ngx_xmpp_roster_save(struct st_mysql *conn, ngx_xmpp_db_req_t *r,
    ngx_str_t *owner, ngx_str_t *contact, ngx_xmpp_ritem_t *it)
{
    u_char     flags[5], ver[NGX_INT64_LEN];
    ngx_str_t  p[10];

    p[0] = *owner;
    p[1] = *contact;

    if (!it->listed && !it->pending_in) {
        return ngx_xmpp_db_stmt(conn, r,
                   "DELETE FROM roster_item"
                   " WHERE owner_jid = ? AND contact_jid = ?", p, 2, NULL);
    }

    flags[0] = '0' + it->sub_to;
    flags[1] = '0' + it->sub_from;
    flags[2] = '0' + it->ask_out;
    flags[3] = '0' + it->pending_in;
    flags[4] = '0' + it->listed;

    p[2] = it->name;
    p[3].data = it->groups.len ? it->groups.data : NULL;
    p[3].len = it->groups.len;
    p[4].data = &flags[0]; p[4].len = 1;
    p[5].data = &flags[1]; p[5].len = 1;
    p[6].data = &flags[2]; p[6].len = 1;
    p[7].data = &flags[3]; p[7].len = 1;
    p[8].data = &flags[4]; p[8].len = 1;
    p[9].data = ver;
    p[9].len = ngx_sprintf(ver, "%uL", it->ver) - ver;

    return ngx_xmpp_db_stmt(conn, r,
        "INSERT INTO roster_item (owner_jid, contact_jid, name, groups_xml,"
        " sub_to, sub_from, ask_out, pending_in, listed, ver)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE"
        " name = VALUES(name), groups_xml = VALUES(groups_xml),"
        " sub_to = VALUES(sub_to), sub_from = VALUES(sub_from),"
        " ask_out = VALUES(ask_out), pending_in = VALUES(pending_in),"
        " listed = VALUES(listed), ver = VALUES(ver)", p, 10, NULL);
}


/* a visible change: new version, row written, push to the owner */
static int
ngx_xmpp_roster_commit_item(struct st_mysql *conn, ngx_xmpp_db_req_t *r,
    ngx_str_t *owner, ngx_str_t *contact, ngx_xmpp_ritem_t *it)
{
    if (ngx_xmpp_roster_bump(conn, r, owner, &it->ver) != 0) {
        return -1;
    }

    return ngx_xmpp_roster_save(conn, r, owner, contact, it);
}


/* a JID, length first, into a list read by ngx_xmpp_roster_jids() */
static void
ngx_xmpp_roster_jid_add(ngx_xmpp_wbuf_t *b, ngx_str_t *jid)
{
    uint16_t  len;

    len = (uint16_t) jid->len;

    ngx_xmpp_wbuf_add(b, &len, sizeof(uint16_t));
    ngx_xmpp_wbuf_add(b, jid->data, jid->len);
}


/* columns: contact_jid, name, groups_xml, sub_to, sub_from, ask_out */
static int
ngx_xmpp_roster_get_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols, ngx_uint_t n)
{
    ngx_xmpp_roster_ctx_t  *ctx = r->ctx;

    ngx_xmpp_ritem_t  it;

    ngx_memzero(&it, sizeof(ngx_xmpp_ritem_t));

    it.name = cols[1];
    it.groups = cols[2];
    it.sub_to = ngx_xmpp_roster_flag(&cols[3]);
    it.sub_from = ngx_xmpp_roster_flag(&cols[4]);
    it.ask_out = ngx_xmpp_roster_flag(&cols[5]);

    ngx_xmpp_roster_item_xml(&ctx->out, &cols[0], &it, 0);
    ngx_xmpp_roster_jid_add(&ctx->jids, &cols[0]);

    return (ctx->out.failed || ctx->jids.failed) ? -1 : 0;
}


/*
 * RFC 6121 2.2: the personal items and their version; whether the
 * client's copy is current is decided with the shared contacts, on the
 * event loop.
 */
static int
ngx_xmpp_roster_run_get(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    ngx_xmpp_roster_ctx_t  *ctx = r->ctx;

    if (ngx_xmpp_db_select(conn, r,
            "SELECT ver FROM roster_version WHERE owner_jid = ?",
            &ctx->owner, 1, ngx_xmpp_roster_ver_row) != 0)
    {
        return -1;
    }

    if (ngx_xmpp_db_select(conn, r,
            "SELECT contact_jid, name, groups_xml, sub_to, sub_from, ask_out"
            " FROM roster_item WHERE owner_jid = ? AND listed = 1"
            " ORDER BY contact_jid",
            &ctx->owner, 1, ngx_xmpp_roster_get_row) != 0)
    {
        if (ctx->out.failed) {
            ngx_cpystrn((u_char *) r->err, (u_char *) "roster too large",
                        sizeof(r->err));
        }

        return -1;
    }

    return 0;
}


/* RFC 6121 2.3 and 2.4: add or update; name and groups are replaced */
static int
ngx_xmpp_roster_run_set(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    int                     full;
    ngx_xmpp_roster_ctx_t  *ctx = r->ctx;
    ngx_xmpp_ritem_t       *oi;

    oi = &ctx->oi;

    if (ngx_xmpp_roster_load(conn, r, &ctx->owner, &ctx->contact, oi) != 0)
    {
        return -1;
    }

    if (!oi->listed) {
        full = ngx_xmpp_roster_full(conn, r, &ctx->owner);

        if (full == -1) {
            return -1;
        }

        /* a pending-in row is already counted */
        if (full && !oi->found) {
            ctx->refused = "not-allowed";
            return 0;
        }
    }

    oi->listed = 1;
    ngx_free(oi->name.data);
    ngx_free(oi->groups.data);
    ngx_str_null(&oi->groups);

    if (ngx_xmpp_roster_dup(&oi->name, &ctx->name) != 0
        || (ctx->groups.len
            && ngx_xmpp_roster_dup(&oi->groups, &ctx->groups) != 0))
    {
        return -1;
    }

    ctx->opush = 1;

    return ngx_xmpp_roster_commit_item(conn, r, &ctx->owner, &ctx->contact,
                                       oi);
}


/*
 * Appendix A: one side of a subscription ends.  The item is the
 * owner's of the contact (contact 0) or the contact's of the owner
 * (contact 1); it loses its "to" side (the subscription, or the
 * request pending out: both are only ever set on a listed item, 3.1.2)
 * or its "from" side (the subscription, or the request pending in; an
 * unlisted item is only such a request, saved or deleted without a new
 * version).  A listed item is pushed; a subscriber that stops being
 * one hears "unavailable" (RFC 6121 3.2.2, 3.3.3).
 */
static int
ngx_xmpp_roster_cancel(struct st_mysql *conn, ngx_xmpp_db_req_t *r,
    ngx_uint_t contact, ngx_uint_t to)
{
    ngx_str_t              *owner, *other;
    ngx_xmpp_ritem_t       *it;
    ngx_xmpp_roster_ctx_t  *ctx = r->ctx;

    it = contact ? &ctx->ci : &ctx->oi;
    owner = contact ? &ctx->contact : &ctx->owner;
    other = contact ? &ctx->owner : &ctx->contact;

    if (to) {
        if ((!it->sub_to && !it->ask_out) || !it->listed) {
            return 0;
        }

        it->sub_to = 0;
        it->ask_out = 0;

    } else {
        if (!it->sub_from && !it->pending_in) {
            return 0;
        }

        if (contact) {
            ctx->unavail_c2o = it->sub_from;

        } else {
            ctx->unavail_o2c = it->sub_from;
        }

        it->sub_from = 0;
        it->pending_in = 0;

        if (!it->listed) {
            return ngx_xmpp_roster_save(conn, r, owner, other, it);
        }
    }

    if (contact) {
        ctx->cpush = 1;

    } else {
        ctx->opush = 1;
    }

    return ngx_xmpp_roster_commit_item(conn, r, owner, other, it);
}


/*
 * RFC 6121 2.5: removing an item cancels both subscriptions, and the
 * contact hears <unsubscribe/> and <unsubscribed/> as if sent (2.5.2).
 */
static int
ngx_xmpp_roster_run_remove(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    ngx_xmpp_roster_ctx_t  *ctx = r->ctx;
    ngx_xmpp_ritem_t       *oi;

    oi = &ctx->oi;

    if (ngx_xmpp_roster_load(conn, r, &ctx->owner, &ctx->contact, oi) != 0
        || ngx_xmpp_roster_load(conn, r, &ctx->contact, &ctx->owner,
                                &ctx->ci) != 0)
    {
        return -1;
    }

    if (!oi->listed) {
        ctx->refused = "item-not-found";
        return 0;
    }

    if (oi->sub_to || oi->ask_out) {
        ctx->deliver_unsub = ctx->ci.sub_from || ctx->ci.pending_in;

        /* the contact's side of an outbound unsubscribe (A.3.3) */
        if (ngx_xmpp_roster_cancel(conn, r, 1, 0) != 0) {
            return -1;
        }
    }

    if (oi->sub_from || oi->pending_in) {
        ctx->unavail_o2c = oi->sub_from;
        ctx->deliver_unsubd = ctx->ci.sub_to || ctx->ci.ask_out;

        /* the contact's side of an outbound unsubscribed (A.3.4) */
        if (ngx_xmpp_roster_cancel(conn, r, 1, 1) != 0) {
            return -1;
        }
    }

    ngx_free(oi->name.data);
    ngx_free(oi->groups.data);
    ngx_memzero(oi, sizeof(ngx_xmpp_ritem_t));
    ctx->opush = 1;
    ctx->oremoved = 1;

    if (ngx_xmpp_roster_bump(conn, r, &ctx->owner, &oi->ver) != 0) {
        return -1;
    }

    return ngx_xmpp_roster_save(conn, r, &ctx->owner, &ctx->contact, oi);
}


/* Appendix A.2.1 (outbound) and A.3.1 (inbound) subscribe */
static int
ngx_xmpp_roster_run_subscribe(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    int                     full;
    ngx_xmpp_roster_ctx_t  *ctx = r->ctx;
    ngx_xmpp_ritem_t       *oi, *ci;

    oi = &ctx->oi;
    ci = &ctx->ci;

    if (!oi->sub_to && !oi->ask_out) {
        if (!oi->found) {
            full = ngx_xmpp_roster_full(conn, r, &ctx->owner);

            if (full) {
                ctx->refused = (full == 1) ? "not-allowed" : NULL;
                return full == 1 ? 0 : -1;
            }
        }

        /* 3.1.2: the contact appears in the user's roster, pending out */
        oi->ask_out = 1;
        oi->listed = 1;
        ctx->opush = 1;
    }

    if (ci->sub_from) {
        /* 3.1.3: approved already; the server answers for the contact */
        ctx->reply_subscribed = 1;
        ctx->probe_c2o = 1;

        if (!oi->sub_to || oi->ask_out) {
            oi->sub_to = 1;
            oi->ask_out = 0;
            ctx->opush = 1;
        }

    } else {
        if (!ci->found) {
            full = ngx_xmpp_roster_full(conn, r, &ctx->contact);

            if (full) {
                ctx->refused = (full == 1) ? "resource-constraint" : NULL;
                return full == 1 ? 0 : -1;
            }
        }

        ctx->deliver = 1;

        if (!ci->pending_in) {
            /* stored: delivered again at the next initial presence */
            ci->pending_in = 1;

            if (ngx_xmpp_roster_save(conn, r, &ctx->contact, &ctx->owner,
                                     ci)
                != 0)
            {
                return -1;
            }
        }
    }

    if (ctx->opush) {
        return ngx_xmpp_roster_commit_item(conn, r, &ctx->owner,
                                           &ctx->contact, oi);
    }

    return 0;
}


/* Appendix A.2.2 (outbound) and A.3.2 (inbound) subscribed */
static int
ngx_xmpp_roster_run_subscribed(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    ngx_xmpp_roster_ctx_t  *ctx = r->ctx;
    ngx_xmpp_ritem_t       *oi, *ci;

    oi = &ctx->oi;
    ci = &ctx->ci;

    if (!oi->pending_in) {
        /* no request to approve: no state change, nothing is routed */
        return 0;
    }

    oi->pending_in = 0;
    oi->sub_from = 1;
    oi->listed = 1;
    ctx->opush = 1;
    ctx->probe_o2c = 1;

    if (ngx_xmpp_roster_commit_item(conn, r, &ctx->owner, &ctx->contact, oi)
        != 0)
    {
        return -1;
    }

    if (!ci->ask_out) {
        return 0;
    }

    ci->ask_out = 0;
    ci->sub_to = 1;
    ctx->cpush = 1;
    ctx->deliver = 1;

    return ngx_xmpp_roster_commit_item(conn, r, &ctx->contact, &ctx->owner,
                                       ci);
}


/* Appendix A.2.3 and A.3.3: the owner ends its subscription */
static int
ngx_xmpp_roster_run_unsubscribe(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    ngx_xmpp_roster_ctx_t  *ctx = r->ctx;

    if (ngx_xmpp_roster_cancel(conn, r, 0, 1) != 0) {
        return -1;
    }

    ctx->deliver = ctx->ci.sub_from || ctx->ci.pending_in;

    return ngx_xmpp_roster_cancel(conn, r, 1, 0);
}


/* Appendix A.2.4 and A.3.4: the owner cancels or denies the contact's */
static int
ngx_xmpp_roster_run_unsubscribed(struct st_mysql *conn,
    ngx_xmpp_db_req_t *r)
{
    ngx_xmpp_roster_ctx_t  *ctx = r->ctx;

    if (ngx_xmpp_roster_cancel(conn, r, 0, 0) != 0) {
        return -1;
    }

    ctx->deliver = ctx->ci.sub_to || ctx->ci.ask_out;

    return ngx_xmpp_roster_cancel(conn, r, 1, 1);
}


static int ngx_xmpp_roster_presence_row(ngx_xmpp_db_req_t *r,
    ngx_str_t *cols, ngx_uint_t n);
static int ngx_xmpp_roster_blocked_row(ngx_xmpp_db_req_t *r,
    ngx_str_t *cols, ngx_uint_t n);


/* columns: 0 and a blocked JID, or 1 and a contact's presence row */
static int
ngx_xmpp_roster_presence_or_blocked_row(ngx_xmpp_db_req_t *r,
    ngx_str_t *cols, ngx_uint_t n)
{
    if (n != 5 || cols[0].len != 1) {
        return 0;
    }

    return cols[0].data[0] == '0'
           ? ngx_xmpp_roster_blocked_row(r, cols + 1, n - 1)
           : ngx_xmpp_roster_presence_row(r, cols + 1, n - 1);
}


/* columns: contact_jid, sub_to, sub_from, pending_in */
static int
ngx_xmpp_roster_presence_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols,
    ngx_uint_t n)
{
    u_char                  flags;
    uint16_t                len;
    ngx_xmpp_roster_ctx_t  *ctx = r->ctx;

    if (cols[0].data == NULL || cols[0].len > NGX_XMPP_ROSTER_JID_MAX) {
        return 0;
    }

    flags = (u_char) (ngx_xmpp_roster_flag(&cols[1])
                      | (ngx_xmpp_roster_flag(&cols[2]) << 1)
                      | (ngx_xmpp_roster_flag(&cols[3]) << 2));
    len = (uint16_t) cols[0].len;

    ngx_xmpp_wbuf_add(&ctx->out, &flags, 1);
    ngx_xmpp_wbuf_add(&ctx->out, &len, sizeof(uint16_t));
    ngx_xmpp_wbuf_add(&ctx->out, cols[0].data, cols[0].len);

    return ctx->out.failed ? -1 : 0;
}


/*
 * columns: jid.  XEP-0191 3.3: no presence of the user goes to a JID
 * the user blocked, and it is neither probed nor asked again; read
 * with the roster so that a session's final presence, sent after the
 * session (and its cached list) is gone, is filtered too.
 */
static int
ngx_xmpp_roster_blocked_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols,
    ngx_uint_t n)
{
    ngx_xmpp_roster_ctx_t  *ctx = r->ctx;

    if (cols[0].data == NULL) {
        return 0;
    }

    ngx_xmpp_wbuf_add(&ctx->jids, cols[0].data, cols[0].len);
    ngx_xmpp_wbuf_add(&ctx->jids, "", 1);
    ctx->nblocked++;

    return ctx->jids.failed ? -1 : 0;
}


static int
ngx_xmpp_roster_txn(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    ngx_xmpp_roster_ctx_t  *ctx = r->ctx;

    switch (ctx->op) {

    case NGX_XMPP_ROSTER_OP_SET:
        return ngx_xmpp_roster_run_set(conn, r);

    case NGX_XMPP_ROSTER_OP_REMOVE:
        return ngx_xmpp_roster_run_remove(conn, r);

    default:
        break;
    }

    if (ngx_xmpp_roster_load(conn, r, &ctx->owner, &ctx->contact, &ctx->oi)
        != 0
        || ngx_xmpp_roster_load(conn, r, &ctx->contact, &ctx->owner,
                                &ctx->ci) != 0)
    {
        return -1;
    }

    switch (ctx->op) {

    case NGX_XMPP_ROSTER_OP_SUBSCRIBE:
        return ngx_xmpp_roster_run_subscribe(conn, r);

    case NGX_XMPP_ROSTER_OP_SUBSCRIBED:
        return ngx_xmpp_roster_run_subscribed(conn, r);

    case NGX_XMPP_ROSTER_OP_UNSUBSCRIBE:
        return ngx_xmpp_roster_run_unsubscribe(conn, r);

    default: /* NGX_XMPP_ROSTER_OP_UNSUBSCRIBED */
        return ngx_xmpp_roster_run_unsubscribed(conn, r);
    }
}


static void
ngx_xmpp_roster_reset(ngx_xmpp_roster_ctx_t *ctx)
{
    ngx_free(ctx->oi.name.data);
    ngx_free(ctx->oi.groups.data);
    ngx_free(ctx->ci.name.data);
    ngx_free(ctx->ci.groups.data);

    ngx_memzero(&ctx->oi, sizeof(ngx_xmpp_ritem_t));
    ngx_memzero(&ctx->ci, sizeof(ngx_xmpp_ritem_t));

    ctx->refused = NULL;
    ctx->opush = 0;
    ctx->oremoved = 0;
    ctx->cpush = 0;
    ctx->deliver = 0;
    ctx->deliver_unsub = 0;
    ctx->deliver_unsubd = 0;
    ctx->reply_subscribed = 0;
    ctx->probe_c2o = 0;
    ctx->probe_o2c = 0;
    ctx->unavail_c2o = 0;
    ctx->unavail_o2c = 0;
}


/*
 * Pool thread.  Changes run as one transaction (the adapter commits it
 * after we return 0); two users changing each other's rows at once can
 * deadlock, and InnoDB then rolls one back: it is run again from the
 * start.
 */
int
ngx_xmpp_roster_run(struct st_mysql *conn, ngx_xmpp_db_req_t *r)
{
    ngx_str_t               p[2];
    unsigned int            err;
    ngx_uint_t              try;
    ngx_xmpp_roster_ctx_t  *ctx = r->ctx;

    if (ctx->op == NGX_XMPP_ROSTER_OP_GET) {
        return ngx_xmpp_roster_run_get(conn, r);
    }

    if (ctx->op == NGX_XMPP_ROSTER_OP_PROBE) {
        /* XEP-0191 3.5: does the contact block the prober? */
        if (ngx_xmpp_db_select(conn, r,
                "SELECT jid FROM blocklist WHERE owner_jid = ?",
                &ctx->contact, 1, ngx_xmpp_roster_blocked_row)
            != 0)
        {
            return -1;
        }

        /* the contact's item of the prober: is it a "from" subscriber? */
        p[0] = ctx->contact;
        p[1] = ctx->owner;

        return ngx_xmpp_db_select(conn, r,
            "SELECT sub_to, sub_from, ask_out, pending_in, listed, ver, name,"
            " groups_xml FROM roster_item"
            " WHERE owner_jid = ? AND contact_jid = ?",
            p, 2, ngx_xmpp_roster_probe_row);
    }

    if (ctx->op == NGX_XMPP_ROSTER_OP_PRESENCE) {
        /*
         * The blocklist and the contacts in one statement (one round
         * trip, one snapshot): a presence is broadcast twice per
         * session.  The contacts come in contact_jid order, as alone.
         */
        p[0] = ctx->owner;
        p[1] = ctx->owner;

        return ngx_xmpp_db_select(conn, r,
            "SELECT 0 AS k, jid, 0, 0, 0 FROM blocklist WHERE owner_jid = ?"
            " UNION ALL"
            " SELECT 1, contact_jid, sub_to, sub_from, pending_in"
            " FROM roster_item WHERE owner_jid = ?"
            " AND (sub_to = 1 OR sub_from = 1 OR pending_in = 1)"
            " ORDER BY k, jid",
            p, 2, ngx_xmpp_roster_presence_or_blocked_row);
    }

    for (try = 0; try < NGX_XMPP_ROSTER_TRIES; try++) {

        if (ngx_xmpp_roster_txn(conn, r) == 0) {
            if (ctx->refused) {
                /* nothing of a refused change is committed */
                (void) mysql_rollback(conn);
            }

            return 0;
        }

        err = r->db_errno;

        if (err != ER_LOCK_DEADLOCK && err != ER_LOCK_WAIT_TIMEOUT) {
            return -1;
        }

        (void) mysql_rollback(conn);

        ngx_xmpp_roster_reset(ctx);
        r->db_errno = 0;
        r->err[0] = '\0';
    }

    return -1;
}
