
/*
 * conclavectl's view of nginx.conf: the same files nginx reads, tokens
 * as ngx_conf_read_token() makes them (quotes, the escapes \" \' \\ \t
 * \r \n, '#' comments, ';' '{' '}'), "include" with glob patterns, and
 * the http-level conclave_* directives the audit pipeline uses, with
 * the module's defaults.  Other directives are skipped unread, so the
 * module can grow without conclavectl knowing.
 *
 * Relative paths in "include", conclave_audit_key and
 * conclave_audit_db_password_file are taken from the main file's
 * directory, as nginx's conf prefix does.
 */


#define _GNU_SOURCE

#include <errno.h>
#include <glob.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cctl.h"


#define CCTL_ARGS_MAX     8
#define CCTL_DEPTH_MAX    32        /* blocks and includes */
#define CCTL_FILE_MAX     (16 * 1024 * 1024)
#define CCTL_FILES_MAX    1024
#define CCTL_PASSWORD_MAX 1024


typedef struct {
    const char  *name;
    const char  *p;
    const char  *end;
    unsigned     line;
} cctl_file_t;


typedef struct {
    cctl_conf_t  *cf;
    char         *err;
    size_t        errlen;
    unsigned      files;
    unsigned      depth;
    char         *ctx[CCTL_DEPTH_MAX];    /* enclosing block names */
    unsigned      nctx;
    char         *args[CCTL_ARGS_MAX];
    unsigned      nargs;
    unsigned      extra;                  /* words past args[] */
    unsigned      line;                   /* of the directive */
} cctl_parse_t;


enum {
    CCTL_TOK_STMT = 0,       /* args, then ';' */
    CCTL_TOK_BLOCK,          /* args, then '{' */
    CCTL_TOK_END,            /* '}' */
    CCTL_TOK_EOF,
    CCTL_TOK_ERROR
};


typedef enum {
    CCTL_STR = 0,
    CCTL_PATH,               /* a string resolved against the prefix */
    CCTL_MSEC,
    CCTL_NUM,
    CCTL_FSYNC
} cctl_type_e;


typedef struct {
    const char   *name;
    cctl_type_e   type;
    size_t        off;
} cctl_directive_t;


#define CCTL_OFF(f)  offsetof(cctl_conf_t, f)

static const cctl_directive_t  cctl_directives[] = {
    { "conclave_domain", CCTL_STR, CCTL_OFF(domain) },
    { "conclave_audit_dir", CCTL_STR, CCTL_OFF(audit_dir) },
    { "conclave_audit_node", CCTL_STR, CCTL_OFF(audit_node) },
    { "conclave_audit_key", CCTL_PATH, CCTL_OFF(audit_key) },
    { "conclave_audit_fsync", CCTL_FSYNC, CCTL_OFF(audit_fsync) },
    { "conclave_audit_fsync_interval", CCTL_MSEC,
      CCTL_OFF(audit_fsync_interval) },
    { "conclave_audit_checkpoint_records", CCTL_NUM,
      CCTL_OFF(audit_checkpoint_records) },
    { "conclave_audit_checkpoint_interval", CCTL_MSEC,
      CCTL_OFF(audit_checkpoint_interval) },
    { "conclave_audit_db_host", CCTL_STR, CCTL_OFF(db_host) },
    { "conclave_audit_db_port", CCTL_NUM, CCTL_OFF(db_port) },
    { "conclave_audit_db_socket", CCTL_STR, CCTL_OFF(db_socket) },
    { "conclave_audit_db_user", CCTL_STR, CCTL_OFF(db_user) },
    { "conclave_audit_db_password", CCTL_STR, CCTL_OFF(db_password) },
    { "conclave_audit_db_password_file", CCTL_PATH,
      CCTL_OFF(db_password_file) },
    { "conclave_audit_db_name", CCTL_STR, CCTL_OFF(db_name) },
    { "conclave_audit_db_timeout", CCTL_MSEC, CCTL_OFF(db_timeout) },
    { "conclave_audit_ship_batch", CCTL_NUM, CCTL_OFF(ship_batch) },
    { NULL, 0, 0 }
};


#define CCTL_UNSET  UINT64_MAX


static int cctl_parse_file(cctl_parse_t *ps, const char *path);


