
/*
 * loadgen: the load generator of Conclave's benchmark suite (issue 4).
 *
 * One process, one epoll loop, non-blocking sockets, optionally pinned
 * to a CPU.  It speaks XMPP over WebSocket (RFC 7395 on RFC 6455) on
 * ws:// or wss://, and XMPP over TCP (RFC 6120) on tcp:// or, with
 * direct TLS (XEP-0368), tls:// (no certificate check: the demo
 * certificate is self-signed), signs sessions in with SASL PLAIN,
 * binds a resource, sends initial presence, and then runs one
 * scenario:
 *
 *   idle             K sessions online, held for H seconds: server
 *                    memory per session
 *   chat-saturation  closed loop, W messages in flight per sender to
 *                    random online peers: delivered msgs/s, CPU/msg
 *   chat-fixed-rate  open loop at R msgs/s: p50/p99/max latency
 *   login            connect, sign in, bind, presence, close with C in
 *                    flight: logins/s
 *   muc-fanout       every session joins one room (XEP-0045); the
 *                    first S send groupchat messages, W in flight each,
 *                    the next one when their own copy comes back:
 *                    deliveries/s (every occupant's copy counts)
 *
 * Every message body carries the sender's and recipient's slots and a
 * CLOCK_MONOTONIC timestamp, so latency is end to end, client queueing
 * included.  In
 * the open loop the timestamp is the scheduled send time, so a stall
 * of the generator or the server is charged, not hidden (coordinated
 * omission).  Server figures come from /proc of the PIDs given with
 * --server-pids, sampled exactly at the phase boundaries.
 *
 * Each scenario prints one row and appends one CSV line.  Any failed
 * session, error stanza or lost message is printed with its reason and
 * makes the exit status 1: a benchmark with failures must say so.
 *
 * This file holds the scenarios, the options and the setup;
 * loadgen_report.c the measurements and the report; loadgen_xmpp.c a
 * client session (socket, TLS, WebSocket, sign-in); loadgen_muc.c the
 * muc-fanout room; loadgen.h the types they share.
 */

#include "loadgen.h"

#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
#include <stdarg.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/wait.h>


lg_t  lg;

static volatile sig_atomic_t  lg_interrupted;


void
lg_die(const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}


/*
 * Errors are grouped by reason text, which therefore names a class
 * ("auth: not-authorized"), never a per-session detail.
 */
void
lg_reason(const char *fmt, ...)
{
    int      i;
    char     text[96];
    va_list  ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);

    for (i = 0; i < lg.nreasons; i++) {
        if (strcmp(lg.reasons[i].text, text) == 0) {
            lg.reasons[i].count++;
            return;
        }
    }

    if (lg.nreasons == LG_MAX_REASONS) {
        lg.other_reasons++;
        return;
    }

    memcpy(lg.reasons[lg.nreasons].text, text, sizeof(text));
    lg.reasons[lg.nreasons++].count = 1;
}


/*
 * Messages: "<sender slot> <recipient slot> <timestamp ns> <padding>" in
 * the body, so a stanza delivered to the wrong session is caught too.
 */

static void
lg_chat_send(lg_conn_t *c, uint64_t ts)
{
    int         i;
    lg_conn_t  *to;
    static char  pad[2048];

    if (lg.nonline < 2 || c->pos < 0) {
        return;
    }

    if (pad[0] == '\0') {
        memset(pad, 'x', sizeof(pad) - 1);
    }

    if (lg.scenario == LG_SC_MUC) {
        /* the room names no recipient: every occupant gets a copy */
        if (lg_send(c, "<message xmlns='jabber:client' to='%s'"
                    " type='groupchat'><body>%u %u %llu %.*s</body>"
                    "</message>", lg.room, c->slot, 0xffffffffu,
                    (unsigned long long) ts, lg.payload, pad)
            == 0)
        {
            c->inflight++;
            lg.inflight++;
            lg.sent++;
        }
        return;
    }

    i = lg_rand() % (lg.nonline - 1);
    if (i >= c->pos) {
        i++;
    }
    to = &lg.conns[lg.online[i]];

    /*
     * The relay gets the same stanza behind a routing key, so both
     * carry the same bytes; RFC 7395 section 3.3.3: every stanza names
     * its namespace, nothing is inherited from <open/>.
     */
    if (lg_send(c, "%s%s<message xmlns='jabber:client' to='%s@%s/lg'"
                " type='chat'><body>%u %u %llu %.*s</body></message>",
                lg.relay ? lg.uids[to->user] : "", lg.relay ? "\n" : "",
                lg.uids[to->user], lg.domain, c->slot, to->slot,
                (unsigned long long) ts, lg.payload, pad)
        == 0)
    {
        c->inflight++;
        lg.inflight++;
        lg.sent++;
    }
}


