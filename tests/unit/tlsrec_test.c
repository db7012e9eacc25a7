
/*
 * The TLS 1.3 record layer (nginx-module/src/ngx_xmpp_tlsrec.c) against
 * RFC 8448 section 3 (Simple 1-RTT Handshake): keys from the
 * application traffic secrets, the client's and the server's
 * application_data records and both close_notify alerts opened and
 * sealed again to the same bytes; then every check of the receive path
 * (RFC 8446 sections 4.6.3, 5 and 6) with a record built to fail it.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_xmpp_tlsrec.h"
#include "unit.h"


/* RFC 8448 section 3, verbatim */
static const char  *c_ap_secret =
    "9e 40 64 6c e7 9a 7f 9d c0 5a f8 88 9b ce 65 52"
    "87 5a fa 0b 06 df 00 87 f7 92 eb b7 c1 75 04 a5";
static const char  *s_ap_secret =
    "a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 32"
    "82 04 b4 f4 4b fb 6b 3a 4b 4f 1f 3f cb 63 16 43";
static const char  *c_key = "17 42 2d da 59 6e d5 d9 ac d8 90 e3 c6 3f 50 51";
static const char  *c_iv = "5b 78 92 3d ee 08 57 90 33 e5 23 d9";
static const char  *s_key = "9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56";
static const char  *s_iv = "cf 78 2b 88 dd 83 54 9a ad f1 e9 84";
static const char  *c_app_record =
    "17 03 03 00 43 a2 3f 70 54 b6 2c 94 d0 af fa fe"
    "82 28 ba 55 cb ef ac ea 42 f9 14 aa 66 bc ab 3f"
    "2b 98 19 a8 a5 b4 6b 39 5b d5 4a 9a 20 44 1e 2b"
    "62 97 4e 1f 5a 62 92 a2 97 70 14 bd 1e 3d ea e6"
    "3a ee bb 21 69 49 15 e4";
static const char  *s_app_record =
    "17 03 03 00 43 2e 93 7e 11 ef 4a c7 40 e5 38 ad"
    "36 00 5f c4 a4 69 32 fc 32 25 d0 5f 82 aa 1b 36"
    "e3 0e fa f9 7d 90 e6 df fc 60 2d cb 50 1a 59 a8"
    "fc c4 9c 4b f2 e5 f0 a2 1c 00 47 c2 ab f3 32 54"
    "0d d0 32 e1 67 c2 95 5d";
static const char  *c_alert_record =
    "17 03 03 00 13 c9 87 27 60 65 56 66 b7 4d 7f f1"
    "15 3e fd 6d b6 d0 b0 e3";
static const char  *s_alert_record =
    "17 03 03 00 13 b5 8f d6 71 66 eb f5 99 d2 47 20"
    "cf be 7e fa 7a 88 64 a9";


static size_t
unhex(const char *s, unsigned char *out)
{
    size_t        n;
    unsigned int  b;

    for (n = 0; *s; s++) {
        if (*s == ' ') {
            continue;
        }

        if (sscanf(s, "%2x", &b) != 1) {
            break;
        }

        out[n++] = (unsigned char) b;
        s++;
    }

    return n;
}


/* a server (reads the client's secret) and the matching client */
static void
pair(ngx_xmpp_tlsrec_t *srv, ngx_xmpp_tlsrec_t *cli, uint16_t suite,
    size_t len)
{
    unsigned char  a[48], b[48];

    memset(a, 0x11, sizeof(a));
    memset(b, 0x22, sizeof(b));

    checkf(ngx_xmpp_tlsrec_init(srv, suite, a, b, len) == 0, "init srv");
    checkf(ngx_xmpp_tlsrec_init(cli, suite, b, a, len) == 0, "init cli");
}


static ngx_xmpp_tlsrec_rc_e
open1(ngx_xmpp_tlsrec_t *t, unsigned char *rec, size_t len, size_t *dlen,
    uint8_t *alert)
{
    size_t                used;
    unsigned char        *data;
    ngx_xmpp_tlsrec_rc_e  rc;

    *dlen = 0;
    rc = ngx_xmpp_tlsrec_read(t, rec, len, &used, &data, dlen, alert);

    if (rc != NGX_XMPP_TLSREC_AGAIN && rc != NGX_XMPP_TLSREC_FATAL) {
        checkf(used == len, "a record takes its own length");
    }

    return rc;
}


