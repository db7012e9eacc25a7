
/*
 * Inter-worker delivery.  Each worker binds a unix datagram socket in
 * the abstract namespace, named after its pid, which the registry
 * already stores; a whole stanza fits in one datagram, so nothing of it
 * lives in shared memory.  Abstract sockets are reachable by any local
 * process, so every datagram carries the registry zone's random secret
 * and the receiver drops any without it.
 *
 * A full receiver queue (EAGAIN) does not lose the stanza: it waits in
 * a bounded FIFO of the sender, retried on a short timer.  ECONNREFUSED
 * means the worker is gone; the caller then treats the JID as offline.
 *
 * Batching: the first message to a worker in an event-loop turn goes at
 * once (so its errors reach the caller); the rest of that turn's
 * messages to the same worker are packed into one datagram sent when
 * the turn's posted events run.  The receiver's queue holds only
 * net.unix.max_dgram_qlen (10) datagrams, so one per stanza made busy
 * workers hit EAGAIN and the retry timer: 8,800 msg/s closed loop with
 * the server 22% busy.
 */


#include "ngx_xmpp.h"

#include <sys/un.h>
#include <openssl/crypto.h>


#define NGX_XMPP_IPC_BUF         (256 * 1024)
#define NGX_XMPP_IPC_QUEUE_MAX   (16 * 1024 * 1024)
#define NGX_XMPP_IPC_RETRY       5
#define NGX_XMPP_IPC_BATCH       512
#define NGX_XMPP_IPC_PACK        (32 * 1024)
#define NGX_XMPP_IPC_QPACK       (64 * 1024)    /* a queued datagram */
#define NGX_XMPP_IPC_PEERS       64

/* a datagram of records, each an ngx_xmpp_ipc_rec_t and its data */
#define NGX_XMPP_IPC_PACKED      0x7fff0001


typedef struct {
    u_char                 secret[16];
    uint32_t               cmd;
    uint32_t               len;
    uint64_t               sid;
    ngx_pid_t              from;
} ngx_xmpp_ipc_hdr_t;


typedef struct {
    uint32_t               cmd;
    uint32_t               len;
    uint64_t               sid;
} ngx_xmpp_ipc_rec_t;


/* this turn's messages to one worker after the first */
typedef struct {
    ngx_pid_t              pid;
    size_t                 used;
    u_char                *buf;          /* NGX_XMPP_IPC_PACK, kept */
} ngx_xmpp_ipc_pack_t;


typedef struct ngx_xmpp_ipc_msg_s  ngx_xmpp_ipc_msg_t;

struct ngx_xmpp_ipc_msg_s {
    ngx_xmpp_ipc_msg_t    *next;
    ngx_pid_t              pid;
    size_t                 cap;          /* room for data */
    ngx_xmpp_ipc_hdr_t     hdr;
    u_char                 data[1];
};


static void ngx_xmpp_ipc_read_handler(ngx_event_t *ev);
static void ngx_xmpp_ipc_retry_handler(ngx_event_t *ev);
static ngx_int_t ngx_xmpp_ipc_sendto(ngx_pid_t pid, ngx_xmpp_ipc_hdr_t *hdr,
    u_char *data, size_t len);
static ngx_int_t ngx_xmpp_ipc_queue(ngx_pid_t pid, ngx_xmpp_ipc_hdr_t *hdr,
    u_char *data, size_t len);
static void ngx_xmpp_ipc_flush_handler(ngx_event_t *ev);
static void ngx_xmpp_ipc_dispatch(ngx_event_t *ev, ngx_uint_t cmd,
    ngx_pid_t from, uint64_t sid, u_char *data, size_t len);
static void ngx_xmpp_ipc_unpack(ngx_event_t *ev, ngx_xmpp_ipc_hdr_t *hdr);


static ngx_connection_t    *ngx_xmpp_ipc_conn;
static ngx_xmpp_conf_t     *ngx_xmpp_ipc_conf;
static u_char              *ngx_xmpp_ipc_buf;
static ngx_xmpp_ipc_msg_t  *ngx_xmpp_ipc_head;
static ngx_xmpp_ipc_msg_t **ngx_xmpp_ipc_tail = &ngx_xmpp_ipc_head;
static ngx_xmpp_ipc_msg_t  *ngx_xmpp_ipc_last;
static size_t               ngx_xmpp_ipc_queued;
static ngx_event_t          ngx_xmpp_ipc_retry;
static ngx_event_t          ngx_xmpp_ipc_flush;
static ngx_xmpp_ipc_pack_t  ngx_xmpp_ipc_packs[NGX_XMPP_IPC_PEERS];
static ngx_uint_t           ngx_xmpp_ipc_npacks;