void
lg_chat_receive(lg_conn_t *c, const unsigned char *m, size_t len)
{
    char                  cond[64];
    uint64_t              now, ts;
    unsigned              slot, rcpt;
    unsigned long long    t;
    const unsigned char  *v;
    lg_conn_t            *from;
    size_t                n;
    char                  body[64];

    n = lg_xml_attr(m, len, "type", &v);
    if (n == 5 && memcmp(v, "error", 5) == 0) {
        /* the bounce carries no body: it is one of c's own messages */
        lg_xml_condition(m, len, cond, sizeof(cond));
        lg_reason("message: error %s", cond);
        lg.msg_errors++;
        if (c->inflight) {
            c->inflight--;
            lg.inflight--;
        }
        return;
    }

    n = lg_xml_text(m, len, "<body>", "</body>", &v);
    if (n == 0 && lg.scenario == LG_SC_MUC) {
        return;                 /* the subject sent on joining */
    }

    if (n == 0) {
        lg_reason("message: no body");
        lg.msg_errors++;
        return;
    }

    n = n < sizeof(body) - 1 ? n : sizeof(body) - 1;
    memcpy(body, v, n);
    body[n] = '\0';

    if (sscanf(body, "%u %u %llu", &slot, &rcpt, &t) != 3
        || slot >= (unsigned) lg.nslots)
    {
        lg_reason("message: body not ours");
        lg.msg_errors++;
        return;
    }

    if (rcpt != c->slot && lg.scenario != LG_SC_MUC) {
        lg_reason("message: delivered to the wrong session");
        lg.msg_errors++;
    }

    now = lg_now();
    ts = t;
    lg.delivered++;
    lg.t_progress = now;
    if (lg.phase == LG_PH_MEASURE) {
        lg.delivered_win++;
        lg_hist_add(&lg.lat, now > ts ? now - ts : 0);

        if (lg.late && now > ts + lg.late_ns) {
            /* CLOCK_MONOTONIC, as perf record -k CLOCK_MONOTONIC */
            fprintf(lg.late, "%llu %llu %u %u\n", (unsigned long long) ts,
                    (unsigned long long) now, slot, rcpt);
        }
    }

    from = &lg.conns[slot];
    if (from->state == LG_FREE || from->inflight == 0
        || (lg.scenario == LG_SC_MUC && from != c))
    {
        return;
    }

    from->inflight--;
    lg.inflight--;

    if ((lg.scenario == LG_SC_SAT || lg.scenario == LG_SC_MUC)
        && from->state == LG_ONLINE
        && (lg.phase == LG_PH_WARMUP || lg.phase == LG_PH_MEASURE))
    {
        lg_chat_send(from, now);
    }
}


void
lg_signed_in(lg_conn_t *c)
{
    uint64_t  now;

    now = lg_now();
    lg.signing_in--;
    lg.logins++;
    lg_hist_add(&lg.login_lat, now - c->t_start);

    if (lg.scenario == LG_SC_LOGIN) {
        if (lg.phase == LG_PH_MEASURE) {
            lg.logins_win++;
        }
        c->state = LG_CLOSING;
        lg_close_stream(c);
        return;
    }

    c->state = LG_ONLINE;
    c->deadline = 0;
    lg.online_now++;
    lg_online_add(c);

    if (lg.scenario == LG_SC_MUC) {
        lg_muc_online(c);
    }
}


/*
 * The scenario's phases, driven after every loop turn:
 *
 *   idle:  WARM -> WARM_CLOSE -> SETTLE0 (memory) -> RAMP -> SETTLE
 *          (memory) -> HOLD -> CLOSE
 *   chat:  RAMP -> SETTLE -> WARMUP -> MEASURE -> DRAIN -> CLOSE
 *   login: WARMUP -> MEASURE (C sign-ins in flight) -> CLOSE
 */

static void
lg_phase(lg_phase_e ph, double seconds)
{
    lg.phase = ph;
    lg.phase_end = lg_now() + (uint64_t) (seconds * LG_NS);
}


static void
lg_close_all(void)
{
    int         i;
    lg_conn_t  *c;

    for (i = 0; i < lg.nslots; i++) {
        c = &lg.conns[i];
        if (c->state == LG_ONLINE) {
            lg_close_stream(c);
        } else if (c->state != LG_FREE && c->state != LG_CLOSING) {
            lg_fail(c, "still signing in at the end");
        }
    }
}


static void
lg_open_sessions(int total)
{
    while (lg.signing_in < lg.ramp && (int) lg.started < total
           && lg.nfree > 0)
    {
        lg_conn_start();
    }
}


static void
lg_fixed_rate(uint64_t now)
{
    lg_conn_t  *c;

    while (lg.next_send <= now && lg.nonline >= 2) {
        c = &lg.conns[lg.online[lg.rr++ % lg.nonline]];
        lg_chat_send(c, lg.next_send);
        lg.nsched++;
        lg.next_send = lg.t_measure
                       + (uint64_t) (lg.nsched * (double) LG_NS / lg.rate);
    }
}


