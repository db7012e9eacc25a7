
/*
 * Group chat (XEP-0045), what occupants see: the room's job queue.  A
 * job runs once its audit record is durable, in queue order, and
 * reaches the occupants that had joined before it was queued; this is
 * how every occupant, on every worker, sees the one order of the room
 * and nothing that is not on the record (docs/muc.md).
 */


#include "ngx_xmpp_muc.h"

#include "caud.h"


static void ngx_xmpp_muc_durable(u_char *data, size_t len, ngx_uint_t ok);
static void ngx_xmpp_muc_bury_handler(ngx_event_t *ev);


static ngx_event_t  ngx_xmpp_muc_bury_ev;
static ngx_uint_t   ngx_xmpp_muc_depth;      /* commits under way */


/* ------------------------------------------------------------------ */
/* jobs: recorded, then run in the room's order */

ngx_xmpp_muc_job_t *
ngx_xmpp_muc_job(ngx_uint_t type, u_char *data, size_t len)
{
    ngx_xmpp_muc_job_t  *job;

    job = ngx_alloc(offsetof(ngx_xmpp_muc_job_t, data) + len + 1,
                    ngx_cycle->log);
    if (job == NULL) {
        return NULL;
    }

    ngx_memzero(job, offsetof(ngx_xmpp_muc_job_t, data));

    job->type = type;
    job->len = len;

    /* data NULL: the caller fills the len bytes */
    if (data && len) {
        ngx_memcpy(job->data, data, len);
    }

    return job;
}


/*
 * Queues the job behind the room's others and journals its record
 * (rec NULL: an unrecorded job).  NGX_OK: the job is the room's now and
 * runs once its record is durable, maybe already done.  Otherwise the
 * job is back with the caller, who frees it.
 */
ngx_int_t
ngx_xmpp_muc_commit(ngx_xmpp_muc_room_t *room, json_t *rec,
    ngx_xmpp_muc_job_t *job, ngx_log_t *log)
{
    u_char      buf[sizeof(uint64_t) + 3 * NGX_XMPP_JID_PART_MAX + 8];
    ngx_int_t   rc;

    job->seq = ++room->events;
    job->recorded = (rec != NULL);

    ngx_queue_insert_tail(&room->jobs, &job->queue);
    room->njobs++;

    if (rec == NULL) {
        ngx_xmpp_muc_release(room, 0, 1);
        return NGX_OK;
    }

    if (room->jid.len > sizeof(buf) - sizeof(uint64_t)) {
        rc = NGX_ERROR;
        goto failed;
    }

    ngx_memcpy(buf, &job->seq, sizeof(uint64_t));
    ngx_memcpy(buf + sizeof(uint64_t), room->jid.data, room->jid.len);

    /* durable() may run inside: it must not drop the room then */
    ngx_xmpp_muc_depth++;
    rc = ngx_xmpp_audit_defer(ngx_xmpp_muc_conf, rec, ngx_xmpp_muc_durable,
                              buf, sizeof(uint64_t) + room->jid.len, log);
    ngx_xmpp_muc_depth--;
    if (rc == NGX_OK) {
        return NGX_OK;
    }

failed:

    ngx_queue_remove(&job->queue);
    room->njobs--;
    room->events--;

    return rc;
}


/* the audit journal: the record of job seq of a room is durable */
static void
ngx_xmpp_muc_durable(u_char *data, size_t len, ngx_uint_t ok)
{
    uint64_t              seq;
    ngx_str_t             jid;
    ngx_queue_t          *q;
    ngx_xmpp_muc_job_t   *job;
    ngx_xmpp_muc_room_t  *room;

    if (len < sizeof(uint64_t)) {
        return;
    }

    ngx_memcpy(&seq, data, sizeof(uint64_t));
    jid.data = data + sizeof(uint64_t);
    jid.len = len - sizeof(uint64_t);

    room = ngx_xmpp_muc_room_find(&jid);
    if (room == NULL) {
        return;
    }

    if (!ok) {
        for (q = ngx_queue_head(&room->jobs);
             q != ngx_queue_sentinel(&room->jobs);
             q = ngx_queue_next(q))
        {
            job = ngx_queue_data(q, ngx_xmpp_muc_job_t, queue);
            if (job->seq == seq) {
                job->failed = 1;
                break;
            }
        }
    }

    ngx_xmpp_muc_release(room, seq, ok);

    if (!room->releasing && ngx_xmpp_muc_depth == 0) {
        ngx_xmpp_muc_check(room);
    }
}


