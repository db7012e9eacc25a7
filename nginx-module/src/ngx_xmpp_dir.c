
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
 *
 * Shared rosters: every conclave_ldap_refresh, each worker reads the
 * members of the conclave_ldap_shared_group groups in the thread pool
 * (cdir_group_members()) into a new snapshot, an nginx pool of its own
 * built by the task, and swaps it in on the event loop.  A refresh that
 * cannot read every group keeps the previous snapshot.  Members of a
 * group see each other, with the group's name (the value of its first
 * RDN) as the roster group.  When the new snapshot differs from the old
 * one, the worker pushes the difference to its own interested resources
 * (RFC 6121 2.1.6): added or changed contacts, and removals.
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


typedef struct {
    ngx_str_t              local;        /* lower case, sorted on */
    ngx_str_t              name;
} ngx_xmpp_dir_member_t;


typedef struct {
    ngx_str_t              name;         /* roster group */
    const char            *dn;
    ngx_array_t            members;      /* ngx_xmpp_dir_member_t */
} ngx_xmpp_dir_group_t;


typedef struct {
    ngx_pool_t            *pool;         /* everything below lives here */
    cdir_t                *dir;
    ngx_uint_t             max;
    ngx_uint_t             ngroups;
    ngx_xmpp_dir_group_t  *groups;
    ngx_uint_t             failed;
    char                   err[256];
} ngx_xmpp_dir_snapshot_t;


static void ngx_xmpp_dir_refresh(ngx_event_t *ev);
static void ngx_xmpp_dir_refresh_thread(void *data, ngx_log_t *log);
static void ngx_xmpp_dir_refresh_done(ngx_event_t *ev);
static void ngx_xmpp_dir_add_member(void *ctx, const char *name,
    const char *display);
static int ngx_xmpp_dir_member_cmp(const void *a, const void *b);
static void ngx_xmpp_dir_local(ngx_str_t *bare, ngx_str_t *local);
static ngx_xmpp_dir_member_t *ngx_xmpp_dir_find(ngx_xmpp_dir_group_t *g,
    ngx_str_t *local);
static ngx_int_t ngx_xmpp_dir_contacts(ngx_xmpp_dir_snapshot_t *snap,
    ngx_str_t *local, ngx_pool_t *pool, ngx_array_t *out);
static ngx_uint_t ngx_xmpp_dir_changed(ngx_xmpp_dir_snapshot_t *old,
    ngx_xmpp_dir_snapshot_t *snap);
static void ngx_xmpp_dir_push_changes(ngx_xmpp_dir_snapshot_t *old,
    ngx_xmpp_dir_snapshot_t *snap, ngx_log_t *log);
static ngx_int_t ngx_xmpp_dir_push_session(ngx_xmpp_session_t *s,
    ngx_xmpp_dir_snapshot_t *old, ngx_xmpp_dir_snapshot_t *snap,
    ngx_pool_t *pool);
static void ngx_xmpp_dir_push(ngx_xmpp_session_t *s, ngx_xmpp_contact_t *c,
    ngx_uint_t n, ngx_uint_t removed);
static int ngx_xmpp_dir_contact_cmp(const void *a, const void *b);


static ngx_event_t               ngx_xmpp_dir_refresh_ev;
static ngx_xmpp_dir_snapshot_t  *ngx_xmpp_dir_snap;
static ngx_xmpp_dir_snapshot_t  *ngx_xmpp_dir_snap_next;  /* in flight */
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
    ngx_xmpp_dir_dumb.fd = (ngx_socket_t) -1;

    if (xcf->ldap_shared_groups && xcf->ldap_shared_groups->nelts) {
        ngx_xmpp_dir_refresh_ev.data = &ngx_xmpp_dir_dumb;
        ngx_xmpp_dir_refresh_ev.handler = ngx_xmpp_dir_refresh;
        ngx_xmpp_dir_refresh_ev.log = cycle->log;
        ngx_xmpp_dir_refresh_ev.cancelable = 1;

        /* the first snapshot at once, on the first turn of the loop */
        ngx_add_timer(&ngx_xmpp_dir_refresh_ev, 1);
    }

    if (xcf->ldap_revalidate == 0) {
        return NGX_OK;
    }

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

    if (ngx_xmpp_dir_refresh_ev.timer_set) {
        ngx_del_timer(&ngx_xmpp_dir_refresh_ev);
    }

    if (ngx_xmpp_dir_snap) {
        ngx_destroy_pool(ngx_xmpp_dir_snap->pool);
        ngx_xmpp_dir_snap = NULL;
    }

    ngx_xmpp_vcard_exit_worker();

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


