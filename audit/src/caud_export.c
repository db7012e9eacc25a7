
/*
 * Exports (docs/compliance.md "Exports", COMPLIANCE.md 1.1 and 7.3):
 * the records of this node's journals that signed checkpoints cover,
 * read from MariaDB in batches in (ts_utc_us, writer_id, seq) order,
 * grouped into conversations per batch and written by the format
 * writers (caud_export_fmt.c) into a staging directory, then zipped
 * with a manifest and what a verifier needs (caud_export_verify.c).
 *
 * Incremental exports: a named cursor keeps, per journal, the last seq
 * exported.  The window of a run is (cursor, newest checkpoint] per
 * journal, read in one consistent snapshot; inside it batches are
 * paged by the (time, id) key, so records that share a time are never
 * skipped at a batch boundary (Mattermost MM-29666), and a record that
 * shipped late, with an old time, is in the next run's window because
 * the window is by seq, not by time.
 */


#define _GNU_SOURCE

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mysql.h>
#include <openssl/evp.h>
#include <zip.h>

#include "caud_export_int.h"


#define CAUD_X_BATCH   10000
#define CAUD_X_SQL     8192

/* the batch query's columns */
enum {
    XC_WRITER = 0, XC_SEQ, XC_TS, XC_EVENT, XC_USER, XC_PEER, XC_TYPE,
    XC_SID, XC_BODY, XC_PAYLOAD, XC_PREV, XC_ENTRY
};


static const char  *caud_formats[] = { "actiance", "csv", "eml", "jsonl" };


int
caud_format_parse(const char *s, caud_format_e *f)
{
    size_t  i;

    for (i = 0; i < sizeof(caud_formats) / sizeof(caud_formats[0]); i++) {
        if (strcmp(s, caud_formats[i]) == 0) {
            *f = (caud_format_e) i;
            return 0;
        }
    }

    return -1;
}


const char *
caud_format_name(caud_format_e f)
{
    return caud_formats[f];
}


void
caud_xerr(caud_export_t *x, const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    vsnprintf(x->err, x->errlen, fmt, ap);
    va_end(ap);
}


int64_t
caud_xtime(const caud_export_t *x, int64_t us)
{
    switch (x->o->time_unit) {
    case CAUD_TIME_S:
        return us / 1000000;
    case CAUD_TIME_US:
        return us;
    default:
        return us / 1000;
    }
}


static int
caud_xquery(caud_export_t *x, const char *sql)
{
    if (mysql_real_query(x->m, sql, strlen(sql)) != 0) {
        caud_xerr(x, "mariadb: %s", mysql_error(x->m));
        return -1;
    }

    return 0;
}


/* appends 'escaped s' */
static void
caud_xquote(caud_export_t *x, GString *sql, const char *s)
{
    size_t  n;
    char   *buf;

    n = strlen(s);
    buf = g_malloc(2 * n + 1);
    mysql_real_escape_string(x->m, buf, s, n);
    g_string_append_printf(sql, "'%s'", buf);
    g_free(buf);
}


/*
 * The window per journal: audit_journal's writers, the newest stored
 * checkpoint at or below shipped_seq (its root and note), and the
 * cursor.  Records past the newest checkpoint wait for the next one:
 * an export carries nothing a signature does not cover.
 */
static int
caud_xwindows(caud_export_t *x)
{
    GString          *sql;
    MYSQL_RES        *res;
    MYSQL_ROW         row;
    unsigned long    *len;
    caud_xjournal_t  *j;

    sql = g_string_new("SELECT j.writer_id, c.size, c.root, c.note, "
                       "COALESCE(e.seq, 0) FROM audit_journal j JOIN "
                       "audit_checkpoint c ON c.node = j.node AND "
                       "c.writer_id = j.writer_id AND c.size = (SELECT "
                       "MAX(size) FROM audit_checkpoint d WHERE d.node = "
                       "j.node AND d.writer_id = j.writer_id AND d.size <= "
                       "j.shipped_seq) LEFT JOIN export_cursor e ON "
                       "e.node = j.node AND e.writer_id = j.writer_id AND "
                       "e.name = ");
    caud_xquote(x, sql, x->o->cursor ? x->o->cursor : "");
    g_string_append(sql, " WHERE j.node = ");
    caud_xquote(x, sql, x->o->node);
    g_string_append(sql, " ORDER BY j.writer_id");

    if (caud_xquery(x, sql->str) != 0) {
        g_string_free(sql, TRUE);
        return -1;
    }

    g_string_free(sql, TRUE);

    res = mysql_store_result(x->m);
    if (res == NULL) {
        caud_xerr(x, "mariadb: %s", mysql_error(x->m));
        return -1;
    }

    x->js = calloc(mysql_num_rows(res) + 1, sizeof(caud_xjournal_t));
    if (x->js == NULL) {
        mysql_free_result(res);
        caud_xerr(x, "out of memory");
        return -1;
    }

    while ((row = mysql_fetch_row(res)) != NULL) {
        len = mysql_fetch_lengths(res);
        if (len[2] != CAUD_HASH_LEN) {
            continue;
        }

        j = &x->js[x->nj];
        j->writer = strtoul(row[0], NULL, 10);
        j->upto = strtoull(row[1], NULL, 10);
        memcpy(j->root, row[2], CAUD_HASH_LEN);
        j->cursor = x->o->cursor ? strtoull(row[4], NULL, 10) : 0;
        j->note = strndup(row[3], len[3]);

        if (j->note == NULL) {
            mysql_free_result(res);
            caud_xerr(x, "out of memory");
            return -1;
        }

        if (j->upto > j->cursor) {
            x->nj++;
        } else {
            free(j->note);
            j->note = NULL;
        }
    }

    mysql_free_result(res);

    return 0;
}


