
/*
 * Conclave directory client: connections.
 *
 * Two pools of LDAP handles ("service" connections stay bound as the
 * service account; "bind" connections are rebound by every sign-in, as
 * a libldap connection runs one bind at a time and a user bind changes
 * its identity).  A pool is a mutex-protected stack of idle handles; a
 * caller that finds it empty opens a new connection, so the pool size
 * caps idle connections, not concurrency.
 *
 * ldaps:// and StartTLS (RFC 4513 section 3) connections share one TLS
 * context built from the CA file, and check the server's certificate
 * and name (RFC 4513 section 3.1.3) unless told not to.
 *
 * Every wait is bounded: connect and the TLS handshake by
 * LDAP_OPT_NETWORK_TIMEOUT, every result by an explicit ldap_result()
 * timeout, and the whole call by its deadline.  A handle that saw a
 * timeout or a transport error is discarded: libldap would silently
 * reopen a dead default connection unauthenticated on the next request.
 */


#ifndef _GNU_SOURCE
#define _GNU_SOURCE             /* sigtimedwait() */
#endif

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cdir_int.h"


/* libldap exports it; ldap_pvt.h is not installed */
void ldap_pvt_tls_ctx_free(void *ctx);


static int cdir_budget(cdir_call_t *call);
static void cdir_ms_to_tv(int ms, struct timeval *tv);
static int cdir_connect(cdir_call_t *call, const char *uri, int ms,
    LDAP **ldp);
static int cdir_tls_failed(cdir_call_t *call, LDAP *ld, int rc,
    const char *uri, int starttls);
static int cdir_open(cdir_call_t *call, cdir_pool_t *pool, LDAP **ldp);
static int cdir_open_uri(cdir_call_t *call, cdir_pool_t *pool,
    const char *uri, LDAP **ldp);
static int cdir_wait(cdir_call_t *call, LDAP *ld, int msgid,
    LDAPMessage **msg);
static int cdir_search_op(cdir_call_t *call, LDAP *ld, void *data);
static int cdir_search_page(cdir_call_t *call, LDAP *ld, cdir_search_t *s,
    struct berval *cookie, int *more);
static void cdir_pool_put(cdir_pool_t *p, LDAP *ld);


/*
 * One TLS context, built here from the CA file, is shared by every
 * connection: libldap would otherwise read and parse the CA file again
 * for each one.  Verification (RFC 4513 section 3.1.3: the server's
 * name against the certificate) is on unless tls_insecure.
 */

int
cdir_tls_init(cdir_t *d, const char *ca_file, char *err, size_t errlen)
{
    int    i, tls, req, zero, rc;
    LDAP  *ld;

    tls = d->starttls;

    for (i = 0; i < d->nuris; i++) {
        if (strncasecmp(d->uris[i], "ldaps://", 8) == 0) {
            tls = 1;
        }
    }

    if (!tls) {
        return 0;
    }

    rc = ldap_initialize(&ld, d->uris[0]);
    if (rc != LDAP_SUCCESS) {
        cdir_err(err, errlen, "TLS set-up: %s", ldap_err2string(rc));
        return -1;
    }

    req = d->tls_insecure ? LDAP_OPT_X_TLS_NEVER : LDAP_OPT_X_TLS_DEMAND;
    zero = 0;

    if (ca_file != NULL && ca_file[0] != '\0') {
        d->ca_file = strdup(ca_file);
        if (d->ca_file == NULL) {
            cdir_err(err, errlen, "out of memory");
            cdir_discard(ld);
            return -1;
        }
    }

    if (ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &req)
        != LDAP_OPT_SUCCESS
        || (ca_file != NULL && ca_file[0] != '\0'
            && ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTFILE, ca_file)
               != LDAP_OPT_SUCCESS)
        || ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &zero)
           != LDAP_OPT_SUCCESS
        || ldap_get_option(ld, LDAP_OPT_X_TLS_CTX, &d->tls_ctx)
           != LDAP_OPT_SUCCESS
        || d->tls_ctx == NULL)
    {
        cdir_err(err, errlen, "TLS set-up failed (CA file \"%s\")",
                 ca_file ? ca_file : "system default");
        cdir_discard(ld);
        return -1;
    }

    cdir_discard(ld);

    return 0;
}


