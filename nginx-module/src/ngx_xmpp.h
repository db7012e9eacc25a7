
/*
 * Conclave: the transport-independent XMPP core shared by the http
 * (WebSocket) and stream (TCP) modules.
 */


#ifndef _NGX_XMPP_H_INCLUDED_
#define _NGX_XMPP_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_thread_pool.h>

#include <libxml/parser.h>

#include "ngx_xmpp_proto.h"
#include "cdir.h"


#define NGX_XMPP_NS_CLIENT    "jabber:client"
#define NGX_XMPP_NS_STREAM    "http://etherx.jabber.org/streams"
#define NGX_XMPP_NS_FRAMING   "urn:ietf:params:xml:ns:xmpp-framing"
#define NGX_XMPP_NS_SASL      "urn:ietf:params:xml:ns:xmpp-sasl"
#define NGX_XMPP_NS_TLS       "urn:ietf:params:xml:ns:xmpp-tls"
#define NGX_XMPP_NS_BIND      "urn:ietf:params:xml:ns:xmpp-bind"
#define NGX_XMPP_NS_SESSION   "urn:ietf:params:xml:ns:xmpp-session"
#define NGX_XMPP_NS_STREAMS   "urn:ietf:params:xml:ns:xmpp-streams"
#define NGX_XMPP_NS_STANZAS   "urn:ietf:params:xml:ns:xmpp-stanzas"
#define NGX_XMPP_NS_PING      "urn:xmpp:ping"
#define NGX_XMPP_NS_DISCO_INFO   "http://jabber.org/protocol/disco#info"
#define NGX_XMPP_NS_DISCO_ITEMS  "http://jabber.org/protocol/disco#items"
#define NGX_XMPP_NS_ROSTER    "jabber:iq:roster"
#define NGX_XMPP_NS_DELAY     "urn:xmpp:delay"
#define NGX_XMPP_NS_XML       "http://www.w3.org/XML/1998/namespace"

#define NGX_XMPP_DIRECTED_MAX     32
#define NGX_XMPP_ROUTE_MAX        64

#define NGX_XMPP_CONFLICT_KICK_OLD  0
#define NGX_XMPP_CONFLICT_REJECT    1

#define NGX_XMPP_FSYNC_ALWAYS       0
#define NGX_XMPP_FSYNC_INTERVAL     1
#define NGX_XMPP_FSYNC_OFF          2

/*
 * Roles from the directory's role groups (conclave_ldap_*_group), set at
 * sign-in and refreshed by every revalidation: ngx_xmpp_session_roles().
 */
#define NGX_XMPP_ROLE_USER          CDIR_ROLE_USER
#define NGX_XMPP_ROLE_ADMIN         CDIR_ROLE_ADMIN
#define NGX_XMPP_ROLE_COMPLIANCE    CDIR_ROLE_COMPLIANCE
#define NGX_XMPP_ROLE_AUDITOR       CDIR_ROLE_AUDITOR


typedef struct ngx_xmpp_session_s    ngx_xmpp_session_t;
typedef struct ngx_xmpp_node_s       ngx_xmpp_node_t;
typedef struct ngx_xmpp_transport_s  ngx_xmpp_transport_t;
typedef struct ngx_xmpp_sm_s         ngx_xmpp_sm_t;
typedef struct ngx_xmpp_held_s       ngx_xmpp_held_t;
typedef struct ngx_xmpp_blocklist_s  ngx_xmpp_blocklist_t;
typedef struct ngx_xmpp_jidlist_s    ngx_xmpp_jidlist_t;


/* configuration shared by every transport (http main conf) */
typedef struct {
    ngx_str_t              domain;

    ngx_str_t              ldap_uri;
    ngx_str_t              ldap_bind_dn;
    ngx_str_t              ldap_bind_password;
    ngx_str_t              ldap_base;
    ngx_str_t              ldap_user_filter;
    ngx_str_t              ldap_group;
    ngx_msec_t             ldap_timeout;
    ngx_int_t              ldap_page_size;  /* RFC 2696; 0: no paging */
    ngx_uint_t             ldap_pool_size;
    ngx_flag_t             ldap_starttls;
    ngx_str_t              ldap_ca_file;
    ngx_flag_t             ldap_tls_verify;
    ngx_str_t              ldap_name_attr;
    ngx_uint_t             ldap_group_mode;
    ngx_uint_t             ldap_group_depth;
    ngx_uint_t             ldap_max_groups;
    ngx_str_t              ldap_group_base;
    ngx_str_t              ldap_role_group[CDIR_NROLES];  /* [0] unused */
    ngx_msec_t             ldap_revalidate;
    ngx_array_t           *ldap_shared_groups;   /* ngx_str_t: group DNs */
    ngx_msec_t             ldap_refresh;
    ngx_uint_t             ldap_shared_max;
    ngx_uint_t             ldap_search_max;
    ngx_uint_t             ldap_outage;
    time_t                 ldap_cache_ttl;
    cdir_t                *dir;            /* per worker, init_process */

    /* vCards and avatars from the directory (ngx_xmpp_vcard.c) */
    ngx_str_t              ldap_vcard_attr[CDIR_VC_N];  /* NULL: default */
    size_t                 ldap_photo_max;
    size_t                 ldap_vcard_cache_size;
    time_t                 ldap_vcard_cache_ttl;

    ngx_str_t              thread_pool_name;
    ngx_thread_pool_t     *thread_pool;

    size_t                 max_stanza_size;
    size_t                 max_stanza_size_preauth;
    ngx_uint_t             max_depth;
    ngx_uint_t             max_attrs;
    size_t                 ws_max_message;
    size_t                 max_output;
    ngx_msec_t             auth_timeout;
    ngx_msec_t             idle_timeout;
    ngx_msec_t             close_timeout;
    ngx_uint_t             max_auth_failures;
    ngx_uint_t             max_address_failures;  /* 0: no lockout */
    ngx_msec_t             address_lockout;
    ngx_uint_t             max_account_failures;  /* 0: no lockout */
    ngx_msec_t             account_lockout;
    ngx_shm_zone_t        *auth_fail_zone;        /* ngx_xmpp_fail.c */
    ngx_uint_t             max_sessions_per_user;
    ngx_flag_t             allow_plaintext_auth;
    ngx_uint_t             resource_conflict;

    size_t                 registry_size;
    ngx_shm_zone_t        *registry_zone;
    ngx_shm_zone_t        *metrics_zone;   /* ngx_xmpp_metrics.c */

    /* the audit journal and its shipping (ngx_xmpp_audit.c) */
    ngx_str_t              audit_dir;
    ngx_str_t              audit_node;
    ngx_str_t              audit_key;
    ngx_str_t              audit_origin;   /* <domain>/audit/<node> */
    ngx_uint_t             audit_fsync;
    ngx_msec_t             audit_fsync_interval;
    ngx_uint_t             audit_cp_records;
    ngx_msec_t             audit_cp_interval;
    size_t                 audit_pending_size;
    struct caud_signer_s  *audit_signer;
    ngx_shm_zone_t        *audit_zone;     /* NULL: module unused */
    ngx_str_t              db_host;
    ngx_uint_t             db_port;
    ngx_str_t              db_socket;
    ngx_str_t              db_user;
    ngx_str_t              db_password;
    ngx_str_t              db_name;
    ngx_msec_t             db_timeout;
    ngx_uint_t             ship_batch;
    ngx_msec_t             ship_interval;
    ngx_uint_t             realtime_priority;   /* 0: off */
    ngx_uint_t             realtime_max_busy;   /* %, 0: automatic */

    /* MariaDB for chat features (ngx_xmpp_db.c), same server as audit */
    ngx_str_t              db_thread_pool_name;
    ngx_thread_pool_t     *db_thread_pool;
    ngx_msec_t             db_request_timeout;

    /* XEP-0313 history (ngx_xmpp_mam.c), XEP-0198 (ngx_xmpp_sm.c) */
    ngx_uint_t             mam_max_page;
    ngx_msec_t             sm_resume_timeout;
    ngx_msec_t             sm_forward_timeout;
    ngx_uint_t             sm_max_unacked;
    /* XEP-0045 group chat (ngx_xmpp_muc*.c); empty domain: none */
    ngx_str_t              muc_domain;
    ngx_uint_t             muc_max_occupants;
    ngx_uint_t             muc_max_rooms;
    ngx_uint_t             muc_rate;
    ngx_uint_t             muc_history;
    ngx_uint_t             muc_queue;

    /* rosters and offline messages (ngx_xmpp_roster.c, _offline.c) */
    ngx_uint_t             roster_max_items;
    ngx_uint_t             offline_quota;

    /* XEP-0163 PEP, XEP-0049 (ngx_xmpp_pep.c, ngx_xmpp_private.c) */
    size_t                 pep_max_item_size;
    size_t                 vcard_max_size;  /* user-set vCard fields */
    ngx_uint_t             pep_max_items;
    size_t                 pep_max_node_size;
    ngx_uint_t             pep_max_nodes;
    size_t                 private_max_size;
    /* XEP-0352 (ngx_xmpp_csi.c), XEP-0191 (ngx_xmpp_blocking.c) */
    ngx_uint_t             csi_max_held;
    size_t                 csi_max_held_size;
    ngx_uint_t             blocklist_max;

    /* XEP-0156 host-meta (ngx_xmpp_hostmeta.c); empty: derived, none */
    ngx_str_t              websocket_url;
    ngx_str_t              bosh_url;
    ngx_str_t              websocket_location;  /* the first one */
    ngx_str_t              bosh_location;

    /* XEP-0124/0206 BOSH (ngx_xmpp_bosh.c) */
    ngx_msec_t             bosh_max_wait;
    ngx_msec_t             bosh_max_inactivity;
    ngx_uint_t             bosh_max_requests;
    size_t                 bosh_max_body;
    ngx_str_t              bosh_cors_origin;

    /* the admin console (ngx_xmpp_admin*.c) */
    ngx_str_t              admin_role_group[CDIR_NROLES]; /* by role bit */
    ngx_str_t              admin_root;
    ngx_str_t              admin_key_file;
    ngx_msec_t             admin_idle_timeout;
    ngx_msec_t             admin_session_timeout;
    ngx_uint_t             admin_max_failures;
    ngx_msec_t             admin_lockout;
    u_char                 admin_key[32];        /* cookie HMAC key */
    ngx_shm_zone_t        *admin_zone;
    cdir_t                *admin_dir[CDIR_NROLES];  /* per worker */
    ngx_str_t              admin_export_dir;
    ngx_uint_t             admin_export_max;     /* jobs per worker */
    time_t                 admin_export_keep;    /* seconds; 0: forever */
    ngx_msec_t             admin_forged_summary;
    ngx_str_t              admin_export_pool_name;
    ngx_thread_pool_t     *admin_export_pool;

    ngx_str_t              conf_file;
    ngx_uint_t             conf_line;
} ngx_xmpp_conf_t;