static void
test_rfc8448(void)
{
    size_t                n, dlen, used;
    uint8_t               alert;
    unsigned char         cs[48], ss[48], want[128], rec[128], out[128];
    unsigned char         payload[50], *data;
    ngx_xmpp_tlsrec_t     srv, cli;
    ngx_xmpp_tlsrec_rc_e  rc;

    for (n = 0; n < sizeof(payload); n++) {
        payload[n] = (unsigned char) n;
    }

    unhex(c_ap_secret, cs);
    unhex(s_ap_secret, ss);

    checkf(ngx_xmpp_tlsrec_init(&srv, 0x1301, cs, ss, 32) == 0, "init");
    checkf(ngx_xmpp_tlsrec_init(&cli, 0x1301, ss, cs, 32) == 0, "init cli");

    /* RFC 8446 7.3 keys, as the trace derives them */
    n = unhex(c_key, want);
    checkf(n == 16 && memcmp(srv.rd.key, want, 16) == 0, "client write key");
    n = unhex(c_iv, want);
    checkf(n == 12 && memcmp(srv.rd.iv, want, 12) == 0, "client write iv");
    n = unhex(s_key, want);
    checkf(n == 16 && memcmp(srv.wr.key, want, 16) == 0, "server write key");
    n = unhex(s_iv, want);
    checkf(n == 12 && memcmp(srv.wr.iv, want, 12) == 0, "server write iv");

    /* the client's record opens to 00 01 .. 31 */
    n = unhex(c_app_record, rec);
    checkf(n == 72, "client record is 72 octets");
    memcpy(want, rec, n);

    rc = ngx_xmpp_tlsrec_read(&srv, rec, n, &used, &data, &dlen, &alert);
    checkf(rc == NGX_XMPP_TLSREC_DATA && used == 72 && dlen == 50
          && memcmp(data, payload, 50) == 0, "client record opens: %d", rc);

    /* and the client side seals the payload to the same bytes */
    n = ngx_xmpp_tlsrec_seal(&cli, NGX_XMPP_TLSREC_APPDATA, payload, 50, out);
    checkf(n == 72 && memcmp(out, want, 72) == 0, "client record re-sealed");

    /*
     * The server sent its NewSessionTicket at sequence 0 in the trace,
     * so its application_data record is its record 1.
     */
    srv.wr.seq = 1;
    n = ngx_xmpp_tlsrec_seal(&srv, NGX_XMPP_TLSREC_APPDATA, payload, 50, out);
    unhex(s_app_record, want);
    checkf(n == 72 && memcmp(out, want, 72) == 0, "server record sealed");

    cli.rd.seq = 1;
    memcpy(rec, want, 72);
    rc = open1(&cli, rec, 72, &dlen, &alert);
    checkf(rc == NGX_XMPP_TLSREC_DATA && dlen == 50, "server record opens");

    /* the client's close_notify (its record 1), then the server's (2) */
    n = unhex(c_alert_record, rec);
    rc = open1(&srv, rec, n, &dlen, &alert);
    checkf(rc == NGX_XMPP_TLSREC_CLOSE, "client close_notify: %d", rc);

    n = ngx_xmpp_tlsrec_alert(&srv, NGX_XMPP_TLSREC_CLOSE_NOTIFY, out);
    unhex(s_alert_record, want);
    checkf(n == 24 && memcmp(out, want, 24) == 0, "server close_notify");

    ngx_xmpp_tlsrec_wipe(&srv);
    ngx_xmpp_tlsrec_wipe(&cli);
}


