
/*
 * Table-driven tests of the pure protocol helpers: WebSocket framing
 * (RFC 6455), UTF-8, JIDs (RFC 7622) and SASL PLAIN (RFC 4616).
 */


#include <stdio.h>
#include <string.h>
#include <stdlib.h>

#include "ngx_xmpp_proto.h"
#include "unit.h"


/* builds a masked client frame */
static size_t
frame(unsigned char *out, int fin, unsigned op, const char *payload,
    size_t len, int masked)
{
    size_t          n, i;
    unsigned char   mask[4] = { 0x12, 0x34, 0x56, 0x78 };

    n = ngx_xmpp_ws_frame_header(out, op, len);
    out[0] = (unsigned char) ((fin ? 0x80 : 0) | op);

    if (masked) {
        out[1] |= 0x80;
        memcpy(out + n, mask, 4);
        n += 4;
    }

    for (i = 0; i < len; i++) {
        out[n + i] = (unsigned char) payload[i] ^ (masked ? mask[i & 3] : 0);
    }

    return n + len;
}


/* feeds bytes one slice at a time; collects text and the final event */
static ngx_xmpp_ws_ev_e
run(unsigned char *in, size_t len, size_t slice, uint64_t max,
    char *text, unsigned *code, int *messages)
{
    size_t                  off, n, tl;
    unsigned char          *p, *last;
    ngx_xmpp_ws_ev_e        ev;
    ngx_xmpp_ws_decoder_t   d;

    ngx_xmpp_ws_decoder_init(&d, max);

    tl = 0;
    *messages = 0;
    *code = 0;
    ev = NGX_XMPP_WS_EV_NEED_MORE;

    for (off = 0; off < len; off += n) {
        n = len - off < slice ? len - off : slice;
        p = in + off;
        last = p + n;

        for ( ;; ) {
            ev = ngx_xmpp_ws_decode(&d, &p, last);

            if (ev == NGX_XMPP_WS_EV_NEED_MORE) {
                break;
            }

            if (ev == NGX_XMPP_WS_EV_DATA) {
                memcpy(text + tl, d.data, d.len);
                tl += d.len;
                continue;
            }

            if (ev == NGX_XMPP_WS_EV_MESSAGE_END) {
                (*messages)++;
                continue;
            }

            if (ev == NGX_XMPP_WS_EV_ERROR || ev == NGX_XMPP_WS_EV_CLOSE) {
                *code = d.close_code;
                text[tl] = '\0';
                return ev;
            }
        }
    }

    text[tl] = '\0';
    return ev;
}