/*
 * idle with --procs N: a process cannot hold more descriptors than its
 * hard RLIMIT_NOFILE (20,000 on the benchmark machine, and raising it
 * needs CAP_SYS_RESOURCE), so K = 50,000 needs several processes.  The
 * parent samples the server's memory, then forks N - 1 shards; each
 * opens its share of the sessions for distinct users on its own epoll
 * loop and reports them online through the ready pipe.  The parent
 * samples again once every shard has reported, holds, and closes the
 * release pipe: on its EOF (also when the parent dies) the shards close
 * their sessions and exit, with status 1 if any failed.
 */

typedef struct {
    int32_t            online;
    int32_t            failed;
} lg_ready_t;


static int
lg_share(int i)
{
    return lg.sessions / lg.procs + (i < lg.sessions % lg.procs);
}


static void
lg_fork_shards(void)
{
    int       i, rp[2], lp[2];
    pid_t     pid;
    uint64_t  user;

    if (pipe2(rp, O_CLOEXEC) == -1 || pipe2(lp, O_CLOEXEC) == -1) {
        lg_die("pipe: %s", strerror(errno));
    }

    fflush(stdout);
    user = lg.next_user + lg_share(0);

    for (i = 1; i < lg.procs; i++) {
        pid = fork();
        if (pid == -1) {
            lg_die("fork: %s", strerror(errno));
        }

        if (pid == 0) {
            close(rp[0]);
            close(lp[1]);
            lg.shard = i;
            lg.ready_fd = rp[1];
            lg.release_fd = lp[0];
            (void) fcntl(lg.release_fd, F_SETFL, O_NONBLOCK);

            /* the epoll instance is shared across fork: a new one */
            close(lg.ep);
            lg.ep = epoll_create1(EPOLL_CLOEXEC);
            if (lg.ep == -1) {
                lg_die("epoll_create1: %s", strerror(errno));
            }

            lg.next_user = user;
            lg.share = lg_share(i);
            lg.failed = 0;
            lg.nreasons = 0;
            lg.other_reasons = 0;
            return;
        }

        lg.kids[i] = pid;
        user += lg_share(i);
    }

    close(rp[1]);
    close(lp[0]);
    lg.ready_fd = rp[0];
    lg.release_fd = lp[1];
    (void) fcntl(lg.ready_fd, F_SETFL, O_NONBLOCK);
}


/* the parent: collect the shards' reports; 1 when all are in */
static int
lg_shards_ready(void)
{
    int         i, status;
    ssize_t     n;
    lg_ready_t  r;

    for (i = 1; i < lg.procs; i++) {
        if (lg.kids[i] > 0 && waitpid(lg.kids[i], &status, WNOHANG) > 0) {
            lg_die("generator shard %d exited before its sessions were up",
                   i);
        }
    }

    while (lg.kids_ready < lg.procs - 1) {
        n = read(lg.ready_fd, &r, sizeof(r));
        if (n == (ssize_t) sizeof(r)) {
            lg.kids_ready++;
            lg.kids_online += r.online;
            lg.kids_failed += r.failed;
            continue;
        }
        break;
    }

    return lg.kids_ready == lg.procs - 1;
}


/* a shard: its sessions are up (or failed) */
static void
lg_shard_ready(void)
{
    lg_ready_t  r;

    r.online = lg.online_now;
    r.failed = (int32_t) lg.failed;
    lg.kids_failed = lg.failed;         /* reported: not in the status */
    if (write(lg.ready_fd, &r, sizeof(r)) != (ssize_t) sizeof(r)) {
        lg_die("ready pipe: %s", strerror(errno));
    }
    lg_phase(LG_PH_HOLD, 1e9);
}


/* a shard: the parent closed the release pipe (or died) */
static int
lg_shard_released(void)
{
    char  c;

    return read(lg.release_fd, &c, 1) == 0
           || (errno != EAGAIN && errno != EINTR);
}


