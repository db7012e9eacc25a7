
/*
 * What ngx_xmpp_pep.c and ngx_xmpp_pepfan.c (event loop) and
 * ngx_xmpp_pepdb.c (pool threads) share: one request's context.
 */


#ifndef _NGX_XMPP_PEP_H_INCLUDED_
#define _NGX_XMPP_PEP_H_INCLUDED_


#include "ngx_xmpp.h"


#define NGX_XMPP_PEP_PUBLISH      1
#define NGX_XMPP_PEP_RETRACT      2
#define NGX_XMPP_PEP_ITEMS        3
#define NGX_XMPP_PEP_DELETE       4
#define NGX_XMPP_PEP_CONF_GET     5
#define NGX_XMPP_PEP_CONF_SET     6
#define NGX_XMPP_PEP_CREATE       7
#define NGX_XMPP_PEP_LAST         8
/* XEP-0049 (ngx_xmpp_private.c) */
#define NGX_XMPP_PEP_PRIV_GET     9
#define NGX_XMPP_PEP_PRIV_SET     10
#define NGX_XMPP_PEP_BM_GET       11
#define NGX_XMPP_PEP_BM_SET       12
#define NGX_XMPP_PEP_LAST_OF      13     /* of one publisher, approved */
/* XEP-0398 and user-set vCard fields (ngx_xmpp_avatar.c) */
#define NGX_XMPP_PEP_VCARD_SET    14
#define NGX_XMPP_PEP_VCARD_GET    15
#define NGX_XMPP_PEP_AVATAR_LOAD  16

/* what the transaction found wrong (ctx->error) */
#define NGX_XMPP_PEP_E_NOT_FOUND     1
#define NGX_XMPP_PEP_E_PRECONDITION  2
#define NGX_XMPP_PEP_E_NODE_FULL     3
#define NGX_XMPP_PEP_E_MAX_NODES     4
#define NGX_XMPP_PEP_E_PRESENCE      5
#define NGX_XMPP_PEP_E_WHITELIST     6
#define NGX_XMPP_PEP_E_EXISTS        7
#define NGX_XMPP_PEP_E_AVATAR        8    /* no data item of that SHA-1 */

#define NGX_XMPP_PEP_IDS_MAX      32
#define NGX_XMPP_PEP_LAST_MAX     256
#define NGX_XMPP_PEP_NAME_MAX     255

/* XEP-0048: the XEP-0049 namespace and the XEP-0223 node */
#define NGX_XMPP_NS_STORAGE_BM    "storage:bookmarks"


typedef struct {
    uint64_t                sid;
    ngx_uint_t              op;
    u_char                 *mem;
    ngx_str_t               owner;
    ngx_str_t               requester;
    ngx_str_t               node;
    ngx_str_t               item_id;
    ngx_str_t               payload;
    ngx_str_t               iq_id;
    ngx_str_t               iq_to;        /* empty: the request had none */
    ngx_str_t               ids;          /* items by id: u16 len, bytes */
    ngx_xmpp_pep_config_t   want;
    ngx_uint_t              max_req;      /* items: max_items, 0: all */
    ngx_uint_t              notify;       /* retract notify='true' */
    ngx_uint_t              limit_items;
    ngx_uint_t              limit_nodes;
    size_t                  limit_size;
    unsigned                contact:1;    /* shared directory contact */
    unsigned                bm_pep:1;     /* via storage:bookmarks (PEP) */
    unsigned                bm_list:1;    /* out: the bookmarks after it */

    ngx_uint_t              error;
    uint64_t                count;        /* of the last count query */
    unsigned                counted:1;
    ngx_xmpp_pep_config_t   conf;         /* the node's */
    ngx_xmpp_wbuf_t         out;          /* rows, see the row callbacks */
    ngx_xmpp_wbuf_t         subs;         /* u16 len, bare JID */

    /*
     * XEP-0084/0398 (ngx_xmpp_avatar.c): a publish that changes the
     * avatar sets avatar and its hash ("" none); a vCard set carries
     * the user's own fields and the avatar's data item (heap, freed
     * with the request).
     */
    unsigned                avatar:1;
    u_char                  avatar_hash[41];
    ngx_str_t               fields;
    ngx_str_t               avatar_data;
} ngx_xmpp_pep_ctx_t;


extern const char  *ngx_xmpp_pep_access[];
extern const char  *ngx_xmpp_pep_send_last_names[];


