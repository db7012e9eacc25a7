
/*
 * History of a room: XEP-0313 section 5, a MAM query addressed to the
 * room's bare JID, answered from the room's "muc_message" audit records
 * (docs/history.md "Rooms").  Like a user's archive there is no table of
 * our own: the room's history is the set of records whose object (the
 * "peer" column) is the room, so what occupants page through and what
 * compliance exports are the same rows.
 *
 * The room's owner (ngx_xmpp_muc.c) decides who may read: the query
 * comes to it like any other iq for the room, it checks the requester's
 * affiliation against the room's configuration, and posts the query to
 * the database thread pool; the thread builds every result, the event
 * loop only sends them to the requester's session, on whatever worker.
 *
 * Real JIDs (XEP-0313 section 5.1.3, XEP-0045 section 4.2): the record
 * always holds the sender's real JID; a result carries it in
 * <x xmlns='muc#user'><item jid='...'/></x> when the room is
 * non-anonymous, or when the requester is a moderator of a
 * semi-anonymous room.
 */


#include "ngx_xmpp_muc.h"

#include "caud.h"

#include <mysql.h>
#include <jansson.h>


#define NGX_XMPP_MAMROOM_DEFAULT_PAGE  50
#define NGX_XMPP_MAMROOM_QID_MAX       256
#define NGX_XMPP_MAMROOM_SHIP_WAIT     1000       /* ms */

#define NGX_XMPP_NS_RSM        "http://jabber.org/protocol/rsm"
#define NGX_XMPP_NS_FORWARD    "urn:xmpp:forward:0"
#define NGX_XMPP_NS_SID        "urn:xmpp:sid:0"
#define NGX_XMPP_NS_CORRECT    "urn:xmpp:message-correct:0"
#define NGX_XMPP_NS_RETRACT0   "urn:xmpp:message-retract:0"
#define NGX_XMPP_NS_RETRACT1   "urn:xmpp:message-retract:1"
#define NGX_XMPP_NS_FASTEN     "urn:xmpp:fasten:0"


typedef struct {
    char                  *xml;           /* the message as results
                                             show it, malloc()ed */
    size_t                 len;
    int64_t                ts;
    char                   id[NGX_XMPP_MAM_ID_MAX];
} ngx_xmpp_mamroom_row_t;


typedef struct {
    ngx_pid_t              pid;           /* the requester's session */
    uint64_t               sid;
    ngx_str_t              room;          /* the strings follow the block */
    ngx_str_t              to;
    ngx_str_t              iq_id;
    ngx_str_t              qid;
    int64_t                start;         /* INT64_MIN: none */
    int64_t                end;           /* INT64_MAX: none */
    ngx_xmpp_mam_pos_t     after;
    ngx_xmpp_mam_pos_t     before;
    ngx_uint_t             max;
    unsigned               backward:1;
    unsigned               real_jids:1;

    ngx_xmpp_audit_mark_t  marks[NGX_XMPP_AUDIT_MARKS];
    ngx_event_t            wait;
    ngx_msec_t             since;

    /* results, written by the thread */
    ngx_xmpp_mamroom_row_t  *rows;
    ngx_uint_t             nrows;
    ngx_uint_t             cap;
    unsigned               complete:1;
    unsigned               not_found:1;
} ngx_xmpp_mamroom_query_t;


static int ngx_xmpp_mamroom_run(MYSQL *conn, ngx_xmpp_db_req_t *r);
static void ngx_xmpp_mamroom_done(ngx_xmpp_db_req_t *r);
static void ngx_xmpp_mamroom_free(ngx_xmpp_db_req_t *r);
static void ngx_xmpp_mamroom_wait(ngx_event_t *ev);
static void ngx_xmpp_mamroom_error(ngx_xmpp_mamroom_query_t *mq,
    const char *type, const char *condition);


static ngx_inline ngx_uint_t
ngx_xmpp_mamroom_is(ngx_str_t *s, const char *lit)
{
    size_t  len;

    len = ngx_strlen(lit);

    return s->len == len && ngx_strncmp(s->data, lit, len) == 0;
}


/*
 * XEP-0359 section 3: a <stanza-id/> that claims to be by the room is
 * the room's to set; one a client sent is not passed on.
 */