/* sends b to the occupant's session; a gone session makes a ghost */
static void
ngx_xmpp_muc_deliver(ngx_xmpp_muc_room_t *room, ngx_xmpp_muc_occ_t *o,
    ngx_xmpp_wbuf_t *b)
{
    ngx_xmpp_route_t  rt;

    if (b->failed || o->ghost) {
        return;
    }

    rt.pid = o->pid;
    rt.sid = o->sid;

    if (ngx_xmpp_router_to_session(ngx_xmpp_muc_conf, &rt, b->start,
                                   b->last - b->start)
        != NGX_OK)
    {
        o->ghost = 1;
        room->ghosts = 1;
    }
}


/* ------------------------------------------------------------------ */
/* one stanza to many occupants: per worker, not per occupant */

/*
 * Occupants on this worker get their copy at once; those on another
 * worker are listed, per worker, in one NGX_XMPP_IPC_FAN record
 * (ngx_xmpp_router_fan_ipc() makes their copies there): a room of n
 * occupants costs one record per other worker instead of n copies of
 * the stanza through the socket.  The lists stay allocated for the
 * worker's life (no allocation per room message).
 */

#define NGX_XMPP_MUC_FAN_PEERS  64
#define NGX_XMPP_MUC_FAN_CHUNK  (16 * 1024)


typedef struct {
    ngx_pid_t              pid;
    ngx_uint_t             n;             /* sessions listed */
    unsigned               failed:1;
    ngx_xmpp_wbuf_t        buf;
} ngx_xmpp_muc_peer_t;


typedef struct {
    ngx_str_t              elem;          /* "message", "presence" */
    u_char                *tail;          /* after the "to" attribute */
    size_t                 tail_len;
} ngx_xmpp_muc_fan_t;


static ngx_xmpp_muc_peer_t  ngx_xmpp_muc_peers[NGX_XMPP_MUC_FAN_PEERS];
static ngx_uint_t           ngx_xmpp_muc_npeers;
static ngx_xmpp_wbuf_t      ngx_xmpp_muc_tail;


static void
ngx_xmpp_muc_peer_send(ngx_xmpp_muc_peer_t *peer)
{
    if (peer->n == 0) {
        return;
    }

    if (ngx_xmpp_ipc_send(peer->pid, NGX_XMPP_IPC_FAN, 0, peer->buf.start,
                          peer->buf.last - peer->buf.start)
        != NGX_OK)
    {
        peer->failed = 1;
    }

    peer->n = 0;
    peer->buf.last = peer->buf.start;
}


static ngx_xmpp_muc_peer_t *
ngx_xmpp_muc_peer(ngx_pid_t pid)
{
    ngx_uint_t            i;
    ngx_xmpp_muc_peer_t  *peer;

    for (i = 0; i < ngx_xmpp_muc_npeers; i++) {
        if (ngx_xmpp_muc_peers[i].pid == pid) {
            return &ngx_xmpp_muc_peers[i];
        }
    }

    if (ngx_xmpp_muc_npeers == NGX_XMPP_MUC_FAN_PEERS) {
        return NULL;
    }

    peer = &ngx_xmpp_muc_peers[ngx_xmpp_muc_npeers++];
    peer->pid = pid;
    peer->n = 0;
    peer->failed = 0;
    peer->buf.last = peer->buf.start;
    peer->buf.max = NGX_XMPP_MUC_FAN_CHUNK + ngx_xmpp_muc_conf->max_stanza_size
                    + 65536;
    peer->buf.failed = 0;

    return peer;
}


/* the copy of occupant to, built here */
static void
ngx_xmpp_muc_fan_local(ngx_xmpp_muc_room_t *room, ngx_xmpp_muc_fan_t *fan,
    ngx_xmpp_muc_occ_t *to)
{
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_muc_fanbuf();

    if (ngx_xmpp_wbuf_reserve(b, 16 + fan->elem.len + 6 * to->jid.len
                                 + fan->tail_len)
        != NGX_OK)
    {
        return;
    }

    ngx_xmpp_wbuf_lit(b, "<");
    ngx_xmpp_wbuf_nstr(b, &fan->elem);
    ngx_xmpp_wbuf_lit(b, " to='");
    ngx_xmpp_wbuf_escs(b, &to->jid);
    ngx_xmpp_wbuf_lit(b, "'");
    ngx_xmpp_wbuf_add(b, fan->tail, fan->tail_len);

    ngx_xmpp_muc_deliver(room, to, b);
}


