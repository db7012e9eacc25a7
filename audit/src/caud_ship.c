
/*
 * The shipper: copies journals into MariaDB, exactly once
 * (docs/audit.md "Shipping"; COMPLIANCE.md 4).
 *
 * Per journal, audit_journal holds shipped_seq and head_hash, the
 * entry_hash of record shipped_seq.  A batch is one transaction:
 *
 *   INSERT INTO audit_record ... (rows shipped_seq + 1 .. shipped_seq + n)
 *   UPDATE audit_journal SET shipped_seq = shipped_seq + n, head_hash = ..
 *       WHERE node = .. AND writer_id = .. AND shipped_seq = <as read>
 *   COMMIT
 *
 * The INSERT is plain (not IGNORE): a row that is already there is an
 * error, never a silent skip, and the UPDATE must match exactly one row,
 * so two shippers racing on one journal, or a shipper whose idea of
 * shipped_seq is stale, roll back instead of skipping or duplicating.
 * A crash before COMMIT leaves nothing; after it, shipped_seq says so.
 * After any error the shipper rolls back, drops the connection and the
 * journal reader, and starts again from what MariaDB says next time.
 *
 * Rows go in with Connector/C array binding (STMT_ATTR_ARRAY_SIZE,
 * column-wise, COM_STMT_BULK_EXECUTE): one round trip per batch and no
 * escaping; a multi-row text INSERT measured slower (docs/audit.md).
 *
 * A shipper is used by one thread at a time; it holds no global state.
 */


#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mysql.h>

#include "caud.h"


/* ------------------------------------------------------------------ */
/* the shipper */

#define CAUD_SHIP_BATCH_MAX    100000
#define CAUD_SHIP_READERS_MAX  4        /* open readers kept, LRU */
#define CAUD_SHIP_BYTES_MAX    (8 * 1024 * 1024)
#define CAUD_SHIP_BYTES_MIN    (64 * 1024)
#define CAUD_SHIP_ROWS0        64       /* the arrays' rows at rest */
#define CAUD_SHIP_ARENA0       (64 * 1024)
/* a row's bytes in the arrays: writer, seq and ts have no string arrays */
#define CAUD_SHIP_ROW_SIZE                                                \
    (sizeof(caud_columns_t) + sizeof(size_t) + sizeof(uint32_t)            \
     + 2 * sizeof(uint64_t) + 2 * CAUD_HASH_LEN                            \
     + (CAUD_P_N - 3) * (sizeof(char *) + sizeof(unsigned long) + 1))

/* the parameters of the INSERT, in its order */
enum {
    CAUD_P_NODE = 0,
    CAUD_P_WRITER,
    CAUD_P_SEQ,
    CAUD_P_TS,
    CAUD_P_COL0,                            /* CAUD_NCOLS strings */
    CAUD_P_PAYLOAD = CAUD_P_COL0 + CAUD_NCOLS,
    CAUD_P_PREV,
    CAUD_P_ENTRY,
    CAUD_P_N
};


typedef struct {
    uint32_t        writer_id;
    caud_reader_t  *reader;
    uint64_t        next;         /* the seq the reader returns next */
    uint64_t        shipped;      /* MariaDB's shipped_seq */
    uint8_t         head[CAUD_HASH_LEN];
    int             has_row;      /* audit_journal has the row */
    int             cp_known;     /* cp_stored read on this connection */
    int             pos_known;    /* shipped, head: this shipper's own */
    uint64_t        cp_stored;    /* highest checkpoint size stored */
    uint64_t        used;         /* sh->clock at the last call */
} caud_ship_writer_t;


struct caud_shipper_s {
    caud_db_opts_t       db;
    char                *dir;
    char                *node;
    size_t               batch;
    size_t               bytes_max;

    MYSQL               *m;
    MYSQL_STMT          *ins;
    char                *node_sql;    /* node, escaped for SQL text */

    caud_ship_writer_t  *writers;
    size_t               nwriters;
    uint64_t             clock;

    /* the batch: rows n, their bytes in arena, column-wise arrays */
    size_t               n;
    size_t               cap;         /* rows the arrays hold */
    size_t               bytes;
    caud_buf_t           arena;
    caud_columns_t      *cols;
    size_t              *pay_off;
    uint32_t            *wid;
    uint64_t            *seq;
    int64_t             *ts;
    uint8_t             *hashes;      /* prev, entry: 2 * 32 per row */
    char               **ptr[CAUD_P_N];
    unsigned long       *len[CAUD_P_N];
    char                *ind[CAUD_P_N];
    MYSQL_BIND           bind[CAUD_P_N];

    caud_ship_stats_t    stats;
    char                 err[512];

    const int           *cancel;      /* non-zero: stop between batches */
};


static void caud_ship_bind(caud_shipper_t *sh);


static const char  caud_ship_insert_sql[] =
    "INSERT INTO audit_record (node, writer_id, seq, ts_utc_us, event,"
    " status, actor_user, peer, actor_ip, session_id, transport, msg_type,"
    " stanza_id, body, payload, prev_hash, entry_hash)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";