static int
cctl_errf(cctl_parse_t *ps, const char *file, const char *fmt, ...)
{
    int      n;
    va_list  ap;

    n = 0;
    if (file) {
        n = snprintf(ps->err, ps->errlen, "%s:%u: ", file, ps->line);
        if (n < 0 || (size_t) n >= ps->errlen) {
            return -1;
        }
    }

    va_start(ap, fmt);
    vsnprintf(ps->err + n, ps->errlen - n, fmt, ap);
    va_end(ap);

    return -1;
}


/* an absolute path, or one relative to the main file's directory */
static char *
cctl_full_name(const cctl_conf_t *cf, const char *name)
{
    char  *s;

    if (name[0] == '/') {
        return strdup(name);
    }

    if (asprintf(&s, "%s/%s", cf->prefix, name) < 0) {
        return NULL;
    }

    return s;
}


/* ------------------------------------------------------------------ */
/* tokens */


static void
cctl_args_free(cctl_parse_t *ps)
{
    unsigned  i;

    for (i = 0; i < ps->nargs; i++) {
        free(ps->args[i]);
    }

    ps->nargs = 0;
    ps->extra = 0;
}


/* the word s..e, unescaped the way nginx does it */
static int
cctl_word(cctl_parse_t *ps, const char *s, const char *e)
{
    char  *w, *d;

    /* only the first words are kept: ours take one argument, and
     * others' (log_format ...) may take many */
    if (ps->nargs == CCTL_ARGS_MAX) {
        ps->extra++;
        return 0;
    }

    w = malloc(e - s + 1);
    if (w == NULL) {
        return -1;
    }

    for (d = w; s < e; ) {
        if (*s == '\\' && s + 1 < e) {
            switch (s[1]) {
            case '"':
            case '\'':
            case '\\':
                s++;
                break;
            case 't':
                *d++ = '\t';
                s += 2;
                continue;
            case 'r':
                *d++ = '\r';
                s += 2;
                continue;
            case 'n':
                *d++ = '\n';
                s += 2;
                continue;
            }
        }

        *d++ = *s++;
    }

    *d = '\0';
    ps->args[ps->nargs++] = w;

    return 0;
}


/* a quoted word; it must be followed by a space, ';' or '{' */
static int
cctl_token_quoted(cctl_parse_t *ps, cctl_file_t *f)
{
    char         q;
    const char  *s;

    q = *f->p++;
    s = f->p;

    while (f->p < f->end && *f->p != q) {
        if (*f->p == '\\' && f->p + 1 < f->end) {
            f->line += (f->p[1] == '\n');
            f->p++;
        }
        f->line += (*f->p++ == '\n');
    }

    if (f->p == f->end) {
        return cctl_errf(ps, f->name, "unexpected end of file in a quoted "
                         "string");
    }

    if (cctl_word(ps, s, f->p++) != 0) {
        return cctl_errf(ps, NULL, "out of memory");
    }

    if (f->p < f->end && *f->p != ' ' && *f->p != '\t' && *f->p != '\r'
        && *f->p != '\n' && *f->p != ';' && *f->p != '{')
    {
        return cctl_errf(ps, f->name, "unexpected \"%c\"", *f->p);
    }

    return 0;
}


/* a plain word: up to a space, ';' or '{' ('}' is part of it) */
static int
cctl_token_word(cctl_parse_t *ps, cctl_file_t *f)
{
    const char  *s;

    s = f->p;

    while (f->p < f->end && *f->p != ' ' && *f->p != '\t'
           && *f->p != '\r' && *f->p != '\n' && *f->p != ';'
           && *f->p != '{')
    {
        if (*f->p == '\\' && f->p + 1 < f->end) {
            f->p++;
        }
        f->p++;
    }

    if (cctl_word(ps, s, f->p) != 0) {
        return cctl_errf(ps, NULL, "out of memory");
    }

    return 0;
}


/*
 * The next directive's words, and what ends it.  Mirrors nginx: a
 * quoted word must be followed by a space, ';' or '{'; '}' and ';'
 * cannot come right after nothing.
 */
