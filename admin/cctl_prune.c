
/*
 * conclavectl prune: cleanup of journal segments that MariaDB already
 * has.  The journal rotates into segments (journal-<id>-<first seq>.cj,
 * docs/audit.md); a segment may go when every record in it is at or
 * below the journal's shipped_seq in audit_journal (shipped exactly
 * once, in the same transaction that moved shipped_seq) and it is older
 * than --keep-days.  The newest segment of a journal is never removed:
 * the writer appends to it.  Shipping resumes after the removed ones (a
 * reader trusts the prev_hash in the next segment's header, caud.h), and
 * MariaDB keeps the whole chain; the journal witness of "verify" then
 * starts later, which it reports until signed retention tombstones
 * exist (COMPLIANCE.md 7.4).  Hence an explicit command, not a timer.
 *
 * Legal holds: a segment holding a record an active hold covers (the
 * same rule as a retention run, caud_retention.c: a custodian as sender
 * or peer, or one of the hold's rooms, inside its time range) stays,
 * and so do the later segments of its journal: the journal witness is
 * kept whole from the held record on, and removals stay a prefix, the
 * only gap "verify" accepts.  Releasing the hold lets a later prune go
 * on.
 */


#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mysql.h>

#include "cctl.h"


typedef struct {
    uint32_t   id;
    uint64_t   first;
    char       name[64];
} cctl_segment_t;


static int
cctl_segment_cmp(const void *a, const void *b)
{
    const cctl_segment_t  *x = a, *y = b;

    if (x->id != y->id) {
        return x->id < y->id ? -1 : 1;
    }

    return (x->first > y->first) - (x->first < y->first);
}


/* every segment file of the directory, sorted by journal, then seq */
static cctl_segment_t *
cctl_segments(const char *dir, size_t *n)
{
    DIR             *d;
    size_t           cap;
    struct dirent   *e;
    cctl_segment_t  *segs, *s;
    unsigned long    id;
    unsigned long long  first;
    char             tail[8];

    d = opendir(dir);
    if (d == NULL) {
        return NULL;
    }

    cap = 64;
    *n = 0;
    segs = malloc(cap * sizeof(cctl_segment_t));

    while (segs && (e = readdir(d)) != NULL) {
        if (sscanf(e->d_name, "journal-%lu-%20llu%7s", &id, &first, tail) != 3
            || strcmp(tail, ".cj") != 0 || strlen(e->d_name) >= 64)
        {
            continue;
        }

        if (*n == cap) {
            cap *= 2;
            s = realloc(segs, cap * sizeof(cctl_segment_t));
            if (s == NULL) {
                free(segs);
                segs = NULL;
                break;
            }
            segs = s;
        }

        s = &segs[(*n)++];
        s->id = (uint32_t) id;
        s->first = first;
        strcpy(s->name, e->d_name);
    }

    closedir(d);

    if (segs) {
        qsort(segs, *n, sizeof(cctl_segment_t), cctl_segment_cmp);
    }

    return segs;
}


/* audit_journal.shipped_seq of one journal; 0 when MariaDB has none */
static int
cctl_shipped(MYSQL *m, const char *node, uint32_t id, uint64_t *seq)
{
    char        q[512], esc[160];
    MYSQL_ROW   row;
    MYSQL_RES  *res;

    if (strlen(node) > 64) {
        return -1;
    }

    mysql_real_escape_string(m, esc, node, strlen(node));
    snprintf(q, sizeof(q), "SELECT shipped_seq FROM audit_journal WHERE "
             "node = '%s' AND writer_id = %" PRIu32, esc, id);

    if (mysql_query(m, q) != 0 || (res = mysql_store_result(m)) == NULL) {
        return -1;
    }

    row = mysql_fetch_row(res);
    *seq = (row && row[0]) ? strtoull(row[0], NULL, 10) : 0;
    mysql_free_result(res);

    return 0;
}


