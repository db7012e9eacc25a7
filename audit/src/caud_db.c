
/*
 * MariaDB connections, schema migrations, and the columns of
 * audit_record copied out of a record (docs/audit.md "Schema").
 *
 * The schema is a directory of "NNN_name.sql" files applied in the
 * order of NNN and recorded in schema_version.  A file is a list of
 * statements, each ending with ';' at the end of a line; lines that
 * start with "--" are comments.  MariaDB commits implicitly around DDL,
 * so the transaction a file runs in only holds for its DML: files must
 * be safe to run again after a crash (CREATE ... IF NOT EXISTS), and
 * the version row is inserted last.
 */


#define _GNU_SOURCE

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mysql.h>

#include "caud.h"


#define CAUD_DB_TIMEOUT      5
#define CAUD_SCHEMA_MAX      1000
#define CAUD_SCHEMA_SIZE     (1024 * 1024)
#define CAUD_MIGRATE_LOCK    "conclave.audit.migrate"
#define CAUD_MIGRATE_IO_TIMEOUT  (6 * 3600)   /* one statement, seconds */


typedef struct {
    unsigned  version;
    char      name[256];
} caud_schema_file_t;


static MYSQL *caud_db_connect_io(const caud_db_opts_t *db, unsigned io_s,
    char *err, size_t errlen);


static const char  caud_schema_version_sql[] =
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INT NOT NULL PRIMARY KEY,"
    " name VARCHAR(255) NOT NULL,"
    " applied_at DATETIME(6) NOT NULL"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci";


/*
 * UTC: DATETIME columns are filled with UTC_TIMESTAMP() anyway.  Strict:
 * a value that does not fit is an error, never silently cut or
 * mangled; the shipper cuts what it must itself (caud_columns()).
 */
static const char  caud_db_init_sql[] =
    "SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci, time_zone = '+00:00',"
    " sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,"
    "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'";


static void
caud_db_errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list  ap;

    if (err == NULL || errlen == 0) {
        return;
    }

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}


/* "127.0.0.1:3306" or "unix:/run/mysqld/mysqld.sock", for messages */
static void
caud_db_where(const caud_db_opts_t *db, char *buf, size_t size)
{
    if (db->socket && db->socket[0]) {
        snprintf(buf, size, "unix:%s", db->socket);

    } else {
        snprintf(buf, size, db->host && strchr(db->host, ':') ? "[%s]:%u"
                 : "%s:%u", db->host ? db->host : "127.0.0.1",
                 db->port ? db->port : 3306);
    }
}


struct st_mysql *
caud_db_connect(const caud_db_opts_t *db, char *err, size_t errlen)
{
    return caud_db_connect_io(db, 0, err, errlen);
}


/*
 * io_s, when not 0, bounds reads and writes instead of timeout_s: a
 * migration's ALTER TABLE on a large table answers after minutes, while
 * an unreachable server must still fail within timeout_s.
 */
static MYSQL *
caud_db_connect_io(const caud_db_opts_t *db, unsigned io_s, char *err,
    size_t errlen)
{
    char          where[300];
    MYSQL        *m;
    unsigned      t, io, proto;
    const char   *host;
    unsigned char addr[16];

    caud_db_where(db, where, sizeof(where));

    host = db->host ? db->host : "127.0.0.1";
    if (!(db->socket && db->socket[0])
        && inet_pton(AF_INET, host, addr) != 1
        && inet_pton(AF_INET6, host, addr) != 1)
    {
        caud_db_errf(err, errlen, "MariaDB host \"%s\" is not an IP "
                     "address (names are not resolved: the lookup would "
                     "block without a timeout)", host);
        return NULL;
    }

    m = mysql_init(NULL);
    if (m == NULL) {
        caud_db_errf(err, errlen, "MariaDB %s: out of memory", where);
        return NULL;
    }

    t = db->timeout_s ? db->timeout_s : CAUD_DB_TIMEOUT;
    io = io_s ? io_s : t;
    proto = (db->socket && db->socket[0]) ? MYSQL_PROTOCOL_SOCKET
                                          : MYSQL_PROTOCOL_TCP;

    if (mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &t)
        || mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &io)
        || mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &io)
        || mysql_options(m, MYSQL_OPT_PROTOCOL, &proto)
        || mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4")
        || mysql_options(m, MYSQL_INIT_COMMAND, caud_db_init_sql))
    {
        caud_db_errf(err, errlen, "MariaDB %s: options: %s", where,
                     mysql_error(m));
        goto fail;
    }

    if (mysql_real_connect(m, (db->socket && db->socket[0]) ? "localhost"
                                                            : host,
                           db->user, db->password, db->database,
                           db->port ? db->port : 3306,
                           (db->socket && db->socket[0]) ? db->socket : NULL,
                           0)
        == NULL)
    {
        caud_db_errf(err, errlen, "MariaDB %s: %s", where, mysql_error(m));
        goto fail;
    }

    return m;

