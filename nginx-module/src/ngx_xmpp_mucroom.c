
/*
 * Group chat (XEP-0045), what occupants do: join, nick change, status,
 * leave (section 7.2, 7.6, 7.14), room messages, private messages and
 * subjects (7.4, 7.5, 8.1), and IQs to a room or an occupant.  Runs on
 * the room's owner only (ngx_xmpp_muc.c); what it decides goes out as
 * jobs (ngx_xmpp_mucfan.c).
 */


#include "ngx_xmpp_muc.h"

#include "caud.h"


static void ngx_xmpp_muc_join(ngx_xmpp_muc_req_t *rq);


/* ------------------------------------------------------------------ */
/* presence: join, nick change, status, leave (XEP-0045 7.2, 7.6, 7.14) */

void
ngx_xmpp_muc_presence(ngx_xmpp_muc_req_t *rq)
{
    u_char              *nick;
    json_t              *rec;
    ngx_str_t            old;
    ngx_xmpp_muc_occ_t  *o, *other;
    ngx_xmpp_muc_job_t  *job;

    if (rq->type.len == 5 && ngx_strncmp(rq->type.data, "error", 5) == 0) {
        /* XEP-0045 7.14: an occupant that bounces presence is gone */
        o = ngx_xmpp_muc_occ_by_jid(rq->room, &rq->actor.jid.full);
        if (o) {
            ngx_xmpp_muc_remove(rq, o, 0, NULL, "presence-error");
        }
        return;
    }

    o = ngx_xmpp_muc_occ_by_jid(rq->room, &rq->actor.jid.full);

    if (rq->type.len == 11
        && ngx_strncmp(rq->type.data, "unavailable", 11) == 0)
    {
        if (o) {
            (void) ngx_xmpp_muc_status(rq, o);
            ngx_xmpp_muc_remove(rq, o, 0, NULL, "left");
        }
        return;
    }

    if (rq->type.len) {
        /* subscriptions to a room mean nothing */
        return;
    }

    if (o == NULL) {
        ngx_xmpp_muc_join(rq);
        return;
    }

    if (rq->to.resource.len == 0) {
        ngx_xmpp_muc_error(rq, "modify", "jid-malformed");
        return;
    }

    if (ngx_xmpp_muc_status(rq, o) != NGX_OK) {
        ngx_xmpp_muc_error(rq, "modify", "policy-violation");
        return;
    }

    if (o->nick.len == rq->to.resource.len
        && ngx_memcmp(o->nick.data, rq->to.resource.data, o->nick.len) == 0)
    {
        /* a new status: not a record, but in the room's order */
        job = ngx_xmpp_muc_job(NGX_XMPP_MUC_JOB_PRESENCE, NULL, 0);
        if (job) {
            job->occ = o;
            (void) ngx_xmpp_muc_commit(rq->room, NULL, job, ngx_cycle->log);
        }
        return;
    }

    /* XEP-0045 7.6: a nick change */
    if (rq->to.resource.len > NGX_XMPP_MUC_NICK_MAX) {
        ngx_xmpp_muc_error(rq, "modify", "not-acceptable");
        return;
    }

    other = ngx_xmpp_muc_occ_by_nick(rq->room, &rq->to.resource);
    if (other) {
        ngx_xmpp_muc_error(rq, "cancel", "conflict");
        return;
    }

    old = o->nick;

    job = ngx_xmpp_muc_job(NGX_XMPP_MUC_JOB_PRESENCE, old.data, old.len);
    rec = ngx_xmpp_muc_record(rq->room, &rq->actor, "muc_nick");
    nick = ngx_alloc(rq->to.resource.len, ngx_cycle->log);

    if (job == NULL || rec == NULL || nick == NULL
        || ngx_xmpp_muc_record_str(rec, "nick", &rq->to.resource) != NGX_OK
        || ngx_xmpp_muc_record_str(rec, "old_nick", &old) != NGX_OK)
    {
        goto failed;
    }

    /* jobs still queued for the occupant show the nick they run with */
    job->occ = o;
    job->code = 303;

    ngx_memcpy(nick, rq->to.resource.data, rq->to.resource.len);
    o->nick.data = nick;
    o->nick.len = rq->to.resource.len;
    nick = NULL;

    if (ngx_xmpp_muc_commit(rq->room, rec, job, ngx_cycle->log) != NGX_OK) {
        /* the old nick again */
        nick = o->nick.data;
        o->nick = old;
        old.data = NULL;
        ngx_free(job);
        json_decref(rec);
        ngx_free(nick);
        ngx_xmpp_muc_error(rq, "wait", "resource-constraint");
        return;
    }

    json_decref(rec);
    ngx_free(old.data);

    return;

failed:

    ngx_free(job);
    ngx_free(nick);

    if (rec) {
        json_decref(rec);
    }

    ngx_xmpp_muc_error(rq, "wait", "internal-server-error");
}


