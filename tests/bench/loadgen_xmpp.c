
/*
 * loadgen_xmpp.c: one client session of the load generator.
 *
 * Edge-triggered epoll: every handler reads and writes until EAGAIN.
 * A session connects (from 127.0.0.x), optionally does TLS, upgrades to
 * WebSocket (RFC 6455 section 4.1, subprotocol "xmpp"), then signs in
 * as RFC 7395 and RFC 6120 describe: <open/>, SASL PLAIN, <open/>
 * again, resource binding, initial presence.  Over TCP (tcp:// and,
 * with direct TLS as XEP-0368 has it, tls://) there is no upgrade: the
 * same sign-in runs on an RFC 6120 stream, <stream:stream> headers in
 * place of <open/>, and the server's stanzas are cut out of its stream
 * by element depth.  Stanzas the scenario sends are queued on the
 * session and written once per loop turn.
 */

#include "loadgen.h"

#include <fcntl.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <openssl/err.h>


static void lg_flush(lg_conn_t *c);


/* output buffers and WebSocket framing (RFC 6455 section 5) */

int
lg_reserve(unsigned char **buf, size_t *cap, size_t need)
{
    size_t          n;
    unsigned char  *p;

    if (need <= *cap) {
        return 0;
    }

    n = *cap ? *cap : 4096;
    while (n < need) {
        n *= 2;
    }

    p = realloc(*buf, n);
    if (p == NULL) {
        return -1;
    }

    *buf = p;
    *cap = n;
    return 0;
}


static void
lg_mark_dirty(lg_conn_t *c)
{
    if (!c->dirty) {
        c->dirty = 1;
        c->next_dirty = lg.dirty;
        lg.dirty = c;
    }
}


/*
 * Queue one frame; client frames are masked (section 5.3).  An XML
 * stream over TCP has no frames: the stanza's bytes are queued as
 * they are.
 */
static int
lg_ws_frame(lg_conn_t *c, int opcode, const void *data, size_t len)
{
    size_t          i, h;
    uint32_t        key;
    unsigned char  *p, m[4];
    const unsigned char  *s;

    if (c->wlen - c->woff + len + 14 > LG_MAX_WBUF) {
        lg_fail(c, "client: output backlog over %d bytes", LG_MAX_WBUF);
        return -1;
    }

    if (c->woff) {
        memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
        c->wlen -= c->woff;
        c->woff = 0;
    }

    if (lg_reserve(&c->wbuf, &c->wcap, c->wlen + len + 14) == -1) {
        lg_die("out of memory");
    }

    p = c->wbuf + c->wlen;

    if (lg.tcp && !lg.relay) {
        memcpy(p, data, len);
        c->wlen += len;
        lg_mark_dirty(c);
        return 0;
    }

    p[0] = 0x80 | opcode;
    if (len < 126) {
        p[1] = 0x80 | len;
        h = 2;
    } else if (len < 65536) {
        p[1] = 0x80 | 126;
        p[2] = len >> 8;
        p[3] = len & 0xff;
        h = 4;
    } else {
        p[1] = 0x80 | 127;
        for (i = 0; i < 8; i++) {
            p[2 + i] = (uint64_t) len >> (56 - 8 * i);
        }
        h = 10;
    }

    key = (uint32_t) lg_rand();
    memcpy(m, &key, 4);
    memcpy(p + h, m, 4);
    h += 4;

    s = data;
    for (i = 0; i < len; i++) {
        p[h + i] = s[i] ^ m[i & 3];
    }

    c->wlen += h + len;
    lg_mark_dirty(c);
    return 0;
}


int
lg_send(lg_conn_t *c, const char *fmt, ...)
{
    int      n;
    char     buf[4096];
    va_list  ap;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);

    if (n < 0 || (size_t) n >= sizeof(buf)) {
        lg_die("stanza too long");
    }

    return lg_ws_frame(c, 1, buf, n);
}


