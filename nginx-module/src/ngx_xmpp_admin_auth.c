
/*
 * Console sign-in: the LDAP account, and a role from the directory
 * groups named by conclave_admin_role_group (issue 8 item 2).
 *
 * The directory work runs in the thread pool LDAP sign-ins use
 * (conclave_thread_pool) with one cdir handle per role, each checking
 * membership of its group before it binds as the user; a user in no
 * role group is refused without a bind.  A timer on the event loop
 * answers 503 if the directory takes longer than the handles' own
 * bound.  Failures are counted per login and per client address in
 * shared memory (all workers see them): after conclave_admin_max_failures
 * in conclave_admin_lockout both are refused with 429 until the lockout
 * ends, without asking the directory.  Every attempt is an audit
 * record, the refusals of a lockout summarised (see below); the
 * password never leaves the thread's buffer.
 */


#include "ngx_xmpp_admin.h"

#include <openssl/rand.h>


#define NGX_XMPP_ADMIN_FAIL_SLOTS     1024
#define NGX_XMPP_ADMIN_REVOKED_SLOTS  512
#define NGX_XMPP_ADMIN_ZONE_SIZE      (256 * 1024)


typedef struct {
    u_char                 nonce[NGX_XMPP_ADMIN_NONCE_LEN];
    time_t                 expires;
} ngx_xmpp_admin_revoked_t;


typedef struct {
    ngx_xmpp_fail_t           fail[NGX_XMPP_ADMIN_FAIL_SLOTS];  /* keys
                                   "u:login", "i:ip" (ngx_xmpp_fail.c) */
    ngx_xmpp_admin_revoked_t  revoked[NGX_XMPP_ADMIN_REVOKED_SLOTS];
    ngx_uint_t                next_revoked;
} ngx_xmpp_admin_shm_t;


typedef struct {
    ngx_xmpp_admin_work_t  work;         /* first */
    ngx_xmpp_conf_t       *xcf;
    ngx_uint_t             roles;
    cdir_status_e          status;
    char                   reason[320];   /* cdir_auth_result_t's */
    size_t                 login_len;
    size_t                 pw_len;
    u_char                 login[NGX_XMPP_ADMIN_USER_MAX + 1];
    u_char                 name[CDIR_MAX_LOGIN + 1];  /* the directory's */
    u_char                 pw[CDIR_MAX_PASSWORD];
} ngx_xmpp_admin_signin_t;


static ngx_int_t ngx_xmpp_admin_zone_init(ngx_shm_zone_t *zone, void *data);
static ngx_int_t ngx_xmpp_admin_signin_start(ngx_xmpp_admin_ctx_t *ctx,
    json_t *body);
static ngx_int_t ngx_xmpp_admin_throttled(ngx_xmpp_admin_ctx_t *ctx,
    time_t left);
static ngx_int_t ngx_xmpp_admin_signin_post(ngx_xmpp_admin_ctx_t *ctx,
    const char *pw, size_t pw_len);
static void ngx_xmpp_admin_signin_thread(void *data, ngx_log_t *log);
static ngx_int_t ngx_xmpp_admin_signin_late(ngx_http_request_t *r,
    void *data);
static ngx_int_t ngx_xmpp_admin_signin_finish(ngx_http_request_t *r,
    void *data);


/* ------------------------------------------------------------------ */
/* shared memory: failures and signed-out sessions */

char *
ngx_xmpp_admin_zone_add(ngx_conf_t *cf, ngx_xmpp_conf_t *xcf)
{
    ngx_str_t        name;
    ngx_shm_zone_t  *zone;

    ngx_str_set(&name, "conclave_admin");

    zone = ngx_shared_memory_add(cf, &name, NGX_XMPP_ADMIN_ZONE_SIZE,
                                 &ngx_http_conclave_module);
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->init = ngx_xmpp_admin_zone_init;
    xcf->admin_zone = zone;

    return NGX_CONF_OK;
}


