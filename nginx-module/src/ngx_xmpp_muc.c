
/*
 * Group chat (XEP-0045) on the component domain conclave_muc_domain.
 *
 * One owner per room: the first worker that has a stanza for a room
 * claims it in the shared registry (ngx_xmpp_registry_room); every
 * stanza for the room goes to that worker, over the inter-worker socket
 * when it arrived elsewhere, with what the audit record needs about its
 * sender (session id, address, transport).  The owner alone holds the
 * room: occupants, affiliations, configuration, history.  It decides
 * each stanza in arrival order, which is the room's one order.
 *
 * Journal before fan-out: everything an occupant sees goes through the
 * room's job queue.  A job that changes the room's record (a message, a
 * join, a leave, a nick change, a subject, a kick or ban) first gets an
 * audit record with the sender's real JID; the job runs once the record
 * is durable (ngx_xmpp_audit_defer), and jobs run in queue order, so an
 * unrecorded job (a presence status) waits behind the recorded ones.  A
 * job reaches the occupants that had joined before it was queued; an
 * occupant leaves the list when its leave job runs.
 *
 * Limits: occupants per room, rooms, a token bucket per room and a bound
 * on the job queue; a flood gets <resource-constraint/>, never a queue
 * that grows without end.
 */


#include "ngx_xmpp_muc.h"

#include "caud.h"


/* a hand-off: this, the strings it measures, then the stanza */
typedef struct {
    uint16_t               sid_len;
    uint16_t               ip_len;
    uint16_t               transport_len;
    uint16_t               to_len;
} ngx_xmpp_muc_hdr_t;


typedef struct {
    ngx_queue_t            queue;
    ngx_pid_t              pid;
    uint64_t               sid;
    size_t                 len;
    u_char                 data[1];
} ngx_xmpp_muc_wait_t;


/* the durable callback's data: which job of which room */
typedef struct {
    uint64_t               seq;
    size_t                 len;
} ngx_xmpp_muc_ref_t;


static void ngx_xmpp_muc_input(ngx_pid_t pid, uint64_t sid, u_char *data,
    size_t len);
static void ngx_xmpp_muc_dispatch(ngx_xmpp_muc_req_t *rq);


ngx_xmpp_conf_t             *ngx_xmpp_muc_conf;

static ngx_rbtree_t          ngx_xmpp_muc_rooms;
static ngx_rbtree_node_t     ngx_xmpp_muc_sentinel;
static ngx_xmpp_wbuf_t       ngx_xmpp_muc_out;     /* replies, presence */
static ngx_xmpp_wbuf_t       ngx_xmpp_muc_fan;     /* per recipient */
static ngx_xmpp_wbuf_t       ngx_xmpp_muc_in;      /* hand-offs */


static const char  *ngx_xmpp_muc_affils[] = {
    "outcast", "none", "member", "admin", "owner"
};

static const char  *ngx_xmpp_muc_roles[] = {
    "none", "visitor", "participant", "moderator"
};


/* ------------------------------------------------------------------ */
/* worker life */

ngx_int_t
ngx_xmpp_muc_init_worker(ngx_cycle_t *cycle, ngx_xmpp_conf_t *xcf)
{
    ngx_xmpp_muc_conf = xcf;

    ngx_rbtree_init(&ngx_xmpp_muc_rooms, &ngx_xmpp_muc_sentinel,
                    ngx_rbtree_insert_value);

    return NGX_OK;
}


static void
ngx_xmpp_muc_room_free(ngx_xmpp_muc_room_t *room)
{
    ngx_uint_t            i;
    ngx_queue_t          *q;
    ngx_xmpp_muc_occ_t   *o;

    while (!ngx_queue_empty(&room->occupants)) {
        q = ngx_queue_head(&room->occupants);
        o = ngx_queue_data(q, ngx_xmpp_muc_occ_t, queue);
        ngx_queue_remove(q);
        ngx_xmpp_muc_occ_free(o);
    }

    while (!ngx_queue_empty(&room->jobs)) {
        q = ngx_queue_head(&room->jobs);
        ngx_queue_remove(q);
        ngx_free(ngx_queue_data(q, ngx_xmpp_muc_job_t, queue));
    }

    while (!ngx_queue_empty(&room->waiting)) {
        q = ngx_queue_head(&room->waiting);
        ngx_queue_remove(q);
        ngx_free(ngx_queue_data(q, ngx_xmpp_muc_wait_t, queue));
    }

    for (i = 0; i < room->naffils; i++) {
        ngx_free(room->affils[i].jid.data);
    }

    if (room->affils) {
        ngx_free(room->affils);
    }

    if (room->history) {
        for (i = 0; i < ngx_xmpp_muc_conf->muc_history; i++) {
            if (room->history[i]) {
                ngx_free(room->history[i]);
            }
        }
        ngx_free(room->history);
    }

    if (room->save) {
        /* the thread finishes alone; done() must not see the room */
        ngx_xmpp_db_cancel(room->save);
    }

    if (room->save_retry.timer_set) {
        ngx_del_timer(&room->save_retry);
    }

    ngx_free(room->conf.name.data);
    ngx_free(room->conf.desc.data);
    ngx_free(room->conf.password.data);
    ngx_free(room->subject.data);
    ngx_free(room->subject_from.data);
    ngx_free(room);
}


