
/*
 * The console's reads of the compliance record (issue 8 item 3): message
 * search, a conversation in context, sign-in history and the console's
 * own audit trail, all from audit_record in MariaDB.
 *
 * Every call runs through ngx_xmpp_db.c (a pool thread, a timer on the
 * event loop), is recorded in the audit chain with its query before it
 * runs (item 4), and binds every user-supplied value as a parameter:
 * the SQL text is assembled only from the fixed fragments below.  The
 * answer is built as JSON in the thread, so the event loop only dumps
 * it.  Pages are keyset-paged on (ts_utc_us, node, writer_id, seq),
 * newest first, NGX_XMPP_ADMIN_PAGE rows each; the cursor is opaque to
 * the client.
 *
 * Keyword search uses the InnoDB FULLTEXT index on body (migration
 * 006_console.sql) to find candidate rows by their ASCII words of three
 * or more characters (innodb_ft_min_token_size) as word prefixes, and a
 * LIKE on the whole keyword to keep exactly the rows that contain it.
 * A keyword frequent enough to fill a page among the newest
 * NGX_XMPP_ADMIN_SCAN rows is answered without FULLTEXT, by the time
 * index (ngx_xmpp_admin_search_run()).  MariaDB has no n-gram parser,
 * so a keyword with non-ASCII text (CJK, accents) or without a usable
 * word is matched by LIKE alone, a scan of the rows the other filters
 * leave (docs/console.md).
 */


#include "ngx_xmpp_admin.h"

#include <mysql.h>


#define NGX_XMPP_ADMIN_SQL_MAX     2048
#define NGX_XMPP_ADMIN_STR_MAX     8192
/* the rows a keyword search reads newest first before it asks FULLTEXT
 * (ngx_xmpp_admin_search_run()): a first look, then, if the keyword is
 * frequent enough there, up to the second bound */
#define NGX_XMPP_ADMIN_SCAN        5000
#define NGX_XMPP_ADMIN_SCAN_MAX    60000
#define NGX_XMPP_ADMIN_SCAN_HITS   10
#define NGX_XMPP_ADMIN_CONTEXT     50
#define NGX_XMPP_ADMIN_BODY_CUT    "20000"

#define NGX_XMPP_ADMIN_Q_SEARCH    0
#define NGX_XMPP_ADMIN_Q_CONV      1
#define NGX_XMPP_ADMIN_Q_SIGNINS   2
#define NGX_XMPP_ADMIN_Q_AUDIT     3

