
/*
 * conclavectl setup: the first-run configuration of an appliance, and
 * backup-schema, which the package runs before a migration.
 *
 * Setup collects its answers from flags, an answers file or, in a
 * terminal, by asking; it checks every answer against the real thing
 * (an LDAP bind and searches, a MariaDB connection, the certificate and
 * its key) before it writes anything.  The files are then made in a
 * staging directory next to the configuration, checked with "nginx -t",
 * the schema is migrated, and only then are they renamed into place,
 * nginx.conf last: a wrong password or an unreachable database leaves
 * no half-written configuration behind.
 */


#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <ldap.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <errmsg.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "cctl.h"
#include "cctl_setup.h"


#define CCTL_SHARE        "/usr/share/conclave"
#define CCTL_NGINX        "/usr/sbin/nginx"
#define CCTL_LINE         1024





typedef struct {
    const char  *name;           /* --name, and name in an answers file */
    size_t       off;
    const char  *def;
    const char  *help;
} cctl_field_t;


#define CCTL_A(f)  offsetof(cctl_answers_t, f)

static const cctl_field_t  cctl_fields[] = {
    { "domain", CCTL_A(domain), NULL, "XMPP domain (users are uid@domain)" },
    { "ldap-uri", CCTL_A(ldap_uri), NULL,
      "LDAP URL, e.g. ldap://10.0.0.5:389" },
    { "ldap-bind-dn", CCTL_A(ldap_bind_dn), NULL,
      "service account DN that searches for users" },
    { "ldap-password-file", CCTL_A(ldap_password_file), NULL,
      "file holding the service account's password" },
    { "ldap-base", CCTL_A(ldap_base), NULL, "subtree searched for users" },
    { "ldap-filter", CCTL_A(ldap_filter),
      "(&(objectClass=inetOrgPerson)(uid=%u))",
      "user search filter; %u is the login name" },
    { "ldap-group", CCTL_A(ldap_group), NULL,
      "DN of the group whose members may sign in" },
    { "db", CCTL_A(db), NULL,
      "MariaDB: mariadb://USER@IP[:PORT]/DB or "
      "mariadb://USER@localhost/DB?socket=PATH" },
    { "db-password-file", CCTL_A(db_password_file), NULL,
      "file holding the MariaDB user's password" },
    { "tls-cert", CCTL_A(tls_cert), NULL, "TLS certificate chain (PEM)" },
    { "tls-key", CCTL_A(tls_key), NULL, "its private key (PEM)" },
    { "self-signed", CCTL_A(self_signed), NULL,
      "\"yes\": make a self-signed certificate instead" },
    { "prefix", CCTL_A(prefix), "", "root of every path written (tests)" },
    { "https-listen", CCTL_A(https_listen), "443",
      "HTTPS listen (web client, WebSocket, BOSH, console)" },
    { "xmpp-listen", CCTL_A(xmpp_listen), "5222", "XMPP STARTTLS listen" },
    { "xmpps-listen", CCTL_A(xmpps_listen), "5223",
      "XMPP direct TLS listen" },
    { "user", CCTL_A(user), "www-data", "user of the nginx workers" },
    { "module", CCTL_A(module), NULL,
      "load this .so instead of /etc/nginx/modules-enabled (tests)" },
    { "share", CCTL_A(share), NULL,
      "templates, web client and console (" CCTL_SHARE ")" },
    { "nginx", CCTL_A(nginx), CCTL_NGINX, "nginx binary for \"nginx -t\"" },
    { "admin-group", CCTL_A(admin_group), "",
      "DN of the group of console administrators (none: \"\")" },
    { "compliance-group", CCTL_A(compliance_group), "",
      "DN of the group of compliance officers (none: \"\")" },
    { "auditor-group", CCTL_A(auditor_group), "",
      "DN of the group of read-only auditors (none: \"\")" },
};

#define CCTL_NFIELDS  (sizeof(cctl_fields) / sizeof(cctl_fields[0]))