ngx_uint_t
ngx_xmpp_mam_room_forged(ngx_xmpp_muc_req_t *rq, xmlNodePtr c)
{
    ngx_str_t  by;

    if (!ngx_xmpp_muc_is(c, "stanza-id", NGX_XMPP_NS_SID)) {
        return 0;
    }

    if (!xmlHasProp(c, (const xmlChar *) "by")
        || ngx_xmpp_muc_prop(rq->pool, c, "by", &by) != NGX_OK)
    {
        return 1;
    }

    return by.len == rq->room->jid.len
           && ngx_strncasecmp(by.data, rq->room->jid.data, by.len) == 0;
}


/*
 * XEP-0313 section 5 / XEP-0359: the room, as the archiving entity,
 * stamps <stanza-id by='room' id='...'/>, the id of the record about
 * to be journaled (as ngx_xmpp_mam_stamp() does for 1:1), so that a
 * client can page the room's archive from what it saw live.
 */
void
ngx_xmpp_mam_room_stamp(ngx_xmpp_muc_req_t *rq, ngx_xmpp_wbuf_t *b)
{
    u_char  buf[NGX_XMPP_MAM_ID_MAX];
    size_t  len;

    len = ngx_xmpp_audit_next_id(ngx_xmpp_muc_conf, buf, sizeof(buf));
    if (len == 0) {
        return;
    }

    ngx_xmpp_wbuf_lit(b, "<stanza-id xmlns='" NGX_XMPP_NS_SID "' id='");
    ngx_xmpp_wbuf_esc(b, buf, len);
    ngx_xmpp_wbuf_lit(b, "' by='");
    ngx_xmpp_wbuf_escs(b, &rq->room->jid);
    ngx_xmpp_wbuf_lit(b, "'/>");
}


/*
 * A room message that corrects (XEP-0308) or retracts (XEP-0424) an
 * earlier one names it in params.replace_id / retract_id, as a 1:1
 * message's record does (ngx_xmpp_audit.c); 011_mam.sql turns them into
 * the indexed mam_ref.
 */
ngx_int_t
ngx_xmpp_mam_room_refs(ngx_xmpp_muc_req_t *rq, json_t *rec)
{
    ngx_str_t   v;
    xmlNodePtr  n;

    n = ngx_xmpp_muc_child(rq->root, "replace", NGX_XMPP_NS_CORRECT);

    if (n && xmlHasProp(n, (const xmlChar *) "id")
        && ngx_xmpp_muc_prop(rq->pool, n, "id", &v) == NGX_OK && v.len
        && ngx_xmpp_muc_record_str(rec, "replace_id", &v) != NGX_OK)
    {
        return NGX_ERROR;
    }

    n = ngx_xmpp_muc_child(rq->root, "retract", NGX_XMPP_NS_RETRACT1);

    if (n && xmlHasProp(n, (const xmlChar *) "id")
        && ngx_xmpp_muc_prop(rq->pool, n, "id", &v) == NGX_OK && v.len)
    {
        return ngx_xmpp_muc_record_str(rec, "retract_id", &v) == NGX_OK
               && caud_record_set_param_str(rec, "retract_ns",
                      NGX_XMPP_NS_RETRACT1,
                      sizeof(NGX_XMPP_NS_RETRACT1) - 1) == 0
               ? NGX_OK : NGX_ERROR;
    }

    n = ngx_xmpp_muc_child(rq->root, "apply-to", NGX_XMPP_NS_FASTEN);

    if (n && ngx_xmpp_muc_child(n, "retract", NGX_XMPP_NS_RETRACT0)
        && xmlHasProp(n, (const xmlChar *) "id")
        && ngx_xmpp_muc_prop(rq->pool, n, "id", &v) == NGX_OK && v.len)
    {
        return ngx_xmpp_muc_record_str(rec, "retract_id", &v) == NGX_OK
               && caud_record_set_param_str(rec, "retract_ns",
                      NGX_XMPP_NS_RETRACT0,
                      sizeof(NGX_XMPP_NS_RETRACT0) - 1) == 0
               ? NGX_OK : NGX_ERROR;
    }

    return NGX_OK;
}