/* -- shared rosters ------------------------------------------------------- */

static void
ngx_xmpp_dir_refresh(ngx_event_t *ev)
{
    u_char                   *p, *end;
    ngx_str_t                *dn;
    ngx_uint_t                i;
    ngx_pool_t               *pool;
    ngx_xmpp_conf_t          *xcf;
    ngx_thread_task_t        *task;
    ngx_xmpp_dir_group_t     *g;
    ngx_xmpp_dir_snapshot_t  *snap;

    xcf = ngx_xmpp_dir_conf;

    if (xcf == NULL || ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    ngx_add_timer(ev, xcf->ldap_refresh);

    if (ngx_xmpp_dir_snap_next || xcf->dir == NULL) {
        return;
    }

    pool = ngx_create_pool(16384, ngx_cycle->log);
    if (pool == NULL) {
        return;
    }

    task = ngx_thread_task_alloc(pool, sizeof(ngx_xmpp_dir_snapshot_t));
    if (task == NULL) {
        ngx_destroy_pool(pool);
        return;
    }

    snap = task->ctx;
    snap->pool = pool;
    snap->dir = xcf->dir;
    snap->max = xcf->ldap_shared_max;
    snap->ngroups = xcf->ldap_shared_groups->nelts;

    snap->groups = ngx_pcalloc(pool, snap->ngroups
                                     * sizeof(ngx_xmpp_dir_group_t));
    if (snap->groups == NULL) {
        ngx_destroy_pool(pool);
        return;
    }

    dn = xcf->ldap_shared_groups->elts;

    for (i = 0; i < snap->ngroups; i++) {
        g = &snap->groups[i];
        g->dn = ngx_xmpp_cstr(pool, &dn[i]);

        if (g->dn == NULL
            || ngx_array_init(&g->members, pool, 64,
                              sizeof(ngx_xmpp_dir_member_t))
               != NGX_OK)
        {
            ngx_destroy_pool(pool);
            return;
        }

        /* "cn=Engineering,ou=Groups,..." -> "Engineering" */
        p = ngx_strlchr(dn[i].data, dn[i].data + dn[i].len, '=');
        end = ngx_strlchr(dn[i].data, dn[i].data + dn[i].len, ',');
        g->name.data = p ? p + 1 : dn[i].data;
        g->name.len = (end ? end : dn[i].data + dn[i].len) - g->name.data;
    }

    task->handler = ngx_xmpp_dir_refresh_thread;
    task->event.handler = ngx_xmpp_dir_refresh_done;
    task->event.data = snap;
    task->event.log = ngx_cycle->log;

    if (ngx_thread_task_post(xcf->thread_pool, task) != NGX_OK) {
        ngx_destroy_pool(pool);
        return;
    }

    ngx_xmpp_dir_snap_next = snap;
}


/* in a pool thread: the snapshot's pool is this task's alone */
static void
ngx_xmpp_dir_refresh_thread(void *data, ngx_log_t *log)
{
    ngx_xmpp_dir_snapshot_t  *snap = data;

    ngx_uint_t             i;
    ngx_xmpp_dir_group_t  *g;

    for (i = 0; i < snap->ngroups && !snap->failed; i++) {
        g = &snap->groups[i];

        if (cdir_group_members(snap->dir, g->dn, (int) snap->max,
                               ngx_xmpp_dir_add_member, g, snap->err,
                               sizeof(snap->err))
            != 0)
        {
            snap->failed = 1;
            break;
        }

        if (g->members.nelts == (ngx_uint_t) -1) {
            snap->failed = 1;
            ngx_cpystrn((u_char *) snap->err, (u_char *) "out of memory",
                        sizeof(snap->err));
            break;
        }

        ngx_qsort(g->members.elts, g->members.nelts,
                  sizeof(ngx_xmpp_dir_member_t), ngx_xmpp_dir_member_cmp);
    }
}


static void
ngx_xmpp_dir_add_member(void *ctx, const char *name, const char *display)
{
    ngx_xmpp_dir_group_t  *g = ctx;

    size_t                  len;
    ngx_xmpp_dir_member_t  *m;

    len = ngx_strlen(name);

    /* the same rule as at sign-in: a valid localpart, lower case */
    if (g->members.nelts == (ngx_uint_t) -1
        || !ngx_xmpp_jid_local_valid((u_char *) name, len))
    {
        return;
    }

    m = ngx_array_push(&g->members);
    if (m == NULL) {
        goto nomem;
    }

    m->local.data = ngx_pnalloc(g->members.pool, len);
    m->name.len = ngx_strlen(display);
    m->name.data = ngx_pnalloc(g->members.pool, m->name.len + 1);

    if (m->local.data == NULL || m->name.data == NULL) {
        goto nomem;
    }

    ngx_memcpy(m->local.data, name, len);
    m->local.len = len;
    ngx_xmpp_ascii_lower(m->local.data, len);
    ngx_memcpy(m->name.data, display, m->name.len);

    return;

nomem:

    /* marks the group: the whole refresh is dropped */
    g->members.nelts = (ngx_uint_t) -1;
}


static void
ngx_xmpp_dir_refresh_done(ngx_event_t *ev)
{
    ngx_xmpp_dir_snapshot_t  *snap = ev->data;

    ngx_uint_t                i, n;
    ngx_xmpp_dir_snapshot_t  *old;

    ngx_xmpp_dir_snap_next = NULL;

    if (snap->failed || ngx_xmpp_dir_conf == NULL) {
        ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                      "xmpp: shared roster groups not refreshed: %s; "
                      "keeping the previous snapshot", snap->err);
        ngx_destroy_pool(snap->pool);
        return;
    }

    old = ngx_xmpp_dir_snap;
    ngx_xmpp_dir_snap = snap;

    if (old) {
        /* issue 6 item 3: membership changes reach the online members */
        if (ngx_xmpp_dir_changed(old, snap)) {
            ngx_xmpp_dir_push_changes(old, snap, ev->log);
        }

        ngx_destroy_pool(old->pool);
    }

    for (i = 0, n = 0; i < snap->ngroups; i++) {
        n += snap->groups[i].members.nelts;
    }

    ngx_log_error(NGX_LOG_INFO, ev->log, 0,
                  "xmpp: shared roster groups refreshed: %ui groups, "
                  "%ui members", snap->ngroups, n);
}