static size_t
lg_base64(char *dst, const unsigned char *src, size_t len)
{
    static const char  t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrst"
                             "uvwxyz0123456789+/";
    size_t    i, n;
    uint32_t  v;

    n = 0;
    for (i = 0; i < len; i += 3) {
        v = src[i] << 16;
        if (i + 1 < len) {
            v |= src[i + 1] << 8;
        }
        if (i + 2 < len) {
            v |= src[i + 2];
        }
        dst[n++] = t[(v >> 18) & 63];
        dst[n++] = t[(v >> 12) & 63];
        dst[n++] = i + 1 < len ? t[(v >> 6) & 63] : '=';
        dst[n++] = i + 2 < len ? t[v & 63] : '=';
    }

    dst[n] = '\0';
    return n;
}


/*
 * A scanner for the server's replies, not an XML parser: every stanza
 * arrives as one WebSocket text message (RFC 7395 section 3.3.3), so
 * the root element's name and attributes and the text of one child are
 * all a client needs here.
 */

static int
lg_xml_is(const unsigned char *m, size_t len, const char *name)
{
    size_t  n;

    n = strlen(name);
    return len > n + 1 && m[0] == '<' && memcmp(m + 1, name, n) == 0
           && (m[n + 1] == ' ' || m[n + 1] == '/' || m[n + 1] == '>');
}


/* an attribute of the root start tag; 0 if absent */
size_t
lg_xml_attr(const unsigned char *m, size_t len, const char *name,
    const unsigned char **val)
{
    size_t          n, i;
    unsigned char   q;
    const unsigned char  *end, *v;

    n = strlen(name);
    end = memchr(m, '>', len);
    if (end == NULL) {
        return 0;
    }

    for (i = 1; m + i + n + 2 < end; i++) {
        if (m[i] == '\'' || m[i] == '"') {
            /* skip a value, which may hold anything but its quote */
            v = memchr(m + i + 1, m[i], end - (m + i + 1));
            if (v == NULL) {
                return 0;
            }
            i = v - m;
            continue;
        }

        if (m[i - 1] == ' ' && memcmp(m + i, name, n) == 0
            && m[i + n] == '=')
        {
            q = m[i + n + 1];
            v = m + i + n + 2;
            end = memchr(v, q, len - (v - m));
            if (end == NULL) {
                return 0;
            }
            *val = v;
            return end - v;
        }
    }

    return 0;
}


/* the text of the first <tag>...</tag> */
size_t
lg_xml_text(const unsigned char *m, size_t len, const char *open,
    const char *close, const unsigned char **text)
{
    const unsigned char  *p, *e;

    p = memmem(m, len, open, strlen(open));
    if (p == NULL) {
        return 0;
    }

    p += strlen(open);
    e = memmem(p, len - (p - m), close, strlen(close));
    if (e == NULL) {
        return 0;
    }

    *text = p;
    return e - p;
}


/*
 * The condition of an error: the element in an xmpp-streams or
 * xmpp-stanzas namespace, else (SASL <failure/>) the first child.
 */
void
lg_xml_condition(const unsigned char *m, size_t len, char *out, size_t n)
{
    size_t                i;
    const unsigned char  *p, *e, *last;

    last = m + len;
    p = m + 1;

    for ( ;; ) {
        p = memmem(p, last - p, "urn:ietf:params:xml:ns:xmpp-", 28);
        if (p == NULL) {
            /* the first child element */
            e = memchr(m, '>', len);
            if (e == NULL || e + 2 >= last || e[1] != '<') {
                snprintf(out, n, "?");
                return;
            }
            e++;
            break;
        }

        for (e = p; e > m && *e != '<'; e--) { /* void */ }

        if (e != m) {
            break;
        }
        p++;
    }

    for (i = 0, e++; i + 1 < n && e < last && *e != ' ' && *e != '/'
                     && *e != '>'; i++)
    {
        out[i] = *e++;
    }
    out[i] = '\0';
}


/* sessions */