fail:

    mysql_close(m);
    return NULL;
}


void
caud_db_thread_end(void)
{
    mysql_thread_end();
}


/* ------------------------------------------------------------------ */
/* migrations */


static int
caud_schema_cmp(const void *a, const void *b)
{
    const caud_schema_file_t  *x = a, *y = b;

    return x->version < y->version ? -1 : x->version > y->version;
}


/* "NNN_name.sql": digits, '_', a name, ".sql" */
static int
caud_schema_name(const char *name, unsigned *version)
{
    size_t       n;
    unsigned     v;
    const char  *p;

    v = 0;
    for (p = name; *p >= '0' && *p <= '9'; p++) {
        if (v > 100000) {
            return -1;
        }
        v = v * 10 + (*p - '0');
    }

    n = strlen(name);
    if (p == name || *p != '_' || n < 5 || n >= 256
        || strcmp(name + n - 4, ".sql") != 0)
    {
        return -1;
    }

    *version = v;

    return 0;
}


static int
caud_schema_list(const char *dir, caud_schema_file_t **files, size_t *nfiles,
    char *err, size_t errlen)
{
    DIR                 *d;
    size_t               n, i;
    unsigned             v;
    struct dirent       *de;
    caud_schema_file_t  *f;

    d = opendir(dir);
    if (d == NULL) {
        caud_db_errf(err, errlen, "schema directory %s: %s", dir,
                     strerror(errno));
        return -1;
    }

    f = calloc(CAUD_SCHEMA_MAX, sizeof(caud_schema_file_t));
    if (f == NULL) {
        caud_db_errf(err, errlen, "out of memory");
        goto fail;
    }

    n = 0;

    while ((de = readdir(d)) != NULL) {
        if (caud_schema_name(de->d_name, &v) != 0) {
            continue;
        }

        if (n == CAUD_SCHEMA_MAX) {
            caud_db_errf(err, errlen, "%s: too many schema files", dir);
            goto fail;
        }

        f[n].version = v;
        snprintf(f[n].name, sizeof(f[n].name), "%s", de->d_name);
        n++;
    }

    qsort(f, n, sizeof(caud_schema_file_t), caud_schema_cmp);

    for (i = 1; i < n; i++) {
        if (f[i].version == f[i - 1].version) {
            caud_db_errf(err, errlen, "%s: %s and %s have the same version",
                         dir, f[i - 1].name, f[i].name);
            goto fail;
        }
    }

    if (n == 0) {
        caud_db_errf(err, errlen, "%s: no NNN_name.sql schema files", dir);
        goto fail;
    }

    closedir(d);
    *files = f;
    *nfiles = n;

    return 0;

fail:

    free(f);
    closedir(d);
    return -1;
}


static int
caud_db_query(MYSQL *m, const char *sql, size_t len, const char *what,
    char *err, size_t errlen)
{
    if (mysql_real_query(m, sql, len) != 0) {
        caud_db_errf(err, errlen, "%s: %s", what, mysql_error(m));
        return -1;
    }

    return 0;
}


/* the first column of the first row as an integer; -1 on error or NULL */
static long long
caud_db_scalar(MYSQL *m, const char *sql, char *err, size_t errlen)
{
    long long   v;
    MYSQL_RES  *res;
    MYSQL_ROW   row;

    if (caud_db_query(m, sql, strlen(sql), sql, err, errlen) != 0) {
        return -1;
    }

    res = mysql_store_result(m);
    if (res == NULL) {
        caud_db_errf(err, errlen, "%s: %s", sql, mysql_error(m));
        return -1;
    }

    row = mysql_fetch_row(res);
    v = (row && row[0]) ? strtoll(row[0], NULL, 10) : -1;
    mysql_free_result(res);

    if (v < 0) {
        caud_db_errf(err, errlen, "%s: no value", sql);
    }

    return v;
}


