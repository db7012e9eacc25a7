
/*
 * The admin console's HTTP side: the "conclave_admin" location serves
 * the static web app (conclave_admin_root) and the JSON API under
 * <location>api/.  Every response carries the security headers, API
 * calls need a signed session cookie (ngx_xmpp_admin_session.c) and the
 * role the call is for, and every state-changing call a CSRF token
 * (issue 8 item 2).
 */


#include "ngx_xmpp_admin.h"

#include <openssl/hmac.h>
#include <openssl/rand.h>


#define NGX_XMPP_ADMIN_CSP                                                 \
    "default-src 'none'; script-src 'self'; style-src 'self'; "           \
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; "         \
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

#define NGX_XMPP_ADMIN_ANY   (NGX_XMPP_ADMIN_ROLE_ADMIN                    \
                              |NGX_XMPP_ADMIN_ROLE_COMPLIANCE              \
                              |NGX_XMPP_ADMIN_ROLE_AUDITOR)
#define NGX_XMPP_ADMIN_READ  (NGX_XMPP_ADMIN_ROLE_COMPLIANCE               \
                              |NGX_XMPP_ADMIN_ROLE_AUDITOR)


typedef struct {
    ngx_str_t               name;
    ngx_uint_t              method;      /* NGX_HTTP_GET or _POST */
    ngx_uint_t              roles;       /* any of; 0: no session needed */
    ngx_xmpp_admin_api_pt   handler;
} ngx_xmpp_admin_api_t;


static ngx_int_t ngx_xmpp_admin_headers(ngx_http_request_t *r);
static ngx_int_t ngx_xmpp_admin_static(ngx_http_request_t *r,
    ngx_xmpp_conf_t *xcf, ngx_str_t *name);
static ngx_int_t ngx_xmpp_admin_api(ngx_http_request_t *r,
    ngx_xmpp_conf_t *xcf, ngx_str_t *name);
static ngx_int_t ngx_xmpp_admin_refuse(ngx_http_request_t *r,
    ngx_uint_t status, const char *code);


static ngx_xmpp_admin_api_t  ngx_xmpp_admin_apis[] = {
    { ngx_string("signin"), NGX_HTTP_POST, 0, ngx_xmpp_admin_signin },
    { ngx_string("signout"), NGX_HTTP_POST, NGX_XMPP_ADMIN_ANY,
      ngx_xmpp_admin_signout },
    { ngx_string("me"), NGX_HTTP_GET, NGX_XMPP_ADMIN_ANY,
      ngx_xmpp_admin_me },
    { ngx_string("search"), NGX_HTTP_GET, NGX_XMPP_ADMIN_READ,
      ngx_xmpp_admin_search },
    { ngx_string("conversation"), NGX_HTTP_GET, NGX_XMPP_ADMIN_READ,
      ngx_xmpp_admin_conversation },
    { ngx_string("signins"), NGX_HTTP_GET, NGX_XMPP_ADMIN_ANY,
      ngx_xmpp_admin_signins },
    { ngx_string("audit"), NGX_HTTP_GET, NGX_XMPP_ADMIN_ANY,
      ngx_xmpp_admin_audit_log },
    { ngx_string("sessions"), NGX_HTTP_GET, NGX_XMPP_ADMIN_ROLE_ADMIN,
      ngx_xmpp_admin_sessions },
    { ngx_string("kick"), NGX_HTTP_POST, NGX_XMPP_ADMIN_ROLE_ADMIN,
      ngx_xmpp_admin_kick },
    { ngx_string("unlock"), NGX_HTTP_POST, NGX_XMPP_ADMIN_ROLE_ADMIN,
      ngx_xmpp_admin_unlock },
    { ngx_string("status"), NGX_HTTP_GET, NGX_XMPP_ADMIN_ROLE_ADMIN,
      ngx_xmpp_admin_status },
    /* exports, holds and retention: compliance officers only */
    { ngx_string("exports"), NGX_HTTP_POST, NGX_XMPP_ADMIN_ROLE_COMPLIANCE,
      ngx_xmpp_admin_export },
    { ngx_string("exports"), NGX_HTTP_GET, NGX_XMPP_ADMIN_ROLE_COMPLIANCE,
      ngx_xmpp_admin_exports },
    { ngx_string("download"), NGX_HTTP_GET, NGX_XMPP_ADMIN_ROLE_COMPLIANCE,
      ngx_xmpp_admin_download },
    { ngx_string("holds"), NGX_HTTP_POST, NGX_XMPP_ADMIN_ROLE_COMPLIANCE,
      ngx_xmpp_admin_hold },
    { ngx_string("holds"), NGX_HTTP_GET, NGX_XMPP_ADMIN_ROLE_COMPLIANCE,
      ngx_xmpp_admin_holds },
    { ngx_string("retention"), NGX_HTTP_POST, NGX_XMPP_ADMIN_ROLE_COMPLIANCE,
      ngx_xmpp_admin_policy },
    { ngx_string("retention"), NGX_HTTP_GET, NGX_XMPP_ADMIN_ROLE_COMPLIANCE,
      ngx_xmpp_admin_holds },
    { ngx_null_string, 0, 0, NULL }
};


