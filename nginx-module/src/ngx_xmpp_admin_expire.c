
/*
 * Expiry of the console's export zips (conclave_admin_export_keep,
 * docs/console.md "Exports").  An export is a copy of the record made
 * for someone to download: it must not pile up in
 * conclave_admin_export_dir forever, holding message bodies outside
 * retention and legal holds.  The record itself is untouched: the chain
 * in MariaDB is the original, and an export can be made again.
 *
 * One worker (ngx_worker 0) runs a timer every half keep period, at
 * most every 10 minutes.  Each tick is one request through the
 * database adapter (ngx_xmpp_db.c): in a pool thread it locks up to
 * NGX_XMPP_ADMIN_EXPIRE_BATCH finished or failed jobs of this node older
 * than the keep period, removes their zip and directory, and marks the
 * rows "expired"; the adapter commits.  A rolled-back tick leaves files
 * already removed behind rows not yet marked: the next tick marks them
 * (removal is idempotent).  A download of an expired export answers
 * 410 Gone; the row stays as the listing's history, with its audit
 * records in the chain.  Running jobs are never touched.
 */


#include "ngx_xmpp_admin.h"

#include <mysql.h>
#include <errno.h>
#include <stdio.h>
#include <unistd.h>


#define NGX_XMPP_ADMIN_EXPIRE_BATCH   16
#define NGX_XMPP_ADMIN_EXPIRE_MAX_MS  (10 * 60 * 1000)


typedef struct {
    char                   cutoff[24];     /* microseconds, decimal */
    char                   node[65];
    ngx_uint_t             n;
    ngx_uint_t             removed;        /* files actually unlinked */
    ngx_uint_t             failed;         /* unlink errors other than
                                              ENOENT: row left alone */
    char                   id[NGX_XMPP_ADMIN_EXPIRE_BATCH][17];
    char                   file[NGX_XMPP_ADMIN_EXPIRE_BATCH][256];
} ngx_xmpp_admin_expire_t;


static void ngx_xmpp_admin_expire_tick(ngx_event_t *ev);
static int ngx_xmpp_admin_expire_run(MYSQL *conn, ngx_xmpp_db_req_t *dr);
static void ngx_xmpp_admin_expire_done(ngx_xmpp_db_req_t *dr);


static ngx_event_t        ngx_xmpp_admin_expire_ev;
static ngx_connection_t   ngx_xmpp_admin_expire_dumb;
static ngx_xmpp_conf_t   *ngx_xmpp_admin_expire_xcf;
static ngx_uint_t         ngx_xmpp_admin_expire_busy;


static ngx_msec_t
ngx_xmpp_admin_expire_period(ngx_xmpp_conf_t *xcf)
{
    ngx_msec_t  ms;

    ms = (ngx_msec_t) xcf->admin_export_keep * 500;

    return ngx_max(ngx_min(ms, NGX_XMPP_ADMIN_EXPIRE_MAX_MS), 1000);
}


void
ngx_xmpp_admin_expire_init_worker(ngx_cycle_t *cycle, ngx_xmpp_conf_t *xcf)
{
    if (xcf->admin_zone == NULL || xcf->admin_export_keep <= 0
        || ngx_worker != 0)
    {
        return;
    }

    ngx_xmpp_admin_expire_xcf = xcf;
    ngx_xmpp_admin_expire_dumb.fd = (ngx_socket_t) -1;
    ngx_xmpp_admin_expire_ev.data = &ngx_xmpp_admin_expire_dumb;
    ngx_xmpp_admin_expire_ev.handler = ngx_xmpp_admin_expire_tick;
    ngx_xmpp_admin_expire_ev.log = cycle->log;
    ngx_xmpp_admin_expire_ev.cancelable = 1;

    ngx_add_timer(&ngx_xmpp_admin_expire_ev,
                  ngx_xmpp_admin_expire_period(xcf));
}


void
ngx_xmpp_admin_expire_exit_worker(void)
{
    if (ngx_xmpp_admin_expire_ev.timer_set) {
        ngx_del_timer(&ngx_xmpp_admin_expire_ev);
    }
}


static void
ngx_xmpp_admin_expire_tick(ngx_event_t *ev)
{
    int64_t                   cutoff;
    ngx_xmpp_conf_t          *xcf;
    ngx_xmpp_db_req_t        *dr;
    ngx_xmpp_admin_expire_t  *e;

    xcf = ngx_xmpp_admin_expire_xcf;

    ngx_add_timer(ev, ngx_xmpp_admin_expire_period(xcf));

    if (ngx_xmpp_admin_expire_busy || ngx_exiting || ngx_terminate) {
        return;
    }

    dr = ngx_xmpp_db_create(xcf, sizeof(ngx_xmpp_admin_expire_t), ev->log);
    if (dr == NULL) {
        return;
    }

    e = dr->ctx;
    cutoff = ((int64_t) ngx_time() - (int64_t) xcf->admin_export_keep)
             * 1000000;
    ngx_snprintf((u_char *) e->cutoff, sizeof(e->cutoff) - 1, "%L%Z",
                 cutoff);
    ngx_snprintf((u_char *) e->node, sizeof(e->node) - 1, "%V%Z",
                 &xcf->audit_node);

    dr->run = ngx_xmpp_admin_expire_run;
    dr->done = ngx_xmpp_admin_expire_done;
    dr->data = xcf;

    if (ngx_xmpp_db_post(dr) != NGX_OK) {
        ngx_xmpp_db_destroy(dr);
        return;
    }

    ngx_xmpp_admin_expire_busy = 1;
}


