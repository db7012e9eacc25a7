
/*
 * An archive query (XEP-0313), a user's (ngx_xmpp_mam.c) or a room's
 * (ngx_xmpp_mamroom.c): each parses the iq with its own XML tree and
 * checks who may read, then hands an ngx_xmpp_mam_query_t to this
 * file, which waits until MariaDB has every record journaled before the
 * query came, runs it in the database thread pool (ngx_xmpp_db.c), and
 * sends the results and <fin/> to the requester's session.  The thread
 * builds each result's XML, so the event loop only wraps and sends.
 *
 * The archives are audit records (docs/history.md): a user's is the
 * "message" records they sent (actor_user) or received (peer), a
 * room's its "muc_message" records (peer = the room).  Corrections
 * (XEP-0308) and retractions (XEP-0424) are records of their own; the
 * original is never changed, and a page shows it with the body of its
 * latest correction, or as a tombstone once retracted.
 */


#include "ngx_xmpp.h"

#include <mysql.h>
#include <jansson.h>


#define NGX_XMPP_NS_RSM        "http://jabber.org/protocol/rsm"
#define NGX_XMPP_NS_FORWARD    "urn:xmpp:forward:0"
#define NGX_XMPP_NS_DELAY      "urn:xmpp:delay"
#define NGX_XMPP_NS_MUC_USER   "http://jabber.org/protocol/muc#user"

#define NGX_XMPP_MAM_SHIP_WAIT     1000       /* ms */

/*
 * The records a room's page "with" a nick reads at most (MariaDB's
 * LIMIT ROWS EXAMINED): the nick is only in the payload, so a nick that
 * said little reads the room's range until the page is full, and one
 * that never spoke, all of it (seconds at a million, a database thread
 * held all along).  See ngx_xmpp_mam_run() for what a cut page answers.
 */
#define NGX_XMPP_MAM_NICK_SCAN     100000


struct ngx_xmpp_mam_row_s {
    char                  *xml;           /* the message as results
                                             show it, malloc()ed */
    size_t                 len;
    int64_t                ts;
    uint64_t               writer;
    uint64_t               seq;
    char                   node[NGX_XMPP_MAM_ID_MAX];
    char                   id[NGX_XMPP_MAM_ID_MAX];
};


static int ngx_xmpp_mam_run(MYSQL *conn, ngx_xmpp_db_req_t *r);
static void ngx_xmpp_mam_page(ngx_xmpp_mam_query_t *mq);
static void ngx_xmpp_mam_done(ngx_xmpp_db_req_t *r);
static void ngx_xmpp_mam_free(ngx_xmpp_db_req_t *r);
static void ngx_xmpp_mam_wait(ngx_event_t *ev);
static void ngx_xmpp_mam_send(ngx_xmpp_mam_query_t *mq, ngx_xmpp_wbuf_t *b);
static void ngx_xmpp_mam_error(ngx_xmpp_mam_query_t *mq, const char *type,
    const char *condition);


/*
 * The database request of a parsed query: tmp, then its strings in the
 * same block, which outlives the stanza and the requester's session.
 */
ngx_xmpp_db_req_t *
ngx_xmpp_mam_request(ngx_xmpp_mam_query_t *tmp, ngx_str_t *owner,
    ngx_str_t *to, ngx_str_t *iq_id, ngx_str_t *qid, ngx_log_t *log)
{
    u_char                *p;
    size_t                 size;
    ngx_str_t              with;
    ngx_xmpp_db_req_t     *r;
    ngx_xmpp_mam_query_t  *mq;

    with = tmp->with;
    size = sizeof(ngx_xmpp_mam_query_t) + owner->len + to->len + with.len
           + iq_id->len + qid->len;

    r = ngx_xmpp_db_create(tmp->xcf, size, log);
    if (r == NULL) {
        return NULL;
    }

    mq = r->ctx;
    *mq = *tmp;
    p = (u_char *) (mq + 1);

#define ngx_xmpp_mam_copy(dst, src)                                        \
    (dst)->data = p;                                                       \
    (dst)->len = (src)->len;                                               \
    p = (src)->len ? ngx_cpymem(p, (src)->data, (src)->len) : p

    ngx_xmpp_mam_copy(&mq->owner, owner);
    ngx_xmpp_mam_copy(&mq->to, to);
    ngx_xmpp_mam_copy(&mq->with, &with);
    ngx_xmpp_mam_copy(&mq->iq_id, iq_id);
    ngx_xmpp_mam_copy(&mq->qid, qid);

#undef ngx_xmpp_mam_copy

    r->run = ngx_xmpp_mam_run;
    r->done = ngx_xmpp_mam_done;
    r->cleanup = ngx_xmpp_mam_free;
    r->data = NULL;

    /* a page only reads: no COMMIT round trip (ngx_xmpp_db.c) */
    r->readonly = 1;

    return r;
}