static socklen_t
ngx_xmpp_ipc_addr(struct sockaddr_un *sun, ngx_pid_t pid)
{
    u_char  *p;

    ngx_memzero(sun, sizeof(struct sockaddr_un));
    sun->sun_family = AF_UNIX;

    /* sun_path[0] == '\0': the abstract namespace, no file to clean up */
    p = ngx_sprintf((u_char *) sun->sun_path + 1, "conclave/%P", pid);

    return offsetof(struct sockaddr_un, sun_path)
           + (p - (u_char *) sun->sun_path);
}


ngx_int_t
ngx_xmpp_ipc_init_worker(ngx_cycle_t *cycle, ngx_xmpp_conf_t *xcf)
{
    int                  fd, size;
    socklen_t            len;
    ngx_connection_t    *c;
    struct sockaddr_un   sun;

    ngx_xmpp_ipc_conf = xcf;

    ngx_xmpp_ipc_buf = ngx_alloc(NGX_XMPP_IPC_BUF, cycle->log);
    if (ngx_xmpp_ipc_buf == NULL) {
        return NGX_ERROR;
    }

    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_socket_errno,
                      "xmpp: socket(AF_UNIX) failed");
        return NGX_ERROR;
    }

    len = ngx_xmpp_ipc_addr(&sun, ngx_pid);

    if (bind(fd, (struct sockaddr *) &sun, len) == -1) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_socket_errno,
                      "xmpp: bind() of the worker socket failed");
        close(fd);
        return NGX_ERROR;
    }

    /* room for bursts; the kernel caps it at net.core.[rw]mem_max */
    size = 4 * 1024 * 1024;
    (void) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(int));
    (void) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(int));

    c = ngx_get_connection(fd, cycle->log);
    if (c == NULL) {
        close(fd);
        return NGX_ERROR;
    }

    c->recv = ngx_recv;
    c->read->handler = ngx_xmpp_ipc_read_handler;
    c->read->log = cycle->log;
    c->data = NULL;

    ngx_xmpp_ipc_conn = c;

    ngx_xmpp_ipc_retry.data = c;
    ngx_xmpp_ipc_retry.handler = ngx_xmpp_ipc_retry_handler;
    ngx_xmpp_ipc_retry.log = cycle->log;
    ngx_xmpp_ipc_retry.cancelable = 1;

    ngx_xmpp_ipc_flush.data = c;
    ngx_xmpp_ipc_flush.handler = ngx_xmpp_ipc_flush_handler;
    ngx_xmpp_ipc_flush.log = cycle->log;

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


void
ngx_xmpp_ipc_exit_worker(ngx_cycle_t *cycle)
{
    ngx_uint_t           i;
    ngx_xmpp_ipc_msg_t  *m, *next;

    if (ngx_xmpp_ipc_conn) {
        /* what this turn packed still goes out */
        ngx_xmpp_ipc_flush_handler(&ngx_xmpp_ipc_flush);
    }

    if (ngx_xmpp_ipc_flush.posted) {
        ngx_delete_posted_event(&ngx_xmpp_ipc_flush);
    }

    for (i = 0; i < NGX_XMPP_IPC_PEERS; i++) {
        if (ngx_xmpp_ipc_packs[i].buf) {
            ngx_free(ngx_xmpp_ipc_packs[i].buf);
            ngx_xmpp_ipc_packs[i].buf = NULL;
        }
    }

    for (m = ngx_xmpp_ipc_head; m; m = next) {
        next = m->next;
        ngx_free(m);
    }

    ngx_xmpp_ipc_head = NULL;
    ngx_xmpp_ipc_tail = &ngx_xmpp_ipc_head;
    ngx_xmpp_ipc_last = NULL;

    if (ngx_xmpp_ipc_conn) {
        ngx_close_connection(ngx_xmpp_ipc_conn);
        ngx_xmpp_ipc_conn = NULL;
    }

    if (ngx_xmpp_ipc_buf) {
        ngx_free(ngx_xmpp_ipc_buf);
        ngx_xmpp_ipc_buf = NULL;
    }
}


