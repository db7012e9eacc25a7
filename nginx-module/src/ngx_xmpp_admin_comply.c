
/*
 * Legal holds and retention policies in the console (issue 8 item 6,
 * docs/console.md "Holds and retention", COMPLIANCE.md 7.4):
 *
 *   GET  holds, GET retention   policies, profile floors and holds
 *   POST holds      {"action": "create", "matter", "description",
 *                    "custodians": [...], "rooms": [...], "since",
 *                    "until"} or {"action": "release", "matter"}
 *   POST retention  {"action": "set", "scope", "target",
 *                    "messages_days", "signins_days"} or
 *                   {"action": "remove", "scope", "target"}
 *
 * Every change goes through the compliance engine conclavectl uses
 * (caud_hold_create/release, caud_policy_set/remove in
 * audit/src/caud_retention.c), which enforces the profile's floors and
 * writes its own record, with the prior and resulting state, into the
 * admin journal of the chain; the console adds its own record with the
 * session and address.  The engine blocks on MariaDB and on the admin
 * journal's lock, so it runs in a pool thread (the export pool), with
 * a timer on the event loop that answers 504 if the thread is late.
 */


#include "ngx_xmpp_admin.h"

#include <mysql.h>

#include "caud_comply.h"


#define NGX_XMPP_ADMIN_C_SHOW        0
#define NGX_XMPP_ADMIN_C_HOLD        1
#define NGX_XMPP_ADMIN_C_RELEASE     2
#define NGX_XMPP_ADMIN_C_SET         3
#define NGX_XMPP_ADMIN_C_REMOVE      4

#define NGX_XMPP_ADMIN_C_JIDS        64       /* custodians, rooms */
#define NGX_XMPP_ADMIN_C_LIST        (NGX_XMPP_ADMIN_C_JIDS * 256)


typedef struct {
    ngx_xmpp_admin_work_t  work;         /* first */
    ngx_xmpp_conf_t       *xcf;
    ngx_uint_t             op;
    char                   actor[NGX_XMPP_ADMIN_USER_MAX + 256];
    char                   matter[256];
    char                   description[1024];
    char                   scope[8];
    char                   target[256];
    char                   custodians[NGX_XMPP_ADMIN_C_LIST];
    char                   rooms[NGX_XMPP_ADMIN_C_LIST];
    int64_t                since_us;
    int64_t                until_us;
    int                    messages_days;
    int                    signins_days;

    /* the thread's */
    int                    rc;
    json_t                *result;
    char                   err[512];
} ngx_xmpp_admin_c_t;


static ngx_int_t ngx_xmpp_admin_hold_body(ngx_xmpp_admin_ctx_t *ctx,
    json_t *body);
static ngx_int_t ngx_xmpp_admin_policy_body(ngx_xmpp_admin_ctx_t *ctx,
    json_t *body);
static ngx_int_t ngx_xmpp_admin_c_post(ngx_xmpp_admin_ctx_t *ctx,
    ngx_thread_task_t *task);
static void ngx_xmpp_admin_c_thread(void *data, ngx_log_t *log);
static ngx_int_t ngx_xmpp_admin_c_late(ngx_http_request_t *r, void *data);
static void ngx_xmpp_admin_c_end(void *data, ngx_uint_t late,
    ngx_log_t *log);
static ngx_int_t ngx_xmpp_admin_c_finish(ngx_http_request_t *r,
    void *data);


static const char  *ngx_xmpp_admin_c_actions[] = {
    "holds", "hold", "hold-release", "retention", "retention-remove"
};


/* ------------------------------------------------------------------ */
/* the calls */

static ngx_thread_task_t *
ngx_xmpp_admin_c_create(ngx_xmpp_admin_ctx_t *ctx, ngx_uint_t op)
{
    ngx_thread_task_t   *task;
    ngx_xmpp_admin_c_t  *c;

    task = ngx_xmpp_admin_work_alloc(sizeof(ngx_xmpp_admin_c_t),
                                     ctx->request->connection->log);
    if (task == NULL) {
        return NULL;
    }

    c = task->ctx;
    c->work.finish = ngx_xmpp_admin_c_finish;
    c->work.expire = ngx_xmpp_admin_c_late;
    c->work.end = ngx_xmpp_admin_c_end;
    c->op = op;
    c->xcf = ctx->xcf;

    ngx_snprintf((u_char *) c->actor, sizeof(c->actor) - 1, "%*s@%V%Z",
                 ctx->sess.user_len, ctx->sess.user, &ctx->xcf->domain);

    return task;
}


