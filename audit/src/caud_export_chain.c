
/*
 * The chain in an export (docs/compliance.md "What a verifier needs"):
 * per journal, the entry hashes from the seq before the first exported
 * record up to the newest checkpoint (chain/<writer>.leaves), checked
 * link by link on the way, and the checkpoint note.
 *
 * Reading them is a second pass over the journal's rows in MariaDB
 * (seconds per million).  When the export has no filter but its window,
 * the first exported record is at (or just after) the window's start,
 * so a second connection reads the leaves from the window's start in a
 * thread while the records stream (caud_xchain_start()); at the end the
 * part from the seq before the first exported record is kept.  With a
 * filter, or if that read failed, they are read afterwards, in the
 * export's snapshot (caud_xleaves()).
 */


#define _GNU_SOURCE

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mysql.h>

#include "caud_export_int.h"


/* what one journal's read found */
typedef struct {
    uint64_t   from;            /* the first leaf's seq */
    int        ok;
} caud_xchain_j_t;


struct caud_xchain_s {
    pthread_t          tid;
    caud_export_t     *x;
    caud_xchain_j_t   *js;
    char               err[512];
};


/*
 * The leaves of journal j from seq `from` to j->upto into fp, from
 * audit_record and, where retention pruned a row, its tombstone; each
 * link is checked (each prev_hash is the entry_hash before it) and the
 * last must be the checkpoint's root, so the manifest's signature
 * vouches for a chain this run saw whole.  m streams them.
 */
static int
caud_xleaves_read(MYSQL *m, caud_export_t *x, caud_xjournal_t *j,
    uint64_t from, FILE *fp, char *err, size_t errlen)
{
    int              rc;
    char             sql[1024], node[200];
    size_t           n;
    uint8_t          head[CAUD_HASH_LEN];
    uint64_t         want, seq;
    MYSQL_RES       *res;
    MYSQL_ROW        row;
    unsigned long   *len;

    want = from;
    mysql_real_escape_string(m, node, x->o->node, strlen(x->o->node));

    /* the rows in primary key order, streamed; the UNION with the
     * tombstones needs a sort, so only where retention pruned */
    snprintf(sql, sizeof(sql), "SELECT 1 FROM audit_tombstone WHERE node "
             "= '%s' AND writer_id = %" PRIu32 " AND seq >= %" PRIu64
             " AND seq <= %" PRIu64 " LIMIT 1", node, j->writer, want,
             j->upto);

    if (mysql_real_query(m, sql, strlen(sql)) != 0
        || (res = mysql_store_result(m)) == NULL)
    {
        snprintf(err, errlen, "mariadb: %s", mysql_error(m));
        return -1;
    }

    rc = mysql_num_rows(res) ? 1 : 0;
    mysql_free_result(res);

    snprintf(sql, sizeof(sql), "SELECT seq, prev_hash, entry_hash FROM "
             "audit_record WHERE node = '%s' AND writer_id = %" PRIu32
             " AND seq >= %" PRIu64 " AND seq <= %" PRIu64 "%s", node,
             j->writer, want, j->upto, rc ? "" : " ORDER BY seq");

    if (rc) {
        n = strlen(sql);
        snprintf(sql + n, sizeof(sql) - n, " UNION ALL SELECT seq, "
                 "prev_hash, entry_hash FROM audit_tombstone WHERE node = "
                 "'%s' AND writer_id = %" PRIu32 " AND seq >= %" PRIu64
                 " AND seq <= %" PRIu64 " ORDER BY seq", node, j->writer,
                 want, j->upto);
    }

    if (mysql_real_query(m, sql, strlen(sql)) != 0
        || (res = mysql_use_result(m)) == NULL)
    {
        snprintf(err, errlen, "mariadb: %s", mysql_error(m));
        return -1;
    }

    rc = 0;

    while ((row = mysql_fetch_row(res)) != NULL) {
        if (rc != 0) {
            continue;               /* drain: the connection is needed */
        }

        len = mysql_fetch_lengths(res);
        seq = strtoull(row[0], NULL, 10);

        if (seq != want || len[1] != CAUD_HASH_LEN
            || len[2] != CAUD_HASH_LEN
            || (seq > from && memcmp(row[1], head, CAUD_HASH_LEN) != 0))
        {
            snprintf(err, errlen, "journal %s/%" PRIu32 " seq %" PRIu64
                     ": missing, unlinked or tombstoned twice (run "
                     "conclavectl verify)", x->o->node, j->writer, want);
            rc = -1;
            continue;
        }

        memcpy(head, row[2], CAUD_HASH_LEN);

        if (fwrite(head, CAUD_HASH_LEN, 1, fp) != 1) {
            snprintf(err, errlen, "chain: %s", strerror(errno));
            rc = -1;
        }

        want++;
    }

    if (rc == 0 && mysql_errno(m)) {
        snprintf(err, errlen, "mariadb: %s", mysql_error(m));
        rc = -1;
    }

    mysql_free_result(res);

    if (rc == 0 && (want != j->upto + 1
                    || memcmp(head, j->root, CAUD_HASH_LEN) != 0))
    {
        snprintf(err, errlen, "journal %s/%" PRIu32 ": the chain does not "
                 "end at checkpoint %" PRIu64 "'s root (run conclavectl "
                 "verify)", x->o->node, j->writer, j->upto);
        rc = -1;
    }

    return rc;
}


static int
caud_xchain_path(caud_export_t *x, char *path, size_t size, uint32_t w,
    const char *ext)
{
    snprintf(path, size, "%s/chain", x->stage);
    (void) mkdir(path, 0700);

    return (size_t) snprintf(path, size, "%s/chain/%" PRIu32 ".%s",
                             x->stage, w, ext) < size ? 0 : -1;
}


