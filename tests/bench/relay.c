
/*
 * relay: the physical ceiling of the benchmark (issue 4).
 *
 * A trivial WebSocket relay with no XML, no directory and no audit:
 * what the machine can do with the same load generator, the same
 * sockets and the same RFC 6455 framing when a server does nothing but
 * forward frames.  Conclave's throughput as a share of the relay's says
 * how much of the machine the XMPP work costs.
 *
 * One process, one thread, one edge-triggered epoll loop (as an nginx
 * worker), optionally pinned to a CPU.  The protocol, driven by
 * `loadgen --proto relay`, is one text message per line of work:
 *
 *   client -> relay   "L <uid> <password>"    log in: the uid becomes
 *                                             this connection's routing
 *                                             key (the password must be
 *                                             "<uid>-pw", the bench
 *                                             users' convention)
 *   relay -> client   "OK" | "E <reason>"
 *   client -> relay   "<uid>\n<payload>"      forward payload to uid
 *   relay -> <uid>    "<payload>"             the same bytes, unmasked
 *   relay -> client   "E no-route"            no such uid online
 *   client -> relay   "Q"                     quit: the relay answers
 *                                             with a close frame (1000)
 *
 * The HTTP upgrade is real (Sec-WebSocket-Accept, RFC 6455 section
 * 4.2.2) and so is the framing: client frames are masked and unmasked
 * here, fragments are reassembled, pings get pongs, and a close frame
 * is echoed.  Output is queued per connection and written once per loop
 * turn, so many small frames to one peer leave in one send(); a
 * connection with more than 4 MiB unsent is dropped.  An idle
 * connection holds only its fixed state and its routing entry: input
 * is read into one shared buffer and only a partial frame is kept.
 *
 *   relay --listen 127.0.0.1:PORT [--cpu N] [--max-conns N] [--raw]
 *
 * --raw is the TCP baseline's relay (loadgen's tcp:// URL with --proto
 * relay): no HTTP upgrade, the same frames straight on the TCP
 * connection, as XMPP over TCP has no upgrade either.
 *
 * SIGTERM or SIGINT stop it.  Only loopback addresses are accepted.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <openssl/sha.h>


#define RL_MAX_FRAME    (256 * 1024)
#define RL_MAX_WBUF     (4 * 1024 * 1024)
#define RL_MAX_HTTP     8192
#define RL_MAX_UID      64
#define RL_RBUF         (256 * 1024)
#define RL_EVENTS       512

#define RL_WS_GUID      "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


typedef struct rl_conn_s  rl_conn_t;

struct rl_conn_s {
    int             fd;
    unsigned        upgraded:1;
    unsigned        close_sent:1;     /* our close frame is queued */
    unsigned        closing:1;        /* drop once the output is out */
    unsigned        dirty:1;
    unsigned        dead:1;
    unsigned char  *in;               /* a partial frame or request */
    size_t          inlen;
    unsigned char  *msg;              /* a fragmented message */
    size_t          msglen;
    unsigned char  *out;
    size_t          outoff;
    size_t          outlen;
    size_t          outcap;
    rl_conn_t      *next_dirty;
    rl_conn_t      *next_hash;
    char            uid[RL_MAX_UID];
};


static struct {
    int             ep;
    int             lfd;
    rl_conn_t     **hash;
    size_t          nhash;
    rl_conn_t      *dirty;
    rl_conn_t     **dead;
    int             ndead;
    int             max_conns;
    int             raw;              /* --raw: no HTTP upgrade */
    int             nconns;
    unsigned char   rbuf[RL_RBUF];
} rl;

static volatile sig_atomic_t  rl_stop;


static void
rl_die(const char *what)
{
    fprintf(stderr, "relay: %s: %s\n", what, strerror(errno));
    exit(2);
}


static void
rl_on_signal(int sig)
{
    (void) sig;
    rl_stop = 1;
}


/* the routing table: uid -> connection, chained, FNV-1a */

static size_t
rl_hash_of(const char *uid)
{
    uint64_t  h;

    for (h = 1469598103934665603ULL; *uid; uid++) {
        h = (h ^ (unsigned char) *uid) * 1099511628211ULL;
    }

    return h % rl.nhash;
}


static rl_conn_t *
rl_lookup(const char *uid)
{
    rl_conn_t  *c;

    for (c = rl.hash[rl_hash_of(uid)]; c; c = c->next_hash) {
        if (strcmp(c->uid, uid) == 0) {
            return c;
        }
    }

    return NULL;
}