/* runs a request of ngx_xmpp_mam_request(); the answer follows */
void
ngx_xmpp_mam_query(ngx_xmpp_db_req_t *r)
{
    ngx_xmpp_mam_query_t  *mq;

    mq = r->ctx;

    /* what was recorded before the query is in its answer */
    ngx_xmpp_audit_marks(mq->xcf, mq->marks);
    mq->since = ngx_current_msec;
    mq->wait.handler = ngx_xmpp_mam_wait;
    mq->wait.data = r;
    mq->wait.log = ngx_cycle->log;
    mq->wait.cancelable = 1;

    ngx_xmpp_mam_wait(&mq->wait);
}


/*
 * The shipper copies the journals into MariaDB every
 * conclave_audit_ship_interval; the query waits (polling the shared
 * figures every 5 ms, at most NGX_XMPP_MAM_SHIP_WAIT) until MariaDB has
 * every record journaled before the query arrived.  After that, or
 * while MariaDB is unreachable, it runs with what is there.  A user's
 * query whose session went meanwhile is dropped.
 */
static void
ngx_xmpp_mam_wait(ngx_event_t *ev)
{
    ngx_xmpp_db_req_t     *r;
    ngx_xmpp_session_t    *s;
    ngx_xmpp_mam_query_t  *mq;

    r = ev->data;
    mq = r->ctx;

    if (mq->kind == NGX_XMPP_MAM_USER) {
        s = ngx_xmpp_session_find(mq->sid);
        if (s == NULL || !s->bound) {
            ngx_xmpp_db_destroy(r);
            return;
        }
    }

    if (!ngx_xmpp_audit_shipped(mq->xcf, mq->marks)
        && ngx_current_msec - mq->since < NGX_XMPP_MAM_SHIP_WAIT)
    {
        ngx_add_timer(ev, 5);
        return;
    }

    if (ngx_xmpp_db_post(r) != NGX_OK) {
        ngx_xmpp_mam_error(mq, "wait", "resource-constraint");
        ngx_xmpp_db_destroy(r);
    }
}


/* ------------------------------------------------------------------ */
/* the pool thread */

static int
ngx_xmpp_mam_resolve_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols,
    ngx_uint_t n)
{
    ngx_xmpp_mam_pos_t  *pos;

    pos = r->data;

    if (n == 1 && cols[0].data) {
        pos->ts = strtoll((char *) cols[0].data, NULL, 10);
        pos->resolved = 1;
    }

    return 0;
}


/* a position id -> its timestamp, in this archive only */
static int
ngx_xmpp_mam_resolve(MYSQL *conn, ngx_xmpp_db_req_t *r,
    ngx_xmpp_mam_pos_t *pos)
{
    int                    rc;
    u_char                 w[NGX_INT64_LEN + 1], q[NGX_INT64_LEN + 1];
    ngx_str_t              params[5];
    MYSQL_STMT            *stmt;
    ngx_xmpp_mam_query_t  *mq;

    mq = r->ctx;

    params[0].data = pos->node;
    params[0].len = pos->node_len;
    params[1].data = w;
    params[1].len = ngx_sprintf(w, "%uL", pos->writer) - w;
    params[2].data = q;
    params[2].len = ngx_sprintf(q, "%uL", pos->seq) - q;
    params[3] = mq->owner;
    params[4] = mq->owner;

    stmt = ngx_xmpp_db_exec(conn, r, mq->kind == NGX_XMPP_MAM_USER
               ? "SELECT ts_utc_us FROM audit_record WHERE node = ?"
                 " AND writer_id = ? AND seq = ? AND event = 'message'"
                 " AND (actor_user = ? OR peer = ?)"
               : "SELECT ts_utc_us FROM audit_record WHERE node = ?"
                 " AND writer_id = ? AND seq = ? AND event = 'muc_message'"
                 " AND peer = ?",
               params, mq->kind == NGX_XMPP_MAM_USER ? 5 : 4);
    if (stmt == NULL) {
        return -1;
    }

    r->data = pos;
    rc = ngx_xmpp_db_rows(stmt, r, ngx_xmpp_mam_resolve_row);
    r->data = NULL;
    (void) mysql_stmt_close(stmt);

    return rc;
}


/*
 * A position (an id) of the page, "after" or "before": the record it
 * names is joined as table t ("a" or "b") by its whole primary key,
 * which MariaDB reads once as a constant before it plans the rest, so
 * (ts, primary key) of the position bound the page's index range like
 * literals.  The join also checks that the id is in this archive: if
 * not, the page is empty ("Impossible WHERE noticed after reading const
 * tables") and ngx_xmpp_mam_run() tells <item-not-found/> apart.
 */
