
/*
 * XEP-0198 stream management: counting, acks and the resumption
 * handshake (docs/routing.md "Stream management").  Parked sessions,
 * their hand-over between workers and what becomes of stanzas nobody
 * acknowledged are in ngx_xmpp_smpark.c.
 *
 * Counting.  After <enable/>, h_in counts the stanzas the client sent
 * and we handled, h_out the stanzas we sent; every stanza sent is kept
 * in the session's unacked queue (one growable buffer, no allocation
 * per stanza) until the client's <a h='...'/> covers it.
 *
 * Resumption.  The token (previd) is the 128-bit secret in hex followed
 * by the resource; the resuming client is authenticated, so its bare
 * JID and the resource find the session's registry entry, which names
 * the worker that holds it.  In that worker the ghost is taken over at
 * once; in another one the new worker asks over the inter-worker
 * channel (SM_TAKE), and the owner moves the registry entry to the new
 * session, sends the queued stanzas (SM_STANZA, in order) and the state
 * (SM_TAKEN).  What others route meanwhile is held by the new session
 * until the state arrives, or forwarded by the old worker, so nothing
 * is lost and the order of each sender's stanzas is kept.
 */


#include "ngx_xmpp.h"
#include "ngx_xmpp_sm.h"


static void ngx_xmpp_sm_wait_handler(ngx_event_t *ev);
static void ngx_xmpp_sm_failed(ngx_xmpp_session_t *s, const char *cond);
static void ngx_xmpp_sm_abandon(ngx_xmpp_sm_t *sm);


/* resumptions waiting for another worker's state (SM_TAKE sent) */
static ngx_queue_t  ngx_xmpp_sm_resumptions;
static ngx_uint_t   ngx_xmpp_sm_nresuming;


/* one entry: plen bytes of pre (a tag, or nothing), then data */
ngx_int_t
ngx_xmpp_sm_queue_put(ngx_xmpp_sm_queue_t *q, u_char *pre, size_t plen,
    u_char *data, size_t len)
{
    u_char    *nb;
    size_t     need, size;
    uint32_t   l;

    need = sizeof(uint32_t) + plen + len;

    if (q->tail + need > q->size) {
        if (q->head && q->tail - q->head + need <= q->size) {
            ngx_memmove(q->buf, q->buf + q->head, q->tail - q->head);
            q->tail -= q->head;
            q->head = 0;

        } else {
            size = q->size ? q->size : 4096;

            while (size < q->tail - q->head + need) {
                size *= 2;
            }

            nb = ngx_alloc(size, ngx_cycle->log);
            if (nb == NULL) {
                return NGX_ERROR;
            }

            if (q->buf) {
                ngx_memcpy(nb, q->buf + q->head, q->tail - q->head);
                ngx_free(q->buf);
            }

            q->tail -= q->head;
            q->head = 0;
            q->buf = nb;
            q->size = size;
        }
    }

    l = (uint32_t) (plen + len);
    ngx_memcpy(q->buf + q->tail, &l, sizeof(uint32_t));

    if (plen) {
        ngx_memcpy(q->buf + q->tail + sizeof(uint32_t), pre, plen);
    }

    if (len) {
        ngx_memcpy(q->buf + q->tail + sizeof(uint32_t) + plen, data, len);
    }

    q->tail += need;
    q->n++;

    return NGX_OK;
}


ngx_int_t
ngx_xmpp_sm_queue_add(ngx_xmpp_sm_queue_t *q, u_char *data, size_t len)
{
    return ngx_xmpp_sm_queue_put(q, NULL, 0, data, len);
}


/* the oldest stanza, or NGX_DONE when the queue is empty */
ngx_int_t
ngx_xmpp_sm_queue_peek(ngx_xmpp_sm_queue_t *q, u_char **data, size_t *len)
{
    uint32_t  l;

    if (q->n == 0) {
        return NGX_DONE;
    }

    ngx_memcpy(&l, q->buf + q->head, sizeof(uint32_t));
    *data = q->buf + q->head + sizeof(uint32_t);
    *len = l;

    return NGX_OK;
}


void
ngx_xmpp_sm_queue_drop(ngx_xmpp_sm_queue_t *q)
{
    uint32_t  l;

    ngx_memcpy(&l, q->buf + q->head, sizeof(uint32_t));
    q->head += sizeof(uint32_t) + l;
    q->n--;

    if (q->n == 0) {
        q->head = 0;
        q->tail = 0;
    }
}


void
ngx_xmpp_sm_queue_free(ngx_xmpp_sm_queue_t *q)
{
    ngx_free(q->buf);
    ngx_memzero(q, sizeof(ngx_xmpp_sm_queue_t));
}


static ngx_uint_t
ngx_xmpp_sm_is(ngx_xmpp_node_t *n, const char *name)
{
    return n->name.len == ngx_strlen(name)
           && ngx_strncmp(n->name.data, name, n->name.len) == 0;
}


/* message, presence or iq: what XEP-0198 counts */
ngx_uint_t
ngx_xmpp_sm_stanza(u_char *data, size_t len)
{
    return (len > 3 && ngx_strncmp(data, "<iq", 3) == 0
            && (data[3] == ' ' || data[3] == '>'))
           || (len > 9 && ngx_strncmp(data, "<message", 8) == 0
               && (data[8] == ' ' || data[8] == '>'))
           || (len > 10 && ngx_strncmp(data, "<presence", 9) == 0
               && (data[9] == ' ' || data[9] == '>' || data[9] == '/'));
}