/* a parsed XML element or, with an empty name, a text node */
typedef struct {
    ngx_str_t              name;
    ngx_str_t              ns;
    ngx_str_t              value;
} ngx_xmpp_attr_t;

struct ngx_xmpp_node_s {
    ngx_str_t              name;
    ngx_str_t              ns;
    ngx_str_t              text;
    ngx_xmpp_attr_t       *attrs;
    ngx_uint_t             nattrs;
    ngx_xmpp_node_t       *parent;
    ngx_xmpp_node_t       *child;
    ngx_xmpp_node_t       *last;
    ngx_xmpp_node_t       *next;
};


typedef struct {
    ngx_str_t              full;
    ngx_str_t              bare;
    ngx_str_t              local;
    ngx_str_t              domain;
    ngx_str_t              resource;
} ngx_xmpp_jid_t;


typedef enum {
    NGX_XMPP_STANZA_MESSAGE = 0,
    NGX_XMPP_STANZA_PRESENCE,
    NGX_XMPP_STANZA_IQ
} ngx_xmpp_stanza_kind_e;


typedef struct {
    ngx_xmpp_node_t       *node;
    ngx_pool_t            *pool;
    ngx_xmpp_stanza_kind_e kind;
    ngx_str_t              type;
    ngx_str_t              id;
    ngx_xmpp_jid_t         to;
    ngx_xmpp_jid_t         from;
    unsigned               has_to:1;
} ngx_xmpp_stanza_t;


/* an accepted stanza on its way to its recipients (ngx_xmpp_router.c) */
typedef struct {
    ngx_uint_t             kind;
    ngx_str_t              type;
    ngx_str_t              id;
    ngx_xmpp_jid_t         to;
    u_char                *data;          /* serialized, "from" stamped */
    size_t                 len;
} ngx_xmpp_delivery_t;


/* a growable output buffer on the heap, bounded by max */
typedef struct {
    u_char                *start;
    u_char                *last;
    u_char                *end;
    size_t                 max;
    unsigned               failed:1;
} ngx_xmpp_wbuf_t;


/* what the core needs from a transport (RFC 7395 vs RFC 6120 framing) */
struct ngx_xmpp_transport_s {
    ngx_str_t              name;
    /* the stream header answering the client's; id is the stream id */
    ngx_int_t            (*open)(ngx_xmpp_session_t *s);
    /* one complete top-level element */
    ngx_int_t            (*send)(ngx_xmpp_session_t *s, u_char *data,
                                 size_t len);
    /* the stream end (</stream:stream> or <close/>), then shut down */
    void                 (*end)(ngx_xmpp_session_t *s);
    /* release the connection now; the session is gone afterwards */
    void                 (*finalize)(ngx_xmpp_session_t *s);
    /* TLS on this connection once <proceed/> is out (NULL: none) */
    ngx_int_t            (*starttls)(ngx_xmpp_session_t *s);
};


typedef enum {
    NGX_XMPP_ST_WAIT_OPEN = 0,
    NGX_XMPP_ST_WAIT_AUTH,
    NGX_XMPP_ST_AUTH_PENDING,
    NGX_XMPP_ST_WAIT_BIND,
    NGX_XMPP_ST_SESSION,
    NGX_XMPP_ST_CLOSING
} ngx_xmpp_state_e;


typedef struct ngx_xmpp_auth_ctx_s  ngx_xmpp_auth_ctx_t;


struct ngx_xmpp_session_s {
    ngx_rbtree_node_t      node;          /* key: id, local table */
    uint64_t               id;

    ngx_connection_t      *connection;
    ngx_pool_t            *pool;
    ngx_xmpp_conf_t       *conf;
    ngx_xmpp_transport_t  *transport;
    void                  *transport_data;

    ngx_xmpp_state_e       state;
    u_char                 stream_id[16];

    ngx_xmpp_jid_t         jid;           /* set at bind */
    ngx_str_t              user;          /* localpart, set at SASL */
    ngx_str_t              ldap_dn;       /* the user's entry, at SASL */
    ngx_uint_t             roles;         /* NGX_XMPP_ROLE_* bits */
    u_char                 photo_hash[41];  /* XEP-0153: the avatar's */

    /* parser state (ngx_xmpp_parser.c) */
    xmlParserCtxtPtr       parser;        /* NULL while idle */
    ngx_str_t              parser_prefix;
    ngx_str_t              stream_root;   /* TCP: the client's root */
    ngx_uint_t             depth;
    size_t                 stanza_size;
    ngx_pool_t            *stanza_pool;
    ngx_xmpp_node_t       *cur;
    ngx_xmpp_node_t       *root;
    ngx_uint_t             parser_error;  /* stream error condition */
    ngx_uint_t             elements;      /* top-level elements parsed */

    ngx_xmpp_wbuf_t        out;           /* unsent bytes */

    ngx_event_t            timer;         /* auth deadline / close wait */
    ngx_xmpp_auth_ctx_t   *auth;
    ngx_uint_t             auth_failures;

    /* what audit records say about the session (ngx_xmpp_audit.c) */
    u_char                 audit_sid[sizeof("0123456789abcdef")];
    u_char                *audit_ip;
    u_char                *audit_resource;
    const char            *end_reason;    /* static strings only */
    const char            *auth_reason;

    ngx_xmpp_sm_t         *sm;            /* XEP-0198, NULL: not used */
    void                  *caps;          /* XEP-0115, ngx_xmpp_caps.c */
    ngx_xmpp_held_t       *held;          /* XEP-0352, NULL: none */
    ngx_xmpp_blocklist_t  *blocklist;     /* XEP-0191, NULL: not bound */

    ngx_int_t              priority;
    ngx_str_t              last_presence; /* heap, without "to" */
    ngx_uint_t             presence_seq;
    ngx_uint_t             ndirected;
    ngx_str_t             *directed;      /* NGX_XMPP_DIRECTED_MAX */

    unsigned               photo_dir:1;   /* the avatar is the directory's
                                             (ngx_xmpp_avatar.c) */
    unsigned               in_feed:1;
    unsigned               close_pending:1;
    unsigned               finalized:1;
    unsigned               authenticated:1;
    unsigned               bound:1;
    unsigned               available:1;
    unsigned               roster_interested:1;  /* RFC 6121 2.1.6 */
    unsigned               secure:1;
    unsigned               sasl_started:1;
    unsigned               tls_available:1;   /* STARTTLS can be offered */
    unsigned               restart_pending:1;
    unsigned               own_root:1;        /* TCP: the client's root */
    unsigned               carbons:1;         /* XEP-0280 enabled */
    unsigned               csi_inactive:1;    /* XEP-0352 <inactive/> */
};


