
/*
 * conclavectl setup, second half: where the files go, staging them,
 * "nginx -t", the migration and the renames into place
 * (cctl_setup_install); and backup-schema.  The answers and their
 * checks are in cctl_setup.c.
 */


#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mysql.h>

#include "cctl.h"
#include "cctl_setup.h"


#define CCTL_SHARE        "/usr/share/conclave"

#ifndef CCTL_BUILD_TOP
#define CCTL_BUILD_TOP    NULL
#endif


static void
cctl_db_opts(cctl_answers_t *a, caud_db_opts_t *db)
{
    memset(db, 0, sizeof(caud_db_opts_t));
    db->host = a->db_socket ? NULL : a->db_host;
    db->port = a->db_port;
    db->socket = a->db_socket;
    db->user = a->db_user;
    db->password = a->db_password;
    db->database = a->db_name;
    db->timeout_s = CCTL_TIMEOUT_S;
}


/* the paths setup writes, under --prefix */
typedef struct {
    char  *conf;
    char  *state;
    char  *log;
    char  *run;
    char  *staging;
    char  *templates;
    char  *webclient;
    char  *admin;
    char  *schema;
} cctl_paths_t;


static int
cctl_exists(const char *path)
{
    return access(path, F_OK) == 0;
}


static char *
cctl_path(const char *a, const char *b, const char *c)
{
    char  *ab, *abc;

    ab = cctl_join(a, b);
    if (ab == NULL || c == NULL) {
        return ab;
    }

    abc = cctl_join(ab, c);
    free(ab);

    return abc;
}


static int
cctl_paths(cctl_answers_t *a, cctl_paths_t *p)
{
    const char  *share;

    p->conf = cctl_path(a->prefix, "/etc/conclave", NULL);
    p->state = cctl_path(a->prefix, "/var/lib/conclave", NULL);
    p->log = cctl_path(a->prefix, "/var/log/conclave", NULL);
    p->run = cctl_path(a->prefix, "/run/conclave", NULL);

    share = a->share;
    if (share == NULL && (cctl_exists(CCTL_SHARE "/nginx.conf.in")
                          || CCTL_BUILD_TOP == NULL))
    {
        share = CCTL_SHARE;
    }

    if (share) {
        p->templates = strdup(share);
        p->webclient = cctl_path(share, "/webclient", NULL);
        p->admin = cctl_path(share, "/admin", NULL);
        p->schema = cctl_path(share, "/schema", NULL);

    } else {
        /* run from the build tree: make, make webclient */
        p->templates = cctl_path(CCTL_BUILD_TOP, "/packaging/conf", NULL);
        p->webclient = cctl_path(CCTL_BUILD_TOP, "/build/webclient", NULL);
        p->admin = cctl_path(CCTL_BUILD_TOP, "/admin/web", NULL);
        p->schema = cctl_path(CCTL_BUILD_TOP, "/audit/schema", NULL);
    }

    return (p->conf && p->state && p->log && p->run && p->templates
            && p->webclient && p->admin && p->schema) ? 0 : -1;
}


static int
cctl_mkdirs(const char *path, mode_t mode)
{
    char   *d, *s;
    int     rc;

    d = strdup(path);
    if (d == NULL) {
        return -1;
    }

    for (s = d + 1; *s; s++) {
        if (*s == '/') {
            *s = '\0';
            if (mkdir(d, 0755) != 0 && errno != EEXIST) {
                free(d);
                return -1;
            }
            *s = '/';
        }
    }

    rc = (mkdir(d, mode) != 0 && errno != EEXIST) ? -1 : 0;
    free(d);

    return rc;
}


static int
cctl_write(const char *dir, const char *name, const char *data, size_t len,
    mode_t mode)
{
    int     fd, rc;
    char   *path;

    path = cctl_path(dir, "/", name);
    if (path == NULL) {
        return -1;
    }

    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    free(path);

    if (fd == -1) {
        return -1;
    }

    rc = (write(fd, data, len) == (ssize_t) len && fsync(fd) == 0) ? 0 : -1;

    return (close(fd) == 0 && rc == 0) ? 0 : -1;
}


