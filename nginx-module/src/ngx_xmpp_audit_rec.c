
/*
 * The records: messages (with their place in the pending ring under
 * "conclave_audit_fsync always"), deferred group-chat events, sign-ins,
 * session ends and console actions.  Per-stanza and per-session records
 * are flat (caud_flat_t); no malloc per stanza.
 */


#include "ngx_xmpp_audit.h"


static void
ngx_xmpp_audit_actor(ngx_xmpp_session_t *s, caud_actor_t *act, char *user,
    size_t size)
{
    ngx_memzero(act, sizeof(caud_actor_t));

    if (s->jid.bare.len) {
        ngx_snprintf((u_char *) user, size - 1, "%V%Z", &s->jid.bare);

    } else if (s->user.len) {
        ngx_snprintf((u_char *) user, size - 1, "%V@%V%Z", &s->user,
                     &s->conf->domain);
    } else {
        user[0] = '\0';
    }

    user[size - 1] = '\0';

    act->user = user[0] ? user : NULL;
    act->session_id = (const char *) s->audit_sid;
    act->ip = (const char *) s->audit_ip;
    act->transport = (const char *) s->transport->name.data;
    act->client = s->jid.resource.len ? (const char *) s->audit_resource
                                      : NULL;
}


/* user: room for the actor's name, which rec points to */
static void
ngx_xmpp_audit_record(ngx_xmpp_session_t *s, caud_flat_t *rec,
    const char *event, caud_status_e status, char *user, size_t size)
{
    ngx_memzero(rec, sizeof(caud_flat_t));

    rec->event = event;
    rec->status = status;
    rec->ts_utc_us = caud_now_us();

    ngx_xmpp_audit_actor(s, &rec->actor, user, size);
}


/* a param, also an empty one (as the jansson setters had it); the
 * caller keeps v alive */
static void
ngx_xmpp_audit_param(caud_flat_t *rec, const char *key, ngx_str_t *v)
{
    if (rec->nparams < CAUD_FLAT_PARAMS) {
        rec->params[rec->nparams].key = key;
        rec->params[rec->nparams].s = v->len ? (const char *) v->data : "";
        rec->params[rec->nparams].len = v->len;
        rec->nparams++;
    }
}


/* the text of the message's first <body/> (RFC 6121 5.2.3) */
static void
ngx_xmpp_audit_body(ngx_xmpp_stanza_t *st, ngx_str_t *body,
    ngx_uint_t *has)
{
    ngx_xmpp_node_t  *b;

    *has = 0;

    b = ngx_xmpp_node_child(st->node, "body", NGX_XMPP_NS_CLIENT);

    if (b && ngx_xmpp_node_text(st->pool, b, body) == NGX_OK) {
        *has = 1;
    }
}


/*
 * The message record, then either routing now or a place in the ring
 * until the record is durable.  On any failure the sender gets an error
 * stanza and the message goes nowhere: <resource-constraint/> when the
 * disk is full or the ring is (retry later), <internal-server-error/>
 * when the journal is unusable.
 */