/* any group whose members (or their names) differ */
static ngx_uint_t
ngx_xmpp_dir_changed(ngx_xmpp_dir_snapshot_t *old,
    ngx_xmpp_dir_snapshot_t *snap)
{
    ngx_uint_t              i, j;
    ngx_xmpp_dir_member_t  *a, *b;

    if (old->ngroups != snap->ngroups) {
        return 1;
    }

    for (i = 0; i < snap->ngroups; i++) {
        if (old->groups[i].members.nelts != snap->groups[i].members.nelts) {
            return 1;
        }

        a = old->groups[i].members.elts;
        b = snap->groups[i].members.elts;

        for (j = 0; j < snap->groups[i].members.nelts; j++) {
            if (ngx_memn2cmp(a[j].local.data, b[j].local.data,
                             a[j].local.len, b[j].local.len) != 0
                || ngx_memn2cmp(a[j].name.data, b[j].name.data,
                                a[j].name.len, b[j].name.len) != 0)
            {
                return 1;
            }
        }
    }

    return 0;
}


/*
 * RFC 6121 2.1.6: each interested resource of this worker gets a push
 * per shared contact that appeared or changed (its name or groups) and
 * a subscription='remove' per one that went away.  Every worker does
 * this for its own sessions after its own refresh.
 */