/* <x xmlns='muc'><history .../></x> as four numbers for the job */
static void
ngx_xmpp_muc_history_req(ngx_xmpp_muc_req_t *rq, xmlNodePtr x, int64_t *h)
{
    ngx_str_t   v;
    xmlNodePtr  hn;

    h[0] = -1;         /* maxstanzas */
    h[1] = -1;         /* maxchars */
    h[2] = -1;         /* seconds */
    h[3] = -1;         /* since, microseconds */

    hn = x ? ngx_xmpp_muc_child(x, "history", NGX_XMPP_NS_MUC) : NULL;
    if (hn == NULL) {
        return;
    }

    if (ngx_xmpp_muc_prop(rq->pool, hn, "maxstanzas", &v) == NGX_OK) {
        h[0] = ngx_atoi(v.data, v.len);
    }

    if (ngx_xmpp_muc_prop(rq->pool, hn, "maxchars", &v) == NGX_OK) {
        h[1] = ngx_atoi(v.data, v.len);
    }

    if (ngx_xmpp_muc_prop(rq->pool, hn, "seconds", &v) == NGX_OK) {
        h[2] = ngx_atoi(v.data, v.len);
    }

    if (ngx_xmpp_muc_prop(rq->pool, hn, "since", &v) == NGX_OK) {
        h[3] = ngx_xmpp_muc_parse_stamp(&v);
    }
}