/* a search on the service pool; the LDAP result code is in s->code */

int
cdir_search(cdir_call_t *call, cdir_search_t *s)
{
    return cdir_run(call, &call->dir->service, call->res->stage,
                    cdir_search_op, s);
}


/*
 * Runs one request on a pooled or new connection.  Returns LDAP_SUCCESS
 * when the server answered (the LDAP result code is in data), or the
 * transport error.  A pooled connection may have been closed by the
 * server while idle (idle timeout, restart): that shows at once as
 * LDAP_SERVER_DOWN, not as a timeout, and the request is retried once on
 * a fresh connection.
 */

int
cdir_run(cdir_call_t *call, cdir_pool_t *pool, const char *stage,
    cdir_op_pt op, void *data)
{
    int              rc, pooled;
    LDAP            *ld;
    cdir_t          *d;
    unsigned long    us, max;
    struct timespec  t0, t1;

    d = call->dir;

    cdir_stat_add(d, busy[pool->service ? 0 : 1], 1);

    ld = cdir_pool_get(pool);
    pooled = (ld != NULL);

    for ( ;; ) {

        if (ld == NULL) {
            rc = cdir_open(call, pool, &ld);
            if (rc != LDAP_SUCCESS) {
                break;
            }
        }

        call->res->stage = stage;

        (void) clock_gettime(CLOCK_MONOTONIC, &t0);

        rc = op(call, ld, data);

        (void) clock_gettime(CLOCK_MONOTONIC, &t1);

        us = (t1.tv_sec - t0.tv_sec) * 1000000UL
             + (t1.tv_nsec - t0.tv_nsec) / 1000;

        cdir_stat_add(d, ops, 1);
        cdir_stat_add(d, op_usec, us);

        max = __atomic_load_n(&d->stats.op_usec_max, __ATOMIC_RELAXED);
        while (us > max
               && !__atomic_compare_exchange_n(&d->stats.op_usec_max, &max,
                                               us, 0, __ATOMIC_RELAXED,
                                               __ATOMIC_RELAXED))
        { /* void */ }

        if (rc == LDAP_SUCCESS) {
            cdir_pool_put(pool, ld);
            break;
        }

        cdir_stat_add(d, op_errors, 1);

        if (rc == LDAP_TIMEOUT) {
            cdir_stat_add(d, op_timeouts, 1);
        }

        cdir_discard(ld);
        ld = NULL;

        if (rc != LDAP_SERVER_DOWN || !pooled) {
            break;
        }

        pooled = 0;
    }

    cdir_stat_add(d, busy[pool->service ? 0 : 1], -1UL);

    return rc;
}


/*
 * Opens a connection for the pool, trying the URIs in order starting from
 * the one that worked last, so that once a server is down every caller
 * does not pay for it again.  Fails over when a server is down (refused,
 * reset, closed) or its TLS handshake fails (another replica may have a
 * good certificate); not after a timeout, which has used up the budget,
 * nor when the service account is rejected, a configuration error.
 */

static int
cdir_open(cdir_call_t *call, cdir_pool_t *pool, LDAP **ldp)
{
    int      i, n, first, rc;
    cdir_t  *d;

    d = call->dir;
    rc = LDAP_SERVER_DOWN;

    first = __atomic_load_n(&d->current, __ATOMIC_RELAXED);

    for (i = 0; i < d->nuris; i++) {
        n = (first + i) % d->nuris;

        cdir_stat_add(d, connects, 1);

        rc = cdir_open_uri(call, pool, d->uris[n], ldp);

        if (rc == LDAP_SUCCESS) {
            if (n != first) {
                __atomic_store_n(&d->current, n, __ATOMIC_RELAXED);
            }

            return LDAP_SUCCESS;
        }

        cdir_stat_add(d, connect_errors, 1);

        if (rc != LDAP_SERVER_DOWN && rc != LDAP_CONNECT_ERROR
            && !(rc == CDIR_RC_REPORTED
                 && strncmp(call->res->reason, "TLS", 3) == 0))
        {
            return rc;
        }
    }

    return rc;
}