static void
ngx_xmpp_muc_fan_add(ngx_xmpp_muc_room_t *room, ngx_xmpp_muc_fan_t *fan,
    ngx_xmpp_muc_occ_t *to)
{
    u_char               *p;
    size_t                used;
    ngx_xmpp_wbuf_t      *b;
    ngx_xmpp_fan_hdr_t    h;
    ngx_xmpp_fan_rcpt_t   r;
    ngx_xmpp_muc_peer_t  *peer;

    if (to->ghost) {
        return;
    }

    peer = (to->pid == ngx_pid) ? NULL : ngx_xmpp_muc_peer(to->pid);

    if (peer == NULL) {
        ngx_xmpp_muc_fan_local(room, fan, to);
        return;
    }

    b = &peer->buf;
    used = b->last - b->start;

    if (peer->n && used + sizeof(r) + 6 * to->jid.len
                   > NGX_XMPP_MUC_FAN_CHUNK)
    {
        ngx_xmpp_muc_peer_send(peer);
    }

    if (peer->n == 0) {
        b->failed = 0;
        h.elem_len = (uint32_t) fan->elem.len;
        h.tail_len = (uint32_t) fan->tail_len;
        ngx_xmpp_wbuf_add(b, &h, sizeof(h));
        ngx_xmpp_wbuf_nstr(b, &fan->elem);
        ngx_xmpp_wbuf_add(b, fan->tail, fan->tail_len);
    }

    if (ngx_xmpp_wbuf_reserve(b, sizeof(r) + 6 * to->jid.len) != NGX_OK) {
        peer->failed = 1;
        return;
    }

    /* the escaped JID fits what was reserved: b does not move */
    p = b->last;
    b->last += sizeof(r);
    ngx_xmpp_wbuf_escs(b, &to->jid);

    r.sid = to->sid;
    r.jid_len = (uint32_t) (b->last - p - sizeof(r));
    r.reserved = 0;
    ngx_memcpy(p, &r, sizeof(r));

    peer->n++;
}


/* the lists go; occupants of a worker that is gone are ghosts */
static void
ngx_xmpp_muc_fan_end(ngx_xmpp_muc_room_t *room)
{
    ngx_uint_t            i, failed;
    ngx_queue_t          *q;
    ngx_xmpp_muc_occ_t   *o;
    ngx_xmpp_muc_peer_t  *peer;

    failed = 0;

    for (i = 0; i < ngx_xmpp_muc_npeers; i++) {
        peer = &ngx_xmpp_muc_peers[i];

        if (peer->buf.failed) {
            peer->failed = 1;
        }

        if (!peer->failed) {
            ngx_xmpp_muc_peer_send(peer);
        }

        failed |= peer->failed;
    }

    for (q = ngx_queue_head(&room->occupants);
         failed && q != ngx_queue_sentinel(&room->occupants);
         q = ngx_queue_next(q))
    {
        o = ngx_queue_data(q, ngx_xmpp_muc_occ_t, queue);

        for (i = 0; i < ngx_xmpp_muc_npeers; i++) {
            if (ngx_xmpp_muc_peers[i].failed
                && ngx_xmpp_muc_peers[i].pid == o->pid)
            {
                o->ghost = 1;
                room->ghosts = 1;
            }
        }
    }

    /* the buffers stay for the next fan-out */
    ngx_xmpp_muc_npeers = 0;
}


/*
 * What follows "to" in the <presence/> of occupant o (under nick): in
 * a semi-anonymous room only moderators and o itself see the real JID
 * (XEP-0045 7.2.3 and 7.2.4), with_jid says which variant this is.
 */