static void
caud_ship_errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list  ap;

    if (err == NULL || errlen == 0) {
        return;
    }

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}


static void
caud_hex(char *out, const uint8_t *h, size_t n)
{
    size_t  i;
    static const char  hex[] = "0123456789abcdef";

    for (i = 0; i < n; i++) {
        out[2 * i] = hex[h[i] >> 4];
        out[2 * i + 1] = hex[h[i] & 0xf];
    }

    out[2 * n] = '\0';
}


static char *
caud_strdup0(const char *s)
{
    return s ? strdup(s) : NULL;
}


/*
 * The batch's arrays hold sh->cap rows: CAUD_SHIP_ROWS0 at rest, and
 * up to sh->batch while a backlog lasts (caud_ship_fill() grows them).
 * Sized for the batch from the start, 1,000 rows took about 0.5 MB per
 * shipper, touched by the first burst and kept for good.
 */
static int
caud_ship_rows(caud_shipper_t *sh, size_t rows)
{
    int    i, rc;
    void  *p;

    rc = 0;

    /* an array that failed keeps its block: it holds the old rows */
#define caud_ship_resize(a, size)                                           \
    p = realloc(a, rows * (size));                                          \
    if (p == NULL) {                                                        \
        rc = -1;                                                            \
    } else {                                                                \
        a = p;                                                              \
    }

    caud_ship_resize(sh->cols, sizeof(caud_columns_t));
    caud_ship_resize(sh->pay_off, sizeof(size_t));
    caud_ship_resize(sh->wid, sizeof(uint32_t));
    caud_ship_resize(sh->seq, sizeof(uint64_t));
    caud_ship_resize(sh->ts, sizeof(int64_t));
    caud_ship_resize(sh->hashes, 2 * CAUD_HASH_LEN);

    for (i = 0; i < CAUD_P_N; i++) {
        if (i == CAUD_P_WRITER || i == CAUD_P_SEQ || i == CAUD_P_TS) {
            continue;
        }

        caud_ship_resize(sh->ptr[i], sizeof(char *));
        caud_ship_resize(sh->len[i], sizeof(unsigned long));
        caud_ship_resize(sh->ind[i], 1);
    }

#undef caud_ship_resize

    if (rc == 0 || rows < sh->cap) {
        sh->cap = rows;
    }

    /* the INSERT's parameters point at the arrays */
    caud_ship_bind(sh);

    return rc;
}


/* room for row sh->n: doubles the arrays, up to the batch */
static int
caud_ship_grow(caud_shipper_t *sh)
{
    size_t  rows;

    rows = sh->cap * 2;
    if (rows > sh->batch) {
        rows = sh->batch;
    }

    return caud_ship_rows(sh, rows);
}


/* what the batch's buffers hold, now and at their largest */
static void
caud_ship_held(caud_shipper_t *sh)
{
    sh->stats.buffer_bytes = sh->cap * CAUD_SHIP_ROW_SIZE + sh->arena.cap;

    if (sh->stats.buffer_bytes > sh->stats.buffer_peak) {
        sh->stats.buffer_peak = sh->stats.buffer_bytes;
    }
}


size_t
caud_shipper_shrink(caud_shipper_t *sh)
{
    size_t  freed, rows;

    caud_ship_held(sh);
    freed = 0;
    rows = sh->batch < CAUD_SHIP_ROWS0 ? sh->batch : CAUD_SHIP_ROWS0;

    if (sh->cap > rows) {
        freed = (sh->cap - rows) * CAUD_SHIP_ROW_SIZE;
        (void) caud_ship_rows(sh, rows);
    }

    if (sh->arena.cap > CAUD_SHIP_ARENA0) {
        freed += sh->arena.cap;
        caud_buf_free(&sh->arena);
    }

    caud_ship_held(sh);

    return freed;
}


caud_shipper_t *
caud_shipper_new(const caud_db_opts_t *db, const char *dir, const char *node,
    size_t batch, char *err, size_t errlen)
{
    caud_shipper_t  *sh;

    if (node == NULL || strlen(node) > 64 || dir == NULL) {
        caud_ship_errf(err, errlen, "shipper: node missing or longer than "
                       "64 bytes, or no directory");
        return NULL;
    }

    sh = calloc(1, sizeof(caud_shipper_t));
    if (sh == NULL) {
        goto nomem;
    }

    sh->batch = batch ? batch : 1000;
    if (sh->batch > CAUD_SHIP_BATCH_MAX) {
        sh->batch = CAUD_SHIP_BATCH_MAX;
    }

    sh->db = *db;
    sh->db.host = caud_strdup0(db->host);
    sh->db.socket = caud_strdup0(db->socket);
    sh->db.user = caud_strdup0(db->user);
    sh->db.password = caud_strdup0(db->password);
    sh->db.database = caud_strdup0(db->database);
    sh->dir = strdup(dir);
    sh->node = strdup(node);

    if ((db->host && sh->db.host == NULL)
        || (db->socket && sh->db.socket == NULL)
        || (db->user && sh->db.user == NULL)
        || (db->password && sh->db.password == NULL)
        || (db->database && sh->db.database == NULL)
        || sh->dir == NULL || sh->node == NULL
        || caud_ship_rows(sh, sh->batch < CAUD_SHIP_ROWS0
                              ? sh->batch : CAUD_SHIP_ROWS0) != 0)
    {
        goto nomem;
    }

    return sh;

nomem:

    caud_shipper_free(sh);
    caud_ship_errf(err, errlen, "shipper: out of memory");
    return NULL;
}