/* Connects, and binds service connections as the service account. */

static int
cdir_open_uri(cdir_call_t *call, cdir_pool_t *pool, const char *uri,
    LDAP **ldp)
{
    int            ms, rc;
    LDAP          *ld;
    cdir_t        *d;
    cdir_op_arg_t  bind;

    ld = NULL;

    d = call->dir;

    call->res->stage = "connect";

    ms = cdir_budget(call);
    if (ms == 0) {
        return LDAP_TIMEOUT;
    }

    rc = cdir_connect(call, uri, ms, &ld);
    if (rc != LDAP_SUCCESS) {
        return rc;
    }

    if (pool->service && d->bind_dn != NULL) {
        call->res->stage = "service bind";

        bind.dn = d->bind_dn;
        bind.value = d->bind_pw;
        bind.len = d->bind_pw_len;
        bind.code = LDAP_OTHER;

        rc = cdir_bind_op(call, ld, &bind);

        if (rc == LDAP_SUCCESS && bind.code != LDAP_SUCCESS) {
            cdir_set(call->res, CDIR_UNAVAILABLE,
                     "service account rejected: %s",
                     ldap_err2string(bind.code));
            rc = CDIR_RC_REPORTED;
        }

        if (rc != LDAP_SUCCESS) {
            cdir_discard(ld);
            return rc;
        }
    }

    *ldp = ld;

    return LDAP_SUCCESS;
}


static int
cdir_connect(cdir_call_t *call, const char *uri, int ms, LDAP **ldp)
{
    int             rc, version, req, ldaps;
    LDAP           *ld;
    cdir_t         *d;
    struct timeval  net, api;

    d = call->dir;
    ld = NULL;

    rc = ldap_initialize(&ld, uri);
    if (rc != LDAP_SUCCESS) {
        return rc;
    }

    version = LDAP_VERSION3;
    cdir_ms_to_tv(ms, &net);
    cdir_ms_to_tv(d->timeout_ms, &api);

    /*
     * Referrals are not chased: that would bind anonymously to servers
     * the configuration never named.  LDAP_OPT_TIMEOUT bounds any libldap
     * wait that is not given an explicit timeout (the StartTLS exchange
     * among them); LDAP_OPT_NETWORK_TIMEOUT bounds connect and the TLS
     * handshake.
     */

    if (ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &version)
           != LDAP_OPT_SUCCESS
        || ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF)
           != LDAP_OPT_SUCCESS
        || ldap_set_option(ld, LDAP_OPT_RESTART, LDAP_OPT_ON)
           != LDAP_OPT_SUCCESS
        || ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &net)
           != LDAP_OPT_SUCCESS
        || ldap_set_option(ld, LDAP_OPT_TIMEOUT, &api) != LDAP_OPT_SUCCESS)
    {
        rc = LDAP_LOCAL_ERROR;
        goto fail;
    }

    if (d->tls_ctx != NULL) {
        req = d->tls_insecure ? LDAP_OPT_X_TLS_NEVER : LDAP_OPT_X_TLS_DEMAND;

        if (ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &req)
               != LDAP_OPT_SUCCESS
            || ldap_set_option(ld, LDAP_OPT_X_TLS_CTX, d->tls_ctx)
               != LDAP_OPT_SUCCESS)
        {
            rc = LDAP_LOCAL_ERROR;
            goto fail;
        }
    }

    ldaps = (strncasecmp(uri, "ldaps://", 8) == 0);

    /* connect now, so that failover to the next URI happens here */
    rc = ldap_connect(ld);
    if (rc != LDAP_SUCCESS) {
        if (ldaps) {
            rc = cdir_tls_failed(call, ld, rc, uri, 0);
        }

        goto fail;
    }

    if (d->starttls && !ldaps) {
        rc = ldap_start_tls_s(ld, NULL, NULL);
        if (rc != LDAP_SUCCESS) {
            rc = cdir_tls_failed(call, ld, rc, uri, 1);
            goto fail;
        }
    }

    *ldp = ld;

    return LDAP_SUCCESS;

