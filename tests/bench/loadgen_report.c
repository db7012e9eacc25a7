
/*
 * loadgen's measurements and report: latency histograms (log-linear
 * buckets), the server's CPU and memory from /proc at the phase
 * boundaries, and the one row and CSV line a scenario prints
 * (loadgen.c runs the scenarios).
 */

#include "loadgen.h"

#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>


/* latency histograms */

static unsigned
lg_hist_idx(uint64_t v)
{
    unsigned  shift;

    if (v < 2 * LG_HIST_SUB) {
        return (unsigned) v;
    }

    shift = 63 - __builtin_clzll(v) - 7;
    return (shift + 1) * LG_HIST_SUB + (unsigned) (v >> shift)
           - LG_HIST_SUB;
}


static uint64_t
lg_hist_value(unsigned i)
{
    unsigned  shift;

    if (i < 2 * LG_HIST_SUB) {
        return i;
    }

    shift = i / LG_HIST_SUB - 1;
    return ((uint64_t) (i % LG_HIST_SUB + LG_HIST_SUB) << shift)
           + ((1ULL << shift) >> 1);
}


/* one latency in nanoseconds */
void
lg_hist_add(lg_hist_t *h, uint64_t v)
{
    h->b[lg_hist_idx(v)]++;
    h->n++;
    if (v > h->max) {
        h->max = v;
    }
}


/* the value at quantile q, in milliseconds; -1 without samples */
static double
lg_hist_ms(lg_hist_t *h, double q)
{
    unsigned  i;
    uint64_t  want, seen;

    if (h->n == 0) {
        return -1;
    }

    want = (uint64_t) (q * h->n + 0.999999);
    if (want == 0) {
        want = 1;
    }

    seen = 0;
    for (i = 0; i < LG_HIST_N; i++) {
        seen += h->b[i];
        if (seen >= want) {
            return lg_hist_value(i) / 1e6;
        }
    }

    return h->max / 1e6;
}


/* the server's side, from /proc */

static int
lg_proc_cpu(pid_t pid, uint64_t *ticks)
{
    int      fd;
    char     buf[1024], *p;
    ssize_t  n;
    unsigned long long  ut, st;

    snprintf(buf, sizeof(buf), "/proc/%d/stat", (int) pid);
    fd = open(buf, O_RDONLY);
    if (fd == -1) {
        return -1;
    }

    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) {
        return -1;
    }
    buf[n] = '\0';

    /* fields after "(comm)": state is field 3, utime 14, stime 15 */
    p = strrchr(buf, ')');
    if (p == NULL
        || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u"
                  " %llu %llu", &ut, &st) != 2)
    {
        return -1;
    }

    *ticks += ut + st;
    return 0;
}


static int
lg_proc_mem(pid_t pid, uint64_t *rss, uint64_t *pss)
{
    char                path[64], line[256];
    FILE               *f;
    unsigned long long  v;

    snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int) pid);
    f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }

    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "Rss: %llu", &v) == 1) {
            *rss += v;
        } else if (sscanf(line, "Pss: %llu", &v) == 1) {
            *pss += v;
        }
    }

    fclose(f);
    return 0;
}


/* the server's CPU (and with mem its RSS, PSS) and ours, now */
void
lg_sample(lg_sample_t *s, int mem)
{
    int  i;

    memset(s, 0, sizeof(lg_sample_t));
    s->at = lg_now();
    getrusage(RUSAGE_SELF, &s->self);

    for (i = 0; i < lg.nspids; i++) {
        if (lg_proc_cpu(lg.spids[i], &s->cpu_ticks) == -1
            || (mem && lg_proc_mem(lg.spids[i], &s->rss_kib, &s->pss_kib)
                       == -1))
        {
            /* a worker that crashed and was respawned */
            lg_reason("server: pid %d vanished", (int) lg.spids[i]);
            lg.failed++;
        }
    }

    for (i = 0; i < lg.napids; i++) {
        (void) lg_proc_cpu(lg.apids[i], &s->aux_ticks);
    }

    for (i = 0; i < lg.ndpids; i++) {
        (void) lg_proc_cpu(lg.dpids[i], &s->db_ticks);
    }
}


/* results */

static const char *
lg_transport(void)
{
    if (lg.relay) {
        return lg.tcp ? "tcp-relay" : "ws-relay";
    }

    if (lg.tcp) {
        return lg.tls ? "tls" : "tcp";
    }

    return lg.tls ? "wss" : "ws";
}