/* XEP-0045 7.2: the checks in the order of its examples */
static ngx_int_t
ngx_xmpp_muc_join_check(ngx_xmpp_muc_req_t *rq, xmlNodePtr x,
    ngx_uint_t affiliation)
{
    ngx_str_t             pw;
    xmlNodePtr            pn;
    ngx_xmpp_muc_room_t  *room;

    room = rq->room;

    if (rq->to.resource.len == 0) {
        ngx_xmpp_muc_error(rq, "modify", "jid-malformed");
        return NGX_ERROR;
    }

    if (rq->to.resource.len > NGX_XMPP_MUC_NICK_MAX) {
        ngx_xmpp_muc_error(rq, "modify", "not-acceptable");
        return NGX_ERROR;
    }

    if (affiliation == NGX_XMPP_MUC_OUTCAST) {
        ngx_xmpp_muc_error(rq, "auth", "forbidden");
        return NGX_ERROR;
    }

    if (room->conf.members_only && affiliation < NGX_XMPP_MUC_MEMBER) {
        ngx_xmpp_muc_error(rq, "auth", "registration-required");
        return NGX_ERROR;
    }

    if (room->conf.password.len && affiliation < NGX_XMPP_MUC_OWNER) {
        pn = x ? ngx_xmpp_muc_child(x, "password", NGX_XMPP_NS_MUC) : NULL;

        if (pn == NULL
            || ngx_xmpp_muc_content(rq->pool, pn, &pw) != NGX_OK
            || pw.len != room->conf.password.len
            || ngx_memcmp(pw.data, room->conf.password.data, pw.len) != 0)
        {
            ngx_xmpp_muc_error(rq, "auth", "not-authorized");
            return NGX_ERROR;
        }
    }

    if (ngx_xmpp_muc_occ_by_nick(room, &rq->to.resource)) {
        ngx_xmpp_muc_error(rq, "cancel", "conflict");
        return NGX_ERROR;
    }

    if (room->noccupants >= room->conf.max_users
        && affiliation < NGX_XMPP_MUC_ADMIN)
    {
        ngx_xmpp_muc_error(rq, "wait", "service-unavailable");
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_xmpp_muc_join(ngx_xmpp_muc_req_t *rq)
{
    json_t               *rec;
    int64_t               hist[4];
    xmlNodePtr            x;
    ngx_uint_t            created, affiliation;
    const char           *role, *affil;
    ngx_xmpp_muc_occ_t   *o;
    ngx_xmpp_muc_job_t   *job;
    ngx_xmpp_muc_room_t  *room;

    room = rq->room;
    created = 0;

    x = ngx_xmpp_muc_child(rq->root, "x", NGX_XMPP_NS_MUC);

    if (room->state == NGX_XMPP_MUC_ROOM_ABSENT) {
        /* XEP-0045 10.1: the first to join creates the room, as owner */
        if (rq->to.resource.len == 0) {
            ngx_xmpp_muc_error(rq, "modify", "jid-malformed");
            return;
        }

        if (ngx_xmpp_registry_rooms(ngx_xmpp_muc_conf)
            > ngx_xmpp_muc_conf->muc_max_rooms)
        {
            ngx_xmpp_muc_error(rq, "wait", "resource-constraint");
            return;
        }

        if (ngx_xmpp_muc_set_affiliation(room, &rq->actor.jid.bare,
                                         NGX_XMPP_MUC_OWNER)
            != NGX_OK)
        {
            ngx_xmpp_muc_error(rq, "wait", "internal-server-error");
            return;
        }

        room->state = NGX_XMPP_MUC_ROOM_READY;
        created = 1;
    }

    affiliation = ngx_xmpp_muc_affiliation(room, &rq->actor.jid.bare);

    if (ngx_xmpp_muc_join_check(rq, x, affiliation) != NGX_OK) {
        goto undo;
    }

    ngx_xmpp_muc_history_req(rq, x, hist);

    o = ngx_xmpp_muc_occ_new(rq, &rq->to.resource);
    job = ngx_xmpp_muc_job(NGX_XMPP_MUC_JOB_JOIN, (u_char *) hist,
                           sizeof(hist));
    rec = ngx_xmpp_muc_record(room, &rq->actor, created ? "muc_create"
                                                        : "muc_join");

    if (o == NULL || job == NULL || rec == NULL
        || ngx_xmpp_muc_status(rq, o) != NGX_OK)
    {
        goto failed;
    }

    o->affiliation = affiliation;
    o->role = ngx_xmpp_muc_default_role(room, affiliation);
    o->joined = room->events + 1;

    role = ngx_xmpp_muc_role_name(o->role);
    affil = ngx_xmpp_muc_affil_name(affiliation);

    if (ngx_xmpp_muc_record_str(rec, "nick", &o->nick) != NGX_OK
        || ngx_xmpp_muc_record_str(rec, "jid", &o->jid) != NGX_OK
        || caud_record_set_param_str(rec, "role", role, ngx_strlen(role))
           != 0
        || caud_record_set_param_str(rec, "affiliation", affil,
                                     ngx_strlen(affil))
           != 0)
    {
        goto failed;
    }

    job->occ = o;
    job->code = created ? 201 : 0;

    ngx_queue_insert_tail(&room->occupants, &o->queue);
    room->noccupants++;

    if (ngx_xmpp_muc_commit(room, rec, job, ngx_cycle->log) != NGX_OK) {
        ngx_queue_remove(&o->queue);
        room->noccupants--;
        json_decref(rec);
        ngx_xmpp_muc_occ_free(o);
        ngx_xmpp_muc_error(rq, "wait", "resource-constraint");
        goto undo;
    }

    json_decref(rec);

    if (created) {
        ngx_xmpp_muc_save(room);
    }

    return;

failed:

    if (o) {
        ngx_xmpp_muc_occ_free(o);
    }

    ngx_free(job);

    if (rec) {
        json_decref(rec);
    }

    ngx_xmpp_muc_error(rq, "wait", "internal-server-error");

undo:

    if (created) {
        room->state = NGX_XMPP_MUC_ROOM_ABSENT;
        (void) ngx_xmpp_muc_set_affiliation(room, &rq->actor.jid.bare,
                                            NGX_XMPP_MUC_NOAFFIL);
    }
}


/*
 * An occupant leaves: by itself (code 0), kicked (307), banned (301),
 * removed as a non-member (321/322), or the room is destroyed.  The
 * unavailable presence and the removal wait for the record.
 */
void
ngx_xmpp_muc_remove(ngx_xmpp_muc_req_t *rq, ngx_xmpp_muc_occ_t *o,
    ngx_uint_t code, ngx_str_t *reason, const char *why)
{
    json_t                *rec;
    ngx_xmpp_muc_job_t    *job;
    ngx_xmpp_muc_actor_t   actor;

    o->leaving = 1;
    rq->room->noccupants--;

    job = ngx_xmpp_muc_job(NGX_XMPP_MUC_JOB_LEAVE, reason ? reason->data
                                                          : NULL,
                           reason ? reason->len : 0);
    if (job == NULL) {
        ngx_queue_remove(&o->queue);
        ngx_xmpp_muc_occ_free(o);
        return;
    }

    job->occ = o;
    job->code = code;

    /* the record is the leaver's, whoever caused it (a kick has its own) */
    ngx_memzero(&actor, sizeof(ngx_xmpp_muc_actor_t));

    if (code == 0 && rq->actor.jid.full.len) {
        actor = rq->actor;

    } else {
        (void) ngx_xmpp_jid_parse(rq->pool, &o->jid, &actor.jid);
    }

    rec = ngx_xmpp_muc_record(rq->room, &actor, "muc_leave");

    if (rec
        && (ngx_xmpp_muc_record_str(rec, "nick", &o->nick) != NGX_OK
            || ngx_xmpp_muc_record_str(rec, "jid", &o->jid) != NGX_OK
            || caud_record_set_param_str(rec, "reason", why,
                                         ngx_strlen(why)) != 0))
    {
        json_decref(rec);
        rec = NULL;
    }

    if (rec == NULL) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "xmpp: muc leave record not built");
    }

    if (ngx_xmpp_muc_commit(rq->room, rec, job, ngx_cycle->log) != NGX_OK) {
        /* a leave cannot be refused: it goes out unrecorded */
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "xmpp: muc leave record not written");
        (void) ngx_xmpp_muc_commit(rq->room, NULL, job, ngx_cycle->log);
    }

    if (rec) {
        json_decref(rec);
    }
}


