
/*
 * The directory beyond sign-in: revocation of live sessions, roles, and
 * the directory's counters for the status page.
 *
 * Revocation: every conclave_ldap_revalidate, each worker checks the
 * accounts behind its own signed-in sessions (cdir_revalidate(): the
 * entry still exists, still matches the user filter, is not disabled,
 * is still in the sign-in group).  The check runs in the thread pool,
 * one task per round for all of the worker's sessions, so the event loop
 * never waits on LDAP.  A session whose account was refused ends with
 * the stream error <policy-violation/> (RFC 6120 4.9.3.14: a local
 * service policy no longer allows the entity) and a session-end audit
 * record whose reason starts with "revoked:".  An unreachable directory
 * revokes nothing: live sessions are unaffected by outages.  Roles of
 * the sessions that pass are refreshed.
 */


#include "ngx_xmpp.h"

#include <jansson.h>


typedef struct {
    uint64_t               sid;
    cdir_status_e          status;
    unsigned               roles;
    const char            *why;          /* static */
    char                   dn[CDIR_MAX_DN_SIZE];
} ngx_xmpp_dir_check_t;


typedef struct {
    cdir_t                *dir;
    ngx_uint_t             n;
    ngx_xmpp_dir_check_t  *checks;       /* n of them, after the task */
} ngx_xmpp_dir_round_t;


static void ngx_xmpp_dir_tick(ngx_event_t *ev);
static ngx_int_t ngx_xmpp_dir_round_start(ngx_xmpp_conf_t *xcf);
static void ngx_xmpp_dir_round_thread(void *data, ngx_log_t *log);
static void ngx_xmpp_dir_round_done(ngx_event_t *ev);
static void ngx_xmpp_dir_revoke(ngx_xmpp_session_t *s,
    ngx_xmpp_dir_check_t *chk);
static int ngx_xmpp_dir_check_cmp(const void *a, const void *b);
static const char *ngx_xmpp_dir_why(const char *reason);


ngx_conf_enum_t  ngx_xmpp_dir_group_modes[] = {
    { ngx_string("member"), CDIR_GROUPS_MEMBER },
    { ngx_string("memberof"), CDIR_GROUPS_MEMBEROF },
    { ngx_null_string, 0 }
};


ngx_conf_enum_t  ngx_xmpp_dir_outage_policies[] = {
    { ngx_string("refuse"), CDIR_OUTAGE_REFUSE },
    { ngx_string("cache"), CDIR_OUTAGE_CACHE },
    { ngx_null_string, 0 }
};


static ngx_event_t        ngx_xmpp_dir_timer;
static ngx_connection_t   ngx_xmpp_dir_dumb;
static ngx_xmpp_conf_t   *ngx_xmpp_dir_conf;
static ngx_uint_t         ngx_xmpp_dir_busy;       /* a round in flight */
static ngx_uint_t         ngx_xmpp_dir_rounds;
static ngx_uint_t         ngx_xmpp_dir_revoked;


ngx_int_t
ngx_xmpp_dir_init_worker(ngx_cycle_t *cycle, ngx_xmpp_conf_t *xcf)
{
    ngx_xmpp_dir_conf = xcf;

    if (xcf->ldap_revalidate == 0) {
        return NGX_OK;
    }

    ngx_xmpp_dir_dumb.fd = (ngx_socket_t) -1;
    ngx_xmpp_dir_timer.data = &ngx_xmpp_dir_dumb;
    ngx_xmpp_dir_timer.handler = ngx_xmpp_dir_tick;
    ngx_xmpp_dir_timer.log = cycle->log;
    ngx_xmpp_dir_timer.cancelable = 1;

    ngx_add_timer(&ngx_xmpp_dir_timer, xcf->ldap_revalidate);

    return NGX_OK;
}


void
ngx_xmpp_dir_exit_worker(ngx_cycle_t *cycle)
{
    if (ngx_xmpp_dir_timer.timer_set) {
        ngx_del_timer(&ngx_xmpp_dir_timer);
    }

    ngx_xmpp_dir_conf = NULL;
}


ngx_uint_t
ngx_xmpp_session_roles(ngx_xmpp_session_t *s)
{
    return s->authenticated ? s->roles : 0;
}