static void
ngx_xmpp_muc_presence_tail(ngx_xmpp_wbuf_t *b, ngx_xmpp_muc_room_t *room,
    ngx_xmpp_muc_occ_t *o, ngx_str_t *nick, ngx_uint_t unavailable,
    ngx_uint_t *codes, ngx_uint_t ncodes, ngx_uint_t with_jid,
    ngx_str_t *new_nick, ngx_str_t *reason)
{
    u_char      code[NGX_INT_T_LEN];
    ngx_uint_t  i;

    ngx_xmpp_wbuf_lit(b, " from='");
    ngx_xmpp_wbuf_escs(b, &room->jid);
    ngx_xmpp_wbuf_lit(b, "/");
    ngx_xmpp_wbuf_escs(b, nick);
    ngx_xmpp_wbuf_lit(b, "'");

    if (unavailable) {
        ngx_xmpp_wbuf_lit(b, " type='unavailable'");
    }

    ngx_xmpp_wbuf_lit(b, " xmlns='" NGX_XMPP_NS_CLIENT "'>");

    if (o->status.len) {
        ngx_xmpp_wbuf_nstr(b, &o->status);
    }

    ngx_xmpp_wbuf_lit(b, "<x xmlns='" NGX_XMPP_NS_MUC_USER "'>"
                      "<item affiliation='");
    ngx_xmpp_wbuf_str(b, ngx_xmpp_muc_affil_name(o->affiliation));
    ngx_xmpp_wbuf_lit(b, "' role='");
    ngx_xmpp_wbuf_str(b, ngx_xmpp_muc_role_name(unavailable
                                               ? NGX_XMPP_MUC_ROLE_NONE
                                               : o->role));
    ngx_xmpp_wbuf_lit(b, "'");

    if (with_jid) {
        ngx_xmpp_wbuf_lit(b, " jid='");
        ngx_xmpp_wbuf_escs(b, &o->jid);
        ngx_xmpp_wbuf_lit(b, "'");
    }

    if (new_nick) {
        ngx_xmpp_wbuf_lit(b, " nick='");
        ngx_xmpp_wbuf_escs(b, new_nick);
        ngx_xmpp_wbuf_lit(b, "'");
    }

    if (reason && reason->len) {
        ngx_xmpp_wbuf_lit(b, "><reason>");
        ngx_xmpp_wbuf_escs(b, reason);
        ngx_xmpp_wbuf_lit(b, "</reason></item>");

    } else {
        ngx_xmpp_wbuf_lit(b, "/>");
    }

    for (i = 0; i < ncodes; i++) {
        ngx_xmpp_wbuf_lit(b, "<status code='");
        ngx_xmpp_wbuf_add(b, code, ngx_sprintf(code, "%ui", codes[i]) - code);
        ngx_xmpp_wbuf_lit(b, "'/>");
    }

    ngx_xmpp_wbuf_lit(b, "</x></presence>");
}


/* o's presence to one occupant */
static void
ngx_xmpp_muc_send_presence(ngx_xmpp_muc_room_t *room, ngx_xmpp_muc_occ_t *o,
    ngx_str_t *nick, ngx_xmpp_muc_occ_t *to, ngx_uint_t unavailable,
    ngx_uint_t *codes, ngx_uint_t ncodes, ngx_str_t *new_nick,
    ngx_str_t *reason)
{
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_muc_fanbuf();

    ngx_xmpp_wbuf_lit(b, "<presence to='");
    ngx_xmpp_wbuf_escs(b, &to->jid);
    ngx_xmpp_wbuf_lit(b, "'");

    ngx_xmpp_muc_presence_tail(b, room, o, nick, unavailable, codes, ncodes,
                               !room->conf.semi_anonymous || to == o
                               || to->role == NGX_XMPP_MUC_ROLE_MODERATOR,
                               new_nick, reason);

    ngx_xmpp_muc_deliver(room, to, b);
}


/*
 * o's presence to every occupant that joined before the job: o's own
 * copy apart (status codes), the others get one of two variants, with
 * the real JID or without, each built once and fanned out.
 */