/* a reload keeps the counts: a lockout survives "nginx -s reload" */
static ngx_int_t
ngx_xmpp_admin_zone_init(ngx_shm_zone_t *zone, void *data)
{
    ngx_slab_pool_t       *shpool;
    ngx_xmpp_admin_shm_t  *sh;

    if (data) {
        zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (zone->shm.exists) {
        zone->data = shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_calloc(shpool, sizeof(ngx_xmpp_admin_shm_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    shpool->data = sh;
    zone->data = sh;

    return NGX_OK;
}


#define ngx_xmpp_admin_shpool(xcf)                                         \
    ((ngx_slab_pool_t *) (xcf)->admin_zone->shm.addr)


/* seconds until key may try again, 0 now */
static time_t
ngx_xmpp_admin_locked(ngx_xmpp_conf_t *xcf, uint32_t key)
{
    ngx_xmpp_admin_shm_t  *sh = xcf->admin_zone->data;

    return ngx_xmpp_fail_locked(ngx_xmpp_admin_shpool(xcf), sh->fail,
                                NGX_XMPP_ADMIN_FAIL_SLOTS, key,
                                xcf->admin_lockout / 1000);
}


static void
ngx_xmpp_admin_count(ngx_xmpp_conf_t *xcf, uint32_t key, ngx_uint_t failed)
{
    ngx_xmpp_admin_shm_t  *sh = xcf->admin_zone->data;

    (void) ngx_xmpp_fail_count(ngx_xmpp_admin_shpool(xcf), sh->fail,
                               NGX_XMPP_ADMIN_FAIL_SLOTS, key, failed,
                               xcf->admin_lockout / 1000,
                               xcf->admin_max_failures);
}


ngx_int_t
ngx_xmpp_admin_revoked(ngx_xmpp_conf_t *xcf, u_char *nonce)
{
    ngx_int_t              found;
    ngx_uint_t             i;
    ngx_slab_pool_t       *shpool;
    ngx_xmpp_admin_shm_t  *sh;

    shpool = ngx_xmpp_admin_shpool(xcf);
    sh = xcf->admin_zone->data;
    found = 0;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < NGX_XMPP_ADMIN_REVOKED_SLOTS; i++) {
        if (sh->revoked[i].expires
            && ngx_memcmp(sh->revoked[i].nonce, nonce,
                          NGX_XMPP_ADMIN_NONCE_LEN) == 0)
        {
            found = 1;
            break;
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return found;
}


/*
 * A ring: with more than NGX_XMPP_ADMIN_REVOKED_SLOTS sign-outs within
 * one absolute timeout the oldest entry is reused early (its cookie is
 * then only bounded by the idle timeout again).
 */
static void
ngx_xmpp_admin_revoke(ngx_xmpp_conf_t *xcf, ngx_xmpp_admin_sess_t *s)
{
    ngx_slab_pool_t           *shpool;
    ngx_xmpp_admin_shm_t      *sh;
    ngx_xmpp_admin_revoked_t  *rv;

    shpool = ngx_xmpp_admin_shpool(xcf);
    sh = xcf->admin_zone->data;

    ngx_shmtx_lock(&shpool->mutex);

    rv = &sh->revoked[sh->next_revoked++ % NGX_XMPP_ADMIN_REVOKED_SLOTS];
    ngx_memcpy(rv->nonce, s->nonce, NGX_XMPP_ADMIN_NONCE_LEN);
    rv->expires = s->issued + xcf->admin_session_timeout / 1000;

    ngx_shmtx_unlock(&shpool->mutex);
}


/* ------------------------------------------------------------------ */
/*
 * Refusals anyone can cause at any rate: forged or malformed session
 * cookies, and sign-ins while their login or address is locked out.  A
 * record per request would let an anonymous client grow the audit
 * chain at will.  Each one is logged (the client's address, never the
 * cookie or password); the chain gets the first of a quiet period at
 * once and then, per worker and kind, at most one summary per
 * conclave_admin_forged_summary with the count, the period and the last
 * client's address (and login).  A worker that exits writes what is
 * pending, so the counts of the records add up to every refusal.
 */

typedef struct {
    ngx_event_t            ev;
    ngx_connection_t       dumb;      /* timer events log as connections */
    ngx_xmpp_conf_t       *xcf;
    const char            *action;
    const char            *code;
    ngx_uint_t             pending;
    time_t                 since;
    u_char                 ip[NGX_SOCKADDR_STRLEN + 1];
    size_t                 user_len;  /* 0: none */
    u_char                 user[NGX_XMPP_ADMIN_USER_MAX];
} ngx_xmpp_admin_summary_t;


static ngx_xmpp_admin_summary_t  ngx_xmpp_admin_forged_st;
static ngx_xmpp_admin_summary_t  ngx_xmpp_admin_throttled_st;


static void
ngx_xmpp_admin_summary_flush(ngx_xmpp_admin_summary_t *f, ngx_log_t *log)
{
    u_char   user[NGX_XMPP_ADMIN_USER_MAX + 256];
    json_t  *params;

    if (f->pending == 0) {
        return;
    }

    if (f->user_len) {
        ngx_snprintf(user, sizeof(user) - 1, "%*s@%V%Z", f->user_len,
                     f->user, &f->xcf->domain);
        user[sizeof(user) - 1] = '\0';
    }

    params = json_pack("{sIsIsI}", "count", (json_int_t) f->pending,
                       "since", (json_int_t) f->since,
                       "until", (json_int_t) ngx_time());

    if (ngx_xmpp_audit_admin(f->xcf, log,
                             f->user_len ? (char *) user : NULL,
                             (char *) f->ip, NULL, f->action, 0, f->code,
                             params)
        == NGX_OK)
    {
        f->pending = 0;
    }
}


static void
ngx_xmpp_admin_summary_timer(ngx_event_t *ev)
{
    ngx_connection_t          *c = ev->data;
    ngx_xmpp_admin_summary_t  *f = c->data;

    if (f->pending == 0) {
        /* a quiet period: the next one is recorded at once */
        return;
    }

    ngx_xmpp_admin_summary_flush(f, ev->log);

    f->since = ngx_time();
    ngx_add_timer(ev, f->xcf->admin_forged_summary);
}


/*
 * One refusal of f's kind, counted.  NGX_ERROR: it was the first of a
 * quiet period and its record could not be written.
 */
static ngx_int_t
ngx_xmpp_admin_summarise(ngx_xmpp_admin_ctx_t *ctx,
    ngx_xmpp_admin_summary_t *f, const char *action, const char *code)
{
    ngx_str_t  *ip;

    ip = &ctx->request->connection->addr_text;

    f->xcf = ctx->xcf;
    f->action = action;
    f->code = code;
    ngx_cpystrn(f->ip, ip->data, ngx_min(ip->len + 1, sizeof(f->ip)));
    f->user_len = ngx_min(ctx->sess.user_len, sizeof(f->user));
    ngx_memcpy(f->user, ctx->sess.user, f->user_len);

    if (f->ev.timer_set) {
        f->pending++;
        return NGX_OK;
    }

    if (ngx_xmpp_admin_audit(ctx, action, 0, code,
                             json_pack("{sisIsI}", "count", 1,
                                       "since", (json_int_t) ngx_time(),
                                       "until", (json_int_t) ngx_time()))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    f->dumb.fd = (ngx_socket_t) -1;
    f->dumb.data = f;
    f->ev.data = &f->dumb;
    f->ev.handler = ngx_xmpp_admin_summary_timer;
    f->ev.log = ngx_cycle->log;
    f->ev.cancelable = 1;
    f->since = ngx_time();
    ngx_add_timer(&f->ev, ctx->xcf->admin_forged_summary);

    return NGX_OK;
}


static void
ngx_xmpp_admin_summary_exit(ngx_xmpp_admin_summary_t *f, ngx_log_t *log)
{
    /* the journal is still open: the count is kept */
    ngx_xmpp_admin_summary_flush(f, log);

    if (f->ev.timer_set) {
        ngx_del_timer(&f->ev);
    }
}


void
ngx_xmpp_admin_forged(ngx_xmpp_admin_ctx_t *ctx)
{
    ngx_log_error(NGX_LOG_INFO, ctx->request->connection->log, 0,
                  "xmpp: console: forged session cookie from %V refused",
                  &ctx->request->connection->addr_text);

    ngx_xmpp_metrics_console_forged();

    (void) ngx_xmpp_admin_summarise(ctx, &ngx_xmpp_admin_forged_st,
                                    "session", "forged");
}


/* ------------------------------------------------------------------ */
/*
 * worker: one directory handle per configured role, built from the
 * XMPP sign-in's settings (ngx_xmpp_dir_config: servers and failover,
 * TLS and its CA file, the login attribute, nested groups, timeouts)
 * with only the group differing: the role's group is the handle's
 * sign-in group, so its membership, nested ones included, is checked
 * before the user's bind.  The credentials cache serves the XMPP
 * outage policy only: a console sign-in always asks the directory.
 */

ngx_int_t
ngx_xmpp_admin_init_worker(ngx_cycle_t *cycle, ngx_xmpp_conf_t *xcf)
{
    char           err[256];
    ngx_uint_t     i, k;
    cdir_config_t  dc;

    if (xcf->admin_zone == NULL) {
        return NGX_OK;
    }

    for (i = NGX_XMPP_ADMIN_ROLE_FIRST; i < NGX_XMPP_ADMIN_ROLES; i++) {
        if (xcf->admin_role_group[i].len == 0) {
            continue;
        }

        ngx_xmpp_dir_config(cycle->pool, xcf, &dc);

        dc.group_dn = ngx_xmpp_cstr(cycle->pool, &xcf->admin_role_group[i]);
        dc.outage = CDIR_OUTAGE_REFUSE;
        dc.cache_ttl = 0;
        dc.pool_size = 2;

        for (k = 0; k < CDIR_NROLES; k++) {
            dc.role_dn[k] = NULL;
        }

        err[0] = '\0';

        xcf->admin_dir[i] = cdir_create(&dc, err, sizeof(err));
        if (xcf->admin_dir[i] == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                          "xmpp: console directory set-up failed: %s", err);
            return NGX_ERROR;
        }
    }

    ngx_xmpp_admin_expire_init_worker(cycle, xcf);

    return NGX_OK;
}


void
ngx_xmpp_admin_exit_worker(ngx_cycle_t *cycle, ngx_xmpp_conf_t *xcf)
{
    ngx_uint_t  i;

    ngx_xmpp_admin_expire_exit_worker();

    ngx_xmpp_admin_summary_exit(&ngx_xmpp_admin_forged_st, cycle->log);
    ngx_xmpp_admin_summary_exit(&ngx_xmpp_admin_throttled_st, cycle->log);

    for (i = NGX_XMPP_ADMIN_ROLE_FIRST; i < NGX_XMPP_ADMIN_ROLES; i++) {
        if (xcf->admin_dir[i]) {
            cdir_destroy(xcf->admin_dir[i]);
            xcf->admin_dir[i] = NULL;
        }
    }
}


/* ------------------------------------------------------------------ */
/* POST signin {"user": "...", "password": "..."} */

ngx_int_t
ngx_xmpp_admin_signin(ngx_xmpp_admin_ctx_t *ctx)
{
    return ngx_xmpp_admin_read_json(ctx, ngx_xmpp_admin_signin_start);
}


/*
 * "erin" or "erin@<domain>": the length of "erin"; NGX_ERROR for
 * another domain
 */
ngx_int_t
ngx_xmpp_admin_local_part(ngx_xmpp_conf_t *xcf, u_char *in, size_t *len)
{
    u_char  *at;

    at = ngx_strlchr(in, in + *len, '@');

    if (at) {
        if ((size_t) (in + *len - at - 1) != xcf->domain.len
            || ngx_strncasecmp(at + 1, xcf->domain.data, xcf->domain.len)
               != 0)
        {
            return NGX_ERROR;
        }

        *len = at - in;
    }

    return NGX_OK;
}


/* "erin" or "erin@<domain>" -> "erin", lower case, a strict alphabet */
static ngx_int_t
ngx_xmpp_admin_login(ngx_xmpp_conf_t *xcf, const char *in, size_t len,
    u_char *out, size_t *out_len)
{
    u_char   c;
    size_t   i;

    if (ngx_xmpp_admin_local_part(xcf, (u_char *) in, &len) != NGX_OK
        || len == 0 || len > NGX_XMPP_ADMIN_USER_MAX)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < len; i++) {
        c = ngx_tolower((u_char) in[i]);

        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.'
              || c == '-' || c == '_'))
        {
            return NGX_ERROR;
        }

        out[i] = c;
    }

    out[len] = '\0';
    *out_len = len;

    return NGX_OK;
}


static ngx_int_t
ngx_xmpp_admin_signin_start(ngx_xmpp_admin_ctx_t *ctx, json_t *body)
{
    time_t                    left;
    size_t                    pw_len;
    json_t                   *user, *pw;
    ngx_str_t                *ip;
    ngx_http_request_t       *r;

    r = ctx->request;
    ip = &r->connection->addr_text;

    user = body ? json_object_get(body, "user") : NULL;
    pw = body ? json_object_get(body, "password") : NULL;

    if (!json_is_string(user) || !json_is_string(pw)
        || ngx_xmpp_admin_login(ctx->xcf, json_string_value(user),
                                json_string_length(user), ctx->sess.user,
                                &ctx->sess.user_len)
           != NGX_OK)
    {
        return ngx_xmpp_admin_error(r, NGX_HTTP_BAD_REQUEST, "bad-request");
    }

    pw_len = json_string_length(pw);

    if (pw_len == 0 || pw_len > CDIR_MAX_PASSWORD) {
        return ngx_xmpp_admin_error(r, NGX_HTTP_BAD_REQUEST, "bad-request");
    }

    left = ngx_max(ngx_xmpp_admin_locked(ctx->xcf,
                       ngx_xmpp_fail_key("u:", ctx->sess.user,
                                         ctx->sess.user_len)),
                   ngx_xmpp_admin_locked(ctx->xcf,
                       ngx_xmpp_fail_key("i:", ip->data, ip->len)));

    if (left) {
        return ngx_xmpp_admin_throttled(ctx, left);
    }

    return ngx_xmpp_admin_signin_post(ctx, json_string_value(pw), pw_len);
}


static ngx_int_t
ngx_xmpp_admin_throttled(ngx_xmpp_admin_ctx_t *ctx, time_t left)
{
    u_char              *p;
    ngx_http_request_t  *r;

    r = ctx->request;

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "xmpp: console: sign-in of \"%s\" throttled for %T s",
                  ctx->sess.user, left);

    /* a locked-out client may retry at any rate: summarised */
    if (ngx_xmpp_admin_summarise(ctx, &ngx_xmpp_admin_throttled_st,
                                 "signin", "throttled")
        != NGX_OK)
    {
        return ngx_xmpp_admin_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "audit-unavailable");
    }

    p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);

    if (p == NULL
        || ngx_xmpp_http_header_n(r, "Retry-After", p,
                                  ngx_sprintf(p, "%T", left) - p)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_xmpp_admin_error(r, NGX_HTTP_TOO_MANY_REQUESTS, "throttled");
}