/* XEP-0313 section 4.1.1: the fields a room's archive knows */
static void
ngx_xmpp_mamroom_fields(ngx_xmpp_muc_req_t *rq)
{
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_muc_buf();

    ngx_xmpp_wbuf_lit(b, "<query xmlns='" NGX_XMPP_NS_MAM "'>"
        "<x xmlns='" NGX_XMPP_NS_XDATA "' type='form'>"
        "<field type='hidden' var='FORM_TYPE'><value>" NGX_XMPP_NS_MAM
        "</value></field>"
        "<field type='text-single' var='start'/>"
        "<field type='text-single' var='end'/>"
        "<field type='text-single' var='after-id'/>"
        "<field type='text-single' var='before-id'/>"
        "</x></query>");

    ngx_xmpp_muc_result(rq, b);
}


/*
 * XEP-0313 section 4.1: the form.  "with" is not offered for a room
 * (section 5 leaves it out) and gets <feature-not-implemented/> as any
 * field we do not know.  Returns the error condition, or NULL.
 */
static const char *
ngx_xmpp_mamroom_form(ngx_xmpp_muc_req_t *rq, xmlNodePtr x,
    ngx_xmpp_mamroom_query_t *q)
{
    ngx_str_t   var, v;
    xmlNodePtr  f, vn;

    for (f = x->children; f; f = f->next) {
        if (f->type != XML_ELEMENT_NODE) {
            continue;
        }

        if (!ngx_xmpp_muc_is(f, "field", NGX_XMPP_NS_XDATA)
            || ngx_xmpp_muc_prop(rq->pool, f, "var", &var) != NGX_OK)
        {
            return "bad-request";
        }

        ngx_str_null(&v);
        vn = ngx_xmpp_muc_child(f, "value", NGX_XMPP_NS_XDATA);

        if (vn && ngx_xmpp_muc_content(rq->pool, vn, &v) != NGX_OK) {
            return "internal-server-error";
        }

        if (ngx_xmpp_mamroom_is(&var, "FORM_TYPE")) {
            if (!ngx_xmpp_mamroom_is(&v, NGX_XMPP_NS_MAM)) {
                return "bad-request";
            }

        } else if (ngx_xmpp_mamroom_is(&var, "start")) {
            if (ngx_xmpp_mam_parse_time(&v, &q->start) != NGX_OK) {
                return "bad-request";
            }

        } else if (ngx_xmpp_mamroom_is(&var, "end")) {
            if (ngx_xmpp_mam_parse_time(&v, &q->end) != NGX_OK) {
                return "bad-request";
            }

        } else if (ngx_xmpp_mamroom_is(&var, "after-id")) {
            if (ngx_xmpp_mam_parse_id(&v, &q->after) != NGX_OK) {
                return "item-not-found";
            }

        } else if (ngx_xmpp_mamroom_is(&var, "before-id")) {
            if (ngx_xmpp_mam_parse_id(&v, &q->before) != NGX_OK) {
                return "item-not-found";
            }

        } else {
            return "feature-not-implemented";
        }
    }

    return NULL;
}


/* XEP-0059 section 2: <max/>, <after/>, <before/> */
static const char *
ngx_xmpp_mamroom_rsm(ngx_xmpp_muc_req_t *rq, xmlNodePtr set,
    ngx_xmpp_mamroom_query_t *q)
{
    ngx_int_t   n;
    ngx_str_t   v;
    xmlNodePtr  e;

    e = ngx_xmpp_muc_child(set, "max", NGX_XMPP_NS_RSM);
    if (e) {
        if (ngx_xmpp_muc_content(rq->pool, e, &v) != NGX_OK) {
            return "internal-server-error";
        }

        n = ngx_atoi(v.data, v.len);
        if (n == NGX_ERROR) {
            return "bad-request";
        }

        if ((ngx_uint_t) n > ngx_xmpp_muc_conf->mam_max_page) {
            /* XEP-0313 section 4.3: more than the server allows */
            return "policy-violation";
        }

        q->max = n;
    }

    e = ngx_xmpp_muc_child(set, "after", NGX_XMPP_NS_RSM);
    if (e) {
        if (ngx_xmpp_muc_content(rq->pool, e, &v) != NGX_OK) {
            return "internal-server-error";
        }

        if (ngx_xmpp_mam_parse_id(&v, &q->after) != NGX_OK) {
            return "item-not-found";
        }
    }

    e = ngx_xmpp_muc_child(set, "before", NGX_XMPP_NS_RSM);
    if (e) {
        if (ngx_xmpp_muc_content(rq->pool, e, &v) != NGX_OK) {
            return "internal-server-error";
        }

        /* an empty <before/> asks for the last page (XEP-0059 2.5) */
        q->backward = 1;

        if (v.len && ngx_xmpp_mam_parse_id(&v, &q->before) != NGX_OK) {
            return "item-not-found";
        }
    }

    return NULL;
}


