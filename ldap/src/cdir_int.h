
/*
 * Conclave directory client: what cdir.c, cdir_group.c and cdir_cache.c
 * share.  Not installed; callers use cdir.h.
 */


#ifndef _CDIR_INT_H_INCLUDED_
#define _CDIR_INT_H_INCLUDED_


#include <sys/time.h>           /* before <ldap.h>: struct timeval */
#include <ldap.h>

#include <pthread.h>
#include <signal.h>
#include <time.h>

#include "cdir.h"


#define CDIR_MAX_DN          (CDIR_MAX_DN_SIZE - 1)
#define CDIR_MAX_GROUPS      4096

/* not LDAP codes: cdir_open() has filled in the reason itself */
#define CDIR_RC_REPORTED     0x7ffe


typedef struct {
    pthread_mutex_t       lock;
    LDAP                **idle;
    int                   nidle;
    int                   max;
    unsigned              service:1;     /* bind as the service account */
    unsigned              inited:1;
} cdir_pool_t;


typedef struct cdir_cache_s  cdir_cache_t;


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
    char                 *reval_filter;  /* user_filter, %u -> "*" */
    size_t                nsubst;        /* occurrences of %u */
    int                   timeout_ms;
    int                   page_size;     /* RFC 2696 */

    int                   starttls;
    int                   tls_insecure;
    void                 *tls_ctx;       /* shared by every connection */
    char                 *ca_file;

    char                 *name_attr;
    int                   group_mode;
    int                   group_depth;
    int                   max_groups;
    char                 *group_base;
    char                 *role_dn[CDIR_NROLES];  /* normalized */

    int                   outage;
    cdir_cache_t         *cache;

    cdir_pool_t           service;
    cdir_pool_t           bind;

    char                 *vcard_attr[CDIR_VC_N];  /* NULL: unmapped */
    size_t                photo_max;

    cdir_stats_t          stats;         /* updated with __atomic */
};


/* a set of group DNs in the order found, for nested expansion */
typedef struct {
    char                **dn;            /* normalized, malloc'd */
    size_t                n;
    size_t                cap;
    unsigned             *index;         /* open addressing: position+1 */
    size_t                index_size;    /* power of two, >= 2 * cap */
} cdir_gset_t;


typedef struct {
    cdir_t               *dir;
    cdir_auth_result_t   *res;
    struct timespec       deadline;
    cdir_gset_t           groups;
} cdir_call_t;


typedef void (*cdir_entry_pt)(cdir_call_t *call, LDAP *ld, LDAPMessage *e,
    void *ctx);


typedef struct {
    const char           *base;
    int                   scope;
    const char           *filter;
    char                **attrs;
    int                   sizelimit;
    int                   first_only;    /* entry() for the first only */
    int                   paged;         /* RFC 2696 pages; sizelimit is
                                            then enforced here */
    cdir_entry_pt         entry;
    void                 *ctx;
    int                   code;
    int                   entries;
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


#define cdir_stat_add(d, field, n)                                           \
    (void) __atomic_add_fetch(&(d)->stats.field, (n), __ATOMIC_RELAXED)


/* cdir_conn.c */
int cdir_tls_init(cdir_t *d, const char *ca_file, char *err, size_t errlen);
void cdir_tls_free(cdir_t *d);
int cdir_split_uris(cdir_t *d, const char *uri, char *err, size_t errlen);
int cdir_pool_init(cdir_pool_t *p, int max, int service);
void cdir_pool_free(cdir_pool_t *p);
LDAP *cdir_pool_get(cdir_pool_t *p);
void cdir_discard(LDAP *ld);
int cdir_run(cdir_call_t *call, cdir_pool_t *pool, const char *stage,
    cdir_op_pt op, void *data);
int cdir_search(cdir_call_t *call, cdir_search_t *s);
int cdir_bind_op(cdir_call_t *call, LDAP *ld, void *data);
void cdir_sigpipe_block(cdir_sigpipe_t *sp);
void cdir_sigpipe_restore(cdir_sigpipe_t *sp);
void cdir_err(char *err, size_t errlen, const char *fmt, ...);

/* cdir.c */
void cdir_set(cdir_auth_result_t *res, cdir_status_e status,
    const char *fmt, ...);
void cdir_unavailable(cdir_call_t *call, int rc);
char *cdir_normalize_dn(const char *dn);
char *cdir_make_filter(cdir_t *d, const char *login, size_t len);

/* cdir_group.c */
char *cdir_groups_container(cdir_t *d, const char *base);
int cdir_groups_add(cdir_call_t *call, const char *dn);
int cdir_groups_resolve(cdir_call_t *call);
void cdir_groups_free(cdir_gset_t *set);

/* cdir_vcard.c */
int cdir_vcard_options(cdir_t *d, const cdir_config_t *cfg, char *err,
    size_t errlen);
void cdir_vcard_options_free(cdir_t *d);
void cdir_photo_hash(cdir_t *d, LDAP *ld, LDAPMessage *e, char *hash);

/* cdir_cache.c */
cdir_cache_t *cdir_cache_create(int ttl, int size);
void cdir_cache_destroy(cdir_cache_t *c);
void cdir_cache_put(cdir_cache_t *c, const char *login, size_t login_len,
    const char *pw, size_t pw_len, const cdir_auth_result_t *res);
int cdir_cache_get(cdir_cache_t *c, const char *login, size_t login_len,
    const char *pw, size_t pw_len, cdir_auth_result_t *res);
void cdir_cache_drop(cdir_cache_t *c, const char *login, size_t login_len);
unsigned long cdir_cache_count(cdir_cache_t *c);
int cdir_cache_peek(cdir_cache_t *c, const char *login, size_t login_len,
    unsigned char *salt, unsigned char *hash);


#endif /* _CDIR_INT_H_INCLUDED_ */
