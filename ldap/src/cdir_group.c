
/*
 * Conclave directory client: the groups a user is in, and the roles.
 *
 * Direct groups come from the user's memberOf attribute (AD, or
 * OpenLDAP's memberof overlay) or from a (member=<user dn>) search,
 * which needs no overlay.  Nested groups (AD's group-in-group) are
 * followed upwards: each level is one search for the groups whose
 * member is any group of the level below, several DNs ORed in one
 * filter.  The set of groups seen makes a loop (A in B, B in A) end:
 * a group is expanded once.  The depth and the number of groups are
 * bounded, and the search stops early once every configured group has
 * been found.
 *
 * Every DN that goes into a filter is RFC 4515-escaped: a DN may hold
 * "(", ")", "*" or "\" (RFC 4514 escapes), and a group named by an
 * attacker must not widen the search.
 */


#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cdir_int.h"


#define CDIR_OR_CHUNK  32       /* DNs ORed in one nested-group search */


static size_t cdir_gset_hash(const char *dn);
static int cdir_gset_find(cdir_gset_t *set, const char *dn);
static int cdir_gset_grow(cdir_gset_t *set);
static int cdir_groups_direct(cdir_call_t *call);
static int cdir_groups_level(cdir_call_t *call, size_t lo, size_t hi);
static char *cdir_groups_filter(cdir_gset_t *set, size_t lo, size_t hi);
static void cdir_groups_entry(cdir_call_t *call, LDAP *ld, LDAPMessage *e,
    void *ctx);
static unsigned cdir_groups_roles(cdir_call_t *call);
static unsigned cdir_groups_wanted(cdir_t *d);


/*
 * Adds a group DN (normalized here) unless already known.  Returns -1
 * once the group limit is reached (the result is then marked truncated)
 * or on memory shortage; a DN that does not parse is skipped.
 */

int
cdir_groups_add(cdir_call_t *call, const char *dn)
{
    char         *norm;
    cdir_gset_t  *set;

    set = &call->groups;

    if (set->n >= (size_t) call->dir->max_groups) {
        call->res->groups_truncated = 1;
        return -1;
    }

    norm = cdir_normalize_dn(dn);
    if (norm == NULL) {
        return 0;
    }

    if (cdir_gset_find(set, norm) >= 0) {
        free(norm);
        return 0;
    }

    if (set->n == set->cap && cdir_gset_grow(set) != 0) {
        free(norm);
        return -1;
    }

    set->dn[set->n++] = norm;
    (void) cdir_gset_find(set, norm);     /* inserts into the index */

    return 0;
}


/*
 * Fills res->roles and res->ngroups.  Returns -1 with res set when the
 * directory did not answer; running into the limits is not an error
 * (the groups found so far decide).
 */

int
cdir_groups_resolve(cdir_call_t *call)
{
    int                  level;
    size_t               lo, hi;
    cdir_t              *d;
    unsigned             wanted;
    cdir_auth_result_t  *res;

    d = call->dir;
    res = call->res;
    wanted = cdir_groups_wanted(d);

    if (wanted == 0) {
        return 0;
    }

    if (d->group_mode == CDIR_GROUPS_MEMBER && cdir_groups_direct(call) != 0)
    {
        return -1;
    }

    lo = 0;

    for (level = 0; ; level++) {
        hi = call->groups.n;
        res->roles = cdir_groups_roles(call);

        if (lo == hi || res->groups_truncated) {
            break;
        }

        if (level == d->group_depth) {
            /* groups whose parents were not looked at */
            if (d->group_depth > 0) {
                res->groups_truncated = 1;
            }

            break;
        }

        if ((res->roles & wanted) == wanted) {
            break;
        }

        if (cdir_groups_level(call, lo, hi) != 0) {
            return -1;
        }

        lo = hi;
    }

    res->ngroups = (unsigned) call->groups.n;

    return 0;
}