static caud_xjournal_t *
caud_xjournal(caud_export_t *x, uint32_t writer)
{
    size_t  i;

    for (i = 0; i < x->nj; i++) {
        if (x->js[i].writer == writer) {
            return &x->js[i];
        }
    }

    return NULL;
}


/* the WHERE clause every batch shares: node, filters, windows */
static GString *
caud_xwhere(caud_export_t *x)
{
    size_t       i;
    GString     *w;
    const char  *sep;

    w = g_string_new(" WHERE node = ");
    caud_xquote(x, w, x->o->node);

    if (x->o->since_us) {
        g_string_append_printf(w, " AND ts_utc_us >= %" PRId64,
                               x->o->since_us);
    }

    if (x->o->until_us) {
        g_string_append_printf(w, " AND ts_utc_us < %" PRId64,
                               x->o->until_us);
    }

    if (x->o->format != CAUD_FMT_JSONL) {
        g_string_append(w, " AND event IN (" CAUD_X_EVENTS ")");
    }

    if (x->o->user) {
        g_string_append(w, " AND (actor_user = ");
        caud_xquote(x, w, x->o->user);
        g_string_append(w, " OR peer = ");
        caud_xquote(x, w, x->o->user);
        g_string_append(w, ")");
    }

    if (x->o->room) {
        g_string_append(w, " AND peer = ");
        caud_xquote(x, w, x->o->room);
    }

    g_string_append(w, " AND (");
    sep = "";

    for (i = 0; i < x->nj; i++) {
        g_string_append_printf(w, "%s(writer_id = %" PRIu32 " AND seq > %"
                               PRIu64 " AND seq <= %" PRIu64 ")", sep,
                               x->js[i].writer, x->js[i].cursor,
                               x->js[i].upto);
        sep = " OR ";
    }

    g_string_append(w, ")");

    return w;
}


/*
 * The stanza id an XEP-0308 correction (<replace id=.../>) or an
 * XEP-0424 retraction (<retract id=.../>, or version 0's <apply-to
 * id=...><retract/></apply-to>) refers to.  The payload is only looked
 * at when a namespace appears in it, so plain messages cost a memmem.
 */
static void
caud_xupdate(caud_xrec_t *r, const char *p, size_t n)
{
    const char  *ns, *el, *q, *end;
    size_t       k;
    static const char  *els[] = { "<replace ", "<retract ", "<apply-to " };

    /* the module's own params (docs/history.md) when it wrote them; the
     * canonical form puts "params" keys as "replace_id":"<id>" */
    q = memmem(p, n, "\"replace_id\":\"", 14);
    r->update = CAUD_X_EDIT;
    if (q == NULL) {
        q = memmem(p, n, "\"retract_id\":\"", 14);
        r->update = CAUD_X_RETRACT;
    }

    if (q) {
        q += 14;
        for (k = 0; q + k < p + n && q[k] != '"' && q[k] != '\\'; k++) {
            /* void */
        }
        r->ref = g_strndup(q, k);
        return;
    }

    r->update = 0;

    if ((ns = memmem(p, n, "urn:xmpp:message-correct:", 25)) != NULL) {
        r->update = CAUD_X_EDIT;
        el = els[0];

    } else if ((ns = memmem(p, n, "urn:xmpp:message-retract:", 25))
               != NULL)
    {
        r->update = CAUD_X_RETRACT;
        el = memmem(p, n, els[1], 9) ? els[1] : els[2];

    } else {
        return;
    }

    q = memmem(p, n, el, strlen(el));
    if (q == NULL) {
        return;
    }

    end = memchr(q, '>', p + n - q);
    if (end == NULL) {
        return;
    }

    /* id='...' or id=\"...\" inside the JSON string of the stanza */
    for (; q + 4 < end; q++) {
        if (q[-1] == ' ' && q[0] == 'i' && q[1] == 'd' && q[2] == '=') {
            q += 3;
            if (*q == '\\') {
                q++;
            }
            if (*q != '\'' && *q != '"') {
                return;
            }
            q++;
            for (k = 0; q + k < end && q[k] != '\'' && q[k] != '"'
                        && q[k] != '\\'; k++) { /* void */ }
            r->ref = g_strndup(q, k);
            return;
        }
    }
}