static void
test_ws(void)
{
    int             msgs;
    size_t          n, slice;
    unsigned        code;
    unsigned char   buf[70000];
    char            text[70000], big[70000];
    ngx_xmpp_ws_ev_e  ev;

    /* a plain text message, in every slice size */
    for (slice = 1; slice <= 8; slice++) {
        n = frame(buf, 1, 1, "<iq/>", 5, 1);
        ev = run(buf, n, slice, 1024, text, &code, &msgs);
        checkf(msgs == 1 && strcmp(text, "<iq/>") == 0,
              "text message, slice %zu: got \"%s\" msgs %d", slice, text,
              msgs);
    }

    /* fragmentation with a ping in between (RFC 6455 5.4) */
    n = frame(buf, 0, 1, "<mess", 5, 1);
    n += frame(buf + n, 1, 9, "hb", 2, 1);
    ev = run(buf, n, 3, 1024, text, &code, &msgs);
    checkf(ev == NGX_XMPP_WS_EV_NEED_MORE, "ping mid-message");
    /* the decoder unmasks in place: build the frames again */
    n = frame(buf, 0, 1, "<mess", 5, 1);
    n += frame(buf + n, 1, 9, "hb", 2, 1);
    n += frame(buf + n, 1, 0, "age/>", 5, 1);
    ev = run(buf, n, 3, 1024, text, &code, &msgs);
    checkf(msgs == 1 && strcmp(text, "<message/>") == 0,
          "fragmented message: \"%s\"", text);

    /* 16-bit and 64-bit lengths */
    memset(big, 'a', 300);
    n = frame(buf, 1, 1, big, 300, 1);
    ev = run(buf, n, 7, 1024, text, &code, &msgs);
    checkf(msgs == 1 && strlen(text) == 300, "16-bit length");

    memset(big, 'b', 66000);
    n = frame(buf, 1, 1, big, 66000, 1);
    ev = run(buf, n, 4096, 100000, text, &code, &msgs);
    checkf(msgs == 1 && strlen(text) == 66000, "64-bit length");

    /* over the message limit: 1009 */
    ev = run(buf, n, 4096, 65535, text, &code, &msgs);
    checkf(ev == NGX_XMPP_WS_EV_ERROR && code == 1009, "too big: %u", code);

    /* unmasked client frame: 1002 (RFC 6455 5.1) */
    n = frame(buf, 1, 1, "<iq/>", 5, 0);
    ev = run(buf, n, 64, 1024, text, &code, &msgs);
    checkf(ev == NGX_XMPP_WS_EV_ERROR && code == 1002, "unmasked: %u", code);

    /* reserved opcodes and RSV bits: 1002 */
    n = frame(buf, 1, 3, "x", 1, 1);
    ev = run(buf, n, 64, 1024, text, &code, &msgs);
    checkf(ev == NGX_XMPP_WS_EV_ERROR && code == 1002, "opcode 3: %u", code);

    n = frame(buf, 1, 0xb, "x", 1, 1);
    ev = run(buf, n, 64, 1024, text, &code, &msgs);
    checkf(ev == NGX_XMPP_WS_EV_ERROR && code == 1002, "opcode b: %u", code);

    n = frame(buf, 1, 1, "x", 1, 1);
    buf[0] |= 0x40;
    ev = run(buf, n, 64, 1024, text, &code, &msgs);
    checkf(ev == NGX_XMPP_WS_EV_ERROR && code == 1002, "rsv1: %u", code);

    /* binary frames are not XMPP (RFC 7395 3.2): 1003 */
    n = frame(buf, 1, 2, "x", 1, 1);
    ev = run(buf, n, 64, 1024, text, &code, &msgs);
    checkf(ev == NGX_XMPP_WS_EV_ERROR && code == 1003, "binary: %u", code);

    /* continuation without a start, and a new start inside a message */
    n = frame(buf, 1, 0, "x", 1, 1);
    ev = run(buf, n, 64, 1024, text, &code, &msgs);
    checkf(ev == NGX_XMPP_WS_EV_ERROR && code == 1002, "orphan cont: %u", code);

    n = frame(buf, 0, 1, "x", 1, 1);
    n += frame(buf + n, 1, 1, "y", 1, 1);
    ev = run(buf, n, 64, 1024, text, &code, &msgs);
    checkf(ev == NGX_XMPP_WS_EV_ERROR && code == 1002, "nested text: %u", code);

    /* fragmented or long control frames: 1002 */
    n = frame(buf, 0, 9, "x", 1, 1);
    ev = run(buf, n, 64, 1024, text, &code, &msgs);
    checkf(ev == NGX_XMPP_WS_EV_ERROR && code == 1002, "frag ping: %u", code);

    memset(big, 'p', 126);
    n = frame(buf, 1, 9, big, 126, 1);
    ev = run(buf, n, 64, 1024, text, &code, &msgs);
    checkf(ev == NGX_XMPP_WS_EV_ERROR && code == 1002, "long ping: %u", code);

    /* bad UTF-8, also split across fragments: 1007 */
    n = frame(buf, 1, 1, "\xc0\xaf", 2, 1);
    ev = run(buf, n, 64, 1024, text, &code, &msgs);
    checkf(ev == NGX_XMPP_WS_EV_ERROR && code == 1007, "overlong: %u", code);

    n = frame(buf, 0, 1, "a\xe2\x82", 3, 1);
    n += frame(buf + n, 1, 0, "\xac", 1, 1);
    ev = run(buf, n, 64, 1024, text, &code, &msgs);
    checkf(msgs == 1 && strcmp(text, "a\xe2\x82\xac") == 0,
          "euro sign split across frames");

    n = frame(buf, 1, 1, "a\xe2\x82", 3, 1);
    ev = run(buf, n, 64, 1024, text, &code, &msgs);
    checkf(ev == NGX_XMPP_WS_EV_ERROR && code == 1007, "truncated: %u", code);

    n = frame(buf, 1, 1, "\xed\xa0\x80", 3, 1);
    ev = run(buf, n, 64, 1024, text, &code, &msgs);
    checkf(ev == NGX_XMPP_WS_EV_ERROR && code == 1007, "surrogate: %u", code);

    /* close frames (RFC 6455 5.5.1, 7.4) */
    n = frame(buf, 1, 8, "\x03\xe8" "bye", 5, 1);
    ev = run(buf, n, 64, 1024, text, &code, &msgs);
    checkf(ev == NGX_XMPP_WS_EV_CLOSE && code == 1000, "close 1000: %u", code);

    n = frame(buf, 1, 8, "", 0, 1);
    ev = run(buf, n, 64, 1024, text, &code, &msgs);
    checkf(ev == NGX_XMPP_WS_EV_CLOSE && code == 0, "empty close: %u", code);

    n = frame(buf, 1, 8, "\x03", 1, 1);
    ev = run(buf, n, 64, 1024, text, &code, &msgs);
    checkf(ev == NGX_XMPP_WS_EV_ERROR && code == 1002, "1-byte close");

    n = frame(buf, 1, 8, "\x03\xed", 2, 1);
    ev = run(buf, n, 64, 1024, text, &code, &msgs);
    checkf(ev == NGX_XMPP_WS_EV_ERROR && code == 1002, "close 1005 is "
          "not sendable: %u", code);

    /* 64-bit length with the top bit set */
    buf[0] = 0x81;
    buf[1] = 0x80 | 127;
    memset(buf + 2, 0xff, 8);
    memset(buf + 10, 0, 4);
    ev = run(buf, 14, 64, 1024, text, &code, &msgs);
    checkf(ev == NGX_XMPP_WS_EV_ERROR && code == 1002, "63-bit len: %u", code);

    /* the encoder */
    checkf(ngx_xmpp_ws_frame_header(buf, 1, 125) == 2 && buf[1] == 125,
          "short header");
    checkf(ngx_xmpp_ws_frame_header(buf, 1, 126) == 4 && buf[1] == 126,
          "16-bit header");
    checkf(ngx_xmpp_ws_frame_header(buf, 1, 70000) == 10 && buf[1] == 127,
          "64-bit header");
}


