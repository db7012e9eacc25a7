
/*
 * loadgen.h: the load generator's shared types (see loadgen.c).
 *
 * loadgen.c holds the scenarios and the setup; loadgen_report.c the
 * measurement and report; loadgen_xmpp.c holds one client session: TCP
 * (and TLS), the WebSocket client side of RFC 6455 or the XML stream of
 * RFC 6120 over TCP, and the sign-in up to initial presence;
 * loadgen_muc.c the muc-fanout room.
 */

#ifndef LOADGEN_H
#define LOADGEN_H

#define _GNU_SOURCE

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <openssl/ssl.h>


#define LG_NS              1000000000ULL
#define LG_MAX_FRAME       (1024 * 1024)
#define LG_MAX_WBUF        (4 * 1024 * 1024)
#define LG_MAX_PIDS        64
#define LG_MAX_REASONS     32
#define LG_MAX_PROCS       16
#define LG_EVENTS          512

/* log-linear histogram: 128 sub-buckets per power of two, < 1% error */
#define LG_HIST_SUB        128
#define LG_HIST_N          (LG_HIST_SUB * 58)

#define LG_FRAMING  "urn:ietf:params:xml:ns:xmpp-framing"
#define LG_OPEN     "<open xmlns='" LG_FRAMING "' to='%s' version='1.0'/>"
#define LG_CLOSE    "<close xmlns='" LG_FRAMING "'/>"

/* XMPP over TCP (RFC 6120 section 4): one stream element per direction */
#define LG_TCP_OPEN                                                      \
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client'"          \
    " xmlns:stream='http://etherx.jabber.org/streams' to='%s'"           \
    " version='1.0'>"
#define LG_TCP_CLOSE "</stream:stream>"

/* --proto relay: the trivial relay's protocol (see relay.c) */
#define LG_RELAY_LOGIN  "L %s %s"
#define LG_RELAY_QUIT   "Q"


typedef enum {
    LG_FREE = 0,
    LG_CONNECTING,
    LG_TLS,
    LG_UPGRADE,           /* HTTP upgrade sent, waiting for 101 */
    LG_OPEN1,             /* <open/> sent, waiting for SASL features */
    LG_AUTH,
    LG_OPEN2,             /* restarted stream, waiting for bind feature */
    LG_BIND,
    LG_PRESENCE,          /* initial presence sent, waiting for its echo */
    LG_ONLINE,
    LG_CLOSING            /* <close/> sent, waiting for the server's end */
} lg_state_e;


typedef enum {
    LG_PH_WARM = 0,       /* idle: a few sign-ins warm LDAP pools */
    LG_PH_WARM_CLOSE,
    LG_PH_SETTLE0,
    LG_PH_RAMP,
    LG_PH_SETTLE,
    LG_PH_WARMUP,         /* chat: traffic that is not measured */
    LG_PH_MEASURE,
    LG_PH_HOLD,
    LG_PH_DRAIN,
    LG_PH_CLOSE,
    LG_PH_END
} lg_phase_e;


typedef enum {
    LG_SC_IDLE = 0,
    LG_SC_SAT,
    LG_SC_FIXED,
    LG_SC_LOGIN,
    LG_SC_MUC             /* muc-fanout: groupchat to every occupant */
} lg_scenario_e;


/*
 * muc-fanout: the room is created by one session before the others
 * join, because a server may lock a new room until its owner submits
 * the configuration (XEP-0045 10.1.2; ejabberd and Prosody do).
 */
#define LG_ROOM_NONE      0     /* nobody has joined yet */
#define LG_ROOM_CREATING  1     /* the creator's join or form is out */
#define LG_ROOM_READY     2     /* the others may join */


typedef struct {
    uint64_t           n;
    uint64_t           max;
    uint32_t           b[LG_HIST_N];
} lg_hist_t;


typedef struct {
    uint64_t           cpu_ticks;       /* utime + stime, all threads */
    uint64_t           rss_kib;
    uint64_t           pss_kib;
    uint64_t           aux_ticks;       /* --aux-pids (the directory) */
    uint64_t           db_ticks;        /* --db-pids (the audit database) */
    struct rusage      self;
    uint64_t           at;
} lg_sample_t;


typedef struct lg_conn_s  lg_conn_t;

struct lg_conn_s {
    int                fd;
    lg_state_e         state;
    uint32_t           slot;
    uint32_t           user;
    int                pos;             /* index in lg.online, or -1 */
    SSL               *ssl;
    uint64_t           t_start;
    uint64_t           deadline;
    uint32_t           inflight;
    unsigned char     *rbuf;
    size_t             rlen;
    size_t             rcap;
    unsigned char     *wbuf;
    size_t             woff;
    size_t             wlen;
    size_t             wcap;
    unsigned char     *mbuf;            /* a fragmented message */
    size_t             mlen;
    size_t             mcap;
    unsigned           dirty:1;
    unsigned           ws_close_sent:1; /* our close is queued */
    unsigned           in_stream:1;     /* TCP: the server's header came */
    unsigned           joined:1;        /* muc-fanout: own presence came */
    unsigned           join_sent:1;     /* muc-fanout: join presence sent */
    lg_conn_t         *next_dirty;
};


typedef struct {
    char               text[96];
    uint64_t           count;
} lg_reason_t;