/* the occupants of the worker's rooms leave, on the record */
void
ngx_xmpp_muc_exit_worker(ngx_cycle_t *cycle)
{
    json_t               *rec;
    ngx_queue_t          *q;
    ngx_rbtree_node_t    *node;
    ngx_xmpp_muc_occ_t   *o;
    ngx_xmpp_muc_room_t  *room;
    ngx_xmpp_muc_actor_t  actor;

    if (ngx_xmpp_muc_conf == NULL) {
        return;
    }

    ngx_xmpp_muc_fan_exit();

    while (ngx_xmpp_muc_rooms.root != ngx_xmpp_muc_rooms.sentinel) {
        node = ngx_rbtree_min(ngx_xmpp_muc_rooms.root,
                              ngx_xmpp_muc_rooms.sentinel);
        room = (ngx_xmpp_muc_room_t *) node;

        for (q = ngx_queue_head(&room->occupants);
             q != ngx_queue_sentinel(&room->occupants);
             q = ngx_queue_next(q))
        {
            o = ngx_queue_data(q, ngx_xmpp_muc_occ_t, queue);

            if (o->leaving) {
                continue;
            }

            ngx_memzero(&actor, sizeof(ngx_xmpp_muc_actor_t));
            (void) ngx_xmpp_jid_parse(cycle->pool, &o->jid, &actor.jid);

            rec = ngx_xmpp_muc_record(room, &actor, "muc_leave");
            if (rec == NULL) {
                continue;
            }

            if (ngx_xmpp_muc_record_str(rec, "nick", &o->nick) == NGX_OK
                && caud_record_set_param_str(rec, "reason",
                                             "service-shutdown", 16) == 0)
            {
                (void) ngx_xmpp_audit_defer(ngx_xmpp_muc_conf, rec, NULL,
                                            NULL, 0, cycle->log);
            }

            json_decref(rec);
        }

        ngx_rbtree_delete(&ngx_xmpp_muc_rooms, node);
        ngx_xmpp_registry_room_release(ngx_xmpp_muc_conf, &room->jid);
        ngx_xmpp_muc_room_free(room);
    }

    ngx_xmpp_wbuf_free(&ngx_xmpp_muc_out);
    ngx_xmpp_wbuf_free(&ngx_xmpp_muc_fan);
    ngx_xmpp_wbuf_free(&ngx_xmpp_muc_in);
}


ngx_uint_t
ngx_xmpp_muc_ours(ngx_xmpp_conf_t *xcf, ngx_str_t *domain)
{
    return xcf->muc_domain.len
           && domain->len == xcf->muc_domain.len
           && ngx_strncasecmp(domain->data, xcf->muc_domain.data,
                              domain->len) == 0;
}


/* ------------------------------------------------------------------ */
/* the sender's worker: hand the stanza to the room's owner */

/*
 * data is the stanza as serialized with "from" stamped.  Presence comes
 * from ngx_xmpp_presence.c (directed presence, also the "unavailable"
 * of a session that ends), messages and IQs from ngx_xmpp_muc_stanza().
 */
void
ngx_xmpp_muc_handoff(ngx_xmpp_session_t *s, ngx_xmpp_jid_t *to,
    u_char *data, size_t len)
{
    ngx_int_t            rc;
    ngx_pid_t            owner;
    ngx_uint_t           tries;
    ngx_xmpp_wbuf_t     *b;
    ngx_xmpp_muc_hdr_t   hdr;

    b = &ngx_xmpp_muc_in;
    b->last = b->start;
    b->max = s->conf->max_stanza_size + 16384;
    b->failed = 0;

    hdr.sid_len = (uint16_t) ngx_strlen(s->audit_sid);
    hdr.ip_len = s->audit_ip ? (uint16_t) ngx_strlen(s->audit_ip) : 0;
    hdr.transport_len = (uint16_t) s->transport->name.len;
    hdr.to_len = (uint16_t) to->full.len;

    /* "to" apart: a session's final presence has none (RFC 6121 4.5.2) */
    ngx_xmpp_wbuf_add(b, &hdr, sizeof(hdr));
    ngx_xmpp_wbuf_add(b, s->audit_sid, hdr.sid_len);
    ngx_xmpp_wbuf_add(b, s->audit_ip, hdr.ip_len);
    ngx_xmpp_wbuf_add(b, s->transport->name.data, hdr.transport_len);
    ngx_xmpp_wbuf_add(b, to->full.data, hdr.to_len);
    ngx_xmpp_wbuf_add(b, data, len);

    if (b->failed) {
        ngx_log_error(NGX_LOG_ERR, s->connection->log, 0,
                      "xmpp: muc stanza too large to hand off");
        return;
    }

    for (tries = 0; tries < 2; tries++) {
        if (ngx_xmpp_registry_room(s->conf, &to->bare, &owner) != NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, s->connection->log, 0,
                          "xmpp: no owner for room \"%V\"", &to->bare);
            return;
        }

        if (owner == ngx_pid) {
            ngx_xmpp_muc_input(ngx_pid, s->id, b->start, b->last - b->start);
            return;
        }

        rc = ngx_xmpp_ipc_send(owner, NGX_XMPP_IPC_MUC, s->id, b->start,
                               b->last - b->start);

        /* NGX_DECLINED: the owner is gone and purged; claim it anew */
        if (rc != NGX_DECLINED) {
            return;
        }
    }
}


/* a message or IQ from a session to the MUC domain */
void
ngx_xmpp_muc_stanza(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st)
{
    ngx_xmpp_wbuf_t  *b;

    if (st->to.local.len == 0) {
        if (st->to.resource.len == 0 && st->kind == NGX_XMPP_STANZA_IQ) {
            ngx_xmpp_muc_service_iq(s, st);
            return;
        }

        ngx_xmpp_router_error(s, st, "cancel", "service-unavailable");
        return;
    }

    b = ngx_xmpp_wbuf_scratch(s->conf->max_stanza_size + 4096);
    ngx_xmpp_serialize(b, st->node, NULL);

    if (b->failed) {
        ngx_xmpp_router_error(s, st, "wait", "resource-constraint");
        return;
    }

    ngx_xmpp_muc_handoff(s, &st->to, b->start, b->last - b->start);
}