/* ngx_xmpp_conf.c */
void *ngx_xmpp_conf_create(ngx_conf_t *cf);
char *ngx_xmpp_conf_init(ngx_conf_t *cf, ngx_xmpp_conf_t *xcf);
char *ngx_xmpp_conf_password_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_xmpp_conf_conflict(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
const char *ngx_xmpp_cstr(ngx_pool_t *pool, ngx_str_t *s);
void ngx_xmpp_dir_config(ngx_pool_t *pool, ngx_xmpp_conf_t *xcf,
    cdir_config_t *dc);

/* ngx_http_conclave_module.c */
ngx_xmpp_conf_t *ngx_xmpp_cycle_conf(ngx_cycle_t *cycle);
ngx_int_t ngx_xmpp_init_worker(ngx_cycle_t *cycle, ngx_xmpp_conf_t *xcf);
void ngx_xmpp_exit_worker(ngx_cycle_t *cycle, ngx_xmpp_conf_t *xcf);

/* conclave_realtime_priority (ngx_xmpp_rt.c) */
void ngx_xmpp_rt_init_master(ngx_log_t *log, ngx_xmpp_conf_t *xcf);
ngx_int_t ngx_xmpp_rt_init_worker(ngx_cycle_t *cycle, ngx_xmpp_conf_t *xcf);
void ngx_xmpp_rt_register_thread(void);
void ngx_xmpp_rt_exit_worker(void);

/* ngx_xmpp_xml.c (in ngx_xmpp_parser.c): tree helpers and writer */
ngx_xmpp_node_t *ngx_xmpp_node_child(ngx_xmpp_node_t *n, const char *name,
    const char *ns);
ngx_str_t *ngx_xmpp_node_attr(ngx_xmpp_node_t *n, const char *name);
ngx_int_t ngx_xmpp_node_set_attr(ngx_pool_t *pool, ngx_xmpp_node_t *n,
    const char *name, ngx_str_t *value);
void ngx_xmpp_node_del_attr(ngx_xmpp_node_t *n, const char *name);
ngx_int_t ngx_xmpp_node_text(ngx_pool_t *pool, ngx_xmpp_node_t *n,
    ngx_str_t *text);
ngx_uint_t ngx_xmpp_node_nchildren(ngx_xmpp_node_t *n);
ngx_xmpp_node_t *ngx_xmpp_node_first_element(ngx_xmpp_node_t *n);
void ngx_xmpp_serialize(ngx_xmpp_wbuf_t *b, ngx_xmpp_node_t *n,
    ngx_str_t *parent_ns);

/* ngx_xmpp_parser.c */
ngx_int_t ngx_xmpp_parser_init(ngx_xmpp_session_t *s, u_char *prefix,
    size_t len);
ngx_int_t ngx_xmpp_parser_feed(ngx_xmpp_session_t *s, u_char *data,
    size_t len);
void ngx_xmpp_parser_free(ngx_xmpp_session_t *s);
ngx_int_t ngx_xmpp_parser_restart(ngx_xmpp_session_t *s);
void ngx_xmpp_parser_release(ngx_xmpp_session_t *s);
ngx_uint_t ngx_xmpp_parser_trim(void);

/* ngx_xmpp_session.c */
ngx_xmpp_session_t *ngx_xmpp_session_create(ngx_connection_t *c,
    ngx_pool_t *pool, ngx_xmpp_conf_t *xcf, ngx_xmpp_transport_t *t,
    void *data);
ngx_int_t ngx_xmpp_session_start(ngx_xmpp_session_t *s);
ngx_int_t ngx_xmpp_session_input(ngx_xmpp_session_t *s, u_char *data,
    size_t len);
ngx_int_t ngx_xmpp_session_send(ngx_xmpp_session_t *s, u_char *data,
    size_t len);
ngx_int_t ngx_xmpp_session_send_wbuf(ngx_xmpp_session_t *s,
    ngx_xmpp_wbuf_t *b);
ngx_int_t ngx_xmpp_session_write(ngx_xmpp_session_t *s, u_char *data,
    size_t len);
ngx_int_t ngx_xmpp_session_writev(ngx_xmpp_session_t *s, u_char *d1,
    size_t l1, u_char *d2, size_t l2);
ngx_int_t ngx_xmpp_session_flush(ngx_xmpp_session_t *s);
void ngx_xmpp_session_cork(void);
void ngx_xmpp_session_uncork(void);
void ngx_xmpp_session_exit_worker(void);
void ngx_xmpp_session_error(ngx_xmpp_session_t *s, const char *condition,
    const char *text);
void ngx_xmpp_session_close(ngx_xmpp_session_t *s);
void ngx_xmpp_session_finalize(ngx_xmpp_session_t *s);
void ngx_xmpp_session_cleanup(ngx_xmpp_session_t *s);
ngx_xmpp_session_t *ngx_xmpp_session_find(uint64_t id);
ngx_xmpp_session_t *ngx_xmpp_session_next(ngx_xmpp_session_t *s);
void ngx_xmpp_session_tls_mode(ngx_connection_t *c);
ngx_uint_t ngx_xmpp_session_count(void);
void ngx_xmpp_session_shutdown_all(const char *condition);

ngx_xmpp_wbuf_t *ngx_xmpp_wbuf_scratch(size_t max);
ngx_int_t ngx_xmpp_wbuf_reserve(ngx_xmpp_wbuf_t *b, size_t n);
void ngx_xmpp_wbuf_add(ngx_xmpp_wbuf_t *b, const void *data, size_t len);
void ngx_xmpp_wbuf_str(ngx_xmpp_wbuf_t *b, const char *s);
void ngx_xmpp_wbuf_esc(ngx_xmpp_wbuf_t *b, const u_char *p, size_t len);
void ngx_xmpp_wbuf_free(ngx_xmpp_wbuf_t *b);

#define ngx_xmpp_wbuf_lit(b, s)  ngx_xmpp_wbuf_add(b, s, sizeof(s) - 1)
#define ngx_xmpp_wbuf_nstr(b, str)  ngx_xmpp_wbuf_add(b, (str)->data,      \
                                                      (str)->len)
#define ngx_xmpp_wbuf_escs(b, str)  ngx_xmpp_wbuf_esc(b, (str)->data,      \
                                                      (str)->len)

/* ngx_xmpp_stream.c */
void ngx_xmpp_stream_element(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n);
void ngx_xmpp_stream_header(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n);
void ngx_xmpp_stream_auth_done(ngx_xmpp_session_t *s,
    cdir_auth_result_t *res);
ngx_int_t ngx_xmpp_stream_features(ngx_xmpp_session_t *s);

/*
 * ngx_xmpp_db.c: MariaDB without blocking the event loop.
 *
 *   r = ngx_xmpp_db_create(xcf, sizeof(my_ctx_t), log);
 *   r->run = my_run;        (pool thread: SQL through the given MYSQL *,
 *                            returns 0 or -1; results go into r->ctx,
 *                            malloc()ed if need be)
 *   r->done = my_done;      (event loop, exactly once: r->rc is
 *                            NGX_XMPP_DB_OK, _ERROR, _UNAVAILABLE or
 *                            _TIMEOUT; after _TIMEOUT r->ctx is still
 *                            the thread's and must not be read)
 *   r->cleanup = my_free;   (optional, event loop, once the thread is
 *                            done: frees what run() allocated)
 *   r->data = owner;
 *   if (ngx_xmpp_db_post(r) != NGX_OK) ngx_xmpp_db_destroy(r);
 *
 * An owner that goes away calls ngx_xmpp_db_cancel(r): done() is then
 * skipped, cleanup() still runs.  The block is freed after cleanup().
 *
 * Each request is one transaction (the connections run with autocommit
 * off): the adapter commits after run() returns 0 and rolls back after
 * -1, so run() never commits itself.  The answer is the truth: _OK
 * means committed; _TIMEOUT means nothing was committed and nothing
 * will be, because a request that its timer answers is rolled back by
 * its thread; a timer that finds the thread already committing waits
 * for the commit's outcome (bounded by the connection's own timeouts).
 * Only a connection lost during COMMIT itself leaves the outcome
 * unknown: _UNAVAILABLE, logged as such.  A request whose run() only
 * reads may set r->readonly = 1: it runs on an autocommit connection
 * and the adapter sends no COMMIT (a round trip saved per request).
 */
#define NGX_XMPP_DB_OK           0
#define NGX_XMPP_DB_ERROR        1    /* the statement failed */
#define NGX_XMPP_DB_UNAVAILABLE  2    /* no connection to the server */
#define NGX_XMPP_DB_TIMEOUT      3    /* conclave_db_timeout expired */

#define NGX_XMPP_DB_PARAMS_MAX   16

typedef struct ngx_xmpp_db_req_s   ngx_xmpp_db_req_t;
typedef struct ngx_xmpp_db_pool_s  ngx_xmpp_db_pool_t;
struct st_mysql;
struct st_mysql_stmt;

typedef int (*ngx_xmpp_db_run_pt)(struct st_mysql *conn,
    ngx_xmpp_db_req_t *r);
typedef void (*ngx_xmpp_db_done_pt)(ngx_xmpp_db_req_t *r);
typedef int (*ngx_xmpp_db_row_pt)(ngx_xmpp_db_req_t *r, ngx_str_t *cols,
    ngx_uint_t n);

