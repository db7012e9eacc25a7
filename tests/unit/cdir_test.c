
/*
 * Unit tests for ldap/src/cdir*.c that need no LDAP server: RFC 4515
 * filter escaping, cdir_create() checks (group rules, roles, TLS set-up),
 * and the input checks that must deny a sign-in before any network I/O.
 *
 * The directory used for input checks points at 127.0.0.1:1, where
 * nothing listens: a check that wrongly let a request through would come
 * back UNAVAILABLE "server down" instead of the expected DENIED reason.
 */


#include <stdio.h>
#include <string.h>

#include "cdir.h"


#define NOWHERE  "ldap://127.0.0.1:1"
#define FILTER   "(&(objectClass=inetOrgPerson)(uid=%u))"
#define NOT_FIT  ((size_t) -1)


typedef struct {
    const char  *name;
    const char  *src;
    size_t       len;
    size_t       dst_size;
    const char  *expect;        /* NULL: must not fit */
} escape_case_t;


typedef struct {
    const char     *name;
    const char     *login;
    size_t          login_len;
    const char     *pw;
    size_t          pw_len;
    cdir_status_e   status;
    const char     *reason;
} input_case_t;


typedef struct {
    const char  *name;
    const char  *uri;
    const char  *filter;
    int          timeout_ms;
    int          pool_size;
    int          ok;
} create_case_t;


static int  passed;
static int  failed;

static char  long_login[CDIR_MAX_LOGIN + 2];
static char  long_pw[CDIR_MAX_PASSWORD + 2];


static void
check(int ok, const char *group, const char *name, const char *detail)
{
    if (ok) {
        passed++;
        return;
    }

    failed++;
    printf("FAIL %s: %s%s%s\n", group, name, detail ? ": " : "",
           detail ? detail : "");
}


static const escape_case_t  escape_cases[] = {
    { "plain", "alice", 5, 64, "alice" },
    { "empty", "", 0, 1, "" },
    { "star", "*", 1, 64, "\\2a" },
    { "parens", "()", 2, 64, "\\28\\29" },
    { "backslash", "\\", 1, 64, "\\5c" },
    { "nul", "a\0b", 3, 64, "a\\00b" },
    { "prefix wildcard", "al*", 3, 64, "al\\2a" },
    { "injection", "alice)(uid=*", 12, 64, "alice\\29\\28uid=\\2a" },
    { "or injection", "*)(|(uid=*", 10, 64, "\\2a\\29\\28|\\28uid=\\2a" },
    { "escaped escape", "\\2a", 3, 64, "\\5c2a" },
    { "control", "a\nb\x7f", 4, 64, "a\\0ab\\7f" },
    { "utf-8 passes", "j\xc3\xb6rg", 5, 64, "j\xc3\xb6rg" },
    { "exact fit", "abc", 3, 4, "abc" },
    { "no room for nul", "abc", 3, 3, NULL },
    { "escape exact fit", "*", 1, 4, "\\2a" },
    { "escape no room", "*", 1, 3, NULL },
    { "escape partial", "a*", 2, 4, NULL },
    { "zero size", "", 0, 0, NULL },
};


static void
test_escape(void)
{
    char                  buf[64];
    size_t                i, n;
    const escape_case_t  *c;

    for (i = 0; i < sizeof(escape_cases) / sizeof(escape_cases[0]); i++) {
        c = &escape_cases[i];

        memset(buf, 'Z', sizeof(buf));
        n = cdir_escape_filter(buf, c->dst_size, c->src, c->len);

        if (c->expect == NULL) {
            check(n == NOT_FIT, "escape", c->name, "expected no fit");
            continue;
        }

        check(n == strlen(c->expect) && strcmp(buf, c->expect) == 0,
              "escape", c->name, n == NOT_FIT ? "did not fit" : buf);
    }
}


