
/*
 * verify's MariaDB pass (caud_verify.c holds the report, the checkpoint
 * notes and the journal directory): every writer's rows streamed in seq
 * order, entry_hash against payload and prev_hash, the payload's own
 * seq, the links between rows, gapless seqs up to
 * audit_journal.shipped_seq, head_hash, the columns copied out of the
 * payload, and the stored checkpoints.  Where the same writer's journal
 * is in the directory it is a second witness: every row's bytes must
 * equal the journal record's.
 */


#define _GNU_SOURCE

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mysql.h>

#include "caud.h"
#include "caud_verify_int.h"


#define CAUD_V_SQL_MAX      1024
#define CAUD_V_NODE_MAX     64        /* audit_*.node VARCHAR(64) */


/* the journal in the directory beside a MariaDB journal */
typedef struct {
    caud_reader_t  *r;
    caud_frame_t    f;
    int             have;               /* f holds a frame */
    int             done;
    int             ended;              /* read to its end, undamaged */
    uint64_t        last;               /* the last seq read */
} caud_vwitness_t;


/* one writer's state while its rows stream by */
typedef struct {
    uint64_t         shipped;
    uint8_t          head_hash[CAUD_HASH_LEN];
    int              has_head;

    uint64_t         next;             /* the seq the chain expects */
    uint8_t          head[CAUD_HASH_LEN];
    int              linked;           /* check the next row's prev_hash */
    uint8_t          at_shipped[CAUD_HASH_LEN];
    int              have_shipped;

    caud_vcp_t      *cps;
    size_t           ncps;
    size_t           cpi;
    uint64_t         signed_upto;      /* the largest valid checkpoint */
    uint64_t         ins_from;         /* rows beyond shipped_seq, */
    uint64_t         ins_to;           /* reported as one range */

    caud_vwitness_t  wit;

    caud_tomb_t     *tombs;            /* retention's, signed */
    size_t           ntombs;
    size_t           ti;
} caud_vstream_t;


/*
 * The row's columns, in the SELECT's order: seq, payload, prev_hash,
 * entry_hash, ts_utc_us, then caud_column_name[] (caud_columns() in
 * caud_db.c computes what the shipper copied out of the payload; an
 * UPDATE of one of those copies alone leaves the hashes intact and is
 * tampering all the same).
 */
#define CAUD_V_SEQ      0
#define CAUD_V_PAYLOAD  1
#define CAUD_V_PREV     2
#define CAUD_V_ENTRY    3
#define CAUD_V_TS       4
#define CAUD_V_COL0     5


static const uint8_t  caud_v_zero[CAUD_HASH_LEN];


static int
caud_vdb_query(caud_verify_t *v, MYSQL *m, const char *sql)
{
    if (mysql_real_query(m, sql, strlen(sql)) != 0) {
        caud_verrf(v, "mariadb: %s (%.120s)", mysql_error(m), sql);
        return -1;
    }

    return 0;
}


static uint64_t
caud_vdb_u64(const char *s)
{
    return s ? strtoull(s, NULL, 10) : 0;
}


/* the node, quoted for SQL */
static int
caud_vdb_node(caud_verify_t *v, MYSQL *m, char *buf, size_t size)
{
    size_t  n;

    n = strlen(v->node);
    if (n > CAUD_V_NODE_MAX || 2 * n + 3 > size) {
        caud_verrf(v, "node name longer than %d bytes", CAUD_V_NODE_MAX);
        return -1;
    }

    buf[0] = '\'';
    n = mysql_real_escape_string(m, buf + 1, v->node, n);
    buf[n + 1] = '\'';
    buf[n + 2] = '\0';

    return 0;
}