static int
caud_db_applied(MYSQL *m, unsigned version, char *err, size_t errlen)
{
    char  sql[128];

    snprintf(sql, sizeof(sql),
             "SELECT COUNT(*) FROM schema_version WHERE version = %u",
             version);

    return (int) caud_db_scalar(m, sql, err, errlen);
}


static char *
caud_schema_read(const char *dir, const char *name, size_t *len, char *err,
    size_t errlen)
{
    char    path[4096], *buf;
    FILE   *fp;
    size_t  n;

    snprintf(path, sizeof(path), "%s/%s", dir, name);

    fp = fopen(path, "r");
    if (fp == NULL) {
        caud_db_errf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }

    buf = malloc(CAUD_SCHEMA_SIZE + 1);
    if (buf == NULL) {
        fclose(fp);
        caud_db_errf(err, errlen, "out of memory");
        return NULL;
    }

    n = fread(buf, 1, CAUD_SCHEMA_SIZE + 1, fp);
    if (ferror(fp) || n > CAUD_SCHEMA_SIZE) {
        caud_db_errf(err, errlen, "%s: %s", path,
                     ferror(fp) ? strerror(errno) : "larger than 1 MiB");
        fclose(fp);
        free(buf);
        return NULL;
    }

    fclose(fp);
    buf[n] = '\0';
    *len = n;

    return buf;
}


/*
 * Runs each statement of the file: lines are gathered until one ends
 * (after trailing blanks) with ';'.  Comment lines are left out so a
 * ';' in a comment cannot end a statement.
 */
static int
caud_schema_run(MYSQL *m, const caud_schema_file_t *f, char *sql,
    size_t len, char *err, size_t errlen)
{
    char    what[320];
    char   *p, *nl, *end, *stmt, *w;
    size_t  line, first;

    stmt = sql;
    w = sql;
    first = 0;
    line = 0;

    for (p = sql; p < sql + len; p = nl + 1) {
        line++;
        nl = memchr(p, '\n', sql + len - p);
        if (nl == NULL) {
            nl = sql + len;
        }

        end = nl;
        while (end > p && (end[-1] == ' ' || end[-1] == '\t'
                           || end[-1] == '\r'))
        {
            end--;
        }

        while (p < end && (*p == ' ' || *p == '\t')) {
            p++;
        }

        if (p == end || (end - p >= 2 && p[0] == '-' && p[1] == '-')) {
            continue;
        }

        if (w == stmt) {
            first = line;
        }

        /* compact in place: the statement is built over lines read */
        memmove(w, p, end - p);
        w += end - p;
        *w++ = '\n';

        if (end[-1] != ';') {
            continue;
        }

        snprintf(what, sizeof(what), "%s line %zu", f->name, first);

        if (caud_db_query(m, stmt, w - stmt - 2, what, err, errlen) != 0) {
            return -1;
        }

        w = stmt;
    }

    if (w != stmt) {
        caud_db_errf(err, errlen, "%s line %zu: statement without a final "
                     "';'", f->name, first);
        return -1;
    }

    return 0;
}


static int
caud_schema_apply(MYSQL *m, const char *dir, const caud_schema_file_t *f,
    char *err, size_t errlen)
{
    int     rc;
    char   *sql, ins[1200], esc[2 * 256 + 1];
    size_t  len;

    sql = caud_schema_read(dir, f->name, &len, err, errlen);
    if (sql == NULL) {
        return -1;
    }

    mysql_real_escape_string(m, esc, f->name, strlen(f->name));
    snprintf(ins, sizeof(ins),
             "INSERT INTO schema_version (version, name, applied_at) "
             "VALUES (%u, '%s', UTC_TIMESTAMP(6))", f->version, esc);

    rc = caud_db_query(m, "START TRANSACTION", 17, f->name, err, errlen);

    if (rc == 0) {
        rc = caud_schema_run(m, f, sql, len, err, errlen);
    }

    if (rc == 0) {
        rc = caud_db_query(m, ins, strlen(ins), f->name, err, errlen);
    }

    if (rc == 0) {
        rc = caud_db_query(m, "COMMIT", 6, f->name, err, errlen);
    }

    if (rc != 0) {
        (void) mysql_query(m, "ROLLBACK");
    }

    free(sql);

    return rc;
}