struct ngx_xmpp_db_req_s {
    ngx_xmpp_db_run_pt     run;
    ngx_xmpp_db_done_pt    done;
    ngx_xmpp_db_done_pt    cleanup;
    void                  *data;          /* the owner */
    void                  *ctx;           /* ctx_size bytes, zeroed */
    ngx_msec_t             timeout;       /* 0: conclave_db_timeout */
    ngx_uint_t             rc;
    unsigned int           db_errno;
    char                   err[256];      /* for the log, never to users;
                                             the thread's until done */
    unsigned               readonly:1;    /* run() only reads: autocommit,
                                             no COMMIT round trip */

    /* private */
    ngx_xmpp_conf_t       *xcf;
    ngx_log_t             *log;
    ngx_thread_task_t     *task;
    ngx_event_t            timer;
    ngx_msec_t             posted_at;
    ngx_uint_t             thread_rc;     /* r->rc once the thread is done */
    ngx_uint_t             state;         /* __atomic: thread vs timer */
    unsigned               in_thread:1;
    unsigned               answered:1;    /* done() ran before the thread
                                             finished */
    unsigned               cancelled:1;
};

typedef struct {
    uint64_t               requests;      /* completed */
    uint64_t               total_ms;
    uint64_t               max_ms;
    uint64_t               timeouts;
    uint64_t               rejected;      /* thread pool queue full */
    uint64_t               errors;        /* atomic: pool threads */
    uint64_t               connects;      /* atomic */
    uint64_t               connect_errors;  /* atomic */
    uint64_t               statement_timeouts;  /* atomic: ended by
                                                   max_statement_time */
} ngx_xmpp_db_stats_t;

ngx_int_t ngx_xmpp_db_init_worker(ngx_cycle_t *cycle, ngx_xmpp_conf_t *xcf);
void ngx_xmpp_db_exit_worker(ngx_cycle_t *cycle);
ngx_xmpp_db_req_t *ngx_xmpp_db_create(ngx_xmpp_conf_t *xcf, size_t ctx_size,
    ngx_log_t *log);
ngx_int_t ngx_xmpp_db_post(ngx_xmpp_db_req_t *r);
void ngx_xmpp_db_cancel(ngx_xmpp_db_req_t *r);
void ngx_xmpp_db_destroy(ngx_xmpp_db_req_t *r);
const ngx_xmpp_db_stats_t *ngx_xmpp_db_stats(void);
/* for run(): prepare + bind strings (data NULL = SQL NULL) + execute */
struct st_mysql_stmt *ngx_xmpp_db_exec(struct st_mysql *conn,
    ngx_xmpp_db_req_t *r, const char *sql, ngx_str_t *params, ngx_uint_t n);
/* the same in one round trip (prepare and execute sent together) */
struct st_mysql_stmt *ngx_xmpp_db_exec_direct(struct st_mysql *conn,
    ngx_xmpp_db_req_t *r, const char *sql, ngx_str_t *params, ngx_uint_t n);
/* for run(): row() for each row, columns as strings */
int ngx_xmpp_db_rows(struct st_mysql_stmt *stmt, ngx_xmpp_db_req_t *r,
    ngx_xmpp_db_row_pt row);
/* for run(): exec (direct: one round trip), then the rows or the
 * affected count, then close */
int ngx_xmpp_db_stmt(struct st_mysql *conn, ngx_xmpp_db_req_t *r,
    const char *sql, ngx_str_t *params, ngx_uint_t n, uint64_t *affected);
int ngx_xmpp_db_select(struct st_mysql *conn, ngx_xmpp_db_req_t *r,
    const char *sql, ngx_str_t *params, ngx_uint_t n, ngx_xmpp_db_row_pt row);

/* ngx_xmpp_auth.c */
ngx_int_t ngx_xmpp_auth_start(ngx_xmpp_session_t *s, const u_char *login,
    size_t login_len, const u_char *pw, size_t pw_len);
void ngx_xmpp_auth_cancel(ngx_xmpp_session_t *s);

/* ngx_xmpp_jid.c helpers over ngx_str_t, in ngx_xmpp_router.c */
ngx_int_t ngx_xmpp_jid_parse(ngx_pool_t *pool, ngx_str_t *s,
    ngx_xmpp_jid_t *jid);
ngx_int_t ngx_xmpp_jid_make(ngx_pool_t *pool, ngx_str_t *local,
    ngx_str_t *domain, ngx_str_t *resource, ngx_xmpp_jid_t *jid);

/* ngx_xmpp_registry.c: JID -> (worker pid, session id) in shared memory */
typedef struct {
    ngx_pid_t              pid;
    uint64_t               sid;
    ngx_int_t              priority;
    unsigned               available:1;
    unsigned               interested:1;  /* receives roster pushes */
    unsigned               carbons:1;     /* XEP-0280 enabled */
    u_char                 resource[NGX_XMPP_JID_PART_MAX + 1];
    size_t                 resource_len;
} ngx_xmpp_route_t;

ngx_shm_zone_t *ngx_xmpp_registry_add_zone(ngx_conf_t *cf, size_t size);
ngx_int_t ngx_xmpp_registry_add(ngx_xmpp_session_t *s, ngx_pid_t *old_pid,
    uint64_t *old_sid);
void ngx_xmpp_registry_remove(ngx_xmpp_session_t *s);
void ngx_xmpp_registry_update(ngx_xmpp_session_t *s);
ngx_int_t ngx_xmpp_registry_move(ngx_xmpp_conf_t *xcf, ngx_str_t *bare,
    ngx_pid_t old_pid, uint64_t old_sid, ngx_pid_t pid, uint64_t sid);
ngx_uint_t ngx_xmpp_registry_lookup(ngx_xmpp_conf_t *xcf, ngx_str_t *bare,
    ngx_xmpp_route_t *routes, ngx_uint_t max);
ngx_uint_t ngx_xmpp_registry_carbons(ngx_xmpp_conf_t *xcf);
void ngx_xmpp_registry_purge_pid(ngx_xmpp_conf_t *xcf, ngx_pid_t pid);
void ngx_xmpp_registry_purge_dead(ngx_xmpp_conf_t *xcf);
u_char *ngx_xmpp_registry_secret(ngx_xmpp_conf_t *xcf);
ngx_int_t ngx_xmpp_registry_json(ngx_xmpp_conf_t *xcf, ngx_pool_t *pool,
    ngx_str_t *out);
ngx_int_t ngx_xmpp_registry_room(ngx_xmpp_conf_t *xcf, ngx_str_t *room,
    ngx_pid_t *owner);
void ngx_xmpp_registry_room_release(ngx_xmpp_conf_t *xcf, ngx_str_t *room);
ngx_uint_t ngx_xmpp_registry_rooms(ngx_xmpp_conf_t *xcf);
void ngx_xmpp_registry_room_hide(ngx_xmpp_conf_t *xcf, ngx_str_t *room,
    ngx_uint_t hidden);
ngx_uint_t ngx_xmpp_registry_room_list(ngx_xmpp_conf_t *xcf,
    ngx_pool_t *pool, ngx_str_t *out, ngx_uint_t max);
struct json_t *ngx_xmpp_registry_sessions(ngx_xmpp_conf_t *xcf);

/* ngx_xmpp_ipc.c: unix datagram sockets between workers */
#define NGX_XMPP_IPC_DELIVER   1
#define NGX_XMPP_IPC_KICK      2
#define NGX_XMPP_IPC_BOSH_REQ  3
#define NGX_XMPP_IPC_BOSH_RESP 4
#define NGX_XMPP_IPC_MUC       5
#define NGX_XMPP_IPC_ADMIN_KICK 6
#define NGX_XMPP_IPC_PROBE     10    /* data: the JID to answer */
#define NGX_XMPP_IPC_OFFLINE   11    /* stored messages wait for sid */
#define NGX_XMPP_IPC_SM_TAKE   12
#define NGX_XMPP_IPC_SM_STANZA 13
#define NGX_XMPP_IPC_SM_TAKEN  14
#define NGX_XMPP_IPC_SM_FAILED 15
#define NGX_XMPP_IPC_SM_MOVED  21    /* data: ngx_xmpp_sm_moved_t */
#define NGX_XMPP_IPC_SM_WAITED 24    /* data: u8 IPC command, its data */
#define NGX_XMPP_IPC_PEP_NOTIFY 20   /* data: u16 node length, node, stanza */
#define NGX_XMPP_IPC_BLOCKING  16    /* XEP-0191 change for session sid */
#define NGX_XMPP_IPC_BLOCKING_SYNC   17  /* sid: a token to send back */
#define NGX_XMPP_IPC_BLOCKING_SYNCED 18  /* sid: the token */
#define NGX_XMPP_IPC_AVATAR    28    /* data: the new avatar hash (0/40) */
#define NGX_XMPP_IPC_FAN       36    /* one stanza to many sessions */


/*
 * NGX_XMPP_IPC_FAN: this header, elem, tail, then per session an
 * ngx_xmpp_fan_rcpt_t and its escaped JID; each session gets
 * "<" elem " to='" JID "'" tail (ngx_xmpp_router_fan_ipc()).
 */
typedef struct {
    uint32_t               elem_len;
    uint32_t               tail_len;
} ngx_xmpp_fan_hdr_t;