static char *
cctl_slurp(const char *path, size_t *len)
{
    long    n;
    char   *buf;
    FILE   *f;

    f = fopen(path, "r");
    if (f == NULL) {
        return NULL;
    }

    buf = NULL;

    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0
        && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc(n + 1)) != NULL)
    {
        if (fread(buf, 1, n, f) != (size_t) n) {
            free(buf);
            buf = NULL;
        } else {
            buf[n] = '\0';
            *len = n;
        }
    }

    fclose(f);

    return buf;
}


/* text with every @NAME@ of vars replaced; unknown @...@ left alone */
static char *
cctl_render(const char *tmpl, const char *const *vars, size_t nvars)
{
    char        *out, *o;
    size_t       i, n, size, nl;
    const char  *p, *e;

    size = strlen(tmpl) + 1;

    for (i = 0; i < nvars; i += 2) {
        size += strlen(vars[i + 1]) * 16;
    }

    out = malloc(size);
    if (out == NULL) {
        return NULL;
    }

    o = out;

    for (p = tmpl; *p; ) {
        if (*p == '@' && (e = strchr(p + 1, '@')) != NULL) {
            nl = e - p - 1;

            for (i = 0; i < nvars; i += 2) {
                if (strlen(vars[i]) == nl && strncmp(p + 1, vars[i], nl) == 0)
                {
                    n = strlen(vars[i + 1]);
                    if ((size_t) (o - out) + n >= size) {
                        free(out);
                        return NULL;
                    }
                    memcpy(o, vars[i + 1], n);
                    o += n;
                    p = e + 1;
                    break;
                }
            }

            if (i < nvars) {
                continue;
            }
        }

        if ((size_t) (o - out) + 1 >= size) {
            free(out);
            return NULL;
        }

        *o++ = *p++;
    }

    *o = '\0';

    return out;
}


/* argv[0] with stdout and stderr into a pipe we read; its exit status */
static int
cctl_run(char *const argv[], char *out, size_t outlen)
{
    int      fds[2], status;
    pid_t    pid;
    ssize_t  n;
    size_t   got;

    if (pipe(fds) != 0) {
        return -1;
    }

    pid = fork();
    if (pid == -1) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }

    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], argv);
        _exit(127);
    }

    close(fds[1]);
    got = 0;

    /* keep the first outlen - 1 bytes, drain the rest: a child blocked
     * on a full pipe would never exit */
    for ( ;; ) {
        char  drain[512];

        n = (got < outlen - 1) ? read(fds[0], out + got, outlen - 1 - got)
                               : read(fds[0], drain, sizeof(drain));
        if (n <= 0) {
            break;
        }

        got += (got < outlen - 1) ? (size_t) n : 0;
    }

    out[got] = '\0';
    close(fds[0]);

    if (waitpid(pid, &status, 0) != pid) {
        return -1;
    }

    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}


/* the staging directory and what it holds, removed on failure */
static void
cctl_unstage(const char *staging)
{
    DIR            *d;
    char           *p;
    struct dirent  *e;
    const char     *sub[] = { "/tls", "" };
    size_t          i;

    for (i = 0; i < 2; i++) {
        p = cctl_path(staging, sub[i], NULL);
        d = p ? opendir(p) : NULL;

        while (d && (e = readdir(d)) != NULL) {
            char  *f;

            if (e->d_name[0] == '.') {
                continue;
            }

            f = cctl_path(p, "/", e->d_name);
            if (f) {
                unlink(f);
                free(f);
            }
        }

        if (d) {
            closedir(d);
        }

        if (p) {
            rmdir(p);
            free(p);
        }
    }
}