fail:

    cdir_discard(ld);
    return rc;
}


/*
 * A refused connection stays "server down".  A handshake that failed
 * says so, with the URI and the CA file: GnuTLS reports a certificate
 * that does not verify, or does not name the host in the URI, only as
 * "(unknown error code)", and an administrator who saw "server down"
 * would look for a stopped server rather than a wrong CA file.  libldap
 * leaves a diagnostic message only when the TCP connection was made.
 */

static int
cdir_tls_failed(cdir_call_t *call, LDAP *ld, int rc, const char *uri,
    int starttls)
{
    char  *diag;

    if (rc == LDAP_TIMEOUT) {
        return rc;
    }

    diag = NULL;
    (void) ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag);

    if (!starttls && (diag == NULL || diag[0] == '\0')) {
        if (diag != NULL) {
            ldap_memfree(diag);
        }

        return rc;
    }

    cdir_stat_add(call->dir, tls_errors, 1);

    cdir_set(call->res, CDIR_UNAVAILABLE,
             "TLS%s with %s failed (%s%s%s): is the certificate signed by "
             "a CA in %s and issued for that host?",
             starttls ? " (StartTLS)" : "", uri, ldap_err2string(rc),
             diag && diag[0] ? ", " : "", diag ? diag : "",
             call->dir->ca_file ? call->dir->ca_file : "the system store");

    if (diag != NULL) {
        ldap_memfree(diag);
    }

    return CDIR_RC_REPORTED;
}


static int
cdir_search_op(cdir_call_t *call, LDAP *ld, void *data)
{
    int             rc, more;
    cdir_search_t  *s;
    struct berval   cookie;

    s = data;

    s->entries = 0;
    cookie.bv_val = NULL;
    cookie.bv_len = 0;

    do {
        rc = cdir_search_page(call, ld, s, &cookie, &more);
    } while (rc == LDAP_SUCCESS && more);

    ldap_memfree(cookie.bv_val);

    if (rc == LDAP_SERVER_DOWN && s->entries > 0) {
        /* not retried on a new connection: entries were handed out */
        rc = LDAP_UNAVAILABLE;
    }

    return rc;
}


/*
 * One request.  Paged (RFC 2696): the control asks for page_size
 * entries and carries the server's cookie; an empty cookie in the answer
 * ends the search.  The control is not critical: a server without
 * paging answers as to a plain search.  Paged searches count entries
 * against sizelimit here, as the server's own limit may be smaller.
 */

static int
cdir_search_page(cdir_call_t *call, LDAP *ld, cdir_search_t *s,
    struct berval *cookie, int *more)
{
    int             rc, msgid;
    ber_int_t       count;
    LDAPMessage    *msg, *e;
    LDAPControl    *page, *ctrls[2], **rctrls, *pr;
    struct timeval  limit;
    struct berval   next;

    *more = 0;
    page = NULL;
    ctrls[0] = NULL;
    ctrls[1] = NULL;

    /* the server's own time limit, in whole seconds */
    limit.tv_sec = (call->dir->timeout_ms + 999) / 1000;
    limit.tv_usec = 0;

    if (s->paged && call->dir->page_size > 0) {
        rc = ldap_create_page_control(ld, call->dir->page_size,
                                      cookie->bv_len ? cookie : NULL, 0,
                                      &page);
        if (rc != LDAP_SUCCESS) {
            return rc;
        }

        ctrls[0] = page;
    }

    rc = ldap_search_ext(ld, s->base, s->scope, s->filter, s->attrs, 0,
                         page ? ctrls : NULL, NULL, &limit,
                         page ? 0 : s->sizelimit, &msgid);

    if (page != NULL) {
        ldap_control_free(page);
    }

    if (rc != LDAP_SUCCESS) {
        return rc;
    }