void
lg_online_add(lg_conn_t *c)
{
    c->pos = lg.nonline;
    lg.online[lg.nonline++] = c->slot;
}


static void
lg_online_remove(lg_conn_t *c)
{
    lg_conn_t  *last;

    if (c->pos < 0) {
        return;
    }

    last = &lg.conns[lg.online[--lg.nonline]];
    lg.online[c->pos] = last->slot;
    last->pos = c->pos;
    c->pos = -1;
}


void
lg_conn_end(lg_conn_t *c, int ok)
{
    if (c->state == LG_FREE) {
        return;
    }

    if (c->state >= LG_CONNECTING && c->state < LG_ONLINE) {
        lg.signing_in--;
    }

    if (c->state == LG_ONLINE || c->pos >= 0) {
        lg.online_now -= c->state == LG_ONLINE;
        lg_online_remove(c);
    }

    if (!ok) {
        lg.failed++;
    }

    /* messages this sender had in flight cannot be told apart now */
    lg.lost += c->inflight;
    lg.inflight -= c->inflight;
    c->inflight = 0;

    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }

    if (c->fd != -1) {
        close(c->fd);
        c->fd = -1;
    }

    c->state = LG_FREE;
    c->rlen = c->woff = c->wlen = c->mlen = 0;
    lg.freelist[lg.nfree++] = c->slot;
    lg.live--;
}


void
lg_fail(lg_conn_t *c, const char *fmt, ...)
{
    char     text[96];
    va_list  ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);

    lg_reason("%s", text);
    lg_conn_end(c, 0);
}


void
lg_conn_start(void)
{
    int                 fd, one, slot, src;
    lg_conn_t          *c;
    struct sockaddr_in  sin;
    struct epoll_event  ev;

    if (lg.nfree == 0) {
        return;
    }

    slot = lg.freelist[--lg.nfree];
    c = &lg.conns[slot];
    c->slot = slot;
    c->user = lg.next_user++ % lg.nusers;
    c->pos = -1;
    c->inflight = 0;
    c->ws_close_sent = 0;
    c->in_stream = 0;
    c->t_start = lg_now();
    c->deadline = c->t_start + (uint64_t) (lg.timeout * LG_NS);
    c->state = LG_CONNECTING;
    lg.live++;
    lg.signing_in++;
    lg.started++;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    c->fd = fd;
    if (fd == -1) {
        lg_fail(c, "socket: %s", strerror(errno));
        return;
    }

    one = 1;
    (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    /*
     * One source address gives about 28,000 ephemeral ports towards one
     * server port.  Spreading sources over 127.0.0.x, with the port
     * chosen at connect() (IP_BIND_ADDRESS_NO_PORT), lifts that limit.
     */
    if (lg.nsrc > 1) {
        (void) setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
                          sizeof(one));
        src = 1 + slot % lg.nsrc;
        memset(&sin, 0, sizeof(sin));
        sin.sin_family = AF_INET;
        sin.sin_addr.s_addr = htonl(0x7f000000 | src);
        if (bind(fd, (struct sockaddr *) &sin, sizeof(sin)) == -1) {
            lg_fail(c, "bind 127.0.0.x: %s", strerror(errno));
            return;
        }
    }

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(lg.port);
    if (inet_pton(AF_INET, lg.host, &sin.sin_addr) != 1) {
        lg_die("host must be an IPv4 address: %s", lg.host);
    }

    if (connect(fd, (struct sockaddr *) &sin, sizeof(sin)) == -1
        && errno != EINPROGRESS)
    {
        lg_fail(c, "connect: %s", strerror(errno));
        return;
    }

    /* edge-triggered: every handler reads and writes until EAGAIN */
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = c;
    if (epoll_ctl(lg.ep, EPOLL_CTL_ADD, fd, &ev) == -1) {
        lg_fail(c, "epoll_ctl: %s", strerror(errno));
    }
}