/* GET holds, GET retention: one view of both */
ngx_int_t
ngx_xmpp_admin_holds(ngx_xmpp_admin_ctx_t *ctx)
{
    ngx_thread_task_t  *task;

    task = ngx_xmpp_admin_c_create(ctx, NGX_XMPP_ADMIN_C_SHOW);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_xmpp_admin_c_post(ctx, task);
}


ngx_int_t
ngx_xmpp_admin_hold(ngx_xmpp_admin_ctx_t *ctx)
{
    return ngx_xmpp_admin_read_json(ctx, ngx_xmpp_admin_hold_body);
}


ngx_int_t
ngx_xmpp_admin_policy(ngx_xmpp_admin_ctx_t *ctx)
{
    return ngx_xmpp_admin_read_json(ctx, ngx_xmpp_admin_policy_body);
}


/* ------------------------------------------------------------------ */
/* checking the bodies (event loop) */

/* an array of JIDs (ngx_xmpp_admin_json_jid) into "a@x,b@x" */
static ngx_int_t
ngx_xmpp_admin_c_jids(ngx_xmpp_conf_t *xcf, json_t *v, char *out,
    ngx_uint_t room)
{
    char    jid[256];
    size_t  i, used, len;

    out[0] = '\0';

    if (v == NULL || json_is_null(v)) {
        return NGX_OK;
    }

    if (!json_is_array(v) || json_array_size(v) > NGX_XMPP_ADMIN_C_JIDS) {
        return NGX_ERROR;
    }

    used = 0;

    for (i = 0; i < json_array_size(v); i++) {
        if (ngx_xmpp_admin_json_jid(xcf, json_array_get(v, i), jid,
                                 sizeof(jid), room)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        len = ngx_strlen(jid);

        if (used + len + 2 > NGX_XMPP_ADMIN_C_LIST) {
            return NGX_ERROR;
        }

        if (used) {
            out[used++] = ',';
        }

        ngx_memcpy(out + used, jid, len + 1);
        used += len;
    }

    return NGX_OK;
}


/* printable UTF-8 of at most size - 1 bytes, or absent when optional */
static ngx_int_t
ngx_xmpp_admin_c_text(json_t *v, char *out, size_t size, ngx_uint_t need)
{
    size_t   len, i;
    u_char  *s;

    out[0] = '\0';

    if (v == NULL || json_is_null(v)) {
        return need ? NGX_ERROR : NGX_OK;
    }

    if (!json_is_string(v)) {
        return NGX_ERROR;
    }

    s = (u_char *) json_string_value(v);
    len = json_string_length(v);

    if ((need && len == 0) || len >= size) {
        return NGX_ERROR;
    }

    /* jansson checked the UTF-8; control characters are refused */
    for (i = 0; i < len; i++) {
        if (s[i] < 0x20 || s[i] == 0x7f) {
            return NGX_ERROR;
        }
    }

    ngx_memcpy(out, s, len + 1);

    return NGX_OK;
}


static ngx_int_t
ngx_xmpp_admin_c_days(json_t *v, int *days)
{
    json_int_t  d;

    if (!json_is_integer(v)) {
        return NGX_ERROR;
    }

    d = json_integer_value(v);

    /* the engine checks the profile's floor; this is the value's range */
    if (d != CAUD_DAYS_FOREVER && (d < 1 || d > 365 * 100)) {
        return NGX_ERROR;
    }

    *days = (int) d;

    return NGX_OK;
}


static ngx_int_t
ngx_xmpp_admin_c_refuse(ngx_xmpp_admin_ctx_t *ctx, ngx_thread_task_t *task,
    const char *action)
{
    ngx_free(task);

    (void) ngx_xmpp_admin_audit(ctx, action, 0, "bad-request", NULL);

    return ngx_xmpp_admin_error(ctx->request, NGX_HTTP_BAD_REQUEST,
                                "bad-request");
}


static ngx_int_t
ngx_xmpp_admin_hold_body(ngx_xmpp_admin_ctx_t *ctx, json_t *body)
{
    json_t              *a;
    const char          *action;
    ngx_thread_task_t   *task;
    ngx_xmpp_admin_c_t  *c;

    a = body ? json_object_get(body, "action") : NULL;
    action = json_is_string(a) ? json_string_value(a) : "";

    task = ngx_xmpp_admin_c_create(ctx, ngx_strcmp(action, "release") == 0
                                        ? NGX_XMPP_ADMIN_C_RELEASE
                                        : NGX_XMPP_ADMIN_C_HOLD);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    c = (ngx_xmpp_admin_c_t *) (task + 1);

    if (ngx_strcmp(action, "release") == 0) {
        if (json_object_size(body) != 2
            || ngx_xmpp_admin_c_text(json_object_get(body, "matter"),
                                     c->matter, sizeof(c->matter), 1)
               != NGX_OK)
        {
            return ngx_xmpp_admin_c_refuse(ctx, task, "hold-release");
        }

        return ngx_xmpp_admin_c_post(ctx, task);
    }

    if (ngx_strcmp(action, "create") != 0
        || ngx_xmpp_admin_c_text(json_object_get(body, "matter"), c->matter,
                                 sizeof(c->matter), 1) != NGX_OK
        || ngx_xmpp_admin_c_text(json_object_get(body, "description"),
                                 c->description, sizeof(c->description), 0)
           != NGX_OK
        || ngx_xmpp_admin_c_jids(ctx->xcf,
                                 json_object_get(body, "custodians"),
                                 c->custodians, 0) != NGX_OK
        || ngx_xmpp_admin_c_jids(ctx->xcf, json_object_get(body, "rooms"),
                                 c->rooms, 1) != NGX_OK
        || ngx_xmpp_admin_json_ms(json_object_get(body, "since"), &c->since_us)
           != NGX_OK
        || ngx_xmpp_admin_json_ms(json_object_get(body, "until"), &c->until_us)
           != NGX_OK
        || (c->custodians[0] == '\0' && c->rooms[0] == '\0'))
    {
        return ngx_xmpp_admin_c_refuse(ctx, task, "hold");
    }

    return ngx_xmpp_admin_c_post(ctx, task);
}


static ngx_int_t
ngx_xmpp_admin_policy_body(ngx_xmpp_admin_ctx_t *ctx, json_t *body)
{
    json_t              *a, *t;
    ngx_uint_t           op, room;
    const char          *action;
    ngx_thread_task_t   *task;
    ngx_xmpp_admin_c_t  *c;

    a = body ? json_object_get(body, "action") : NULL;
    action = json_is_string(a) ? json_string_value(a) : "";
    op = ngx_strcmp(action, "remove") == 0 ? NGX_XMPP_ADMIN_C_REMOVE
                                            : NGX_XMPP_ADMIN_C_SET;

    task = ngx_xmpp_admin_c_create(ctx, op);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    c = (ngx_xmpp_admin_c_t *) (task + 1);

    if ((op == NGX_XMPP_ADMIN_C_SET && ngx_strcmp(action, "set") != 0)
        || ngx_xmpp_admin_c_text(json_object_get(body, "scope"), c->scope,
                                 sizeof(c->scope), 1) != NGX_OK
        || (ngx_strcmp(c->scope, "global") != 0
            && ngx_strcmp(c->scope, "room") != 0
            && ngx_strcmp(c->scope, "user") != 0))
    {
        return ngx_xmpp_admin_c_refuse(ctx, task, ngx_xmpp_admin_c_actions[op]);
    }

    t = json_object_get(body, "target");
    room = (c->scope[0] == 'r');

    if (c->scope[0] == 'g') {
        if (t && !json_is_null(t)
            && !(json_is_string(t) && json_string_length(t) == 0))
        {
            return ngx_xmpp_admin_c_refuse(ctx, task,
                                           ngx_xmpp_admin_c_actions[op]);
        }

    } else if (ngx_xmpp_admin_json_jid(ctx->xcf, t, c->target,
                                    sizeof(c->target), room)
               != NGX_OK)
    {
        return ngx_xmpp_admin_c_refuse(ctx, task, ngx_xmpp_admin_c_actions[op]);
    }

    if (op == NGX_XMPP_ADMIN_C_SET
        && (ngx_xmpp_admin_c_days(json_object_get(body, "messages_days"),
                                  &c->messages_days) != NGX_OK
            || ngx_xmpp_admin_c_days(json_object_get(body, "signins_days"),
                                     &c->signins_days) != NGX_OK))
    {
        return ngx_xmpp_admin_c_refuse(ctx, task, ngx_xmpp_admin_c_actions[op]);
    }

    return ngx_xmpp_admin_c_post(ctx, task);
}


/* ------------------------------------------------------------------ */
/* the thread and the answer */

static ngx_int_t
ngx_xmpp_admin_c_post(ngx_xmpp_admin_ctx_t *ctx, ngx_thread_task_t *task)
{
    ngx_msec_t           timeout;
    ngx_http_request_t  *r;

    r = ctx->request;

    /* a few statements, each bounded by the audit database timeout, and
     * the admin journal's lock (at most 10 s) */
    timeout = 4 * ctx->xcf->db_timeout + 15000;

    if (ngx_xmpp_admin_work_post(r, ctx->xcf->admin_export_pool, task,
                                 ngx_xmpp_admin_c_thread, timeout)
        != NGX_OK)
    {
        ngx_free(task);
        return ngx_xmpp_admin_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "busy");
    }

    /* a GET returns NGX_DONE to the content phase: the answer needs a
     * reference of its own; a POST answers from its body handler */
    if (r->method == NGX_HTTP_GET) {
        r->main->count++;
    }

    return NGX_DONE;
}


