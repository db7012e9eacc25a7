
/*
 * What ngx_xmpp_sm.c (counting, the resumption handshake) and
 * ngx_xmpp_smpark.c (parked sessions, the hand-over between workers,
 * unacked stanzas nobody resumed) share.
 */


#ifndef _NGX_XMPP_SM_H_INCLUDED_
#define _NGX_XMPP_SM_H_INCLUDED_


#include "ngx_xmpp.h"


#define NGX_XMPP_NS_SM           "urn:xmpp:sm:3"
#define NGX_XMPP_SM_SECRET_HEX   32
#define NGX_XMPP_SM_ASK_EVERY    5          /* unacked stanzas per <r/> */
#define NGX_XMPP_SM_WAIT         5000       /* ms for the old worker */
#define NGX_XMPP_SM_WAITS        6          /* waits while the entry moved */
#define NGX_XMPP_SM_JID_MAX      (3 * NGX_XMPP_JID_PART_MAX + 2)

/* SM_TAKEN fits one inter-worker datagram (256 KiB) */
#define NGX_XMPP_SM_TAKEN_MAX    (224 * 1024)

/* ngx_xmpp_sm_taken_t.flags: what the client negotiated */
#define NGX_XMPP_SM_CARBONS      0x01       /* XEP-0280 enabled */
#define NGX_XMPP_SM_INACTIVE     0x02       /* XEP-0352 <inactive/> */
#define NGX_XMPP_SM_ROSTER       0x04       /* RFC 6121 2.1.6 interested */
#define NGX_XMPP_SM_BLOCKLIST    0x08       /* XEP-0191 3.2 requested */


/* stanzas as [uint32 length][bytes], oldest first */
typedef struct {
    u_char                *buf;
    size_t                 head;
    size_t                 tail;
    size_t                 size;
    ngx_uint_t             n;
} ngx_xmpp_sm_queue_t;


struct ngx_xmpp_sm_s {
    uint32_t               h_in;
    uint32_t               h_out;
    uint32_t               acked;
    ngx_xmpp_sm_queue_t    q;
    u_char                 secret[NGX_XMPP_SM_SECRET_HEX];

    /* a resumption in progress (before <resumed/>) */
    uint32_t               client_h;
    ngx_xmpp_sm_queue_t    held_old;     /* SM_STANZA from the owner */
    ngx_xmpp_sm_queue_t    held_wait;    /* [u8 IPC cmd][data]: waited
                                            for the old blocklist */
    ngx_xmpp_sm_queue_t    held_new;     /* [u8 IPC cmd][data] meanwhile */
    ngx_event_t            wait;
    ngx_xmpp_session_t    *session;
    ngx_queue_t            link;         /* ngx_xmpp_sm_resumptions */
    ngx_xmpp_jid_t         jid;          /* the session resumed */
    ngx_pid_t              old_pid;      /* its owner, asked by SM_TAKE */
    uint64_t               old_sid;
    ngx_uint_t             waits;

    unsigned               enabled:1;
    unsigned               resume:1;
    unsigned               asked:1;
    unsigned               resuming:1;
};


/* a detached session: parked for resumption, or ending */
typedef struct {
    ngx_rbtree_node_t      node;         /* key: the session id */
    ngx_xmpp_session_t     ghost;        /* id, conf, pool, jid, presence */
    ngx_connection_t       conn;         /* only its log, for callees */
    uint32_t               h_in;
    uint32_t               h_out;
    ngx_xmpp_sm_queue_t    q;
    u_char                 secret[NGX_XMPP_SM_SECRET_HEX];
    ngx_event_t            ev;
    ngx_pid_t              moved_pid;
    uint64_t               moved_sid;
    unsigned               parked:1;     /* in the tree, registry kept */
    unsigned               moved:1;      /* taken by another session */
    unsigned               blocklist:1;  /* NGX_XMPP_SM_BLOCKLIST */
} ngx_xmpp_sm_ghost_t;


/* SM_MOVED payload: where the session (the header's sid) is now */
typedef struct {
    uint64_t               sid;
    ngx_pid_t              pid;
} ngx_xmpp_sm_moved_t;


/* SM_TAKE payload; the bare JID follows */
typedef struct {
    uint64_t               new_sid;
    uint32_t               h;
    u_char                 secret[NGX_XMPP_SM_SECRET_HEX];
} ngx_xmpp_sm_take_t;


/*
 * SM_TAKEN payload, also what a takeover in the same worker restores
 * from: the resource, [u16 len][JID] per directed presence, the last
 * available presence, the caps ver and its +notify list (docs/
 * routing.md "What a resumed session keeps").
 */
typedef struct {
    uint32_t               h_in;
    uint32_t               h_out;
    int32_t                priority;
    uint16_t               available;
    uint16_t               ndirected;
    uint16_t               res_len;
    uint16_t               moved;
    uint32_t               presence_len;
    uint16_t               ver_len;
    uint16_t               notify_len;
    uint32_t               flags;        /* NGX_XMPP_SM_CARBONS, ... */
} ngx_xmpp_sm_taken_t;


ngx_int_t ngx_xmpp_sm_queue_add(ngx_xmpp_sm_queue_t *q, u_char *data,
    size_t len);
ngx_int_t ngx_xmpp_sm_queue_peek(ngx_xmpp_sm_queue_t *q, u_char **data,
    size_t *len);
void ngx_xmpp_sm_queue_drop(ngx_xmpp_sm_queue_t *q);
void ngx_xmpp_sm_queue_free(ngx_xmpp_sm_queue_t *q);
ngx_uint_t ngx_xmpp_sm_stanza(u_char *data, size_t len);

/* ngx_xmpp_smpark.c */
ngx_xmpp_sm_ghost_t *ngx_xmpp_sm_take(uint64_t sid, u_char *secret,
    ngx_str_t *bare);
void ngx_xmpp_sm_moved(ngx_xmpp_sm_ghost_t *g, ngx_pid_t pid, uint64_t sid);
void ngx_xmpp_sm_give_waited(ngx_xmpp_sm_ghost_t *g, ngx_pid_t pid,
    uint64_t sid, ngx_xmpp_sm_queue_t *local);
void ngx_xmpp_sm_give(ngx_pid_t from, uint64_t sid, u_char *data,
    size_t len);
void ngx_xmpp_sm_moved_ipc(ngx_pid_t from, uint64_t sid, u_char *data,
    size_t len);
ngx_int_t ngx_xmpp_sm_route_now(ngx_str_t *full, ngx_xmpp_route_t *rt);
u_char *ngx_xmpp_sm_pack(ngx_xmpp_sm_ghost_t *g, ngx_pid_t pid,
    uint64_t sid, size_t *size);

/* ngx_xmpp_sm.c */
ngx_int_t ngx_xmpp_sm_queue_put(ngx_xmpp_sm_queue_t *q, u_char *pre,
    size_t plen, u_char *data, size_t len);
void ngx_xmpp_sm_taken(ngx_xmpp_session_t *s, u_char *data, size_t len,
    ngx_xmpp_sm_queue_t *old);


#endif /* _NGX_XMPP_SM_H_INCLUDED_ */