static void
lg_upgrade(lg_conn_t *c)
{
    char           b64[32], req[512];
    int            n;
    uint64_t       k[2];

    k[0] = lg_rand();
    k[1] = lg_rand();
    lg_base64(b64, (unsigned char *) k, 16);

    n = snprintf(req, sizeof(req),
                 "GET %s HTTP/1.1\r\nHost: %s:%d\r\n"
                 "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                 "Sec-WebSocket-Protocol: xmpp\r\n\r\n",
                 lg.path, lg.host, lg.port, b64);

    if (lg_reserve(&c->wbuf, &c->wcap, n) == -1) {
        lg_die("out of memory");
    }

    memcpy(c->wbuf, req, n);
    c->woff = 0;
    c->wlen = n;
    c->state = LG_UPGRADE;
    lg_mark_dirty(c);
}


/* the first (or, after SASL, the restarted) stream */
static void
lg_open_stream(lg_conn_t *c)
{
    if (lg.tcp) {
        c->in_stream = 0;
        (void) lg_send(c, LG_TCP_OPEN, lg.domain);
    } else {
        (void) lg_send(c, LG_OPEN, lg.domain);
    }
}


/* the connection is up (and TLS done): upgrade, or start at once */
static void
lg_connected(lg_conn_t *c)
{
    if (!lg.tcp) {
        lg_upgrade(c);

    } else if (lg.relay) {
        c->state = LG_AUTH;
        (void) lg_send(c, LG_RELAY_LOGIN, lg.uids[c->user], lg.pws[c->user]);

    } else {
        c->state = LG_OPEN1;
        lg_open_stream(c);
    }

    lg_flush(c);
}


void
lg_close_stream(lg_conn_t *c)
{
    if (c->state == LG_ONLINE) {
        lg.online_now--;
        lg_online_remove(c);
    }

    c->state = LG_CLOSING;
    c->deadline = lg_now() + (uint64_t) (lg.timeout * LG_NS);

    if (lg.tcp && !lg.relay) {
        /* RFC 6120 section 4.4: then wait for the server's end tag */
        c->ws_close_sent = 1;
        (void) lg_send(c, LG_TCP_CLOSE);
        return;
    }

    (void) lg_send(c, lg.relay ? LG_RELAY_QUIT : LG_CLOSE);
}


/*
 * --proto relay: "OK" signs the session in, "E <reason>" is an error;
 * chat messages arrive as the same <message/> the XMPP servers send.
 */
static void
lg_relay_dispatch(lg_conn_t *c, const unsigned char *m, size_t len)
{
    if (lg_xml_is(m, len, "message")
        && (c->state == LG_ONLINE || c->state == LG_CLOSING))
    {
        lg_chat_receive(c, m, len);
        return;
    }

    if (c->state == LG_AUTH) {
        if (len == 2 && memcmp(m, "OK", 2) == 0) {
            lg_signed_in(c);
        } else {
            lg_fail(c, "auth: %.*s", (int) (len < 40 ? len : 40), m);
        }
        return;
    }

    if (len > 2 && m[0] == 'E' && m[1] == ' ') {
        lg_reason("message: error %.*s", (int) (len < 40 ? len : 40) - 2,
                  m + 2);
        lg.msg_errors++;
        if (c->inflight) {
            c->inflight--;
            lg.inflight--;
        }
    }
}