static ngx_int_t
ngx_xmpp_ipc_sendto(ngx_pid_t pid, ngx_xmpp_ipc_hdr_t *hdr, u_char *data,
    size_t len)
{
    ssize_t             n;
    ngx_err_t           err;
    struct iovec        iov[2];
    struct msghdr       msg;
    struct sockaddr_un  sun;

    ngx_memzero(&msg, sizeof(struct msghdr));

    iov[0].iov_base = hdr;
    iov[0].iov_len = sizeof(ngx_xmpp_ipc_hdr_t);
    iov[1].iov_base = data;
    iov[1].iov_len = len;

    msg.msg_name = &sun;
    msg.msg_namelen = ngx_xmpp_ipc_addr(&sun, pid);
    msg.msg_iov = iov;
    msg.msg_iovlen = 2;

    n = sendmsg(ngx_xmpp_ipc_conn->fd, &msg, 0);

    if (n != -1) {
        return NGX_OK;
    }

    err = ngx_socket_errno;

    if (err == NGX_EAGAIN || err == ENOBUFS) {
        ngx_xmpp_metrics_ipc(0);
        return NGX_AGAIN;
    }

    if (err == ECONNREFUSED || err == ENOENT) {
        return NGX_DECLINED;
    }

    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, err,
                  "xmpp: sendmsg() to worker %P failed", pid);

    return NGX_ERROR;
}


static void
ngx_xmpp_ipc_hdr(ngx_xmpp_ipc_hdr_t *hdr, ngx_uint_t cmd, uint64_t sid,
    size_t len)
{
    ngx_memcpy(hdr->secret, ngx_xmpp_registry_secret(ngx_xmpp_ipc_conf),
               sizeof(hdr->secret));
    hdr->cmd = (uint32_t) cmd;
    hdr->len = (uint32_t) len;
    hdr->sid = sid;
    hdr->from = ngx_pid;
}


static ngx_xmpp_ipc_pack_t *
ngx_xmpp_ipc_pack(ngx_pid_t pid)
{
    ngx_uint_t  i;

    for (i = 0; i < ngx_xmpp_ipc_npacks; i++) {
        if (ngx_xmpp_ipc_packs[i].pid == pid) {
            return &ngx_xmpp_ipc_packs[i];
        }
    }

    return NULL;
}


/* sends (or queues behind what waits) one worker's packed records */
static void
ngx_xmpp_ipc_pack_send(ngx_xmpp_ipc_pack_t *pk)
{
    ngx_int_t           rc;
    ngx_xmpp_ipc_hdr_t  hdr;

    if (pk->used == 0) {
        return;
    }

    ngx_xmpp_ipc_hdr(&hdr, NGX_XMPP_IPC_PACKED, 0, pk->used);

    if (ngx_xmpp_ipc_head == NULL) {
        rc = ngx_xmpp_ipc_sendto(pk->pid, &hdr, pk->buf, pk->used);

        if (rc == NGX_DECLINED) {
            ngx_xmpp_registry_purge_pid(ngx_xmpp_ipc_conf, pk->pid);
        }

        if (rc != NGX_AGAIN) {
            pk->used = 0;
            return;
        }
    }

    (void) ngx_xmpp_ipc_queue(pk->pid, &hdr, pk->buf, pk->used);
    pk->used = 0;
}


static void
ngx_xmpp_ipc_flush_handler(ngx_event_t *ev)
{
    ngx_uint_t  i;

    for (i = 0; i < ngx_xmpp_ipc_npacks; i++) {
        ngx_xmpp_ipc_pack_send(&ngx_xmpp_ipc_packs[i]);
    }

    /* the next turn starts with direct sends again */
    ngx_xmpp_ipc_npacks = 0;
}


/* NGX_OK: packed; NGX_DECLINED: the caller sends it itself */
static ngx_int_t
ngx_xmpp_ipc_pack_add(ngx_pid_t pid, ngx_uint_t cmd, uint64_t sid,
    u_char *data, size_t len)
{
    ngx_xmpp_ipc_rec_t    rec;
    ngx_xmpp_ipc_pack_t  *pk;

    pk = ngx_xmpp_ipc_pack(pid);

    if (pk == NULL || sizeof(rec) + len > NGX_XMPP_IPC_PACK) {
        return NGX_DECLINED;
    }

    if (pk->buf == NULL) {
        pk->buf = ngx_alloc(NGX_XMPP_IPC_PACK, ngx_cycle->log);
        if (pk->buf == NULL) {
            return NGX_DECLINED;
        }
    }

    if (pk->used + sizeof(rec) + len > NGX_XMPP_IPC_PACK) {
        ngx_xmpp_ipc_pack_send(pk);
    }

    rec.cmd = (uint32_t) cmd;
    rec.len = (uint32_t) len;
    rec.sid = sid;

    ngx_memcpy(pk->buf + pk->used, &rec, sizeof(rec));

    if (len) {
        ngx_memcpy(pk->buf + pk->used + sizeof(rec), data, len);
    }

    pk->used += sizeof(rec) + len;

    return NGX_OK;
}