/* a new role or affiliation: everybody sees the occupant's presence */
void
ngx_xmpp_muc_role_changed(ngx_xmpp_muc_req_t *rq, ngx_xmpp_muc_occ_t *o)
{
    ngx_xmpp_muc_job_t  *job;

    job = ngx_xmpp_muc_job(NGX_XMPP_MUC_JOB_PRESENCE, NULL, 0);
    if (job) {
        job->occ = o;
        (void) ngx_xmpp_muc_commit(rq->room, NULL, job, ngx_cycle->log);
    }
}


/* ------------------------------------------------------------------ */
/* messages (XEP-0045 7.4, 7.5, 8.1, 7.8) */

static ngx_int_t
ngx_xmpp_muc_rate(ngx_xmpp_muc_room_t *room)
{
    ngx_uint_t  add, rate;
    ngx_msec_t  elapsed;

    rate = ngx_xmpp_muc_conf->muc_rate;
    elapsed = ngx_current_msec - room->refilled;

    if (elapsed) {
        add = (ngx_uint_t) ((uint64_t) elapsed * rate / 1000);

        if (add) {
            room->tokens = ngx_min(rate, room->tokens + add);
            room->refilled = ngx_current_msec;
        }
    }

    if (room->tokens == 0) {
        return NGX_BUSY;
    }

    room->tokens--;

    return NGX_OK;
}