/* one audit_checkpoint row (size, root, note): 1 valid */
static int
caud_vdb_cp(caud_verify_t *v, MYSQL_ROW row, unsigned long *len,
    caud_vcp_t *cp)
{
    uint64_t  size;

    size = caud_vdb_u64(row[0]);

    if (!caud_vnote(v, size, row[2] ? row[2] : "", row[2] ? len[2] : 0,
                    "mariadb", cp))
    {
        return 0;
    }

    if (row[1] == NULL || len[1] != CAUD_HASH_LEN
        || memcmp(row[1], cp->root, CAUD_HASH_LEN) != 0)
    {
        caud_vfind(v, " checkpoint %" PRIu64 ": changed (mariadb: the root "
                   "column differs from the signed note)", size);
    }

    return 1;
}


/*
 * The stored checkpoints of the current writer, checked one by one; a
 * size beyond shipped_seq is a truncation (rows and shipped_seq were
 * both cut back below a signed size).
 */
static int
caud_vdb_cps(caud_verify_t *v, MYSQL *m, const char *node,
    caud_vstream_t *st)
{
    char           sql[CAUD_V_SQL_MAX];
    size_t         n;
    uint64_t       size, over;
    MYSQL_ROW      row;
    MYSQL_RES     *res;

    snprintf(sql, sizeof(sql), "SELECT size, root, note FROM "
             "audit_checkpoint WHERE node = %s AND writer_id = %" PRIu32
             " ORDER BY size", node, v->writer);

    if (caud_vdb_query(v, m, sql) != 0
        || (res = mysql_store_result(m)) == NULL)
    {
        caud_verrf(v, "mariadb: %s", mysql_error(m));
        return -1;
    }

    st->cps = calloc(mysql_num_rows(res) + 1, sizeof(caud_vcp_t));
    if (st->cps == NULL) {
        mysql_free_result(res);
        caud_verrf(v, "out of memory");
        return -1;
    }

    n = 0;
    over = 0;

    while ((row = mysql_fetch_row(res)) != NULL) {
        size = caud_vdb_u64(row[0]);

        if (caud_vdb_cp(v, row, mysql_fetch_lengths(res), &st->cps[n])) {
            over = size > st->shipped ? size : over;
            st->signed_upto = size;
        }

        n++;
    }

    mysql_free_result(res);

    if (over) {
        caud_vfind(v, " truncated: shipped_seq %" PRIu64 " < checkpoint %"
                   PRIu64 " (mariadb: records %" PRIu64 "..%" PRIu64
                   " gone)", st->shipped, over, st->shipped + 1, over);
    }

    st->ncps = n;
    v->db.checkpoints += n;

    return 0;
}


/* ------------------------------------------------------------------ */
/* the journal as a witness for the rows */

static void
caud_vwit_open(caud_verify_t *v, caud_vwitness_t *w)
{
    char      e[512];
    uint64_t  first;

    memset(w, 0, sizeof(caud_vwitness_t));
    w->done = 1;

    if (v->o->dir == NULL
        || caud_vfirst_seq(v->o->dir, v->writer, &first) != 0
        || first == 0
        || caud_reader_open(v->o->dir, v->writer, first, &w->r, e,
                            sizeof(e)) != 0)
    {
        return;
    }

    w->done = 0;
}


/* the journal's frame seq, or NULL once the journal has no more (its
 * damage was reported by the directory pass) */
static const caud_frame_t *
caud_vwit_get(caud_vwitness_t *w, uint64_t seq)
{
    int  rc;

    while (!w->done && (!w->have || w->f.seq < seq)) {
        rc = caud_reader_next(w->r, &w->f);
        if (rc != 1) {
            w->done = 1;
            w->have = 0;
            w->ended = (rc == 0);
            break;
        }

        w->have = 1;
        w->last = w->f.seq;
    }

    return (w->have && w->f.seq == seq) ? &w->f : NULL;
}


static void
caud_vwit_close(caud_vwitness_t *w)
{
    caud_reader_close(w->r);
    w->r = NULL;
}


/* ------------------------------------------------------------------ */
/* rows */

/*
 * The payload's own top-level "seq", found without a full parse (this
 * runs once a row): the canonical encoding is compact, and inside a
 * string a '"' is always escaped, so "seq": at depth 1 right after '{'
 * or ',' is the key.  0 when there is none.
 */