static void
ngx_xmpp_admin_c_thread(void *data, ngx_log_t *log)
{
    ngx_xmpp_admin_c_t *c = data;

    caud_hold_t       h;
    caud_admin_t      adm;
    caud_policy_t     p;
    caud_db_opts_t    db;
    ngx_xmpp_conf_t  *xcf;

    xcf = c->xcf;

    (void) mysql_thread_init();

    ngx_memzero(&db, sizeof(caud_db_opts_t));
    db.host = (const char *) xcf->db_host.data;
    db.port = (unsigned) xcf->db_port;
    db.socket = (const char *) xcf->db_socket.data;
    db.user = (const char *) xcf->db_user.data;
    db.password = (const char *) xcf->db_password.data;
    db.database = (const char *) xcf->db_name.data;
    db.timeout_s = (unsigned) ((xcf->db_timeout + 999) / 1000);

    ngx_memzero(&adm, sizeof(caud_admin_t));
    adm.dir = (const char *) xcf->audit_dir.data;
    adm.node = (const char *) xcf->audit_node.data;
    adm.origin_prefix = (const char *) xcf->audit_origin.data;
    adm.key = (const char *) xcf->audit_key.data;
    adm.db = &db;

    switch (c->op) {

    case NGX_XMPP_ADMIN_C_SHOW:
        c->result = caud_retention_show(&db, c->err, sizeof(c->err));
        c->rc = c->result ? 0 : -1;
        break;

    case NGX_XMPP_ADMIN_C_HOLD:
        ngx_memzero(&h, sizeof(caud_hold_t));
        h.matter = c->matter;
        h.description = c->description;
        h.custodians = c->custodians;
        h.rooms = c->rooms;
        h.since_us = c->since_us;
        h.until_us = c->until_us;
        c->rc = caud_hold_create(&db, &adm, c->actor, &h, c->err,
                                 sizeof(c->err));
        break;

    case NGX_XMPP_ADMIN_C_RELEASE:
        c->rc = caud_hold_release(&db, &adm, c->actor, c->matter, c->err,
                                  sizeof(c->err));
        break;

    case NGX_XMPP_ADMIN_C_SET:
        p.scope = c->scope;
        p.target = c->target;
        p.messages_days = c->messages_days;
        p.signins_days = c->signins_days;
        c->rc = caud_policy_set(&db, &adm, c->actor, &p, c->err,
                                sizeof(c->err));
        break;

    default: /* NGX_XMPP_ADMIN_C_REMOVE */
        c->rc = caud_policy_remove(&db, &adm, c->actor, c->scope, c->target,
                                   c->err, sizeof(c->err));
        break;
    }

    caud_db_thread_end();
}