typedef struct {
    uint64_t               sid;
    uint32_t               jid_len;
    uint32_t               reserved;
} ngx_xmpp_fan_rcpt_t;

ngx_int_t ngx_xmpp_ipc_init_worker(ngx_cycle_t *cycle, ngx_xmpp_conf_t *xcf);
void ngx_xmpp_ipc_exit_worker(ngx_cycle_t *cycle);
ngx_int_t ngx_xmpp_ipc_send(ngx_pid_t pid, ngx_uint_t cmd, uint64_t sid,
    u_char *data, size_t len);

/* ngx_xmpp_router.c */
ngx_xmpp_route_t *ngx_xmpp_router_routes(void);
void ngx_xmpp_router_route(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st);
ngx_int_t ngx_xmpp_router_to_session(ngx_xmpp_conf_t *xcf,
    ngx_xmpp_route_t *rt, u_char *data, size_t len);
ngx_int_t ngx_xmpp_router_to_bare(ngx_xmpp_conf_t *xcf, ngx_str_t *bare,
    ngx_uint_t kind, ngx_str_t *type, u_char *data, size_t len);
ngx_int_t ngx_xmpp_router_to_bare_except(ngx_xmpp_conf_t *xcf,
    ngx_str_t *bare, ngx_uint_t kind, ngx_str_t *type, u_char *data,
    size_t len, ngx_xmpp_jidlist_t *except);
ngx_int_t ngx_xmpp_router_to_full_jid(ngx_xmpp_conf_t *xcf,
    ngx_xmpp_jid_t *to, u_char *data, size_t len);
void ngx_xmpp_router_deliver(ngx_xmpp_conf_t *xcf, ngx_xmpp_session_t *s,
    ngx_xmpp_delivery_t *d);
void ngx_xmpp_router_error(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    const char *type, const char *condition);
void ngx_xmpp_router_bounce(ngx_xmpp_session_t *s, ngx_xmpp_delivery_t *d,
    const char *type, const char *condition);
void ngx_xmpp_router_bounce_text(ngx_xmpp_session_t *s,
    ngx_xmpp_delivery_t *d, const char *type, const char *condition,
    const char *text);
void ngx_xmpp_router_deliver_ipc(ngx_xmpp_conf_t *xcf, uint64_t sid,
    u_char *data, size_t len);
void ngx_xmpp_router_fan_ipc(ngx_xmpp_conf_t *xcf, u_char *data,
    size_t len);
void ngx_xmpp_router_exit_worker(void);
void ngx_xmpp_router_kick(ngx_pid_t pid, uint64_t sid);
void ngx_xmpp_router_kick_local(uint64_t sid);
ngx_int_t ngx_xmpp_router_inbound(ngx_xmpp_session_t *s, u_char *data,
    size_t len);
ngx_int_t ngx_xmpp_router_peek(u_char *data, size_t len, const char *name,
    u_char *buf, size_t size, ngx_str_t *value);
void ngx_xmpp_iq_result(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    const char *payload);

/* ngx_xmpp_carbons.c: XEP-0280 message carbons */
#define NGX_XMPP_NS_CARBONS    "urn:xmpp:carbons:2"
#define NGX_XMPP_NS_FORWARD    "urn:xmpp:forward:0"
#define NGX_XMPP_CARBONS_FULL  1
#define NGX_XMPP_CARBONS_BARE  2
void ngx_xmpp_carbons_iq(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_node_t *q);
void ngx_xmpp_carbons_copy(ngx_xmpp_conf_t *xcf, ngx_xmpp_delivery_t *d,
    ngx_int_t delivered);

/* ngx_xmpp_csi.c: XEP-0352 client state indication */
#define NGX_XMPP_NS_CSI        "urn:xmpp:csi:0"
void ngx_xmpp_csi_element(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n);
ngx_int_t ngx_xmpp_csi_filter(ngx_xmpp_session_t *s, u_char *data,
    size_t len);
void ngx_xmpp_csi_free(ngx_xmpp_session_t *s);
ngx_int_t ngx_xmpp_csi_held(ngx_xmpp_session_t *s, ngx_uint_t *i,
    u_char **data, size_t *len);

/* ngx_xmpp_blocking.c: XEP-0191 blocking command, MariaDB blocklist */
#define NGX_XMPP_NS_BLOCKING   "urn:xmpp:blocking"
void ngx_xmpp_blocking_start(ngx_xmpp_session_t *s);
ngx_uint_t ngx_xmpp_blocking_requested(ngx_xmpp_session_t *s);
void ngx_xmpp_blocking_iq(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_node_t *q);
ngx_int_t ngx_xmpp_blocking_outbound(ngx_xmpp_session_t *s,
    ngx_xmpp_stanza_t *st);
ngx_int_t ngx_xmpp_blocking_inbound(ngx_xmpp_session_t *s, u_char *data,
    size_t len);
ngx_int_t ngx_xmpp_blocking_blocks(ngx_xmpp_session_t *s, ngx_str_t *jid);
ngx_int_t ngx_xmpp_blocking_probe_wait(ngx_xmpp_session_t *s, u_char *to,
    size_t len);
ngx_int_t ngx_xmpp_blocking_list_blocks(u_char *list, u_char *last,
    ngx_uint_t n, ngx_str_t *jid);
void ngx_xmpp_blocking_ipc(uint64_t sid, u_char *data, size_t len);

/* JIDs as a blocklist holds them: n of them, each NUL-ended */
struct ngx_xmpp_jidlist_s {
    u_char                *start;
    u_char                *last;
    ngx_uint_t             n;
    ngx_uint_t             excluded;      /* out: routes left out */
};

/* a committed change (op 'b', 'u', 'a'), for its presence side */
typedef struct {
    ngx_str_t              owner;
    u_char                 op;
    ngx_xmpp_jidlist_t     items;         /* named; 'a': the old list */
    u_char                *contacts;      /* [flags][JID NUL] ... */
    u_char                *contacts_end;
    ngx_xmpp_jidlist_t     left;          /* the list after an unblock */
} ngx_xmpp_blocking_change_t;

void ngx_xmpp_blocking_list(ngx_xmpp_session_t *s, ngx_xmpp_jidlist_t *l);
ngx_uint_t ngx_xmpp_blocking_route_blocked(ngx_xmpp_jidlist_t *l,
    ngx_str_t *bare, u_char *res, size_t rlen);
void ngx_xmpp_blocking_resume(ngx_xmpp_session_t *s, ngx_uint_t requested);
void ngx_xmpp_blocking_replay(ngx_xmpp_session_t *s);
void ngx_xmpp_blocking_park(ngx_xmpp_session_t *s,
    ngx_xmpp_session_t *ghost);
void ngx_xmpp_blocking_hand_over(ngx_xmpp_session_t *ghost,
    ngx_xmpp_wbuf_t *pending);
ngx_int_t ngx_xmpp_blocking_parked_inbound(ngx_xmpp_session_t *ghost,
    u_char *data, size_t len);
void ngx_xmpp_blocking_parked(ngx_xmpp_session_t *ghost,
    ngx_uint_t requested, u_char *data, size_t len);
ngx_int_t ngx_xmpp_blocking_push(ngx_xmpp_wbuf_t *b, ngx_str_t *to,
    u_char op, u_char *jids, size_t len);

/* ngx_xmpp_blockpres.c: the presence side of XEP-0191 3.3 and 3.4 */
void ngx_xmpp_blockpres_changed(ngx_xmpp_conf_t *xcf,
    ngx_xmpp_blocking_change_t *ch, ngx_pid_t *pids, ngx_uint_t npids);
void ngx_xmpp_blockpres_directed(ngx_xmpp_session_t *s, u_char *jids,
    size_t len);
void ngx_xmpp_blockpres_ipc(ngx_uint_t cmd, ngx_pid_t from, uint64_t sid);
void ngx_xmpp_blockpres_exit_worker(void);

/* ngx_xmpp_presence.c */
void ngx_xmpp_presence_handle(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st);
void ngx_xmpp_presence_gone(ngx_xmpp_session_t *s);
void ngx_xmpp_presence_gone_directed(ngx_xmpp_session_t *s, u_char *data,
    size_t len);
void ngx_xmpp_presence_send_to(ngx_xmpp_conf_t *xcf, ngx_str_t *to,
    u_char *data, size_t len, ngx_xmpp_jidlist_t *except);
ngx_uint_t ngx_xmpp_presence_probe(ngx_xmpp_conf_t *xcf, ngx_str_t *target,
    ngx_str_t *to);
void ngx_xmpp_presence_probe_local(uint64_t sid, u_char *to, size_t len);
void ngx_xmpp_presence_unavailable_to(ngx_xmpp_conf_t *xcf,
    ngx_str_t *from, ngx_str_t *to);

/* ngx_xmpp_roster.c: RFC 6121 rosters and subscriptions in MariaDB */
#define NGX_XMPP_ROSTER_INITIAL  1

