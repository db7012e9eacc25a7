
/*
 * libFuzzer target: the WebSocket frame decoder (RFC 6455) on any bytes,
 * cut into slices at positions the input chooses.  Invariants: every
 * event stays inside the input, text bytes only come from text messages,
 * and after an error the decoder is left alone.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_xmpp_proto.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                  cut, off, n;
    unsigned char          *buf, *p, *last;
    ngx_xmpp_ws_ev_e        ev;
    ngx_xmpp_ws_decoder_t   d;

    if (size < 2) {
        return 0;
    }

    /* the first byte picks the slice size, the second the limit */
    cut = (data[0] % 64) + 1;
    ngx_xmpp_ws_decoder_init(&d, (uint64_t) (data[1] + 1) * 64);

    size -= 2;
    buf = malloc(size ? size : 1);
    if (buf == NULL) {
        return 0;
    }

    memcpy(buf, data + 2, size);

    for (off = 0; off < size; off += n) {
        n = size - off < cut ? size - off : cut;
        p = buf + off;
        last = p + n;

        for ( ;; ) {
            ev = ngx_xmpp_ws_decode(&d, &p, last);

            if (p < buf + off || p > last) {
                abort();
            }

            if (ev == NGX_XMPP_WS_EV_NEED_MORE) {
                break;
            }

            if (ev == NGX_XMPP_WS_EV_DATA
                && (d.data < buf || d.data + d.len > last || d.len == 0))
            {
                abort();
            }

            if ((ev == NGX_XMPP_WS_EV_PING || ev == NGX_XMPP_WS_EV_PONG
                 || ev == NGX_XMPP_WS_EV_CLOSE) && d.ctl_len > 125)
            {
                abort();
            }

            if (ev == NGX_XMPP_WS_EV_ERROR || ev == NGX_XMPP_WS_EV_CLOSE) {
                free(buf);
                return 0;
            }
        }
    }

    free(buf);
    return 0;
}