static void
caud_ship_disconnect(caud_shipper_t *sh)
{
    size_t  i;

    if (sh->ins) {
        mysql_stmt_close(sh->ins);
        sh->ins = NULL;
    }

    if (sh->m) {
        mysql_close(sh->m);
        sh->m = NULL;
    }

    free(sh->node_sql);
    sh->node_sql = NULL;

    for (i = 0; i < sh->nwriters; i++) {
        sh->writers[i].cp_known = 0;
        sh->writers[i].pos_known = 0;
    }
}


void
caud_shipper_free(caud_shipper_t *sh)
{
    int     i;
    size_t  k;

    if (sh == NULL) {
        return;
    }

    caud_ship_disconnect(sh);

    for (k = 0; k < sh->nwriters; k++) {
        caud_reader_close(sh->writers[k].reader);
    }

    free(sh->writers);

    for (i = 0; i < CAUD_P_N; i++) {
        free(sh->ptr[i]);
        free(sh->len[i]);
        free(sh->ind[i]);
    }

    free(sh->cols);
    free(sh->pay_off);
    free(sh->wid);
    free(sh->seq);
    free(sh->ts);
    free(sh->hashes);
    caud_buf_free(&sh->arena);

    if (sh->db.password) {
        explicit_bzero((char *) sh->db.password, strlen(sh->db.password));
    }

    free((char *) sh->db.host);
    free((char *) sh->db.socket);
    free((char *) sh->db.user);
    free((char *) sh->db.password);
    free((char *) sh->db.database);
    free(sh->dir);
    free(sh->node);
    free(sh);
}


void
caud_shipper_stats(caud_shipper_t *sh, caud_ship_stats_t *st)
{
    caud_ship_held(sh);
    *st = sh->stats;
}


static caud_ship_writer_t *
caud_ship_writer(caud_shipper_t *sh, uint32_t writer_id, int add)
{
    size_t               i;
    caud_ship_writer_t  *w;

    for (i = 0; i < sh->nwriters; i++) {
        if (sh->writers[i].writer_id == writer_id) {
            return &sh->writers[i];
        }
    }

    if (!add) {
        return NULL;
    }

    w = realloc(sh->writers, (sh->nwriters + 1) * sizeof(caud_ship_writer_t));
    if (w == NULL) {
        return NULL;
    }

    sh->writers = w;
    w = &sh->writers[sh->nwriters++];
    memset(w, 0, sizeof(caud_ship_writer_t));
    w->writer_id = writer_id;

    return w;
}


uint64_t
caud_shipper_shipped_seq(caud_shipper_t *sh, uint32_t writer_id)
{
    caud_ship_writer_t  *w;

    w = caud_ship_writer(sh, writer_id, 0);

    return w ? w->shipped : 0;
}


/* the parameter arrays of the INSERT, bound once per connection */
static void
caud_ship_bind(caud_shipper_t *sh)
{
    int          i;
    MYSQL_BIND  *b;

    memset(sh->bind, 0, sizeof(sh->bind));

    for (i = 0; i < CAUD_P_N; i++) {
        b = &sh->bind[i];

        switch (i) {

        case CAUD_P_WRITER:
            b->buffer_type = MYSQL_TYPE_LONG;
            b->buffer = sh->wid;
            b->is_unsigned = 1;
            continue;

        case CAUD_P_SEQ:
            b->buffer_type = MYSQL_TYPE_LONGLONG;
            b->buffer = sh->seq;
            b->is_unsigned = 1;
            continue;

        case CAUD_P_TS:
            b->buffer_type = MYSQL_TYPE_LONGLONG;
            b->buffer = sh->ts;
            continue;

        case CAUD_P_PAYLOAD:
        case CAUD_P_PREV:
        case CAUD_P_ENTRY:
            /* BLOB: sent as binary, never converted from utf8mb4 */
            b->buffer_type = MYSQL_TYPE_BLOB;
            break;

        default:
            b->buffer_type = MYSQL_TYPE_STRING;
            b->u.indicator = sh->ind[i];
        }

        /* column-wise: an array of pointers and one of lengths */
        b->buffer = sh->ptr[i];
        b->length = sh->len[i];
    }
}