/* by role bit number: NGX_XMPP_ROLE_ADMIN is bit 1 */
ngx_str_t  ngx_xmpp_admin_role_names[NGX_XMPP_ADMIN_ROLES] = {
    ngx_null_string,
    ngx_string("admin"),
    ngx_string("compliance"),
    ngx_string("auditor")
};


/* ------------------------------------------------------------------ */
/* configuration */

void
ngx_xmpp_admin_conf_create(ngx_xmpp_conf_t *xcf)
{
    xcf->admin_idle_timeout = NGX_CONF_UNSET_MSEC;
    xcf->admin_session_timeout = NGX_CONF_UNSET_MSEC;
    xcf->admin_max_failures = NGX_CONF_UNSET_UINT;
    xcf->admin_lockout = NGX_CONF_UNSET_MSEC;
    xcf->admin_export_max = NGX_CONF_UNSET_UINT;
    xcf->admin_export_keep = NGX_CONF_UNSET;
    xcf->admin_forged_summary = NGX_CONF_UNSET_MSEC;
}


/* conclave_admin_role_group admin|compliance|auditor <group DN> */
char *
ngx_xmpp_admin_conf_role(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_xmpp_conf_t *xcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i;

    value = cf->args->elts;

    for (i = NGX_XMPP_ADMIN_ROLE_FIRST; i < NGX_XMPP_ADMIN_ROLES; i++) {
        if (value[1].len == ngx_xmpp_admin_role_names[i].len
            && ngx_strncmp(value[1].data, ngx_xmpp_admin_role_names[i].data,
                           value[1].len) == 0)
        {
            break;
        }
    }

    if (i == NGX_XMPP_ADMIN_ROLES) {
        return "takes a role of \"admin\", \"compliance\" or \"auditor\"";
    }

    if (xcf->admin_role_group[i].len) {
        return "is duplicate";
    }

    if (value[2].len == 0) {
        return "needs a group DN";
    }

    xcf->admin_role_group[i] = value[2];

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_xmpp_admin_key(ngx_conf_t *cf, ngx_xmpp_conf_t *xcf)
{
    u_char      buf[1024];
    ssize_t     n;
    ngx_fd_t    fd;
    ngx_file_t  file;

    if (xcf->admin_key_file.len == 0) {
        /* per start: a restart or reload signs everyone out */
        return RAND_bytes(xcf->admin_key, sizeof(xcf->admin_key)) == 1
               ? NGX_OK : NGX_ERROR;
    }

    if (ngx_conf_full_name(cf->cycle, &xcf->admin_key_file, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    fd = ngx_open_file(xcf->admin_key_file.data, NGX_FILE_RDONLY,
                       NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "cannot open \"%V\"", &xcf->admin_key_file);
        return NGX_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.fd = fd;
    file.name = xcf->admin_key_file;
    file.log = cf->log;

    n = ngx_read_file(&file, buf, sizeof(buf), 0);
    (void) ngx_close_file(fd);

    if (n < 32) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must hold at least 32 bytes",
                           &xcf->admin_key_file);
        return NGX_ERROR;
    }

    /* any length of secret becomes a 32-byte key */
    (void) HMAC(EVP_sha256(), "conclave-admin", 14, buf, n, xcf->admin_key,
                NULL);
    ngx_explicit_memzero(buf, sizeof(buf));

    return NGX_OK;
}


char *
ngx_xmpp_admin_conf_init(ngx_conf_t *cf, ngx_xmpp_conf_t *xcf)
{
    ngx_uint_t  i, any;

    ngx_conf_init_msec_value(xcf->admin_idle_timeout, 15 * 60 * 1000);
    ngx_conf_init_msec_value(xcf->admin_session_timeout, 8 * 3600 * 1000);
    ngx_conf_init_uint_value(xcf->admin_max_failures, 5);
    ngx_conf_init_msec_value(xcf->admin_lockout, 15 * 60 * 1000);
    ngx_conf_init_uint_value(xcf->admin_export_max, 2);
    ngx_conf_init_value(xcf->admin_export_keep, 7 * 86400);
    ngx_conf_init_msec_value(xcf->admin_forged_summary, 60 * 1000);

    any = 0;

    for (i = NGX_XMPP_ADMIN_ROLE_FIRST; i < NGX_XMPP_ADMIN_ROLES; i++) {
        any |= xcf->admin_role_group[i].len;
    }

    if (!any || xcf->domain.len == 0) {
        return NGX_CONF_OK;
    }

    if (xcf->admin_idle_timeout < 1000
        || xcf->admin_session_timeout < xcf->admin_idle_timeout
        || xcf->admin_max_failures == 0
        || xcf->admin_forged_summary < 1000)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"conclave_admin_session_timeout\" must be at "
                           "least \"conclave_admin_idle_timeout\" (1s or "
                           "more), \"conclave_admin_max_failures\" positive, "
                           "\"conclave_admin_forged_summary\" 1s or more");
        return NGX_CONF_ERROR;
    }

    if (xcf->admin_root.len
        && ngx_conf_full_name(cf->cycle, &xcf->admin_root, 1) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (ngx_xmpp_admin_key(cf, xcf) != NGX_OK
        || ngx_xmpp_admin_export_conf(cf, xcf) != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    return ngx_xmpp_admin_zone_add(cf, xcf);
}


/* ------------------------------------------------------------------ */
/* the location's handler */

ngx_int_t
ngx_xmpp_admin_handler(ngx_http_request_t *r, ngx_xmpp_conf_t *xcf)
{
    ngx_str_t                  rest;
    ngx_http_core_loc_conf_t  *clcf;

    if (ngx_xmpp_admin_headers(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (xcf->admin_zone == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "xmpp: conclave_admin without any "
                      "conclave_admin_role_group");
        return NGX_HTTP_NOT_FOUND;
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (r->uri.len < clcf->name.len
        || ngx_strncmp(r->uri.data, clcf->name.data, clcf->name.len) != 0)
    {
        return NGX_HTTP_NOT_FOUND;
    }

    rest.data = r->uri.data + clcf->name.len;
    rest.len = r->uri.len - clcf->name.len;

    if (rest.len > 4 && ngx_strncmp(rest.data, "api/", 4) == 0) {
        rest.data += 4;
        rest.len -= 4;
        return ngx_xmpp_admin_api(r, xcf, &rest);
    }

    return ngx_xmpp_admin_static(r, xcf, &rest);
}


/* on every response of the location, errors included */
static ngx_int_t
ngx_xmpp_admin_headers(ngx_http_request_t *r)
{
    static const char  *headers[] = {
        "Content-Security-Policy", NGX_XMPP_ADMIN_CSP,
        "X-Content-Type-Options", "nosniff",
        "X-Frame-Options", "DENY",
        "Referrer-Policy", "no-referrer",
        "Cross-Origin-Opener-Policy", "same-origin",
        "Cross-Origin-Resource-Policy", "same-origin",
        "Permissions-Policy", "camera=(), microphone=(), geolocation=()",
        "Cache-Control", "no-store",
        NULL
    };

    ngx_uint_t  i;

    for (i = 0; headers[i]; i += 2) {
        if (ngx_xmpp_http_header(r, headers[i], headers[i + 1])
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

#if (NGX_HTTP_SSL)
    if (r->connection->ssl) {
        return ngx_xmpp_http_header(r, "Strict-Transport-Security",
                                    "max-age=31536000");
    }
#endif

    return NGX_OK;
}


/*
 * The web app: a few flat files.  Names are checked against a strict
 * alphabet, so no "..", no "/" and no hidden file is ever opened.
 */
static ngx_int_t
ngx_xmpp_admin_static(ngx_http_request_t *r, ngx_xmpp_conf_t *xcf,
    ngx_str_t *name)
{
    u_char      *path, *p, *dot;
    off_t        size;
    ngx_fd_t     fd;
    ngx_int_t    rc;
    ngx_uint_t   i;

    static ngx_str_t  types[] = {
        ngx_string(".html"), ngx_string("text/html; charset=utf-8"),
        ngx_string(".js"), ngx_string("application/javascript"),
        ngx_string(".css"), ngx_string("text/css"),
        ngx_string(".svg"), ngx_string("image/svg+xml"),
        ngx_string(".png"), ngx_string("image/png"),
        ngx_null_string, ngx_null_string
    };

    if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    if (name->len == 0) {
        ngx_str_set(name, "index.html");
    }

    if (xcf->admin_root.len == 0 || name->len > 64 || name->data[0] == '.') {
        return NGX_HTTP_NOT_FOUND;
    }

    dot = NULL;

    for (i = 0; i < name->len; i++) {
        p = &name->data[i];

        if (*p == '.') {
            dot = p;

        } else if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')
                     || *p == '-' || *p == '_'))
        {
            return NGX_HTTP_NOT_FOUND;
        }
    }

    if (dot == NULL) {
        return NGX_HTTP_NOT_FOUND;
    }

    for (i = 0; types[i].len; i += 2) {
        if ((size_t) (name->data + name->len - dot) == types[i].len
            && ngx_strncmp(dot, types[i].data, types[i].len) == 0)
        {
            break;
        }
    }

    if (types[i].len == 0) {
        return NGX_HTTP_NOT_FOUND;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    path = ngx_pnalloc(r->pool, xcf->admin_root.len + name->len + 2);
    if (path == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(path, xcf->admin_root.data, xcf->admin_root.len);
    *p++ = '/';
    *ngx_cpymem(p, name->data, name->len) = '\0';

    rc = ngx_xmpp_admin_open(r, path, &fd, &size);

    if (rc != NGX_OK) {
        return rc == NGX_ERROR ? NGX_HTTP_INTERNAL_SERVER_ERROR
                               : NGX_HTTP_NOT_FOUND;
    }

    return ngx_xmpp_admin_send_file(r, fd, path, size, &types[i + 1]);
}


/* ------------------------------------------------------------------ */
/* the API: session, role, CSRF, then the call */

/*
 * A POST refused before its handler reads the body: the body is
 * discarded, or on a keep-alive connection its bytes would be taken for
 * the next request.
 */
static ngx_int_t
ngx_xmpp_admin_refuse(ngx_http_request_t *r, ngx_uint_t status,
    const char *code)
{
    ngx_int_t  rc;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_xmpp_admin_error(r, status, code);
}


static ngx_int_t
ngx_xmpp_admin_api(ngx_http_request_t *r, ngx_xmpp_conf_t *xcf,
    ngx_str_t *name)
{
    ngx_int_t              rc;
    ngx_uint_t             known;
    ngx_xmpp_admin_api_t  *api;
    ngx_xmpp_admin_ctx_t  *ctx;

    known = 0;

    /* a name may have a GET and a POST entry */
    for (api = ngx_xmpp_admin_apis; api->name.len; api++) {
        if (api->name.len == name->len
            && ngx_strncmp(api->name.data, name->data, name->len) == 0)
        {
            known = 1;

            if (api->method == r->method) {
                break;
            }
        }
    }

    if (!known) {
        return ngx_xmpp_admin_refuse(r, NGX_HTTP_NOT_FOUND, "no-such-call");
    }

    if (api->name.len == 0) {
        return ngx_xmpp_admin_refuse(r, NGX_HTTP_NOT_ALLOWED,
                                     "method-not-allowed");
    }

    if (r->method == NGX_HTTP_GET) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_xmpp_admin_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->request = r;
    ctx->xcf = xcf;
    ngx_http_set_ctx(r, ctx, ngx_http_conclave_module);

    if (xcf->audit_zone == NULL) {
        /* the console's actions must be recorded, or not happen */
        return ngx_xmpp_admin_refuse(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                     "audit-not-configured");
    }

    if (api->roles == 0) {
        return api->handler(ctx);
    }

    rc = ngx_xmpp_admin_session(ctx);

    if (rc == NGX_DECLINED) {
        return ngx_xmpp_admin_refuse(r, NGX_HTTP_UNAUTHORIZED, ctx->refused);
    }

    if (rc != NGX_OK) {
        return rc;
    }

    if ((ctx->sess.roles & api->roles) == 0) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "xmpp: console: \"%s\" may not call \"%V\"",
                      ctx->sess.user, name);
        (void) ngx_xmpp_admin_audit(ctx, (char *) api->name.data, 0,
                                    "forbidden", NULL);
        return ngx_xmpp_admin_refuse(r, NGX_HTTP_FORBIDDEN, "forbidden");
    }

    if (api->method == NGX_HTTP_POST && ngx_xmpp_admin_csrf_ok(ctx) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "xmpp: console: \"%V\" without a valid CSRF token "
                      "from \"%s\"", name, ctx->sess.user);
        (void) ngx_xmpp_admin_audit(ctx, (char *) api->name.data, 0, "csrf",
                                    NULL);
        return ngx_xmpp_admin_refuse(r, NGX_HTTP_FORBIDDEN, "csrf");
    }

    return api->handler(ctx);
}


/* ------------------------------------------------------------------ */
/* helpers for the API handlers */

/*
 * A file for a GET answer: opened without blocking on a FIFO, closed by
 * the request pool's cleanup.  NGX_DECLINED: it could not be opened
 * (ngx_errno says why); NGX_ABORT: not a regular file; NGX_ERROR: no
 * memory.
 */
ngx_int_t
ngx_xmpp_admin_open(ngx_http_request_t *r, u_char *path, ngx_fd_t *fd,
    off_t *size)
{
    ngx_file_info_t           fi;
    ngx_pool_cleanup_t       *cln;
    ngx_pool_cleanup_file_t  *clnf;

    *fd = ngx_open_file(path, NGX_FILE_RDONLY|NGX_FILE_NONBLOCK,
                        NGX_FILE_OPEN, 0);
    if (*fd == NGX_INVALID_FILE) {
        return NGX_DECLINED;
    }

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_pool_cleanup_file_t));
    if (cln == NULL) {
        (void) ngx_close_file(*fd);
        return NGX_ERROR;
    }

    cln->handler = ngx_pool_cleanup_file;
    clnf = cln->data;
    clnf->fd = *fd;
    clnf->name = path;
    clnf->log = r->connection->log;

    if (ngx_fd_info(*fd, &fi) == NGX_FILE_ERROR || !ngx_is_file(&fi)) {
        return NGX_ABORT;
    }

    *size = ngx_file_size(&fi);

    return NGX_OK;
}