/* a column's text into the record's own block, "" when NULL */
static char *
caud_xput(char **p, const char *s, unsigned long len)
{
    char  *d = *p;

    if (s) {
        memcpy(d, s, len);
        d[len] = '\0';
        *p = d + len + 1;
    } else {
        d[0] = '\0';
        *p = d + 1;
    }

    return d;
}


/*
 * A record and its strings in one allocation: a million records are
 * otherwise six million malloc()/free() pairs (perf: a fifth of the
 * exporting thread).
 */
static caud_xrec_t *
caud_xrec(caud_export_t *x, MYSQL_ROW row, unsigned long *len)
{
    char         *p;
    size_t        n;
    caud_xrec_t  *r;

    n = sizeof(caud_xrec_t) + len[XC_EVENT] + len[XC_USER] + len[XC_PEER]
        + len[XC_BODY] + len[XC_SID] + 5;
    r = g_malloc(n);
    memset(r, 0, sizeof(caud_xrec_t));
    p = (char *) (r + 1);

    r->writer = strtoul(row[XC_WRITER], NULL, 10);
    r->seq = strtoull(row[XC_SEQ], NULL, 10);
    r->ts = strtoll(row[XC_TS], NULL, 10);
    r->event = caud_xput(&p, row[XC_EVENT], len[XC_EVENT]);
    r->user = caud_xput(&p, row[XC_USER], len[XC_USER]);
    r->peer = caud_xput(&p, row[XC_PEER], len[XC_PEER]);
    r->body = caud_xput(&p, row[XC_BODY], len[XC_BODY]);
    r->body_len = row[XC_BODY] ? len[XC_BODY] : 0;
    r->stanza_id = caud_xput(&p, row[XC_SID], len[XC_SID]);
    if (row[XC_SID] == NULL) {
        r->stanza_id = NULL;
    }
    snprintf(r->id, sizeof(r->id), "%s/%" PRIu32 "/%" PRIu64, x->o->node,
             r->writer, r->seq);

    /* the MUC's records (docs/audit.md "Group chat records") */
    if (strcmp(r->event, "muc_join") == 0
        || strcmp(r->event, "muc_create") == 0)
    {
        r->kind = CAUD_X_JOIN;
        r->room = 1;

    } else if (strcmp(r->event, "muc_leave") == 0) {
        r->kind = CAUD_X_LEAVE;
        r->room = 1;

    } else if (strcmp(r->event, "message") == 0
               || strncmp(r->event, "muc_", 4) == 0)
    {
        r->kind = CAUD_X_MESSAGE;
        r->room = r->event[0] == 'm' && r->event[1] == 'u';
        r->room |= row[XC_TYPE] && len[XC_TYPE] == 9
                   && memcmp(row[XC_TYPE], "groupchat", 9) == 0;
        caud_xupdate(r, row[XC_PAYLOAD], len[XC_PAYLOAD]);

    } else {
        r->kind = CAUD_X_OTHER;
    }

    return r;
}


static void
caud_xrec_free(gpointer p)
{
    caud_xrec_t  *r = p;

    g_free(r->ref);
    g_free(r);
}


static void
caud_xconv_free(gpointer p)
{
    caud_xconv_t  *c = p;

    g_free(c->key);
    g_free(c->name);
    g_free(c->a);
    g_free(c->b);
    g_free(c->domain);
    g_ptr_array_free(c->recs, TRUE);
    g_free(c);
}


/* the conversation of a record: the room, or the pair of bare JIDs */
static int
caud_xgroup(caud_export_t *x, caud_xrec_t *r)
{
    char           *key, *at, buf[2200];
    guint           n;
    uint8_t         h[CAUD_HASH_LEN];
    const char     *a, *b;
    caud_xconv_t   *c;

    /* the key is looked up in a buffer of the stack and copied only for
     * a new conversation (columns are at most 255 characters) */
    if (r->room) {
        a = r->peer;
        b = NULL;
        n = g_snprintf(buf, sizeof(buf), "room:%s", a);
        key = n < sizeof(buf) ? buf : g_strconcat("room:", a, NULL);

    } else {
        a = strcmp(r->user, r->peer) <= 0 ? r->user : r->peer;
        b = a == r->user ? r->peer : r->user;
        n = g_snprintf(buf, sizeof(buf), "direct:%s\n%s", a, b);
        key = n < sizeof(buf) ? buf : g_strconcat("direct:", a, "\n", b,
                                                  NULL);
    }

    c = g_hash_table_lookup(x->convs, key);

    if (c == NULL) {
        if (key == buf) {
            key = g_strdup(buf);
        }

        c = g_new0(caud_xconv_t, 1);
        c->key = key;
        c->room = r->room;
        c->recs = g_ptr_array_new();
        c->start = r->ts;
        c->a = g_strdup(a);
        c->b = g_strdup(b);
        c->name = b ? g_strconcat(a, ", ", b, NULL) : g_strdup(a);
        at = strchr(a, '@');
        c->domain = g_strdup(at ? at + 1 : a);

        if (caud_hasher_prefixed(x->hasher, 0x02, key, strlen(key), NULL,
                                 0, h) != 0)
        {
            caud_xerr(x, "SHA-256 failed");
            caud_xconv_free(c);
            return -1;
        }

        for (size_t i = 0; i < 13; i++) {
            snprintf(c->id + 2 * i, 3, "%02x", h[i]);
        }

        g_hash_table_insert(x->convs, c->key, c);
        g_ptr_array_add(x->order, c);

    } else if (key != buf) {
        g_free(key);
    }

    g_ptr_array_add(c->recs, r);
    c->end = r->ts;

    return 0;
}