static int
ngx_xmpp_admin_expire_row(ngx_xmpp_db_req_t *dr, ngx_str_t *cols,
    ngx_uint_t n)
{
    ngx_xmpp_admin_expire_t  *e;

    e = dr->ctx;

    if (n != 2 || cols[0].len != 16 || e->n == NGX_XMPP_ADMIN_EXPIRE_BATCH)
    {
        return 0;
    }

    ngx_memcpy(e->id[e->n], cols[0].data, 16);
    e->id[e->n][16] = '\0';

    e->file[e->n][0] = '\0';

    if (cols[1].data && cols[1].len < sizeof(e->file[0])) {
        ngx_memcpy(e->file[e->n], cols[1].data, cols[1].len);
        e->file[e->n][cols[1].len] = '\0';
    }

    e->n++;

    return 0;
}


/* the job's zip and directory; 0 when both are gone */
static int
ngx_xmpp_admin_expire_files(ngx_xmpp_conf_t *xcf, ngx_xmpp_admin_expire_t *e,
    ngx_uint_t i)
{
    char  path[NGX_XMPP_ADMIN_PATH_MAX + 300];

    if (e->file[i][0] && ngx_xmpp_admin_safe_name(e->file[i]) == NGX_OK) {
        snprintf(path, sizeof(path), "%.*s/%s/%s",
                 (int) xcf->admin_export_dir.len,
                 (char *) xcf->admin_export_dir.data, e->id[i], e->file[i]);

        if (unlink(path) == 0) {
            e->removed++;

        } else if (errno != ENOENT) {
            return -1;
        }
    }

    snprintf(path, sizeof(path), "%.*s/%s", (int) xcf->admin_export_dir.len,
             (char *) xcf->admin_export_dir.data, e->id[i]);

    if (rmdir(path) != 0 && errno != ENOENT) {
        return -1;
    }

    return 0;
}


/* a pool thread: lock, remove, mark; the adapter commits */
static int
ngx_xmpp_admin_expire_run(MYSQL *conn, ngx_xmpp_db_req_t *dr)
{
    int                       rc;
    ngx_str_t                 v[2];
    ngx_uint_t                i;
    MYSQL_STMT               *stmt;
    ngx_xmpp_admin_expire_t  *e;

    e = dr->ctx;

    v[0].data = (u_char *) e->node;
    v[0].len = ngx_strlen(e->node);
    v[1].data = (u_char *) e->cutoff;
    v[1].len = ngx_strlen(e->cutoff);

    rc = ngx_xmpp_db_select(conn, dr,
        "SELECT id, file FROM console_export"
        " WHERE state IN ('done', 'failed') AND node = ?"
        " AND COALESCE(finished_us, created_us) < ?"
        " ORDER BY created_us LIMIT 16 FOR UPDATE", v, 2,
        ngx_xmpp_admin_expire_row);

    for (i = 0; rc == 0 && i < e->n; i++) {
        if (ngx_xmpp_admin_expire_files(dr->data, e, i) != 0) {
            e->failed++;
            continue;
        }

        v[0].data = (u_char *) e->id[i];
        v[0].len = 16;

        stmt = ngx_xmpp_db_exec(conn, dr,
            "UPDATE console_export SET state = 'expired', file = NULL"
            " WHERE id = ?", v, 1);
        if (stmt == NULL) {
            return -1;
        }

        (void) mysql_stmt_close(stmt);
    }

    return rc;
}


static void
ngx_xmpp_admin_expire_done(ngx_xmpp_db_req_t *dr)
{
    ngx_xmpp_admin_expire_t  *e;

    ngx_xmpp_admin_expire_busy = 0;

    if (dr->rc != NGX_XMPP_DB_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "xmpp: console: export expiry failed (%ui): %s",
                      dr->rc, dr->err);
        return;
    }

    e = dr->ctx;

    if (e->n) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "xmpp: console: %ui export%s expired, %ui file%s "
                      "removed", e->n - e->failed,
                      e->n - e->failed == 1 ? "" : "s", e->removed,
                      e->removed == 1 ? "" : "s");
    }

    if (e->failed) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "xmpp: console: %ui expired export%s could not be "
                      "removed from \"%V\"", e->failed,
                      e->failed == 1 ? "" : "s",
                      &((ngx_xmpp_conf_t *) dr->data)->admin_export_dir);
    }
}
