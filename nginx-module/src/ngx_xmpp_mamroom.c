
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
 * affiliation against the room's configuration, and hands the parsed
 * query to the user's archive's code (ngx_xmpp_mam_query()), which runs
 * it in the database thread pool and sends the results to the
 * requester's session, on whatever worker.
 *
 * Real JIDs (XEP-0313 section 5.1.3, XEP-0045 section 4.2): the record
 * always holds the sender's real JID; a result carries it in
 * <x xmlns='muc#user'><item jid='...'/></x> when the room is
 * non-anonymous, or when the requester is a moderator of a
 * semi-anonymous room.
 */


#include "ngx_xmpp_muc.h"

#include "caud.h"

#include <jansson.h>


#define NGX_XMPP_MAMROOM_QID_MAX       256

#define NGX_XMPP_NS_RSM        "http://jabber.org/protocol/rsm"
#define NGX_XMPP_NS_SID        "urn:xmpp:sid:0"
#define NGX_XMPP_NS_CORRECT    "urn:xmpp:message-correct:0"
#define NGX_XMPP_NS_RETRACT0   "urn:xmpp:message-retract:0"
#define NGX_XMPP_NS_RETRACT1   "urn:xmpp:message-retract:1"
#define NGX_XMPP_NS_FASTEN     "urn:xmpp:fasten:0"


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
        "<field type='jid-single' var='with'/>"
        "<field type='text-single' var='start'/>"
        "<field type='text-single' var='end'/>"
        "<field type='text-single' var='after-id'/>"
        "<field type='text-single' var='before-id'/>"
        "</x></query>");

    ngx_xmpp_muc_result(rq, b);
}


/*
 * XEP-0313 section 4.1.1 "with", in a room's archive (section 5), where
 * every message is from an occupant JID room@service/nick:
 *  - room@service/nick: what was sent under that nick, the nick the
 *    record holds (params.nick), as the room showed it;
 *  - the room's bare JID: everything (each message is from it);
 *  - a real JID, bare or full: what that user (or that resource) sent,
 *    the record's actor_user (params.from for a full JID).  Only for who
 *    may see real JIDs (XEP-0045 section 4.2, ngx_xmpp_mamroom_access()):
 *    to anyone else a match would tell who is behind a nick, so they
 *    get <forbidden/> (RFC 6120 8.3.3.6), whether or not that user
 *    ever spoke here, rather than a page that hides the rule;
 *  - a JID of the room's service (another room, an occupant of one) or
 *    a bare domain: no user can be it, so nothing matches.
 */
static const char *
ngx_xmpp_mamroom_with(ngx_xmpp_muc_req_t *rq, ngx_str_t *v,
    ngx_xmpp_mam_query_t *q)
{
    u_char          *at;
    ngx_str_t       *room;
    ngx_xmpp_jid_t   jid;

    if (ngx_xmpp_jid_parse(rq->pool, v, &jid) != NGX_OK) {
        return "jid-malformed";
    }

    /* a second "with" replaces the first */
    ngx_str_null(&q->with);
    q->with_nick = 0;
    q->with_none = 0;
    q->with_bare = 0;

    room = &rq->room->jid;

    if (jid.bare.len == room->len
        && ngx_strncasecmp(jid.bare.data, room->data, room->len) == 0)
    {
        if (jid.resource.len) {
            q->with = jid.resource;
            q->with_nick = 1;
        }

        return NULL;
    }

    at = ngx_strlchr(room->data, room->data + room->len, '@');

    if (jid.local.len == 0
        || (at && jid.domain.len == (size_t) (room->data + room->len
                                              - at - 1)
            && ngx_strncasecmp(jid.domain.data, at + 1, jid.domain.len)
               == 0))
    {
        q->with_none = 1;
        return NULL;
    }

    if (!q->real_jids) {
        return "forbidden";
    }

    /* jid.full begins with jid.bare (ngx_xmpp_jid_make()) */
    q->with = jid.full;
    q->with_bare = jid.bare.len;

    return NULL;
}


/* the form: each <field var><value/></field> as a string */
static const char *
ngx_xmpp_mamroom_form(ngx_xmpp_muc_req_t *rq, xmlNodePtr x,
    ngx_xmpp_mam_query_t *q)
{
    ngx_str_t    var, v;
    const char  *err;
    xmlNodePtr   f, vn;

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

        if (var.len == 4 && ngx_strncmp(var.data, "with", 4) == 0) {
            err = ngx_xmpp_mamroom_with(rq, &v, q);

        } else {
            err = ngx_xmpp_mam_field(q, rq->pool, &var, &v);
        }

        if (err) {
            return err;
        }
    }

    return NULL;
}


/* <set/>: the text of each RSM element present */
static const char *
ngx_xmpp_mamroom_rsm(ngx_xmpp_muc_req_t *rq, xmlNodePtr set,
    ngx_xmpp_mam_query_t *q)
{
    ngx_str_t    v;
    ngx_uint_t   i;
    const char  *err;
    xmlNodePtr   e;

    static const char  *names[] = { "max", "after", "before" };

    for (i = 0; i < 3; i++) {
        e = ngx_xmpp_muc_child(set, names[i], NGX_XMPP_NS_RSM);
        if (e == NULL) {
            continue;
        }

        if (ngx_xmpp_muc_content(rq->pool, e, &v) != NGX_OK) {
            return "internal-server-error";
        }

        err = ngx_xmpp_mam_rsm_value(q, names[i], &v);
        if (err) {
            return err;
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
ngx_xmpp_mamroom_access(ngx_xmpp_muc_req_t *rq, ngx_xmpp_mam_query_t *q)
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


/*
 * XEP-0313 section 5: an iq for the room's bare JID, on the room's
 * owner.  Errors are the XEP's: <forbidden/> for who may not read,
 * <policy-violation/> for a page over conclave_mam_max_page,
 * <item-not-found/> for an unknown id.
 */
void
ngx_xmpp_mam_room_iq(ngx_xmpp_muc_req_t *rq, xmlNodePtr q)
{
    ngx_str_t              qid;
    const char            *err;
    xmlNodePtr             x, set;
    ngx_xmpp_db_req_t     *r;
    ngx_xmpp_mam_query_t   tmp;

    ngx_memzero(&tmp, sizeof(ngx_xmpp_mam_query_t));
    tmp.kind = NGX_XMPP_MAM_ROOM;

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

    ngx_xmpp_mam_defaults(&tmp, ngx_xmpp_muc_conf);

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
        ngx_xmpp_muc_error(rq, ngx_xmpp_mam_error_type(err), err);
        return;
    }

    tmp.pid = rq->actor.pid;
    tmp.sid = rq->actor.sid;

    r = ngx_xmpp_mam_request(&tmp, &rq->room->jid, &rq->actor.jid.full,
                             &rq->id, &qid, ngx_cycle->log);
    if (r == NULL) {
        ngx_xmpp_muc_error(rq, "wait", "resource-constraint");
        return;
    }

    ngx_xmpp_mam_query(r);
}