/* one journal's leaves into chain/<writer>.<ext> */
static int
caud_xleaves_file(MYSQL *m, caud_export_t *x, caud_xjournal_t *j,
    uint64_t from, const char *ext, char *err, size_t errlen)
{
    int    rc;
    char   path[4200];
    FILE  *fp;

    if (caud_xchain_path(x, path, sizeof(path), j->writer, ext) != 0) {
        snprintf(err, errlen, "path too long");
        return -1;
    }

    fp = fopen(path, "w");
    if (fp == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }

    rc = caud_xleaves_read(m, x, j, from, fp, err, errlen);

    if (fclose(fp) != 0 && rc == 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        rc = -1;
    }

    return rc;
}


static void *
caud_xchain_thread(void *data)
{
    size_t            i;
    MYSQL            *m;
    caud_xchain_t    *c = data;
    caud_export_t    *x = c->x;
    caud_xjournal_t  *j;

    m = caud_db_connect(x->db, c->err, sizeof(c->err));
    if (m == NULL) {
        return NULL;
    }

    for (i = 0; i < x->nj; i++) {
        j = &x->js[i];
        c->js[i].from = j->cursor > 1 ? j->cursor : 1;
        c->js[i].ok = caud_xleaves_file(m, x, j, c->js[i].from, "all",
                                        c->err, sizeof(c->err)) == 0;
    }

    mysql_close(m);

    return NULL;
}


/* the leaves of every journal from its window's start, in a thread */
void
caud_xchain_start(caud_export_t *x)
{
    caud_xchain_t  *c;

    if (x->o->user || x->o->room || x->o->since_us || x->o->until_us
        || x->nj == 0)
    {
        return;
    }

    c = calloc(1, sizeof(caud_xchain_t));
    if (c == NULL) {
        return;
    }

    c->x = x;
    c->js = calloc(x->nj, sizeof(caud_xchain_j_t));

    if (c->js == NULL
        || pthread_create(&c->tid, NULL, caud_xchain_thread, c) != 0)
    {
        free(c->js);
        free(c);
        return;
    }

    x->chain = c;
}


/* wait for the thread; the journals it read are marked in its js */
void
caud_xchain_join(caud_export_t *x)
{
    if (x->chain && !x->chain_joined) {
        pthread_join(x->chain->tid, NULL);
        x->chain_joined = 1;
    }
}


void
caud_xchain_free(caud_export_t *x)
{
    caud_xchain_join(x);

    if (x->chain) {
        free(x->chain->js);
        free(x->chain);
        x->chain = NULL;
    }
}


/* chain/<writer>.leaves from the read in the thread: 0, or -1 if it
 * has none to give (then read them now) */
static int
caud_xchain_take(caud_export_t *x, size_t i, uint64_t want)
{
    int       rc;
    char      all[4200], leaves[4200], buf[65536];
    FILE     *in, *out;
    size_t    n;
    uint64_t  from;

    if (x->chain == NULL || !x->chain->js[i].ok) {
        return -1;
    }

    from = x->chain->js[i].from;

    if (want < from
        || caud_xchain_path(x, all, sizeof(all), x->js[i].writer, "all")
           != 0
        || caud_xchain_path(x, leaves, sizeof(leaves), x->js[i].writer,
                            "leaves") != 0)
    {
        return -1;
    }

    if (want == from) {
        return rename(all, leaves);
    }

    /* the part from `want` on: the leaves before it are not the export's
     * (the manifest's Journal: line starts at want) */
    in = fopen(all, "r");
    out = in ? fopen(leaves, "w") : NULL;
    rc = out && fseeko(in, (off_t) ((want - from) * CAUD_HASH_LEN),
                       SEEK_SET) == 0 ? 0 : -1;

    while (rc == 0 && (n = fread(buf, 1, sizeof(buf), in)) > 0) {
        if (fwrite(buf, 1, n, out) != n) {
            rc = -1;
        }
    }

    if (in && ferror(in)) {
        rc = -1;
    }

    if (out && fclose(out) != 0) {
        rc = -1;
    }

    if (in) {
        fclose(in);
    }

    unlink(all);

    return rc;
}


/* chain/<writer>.leaves and .checkpoint of journal i, whose first
 * exported record is j->lo */
int
caud_xleaves(caud_export_t *x, size_t i)
{
    int               rc;
    char              path[4200];
    FILE             *fp;
    uint64_t          want;
    caud_xjournal_t  *j;

    j = &x->js[i];
    want = j->lo > 1 ? j->lo - 1 : 1;

    caud_xchain_join(x);

    if (caud_xchain_take(x, i, want) != 0
        && caud_xleaves_file(x->m, x, j, want, "leaves", x->err,
                             x->errlen) != 0)
    {
        return -1;
    }

    if (caud_xchain_path(x, path, sizeof(path), j->writer, "checkpoint")
        != 0)
    {
        caud_xerr(x, "path too long");
        return -1;
    }

    fp = fopen(path, "w");
    rc = fp && fputs(j->note, fp) != EOF ? 0 : -1;

    if ((fp && fclose(fp) != 0) || rc != 0) {
        caud_xerr(x, "%s: %s", path, strerror(errno));
        return -1;
    }

    return 0;
}


/* the reads of journals that exported nothing: not in the zip */
void
caud_xchain_clean(caud_export_t *x)
{
    char    path[4200];
    size_t  i;

    caud_xchain_join(x);

    for (i = 0; x->chain && i < x->nj; i++) {
        if (caud_xchain_path(x, path, sizeof(path), x->js[i].writer, "all")
            == 0)
        {
            (void) unlink(path);
        }
    }
}
