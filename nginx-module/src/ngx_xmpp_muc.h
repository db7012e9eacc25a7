
/*
 * Group chat (XEP-0045): what ngx_xmpp_muc.c (rooms, occupants, fan-out),
 * ngx_xmpp_mucadmin.c (forms, affiliations, discovery) and
 * ngx_xmpp_mucdb.c (persistence) share.  Only the worker that owns a
 * room touches its structures (docs/muc.md "One owner per room").
 */


#ifndef _NGX_XMPP_MUC_H_INCLUDED_
#define _NGX_XMPP_MUC_H_INCLUDED_


#include "ngx_xmpp.h"

#include <libxml/tree.h>
#include <jansson.h>


#define NGX_XMPP_NS_MUC        "http://jabber.org/protocol/muc"
#define NGX_XMPP_NS_MUC_USER   "http://jabber.org/protocol/muc#user"
#define NGX_XMPP_NS_MUC_ADMIN  "http://jabber.org/protocol/muc#admin"
#define NGX_XMPP_NS_MUC_OWNER  "http://jabber.org/protocol/muc#owner"
#define NGX_XMPP_NS_MUC_CONFIG "http://jabber.org/protocol/muc#roomconfig"
#define NGX_XMPP_NS_XDATA      "jabber:x:data"
#define NGX_XMPP_NS_CONFERENCE "jabber:x:conference"
#define NGX_XMPP_NS_DELAY      "urn:xmpp:delay"

#define NGX_XMPP_MUC_NICK_MAX      256
#define NGX_XMPP_MUC_FIELD_MAX     1024
#define NGX_XMPP_MUC_AFFILS_MAX    4096
#define NGX_XMPP_MUC_WAITING_MAX   1024   /* stanzas while a room loads */
#define NGX_XMPP_MUC_WAITING_SIZE  (4 * 1024 * 1024)     /* their bytes */


/* XEP-0045 section 5.2: ordered by privilege */
#define NGX_XMPP_MUC_OUTCAST       0
#define NGX_XMPP_MUC_NOAFFIL       1
#define NGX_XMPP_MUC_MEMBER        2
#define NGX_XMPP_MUC_ADMIN         3
#define NGX_XMPP_MUC_OWNER         4

/* XEP-0045 section 5.1 */
#define NGX_XMPP_MUC_ROLE_NONE         0
#define NGX_XMPP_MUC_ROLE_VISITOR      1
#define NGX_XMPP_MUC_ROLE_PARTICIPANT  2
#define NGX_XMPP_MUC_ROLE_MODERATOR    3

/* what a job does when its record is durable */
#define NGX_XMPP_MUC_JOB_MESSAGE   1    /* groupchat to every occupant */
#define NGX_XMPP_MUC_JOB_JOIN      2    /* room state to the joiner, its
                                           presence to the others */
#define NGX_XMPP_MUC_JOB_PRESENCE  3    /* an occupant's presence */
#define NGX_XMPP_MUC_JOB_LEAVE     4    /* unavailable, then removal */
#define NGX_XMPP_MUC_JOB_UNICAST   5    /* one stanza to one session */
#define NGX_XMPP_MUC_JOB_ROUTE     6    /* one stanza to a user's JID */

#define NGX_XMPP_MUC_ROOM_LOADING  0
#define NGX_XMPP_MUC_ROOM_ABSENT   1    /* not in MariaDB, not created */
#define NGX_XMPP_MUC_ROOM_READY    2


typedef struct ngx_xmpp_muc_room_s  ngx_xmpp_muc_room_t;
typedef struct ngx_xmpp_muc_occ_s   ngx_xmpp_muc_occ_t;


/* the sender of a stanza, as its worker described it */
typedef struct {
    ngx_pid_t              pid;
    uint64_t               sid;
    ngx_str_t              audit_sid;
    ngx_str_t              ip;
    ngx_str_t              transport;
    ngx_xmpp_jid_t         jid;           /* real full JID */
} ngx_xmpp_muc_actor_t;


/* one stanza for a room, parsed on the owner */
typedef struct {
    ngx_pool_t            *pool;
    xmlDocPtr              doc;
    xmlNodePtr             root;
    ngx_xmpp_muc_actor_t   actor;
    ngx_xmpp_jid_t         to;
    ngx_str_t              type;
    ngx_str_t              id;
    ngx_xmpp_muc_room_t   *room;
} ngx_xmpp_muc_req_t;


typedef struct {
    ngx_str_t              name;
    ngx_str_t              desc;
    ngx_str_t              password;
    ngx_uint_t             max_users;
    unsigned               persistent:1;
    unsigned               members_only:1;
    unsigned               semi_anonymous:1;   /* whois: moderators */
    unsigned               moderated:1;
    unsigned               public:1;
    unsigned               change_subject:1;
    unsigned               allow_invites:1;
} ngx_xmpp_muc_config_t;


typedef struct {
    ngx_str_t              jid;           /* bare, on the heap */
    ngx_uint_t             affiliation;
} ngx_xmpp_muc_affil_t;


