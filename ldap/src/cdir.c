
/*
 * Conclave directory client: LDAP sign-in by search + bind.
 *
 * The service account searches for the user's DN, optionally compares
 * the DN against the sign-in group's "member" attribute (this needs no
 * memberOf overlay), and then the user's DN binds with the password.
 *
 * Connections come from two pools: "service" connections stay bound as
 * the service account, "bind" connections are rebound by every sign-in
 * (a libldap connection can run only one bind at a time, and a user bind
 * changes its identity).  A pool is a mutex-protected stack of idle LDAP
 * handles; a caller that finds it empty opens a new connection, so the
 * pool size caps idle connections, not concurrency.
 *
 * Every wait is bounded: connect by LDAP_OPT_NETWORK_TIMEOUT, every result
 * by an explicit ldap_result() timeout, and the whole call by a deadline
 * of twice timeout_ms.  A handle that saw a timeout or a transport error
 * is discarded: libldap would silently reopen a dead default connection
 * unauthenticated on the next request.
 */


#ifndef _GNU_SOURCE
#define _GNU_SOURCE             /* explicit_bzero(), sigtimedwait() */
#endif

#include <sys/time.h>           /* before <ldap.h>: struct timeval */
#include <ldap.h>

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cdir.h"


#define CDIR_MAX_TIMEOUT_MS  3600000
#define CDIR_SEARCH_LIMIT    2           /* enough to detect ambiguity */

/* not an LDAP code: cdir_open() has filled in the reason itself */
#define CDIR_RC_REPORTED     0x7ffe


typedef struct {
    pthread_mutex_t       lock;
    LDAP                **idle;
    int                   nidle;
    int                   max;
    unsigned              service:1;     /* bind as the service account */
    unsigned              inited:1;
} cdir_pool_t;


struct cdir_s {
    char                **uris;
    int                   nuris;
    int                   current;       /* URI that worked last; atomic */
    char                 *uri_buf;
    char                 *bind_dn;       /* NULL: anonymous searches */
    char                 *bind_pw;
    size_t                bind_pw_len;
    char                 *base;
    char                 *user_filter;
    size_t                nsubst;        /* occurrences of %u */
    char                 *group_dn;      /* NULL: no group restriction */
    int                   timeout_ms;
    cdir_pool_t           service;
    cdir_pool_t           bind;
};


typedef struct {
    cdir_t               *dir;
    cdir_auth_result_t   *res;
    struct timespec       deadline;
} cdir_call_t;


typedef struct {
    const char           *filter;
    int                   code;
    int                   entries;
    int                   dn_too_long;
} cdir_search_t;


typedef struct {
    const char           *dn;
    const char           *value;
    size_t                len;
    int                   code;
} cdir_op_arg_t;


typedef struct {
    sigset_t              old;
    int                   was_pending;
} cdir_sigpipe_t;


typedef int (*cdir_op_pt)(cdir_call_t *call, LDAP *ld, void *data);


static void cdir_err(char *err, size_t errlen, const char *fmt, ...);
static int cdir_split_uris(cdir_t *d, const char *uri, char *err,
    size_t errlen);
static int cdir_pool_init(cdir_pool_t *p, int max, int service);
static void cdir_pool_free(cdir_pool_t *p);
static LDAP *cdir_pool_get(cdir_pool_t *p);
static void cdir_pool_put(cdir_pool_t *p, LDAP *ld);
static void cdir_discard(LDAP *ld);
static int cdir_budget(cdir_call_t *call);
static void cdir_ms_to_tv(int ms, struct timeval *tv);
static int cdir_connect(cdir_t *d, const char *uri, int ms, LDAP **ldp);
static int cdir_open(cdir_call_t *call, cdir_pool_t *pool, LDAP **ldp);
static int cdir_open_uri(cdir_call_t *call, cdir_pool_t *pool,
    const char *uri, LDAP **ldp);
static int cdir_run(cdir_call_t *call, cdir_pool_t *pool, const char *stage,
    cdir_op_pt op, void *data);
static int cdir_wait(cdir_call_t *call, LDAP *ld, int msgid,
    LDAPMessage **msg);