static void
ngx_xmpp_dir_tick(ngx_event_t *ev)
{
    ngx_xmpp_conf_t  *xcf;

    xcf = ngx_xmpp_dir_conf;

    if (xcf == NULL || ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    /* a slow directory: the next round waits for this one */
    if (!ngx_xmpp_dir_busy && ngx_xmpp_dir_round_start(xcf) == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                      "xmpp: account revalidation not started");
    }

    ngx_add_timer(ev, xcf->ldap_revalidate);
}


/* collects the signed-in sessions' DNs and posts one task for them */
static ngx_int_t
ngx_xmpp_dir_round_start(ngx_xmpp_conf_t *xcf)
{
    ngx_uint_t             n, i;
    ngx_thread_task_t     *task;
    ngx_xmpp_session_t    *s;
    ngx_xmpp_dir_round_t  *round;

    n = 0;

    for (s = ngx_xmpp_session_next(NULL); s; s = ngx_xmpp_session_next(s)) {
        if (s->authenticated && s->ldap_dn.len) {
            n++;
        }
    }

    if (n == 0 || xcf->dir == NULL || xcf->thread_pool == NULL) {
        return NGX_DECLINED;
    }

    /* on the heap: sessions come and go while the task runs */
    task = ngx_calloc(sizeof(ngx_thread_task_t)
                      + sizeof(ngx_xmpp_dir_round_t)
                      + n * sizeof(ngx_xmpp_dir_check_t),
                      ngx_cycle->log);
    if (task == NULL) {
        return NGX_ERROR;
    }

    round = (ngx_xmpp_dir_round_t *) (task + 1);
    round->dir = xcf->dir;
    round->checks = (ngx_xmpp_dir_check_t *) (round + 1);

    i = 0;

    for (s = ngx_xmpp_session_next(NULL); s && i < n;
         s = ngx_xmpp_session_next(s))
    {
        if (!s->authenticated || s->ldap_dn.len == 0
            || s->ldap_dn.len >= CDIR_MAX_DN_SIZE)
        {
            continue;
        }

        round->checks[i].sid = s->id;
        ngx_memcpy(round->checks[i].dn, s->ldap_dn.data, s->ldap_dn.len);
        i++;
    }

    round->n = i;

    task->ctx = round;
    task->handler = ngx_xmpp_dir_round_thread;
    task->event.handler = ngx_xmpp_dir_round_done;
    task->event.data = task;
    task->event.log = ngx_cycle->log;

    if (ngx_thread_task_post(xcf->thread_pool, task) != NGX_OK) {
        ngx_free(task);
        return NGX_ERROR;
    }

    ngx_xmpp_dir_busy = 1;

    return NGX_OK;
}


/* in a pool thread: one revalidation per distinct DN */
static void
ngx_xmpp_dir_round_thread(void *data, ngx_log_t *log)
{
    ngx_xmpp_dir_round_t  *round = data;

    ngx_uint_t             i;
    cdir_auth_result_t     res;
    ngx_xmpp_dir_check_t  *c, *prev;

    c = round->checks;

    /* several sessions of one user cost one check */
    ngx_qsort(c, round->n, sizeof(ngx_xmpp_dir_check_t),
              ngx_xmpp_dir_check_cmp);

    prev = NULL;

    for (i = 0; i < round->n; i++) {
        if (prev && ngx_strcmp(prev->dn, c[i].dn) == 0) {
            c[i].status = prev->status;
            c[i].roles = prev->roles;
            c[i].why = prev->why;
            continue;
        }

        cdir_revalidate(round->dir, c[i].dn, &res);

        c[i].status = res.status;
        c[i].roles = res.roles;
        c[i].why = ngx_xmpp_dir_why(res.reason);
        prev = &c[i];
    }
}


