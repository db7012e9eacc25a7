
/*
 * Sign-in through the directory without blocking the event loop.
 *
 * libldap's synchronous calls run in an nginx thread pool (the one
 * named by conclave_thread_pool); the worker only posts the task and
 * waits for its completion event with a timer (conclave_ldap_timeout).
 * The task owns its memory: a session that ends, or gives up on a slow
 * directory, only detaches itself, and the completion handler frees the
 * task when the thread is done with it.
 */


#include "ngx_xmpp.h"


struct ngx_xmpp_auth_ctx_s {
    ngx_xmpp_session_t   *session;      /* NULL once cancelled */
    cdir_t               *dir;
    cdir_auth_result_t    result;
    ngx_msec_t            started;      /* for the latency metric */
    size_t                login_len;
    size_t                pw_len;
    u_char                login[NGX_XMPP_SASL_FIELD_MAX];
    u_char                pw[NGX_XMPP_SASL_FIELD_MAX];
};


static void ngx_xmpp_auth_thread(void *data, ngx_log_t *log);
static void ngx_xmpp_auth_done(ngx_event_t *ev);


ngx_int_t
ngx_xmpp_auth_start(ngx_xmpp_session_t *s, const u_char *login,
    size_t login_len, const u_char *pw, size_t pw_len)
{
    ngx_thread_task_t    *task;
    ngx_xmpp_auth_ctx_t  *ctx;

    if (s->conf->dir == NULL || s->conf->thread_pool == NULL
        || login_len > NGX_XMPP_SASL_FIELD_MAX
        || pw_len > NGX_XMPP_SASL_FIELD_MAX)
    {
        return NGX_ERROR;
    }

    /* on the heap, not in the session's pool: it may outlive the session */
    task = ngx_calloc(sizeof(ngx_thread_task_t) + sizeof(ngx_xmpp_auth_ctx_t),
                      s->connection->log);
    if (task == NULL) {
        return NGX_ERROR;
    }

    ctx = (ngx_xmpp_auth_ctx_t *) (task + 1);

    ctx->session = s;
    ctx->dir = s->conf->dir;
    ctx->started = ngx_current_msec;
    ngx_memcpy(ctx->login, login, login_len);
    ctx->login_len = login_len;
    ngx_memcpy(ctx->pw, pw, pw_len);
    ctx->pw_len = pw_len;

    task->ctx = ctx;
    task->handler = ngx_xmpp_auth_thread;
    task->event.handler = ngx_xmpp_auth_done;
    task->event.data = task;
    task->event.log = ngx_cycle->log;

    if (ngx_thread_task_post(s->conf->thread_pool, task) != NGX_OK) {
        /* the queue is full: the directory is already overloaded */
        ngx_explicit_memzero(ctx->pw, sizeof(ctx->pw));
        ngx_free(task);
        return NGX_ERROR;
    }

    s->auth = ctx;

    return NGX_OK;
}


void
ngx_xmpp_auth_cancel(ngx_xmpp_session_t *s)
{
    if (s->auth) {
        s->auth->session = NULL;
        s->auth = NULL;
    }
}


/* runs in a pool thread: may block up to about 2 x the LDAP timeout */
static void
ngx_xmpp_auth_thread(void *data, ngx_log_t *log)
{
    ngx_xmpp_auth_ctx_t  *ctx = data;

    static __thread unsigned  named;

    /* a name for top -H, perf and /proc/PID/task, once per thread */
    if (!named) {
        (void) pthread_setname_np(pthread_self(), "conclave-dir");
        named = 1;
    }

    cdir_authenticate(ctx->dir, (const char *) ctx->login, ctx->login_len,
                      (const char *) ctx->pw, ctx->pw_len, &ctx->result);

    ngx_explicit_memzero(ctx->pw, sizeof(ctx->pw));
}


static void
ngx_xmpp_auth_done(ngx_event_t *ev)
{
    ngx_thread_task_t    *task = ev->data;

    ngx_xmpp_session_t   *s;
    ngx_xmpp_auth_ctx_t  *ctx;

    ctx = task->ctx;
    s = ctx->session;

    ngx_xmpp_metrics_ldap(ctx->result.status,
                          ngx_current_msec - ctx->started);

    if (s) {
        s->auth = NULL;
        ngx_xmpp_stream_auth_done(s, &ctx->result);
    }

    ngx_free(task);
}