static int cdir_search_op(cdir_call_t *call, LDAP *ld, void *data);
static int cdir_compare_op(cdir_call_t *call, LDAP *ld, void *data);
static int cdir_bind_op(cdir_call_t *call, LDAP *ld, void *data);
static int cdir_check_input(const char *login, size_t login_len,
    const char *pw, size_t pw_len, cdir_auth_result_t *res);
static char *cdir_make_filter(cdir_t *d, const char *login, size_t len);
static int cdir_find_user(cdir_call_t *call, const char *login, size_t len);
static int cdir_check_group(cdir_call_t *call);
static int cdir_bind_user(cdir_call_t *call, const char *pw, size_t len);
static void cdir_set(cdir_auth_result_t *res, cdir_status_e status,
    const char *fmt, ...);
static void cdir_unavailable(cdir_call_t *call, int rc);
static void cdir_sigpipe_block(cdir_sigpipe_t *sp);
static void cdir_sigpipe_restore(cdir_sigpipe_t *sp);
static void cdir_init_once(void);


static pthread_once_t  cdir_once = PTHREAD_ONCE_INIT;


/*
 * Deep-copies cfg and checks it; does no network I/O, so it is safe to
 * call while parsing configuration.  On failure returns NULL with a
 * message in err.
 */

cdir_t *
cdir_create(const cdir_config_t *cfg, char *err, size_t errlen)
{
    const char  *p;
    cdir_t      *d;

    d = NULL;

    if (cfg == NULL || cfg->uri == NULL || cfg->uri[0] == '\0') {
        cdir_err(err, errlen, "no LDAP URI");
        goto fail;
    }

    if (cfg->base == NULL) {
        cdir_err(err, errlen, "no search base");
        goto fail;
    }

    if (cfg->user_filter == NULL || cfg->user_filter[0] != '('
        || strstr(cfg->user_filter, "%u") == NULL)
    {
        cdir_err(err, errlen, "user filter must be \"(...)\" containing %%u");
        goto fail;
    }

    if (cfg->timeout_ms <= 0 || cfg->timeout_ms > CDIR_MAX_TIMEOUT_MS) {
        cdir_err(err, errlen, "timeout must be 1..%d ms", CDIR_MAX_TIMEOUT_MS);
        goto fail;
    }

    if (cfg->pool_size < 0) {
        cdir_err(err, errlen, "negative pool size");
        goto fail;
    }

    (void) pthread_once(&cdir_once, cdir_init_once);

    d = calloc(1, sizeof(cdir_t));
    if (d == NULL) {
        cdir_err(err, errlen, "out of memory");
        goto fail;
    }

    d->timeout_ms = cfg->timeout_ms;

    if (cdir_split_uris(d, cfg->uri, err, errlen) != 0) {
        goto fail;
    }

    d->base = strdup(cfg->base);
    d->user_filter = strdup(cfg->user_filter);

    if (d->base == NULL || d->user_filter == NULL) {
        goto nomem;
    }

    for (p = d->user_filter; (p = strstr(p, "%u")) != NULL; p += 2) {
        d->nsubst++;
    }

    if (cfg->bind_dn != NULL && cfg->bind_dn[0] != '\0') {
        d->bind_dn = strdup(cfg->bind_dn);
        d->bind_pw = strdup(cfg->bind_pw ? cfg->bind_pw : "");

        if (d->bind_dn == NULL || d->bind_pw == NULL) {
            goto nomem;
        }

        d->bind_pw_len = strlen(d->bind_pw);

        if (d->bind_pw_len == 0) {
            /* RFC 4513 5.1.2: an empty password is an unauthenticated bind */
            cdir_err(err, errlen, "service account has no password");
            goto fail;
        }
    }

    if (cfg->group_dn != NULL && cfg->group_dn[0] != '\0') {
        d->group_dn = strdup(cfg->group_dn);
        if (d->group_dn == NULL) {
            goto nomem;
        }
    }

    if (cdir_pool_init(&d->service, cfg->pool_size, 1) != 0
        || cdir_pool_init(&d->bind, cfg->pool_size, 0) != 0)
    {
        goto nomem;
    }

    return d;

nomem:

    cdir_err(err, errlen, "out of memory");

fail:

    cdir_destroy(d);
    return NULL;
}


/* Closes every idle connection; no call may be in progress. */