int
caud_db_migrate(const caud_db_opts_t *db, const char *schema_dir, FILE *log,
    char *err, size_t errlen)
{
    int                  applied, rc;
    char                 sql[128];
    MYSQL               *m;
    size_t               i, n;
    caud_schema_file_t  *files;

    if (caud_schema_list(schema_dir, &files, &n, err, errlen) != 0) {
        return -1;
    }

    m = caud_db_connect_io(db, CAUD_MIGRATE_IO_TIMEOUT, err, errlen);
    if (m == NULL) {
        free(files);
        return -1;
    }

    applied = -1;

    /* two migrations at once (two nodes starting, or an operator and a
     * package script) would both see a version missing */
    snprintf(sql, sizeof(sql), "SELECT GET_LOCK('%s', %u)",
             CAUD_MIGRATE_LOCK, db->timeout_s ? db->timeout_s * 6 : 30);

    rc = (int) caud_db_scalar(m, sql, err, errlen);
    if (rc != 1) {
        if (rc == 0) {
            caud_db_errf(err, errlen, "MariaDB: another migration holds "
                         "the lock \"%s\"", CAUD_MIGRATE_LOCK);
        }
        goto done;
    }

    if (caud_db_query(m, caud_schema_version_sql,
                      sizeof(caud_schema_version_sql) - 1, "schema_version",
                      err, errlen) != 0)
    {
        goto done;
    }

    applied = 0;

    for (i = 0; i < n; i++) {
        rc = caud_db_applied(m, files[i].version, err, errlen);
        if (rc < 0) {
            applied = -1;
            goto done;
        }

        if (rc > 0) {
            continue;
        }

        if (caud_schema_apply(m, schema_dir, &files[i], err, errlen) != 0) {
            applied = -1;
            goto done;
        }

        if (log) {
            fprintf(log, "applied %s\n", files[i].name);
        }

        applied++;
    }

done:

    free(files);
    mysql_close(m);

    return applied;
}


/* ------------------------------------------------------------------ */
/* columns out of the canonical JSON */

/* the widths of 001_audit.sql; body: MEDIUMTEXT's 2^24 - 1 bytes */
const size_t  caud_column_width[CAUD_NCOLS] = {
    32, 8, 255, 255, 45, 64, 16, 16, 255, ((size_t) 1 << 24) / 4 - 1
};

const char  *caud_column_name[CAUD_NCOLS] = {
    "event", "status", "actor_user", "peer", "actor_ip", "session_id",
    "transport", "msg_type", "stanza_id", "body"
};


#define CAUD_JS_DEPTH  64

enum {
    CAUD_JS_TOP = 0,
    CAUD_JS_ACTOR,
    CAUD_JS_OBJECT,
    CAUD_JS_PARAMS
};


typedef struct {
    const uint8_t  *p;
    const uint8_t  *end;
} caud_js_t;


typedef struct {
    int          in;          /* CAUD_JS_* */
    const char  *key;
    size_t       len;
    int          col;
} caud_js_map_t;


#define caud_js_key_str(k)  k, sizeof(k) - 1

/* where each column comes from (caud.h); CAUD_NCOLS: ts_utc_us */
static const caud_js_map_t  caud_js_map[] = {
    { CAUD_JS_TOP,    caud_js_key_str("event"),       CAUD_COL_EVENT },
    { CAUD_JS_TOP,    caud_js_key_str("status"),      CAUD_COL_STATUS },
    { CAUD_JS_TOP,    caud_js_key_str("ts_utc_us"),   CAUD_NCOLS },
    { CAUD_JS_ACTOR,  caud_js_key_str("user"),        CAUD_COL_ACTOR_USER },
    { CAUD_JS_ACTOR,  caud_js_key_str("ip"),          CAUD_COL_ACTOR_IP },
    { CAUD_JS_ACTOR,  caud_js_key_str("session_id"),  CAUD_COL_SESSION_ID },
    { CAUD_JS_ACTOR,  caud_js_key_str("transport"),   CAUD_COL_TRANSPORT },
    { CAUD_JS_OBJECT, caud_js_key_str("id"),          CAUD_COL_PEER },
    { CAUD_JS_PARAMS, caud_js_key_str("type"),        CAUD_COL_MSG_TYPE },
    { CAUD_JS_PARAMS, caud_js_key_str("id"),          CAUD_COL_STANZA_ID },
    { CAUD_JS_PARAMS, caud_js_key_str("body"),        CAUD_COL_BODY },
};


