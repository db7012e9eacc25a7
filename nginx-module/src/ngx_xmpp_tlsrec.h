
/*
 * Conclave: the TLS 1.3 record layer (RFC 8446 sections 5 and 7.1-7.3)
 * that carries a connection after OpenSSL has done its handshake.  Pure
 * C over OpenSSL's EVP API, nothing of nginx: the unit test and the
 * fuzzer link it alone (ngx_xmpp_tls.c is the nginx side).
 */


#ifndef _NGX_XMPP_TLSREC_H_INCLUDED_
#define _NGX_XMPP_TLSREC_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


#define NGX_XMPP_TLSREC_HDR        5
#define NGX_XMPP_TLSREC_TAG        16
/* 5.1: 2^14 bytes of plaintext per record */
#define NGX_XMPP_TLSREC_PLAIN      16384
/* 5.2: TLSCiphertext.length is at most 2^14 + 256 */
#define NGX_XMPP_TLSREC_CIPHER     (16384 + 256)
#define NGX_XMPP_TLSREC_MAX        (NGX_XMPP_TLSREC_HDR                      \
                                    + NGX_XMPP_TLSREC_CIPHER)
/* a record we send: header, plaintext, content type, tag */
#define NGX_XMPP_TLSREC_SEALED(n)  (NGX_XMPP_TLSREC_HDR + (n) + 1            \
                                    + NGX_XMPP_TLSREC_TAG)
/* our KeyUpdate record (4.6.3): a 5-byte handshake message */
#define NGX_XMPP_TLSREC_KU_LEN     NGX_XMPP_TLSREC_SEALED(5)
#define NGX_XMPP_TLSREC_ALERT_LEN  NGX_XMPP_TLSREC_SEALED(2)

/*
 * 5.5: AES-GCM may protect at most 2^24.5 full records under one key;
 * we rekey at 2^24, well before, for every suite alike.
 */
#define NGX_XMPP_TLSREC_REKEY      (1ULL << 24)

/* content types, 5.1 */
#define NGX_XMPP_TLSREC_CCS        20
#define NGX_XMPP_TLSREC_ALERT      21
#define NGX_XMPP_TLSREC_HANDSHAKE  22
#define NGX_XMPP_TLSREC_APPDATA    23

/* alert descriptions, 6 */
#define NGX_XMPP_TLSREC_CLOSE_NOTIFY        0
#define NGX_XMPP_TLSREC_UNEXPECTED_MESSAGE  10
#define NGX_XMPP_TLSREC_BAD_RECORD_MAC      20
#define NGX_XMPP_TLSREC_RECORD_OVERFLOW     22
#define NGX_XMPP_TLSREC_ILLEGAL_PARAMETER   47
#define NGX_XMPP_TLSREC_DECODE_ERROR        50
#define NGX_XMPP_TLSREC_INTERNAL_ERROR      80
#define NGX_XMPP_TLSREC_USER_CANCELED       90


/* what ngx_xmpp_tlsrec_read() found */
typedef enum {
    NGX_XMPP_TLSREC_AGAIN = 0,   /* no complete record yet */
    NGX_XMPP_TLSREC_DATA,        /* application data (maybe empty) */
    NGX_XMPP_TLSREC_CONTROL,     /* KeyUpdate or user_canceled: go on */
    NGX_XMPP_TLSREC_CLOSE,       /* close_notify: end of data */
    NGX_XMPP_TLSREC_FATAL        /* send *alert (if not 0) and close */
} ngx_xmpp_tlsrec_rc_e;


/* one direction: 7.3 traffic key and IV, 5.3 sequence number */
typedef struct {
    unsigned char    secret[48];    /* application_traffic_secret_N */
    unsigned char    key[32];
    unsigned char    iv[12];
    uint64_t         seq;
} ngx_xmpp_tlsrec_dir_t;


typedef struct {
    ngx_xmpp_tlsrec_dir_t  rd;      /* the client's */
    ngx_xmpp_tlsrec_dir_t  wr;      /* ours */
    uint8_t                suite;   /* index into the suite table */
    uint8_t                hs_len;  /* bytes of a fragmented KeyUpdate */
    unsigned char          hs[5];
    uint8_t                peer_alert;   /* the fatal alert received */
    unsigned               update_owed:1;
    unsigned               failed:1;     /* our write side is unusable */
} ngx_xmpp_tlsrec_t;


int ngx_xmpp_tlsrec_suite_supported(uint16_t id);
const char *ngx_xmpp_tlsrec_suite_name(const ngx_xmpp_tlsrec_t *t);
int ngx_xmpp_tlsrec_init(ngx_xmpp_tlsrec_t *t, uint16_t id,
    const unsigned char *rd_secret, const unsigned char *wr_secret,
    size_t len);
void ngx_xmpp_tlsrec_wipe(ngx_xmpp_tlsrec_t *t);

ngx_xmpp_tlsrec_rc_e ngx_xmpp_tlsrec_read(ngx_xmpp_tlsrec_t *t,
    unsigned char *p, size_t len, size_t *used, unsigned char **data,
    size_t *dlen, uint8_t *alert);
size_t ngx_xmpp_tlsrec_seal(ngx_xmpp_tlsrec_t *t, uint8_t type,
    const unsigned char *in, size_t len, unsigned char *out);
size_t ngx_xmpp_tlsrec_pre_data(ngx_xmpp_tlsrec_t *t, unsigned char *out);
size_t ngx_xmpp_tlsrec_alert(ngx_xmpp_tlsrec_t *t, uint8_t desc,
    unsigned char *out);
size_t ngx_xmpp_tlsrec_record_len(const unsigned char *p, size_t len);

void ngx_xmpp_tlsrec_free(void);


#endif /* _NGX_XMPP_TLSREC_H_INCLUDED_ */