/* every suite, both directions, the largest record, and padding */
static void
test_suites(void)
{
    size_t                i, n, dlen, used;
    uint8_t               alert;
    unsigned char        *data, *big, *rec;
    ngx_xmpp_tlsrec_t     srv, cli;
    ngx_xmpp_tlsrec_rc_e  rc;
    static uint16_t       ids[3] = { 0x1301, 0x1302, 0x1303 };
    static size_t         lens[3] = { 32, 48, 32 };

    big = malloc(NGX_XMPP_TLSREC_PLAIN);
    rec = malloc(NGX_XMPP_TLSREC_MAX + 64);
    if (big == NULL || rec == NULL) {
        checkf(0, "malloc");
        exit(1);
    }

    for (i = 0; i < NGX_XMPP_TLSREC_PLAIN; i++) {
        big[i] = (unsigned char) (i * 7);
    }

    checkf(!ngx_xmpp_tlsrec_suite_supported(0x1304), "CCM is not ours");
    checkf(ngx_xmpp_tlsrec_init(&srv, 0x1302, big, big, 32) == -1,
          "a SHA-384 suite needs a 48-byte secret");

    for (i = 0; i < 3; i++) {
        pair(&srv, &cli, ids[i], lens[i]);

        n = ngx_xmpp_tlsrec_seal(&srv, NGX_XMPP_TLSREC_APPDATA, big,
                                 NGX_XMPP_TLSREC_PLAIN, rec);
        checkf(n == NGX_XMPP_TLSREC_SEALED(NGX_XMPP_TLSREC_PLAIN), "size");

        rc = ngx_xmpp_tlsrec_read(&cli, rec, n, &used, &data, &dlen, &alert);
        checkf(rc == NGX_XMPP_TLSREC_DATA && dlen == NGX_XMPP_TLSREC_PLAIN
              && memcmp(data, big, dlen) == 0, "%s: 2^14 bytes",
              ngx_xmpp_tlsrec_suite_name(&srv));

        /* 5.4: zeros after the type are padding; empty data is allowed */
        memcpy(big + 100, "\x17\0\0\0\0\0", 6);
        n = ngx_xmpp_tlsrec_seal(&cli, 0, big, 106, rec);
        rc = open1(&srv, rec, n, &dlen, &alert);
        checkf(rc == NGX_XMPP_TLSREC_DATA && dlen == 100, "padding");

        n = ngx_xmpp_tlsrec_seal(&cli, NGX_XMPP_TLSREC_APPDATA, big, 0, rec);
        rc = open1(&srv, rec, n, &dlen, &alert);
        checkf(rc == NGX_XMPP_TLSREC_DATA && dlen == 0, "empty data");

        /* a record in slices: nothing until it is whole */
        n = ngx_xmpp_tlsrec_seal(&cli, NGX_XMPP_TLSREC_APPDATA, big, 300,
                                 rec);
        rc = ngx_xmpp_tlsrec_read(&srv, rec, 3, &used, &data, &dlen, &alert);
        checkf(rc == NGX_XMPP_TLSREC_AGAIN && used == 0, "3 bytes");
        rc = ngx_xmpp_tlsrec_read(&srv, rec, n - 1, &used, &data, &dlen,
                                  &alert);
        checkf(rc == NGX_XMPP_TLSREC_AGAIN && used == 0, "all but one");
        rc = open1(&srv, rec, n, &dlen, &alert);
        checkf(rc == NGX_XMPP_TLSREC_DATA && dlen == 300, "whole");

        for (n = 0; n < NGX_XMPP_TLSREC_PLAIN; n++) {
            big[n] = (unsigned char) (n * 7);
        }
    }

    free(big);
    free(rec);
}


