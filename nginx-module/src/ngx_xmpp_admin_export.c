
/*
 * The console's export jobs (issue 8 item 5, docs/console.md
 * "Exports"): POST exports starts one, GET exports lists them with
 * their progress, GET download?id= streams a finished zip.
 *
 * A job is a row of console_export (migration 010) and a task in the
 * export thread pool (conclave_admin_export_thread_pool): the thread
 * runs caud_export() (audit/src/caud_export.c, the engine conclavectl
 * uses), which blocks on MariaDB and the disk, never the event loop.
 * The thread updates done/total in the row at most every
 * NGX_XMPP_ADMIN_PROGRESS_MS (caud_export reports once per batch of
 * records), so every worker's listing shows the same progress.  The
 * zip is written into conclave_admin_export_dir/<id>/: the id is 16
 * random hex digits drawn here, and a download looks it up in the
 * table; nothing the client sends ever becomes part of a path.
 *
 * A row still "running" whose worker is gone, or whose master is not
 * the one running now, was interrupted by a crash or a restart: the
 * next listing marks it "failed".  Starting, finishing and downloading
 * are audit records (issue 8 item 4).
 */


#include "ngx_xmpp_admin.h"

#include <mysql.h>
#include <signal.h>
#include <sys/stat.h>

#include <openssl/rand.h>

#include "caud_comply.h"


#define NGX_XMPP_ADMIN_JOB_ID        16
#define NGX_XMPP_ADMIN_PROGRESS_MS   500
#define NGX_XMPP_ADMIN_JID_MAX       255

#define NGX_XMPP_ADMIN_X_INSERT      0
#define NGX_XMPP_ADMIN_X_LIST        1
#define NGX_XMPP_ADMIN_X_FILE        2
#define NGX_XMPP_ADMIN_X_FAIL        3


/* one export: the request's choices, then what the thread found */
typedef struct {
    ngx_xmpp_conf_t       *xcf;
    ngx_log_t             *log;
    char                   id[NGX_XMPP_ADMIN_JOB_ID + 1];
    char                   actor[NGX_XMPP_ADMIN_USER_MAX + 256];
    char                   dir[NGX_XMPP_ADMIN_PATH_MAX + 64];
    char                   user[NGX_XMPP_ADMIN_JID_MAX + 1];
    char                   room[NGX_XMPP_ADMIN_JID_MAX + 1];
    caud_format_e          format;
    int64_t                since_us;
    int64_t                until_us;
    caud_db_opts_t         db;

    /* the thread's */
    MYSQL                 *m;
    int                    rc;
    uint64_t               size;
    uint64_t               records;
    int64_t                last_ms;
    char                   file[256];
    char                   err[512];
} ngx_xmpp_admin_job_t;


/* a statement of the event loop's side, through ngx_xmpp_db.c */
typedef struct {
    ngx_uint_t             kind;
    ngx_xmpp_admin_job_t  *job;           /* INSERT: posted when done */
    char                   id[NGX_XMPP_ADMIN_JOB_ID + 1];
    char                   node[65];
    ngx_pid_t              master;
    json_t                *rows;
    ngx_uint_t             found;
    ngx_uint_t             interrupted;
    char                   state[16];
    char                   file[256];
    ngx_str_t              params[8];
    u_char                 str[2048];
} ngx_xmpp_admin_x_t;


static ngx_int_t ngx_xmpp_admin_export_start(ngx_xmpp_admin_ctx_t *ctx,
    json_t *body);
static ngx_int_t ngx_xmpp_admin_export_parse(ngx_xmpp_admin_ctx_t *ctx,
    json_t *body, ngx_xmpp_admin_job_t *job);
static ngx_int_t ngx_xmpp_admin_x_post(ngx_xmpp_admin_ctx_t *ctx,
    ngx_xmpp_db_req_t *dr);
static int ngx_xmpp_admin_x_run(MYSQL *conn, ngx_xmpp_db_req_t *dr);
static void ngx_xmpp_admin_x_done(ngx_xmpp_db_req_t *dr);
static void ngx_xmpp_admin_x_cleanup(ngx_xmpp_db_req_t *dr);
static ngx_int_t ngx_xmpp_admin_job_post(ngx_xmpp_admin_job_t *job);
static void ngx_xmpp_admin_job_thread(void *data, ngx_log_t *log);
static void ngx_xmpp_admin_job_done(ngx_event_t *ev);
static ngx_int_t ngx_xmpp_admin_send_zip(ngx_xmpp_admin_ctx_t *ctx,
    ngx_xmpp_admin_x_t *x);


/* jobs of this worker whose thread has not finished */
static ngx_uint_t  ngx_xmpp_admin_jobs;


/* ------------------------------------------------------------------ */
/* configuration */