/*
 * NGX_OK: sent, packed or queued; NGX_DECLINED: no such worker (its
 * registry entries are purged); NGX_ERROR: the queue is full or the
 * send failed.
 */
ngx_int_t
ngx_xmpp_ipc_send(ngx_pid_t pid, ngx_uint_t cmd, uint64_t sid, u_char *data,
    size_t len)
{
    ngx_int_t             rc;
    ngx_xmpp_ipc_hdr_t    hdr;
    ngx_xmpp_ipc_pack_t  *pk;

    if (ngx_xmpp_ipc_conn == NULL || len > NGX_XMPP_IPC_BUF - sizeof(hdr)) {
        return NGX_ERROR;
    }

    /* XEP-0198: the session is being resumed in this worker */
    if (ngx_xmpp_sm_hold_for(pid, cmd, sid, data, len) == NGX_OK) {
        return NGX_OK;
    }

    /* a worker written to earlier in this turn: pack behind it */
    if (ngx_xmpp_ipc_pack_add(pid, cmd, sid, data, len) == NGX_OK) {
        return NGX_OK;
    }

    pk = ngx_xmpp_ipc_pack(pid);
    if (pk) {
        /* too big to pack: what was packed must go first */
        ngx_xmpp_ipc_pack_send(pk);
    }

    ngx_xmpp_ipc_hdr(&hdr, cmd, sid, len);

    /* keep the order: nothing overtakes what is already queued */
    if (ngx_xmpp_ipc_head == NULL) {
        rc = ngx_xmpp_ipc_sendto(pid, &hdr, data, len);

        if (rc == NGX_DECLINED) {
            ngx_xmpp_registry_purge_pid(ngx_xmpp_ipc_conf, pid);
        }

        if (rc == NGX_OK && pk == NULL
            && ngx_xmpp_ipc_npacks < NGX_XMPP_IPC_PEERS)
        {
            pk = &ngx_xmpp_ipc_packs[ngx_xmpp_ipc_npacks++];
            pk->pid = pid;
            pk->used = 0;

            if (!ngx_xmpp_ipc_flush.posted) {
                ngx_post_event(&ngx_xmpp_ipc_flush, &ngx_posted_events);
            }
        }

        if (rc != NGX_AGAIN) {
            return rc;
        }
    }

    return ngx_xmpp_ipc_queue(pid, &hdr, data, len);
}


/*
 * Queued datagrams are packed too: a record for the worker of the last
 * queued datagram joins it while it has room.  Without this a worker
 * whose receive queue filled up once got one datagram per stanza, ten
 * per retry, and fell further behind with every turn (MUC fan-out:
 * 700 room messages/s and "queue is full" with the server 30% busy).
 */
