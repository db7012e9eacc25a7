
/*
 * What ngx_xmpp_blocking.c (the list: storage, cache, pushes) and
 * ngx_xmpp_blockenf.c (its enforcement, XEP-0191 section 3.5) share.
 */


#ifndef _NGX_XMPP_BLOCKING_H_INCLUDED_
#define _NGX_XMPP_BLOCKING_H_INCLUDED_


#include "ngx_xmpp.h"


#define NGX_XMPP_BLOCKING_JID_MAX      512    /* the column's width */
/* a resumed session (XEP-0198) gets a burst while its list is read */
#define NGX_XMPP_BLOCKING_PENDING      1024
#define NGX_XMPP_BLOCKING_PENDING_SIZE (1024 * 1024)
#define NGX_XMPP_BLOCKING_FROM_MAX     (3 * NGX_XMPP_JID_PART_MAX + 3)

#define NGX_XMPP_BLOCKING_LOAD         0
#define NGX_XMPP_BLOCKING_GET          1
#define NGX_XMPP_BLOCKING_BLOCK        2
#define NGX_XMPP_BLOCKING_UNBLOCK      3


struct ngx_xmpp_blocklist_s {
    ngx_xmpp_session_t    *session;
    ngx_xmpp_db_req_t     *req;           /* the load, until done */
    ngx_xmpp_wbuf_t        list;          /* the JIDs, each NUL-ended */
    ngx_uint_t             n;
    ngx_xmpp_wbuf_t        pending;       /* [size_t len][stanza] ... */
    ngx_uint_t             npending;
    ngx_xmpp_wbuf_t        deferred;      /* [size_t len][op JIDs] ... */
    unsigned               loaded:1;
    unsigned               requested:1;   /* the client asked for it */
    unsigned               stale:1;       /* changed while being read */
    unsigned               unchecked:1;   /* the queue overflowed */
};


static ngx_inline ngx_int_t
ngx_xmpp_blocking_eq(u_char *a, size_t alen, u_char *b, size_t blen)
{
    return alen == blen && ngx_memcmp(a, b, alen) == 0;
}


void ngx_xmpp_blocking_release(ngx_xmpp_session_t *s);


#endif /* _NGX_XMPP_BLOCKING_H_INCLUDED_ */