static void
rl_unroute(rl_conn_t *c)
{
    rl_conn_t  **p;

    if (c->uid[0] == '\0') {
        return;
    }

    for (p = &rl.hash[rl_hash_of(c->uid)]; *p; p = &(*p)->next_hash) {
        if (*p == c) {
            *p = c->next_hash;
            break;
        }
    }

    c->uid[0] = '\0';
}


/* output: queued, written once per loop turn */

static void
rl_close(rl_conn_t *c)
{
    if (c->dead) {
        return;
    }

    c->dead = 1;
    rl_unroute(c);
    (void) epoll_ctl(rl.ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    rl.nconns--;

    /* freed after the loop turn: the dirty list may still name it */
    rl.dead[rl.ndead++] = c;
}


static int
rl_queue(rl_conn_t *c, const void *data, size_t len)
{
    size_t          n;
    unsigned char  *p;

    if (c->outlen - c->outoff + len > RL_MAX_WBUF) {
        rl_close(c);
        return -1;
    }

    if (c->outoff && c->outoff == c->outlen) {
        c->outoff = c->outlen = 0;
    }

    if (c->outlen + len > c->outcap) {
        if (c->outoff) {
            memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
            c->outlen -= c->outoff;
            c->outoff = 0;
        }
        for (n = c->outcap ? c->outcap : 1024; n < c->outlen + len; n *= 2) {
            /* void */
        }
        if (n != c->outcap) {
            p = realloc(c->out, n);
            if (p == NULL) {
                rl_close(c);
                return -1;
            }
            c->out = p;
            c->outcap = n;
        }
    }

    memcpy(c->out + c->outlen, data, len);
    c->outlen += len;

    if (!c->dirty) {
        c->dirty = 1;
        c->next_dirty = rl.dirty;
        rl.dirty = c;
    }

    return 0;
}


/* one unmasked server frame (RFC 6455 section 5.2) */
static int
rl_frame(rl_conn_t *c, int opcode, const void *data, size_t len)
{
    size_t         h;
    unsigned char  hdr[10];

    hdr[0] = 0x80 | opcode;
    if (len < 126) {
        hdr[1] = len;
        h = 2;
    } else if (len < 65536) {
        hdr[1] = 126;
        hdr[2] = len >> 8;
        hdr[3] = len & 0xff;
        h = 4;
    } else {
        hdr[1] = 127;
        for (h = 0; h < 8; h++) {
            hdr[2 + h] = (uint64_t) len >> (56 - 8 * h);
        }
        h = 10;
    }

    if (rl_queue(c, hdr, h) == -1) {
        return -1;
    }

    return rl_queue(c, data, len);
}


static void
rl_flush(rl_conn_t *c)
{
    ssize_t  n;

    while (c->outoff < c->outlen) {
        n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff,
                 MSG_NOSIGNAL);
        if (n == -1) {
            if (errno == EAGAIN || errno == EINTR) {
                return;       /* EPOLLOUT (edge) calls again */
            }
            rl_close(c);
            return;
        }
        c->outoff += n;
    }

    c->outoff = c->outlen = 0;

    /* an idle connection keeps no output buffer */
    if (c->outcap > 16384) {
        free(c->out);
        c->out = NULL;
        c->outcap = 0;
    }

    if (c->closing) {
        rl_close(c);
    }
}


/* the protocol (see the top of the file) */

static void
rl_message(rl_conn_t *c, unsigned char *m, size_t len)
{
    char            uid[RL_MAX_UID], pw[RL_MAX_UID + 4];
    size_t          i;
    rl_conn_t      *to;
    unsigned char  *nl;

    if (len >= 2 && m[0] == 'L' && m[1] == ' ') {
        if (len > 2 * RL_MAX_UID || c->uid[0]
            || sscanf((char *) m + 2, "%63s %67s", uid, pw) != 2)
        {
            (void) rl_frame(c, 1, "E bad-login", 11);
            return;
        }
        /* m is NUL-terminated by the caller for sscanf's sake */
        i = strlen(uid);
        if (strncmp(pw, uid, i) != 0 || strcmp(pw + i, "-pw") != 0) {
            (void) rl_frame(c, 1, "E not-authorized", 16);
            return;
        }
        to = rl_lookup(uid);
        if (to) {
            /* one session per uid, the newer one wins (kick_old) */
            rl_unroute(to);
        }
        memcpy(c->uid, uid, i + 1);
        c->next_hash = rl.hash[rl_hash_of(uid)];
        rl.hash[rl_hash_of(uid)] = c;
        (void) rl_frame(c, 1, "OK", 2);
        return;
    }

    if (len == 1 && m[0] == 'Q') {
        /* the client answers with its close frame (section 5.5.1) */
        rl_unroute(c);
        if (!c->close_sent) {
            c->close_sent = 1;
            (void) rl_frame(c, 8, "\x03\xe8", 2);
        }
        return;
    }

    if (c->uid[0] == '\0') {
        (void) rl_frame(c, 1, "E not-logged-in", 15);
        return;
    }

    nl = memchr(m, '\n', len < RL_MAX_UID ? len : RL_MAX_UID);
    if (nl == NULL) {
        (void) rl_frame(c, 1, "E bad-frame", 11);
        return;
    }

    memcpy(uid, m, nl - m);
    uid[nl - m] = '\0';
    to = rl_lookup(uid);
    if (to == NULL) {
        (void) rl_frame(c, 1, "E no-route", 10);
        return;
    }

    nl++;
    (void) rl_frame(to, 1, nl, len - (nl - m));
}