void
ngx_xmpp_muc_ipc(ngx_pid_t from, uint64_t sid, u_char *data, size_t len)
{
    if (ngx_xmpp_muc_conf == NULL || ngx_xmpp_muc_conf->muc_domain.len == 0)
    {
        return;
    }

    ngx_xmpp_muc_input(from, sid, data, len);
}


/*
 * XEP-0198: session osid of worker opid was resumed as nsid of worker
 * npid (or a resumption was abandoned, the other way round).  Its
 * occupants in the rooms of this worker get their copies there from
 * now on; the old session's forwarding lasts only a while.
 *
 * With jid, every occupant of that full JID moves, whatever session it
 * names: a resource has one session (RFC 6120 7.7.2.2), and after a
 * chain of resumptions an occupant can still name an older link of the
 * chain when a switch has not reached this worker yet (SM_MOVED
 * behind a busy channel); a switch keyed on the pair would then miss
 * and leave the room sending to a session whose forwarding ends.
 */
void
ngx_xmpp_muc_moved(ngx_pid_t opid, uint64_t osid, ngx_str_t *jid,
    ngx_pid_t npid, uint64_t nsid)
{
    ngx_queue_t          *q;
    ngx_rbtree_node_t    *node, *sentinel;
    ngx_xmpp_muc_occ_t   *o;
    ngx_xmpp_muc_room_t  *room;

    if (ngx_xmpp_muc_conf == NULL || ngx_xmpp_muc_rooms.root == NULL) {
        return;
    }

    sentinel = ngx_xmpp_muc_rooms.sentinel;

    if (ngx_xmpp_muc_rooms.root == sentinel) {
        return;
    }

    for (node = ngx_rbtree_min(ngx_xmpp_muc_rooms.root, sentinel);
         node;
         node = ngx_rbtree_next(&ngx_xmpp_muc_rooms, node))
    {
        room = (ngx_xmpp_muc_room_t *) node;

        for (q = ngx_queue_head(&room->occupants);
             q != ngx_queue_sentinel(&room->occupants);
             q = ngx_queue_next(q))
        {
            o = ngx_queue_data(q, ngx_xmpp_muc_occ_t, queue);

            if (jid ? (o->jid.len == jid->len
                       && ngx_memcmp(o->jid.data, jid->data, jid->len) == 0)
                    : (o->pid == opid && o->sid == osid))
            {
                ngx_log_debug6(NGX_LOG_DEBUG_CORE, ngx_cycle->log, 0,
                               "xmpp: room \"%V\": occupant %P #%uL is "
                               "%P #%uL now%s", &room->jid, o->pid, o->sid,
                               npid, nsid, jid ? " (by JID)" : "");
                o->pid = npid;
                o->sid = nsid;
            }
        }
    }
}


/* ------------------------------------------------------------------ */
/* the owner: rooms */

ngx_rbtree_t *
ngx_xmpp_muc_tree(void)
{
    return &ngx_xmpp_muc_rooms;
}


ngx_xmpp_muc_room_t *
ngx_xmpp_muc_room_find(ngx_str_t *jid)
{
    uint32_t              key;
    ngx_rbtree_node_t    *node, *sentinel;
    ngx_xmpp_muc_room_t  *room;

    key = ngx_crc32_short(jid->data, jid->len);
    node = ngx_xmpp_muc_rooms.root;
    sentinel = ngx_xmpp_muc_rooms.sentinel;

    while (node != sentinel) {
        if (key != node->key) {
            node = (key < node->key) ? node->left : node->right;
            continue;
        }

        room = (ngx_xmpp_muc_room_t *) node;

        if (room->jid.len == jid->len
            && ngx_memcmp(room->jid.data, jid->data, jid->len) == 0)
        {
            return room;
        }

        /* equal keys: ngx_rbtree_insert_value puts them to the right */
        node = node->right;
    }

    return NULL;
}


static ngx_xmpp_muc_room_t *
ngx_xmpp_muc_room_new(ngx_str_t *jid)
{
    ngx_xmpp_muc_room_t  *room;

    room = ngx_calloc(sizeof(ngx_xmpp_muc_room_t), ngx_cycle->log);
    if (room == NULL) {
        return NULL;
    }

    room->jid.data = ngx_alloc(jid->len, ngx_cycle->log);
    room->history = ngx_calloc(ngx_xmpp_muc_conf->muc_history
                               * sizeof(ngx_xmpp_muc_hist_t *) + 1,
                               ngx_cycle->log);

    if (room->jid.data == NULL || room->history == NULL) {
        ngx_free(room->jid.data);
        ngx_free(room->history);
        ngx_free(room);
        return NULL;
    }

    ngx_memcpy(room->jid.data, jid->data, jid->len);
    room->jid.len = jid->len;

    ngx_queue_init(&room->occupants);
    ngx_queue_init(&room->jobs);
    ngx_queue_init(&room->waiting);

    ngx_xmpp_muc_config_default(&room->conf);

    room->tokens = ngx_xmpp_muc_conf->muc_rate;
    room->refilled = ngx_current_msec;
    room->node.key = ngx_crc32_short(jid->data, jid->len);

    ngx_rbtree_insert(&ngx_xmpp_muc_rooms, &room->node);

    return room;
}


/*
 * A room with nobody in it, nothing queued and nothing to keep goes
 * away, and so does its claim in the registry.  Called only where no
 * caller holds the room any more.
 */