void
ngx_xmpp_audit_message(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_delivery_t *d)
{
    u_char                    *p;
    char                       user[3 * NGX_XMPP_JID_PART_MAX + 4];
    size_t                     size;
    uint64_t                   seq;
    ngx_str_t                  body, stanza, replace_id, retract_id,
                               retract_ns;
    caud_flat_t                rec;
    ngx_uint_t                 has_body, always;
    ngx_xmpp_audit_t          *a;
    ngx_xmpp_audit_pending_t  *e;

    a = ngx_xmpp_audit_worker;
    always = (s->conf->audit_fsync == NGX_XMPP_FSYNC_ALWAYS);

    size = ngx_align(sizeof(ngx_xmpp_audit_pending_t) + d->to.full.len
                     + d->type.len + d->id.len + d->len, 8);
    p = NULL;

    if (a && always) {
        p = ngx_xmpp_audit_ring_reserve(a, size);

        if (p == NULL) {
            ngx_log_error(NGX_LOG_WARN, s->connection->log, 0,
                          "xmpp: audit ring full, message refused");
            if (a->slot) {
                a->slot->refused++;
            }
            ngx_xmpp_router_bounce(s, d, "wait", "resource-constraint");
            return;
        }
    }

    ngx_xmpp_audit_record(s, &rec, "message", CAUD_SUCCESS, user,
                          sizeof(user));

    ngx_xmpp_audit_body(st, &body, &has_body);

    /* XEP-0308/0424: what the history applies (ngx_xmpp_mam.c) */
    (void) ngx_xmpp_mam_refs(st, &replace_id, &retract_id, &retract_ns);

    if (replace_id.len) {
        ngx_xmpp_audit_param(&rec, "replace_id", &replace_id);
    }

    if (retract_id.len) {
        ngx_xmpp_audit_param(&rec, "retract_id", &retract_id);
        ngx_xmpp_audit_param(&rec, "retract_ns", &retract_ns);
    }

    rec.object_type = "jid";
    rec.object_id = (const char *) d->to.full.data;
    rec.object_id_len = d->to.full.len;

    ngx_xmpp_audit_param(&rec, "to", &d->to.full);
    ngx_xmpp_audit_param(&rec, "from", &s->jid.full);

    if (d->type.len) {
        ngx_xmpp_audit_param(&rec, "type", &d->type);
    }

    if (d->id.len) {
        ngx_xmpp_audit_param(&rec, "id", &d->id);
    }

    if (has_body) {
        ngx_xmpp_audit_param(&rec, "body", &body);
    }

    stanza.data = d->data;
    stanza.len = d->len;
    ngx_xmpp_audit_param(&rec, "stanza", &stanza);

    if ((always ? ngx_xmpp_audit_append_batch(a, &rec, &seq)
                : ngx_xmpp_audit_append_flat(a, &rec, &seq))
        != NGX_OK)
    {
        goto failed;
    }

    if (!always) {
        ngx_xmpp_router_deliver(s->conf, s, d);
        return;
    }

    e = (ngx_xmpp_audit_pending_t *) p;
    e->seq = seq;
    e->lost = 0;
    e->t_us = ngx_xmpp_audit_now_us();
    e->sid = s->id;
    e->size = (uint32_t) size;
    e->kind = (uint16_t) d->kind;
    e->to_len = (uint16_t) d->to.full.len;
    e->bare_len = (uint16_t) d->to.bare.len;
    e->local_len = (uint16_t) d->to.local.len;
    e->type_len = (uint16_t) d->type.len;
    e->id_len = (uint16_t) d->id.len;
    e->data_len = (uint32_t) d->len;

    /* absent attributes have NULL data: no zero-length copies from it */
    p += sizeof(ngx_xmpp_audit_pending_t);
    p = ngx_cpymem(p, d->to.full.data, d->to.full.len);

    if (d->type.len) {
        p = ngx_cpymem(p, d->type.data, d->type.len);
    }

    if (d->id.len) {
        p = ngx_cpymem(p, d->id.data, d->id.len);
    }

    ngx_memcpy(p, d->data, d->len);

    a->tail = (a->tail + size) % a->ring_size;
    a->used += size;

    return;

failed:

    if (a && a->slot) {
        a->slot->refused++;
    }

    if (errno == ENOSPC || errno == EDQUOT || errno == EFBIG) {
        ngx_log_error(NGX_LOG_ERR, s->connection->log, errno,
                      "xmpp: audit journal full, message refused");
        ngx_xmpp_router_bounce(s, d, "wait", "resource-constraint");
        return;
    }

    ngx_log_error(NGX_LOG_ERR, s->connection->log, errno,
                  "xmpp: audit journal write failed, message refused: %s",
                  a && a->journal ? caud_journal_error(a->journal)
                                  : "no journal");
    ngx_xmpp_router_bounce(s, d, "wait", "internal-server-error");
}


/*
 * The identity of the record the next append will write,
 * "<node>:<writer>:<seq>", which is the message's XEP-0359 stanza id
 * and its MAM id (ngx_xmpp_mam.c).  Only the event loop appends, so
 * nothing can take the seq between this call and the append.  Returns
 * the length, 0 when there is no journal.
 */