/* room for n more bytes: the buffer doubles and keeps its size */
int
caud_buf_reserve(caud_buf_t *b, size_t n)
{
    size_t    cap;
    uint8_t  *d;

    if (b->len + n <= b->cap) {
        return 0;
    }

    cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) {
        cap *= 2;
    }

    d = realloc(b->data, cap);
    if (d == NULL) {
        return -1;
    }

    b->data = d;
    b->cap = cap;

    return 0;
}


static void
caud_js_ws(caud_js_t *js)
{
    while (js->p < js->end
           && (*js->p == ' ' || *js->p == '\t' || *js->p == '\n'
               || *js->p == '\r'))
    {
        js->p++;
    }
}


/*
 * The raw contents of the string at js->p, which is at '"'; *esc tells
 * whether it holds escapes.  -1 if it is not terminated.
 */
static int
caud_js_string(caud_js_t *js, const uint8_t **s, size_t *n, int *esc)
{
    const uint8_t  *p, *q, *b;

    *esc = 0;

    /* memchr() over the long plain runs (the stanza, the body) */
    for (p = js->p + 1; p < js->end; p = b + 2) {
        q = memchr(p, '"', js->end - p);
        if (q == NULL) {
            break;
        }

        b = memchr(p, '\\', q - p);
        if (b == NULL) {
            *s = js->p + 1;
            *n = q - *s;
            js->p = q + 1;
            return 0;
        }

        /* an escape before the quote: skip it and the byte it escapes */
        *esc = 1;
    }

    return -1;
}


static int
caud_js_skip(caud_js_t *js, int depth)
{
    int             esc;
    size_t          n;
    const uint8_t  *s;

    if (depth > CAUD_JS_DEPTH || js->p == js->end) {
        return -1;
    }

    switch (*js->p) {

    case '"':
        return caud_js_string(js, &s, &n, &esc);

    case '{':
    case '[':
        js->p++;
        caud_js_ws(js);

        if (js->p < js->end && (*js->p == '}' || *js->p == ']')) {
            js->p++;
            return 0;
        }

        for ( ;; ) {
            if (caud_js_skip(js, depth + 1) != 0) {
                return -1;
            }

            caud_js_ws(js);

            /* in an object, a key and ':' come before each value */
            if (js->p < js->end && *js->p == ':') {
                js->p++;
                caud_js_ws(js);
                continue;
            }

            if (js->p < js->end && *js->p == ',') {
                js->p++;
                caud_js_ws(js);
                continue;
            }

            if (js->p < js->end && (*js->p == '}' || *js->p == ']')) {
                js->p++;
                return 0;
            }

            return -1;
        }

    default:
        /* numbers, true, false, null */
        s = js->p;
        while (js->p < js->end && *js->p != ',' && *js->p != '}'
               && *js->p != ']' && *js->p != ' ' && *js->p != '\n')
        {
            js->p++;
        }

        return js->p > s ? 0 : -1;
    }
}


static int
caud_js_int(caud_js_t *js, int64_t *v)
{
    int       neg;
    uint64_t  u;

    neg = (js->p < js->end && *js->p == '-');
    js->p += neg;
    u = 0;

    if (js->p == js->end || *js->p < '0' || *js->p > '9') {
        return -1;
    }

    while (js->p < js->end && *js->p >= '0' && *js->p <= '9') {
        if (u > (UINT64_C(1) << 63) / 10) {
            return -1;
        }
        u = u * 10 + (*js->p++ - '0');
    }

    if (u > (uint64_t) INT64_MAX + neg
        || (js->p < js->end && (*js->p == '.' || *js->p == 'e'
                                || *js->p == 'E')))
    {
        return -1;
    }

    *v = neg ? (int64_t) (0 - u) : (int64_t) u;

    return 0;
}


static int
caud_js_hex4(const uint8_t *p, unsigned *v)
{
    int  i;

    *v = 0;

    for (i = 0; i < 4; i++) {
        *v <<= 4;
        if (p[i] >= '0' && p[i] <= '9') {
            *v |= p[i] - '0';
        } else if ((p[i] | 0x20) >= 'a' && (p[i] | 0x20) <= 'f') {
            *v |= (p[i] | 0x20) - 'a' + 10;
        } else {
            return -1;
        }
    }

    return 0;
}


