
/*
 * Conclave's admin console: what ngx_xmpp_admin.c (HTTP, sign-in,
 * cookies, roles, operations) and ngx_xmpp_admin_db.c (the MariaDB
 * queries) share.  Only the two admin files include this header.
 */


#ifndef _NGX_XMPP_ADMIN_H_INCLUDED_
#define _NGX_XMPP_ADMIN_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <jansson.h>

#include "ngx_xmpp.h"
#include "ngx_xmpp_http.h"


/*
 * Console roles are the directory's role bits (NGX_XMPP_ROLE_*, the
 * bit number indexes admin_role_group[] and admin_dir[]); only the
 * groups that grant them come from conclave_admin_role_group.
 */
#define NGX_XMPP_ADMIN_ROLE_ADMIN       NGX_XMPP_ROLE_ADMIN
#define NGX_XMPP_ADMIN_ROLE_COMPLIANCE  NGX_XMPP_ROLE_COMPLIANCE
#define NGX_XMPP_ADMIN_ROLE_AUDITOR     NGX_XMPP_ROLE_AUDITOR

/* the first and the end of the console's role bit numbers */
#define NGX_XMPP_ADMIN_ROLE_FIRST       1
#define NGX_XMPP_ADMIN_ROLES            CDIR_NROLES

#define NGX_XMPP_ADMIN_USER_MAX         64
#define NGX_XMPP_ADMIN_NONCE_LEN        16
#define NGX_XMPP_ADMIN_PAGE             50
#define NGX_XMPP_ADMIN_ARG_MAX          256
#define NGX_XMPP_ADMIN_BODY_MAX         4096

/* the package's state directory (packaging/); conclave_admin_export_dir */
#define NGX_XMPP_ADMIN_EXPORT_DIR       "/var/lib/conclave/exports"
#define NGX_XMPP_ADMIN_PATH_MAX         3000  /* conclave_admin_export_dir */


/* one signed-in console user, as the cookie says */
typedef struct {
    u_char                 user[NGX_XMPP_ADMIN_USER_MAX + 1];
    size_t                 user_len;
    ngx_uint_t             roles;
    time_t                 issued;
    time_t                 last;
    u_char                 nonce[NGX_XMPP_ADMIN_NONCE_LEN];
} ngx_xmpp_admin_sess_t;


typedef struct ngx_xmpp_admin_ctx_s  ngx_xmpp_admin_ctx_t;

typedef ngx_int_t (*ngx_xmpp_admin_api_pt)(ngx_xmpp_admin_ctx_t *ctx);
/* body: the parsed JSON object, NULL when the body was not one */
typedef ngx_int_t (*ngx_xmpp_admin_body_pt)(ngx_xmpp_admin_ctx_t *ctx,
    json_t *body);


/* per request (the module's request ctx) */
struct ngx_xmpp_admin_ctx_s {
    ngx_http_request_t    *request;
    ngx_xmpp_conf_t       *xcf;
    ngx_xmpp_admin_sess_t  sess;
    ngx_xmpp_admin_body_pt body_handler;
    const char            *refused;       /* why the cookie was not ok */
    unsigned               signed_in:1;
};


/*
 * Console work in a thread pool (sign-in, holds and retention): the
 * thread task and the call's context in one heap block, since a late
 * thread may outlive the request.  The context begins with
 * ngx_xmpp_admin_work_t.  A timer answers the request when the thread
 * is late (expire(), after which request is NULL); otherwise the
 * completion event answers it (finish()).  Either way the completion
 * event then calls end(), if any, and frees the block.
 */
typedef ngx_int_t (*ngx_xmpp_admin_answer_pt)(ngx_http_request_t *r,
    void *data);
typedef void (*ngx_xmpp_admin_end_pt)(void *data, ngx_uint_t late,
    ngx_log_t *log);

typedef struct {
    ngx_http_request_t        *request;
    ngx_event_t                timer;
    ngx_xmpp_admin_answer_pt   finish;
    ngx_xmpp_admin_answer_pt   expire;
    ngx_xmpp_admin_end_pt      end;
} ngx_xmpp_admin_work_t;


/* ngx_xmpp_admin.c */
ngx_int_t ngx_xmpp_admin_handler(ngx_http_request_t *r,
    ngx_xmpp_conf_t *xcf);
ngx_thread_task_t *ngx_xmpp_admin_work_alloc(size_t size, ngx_log_t *log);
ngx_int_t ngx_xmpp_admin_work_post(ngx_http_request_t *r,
    ngx_thread_pool_t *tp, ngx_thread_task_t *task,
    void (*handler)(void *data, ngx_log_t *log), ngx_msec_t timeout);
ngx_int_t ngx_xmpp_admin_send_json(ngx_http_request_t *r, ngx_uint_t status,
    json_t *doc);
ngx_int_t ngx_xmpp_admin_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code);
ngx_int_t ngx_xmpp_admin_read_json(ngx_xmpp_admin_ctx_t *ctx,
    ngx_xmpp_admin_body_pt handler);