/* the parent, at the end: reap the shards */
static void
lg_reap_shards(void)
{
    int  i, status;

    if (lg.procs < 2 || lg.shard) {
        return;
    }

    if (lg.release_fd >= 0) {
        close(lg.release_fd);
        lg.release_fd = -1;
    }

    for (i = 1; i < lg.procs; i++) {
        if (lg.kids[i] <= 0) {
            continue;
        }
        if (waitpid(lg.kids[i], &status, 0) == -1
            || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        {
            lg_reason("generator shard %d ended with failures (its lines"
                      " above)", i);
            lg.failed++;
        }
        lg.kids[i] = 0;
    }
}


static void
lg_tick(uint64_t now)
{
    int  i;

    switch (lg.phase) {

    case LG_PH_WARM:
        lg_open_sessions(lg.target_online);
        if (lg.online_now + (int) lg.failed >= lg.target_online) {
            lg_close_all();
            lg.phase = LG_PH_WARM_CLOSE;
        }
        break;

    case LG_PH_WARM_CLOSE:
        if (lg.live == 0) {
            lg_phase(LG_PH_SETTLE0, lg.settle >= 0 ? lg.settle : 1.0);
        }
        break;

    case LG_PH_SETTLE0:
        if (now >= lg.phase_end) {
            lg_sample(&lg.s0, 1);
            if (lg.procs > 1) {
                lg_fork_shards();
            }
            lg.started = 0;
            lg.target_online = lg.share;
            lg.phase = LG_PH_RAMP;
            lg.ramp_t0 = lg_now();
            lg.logins = 0;
            memset(&lg.login_lat, 0, sizeof(lg_hist_t));
        }
        break;

    case LG_PH_RAMP:
        lg_open_sessions(lg.target_online);
        if (lg.scenario == LG_SC_MUC && (int) lg.started >= lg.target_online
            && lg.signing_in == 0 && lg.t_joins == 0)
        {
            lg.t_joins = now;
        }
        if (lg.scenario == LG_SC_MUC && lg.t_joins
            && now - lg.t_joins > (uint64_t) (lg.timeout * LG_NS))
        {
            /* joins that never completed fail, the rest go on */
            for (i = 0; i < lg.nslots; i++) {
                if (lg.conns[i].state == LG_ONLINE && !lg.conns[i].joined) {
                    lg_fail(&lg.conns[i], "muc: no join within --timeout");
                }
            }
        }
        if ((int) lg.started >= lg.target_online && lg.signing_in == 0
            && (lg.scenario != LG_SC_MUC
                || lg.joined + (int) lg.failed >= lg.online_now))
        {
            if (lg.shard) {
                lg_shard_ready();
                break;
            }
            if (lg.procs > 1 && !lg_shards_ready()) {
                break;
            }
            lg.ramp_t1 = now;
            printf("# %s: %d sessions online, %llu failed, %.1f s\n",
                   lg.scenario_name, lg.online_now + lg.kids_online,
                   (unsigned long long) (lg.failed + lg.kids_failed),
                   (now - lg.ramp_t0) / 1e9);
            fflush(stdout);
            lg_phase(LG_PH_SETTLE, lg.scenario != LG_SC_IDLE ? 0.5
                                   : lg.settle >= 0 ? lg.settle : 2.0);
        }
        break;

    case LG_PH_SETTLE:
        if (now < lg.phase_end) {
            break;
        }
        /*
         * muc-fanout: every occupant has its own presence, but the
         * others' may still be on their way (a server that falls behind
         * queues the join storm's O(N^2) presences); the first room
         * message would wait behind them.  Start when none came for a
         * second, at most --timeout after the ramp.
         */
        if (lg.scenario == LG_SC_MUC && now - lg.t_presence < LG_NS
            && now - lg.ramp_t1 < (uint64_t) (lg.timeout * LG_NS))
        {
            break;
        }
        if (lg.scenario == LG_SC_MUC) {
            printf("# muc-fanout: presences done %.1f s after the last "
                   "join\n", (now - lg.ramp_t1) / 1e9);
            fflush(stdout);
        }
        if (lg.scenario == LG_SC_IDLE) {
            lg_sample(&lg.s1, 1);
            lg.sampled = 1;
            lg.sampled_online = lg.online_now + lg.kids_online;
            lg_phase(LG_PH_HOLD, lg.hold);
            break;
        }
        if (lg.scenario == LG_SC_MUC) {
            for (i = 0; i < lg.senders * lg.window; i++) {
                if (lg.conns[i % lg.senders].state == LG_ONLINE) {
                    lg_chat_send(&lg.conns[i % lg.senders], lg_now());
                }
            }
        }
        if (lg.scenario == LG_SC_SAT) {
            for (i = 0; i < lg.nslots * lg.window; i++) {
                if (lg.conns[i % lg.nslots].state == LG_ONLINE) {
                    lg_chat_send(&lg.conns[i % lg.nslots], lg_now());
                }
            }
        }
        lg_phase(LG_PH_WARMUP, lg.warmup);
        lg.t_measure = now;
        lg.next_send = now;
        break;

    case LG_PH_WARMUP:
        if (lg.scenario == LG_SC_FIXED) {
            lg_fixed_rate(now);
        } else if (lg.scenario == LG_SC_LOGIN) {
            while (lg.nfree > 0) {
                lg_conn_start();
            }
        }
        if (now >= lg.phase_end) {
            lg_sample(&lg.s0, 0);
            memset(&lg.login_lat, 0, sizeof(lg_hist_t));
            lg_phase(LG_PH_MEASURE, lg.duration);
        }
        break;

    case LG_PH_MEASURE:
        if (lg.scenario == LG_SC_FIXED) {
            lg_fixed_rate(now);
        } else if (lg.scenario == LG_SC_LOGIN) {
            while (lg.nfree > 0) {
                lg_conn_start();
            }
        }
        if (now >= lg.phase_end) {
            lg_sample(&lg.s1, 0);
            lg.sampled = 1;
            if (lg.scenario == LG_SC_LOGIN) {
                lg.phase = LG_PH_CLOSE;
                lg.phase_end = now + 15 * LG_NS;
            } else {
                /* an overloaded server may still be delivering */
                lg_phase(LG_PH_DRAIN, 120.0);
                lg.t_progress = now;
            }
        }
        break;

    case LG_PH_HOLD:
    case LG_PH_DRAIN:
        if (lg.shard && lg_shard_released()) {
            lg_close_all();
            lg_phase(LG_PH_CLOSE, lg.timeout + 5);
            break;
        }
        if (now >= lg.phase_end
            || (lg.phase == LG_PH_DRAIN
                && (lg.inflight == 0 || now - lg.t_progress > 5 * LG_NS)))
        {
            lg.lost += lg.inflight;
            lg.inflight = 0;
            for (i = 0; i < lg.nslots; i++) {
                lg.conns[i].inflight = 0;
            }
            lg_close_all();
            if (lg.procs > 1 && lg.release_fd >= 0) {
                close(lg.release_fd);
                lg.release_fd = -1;
            }
            lg_phase(LG_PH_CLOSE, lg.timeout + 5);
        }
        break;

    case LG_PH_CLOSE:
        if (lg.live == 0) {
            lg.phase = LG_PH_END;
        } else if (now >= lg.phase_end) {
            for (i = 0; i < lg.nslots; i++) {
                if (lg.conns[i].state != LG_FREE) {
                    lg_fail(&lg.conns[i], "no end of stream after %g s",
                            lg.timeout + 5);
                }
            }
            lg.phase = LG_PH_END;
        }
        break;

    case LG_PH_END:
        break;
    }
}


/* setup */

static void
lg_users(const char *path)
{
    FILE    *f;
    char     line[512], *uid, *pw;
    int      cap;

    f = fopen(path, "r");
    if (f == NULL) {
        lg_die("%s: %s", path, strerror(errno));
    }

    cap = 0;
    while (fgets(line, sizeof(line), f)) {
        uid = strtok(line, " \t\r\n");
        if (uid == NULL || uid[0] == '#') {
            continue;
        }
        pw = strtok(NULL, " \t\r\n");

        if (lg.nusers == cap) {
            cap = cap ? cap * 2 : 1024;
            lg.uids = realloc(lg.uids, cap * sizeof(char *));
            lg.pws = realloc(lg.pws, cap * sizeof(char *));
            if (lg.uids == NULL || lg.pws == NULL) {
                lg_die("out of memory");
            }
        }

        lg.uids[lg.nusers] = strdup(uid);
        if (pw) {
            lg.pws[lg.nusers] = strdup(pw);
        } else {
            /* the harness's bench users: password "<uid>-pw" */
            lg.pws[lg.nusers] = malloc(strlen(uid) + 4);
            if (lg.pws[lg.nusers]) {
                sprintf(lg.pws[lg.nusers], "%s-pw", uid);
            }
        }
        if (lg.uids[lg.nusers] == NULL || lg.pws[lg.nusers] == NULL) {
            lg_die("out of memory");
        }
        lg.nusers++;
    }

    fclose(f);
}


static int
lg_pids(const char *s, pid_t *pids)
{
    int    n;
    char  *end;
    long   v;

    for (n = 0; *s && n < LG_MAX_PIDS; n++) {
        v = strtol(s, &end, 10);
        if (end == s || v <= 0) {
            lg_die("bad pid list: %s", s);
        }
        pids[n] = v;
        s = *end == ',' ? end + 1 : end;
    }

    return n;
}


static void
lg_url(const char *url)
{
    const char  *p, *slash, *colon;

    if (strncmp(url, "ws://", 5) == 0) {
        p = url + 5;
        lg.port = 80;
    } else if (strncmp(url, "wss://", 6) == 0) {
        p = url + 6;
        lg.tls = 1;
        lg.port = 443;
    } else if (strncmp(url, "tcp://", 6) == 0) {
        p = url + 6;
        lg.tcp = 1;
        lg.port = 5222;
    } else if (strncmp(url, "tls://", 6) == 0) {
        /* direct TLS (XEP-0368), not STARTTLS */
        p = url + 6;
        lg.tcp = 1;
        lg.tls = 1;
        lg.port = 5223;
    } else {
        lg_die("url must be ws://, wss://, tcp:// or tls://: %s", url);
    }

    slash = strchr(p, '/');
    if (slash == NULL) {
        slash = p + strlen(p);
    }
    colon = memchr(p, ':', slash - p);

    if ((colon ? colon : slash) - p >= (long) sizeof(lg.host)) {
        lg_die("host too long: %s", url);
    }
    memcpy(lg.host, p, (colon ? colon : slash) - p);
    if (colon) {
        lg.port = atoi(colon + 1);
    }
    snprintf(lg.path, sizeof(lg.path), "%s", *slash ? slash : "/");
}


static void
lg_limits(int slots)
{
    rlim_t         need;
    struct rlimit  rl;

    need = slots + 64;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur >= need) {
        return;
    }

    if (rl.rlim_max < need) {
        rl.rlim_max = need;
    }
    rl.rlim_cur = need;

    if (setrlimit(RLIMIT_NOFILE, &rl) == -1) {
        lg_die("cannot raise RLIMIT_NOFILE to %llu: %s",
               (unsigned long long) need, strerror(errno));
    }
}


