
/*
 * Operations endpoints: conclave_metrics (Prometheus text exposition
 * format 0.0.4) and conclave_health (200 or 503 with a reason, for load
 * balancers).
 *
 * The counters live in a small shared-memory zone so that any worker
 * can answer a scrape for all of them.  Every update is one relaxed
 * atomic add on a fixed field: no lock and no allocation on the stanza
 * path.  Gauges that belong to one worker (its bound sessions) sit in
 * that worker's slot, so a crashed worker's sessions drop out of the sum
 * instead of staying counted forever.  The audit figures are read from
 * the audit zone (ngx_xmpp_audit_json), the ones conclave_status shows.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <jansson.h>

#include "ngx_xmpp.h"
#include "ngx_xmpp_http.h"


#define NGX_XMPP_METRICS_SLOTS     128
#define NGX_XMPP_METRICS_ZONE      (64 * 1024)

#define NGX_XMPP_TR_WEBSOCKET      0
#define NGX_XMPP_TR_BOSH           1
#define NGX_XMPP_TR_TCP            2
#define NGX_XMPP_TR_N              3

#define NGX_XMPP_LDAP_BUCKETS      10


/* a line of its own: the parser count changes with every stanza */
typedef struct {
    ngx_pid_t              pid;
    int64_t                sessions[NGX_XMPP_TR_N];
    uint64_t               realtime;        /* the event loop is SCHED_RR */
    uint64_t               rt_demotions;    /* busy: back to SCHED_OTHER */
    uint64_t               parsers;         /* kept for reuse */
} __attribute__((aligned(64))) ngx_xmpp_metrics_slot_t;


typedef struct {
    uint64_t               messages;
    uint64_t               signins_ok;
    uint64_t               signins_failed;
    uint64_t               signins_throttled;  /* address locked out */
    uint64_t               ldap[3];        /* by cdir_status_e */
    uint64_t               ldap_bucket[NGX_XMPP_LDAP_BUCKETS + 1];
    uint64_t               ldap_sum_ms;
    uint64_t               ldap_down;      /* last answer: unavailable */
    ngx_xmpp_metrics_slot_t  slot[NGX_XMPP_METRICS_SLOTS];
    uint64_t               console_forged; /* forged console cookies */
    uint64_t               rate_ms;        /* the messages/s sample */
    uint64_t               rate_count;
    uint64_t               rate_x1000;     /* messages per 1000 s */
    uint64_t               tls_path[2];    /* TLS: OpenSSL, record layer */
    uint64_t               ipc_full;       /* a worker's queue was full */
    uint64_t               ipc_dropped;    /* the sender's FIFO was too */
    uint64_t               muc_refused[2]; /* a room's rate, its queue */
} ngx_xmpp_metrics_shm_t;


#define NGX_XMPP_METRICS_RATE_MS   10000


static ngx_int_t ngx_xmpp_metrics_init_zone(ngx_shm_zone_t *zone,
    void *data);
static u_char *ngx_xmpp_metrics_workers_text(u_char *p, u_char *end);
static ngx_int_t ngx_xmpp_metrics_send(ngx_http_request_t *r,
    ngx_uint_t status, const char *type, u_char *data, size_t len);


static ngx_xmpp_metrics_shm_t   *ngx_xmpp_metrics;
static ngx_xmpp_metrics_slot_t  *ngx_xmpp_metrics_slot;

/* upper bounds of the LDAP latency histogram, milliseconds */
static ngx_msec_t  ngx_xmpp_ldap_le[NGX_XMPP_LDAP_BUCKETS] = {
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000
};

static const char  *ngx_xmpp_tr_names[NGX_XMPP_TR_N] = {
    "websocket", "bosh", "tcp"
};

static const char  *ngx_xmpp_ldap_results[3] = {
    "ok", "denied", "unavailable"
};