/*
 * Who may read the room's archive (XEP-0313 section 5, XEP-0045 7.2.6
 * and 9.4): nobody banned; only members and above in a members-only
 * room.  Real JIDs go to everyone in a non-anonymous room and to
 * moderators in a semi-anonymous one; an admin or owner counts as a
 * moderator whether joined or not, since joining makes them one
 * (XEP-0045 5.1.2).
 */
static const char *
ngx_xmpp_mamroom_access(ngx_xmpp_muc_req_t *rq, ngx_xmpp_mamroom_query_t *q)
{
    ngx_uint_t            affil;
    ngx_xmpp_muc_occ_t   *o;
    ngx_xmpp_muc_room_t  *room;

    room = rq->room;
    affil = ngx_xmpp_muc_affiliation(room, &rq->actor.jid.bare);

    if (affil == NGX_XMPP_MUC_OUTCAST
        || (room->conf.members_only && affil < NGX_XMPP_MUC_MEMBER))
    {
        return "forbidden";
    }

    o = ngx_xmpp_muc_occ_by_jid(room, &rq->actor.jid.full);

    q->real_jids = !room->conf.semi_anonymous
                   || affil >= NGX_XMPP_MUC_ADMIN
                   || (o && o->role == NGX_XMPP_MUC_ROLE_MODERATOR);

    return NULL;
}


/* the query, its strings after it in one block of the db request */
static ngx_xmpp_db_req_t *
ngx_xmpp_mamroom_request(ngx_xmpp_muc_req_t *rq,
    ngx_xmpp_mamroom_query_t *tmp, ngx_str_t *qid)
{
    u_char                    *p;
    size_t                     size;
    ngx_xmpp_db_req_t         *r;
    ngx_xmpp_mamroom_query_t  *mq;

    size = sizeof(ngx_xmpp_mamroom_query_t) + rq->room->jid.len
           + rq->actor.jid.full.len + rq->id.len + qid->len;

    r = ngx_xmpp_db_create(ngx_xmpp_muc_conf, size, ngx_cycle->log);
    if (r == NULL) {
        return NULL;
    }

    mq = r->ctx;
    *mq = *tmp;
    mq->pid = rq->actor.pid;
    mq->sid = rq->actor.sid;

    p = (u_char *) (mq + 1);

#define ngx_xmpp_mamroom_copy(dst, src)                                    \
    (dst)->data = p;                                                       \
    (dst)->len = (src)->len;                                               \
    p = (src)->len ? ngx_cpymem(p, (src)->data, (src)->len) : p

    ngx_xmpp_mamroom_copy(&mq->room, &rq->room->jid);
    ngx_xmpp_mamroom_copy(&mq->to, &rq->actor.jid.full);
    ngx_xmpp_mamroom_copy(&mq->iq_id, &rq->id);
    ngx_xmpp_mamroom_copy(&mq->qid, qid);

#undef ngx_xmpp_mamroom_copy

    r->run = ngx_xmpp_mamroom_run;
    r->done = ngx_xmpp_mamroom_done;
    r->cleanup = ngx_xmpp_mamroom_free;
    r->data = NULL;

    return r;
}


/*
 * XEP-0313 section 5: an iq for the room's bare JID, on the room's
 * owner.  Errors are the XEP's: <forbidden/> for who may not read,
 * <policy-violation/> for a page over conclave_mam_max_page,
 * <item-not-found/> for an unknown id.
 */