/*
 * A room flood's two limits (docs/muc.md "Flood control"): the jobs
 * waiting for their records, then the token bucket.  Over either the
 * sender gets <resource-constraint/> type wait (RFC 6120 8.3.3.18)
 * and nothing else happens; the refusal is counted, not logged (a
 * flood would flood the log too).
 */
static ngx_int_t
ngx_xmpp_muc_admit(ngx_xmpp_muc_req_t *rq)
{
    if (rq->room->njobs >= ngx_xmpp_muc_conf->muc_queue) {
        ngx_xmpp_metrics_muc_refused(1);

    } else if (ngx_xmpp_muc_rate(rq->room) != NGX_OK) {
        ngx_xmpp_metrics_muc_refused(0);

    } else {
        return NGX_OK;
    }

    ngx_xmpp_muc_error(rq, "wait", "resource-constraint");

    return NGX_BUSY;
}


/* the children of the message, as they go to the occupants */
static void
ngx_xmpp_muc_inner(ngx_xmpp_muc_req_t *rq, ngx_xmpp_wbuf_t *b)
{
    xmlNodePtr    c;
    xmlBufferPtr  xb;

    xb = xmlBufferCreate();
    if (xb == NULL) {
        b->failed = 1;
        return;
    }

    for (c = rq->root->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE
            || ngx_xmpp_muc_is(c, "x", NGX_XMPP_NS_MUC_USER)
            || ngx_xmpp_mam_room_forged(rq, c))
        {
            continue;
        }

        xmlBufferEmpty(xb);
        if (xmlNodeDump(xb, rq->doc, c, 0, 0) > 0) {
            ngx_xmpp_wbuf_add(b, xmlBufferContent(xb), xmlBufferLength(xb));
        }
    }

    xmlBufferFree(xb);
}