ngx_int_t ngx_xmpp_admin_arg(ngx_http_request_t *r, const char *name,
    ngx_str_t *out);
ngx_int_t ngx_xmpp_admin_json_ms(json_t *v, int64_t *us);
ngx_int_t ngx_xmpp_admin_json_jid(ngx_xmpp_conf_t *xcf, json_t *v,
    char *out, size_t size, ngx_uint_t room);
ngx_int_t ngx_xmpp_admin_open(ngx_http_request_t *r, u_char *path,
    ngx_fd_t *fd, off_t *size);
ngx_int_t ngx_xmpp_admin_send_file(ngx_http_request_t *r, ngx_fd_t fd,
    u_char *path, off_t size, ngx_str_t *type);
ngx_int_t ngx_xmpp_admin_audit(ngx_xmpp_admin_ctx_t *ctx,
    const char *action, ngx_uint_t ok, const char *error, json_t *params);

/* ngx_xmpp_admin_session.c: the signed session cookie and CSRF token */
ngx_int_t ngx_xmpp_admin_session(ngx_xmpp_admin_ctx_t *ctx);
ngx_int_t ngx_xmpp_admin_csrf_ok(ngx_xmpp_admin_ctx_t *ctx);
ngx_int_t ngx_xmpp_admin_cookie(ngx_xmpp_admin_ctx_t *ctx, ngx_uint_t clear);
void ngx_xmpp_admin_csrf(ngx_xmpp_admin_ctx_t *ctx, u_char *out);
void ngx_xmpp_admin_drop_cookies(ngx_http_request_t *r);
ngx_int_t ngx_xmpp_admin_me(ngx_xmpp_admin_ctx_t *ctx);

/* ngx_xmpp_admin_auth.c: sign-in, sign-out, throttling, revocation */
char *ngx_xmpp_admin_zone_add(ngx_conf_t *cf, ngx_xmpp_conf_t *xcf);
ngx_int_t ngx_xmpp_admin_signin(ngx_xmpp_admin_ctx_t *ctx);
ngx_int_t ngx_xmpp_admin_signout(ngx_xmpp_admin_ctx_t *ctx);
ngx_int_t ngx_xmpp_admin_revoked(ngx_xmpp_conf_t *xcf, u_char *nonce);
void ngx_xmpp_admin_forged(ngx_xmpp_admin_ctx_t *ctx);
extern ngx_str_t  ngx_xmpp_admin_role_names[];

/* ngx_xmpp_admin_ops.c: operations views for admins */
ngx_int_t ngx_xmpp_admin_sessions(ngx_xmpp_admin_ctx_t *ctx);
ngx_int_t ngx_xmpp_admin_kick(ngx_xmpp_admin_ctx_t *ctx);
ngx_int_t ngx_xmpp_admin_unlock(ngx_xmpp_admin_ctx_t *ctx);
ngx_int_t ngx_xmpp_admin_local_part(ngx_xmpp_conf_t *xcf, u_char *in,
    size_t *len);
ngx_int_t ngx_xmpp_admin_status(ngx_xmpp_admin_ctx_t *ctx);

/* ngx_xmpp_admin_export.c: export jobs and their downloads */
char *ngx_xmpp_admin_export_conf(ngx_conf_t *cf, ngx_xmpp_conf_t *xcf);
ngx_int_t ngx_xmpp_admin_export(ngx_xmpp_admin_ctx_t *ctx);
ngx_int_t ngx_xmpp_admin_exports(ngx_xmpp_admin_ctx_t *ctx);
ngx_int_t ngx_xmpp_admin_download(ngx_xmpp_admin_ctx_t *ctx);
ngx_int_t ngx_xmpp_admin_safe_name(const char *name);

/* ngx_xmpp_admin_expire.c: conclave_admin_export_keep */
void ngx_xmpp_admin_expire_init_worker(ngx_cycle_t *cycle,
    ngx_xmpp_conf_t *xcf);
void ngx_xmpp_admin_expire_exit_worker(void);

/* ngx_xmpp_admin_comply.c: legal holds and retention policies */
ngx_int_t ngx_xmpp_admin_holds(ngx_xmpp_admin_ctx_t *ctx);
ngx_int_t ngx_xmpp_admin_hold(ngx_xmpp_admin_ctx_t *ctx);
ngx_int_t ngx_xmpp_admin_policy(ngx_xmpp_admin_ctx_t *ctx);

/* ngx_xmpp_admin_db.c: GET handlers over audit_record */
ngx_int_t ngx_xmpp_admin_search(ngx_xmpp_admin_ctx_t *ctx);
ngx_int_t ngx_xmpp_admin_conversation(ngx_xmpp_admin_ctx_t *ctx);
ngx_int_t ngx_xmpp_admin_signins(ngx_xmpp_admin_ctx_t *ctx);
ngx_int_t ngx_xmpp_admin_audit_log(ngx_xmpp_admin_ctx_t *ctx);


#endif /* _NGX_XMPP_ADMIN_H_INCLUDED_ */