static int
cctl_token(cctl_parse_t *ps, cctl_file_t *f)
{
    cctl_args_free(ps);

    for ( ;; ) {
        while (f->p < f->end
               && (*f->p == ' ' || *f->p == '\t' || *f->p == '\r'
                   || *f->p == '\n'))
        {
            f->line += (*f->p++ == '\n');
        }

        if (ps->nargs == 0) {
            ps->line = f->line;
        }

        if (f->p == f->end) {
            if (ps->nargs) {
                cctl_errf(ps, f->name, "unexpected end of file, expecting "
                          "\";\" or \"}\"");
                return CCTL_TOK_ERROR;
            }
            return CCTL_TOK_EOF;
        }

        switch (*f->p) {

        case '#':
            while (f->p < f->end && *f->p != '\n') {
                f->p++;
            }
            continue;

        case ';':
        case '{':
            if (ps->nargs == 0) {
                cctl_errf(ps, f->name, "unexpected \"%c\"", *f->p);
                return CCTL_TOK_ERROR;
            }
            return *f->p++ == ';' ? CCTL_TOK_STMT : CCTL_TOK_BLOCK;

        case '}':
            if (ps->nargs) {
                cctl_errf(ps, f->name, "unexpected \"}\"");
                return CCTL_TOK_ERROR;
            }
            f->p++;
            return CCTL_TOK_END;

        case '"':
        case '\'':
            if (cctl_token_quoted(ps, f) != 0) {
                return CCTL_TOK_ERROR;
            }
            continue;

        default:
            if (cctl_token_word(ps, f) != 0) {
                return CCTL_TOK_ERROR;
            }
        }
    }
}


/* ------------------------------------------------------------------ */
/* values */


/*
 * ngx_parse_time() with is_sec = 0: "1y 1M 1w 1d 1h 1m 1s 1ms" in that
 * order, each at most once, spaces allowed; a bare number is in ms.
 */
int
cctl_parse_msec(const char *s, uint64_t *ms)
{
    int          step, st;
    uint64_t     v, total, mul;
    const char  *p;
    static const uint64_t  unit[] = {
        365ULL * 86400000, 30ULL * 86400000, 7ULL * 86400000, 86400000,
        3600000, 60000, 1000, 1
    };

    total = 0;
    step = -1;
    p = s;

    while (*p) {
        while (*p == ' ') {
            p++;
        }

        if (*p < '0' || *p > '9') {
            return -1;
        }

        for (v = 0; *p >= '0' && *p <= '9'; p++) {
            if (v > (UINT64_MAX / 10) - 10) {
                return -1;
            }
            v = v * 10 + (*p - '0');
        }

        switch (*p) {
        case 'y': st = 0; p++; break;
        case 'M': st = 1; p++; break;
        case 'w': st = 2; p++; break;
        case 'd': st = 3; p++; break;
        case 'h': st = 4; p++; break;
        case 'm':
            if (p[1] == 's') {
                st = 7;
                p += 2;
            } else {
                st = 5;
                p++;
            }
            break;
        case 's': st = 6; p++; break;
        case ' ':
        case '\0': st = 7; break;
        default:
            return -1;
        }

        if (st <= step) {
            return -1;
        }

        step = st;
        mul = unit[st];

        if (v > (UINT64_MAX - total) / mul) {
            return -1;
        }

        total += v * mul;
    }

    if (step < 0) {
        return -1;
    }

    *ms = total;

    return 0;
}


static int
cctl_parse_num(const char *s, uint64_t *n)
{
    char  *end;

    if (*s < '0' || *s > '9') {
        return -1;
    }

    errno = 0;
    *n = strtoull(s, &end, 10);

    return (errno || *end) ? -1 : 0;
}


/* stores the directive's argument in field, as d's type says */
static int
cctl_directive_set(cctl_parse_t *ps, const char *file,
    const cctl_directive_t *d, void *field)
{
    char      *v, **sp;
    uint64_t   n, *np;

    sp = field;
    np = field;
    v = ps->args[1];

    switch (d->type) {

    case CCTL_STR:
    case CCTL_PATH:
        *sp = d->type == CCTL_PATH ? cctl_full_name(ps->cf, v) : strdup(v);
        if (*sp == NULL) {
            return cctl_errf(ps, NULL, "out of memory");
        }
        return 0;

    case CCTL_FSYNC:
        if (strcmp(v, "always") == 0) {
            *(int *) field = CCTL_FSYNC_ALWAYS;
        } else if (strcmp(v, "interval") == 0) {
            *(int *) field = CCTL_FSYNC_INTERVAL;
        } else if (strcmp(v, "off") == 0) {
            *(int *) field = CCTL_FSYNC_OFF;
        } else {
            return cctl_errf(ps, file, "\"%s\" must be \"always\", "
                             "\"interval\" or \"off\"", d->name);
        }
        return 0;

    case CCTL_MSEC:
        if (cctl_parse_msec(v, &n) != 0) {
            return cctl_errf(ps, file, "\"%s\" directive invalid value",
                             d->name);
        }
        *np = n;
        return 0;

    default:
        if (cctl_parse_num(v, &n) != 0) {
            return cctl_errf(ps, file, "\"%s\" directive invalid number",
                             d->name);
        }
        *np = n;
        return 0;
    }
}