/*
 * RFC 6455 section 5: parse the frames in p[0..len); returns the bytes
 * used.  The text of a message gets a NUL after it for the login's
 * sscanf (the byte after the payload is always ours to write: the
 * frame buffers have room for it).
 */
static size_t
rl_frames(rl_conn_t *c, unsigned char *p, size_t len)
{
    int             fin, op;
    size_t          pos, h, n, i;
    unsigned char  *d, *q, key[4], save;

    for (pos = 0; len - pos >= 2; pos += h + n) {
        d = p + pos;
        fin = d[0] & 0x80;
        op = d[0] & 0x0f;
        n = d[1] & 0x7f;
        h = 2;

        if (!(d[1] & 0x80)) {
            rl_close(c);        /* client frames must be masked */
            return len;
        }

        if (n == 126) {
            if (len - pos < 4) {
                break;
            }
            n = (d[2] << 8) | d[3];
            h = 4;
        } else if (n == 127) {
            if (len - pos < 10) {
                break;
            }
            for (n = 0, i = 0; i < 8; i++) {
                n = (n << 8) | d[2 + i];
            }
            h = 10;
        }

        if (n > RL_MAX_FRAME) {
            rl_close(c);
            return len;
        }

        if (len - pos < h + 4 + n) {
            break;
        }

        memcpy(key, d + h, 4);
        h += 4;
        q = d + h;
        for (i = 0; i < n; i++) {
            q[i] ^= key[i & 3];
        }

        if (op == 0 || op == 1) {
            if (fin && c->msglen == 0 && op == 1) {
                /* the NUL overwrites the next frame's first byte */
                save = q[n];
                q[n] = '\0';
                rl_message(c, q, n);
                q[n] = save;
            } else {
                if (c->msglen + n > RL_MAX_FRAME) {
                    rl_close(c);
                    return len;
                }
                d = realloc(c->msg, c->msglen + n + 1);
                if (d == NULL) {
                    rl_close(c);
                    return len;
                }
                c->msg = d;
                memcpy(c->msg + c->msglen, q, n);
                c->msglen += n;
                if (fin) {
                    c->msg[c->msglen] = '\0';
                    rl_message(c, c->msg, c->msglen);
                    free(c->msg);
                    c->msg = NULL;
                    c->msglen = 0;
                }
            }

        } else if (op == 8) {
            rl_unroute(c);
            if (c->close_sent) {
                /* the answer to ours: the handshake is complete */
                rl_close(c);
                return len;
            }
            c->close_sent = 1;
            c->closing = 1;
            (void) rl_frame(c, 8, q, n >= 2 ? 2 : 0);
            return len;

        } else if (op == 9) {
            (void) rl_frame(c, 10, q, n);
        }

        if (c->dead) {
            return len;
        }
    }

    return pos;
}


static size_t
rl_base64(char *dst, const unsigned char *src, size_t len)
{
    static const char  t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrst"
                             "uvwxyz0123456789+/";
    size_t    i, n;
    uint32_t  v;

    for (n = 0, i = 0; i < len; i += 3) {
        v = src[i] << 16;
        v |= i + 1 < len ? src[i + 1] << 8 : 0;
        v |= i + 2 < len ? src[i + 2] : 0;
        dst[n++] = t[(v >> 18) & 63];
        dst[n++] = t[(v >> 12) & 63];
        dst[n++] = i + 1 < len ? t[(v >> 6) & 63] : '=';
        dst[n++] = i + 2 < len ? t[v & 63] : '=';
    }

    dst[n] = '\0';
    return n;
}