void
ngx_xmpp_mam_room_iq(ngx_xmpp_muc_req_t *rq, xmlNodePtr q)
{
    ngx_str_t                  qid;
    const char                *err;
    xmlNodePtr                 x, set;
    ngx_xmpp_db_req_t         *r;
    ngx_xmpp_mamroom_query_t   tmp, *mq;

    ngx_memzero(&tmp, sizeof(ngx_xmpp_mamroom_query_t));

    err = ngx_xmpp_mamroom_access(rq, &tmp);
    if (err) {
        ngx_xmpp_muc_error(rq, "auth", err);
        return;
    }

    if (rq->type.len == 3 && ngx_strncmp(rq->type.data, "get", 3) == 0) {
        ngx_xmpp_mamroom_fields(rq);
        return;
    }

    if (ngx_xmpp_muc_conf->audit_zone == NULL
        || ngx_xmpp_muc_conf->db_thread_pool == NULL)
    {
        ngx_xmpp_muc_error(rq, "cancel", "service-unavailable");
        return;
    }

    tmp.start = INT64_MIN;
    tmp.end = INT64_MAX;
    tmp.max = ngx_min(NGX_XMPP_MAMROOM_DEFAULT_PAGE,
                      ngx_xmpp_muc_conf->mam_max_page);

    x = ngx_xmpp_muc_child(q, "x", NGX_XMPP_NS_XDATA);
    err = x ? ngx_xmpp_mamroom_form(rq, x, &tmp) : NULL;

    set = ngx_xmpp_muc_child(q, "set", NGX_XMPP_NS_RSM);
    if (err == NULL && set) {
        err = ngx_xmpp_mamroom_rsm(rq, set, &tmp);
    }

    ngx_str_null(&qid);

    if (err == NULL
        && xmlHasProp(q, (const xmlChar *) "queryid")
        && (ngx_xmpp_muc_prop(rq->pool, q, "queryid", &qid) != NGX_OK
            || qid.len > NGX_XMPP_MAMROOM_QID_MAX))
    {
        err = "bad-request";
    }

    if (err) {
        ngx_xmpp_muc_error(rq, ngx_strcmp(err, "policy-violation") == 0
                               || ngx_strcmp(err, "feature-not-implemented")
                                  == 0 ? "cancel" : "modify", err);
        return;
    }

    r = ngx_xmpp_mamroom_request(rq, &tmp, &qid);
    if (r == NULL) {
        ngx_xmpp_muc_error(rq, "wait", "resource-constraint");
        return;
    }

    mq = r->ctx;

    /* what was recorded before the query is in its answer */
    ngx_xmpp_audit_marks(ngx_xmpp_muc_conf, mq->marks);
    mq->since = ngx_current_msec;
    mq->wait.handler = ngx_xmpp_mamroom_wait;
    mq->wait.data = r;
    mq->wait.log = ngx_cycle->log;
    mq->wait.cancelable = 1;

    ngx_xmpp_mamroom_wait(&mq->wait);
}


/* as for a user's archive (ngx_xmpp_mam_wait): until MariaDB has it */
static void
ngx_xmpp_mamroom_wait(ngx_event_t *ev)
{
    ngx_xmpp_db_req_t         *r;
    ngx_xmpp_mamroom_query_t  *mq;

    r = ev->data;
    mq = r->ctx;

    if (!ngx_xmpp_audit_shipped(ngx_xmpp_muc_conf, mq->marks)
        && ngx_current_msec - mq->since < NGX_XMPP_MAMROOM_SHIP_WAIT)
    {
        ngx_add_timer(ev, 5);
        return;
    }

    if (ngx_xmpp_db_post(r) != NGX_OK) {
        ngx_xmpp_mamroom_error(mq, "wait", "resource-constraint");
        ngx_xmpp_db_destroy(r);
    }
}


/* ------------------------------------------------------------------ */
/* the pool thread */

static int
ngx_xmpp_mamroom_resolve_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols,
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


/* a position id -> its timestamp, in this room's archive only */
static int
ngx_xmpp_mamroom_resolve(MYSQL *conn, ngx_xmpp_db_req_t *r,
    ngx_xmpp_mam_pos_t *pos)
{
    int                        rc;
    u_char                     w[NGX_INT64_LEN + 1], q[NGX_INT64_LEN + 1];
    ngx_str_t                  params[4];
    MYSQL_STMT                *stmt;
    ngx_xmpp_mamroom_query_t  *mq;

    mq = r->ctx;

    params[0].data = pos->node;
    params[0].len = pos->node_len;
    params[1].data = w;
    params[1].len = ngx_sprintf(w, "%uL", pos->writer) - w;
    params[2].data = q;
    params[2].len = ngx_sprintf(q, "%uL", pos->seq) - q;
    params[3] = mq->room;

    stmt = ngx_xmpp_db_exec(conn, r,
               "SELECT ts_utc_us FROM audit_record WHERE node = ?"
               " AND writer_id = ? AND seq = ? AND event = 'muc_message'"
               " AND peer = ?", params, 4);
    if (stmt == NULL) {
        return -1;
    }

    r->data = pos;
    rc = ngx_xmpp_db_rows(stmt, r, ngx_xmpp_mamroom_resolve_row);
    r->data = NULL;
    (void) mysql_stmt_close(stmt);

    return rc;
}