static int
cctl_directive(cctl_parse_t *ps, const char *file)
{
    void                    *field;
    const char              *name;
    const cctl_directive_t  *d;

    name = ps->args[0];

    for (d = cctl_directives; d->name; d++) {
        if (strcmp(d->name, name) == 0) {
            break;
        }
    }

    if (d->name == NULL) {
        return 0;
    }

    if (ps->nargs != 2 || ps->extra) {
        return cctl_errf(ps, file, "invalid number of arguments in \"%s\" "
                         "directive", name);
    }

    field = (char *) ps->cf + d->off;

    /* the module keeps both password directives in one slot */
    if ((d->type == CCTL_STR || d->type == CCTL_PATH)
        ? *(char **) field != NULL
        : d->type == CCTL_FSYNC ? *(int *) field != -1
        : *(uint64_t *) field != CCTL_UNSET)
    {
        return cctl_errf(ps, file, "\"%s\" directive is duplicate", name);
    }

    if ((strcmp(name, "conclave_audit_db_password") == 0
         && ps->cf->db_password_file)
        || (strcmp(name, "conclave_audit_db_password_file") == 0
            && ps->cf->db_password))
    {
        return cctl_errf(ps, file, "\"%s\" directive is duplicate", name);
    }

    return cctl_directive_set(ps, file, d, field);
}


/* ------------------------------------------------------------------ */
/* files, blocks and includes */


static int
cctl_include(cctl_parse_t *ps, const char *file)
{
    int      rc;
    char    *pattern;
    size_t   i;
    glob_t   g;

    if (ps->nargs != 2 || ps->extra) {
        return cctl_errf(ps, file, "invalid number of arguments in "
                         "\"include\" directive");
    }

    pattern = cctl_full_name(ps->cf, ps->args[1]);
    if (pattern == NULL) {
        return cctl_errf(ps, NULL, "out of memory");
    }

    /* nginx: a pattern that matches nothing is fine, a plain name that
     * does not exist is not */
    rc = glob(pattern, GLOB_ERR, NULL, &g);

    if (rc == GLOB_NOMATCH && strpbrk(ps->args[1], "*?[") != NULL) {
        free(pattern);
        return 0;
    }

    if (rc != 0) {
        cctl_errf(ps, file, "include \"%s\": %s", pattern,
                  rc == GLOB_NOMATCH ? strerror(ENOENT)
                                     : "cannot read the directory");
        free(pattern);
        return -1;
    }

    free(pattern);
    rc = 0;

    for (i = 0; i < g.gl_pathc && rc == 0; i++) {
        rc = cctl_parse_file(ps, g.gl_pathv[i]);
    }

    globfree(&g);

    return rc;
}


/* the directives up to the end of the block (or of the file, base) */
static int
cctl_parse_block(cctl_parse_t *ps, cctl_file_t *f, int base)
{
    int   rc;

    for ( ;; ) {
        rc = cctl_token(ps, f);

        switch (rc) {

        case CCTL_TOK_ERROR:
            return -1;

        case CCTL_TOK_EOF:
            if (!base) {
                return cctl_errf(ps, f->name, "unexpected end of file, "
                                 "expecting \"}\"");
            }
            return 0;

        case CCTL_TOK_END:
            if (base) {
                return cctl_errf(ps, f->name, "unexpected \"}\"");
            }
            return 0;

        case CCTL_TOK_BLOCK:
            if (ps->nctx == CCTL_DEPTH_MAX) {
                return cctl_errf(ps, f->name, "blocks nested too deep");
            }

            ps->ctx[ps->nctx] = strdup(ps->args[0]);
            if (ps->ctx[ps->nctx] == NULL) {
                return cctl_errf(ps, NULL, "out of memory");
            }

            ps->nctx++;
            rc = cctl_parse_block(ps, f, 0);
            free(ps->ctx[--ps->nctx]);

            if (rc != 0) {
                return -1;
            }
            continue;

        default:
            if (strcmp(ps->args[0], "include") == 0) {
                if (cctl_include(ps, f->name) != 0) {
                    return -1;
                }
                continue;
            }

            /* http{} itself, not server{} or location{} inside it */
            if (ps->nctx == 1 && strcmp(ps->ctx[0], "http") == 0
                && strncmp(ps->args[0], "conclave_", 9) == 0
                && cctl_directive(ps, f->name) != 0)
            {
                return -1;
            }
        }
    }
}