#define CCTL_FIELD(a, i)  ((char **) ((char *) (a) + cctl_fields[i].off))


int
cctl_setup_fail(const char *fmt, ...)
{
    va_list  ap;

    fputs("conclavectl setup: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);

    return CCTL_ERROR;
}


char *
cctl_join(const char *a, const char *b)
{
    char    *s;
    size_t   la, lb;

    la = strlen(a);
    lb = strlen(b);

    s = malloc(la + lb + 1);
    if (s) {
        memcpy(s, a, la);
        memcpy(s + la, b, lb + 1);
    }

    return s;
}


static int
cctl_set(cctl_answers_t *a, const char *name, const char *value)
{
    size_t  i;
    char   *v;

    for (i = 0; i < CCTL_NFIELDS; i++) {
        if (strcmp(cctl_fields[i].name, name) == 0) {
            v = strdup(value);
            if (v == NULL) {
                return -1;
            }

            free(*CCTL_FIELD(a, i));
            *CCTL_FIELD(a, i) = v;
            return 0;
        }
    }

    return -1;
}


/* "key = value" lines; '#' comments; '_' and '-' alike in keys */
static int
cctl_answers_file(cctl_answers_t *a, const char *path)
{
    int     n;
    char    line[CCTL_LINE], *k, *v, *e, *p;
    FILE   *f;

    f = fopen(path, "r");
    if (f == NULL) {
        return cctl_setup_fail("answers file %s: %s", path, strerror(errno));
    }

    for (n = 1; fgets(line, sizeof(line), f); n++) {
        for (k = line; isspace((unsigned char) *k); k++) { }

        if (*k == '#' || *k == '\0') {
            continue;
        }

        v = strchr(k, '=');
        if (v == NULL) {
            fclose(f);
            return cctl_setup_fail("%s:%d: expected \"key = value\"", path, n);
        }

        for (e = v; e > k && isspace((unsigned char) e[-1]); e--) { }
        *e = '\0';

        for (v++; isspace((unsigned char) *v); v++) { }
        for (e = v + strlen(v); e > v && isspace((unsigned char) e[-1]); e--)
        { }
        *e = '\0';

        for (p = k; *p; p++) {
            *p = (*p == '_') ? '-' : *p;
        }

        if (cctl_set(a, k, v) != 0) {
            fclose(f);
            return cctl_setup_fail("%s:%d: unknown answer \"%s\"", path, n, k);
        }
    }

    fclose(f);

    return CCTL_OK;
}


static const char  cctl_setup_usage[] =
"usage: conclavectl setup [--answers FILE] [--non-interactive]\n"
"                         [--OPTION VALUE ...]\n"
"\n"
"Configures the appliance: checks every answer live (LDAP bind and\n"
"searches, MariaDB connection, certificate), writes /etc/conclave/\n"
"(nginx.conf, secrets, TLS files, web client settings), migrates the\n"
"schema and creates the checkpoint signing key, all or nothing.  In a\n"
"terminal it asks for what flags and the answers file do not give;\n"
"otherwise (or with --non-interactive) a missing answer is an error.\n"
"\n"
"answers (flags, or \"name = value\" lines in FILE):\n";


static int
cctl_setup_args(int argc, char **argv, cctl_answers_t *a)
{
    int          i, rc;
    size_t       k;
    const char  *answers;

    answers = NULL;
    a->interactive = isatty(STDIN_FILENO);

    for (i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--answers") == 0 && i + 1 < argc) {
            answers = argv[++i];
        }
    }

    if (answers && (rc = cctl_answers_file(a, answers)) != CCTL_OK) {
        return rc;
    }

    for (i = 0; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(cctl_setup_usage, stdout);
            for (k = 0; k < CCTL_NFIELDS; k++) {
                printf("  --%-20s %s%s%s\n", cctl_fields[k].name,
                       cctl_fields[k].help,
                       cctl_fields[k].def && *cctl_fields[k].def
                       ? "; default " : "",
                       cctl_fields[k].def ? cctl_fields[k].def : "");
            }
            exit(CCTL_OK);
        }

        if (strcmp(argv[i], "--answers") == 0 && i + 1 < argc) {
            i++;
        } else if (strcmp(argv[i], "--non-interactive") == 0) {
            a->interactive = 0;
        } else if (strcmp(argv[i], "--no-nginx-test") == 0) {
            a->no_nginx_test = 1;
        } else if (strcmp(argv[i], "--self-signed") == 0
                   && (i + 1 == argc || strncmp(argv[i + 1], "--", 2) == 0))
        {
            cctl_set(a, "self-signed", "yes");
        } else if (strncmp(argv[i], "--", 2) == 0 && i + 1 < argc
                   && cctl_set(a, argv[i] + 2, argv[i + 1]) == 0)
        {
            i++;
        } else {
            return cctl_setup_fail("unexpected \"%s\" (see conclavectl "
                                   "setup --help)", argv[i]);
        }
    }

    for (k = 0; k < CCTL_NFIELDS; k++) {
        if (*CCTL_FIELD(a, k) == NULL && cctl_fields[k].def
            && (*CCTL_FIELD(a, k) = strdup(cctl_fields[k].def)) == NULL)
        {
            return cctl_setup_fail("out of memory");
        }
    }

    return CCTL_OK;
}