/* one text message from the server, by the session's state */
static void
lg_dispatch(lg_conn_t *c, const unsigned char *m, size_t len)
{
    char                  cred[512], b64[700], cond[64];
    int                   n;
    size_t                vl;
    const unsigned char  *v;

    if (lg.relay) {
        lg_relay_dispatch(c, m, len);
        return;
    }

    if (lg_xml_is(m, len, "message")) {
        if (c->state == LG_ONLINE || c->state == LG_CLOSING) {
            lg_chat_receive(c, m, len);
            return;
        }
    }

    if (lg.scenario == LG_SC_MUC && c->state == LG_ONLINE
        && lg_xml_is(m, len, "presence"))
    {
        lg_muc_presence(c, m, len);
        return;
    }

    if (lg.scenario == LG_SC_MUC && c->state == LG_ONLINE
        && lg_xml_is(m, len, "iq"))
    {
        lg_muc_iq(c, m, len);
        return;
    }

    if (lg_xml_is(m, len, "stream:error")) {
        lg_xml_condition(m, len, cond, sizeof(cond));
        lg_fail(c, "stream error: %s", cond);
        return;
    }

    if (lg_xml_is(m, len, "close")) {
        if (c->state != LG_CLOSING) {
            lg_fail(c, "server closed the stream");
        }
        return;
    }

    switch (c->state) {

    case LG_OPEN1:
        if (lg_xml_is(m, len, "stream:features")) {
            /* RFC 4616: authzid NUL authcid NUL passwd */
            n = snprintf(cred, sizeof(cred), "%c%s%c%s", 0,
                         lg.uids[c->user], 0, lg.pws[c->user]);
            lg_base64(b64, (unsigned char *) cred, n);
            (void) lg_send(c, "<auth xmlns='urn:ietf:params:xml:ns:"
                           "xmpp-sasl' mechanism='PLAIN'>%s</auth>", b64);
            c->state = LG_AUTH;
        }
        return;

    case LG_AUTH:
        if (lg_xml_is(m, len, "success")) {
            c->state = LG_OPEN2;
            lg_open_stream(c);
        } else {
            lg_xml_condition(m, len, cond, sizeof(cond));
            lg_fail(c, "auth: %s", cond);
        }
        return;

    case LG_OPEN2:
        if (lg_xml_is(m, len, "stream:features")) {
            c->state = LG_BIND;
            /* chat sessions are one per user, all "lg": the peer's
             * full JID follows from its uid alone */
            (void) lg_send(c, "<iq xmlns='jabber:client' type='set' id='b1'>"
                           "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                           "<resource>lg%.0u</resource></bind></iq>",
                           lg.scenario == LG_SC_LOGIN ? c->slot + 1 : 0);
        }
        return;

    case LG_BIND:
        vl = lg_xml_attr(m, len, "type", &v);
        if (lg_xml_is(m, len, "iq") && vl == 6
            && memcmp(v, "result", 6) == 0)
        {
            c->state = LG_PRESENCE;
            (void) lg_send(c, "<presence xmlns='jabber:client'/>");
        } else {
            lg_xml_condition(m, len, cond, sizeof(cond));
            lg_fail(c, "bind: %s", cond);
        }
        return;

    case LG_PRESENCE:
        /* RFC 6121 4.2.2: initial presence comes back to its sender */
        if (lg_xml_is(m, len, "presence")) {
            lg_signed_in(c);
        }
        return;

    default:
        return;
    }
}


/*
 * RFC 6455 section 5.2 frames from the server: never masked; text
 * messages may come fragmented, and control frames between fragments.
 */