static u_char *
ngx_xmpp_mam_pos_sql(u_char *p, u_char *last, ngx_xmpp_mam_query_t *mq,
    ngx_xmpp_mam_pos_t *pos, char t, char op, ngx_str_t *params,
    ngx_uint_t *np)
{
    p = ngx_slprintf(p, last, " AND %c.node = ? AND %c.writer_id = %uL"
                     " AND %c.seq = %uL", t, t, pos->writer, t, pos->seq);
    params[*np].data = pos->node;
    params[(*np)++].len = pos->node_len;

    if (mq->kind == NGX_XMPP_MAM_USER) {
        p = ngx_slprintf(p, last, " AND %c.event = 'message'"
                         " AND ? IN (%c.actor_user, %c.peer)", t, t, t);
    } else {
        p = ngx_slprintf(p, last, " AND %c.event = 'muc_message'"
                         " AND %c.peer = ?", t, t);
    }

    params[(*np)++] = mq->owner;

    return ngx_slprintf(p, last, " AND x.ts_utc_us %c= %c.ts_utc_us"
                        " AND (x.ts_utc_us %c %c.ts_utc_us"
                        " OR (x.node, x.writer_id, x.seq)"
                        " %c (%c.node, %c.writer_id, %c.seq))",
                        op, t, op, t, op, t, t, t);
}


/*
 * The latest correction (XEP-0308) and the first retraction (XEP-0424)
 * of a message x, index lookups on mam_ref; only the sender's own
 * count.  The index (mam_ref, actor_user, ts) of 016_mam.sql holds them
 * in the order asked for (ts, then the primary key it ends with), so
 * neither lookup sorts.  In 1:1 chat both name the original's id attribute; in a room
 * a retraction names the room's stanza-id, or the original's id as
 * some clients do: two subqueries, since an IN of both made MariaDB
 * scan the table for each row.  The namespace gets the table's
 * collation: CONVERT(.. USING utf8mb4) has the charset's default, and
 * a column of mixed collations cannot be a UNION's.
 */
#define NGX_XMPP_MAM_CORRECTION_SQL                                        \
    " (SELECT c.body FROM audit_record c"                                  \
    "  FORCE INDEX (audit_record_mam_ref_ts)"                              \
    "  WHERE c.mam_ref = CONCAT('c:', x.stanza_id)"                        \
    "  AND c.actor_user = x.actor_user AND c.peer = x.peer"                \
    "  AND c.ts_utc_us >= x.ts_utc_us ORDER BY c.ts_utc_us DESC,"          \
    "  c.node DESC, c.writer_id DESC, c.seq DESC LIMIT 1),"

#define NGX_XMPP_MAM_RETRACTION_SQL(ref)                                   \
    "(SELECT CONCAT_WS(' ', c.node, c.writer_id, c.seq, c.ts_utc_us,"      \
    " JSON_VALUE(CONVERT(c.payload USING utf8mb4), '$.params.retract_ns')" \
    " COLLATE utf8mb4_unicode_ci)"                                         \
    " FROM audit_record c FORCE INDEX (audit_record_mam_ref_ts)"           \
    " WHERE c.mam_ref = CONCAT('r:', " ref ")"                             \
    " AND c.actor_user = x.actor_user AND c.peer = x.peer"                 \
    " AND c.ts_utc_us >= x.ts_utc_us"                                      \
    " ORDER BY c.ts_utc_us, c.node, c.writer_id, c.seq LIMIT 1)"


/*
 * A room's "with" (ngx_xmpp_mamroom_with()).  A real JID is a range of
 * (actor_user, peer, ts) of 004_mam.sql, in page order like the room's
 * own range, the room's other records of that user (joins, leaves)
 * skipped by event; a full JID also checks params.from of each.  A nick
 * is only in the payload (params.nick): the room's range is read in
 * page order and each record's nick compared, until the page is full
 * or the range ends (docs/history.md "Rooms" says what that costs).
 * Nicks and resources are compared byte for byte, as the room compares
 * nicks (ngx_xmpp_muc_occ_by_nick()); the bare JID is lower case in
 * both (ngx_xmpp_jid_make()).
 */
static u_char *
ngx_xmpp_mam_room_with_sql(u_char *p, u_char *last, ngx_xmpp_mam_query_t *mq,
    ngx_str_t *params, ngx_uint_t *np)
{
    if (mq->with_none) {
        return ngx_slprintf(p, last, " AND FALSE");
    }

    if (mq->with_nick) {
        params[(*np)++] = mq->with;
        return ngx_slprintf(p, last, " AND JSON_VALUE(CONVERT(x.payload"
                            " USING utf8mb4), '$.params.nick')"
                            " COLLATE utf8mb4_bin = ?");
    }

    if (mq->with_bare == 0) {
        return p;
    }

    params[*np].data = mq->with.data;
    params[(*np)++].len = mq->with_bare;
    p = ngx_slprintf(p, last, " AND x.actor_user = ?");

    if (mq->with.len > mq->with_bare) {
        params[(*np)++] = mq->with;
        p = ngx_slprintf(p, last, " AND JSON_VALUE(CONVERT(x.payload"
                         " USING utf8mb4), '$.params.from')"
                         " COLLATE utf8mb4_bin = ?");
    }

    return p;
}


/*
 * The filter is read from each record's payload along an index range (a
 * room's nick, a resource in a user's archive): the range read is cut
 * at NGX_XMPP_MAM_NICK_SCAN records.
 */
static ngx_uint_t
ngx_xmpp_mam_scans(ngx_xmpp_mam_query_t *mq)
{
    return mq->with_nick
           || (mq->kind == NGX_XMPP_MAM_USER && mq->with_bare != 0);
}