static uint8_t *
caud_utf8_put(uint8_t *d, unsigned c)
{
    if (c < 0x80) {
        *d++ = (uint8_t) c;
    } else if (c < 0x800) {
        *d++ = (uint8_t) (0xC0 | c >> 6);
        *d++ = (uint8_t) (0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
        *d++ = (uint8_t) (0xE0 | c >> 12);
        *d++ = (uint8_t) (0x80 | ((c >> 6) & 0x3F));
        *d++ = (uint8_t) (0x80 | (c & 0x3F));
    } else {
        *d++ = (uint8_t) (0xF0 | c >> 18);
        *d++ = (uint8_t) (0x80 | ((c >> 12) & 0x3F));
        *d++ = (uint8_t) (0x80 | ((c >> 6) & 0x3F));
        *d++ = (uint8_t) (0x80 | (c & 0x3F));
    }

    return d;
}


/* RFC 8259 7: the escapes, surrogate pairs joined; -1 if invalid */
static int
caud_js_unescape(const uint8_t *s, size_t n, uint8_t *d, size_t *out)
{
    uint8_t        *d0;
    unsigned        c, lo;
    const uint8_t  *end;

    d0 = d;
    end = s + n;

    while (s < end) {
        if (*s != '\\') {
            *d++ = *s++;
            continue;
        }

        if (end - s < 2) {
            return -1;
        }

        switch (s[1]) {
        case '"':  *d++ = '"';  break;
        case '\\': *d++ = '\\'; break;
        case '/':  *d++ = '/';  break;
        case 'b':  *d++ = '\b'; break;
        case 'f':  *d++ = '\f'; break;
        case 'n':  *d++ = '\n'; break;
        case 'r':  *d++ = '\r'; break;
        case 't':  *d++ = '\t'; break;

        case 'u':
            if (end - s < 6 || caud_js_hex4(s + 2, &c) != 0) {
                return -1;
            }

            s += 6;

            if (c >= 0xDC00 && c <= 0xDFFF) {
                return -1;
            }

            if (c >= 0xD800 && c <= 0xDBFF) {
                if (end - s < 6 || s[0] != '\\' || s[1] != 'u'
                    || caud_js_hex4(s + 2, &lo) != 0
                    || lo < 0xDC00 || lo > 0xDFFF)
                {
                    return -1;
                }

                c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
                s += 6;
            }

            d = caud_utf8_put(d, c);
            continue;

        default:
            return -1;
        }

        s += 2;
    }

    *out = d - d0;

    return 0;
}


/*
 * Checks that s is UTF-8 (RFC 3629: no overlongs, no surrogates, at
 * most U+10FFFF) and sets *cut to the bytes of its first max
 * characters.
 */
static int
caud_utf8_cut(const uint8_t *s, size_t n, size_t max, size_t *cut)
{
    size_t   i, k, chars;
    unsigned c, min;

    chars = 0;
    *cut = n;

    for (i = 0; i < n; i += k) {
        if (chars++ == max) {
            *cut = i;
            max = SIZE_MAX;    /* keep validating the rest */
        }

        c = s[i];

        if (c < 0x80) {
            k = 1;
            continue;
        }

        if (c >= 0xC2 && c <= 0xDF) {
            k = 2; c &= 0x1F; min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 3; c &= 0x0F; min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 4; c &= 0x07; min = 0x10000;
        } else {
            return -1;
        }

        if (n - i < k) {
            return -1;
        }

        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) {
                return -1;
            }
            c = c << 6 | (s[i + j] & 0x3F);
        }

        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) {
            return -1;
        }
    }

    return 0;
}


/* the string at js->p into column col; an unusable value is NULL */
static int
caud_js_column(caud_js_t *js, int col, caud_columns_t *c, caud_buf_t *b)
{
    int             esc;
    size_t          n, len, cut;
    uint8_t        *d, *slash;
    const uint8_t  *s;

    if (caud_js_string(js, &s, &n, &esc) != 0) {
        return -1;
    }

    c->null[col] = 1;

    if (caud_buf_reserve(b, n) != 0) {
        return -2;
    }

    d = b->data + b->len;

    if (esc) {
        if (caud_js_unescape(s, n, d, &len) != 0) {
            return 0;
        }

    } else {
        memcpy(d, s, n);
        len = n;
    }

    if (col == CAUD_COL_PEER) {
        /* RFC 7622 3.1: the first '/' starts the resourcepart */
        slash = memchr(d, '/', len);
        if (slash) {
            len = slash - d;
        }
    }

    if (caud_utf8_cut(d, len, caud_column_width[col], &cut) != 0) {
        return 0;
    }

    c->null[col] = 0;
    c->off[col] = b->len;
    c->len[col] = cut;
    b->len += cut;

    return 0;
}