/*
 * The default search base for groups: the deepest entry that holds every
 * configured group (for "cn=a,ou=groups,dc=x" and "cn=b,ou=groups,dc=x"
 * it is "ou=groups,dc=x"), since the user search base often names the
 * people's branch only; base if no group is configured.  Normalized DNs
 * escape a comma inside a value as "\,", so a bare comma separates RDNs.
 */

char *
cdir_groups_container(cdir_t *d, const char *base)
{
    int          i;
    size_t       len, best;
    const char  *dn, *p, *first;

    first = NULL;
    best = 0;

    for (i = 0; i < CDIR_NROLES; i++) {
        dn = d->role_dn[i];

        if (dn == NULL) {
            continue;
        }

        /* the container: after the first unescaped comma */
        for (p = dn; *p && !(*p == ',' && (p == dn || p[-1] != '\\')); p++)
        { /* void */ }

        if (*p == '\0') {
            return strdup(base);
        }

        p++;
        len = strlen(p);

        if (first == NULL) {
            first = p;
            best = len;
            continue;
        }

        /* the longest common suffix that starts at an RDN boundary */
        while (best > 0
               && (len < best
                   || strcasecmp(first + strlen(first) - best,
                                 p + len - best) != 0
                   || (best < strlen(first)
                       && first[strlen(first) - best - 1] != ',')
                   || (best < len && p[len - best - 1] != ',')))
        {
            best--;
        }
    }

    if (first == NULL || best == 0) {
        return strdup(base);
    }

    return strdup(first + strlen(first) - best);
}


void
cdir_groups_free(cdir_gset_t *set)
{
    size_t  i;

    for (i = 0; i < set->n; i++) {
        free(set->dn[i]);
    }

    free(set->dn);
    free(set->index);
    memset(set, 0, sizeof(cdir_gset_t));
}


/* the configured groups found; a role with no group is never given */

static unsigned
cdir_groups_roles(cdir_call_t *call)
{
    int        i;
    unsigned   roles;
    cdir_t    *d;

    d = call->dir;
    roles = 0;

    for (i = 0; i < CDIR_NROLES; i++) {
        if (d->role_dn[i] != NULL
            && cdir_gset_find(&call->groups, d->role_dn[i]) >= 0)
        {
            roles |= 1u << i;
        }
    }

    return roles;
}


static unsigned
cdir_groups_wanted(cdir_t *d)
{
    int       i;
    unsigned  wanted;

    wanted = 0;

    for (i = 0; i < CDIR_NROLES; i++) {
        if (d->role_dn[i] != NULL) {
            wanted |= 1u << i;
        }
    }

    return wanted;
}


/* the groups that name the user as a member */

static int
cdir_groups_direct(cdir_call_t *call)
{
    int            rc;
    char          *filter, esc[3 * (CDIR_MAX_DN + 1) + 1];
    char          *attrs[2];
    size_t         n;
    cdir_search_t  s;

    n = cdir_escape_filter(esc, sizeof(esc), call->res->dn,
                           strlen(call->res->dn));
    if (n == (size_t) -1) {
        cdir_set(call->res, CDIR_DENIED, "DN too long");
        return -1;
    }

    filter = malloc(n + sizeof("(member=)"));
    if (filter == NULL) {
        cdir_set(call->res, CDIR_UNAVAILABLE, "out of memory");
        return -1;
    }

    strcpy(filter, "(member=");
    memcpy(filter + 8, esc, n);
    strcpy(filter + 8 + n, ")");

    /* "1.1": no attributes, only DNs (RFC 4511 4.5.1.8) */
    attrs[0] = LDAP_NO_ATTRS;
    attrs[1] = NULL;

    memset(&s, 0, sizeof(cdir_search_t));
    s.base = call->dir->group_base;
    s.scope = LDAP_SCOPE_SUBTREE;
    s.filter = filter;
    s.attrs = attrs;
    s.sizelimit = call->dir->max_groups + 1;
    s.entry = cdir_groups_entry;
    s.paged = 1;

    rc = cdir_search(call, &s);

    free(filter);

    if (rc != LDAP_SUCCESS) {
        cdir_unavailable(call, rc);
        return -1;
    }

    if (s.code == LDAP_SIZELIMIT_EXCEEDED
        || s.code == LDAP_ADMINLIMIT_EXCEEDED)
    {
        call->res->groups_truncated = 1;

    } else if (s.code != LDAP_SUCCESS && s.code != LDAP_NO_SUCH_OBJECT) {
        cdir_unavailable(call, s.code);
        return -1;
    }

    return 0;
}