/* after the thread, whoever was answered */
static void
ngx_xmpp_admin_c_end(void *data, ngx_uint_t late, ngx_log_t *log)
{
    ngx_xmpp_admin_c_t *c = data;

    if (late && c->rc == 0 && c->op != NGX_XMPP_ADMIN_C_SHOW) {
        /* answered 504, done after all: the engine's record says so */
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "xmpp: console: a late %s by \"%s\" was applied",
                      ngx_xmpp_admin_c_actions[c->op], c->actor);
    }

    if (c->result) {
        json_decref(c->result);
        c->result = NULL;
    }
}


/* the timer: the engine is late; the thread may still apply the change */
static ngx_int_t
ngx_xmpp_admin_c_late(ngx_http_request_t *r, void *data)
{
    ngx_xmpp_admin_c_t *c = data;

    ngx_xmpp_admin_ctx_t  *ctx;

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "xmpp: console: the compliance engine did not answer "
                  "a %s in time", ngx_xmpp_admin_c_actions[c->op]);

    ctx = ngx_http_get_module_ctx(r, ngx_http_conclave_module);

    (void) ngx_xmpp_admin_audit(ctx, ngx_xmpp_admin_c_actions[c->op], 0,
                                "timeout", NULL);

    return ngx_xmpp_admin_error(r, NGX_HTTP_GATEWAY_TIME_OUT, "timeout");
}


