
/*
 * WebSocket framing (RFC 6455 section 5) for a server: a resumable
 * decoder that takes any slice of bytes, unmasks payload in place, and
 * returns one event at a time, and the encoder for unmasked frames.
 * Also the incremental UTF-8 check that text messages need (section 8.1).
 */


#include <string.h>

#include "ngx_xmpp_proto.h"


/*
 * The UTF-8 state packs the number of continuation bytes still due
 * (bits 0-3) with the bounds of the next byte (bits 8-15 and 16-23);
 * the bounds reject overlong forms and surrogates (RFC 3629 section 4).
 */

#define utf8_state(n, lo, hi)  ((uint32_t) (n) | ((lo) << 8) | ((hi) << 16))


uint32_t
ngx_xmpp_utf8_step(uint32_t state, const unsigned char *p, size_t len)
{
    size_t          i;
    unsigned        c, n, lo, hi;

    if (state == NGX_XMPP_UTF8_REJECT) {
        return state;
    }

    for (i = 0; i < len; i++) {
        c = p[i];

        if (state != NGX_XMPP_UTF8_ACCEPT) {
            n = state & 0xf;
            lo = (state >> 8) & 0xff;
            hi = (state >> 16) & 0xff;

            if (c < lo || c > hi) {
                return NGX_XMPP_UTF8_REJECT;
            }

            state = (n == 1) ? NGX_XMPP_UTF8_ACCEPT
                             : utf8_state(n - 1, 0x80, 0xbf);
            continue;
        }

        if (c < 0x80) {
            continue;
        }

        if (c >= 0xc2 && c <= 0xdf) {
            state = utf8_state(1, 0x80, 0xbf);

        } else if (c == 0xe0) {
            state = utf8_state(2, 0xa0, 0xbf);

        } else if (c == 0xed) {
            state = utf8_state(2, 0x80, 0x9f);

        } else if (c >= 0xe1 && c <= 0xef) {
            state = utf8_state(2, 0x80, 0xbf);

        } else if (c == 0xf0) {
            state = utf8_state(3, 0x90, 0xbf);

        } else if (c >= 0xf1 && c <= 0xf3) {
            state = utf8_state(3, 0x80, 0xbf);

        } else if (c == 0xf4) {
            state = utf8_state(3, 0x80, 0x8f);

        } else {
            return NGX_XMPP_UTF8_REJECT;
        }
    }

    return state;
}


enum {
    ws_state_header = 0,
    ws_state_payload,
    ws_state_message_end
};


void
ngx_xmpp_ws_decoder_init(ngx_xmpp_ws_decoder_t *d, uint64_t max_message)
{
    memset(d, 0, sizeof(ngx_xmpp_ws_decoder_t));

    d->max_message = max_message;
    d->hdr_need = 2;
}


static ngx_xmpp_ws_ev_e
ngx_xmpp_ws_error(ngx_xmpp_ws_decoder_t *d, unsigned code)
{
    d->close_code = code;
    return NGX_XMPP_WS_EV_ERROR;
}


/* the first two header bytes tell how many more there are */
static ngx_xmpp_ws_ev_e
ngx_xmpp_ws_header_start(ngx_xmpp_ws_decoder_t *d)
{
    unsigned  len7;

    /* no extension is negotiated, so RSV1-3 must be zero (section 5.2) */
    if (d->hdr[0] & 0x70) {
        return ngx_xmpp_ws_error(d, NGX_XMPP_WS_CLOSE_PROTOCOL);
    }

    /* section 5.1: a server must close on an unmasked client frame */
    if (!(d->hdr[1] & 0x80)) {
        return ngx_xmpp_ws_error(d, NGX_XMPP_WS_CLOSE_PROTOCOL);
    }

    len7 = d->hdr[1] & 0x7f;

    d->hdr_need = 2 + 4 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);

    return NGX_XMPP_WS_EV_NEED_MORE;
}