/* the parents of groups [lo, hi), CDIR_OR_CHUNK DNs per search */

static int
cdir_groups_level(cdir_call_t *call, size_t lo, size_t hi)
{
    int            rc;
    char          *attrs[2];
    size_t         end;
    cdir_search_t  s;

    attrs[0] = LDAP_NO_ATTRS;
    attrs[1] = NULL;

    for ( /* void */ ; lo < hi; lo = end) {
        end = (hi - lo > CDIR_OR_CHUNK) ? lo + CDIR_OR_CHUNK : hi;

        memset(&s, 0, sizeof(cdir_search_t));
        s.base = call->dir->group_base;
        s.scope = LDAP_SCOPE_SUBTREE;
        s.attrs = attrs;
        s.sizelimit = call->dir->max_groups + 1;
        s.entry = cdir_groups_entry;
        s.paged = 1;

        s.filter = cdir_groups_filter(&call->groups, lo, end);
        if (s.filter == NULL) {
            cdir_set(call->res, CDIR_UNAVAILABLE, "out of memory");
            return -1;
        }

        rc = cdir_search(call, &s);

        free((char *) s.filter);

        if (rc != LDAP_SUCCESS) {
            cdir_unavailable(call, rc);
            return -1;
        }

        if (s.code == LDAP_SIZELIMIT_EXCEEDED
            || s.code == LDAP_ADMINLIMIT_EXCEEDED)
        {
            call->res->groups_truncated = 1;

        } else if (s.code != LDAP_SUCCESS && s.code != LDAP_NO_SUCH_OBJECT) {
            cdir_unavailable(call, s.code);
            return -1;
        }

        if (call->res->groups_truncated) {
            break;
        }
    }

    return 0;
}


/* "(|(member=<dn1>)(member=<dn2>)...)" with each DN escaped */

static char *
cdir_groups_filter(cdir_gset_t *set, size_t lo, size_t hi)
{
    char    *filter, *p;
    size_t   i, len, n;

    len = sizeof("(|)");

    for (i = lo; i < hi; i++) {
        len += sizeof("(member=)") + 3 * strlen(set->dn[i]);
    }

    filter = malloc(len);
    if (filter == NULL) {
        return NULL;
    }

    p = filter;
    p = stpcpy(p, "(|");

    for (i = lo; i < hi; i++) {
        p = stpcpy(p, "(member=");

        n = cdir_escape_filter(p, filter + len - p, set->dn[i],
                               strlen(set->dn[i]));
        if (n == (size_t) -1) {
            free(filter);
            return NULL;
        }

        p += n;
        p = stpcpy(p, ")");
    }

    (void) stpcpy(p, ")");

    return filter;
}


static void
cdir_groups_entry(cdir_call_t *call, LDAP *ld, LDAPMessage *e, void *ctx)
{
    char  *dn;

    dn = ldap_get_dn(ld, e);
    if (dn == NULL) {
        return;
    }

    if (strlen(dn) <= CDIR_MAX_DN) {
        (void) cdir_groups_add(call, dn);
    }

    ldap_memfree(dn);
}


/* FNV-1a over the lower-cased DN: RFC 4514 DNs compare without case */

static size_t
cdir_gset_hash(const char *dn)
{
    size_t  h;

    h = 2166136261u;

    while (*dn) {
        h ^= (unsigned char) tolower((unsigned char) *dn++);
        h *= 16777619u;
    }

    return h;
}


/*
 * The position of dn in the set, or -1.  A DN added last by
 * cdir_groups_add() and not yet indexed is indexed here.
 */