/* one line from the terminal, without echo for a password */
static char *
cctl_ask(const char *prompt, const char *def, int secret)
{
    char            line[CCTL_LINE];
    size_t          n;
    struct termios  t, saved;

    if (def && *def) {
        printf("%s [%s]: ", prompt, def);
    } else {
        printf("%s: ", prompt);
    }

    fflush(stdout);

    if (secret && tcgetattr(STDIN_FILENO, &saved) == 0) {
        t = saved;
        t.c_lflag &= ~(tcflag_t) ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &t);
    } else {
        secret = 0;
    }

    if (fgets(line, sizeof(line), stdin) == NULL) {
        line[0] = '\0';
        if (secret) {
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
        }
        fputc('\n', stdout);
        return NULL;
    }

    if (secret) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
        fputc('\n', stdout);
    }

    n = strcspn(line, "\r\n");
    line[n] = '\0';

    return strdup(n == 0 && def ? def : line);
}


/* the first line of a password file */
static char *
cctl_read_secret(const char *path, char *err, size_t errlen)
{
    char   line[CCTL_LINE];
    FILE  *f;

    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "password file %s: %s", path, strerror(errno));
        return NULL;
    }

    if (fgets(line, sizeof(line), f) == NULL) {
        line[0] = '\0';
    }

    fclose(f);
    line[strcspn(line, "\r\n")] = '\0';

    if (line[0] == '\0') {
        snprintf(err, errlen, "password file %s is empty", path);
        return NULL;
    }

    return strdup(line);
}


/*
 * A value that goes into nginx.conf inside double quotes (or bare, for
 * names and listens): nothing that could end the string or the
 * directive early.
 */
static int
cctl_conf_safe(const char *what, const char *v, int bare, char *err,
    size_t errlen)
{
    const char  *p;

    if (v == NULL || *v == '\0') {
        snprintf(err, errlen, "%s is empty", what);
        return -1;
    }

    for (p = v; *p; p++) {
        if (*p == '"' || *p == '\\' || *p == '$' || iscntrl((unsigned char) *p)
            || (bare && (isspace((unsigned char) *p) || *p == ';'
                         || *p == '{' || *p == '}' || *p == '#')))
        {
            snprintf(err, errlen, "%s \"%s\" holds a character nginx.conf "
                     "cannot take here ('%c')", what, v, *p);
            return -1;
        }
    }

    return 0;
}