/* the opening handshake (RFC 6455 section 4.2); returns bytes used */
static size_t
rl_upgrade(rl_conn_t *c, unsigned char *p, size_t len)
{
    int             n;
    char            key[96], acc[64], reply[256], *k, *e;
    unsigned char  *end, sha[SHA_DIGEST_LENGTH];

    end = memmem(p, len, "\r\n\r\n", 4);
    if (end == NULL) {
        if (len > RL_MAX_HTTP) {
            rl_close(c);
            return len;
        }
        return 0;
    }

    *end = '\0';
    k = strcasestr((char *) p, "\r\nSec-WebSocket-Key:");
    if (k == NULL || strncmp((char *) p, "GET ", 4) != 0) {
        n = snprintf(reply, sizeof(reply), "HTTP/1.1 400 Bad Request\r\n"
                     "Content-Length: 0\r\nConnection: close\r\n\r\n");
        (void) rl_queue(c, reply, n);
        c->closing = 1;
        return len;
    }

    for (k += 20; *k == ' '; k++) { /* void */ }
    e = strstr(k, "\r\n");
    n = e ? e - k : (int) strlen(k);
    if (n <= 0 || n > 40) {
        rl_close(c);
        return len;
    }
    memcpy(key, k, n);
    memcpy(key + n, RL_WS_GUID, sizeof(RL_WS_GUID));

    (void) SHA1((unsigned char *) key, n + sizeof(RL_WS_GUID) - 1, sha);
    rl_base64(acc, sha, sizeof(sha));

    n = snprintf(reply, sizeof(reply), "HTTP/1.1 101 Switching Protocols\r\n"
                 "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: %s\r\n"
                 "Sec-WebSocket-Protocol: xmpp\r\n\r\n", acc);
    (void) rl_queue(c, reply, n);
    c->upgraded = 1;
    return end + 4 - p;
}


/*
 * Read until EAGAIN into the shared buffer (after any partial frame
 * this connection kept), handle what is complete, keep the rest.
 * One byte of room stays free for rl_frames' NUL.
 */
static void
rl_read(rl_conn_t *c)
{
    size_t          have, used;
    ssize_t         n;
    unsigned char  *p;

    for ( ;; ) {
        have = c->inlen;
        if (have) {
            memcpy(rl.rbuf, c->in, have);
            free(c->in);
            c->in = NULL;
            c->inlen = 0;
        }

        n = read(c->fd, rl.rbuf + have, RL_RBUF - 1 - have);
        if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR)) {
            rl_close(c);
            return;
        }
        if (n == -1) {
            n = 0;
        }
        have += n;

        used = 0;
        if (!c->upgraded) {
            used = rl_upgrade(c, rl.rbuf, have);
        }
        if (c->upgraded && !c->dead) {
            used += rl_frames(c, rl.rbuf + used, have - used);
        }
        if (c->dead) {
            return;
        }

        if (used < have) {
            if (have - used >= RL_RBUF - 1 - 16) {
                rl_close(c);        /* a frame larger than the buffer */
                return;
            }
            p = malloc(have - used);
            if (p == NULL) {
                rl_close(c);
                return;
            }
            memcpy(p, rl.rbuf + used, have - used);
            c->in = p;
            c->inlen = have - used;
        }

        if (n == 0) {
            return;
        }
    }
}


static void
rl_accept(void)
{
    int                 fd, one;
    rl_conn_t          *c;
    struct epoll_event  ev;

    for ( ;; ) {
        fd = accept4(rl.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1) {
            if (errno == EMFILE || errno == ENFILE) {
                fprintf(stderr, "relay: accept: %s\n", strerror(errno));
            }
            return;
        }

        if (rl.nconns >= rl.max_conns) {
            close(fd);
            continue;
        }

        c = calloc(1, sizeof(rl_conn_t));
        if (c == NULL) {
            close(fd);
            continue;
        }

        one = 1;
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c->fd = fd;
        c->upgraded = rl.raw;
        ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
        ev.data.ptr = c;
        if (epoll_ctl(rl.ep, EPOLL_CTL_ADD, fd, &ev) == -1) {
            close(fd);
            free(c);
            continue;
        }
        rl.nconns++;
    }
}