static void
lg_frames(lg_conn_t *c)
{
    int             fin, op;
    size_t          pos, h, len, i;
    unsigned char  *p;

    pos = 0;

    while (c->rlen - pos >= 2) {
        p = c->rbuf + pos;
        fin = p[0] & 0x80;
        op = p[0] & 0x0f;
        len = p[1] & 0x7f;
        h = 2;

        if (p[1] & 0x80) {
            lg_fail(c, "ws: masked server frame");
            return;
        }

        if (len == 126) {
            if (c->rlen - pos < 4) {
                break;
            }
            len = (p[2] << 8) | p[3];
            h = 4;
        } else if (len == 127) {
            if (c->rlen - pos < 10) {
                break;
            }
            for (len = 0, i = 0; i < 8; i++) {
                len = (len << 8) | p[2 + i];
            }
            h = 10;
        }

        if (len > LG_MAX_FRAME) {
            lg_fail(c, "ws: frame over %d bytes", LG_MAX_FRAME);
            return;
        }

        if (c->rlen - pos < h + len) {
            break;
        }

        pos += h + len;
        p += h;

        if (op == 1 || op == 0) {
            if (fin && c->mlen == 0 && op == 1) {
                lg_dispatch(c, p, len);
            } else {
                if (lg_reserve(&c->mbuf, &c->mcap, c->mlen + len) == -1) {
                    lg_die("out of memory");
                }
                memcpy(c->mbuf + c->mlen, p, len);
                c->mlen += len;
                if (fin) {
                    i = c->mlen;
                    c->mlen = 0;
                    lg_dispatch(c, c->mbuf, i);
                }
            }

        } else if (op == 8) {
            if (c->state != LG_CLOSING) {
                lg_fail(c, "ws: server sent close %d",
                        len >= 2 ? (p[0] << 8) | p[1] : 0);
                return;
            }
            if (!c->ws_close_sent) {
                c->ws_close_sent = 1;
                (void) lg_ws_frame(c, 8, p, len >= 2 ? 2 : 0);
            }

        } else if (op == 9) {
            (void) lg_ws_frame(c, 10, p, len);
        }

        /* the handler may have ended the session */
        if (c->state == LG_FREE) {
            return;
        }
    }

    if (pos) {
        memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
        c->rlen -= pos;
    }
}


/* the '>' that ends the tag at p, skipping quoted attribute values */
static const unsigned char *
lg_tag_end(const unsigned char *p, const unsigned char *last)
{
    const unsigned char  *q;

    for ( ; p < last; p++) {
        if (*p == '>') {
            return p;
        }

        if (*p == '\'' || *p == '"') {
            q = memchr(p + 1, *p, last - (p + 1));
            if (q == NULL) {
                return NULL;
            }
            p = q;
        }
    }

    return NULL;
}


/* the server's </stream:stream> (RFC 6120 section 4.4) */
static void
lg_stream_end(lg_conn_t *c)
{
    if (c->state != LG_CLOSING) {
        lg_fail(c, "server closed the stream");
        return;
    }

    /* both end tags are out: the stream is over both ways */
    lg_conn_end(c, 1);
}


/*
 * RFC 6120 section 4: over TCP the server's stanzas are the children of
 * its <stream:stream> element, with no framing.  They are cut out by
 * element depth; bytes are consumed only at stanza boundaries, so a
 * stanza split across reads is scanned again from its start when the
 * rest arrives.  A restarted stream (after SASL, section 6.4.6) brings
 * a new header at depth 1.  The server sends no comments, PIs in the
 * stream or DTDs (section 11.1).
 */
static void
lg_stream_split(lg_conn_t *c)
{
    int                   depth;
    size_t                pos, start;
    const unsigned char  *p, *last, *e, *s;

    s = c->rbuf;
    last = s + c->rlen;
    p = s;
    pos = start = 0;
    depth = c->in_stream;

    while (p < last) {
        if (*p != '<') {
            e = memchr(p, '<', last - p);
            p = e ? e : last;
            if (depth <= 1) {
                pos = p - s;            /* whitespace between stanzas */
            }
            continue;
        }

        if (last - p < 2) {
            break;
        }

        if (p[1] == '?') {
            e = memmem(p, last - p, "?>", 2);
            if (e == NULL) {
                break;
            }
            p = e + 2;
            pos = depth <= 1 ? (size_t) (p - s) : pos;
            continue;
        }

        if (p[1] == '!') {
            lg_fail(c, "stream: the server sent <!");
            return;
        }

        e = lg_tag_end(p, last);
        if (e == NULL) {
            break;
        }
        e++;

        if (p[1] == '/') {
            if (depth <= 1) {
                lg_stream_end(c);
                return;
            }

            if (--depth == 1) {
                lg_dispatch(c, s + start, e - (s + start));
                pos = e - s;
            }

        } else if (e[-2] == '/') {
            if (depth == 1) {
                lg_dispatch(c, p, e - p);
                pos = e - s;
            }

        } else if (depth <= 1 && lg_xml_is(p, e - p, "stream:stream")) {
            depth = 1;
            c->in_stream = 1;
            pos = e - s;

        } else {
            if (depth == 0) {
                lg_fail(c, "stream: no <stream:stream> header");
                return;
            }
            if (depth++ == 1) {
                start = p - s;
            }
        }

        if (c->state == LG_FREE) {
            return;
        }

        p = e;
    }

    if (pos) {
        memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
        c->rlen -= pos;
    }

    if (c->rlen > LG_MAX_FRAME) {
        lg_fail(c, "stream: stanza over %d bytes", LG_MAX_FRAME);
    }
}