static void
ngx_xmpp_sm_raw(ngx_xmpp_session_t *s, const char *xml, size_t len)
{
    (void) s->transport->send(s, (u_char *) xml, len);
}


/*
 * The session's end, after ngx_xmpp_sm_detach() took what it keeps:
 * the rest is freed.  Runs from the session's detach and, should the
 * pool go first, from its cleanup (which then runs before the
 * session's own cleanup: the queue is left for the detach to take).
 */
void
ngx_xmpp_sm_release(ngx_xmpp_session_t *s)
{
    ngx_xmpp_sm_t  *sm;

    sm = s->sm;

    if (sm == NULL) {
        return;
    }

    if (sm->resuming && sm->old_pid) {
        /* the client went before the state came: as if it failed */
        ngx_xmpp_sm_abandon(sm);
    }

    if (sm->wait.timer_set) {
        ngx_del_timer(&sm->wait);
    }

    ngx_xmpp_sm_queue_free(&sm->q);
    ngx_xmpp_sm_queue_free(&sm->held_old);
    ngx_xmpp_sm_queue_free(&sm->held_wait);
    ngx_xmpp_sm_queue_free(&sm->held_new);
}


static void
ngx_xmpp_sm_pool_cleanup(void *data)
{
    ngx_xmpp_sm_t  *sm = data;

    if (sm->session->node.key != 0) {
        return;
    }

    ngx_xmpp_sm_release(sm->session);
}