/*
 * One branch of the page, in parentheses.  A user's page is two: what
 * the user sent (own = 1, index (actor_user, ts)) and what they
 * received ((peer, ts)), or both halves of one conversation through
 * (actor_user, peer, ts); a room's is one range of (peer, event, ts) of
 * 011_mam.sql.  Each is an index range scan in the order of (ts,
 * primary key), which InnoDB's secondary indexes hold, so none needs a
 * sort or a temporary table, and reads max + 1 rows at most.
 */
static u_char *
ngx_xmpp_mam_branch_sql(u_char *p, u_char *last, ngx_xmpp_mam_query_t *mq,
    ngx_uint_t own, ngx_str_t *params, ngx_uint_t *np)
{
    const char  *dir;

    dir = mq->backward ? "DESC" : "ASC";

    p = ngx_slprintf(p, last, "(SELECT x.node, x.writer_id, x.seq,"
                     " x.ts_utc_us, x.payload," NGX_XMPP_MAM_CORRECTION_SQL);

    /*
     * The indexes are named: left alone, MariaDB's estimates pick
     * (event, ts) for the page and (actor_user, ts) for the lookups,
     * which scan the whole archive (seconds at a million rows).
     */
    if (mq->kind == NGX_XMPP_MAM_ROOM) {
        p = ngx_slprintf(p, last, " COALESCE("
            NGX_XMPP_MAM_RETRACTION_SQL("x.node, ':', x.writer_id, ':', x.seq")
            ", " NGX_XMPP_MAM_RETRACTION_SQL("x.stanza_id") ")"
            " FROM audit_record x FORCE INDEX (%s)%s%s"
            " WHERE x.peer = ? AND x.event = 'muc_message'",
            mq->with_bare ? "audit_record_conversation" : "audit_record_room",
            mq->after.set ? ", audit_record a" : "",
            mq->before.set ? ", audit_record b" : "");
        params[(*np)++] = mq->owner;

        p = ngx_xmpp_mam_room_with_sql(p, last, mq, params, np);

    } else {
        p = ngx_slprintf(p, last, " " NGX_XMPP_MAM_RETRACTION_SQL("x.stanza_id")
            " FROM audit_record x FORCE INDEX (%s)%s%s WHERE x.%s = ?",
            mq->with.len ? "audit_record_conversation"
                         : (own ? "audit_record_actor" : "audit_record_peer"),
            mq->after.set ? ", audit_record a" : "",
            mq->before.set ? ", audit_record b" : "",
            own ? "actor_user" : "peer");
        params[(*np)++] = mq->owner;

        if (!own) {
            /* a message to oneself is in the first half already */
            p = ngx_slprintf(p, last, " AND x.actor_user <> ?");
            params[(*np)++] = mq->owner;
        }

        if (mq->with.len) {
            p = ngx_slprintf(p, last, " AND x.%s = ?",
                             own ? "peer" : "actor_user");
            params[*np].data = mq->with.data;
            params[(*np)++].len = mq->with_bare ? mq->with_bare
                                                : mq->with.len;
        }

        if (mq->with_bare) {
            /*
             * A full JID: the resource the user wrote to, or that
             * wrote (the record's params.to and params.from), compared
             * byte for byte as resources are; read from the payload
             * along the conversation's range, as a room's nick is.
             */
            p = ngx_slprintf(p, last, " AND JSON_VALUE(CONVERT(x.payload"
                             " USING utf8mb4), '$.params.%s')"
                             " COLLATE utf8mb4_bin = ?",
                             own ? "to" : "from");
            params[(*np)++] = mq->with;
        }

        p = ngx_slprintf(p, last, " AND x.event = 'message'"
                         " AND (x.msg_type IS NULL"
                         " OR x.msg_type IN ('chat', 'normal'))");
    }

    p = ngx_slprintf(p, last,
                     " AND (x.body IS NOT NULL OR x.mam_ref IS NOT NULL)");

    if (mq->start != INT64_MIN) {
        p = ngx_slprintf(p, last, " AND x.ts_utc_us >= %L", mq->start);
    }

    if (mq->end != INT64_MAX) {
        p = ngx_slprintf(p, last, " AND x.ts_utc_us <= %L", mq->end);
    }

    if (mq->after.set) {
        p = ngx_xmpp_mam_pos_sql(p, last, mq, &mq->after, 'a', '>', params,
                                 np);
    }

    if (mq->before.set) {
        p = ngx_xmpp_mam_pos_sql(p, last, mq, &mq->before, 'b', '<', params,
                                 np);
    }

    p = ngx_slprintf(p, last, " ORDER BY x.ts_utc_us %s, x.node %s,"
                     " x.writer_id %s, x.seq %s LIMIT %ui",
                     dir, dir, dir, dir, mq->max + 1);

    if (ngx_xmpp_mam_scans(mq)) {
        p = ngx_slprintf(p, last, " ROWS EXAMINED %ui",
                         (ngx_uint_t) NGX_XMPP_MAM_NICK_SCAN);
    }

    return ngx_slprintf(p, last, ")");
}


