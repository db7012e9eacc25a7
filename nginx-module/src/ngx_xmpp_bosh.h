
/*
 * What the two halves of BOSH share: ngx_xmpp_bosh_http.c (the HTTP
 * requests and their hand-off between workers) and ngx_xmpp_bosh.c (the
 * session, its rid window and held requests).  The public interface
 * stays in ngx_xmpp.h.
 */


#ifndef _NGX_XMPP_BOSH_H_INCLUDED_
#define _NGX_XMPP_BOSH_H_INCLUDED_


#include <ngx_http.h>

#include "ngx_xmpp.h"


#define NGX_XMPP_NS_HTTPBIND  "http://jabber.org/protocol/httpbind"

/* what fits one inter-worker datagram, with room for its header */
#define NGX_XMPP_BOSH_IPC_MAX  (255 * 1024)


/*
 * Who gets the answer: a local HTTP request or another worker's.  A
 * legacy client (no "ver" when it created its session) gets the HTTP
 * status of a terminal condition, any other client HTTP 200 (XEP-0124
 * section 17).
 */
typedef struct {
    ngx_http_request_t         *r;
    ngx_pid_t                   pid;
    uint64_t                    tag;
    unsigned                    legacy:1;
} ngx_xmpp_bosh_peer_t;


/* ngx_xmpp_bosh_http.c */

/*
 * An answer, its HTTP status (4 bytes, host order) then the XML, to a
 * local request or back to the worker that forwarded it; and the
 * terminating body of an XEP-0124 section 17 condition.
 */
void ngx_xmpp_bosh_peer_answer(ngx_xmpp_bosh_peer_t *peer, u_char *data,
    size_t len);
void ngx_xmpp_bosh_peer_error(ngx_xmpp_bosh_peer_t *peer,
    const char *condition);

/* ngx_xmpp_bosh.c */

/* a parsed request for a session of this worker, or a new session */
void ngx_xmpp_bosh_serve(ngx_xmpp_conf_t *xcf, ngx_xmpp_bosh_peer_t *peer,
    ngx_xmpp_bosh_body_t *body, u_char *data, size_t len);


#endif /* _NGX_XMPP_BOSH_H_INCLUDED_ */