void ngx_xmpp_roster_iq(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_node_t *q);
void ngx_xmpp_roster_probe(ngx_xmpp_session_t *s, ngx_str_t *contact);
void ngx_xmpp_roster_subscription(ngx_xmpp_session_t *s,
    ngx_xmpp_stanza_t *st);
void ngx_xmpp_roster_presence(ngx_xmpp_conf_t *xcf, ngx_xmpp_session_t *s,
    ngx_str_t *bare, u_char *data, size_t len, ngx_uint_t flags);

/* ngx_xmpp_offline.c: XEP-0160 offline messages in MariaDB */
ngx_int_t ngx_xmpp_offline_store(ngx_xmpp_conf_t *xcf,
    ngx_xmpp_session_t *s, ngx_xmpp_delivery_t *d);
void ngx_xmpp_offline_deliver(ngx_xmpp_session_t *s);
void ngx_xmpp_offline_deliver_sid(uint64_t sid);

/* ngx_xmpp_tcp.c: XMPP over TCP in a stream server */
struct ngx_stream_session_s;
typedef struct ngx_xmpp_tls_s  ngx_xmpp_tls_t;
void ngx_xmpp_tcp_init(struct ngx_stream_session_s *ss,
    ngx_xmpp_conf_t *xcf, ngx_ssl_t *ssl, ngx_uint_t record_layer);
ngx_xmpp_tls_t *ngx_xmpp_tcp_tls(ngx_connection_t *c);

/* ngx_xmpp_tls.c: TLS 1.3 on our record layer after the handshake */
ngx_int_t ngx_xmpp_tls_prepare(ngx_conf_t *cf, SSL_CTX *ctx);
ngx_int_t ngx_xmpp_tls_switch(ngx_connection_t *c, ngx_xmpp_tls_t **tlsp);
ngx_int_t ngx_xmpp_tls_flush(ngx_connection_t *c, ngx_xmpp_tls_t *tls);
void ngx_xmpp_tls_close(ngx_connection_t *c, ngx_xmpp_tls_t *tls);

/* ngx_xmpp_bosh_http.c: XEP-0124/0206 (its handler: http glue) */
void ngx_xmpp_bosh_ipc(ngx_uint_t cmd, ngx_pid_t from, uint64_t tag,
    u_char *data, size_t len);
void ngx_xmpp_bosh_exit_worker(void);

/* ngx_xmpp_audit*.c: records in this worker's journal, and shipping */
typedef void (*ngx_xmpp_audit_done_pt)(u_char *data, size_t len,
    ngx_uint_t ok);

char *ngx_xmpp_audit_conf_init(ngx_conf_t *cf, ngx_xmpp_conf_t *xcf);
extern ngx_conf_enum_t  ngx_xmpp_audit_fsync_policies[];
ngx_int_t ngx_xmpp_audit_init_worker(ngx_cycle_t *cycle,
    ngx_xmpp_conf_t *xcf);
void ngx_xmpp_audit_exit_worker(ngx_cycle_t *cycle);
void ngx_xmpp_audit_tick(ngx_log_t *log);
void ngx_xmpp_audit_message(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_delivery_t *d);
size_t ngx_xmpp_audit_next_id(ngx_xmpp_conf_t *xcf, u_char *buf,
    size_t size);

/* where every live journal is, to wait until MariaDB has it all */
#define NGX_XMPP_AUDIT_MARKS  128
typedef struct {
    ngx_pid_t              pid;
    uint32_t               writer;
    uint64_t               seq;
} ngx_xmpp_audit_mark_t;

void ngx_xmpp_audit_marks(ngx_xmpp_conf_t *xcf, ngx_xmpp_audit_mark_t *m);
ngx_uint_t ngx_xmpp_audit_shipped(ngx_xmpp_conf_t *xcf,
    ngx_xmpp_audit_mark_t *m);
ngx_int_t ngx_xmpp_audit_signin(ngx_xmpp_session_t *s, ngx_uint_t ok,
    const char *code, const char *reason);
void ngx_xmpp_audit_session_end(ngx_xmpp_session_t *s);
ngx_int_t ngx_xmpp_audit_session_init(ngx_xmpp_session_t *s);
ngx_int_t ngx_xmpp_audit_session_bound(ngx_xmpp_session_t *s);
struct json_t *ngx_xmpp_audit_json(ngx_xmpp_conf_t *xcf);
ngx_int_t ngx_xmpp_audit_writable(void);
ngx_uint_t ngx_xmpp_audit_released(void);

/* ngx_xmpp_fail.c: failed sign-ins in shared memory */
typedef struct {
    uint32_t               key;          /* ngx_xmpp_fail_key() */
    uint32_t               failures;
    time_t                 first;        /* of the window */
    time_t                 until;        /* locked until */
} ngx_xmpp_fail_t;

uint32_t ngx_xmpp_fail_key(const char *kind, u_char *s, size_t len);
time_t ngx_xmpp_fail_locked(ngx_slab_pool_t *shpool, ngx_xmpp_fail_t *tab,
    ngx_uint_t n, uint32_t key, time_t window);
ngx_uint_t ngx_xmpp_fail_count(ngx_slab_pool_t *shpool, ngx_xmpp_fail_t *tab,
    ngx_uint_t n, uint32_t key, ngx_uint_t failed, time_t window,
    ngx_uint_t max);
ngx_int_t ngx_xmpp_auth_zone_add(ngx_conf_t *cf, ngx_xmpp_conf_t *xcf);
time_t ngx_xmpp_auth_locked(ngx_xmpp_conf_t *xcf, ngx_str_t *addr);
ngx_uint_t ngx_xmpp_auth_failed(ngx_xmpp_conf_t *xcf, ngx_str_t *addr);
time_t ngx_xmpp_auth_account_locked(ngx_xmpp_conf_t *xcf, ngx_str_t *user);
ngx_uint_t ngx_xmpp_auth_account_count(ngx_xmpp_conf_t *xcf,
    ngx_str_t *user, ngx_uint_t failed);
void ngx_xmpp_fail_peek(ngx_slab_pool_t *shpool, ngx_xmpp_fail_t *tab,
    ngx_uint_t n, uint32_t key, time_t window, ngx_uint_t clear,
    ngx_uint_t *failures, time_t *left);
ngx_int_t ngx_xmpp_auth_unlock(ngx_xmpp_conf_t *xcf, ngx_str_t *login,
    ngx_str_t *addr, ngx_uint_t clear, ngx_uint_t *failures, time_t *left);

/* ngx_xmpp_metrics.c: Prometheus metrics and the health check */
struct ngx_http_request_s;
ngx_int_t ngx_xmpp_metrics_add_zone(ngx_conf_t *cf, ngx_xmpp_conf_t *xcf);
void ngx_xmpp_metrics_init_worker(ngx_xmpp_conf_t *xcf);
void ngx_xmpp_metrics_exit_worker(void);
void ngx_xmpp_metrics_session(ngx_xmpp_session_t *s, ngx_int_t delta);
void ngx_xmpp_metrics_message(void);
void ngx_xmpp_metrics_signin(ngx_uint_t ok);
void ngx_xmpp_metrics_signin_throttled(void);
void ngx_xmpp_metrics_console_forged(void);
void ngx_xmpp_metrics_tls(ngx_uint_t record_layer);
void ngx_xmpp_metrics_ipc(ngx_uint_t dropped);
void ngx_xmpp_metrics_muc_refused(ngx_uint_t queue);
void ngx_xmpp_metrics_realtime(ngx_uint_t on, ngx_uint_t demoted);
void ngx_xmpp_metrics_parsers(ngx_uint_t cached);
uint64_t ngx_xmpp_metrics_console_forged_total(void);
void ngx_xmpp_metrics_sample(void);
struct json_t *ngx_xmpp_metrics_status_json(void);
void ngx_xmpp_metrics_ldap(cdir_status_e status, ngx_msec_t ms);
ngx_int_t ngx_xmpp_metrics_handler(struct ngx_http_request_s *r,
    ngx_xmpp_conf_t *xcf);
ngx_int_t ngx_xmpp_metrics_health_handler(struct ngx_http_request_s *r,
    ngx_xmpp_conf_t *xcf);

/* ngx_xmpp_mam.c: XEP-0359 stanza ids, XEP-0313 archive queries */
#define NGX_XMPP_NS_MAM        "urn:xmpp:mam:2"
ngx_int_t ngx_xmpp_mam_stamp(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st);
ngx_int_t ngx_xmpp_mam_refs(ngx_xmpp_stanza_t *st, ngx_str_t *replace_id,
    ngx_str_t *retract_id, ngx_str_t *retract_ns);
void ngx_xmpp_mam_iq(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st);

/* what the room archive (ngx_xmpp_mamroom.c) shares with the user's */
#define NGX_XMPP_MAM_ID_MAX    96

/* a position in an archive: (ts, node, writer, seq) orders records */
typedef struct {
    int64_t                ts;
    u_char                 node[NGX_XMPP_MAM_ID_MAX];
    size_t                 node_len;
    uint64_t               writer;
    uint64_t               seq;
    unsigned               set:1;
    unsigned               resolved:1;
} ngx_xmpp_mam_pos_t;