static double
lg_cpu_seconds(uint64_t ticks)
{
    return (double) ticks / sysconf(_SC_CLK_TCK);
}


static double
lg_tv(struct timeval *tv)
{
    return tv->tv_sec + tv->tv_usec / 1e6;
}


/*
 * The scenario's row and CSV line from lg.s0, lg.s1 and the counters;
 * 1 when anything failed or the run was interrupted (SIGINT, SIGTERM).
 */
int
lg_report(int interrupted)
{
    int          i, size;
    FILE        *f;
    char         date[32], param[32];
    time_t       t;
    struct stat  st;
    uint64_t     ok, errors;
    double       secs, per_s, cpu, aux, db, db_op, cli, us_op, rss, pss,
                 p50, p99, mx;
    lg_hist_t   *h;

    secs = (lg.s1.at - lg.s0.at) / 1e9;
    cpu = lg_cpu_seconds(lg.s1.cpu_ticks - lg.s0.cpu_ticks);
    aux = lg_cpu_seconds(lg.s1.aux_ticks - lg.s0.aux_ticks);
    db = lg_cpu_seconds(lg.s1.db_ticks - lg.s0.db_ticks);
    cli = lg_tv(&lg.s1.self.ru_utime) + lg_tv(&lg.s1.self.ru_stime)
          - lg_tv(&lg.s0.self.ru_utime) - lg_tv(&lg.s0.self.ru_stime);
    rss = pss = -1;
    h = &lg.lat;

    switch (lg.scenario) {

    case LG_SC_IDLE:
        size = lg.sessions;
        snprintf(param, sizeof(param), "hold=%gs", lg.hold);
        ok = lg.sampled_online;
        secs = (lg.ramp_t1 - lg.ramp_t0) / 1e9;
        per_s = ok / secs;
        if (ok) {
            rss = ((double) lg.s1.rss_kib - lg.s0.rss_kib) / ok;
            pss = ((double) lg.s1.pss_kib - lg.s0.pss_kib) / ok;
        }
        h = &lg.login_lat;
        break;

    case LG_SC_LOGIN:
        size = lg.concurrency;
        snprintf(param, sizeof(param), "C=%d", lg.concurrency);
        ok = lg.logins_win;
        per_s = ok / secs;
        h = &lg.login_lat;
        break;

    case LG_SC_SAT:
        size = lg.sessions;
        snprintf(param, sizeof(param), "W=%d", lg.window);
        ok = lg.delivered_win;
        per_s = ok / secs;
        break;

    case LG_SC_MUC:
        /* size: occupants; ok: deliveries (every occupant's copy) */
        size = lg.sessions;
        /* no comma: the CSV line is not quoted */
        snprintf(param, sizeof(param), "S=%d;W=%d", lg.senders, lg.window);
        ok = lg.delivered_win;
        per_s = ok / secs;
        printf("# muc-fanout: %d occupants, %.0f room messages/s, %.0f"
               " deliveries/s\n", lg.joined, per_s / lg.joined, per_s);
        break;

    default:
        size = lg.sessions;
        snprintf(param, sizeof(param), "R=%g", lg.rate);
        ok = lg.delivered_win;
        per_s = ok / secs;
        break;
    }

    if (lg.scenario == LG_SC_IDLE) {
        cpu = cli = aux = db = -1;
        us_op = db_op = -1;
    } else {
        us_op = ok ? cpu * 1e6 / ok : -1;
        db_op = ok && lg.ndpids ? db * 1e6 / ok : -1;
    }

    lg.failed += lg.kids_failed;
    errors = lg.failed + lg.msg_errors + lg.lost;

    if (lg.scenario == LG_SC_FIXED && per_s < 0.95 * lg.rate) {
        printf("# OVERLOAD: offered %g msgs/s, delivered %.0f/s in the"
               " window; latency measures the backlog\n", lg.rate, per_s);
    }
    p50 = lg_hist_ms(h, 0.50);
    p99 = lg_hist_ms(h, 0.99);
    mx = h->n ? h->max / 1e6 : -1;

    printf("%-9s %-16s %6s %-10s %9s %6s %9s %8s %8s %8s %7s %8s %8s %8s"
           " %7s\n", "target", "scenario", "size", "param", "ok", "errors",
           "per_s", "p50_ms", "p99_ms", "max_ms", "srv_cpu", "us_op",
           "rss_kib", "pss_kib", "cli_cpu");
    printf("%-9s %-16s %6d %-10s %9llu %6llu %9.1f %8.3f %8.3f %8.3f"
           " %6.0f%% %8.1f %8.2f %8.2f %6.0f%%\n",
           lg.target, lg.scenario_name, size, param,
           (unsigned long long) ok, (unsigned long long) errors, per_s,
           p50, p99, mx, cpu >= 0 ? 100 * cpu / secs : -1, us_op, rss, pss,
           cli >= 0 ? 100 * cli / secs : -1);
    if (lg.tls_desc[0]) {
        printf("# tls: %s\n", lg.tls_desc);
    }
    if (lg.scenario == LG_SC_LOGIN && lg.napids && ok) {
        printf("# directory CPU (--aux-pids): %.1f us per op, %.0f%%\n",
               aux * 1e6 / ok, 100 * aux / secs);
    }
    if (lg.ndpids && db_op >= 0) {
        printf("# audit database CPU (--db-pids): %.1f us per op, %.0f%%;"
               " with the server's: %.1f us per op\n",
               db_op, 100 * db / secs, us_op + db_op);
    }

    if (lg.csv) {
        f = fopen(lg.csv, "a");
        if (f == NULL) {
            lg_die("%s: %s", lg.csv, strerror(errno));
        }
        if (fstat(fileno(f), &st) == 0 && st.st_size == 0) {
            fprintf(f, "date,target,transport,scenario,size,param,"
                    "duration_s,ok,errors,failed_sessions,msg_errors,lost,"
                    "per_s,p50_ms,p99_ms,max_ms,srv_cpu_s,srv_cpu_pct,"
                    "srv_cpu_us_per_op,aux_cpu_s,rss_kib_per_session,"
                    "pss_kib_per_session,cli_cpu_pct,label,tls,"
                    "db_cpu_us_per_op\n");
        }
        t = time(NULL);
        strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", localtime(&t));
        fprintf(f, "%s,%s,%s,%s,%d,%s,%.2f,%llu,%llu,%llu,%llu,%llu,%.1f,"
                "%.3f,%.3f,%.3f,%.3f,%.1f,%.2f,%.3f,%.3f,%.3f,%.1f,%s,%s,"
                "%.2f\n",
                date, lg.target, lg_transport(), lg.scenario_name,
                size, param, secs, (unsigned long long) ok,
                (unsigned long long) errors, (unsigned long long) lg.failed,
                (unsigned long long) lg.msg_errors,
                (unsigned long long) lg.lost, per_s, p50, p99, mx, cpu,
                cpu >= 0 ? 100 * cpu / secs : -1, us_op, aux, rss, pss,
                cli >= 0 ? 100 * cli / secs : -1, lg.label,
                lg.tls_desc, db_op);
        fclose(f);
    }

    if (errors == 0 && !interrupted) {
        return 0;
    }

    printf("*** FAILURES in %s: %llu failed sessions, %llu error stanzas, "
           "%llu lost messages%s ***\n", lg.scenario_name,
           (unsigned long long) lg.failed,
           (unsigned long long) lg.msg_errors,
           (unsigned long long) lg.lost,
           interrupted ? ", interrupted" : "");
    for (i = 0; i < lg.nreasons; i++) {
        printf("***   %8llu  %s\n", (unsigned long long) lg.reasons[i].count,
               lg.reasons[i].text);
    }
    if (lg.other_reasons) {
        printf("***   %8llu  (other reasons)\n",
               (unsigned long long) lg.other_reasons);
    }

    return 1;
}


/* a shard's end: its failures are printed here, the parent counts them */
int
lg_shard_exit(void)
{
    int  i;

    if (lg.failed == 0) {
        return 0;
    }

    printf("*** generator shard %d: %llu failed sessions ***\n", lg.shard,
           (unsigned long long) lg.failed);
    for (i = 0; i < lg.nreasons; i++) {
        printf("***   %8llu  %s\n", (unsigned long long) lg.reasons[i].count,
               lg.reasons[i].text);
    }
    fflush(stdout);

    /* the failures of the ramp went to the parent in lg_ready_t */
    return lg.failed > lg.kids_failed;
}