static ngx_int_t
ngx_xmpp_admin_signin_post(ngx_xmpp_admin_ctx_t *ctx, const char *pw,
    size_t pw_len)
{
    ngx_msec_t                timeout;
    ngx_thread_task_t        *task;
    ngx_http_request_t       *r;
    ngx_xmpp_admin_signin_t  *st;

    r = ctx->request;

    if (ctx->xcf->thread_pool == NULL) {
        return ngx_xmpp_admin_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "directory-unavailable");
    }

    task = ngx_xmpp_admin_work_alloc(sizeof(ngx_xmpp_admin_signin_t),
                                     r->connection->log);
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    st = task->ctx;

    st->work.finish = ngx_xmpp_admin_signin_finish;
    st->work.expire = ngx_xmpp_admin_signin_late;
    st->xcf = ctx->xcf;
    st->login_len = ctx->sess.user_len;
    ngx_memcpy(st->login, ctx->sess.user, ctx->sess.user_len);
    st->pw_len = pw_len;
    ngx_memcpy(st->pw, pw, pw_len);

    /* each role's handle may take about 2 x conclave_ldap_timeout */
    timeout = 2 * ctx->xcf->ldap_timeout * (NGX_XMPP_ADMIN_ROLES - 1) + 1000;

    if (ngx_xmpp_admin_work_post(r, ctx->xcf->thread_pool, task,
                                 ngx_xmpp_admin_signin_thread, timeout)
        != NGX_OK)
    {
        ngx_explicit_memzero(st->pw, sizeof(st->pw));
        ngx_free(task);
        return ngx_xmpp_admin_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "directory-busy");
    }

    return NGX_DONE;
}