static ngx_xmpp_ws_ev_e
ngx_xmpp_ws_header_done(ngx_xmpp_ws_decoder_t *d)
{
    unsigned   i, len7, op;
    uint64_t   len;

    d->fin = (d->hdr[0] & 0x80) ? 1 : 0;
    op = d->hdr[0] & 0x0f;
    d->opcode = op;

    len7 = d->hdr[1] & 0x7f;

    if (len7 == 126) {
        len = ((uint64_t) d->hdr[2] << 8) | d->hdr[3];

    } else if (len7 == 127) {
        len = 0;
        for (i = 2; i < 10; i++) {
            len = (len << 8) | d->hdr[i];
        }

        if (len >> 63) {
            return ngx_xmpp_ws_error(d, NGX_XMPP_WS_CLOSE_PROTOCOL);
        }

    } else {
        len = len7;
    }

    memcpy(d->mask, d->hdr + d->hdr_need - 4, 4);
    d->mask_pos = 0;
    d->remaining = len;

    switch (op) {

    case NGX_XMPP_WS_OP_CLOSE:
    case NGX_XMPP_WS_OP_PING:
    case NGX_XMPP_WS_OP_PONG:
        /* section 5.5: control frames are short and never fragmented */
        if (!d->fin || len > 125) {
            return ngx_xmpp_ws_error(d, NGX_XMPP_WS_CLOSE_PROTOCOL);
        }
        d->ctl_len = 0;
        break;

    case NGX_XMPP_WS_OP_TEXT:
        if (d->in_message) {
            return ngx_xmpp_ws_error(d, NGX_XMPP_WS_CLOSE_PROTOCOL);
        }
        d->in_message = 1;
        d->message_len = 0;
        d->utf8 = NGX_XMPP_UTF8_ACCEPT;
        break;

    case NGX_XMPP_WS_OP_CONT:
        if (!d->in_message) {
            return ngx_xmpp_ws_error(d, NGX_XMPP_WS_CLOSE_PROTOCOL);
        }
        break;

    case NGX_XMPP_WS_OP_BINARY:
        /* RFC 7395 section 3.2: XMPP travels in text frames only */
        return ngx_xmpp_ws_error(d, NGX_XMPP_WS_CLOSE_UNSUPPORTED);

    default:
        return ngx_xmpp_ws_error(d, NGX_XMPP_WS_CLOSE_PROTOCOL);
    }

    if (op < NGX_XMPP_WS_OP_CLOSE) {
        if (len > d->max_message - d->message_len) {
            return ngx_xmpp_ws_error(d, NGX_XMPP_WS_CLOSE_TOO_BIG);
        }
        d->message_len += len;
    }

    d->state = ws_state_payload;

    return NGX_XMPP_WS_EV_NEED_MORE;
}


static ngx_xmpp_ws_ev_e
ngx_xmpp_ws_control_done(ngx_xmpp_ws_decoder_t *d)
{
    unsigned  code;

    switch (d->opcode) {

    case NGX_XMPP_WS_OP_PING:
        return NGX_XMPP_WS_EV_PING;

    case NGX_XMPP_WS_OP_PONG:
        return NGX_XMPP_WS_EV_PONG;
    }

    /* section 5.5.1: an optional 2-byte code, then a UTF-8 reason */
    d->close_code = 0;

    if (d->ctl_len == 1) {
        return ngx_xmpp_ws_error(d, NGX_XMPP_WS_CLOSE_PROTOCOL);
    }

    if (d->ctl_len >= 2) {
        code = (d->ctl[0] << 8) | d->ctl[1];

        /* section 7.4: codes a peer may send */
        if (!((code >= 1000 && code <= 1003)
              || (code >= 1007 && code <= 1011)
              || (code >= 3000 && code <= 4999)))
        {
            return ngx_xmpp_ws_error(d, NGX_XMPP_WS_CLOSE_PROTOCOL);
        }

        if (ngx_xmpp_utf8_step(0, d->ctl + 2, d->ctl_len - 2)
            != NGX_XMPP_UTF8_ACCEPT)
        {
            return ngx_xmpp_ws_error(d, NGX_XMPP_WS_CLOSE_BAD_DATA);
        }

        d->close_code = code;
    }

    return NGX_XMPP_WS_EV_CLOSE;
}