static uint64_t
caud_vseq(const char *p, size_t n)
{
    int       depth, in_str;
    size_t    i;
    uint64_t  s;

    depth = 0;
    in_str = 0;

    for (i = 0; i < n; i++) {
        if (in_str) {
            if (p[i] == '\\') {
                i++;

            } else if (p[i] == '"') {
                in_str = 0;
            }

            continue;
        }

        switch (p[i]) {

        case '{':
        case '[':
            depth++;
            break;

        case '}':
        case ']':
            depth--;
            break;

        case '"':
            if (depth == 1 && n - i > 6 && memcmp(p + i, "\"seq\":", 6) == 0
                && (p[i - 1] == '{' || p[i - 1] == ','))
            {
                for (s = 0, i += 6; i < n && p[i] >= '0' && p[i] <= '9';
                     i++)
                {
                    if (s > (UINT64_MAX - 9) / 10) {
                        return 0;
                    }

                    s = s * 10 + (p[i] - '0');
                }

                return s;
            }

            in_str = 1;
            break;
        }
    }

    return 0;
}


/*
 * The copied columns against what caud_columns() makes of the payload:
 * 0 all agree, 1 *col names the first that does not, -1 out of memory.
 */
static int
caud_vdb_columns(caud_verify_t *v, MYSQL_ROW row, unsigned long *len,
    const char **col)
{
    int             i, n, k;
    char            num[32];
    caud_columns_t  c;

    v->colbuf.len = 0;

    if (caud_columns(row[CAUD_V_PAYLOAD], len[CAUD_V_PAYLOAD], &c,
                     &v->colbuf) < 0)
    {
        caud_verrf(v, "out of memory");
        return -1;
    }

    n = snprintf(num, sizeof(num), "%" PRId64, c.ts_utc_us);

    if (row[CAUD_V_TS] == NULL || len[CAUD_V_TS] != (unsigned long) n
        || memcmp(row[CAUD_V_TS], num, n) != 0)
    {
        *col = "ts_utc_us";
        return 1;
    }

    for (i = 0; i < CAUD_NCOLS; i++) {
        k = CAUD_V_COL0 + i;

        if (c.null[i] ? row[k] != NULL
                      : (row[k] == NULL || len[k] != c.len[i]
                         || memcmp(row[k], v->colbuf.data + c.off[i],
                                   c.len[i]) != 0))
        {
            *col = caud_column_name[i];
            return 1;
        }
    }

    return 0;
}


/*
 * A row that neither the journal nor its link vouches for: returns 1
 * when it is at fault, 2 when the row before it is (re-hashed), 0 when
 * it is sound after all.  Without the journal, a row that is not
 * self-consistent was altered, and a self-consistent row that holds
 * another seq was moved.
 */
static int
caud_vdb_suspect(caud_verify_t *v, caud_vstream_t *st, uint64_t seq,
    MYSQL_ROW row, unsigned long *len, const caud_frame_t *f, int self)
{
    uint64_t  ps;

    ps = caud_vseq(row[CAUD_V_PAYLOAD], len[CAUD_V_PAYLOAD]);

    if (self && ps && ps != seq) {
        caud_vfind(v, " seq %" PRIu64 ": reordered (mariadb: row holds "
                   "record %" PRIu64 ")", seq, ps);
        return 1;
    }

    if (f) {
        caud_vfind(v, " seq %" PRIu64 ": changed (mariadb: %s the journal, "
                   "%s offset %" PRIu64 ")", seq,
                   self ? "payload and hashes differ from"
                        : "entry_hash does not match the payload; bytes "
                          "differ from", f->file, f->offset);
        return 1;
    }

    if (!self) {
        caud_vfind(v, " seq %" PRIu64 ": changed (mariadb: entry_hash does "
                   "not match the payload)", seq);
        return 1;
    }

    if (ps != seq) {
        caud_vfind(v, " seq %" PRIu64 ": changed (mariadb: the payload "
                   "carries no seq)", seq);
        return 1;
    }

    if (st->linked
        && memcmp(row[CAUD_V_PREV], st->head, CAUD_HASH_LEN) != 0)
    {
        /* the row before was rewritten and re-hashed: its own links
         * held, this one's prev_hash still names the original */
        caud_vfind(v, " seq %" PRIu64 ": changed (mariadb: re-hashed; "
                   "seq %" PRIu64 "'s prev_hash does not match its "
                   "entry_hash)", seq - 1, seq);
        return 2;
    }

    return 0;
}