/*
 * Runs in a pool thread.  Roles are tried in order; "not in group" is
 * the only refusal that lets the next role be tried, so wrong
 * credentials stop at the first group the user is in.
 */
static void
ngx_xmpp_admin_signin_thread(void *data, ngx_log_t *log)
{
    ngx_xmpp_admin_signin_t *st = data;

    ngx_uint_t          i;
    cdir_auth_result_t  res;

    st->status = CDIR_DENIED;
    ngx_cpystrn((u_char *) st->reason, (u_char *) "no console role",
                sizeof(st->reason));

    for (i = NGX_XMPP_ADMIN_ROLE_FIRST; i < NGX_XMPP_ADMIN_ROLES; i++) {
        if (st->xcf->admin_dir[i] == NULL) {
            continue;
        }

        cdir_authenticate(st->xcf->admin_dir[i], (char *) st->login,
                          st->login_len, (char *) st->pw, st->pw_len, &res);

        if (res.status == CDIR_OK) {
            st->roles |= (ngx_uint_t) 1 << i;
            st->status = CDIR_OK;
            ngx_cpystrn(st->name, (u_char *) res.name, sizeof(st->name));
            continue;
        }

        if (res.status == CDIR_DENIED
            && ngx_strcmp(res.reason, "not in group") == 0)
        {
            continue;
        }

        if (st->roles == 0) {
            st->status = res.status;
            ngx_cpystrn((u_char *) st->reason, (u_char *) res.reason,
                        sizeof(st->reason));
        }

        break;
    }

    ngx_explicit_memzero(st->pw, sizeof(st->pw));
}