static int
caud_js_key(int in, const uint8_t *k, size_t n)
{
    size_t  i;

    for (i = 0; i < sizeof(caud_js_map) / sizeof(caud_js_map[0]); i++) {
        if (caud_js_map[i].in == in && caud_js_map[i].len == n
            && memcmp(caud_js_map[i].key, k, n) == 0)
        {
            return caud_js_map[i].col;
        }
    }

    return -1;
}


static int caud_js_object(caud_js_t *js, int in, caud_columns_t *c,
    caud_buf_t *b);


/*
 * The value of member k (n bytes; 0 for a key with escapes: keys are
 * plain ASCII in the canonical form, so such a key is not one of ours)
 * of an object of kind in.
 */
static int
caud_js_member(caud_js_t *js, int in, const uint8_t *k, size_t n,
    caud_columns_t *c, caud_buf_t *b)
{
    int  rc, col, sub;

    col = n ? caud_js_key(in, k, n) : -1;

    sub = -1;
    if (in == CAUD_JS_TOP && *js->p == '{') {
        sub = (n == 5 && memcmp(k, "actor", 5) == 0) ? CAUD_JS_ACTOR
              : (n == 6 && memcmp(k, "object", 6) == 0) ? CAUD_JS_OBJECT
              : (n == 6 && memcmp(k, "params", 6) == 0) ? CAUD_JS_PARAMS
              : -1;
    }

    if (sub >= 0) {
        return caud_js_object(js, sub, c, b);
    }

    if (col == CAUD_NCOLS) {
        rc = caud_js_int(js, &c->ts_utc_us);
        if (rc != 0) {
            c->ts_utc_us = 0;
            rc = caud_js_skip(js, 1);
        }
        return rc;
    }

    if (col >= 0 && *js->p == '"') {
        return caud_js_column(js, col, c, b);
    }

    return caud_js_skip(js, 1);
}


static int
caud_js_object(caud_js_t *js, int in, caud_columns_t *c, caud_buf_t *b)
{
    int             rc, esc;
    size_t          n;
    const uint8_t  *k;

    if (js->p == js->end || *js->p++ != '{') {
        return -1;
    }

    caud_js_ws(js);
    if (js->p < js->end && *js->p == '}') {
        js->p++;
        return 0;
    }

    for ( ;; ) {
        caud_js_ws(js);
        if (js->p == js->end || *js->p != '"'
            || caud_js_string(js, &k, &n, &esc) != 0)
        {
            return -1;
        }

        caud_js_ws(js);
        if (js->p == js->end || *js->p++ != ':') {
            return -1;
        }

        caud_js_ws(js);
        if (js->p == js->end) {
            return -1;
        }

        rc = caud_js_member(js, in, k, esc ? 0 : n, c, b);
        if (rc != 0) {
            return rc;
        }

        caud_js_ws(js);
        if (js->p == js->end) {
            return -1;
        }

        if (*js->p == ',') {
            js->p++;
            continue;
        }

        if (*js->p++ == '}') {
            return 0;
        }

        return -1;
    }
}


int
caud_columns(const void *payload, size_t len, caud_columns_t *c,
    caud_buf_t *buf)
{
    int        rc, i;
    size_t     start;
    caud_js_t  js;

    memset(c, 0, sizeof(caud_columns_t));
    for (i = 0; i < CAUD_NCOLS; i++) {
        c->null[i] = 1;
    }

    start = buf->len;
    js.p = payload;
    js.end = js.p + len;

    caud_js_ws(&js);
    rc = caud_js_object(&js, CAUD_JS_TOP, c, buf);

    if (rc == -2) {
        buf->len = start;
        errno = ENOMEM;
        return -1;
    }

    caud_js_ws(&js);

    if (rc != 0 || js.p != js.end) {
        buf->len = start;
        memset(c, 0, sizeof(caud_columns_t));
        for (i = 0; i < CAUD_NCOLS; i++) {
            c->null[i] = 1;
        }
        return 1;
    }

    return 0;
}