static void
ngx_xmpp_dir_push_changes(ngx_xmpp_dir_snapshot_t *old,
    ngx_xmpp_dir_snapshot_t *snap, ngx_log_t *log)
{
    ngx_pool_t          *pool;
    ngx_uint_t           n;
    ngx_xmpp_session_t  *s;

    pool = ngx_create_pool(16384, log);
    if (pool == NULL) {
        return;
    }

    n = 0;

    for (s = ngx_xmpp_session_next(NULL); s; s = ngx_xmpp_session_next(s)) {
        if (s->finalized || !s->bound || !s->roster_interested
            || s->state != NGX_XMPP_ST_SESSION)
        {
            continue;
        }

        if (ngx_xmpp_dir_push_session(s, old, snap, pool) != NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, s->connection->log, 0,
                          "xmpp: shared roster changes not pushed to \"%V\"",
                          &s->jid.full);
        }

        ngx_reset_pool(pool);
        n++;
    }

    ngx_destroy_pool(pool);

    ngx_log_error(NGX_LOG_INFO, log, 0,
                  "xmpp: shared roster groups changed: %ui interested "
                  "session(s) checked for roster pushes", n);
}


static ngx_int_t
ngx_xmpp_dir_push_session(ngx_xmpp_session_t *s,
    ngx_xmpp_dir_snapshot_t *old, ngx_xmpp_dir_snapshot_t *snap,
    ngx_pool_t *pool)
{
    ngx_int_t            rc;
    ngx_str_t            local;
    ngx_uint_t           i, j, ni, nj, k, same;
    ngx_array_t          a, b;
    ngx_xmpp_contact_t  *x, *y;

    ngx_xmpp_dir_local(&s->jid.bare, &local);

    if (local.len == 0) {
        return NGX_OK;
    }

    if (ngx_array_init(&a, pool, 16, sizeof(ngx_xmpp_contact_t)) != NGX_OK
        || ngx_array_init(&b, pool, 16, sizeof(ngx_xmpp_contact_t))
           != NGX_OK
        || ngx_xmpp_dir_contacts(old, &local, pool, &a) != NGX_OK
        || ngx_xmpp_dir_contacts(snap, &local, pool, &b) != NGX_OK)
    {
        return NGX_ERROR;
    }

    x = a.elts;
    y = b.elts;

    ngx_qsort(x, a.nelts, sizeof(ngx_xmpp_contact_t),
              ngx_xmpp_dir_contact_cmp);
    ngx_qsort(y, b.nelts, sizeof(ngx_xmpp_contact_t),
              ngx_xmpp_dir_contact_cmp);

    /* a merge over the contacts, each a run of (jid, group) entries */
    for (i = 0, j = 0; i < a.nelts || j < b.nelts; i = ni, j = nj) {
        for (ni = i + 1; ni < a.nelts
             && ngx_memn2cmp(x[ni].jid.data, x[i].jid.data, x[ni].jid.len,
                             x[i].jid.len) == 0; ni++) { /* void */ }

        for (nj = j + 1; nj < b.nelts
             && ngx_memn2cmp(y[nj].jid.data, y[j].jid.data, y[nj].jid.len,
                             y[j].jid.len) == 0; nj++) { /* void */ }

        rc = (i == a.nelts) ? 1 : (j == b.nelts) ? -1
             : ngx_memn2cmp(x[i].jid.data, y[j].jid.data, x[i].jid.len,
                            y[j].jid.len);

        if (rc < 0) {
            ngx_xmpp_dir_push(s, &x[i], 1, 1);       /* gone */
            nj = j;
            continue;
        }

        if (rc > 0) {
            ngx_xmpp_dir_push(s, &y[j], nj - j, 0);   /* new */
            ni = i;
            continue;
        }

        same = (ni - i == nj - j);

        for (k = 0; same && k < ni - i; k++) {
            same = ngx_memn2cmp(x[i + k].group.data, y[j + k].group.data,
                                x[i + k].group.len, y[j + k].group.len) == 0
                   && ngx_memn2cmp(x[i + k].name.data, y[j + k].name.data,
                                   x[i + k].name.len, y[j + k].name.len)
                      == 0;
        }

        if (!same) {
            ngx_xmpp_dir_push(s, &y[j], nj - j, 0);   /* changed */
        }
    }

    return NGX_OK;
}