/* "{...,"record":<payload>}": the payload's bytes stay as they were
 * hashed; one that is not JSON goes in base64 (docs/compliance.md) */
static int
caud_xjsonl(caud_export_t *x, caud_xrec_t *r, MYSQL_ROW row,
    unsigned long *len)
{
    char           prev[2 * CAUD_HASH_LEN + 1], entry[2 * CAUD_HASH_LEN + 1];
    char          *b64;
    json_t        *j;
    size_t         i;
    const uint8_t  *p, *e;
    static const char  hex[] = "0123456789abcdef";

    /* a million records: no printf per byte (callgrind) */
    p = (const uint8_t *) row[XC_PREV];
    e = (const uint8_t *) row[XC_ENTRY];

    for (i = 0; i < CAUD_HASH_LEN; i++) {
        prev[2 * i] = hex[p[i] >> 4];
        prev[2 * i + 1] = hex[p[i] & 0x0f];
        entry[2 * i] = hex[e[i] >> 4];
        entry[2 * i + 1] = hex[e[i] & 0x0f];
    }

    prev[2 * CAUD_HASH_LEN] = '\0';
    entry[2 * CAUD_HASH_LEN] = '\0';

    /* the node as a JSON string, once per export */
    if (x->jnode == NULL) {
        j = json_string(x->o->node);
        x->jnode = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
        json_decref(j);
        if (x->jnode == NULL) {
            caud_xerr(x, "out of memory");
            return -1;
        }
    }

    fprintf(x->jsonl, "{\"node\":%s,\"writer_id\":%" PRIu32 ",\"seq\":%"
            PRIu64 ",\"prev_hash\":\"%s\",\"entry_hash\":\"%s\",",
            x->jnode, r->writer, r->seq, prev, entry);

    /* canonical records are JSON objects in valid UTF-8 on one line;
     * anything else (the shipper stores it all the same) in base64 */
    if (len[XC_PAYLOAD] >= 2 && row[XC_PAYLOAD][0] == '{'
        && row[XC_PAYLOAD][len[XC_PAYLOAD] - 1] == '}'
        && memchr(row[XC_PAYLOAD], '\n', len[XC_PAYLOAD]) == NULL
        && g_utf8_validate(row[XC_PAYLOAD], len[XC_PAYLOAD], NULL))
    {
        fputs("\"record\":", x->jsonl);
        fwrite(row[XC_PAYLOAD], 1, len[XC_PAYLOAD], x->jsonl);

    } else {
        b64 = g_base64_encode((const guchar *) row[XC_PAYLOAD],
                              len[XC_PAYLOAD]);
        fprintf(x->jsonl, "\"record_b64\":\"%s\"", b64);
        g_free(b64);
    }

    if (fputs("}\n", x->jsonl) == EOF) {
        caud_xerr(x, "records.jsonl: %s", strerror(errno));
        return -1;
    }

    return 0;
}


/* a row of the stream into the batch and records.jsonl */
static int
caud_xrow(caud_export_t *x, MYSQL_ROW row, unsigned long *len)
{
    caud_xrec_t      *r;
    caud_xjournal_t  *j;

    if (row[XC_PAYLOAD] == NULL || len[XC_PREV] != CAUD_HASH_LEN
        || len[XC_ENTRY] != CAUD_HASH_LEN)
    {
        caud_xerr(x, "row without payload or hashes (run conclavectl "
                  "verify)");
        return -1;
    }

    r = caud_xrec(x, row, len);
    g_ptr_array_add(x->recs, r);

    j = caud_xjournal(x, r->writer);
    if (j && (j->lo == 0 || r->seq < j->lo)) {
        j->lo = r->seq;
    }

    if (j) {
        j->records++;
    }

    if (caud_xjsonl(x, r, row, len) != 0
        || (x->o->format != CAUD_FMT_JSONL
            && r->kind != CAUD_X_OTHER && caud_xgroup(x, r) != 0))
    {
        return -1;
    }

    x->res->records++;
    x->res->messages += (r->kind == CAUD_X_MESSAGE);

    return 0;
}