static void
ngx_xmpp_dir_round_done(ngx_event_t *ev)
{
    ngx_thread_task_t     *task = ev->data;

    ngx_uint_t             i, unavailable;
    ngx_xmpp_session_t    *s;
    ngx_xmpp_dir_round_t  *round;
    ngx_xmpp_dir_check_t  *c;

    round = task->ctx;
    unavailable = 0;

    ngx_xmpp_dir_busy = 0;
    ngx_xmpp_dir_rounds++;

    for (i = 0; i < round->n; i++) {
        c = &round->checks[i];

        s = ngx_xmpp_session_find(c->sid);

        /* gone, or a new session that reuses nothing: ids are unique */
        if (s == NULL || s->finalized || !s->authenticated) {
            continue;
        }

        switch (c->status) {

        case CDIR_OK:
            if (s->roles != c->roles) {
                s->roles = c->roles;

                if (s->bound) {
                    ngx_xmpp_registry_update(s);
                }
            }

            break;

        case CDIR_DENIED:
            ngx_xmpp_dir_revoke(s, c);
            break;

        default:
            unavailable++;
        }
    }

    if (unavailable) {
        ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                      "xmpp: directory unavailable, %ui session(s) not "
                      "revalidated this round", unavailable);
    }

    ngx_free(task);
}


static void
ngx_xmpp_dir_revoke(ngx_xmpp_session_t *s, ngx_xmpp_dir_check_t *c)
{
    ngx_xmpp_dir_revoked++;

    ngx_log_error(NGX_LOG_NOTICE, s->connection->log, 0,
                  "xmpp: session of \"%V\" revoked by the directory: %s",
                  &s->user, c->why + sizeof("revoked: ") - 1);

    /* the session-end audit record carries this reason */
    s->end_reason = c->why;

    ngx_xmpp_session_error(s, "policy-violation",
                           "account revoked by the directory");
}


/* the audit reason: a static string, as end_reason must be */
static const char *
ngx_xmpp_dir_why(const char *reason)
{
    if (ngx_strcmp(reason, "account disabled") == 0) {
        return "revoked: account disabled";
    }

    if (ngx_strcmp(reason, "no such user") == 0) {
        return "revoked: account deleted or no longer matches the filter";
    }

    if (ngx_strcmp(reason, "not in group") == 0) {
        return "revoked: not in the sign-in group";
    }

    return "revoked: refused by the directory";
}


static int
ngx_xmpp_dir_check_cmp(const void *a, const void *b)
{
    return ngx_strcmp(((ngx_xmpp_dir_check_t *) a)->dn,
                      ((ngx_xmpp_dir_check_t *) b)->dn);
}


/* this worker's directory counters, for the status page */
json_t *
ngx_xmpp_dir_json(ngx_xmpp_conf_t *xcf)
{
    json_t        *o;
    cdir_stats_t   st;

    cdir_stats(xcf->dir, &st);

    o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I,"
                  " s:I, s:I, s:I, s:f, s:f, s:{s:I, s:I}, s:{s:I, s:I},"
                  " s:I, s:I}",
                  "signin_ok", (json_int_t) st.auth_ok,
                  "signin_denied", (json_int_t) st.auth_denied,
                  "signin_unavailable", (json_int_t) st.auth_unavailable,
                  "cache_hits", (json_int_t) st.cache_hits,
                  "cache_misses", (json_int_t) st.cache_misses,
                  "cache_entries", (json_int_t) st.cache_entries,
                  "connects", (json_int_t) st.connects,
                  "connect_errors", (json_int_t) st.connect_errors,
                  "tls_errors", (json_int_t) st.tls_errors,
                  "ops", (json_int_t) st.ops,
                  "op_errors", (json_int_t) st.op_errors,
                  "op_timeouts", (json_int_t) st.op_timeouts,
                  "revalidations", (json_int_t) st.revalidations,
                  "op_latency_avg_ms",
                  st.ops ? (double) st.op_usec / st.ops / 1000.0 : 0.0,
                  "op_latency_max_ms", (double) st.op_usec_max / 1000.0,
                  "busy", "service", (json_int_t) st.busy[0],
                          "bind", (json_int_t) st.busy[1],
                  "idle", "service", (json_int_t) st.idle[0],
                          "bind", (json_int_t) st.idle[1],
                  "revalidation_rounds", (json_int_t) ngx_xmpp_dir_rounds,
                  "sessions_revoked", (json_int_t) ngx_xmpp_dir_revoked);

    return o ? o : json_object();
}