static void
rl_listen(const char *spec)
{
    int                 one;
    char                host[64];
    const char         *colon;
    struct sockaddr_in  sin;

    colon = strrchr(spec, ':');
    if (colon == NULL || colon - spec >= (long) sizeof(host)) {
        fprintf(stderr, "relay: --listen 127.0.0.1:PORT\n");
        exit(2);
    }
    memcpy(host, spec, colon - spec);
    host[colon - spec] = '\0';

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sin.sin_addr) != 1
        || (ntohl(sin.sin_addr.s_addr) >> 24) != 127)
    {
        fprintf(stderr, "relay: only 127.0.0.0/8 addresses: %s\n", host);
        exit(2);
    }

    rl.lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (rl.lfd == -1) {
        rl_die("socket");
    }
    one = 1;
    (void) setsockopt(rl.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(rl.lfd, (struct sockaddr *) &sin, sizeof(sin)) == -1) {
        rl_die("bind");
    }
    /* nginx's default backlog */
    if (listen(rl.lfd, 511) == -1) {
        rl_die("listen");
    }
}


int
main(int argc, char **argv)
{
    int                 o, i, n, cpu;
    const char         *listen_on;
    rl_conn_t          *c, *next;
    cpu_set_t           set;
    struct rlimit       rlim;
    struct epoll_event  ev, evs[RL_EVENTS];
    static struct option  opts[] = {
        { "listen", 1, NULL, 'l' }, { "cpu", 1, NULL, 'c' },
        { "max-conns", 1, NULL, 'm' }, { "raw", 0, NULL, 'r' },
        { NULL, 0, NULL, 0 }
    };

    listen_on = NULL;
    cpu = -1;
    rl.max_conns = 60000;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'l': listen_on = optarg; break;
        case 'c': cpu = atoi(optarg); break;
        case 'm': rl.max_conns = atoi(optarg); break;
        case 'r': rl.raw = 1; break;
        default:
            fprintf(stderr, "usage: relay --listen 127.0.0.1:PORT"
                    " [--cpu N] [--max-conns N] [--raw]\n");
            return 2;
        }
    }
    if (listen_on == NULL || rl.max_conns < 1) {
        fprintf(stderr, "usage: relay --listen 127.0.0.1:PORT"
                " [--cpu N] [--max-conns N] [--raw]\n");
        return 2;
    }

    if (cpu >= 0) {
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (sched_setaffinity(0, sizeof(set), &set) == -1) {
            rl_die("sched_setaffinity");
        }
    }

    /* as many descriptors as the hard limit allows */
    if (getrlimit(RLIMIT_NOFILE, &rlim) == 0) {
        rlim.rlim_cur = rlim.rlim_max;
        (void) setrlimit(RLIMIT_NOFILE, &rlim);
    }

    rl.nhash = 65537;
    rl.hash = calloc(rl.nhash, sizeof(rl_conn_t *));
    rl.dead = malloc((rl.max_conns + 1) * sizeof(rl_conn_t *));
    if (rl.hash == NULL || rl.dead == NULL) {
        rl_die("malloc");
    }

    rl_listen(listen_on);
    rl.ep = epoll_create1(EPOLL_CLOEXEC);
    if (rl.ep == -1) {
        rl_die("epoll_create1");
    }
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;
    if (epoll_ctl(rl.ep, EPOLL_CTL_ADD, rl.lfd, &ev) == -1) {
        rl_die("epoll_ctl");
    }

    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, rl_on_signal);
    signal(SIGINT, rl_on_signal);
    printf("relay: listening on %s\n", listen_on);
    fflush(stdout);

    while (!rl_stop) {
        n = epoll_wait(rl.ep, evs, RL_EVENTS, 1000);
        if (n == -1 && errno != EINTR) {
            rl_die("epoll_wait");
        }

        for (i = 0; i < n; i++) {
            c = evs[i].data.ptr;
            if (c == NULL) {
                rl_accept();
                continue;
            }
            if (c->dead) {
                continue;
            }
            if (evs[i].events & EPOLLOUT) {
                rl_flush(c);
            }
            if (!c->dead && (evs[i].events & (EPOLLIN | EPOLLRDHUP
                                              | EPOLLHUP | EPOLLERR)))
            {
                rl_read(c);
            }
        }

        for (c = rl.dirty; c; c = next) {
            next = c->next_dirty;
            c->dirty = 0;
            if (!c->dead) {
                rl_flush(c);
            }
        }
        rl.dirty = NULL;

        for (i = 0; i < rl.ndead; i++) {
            free(rl.dead[i]->in);
            free(rl.dead[i]->msg);
            free(rl.dead[i]->out);
            free(rl.dead[i]);
        }
        rl.ndead = 0;
    }

    return 0;
}