#define ngx_xmpp_admin_word(c)                                             \
    (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z')              \
     || ((c) >= '0' && (c) <= '9') || (c) == '_')


/* one query in flight: its own copies, it may outlive the request */
typedef struct {
    ngx_uint_t             kind;
    char                   sql[NGX_XMPP_ADMIN_SQL_MAX];
    ngx_str_t              params[NGX_XMPP_DB_PARAMS_MAX];
    ngx_uint_t             nparams;
    /* a keyword search's first try, newest first by time (see
     * ngx_xmpp_admin_search_run()); empty if none; the bit of a param
     * in match is set when only the FULLTEXT statement binds it */
    char                   fast[NGX_XMPP_ADMIN_SQL_MAX];
    ngx_uint_t             match;
    /* the key of the last row kept: ts, node, writer, seq */
    ngx_str_t              last[4];
    u_char                 last_buf[400];
    u_char                 str[NGX_XMPP_ADMIN_STR_MAX];
    size_t                 str_used;
    json_t                *rows;
    json_t                *extra;
    ngx_uint_t             nrows;
    ngx_uint_t             bad;
} ngx_xmpp_admin_q_t;


static ngx_int_t ngx_xmpp_admin_q_post(ngx_xmpp_admin_ctx_t *ctx,
    ngx_xmpp_db_req_t *dr);
static int ngx_xmpp_admin_q_run(MYSQL *conn, ngx_xmpp_db_req_t *dr);
static void ngx_xmpp_admin_q_done(ngx_xmpp_db_req_t *dr);
static void ngx_xmpp_admin_q_cleanup(ngx_xmpp_db_req_t *dr);


/* the InnoDB default stopwords: a "+word" of them would match nothing */
static const char  *ngx_xmpp_admin_stopwords[] = {
    "a", "about", "an", "are", "as", "at", "be", "by", "com", "de", "en",
    "for", "from", "how", "i", "in", "is", "it", "la", "of", "on", "or",
    "that", "the", "this", "to", "was", "what", "when", "where", "who",
    "will", "with", "und", "www", NULL
};


/* ------------------------------------------------------------------ */
/* building the statement (event loop) */

static ngx_int_t
ngx_xmpp_admin_q_cat(char *sql, const char *fragment)
{
    size_t  len, have;

    len = ngx_strlen(fragment);
    have = ngx_strlen(sql);

    if (have + len + 1 > NGX_XMPP_ADMIN_SQL_MAX) {
        return NGX_ERROR;
    }

    ngx_memcpy(sql + have, fragment, len + 1);

    return NGX_OK;
}


/* a fragment of the statement, and of the fast one if there is one */
static ngx_int_t
ngx_xmpp_admin_q_sql(ngx_xmpp_admin_q_t *q, const char *fragment)
{
    if (q->fast[0] && ngx_xmpp_admin_q_cat(q->fast, fragment) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_xmpp_admin_q_cat(q->sql, fragment);
}


/* a bound parameter, copied into the query's own buffer */
static ngx_int_t
ngx_xmpp_admin_q_param(ngx_xmpp_admin_q_t *q, u_char *data, size_t len)
{
    if (q->nparams == NGX_XMPP_DB_PARAMS_MAX
        || q->str_used + len + 1 > sizeof(q->str))
    {
        return NGX_ERROR;
    }

    q->params[q->nparams].data = q->str + q->str_used;
    q->params[q->nparams].len = len;
    q->nparams++;

    ngx_memcpy(q->str + q->str_used, data, len);
    q->str_used += len;
    q->str[q->str_used++] = '\0';

    return NGX_OK;
}


#define ngx_xmpp_admin_q_pstr(q, s)                                        \
    ngx_xmpp_admin_q_param(q, (s)->data, (s)->len)


/* a JID argument: "alice" means alice@<domain>; stored lower-case */
static ngx_int_t
ngx_xmpp_admin_jid_arg(ngx_xmpp_admin_ctx_t *ctx, const char *name,
    ngx_str_t *out)
{
    u_char     *p;
    ngx_int_t   rc;
    ngx_str_t   v;

    rc = ngx_xmpp_admin_arg(ctx->request, name, &v);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_strlchr(v.data, v.data + v.len, '@') == NULL) {
        p = ngx_pnalloc(ctx->request->pool, v.len + 1 + ctx->xcf->domain.len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        out->data = p;
        p = ngx_cpymem(p, v.data, v.len);
        *p++ = '@';
        p = ngx_cpymem(p, ctx->xcf->domain.data, ctx->xcf->domain.len);
        out->len = p - out->data;

    } else {
        *out = v;
    }

    if (out->len > 3 * NGX_XMPP_JID_PART_MAX + 2
        || ngx_strlchr(out->data, out->data + out->len, '/'))
    {
        return NGX_ERROR;
    }

    ngx_strlow(out->data, out->data, out->len);

    return NGX_OK;
}


/* an integer argument (milliseconds since the epoch) */
static ngx_int_t
ngx_xmpp_admin_ms_arg(ngx_xmpp_admin_ctx_t *ctx, const char *name,
    ngx_str_t *out)
{
    u_char     *p;
    ngx_int_t   rc;
    ngx_str_t   v;
    int64_t     ms;

    rc = ngx_xmpp_admin_arg(ctx->request, name, &v);
    if (rc != NGX_OK) {
        return rc;
    }

    if (v.len > 15) {
        return NGX_ERROR;
    }

    ms = ngx_atoof(v.data, v.len);
    if (ms < 0) {
        return NGX_ERROR;
    }

    /* the column holds microseconds */
    p = ngx_pnalloc(ctx->request->pool, NGX_INT64_LEN + 3);
    if (p == NULL) {
        return NGX_ERROR;
    }

    out->data = p;
    out->len = ngx_sprintf(p, "%L", ms * 1000) - p;

    return NGX_OK;
}


/*
 * A row's key: "<writer>-<seq>-<node>" (node last: it is free text), and
 * a cursor: "<ts>-<writer>-<seq>-<node>".  Parsed into params.
 */
static ngx_int_t
ngx_xmpp_admin_key_arg(ngx_xmpp_admin_ctx_t *ctx, const char *name,
    ngx_uint_t with_ts, ngx_str_t *parts)
{
    u_char     *p, *end, *dash;
    ngx_int_t   rc;
    ngx_str_t   v;
    ngx_uint_t  i, n;

    rc = ngx_xmpp_admin_arg(ctx->request, name, &v);
    if (rc != NGX_OK) {
        return rc;
    }

    n = with_ts ? 3 : 2;
    p = v.data;
    end = v.data + v.len;

    for (i = 0; i < n; i++) {
        dash = ngx_strlchr(p, end, '-');

        if (dash == NULL || dash == p || dash - p > 20
            || ngx_atoof(p, dash - p) == NGX_ERROR)
        {
            return NGX_ERROR;
        }

        parts[i].data = p;
        parts[i].len = dash - p;
        p = dash + 1;
    }

    if (p == end || end - p > 64) {
        return NGX_ERROR;
    }

    parts[n].data = p;
    parts[n].len = end - p;

    return NGX_OK;
}


static ngx_int_t
ngx_xmpp_admin_q_cursor(ngx_xmpp_admin_ctx_t *ctx, ngx_xmpp_admin_q_t *q,
    json_t *query)
{
    ngx_int_t  rc;
    ngx_str_t  c[4], raw;

    rc = ngx_xmpp_admin_key_arg(ctx, "cursor", 1, c);

    if (rc == NGX_DECLINED) {
        return NGX_OK;
    }

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    (void) ngx_xmpp_admin_arg(ctx->request, "cursor", &raw);
    json_object_set_new(query, "cursor", json_stringn((char *) raw.data,
                                                      raw.len));

    /* after the last row of the previous page, in the same order */
    if (ngx_xmpp_admin_q_sql(q, " AND (ts_utc_us < CAST(? AS SIGNED)"
                                " OR (ts_utc_us = CAST(? AS SIGNED)"
                                " AND (node, writer_id, seq)"
                                " < (?, CAST(? AS UNSIGNED),"
                                " CAST(? AS UNSIGNED))))")
           != NGX_OK
        || ngx_xmpp_admin_q_pstr(q, &c[0]) != NGX_OK
        || ngx_xmpp_admin_q_pstr(q, &c[0]) != NGX_OK
        || ngx_xmpp_admin_q_pstr(q, &c[3]) != NGX_OK
        || ngx_xmpp_admin_q_pstr(q, &c[1]) != NGX_OK
        || ngx_xmpp_admin_q_pstr(q, &c[2]) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_xmpp_admin_q_order(ngx_xmpp_admin_q_t *q)
{
    char  limit[128];

    ngx_snprintf((u_char *) limit, sizeof(limit),
                 " ORDER BY ts_utc_us DESC, node DESC,"
                 " writer_id DESC, seq DESC LIMIT %ui%Z",
                 (ngx_uint_t) NGX_XMPP_ADMIN_PAGE + 1);

    return ngx_xmpp_admin_q_sql(q, limit);
}


/*
 * The keyword: FULLTEXT candidates by its usable words, then LIKE on the
 * whole of it, and a REGEXP that each usable word begins a word (what
 * the FULLTEXT terms mean, so that the fast statement, which has no
 * MATCH, finds the same rows; see the comment at the top of the file).
 */
static ngx_int_t
ngx_xmpp_admin_q_keyword(ngx_http_request_t *r, ngx_xmpp_admin_q_t *q,
    ngx_str_t *kw)
{
    u_char      *p, *end, *w, *b, *b2, *like, *re, *e;
    ngx_uint_t   i, ascii, words;
    u_char       boolean[NGX_XMPP_ADMIN_ARG_MAX * 3 + 8];

    /* per word "(?=.*(?<![[:alnum:]_])" word ")": 23 + len bytes, and a
     * word has 3 or more bytes and a separator */
    re = ngx_pnalloc(r->pool, 8 * kw->len + 32);
    if (re == NULL) {
        return NGX_ERROR;
    }

    e = ngx_cpymem(re, "(?is)^", 6);

    p = kw->data;
    end = kw->data + kw->len;
    ascii = 1;

    for (w = p; w < end; w++) {
        if (*w >= 0x80) {
            ascii = 0;
        }
    }

    b = boolean;
    words = 0;

    while (ascii && p < end) {
        while (p < end && !ngx_xmpp_admin_word(*p)) {
            p++;
        }

        for (w = p; p < end && ngx_xmpp_admin_word(*p); p++) {
            /* void */
        }

        if (p - w < 3) {
            continue;
        }

        for (i = 0; ngx_xmpp_admin_stopwords[i]; i++) {
            if ((size_t) (p - w) == ngx_strlen(ngx_xmpp_admin_stopwords[i])
                && ngx_strncasecmp(w, (u_char *) ngx_xmpp_admin_stopwords[i],
                                   p - w) == 0)
            {
                break;
            }
        }

        /* "+word*": the keyword's words begin words of the body; the
         * same as a look-ahead for a word not preceded by a word
         * character (the parser's, innodb/fts0fts: alphanumerics, _) */
        if (ngx_xmpp_admin_stopwords[i] == NULL) {
            *b++ = '+';
            b = ngx_cpymem(b, w, p - w);
            *b++ = '*';
            *b++ = ' ';
            e = ngx_cpymem(e, "(?=.*(?<![[:alnum:]_])", 22);
            e = ngx_cpymem(e, w, p - w);
            *e++ = ')';
            words++;
        }
    }

    b2 = b;

    /* %keyword% with LIKE's own characters escaped */
    like = ngx_pnalloc(r->pool, 2 * kw->len + 2);
    if (like == NULL) {
        return NGX_ERROR;
    }

    b = like;
    *b++ = '%';

    for (p = kw->data; p < end; p++) {
        if (*p == '%' || *p == '_' || *p == '\\') {
            *b++ = '\\';
        }
        *b++ = *p;
    }

    *b++ = '%';

    /*
     * LIKE before REGEXP: MariaDB evaluates an AND's terms in the order
     * written and stops at the first false one, and the walk by time
     * rejects almost every row it reads; LIKE rejects one for less than
     * the look-ahead REGEXP does (docs/console.md "Search latency
     * (benchmark)": the broad keywords' p99 halved on 1,000,000 rows)
     */
    if (ngx_xmpp_admin_q_sql(q, " AND body LIKE ?") != NGX_OK
        || ngx_xmpp_admin_q_param(q, like, b - like) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (words == 0) {
        /* nothing FULLTEXT can find: one statement, LIKE alone */
        q->fast[0] = '\0';
        return NGX_OK;
    }

    /* MATCH in the FULLTEXT statement only: the fast one must not name
     * the index, or the optimizer takes it */
    q->match |= (ngx_uint_t) 1 << q->nparams;

    if (ngx_xmpp_admin_q_cat(q->sql, " AND MATCH(body) AGAINST"
                                     " (? IN BOOLEAN MODE)") != NGX_OK
        || ngx_xmpp_admin_q_param(q, boolean, b2 - boolean) != NGX_OK
        || ngx_xmpp_admin_q_sql(q, " AND body REGEXP ?") != NGX_OK
        || ngx_xmpp_admin_q_param(q, re, e - re) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the filters shared by search; each present one is also in query */
static ngx_int_t
ngx_xmpp_admin_q_filters(ngx_xmpp_admin_ctx_t *ctx, ngx_xmpp_admin_q_t *q,
    json_t *query)
{
    ngx_int_t  rc[6];
    ngx_str_t  user, peer, room, since, until, kw;

    rc[0] = ngx_xmpp_admin_jid_arg(ctx, "user", &user);
    rc[1] = ngx_xmpp_admin_jid_arg(ctx, "peer", &peer);
    rc[2] = ngx_xmpp_admin_jid_arg(ctx, "room", &room);
    rc[3] = ngx_xmpp_admin_ms_arg(ctx, "since", &since);
    rc[4] = ngx_xmpp_admin_ms_arg(ctx, "until", &until);
    rc[5] = ngx_xmpp_admin_arg(ctx->request, "q", &kw);

    if (rc[0] == NGX_ERROR || rc[1] == NGX_ERROR || rc[2] == NGX_ERROR
        || rc[3] == NGX_ERROR || rc[4] == NGX_ERROR || rc[5] == NGX_ERROR
        || (rc[1] == NGX_OK && rc[0] != NGX_OK))
    {
        return NGX_ERROR;
    }

#define ngx_xmpp_admin_q_note(i, key, v)                                   \
    if (rc[i] == NGX_OK) {                                                 \
        json_object_set_new(query, key,                                    \
                            json_stringn((char *) (v).data, (v).len));     \
    }

    ngx_xmpp_admin_q_note(0, "user", user);
    ngx_xmpp_admin_q_note(1, "peer", peer);
    ngx_xmpp_admin_q_note(2, "room", room);
    ngx_xmpp_admin_q_note(3, "since_us", since);
    ngx_xmpp_admin_q_note(4, "until_us", until);
    ngx_xmpp_admin_q_note(5, "q", kw);

#undef ngx_xmpp_admin_q_note

    /* a participant or a room: their (user, ts) indexes, not the fast
     * statement's walk of the whole store by time */
    if (rc[0] == NGX_OK || rc[2] == NGX_OK || rc[5] != NGX_OK) {
        q->fast[0] = '\0';
    }

    if (rc[1] == NGX_OK) {
        if (ngx_xmpp_admin_q_sql(q, " AND ((actor_user = ? AND peer = ?)"
                                    " OR (actor_user = ? AND peer = ?))")
               != NGX_OK
            || ngx_xmpp_admin_q_pstr(q, &user) != NGX_OK
            || ngx_xmpp_admin_q_pstr(q, &peer) != NGX_OK
            || ngx_xmpp_admin_q_pstr(q, &peer) != NGX_OK
            || ngx_xmpp_admin_q_pstr(q, &user) != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (rc[0] == NGX_OK
               && (ngx_xmpp_admin_q_sql(q, " AND (actor_user = ?"
                                           " OR peer = ?)") != NGX_OK
                   || ngx_xmpp_admin_q_pstr(q, &user) != NGX_OK
                   || ngx_xmpp_admin_q_pstr(q, &user) != NGX_OK))
    {
        return NGX_ERROR;
    }

    if ((rc[2] == NGX_OK
         && (ngx_xmpp_admin_q_sql(q, " AND peer = ?") != NGX_OK
             || ngx_xmpp_admin_q_pstr(q, &room) != NGX_OK))
        || (rc[3] == NGX_OK
            && (ngx_xmpp_admin_q_sql(q, " AND ts_utc_us >= CAST(? AS SIGNED)")
                != NGX_OK
                || ngx_xmpp_admin_q_pstr(q, &since) != NGX_OK))
        || (rc[4] == NGX_OK
            && (ngx_xmpp_admin_q_sql(q, " AND ts_utc_us < CAST(? AS SIGNED)")
                != NGX_OK
                || ngx_xmpp_admin_q_pstr(q, &until) != NGX_OK))
        || (rc[5] == NGX_OK
            && ngx_xmpp_admin_q_keyword(ctx->request, q, &kw) != NGX_OK))
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_xmpp_db_req_t *
ngx_xmpp_admin_q_create(ngx_xmpp_admin_ctx_t *ctx, ngx_uint_t kind,
    const char *select)
{
    ngx_xmpp_db_req_t   *dr;
    ngx_xmpp_admin_q_t  *q;

    dr = ngx_xmpp_db_create(ctx->xcf, sizeof(ngx_xmpp_admin_q_t),
                            ctx->request->connection->log);
    if (dr == NULL) {
        return NULL;
    }

    q = dr->ctx;
    q->kind = kind;

    (void) ngx_xmpp_admin_q_sql(q, select);

    dr->run = ngx_xmpp_admin_q_run;
    dr->done = ngx_xmpp_admin_q_done;
    dr->cleanup = ngx_xmpp_admin_q_cleanup;
    dr->data = ctx;

    return dr;
}


/* record the view with its query, then run it; query is stolen */
static ngx_int_t
ngx_xmpp_admin_q_start(ngx_xmpp_admin_ctx_t *ctx, ngx_xmpp_db_req_t *dr,
    const char *action, ngx_int_t rc, json_t *query)
{
    if (rc != NGX_OK) {
        ngx_xmpp_db_destroy(dr);
        (void) ngx_xmpp_admin_audit(ctx, action, 0, "bad-request", query);
        return ngx_xmpp_admin_error(ctx->request, NGX_HTTP_BAD_REQUEST,
                                    "bad-request");
    }

    if (ngx_xmpp_admin_audit(ctx, action, 1, NULL, query) != NGX_OK) {
        ngx_xmpp_db_destroy(dr);
        return ngx_xmpp_admin_error(ctx->request,
                                    NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "audit-unavailable");
    }

    return ngx_xmpp_admin_q_post(ctx, dr);
}


#define NGX_XMPP_ADMIN_MSG_COLS                                            \
    "SELECT ts_utc_us, node, writer_id, seq, actor_user, peer, msg_type,"  \
    " stanza_id, LEFT(body, " NGX_XMPP_ADMIN_BODY_CUT ")"


/* GET search?user=&peer=&room=&since=&until=&q=&cursor= */
ngx_int_t
ngx_xmpp_admin_search(ngx_xmpp_admin_ctx_t *ctx)
{
    json_t              *query;
    ngx_int_t            rc;
    ngx_xmpp_db_req_t   *dr;
    ngx_xmpp_admin_q_t  *q;

    dr = ngx_xmpp_admin_q_create(ctx, NGX_XMPP_ADMIN_Q_SEARCH,
                                 NGX_XMPP_ADMIN_MSG_COLS
                                 ", NULL FROM audit_record"
                                 " WHERE event IN ('message',"
                                 " 'muc_message')");
    query = json_object();

    if (dr) {
        /* the (ts_utc_us) index, whose entries end in the primary key,
         * is the page's order: read newest first, stop at the page */
        q = dr->ctx;
        (void) ngx_xmpp_admin_q_cat(q->fast, NGX_XMPP_ADMIN_MSG_COLS
                                    ", NULL FROM audit_record"
                                    " FORCE INDEX (audit_record_ts)"
                                    " WHERE event IN ('message',"
                                    " 'muc_message')");
    }

    if (dr == NULL || query == NULL) {
        if (dr) {
            ngx_xmpp_db_destroy(dr);
        }
        json_decref(query);
        return ngx_xmpp_admin_error(ctx->request,
                                    NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "database-unavailable");
    }

    rc = ngx_xmpp_admin_q_filters(ctx, dr->ctx, query);

    if (rc == NGX_OK) {
        rc = ngx_xmpp_admin_q_cursor(ctx, dr->ctx, query);
    }

    if (rc == NGX_OK) {
        rc = ngx_xmpp_admin_q_order(dr->ctx);
    }

    return ngx_xmpp_admin_q_start(ctx, dr, "search", rc, query);
}


/* GET conversation?id=<writer>-<seq>-<node>: the messages around it */
ngx_int_t
ngx_xmpp_admin_conversation(ngx_xmpp_admin_ctx_t *ctx)
{
    json_t             *query;
    ngx_int_t           rc;
    ngx_str_t           id[3], raw;
    ngx_xmpp_db_req_t  *dr;
    ngx_xmpp_admin_q_t *q;

    dr = ngx_xmpp_admin_q_create(ctx, NGX_XMPP_ADMIN_Q_CONV,
                                 "SELECT ts_utc_us, actor_user, peer,"
                                 " msg_type FROM audit_record"
                                 " WHERE event IN ('message', 'muc_message')"
                                 " AND node = ?"
                                 " AND writer_id = CAST(? AS UNSIGNED)"
                                 " AND seq = CAST(? AS UNSIGNED)");
    query = json_object();

    if (dr == NULL || query == NULL) {
        if (dr) {
            ngx_xmpp_db_destroy(dr);
        }
        json_decref(query);
        return ngx_xmpp_admin_error(ctx->request,
                                    NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "database-unavailable");
    }

    q = dr->ctx;

    rc = ngx_xmpp_admin_key_arg(ctx, "id", 0, id);

    if (rc == NGX_OK) {
        (void) ngx_xmpp_admin_arg(ctx->request, "id", &raw);
        json_object_set_new(query, "id", json_stringn((char *) raw.data,
                                                      raw.len));

        if (ngx_xmpp_admin_q_pstr(q, &id[2]) != NGX_OK
            || ngx_xmpp_admin_q_pstr(q, &id[0]) != NGX_OK
            || ngx_xmpp_admin_q_pstr(q, &id[1]) != NGX_OK)
        {
            rc = NGX_ERROR;
        }

    } else {
        rc = NGX_ERROR;
    }

    return ngx_xmpp_admin_q_start(ctx, dr, "conversation", rc, query);
}


/* GET signins?user=&cursor=: the user's XMPP sign-in attempts */
ngx_int_t
ngx_xmpp_admin_signins(ngx_xmpp_admin_ctx_t *ctx)
{
    json_t             *query;
    ngx_int_t           rc;
    ngx_str_t           user;
    ngx_xmpp_db_req_t  *dr;

    dr = ngx_xmpp_admin_q_create(ctx, NGX_XMPP_ADMIN_Q_SIGNINS,
                                 "SELECT ts_utc_us, node, writer_id, seq,"
                                 " status, actor_ip, transport, session_id,"
                                 " payload FROM audit_record"
                                 " WHERE event = 'signin' AND actor_user = ?");
    query = json_object();

    if (dr == NULL || query == NULL) {
        if (dr) {
            ngx_xmpp_db_destroy(dr);
        }
        json_decref(query);
        return ngx_xmpp_admin_error(ctx->request,
                                    NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "database-unavailable");
    }

    rc = ngx_xmpp_admin_jid_arg(ctx, "user", &user);

    if (rc == NGX_OK) {
        json_object_set_new(query, "user", json_stringn((char *) user.data,
                                                        user.len));
        rc = ngx_xmpp_admin_q_pstr(dr->ctx, &user);
    } else {
        rc = NGX_ERROR;
    }

    if (rc == NGX_OK) {
        rc = ngx_xmpp_admin_q_cursor(ctx, dr->ctx, query);
    }

    if (rc == NGX_OK) {
        rc = ngx_xmpp_admin_q_order(dr->ctx);
    }

    return ngx_xmpp_admin_q_start(ctx, dr, "signins", rc, query);
}


/* GET audit?user=&cursor=: what console users did */
ngx_int_t
ngx_xmpp_admin_audit_log(ngx_xmpp_admin_ctx_t *ctx)
{
    json_t             *query;
    ngx_int_t           rc;
    ngx_str_t           user;
    ngx_xmpp_db_req_t  *dr;

    dr = ngx_xmpp_admin_q_create(ctx, NGX_XMPP_ADMIN_Q_AUDIT,
                                 "SELECT ts_utc_us, node, writer_id, seq,"
                                 " status, actor_ip, actor_user, peer,"
                                 " payload FROM audit_record"
                                 " WHERE event = 'admin'");
    query = json_object();

    if (dr == NULL || query == NULL) {
        if (dr) {
            ngx_xmpp_db_destroy(dr);
        }
        json_decref(query);
        return ngx_xmpp_admin_error(ctx->request,
                                    NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "database-unavailable");
    }

    rc = ngx_xmpp_admin_jid_arg(ctx, "user", &user);

    if (rc == NGX_OK) {
        json_object_set_new(query, "user", json_stringn((char *) user.data,
                                                        user.len));
        if (ngx_xmpp_admin_q_sql(dr->ctx, " AND actor_user = ?") != NGX_OK
            || ngx_xmpp_admin_q_pstr(dr->ctx, &user) != NGX_OK)
        {
            rc = NGX_ERROR;
        }

    } else if (rc == NGX_DECLINED) {
        rc = NGX_OK;
    }

    if (rc == NGX_OK) {
        rc = ngx_xmpp_admin_q_cursor(ctx, dr->ctx, query);
    }

    if (rc == NGX_OK) {
        rc = ngx_xmpp_admin_q_order(dr->ctx);
    }

    return ngx_xmpp_admin_q_start(ctx, dr, "audit", rc, query);
}


static ngx_int_t
ngx_xmpp_admin_q_post(ngx_xmpp_admin_ctx_t *ctx, ngx_xmpp_db_req_t *dr)
{
    if (ngx_xmpp_db_post(dr) != NGX_OK) {
        ngx_xmpp_db_destroy(dr);
        return ngx_xmpp_admin_error(ctx->request,
                                    NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "database-busy");
    }

    ctx->request->main->count++;

    return NGX_DONE;
}


/* ------------------------------------------------------------------ */
/* in the pool thread */

/* "<ts>-<writer>-<seq>-<node>" or, without ts, a row's id */
static json_t *
ngx_xmpp_admin_key(ngx_str_t *ts, ngx_str_t *node, ngx_str_t *writer,
    ngx_str_t *seq)
{
    if (ts) {
        return json_sprintf("%.*s-%.*s-%.*s-%.*s", (int) ts->len, ts->data,
                            (int) writer->len, writer->data,
                            (int) seq->len, seq->data,
                            (int) node->len, node->data);
    }

    return json_sprintf("%.*s-%.*s-%.*s", (int) writer->len, writer->data,
                        (int) seq->len, seq->data, (int) node->len,
                        node->data);
}


static json_t *
ngx_xmpp_admin_jstr(ngx_str_t *s)
{
    return s->data ? json_stringn((char *) s->data, s->len) : json_null();
}


static json_t *
ngx_xmpp_admin_ms(ngx_str_t *us)
{
    return json_integer(ngx_atoof(us->data, us->len) / 1000);
}


/* the value of attribute "id" of the first <name .../> in stanza */
static json_t *
ngx_xmpp_admin_ref(const char *stanza, const char *name)
{
    u_char      *p, *end, q;
    const char  *e;

    p = (u_char *) ngx_strstr(stanza, name);
    if (p == NULL) {
        return json_null();
    }

    e = ngx_strchr(p, '>');
    end = e ? (u_char *) e : p + ngx_strlen(p);

    for ( /* void */ ; p + 4 < end; p++) {
        if (p[0] == ' ' && p[1] == 'i' && p[2] == 'd' && p[3] == '='
            && (p[4] == '\'' || p[4] == '"'))
        {
            q = p[4];
            p += 5;
            e = (const char *) ngx_strlchr(p, end, q);
            return e ? json_stringn((char *) p, (u_char *) e - p)
                     : json_null();
        }
    }

    return json_null();
}


/*
 * Edits (XEP-0308) and retractions (XEP-0424) are records of their own;
 * the stanza as routed says which message they refer to.
 */
static void
ngx_xmpp_admin_flags(json_t *row, ngx_str_t *payload)
{
    json_t      *rec, *stanza;
    const char  *s;

    if (payload->data == NULL) {
        return;
    }

    rec = json_loadb((char *) payload->data, payload->len, 0, NULL);
    if (rec == NULL) {
        return;
    }

    stanza = json_object_get(json_object_get(rec, "params"), "stanza");
    s = json_string_value(stanza);

    if (s && ngx_strstr(s, "urn:xmpp:message-correct:0")) {
        json_object_set_new(row, "replaces", ngx_xmpp_admin_ref(s,
                                                               "<replace"));
    }

    if (s && (ngx_strstr(s, "urn:xmpp:message-retract:0")
              || ngx_strstr(s, "urn:xmpp:message-retract:1")))
    {
        json_object_set_new(row, "retracts",
                            ngx_strstr(s, "<apply-to")
                            ? ngx_xmpp_admin_ref(s, "<apply-to")
                            : ngx_xmpp_admin_ref(s, "<retract"));
    }

    json_decref(rec);
}


/* where a walk by time that kept this row goes on from */
static void
ngx_xmpp_admin_last(ngx_xmpp_admin_q_t *q, ngx_str_t *c)
{
    u_char      *p;
    ngx_uint_t   i;

    p = q->last_buf;

    for (i = 0; i < 4; i++) {
        if (c[i].data == NULL
            || c[i].len + 1 > (size_t) (q->last_buf + sizeof(q->last_buf)
                                        - p))
        {
            q->last[0].data = NULL;
            return;
        }

        q->last[i].data = p;
        q->last[i].len = c[i].len;
        p = ngx_cpymem(p, c[i].data, c[i].len);
        *p++ = '\0';
    }
}


/* a message row: ts, node, writer, seq, from, to, type, id, body, payload */
static int
ngx_xmpp_admin_message_row(ngx_xmpp_db_req_t *dr, ngx_str_t *c, ngx_uint_t n)
{
    json_t              *row;
    ngx_xmpp_admin_q_t  *q;

    q = dr->ctx;

    if (n < 10) {
        return -1;
    }

    if (++q->nrows > NGX_XMPP_ADMIN_PAGE && q->kind == NGX_XMPP_ADMIN_Q_SEARCH)
    {
        return 0;
    }

    if (q->kind == NGX_XMPP_ADMIN_Q_SEARCH) {
        ngx_xmpp_admin_last(q, c);
    }

    row = json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o}",
                    "id", ngx_xmpp_admin_key(NULL, &c[1], &c[2], &c[3]),
                    "ts", ngx_xmpp_admin_ms(&c[0]),
                    "from", ngx_xmpp_admin_jstr(&c[4]),
                    "to", ngx_xmpp_admin_jstr(&c[5]),
                    "type", ngx_xmpp_admin_jstr(&c[6]),
                    "stanza_id", ngx_xmpp_admin_jstr(&c[7]),
                    "body", ngx_xmpp_admin_jstr(&c[8]));
    if (row == NULL) {
        return -1;
    }

    ngx_xmpp_admin_flags(row, &c[9]);

    json_object_set_new(row, "cursor", ngx_xmpp_admin_key(&c[0], &c[1],
                                                          &c[2], &c[3]));

    return json_array_append_new(q->rows, row);
}


static int
ngx_xmpp_admin_record_row(ngx_xmpp_db_req_t *dr, ngx_str_t *c, ngx_uint_t n)
{
    json_t              *row, *rec, *v;
    ngx_xmpp_admin_q_t  *q;

    q = dr->ctx;

    if (n < 9) {
        return -1;
    }

    if (++q->nrows > NGX_XMPP_ADMIN_PAGE) {
        return 0;
    }

    row = json_pack("{s:o,s:o,s:o,s:o,s:o}",
                    "id", ngx_xmpp_admin_key(NULL, &c[1], &c[2], &c[3]),
                    "cursor", ngx_xmpp_admin_key(&c[0], &c[1], &c[2], &c[3]),
                    "ts", ngx_xmpp_admin_ms(&c[0]),
                    "status", ngx_xmpp_admin_jstr(&c[4]),
                    "ip", ngx_xmpp_admin_jstr(&c[5]));
    if (row == NULL) {
        return -1;
    }

    if (q->kind == NGX_XMPP_ADMIN_Q_SIGNINS) {
        json_object_set_new(row, "transport", ngx_xmpp_admin_jstr(&c[6]));
        json_object_set_new(row, "session", ngx_xmpp_admin_jstr(&c[7]));

    } else {
        json_object_set_new(row, "user", ngx_xmpp_admin_jstr(&c[6]));
        json_object_set_new(row, "action", ngx_xmpp_admin_jstr(&c[7]));
    }

    rec = c[8].data ? json_loadb((char *) c[8].data, c[8].len, 0, NULL)
                    : NULL;

    if (rec) {
        v = json_object_get(rec, "error");
        json_object_set(row, "error", v ? v : json_null());

        if (q->kind == NGX_XMPP_ADMIN_Q_AUDIT) {
            v = json_object_get(rec, "params");
            json_object_set(row, "params", v ? v : json_object());
        }

        json_decref(rec);
    }

    return json_array_append_new(q->rows, row);
}


static int
ngx_xmpp_admin_anchor_row(ngx_xmpp_db_req_t *dr, ngx_str_t *c, ngx_uint_t n)
{
    ngx_xmpp_admin_q_t  *q;

    q = dr->ctx;

    if (n < 4 || q->extra) {
        return -1;
    }

    q->extra = json_pack("{s:s#,s:o,s:o,s:o}",
                         "ts", (char *) c[0].data, (int) c[0].len,
                         "from", ngx_xmpp_admin_jstr(&c[1]),
                         "to", ngx_xmpp_admin_jstr(&c[2]),
                         "type", ngx_xmpp_admin_jstr(&c[3]));

    return q->extra ? 0 : -1;
}


/*
 * The conversation around an anchor: up to NGX_XMPP_ADMIN_CONTEXT
 * messages before it (and it), as many after, in time order.  A room
 * message's conversation is the room; a chat's is the pair both ways.
 */
static int
ngx_xmpp_admin_conv_run(MYSQL *conn, ngx_xmpp_db_req_t *dr)
{
    int                  rc, i;
    char                 sql[NGX_XMPP_ADMIN_SQL_MAX];
    json_t              *before;
    ngx_str_t            p[9];
    ngx_uint_t           n, room;
    const char          *type;
    ngx_xmpp_admin_q_t  *q;

    q = dr->ctx;

    if (ngx_xmpp_db_select(conn, dr, q->sql, q->params, q->nparams,
                           ngx_xmpp_admin_anchor_row) != 0)
    {
        return -1;
    }

    if (q->extra == NULL) {
        q->bad = 1;
        return 0;
    }

    type = json_string_value(json_object_get(q->extra, "type"));
    room = type && ngx_strcmp(type, "groupchat") == 0;

#define ngx_xmpp_admin_p(i, key)                                           \
    p[i].data = (u_char *) json_string_value(json_object_get(q->extra,     \
                                                             key));        \
    p[i].len = p[i].data ? ngx_strlen(p[i].data) : 0

    n = 0;

    if (room) {
        ngx_xmpp_admin_p(n, "to"); n++;

    } else {
        ngx_xmpp_admin_p(n, "from"); n++;
        ngx_xmpp_admin_p(n, "to"); n++;
        ngx_xmpp_admin_p(n, "to"); n++;
        ngx_xmpp_admin_p(n, "from"); n++;
    }

    ngx_xmpp_admin_p(n, "ts"); n++;
    ngx_xmpp_admin_p(n, "ts"); n++;

#undef ngx_xmpp_admin_p

    p[n++] = q->params[0];
    p[n++] = q->params[1];
    p[n++] = q->params[2];

    /* two passes: at-or-before (newest first), then after (oldest first) */
    for (i = 0; i < 2; i++) {
        ngx_snprintf((u_char *) sql, sizeof(sql),
                     NGX_XMPP_ADMIN_MSG_COLS ", payload FROM audit_record"
                     " WHERE %s"
                     " AND (ts_utc_us %s CAST(? AS SIGNED)"
                     " OR (ts_utc_us = CAST(? AS SIGNED)"
                     " AND (node, writer_id, seq) %s"
                     " (?, CAST(? AS UNSIGNED), CAST(? AS UNSIGNED))))"
                     " ORDER BY ts_utc_us %s, node %s, writer_id %s, seq %s"
                     " LIMIT %d%Z",
                     room ? "event = 'muc_message' AND peer = ?"
                          : "event = 'message'"
                            " AND ((actor_user = ? AND peer = ?)"
                            " OR (actor_user = ? AND peer = ?))",
                     i ? ">" : "<", i ? ">" : "<=",
                     i ? "ASC" : "DESC", i ? "ASC" : "DESC",
                     i ? "ASC" : "DESC", i ? "ASC" : "DESC",
                     NGX_XMPP_ADMIN_CONTEXT);

        rc = ngx_xmpp_db_select(conn, dr, sql, p, n,
                                ngx_xmpp_admin_message_row);
        if (rc != 0) {
            return -1;
        }

        if (i == 0) {
            /* newest first: turn it around before the later ones */
            before = json_array();
            if (before == NULL) {
                return -1;
            }

            for (n = json_array_size(q->rows); n > 0; n--) {
                json_array_append(before, json_array_get(q->rows, n - 1));
            }

            json_decref(q->rows);
            q->rows = before;
            n = room ? 6 : 9;
        }
    }

    json_object_set_new(q->extra, "room", json_boolean(room));

    return 0;
}


/*
 * A keyword search whose words FULLTEXT can find, without a participant
 * or room: MariaDB answers "MATCH ... ORDER BY time LIMIT 51" by reading
 * every match and sorting them, seconds for a keyword in a few percent
 * of a million messages (docs/console.md "Search latency").  So first
 * the same filters without MATCH, walking the time index newest first,
 * for at most NGX_XMPP_ADMIN_SCAN rows (LIMIT ... ROWS EXAMINED): a
 * frequent keyword fills its page there, a fairly frequent one in a
 * second, longer walk, sized by what the first found, that goes on
 * after the last row the first kept.  If the page is
 * still not full, the FULLTEXT statement answers from scratch, and is
 * fast because then the keyword is rare.  Both statements keep the same
 * rows (the REGEXP says what MATCH does), so the pages are the same
 * whichever answered.
 */
/*
 * The second walk goes on after the last row the first one kept (the
 * first walk kept every match among the rows it read): the statement
 * with the cursor's condition of ngx_xmpp_admin_q_cursor() before its
 * ORDER BY, and five more parameters.
 */
static ngx_int_t
ngx_xmpp_admin_resume(ngx_xmpp_admin_q_t *q, char *sql, size_t size,
    ngx_uint_t scan, ngx_str_t *fp, ngx_uint_t *n)
{
    char  *order, *p;

    order = NULL;

    for (p = q->fast; (p = ngx_strstr(p, " ORDER BY ")) != NULL; p++) {
        order = p;
    }

    if (order == NULL || q->last[0].data == NULL
        || *n + 5 > NGX_XMPP_DB_PARAMS_MAX)
    {
        return NGX_DECLINED;
    }

    ngx_snprintf((u_char *) sql, size,
                 "%*s AND (ts_utc_us < CAST(? AS SIGNED)"
                 " OR (ts_utc_us = CAST(? AS SIGNED)"
                 " AND (node, writer_id, seq)"
                 " < (?, CAST(? AS UNSIGNED), CAST(? AS UNSIGNED))))"
                 "%s ROWS EXAMINED %ui%Z",
                 (size_t) (order - q->fast), q->fast, order, scan);

    fp[(*n)++] = q->last[0];
    fp[(*n)++] = q->last[0];
    fp[(*n)++] = q->last[1];
    fp[(*n)++] = q->last[2];
    fp[(*n)++] = q->last[3];

    return NGX_OK;
}


static int
ngx_xmpp_admin_search_run(MYSQL *conn, ngx_xmpp_db_req_t *dr)
{
    char                 sql[NGX_XMPP_ADMIN_SQL_MAX + 256];
    ngx_str_t            fp[NGX_XMPP_DB_PARAMS_MAX];
    ngx_uint_t           i, n, scan, walk;
    ngx_xmpp_admin_q_t  *q;

    q = dr->ctx;

    for (i = 0, n = 0; i < q->nparams; i++) {
        if (!(q->match & ((ngx_uint_t) 1 << i))) {
            fp[n++] = q->params[i];
        }
    }

    for (walk = 0; q->fast[0] && q->match && walk < 2; walk++) {
        scan = NGX_XMPP_ADMIN_SCAN;

        if (walk == 1) {
            /*
             * Not a page.  Reading on by time costs a few microseconds
             * a row, FULLTEXT tens per match (a row fetched at random):
             * for a keyword in more than about one row in 500 (HITS in
             * SCAN) reading on is cheaper, up to the rows its page
             * should need.
             */
            if (q->nrows < NGX_XMPP_ADMIN_SCAN_HITS) {
                break;
            }

            scan = ngx_min(NGX_XMPP_ADMIN_SCAN_MAX,
                           2 * (NGX_XMPP_ADMIN_PAGE + 1)
                           * NGX_XMPP_ADMIN_SCAN / q->nrows);
        }

        if (walk == 0
            || ngx_xmpp_admin_resume(q, sql, sizeof(sql), scan, fp, &n)
               != NGX_OK)
        {
            json_array_clear(q->rows);
            q->nrows = 0;
            ngx_snprintf((u_char *) sql, sizeof(sql),
                         "%s ROWS EXAMINED %ui%Z", q->fast, scan);
        }

        if (ngx_xmpp_db_select(conn, dr, sql, fp, n,
                               ngx_xmpp_admin_message_row) != 0)
        {
            return -1;
        }

        if (q->nrows > NGX_XMPP_ADMIN_PAGE) {
            return 0;
        }
    }

    json_array_clear(q->rows);
    q->nrows = 0;

    return ngx_xmpp_db_select(conn, dr, q->sql, q->params, q->nparams,
                              ngx_xmpp_admin_message_row);
}


static int
ngx_xmpp_admin_q_run(MYSQL *conn, ngx_xmpp_db_req_t *dr)
{
    ngx_xmpp_admin_q_t  *q;

    q = dr->ctx;

    q->rows = json_array();
    if (q->rows == NULL) {
        return -1;
    }

    switch (q->kind) {

    case NGX_XMPP_ADMIN_Q_CONV:
        return ngx_xmpp_admin_conv_run(conn, dr);

    case NGX_XMPP_ADMIN_Q_SEARCH:
        return ngx_xmpp_admin_search_run(conn, dr);

    default:
        return ngx_xmpp_db_select(conn, dr, q->sql, q->params, q->nparams,
                                  ngx_xmpp_admin_record_row);
    }
}


/* ------------------------------------------------------------------ */
/* back on the event loop */

static void
ngx_xmpp_admin_q_done(ngx_xmpp_db_req_t *dr)
{
    json_t                *doc, *last;
    ngx_int_t              rc;
    ngx_connection_t      *c;
    ngx_http_request_t    *r;
    ngx_xmpp_admin_q_t    *q;
    ngx_xmpp_admin_ctx_t  *ctx;

    ctx = dr->data;
    r = ctx->request;
    c = r->connection;

    if (dr->rc != NGX_XMPP_DB_OK) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "xmpp: console query failed (%ui): %s", dr->rc,
                      dr->err);
        rc = ngx_xmpp_admin_error(r, dr->rc == NGX_XMPP_DB_TIMEOUT
                                     ? NGX_HTTP_GATEWAY_TIME_OUT
                                     : NGX_HTTP_SERVICE_UNAVAILABLE,
                                  dr->rc == NGX_XMPP_DB_TIMEOUT
                                  ? "database-timeout"
                                  : "database-unavailable");
        goto done;
    }

    q = dr->ctx;

    if (q->bad) {
        rc = ngx_xmpp_admin_error(r, NGX_HTTP_NOT_FOUND, "no-such-message");
        goto done;
    }

    doc = json_object();
    if (doc == NULL) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    json_object_set(doc, "results", q->rows);

    if (q->kind == NGX_XMPP_ADMIN_Q_CONV) {
        json_object_set(doc, "conversation", q->extra);

    } else if (q->nrows > NGX_XMPP_ADMIN_PAGE) {
        last = json_array_get(q->rows, NGX_XMPP_ADMIN_PAGE - 1);
        json_object_set(doc, "next", json_object_get(last, "cursor"));
    }

    rc = ngx_xmpp_admin_send_json(r, NGX_HTTP_OK, doc);

done:

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static void
ngx_xmpp_admin_q_cleanup(ngx_xmpp_db_req_t *dr)
{
    ngx_xmpp_admin_q_t  *q;

    q = dr->ctx;

    if (q->rows) {
        json_decref(q->rows);
        q->rows = NULL;
    }

    if (q->extra) {
        json_decref(q->extra);
        q->extra = NULL;
    }
}