char *
ngx_xmpp_admin_export_conf(ngx_conf_t *cf, ngx_xmpp_conf_t *xcf)
{
    if (xcf->admin_export_dir.len == 0) {
        ngx_str_set(&xcf->admin_export_dir, NGX_XMPP_ADMIN_EXPORT_DIR);
    }

    if (ngx_conf_full_name(cf->cycle, &xcf->admin_export_dir, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (xcf->admin_export_dir.len > NGX_XMPP_ADMIN_PATH_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"conclave_admin_export_dir\" is too long");
        return NGX_CONF_ERROR;
    }

    if (xcf->admin_export_max == 0 || xcf->admin_export_max > 64) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"conclave_admin_export_max\" must be 1..64");
        return NGX_CONF_ERROR;
    }

    /* by default the directory's pool: an export holds a thread for as
     * long as it runs, so a dedicated pool is better (docs) */
    if (xcf->admin_export_pool_name.len == 0) {
        xcf->admin_export_pool_name = xcf->thread_pool_name;
    }

    xcf->admin_export_pool = ngx_thread_pool_add(cf,
                                                 &xcf->admin_export_pool_name);
    if (xcf->admin_export_pool == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* ------------------------------------------------------------------ */
/* POST exports {"format", "since", "until", "user", "room"} */

ngx_int_t
ngx_xmpp_admin_export(ngx_xmpp_admin_ctx_t *ctx)
{
    return ngx_xmpp_admin_read_json(ctx, ngx_xmpp_admin_export_start);
}


static ngx_int_t
ngx_xmpp_admin_export_start(ngx_xmpp_admin_ctx_t *ctx, json_t *body)
{
    u_char                 rnd[NGX_XMPP_ADMIN_JOB_ID / 2];
    json_t                *params;
    ngx_xmpp_db_req_t     *dr;
    ngx_xmpp_admin_x_t    *x;
    ngx_http_request_t    *r;
    ngx_xmpp_admin_job_t  *job;

    r = ctx->request;

    job = ngx_calloc(sizeof(ngx_thread_task_t)
                     + sizeof(ngx_xmpp_admin_job_t), r->connection->log);
    if (job == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the task first, the job after it: one block, freed when done */
    job = (ngx_xmpp_admin_job_t *) ((ngx_thread_task_t *) job + 1);

    if (ngx_xmpp_admin_export_parse(ctx, body, job) != NGX_OK) {
        ngx_free((ngx_thread_task_t *) job - 1);
        (void) ngx_xmpp_admin_audit(ctx, "export", 0, "bad-request", NULL);
        return ngx_xmpp_admin_error(r, NGX_HTTP_BAD_REQUEST, "bad-request");
    }

    if (ngx_xmpp_admin_jobs >= ctx->xcf->admin_export_max) {
        ngx_free((ngx_thread_task_t *) job - 1);
        (void) ngx_xmpp_admin_audit(ctx, "export", 0, "too-many-exports",
                                    NULL);
        return ngx_xmpp_admin_error(r, NGX_HTTP_TOO_MANY_REQUESTS,
                                    "too-many-exports");
    }

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        ngx_free((ngx_thread_task_t *) job - 1);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_hex_dump((u_char *) job->id, rnd, sizeof(rnd));

    params = json_pack("{ssss}", "id", job->id, "format",
                       caud_format_name(job->format));
    if (params) {
        if (job->since_us) {
            json_object_set_new(params, "since",
                                json_integer(job->since_us / 1000));
        }
        if (job->until_us) {
            json_object_set_new(params, "until",
                                json_integer(job->until_us / 1000));
        }
        if (job->user[0]) {
            json_object_set_new(params, "user", json_string(job->user));
        }
        if (job->room[0]) {
            json_object_set_new(params, "room", json_string(job->room));
        }
    }

    dr = ngx_xmpp_db_create(ctx->xcf, sizeof(ngx_xmpp_admin_x_t),
                            r->connection->log);
    if (dr == NULL || params == NULL) {
        goto failed;
    }

    x = dr->ctx;
    x->kind = NGX_XMPP_ADMIN_X_INSERT;
    x->job = job;

    /* params go into the row as JSON text and into the audit record */
    {
        char  *text;

        text = json_dumps(params, JSON_COMPACT);
        if (text == NULL || ngx_strlen(text) >= sizeof(x->str)) {
            free(text);
            goto failed;
        }

        ngx_cpystrn(x->str, (u_char *) text, sizeof(x->str));
        free(text);
    }

    if (ngx_xmpp_admin_audit(ctx, "export", 1, NULL, params) != NGX_OK) {
        params = NULL;
        ngx_xmpp_db_destroy(dr);
        ngx_free((ngx_thread_task_t *) job - 1);
        return ngx_xmpp_admin_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "audit-unavailable");
    }

    return ngx_xmpp_admin_x_post(ctx, dr);

failed:

    if (params) {
        json_decref(params);
    }

    if (dr) {
        ngx_xmpp_db_destroy(dr);
    }

    ngx_free((ngx_thread_task_t *) job - 1);

    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


/* a bare JID from the body: "alice" is alice@<domain>; lower case */
static ngx_int_t
ngx_xmpp_admin_export_jid(ngx_xmpp_admin_ctx_t *ctx, json_t *v, char *out,
    ngx_uint_t room)
{
    if (v == NULL || json_is_null(v)
        || (json_is_string(v) && json_string_length(v) == 0))
    {
        out[0] = '\0';
        return NGX_OK;
    }

    return ngx_xmpp_admin_json_jid(ctx->xcf, v, out,
                                   NGX_XMPP_ADMIN_JID_MAX + 1, room);
}


static ngx_int_t
ngx_xmpp_admin_export_parse(ngx_xmpp_admin_ctx_t *ctx, json_t *body,
    ngx_xmpp_admin_job_t *job)
{
    json_t           *f;
    const char       *key;
    ngx_xmpp_conf_t  *xcf;

    static const char  *known[] = {
        "format", "since", "until", "user", "room", NULL
    };

    if (body == NULL) {
        return NGX_ERROR;
    }

    /* an unknown field is a client that expects something we do not do */
    json_object_foreach(body, key, f) {
        const char  **k;

        for (k = known; *k; k++) {
            if (ngx_strcmp(*k, key) == 0) {
                break;
            }
        }

        if (*k == NULL) {
            return NGX_ERROR;
        }
    }

    f = json_object_get(body, "format");

    if (!json_is_string(f)
        || caud_format_parse(json_string_value(f), &job->format) != 0
        || ngx_xmpp_admin_json_ms(json_object_get(body, "since"),
                                    &job->since_us) != NGX_OK
        || ngx_xmpp_admin_json_ms(json_object_get(body, "until"),
                                    &job->until_us) != NGX_OK
        || (job->since_us && job->until_us && job->since_us >= job->until_us)
        || ngx_xmpp_admin_export_jid(ctx, json_object_get(body, "user"),
                                     job->user, 0) != NGX_OK
        || ngx_xmpp_admin_export_jid(ctx, json_object_get(body, "room"),
                                     job->room, 1) != NGX_OK)
    {
        return NGX_ERROR;
    }

    xcf = ctx->xcf;
    job->xcf = xcf;

    ngx_snprintf((u_char *) job->actor, sizeof(job->actor) - 1, "%*s@%V%Z",
                 ctx->sess.user_len, ctx->sess.user, &xcf->domain);

    ngx_memzero(&job->db, sizeof(caud_db_opts_t));
    job->db.host = (const char *) xcf->db_host.data;
    job->db.port = (unsigned) xcf->db_port;
    job->db.socket = (const char *) xcf->db_socket.data;
    job->db.user = (const char *) xcf->db_user.data;
    job->db.password = (const char *) xcf->db_password.data;
    job->db.database = (const char *) xcf->db_name.data;
    job->db.timeout_s = (unsigned) ((xcf->db_timeout + 999) / 1000);

    return NGX_OK;
}


/* ------------------------------------------------------------------ */
/* GET exports, GET download?id= */

ngx_int_t
ngx_xmpp_admin_exports(ngx_xmpp_admin_ctx_t *ctx)
{
    ngx_xmpp_db_req_t   *dr;
    ngx_xmpp_admin_x_t  *x;

    dr = ngx_xmpp_db_create(ctx->xcf, sizeof(ngx_xmpp_admin_x_t),
                            ctx->request->connection->log);
    if (dr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    x = dr->ctx;
    x->kind = NGX_XMPP_ADMIN_X_LIST;
    x->master = getppid();
    ngx_snprintf((u_char *) x->node, sizeof(x->node) - 1, "%V%Z",
                 &ctx->xcf->audit_node);

    return ngx_xmpp_admin_x_post(ctx, dr);
}


ngx_int_t
ngx_xmpp_admin_download(ngx_xmpp_admin_ctx_t *ctx)
{
    ngx_int_t            rc;
    ngx_str_t            id;
    ngx_uint_t           i;
    ngx_xmpp_db_req_t   *dr;
    ngx_xmpp_admin_x_t  *x;

    rc = ngx_xmpp_admin_arg(ctx->request, "id", &id);

    /* exactly what export_start draws: 16 lower-case hex digits */
    for (i = 0; rc == NGX_OK && i < id.len; i++) {
        if (!((id.data[i] >= '0' && id.data[i] <= '9')
              || (id.data[i] >= 'a' && id.data[i] <= 'f')))
        {
            rc = NGX_ERROR;
        }
    }

    if (rc != NGX_OK || id.len != NGX_XMPP_ADMIN_JOB_ID) {
        ngx_log_error(NGX_LOG_INFO, ctx->request->connection->log, 0,
                      "xmpp: console: download of a malformed export id "
                      "by \"%s\"", ctx->sess.user);
        (void) ngx_xmpp_admin_audit(ctx, "download", 0, "bad-request",
                                    NULL);
        return ngx_xmpp_admin_error(ctx->request, NGX_HTTP_BAD_REQUEST,
                                    "bad-request");
    }

    dr = ngx_xmpp_db_create(ctx->xcf, sizeof(ngx_xmpp_admin_x_t),
                            ctx->request->connection->log);
    if (dr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    x = dr->ctx;
    x->kind = NGX_XMPP_ADMIN_X_FILE;
    ngx_memcpy(x->id, id.data, NGX_XMPP_ADMIN_JOB_ID);

    return ngx_xmpp_admin_x_post(ctx, dr);
}


static ngx_int_t
ngx_xmpp_admin_x_post(ngx_xmpp_admin_ctx_t *ctx, ngx_xmpp_db_req_t *dr)
{
    ngx_xmpp_admin_x_t  *x;

    dr->run = ngx_xmpp_admin_x_run;
    dr->done = ngx_xmpp_admin_x_done;
    dr->cleanup = ngx_xmpp_admin_x_cleanup;
    dr->data = ctx;
    x = dr->ctx;

    if (ngx_xmpp_db_post(dr) != NGX_OK) {
        if (x->job) {
            ngx_free((ngx_thread_task_t *) x->job - 1);
            x->job = NULL;
        }
        ngx_xmpp_db_destroy(dr);
        return ngx_xmpp_admin_error(ctx->request,
                                    NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "database-busy");
    }

    /*
     * A GET handler returns NGX_DONE to the content phase, which drops
     * a reference: the answer needs one of its own.  A POST answers
     * from the body handler, whose reference the answer takes over.
     */
    if (x->kind != NGX_XMPP_ADMIN_X_INSERT) {
        ctx->request->main->count++;
    }

    return NGX_DONE;
}


/* ------------------------------------------------------------------ */
/* statements, in a database pool thread */

static int
ngx_xmpp_admin_x_insert(MYSQL *conn, ngx_xmpp_db_req_t *dr)
{
    u_char                *p;
    ngx_str_t             *v;
    MYSQL_STMT            *stmt;
    ngx_xmpp_admin_x_t    *x;
    ngx_xmpp_admin_job_t  *job;

    x = dr->ctx;
    job = x->job;
    v = x->params;
    p = x->str + ngx_strlen(x->str) + 1;

    v[0].data = (u_char *) job->id;
    v[0].len = NGX_XMPP_ADMIN_JOB_ID;
    v[1].data = (u_char *) job->actor;
    v[1].len = ngx_strlen(job->actor);
    v[2].data = (u_char *) caud_format_name(job->format);
    v[2].len = ngx_strlen(v[2].data);
    v[3].data = x->str;
    v[3].len = ngx_strlen(x->str);
    v[4].data = (u_char *) job->xcf->audit_node.data;
    v[4].len = job->xcf->audit_node.len;

    /* numbers as strings: the statement converts them */
    v[5].data = p;
    v[5].len = ngx_sprintf(p, "%P", ngx_pid) - p;
    p += v[5].len + 1;
    v[6].data = p;
    v[6].len = ngx_sprintf(p, "%P", (ngx_pid_t) getppid()) - p;
    p += v[6].len + 1;
    v[7].data = p;
    v[7].len = ngx_sprintf(p, "%L", (int64_t) caud_now_us()) - p;

    stmt = ngx_xmpp_db_exec(conn, dr,
        "INSERT INTO console_export (id, actor, format, params, node, pid,"
        " master_pid, created_us, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?,"
        " 'running')", v, 8);
    if (stmt == NULL) {
        return -1;
    }

    (void) mysql_stmt_close(stmt);

    return 0;
}


/* the master pid and worker pid of each running job of this node */
static int
ngx_xmpp_admin_x_stale_row(ngx_xmpp_db_req_t *dr, ngx_str_t *cols,
    ngx_uint_t n)
{
    ngx_int_t            pid, master;
    ngx_xmpp_admin_x_t  *x;

    x = dr->ctx;

    if (n != 3 || cols[0].len != NGX_XMPP_ADMIN_JOB_ID
        || x->interrupted >= 8)
    {
        return 0;
    }

    pid = ngx_atoi(cols[1].data, cols[1].len);
    master = ngx_atoi(cols[2].data, cols[2].len);

    /* kill(pid, 0): ESRCH is "no such process", EPERM means it exists */
    if (master == (ngx_int_t) x->master
        && (kill((pid_t) pid, 0) == 0 || ngx_errno != NGX_ESRCH))
    {
        return 0;
    }

    ngx_memcpy(x->str + x->interrupted * (NGX_XMPP_ADMIN_JOB_ID + 1),
               cols[0].data, NGX_XMPP_ADMIN_JOB_ID);
    x->str[x->interrupted * (NGX_XMPP_ADMIN_JOB_ID + 1)
           + NGX_XMPP_ADMIN_JOB_ID] = '\0';
    x->interrupted++;

    return 0;
}


static int
ngx_xmpp_admin_x_stale(MYSQL *conn, ngx_xmpp_db_req_t *dr)
{
    int                  rc;
    ngx_str_t            v;
    ngx_uint_t           i;
    MYSQL_STMT          *stmt;
    ngx_xmpp_admin_x_t  *x;

    x = dr->ctx;
    v.data = (u_char *) x->node;
    v.len = ngx_strlen(x->node);

    rc = ngx_xmpp_db_select(conn, dr,
        "SELECT id, pid, master_pid FROM console_export"
        " WHERE state = 'running' AND node = ? LIMIT 8", &v, 1,
        ngx_xmpp_admin_x_stale_row);

    for (i = 0; rc == 0 && i < x->interrupted; i++) {
        v.data = x->str + i * (NGX_XMPP_ADMIN_JOB_ID + 1);
        v.len = NGX_XMPP_ADMIN_JOB_ID;

        stmt = ngx_xmpp_db_exec(conn, dr,
            "UPDATE console_export SET state = 'failed',"
            " error = 'interrupted: its worker or nginx was restarted'"
            " WHERE id = ? AND state = 'running'", &v, 1);
        if (stmt == NULL) {
            return -1;
        }

        (void) mysql_stmt_close(stmt);
    }

    return rc;
}


static int
ngx_xmpp_admin_x_list_row(ngx_xmpp_db_req_t *dr, ngx_str_t *cols,
    ngx_uint_t n)
{
    json_t              *row, *params;
    ngx_uint_t           i;
    ngx_xmpp_admin_x_t  *x;

    static const char  *names[] = {
        "id", "user", "format", "params", "state", "done", "total",
        "size", "file", "error", "created", "finished"
    };

    x = dr->ctx;

    if (n != 12) {
        return -1;
    }

    row = json_object();
    if (row == NULL) {
        return -1;
    }

    for (i = 0; i < n; i++) {
        if (cols[i].data == NULL) {
            json_object_set_new(row, names[i], json_null());

        } else if (i == 3) {
            params = json_loadb((char *) cols[i].data, cols[i].len, 0, NULL);
            json_object_set_new(row, names[i],
                                params ? params : json_object());

        } else if ((i >= 5 && i <= 7) || i >= 10) {
            /* microseconds in the row, milliseconds in the answer */
            json_object_set_new(row, names[i], json_integer(
                ngx_atoof(cols[i].data, cols[i].len)
                / (i >= 10 ? 1000 : 1)));

        } else {
            json_object_set_new(row, names[i],
                                json_stringn((char *) cols[i].data,
                                             cols[i].len));
        }
    }

    return json_array_append_new(x->rows, row) == 0 ? 0 : -1;
}


static int
ngx_xmpp_admin_x_list(MYSQL *conn, ngx_xmpp_db_req_t *dr)
{
    ngx_xmpp_admin_x_t  *x;

    x = dr->ctx;

    if (ngx_xmpp_admin_x_stale(conn, dr) != 0) {
        return -1;
    }

    x->rows = json_array();
    if (x->rows == NULL) {
        return -1;
    }

    return ngx_xmpp_db_select(conn, dr,
        "SELECT id, actor, format, params, state, done, total, size, file,"
        " error, created_us, finished_us FROM console_export"
        " ORDER BY created_us DESC, id LIMIT 50", NULL, 0,
        ngx_xmpp_admin_x_list_row);
}


static int
ngx_xmpp_admin_x_file_row(ngx_xmpp_db_req_t *dr, ngx_str_t *cols,
    ngx_uint_t n)
{
    ngx_xmpp_admin_x_t  *x;

    x = dr->ctx;
    x->found = 1;

    if (n == 2 && cols[0].len < sizeof(x->state)) {
        ngx_cpystrn((u_char *) x->state, cols[0].data, cols[0].len + 1);
    }

    if (n == 2 && cols[1].data && cols[1].len < sizeof(x->file)) {
        ngx_cpystrn((u_char *) x->file, cols[1].data, cols[1].len + 1);
    }

    return 0;
}


static int
ngx_xmpp_admin_x_run(MYSQL *conn, ngx_xmpp_db_req_t *dr)
{
    ngx_str_t            v;
    MYSQL_STMT          *stmt;
    ngx_xmpp_admin_x_t  *x;

    x = dr->ctx;

    switch (x->kind) {

    case NGX_XMPP_ADMIN_X_INSERT:
        return ngx_xmpp_admin_x_insert(conn, dr);

    case NGX_XMPP_ADMIN_X_LIST:
        return ngx_xmpp_admin_x_list(conn, dr);

    case NGX_XMPP_ADMIN_X_FAIL:
        v.data = (u_char *) x->id;
        v.len = NGX_XMPP_ADMIN_JOB_ID;
        stmt = ngx_xmpp_db_exec(conn, dr,
            "UPDATE console_export SET state = 'failed',"
            " error = 'could not be started' WHERE id = ?", &v, 1);
        if (stmt == NULL) {
            return -1;
        }
        (void) mysql_stmt_close(stmt);
        return 0;

    default: /* NGX_XMPP_ADMIN_X_FILE */
        v.data = (u_char *) x->id;
        v.len = NGX_XMPP_ADMIN_JOB_ID;
        return ngx_xmpp_db_select(conn, dr,
            "SELECT state, file FROM console_export WHERE id = ?", &v, 1,
            ngx_xmpp_admin_x_file_row);
    }
}


/* ------------------------------------------------------------------ */
/* back on the event loop */

static void
ngx_xmpp_admin_x_fail_done(ngx_xmpp_db_req_t *dr)
{
    if (dr->rc != NGX_XMPP_DB_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "xmpp: console: an export that could not start "
                      "stays \"running\" until the next listing: %s",
                      dr->err);
    }
}


/* the row exists, the job's thread could not be had: say so in it */
static void
ngx_xmpp_admin_x_unstarted(ngx_xmpp_conf_t *xcf, const char *id)
{
    ngx_xmpp_db_req_t   *dr;
    ngx_xmpp_admin_x_t  *x;

    dr = ngx_xmpp_db_create(xcf, sizeof(ngx_xmpp_admin_x_t), ngx_cycle->log);
    if (dr == NULL) {
        return;
    }

    x = dr->ctx;
    x->kind = NGX_XMPP_ADMIN_X_FAIL;
    ngx_memcpy(x->id, id, NGX_XMPP_ADMIN_JOB_ID);

    dr->run = ngx_xmpp_admin_x_run;
    dr->done = ngx_xmpp_admin_x_fail_done;

    if (ngx_xmpp_db_post(dr) != NGX_OK) {
        ngx_xmpp_db_destroy(dr);
    }
}


static void
ngx_xmpp_admin_x_done(ngx_xmpp_db_req_t *dr)
{
    char                   id[NGX_XMPP_ADMIN_JOB_ID + 1];
    json_t                *doc;
    ngx_int_t              rc;
    ngx_connection_t      *c;
    ngx_http_request_t    *r;
    ngx_xmpp_admin_x_t    *x;
    ngx_xmpp_admin_ctx_t  *ctx;
    ngx_xmpp_admin_job_t  *job;

    ctx = dr->data;
    r = ctx->request;
    c = r->connection;
    x = dr->ctx;

    if (dr->rc != NGX_XMPP_DB_OK) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "xmpp: console export statement failed (%ui): %s",
                      dr->rc, dr->err);

        /* after a timeout the thread still owns x: the job stays its */
        if (dr->rc != NGX_XMPP_DB_TIMEOUT && x->job) {
            ngx_free((ngx_thread_task_t *) x->job - 1);
            x->job = NULL;
        }

        rc = ngx_xmpp_admin_error(r, dr->rc == NGX_XMPP_DB_TIMEOUT
                                     ? NGX_HTTP_GATEWAY_TIME_OUT
                                     : NGX_HTTP_SERVICE_UNAVAILABLE,
                                  dr->rc == NGX_XMPP_DB_TIMEOUT
                                  ? "database-timeout"
                                  : "database-unavailable");
        goto done;
    }

    switch (x->kind) {

    case NGX_XMPP_ADMIN_X_INSERT:
        job = x->job;
        x->job = NULL;
        ngx_memcpy(id, job->id, sizeof(id));

        if (ngx_xmpp_admin_job_post(job) != NGX_OK) {
            ngx_free((ngx_thread_task_t *) job - 1);
            ngx_xmpp_admin_x_unstarted(ctx->xcf, id);
            (void) ngx_xmpp_admin_audit(ctx, "export-done", 0, "busy",
                                        json_pack("{ss}", "id", id));
            rc = ngx_xmpp_admin_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      "export-busy");
            break;
        }

        doc = json_pack("{ssss}", "id", id, "state", "running");
        rc = ngx_xmpp_admin_send_json(r, NGX_HTTP_ACCEPTED, doc);
        break;

    case NGX_XMPP_ADMIN_X_LIST:
        doc = json_pack("{sO}", "exports", x->rows);
        rc = ngx_xmpp_admin_send_json(r, NGX_HTTP_OK, doc);
        break;

    default: /* NGX_XMPP_ADMIN_X_FILE */
        rc = ngx_xmpp_admin_send_zip(ctx, x);
        break;
    }

done:

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static void
ngx_xmpp_admin_x_cleanup(ngx_xmpp_db_req_t *dr)
{
    ngx_xmpp_admin_x_t  *x;

    x = dr->ctx;

    if (x->rows) {
        json_decref(x->rows);
        x->rows = NULL;
    }

    /* a job whose INSERT timed out: it never started */
    if (x->job) {
        ngx_free((ngx_thread_task_t *) x->job - 1);
        x->job = NULL;
    }
}


/*
 * A name the export engine chose ("conclave-<format>-<node>-<time>.zip"),
 * read back from our own table: still checked, so that even a row
 * written by someone else cannot lead out of the job's directory.
 */
ngx_int_t
ngx_xmpp_admin_safe_name(const char *name)
{
    size_t  i, len;

    len = ngx_strlen(name);

    if (len == 0 || len > 200 || name[0] == '.') {
        return NGX_ERROR;
    }

    for (i = 0; i < len; i++) {
        if (!((name[i] >= 'a' && name[i] <= 'z')
              || (name[i] >= 'A' && name[i] <= 'Z')
              || (name[i] >= '0' && name[i] <= '9')
              || name[i] == '.' || name[i] == '-' || name[i] == '_'))
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_xmpp_admin_send_zip(ngx_xmpp_admin_ctx_t *ctx, ngx_xmpp_admin_x_t *x)
{
    u_char              *path, *p;
    off_t                size;
    ngx_fd_t             fd;
    ngx_int_t            rc;
    ngx_xmpp_conf_t     *xcf;
    ngx_http_request_t  *r;

    static ngx_str_t  type = ngx_string("application/zip");

    r = ctx->request;
    xcf = ctx->xcf;

    if (!x->found) {
        (void) ngx_xmpp_admin_audit(ctx, "download", 0, "no-such-export",
                                    json_pack("{ss}", "id", x->id));
        return ngx_xmpp_admin_error(r, NGX_HTTP_NOT_FOUND, "no-such-export");
    }

    if (ngx_strcmp(x->state, "expired") == 0) {
        /* conclave_admin_export_keep: the zip was removed on purpose */
        (void) ngx_xmpp_admin_audit(ctx, "download", 0, "expired",
                                    json_pack("{ss}", "id", x->id));
        return ngx_xmpp_admin_error(r, 410, "expired");
    }

    if (ngx_strcmp(x->state, "done") != 0) {
        (void) ngx_xmpp_admin_audit(ctx, "download", 0, "not-ready",
                                    json_pack("{ss}", "id", x->id));
        return ngx_xmpp_admin_error(r, NGX_HTTP_CONFLICT, "not-ready");
    }

    if (ngx_xmpp_admin_safe_name(x->file) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "xmpp: console: export %s names an unsafe file",
                      x->id);
        return ngx_xmpp_admin_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                    "bad-export");
    }

    path = ngx_pnalloc(r->pool, xcf->admin_export_dir.len + 300);
    if (path == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_sprintf(path, "%V/%s/%s%Z", &xcf->admin_export_dir, x->id, x->file);

    rc = ngx_xmpp_admin_open(r, path, &fd, &size);

    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, ngx_errno,
                      "xmpp: console: export \"%s\" is gone", path);
        (void) ngx_xmpp_admin_audit(ctx, "download", 0, "file-gone",
                                    json_pack("{ss}", "id", x->id));
        return ngx_xmpp_admin_error(r, 410, "file-gone");
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the download is recorded before a byte of it leaves */
    if (ngx_xmpp_admin_audit(ctx, "download", 1, NULL,
                             json_pack("{sssssI}", "id", x->id, "file",
                                       x->file, "size",
                                       (json_int_t) size))
        != NGX_OK)
    {
        return ngx_xmpp_admin_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "audit-unavailable");
    }

    p = ngx_pnalloc(r->pool, sizeof("attachment; filename=\"\"")
                             + ngx_strlen(x->file));

    if (p == NULL
        || ngx_xmpp_http_header_n(r, "Content-Disposition", p,
                                  ngx_sprintf(p, "attachment; filename=\"%s\"",
                                              x->file) - p)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_xmpp_admin_send_file(r, fd, path, size, &type);
}


/* ------------------------------------------------------------------ */
/* the job: one task in the export pool */

static ngx_int_t
ngx_xmpp_admin_job_post(ngx_xmpp_admin_job_t *job)
{
    ngx_thread_task_t  *task;

    task = (ngx_thread_task_t *) job - 1;

    ngx_snprintf((u_char *) job->dir, sizeof(job->dir) - 1, "%V/%s%Z",
                 &job->xcf->admin_export_dir, job->id);

    task->ctx = job;
    task->handler = ngx_xmpp_admin_job_thread;
    task->event.handler = ngx_xmpp_admin_job_done;
    task->event.data = task;
    task->event.log = ngx_cycle->log;
    job->log = ngx_cycle->log;

    if (ngx_thread_task_post(job->xcf->admin_export_pool, task) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_xmpp_admin_jobs++;

    return NGX_OK;
}


static int64_t
ngx_xmpp_admin_job_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/* in the thread: a statement on the job's own connection, reconnecting
 * once; a failed progress update is only a stale bar */
static int
ngx_xmpp_admin_job_sql(ngx_xmpp_admin_job_t *job, const char *sql)
{
    int   attempt;
    char  err[256];

    for (attempt = 0; attempt < 2; attempt++) {
        if (job->m == NULL) {
            job->m = caud_db_connect(&job->db, err, sizeof(err));
            if (job->m == NULL) {
                continue;
            }
        }

        if (mysql_query(job->m, sql) == 0) {
            return 0;
        }

        mysql_close(job->m);
        job->m = NULL;
    }

    return -1;
}


static void
ngx_xmpp_admin_job_progress(void *data, const char *phase, uint64_t done,
    uint64_t total)
{
    ngx_xmpp_admin_job_t *job = data;

    char     sql[256];
    int64_t  now;

    if (ngx_strcmp(phase, "records") != 0) {
        return;
    }

    now = ngx_xmpp_admin_job_ms();

    if (now - job->last_ms < NGX_XMPP_ADMIN_PROGRESS_MS && done < total) {
        return;
    }

    job->last_ms = now;

    snprintf(sql, sizeof(sql), "UPDATE console_export SET done = %" PRIu64
             ", total = %" PRIu64 " WHERE id = '%s'", done, total, job->id);

    (void) ngx_xmpp_admin_job_sql(job, sql);
}


static void
ngx_xmpp_admin_job_thread(void *data, ngx_log_t *log)
{
    ngx_xmpp_admin_job_t *job = data;

    char                  sql[1400], esc[1100], *slash;
    struct stat           st;
    ngx_uint_t            i;
    caud_export_opts_t    o;
    caud_export_result_t  res;

    (void) mysql_thread_init();

    ngx_memzero(&o, sizeof(caud_export_opts_t));
    o.format = job->format;
    o.output_dir = job->dir;
    o.node = (const char *) job->xcf->audit_node.data;
    o.origin_prefix = (const char *) job->xcf->audit_origin.data;
    o.key = (const char *) job->xcf->audit_key.data;
    o.since_us = job->since_us;
    o.until_us = job->until_us;
    o.user = job->user[0] ? job->user : NULL;
    o.room = job->room[0] ? job->room : NULL;
    o.progress = ngx_xmpp_admin_job_progress;
    o.progress_data = job;

    job->rc = -1;

    if ((mkdir((char *) job->xcf->admin_export_dir.data, 0750) != 0
         && errno != EEXIST)
        || mkdir(job->dir, 0700) != 0)
    {
        snprintf(job->err, sizeof(job->err), "%.300s: %.100s", job->dir,
                 strerror(errno));

    } else if (caud_export(&job->db, &o, &res, job->err, sizeof(job->err))
               == 0)
    {
        slash = strrchr(res.path, '/');
        snprintf(job->file, sizeof(job->file), "%.250s",
                 slash ? slash + 1 : res.path);
        job->size = stat(res.path, &st) == 0 ? (uint64_t) st.st_size : 0;
        job->records = res.records;
        job->rc = 0;

    } else {
        (void) rmdir(job->dir);
    }

    if (job->rc == 0) {
        snprintf(sql, sizeof(sql), "UPDATE console_export SET state = "
                 "'done', done = %" PRIu64 ", total = %" PRIu64 ", size = %"
                 PRIu64 ", file = '%s', finished_us = %" PRId64 " WHERE id"
                 " = '%s'", job->records, job->records, job->size,
                 job->file, (int64_t) caud_now_us(), job->id);

    } else {
        /* the error of a library: escaped, as it may quote anything */
        for (i = 0, slash = esc; job->err[i] && i < 500; i++) {
            if (job->err[i] == '\'' || job->err[i] == '\\') {
                *slash++ = '\\';
            }
            *slash++ = ((u_char) job->err[i] < 0x20) ? ' ' : job->err[i];
        }

        *slash = '\0';

        snprintf(sql, sizeof(sql), "UPDATE console_export SET state = "
                 "'failed', error = '%s', finished_us = %" PRId64 " WHERE"
                 " id = '%s'", esc, (int64_t) caud_now_us(), job->id);
    }

    if (ngx_xmpp_admin_job_sql(job, sql) != 0) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "xmpp: console: the state of export %s could not be "
                      "stored; the next listing after a restart fails it",
                      job->id);
    }

    if (job->m) {
        mysql_close(job->m);
        job->m = NULL;
    }

    caud_db_thread_end();
}