static int
caud_ship_connect(caud_shipper_t *sh)
{
    size_t      n;
    long long   max;
    MYSQL_RES  *res;
    MYSQL_ROW   row;

    sh->m = caud_db_connect(&sh->db, sh->err, sizeof(sh->err));
    if (sh->m == NULL) {
        return -1;
    }

    /* for mysql_stmt_execute_start(); the blocking calls work as ever */
    if (mysql_options(sh->m, MYSQL_OPT_NONBLOCK, 0) != 0) {
        caud_ship_errf(sh->err, sizeof(sh->err), "MYSQL_OPT_NONBLOCK: %s",
                       mysql_error(sh->m));
        return -1;
    }

    n = strlen(sh->node);
    sh->node_sql = malloc(2 * n + 1);
    if (sh->node_sql == NULL) {
        caud_ship_errf(sh->err, sizeof(sh->err), "out of memory");
        return -1;
    }

    mysql_real_escape_string(sh->m, sh->node_sql, sh->node, n);

    /* a batch is one packet: stay well inside the server's limit */
    max = 0;
    if (mysql_query(sh->m, "SELECT @@max_allowed_packet") == 0
        && (res = mysql_store_result(sh->m)) != NULL)
    {
        row = mysql_fetch_row(res);
        max = (row && row[0]) ? strtoll(row[0], NULL, 10) : 0;
        mysql_free_result(res);
    }

    sh->bytes_max = max / 2 > CAUD_SHIP_BYTES_MAX ? CAUD_SHIP_BYTES_MAX
                    : max / 2 < CAUD_SHIP_BYTES_MIN ? CAUD_SHIP_BYTES_MIN
                    : (size_t) max / 2;

    sh->ins = mysql_stmt_init(sh->m);
    if (sh->ins == NULL
        || mysql_stmt_prepare(sh->ins, caud_ship_insert_sql,
                              sizeof(caud_ship_insert_sql) - 1) != 0)
    {
        caud_ship_errf(sh->err, sizeof(sh->err), "prepare INSERT: %s%s",
                       sh->ins ? mysql_stmt_error(sh->ins)
                               : mysql_error(sh->m),
                       (sh->ins && mysql_stmt_errno(sh->ins) == 1146)
                       ? " (run \"conclavectl migrate\")" : "");
        return -1;
    }

    caud_ship_bind(sh);

    return 0;
}


/* the first row of a text query's result; NULL with sh->err set */
static MYSQL_RES *
caud_ship_select(caud_shipper_t *sh, const char *sql, MYSQL_ROW *row,
    unsigned long **lens)
{
    MYSQL_RES  *res;

    if (mysql_query(sh->m, sql) != 0
        || (res = mysql_store_result(sh->m)) == NULL)
    {
        caud_ship_errf(sh->err, sizeof(sh->err), "%s%s", mysql_error(sh->m),
                       mysql_errno(sh->m) == 1146
                       ? " (run \"conclavectl migrate\")" : "");
        return NULL;
    }

    *row = mysql_fetch_row(res);
    *lens = *row ? mysql_fetch_lengths(res) : NULL;

    return res;
}


/* shipped_seq and head_hash as MariaDB has them now */
static int
caud_ship_position(caud_shipper_t *sh, caud_ship_writer_t *w)
{
    char            sql[512];
    MYSQL_RES      *res;
    MYSQL_ROW       row;
    unsigned long  *lens;

    snprintf(sql, sizeof(sql), "SELECT shipped_seq, head_hash FROM "
             "audit_journal WHERE node = '%s' AND writer_id = %" PRIu32,
             sh->node_sql, w->writer_id);

    res = caud_ship_select(sh, sql, &row, &lens);
    if (res == NULL) {
        return -1;
    }

    if (row == NULL) {
        w->shipped = 0;
        memset(w->head, 0, CAUD_HASH_LEN);
        w->has_row = 0;

    } else if (row[0] == NULL || row[1] == NULL
               || lens[1] != CAUD_HASH_LEN)
    {
        mysql_free_result(res);
        caud_ship_errf(sh->err, sizeof(sh->err), "audit_journal row "
                       "damaged (head_hash is not 32 bytes)");
        return -1;

    } else {
        w->shipped = strtoull(row[0], NULL, 10);
        memcpy(w->head, row[1], CAUD_HASH_LEN);
        w->has_row = 1;
    }

    mysql_free_result(res);

    w->pos_known = 1;

    return 0;
}


/*
 * Readers hold an fd and a 1 MiB buffer: keep only the recently used
 * ones, so the journals of workers long gone (adopted, then drained) do
 * not pile up.
 */
static void
caud_ship_readers_trim(caud_shipper_t *sh)
{
    size_t               i, open;
    caud_ship_writer_t  *old;

    for ( ;; ) {
        open = 0;
        old = NULL;

        for (i = 0; i < sh->nwriters; i++) {
            if (sh->writers[i].reader == NULL) {
                continue;
            }

            open++;
            if (old == NULL || sh->writers[i].used < old->used) {
                old = &sh->writers[i];
            }
        }

        if (open < CAUD_SHIP_READERS_MAX) {
            return;
        }

        caud_reader_close(old->reader);
        old->reader = NULL;
    }
}


/*
 * A reader positioned after shipped_seq.  When the journal still has
 * record shipped_seq, its entry_hash must be MariaDB's head_hash: that
 * catches a journal that was replaced or cut below what was shipped,
 * which a reader opened after it would pass over in silence.  When
 * retention removed that record's segment, the next record's prev_hash
 * is checked instead (caud_ship_fill()).
 */