static ngx_xmpp_sm_t *
ngx_xmpp_sm_create(ngx_xmpp_session_t *s)
{
    ngx_pool_cleanup_t  *cln;
    ngx_xmpp_sm_t       *sm;

    sm = ngx_pcalloc(s->pool, sizeof(ngx_xmpp_sm_t));
    if (sm == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(s->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_xmpp_sm_pool_cleanup;
    cln->data = sm;

    sm->session = s;
    sm->wait.handler = ngx_xmpp_sm_wait_handler;
    sm->wait.data = sm;
    sm->wait.log = s->connection->log;

    s->sm = sm;

    return sm;
}


/* offered after authentication on transports with a stream to resume */
ngx_uint_t
ngx_xmpp_sm_offered(ngx_xmpp_session_t *s)
{
    return s->transport->name.len != sizeof("bosh") - 1
           || ngx_strncmp(s->transport->name.data, "bosh", 4) != 0;
}


/*
 * Every outgoing stanza of an enabled session: counted and kept until
 * acked.  Past conclave_sm_max_unacked the client is not acking, and
 * the stream ends with <policy-violation/> (the queue is then handled
 * as undeliverable, so nothing is lost).
 */
void
ngx_xmpp_sm_sent(ngx_xmpp_session_t *s, u_char *data, size_t len)
{
    ngx_xmpp_sm_t  *sm;

    sm = s->sm;

    if (sm == NULL || !sm->enabled || !ngx_xmpp_sm_stanza(data, len)) {
        return;
    }

    if (ngx_xmpp_sm_queue_add(&sm->q, data, len) != NGX_OK) {
        ngx_xmpp_session_error(s, "internal-server-error", NULL);
        return;
    }

    sm->h_out++;

    if (sm->q.n > s->conf->sm_max_unacked) {
        ngx_xmpp_session_error(s, "policy-violation",
                               "too many unacknowledged stanzas");
        return;
    }

    if (!sm->asked && sm->q.n >= NGX_XMPP_SM_ASK_EVERY) {
        sm->asked = 1;
        ngx_xmpp_sm_raw(s, "<r xmlns='" NGX_XMPP_NS_SM "'/>",
                        sizeof("<r xmlns='" NGX_XMPP_NS_SM "'/>") - 1);
    }
}


ngx_uint_t
ngx_xmpp_sm_enabled(ngx_xmpp_session_t *s)
{
    return s->sm && s->sm->enabled;
}


ngx_uint_t
ngx_xmpp_sm_resuming(ngx_xmpp_session_t *s)
{
    return s->sm && s->sm->resuming;
}


/* a stanza from the client was handled (XEP-0198 section 4) */
void
ngx_xmpp_sm_handled(ngx_xmpp_session_t *s)
{
    if (s->sm && s->sm->enabled) {
        s->sm->h_in++;
    }
}


static ngx_int_t
ngx_xmpp_sm_h(ngx_xmpp_node_t *n, uint32_t *h)
{
    ngx_str_t  *v;
    ngx_int_t   k;

    v = ngx_xmpp_node_attr(n, "h");
    if (v == NULL) {
        return NGX_ERROR;
    }

    k = ngx_atoi(v->data, v->len);
    if (k == NGX_ERROR || k > 0xffffffffLL) {
        return NGX_ERROR;
    }

    *h = (uint32_t) k;

    return NGX_OK;
}


/* <a h='N'/>: the client has everything up to N (mod 2^32) */
static void
ngx_xmpp_sm_ack(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n)
{
    uint32_t        h, k;
    ngx_xmpp_sm_t  *sm;

    sm = s->sm;

    if (ngx_xmpp_sm_h(n, &h) != NGX_OK) {
        ngx_xmpp_session_error(s, "invalid-xml", "bad <a/>");
        return;
    }

    k = h - sm->acked;

    if (k > sm->q.n) {
        /* XEP-0198 section 4: more than we sent */
        ngx_xmpp_session_error(s, "undefined-condition",
                               "handled-count-too-high");
        return;
    }

    while (k--) {
        ngx_xmpp_sm_queue_drop(&sm->q);
    }

    sm->acked = h;
    sm->asked = 0;
}


static void
ngx_xmpp_sm_enable(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n)
{
    u_char            buf[512], *p, rnd[NGX_XMPP_SM_SECRET_HEX / 2];
    ngx_str_t        *v;
    ngx_uint_t        i;
    ngx_xmpp_sm_t    *sm;
    ngx_xmpp_wbuf_t  *b;

    if (s->sm && s->sm->enabled) {
        ngx_xmpp_sm_failed(s, "unexpected-request");
        return;
    }

    sm = s->sm ? s->sm : ngx_xmpp_sm_create(s);
    if (sm == NULL) {
        ngx_xmpp_sm_failed(s, "internal-server-error");
        return;
    }

    sm->enabled = 1;

    v = ngx_xmpp_node_attr(n, "resume");
    sm->resume = v && ((v->len == 4 && ngx_strncmp(v->data, "true", 4) == 0)
                       || (v->len == 1 && v->data[0] == '1'));

    if (!sm->resume) {
        ngx_xmpp_sm_raw(s, "<enabled xmlns='" NGX_XMPP_NS_SM "'/>",
                        sizeof("<enabled xmlns='" NGX_XMPP_NS_SM "'/>") - 1);
        return;
    }

    for (i = 0; i < sizeof(rnd); i++) {
        rnd[i] = (u_char) ngx_random();
    }

    ngx_hex_dump(sm->secret, rnd, sizeof(rnd));

    /* the token: the secret, then the resource (the session's key) */
    p = ngx_snprintf(buf, sizeof(buf), "<enabled xmlns='" NGX_XMPP_NS_SM
                     "' resume='true' max='%M' id='",
                     s->conf->sm_resume_timeout / 1000);
    b = ngx_xmpp_wbuf_scratch(4096 + 6 * s->jid.resource.len);
    ngx_xmpp_wbuf_add(b, buf, p - buf);
    ngx_xmpp_wbuf_add(b, sm->secret, NGX_XMPP_SM_SECRET_HEX);
    ngx_xmpp_wbuf_escs(b, &s->jid.resource);
    ngx_xmpp_wbuf_lit(b, "'/>");

    if (!b->failed) {
        ngx_xmpp_sm_raw(s, (char *) b->start, b->last - b->start);
    }
}


static void
ngx_xmpp_sm_failed(ngx_xmpp_session_t *s, const char *cond)
{
    ngx_xmpp_wbuf_t  *b;

    b = ngx_xmpp_wbuf_scratch(1024);

    ngx_xmpp_wbuf_lit(b, "<failed xmlns='" NGX_XMPP_NS_SM "'><");
    ngx_xmpp_wbuf_str(b, cond);
    ngx_xmpp_wbuf_lit(b, " xmlns='" NGX_XMPP_NS_STANZAS "'/></failed>");

    ngx_xmpp_sm_raw(s, (char *) b->start, b->last - b->start);
}


/*
 * What the old session negotiated (ngx_xmpp_sm_keep()): kept[0] the
 * last available presence, kept[1] the caps ver, kept[2] its +notify
 * list.  The registry entry learns the flags in ngx_xmpp_sm_finish().
 */
static void
ngx_xmpp_sm_restore(ngx_xmpp_session_t *s, ngx_xmpp_sm_taken_t *t,
    ngx_str_t *kept)
{
    s->available = t->available ? 1 : 0;
    s->priority = t->priority;
    s->carbons = (t->flags & NGX_XMPP_SM_CARBONS) ? 1 : 0;
    s->csi_inactive = (t->flags & NGX_XMPP_SM_INACTIVE) ? 1 : 0;
    s->roster_interested = (t->flags & NGX_XMPP_SM_ROSTER) ? 1 : 0;

    if (kept[0].len && s->available) {
        s->last_presence.data = ngx_alloc(kept[0].len, s->connection->log);

        if (s->last_presence.data) {
            ngx_memcpy(s->last_presence.data, kept[0].data, kept[0].len);
            s->last_presence.len = kept[0].len;
        }
    }

    if (kept[1].len
        && ngx_xmpp_caps_put(s, &kept[1], &kept[2]) == NGX_ERROR)
    {
        ngx_log_error(NGX_LOG_ERR, s->connection->log, 0,
                      "xmpp: caps of the resumed session not restored");
    }
}


/*
 * The window of a resumption from another worker: from SM_TAKE until
 * SM_TAKEN (docs/routing.md "Resuming on another worker").  Whatever
 * is addressed to the session meanwhile is held, as the inter-worker
 * command it came as (or would have gone as), and replayed once the
 * state has arrived: after the unacked stanzas the old worker handed
 * over, in the order it came.  Held here:
 *   - what reaches the new session: the registry entry already names
 *     it (a stanza, a MUC copy, a PEP notification, a probe, a stored
 *     message to fetch, a blocklist or avatar change);
 *   - what this worker addresses to the old session after SM_TAKE
 *     went (ngx_xmpp_sm_hold_for()): sent to the old worker, it would
 *     come back forwarded after the state and overtake nothing, but
 *     the same sender's later stanzas, routed here directly, would
 *     overtake it.
 */
ngx_int_t
ngx_xmpp_sm_hold_ipc(ngx_xmpp_session_t *s, ngx_uint_t cmd, u_char *data,
    size_t len)
{
    u_char          tag;
    ngx_xmpp_sm_t  *sm;

    sm = s->sm;

    if (sm == NULL || !sm->resuming) {
        return NGX_DECLINED;
    }

    if (sm->held_new.n >= s->conf->sm_max_unacked) {
        /* the bound of the unacked queue, which it would join */
        ngx_log_error(NGX_LOG_WARN, s->connection->log, 0,
                      "xmpp: too much for a session being resumed, "
                      "inter-worker command %ui not held", cmd);
        return NGX_ERROR;
    }

    tag = (u_char) cmd;

    return ngx_xmpp_sm_queue_put(&sm->held_new, &tag, 1, data, len);
}


ngx_int_t
ngx_xmpp_sm_hold(ngx_xmpp_session_t *s, u_char *data, size_t len)
{
    return ngx_xmpp_sm_hold_ipc(s, NGX_XMPP_IPC_DELIVER, data, len);
}


/*
 * ngx_xmpp_ipc_send() asks first: NGX_OK when (pid, sid) is the old
 * session of a resumption waiting in this worker, and the new session
 * held what was for it.
 */
ngx_int_t
ngx_xmpp_sm_hold_for(ngx_pid_t pid, ngx_uint_t cmd, uint64_t sid,
    u_char *data, size_t len)
{
    ngx_queue_t    *q;
    ngx_xmpp_sm_t  *sm;

    if (ngx_xmpp_sm_nresuming == 0) {
        return NGX_DECLINED;
    }

    switch (cmd) {
    case NGX_XMPP_IPC_DELIVER:
    case NGX_XMPP_IPC_PEP_NOTIFY:
    case NGX_XMPP_IPC_PROBE:
    case NGX_XMPP_IPC_OFFLINE:
    case NGX_XMPP_IPC_BLOCKING:
    case NGX_XMPP_IPC_AVATAR:
        break;
    default:
        return NGX_DECLINED;
    }

    for (q = ngx_queue_head(&ngx_xmpp_sm_resumptions);
         q != ngx_queue_sentinel(&ngx_xmpp_sm_resumptions);
         q = ngx_queue_next(q))
    {
        sm = ngx_queue_data(q, ngx_xmpp_sm_t, link);

        if (sm->old_pid == pid && sm->old_sid == sid) {
            return ngx_xmpp_sm_hold_ipc(sm->session, cmd, data, len)
                   == NGX_OK ? NGX_OK : NGX_DECLINED;
        }
    }

    return NGX_DECLINED;
}


/*
 * Where full JID's session is now: the registry's entry, or the new
 * session of a resumption that waits here for that entry's state (the
 * registry names the old one until its worker hands it over).
 */
ngx_int_t
ngx_xmpp_sm_route_now(ngx_str_t *full, ngx_xmpp_route_t *rt)
{
    u_char            *slash;
    ngx_str_t          bare;
    ngx_uint_t         i, n;
    ngx_queue_t       *q;
    ngx_xmpp_sm_t     *sm;
    ngx_xmpp_conf_t   *xcf;
    ngx_xmpp_route_t  *routes;

    slash = ngx_strlchr(full->data, full->data + full->len, '/');
    if (slash == NULL) {
        return NGX_DECLINED;
    }

    bare.data = full->data;
    bare.len = slash - full->data;
    slash++;

    xcf = ngx_xmpp_cycle_conf((ngx_cycle_t *) ngx_cycle);
    if (xcf == NULL) {
        return NGX_DECLINED;
    }

    routes = ngx_xmpp_router_routes();
    n = ngx_xmpp_registry_lookup(xcf, &bare, routes, NGX_XMPP_ROUTE_MAX);

    for (i = 0; i < n; i++) {
        if (routes[i].resource_len == (size_t) (full->data + full->len
                                                - slash)
            && ngx_memcmp(routes[i].resource, slash,
                          routes[i].resource_len) == 0)
        {
            break;
        }
    }

    if (i == n) {
        return NGX_DECLINED;
    }

    *rt = routes[i];

    if (ngx_xmpp_sm_nresuming == 0) {
        return NGX_OK;
    }

    for (q = ngx_queue_head(&ngx_xmpp_sm_resumptions);
         q != ngx_queue_sentinel(&ngx_xmpp_sm_resumptions);
         q = ngx_queue_next(q))
    {
        sm = ngx_queue_data(q, ngx_xmpp_sm_t, link);

        if (sm->old_pid == rt->pid && sm->old_sid == rt->sid) {
            rt->pid = ngx_pid;
            rt->sid = sm->session->id;
            break;
        }
    }

    return NGX_OK;
}


static void
ngx_xmpp_sm_unlink(ngx_xmpp_sm_t *sm)
{
    if (sm->old_pid) {
        ngx_queue_remove(&sm->link);
        ngx_xmpp_sm_nresuming--;
        sm->old_pid = 0;
    }
}


/* a held command, now that the session is bound: as if it came now */
static void
ngx_xmpp_sm_replay(ngx_xmpp_session_t *s, u_char *data, size_t len)
{
    ngx_uint_t  cmd;

    cmd = data[0];
    data++;
    len--;

    switch (cmd) {

    case NGX_XMPP_IPC_DELIVER:
        if (s->node.key == 0) {
            /* the session ended meanwhile: as if routed to its id now */
            ngx_xmpp_router_deliver_ipc(s->conf, s->id, data, len);
            break;
        }

        /* XEP-0191 and XEP-0352 apply, as to any delivery */
        (void) ngx_xmpp_router_inbound(s, data, len);
        break;

    case NGX_XMPP_IPC_PEP_NOTIFY:
        ngx_xmpp_pep_ipc(s->id, data, len);
        break;

    case NGX_XMPP_IPC_PROBE:
        ngx_xmpp_presence_probe_local(s->id, data, len);
        break;

    case NGX_XMPP_IPC_OFFLINE:
        ngx_xmpp_offline_deliver_sid(s->id);
        break;

    case NGX_XMPP_IPC_BLOCKING:
        ngx_xmpp_blocking_ipc(s->id, data, len);
        break;

    default: /* NGX_XMPP_IPC_AVATAR */
        ngx_xmpp_avatar_ipc(s->id, data, len);
        break;
    }
}


/*
 * The resumption failed (SM_FAILED, no answer, the client left): the
 * old session did not move, so what was held for it goes where it
 * would have gone, to the old session (parked still, or ended: then
 * handled as for any ended session), and the rooms route to it again.
 */
static void
ngx_xmpp_sm_abandon(ngx_xmpp_sm_t *sm)
{
    u_char     *data;
    size_t      len;
    uint64_t    osid;
    ngx_pid_t   opid;

    opid = sm->old_pid;
    osid = sm->old_sid;

    sm->resuming = 0;
    ngx_xmpp_sm_unlink(sm);

    if (opid == 0) {
        return;
    }

    ngx_xmpp_muc_moved(ngx_pid, sm->session->id, NULL, opid, osid);

    while (ngx_xmpp_sm_queue_peek(&sm->held_wait, &data, &len) == NGX_OK) {
        (void) ngx_xmpp_ipc_send(opid, data[0], osid, data + 1, len - 1);
        ngx_xmpp_sm_queue_drop(&sm->held_wait);
    }

    while (ngx_xmpp_sm_queue_peek(&sm->held_new, &data, &len) == NGX_OK) {
        (void) ngx_xmpp_ipc_send(opid, data[0], osid, data + 1, len - 1);
        ngx_xmpp_sm_queue_drop(&sm->held_new);
    }

    ngx_xmpp_sm_queue_free(&sm->held_old);
    ngx_xmpp_sm_queue_free(&sm->held_wait);
    ngx_xmpp_sm_queue_free(&sm->held_new);
}


/*
 * <resumed/> (XEP-0198 section 5): the session takes the ghost's JID,
 * presence and counters; the stanzas the client did not get (those
 * after its h) are sent again, then what was routed here meanwhile.
 */
static void
ngx_xmpp_sm_finish(ngx_xmpp_session_t *s, ngx_xmpp_sm_taken_t *t,
    ngx_str_t *resource, ngx_str_t *kept, ngx_xmpp_sm_queue_t *old)
{
    u_char               *data;
    size_t                len;
    uint32_t              missing, skip;
    uint64_t              osid;
    ngx_pid_t             opid;
    ngx_uint_t            i;
    ngx_xmpp_sm_t        *sm;
    ngx_xmpp_jid_t        jid;
    ngx_xmpp_wbuf_t      *b;
    ngx_xmpp_sm_queue_t   q[3];

    sm = s->sm;

    if (sm->wait.timer_set) {
        ngx_del_timer(&sm->wait);
    }

    /* from here on what comes is not held: the replay below is last */
    ngx_xmpp_sm_unlink(sm);

    if (ngx_xmpp_jid_make(s->pool, &s->user, &s->conf->domain, resource,
                          &jid)
        != NGX_OK)
    {
        ngx_xmpp_session_finalize(s);
        return;
    }

    s->jid = jid;
    ngx_xmpp_sm_restore(s, t, kept);

    if (ngx_xmpp_audit_session_bound(s) != NGX_OK) {
        ngx_xmpp_session_finalize(s);
        return;
    }

    if (!t->moved) {
        /* the entry was gone: a new one, as bind would make */
        if (ngx_xmpp_registry_add(s, &opid, &osid) != NGX_OK) {
            ngx_xmpp_session_error(s, "resource-constraint", NULL);
            return;
        }

        if (opid) {
            ngx_xmpp_router_kick(opid, osid);
        }
    }

    s->bound = 1;
    s->state = NGX_XMPP_ST_SESSION;
    ngx_xmpp_metrics_session(s, 1);
    /* XEP-0191: the resumed session reads the blocklist again */
    ngx_xmpp_blocking_resume(s, t->flags & NGX_XMPP_SM_BLOCKLIST);

    if (s->timer.timer_set) {
        ngx_del_timer(&s->timer);
    }

    ngx_xmpp_registry_update(s);

    missing = t->h_out - sm->client_h;
    skip = (missing <= old->n) ? old->n - missing : 0;

    sm->enabled = 1;
    sm->resume = 1;
    sm->resuming = 0;
    sm->h_in = t->h_in;
    sm->h_out = t->h_out - (old->n - skip);
    sm->acked = sm->h_out;

    ngx_log_error(NGX_LOG_INFO, s->connection->log, 0,
                  "xmpp: resumed \"%V\", %ui stanzas sent again, %ui "
                  "held while the state came, %ui had waited for the "
                  "blocklist", &s->jid.full, (ngx_uint_t) (old->n - skip),
                  sm->held_new.n, sm->held_wait.n);

    b = ngx_xmpp_wbuf_scratch(4096 + 6 * resource->len);
    ngx_xmpp_wbuf_lit(b, "<resumed xmlns='" NGX_XMPP_NS_SM "' previd='");
    ngx_xmpp_wbuf_add(b, sm->secret, NGX_XMPP_SM_SECRET_HEX);
    ngx_xmpp_wbuf_escs(b, resource);
    b->last = ngx_sprintf(b->last, "' h='%uD'/>", t->h_in);
    ngx_xmpp_sm_raw(s, (char *) b->start, b->last - b->start);

    /*
     * The session can end inside these loops: a stream error when the
     * stanzas sent again overflow conclave_sm_max_unacked ends it at
     * once, and the end frees its queues (ngx_xmpp_sm_release()) and
     * parks it.  So the loops run on queues of their own, and what is
     * left after the end goes by the session's id, to its ghost
     * (ngx_xmpp_sm_deliver()): nothing is lost, nothing read freed.
     */
    q[0] = *old;
    q[1] = sm->held_wait;
    q[2] = sm->held_new;
    ngx_memzero(old, sizeof(ngx_xmpp_sm_queue_t));
    ngx_memzero(&sm->held_wait, sizeof(ngx_xmpp_sm_queue_t));
    ngx_memzero(&sm->held_new, sizeof(ngx_xmpp_sm_queue_t));

    while (ngx_xmpp_sm_queue_peek(&q[0], &data, &len) == NGX_OK) {
        if (skip) {
            skip--;

        } else if (s->node.key) {
            (void) ngx_xmpp_session_send(s, data, len);

        } else {
            ngx_xmpp_router_deliver_ipc(s->conf, s->id, data, len);
        }

        ngx_xmpp_sm_queue_drop(&q[0]);
    }

    /*
     * What waited for the old session's blocklist, then what was
     * routed here meanwhile, had no check yet: it passes the router's
     * last step, XEP-0191 3.5 (it waits for the list being read) and
     * XEP-0352 included, as any delivery does.
     */
    for (i = 1; i < 3; i++) {
        while (ngx_xmpp_sm_queue_peek(&q[i], &data, &len) == NGX_OK) {
            ngx_xmpp_sm_replay(s, data, len);
            ngx_xmpp_sm_queue_drop(&q[i]);
        }
    }

    for (i = 0; i < 3; i++) {
        ngx_xmpp_sm_queue_free(&q[i]);
    }

    if (s->node.key == 0) {
        return;
    }

    /* XEP-0191 pushes of changes that came while it resumed, after them */
    ngx_xmpp_blocking_replay(s);
}


/*
 * A ghost of this worker taken over by session s of this worker: the
 * same state as SM_TAKEN carries, so both paths restore alike.
 */
static void
ngx_xmpp_sm_resume_local(ngx_xmpp_session_t *s, ngx_xmpp_sm_ghost_t *g)
{
    u_char  *payload;
    size_t   size;

    payload = ngx_xmpp_sm_pack(g, ngx_pid, s->id, &size);
    if (payload == NULL) {
        s->sm->resuming = 0;
        ngx_xmpp_sm_failed(s, "internal-server-error");
        return;
    }

    ngx_xmpp_sm_give_waited(g, ngx_pid, s->id, &s->sm->held_wait);

    ngx_xmpp_sm_taken(s, payload, size, &g->q);
    ngx_free(payload);
    ngx_xmpp_sm_moved(g, ngx_pid, s->id);
}


/*
 * <resume previd='...' h='...'/> instead of a bind: find the session by
 * the authenticated user and the token's resource, in this worker or
 * through its owner (SM_TAKE).
 */
static void
ngx_xmpp_sm_resume(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n)
{
    u_char               *p;
    uint32_t              h;
    ngx_str_t            *previd, res;
    ngx_uint_t            i, nr;
    ngx_xmpp_sm_t        *sm;
    ngx_xmpp_jid_t        jid;
    ngx_xmpp_route_t     *routes;
    ngx_xmpp_sm_take_t   *take;
    ngx_xmpp_sm_ghost_t  *g;

    previd = ngx_xmpp_node_attr(n, "previd");

    if (previd == NULL || previd->len <= NGX_XMPP_SM_SECRET_HEX
        || ngx_xmpp_sm_h(n, &h) != NGX_OK
        || (s->sm && (s->sm->resuming || s->sm->enabled)))
    {
        ngx_xmpp_sm_failed(s, "bad-request");
        return;
    }

    res.data = previd->data + NGX_XMPP_SM_SECRET_HEX;
    res.len = previd->len - NGX_XMPP_SM_SECRET_HEX;

    if (!ngx_xmpp_jid_resource_valid(res.data, res.len)
        || ngx_xmpp_jid_make(s->pool, &s->user, &s->conf->domain, &res,
                             &jid)
           != NGX_OK)
    {
        ngx_xmpp_sm_failed(s, "item-not-found");
        return;
    }

    routes = ngx_xmpp_router_routes();
    nr = ngx_xmpp_registry_lookup(s->conf, &jid.bare, routes,
                                  NGX_XMPP_ROUTE_MAX);

    for (i = 0; i < nr; i++) {
        if (routes[i].resource_len == res.len
            && ngx_memcmp(routes[i].resource, res.data, res.len) == 0)
        {
            break;
        }
    }

    sm = s->sm ? s->sm : ngx_xmpp_sm_create(s);

    if (i == nr || sm == NULL) {
        ngx_xmpp_sm_failed(s, "item-not-found");
        return;
    }

    ngx_memcpy(sm->secret, previd->data, NGX_XMPP_SM_SECRET_HEX);
    sm->client_h = h;
    sm->resuming = 1;
    sm->jid = jid;

    if (routes[i].pid == ngx_pid) {
        g = ngx_xmpp_sm_take(routes[i].sid, sm->secret, &jid.bare);

        if (g == NULL) {
            sm->resuming = 0;
            ngx_xmpp_sm_failed(s, "item-not-found");
            return;
        }

        ngx_xmpp_sm_resume_local(s, g);
        return;
    }

    p = ngx_palloc(s->pool, sizeof(ngx_xmpp_sm_take_t) + jid.bare.len);
    if (p == NULL) {
        ngx_xmpp_session_finalize(s);
        return;
    }

    take = (ngx_xmpp_sm_take_t *) p;
    take->new_sid = s->id;
    take->h = h;
    ngx_memcpy(take->secret, sm->secret, NGX_XMPP_SM_SECRET_HEX);
    ngx_memcpy(p + sizeof(ngx_xmpp_sm_take_t), jid.bare.data, jid.bare.len);

    if (ngx_xmpp_ipc_send(routes[i].pid, NGX_XMPP_IPC_SM_TAKE,
                          routes[i].sid, p,
                          sizeof(ngx_xmpp_sm_take_t) + jid.bare.len)
        != NGX_OK)
    {
        sm->resuming = 0;
        ngx_xmpp_sm_failed(s, "item-not-found");
        return;
    }

    /*
     * The window opens: what this worker routes to the old session is
     * held from now on, and this worker's rooms send to the new one
     * (their copies are held too); the old worker's stanzas, its rooms'
     * included, come before its SM_TAKEN on the same channel.
     */
    if (ngx_xmpp_sm_nresuming++ == 0) {
        ngx_queue_init(&ngx_xmpp_sm_resumptions);
    }

    ngx_queue_insert_tail(&ngx_xmpp_sm_resumptions, &sm->link);
    sm->old_pid = routes[i].pid;
    sm->old_sid = routes[i].sid;
    sm->waits = 0;
    ngx_xmpp_muc_moved(sm->old_pid, sm->old_sid, &jid.full, ngx_pid, s->id);

    /* the owner answers at once; a timer covers a worker that died */
    ngx_add_timer(&sm->wait, NGX_XMPP_SM_WAIT);
}


/* the registry entry names this session: the old worker gave it */
static ngx_uint_t
ngx_xmpp_sm_given(ngx_xmpp_sm_t *sm)
{
    ngx_uint_t          i, n;
    ngx_xmpp_route_t   *routes;
    ngx_xmpp_jid_t     *jid;

    jid = &sm->jid;
    routes = ngx_xmpp_router_routes();
    n = ngx_xmpp_registry_lookup(sm->session->conf, &jid->bare, routes,
                                 NGX_XMPP_ROUTE_MAX);

    for (i = 0; i < n; i++) {
        if (routes[i].pid == ngx_pid && routes[i].sid == sm->session->id
            && routes[i].resource_len == jid->resource.len
            && ngx_memcmp(routes[i].resource, jid->resource.data,
                          jid->resource.len)
               == 0)
        {
            return 1;
        }
    }

    return 0;
}


static void
ngx_xmpp_sm_wait_handler(ngx_event_t *ev)
{
    ngx_xmpp_sm_t  *sm;

    sm = ev->data;

    if (!sm->resuming) {
        return;
    }

    if (++sm->waits < NGX_XMPP_SM_WAITS && ngx_xmpp_sm_given(sm)) {
        /* the owner gave it, its SM_TAKEN is on the way: wait for it */
        ngx_add_timer(&sm->wait, NGX_XMPP_SM_WAIT);
        return;
    }

    ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                  "xmpp: the session's worker did not hand it over");

    ngx_xmpp_sm_abandon(sm);
    ngx_xmpp_sm_failed(sm->session, "item-not-found");
}


/*
 * The new session's side of SM_TAKEN (or of a takeover in this worker):
 * the payload is checked against its length, part by part.
 */
void
ngx_xmpp_sm_taken(ngx_xmpp_session_t *s, u_char *data, size_t len,
    ngx_xmpp_sm_queue_t *old)
{
    u_char               *p, *end;
    uint16_t              l;
    ngx_str_t             res, kept[3];
    ngx_uint_t            i;
    ngx_xmpp_sm_taken_t   t;

    if (len < sizeof(ngx_xmpp_sm_taken_t)) {
        return;
    }

    ngx_memcpy(&t, data, sizeof(ngx_xmpp_sm_taken_t));
    p = data + sizeof(ngx_xmpp_sm_taken_t);
    end = data + len;

    if (t.res_len > end - p || t.ndirected > NGX_XMPP_DIRECTED_MAX) {
        return;
    }

    res.data = p;
    res.len = t.res_len;
    p += t.res_len;

    s->directed = ngx_palloc(s->pool,
                             NGX_XMPP_DIRECTED_MAX * sizeof(ngx_str_t));

    for (i = 0; s->directed && i < t.ndirected; i++) {
        if (end - p < (ssize_t) sizeof(uint16_t)) {
            break;
        }

        ngx_memcpy(&l, p, sizeof(uint16_t));
        p += sizeof(uint16_t);

        if (l > end - p) {
            break;
        }

        s->directed[i].data = ngx_alloc(l ? l : 1, s->connection->log);
        if (s->directed[i].data == NULL) {
            break;
        }

        ngx_memcpy(s->directed[i].data, p, l);
        s->directed[i].len = l;
        s->ndirected = i + 1;
        p += l;
    }

    ngx_memzero(kept, sizeof(kept));

    if (i == t.ndirected
        && (size_t) (end - p) == (size_t) t.presence_len + t.ver_len
                                 + t.notify_len)
    {
        kept[0].data = p;
        kept[0].len = t.presence_len;
        kept[1].data = p + t.presence_len;
        kept[1].len = t.ver_len;
        kept[2].data = kept[1].data + t.ver_len;
        kept[2].len = t.notify_len;

    } else {
        ngx_log_error(NGX_LOG_ERR, s->connection->log, 0,
                      "xmpp: the resumed session's state is incomplete");
    }

    ngx_xmpp_sm_finish(s, &t, &res, kept, old);
}


/* NGX_XMPP_IPC_SM_*: resumption across workers */
void
ngx_xmpp_sm_ipc(ngx_uint_t cmd, ngx_pid_t from, uint64_t sid, u_char *data,
    size_t len)
{
    ngx_xmpp_session_t  *s;

    if (cmd == NGX_XMPP_IPC_SM_TAKE) {
        ngx_xmpp_sm_give(from, sid, data, len);
        return;
    }

    if (cmd == NGX_XMPP_IPC_SM_MOVED) {
        ngx_xmpp_sm_moved_ipc(from, sid, data, len);
        return;
    }

    s = ngx_xmpp_session_find(sid);

    if (s == NULL || s->sm == NULL || !s->sm->resuming) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "xmpp: stream management message %ui for "
                      "session #%uL, which is not resuming", cmd, sid);
        return;
    }

    switch (cmd) {

    case NGX_XMPP_IPC_SM_STANZA:
        if (ngx_xmpp_sm_queue_add(&s->sm->held_old, data, len) != NGX_OK) {
            ngx_xmpp_session_error(s, "internal-server-error", NULL);
        }
        break;

    case NGX_XMPP_IPC_SM_WAITED:
        if (len < 2
            || ngx_xmpp_sm_queue_add(&s->sm->held_wait, data, len) != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ERR, s->connection->log, 0,
                          "xmpp: a stanza that waited for the blocklist "
                          "is lost");
        }
        break;

    case NGX_XMPP_IPC_SM_TAKEN:
        ngx_xmpp_sm_taken(s, data, len, &s->sm->held_old);
        break;

    default: /* NGX_XMPP_IPC_SM_FAILED */
        if (s->sm->wait.timer_set) {
            ngx_del_timer(&s->sm->wait);
        }

        ngx_xmpp_sm_abandon(s->sm);
        ngx_xmpp_sm_failed(s, "item-not-found");
        break;
    }
}