/*
 * Applies what happened to a message later: the body of its latest
 * correction replaces its own (XEP-0308 section 5), a retraction turns
 * it into a tombstone (XEP-0424 section "Tombstones").  stanza is our
 * own serialization, so <body> is written exactly so.
 */
static char *
ngx_xmpp_mam_apply(ngx_xmpp_db_req_t *r, const char *stanza, size_t len,
    ngx_str_t *fix, ngx_str_t *retraction, size_t *out_len)
{
    u_char       *out, *p, *b, *e, *gt, *last;
    size_t        size;
    char          tid[NGX_XMPP_MAM_ID_MAX], ns[64];
    long long     ts, w, q;
    char          node[NGX_XMPP_MAM_ID_MAX];

    last = (u_char *) stanza + len;

    if (retraction->data) {
        /* "<node> <writer> <seq> <ts> <ns>" of the earliest retraction */
        if (sscanf((char *) retraction->data, "%95s %lld %lld %lld %63s",
                   node, &w, &q, &ts, ns) != 5)
        {
            goto plain;
        }

        gt = (u_char *) ngx_strlchr((u_char *) stanza, last, '>');
        if (gt == NULL || gt[-1] == '/') {
            goto plain;
        }

        ngx_snprintf((u_char *) tid, sizeof(tid), "%s:%L:%L%Z", node,
                     (int64_t) w, (int64_t) q);

        size = (gt + 1 - (u_char *) stanza) + 512 + sizeof("</message>");
        out = ngx_alloc(size, ngx_cycle->log);
        if (out == NULL) {
            return NULL;
        }

        p = ngx_cpymem(out, stanza, gt + 1 - (u_char *) stanza);
        p = ngx_sprintf(p, "<retracted xmlns='%s' id='%s' stamp='", ns, tid);
        p = ngx_xmpp_mam_stamp_time(p, (int64_t) ts);
        p = ngx_cpymem(p, "'/></message>", sizeof("'/></message>") - 1);
        *out_len = p - out;

        return (char *) out;
    }

    if (fix->data == NULL) {
        goto plain;
    }

    b = ngx_strlcasestrn((u_char *) stanza, last, (u_char *) "<body", 4);
    if (b == NULL || b + 5 >= last || (b[5] != '>' && b[5] != ' ')) {
        goto plain;
    }

    b = ngx_strlchr(b, last, '>');
    e = b ? ngx_strlcasestrn(b, last, (u_char *) "</body>", 6) : NULL;

    if (e == NULL || b[-1] == '/') {
        goto plain;
    }

    b++;

    /* the new body, escaped as the serializer would (6 bytes a char) */
    size = len + 6 * fix->len;
    out = ngx_alloc(size, ngx_cycle->log);
    if (out == NULL) {
        return NULL;
    }

    p = ngx_cpymem(out, stanza, b - (u_char *) stanza);
    p = (u_char *) ngx_escape_html(p, fix->data, fix->len);
    p = ngx_cpymem(p, e, last - e);
    *out_len = p - out;

    return (char *) out;

plain:

    out = ngx_alloc(len + 1, ngx_cycle->log);
    if (out == NULL) {
        return NULL;
    }

    ngx_memcpy(out, stanza, len);
    *out_len = len;

    return (char *) out;
}



/*
 * The real JID as XEP-0045 section 7.2.3 shows it to those who may see
 * it, just before </message>.  from is the room record's params.from.
 */
static char *
ngx_xmpp_mam_add_jid(ngx_xmpp_db_req_t *r, char *xml, size_t *len,
    const char *from, size_t from_len)
{
    u_char  *out, *p, *end;

    end = (u_char *) xml + *len;

    if (*len < sizeof("</message>") - 1
        || ngx_strncmp(end - (sizeof("</message>") - 1), "</message>",
                       sizeof("</message>") - 1) != 0)
    {
        return xml;
    }

    end -= sizeof("</message>") - 1;

    out = ngx_alloc(*len + 6 * from_len + 128, ngx_cycle->log);
    if (out == NULL) {
        ngx_free(xml);
        return NULL;
    }

    p = ngx_cpymem(out, xml, end - (u_char *) xml);
    p = ngx_cpymem(p, "<x xmlns='" NGX_XMPP_NS_MUC_USER "'><item jid='",
                   sizeof("<x xmlns='" NGX_XMPP_NS_MUC_USER "'><item jid='")
                   - 1);
    p = (u_char *) ngx_escape_html(p, (u_char *) from, from_len);
    p = ngx_cpymem(p, "'/></x></message>", sizeof("'/></x></message>") - 1);

    ngx_free(xml);
    *len = p - out;

    return (char *) out;
}


/*
 * pool thread: one row of the page -> the message the requester sees.
 * The thread allocates with ngx_cycle->log, never r->log: the
 * requester's connection log may be freed meanwhile (see
 * ngx_xmpp_db_rows()).
 */