static int
caud_ship_reader(caud_shipper_t *sh, caud_ship_writer_t *w)
{
    int            rc;
    char           a[2 * CAUD_HASH_LEN + 1], b[2 * CAUD_HASH_LEN + 1];
    caud_frame_t   f;
    caud_reader_t  *r;

    if (w->reader && w->next == w->shipped + 1) {
        return 0;
    }

    caud_reader_close(w->reader);
    w->reader = NULL;
    w->next = w->shipped + 1;

    caud_ship_readers_trim(sh);

    if (w->shipped == 0
        || caud_reader_open(sh->dir, w->writer_id, w->shipped, &r, sh->err,
                            sizeof(sh->err)) != 0)
    {
        if (w->shipped && errno != ENOENT) {
            return -1;
        }

        return caud_reader_open(sh->dir, w->writer_id, w->next, &w->reader,
                                sh->err, sizeof(sh->err));
    }

    w->reader = r;

    rc = caud_reader_next(r, &f);
    if (rc < 0) {
        caud_ship_errf(sh->err, sizeof(sh->err), "%s", caud_reader_error(r));
        return -1;
    }

    if (rc == 0) {
        caud_ship_errf(sh->err, sizeof(sh->err), "the journal ends before "
                       "seq %" PRIu64 ", which MariaDB already holds: the "
                       "journal and the database disagree (journal "
                       "replaced or cut?)", w->shipped);
        return -1;
    }

    if (memcmp(f.entry_hash, w->head, CAUD_HASH_LEN) != 0) {
        caud_hex(a, f.entry_hash, CAUD_HASH_LEN);
        caud_hex(b, w->head, CAUD_HASH_LEN);
        caud_ship_errf(sh->err, sizeof(sh->err), "seq %" PRIu64 ": the "
                       "journal's entry_hash %s is not MariaDB's head_hash "
                       "%s: the journal and the database disagree",
                       f.seq, a, b);
        return -1;
    }

    return 0;
}


/*
 * Reads up to limit records into the batch; the first must link to
 * expect (MariaDB's head_hash, or the batch in flight's last entry).
 * The arrays and the bytes may move meanwhile: the batch in flight is
 * already in Connector/C's request (caud_ship_send()).  Returns how
 * many, or -1.
 */
static int
caud_ship_fill(caud_shipper_t *sh, caud_ship_writer_t *w, size_t limit,
    const uint8_t *expect)
{
    int              rc;
    char             a[2 * CAUD_HASH_LEN + 1], b[2 * CAUD_HASH_LEN + 1];
    size_t           i, start;
    caud_frame_t     f;

    sh->n = 0;
    sh->bytes = 0;
    sh->arena.len = 0;

    while (sh->n < limit && sh->bytes < sh->bytes_max) {
        if (sh->n == sh->cap && caud_ship_grow(sh) != 0) {
            goto nomem;
        }

        rc = caud_reader_next(w->reader, &f);
        if (rc < 0) {
            caud_ship_errf(sh->err, sizeof(sh->err), "%s",
                           caud_reader_error(w->reader));
            return -1;
        }

        if (rc == 0) {
            break;
        }

        if (f.seq != w->next
            || (sh->n == 0
                && memcmp(f.prev_hash, expect, CAUD_HASH_LEN) != 0))
        {
            caud_hex(a, f.prev_hash, CAUD_HASH_LEN);
            caud_hex(b, expect, CAUD_HASH_LEN);
            caud_ship_errf(sh->err, sizeof(sh->err), "seq %" PRIu64 ": "
                           "prev_hash %s is not MariaDB's head_hash %s of "
                           "seq %" PRIu64 ": the journal and the database "
                           "disagree", f.seq, a, b, w->next - 1);
            return -1;
        }

        i = sh->n;
        start = sh->arena.len;

        if (caud_buf_reserve(&sh->arena, f.len) != 0) {
            goto nomem;
        }

        memcpy(sh->arena.data + sh->arena.len, f.payload, f.len);
        sh->pay_off[i] = start;
        sh->len[CAUD_P_PAYLOAD][i] = f.len;
        sh->arena.len += f.len;

        if (caud_columns(f.payload, f.len, &sh->cols[i], &sh->arena) < 0) {
            goto nomem;
        }

        sh->wid[i] = w->writer_id;
        sh->seq[i] = f.seq;
        sh->ts[i] = sh->cols[i].ts_utc_us;
        memcpy(sh->hashes + i * 2 * CAUD_HASH_LEN, f.prev_hash,
               CAUD_HASH_LEN);
        memcpy(sh->hashes + i * 2 * CAUD_HASH_LEN + CAUD_HASH_LEN,
               f.entry_hash, CAUD_HASH_LEN);

        sh->bytes += sh->arena.len - start + 2 * CAUD_HASH_LEN + 64;
        sh->n++;
        w->next++;
    }

    return (int) sh->n;

nomem:

    caud_ship_errf(sh->err, sizeof(sh->err), "out of memory");
    return -1;
}