static int
cdir_gset_find(cdir_gset_t *set, const char *dn)
{
    size_t    i, mask;
    unsigned  pos;

    if (set->index_size == 0) {
        return -1;
    }

    mask = set->index_size - 1;

    for (i = cdir_gset_hash(dn) & mask; ; i = (i + 1) & mask) {
        pos = set->index[i];

        if (pos == 0) {
            break;
        }

        if (strcasecmp(set->dn[pos - 1], dn) == 0) {
            return (int) (pos - 1);
        }
    }

    if (set->n > 0 && set->dn[set->n - 1] == dn) {
        set->index[i] = (unsigned) set->n;
    }

    return -1;
}


static int
cdir_gset_grow(cdir_gset_t *set)
{
    char      **dn;
    size_t      cap, i, j, mask;
    unsigned   *index;

    cap = set->cap ? set->cap * 2 : 16;

    dn = realloc(set->dn, cap * sizeof(char *));
    if (dn == NULL) {
        return -1;
    }

    set->dn = dn;

    index = calloc(cap * 2, sizeof(unsigned));
    if (index == NULL) {
        return -1;
    }

    mask = cap * 2 - 1;

    for (i = 0; i < set->n; i++) {
        for (j = cdir_gset_hash(dn[i]) & mask; index[j];
             j = (j + 1) & mask)
        { /* void */ }

        index[j] = (unsigned) (i + 1);
    }

    free(set->index);
    set->index = index;
    set->index_size = cap * 2;
    set->cap = cap;

    return 0;
}


/* -- shared rosters -------------------------------------------------------- */

typedef struct {
    cdir_member_pt        cb;
    void                 *ctx;
    const char           *name_attr;
    int                   left;
    char                **dns;           /* member mode: member values */
    int                   ndns;
} cdir_members_t;


static void cdir_members_entry(cdir_call_t *call, LDAP *ld, LDAPMessage *e,
    void *ctx);
static void cdir_members_dns(cdir_call_t *call, LDAP *ld, LDAPMessage *e,
    void *ctx);
static int cdir_members_search(cdir_call_t *call, cdir_members_t *m,
    const char *base, int scope, const char *filter);


int
cdir_group_members(cdir_t *d, const char *group_dn, int max,
    cdir_member_pt cb, void *ctx, char *err, size_t errlen)
{
    int                  rc, i;
    char                *filter, esc[3 * (CDIR_MAX_DN + 1) + 1];
    size_t               n;
    cdir_call_t          call;
    cdir_members_t       m;
    cdir_sigpipe_t       sp;
    cdir_auth_result_t   res;

    memset(&res, 0, sizeof(cdir_auth_result_t));
    memset(&call, 0, sizeof(cdir_call_t));
    memset(&m, 0, sizeof(cdir_members_t));

    call.dir = d;
    call.res = &res;
    res.stage = "members";

    {
        long long  ns;

        (void) clock_gettime(CLOCK_MONOTONIC, &call.deadline);
        ns = call.deadline.tv_nsec + 2LL * d->timeout_ms * 1000000;
        call.deadline.tv_sec += ns / 1000000000;
        call.deadline.tv_nsec = ns % 1000000000;
    }

    m.cb = cb;
    m.ctx = ctx;
    m.name_attr = d->name_attr ? d->name_attr : "uid";
    m.left = max;

    n = cdir_escape_filter(esc, sizeof(esc), group_dn, strlen(group_dn));
    if (n == (size_t) -1) {
        cdir_err(err, errlen, "group DN too long");
        return -1;
    }

    cdir_sigpipe_block(&sp);

    if (d->group_mode == CDIR_GROUPS_MEMBEROF) {
        /* one search: the users whose memberOf names the group */
        n += strlen(d->reval_filter) + sizeof("(&(memberOf=))");
        filter = malloc(n);
        rc = -1;

        if (filter != NULL) {
            (void) snprintf(filter, n, "(&%s(memberOf=%s))",
                            d->reval_filter, esc);
            rc = cdir_members_search(&call, &m, d->base, LDAP_SCOPE_SUBTREE,
                                     filter);
            free(filter);
        }

    } else {
        /* the group's member values, then each member's entry */
        rc = cdir_members_search(&call, &m, group_dn, LDAP_SCOPE_BASE,
                                 NULL);

        for (i = 0; rc == 0 && i < m.ndns && m.left > 0; i++) {
            rc = cdir_members_search(&call, &m, m.dns[i], LDAP_SCOPE_BASE,
                                     d->reval_filter);
        }
    }

    cdir_sigpipe_restore(&sp);

    for (i = 0; i < m.ndns; i++) {
        free(m.dns[i]);
    }

    free(m.dns);

    if (rc != 0) {
        cdir_err(err, errlen, "%s", res.reason[0] ? res.reason
                                                   : "out of memory");
    }

    return rc;
}