static int
cctl_stage_tls(cctl_answers_t *a, const char *staging, char *err,
    size_t errlen)
{
    int      rc;
    char    *tls, *cert, *key, *subj, *san, out[4096];
    char    *data;
    size_t   len;

    tls = cctl_path(staging, "/tls", NULL);
    if (tls == NULL || mkdir(tls, 0700) != 0) {
        snprintf(err, errlen, "%s/tls: %s", staging, strerror(errno));
        free(tls);
        return -1;
    }

    rc = -1;
    cert = cctl_path(tls, "/cert.pem", NULL);
    key = cctl_path(tls, "/key.pem", NULL);
    subj = cctl_path("/CN=", a->domain, NULL);
    san = cctl_path("subjectAltName=DNS:", a->domain, NULL);

    if (cert == NULL || key == NULL || subj == NULL || san == NULL) {
        snprintf(err, errlen, "out of memory");

    } else if (a->self_signed && strcmp(a->self_signed, "yes") == 0) {
        char *const  argv[] = {
            "/usr/bin/openssl", "req", "-x509", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-days", "825", "-subj", subj, "-addext", san,
            "-keyout", key, "-out", cert, NULL
        };

        if (cctl_run(argv, out, sizeof(out)) != 0) {
            snprintf(err, errlen, "making a self-signed certificate "
                     "failed: %s", out);
        } else {
            rc = chmod(key, 0600);
        }

    } else {
        data = cctl_slurp(a->tls_cert, &len);
        rc = (data && cctl_write(tls, "cert.pem", data, len, 0644) == 0)
             ? 0 : -1;
        free(data);

        data = cctl_slurp(a->tls_key, &len);
        rc |= (data && cctl_write(tls, "key.pem", data, len, 0600) == 0)
              ? 0 : -1;
        free(data);

        if (rc != 0) {
            snprintf(err, errlen, "copying the certificate: %s",
                     strerror(errno));
        }
    }

    free(tls);
    free(cert);
    free(key);
    free(subj);
    free(san);

    return rc;
}


static char *
cctl_nginx_conf(cctl_answers_t *a, cctl_paths_t *p, const char *conf_dir)
{
    char         db[512], mods[1024], roles[3 * 600], *tmpl, *out;
    size_t       len, i, n;
    const char  *groups[3], *names[3] = { "admin", "compliance", "auditor" };

    groups[0] = a->admin_group;
    groups[1] = a->compliance_group;
    groups[2] = a->auditor_group;

    if (a->db_socket) {
        snprintf(db, sizeof(db), "    conclave_audit_db_socket %s;",
                 a->db_socket);
    } else {
        snprintf(db, sizeof(db), "    conclave_audit_db_host %s;\n"
                 "    conclave_audit_db_port %u;", a->db_host, a->db_port);
    }

    if (a->module) {
        snprintf(mods, sizeof(mods), "load_module /usr/lib/nginx/modules/"
                 "ngx_stream_module.so;\nload_module %s;", a->module);
    } else {
        snprintf(mods, sizeof(mods),
                 "include /etc/nginx/modules-enabled/*.conf;");
    }

    /* the console's roles: a line for each group given */
    roles[0] = '\0';

    for (i = 0; i < 3; i++) {
        if (groups[i] && groups[i][0]) {
            n = strlen(roles);
            snprintf(roles + n, sizeof(roles) - n,
                     "    conclave_admin_role_group %s \"%s\";\n",
                     names[i], groups[i]);
        }
    }

    tmpl = cctl_path(p->templates, "/nginx.conf.in", NULL);
    out = tmpl ? cctl_slurp(tmpl, &len) : NULL;
    free(tmpl);

    if (out == NULL) {
        return NULL;
    }

    {
        const char *const  vars[] = {
            "LOAD_MODULES", mods, "USER", a->user, "RUN_DIR", p->run,
            "LOG_DIR", p->log, "CONF_DIR", conf_dir, "STATE_DIR", p->state,
            "DOMAIN", a->domain, "LDAP_URI", a->ldap_uri,
            "LDAP_BIND_DN", a->ldap_bind_dn, "LDAP_BASE", a->ldap_base,
            "LDAP_FILTER", a->ldap_filter, "LDAP_GROUP", a->ldap_group,
            "DB_LINES", db, "DB_USER", a->db_user, "DB_NAME", a->db_name,
            "HTTPS_LISTEN", a->https_listen,
            "XMPP_LISTEN", a->xmpp_listen, "XMPPS_LISTEN", a->xmpps_listen,
            "WEBCLIENT_DIR", p->webclient, "ADMIN_DIR", p->admin,
            "ADMIN_LINES", roles
        };
        char  *r;

        r = cctl_render(out, vars, sizeof(vars) / sizeof(vars[0]));
        free(out);

        return r;
    }
}