static const input_case_t  input_cases[] = {
    { "empty login", "", 0, "pw", 2, CDIR_DENIED, "empty login" },
    { "null login", NULL, 0, "pw", 2, CDIR_DENIED, "empty login" },
    { "nul in login", "ali\0ce", 6, "pw", 2, CDIR_DENIED, "invalid login" },
    { "login over max", long_login, CDIR_MAX_LOGIN + 1, "pw", 2,
      CDIR_DENIED, "login too long" },
    { "empty password", "alice", 5, "", 0, CDIR_DENIED, "empty password" },
    { "null password", "alice", 5, NULL, 0, CDIR_DENIED, "empty password" },
    { "nul in password", "alice", 5, "pw\0x", 4, CDIR_DENIED,
      "invalid password" },
    { "leading nul password", "alice", 5, "\0pw", 3, CDIR_DENIED,
      "invalid password" },
    { "password over max", "alice", 5, long_pw, CDIR_MAX_PASSWORD + 1,
      CDIR_DENIED, "password too long" },
    { "login nul beats password", "a\0", 2, "", 0, CDIR_DENIED,
      "invalid login" },

    /* at the limits the server is asked, and here it is not there */
    { "login at max", long_login, CDIR_MAX_LOGIN, "pw", 2,
      CDIR_UNAVAILABLE, "server down" },
    { "password at max", "alice", 5, long_pw, CDIR_MAX_PASSWORD,
      CDIR_UNAVAILABLE, "server down" },
    { "special login", "*)(uid=*", 8, "pw", 2,
      CDIR_UNAVAILABLE, "server down" },
};


static void
test_input(void)
{
    char                 err[256], detail[256];
    size_t               i;
    cdir_t              *d;
    cdir_config_t        cfg;
    cdir_auth_result_t   res;
    const input_case_t  *c;

    memset(long_login, 'a', sizeof(long_login) - 1);
    memset(long_pw, 'p', sizeof(long_pw) - 1);

    memset(&cfg, 0, sizeof(cdir_config_t));
    cfg.uri = NOWHERE;
    cfg.bind_dn = "cn=svc,dc=example,dc=com";
    cfg.bind_pw = "secret";
    cfg.base = "dc=example,dc=com";
    cfg.user_filter = FILTER;
    cfg.group_dn = "cn=users,dc=example,dc=com";
    cfg.timeout_ms = 500;
    cfg.pool_size = 2;

    d = cdir_create(&cfg, err, sizeof(err));
    check(d != NULL, "input", "create", err);
    if (d == NULL) {
        return;
    }

    for (i = 0; i < sizeof(input_cases) / sizeof(input_cases[0]); i++) {
        c = &input_cases[i];

        memset(&res, 0x55, sizeof(res));
        cdir_authenticate(d, c->login, c->login_len, c->pw, c->pw_len, &res);

        snprintf(detail, sizeof(detail), "got %d \"%.128s\"",
                 (int) res.status, res.reason);

        check(res.status == c->status && strcmp(res.reason, c->reason) == 0
              && (c->status != CDIR_DENIED
                  || (res.dn[0] == '\0' && strcmp(res.stage, "input") == 0)),
              "input", c->name, detail);
    }

    /* a NULL directory is unavailable, never a crash */
    cdir_authenticate(NULL, "alice", 5, "pw", 2, &res);
    check(res.status == CDIR_UNAVAILABLE, "input", "null directory", NULL);

    cdir_destroy(d);
}


static const create_case_t  create_cases[] = {
    { "good", NOWHERE, FILTER, 500, 4, 1 },
    { "uri list", "ldap://127.0.0.1:1  ldap://127.0.0.1:2", FILTER, 500, 4,
      1 },
    { "pool 0", NOWHERE, FILTER, 500, 0, 1 },
    { "no uri", NULL, FILTER, 500, 4, 0 },
    { "empty uri", "", FILTER, 500, 4, 0 },
    { "blank uri", "   ", FILTER, 500, 4, 0 },
    { "bad uri", "http://127.0.0.1/", FILTER, 500, 4, 0 },
    { "no %u", NOWHERE, "(uid=alice)", 500, 4, 0 },
    { "no parens", NOWHERE, "uid=%u", 500, 4, 0 },
    { "no filter", NOWHERE, NULL, 500, 4, 0 },
    { "zero timeout", NOWHERE, FILTER, 0, 4, 0 },
    { "huge timeout", NOWHERE, FILTER, 3600001, 4, 0 },
    { "negative pool", NOWHERE, FILTER, 500, -1, 0 },
};


static void
test_create(void)
{
    char                  err[256];
    size_t                i;
    cdir_t               *d;
    cdir_config_t         cfg;
    const create_case_t  *c;

    for (i = 0; i < sizeof(create_cases) / sizeof(create_cases[0]); i++) {
        c = &create_cases[i];

        memset(&cfg, 0, sizeof(cdir_config_t));
        cfg.uri = c->uri;
        cfg.base = "dc=example,dc=com";
        cfg.user_filter = c->filter;
        cfg.timeout_ms = c->timeout_ms;
        cfg.pool_size = c->pool_size;

        err[0] = '\0';
        d = cdir_create(&cfg, err, sizeof(err));

        check((d != NULL) == c->ok && (c->ok || err[0] != '\0'),
              "create", c->name, err);

        cdir_destroy(d);
    }

    d = cdir_create(NULL, err, sizeof(err));
    check(d == NULL, "create", "null config", NULL);

    /* an empty service password would be an unauthenticated bind */
    memset(&cfg, 0, sizeof(cdir_config_t));
    cfg.uri = NOWHERE;
    cfg.bind_dn = "cn=svc,dc=example,dc=com";
    cfg.bind_pw = "";
    cfg.base = "dc=example,dc=com";
    cfg.user_filter = FILTER;
    cfg.timeout_ms = 500;

    d = cdir_create(&cfg, err, sizeof(err));
    check(d == NULL, "create", "empty service password", NULL);
    cdir_destroy(d);
}