/*
 * Classifies a row at the seq the chain expects: 1 when a finding names
 * it, 2 when one names the row before, 0 when it is sound, -1 on error.
 * The journal, where it has the record, decides; else the row's hash
 * and its link to the row before.
 */
static int
caud_vdb_row(caud_verify_t *v, caud_vstream_t *st, uint64_t seq,
    MYSQL_ROW row, unsigned long *len)
{
    int                  rc, cols;
    uint8_t              h[CAUD_HASH_LEN];
    const char          *col;
    const uint8_t       *prev, *entry;
    const caud_frame_t  *f;

    prev = (const uint8_t *) row[CAUD_V_PREV];
    entry = (const uint8_t *) row[CAUD_V_ENTRY];

    if (row[CAUD_V_PAYLOAD] == NULL || prev == NULL || entry == NULL
        || len[CAUD_V_PREV] != CAUD_HASH_LEN
        || len[CAUD_V_ENTRY] != CAUD_HASH_LEN)
    {
        caud_vfind(v, " seq %" PRIu64 ": changed (mariadb: payload or hash "
                   "missing)", seq);
        return 1;
    }

    rc = 0;
    f = caud_vwit_get(&st->wit, seq);

    if (f && f->len == len[CAUD_V_PAYLOAD]
        && memcmp(f->payload, row[CAUD_V_PAYLOAD], f->len) == 0
        && memcmp(f->prev_hash, prev, CAUD_HASH_LEN) == 0
        && memcmp(f->entry_hash, entry, CAUD_HASH_LEN) == 0)
    {
        /* the journal vouches for the bytes (its reader hashed them):
         * only the copies may lie */
        goto columns;
    }

    if (f == NULL && st->wit.ended && seq > st->wit.last
        && seq > st->signed_upto)
    {
        /* the shipper ships only what the journal made durable */
        caud_vfind(v, " seq %" PRIu64 ": inserted (mariadb: not in the "
                   "journal, which ends at seq %" PRIu64 ")", seq,
                   st->wit.last);
        return 1;
    }

    if (caud_hasher_entry(v->hasher, row[CAUD_V_PAYLOAD],
                          len[CAUD_V_PAYLOAD], prev, h) != 0)
    {
        caud_verrf(v, "SHA-256 failed");
        return -1;
    }

    /* in its place in the chain, the link proves the position, so the
     * payload's own seq is only read when something is wrong */
    if (f || memcmp(h, entry, CAUD_HASH_LEN) != 0 || !st->linked
        || memcmp(prev, st->head, CAUD_HASH_LEN) != 0)
    {
        rc = caud_vdb_suspect(v, st, seq, row, len, f,
                              memcmp(h, entry, CAUD_HASH_LEN) == 0);
        if (rc == 1) {
            return 1;
        }
    }

columns:

    cols = caud_vdb_columns(v, row, len, &col);
    if (cols < 0) {
        return -1;
    }

    if (cols == 1) {
        caud_vfind(v, " seq %" PRIu64 ": changed (mariadb: column %s "
                   "differs from the payload)", seq, col);
        return 1;
    }

    return rc;
}


static void
caud_vdb_inserted(caud_verify_t *v, caud_vstream_t *st)
{
    char  detail[64];

    if (st->ins_from == 0) {
        return;
    }

    snprintf(detail, sizeof(detail), "mariadb: not in the chain, "
             "shipped_seq is %" PRIu64, st->shipped);
    caud_vfind_range(v, st->ins_from, st->ins_to, "inserted", detail);
    st->ins_from = 0;
}