static void
ngx_xmpp_muc_groupchat(ngx_xmpp_muc_req_t *rq, ngx_xmpp_muc_occ_t *o)
{
    json_t               *rec;
    ngx_str_t             body, subject;
    xmlNodePtr            bn, sn;
    ngx_xmpp_wbuf_t      *b;
    ngx_xmpp_muc_job_t   *job;
    ngx_xmpp_muc_room_t  *room;

    room = rq->room;

    if (o->role == NGX_XMPP_MUC_ROLE_VISITOR) {
        ngx_xmpp_muc_error(rq, "auth", "forbidden");
        return;
    }

    bn = ngx_xmpp_muc_child(rq->root, "body", NGX_XMPP_NS_CLIENT);
    sn = ngx_xmpp_muc_child(rq->root, "subject", NGX_XMPP_NS_CLIENT);

    if (sn && bn == NULL
        && !room->conf.change_subject
        && o->role != NGX_XMPP_MUC_ROLE_MODERATOR)
    {
        /* XEP-0045 8.1: only moderators, unless the room allows it */
        ngx_xmpp_muc_error(rq, "auth", "forbidden");
        return;
    }

    if (ngx_xmpp_muc_admit(rq) != NGX_OK) {
        return;
    }

    /* everything after "<message to='...'", once for all occupants */
    b = ngx_xmpp_muc_buf();
    ngx_xmpp_wbuf_lit(b, " from='");
    ngx_xmpp_wbuf_escs(b, &room->jid);
    ngx_xmpp_wbuf_lit(b, "/");
    ngx_xmpp_wbuf_escs(b, &o->nick);
    ngx_xmpp_wbuf_lit(b, "' type='groupchat'");

    if (rq->id.len) {
        ngx_xmpp_wbuf_lit(b, " id='");
        ngx_xmpp_wbuf_escs(b, &rq->id);
        ngx_xmpp_wbuf_lit(b, "'");
    }

    ngx_xmpp_wbuf_lit(b, " xmlns='" NGX_XMPP_NS_CLIENT "'>");
    ngx_xmpp_muc_inner(rq, b);

    if (bn || sn == NULL) {
        /* what the room's archive holds: not a bare subject change */
        ngx_xmpp_mam_room_stamp(rq, b);
    }

    ngx_xmpp_wbuf_lit(b, "</message>");

    if (b->failed) {
        ngx_xmpp_muc_error(rq, "modify", "policy-violation");
        return;
    }

    job = ngx_xmpp_muc_job(NGX_XMPP_MUC_JOB_MESSAGE, b->start,
                           b->last - b->start);
    rec = ngx_xmpp_muc_record(room, &rq->actor,
                              (sn && bn == NULL) ? "muc_subject"
                                                 : "muc_message");

    if (job == NULL || rec == NULL
        || ngx_xmpp_muc_record_str(rec, "nick", &o->nick) != NGX_OK
        || ngx_xmpp_muc_record_str(rec, "from", &rq->actor.jid.full)
           != NGX_OK
        || caud_record_set_param_str(rec, "type", "groupchat", 9) != 0
        || (rq->id.len
            && ngx_xmpp_muc_record_str(rec, "id", &rq->id) != NGX_OK)
        || (bn && ngx_xmpp_muc_content(rq->pool, bn, &body) == NGX_OK
            && ngx_xmpp_muc_record_str(rec, "body", &body) != NGX_OK)
        || (sn && ngx_xmpp_muc_content(rq->pool, sn, &subject) == NGX_OK
            && ngx_xmpp_muc_record_str(rec, "subject", &subject) != NGX_OK)
        || ngx_xmpp_mam_room_refs(rq, rec) != NGX_OK)
    {
        goto failed;
    }

    /* the stanza as occupants get it (without "to"): history is this */
    if (ngx_xmpp_muc_stanza_param(rq->pool, rec, job->data, job->len)
        != NGX_OK)
    {
        goto failed;
    }

    if (sn && bn == NULL
        && ngx_xmpp_muc_content(rq->pool, sn, &subject) == NGX_OK)
    {
        if (ngx_xmpp_muc_set_subject(room, &subject, &o->nick) != NGX_OK) {
            goto failed;
        }

        job->code = 1;     /* a subject: not history (XEP-0045 7.2.15) */
    }

    if (ngx_xmpp_muc_commit(room, rec, job, ngx_cycle->log) != NGX_OK) {
        json_decref(rec);
        ngx_xmpp_muc_error(rq, "wait", "resource-constraint");
        return;
    }

    json_decref(rec);
    return;

failed:

    ngx_free(job);

    if (rec) {
        json_decref(rec);
    }

    ngx_xmpp_muc_error(rq, "wait", "internal-server-error");
}


