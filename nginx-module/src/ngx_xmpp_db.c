
/*
 * MariaDB for the chat features (rosters, offline messages, rooms,
 * archives) without blocking the event loop.
 *
 * Connector/C's blocking calls run in an nginx thread pool (the one
 * named by conclave_db_thread_pool), never in the one that LDAP uses,
 * so a frozen directory cannot starve the database work or the other
 * way round.  A request is one heap block: the nginx thread task, the
 * request and the caller's context.  The caller's run() executes in a
 * pool thread with a connection taken from this worker's small pool;
 * its done() runs afterwards on the event loop.  Every wait is bounded
 * twice: the connection has connect, read and write timeouts
 * (conclave_audit_db_timeout), and a timer on the event loop answers
 * done() with NGX_XMPP_DB_TIMEOUT if the thread has not finished by
 * then (conclave_db_timeout).  The block is freed only once the thread
 * is done with it, so a late thread never writes into freed memory.
 *
 * A timeout must not be a lie: a store answered "failed" that lands
 * when a frozen server thaws is delivered after its sender was told
 * otherwise, and a retry duplicates it.  So every request is one
 * transaction that the adapter commits, and the thread and the timer
 * race for it with one compare-and-swap on r->state:
 *
 *   QUEUED --thread--> RUNNING --thread--> COMMITTING --> done
 *     |                   |
 *     +------timer--------+----> ABANDONED (answered _TIMEOUT; the
 *                                thread skips the request or rolls
 *                                it back instead of committing)
 *
 * A timer that finds COMMITTING waits for the thread: the outcome is
 * then known, except when the connection is lost during COMMIT itself.
 *
 * A request marked readonly (a history page) writes nothing, so there
 * is nothing for a timeout to undo: it runs on a connection of its own
 * kind in autocommit mode, each statement its own transaction, and the
 * COMMIT round trip (a tenth of a page's time) is not sent.  Its locks
 * and snapshot end with each statement, so no idle pooled connection
 * holds a read view or a metadata lock that would stall a migration.
 *
 * A statement that the client has stopped waiting for must stop in the
 * server too.  A read that timed out closes the connection; mariadbd
 * then ends a metadata-lock wait, but not an InnoDB row-lock wait
 * (innodb_lock_wait_timeout, 50 s) or a long query, which go on
 * holding a server thread and their locks.  So every pooled connection sets max_statement_time to the shorter of
 * nine tenths of its read timeout (conclave_audit_db_timeout) and the
 * session's wait (conclave_db_timeout): MariaDB ends such a statement
 * itself, lock waits included, with ER_STATEMENT_TIMEOUT (counted in
 * statement_timeouts) on a connection that stays usable.
 *
 * While the server is unreachable, a failed connect closes the circuit
 * for a second: requests fail at once with NGX_XMPP_DB_UNAVAILABLE
 * instead of each holding a thread for a connect timeout.
 *
 * A pooled connection keeps the statements that ngx_xmpp_db_select()
 * and ngx_xmpp_db_stmt() prepared on it (the last
 * NGX_XMPP_DB_STMT_CACHE, by their text): the same statement again is
 * one COM_STMT_EXECUTE, with no prepare, no parse and no close.  A
 * sign-in ran eight of them, each prepared and closed again, and
 * mariadbd's CPU for that was more than all of nginx's
 * (docs/benchmarks.md, "Sign-in cost").  MariaDB prepares a statement
 * again by itself when a table it reads has changed (a migration).
 */


#include "ngx_xmpp.h"

#include <mysql.h>
#include <errmsg.h>
#include <mysqld_error.h>

#include "caud.h"


#define NGX_XMPP_DB_POOL_MAX     16
#define NGX_XMPP_DB_STMT_CACHE   16      /* per connection: 16 x pool x
                                            workers of the server's
                                            max_prepared_stmt_count */
#define NGX_XMPP_DB_RETRY_MS     1000
#define NGX_XMPP_DB_PING_MS      1000

/* r->state */
#define NGX_XMPP_DB_QUEUED       0
#define NGX_XMPP_DB_RUNNING      1
#define NGX_XMPP_DB_COMMITTING   2
#define NGX_XMPP_DB_ABANDONED    3


typedef struct {
    MYSQL_STMT            *stmt;
    u_char                *sql;           /* a copy: the key */
    size_t                 len;
    ngx_uint_t             used;          /* for the least recent */
} ngx_xmpp_db_cached_t;


/* a statement's parameters as Connector/C reads them at execute */
typedef struct {
    MYSQL_BIND             bind[NGX_XMPP_DB_PARAMS_MAX];
    unsigned long          lens[NGX_XMPP_DB_PARAMS_MAX];
} ngx_xmpp_db_params_t;


/* a pooled connection with its prepared statements */
typedef struct {
    MYSQL                 *mysql;
    ngx_uint_t             tick;
    ngx_uint_t             n;
    ngx_xmpp_db_cached_t   cache[NGX_XMPP_DB_STMT_CACHE];
} ngx_xmpp_db_conn_t;