static void
test_jid(void)
{
    size_t                 i;
    ngx_xmpp_jid_parts_t   j;

    static const struct {
        const char  *in;
        int          ok;
        const char  *local, *domain, *resource;
    } cases[] = {
        { "alice@example.com", 0, "alice", "example.com", "" },
        { "alice@example.com/phone", 0, "alice", "example.com", "phone" },
        { "example.com", 0, "", "example.com", "" },
        { "example.com/r", 0, "", "example.com", "r" },
        { "a@example.com/r/with/slash", 0, "a", "example.com", "r/with/slash" },
        { "a@example.com/r@at", 0, "a", "example.com", "r@at" },
        { "a@example.com.", 0, "a", "example.com", "" },
        { "@example.com", -1, 0, 0, 0 },
        { "a@", -1, 0, 0, 0 },
        { "a@example.com/", -1, 0, 0, 0 },
        { "a b@example.com", -1, 0, 0, 0 },
        { "a<b@example.com", -1, 0, 0, 0 },
        { "a\"b@example.com", -1, 0, 0, 0 },
        { "", -1, 0, 0, 0 },
        { "a@exa mple.com", -1, 0, 0, 0 },
        { "*@example.com", 0, "*", "example.com", "" },
        { "a@example.com/\x01", -1, 0, 0, 0 },
        { "\xff@example.com", -1, 0, 0, 0 },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = ngx_xmpp_jid_split((const unsigned char *) cases[i].in,
                                    strlen(cases[i].in), &j);

        checkf(rc == cases[i].ok, "jid \"%s\": rc %d", cases[i].in, rc);

        if (rc == 0 && cases[i].ok == 0) {
            checkf(j.local_len == strlen(cases[i].local)
                  && memcmp(j.local ? (const char *) j.local : "",
                            cases[i].local, j.local_len) == 0
                  && j.domain_len == strlen(cases[i].domain)
                  && memcmp(j.domain, cases[i].domain, j.domain_len) == 0
                  && j.resource_len == strlen(cases[i].resource)
                  && memcmp(j.resource ? (const char *) j.resource : "",
                            cases[i].resource, j.resource_len) == 0,
                  "jid \"%s\": parts", cases[i].in);
        }
    }

    {
        char big[1100];

        memset(big, 'a', 1024);
        strcpy(big + 1024, "@x");
        checkf(ngx_xmpp_jid_split((unsigned char *) big, strlen(big), &j)
              == -1, "1024-byte localpart");
    }
}


static void
test_sasl(void)
{
    size_t                  i;
    char                    big[1000];
    ngx_xmpp_sasl_plain_t   p;

    static const struct {
        const char  *msg;
        size_t       len;
        int          ok;
    } cases[] = {
        { "\0alice\0pw", 9, 0 },
        { "alice@example.com\0alice\0pw", 26, 0 },
        { "alice\0pw", 8, -1 },           /* one NUL */
        { "alicepw", 7, -1 },             /* no NUL */
        { "\0\0pw", 4, -1 },              /* empty authcid */
        { "\0alice\0", 7, -1 },           /* empty password */
        { "\0alice\0p\0w", 10, -1 },      /* three NULs */
        { "\0\xff\0pw", 5, -1 },          /* not UTF-8 */
        { "\0*)(uid=*\0pw", 12, 0 },      /* filter text is only text */
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        checkf(ngx_xmpp_sasl_plain_parse((const unsigned char *) cases[i].msg,
                                        cases[i].len, &p) == cases[i].ok,
              "sasl case %zu", i);
    }

    ngx_xmpp_sasl_plain_parse((const unsigned char *) "z\0alice\0pw", 10, &p);
    checkf(p.authzid_len == 1 && p.authcid_len == 5 && p.passwd_len == 2
          && memcmp(p.authcid, "alice", 5) == 0
          && memcmp(p.passwd, "pw", 2) == 0, "sasl fields");

    memset(big, 'a', sizeof(big));
    big[0] = '\0';
    big[300] = '\0';
    checkf(ngx_xmpp_sasl_plain_parse((unsigned char *) big, 400, &p) == -1,
          "authcid over 255 octets");
    checkf(ngx_xmpp_sasl_plain_parse((unsigned char *) big, 1000, &p) == -1,
          "oversized message");
}


int
main(void)
{
    test_ws();
    test_jid();
    test_sasl();

    return unit_report();
}
