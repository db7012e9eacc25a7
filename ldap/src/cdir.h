
/*
 * Conclave directory client (cdir): LDAP sign-in for the module.
 *
 * A blocking, thread-safe API meant to run in nginx thread-pool threads:
 * every call is bounded by timeouts, so a dead or frozen directory costs a
 * pool thread a bounded time, never a worker.  Plain C, no nginx types.
 */


#ifndef _CDIR_H_INCLUDED_
#define _CDIR_H_INCLUDED_


#include <stddef.h>


#define CDIR_MAX_LOGIN     256
#define CDIR_MAX_DN_SIZE   512      /* a DN with its NUL */
#define CDIR_MAX_PASSWORD  1024


/* role bits: which configured groups the user is in (transitively) */
#define CDIR_ROLE_USER        0x01    /* the sign-in group, or everyone */
#define CDIR_ROLE_ADMIN       0x02
#define CDIR_ROLE_COMPLIANCE  0x04
#define CDIR_ROLE_AUDITOR     0x08    /* compliance, read-only */

#define CDIR_NROLES           4       /* index = bit number */

#define CDIR_GROUPS_MEMBER    0       /* (member=<dn>) search, no overlay */
#define CDIR_GROUPS_MEMBEROF  1       /* the user's memberOf attribute */

#define CDIR_PAGE_SIZE        500

#define CDIR_OUTAGE_REFUSE    0
#define CDIR_OUTAGE_CACHE     1


typedef struct {
    const char  *uri;          /* "ldap://127.0.0.1:10389"; a space-separated
                                  list is failed over in order, sticking
                                  to the server that worked last; ldaps://
                                  is TLS from the first byte */
    const char  *bind_dn;      /* service account; NULL or "" = anonymous */
    const char  *bind_pw;
    const char  *base;         /* user search base */
    const char  *user_filter;  /* "(&(objectClass=inetOrgPerson)(uid=%u))":
                                  %u -> RFC 4515-escaped login */
    const char  *group_dn;     /* sign-in group; NULL or "" = anyone */
    int          timeout_ms;   /* bound on every network op and result wait */
    int          pool_size;    /* max idle connections kept per pool */

    /* TLS: StartTLS (RFC 4513 section 3) on ldap:// URIs */
    int          starttls;
    const char  *ca_file;      /* NULL: the system's trust store */
    int          tls_insecure; /* 1: no certificate check (tests only) */

    /* the attribute holding the login name that becomes the JID's
       localpart ("uid", "sAMAccountName", "mail", "userPrincipalName":
       the value up to its "@"); NULL: the login as typed */
    const char  *name_attr;

    /* groups: CDIR_GROUPS_*; nested groups are followed group_depth
       levels up by (member=<group dn>) searches under group_base,
       visiting at most max_groups groups (loop-safe) */
    int          group_mode;
    int          group_depth;
    int          max_groups;   /* 0: 4096 */
    const char  *group_base;   /* NULL: base */
    const char  *role_dn[CDIR_NROLES];  /* [0] unused: group_dn */

    /* the verified-credentials cache (memory only): used when the
       directory is unreachable and outage == CDIR_OUTAGE_CACHE */
    int          outage;
    int          cache_ttl;    /* seconds; 0: no cache */
    int          cache_size;   /* entries; 0: 10000 */

    /* RFC 2696 simple paged results for searches that may return many
       entries (groups of a user, members of a group, user search), so
       that a server size limit (AD's MaxPageSize) does not cut them
       short; 0: CDIR_PAGE_SIZE, -1: no paging */
    int          page_size;

    /* vCards (XEP-0054): the attribute behind each CDIR_VC_* field;
       NULL: the OpenLDAP inetOrgPerson default (cdir_vcard_default),
       "": not from the directory.  A photo over photo_max bytes
       (0: CDIR_PHOTO_MAX) or of no known image type is left out. */
    const char  *vcard_attr[10];
    size_t       photo_max;
} cdir_config_t;


typedef enum {
    CDIR_OK = 0,
    CDIR_DENIED,               /* a definite "no" for these credentials */
    CDIR_UNAVAILABLE           /* the directory could not give an answer */
} cdir_status_e;


typedef struct {
    cdir_status_e   status;
    char            reason[320];  /* "invalid credentials", "no such user",
                                     "not in group", "ambiguous user",
                                     "account disabled", "timeout",
                                     "server down", "TLS: ...", ...;
                                     never contains the password */
    char            dn[CDIR_MAX_DN_SIZE];  /* the user's DN on success */
    char            name[CDIR_MAX_LOGIN + 1];  /* canonical login name */
    unsigned        roles;        /* CDIR_ROLE_* */
    unsigned        ngroups;      /* groups seen, nested ones included */
    unsigned        groups_truncated:1;  /* max_groups or depth reached */
    unsigned        from_cache:1;
    char            photo_hash[41];  /* XEP-0153: SHA-1 hex of the photo
                                        that the vCard serves; "": none */
    const char     *stage;        /* static: "input", "connect",
                                     "service bind", "search", "groups",
                                     "bind", "done" */
} cdir_auth_result_t;