void
ngx_xmpp_muc_check(ngx_xmpp_muc_room_t *room)
{
    if (!ngx_queue_empty(&room->occupants)
        || !ngx_queue_empty(&room->jobs)
        || !ngx_queue_empty(&room->waiting)
        || room->state == NGX_XMPP_MUC_ROOM_LOADING
        || room->save
        || room->save_retry.timer_set
        || room->held
        || (room->state == NGX_XMPP_MUC_ROOM_READY
            && room->conf.persistent && !room->destroyed))
    {
        return;
    }

    ngx_rbtree_delete(&ngx_xmpp_muc_rooms, &room->node);
    ngx_xmpp_registry_room_release(ngx_xmpp_muc_conf, &room->jid);
    ngx_xmpp_muc_room_free(room);
}


/*
 * The room's loading from MariaDB ended (the loader set its state): what
 * waited is decided now, in arrival order.  Without an answer from
 * MariaDB nobody can know whether the room exists: every waiting sender
 * gets an error and the room is dropped, to be loaded again later.
 */
void
ngx_xmpp_muc_room_loaded(ngx_xmpp_muc_room_t *room, ngx_uint_t ok)
{
    ngx_queue_t           local, *q;
    ngx_xmpp_muc_wait_t  *w;

    ngx_queue_init(&local);

    if (!ngx_queue_empty(&room->waiting)) {
        ngx_queue_add(&local, &room->waiting);
        ngx_queue_init(&room->waiting);
    }

    room->nwaiting = 0;
    room->waiting_size = 0;

    if (!ok) {
        room->state = NGX_XMPP_MUC_ROOM_ABSENT;
        ngx_xmpp_muc_check(room);
        room = NULL;

    } else {
        /* the room stays while what waited is decided */
        room->held = 1;
    }

    while (!ngx_queue_empty(&local)) {
        q = ngx_queue_head(&local);
        ngx_queue_remove(q);
        w = ngx_queue_data(q, ngx_xmpp_muc_wait_t, queue);

        ngx_xmpp_muc_input(w->pid, ok ? w->sid : w->sid | (1ULL << 63),
                           w->data, w->len);
        ngx_free(w);
    }

    if (room) {
        room->held = 0;
        ngx_xmpp_muc_check(room);
    }
}


/* ------------------------------------------------------------------ */
/* the owner: a stanza for a room */

static ngx_int_t
ngx_xmpp_muc_parse(ngx_xmpp_muc_req_t *rq, ngx_pid_t pid, uint64_t sid,
    u_char *data, size_t len)
{
    u_char              *p, *end;
    ngx_str_t            v, to;
    ngx_xmpp_muc_hdr_t   hdr;

    if (len < sizeof(hdr)) {
        return NGX_ERROR;
    }

    ngx_memcpy(&hdr, data, sizeof(hdr));
    p = data + sizeof(hdr);
    end = data + len;

    if ((size_t) (end - p) < (size_t) hdr.sid_len + hdr.ip_len
                             + hdr.transport_len + hdr.to_len)
    {
        return NGX_ERROR;
    }

    rq->actor.pid = pid;
    rq->actor.sid = sid;
    rq->actor.audit_sid.data = p;
    rq->actor.audit_sid.len = hdr.sid_len;
    p += hdr.sid_len;
    rq->actor.ip.data = p;
    rq->actor.ip.len = hdr.ip_len;
    p += hdr.ip_len;
    rq->actor.transport.data = p;
    rq->actor.transport.len = hdr.transport_len;
    p += hdr.transport_len;
    to.data = p;
    to.len = hdr.to_len;
    p += hdr.to_len;

    /* our own serializer wrote it: no DTD, no entities to expand */
    rq->doc = xmlReadMemory((const char *) p, (int) (end - p), NULL, NULL,
                            XML_PARSE_NONET | XML_PARSE_NOCDATA);
    if (rq->doc == NULL) {
        return NGX_ERROR;
    }

    rq->root = xmlDocGetRootElement(rq->doc);
    if (rq->root == NULL) {
        return NGX_ERROR;
    }

    if (ngx_xmpp_muc_prop(rq->pool, rq->root, "from", &v) != NGX_OK
        || ngx_xmpp_jid_parse(rq->pool, &v, &rq->actor.jid) != NGX_OK
        || ngx_xmpp_jid_parse(rq->pool, &to, &rq->to) != NGX_OK)
    {
        return NGX_ERROR;
    }

    (void) ngx_xmpp_muc_prop(rq->pool, rq->root, "type", &rq->type);
    (void) ngx_xmpp_muc_prop(rq->pool, rq->root, "id", &rq->id);

    return NGX_OK;
}


static void
ngx_xmpp_muc_wait(ngx_xmpp_muc_req_t *rq, ngx_pid_t pid, uint64_t sid,
    u_char *data, size_t len)
{
    ngx_xmpp_muc_wait_t  *w;

    if (rq->room->nwaiting >= NGX_XMPP_MUC_WAITING_MAX
        || rq->room->waiting_size + len > NGX_XMPP_MUC_WAITING_SIZE)
    {
        ngx_xmpp_muc_error(rq, "wait", "resource-constraint");
        return;
    }

    w = ngx_alloc(offsetof(ngx_xmpp_muc_wait_t, data) + len, ngx_cycle->log);
    if (w == NULL) {
        ngx_xmpp_muc_error(rq, "wait", "internal-server-error");
        return;
    }

    w->pid = pid;
    w->sid = sid;
    w->len = len;
    ngx_memcpy(w->data, data, len);

    ngx_queue_insert_tail(&rq->room->waiting, &w->queue);
    rq->room->nwaiting++;
    rq->room->waiting_size += len;
}


/*
 * A stanza for a room of this worker.  The top bit of sid asks for an
 * error answer only: the room could not be loaded.
 */