/* a file opened by ngx_xmpp_admin_open() as the whole 200 answer */
ngx_int_t
ngx_xmpp_admin_send_file(ngx_http_request_t *r, ngx_fd_t fd, u_char *path,
    off_t size, ngx_str_t *type)
{
    ngx_buf_t  *b;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->file = ngx_pcalloc(r->pool, sizeof(ngx_file_t));
    if (b->file == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->file_pos = 0;
    b->file_last = size;
    b->in_file = size ? 1 : 0;
    b->last_buf = 1;
    b->last_in_chain = 1;
    b->file->fd = fd;
    b->file->name.data = path;
    b->file->name.len = ngx_strlen(path);
    b->file->log = r->connection->log;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = size;
    r->headers_out.content_type = *type;
    r->headers_out.content_type_len = type->len;

    return ngx_xmpp_http_send(r, b);
}


/* ngx_xmpp_admin_work_t (ngx_xmpp_admin.h): task and context, zeroed */
ngx_thread_task_t *
ngx_xmpp_admin_work_alloc(size_t size, ngx_log_t *log)
{
    ngx_thread_task_t  *task;

    task = ngx_calloc(sizeof(ngx_thread_task_t) + size, log);
    if (task == NULL) {
        return NULL;
    }

    task->ctx = task + 1;

    return task;
}


/* the request's answer, then what its connection posted meanwhile */
static void
ngx_xmpp_admin_work_answer(ngx_http_request_t *r, ngx_xmpp_admin_work_t *w,
    ngx_xmpp_admin_answer_pt answer)
{
    ngx_connection_t  *c;

    c = r->connection;

    ngx_http_finalize_request(r, answer(r, w));
    ngx_http_run_posted_requests(c);
}


static void
ngx_xmpp_admin_work_done(ngx_event_t *ev)
{
    ngx_thread_task_t  *task = ev->data;

    ngx_http_request_t     *r;
    ngx_xmpp_admin_work_t  *w;

    w = task->ctx;
    r = w->request;

    if (w->timer.timer_set) {
        ngx_del_timer(&w->timer);
    }

    if (r) {
        ngx_xmpp_admin_work_answer(r, w, w->finish);
    }

    if (w->end) {
        w->end(w, r == NULL, ev->log);
    }

    ngx_free(task);
}


/* the thread is late: answered now, the completion event frees the task */
static void
ngx_xmpp_admin_work_expire(ngx_event_t *ev)
{
    ngx_xmpp_admin_work_t  *w = ev->data;

    ngx_http_request_t  *r;

    r = w->request;
    w->request = NULL;

    ngx_xmpp_admin_work_answer(r, w, w->expire);
}


/* NGX_ERROR: not posted, the caller frees the task */
ngx_int_t
ngx_xmpp_admin_work_post(ngx_http_request_t *r, ngx_thread_pool_t *tp,
    ngx_thread_task_t *task, void (*handler)(void *data, ngx_log_t *log),
    ngx_msec_t timeout)
{
    ngx_xmpp_admin_work_t  *w;

    w = task->ctx;
    w->request = r;

    task->handler = handler;
    task->event.handler = ngx_xmpp_admin_work_done;
    task->event.data = task;
    task->event.log = ngx_cycle->log;

    if (tp == NULL || ngx_thread_task_post(tp, task) != NGX_OK) {
        return NGX_ERROR;
    }

    w->timer.handler = ngx_xmpp_admin_work_expire;
    w->timer.data = w;
    w->timer.log = r->connection->log;
    ngx_add_timer(&w->timer, timeout);

    return NGX_OK;
}


/*
 * A bare JID from a JSON string, lower-cased into out (size bytes): a
 * localpart alone gets "@<conclave_domain>"; a room (room != 0) must be
 * a full "room@service" JID.  A strict alphabet: nothing here ever
 * reaches SQL or a path unescaped, but a narrow one is also what a
 * directory login and a MUC room name are.
 */
ngx_int_t
ngx_xmpp_admin_json_jid(ngx_xmpp_conf_t *xcf, json_t *v, char *out,
    size_t size, ngx_uint_t room)
{
    u_char       c;
    size_t       len, i, at;
    const char  *s;

    if (!json_is_string(v)) {
        return NGX_ERROR;
    }

    s = json_string_value(v);
    len = json_string_length(v);
    at = 0;

    if (len == 0 || len + xcf->domain.len + 2 > size || len > 200) {
        return NGX_ERROR;
    }

    for (i = 0; i < len; i++) {
        c = ngx_tolower((u_char) s[i]);

        if (c == '@' && at == 0 && i > 0 && i < len - 1) {
            at = i;

        } else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
                     || c == '.' || c == '-' || c == '_'))
        {
            return NGX_ERROR;
        }

        out[i] = c;
    }

    out[len] = '\0';

    if (at == 0) {
        /* a room is always a full JID: its domain is the MUC service */
        if (room) {
            return NGX_ERROR;
        }

        ngx_snprintf((u_char *) out + len, size - len, "@%V%Z", &xcf->domain);
    }

    return NGX_OK;
}