struct ngx_xmpp_db_pool_s {
    pthread_mutex_t        lock;
    /* [0]: one transaction per request; [1]: readonly, autocommit */
    ngx_xmpp_db_conn_t    *idle[2][NGX_XMPP_DB_POOL_MAX];
    ngx_msec_t             idle_since[2][NGX_XMPP_DB_POOL_MAX];
    ngx_uint_t             nidle[2];
    ngx_msec_t             down_until;     /* ngx_current_msec scale */
    ngx_msec_t             statement_ms;   /* max_statement_time */
    caud_db_opts_t         opts;
    ngx_xmpp_db_stats_t    stats;
};


static ngx_xmpp_db_pool_t  *ngx_xmpp_db_pool;

/* the connection of the request that this pool thread runs */
static __thread ngx_xmpp_db_conn_t  *ngx_xmpp_db_current;


static void ngx_xmpp_db_thread(void *data, ngx_log_t *log);
static void ngx_xmpp_db_complete(ngx_event_t *ev);
static void ngx_xmpp_db_expire(ngx_event_t *ev);
static void ngx_xmpp_db_release(ngx_xmpp_db_req_t *r);
static ngx_uint_t ngx_xmpp_db_move(ngx_xmpp_db_req_t *r, ngx_uint_t from,
    ngx_uint_t to);
static ngx_uint_t ngx_xmpp_db_commit(MYSQL *conn, ngx_xmpp_db_req_t *r);
static ngx_xmpp_db_conn_t *ngx_xmpp_db_get(ngx_xmpp_db_pool_t *p,
    ngx_xmpp_db_req_t *r);
static void ngx_xmpp_db_put(ngx_xmpp_db_pool_t *p, ngx_xmpp_db_req_t *r,
    ngx_xmpp_db_conn_t *dc, ngx_uint_t keep);
static void ngx_xmpp_db_close(ngx_xmpp_db_conn_t *dc);
static MYSQL_STMT *ngx_xmpp_db_cached(MYSQL *conn, ngx_xmpp_db_req_t *r,
    const char *sql, ngx_str_t *params, ngx_uint_t n);
static void ngx_xmpp_db_done_with(MYSQL_STMT *stmt);
static ngx_xmpp_db_cached_t *ngx_xmpp_db_prepare(ngx_xmpp_db_conn_t *dc,
    ngx_xmpp_db_req_t *r, const char *sql, size_t len);
static void ngx_xmpp_db_forget(ngx_xmpp_db_conn_t *dc,
    ngx_xmpp_db_cached_t *c);
static ngx_int_t ngx_xmpp_db_bind(MYSQL_STMT *stmt,
    ngx_xmpp_db_params_t *bp, ngx_str_t *params, ngx_uint_t n);
static MYSQL_STMT *ngx_xmpp_db_exec_stmt(MYSQL *conn, ngx_xmpp_db_req_t *r,
    const char *sql, ngx_str_t *params, ngx_uint_t n, ngx_uint_t direct);


ngx_int_t
ngx_xmpp_db_init_worker(ngx_cycle_t *cycle, ngx_xmpp_conf_t *xcf)
{
    ngx_xmpp_db_pool_t  *p;

    if (xcf->db_thread_pool == NULL) {
        return NGX_OK;
    }

    p = ngx_calloc(sizeof(ngx_xmpp_db_pool_t), cycle->log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        ngx_free(p);
        return NGX_ERROR;
    }

    /* strings of the configuration are NUL-terminated (ngx_xmpp_cstr) */
    p->opts.host = xcf->db_socket.len ? NULL
                                      : (const char *) xcf->db_host.data;
    p->opts.port = (unsigned) xcf->db_port;
    p->opts.socket = xcf->db_socket.len ? (const char *) xcf->db_socket.data
                                        : NULL;
    p->opts.user = (const char *) xcf->db_user.data;
    p->opts.password = (const char *) xcf->db_password.data;
    p->opts.database = (const char *) xcf->db_name.data;
    p->opts.timeout_s = (unsigned) ((xcf->db_timeout + 999) / 1000);
    /* nine tenths of the read timeout: the server's answer comes back
     * on a live connection, which stays in the pool */
    p->statement_ms = ngx_min(xcf->db_timeout - xcf->db_timeout / 10,
                              xcf->db_request_timeout);
    p->statement_ms = ngx_max(p->statement_ms, 1);

    ngx_xmpp_db_pool = p;

    return NGX_OK;
}


/*
 * At worker exit every thread of the pool has finished its task (nginx
 * joins them before exit_process), so the idle connections are ours.
 */
void
ngx_xmpp_db_exit_worker(ngx_cycle_t *cycle)
{
    ngx_uint_t           i, k;
    ngx_xmpp_db_pool_t  *p;

    p = ngx_xmpp_db_pool;
    if (p == NULL) {
        return;
    }

    for (k = 0; k < 2; k++) {
        for (i = 0; i < p->nidle[k]; i++) {
            ngx_xmpp_db_close(p->idle[k][i]);
        }
    }

    ngx_xmpp_db_pool = NULL;
    (void) pthread_mutex_destroy(&p->lock);
    ngx_free(p);
}