/* one push: exactly one item (RFC 6121 2.1.6), a <group/> per group */
static void
ngx_xmpp_dir_push(ngx_xmpp_session_t *s, ngx_xmpp_contact_t *c,
    ngx_uint_t n, ngx_uint_t removed)
{
    ngx_uint_t        i;
    ngx_xmpp_wbuf_t  *b;

    static ngx_uint_t  seq;

    b = ngx_xmpp_wbuf_scratch(s->conf->max_output);

    ngx_xmpp_wbuf_lit(b, "<iq xmlns='" NGX_XMPP_NS_CLIENT "' type='set'"
                      " id='dirpush");

    if (ngx_xmpp_wbuf_reserve(b, NGX_INT_T_LEN) == NGX_OK) {
        b->last = ngx_sprintf(b->last, "%ui", ++seq);
    }

    ngx_xmpp_wbuf_lit(b, "' to='");
    ngx_xmpp_wbuf_escs(b, &s->jid.full);
    ngx_xmpp_wbuf_lit(b, "'><query xmlns='" NGX_XMPP_NS_ROSTER "'>"
                      "<item jid='");
    ngx_xmpp_wbuf_escs(b, &c->jid);

    if (removed) {
        ngx_xmpp_wbuf_lit(b, "' subscription='remove'/></query></iq>");
        (void) ngx_xmpp_session_send_wbuf(s, b);
        return;
    }

    if (c->name.len) {
        ngx_xmpp_wbuf_lit(b, "' name='");
        ngx_xmpp_wbuf_escs(b, &c->name);
    }

    ngx_xmpp_wbuf_lit(b, "' subscription='both'>");

    for (i = 0; i < n; i++) {
        ngx_xmpp_wbuf_lit(b, "<group>");
        ngx_xmpp_wbuf_escs(b, &c[i].group);
        ngx_xmpp_wbuf_lit(b, "</group>");
    }

    ngx_xmpp_wbuf_lit(b, "</item></query></iq>");

    (void) ngx_xmpp_session_send_wbuf(s, b);
}


static int
ngx_xmpp_dir_contact_cmp(const void *a, const void *b)
{
    const ngx_xmpp_contact_t  *x = a, *y = b;

    ngx_int_t  rc;

    rc = ngx_memn2cmp(x->jid.data, y->jid.data, x->jid.len, y->jid.len);

    if (rc == 0) {
        rc = ngx_memn2cmp(x->group.data, y->group.data, x->group.len,
                          y->group.len);
    }

    return rc < 0 ? -1 : (rc > 0);
}


static int
ngx_xmpp_dir_member_cmp(const void *a, const void *b)
{
    const ngx_xmpp_dir_member_t  *x = a, *y = b;

    ngx_int_t  rc;

    rc = ngx_memn2cmp(x->local.data, y->local.data, x->local.len,
                      y->local.len);

    return rc < 0 ? -1 : (rc > 0);
}


static ngx_xmpp_dir_member_t *
ngx_xmpp_dir_find(ngx_xmpp_dir_group_t *g, ngx_str_t *local)
{
    ngx_int_t               rc;
    ngx_uint_t              lo, hi, mid;
    ngx_xmpp_dir_member_t  *m;

    m = g->members.elts;
    lo = 0;
    hi = g->members.nelts;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        rc = ngx_memn2cmp(m[mid].local.data, local->data, m[mid].local.len,
                          local->len);

        if (rc == 0) {
            return &m[mid];
        }

        if (rc < 0) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    return NULL;
}


/* the localpart of a bare JID of our domain, or an empty string */
static void
ngx_xmpp_dir_local(ngx_str_t *bare, ngx_str_t *local)
{
    u_char           *at;
    ngx_xmpp_conf_t  *xcf;

    local->len = 0;
    xcf = ngx_xmpp_dir_conf;

    at = ngx_strlchr(bare->data, bare->data + bare->len, '@');

    if (xcf == NULL || at == NULL
        || (size_t) (bare->data + bare->len - at - 1) != xcf->domain.len
        || ngx_strncasecmp(at + 1, xcf->domain.data, xcf->domain.len) != 0)
    {
        return;
    }

    local->data = bare->data;
    local->len = at - bare->data;
}