/* counters since cdir_create(), for the status page */
typedef struct {
    unsigned long   auth_ok;
    unsigned long   auth_denied;
    unsigned long   auth_unavailable;
    unsigned long   revalidations;
    unsigned long   cache_hits;
    unsigned long   cache_misses;
    unsigned long   cache_entries;
    unsigned long   connects;
    unsigned long   connect_errors;
    unsigned long   tls_errors;
    unsigned long   ops;
    unsigned long   op_errors;
    unsigned long   op_timeouts;
    unsigned long   op_usec;      /* total time in LDAP operations */
    unsigned long   op_usec_max;
    unsigned long   busy[2];      /* connections in use: service, bind */
    unsigned long   idle[2];
} cdir_stats_t;


typedef struct cdir_s  cdir_t;


cdir_t *cdir_create(const cdir_config_t *cfg, char *err, size_t errlen);
void cdir_destroy(cdir_t *d);
void cdir_authenticate(cdir_t *d, const char *login, size_t login_len,
    const char *pw, size_t pw_len, cdir_auth_result_t *res);
void cdir_revalidate(cdir_t *d, const char *dn,
    cdir_auth_result_t *res);
void cdir_stats(cdir_t *d, cdir_stats_t *st);

/*
 * The direct members of a group that match the user filter, for shared
 * rosters: cb(ctx, name, display) per member, name as at sign-in (the
 * login name attribute, "uid" if none is configured), display from
 * displayName or cn ("" if neither).  At most max members.  Blocking,
 * bounded by twice the timeout.  0, or -1 with a reason in err.
 */
typedef void (*cdir_member_pt)(void *ctx, const char *name,
    const char *display);

int cdir_group_members(cdir_t *d, const char *group_dn, int max,
    cdir_member_pt cb, void *ctx, char *err, size_t errlen);

/*
 * User search (XEP-0055): every field given (NULL or "" = any) must be a
 * prefix of the attribute: first -> givenName, last -> sn, nick -> the
 * login name attribute, email -> mail, department -> department or
 * departmentNumber; each value RFC 4515-escaped.  At least one field,
 * each at most CDIR_MAX_QUERY bytes.  cb(ctx, result) for up to max
 * users that match the user filter and are not disabled.  Returns the
 * number of results, or -1 with a reason in err ("bad query" for a
 * query that is not acceptable, anything else: the directory).
 */
#define CDIR_MAX_QUERY  64

typedef struct {
    const char  *first;
    const char  *last;
    const char  *nick;
    const char  *email;
    const char  *department;
} cdir_query_t;

typedef struct {
    const char  *name;         /* JID localpart, as at sign-in */
    const char  *first;        /* "" when absent */
    const char  *last;
    const char  *email;
    const char  *display;
    const char  *department;
} cdir_user_t;

typedef void (*cdir_user_pt)(void *ctx, const cdir_user_t *u);

int cdir_search_users(cdir_t *d, const cdir_query_t *q, int max,
    cdir_user_pt cb, void *ctx, char *err, size_t errlen);
size_t cdir_escape_filter(char *dst, size_t dst_size, const char *src,
    size_t len);


/*
 * vCards from the directory (XEP-0054).  The fields, in vcard-temp
 * order; the attribute behind each is configurable.
 */
#define CDIR_VC_FN       0        /* FN */
#define CDIR_VC_GIVEN    1        /* N/GIVEN */
#define CDIR_VC_FAMILY   2        /* N/FAMILY */
#define CDIR_VC_NICK     3        /* NICKNAME */
#define CDIR_VC_TITLE    4        /* TITLE */
#define CDIR_VC_ORG      5        /* ORG/ORGNAME */
#define CDIR_VC_UNIT     6        /* ORG/ORGUNIT: the department */
#define CDIR_VC_EMAIL    7        /* EMAIL/USERID */
#define CDIR_VC_TEL      8        /* TEL/NUMBER */
#define CDIR_VC_PHOTO    9        /* PHOTO/TYPE + BINVAL */
#define CDIR_VC_N        10

#define CDIR_PHOTO_MAX   (256 * 1024)
#define CDIR_VC_VALUE_MAX  1024   /* longer text values are left out */

extern const char  *cdir_vcard_names[CDIR_VC_N];     /* "FN", ... */
extern const char  *cdir_vcard_default[CDIR_VC_N];   /* inetOrgPerson */

typedef struct {
    char            *value[CDIR_VC_PHOTO];   /* malloc'd; NULL: absent */
    unsigned char   *photo;                  /* malloc'd; NULL: none */
    size_t           photo_len;
    const char      *photo_type;             /* static MIME type */
    size_t           photo_dropped;          /* size of one left out */
    const char      *photo_why;              /* static: why left out */
    char             photo_hash[41];
} cdir_vcard_t;

/*
 * The vCard of a user, by DN (a base search) or by JID localpart (the
 * login name attribute, or the user filter if none is configured),
 * among the entries that match the user filter and are not disabled.
 * 1: found, 0: no such user, -1: the directory did not answer (reason
 * in err).  Blocking, bounded by twice the timeout; free with
 * cdir_vcard_free().
 */
int cdir_vcard(cdir_t *d, const char *dn, const char *local,
    cdir_vcard_t *vc, char *err, size_t errlen);
void cdir_vcard_free(cdir_vcard_t *vc);

/* the MIME type of an image by its magic number; NULL: none known */
const char *cdir_photo_type(const unsigned char *p, size_t len);


#endif /* _CDIR_H_INCLUDED_ */
