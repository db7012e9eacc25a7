
/*
 * `conclavectl status`: where each journal stands against MariaDB.
 *
 * The journal side comes from reading the files (the last segment for
 * the last seq, and the unshipped records for the backlog), so it
 * works while MariaDB is down; the database side from audit_journal and
 * audit_checkpoint.  Reading needs no lock, so a live journal is shown
 * as far as its writer has written it.
 */


#define _GNU_SOURCE

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mysql.h>

#include "cctl.h"


#define CCTL_STATUS_MAX  65536


typedef struct {
    uint32_t  writer_id;
    int       in_dir;
    int       in_db;
    int       live;
    int       have_last;
    uint64_t  last_seq;
    uint64_t  shipped_seq;
    int       have_backlog;
    uint64_t  backlog;
    uint64_t  backlog_bytes;
    double    lag_s;
    uint64_t  cp_file;          /* size of the last checkpoint file */
    uint64_t  cp_db;            /* largest stored in MariaDB */
    char      error[320];
} cctl_jstat_t;


typedef struct {
    cctl_jstat_t  *j;
    size_t         n;
    int            db_ok;
    char           db_error[512];
} cctl_status_t;


static cctl_jstat_t *
cctl_jstat(cctl_status_t *st, uint32_t id)
{
    size_t  i;

    for (i = 0; i < st->n; i++) {
        if (st->j[i].writer_id == id) {
            return &st->j[i];
        }
    }

    if (st->n == CCTL_STATUS_MAX) {
        return NULL;
    }

    memset(&st->j[st->n], 0, sizeof(cctl_jstat_t));
    st->j[st->n].writer_id = id;

    return &st->j[st->n++];
}


/* the first seq of writer id's last segment, 0 if it has none */
static uint64_t
cctl_last_segment(const char *dir, uint32_t id)
{
    DIR                 *d;
    char                 pre[32], *end;
    size_t               n;
    uint64_t             first, last;
    struct dirent       *de;

    d = opendir(dir);
    if (d == NULL) {
        return 0;
    }

    n = snprintf(pre, sizeof(pre), "journal-%" PRIu32 "-", id);
    last = 0;

    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, pre, n) != 0
            || strlen(de->d_name) != n + 20 + 3)
        {
            continue;
        }

        errno = 0;
        first = strtoull(de->d_name + n, &end, 10);
        if (errno == 0 && strcmp(end, ".cj") == 0 && first > last) {
            last = first;
        }
    }

    closedir(d);

    return last;
}


/*
 * Reads writer j's journal from seq `from` to its end: counts records
 * and bytes, remembers the first record's time and the last seq.
 */
static int
cctl_scan(const char *dir, cctl_jstat_t *j, uint64_t from, uint64_t *count,
    uint64_t *bytes, int64_t *first_ts, uint64_t *last)
{
    int              rc;
    caud_buf_t       b;
    caud_frame_t     f;
    caud_reader_t   *r;
    caud_columns_t   c;

    *count = 0;
    *bytes = 0;
    *first_ts = 0;

    if (caud_reader_open(dir, j->writer_id, from, &r, j->error,
                         sizeof(j->error)) != 0)
    {
        return -1;
    }

    memset(&b, 0, sizeof(b));

    while ((rc = caud_reader_next(r, &f)) == 1) {
        if (*count == 0 && caud_columns(f.payload, f.len, &c, &b) == 0) {
            *first_ts = c.ts_utc_us;
        }

        (*count)++;
        *bytes += f.len + CAUD_FRAME_OVERHEAD;
        *last = f.seq;
    }

    if (rc < 0) {
        snprintf(j->error, sizeof(j->error), "%s", caud_reader_error(r));
    }

    caud_buf_free(&b);
    caud_reader_close(r);

    return rc;
}


