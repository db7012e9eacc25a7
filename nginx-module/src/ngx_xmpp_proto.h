
/*
 * Conclave: pure protocol helpers (JID, SASL PLAIN, WebSocket framing,
 * UTF-8, the BOSH request body).  Nothing here depends on nginx, so the
 * unit tests in tests/unit/ link these files alone.
 */


#ifndef _NGX_XMPP_PROTO_H_INCLUDED_
#define _NGX_XMPP_PROTO_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


/* RFC 7622 section 3: each part is at most 1023 octets */
#define NGX_XMPP_JID_PART_MAX   1023


typedef struct {
    const unsigned char  *local;
    size_t                local_len;
    const unsigned char  *domain;
    size_t                domain_len;
    const unsigned char  *resource;
    size_t                resource_len;
} ngx_xmpp_jid_parts_t;


int ngx_xmpp_jid_split(const unsigned char *s, size_t len,
    ngx_xmpp_jid_parts_t *jid);
int ngx_xmpp_jid_local_valid(const unsigned char *s, size_t len);
int ngx_xmpp_jid_resource_valid(const unsigned char *s, size_t len);
void ngx_xmpp_ascii_lower(unsigned char *s, size_t len);


/* RFC 4616: each of authzid, authcid and passwd is at most 255 octets */
#define NGX_XMPP_SASL_FIELD_MAX  255


typedef struct {
    const unsigned char  *authzid;
    size_t                authzid_len;
    const unsigned char  *authcid;
    size_t                authcid_len;
    const unsigned char  *passwd;
    size_t                passwd_len;
} ngx_xmpp_sasl_plain_t;


int ngx_xmpp_sasl_plain_parse(const unsigned char *msg, size_t len,
    ngx_xmpp_sasl_plain_t *out);


/* incremental UTF-8 validation (RFC 3629); 0 is the "between chars" state */
#define NGX_XMPP_UTF8_ACCEPT    0
#define NGX_XMPP_UTF8_REJECT    0xffffffffu

uint32_t ngx_xmpp_utf8_step(uint32_t state, const unsigned char *p,
    size_t len);


/* RFC 6455 section 5.2 opcodes and section 7.4.1 close codes */
#define NGX_XMPP_WS_OP_CONT      0x0
#define NGX_XMPP_WS_OP_TEXT      0x1
#define NGX_XMPP_WS_OP_BINARY    0x2
#define NGX_XMPP_WS_OP_CLOSE     0x8
#define NGX_XMPP_WS_OP_PING      0x9
#define NGX_XMPP_WS_OP_PONG      0xa

#define NGX_XMPP_WS_CLOSE_NORMAL       1000
#define NGX_XMPP_WS_CLOSE_GOING_AWAY   1001
#define NGX_XMPP_WS_CLOSE_PROTOCOL     1002
#define NGX_XMPP_WS_CLOSE_UNSUPPORTED  1003
#define NGX_XMPP_WS_CLOSE_BAD_DATA     1007
#define NGX_XMPP_WS_CLOSE_POLICY       1008
#define NGX_XMPP_WS_CLOSE_TOO_BIG      1009
#define NGX_XMPP_WS_CLOSE_INTERNAL     1011


typedef enum {
    NGX_XMPP_WS_EV_NEED_MORE = 0,
    NGX_XMPP_WS_EV_DATA,          /* text payload bytes: data, len */
    NGX_XMPP_WS_EV_MESSAGE_END,   /* the text message is complete */
    NGX_XMPP_WS_EV_PING,          /* control payload: ctl, ctl_len */
    NGX_XMPP_WS_EV_PONG,
    NGX_XMPP_WS_EV_CLOSE,         /* close_code (0: none), ctl = reason */
    NGX_XMPP_WS_EV_ERROR          /* close_code says why */
} ngx_xmpp_ws_ev_e;


typedef struct {
    /* limits, set by the caller */
    uint64_t        max_message;

    /* frame state */
    unsigned        state;
    unsigned char   hdr[14];
    unsigned        hdr_len;
    unsigned        hdr_need;
    unsigned        fin:1;
    unsigned        opcode:4;
    uint64_t        remaining;
    unsigned char   mask[4];
    unsigned        mask_pos;

    /* message state: fragmentation (RFC 6455 section 5.4) */
    unsigned        in_message:1;
    uint64_t        message_len;
    uint32_t        utf8;

    /* control frames are at most 125 bytes and are buffered whole */
    unsigned char   ctl[125];
    size_t          ctl_len;

    /* event output */
    unsigned char  *data;
    size_t          len;
    unsigned        close_code;
} ngx_xmpp_ws_decoder_t;


void ngx_xmpp_ws_decoder_init(ngx_xmpp_ws_decoder_t *d, uint64_t max_message);
ngx_xmpp_ws_ev_e ngx_xmpp_ws_decode(ngx_xmpp_ws_decoder_t *d,
    unsigned char **pos, unsigned char *last);
size_t ngx_xmpp_ws_frame_header(unsigned char *buf, unsigned opcode,
    uint64_t len);


/* ngx_xmpp_boshbody.c: a BOSH request <body/> (XEP-0124, XEP-0206) */
#define NGX_XMPP_BOSH_ATTR_MAX  128
#define NGX_XMPP_BOSH_KEY_LEN   32          /* hex digits of 128 bits */
#define NGX_XMPP_BOSH_SID_LEN   (8 + 16 + NGX_XMPP_BOSH_KEY_LEN)

typedef struct {
    void                 *doc;       /* xmlDocPtr */
    void                 *body;      /* the <body/> element */
    void                 *cursor;    /* the child last serialized */
    void                 *buf;       /* xmlBufferPtr */
    const unsigned char  *child;     /* ngx_xmpp_bosh_body_next() */
    size_t                child_len;
    const char           *error;     /* why the parse failed */
    uint64_t              rid;
    char                  sid[NGX_XMPP_BOSH_ATTR_MAX];
    size_t                sid_len;   /* 0: absent (session creation) */
    unsigned              wait;      /* seconds; 0: absent */
    unsigned              pause;     /* seconds; 0: absent */
    int                   hold;      /* -1: absent */
    unsigned              terminate:1;
    unsigned              restart:1;
    unsigned              ver:1;     /* "ver" present: not a legacy client */
} ngx_xmpp_bosh_body_t;

int ngx_xmpp_bosh_body_parse(ngx_xmpp_bosh_body_t *b,
    const unsigned char *data, size_t len);
int ngx_xmpp_bosh_body_next(ngx_xmpp_bosh_body_t *b);
int ngx_xmpp_bosh_body_empty(ngx_xmpp_bosh_body_t *b);
void ngx_xmpp_bosh_body_free(ngx_xmpp_bosh_body_t *b);
int ngx_xmpp_bosh_sid_split(const char *sid, size_t len, uint32_t *pid,
    uint64_t *id, const char **key);


#endif /* _NGX_XMPP_PROTO_H_INCLUDED_ */