/* points the parameter arrays at the batch (the arena has moved) */
static void
caud_ship_point(caud_shipper_t *sh)
{
    int              k, p;
    size_t           i, nlen;
    uint8_t         *base, *h;
    caud_columns_t  *c;

    base = sh->arena.data;
    nlen = strlen(sh->node);

    for (i = 0; i < sh->n; i++) {
        c = &sh->cols[i];
        h = sh->hashes + i * 2 * CAUD_HASH_LEN;

        sh->ptr[CAUD_P_NODE][i] = sh->node;
        sh->len[CAUD_P_NODE][i] = nlen;
        sh->ind[CAUD_P_NODE][i] = STMT_INDICATOR_NONE;

        for (k = 0; k < CAUD_NCOLS; k++) {
            p = CAUD_P_COL0 + k;
            sh->ptr[p][i] = (char *) base + c->off[k];
            sh->len[p][i] = c->len[k];
            sh->ind[p][i] = c->null[k] ? STMT_INDICATOR_NULL
                                       : STMT_INDICATOR_NONE;
        }

        sh->ptr[CAUD_P_PAYLOAD][i] = (char *) base + sh->pay_off[i];
        sh->ptr[CAUD_P_PREV][i] = (char *) h;
        sh->len[CAUD_P_PREV][i] = CAUD_HASH_LEN;
        sh->ptr[CAUD_P_ENTRY][i] = (char *) h + CAUD_HASH_LEN;
        sh->len[CAUD_P_ENTRY][i] = CAUD_HASH_LEN;
    }
}


static int
caud_ship_query(caud_shipper_t *sh, const char *sql, const char *what)
{
    if (mysql_query(sh->m, sql) != 0) {
        caud_ship_errf(sh->err, sizeof(sh->err), "%s: %s", what,
                       mysql_error(sh->m));
        return -1;
    }

    return 0;
}


/* waits for what a non-blocking call asked for, within the timeouts */
static int
caud_ship_wait(MYSQL *m, int status)
{
    int            rc, timeout;
    struct pollfd  pfd;

    pfd.fd = mysql_get_socket(m);
    pfd.events = ((status & MYSQL_WAIT_READ) ? POLLIN : 0)
                 | ((status & MYSQL_WAIT_WRITE) ? POLLOUT : 0)
                 | ((status & MYSQL_WAIT_EXCEPT) ? POLLPRI : 0);
    pfd.revents = 0;

    timeout = (status & MYSQL_WAIT_TIMEOUT)
              ? (int) mysql_get_timeout_value_ms(m) : -1;

    do {
        rc = poll(&pfd, 1, timeout);
    } while (rc < 0 && errno == EINTR);

    if (rc <= 0) {
        return MYSQL_WAIT_TIMEOUT;
    }

    return ((pfd.revents & (POLLIN | POLLERR | POLLHUP)) ? MYSQL_WAIT_READ
                                                         : 0)
           | ((pfd.revents & (POLLOUT | POLLERR | POLLHUP))
              ? MYSQL_WAIT_WRITE : 0)
           | ((pfd.revents & POLLPRI) ? MYSQL_WAIT_EXCEPT : 0);
}


/*
 * Opens the transaction and starts the batch's INSERT without waiting
 * for it.  Connector/C builds the whole COM_STMT_BULK_EXECUTE request
 * before its first write, so once this returns the parameter arrays
 * are free to take the next batch while the server works.
 */
static int
caud_ship_send(caud_shipper_t *sh, int *status, int *ret)
{
    unsigned int  n;

    n = (unsigned int) sh->n;

    caud_ship_point(sh);

    if (caud_ship_query(sh, "START TRANSACTION", "START TRANSACTION") != 0) {
        return -1;
    }

    if (mysql_stmt_attr_set(sh->ins, STMT_ATTR_ARRAY_SIZE, &n) != 0
        || mysql_stmt_bind_param(sh->ins, sh->bind) != 0)
    {
        caud_ship_errf(sh->err, sizeof(sh->err), "bind: %s",
                       mysql_stmt_error(sh->ins));
        return -1;
    }

    *status = mysql_stmt_execute_start(ret, sh->ins);

    return 0;
}


/*
 * Waits for the INSERT of rows first..last, then moves shipped_seq in
 * the same transaction, conditional on the value this batch was read
 * after, and commits.
 */