static int
cctl_check_domain(cctl_answers_t *a, char *err, size_t errlen)
{
    const char  *p;

    if (cctl_conf_safe("domain", a->domain, 1, err, errlen) != 0) {
        return -1;
    }

    for (p = a->domain; *p; p++) {
        if (!isalnum((unsigned char) *p) && *p != '.' && *p != '-') {
            snprintf(err, errlen, "domain \"%s\" is not a DNS name (RFC "
                     "7622 section 3.2)", a->domain);
            return -1;
        }
    }

    return strlen(a->domain) > 253 ? (snprintf(err, errlen, "domain is "
                                               "longer than 253"), -1) : 0;
}


static LDAP *
cctl_ldap_open(cctl_answers_t *a, char *err, size_t errlen)
{
    int             rc, v3;
    LDAP           *ld;
    struct timeval  tv;

    if (cctl_conf_safe("LDAP URL", a->ldap_uri, 0, err, errlen) != 0) {
        return NULL;
    }

    if (ldap_initialize(&ld, a->ldap_uri) != LDAP_SUCCESS) {
        snprintf(err, errlen, "LDAP URL \"%s\" is not valid (ldap://HOST:PORT "
                 "or ldaps://HOST:PORT)", a->ldap_uri);
        return NULL;
    }

    v3 = LDAP_VERSION3;
    tv.tv_sec = CCTL_TIMEOUT_S;
    tv.tv_usec = 0;
    ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
    ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
    ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv);
    ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);

    rc = LDAP_SUCCESS;

    if (a->ldap_bind_dn && a->ldap_password) {
        struct berval  cred;

        cred.bv_val = a->ldap_password;
        cred.bv_len = strlen(a->ldap_password);

        rc = ldap_sasl_bind_s(ld, a->ldap_bind_dn, LDAP_SASL_SIMPLE, &cred,
                              NULL, NULL, NULL);
    }

    if (rc == LDAP_SUCCESS) {
        return ld;
    }

    if (rc == LDAP_INVALID_CREDENTIALS) {
        snprintf(err, errlen, "LDAP: %s refused the password of \"%s\" "
                 "(invalid credentials)", a->ldap_uri, a->ldap_bind_dn);

    } else if (rc == LDAP_SERVER_DOWN || rc == LDAP_TIMEOUT
               || rc == LDAP_CONNECT_ERROR)
    {
        snprintf(err, errlen, "LDAP: cannot reach %s (%s): is the server "
                 "up and the port right?", a->ldap_uri, ldap_err2string(rc));

    } else if (rc == LDAP_INVALID_DN_SYNTAX) {
        snprintf(err, errlen, "LDAP: bind DN \"%s\" is not a valid DN",
                 a->ldap_bind_dn);

    } else {
        snprintf(err, errlen, "LDAP: bind as \"%s\" to %s failed: %s",
                 a->ldap_bind_dn, a->ldap_uri, ldap_err2string(rc));
    }

    ldap_unbind_ext_s(ld, NULL, NULL);

    return NULL;
}


/* the entry dn exists and the service account can read it */
static int
cctl_ldap_exists(LDAP *ld, const char *what, const char *dn, char *err,
    size_t errlen)
{
    int            rc, n;
    LDAPMessage   *res;
    char          *attrs[] = { LDAP_NO_ATTRS, NULL };

    res = NULL;
    rc = ldap_search_ext_s(ld, dn, LDAP_SCOPE_BASE, "(objectClass=*)", attrs,
                           0, NULL, NULL, NULL, 1, &res);
    n = (rc == LDAP_SUCCESS) ? ldap_count_entries(ld, res) : 0;

    if (res) {
        ldap_msgfree(res);
    }

    if (rc == LDAP_SUCCESS && n == 1) {
        return 0;
    }

    if (rc == LDAP_NO_SUCH_OBJECT || rc == LDAP_SUCCESS) {
        snprintf(err, errlen, "LDAP: %s \"%s\" does not exist (or the "
                 "service account may not read it)", what, dn);
    } else {
        snprintf(err, errlen, "LDAP: looking up %s \"%s\" failed: %s", what,
                 dn, ldap_err2string(rc));
    }

    return -1;
}