static void
ngx_xmpp_admin_job_done(ngx_event_t *ev)
{
    ngx_thread_task_t  *task = ev->data;

    json_t                *params;
    ngx_xmpp_admin_job_t  *job;

    job = task->ctx;
    ngx_xmpp_admin_jobs--;

    if (job->rc == 0) {
        ngx_log_error(NGX_LOG_INFO, job->log, 0,
                      "xmpp: console: export %s done: %uL records, %uL "
                      "bytes", job->id, job->records, job->size);
        params = json_pack("{sssssIsI}", "id", job->id, "file", job->file,
                           "records", (json_int_t) job->records, "size",
                           (json_int_t) job->size);

    } else {
        ngx_log_error(NGX_LOG_ERR, job->log, 0,
                      "xmpp: console: export %s failed: %s", job->id,
                      job->err);
        params = json_pack("{ss}", "id", job->id);
    }

    /* the worker's own record: the job's starter may be long gone */
    if (ngx_xmpp_audit_admin(job->xcf, job->log, job->actor, NULL, NULL,
                             "export-done", job->rc == 0,
                             job->rc == 0 ? NULL : "export-failed", params)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, job->log, 0,
                      "xmpp: console: the end of export %s is not in the "
                      "audit chain", job->id);
    }

    ngx_free(task);
}