/*
 * Rows retention deleted (docs/compliance.md "Tombstones"): a signed
 * tombstone keeps the row's place, so the chain is checked across the
 * gap (its prev_hash links to the row before, the next row links to its
 * entry_hash, a checkpoint may end on it) and nothing is "deleted".
 * Fills the gap before seq as far as tombstones reach.
 */
static void
caud_vdb_tombs(caud_verify_t *v, caud_vstream_t *st, uint64_t seq)
{
    caud_tomb_t         *t;
    const caud_frame_t  *f;

    while (st->ti < st->ntombs && st->tombs[st->ti].seq < st->next) {
        st->ti++;
    }

    while (st->next < seq && st->ti < st->ntombs
           && st->tombs[st->ti].seq < seq)
    {
        t = &st->tombs[st->ti++];

        if (t->seq > st->next) {
            /* rows gone without a (valid) tombstone before this one */
            caud_vfind_range(v, st->next, t->seq - 1, "deleted", "mariadb: "
                             "rows missing");
            st->linked = 0;
            st->next = t->seq;
        }

        f = caud_vwit_get(&st->wit, t->seq);

        if (f && (memcmp(f->entry_hash, t->entry, CAUD_HASH_LEN) != 0
                  || memcmp(f->prev_hash, t->prev, CAUD_HASH_LEN) != 0))
        {
            caud_vfind(v, " seq %" PRIu64 ": changed (mariadb: tombstone "
                       "differs from the journal, %s offset %" PRIu64 ")",
                       t->seq, f->file, f->offset);

        } else if (st->linked
                   && memcmp(t->prev, st->head, CAUD_HASH_LEN) != 0)
        {
            caud_vfind(v, " seq %" PRIu64 ": changed (mariadb: tombstone's "
                       "prev_hash does not link to seq %" PRIu64 ")",
                       t->seq, t->seq - 1);
        }

        while (st->cpi < st->ncps && st->cps[st->cpi].size < t->seq) {
            st->cpi++;
        }

        if (st->cpi < st->ncps && st->cps[st->cpi].size == t->seq) {
            caud_vcp_root(v, &st->cps[st->cpi], t->entry, "mariadb");
        }

        memcpy(st->head, t->entry, CAUD_HASH_LEN);

        if (t->seq == st->shipped) {
            memcpy(st->at_shipped, t->entry, CAUD_HASH_LEN);
            st->have_shipped = 1;
        }

        st->linked = 1;
        st->next++;
    }
}


static void
caud_vdb_tomb_bad(void *data, uint64_t batch, const char *why)
{
    caud_vfind(data, ": bad signature (mariadb: retention batch %" PRIu64
               ": %s)", batch, why);
}


/* a row: the chain bookkeeping around caud_vdb_row() */
static int
caud_vdb_step(caud_verify_t *v, caud_vstream_t *st, MYSQL_ROW row,
    unsigned long *len)
{
    int             flagged;
    uint64_t        seq;
    const uint8_t  *entry;

    seq = caud_vdb_u64(row[CAUD_V_SEQ]);
    v->db.records++;

    if (seq > st->shipped || seq == 0) {
        if (st->ins_from && seq == st->ins_to + 1) {
            st->ins_to = seq;
            return 0;
        }

        caud_vdb_inserted(v, st);
        st->ins_from = seq;
        st->ins_to = seq;
        return 0;
    }

    caud_vdb_tombs(v, st, seq);

    if (seq > st->next) {
        caud_vfind_range(v, st->next, seq - 1, "deleted", "mariadb: rows "
                         "missing");
        st->linked = 0;
    }

    flagged = caud_vdb_row(v, st, seq, row, len);
    if (flagged < 0) {
        return -1;
    }

    /* 2: the finding was the row before; this one is sound */
    flagged = (flagged == 1);
    entry = (const uint8_t *) row[CAUD_V_ENTRY];
    if (entry == NULL || len[CAUD_V_ENTRY] != CAUD_HASH_LEN) {
        entry = caud_v_zero;
    }

    while (st->cpi < st->ncps && st->cps[st->cpi].size < seq) {
        st->cpi++;
    }

    if (!flagged && st->cpi < st->ncps && st->cps[st->cpi].size == seq) {
        caud_vcp_root(v, &st->cps[st->cpi], entry, "mariadb");
    }

    memcpy(st->head, entry, CAUD_HASH_LEN);

    if (seq == st->shipped) {
        memcpy(st->at_shipped, entry, CAUD_HASH_LEN);
        st->have_shipped = !flagged;
    }

    st->linked = !flagged;
    st->next = seq + 1;

    return 0;
}