ngx_xmpp_db_req_t *
ngx_xmpp_db_create(ngx_xmpp_conf_t *xcf, size_t ctx_size, ngx_log_t *log)
{
    ngx_thread_task_t  *task;
    ngx_xmpp_db_req_t  *r;

    if (ngx_xmpp_db_pool == NULL) {
        return NULL;
    }

    task = ngx_calloc(sizeof(ngx_thread_task_t) + sizeof(ngx_xmpp_db_req_t)
                      + ctx_size, log);
    if (task == NULL) {
        return NULL;
    }

    r = (ngx_xmpp_db_req_t *) (task + 1);

    r->task = task;
    r->xcf = xcf;
    r->ctx = ctx_size ? (void *) (r + 1) : NULL;
    r->log = log;
    r->rc = NGX_XMPP_DB_ERROR;
    r->thread_rc = NGX_XMPP_DB_ERROR;

    task->ctx = r;
    task->handler = ngx_xmpp_db_thread;
    task->event.handler = ngx_xmpp_db_complete;
    task->event.data = r;
    task->event.log = ngx_cycle->log;

    return r;
}


/*
 * Posts r; done() follows exactly once unless the owner cancels first.
 * On NGX_ERROR (the queue is full) nothing was posted and the caller
 * still owns r: ngx_xmpp_db_destroy() it.
 */
ngx_int_t
ngx_xmpp_db_post(ngx_xmpp_db_req_t *r)
{
    ngx_msec_t  timeout;

    r->posted_at = ngx_current_msec;

    if (ngx_thread_task_post(r->xcf->db_thread_pool, r->task) != NGX_OK) {
        __atomic_add_fetch(&ngx_xmpp_db_pool->stats.rejected, 1,
                           __ATOMIC_RELAXED);
        return NGX_ERROR;
    }

    r->in_thread = 1;

    timeout = r->timeout ? r->timeout : r->xcf->db_request_timeout;

    r->timer.handler = ngx_xmpp_db_expire;
    r->timer.data = r;
    r->timer.log = ngx_cycle->log;
    r->timer.cancelable = 1;       /* never delays a graceful exit */
    ngx_add_timer(&r->timer, timeout);

    return NGX_OK;
}


/* the owner is gone: done() will not be called, cleanup() still is */
void
ngx_xmpp_db_cancel(ngx_xmpp_db_req_t *r)
{
    r->cancelled = 1;
    r->data = NULL;

    /* the owner's log (an HTTP connection's) may go with it */
    r->log = ngx_cycle->log;
}


/* a request that was never posted, or whose post failed */
void
ngx_xmpp_db_destroy(ngx_xmpp_db_req_t *r)
{
    if (r->cleanup) {
        r->cleanup(r);
    }

    ngx_free(r->task);
}


/* runs in a pool thread */
static void
ngx_xmpp_db_thread(void *data, ngx_log_t *log)
{
    ngx_xmpp_db_req_t *r = data;

    int                  rc;
    MYSQL               *conn;
    ngx_uint_t           keep;
    unsigned int         err;
    ngx_xmpp_db_conn_t  *dc;
    ngx_xmpp_db_pool_t  *p;

    static __thread unsigned  named;

    /* a name for top -H, perf and /proc/PID/task, once per thread */
    if (!named) {
        (void) pthread_setname_np(pthread_self(), "conclave-db");
        named = 1;
    }

    p = ngx_xmpp_db_pool;

    /* skipped when the timer answered while the task was queued */
    if (!ngx_xmpp_db_move(r, NGX_XMPP_DB_QUEUED, NGX_XMPP_DB_RUNNING)) {
        r->thread_rc = NGX_XMPP_DB_TIMEOUT;
        return;
    }

    dc = ngx_xmpp_db_get(p, r);
    if (dc == NULL) {
        r->thread_rc = NGX_XMPP_DB_UNAVAILABLE;
        return;
    }

    conn = dc->mysql;

    ngx_xmpp_db_current = dc;
    rc = r->run(conn, r);
    ngx_xmpp_db_current = NULL;

    if (rc == 0) {
        keep = ngx_xmpp_db_commit(conn, r);
        ngx_xmpp_db_put(p, r, dc, keep);
        return;
    }

    keep = 1;
    err = r->db_errno ? r->db_errno : mysql_errno(conn);

    /* a client-side error (CR_*): the connection is not reusable */
    if (err >= CR_MIN_ERROR && err <= CR_MAX_ERROR) {
        keep = 0;
    }

    if (r->err[0] == '\0') {
        ngx_cpystrn((u_char *) r->err, (u_char *) mysql_error(conn),
                    sizeof(r->err));
    }

    /* nothing of a failed request stays, and no snapshot lingers */
    if (keep && !r->readonly && mysql_rollback(conn) != 0) {
        keep = 0;
    }

    r->thread_rc = keep ? NGX_XMPP_DB_ERROR : NGX_XMPP_DB_UNAVAILABLE;
    __atomic_add_fetch(&p->stats.errors, 1, __ATOMIC_RELAXED);

    if (err == ER_STATEMENT_TIMEOUT) {
        __atomic_add_fetch(&p->stats.statement_timeouts, 1,
                           __ATOMIC_RELAXED);
    }

    ngx_xmpp_db_put(p, r, dc, keep);
}