static void
ngx_xmpp_muc_broadcast_presence(ngx_xmpp_muc_room_t *room,
    ngx_xmpp_muc_job_t *job, ngx_str_t *nick, ngx_uint_t unavailable,
    ngx_uint_t code, ngx_str_t *new_nick, ngx_str_t *reason)
{
    ngx_uint_t           codes[4], n, with_jid, sees_jid;
    ngx_queue_t         *q;
    ngx_xmpp_wbuf_t     *t;
    ngx_xmpp_muc_fan_t   fan;
    ngx_xmpp_muc_occ_t  *o, *to;

    o = job->occ;

    ngx_str_set(&fan.elem, "presence");

    for (with_jid = 0; with_jid < 2; with_jid++) {

        t = &ngx_xmpp_muc_tail;
        t->last = t->start;
        t->max = ngx_xmpp_muc_conf->max_stanza_size + 65536;
        t->failed = 0;

        ngx_xmpp_muc_presence_tail(t, room, o, nick, unavailable, &code,
                                   code ? 1 : 0, with_jid, new_nick, reason);
        if (t->failed) {
            continue;
        }

        fan.tail = t->start;
        fan.tail_len = t->last - t->start;

        for (q = ngx_queue_head(&room->occupants);
             q != ngx_queue_sentinel(&room->occupants);
             q = ngx_queue_next(q))
        {
            to = ngx_queue_data(q, ngx_xmpp_muc_occ_t, queue);

            sees_jid = !room->conf.semi_anonymous
                       || to->role == NGX_XMPP_MUC_ROLE_MODERATOR;

            if (to == o || to->joined >= job->seq || sees_jid != with_jid) {
                continue;
            }

            ngx_xmpp_muc_fan_add(room, &fan, to);
        }

        ngx_xmpp_muc_fan_end(room);
    }

    /* XEP-0045 7.2.2: 110 marks the occupant's own presence */
    n = 0;
    codes[n++] = 110;

    if (!room->conf.semi_anonymous && !unavailable && code == 0) {
        codes[n++] = 100;
    }

    if (code) {
        codes[n++] = code;
    }

    ngx_xmpp_muc_send_presence(room, o, nick, o, unavailable, codes, n,
                               new_nick, reason);
}


static void
ngx_xmpp_muc_send_subject(ngx_xmpp_muc_room_t *room, ngx_xmpp_muc_occ_t *to)
{
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_muc_fanbuf();

    ngx_xmpp_wbuf_lit(b, "<message to='");
    ngx_xmpp_wbuf_escs(b, &to->jid);
    ngx_xmpp_wbuf_lit(b, "' from='");
    ngx_xmpp_wbuf_escs(b, &room->jid);

    if (room->subject_from.len) {
        ngx_xmpp_wbuf_lit(b, "/");
        ngx_xmpp_wbuf_escs(b, &room->subject_from);
    }

    ngx_xmpp_wbuf_lit(b, "' type='groupchat' xmlns='" NGX_XMPP_NS_CLIENT
                      "'>");

    if (room->subject.len) {
        ngx_xmpp_wbuf_lit(b, "<subject>");
        ngx_xmpp_wbuf_escs(b, &room->subject);
        ngx_xmpp_wbuf_lit(b, "</subject></message>");

    } else {
        ngx_xmpp_wbuf_lit(b, "<subject/></message>");
    }

    ngx_xmpp_muc_deliver(room, to, b);
}


static void
ngx_xmpp_muc_stamp(u_char *p, int64_t us)
{
    ngx_tm_t  tm;

    ngx_gmtime((time_t) (us / 1000000), &tm);

    (void) ngx_sprintf(p, "%4d-%02d-%02dT%02d:%02d:%02d.%03dZ%Z",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec,
                       (int) ((us / 1000) % 1000));
}


