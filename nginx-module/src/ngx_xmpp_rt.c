
/*
 * conclave_realtime_priority: each worker's event loop, and its
 * journal's sync thread, in SCHED_RR while the worker is not busy
 * (docs/operations.md "Latency on a shared machine").
 *
 * A woken event loop whose CPU runs another normal task (MariaDB's
 * inserts, on a machine that holds both) waits for that task's slice to
 * end, milliseconds on a kernel that preempts fair tasks at the tick;
 * nice values and EEVDF slices did not change that in the benchmarks
 * (docs/benchmarks.md).  A SCHED_RR thread preempts a normal one at
 * once.  It also keeps its CPU for as long as it wants it, so an event
 * loop that is busy must not stay real-time: every NGX_XMPP_RT_TICK the
 * event loop reads how long it ran and how long it waited runnable for
 * a CPU (/proc/thread-self/schedstat), and when that demand is above
 * its share of a CPU (max_busy=, or half a CPU divided among the
 * workers that share the CPUs this one may run on) it goes back to
 * SCHED_OTHER; below half that share it returns.  The wait counts: a
 * demoted event loop that another real-time one starves wants the CPU
 * as much as before, and must not come back for having had none.  A
 * saturated worker is an ordinary one, and MariaDB, slapd and the
 * shipper keep their part of the machine.
 *
 * An unprivileged worker may raise itself only up to RLIMIT_RTPRIO: the
 * master (root, before it forks) raises that limit to the priority.
 * The worker's other threads (nginx's thread pools, the shipper, the
 * directory threads) start before the event loop is promoted and stay
 * SCHED_OTHER, and so does any thread started later
 * (SCHED_RESET_ON_FORK); only the sync thread is given the event
 * loop's policy, by the tick.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include "ngx_xmpp.h"


#define NGX_XMPP_RT_TICK     100      /* ms */
#define NGX_XMPP_RT_SHARE    50       /* % of a CPU */

#ifndef SCHED_RESET_ON_FORK
#define SCHED_RESET_ON_FORK  0x40000000
#endif


typedef struct {
    ngx_event_t       ev;
    ngx_connection_t  dumb;
    ngx_uint_t        prio;
    ngx_uint_t        on;             /* the event loop is SCHED_RR */
    ngx_uint_t        limit;          /* % of a CPU: demote above it */
    ngx_uint_t        failed;         /* sched_setscheduler() refused */
    pid_t             sync_tid;       /* the policy it was given */
    ngx_uint_t        sync_on;
    int               fd;             /* /proc/thread-self/schedstat */
    uint64_t          demand_ns;      /* ran + waited, at the last tick */
    uint64_t          wall_ns;
} ngx_xmpp_rt_t;


static void ngx_xmpp_rt_tick(ngx_event_t *ev);
static ngx_int_t ngx_xmpp_rt_set(ngx_log_t *log, pid_t tid, ngx_uint_t on);


static ngx_xmpp_rt_t  *ngx_xmpp_rt;

/*
 * Written once by the sync thread, read by the event loop's tick; that
 * thread lives as long as the worker (ngx_xmpp_audit.c starts it once
 * and joins it at exit, after the last tick), so its tid stays its own.
 */
static pid_t           ngx_xmpp_rt_sync;


/*
 * In the master, before it forks: the ceiling an unprivileged worker
 * may raise itself to.  Without root it can only use what the soft and
 * hard limits already allow; the worker then says what it got.
 */
void
ngx_xmpp_rt_init_master(ngx_log_t *log, ngx_xmpp_conf_t *xcf)
{
    struct rlimit  rl;

    if (xcf->realtime_priority == 0
        || getrlimit(RLIMIT_RTPRIO, &rl) == -1
        || rl.rlim_cur >= xcf->realtime_priority)
    {
        return;
    }

    rl.rlim_cur = xcf->realtime_priority;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < rl.rlim_cur) {
        rl.rlim_max = rl.rlim_cur;
    }

    if (setrlimit(RLIMIT_RTPRIO, &rl) == -1) {
        ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                      "xmpp: setrlimit(RLIMIT_RTPRIO, %ui) failed: "
                      "workers that are not root cannot use "
                      "\"conclave_realtime_priority\" (the master needs "
                      "root with CAP_SYS_RESOURCE)", xcf->realtime_priority);
    }
}