/* the issue 6 options: group rules, roles, TLS set-up, cache */
static void
test_create_options(void)
{
    char            err[256];
    size_t          i;
    cdir_t         *d;
    cdir_config_t   cfg;
    cdir_stats_t    st;

    static const struct {
        const char  *name;
        int          mode, depth, max, ttl;
        const char  *admin, *uri, *ca;
        int          starttls, ok;
    } cases[] = {
        { "defaults", 0, 0, 0, 0, NULL, NOWHERE, NULL, 0, 1 },
        { "memberof nested", 1, 4, 100, 60, "cn=a,dc=x", NOWHERE, NULL,
          0, 1 },
        { "bad mode", 7, 0, 0, 0, NULL, NOWHERE, NULL, 0, 0 },
        { "negative depth", 0, -1, 0, 0, NULL, NOWHERE, NULL, 0, 0 },
        { "huge depth", 0, 33, 0, 0, NULL, NOWHERE, NULL, 0, 0 },
        { "negative max", 0, 0, -5, 0, NULL, NOWHERE, NULL, 0, 0 },
        { "negative ttl", 0, 0, 0, -1, NULL, NOWHERE, NULL, 0, 0 },
        { "role not a DN", 0, 0, 0, 0, "not a dn", NOWHERE, NULL, 0, 0 },
        { "ldaps, missing CA", 0, 0, 0, 0, NULL, "ldaps://127.0.0.1:1",
          "/nonexistent/ca.pem", 0, 0 },
        { "starttls, missing CA", 0, 0, 0, 0, NULL, NOWHERE,
          "/nonexistent/ca.pem", 1, 0 },
        { "plain ldap ignores CA", 0, 0, 0, 0, NULL, NOWHERE,
          "/nonexistent/ca.pem", 0, 1 },
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(&cfg, 0, sizeof(cdir_config_t));
        cfg.uri = cases[i].uri;
        cfg.base = "dc=example,dc=com";
        cfg.user_filter = FILTER;
        cfg.timeout_ms = 500;
        cfg.group_mode = cases[i].mode;
        cfg.group_depth = cases[i].depth;
        cfg.max_groups = cases[i].max;
        cfg.cache_ttl = cases[i].ttl;
        cfg.role_dn[1] = cases[i].admin;
        cfg.ca_file = cases[i].ca;
        cfg.starttls = cases[i].starttls;

        err[0] = '\0';
        d = cdir_create(&cfg, err, sizeof(err));

        check((d != NULL) == cases[i].ok && (cases[i].ok || err[0] != '\0'),
              "options", cases[i].name, err);

        cdir_destroy(d);
    }

    /* counters start at zero; a refused input counts as denied */
    memset(&cfg, 0, sizeof(cdir_config_t));
    cfg.uri = NOWHERE;
    cfg.base = "dc=example,dc=com";
    cfg.user_filter = FILTER;
    cfg.timeout_ms = 500;
    cfg.cache_ttl = 60;

    d = cdir_create(&cfg, err, sizeof(err));
    check(d != NULL, "options", "stats directory", err);
    if (d == NULL) {
        return;
    }

    cdir_stats(d, &st);
    check(st.auth_ok == 0 && st.auth_denied == 0 && st.ops == 0,
          "options", "stats zero", NULL);

    {
        cdir_auth_result_t  res;

        cdir_authenticate(d, "alice", 5, "", 0, &res);
        cdir_stats(d, &st);
        check(res.status == CDIR_DENIED && st.auth_denied == 1
              && st.ops == 0, "options", "stats denied input", NULL);

        cdir_revalidate(d, "", &res);
        check(res.status == CDIR_UNAVAILABLE, "options",
              "revalidate without DN", NULL);
    }

    cdir_destroy(d);
}


int
main(void)
{
    test_escape();
    test_create();
    test_create_options();
    test_input();

    printf("%d passed, %d failed\n", passed, failed);

    return failed ? 1 : 0;
}