static ngx_int_t
ngx_xmpp_ipc_queue(ngx_pid_t pid, ngx_xmpp_ipc_hdr_t *hdr, u_char *data,
    size_t len)
{
    size_t               need, cap;
    u_char              *p;
    ngx_xmpp_ipc_rec_t   rec;
    ngx_xmpp_ipc_msg_t  *m;

    /* a packed datagram's bytes are records already */
    need = (hdr->cmd == NGX_XMPP_IPC_PACKED) ? len : sizeof(rec) + len;

    if (ngx_xmpp_ipc_queued + need > NGX_XMPP_IPC_QUEUE_MAX) {
        ngx_xmpp_metrics_ipc(1);
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "xmpp: inter-worker queue is full");
        return NGX_ERROR;
    }

    if (need > NGX_XMPP_IPC_BUF - sizeof(ngx_xmpp_ipc_hdr_t)) {
        /* a record too big for a packed datagram goes as it is */
        m = ngx_alloc(offsetof(ngx_xmpp_ipc_msg_t, data) + len,
                      ngx_cycle->log);
        if (m == NULL) {
            return NGX_ERROR;
        }

        m->next = NULL;
        m->pid = pid;
        m->cap = len;
        m->hdr = *hdr;
        ngx_memcpy(m->data, data, len);

        *ngx_xmpp_ipc_tail = m;
        ngx_xmpp_ipc_tail = &m->next;
        ngx_xmpp_ipc_last = m;
        ngx_xmpp_ipc_queued += len;

        goto timer;
    }

    m = ngx_xmpp_ipc_last;

    if (m == NULL || m->pid != pid || m->hdr.cmd != NGX_XMPP_IPC_PACKED
        || m->cap - m->hdr.len < need)
    {
        cap = ngx_max(need, NGX_XMPP_IPC_QPACK);

        m = ngx_alloc(offsetof(ngx_xmpp_ipc_msg_t, data) + cap,
                      ngx_cycle->log);
        if (m == NULL) {
            return NGX_ERROR;
        }

        m->next = NULL;
        m->pid = pid;
        m->cap = cap;
        m->hdr = *hdr;
        m->hdr.cmd = NGX_XMPP_IPC_PACKED;
        m->hdr.len = 0;
        m->hdr.sid = 0;

        *ngx_xmpp_ipc_tail = m;
        ngx_xmpp_ipc_tail = &m->next;
        ngx_xmpp_ipc_last = m;
    }

    p = m->data + m->hdr.len;

    if (hdr->cmd != NGX_XMPP_IPC_PACKED) {
        rec.cmd = hdr->cmd;
        rec.len = (uint32_t) len;
        rec.sid = hdr->sid;
        p = ngx_cpymem(p, &rec, sizeof(rec));
    }

    if (len) {
        ngx_memcpy(p, data, len);
    }

    m->hdr.len += (uint32_t) need;
    ngx_xmpp_ipc_queued += need;

timer:

    if (!ngx_xmpp_ipc_retry.timer_set) {
        ngx_add_timer(&ngx_xmpp_ipc_retry, NGX_XMPP_IPC_RETRY);
    }

    return NGX_OK;
}


static void
ngx_xmpp_ipc_retry_handler(ngx_event_t *ev)
{
    ngx_int_t            rc;
    ngx_xmpp_ipc_msg_t  *m;

    while (ngx_xmpp_ipc_head) {
        m = ngx_xmpp_ipc_head;

        rc = ngx_xmpp_ipc_sendto(m->pid, &m->hdr, m->data, m->hdr.len);

        if (rc == NGX_AGAIN) {
            ngx_add_timer(ev, NGX_XMPP_IPC_RETRY);
            return;
        }

        if (rc == NGX_DECLINED) {
            ngx_xmpp_registry_purge_pid(ngx_xmpp_ipc_conf, m->pid);
        }

        ngx_xmpp_ipc_head = m->next;
        if (ngx_xmpp_ipc_head == NULL) {
            ngx_xmpp_ipc_tail = &ngx_xmpp_ipc_head;
            ngx_xmpp_ipc_last = NULL;
        }

        ngx_xmpp_ipc_queued -= m->hdr.len;
        ngx_free(m);
    }
}