static uint64_t
ngx_xmpp_rt_ns(clockid_t clock)
{
    struct timespec  ts;

    (void) clock_gettime(clock, &ts);

    return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}


/*
 * The event loop's time on a CPU plus its time runnable on a run queue
 * ("run_ns wait_ns slices", procfs: kernel memory, never a disk); its
 * CPU time alone where the kernel keeps no such figures.
 */
static uint64_t
ngx_xmpp_rt_demand(ngx_xmpp_rt_t *rt)
{
    char                 buf[96], *p;
    ssize_t              n;
    unsigned long long   run, wait;

    if (rt->fd != -1) {
        n = pread(rt->fd, buf, sizeof(buf) - 1, 0);

        if (n > 0) {
            buf[n] = '\0';
            run = strtoull(buf, &p, 10);
            wait = strtoull(p, NULL, 10);
            return run + wait;
        }
    }

    return ngx_xmpp_rt_ns(CLOCK_THREAD_CPUTIME_ID);
}


/*
 * Half a CPU, shared by the workers that share this one's CPUs: all of
 * them when nginx does not pin workers (worker_cpu_affinity), or when
 * something outside pinned the master (taskset) before it forked.
 */
static ngx_uint_t
ngx_xmpp_rt_limit(ngx_cycle_t *cycle)
{
    cpu_set_t         set;
    ngx_uint_t        cpus, workers;
    ngx_core_conf_t  *ccf;

    ccf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_core_module);

    cpus = 1;
    if (sched_getaffinity(0, sizeof(cpu_set_t), &set) == 0) {
        cpus = CPU_COUNT(&set);
    }

    workers = 1;
    if (ccf && ccf->cpu_affinity_n == 0 && !ccf->cpu_affinity_auto
        && ccf->worker_processes > 1)
    {
        workers = ccf->worker_processes;
    }

    if (workers <= cpus) {
        return NGX_XMPP_RT_SHARE;
    }

    return ngx_max(NGX_XMPP_RT_SHARE * cpus / workers, 5);
}


ngx_int_t
ngx_xmpp_rt_init_worker(ngx_cycle_t *cycle, ngx_xmpp_conf_t *xcf)
{
    ngx_xmpp_rt_t  *rt;

    if (xcf->realtime_priority == 0) {
        return NGX_OK;
    }

    rt = ngx_pcalloc(cycle->pool, sizeof(ngx_xmpp_rt_t));
    if (rt == NULL) {
        return NGX_ERROR;
    }

    rt->prio = xcf->realtime_priority;
    rt->fd = -1;
    rt->limit = xcf->realtime_max_busy ? xcf->realtime_max_busy
                                       : ngx_xmpp_rt_limit(cycle);
    ngx_xmpp_rt = rt;

    if (ngx_xmpp_rt_set(cycle->log, 0, 1) != NGX_OK) {
        /* said once; the worker runs as nginx would without it */
        ngx_xmpp_rt = NULL;
        return NGX_OK;
    }

    rt->on = 1;
    rt->fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    rt->demand_ns = ngx_xmpp_rt_demand(rt);
    rt->wall_ns = ngx_xmpp_rt_ns(CLOCK_MONOTONIC);
    ngx_xmpp_metrics_realtime(1, 0);

    ngx_log_error(NGX_LOG_INFO, cycle->log, 0,
                  "xmpp: event loop in SCHED_RR %ui while it uses under "
                  "%ui%% of a CPU", rt->prio, rt->limit);

    rt->dumb.fd = (ngx_socket_t) -1;
    rt->ev.data = &rt->dumb;
    rt->ev.handler = ngx_xmpp_rt_tick;
    rt->ev.log = cycle->log;
    rt->ev.cancelable = 1;
    ngx_add_timer(&rt->ev, NGX_XMPP_RT_TICK);

    return NGX_OK;
}