/*
 * Elements of urn:xmpp:sm:3.  <resume/> only before a bind, <enable/>
 * only after one (XEP-0198 sections 3 and 5); <r/> and <a/> once
 * enabled.
 */
void
ngx_xmpp_sm_element(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n)
{
    u_char  buf[64], *p;

    if (ngx_xmpp_sm_is(n, "resume")) {
        if (s->state != NGX_XMPP_ST_WAIT_BIND || !ngx_xmpp_sm_offered(s)) {
            ngx_xmpp_sm_failed(s, "unexpected-request");
            return;
        }

        ngx_xmpp_sm_resume(s, n);
        return;
    }

    if (s->state != NGX_XMPP_ST_SESSION || !ngx_xmpp_sm_offered(s)) {
        if (ngx_xmpp_sm_is(n, "enable")) {
            ngx_xmpp_sm_failed(s, "unexpected-request");
            return;
        }

        ngx_xmpp_session_error(s, "unsupported-stanza-type", NULL);
        return;
    }

    if (ngx_xmpp_sm_is(n, "enable")) {
        ngx_xmpp_sm_enable(s, n);
        return;
    }

    if (s->sm == NULL || !s->sm->enabled) {
        ngx_xmpp_session_error(s, "unsupported-stanza-type",
                               "stream management is not enabled");
        return;
    }

    if (ngx_xmpp_sm_is(n, "r")) {
        p = ngx_sprintf(buf, "<a xmlns='" NGX_XMPP_NS_SM "' h='%uD'/>",
                        s->sm->h_in);
        ngx_xmpp_sm_raw(s, (char *) buf, p - buf);
        return;
    }

    if (ngx_xmpp_sm_is(n, "a")) {
        ngx_xmpp_sm_ack(s, n);
        return;
    }

    ngx_xmpp_session_error(s, "unsupported-stanza-type", NULL);
}