/* filter NULL: read the group's member values into m->dns */

static int
cdir_members_search(cdir_call_t *call, cdir_members_t *m, const char *base,
    int scope, const char *filter)
{
    int            rc;
    char          *attrs[5];
    cdir_search_t  s;

    memset(&s, 0, sizeof(cdir_search_t));

    s.base = base;
    s.scope = scope;
    s.attrs = attrs;
    s.ctx = m;

    if (filter == NULL) {
        attrs[0] = "member";
        attrs[1] = NULL;
        s.filter = "(objectClass=*)";
        s.entry = cdir_members_dns;

    } else {
        attrs[0] = (char *) m->name_attr;
        attrs[1] = "displayName";
        attrs[2] = "cn";
        attrs[3] = "userAccountControl";
        attrs[4] = NULL;
        s.filter = filter;
        s.sizelimit = m->left + 1;
        s.entry = cdir_members_entry;
        s.paged = (scope == LDAP_SCOPE_SUBTREE);  /* memberOf mode */
    }

    rc = cdir_search(call, &s);

    if (rc != LDAP_SUCCESS) {
        cdir_unavailable(call, rc);
        return -1;
    }

    switch (s.code) {

    case LDAP_SUCCESS:
    case LDAP_NO_SUCH_OBJECT:           /* a member that no longer exists */
    case LDAP_SIZELIMIT_EXCEEDED:
        return 0;

    default:
        cdir_unavailable(call, s.code);
        return -1;
    }
}


static void
cdir_members_dns(cdir_call_t *call, LDAP *ld, LDAPMessage *e, void *ctx)
{
    int               i, n;
    cdir_members_t   *m;
    struct berval   **vals;

    m = ctx;

    vals = ldap_get_values_len(ld, e, "member");
    if (vals == NULL) {
        return;
    }

    n = ldap_count_values_len(vals);
    if (n > m->left) {
        n = m->left;
    }

    m->dns = calloc(n + 1, sizeof(char *));

    for (i = 0; m->dns != NULL && i < n; i++) {
        if (vals[i]->bv_len > CDIR_MAX_DN) {
            continue;
        }

        m->dns[m->ndns] = strndup(vals[i]->bv_val, vals[i]->bv_len);
        if (m->dns[m->ndns] != NULL) {
            m->ndns++;
        }
    }

    ldap_value_free_len(vals);
}


