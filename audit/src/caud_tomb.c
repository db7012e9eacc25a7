
/*
 * Retention tombstones as verify reads them (caud_retention.c writes
 * them; docs/compliance.md "Tombstones").  A batch is accepted only
 * when its note is signed by the verifier key, names this journal, and
 * states the batch's id, row count and the SHA-256 over its rows (seq
 * as 8 bytes big-endian, prev_hash, entry_hash, in seq order).
 */


#define _GNU_SOURCE

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mysql.h>
#include <mysqld_error.h>
#include <openssl/evp.h>

#include "caud.h"


typedef struct {
    uint64_t      id;
    uint64_t      records;
    char         *note;
    size_t        note_len;
    size_t        first;          /* index of its first tombstone */
    EVP_MD_CTX   *md;
} caud_tbatch_t;


static int
caud_tomb_cmp(const void *a, const void *b)
{
    const caud_tomb_t  *x = a, *y = b;

    return x->seq < y->seq ? -1 : x->seq > y->seq;
}


/* closes a batch: keeps its tombstones when its note vouches for them */
static void
caud_tomb_close(caud_tbatch_t *b, size_t *n, const caud_verifier_t *vk,
    const char *prefix, uint32_t writer, caud_tomb_bad_pt bad, void *data)
{
    char           text[CAUD_ORIGIN_MAX + 160], b64[64], e[256];
    size_t         tl, rows;
    uint8_t        digest[32];
    unsigned int   dl;

    rows = *n - b->first;
    EVP_DigestFinal_ex(b->md, digest, &dl);
    EVP_EncodeBlock((unsigned char *) b64, digest, 32);
    snprintf(text, sizeof(text), "%s/%" PRIu32 "/prune\n%" PRIu64 "\n%zu\n"
             "%s\n", prefix, writer, b->id, rows, b64);

    if (b->note == NULL) {
        bad(data, b->id, "tombstones of a batch that does not exist");

    } else if (caud_note_verify(vk, b->note, b->note_len, &tl, e, sizeof(e))
               != 0)
    {
        bad(data, b->id, e);

    } else if (tl != strlen(text) || memcmp(b->note, text, tl) != 0
               || rows != b->records)
    {
        bad(data, b->id, "the tombstones are not the ones its note signs");

    } else {
        b->first = *n;
        return;
    }

    *n = b->first;
}


int
caud_tombs_load(struct st_mysql *m, const char *node, uint32_t writer,
    const caud_verifier_t *vk, const char *prefix, caud_tomb_t **out,
    size_t *nout, caud_tomb_bad_pt bad, void *data, char *err,
    size_t errlen)
{
    int             k, rc;
    char            sql[512], esc[200];
    size_t          n, cap;
    uint8_t         be[8];
    uint64_t        id;
    MYSQL_RES      *res;
    MYSQL_ROW       row;
    unsigned long  *len;
    caud_tomb_t    *t, *nt;
    caud_tbatch_t   b;

    *out = NULL;
    *nout = 0;

    mysql_real_escape_string(m, esc, node, strnlen(node, 64));
    snprintf(sql, sizeof(sql), "SELECT t.batch_id, t.seq, t.prev_hash, "
             "t.entry_hash, b.records, b.note FROM audit_tombstone t LEFT "
             "JOIN audit_prune_batch b ON b.id = t.batch_id AND b.node = "
             "t.node AND b.writer_id = t.writer_id WHERE t.node = '%s' AND "
             "t.writer_id = %" PRIu32 " ORDER BY t.batch_id, t.seq", esc,
             writer);

    if (mysql_real_query(m, sql, strlen(sql)) != 0) {
        if (mysql_errno(m) == ER_NO_SUCH_TABLE) {
            return 0;               /* schema 1: no retention yet */
        }
        snprintf(err, errlen, "mariadb: %s", mysql_error(m));
        return -1;
    }

    res = mysql_use_result(m);
    if (res == NULL) {
        snprintf(err, errlen, "mariadb: %s", mysql_error(m));
        return -1;
    }

    t = NULL;
    n = 0;
    cap = 0;
    rc = 0;
    memset(&b, 0, sizeof(b));
    b.md = EVP_MD_CTX_new();
    b.id = UINT64_MAX;

    while ((row = mysql_fetch_row(res)) != NULL) {
        if (rc != 0) {
            continue;
        }

        len = mysql_fetch_lengths(res);
        id = strtoull(row[0], NULL, 10);

        if (id != b.id) {
            if (b.id != UINT64_MAX) {
                caud_tomb_close(&b, &n, vk, prefix, writer, bad, data);
            }
            free(b.note);
            b.id = id;
            b.first = n;
            b.records = row[4] ? strtoull(row[4], NULL, 10) : 0;
            b.note = row[5] ? strndup(row[5], len[5]) : NULL;
            b.note_len = row[5] ? len[5] : 0;
            EVP_DigestInit_ex(b.md, EVP_sha256(), NULL);
        }

        if (len[2] != CAUD_HASH_LEN || len[3] != CAUD_HASH_LEN) {
            continue;
        }

        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            nt = realloc(t, cap * sizeof(caud_tomb_t));
            if (nt == NULL) {
                snprintf(err, errlen, "out of memory");
                rc = -1;
                continue;
            }
            t = nt;
        }

        t[n].seq = strtoull(row[1], NULL, 10);
        memcpy(t[n].prev, row[2], CAUD_HASH_LEN);
        memcpy(t[n].entry, row[3], CAUD_HASH_LEN);

        for (k = 0; k < 8; k++) {
            be[k] = (uint8_t) (t[n].seq >> (56 - 8 * k));
        }

        EVP_DigestUpdate(b.md, be, 8);
        EVP_DigestUpdate(b.md, row[2], CAUD_HASH_LEN);
        EVP_DigestUpdate(b.md, row[3], CAUD_HASH_LEN);
        n++;
    }

    if (rc == 0 && mysql_errno(m)) {
        snprintf(err, errlen, "mariadb: %s", mysql_error(m));
        rc = -1;
    }

    if (rc == 0 && b.id != UINT64_MAX) {
        caud_tomb_close(&b, &n, vk, prefix, writer, bad, data);
    }

    mysql_free_result(res);
    free(b.note);
    EVP_MD_CTX_free(b.md);

    if (rc != 0) {
        free(t);
        return -1;
    }

    if (n) {
        qsort(t, n, sizeof(caud_tomb_t), caud_tomb_cmp);
    }

    *out = t;
    *nout = n;

    return 0;
}