/* a file for staging: from conf (kept, for "nginx -t" only) or new */
static int
cctl_stage_copy(const char *from_dir, const char *name, const char *staging,
    mode_t mode)
{
    int      rc;
    char    *path, *data;
    size_t   len;

    path = cctl_path(from_dir, "/", name);
    data = path ? cctl_slurp(path, &len) : NULL;
    free(path);

    rc = data ? cctl_write(staging, name, data, len, mode) : -1;
    free(data);

    return rc;
}


/* conclave-config.js of the web client, with the domain answered */
static int
cctl_stage_webconfig(cctl_answers_t *a, cctl_paths_t *p, const char *staging)
{
    int          rc;
    char        *path, *data, *out, *hit;
    size_t       len, n;
    const char   old[] = "domain: \"example.com\"";

    path = cctl_path(p->webclient, "/conclave-config.js", NULL);
    data = path ? cctl_slurp(path, &len) : NULL;
    free(path);

    if (data == NULL) {
        return -1;
    }

    out = malloc(len + strlen(a->domain) + 1);
    hit = strstr(data, old);

    if (out == NULL) {
        free(data);
        return -1;
    }

    if (hit) {
        /* the shipped file says: domain: "example.com", */
        n = hit - data;
        memcpy(out, data, n);
        n += sprintf(out + n, "domain: \"%s\"", a->domain);
        strcpy(out + n, hit + sizeof(old) - 1);
    } else {
        strcpy(out, data);
    }

    free(data);
    rc = cctl_write(staging, "conclave-config.js", out, strlen(out), 0644);
    free(out);

    return rc;
}


/* the signing key (kept if it exists) and its verifier key, printed */
static int
cctl_stage_key(cctl_answers_t *a, cctl_paths_t *p, const char *staging,
    int *new_key, char *err, size_t errlen)
{
    int             rc;
    char           *key, *origin, vkey[CAUD_VKEY_MAX + 1];
    caud_signer_t  *s;

    key = cctl_path(p->conf, "/audit.key", NULL);
    *new_key = key && !cctl_exists(key);
    free(key);

    if (*new_key) {
        key = cctl_path(staging, "/audit.key", NULL);
        if (key == NULL || caud_key_generate(key, err, errlen) != 0) {
            free(key);
            return -1;
        }

    } else {
        if (cctl_stage_copy(p->conf, "audit.key", staging, 0600) != 0) {
            snprintf(err, errlen, "%s/audit.key: %s", p->conf,
                     strerror(errno));
            return -1;
        }
        key = cctl_path(staging, "/audit.key", NULL);
    }

    origin = cctl_path(a->domain, "/audit/local", NULL);
    s = (key && origin) ? caud_signer_load(key, origin, err, errlen) : NULL;
    free(key);
    free(origin);

    if (s == NULL || caud_signer_vkey(s, vkey, sizeof(vkey) - 1) != 0) {
        caud_signer_free(s);
        return -1;
    }

    caud_signer_free(s);
    strcat(vkey, "\n");
    rc = cctl_write(staging, "audit.vkey", vkey, strlen(vkey), 0644);
    printf("checkpoint verifier key (give it to your auditors): %s", vkey);

    return rc;
}