static int
ngx_xmpp_mam_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols, ngx_uint_t n)
{
    json_t                *rec, *params, *stanza, *from;
    json_error_t           jerr;
    ngx_xmpp_mam_row_t    *row;
    ngx_xmpp_mam_query_t  *mq;

    mq = r->ctx;

    if (n != 7 || mq->nrows == mq->cap || cols[4].data == NULL) {
        return 0;
    }

    rec = json_loadb((char *) cols[4].data, cols[4].len, 0, &jerr);
    params = rec ? json_object_get(rec, "params") : NULL;
    stanza = params ? json_object_get(params, "stanza") : NULL;
    from = params ? json_object_get(params, "from") : NULL;

    if (!json_is_string(stanza)) {
        /* not a message we wrote: skipped, the payload stays evidence */
        json_decref(rec);
        return 0;
    }

    row = &mq->rows[mq->nrows];

    row->xml = ngx_xmpp_mam_apply(r, json_string_value(stanza),
                                  json_string_length(stanza), &cols[5],
                                  &cols[6], &row->len);

    if (row->xml && mq->real_jids && json_is_string(from)) {
        row->xml = ngx_xmpp_mam_add_jid(r, row->xml, &row->len,
                                        json_string_value(from),
                                        json_string_length(from));
    }

    json_decref(rec);

    if (row->xml == NULL) {
        ngx_cpystrn((u_char *) r->err, (u_char *) "out of memory",
                    sizeof(r->err));
        return -1;
    }

    row->ts = strtoll((char *) cols[3].data, NULL, 10);
    row->writer = strtoull((char *) cols[1].data, NULL, 10);
    row->seq = strtoull((char *) cols[2].data, NULL, 10);
    ngx_snprintf((u_char *) row->node, sizeof(row->node), "%V%Z", &cols[0]);
    ngx_snprintf((u_char *) row->id, sizeof(row->id), "%V:%V:%V%Z",
                 &cols[0], &cols[1], &cols[2]);
    mq->nrows++;

    return 0;
}


/*
 * Pool thread.  The page is one statement, the UNION ALL of its
 * branches (two for a user's archive, one for a room's), each limited
 * to max + 1 rows; the extra row tells whether the page is the last one
 * (<fin complete='true'/>).  No count: RSM's <count/> is optional
 * (XEP-0059 section 2.6) and would cost a scan of the whole range.
 * Only an empty page that had a position asks again, to tell an id
 * that is not in this archive (<item-not-found/>) from an empty range.
 */
static int
ngx_xmpp_mam_run(MYSQL *conn, ngx_xmpp_db_req_t *r)
{
    int                    rc;
    u_char                *p, *last, sql[8192];
    ngx_str_t              params[NGX_XMPP_DB_PARAMS_MAX];
    ngx_uint_t             np, i, branches;
    MYSQL_STMT            *stmt;
    ngx_xmpp_mam_query_t  *mq;

    mq = r->ctx;

    branches = (mq->kind == NGX_XMPP_MAM_USER) ? 2 : 1;
    mq->cap = branches * (mq->max + 1);
    mq->rows = ngx_calloc(mq->cap * sizeof(ngx_xmpp_mam_row_t),
                          ngx_cycle->log);
    if (mq->rows == NULL) {
        ngx_cpystrn((u_char *) r->err, (u_char *) "out of memory",
                    sizeof(r->err));
        return -1;
    }

    p = sql;
    last = sql + sizeof(sql) - 1;
    np = 0;

    for (i = 0; i < branches; i++) {
        if (i) {
            p = ngx_slprintf(p, last, " UNION ALL ");
        }

        p = ngx_xmpp_mam_branch_sql(p, last, mq, i == 0, params, &np);
    }

    if (p == last) {
        ngx_cpystrn((u_char *) r->err, (u_char *) "query too long",
                    sizeof(r->err));
        return -1;
    }

    *p = '\0';

    stmt = ngx_xmpp_db_exec_direct(conn, r, (char *) sql, params, np);
    if (stmt == NULL) {
        return -1;
    }

    rc = ngx_xmpp_db_rows(stmt, r, ngx_xmpp_mam_row);

    /*
     * A nick's or a resource's scan (ngx_xmpp_mam_scans()) that reached
     * NGX_XMPP_MAM_NICK_SCAN ends with a warning (1931) and what it
     * found so far: those rows are a page that is not the last (the
     * client goes on from its <last/>); none, and ngx_xmpp_mam_done()
     * refuses the query (the only warnings such a statement has).
     */
    if (rc == 0 && ngx_xmpp_mam_scans(mq) && mq->nrows <= mq->max
        && mysql_stmt_warning_count(stmt) > 0)
    {
        mq->cut = 1;
    }

    (void) mysql_stmt_close(stmt);

    if (rc != 0) {
        return -1;
    }

    if (mq->nrows == 0
        && ((mq->after.set
             && (ngx_xmpp_mam_resolve(conn, r, &mq->after) != 0
                 || !mq->after.resolved))
            || (mq->before.set
                && (ngx_xmpp_mam_resolve(conn, r, &mq->before) != 0
                    || !mq->before.resolved))))
    {
        if (r->err[0]) {
            return -1;
        }

        mq->not_found = 1;
        return 0;
    }

    ngx_xmpp_mam_page(mq);

    return 0;
}