/* Unix milliseconds from 1970 to 9999 as microseconds, or absent: 0 */
ngx_int_t
ngx_xmpp_admin_json_ms(json_t *v, int64_t *us)
{
    json_int_t  ms;

    *us = 0;

    if (v == NULL || json_is_null(v)) {
        return NGX_OK;
    }

    if (!json_is_integer(v)) {
        return NGX_ERROR;
    }

    ms = json_integer_value(v);

    /* 9999-12-31: the microseconds fit an int64_t with room to spare */
    if (ms <= 0 || ms > 253402300799999LL) {
        return NGX_ERROR;
    }

    *us = (int64_t) ms * 1000;

    return NGX_OK;
}



/* doc is stolen */
ngx_int_t
ngx_xmpp_admin_send_json(ngx_http_request_t *r, ngx_uint_t status,
    json_t *doc)
{
    char       *text;
    u_char     *p;
    size_t      len;
    ngx_buf_t  *b;

    if (doc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* ASCII only: nothing in the answer depends on the charset */
    text = json_dumps(doc, JSON_COMPACT|JSON_ENSURE_ASCII);
    json_decref(doc);

    if (text == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = ngx_strlen(text);

    b = ngx_create_temp_buf(r->pool, 6 * len + 1);
    if (b == NULL) {
        free(text);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * '<', '>' and '&' only occur inside JSON strings: as \u escapes
     * the answer holds no markup even for a client that sniffs
     */
    for (p = (u_char *) text; *p; p++) {
        if (*p == '<' || *p == '>' || *p == '&') {
            b->last = ngx_sprintf(b->last, "\\u%04xi", (ngx_int_t) *p);

        } else {
            *b->last++ = *p;
        }
    }

    *b->last++ = '\n';
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;
    free(text);

    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;

    return ngx_xmpp_http_send(r, b);
}


ngx_int_t
ngx_xmpp_admin_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code)
{
    json_t  *doc;

    doc = json_pack("{ss}", "error", code);

    if (status == NGX_HTTP_NOT_ALLOWED) {
        (void) ngx_xmpp_http_header(r, "Allow", "GET, POST");
    }

    return ngx_xmpp_admin_send_json(r, status, doc);
}


static void ngx_xmpp_admin_body(ngx_http_request_t *r);


/*
 * A JSON object body of at most NGX_XMPP_ADMIN_BODY_MAX bytes, read
 * without blocking; handler() gets it (or NULL) and answers.
 */
ngx_int_t
ngx_xmpp_admin_read_json(ngx_xmpp_admin_ctx_t *ctx,
    ngx_xmpp_admin_body_pt handler)
{
    ngx_http_request_t  *r;

    r = ctx->request;

    if (r->headers_in.content_length_n > NGX_XMPP_ADMIN_BODY_MAX) {
        return ngx_xmpp_admin_refuse(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                     "body-too-large");
    }

    ctx->body_handler = handler;

    return ngx_xmpp_http_read_body(r, ngx_xmpp_admin_body);
}


static void
ngx_xmpp_admin_body(ngx_http_request_t *r)
{
    u_char                 buf[NGX_XMPP_ADMIN_BODY_MAX], *p;
    size_t                 n;
    json_t                *body;
    ngx_int_t              rc;
    ngx_chain_t           *cl;
    ngx_xmpp_admin_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_conclave_module);

    p = buf;

    for (cl = r->request_body ? r->request_body->bufs : NULL;
         cl;
         cl = cl->next)
    {
        n = cl->buf->last - cl->buf->pos;

        if (cl->buf->in_file || n > (size_t) (buf + sizeof(buf) - p)) {
            ngx_http_finalize_request(r, ngx_xmpp_admin_error(r,
                                      NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                      "body-too-large"));
            return;
        }

        if (n) {
            p = ngx_cpymem(p, cl->buf->pos, n);
        }
    }

    body = json_loadb((char *) buf, p - buf, JSON_REJECT_DUPLICATES, NULL);

    /* a sign-in's password was in there */
    ngx_explicit_memzero(buf, sizeof(buf));

    if (body && !json_is_object(body)) {
        json_decref(body);
        body = NULL;
    }

    rc = ctx->body_handler(ctx, body);

    if (body) {
        json_decref(body);
    }

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


/*
 * A query argument, URL-decoded into the request's pool; NGX_DECLINED
 * when absent or empty, NGX_ERROR when longer than the limit or not
 * UTF-8 without control characters.
 */
ngx_int_t
ngx_xmpp_admin_arg(ngx_http_request_t *r, const char *name, ngx_str_t *out)
{
    u_char     *src, *dst, *p, *end;
    ngx_str_t   raw;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &raw) != NGX_OK
        || raw.len == 0)
    {
        return NGX_DECLINED;
    }

    if (raw.len > 3 * NGX_XMPP_ADMIN_ARG_MAX) {
        return NGX_ERROR;
    }

    dst = ngx_pnalloc(r->pool, raw.len + 1);
    if (dst == NULL) {
        return NGX_ERROR;
    }

    /* '+' is a space in a query string (HTML form encoding) */
    for (p = raw.data; p < raw.data + raw.len; p++) {
        if (*p == '+') {
            *p = ' ';
        }
    }

    src = raw.data;
    out->data = dst;
    ngx_unescape_uri(&dst, &src, raw.len, 0);
    out->len = dst - out->data;
    *dst = '\0';

    if (out->len == 0) {
        return NGX_DECLINED;
    }

    if (out->len > NGX_XMPP_ADMIN_ARG_MAX) {
        return NGX_ERROR;
    }

    p = out->data;
    end = p + out->len;

    while (p < end) {
        if (*p < 0x20 || *p == 0x7f) {
            return NGX_ERROR;
        }

        if (*p < 0x80) {
            p++;
            continue;
        }

        if (ngx_utf8_decode(&p, end - p) > 0x10ffff) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* a console action into the audit chain; params is stolen */
ngx_int_t
ngx_xmpp_admin_audit(ngx_xmpp_admin_ctx_t *ctx, const char *action,
    ngx_uint_t ok, const char *error, json_t *params)
{
    u_char              user[NGX_XMPP_ADMIN_USER_MAX + 256], sid[17], *ip;
    ngx_connection_t   *c;

    c = ctx->request->connection;

    if (ctx->sess.user_len) {
        ngx_snprintf(user, sizeof(user) - 1, "%*s@%V%Z", ctx->sess.user_len,
                     ctx->sess.user, &ctx->xcf->domain);
        user[sizeof(user) - 1] = '\0';
    }

    ngx_hex_dump(sid, ctx->sess.nonce, 8);
    sid[16] = '\0';

    ip = ngx_pnalloc(ctx->request->pool, c->addr_text.len + 1);
    if (ip == NULL) {
        if (params) {
            json_decref(params);
        }
        return NGX_ERROR;
    }

    *ngx_cpymem(ip, c->addr_text.data, c->addr_text.len) = '\0';

    return ngx_xmpp_audit_admin(ctx->xcf, c->log,
                                ctx->sess.user_len ? (char *) user : NULL,
                                (char *) ip,
                                ctx->sess.user_len ? (char *) sid : NULL,
                                action, ok, error, params);
}