/* the batch's conversations out, and the batch emptied */
static int
caud_xflush(caud_export_t *x, uint64_t total)
{
    int  rc;

    rc = caud_xfmt_batch(x);

    g_hash_table_remove_all(x->convs);
    g_ptr_array_set_size(x->order, 0);
    g_ptr_array_set_size(x->recs, 0);

    if (rc == 0 && x->o->progress) {
        x->o->progress(x->o->progress_data, "records", x->res->records,
                       total);
    }

    return rc;
}


static uint64_t
caud_xcount(caud_export_t *x, const GString *where)
{
    uint64_t    n;
    GString    *sql;
    MYSQL_RES  *res;
    MYSQL_ROW   row;

    sql = g_string_new("SELECT COUNT(*) FROM audit_record");
    g_string_append(sql, where->str);
    n = 0;

    if (caud_xquery(x, sql->str) == 0
        && (res = mysql_store_result(x->m)) != NULL)
    {
        row = mysql_fetch_row(res);
        n = row && row[0] ? strtoull(row[0], NULL, 10) : 0;
        mysql_free_result(res);
    }

    g_string_free(sql, TRUE);

    return n;
}


/*
 * The window as one stream in (ts_utc_us, writer_id, seq) order, cut
 * into batches of o->batch records: the server sends the next rows
 * while this thread writes the last ones, and records that share a time
 * stay in the order of their ids whatever the batch boundary
 * (Mattermost MM-29666).  The (ts_utc_us) index, whose entries end in
 * the primary key, is that order; left to itself the optimizer ranges
 * over the primary key and sorts the whole window.
 */
static int
caud_xrecords(caud_export_t *x)
{
    int              rc;
    size_t           n, batch;
    uint64_t         total;
    GString         *where, *sql;
    MYSQL_RES       *res;
    MYSQL_ROW        row;

    if (x->nj == 0) {
        return 0;
    }

    where = caud_xwhere(x);
    total = x->o->progress ? caud_xcount(x, where) : 0;
    batch = x->o->batch ? x->o->batch : CAUD_X_BATCH;

    sql = g_string_new("SELECT writer_id, seq, ts_utc_us, event, "
                       "actor_user, peer, msg_type, stanza_id, body, "
                       "payload, prev_hash, entry_hash FROM audit_record "
                       "FORCE INDEX (audit_record_ts)");
    g_string_append(sql, where->str);
    g_string_append(sql, " ORDER BY ts_utc_us, writer_id, seq");
    g_string_free(where, TRUE);

    rc = caud_xquery(x, sql->str);
    g_string_free(sql, TRUE);

    if (rc != 0) {
        return -1;
    }

    res = mysql_use_result(x->m);
    if (res == NULL) {
        caud_xerr(x, "mariadb: %s", mysql_error(x->m));
        return -1;
    }

    n = 0;

    while ((row = mysql_fetch_row(res)) != NULL) {
        if (rc != 0) {
            continue;               /* drain: the connection is needed */
        }

        rc = caud_xrow(x, row, mysql_fetch_lengths(res));

        if (rc == 0 && ++n == batch) {
            rc = caud_xflush(x, total);
            n = 0;
        }
    }

    if (rc == 0 && mysql_errno(x->m)) {
        caud_xerr(x, "mariadb: %s", mysql_error(x->m));
        rc = -1;
    }

    mysql_free_result(res);

    if (rc == 0 && n) {
        rc = caud_xflush(x, total);
    }

    return rc;
}


/* ------------------------------------------------------------------ */
/* manifest and zip */

static int
caud_xsha256_file(const char *path, char hex[65], uint64_t *size)
{
    int            rc;
    FILE          *fp;
    size_t         n, i;
    uint8_t        buf[65536], md[32];
    unsigned int   mdlen;
    EVP_MD_CTX    *ctx;

    fp = fopen(path, "rb");
    if (fp == NULL) {
        return -1;
    }

    ctx = EVP_MD_CTX_new();
    rc = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 ? 0 : -1;
    *size = 0;

    while (rc == 0 && (n = fread(buf, 1, sizeof(buf), fp)) > 0) {
        *size += n;
        if (EVP_DigestUpdate(ctx, buf, n) != 1) {
            rc = -1;
        }
    }

    if (rc == 0 && (ferror(fp) || EVP_DigestFinal_ex(ctx, md, &mdlen) != 1))
    {
        rc = -1;
    }

    EVP_MD_CTX_free(ctx);
    fclose(fp);

    for (i = 0; rc == 0 && i < 32; i++) {
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    }

    return rc;
}