/*
 * Returns the next event; *pos advances over what was consumed.
 * NEED_MORE means every byte up to last was consumed.  After ERROR the
 * decoder must not be used again.
 */
ngx_xmpp_ws_ev_e
ngx_xmpp_ws_decode(ngx_xmpp_ws_decoder_t *d, unsigned char **pos,
    unsigned char *last)
{
    size_t             n, i;
    unsigned char     *p;
    ngx_xmpp_ws_ev_e   ev;

    for ( ;; ) {

        switch (d->state) {

        case ws_state_message_end:
            d->state = ws_state_header;
            d->in_message = 0;

            if (d->utf8 != NGX_XMPP_UTF8_ACCEPT) {
                return ngx_xmpp_ws_error(d, NGX_XMPP_WS_CLOSE_BAD_DATA);
            }

            return NGX_XMPP_WS_EV_MESSAGE_END;

        case ws_state_header:
            if (*pos == last) {
                return NGX_XMPP_WS_EV_NEED_MORE;
            }

            while (*pos < last && d->hdr_len < d->hdr_need) {
                d->hdr[d->hdr_len++] = *(*pos)++;

                if (d->hdr_len == 2) {
                    ev = ngx_xmpp_ws_header_start(d);
                    if (ev != NGX_XMPP_WS_EV_NEED_MORE) {
                        return ev;
                    }
                }
            }

            if (d->hdr_len < d->hdr_need) {
                return NGX_XMPP_WS_EV_NEED_MORE;
            }

            ev = ngx_xmpp_ws_header_done(d);

            d->hdr_len = 0;
            d->hdr_need = 2;

            if (ev != NGX_XMPP_WS_EV_NEED_MORE) {
                return ev;
            }

            break;

        default: /* ws_state_payload */
            n = last - *pos;
            if (n > d->remaining) {
                n = (size_t) d->remaining;
            }

            p = *pos;

            for (i = 0; i < n; i++) {
                p[i] ^= d->mask[d->mask_pos];
                d->mask_pos = (d->mask_pos + 1) & 3;
            }

            *pos += n;
            d->remaining -= n;

            if (d->opcode >= NGX_XMPP_WS_OP_CLOSE) {
                memcpy(d->ctl + d->ctl_len, p, n);
                d->ctl_len += n;

                if (d->remaining) {
                    return NGX_XMPP_WS_EV_NEED_MORE;
                }

                d->state = ws_state_header;
                return ngx_xmpp_ws_control_done(d);
            }

            d->utf8 = ngx_xmpp_utf8_step(d->utf8, p, n);
            if (d->utf8 == NGX_XMPP_UTF8_REJECT) {
                return ngx_xmpp_ws_error(d, NGX_XMPP_WS_CLOSE_BAD_DATA);
            }

            if (d->remaining == 0) {
                d->state = d->fin ? ws_state_message_end : ws_state_header;
            }

            if (n) {
                d->data = p;
                d->len = n;
                return NGX_XMPP_WS_EV_DATA;
            }

            if (d->remaining) {
                return NGX_XMPP_WS_EV_NEED_MORE;
            }

            break;
        }
    }
}


/* server frames are never masked (section 5.1) */
size_t
ngx_xmpp_ws_frame_header(unsigned char *buf, unsigned opcode, uint64_t len)
{
    unsigned  i;

    buf[0] = 0x80 | (opcode & 0x0f);

    if (len < 126) {
        buf[1] = (unsigned char) len;
        return 2;
    }

    if (len <= 0xffff) {
        buf[1] = 126;
        buf[2] = (unsigned char) (len >> 8);
        buf[3] = (unsigned char) len;
        return 4;
    }

    buf[1] = 127;

    for (i = 0; i < 8; i++) {
        buf[2 + i] = (unsigned char) (len >> (56 - 8 * i));
    }

    return 10;
}