/* (ts, node, writer, seq) order of two rows */
static int
ngx_xmpp_mam_cmp(const void *one, const void *two)
{
    int                  rc;
    ngx_xmpp_mam_row_t  *a, *b;

    a = (ngx_xmpp_mam_row_t *) one;
    b = (ngx_xmpp_mam_row_t *) two;

    if (a->ts != b->ts) {
        return a->ts < b->ts ? -1 : 1;
    }

    rc = ngx_strcmp(a->node, b->node);
    if (rc) {
        return rc;
    }

    if (a->writer != b->writer) {
        return a->writer < b->writer ? -1 : 1;
    }

    return a->seq < b->seq ? -1 : (a->seq > b->seq);
}


static int
ngx_xmpp_mam_cmp_desc(const void *one, const void *two)
{
    return ngx_xmpp_mam_cmp(two, one);
}


/*
 * The branches' rows, each branch in page order, put in page order
 * together (at most 2 * (max + 1) of them); the first max are the page,
 * one more says it is not the last.  Rows past the page are freed.
 */
static void
ngx_xmpp_mam_page(ngx_xmpp_mam_query_t *mq)
{
    ngx_uint_t  k;

    ngx_qsort(mq->rows, mq->nrows, sizeof(ngx_xmpp_mam_row_t),
              mq->backward ? ngx_xmpp_mam_cmp_desc : ngx_xmpp_mam_cmp);

    mq->complete = (mq->nrows <= mq->max && !mq->cut);

    for (k = mq->max; k < mq->nrows; k++) {
        ngx_free(mq->rows[k].xml);
        mq->rows[k].xml = NULL;
    }

    if (mq->nrows > mq->max) {
        mq->nrows = mq->max;
    }
}


/* ------------------------------------------------------------------ */
/* back on the event loop */

/*
 * To the requester: a user's own session on this worker, or, for a
 * room's archive, whatever worker the requester's session lives on.
 */
static void
ngx_xmpp_mam_send(ngx_xmpp_mam_query_t *mq, ngx_xmpp_wbuf_t *b)
{
    ngx_xmpp_route_t     rt;
    ngx_xmpp_session_t  *s;

    if (mq->kind == NGX_XMPP_MAM_USER) {
        s = ngx_xmpp_session_find(mq->sid);

        if (s && s->bound && s->state == NGX_XMPP_ST_SESSION) {
            (void) ngx_xmpp_session_send_wbuf(s, b);
        }

        return;
    }

    if (b->failed) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "xmpp: room archive result too large");
        return;
    }

    rt.pid = mq->pid;
    rt.sid = mq->sid;

    (void) ngx_xmpp_router_to_session(mq->xcf, &rt, b->start,
                                      b->last - b->start);
}


/* the answer's <iq type='type' from='archive' to id> */
static ngx_xmpp_wbuf_t *
ngx_xmpp_mam_iq_start(ngx_xmpp_mam_query_t *mq, const char *type)
{
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_wbuf_scratch(8192);

    ngx_xmpp_wbuf_lit(b, "<iq xmlns='" NGX_XMPP_NS_CLIENT "' type='");
    ngx_xmpp_wbuf_str(b, type);
    ngx_xmpp_wbuf_lit(b, "' from='");
    ngx_xmpp_wbuf_escs(b, &mq->owner);
    ngx_xmpp_wbuf_lit(b, "' to='");
    ngx_xmpp_wbuf_escs(b, &mq->to);
    ngx_xmpp_wbuf_lit(b, "' id='");
    ngx_xmpp_wbuf_escs(b, &mq->iq_id);
    ngx_xmpp_wbuf_lit(b, "'>");

    return b;
}


static void
ngx_xmpp_mam_error(ngx_xmpp_mam_query_t *mq, const char *type,
    const char *condition)
{
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_mam_iq_start(mq, "error");

    ngx_xmpp_wbuf_lit(b, "<error type='");
    ngx_xmpp_wbuf_str(b, type);
    ngx_xmpp_wbuf_lit(b, "'><");
    ngx_xmpp_wbuf_str(b, condition);
    ngx_xmpp_wbuf_lit(b, " xmlns='" NGX_XMPP_NS_STANZAS "'/></error></iq>");

    ngx_xmpp_mam_send(mq, b);
}