static int
cctl_check_role(LDAP *ld, const char *what, const char *dn, char *err,
    size_t errlen)
{
    if (dn == NULL || dn[0] == '\0') {
        return 0;
    }

    return (cctl_conf_safe(what, dn, 0, err, errlen) != 0
            || cctl_ldap_exists(ld, what, dn, err, errlen) != 0) ? -1 : 0;
}

static int
cctl_check_ldap(cctl_answers_t *a, int upto, char *err, size_t errlen)
{
    int    rc;
    LDAP  *ld;

    if (cctl_conf_safe("bind DN", a->ldap_bind_dn, 0, err, errlen) != 0) {
        return -1;
    }

    ld = cctl_ldap_open(a, err, errlen);
    if (ld == NULL) {
        return -1;
    }

    rc = 0;

    if (upto >= 1) {
        rc = cctl_conf_safe("LDAP base", a->ldap_base, 0, err, errlen) != 0
             || cctl_ldap_exists(ld, "base", a->ldap_base, err, errlen) != 0;
    }

    if (rc == 0 && upto >= 2) {
        rc = cctl_conf_safe("filter", a->ldap_filter, 0, err, errlen) != 0;

        if (rc == 0 && strstr(a->ldap_filter, "%u") == NULL) {
            snprintf(err, errlen, "LDAP filter \"%s\" has no %%u for the "
                     "login name", a->ldap_filter);
            rc = 1;
        }
    }

    if (rc == 0 && upto >= 3) {
        rc = cctl_conf_safe("group", a->ldap_group, 0, err, errlen) != 0
             || cctl_ldap_exists(ld, "sign-in group", a->ldap_group, err,
                                 errlen) != 0;
    }

    /* the console's role groups, when given (flags or answers file) */
    if (rc == 0 && upto >= 3) {
        rc = cctl_check_role(ld, "admin group", a->admin_group, err,
                             errlen) != 0
             || cctl_check_role(ld, "compliance group", a->compliance_group,
                                err, errlen) != 0
             || cctl_check_role(ld, "auditor group", a->auditor_group, err,
                                errlen) != 0;
    }

    ldap_unbind_ext_s(ld, NULL, NULL);

    return rc ? -1 : 0;
}


/* mariadb://USER@IP[:PORT]/DB  or  mariadb://USER@localhost/DB?socket=P */
static int
cctl_parse_dsn(cctl_answers_t *a, char *err, size_t errlen)
{
    char            *s, *at, *slash, *q, *colon;
    unsigned char    addr[16];

    if (a->db == NULL || strncmp(a->db, "mariadb://", 10) != 0) {
        snprintf(err, errlen, "MariaDB DSN \"%s\": expected mariadb://USER@"
                 "IP[:PORT]/DATABASE or mariadb://USER@localhost/DATABASE"
                 "?socket=PATH", a->db ? a->db : "");
        return -1;
    }

    s = strdup(a->db + 10);
    if (s == NULL) {
        return -1;
    }

    at = strchr(s, '@');
    slash = at ? strchr(at, '/') : NULL;

    if (at == NULL || slash == NULL || at == s || slash[1] == '\0') {
        free(s);
        snprintf(err, errlen, "MariaDB DSN \"%s\" needs a user and a "
                 "database: mariadb://USER@HOST/DATABASE", a->db);
        return -1;
    }

    *at = '\0';
    *slash = '\0';
    q = strchr(slash + 1, '?');

    if (q) {
        *q++ = '\0';
        if (strncmp(q, "socket=", 7) != 0 || q[7] != '/') {
            free(s);
            snprintf(err, errlen, "MariaDB DSN \"%s\": the only option is "
                     "?socket=/absolute/path", a->db);
            return -1;
        }
        a->db_socket = strdup(q + 7);
    }

    a->db_user = strdup(s);
    a->db_name = strdup(slash + 1);
    a->db_port = 3306;

    colon = strrchr(at + 1, ':');
    if (colon && strchr(at + 1, ']') < colon) {
        *colon = '\0';
        a->db_port = (unsigned) strtoul(colon + 1, NULL, 10);
    }

    a->db_host = strdup(at + 1);
    free(s);

    if (a->db_user == NULL || a->db_name == NULL || a->db_host == NULL) {
        return -1;
    }

    /* connect_start with a host name does a blocking DNS lookup in the
     * shipper (PLATFORM.md 4): an address or a socket only */
    if (a->db_socket == NULL && inet_pton(AF_INET, a->db_host, addr) != 1
        && inet_pton(AF_INET6, a->db_host, addr) != 1)
    {
        snprintf(err, errlen, "MariaDB host \"%s\" must be an IP address "
                 "(no DNS lookups in the server) or localhost with "
                 "?socket=PATH", a->db_host);
        return -1;
    }

    if (a->db_port == 0 || a->db_port > 65535) {
        snprintf(err, errlen, "MariaDB port in \"%s\" is not valid", a->db);
        return -1;
    }

    return cctl_conf_safe("MariaDB user", a->db_user, 0, err, errlen)
           || cctl_conf_safe("database", a->db_name, 0, err, errlen)
           || (a->db_socket
               && cctl_conf_safe("socket", a->db_socket, 1, err, errlen))
           ? -1 : 0;
}