/*
 * The first retraction of a message (XEP-0424): by the room's
 * stanza-id, else by the message's own id.  Two subqueries, since an IN
 * of both made MariaDB scan the table for each row.
 */
static const char  *ngx_xmpp_mamroom_retraction_sql[2] = {
    "(SELECT CONCAT_WS(' ', c.node, c.writer_id, c.seq, c.ts_utc_us,"
    " JSON_VALUE(CONVERT(c.payload USING utf8mb4), '$.params.retract_ns'))"
    " FROM audit_record c FORCE INDEX (audit_record_mam_ref)"
    " WHERE c.mam_ref = CONCAT('r:', x.node, ':', x.writer_id, ':', x.seq)"
    " AND c.actor_user = x.actor_user AND c.peer = x.peer"
    " AND c.ts_utc_us >= x.ts_utc_us ORDER BY c.ts_utc_us, c.seq LIMIT 1)",

    "(SELECT CONCAT_WS(' ', c.node, c.writer_id, c.seq, c.ts_utc_us,"
    " JSON_VALUE(CONVERT(c.payload USING utf8mb4), '$.params.retract_ns'))"
    " FROM audit_record c FORCE INDEX (audit_record_mam_ref)"
    " WHERE c.mam_ref = CONCAT('r:', x.stanza_id)"
    " AND c.actor_user = x.actor_user AND c.peer = x.peer"
    " AND c.ts_utc_us >= x.ts_utc_us ORDER BY c.ts_utc_us, c.seq LIMIT 1)"
};


/*
 * The page: one range scan of the index (peer, event, ts) of
 * 011_mam.sql in (ts, primary key) order.  For each row, the latest
 * correction (XEP-0308: <replace id/> names the original's id
 * attribute) and the first retraction (XEP-0424 names the room's
 * stanza-id, or the original's id as some clients do) are index
 * lookups on mam_ref; only the sender's own count.
 */
static u_char *
ngx_xmpp_mamroom_sql(u_char *p, u_char *last, ngx_xmpp_mamroom_query_t *mq,
    ngx_str_t *params, ngx_uint_t *np)
{
    const char  *dir;

    dir = mq->backward ? "DESC" : "ASC";

    p = ngx_slprintf(p, last, "SELECT x.node, x.writer_id, x.seq,"
        " x.ts_utc_us, x.payload,"
        " (SELECT c.body FROM audit_record c"
        "  FORCE INDEX (audit_record_mam_ref)"
        "  WHERE c.mam_ref = CONCAT('c:', x.stanza_id)"
        "  AND c.actor_user = x.actor_user AND c.peer = x.peer"
        "  AND c.ts_utc_us >= x.ts_utc_us"
        "  ORDER BY c.ts_utc_us DESC, c.seq DESC LIMIT 1),"
        " COALESCE(%s, %s)"
        " FROM audit_record x FORCE INDEX (audit_record_room)"
        " WHERE x.peer = ? AND x.event = 'muc_message'"
        " AND (x.body IS NOT NULL OR x.mam_ref IS NOT NULL)",
        ngx_xmpp_mamroom_retraction_sql[0],
        ngx_xmpp_mamroom_retraction_sql[1]);
    params[(*np)++] = mq->room;

    if (mq->start != INT64_MIN) {
        p = ngx_slprintf(p, last, " AND x.ts_utc_us >= %L", mq->start);
    }

    if (mq->end != INT64_MAX) {
        p = ngx_slprintf(p, last, " AND x.ts_utc_us <= %L", mq->end);
    }

    if (mq->after.set) {
        p = ngx_xmpp_mam_pos_sql(p, last, &mq->after, ">", params, np);
    }

    if (mq->before.set) {
        p = ngx_xmpp_mam_pos_sql(p, last, &mq->before, "<", params, np);
    }

    return ngx_slprintf(p, last, " ORDER BY x.ts_utc_us %s, x.node %s,"
                        " x.writer_id %s, x.seq %s LIMIT %ui",
                        dir, dir, dir, dir, mq->max + 1);
}