struct ngx_xmpp_muc_occ_s {
    ngx_queue_t            queue;
    ngx_str_t              nick;
    ngx_str_t              jid;           /* real full JID */
    ngx_str_t              bare;
    ngx_str_t              status;        /* <show/>, <status/>... */
    ngx_pid_t              pid;
    uint64_t               sid;
    ngx_uint_t             role;
    ngx_uint_t             affiliation;
    uint64_t               joined;        /* the event of its join */
    unsigned               leaving:1;
    unsigned               ghost:1;       /* delivery failed: gone */
};


typedef struct {
    ngx_queue_t            queue;
    uint64_t               seq;           /* the room's event number */
    ngx_uint_t             type;
    ngx_xmpp_muc_occ_t    *occ;
    ngx_pid_t              pid;           /* UNICAST */
    uint64_t               sid;
    ngx_uint_t             code;          /* LEAVE: 307 kick, 301 ban... */
    unsigned               recorded:1;    /* waits for its record */
    unsigned               failed:1;      /* the record never became
                                             durable: not delivered */
    size_t                 len;
    u_char                 data[1];
} ngx_xmpp_muc_job_t;


typedef struct {
    int64_t                ts;            /* microseconds */
    size_t                 len;
    u_char                 data[1];       /* <message ...>...</message> */
} ngx_xmpp_muc_hist_t;


struct ngx_xmpp_muc_room_s {
    ngx_rbtree_node_t      node;          /* key: crc32 of jid */
    ngx_str_t              jid;           /* bare, on the heap */
    ngx_uint_t             state;
    ngx_xmpp_muc_config_t  conf;
    ngx_str_t              subject;
    ngx_str_t              subject_from;  /* room/nick */

    ngx_queue_t            occupants;
    ngx_uint_t             noccupants;    /* without leaving ones */

    ngx_xmpp_muc_affil_t  *affils;
    ngx_uint_t             naffils;
    ngx_uint_t             affils_cap;

    ngx_queue_t            jobs;          /* waiting for their records */
    ngx_uint_t             njobs;
    uint64_t               events;

    ngx_xmpp_muc_hist_t  **history;       /* ring of conclave_muc_history */
    ngx_uint_t             hist_head;
    ngx_uint_t             nhist;

    /* XEP-0045 does not bound a room's rate; a token bucket does */
    ngx_uint_t             tokens;
    ngx_msec_t             refilled;

    /* stanzas that arrived while the room loads from MariaDB */
    ngx_queue_t            waiting;
    ngx_uint_t             nwaiting;
    size_t                 waiting_size;

    uint64_t               durable;       /* jobs up to here may run */
    unsigned               releasing:1;
    unsigned               ghosts:1;

    ngx_xmpp_db_req_t     *save;          /* a save in flight */
    ngx_event_t            save_retry;    /* after a failed save */
    unsigned               dirty:1;       /* saved again when it ends */
    unsigned               held:1;        /* kept while waiters run */
    unsigned               destroyed:1;
};


/* ngx_xmpp_muc.c */
extern ngx_xmpp_conf_t  *ngx_xmpp_muc_conf;

ngx_rbtree_t *ngx_xmpp_muc_tree(void);
ngx_xmpp_muc_room_t *ngx_xmpp_muc_room_find(ngx_str_t *jid);
ngx_xmpp_muc_occ_t *ngx_xmpp_muc_occ_by_jid(ngx_xmpp_muc_room_t *room,
    ngx_str_t *full);
ngx_xmpp_muc_occ_t *ngx_xmpp_muc_occ_by_nick(ngx_xmpp_muc_room_t *room,
    ngx_str_t *nick);
ngx_uint_t ngx_xmpp_muc_affiliation(ngx_xmpp_muc_room_t *room,
    ngx_str_t *bare);
ngx_int_t ngx_xmpp_muc_set_affiliation(ngx_xmpp_muc_room_t *room,
    ngx_str_t *bare, ngx_uint_t affiliation);
ngx_uint_t ngx_xmpp_muc_default_role(ngx_xmpp_muc_room_t *room,
    ngx_uint_t affiliation);
const char *ngx_xmpp_muc_affil_name(ngx_uint_t a);
const char *ngx_xmpp_muc_role_name(ngx_uint_t r);
ngx_int_t ngx_xmpp_muc_affil_parse(ngx_str_t *s);
ngx_int_t ngx_xmpp_muc_role_parse(ngx_str_t *s);

void ngx_xmpp_muc_error(ngx_xmpp_muc_req_t *rq, const char *type,
    const char *condition);
void ngx_xmpp_muc_to_actor(ngx_xmpp_muc_req_t *rq, ngx_xmpp_wbuf_t *b);
ngx_int_t ngx_xmpp_muc_prop(ngx_pool_t *pool, xmlNodePtr n,
    const char *name, ngx_str_t *out);
ngx_int_t ngx_xmpp_muc_content(ngx_pool_t *pool, xmlNodePtr n,
    ngx_str_t *out);
xmlNodePtr ngx_xmpp_muc_child(xmlNodePtr n, const char *name,
    const char *ns);