static int
cctl_stage(cctl_answers_t *a, cctl_paths_t *p, int *new_key, char *err,
    size_t errlen)
{
    char    *conf, out[4096];
    size_t   i;
    const char  *keep[] = { "hardening.conf", "stream-hardening.conf" };

    if (cctl_write(p->staging, "ldap.secret", a->ldap_password,
                   strlen(a->ldap_password), 0600) != 0
        || cctl_write(p->staging, "db.secret", a->db_password,
                      strlen(a->db_password), 0600) != 0)
    {
        snprintf(err, errlen, "writing secrets: %s", strerror(errno));
        return -1;
    }

    for (i = 0; i < 2; i++) {
        if (cctl_stage_copy(p->conf, keep[i], p->staging, 0644) != 0
            && cctl_stage_copy(p->templates, keep[i], p->staging, 0644) != 0)
        {
            snprintf(err, errlen, "%s/%s: %s", p->templates, keep[i],
                     strerror(errno));
            return -1;
        }
    }

    if (cctl_stage_webconfig(a, p, p->staging) != 0) {
        snprintf(err, errlen, "%s/conclave-config.js: %s", p->webclient,
                 strerror(errno));
        return -1;
    }

    if (cctl_stage_tls(a, p->staging, err, errlen) != 0
        || cctl_stage_key(a, p, p->staging, new_key, err, errlen) != 0)
    {
        return -1;
    }

    /* once as it will be, once pointing at staging for "nginx -t" */
    conf = cctl_nginx_conf(a, p, p->conf);
    if (conf == NULL
        || cctl_write(p->staging, "nginx.conf", conf, strlen(conf), 0644))
    {
        free(conf);
        snprintf(err, errlen, "rendering %s/nginx.conf.in failed",
                 p->templates);
        return -1;
    }

    free(conf);

    if (a->no_nginx_test || !cctl_exists(a->nginx)) {
        return 0;
    }

    conf = cctl_nginx_conf(a, p, p->staging);
    if (conf == NULL
        || cctl_write(p->staging, "nginx.test", conf, strlen(conf), 0644))
    {
        free(conf);
        return -1;
    }

    free(conf);
    conf = cctl_path(p->staging, "/nginx.test", NULL);

    {
        char *const  argv[] = { a->nginx, "-t", "-q", "-c", conf, NULL };

        if (conf == NULL || cctl_run(argv, out, sizeof(out)) != 0) {
            snprintf(err, errlen, "nginx -t refused the configuration:\n%s",
                     out);
            unlink(conf);
            free(conf);
            return -1;
        }
    }

    unlink(conf);
    free(conf);

    return 0;
}


/* rename one staged file into the configuration directory */
static int
cctl_commit_one(cctl_paths_t *p, const char *name, int keep_old)
{
    int    rc;
    char  *from, *to, *bak;

    from = cctl_path(p->staging, "/", name);
    to = cctl_path(p->conf, "/", name);
    rc = -1;

    if (from && to) {
        if (keep_old && cctl_exists(to)) {
            unlink(from);
            rc = 0;

        } else {
            rc = 0;

            if (strcmp(name, "nginx.conf") == 0 && cctl_exists(to)) {
                /* the previous one stays as nginx.conf.bak */
                bak = cctl_path(to, ".bak", NULL);
                rc = -1;

                if (bak && (unlink(bak) == 0 || errno == ENOENT)) {
                    rc = link(to, bak);
                }

                free(bak);
            }

            rc = (rc == 0) ? rename(from, to) : -1;
        }
    }

    free(from);
    free(to);

    return rc;
}


/*
 * Everything checked and staged: rename into place.  A rename within
 * one file system is atomic, nginx.conf goes last, and the key, the
 * conffiles and the web client settings an admin may have edited are
 * never replaced.
 */