static int
cctl_check_db(cctl_answers_t *a, char *err, size_t errlen)
{
    MYSQL         *m;
    unsigned int   t, e;

    if (cctl_parse_dsn(a, err, errlen) != 0) {
        return -1;
    }

    m = mysql_init(NULL);
    if (m == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    t = CCTL_TIMEOUT_S;
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &t);
    mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &t);

    if (mysql_real_connect(m, a->db_socket ? NULL : a->db_host, a->db_user,
                           a->db_password, a->db_name, a->db_port,
                           a->db_socket, 0) != NULL)
    {
        mysql_close(m);
        return 0;
    }

    e = mysql_errno(m);

    if (e == ER_ACCESS_DENIED_ERROR) {
        snprintf(err, errlen, "MariaDB refused user \"%s\" (wrong password, "
                 "or no grant for this host): %s", a->db_user, mysql_error(m));
    } else if (e == ER_BAD_DB_ERROR || e == ER_DBACCESS_DENIED_ERROR) {
        snprintf(err, errlen, "MariaDB database \"%s\" does not exist or "
                 "user \"%s\" has no rights on it: %s", a->db_name,
                 a->db_user, mysql_error(m));
    } else if (e == CR_CONN_HOST_ERROR || e == CR_CONNECTION_ERROR
               || e == CR_SERVER_LOST || e == CR_UNKNOWN_HOST)
    {
        snprintf(err, errlen, "cannot reach MariaDB at %s%s%u: %s",
                 a->db_socket ? a->db_socket : a->db_host,
                 a->db_socket ? "" : ":", a->db_socket ? 0 : a->db_port,
                 mysql_error(m));
    } else {
        snprintf(err, errlen, "MariaDB: %s", mysql_error(m));
    }

    mysql_close(m);

    return -1;
}