static void
ngx_xmpp_muc_input(ngx_pid_t pid, uint64_t sid, u_char *data, size_t len)
{
    ngx_uint_t            fail;
    ngx_pool_t           *pool;
    ngx_xmpp_muc_req_t    rq;
    ngx_xmpp_muc_room_t  *room;

    fail = (sid >> 63) != 0;
    sid &= ~(1ULL << 63);

    pool = ngx_create_pool(4096, ngx_cycle->log);
    if (pool == NULL) {
        return;
    }

    ngx_memzero(&rq, sizeof(ngx_xmpp_muc_req_t));
    rq.pool = pool;

    if (ngx_xmpp_muc_parse(&rq, pid, sid, data, len) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "xmpp: malformed stanza for a room");
        goto done;
    }

    if (fail) {
        ngx_xmpp_muc_error(&rq, "wait", "internal-server-error");
        goto done;
    }

    room = ngx_xmpp_muc_room_find(&rq.to.bare);

    if (room == NULL) {
        room = ngx_xmpp_muc_room_new(&rq.to.bare);
        if (room == NULL) {
            ngx_xmpp_muc_error(&rq, "wait", "resource-constraint");
            goto done;
        }

        rq.room = room;

        switch (ngx_xmpp_muc_load(room)) {

        case NGX_OK:
            ngx_xmpp_muc_wait(&rq, pid, sid, data, len);
            goto done;

        case NGX_DECLINED:
            /* no MariaDB for rooms: temporary rooms only */
            room->state = NGX_XMPP_MUC_ROOM_ABSENT;
            break;

        default:
            room->state = NGX_XMPP_MUC_ROOM_ABSENT;
            ngx_xmpp_muc_error(&rq, "wait", "resource-constraint");
            ngx_xmpp_muc_check(room);
            goto done;
        }
    }

    rq.room = room;

    if (room->state == NGX_XMPP_MUC_ROOM_LOADING) {
        ngx_xmpp_muc_wait(&rq, pid, sid, data, len);
        goto done;
    }

    ngx_xmpp_muc_dispatch(&rq);
    ngx_xmpp_muc_check(room);

done:

    if (rq.doc) {
        xmlFreeDoc(rq.doc);
    }

    ngx_destroy_pool(pool);
}


static void
ngx_xmpp_muc_dispatch(ngx_xmpp_muc_req_t *rq)
{
    u_char  c;

    c = rq->root->name[0];

    if (c == 'p') {
        ngx_xmpp_muc_presence(rq);

    } else if (c == 'm') {
        ngx_xmpp_muc_message(rq);

    } else {
        ngx_xmpp_muc_iq(rq);
    }
}


/* ------------------------------------------------------------------ */
/* occupants and affiliations */

ngx_xmpp_muc_occ_t *
ngx_xmpp_muc_occ_by_jid(ngx_xmpp_muc_room_t *room, ngx_str_t *full)
{
    ngx_queue_t         *q;
    ngx_xmpp_muc_occ_t  *o;

    for (q = ngx_queue_head(&room->occupants);
         q != ngx_queue_sentinel(&room->occupants);
         q = ngx_queue_next(q))
    {
        o = ngx_queue_data(q, ngx_xmpp_muc_occ_t, queue);

        if (!o->leaving && o->jid.len == full->len
            && ngx_memcmp(o->jid.data, full->data, full->len) == 0)
        {
            return o;
        }
    }

    return NULL;
}


ngx_xmpp_muc_occ_t *
ngx_xmpp_muc_occ_by_nick(ngx_xmpp_muc_room_t *room, ngx_str_t *nick)
{
    ngx_queue_t         *q;
    ngx_xmpp_muc_occ_t  *o;

    for (q = ngx_queue_head(&room->occupants);
         q != ngx_queue_sentinel(&room->occupants);
         q = ngx_queue_next(q))
    {
        o = ngx_queue_data(q, ngx_xmpp_muc_occ_t, queue);

        if (!o->leaving && o->nick.len == nick->len
            && ngx_memcmp(o->nick.data, nick->data, nick->len) == 0)
        {
            return o;
        }
    }

    return NULL;
}


ngx_uint_t
ngx_xmpp_muc_affiliation(ngx_xmpp_muc_room_t *room, ngx_str_t *bare)
{
    ngx_uint_t  i;

    for (i = 0; i < room->naffils; i++) {
        if (room->affils[i].jid.len == bare->len
            && ngx_memcmp(room->affils[i].jid.data, bare->data, bare->len)
               == 0)
        {
            return room->affils[i].affiliation;
        }
    }

    return NGX_XMPP_MUC_NOAFFIL;
}