static void
lg_on_signal(int sig)
{
    (void) sig;
    lg_interrupted = 1;
}


static void
lg_usage(void)
{
    fputs(
"usage: loadgen --url ws[s]://127.0.0.1:PORT/xmpp-websocket --users FILE\n"
"       loadgen --url tcp://127.0.0.1:PORT | tls://127.0.0.1:PORT ...\n"
"               (XMPP over TCP, RFC 6120; tls:// is direct TLS, XEP-0368)\n"
"               --scenario idle|chat-saturation|chat-fixed-rate|login|\n"
"                          muc-fanout\n"
"  --sessions N      sessions online (idle K, chat senders)   [100]\n"
"  --hold S          idle: seconds to hold the sessions        [5]\n"
"  --settle S        idle: seconds the server settles before each\n"
"                    memory sample (after the warm-up's close,\n"
"                    after the ramp)                           [1, 2]\n"
"  --window W        chat-saturation: messages in flight each  [4]\n"
"  --rate R          chat-fixed-rate: messages per second      [1000]\n"
"  --concurrency C   login: sign-ins in flight                 [20]\n"
"  --duration S      measured seconds (chat, login)            [20]\n"
"  --warmup S        unmeasured traffic before (chat, login)   [2]\n"
"  --ramp N          sign-ins in flight while opening sessions [200]\n"
"  --payload N       padding bytes in each message body        [32]\n"
"  --sources N       spread sources over 127.0.0.1..N          [16]\n"
"  --timeout S       limit on each sign-in step and close      [30]\n"
"  --server-pids L   comma list: server processes to measure\n"
"  --aux-pids L      comma list: more processes (the directory)\n"
"  --db-pids L       comma list: the audit database (mariadbd)\n"
"  --cpu N           pin the generator to CPU N\n"
"  --domain D        XMPP domain                               [example.com]\n"
"  --csv FILE        append one CSV line\n"
"  --late-log FILE   chat: write each message later than --late-ms as\n"
"                    \"sent received from to\" (monotonic ns)\n"
"  --late-ms MS      [1]\n"
"  --target NAME     server name in the row                    [conclave]\n"
"  --label TEXT      free text for the CSV (no commas)\n"
"  --proto P         xmpp, or relay: the trivial relay (relay.c) [xmpp]\n"
"  --room JID        muc-fanout: the room every session joins\n"
"  --senders S       muc-fanout: sessions that send            [1]\n"
"  --procs N         idle: split K over N processes (each is\n"
"                    bound by the hard RLIMIT_NOFILE)          [1]\n"
"users FILE: one \"uid [password]\" a line; the password defaults to\n"
"\"<uid>-pw\".  Exit status: 0 clean, 1 failures, 2 usage or setup.\n",
          stderr);
    exit(2);
}