static void
cctl_status_journal(cctl_conf_t *cf, cctl_status_t *st, cctl_jstat_t *j)
{
    int       rc;
    size_t    n;
    int64_t   ts;
    uint64_t  first, count, bytes, last, *sizes;

    j->live = caud_journal_locked(cf->audit_dir, j->writer_id) == 1;

    if (caud_checkpoint_list(cf->audit_dir, j->writer_id, &sizes, &n) == 0) {
        j->cp_file = n ? sizes[n - 1] : 0;
        free(sizes);
    }

    first = cctl_last_segment(cf->audit_dir, j->writer_id);
    if (first == 0) {
        return;
    }

    last = first - 1;
    if (cctl_scan(cf->audit_dir, j, first, &count, &bytes, &ts, &last) < 0) {
        return;
    }

    j->last_seq = last;
    j->have_last = 1;

    if (!st->db_ok) {
        return;
    }

    j->have_backlog = 1;

    if (j->shipped_seq >= j->last_seq) {
        return;
    }

    rc = cctl_scan(cf->audit_dir, j, j->shipped_seq + 1, &j->backlog,
                   &j->backlog_bytes, &ts, &last);
    if (rc < 0) {
        j->have_backlog = 0;
        return;
    }

    if (j->backlog && ts) {
        j->lag_s = (caud_now_us() - ts) / 1e6;
        if (j->lag_s < 0) {
            j->lag_s = 0;
        }
    }
}


/* shipped_seq and the stored checkpoints of every journal of the node */
static int
cctl_status_db(cctl_conf_t *cf, cctl_status_t *st)
{
    int           q;
    char          sql[512], node[2 * 64 + 1];
    MYSQL        *m;
    MYSQL_RES    *res;
    MYSQL_ROW     row;
    cctl_jstat_t *j;

    if (cctl_conf_db(cf, st->db_error, sizeof(st->db_error)) != 0) {
        return -1;
    }

    m = caud_db_connect(&cf->db, st->db_error, sizeof(st->db_error));
    if (m == NULL) {
        return -1;
    }

    if (strlen(cf->audit_node) > 64) {
        snprintf(st->db_error, sizeof(st->db_error), "node name too long");
        mysql_close(m);
        return -1;
    }

    mysql_real_escape_string(m, node, cf->audit_node,
                             strlen(cf->audit_node));

    for (q = 0; q < 2; q++) {
        snprintf(sql, sizeof(sql), q == 0
                 ? "SELECT writer_id, shipped_seq FROM audit_journal "
                   "WHERE node = '%s'"
                 : "SELECT writer_id, MAX(size) FROM audit_checkpoint "
                   "WHERE node = '%s' GROUP BY writer_id", node);

        if (mysql_query(m, sql) != 0
            || (res = mysql_store_result(m)) == NULL)
        {
            snprintf(st->db_error, sizeof(st->db_error), "MariaDB: %s",
                     mysql_error(m));
            mysql_close(m);
            return -1;
        }

        while ((row = mysql_fetch_row(res)) != NULL) {
            j = cctl_jstat(st, (uint32_t) strtoul(row[0], NULL, 10));
            if (j == NULL) {
                break;
            }

            if (q == 0) {
                j->in_db = 1;
                j->shipped_seq = strtoull(row[1], NULL, 10);
            } else {
                j->cp_db = strtoull(row[1], NULL, 10);
            }
        }

        mysql_free_result(res);
    }

    mysql_close(m);

    return 0;
}


static int
cctl_jstat_cmp(const void *a, const void *b)
{
    const cctl_jstat_t  *x = a, *y = b;

    return x->writer_id < y->writer_id ? -1 : x->writer_id > y->writer_id;
}


static void
cctl_status_text(cctl_conf_t *cf, cctl_status_t *st)
{
    size_t         i;
    cctl_jstat_t  *j;

    printf("node %s, journals in %s, MariaDB %s\n", cf->audit_node,
           cf->audit_dir, st->db_ok ? "ok" : "unreachable");
    printf("%-8s %12s %12s %10s %14s %10s %5s %s\n", "journal", "last_seq",
           "shipped_seq", "backlog", "backlog_bytes", "lag_s", "live",
           "checkpoint (file/db)");

    for (i = 0; i < st->n; i++) {
        j = &st->j[i];

        printf("%-8" PRIu32 " ", j->writer_id);

        if (j->have_last) {
            printf("%12" PRIu64 " ", j->last_seq);
        } else {
            printf("%12s ", "-");
        }

        if (st->db_ok) {
            printf("%12" PRIu64 " ", j->shipped_seq);
        } else {
            printf("%12s ", "-");
        }

        if (j->have_backlog) {
            printf("%10" PRIu64 " %14" PRIu64 " %10.1f ", j->backlog,
                   j->backlog_bytes, j->lag_s);
        } else {
            printf("%10s %14s %10s ", "-", "-", "-");
        }

        printf("%5s %" PRIu64 "/%" PRIu64 "%s%s\n", j->live ? "yes" : "no",
               j->cp_file, j->cp_db, j->error[0] ? "  error: " : "",
               j->error);
    }
}