static void
ngx_xmpp_ipc_dispatch(ngx_event_t *ev, ngx_uint_t cmd, ngx_pid_t from,
    uint64_t sid, u_char *data, size_t len)
{
    switch (cmd) {

    case NGX_XMPP_IPC_DELIVER:
        ngx_xmpp_router_deliver_ipc(ngx_xmpp_ipc_conf, sid, data, len);
        break;

    case NGX_XMPP_IPC_FAN:
        ngx_xmpp_router_fan_ipc(ngx_xmpp_ipc_conf, data, len);
        break;

    case NGX_XMPP_IPC_KICK:
        ngx_xmpp_router_kick_local(sid);
        break;

    case NGX_XMPP_IPC_ADMIN_KICK:
        ngx_xmpp_admin_kick_local(sid);
        break;

    case NGX_XMPP_IPC_PROBE:
        ngx_xmpp_presence_probe_local(sid, data, len);
        break;

    case NGX_XMPP_IPC_OFFLINE:
        ngx_xmpp_offline_deliver_sid(sid);
        break;

    case NGX_XMPP_IPC_PEP_NOTIFY:
        ngx_xmpp_pep_ipc(sid, data, len);
        break;

    case NGX_XMPP_IPC_BOSH_REQ:
    case NGX_XMPP_IPC_BOSH_RESP:
        ngx_xmpp_bosh_ipc(cmd, from, sid, data, len);
        break;

    case NGX_XMPP_IPC_MUC:
        ngx_xmpp_muc_ipc(from, sid, data, len);
        break;

    case NGX_XMPP_IPC_BLOCKING:
        ngx_xmpp_blocking_ipc(sid, data, len);
        break;

    case NGX_XMPP_IPC_BLOCKING_SYNC:
    case NGX_XMPP_IPC_BLOCKING_SYNCED:
        ngx_xmpp_blockpres_ipc(cmd, from, sid);
        break;

    case NGX_XMPP_IPC_AVATAR:
        ngx_xmpp_avatar_ipc(sid, data, len);
        break;

    case NGX_XMPP_IPC_SM_TAKE:
    case NGX_XMPP_IPC_SM_STANZA:
    case NGX_XMPP_IPC_SM_TAKEN:
    case NGX_XMPP_IPC_SM_FAILED:
    case NGX_XMPP_IPC_SM_MOVED:
    case NGX_XMPP_IPC_SM_WAITED:
        ngx_xmpp_sm_ipc(cmd, from, sid, data, len);
        break;

    default:
        ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                      "xmpp: unknown inter-worker command %ui", cmd);
        break;
    }
}


/* a packed datagram: its records in order, each bounds-checked */
static void
ngx_xmpp_ipc_unpack(ngx_event_t *ev, ngx_xmpp_ipc_hdr_t *hdr)
{
    u_char              *p, *end;
    ngx_xmpp_ipc_rec_t   rec;

    p = (u_char *) (hdr + 1);
    end = p + hdr->len;

    while (end - p >= (ssize_t) sizeof(rec)) {
        ngx_memcpy(&rec, p, sizeof(rec));
        p += sizeof(rec);

        if (rec.len > (size_t) (end - p) || rec.cmd == NGX_XMPP_IPC_PACKED) {
            ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                          "xmpp: malformed packed inter-worker datagram");
            return;
        }

        ngx_xmpp_ipc_dispatch(ev, rec.cmd, hdr->from, rec.sid, p, rec.len);
        p += rec.len;
    }
}


static void
ngx_xmpp_ipc_read_handler(ngx_event_t *ev)
{
    ssize_t              n;
    ngx_err_t            err;
    ngx_uint_t           i;
    ngx_connection_t    *c;
    ngx_xmpp_ipc_hdr_t  *hdr;

    c = ev->data;

    /* a batch of datagrams often holds several stanzas for a session */
    ngx_xmpp_session_cork();

    for (i = 0; i < NGX_XMPP_IPC_BATCH; i++) {
        n = recv(c->fd, ngx_xmpp_ipc_buf, NGX_XMPP_IPC_BUF, 0);

        if (n == -1) {
            err = ngx_socket_errno;

            /* after the errno: the sends of uncork() change it */
            ngx_xmpp_session_uncork();

            if (err != NGX_EAGAIN) {
                ngx_log_error(NGX_LOG_ALERT, ev->log, err,
                              "xmpp: recv() on the worker socket failed");
            }

            ev->ready = 0;

            if (ngx_handle_read_event(ev, 0) != NGX_OK) {
                ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                              "xmpp: cannot re-arm the worker socket");
            }

            return;
        }

        hdr = (ngx_xmpp_ipc_hdr_t *) ngx_xmpp_ipc_buf;

        if ((size_t) n < sizeof(ngx_xmpp_ipc_hdr_t)
            || CRYPTO_memcmp(hdr->secret,
                             ngx_xmpp_registry_secret(ngx_xmpp_ipc_conf),
                             sizeof(hdr->secret)) != 0
            || hdr->len != n - sizeof(ngx_xmpp_ipc_hdr_t))
        {
            ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                          "xmpp: dropped a foreign datagram on the "
                          "worker socket");
            continue;
        }

        if (hdr->cmd == NGX_XMPP_IPC_PACKED) {
            ngx_xmpp_ipc_unpack(ev, hdr);
            continue;
        }

        ngx_xmpp_ipc_dispatch(ev, hdr->cmd, hdr->from, hdr->sid,
                              (u_char *) (hdr + 1), hdr->len);
    }

    ngx_xmpp_session_uncork();

    /* a long burst: let other connections run, then continue */
    ngx_post_event(ev, &ngx_posted_events);
}