static void
lg_http_reply(lg_conn_t *c)
{
    unsigned char  *e;
    size_t          n;

    e = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
    if (e == NULL) {
        if (c->rlen > 8192) {
            lg_fail(c, "upgrade: reply too long");
        }
        return;
    }

    n = e + 4 - c->rbuf;
    if (c->rlen < 12 || memcmp(c->rbuf + 9, "101", 3) != 0) {
        lg_fail(c, "upgrade: HTTP %.3s", c->rlen >= 12
                ? (char *) c->rbuf + 9 : "???");
        return;
    }

    memmove(c->rbuf, c->rbuf + n, c->rlen - n);
    c->rlen -= n;

    if (lg.relay) {
        c->state = LG_AUTH;
        (void) lg_send(c, LG_RELAY_LOGIN, lg.uids[c->user], lg.pws[c->user]);
        return;
    }

    c->state = LG_OPEN1;
    lg_open_stream(c);
}


/* the transport: plain or TLS, with EAGAIN reported as -2 */

static ssize_t
lg_io_read(lg_conn_t *c, unsigned char *buf, size_t n)
{
    int      r;
    ssize_t  k;

    if (c->ssl == NULL) {
        k = read(c->fd, buf, n);
        if (k == -1 && (errno == EAGAIN || errno == EINTR)) {
            return -2;
        }
        return k;
    }

    ERR_clear_error();
    r = SSL_read(c->ssl, buf, n);
    if (r > 0) {
        return r;
    }

    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return -2;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    default:
        /* a peer that resets without close_notify reads as EOF too */
        return errno == ECONNRESET || r == 0 ? 0 : -1;
    }
}


static ssize_t
lg_io_write(lg_conn_t *c, const unsigned char *buf, size_t n)
{
    int      r;
    ssize_t  k;

    if (c->ssl == NULL) {
        k = send(c->fd, buf, n, MSG_NOSIGNAL);
        if (k == -1 && (errno == EAGAIN || errno == EINTR)) {
            return -2;
        }
        return k;
    }

    ERR_clear_error();
    r = SSL_write(c->ssl, buf, n);
    if (r > 0) {
        return r;
    }

    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return -2;
    default:
        return -1;
    }
}


static void
lg_flush(lg_conn_t *c)
{
    ssize_t  n;

    while (c->woff < c->wlen) {
        n = lg_io_write(c, c->wbuf + c->woff, c->wlen - c->woff);
        if (n == -2) {
            return;
        }
        if (n < 0) {
            lg_fail(c, "write: %s", c->ssl ? "TLS error" : strerror(errno));
            return;
        }
        c->woff += n;
    }

    c->woff = c->wlen = 0;
}


static void
lg_read(lg_conn_t *c)
{
    ssize_t  n;

    for ( ;; ) {
        if (lg_reserve(&c->rbuf, &c->rcap, c->rlen + 16384) == -1) {
            lg_die("out of memory");
        }

        n = lg_io_read(c, c->rbuf + c->rlen, c->rcap - c->rlen);
        if (n == -2) {
            return;
        }

        if (n <= 0) {
            if (c->state == LG_CLOSING && c->ws_close_sent) {
                lg_conn_end(c, 1);
            } else {
                lg_fail(c, "%s in state %d", n == 0 ? "EOF" : "read error",
                        c->state);
            }
            return;
        }

        c->rlen += n;

        if (lg.tcp && !lg.relay) {
            lg_stream_split(c);

        } else {
            if (c->state == LG_UPGRADE) {
                lg_http_reply(c);
            }

            if (c->state > LG_UPGRADE) {
                lg_frames(c);
            }
        }

        if (c->state == LG_FREE) {
            return;
        }
    }
}