ngx_int_t
ngx_xmpp_muc_set_affiliation(ngx_xmpp_muc_room_t *room, ngx_str_t *bare,
    ngx_uint_t affiliation)
{
    ngx_uint_t             i;
    ngx_xmpp_muc_affil_t  *a;

    for (i = 0; i < room->naffils; i++) {
        if (room->affils[i].jid.len == bare->len
            && ngx_memcmp(room->affils[i].jid.data, bare->data, bare->len)
               == 0)
        {
            if (affiliation == NGX_XMPP_MUC_NOAFFIL) {
                ngx_free(room->affils[i].jid.data);
                room->affils[i] = room->affils[--room->naffils];

            } else {
                room->affils[i].affiliation = affiliation;
            }

            return NGX_OK;
        }
    }

    if (affiliation == NGX_XMPP_MUC_NOAFFIL) {
        return NGX_OK;
    }

    if (room->naffils == NGX_XMPP_MUC_AFFILS_MAX) {
        return NGX_DECLINED;
    }

    if (room->naffils == room->affils_cap) {
        a = ngx_alloc((room->affils_cap * 2 + 8)
                      * sizeof(ngx_xmpp_muc_affil_t), ngx_cycle->log);
        if (a == NULL) {
            return NGX_ERROR;
        }

        if (room->naffils) {
            ngx_memcpy(a, room->affils,
                       room->naffils * sizeof(ngx_xmpp_muc_affil_t));
        }

        ngx_free(room->affils);
        room->affils = a;
        room->affils_cap = room->affils_cap * 2 + 8;
    }

    a = &room->affils[room->naffils];

    a->jid.data = ngx_alloc(bare->len, ngx_cycle->log);
    if (a->jid.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(a->jid.data, bare->data, bare->len);
    a->jid.len = bare->len;
    a->affiliation = affiliation;
    room->naffils++;

    return NGX_OK;
}


/* XEP-0045 section 5.1.2 */
ngx_uint_t
ngx_xmpp_muc_default_role(ngx_xmpp_muc_room_t *room, ngx_uint_t affiliation)
{
    if (affiliation >= NGX_XMPP_MUC_ADMIN) {
        return NGX_XMPP_MUC_ROLE_MODERATOR;
    }

    if (room->conf.moderated && affiliation < NGX_XMPP_MUC_MEMBER) {
        return NGX_XMPP_MUC_ROLE_VISITOR;
    }

    return NGX_XMPP_MUC_ROLE_PARTICIPANT;
}


const char *
ngx_xmpp_muc_affil_name(ngx_uint_t a)
{
    return ngx_xmpp_muc_affils[a];
}


const char *
ngx_xmpp_muc_role_name(ngx_uint_t r)
{
    return ngx_xmpp_muc_roles[r];
}


ngx_int_t
ngx_xmpp_muc_affil_parse(ngx_str_t *s)
{
    ngx_uint_t  i;

    for (i = 0; i < 5; i++) {
        if (s->len == ngx_strlen(ngx_xmpp_muc_affils[i])
            && ngx_strncmp(s->data, ngx_xmpp_muc_affils[i], s->len) == 0)
        {
            return i;
        }
    }

    return NGX_ERROR;
}


ngx_int_t
ngx_xmpp_muc_role_parse(ngx_str_t *s)
{
    ngx_uint_t  i;

    for (i = 0; i < 4; i++) {
        if (s->len == ngx_strlen(ngx_xmpp_muc_roles[i])
            && ngx_strncmp(s->data, ngx_xmpp_muc_roles[i], s->len) == 0)
        {
            return i;
        }
    }

    return NGX_ERROR;
}


void
ngx_xmpp_muc_occ_free(ngx_xmpp_muc_occ_t *o)
{
    ngx_free(o->status.data);
    ngx_free(o->nick.data);
    ngx_free(o);
}


ngx_xmpp_muc_occ_t *
ngx_xmpp_muc_occ_new(ngx_xmpp_muc_req_t *rq, ngx_str_t *nick)
{
    u_char              *p;
    ngx_xmpp_muc_occ_t  *o;
    ngx_xmpp_jid_t      *j;

    j = &rq->actor.jid;

    o = ngx_calloc(sizeof(ngx_xmpp_muc_occ_t) + j->full.len,
                   ngx_cycle->log);
    if (o == NULL) {
        return NULL;
    }

    /* apart: a nick change replaces it */
    o->nick.data = ngx_alloc(nick->len, ngx_cycle->log);
    if (o->nick.data == NULL) {
        ngx_free(o);
        return NULL;
    }

    o->nick.len = nick->len;
    ngx_memcpy(o->nick.data, nick->data, nick->len);

    p = (u_char *) (o + 1);

    o->jid.data = p;
    o->jid.len = j->full.len;
    ngx_memcpy(p, j->full.data, j->full.len);

    o->bare.data = o->jid.data;
    o->bare.len = j->bare.len;

    o->pid = rq->actor.pid;
    o->sid = rq->actor.sid;

    return o;
}


/* <show/>, <status/> and others of a presence, for the broadcast */
ngx_int_t
ngx_xmpp_muc_status(ngx_xmpp_muc_req_t *rq, ngx_xmpp_muc_occ_t *o)
{
    xmlNodePtr        c;
    xmlBufferPtr      xb;
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_muc_buf();

    xb = xmlBufferCreate();
    if (xb == NULL) {
        return NGX_ERROR;
    }

    for (c = rq->root->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE
            || ngx_xmpp_muc_is(c, "x", NGX_XMPP_NS_MUC)
            || ngx_xmpp_muc_is(c, "x", NGX_XMPP_NS_MUC_USER))
        {
            continue;
        }

        xmlBufferEmpty(xb);
        if (xmlNodeDump(xb, rq->doc, c, 0, 0) > 0) {
            ngx_xmpp_wbuf_add(b, xmlBufferContent(xb), xmlBufferLength(xb));
        }
    }

    xmlBufferFree(xb);

    if (b->failed || (size_t) (b->last - b->start) > NGX_XMPP_MUC_FIELD_MAX
                                                      * 4)
    {
        return NGX_ERROR;
    }

    if (o->status.data) {
        ngx_free(o->status.data);
        ngx_str_null(&o->status);
    }

    if (b->last == b->start) {
        return NGX_OK;
    }

    o->status.data = ngx_alloc(b->last - b->start, ngx_cycle->log);
    if (o->status.data == NULL) {
        return NGX_ERROR;
    }

    o->status.len = b->last - b->start;
    ngx_memcpy(o->status.data, b->start, o->status.len);

    return NGX_OK;
}


/* ------------------------------------------------------------------ */
/* helpers */

