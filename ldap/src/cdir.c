
/*
 * Conclave directory client: LDAP sign-in by search + bind.
 *
 * The service account searches for the user's entry (DN, login name
 * attribute, memberOf, AD's userAccountControl), the groups the user is
 * in are resolved, nested ones included (cdir_group.c), and then the
 * user's DN binds with the password.
 *
 * Connections come from two pools: "service" connections stay bound as
 * the service account, "bind" connections are rebound by every sign-in
 * (a libldap connection can run only one bind at a time, and a user bind
 * changes its identity).  A pool is a mutex-protected stack of idle LDAP
 * handles; a caller that finds it empty opens a new connection, so the
 * pool size caps idle connections, not concurrency.  ldaps:// and
 * StartTLS connections share one TLS context and verify the server's
 * certificate and name unless told not to.
 *
 * Every wait is bounded: connect and the TLS handshake by
 * LDAP_OPT_NETWORK_TIMEOUT, every result by an explicit ldap_result()
 * timeout, and the whole call by a deadline of twice timeout_ms.  A
 * handle that saw a timeout or a transport error is discarded: libldap
 * would silently reopen a dead default connection unauthenticated on the
 * next request.
 */


#ifndef _GNU_SOURCE
#define _GNU_SOURCE             /* explicit_bzero(), sigtimedwait() */
#endif

#include <ctype.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdir_int.h"


#define CDIR_MAX_TIMEOUT_MS  3600000
#define CDIR_SEARCH_LIMIT    2           /* enough to detect ambiguity */

/* AD userAccountControl: ACCOUNTDISABLE (MS-ADTS 2.2.16) */
#define CDIR_UAC_DISABLED    0x2


static int cdir_create_options(cdir_t *d, const cdir_config_t *cfg,
    char *err, size_t errlen);
static void cdir_call_init(cdir_call_t *call, cdir_t *d,
    cdir_auth_result_t *res);
static int cdir_check_input(const char *login, size_t login_len,
    const char *pw, size_t pw_len, cdir_auth_result_t *res);

static void cdir_user_attrs(cdir_t *d, char **attrs);
static void cdir_user_entry(cdir_call_t *call, LDAP *ld, LDAPMessage *e,
    void *ctx);
static int cdir_user_name(cdir_call_t *call, LDAP *ld, LDAPMessage *e);
static int cdir_find_user(cdir_call_t *call, const char *login, size_t len);
static int cdir_user_found(cdir_call_t *call, cdir_search_t *s, int *flags);
static int cdir_check_groups(cdir_call_t *call);
static int cdir_bind_user(cdir_call_t *call, const char *pw, size_t len);
static void cdir_count(cdir_t *d, cdir_auth_result_t *res);
static void cdir_init_once(void);