static int
caud_vdb_rows(caud_verify_t *v, MYSQL *m, const char *node,
    caud_vstream_t *st)
{
    int            rc;
    char           sql[CAUD_V_SQL_MAX];
    size_t         i, n;
    MYSQL_ROW      row;
    MYSQL_RES     *res;
    unsigned long *len;

    n = snprintf(sql, sizeof(sql), "SELECT seq, payload, prev_hash, "
                 "entry_hash, ts_utc_us");
    for (i = 0; i < CAUD_NCOLS; i++) {
        n += snprintf(sql + n, sizeof(sql) - n, ", %s",
                      caud_column_name[i]);
    }

    snprintf(sql + n, sizeof(sql) - n, " FROM audit_record WHERE node = %s "
             "AND writer_id = %" PRIu32 " ORDER BY seq", node, v->writer);

    /* millions of rows: streamed, never held */
    if (caud_vdb_query(v, m, sql) != 0
        || (res = mysql_use_result(m)) == NULL)
    {
        caud_verrf(v, "mariadb: %s", mysql_error(m));
        return -1;
    }

    rc = 0;

    while ((row = mysql_fetch_row(res)) != NULL) {
        len = mysql_fetch_lengths(res);
        if (caud_vdb_step(v, st, row, len) != 0) {
            rc = -1;
            break;
        }
    }

    if (rc == 0 && mysql_errno(m)) {
        caud_verrf(v, "mariadb: %s", mysql_error(m));
        rc = -1;
    }

    mysql_free_result(res);

    return rc;
}


/* after the rows: the tail against shipped_seq and head_hash */
static void
caud_vdb_tail(caud_verify_t *v, caud_vstream_t *st)
{
    if (st->shipped == UINT64_MAX) {
        return;
    }

    caud_vdb_tombs(v, st, st->shipped + 1);

    if (st->next <= st->shipped) {
        caud_vfind_range(v, st->next, st->shipped, "deleted",
                         "mariadb: rows missing below shipped_seq");
        return;
    }

    if (st->shipped == 0) {
        if (st->has_head && memcmp(st->head_hash, caud_v_zero,
                                   CAUD_HASH_LEN) != 0)
        {
            caud_vfind(v, ": changed (mariadb: head_hash set with "
                       "shipped_seq 0)");
        }

        return;
    }

    if (st->have_shipped
        && (!st->has_head
            || memcmp(st->head_hash, st->at_shipped, CAUD_HASH_LEN) != 0))
    {
        caud_vfind(v, " seq %" PRIu64 ": changed (mariadb: entry_hash "
                   "differs from audit_journal.head_hash)", st->shipped);
    }
}