static json_t *
ngx_xmpp_admin_c_params(ngx_xmpp_admin_c_t *c)
{
    switch (c->op) {

    case NGX_XMPP_ADMIN_C_HOLD:
        return json_pack("{sssssssssIsI}", "matter", c->matter,
                         "description", c->description, "custodians",
                         c->custodians, "rooms", c->rooms, "since",
                         (json_int_t) (c->since_us / 1000), "until",
                         (json_int_t) (c->until_us / 1000));

    case NGX_XMPP_ADMIN_C_RELEASE:
        return json_pack("{ss}", "matter", c->matter);

    case NGX_XMPP_ADMIN_C_SET:
        return json_pack("{sssssisi}", "scope", c->scope, "target",
                         c->target, "messages_days", c->messages_days,
                         "signins_days", c->signins_days);

    case NGX_XMPP_ADMIN_C_REMOVE:
        return json_pack("{ssss}", "scope", c->scope, "target", c->target);

    default:
        return NULL;
    }
}


static ngx_int_t
ngx_xmpp_admin_c_finish(ngx_http_request_t *r, void *data)
{
    ngx_xmpp_admin_c_t *c = data;

    json_t                *params;
    ngx_uint_t             db_fault;
    const char            *action;
    ngx_xmpp_admin_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_conclave_module);
    action = ngx_xmpp_admin_c_actions[c->op];

    if (c->op == NGX_XMPP_ADMIN_C_SHOW) {
        if (c->rc != 0) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "xmpp: console: holds and policies: %s", c->err);
            return ngx_xmpp_admin_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                        "database-unavailable");
        }

        (void) ngx_xmpp_admin_audit(ctx, "holds", 1, NULL, NULL);

        return ngx_xmpp_admin_send_json(r, NGX_HTTP_OK,
                                        json_incref(c->result));
    }

    params = ngx_xmpp_admin_c_params(c);

    if (c->rc == 0) {
        (void) ngx_xmpp_admin_audit(ctx, action, 1, NULL, params);
        return ngx_xmpp_admin_send_json(r, NGX_HTTP_OK,
                                        json_pack("{sb}", "ok", 1));
    }

    /*
     * The engine's reasons are its own sentences ("below the compliance
     * profile's floor", "already has an active hold"): shown as they
     * are, except the database's, which stay in the error log.
     */
    db_fault = ngx_strncmp(c->err, "mariadb:", 8) == 0
               || ngx_strncmp(c->err, "audit", 5) == 0;

    if (db_fault) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "xmpp: console: %s by \"%s\" failed: %s", action,
                      c->actor, c->err);

    } else {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "xmpp: console: %s by \"%s\" refused: %s", action,
                      c->actor, c->err);
    }

    if (params && !db_fault) {
        json_object_set_new(params, "reason", json_string(c->err));
    }

    (void) ngx_xmpp_admin_audit(ctx, action, 0,
                                db_fault ? "unavailable" : "refused",
                                params);

    if (db_fault) {
        return ngx_xmpp_admin_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "unavailable");
    }

    return ngx_xmpp_admin_send_json(r, 422, json_pack("{ssss}", "error",
                                    "refused", "reason", c->err));
}