/* 1 when a record of journal id, seqs first..last, is under a hold */
static int
cctl_held(MYSQL *m, const char *node, uint32_t id, uint64_t first,
    uint64_t last, int *held)
{
    char        q[1536], esc[160];
    MYSQL_RES  *res;

    if (strlen(node) > 64) {
        return -1;
    }

    mysql_real_escape_string(m, esc, node, strlen(node));
    snprintf(q, sizeof(q), "SELECT 1 FROM audit_record r JOIN legal_hold h "
             "ON h.released_at IS NULL JOIN legal_hold_scope s ON "
             "s.hold_id = h.id WHERE r.node = '%s' AND r.writer_id = %"
             PRIu32 " AND r.seq BETWEEN %" PRIu64 " AND %" PRIu64 " AND "
             "(h.since_us IS NULL OR h.since_us = 0 OR r.ts_utc_us >= "
             "h.since_us) AND (h.until_us IS NULL OR h.until_us = 0 OR "
             "r.ts_utc_us < h.until_us) AND ((s.kind = 'user' AND "
             "(r.actor_user = s.jid OR r.peer = s.jid)) OR (s.kind = "
             "'room' AND r.peer = s.jid)) LIMIT 1", esc, id, first, last);

    if (mysql_query(m, q) != 0 || (res = mysql_store_result(m)) == NULL) {
        return -1;
    }

    *held = mysql_num_rows(res) > 0;
    mysql_free_result(res);

    return 0;
}


int
cctl_prune(cctl_conf_t *cf, unsigned keep_days)
{
    int              dfd, rc, held;
    char             err[512], path[4096];
    MYSQL           *m;
    size_t           i, n, pruned;
    time_t           cutoff;
    uint32_t         stop;
    uint64_t         shipped, bytes;
    struct stat      st;
    cctl_segment_t  *segs;

    if (cctl_conf_db(cf, err, sizeof(err)) != 0
        || (m = caud_db_connect(&cf->db, err, sizeof(err))) == NULL)
    {
        fprintf(stderr, "conclavectl: %s\n", err);
        return CCTL_ERROR;
    }

    segs = cctl_segments(cf->audit_dir, &n);
    if (segs == NULL) {
        fprintf(stderr, "conclavectl: %s: %s\n", cf->audit_dir,
                strerror(errno));
        mysql_close(m);
        return CCTL_ERROR;
    }

    cutoff = time(NULL) - (time_t) keep_days * 86400;
    pruned = 0;
    bytes = 0;
    rc = CCTL_OK;
    shipped = 0;
    stop = UINT32_MAX;

    for (i = 0; i < n; i++) {
        if (segs[i].id == stop) {
            /* a held segment before: this journal keeps the rest */
            continue;
        }

        if (i == 0 || segs[i].id != segs[i - 1].id) {
            if (cctl_shipped(m, cf->audit_node, segs[i].id, &shipped) != 0) {
                fprintf(stderr, "conclavectl: prune: %s\n", mysql_error(m));
                rc = CCTL_ERROR;
                break;
            }
        }

        /* the newest segment of a journal stays; the others hold
         * first .. next first - 1 */
        if (i + 1 == n || segs[i + 1].id != segs[i].id
            || segs[i + 1].first - 1 > shipped)
        {
            continue;
        }

        snprintf(path, sizeof(path), "%s/%s", cf->audit_dir, segs[i].name);

        if (stat(path, &st) != 0 || st.st_mtime > cutoff) {
            continue;
        }

        if (cctl_held(m, cf->audit_node, segs[i].id, segs[i].first,
                      segs[i + 1].first - 1, &held) != 0)
        {
            fprintf(stderr, "conclavectl: prune: %s\n", mysql_error(m));
            rc = CCTL_ERROR;
            break;
        }

        if (held) {
            printf("kept %s and later segments of journal %" PRIu32
                   " (records %" PRIu64 "-%" PRIu64 ": a legal hold)\n",
                   segs[i].name, segs[i].id, segs[i].first,
                   segs[i + 1].first - 1);
            stop = segs[i].id;
            continue;
        }

        if (unlink(path) != 0) {
            fprintf(stderr, "conclavectl: %s: %s\n", path, strerror(errno));
            rc = CCTL_FINDINGS;
            continue;
        }

        printf("removed %s (records %" PRIu64 "-%" PRIu64 ", shipped)\n",
               segs[i].name, segs[i].first, segs[i + 1].first - 1);
        pruned++;
        bytes += (uint64_t) st.st_size;
    }

    /* the removals are durable before we say so */
    dfd = open(cf->audit_dir, O_RDONLY | O_DIRECTORY);
    if (dfd != -1) {
        (void) fsync(dfd);
        close(dfd);
    }

    printf("pruned %zu segment%s, %" PRIu64 " bytes\n", pruned,
           pruned == 1 ? "" : "s", bytes);

    free(segs);
    mysql_close(m);

    return rc;
}