static ngx_inline ngx_uint_t
ngx_xmpp_pep_str_is(ngx_str_t *s, const char *lit)
{
    size_t  len;

    len = ngx_strlen(lit);

    return s->len == len && ngx_strncmp(s->data, lit, len) == 0;
}


static ngx_inline ngx_int_t
ngx_xmpp_pep_lookup(const char **names, ngx_str_t *v)
{
    ngx_int_t  i;

    for (i = 0; names[i]; i++) {
        if (ngx_xmpp_pep_str_is(v, names[i])) {
            return i;
        }
    }

    return NGX_ERROR;
}


int ngx_xmpp_pep_run(struct st_mysql *conn, ngx_xmpp_db_req_t *r);
/*
 * in: owner, node, item id, payload, ids; each may be NULL.  NULL: no
 * memory, and the request st (if any) has been answered.
 */
ngx_xmpp_db_req_t *ngx_xmpp_pep_req(ngx_xmpp_session_t *s,
    ngx_xmpp_stanza_t *st, ngx_uint_t op, ngx_str_t **in);
void ngx_xmpp_pep_post(ngx_xmpp_session_t *s, ngx_xmpp_db_req_t *r);
ngx_xmpp_session_t *ngx_xmpp_pep_finish(ngx_xmpp_db_req_t *r,
    ngx_uint_t *failed);
void ngx_xmpp_pep_send(ngx_xmpp_session_t *s, ngx_xmpp_pep_ctx_t *ctx,
    ngx_xmpp_wbuf_t *b);
void ngx_xmpp_pep_put16(ngx_xmpp_wbuf_t *b, ngx_str_t *s);
void ngx_xmpp_pep_put32(ngx_xmpp_wbuf_t *b, ngx_str_t *s);
int ngx_xmpp_pep_payload_row(ngx_xmpp_db_req_t *r, ngx_str_t *cols,
    ngx_uint_t n);
int ngx_xmpp_pep_sql_node(struct st_mysql *conn, ngx_xmpp_db_req_t *r,
    ngx_str_t *owner, ngx_str_t *node, ngx_uint_t lock);
int ngx_xmpp_pep_sql_subscribers(struct st_mysql *conn,
    ngx_xmpp_db_req_t *r, ngx_str_t *owner);
ngx_int_t ngx_xmpp_pep_parse_items(ngx_xmpp_session_t *s,
    ngx_xmpp_stanza_t *st, ngx_xmpp_node_t *a, ngx_uint_t *max,
    ngx_str_t *ids);
ngx_uint_t ngx_xmpp_pep_is_contact(ngx_xmpp_session_t *s, ngx_pool_t *pool,
    ngx_str_t *owner);

/* ngx_xmpp_pepfan.c: notifications and last items (XEP-0163 section 4) */
ngx_int_t ngx_xmpp_pep_event(ngx_xmpp_wbuf_t *b, ngx_xmpp_pep_ctx_t *ctx);
void ngx_xmpp_pep_send_last(ngx_xmpp_session_t *s, ngx_xmpp_pep_ctx_t *ctx);
void ngx_xmpp_pep_send_last_of(ngx_xmpp_conf_t *xcf,
    ngx_xmpp_pep_ctx_t *ctx);

/* ngx_xmpp_avatar.c, in the pool threads and on the loop */
int ngx_xmpp_avatar_run(struct st_mysql *conn, ngx_xmpp_db_req_t *r);
int ngx_xmpp_avatar_sql_check(struct st_mysql *conn, ngx_xmpp_db_req_t *r);
ngx_int_t ngx_xmpp_avatar_metadata(ngx_xmpp_session_t *s,
    ngx_xmpp_stanza_t *st, ngx_xmpp_node_t *publish, u_char *hash);
void ngx_xmpp_avatar_done(ngx_xmpp_session_t *s, ngx_xmpp_db_req_t *r);
void ngx_xmpp_avatar_published(ngx_xmpp_conf_t *xcf,
    ngx_xmpp_pep_ctx_t *ctx);

/* ngx_xmpp_private.c: XEP-0402 section 5.3 (#compat-pep) */
void ngx_xmpp_private_pep(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st,
    ngx_xmpp_node_t *a, ngx_uint_t get);
void ngx_xmpp_private_bm_pep_notify(ngx_xmpp_conf_t *xcf, ngx_str_t *owner,
    u_char *items, size_t len);


#endif /* _NGX_XMPP_PEP_H_INCLUDED_ */