void
cdir_destroy(cdir_t *d)
{
    cdir_sigpipe_t  sp;

    if (d == NULL) {
        return;
    }

    cdir_sigpipe_block(&sp);
    cdir_pool_free(&d->service);
    cdir_pool_free(&d->bind);
    cdir_sigpipe_restore(&sp);

    if (d->bind_pw != NULL) {
        explicit_bzero(d->bind_pw, d->bind_pw_len);
        free(d->bind_pw);
    }

    free(d->uris);
    free(d->uri_buf);
    free(d->bind_dn);
    free(d->base);
    free(d->user_filter);
    free(d->group_dn);
    free(d);
}


/*
 * RFC 4515 section 3: "*", "(", ")", "\" and NUL must be written as \XX
 * inside an assertion value.  Control characters are escaped as well so
 * that a filter never carries them raw into logs.  UTF-8 passes through.
 * dst receives a NUL-terminated string; returns its length, or
 * (size_t) -1 if dst_size is too small.
 */

size_t
cdir_escape_filter(char *dst, size_t dst_size, const char *src, size_t len)
{
    size_t          i, n;
    unsigned char   c;

    static const char  hex[] = "0123456789abcdef";

    if (dst_size == 0) {
        return (size_t) -1;
    }

    n = 0;

    for (i = 0; i < len; i++) {
        c = (unsigned char) src[i];

        if (c == '*' || c == '(' || c == ')' || c == '\\' || c < 0x20
            || c == 0x7f)
        {
            if (n + 3 >= dst_size) {
                return (size_t) -1;
            }

            dst[n++] = '\\';
            dst[n++] = hex[c >> 4];
            dst[n++] = hex[c & 0x0f];
            continue;
        }

        if (n + 1 >= dst_size) {
            return (size_t) -1;
        }

        dst[n++] = (char) c;
    }

    dst[n] = '\0';

    return n;
}


/*
 * Search, optional group check, then bind as the user.  Blocking; returns
 * within about 2 * timeout_ms.  The password is passed to libldap by
 * reference and never copied here.
 */

void
cdir_authenticate(cdir_t *d, const char *login, size_t login_len,
    const char *pw, size_t pw_len, cdir_auth_result_t *res)
{
    long long       ns;
    cdir_call_t     call;
    cdir_sigpipe_t  sp;

    memset(res, 0, sizeof(cdir_auth_result_t));
    res->stage = "input";

    if (cdir_check_input(login, login_len, pw, pw_len, res) != 0) {
        return;
    }

    if (d == NULL) {
        cdir_set(res, CDIR_UNAVAILABLE, "not configured");
        return;
    }

    call.dir = d;
    call.res = res;

    (void) clock_gettime(CLOCK_MONOTONIC, &call.deadline);
    ns = call.deadline.tv_nsec + 2LL * d->timeout_ms * 1000000;
    call.deadline.tv_sec += ns / 1000000000;
    call.deadline.tv_nsec = ns % 1000000000;

    /*
     * libldap writes with write(2): an unbind on a connection the server
     * has reset raises SIGPIPE, which must not kill an embedding process
     * that did not ignore it.
     */
    cdir_sigpipe_block(&sp);

    if (cdir_find_user(&call, login, login_len) == 0
        && cdir_check_group(&call) == 0
        && cdir_bind_user(&call, pw, pw_len) == 0)
    {
        res->status = CDIR_OK;
        res->stage = "done";
    }

    cdir_sigpipe_restore(&sp);
}


static int
cdir_check_input(const char *login, size_t login_len, const char *pw,
    size_t pw_len, cdir_auth_result_t *res)
{
    const char  *why;

    /*
     * An empty password would make an unauthenticated bind that succeeds
     * (RFC 4513 5.1.2), and NUL cannot be part of a DN search or a
     * password that other LDAP clients could type.
     */

    if (login == NULL || login_len == 0) {
        why = "empty login";

    } else if (login_len > CDIR_MAX_LOGIN) {
        why = "login too long";

    } else if (memchr(login, '\0', login_len) != NULL) {
        why = "invalid login";

    } else if (pw == NULL || pw_len == 0) {
        why = "empty password";

    } else if (pw_len > CDIR_MAX_PASSWORD) {
        why = "password too long";

    } else if (memchr(pw, '\0', pw_len) != NULL) {
        why = "invalid password";

    } else {
        return 0;
    }

    cdir_set(res, CDIR_DENIED, "%s", why);

    return -1;
}