/* sets key k of o to v, or to null unless cond; drops o on failure */
#define CCTL_SET(o, k, cond, v)                                             \
    if ((o) && json_object_set_new(o, k, (cond) ? (v) : json_null())) {     \
        json_decref(o);                                                     \
        (o) = NULL;                                                         \
    }


static int
cctl_status_json(cctl_conf_t *cf, cctl_status_t *st)
{
    int            rc;
    size_t         i;
    json_t        *root, *arr, *o;
    cctl_jstat_t  *j;

    root = json_pack("{s:s, s:s, s:{s:b, s:s?}}", "node", cf->audit_node,
                     "dir", cf->audit_dir, "db", "ok", st->db_ok, "error",
                     st->db_ok ? NULL : st->db_error);
    arr = json_array();

    if (root == NULL || arr == NULL
        || json_object_set_new(root, "journals", arr) != 0)
    {
        json_decref(root);
        return -1;
    }

    for (i = 0; i < st->n; i++) {
        j = &st->j[i];

        o = json_pack("{s:I, s:b, s:b}", "writer_id",
                      (json_int_t) j->writer_id, "live", j->live,
                      "in_db", j->in_db);

        CCTL_SET(o, "last_seq", j->have_last,
                 json_integer((json_int_t) j->last_seq));
        CCTL_SET(o, "shipped_seq", st->db_ok,
                 json_integer((json_int_t) j->shipped_seq));
        CCTL_SET(o, "backlog_records", j->have_backlog,
                 json_integer((json_int_t) j->backlog));
        CCTL_SET(o, "backlog_bytes", j->have_backlog,
                 json_integer((json_int_t) j->backlog_bytes));
        CCTL_SET(o, "lag_seconds", j->have_backlog, json_real(j->lag_s));
        CCTL_SET(o, "checkpoint_file", j->cp_file,
                 json_integer((json_int_t) j->cp_file));
        CCTL_SET(o, "checkpoint_db", st->db_ok && j->cp_db,
                 json_integer((json_int_t) j->cp_db));
        CCTL_SET(o, "error", j->error[0], json_string(j->error));

        if (o == NULL || json_array_append_new(arr, o) != 0) {
            json_decref(root);
            return -1;
        }
    }

    rc = json_dumpf(root, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
    printf("\n");
    json_decref(root);

    return rc;
}


int
cctl_status(cctl_conf_t *cf, int json)
{
    int            rc;
    size_t         i, n;
    uint32_t      *ids;
    cctl_jstat_t  *j;
    cctl_status_t  st;

    memset(&st, 0, sizeof(st));
    st.j = calloc(CCTL_STATUS_MAX, sizeof(cctl_jstat_t));
    ids = malloc(CCTL_STATUS_MAX * sizeof(uint32_t));

    if (st.j == NULL || ids == NULL) {
        free(st.j);
        free(ids);
        fprintf(stderr, "conclavectl: out of memory\n");
        return CCTL_ERROR;
    }

    rc = CCTL_OK;

    if (caud_journal_list(cf->audit_dir, ids, CCTL_STATUS_MAX, &n) != 0) {
        fprintf(stderr, "conclavectl: journals in %s: %s\n", cf->audit_dir,
                strerror(errno));
        rc = CCTL_ERROR;
        n = 0;
    }

    for (i = 0; i < n; i++) {
        j = cctl_jstat(&st, ids[i]);
        if (j) {
            j->in_dir = 1;
        }
    }

    st.db_ok = cctl_status_db(cf, &st) == 0;

    for (i = 0; i < st.n; i++) {
        if (st.j[i].in_dir) {
            cctl_status_journal(cf, &st, &st.j[i]);
        }
    }

    qsort(st.j, st.n, sizeof(cctl_jstat_t), cctl_jstat_cmp);

    if (json) {
        if (cctl_status_json(cf, &st) != 0) {
            fprintf(stderr, "conclavectl: out of memory\n");
            rc = CCTL_ERROR;
        }
    } else {
        cctl_status_text(cf, &st);
    }

    if (!st.db_ok) {
        fprintf(stderr, "conclavectl: %s\n", st.db_error);
        rc = CCTL_ERROR;
    }

    free(st.j);
    free(ids);

    return rc;
}