static void
cdir_members_entry(cdir_call_t *call, LDAP *ld, LDAPMessage *e, void *ctx)
{
    char              name[CDIR_MAX_LOGIN + 1], display[256];
    size_t            len;
    const char       *at;
    cdir_members_t   *m;
    struct berval   **vals;

    m = ctx;

    if (m->left <= 0) {
        return;
    }

    /* a disabled AD account is nobody's contact (MS-ADTS 2.2.16) */
    vals = ldap_get_values_len(ld, e, "userAccountControl");
    if (vals != NULL) {
        len = (vals[0] != NULL && vals[0]->bv_len < 16
               && (strtoul(vals[0]->bv_val, NULL, 10) & 0x2));
        ldap_value_free_len(vals);

        if (len) {
            return;
        }
    }

    vals = ldap_get_values_len(ld, e, m->name_attr);
    if (vals == NULL) {
        return;
    }

    len = 0;

    if (vals[0] != NULL) {
        at = memchr(vals[0]->bv_val, '@', vals[0]->bv_len);
        len = at ? (size_t) (at - vals[0]->bv_val) : vals[0]->bv_len;

        if (len > CDIR_MAX_LOGIN
            || memchr(vals[0]->bv_val, '\0', len) != NULL)
        {
            len = 0;
        }

        memcpy(name, vals[0]->bv_val, len);
    }

    name[len] = '\0';
    ldap_value_free_len(vals);

    if (len == 0) {
        return;
    }

    display[0] = '\0';

    vals = ldap_get_values_len(ld, e, "displayName");
    if (vals == NULL) {
        vals = ldap_get_values_len(ld, e, "cn");
    }

    if (vals != NULL) {
        if (vals[0] != NULL && memchr(vals[0]->bv_val, '\0',
                                      vals[0]->bv_len) == NULL)
        {
            len = vals[0]->bv_len < sizeof(display) - 1
                  ? vals[0]->bv_len : sizeof(display) - 1;
            memcpy(display, vals[0]->bv_val, len);
            display[len] = '\0';
        }

        ldap_value_free_len(vals);
    }

    m->left--;
    m->cb(m->ctx, name, display);
}


/* -- user search (XEP-0055) ------------------------------------------------ */

typedef struct {
    cdir_user_pt          cb;
    void                 *ctx;
    const char           *name_attr;
    int                   left;
    int                   found;
} cdir_found_t;


static int
cdir_query_add(char *p, size_t size, const char *attr, const char *value)
{
    size_t  n, len;
    char    esc[3 * CDIR_MAX_QUERY + 1];

    if (value == NULL || value[0] == '\0') {
        return 0;
    }

    n = cdir_escape_filter(esc, sizeof(esc), value, strlen(value));
    if (n == (size_t) -1) {
        return -1;
    }

    len = strlen(p);

    /* "(attr=value*)": a prefix, the user's own text never a wildcard */
    if ((size_t) snprintf(p + len, size - len, "(%s=%s*)", attr, esc)
        >= size - len)
    {
        return -1;
    }

    return 1;
}


static void
cdir_found_value(LDAP *ld, LDAPMessage *e, const char *attr, char *out,
    size_t size)
{
    size_t           len;
    struct berval  **vals;

    out[0] = '\0';

    vals = ldap_get_values_len(ld, e, attr);
    if (vals == NULL) {
        return;
    }

    if (vals[0] != NULL
        && memchr(vals[0]->bv_val, '\0', vals[0]->bv_len) == NULL)
    {
        len = vals[0]->bv_len < size - 1 ? vals[0]->bv_len : size - 1;
        memcpy(out, vals[0]->bv_val, len);
        out[len] = '\0';
    }

    ldap_value_free_len(vals);
}


static void
cdir_found_entry(cdir_call_t *call, LDAP *ld, LDAPMessage *e, void *ctx)
{
    char           *at, name[CDIR_MAX_LOGIN + 2], first[128], last[128],
                    email[256], display[256], dept[128], uac[16];
    cdir_user_t     u;
    cdir_found_t   *f;

    f = ctx;

    if (f->left <= 0) {
        return;
    }

    cdir_found_value(ld, e, "userAccountControl", uac, sizeof(uac));
    if (strtoul(uac, NULL, 10) & 0x2) {
        return;
    }

    cdir_found_value(ld, e, f->name_attr, name, sizeof(name));

    at = strchr(name, '@');
    if (at != NULL) {
        *at = '\0';
    }

    /* truncated (too long) or empty: no JID to offer */
    if (name[0] == '\0' || strlen(name) > CDIR_MAX_LOGIN) {
        return;
    }

    cdir_found_value(ld, e, "givenName", first, sizeof(first));
    cdir_found_value(ld, e, "sn", last, sizeof(last));
    cdir_found_value(ld, e, "mail", email, sizeof(email));
    cdir_found_value(ld, e, "displayName", display, sizeof(display));
    cdir_found_value(ld, e, "department", dept, sizeof(dept));

    if (dept[0] == '\0') {
        cdir_found_value(ld, e, "departmentNumber", dept, sizeof(dept));
    }

    u.name = name;
    u.first = first;
    u.last = last;
    u.email = email;
    u.display = display;
    u.department = dept;

    f->left--;
    f->found++;
    f->cb(f->ctx, &u);
}