/*
 * The real JID as XEP-0045 section 7.2.3 shows it to those who may see
 * it, just before </message>.  from is the record's params.from.
 */
static char *
ngx_xmpp_mamroom_add_jid(ngx_xmpp_db_req_t *r, char *xml, size_t *len,
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

    out = ngx_alloc(*len + 6 * from_len + 128, r->log);
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


/* one row of the page -> the message the requester sees */
static int
ngx_xmpp_mamroom_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols, ngx_uint_t n)
{
    json_t                    *rec, *params, *stanza, *from;
    json_error_t               jerr;
    ngx_xmpp_mamroom_row_t    *row;
    ngx_xmpp_mamroom_query_t  *mq;

    mq = r->ctx;

    if (n != 7 || mq->nrows == mq->cap || cols[4].data == NULL) {
        return 0;
    }

    rec = json_loadb((char *) cols[4].data, cols[4].len, 0, &jerr);
    params = rec ? json_object_get(rec, "params") : NULL;
    stanza = params ? json_object_get(params, "stanza") : NULL;
    from = params ? json_object_get(params, "from") : NULL;

    if (!json_is_string(stanza)) {
        json_decref(rec);
        return 0;
    }

    row = &mq->rows[mq->nrows];

    row->xml = ngx_xmpp_mam_apply(r, json_string_value(stanza),
                                  json_string_length(stanza), &cols[5],
                                  &cols[6], &row->len);

    if (row->xml && mq->real_jids && json_is_string(from)) {
        row->xml = ngx_xmpp_mamroom_add_jid(r, row->xml, &row->len,
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
    ngx_snprintf((u_char *) row->id, sizeof(row->id), "%V:%V:%V%Z",
                 &cols[0], &cols[1], &cols[2]);
    mq->nrows++;

    return 0;
}


static int
ngx_xmpp_mamroom_run(MYSQL *conn, ngx_xmpp_db_req_t *r)
{
    int                        rc;
    u_char                    *p, sql[4096];
    ngx_str_t                  params[NGX_XMPP_DB_PARAMS_MAX];
    ngx_uint_t                 np, k;
    MYSQL_STMT                *stmt;
    ngx_xmpp_mamroom_query_t  *mq;

    mq = r->ctx;

    if ((mq->after.set
         && (ngx_xmpp_mamroom_resolve(conn, r, &mq->after) != 0
             || !mq->after.resolved))
        || (mq->before.set
            && (ngx_xmpp_mamroom_resolve(conn, r, &mq->before) != 0
                || !mq->before.resolved)))
    {
        if (r->err[0]) {
            return -1;
        }

        mq->not_found = 1;
        return 0;
    }

    mq->cap = mq->max + 1;
    mq->rows = ngx_calloc(mq->cap * sizeof(ngx_xmpp_mamroom_row_t), r->log);
    if (mq->rows == NULL) {
        ngx_cpystrn((u_char *) r->err, (u_char *) "out of memory",
                    sizeof(r->err));
        return -1;
    }

    np = 0;
    p = ngx_xmpp_mamroom_sql(sql, sql + sizeof(sql) - 1, mq, params, &np);

    if (p == sql + sizeof(sql) - 1) {
        ngx_cpystrn((u_char *) r->err, (u_char *) "query too long",
                    sizeof(r->err));
        return -1;
    }

    *p = '\0';

    stmt = ngx_xmpp_db_exec(conn, r, (char *) sql, params, np);
    if (stmt == NULL) {
        return -1;
    }

    rc = ngx_xmpp_db_rows(stmt, r, ngx_xmpp_mamroom_row);
    (void) mysql_stmt_close(stmt);

    if (rc != 0) {
        return -1;
    }

    /* the extra row only says the page is not the last */
    mq->complete = (mq->nrows <= mq->max);

    for (k = mq->max; k < mq->nrows; k++) {
        ngx_free(mq->rows[k].xml);
        mq->rows[k].xml = NULL;
    }

    if (mq->nrows > mq->max) {
        mq->nrows = mq->max;
    }

    return 0;
}


/* ------------------------------------------------------------------ */
/* back on the owner's event loop */

static void
ngx_xmpp_mamroom_send(ngx_xmpp_mamroom_query_t *mq, ngx_xmpp_wbuf_t *b)
{
    ngx_xmpp_route_t  rt;

    if (b->failed) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "xmpp: room archive result too large");
        return;
    }

    rt.pid = mq->pid;
    rt.sid = mq->sid;

    (void) ngx_xmpp_router_to_session(ngx_xmpp_muc_conf, &rt, b->start,
                                      b->last - b->start);
}