static int
caud_ship_complete(caud_shipper_t *sh, caud_ship_writer_t *w, int status,
    int ret, uint64_t first, uint64_t last, const uint8_t *entry)
{
    char      sql[768], head[2 * CAUD_HASH_LEN + 1];
    uint64_t  n;

    while (status) {
        status = mysql_stmt_execute_cont(&ret, sh->ins,
                                         caud_ship_wait(sh->m, status));
    }

    n = last - first + 1;

    if (ret != 0 || mysql_stmt_affected_rows(sh->ins) != n) {
        caud_ship_errf(sh->err, sizeof(sh->err), "INSERT seq %" PRIu64
                       "..%" PRIu64 ": %s", first, last,
                       ret ? mysql_stmt_error(sh->ins)
                           : "not every row was inserted");
        return -1;
    }

    caud_hex(head, entry, CAUD_HASH_LEN);

    if (w->has_row) {
        snprintf(sql, sizeof(sql), "UPDATE audit_journal SET shipped_seq = "
                 "%" PRIu64 ", head_hash = X'%s', updated_at = "
                 "UTC_TIMESTAMP(6) WHERE node = '%s' AND writer_id = "
                 "%" PRIu32 " AND shipped_seq = %" PRIu64, last, head,
                 sh->node_sql, w->writer_id, w->shipped);

    } else {
        snprintf(sql, sizeof(sql), "INSERT INTO audit_journal (node, "
                 "writer_id, shipped_seq, head_hash, updated_at) VALUES "
                 "('%s', %" PRIu32 ", %" PRIu64 ", X'%s', UTC_TIMESTAMP(6))",
                 sh->node_sql, w->writer_id, last, head);
    }

    if (caud_ship_query(sh, sql, "audit_journal") != 0) {
        return -1;
    }

    if (mysql_affected_rows(sh->m) != 1) {
        caud_ship_errf(sh->err, sizeof(sh->err), "audit_journal: "
                       "shipped_seq is no longer %" PRIu64 " (another "
                       "shipper on this journal?)", w->shipped);
        return -1;
    }

    if (caud_ship_query(sh, "COMMIT", "COMMIT") != 0) {
        return -1;
    }

    w->shipped = last;
    memcpy(w->head, entry, CAUD_HASH_LEN);
    w->has_row = 1;

    sh->stats.shipped += n;
    sh->stats.batches++;

    return 0;
}


static int
caud_ship_note_read(const char *path, char *buf, size_t size, size_t *len)
{
    int      fd;
    ssize_t  n;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }

    n = read(fd, buf, size);
    close(fd);

    if (n < 0 || (size_t) n == size) {
        errno = n < 0 ? errno : EFBIG;
        return -1;
    }

    *len = n;

    return 0;
}


/* stores one checkpoint note; autocommit, it stands on its own */
static int
caud_ship_note_store(caud_shipper_t *sh, caud_ship_writer_t *w,
    uint64_t size)
{
    char               path[4096], note[CAUD_NOTE_MAX + 1];
    char               esc[2 * CAUD_NOTE_MAX + 1], root[2 * CAUD_HASH_LEN + 1];
    char               sql[2 * CAUD_NOTE_MAX + 512], why[256];
    size_t             len;
    caud_checkpoint_t  cp;

    why[0] = '\0';

    if (caud_checkpoint_path(path, sizeof(path), sh->dir, w->writer_id, size)
        != 0
        || caud_ship_note_read(path, note, sizeof(note), &len) != 0)
    {
        caud_ship_errf(sh->err, sizeof(sh->err), "checkpoint %s: %s", path,
                       strerror(errno));
        return -1;
    }

    if (caud_checkpoint_parse(note, len, &cp, why, sizeof(why)) != 0
        || cp.size != size)
    {
        caud_ship_errf(sh->err, sizeof(sh->err), "checkpoint %s: %s", path,
                       why[0] ? why : "the tree size is not the file name's");
        return -1;
    }

    mysql_real_escape_string(sh->m, esc, note, len);
    caud_hex(root, cp.root, CAUD_HASH_LEN);

    snprintf(sql, sizeof(sql), "INSERT INTO audit_checkpoint (node, "
             "writer_id, size, root, note, stored_at) VALUES ('%s', "
             "%" PRIu32 ", %" PRIu64 ", X'%s', '%s', UTC_TIMESTAMP(6))",
             sh->node_sql, w->writer_id, size, root, esc);

    if (caud_ship_query(sh, sql, "audit_checkpoint") != 0) {
        return -1;
    }

    w->cp_stored = size;
    sh->stats.checkpoints++;

    return 0;
}


/* the checkpoint files of w covered by shipped_seq and not yet stored */
static int
caud_ship_checkpoints(caud_shipper_t *sh, caud_ship_writer_t *w)
{
    int             rc;
    char            sql[512];
    size_t          i, n;
    uint64_t       *sizes;
    MYSQL_RES      *res;
    MYSQL_ROW       row;
    unsigned long  *lens;

    if (caud_checkpoint_list(sh->dir, w->writer_id, &sizes, &n) != 0) {
        caud_ship_errf(sh->err, sizeof(sh->err), "checkpoints in %s: %s",
                       sh->dir, strerror(errno));
        return -1;
    }

    rc = 0;

    if (n == 0 || sizes[0] > w->shipped) {
        goto done;
    }

    if (!w->cp_known) {
        snprintf(sql, sizeof(sql), "SELECT COALESCE(MAX(size), 0) FROM "
                 "audit_checkpoint WHERE node = '%s' AND writer_id = "
                 "%" PRIu32, sh->node_sql, w->writer_id);

        res = caud_ship_select(sh, sql, &row, &lens);
        if (res == NULL) {
            rc = -1;
            goto done;
        }

        w->cp_stored = (row && row[0]) ? strtoull(row[0], NULL, 10) : 0;
        w->cp_known = 1;
        mysql_free_result(res);
    }

    for (i = 0; i < n && sizes[i] <= w->shipped; i++) {
        if (sizes[i] > w->cp_stored
            && caud_ship_note_store(sh, w, sizes[i]) != 0)
        {
            rc = -1;
            break;
        }
    }

done:

    free(sizes);

    return rc;
}