/* XEP-0045 7.5: to one occupant, from the sender's room JID */
static void
ngx_xmpp_muc_private(ngx_xmpp_muc_req_t *rq, ngx_xmpp_muc_occ_t *o)
{
    json_t              *rec;
    ngx_str_t            body;
    xmlNodePtr           bn;
    ngx_xmpp_wbuf_t     *b;
    ngx_xmpp_muc_occ_t  *to;
    ngx_xmpp_muc_job_t  *job;

    to = ngx_xmpp_muc_occ_by_nick(rq->room, &rq->to.resource);
    if (to == NULL) {
        ngx_xmpp_muc_error(rq, "cancel", "item-not-found");
        return;
    }

    if (ngx_xmpp_muc_admit(rq) != NGX_OK) {
        return;
    }

    b = ngx_xmpp_muc_buf();
    ngx_xmpp_wbuf_lit(b, "<message to='");
    ngx_xmpp_wbuf_escs(b, &to->jid);
    ngx_xmpp_wbuf_lit(b, "' from='");
    ngx_xmpp_wbuf_escs(b, &rq->room->jid);
    ngx_xmpp_wbuf_lit(b, "/");
    ngx_xmpp_wbuf_escs(b, &o->nick);
    ngx_xmpp_wbuf_lit(b, "'");

    if (rq->type.len) {
        ngx_xmpp_wbuf_lit(b, " type='");
        ngx_xmpp_wbuf_escs(b, &rq->type);
        ngx_xmpp_wbuf_lit(b, "'");
    }

    if (rq->id.len) {
        ngx_xmpp_wbuf_lit(b, " id='");
        ngx_xmpp_wbuf_escs(b, &rq->id);
        ngx_xmpp_wbuf_lit(b, "'");
    }

    ngx_xmpp_wbuf_lit(b, " xmlns='" NGX_XMPP_NS_CLIENT "'>");
    ngx_xmpp_muc_inner(rq, b);
    ngx_xmpp_wbuf_lit(b, "<x xmlns='" NGX_XMPP_NS_MUC_USER "'/></message>");

    if (b->failed) {
        ngx_xmpp_muc_error(rq, "modify", "policy-violation");
        return;
    }

    job = ngx_xmpp_muc_job(NGX_XMPP_MUC_JOB_UNICAST, b->start,
                           b->last - b->start);
    rec = ngx_xmpp_muc_record(rq->room, &rq->actor, "muc_private");
    bn = ngx_xmpp_muc_child(rq->root, "body", NGX_XMPP_NS_CLIENT);

    if (job == NULL || rec == NULL
        || ngx_xmpp_muc_record_str(rec, "nick", &o->nick) != NGX_OK
        || ngx_xmpp_muc_record_str(rec, "from", &rq->actor.jid.full)
           != NGX_OK
        || ngx_xmpp_muc_record_str(rec, "to_nick", &to->nick) != NGX_OK
        || ngx_xmpp_muc_record_str(rec, "to", &to->jid) != NGX_OK
        || (rq->type.len
            && ngx_xmpp_muc_record_str(rec, "type", &rq->type) != NGX_OK)
        || (rq->id.len
            && ngx_xmpp_muc_record_str(rec, "id", &rq->id) != NGX_OK)
        || (bn && ngx_xmpp_muc_content(rq->pool, bn, &body) == NGX_OK
            && ngx_xmpp_muc_record_str(rec, "body", &body) != NGX_OK))
    {
        goto failed;
    }

    job->pid = to->pid;
    job->sid = to->sid;

    if (ngx_xmpp_muc_commit(rq->room, rec, job, ngx_cycle->log) != NGX_OK) {
        ngx_free(job);
        json_decref(rec);
        ngx_xmpp_muc_error(rq, "wait", "resource-constraint");
        return;
    }

    json_decref(rec);
    return;

failed:

    ngx_free(job);

    if (rec) {
        json_decref(rec);
    }

    ngx_xmpp_muc_error(rq, "wait", "internal-server-error");
}