/*
 * Every regular file under the stage, relative names, sorted.  A walk
 * of our own rather than nftw(): nftw's callback has no user pointer,
 * so its list had to be static and two exports of one process (the
 * console runs several in pool threads) would have shared it.
 */
static int
caud_xfiles_walk(GPtrArray *files, const char *root, const char *rel,
    int depth)
{
    DIR            *d;
    char            path[4200], sub[1024];
    struct stat     st;
    struct dirent  *e;
    int             rc;

    snprintf(path, sizeof(path), "%s%s%s", root, rel[0] ? "/" : "", rel);

    d = opendir(path);
    if (d == NULL || depth > 16) {
        if (d) {
            closedir(d);
            errno = ELOOP;
        }
        return -1;
    }

    rc = 0;

    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }

        if ((size_t) snprintf(sub, sizeof(sub), "%s%s%s", rel,
                              rel[0] ? "/" : "", e->d_name)
            >= sizeof(sub))
        {
            errno = ENAMETOOLONG;
            rc = -1;
            break;
        }

        snprintf(path, sizeof(path), "%s/%s", root, sub);

        if (lstat(path, &st) != 0) {
            rc = -1;

        } else if (S_ISDIR(st.st_mode)) {
            rc = caud_xfiles_walk(files, root, sub, depth + 1);

        } else if (S_ISREG(st.st_mode)) {
            g_ptr_array_add(files, g_strdup(sub));
        }
    }

    closedir(d);

    return rc;
}


static gint
caud_xcmp(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}


static GPtrArray *
caud_xfiles(const char *stage)
{
    GPtrArray  *files;

    files = g_ptr_array_new_with_free_func(g_free);

    if (caud_xfiles_walk(files, stage, "", 0) != 0) {
        g_ptr_array_free(files, TRUE);
        return NULL;
    }

    g_ptr_array_sort(files, caud_xcmp);

    return files;
}


static int
caud_xmanifest(caud_export_t *x, GPtrArray *files, char *sighex)
{
    int              rc;
    char             path[4200], hex[65], text[256], note[CAUD_NOTE_MAX];
    char             now[32];
    FILE            *fp;
    size_t           i, len;
    time_t           t;
    struct tm        tm;
    uint64_t         size;
    caud_xout_t     *xo;
    caud_signer_t   *s;
    const caud_export_opts_t  *o;

    o = x->o;
    snprintf(path, sizeof(path), "%s/manifest.txt", x->stage);
    fp = fopen(path, "w");
    if (fp == NULL) {
        caud_xerr(x, "%s: %s", path, strerror(errno));
        return -1;
    }

    t = time(NULL);
    gmtime_r(&t, &tm);
    strftime(now, sizeof(now), "%Y-%m-%dT%H:%M:%SZ", &tm);

    fprintf(fp, "Conclave-Export: 1\nFormat: %s\nNode: %s\nOrigin: %s\n"
            "Created: %s\nCursor: %s\nSince-us: %" PRId64 "\nUntil-us: %"
            PRId64 "\nUser: %s\nRoom: %s\nTime-unit: %s\nRecords: %" PRIu64
            "\n", caud_format_name(o->format), o->node, o->origin_prefix,
            now, o->cursor ? o->cursor : "", o->since_us, o->until_us,
            o->user ? o->user : "", o->room ? o->room : "",
            o->time_unit == CAUD_TIME_S ? "s"
            : o->time_unit == CAUD_TIME_US ? "us" : "ms", x->res->records);

    for (i = 0; i < x->nj; i++) {
        if (x->js[i].lo) {
            fprintf(fp, "Journal: %" PRIu32 " %" PRIu64 " %" PRIu64 "\n",
                    x->js[i].writer, x->js[i].lo > 1 ? x->js[i].lo - 1 : 1,
                    x->js[i].upto);
        }
    }

    fprintf(fp, "Count: %u\n", files->len);
    rc = 0;

    for (i = 0; i < files->len; i++) {
        snprintf(path, sizeof(path), "%s/%s", x->stage,
                 (char *) files->pdata[i]);
        xo = caud_xout_find(x, files->pdata[i]);

        if (xo ? caud_xout_digest(xo, hex, &size) != 0
               : caud_xsha256_file(path, hex, &size) != 0)
        {
            caud_xerr(x, "%s: %s", path, xo ? "write failed"
                                            : strerror(errno));
            rc = -1;
            break;
        }

        fprintf(fp, "File: %s %" PRIu64 " %s\n", hex, size,
                (char *) files->pdata[i]);
    }

    if (fclose(fp) != 0 || rc != 0) {
        if (rc == 0) {
            caud_xerr(x, "manifest.txt: %s", strerror(errno));
        }
        return -1;
    }

    snprintf(path, sizeof(path), "%s/manifest.txt", x->stage);
    if (caud_xsha256_file(path, hex, &size) != 0) {
        caud_xerr(x, "manifest.txt: %s", strerror(errno));
        return -1;
    }

    s = caud_signer_load(o->key, o->origin_prefix, x->err, x->errlen);
    if (s == NULL) {
        return -1;
    }

    len = snprintf(text, sizeof(text), "%s/export\n%s\n", o->origin_prefix,
                   hex);
    rc = caud_note_sign(s, text, len, note, sizeof(note), &len);
    caud_signer_free(s);

    if (rc != 0) {
        caud_xerr(x, "signing the manifest: %s", strerror(errno));
        return -1;
    }

    snprintf(path, sizeof(path), "%s/manifest.sig", x->stage);
    fp = fopen(path, "w");
    if (fp == NULL || fwrite(note, 1, len, fp) != len || fclose(fp) != 0) {
        caud_xerr(x, "%s: %s", path, strerror(errno));
        return -1;
    }

    memcpy(sighex, hex, 65);

    return 0;
}


