
/*
 * libFuzzer target: the receive path of the TLS 1.3 record layer
 * (nginx-module/src/ngx_xmpp_tlsrec.c), fed the way ngx_xmpp_tls.c
 * feeds it: bytes arrive in slices, whole records are opened in place,
 * the rest waits.  The first byte picks the suite and the mode:
 *
 *   raw     the rest is what the network delivered (nearly every record
 *           then fails its tag: this drives the header checks);
 *   sealed  the rest is a list of (type, length, content) that a client
 *           with the same keys seals first, so the inner checks (padding,
 *           content type, alerts, KeyUpdate fragments) are reached; a
 *           flag flips one byte of the result.
 *
 * Invariants: nothing is read outside the input, data stays inside its
 * record, a fatal result ends the connection, and our KeyUpdate, when
 * one is owed, opens at the client.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_xmpp_tlsrec.h"


#define FUZZ_MAX  (64 * 1024)


static const uint16_t  suites[3] = { 0x1301, 0x1302, 0x1303 };
static const size_t    lens[3] = { 32, 48, 32 };


/*
 * The client seals every chunk up front; a shadow server opens each
 * record at once, so that the client's key follows its own KeyUpdates
 * (RFC 8446 4.6.3) as a real client's does.
 */
static size_t
seal_all(ngx_xmpp_tlsrec_t *cli, ngx_xmpp_tlsrec_t *shadow,
    const uint8_t *in, size_t n, uint8_t *out)
{
    size_t                 len, o, r, used, dlen;
    uint8_t                alert, *dp, rec[NGX_XMPP_TLSREC_MAX];
    ngx_xmpp_tlsrec_rc_e   rc;

    o = 0;

    while (n >= 3) {
        len = ((size_t) in[1] << 8 | in[2]) % (NGX_XMPP_TLSREC_PLAIN + 2);

        if (len > n - 3) {
            len = n - 3;
        }

        if (o + NGX_XMPP_TLSREC_SEALED(len) > FUZZ_MAX) {
            break;
        }

        r = ngx_xmpp_tlsrec_seal(cli, in[0], in + 3, len, out + o);
        if (r == 0) {
            abort();
        }

        memcpy(rec, out + o, r);
        rc = ngx_xmpp_tlsrec_read(shadow, rec, r, &used, &dp, &dlen, &alert);

        if (rc == NGX_XMPP_TLSREC_CONTROL && shadow->rd.seq == 0) {
            cli->wr = shadow->rd;
        }

        o += r;
        in += 3 + len;
        n -= 3 + len;
    }

    return o;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                 len, have, off, n, cut, used, dlen, k, u;
    uint8_t               *net, *buf, *dp, alert, ku[64];
    unsigned               suite, sealed;
    unsigned char          a[48], b[48];
    ngx_xmpp_tlsrec_t      srv, cli, shadow;
    ngx_xmpp_tlsrec_rc_e   rc;

    if (size < 3) {
        return 0;
    }

    suite = data[0] % 3;
    sealed = data[0] & 0x10;
    cut = (size_t) data[1] * 67 + 1;

    memset(a, 0x5a, sizeof(a));
    memset(b, 0xa5, sizeof(b));

    if (ngx_xmpp_tlsrec_init(&srv, suites[suite], a, b, lens[suite]) != 0
        || ngx_xmpp_tlsrec_init(&cli, suites[suite], b, a, lens[suite]) != 0
        || ngx_xmpp_tlsrec_init(&shadow, suites[suite], a, b, lens[suite])
           != 0)
    {
        abort();
    }

    net = malloc(FUZZ_MAX);
    buf = malloc(2 * NGX_XMPP_TLSREC_MAX);
    if (net == NULL || buf == NULL) {
        abort();
    }

    if (sealed) {
        len = seal_all(&cli, &shadow, data + 3, size - 3, net);

        if ((data[0] & 0x20) && len) {
            net[data[2] * 131 % len] ^= (uint8_t) (data[2] | 1);
        }

    } else {
        len = size - 3 < FUZZ_MAX ? size - 3 : FUZZ_MAX;
        memcpy(net, data + 3, len);
    }

    /* as ngx_xmpp_tls_read_records: what is not a whole record waits */
    have = 0;
    rc = NGX_XMPP_TLSREC_AGAIN;

    for (off = 0; off < len; off += n) {
        n = len - off < cut ? len - off : cut;

        if (have + n > 2 * NGX_XMPP_TLSREC_MAX) {
            n = 2 * NGX_XMPP_TLSREC_MAX - have;
        }

        memcpy(buf + have, net + off, n);
        have += n;

        for ( ;; ) {
            rc = ngx_xmpp_tlsrec_read(&srv, buf, have, &used, &dp, &dlen,
                                      &alert);

            if (used > have) {
                abort();
            }

            if (rc == NGX_XMPP_TLSREC_AGAIN || rc == NGX_XMPP_TLSREC_FATAL
                || rc == NGX_XMPP_TLSREC_CLOSE)
            {
                break;
            }

            if (rc == NGX_XMPP_TLSREC_DATA
                && (dp < buf || dp + dlen > buf + used
                    || dlen > NGX_XMPP_TLSREC_PLAIN))
            {
                abort();
            }

            u = used;

            if (srv.update_owed) {
                k = ngx_xmpp_tlsrec_pre_data(&srv, ku);
                if (k != NGX_XMPP_TLSREC_KU_LEN
                    || ngx_xmpp_tlsrec_read(&cli, ku, k, &used, &dp, &dlen,
                                            &alert)
                       != NGX_XMPP_TLSREC_CONTROL)
                {
                    abort();
                }
            }

            memmove(buf, buf + u, have - u);
            have -= u;
        }

        if (rc == NGX_XMPP_TLSREC_FATAL || rc == NGX_XMPP_TLSREC_CLOSE) {
            break;
        }

        if (have == 2 * NGX_XMPP_TLSREC_MAX) {
            /* a whole record always fits: the header check failed */
            abort();
        }
    }

    ngx_xmpp_tlsrec_wipe(&srv);
    ngx_xmpp_tlsrec_wipe(&cli);
    ngx_xmpp_tlsrec_wipe(&shadow);
    free(net);
    free(buf);

    return 0;
}