static ngx_uint_t
ngx_xmpp_db_move(ngx_xmpp_db_req_t *r, ngx_uint_t from, ngx_uint_t to)
{
    return __atomic_compare_exchange_n(&r->state, &from, to, 0,
                                       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}


/*
 * Pool thread, after run() succeeded: commits unless the timer has
 * answered already, in which case the work is rolled back so that the
 * answer (_TIMEOUT) stays true.  Returns whether conn is reusable.
 */
static ngx_uint_t
ngx_xmpp_db_commit(MYSQL *conn, ngx_xmpp_db_req_t *r)
{
    unsigned int  err;

    if (!ngx_xmpp_db_move(r, NGX_XMPP_DB_RUNNING, NGX_XMPP_DB_COMMITTING)) {
        r->thread_rc = NGX_XMPP_DB_TIMEOUT;

        if (r->readonly) {
            /* autocommit, and nothing written: nothing to undo */
            ngx_cpystrn((u_char *) r->err,
                        (u_char *) "answered as timed out (read only)",
                        sizeof(r->err));
            return 1;
        }

        ngx_cpystrn((u_char *) r->err,
                    (u_char *) "answered as timed out: rolled back",
                    sizeof(r->err));
        return mysql_rollback(conn) == 0;
    }

    if (r->readonly) {
        r->thread_rc = NGX_XMPP_DB_OK;
        return 1;
    }

    if (mysql_commit(conn) == 0) {
        r->thread_rc = NGX_XMPP_DB_OK;
        return 1;
    }

    err = mysql_errno(conn);
    __atomic_add_fetch(&ngx_xmpp_db_pool->stats.errors, 1, __ATOMIC_RELAXED);

    if (err >= CR_MIN_ERROR && err <= CR_MAX_ERROR) {
        /* the server may have committed before the connection went */
        (void) ngx_snprintf((u_char *) r->err, sizeof(r->err) - 1,
                            "commit outcome unknown: %s%Z",
                            mysql_error(conn));
        r->thread_rc = NGX_XMPP_DB_UNAVAILABLE;
        return 0;
    }

    ngx_cpystrn((u_char *) r->err, (u_char *) mysql_error(conn),
                sizeof(r->err));
    r->thread_rc = NGX_XMPP_DB_ERROR;

    return mysql_rollback(conn) == 0;
}


static ngx_xmpp_db_conn_t *
ngx_xmpp_db_get(ngx_xmpp_db_pool_t *p, ngx_xmpp_db_req_t *r)
{
    char                 sql[64];
    MYSQL               *conn;
    ngx_uint_t           k;
    ngx_msec_t           now, down, since;
    ngx_xmpp_db_conn_t  *dc;

    /* ngx_current_msec is read without the event loop's update: good
     * enough for a one-second circuit and the idle check */
    now = ngx_current_msec;
    k = r->readonly;

    for ( ;; ) {
        dc = NULL;
        since = now;

        (void) pthread_mutex_lock(&p->lock);

        if (p->nidle[k]) {
            p->nidle[k]--;
            dc = p->idle[k][p->nidle[k]];
            since = p->idle_since[k][p->nidle[k]];
        }

        down = p->down_until;

        (void) pthread_mutex_unlock(&p->lock);

        if (dc == NULL) {
            break;
        }

        /*
         * A connection that waited in the pool may have been closed by
         * a restarted or timed-out server; its first statement would
         * fail, whatever the request.  A ping finds out first.
         */
        if ((ngx_msec_int_t) (now - since) < NGX_XMPP_DB_PING_MS
            || mysql_ping(dc->mysql) == 0)
        {
            return dc;
        }

        ngx_xmpp_db_close(dc);
    }

    if (down && (ngx_msec_int_t) (down - now) > 0) {
        ngx_cpystrn((u_char *) r->err, (u_char *) "database unavailable",
                    sizeof(r->err));
        return NULL;
    }

    conn = caud_db_connect(&p->opts, r->err, sizeof(r->err));

    (void) pthread_mutex_lock(&p->lock);
    p->down_until = conn ? 0 : now + NGX_XMPP_DB_RETRY_MS;
    (void) pthread_mutex_unlock(&p->lock);

    if (conn == NULL) {
        __atomic_add_fetch(&p->stats.connect_errors, 1, __ATOMIC_RELAXED);
        return NULL;
    }

    /*
     * One transaction per request, committed by ngx_xmpp_db_commit();
     * a readonly request's connection commits each statement itself.
     * No statement outlives the wait for it (see the top of the file).
     */
    (void) ngx_snprintf((u_char *) sql, sizeof(sql) - 1,
                        "SET SESSION max_statement_time = %M.%03M%Z",
                        p->statement_ms / 1000, p->statement_ms % 1000);

    if (mysql_autocommit(conn, k) != 0 || mysql_query(conn, sql) != 0) {
        ngx_cpystrn((u_char *) r->err, (u_char *) mysql_error(conn),
                    sizeof(r->err));
        mysql_close(conn);
        __atomic_add_fetch(&p->stats.connect_errors, 1, __ATOMIC_RELAXED);
        return NULL;
    }

    /* not r->log: see ngx_xmpp_db_rows() */
    dc = ngx_calloc(sizeof(ngx_xmpp_db_conn_t), ngx_cycle->log);
    if (dc == NULL) {
        ngx_cpystrn((u_char *) r->err, (u_char *) "out of memory",
                    sizeof(r->err));
        mysql_close(conn);
        return NULL;
    }

    dc->mysql = conn;

    __atomic_add_fetch(&p->stats.connects, 1, __ATOMIC_RELAXED);

    return dc;
}


static void
ngx_xmpp_db_put(ngx_xmpp_db_pool_t *p, ngx_xmpp_db_req_t *r,
    ngx_xmpp_db_conn_t *dc, ngx_uint_t keep)
{
    ngx_uint_t  k;

    k = r->readonly;

    if (keep) {
        (void) pthread_mutex_lock(&p->lock);

        if (p->nidle[k] < NGX_XMPP_DB_POOL_MAX) {
            p->idle_since[k][p->nidle[k]] = ngx_current_msec;
            p->idle[k][p->nidle[k]++] = dc;
            dc = NULL;
        }

        (void) pthread_mutex_unlock(&p->lock);
    }

    if (dc) {
        ngx_xmpp_db_close(dc);
    }
}


/* the statements first: each is freed on the client side only by
 * mysql_stmt_close(), also once its connection is gone */
static void
ngx_xmpp_db_close(ngx_xmpp_db_conn_t *dc)
{
    ngx_uint_t  i;

    for (i = 0; i < dc->n; i++) {
        (void) mysql_stmt_close(dc->cache[i].stmt);
        ngx_free(dc->cache[i].sql);
    }

    mysql_close(dc->mysql);
    ngx_free(dc);
}


/* back on the event loop: the thread is done with r */
static void
ngx_xmpp_db_complete(ngx_event_t *ev)
{
    ngx_xmpp_db_req_t *r = ev->data;

    ngx_msec_t           ms;
    ngx_xmpp_db_pool_t  *p;

    r->in_thread = 0;
    r->rc = r->thread_rc;

    if (r->timer.timer_set) {
        ngx_del_timer(&r->timer);
    }

    p = ngx_xmpp_db_pool;

    if (p) {
        ms = ngx_current_msec - r->posted_at;
        p->stats.requests++;
        p->stats.total_ms += ms;

        if (ms > p->stats.max_ms) {
            p->stats.max_ms = ms;
        }
    }

    if (!r->answered && !r->cancelled && r->done) {
        r->done(r);

    } else if (r->answered) {
        ngx_log_error(NGX_LOG_INFO, r->log, 0,
                      "xmpp: database request ended after its timeout: %s",
                      r->err[0] ? r->err : "not started");
    }

    ngx_xmpp_db_release(r);
}


/*
 * The thread is late: answer the owner now unless the thread is
 * committing (its outcome is then worth the wait); free r when the
 * thread is done.
 */
static void
ngx_xmpp_db_expire(ngx_event_t *ev)
{
    ngx_xmpp_db_req_t *r = ev->data;

    if (ngx_xmpp_db_pool) {
        ngx_xmpp_db_pool->stats.timeouts++;
    }

    if (!ngx_xmpp_db_move(r, NGX_XMPP_DB_QUEUED, NGX_XMPP_DB_ABANDONED)
        && !ngx_xmpp_db_move(r, NGX_XMPP_DB_RUNNING, NGX_XMPP_DB_ABANDONED))
    {
        ngx_log_error(NGX_LOG_WARN, r->log, 0,
                      "xmpp: database request timed out while committing, "
                      "waiting for the outcome");
        return;
    }

    ngx_log_error(NGX_LOG_WARN, r->log, 0,
                  "xmpp: database request timed out, not committed");

    r->answered = 1;

    if (!r->cancelled && r->done) {
        r->rc = NGX_XMPP_DB_TIMEOUT;
        r->done(r);
    }

    /* answered: the owner's log (an HTTP connection's, freed with it)
     * is not for the completion's line (ASan: test_console's frozen
     * database) */
    r->log = ngx_cycle->log;

    /* the completion event frees r when the thread returns */
}


static void
ngx_xmpp_db_release(ngx_xmpp_db_req_t *r)
{
    if (r->cleanup) {
        r->cleanup(r);
    }

    ngx_free(r->task);
}


const ngx_xmpp_db_stats_t *
ngx_xmpp_db_stats(void)
{
    return ngx_xmpp_db_pool ? &ngx_xmpp_db_pool->stats : NULL;
}


/*
 * Helpers for run() functions: a statement with every parameter bound
 * as a string (MYSQL_TYPE_STRING, NULL for a NULL data pointer) and
 * executed.  Returns the statement, or NULL with r->err set.
 */
MYSQL_STMT *
ngx_xmpp_db_exec(MYSQL *conn, ngx_xmpp_db_req_t *r, const char *sql,
    ngx_str_t *params, ngx_uint_t n)
{
    return ngx_xmpp_db_exec_stmt(conn, r, sql, params, n, 0);
}


/*
 * The same in one round trip: Connector/C's
 * mariadb_stmt_execute_direct() sends the prepare and the execute
 * together (MariaDB 10.2 and later), where a prepared statement waits
 * for the prepare's answer first.  For a statement run once, as a page
 * of history is: under load each round trip is a wait for the CPU.
 */
MYSQL_STMT *
ngx_xmpp_db_exec_direct(MYSQL *conn, ngx_xmpp_db_req_t *r, const char *sql,
    ngx_str_t *params, ngx_uint_t n)
{
    return ngx_xmpp_db_exec_stmt(conn, r, sql, params, n, 1);
}


static MYSQL_STMT *
ngx_xmpp_db_exec_stmt(MYSQL *conn, ngx_xmpp_db_req_t *r, const char *sql,
    ngx_str_t *params, ngx_uint_t n, ngx_uint_t direct)
{
    unsigned int          count;
    MYSQL_STMT           *stmt;
    ngx_xmpp_db_params_t  bp;

    if (n > NGX_XMPP_DB_PARAMS_MAX) {
        ngx_cpystrn((u_char *) r->err, (u_char *) "too many parameters",
                    sizeof(r->err));
        return NULL;
    }

    stmt = mysql_stmt_init(conn);
    if (stmt == NULL) {
        goto failed_conn;
    }

    /* direct: the parameters are bound before the server has seen them */
    count = (unsigned int) n;

    if (direct
        ? mysql_stmt_attr_set(stmt, STMT_ATTR_PREBIND_PARAMS, &count) != 0
        : mysql_stmt_prepare(stmt, sql, (unsigned long) ngx_strlen(sql)) != 0)
    {
        goto failed;
    }

    if (ngx_xmpp_db_bind(stmt, &bp, params, n) != NGX_OK) {
        goto failed;
    }

    if ((direct ? mariadb_stmt_execute_direct(stmt, sql, ngx_strlen(sql))
                : mysql_stmt_execute(stmt))
        != 0)
    {
        goto failed;
    }

    return stmt;

failed:

    r->db_errno = mysql_stmt_errno(stmt);
    ngx_cpystrn((u_char *) r->err, (u_char *) mysql_stmt_error(stmt),
                sizeof(r->err));
    (void) mysql_stmt_close(stmt);
    return NULL;

failed_conn:

    r->db_errno = mysql_errno(conn);
    ngx_cpystrn((u_char *) r->err, (u_char *) mysql_error(conn),
                sizeof(r->err));
    return NULL;
}


/*
 * Every parameter as a string, NULL for a NULL data pointer.  bp is
 * the caller's: Connector/C reads the lengths through their pointers
 * when it executes.
 */
static ngx_int_t
ngx_xmpp_db_bind(MYSQL_STMT *stmt, ngx_xmpp_db_params_t *bp,
    ngx_str_t *params, ngx_uint_t n)
{
    ngx_uint_t  i;

    if (n == 0) {
        return NGX_OK;
    }

    ngx_memzero(bp->bind, sizeof(bp->bind));

    for (i = 0; i < n; i++) {
        bp->lens[i] = (unsigned long) params[i].len;
        bp->bind[i].buffer_type = params[i].data ? MYSQL_TYPE_STRING
                                                 : MYSQL_TYPE_NULL;
        bp->bind[i].buffer = params[i].data;
        bp->bind[i].buffer_length = bp->lens[i];
        bp->bind[i].length = &bp->lens[i];
    }

    return mysql_stmt_bind_param(stmt, bp->bind) == 0 ? NGX_OK : NGX_ERROR;
}


/*
 * Calls row() for every row of an executed statement, with each column
 * as a string (data NULL for SQL NULL; numbers as decimal text).  The
 * strings live until row() returns.  Returns 0, or -1 with r->err set
 * (row() returning -1 stops the loop and is passed on).
 */
int
ngx_xmpp_db_rows(MYSQL_STMT *stmt, ngx_xmpp_db_req_t *r,
    ngx_xmpp_db_row_pt row)
{
    int             rc, my_true;
    u_char         *buf, *p;
    size_t          size;
    my_bool        *nulls;
    ngx_str_t      *cols;
    ngx_uint_t      i, n;
    MYSQL_RES      *meta;
    MYSQL_BIND     *bind;
    MYSQL_FIELD    *f;
    unsigned long  *lens;

    my_true = 1;
    buf = NULL;
    meta = NULL;
    rc = -1;

    if (mysql_stmt_attr_set(stmt, STMT_ATTR_UPDATE_MAX_LENGTH, &my_true)
        != 0
        || mysql_stmt_store_result(stmt) != 0)
    {
        goto failed;
    }

    meta = mysql_stmt_result_metadata(stmt);
    if (meta == NULL) {
        goto failed;
    }

    n = mysql_num_fields(meta);
    f = mysql_fetch_fields(meta);

    size = n * (sizeof(MYSQL_BIND) + sizeof(ngx_str_t) + sizeof(my_bool)
                + sizeof(unsigned long));

    for (i = 0; i < n; i++) {
        size += f[i].max_length + 1;
    }

    /*
     * Not r->log: this is the pool thread, and the owner's log (its
     * connection's) goes with the owner when it leaves meanwhile; the
     * event loop's ngx_xmpp_db_cancel() swaps r->log with no lock.
     * Debian's nginx is built --with-debug, so ngx_alloc() reads the
     * log even when malloc succeeds (a sign-in closed at once: SIGSEGV
     * in ngx_log_error_core from the blocklist load).
     */
    buf = ngx_calloc(size, ngx_cycle->log);
    if (buf == NULL) {
        ngx_cpystrn((u_char *) r->err, (u_char *) "out of memory",
                    sizeof(r->err));
        goto done;
    }

    bind = (MYSQL_BIND *) buf;
    cols = (ngx_str_t *) (bind + n);
    lens = (unsigned long *) (cols + n);
    nulls = (my_bool *) (lens + n);
    p = (u_char *) (nulls + n);

    for (i = 0; i < n; i++) {
        bind[i].buffer_type = MYSQL_TYPE_STRING;
        bind[i].buffer = p;
        bind[i].buffer_length = f[i].max_length + 1;
        bind[i].length = &lens[i];
        bind[i].is_null = &nulls[i];
        p += f[i].max_length + 1;
    }

    if (mysql_stmt_bind_result(stmt, bind) != 0) {
        goto failed;
    }

    for ( ;; ) {
        rc = mysql_stmt_fetch(stmt);

        if (rc == MYSQL_NO_DATA) {
            rc = 0;
            break;
        }

        if (rc != 0 && rc != MYSQL_DATA_TRUNCATED) {
            rc = -1;
            goto failed;
        }

        for (i = 0; i < n; i++) {
            cols[i].data = nulls[i] ? NULL : bind[i].buffer;
            cols[i].len = nulls[i] ? 0 : lens[i];
        }

        if (row(r, cols, n) != 0) {
            rc = -1;
            break;
        }
    }

    goto done;

failed:

    r->db_errno = mysql_stmt_errno(stmt);
    ngx_cpystrn((u_char *) r->err, (u_char *) mysql_stmt_error(stmt),
                sizeof(r->err));
    rc = -1;

done:

    if (meta) {
        mysql_free_result(meta);
    }

    ngx_free(buf);

    return rc;
}


/*
 * For run(): one statement that returns no rows, closed again;
 * affected, if not NULL, gets mysql_stmt_affected_rows.  0, or -1 with
 * r->err set.  These helpers and ngx_xmpp_db_select() run each
 * statement once, so they send its prepare and its execute in one
 * round trip (ngx_xmpp_db_exec_direct): a sign-in ran ten statements
 * at two round trips each (docs/benchmarks.md, "Sign-in cost").
 */
int
ngx_xmpp_db_stmt(struct st_mysql *conn, ngx_xmpp_db_req_t *r,
    const char *sql, ngx_str_t *params, ngx_uint_t n, uint64_t *affected)
{
    MYSQL_STMT  *stmt;

    stmt = ngx_xmpp_db_cached(conn, r, sql, params, n);
    if (stmt == NULL) {
        return -1;
    }

    if (affected) {
        *affected = (uint64_t) mysql_stmt_affected_rows(stmt);
    }

    /* rows nobody reads are taken off the wire before the next one */
    if (mysql_stmt_field_count(stmt) > 0) {
        (void) mysql_stmt_store_result(stmt);
    }

    ngx_xmpp_db_done_with(stmt);

    return 0;
}


/* for run(): one query in one round trip, its rows to row(), closed */
int
ngx_xmpp_db_select(struct st_mysql *conn, ngx_xmpp_db_req_t *r,
    const char *sql, ngx_str_t *params, ngx_uint_t n, ngx_xmpp_db_row_pt row)
{
    int          rc;
    MYSQL_STMT  *stmt;

    stmt = ngx_xmpp_db_cached(conn, r, sql, params, n);
    if (stmt == NULL) {
        return -1;
    }

    rc = ngx_xmpp_db_rows(stmt, r, row);
    ngx_xmpp_db_done_with(stmt);

    return rc;
}


/*
 * The connection's prepared statement for sql, executed with params:
 * prepared (and the least recently used one closed) on a miss.  A
 * statement that fails is closed and forgotten, so that a broken one
 * is prepared afresh.  Outside a pool thread's request (no cache),
 * prepare and execute go in one round trip and the statement is
 * closed after use.
 */
static MYSQL_STMT *
ngx_xmpp_db_cached(MYSQL *conn, ngx_xmpp_db_req_t *r, const char *sql,
    ngx_str_t *params, ngx_uint_t n)
{
    size_t                 len;
    ngx_uint_t             i;
    MYSQL_STMT            *stmt;
    ngx_xmpp_db_conn_t    *dc;
    ngx_xmpp_db_cached_t  *c;
    ngx_xmpp_db_params_t   bp;

    dc = ngx_xmpp_db_current;

    if (dc == NULL || dc->mysql != conn || n > NGX_XMPP_DB_PARAMS_MAX) {
        return ngx_xmpp_db_exec_direct(conn, r, sql, params, n);
    }

    len = ngx_strlen(sql);
    c = NULL;

    for (i = 0; i < dc->n; i++) {
        if (dc->cache[i].len == len
            && ngx_memcmp(dc->cache[i].sql, sql, len) == 0)
        {
            c = &dc->cache[i];
            break;
        }
    }

    if (c == NULL) {
        c = ngx_xmpp_db_prepare(dc, r, sql, len);
        if (c == NULL) {
            return NULL;
        }
    }

    c->used = ++dc->tick;
    stmt = c->stmt;

    if (ngx_xmpp_db_bind(stmt, &bp, params, n) == NGX_OK
        && mysql_stmt_execute(stmt) == 0)
    {
        return stmt;
    }

    r->db_errno = mysql_stmt_errno(stmt);
    ngx_cpystrn((u_char *) r->err, (u_char *) mysql_stmt_error(stmt),
                sizeof(r->err));

    ngx_xmpp_db_forget(dc, c);

    return NULL;
}


/* a new entry of dc's cache for sql, prepared; NULL with r->err set */
static ngx_xmpp_db_cached_t *
ngx_xmpp_db_prepare(ngx_xmpp_db_conn_t *dc, ngx_xmpp_db_req_t *r,
    const char *sql, size_t len)
{
    u_char                *copy;
    ngx_uint_t             i;
    MYSQL_STMT            *stmt;
    ngx_xmpp_db_cached_t  *c;

    /* not r->log: see ngx_xmpp_db_rows() */
    copy = ngx_alloc(len, ngx_cycle->log);
    if (copy == NULL) {
        ngx_cpystrn((u_char *) r->err, (u_char *) "out of memory",
                    sizeof(r->err));
        return NULL;
    }

    stmt = mysql_stmt_init(dc->mysql);
    if (stmt == NULL) {
        r->db_errno = mysql_errno(dc->mysql);
        ngx_cpystrn((u_char *) r->err, (u_char *) mysql_error(dc->mysql),
                    sizeof(r->err));
        ngx_free(copy);
        return NULL;
    }

    if (mysql_stmt_prepare(stmt, sql, (unsigned long) len) != 0) {
        r->db_errno = mysql_stmt_errno(stmt);
        ngx_cpystrn((u_char *) r->err, (u_char *) mysql_stmt_error(stmt),
                    sizeof(r->err));
        (void) mysql_stmt_close(stmt);
        ngx_free(copy);
        return NULL;
    }

    if (dc->n == NGX_XMPP_DB_STMT_CACHE) {
        c = &dc->cache[0];

        for (i = 1; i < dc->n; i++) {
            if (dc->cache[i].used < c->used) {
                c = &dc->cache[i];
            }
        }

        ngx_xmpp_db_forget(dc, c);
    }

    c = &dc->cache[dc->n++];
    c->stmt = stmt;
    c->sql = ngx_cpymem(copy, sql, len) - len;
    c->len = len;

    return c;
}


/* closes c's statement and takes it out of dc's cache */
static void
ngx_xmpp_db_forget(ngx_xmpp_db_conn_t *dc, ngx_xmpp_db_cached_t *c)
{
    (void) mysql_stmt_close(c->stmt);
    ngx_free(c->sql);

    *c = dc->cache[--dc->n];
}


/* after ngx_xmpp_db_cached(): a cached statement stays prepared */
static void
ngx_xmpp_db_done_with(MYSQL_STMT *stmt)
{
    ngx_uint_t           i;
    ngx_xmpp_db_conn_t  *dc;

    dc = ngx_xmpp_db_current;

    if (dc) {
        for (i = 0; i < dc->n; i++) {
            if (dc->cache[i].stmt == stmt) {
                (void) mysql_stmt_free_result(stmt);
                return;
            }
        }
    }

    (void) mysql_stmt_close(stmt);
}