ngx_int_t ngx_xmpp_muc_is(xmlNodePtr n, const char *name, const char *ns);
ngx_xmpp_wbuf_t *ngx_xmpp_muc_buf(void);

json_t *ngx_xmpp_muc_record(ngx_xmpp_muc_room_t *room,
    ngx_xmpp_muc_actor_t *actor, const char *event);
ngx_int_t ngx_xmpp_muc_record_str(json_t *rec, const char *key,
    ngx_str_t *v);
ngx_int_t ngx_xmpp_muc_commit(ngx_xmpp_muc_room_t *room, json_t *rec,
    ngx_xmpp_muc_job_t *job, ngx_log_t *log);
ngx_xmpp_muc_job_t *ngx_xmpp_muc_job(ngx_uint_t type, u_char *data,
    size_t len);
ngx_int_t ngx_xmpp_muc_unicast(ngx_xmpp_muc_room_t *room, ngx_pid_t pid,
    uint64_t sid, ngx_xmpp_wbuf_t *b);
void ngx_xmpp_muc_remove(ngx_xmpp_muc_req_t *rq, ngx_xmpp_muc_occ_t *o,
    ngx_uint_t code, ngx_str_t *reason, const char *why);
void ngx_xmpp_muc_role_changed(ngx_xmpp_muc_req_t *rq,
    ngx_xmpp_muc_occ_t *o);
void ngx_xmpp_muc_room_loaded(ngx_xmpp_muc_room_t *room, ngx_uint_t ok);
void ngx_xmpp_muc_result(ngx_xmpp_muc_req_t *rq, ngx_xmpp_wbuf_t *payload);
int64_t ngx_xmpp_muc_parse_stamp(ngx_str_t *v);
ngx_int_t ngx_xmpp_muc_set_subject(ngx_xmpp_muc_room_t *room,
    ngx_str_t *subject, ngx_str_t *nick);

ngx_xmpp_wbuf_t *ngx_xmpp_muc_fanbuf(void);
void ngx_xmpp_muc_check(ngx_xmpp_muc_room_t *room);
void ngx_xmpp_muc_occ_free(ngx_xmpp_muc_occ_t *o);
ngx_xmpp_muc_occ_t *ngx_xmpp_muc_occ_new(ngx_xmpp_muc_req_t *rq,
    ngx_str_t *nick);
ngx_int_t ngx_xmpp_muc_status(ngx_xmpp_muc_req_t *rq, ngx_xmpp_muc_occ_t *o);
ngx_int_t ngx_xmpp_muc_stanza_param(ngx_pool_t *pool, json_t *rec,
    u_char *tail, size_t len);

/* ngx_xmpp_mucroom.c */
void ngx_xmpp_muc_presence(ngx_xmpp_muc_req_t *rq);
void ngx_xmpp_muc_message(ngx_xmpp_muc_req_t *rq);
void ngx_xmpp_muc_iq(ngx_xmpp_muc_req_t *rq);

/* ngx_xmpp_mucfan.c */
void ngx_xmpp_muc_release(ngx_xmpp_muc_room_t *room, uint64_t upto,
    ngx_uint_t ok);
void ngx_xmpp_muc_fan_exit(void);
void ngx_xmpp_muc_history_add(ngx_xmpp_muc_room_t *room, int64_t ts,
    u_char *data, size_t len);

/* ngx_xmpp_mucadmin.c */
void ngx_xmpp_muc_owner_iq(ngx_xmpp_muc_req_t *rq, xmlNodePtr q);
void ngx_xmpp_muc_admin_iq(ngx_xmpp_muc_req_t *rq, xmlNodePtr q);
void ngx_xmpp_muc_room_disco(ngx_xmpp_muc_req_t *rq, xmlNodePtr q);
void ngx_xmpp_muc_invite(ngx_xmpp_muc_req_t *rq, xmlNodePtr x);
void ngx_xmpp_muc_config_default(ngx_xmpp_muc_config_t *c);
ngx_int_t ngx_xmpp_muc_dup(ngx_str_t *dst, ngx_str_t *src);

/* ngx_xmpp_mucdb.c: persistent rooms in MariaDB */
ngx_int_t ngx_xmpp_muc_load(ngx_xmpp_muc_room_t *room);
void ngx_xmpp_muc_save(ngx_xmpp_muc_room_t *room);
void ngx_xmpp_muc_unsave(ngx_str_t *jid);

/* ngx_xmpp_mamroom.c: XEP-0313 section 5, the room's archive */
void ngx_xmpp_mam_room_iq(ngx_xmpp_muc_req_t *rq, xmlNodePtr q);
ngx_uint_t ngx_xmpp_mam_room_forged(ngx_xmpp_muc_req_t *rq, xmlNodePtr c);
void ngx_xmpp_mam_room_stamp(ngx_xmpp_muc_req_t *rq, ngx_xmpp_wbuf_t *b);
ngx_int_t ngx_xmpp_mam_room_refs(ngx_xmpp_muc_req_t *rq, json_t *rec);


#endif /* _NGX_XMPP_MUC_H_INCLUDED_ */