static int
cdir_find_user(cdir_call_t *call, const char *login, size_t len)
{
    int                  rc;
    cdir_search_t        s;
    cdir_auth_result_t  *res;

    res = call->res;

    memset(&s, 0, sizeof(cdir_search_t));

    s.filter = cdir_make_filter(call->dir, login, len);
    if (s.filter == NULL) {
        cdir_set(res, CDIR_UNAVAILABLE, "out of memory");
        return -1;
    }

    rc = cdir_run(call, &call->dir->service, "search", cdir_search_op, &s);

    free((char *) s.filter);

    if (rc != LDAP_SUCCESS) {
        cdir_unavailable(call, rc);
        return -1;
    }

    switch (s.code) {

    case LDAP_SUCCESS:
    case LDAP_SIZELIMIT_EXCEEDED:

        if (s.entries > 1 || s.code == LDAP_SIZELIMIT_EXCEEDED) {
            cdir_set(res, CDIR_DENIED, "ambiguous user");
            return -1;
        }

        if (s.entries == 0) {
            cdir_set(res, CDIR_DENIED, "no such user");
            return -1;
        }

        if (s.dn_too_long) {
            cdir_set(res, CDIR_DENIED, "user DN too long");
            return -1;
        }

        return 0;

    case LDAP_NO_SUCH_OBJECT:
        /* the base is missing or hidden from the service account */
        cdir_set(res, CDIR_UNAVAILABLE, "search base not found");
        return -1;

    default:
        cdir_unavailable(call, s.code);
        return -1;
    }
}


static int
cdir_check_group(cdir_call_t *call)
{
    int            rc;
    cdir_op_arg_t  cmp;

    if (call->dir->group_dn == NULL) {
        return 0;
    }

    cmp.dn = call->dir->group_dn;
    cmp.value = call->res->dn;
    cmp.len = strlen(call->res->dn);
    cmp.code = LDAP_OTHER;

    rc = cdir_run(call, &call->dir->service, "compare", cdir_compare_op,
                  &cmp);

    if (rc != LDAP_SUCCESS) {
        cdir_unavailable(call, rc);
        return -1;
    }

    switch (cmp.code) {

    case LDAP_COMPARE_TRUE:
        return 0;

    case LDAP_COMPARE_FALSE:
    case LDAP_NO_SUCH_OBJECT:
    case LDAP_NO_SUCH_ATTRIBUTE:
        cdir_set(call->res, CDIR_DENIED, "not in group");
        return -1;

    default:
        cdir_unavailable(call, cmp.code);
        return -1;
    }
}


static int
cdir_bind_user(cdir_call_t *call, const char *pw, size_t len)
{
    int            rc;
    cdir_op_arg_t  bind;

    bind.dn = call->res->dn;
    bind.value = pw;
    bind.len = len;
    bind.code = LDAP_OTHER;

    rc = cdir_run(call, &call->dir->bind, "bind", cdir_bind_op, &bind);

    if (rc != LDAP_SUCCESS) {
        cdir_unavailable(call, rc);
        return -1;
    }

    switch (bind.code) {

    case LDAP_SUCCESS:
        return 0;

    case LDAP_INVALID_CREDENTIALS:
        cdir_set(call->res, CDIR_DENIED, "invalid credentials");
        return -1;

    case LDAP_INAPPROPRIATE_AUTH:
    case LDAP_INSUFFICIENT_ACCESS:
    case LDAP_UNWILLING_TO_PERFORM:
        /* a definite refusal for this account (disabled, policy) */
        cdir_set(call->res, CDIR_DENIED, "bind refused: %s",
                 ldap_err2string(bind.code));
        return -1;

    default:
        cdir_unavailable(call, bind.code);
        return -1;
    }
}


/*
 * Runs one request on a pooled or new connection.  Returns LDAP_SUCCESS
 * when the server answered (the LDAP result code is in data), or the
 * transport error.  A pooled connection may have been closed by the
 * server while idle (idle timeout, restart): that shows at once as
 * LDAP_SERVER_DOWN, not as a timeout, and the request is retried once on
 * a fresh connection.
 */