/* the archive a query reads: a user's 1:1 history, or a room's */
#define NGX_XMPP_MAM_USER      0
#define NGX_XMPP_MAM_ROOM      1

typedef struct ngx_xmpp_mam_row_s  ngx_xmpp_mam_row_t;

/*
 * One archive query, the context of its database request: the room's
 * archive (ngx_xmpp_mamroom.c) fills it from its own parse of the iq
 * and hands it to the same code as a user's (ngx_xmpp_mam_query()).
 */
typedef struct {
    ngx_uint_t             kind;          /* NGX_XMPP_MAM_USER / _ROOM */
    ngx_xmpp_conf_t       *xcf;
    ngx_pid_t              pid;           /* the requester's session */
    uint64_t               sid;
    ngx_str_t              owner;         /* the archive's bare JID; the
                                             strings follow the block */
    ngx_str_t              to;            /* the requester's full JID */
    ngx_str_t              with;
    ngx_str_t              iq_id;
    ngx_str_t              qid;
    int64_t                start;         /* INT64_MIN: none */
    int64_t                end;           /* INT64_MAX: none */
    ngx_xmpp_mam_pos_t     after;
    ngx_xmpp_mam_pos_t     before;
    ngx_uint_t             max;
    unsigned               backward:1;
    unsigned               real_jids:1;   /* room: <item jid/> shown */
    unsigned               with_nick:1;   /* room: with is a nick */
    unsigned               with_none:1;   /* room: with names nobody */
    size_t                 with_bare;     /* room: with is a real JID,
                                             its bare part this long;
                                             user: with is a full JID */

    /* until MariaDB has what was journaled before the query came */
    ngx_xmpp_audit_mark_t  marks[NGX_XMPP_AUDIT_MARKS];
    ngx_event_t            wait;
    ngx_msec_t             since;

    /* results, written by the thread */
    ngx_xmpp_mam_row_t    *rows;
    ngx_uint_t             nrows;
    ngx_uint_t             cap;
    unsigned               complete:1;
    unsigned               not_found:1;
    unsigned               cut:1;         /* room, nick: the scan stopped
                                             at NGX_XMPP_MAM_NICK_SCAN */
} ngx_xmpp_mam_query_t;

ngx_int_t ngx_xmpp_mam_parse_id(ngx_str_t *id, ngx_xmpp_mam_pos_t *pos);
ngx_int_t ngx_xmpp_mam_parse_time(ngx_str_t *s, int64_t *us);
u_char *ngx_xmpp_mam_stamp_time(u_char *p, int64_t us);
void ngx_xmpp_mam_defaults(ngx_xmpp_mam_query_t *q, ngx_xmpp_conf_t *xcf);
const char *ngx_xmpp_mam_field(ngx_xmpp_mam_query_t *q, ngx_pool_t *pool,
    ngx_str_t *var, ngx_str_t *v);
const char *ngx_xmpp_mam_rsm_value(ngx_xmpp_mam_query_t *q,
    const char *name, ngx_str_t *v);
const char *ngx_xmpp_mam_error_type(const char *condition);
ngx_xmpp_db_req_t *ngx_xmpp_mam_request(ngx_xmpp_mam_query_t *tmp,
    ngx_str_t *owner, ngx_str_t *to, ngx_str_t *iq_id, ngx_str_t *qid,
    ngx_log_t *log);
void ngx_xmpp_mam_query(ngx_xmpp_db_req_t *r);
ngx_int_t ngx_xmpp_audit_defer(ngx_xmpp_conf_t *xcf, struct json_t *rec,
    ngx_xmpp_audit_done_pt done, u_char *data, size_t len, ngx_log_t *log);

/* ngx_xmpp_muc.c: XEP-0045 group chat on conclave_muc_domain */
ngx_int_t ngx_xmpp_muc_init_worker(ngx_cycle_t *cycle, ngx_xmpp_conf_t *xcf);
void ngx_xmpp_muc_exit_worker(ngx_cycle_t *cycle);
ngx_uint_t ngx_xmpp_muc_ours(ngx_xmpp_conf_t *xcf, ngx_str_t *domain);
void ngx_xmpp_muc_stanza(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st);
void ngx_xmpp_muc_handoff(ngx_xmpp_session_t *s, ngx_xmpp_jid_t *to,
    u_char *data, size_t len);
/*
 * XEP-0198: occupants of session (opid, osid), or of full JID jid when
 * not NULL, are (npid, nsid) now
 */
void ngx_xmpp_muc_moved(ngx_pid_t opid, uint64_t osid, ngx_str_t *jid,
    ngx_pid_t npid, uint64_t nsid);
void ngx_xmpp_muc_ipc(ngx_pid_t from, uint64_t sid, u_char *data,
    size_t len);
/* ngx_xmpp_mucadmin.c */
void ngx_xmpp_muc_service_iq(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st);
ngx_int_t ngx_xmpp_audit_admin(ngx_xmpp_conf_t *xcf, ngx_log_t *log,
    const char *user, const char *ip, const char *sid, const char *action,
    ngx_uint_t ok, const char *error, struct json_t *params);

/* ngx_xmpp_dir.c: the directory beyond sign-in (revocation, metrics) */
extern ngx_conf_enum_t  ngx_xmpp_dir_group_modes[];
extern ngx_conf_enum_t  ngx_xmpp_dir_outage_policies[];
ngx_int_t ngx_xmpp_dir_init_worker(ngx_cycle_t *cycle, ngx_xmpp_conf_t *xcf);
void ngx_xmpp_dir_exit_worker(ngx_cycle_t *cycle);
/* a shared-roster contact: a member of a department group */
typedef struct {
    ngx_str_t              jid;           /* bare */
    ngx_str_t              name;          /* display name, may be empty */
    ngx_str_t              group;         /* roster group */
} ngx_xmpp_contact_t;

/*
 * The shared contacts of a bare JID, from this worker's last snapshot
 * of the conclave_ldap_shared_group groups: every other member of each
 * group the user is in, one element per (contact, group), appended to
 * out (an array of ngx_xmpp_contact_t the caller created); the strings
 * are in pool.  NGX_OK also when there are none.
 */
ngx_int_t ngx_xmpp_dir_shared_contacts(ngx_str_t *bare, ngx_pool_t *pool,
    ngx_array_t *out);
/* RFC 6121 2.1.3 roster result of the shared contacts (until rosters) */
void ngx_xmpp_dir_roster_reply(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st);
/* ngx_xmpp_search.c: XEP-0055 against the directory */
void ngx_xmpp_search_iq(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st);
/* ngx_xmpp_roster.c: a shared contact as a roster <item/> */
void ngx_xmpp_roster_shared_item(ngx_xmpp_wbuf_t *b, ngx_xmpp_contact_t *c,
    ngx_uint_t i, ngx_uint_t n);

/* NGX_XMPP_ROLE_* of a signed-in session; 0 before sign-in */
ngx_uint_t ngx_xmpp_session_roles(ngx_xmpp_session_t *s);
struct json_t *ngx_xmpp_dir_json(ngx_xmpp_conf_t *xcf);

/* ngx_xmpp_sm.c: XEP-0198 stream management */
ngx_uint_t ngx_xmpp_sm_offered(ngx_xmpp_session_t *s);
void ngx_xmpp_sm_element(ngx_xmpp_session_t *s, ngx_xmpp_node_t *n);
ngx_uint_t ngx_xmpp_sm_enabled(ngx_xmpp_session_t *s);
ngx_uint_t ngx_xmpp_sm_resuming(ngx_xmpp_session_t *s);
void ngx_xmpp_sm_handled(ngx_xmpp_session_t *s);
void ngx_xmpp_sm_sent(ngx_xmpp_session_t *s, u_char *data, size_t len);
ngx_int_t ngx_xmpp_sm_detach(ngx_xmpp_session_t *s);
void ngx_xmpp_sm_release(ngx_xmpp_session_t *s);
ngx_int_t ngx_xmpp_sm_deliver(uint64_t sid, u_char *data, size_t len);
/* what became of a stanza its session could not take */
#define NGX_XMPP_UNDELIVERABLE_DROPPED    0
#define NGX_XMPP_UNDELIVERABLE_RESOURCES  1
#define NGX_XMPP_UNDELIVERABLE_STORED     2
#define NGX_XMPP_UNDELIVERABLE_BOUNCED    3
#define NGX_XMPP_UNDELIVERABLE_N          4
ngx_uint_t ngx_xmpp_sm_undeliverable(ngx_xmpp_conf_t *xcf,
    ngx_pool_t *pool, uint64_t sid, u_char *data, size_t len);
ngx_int_t ngx_xmpp_sm_hold(ngx_xmpp_session_t *s, u_char *data,
    size_t len);
/* a session being resumed holds command cmd (NGX_XMPP_IPC_*) for later */
ngx_int_t ngx_xmpp_sm_hold_ipc(ngx_xmpp_session_t *s, ngx_uint_t cmd,
    u_char *data, size_t len);