    rc = cdir_wait(call, ld, msgid, &msg);
    if (rc != LDAP_SUCCESS) {
        return rc;
    }

    rctrls = NULL;

    rc = ldap_parse_result(ld, msg, &s->code, NULL, NULL, NULL,
                           ctrls[0] ? &rctrls : NULL, 0);
    if (rc != LDAP_SUCCESS) {
        goto done;
    }

    for (e = ldap_first_entry(ld, msg); e != NULL;
         e = ldap_next_entry(ld, e))
    {
        if (ctrls[0] && s->sizelimit > 0 && s->entries >= s->sizelimit) {
            s->code = LDAP_SIZELIMIT_EXCEEDED;
            break;
        }

        if (s->entries++ == 0 || !s->first_only) {
            s->entry(call, ld, e, s->ctx);
        }
    }

    pr = rctrls ? ldap_control_find(LDAP_CONTROL_PAGEDRESULTS, rctrls, NULL)
                : NULL;

    if (s->code == LDAP_SUCCESS && pr != NULL) {
        next.bv_val = NULL;
        next.bv_len = 0;

        if (ldap_parse_pageresponse_control(ld, pr, &count, &next)
            == LDAP_SUCCESS)
        {
            ldap_memfree(cookie->bv_val);
            *cookie = next;
            *more = (next.bv_len > 0);
        }
    }

    if (rctrls != NULL) {
        ldap_controls_free(rctrls);
    }

done:

    ldap_msgfree(msg);
    return rc;
}


int
cdir_bind_op(cdir_call_t *call, LDAP *ld, void *data)
{
    int             rc, msgid;
    LDAPMessage    *msg;
    cdir_op_arg_t  *bind;
    struct berval   cred;

    bind = data;

    cred.bv_val = (char *) bind->value;
    cred.bv_len = bind->len;

    rc = ldap_sasl_bind(ld, bind->dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL,
                        &msgid);
    if (rc != LDAP_SUCCESS) {
        return rc;
    }

    rc = cdir_wait(call, ld, msgid, &msg);
    if (rc != LDAP_SUCCESS) {
        return rc;
    }

    return ldap_parse_result(ld, msg, &bind->code, NULL, NULL, NULL, NULL,
                             1);
}


static int
cdir_wait(cdir_call_t *call, LDAP *ld, int msgid, LDAPMessage **msg)
{
    int             ms, rc;
    struct timeval  tv;

    *msg = NULL;

    ms = cdir_budget(call);
    if (ms == 0) {
        return LDAP_TIMEOUT;
    }

    cdir_ms_to_tv(ms, &tv);

    rc = ldap_result(ld, msgid, LDAP_MSG_ALL, &tv, msg);

    if (rc > 0) {
        return LDAP_SUCCESS;
    }

    if (rc == 0) {
        return LDAP_TIMEOUT;
    }

    if (ldap_get_option(ld, LDAP_OPT_RESULT_CODE, &rc) != LDAP_OPT_SUCCESS
        || rc == LDAP_SUCCESS)
    {
        rc = LDAP_OTHER;
    }

    return rc;
}


/* Milliseconds the next wait may take: timeout_ms, cut to the deadline. */

static int
cdir_budget(cdir_call_t *call)
{
    long long        left;
    struct timespec  now;

    (void) clock_gettime(CLOCK_MONOTONIC, &now);

    left = (call->deadline.tv_sec - now.tv_sec) * 1000LL
           + (call->deadline.tv_nsec - now.tv_nsec) / 1000000;

    if (left <= 0) {
        return 0;
    }

    return left < call->dir->timeout_ms ? (int) left : call->dir->timeout_ms;
}


static void
cdir_ms_to_tv(int ms, struct timeval *tv)
{
    tv->tv_sec = ms / 1000;
    tv->tv_usec = (ms % 1000) * 1000;
}


LDAP *
cdir_pool_get(cdir_pool_t *p)
{
    LDAP  *ld;

    ld = NULL;

    (void) pthread_mutex_lock(&p->lock);

    /* LIFO: the most recently used connection is the least likely stale */
    if (p->nidle > 0) {
        ld = p->idle[--p->nidle];
    }

    (void) pthread_mutex_unlock(&p->lock);

    return ld;
}