static void
caud_xzip_progress(zip_t *za, double done, void *data)
{
    caud_export_t  *x = data;

    (void) za;
    x->o->progress(x->o->progress_data, "zip", (uint64_t) (done * 1000),
                   1000);
}


static int
caud_xzip(caud_export_t *x, GPtrArray *files, const char *zpath)
{
    int            zerr;
    char           path[4200];
    size_t         i;
    zip_t         *za;
    zip_int64_t    idx;
    zip_source_t  *src;
    zip_error_t    ze;
    caud_xout_t   *xo;
    gboolean       store;

    za = zip_open(zpath, ZIP_CREATE | ZIP_EXCL, &zerr);
    if (za == NULL) {
        zip_error_init_with_code(&ze, zerr);
        caud_xerr(x, "%s: %s", zpath, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return -1;
    }

    if (x->o->progress) {
        zip_register_progress_callback_with_state(za, 0.01,
                                                  caud_xzip_progress, NULL,
                                                  x);
    }

    g_ptr_array_add(files, g_strdup("manifest.txt"));
    g_ptr_array_add(files, g_strdup("manifest.sig"));

    for (i = 0; i < files->len; i++) {
        snprintf(path, sizeof(path), "%s/%s", x->stage,
                 (char *) files->pdata[i]);

        /* deflated while written: copied as it is */
        xo = caud_xout_find(x, files->pdata[i]);
        src = xo ? caud_xout_source(za, xo) : NULL;

        if (src == NULL) {
            xo = NULL;
            src = zip_source_file(za, path, 0, -1);
        }

        if (src == NULL) {
            goto fail;
        }

        idx = zip_file_add(za, files->pdata[i], src, ZIP_FL_ENC_UTF_8);
        if (idx < 0) {
            zip_source_free(src);
            goto fail;
        }

        /* the chain's leaves are SHA-256 hashes: deflate cannot shrink
         * them, and libzip spent seconds per million trying */
        store = x->o->level < 0 || g_str_has_suffix(files->pdata[i],
                                                    ".leaves");

        if (xo == NULL
            && zip_set_file_compression(za, idx, store ? ZIP_CM_STORE
                                                       : ZIP_CM_DEFLATE,
                                        x->o->level > 0 ? x->o->level : 1)
            != 0)
        {
            goto fail;
        }
    }

    if (zip_close(za) != 0) {
        goto fail;
    }

    x->res->files = files->len;

    return 0;

fail:

    caud_xerr(x, "%s: %s", zpath, zip_strerror(za));
    zip_discard(za);
    unlink(zpath);

    return -1;
}


static int
caud_xrm(const char *path, const struct stat *st, int type,
    struct FTW *ftw)
{
    (void) st;
    (void) type;
    (void) ftw;

    return remove(path);
}


/* the cursor moves only after the zip is in place: a crash in between
 * exports those records again, never loses them */
static int
caud_xcursor(caud_export_t *x)
{
    size_t    i;
    GString  *sql;
    int       rc;

    if (x->o->cursor == NULL || x->nj == 0) {
        return 0;
    }

    sql = g_string_new("INSERT INTO export_cursor (name, node, writer_id, "
                       "seq, updated_at) VALUES ");

    for (i = 0; i < x->nj; i++) {
        g_string_append(sql, i ? ", (" : "(");
        caud_xquote(x, sql, x->o->cursor);
        g_string_append(sql, ", ");
        caud_xquote(x, sql, x->o->node);
        g_string_append_printf(sql, ", %" PRIu32 ", %" PRIu64
                               ", UTC_TIMESTAMP(6))", x->js[i].writer,
                               x->js[i].upto);
    }

    g_string_append(sql, " ON DUPLICATE KEY UPDATE seq = VALUES(seq), "
                    "updated_at = VALUES(updated_at)");

    rc = caud_xquery(x, "COMMIT") == 0 && caud_xquery(x, sql->str) == 0
         ? 0 : -1;
    g_string_free(sql, TRUE);

    return rc;
}


static int
caud_xfinish(caud_export_t *x)
{
    int         rc;
    char        zpath[4200], part[4300], stamp[32], hex[65];
    size_t      i;
    time_t      t;
    struct tm   tm;
    GPtrArray  *files;

    for (i = 0; i < x->nj; i++) {
        if (x->js[i].lo) {
            x->res->journals++;
            if (caud_xleaves(x, i) != 0) {
                return -1;
            }
        }
    }

    caud_xchain_clean(x);

    files = caud_xfiles(x->stage);
    if (files == NULL) {
        caud_xerr(x, "%s: %s", x->stage, strerror(errno));
        return -1;
    }

    if (caud_xmanifest(x, files, hex) != 0) {
        g_ptr_array_free(files, TRUE);
        return -1;
    }

    t = time(NULL);
    gmtime_r(&t, &tm);
    strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);

    for (i = 1; ; i++) {
        snprintf(zpath, sizeof(zpath), "%s/conclave-%s-%s-%s%s%.0zu.zip",
                 x->o->output_dir, caud_format_name(x->o->format),
                 x->o->node, stamp, i > 1 ? "-" : "", i > 1 ? i : 0);
        if (access(zpath, F_OK) != 0) {
            break;
        }
    }

    snprintf(part, sizeof(part), "%s.part", zpath);
    rc = caud_xzip(x, files, part);
    g_ptr_array_free(files, TRUE);

    if (rc == 0 && rename(part, zpath) != 0) {
        caud_xerr(x, "%s: %s", zpath, strerror(errno));
        unlink(part);
        rc = -1;
    }

    if (rc == 0) {
        snprintf(x->res->path, sizeof(x->res->path), "%.4000s", zpath);
        rc = caud_xcursor(x);
    }

    return rc;
}