static int
cdir_run(cdir_call_t *call, cdir_pool_t *pool, const char *stage,
    cdir_op_pt op, void *data)
{
    int    rc, pooled;
    LDAP  *ld;

    ld = cdir_pool_get(pool);
    pooled = (ld != NULL);

    for ( ;; ) {

        if (ld == NULL) {
            rc = cdir_open(call, pool, &ld);
            if (rc != LDAP_SUCCESS) {
                return rc;
            }
        }

        call->res->stage = stage;

        rc = op(call, ld, data);

        if (rc == LDAP_SUCCESS) {
            cdir_pool_put(pool, ld);
            return LDAP_SUCCESS;
        }

        cdir_discard(ld);
        ld = NULL;

        if (rc != LDAP_SERVER_DOWN || !pooled) {
            return rc;
        }

        pooled = 0;
    }
}


/*
 * Opens a connection for the pool, trying the URIs in order starting from
 * the one that worked last, so that once a server is down every caller
 * does not pay for it again.  Fails over only when a server is down
 * (refused, reset, closed): a timeout has used up the budget, and a
 * rejected service account is a configuration error.
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

        rc = cdir_open_uri(call, pool, d->uris[n], ldp);

        if (rc == LDAP_SUCCESS) {
            if (n != first) {
                __atomic_store_n(&d->current, n, __ATOMIC_RELAXED);
            }

            return LDAP_SUCCESS;
        }

        if (rc != LDAP_SERVER_DOWN && rc != LDAP_CONNECT_ERROR) {
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

    d = call->dir;

    call->res->stage = "connect";

    ms = cdir_budget(call);
    if (ms == 0) {
        return LDAP_TIMEOUT;
    }

    rc = cdir_connect(d, uri, ms, &ld);
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
cdir_connect(cdir_t *d, const char *uri, int ms, LDAP **ldp)
{
    int             rc, version;
    LDAP           *ld;
    struct timeval  net, api;

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
     * wait that is not given an explicit timeout.
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

    /* connect now, so that failover to the next URI happens here */
    rc = ldap_connect(ld);
    if (rc != LDAP_SUCCESS) {
        goto fail;
    }

    *ldp = ld;

    return LDAP_SUCCESS;

fail:

    cdir_discard(ld);
    return rc;
}


static int
cdir_search_op(cdir_call_t *call, LDAP *ld, void *data)
{
    int             rc, msgid;
    char           *dn;
    char           *attrs[2];
    LDAPMessage    *msg, *entry;
    struct timeval  limit;
    cdir_search_t  *s;

    s = data;

    /* "1.1": no attributes, only DNs (RFC 4511 4.5.1.8) */
    attrs[0] = LDAP_NO_ATTRS;
    attrs[1] = NULL;

    /* the server's own time limit, in whole seconds */
    limit.tv_sec = (call->dir->timeout_ms + 999) / 1000;
    limit.tv_usec = 0;

    rc = ldap_search_ext(ld, call->dir->base, LDAP_SCOPE_SUBTREE, s->filter,
                         attrs, 0, NULL, NULL, &limit, CDIR_SEARCH_LIMIT,
                         &msgid);
    if (rc != LDAP_SUCCESS) {
        return rc;
    }

    rc = cdir_wait(call, ld, msgid, &msg);
    if (rc != LDAP_SUCCESS) {
        return rc;
    }

    rc = ldap_parse_result(ld, msg, &s->code, NULL, NULL, NULL, NULL, 0);
    if (rc != LDAP_SUCCESS) {
        goto done;
    }

    s->entries = ldap_count_entries(ld, msg);

    if (s->entries == 1) {
        entry = ldap_first_entry(ld, msg);

        dn = (entry != NULL) ? ldap_get_dn(ld, entry) : NULL;
        if (dn == NULL) {
            rc = LDAP_DECODING_ERROR;
            goto done;
        }

        if (strlen(dn) < sizeof(call->res->dn)) {
            strcpy(call->res->dn, dn);

        } else {
            s->dn_too_long = 1;
        }

        ldap_memfree(dn);
    }

done:

    ldap_msgfree(msg);
    return rc;
}