static int
cctl_parse_file(cctl_parse_t *ps, const char *path)
{
    int           rc;
    char         *data;
    long          n;
    FILE         *fp;
    cctl_file_t   f;

    if (++ps->files > CCTL_FILES_MAX || ps->depth >= CCTL_DEPTH_MAX) {
        return cctl_errf(ps, NULL, "%s: too many or too deeply nested "
                         "includes", path);
    }

    fp = fopen(path, "r");
    if (fp == NULL) {
        return cctl_errf(ps, NULL, "%s: %s", path, strerror(errno));
    }

    data = NULL;
    if (fseek(fp, 0, SEEK_END) != 0 || (n = ftell(fp)) < 0
        || n > CCTL_FILE_MAX || fseek(fp, 0, SEEK_SET) != 0
        || (data = malloc(n + 1)) == NULL
        || fread(data, 1, n, fp) != (size_t) n)
    {
        cctl_errf(ps, NULL, "%s: %s", path,
                  errno ? strerror(errno) : "cannot read it");
        fclose(fp);
        free(data);
        return -1;
    }

    fclose(fp);

    f.name = path;
    f.p = data;
    f.end = data + n;
    f.line = 1;

    ps->depth++;
    rc = cctl_parse_block(ps, &f, 1);
    ps->depth--;

    cctl_args_free(ps);
    free(data);

    return rc;
}


static int
cctl_conf_defaults(cctl_conf_t *cf, char *err, size_t errlen)
{
    size_t  i;
    struct {
        char        **field;
        const char   *value;
    } str[] = {
        { &cf->audit_dir, "/var/lib/conclave/audit" },
        { &cf->audit_node, "local" },
        { &cf->audit_key, "/etc/conclave/audit.key" },
        { &cf->db_user, "conclave" },
        { &cf->db_name, "conclave" },
    };

    if (cf->domain == NULL || cf->domain[0] == '\0') {
        snprintf(err, errlen, "%s: no \"conclave_domain\" in the http "
                 "block", cf->path);
        return -1;
    }

    for (i = 0; i < sizeof(str) / sizeof(str[0]); i++) {
        if (*str[i].field == NULL) {
            *str[i].field = strdup(str[i].value);
            if (*str[i].field == NULL) {
                goto nomem;
            }
        }
    }

    if (cf->db_host == NULL && cf->db_socket == NULL) {
        cf->db_host = strdup("127.0.0.1");
        if (cf->db_host == NULL) {
            goto nomem;
        }
    }

#define CCTL_DEFAULT(f, v)  if (cf->f == CCTL_UNSET) { cf->f = (v); }

    CCTL_DEFAULT(audit_fsync_interval, 1000);
    CCTL_DEFAULT(audit_checkpoint_records, 10000);
    CCTL_DEFAULT(audit_checkpoint_interval, 15 * 60 * 1000);
    CCTL_DEFAULT(db_port, 3306);
    CCTL_DEFAULT(db_timeout, 5000);
    CCTL_DEFAULT(ship_batch, 1000);

    if (cf->audit_fsync == -1) {
        cf->audit_fsync = CCTL_FSYNC_ALWAYS;
    }

    if (cf->db_port == 0 || cf->db_port > 65535 || cf->ship_batch == 0
        || cf->audit_checkpoint_records == 0)
    {
        snprintf(err, errlen, "%s: conclave_audit_db_port, "
                 "conclave_audit_ship_batch and "
                 "conclave_audit_checkpoint_records must be positive "
                 "(and the port below 65536)", cf->path);
        return -1;
    }

    if (asprintf(&cf->origin_prefix, "%s/audit/%s", cf->domain,
                 cf->audit_node) < 0)
    {
        cf->origin_prefix = NULL;
        goto nomem;
    }

    return 0;

nomem:

    snprintf(err, errlen, "out of memory");
    return -1;
}