/* ngx_xmpp_ipc_send(): NGX_OK if held for the resumption of (pid, sid) */
ngx_int_t ngx_xmpp_sm_hold_for(ngx_pid_t pid, ngx_uint_t cmd, uint64_t sid,
    u_char *data, size_t len);
void ngx_xmpp_sm_kick(uint64_t sid);
void ngx_xmpp_sm_ipc(ngx_uint_t cmd, ngx_pid_t from, uint64_t sid,
    u_char *data, size_t len);
void ngx_xmpp_sm_exit_worker(void);
/* ngx_xmpp_smpark.c: a parked session answers probes, queues PEP */
ngx_xmpp_session_t *ngx_xmpp_sm_parked(uint64_t sid);
void ngx_xmpp_sm_pep(uint64_t sid, ngx_str_t *node, u_char *data,
    size_t len);
void ngx_xmpp_sm_blocking(uint64_t sid, u_char *data, size_t len);

/* ngx_xmpp_disco.c: IQs the server answers itself */
void ngx_xmpp_disco_iq(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st);
/* the server's disco#info features (XEP-0030), hashed by XEP-0115 */
extern const char  *ngx_xmpp_disco_features[];
#define NGX_XMPP_DISCO_CATEGORY  "server"
#define NGX_XMPP_DISCO_TYPE      "im"
#define NGX_XMPP_DISCO_NAME      "Conclave"
#define NGX_XMPP_CAPS_NODE       "https://conclave.example.com/caps"

/* ngx_xmpp_pep.c: XEP-0163 personal eventing on the account */
#define NGX_XMPP_NS_PUBSUB         "http://jabber.org/protocol/pubsub"
#define NGX_XMPP_NS_PUBSUB_OWNER   NGX_XMPP_NS_PUBSUB "#owner"
#define NGX_XMPP_NS_PUBSUB_EVENT   NGX_XMPP_NS_PUBSUB "#event"
#define NGX_XMPP_NS_PUBSUB_ERRORS  NGX_XMPP_NS_PUBSUB "#errors"
#define NGX_XMPP_NS_PRIVATE        "jabber:iq:private"
#define NGX_XMPP_NS_BOOKMARKS      "urn:xmpp:bookmarks:1"

#define NGX_XMPP_PEP_ACCESS_OPEN       0
#define NGX_XMPP_PEP_ACCESS_PRESENCE   1
#define NGX_XMPP_PEP_ACCESS_WHITELIST  2
#define NGX_XMPP_PEP_LAST_NEVER                0
#define NGX_XMPP_PEP_LAST_ON_SUB               1
#define NGX_XMPP_PEP_LAST_ON_SUB_AND_PRESENCE  2
#define NGX_XMPP_PEP_SET_ACCESS   0x01
#define NGX_XMPP_PEP_SET_PERSIST  0x02
#define NGX_XMPP_PEP_SET_MAX      0x04
#define NGX_XMPP_PEP_SET_LAST     0x08

/* a node's options (XEP-0060 16.4.4); max_items 0 is "max" */
typedef struct {
    ngx_uint_t             access;
    ngx_uint_t             persist;
    ngx_uint_t             max_items;
    ngx_uint_t             send_last;
    ngx_uint_t             set;           /* NGX_XMPP_PEP_SET_* given */
} ngx_xmpp_pep_config_t;

void ngx_xmpp_pep_iq(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_node_t *q);
void ngx_xmpp_pep_ipc(uint64_t sid, u_char *data, size_t len);
void ngx_xmpp_pep_last_items(ngx_xmpp_session_t *s);
void ngx_xmpp_pep_approved(ngx_xmpp_conf_t *xcf, ngx_str_t *publisher,
    ngx_str_t *subscriber);
void ngx_xmpp_pep_notify(ngx_xmpp_conf_t *xcf, ngx_str_t *owner,
    ngx_str_t *node, ngx_xmpp_wbuf_t *subs, ngx_uint_t whitelist,
    u_char *body, size_t len);
void ngx_xmpp_pep_config_default(ngx_xmpp_pep_config_t *c);
ngx_int_t ngx_xmpp_pep_form(ngx_xmpp_conf_t *xcf, ngx_pool_t *pool,
    ngx_xmpp_node_t *x, ngx_xmpp_pep_config_t *c);
ngx_int_t ngx_xmpp_pep_get(u_char **pp, u_char *end, ngx_str_t *s,
    ngx_uint_t wide);
void ngx_xmpp_pep_error(ngx_xmpp_session_t *s, ngx_str_t *id,
    ngx_str_t *from, const char *type, const char *cond, const char *app,
    const char *text);
ngx_xmpp_wbuf_t *ngx_xmpp_pep_result(ngx_xmpp_session_t *s, ngx_str_t *id,
    ngx_str_t *from, size_t max);

/* ngx_xmpp_private.c: XEP-0049, XEP-0402 5.3 bookmarks compatibility */
void ngx_xmpp_private_iq(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_node_t *q);

/* ngx_xmpp_caps.c: XEP-0115 entity capabilities of clients */
void ngx_xmpp_caps_presence(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_uint_t initial);
ngx_int_t ngx_xmpp_caps_response(ngx_xmpp_session_t *s,
    ngx_xmpp_stanza_t *st);
ngx_uint_t ngx_xmpp_caps_notify(ngx_xmpp_session_t *s, ngx_str_t *node);
void ngx_xmpp_caps_get(ngx_xmpp_session_t *s, ngx_str_t *ver,
    ngx_str_t *notify);
ngx_int_t ngx_xmpp_caps_put(ngx_xmpp_session_t *s, ngx_str_t *ver,
    ngx_str_t *notify);
ngx_int_t ngx_xmpp_caps_ver(ngx_pool_t *pool, ngx_xmpp_node_t *query,
    ngx_str_t *ver);
/* the ver of the server's own disco#info, computed once */
ngx_str_t *ngx_xmpp_caps_server_ver(void);

/* ngx_xmpp_vcard.c: XEP-0054 vCards and XEP-0153 avatar hashes */
ngx_uint_t ngx_xmpp_vcard_is(ngx_xmpp_stanza_t *st);
void ngx_xmpp_vcard_iq(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st);
void ngx_xmpp_vcard_presence(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st);
char *ngx_xmpp_vcard_attr(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_xmpp_vcard_conf(ngx_conf_t *cf, ngx_xmpp_conf_t *xcf);
void ngx_xmpp_vcard_reply(ngx_xmpp_session_t *s, u_char *id,
    size_t id_len, ngx_uint_t has_to, ngx_str_t *local, ngx_int_t rc,
    ngx_str_t *xml);

/*
 * ngx_xmpp_avatar.c: XEP-0084 avatars of directory photos, XEP-0398
 * conversion, and the vCard fields users set themselves (issue 6.4)
 */
#define NGX_XMPP_NS_AVATAR_DATA  "urn:xmpp:avatar:data"
#define NGX_XMPP_NS_AVATAR_META  "urn:xmpp:avatar:metadata"
#define NGX_XMPP_NS_PEP_VCARD    "urn:xmpp:pep-vcard-conversion:0"
ngx_int_t ngx_xmpp_avatar_pep(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_node_t *a, ngx_str_t *owner, ngx_str_t *node, ngx_uint_t get);
ngx_int_t ngx_xmpp_avatar_bind(ngx_xmpp_session_t *s, ngx_str_t *id);
void ngx_xmpp_avatar_ipc(uint64_t sid, u_char *data, size_t len);
ngx_int_t ngx_xmpp_avatar_vcard_get(ngx_xmpp_session_t *s, u_char *id,
    size_t id_len, ngx_uint_t has_to, ngx_str_t *local, ngx_str_t *xml);
void ngx_xmpp_avatar_vcard_set(ngx_xmpp_session_t *s,
    ngx_xmpp_stanza_t *st);
void ngx_xmpp_stream_bind_result(ngx_xmpp_session_t *s, ngx_str_t *id);
void ngx_xmpp_vcard_exit_worker(void);

/* ngx_xmpp_admin*.c: the admin console (its handler: http glue) */
void ngx_xmpp_admin_conf_create(ngx_xmpp_conf_t *xcf);
char *ngx_xmpp_admin_conf_init(ngx_conf_t *cf, ngx_xmpp_conf_t *xcf);
char *ngx_xmpp_admin_conf_role(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_xmpp_admin_init_worker(ngx_cycle_t *cycle,
    ngx_xmpp_conf_t *xcf);
void ngx_xmpp_admin_exit_worker(ngx_cycle_t *cycle, ngx_xmpp_conf_t *xcf);
void ngx_xmpp_admin_kick_local(uint64_t sid);

/* ngx_xmpp_hostmeta.c: XEP-0156 discovery (its handler: http glue) */
char *ngx_xmpp_hostmeta_conf_ws_url(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_xmpp_hostmeta_conf_bosh_url(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


extern ngx_module_t  ngx_http_conclave_module;
extern ngx_module_t  ngx_stream_conclave_module;


#endif /* _NGX_XMPP_H_INCLUDED_ */