static void
lg_options(int argc, char **argv)
{
    int          o;
    const char  *url, *users;
    static struct option  opts[] = {
        { "url", 1, NULL, 'u' },         { "users", 1, NULL, 'U' },
        { "scenario", 1, NULL, 's' },    { "sessions", 1, NULL, 'n' },
        { "hold", 1, NULL, 'H' },        { "window", 1, NULL, 'w' },
        { "rate", 1, NULL, 'r' },        { "concurrency", 1, NULL, 'c' },
        { "duration", 1, NULL, 'd' },    { "warmup", 1, NULL, 'W' },
        { "ramp", 1, NULL, 'R' },        { "payload", 1, NULL, 'p' },
        { "sources", 1, NULL, 'S' },     { "timeout", 1, NULL, 't' },
        { "server-pids", 1, NULL, 'P' }, { "aux-pids", 1, NULL, 'A' },
        { "cpu", 1, NULL, 'C' },         { "domain", 1, NULL, 'D' },
        { "csv", 1, NULL, 'o' },         { "target", 1, NULL, 'T' },
        { "db-pids", 1, NULL, 'B' },     { "late-log", 1, NULL, 'L' },
        { "late-ms", 1, NULL, 'm' },
        { "label", 1, NULL, 'l' },       { "proto", 1, NULL, 'X' },
        { "room", 1, NULL, 'M' },        { "senders", 1, NULL, 'N' },
        { "procs", 1, NULL, 'k' },       { "help", 0, NULL, 'h' },
        { "settle", 1, NULL, 'e' },
        { NULL, 0, NULL, 0 }
    };

    url = users = NULL;
    lg.sessions = 100;
    lg.hold = 5;
    lg.settle = -1;
    lg.window = 4;
    lg.rate = 1000;
    lg.late_ns = 1000000;
    lg.concurrency = 20;
    lg.duration = 20;
    lg.warmup = 2;
    lg.ramp = 200;
    lg.payload = 32;
    lg.nsrc = 16;
    lg.timeout = 30;
    lg.cpu = -1;
    lg.domain = "example.com";
    lg.target = "conclave";
    lg.label = "";
    lg.scenario_name = NULL;
    lg.senders = 1;
    lg.procs = 1;
    lg.ready_fd = -1;
    lg.release_fd = -1;

    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'u': url = optarg; break;
        case 'U': users = optarg; break;
        case 's': lg.scenario_name = optarg; break;
        case 'n': lg.sessions = atoi(optarg); break;
        case 'H': lg.hold = atof(optarg); break;
        case 'e': lg.settle = atof(optarg); break;
        case 'w': lg.window = atoi(optarg); break;
        case 'r': lg.rate = atof(optarg); break;
        case 'c': lg.concurrency = atoi(optarg); break;
        case 'd': lg.duration = atof(optarg); break;
        case 'W': lg.warmup = atof(optarg); break;
        case 'R': lg.ramp = atoi(optarg); break;
        case 'p': lg.payload = atoi(optarg); break;
        case 'S': lg.nsrc = atoi(optarg); break;
        case 't': lg.timeout = atof(optarg); break;
        case 'P': lg.nspids = lg_pids(optarg, lg.spids); break;
        case 'A': lg.napids = lg_pids(optarg, lg.apids); break;
        case 'B': lg.ndpids = lg_pids(optarg, lg.dpids); break;
        case 'C': lg.cpu = atoi(optarg); break;
        case 'D': lg.domain = optarg; break;
        case 'o': lg.csv = optarg; break;
        case 'L':
            lg.late = fopen(optarg, "w");
            if (lg.late == NULL) {
                lg_die("%s: %s", optarg, strerror(errno));
            }
            break;
        case 'm': lg.late_ns = (uint64_t) (atof(optarg) * 1e6); break;
        case 'T': lg.target = optarg; break;
        case 'l': lg.label = optarg; break;
        case 'M': lg.room = optarg; break;
        case 'N': lg.senders = atoi(optarg); break;
        case 'k': lg.procs = atoi(optarg); break;
        case 'X':
            if (strcmp(optarg, "relay") == 0) {
                lg.relay = 1;
            } else if (strcmp(optarg, "xmpp") != 0) {
                lg_usage();
            }
            break;
        default: lg_usage();
        }
    }

    if (url == NULL || users == NULL || lg.scenario_name == NULL) {
        lg_usage();
    }

    if (strcmp(lg.scenario_name, "idle") == 0) {
        lg.scenario = LG_SC_IDLE;
    } else if (strcmp(lg.scenario_name, "chat-saturation") == 0) {
        lg.scenario = LG_SC_SAT;
    } else if (strcmp(lg.scenario_name, "chat-fixed-rate") == 0) {
        lg.scenario = LG_SC_FIXED;
    } else if (strcmp(lg.scenario_name, "login") == 0) {
        lg.scenario = LG_SC_LOGIN;
    } else if (strcmp(lg.scenario_name, "muc-fanout") == 0) {
        lg.scenario = LG_SC_MUC;
        if (lg.room == NULL || strlen(lg.room) > 256 || lg.senders < 1
            || lg.senders > lg.sessions)
        {
            lg_die("muc-fanout needs --room and 1 <= --senders <= "
                   "--sessions");
        }
    } else {
        lg_usage();
    }

    if (lg.sessions < 2 || lg.window < 1 || lg.rate <= 0
        || lg.concurrency < 1 || lg.duration <= 0 || lg.ramp < 1
        || lg.nsrc < 1 || lg.nsrc > 254 || lg.payload < 0
        || lg.payload > 2000 || strchr(lg.label, ',')
        || lg.procs < 1 || lg.procs > LG_MAX_PROCS
        || lg.sessions / lg.procs < 2)
    {
        lg_die("option out of range (see --help)");
    }

    if (lg.procs > 1 && lg.scenario != LG_SC_IDLE) {
        lg_die("--procs applies to the idle scenario only");
    }

    lg_url(url);
    lg_users(users);

    if (lg.scenario != LG_SC_LOGIN && lg.nusers < lg.sessions) {
        lg_die("%d sessions need %d distinct users, %s has %d",
               lg.sessions, lg.sessions, users, lg.nusers);
    }
}


