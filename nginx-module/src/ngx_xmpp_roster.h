
/*
 * What ngx_xmpp_roster.c (event loop) and ngx_xmpp_rosterdb.c (pool
 * threads) share: one roster request's context and the row of
 * roster_item it works on.
 */


#ifndef _NGX_XMPP_ROSTER_H_INCLUDED_
#define _NGX_XMPP_ROSTER_H_INCLUDED_


#include "ngx_xmpp.h"


#define NGX_XMPP_ROSTER_JID_MAX      255
#define NGX_XMPP_ROSTER_NAME_MAX     255
#define NGX_XMPP_ROSTER_GROUP_MAX    255
#define NGX_XMPP_ROSTER_GROUPS_MAX   32
#define NGX_XMPP_ROSTER_TRIES        3
#define NGX_XMPP_ROSTER_OUT_MAX      (32 * 1024 * 1024)

#define NGX_XMPP_ROSTER_OP_GET           0
#define NGX_XMPP_ROSTER_OP_SET           1
#define NGX_XMPP_ROSTER_OP_REMOVE        2
#define NGX_XMPP_ROSTER_OP_SUBSCRIBE     3
#define NGX_XMPP_ROSTER_OP_SUBSCRIBED    4
#define NGX_XMPP_ROSTER_OP_UNSUBSCRIBE   5
#define NGX_XMPP_ROSTER_OP_UNSUBSCRIBED  6
#define NGX_XMPP_ROSTER_OP_PRESENCE      7
#define NGX_XMPP_ROSTER_OP_PROBE         8


/* one roster_item row */
typedef struct {
    ngx_str_t              name;          /* data NULL: none; heap */
    ngx_str_t              groups;        /* escaped <group/>s; heap */
    uint64_t               ver;
    unsigned               found:1;
    unsigned               sub_to:1;
    unsigned               sub_from:1;
    unsigned               ask_out:1;
    unsigned               pending_in:1;
    unsigned               listed:1;
} ngx_xmpp_ritem_t;


typedef struct {
    ngx_uint_t             op;
    uint64_t               sid;
    ngx_uint_t             seq;           /* OP_PRESENCE: s->presence_seq */
    ngx_uint_t             flags;         /* OP_PRESENCE */
    ngx_uint_t             max_items;

    /* inputs, in one heap block (mem) */
    u_char                *mem;
    ngx_str_t              owner;
    ngx_str_t              contact;
    ngx_str_t              name;          /* data NULL: absent */
    ngx_str_t              groups;
    ngx_str_t              id;
    ngx_str_t              reply_from;
    ngx_str_t              ver;           /* OP_GET: data NULL: absent */
    ngx_str_t              stanza;        /* presence for the contact;
                                             OP_PROBE: the prober */

    /* results */
    const char            *refused;       /* a stanza error condition */
    ngx_xmpp_ritem_t       oi;            /* owner's item of contact */
    ngx_xmpp_ritem_t       ci;            /* contact's item of owner */
    ngx_xmpp_ritem_t      *cur;
    uint64_t               count;
    uint64_t               cur_ver;
    ngx_xmpp_wbuf_t        out;           /* GET: items; PRESENCE: list */
    ngx_xmpp_wbuf_t        jids;          /* GET: their JIDs, sorted;
                                             PRESENCE: the blocklist */
    ngx_uint_t             nblocked;
    unsigned               opush:1;
    unsigned               oremoved:1;
    unsigned               cpush:1;
    unsigned               deliver:1;     /* stanza to the contact */
    unsigned               deliver_unsub:1;
    unsigned               deliver_unsubd:1;
    unsigned               reply_subscribed:1;
    unsigned               probe_c2o:1;
    unsigned               probe_o2c:1;
    unsigned               unavail_c2o:1;
    unsigned               unavail_o2c:1;
} ngx_xmpp_roster_ctx_t;


int ngx_xmpp_roster_run(struct st_mysql *conn, ngx_xmpp_db_req_t *r);
void ngx_xmpp_roster_item_xml(ngx_xmpp_wbuf_t *b, ngx_str_t *jid,
    ngx_xmpp_ritem_t *it, ngx_uint_t removed);


#endif /* _NGX_XMPP_ROSTER_H_INCLUDED_ */