static void
ngx_xmpp_mamroom_error(ngx_xmpp_mamroom_query_t *mq, const char *type,
    const char *condition)
{
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_wbuf_scratch(8192);

    ngx_xmpp_wbuf_lit(b, "<iq xmlns='" NGX_XMPP_NS_CLIENT "' type='error'"
                      " from='");
    ngx_xmpp_wbuf_escs(b, &mq->room);
    ngx_xmpp_wbuf_lit(b, "' to='");
    ngx_xmpp_wbuf_escs(b, &mq->to);
    ngx_xmpp_wbuf_lit(b, "' id='");
    ngx_xmpp_wbuf_escs(b, &mq->iq_id);
    ngx_xmpp_wbuf_lit(b, "'><error type='");
    ngx_xmpp_wbuf_str(b, type);
    ngx_xmpp_wbuf_lit(b, "'><");
    ngx_xmpp_wbuf_str(b, condition);
    ngx_xmpp_wbuf_lit(b, " xmlns='" NGX_XMPP_NS_STANZAS "'/></error></iq>");

    ngx_xmpp_mamroom_send(mq, b);
}


/* XEP-0313 section 5: from the room's bare JID */
static void
ngx_xmpp_mamroom_send_row(ngx_xmpp_mamroom_query_t *mq,
    ngx_xmpp_mamroom_row_t *row)
{
    u_char            stamp[64], *p;
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_wbuf_scratch(row->len + 4096 + mq->qid.len * 6);

    ngx_xmpp_wbuf_lit(b, "<message xmlns='" NGX_XMPP_NS_CLIENT "' from='");
    ngx_xmpp_wbuf_escs(b, &mq->room);
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

    ngx_xmpp_mamroom_send(mq, b);
}


/* the results in time order, then <fin/> (XEP-0313 section 4.3) */
static void
ngx_xmpp_mamroom_done(ngx_xmpp_db_req_t *r)
{
    ngx_int_t                  i, from, to, step;
    ngx_xmpp_wbuf_t           *b;
    ngx_xmpp_mamroom_row_t    *first, *last;
    ngx_xmpp_mamroom_query_t  *mq;

    mq = r->ctx;

    if (r->rc != NGX_XMPP_DB_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "xmpp: room archive query failed (%ui): %s", r->rc,
                      r->err);
        ngx_xmpp_mamroom_error(mq, "wait", "internal-server-error");
        return;
    }

    if (mq->not_found) {
        ngx_xmpp_mamroom_error(mq, "cancel", "item-not-found");
        return;
    }

    from = mq->backward ? (ngx_int_t) mq->nrows - 1 : 0;
    to = mq->backward ? -1 : (ngx_int_t) mq->nrows;
    step = mq->backward ? -1 : 1;

    for (i = from; i != to; i += step) {
        ngx_xmpp_mamroom_send_row(mq, &mq->rows[i]);
    }

    b = ngx_xmpp_wbuf_scratch(8192);

    ngx_xmpp_wbuf_lit(b, "<iq xmlns='" NGX_XMPP_NS_CLIENT "' type='result'"
                      " from='");
    ngx_xmpp_wbuf_escs(b, &mq->room);
    ngx_xmpp_wbuf_lit(b, "' to='");
    ngx_xmpp_wbuf_escs(b, &mq->to);
    ngx_xmpp_wbuf_lit(b, "' id='");
    ngx_xmpp_wbuf_escs(b, &mq->iq_id);
    ngx_xmpp_wbuf_lit(b, "'><fin xmlns='" NGX_XMPP_NS_MAM "'");

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

    ngx_xmpp_mamroom_send(mq, b);
}


static void
ngx_xmpp_mamroom_free(ngx_xmpp_db_req_t *r)
{
    ngx_uint_t                 i;
    ngx_xmpp_mamroom_query_t  *mq;

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