static int
cctl_commit(cctl_paths_t *p, int new_key)
{
    size_t       i;
    const char  *files[] = {
        "ldap.secret", "db.secret", "tls/cert.pem", "tls/key.pem",
        "audit.vkey", "nginx.conf"
    };
    const char  *kept[] = {
        "hardening.conf", "stream-hardening.conf", "conclave-config.js",
        "audit.key"
    };
    char        *tls;

    tls = cctl_path(p->conf, "/tls", NULL);
    if (tls == NULL || cctl_mkdirs(tls, 0700) != 0) {
        free(tls);
        return -1;
    }

    free(tls);

    for (i = 0; i < 4; i++) {
        if (cctl_commit_one(p, kept[i], i < 3 || !new_key) != 0) {
            return -1;
        }
    }

    for (i = 0; i < 6; i++) {
        if (cctl_commit_one(p, files[i], 0) != 0) {
            return -1;
        }
    }

    cctl_unstage(p->staging);

    return 0;
}


/* state directories, owned by the workers' user when we are root */
static int
cctl_state_dirs(cctl_answers_t *a, cctl_paths_t *p)
{
    size_t          i;
    char           *d[4];
    struct passwd  *pw;

    d[0] = cctl_path(p->state, "/audit", NULL);
    d[1] = cctl_path(p->state, "/tmp", NULL);
    d[2] = strdup(p->log);
    d[3] = strdup(p->run);

    pw = (geteuid() == 0) ? getpwnam(a->user) : NULL;

    for (i = 0; i < 4; i++) {
        if (d[i] == NULL || cctl_mkdirs(d[i], 0750) != 0) {
            return cctl_setup_fail("%s: %s", d[i] ? d[i] : "", strerror(errno));
        }

        if (pw && i < 3 && chown(d[i], pw->pw_uid, pw->pw_gid) != 0) {
            return cctl_setup_fail("chown %s: %s", d[i], strerror(errno));
        }

        free(d[i]);
    }

    if (pw && chown(p->state, pw->pw_uid, pw->pw_gid) != 0) {
        return cctl_setup_fail("chown %s: %s", p->state, strerror(errno));
    }

    return CCTL_OK;
}


/*
 * Everything answered and checked: stage, test, migrate, commit.
 * Nothing lands in the configuration directory unless all of it does.
 */
int
cctl_setup_install(cctl_answers_t *ap)
{
    int              rc, new_key;
    char             err[8192];
    caud_db_opts_t   db;
    cctl_answers_t   a;
    cctl_paths_t     p;

    a = *ap;
    memset(&p, 0, sizeof(p));

    if (cctl_paths(&a, &p) != 0 || cctl_mkdirs(p.conf, 0755) != 0) {
        return cctl_setup_fail("%s: %s", p.conf ? p.conf : "paths",
                               strerror(errno));
    }

    rc = cctl_state_dirs(&a, &p);
    if (rc != CCTL_OK) {
        return rc;
    }

    p.staging = cctl_path(p.conf, "/.setup-XXXXXX", NULL);
    if (p.staging == NULL || mkdtemp(p.staging) == NULL) {
        return cctl_setup_fail("staging in %s: %s", p.conf, strerror(errno));
    }

    err[0] = '\0';

    if (cctl_stage(&a, &p, &new_key, err, sizeof(err)) != 0) {
        cctl_unstage(p.staging);
        return cctl_setup_fail("%s; nothing was written", err[0] ? err
                               : strerror(errno));
    }

    /* the schema before the configuration that needs it */
    cctl_db_opts(&a, &db);

    if (caud_db_migrate(&db, p.schema, stdout, err, sizeof(err)) < 0) {
        cctl_unstage(p.staging);
        return cctl_setup_fail("schema migration failed: %s; nothing was "
                               "written", err);
    }

    if (cctl_commit(&p, new_key) != 0) {
        return cctl_setup_fail("installing the files in %s failed: %s",
                               p.conf, strerror(errno));
    }

    printf("configured %s for %s%s\n", p.conf, a.domain,
           new_key ? "; created the checkpoint signing key audit.key" : "");
    printf("start it with: systemctl start conclave (or "
           "/usr/lib/conclave/conclave-nginx start)\n");

    return CCTL_OK;
}