void
ngx_xmpp_muc_message(ngx_xmpp_muc_req_t *rq)
{
    ngx_uint_t           groupchat;
    xmlNodePtr           x;
    ngx_xmpp_muc_occ_t  *o;

    o = ngx_xmpp_muc_occ_by_jid(rq->room, &rq->actor.jid.full);

    if (rq->type.len == 5 && ngx_strncmp(rq->type.data, "error", 5) == 0) {
        /* XEP-0045 7.14: an occupant whose client bounces is gone */
        if (o) {
            ngx_xmpp_muc_remove(rq, o, 0, NULL, "message-error");
        }
        return;
    }

    if (rq->room->state != NGX_XMPP_MUC_ROOM_READY) {
        ngx_xmpp_muc_error(rq, "cancel", "item-not-found");
        return;
    }

    groupchat = (rq->type.len == 9
                 && ngx_strncmp(rq->type.data, "groupchat", 9) == 0);

    if (rq->to.resource.len == 0) {
        if (groupchat) {
            if (o == NULL) {
                ngx_xmpp_muc_error(rq, "modify", "not-acceptable");
                return;
            }

            ngx_xmpp_muc_groupchat(rq, o);
            return;
        }

        x = ngx_xmpp_muc_child(rq->root, "x", NGX_XMPP_NS_MUC_USER);

        if (x && (ngx_xmpp_muc_child(x, "invite", NGX_XMPP_NS_MUC_USER)
                  || ngx_xmpp_muc_child(x, "decline", NGX_XMPP_NS_MUC_USER)))
        {
            ngx_xmpp_muc_invite(rq, x);
            return;
        }

        ngx_xmpp_muc_error(rq, "modify", "bad-request");
        return;
    }

    if (groupchat) {
        ngx_xmpp_muc_error(rq, "modify", "bad-request");
        return;
    }

    if (o == NULL) {
        ngx_xmpp_muc_error(rq, "modify", "not-acceptable");
        return;
    }

    ngx_xmpp_muc_private(rq, o);
}


/* ------------------------------------------------------------------ */
/* IQs to a room or an occupant */

void
ngx_xmpp_muc_iq(ngx_xmpp_muc_req_t *rq)
{
    xmlNodePtr           q;
    ngx_xmpp_muc_occ_t  *self, *o;

    if (!(rq->type.len == 3
          && (ngx_strncmp(rq->type.data, "get", 3) == 0
              || ngx_strncmp(rq->type.data, "set", 3) == 0)))
    {
        /* results and errors for a room end here */
        return;
    }

    for (q = rq->root->children; q; q = q->next) {
        if (q->type == XML_ELEMENT_NODE) {
            break;
        }
    }

    if (q == NULL) {
        ngx_xmpp_muc_error(rq, "modify", "bad-request");
        return;
    }

    if (rq->room->state != NGX_XMPP_MUC_ROOM_READY) {
        ngx_xmpp_muc_error(rq, "cancel", "item-not-found");
        return;
    }

    if (rq->to.resource.len) {
        self = ngx_xmpp_muc_occ_by_jid(rq->room, &rq->actor.jid.full);
        o = ngx_xmpp_muc_occ_by_nick(rq->room, &rq->to.resource);

        if (ngx_xmpp_muc_is(q, "ping", NGX_XMPP_NS_PING)) {
            /* XEP-0410 section 3: is this client still joined? */
            if (self == NULL) {
                ngx_xmpp_muc_error(rq, "modify", "not-acceptable");

            } else if (o == self) {
                ngx_xmpp_muc_result(rq, NULL);

            } else {
                ngx_xmpp_muc_error(rq, "cancel", "service-unavailable");
            }

            return;
        }

        /* IQs are not relayed to occupants */
        ngx_xmpp_muc_error(rq, "cancel", "service-unavailable");
        return;
    }

    if (ngx_xmpp_muc_is(q, "query", NGX_XMPP_NS_DISCO_INFO)
        || ngx_xmpp_muc_is(q, "query", NGX_XMPP_NS_DISCO_ITEMS))
    {
        ngx_xmpp_muc_room_disco(rq, q);
        return;
    }

    if (ngx_xmpp_muc_is(q, "query", NGX_XMPP_NS_MUC_OWNER)) {
        ngx_xmpp_muc_owner_iq(rq, q);
        return;
    }

    if (ngx_xmpp_muc_is(q, "query", NGX_XMPP_NS_MUC_ADMIN)) {
        ngx_xmpp_muc_admin_iq(rq, q);
        return;
    }

    if (ngx_xmpp_muc_is(q, "ping", NGX_XMPP_NS_PING)) {
        ngx_xmpp_muc_result(rq, NULL);
        return;
    }

    if (ngx_xmpp_muc_is(q, "query", NGX_XMPP_NS_MAM)) {
        ngx_xmpp_mam_room_iq(rq, q);
        return;
    }

    ngx_xmpp_muc_error(rq, "cancel", "service-unavailable");
}