static int
cctl_check_tls(cctl_answers_t *a, char *err, size_t errlen)
{
    int        rc;
    FILE      *f;
    X509      *x;
    EVP_PKEY  *k;

    if (a->self_signed && strcmp(a->self_signed, "yes") == 0) {
        return 0;
    }

    if (a->tls_cert == NULL || a->tls_key == NULL) {
        snprintf(err, errlen, "a TLS certificate and key (--tls-cert, "
                 "--tls-key) or --self-signed");
        return -1;
    }

    x = NULL;
    k = NULL;
    rc = -1;

    f = fopen(a->tls_cert, "r");
    if (f == NULL) {
        snprintf(err, errlen, "TLS certificate %s: %s", a->tls_cert,
                 strerror(errno));
        return -1;
    }

    x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);

    if (x == NULL) {
        snprintf(err, errlen, "TLS certificate %s is not a PEM certificate",
                 a->tls_cert);
        return -1;
    }

    f = fopen(a->tls_key, "r");
    if (f == NULL) {
        snprintf(err, errlen, "TLS key %s: %s", a->tls_key, strerror(errno));
        goto done;
    }

    k = PEM_read_PrivateKey(f, NULL, NULL, (void *) "");
    fclose(f);

    if (k == NULL) {
        snprintf(err, errlen, "TLS key %s is not an unencrypted PEM private "
                 "key", a->tls_key);
    } else if (X509_check_private_key(x, k) != 1) {
        snprintf(err, errlen, "TLS key %s does not belong to certificate %s",
                 a->tls_key, a->tls_cert);
    } else if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0) {
        snprintf(err, errlen, "TLS certificate %s has expired", a->tls_cert);
    } else if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0) {
        snprintf(err, errlen, "TLS certificate %s is not valid yet",
                 a->tls_cert);
    } else {
        rc = 0;
    }

done:

    EVP_PKEY_free(k);
    X509_free(x);

    return rc;
}


/* one question of the dialogue: fields asked together, then checked */
typedef struct {
    const char  *names[3];
    const char  *prompts[3];
    int          secret[3];
    int        (*check)(cctl_answers_t *a, int arg, char *err,
                        size_t errlen);
    int          arg;
} cctl_step_t;


static int
cctl_step_domain(cctl_answers_t *a, int arg, char *err, size_t errlen)
{
    (void) arg;

    return cctl_check_domain(a, err, errlen);
}


static int
cctl_step_db(cctl_answers_t *a, int arg, char *err, size_t errlen)
{
    (void) arg;

    return cctl_check_db(a, err, errlen);
}


static int
cctl_step_tls(cctl_answers_t *a, int arg, char *err, size_t errlen)
{
    (void) arg;

    return cctl_check_tls(a, err, errlen);
}


static const cctl_step_t  cctl_steps[] = {
    { { "domain" }, { "XMPP domain (users sign in as uid@domain)" }, { 0 },
      cctl_step_domain, 0 },
    { { "ldap-uri", "ldap-bind-dn", "ldap-password" },
      { "LDAP URL (ldap://IP:389)", "service account DN",
        "service account password" }, { 0, 0, 1 }, cctl_check_ldap, 0 },
    { { "ldap-base" }, { "LDAP base of the user accounts" }, { 0 },
      cctl_check_ldap, 1 },
    { { "ldap-filter" }, { "user search filter" }, { 0 }, cctl_check_ldap, 2 },
    { { "ldap-group" }, { "DN of the group allowed to sign in" }, { 0 },
      cctl_check_ldap, 3 },
    { { "db", "db-password" },
      { "MariaDB (mariadb://USER@IP:PORT/DATABASE)", "MariaDB password" },
      { 0, 1 }, cctl_step_db, 0 },
    { { "tls-cert", "tls-key" },
      { "TLS certificate file (PEM; \"self-signed\" to make one)",
        "TLS private key file (PEM)" }, { 0, 0 }, cctl_step_tls, 0 },
};


static char **
cctl_slot(cctl_answers_t *a, const char *name)
{
    size_t  i;

    if (strcmp(name, "ldap-password") == 0) {
        return &a->ldap_password;
    }

    if (strcmp(name, "db-password") == 0) {
        return &a->db_password;
    }

    for (i = 0; i < CCTL_NFIELDS; i++) {
        if (strcmp(cctl_fields[i].name, name) == 0) {
            return CCTL_FIELD(a, i);
        }
    }

    return NULL;
}


/*
 * Ask for what is missing, check; in a terminal a refused answer is
 * asked again (its old value offered as the default, passwords never),
 * otherwise it ends setup before anything is written.
 */