/* XEP-0313 sections 4.2 and 5: from the archive, its bare JID */
static void
ngx_xmpp_mam_send_row(ngx_xmpp_mam_query_t *mq, ngx_xmpp_mam_row_t *row)
{
    u_char            stamp[64], *p;
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_wbuf_scratch(row->len + 4096 + mq->qid.len * 6);

    ngx_xmpp_wbuf_lit(b, "<message xmlns='" NGX_XMPP_NS_CLIENT "' from='");
    ngx_xmpp_wbuf_escs(b, &mq->owner);
    ngx_xmpp_wbuf_lit(b, "' to='");
    ngx_xmpp_wbuf_escs(b, &mq->to);
    ngx_xmpp_wbuf_lit(b, "'><result xmlns='" NGX_XMPP_NS_MAM "'");

    if (mq->qid.len) {
        ngx_xmpp_wbuf_lit(b, " queryid='");
        ngx_xmpp_wbuf_escs(b, &mq->qid);
        ngx_xmpp_wbuf_lit(b, "'");
    }

    ngx_xmpp_wbuf_lit(b, " id='");
    ngx_xmpp_wbuf_esc(b, (u_char *) row->id, ngx_strlen(row->id));
    ngx_xmpp_wbuf_lit(b, "'><forwarded xmlns='" NGX_XMPP_NS_FORWARD "'>"
                      "<delay xmlns='" NGX_XMPP_NS_DELAY "' stamp='");
    p = ngx_xmpp_mam_stamp_time(stamp, row->ts);
    ngx_xmpp_wbuf_add(b, stamp, p - stamp);
    ngx_xmpp_wbuf_lit(b, "'/>");
    ngx_xmpp_wbuf_add(b, row->xml, row->len);
    ngx_xmpp_wbuf_lit(b, "</forwarded></result></message>");

    ngx_xmpp_mam_send(mq, b);
}


/* the results in time order, then <fin/> (XEP-0313 section 4.3) */
static void
ngx_xmpp_mam_done(ngx_xmpp_db_req_t *r)
{
    ngx_int_t              i, from, to, step;
    ngx_log_t             *log;
    ngx_xmpp_wbuf_t       *b;
    ngx_xmpp_session_t    *s;
    ngx_xmpp_mam_row_t    *first, *last;
    ngx_xmpp_mam_query_t  *mq;

    mq = r->ctx;
    log = ngx_cycle->log;

    if (mq->kind == NGX_XMPP_MAM_USER) {
        s = ngx_xmpp_session_find(mq->sid);
        if (s == NULL || !s->bound || s->state != NGX_XMPP_ST_SESSION) {
            return;
        }

        log = s->connection->log;
    }

    if (r->rc != NGX_XMPP_DB_OK) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "xmpp: %s archive query failed (%ui): %s",
                      mq->kind == NGX_XMPP_MAM_USER ? "user's" : "room's",
                      r->rc, r->err);
        ngx_xmpp_mam_error(mq, "wait", "internal-server-error");
        return;
    }

    if (mq->not_found) {
        /* XEP-0313 section 4.3.1 / XEP-0059 2.6: an unknown id */
        ngx_xmpp_mam_error(mq, "cancel", "item-not-found");
        return;
    }

    if (mq->cut && mq->nrows == 0) {
        /*
         * No message of the nick (or the resource) in the records a page
         * may read, and
         * no position to go on from: a local limit (RFC 6120 8.3.3.12),
         * which start/end or after-id/before-id narrow.
         */
        ngx_xmpp_mam_error(mq, "modify", "policy-violation");
        return;
    }

    /* a backward page was read newest first: send it in time order */
    from = mq->backward ? (ngx_int_t) mq->nrows - 1 : 0;
    to = mq->backward ? -1 : (ngx_int_t) mq->nrows;
    step = mq->backward ? -1 : 1;

    for (i = from; i != to; i += step) {
        ngx_xmpp_mam_send_row(mq, &mq->rows[i]);
    }

    b = ngx_xmpp_mam_iq_start(mq, "result");

    ngx_xmpp_wbuf_lit(b, "<fin xmlns='" NGX_XMPP_NS_MAM "'");

    if (mq->complete) {
        ngx_xmpp_wbuf_lit(b, " complete='true'");
    }

    ngx_xmpp_wbuf_lit(b, "><set xmlns='" NGX_XMPP_NS_RSM "'>");

    if (mq->nrows) {
        first = &mq->rows[mq->backward ? mq->nrows - 1 : 0];
        last = &mq->rows[mq->backward ? 0 : mq->nrows - 1];

        ngx_xmpp_wbuf_lit(b, "<first>");
        ngx_xmpp_wbuf_esc(b, (u_char *) first->id, ngx_strlen(first->id));
        ngx_xmpp_wbuf_lit(b, "</first><last>");
        ngx_xmpp_wbuf_esc(b, (u_char *) last->id, ngx_strlen(last->id));
        ngx_xmpp_wbuf_lit(b, "</last>");

    } else {
        ngx_xmpp_wbuf_lit(b, "<count>0</count>");
    }

    ngx_xmpp_wbuf_lit(b, "</set></fin></iq>");

    ngx_xmpp_mam_send(mq, b);
}


static void
ngx_xmpp_mam_free(ngx_xmpp_db_req_t *r)
{
    ngx_uint_t             i;
    ngx_xmpp_mam_query_t  *mq;

    mq = r->ctx;

    if (mq->wait.timer_set) {
        ngx_del_timer(&mq->wait);
    }

    if (mq->rows == NULL) {
        return;
    }

    for (i = 0; i < mq->cap; i++) {
        ngx_free(mq->rows[i].xml);
    }

    ngx_free(mq->rows);
    mq->rows = NULL;
}