/*
 * What the first handshake negotiated: protocol, cipher, the server's
 * key and the key exchange group, so a run shows that every server got
 * the same TLS (the CSV's tls column).
 */
static void
lg_tls_describe(lg_conn_t *c)
{
    int          group;
    X509        *cert;
    EVP_PKEY    *key;
    const char  *gname;

    cert = SSL_get1_peer_certificate(c->ssl);
    key = cert ? X509_get0_pubkey(cert) : NULL;
    group = SSL_get_negotiated_group(c->ssl);
    gname = group ? OBJ_nid2sn(group & ~TLSEXT_nid_unknown) : NULL;

    (void) snprintf(lg.tls_desc, sizeof(lg.tls_desc), "%s %s %s-%d %s",
                    SSL_get_version(c->ssl),
                    SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl)),
                    key ? EVP_PKEY_get0_type_name(key) : "?",
                    key ? EVP_PKEY_get_bits(key) : 0,
                    gname ? gname : "?");
    X509_free(cert);
}


static void
lg_tls_handshake(lg_conn_t *c)
{
    int  r;

    ERR_clear_error();
    r = SSL_connect(c->ssl);
    if (r == 1) {
        if (lg.tls_desc[0] == '\0') {
            lg_tls_describe(c);
        }
        lg_connected(c);
        return;
    }

    r = SSL_get_error(c->ssl, r);
    if (r != SSL_ERROR_WANT_READ && r != SSL_ERROR_WANT_WRITE) {
        lg_fail(c, "TLS handshake failed");
    }
}


void
lg_event(lg_conn_t *c, uint32_t events)
{
    int        err;
    socklen_t  len;

    if (c->state == LG_CONNECTING) {
        err = 0;
        len = sizeof(err);
        (void) getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            lg_fail(c, "connect: %s", strerror(err));
            return;
        }

        if (!(events & EPOLLOUT)) {
            return;
        }

        if (!lg.tls) {
            lg_connected(c);
            return;
        }

        c->ssl = SSL_new(lg.ssl_ctx);
        if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
            lg_die("SSL_new failed");
        }
        (void) SSL_set_tlsext_host_name(c->ssl, lg.domain);
        SSL_set_connect_state(c->ssl);
        c->state = LG_TLS;
    }

    if (c->state == LG_TLS) {
        lg_tls_handshake(c);
        if (c->state == LG_TLS || c->state == LG_FREE) {
            return;
        }
    }

    if (events & EPOLLOUT) {
        lg_flush(c);
        if (c->state == LG_FREE) {
            return;
        }
    }

    lg_read(c);
}


void
lg_flush_dirty(void)
{
    lg_conn_t  *c, *next;

    for (c = lg.dirty; c; c = next) {
        next = c->next_dirty;
        c->dirty = 0;
        if (c->state != LG_FREE && c->state != LG_CONNECTING
            && c->state != LG_TLS)
        {
            lg_flush(c);
        }
    }

    lg.dirty = NULL;
}


/* step timeouts; called about every 100 ms */
void
lg_timeouts(uint64_t now)
{
    int         i;
    lg_conn_t  *c;
    static const char  *names[] = {
        "free", "connect", "TLS", "upgrade", "open", "auth", "open2",
        "bind", "presence", "online", "close"
    };

    for (i = 0; i < lg.nslots; i++) {
        c = &lg.conns[i];
        if (c->state != LG_FREE && c->deadline && now > c->deadline) {
            lg_fail(c, "timeout in %s", names[c->state]);
        }
    }
}