size_t
ngx_xmpp_audit_next_id(ngx_xmpp_conf_t *xcf, u_char *buf, size_t size)
{
    u_char            *p;
    ngx_xmpp_audit_t  *a;

    a = ngx_xmpp_audit_worker;

    if (a == NULL || a->journal == NULL) {
        return 0;
    }

    p = ngx_snprintf(buf, size, "%V:%uD:%uL", &xcf->audit_node,
                     a->writer_id, caud_journal_next_seq(a->journal));

    return p == buf + size ? 0 : (size_t) (p - buf);
}


/*
 * A record whose consequences wait for it as a message's delivery does
 * (group chat, ngx_xmpp_muc.c): done(data, len, ok) runs once the record
 * is durable with "conclave_audit_fsync always", at once otherwise or
 * without an audit journal; ok is 0 when the journal failed before the
 * record became durable.  done may be NULL (a record with no follow-up).
 * NGX_OK: recorded (done will run); NGX_BUSY: the ring of waiting
 * entries is full; NGX_ERROR: the record could not be written.
 */
ngx_int_t
ngx_xmpp_audit_defer(ngx_xmpp_conf_t *xcf, json_t *rec,
    ngx_xmpp_audit_done_pt done, u_char *data, size_t len, ngx_log_t *log)
{
    u_char                    *p;
    size_t                     size;
    uint64_t                   seq;
    ngx_xmpp_audit_t          *a;
    ngx_xmpp_audit_pending_t  *e;

    if (xcf->audit_zone == NULL) {
        if (done) {
            done(data, len, 1);
        }
        return NGX_OK;
    }

    a = ngx_xmpp_audit_worker;
    size = ngx_align(sizeof(ngx_xmpp_audit_pending_t) + len, 8);
    p = NULL;

    if (a && done && xcf->audit_fsync == NGX_XMPP_FSYNC_ALWAYS) {
        p = ngx_xmpp_audit_ring_reserve(a, size);

        if (p == NULL) {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "xmpp: audit ring full, room event refused");
            if (a->slot) {
                a->slot->refused++;
            }
            return NGX_BUSY;
        }
    }

    if (ngx_xmpp_audit_append(a, rec, &seq) != NGX_OK) {
        if (a && a->slot) {
            a->slot->refused++;
        }

        ngx_log_error(NGX_LOG_ERR, log, errno,
                      "xmpp: audit journal write failed, room event "
                      "refused: %s",
                      a && a->journal ? caud_journal_error(a->journal)
                                      : "no journal");
        return NGX_ERROR;
    }

    if (p == NULL) {
        if (done) {
            done(data, len, 1);
        }
        return NGX_OK;
    }

    e = (ngx_xmpp_audit_pending_t *) p;
    ngx_memzero(e, sizeof(ngx_xmpp_audit_pending_t));
    e->seq = seq;
    e->size = (uint32_t) size;
    e->kind = NGX_XMPP_AUDIT_DEFERRED;
    e->done = done;
    e->data_len = (uint32_t) len;

    if (len) {
        ngx_memcpy(p + sizeof(ngx_xmpp_audit_pending_t), data, len);
    }

    a->tail = (a->tail + size) % a->ring_size;
    a->used += size;

    return NGX_OK;
}


/*
 * RFC 6120 6.4.5 outcomes and our own refusals: every attempt is a
 * record.  A success that cannot be recorded is refused (the caller
 * turns NGX_ERROR into <temporary-auth-failure/>).
 */