ngx_int_t
ngx_xmpp_dir_shared_contacts(ngx_str_t *bare, ngx_pool_t *pool,
    ngx_array_t *out)
{
    ngx_str_t  local;

    ngx_xmpp_dir_local(bare, &local);

    if (ngx_xmpp_dir_snap == NULL || local.len == 0) {
        return NGX_OK;
    }

    return ngx_xmpp_dir_contacts(ngx_xmpp_dir_snap, &local, pool, out);
}


/* one ngx_xmpp_contact_t per (contact, group) of local in snap */
static ngx_int_t
ngx_xmpp_dir_contacts(ngx_xmpp_dir_snapshot_t *snap, ngx_str_t *local,
    ngx_pool_t *pool, ngx_array_t *out)
{
    u_char                 *p;
    ngx_str_t              *domain;
    ngx_uint_t              i, j;
    ngx_xmpp_contact_t     *c;
    ngx_xmpp_dir_group_t   *g;
    ngx_xmpp_dir_member_t  *m;

    domain = &ngx_xmpp_dir_conf->domain;

    for (i = 0; i < snap->ngroups; i++) {
        g = &snap->groups[i];

        if (ngx_xmpp_dir_find(g, local) == NULL) {
            continue;
        }

        m = g->members.elts;

        for (j = 0; j < g->members.nelts; j++) {
            if (m[j].local.len == local->len
                && ngx_strncmp(m[j].local.data, local->data, local->len)
                   == 0)
            {
                continue;
            }

            c = ngx_array_push(out);
            if (c == NULL) {
                return NGX_ERROR;
            }

            p = ngx_pnalloc(pool, m[j].local.len + 1 + domain->len);
            if (p == NULL) {
                return NGX_ERROR;
            }

            c->jid.data = p;
            p = ngx_cpymem(p, m[j].local.data, m[j].local.len);
            *p++ = '@';
            ngx_memcpy(p, domain->data, domain->len);
            c->jid.len = m[j].local.len + 1 + domain->len;

            /* the snapshot may be replaced: copies, not references */
            c->name.data = ngx_pstrdup(pool, &m[j].name);
            c->name.len = m[j].name.len;
            c->group.data = ngx_pstrdup(pool, &g->name);
            c->group.len = g->name.len;

            if ((c->name.len && c->name.data == NULL)
                || c->group.data == NULL)
            {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


/*
 * RFC 6121 section 2.1.3 with the shared contacts only: one <item/> per
 * contact, subscription "both" (membership is mutual and managed by the
 * directory), a <group/> per department group it shares with the user.
 */
void
ngx_xmpp_dir_roster_reply(ngx_xmpp_session_t *s, ngx_xmpp_stanza_t *st)
{
    ngx_uint_t            i;
    ngx_array_t           contacts;
    ngx_xmpp_wbuf_t      *b;
    ngx_xmpp_contact_t   *c;

    if (ngx_array_init(&contacts, st->pool, 64, sizeof(ngx_xmpp_contact_t))
        != NGX_OK
        || ngx_xmpp_dir_shared_contacts(&s->jid.bare, st->pool, &contacts)
           != NGX_OK)
    {
        ngx_xmpp_router_error(s, st, "wait", "internal-server-error");
        return;
    }

    c = contacts.elts;

    b = ngx_xmpp_wbuf_scratch(s->conf->max_output);

    ngx_xmpp_wbuf_lit(b, "<iq xmlns='" NGX_XMPP_NS_CLIENT "' type='result'"
                      " to='");
    ngx_xmpp_wbuf_escs(b, &s->jid.full);
    ngx_xmpp_wbuf_lit(b, "' id='");
    ngx_xmpp_wbuf_escs(b, &st->id);
    ngx_xmpp_wbuf_lit(b, "'><query xmlns='" NGX_XMPP_NS_ROSTER "'>");

    for (i = 0; i < contacts.nelts; i++) {
        if (c[i].jid.len == 0) {
            continue;                     /* merged into an earlier item */
        }

        ngx_xmpp_roster_shared_item(b, c, i, contacts.nelts);
    }

    ngx_xmpp_wbuf_lit(b, "</query></iq>");

    (void) ngx_xmpp_session_send_wbuf(s, b);
}
