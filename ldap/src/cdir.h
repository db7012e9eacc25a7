
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
#define CDIR_MAX_PASSWORD  1024


typedef struct {
    const char  *uri;          /* "ldap://127.0.0.1:10389"; a space-separated
                                  list is failed over in order, sticking
                                  to the server that worked last */
    const char  *bind_dn;      /* service account; NULL or "" = anonymous */
    const char  *bind_pw;
    const char  *base;         /* user search base */
    const char  *user_filter;  /* "(&(objectClass=inetOrgPerson)(uid=%u))":
                                  %u -> RFC 4515-escaped login */
    const char  *group_dn;     /* sign-in group; NULL or "" = anyone */
    int          timeout_ms;   /* bound on every network op and result wait */
    int          pool_size;    /* max idle connections kept per pool */
} cdir_config_t;


typedef enum {
    CDIR_OK = 0,
    CDIR_DENIED,               /* a definite "no" for these credentials */
    CDIR_UNAVAILABLE           /* the directory could not give an answer */
} cdir_status_e;


typedef struct {
    cdir_status_e   status;
    char            reason[128];  /* "invalid credentials", "no such user",
                                     "not in group", "ambiguous user",
                                     "timeout", "server down", ...;
                                     never contains the password */
    char            dn[512];      /* the user's DN on success */
    const char     *stage;        /* static: "input", "connect",
                                     "service bind", "search", "compare",
                                     "bind", "done" */
} cdir_auth_result_t;


typedef struct cdir_s  cdir_t;


cdir_t *cdir_create(const cdir_config_t *cfg, char *err, size_t errlen);
void cdir_destroy(cdir_t *d);
void cdir_authenticate(cdir_t *d, const char *login, size_t login_len,
    const char *pw, size_t pw_len, cdir_auth_result_t *res);
size_t cdir_escape_filter(char *dst, size_t dst_size, const char *src,
    size_t len);


#endif /* _CDIR_H_INCLUDED_ */