/* the timer: the directory took longer than its handles' own bound */
static ngx_int_t
ngx_xmpp_admin_signin_late(ngx_http_request_t *r, void *data)
{
    ngx_xmpp_admin_signin_t *st = data;

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "xmpp: console: the directory did not answer a sign-in");

    st->status = CDIR_UNAVAILABLE;
    ngx_cpystrn((u_char *) st->reason, (u_char *) "timeout",
                sizeof(st->reason));

    return ngx_xmpp_admin_signin_finish(r, st);
}


/*
 * The session's user is the directory's login name attribute
 * (conclave_ldap_name_attribute), as for an XMPP sign-in: an AD
 * account typed as "Frank" or "frank@<domain>" is the user the audit
 * records and the chat archive know.  A name outside the console's
 * alphabet keeps the login as typed.
 */
static void
ngx_xmpp_admin_canonical(ngx_xmpp_admin_ctx_t *ctx,
    ngx_xmpp_admin_signin_t *st)
{
    u_char  name[NGX_XMPP_ADMIN_USER_MAX + 1];
    size_t  len;

    if (st->name[0] == '\0') {
        return;
    }

    if (ngx_xmpp_admin_login(ctx->xcf, (char *) st->name,
                             ngx_strlen(st->name), name, &len)
        != NGX_OK)
    {
        return;
    }

    ngx_memcpy(ctx->sess.user, name, len + 1);
    ctx->sess.user_len = len;
}