/* XEP-0082 date-time to microseconds; -1 if it is not one */
int64_t
ngx_xmpp_muc_parse_stamp(ngx_str_t *v)
{
    int        y, mo, d, h, mi, s;
    char       buf[64];
    struct tm  tm;

    if (v->len < 19 || v->len >= sizeof(buf)) {
        return -1;
    }

    ngx_memcpy(buf, v->data, v->len);
    buf[v->len] = '\0';

    if (sscanf(buf, "%4d-%2d-%2dT%2d:%2d:%2d", &y, &mo, &d, &h, &mi, &s)
        != 6)
    {
        return -1;
    }

    ngx_memzero(&tm, sizeof(struct tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;

    return (int64_t) timegm(&tm) * 1000000;
}


/*
 * XEP-0045 7.2.14 (history limits): the newest entries that fit every
 * limit the joiner gave, sent oldest first with a XEP-0203 delay.
 */
static void
ngx_xmpp_muc_send_history(ngx_xmpp_muc_room_t *room, ngx_xmpp_muc_occ_t *to,
    int64_t *h)
{
    u_char                stamp[64];
    int64_t               since, chars;
    ngx_uint_t            i, n, size, max;
    ngx_xmpp_wbuf_t      *b;
    ngx_xmpp_muc_hist_t  *e;

    size = ngx_xmpp_muc_conf->muc_history;
    max = (h[0] >= 0) ? (ngx_uint_t) h[0] : room->nhist;
    since = -1;

    if (h[2] >= 0) {
        since = caud_now_us() - h[2] * 1000000;
    }

    if (h[3] >= 0 && h[3] > since) {
        since = h[3];
    }

    chars = 0;

    for (n = 0; n < room->nhist && n < max; n++) {
        e = room->history[(room->hist_head + size - 1 - n) % size];

        if (e->ts < since) {
            break;
        }

        chars += e->len;

        if (h[1] >= 0 && chars > h[1]) {
            break;
        }
    }

    b = ngx_xmpp_muc_fanbuf();

    for (i = n; i > 0; i--) {
        e = room->history[(room->hist_head + size - i) % size];

        b = ngx_xmpp_muc_fanbuf();

        ngx_xmpp_muc_stamp(stamp, e->ts);

        /* "<message" + " to='...'" + the rest without "</message>" */
        ngx_xmpp_wbuf_lit(b, "<message to='");
        ngx_xmpp_wbuf_escs(b, &to->jid);
        ngx_xmpp_wbuf_lit(b, "'");
        ngx_xmpp_wbuf_add(b, e->data + 8, e->len - 8 - 10);
        ngx_xmpp_wbuf_lit(b, "<delay xmlns='" NGX_XMPP_NS_DELAY "' from='");
        ngx_xmpp_wbuf_escs(b, &room->jid);
        ngx_xmpp_wbuf_lit(b, "' stamp='");
        ngx_xmpp_wbuf_str(b, (char *) stamp);
        ngx_xmpp_wbuf_lit(b, "'/></message>");

        ngx_xmpp_muc_deliver(room, to, b);
    }
}


void
ngx_xmpp_muc_history_add(ngx_xmpp_muc_room_t *room, int64_t ts,
    u_char *data, size_t len)
{
    ngx_uint_t            size;
    ngx_xmpp_muc_hist_t  *e;

    size = ngx_xmpp_muc_conf->muc_history;

    if (size == 0 || len < 8 + 10
        || ngx_strncmp(data, "<message", 8) != 0
        || ngx_strncmp(data + len - 10, "</message>", 10) != 0)
    {
        return;
    }

    e = ngx_alloc(offsetof(ngx_xmpp_muc_hist_t, data) + len, ngx_cycle->log);
    if (e == NULL) {
        return;
    }

    e->ts = ts;
    e->len = len;
    ngx_memcpy(e->data, data, len);

    if (room->history[room->hist_head]) {
        ngx_free(room->history[room->hist_head]);
    }

    room->history[room->hist_head] = e;
    room->hist_head = (room->hist_head + 1) % size;

    if (room->nhist < size) {
        room->nhist++;
    }
}


static void
ngx_xmpp_muc_run_message(ngx_xmpp_muc_room_t *room, ngx_xmpp_muc_job_t *job)
{
    ngx_queue_t          *q;
    ngx_xmpp_wbuf_t      *b;
    ngx_xmpp_muc_fan_t    fan;
    ngx_xmpp_muc_occ_t   *to;

    if (job->code == 0 && job->len + 8 <= ngx_xmpp_muc_conf->max_stanza_size
                                         + 16384)
    {
        /* the history entry is the stanza without "to" */
        b = ngx_xmpp_muc_fanbuf();
        b = ngx_xmpp_muc_fanbuf();
        ngx_xmpp_wbuf_lit(b, "<message");
        ngx_xmpp_wbuf_add(b, job->data, job->len);

        if (!b->failed) {
            ngx_xmpp_muc_history_add(room, caud_now_us(), b->start,
                                     b->last - b->start);
        }
    }

    /* one copy per occupant here, one record per other worker */
    ngx_str_set(&fan.elem, "message");
    fan.tail = job->data;
    fan.tail_len = job->len;

    for (q = ngx_queue_head(&room->occupants);
         q != ngx_queue_sentinel(&room->occupants);
         q = ngx_queue_next(q))
    {
        to = ngx_queue_data(q, ngx_xmpp_muc_occ_t, queue);

        if (to->joined < job->seq) {
            ngx_xmpp_muc_fan_add(room, &fan, to);
        }
    }

    ngx_xmpp_muc_fan_end(room);
}


static void
ngx_xmpp_muc_run_join(ngx_xmpp_muc_room_t *room, ngx_xmpp_muc_job_t *job)
{
    int64_t              h[4];
    ngx_uint_t           codes[3], n;
    ngx_queue_t         *q;
    ngx_xmpp_muc_occ_t  *o, *other;

    o = job->occ;

    /* XEP-0045 7.2.3: first the others, as the joiner is allowed to */
    for (q = ngx_queue_head(&room->occupants);
         q != ngx_queue_sentinel(&room->occupants);
         q = ngx_queue_next(q))
    {
        other = ngx_queue_data(q, ngx_xmpp_muc_occ_t, queue);

        if (other == o || other->joined >= job->seq) {
            continue;
        }

        ngx_xmpp_muc_send_presence(room, other, &other->nick, o, 0, NULL, 0,
                                   NULL, NULL);
        ngx_xmpp_muc_send_presence(room, o, &o->nick, other, 0, NULL, 0,
                                   NULL, NULL);
    }

    n = 0;
    codes[n++] = 110;

    if (!room->conf.semi_anonymous) {
        codes[n++] = 100;
    }

    if (job->code == 201) {
        codes[n++] = 201;
    }

    ngx_xmpp_muc_send_presence(room, o, &o->nick, o, 0, codes, n, NULL,
                               NULL);

    ngx_memcpy(h, job->data, sizeof(h));
    ngx_xmpp_muc_send_history(room, o, h);

    /* XEP-0045 7.2.15: the subject comes last, even an empty one */
    ngx_xmpp_muc_send_subject(room, o);
}


/*
 * An invitation or a decline: to a user, not an occupant.  It is
 * routed like a message of type normal from the room (RFC 6121 8.5),
 * so that an invitee with no available resource finds it in offline
 * storage at the next sign-in (XEP-0045 7.8.2, XEP-0160).
 */
static void
ngx_xmpp_muc_run_route(ngx_xmpp_muc_job_t *job)
{
    ngx_str_t             jid;
    ngx_pool_t           *pool;
    ngx_xmpp_delivery_t   d;

    jid.data = job->data;
    jid.len = job->code;

    pool = ngx_create_pool(1024, ngx_cycle->log);
    if (pool == NULL) {
        return;
    }

    ngx_memzero(&d, sizeof(ngx_xmpp_delivery_t));
    d.kind = NGX_XMPP_STANZA_MESSAGE;
    ngx_str_set(&d.type, "normal");
    d.data = job->data + job->code + 1;
    d.len = job->len - job->code - 1;

    if (ngx_xmpp_jid_parse(pool, &jid, &d.to) == NGX_OK) {
        /* no sender's session: a failure has nobody to be told */
        ngx_xmpp_router_deliver(ngx_xmpp_muc_conf, NULL, &d);
    }

    ngx_destroy_pool(pool);
}


static void
ngx_xmpp_muc_run(ngx_xmpp_muc_room_t *room, ngx_xmpp_muc_job_t *job)
{
    ngx_str_t            old, reason;
    ngx_xmpp_muc_occ_t  *o;
    ngx_xmpp_route_t     rt;

    o = job->occ;

    switch (job->type) {

    case NGX_XMPP_MUC_JOB_MESSAGE:
        ngx_xmpp_muc_run_message(room, job);
        break;

    case NGX_XMPP_MUC_JOB_JOIN:
        ngx_xmpp_muc_run_join(room, job);
        break;

    case NGX_XMPP_MUC_JOB_PRESENCE:
        if (o->leaving) {
            break;
        }

        if (job->code == 303) {
            /* XEP-0045 7.6: unavailable under the old nick, then back */
            old.data = job->data;
            old.len = job->len;
            ngx_xmpp_muc_broadcast_presence(room, job, &old, 1, 303,
                                            &o->nick, NULL);
        }

        ngx_xmpp_muc_broadcast_presence(room, job, &o->nick, 0, 0, NULL,
                                        NULL);
        break;

    case NGX_XMPP_MUC_JOB_LEAVE:
        reason.data = job->data;
        reason.len = job->len;
        ngx_xmpp_muc_broadcast_presence(room, job, &o->nick, 1, job->code,
                                        NULL, &reason);
        ngx_queue_remove(&o->queue);
        ngx_xmpp_muc_occ_free(o);
        break;

    case NGX_XMPP_MUC_JOB_ROUTE:
        ngx_xmpp_muc_run_route(job);
        break;

    default: /* NGX_XMPP_MUC_JOB_UNICAST */
        rt.pid = job->pid;
        rt.sid = job->sid;
        (void) ngx_xmpp_router_to_session(ngx_xmpp_muc_conf, &rt, job->data,
                                          job->len);
        break;
    }
}


/*
 * Occupants whose sessions are gone leave, on the record.  This runs as
 * a posted event, never inside a fan-out or a commit: a leave may run
 * at once (fsync not "always") and change the room under its caller.
 */
static void
ngx_xmpp_muc_bury(ngx_xmpp_muc_room_t *room)
{
    ngx_pool_t          *pool;
    ngx_queue_t         *q;
    ngx_xmpp_muc_req_t   rq;
    ngx_xmpp_muc_occ_t  *o;

    pool = ngx_create_pool(1024, ngx_cycle->log);
    if (pool == NULL) {
        return;
    }

    ngx_memzero(&rq, sizeof(ngx_xmpp_muc_req_t));
    rq.pool = pool;
    rq.room = room;

again:

    for (q = ngx_queue_head(&room->occupants);
         q != ngx_queue_sentinel(&room->occupants);
         q = ngx_queue_next(q))
    {
        o = ngx_queue_data(q, ngx_xmpp_muc_occ_t, queue);

        if (o->ghost && !o->leaving) {
            /* the leave may free occupants: start over after it */
            ngx_xmpp_muc_remove(&rq, o, 0, NULL, "connection-lost");
            goto again;
        }
    }

    ngx_destroy_pool(pool);
}


static ngx_xmpp_muc_room_t *
ngx_xmpp_muc_ghost_room(ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_xmpp_muc_room_t  *room;

    while (node != sentinel) {
        room = (ngx_xmpp_muc_room_t *) node;

        if (room->ghosts) {
            return room;
        }

        room = ngx_xmpp_muc_ghost_room(node->left, sentinel);
        if (room) {
            return room;
        }

        node = node->right;
    }

    return NULL;
}


static void
ngx_xmpp_muc_bury_handler(ngx_event_t *ev)
{
    ngx_rbtree_t         *tree;
    ngx_xmpp_muc_room_t  *room;

    tree = ngx_xmpp_muc_tree();

    while ((room = ngx_xmpp_muc_ghost_room(tree->root, tree->sentinel))) {
        room->ghosts = 0;
        ngx_xmpp_muc_bury(room);
        ngx_xmpp_muc_check(room);
    }
}


/*
 * Runs the jobs at the head of the queue whose records are durable (up
 * to upto) and the unrecorded ones behind them.  Re-entered from a run
 * (a deferred record that is at once durable), it only moves the mark.
 */
void
ngx_xmpp_muc_release(ngx_xmpp_muc_room_t *room, uint64_t upto,
    ngx_uint_t ok)
{
    ngx_queue_t         *q;
    ngx_xmpp_muc_job_t  *job;

    if (upto > room->durable) {
        room->durable = upto;
    }

    if (room->releasing) {
        return;
    }

    room->releasing = 1;

    /* a group commit releases many jobs: one send per occupant */
    ngx_xmpp_session_cork();

    while (!ngx_queue_empty(&room->jobs)) {
        q = ngx_queue_head(&room->jobs);
        job = ngx_queue_data(q, ngx_xmpp_muc_job_t, queue);

        if (job->recorded && job->seq > room->durable) {
            break;
        }

        ngx_queue_remove(q);
        room->njobs--;

        if (job->failed) {
            /* never durable: it must not be seen (the journal failed) */
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "xmpp: room \"%V\" event not delivered: "
                          "its record is not durable", &room->jid);

            if (job->type == NGX_XMPP_MUC_JOB_LEAVE) {
                ngx_queue_remove(&job->occ->queue);
                ngx_xmpp_muc_occ_free(job->occ);
            }

        } else {
            ngx_xmpp_muc_run(room, job);
        }

        ngx_free(job);
    }

    room->releasing = 0;

    ngx_xmpp_session_uncork();

    if (room->ghosts && !ngx_xmpp_muc_bury_ev.posted) {
        ngx_xmpp_muc_bury_ev.handler = ngx_xmpp_muc_bury_handler;
        ngx_xmpp_muc_bury_ev.log = ngx_cycle->log;
        ngx_post_event(&ngx_xmpp_muc_bury_ev, &ngx_posted_events);
    }
}


/* the worker exits: nothing is buried any more */
void
ngx_xmpp_muc_fan_exit(void)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_XMPP_MUC_FAN_PEERS; i++) {
        ngx_xmpp_wbuf_free(&ngx_xmpp_muc_peers[i].buf);
    }

    ngx_xmpp_wbuf_free(&ngx_xmpp_muc_tail);

    if (ngx_xmpp_muc_bury_ev.posted) {
        ngx_delete_posted_event(&ngx_xmpp_muc_bury_ev);
    }
}