/* 4.6.3 and 5.5: KeyUpdate both ways */
static void
test_keyupdate(void)
{
    size_t                n, dlen;
    uint8_t               alert;
    unsigned char         rec[256], old[48];
    ngx_xmpp_tlsrec_t     srv, cli;
    ngx_xmpp_tlsrec_rc_e  rc;
    static unsigned char  ku_req[5] = { 24, 0, 0, 1, 1 };
    static unsigned char  ku_not[5] = { 24, 0, 0, 1, 0 };

    pair(&srv, &cli, 0x1301, 32);

    /* update_not_requested: new read key, nothing owed */
    memcpy(old, srv.rd.secret, 32);
    n = ngx_xmpp_tlsrec_seal(&cli, NGX_XMPP_TLSREC_HANDSHAKE, ku_not, 5, rec);
    rc = open1(&srv, rec, n, &dlen, &alert);
    checkf(rc == NGX_XMPP_TLSREC_CONTROL && !srv.update_owed
          && srv.rd.seq == 0 && memcmp(old, srv.rd.secret, 32) != 0,
          "KeyUpdate(not requested)");
    checkf(ngx_xmpp_tlsrec_pre_data(&srv, rec) == 0, "nothing owed");

    /* the client uses its new key: 7.2 */
    n = ngx_xmpp_tlsrec_seal(&cli, NGX_XMPP_TLSREC_APPDATA,
                             (unsigned char *) "x", 1, rec);
    rc = open1(&srv, rec, n, &dlen, &alert);
    checkf(rc == NGX_XMPP_TLSREC_FATAL
          && alert == NGX_XMPP_TLSREC_BAD_RECORD_MAC,
          "the client's old key no longer opens");

    pair(&srv, &cli, 0x1303, 32);
    n = ngx_xmpp_tlsrec_seal(&cli, NGX_XMPP_TLSREC_HANDSHAKE, ku_req, 5, rec);
    rc = open1(&srv, rec, n, &dlen, &alert);
    checkf(rc == NGX_XMPP_TLSREC_CONTROL && srv.update_owed, "requested");

    /* the client's own side of 7.2, mirrored */
    cli.wr = srv.rd;

    /* ours goes first, under the old key, then data under the new one */
    n = ngx_xmpp_tlsrec_pre_data(&srv, rec);
    checkf(n == NGX_XMPP_TLSREC_KU_LEN && !srv.update_owed, "our KeyUpdate");
    rc = open1(&cli, rec, n, &dlen, &alert);
    checkf(rc == NGX_XMPP_TLSREC_CONTROL && !cli.update_owed,
          "the client reads ours: %d", rc);
    n = ngx_xmpp_tlsrec_seal(&srv, NGX_XMPP_TLSREC_APPDATA,
                             (unsigned char *) "hello", 5, rec);
    rc = open1(&cli, rec, n, &dlen, &alert);
    checkf(rc == NGX_XMPP_TLSREC_DATA && dlen == 5, "data under new key");

    /* 5.5: our own key is worn after 2^24 records */
    srv.wr.seq = NGX_XMPP_TLSREC_REKEY;
    n = ngx_xmpp_tlsrec_pre_data(&srv, rec);
    checkf(n == NGX_XMPP_TLSREC_KU_LEN && srv.wr.seq == 0, "rekey at 2^24");
    cli.rd.seq = NGX_XMPP_TLSREC_REKEY;
    rc = open1(&cli, rec, n, &dlen, &alert);
    checkf(rc == NGX_XMPP_TLSREC_CONTROL, "the client follows");

    /* 5.1: a KeyUpdate in two fragments is legal */
    n = ngx_xmpp_tlsrec_seal(&cli, NGX_XMPP_TLSREC_HANDSHAKE, ku_not, 2,
                             rec);
    rc = open1(&srv, rec, n, &dlen, &alert);
    checkf(rc == NGX_XMPP_TLSREC_CONTROL && srv.hs_len == 2, "fragment 1");
    n = ngx_xmpp_tlsrec_seal(&cli, NGX_XMPP_TLSREC_HANDSHAKE, ku_not + 2, 3,
                             rec);
    rc = open1(&srv, rec, n, &dlen, &alert);
    checkf(rc == NGX_XMPP_TLSREC_CONTROL && srv.hs_len == 0
          && srv.rd.seq == 0, "fragment 2 completes it");

    ngx_xmpp_tlsrec_wipe(&srv);
    ngx_xmpp_tlsrec_wipe(&cli);
}


typedef struct {
    const char  *name;
    uint8_t      type;         /* inner content type given to seal */
    const char  *content;
    size_t       len;
    uint8_t      alert;        /* expected, 0: a fatal alert received */
} bad_inner_t;