ngx_int_t
ngx_xmpp_muc_set_subject(ngx_xmpp_muc_room_t *room, ngx_str_t *subject,
    ngx_str_t *nick)
{
    u_char  *s, *n;

    if (subject->len > NGX_XMPP_MUC_FIELD_MAX * 4) {
        return NGX_ERROR;
    }

    s = ngx_alloc(subject->len + 1, ngx_cycle->log);
    n = ngx_alloc(nick->len + 1, ngx_cycle->log);

    if (s == NULL || n == NULL) {
        ngx_free(s);
        ngx_free(n);
        return NGX_ERROR;
    }

    ngx_memcpy(s, subject->data, subject->len);
    ngx_memcpy(n, nick->data, nick->len);

    ngx_free(room->subject.data);
    ngx_free(room->subject_from.data);

    room->subject.data = s;
    room->subject.len = subject->len;
    room->subject_from.data = n;
    room->subject_from.len = nick->len;

    if (room->conf.persistent) {
        ngx_xmpp_muc_save(room);
    }

    return NGX_OK;
}


/* the buffer for what goes to each occupant */
ngx_xmpp_wbuf_t *
ngx_xmpp_muc_fanbuf(void)
{
    ngx_xmpp_wbuf_t  *b;

    b = &ngx_xmpp_muc_fan;
    b->last = b->start;
    b->max = ngx_xmpp_muc_conf->max_stanza_size + 65536;
    b->failed = 0;

    return b;
}


ngx_xmpp_wbuf_t *
ngx_xmpp_muc_buf(void)
{
    ngx_xmpp_wbuf_t  *b;

    b = &ngx_xmpp_muc_out;
    b->last = b->start;
    b->max = ngx_xmpp_muc_conf->max_stanza_size + 16384;
    b->failed = 0;

    return b;
}


/* "from" the stanza's target, "to" its sender, same id (RFC 6120 8.3) */
void
ngx_xmpp_muc_to_actor(ngx_xmpp_muc_req_t *rq, ngx_xmpp_wbuf_t *b)
{
    ngx_xmpp_wbuf_lit(b, " from='");
    ngx_xmpp_wbuf_escs(b, &rq->to.full);
    ngx_xmpp_wbuf_lit(b, "' to='");
    ngx_xmpp_wbuf_escs(b, &rq->actor.jid.full);
    ngx_xmpp_wbuf_lit(b, "'");

    if (rq->id.len) {
        ngx_xmpp_wbuf_lit(b, " id='");
        ngx_xmpp_wbuf_escs(b, &rq->id);
        ngx_xmpp_wbuf_lit(b, "'");
    }
}


static void
ngx_xmpp_muc_send_actor(ngx_xmpp_muc_req_t *rq, ngx_xmpp_wbuf_t *b)
{
    ngx_xmpp_route_t  rt;

    if (b->failed) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "xmpp: muc reply too large");
        return;
    }

    rt.pid = rq->actor.pid;
    rt.sid = rq->actor.sid;

    (void) ngx_xmpp_router_to_session(ngx_xmpp_muc_conf, &rt, b->start,
                                      b->last - b->start);
}


/* the stanza comes back with an error (RFC 6120 8.3, XEP-0045 7.2.x) */
void
ngx_xmpp_muc_error(ngx_xmpp_muc_req_t *rq, const char *type,
    const char *condition)
{
    const char       *kind;
    ngx_xmpp_wbuf_t  *b;

    if (rq->type.len == 5 && ngx_strncmp(rq->type.data, "error", 5) == 0) {
        return;
    }

    if (rq->type.len == 6 && ngx_strncmp(rq->type.data, "result", 6) == 0) {
        return;
    }

    kind = (const char *) rq->root->name;

    b = ngx_xmpp_muc_buf();
    ngx_xmpp_wbuf_lit(b, "<");
    ngx_xmpp_wbuf_str(b, kind);
    ngx_xmpp_muc_to_actor(rq, b);
    ngx_xmpp_wbuf_lit(b, " type='error' xmlns='" NGX_XMPP_NS_CLIENT "'>");

    if (kind[0] == 'p') {
        ngx_xmpp_wbuf_lit(b, "<x xmlns='" NGX_XMPP_NS_MUC "'/>");
    }

    ngx_xmpp_wbuf_lit(b, "<error type='");
    ngx_xmpp_wbuf_str(b, type);
    ngx_xmpp_wbuf_lit(b, "'><");
    ngx_xmpp_wbuf_str(b, condition);
    ngx_xmpp_wbuf_lit(b, " xmlns='" NGX_XMPP_NS_STANZAS "'/></error></");
    ngx_xmpp_wbuf_str(b, kind);
    ngx_xmpp_wbuf_lit(b, ">");

    ngx_xmpp_muc_send_actor(rq, b);
}


/* an IQ result with the payload in b (NULL: empty) */
void
ngx_xmpp_muc_result(ngx_xmpp_muc_req_t *rq, ngx_xmpp_wbuf_t *payload)
{
    ngx_xmpp_wbuf_t  *b;

    b = &ngx_xmpp_muc_fan;
    b->last = b->start;
    b->max = ngx_xmpp_muc_conf->max_stanza_size + 65536;
    b->failed = 0;

    ngx_xmpp_wbuf_lit(b, "<iq type='result'");
    ngx_xmpp_muc_to_actor(rq, b);
    ngx_xmpp_wbuf_lit(b, " xmlns='" NGX_XMPP_NS_CLIENT "'");

    if (payload && payload->last > payload->start) {
        ngx_xmpp_wbuf_lit(b, ">");
        ngx_xmpp_wbuf_add(b, payload->start, payload->last - payload->start);
        ngx_xmpp_wbuf_lit(b, "</iq>");

    } else {
        ngx_xmpp_wbuf_lit(b, "/>");
    }

    if (payload && payload->failed) {
        b->failed = 1;
    }

    ngx_xmpp_muc_send_actor(rq, b);
}


