
/*
 * Unit tests for ldap/src/cdir*.c that need no LDAP server: RFC 4515
 * filter escaping, cdir_create() checks (group rules, roles, TLS set-up),
 * the input checks that must deny a sign-in before any network I/O, and
 * the outage cache (issue 6.7: salted, TTL, dropped on refusal).
 *
 * The directory used for input checks points at 127.0.0.1:1, where
 * nothing listens: a check that wrongly let a request through would come
 * back UNAVAILABLE "server down" instead of the expected DENIED reason.
 */


#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "cdir_int.h"
#include "unit.h"


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


static char  long_login[CDIR_MAX_LOGIN + 2];
static char  long_pw[CDIR_MAX_PASSWORD + 2];


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


/*
 * The credentials cache keeps per login a random salt and
 * SHA-256(salt || password), never the password or an unsalted hash:
 * two logins with one password, or one login cached twice, share
 * nothing an attacker with the memory could reuse.
 */
static void
test_cache(void)
{
    unsigned int         n;
    unsigned char        salt[2][16], hash[2][SHA256_DIGEST_LENGTH];
    unsigned char        plain[SHA256_DIGEST_LENGTH];
    unsigned char        buf[16 + 16];
    cdir_cache_t        *c;
    cdir_auth_result_t   res, out;

    memset(&res, 0, sizeof(res));
    res.status = CDIR_OK;
    strcpy(res.dn, "uid=alice,ou=people,dc=example,dc=com");
    strcpy(res.name, "alice");

    c = cdir_cache_create(60, 16);
    check(c != NULL, "cache", "create", NULL);
    if (c == NULL) {
        return;
    }

    cdir_cache_put(c, "alice", 5, "same-pw", 7, &res);
    cdir_cache_put(c, "bob", 3, "same-pw", 7, &res);

    check(cdir_cache_peek(c, "alice", 5, salt[0], hash[0]) == 0
          && cdir_cache_peek(c, "bob", 3, salt[1], hash[1]) == 0,
          "cache", "entries kept", NULL);
    check(memcmp(salt[0], salt[1], 16) != 0
          && memcmp(hash[0], hash[1], sizeof(hash[0])) != 0,
          "cache", "one password, two salts, two digests", NULL);

    (void) EVP_Digest("same-pw", 7, plain, &n, EVP_sha256(), NULL);
    check(memcmp(hash[0], plain, sizeof(plain)) != 0,
          "cache", "no unsalted digest", NULL);

    memcpy(buf, salt[0], 16);
    memcpy(buf + 16, "same-pw", 7);
    (void) EVP_Digest(buf, 16 + 7, plain, &n, EVP_sha256(), NULL);
    check(memcmp(hash[0], plain, sizeof(plain)) == 0,
          "cache", "SHA-256(salt || password)", NULL);

    cdir_cache_put(c, "alice", 5, "same-pw", 7, &res);
    (void) cdir_cache_peek(c, "alice", 5, salt[1], hash[1]);
    check(memcmp(salt[0], salt[1], 16) != 0, "cache",
          "a new salt every time", NULL);

    check(cdir_cache_get(c, "alice", 5, "same-pw", 7, &out) == 0
          && out.from_cache && strcmp(out.name, "alice") == 0,
          "cache", "right password served", NULL);
    check(cdir_cache_get(c, "alice", 5, "other-pw", 8, &out) != 0,
          "cache", "wrong password refused", NULL);

    cdir_cache_drop(c, "alice", 5);
    check(cdir_cache_get(c, "alice", 5, "same-pw", 7, &out) != 0
          && cdir_cache_count(c) == 1, "cache", "dropped", NULL);

    cdir_cache_destroy(c);

    /* TTL: an entry of 1 s is gone 2 s later */
    c = cdir_cache_create(1, 16);
    if (c == NULL) {
        check(0, "cache", "create ttl", NULL);
        return;
    }

    cdir_cache_put(c, "carol", 5, "carol-pw", 8, &res);
    check(cdir_cache_get(c, "carol", 5, "carol-pw", 8, &out) == 0,
          "cache", "served within the TTL", NULL);
    sleep(2);
    check(cdir_cache_get(c, "carol", 5, "carol-pw", 8, &out) != 0,
          "cache", "expired after the TTL", NULL);

    cdir_cache_destroy(c);
}


int
main(void)
{
    test_escape();
    test_cache();
    test_create();
    test_create_options();
    test_input();

    return unit_report();
}