/* at configuration: the zone survives reloads (same name and size) */
ngx_int_t
ngx_xmpp_metrics_add_zone(ngx_conf_t *cf, ngx_xmpp_conf_t *xcf)
{
    ngx_str_t        name = ngx_string("conclave_metrics");
    ngx_shm_zone_t  *zone;

    zone = ngx_shared_memory_add(cf, &name, NGX_XMPP_METRICS_ZONE,
                                 &ngx_http_conclave_module);
    if (zone == NULL) {
        return NGX_ERROR;
    }

    zone->init = ngx_xmpp_metrics_init_zone;
    xcf->metrics_zone = zone;

    return NGX_OK;
}


static ngx_int_t
ngx_xmpp_metrics_init_zone(ngx_shm_zone_t *zone, void *data)
{
    ngx_slab_pool_t  *shpool;

    if (data) {
        zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (zone->shm.exists) {
        zone->data = shpool->data;
        return NGX_OK;
    }

    zone->data = ngx_slab_calloc(shpool, sizeof(ngx_xmpp_metrics_shm_t));
    if (zone->data == NULL) {
        return NGX_ERROR;
    }

    shpool->data = zone->data;

    return NGX_OK;
}


/*
 * A worker takes a free slot, or one whose pid is gone (a crashed
 * worker never released it); with every slot live it counts its
 * sessions nowhere, which only the sessions gauge notices.
 */
void
ngx_xmpp_metrics_init_worker(ngx_xmpp_conf_t *xcf)
{
    ngx_pid_t                 pid;
    ngx_uint_t                i;
    ngx_xmpp_metrics_slot_t  *sl;

    if (xcf->metrics_zone == NULL) {
        return;
    }

    ngx_xmpp_metrics = xcf->metrics_zone->data;

    for (i = 0; i < NGX_XMPP_METRICS_SLOTS; i++) {
        sl = &ngx_xmpp_metrics->slot[i];
        pid = __atomic_load_n(&sl->pid, __ATOMIC_ACQUIRE);

        if (pid != 0 && (kill(pid, 0) == 0 || ngx_errno != NGX_ESRCH)) {
            continue;
        }

        if (__atomic_compare_exchange_n(&sl->pid, &pid, ngx_pid, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        {
            ngx_memzero(sl->sessions, sizeof(sl->sessions));
            __atomic_store_n(&sl->realtime, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&sl->rt_demotions, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&sl->parsers, 0, __ATOMIC_RELAXED);
            ngx_xmpp_metrics_slot = sl;
            return;
        }
    }
}


void
ngx_xmpp_metrics_exit_worker(void)
{
    if (ngx_xmpp_metrics_slot) {
        __atomic_store_n(&ngx_xmpp_metrics_slot->pid, 0, __ATOMIC_RELEASE);
        ngx_xmpp_metrics_slot = NULL;
    }

    ngx_xmpp_metrics = NULL;
}


/* the parser cache changed (ngx_xmpp_parser.c) */
void
ngx_xmpp_metrics_parsers(ngx_uint_t cached)
{
    if (ngx_xmpp_metrics_slot) {
        __atomic_store_n(&ngx_xmpp_metrics_slot->parsers, (uint64_t) cached,
                         __ATOMIC_RELAXED);
    }
}


/* conclave_realtime_priority: the event loop's policy changed */
void
ngx_xmpp_metrics_realtime(ngx_uint_t on, ngx_uint_t demoted)
{
    if (ngx_xmpp_metrics_slot == NULL) {
        return;
    }

    __atomic_store_n(&ngx_xmpp_metrics_slot->realtime, (uint64_t) on,
                     __ATOMIC_RELAXED);

    if (demoted) {
        __atomic_add_fetch(&ngx_xmpp_metrics_slot->rt_demotions, 1,
                           __ATOMIC_RELAXED);
    }
}


/* a session was bound (+1) or a bound one ended (-1) */
void
ngx_xmpp_metrics_session(ngx_xmpp_session_t *s, ngx_int_t delta)
{
    ngx_uint_t  t;

    if (ngx_xmpp_metrics_slot == NULL) {
        return;
    }

    for (t = 0; t < NGX_XMPP_TR_N; t++) {
        if (ngx_strcmp(s->transport->name.data, ngx_xmpp_tr_names[t]) == 0) {
            __atomic_add_fetch(&ngx_xmpp_metrics_slot->sessions[t], delta,
                               __ATOMIC_RELAXED);
            return;
        }
    }
}


/* a message stanza from a client, accepted for routing */
void
ngx_xmpp_metrics_message(void)
{
    if (ngx_xmpp_metrics) {
        __atomic_add_fetch(&ngx_xmpp_metrics->messages, 1, __ATOMIC_RELAXED);
    }
}


/* a sign-in attempt that got an answer (SASL success or failure) */
void
ngx_xmpp_metrics_signin(ngx_uint_t ok)
{
    if (ngx_xmpp_metrics) {
        __atomic_add_fetch(ok ? &ngx_xmpp_metrics->signins_ok
                              : &ngx_xmpp_metrics->signins_failed,
                           1, __ATOMIC_RELAXED);
    }
}


void
ngx_xmpp_metrics_signin_throttled(void)
{
    if (ngx_xmpp_metrics) {
        __atomic_add_fetch(&ngx_xmpp_metrics->signins_throttled, 1,
                           __ATOMIC_RELAXED);
    }
}


/*
 * The inter-worker channel (ngx_xmpp_ipc.c): a datagram found the
 * receiving worker's queue full and waits in the sender's FIFO
 * (dropped 0), or that FIFO was full too and a record was refused.
 */
void
ngx_xmpp_metrics_ipc(ngx_uint_t dropped)
{
    if (ngx_xmpp_metrics) {
        __atomic_add_fetch(dropped ? &ngx_xmpp_metrics->ipc_dropped
                                   : &ngx_xmpp_metrics->ipc_full,
                           1, __ATOMIC_RELAXED);
    }
}


/*
 * A room message refused under the room's flood limits
 * (ngx_xmpp_mucroom.c): its token bucket (queue 0) or its jobs waiting
 * for their audit records (queue 1).
 */
void
ngx_xmpp_metrics_muc_refused(ngx_uint_t queue)
{
    if (ngx_xmpp_metrics) {
        __atomic_add_fetch(&ngx_xmpp_metrics->muc_refused[queue ? 1 : 0],
                           1, __ATOMIC_RELAXED);
    }
}


/* a forged or malformed console session cookie (ngx_xmpp_admin_auth.c) */
void
ngx_xmpp_metrics_console_forged(void)
{
    if (ngx_xmpp_metrics) {
        __atomic_add_fetch(&ngx_xmpp_metrics->console_forged, 1,
                           __ATOMIC_RELAXED);
    }
}


/* where a TCP connection's TLS went after its handshake (ngx_xmpp_tls.c) */
void
ngx_xmpp_metrics_tls(ngx_uint_t record_layer)
{
    if (ngx_xmpp_metrics) {
        __atomic_add_fetch(&ngx_xmpp_metrics->tls_path[record_layer ? 1 : 0],
                           1, __ATOMIC_RELAXED);
    }
}


uint64_t
ngx_xmpp_metrics_console_forged_total(void)
{
    return ngx_xmpp_metrics
           ? __atomic_load_n(&ngx_xmpp_metrics->console_forged,
                             __ATOMIC_RELAXED)
           : 0;
}


/*
 * Every worker's housekeeping tick: whoever first finds the sample at
 * least NGX_XMPP_METRICS_RATE_MS old turns it into the message rate.
 * CLOCK_MONOTONIC (ngx_current_msec) is the same in every process.  A
 * lost race between workers costs one sample, never a wrong rate.
 */
void
ngx_xmpp_metrics_sample(void)
{
    uint64_t                 now, t0, n, n0;
    ngx_xmpp_metrics_shm_t  *m = ngx_xmpp_metrics;

    if (m == NULL) {
        return;
    }

    now = (uint64_t) ngx_current_msec;
    t0 = __atomic_load_n(&m->rate_ms, __ATOMIC_ACQUIRE);

    if (t0 && now - t0 < NGX_XMPP_METRICS_RATE_MS) {
        return;
    }

    if (!__atomic_compare_exchange_n(&m->rate_ms, &t0, now, 0,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
    {
        return;
    }

    n = __atomic_load_n(&m->messages, __ATOMIC_RELAXED);
    n0 = __atomic_exchange_n(&m->rate_count, n, __ATOMIC_RELAXED);

    if (t0 && now > t0 && n >= n0) {
        __atomic_store_n(&m->rate_x1000, (n - n0) * 1000 * 1000 / (now - t0),
                         __ATOMIC_RELAXED);
    }
}


/* a directory answer and how long the worker waited for it */
void
ngx_xmpp_metrics_ldap(cdir_status_e status, ngx_msec_t ms)
{
    ngx_uint_t  b;

    if (ngx_xmpp_metrics == NULL || (ngx_uint_t) status > CDIR_UNAVAILABLE) {
        return;
    }

    for (b = 0; b < NGX_XMPP_LDAP_BUCKETS; b++) {
        if (ms <= ngx_xmpp_ldap_le[b]) {
            break;
        }
    }

    __atomic_add_fetch(&ngx_xmpp_metrics->ldap[status], 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&ngx_xmpp_metrics->ldap_bucket[b], 1,
                       __ATOMIC_RELAXED);
    __atomic_add_fetch(&ngx_xmpp_metrics->ldap_sum_ms, ms, __ATOMIC_RELAXED);
    __atomic_store_n(&ngx_xmpp_metrics->ldap_down,
                     status == CDIR_UNAVAILABLE, __ATOMIC_RELAXED);
}


static u_char *
ngx_xmpp_metrics_header(u_char *p, u_char *end, const char *name,
    const char *type, const char *help)
{
    return ngx_slprintf(p, end, "# HELP %s %s\n# TYPE %s %s\n",
                        name, help, name, type);
}


static ngx_inline uint64_t
ngx_xmpp_metrics_get(uint64_t *v)
{
    return __atomic_load_n(v, __ATOMIC_RELAXED);
}


/* the console's status: messages, their rate, the directory's health */
json_t *
ngx_xmpp_metrics_status_json(void)
{
    uint64_t                 x;
    ngx_xmpp_metrics_shm_t  *m = ngx_xmpp_metrics;

    if (m == NULL) {
        return json_null();
    }

    x = ngx_xmpp_metrics_get(&m->rate_x1000);

    return json_pack("{sIsfs{sbsIsIsI}sI}",
                     "messages_total",
                     (json_int_t) ngx_xmpp_metrics_get(&m->messages),
                     "messages_per_second", (double) x / 1000.0,
                     "ldap",
                     "up", !ngx_xmpp_metrics_get(&m->ldap_down),
                     "ok", (json_int_t) ngx_xmpp_metrics_get(&m->ldap[0]),
                     "denied", (json_int_t) ngx_xmpp_metrics_get(&m->ldap[1]),
                     "unavailable",
                     (json_int_t) ngx_xmpp_metrics_get(&m->ldap[2]),
                     "console_forged_cookies",
                     (json_int_t) ngx_xmpp_metrics_get(&m->console_forged));
}


/* a slot's worker, or 0 when the slot is free or its worker is gone */
static ngx_pid_t
ngx_xmpp_metrics_live(ngx_xmpp_metrics_slot_t *sl)
{
    ngx_pid_t  pid;

    pid = __atomic_load_n(&sl->pid, __ATOMIC_ACQUIRE);

    if (pid == 0 || (kill(pid, 0) == -1 && ngx_errno == NGX_ESRCH)) {
        return 0;
    }

    return pid;
}


/* sessions by transport, and each live worker's resident memory */
static u_char *
ngx_xmpp_metrics_workers(u_char *p, u_char *end)
{
    int                       fd;
    ssize_t                   n;
    u_char                    path[64], statm[128];
    int64_t                   sessions[NGX_XMPP_TR_N];
    ngx_pid_t                 pid;
    u_char                   *q;
    uint64_t                  rss;
    ngx_uint_t                i, t, workers;
    ngx_xmpp_metrics_slot_t  *sl;

    ngx_memzero(sessions, sizeof(sessions));
    workers = 0;

    p = ngx_xmpp_metrics_header(p, end, "conclave_worker_resident_bytes",
                                "gauge", "Resident memory of each nginx "
                                "worker running Conclave.");

    for (i = 0; i < NGX_XMPP_METRICS_SLOTS; i++) {
        sl = &ngx_xmpp_metrics->slot[i];
        pid = ngx_xmpp_metrics_live(sl);

        if (pid == 0) {
            continue;
        }

        workers++;

        for (t = 0; t < NGX_XMPP_TR_N; t++) {
            sessions[t] += __atomic_load_n(&sl->sessions[t],
                                           __ATOMIC_RELAXED);
        }

        /* procfs: answered from kernel memory, never from a disk */
        ngx_sprintf(path, "/proc/%P/statm%Z", pid);
        fd = open((char *) path, O_RDONLY);
        if (fd == -1) {
            continue;
        }

        n = read(fd, statm, sizeof(statm) - 1);
        close(fd);

        if (n <= 0) {
            continue;
        }

        /* "size resident shared ...", in pages: the second number */
        statm[n] = '\0';
        q = (u_char *) ngx_strchr(statm, ' ');
        rss = 0;

        for (q = q ? q + 1 : statm + n; *q >= '0' && *q <= '9'; q++) {
            rss = rss * 10 + (*q - '0');
        }

        p = ngx_slprintf(p, end,
                         "conclave_worker_resident_bytes{pid=\"%P\"} %uL\n",
                         pid, rss * ngx_pagesize);
    }

    p = ngx_xmpp_metrics_header(p, end, "conclave_workers", "gauge",
                                "nginx workers running Conclave.");
    p = ngx_slprintf(p, end, "conclave_workers %ui\n", workers);

    p = ngx_xmpp_metrics_header(p, end, "conclave_sessions", "gauge",
                                "Bound XMPP sessions, by transport.");

    for (t = 0; t < NGX_XMPP_TR_N; t++) {
        p = ngx_slprintf(p, end, "conclave_sessions{transport=\"%s\"} %L\n",
                         ngx_xmpp_tr_names[t],
                         sessions[t] > 0 ? sessions[t] : 0);
    }

    return p;
}


/* per live worker: its event loop's policy, its parser cache */
static u_char *
ngx_xmpp_metrics_workers_text(u_char *p, u_char *end)
{
    ngx_pid_t                 pid;
    ngx_uint_t                i, k;
    ngx_xmpp_metrics_slot_t  *sl;

    static const struct {
        const char  *name;
        const char  *type;
        const char  *help;
        size_t       offset;
    } series[] = {
        { "conclave_worker_realtime", "gauge",
          "1 while a worker's event loop runs in SCHED_RR.",
          offsetof(ngx_xmpp_metrics_slot_t, realtime) },
        { "conclave_worker_realtime_demotions_total", "counter",
          "Times a worker's event loop left SCHED_RR because it was busy.",
          offsetof(ngx_xmpp_metrics_slot_t, rt_demotions) },
        { "conclave_worker_parsers_cached", "gauge",
          "XML parsers (16 KiB each) a worker keeps for reuse; those "
          "unused for a second are freed.",
          offsetof(ngx_xmpp_metrics_slot_t, parsers) }
    };

    for (k = 0; k < sizeof(series) / sizeof(series[0]); k++) {
        p = ngx_xmpp_metrics_header(p, end, series[k].name, series[k].type,
                                    series[k].help);

        for (i = 0; i < NGX_XMPP_METRICS_SLOTS; i++) {
            sl = &ngx_xmpp_metrics->slot[i];
            pid = ngx_xmpp_metrics_live(sl);

            if (pid == 0) {
                continue;
            }

            p = ngx_slprintf(p, end, "%s{pid=\"%P\"} %uL\n",
                             series[k].name, pid,
                             __atomic_load_n((uint64_t *) ((u_char *) sl
                                                 + series[k].offset),
                                             __ATOMIC_RELAXED));
        }
    }

    return p;
}


static u_char *
ngx_xmpp_metrics_counters(u_char *p, u_char *end)
{
    uint64_t                 cum;
    ngx_uint_t               b;
    ngx_xmpp_metrics_shm_t  *m = ngx_xmpp_metrics;

    p = ngx_xmpp_metrics_header(p, end, "conclave_messages_total", "counter",
                                "Message stanzas accepted from clients.");
    p = ngx_slprintf(p, end, "conclave_messages_total %uL\n",
                     ngx_xmpp_metrics_get(&m->messages));

    p = ngx_xmpp_metrics_header(p, end, "conclave_signins_total", "counter",
                                "Sign-in attempts, by result.");
    p = ngx_slprintf(p, end, "conclave_signins_total{result=\"success\"} "
                     "%uL\nconclave_signins_total{result=\"failure\"} %uL\n"
                     "conclave_signins_total{result=\"throttled\"} %uL\n",
                     ngx_xmpp_metrics_get(&m->signins_ok),
                     ngx_xmpp_metrics_get(&m->signins_failed),
                     ngx_xmpp_metrics_get(&m->signins_throttled));

    p = ngx_xmpp_metrics_header(p, end, "conclave_console_forged_cookies_total",
                                "counter", "Forged or malformed console "
                                "session cookies refused.");
    p = ngx_slprintf(p, end, "conclave_console_forged_cookies_total %uL\n",
                     ngx_xmpp_metrics_get(&m->console_forged));

    p = ngx_xmpp_metrics_header(p, end, "conclave_tls_connections_total",
                                "counter", "TCP connections after their TLS "
                                "handshake, by the layer that carries them.");
    p = ngx_slprintf(p, end, "conclave_tls_connections_total{layer=\"openssl\"}"
                     " %uL\nconclave_tls_connections_total"
                     "{layer=\"record_layer\"} %uL\n",
                     ngx_xmpp_metrics_get(&m->tls_path[0]),
                     ngx_xmpp_metrics_get(&m->tls_path[1]));

    p = ngx_xmpp_metrics_header(p, end, "conclave_ipc_full_total",
                                "counter", "Inter-worker sends that found "
                                "the receiving worker's queue full and "
                                "waited (retries included).");
    p = ngx_slprintf(p, end, "conclave_ipc_full_total %uL\n",
                     ngx_xmpp_metrics_get(&m->ipc_full));

    p = ngx_xmpp_metrics_header(p, end, "conclave_ipc_dropped_total",
                                "counter", "Inter-worker records refused: "
                                "the sender's queue (16 MiB) was full.");
    p = ngx_slprintf(p, end, "conclave_ipc_dropped_total %uL\n",
                     ngx_xmpp_metrics_get(&m->ipc_dropped));

    p = ngx_xmpp_metrics_header(p, end, "conclave_muc_refused_total",
                                "counter", "Room messages refused with "
                                "resource-constraint, by the flood limit "
                                "met.");
    p = ngx_slprintf(p, end, "conclave_muc_refused_total{limit=\"rate\"} "
                     "%uL\nconclave_muc_refused_total{limit=\"queue\"} "
                     "%uL\n",
                     ngx_xmpp_metrics_get(&m->muc_refused[0]),
                     ngx_xmpp_metrics_get(&m->muc_refused[1]));

    p = ngx_xmpp_metrics_header(p, end, "conclave_ldap_requests_total",
                                "counter", "Directory sign-in checks, by "
                                "result (unavailable: error or timeout).");

    for (b = 0; b < 3; b++) {
        p = ngx_slprintf(p, end,
                         "conclave_ldap_requests_total{result=\"%s\"} %uL\n",
                         ngx_xmpp_ldap_results[b],
                         ngx_xmpp_metrics_get(&m->ldap[b]));
    }

    p = ngx_xmpp_metrics_header(p, end, "conclave_ldap_up", "gauge",
                                "0 when the directory's last answer was "
                                "an error or a timeout.");
    p = ngx_slprintf(p, end, "conclave_ldap_up %d\n",
                     ngx_xmpp_metrics_get(&m->ldap_down) ? 0 : 1);

    p = ngx_xmpp_metrics_header(p, end, "conclave_ldap_latency_seconds",
                                "histogram", "Time from posting a sign-in "
                                "check to the directory's answer.");
    cum = 0;

    for (b = 0; b < NGX_XMPP_LDAP_BUCKETS; b++) {
        cum += ngx_xmpp_metrics_get(&m->ldap_bucket[b]);
        p = ngx_slprintf(p, end, "conclave_ldap_latency_seconds_bucket"
                         "{le=\"%ui.%03ui\"} %uL\n",
                         ngx_xmpp_ldap_le[b] / 1000,
                         ngx_xmpp_ldap_le[b] % 1000, cum);
    }

    cum += ngx_xmpp_metrics_get(&m->ldap_bucket[NGX_XMPP_LDAP_BUCKETS]);
    b = ngx_xmpp_metrics_get(&m->ldap_sum_ms);

    return ngx_slprintf(p, end, "conclave_ldap_latency_seconds_bucket"
                        "{le=\"+Inf\"} %uL\n"
                        "conclave_ldap_latency_seconds_sum %ui.%03ui\n"
                        "conclave_ldap_latency_seconds_count %uL\n",
                        cum, b / 1000, b % 1000, cum);
}


/* the audit figures of conclave_status, summed over the journals */
static u_char *
ngx_xmpp_metrics_audit(u_char *p, u_char *end, ngx_xmpp_conf_t *xcf)
{
    double       lag, v;
    json_t      *list, *item;
    size_t       i;
    uint64_t     sum[7];
    ngx_uint_t   k, db_up;

    static const char  *keys[7] = {
        "backlog_records", "backlog_bytes", "records_shipped",
        "batches_failed", "messages_refused", "checkpoints",
        "ship_buffer_bytes"
    };
    static const char  *names[7][3] = {
        { "conclave_audit_backlog_records", "gauge",
          "Audit records not yet in MariaDB." },
        { "conclave_audit_backlog_bytes", "gauge",
          "Journal bytes not yet in MariaDB." },
        { "conclave_audit_records_shipped_total", "counter",
          "Audit records shipped to MariaDB by the live workers." },
        { "conclave_audit_batches_failed_total", "counter",
          "Shipping batches MariaDB refused or that timed out." },
        { "conclave_audit_messages_refused_total", "counter",
          "Messages refused because their record could not be written." },
        { "conclave_audit_checkpoints_total", "counter",
          "Signed checkpoints written by the live workers." },
        { "conclave_audit_ship_buffer_bytes", "gauge",
          "Memory the shippers' batches hold (64 rows at rest)." }
    };

    list = ngx_xmpp_audit_json(xcf);
    if (list == NULL) {
        return p;
    }

    ngx_memzero(sum, sizeof(sum));
    lag = 0;
    db_up = 1;

    json_array_foreach(list, i, item) {
        for (k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
            sum[k] += json_integer_value(json_object_get(item, keys[k]));
        }

        v = json_number_value(json_object_get(item, "lag_seconds"));
        lag = v > lag ? v : lag;

        if (!json_is_true(json_object_get(item, "mariadb_ok"))) {
            db_up = 0;
        }
    }

    p = ngx_xmpp_metrics_header(p, end, "conclave_audit_journals", "gauge",
                                "Audit journals written by live workers.");
    p = ngx_slprintf(p, end, "conclave_audit_journals %uz\n",
                     json_array_size(list));

    json_decref(list);

    for (k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        p = ngx_xmpp_metrics_header(p, end, names[k][0], names[k][1],
                                    names[k][2]);
        p = ngx_slprintf(p, end, "%s %uL\n", names[k][0], sum[k]);
    }

    p = ngx_xmpp_metrics_header(p, end, "conclave_audit_lag_seconds",
                                "gauge", "Age of the oldest audit record "
                                "not yet in MariaDB.");
    p = ngx_slprintf(p, end, "conclave_audit_lag_seconds %.3f\n", lag);

    p = ngx_xmpp_metrics_header(p, end, "conclave_audit_mariadb_up", "gauge",
                                "0 when a shipper cannot reach MariaDB.");

    return ngx_slprintf(p, end, "conclave_audit_mariadb_up %ui\n", db_up);
}


/* GET /metrics: the Prometheus text exposition format, version 0.0.4 */
ngx_int_t
ngx_xmpp_metrics_handler(ngx_http_request_t *r, ngx_xmpp_conf_t *xcf)
{
    size_t     size;
    u_char    *buf, *p, *end;
    ngx_int_t  rc;

    if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_xmpp_metrics == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    /*
     * fixed lines, plus at most eight lines of 80 bytes per worker; a
     * full buffer only truncates
     */
    size = 8192 + NGX_XMPP_METRICS_SLOTS * 8 * 80;

    buf = ngx_pnalloc(r->pool, size);
    if (buf == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    end = buf + size;

    p = ngx_xmpp_metrics_workers(buf, end);
    p = ngx_xmpp_metrics_workers_text(p, end);
    p = ngx_xmpp_metrics_counters(p, end);
    p = ngx_xmpp_metrics_audit(p, end, xcf);

    return ngx_xmpp_metrics_send(r, NGX_HTTP_OK,
                                 "text/plain; version=0.0.4; charset=utf-8",
                                 buf, p - buf);
}


/*
 * GET /health for load balancers: 503 and the reason when this node
 * cannot serve sign-ins or record messages; 200 otherwise.  MariaDB
 * being down is not a reason: chat goes on and the journal keeps the
 * records (DESIGN.md), so it is only reported.
 */
ngx_int_t
ngx_xmpp_metrics_health_handler(ngx_http_request_t *r, ngx_xmpp_conf_t *xcf)
{
    u_char      *buf, *p;
    json_t      *list, *item;
    size_t       i;
    ngx_int_t    rc;
    ngx_uint_t   status, db_down;
    const char  *reason;

    if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    reason = NULL;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        reason = "shutting down";

    } else if (xcf->audit_zone && !ngx_xmpp_audit_writable()) {
        reason = "audit journal unavailable";

    } else if (ngx_xmpp_metrics
               && ngx_xmpp_metrics_get(&ngx_xmpp_metrics->ldap_down))
    {
        reason = "directory unavailable";
    }

    db_down = 0;
    list = ngx_xmpp_audit_json(xcf);

    /* a shipper that has not connected yet (just started, nothing to
     * ship) is no outage: only records waiting on MariaDB are news */
    json_array_foreach(list, i, item) {
        if (!json_is_true(json_object_get(item, "mariadb_ok"))
            && json_integer_value(json_object_get(item, "backlog_records")))
        {
            db_down = 1;
        }
    }

    json_decref(list);

    buf = ngx_pnalloc(r->pool, 128);
    if (buf == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    status = reason ? NGX_HTTP_SERVICE_UNAVAILABLE : NGX_HTTP_OK;

    p = ngx_slprintf(buf, buf + 128, "%s%s%s\n",
                     reason ? "unavailable: " : "ok",
                     reason ? reason : "",
                     db_down ? (reason ? "; mariadb unreachable"
                                       : " (mariadb unreachable: audit "
                                         "records wait in the journal)")
                             : "");

    return ngx_xmpp_metrics_send(r, status, "text/plain; charset=utf-8",
                                 buf, p - buf);
}


static ngx_int_t
ngx_xmpp_metrics_send(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, u_char *data, size_t len)
{
    ngx_buf_t  *b;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = data;
    b->last = data + len;
    b->memory = 1;
    b->last_buf = 1;

    /* a load balancer or a scraper must never see a cached answer */
    if (ngx_xmpp_http_header(r, "Cache-Control", "no-store") != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.content_type.data = (u_char *) type;
    r->headers_out.content_type.len = ngx_strlen(type);
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.status = status;
    r->headers_out.content_length_n = len;

    return ngx_xmpp_http_send(r, b);
}