/*
 * backup-schema: the audit database's table definitions and its
 * schema_version rows, as SQL, before a package upgrade migrates it
 * (COMPLIANCE.md 7.5).  The records themselves are MariaDB's backup's
 * business (docs/operations.md).
 */
int
cctl_backup_schema(cctl_conf_t *cf, const char *dir)
{
    int          rc;
    char         err[512], path[4096], tmp[4200], stamp[32], q[400];
    FILE        *f;
    MYSQL       *m;
    time_t       now;
    MYSQL_ROW    row, crow;
    MYSQL_RES   *res, *cres;
    struct tm    tm;

    if (cctl_conf_db(cf, err, sizeof(err)) != 0) {
        return cctl_setup_fail("%s", err);
    }

    m = caud_db_connect(&cf->db, err, sizeof(err));
    if (m == NULL) {
        fprintf(stderr, "conclavectl: %s\n", err);
        return CCTL_ERROR;
    }

    if (cctl_mkdirs(dir, 0700) != 0) {
        mysql_close(m);
        fprintf(stderr, "conclavectl: %s: %s\n", dir, strerror(errno));
        return CCTL_ERROR;
    }

    now = time(NULL);
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
    snprintf(path, sizeof(path), "%s/schema-%s.sql", dir, stamp);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);

    f = NULL;
    rc = CCTL_FINDINGS;
    res = NULL;

    if (mysql_query(m, "SHOW FULL TABLES WHERE Table_type = 'BASE TABLE'")
        || (res = mysql_store_result(m)) == NULL
        || (f = fopen(tmp, "w")) == NULL)
    {
        fprintf(stderr, "conclavectl: backup-schema: %s\n",
                f == NULL && res ? strerror(errno) : mysql_error(m));
        goto done;
    }

    fchmod(fileno(f), 0600);
    fprintf(f, "-- Conclave audit schema of database %s, %s\n",
            cf->db_name, stamp);

    while ((row = mysql_fetch_row(res)) != NULL) {
        snprintf(q, sizeof(q), "SHOW CREATE TABLE `%s`", row[0]);

        if (mysql_query(m, q) || (cres = mysql_store_result(m)) == NULL) {
            fprintf(stderr, "conclavectl: backup-schema: %s\n",
                    mysql_error(m));
            goto done;
        }

        crow = mysql_fetch_row(cres);
        if (crow && crow[1]) {
            fprintf(f, "\n%s;\n", crow[1]);
        }

        mysql_free_result(cres);
    }

    if (mysql_query(m, "SELECT version, name, applied_at FROM schema_version "
                    "ORDER BY version") == 0
        && (cres = mysql_store_result(m)) != NULL)
    {
        fprintf(f, "\n");
        while ((crow = mysql_fetch_row(cres)) != NULL) {
            fprintf(f, "-- schema_version %s %s applied %s\n", crow[0],
                    crow[1] ? crow[1] : "", crow[2] ? crow[2] : "");
        }
        mysql_free_result(cres);
    }

    if (fflush(f) != 0 || fsync(fileno(f)) != 0 || rename(tmp, path) != 0) {
        fprintf(stderr, "conclavectl: %s: %s\n", path, strerror(errno));
        goto done;
    }

    printf("schema backed up to %s\n", path);
    rc = CCTL_OK;

done:

    if (f) {
        fclose(f);
        if (rc != CCTL_OK) {
            unlink(tmp);
        }
    }

    if (res) {
        mysql_free_result(res);
    }

    mysql_close(m);

    return rc;
}