/* the sync thread, as it starts: the tick gives it the event loop's */
void
ngx_xmpp_rt_register_thread(void)
{
    __atomic_store_n(&ngx_xmpp_rt_sync, (pid_t) syscall(SYS_gettid),
                     __ATOMIC_RELEASE);
}


static void
ngx_xmpp_rt_tick(ngx_event_t *ev)
{
    pid_t           tid;
    uint64_t        demand, wall, busy;
    ngx_xmpp_rt_t  *rt;

    rt = ngx_xmpp_rt;

    demand = ngx_xmpp_rt_demand(rt);
    wall = ngx_xmpp_rt_ns(CLOCK_MONOTONIC);

    busy = (wall > rt->wall_ns && demand >= rt->demand_ns)
           ? (demand - rt->demand_ns) * 100 / (wall - rt->wall_ns) : 0;
    rt->demand_ns = demand;
    rt->wall_ns = wall;

    if (rt->on && busy > rt->limit) {
        if (ngx_xmpp_rt_set(ev->log, 0, 0) == NGX_OK) {
            rt->on = 0;
            ngx_xmpp_metrics_realtime(0, 1);
            ngx_log_debug2(NGX_LOG_DEBUG_CORE, ev->log, 0,
                           "xmpp: event loop busy %uL%%: SCHED_OTHER "
                           "(limit %ui%%)", busy, rt->limit);
        }

    } else if (!rt->on && busy * 2 < rt->limit) {
        if (ngx_xmpp_rt_set(ev->log, 0, 1) == NGX_OK) {
            rt->on = 1;
            ngx_xmpp_metrics_realtime(1, 0);
        }
    }

    tid = __atomic_load_n(&ngx_xmpp_rt_sync, __ATOMIC_ACQUIRE);

    if (tid && (tid != rt->sync_tid || rt->sync_on != rt->on)) {
        if (ngx_xmpp_rt_set(ev->log, tid, rt->on) == NGX_OK) {
            rt->sync_tid = tid;
            rt->sync_on = rt->on;
        }
    }

    if (!ngx_exiting && !ngx_terminate && !ngx_quit) {
        ngx_add_timer(ev, NGX_XMPP_RT_TICK);
    }
}


/* tid 0: the calling thread; on: SCHED_RR at the priority, or back */
static ngx_int_t
ngx_xmpp_rt_set(ngx_log_t *log, pid_t tid, ngx_uint_t on)
{
    struct sched_param  sp;

    ngx_memzero(&sp, sizeof(struct sched_param));
    sp.sched_priority = on ? (int) ngx_xmpp_rt->prio : 0;

    if (sched_setscheduler(tid, (on ? SCHED_RR : SCHED_OTHER)
                                | SCHED_RESET_ON_FORK, &sp)
        == 0)
    {
        return NGX_OK;
    }

    if (!ngx_xmpp_rt->failed) {
        ngx_xmpp_rt->failed = 1;
        ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                      "xmpp: sched_setscheduler(SCHED_RR, %ui) failed: "
                      "the event loop runs in SCHED_OTHER (RLIMIT_RTPRIO "
                      "too low, or a cgroup without real-time time)",
                      ngx_xmpp_rt->prio);
    }

    return NGX_ERROR;
}


void
ngx_xmpp_rt_exit_worker(void)
{
    if (ngx_xmpp_rt && ngx_xmpp_rt->ev.timer_set) {
        ngx_del_timer(&ngx_xmpp_rt->ev);
    }

    if (ngx_xmpp_rt && ngx_xmpp_rt->fd != -1) {
        (void) close(ngx_xmpp_rt->fd);
    }

    ngx_xmpp_rt = NULL;
}