/* what the user entry said besides its DN (cdir_user_entry) */
#define CDIR_USER_DISABLED   0x01
#define CDIR_USER_NO_NAME    0x02
#define CDIR_USER_DN_LONG    0x04
#define CDIR_USER_ERROR      0x08


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
    d->page_size = cfg->page_size ? cfg->page_size : CDIR_PAGE_SIZE;

    if (cdir_split_uris(d, cfg->uri, err, errlen) != 0) {
        goto fail;
    }

    d->base = strdup(cfg->base);
    d->user_filter = strdup(cfg->user_filter);
    d->reval_filter = strdup(cfg->user_filter);

    if (d->base == NULL || d->user_filter == NULL || d->reval_filter == NULL)
    {
        goto nomem;
    }

    for (p = d->user_filter; (p = strstr(p, "%u")) != NULL; p += 2) {
        d->nsubst++;
    }

    /* "(uid=%u)" -> "(uid=*)": a presence or substring assertion */
    while ((p = strstr(d->reval_filter, "%u")) != NULL) {
        memmove((char *) p + 1, p + 2, strlen(p + 2) + 1);
        *(char *) p = '*';
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

    if (cdir_create_options(d, cfg, err, errlen) != 0
        || cdir_vcard_options(d, cfg, err, errlen) != 0
        || cdir_tls_init(d, cfg->ca_file, err, errlen) != 0)
    {
        goto fail;
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


/* groups, roles, the login name attribute and the cache */

static int
cdir_create_options(cdir_t *d, const cdir_config_t *cfg, char *err,
    size_t errlen)
{
    int          i;
    const char  *dn;

    if (cfg->group_mode != CDIR_GROUPS_MEMBER
        && cfg->group_mode != CDIR_GROUPS_MEMBEROF)
    {
        cdir_err(err, errlen, "unknown group mode");
        return -1;
    }

    if (cfg->group_depth < 0 || cfg->group_depth > 32
        || cfg->max_groups < 0 || cfg->max_groups > 1000000
        || cfg->cache_ttl < 0 || cfg->cache_size < 0)
    {
        cdir_err(err, errlen, "group depth must be 0..32, and the group "
                 "limit, cache TTL and cache size not negative");
        return -1;
    }

    d->group_mode = cfg->group_mode;
    d->group_depth = cfg->group_depth;
    d->max_groups = cfg->max_groups ? cfg->max_groups : CDIR_MAX_GROUPS;
    d->outage = cfg->outage;
    d->starttls = cfg->starttls;
    d->tls_insecure = cfg->tls_insecure;


    if (cfg->name_attr != NULL && cfg->name_attr[0] != '\0') {
        d->name_attr = strdup(cfg->name_attr);
        if (d->name_attr == NULL) {
            cdir_err(err, errlen, "out of memory");
            return -1;
        }
    }

    for (i = 0; i < CDIR_NROLES; i++) {
        dn = (i == 0) ? cfg->group_dn : cfg->role_dn[i];

        if (dn == NULL || dn[0] == '\0') {
            continue;
        }

        d->role_dn[i] = cdir_normalize_dn(dn);
        if (d->role_dn[i] == NULL) {
            cdir_err(err, errlen, "invalid group DN \"%s\"", dn);
            return -1;
        }
    }

    if (cfg->group_base && cfg->group_base[0]) {
        d->group_base = strdup(cfg->group_base);

    } else {
        d->group_base = cdir_groups_container(d, cfg->base);
    }

    if (d->group_base == NULL) {
        cdir_err(err, errlen, "out of memory");
        return -1;
    }

    if (cfg->cache_ttl > 0) {
        d->cache = cdir_cache_create(cfg->cache_ttl,
                                     cfg->cache_size ? cfg->cache_size
                                                     : 10000);
        if (d->cache == NULL) {
            cdir_err(err, errlen, "out of memory");
            return -1;
        }
    }

    return 0;
}


/* Closes every idle connection; no call may be in progress. */

void
cdir_destroy(cdir_t *d)
{
    int             i;
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

    cdir_tls_free(d);

    if (d->cache != NULL) {
        cdir_cache_destroy(d->cache);
    }

    for (i = 0; i < CDIR_NROLES; i++) {
        free(d->role_dn[i]);
    }

    free(d->uris);
    free(d->uri_buf);
    free(d->bind_dn);
    free(d->base);
    free(d->user_filter);
    free(d->reval_filter);
    free(d->name_attr);
    free(d->group_base);
    cdir_vcard_options_free(d);
    free(d);
}


/* a snapshot of the counters; each is exact, the set is not atomic */

void
cdir_stats(cdir_t *d, cdir_stats_t *st)
{
    size_t          i;
    unsigned long  *src, *dst;

    memset(st, 0, sizeof(cdir_stats_t));

    if (d == NULL) {
        return;
    }

    src = (unsigned long *) &d->stats;
    dst = (unsigned long *) st;

    for (i = 0; i < sizeof(cdir_stats_t) / sizeof(unsigned long); i++) {
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
    }

    (void) pthread_mutex_lock(&d->service.lock);
    st->idle[0] = d->service.nidle;
    (void) pthread_mutex_unlock(&d->service.lock);

    (void) pthread_mutex_lock(&d->bind.lock);
    st->idle[1] = d->bind.nidle;
    (void) pthread_mutex_unlock(&d->bind.lock);

    st->cache_entries = d->cache ? cdir_cache_count(d->cache) : 0;
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
 * Search, group check, then bind as the user.  Blocking; returns within
 * about 2 * timeout_ms.  The password is passed to libldap by reference
 * and never copied here (the cache keeps only a salted hash).
 */

void
cdir_authenticate(cdir_t *d, const char *login, size_t login_len,
    const char *pw, size_t pw_len, cdir_auth_result_t *res)
{
    cdir_call_t     call;
    cdir_sigpipe_t  sp;

    memset(res, 0, sizeof(cdir_auth_result_t));
    res->stage = "input";

    if (cdir_check_input(login, login_len, pw, pw_len, res) != 0) {
        if (d != NULL) {
            cdir_count(d, res);
        }

        return;
    }

    if (d == NULL) {
        cdir_set(res, CDIR_UNAVAILABLE, "not configured");
        return;
    }

    cdir_call_init(&call, d, res);

    /*
     * libldap writes with write(2): an unbind on a connection the server
     * has reset raises SIGPIPE, which must not kill an embedding process
     * that did not ignore it.
     */
    cdir_sigpipe_block(&sp);

    if (cdir_find_user(&call, login, login_len) == 0
        && cdir_check_groups(&call) == 0
        && cdir_bind_user(&call, pw, pw_len) == 0)
    {
        res->status = CDIR_OK;
        res->stage = "done";
    }

    cdir_sigpipe_restore(&sp);
    cdir_groups_free(&call.groups);

    if (d->cache != NULL) {
        switch (res->status) {

        case CDIR_OK:
            cdir_cache_put(d->cache, login, login_len, pw, pw_len, res);
            break;

        case CDIR_DENIED:
            /* a changed password or a disabled account: forget at once */
            cdir_cache_drop(d->cache, login, login_len);
            break;

        default:
            if (d->outage == CDIR_OUTAGE_CACHE
                && cdir_cache_get(d->cache, login, login_len, pw, pw_len,
                                  res)
                   == 0)
            {
                cdir_stat_add(d, cache_hits, 1);

            } else if (d->outage == CDIR_OUTAGE_CACHE) {
                cdir_stat_add(d, cache_misses, 1);
            }
        }
    }

    cdir_count(d, res);
}


/*
 * Is the account behind dn still allowed in?  A base search on the DN
 * with the user filter (its %u as "*", so that clauses excluding
 * disabled accounts still apply), then the group rules.  No bind: the
 * password is not known here.  DENIED means deleted, disabled or out of
 * the sign-in group; UNAVAILABLE means no answer.
 */

void
cdir_revalidate(cdir_t *d, const char *dn, cdir_auth_result_t *res)
{
    int             rc, flags;
    char           *attrs[4];
    cdir_call_t     call;
    cdir_search_t   s;
    cdir_sigpipe_t  sp;

    memset(res, 0, sizeof(cdir_auth_result_t));
    res->stage = "input";

    if (d == NULL || dn == NULL || dn[0] == '\0'
        || strlen(dn) > CDIR_MAX_DN)
    {
        cdir_set(res, CDIR_UNAVAILABLE, "no DN");
        return;
    }

    strcpy(res->dn, dn);
    cdir_stat_add(d, revalidations, 1);
    cdir_call_init(&call, d, res);

    memset(&s, 0, sizeof(cdir_search_t));
    cdir_user_attrs(d, attrs);
    flags = 0;

    s.base = dn;
    s.scope = LDAP_SCOPE_BASE;
    s.filter = d->reval_filter;
    s.attrs = attrs;
    s.sizelimit = CDIR_SEARCH_LIMIT;
    s.first_only = 1;
    s.entry = cdir_user_entry;
    s.ctx = &flags;

    cdir_sigpipe_block(&sp);

    rc = cdir_search(&call, &s);

    if (rc != LDAP_SUCCESS) {
        cdir_unavailable(&call, rc);

    } else if (s.code == LDAP_NO_SUCH_OBJECT) {
        cdir_set(res, CDIR_DENIED, "no such user");

    } else if (cdir_user_found(&call, &s, &flags) == 0
               && cdir_check_groups(&call) == 0)
    {
        res->status = CDIR_OK;
        res->stage = "done";
    }

    cdir_sigpipe_restore(&sp);
    cdir_groups_free(&call.groups);
}


static void
cdir_call_init(cdir_call_t *call, cdir_t *d, cdir_auth_result_t *res)
{
    long long  ns;

    memset(call, 0, sizeof(cdir_call_t));

    call->dir = d;
    call->res = res;

    (void) clock_gettime(CLOCK_MONOTONIC, &call->deadline);
    ns = call->deadline.tv_nsec + 2LL * d->timeout_ms * 1000000;
    call->deadline.tv_sec += ns / 1000000000;
    call->deadline.tv_nsec = ns % 1000000000;
}


static void
cdir_count(cdir_t *d, cdir_auth_result_t *res)
{
    switch (res->status) {

    case CDIR_OK:
        cdir_stat_add(d, auth_ok, 1);
        break;

    case CDIR_DENIED:
        cdir_stat_add(d, auth_denied, 1);
        break;

    default:
        cdir_stat_add(d, auth_unavailable, 1);
    }
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


/* the attributes a user search asks for: NULL-terminated, up to 3 */

static void
cdir_user_attrs(cdir_t *d, char **attrs)
{
    int  n;

    n = 0;

    if (d->name_attr != NULL) {
        attrs[n++] = d->name_attr;
    }

    if (d->group_mode == CDIR_GROUPS_MEMBEROF) {
        attrs[n++] = "memberOf";
    }

    attrs[n++] = "userAccountControl";
    attrs[n] = NULL;
}


static int
cdir_find_user(cdir_call_t *call, const char *login, size_t len)
{
    int                  rc, flags, n;
    char                *attrs[5];
    cdir_search_t        s;
    cdir_auth_result_t  *res;

    res = call->res;

    memset(&s, 0, sizeof(cdir_search_t));
    cdir_user_attrs(call->dir, attrs);
    flags = 0;

    /*
     * XEP-0153: the photo comes with the sign-in search, no extra round
     * trip, so that the avatar hash is known before the first presence.
     */
    if (call->dir->vcard_attr[CDIR_VC_PHOTO] != NULL) {
        for (n = 0; attrs[n] != NULL; n++) { /* void */ }

        attrs[n++] = call->dir->vcard_attr[CDIR_VC_PHOTO];
        attrs[n] = NULL;
    }

    s.base = call->dir->base;
    s.scope = LDAP_SCOPE_SUBTREE;
    s.attrs = attrs;
    s.sizelimit = CDIR_SEARCH_LIMIT;
    s.first_only = 1;
    s.entry = cdir_user_entry;
    s.ctx = &flags;

    s.filter = cdir_make_filter(call->dir, login, len);
    if (s.filter == NULL) {
        cdir_set(res, CDIR_UNAVAILABLE, "out of memory");
        return -1;
    }

    res->stage = "search";

    rc = cdir_search(call, &s);

    free((char *) s.filter);

    if (rc != LDAP_SUCCESS) {
        cdir_unavailable(call, rc);
        return -1;
    }

    if (call->dir->name_attr == NULL) {
        memcpy(res->name, login, len);
        res->name[len] = '\0';
    }

    return cdir_user_found(call, &s, &flags);
}


static int
cdir_user_found(cdir_call_t *call, cdir_search_t *s, int *flags)
{
    cdir_auth_result_t  *res;

    res = call->res;

    switch (s->code) {

    case LDAP_SUCCESS:
    case LDAP_SIZELIMIT_EXCEEDED:

        if (s->entries > 1 || s->code == LDAP_SIZELIMIT_EXCEEDED) {
            cdir_set(res, CDIR_DENIED, "ambiguous user");
            return -1;
        }

        if (s->entries == 0) {
            cdir_set(res, CDIR_DENIED, "no such user");
            return -1;
        }

        if (*flags & CDIR_USER_ERROR) {
            cdir_set(res, CDIR_UNAVAILABLE, "out of memory");
            return -1;
        }

        if (*flags & CDIR_USER_DN_LONG) {
            cdir_set(res, CDIR_DENIED, "DN too long");
            return -1;
        }

        if (*flags & CDIR_USER_NO_NAME) {
            cdir_set(res, CDIR_DENIED, "no usable %s", call->dir->name_attr);
            return -1;
        }

        if (*flags & CDIR_USER_DISABLED) {
            cdir_set(res, CDIR_DENIED, "account disabled");
            return -1;
        }

        return 0;

    default:
        cdir_unavailable(call, s->code);
        return -1;
    }
}


/* one user entry: DN, login name, disabled flag, memberOf */

static void
cdir_user_entry(cdir_call_t *call, LDAP *ld, LDAPMessage *e, void *ctx)
{
    int              *flags, i;
    char             *dn;
    struct berval   **vals;

    flags = ctx;

    dn = ldap_get_dn(ld, e);
    if (dn == NULL) {
        *flags |= CDIR_USER_ERROR;
        return;
    }

    if (strlen(dn) <= CDIR_MAX_DN) {
        strcpy(call->res->dn, dn);

    } else {
        *flags |= CDIR_USER_DN_LONG;
    }

    ldap_memfree(dn);

    if (call->dir->name_attr != NULL && cdir_user_name(call, ld, e) != 0) {
        *flags |= CDIR_USER_NO_NAME;
    }

    cdir_photo_hash(call->dir, ld, e, call->res->photo_hash);

    vals = ldap_get_values_len(ld, e, "userAccountControl");
    if (vals != NULL) {
        if (vals[0] != NULL && vals[0]->bv_len < 16
            && (strtoul(vals[0]->bv_val, NULL, 10) & CDIR_UAC_DISABLED))
        {
            *flags |= CDIR_USER_DISABLED;
        }

        ldap_value_free_len(vals);
    }

    if (call->dir->group_mode != CDIR_GROUPS_MEMBEROF) {
        return;
    }

    vals = ldap_get_values_len(ld, e, "memberOf");
    if (vals == NULL) {
        return;
    }

    for (i = 0; vals[i] != NULL; i++) {
        if (vals[i]->bv_len > CDIR_MAX_DN
            || memchr(vals[i]->bv_val, '\0', vals[i]->bv_len) != NULL)
        {
            continue;
        }

        if (cdir_groups_add(call, vals[i]->bv_val) != 0) {
            break;
        }
    }

    ldap_value_free_len(vals);
}


/*
 * The JID localpart comes from the directory, not from what was typed:
 * a user who signs in with "Alice" or "alice.anderson@example.com" is
 * the same "alice".  For mail and userPrincipalName the value up to the
 * "@" is used.  The module still checks it is a valid localpart.
 */

static int
cdir_user_name(cdir_call_t *call, LDAP *ld, LDAPMessage *e)
{
    int              rc;
    size_t           len;
    const char      *at;
    struct berval  **vals;

    vals = ldap_get_values_len(ld, e, call->dir->name_attr);
    if (vals == NULL) {
        return -1;
    }

    rc = -1;

    if (vals[0] != NULL) {
        at = memchr(vals[0]->bv_val, '@', vals[0]->bv_len);
        len = at ? (size_t) (at - vals[0]->bv_val) : vals[0]->bv_len;

        if (len > 0 && len <= CDIR_MAX_LOGIN
            && memchr(vals[0]->bv_val, '\0', len) == NULL)
        {
            memcpy(call->res->name, vals[0]->bv_val, len);
            call->res->name[len] = '\0';
            rc = 0;
        }
    }

    ldap_value_free_len(vals);

    return rc;
}


/* the user's groups (nested ones too), then the roles they give */

static int
cdir_check_groups(cdir_call_t *call)
{
    cdir_t              *d;
    cdir_auth_result_t  *res;

    d = call->dir;
    res = call->res;

    res->stage = "groups";

    if (cdir_groups_resolve(call) != 0) {
        return -1;
    }

    if (d->role_dn[0] == NULL) {
        res->roles |= CDIR_ROLE_USER;
    }

    if (!(res->roles & CDIR_ROLE_USER)) {
        cdir_set(res, CDIR_DENIED, "not in group");
        return -1;
    }

    return 0;
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


/* the user filter with %u as the RFC 4515-escaped login; malloc'd */

char *
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


void
cdir_set(cdir_auth_result_t *res, cdir_status_e status, const char *fmt, ...)
{
    va_list  args;

    res->status = status;

    va_start(args, fmt);
    (void) vsnprintf(res->reason, sizeof(res->reason), fmt, args);
    va_end(args);
}


void
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
 * RFC 4514 form with the spaces and escapes made canonical, so that
 * "CN=Admins, OU=Groups" and "cn=Admins,ou=Groups" compare equal
 * without case (cdir_gset_t compares case-insensitively).  NULL if dn
 * is not a DN.  The caller frees the result.
 */

char *
cdir_normalize_dn(const char *dn)
{
    char  *out, *copy;

    out = NULL;

    if (ldap_dn_normalize(dn, LDAP_DN_FORMAT_LDAP, &out,
                          LDAP_DN_FORMAT_LDAPV3)
        != LDAP_SUCCESS || out == NULL)
    {
        return NULL;
    }

    /* ours to free() rather than ldap_memfree() */
    copy = strdup(out);
    ldap_memfree(out);

    return copy;
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