static void
test_bad_inner(void)
{
    size_t                i, n, dlen;
    uint8_t               alert;
    unsigned char         rec[256];
    ngx_xmpp_tlsrec_t     srv, cli;
    ngx_xmpp_tlsrec_rc_e  rc;

    static bad_inner_t  cases[] = {
        { "no non-zero octet (5.4)", 0, "\0\0\0", 3,
          NGX_XMPP_TLSREC_UNEXPECTED_MESSAGE },
        { "change_cipher_spec (5)", NGX_XMPP_TLSREC_CCS, "\1", 1,
          NGX_XMPP_TLSREC_UNEXPECTED_MESSAGE },
        { "unknown type (5)", 99, "abc", 3,
          NGX_XMPP_TLSREC_UNEXPECTED_MESSAGE },
        { "alert of 3 bytes (6)", NGX_XMPP_TLSREC_ALERT, "\2\50\0", 3,
          NGX_XMPP_TLSREC_DECODE_ERROR },
        { "empty handshake fragment (5.1)", NGX_XMPP_TLSREC_HANDSHAKE, "", 0,
          NGX_XMPP_TLSREC_UNEXPECTED_MESSAGE },
        { "NewSessionTicket from a client (4.6.1)",
          NGX_XMPP_TLSREC_HANDSHAKE, "\4\0\0\1\0", 5,
          NGX_XMPP_TLSREC_UNEXPECTED_MESSAGE },
        { "Finished again (4.4.4)", NGX_XMPP_TLSREC_HANDSHAKE,
          "\24\0\0\40", 4, NGX_XMPP_TLSREC_UNEXPECTED_MESSAGE },
        { "KeyUpdate of length 2 (4.6.3)", NGX_XMPP_TLSREC_HANDSHAKE,
          "\30\0\0\2\0\0", 6, NGX_XMPP_TLSREC_DECODE_ERROR },
        { "request_update 2 (4.6.3)", NGX_XMPP_TLSREC_HANDSHAKE,
          "\30\0\0\1\2", 5, NGX_XMPP_TLSREC_ILLEGAL_PARAMETER },
        { "KeyUpdate not ending its record (5.1)",
          NGX_XMPP_TLSREC_HANDSHAKE, "\30\0\0\1\0\30", 6,
          NGX_XMPP_TLSREC_UNEXPECTED_MESSAGE },
        { "a fatal alert from the client (6.2)", NGX_XMPP_TLSREC_ALERT,
          "\2\50", 2, 0 },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pair(&srv, &cli, 0x1301, 32);

        n = ngx_xmpp_tlsrec_seal(&cli, cases[i].type,
                                 (const unsigned char *) cases[i].content,
                                 cases[i].len, rec);
        rc = open1(&srv, rec, n, &dlen, &alert);
        checkf(rc == NGX_XMPP_TLSREC_FATAL && alert == cases[i].alert,
              "%s: rc %d alert %u", cases[i].name, rc, alert);
    }

    checkf(srv.peer_alert == 40, "the client's alert is kept for the log");

    /* 5.1: data between two fragments of a handshake message */
    pair(&srv, &cli, 0x1301, 32);
    n = ngx_xmpp_tlsrec_seal(&cli, NGX_XMPP_TLSREC_HANDSHAKE,
                             (const unsigned char *) "\30\0", 2, rec);
    rc = open1(&srv, rec, n, &dlen, &alert);
    n = ngx_xmpp_tlsrec_seal(&cli, NGX_XMPP_TLSREC_APPDATA,
                             (const unsigned char *) "x", 1, rec);
    rc = open1(&srv, rec, n, &dlen, &alert);
    checkf(rc == NGX_XMPP_TLSREC_FATAL
          && alert == NGX_XMPP_TLSREC_UNEXPECTED_MESSAGE, "interleaved");

    /* user_canceled is not fatal (6.1) */
    pair(&srv, &cli, 0x1301, 32);
    n = ngx_xmpp_tlsrec_seal(&cli, NGX_XMPP_TLSREC_ALERT,
                             (const unsigned char *) "\1\132", 2, rec);
    rc = open1(&srv, rec, n, &dlen, &alert);
    checkf(rc == NGX_XMPP_TLSREC_CONTROL, "user_canceled");
}