static ngx_int_t
ngx_xmpp_admin_signin_finish(ngx_http_request_t *r, void *data)
{
    ngx_xmpp_admin_signin_t *st = data;

    json_t                *params, *roles;
    ngx_str_t             *ip;
    ngx_uint_t             i;
    ngx_xmpp_admin_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_conclave_module);
    ip = &r->connection->addr_text;

    if (st->status == CDIR_UNAVAILABLE) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "xmpp: console: sign-in of \"%s\": directory "
                      "unavailable: %s", st->login, st->reason);
        (void) ngx_xmpp_admin_audit(ctx, "signin", 0,
                                    "directory-unavailable", NULL);
        return ngx_xmpp_admin_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "directory-unavailable");
    }

    if (st->status != CDIR_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "xmpp: console: sign-in of \"%s\" refused: %s",
                      st->login, st->reason);

        ngx_xmpp_admin_count(ctx->xcf, ngx_xmpp_fail_key("u:",
                             st->login, st->login_len), 1);
        ngx_xmpp_admin_count(ctx->xcf, ngx_xmpp_fail_key("i:",
                             ip->data, ip->len), 1);

        params = json_pack("{ss}", "reason", st->reason);
        (void) ngx_xmpp_admin_audit(ctx, "signin", 0, "refused", params);

        /* one answer for every refusal: no hint which part was wrong */
        return ngx_xmpp_admin_error(r, NGX_HTTP_UNAUTHORIZED, "refused");
    }

    ngx_xmpp_admin_count(ctx->xcf, ngx_xmpp_fail_key("u:", st->login,
                         st->login_len), 0);

    ngx_xmpp_admin_canonical(ctx, st);

    ctx->sess.roles = st->roles;
    ctx->sess.issued = ngx_time();
    ctx->sess.last = ctx->sess.issued;

    if (RAND_bytes(ctx->sess.nonce, NGX_XMPP_ADMIN_NONCE_LEN) != 1) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    roles = json_array();

    for (i = NGX_XMPP_ADMIN_ROLE_FIRST;
         roles && i < NGX_XMPP_ADMIN_ROLES;
         i++)
    {
        if (st->roles & ((ngx_uint_t) 1 << i)) {
            json_array_append_new(roles, json_string((char *)
                                  ngx_xmpp_admin_role_names[i].data));
        }
    }

    params = json_pack("{so}", "roles", roles ? roles : json_null());

    if (ngx_xmpp_admin_audit(ctx, "signin", 1, NULL, params) != NGX_OK) {
        return ngx_xmpp_admin_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "audit-unavailable");
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "xmpp: console: \"%s\" signed in as \"%s\"", st->login,
                  ctx->sess.user);

    ctx->signed_in = 1;

    if (ngx_xmpp_admin_cookie(ctx, 0) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_xmpp_admin_me(ctx);
}


/* POST signout: the cookie is cleared here and revoked everywhere */
ngx_int_t
ngx_xmpp_admin_signout(ngx_xmpp_admin_ctx_t *ctx)
{
    ngx_xmpp_admin_revoke(ctx->xcf, &ctx->sess);

    (void) ngx_xmpp_admin_audit(ctx, "signout", 1, NULL, NULL);

    /* replaces the renewed cookie the session check queued */
    ngx_xmpp_admin_drop_cookies(ctx->request);

    if (ngx_xmpp_admin_cookie(ctx, 1) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_xmpp_admin_send_json(ctx->request, NGX_HTTP_OK,
                                    json_pack("{sb}", "signed_out", 1));
}