/*
 * Reads path (and what it includes) into cf.  Errors are one line,
 * "<file>:<line>: <what>", as nginx -t would say them.
 */
int
cctl_conf_load(const char *path, cctl_conf_t *cf, char *err, size_t errlen)
{
    int           rc;
    char         *dir;
    cctl_parse_t  ps;

    memset(cf, 0, sizeof(cctl_conf_t));
    cf->audit_fsync = -1;
    cf->audit_fsync_interval = CCTL_UNSET;
    cf->audit_checkpoint_records = CCTL_UNSET;
    cf->audit_checkpoint_interval = CCTL_UNSET;
    cf->db_port = CCTL_UNSET;
    cf->db_timeout = CCTL_UNSET;
    cf->ship_batch = CCTL_UNSET;

    cf->path = strdup(path);
    dir = strdup(path);
    if (cf->path == NULL || dir == NULL) {
        free(dir);
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    cf->prefix = strdup(dirname(dir));
    free(dir);
    if (cf->prefix == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    memset(&ps, 0, sizeof(cctl_parse_t));
    ps.cf = cf;
    ps.err = err;
    ps.errlen = errlen;

    rc = cctl_parse_file(&ps, path);

    while (ps.nctx) {
        free(ps.ctx[--ps.nctx]);
    }

    cctl_args_free(&ps);

    if (rc != 0) {
        return -1;
    }

    return cctl_conf_defaults(cf, err, errlen);
}


/* the password file is read only when a command needs MariaDB */
static int
cctl_read_password(cctl_conf_t *cf, char *err, size_t errlen)
{
    FILE    *fp;
    size_t   n;
    char     buf[CCTL_PASSWORD_MAX];

    fp = fopen(cf->db_password_file, "r");
    if (fp == NULL) {
        snprintf(err, errlen, "conclave_audit_db_password_file %s: %s",
                 cf->db_password_file, strerror(errno));
        return -1;
    }

    n = fread(buf, 1, sizeof(buf), fp);
    fclose(fp);

    if (n == sizeof(buf)) {
        snprintf(err, errlen, "conclave_audit_db_password_file %s: too "
                 "long", cf->db_password_file);
        return -1;
    }

    /* one line; the newline is not part of the password */
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) {
        n--;
    }

    cf->password_buf = strndup(buf, n);
    explicit_bzero(buf, sizeof(buf));

    if (cf->password_buf == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    return 0;
}


/* cf->db from the directives, as the module builds its shipper's */
int
cctl_conf_db(cctl_conf_t *cf, char *err, size_t errlen)
{
    if (cf->db_password_file && cf->password_buf == NULL
        && cctl_read_password(cf, err, errlen) != 0)
    {
        return -1;
    }

    memset(&cf->db, 0, sizeof(caud_db_opts_t));
    cf->db.host = cf->db_socket ? NULL : cf->db_host;
    cf->db.port = (unsigned) cf->db_port;
    cf->db.socket = cf->db_socket;
    cf->db.user = cf->db_user;
    cf->db.password = cf->password_buf ? cf->password_buf
                                       : cf->db_password;
    cf->db.database = cf->db_name;
    cf->db.timeout_s = (unsigned) ((cf->db_timeout + 999) / 1000);

    return 0;
}


void
cctl_conf_free(cctl_conf_t *cf)
{
    size_t  i;
    char   **s[] = {
        &cf->path, &cf->prefix, &cf->domain, &cf->audit_dir,
        &cf->audit_node, &cf->audit_key, &cf->db_host, &cf->db_socket,
        &cf->db_user, &cf->db_password, &cf->db_password_file,
        &cf->db_name, &cf->origin_prefix, &cf->password_buf
    };

    if (cf->password_buf) {
        explicit_bzero(cf->password_buf, strlen(cf->password_buf));
    }

    for (i = 0; i < sizeof(s) / sizeof(s[0]); i++) {
        free(*s[i]);
        *s[i] = NULL;
    }
}