static int
caud_vdb_journal(caud_verify_t *v, MYSQL *m, const char *node,
    uint32_t writer, MYSQL_ROW jrow, unsigned long *jlen)
{
    int             rc;
    caud_vstream_t  st;

    caud_vjournal_begin(v, writer);
    v->db.journals++;

    memset(&st, 0, sizeof(st));
    st.next = 1;
    st.linked = 1;

    if (jrow[1] == NULL) {
        /* its rows are still checked as a chain, only the bound by
         * shipped_seq and head_hash is gone */
        caud_vfind(v, ": deleted (mariadb: rows or checkpoints but no "
                   "audit_journal row)");
        st.shipped = UINT64_MAX;

    } else {
        st.shipped = caud_vdb_u64(jrow[1]);
        if (jrow[2] && jlen[2] == CAUD_HASH_LEN) {
            memcpy(st.head_hash, jrow[2], CAUD_HASH_LEN);
            st.has_head = 1;
        }
    }

    if (caud_vdb_cps(v, m, node, &st) != 0) {
        return -1;
    }

    if (caud_tombs_load(m, v->node, writer, v->vkey, v->o->origin_prefix,
                        &st.tombs, &st.ntombs, caud_vdb_tomb_bad, v, v->err,
                        v->errlen) != 0)
    {
        free(st.cps);
        caud_vjournal_end(v);
        return -1;
    }

    caud_vwit_open(v, &st.wit);

    rc = caud_vdb_rows(v, m, node, &st);
    if (rc == 0) {
        caud_vdb_inserted(v, &st);
        caud_vdb_tail(v, &st);
    }

    caud_vwit_close(&st.wit);
    free(st.tombs);
    free(st.cps);
    caud_vjournal_end(v);

    return rc;
}


int
caud_vdb(caud_verify_t *v)
{
    int             rc;
    char            sql[CAUD_V_SQL_MAX], node[2 * CAUD_V_NODE_MAX + 3];
    MYSQL          *m;
    MYSQL_ROW       row;
    MYSQL_RES      *res;
    unsigned long  *len;

    m = caud_db_connect(v->o->db, v->err, v->errlen);
    if (m == NULL) {
        return -1;
    }

    res = NULL;

    /* one snapshot for every query: a live shipper commits rows and
     * shipped_seq together, and must not look like rows inserted
     * beyond a shipped_seq read a moment earlier */
    if (caud_vdb_node(v, m, node, sizeof(node)) != 0
        || caud_vdb_query(v, m, "SET SESSION TRANSACTION ISOLATION LEVEL "
                          "REPEATABLE READ") != 0
        || caud_vdb_query(v, m, "START TRANSACTION WITH CONSISTENT "
                          "SNAPSHOT, READ ONLY") != 0)
    {
        goto fail;
    }

    /* every writer that left a trace: a journal row, a record or a
     * checkpoint (rows without a journal row were inserted) */
    snprintf(sql, sizeof(sql), "SELECT w.writer_id, j.shipped_seq, "
             "j.head_hash FROM (SELECT writer_id FROM audit_journal WHERE "
             "node = %s UNION SELECT DISTINCT writer_id FROM audit_record "
             "WHERE node = %s UNION SELECT DISTINCT writer_id FROM "
             "audit_checkpoint WHERE node = %s) w LEFT JOIN audit_journal j "
             "ON j.node = %s AND j.writer_id = w.writer_id ORDER BY "
             "w.writer_id", node, node, node, node);

    if (caud_vdb_query(v, m, sql) != 0
        || (res = mysql_store_result(m)) == NULL)
    {
        caud_verrf(v, "mariadb: %s", mysql_error(m));
        goto fail;
    }

    while ((row = mysql_fetch_row(res)) != NULL) {
        len = mysql_fetch_lengths(res);
        rc = caud_vdb_journal(v, m, node, (uint32_t) caud_vdb_u64(row[0]),
                              row, len);
        if (rc != 0) {
            goto fail;
        }
    }

    mysql_free_result(res);
    mysql_close(m);

    if (v->out) {
        fprintf(v->out, "mariadb node %s: %" PRIu64 " journals, %" PRIu64
                " records, %" PRIu64 " checkpoints\n", v->node,
                v->db.journals, v->db.records, v->db.checkpoints);
    }

    return 0;

fail:

    if (res) {
        mysql_free_result(res);
    }

    mysql_close(m);
    return -1;
}