static int
cdir_compare_op(cdir_call_t *call, LDAP *ld, void *data)
{
    int             rc, msgid;
    LDAPMessage    *msg;
    cdir_op_arg_t  *cmp;
    struct berval   value;

    cmp = data;

    value.bv_val = (char *) cmp->value;
    value.bv_len = cmp->len;

    /* "member" has DN syntax: the server compares normalized DNs */
    rc = ldap_compare_ext(ld, cmp->dn, "member", &value, NULL, NULL, &msgid);
    if (rc != LDAP_SUCCESS) {
        return rc;
    }

    rc = cdir_wait(call, ld, msgid, &msg);
    if (rc != LDAP_SUCCESS) {
        return rc;
    }

    return ldap_parse_result(ld, msg, &cmp->code, NULL, NULL, NULL, NULL, 1);
}


static int
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


static char *
cdir_make_filter(cdir_t *d, const char *login, size_t len)
{
    char        *filter, *q;
    size_t       n;
    const char  *p;
    char         esc[CDIR_MAX_LOGIN * 3 + 1];

    n = cdir_escape_filter(esc, sizeof(esc), login, len);
    if (n == (size_t) -1) {
        return NULL;
    }

    filter = malloc(strlen(d->user_filter) + d->nsubst * n + 1);
    if (filter == NULL) {
        return NULL;
    }

    q = filter;

    for (p = d->user_filter; *p != '\0'; p++) {
        if (p[0] == '%' && p[1] == 'u') {
            memcpy(q, esc, n);
            q += n;
            p++;
            continue;
        }

        *q++ = *p;
    }

    *q = '\0';

    return filter;
}


static LDAP *
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


static int
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


static void
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


static void
cdir_discard(LDAP *ld)
{
    if (ld != NULL) {
        (void) ldap_unbind_ext(ld, NULL, NULL);
    }
}


static int
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


static void
cdir_set(cdir_auth_result_t *res, cdir_status_e status, const char *fmt, ...)
{
    va_list  args;

    res->status = status;

    va_start(args, fmt);
    (void) vsnprintf(res->reason, sizeof(res->reason), fmt, args);
    va_end(args);
}


static void
cdir_unavailable(cdir_call_t *call, int rc)
{
    cdir_auth_result_t  *res;

    res = call->res;

    switch (rc) {

    case CDIR_RC_REPORTED:
        return;

    case LDAP_TIMEOUT:
    case LDAP_TIMELIMIT_EXCEEDED:
        cdir_set(res, CDIR_UNAVAILABLE, "timeout");
        return;

    case LDAP_SERVER_DOWN:
    case LDAP_CONNECT_ERROR:
        cdir_set(res, CDIR_UNAVAILABLE, "server down");
        return;

    case LDAP_BUSY:
        cdir_set(res, CDIR_UNAVAILABLE, "server busy");
        return;

    case LDAP_UNAVAILABLE:
        cdir_set(res, CDIR_UNAVAILABLE, "server unavailable");
        return;

    case LDAP_NO_MEMORY:
        cdir_set(res, CDIR_UNAVAILABLE, "out of memory");
        return;

    default:
        cdir_set(res, CDIR_UNAVAILABLE, "ldap error %d: %s", rc,
                 ldap_err2string(rc));
        return;
    }
}


/*
 * Blocks SIGPIPE in this thread for the duration of a call and then
 * discards a SIGPIPE that the call itself raised, without touching the
 * process-wide disposition (the caller may be nginx or a test).
 */

static void
cdir_sigpipe_block(cdir_sigpipe_t *sp)
{
    sigset_t  set, pending;

    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);

    sp->was_pending = (sigpending(&pending) == 0
                       && sigismember(&pending, SIGPIPE));

    (void) pthread_sigmask(SIG_BLOCK, &set, &sp->old);
}


static void
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


/*
 * libldap reads ldap.conf and sets up its globals on first use; do that
 * once here rather than racing on it from the first pool threads.
 */

static void
cdir_init_once(void)
{
    int  version;

    (void) ldap_get_option(NULL, LDAP_OPT_PROTOCOL_VERSION, &version);
}


static void
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