static void
test_bad_outer(void)
{
    size_t                n, dlen, used;
    uint8_t               alert;
    unsigned char        *rec, *data;
    ngx_xmpp_tlsrec_t     srv, cli;
    ngx_xmpp_tlsrec_rc_e  rc;

    rec = calloc(1, NGX_XMPP_TLSREC_MAX + 64);
    if (rec == NULL) {
        checkf(0, "calloc");
        exit(1);
    }

    pair(&srv, &cli, 0x1301, 32);

    /* a flipped byte anywhere: header (it is the AAD), body, tag */
    n = ngx_xmpp_tlsrec_seal(&cli, NGX_XMPP_TLSREC_APPDATA,
                             (const unsigned char *) "secret", 6, rec);
    rec[10] ^= 1;
    rc = ngx_xmpp_tlsrec_read(&srv, rec, n, &used, &data, &dlen, &alert);
    checkf(rc == NGX_XMPP_TLSREC_FATAL
          && alert == NGX_XMPP_TLSREC_BAD_RECORD_MAC && srv.rd.seq == 0
          && memcmp(rec + 5, "secret", 6) != 0, "flipped body byte");

    pair(&srv, &cli, 0x1301, 32);
    n = ngx_xmpp_tlsrec_seal(&cli, NGX_XMPP_TLSREC_APPDATA,
                             (const unsigned char *) "secret", 6, rec);
    rec[n - 1] ^= 0x80;
    rc = open1(&srv, rec, n, &dlen, &alert);
    checkf(rc == NGX_XMPP_TLSREC_FATAL
          && alert == NGX_XMPP_TLSREC_BAD_RECORD_MAC, "flipped tag byte");

    /* 5.2 header checks, on the header alone */
    memcpy(rec, "\x17\x03\x03\x41\x01", 5);
    rc = ngx_xmpp_tlsrec_read(&srv, rec, 5, &used, &data, &dlen, &alert);
    checkf(rc == NGX_XMPP_TLSREC_FATAL
          && alert == NGX_XMPP_TLSREC_RECORD_OVERFLOW, "2^14 + 257");

    memcpy(rec, "\x16\x03\x03\x00\x20", 5);
    rc = ngx_xmpp_tlsrec_read(&srv, rec, 5, &used, &data, &dlen, &alert);
    checkf(rc == NGX_XMPP_TLSREC_FATAL
          && alert == NGX_XMPP_TLSREC_UNEXPECTED_MESSAGE, "plaintext hs");

    memcpy(rec, "\x14\x03\x03\x00\x01\x01", 6);
    rc = ngx_xmpp_tlsrec_read(&srv, rec, 6, &used, &data, &dlen, &alert);
    checkf(rc == NGX_XMPP_TLSREC_FATAL
          && alert == NGX_XMPP_TLSREC_UNEXPECTED_MESSAGE, "CCS after hs");

    memcpy(rec, "\x17\x03\x01\x00\x20", 5);
    rc = ngx_xmpp_tlsrec_read(&srv, rec, 5, &used, &data, &dlen, &alert);
    checkf(rc == NGX_XMPP_TLSREC_FATAL
          && alert == NGX_XMPP_TLSREC_DECODE_ERROR, "version 0x0301");

    memcpy(rec, "\x17\x03\x03\x00\x10", 5);
    rc = ngx_xmpp_tlsrec_read(&srv, rec, 21, &used, &data, &dlen, &alert);
    checkf(rc == NGX_XMPP_TLSREC_FATAL
          && alert == NGX_XMPP_TLSREC_BAD_RECORD_MAC, "shorter than a tag");

    /* 5.4: 2^14 + 2 bytes of inner plaintext, within 2^14 + 256 */
    memcpy(rec, "\x17\x03\x03\x40\x12", 5);
    rc = ngx_xmpp_tlsrec_read(&srv, rec, 5 + 0x4012, &used, &data, &dlen,
                              &alert);
    checkf(rc == NGX_XMPP_TLSREC_FATAL
          && alert == NGX_XMPP_TLSREC_RECORD_OVERFLOW, "inner too long");

    free(rec);
}


int
main(void)
{
    test_rfc8448();
    test_suites();
    test_keyupdate();
    test_bad_inner();
    test_bad_outer();

    ngx_xmpp_tlsrec_free();

    return unit_report();
}