static int
cctl_dialogue(cctl_answers_t *a)
{
    int                 ok;
    char                err[1024], *prev, **v;
    size_t              s, i;
    const cctl_step_t  *st;

    for (s = 0; s < sizeof(cctl_steps) / sizeof(cctl_steps[0]); s++) {
        st = &cctl_steps[s];

        for ( ;; ) {
            for (i = 0; i < 3 && st->names[i]; i++) {
                v = cctl_slot(a, st->names[i]);

                if (strncmp(st->names[i], "tls-", 4) == 0
                    && a->self_signed && strcmp(a->self_signed, "yes") == 0)
                {
                    continue;
                }

                if (*v != NULL) {
                    continue;
                }

                if (!a->interactive) {
                    return cctl_setup_fail("missing answer: --%s%s (or "
                                           "in the answers file)",
                                           st->names[i],
                                           st->secret[i] ? "-file" : "");
                }

                *v = cctl_ask(st->prompts[i], NULL, st->secret[i]);
                if (*v == NULL) {
                    return cctl_setup_fail("no answer: setup cancelled");
                }

                if (strcmp(st->names[i], "tls-cert") == 0
                    && strcmp(*v, "self-signed") == 0)
                {
                    cctl_set(a, "self-signed", "yes");
                }
            }

            err[0] = '\0';
            ok = st->check(a, st->arg, err, sizeof(err)) == 0;

            if (ok) {
                if (a->interactive) {
                    printf("  ok\n");
                }
                break;
            }

            if (!a->interactive) {
                return cctl_setup_fail("%s; nothing was written", err);
            }

            printf("  %s\n", err);

            for (i = 0; i < 3 && st->names[i]; i++) {
                v = cctl_slot(a, st->names[i]);
                prev = *v;
                *v = NULL;

                if (st->secret[i] || prev == NULL) {
                    free(prev);
                    continue;
                }

                *v = cctl_ask(st->prompts[i], prev, 0);
                free(prev);

                if (*v == NULL) {
                    return cctl_setup_fail("no answer: setup cancelled");
                }
            }

            free(a->self_signed);
            a->self_signed = NULL;

            if (a->tls_cert && strcmp(a->tls_cert, "self-signed") == 0) {
                cctl_set(a, "self-signed", "yes");
            }
        }
    }

    return CCTL_OK;
}




int
cctl_setup(int argc, char **argv)
{
    int              rc;
    char             err[1024];
    cctl_answers_t   a;

    memset(&a, 0, sizeof(a));

    rc = cctl_setup_args(argc, argv, &a);
    if (rc != CCTL_OK) {
        return rc;
    }

    if (a.ldap_password_file
        && (a.ldap_password = cctl_read_secret(a.ldap_password_file, err,
                                               sizeof(err))) == NULL)
    {
        return cctl_setup_fail("%s", err);
    }

    if (a.db_password_file
        && (a.db_password = cctl_read_secret(a.db_password_file, err,
                                             sizeof(err))) == NULL)
    {
        return cctl_setup_fail("%s", err);
    }

    if (a.interactive) {
        printf("Conclave setup: each answer is checked as you go.\n");
    }

    rc = cctl_dialogue(&a);
    if (rc != CCTL_OK) {
        return rc;
    }

    if (cctl_conf_safe("HTTPS listen", a.https_listen, 1, err, sizeof(err))
        || cctl_conf_safe("XMPP listen", a.xmpp_listen, 1, err, sizeof(err))
        || cctl_conf_safe("XMPPS listen", a.xmpps_listen, 1, err,
                          sizeof(err))
        || cctl_conf_safe("user", a.user, 1, err, sizeof(err))
        || (a.module && cctl_conf_safe("module", a.module, 1, err,
                                       sizeof(err))))
    {
        return cctl_setup_fail("%s; nothing was written", err);
    }

    return cctl_setup_install(&a);
}