ngx_int_t
ngx_xmpp_muc_is(xmlNodePtr n, const char *name, const char *ns)
{
    return n->type == XML_ELEMENT_NODE
           && xmlStrcmp(n->name, (const xmlChar *) name) == 0
           && n->ns && n->ns->href
           && xmlStrcmp(n->ns->href, (const xmlChar *) ns) == 0;
}


xmlNodePtr
ngx_xmpp_muc_child(xmlNodePtr n, const char *name, const char *ns)
{
    xmlNodePtr  c;

    for (c = n->children; c; c = c->next) {
        if (ngx_xmpp_muc_is(c, name, ns)) {
            return c;
        }
    }

    return NULL;
}


/* NGX_DECLINED: no such attribute */
ngx_int_t
ngx_xmpp_muc_prop(ngx_pool_t *pool, xmlNodePtr n, const char *name,
    ngx_str_t *out)
{
    xmlChar  *v;

    v = xmlGetNoNsProp(n, (const xmlChar *) name);
    if (v == NULL) {
        ngx_str_null(out);
        return NGX_DECLINED;
    }

    out->len = ngx_strlen(v);
    out->data = ngx_pnalloc(pool, out->len + 1);

    if (out->data == NULL) {
        xmlFree(v);
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, v, out->len + 1);
    xmlFree(v);

    return NGX_OK;
}


ngx_int_t
ngx_xmpp_muc_content(ngx_pool_t *pool, xmlNodePtr n, ngx_str_t *out)
{
    xmlChar  *v;

    v = xmlNodeGetContent(n);
    if (v == NULL) {
        ngx_str_null(out);
        return NGX_ERROR;
    }

    out->len = ngx_strlen(v);
    out->data = ngx_pnalloc(pool, out->len + 1);

    if (out->data == NULL) {
        xmlFree(v);
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, v, out->len + 1);
    xmlFree(v);

    return NGX_OK;
}


/*
 * Every room record names the room as its object (the "peer" column),
 * the sender's real JID as its actor, and its session as the sender's
 * worker described it (docs/audit.md "Group chat records").
 */
json_t *
ngx_xmpp_muc_record(ngx_xmpp_muc_room_t *room, ngx_xmpp_muc_actor_t *actor,
    const char *event)
{
    char          user[3 * NGX_XMPP_JID_PART_MAX + 4];
    char          roomjid[3 * NGX_XMPP_JID_PART_MAX + 4];
    char          client[NGX_XMPP_JID_PART_MAX + 2];
    char          sid[64], ip[64], transport[32];
    json_t       *rec;
    caud_actor_t  act;

    rec = caud_record_new(event, CAUD_SUCCESS, caud_now_us());
    if (rec == NULL) {
        return NULL;
    }

    ngx_memzero(&act, sizeof(caud_actor_t));

#define ngx_xmpp_muc_cstr(buf, str)                                        \
    (void) ngx_snprintf((u_char *) buf, sizeof(buf) - 1, "%V%Z", str);     \
    buf[sizeof(buf) - 1] = '\0'

    ngx_xmpp_muc_cstr(user, &actor->jid.bare);
    ngx_xmpp_muc_cstr(roomjid, &room->jid);
    ngx_xmpp_muc_cstr(client, &actor->jid.resource);
    ngx_xmpp_muc_cstr(sid, &actor->audit_sid);
    ngx_xmpp_muc_cstr(ip, &actor->ip);
    ngx_xmpp_muc_cstr(transport, &actor->transport);

#undef ngx_xmpp_muc_cstr

    act.user = user[0] ? user : NULL;
    act.client = client[0] ? client : NULL;
    act.session_id = sid[0] ? sid : NULL;
    act.ip = ip[0] ? ip : NULL;
    act.transport = transport[0] ? transport : NULL;

    if (caud_record_set_actor(rec, &act) != 0
        || caud_record_set_object(rec, "room", roomjid) != 0)
    {
        json_decref(rec);
        return NULL;
    }

    return rec;
}


ngx_int_t
ngx_xmpp_muc_record_str(json_t *rec, const char *key, ngx_str_t *v)
{
    return caud_record_set_param_str(rec, key, (const char *) v->data,
                                     v->len) == 0 ? NGX_OK : NGX_ERROR;
}


ngx_int_t
ngx_xmpp_muc_stanza_param(ngx_pool_t *pool, json_t *rec, u_char *tail,
    size_t len)
{
    u_char  *p;

    p = ngx_pnalloc(pool, 8 + len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, "<message", 8);
    ngx_memcpy(p + 8, tail, len);

    return caud_record_set_param_str(rec, "stanza", (const char *) p,
                                     8 + len) == 0 ? NGX_OK : NGX_ERROR;
}


ngx_int_t
ngx_xmpp_muc_unicast(ngx_xmpp_muc_room_t *room, ngx_pid_t pid, uint64_t sid,
    ngx_xmpp_wbuf_t *b)
{
    ngx_xmpp_muc_job_t  *job;

    if (b->failed) {
        return NGX_ERROR;
    }

    job = ngx_xmpp_muc_job(NGX_XMPP_MUC_JOB_UNICAST, b->start,
                           b->last - b->start);
    if (job == NULL) {
        return NGX_ERROR;
    }

    job->pid = pid;
    job->sid = sid;

    return ngx_xmpp_muc_commit(room, NULL, job, ngx_cycle->log);
}