int
caud_export(const caud_db_opts_t *db, const caud_export_opts_t *o,
    caud_export_result_t *res, char *err, size_t errlen)
{
    int            rc;
    char           tmpl[4200];
    size_t         i;
    caud_export_t  x;

    memset(&x, 0, sizeof(x));
    memset(res, 0, sizeof(caud_export_result_t));
    x.o = o;
    x.db = db;
    x.res = res;
    x.err = err;
    x.errlen = errlen;
    rc = -1;

    if (strlen(o->output_dir) > 3000) {
        snprintf(err, errlen, "output directory name too long");
        return -1;
    }

    snprintf(tmpl, sizeof(tmpl), "%s/.conclave-export-XXXXXX",
             o->output_dir);
    x.stage = mkdtemp(tmpl) ? tmpl : NULL;
    if (x.stage == NULL) {
        caud_xerr(&x, "%s: %s", o->output_dir, strerror(errno));
        return -1;
    }

    x.hasher = caud_hasher_new();
    x.convs = g_hash_table_new_full(g_str_hash, g_str_equal, NULL,
                                    caud_xconv_free);
    x.order = g_ptr_array_new();
    x.recs = g_ptr_array_new_with_free_func(caud_xrec_free);
    x.rooms = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                    (GDestroyNotify) g_hash_table_unref);
    x.eml_n = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);

    if (x.hasher == NULL) {
        caud_xerr(&x, "out of memory");
        goto done;
    }

    x.m = caud_db_connect(db, err, errlen);
    if (x.m == NULL) {
        goto done;
    }

    /* one snapshot for the windows, the batches and the leaves */
    if (caud_xquery(&x, "START TRANSACTION WITH CONSISTENT SNAPSHOT, "
                        "READ ONLY") != 0
        || caud_xwindows(&x) != 0
        || caud_xfmt_open(&x) != 0)
    {
        goto done;
    }

    caud_xchain_start(&x);

    if (caud_xrecords(&x) != 0 || caud_xfmt_close(&x) != 0) {
        goto done;
    }

    rc = caud_xfinish(&x);

done:

    if (x.xml || x.xmlfp || x.csv || x.jsonl || x.meta) {
        caud_xfmt_close(&x);
    }

    caud_xz_free(&x);
    caud_xchain_free(&x);
    free(x.jnode);

    if (x.m) {
        mysql_close(x.m);
    }

    if (x.m2) {
        mysql_close(x.m2);
    }

    for (i = 0; i < x.nj; i++) {
        free(x.js[i].note);
    }

    free(x.js);
    g_hash_table_destroy(x.convs);
    g_ptr_array_free(x.order, TRUE);
    g_ptr_array_free(x.recs, TRUE);
    g_hash_table_destroy(x.rooms);
    g_hash_table_destroy(x.eml_n);
    caud_hasher_free(x.hasher);
    nftw(x.stage, caud_xrm, 16, FTW_DEPTH | FTW_PHYS);

    return rc;
}