/* how many records the next batch may take, starting at seq from */
static size_t
caud_ship_limit(caud_shipper_t *sh, uint64_t from, uint64_t upto)
{
    if (upto == 0 || (upto >= from && upto - from + 1 >= sh->batch)) {
        return sh->batch;
    }

    return upto < from ? 0 : (size_t) (upto - from + 1);
}


/*
 * The batches, up to the journal's end or upto.  While the server
 * inserts one batch, the next is read from the journal.
 */
static int
caud_ship_cancelled(caud_shipper_t *sh)
{
    return sh->cancel != NULL && __atomic_load_n(sh->cancel, __ATOMIC_ACQUIRE);
}


static int
caud_ship_batches(caud_shipper_t *sh, caud_ship_writer_t *w, uint64_t upto,
    int64_t *total)
{
    int       n, next, status, ret;
    char      why[sizeof(sh->err)];
    uint64_t  first, last;
    uint8_t   entry[CAUD_HASH_LEN];

    n = caud_ship_fill(sh, w, caud_ship_limit(sh, w->next, upto), w->head);

    while (n > 0) {
        first = sh->seq[0];
        last = sh->seq[n - 1];
        memcpy(entry, sh->hashes + (n - 1) * 2 * CAUD_HASH_LEN
                      + CAUD_HASH_LEN, CAUD_HASH_LEN);

        if (caud_ship_send(sh, &status, &ret) != 0) {
            return -1;
        }

        /*
         * A cancelled call commits the batch in flight and reads no
         * more: the rest stays in the journal for the next call (a
         * stopping worker must not wait for a whole backlog).
         */
        next = caud_ship_cancelled(sh)
               ? 0
               : caud_ship_fill(sh, w, caud_ship_limit(sh, last + 1, upto),
                                entry);
        if (next < 0) {
            /* commit what is good, then report the damage */
            memcpy(why, sh->err, sizeof(why));
        }

        if (caud_ship_complete(sh, w, status, ret, first, last, entry)
            != 0)
        {
            return -1;
        }

        *total += n;

        if (next < 0) {
            memcpy(sh->err, why, sizeof(why));
            return -1;
        }

        n = next;
    }

    return n < 0 ? -1 : 0;
}


void
caud_shipper_set_cancel(caud_shipper_t *sh, const int *flag)
{
    sh->cancel = flag;
}


/*
 * shipped_seq and head_hash are read from MariaDB before a call ships,
 * unless this shipper's own last commit set them: the guarded UPDATE
 * of caud_ship_complete() (WHERE shipped_seq = ours) and the unique
 * keys of audit_event refuse a batch built on a stale position, so the
 * SELECT only saved a failed round in a case that needs two shippers
 * on one journal (an adopted journal, which always reads it).  That
 * SELECT was one of the four MariaDB round trips of every round.
 */
static int
caud_ship_cached(caud_ship_writer_t *w, uint64_t upto)
{
    return w->pos_known && upto > w->shipped;
}


int64_t
caud_shipper_ship(caud_shipper_t *sh, uint32_t writer_id, uint64_t upto,
    char *err, size_t errlen)
{
    int                  cached, retried;
    int64_t              total;
    caud_ship_writer_t  *w;

    (void) mysql_thread_init();

    sh->err[0] = '\0';
    total = 0;

    w = caud_ship_writer(sh, writer_id, 1);
    if (w == NULL) {
        caud_ship_errf(err, errlen, "journal %" PRIu32 ": out of memory",
                       writer_id);
        return -1;
    }

    w->used = ++sh->clock;
    retried = 0;

again:

    cached = caud_ship_cached(w, upto);

    if ((sh->m == NULL && caud_ship_connect(sh) != 0)
        || (!cached && caud_ship_position(sh, w) != 0)
        || caud_ship_reader(sh, w) != 0)
    {
        goto fail;
    }

    if (caud_ship_batches(sh, w, upto, &total) != 0) {
        if (cached && total == 0 && !retried && sh->m) {
            /* the position may be stale: read it, try once more */
            (void) mysql_rollback(sh->m);
            caud_reader_close(w->reader);
            w->reader = NULL;
            w->pos_known = 0;
            sh->err[0] = '\0';
            retried = 1;
            goto again;
        }

        goto fail;
    }

    if (caud_ship_checkpoints(sh, w) != 0) {
        goto fail;
    }

    return total;

fail:

    caud_ship_errf(err, errlen, "journal %" PRIu32 ": %s", writer_id,
                   sh->err[0] ? sh->err : "failed");

    sh->stats.failed++;

    if (sh->m) {
        (void) mysql_rollback(sh->m);
    }

    caud_ship_disconnect(sh);
    caud_reader_close(w->reader);
    w->reader = NULL;
    w->pos_known = 0;

    return -1;
}