static void
lg_setup(void)
{
    int        i;
    cpu_set_t  set;

    if (lg.cpu >= 0) {
        CPU_ZERO(&set);
        CPU_SET(lg.cpu, &set);
        if (sched_setaffinity(0, sizeof(set), &set) == -1) {
            lg_die("cannot pin to CPU %d: %s", lg.cpu, strerror(errno));
        }
    }

    /* idle over N processes: the parent's share is the largest */
    lg.share = lg.procs > 1 ? lg_share(0) : lg.sessions;
    lg.nslots = lg.scenario == LG_SC_LOGIN ? lg.concurrency : lg.share;
    lg_limits(lg.nslots);

    lg.conns = calloc(lg.nslots, sizeof(lg_conn_t));
    lg.freelist = malloc(lg.nslots * sizeof(int));
    lg.online = malloc(lg.nslots * sizeof(int));
    if (lg.conns == NULL || lg.freelist == NULL || lg.online == NULL) {
        lg_die("out of memory");
    }

    for (i = lg.nslots - 1; i >= 0; i--) {
        lg.conns[i].fd = -1;
        lg.conns[i].pos = -1;
        lg.conns[i].slot = i;
        lg.freelist[lg.nfree++] = i;
    }

    lg.rng = lg_now() | 1;
    lg.ep = epoll_create1(EPOLL_CLOEXEC);
    if (lg.ep == -1) {
        lg_die("epoll_create1: %s", strerror(errno));
    }

    if (lg.tls) {
        lg.ssl_ctx = SSL_CTX_new(TLS_client_method());
        if (lg.ssl_ctx == NULL) {
            lg_die("SSL_CTX_new failed");
        }
        /* the appliance's certificate is self-signed: no verification */
        SSL_CTX_set_verify(lg.ssl_ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_mode(lg.ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE
                         | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    }

    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, lg_on_signal);
    signal(SIGTERM, lg_on_signal);

    switch (lg.scenario) {
    case LG_SC_IDLE:
        lg.target_online = lg.share < 20 ? lg.share : 20;
        lg.phase = LG_PH_WARM;
        break;
    case LG_SC_LOGIN:
        lg_phase(LG_PH_WARMUP, lg.warmup);
        break;
    default:
        lg.target_online = lg.sessions;
        lg.ramp_t0 = lg_now();
        lg.phase = LG_PH_RAMP;
        break;
    }
}


int
main(int argc, char **argv)
{
    int                 i, n, ms;
    uint64_t            now, last_scan, wait;
    struct timespec     ts;
    struct epoll_event  evs[LG_EVENTS];

    lg_options(argc, argv);
    lg_setup();

    last_scan = lg_now();

    while (lg.phase != LG_PH_END) {
        if (lg_interrupted && lg.phase < LG_PH_CLOSE) {
            lg_close_all();
            lg_phase(LG_PH_CLOSE, 5.0);
        }

        now = lg_now();
        wait = 10 * 1000000ULL;
        if (lg.scenario == LG_SC_FIXED
            && (lg.phase == LG_PH_WARMUP || lg.phase == LG_PH_MEASURE))
        {
            /* sleep exactly until the next scheduled message */
            wait = lg.next_send > now ? lg.next_send - now : 0;
            if (wait > 10 * 1000000ULL) {
                wait = 10 * 1000000ULL;
            }
        }

        ts.tv_sec = wait / LG_NS;
        ts.tv_nsec = wait % LG_NS;
        n = epoll_pwait2(lg.ep, evs, LG_EVENTS, &ts, NULL);
        if (n == -1 && errno == ENOSYS) {
            ms = (int) ((wait + 999999) / 1000000);
            n = epoll_wait(lg.ep, evs, LG_EVENTS, ms);
        }
        if (n == -1 && errno != EINTR) {
            lg_die("epoll_wait: %s", strerror(errno));
        }

        for (i = 0; i < n; i++) {
            lg_event(evs[i].data.ptr, evs[i].events);
        }

        now = lg_now();
        lg_tick(now);
        lg_flush_dirty();

        if (now - last_scan > 100 * 1000000ULL) {
            last_scan = now;
            lg_timeouts(now);
        }
    }

    if (lg.shard) {
        return lg_shard_exit();
    }

    lg_reap_shards();

    if (!lg.sampled) {
        lg_sample(&lg.s1, 0);
    }

    if (lg.late) {
        (void) fclose(lg.late);
    }

    return lg_report(lg_interrupted);
}