static void
cdir_pool_put(cdir_pool_t *p, LDAP *ld)
{
    (void) pthread_mutex_lock(&p->lock);

    if (p->nidle < p->max) {
        p->idle[p->nidle++] = ld;
        ld = NULL;
    }

    (void) pthread_mutex_unlock(&p->lock);

    if (ld != NULL) {
        cdir_discard(ld);
    }
}


int
cdir_pool_init(cdir_pool_t *p, int max, int service)
{
    p->idle = calloc(max > 0 ? max : 1, sizeof(LDAP *));
    if (p->idle == NULL) {
        return -1;
    }

    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p->idle);
        p->idle = NULL;
        return -1;
    }

    p->max = max;
    p->nidle = 0;
    p->service = service ? 1 : 0;
    p->inited = 1;

    return 0;
}


void
cdir_pool_free(cdir_pool_t *p)
{
    if (!p->inited) {
        return;
    }

    while (p->nidle > 0) {
        cdir_discard(p->idle[--p->nidle]);
    }

    (void) pthread_mutex_destroy(&p->lock);
    free(p->idle);
    p->inited = 0;
}


void
cdir_discard(LDAP *ld)
{
    if (ld != NULL) {
        (void) ldap_unbind_ext(ld, NULL, NULL);
    }
}


void
cdir_tls_free(cdir_t *d)
{
    if (d->tls_ctx != NULL) {
        ldap_pvt_tls_ctx_free(d->tls_ctx);
        d->tls_ctx = NULL;
    }

    free(d->ca_file);
    d->ca_file = NULL;
}


int
cdir_split_uris(cdir_t *d, const char *uri, char *err, size_t errlen)
{
    int           n;
    char         *p, *save;
    LDAPURLDesc  *lud;

    d->uri_buf = strdup(uri);
    d->uris = calloc(strlen(uri) / 2 + 1, sizeof(char *));

    if (d->uri_buf == NULL || d->uris == NULL) {
        cdir_err(err, errlen, "out of memory");
        return -1;
    }

    n = 0;

    for (p = strtok_r(d->uri_buf, " \t", &save);
         p != NULL;
         p = strtok_r(NULL, " \t", &save))
    {
        if (ldap_url_parse(p, &lud) != LDAP_URL_SUCCESS) {
            cdir_err(err, errlen, "invalid LDAP URI \"%s\"", p);
            return -1;
        }

        ldap_free_urldesc(lud);
        d->uris[n++] = p;
    }

    if (n == 0) {
        cdir_err(err, errlen, "no LDAP URI");
        return -1;
    }

    d->nuris = n;

    return 0;
}


/*
 * Blocks SIGPIPE in this thread for the duration of a call and then
 * discards a SIGPIPE that the call itself raised, without touching the
 * process-wide disposition (the caller may be nginx or a test).
 */

void
cdir_sigpipe_block(cdir_sigpipe_t *sp)
{
    sigset_t  set, pending;

    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);

    sp->was_pending = (sigpending(&pending) == 0
                       && sigismember(&pending, SIGPIPE));

    (void) pthread_sigmask(SIG_BLOCK, &set, &sp->old);
}


void
cdir_sigpipe_restore(cdir_sigpipe_t *sp)
{
    sigset_t         set, pending;
    struct timespec  zero;

    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);

    if (!sp->was_pending
        && sigpending(&pending) == 0
        && sigismember(&pending, SIGPIPE))
    {
        zero.tv_sec = 0;
        zero.tv_nsec = 0;
        (void) sigtimedwait(&set, NULL, &zero);
    }

    (void) pthread_sigmask(SIG_SETMASK, &sp->old, NULL);
}


void
cdir_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list  args;

    if (err == NULL || errlen == 0) {
        return;
    }

    va_start(args, fmt);
    (void) vsnprintf(err, errlen, fmt, args);
    va_end(args);
}