typedef struct {
    /* options */
    lg_scenario_e      scenario;
    const char        *scenario_name;
    int                tls;
    int                relay;           /* --proto relay (relay.c) */
    int                tcp;             /* tcp:// or tls://: no upgrade */
    char               host[64];
    int                port;
    char               path[256];
    const char        *domain;
    const char        *target;
    const char        *label;
    const char        *csv;
    FILE              *late;            /* --late-log */
    uint64_t           late_ns;         /* --late-ms */
    const char        *room;            /* muc-fanout: the room's JID */
    int                senders;         /* muc-fanout: sessions that send */
    int                joined;          /* muc-fanout: occupants */
    int                room_state;      /* muc-fanout: LG_ROOM_* */
    lg_conn_t         *creator;         /* muc-fanout: the first joiner */
    uint64_t           t_presence;      /* muc-fanout: last presence came */
    uint64_t           t_joins;         /* muc-fanout: last sign-in done */
    char             **uids;
    char             **pws;
    int                nusers;
    int                sessions;
    int                window;
    double             rate;
    int                concurrency;
    double             duration;
    double             warmup;
    double             hold;
    double             settle;        /* idle: < 0 for 1 s and 2 s */
    int                ramp;
    int                nsrc;
    int                cpu;
    int                payload;
    double             timeout;
    pid_t              spids[LG_MAX_PIDS];
    int                nspids;
    pid_t              apids[LG_MAX_PIDS];
    int                napids;
    pid_t              dpids[LG_MAX_PIDS];
    int                ndpids;
    int                procs;           /* idle: generator processes */

    /* idle with --procs N > 1: the parent and its shards */
    int                shard;           /* 0: the parent */
    int                share;           /* this process's sessions */
    int                ready_fd;        /* shards -> parent: lg_ready_t */
    int                release_fd;      /* parent -> shards: EOF = close */
    pid_t              kids[LG_MAX_PROCS];
    int                kids_ready;
    int                kids_online;
    uint64_t           kids_failed;

    /* state */
    int                ep;
    SSL_CTX           *ssl_ctx;
    char               tls_desc[128];   /* the first handshake's result */
    lg_conn_t         *conns;
    int                nslots;
    int               *freelist;
    int                nfree;
    lg_conn_t         *dirty;
    int               *online;
    int                nonline;
    uint64_t           rng;
    lg_phase_e         phase;
    uint64_t           phase_end;
    uint64_t           t_measure;
    uint64_t           next_send;
    uint64_t           nsched;
    uint64_t           next_user;
    int                rr;
    int                target_online;

    /* counters */
    int                live;            /* slots in use */
    int                signing_in;
    int                online_now;
    uint64_t           started;
    uint64_t           failed;
    uint64_t           logins;
    uint64_t           logins_win;
    uint64_t           sent;
    uint64_t           delivered;
    uint64_t           delivered_win;
    uint64_t           msg_errors;
    uint64_t           inflight;
    uint64_t           lost;
    uint64_t           ramp_t0;
    uint64_t           ramp_t1;
    uint64_t           t_progress;      /* last delivery */
    lg_hist_t          lat;
    lg_hist_t          login_lat;
    lg_reason_t        reasons[LG_MAX_REASONS];
    int                nreasons;
    uint64_t           other_reasons;

    lg_sample_t        s0;              /* measurement start */
    lg_sample_t        s1;              /* measurement end */
    int                sampled;
    int                sampled_online;
} lg_t;



extern lg_t  lg;


static inline uint64_t
lg_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * LG_NS + ts.tv_nsec;
}


static inline uint64_t
lg_rand(void)
{
    /* xorshift64*: masks and peer choice need speed, not secrecy */
    lg.rng ^= lg.rng >> 12;
    lg.rng ^= lg.rng << 25;
    lg.rng ^= lg.rng >> 27;
    return lg.rng * 0x2545F4914F6CDD1DULL;
}


/* loadgen.c */
void lg_die(const char *fmt, ...)
    __attribute__((noreturn, format(printf, 1, 2)));
void lg_reason(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void lg_signed_in(lg_conn_t *c);
void lg_chat_receive(lg_conn_t *c, const unsigned char *m, size_t len);

/* loadgen_report.c */
void lg_hist_add(lg_hist_t *h, uint64_t v);
void lg_sample(lg_sample_t *s, int mem);
int lg_report(int interrupted);
int lg_shard_exit(void);

/* loadgen_muc.c */
void lg_muc_online(lg_conn_t *c);
void lg_muc_presence(lg_conn_t *c, const unsigned char *m, size_t len);
void lg_muc_iq(lg_conn_t *c, const unsigned char *m, size_t len);

/* loadgen_xmpp.c */
int lg_reserve(unsigned char **buf, size_t *cap, size_t need);
void lg_conn_start(void);
void lg_online_add(lg_conn_t *c);
void lg_conn_end(lg_conn_t *c, int ok);
void lg_fail(lg_conn_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int lg_send(lg_conn_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void lg_close_stream(lg_conn_t *c);
void lg_event(lg_conn_t *c, uint32_t events);
void lg_flush_dirty(void);
void lg_timeouts(uint64_t now);
size_t lg_xml_attr(const unsigned char *m, size_t len, const char *name,
    const unsigned char **val);
size_t lg_xml_text(const unsigned char *m, size_t len, const char *open,
    const char *close, const unsigned char **text);
void lg_xml_condition(const unsigned char *m, size_t len, char *out,
    size_t n);


#endif /* LOADGEN_H */