ngx_int_t
ngx_xmpp_audit_signin(ngx_xmpp_session_t *s, ngx_uint_t ok,
    const char *code, const char *reason)
{
    char         user[3 * NGX_XMPP_JID_PART_MAX + 4];
    uint64_t     seq;
    caud_flat_t  rec;

    if (s->conf->audit_zone == NULL) {
        return NGX_OK;
    }

    ngx_xmpp_audit_record(s, &rec, "signin", ok ? CAUD_SUCCESS : CAUD_FAIL,
                          user, sizeof(user));

    if (!ok) {
        rec.error_code = code;
        rec.error_description = reason;
    }

    /* a success says how it was verified when not by the directory */
    if (ok && reason) {
        rec.params[0].key = "via";
        rec.params[0].s = reason;
        rec.params[0].len = ngx_strlen(reason);
        rec.nparams = 1;
    }

    if (ngx_xmpp_audit_append_flat(ngx_xmpp_audit_worker, &rec, &seq)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, s->connection->log, errno,
                      "xmpp: sign-in record not written");
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the end of an authenticated session, with its reason */
void
ngx_xmpp_audit_session_end(ngx_xmpp_session_t *s)
{
    char         user[3 * NGX_XMPP_JID_PART_MAX + 4];
    uint64_t     seq;
    ngx_str_t    reason;
    caud_flat_t  rec;

    if (s->conf->audit_zone == NULL || !s->authenticated) {
        return;
    }

    ngx_xmpp_audit_record(s, &rec, "session_end", CAUD_SUCCESS, user,
                          sizeof(user));

    reason.data = (u_char *) (s->end_reason ? s->end_reason
                                            : "connection-lost");
    reason.len = ngx_strlen(reason.data);
    ngx_xmpp_audit_param(&rec, "reason", &reason);

    if (ngx_xmpp_audit_append_flat(ngx_xmpp_audit_worker, &rec, &seq)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, s->connection->log, errno,
                      "xmpp: session end record not written");
    }
}


/*
 * A console action (ngx_xmpp_admin*.c): sign-ins, searches with their
 * query, views, refusals.  The auditors are audited in the same chain
 * as the messages they read (issue 8 item 4).  params is stolen.  A
 * caller that cannot record the action must not perform it.
 */
ngx_int_t
ngx_xmpp_audit_admin(ngx_xmpp_conf_t *xcf, ngx_log_t *log, const char *user,
    const char *ip, const char *sid, const char *action, ngx_uint_t ok,
    const char *error, json_t *params)
{
    json_t        *rec, *v;
    uint64_t       seq;
    const char    *key;
    caud_actor_t   act;

    rec = NULL;

    if (xcf->audit_zone == NULL) {
        goto failed;
    }

    rec = caud_record_new("admin", ok ? CAUD_SUCCESS : CAUD_FAIL,
                          caud_now_us());
    if (rec == NULL) {
        goto failed;
    }

    ngx_memzero(&act, sizeof(caud_actor_t));
    act.user = user;
    act.ip = ip;
    act.session_id = sid;
    act.transport = "admin";

    if (caud_record_set_actor(rec, &act) != 0
        || caud_record_set_object(rec, "console", action) != 0
        || (error && caud_record_set_error(rec, error, NULL) != 0))
    {
        goto failed;
    }

    if (params) {
        json_object_foreach(params, key, v) {
            if (caud_record_set_param(rec, key, json_incref(v)) != 0) {
                goto failed;
            }
        }
    }

    if (ngx_xmpp_audit_append(ngx_xmpp_audit_worker, rec, &seq) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, log, errno,
                      "xmpp: console action record not written");
        goto failed;
    }

    json_decref(rec);

    if (params) {
        json_decref(params);
    }

    return NGX_OK;

failed:

    if (rec) {
        json_decref(rec);
    }

    if (params) {
        json_decref(params);
    }

    return NGX_ERROR;
}


/* the strings a record needs, kept with the session */
ngx_int_t
ngx_xmpp_audit_session_init(ngx_xmpp_session_t *s)
{
    ngx_connection_t  *c;

    c = s->connection;

    s->audit_ip = ngx_pnalloc(s->pool, c->addr_text.len + 1);
    if (s->audit_ip == NULL) {
        return NGX_ERROR;
    }

    *ngx_cpymem(s->audit_ip, c->addr_text.data, c->addr_text.len) = '\0';

    *ngx_cpymem(s->audit_sid, s->stream_id, sizeof(s->stream_id)) = '\0';

    return NGX_OK;
}


/* the resource, once bound (RFC 6120 7) */
ngx_int_t
ngx_xmpp_audit_session_bound(ngx_xmpp_session_t *s)
{
    s->audit_resource = ngx_pnalloc(s->pool, s->jid.resource.len + 1);
    if (s->audit_resource == NULL) {
        return NGX_ERROR;
    }

    *ngx_cpymem(s->audit_resource, s->jid.resource.data,
                s->jid.resource.len) = '\0';

    return NGX_OK;
}