int
cdir_search_users(cdir_t *d, const cdir_query_t *q, int max,
    cdir_user_pt cb, void *ctx, char *err, size_t errlen)
{
    int                  rc, n, k;
    char                *filter;
    char                *attrs[9];
    size_t               size;
    long long            ns;
    cdir_call_t          call;
    cdir_found_t         f;
    cdir_search_t        s;
    cdir_sigpipe_t       sp;
    cdir_auth_result_t   res;
    const char          *name_attr;

    name_attr = d->name_attr ? d->name_attr : "uid";

    size = strlen(d->reval_filter) + 5 * (3 * CDIR_MAX_QUERY + 64) + 64;

    filter = malloc(size);
    if (filter == NULL) {
        cdir_err(err, errlen, "out of memory");
        return -1;
    }

    strcpy(filter, "(&");
    strcat(filter, d->reval_filter);

    n = 0;

#define cdir_query_field(attr, v)                                            \
    k = cdir_query_add(filter, size, attr, v);                               \
    if (k < 0) { goto bad; }                                                 \
    n += k

    cdir_query_field("givenName", q->first);
    cdir_query_field("sn", q->last);
    cdir_query_field(name_attr, q->nick);
    cdir_query_field("mail", q->email);

    if (q->department && q->department[0]) {
        strcat(filter, "(|");
        cdir_query_field("department", q->department);
        cdir_query_field("departmentNumber", q->department);
        strcat(filter, ")");
    }

#undef cdir_query_field

    if (n == 0) {
        goto bad;
    }

    strcat(filter, ")");

    memset(&res, 0, sizeof(cdir_auth_result_t));
    memset(&call, 0, sizeof(cdir_call_t));
    memset(&f, 0, sizeof(cdir_found_t));
    memset(&s, 0, sizeof(cdir_search_t));

    call.dir = d;
    call.res = &res;
    res.stage = "user search";

    (void) clock_gettime(CLOCK_MONOTONIC, &call.deadline);
    ns = call.deadline.tv_nsec + 2LL * d->timeout_ms * 1000000;
    call.deadline.tv_sec += ns / 1000000000;
    call.deadline.tv_nsec = ns % 1000000000;

    f.cb = cb;
    f.ctx = ctx;
    f.name_attr = name_attr;
    f.left = max;

    attrs[0] = (char *) name_attr;
    attrs[1] = "givenName";
    attrs[2] = "sn";
    attrs[3] = "mail";
    attrs[4] = "displayName";
    attrs[5] = "department";
    attrs[6] = "departmentNumber";
    attrs[7] = "userAccountControl";
    attrs[8] = NULL;

    s.base = d->base;
    s.scope = LDAP_SCOPE_SUBTREE;
    s.filter = filter;
    s.attrs = attrs;
    s.sizelimit = max + 1;
    s.entry = cdir_found_entry;
    s.ctx = &f;
    s.paged = 1;

    cdir_sigpipe_block(&sp);
    rc = cdir_search(&call, &s);
    cdir_sigpipe_restore(&sp);

    free(filter);

    if (rc != LDAP_SUCCESS) {
        cdir_unavailable(&call, rc);
        cdir_err(err, errlen, "%s", res.reason);
        return -1;
    }

    if (s.code != LDAP_SUCCESS && s.code != LDAP_SIZELIMIT_EXCEEDED
        && s.code != LDAP_NO_SUCH_OBJECT)
    {
        cdir_unavailable(&call, s.code);
        cdir_err(err, errlen, "%s", res.reason);
        return -1;
    }

    return f.found;

bad:

    free(filter);
    cdir_err(err, errlen, "bad query");
    return -1;
}
